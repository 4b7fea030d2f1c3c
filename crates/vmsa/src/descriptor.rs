//! The 64-bit translation table descriptor (VMSAv8-64, 48-bit output addresses).

use crate::{Attributes, LEAF_LEVEL, TableConfig};
use bitfield_struct::bitfield;
use sva_addr::Pa;

/// Bits `[47:12]` of a descriptor: the output address or next-level table address field.
const OA_FIELD: u64 = ((1 << 48) - 1) & !((1 << 12) - 1);

/// A VMSAv8-64 stage-1 translation table descriptor (Arm ARM D8.3, "Translation table
/// descriptor formats"), for 4K, 16K and 64K granules with up to 48-bit output addresses.
///
/// One word has three readings:
/// - **invalid** (bit 0 = 0): every other bit is ignored by hardware;
/// - **table** (bits 1:0 = 0b11 at levels 0-2): the next-level table address in bits
///   `[47:granule shift]` and the hierarchical attributes `PXNTable`, `UXNTable`, `APTable`,
///   `NSTable` in bits `[63:59]`;
/// - **block** (bits 1:0 = 0b01 at levels 1-2) or **page** (0b11 at level 3): the output
///   address in bits `[47:level shift]` and the leaf attributes (see [`Attributes`]).
///
/// Field names are the Arm ARM's in snake case. A field that only exists in one reading is
/// named after it; in the other reading its bits mean what the Arm ARM says there (noted per
/// field). Not modelled: 52-bit addresses (FEAT_LPA/LPA2 reuse bits `[15:12]`, `[9:8]` and
/// `[49:48]`), `nT` (bit 16 of block descriptors, FEAT_BBM) and PBHA.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct Descriptor {
    /// Bit `[0]`: valid. Arm ARM D8.3: when 0 the descriptor is invalid and a lookup that
    /// reaches it generates a Translation fault.
    pub valid: bool,
    /// Bit `[1]`: descriptor type. Arm ARM D8.3: at levels 0-2, 1 = table descriptor and 0 =
    /// block descriptor; at level 3, 1 = page descriptor (0 is reserved, treated as invalid).
    pub table_or_page: bool,
    /// Bits `[4:2]`: `AttrIndx[2:0]`, leaf only. Arm ARM D8.3: index of the MAIR_ELx attribute
    /// field giving the memory type and cacheability.
    #[bits(3)]
    pub attr_indx: u8,
    /// Bit `[5]`: NS, leaf only. Arm ARM D8.3: non-secure output address (ignored in the
    /// non-secure regime this model implements).
    pub ns: bool,
    /// Bits `[7:6]`: `AP[2:1]`, leaf only. Arm ARM D8.3: data access permissions. `AP[1]` (bit 6)
    /// grants EL0 access, `AP[2]` (bit 7) makes the page read-only: 0b00 EL1 RW / EL0 none,
    /// 0b01 RW at both, 0b10 EL1 RO / EL0 none, 0b11 RO at both.
    #[bits(2)]
    pub ap: u8,
    /// Bits `[9:8]`: `SH[1:0]`, leaf only. Arm ARM D8.3: shareability, 0b00 Non-shareable, 0b10
    /// Outer Shareable, 0b11 Inner Shareable (0b01 reserved).
    #[bits(2)]
    pub sh: u8,
    /// Bit `[10]`: AF, leaf only. Arm ARM D8.3: the access flag.
    pub af: bool,
    /// Bit `[11]`: nG, leaf only. Arm ARM D8.3: not global, the translation is ASID-tagged.
    pub ng: bool,
    /// Bits `[47:12]`: output address `OA[47:12]` (leaf) or next-level table address (table).
    /// Arm ARM D8.3: only bits `[47:n]` are address bits, n being the level shift of a block
    /// (e.g. 21 for a 4K level-2 block) or the granule shift of a page or table; the bits
    /// below n are RES0. Use [`Descriptor::output_address`] to read it.
    #[bits(36)]
    pub oa: u64,
    /// Bits `[49:48]`: RES0 without FEAT_LPA2.
    #[bits(2)]
    __: u8,
    /// Bit `[50]`: GP, leaf only. Arm ARM D8.3: guarded page for BTI (FEAT_BTI).
    pub gp: bool,
    /// Bit `[51]`: DBM, leaf only. Arm ARM D8.3: dirty bit modifier (FEAT_HAFDBS): with
    /// hardware dirty-state management, `AP[2]` = 1 means "writable, clean".
    pub dbm: bool,
    /// Bit `[52]`: Contiguous, leaf only. Arm ARM D8.3: this entry is one of a naturally
    /// aligned set of adjacent entries that may share one TLB entry.
    pub contiguous: bool,
    /// Bit `[53]`: PXN, leaf only. Arm ARM D8.3: privileged execute-never.
    pub pxn: bool,
    /// Bit `[54]`: UXN (XN), leaf only. Arm ARM D8.3: unprivileged execute-never.
    pub uxn: bool,
    /// Bits `[58:55]`: reserved for software use (leaf); ignored in table descriptors.
    #[bits(4)]
    pub software: u8,
    /// Bit `[59]`: PXNTable, table only. Arm ARM D8.3: privileged execute-never for every
    /// lookup below this table. In a leaf, `PBHA[0]` (not modelled, ignored).
    pub pxn_table: bool,
    /// Bit `[60]`: UXNTable (XNTable), table only. Arm ARM D8.3: unprivileged execute-never
    /// below. In a leaf, `PBHA[1]` (ignored).
    pub uxn_table: bool,
    /// Bits `[62:61]`: `APTable[1:0]`, table only. Arm ARM D8.3: `APTable[0]` (bit 61) forbids EL0
    /// access below, `APTable[1]` (bit 62) forbids writes below. In a leaf, `PBHA[3:2]` (ignored).
    #[bits(2)]
    pub ap_table: u8,
    /// Bit `[63]`: NSTable, table only. Arm ARM D8.3: subsequent lookups are non-secure
    /// (ignored in the non-secure regime). Ignored in a leaf.
    pub ns_table: bool,
}

