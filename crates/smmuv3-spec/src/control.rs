//! Control, status, bypass, interrupt and global-error registers (§6.3.9 to §6.3.23).
//!
//! SMMU_CR0 and SMMU_IRQ_CTRL are acknowledged through SMMU_CR0ACK and SMMU_IRQ_CTRLACK,
//! which share their layouts ([`Cr0Ack`], [`IrqCtrlAck`]). An error is active in SMMU_GERROR
//! while its bit differs from the same bit of SMMU_GERRORN ([`Gerror::active`]).

use bitfield_struct::bitfield;
use sva_addr::Pa;

use crate::encoding::{Cr1Cacheability, InstCfg, PrivCfg, ShareCfg, Shareability, truncate};

/// §6.3.9 SMMU_CR0: enables of the Non-secure programming interface.
#[bitfield(u32)]
#[derive(PartialEq, Eq, Hash)]
pub struct Cr0 {
    /// [0] SMMUEN: translate Non-secure streams (0: bypass or abort per SMMU_GBPA).
    pub smmuen: bool,
    /// [1] PRIQEN: PRI queue writes enabled.
    pub priqen: bool,
    /// [2] EVENTQEN: Event queue writes enabled.
    pub eventqen: bool,
    /// [3] CMDQEN: Command queue processing enabled.
    pub cmdqen: bool,
    /// [4] ATSCHK: ATS Translated traffic is checked against STE.EATS.
    pub atschk: bool,
    /// [5] Reserved, RES0.
    #[bits(1)]
    __: u8,
    /// [8:6] VMW: VMID wildcard for TLB invalidation (match VMID[N:VMW]).
    #[bits(3)]
    pub vmw: u8,
    /// [31:9] Reserved, RES0.
    #[bits(23)]
    __: u32,
}

/// §6.3.10 SMMU_CR0ACK: the SMMU_CR0 values whose update has completed.
pub type Cr0Ack = Cr0;

/// §6.3.11 SMMU_CR1: memory attributes of queue and table accesses.
#[bitfield(u32)]
#[derive(PartialEq, Eq, Hash)]
pub struct Cr1 {
    /// [1:0] QUEUE_IC: inner cacheability of queue accesses.
    #[bits(2)]
    pub queue_ic: Cr1Cacheability,
    /// [3:2] QUEUE_OC: outer cacheability of queue accesses.
    #[bits(2)]
    pub queue_oc: Cr1Cacheability,
    /// [5:4] QUEUE_SH: shareability of queue accesses.
    #[bits(2)]
    pub queue_sh: Shareability,
    /// [7:6] TABLE_IC: inner cacheability of Stream table accesses.
    #[bits(2)]
    pub table_ic: Cr1Cacheability,
    /// [9:8] TABLE_OC: outer cacheability of Stream table accesses.
    #[bits(2)]
    pub table_oc: Cr1Cacheability,
    /// [11:10] TABLE_SH: shareability of Stream table accesses.
    #[bits(2)]
    pub table_sh: Shareability,
    /// [31:12] Reserved, RES0.
    #[bits(20)]
    __: u32,
}

/// §6.3.12 SMMU_CR2: global controls (writable only while SMMUEN == 0).
#[bitfield(u32)]
#[derive(PartialEq, Eq, Hash)]
pub struct Cr2 {
    /// [0] E2H: STE.STRW == EL2 selects the EL2-E2H regime (with ASIDs).
    pub e2h: bool,
    /// [1] RECINVSID: record C_BAD_STREAMID for out-of-range StreamIDs.
    pub recinvsid: bool,
    /// [2] PTM: private TLB maintenance (ignore broadcast invalidation).
    pub ptm: bool,
    /// [3] REC_CFG_ATS: record the extended set of ATS/PRI configuration events
    /// (when SMMU_IDR0.ATSRECERR == 1).
    pub rec_cfg_ats: bool,
    /// [31:4] Reserved, RES0.
    #[bits(28)]
    __: u32,
}

