//! The register file of both 64 KiB pages (§6.3).

use sva_smmuv3_spec::control::{Cr0, Gbpa, Gerror, IrqCtrl};
use sva_smmuv3_spec::encoding::AddressSize;
use sva_smmuv3_spec::idr::{
    Aidr, Httu, Idr0, Idr1, Idr3, Idr5, Iidr, StLevel, StallModel, TableFormats, TtEndian, Vax,
};
use sva_smmuv3_spec::queue::QueueBase;
use sva_smmuv3_spec::regs::{Register, Width};

use crate::{HttuLevel, Notify, Smmu, SmmuConfig, State};

/// SMMU_GBPA reset value: SHCFG = 0b01 (use incoming), ABORT = 0 (bypass).
pub(crate) const GBPA_RESET: u32 = 0x1000;
/// Writable GBPA fields: MemAttr, MTCFG, ALLOCCFG, SHCFG, PRIVCFG, INSTCFG, ABORT.
const GBPA_MASK: u32 = 0x001F_3F1F;
const GBPA_UPDATE: u32 = 1 << 31;
/// STRTAB_BASE: ADDR[51:6], RA.
const STRTAB_BASE_MASK: u64 = 0x000F_FFFF_FFFF_FFC0 | (1 << 62);
/// STRTAB_BASE_CFG: LOG2SIZE, SPLIT, FMT.
const STRTAB_CFG_MASK: u32 = 0x0003_07FF;
/// Queue BASE: LOG2SIZE, ADDR[51:5], RA/WA.
const QUEUE_BASE_MASK: u64 = 0x000F_FFFF_FFFF_FFFF | (1 << 62);
/// IRQ_CFG0: ADDR[51:2].
const IRQ_CFG0_MASK: u64 = 0x000F_FFFF_FFFF_FFFC;
/// IRQ_CFG2: MEMATTR, SH (and LO for the PRI queue).
const IRQ_CFG2_MASK: u32 = 0x3F;
/// Queue index fields (WR/RD with wrap).
const INDEX_MASK: u32 = 0x000F_FFFF;
const OVFLG: u32 = 1 << 31;
/// CR1: queue and table attributes.
const CR1_MASK: u32 = 0x0FFF;
/// CR2: RECINVSID, PTM, REC_CFG_ATS (E2H is RES0 without IDR0.HYP).
const CR2_MASK: u32 = 0b1110;

/// The register values. Identification registers are computed once at reset.
#[derive(Debug, Clone)]
pub(crate) struct Regs {
    pub idr0: u32,
    pub idr1: u32,
    pub idr3: u32,
    pub idr5: u32,
    pub iidr: u32,
    pub aidr: u32,
    pub cr0: u32,
    pub cr0ack: u32,
    pub cr1: u32,
    pub cr2: u32,
    pub gbpa: u32,
    pub irq_ctrl: u32,
    pub irq_ctrlack: u32,
    pub gerror: u32,
    pub gerrorn: u32,
    pub gerror_irq_cfg0: u64,
    pub gerror_irq_cfg1: u32,
    pub gerror_irq_cfg2: u32,
    pub strtab_base: u64,
    pub strtab_base_cfg: u32,
    pub cmdq_base: u64,
    pub cmdq_prod: u32,
    pub cmdq_cons: u32,
    pub eventq_base: u64,
    pub eventq_prod: u32,
    pub eventq_cons: u32,
    pub eventq_irq_cfg0: u64,
    pub eventq_irq_cfg1: u32,
    pub eventq_irq_cfg2: u32,
    pub priq_base: u64,
    pub priq_prod: u32,
    pub priq_cons: u32,
    pub priq_irq_cfg0: u64,
    pub priq_irq_cfg1: u32,
    pub priq_irq_cfg2: u32,
    /// CR0 bits software may set.
    cr0_mask: u32,
    /// IRQ_CTRL bits software may set.
    irq_ctrl_mask: u32,
}

/// Side effects of a register write that need more than the register file.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WriteEffect {
    /// The command queue may have work.
    pub kick_cmdq: bool,
}

