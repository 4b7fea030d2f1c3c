//! The PRI queue (§8): page requests from PCIe functions, and the SMMU's automatic responses
//! when the queue cannot take them (§8.1).

use sva_smmuv3_spec::control::{Gerror, IrqCfg2};
use sva_smmuv3_spec::mmio::IrqLine;
use sva_smmuv3_spec::pri::{PageRequest, PriResponse};
use sva_smmuv3_spec::queue::{PRIQ_ENTRY_BYTES, QueueBase, QueueIndex};

use crate::regs::{Regs, raise_gerror, signal_irq};
use crate::{Notify, Pa, Smmu};

const OVFLG: u32 = 1 << 31;

impl Smmu {
    /// A PRI Page Request message (or Stop Marker) arriving from a device.
    ///
    /// With PRI disabled in the config the message is dropped. Otherwise it is written to the
    /// PRI queue if the queue is enabled, has room and no overflow condition is active. A
    /// request that cannot be written because the queue is full starts an overflow condition
    /// (PRIQ_PROD.OVFLG toggles); while it is active (until PRIQ_CONS.OVACKFLG matches) every
    /// message is discarded. Discarded Page Requests with Last = 1 get an automatic PRG
    /// Response: Success, with the request's PASID (the model advertises IDR3.PPS = 1).
    /// Discarded Stop Markers and Last = 0 requests get nothing. With the PRI queue disabled
    /// (PRIQEN = 0) messages are discarded and answered the same way.
    pub fn page_request(&self, req: &PageRequest) {
        if !self.config.pri {
            return;
        }
        let mut st = self.lock();
        st.stats.page_requests += 1;
        let written = 'write: {
            if !st.regs.cr0().priqen() {
                break 'write false;
            }
            let log2 = Regs::queue_log2(st.regs.priq_base, self.config.priq_log2);
            let (Ok(prod), Ok(cons)) = (
                QueueIndex::new(log2, st.regs.priq_prod),
                QueueIndex::new(log2, st.regs.priq_cons),
            ) else {
                break 'write false;
            };
            let overflow_active = (st.regs.priq_prod ^ st.regs.priq_cons) & OVFLG != 0;
            if overflow_active {
                break 'write false;
            }
            if QueueIndex::is_full(prod, cons) {
                st.regs.priq_prod ^= OVFLG;
                break 'write false;
            }
            let base = QueueBase::from_bits(st.regs.priq_base).addr_pa().raw();
            let addr = base + prod.byte_offset(PRIQ_ENTRY_BYTES);
            let words = req.encode();
            let ok = words
                .iter()
                .enumerate()
                .all(|(i, &w)| self.mem().store_u64(Pa(addr + 8 * i as u64), w).is_ok());
            if !ok {
                raise_gerror(
                    self,
                    &mut st,
                    Gerror::new().with_priq_abt_err(true).into_bits(),
                );
                break 'write false;
            }
            st.regs.priq_prod = (st.regs.priq_prod & OVFLG) | prod.next().raw();
            let lo = IrqCfg2::from_bits(st.regs.priq_irq_cfg2).lo();
            if st.regs.irq_ctrl().priq_irqen() && (!lo || req.last) {
                signal_irq(self, &mut st, IrqLine::PriQueue);
            }
            true
        };
        if !written {
            st.stats.page_requests_lost += 1;
            if req.last && !req.is_stop_marker() {
                st.stats.pri_auto_responses += 1;
                st.pending.push(Notify::PriResp {
                    sid: req.stream_id,
                    ssid: req.substream_id,
                    prg_index: req.prg_index,
                    resp: PriResponse::Success,
                });
            }
        }
        self.unlock_and_deliver(st);
    }
}
