//! Context descriptors: the level-1 CD table descriptor (§5.3 L1CD) and the Context
//! Descriptor (§5.4 CD).
//!
//! A CD is the SMMU's view of a process address space: the equivalent of TCR_EL1, TTBR0/1_EL1,
//! MAIR_EL1 and the ASID, plus the fault behaviour (A, R, S) of the context. Under SVA the
//! driver writes one CD per PASID with TTB0 = the process's table root and the process's ASID.
//! A CD is 64 bytes: eight little-endian 64-bit words.

use bitfield_struct::bitfield;
use sva_addr::{Asid, Pa};

use crate::encoding::{
    AddressSize, Cacheability, ReservedBits, Shareability, Tg0, Tg1, bits, first_reserved,
    truncate, word_accessors,
};

/// §5.3 L1CD, Level 1 Context Descriptor: a pointer to a level-2 table of CDs.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct L1Cd {
    /// [0] V: the level-2 table pointer is valid (otherwise C_BAD_SUBSTREAMID).
    pub v: bool,
    /// [11:1] Reserved, RES0.
    #[bits(11)]
    __: u16,
    /// [51:12] L2Ptr: bits `[51:12]` of the level-2 CD table address (4 KiB or 64 KiB aligned
    /// per STE.S1Fmt).
    #[bits(40)]
    pub l2ptr: u64,
    /// [63:52] Reserved, RES0.
    #[bits(12)]
    __: u16,
}

impl L1Cd {
    /// The level-2 table address.
    #[must_use]
    pub const fn l2ptr_pa(self) -> Pa {
        Pa(self.l2ptr() << 12)
    }

    /// Sets the level-2 table address; bits `[11:0]` and above bit 51 are dropped.
    #[must_use]
    pub const fn with_l2ptr_pa(self, pa: Pa) -> Self {
        self.with_l2ptr(truncate(pa.0 >> 12, 40))
    }
}

/// §5.4 CD word 0 (bits `[63:0]`): translation controls (like TCR_ELx), validity, fault
/// behaviour and ASID.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct CdWord0 {
    /// [5:0] T0SZ: the TTB0 region covers `2^(64 - T0SZ)` bytes.
    #[bits(6)]
    pub t0sz: u8,
    /// [7:6] TG0: TTB0 granule.
    #[bits(2)]
    pub tg0: Tg0,
    /// [9:8] IR0: inner cacheability of TTB0 walks.
    #[bits(2)]
    pub ir0: Cacheability,
    /// [11:10] OR0: outer cacheability of TTB0 walks.
    #[bits(2)]
    pub or0: Cacheability,
    /// [13:12] SH0: shareability of TTB0 walks.
    #[bits(2)]
    pub sh0: Shareability,
    /// [14] EPD0: TTB0 walks disabled (a TLB miss is a translation fault).
    pub epd0: bool,
    /// [15] ENDI: translation tables are big-endian.
    pub endi: bool,
    /// [21:16] T1SZ: the TTB1 region covers `2^(64 - T1SZ)` bytes.
    #[bits(6)]
    pub t1sz: u8,
    /// [23:22] TG1: TTB1 granule (TG1 encoding).
    #[bits(2)]
    pub tg1: Tg1,
    /// [25:24] IR1: inner cacheability of TTB1 walks.
    #[bits(2)]
    pub ir1: Cacheability,
    /// [27:26] OR1: outer cacheability of TTB1 walks.
    #[bits(2)]
    pub or1: Cacheability,
    /// [29:28] SH1: shareability of TTB1 walks.
    #[bits(2)]
    pub sh1: Shareability,
    /// [30] EPD1: TTB1 walks disabled.
    pub epd1: bool,
    /// [31] V: the CD is valid (otherwise C_BAD_CD).
    pub v: bool,
    /// [34:32] IPS: stage 1 output address size (capped at SMMU_IDR5.OAS).
    #[bits(3)]
    pub ips: AddressSize,
    /// [35] AFFD: Access flag faults disabled (AF treated as 1).
    pub affd: bool,
    /// [36] WXN: writable pages are execute-never.
    pub wxn: bool,
    /// [37] UWXN: user-writable pages are privileged-execute-never (VMSAv8-32 only).
    pub uwxn: bool,
    /// [39:38] TBI: top byte ignore, bit 0 for TTB0 and bit 1 for TTB1.
    #[bits(2)]
    pub tbi: u8,
    /// [40] PAN: privileged access never.
    pub pan: bool,
    /// [41] AA64: VMSAv8-64 tables (0: VMSAv8-32 LPAE).
    pub aa64: bool,
    /// [42] HD: hardware update of dirty state.
    pub hd: bool,
    /// [43] HA: hardware update of Access flags.
    pub ha: bool,
    /// [44] S: faults stall (stall model).
    pub s: bool,
    /// [45] R: faults are recorded in the Event queue.
    pub r: bool,
    /// [46] A: terminated transactions abort (0: complete with RAZ/WI).
    pub a: bool,
    /// [47] ASET: the ASID is not shared with the PE (no broadcast TLB invalidation).
    pub aset: bool,
    /// [63:48] ASID: address space identifier tagging TLB entries.
    #[bits(16, from = Asid, into = Asid::raw)]
    pub asid: Asid,
}

