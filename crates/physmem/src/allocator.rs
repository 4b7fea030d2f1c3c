use crate::{Error, FRAME_SHIFT, FRAME_SIZE, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use sva_addr::Pa;

/// Largest block order: 2^18 frames of 4 KiB = 1 GiB.
pub const MAX_ORDER: u32 = 18;

/// Allocation statistics: enough to prove that a scenario freed everything it allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AllocStats {
    /// 4 KiB frames managed.
    pub total_frames: u64,
    /// Frames currently free.
    pub free_frames: u64,
    /// Frames currently allocated.
    pub used_frames: u64,
    /// Allocated blocks (of any order).
    pub blocks: u64,
    /// Highest `used_frames` seen.
    pub peak_used_frames: u64,
    /// Blocks allocated since creation.
    pub total_allocations: u64,
}

#[derive(Debug, Clone, Copy)]
struct Block {
    order: u32,
    refs: u32,
}

#[derive(Debug)]
struct State {
    /// Free blocks per order, by first frame number: lowest address first, so allocation
    /// is deterministic.
    free: Vec<BTreeSet<u64>>,
    /// Allocated blocks by first frame number.
    used: BTreeMap<u64, Block>,
    stats: AllocStats,
}

/// A buddy allocator of 4 KiB frames with per-block reference counts.
///
/// Blocks are naturally aligned powers of two from one frame (a 4K granule page) up to
/// 1 GiB, so 16K/64K granule tables and 2 MiB blocks get the alignment the translation
/// table format requires. A reference count belongs to a whole block; [`split`] turns a
/// block into single frames (when a 2 MiB mapping is broken into pages).
///
/// [`split`]: FrameAllocator::split
#[derive(Debug)]
pub struct FrameAllocator {
    state: Mutex<State>,
}

/// The buddy order of a block of `size` bytes.
fn order_of(size: u64) -> Result<u32> {
    if !size.is_power_of_two() || !(FRAME_SIZE..=FRAME_SIZE << MAX_ORDER).contains(&size) {
        return Err(Error::BadAllocSize(size));
    }
    Ok(size.trailing_zeros() - FRAME_SHIFT)
}

