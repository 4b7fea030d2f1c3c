//! The Stream table: SMMU_STRTAB_BASE and SMMU_STRTAB_BASE_CFG (§6.3.24, §6.3.25), the level-1
//! descriptor (§5.1 Level 1 Stream Table Descriptor) and the Stream Table Entry (§5.2).
//!
//! A StreamID indexes either a linear array of STEs or, in a 2-level table, an array of
//! [`L1Std`] each pointing at a level-2 array of STEs. An STE is 64 bytes: eight little-endian
//! 64-bit words. Words 0 to 3 hold everything a Non-secure stream uses (validity, stage 1
//! context pointer, attribute overrides, stage 2 configuration); words 4 to 7 hold MPAM, VMS,
//! Secure stage 2 and permission-overlay fields, exposed here as raw words.

use bitfield_struct::bitfield;
use sva_addr::{Pa, Vmid};

use crate::encoding::{
    AddressSize, Cacheability, InstCfg, NsCfg, PrivCfg, ReservedBits, ShareCfg, Shareability, Tg0,
    bits, first_reserved, spec_enum, truncate, word_accessors,
};

spec_enum! {
    /// SMMU_STRTAB_BASE_CFG.FMT: Stream table format (reserved encodings behave as linear).
    pub enum StrtabFmt: 2 {
        /// `0b00` Linear: ADDR points to an array of STEs.
        Linear = 0,
        /// `0b01` 2-level: ADDR points to an array of L1STDs.
        TwoLevel = 1,
    }
}

/// §6.3.24 SMMU_STRTAB_BASE (64-bit): Stream table base address.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct StrtabBase {
    /// [5:0] Reserved, RES0.
    #[bits(6)]
    __: u8,
    /// [51:6] ADDR: bits `[51:6]` of the table's physical address (aligned to the table size
    /// for a linear table, to the L1 table size or 64 bytes for a 2-level table).
    #[bits(46)]
    pub addr: u64,
    /// [61:52] Reserved, RES0 (later revisions extend ADDR to bit 55).
    #[bits(10)]
    __: u16,
    /// [62] RA: read-allocate hint for table accesses.
    pub ra: bool,
    /// [63] Reserved, RES0.
    #[bits(1)]
    __: u8,
}

impl StrtabBase {
    /// The table base address.
    #[must_use]
    pub const fn addr_pa(self) -> Pa {
        Pa(self.addr() << 6)
    }

    /// Sets the table base address; bits `[5:0]` and above bit 51 are dropped.
    #[must_use]
    pub const fn with_addr_pa(self, pa: Pa) -> Self {
        self.with_addr(truncate(pa.0 >> 6, 46))
    }
}

/// §6.3.25 SMMU_STRTAB_BASE_CFG: Stream table format and size.
#[bitfield(u32)]
#[derive(PartialEq, Eq, Hash)]
pub struct StrtabBaseCfg {
    /// [5:0] LOG2SIZE: log2 of the number of StreamIDs covered (effective value capped at
    /// SMMU_IDR1.SIDSIZE).
    #[bits(6)]
    pub log2size: u8,
    /// [10:6] SPLIT: StreamID bits indexing a level-2 table (6, 8 or 10; others behave as 6).
    #[bits(5)]
    pub split: u8,
    /// [15:11] Reserved, RES0.
    #[bits(5)]
    __: u8,
    /// [17:16] FMT: linear or 2-level.
    #[bits(2)]
    pub fmt: StrtabFmt,
    /// [31:18] Reserved, RES0.
    #[bits(14)]
    __: u16,
}

/// §5.1 L1STD, Level 1 Stream Table Descriptor: one 64-bit word per group of `2^SPLIT`
/// StreamIDs.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct L1Std {
    /// [4:0] Span: the level-2 table holds `2^(Span-1)` STEs; 0 marks the descriptor invalid,
    /// values above SPLIT + 1 are reserved.
    #[bits(5)]
    pub span: u8,
    /// [5] Reserved, RES0.
    #[bits(1)]
    __: u8,
    /// [51:6] L2Ptr: bits `[51:6]` of the level-2 table's physical address (aligned to its size).
    #[bits(46)]
    pub l2ptr: u64,
    /// [63:52] Reserved, RES0.
    #[bits(12)]
    __: u16,
}