impl Regs {
    /// The reset state for `config`.
    pub fn reset(config: &SmmuConfig) -> Self {
        let httu = match config.httu {
            HttuLevel::None => Httu::None,
            HttuLevel::Access => Httu::AccessFlag,
            HttuLevel::AccessDirty => Httu::AccessDirty,
        };
        let idr0 = Idr0::new()
            .with_s1p(true)
            .with_ttf(TableFormats::AArch64)
            .with_cohacc(true)
            .with_btm(config.btm)
            .with_httu(httu)
            .with_ats(config.ats)
            .with_asid16(config.asid16)
            .with_msi(true)
            .with_sev(true)
            .with_pri(config.pri)
            .with_cd2l(config.cd_2level)
            .with_ttendian(TtEndian::Little)
            .with_stall_model(if config.stall {
                StallModel::StallAndTerminate
            } else {
                StallModel::TerminateOnly
            })
            .with_term_model(true)
            .with_st_level(if config.st_2level {
                StLevel::TwoLevel
            } else {
                StLevel::Linear
            });
        let idr1 = Idr1::new()
            .with_sidsize(config.sidsize)
            .with_ssidsize(config.ssidsize)
            .with_priqs(if config.pri { config.priq_log2 } else { 0 })
            .with_eventqs(config.eventq_log2)
            .with_cmdqs(config.cmdq_log2);
        let idr3 = Idr3::new().with_ril(config.range_inv).with_pps(true);
        let idr5 = Idr5::new()
            .with_oas(AddressSize::Bits48)
            .with_gran4k(config.granules.g4k)
            .with_gran16k(config.granules.g16k)
            .with_gran64k(config.granules.g64k)
            .with_vax(Vax::Bits48)
            .with_stall_max(if config.stall {
                crate::stall::STALL_MAX
            } else {
                0
            });
        let mut cr0_mask = Cr0::new()
            .with_smmuen(true)
            .with_eventqen(true)
            .with_cmdqen(true)
            .into_bits();
        let mut irq_ctrl_mask = IrqCtrl::new()
            .with_gerror_irqen(true)
            .with_eventq_irqen(true)
            .into_bits();
        if config.pri {
            cr0_mask |= Cr0::new().with_priqen(true).into_bits();
            irq_ctrl_mask |= IrqCtrl::new().with_priq_irqen(true).into_bits();
        }
        if config.ats {
            cr0_mask |= Cr0::new().with_atschk(true).into_bits();
        }
        Self {
            idr0: idr0.into_bits(),
            idr1: idr1.into_bits(),
            idr3: idr3.into_bits(),
            idr5: idr5.into_bits(),
            iidr: Iidr::new().into_bits(),
            aidr: Aidr::new().with_arch_minor_rev(2).into_bits(),
            cr0: 0,
            cr0ack: 0,
            cr1: 0,
            cr2: 0,
            gbpa: GBPA_RESET,
            irq_ctrl: 0,
            irq_ctrlack: 0,
            gerror: 0,
            gerrorn: 0,
            gerror_irq_cfg0: 0,
            gerror_irq_cfg1: 0,
            gerror_irq_cfg2: 0,
            strtab_base: 0,
            strtab_base_cfg: 0,
            cmdq_base: 0,
            cmdq_prod: 0,
            cmdq_cons: 0,
            eventq_base: 0,
            eventq_prod: 0,
            eventq_cons: 0,
            eventq_irq_cfg0: 0,
            eventq_irq_cfg1: 0,
            eventq_irq_cfg2: 0,
            priq_base: 0,
            priq_prod: 0,
            priq_cons: 0,
            priq_irq_cfg0: 0,
            priq_irq_cfg1: 0,
            priq_irq_cfg2: 0,
            cr0_mask,
            irq_ctrl_mask,
        }
    }

    /// The effective CR0 (all updates complete at once, so CR0ACK).
    pub fn cr0(&self) -> Cr0 {
        Cr0::from_bits(self.cr0ack)
    }

    /// The effective IRQ_CTRL.
    pub fn irq_ctrl(&self) -> IrqCtrl {
        IrqCtrl::from_bits(self.irq_ctrlack)
    }

