//! Identification registers: SMMU_IDR0..5, SMMU_IIDR and SMMU_AIDR (§6.3.1 to §6.3.8).
//!
//! The model builds these from its configuration; the driver reads them at probe time to
//! learn what it may program. All are read-only.

use bitfield_struct::bitfield;

use crate::encoding::{AddressSize, spec_enum};

spec_enum! {
    /// SMMU_IDR0.TTF: translation table formats supported.
    pub enum TableFormats: 2 {
        /// `0b01` VMSAv8-32 LPAE only.
        AArch32 = 1,
        /// `0b10` VMSAv8-64 only.
        AArch64 = 2,
        /// `0b11` Both VMSAv8-32 LPAE and VMSAv8-64.
        Both = 3,
    }
}

spec_enum! {
    /// SMMU_IDR0.HTTU: hardware update of Access flag and dirty state.
    pub exhaustive enum Httu: 2 {
        /// `0b00` No hardware updates.
        None = 0,
        /// `0b01` Access flag updates.
        AccessFlag = 1,
        /// `0b10` Access flag and dirty state updates.
        AccessDirty = 2,
        /// `0b11` Access flag, dirty state and Access flag in Table descriptors.
        AccessDirtyTable = 3,
    }
}

spec_enum! {
    /// SMMU_IDR0.TTENDIAN: endianness of translation table walks.
    pub enum TtEndian: 2 {
        /// `0b00` Mixed: CD.ENDI and STE.S2ENDI may select either.
        Mixed = 0,
        /// `0b10` Little-endian only.
        Little = 2,
        /// `0b11` Big-endian only.
        Big = 3,
    }
}

spec_enum! {
    /// SMMU_IDR0.STALL_MODEL.
    pub enum StallModel: 2 {
        /// `0b00` Stall and Terminate models both supported.
        StallAndTerminate = 0,
        /// `0b01` Stall not supported: every fault terminates; CMD_RESUME and CMD_STALL_TERM
        /// are not available.
        TerminateOnly = 1,
        /// `0b10` Stall forced: STE.S2S and CD.S must be 1 (not allowed with PCIe).
        StallForced = 2,
    }
}

spec_enum! {
    /// SMMU_IDR0.ST_LEVEL: Stream table formats supported.
    pub enum StLevel: 2 {
        /// `0b00` Linear Stream table only.
        Linear = 0,
        /// `0b01` 2-level Stream table in addition to linear.
        TwoLevel = 1,
    }
}

/// §6.3.1 SMMU_IDR0: features of the Non-secure programming interface.
#[bitfield(u32)]
#[derive(PartialEq, Eq, Hash)]
pub struct Idr0 {
    /// [0] S2P: stage 2 translation supported.
    pub s2p: bool,
    /// [1] S1P: stage 1 translation supported.
    pub s1p: bool,
    /// [3:2] TTF: translation table formats.
    #[bits(2)]
    pub ttf: TableFormats,
    /// [4] COHACC: coherent access to tables, queues and MSIs.
    pub cohacc: bool,
    /// [5] BTM: broadcast TLB maintenance.
    pub btm: bool,
    /// [7:6] HTTU: hardware Access flag / dirty state updates.
    #[bits(2)]
    pub httu: Httu,
    /// [8] DORMHINT: SMMU_STATUSR.DORMANT is implemented.
    pub dormhint: bool,
    /// [9] HYP: hypervisor (EL2) stage 1 contexts.
    pub hyp: bool,
    /// [10] ATS: PCIe ATS.
    pub ats: bool,
    /// [11] NS1ATS: split-stage ATS is *not* supported.
    pub ns1ats: bool,
    /// [12] ASID16: 16-bit ASIDs.
    pub asid16: bool,
    /// [13] MSI: message-signalled interrupts.
    pub msi: bool,
    /// [14] SEV: WFE wake-up events to the PE.
    pub sev: bool,
    /// [15] ATOS: address translation operations.
    pub atos: bool,
    /// [16] PRI: PCIe Page Request Interface (PRI queue).
    pub pri: bool,
    /// [17] VMW: VMID wildcards for TLB invalidation.
    pub vmw: bool,
    /// [18] VMID16: 16-bit VMIDs.
    pub vmid16: bool,
    /// [19] CD2L: 2-level Context descriptor tables.
    pub cd2l: bool,
    /// [20] VATOS: virtual ATOS page.
    pub vatos: bool,
    /// [22:21] TTENDIAN: translation table endianness.
    #[bits(2)]
    pub ttendian: TtEndian,
    /// [23] ATSRECERR: extended event recording for ATS and PRI (SMMU_CR2.REC_CFG_ATS).
    pub atsrecerr: bool,
    /// [25:24] STALL_MODEL: stall fault model.
    #[bits(2)]
    pub stall_model: StallModel,
    /// [26] TERM_MODEL: terminated transactions always abort (CD.A must be 1).
    pub term_model: bool,
    /// [28:27] ST_LEVEL: multi-level Stream table support.
    #[bits(2)]
    pub st_level: StLevel,
    /// [29] Reserved, RES0.
    #[bits(1)]
    __: u8,
    /// [30] RME_IMPL: Realm Management Extension features.
    pub rme_impl: bool,
    /// [31] Reserved, RES0.
    #[bits(1)]
    __: u8,
}

