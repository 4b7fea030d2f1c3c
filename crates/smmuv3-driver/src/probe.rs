//! Probe and reset (§6.3, and the initialisation sequence of §3.3 / Linux
//! `arm_smmu_device_hw_probe` + `arm_smmu_device_reset`).
//!
//! 1. Read SMMU_IDR0/1/3/5 and negotiate features with [`ProbeOptions`].
//! 2. Disable: CR0 = 0 and wait for CR0ACK; set GBPA.ABORT (UPDATE handshake) so that no
//!    traffic passes while the SMMU is disabled; acknowledge stale global errors.
//! 3. Allocate the Command, Event and PRI queues and the Stream table (every STE valid and
//!    aborting); program CR1, CR2, STRTAB_BASE(_CFG) and the queue registers.
//! 4. Enable the Command queue; CMD_CFGI_ALL, CMD_TLBI_EL2_ALL (with HYP), CMD_TLBI_NSNH_ALL,
//!    CMD_SYNC.
//! 5. Enable the Event queue, then the PRI queue; set ATSCHK; program IRQ_CTRL (waiting for
//!    IRQ_CTRLACK); finally set SMMUEN. Each CR0 write waits for CR0ACK.

use std::collections::BTreeMap;
use std::sync::Arc;
use sva_sync::Mutex;

use sva_physmem::Ram;
use sva_smmuv3_spec::command::Command;
use sva_smmuv3_spec::control::{Cr0, Cr1, Cr2, Gbpa, IrqCtrl};
use sva_smmuv3_spec::encoding::{Cr1Cacheability, Granule, Shareability};
use sva_smmuv3_spec::idr::{Httu, Idr0, Idr1, Idr3, Idr5, StLevel, StallModel, TableFormats};
use sva_smmuv3_spec::mmio::Mmio;
use sva_smmuv3_spec::queue::{
    CMDQ_ENTRY_BYTES, EVENTQ_ENTRY_BYTES, MAX_LOG2SIZE, PRIQ_ENTRY_BYTES, QueueBase,
};
use sva_smmuv3_spec::ste::{StrtabBase, StrtabBaseCfg, StrtabFmt};
use sva_smmuv3_spec::{Ste, regs};

use crate::cdtab::CD_LINEAR_MAX_BITS;
use crate::cmdq::Cmdq;
use crate::eventq::InQueue;
use crate::strtab::{
    LINEAR_STRTAB_CAP_SID_BITS, LINEAR_STRTAB_MAX_SID_BITS, Layout, STRTAB_L1_MAX_BITS,
    STRTAB_SPLIT, StreamTable, abort_ste,
};
use crate::{
    Delivery, Error, Features, Poll, ProbeOptions, Result, SmmuDriver, Stats, SyncMode, lock,
};

