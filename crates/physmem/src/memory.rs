use crate::{Error, Result};
use sva_addr::Pa;

/// Byte and atomic access to simulated physical memory.
///
/// Byte accesses are what DMA and CPU loads/stores become; the 64-bit atomics are for
/// translation-table descriptors and queue words, which hardware updates concurrently with
/// software (Acquire loads, Release stores, AcqRel compare-exchange).
pub trait PhysMemory: Send + Sync {
    /// Size of RAM in bytes; valid addresses are `0..size`.
    fn size(&self) -> u64;

    /// Reads `buf.len()` bytes at `pa`.
    fn read(&self, pa: Pa, buf: &mut [u8]) -> Result<()>;

    /// Writes `buf` at `pa`.
    fn write(&self, pa: Pa, buf: &[u8]) -> Result<()>;

    /// Loads the little-endian 64-bit word at `pa` (8-byte aligned), with Acquire ordering.
    fn load_u64(&self, pa: Pa) -> Result<u64>;

    /// Stores a little-endian 64-bit word at `pa` (8-byte aligned), with Release ordering.
    fn store_u64(&self, pa: Pa, val: u64) -> Result<()>;

    /// Atomically replaces the word at `pa` with `new` if it equals `current`. Returns
    /// `Ok(Ok(previous))` on success and `Ok(Err(actual))` when the word differed.
    fn compare_exchange_u64(
        &self,
        pa: Pa,
        current: u64,
        new: u64,
    ) -> Result<core::result::Result<u64, u64>>;

    /// Sets `len` bytes at `pa` to `byte`.
    fn fill(&self, pa: Pa, byte: u8, len: u64) -> Result<()> {
        self.check_range(pa, len)?;
        let chunk = [byte; 4096];
        for (at, n) in pieces(len, chunk.len()) {
            self.write(pa + at, &chunk[..n])?;
        }
        Ok(())
    }

    /// Copies `len` bytes from `src` to `dst` (the ranges must not overlap).
    fn copy(&self, src: Pa, dst: Pa, len: u64) -> Result<()> {
        self.check_range(src, len)?;
        self.check_range(dst, len)?;
        let mut buf = [0u8; 4096];
        for (at, n) in pieces(len, buf.len()) {
            self.read(src + at, &mut buf[..n])?;
            self.write(dst + at, &buf[..n])?;
        }
        Ok(())
    }

    /// Whether every byte of `[pa, pa + len)` is zero: how a translation table is found
    /// empty (descriptors read with at least Acquire ordering, as `load_u64`).
    fn is_zero(&self, pa: Pa, len: u64) -> Result<bool> {
        self.check_range(pa, len)?;
        let mut buf = [0u8; 4096];
        for (at, n) in pieces(len, buf.len()) {
            self.read(pa + at, &mut buf[..n])?;
            if buf[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Checks that `[pa, pa + len)` lies inside RAM.
    fn check_range(&self, pa: Pa, len: u64) -> Result<()> {
        match pa.raw().checked_add(len) {
            Some(end) if end <= self.size() => Ok(()),
            _ => Err(Error::OutOfRange {
                pa,
                len,
                size: self.size(),
            }),
        }
    }

    /// Checks range and 8-byte alignment for a 64-bit atomic access.
    fn check_word(&self, pa: Pa) -> Result<()> {
        if !pa.is_aligned(8) {
            return Err(Error::Misaligned { pa, align: 8 });
        }
        self.check_range(pa, 8)
    }
}

/// `(offset, length)` pieces of at most `max` bytes covering `[0, len)`: how the default
/// methods stage a range through a buffer.
fn pieces(len: u64, max: usize) -> impl Iterator<Item = (u64, usize)> {
    (0..len)
        .step_by(max)
        .map(move |at| (at, (len - at).min(max as u64) as usize))
}