    /// Active global errors.
    pub fn gerror_active(&self) -> Gerror {
        Gerror::from_bits((self.gerror ^ self.gerrorn) & Gerror::ERROR_MASK)
    }

    /// Raises global error bits (toggles GERROR for each bit not already active) and
    /// returns whether any became active.
    pub fn raise_gerror(&mut self, bits: u32) -> bool {
        let new = bits & !self.gerror_active().into_bits() & Gerror::ERROR_MASK;
        self.gerror ^= new;
        new != 0
    }

    /// GBPA.ABORT.
    pub fn gbpa_abort(&self) -> bool {
        Gbpa::from_bits(self.gbpa).abort()
    }

    /// Effective log2 size of a queue: LOG2SIZE capped at the IDR1 maximum.
    pub fn queue_log2(base: u64, max: u8) -> u8 {
        QueueBase::from_bits(base).log2size().min(max)
    }

    fn value(&self, reg: Register) -> u64 {
        match reg {
            Register::Idr0 => self.idr0.into(),
            Register::Idr1 => self.idr1.into(),
            Register::Idr3 => self.idr3.into(),
            Register::Idr5 => self.idr5.into(),
            Register::Iidr => self.iidr.into(),
            Register::Aidr => self.aidr.into(),
            Register::Cr0 => self.cr0.into(),
            Register::Cr0Ack => self.cr0ack.into(),
            Register::Cr1 => self.cr1.into(),
            Register::Cr2 => self.cr2.into(),
            Register::Gbpa => self.gbpa.into(),
            Register::IrqCtrl => self.irq_ctrl.into(),
            Register::IrqCtrlAck => self.irq_ctrlack.into(),
            Register::Gerror => self.gerror.into(),
            Register::Gerrorn => self.gerrorn.into(),
            Register::GerrorIrqCfg0 => self.gerror_irq_cfg0,
            Register::GerrorIrqCfg1 => self.gerror_irq_cfg1.into(),
            Register::GerrorIrqCfg2 => self.gerror_irq_cfg2.into(),
            Register::StrtabBase => self.strtab_base,
            Register::StrtabBaseCfg => self.strtab_base_cfg.into(),
            Register::CmdqBase => self.cmdq_base,
            Register::CmdqProd => self.cmdq_prod.into(),
            Register::CmdqCons => self.cmdq_cons.into(),
            Register::EventqBase => self.eventq_base,
            Register::EventqIrqCfg0 => self.eventq_irq_cfg0,
            Register::EventqIrqCfg1 => self.eventq_irq_cfg1.into(),
            Register::EventqIrqCfg2 => self.eventq_irq_cfg2.into(),
            Register::EventqProd => self.eventq_prod.into(),
            Register::EventqCons => self.eventq_cons.into(),
            Register::PriqBase => self.priq_base,
            Register::PriqIrqCfg0 => self.priq_irq_cfg0,
            Register::PriqIrqCfg1 => self.priq_irq_cfg1.into(),
            Register::PriqIrqCfg2 => self.priq_irq_cfg2.into(),
            Register::PriqProd => self.priq_prod.into(),
            Register::PriqCons => self.priq_cons.into(),
            // IDR2 (no VATOS), IDR4 (IMPDEF), STATUSR (no DORMHINT), AGBPA (no attribute
            // overrides): zero.
            _ => 0,
        }
    }

    /// Whether `reg` exists in this configuration (PRI registers need IDR0.PRI).
    fn present(&self, reg: Register) -> bool {
        let pri = Idr0::from_bits(self.idr0).pri();
        !matches!(
            reg,
            Register::PriqBase
                | Register::PriqIrqCfg0
                | Register::PriqIrqCfg1
                | Register::PriqIrqCfg2
                | Register::PriqProd
                | Register::PriqCons
        ) || pri
    }

    /// A 32-bit read at `offset` (RAZ for reserved offsets).
    pub fn read32(&self, offset: u64) -> u32 {
        let Some((reg, inside)) = locate(offset) else {
            return 0;
        };
        if !self.present(reg) {
            return 0;
        }
        let v = self.value(reg);
        (v >> (8 * inside)) as u32
    }
}

