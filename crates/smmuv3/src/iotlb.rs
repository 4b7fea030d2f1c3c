//! The IOTLB: cached stage 1 leaf translations, keyed by (VMID, ASID or global, VA aligned to
//! the leaf size), so one entry covers a whole block.
//!
//! Bounded to `capacity` entries with CLOCK replacement (one reference bit per entry, the hand
//! sweeps at most twice around): a full IOTLB evicts one entry, never everything. Each
//! (VMID, ASID) tag, and the global entries of a VMID, have their own ordered map from
//! (base, size) to slot, so invalidation by ASID drops one map, and invalidation by address
//! range is a range query in the maps concerned.

use rustc_hash::FxHashMap;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sva_vmsa::Permissions;

/// Entries of this tag: VMID and ASID, or `None` for global (nG = 0) entries.
pub(crate) type Tag = (u16, Option<u16>);

/// A cached leaf translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TlbEntry {
    /// Output address of the start of the leaf.
    pub pa_base: u64,
    /// log2 of the leaf size.
    pub size_log2: u8,
    /// Permissions of the leaf.
    pub perms: Permissions,
    /// The CD had ASET = 1: not affected by broadcast invalidation.
    pub aset: bool,
}

#[derive(Debug, Clone)]
struct Slot {
    tag: Tag,
    base: u64,
    entry: TlbEntry,
    referenced: bool,
}

/// The IOTLB and its counters.
#[derive(Debug)]
pub(crate) struct Iotlb {
    capacity: usize,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    hand: usize,
    /// Ordered per-tag index, for ASID and range invalidation.
    index: BTreeMap<Tag, BTreeMap<(u64, u8), usize>>,
    /// Flat hash index for the lookup on every transaction.
    lookup: FxHashMap<(Tag, u64, u8), usize>,
    /// Largest leaf size held (log2), bounding range queries.
    max_log2: u8,
    pub hits: u64,
    pub misses: u64,
    pub inserts: u64,
    pub evictions: u64,
    pub invalidations: u64,
    /// Bumped whenever an entry leaves the IOTLB (the micro-TLB's validity check).
    generation: Arc<AtomicU64>,
}

fn mask(size_log2: u8) -> u64 {
    if size_log2 >= 64 {
        u64::MAX
    } else {
        (1u64 << size_log2) - 1
    }
}

