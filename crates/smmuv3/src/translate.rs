//! The translation path of a transaction (§3.2): GBPA when disabled, Stream table → STE,
//! CD table → CD, IOTLB, stage 1 walk with HTTU, faults as events, stalls.

use sva_physmem::PhysMemory;
use sva_smmuv3_spec::control::Cr2;
use sva_smmuv3_spec::event::{Event, EventId, FaultClass};
use sva_smmuv3_spec::ste::{Eats, S1Dss};
use sva_vmsa::{
    Access, AccessKind, Attributes, Descriptor, Fault, FaultKind, Httu, Translation, Va, walk,
};

use crate::config::{CachedSte, CfgFault, CtxDesc, S1Stream, StreamCfg};
use crate::iotlb::TlbEntry;
use crate::{Pa, Pasid, Smmu, State, StreamId, Transaction, TranslateOutcome, eventq};

/// The configuration a transaction resolves to. Stage 2 and nested contexts would be further
/// variants.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ctx {
    Abort,
    Bypass,
    Stage1 { s1: S1Stream, cd: CtxDesc },
}

/// Why [`Smmu::transact`] did not run the access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Terminated with an abort; `event` names the cause (recorded or not).
    Aborted {
        /// The fault or configuration error.
        event: Option<EventId>,
    },
    /// Stalled: the device waits for [`crate::Endpoint::stall_resolved`] and then retries.
    Stalled {
        /// The stall tag.
        stag: u16,
    },
}

/// The micro-TLB key of a transaction.
fn utlb_key(txn: &Transaction) -> crate::utlb::Key {
    (
        txn.sid.0,
        txn.ssid.map_or(u32::MAX, |p| p.0),
        txn.addr >> 12,
    )
}

/// VMID of every IOTLB entry while stage 2 is not modelled.
pub(crate) const NO_VMID: u16 = 0;

impl Smmu {
    /// A whole transaction: the translation, then `access` on the output address, with the
    /// guarantee a device gets from hardware: an invalidation completes (CMD_SYNC, a
    /// broadcast TLBI) only after every transaction that could still use a translation it
    /// removed has finished. A translation that an invalidation overtook is made again.
    /// Returns what `access` returned, or why the access was denied.
    pub fn transact<R>(
        &self,
        txn: &Transaction,
        access: impl FnOnce(Pa) -> R,
    ) -> Result<R, Denied> {
        loop {
            let generation = self.utlb.current();
            let pa = match self.translate(txn) {
                TranslateOutcome::Translated { pa, .. } | TranslateOutcome::Bypassed { pa } => pa,
                TranslateOutcome::Aborted { event } => return Err(Denied::Aborted { event }),
                TranslateOutcome::Stalled { stag } => return Err(Denied::Stalled { stag }),
            };
            let guard = sva_sync::read(&self.inflight);
            if self.utlb.current() != generation {
                // Something was invalidated meanwhile: the translation may be stale.
                drop(guard);
                continue;
            }
            let out = access(pa);
            drop(guard);
            return Ok(out);
        }
    }

    /// Translates a device transaction. The output address is only current at the moment
    /// of return; a device that then accesses memory uses [`Smmu::transact`].
    pub fn translate(&self, txn: &Transaction) -> TranslateOutcome {
        let key = utlb_key(txn);
        // Privileged transactions take the slow path: STE.PRIVCFG may override them.
        if !txn.translated
            && !txn.privileged
            && let Some(e) = self.utlb.lookup(&key, txn.access)
        {
            return TranslateOutcome::Translated {
                pa: Pa(e.pa_page + (txn.addr & 0xfff)),
                size: e.size,
                perms: e.perms,
            };
        }
        self.translate_slow(txn, key)
    }

    /// What the micro-TLB could not serve, under the state lock. Kept out of line so that the
    /// hit path stays a few instructions.
    #[inline(never)]
    fn translate_slow(&self, txn: &Transaction, key: crate::utlb::Key) -> TranslateOutcome {
        let mut st = self.lock();
        st.stats.transactions += 1;
        let out = self.translate_locked(&mut st, txn);
        if let TranslateOutcome::Translated { pa, size, perms } = out
            && !txn.translated
        {
            // Under the state lock: no invalidation can come between the walk and this.
            self.utlb
                .insert(key, pa.raw() & !0xfff, size, perms, self.utlb.current());
        }
        self.unlock_and_deliver(st);
        out
    }

    fn translate_locked(&self, st: &mut State, txn: &Transaction) -> TranslateOutcome {
        let cr0 = st.regs.cr0();
        if !cr0.smmuen() {
            return if st.regs.gbpa_abort() {
                TranslateOutcome::Aborted { event: None }
            } else {
                TranslateOutcome::Bypassed { pa: Pa(txn.addr) }
            };
        }
        if txn.translated {
            return self.translated_txn(st, txn);
        }
        let ste = match self.stream(st, txn.sid) {
            Ok(ste) => ste,
            Err(f) => return self.config_fault(st, txn.sid, txn.ssid, f),
        };
        let ctx = match self.context(st, txn.sid, &ste, txn.ssid) {
            Ok(ctx) => ctx,
            Err(f) => return self.config_fault(st, txn.sid, txn.ssid, f),
        };
        match ctx {
            Ctx::Abort => TranslateOutcome::Aborted { event: None },
            Ctx::Bypass => TranslateOutcome::Bypassed { pa: Pa(txn.addr) },
            Ctx::Stage1 { s1, cd } => self.stage1(st, txn, &s1, &cd),
        }
    }