impl L1Std {
    /// The level-2 table address.
    #[must_use]
    pub const fn l2ptr_pa(self) -> Pa {
        Pa(self.l2ptr() << 6)
    }

    /// Sets the level-2 table address; bits `[5:0]` and above bit 51 are dropped.
    #[must_use]
    pub const fn with_l2ptr_pa(self, pa: Pa) -> Self {
        self.with_l2ptr(truncate(pa.0 >> 6, 46))
    }

    /// Number of STEs in the level-2 table, 0 if the descriptor is invalid.
    #[must_use]
    pub const fn l2_entries(self) -> u32 {
        match self.span() {
            0 => 0,
            span => 1 << (span - 1),
        }
    }
}

spec_enum! {
    /// STE.Config: which translation stages a stream uses. Reserved encodings (`0b001` to
    /// `0b011`) behave as abort.
    pub enum StreamConfig: 3 {
        /// `0b000` Abort all traffic silently (no event).
        Abort = 0,
        /// `0b100` Bypass both stages.
        Bypass = 4,
        /// `0b101` Stage 1 translates, stage 2 bypasses.
        S1Trans = 5,
        /// `0b110` Stage 1 bypasses, stage 2 translates.
        S2Trans = 6,
        /// `0b111` Both stages translate (nested).
        Nested = 7,
    }
}

impl StreamConfig {
    /// Whether stage 1 translates (`0b1x1`).
    #[must_use]
    pub const fn stage1(self) -> bool {
        matches!(self, Self::S1Trans | Self::Nested)
    }

    /// Whether stage 2 translates (`0b11x`).
    #[must_use]
    pub const fn stage2(self) -> bool {
        matches!(self, Self::S2Trans | Self::Nested)
    }
}

spec_enum! {
    /// STE.S1Fmt: layout of the CD table (used when STE.S1CDMax > 0). `0b11` behaves as linear.
    pub enum S1Fmt: 2 {
        /// `0b00` Linear table of CDs indexed by SubstreamID.
        Linear = 0,
        /// `0b01` 2-level: L1CDs point to 4 KiB tables of 64 CDs.
        TwoLevel4K = 1,
        /// `0b10` 2-level: L1CDs point to 64 KiB tables of 1024 CDs.
        TwoLevel64K = 2,
    }
}

impl S1Fmt {
    /// log2 of the number of CDs in a level-2 table, or `None` for a linear table.
    #[must_use]
    pub const fn l2_index_bits(self) -> Option<u32> {
        match self {
            Self::TwoLevel4K => Some(6),
            Self::TwoLevel64K => Some(10),
            Self::Linear | Self::Reserved(_) => None,
        }
    }
}

spec_enum! {
    /// STE.S1DSS: what a transaction without a SubstreamID does when substreams are enabled.
    /// `0b11` behaves as terminate.
    pub enum S1Dss: 2 {
        /// `0b00` Terminate with F_STREAM_DISABLED.
        Terminate = 0,
        /// `0b01` Bypass stage 1.
        Bypass = 1,
        /// `0b10` Use CD 0; transactions with SubstreamID 0 are then terminated.
        Ssid0 = 2,
    }
}

spec_enum! {
    /// STE.EATS: PCIe ATS.
    pub exhaustive enum Eats: 2 {
        /// `0b00` ATS Translation Requests fail (F_BAD_ATS_TREQ); Translated traffic is
        /// aborted when SMMU_CR0.ATSCHK == 1.
        Abort = 0,
        /// `0b01` Full ATS: requests are translated through all enabled stages.
        Full = 1,
        /// `0b10` Split-stage ATS: responses carry the stage 1 output; Translated traffic goes
        /// through stage 2.
        SplitStage = 2,
        /// `0b11` Full ATS with DPT checks (later revisions; reserved otherwise).
        FullDpt = 3,
    }
}