/// The register at `offset` (4-byte aligned) and the byte offset inside it.
fn locate(offset: u64) -> Option<(Register, u32)> {
    if !offset.is_multiple_of(4) {
        return None;
    }
    let off = u32::try_from(offset).ok()?;
    let (reg, inside) = Register::containing(off)?;
    (inside % 4 == 0).then_some((reg, inside))
}

/// A 32-bit write.
pub(crate) fn write32(st: &mut State, offset: u64, value: u32) -> WriteEffect {
    let Some((reg, inside)) = locate(offset) else {
        return WriteEffect::default();
    };
    if !st.regs.present(reg) {
        return WriteEffect::default();
    }
    match reg.width() {
        Width::Bits32 => write_reg(st, reg, u64::from(value)),
        Width::Bits64 => {
            let old = st.regs.value(reg);
            let new = if inside == 0 {
                (old & !0xFFFF_FFFF) | u64::from(value)
            } else {
                (old & 0xFFFF_FFFF) | (u64::from(value) << 32)
            };
            write_reg(st, reg, new)
        }
    }
}

/// A 64-bit write: a 64-bit register at once, or two 32-bit registers low then high.
pub(crate) fn write64(st: &mut State, offset: u64, value: u64) -> WriteEffect {
    if let Some((reg, 0)) = locate(offset)
        && reg.width() == Width::Bits64
    {
        if !st.regs.present(reg) {
            return WriteEffect::default();
        }
        return write_reg(st, reg, value);
    }
    let a = write32(st, offset, value as u32);
    let b = write32(st, offset.wrapping_add(4), (value >> 32) as u32);
    WriteEffect {
        kick_cmdq: a.kick_cmdq || b.kick_cmdq,
    }
}

/// A full-width write of `reg`.
fn write_reg(st: &mut State, reg: Register, value: u64) -> WriteEffect {
    let mut effect = WriteEffect::default();
    let v32 = value as u32;
    let cr0 = st.regs.cr0();
    let r = &mut st.regs;
    match reg {
        Register::Cr0 => {
            let new = v32 & r.cr0_mask;
            let was = Cr0::from_bits(r.cr0ack);
            r.cr0 = new;
            // The update completes immediately; enabling a queue whose base is unusable is
            // acknowledged all the same (errors surface when the queue is accessed).
            r.cr0ack = new;
            let now = Cr0::from_bits(new);
            if was.smmuen() && !now.smmuen() {
                // Translation turned off: stalled transactions are terminated.
                let resolved = st.stalls.terminate_all();
                st.pending.extend(resolved);
            }
            if now.cmdqen() {
                effect.kick_cmdq = true;
            }
        }
        // CR1 must not change while a queue or SMMUEN is enabled.
        Register::Cr1 if cr0.into_bits() & 0xF == 0 => r.cr1 = v32 & CR1_MASK,
        Register::Cr2 if !cr0.smmuen() => {
            r.cr2 = v32 & CR2_MASK;
        }
        Register::Gbpa if v32 & GBPA_UPDATE != 0 => {
            // The update completes at once, so UPDATE reads back as 0.
            r.gbpa = v32 & GBPA_MASK;
        }
        Register::IrqCtrl => {
            r.irq_ctrl = v32 & r.irq_ctrl_mask;
            r.irq_ctrlack = r.irq_ctrl;
        }
        Register::Gerrorn => {
            let before = r.gerror_active();
            r.gerrorn = v32 & Gerror::ERROR_MASK;
            let after = r.gerror_active();
            if before.cmdq_err() && !after.cmdq_err() {
                // Acknowledged: the queue restarts from CONS (ERR keeps its last value).
                effect.kick_cmdq = true;
            }
        }
        Register::GerrorIrqCfg0 => r.gerror_irq_cfg0 = value & IRQ_CFG0_MASK,
        Register::GerrorIrqCfg1 => r.gerror_irq_cfg1 = v32,
        Register::GerrorIrqCfg2 => r.gerror_irq_cfg2 = v32 & IRQ_CFG2_MASK,
        Register::EventqIrqCfg0 => r.eventq_irq_cfg0 = value & IRQ_CFG0_MASK,
        Register::EventqIrqCfg1 => r.eventq_irq_cfg1 = v32,
        Register::EventqIrqCfg2 => r.eventq_irq_cfg2 = v32 & IRQ_CFG2_MASK,
        Register::PriqIrqCfg0 => r.priq_irq_cfg0 = value & IRQ_CFG0_MASK,
        Register::PriqIrqCfg1 => r.priq_irq_cfg1 = v32,
        Register::PriqIrqCfg2 => r.priq_irq_cfg2 = v32 & (IRQ_CFG2_MASK | (1 << 31)),
        Register::StrtabBase if !cr0.smmuen() => {
            r.strtab_base = value & STRTAB_BASE_MASK;
        }
        Register::StrtabBaseCfg if !cr0.smmuen() => {
            r.strtab_base_cfg = v32 & STRTAB_CFG_MASK;
        }
        Register::CmdqBase if !cr0.cmdqen() => {
            r.cmdq_base = value & QUEUE_BASE_MASK;
        }
        Register::CmdqProd => {
            r.cmdq_prod = v32 & INDEX_MASK;
            effect.kick_cmdq = true;
        }
        Register::CmdqCons if !cr0.cmdqen() => {
            // ERR is read-only.
            r.cmdq_cons = (r.cmdq_cons & !INDEX_MASK) | (v32 & INDEX_MASK);
        }
        Register::EventqBase if !cr0.eventqen() => {
            r.eventq_base = value & QUEUE_BASE_MASK;
        }
        Register::EventqProd if !cr0.eventqen() => {
            r.eventq_prod = v32 & (INDEX_MASK | OVFLG);
        }
        Register::EventqCons => r.eventq_cons = v32 & (INDEX_MASK | OVFLG),
        Register::PriqBase if !cr0.priqen() => {
            r.priq_base = value & QUEUE_BASE_MASK;
        }
        Register::PriqProd if !cr0.priqen() => {
            r.priq_prod = v32 & (INDEX_MASK | OVFLG);
        }
        Register::PriqCons => r.priq_cons = v32 & (INDEX_MASK | OVFLG),
        // Read-only and unimplemented registers ignore writes.
        _ => {}
    }
    effect
}

