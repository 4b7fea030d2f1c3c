//! The micro-TLB: a small direct-mapped cache in front of the configuration cache and the
//! IOTLB, keyed by (StreamID, SubstreamID, 4 KiB page), like the per-TBU micro-TLBs of real
//! SMMUs. A hit takes no lock: each slot is a sequence lock over atomic words, written only
//! under the model's state lock.
//!
//! It is architecturally invisible. Every entry records the generation it was made in; the
//! IOTLB and the configuration cache bump the shared generation *as* they drop anything
//! (before a later CMD_SYNC can complete), so an entry is never used after an invalidation
//! that could have concerned it. SMMUEN is mirrored whenever the state lock is released,
//! before any register read can observe the change.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use sva_vmsa::{AccessKind, Permissions};

/// Slots (direct-mapped).
const SLOTS: usize = 256;

/// (StreamID, SubstreamID or `u32::MAX` for none, page number of the input address).
pub(crate) type Key = (u32, u32, u64);

/// A translation served by the micro-TLB.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    /// Output address of the 4 KiB page.
    pub pa_page: u64,
    /// Size of the leaf the translation came from.
    pub size: u64,
    pub perms: Permissions,
}

#[derive(Debug, Default)]
struct Slot {
    /// Odd while being written.
    seq: AtomicU64,
    sid_ssid: AtomicU64,
    page: AtomicU64,
    pa_page: AtomicU64,
    /// bit 63 valid, bits [12:8] permissions, bits [5:0] log2 of the leaf size.
    meta: AtomicU64,
    generation: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct MicroTlb {
    slots: Box<[Slot]>,
    generation: Arc<AtomicU64>,
    enabled: AtomicBool,
    /// Hit counters, one per group of slots, each on its own cache line: threads hitting
    /// different slots mostly count on different lines. (A per-thread counter found through
    /// a thread-local cost more than the uncontended atomic add.)
    hit_counters: Box<[HitCounter]>,
}

/// Hit counter stripes.
const STRIPES: usize = 16;

/// A hit counter alone on its cache line (two lines: adjacent-line prefetch pairs them).
#[derive(Debug, Default)]
#[repr(align(128))]
struct HitCounter(AtomicU64);

const VALID: u64 = 1 << 63;

fn pack(perms: Permissions) -> u64 {
    [
        perms.read,
        perms.write,
        perms.user,
        perms.user_exec,
        perms.priv_exec,
    ]
    .iter()
    .enumerate()
    .fold(0, |acc, (i, &b)| acc | (u64::from(b) << (8 + i)))
}

/// The `meta` bits an unprivileged `kind` access needs (the EL0 rows of
/// [`Permissions::allows`]).
const fn user_needs(kind: AccessKind) -> u64 {
    match kind {
        AccessKind::Read => 1 << 8 | 1 << 10,
        AccessKind::Write => 1 << 9 | 1 << 10,
        AccessKind::Execute => 1 << 11,
    }
}

fn unpack(meta: u64) -> Permissions {
    let bit = |i: u32| meta & (1 << (8 + i)) != 0;
    Permissions {
        read: bit(0),
        write: bit(1),
        user: bit(2),
        user_exec: bit(3),
        priv_exec: bit(4),
    }
}

fn slot_of(key: &Key) -> usize {
    // Fibonacci hashing of the page and the stream/substream.
    let h = (key.2 ^ (u64::from(key.0) << 40) ^ (u64::from(key.1) << 20))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 56) as usize % SLOTS
}