    /// An ATS Translated transaction (§3.9.1): passes when CR0.ATSCHK = 0, or when the STE
    /// allows ATS; F_TRANSL_FORBIDDEN otherwise.
    fn translated_txn(&self, st: &mut State, txn: &Transaction) -> TranslateOutcome {
        let forbidden = |this: &Self, st: &mut State| {
            let mut ev = Event::new(EventId::FTranslForbidden, txn.sid);
            ev.input_addr = Va(txn.addr);
            ev.rnw = txn.access != AccessKind::Write;
            eventq::record(this, st, &ev);
            TranslateOutcome::Aborted {
                event: Some(EventId::FTranslForbidden),
            }
        };
        if !self.config.ats {
            return forbidden(self, st);
        }
        if !st.regs.cr0().atschk() {
            return TranslateOutcome::Bypassed { pa: Pa(txn.addr) };
        }
        // An invalid or ILLEGAL STE aborts Translated traffic without an event (§5.2 V).
        let Ok(ste) = self.stream(st, txn.sid) else {
            return TranslateOutcome::Aborted { event: None };
        };
        match ste.cfg {
            StreamCfg::Abort => TranslateOutcome::Aborted { event: None },
            StreamCfg::Stage1(_) if ste.eats == Eats::Full => {
                TranslateOutcome::Bypassed { pa: Pa(txn.addr) }
            }
            // Full bypass behaves as EATS = 0b00 (§5.2 Config).
            StreamCfg::Bypass | StreamCfg::Stage1(_) => forbidden(self, st),
        }
    }

    /// The STE of `sid` (cached).
    pub(crate) fn stream(&self, st: &mut State, sid: StreamId) -> Result<CachedSte, CfgFault> {
        let State {
            cfg_cache, regs, ..
        } = st;
        cfg_cache.ste(self.mem(), regs, &self.config, sid.0)
    }

    /// The context of a transaction with SubstreamID `ssid` on a stream with STE `ste`.
    pub(crate) fn context(
        &self,
        st: &mut State,
        sid: StreamId,
        ste: &CachedSte,
        ssid: Option<Pasid>,
    ) -> Result<Ctx, CfgFault> {
        let bad_ssid = CfgFault {
            id: EventId::CBadSubstreamid,
            fetch_addr: 0,
        };
        let s1 = match ste.cfg {
            StreamCfg::Abort => return Ok(Ctx::Abort),
            // Stage 1 disabled: a SubstreamID cannot be used (§5.2 S1Fmt).
            StreamCfg::Bypass if ssid.is_some() => return Err(bad_ssid),
            StreamCfg::Bypass => return Ok(Ctx::Bypass),
            StreamCfg::Stage1(s1) => s1,
        };
        let idx = if s1.cdmax == 0 {
            if ssid.is_some() {
                return Err(bad_ssid);
            }
            0
        } else {
            match ssid {
                None => match s1.dss {
                    S1Dss::Bypass => return Ok(Ctx::Bypass),
                    S1Dss::Ssid0 => 0,
                    _ => {
                        return Err(CfgFault {
                            id: EventId::FStreamDisabled,
                            fetch_addr: 0,
                        });
                    }
                },
                Some(p) => {
                    if u64::from(p.0) >= 1u64 << s1.cdmax {
                        return Err(bad_ssid);
                    }
                    if p.0 == 0 && s1.dss == S1Dss::Ssid0 {
                        // CD 0 is reserved for transactions without a SubstreamID.
                        return Err(CfgFault {
                            id: EventId::FStreamDisabled,
                            fetch_addr: 0,
                        });
                    }
                    p.0
                }
            }
        };
        let cd = st.cfg_cache.cd(self.mem(), &self.config, sid.0, &s1, idx)?;
        Ok(Ctx::Stage1 { s1, cd })
    }

    /// Records a configuration error (C_BAD_STREAMID only with CR2.RECINVSID) and aborts.
    pub(crate) fn config_fault(
        &self,
        st: &mut State,
        sid: StreamId,
        ssid: Option<Pasid>,
        f: CfgFault,
    ) -> TranslateOutcome {
        let record = f.id != EventId::CBadStreamid || Cr2::from_bits(st.regs.cr2).recinvsid();
        if record {
            let mut ev = Event::new(f.id, sid);
            ev.substream_id = ssid;
            ev.fetch_addr = Pa(f.fetch_addr);
            eventq::record(self, st, &ev);
        }
        TranslateOutcome::Aborted { event: Some(f.id) }
    }