/// Sends the interrupt of `line`: the MSI configured in `cfg0`/`cfg1` if its address is not
/// zero, and the wired line.
pub(crate) fn signal_irq(smmu: &Smmu, st: &mut State, line: sva_smmuv3_spec::mmio::IrqLine) {
    use sva_smmuv3_spec::control::IrqCfg0;
    use sva_smmuv3_spec::mmio::IrqLine;
    let (cfg0, data, abt) = match line {
        IrqLine::EventQueue => (
            st.regs.eventq_irq_cfg0,
            st.regs.eventq_irq_cfg1,
            Gerror::new().with_msi_eventq_abt_err(true),
        ),
        IrqLine::PriQueue => (
            st.regs.priq_irq_cfg0,
            st.regs.priq_irq_cfg1,
            Gerror::new().with_msi_priq_abt_err(true),
        ),
        IrqLine::GlobalError => (
            st.regs.gerror_irq_cfg0,
            st.regs.gerror_irq_cfg1,
            Gerror::new().with_msi_gerror_abt_err(true),
        ),
        IrqLine::CmdSync => (0, 0, Gerror::new()),
    };
    let addr = IrqCfg0::from_bits(cfg0).addr_pa();
    if addr.raw() != 0 {
        st.stats.msi_writes += 1;
        if smmu.mem().write(addr, &data.to_le_bytes()).is_err() {
            raise_gerror(smmu, st, abt.into_bits());
        }
    }
    st.pending.push(Notify::Irq(line));
}

/// Raises global errors and, if enabled, the GERROR interrupt (MSI and wired line). An
/// aborting GERROR MSI raises MSI_GERROR_ABT_ERR once (it is then active, so no recursion).
pub(crate) fn raise_gerror(smmu: &Smmu, st: &mut State, bits: u32) {
    if st.regs.raise_gerror(bits) && st.regs.irq_ctrl().gerror_irqen() {
        signal_irq(smmu, st, sva_smmuv3_spec::mmio::IrqLine::GlobalError);
    }
}
