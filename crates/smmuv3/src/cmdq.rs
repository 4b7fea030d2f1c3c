//! The Command queue (§3.5, §4): the SMMU is the consumer.
//!
//! Commands run synchronously on the thread that wrote CMDQ_PROD (or enabled the queue, or
//! acknowledged an error). Only one thread consumes at a time; a write made while another is
//! consuming is picked up by that one. Messages to endpoints (ATC invalidation, PRI
//! responses, stall resolutions) are delivered with the state lock released, before the next
//! command runs, so a later CMD_SYNC completes only after them.

use sva_smmuv3_spec::command::{Command, ResumeAction, SyncCs, TlbiGranule, TlbiRange};
use sva_smmuv3_spec::control::Gerror;
use sva_smmuv3_spec::mmio::IrqLine;
use sva_smmuv3_spec::queue::{CMDQ_ENTRY_BYTES, Cerror, QueueBase, QueueIndex};
use sva_vmsa::Va;

use crate::regs::{Regs, raise_gerror};
use crate::translate::NO_VMID;
use crate::{BroadcastTlbi, Notify, Pa, Smmu, State};

const INDEX_MASK: u32 = 0x000F_FFFF;
/// Commands consumed per lock hold.
const BATCH: usize = 256;

/// Consumes commands until the queue is empty, disabled or stopped by an error.
pub(crate) fn run<'a>(smmu: &'a Smmu, mut st: crate::StateGuard<'a>) {
    if st.cmdq_busy {
        smmu.unlock_and_deliver(st);
        return;
    }
    st.cmdq_busy = true;
    loop {
        let more = step(smmu, &mut st);
        let pending = std::mem::take(&mut st.pending);
        if !more {
            st.cmdq_busy = false;
            drop(st);
            smmu.deliver(pending);
            return;
        }
        drop(st);
        {
            // If a callback panics, the queue must not stay owned by this thread.
            let guard = BusyGuard(smmu);
            smmu.deliver(pending);
            std::mem::forget(guard);
        }
        st = smmu.lock();
    }
}

/// Releases command queue ownership when a callback unwinds.
struct BusyGuard<'a>(&'a Smmu);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.lock().cmdq_busy = false;
    }
}

/// Consumes up to [`BATCH`] commands, stopping after one that messages an endpoint. Returns
/// whether there may be more to do.
fn step(smmu: &Smmu, st: &mut State) -> bool {
    for _ in 0..BATCH {
        if !st.regs.cr0().cmdqen() || st.regs.gerror_active().cmdq_err() {
            return false;
        }
        let log2 = Regs::queue_log2(st.regs.cmdq_base, smmu.config.cmdq_log2);
        let (Ok(prod), Ok(cons)) = (
            QueueIndex::new(log2, st.regs.cmdq_prod),
            QueueIndex::new(log2, st.regs.cmdq_cons & INDEX_MASK),
        ) else {
            return false;
        };
        if QueueIndex::is_empty(prod, cons) {
            return false;
        }
        let base = QueueBase::from_bits(st.regs.cmdq_base).addr_pa().raw();
        let addr = base + cons.byte_offset(CMDQ_ENTRY_BYTES);
        let words = match (
            smmu.mem().load_u64(Pa(addr)),
            smmu.mem().load_u64(Pa(addr + 8)),
        ) {
            (Ok(a), Ok(b)) => [a, b],
            _ => {
                stop(smmu, st, cons, Cerror::Abt);
                return false;
            }
        };
        let Ok(cmd) = Command::decode(words) else {
            stop(smmu, st, cons, Cerror::Ill);
            return false;
        };
        match execute(smmu, st, &cmd) {
            Err(e) => {
                stop(smmu, st, cons, e);
                return false;
            }
            Ok(messaged) => {
                st.regs.cmdq_cons = cons.next().raw();
                *st.stats.commands.entry(cmd.name()).or_default() += 1;
                if messaged {
                    return true;
                }
            }
        }
    }
    true
}