/// §6.3.2 SMMU_IDR1: table, queue and identifier sizes.
#[bitfield(u32)]
#[derive(PartialEq, Eq, Hash)]
pub struct Idr1 {
    /// [5:0] SIDSIZE: number of StreamID bits.
    #[bits(6)]
    pub sidsize: u8,
    /// [10:6] SSIDSIZE: number of SubstreamID bits (0 = substreams unsupported, at most 20).
    #[bits(5)]
    pub ssidsize: u8,
    /// [15:11] PRIQS: log2 of the maximum PRI queue entries (at most 19).
    #[bits(5)]
    pub priqs: u8,
    /// [20:16] EVENTQS: log2 of the maximum Event queue entries (at most 19).
    #[bits(5)]
    pub eventqs: u8,
    /// [25:21] CMDQS: log2 of the maximum Command queue entries (at most 19).
    #[bits(5)]
    pub cmdqs: u8,
    /// [26] ATTR_PERMS_OVR: STE and GBPA can override INST and PRIV attributes.
    pub attr_perms_ovr: bool,
    /// [27] ATTR_TYPES_OVR: STE and GBPA can override memory type, allocation and
    /// shareability.
    pub attr_types_ovr: bool,
    /// [28] REL: base addresses are relative to the SMMU base (embedded implementations).
    pub rel: bool,
    /// [29] QUEUES_PRESET: queue base registers are fixed.
    pub queues_preset: bool,
    /// [30] TABLES_PRESET: table base registers are fixed.
    pub tables_preset: bool,
    /// [31] ECMDQ: Enhanced Command queue interfaces.
    pub ecmdq: bool,
}

/// §6.3.3 SMMU_IDR2: location of the VATOS page.
#[bitfield(u32)]
#[derive(PartialEq, Eq, Hash)]
pub struct Idr2 {
    /// [9:0] BA_VATOS: VATOS page offset, in 64 KiB units from SMMU base + 0x20000.
    #[bits(10)]
    pub ba_vatos: u16,
    /// [31:10] Reserved, RES0.
    #[bits(22)]
    __: u32,
}

/// §6.3.4 SMMU_IDR3: optional features (SMMUv3.1 and later).
#[bitfield(u32)]
#[derive(PartialEq, Eq, Hash)]
pub struct Idr3 {
    /// [1:0] Reserved, RES0.
    #[bits(2)]
    __: u8,
    /// [2] HAD: hierarchical attribute disables (CD.HAD0/HAD1).
    pub had: bool,
    /// [3] PBHA: page-based hardware attributes.
    pub pbha: bool,
    /// [4] XNX: EL0/EL1 execute-never distinction at stage 2.
    pub xnx: bool,
    /// [5] PPS: PRI auto-responses use the request's PASID regardless of STE.PPAR.
    pub pps: bool,
    /// [6] Reserved, RES0.
    #[bits(1)]
    __: u8,
    /// [7] MPAM: memory partitioning and monitoring.
    pub mpam: bool,
    /// [8] FWB: stage 2 control of attributes (STE.S2FWB).
    pub fwb: bool,
    /// [9] STT: small translation tables.
    pub stt: bool,
    /// [10] RIL: range invalidation and level hint in CMD_TLBI_*.
    pub ril: bool,
    /// [12:11] BBML: break-before-make level.
    #[bits(2)]
    pub bbml: u8,
    /// [13] E0PD: CD.E0PD0/E0PD1 implemented.
    pub e0pd: bool,
    /// [14] PTWNNC: STE.S2PTW == 0 treats Device-mapped walks as Normal Non-cacheable.
    pub ptwnnc: bool,
    /// [31:15] Reserved in this model (later revisions define DPT, PASIDTT, S1PI, ...).
    #[bits(17)]
    __: u32,
}

spec_enum! {
    /// SMMU_IDR5.VAX: virtual address size per CD.TTBx.
    pub enum Vax: 2 {
        /// `0b00` 48-bit virtual addresses.
        Bits48 = 0,
        /// `0b01` 52-bit virtual addresses.
        Bits52 = 1,
        /// `0b10` 56-bit virtual addresses (SMMUv3.4).
        Bits56 = 2,
    }
}