/// §6.3.13 SMMU_STATUSR.
#[bitfield(u32)]
#[derive(PartialEq, Eq, Hash)]
pub struct Statusr {
    /// [0] DORMANT: nothing is cached and no prefetch is in flight (when IDR0.DORMHINT).
    pub dormant: bool,
    /// [31:1] Reserved, RES0.
    #[bits(31)]
    __: u32,
}

/// §6.3.14 SMMU_GBPA: attributes of transactions that bypass a disabled SMMU.
///
/// Software writes the register with UPDATE set and polls until the SMMU clears it.
#[bitfield(u32)]
#[derive(PartialEq, Eq, Hash)]
pub struct Gbpa {
    /// [3:0] MEMATTR: memory type override (STE.MemAttr encoding).
    #[bits(4)]
    pub memattr: u8,
    /// [4] MTCFG: replace the incoming memory type with MEMATTR.
    pub mtcfg: bool,
    /// [7:5] Reserved, RES0.
    #[bits(3)]
    __: u8,
    /// [11:8] ALLOCCFG: allocation hints override (`0b1RWT`).
    #[bits(4)]
    pub alloccfg: u8,
    /// [13:12] SHCFG: shareability override.
    #[bits(2)]
    pub shcfg: ShareCfg,
    /// [15:14] Reserved, RES0.
    #[bits(2)]
    __: u8,
    /// [17:16] PRIVCFG: privilege override.
    #[bits(2)]
    pub privcfg: PrivCfg,
    /// [19:18] INSTCFG: instruction/data override.
    #[bits(2)]
    pub instcfg: InstCfg,
    /// [20] ABORT: abort all incoming transactions.
    pub abort: bool,
    /// [30:21] Reserved, RES0.
    #[bits(10)]
    __: u16,
    /// [31] UPDATE: set by software with a write, cleared by the SMMU when it took effect.
    pub update: bool,
}

/// SMMU_IRQ_CTRL (§6.3): interrupt enables; SMMU_IRQ_CTRLACK (§6.3.18) has the same layout.
#[bitfield(u32)]
#[derive(PartialEq, Eq, Hash)]
pub struct IrqCtrl {
    /// [0] GERROR_IRQEN: global error interrupt.
    pub gerror_irqen: bool,
    /// [1] PRIQ_IRQEN: PRI queue interrupt.
    pub priq_irqen: bool,
    /// [2] EVENTQ_IRQEN: Event queue interrupt.
    pub eventq_irqen: bool,
    /// [31:3] Reserved, RES0.
    #[bits(29)]
    __: u32,
}

/// §6.3.18 SMMU_IRQ_CTRLACK: the SMMU_IRQ_CTRL values whose update has completed.
pub type IrqCtrlAck = IrqCtrl;

/// §6.3.19 SMMU_GERROR: global errors, toggled by the SMMU; SMMU_GERRORN (§6.3.20) has the
/// same layout and is toggled by software to acknowledge.
#[bitfield(u32)]
#[derive(PartialEq, Eq, Hash)]
pub struct Gerror {
    /// [0] CMDQ_ERR: a command could not be processed; SMMU_CMDQ_CONS.ERR holds the reason.
    pub cmdq_err: bool,
    /// [1] Reserved, RES0.
    #[bits(1)]
    __: u8,
    /// [2] EVENTQ_ABT_ERR: an Event queue access aborted (records may be lost).
    pub eventq_abt_err: bool,
    /// [3] PRIQ_ABT_ERR: a PRI queue access aborted (requests may be lost).
    pub priq_abt_err: bool,
    /// [4] MSI_CMDQ_ABT_ERR: a CMD_SYNC MSI write aborted.
    pub msi_cmdq_abt_err: bool,
    /// [5] MSI_EVENTQ_ABT_ERR: an Event queue MSI write aborted.
    pub msi_eventq_abt_err: bool,
    /// [6] MSI_PRIQ_ABT_ERR: a PRI queue MSI write aborted.
    pub msi_priq_abt_err: bool,
    /// [7] MSI_GERROR_ABT_ERR: a GERROR MSI write aborted.
    pub msi_gerror_abt_err: bool,
    /// [8] SFM_ERR: the SMMU entered Service Failure Mode.
    pub sfm_err: bool,
    /// [9] CMDQP_ERR: an error on an Enhanced Command queue control page.
    pub cmdqp_err: bool,
    /// [31:10] Reserved, RES0.
    #[bits(22)]
    __: u32,
}