impl MicroTlb {
    pub fn new() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| Slot::default()).collect(),
            generation: Arc::new(AtomicU64::new(0)),
            enabled: AtomicBool::new(false),
            hit_counters: (0..STRIPES).map(|_| HitCounter::default()).collect(),
        }
    }

    /// The generation counter the IOTLB and the configuration cache bump.
    pub fn generation(&self) -> Arc<AtomicU64> {
        self.generation.clone()
    }

    /// Mirrors SMMU_CR0.SMMUEN (called with the state lock held, before it is released).
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Release);
    }

    /// Hits served so far, by every thread.
    pub fn hits(&self) -> u64 {
        self.hit_counters
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .sum()
    }

    /// The current translation for `key` if it allows an unprivileged `kind` access, without
    /// taking any lock. Only such a use counts as a hit: anything else takes the slow path,
    /// which does its own counting.
    #[inline]
    pub fn lookup(&self, key: &Key, kind: AccessKind) -> Option<Entry> {
        if !self.enabled.load(Ordering::Acquire) {
            return None;
        }
        let slot = slot_of(key);
        let s = &self.slots[slot];
        let v1 = s.seq.load(Ordering::Acquire);
        if v1 & 1 != 0 {
            return None;
        }
        let sid_ssid = s.sid_ssid.load(Ordering::Relaxed);
        let page = s.page.load(Ordering::Relaxed);
        let pa_page = s.pa_page.load(Ordering::Relaxed);
        let meta = s.meta.load(Ordering::Relaxed);
        let generation = s.generation.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if s.seq.load(Ordering::Relaxed) != v1 {
            return None;
        }
        let needs = VALID | user_needs(kind);
        let current = meta & needs == needs
            && sid_ssid == (u64::from(key.0) << 32 | u64::from(key.1))
            && page == key.2
            && generation == self.generation.load(Ordering::Acquire);
        if !current {
            return None;
        }
        self.hit_counters[slot % STRIPES]
            .0
            .fetch_add(1, Ordering::Relaxed);
        Some(Entry {
            pa_page,
            size: 1 << (meta & 0x3f),
            perms: unpack(meta),
        })
    }

    /// Caches a translation made in generation `generation`. Only called with the state
    /// lock held, so there is one writer at a time.
    pub fn insert(&self, key: Key, pa_page: u64, size: u64, perms: Permissions, generation: u64) {
        let s = &self.slots[slot_of(&key)];
        let v = s.seq.load(Ordering::Relaxed);
        s.seq.store(v.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        s.sid_ssid
            .store(u64::from(key.0) << 32 | u64::from(key.1), Ordering::Relaxed);
        s.page.store(key.2, Ordering::Relaxed);
        s.pa_page.store(pa_page, Ordering::Relaxed);
        s.meta.store(
            VALID | pack(perms) | u64::from(size.trailing_zeros()),
            Ordering::Relaxed,
        );
        s.generation.store(generation, Ordering::Relaxed);
        s.seq.store(v.wrapping_add(2), Ordering::Release);
    }

    /// The generation now (under the state lock).
    pub fn current(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AccessKind::Read;

    fn perms() -> Permissions {
        Permissions {
            read: true,
            write: false,
            user: true,
            user_exec: false,
            priv_exec: true,
        }
    }

    #[test]
    fn entries_die_with_the_generation_and_when_disabled() {
        let u = MicroTlb::new();
        u.set_enabled(true);
        u.insert((1, 2, 3), 0x5000, 1 << 21, perms(), u.current());
        let e = u.lookup(&(1, 2, 3), Read).unwrap();
        assert_eq!((e.pa_page, e.size, e.perms), (0x5000, 1 << 21, perms()));
        assert!(u.lookup(&(1, 3, 3), Read).is_none(), "other SSID");
        assert!(u.lookup(&(1, 2, 4), Read).is_none(), "other page");
        u.set_enabled(false);
        assert!(u.lookup(&(1, 2, 3), Read).is_none(), "SMMUEN = 0");
        u.set_enabled(true);
        u.generation().fetch_add(1, Ordering::Release);
        assert!(
            u.lookup(&(1, 2, 3), Read).is_none(),
            "an invalidation happened"
        );
        assert_eq!(u.hits(), 1);
    }

    #[test]
    fn a_hit_needs_what_permissions_allows_for_an_unprivileged_access() {
        let u = MicroTlb::new();
        u.set_enabled(true);
        for bits in 0..32u8 {
            let bit = |i: u8| bits & (1 << i) != 0;
            let p = Permissions {
                read: bit(0),
                write: bit(1),
                user: bit(2),
                user_exec: bit(3),
                priv_exec: bit(4),
            };
            u.insert((1, 1, 1), 0x1000, 4096, p, u.current());
            for kind in [Read, AccessKind::Write, AccessKind::Execute] {
                let before = u.hits();
                let hit = u.lookup(&(1, 1, 1), kind);
                assert_eq!(
                    hit.is_some(),
                    p.allows(sva_vmsa::Access::new(kind, false)),
                    "{p:?} {kind:?}"
                );
                assert_eq!(hit.map(|e| e.perms), hit.is_some().then_some(p));
                assert_eq!(
                    u.hits() - before,
                    u64::from(hit.is_some()),
                    "only uses count"
                );
            }
        }
    }

    #[test]
    fn hits_are_counted_exactly_across_threads_and_instances() {
        let a = Arc::new(MicroTlb::new());
        let b = Arc::new(MicroTlb::new());
        for u in [&a, &b] {
            u.set_enabled(true);
            u.insert((1, 1, 1), 0x1000, 4096, perms(), u.current());
        }
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (a, b) = (a.clone(), b.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        a.lookup(&(1, 1, 1), Read).unwrap();
                        b.lookup(&(1, 1, 1), Read).unwrap();
                        b.lookup(&(1, 1, 1), Read).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(a.hits(), 4000);
        assert_eq!(b.hits(), 8000);
    }

    #[test]
    fn concurrent_readers_never_see_a_torn_entry() {
        let u = Arc::new(MicroTlb::new());
        u.set_enabled(true);
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let u = u.clone();
                std::thread::spawn(move || {
                    for _ in 0..200_000 {
                        if let Some(e) = u.lookup(&(7, 7, 7), Read) {
                            // Writers always pair pa_page = size so a torn read shows.
                            assert_eq!(e.pa_page, e.size);
                        }
                    }
                })
            })
            .collect();
        for i in 0..100_000u64 {
            let size = 1 << (12 + i % 20);
            u.insert((7, 7, 7), size, size, perms(), u.current());
        }
        for r in readers {
            r.join().unwrap();
        }
    }
}