/// §5.4 CD word 1 (bits `[127:64]`): TTB0.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct CdWord1 {
    /// [0] NSCFG0: NS attribute of the TTB0 walk (Secure streams only).
    pub nscfg0: bool,
    /// [1] HAD0: hierarchical attributes disabled for TTB0 walks.
    pub had0: bool,
    /// [2] E0PD0: unprivileged accesses through TTB0 fault (SMMU_IDR3.E0PD).
    pub e0pd0: bool,
    /// [3] Reserved in this model (HAFT in later revisions).
    #[bits(1)]
    __: u8,
    /// [51:4] TTB0: bits `[51:4]` of the TTB0 translation table base.
    #[bits(48)]
    pub ttb0: u64,
    /// [59:52] Reserved (`[57:52]` RES0; PnCH and EPAN in later revisions).
    #[bits(8)]
    __: u8,
    /// [60] HWU059: TTB0 leaf descriptor bit 59 has hardware use (IDR3.PBHA, HAD0 == 1).
    pub hwu059: bool,
    /// [61] HWU060: TTB0 leaf descriptor bit 60 has hardware use.
    pub hwu060: bool,
    /// [62] HWU061: TTB0 leaf descriptor bit 61 has hardware use.
    pub hwu061: bool,
    /// [63] HWU062: TTB0 leaf descriptor bit 62 has hardware use.
    pub hwu062: bool,
}

impl CdWord1 {
    /// The TTB0 table base address.
    #[must_use]
    pub const fn ttb0_pa(self) -> Pa {
        Pa(self.ttb0() << 4)
    }

    /// Sets the TTB0 table base; bits `[3:0]` and above bit 51 are dropped.
    #[must_use]
    pub const fn with_ttb0_pa(self, pa: Pa) -> Self {
        self.with_ttb0(truncate(pa.0 >> 4, 48))
    }
}

/// §5.4 CD word 2 (bits `[191:128]`): TTB1.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct CdWord2 {
    /// [0] NSCFG1: NS attribute of the TTB1 walk (Secure streams only).
    pub nscfg1: bool,
    /// [1] HAD1: hierarchical attributes disabled for TTB1 walks.
    pub had1: bool,
    /// [2] E0PD1: unprivileged accesses through TTB1 fault.
    pub e0pd1: bool,
    /// [3] Reserved in this model (AIE in later revisions).
    #[bits(1)]
    __: u8,
    /// [51:4] TTB1: bits `[51:4]` of the TTB1 translation table base.
    #[bits(48)]
    pub ttb1: u64,
    /// [57:52] Reserved, RES0.
    #[bits(6)]
    __: u8,
    /// [58] DS: 52-bit addresses with 4 KiB and 16 KiB granules (SMMU_IDR5.DS).
    pub ds: bool,
    /// [59] Reserved in this model (PIE in later revisions).
    #[bits(1)]
    __: u8,
    /// [60] HWU159: TTB1 leaf descriptor bit 59 has hardware use.
    pub hwu159: bool,
    /// [61] HWU160: TTB1 leaf descriptor bit 60 has hardware use.
    pub hwu160: bool,
    /// [62] HWU161: TTB1 leaf descriptor bit 61 has hardware use.
    pub hwu161: bool,
    /// [63] HWU162: TTB1 leaf descriptor bit 62 has hardware use.
    pub hwu162: bool,
}

impl CdWord2 {
    /// The TTB1 table base address.
    #[must_use]
    pub const fn ttb1_pa(self) -> Pa {
        Pa(self.ttb1() << 4)
    }

    /// Sets the TTB1 table base; bits `[3:0]` and above bit 51 are dropped.
    #[must_use]
    pub const fn with_ttb1_pa(self, pa: Pa) -> Self {
        self.with_ttb1(truncate(pa.0 >> 4, 48))
    }
}

/// §5.4 CD word 3 (bits `[255:192]`): MAIR, as MAIR_EL1 (`{MAIR1, MAIR0}`).
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct CdWord3 {
    /// [31:0] MAIR0: attributes 0 to 3.
    pub mair0: u32,
    /// [63:32] MAIR1: attributes 4 to 7.
    pub mair1: u32,
}

impl CdWord3 {
    /// The 64-bit MAIR value (attribute `n` in bits `[8n+7:8n]`).
    #[must_use]
    pub const fn mair(self) -> u64 {
        self.into_bits()
    }

