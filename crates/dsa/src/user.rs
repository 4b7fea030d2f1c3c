//! The user-space library (in the manner of the accel-config tests and DTO): builds
//! descriptors, stores them to the work queue's portal mapped in the process (ENQCMD for a
//! shared WQ, retried a bounded number of times; MOVDIR64B for a dedicated one), polls the
//! completion record in the process's memory, and recovers from partial completions: on
//! `PAGE_FAULT_NOBOF` it touches the faulting page from the CPU, shrinks the transfer by the
//! bytes completed, advances the addresses when the copy was ascending, and resubmits.
//!
//! The session needs the process ([`sva_mm::Mm`], bound to the device so that its PASID is
//! set), the portal's address in it (from mapping the queue's MMIO region) and whether the
//! work queue is shared.

use crate::{
    COMPLETION_RECORD_SIZE, CompletionRecord, DESCRIPTOR_SIZE, Descriptor, Error, Opcode, Result,
    Status,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use sva_addr::Va;
use sva_mm::{AccessKind, MapFlags, Mm, Prot};

/// How a session submits and waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Set BOF (block on fault) in every descriptor: the device waits for I/O page faults
    /// instead of completing partially.
    pub block_on_fault: bool,
    /// ENQCMD retries after the first attempt before giving up with [`Error::Busy`]
    /// (accel-config and DTO use 3).
    pub enqcmd_retries: u32,
    /// How long to poll a completion record.
    pub poll_timeout: Duration,
    /// Resubmissions after partial completions, per operation.
    pub max_resubmits: u32,
    /// The largest batch the session can build (sizes its scratch memory).
    pub max_batch: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            block_on_fault: false,
            enqcmd_retries: 3,
            poll_timeout: Duration::from_secs(5),
            max_resubmits: 4096,
            max_batch: 64,
        }
    }
}

/// What a session has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Descriptors stored to the portal (accepted).
    pub submissions: u64,
    /// ENQCMDs answered with retry.
    pub enqcmd_retries: u64,
    /// Resubmissions after a partial completion, or re-runs of batch members.
    pub resubmissions: u64,
    /// Pages touched from the CPU to resolve a device page fault.
    pub faults_touched: u64,
}

/// The outcome of [`DsaSession::batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchResult {
    /// The batch's completion record (of its last submission; descriptors completed
    /// counted from the first member).
    pub record: CompletionRecord,
    /// Each member's final completion record, in order (status 0: not executed).
    pub members: Vec<CompletionRecord>,
    /// Members the library completed itself after the batch (resumed partial completions,
    /// re-run abandoned members).
    pub recovered: usize,
}

/// A user of one DSA work queue.
pub struct DsaSession {
    mm: Arc<Mm>,
    portal: Va,
    shared: bool,
    config: SessionConfig,
    /// Completion records (slot 0: single operations and the batch; slot i + 1: batch
    /// member i), then the batch descriptor list.
    scratch: Va,
    scratch_len: u64,
    list: Va,
    stats: SessionStats,
    /// The uacce queue behind the session, when it opened one: closed with it.
    handle: Option<sva_uacce::Queue>,
}

impl core::fmt::Debug for DsaSession {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DsaSession")
            .field("portal", &self.portal)
            .field("shared", &self.shared)
            .field("config", &self.config)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Rotates a fill or compare pattern so that it starts `by` bytes further.
fn rotate_pattern(pattern: u64, by: u64) -> u64 {
    pattern.rotate_right(8 * (by % 8) as u32)
}

impl DsaSession {
    /// A session on the portal at `portal` in `mm`, with the default configuration.
    pub fn new(mm: &Arc<Mm>, portal: Va, shared: bool) -> Result<Self> {
        Self::with_config(mm, portal, shared, SessionConfig::default())
    }