impl Descriptor {
    /// The invalid descriptor, all zeroes.
    pub const INVALID: Descriptor = Descriptor::new();

    /// A table descriptor (bits 1:0 = 0b11) pointing at the next-level table at `next`,
    /// with no hierarchical restrictions.
    #[must_use]
    pub const fn new_table(next: Pa) -> Self {
        Self::from_bits((next.raw() & OA_FIELD) | 0b11)
    }

    /// A leaf at `level`: a block (bits 1:0 = 0b01) at levels 0-2, a page (0b11) at level 3,
    /// mapping `pa` with `attrs`.
    #[must_use]
    pub const fn new_leaf(pa: Pa, attrs: Attributes, level: u8) -> Self {
        let ty = if level >= LEAF_LEVEL { 0b11 } else { 0b01 };
        Self::from_bits((pa.raw() & OA_FIELD) | attrs.bits() | ty)
    }

    /// Bit 0: whether the descriptor is valid.
    #[must_use]
    pub fn is_valid(self) -> bool {
        self.valid()
    }

    /// Whether this is a valid table descriptor at `level` (bit 1 set at level 0, 1 or 2).
    #[must_use]
    pub fn is_table(self, level: u8) -> bool {
        self.valid() && self.table_or_page() && level < LEAF_LEVEL
    }

    /// Whether this is a valid block descriptor at `level` (bit 1 clear at level 0, 1 or 2);
    /// whether the configuration allows a block there is [`TableConfig::block_allowed`].
    #[must_use]
    pub fn is_block(self, level: u8) -> bool {
        self.valid() && !self.table_or_page() && level < LEAF_LEVEL
    }

    /// Whether this is a valid page descriptor at `level` (bits 1:0 = 0b11 at level 3).
    #[must_use]
    pub fn is_page(self, level: u8) -> bool {
        self.valid() && self.table_or_page() && level == LEAF_LEVEL
    }

    /// Whether a walker would use this as a leaf at `level` under `cfg`: a page at level 3,
    /// or a block at a level where `cfg` allows blocks. Valid descriptors that are neither
    /// this nor a table (a level-3 descriptor with bit 1 clear, a block at a level without
    /// blocks) are faults to a walker.
    #[must_use]
    pub fn is_leaf(self, cfg: &TableConfig, level: u8) -> bool {
        self.is_page(level) || (self.is_block(level) && cfg.block_allowed(level))
    }

    /// The address the descriptor holds: for a table descriptor the next-level table address
    /// (bits `[47:granule shift]`), for a block or page the output address (bits
    /// `[47:level shift]`).
    #[must_use]
    pub fn output_address(self, cfg: &TableConfig, level: u8) -> Pa {
        let shift = if self.is_table(level) {
            cfg.granule().shift()
        } else {
            cfg.level_shift(level)
        };
        Pa(self.into_bits() & OA_FIELD & !((1u64 << shift) - 1))
    }

