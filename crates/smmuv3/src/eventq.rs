//! The Event queue (§7.2, §7.4): the SMMU is the producer.

use sva_smmuv3_spec::control::Gerror;
use sva_smmuv3_spec::event::Event;
use sva_smmuv3_spec::mmio::IrqLine;
use sva_smmuv3_spec::queue::{EVENTQ_ENTRY_BYTES, QueueBase, QueueIndex};

use crate::regs::{Regs, raise_gerror, signal_irq};
use crate::{Pa, Smmu, State};

const OVFLG: u32 = 1 << 31;

/// Outcome of an attempt to write one record.
enum Write {
    Written,
    /// Disabled or full.
    NoRoom,
    /// The memory write aborted (EVENTQ_ABT_ERR raised).
    Aborted,
}

fn try_write(smmu: &Smmu, st: &mut State, ev: &Event) -> Write {
    if !st.regs.cr0().eventqen() {
        return Write::NoRoom;
    }
    let log2 = Regs::queue_log2(st.regs.eventq_base, smmu.config.eventq_log2);
    let (Ok(prod), Ok(cons)) = (
        QueueIndex::new(log2, st.regs.eventq_prod),
        QueueIndex::new(log2, st.regs.eventq_cons),
    ) else {
        return Write::NoRoom;
    };
    if QueueIndex::is_full(prod, cons) {
        return Write::NoRoom;
    }
    let base = QueueBase::from_bits(st.regs.eventq_base).addr_pa().raw();
    let addr = base + prod.byte_offset(EVENTQ_ENTRY_BYTES);
    let words = ev.encode();
    let ok = words
        .iter()
        .enumerate()
        .all(|(i, &w)| smmu.mem().store_u64(Pa(addr + 8 * i as u64), w).is_ok());
    if !ok {
        raise_gerror(
            smmu,
            st,
            Gerror::new().with_eventq_abt_err(true).into_bits(),
        );
        return Write::Aborted;
    }
    st.regs.eventq_prod = (st.regs.eventq_prod & OVFLG) | prod.next().raw();
    *st.stats.events.entry(ev.id.name()).or_default() += 1;
    if st.regs.irq_ctrl().eventq_irqen() {
        signal_irq(smmu, st, IrqLine::EventQueue);
    }
    Write::Written
}

/// Writes the stall records that waited for room, oldest first, while there is room. Records
/// of transactions resolved meanwhile are dropped.
pub(crate) fn flush_stall_records(smmu: &Smmu, st: &mut State) {
    while let Some(ev) = st.stall_records.front().copied() {
        if !st.stalls.contains(ev.stream_id, ev.stag) {
            st.stall_records.pop_front();
            continue;
        }
        match try_write(smmu, st, &ev) {
            Write::Written => {
                st.stall_records.pop_front();
            }
            Write::NoRoom => return,
            Write::Aborted => {
                // Lost: terminate the transaction rather than leave it stalled unseen.
                st.stall_records.pop_front();
                if let Some(n) = st.stalls.resume(ev.stream_id, ev.stag, false) {
                    st.pending.push(n);
                }
            }
        }
    }
}

/// Records `ev` in the Event queue (§7.4). Returns `false` if it was lost.
///
/// A record that finds the queue full (or disabled) is discarded, and a full queue toggles
/// EVENTQ_PROD.OVFLG unless an overflow is already active; an active overflow does not stop
/// later records once there is room again. A stall record is never discarded for lack of
/// room and causes no overflow: it waits and is written when the queue is next writable
/// (stall records are written in order, before any later record).
pub(crate) fn record(smmu: &Smmu, st: &mut State, ev: &Event) -> bool {
    flush_stall_records(smmu, st);
    if ev.stall {
        // Keep the waiting list bounded by the stalls outstanding.
        let State {
            stall_records,
            stalls,
            ..
        } = st;
        stall_records.retain(|r| stalls.contains(r.stream_id, r.stag));
    }
    if ev.stall && !st.stall_records.is_empty() {
        st.stall_records.push_back(*ev);
        return true;
    }
    match try_write(smmu, st, ev) {
        Write::Written => true,
        Write::NoRoom if ev.stall => {
            st.stall_records.push_back(*ev);
            true
        }
        Write::NoRoom => {
            if st.regs.cr0().eventqen() {
                let ovflg = st.regs.eventq_prod & OVFLG;
                let ovack = st.regs.eventq_cons & OVFLG;
                if ovflg == ovack {
                    st.regs.eventq_prod ^= OVFLG;
                }
            }
            st.stats.events_lost += 1;
            false
        }
        Write::Aborted => {
            st.stats.events_lost += 1;
            false
        }
    }
}