/// Stops the queue on the command at `cons` with error `err` (§7.1).
fn stop(smmu: &Smmu, st: &mut State, cons: QueueIndex, err: Cerror) {
    st.regs.cmdq_cons = cons.raw() | (u32::from(err.into_bits()) << 24);
    st.stats.command_errors += 1;
    raise_gerror(smmu, st, Gerror::new().with_cmdq_err(true).into_bits());
}

/// The `[start, end)` span of an address-based invalidation (§4.4.1): one address without a
/// range (TG = 0, or no IDR3.RIL), else `(NUM + 1) * 2^SCALE` granules.
fn tlbi_span(addr: Va, range: TlbiRange, ril: bool) -> (u64, u64) {
    let start = addr.raw();
    match range.bytes() {
        Some(len) if ril && range.tg != TlbiGranule::Any => {
            let end = u128::from(start) + len;
            (start, u64::try_from(end).unwrap_or(u64::MAX))
        }
        _ => (start, start.saturating_add(1)),
    }
}

/// Executes one command. `Ok(true)` if it queued a message to an endpoint.
fn execute(smmu: &Smmu, st: &mut State, cmd: &Command) -> Result<bool, Cerror> {
    let config = &smmu.config;
    let asid_mask = if config.asid16 { 0xFFFF } else { 0xFF };
    match *cmd {
        Command::PrefetchConfig { sid, ssid } => {
            // Fetch into the configuration cache; errors are not reported.
            if let Ok(ste) = smmu.stream(st, sid) {
                let _ = smmu.context(st, sid, &ste, ssid);
            }
        }
        Command::PrefetchAddr { .. } => {}
        Command::CfgiSte { sid, .. } => st.cfg_cache.invalidate_sids(sid.0, sid.0),
        Command::CfgiSteRange { sid, range } => {
            let span = 1u64 << (u32::from(range.min(31)) + 1);
            let first = u64::from(sid.0) & !(span - 1);
            let last = (first + span - 1).min(u64::from(u32::MAX));
            st.cfg_cache.invalidate_sids(first as u32, last as u32);
        }
        Command::CfgiAll => st.cfg_cache.invalidate_all(),
        Command::CfgiCd { sid, ssid, .. } => st.cfg_cache.invalidate_cd(sid.0, ssid.0),
        Command::CfgiCdAll { sid } => st.cfg_cache.invalidate_cds(sid.0),
        // Without stage 2 every entry has the same VMID: NH_ALL is everything.
        Command::TlbiNhAll { .. } | Command::TlbiNsnhAll => st.iotlb.invalidate_all(),
        Command::TlbiNhAsid { asid, .. } => st
            .iotlb
            .invalidate_tag((NO_VMID, Some(asid.0 & asid_mask)), |_| false),
        Command::TlbiNhVa {
            asid, addr, range, ..
        } => {
            let (start, end) = tlbi_span(addr, range, config.range_inv);
            let asid = asid.0 & asid_mask;
            st.iotlb
                .invalidate_range((NO_VMID, Some(asid)), start, end, |_| false);
            st.iotlb
                .invalidate_range((NO_VMID, None), start, end, |_| false);
        }
        Command::TlbiNhVaa { addr, range, .. } => {
            let (start, end) = tlbi_span(addr, range, config.range_inv);
            st.iotlb.invalidate_range_all_asids(NO_VMID, start, end);
        }
        // No EL2 (IDR0.HYP = 0), no EL3 on the Non-secure queue, no stage 2, no VMS.
        Command::TlbiEl2All
        | Command::TlbiEl2Asid { .. }
        | Command::TlbiEl2Va { .. }
        | Command::TlbiEl2Vaa { .. }
        | Command::TlbiEl3All
        | Command::TlbiEl3Va { .. }
        | Command::TlbiS12Vmall { .. }
        | Command::TlbiS2Ipa { .. }
        | Command::CfgiVmsPidm { .. } => return Err(Cerror::Ill),
        Command::AtcInv {
            sid,
            ssid,
            addr,
            size,
            ..
        } => {
            if !config.ats {
                return Err(Cerror::Ill);
            }
            let (addr, size) = if size >= 52 {
                (0, u64::MAX)
            } else {
                let bytes = 0x1000u64 << size;
                (addr.raw() & !(bytes - 1), bytes)
            };
            st.pending.push(Notify::AtcInv {
                sid,
                ssid,
                addr,
                size,
            });
            return Ok(true);
        }
        Command::PriResp {
            sid,
            ssid,
            prg_index,
            resp,
        } => {
            if !config.pri {
                return Err(Cerror::Ill);
            }
            st.pending.push(Notify::PriResp {
                sid,
                ssid,
                prg_index,
                resp,
            });
            return Ok(true);
        }
        Command::Resume { sid, stag, action } => {
            if !config.stall {
                return Err(Cerror::Ill);
            }
            let retry = matches!(action, ResumeAction::Retry);
            if let Some(n) = st.stalls.resume(sid, stag, retry) {
                st.pending.push(n);
                return Ok(true);
            }
        }
        Command::StallTerm { sid } => {
            if !config.stall {
                return Err(Cerror::Ill);
            }
            let resolved = st.stalls.terminate_sid(sid);
            if !resolved.is_empty() {
                st.pending.extend(resolved);
                return Ok(true);
            }
        }
        Command::Sync {
            cs,
            msi_data,
            msi_addr,
            ..
        } => {
            st.stats.syncs += 1;
            // Completion means no transaction still uses what earlier commands invalidated.
            smmu.quiesce();
            match cs {
                SyncCs::Irq => {
                    if msi_addr.raw() != 0 {
                        st.stats.msi_writes += 1;
                        if smmu.mem().write(msi_addr, &msi_data.to_le_bytes()).is_err() {
                            raise_gerror(
                                smmu,
                                st,
                                Gerror::new().with_msi_cmdq_abt_err(true).into_bits(),
                            );
                        }
                    }
                    st.pending.push(Notify::Irq(IrqLine::CmdSync));
                }
                SyncCs::None | SyncCs::Sev => {}
                SyncCs::Reserved(_) => return Err(Cerror::Ill),
            }
        }
    }
    Ok(false)
}

