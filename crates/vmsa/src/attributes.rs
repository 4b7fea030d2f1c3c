//! Leaf (block and page) descriptor attributes as a flag set at their architectural bit
//! positions, so `desc | attrs.bits()` is the descriptor.

use bitflags::bitflags;

bitflags! {
    /// Attribute bits of a block or page descriptor (Arm ARM D8.3, "Block descriptor and Page
    /// descriptor formats"), each at its bit position in the descriptor word.
    ///
    /// The valid bit and the descriptor-type bit are not attributes: the table code adds them.
    /// Multi-bit fields appear as their component bits: `AttrIndx[2:0]` as `ATTR_INDX_0..2`
    /// (use [`Attributes::attr_indx`] / [`Attributes::with_attr_indx`]), `SH[1:0]` as the two
    /// meaningful encodings `SH_OUTER` (0b10) and `SH_INNER` (0b11; note that it contains
    /// `SH_OUTER`'s bit), `AP[2:1]` as `AP_RO` and `AP_EL0`.
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, PartialOrd, Ord)]
    pub struct Attributes: u64 {
        /// `AttrIndx[0]`, bit 2: index into MAIR_ELx (with bits 3 and 4).
        const ATTR_INDX_0 = 1 << 2;
        /// `AttrIndx[1]`, bit 3.
        const ATTR_INDX_1 = 1 << 3;
        /// `AttrIndx[2]`, bit 4.
        const ATTR_INDX_2 = 1 << 4;
        /// NS, bit 5: non-secure output address (ignored by this non-secure model).
        const NS = 1 << 5;
        /// `AP[1]`, bit 6: EL0 (unprivileged) accesses are permitted.
        const AP_EL0 = 1 << 6;
        /// `AP[2]`, bit 7: read-only at every exception level. With DBM set, "writable but
        /// clean" (hardware dirty-state management clears it on the first write).
        const AP_RO = 1 << 7;
        /// `SH[1:0]` = 0b10, bits 9:8: Outer Shareable.
        const SH_OUTER = 0b10 << 8;
        /// `SH[1:0]` = 0b11, bits 9:8: Inner Shareable.
        const SH_INNER = 0b11 << 8;
        /// AF, bit 10: the access flag; an access with AF = 0 is an Access flag fault unless
        /// hardware management of the flag (HA) is on.
        const AF = 1 << 10;
        /// nG, bit 11: not global, TLB entries are tagged with the ASID.
        const NG = 1 << 11;
        /// GP, bit 50: guarded page (FEAT_BTI).
        const GP = 1 << 50;
        /// DBM, bit 51: dirty bit modifier (FEAT_HAFDBS): `AP[2]` is the dirty state.
        const DBM = 1 << 51;
        /// Contiguous, bit 52: hint that this entry is one of a naturally aligned run of
        /// entries with consecutive output addresses and the same attributes.
        const CONTIGUOUS = 1 << 52;
        /// PXN, bit 53: privileged execute-never.
        const PXN = 1 << 53;
        /// UXN, bit 54: unprivileged execute-never.
        const UXN = 1 << 54;
        /// Bit 55, reserved for software use.
        const SW0 = 1 << 55;
        /// Bit 56, reserved for software use.
        const SW1 = 1 << 56;
        /// Bit 57, reserved for software use.
        const SW2 = 1 << 57;
        /// Bit 58, reserved for software use.
        const SW3 = 1 << 58;
    }
}

impl Attributes {
    /// The AttrIndx field, bits 4:2.
    pub const ATTR_INDX_MASK: Attributes = Attributes::ATTR_INDX_0
        .union(Attributes::ATTR_INDX_1)
        .union(Attributes::ATTR_INDX_2);

    /// The SH field, bits 9:8.
    pub const SH_MASK: Attributes = Attributes::SH_INNER;

    /// The permission bits: `AP[2:1]`, PXN, UXN.
    pub const PERMISSIONS: Attributes = Attributes::AP_EL0
        .union(Attributes::AP_RO)
        .union(Attributes::PXN)
        .union(Attributes::UXN);

    /// Bits that may change on a live descriptor without break-before-make: permissions, the
    /// access flag, DBM and the software bits. Changing anything else (memory attributes,
    /// shareability, nG, NS, GP, the contiguous hint) takes the break-before-make sequence.
    pub const BBM_SAFE: Attributes = Attributes::PERMISSIONS
        .union(Attributes::AF)
        .union(Attributes::DBM)
        .union(Attributes::SW0)
        .union(Attributes::SW1)
        .union(Attributes::SW2)
        .union(Attributes::SW3);

    /// The AttrIndx field (0..=7): which MAIR_ELx attribute byte applies.
    #[must_use]
    pub fn attr_indx(self) -> u8 {
        ((self.bits() >> 2) & 0b111) as u8
    }

    /// These attributes with AttrIndx set to `idx` (only its low 3 bits are used).
    #[must_use]
    pub fn with_attr_indx(self, idx: u8) -> Self {
        let field = Self::from_bits_retain((u64::from(idx) & 0b111) << 2);
        self.difference(Self::ATTR_INDX_MASK).union(field)
    }

    /// Whether going from `old` to `new` on a live descriptor needs break-before-make.
    #[must_use]
    pub fn needs_bbm(old: Attributes, new: Attributes) -> bool {
        !(old.symmetric_difference(new))
            .difference(Self::BBM_SAFE)
            .is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_positions_are_architectural() {
        assert_eq!(Attributes::ATTR_INDX_MASK.bits(), 0x1c);
        assert_eq!(Attributes::AP_EL0.bits(), 0x40);
        assert_eq!(Attributes::AP_RO.bits(), 0x80);
        assert_eq!(Attributes::SH_INNER.bits(), 0x300);
        assert_eq!(Attributes::SH_OUTER.bits(), 0x200);
        assert_eq!(Attributes::AF.bits(), 0x400);
        assert_eq!(Attributes::NG.bits(), 0x800);
        assert_eq!(Attributes::UXN.bits(), 0x0040_0000_0000_0000);
        assert_eq!(Attributes::PXN.bits(), 0x0020_0000_0000_0000);
        assert_eq!(Attributes::all().bits(), 0x07fc_0000_0000_0ffc);
    }

    #[test]
    fn attr_indx_round_trips() {
        let base = Attributes::AF | Attributes::UXN;
        for idx in 0..8 {
            let a = base.with_attr_indx(idx);
            assert_eq!(a.attr_indx(), idx);
            assert_eq!(a - Attributes::ATTR_INDX_MASK, base);
        }
        // Only three bits are used.
        assert_eq!(base.with_attr_indx(0b1010).attr_indx(), 0b010);
        assert_eq!(
            Attributes::ATTR_INDX_MASK.with_attr_indx(1),
            Attributes::ATTR_INDX_0
        );
    }

    #[test]
    fn bbm_rules() {
        let a = Attributes::AF | Attributes::SH_INNER | Attributes::AP_EL0;
        assert!(!Attributes::needs_bbm(
            a,
            a | Attributes::AP_RO | Attributes::UXN
        ));
        assert!(!Attributes::needs_bbm(
            a,
            (a - Attributes::AF) | Attributes::SW2
        ));
        assert!(Attributes::needs_bbm(a, a.with_attr_indx(1)));
        assert!(Attributes::needs_bbm(a, a - Attributes::SH_INNER));
        assert!(Attributes::needs_bbm(a, a | Attributes::NG));
        assert!(Attributes::needs_bbm(a, a | Attributes::CONTIGUOUS));
    }
}
