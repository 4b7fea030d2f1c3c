//! The Event queue consumer (§3.5, §7) and the output-queue reader shared with the PRI queue.
//!
//! On an interrupt the driver reads PROD, consumes every entry between its CONS and PROD,
//! publishes the new CONS, and repeats until the queue is empty (bounded by the queue size,
//! so an SMMU that keeps producing cannot hold the driver forever). An overflow
//! (PROD.OVFLG differs from the last acknowledged value) is counted and acknowledged by
//! copying OVFLG into CONS.OVACKFLG.

use sva_smmuv3_spec::QueueIndex;
use sva_smmuv3_spec::command::{Command, ResumeAction};
use sva_smmuv3_spec::event::Event;
use sva_smmuv3_spec::queue::{EventqCons, EventqProd};

use crate::{Delivery, Error, Pa, Result, SmmuDriver, StreamId, in_cmdq, lock};

/// Driver-side state of an output queue (Event or PRI queue).
#[derive(Debug)]
pub(crate) struct InQueue {
    pub(crate) base: Pa,
    pub(crate) log2: u8,
    pub(crate) cons: QueueIndex,
    pub(crate) ovack: bool,
    pub(crate) prod_reg: u32,
    pub(crate) cons_reg: u32,
}

impl InQueue {
    pub(crate) fn new(base: Pa, log2: u8, prod_reg: u32, cons_reg: u32) -> Result<Self> {
        Ok(Self {
            base,
            log2,
            cons: QueueIndex::zero(log2).map_err(|_| Error::Hardware("queue size"))?,
            ovack: false,
            prod_reg,
            cons_reg,
        })
    }
}

/// What one drain of an output queue found.
pub(crate) struct Drained<const N: usize> {
    pub(crate) entries: Vec<[u64; N]>,
    pub(crate) overflows: u64,
}

impl SmmuDriver {
    /// Reads every entry of an output queue of `N`-word entries, advancing CONS.
    pub(crate) fn drain_queue<const N: usize>(&self, q: &mut InQueue) -> Drained<N> {
        let entry_bytes = 8 * N as u64;
        let mut out = Drained {
            entries: Vec::new(),
            overflows: 0,
        };
        // At most two queue-fulls per interrupt: the SMMU may refill while we read.
        let budget = 2 * (1usize << q.log2);
        loop {
            let prod_reg = EventqProd::from_bits(self.r32(q.prod_reg));
            let Ok(prod) = QueueIndex::new(q.log2, prod_reg.wr()) else {
                return out;
            };
            if prod_reg.ovflg() != q.ovack {
                out.overflows += 1;
                q.ovack = prod_reg.ovflg();
            }
            let pending = prod.distance(q.cons);
            if pending > q.cons.capacity() {
                // A PROD more than a queue ahead of CONS cannot be right: resynchronise.
                q.cons = prod;
            }
            let mut n = 0;
            while q.cons != prod && out.entries.len() < budget && n <= q.cons.capacity() {
                let addr = q.base + q.cons.byte_offset(entry_bytes);
                // The queue is the driver's own memory; a failed read ends the drain.
                let Ok(words) = self.read_words::<N>(addr) else {
                    break;
                };
                out.entries.push(words);
                q.cons = q.cons.next();
                n += 1;
            }
            self.w32(
                q.cons_reg,
                EventqCons::new()
                    .with_index(q.cons)
                    .with_ovackflg(q.ovack)
                    .into_bits(),
            );
            if n == 0 || out.entries.len() >= budget {
                return out;
            }
        }
    }

    pub(crate) fn process_eventq(&self) {
        let _delivering = Delivering::enter(self);
        let drained = {
            let mut q = lock(&self.eventq);
            self.drain_queue::<4>(&mut q)
        };
        let mut events = Vec::with_capacity(drained.entries.len());
        {
            let mut st = lock(&self.stats);
            st.event_overflows += drained.overflows;
            for w in drained.entries {
                match Event::decode(w) {
                    Ok(e) => {
                        *st.events.entry(e.id).or_default() += 1;
                        events.push(e);
                    }
                    Err(_) => st.bad_events += 1,
                }
            }
        }
        deliver(&self.events, events);
    }

    /// Retries (`retry`) or aborts a stalled transaction (CMD_RESUME + CMD_SYNC).
    pub fn resume(&self, sid: StreamId, stag: u16, retry: bool) -> Result<()> {
        let action = if retry {
            ResumeAction::Retry
        } else {
            ResumeAction::Terminate { abort: true }
        };
        self.require_stall()?;
        self.submit_batch(&[Command::Resume { sid, stag, action }])
    }

    /// Terminates every stalled transaction of `sid` (CMD_STALL_TERM + CMD_SYNC).
    pub fn stall_term(&self, sid: StreamId) -> Result<()> {
        self.require_stall()?;
        self.submit_batch(&[Command::StallTerm { sid }])
    }

    fn require_stall(&self) -> Result<()> {
        if self.features.hw_stall {
            Ok(())
        } else {
            Err(Error::FeatureUnavailable("stall"))
        }
    }
}

/// Counts a drain of an output queue until its records are delivered (dropped after the
/// sink calls), for [`SmmuDriver::flush_queues`].
pub(crate) struct Delivering<'a>(&'a SmmuDriver);

impl<'a> Delivering<'a> {
    pub(crate) fn enter(drv: &'a SmmuDriver) -> Self {
        drv.deliveries
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Self(drv)
    }
}

impl Drop for Delivering<'_> {
    fn drop(&mut self) {
        self.0
            .deliveries
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Hands records to the sink, or collects them (or defers them when this thread is inside a
/// Command queue critical section, where a sink calling back into the driver would
/// deadlock).
pub(crate) fn deliver<T>(d: &sva_sync::Mutex<Delivery<T>>, items: Vec<T>) {
    if items.is_empty() {
        return;
    }
    let sink = {
        let mut g = lock(d);
        match g.sink.clone() {
            None => {
                g.collected.extend(items);
                return;
            }
            Some(_) if in_cmdq() => {
                g.deferred.extend(items);
                return;
            }
            Some(s) => s,
        }
    };
    for i in items {
        sink(i);
    }
}