impl Smmu {
    /// A broadcast TLB invalidation from a PE (DVM message). Applied to the IOTLB entries of
    /// contexts with CD.ASET = 0 when IDR0.BTM is advertised and software has not opted out
    /// with SMMU_CR2.PTM = 1 (private TLB maintenance); ignored otherwise.
    pub fn broadcast_tlbi(&self, op: BroadcastTlbi) {
        if !self.config.btm {
            return;
        }
        let mut st = self.lock();
        if sva_smmuv3_spec::control::Cr2::from_bits(st.regs.cr2).ptm() {
            drop(st);
            return;
        }
        let asid_mask = if self.config.asid16 { 0xFFFF } else { 0xFF };
        let aset = |e: &crate::iotlb::TlbEntry| e.aset;
        match op {
            BroadcastTlbi::Va { asid, va, size, .. } => {
                let end = va.saturating_add(size.max(1));
                st.iotlb
                    .invalidate_range((NO_VMID, Some(asid.0 & asid_mask)), va, end, aset);
                st.iotlb.invalidate_range((NO_VMID, None), va, end, aset);
            }
            BroadcastTlbi::Asid(asid) => st
                .iotlb
                .invalidate_tag((NO_VMID, Some(asid.0 & asid_mask)), aset),
            BroadcastTlbi::All => st.iotlb.invalidate_unless(aset),
        }
        self.unlock_and_deliver(st);
        // The broadcast completes (the PE's DSB) only when no transaction still uses an
        // entry it removed.
        self.quiesce();
    }
}