    /// The leaf attribute bits (meaningful for blocks and pages).
    #[must_use]
    pub fn attributes(self) -> Attributes {
        Attributes::from_bits_truncate(self.into_bits())
    }

    /// This descriptor with its leaf attribute bits replaced by `attrs`; the valid bit, the
    /// type bit, the address and the bits above 58 are kept.
    #[must_use]
    pub fn with_attributes(self, attrs: Attributes) -> Self {
        Self::from_bits((self.into_bits() & !Attributes::all().bits()) | attrs.bits())
    }

    /// This descriptor with its address field replaced by `pa` (bits `[47:12]` of it).
    #[must_use]
    pub fn with_output_address(self, pa: Pa) -> Self {
        Self::from_bits((self.into_bits() & !OA_FIELD) | (pa.raw() & OA_FIELD))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Granule;

    fn cfg(g: Granule) -> TableConfig {
        TableConfig::new(g, 48, 48).unwrap()
    }

    #[test]
    fn page_descriptor_word() {
        // 4K page at 0x4000_1000 with AF | SH_INNER | AP_EL0 | UXN:
        //   valid 0x1 + page 0x2 + AP[1] 0x40 + SH 0x300 + AF 0x400 = 0x743,
        //   OA 0x4000_1000, UXN bit 54 = 0x0040_0000_0000_0000.
        let attrs = Attributes::AF | Attributes::SH_INNER | Attributes::AP_EL0 | Attributes::UXN;
        let d = Descriptor::new_leaf(Pa(0x4000_1000), attrs, 3);
        assert_eq!(d.into_bits(), 0x0040_0000_4000_1743);
        assert!(d.is_valid() && d.is_page(3) && !d.is_table(3) && !d.is_block(3));
        assert_eq!(d.ap(), 0b01);
        assert_eq!(d.sh(), 0b11);
        assert!(d.af() && d.uxn() && !d.pxn() && !d.ng());
        assert_eq!(d.attributes(), attrs);
        assert_eq!(d.output_address(&cfg(Granule::Size4K), 3), Pa(0x4000_1000));
    }

    #[test]
    fn block_descriptor_word() {
        // 4K level-2 (2 MiB) block at 0x8020_0000, AttrIndx 1, AP_RO, SH_INNER, AF, nG,
        // PXN, UXN: valid 0x1 + AttrIndx 0x4 + AP[2] 0x80 + SH 0x300 + AF 0x400 + nG 0x800
        //   = 0xf85, PXN | UXN = 0x0060_0000_0000_0000.
        let attrs = (Attributes::AP_RO
            | Attributes::SH_INNER
            | Attributes::AF
            | Attributes::NG
            | Attributes::PXN
            | Attributes::UXN)
            .with_attr_indx(1);
        let d = Descriptor::new_leaf(Pa(0x8020_0000), attrs, 2);
        assert_eq!(d.into_bits(), 0x0060_0000_8020_0f85);
        assert!(d.is_block(2) && !d.is_table(2));
        assert!(d.is_leaf(&cfg(Granule::Size4K), 2));
        assert_eq!(d.attr_indx(), 1);
        assert_eq!(d.ap(), 0b10);
        assert_eq!(d.output_address(&cfg(Granule::Size4K), 2), Pa(0x8020_0000));
    }

    #[test]
    fn table_descriptor_word_and_hierarchical_fields() {
        let d = Descriptor::new_table(Pa(0x1234_5000));
        assert_eq!(d.into_bits(), 0x1234_5003);
        assert!(d.is_table(0) && d.is_table(2) && !d.is_table(3));
        // At level 3 the same word is a page descriptor.
        assert!(d.is_page(3));
        let d = d
            .with_pxn_table(true)
            .with_uxn_table(true)
            .with_ap_table(0b11)
            .with_ns_table(true);
        assert_eq!(d.into_bits(), 0xf800_0000_1234_5003);
        let d = Descriptor::new_table(Pa(0x1234_5000)).with_ap_table(0b01);
        assert_eq!(d.into_bits(), 0x2000_0000_1234_5003);
        let d = Descriptor::new_table(Pa(0x1234_5000)).with_uxn_table(true);
        assert_eq!(d.into_bits(), 0x1000_0000_1234_5003);
    }

    #[test]
    fn field_positions() {
        let one = |d: Descriptor| d.into_bits();
        let n = Descriptor::new;
        assert_eq!(one(n().with_valid(true)), 1);
        assert_eq!(one(n().with_table_or_page(true)), 2);
        assert_eq!(one(n().with_attr_indx(7)), 0x1c);
        assert_eq!(one(n().with_ns(true)), 1 << 5);
        assert_eq!(one(n().with_ap(0b11)), 0xc0);
        assert_eq!(one(n().with_sh(0b11)), 0x300);
        assert_eq!(one(n().with_af(true)), 1 << 10);
        assert_eq!(one(n().with_ng(true)), 1 << 11);
        assert_eq!(one(n().with_oa(1)), 1 << 12);
        assert_eq!(one(n().with_oa((1 << 36) - 1)), 0x0000_ffff_ffff_f000);
        assert_eq!(one(n().with_gp(true)), 1 << 50);
        assert_eq!(one(n().with_dbm(true)), 1 << 51);
        assert_eq!(one(n().with_contiguous(true)), 1 << 52);
        assert_eq!(one(n().with_pxn(true)), 1 << 53);
        assert_eq!(one(n().with_uxn(true)), 1 << 54);
        assert_eq!(one(n().with_software(0xf)), 0xf << 55);
        assert_eq!(one(n().with_pxn_table(true)), 1 << 59);
        assert_eq!(one(n().with_uxn_table(true)), 1 << 60);
        assert_eq!(one(n().with_ap_table(0b11)), 0b11 << 61);
        assert_eq!(one(n().with_ns_table(true)), 1 << 63);
        // Attribute flags and descriptor fields agree on positions.
        let d = Descriptor::from_bits(Attributes::all().bits());
        assert_eq!(d.attr_indx(), 7);
        assert_eq!(d.ap(), 0b11);
        assert_eq!(d.software(), 0xf);
        assert!(d.ns() && d.af() && d.ng() && d.gp() && d.dbm() && d.contiguous());
        assert!(d.pxn() && d.uxn() && !d.valid() && !d.pxn_table());
    }

    #[test]
    fn output_address_masks_by_level_and_granule() {
        // RES0 bits below the block size and bits above 47 do not leak into the address.
        let raw = 0xffff_ffff_ffff_fffd_u64; // a block (bit 1 clear) with every other bit set
        let d = Descriptor::from_bits(raw);
        let k4 = cfg(Granule::Size4K);
        assert_eq!(d.output_address(&k4, 1), Pa(0xffff_c000_0000));
        assert_eq!(d.output_address(&k4, 2), Pa(0xffff_ffe0_0000));
        let k64 = cfg(Granule::Size64K);
        assert_eq!(d.output_address(&k64, 2), Pa(0xffff_e000_0000));
        let k16 = cfg(Granule::Size16K);
        assert_eq!(d.output_address(&k16, 2), Pa(0xffff_fe00_0000));
        // Page and table addresses use the granule shift.
        let t = Descriptor::from_bits(u64::MAX);
        assert_eq!(t.output_address(&k4, 0), Pa(0xffff_ffff_f000));
        assert_eq!(t.output_address(&k16, 1), Pa(0xffff_ffff_c000));
        assert_eq!(t.output_address(&k64, 3), Pa(0xffff_ffff_0000));
    }

    #[test]
    fn invalid_and_reserved_encodings() {
        assert!(!Descriptor::INVALID.is_valid());
        let k4 = cfg(Granule::Size4K);
        // Level-3 descriptor with bit 1 clear: reserved, not a leaf.
        let d = Descriptor::new_leaf(Pa(0x1000), Attributes::AF, 2);
        assert!(!d.is_leaf(&k4, 3));
        // Level-0 block: not allowed for a 4K granule without 52-bit addresses.
        assert!(d.is_block(0) && !d.is_leaf(&k4, 0));
        // Level-1 block: fine for 4K, not for 64K.
        assert!(d.is_leaf(&k4, 1));
        assert!(!d.is_leaf(&cfg(Granule::Size64K), 1));
    }

    #[test]
    fn attribute_and_address_replacement() {
        let d = Descriptor::new_leaf(Pa(0x20_0000), Attributes::AF, 2).with_pxn_table(true);
        let e = d.with_attributes(Attributes::AP_RO);
        assert_eq!(e.into_bits(), 0x0800_0000_0020_0081);
        let f = e.with_output_address(Pa(0x40_0000));
        assert_eq!(f.into_bits(), 0x0800_0000_0040_0081);
    }
}