impl FrameAllocator {
    /// An allocator for `[0, size)`; `size` is a multiple of 4 KiB.
    pub fn new(size: u64) -> Self {
        let total = size >> FRAME_SHIFT;
        let mut free = vec![BTreeSet::new(); MAX_ORDER as usize + 1];
        let mut frame = 0;
        while frame < total {
            // The largest aligned block that starts here and fits.
            let mut order = MAX_ORDER.min(frame.trailing_zeros());
            while frame + (1 << order) > total {
                order -= 1;
            }
            free[order as usize].insert(frame);
            frame += 1 << order;
        }
        Self {
            state: Mutex::new(State {
                free,
                used: BTreeMap::new(),
                stats: AllocStats {
                    total_frames: total,
                    free_frames: total,
                    ..AllocStats::default()
                },
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that
        // matters more than losing the allocator, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Allocates a naturally aligned block of `size` bytes (a power of two from 4 KiB to
    /// 1 GiB) with a reference count of one. The caller zeroes it if needed.
    pub fn alloc(&self, size: u64) -> Result<Pa> {
        let order = order_of(size)?;
        let mut st = self.lock();
        let Some(mut have) = (order..=MAX_ORDER).find(|&o| !st.free[o as usize].is_empty()) else {
            return Err(Error::Exhausted {
                size,
                free_frames: st.stats.free_frames,
            });
        };
        let frame = st.free[have as usize].pop_first().expect("non-empty");
        while have > order {
            have -= 1;
            st.free[have as usize].insert(frame + (1 << have));
        }
        st.used.insert(frame, Block { order, refs: 1 });
        let s = &mut st.stats;
        s.free_frames -= 1 << order;
        s.used_frames += 1 << order;
        s.blocks += 1;
        s.total_allocations += 1;
        s.peak_used_frames = s.peak_used_frames.max(s.used_frames);
        Ok(Pa(frame << FRAME_SHIFT))
    }

    /// Takes another reference on the block starting at `pa`; returns the new count.
    pub fn get(&self, pa: Pa) -> Result<u32> {
        let mut st = self.lock();
        let block = Self::block_mut(&mut st, pa)?;
        block.refs = block
            .refs
            .checked_add(1)
            .ok_or(Error::RefcountOverflow(pa))?;
        Ok(block.refs)
    }

    /// Drops a reference on the block starting at `pa`. When that was the last reference,
    /// `scrub(pa, size)` runs (outside the allocator's lock) before the block goes back on
    /// the free lists, so nobody can be handed the block before it is scrubbed; returns
    /// whether the block was freed. A block being scrubbed counts as allocated but takes no
    /// new references. If `scrub` fails, the block stays allocated (it cannot be handed out
    /// dirty) and the error is returned.
    pub fn put(&self, pa: Pa, scrub: impl FnOnce(Pa, u64) -> Result<()>) -> Result<bool> {
        let order = {
            let mut st = self.lock();
            let block = Self::block_mut(&mut st, pa)?;
            block.refs -= 1;
            if block.refs > 0 {
                return Ok(false);
            }
            block.order
        };
        scrub(pa, FRAME_SIZE << order)?;
        let mut st = self.lock();
        let frame = pa.raw() >> FRAME_SHIFT;
        st.used.remove(&frame);
        Self::release(&mut st, frame, order);
        Ok(true)
    }

    /// Reference count of the block starting at `pa`.
    pub fn refcount(&self, pa: Pa) -> Result<u32> {
        let mut st = self.lock();
        Ok(Self::block_mut(&mut st, pa)?.refs)
    }

    /// Size in bytes of the allocated block starting at `pa`.
    pub fn block_size(&self, pa: Pa) -> Result<u64> {
        let mut st = self.lock();
        Ok(FRAME_SIZE << Self::block_mut(&mut st, pa)?.order)
    }

    /// Splits the block starting at `pa` into single 4 KiB frames, each with the block's
    /// reference count, so they can be freed one by one.
    pub fn split(&self, pa: Pa) -> Result<()> {
        let mut st = self.lock();
        let block = *Self::block_mut(&mut st, pa)?;
        let first = pa.raw() >> FRAME_SHIFT;
        for frame in first..first + (1 << block.order) {
            st.used.insert(
                frame,
                Block {
                    order: 0,
                    refs: block.refs,
                },
            );
        }
        st.stats.blocks += (1 << block.order) - 1;
        Ok(())
    }

    /// Current statistics.
    pub fn stats(&self) -> AllocStats {
        self.lock().stats
    }

    fn block_mut(st: &mut State, pa: Pa) -> Result<&mut Block> {
        if !pa.is_aligned(FRAME_SIZE) {
            return Err(Error::NotAllocated(pa));
        }
        // A block whose last reference went is being scrubbed: it is nobody's any more.
        st.used
            .get_mut(&(pa.raw() >> FRAME_SHIFT))
            .filter(|b| b.refs > 0)
            .ok_or(Error::NotAllocated(pa))
    }

    /// Returns a block to the free lists, merging it with its free buddies.
    fn release(st: &mut State, mut frame: u64, order: u32) {
        let s = &mut st.stats;
        s.free_frames += 1 << order;
        s.used_frames -= 1 << order;
        s.blocks -= 1;
        let mut order = order;
        while order < MAX_ORDER {
            let buddy = frame ^ (1 << order);
            if !st.free[order as usize].remove(&buddy) {
                break;
            }
            frame = frame.min(buddy);
            order += 1;
        }
        st.free[order as usize].insert(frame);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scrub that leaves the block as it is.
    fn keep(_: Pa, _: u64) -> Result<()> {
        Ok(())
    }

    #[test]
    fn the_last_put_scrubs_before_the_block_is_free() {
        let a = FrameAllocator::new(1 << 20);
        let p = a.alloc(16 << 10).unwrap();
        a.get(p).unwrap();
        let mut seen = Vec::new();
        assert!(
            !a.put(p, |pa, size| {
                seen.push((pa, size));
                Ok(())
            })
            .unwrap()
        );
        assert!(seen.is_empty(), "not the last reference: no scrub");
        let freed = a
            .put(p, |pa, size| {
                seen.push((pa, size));
                // While scrubbed, the block is nobody's and not free either.
                assert_eq!(a.get(pa).unwrap_err(), Error::NotAllocated(pa));
                assert_eq!(a.stats().blocks, 1);
                Ok(())
            })
            .unwrap();
        assert!(freed);
        assert_eq!(seen, [(p, 16 << 10)]);
        assert_eq!(a.stats().used_frames, 0);
    }

    #[test]
    fn a_failed_scrub_keeps_the_block_out_of_the_free_lists() {
        let a = FrameAllocator::new(1 << 20);
        let p = a.alloc(4096).unwrap();
        let err = a.put(p, |pa, _| Err(Error::NotAllocated(pa))).unwrap_err();
        assert_eq!(err, Error::NotAllocated(p));
        assert_eq!(a.stats().used_frames, 1);
        assert_ne!(a.alloc(4096).unwrap(), p, "a dirty block was handed out");
    }

    #[test]
    fn blocks_are_naturally_aligned() {
        let a = FrameAllocator::new(64 << 20);
        let _one = a.alloc(4096).unwrap();
        for size in [16 << 10, 64 << 10, 2 << 20] {
            let pa = a.alloc(size).unwrap();
            assert!(pa.is_aligned(size), "{pa} not aligned to {size:#x}");
            assert_eq!(a.block_size(pa).unwrap(), size);
        }
    }

    #[test]
    fn free_merges_buddies_back() {
        let a = FrameAllocator::new(4 << 20);
        let start = a.stats();
        let pages: Vec<_> = (0..100).map(|_| a.alloc(4096).unwrap()).collect();
        let big = a.alloc(2 << 20).unwrap();
        assert_eq!(a.stats().used_frames, 100 + 512);
        for p in pages {
            assert!(a.put(p, keep).unwrap());
        }
        a.put(big, keep).unwrap();
        let end = a.stats();
        assert_eq!(end.free_frames, start.free_frames);
        assert_eq!(end.blocks, 0);
        // Everything merged: a 4 MiB RAM holds two free 2 MiB blocks again.
        a.alloc(2 << 20).unwrap();
        a.alloc(2 << 20).unwrap();
    }

    #[test]
    fn refcounts_keep_blocks_alive() {
        let a = FrameAllocator::new(1 << 20);
        let p = a.alloc(4096).unwrap();
        assert_eq!(a.get(p).unwrap(), 2);
        assert!(!a.put(p, keep).unwrap());
        assert_eq!(a.refcount(p).unwrap(), 1);
        assert!(a.put(p, keep).unwrap());
        assert_eq!(a.put(p, keep).unwrap_err(), Error::NotAllocated(p));
        assert_eq!(
            a.get(Pa(p.raw() + 8)).unwrap_err(),
            Error::NotAllocated(Pa(p.raw() + 8))
        );
    }

    #[test]
    fn split_frees_frames_one_by_one() {
        let a = FrameAllocator::new(4 << 20);
        let b = a.alloc(2 << 20).unwrap();
        a.get(b).unwrap();
        a.split(b).unwrap();
        assert_eq!(a.stats().blocks, 512);
        for i in 0..512u64 {
            let f = Pa(b.raw() + i * 4096);
            assert_eq!(a.refcount(f).unwrap(), 2);
            a.put(f, keep).unwrap();
            assert!(a.put(f, keep).unwrap());
        }
        assert_eq!(a.stats().used_frames, 0);
    }

    #[test]
    fn exhaustion_and_bad_sizes_are_errors() {
        let a = FrameAllocator::new(64 << 10);
        assert_eq!(a.alloc(3000).unwrap_err(), Error::BadAllocSize(3000));
        assert_eq!(a.alloc(2 << 30).unwrap_err(), Error::BadAllocSize(2 << 30));
        assert!(matches!(a.alloc(128 << 10), Err(Error::Exhausted { .. })));
        for _ in 0..16 {
            a.alloc(4096).unwrap();
        }
        assert_eq!(
            a.alloc(4096).unwrap_err(),
            Error::Exhausted {
                size: 4096,
                free_frames: 0
            }
        );
    }

    #[test]
    fn odd_sizes_are_fully_usable() {
        let a = FrameAllocator::new((1 << 30) + (3 << 12));
        assert_eq!(a.stats().total_frames, (1 << 18) + 3);
        a.alloc(1 << 30).unwrap();
        for _ in 0..3 {
            a.alloc(4096).unwrap();
        }
        assert!(a.alloc(4096).is_err());
    }

    #[test]
    fn one_tebibyte_allocator_is_cheap() {
        let a = FrameAllocator::new(1 << 40);
        assert_eq!(a.stats().free_frames, 1 << 28);
        let p = a.alloc(4096).unwrap();
        assert_eq!(p, Pa(0));
    }
}
