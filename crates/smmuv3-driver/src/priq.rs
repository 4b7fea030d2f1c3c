//! The PRI queue consumer (§8) and page request responses (§4.5.2).
//!
//! Entries are read like event records (see `eventq`); an overflow means the SMMU
//! auto-answered requests it could not queue (§8.1), which is counted. Each decoded
//! [`PageRequest`] goes to the page request sink or is collected; the fault handler answers
//! a group with [`SmmuDriver::pri_response`].

use sva_smmuv3_spec::PageRequest;
use sva_smmuv3_spec::command::Command;

use crate::eventq::deliver;
use crate::{Error, Pasid, PriResponse, Result, SmmuDriver, StreamId, lock};

impl SmmuDriver {
    pub(crate) fn process_priq(&self) {
        let _delivering = crate::eventq::Delivering::enter(self);
        let drained = {
            let mut guard = lock(&self.priq);
            let Some(q) = guard.as_mut() else {
                return;
            };
            self.drain_queue::<2>(q)
        };
        let mut prs = Vec::with_capacity(drained.entries.len());
        {
            let mut st = lock(&self.stats);
            st.priq_overflows += drained.overflows;
            for w in drained.entries {
                match PageRequest::decode(w) {
                    Ok(p) => {
                        st.page_requests += 1;
                        prs.push(p);
                    }
                    Err(_) => st.bad_page_requests += 1,
                }
            }
        }
        deliver(&self.page_requests, prs);
    }

    /// Answers page request group `prg_index` of `(sid, ssid)` (CMD_PRI_RESP + CMD_SYNC).
    pub fn pri_response(
        &self,
        sid: StreamId,
        ssid: Option<Pasid>,
        prg_index: u16,
        resp: PriResponse,
    ) -> Result<()> {
        if !self.features.pri {
            return Err(Error::FeatureUnavailable("PRI"));
        }
        if prg_index > 0x1FF {
            return Err(Error::InvalidArgument("PRG index has 9 bits"));
        }
        if resp.is_reserved() {
            return Err(Error::InvalidArgument("reserved PRI response"));
        }
        self.submit_batch(&[Command::PriResp {
            sid,
            ssid,
            prg_index,
            resp,
        }])
    }
}