/// §6.3.20 SMMU_GERRORN: acknowledgement of SMMU_GERROR.
pub type Gerrorn = Gerror;

impl Gerror {
    /// Bits of all defined errors.
    pub const ERROR_MASK: u32 = 0x3FD;

    /// The errors active given SMMU_GERROR and SMMU_GERRORN: those whose bits differ.
    #[must_use]
    pub const fn active(gerror: Self, gerrorn: Gerrorn) -> Self {
        Self::from_bits((gerror.into_bits() ^ gerrorn.into_bits()) & Self::ERROR_MASK)
    }

    /// Whether any error is flagged.
    #[must_use]
    pub const fn any(self) -> bool {
        self.into_bits() & Self::ERROR_MASK != 0
    }
}

/// §6.3.21 SMMU_GERROR_IRQ_CFG0 (64-bit): MSI target address. SMMU_EVENTQ_IRQ_CFG0 (§6.3.30)
/// and SMMU_PRIQ_IRQ_CFG0 (§6.3.34) share the layout. ADDR == 0 sends no MSI.
#[bitfield(u64)]
#[derive(PartialEq, Eq, Hash)]
pub struct IrqCfg0 {
    /// [1:0] Reserved, RES0.
    #[bits(2)]
    __: u8,
    /// [51:2] ADDR: bits `[51:2]` of the physical address of the MSI target.
    #[bits(50)]
    pub addr: u64,
    /// [63:52] Reserved, RES0 (later revisions extend ADDR to bit 55).
    #[bits(12)]
    __: u16,
}

impl IrqCfg0 {
    /// The MSI target address (word aligned).
    #[must_use]
    pub const fn addr_pa(self) -> Pa {
        Pa(self.addr() << 2)
    }

    /// Sets the MSI target address; bits `[1:0]` and above bit 51 are dropped.
    #[must_use]
    pub const fn with_addr_pa(self, pa: Pa) -> Self {
        self.with_addr(truncate(pa.0 >> 2, 50))
    }
}

/// §6.3.22 SMMU_GERROR_IRQ_CFG1: MSI payload. Shared by SMMU_EVENTQ_IRQ_CFG1 and
/// SMMU_PRIQ_IRQ_CFG1.
#[bitfield(u32)]
#[derive(PartialEq, Eq, Hash)]
pub struct IrqCfg1 {
    /// [31:0] DATA: the 32-bit MSI payload.
    pub data: u32,
}

/// §6.3.23 SMMU_GERROR_IRQ_CFG2: MSI memory attributes. Shared by SMMU_EVENTQ_IRQ_CFG2
/// (§6.3.32) and SMMU_PRIQ_IRQ_CFG2 (§6.3.36); only the latter defines LO.
#[bitfield(u32)]
#[derive(PartialEq, Eq, Hash)]
pub struct IrqCfg2 {
    /// [3:0] MEMATTR: memory type of the MSI write (STE.MemAttr encoding).
    #[bits(4)]
    pub memattr: u8,
    /// [5:4] SH: shareability of the MSI write.
    #[bits(2)]
    pub sh: Shareability,
    /// [30:6] Reserved, RES0.
    #[bits(25)]
    __: u32,
    /// [31] LO (SMMU_PRIQ_IRQ_CFG2 only): signal only for PRI entries with Last == 1.
    /// RES0 in the GERROR and Event queue registers.
    pub lo: bool,
}