    /// The word holding a 64-bit MAIR value.
    #[must_use]
    pub const fn from_mair(mair: u64) -> Self {
        Self::from_bits(mair)
    }
}

/// §5.4 CD word 4 (bits `[319:256]`): AMAIR (IMPLEMENTATION DEFINED; zero for generic software).
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct CdWord4 {
    /// [31:0] AMAIR0.
    pub amair0: u32,
    /// [63:32] AMAIR1.
    pub amair1: u32,
}

/// §5.4 CD word 5 (bits `[383:320]`): IMPLEMENTATION DEFINED hints and MPAM identifiers.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct CdWord5 {
    /// [31:0] IMPLEMENTATION DEFINED.
    pub impdef: u32,
    /// [47:32] PARTID: MPAM partition ID (used when STE.S1MPAM == 1).
    pub partid: u16,
    /// [55:48] PMG: MPAM performance monitor group.
    pub pmg: u8,
    /// [63:56] Reserved, RES0.
    #[bits(8)]
    __: u8,
}

/// §5.4 CD, Context Descriptor: eight 64-bit words, word 0 at the lowest address. Words 6 and 7
/// are RES0 unless stage 1 permission indirection is in use (later revisions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Cd(pub [u64; 8]);

impl Cd {
    /// Size of a CD in bytes.
    pub const BYTES: u64 = 64;

    /// Bits marked Reserved in every configuration (§5.4). A consumer can raise C_BAD_CD when
    /// [`Cd::reserved_bits_set`] finds one.
    pub const RES0: [u64; 8] = [
        0,
        bits(57, 52),
        bits(57, 52),
        0,
        0,
        bits(63, 56),
        bits(63, 48),
        bits(63, 48),
    ];

    /// An all-zero CD (V == 0).
    #[must_use]
    pub const fn new() -> Self {
        Self([0; 8])
    }

    /// The CD from its eight words.
    #[must_use]
    pub const fn from_words(words: [u64; 8]) -> Self {
        Self(words)
    }

    /// The eight words, word 0 first.
    #[must_use]
    pub const fn words(&self) -> [u64; 8] {
        self.0
    }

    word_accessors! {
        /// Word 0: translation controls, V, A/R/S and ASID.
        0: word0, with_word0 -> CdWord0;
        /// Word 1: TTB0.
        1: word1, with_word1 -> CdWord1;
        /// Word 2: TTB1.
        2: word2, with_word2 -> CdWord2;
        /// Word 3: MAIR.
        3: word3, with_word3 -> CdWord3;
        /// Word 4: AMAIR.
        4: word4, with_word4 -> CdWord4;
        /// Word 5: IMPLEMENTATION DEFINED, PARTID and PMG.
        5: word5, with_word5 -> CdWord5;
    }

    /// Whether V is set.
    #[must_use]
    pub const fn is_valid(&self) -> bool {
        self.word0().v()
    }

    /// The context's ASID.
    #[must_use]
    pub const fn asid(&self) -> Asid {
        self.word0().asid()
    }