spec_enum! {
    /// STE.STRW: StreamWorld for stage-1-only streams. `0bx1` is ILLEGAL for Non-secure STEs.
    pub enum Strw: 2 {
        /// `0b00` NS-EL1 (ASID and VMID tagged).
        El1 = 0,
        /// `0b10` NS-EL2, or NS-EL2-E2H when SMMU_CR2.E2H == 1.
        El2 = 2,
    }
}

/// §5.2 STE word 0 (bits `[63:0]`): validity, configuration and stage 1 context pointer.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct SteWord0 {
    /// [0] V: the STE is valid (otherwise traffic is aborted with C_BAD_STE).
    pub v: bool,
    /// [3:1] Config: translation stages.
    #[bits(3)]
    pub config: StreamConfig,
    /// [5:4] S1Fmt: CD table format.
    #[bits(2)]
    pub s1fmt: S1Fmt,
    /// [51:6] S1ContextPtr: bits `[51:6]` of the CD (table) address, an IPA when stage 2
    /// translates.
    #[bits(46)]
    pub s1_context_ptr: u64,
    /// [58:52] Reserved, RES0 (later revisions use `[55:52]` for 56-bit addresses).
    #[bits(7)]
    __: u8,
    /// [63:59] S1CDMax: log2 of the number of CDs; 0 disables substreams.
    #[bits(5)]
    pub s1cdmax: u8,
}

impl SteWord0 {
    /// The CD or CD table address.
    #[must_use]
    pub const fn s1_context_ptr_pa(self) -> Pa {
        Pa(self.s1_context_ptr() << 6)
    }

    /// Sets the CD or CD table address; bits `[5:0]` and above bit 51 are dropped.
    #[must_use]
    pub const fn with_s1_context_ptr_pa(self, pa: Pa) -> Self {
        self.with_s1_context_ptr(truncate(pa.0 >> 6, 46))
    }
}