/// §6.3.6 SMMU_IDR5: address sizes, granules and stall limit.
#[bitfield(u32)]
#[derive(PartialEq, Eq, Hash)]
pub struct Idr5 {
    /// [2:0] OAS: output (physical) address size.
    #[bits(3)]
    pub oas: AddressSize,
    /// [3] Reserved, RES0.
    #[bits(1)]
    __: u8,
    /// [4] GRAN4K: 4 KiB translation granule.
    pub gran4k: bool,
    /// [5] GRAN16K: 16 KiB translation granule.
    pub gran16k: bool,
    /// [6] GRAN64K: 64 KiB translation granule.
    pub gran64k: bool,
    /// [7] DS: 52-bit addresses with 4 KiB and 16 KiB granules (FEAT_LPA2 behaviour).
    pub ds: bool,
    /// [9:8] Reserved in this model (D128 in later revisions).
    #[bits(2)]
    __: u8,
    /// [11:10] VAX: virtual address size.
    #[bits(2)]
    pub vax: Vax,
    /// [15:12] Reserved, RES0.
    #[bits(4)]
    __: u8,
    /// [31:16] STALL_MAX: maximum outstanding stalled transactions.
    #[bits(16)]
    pub stall_max: u16,
}

/// §6.3.7 SMMU_IIDR: implementation identification (JEP106 implementer code).
#[bitfield(u32)]
#[derive(PartialEq, Eq, Hash)]
pub struct Iidr {
    /// [11:0] Implementer: JEP106 code of the implementer.
    #[bits(12)]
    pub implementer: u16,
    /// [15:12] Revision: minor revision of the product.
    #[bits(4)]
    pub revision: u8,
    /// [19:16] Variant: major revision of the product.
    #[bits(4)]
    pub variant: u8,
    /// [31:20] ProductID.
    #[bits(12)]
    pub product_id: u16,
}

/// §6.3.8 SMMU_AIDR: architecture revision (SMMUv3.`arch_minor_rev`).
#[bitfield(u32)]
#[derive(PartialEq, Eq, Hash)]
pub struct Aidr {
    /// [3:0] ArchMinorRev: 0 for SMMUv3.0 up to 4 for SMMUv3.4.
    #[bits(4)]
    pub arch_minor_rev: u8,
    /// [7:4] ArchMajorRev: 0 for SMMUv3.x.
    #[bits(4)]
    pub arch_major_rev: u8,
    /// [31:8] Reserved, RES0.
    #[bits(24)]
    __: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idr0_field_positions() {
        let idr0 = Idr0::new()
            .with_s1p(true)
            .with_ttf(TableFormats::AArch64)
            .with_cohacc(true)
            .with_httu(Httu::AccessDirty)
            .with_ats(true)
            .with_asid16(true)
            .with_pri(true)
            .with_vmid16(true)
            .with_cd2l(true)
            .with_ttendian(TtEndian::Little)
            .with_stall_model(StallModel::StallAndTerminate)
            .with_st_level(StLevel::TwoLevel);
        // S1P(1) | TTF=2(3:2) | COHACC(4) | HTTU=2(7:6) | ATS(10) | ASID16(12) | PRI(16)
        // | VMID16(18) | CD2L(19) | TTENDIAN=2(22:21) | ST_LEVEL=1(28:27)
        assert_eq!(idr0.into_bits(), 0x084D_149A);
        assert!(Idr0::from_bits(1 << 26).term_model());
        assert_eq!(
            Idr0::from_bits(3 << 24).stall_model(),
            StallModel::Reserved(3)
        );
        assert!(Idr0::from_bits(1 << 30).rme_impl());
    }

    #[test]
    fn idr1_field_positions() {
        let idr1 = Idr1::new()
            .with_sidsize(16)
            .with_ssidsize(20)
            .with_priqs(19)
            .with_eventqs(19)
            .with_cmdqs(19);
        assert_eq!(
            idr1.into_bits(),
            (19 << 21) | (19 << 16) | (19 << 11) | (20 << 6) | 16
        );
        assert!(Idr1::from_bits(1 << 30).tables_preset());
        assert!(Idr1::from_bits(1 << 31).ecmdq());
    }

    #[test]
    fn idr3_and_idr5_field_positions() {
        let idr3 = Idr3::new().with_had(true).with_ril(true).with_bbml(2);
        assert_eq!(idr3.into_bits(), (1 << 2) | (1 << 10) | (2 << 11));
        let idr5 = Idr5::new()
            .with_oas(AddressSize::Bits48)
            .with_gran4k(true)
            .with_gran64k(true)
            .with_vax(Vax::Bits52)
            .with_stall_max(32);
        assert_eq!(
            idr5.into_bits(),
            (32 << 16) | (1 << 10) | (1 << 6) | (1 << 4) | 5
        );
        assert_eq!(idr5.oas().bits(), 48);
    }

    #[test]
    fn iidr_and_aidr() {
        let iidr = Iidr::from_bits(0x4833_243B);
        assert_eq!(iidr.implementer(), 0x43B);
        assert_eq!(iidr.revision(), 2);
        assert_eq!(iidr.variant(), 3);
        assert_eq!(iidr.product_id(), 0x483);
        assert_eq!(Aidr::new().with_arch_minor_rev(3).into_bits(), 0x03);
    }
}