    /// A session with `config`. Allocates the session's completion records and batch list
    /// in the process.
    pub fn with_config(
        mm: &Arc<Mm>,
        portal: Va,
        shared: bool,
        config: SessionConfig,
    ) -> Result<Self> {
        if !portal.is_aligned(DESCRIPTOR_SIZE as u64) {
            return Err(Error::Invalid(format!(
                "portal {portal} is not 64-byte aligned"
            )));
        }
        if config.max_batch == 0 || config.max_batch > 1 << 16 {
            return Err(Error::Invalid("max_batch must be 1..=65536".to_string()));
        }
        let records = ((config.max_batch + 1) * COMPLETION_RECORD_SIZE) as u64;
        let list_off = records.next_multiple_of(DESCRIPTOR_SIZE as u64);
        let scratch_len = list_off + (config.max_batch * DESCRIPTOR_SIZE) as u64;
        let scratch = mm.mmap(
            None,
            scratch_len,
            Prot::READ | Prot::WRITE,
            MapFlags::PRIVATE,
        )?;
        Ok(Self {
            mm: mm.clone(),
            portal,
            shared,
            config,
            scratch,
            scratch_len,
            list: scratch + list_off,
            stats: SessionStats::default(),
            handle: None,
        })
    }

    /// Opens a work queue of the uacce device `dev` for the process `mm` (binding it),
    /// maps the portal, starts the queue and learns whether it is shared: a session in a
    /// few lines. The queue is closed (and `mm` unbound) with the session.
    pub fn open(dev: &Arc<sva_uacce::Uacce>, mm: &Arc<Mm>, config: SessionConfig) -> Result<Self> {
        use sva_uacce::{Queue, Region};
        let q = Queue::open(dev, mm)?;
        let portal = q.mmap(mm, Region::Mmio)?;
        let shared = q.ioctl(mm, crate::driver::IOCTL_WQ_SHARED, 0)? != 0;
        q.start(mm)?;
        let mut s = Self::with_config(mm, portal, shared, config)?;
        s.handle = Some(q);
        Ok(s)
    }

    /// The uacce queue, when [`DsaSession::open`] opened it.
    pub fn handle(&self) -> Option<&sva_uacce::Queue> {
        self.handle.as_ref()
    }

    /// The session's counters.
    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    fn slot(&self, i: usize) -> Va {
        self.scratch + (i * COMPLETION_RECORD_SIZE) as u64
    }

    /// Copies `len` bytes from `src` to `dst` (the buffers may overlap).
    pub fn copy(&mut self, dst: Va, src: Va, len: u32) -> Result<CompletionRecord> {
        self.submit(&Descriptor::memmove(0, src.raw(), dst.raw(), len))
    }

    /// Fills `len` bytes at `dst` with the 8-byte `pattern` (little endian) repeated.
    pub fn fill(&mut self, dst: Va, pattern: u64, len: u32) -> Result<CompletionRecord> {
        self.submit(&Descriptor::memfill(0, dst.raw(), pattern, len))
    }

    /// Compares `len` bytes at `a` and `b`: result 0 if equal; else result 1, status
    /// Success with false predicate, and bytes completed = offset of the first difference.
    pub fn compare(&mut self, a: Va, b: Va, len: u32) -> Result<CompletionRecord> {
        self.submit(&Descriptor::compare(0, a.raw(), b.raw(), len))
    }

    /// Compares `len` bytes at `src` with `pattern` repeated, like [`DsaSession::compare`].
    pub fn compare_pattern(&mut self, src: Va, pattern: u64, len: u32) -> Result<CompletionRecord> {
        self.submit(&Descriptor::compare_pattern(0, src.raw(), pattern, len))
    }

    /// CRC-32C of `len` bytes at `src` (in the record's CRC value).
    pub fn crc32c(&mut self, src: Va, len: u32) -> Result<CompletionRecord> {
        self.crc32c_seeded(src, len, 0)
    }

    /// CRC-32C of `len` bytes at `src`, continuing the CRC `seed` of earlier data.
    pub fn crc32c_seeded(&mut self, src: Va, len: u32, seed: u32) -> Result<CompletionRecord> {
        self.submit(&Descriptor::crc32c(0, src.raw(), len, seed))
    }

    /// Copies `len` bytes from `src` to `dst1` and `dst2` (equal in bits `[11:0]`).
    pub fn dualcast(&mut self, src: Va, dst1: Va, dst2: Va, len: u32) -> Result<CompletionRecord> {
        self.submit(&Descriptor::dualcast(
            0,
            src.raw(),
            dst1.raw(),
            dst2.raw(),
            len,
        ))
    }

    /// A no-op descriptor (a round trip through the work queue).
    pub fn noop(&mut self) -> Result<CompletionRecord> {
        self.submit(&Descriptor::noop(0))
    }

    /// A drain: completes after the work queue's earlier descriptors.
    pub fn drain(&mut self) -> Result<CompletionRecord> {
        self.submit(&Descriptor::drain(0))
    }