/// Decides the features from the ID registers and the options.
pub(crate) fn negotiate(
    idr0: Idr0,
    idr1: Idr1,
    idr3: Idr3,
    idr5: Idr5,
    opts: &ProbeOptions,
) -> Result<Features> {
    if !matches!(idr0.ttf(), TableFormats::AArch64 | TableFormats::Both) {
        return Err(Error::Unsupported("VMSAv8-64 translation tables"));
    }
    if !idr0.s1p() {
        return Err(Error::Unsupported("stage 1 translation"));
    }
    if idr1.tables_preset() || idr1.queues_preset() || idr1.rel() {
        return Err(Error::Unsupported(
            "programmable table and queue bases (IDR1.TABLES_PRESET/QUEUES_PRESET/REL set)",
        ));
    }
    let mut granules = Vec::new();
    if idr5.gran4k() {
        granules.push(Granule::Size4K);
    }
    if idr5.gran16k() {
        granules.push(Granule::Size16K);
    }
    if idr5.gran64k() {
        granules.push(Granule::Size64K);
    }
    if granules.is_empty() {
        return Err(Error::Unsupported("any translation granule"));
    }
    let cmdq_log2 = idr1.cmdqs().min(MAX_LOG2SIZE).min(opts.cmdq_log2);
    if cmdq_log2 == 0 {
        return Err(Error::Unsupported(
            "a Command queue of at least two entries",
        ));
    }
    let eventq_log2 = idr1.eventqs().min(MAX_LOG2SIZE).min(opts.eventq_log2);
    let pri = idr0.pri() && opts.pri;
    let priq_log2 = if pri {
        idr1.priqs().min(MAX_LOG2SIZE).min(opts.priq_log2)
    } else {
        0
    };
    let (hw_stall, stall_forced) = match idr0.stall_model() {
        StallModel::StallAndTerminate => (true, false),
        StallModel::StallForced => (true, true),
        StallModel::TerminateOnly | StallModel::Reserved(_) => (false, false),
    };
    let (ha, hd) = match idr0.httu() {
        Httu::None => (false, false),
        Httu::AccessFlag => (true, false),
        Httu::AccessDirty | Httu::AccessDirtyTable => (true, true),
    };
    let two_level_cd = idr0.cd2l() && opts.two_level_cd;
    let mut ssid_bits = idr1.ssidsize().min(20).min(opts.max_ssid_bits);
    if !two_level_cd {
        ssid_bits = ssid_bits.min(CD_LINEAR_MAX_BITS);
    }
    let hw_2lvl = matches!(idr0.st_level(), StLevel::TwoLevel) && opts.two_level_strtab;
    let mut sid_bits = idr1.sidsize().min(32).min(opts.max_sid_bits);
    let two_level_strtab = hw_2lvl && sid_bits > LINEAR_STRTAB_MAX_SID_BITS;
    if two_level_strtab {
        sid_bits = sid_bits.min(STRTAB_SPLIT + STRTAB_L1_MAX_BITS);
    } else {
        sid_bits = sid_bits.min(LINEAR_STRTAB_CAP_SID_BITS);
    }
    Ok(Features {
        ats: idr0.ats() && opts.ats,
        atschk: idr0.ats() && opts.ats && opts.atschk,
        pri,
        stall: hw_stall && (opts.stall || stall_forced),
        hw_stall,
        stall_forced,
        ha: ha && opts.httu,
        hd: hd && opts.httu,
        btm: idr0.btm() && opts.btm,
        hyp: idr0.hyp(),
        coherent: idr0.cohacc(),
        two_level_strtab,
        strtab_split: if two_level_strtab { STRTAB_SPLIT } else { 0 },
        two_level_cd,
        range_inv: idr3.ril() && opts.range_inv,
        sid_bits,
        ssid_bits,
        asid_bits: if idr0.asid16() { 16 } else { 8 },
        oas: idr5.oas(),
        granules,
        cmdq_log2,
        eventq_log2,
        priq_log2,
        msi_sync: opts.sync == SyncMode::Msi && idr0.msi(),
    })
}