    /// Stage 1: IOTLB, then the walk.
    fn stage1(
        &self,
        st: &mut State,
        txn: &Transaction,
        s1: &S1Stream,
        cd: &CtxDesc,
    ) -> TranslateOutcome {
        let va = effective_va(cd, txn.addr);
        let access = Access::new(txn.access, s1.privileged(txn.privileged));
        if let Some(e) = st.iotlb.lookup(NO_VMID, cd.asid, va, cd.leaf_sizes())
            && e.perms.allows(access)
        {
            let size = 1u64 << e.size_log2;
            return TranslateOutcome::Translated {
                pa: Pa(e.pa_base + (va & (size - 1))),
                size,
                perms: e.perms,
            };
        }
        match self.walk_cd(st, cd, va, access) {
            Ok(t) => TranslateOutcome::Translated {
                pa: t.pa,
                size: t.size,
                perms: t.perms,
            },
            Err(f) => self.translation_fault(st, txn, s1, cd, va, f),
        }
    }

    /// Walks the tables of `cd` for `va` and caches the leaf.
    pub(crate) fn walk_cd(
        &self,
        st: &mut State,
        cd: &CtxDesc,
        va: u64,
        access: Access,
    ) -> Result<Translation, Fault> {
        if cd.epd0 {
            return Err(Fault {
                kind: FaultKind::Translation,
                level: cd.table.start_level(),
                va: Va(va),
            });
        }
        st.stats.walks += 1;
        // AFFD is approximated by hardware Access flag management.
        let httu = Httu {
            ha: cd.ha || cd.affd,
            hd: cd.hd,
        };
        let t = walk(self.mem(), cd.ttb0, &cd.table, Va(va), access, httu)?;
        let global = !t.desc.attributes().contains(Attributes::NG);
        let size_log2 = t.size.trailing_zeros() as u8;
        let entry = TlbEntry {
            pa_base: t.pa.raw() - (va & (t.size - 1)),
            size_log2,
            perms: t.perms,
            aset: cd.aset,
        };
        let asid = (!global).then_some(cd.asid);
        st.iotlb.insert(NO_VMID, asid, va, entry);
        Ok(t)
    }

    /// A stage 1 fault: stall (CD.S), record (CD.R) or abort silently.
    fn translation_fault(
        &self,
        st: &mut State,
        txn: &Transaction,
        s1: &S1Stream,
        cd: &CtxDesc,
        va: u64,
        fault: Fault,
    ) -> TranslateOutcome {
        let id = match fault.kind {
            FaultKind::Translation => EventId::FTranslation,
            FaultKind::AccessFlag => EventId::FAccess,
            FaultKind::Permission => EventId::FPermission,
            FaultKind::AddressSize => EventId::FAddrSize,
            FaultKind::ExternalAbort => EventId::FWalkEabt,
        };
        let mut ev = Event::new(id, txn.sid);
        ev.substream_id = txn.ssid;
        ev.input_addr = Va(txn.addr);
        ev.pnu = s1.privileged(txn.privileged);
        ev.ind = txn.access == AccessKind::Execute;
        ev.rnw = txn.access != AccessKind::Write;
        ev.class = if id == EventId::FWalkEabt {
            ev.fetch_addr = Pa(descriptor_addr(self.mem(), cd, va, fault.level));
            FaultClass::Tt
        } else {
            FaultClass::In
        };
        if cd.stall
            && !s1.stalld
            && id.can_stall()
            && let Some(stag) = st.stalls.stall(txn.sid, txn.ssid)
        {
            ev.stall = true;
            ev.stag = stag;
            if eventq::record(self, st, &ev) {
                st.stats.stalls += 1;
                return TranslateOutcome::Stalled { stag };
            }
            // The record could not be written (external abort): terminate instead.
            let _ = st.stalls.resume(txn.sid, stag, false);
            return TranslateOutcome::Aborted { event: Some(id) };
        }
        if cd.record || cd.stall {
            eventq::record(self, st, &ev);
        }
        TranslateOutcome::Aborted { event: Some(id) }
    }
}

/// The address walked: the input address, top byte cleared when CD.TBI0 is set.
pub(crate) fn effective_va(cd: &CtxDesc, addr: u64) -> u64 {
    if cd.tbi0 {
        addr & 0x00FF_FFFF_FFFF_FFFF
    } else {
        addr
    }
}

/// Address of the descriptor a walk of `va` reads at `level` (FetchAddr of F_WALK_EABT),
/// found by re-reading the tables above it; 0 if they changed meanwhile.
fn descriptor_addr(mem: &dyn PhysMemory, cd: &CtxDesc, va: u64, level: u8) -> u64 {
    let cfg = &cd.table;
    let mut table = cd.ttb0;
    let mut l = cfg.start_level();
    while l < level {
        let Ok(raw) = mem.load_u64(table + cfg.index(l, Va(va)) * 8) else {
            return 0;
        };
        let d = Descriptor::from_bits(raw);
        if !d.is_table(l) {
            return 0;
        }
        table = d.output_address(cfg, l);
        l += 1;
    }
    (table + cfg.index(level, Va(va)) * 8).raw()
}
