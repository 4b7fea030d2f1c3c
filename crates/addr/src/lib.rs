//! Address and identifier newtypes shared by every sva layer.
//!
//! Each type wraps the raw integer so that a physical address can never be passed where a
//! virtual one is expected, and prints in hex (`Display`) the way a register dump would.

use core::fmt;
use core::ops::{Add, Sub};

macro_rules! address {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(transparent)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw address.
            #[must_use]
            pub const fn raw(self) -> u64 {
                self.0
            }

            /// Whether the address is a multiple of `align` (a power of two).
            #[must_use]
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 & (align - 1) == 0
            }

            /// The address rounded down to a multiple of `align` (a power of two).
            #[must_use]
            pub const fn align_down(self, align: u64) -> Self {
                Self(self.0 & !(align - 1))
            }

            /// The address rounded up to a multiple of `align` (a power of two), or `None`
            /// if that overflows.
            #[must_use]
            pub const fn checked_align_up(self, align: u64) -> Option<Self> {
                match self.0.checked_add(align - 1) {
                    Some(v) => Some(Self(v & !(align - 1))),
                    None => None,
                }
            }

            /// The address `off` bytes further, or `None` on overflow.
            #[must_use]
            pub const fn checked_add(self, off: u64) -> Option<Self> {
                match self.0.checked_add(off) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }

            /// The offset of this address within an `align`-sized (power of two) unit.
            #[must_use]
            pub const fn offset_in(self, align: u64) -> u64 {
                self.0 & (align - 1)
            }
        }

        impl Add<u64> for $name {
            type Output = Self;
            fn add(self, rhs: u64) -> Self {
                Self(self.0 + rhs)
            }
        }

        impl Sub<u64> for $name {
            type Output = Self;
            fn sub(self, rhs: u64) -> Self {
                Self(self.0 - rhs)
            }
        }

        impl Sub<$name> for $name {
            type Output = u64;
            fn sub(self, rhs: Self) -> u64 {
                self.0 - rhs.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#014x}", self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }

        impl fmt::LowerHex for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::LowerHex::fmt(&self.0, f)
            }
        }
    };
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident: $raw:ty) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(transparent)]
        pub struct $name(pub $raw);

        impl $name {
            /// The raw value.
            #[must_use]
            pub const fn raw(self) -> $raw {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }
    };
}

address!(
    /// A physical address: an offset into simulated RAM (an SMMU output address).
    Pa
);
address!(
    /// A virtual address of a CPU address space (also what a device issues under SVA).
    Va
);
address!(
    /// An I/O virtual address in a DMA domain's private I/O page table.
    Iova
);

identifier!(
    /// An address-space identifier tagging TLB entries (TTBR0_EL1.ASID, CD.ASID); 16 bits.
    Asid: u16
);
identifier!(
    /// A virtual-machine identifier tagging stage-2 TLB entries (STE.S2VMID); 16 bits.
    Vmid: u16
);
identifier!(
    /// A PCIe Process Address Space ID, the SMMU's SubstreamID (SSID); 20 bits.
    Pasid: u32
);
identifier!(
    /// An SMMU StreamID: for PCIe, derived from the Requester ID (bus/device/function).
    StreamId: u32
);

impl Pasid {
    /// Width of the PASID space on PCIe (PASID TLP prefix, 20 bits).
    pub const BITS: u32 = 20;
    /// The largest PASID the bus can carry.
    pub const MAX: Pasid = Pasid((1 << Self::BITS) - 1);
}

impl Va {
    /// This address as an I/O virtual address: under SVA a device issues CPU VAs.
    #[must_use]
    pub const fn as_iova(self) -> Iova {
        Iova(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_hex() {
        assert_eq!(Pa(0x1000).to_string(), "0x000000001000");
        assert_eq!(format!("{:?}", Va(0x20)), "Va(0x20)");
        assert_eq!(Pasid(0x1f).to_string(), "0x1f");
    }

    #[test]
    fn alignment_helpers() {
        let a = Pa(0x12345);
        assert!(!a.is_aligned(0x1000));
        assert_eq!(a.align_down(0x1000), Pa(0x12000));
        assert_eq!(a.checked_align_up(0x1000), Some(Pa(0x13000)));
        assert_eq!(Pa(u64::MAX).checked_align_up(0x1000), None);
        assert_eq!(a.offset_in(0x1000), 0x345);
        assert_eq!(Va(0x3000) - Va(0x1000), 0x2000);
        assert_eq!(Va(u64::MAX).checked_add(1), None);
    }
}
