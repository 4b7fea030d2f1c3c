use crate::{AllocStats, DEFAULT_RAM_SIZE, FrameAllocator, PhysMemory, Result, SparseRam};
use std::sync::Arc;
use sva_addr::Pa;

/// Simulated RAM and its frame allocator: what the layers above allocate tables and pages
/// from. `Ram` is itself a [`PhysMemory`], so a walker can be handed `&Ram` directly.
///
/// Allocated blocks are always zeroed: freed blocks are zeroed when their last reference
/// goes, so a new owner never sees a previous owner's data.
pub struct Ram {
    mem: Arc<dyn PhysMemory>,
    frames: FrameAllocator,
}

impl core::fmt::Debug for Ram {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ram")
            .field("size", &self.mem.size())
            .field("frames", &self.frames.stats())
            .finish()
    }
}

impl Ram {
    /// Sparse RAM of `size` bytes.
    pub fn new(size: u64) -> Result<Self> {
        Ok(Self::with_memory(Arc::new(SparseRam::new(size)?)))
    }

    /// Sparse RAM of the default size (4 GiB).
    pub fn with_default_size() -> Self {
        Self::new(DEFAULT_RAM_SIZE).expect("the default RAM size is valid")
    }

    /// RAM on any backing, e.g. a [`crate::GuestRam`] over a VMM's guest memory. The
    /// allocator manages `[0, mem.size())`, which must read as zeroes when handed over.
    pub fn with_memory(mem: Arc<dyn PhysMemory>) -> Self {
        let frames = FrameAllocator::new(mem.size() & !(crate::FRAME_SIZE - 1));
        Self { mem, frames }
    }

    /// The backing memory.
    pub fn memory(&self) -> &Arc<dyn PhysMemory> {
        &self.mem
    }

    /// Allocates a zeroed, naturally aligned block of `size` bytes (4 KiB to 1 GiB, a power
    /// of two) with one reference.
    pub fn alloc(&self, size: u64) -> Result<Pa> {
        self.frames.alloc(size)
    }

    /// Takes a reference on the block at `pa` (copy-on-write sharing); returns the count.
    pub fn get(&self, pa: Pa) -> Result<u32> {
        self.frames.get(pa)
    }

    /// Drops a reference on the block at `pa`; the last one zeroes and frees it. Returns
    /// whether the block was freed.
    pub fn put(&self, pa: Pa) -> Result<bool> {
        self.frames.put(pa, |pa, size| self.mem.fill(pa, 0, size))
    }

    /// [`Ram::put`] of a block the caller knows to be all zero, such as a translation
    /// table found empty and unlinked: the zeroing is skipped (and checked in debug
    /// builds). Unmapping frees up to three tables per call; zeroing them again would
    /// cost as much as finding them empty.
    pub fn put_zeroed(&self, pa: Pa) -> Result<bool> {
        self.frames.put(pa, |pa, size| {
            debug_assert!(self.mem.is_zero(pa, size)?, "{pa:?} is not zero");
            Ok(())
        })
    }

    /// Reference count of the block at `pa`.
    pub fn refcount(&self, pa: Pa) -> Result<u32> {
        self.frames.refcount(pa)
    }

    /// Size of the allocated block at `pa`.
    pub fn block_size(&self, pa: Pa) -> Result<u64> {
        self.frames.block_size(pa)
    }

    /// Splits the block at `pa` into 4 KiB frames carrying its reference count.
    pub fn split(&self, pa: Pa) -> Result<()> {
        self.frames.split(pa)
    }

    /// Allocator statistics.
    pub fn stats(&self) -> AllocStats {
        self.frames.stats()
    }
}

impl PhysMemory for Ram {
    fn size(&self) -> u64 {
        self.mem.size()
    }
    fn read(&self, pa: Pa, buf: &mut [u8]) -> Result<()> {
        self.mem.read(pa, buf)
    }
    fn write(&self, pa: Pa, buf: &[u8]) -> Result<()> {
        self.mem.write(pa, buf)
    }
    fn load_u64(&self, pa: Pa) -> Result<u64> {
        self.mem.load_u64(pa)
    }
    fn store_u64(&self, pa: Pa, val: u64) -> Result<()> {
        self.mem.store_u64(pa, val)
    }
    fn compare_exchange_u64(
        &self,
        pa: Pa,
        current: u64,
        new: u64,
    ) -> Result<core::result::Result<u64, u64>> {
        self.mem.compare_exchange_u64(pa, current, new)
    }
    fn fill(&self, pa: Pa, byte: u8, len: u64) -> Result<()> {
        self.mem.fill(pa, byte, len)
    }
    fn copy(&self, src: Pa, dst: Pa, len: u64) -> Result<()> {
        self.mem.copy(src, dst, len)
    }
    fn is_zero(&self, pa: Pa, len: u64) -> Result<bool> {
        self.mem.is_zero(pa, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Threads allocating, filling and freeing frames at once (the allocator hands out the
    /// lowest free frame, so each gets the frames the others just freed): a new frame is
    /// zero, and what its owner writes stays until the owner frees it. A frame zeroed
    /// after it went back on the free list would be wiped under its next owner.
    #[test]
    fn a_freed_frame_is_zeroed_before_anyone_can_have_it() {
        let ram = Arc::new(Ram::new(1 << 20).unwrap());
        let threads: Vec<_> = (1..=2u8)
            .map(|id| {
                let ram = ram.clone();
                std::thread::spawn(move || {
                    for round in 0..20_000u32 {
                        let pa = ram.alloc(4096).unwrap();
                        assert!(ram.is_zero(pa, 4096).unwrap(), "round {round}: not zeroed");
                        ram.fill(pa, id, 4096).unwrap();
                        std::thread::yield_now();
                        let mut back = [0u8; 4096];
                        ram.read(pa, &mut back).unwrap();
                        assert!(back.iter().all(|&b| b == id), "round {round}: data lost");
                        ram.put(pa).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(ram.stats().used_frames, 0);
    }

    #[test]
    fn put_zeroed_frees_a_zero_block() {
        let ram = Ram::new(1 << 20).unwrap();
        let p = ram.alloc(4096).unwrap();
        assert!(ram.put_zeroed(p).unwrap());
        assert_eq!(ram.stats().used_frames, 0);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "is not zero")]
    fn put_zeroed_of_a_dirty_block_is_caught_in_debug_builds() {
        let ram = Ram::new(1 << 20).unwrap();
        let p = ram.alloc(4096).unwrap();
        ram.write(p + 8, &[1]).unwrap();
        ram.put_zeroed(p).unwrap();
    }

    #[test]
    fn freed_blocks_come_back_zeroed() {
        let ram = Ram::new(1 << 20).unwrap();
        let p = ram.alloc(4096).unwrap();
        ram.write(p + 100, b"secret").unwrap();
        assert!(ram.put(p).unwrap());
        let q = ram.alloc(4096).unwrap();
        assert_eq!(p, q);
        let mut b = [0u8; 6];
        ram.read(q + 100, &mut b).unwrap();
        assert_eq!(b, [0; 6]);
    }

    #[test]
    fn shared_block_survives_one_put() {
        let ram = Ram::new(1 << 20).unwrap();
        let p = ram.alloc(4096).unwrap();
        ram.write(p, b"x").unwrap();
        ram.get(p).unwrap();
        assert!(!ram.put(p).unwrap());
        let mut b = [0u8; 1];
        ram.read(p, &mut b).unwrap();
        assert_eq!(&b, b"x");
        assert_eq!(ram.stats().used_frames, 1);
    }
}
