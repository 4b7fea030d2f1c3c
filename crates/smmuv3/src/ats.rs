//! PCIe ATS Translation Requests (§3.9).

use sva_smmuv3_spec::event::{Event, EventId};
use sva_smmuv3_spec::ste::Eats;
use sva_vmsa::{Access, AccessKind, Attributes, Va};

use crate::config::StreamCfg;
use crate::translate::{Ctx, effective_va};
use crate::{AtsCompletion, AtsRequest, Pa, Smmu, eventq};

impl Smmu {
    /// Answers an ATS Translation Request.
    ///
    /// - Unsupported Request: no ATS in the config, SMMUEN = 0, an aborting STE, or STE.EATS
    ///   not allowing ATS, or a bypass STE (F_BAD_ATS_TREQ is recorded for the last two).
    /// - Completer Abort: a configuration error (invalid STE/CD, bad SubstreamID, S1DSS
    ///   terminate); no event is recorded.
    /// - No access (R = W = 0): the walk faulted; no event is recorded, the device is
    ///   expected to use PRI.
    /// - Success: the leaf's output address and size, with R/W/X for the requested privilege
    ///   (W only without No Write; a clean DBM page is marked dirty when W is granted under
    ///   CD.HD), and Global for nG = 0. S1DSS = bypass gives an identity 4 KiB translation.
    pub fn ats_translate(&self, req: &AtsRequest) -> AtsCompletion {
        if !self.config.ats {
            return AtsCompletion::UnsupportedRequest;
        }
        let mut st = self.lock();
        st.stats.ats_requests += 1;
        let out = 'out: {
            if !st.regs.cr0().smmuen() {
                break 'out AtsCompletion::UnsupportedRequest;
            }
            // Configuration errors complete with CA and record nothing (§5.2: STE.V, S1DSS;
            // the model does not implement SMMU_CR2.REC_CFG_ATS).
            let Ok(ste) = self.stream(&mut st, req.sid) else {
                break 'out AtsCompletion::CompleterAbort;
            };
            if matches!(ste.cfg, StreamCfg::Abort) {
                break 'out AtsCompletion::UnsupportedRequest;
            }
            // Full bypass behaves as EATS = 0b00.
            if ste.eats != Eats::Full || matches!(ste.cfg, StreamCfg::Bypass) {
                let mut ev = Event::new(EventId::FBadAtsTreq, req.sid);
                ev.substream_id = req.ssid;
                ev.input_addr = Va(req.addr);
                eventq::record(self, &mut st, &ev);
                break 'out AtsCompletion::UnsupportedRequest;
            }
            let Ok(ctx) = self.context(&mut st, req.sid, &ste, req.ssid) else {
                break 'out AtsCompletion::CompleterAbort;
            };
            let (s1, cd) = match ctx {
                Ctx::Abort => break 'out AtsCompletion::UnsupportedRequest,
                // S1DSS = bypass: stage 1 is skipped, the identity translation is returned.
                Ctx::Bypass => {
                    break 'out AtsCompletion::Success {
                        pa: Pa(req.addr & !0xFFF),
                        size: 0x1000,
                        read: true,
                        write: !req.no_write,
                        exec: req.exec,
                        privileged: req.privileged,
                        global: true,
                    };
                }
                Ctx::Stage1 { s1, cd } => (s1, cd),
            };
            let privileged = s1.privileged(req.privileged);
            let va = effective_va(&cd, req.addr);
            let read = Access::new(AccessKind::Read, privileged);
            let Ok(mut t) = self.walk_cd(&mut st, &cd, va, read) else {
                break 'out AtsCompletion::NoAccess;
            };
            let write_access = Access::new(AccessKind::Write, privileged);
            if !req.no_write
                && !t.perms.allows(write_access)
                && cd.hd
                && t.desc.attributes().contains(Attributes::DBM)
                && let Ok(t2) = self.walk_cd(&mut st, &cd, va, write_access)
            {
                t = t2;
            }
            let can_read = t.perms.allows(read);
            let can_write = !req.no_write && t.perms.allows(write_access);
            if !can_read && !can_write {
                break 'out AtsCompletion::NoAccess;
            }
            AtsCompletion::Success {
                pa: Pa(t.pa.raw() - (va & (t.size - 1))),
                size: t.size,
                read: can_read,
                write: can_write,
                exec: req.exec && t.perms.allows(Access::new(AccessKind::Execute, privileged)),
                privileged,
                global: !t.desc.attributes().contains(Attributes::NG),
            }
        };
        self.unlock_and_deliver(st);
        out
    }
}
