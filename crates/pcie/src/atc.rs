//! The Address Translation Cache: translations the function obtained with ATS
//! Translation Requests (PCIe §10.2), keyed by PASID and the translated range.
//!
//! An invalidation completes only after every access that used a removed entry finished:
//! accesses hold a read guard of [`Atc::access`] while they use a translation, and
//! [`Atc::invalidate`] removes entries under the write guard.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use sva_addr::{Pa, Pasid};
use sva_sync::{RwLock, RwLockReadGuard, read, write};

/// PASID slot of entries without a PASID and of Global entries.
const NO_PASID: u32 = u32::MAX;
const GLOBAL: u32 = u32::MAX - 1;

/// One cached translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtcEntry {
    /// Untranslated base (aligned to `size`).
    pub base: u64,
    /// Translated base.
    pub pa: Pa,
    /// Size of the range in bytes (a power of two, at least 4 KiB).
    pub size: u64,
    /// Read permitted.
    pub read: bool,
    /// Write permitted.
    pub write: bool,
}

impl AtcEntry {
    /// The translated address of `addr`, which lies in the entry.
    pub fn translate(&self, addr: u64) -> Pa {
        Pa(self.pa.raw() + (addr - self.base))
    }
}

/// ATC counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AtcStats {
    /// Lookups that hit.
    pub hits: u64,
    /// Lookups that missed.
    pub misses: u64,
    /// Entries inserted.
    pub fills: u64,
    /// Entries evicted to make room.
    pub evictions: u64,
    /// Invalidation requests received.
    pub invalidations: u64,
    /// Entries removed by invalidations.
    pub invalidated_entries: u64,
}

#[derive(Default)]
struct Table {
    /// (PASID slot, base) → entry.
    entries: BTreeMap<(u32, u64), AtcEntry>,
    /// Insertion order, for FIFO replacement.
    order: VecDeque<(u32, u64)>,
    /// Largest entry size present, bounding the backwards search of a lookup.
    max_size: u64,
}

/// A bounded ATC.
pub struct Atc {
    capacity: usize,
    table: RwLock<Table>,
    hits: AtomicU64,
    misses: AtomicU64,
    fills: AtomicU64,
    evictions: AtomicU64,
    invalidations: AtomicU64,
    invalidated_entries: AtomicU64,
}

impl core::fmt::Debug for Atc {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Atc")
            .field("capacity", &self.capacity)
            .field("stats", &self.stats())
            .finish()
    }
}

fn slot(pasid: Option<Pasid>) -> u32 {
    pasid.map_or(NO_PASID, |p| p.raw())
}

/// A read guard under which looked-up translations may be used.
pub struct AtcAccess<'a>(RwLockReadGuard<'a, Table>);