/// §5.2 STE word 1 (bits `[127:64]`): CD fetch attributes, ATS, StreamWorld and attribute
/// overrides.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct SteWord1 {
    /// [1:0] S1DSS: default substream behaviour.
    #[bits(2)]
    pub s1dss: S1Dss,
    /// [3:2] S1CIR: inner cacheability of CD fetches.
    #[bits(2)]
    pub s1cir: Cacheability,
    /// [5:4] S1COR: outer cacheability of CD fetches.
    #[bits(2)]
    pub s1cor: Cacheability,
    /// [7:6] S1CSH: shareability of CD fetches.
    #[bits(2)]
    pub s1csh: Shareability,
    /// [8] S2HWU59: stage 2 descriptor bit 59 has hardware use (IDR3.PBHA).
    pub s2hwu59: bool,
    /// [9] S2HWU60: stage 2 descriptor bit 60 has hardware use.
    pub s2hwu60: bool,
    /// [10] S2HWU61: stage 2 descriptor bit 61 has hardware use.
    pub s2hwu61: bool,
    /// [11] S2HWU62: stage 2 descriptor bit 62 has hardware use.
    pub s2hwu62: bool,
    /// [12] DRE: destructive reads permitted.
    pub dre: bool,
    /// [16:13] CONT: this STE is identical to its `2^CONT` neighbours (caching hint).
    #[bits(4)]
    pub cont: u8,
    /// [17] DCP: directed cache prefetch permitted.
    pub dcp: bool,
    /// [18] PPAR: PRI auto-responses carry the PASID.
    pub ppar: bool,
    /// [19] MEV: similar fault records may be merged.
    pub mev: bool,
    /// [23:20] SW_RESERVED: for software use, IGNORED by the SMMU.
    #[bits(4)]
    pub sw_reserved: u8,
    /// [24] Reserved in this model (S1PIE in later revisions).
    #[bits(1)]
    __: u8,
    /// [25] S2FWB: stage 2 forced write-back attribute control.
    pub s2fwb: bool,
    /// [26] S1MPAM: MPAM PARTID/PMG come from the CD.
    pub s1mpam: bool,
    /// [27] S1STALLD: stage 1 stalls disallowed (required for PCIe).
    pub s1stalld: bool,
    /// [29:28] EATS: ATS behaviour.
    #[bits(2)]
    pub eats: Eats,
    /// [31:30] STRW: StreamWorld.
    #[bits(2)]
    pub strw: Strw,
    /// [35:32] MemAttr: memory type override used when MTCFG == 1.
    #[bits(4)]
    pub memattr: u8,
    /// [36] MTCFG: replace the incoming memory type with MemAttr.
    pub mtcfg: bool,
    /// [40:37] ALLOCCFG: allocation hints override (`0b1RWT`).
    #[bits(4)]
    pub alloccfg: u8,
    /// [43:41] Reserved, RES0.
    #[bits(3)]
    __: u8,
    /// [45:44] SHCFG: shareability override.
    #[bits(2)]
    pub shcfg: ShareCfg,
    /// [47:46] NSCFG: NS attribute override (Secure streams only).
    #[bits(2)]
    pub nscfg: NsCfg,
    /// [49:48] PRIVCFG: privilege override.
    #[bits(2)]
    pub privcfg: PrivCfg,
    /// [51:50] INSTCFG: instruction/data override.
    #[bits(2)]
    pub instcfg: InstCfg,
    /// [63:52] IMPLEMENTATION DEFINED.
    #[bits(12)]
    pub impdef: u16,
}

/// §5.2 STE word 2 (bits `[191:128]`): VMID and stage 2 translation controls (like VTCR_EL2).
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct SteWord2 {
    /// [15:0] S2VMID: VMID tagging TLB entries of this stream.
    #[bits(16, from = Vmid, into = Vmid::raw)]
    pub s2vmid: Vmid,
    /// [31:16] IMPLEMENTATION DEFINED.
    #[bits(16)]
    pub impdef: u16,
    /// [37:32] S2T0SZ: size of the IPA space is `2^(64 - S2T0SZ)`.
    #[bits(6)]
    pub s2t0sz: u8,
    /// [39:38] S2SL0: starting level of the stage 2 walk.
    #[bits(2)]
    pub s2sl0: u8,
    /// [41:40] S2IR0: inner cacheability of stage 2 walks.
    #[bits(2)]
    pub s2ir0: Cacheability,
    /// [43:42] S2OR0: outer cacheability of stage 2 walks.
    #[bits(2)]
    pub s2or0: Cacheability,
    /// [45:44] S2SH0: shareability of stage 2 walks.
    #[bits(2)]
    pub s2sh0: Shareability,
    /// [47:46] S2TG: stage 2 granule (TG0 encoding).
    #[bits(2)]
    pub s2tg: Tg0,
    /// [50:48] S2PS: stage 2 output address size (capped at SMMU_IDR5.OAS).
    #[bits(3)]
    pub s2ps: AddressSize,
    /// [51] S2AA64: stage 2 tables are VMSAv8-64 (0: VMSAv8-32 LPAE).
    pub s2aa64: bool,
    /// [52] S2ENDI: stage 2 tables are big-endian.
    pub s2endi: bool,
    /// [53] S2AFFD: stage 2 Access flag faults disabled.
    pub s2affd: bool,
    /// [54] S2PTW: stage 1 walks to Device memory fault at stage 2.
    pub s2ptw: bool,
    /// [55] S2HD: hardware update of stage 2 dirty state.
    pub s2hd: bool,
    /// [56] S2HA: hardware update of stage 2 Access flags.
    pub s2ha: bool,
    /// [57] S2S: stage 2 faults stall.
    pub s2s: bool,
    /// [58] S2R: stage 2 faults are recorded.
    pub s2r: bool,
    /// [63:59] Reserved in this model (S2HAFT, S2PIE, S2POE, DPT_VMATCH in later revisions).
    #[bits(5)]
    __: u8,
}