    /// Submits `desc` (its completion address and CRAV/RCR replaced by the session's, BOF
    /// set per the configuration), waits for the record, and resumes after partial
    /// completions. The returned record is the last one, with bytes completed counted from
    /// the start of the original operation.
    pub fn submit(&mut self, desc: &Descriptor) -> Result<CompletionRecord> {
        let d = self.prepare(desc, self.slot(0));
        self.run(d, 0)
    }

    fn prepare(&self, desc: &Descriptor, record: Va) -> Descriptor {
        let mut d = *desc;
        d.completion_addr = record.raw();
        d.flags.set_crav(true);
        d.flags.set_rcr(true);
        d.flags.set_bof(self.config.block_on_fault);
        d
    }

    /// Stores a descriptor to the portal.
    fn store(&mut self, d: &Descriptor) -> Result<()> {
        let bytes = d.encode();
        if !self.shared {
            // MOVDIR64B: posted, no answer.
            self.mm.write(self.portal, &bytes)?;
            self.stats.submissions += 1;
            return Ok(());
        }
        for attempt in 0..=self.config.enqcmd_retries {
            if self.mm.enqcmd(self.portal, &bytes)? {
                self.stats.submissions += 1;
                return Ok(());
            }
            self.stats.enqcmd_retries += 1;
            if attempt < self.config.enqcmd_retries {
                std::thread::yield_now();
            }
        }
        Err(Error::Busy("ENQCMD retries exhausted"))
    }

    /// Polls the record at `at` until its status byte is set, then reads it whole (the
    /// device writes the status byte last).
    fn poll(&self, at: Va) -> Result<CompletionRecord> {
        let deadline = Instant::now() + self.config.poll_timeout;
        let mut spins = 0u32;
        loop {
            let mut status = [0u8; 1];
            self.mm.read(at, &mut status)?;
            if status[0] != 0 {
                let mut b = [0u8; COMPLETION_RECORD_SIZE];
                self.mm.read(at, &mut b)?;
                return Ok(CompletionRecord::decode(&b));
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout("the completion record"));
            }
            spins += 1;
            if spins < 64 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }

    /// Touches the page the device faulted on, as the access the device attempted.
    fn touch_fault(&mut self, rec: &CompletionRecord) -> Result<()> {
        let kind = if rec.fault_on_write() {
            AccessKind::Write
        } else {
            AccessKind::Read
        };
        self.mm.touch(Va(rec.fault_addr), 1, kind)?;
        self.stats.faults_touched += 1;
        Ok(())
    }

    /// Prepares the rest of an operation that completed `rec.bytes_completed` bytes.
    /// `false` if it cannot be resumed.
    fn advance(d: &mut Descriptor, rec: &CompletionRecord) -> bool {
        let bc = u64::from(rec.bytes_completed);
        if rec.bytes_completed >= d.xfer_size {
            return false;
        }
        d.xfer_size -= rec.bytes_completed;
        match d.op() {
            Some(Opcode::Memmove) => {
                // result 1: the copy ran from the end; the done part is the top, so the
                // addresses stay.
                if rec.result == 0 {
                    d.src += bc;
                    d.dst += bc;
                }
            }
            Some(Opcode::Memfill) => {
                d.dst += bc;
                d.src = rotate_pattern(d.src, bc);
            }
            Some(Opcode::Compare) => {
                d.src += bc;
                d.dst += bc;
            }
            Some(Opcode::CompareValue) => {
                d.src += bc;
                d.dst = rotate_pattern(d.dst, bc);
            }
            Some(Opcode::Dualcast) => {
                d.src += bc;
                d.dst += bc;
                d.set_dst2(d.dst2() + bc);
            }
            Some(Opcode::CrcGen) => {
                d.src += bc;
                d.set_crc_seed(rec.crc_val() as u32);
            }
            _ => return false,
        }
        true
    }

