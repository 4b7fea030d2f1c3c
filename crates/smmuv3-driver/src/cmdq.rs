//! The Command queue writer (§3.5): commands are encoded into queue memory at PROD, PROD is
//! published, and a CMD_SYNC appended to every batch tells when the SMMU has consumed and
//! completed them. Completion is seen either by polling SMMU_CMDQ_CONS or by an MSI write of
//! the sync's sequence number into a driver-owned word.
//!
//! Command errors (§7.1): when SMMU_GERROR.CMDQ_ERR is active the SMMU has stopped with CONS
//! on the faulting command. CERROR_ILL: the command is overwritten with a CMD_SYNC (which the
//! SMMU then executes harmlessly) and the error is reported to the submitter. CERROR_ABT:
//! acknowledged so the SMMU retries the read. CERROR_ATC_INV_SYNC: CONS stays on the CMD_SYNC,
//! which is repeated after the acknowledgement; the timeout is reported.

use sva_smmuv3_spec::command::{Command, SyncCs};
use sva_smmuv3_spec::control::{Gerror, memattr};
use sva_smmuv3_spec::encoding::Shareability;
use sva_smmuv3_spec::queue::{CMDQ_ENTRY_BYTES, Cerror, CmdqCons, CmdqProd};
use sva_smmuv3_spec::{QueueIndex, regs};

use crate::{CmdqSection, Error, Pa, Poll, Result, SmmuDriver, lock};

/// At most this many command errors are recovered within one submission before giving up
/// (a SMMU that keeps failing the same CMD_SYNC would otherwise loop until the timeout).
const MAX_ERRORS_PER_SUBMIT: u32 = 16;

/// Driver-side state of the Command queue.
#[derive(Debug)]
pub(crate) struct Cmdq {
    pub(crate) base: Pa,
    pub(crate) log2: u8,
    /// Shadow of SMMU_CMDQ_PROD (the driver is the only producer).
    pub(crate) prod: QueueIndex,
    /// Last SMMU_CMDQ_CONS read.
    pub(crate) cons: QueueIndex,
    /// MSI target word of CMD_SYNC completions, when MSI sync is in use.
    pub(crate) msi_word: Option<Pa>,
    /// Sequence number written by the last CMD_SYNC MSI.
    pub(crate) sync_seq: u32,
}

impl Cmdq {
    pub(crate) fn new(base: Pa, log2: u8, msi_word: Option<Pa>) -> Result<Self> {
        Ok(Self {
            base,
            log2,
            prod: QueueIndex::zero(log2).map_err(|_| Error::Hardware("queue size"))?,
            cons: QueueIndex::zero(log2).map_err(|_| Error::Hardware("queue size"))?,
            msi_word,
            sync_seq: 0,
        })
    }

    fn capacity(&self) -> u32 {
        self.prod.capacity()
    }
}

/// Outcome bookkeeping of one submission.
#[derive(Default)]
struct Recovery {
    first: Option<Error>,
    count: u32,
}

impl Recovery {
    fn record(&mut self, e: Error) -> Result<()> {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(e.clone());
        }
        if self.count > MAX_ERRORS_PER_SUBMIT {
            return Err(e);
        }
        Ok(())
    }
}

impl SmmuDriver {
    /// Submits `cmds` followed by one CMD_SYNC and waits for the sync to complete.
    ///
    /// If the SMMU rejects a command, the rest of the batch still runs and the first error
    /// is returned after the sync completed.
    pub fn submit_batch(&self, cmds: &[Command]) -> Result<()> {
        let words: Vec<[u64; 2]> = cmds.iter().map(Command::encode).collect();
        {
            let mut st = lock(&self.stats);
            for c in cmds {
                *st.commands.entry(c.opcode()).or_default() += 1;
            }
        }
        self.submit_words(&words)
    }

    /// Submits one raw command (any two words, even malformed) followed by a CMD_SYNC.
    ///
    /// A test hook for the command error paths: a malformed command yields
    /// [`Error::IllegalCommand`] and the queue keeps working.
    #[doc(hidden)]
    pub fn submit_raw(&self, words: [u64; 2]) -> Result<()> {
        self.submit_words(&[words])
    }

    /// Submits a lone CMD_SYNC: waits until every command submitted before has completed.
    pub fn sync(&self) -> Result<()> {
        self.submit_words(&[])
    }

    fn submit_words(&self, words: &[[u64; 2]]) -> Result<()> {
        let result = {
            let _section = CmdqSection::enter();
            let mut q = lock(&self.cmdq);
            self.submit_locked(&mut q, words)
        };
        self.flush_deferred();
        result
    }