impl SmmuDriver {
    /// Probes and resets the SMMU behind `mmio`, allocating its tables and queues in `ram`,
    /// and enables it with every stream aborting.
    pub fn probe(mmio: Arc<dyn Mmio>, ram: Arc<Ram>, opts: ProbeOptions) -> Result<Arc<Self>> {
        let r = |off: u32| mmio.read32(u64::from(off));
        let idr0 = Idr0::from_bits(r(regs::IDR0));
        let idr1 = Idr1::from_bits(r(regs::IDR1));
        let idr3 = Idr3::from_bits(r(regs::IDR3));
        let idr5 = Idr5::from_bits(r(regs::IDR5));
        let features = negotiate(idr0, idr1, idr3, idr5, &opts)?;

        let alloc = |bytes: u64| -> Result<crate::Pa> {
            let size = bytes.max(4096).next_power_of_two();
            Ok(ram.alloc(size)?)
        };
        let cmdq_base = alloc(CMDQ_ENTRY_BYTES << features.cmdq_log2)?;
        let evtq_base = alloc(EVENTQ_ENTRY_BYTES << features.eventq_log2)?;
        let msi_word = if features.msi_sync {
            Some(alloc(4096)?)
        } else {
            None
        };
        let priq = if features.pri {
            Some(InQueue::new(
                alloc(PRIQ_ENTRY_BYTES << features.priq_log2)?,
                features.priq_log2,
                regs::PRIQ_PROD,
                regs::PRIQ_CONS,
            )?)
        } else {
            None
        };
        let layout = if features.two_level_strtab {
            let l1_entries = 1u64 << (features.sid_bits - features.strtab_split);
            Layout::TwoLevel {
                l1: alloc(l1_entries * 8)?,
                split: features.strtab_split,
                l2: BTreeMap::new(),
            }
        } else {
            let entries = 1u64 << features.sid_bits;
            let base = alloc(entries * Ste::BYTES)?;
            let abort = abort_ste().words()[0];
            for i in 0..entries {
                ram.memory().store_u64(base + i * Ste::BYTES, abort)?;
            }
            Layout::Linear { base }
        };
        let drv = Self {
            mmio,
            ram,
            poll_timeout: opts.poll_timeout,
            cmdq: Mutex::new(Cmdq::new(cmdq_base, features.cmdq_log2, msi_word)?),
            eventq: Mutex::new(InQueue::new(
                evtq_base,
                features.eventq_log2,
                regs::EVENTQ_PROD,
                regs::EVENTQ_CONS,
            )?),
            priq: Mutex::new(priq),
            streams: Mutex::new(StreamTable {
                layout,
                sid_bits: features.sid_bits,
                streams: BTreeMap::new(),
            }),
            asid_granules: Mutex::new(BTreeMap::new()),
            stats: Mutex::new(Stats::default()),
            events: Mutex::new(Delivery::default()),
            page_requests: Mutex::new(Delivery::default()),
            deliveries: std::sync::atomic::AtomicU32::new(0),
            features,
        };
        drv.reset()?;
        Ok(Arc::new(drv))
    }

    fn wait_reg(&self, off: u32, what: &'static str, ok: impl Fn(u32) -> bool) -> Result<u32> {
        let mut poll = Poll::new(self.poll_timeout);
        loop {
            let v = self.r32(off);
            if ok(v) {
                return Ok(v);
            }
            if !poll.wait() {
                return Err(Error::Timeout(what));
            }
        }
    }

    /// Writes CR0 and waits until CR0ACK reports the same enables.
    fn write_cr0(&self, cr0: Cr0) -> Result<()> {
        self.w32(regs::CR0, cr0.into_bits());
        // Compare the defined enables only (bits 4:0 and VMW).
        let mask = 0x1DF;
        self.wait_reg(regs::CR0ACK, "CR0ACK", |v| {
            v & mask == cr0.into_bits() & mask
        })?;
        Ok(())
    }

    fn update_gbpa(&self, gbpa: Gbpa) -> Result<()> {
        self.wait_reg(regs::GBPA, "GBPA.UPDATE", |v| !Gbpa::from_bits(v).update())?;
        self.w32(regs::GBPA, gbpa.with_update(true).into_bits());
        self.wait_reg(regs::GBPA, "GBPA.UPDATE", |v| !Gbpa::from_bits(v).update())?;
        Ok(())
    }

    /// Points a queue's BASE, PROD and CONS registers (`[base, prod, cons]`) at an empty
    /// queue of `2^log2` entries at `base`, with the RA/WA hint set (§6.3.26 to §6.3.29).
    fn program_queue(&self, [base_reg, prod_reg, cons_reg]: [u32; 3], base: crate::Pa, log2: u8) {
        self.w64(
            base_reg,
            QueueBase::new()
                .with_rwa(true)
                .with_addr_pa(base)
                .with_log2size(log2)
                .into_bits(),
        );
        self.w32(prod_reg, 0);
        self.w32(cons_reg, 0);
    }