/// §5.2 STE word 3 (bits `[255:192]`): stage 2 translation table base.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct SteWord3 {
    /// [0] S2NSW: NS bit of Secure stage 2 walks (Secure STEs only; RES0 otherwise).
    pub s2nsw: bool,
    /// [1] S2NSA: NS bit output by Secure stage 2 (Secure STEs only; RES0 otherwise).
    pub s2nsa: bool,
    /// [3:2] Reserved in this model (S2SL0_2 and S2DS in later revisions).
    #[bits(2)]
    __: u8,
    /// [51:4] S2TTB: bits `[51:4]` of the stage 2 translation table base.
    #[bits(48)]
    pub s2ttb: u64,
    /// [63:52] Reserved, RES0.
    #[bits(12)]
    __: u16,
}

impl SteWord3 {
    /// The stage 2 table base address.
    #[must_use]
    pub const fn s2ttb_pa(self) -> Pa {
        Pa(self.s2ttb() << 4)
    }

    /// Sets the stage 2 table base address; bits `[3:0]` and above bit 51 are dropped.
    #[must_use]
    pub const fn with_s2ttb_pa(self, pa: Pa) -> Self {
        self.with_s2ttb(truncate(pa.0 >> 4, 48))
    }
}

/// §5.2 STE, Stream Table Entry: eight 64-bit words, word 0 at the lowest address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Ste(pub [u64; 8]);

impl Ste {
    /// Size of an STE in bytes.
    pub const BYTES: u64 = 64;

    /// Bits that must be zero in a Non-secure STE (§5.2): fields marked Reserved, plus the
    /// fields that only Secure or Realm STEs use (S2NSW, S2NSA, S_S2*, S2SW, S2SA, MPAM_NS,
    /// MECID). The model can raise C_BAD_STE when [`Ste::reserved_bits_set`] finds one.
    ///
    /// Fields that are RES0 only when a feature is absent (MPAM, VMS, permission indirection)
    /// are not included: whether they must be zero depends on the SMMU_IDR registers.
    pub const RES0_NON_SECURE: [u64; 8] = [
        bits(58, 52),
        bits(43, 41),
        0,
        bits(1, 0) | bits(63, 52),
        bits(63, 32),
        bit(8) | bits(63, 56),
        u64::MAX,
        0,
    ];

    /// An all-zero STE (V == 0: traffic aborts with C_BAD_STE).
    #[must_use]
    pub const fn new() -> Self {
        Self([0; 8])
    }

    /// The STE from its eight words.
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
        /// Word 0: V, Config, S1Fmt, S1ContextPtr, S1CDMax.
        0: word0, with_word0 -> SteWord0;
        /// Word 1: S1DSS, CD fetch attributes, EATS, STRW and the attribute overrides.
        1: word1, with_word1 -> SteWord1;
        /// Word 2: S2VMID and the stage 2 translation controls.
        2: word2, with_word2 -> SteWord2;
        /// Word 3: S2TTB.
        3: word3, with_word3 -> SteWord3;
    }

    /// Whether V is set.
    #[must_use]
    pub const fn is_valid(&self) -> bool {
        self.word0().v()
    }

    /// The stream configuration.
    #[must_use]
    pub const fn config(&self) -> StreamConfig {
        self.word0().config()
    }

    /// The first word with a bit set in [`Ste::RES0_NON_SECURE`], if any.
    #[must_use]
    pub fn reserved_bits_set(&self) -> Option<ReservedBits> {
        first_reserved(&self.0, &Self::RES0_NON_SECURE)
    }
}