    fn submit_locked(&self, q: &mut Cmdq, words: &[[u64; 2]]) -> Result<()> {
        let mut rec = Recovery::default();
        let chunk = (q.capacity().saturating_sub(1)).max(1) as usize;
        for part in words.chunks(chunk) {
            let n = u32::try_from(part.len()).map_err(|_| Error::InvalidArgument("batch"))?;
            self.wait_space(q, n, &mut rec)?;
            for w in part {
                self.write_entry(q, q.prod, *w)?;
                q.prod = q.prod.next();
            }
            self.publish(q);
        }
        // The CMD_SYNC.
        self.wait_space(q, 1, &mut rec)?;
        let sync_pos = q.prod;
        let sync = match q.msi_word {
            Some(word) => {
                q.sync_seq = q.sync_seq.wrapping_add(1);
                Command::Sync {
                    cs: SyncCs::Irq,
                    msh: Shareability::InnerShareable,
                    msi_attr: memattr::NORMAL_WB,
                    msi_data: q.sync_seq,
                    msi_addr: word,
                }
            }
            None => Command::Sync {
                cs: SyncCs::None,
                msh: Shareability::InnerShareable,
                msi_attr: 0,
                msi_data: 0,
                msi_addr: Pa(0),
            },
        };
        *lock(&self.stats).commands.entry(sync.opcode()).or_default() += 1;
        self.write_entry(q, sync_pos, sync.encode())?;
        q.prod = q.prod.next();
        self.publish(q);
        self.wait_sync(q, sync_pos, &mut rec)?;
        lock(&self.stats).syncs += 1;
        match rec.first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn write_entry(&self, q: &Cmdq, at: QueueIndex, w: [u64; 2]) -> Result<()> {
        self.write_words(q.base + at.byte_offset(CMDQ_ENTRY_BYTES), &w)
    }

    fn publish(&self, q: &Cmdq) {
        self.w32(
            regs::CMDQ_PROD,
            CmdqProd::new().with_index(q.prod).into_bits(),
        );
    }

    /// Reads SMMU_CMDQ_CONS into the shadow; a CONS that claims to be ahead of PROD is a
    /// hardware error.
    fn read_cons(&self, q: &mut Cmdq) -> Result<()> {
        let cons = QueueIndex::new(q.log2, CmdqCons::from_bits(self.r32(regs::CMDQ_CONS)).rd())
            .map_err(|_| Error::Hardware("queue size"))?;
        if q.prod.distance(cons) > q.capacity() {
            return Err(Error::Hardware("CMDQ_CONS is ahead of CMDQ_PROD"));
        }
        q.cons = cons;
        Ok(())
    }

    fn wait_space(&self, q: &mut Cmdq, n: u32, rec: &mut Recovery) -> Result<()> {
        if QueueIndex::free(q.prod, q.cons) >= n {
            return Ok(());
        }
        let mut poll = Poll::new(self.poll_timeout);
        loop {
            self.check_cmdq_err(q, rec)?;
            self.read_cons(q)?;
            if QueueIndex::free(q.prod, q.cons) >= n {
                return Ok(());
            }
            if !poll.wait() {
                return Err(Error::Timeout("space in the Command queue"));
            }
        }
    }

    fn wait_sync(&self, q: &mut Cmdq, sync_pos: QueueIndex, rec: &mut Recovery) -> Result<()> {
        let mut poll = Poll::new(self.poll_timeout);
        loop {
            self.check_cmdq_err(q, rec)?;
            let done = match q.msi_word {
                Some(word) => {
                    let v = self.ram.memory().load_u64(word)?;
                    // The MSI writes 32 bits of data.
                    (v as u32) == q.sync_seq
                }
                None => {
                    self.read_cons(q)?;
                    // Consumed once CONS is past the sync: fewer entries remain between CONS
                    // and PROD than between the sync and PROD.
                    q.prod.distance(q.cons) < q.prod.distance(sync_pos)
                }
            };
            if done {
                if q.msi_word.is_some() {
                    // Keep the CONS shadow fresh for space accounting.
                    self.read_cons(q)?;
                }
                return Ok(());
            }
            if !poll.wait() {
                return Err(Error::SyncTimeout {
                    cons: q.cons.raw(),
                    target: sync_pos.next().raw(),
                });
            }
        }
    }

    fn check_cmdq_err(&self, q: &mut Cmdq, rec: &mut Recovery) -> Result<()> {
        if let Some(e) = self.recover_cmdq_err(q)? {
            rec.record(e)?;
        }
        Ok(())
    }

    /// If SMMU_GERROR.CMDQ_ERR is active: fixes the queue per CMDQ_CONS.ERR, acknowledges the
    /// error in SMMU_GERRORN and returns what to report.
    pub(crate) fn recover_cmdq_err(&self, q: &mut Cmdq) -> Result<Option<Error>> {
        let gerror = Gerror::from_bits(self.r32(regs::GERROR));
        let gerrorn = Gerror::from_bits(self.r32(regs::GERRORN));
        if !Gerror::active(gerror, gerrorn).cmdq_err() {
            return Ok(None);
        }
        let cons = CmdqCons::from_bits(self.r32(regs::CMDQ_CONS));
        let at = QueueIndex::new(q.log2, cons.rd()).map_err(|_| Error::Hardware("queue size"))?;
        let report = match cons.err() {
            Cerror::Ill => {
                let addr = q.base + at.byte_offset(CMDQ_ENTRY_BYTES);
                let words = self.read_words::<2>(addr)?;
                let replacement = Command::Sync {
                    cs: SyncCs::None,
                    msh: Shareability::InnerShareable,
                    msi_attr: 0,
                    msi_data: 0,
                    msi_addr: Pa(0),
                };
                self.write_words(addr, &replacement.encode())?;
                Some(Error::IllegalCommand { words })
            }
            Cerror::Abt => Some(Error::CommandAbort),
            Cerror::AtcInvSync => Some(Error::AtcInvTimeout),
            Cerror::None | Cerror::Reserved(_) => None,
        };
        // Acknowledge CMDQ_ERR only: toggle GERRORN.CMDQ_ERR to match GERROR.
        self.w32(
            regs::GERRORN,
            gerrorn.with_cmdq_err(gerror.cmdq_err()).into_bits(),
        );
        {
            let mut st = lock(&self.stats);
            st.cmdq_errors += 1;
            *st.gerrors.entry("CMDQ_ERR").or_default() += 1;
        }
        Ok(report)
    }

    /// GERROR interrupt: acknowledges every active global error, counting them.
    pub(crate) fn process_gerror(&self) {
        let gerror = Gerror::from_bits(self.r32(regs::GERROR));
        let gerrorn = Gerror::from_bits(self.r32(regs::GERRORN));
        let active = Gerror::active(gerror, gerrorn);
        if !active.any() {
            return;
        }
        if active.cmdq_err() {
            // Recover now if no submitter holds the queue; otherwise the submitter polls
            // GERROR and recovers (and reports) itself.
            if let Ok(mut q) = self.cmdq.try_lock() {
                // An error here is left for the next submitter to hit again.
                let _ = self.recover_cmdq_err(&mut q);
            }
        }
        let names: [(&'static str, bool); 8] = [
            ("EVENTQ_ABT_ERR", active.eventq_abt_err()),
            ("PRIQ_ABT_ERR", active.priq_abt_err()),
            ("MSI_CMDQ_ABT_ERR", active.msi_cmdq_abt_err()),
            ("MSI_EVENTQ_ABT_ERR", active.msi_eventq_abt_err()),
            ("MSI_PRIQ_ABT_ERR", active.msi_priq_abt_err()),
            ("MSI_GERROR_ABT_ERR", active.msi_gerror_abt_err()),
            ("SFM_ERR", active.sfm_err()),
            ("CMDQP_ERR", active.cmdqp_err()),
        ];
        {
            let mut st = lock(&self.stats);
            for (name, on) in names {
                if on {
                    *st.gerrors.entry(name).or_default() += 1;
                }
            }
        }
        // Acknowledge all but CMDQ_ERR (handled above, with its own acknowledgement).
        let others = active.into_bits() & !Gerror::new().with_cmdq_err(true).into_bits();
        if others != 0 {
            let now = self.r32(regs::GERRORN);
            self.w32(regs::GERRORN, now ^ others);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_consumed_test_handles_wrap() {
        // A 4-entry queue: the sync sits at index 3 (wrap 0); PROD is index 0 wrap 1.
        let sync = QueueIndex::new(2, 3).unwrap();
        let prod = sync.next();
        assert_eq!(prod.raw(), 4);
        // CONS still on the sync: not consumed.
        assert!(prod.distance(sync) >= prod.distance(sync));
        // CONS == PROD (wrapped): consumed.
        let cons = prod;
        assert!(prod.distance(cons) < prod.distance(sync));
        // CONS one behind the sync: not consumed.
        let behind = QueueIndex::new(2, 2).unwrap();
        assert!(prod.distance(behind) >= prod.distance(sync));
    }

    #[test]
    fn queue_free_space_across_wrap() {
        let prod = QueueIndex::new(3, 0b1_010).unwrap(); // index 2, wrap 1
        let cons = QueueIndex::new(3, 0b0_110).unwrap(); // index 6, wrap 0
        assert_eq!(prod.distance(cons), 4);
        assert_eq!(QueueIndex::free(prod, cons), 4);
        let full = QueueIndex::new(3, 0b1_110).unwrap();
        assert!(QueueIndex::is_full(full, cons));
        assert_eq!(QueueIndex::free(full, cons), 0);
    }
}