    fn write_irq_ctrl(&self, ctrl: IrqCtrl) -> Result<()> {
        self.w32(regs::IRQ_CTRL, ctrl.into_bits());
        self.wait_reg(regs::IRQ_CTRLACK, "IRQ_CTRLACK", |v| {
            v & 0x7 == ctrl.into_bits() & 0x7
        })?;
        Ok(())
    }

    /// Disables the SMMU (CR0 = 0, waiting for CR0ACK) with incoming traffic aborted
    /// (GBPA.ABORT), as on driver removal or shutdown. The driver is unusable afterwards.
    pub fn disable(&self) -> Result<()> {
        self.update_gbpa(Gbpa::from_bits(self.r32(regs::GBPA)).with_abort(true))?;
        self.write_irq_ctrl(IrqCtrl::new())?;
        self.write_cr0(Cr0::new())
    }

    fn reset(&self) -> Result<()> {
        let f = &self.features;
        // Disable everything, and abort incoming traffic while disabled.
        self.write_cr0(Cr0::new())?;
        let gbpa = Gbpa::from_bits(self.r32(regs::GBPA)).with_abort(true);
        self.update_gbpa(gbpa)?;
        // Acknowledge stale global errors.
        self.w32(regs::GERRORN, self.r32(regs::GERROR));

        // Table and queue attributes; global controls.
        let (cache, sh) = if f.coherent {
            (Cr1Cacheability::WriteBack, Shareability::InnerShareable)
        } else {
            (Cr1Cacheability::NonCacheable, Shareability::OuterShareable)
        };
        let cr1 = Cr1::new()
            .with_queue_ic(cache)
            .with_queue_oc(cache)
            .with_queue_sh(sh)
            .with_table_ic(cache)
            .with_table_oc(cache)
            .with_table_sh(sh);
        self.w32(regs::CR1, cr1.into_bits());
        let cr2 = Cr2::new().with_recinvsid(true).with_ptm(!f.btm);
        self.w32(regs::CR2, cr2.into_bits());

        // Stream table.
        {
            let table = lock(&self.streams);
            let (base, cfg) = match &table.layout {
                Layout::Linear { base } => (
                    *base,
                    StrtabBaseCfg::new()
                        .with_fmt(StrtabFmt::Linear)
                        .with_log2size(f.sid_bits),
                ),
                Layout::TwoLevel { l1, split, .. } => (
                    *l1,
                    StrtabBaseCfg::new()
                        .with_fmt(StrtabFmt::TwoLevel)
                        .with_log2size(f.sid_bits)
                        .with_split(*split),
                ),
            };
            self.w64(
                regs::STRTAB_BASE,
                StrtabBase::new()
                    .with_ra(true)
                    .with_addr_pa(base)
                    .into_bits(),
            );
            self.w32(regs::STRTAB_BASE_CFG, cfg.into_bits());
        }

        // Command queue.
        {
            let q = lock(&self.cmdq);
            self.program_queue(
                [regs::CMDQ_BASE, regs::CMDQ_PROD, regs::CMDQ_CONS],
                q.base,
                q.log2,
            );
        }
        let mut cr0 = Cr0::new().with_cmdqen(true);
        self.write_cr0(cr0)?;

        // Invalidate all cached configuration and TLB entries.
        let mut cmds = vec![Command::CfgiAll];
        if f.hyp {
            cmds.push(Command::TlbiEl2All);
        }
        cmds.push(Command::TlbiNsnhAll);
        self.submit_batch(&cmds)?;

        // Event queue.
        {
            let q = lock(&self.eventq);
            self.program_queue(
                [regs::EVENTQ_BASE, regs::EVENTQ_PROD, regs::EVENTQ_CONS],
                q.base,
                q.log2,
            );
        }
        cr0 = cr0.with_eventqen(true);
        self.write_cr0(cr0)?;

        // PRI queue.
        if let Some(q) = lock(&self.priq).as_ref() {
            self.program_queue(
                [regs::PRIQ_BASE, regs::PRIQ_PROD, regs::PRIQ_CONS],
                q.base,
                q.log2,
            );
        }
        if f.pri {
            cr0 = cr0.with_priqen(true);
            self.write_cr0(cr0)?;
        }

        if f.atschk {
            cr0 = cr0.with_atschk(true);
            self.write_cr0(cr0)?;
        }

        // Interrupts: wired lines (no MSI addresses), then enable.
        self.write_irq_ctrl(IrqCtrl::new())?;
        self.w64(regs::GERROR_IRQ_CFG0, 0);
        self.w64(regs::EVENTQ_IRQ_CFG0, 0);
        if f.pri {
            self.w64(regs::PRIQ_IRQ_CFG0, 0);
        }
        self.write_irq_ctrl(
            IrqCtrl::new()
                .with_gerror_irqen(true)
                .with_eventq_irqen(true)
                .with_priq_irqen(f.pri),
        )?;

        cr0 = cr0.with_smmuen(true);
        self.write_cr0(cr0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;
    use sva_smmuv3_spec::idr::Vax;

    /// A register file that stores writes but never acknowledges anything unless told to:
    /// only for the error paths of probe.
    struct Fake {
        regs: Mutex<BTreeMap<u64, u64>>,
        ack_cr0: bool,
        ack_gbpa: bool,
        writes: AtomicU32,
    }

    impl Fake {
        fn new(idr0: Idr0, ack_cr0: bool, ack_gbpa: bool) -> Self {
            let mut m = BTreeMap::new();
            m.insert(u64::from(regs::IDR0), u64::from(idr0.into_bits()));
            let idr1 = Idr1::new()
                .with_sidsize(16)
                .with_ssidsize(20)
                .with_cmdqs(8)
                .with_eventqs(8)
                .with_priqs(8);
            m.insert(u64::from(regs::IDR1), u64::from(idr1.into_bits()));
            let idr5 = Idr5::new().with_gran4k(true).with_vax(Vax::Bits48);
            m.insert(u64::from(regs::IDR5), u64::from(idr5.into_bits()));
            Self {
                regs: Mutex::new(m),
                ack_cr0,
                ack_gbpa,
                writes: AtomicU32::new(0),
            }
        }
    }

    impl Mmio for Fake {
        fn read32(&self, offset: u64) -> u32 {
            *lock(&self.regs).get(&offset).unwrap_or(&0) as u32
        }
        fn write32(&self, offset: u64, value: u32) {
            self.writes.fetch_add(1, Ordering::Relaxed);
            let mut m = lock(&self.regs);
            m.insert(offset, u64::from(value));
            if offset == u64::from(regs::CR0) && self.ack_cr0 {
                m.insert(u64::from(regs::CR0ACK), u64::from(value));
            }
            if offset == u64::from(regs::GBPA) && self.ack_gbpa {
                m.insert(offset, u64::from(value & !(1 << 31)));
            }
        }
        fn read64(&self, offset: u64) -> u64 {
            *lock(&self.regs).get(&offset).unwrap_or(&0)
        }
        fn write64(&self, offset: u64, value: u64) {
            lock(&self.regs).insert(offset, value);
        }
    }

    fn good_idr0() -> Idr0 {
        Idr0::new()
            .with_s1p(true)
            .with_ttf(TableFormats::AArch64)
            .with_st_level(StLevel::TwoLevel)
            .with_cd2l(true)
    }

    fn opts() -> ProbeOptions {
        ProbeOptions {
            poll_timeout: Duration::from_millis(20),
            ..ProbeOptions::default()
        }
    }

    fn ram() -> Arc<Ram> {
        Arc::new(Ram::new(64 << 20).unwrap())
    }

    #[test]
    fn cr0ack_never_follows_is_a_timeout() {
        // CR0 and CR0ACK start at 0, so the disable is acknowledged; enabling the Command
        // queue never is.
        let fake = Arc::new(Fake::new(good_idr0(), false, true));
        let err = SmmuDriver::probe(fake.clone(), ram(), opts()).unwrap_err();
        assert_eq!(err, Error::Timeout("CR0ACK"));
        assert_eq!(lock(&fake.regs).get(&u64::from(regs::CR0)), Some(&0x8));
        assert!(fake.writes.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn gbpa_update_never_clears_is_a_timeout() {
        let fake = Arc::new(Fake::new(good_idr0(), true, false));
        let err = SmmuDriver::probe(fake, ram(), opts()).unwrap_err();
        assert_eq!(err, Error::Timeout("GBPA.UPDATE"));
    }

    #[test]
    fn commands_never_consumed_is_a_sync_timeout() {
        // Everything is acknowledged but CMDQ_CONS never moves.
        let fake = Arc::new(Fake::new(good_idr0(), true, true));
        let err = SmmuDriver::probe(fake, ram(), opts()).unwrap_err();
        assert!(matches!(err, Error::SyncTimeout { cons: 0, .. }), "{err:?}");
    }

    #[test]
    fn cr0ack_timeout_named() {
        // Pretend a previous owner left CR0 enabled, with CR0ACK stuck at enabled.
        let fake = Arc::new(Fake::new(good_idr0(), false, true));
        lock(&fake.regs).insert(u64::from(regs::CR0ACK), 0xD);
        let err = SmmuDriver::probe(fake, ram(), opts()).unwrap_err();
        assert_eq!(err, Error::Timeout("CR0ACK"));
    }

    #[test]
    fn no_aarch64_tables_is_unsupported() {
        let idr0 = good_idr0().with_ttf(TableFormats::AArch32);
        let fake = Arc::new(Fake::new(idr0, true, true));
        let err = SmmuDriver::probe(fake, ram(), opts()).unwrap_err();
        assert_eq!(err, Error::Unsupported("VMSAv8-64 translation tables"));
    }

    #[test]
    fn no_stage1_is_unsupported() {
        let fake = Arc::new(Fake::new(good_idr0().with_s1p(false), true, true));
        let err = SmmuDriver::probe(fake, ram(), opts()).unwrap_err();
        assert_eq!(err, Error::Unsupported("stage 1 translation"));
    }

    #[test]
    fn negotiation_respects_options_and_caps() {
        let idr0 = good_idr0()
            .with_ats(true)
            .with_pri(true)
            .with_httu(Httu::AccessDirty)
            .with_asid16(true);
        let idr1 = Idr1::new()
            .with_sidsize(31)
            .with_ssidsize(31)
            .with_cmdqs(19)
            .with_eventqs(19)
            .with_priqs(19);
        let idr3 = Idr3::new().with_ril(true);
        let idr5 = Idr5::new().with_gran4k(true).with_gran64k(true);
        let f = negotiate(idr0, idr1, idr3, idr5, &ProbeOptions::default()).unwrap();
        assert!(f.ats && f.pri && f.ha && f.hd && f.range_inv && f.two_level_strtab);
        assert_eq!(f.ssid_bits, 20);
        assert_eq!(f.sid_bits, STRTAB_SPLIT + STRTAB_L1_MAX_BITS);
        assert_eq!(f.asid_bits, 16);
        let off = ProbeOptions {
            ats: false,
            pri: false,
            httu: false,
            range_inv: false,
            two_level_cd: false,
            two_level_strtab: false,
            ..ProbeOptions::default()
        };
        let f = negotiate(idr0, idr1, idr3, idr5, &off).unwrap();
        assert!(!f.ats && !f.pri && !f.ha && !f.range_inv && !f.two_level_strtab);
        assert_eq!(f.ssid_bits, CD_LINEAR_MAX_BITS);
        assert_eq!(f.sid_bits, LINEAR_STRTAB_CAP_SID_BITS);
        // Presets are refused; a zero-sized Command queue too.
        let err = negotiate(idr0, idr1.with_queues_preset(true), idr3, idr5, &off);
        assert!(matches!(err, Err(Error::Unsupported(_))));
        let err = negotiate(idr0, idr1.with_cmdqs(0), idr3, idr5, &off);
        assert!(matches!(err, Err(Error::Unsupported(_))));
    }
}
