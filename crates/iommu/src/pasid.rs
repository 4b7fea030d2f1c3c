use crate::{Error, Result};
use sva_addr::Pasid;
use sva_sync::{Mutex, MutexGuard, lock};

const WORDS: usize = 1 << (Pasid::BITS - 6);

/// The system-wide PASID allocator: one PASID per address space, shared by every device
/// the address space is bound to.
///
/// Each allocation names the range the caller's IOMMU and device accept: the minimum comes
/// from the IOMMU (SMMUv3 reserves SSID 0 for DMA without PASID, so 1), the maximum from
/// the narrowest device and IOMMU width. The lowest free PASID in range is returned, so
/// runs are deterministic and narrow devices are served first-fit.
#[derive(Debug)]
pub struct PasidAllocator {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// One bit per PASID of the 20-bit space (128 KiB).
    bits: Box<[u64]>,
    used: u32,
}

impl Default for PasidAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl PasidAllocator {
    /// An allocator with every PASID free.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State {
                bits: vec![0; WORDS].into_boxed_slice(),
                used: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The lowest free PASID in `[min, max]`.
    pub fn alloc(&self, min: Pasid, max: Pasid) -> Result<Pasid> {
        if min > max || max > Pasid::MAX {
            return Err(Error::BadPasidRange { min, max });
        }
        let mut st = self.lock();
        let (lo, hi) = (min.raw() as usize, max.raw() as usize);
        let mut word = lo / 64;
        while word <= hi / 64 {
            // Bits of this word inside [lo, hi] that are free.
            let mut free = !st.bits[word];
            if word == lo / 64 {
                free &= !0u64 << (lo % 64);
            }
            if word == hi / 64 && hi % 64 != 63 {
                free &= (1u64 << (hi % 64 + 1)) - 1;
            }
            if free != 0 {
                let bit = free.trailing_zeros() as usize;
                st.bits[word] |= 1 << bit;
                st.used += 1;
                return Ok(Pasid((word * 64 + bit) as u32));
            }
            word += 1;
        }
        Err(Error::PasidsExhausted { min, max })
    }

    /// Returns `pasid` to the pool.
    pub fn free(&self, pasid: Pasid) -> Result<()> {
        if pasid > Pasid::MAX {
            return Err(Error::PasidNotAllocated(pasid));
        }
        let mut st = self.lock();
        let (w, b) = (pasid.raw() as usize / 64, pasid.raw() % 64);
        if st.bits[w] & (1 << b) == 0 {
            return Err(Error::PasidNotAllocated(pasid));
        }
        st.bits[w] &= !(1 << b);
        st.used -= 1;
        Ok(())
    }

    /// Whether `pasid` is allocated.
    pub fn is_allocated(&self, pasid: Pasid) -> bool {
        pasid <= Pasid::MAX && {
            let st = self.lock();
            st.bits[pasid.raw() as usize / 64] & (1 << (pasid.raw() % 64)) != 0
        }
    }

    /// Number of PASIDs allocated.
    pub fn allocated(&self) -> u32 {
        self.lock().used
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn lowest_free_within_bounds() {
        let a = PasidAllocator::new();
        assert_eq!(a.alloc(Pasid(1), Pasid::MAX).unwrap(), Pasid(1));
        assert_eq!(a.alloc(Pasid(1), Pasid::MAX).unwrap(), Pasid(2));
        assert_eq!(a.alloc(Pasid(100), Pasid(200)).unwrap(), Pasid(100));
        a.free(Pasid(1)).unwrap();
        assert_eq!(a.alloc(Pasid(1), Pasid(3)).unwrap(), Pasid(1));
        assert_eq!(a.alloc(Pasid(1), Pasid(3)).unwrap(), Pasid(3));
        assert!(matches!(
            a.alloc(Pasid(1), Pasid(3)),
            Err(Error::PasidsExhausted {
                min: Pasid(1),
                max: Pasid(3)
            })
        ));
        assert_eq!(a.allocated(), 4);
    }

    #[test]
    fn whole_space_and_edges() {
        let a = PasidAllocator::new();
        assert_eq!(a.alloc(Pasid::MAX, Pasid::MAX).unwrap(), Pasid::MAX);
        assert!(a.alloc(Pasid::MAX, Pasid::MAX).is_err());
        assert_eq!(a.alloc(Pasid(63), Pasid(64)).unwrap(), Pasid(63));
        assert_eq!(a.alloc(Pasid(63), Pasid(64)).unwrap(), Pasid(64));
        assert!(matches!(
            a.alloc(Pasid(5), Pasid(4)),
            Err(Error::BadPasidRange { .. })
        ));
        assert!(matches!(
            a.alloc(Pasid(1), Pasid(1 << 20)),
            Err(Error::BadPasidRange { .. })
        ));
        assert!(matches!(
            a.free(Pasid(7)),
            Err(Error::PasidNotAllocated(Pasid(7)))
        ));
        assert!(matches!(
            a.free(Pasid(0x20_0000)),
            Err(Error::PasidNotAllocated(Pasid(0x20_0000)))
        ));
        // A narrow device (4 PASID bits) is locked out once its range is full.
        for _ in 1..16 {
            a.alloc(Pasid(1), Pasid(15)).unwrap();
        }
        assert!(a.alloc(Pasid(1), Pasid(15)).is_err());
        assert_eq!(a.alloc(Pasid(1), Pasid(255)).unwrap(), Pasid(16));
    }

    proptest! {
        #[test]
        fn agrees_with_a_set(ops in proptest::collection::vec((any::<bool>(), 0u32..300, 0u32..300), 1..200)) {
            let a = PasidAllocator::new();
            let mut model = BTreeSet::new();
            for (alloc, x, y) in ops {
                let (min, max) = (x.min(y), x.max(y));
                if alloc {
                    let want = (min..=max).find(|p| !model.contains(p));
                    match a.alloc(Pasid(min), Pasid(max)) {
                        Ok(p) => { prop_assert_eq!(Some(p.raw()), want); model.insert(p.raw()); }
                        Err(_) => prop_assert_eq!(want, None),
                    }
                } else {
                    let r = a.free(Pasid(x));
                    prop_assert_eq!(r.is_ok(), model.remove(&x));
                }
                prop_assert_eq!(a.allocated() as usize, model.len());
            }
        }
    }
}