/// Memory attribute encodings of MEMATTR fields (STE.MemAttr, GBPA, IRQ_CFG2, CMD_SYNC.MSIAttr),
/// following the VMSAv8-64 stage 2 MemAttr\[3:0\] encoding.
pub mod memattr {
    /// Device-nGnRnE.
    pub const DEVICE_NGNRNE: u8 = 0b0000;
    /// Device-nGnRE.
    pub const DEVICE_NGNRE: u8 = 0b0001;
    /// Normal, Inner and Outer Non-cacheable.
    pub const NORMAL_NC: u8 = 0b0101;
    /// Normal, Inner and Outer Write-Back cacheable.
    pub const NORMAL_WB: u8 = 0b1111;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cr0_bits() {
        let cr0 = Cr0::new()
            .with_smmuen(true)
            .with_priqen(true)
            .with_eventqen(true)
            .with_cmdqen(true);
        assert_eq!(cr0.into_bits(), 0xF);
        assert_eq!(
            Cr0::new().with_atschk(true).with_vmw(4).into_bits(),
            (1 << 4) | (4 << 6)
        );
    }

    #[test]
    fn cr1_linux_style_value() {
        // Write-back, inner shareable for both queues and tables.
        let cr1 = Cr1::new()
            .with_queue_ic(Cr1Cacheability::WriteBack)
            .with_queue_oc(Cr1Cacheability::WriteBack)
            .with_queue_sh(Shareability::InnerShareable)
            .with_table_ic(Cr1Cacheability::WriteBack)
            .with_table_oc(Cr1Cacheability::WriteBack)
            .with_table_sh(Shareability::InnerShareable);
        assert_eq!(cr1.into_bits(), 0xD75);
        assert_eq!(
            Cr1::from_bits(0b11).queue_ic(),
            Cr1Cacheability::Reserved(3)
        );
    }

    #[test]
    fn cr2_gbpa_irq_ctrl_bits() {
        assert_eq!(
            Cr2::new().with_recinvsid(true).with_ptm(true).into_bits(),
            0b110
        );
        let gbpa = Gbpa::new()
            .with_abort(true)
            .with_update(true)
            .with_shcfg(ShareCfg::Incoming);
        assert_eq!(gbpa.into_bits(), 0x8010_1000);
        let irq = IrqCtrl::new()
            .with_gerror_irqen(true)
            .with_eventq_irqen(true);
        assert_eq!(irq.into_bits(), 0b101);
    }

    #[test]
    fn gerror_active_is_xor() {
        let gerror = Gerror::new().with_cmdq_err(true).with_sfm_err(true);
        let gerrorn = Gerror::new().with_sfm_err(true);
        let active = Gerror::active(gerror, gerrorn);
        assert!(active.cmdq_err() && !active.sfm_err());
        assert!(active.any());
        assert_eq!(gerror.into_bits(), 0x101);
        assert_eq!(Gerror::new().with_cmdqp_err(true).into_bits(), 1 << 9);
        assert!(!Gerror::active(gerror, gerror).any());
    }

    #[test]
    fn irq_cfg_layouts() {
        let cfg0 = IrqCfg0::new().with_addr_pa(Pa(0x0008_0000_1040));
        assert_eq!(cfg0.into_bits(), 0x0008_0000_1040);
        assert_eq!(cfg0.addr_pa(), Pa(0x0008_0000_1040));
        assert_eq!(
            IrqCfg0::new()
                .with_addr_pa(Pa(0xFFF0_0000_0000_1043))
                .into_bits(),
            0x1040
        );
        let cfg2 = IrqCfg2::new()
            .with_memattr(memattr::DEVICE_NGNRE)
            .with_sh(Shareability::InnerShareable);
        assert_eq!(cfg2.into_bits(), 0x31);
        assert_eq!(IrqCfg2::new().with_lo(true).into_bits(), 1 << 31);
    }
}