    /// Submits `d` (already prepared, its record at `d.completion_addr`) and resumes after
    /// partial completions; `done_before` bytes were completed by earlier submissions.
    fn run(&mut self, mut d: Descriptor, mut done_before: u64) -> Result<CompletionRecord> {
        let at = Va(d.completion_addr);
        let mut resubmits = 0;
        loop {
            self.mm.write(at, &[0u8; COMPLETION_RECORD_SIZE])?;
            self.store(&d)?;
            let mut rec = self.poll(at)?;
            if rec.status() == Some(Status::PageFaultNoBof) && resubmits < self.config.max_resubmits
            {
                let done = rec.bytes_completed;
                if Self::advance(&mut d, &rec) {
                    self.touch_fault(&rec)?;
                    done_before += u64::from(done);
                    resubmits += 1;
                    self.stats.resubmissions += 1;
                    continue;
                }
            }
            rec.bytes_completed = (u64::from(rec.bytes_completed) + done_before) as u32;
            return Ok(rec);
        }
    }

    /// Runs `members` as one batch (2 to [`SessionConfig::max_batch`] descriptors; the
    /// device rejects other counts). Each member gets its own completion record; the flags
    /// FENCE and the member's own fields are kept. Afterwards, members that completed
    /// partially are resumed, and members abandoned after a fence are run when everything
    /// before them succeeded.
    pub fn batch(&mut self, members: &[Descriptor]) -> Result<BatchResult> {
        let n = members.len();
        if n > self.config.max_batch {
            return Err(Error::Invalid(format!(
                "batch of {n} descriptors exceeds the session's {}",
                self.config.max_batch
            )));
        }
        let prepared: Vec<Descriptor> = members
            .iter()
            .enumerate()
            .map(|(i, m)| self.prepare(m, self.slot(i + 1)))
            .collect();
        for (i, m) in prepared.iter().enumerate() {
            self.mm
                .write(self.slot(i + 1), &[0u8; COMPLETION_RECORD_SIZE])?;
            self.mm
                .write(self.list + (i * DESCRIPTOR_SIZE) as u64, &m.encode())?;
        }
        let at = self.slot(0);
        let mut start = 0usize;
        let mut resubmits = 0;
        let mut record = loop {
            let rest = n - start;
            if n >= 2 && rest == 1 {
                // One member left after a list fault: run it on its own.
                let r = self.run(prepared[start], 0)?;
                let mut b = CompletionRecord::with_status(if r.status() == Some(Status::Success) {
                    Status::Success
                } else {
                    Status::BatchFail
                });
                b.bytes_completed = 1;
                break b;
            }
            let batch = self.prepare(
                &Descriptor::batch(
                    0,
                    (self.list + (start * DESCRIPTOR_SIZE) as u64).raw(),
                    rest as u32,
                ),
                at,
            );
            self.mm.write(at, &[0u8; COMPLETION_RECORD_SIZE])?;
            self.store(&batch)?;
            let rec = self.poll(at)?;
            if rec.status() == Some(Status::BatchPageFault)
                && resubmits < self.config.max_resubmits
                && (rec.bytes_completed as usize) < rest
            {
                self.touch_fault(&rec)?;
                start += rec.bytes_completed as usize;
                resubmits += 1;
                self.stats.resubmissions += 1;
                continue;
            }
            break rec;
        };
        record.bytes_completed = (start as u64 + u64::from(record.bytes_completed)) as u32;

        let mut results = Vec::with_capacity(n);
        let mut recovered = 0;
        let mut all_ok = true;
        let mut abandon = false;
        for (i, m) in prepared.iter().enumerate() {
            let mut b = [0u8; COMPLETION_RECORD_SIZE];
            self.mm.read(self.slot(i + 1), &mut b)?;
            let mut r = CompletionRecord::decode(&b);
            let batch_failed = matches!(
                record.status(),
                Some(Status::BatchFail | Status::BatchPageFault)
            );
            if batch_failed && r.status() == Some(Status::PageFaultNoBof) {
                let mut rest = *m;
                if Self::advance(&mut rest, &r) {
                    self.touch_fault(&r)?;
                    self.stats.resubmissions += 1;
                    r = self.run(rest, u64::from(r.bytes_completed))?;
                    recovered += 1;
                }
            } else if batch_failed && !r.is_complete() {
                if abandon || (m.flags.fence() && !all_ok) {
                    abandon = true;
                } else {
                    self.stats.resubmissions += 1;
                    r = self.run(*m, 0)?;
                    recovered += 1;
                }
            }
            all_ok &= r.status() == Some(Status::Success);
            results.push(r);
        }
        Ok(BatchResult {
            record,
            members: results,
            recovered,
        })
    }
}

impl Drop for DsaSession {
    fn drop(&mut self) {
        let _ = self.mm.munmap(self.scratch, self.scratch_len);
    }
}
