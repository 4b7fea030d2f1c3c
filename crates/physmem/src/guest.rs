use crate::{Error, PhysMemory, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use sva_addr::Pa;
use vm_memory::guest_memory::GuestMemorySliceIterator;
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions, VolatileMemory};

/// [`PhysMemory`] over a rust-vmm [`GuestMemory`]: lets the SMMU model, the tables and the
/// devices work on a VMM's guest RAM, guest physical address = our physical address.
///
/// The guest memory is expected to be one range starting at guest address 0 of `size` bytes;
/// accesses outside it are [`Error::OutOfRange`].
#[derive(Debug)]
pub struct GuestRam<M> {
    mem: M,
    size: u64,
}

impl<M: GuestMemory + Send + Sync> GuestRam<M> {
    /// Wraps `mem`, whose RAM covers guest addresses `[0, size)`.
    pub fn new(mem: M, size: u64) -> Self {
        Self { mem, size }
    }

    /// The wrapped guest memory.
    pub fn inner(&self) -> &M {
        &self.mem
    }

    fn guest_err(pa: Pa, e: impl core::fmt::Display) -> Error {
        Error::Guest {
            pa,
            reason: e.to_string(),
        }
    }

    /// Runs `f` on the real `AtomicU64` behind the guest word at `pa`.
    fn with_atomic<T>(&self, pa: Pa, f: impl FnOnce(&AtomicU64) -> T) -> Result<T> {
        self.check_word(pa)?;
        let slice = self
            .mem
            .get_slices(GuestAddress(pa.raw()), 8, Permissions::ReadWrite)
            .and_then(GuestMemorySliceIterator::stop_on_error)
            .map_err(|e| Self::guest_err(pa, e))?
            .next()
            .ok_or_else(|| Self::guest_err(pa, "no slice for the word"))?;
        let atomic = slice
            .get_atomic_ref::<AtomicU64>(0)
            .map_err(|e| Self::guest_err(pa, e))?;
        Ok(f(atomic))
    }
}

impl<M: GuestMemory + Send + Sync> PhysMemory for GuestRam<M> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&self, pa: Pa, buf: &mut [u8]) -> Result<()> {
        self.check_range(pa, buf.len() as u64)?;
        self.mem
            .read_slice(buf, GuestAddress(pa.raw()))
            .map_err(|e| Self::guest_err(pa, e))
    }

    fn write(&self, pa: Pa, buf: &[u8]) -> Result<()> {
        self.check_range(pa, buf.len() as u64)?;
        self.mem
            .write_slice(buf, GuestAddress(pa.raw()))
            .map_err(|e| Self::guest_err(pa, e))
    }

    fn load_u64(&self, pa: Pa) -> Result<u64> {
        // Guest RAM is little-endian on every host this runs on (x86-64, AArch64).
        self.with_atomic(pa, |a| u64::from_le(a.load(Ordering::Acquire)))
    }

    fn store_u64(&self, pa: Pa, val: u64) -> Result<()> {
        self.with_atomic(pa, |a| a.store(val.to_le(), Ordering::Release))
    }

    fn compare_exchange_u64(
        &self,
        pa: Pa,
        current: u64,
        new: u64,
    ) -> Result<core::result::Result<u64, u64>> {
        self.with_atomic(pa, |a| {
            a.compare_exchange(
                current.to_le(),
                new.to_le(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .map(u64::from_le)
            .map_err(u64::from_le)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Ram;
    use std::sync::Arc;
    use vm_memory::GuestMemoryMmap;

    fn guest(size: u64) -> GuestRam<GuestMemoryMmap> {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), size as usize)]).unwrap();
        GuestRam::new(mem, size)
    }

    #[test]
    fn guest_ram_serves_the_same_api() {
        let g = guest(1 << 20);
        g.write(Pa(0x1ffd), b"across a page").unwrap();
        let mut b = [0u8; 13];
        g.read(Pa(0x1ffd), &mut b).unwrap();
        assert_eq!(&b, b"across a page");
        g.store_u64(Pa(0x3000), 0xdead_beef).unwrap();
        assert_eq!(
            g.compare_exchange_u64(Pa(0x3000), 0xdead_beef, 7).unwrap(),
            Ok(0xdead_beef)
        );
        assert_eq!(
            g.compare_exchange_u64(Pa(0x3000), 0xdead_beef, 9).unwrap(),
            Err(7)
        );
        let mut w = [0u8; 8];
        g.read(Pa(0x3000), &mut w).unwrap();
        assert_eq!(u64::from_le_bytes(w), 7);
        // The guest memory itself sees the writes: a VMM reading its RAM agrees.
        let mut v = [0u8; 4];
        g.inner().read_slice(&mut v, GuestAddress(0x1ffd)).unwrap();
        assert_eq!(&v, b"acro");
    }

    #[test]
    fn guest_ram_rejects_bad_accesses() {
        let g = guest(1 << 16);
        assert!(matches!(
            g.read(Pa(1 << 16), &mut [0; 1]),
            Err(Error::OutOfRange { .. })
        ));
        assert!(matches!(g.load_u64(Pa(3)), Err(Error::Misaligned { .. })));
    }

    #[test]
    fn allocator_runs_on_guest_ram() {
        let ram = Ram::with_memory(Arc::new(guest(1 << 20)));
        let p = ram.alloc(16 << 10).unwrap();
        assert!(p.is_aligned(16 << 10));
        ram.write(p, b"guest").unwrap();
        assert!(ram.put(p).unwrap());
        let mut b = [1u8; 5];
        ram.read(p, &mut b).unwrap();
        assert_eq!(b, [0; 5]);
        assert_eq!(ram.stats().used_frames, 0);
    }
}