    /// The first word with a bit set in [`Cd::RES0`], if any.
    #[must_use]
    pub fn reserved_bits_set(&self) -> Option<ReservedBits> {
        first_reserved(&self.0, &Self::RES0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn l1cd_layout() {
        let l1 = L1Cd::new().with_v(true).with_l2ptr_pa(Pa(0x8_1234_5000));
        assert_eq!(l1.into_bits(), 0x8_1234_5001);
        assert_eq!(l1.l2ptr_pa(), Pa(0x8_1234_5000));
        assert_eq!(L1Cd::new().with_l2ptr_pa(Pa(0x1FFF)).into_bits(), 0x1000);
    }

    #[test]
    fn sva_cd_word0() {
        // A CD sharing a Linux process address space: T0SZ=16 (48-bit VA), 4K granule,
        // WBWA inner-shareable walks, EPD1, valid, 48-bit IPS, TBI0, AA64, HA/HD, R, A,
        // ASID 0x42 (the layout Linux builds for SVA).
        let w0 = CdWord0::new()
            .with_t0sz(16)
            .with_tg0(Tg0::Size4K)
            .with_ir0(Cacheability::WriteBackAllocate)
            .with_or0(Cacheability::WriteBackAllocate)
            .with_sh0(Shareability::InnerShareable)
            .with_epd1(true)
            .with_v(true)
            .with_ips(AddressSize::Bits48)
            .with_tbi(0b01)
            .with_aa64(true)
            .with_hd(true)
            .with_ha(true)
            .with_r(true)
            .with_a(true)
            .with_asid(Asid(0x42));
        assert_eq!(w0.into_bits(), 0x0042_6E45_C000_3510);
        let back = CdWord0::from_bits(0x0042_6E45_C000_3510);
        assert_eq!(back.asid(), Asid(0x42));
        assert_eq!(back.ips(), AddressSize::Bits48);
        assert!(back.epd1() && !back.epd0() && back.v());
    }

    #[test]
    fn word0_remaining_bits() {
        assert_eq!(
            CdWord0::new().with_epd0(true).with_endi(true).into_bits(),
            0b11 << 14
        );
        assert_eq!(
            CdWord0::new()
                .with_t1sz(25)
                .with_tg1(Tg1::Size4K)
                .into_bits(),
            (25 << 16) | (2 << 22)
        );
        assert_eq!(CdWord0::new().with_tg1(Tg1::Size64K).tg1(), Tg1::Size64K);
        assert_eq!(
            CdWord0::new()
                .with_sh1(Shareability::OuterShareable)
                .into_bits(),
            2 << 28
        );
        assert_eq!(
            CdWord0::new()
                .with_affd(true)
                .with_wxn(true)
                .with_uwxn(true)
                .into_bits(),
            0b111 << 35
        );
        assert_eq!(CdWord0::new().with_pan(true).into_bits(), 1 << 40);
        assert_eq!(
            CdWord0::new().with_s(true).with_aset(true).into_bits(),
            (1 << 44) | (1 << 47)
        );
        assert_eq!(CdWord0::from_bits(3 << 6).tg0(), Tg0::Reserved(3));
    }

    #[test]
    fn ttb_words() {
        let w1 = CdWord1::new()
            .with_ttb0_pa(Pa(0x0000_0040_8765_4000))
            .with_had0(true);
        assert_eq!(w1.into_bits(), 0x0000_0040_8765_4002);
        assert_eq!(w1.ttb0_pa(), Pa(0x0000_0040_8765_4000));
        assert_eq!(
            CdWord1::new()
                .with_hwu059(true)
                .with_hwu062(true)
                .into_bits(),
            (1 << 60) | (1 << 63)
        );
        let w2 = CdWord2::new()
            .with_ttb1_pa(Pa(0xF_FFFF_FFFF_FFF0))
            .with_nscfg1(true)
            .with_ds(true);
        assert_eq!(w2.into_bits(), (1 << 58) | 0xF_FFFF_FFFF_FFF1);
    }

    #[test]
    fn mair_amair_mpam_words() {
        let mair = 0x0000_00FF_4404_FF04;
        assert_eq!(CdWord3::from_mair(mair).mair0(), 0x4404_FF04);
        assert_eq!(CdWord3::from_mair(mair).mair1(), 0x0000_00FF);
        assert_eq!(CdWord3::from_mair(mair).mair(), mair);
        assert_eq!(CdWord4::new().with_amair1(1).into_bits(), 1 << 32);
        assert_eq!(
            CdWord5::new().with_partid(0x1F).with_pmg(3).into_bits(),
            (3 << 48) | (0x1F << 32)
        );
    }

    #[test]
    fn cd_words_and_reserved_bits() {
        let cd = Cd::new()
            .with_word0(CdWord0::new().with_v(true).with_asid(Asid(7)))
            .with_word1(CdWord1::new().with_ttb0_pa(Pa(0x1000)))
            .with_word3(CdWord3::from_mair(0xFF));
        assert!(cd.is_valid());
        assert_eq!(cd.asid(), Asid(7));
        assert_eq!(cd.word1().ttb0_pa(), Pa(0x1000));
        assert_eq!(cd.reserved_bits_set(), None);
        let mut words = cd.words();
        words[1] |= 1 << 53;
        assert_eq!(
            Cd::from_words(words).reserved_bits_set(),
            Some(ReservedBits {
                word: 1,
                bits: 1 << 53
            })
        );
        words[1] &= !(1 << 53);
        words[7] = 1 << 50;
        assert_eq!(
            Cd(words).reserved_bits_set(),
            Some(ReservedBits {
                word: 7,
                bits: 1 << 50
            })
        );
    }

    proptest! {
        #[test]
        fn any_words_decode_without_panic(words: [u64; 8]) {
            let cd = Cd::from_words(words);
            let dump = format!(
                "{:?} {:?} {:?} {:?} {:?} {:?}",
                cd.word0(), cd.word1(), cd.word2(), cd.word3(), cd.word4(), cd.word5()
            );
            prop_assert!(!dump.is_empty());
            let clean = words.iter().zip(Cd::RES0).all(|(w, m)| w & m == 0);
            prop_assert_eq!(cd.reserved_bits_set().is_none(), clean);
            let rebuilt = Cd::from_words(words)
                .with_word0(cd.word0())
                .with_word1(cd.word1())
                .with_word2(cd.word2())
                .with_word3(cd.word3())
                .with_word4(cd.word4())
                .with_word5(cd.word5());
            prop_assert_eq!(rebuilt, cd);
        }
    }
}