const fn bit(n: u32) -> u64 {
    1 << n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoding::Granule;
    use proptest::prelude::*;

    #[test]
    fn strtab_registers() {
        let base = StrtabBase::new()
            .with_addr_pa(Pa(0x4_0000_0040))
            .with_ra(true);
        assert_eq!(base.into_bits(), (1 << 62) | 0x4_0000_0040);
        let cfg = StrtabBaseCfg::new()
            .with_log2size(16)
            .with_split(8)
            .with_fmt(StrtabFmt::TwoLevel);
        assert_eq!(cfg.into_bits(), 0x0001_0210);
        assert_eq!(
            StrtabBaseCfg::from_bits(2 << 16).fmt(),
            StrtabFmt::Reserved(2)
        );
    }

    #[test]
    fn l1std_layout() {
        let l1 = L1Std::new().with_span(9).with_l2ptr_pa(Pa(0x1234_5600));
        assert_eq!(l1.into_bits(), 0x1234_5609);
        assert_eq!(l1.l2_entries(), 256);
        assert_eq!(L1Std::new().l2_entries(), 0);
        assert_eq!(L1Std::from_bits(0x1234_5609).l2ptr_pa(), Pa(0x1234_5600));
    }

    #[test]
    fn word0_stage1_stream() {
        // Valid, S1 translate, 2-level 64K CD table at 0x8_0000_0000, 2^20 CDs.
        let w0 = SteWord0::new()
            .with_v(true)
            .with_config(StreamConfig::S1Trans)
            .with_s1fmt(S1Fmt::TwoLevel64K)
            .with_s1_context_ptr_pa(Pa(0x8_0000_0000))
            .with_s1cdmax(20);
        assert_eq!(w0.into_bits(), 0xA000_0008_0000_002B);
        let back = SteWord0::from_bits(0xA000_0008_0000_002B);
        assert_eq!(back.config(), StreamConfig::S1Trans);
        assert!(back.config().stage1() && !back.config().stage2());
        assert_eq!(back.s1fmt().l2_index_bits(), Some(10));
        assert_eq!(
            SteWord0::from_bits(0b0110).config(),
            StreamConfig::Reserved(3)
        );
        assert_eq!(SteWord0::from_bits(0b1000).config(), StreamConfig::Bypass);
        assert_eq!(SteWord0::from_bits(0b1110).config(), StreamConfig::Nested);
    }

    #[test]
    fn word1_fields() {
        // The Linux SVA stream: S1DSS=SSID0, WB cacheable inner-shareable CD fetch, S1STALLD,
        // full ATS, SHCFG incoming.
        let w1 = SteWord1::new()
            .with_s1dss(S1Dss::Ssid0)
            .with_s1cir(Cacheability::WriteBackAllocate)
            .with_s1cor(Cacheability::WriteBackAllocate)
            .with_s1csh(Shareability::InnerShareable)
            .with_s1stalld(true)
            .with_eats(Eats::Full)
            .with_shcfg(ShareCfg::Incoming);
        assert_eq!(w1.into_bits(), 0x0000_1000_1800_00D6);
        assert_eq!(SteWord1::new().with_strw(Strw::El2).into_bits(), 2 << 30);
        assert_eq!(
            SteWord1::new().with_mev(true).with_ppar(true).into_bits(),
            0b11 << 18
        );
        assert_eq!(
            SteWord1::new()
                .with_privcfg(PrivCfg::Privileged)
                .into_bits(),
            3 << 48
        );
        assert_eq!(
            SteWord1::new().with_instcfg(InstCfg::Data).into_bits(),
            2 << 50
        );
        assert_eq!(
            SteWord1::new().with_nscfg(NsCfg::NonSecure).into_bits(),
            3 << 46
        );
        assert_eq!(
            SteWord1::new()
                .with_memattr(0xF)
                .with_mtcfg(true)
                .into_bits(),
            0x1F << 32
        );
        assert_eq!(
            SteWord1::new().with_alloccfg(0b1010).into_bits(),
            0b1010 << 37
        );
        assert_eq!(SteWord1::new().with_cont(0xF).into_bits(), 0xF << 13);
        assert_eq!(SteWord1::new().with_sw_reserved(0xF).into_bits(), 0xF << 20);
    }

    #[test]
    fn word2_and_word3_stage2() {
        let w2 = SteWord2::new()
            .with_s2vmid(Vmid(0x1234))
            .with_s2t0sz(24)
            .with_s2sl0(1)
            .with_s2ir0(Cacheability::WriteBackAllocate)
            .with_s2or0(Cacheability::WriteBackAllocate)
            .with_s2sh0(Shareability::InnerShareable)
            .with_s2tg(Tg0::Size4K)
            .with_s2ps(AddressSize::Bits48)
            .with_s2aa64(true)
            .with_s2ptw(true)
            .with_s2r(true);
        assert_eq!(w2.into_bits(), 0x044D_3558_0000_1234);
        assert_eq!(w2.s2tg().granule(), Some(Granule::Size4K));
        assert_eq!(SteWord2::new().with_s2s(true).into_bits(), 1 << 57);
        assert_eq!(
            SteWord2::new().with_s2hd(true).with_s2ha(true).into_bits(),
            3 << 55
        );
        let w3 = SteWord3::new().with_s2ttb_pa(Pa(0x000F_FFFF_FFFF_FFF0));
        assert_eq!(w3.into_bits(), 0x000F_FFFF_FFFF_FFF0);
        assert_eq!(w3.s2ttb_pa(), Pa(0x000F_FFFF_FFFF_FFF0));
    }

    #[test]
    fn ste_words_and_reserved_bits() {
        let ste = Ste::new()
            .with_word0(
                SteWord0::new()
                    .with_v(true)
                    .with_config(StreamConfig::Bypass),
            )
            .with_word1(SteWord1::new().with_shcfg(ShareCfg::Incoming));
        assert_eq!(ste.words()[0], 0b1001);
        assert!(ste.is_valid());
        assert_eq!(ste.config(), StreamConfig::Bypass);
        assert_eq!(ste.reserved_bits_set(), None);

        let mut words = ste.words();
        words[0] |= 1 << 52;
        assert_eq!(
            Ste::from_words(words).reserved_bits_set(),
            Some(ReservedBits {
                word: 0,
                bits: 1 << 52
            })
        );
        words[0] = 0;
        words[3] = 1; // S2NSW in a Non-secure STE
        assert_eq!(
            Ste::from_words(words).reserved_bits_set(),
            Some(ReservedBits { word: 3, bits: 1 })
        );
        words[3] = 0;
        words[6] = 1 << 40; // S_S2TTB
        assert_eq!(
            Ste(words).reserved_bits_set(),
            Some(ReservedBits {
                word: 6,
                bits: 1 << 40
            })
        );
        words[6] = 0;
        words[1] = bits(23, 20) | bits(63, 52); // SW_RESERVED and IMPDEF are free for use
        words[4] = 0xFFFF_FFFF; // IMPDEF and PARTID
        assert_eq!(Ste(words).reserved_bits_set(), None);
    }

    proptest! {
        #[test]
        fn any_words_decode_without_panic(words: [u64; 8]) {
            let ste = Ste::from_words(words);
            let dump = format!("{:?} {:?} {:?} {:?}", ste.word0(), ste.word1(), ste.word2(), ste.word3());
            prop_assert!(!dump.is_empty());
            let clean = words.iter().zip(Ste::RES0_NON_SECURE).all(|(w, m)| w & m == 0);
            prop_assert_eq!(ste.reserved_bits_set().is_none(), clean);
            let rebuilt = Ste::from_words(words)
                .with_word0(ste.word0())
                .with_word1(ste.word1())
                .with_word2(ste.word2())
                .with_word3(ste.word3());
            prop_assert_eq!(rebuilt, ste);
        }
    }
}