impl Iotlb {
    pub fn new(capacity: usize, generation: Arc<AtomicU64>) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            slots: vec![None; capacity],
            free: (0..capacity).rev().collect(),
            hand: 0,
            index: BTreeMap::new(),
            lookup: FxHashMap::default(),
            max_log2: 12,
            hits: 0,
            misses: 0,
            inserts: 0,
            evictions: 0,
            invalidations: 0,
            generation,
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.capacity - self.free.len()
    }

    /// Looks `va` up for ASID `asid` (and global entries) at the leaf sizes in `sizes`.
    pub fn lookup(&mut self, vmid: u16, asid: u16, va: u64, sizes: &[u8]) -> Option<TlbEntry> {
        for tag in [(vmid, Some(asid)), (vmid, None)] {
            for &s in sizes {
                if let Some(&slot) = self.lookup.get(&(tag, va & !mask(s), s))
                    && let Some(Some(e)) = self.slots.get_mut(slot)
                {
                    e.referenced = true;
                    self.hits += 1;
                    return Some(e.entry);
                }
            }
        }
        self.misses += 1;
        None
    }

    /// Caches the leaf covering `va`.
    pub fn insert(&mut self, vmid: u16, asid: Option<u16>, va: u64, entry: TlbEntry) {
        let tag = (vmid, asid);
        let base = va & !mask(entry.size_log2);
        let key = (base, entry.size_log2);
        self.inserts += 1;
        self.max_log2 = self.max_log2.max(entry.size_log2);
        if let Some(&slot) = self.lookup.get(&(tag, base, entry.size_log2))
            && let Some(Some(s)) = self.slots.get_mut(slot)
        {
            s.entry = entry;
            s.referenced = true;
            return;
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => self.evict(),
        };
        if let Some(s) = self.slots.get_mut(slot) {
            *s = Some(Slot {
                tag,
                base,
                entry,
                referenced: false,
            });
            self.index.entry(tag).or_default().insert(key, slot);
            self.lookup.insert((tag, base, key.1), slot);
        }
    }

    /// Frees one slot by CLOCK and returns it (not on the free list).
    fn evict(&mut self) -> usize {
        for _ in 0..=2 * self.capacity {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.capacity;
            match self.slots.get_mut(i) {
                Some(Some(s)) if s.referenced => s.referenced = false,
                Some(Some(_)) => {
                    self.unlink(i);
                    self.evictions += 1;
                    return i;
                }
                _ => return i,
            }
        }
        // Unreachable in practice: every slot's bit was cleared by the first sweep.
        let i = self.hand;
        self.unlink(i);
        self.evictions += 1;
        i
    }

    /// Removes slot `i` from the slot array and the index (not added to the free list).
    fn unlink(&mut self, i: usize) {
        let Some(s) = self.slots.get_mut(i).and_then(Option::take) else {
            return;
        };
        self.generation.fetch_add(1, Ordering::Release);
        self.lookup.remove(&(s.tag, s.base, s.entry.size_log2));
        if let Some(map) = self.index.get_mut(&s.tag) {
            map.remove(&(s.base, s.entry.size_log2));
            if map.is_empty() {
                self.index.remove(&s.tag);
            }
        }
    }

    fn remove(&mut self, slots: Vec<usize>) {
        for i in slots {
            if matches!(self.slots.get(i), Some(Some(_))) {
                self.unlink(i);
                self.free.push(i);
                self.invalidations += 1;
            }
        }
    }

    /// Everything (CMD_TLBI_NSNH_ALL, CMD_TLBI_NH_ALL without stage 2).
    pub fn invalidate_all(&mut self) {
        self.generation.fetch_add(1, Ordering::Release);
        self.invalidations += self.len() as u64;
        self.slots.iter_mut().for_each(|s| *s = None);
        self.free = (0..self.capacity).rev().collect();
        self.index.clear();
        self.lookup.clear();
        self.hand = 0;
    }

    /// The non-global entries of one ASID, those passing `keep_if` excepted.
    pub fn invalidate_tag(&mut self, tag: Tag, skip: impl Fn(&TlbEntry) -> bool) {
        let Some(map) = self.index.get(&tag) else {
            return;
        };
        let slots: Vec<usize> = map
            .values()
            .copied()
            .filter(|&i| matches!(self.slots.get(i), Some(Some(s)) if !skip(&s.entry)))
            .collect();
        self.remove(slots);
    }

    /// Entries of `tag` overlapping `[start, end)` (`end` exclusive, saturating).
    pub fn invalidate_range(
        &mut self,
        tag: Tag,
        start: u64,
        end: u64,
        skip: impl Fn(&TlbEntry) -> bool,
    ) {
        let Some(map) = self.index.get(&tag) else {
            return;
        };
        if end <= start {
            return;
        }
        let lo = start & !mask(self.max_log2);
        let slots: Vec<usize> = map
            .range((lo, 0)..(end, 0))
            .filter(|&(&(base, s), _)| base.saturating_add(mask(s)) >= start)
            .map(|(_, &i)| i)
            .filter(|&i| matches!(self.slots.get(i), Some(Some(s)) if !skip(&s.entry)))
            .collect();
        self.remove(slots);
    }

    /// Entries of every ASID (and global) of `vmid` overlapping `[start, end)`.
    pub fn invalidate_range_all_asids(&mut self, vmid: u16, start: u64, end: u64) {
        let tags: Vec<Tag> = self.index.keys().copied().filter(|t| t.0 == vmid).collect();
        for tag in tags {
            self.invalidate_range(tag, start, end, |_| false);
        }
    }

    /// Every entry not passing `skip` (broadcast TLBI VMALLE1IS skips ASET entries).
    pub fn invalidate_unless(&mut self, skip: impl Fn(&TlbEntry) -> bool) {
        let slots: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, Some(s) if !skip(&s.entry)))
            .map(|(i, _)| i)
            .collect();
        self.remove(slots);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pa: u64, size_log2: u8) -> TlbEntry {
        TlbEntry {
            pa_base: pa,
            size_log2,
            perms: Permissions::default(),
            aset: false,
        }
    }

    #[test]
    fn clock_keeps_referenced_entries() {
        let mut t = Iotlb::new(4, Arc::default());
        for i in 0..4u64 {
            t.insert(0, Some(1), i << 12, entry(i << 12, 12));
        }
        // First sweep clears no bits (inserted unreferenced): entry 0 is the victim.
        assert!(t.lookup(0, 1, 1 << 12, &[12]).is_some());
        t.insert(0, Some(1), 9 << 12, entry(9 << 12, 12));
        assert_eq!(t.evictions, 1);
        assert!(t.lookup(0, 1, 0, &[12]).is_none(), "0 evicted");
        assert!(
            t.lookup(0, 1, 1 << 12, &[12]).is_some(),
            "referenced 1 kept"
        );
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn global_entries_match_every_asid_and_blocks_cover_their_range() {
        let mut t = Iotlb::new(16, Arc::default());
        t.insert(0, None, 0x20_0000, entry(0x4000_0000, 21));
        let hit = t
            .lookup(0, 77, 0x3F_F123, &[12, 21, 30])
            .expect("block hit");
        assert_eq!(hit.pa_base, 0x4000_0000);
        // Range invalidation overlapping the block's end removes it.
        t.invalidate_range((0, Some(77)), 0x3F_F000, 0x40_0000, |_| false);
        assert_eq!(t.len(), 1, "ASID-tagged invalidation leaves global entries");
        t.invalidate_range((0, None), 0x3F_F000, 0x40_0000, |_| false);
        assert_eq!(t.len(), 0);
        assert_eq!(t.invalidations, 1);
    }

    #[test]
    fn asid_invalidation_is_per_tag() {
        let mut t = Iotlb::new(16, Arc::default());
        for asid in 1..=3u16 {
            for i in 0..3u64 {
                t.insert(0, Some(asid), i << 12, entry(i << 12, 12));
            }
        }
        t.invalidate_tag((0, Some(2)), |_| false);
        assert_eq!(t.len(), 6);
        assert!(t.lookup(0, 2, 0, &[12]).is_none());
        assert!(t.lookup(0, 3, 0, &[12]).is_some());
        t.invalidate_range_all_asids(0, 0x1000, 0x2000);
        assert_eq!(t.len(), 4);
        t.invalidate_all();
        assert_eq!(t.len(), 0);
    }
}