impl Atc {
    /// An empty ATC of `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            table: RwLock::new(Table::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            fills: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            invalidated_entries: AtomicU64::new(0),
        }
    }

    /// Starts an access: no invalidation completes until the guard is dropped.
    pub fn access(&self) -> AtcAccess<'_> {
        AtcAccess(read(&self.table))
    }

    /// The entry translating `addr` in `pasid`'s space, if cached (counted as hit/miss).
    pub fn lookup(
        &self,
        guard: &AtcAccess<'_>,
        pasid: Option<Pasid>,
        addr: u64,
    ) -> Option<AtcEntry> {
        let t = &guard.0;
        let found = [slot(pasid), GLOBAL].into_iter().find_map(|s| {
            let lo = addr.saturating_sub(t.max_size.saturating_sub(1));
            t.entries
                .range((s, lo)..=(s, addr))
                .next_back()
                .map(|(_, e)| *e)
                .filter(|e| addr - e.base < e.size)
        });
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// The invalidation count, to be read before an ATS Translation Request and passed to
    /// [`Atc::insert`].
    pub fn generation(&self) -> u64 {
        self.invalidations.load(Ordering::Acquire)
    }

    /// Caches a translation obtained after [`Atc::generation`] returned `generation`
    /// (Global entries serve every PASID), evicting the oldest entry when full. A
    /// translation that an invalidation overtook is dropped, as ATS requires (the
    /// completion may predate the invalidation); returns whether it was cached.
    pub fn insert(
        &self,
        generation: u64,
        pasid: Option<Pasid>,
        global: bool,
        entry: AtcEntry,
    ) -> bool {
        let mut t = write(&self.table);
        if self.invalidations.load(Ordering::Acquire) != generation {
            return false;
        }
        let key = (if global { GLOBAL } else { slot(pasid) }, entry.base);
        if t.entries.insert(key, entry).is_none() {
            t.order.push_back(key);
        }
        t.max_size = t.max_size.max(entry.size);
        self.fills.fetch_add(1, Ordering::Relaxed);
        while t.entries.len() > self.capacity {
            let Some(old) = t.order.pop_front() else {
                break;
            };
            if t.entries.remove(&old).is_some() {
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        true
    }

    /// An ATS Invalidation Request: removes every entry of `pasid` (and Global entries)
    /// overlapping `[addr, addr + size)`; `pasid == None` removes entries of every PASID.
    /// Returns when no access still uses a removed entry.
    pub fn invalidate(&self, pasid: Option<Pasid>, addr: u64, size: u64) -> usize {
        let end = addr.saturating_add(size);
        let mut t = write(&self.table);
        let doomed: Vec<(u32, u64)> = t
            .entries
            .iter()
            .filter(|((s, _), e)| {
                (pasid.is_none() || *s == slot(pasid) || *s == GLOBAL)
                    && e.base < end
                    && addr < e.base.saturating_add(e.size)
            })
            .map(|(k, _)| *k)
            .collect();
        for k in &doomed {
            t.entries.remove(k);
        }
        if !doomed.is_empty() {
            let Table { entries, order, .. } = &mut *t;
            order.retain(|k| entries.contains_key(k));
        }
        self.invalidations.fetch_add(1, Ordering::AcqRel);
        self.invalidated_entries
            .fetch_add(doomed.len() as u64, Ordering::Relaxed);
        doomed.len()
    }

    /// Entries cached now.
    pub fn len(&self) -> usize {
        read(&self.table).entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether any cached entry translates to a page in `[pa, pa + size)`.
    pub fn maps_frame(&self, pa: Pa, size: u64) -> bool {
        let t = read(&self.table);
        t.entries
            .values()
            .any(|e| e.pa.raw() < pa.raw() + size && pa.raw() < e.pa.raw() + e.size)
    }

    /// The counters.
    pub fn stats(&self) -> AtcStats {
        AtcStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            fills: self.fills.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            invalidations: self.invalidations.load(Ordering::Relaxed),
            invalidated_entries: self.invalidated_entries.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(base: u64, pa: u64, size: u64) -> AtcEntry {
        AtcEntry {
            base,
            pa: Pa(pa),
            size,
            read: true,
            write: true,
        }
    }

    #[test]
    fn lookup_finds_pages_and_blocks_per_pasid() {
        let atc = Atc::new(8);
        atc.insert(
            0,
            Some(Pasid(1)),
            false,
            e(0x20_0000, 0x4000_0000, 0x20_0000),
        );
        atc.insert(0, Some(Pasid(1)), false, e(0x1000, 0x9000, 0x1000));
        let g = atc.access();
        let hit = atc.lookup(&g, Some(Pasid(1)), 0x21_2345).unwrap();
        assert_eq!(hit.translate(0x21_2345), Pa(0x4001_2345));
        assert_eq!(
            atc.lookup(&g, Some(Pasid(1)), 0x1fff).unwrap().pa,
            Pa(0x9000)
        );
        assert!(atc.lookup(&g, Some(Pasid(2)), 0x1000).is_none());
        assert!(atc.lookup(&g, Some(Pasid(1)), 0x2000).is_none());
        assert!(atc.lookup(&g, None, 0x1000).is_none());
        drop(g);
        assert_eq!(atc.stats().hits, 2);
        assert_eq!(atc.stats().misses, 3);
    }

    #[test]
    fn global_entries_serve_every_pasid_and_die_with_any() {
        let atc = Atc::new(8);
        atc.insert(0, Some(Pasid(1)), true, e(0x1000, 0x9000, 0x1000));
        assert!(atc.lookup(&atc.access(), Some(Pasid(7)), 0x1000).is_some());
        assert_eq!(atc.invalidate(Some(Pasid(7)), 0x1000, 0x1000), 1);
        assert!(atc.is_empty());
    }

    #[test]
    fn invalidation_removes_overlapping_ranges_only() {
        let atc = Atc::new(8);
        for i in 0..4u64 {
            atc.insert(
                0,
                Some(Pasid(1)),
                false,
                e(i * 0x1000, 0x10_0000 + i * 0x1000, 0x1000),
            );
        }
        atc.insert(0, Some(Pasid(2)), false, e(0x1000, 0x20_0000, 0x1000));
        assert_eq!(atc.invalidate(Some(Pasid(1)), 0x1800, 0x1000), 2);
        assert_eq!(atc.len(), 3);
        assert!(atc.maps_frame(Pa(0x20_0000), 0x1000));
        assert_eq!(atc.invalidate(None, 0, u64::MAX), 3);
        assert!(atc.is_empty());
    }

    #[test]
    fn full_atc_replaces_the_oldest_entry() {
        let atc = Atc::new(2);
        for i in 0..3u64 {
            assert!(atc.insert(0, None, false, e(i * 0x1000, i * 0x1000, 0x1000)));
        }
        assert_eq!(atc.len(), 2);
        assert!(atc.lookup(&atc.access(), None, 0).is_none());
        assert!(atc.lookup(&atc.access(), None, 0x2000).is_some());
        assert_eq!(atc.stats().evictions, 1);
    }

    #[test]
    fn a_translation_overtaken_by_an_invalidation_is_not_cached() {
        let atc = Atc::new(4);
        let generation = atc.generation();
        atc.invalidate(None, 0, u64::MAX);
        assert!(!atc.insert(generation, None, false, e(0, 0x1000, 0x1000)));
        assert!(atc.is_empty());
    }
}
