//! The DSA device model ("hardware"): work queues with their portals, engine threads that
//! execute descriptors asynchronously, the software error register and counters.
//!
//! A portal store only queues the descriptor (it never waits for DMA, because I/O page
//! faults are resolved on other threads); engines take descriptors from the work queues in
//! round-robin order and execute them through [`Dma`] in the descriptor's PASID.

use crate::counters::{CounterSet, Counters};
use crate::exec::{Exec, Hooks, Limits, SwErrReport};
use crate::swerr::{
    SWERR_POSTED_TO_SHARED_WQ, SWERR_WQ_DISABLED, SWERR_WQ_FULL, SwErr, SwErrWord0, SwErrWord1,
};
use crate::{CompletionRecord, DESCRIPTOR_SIZE, Descriptor, Error, Opcode, Result};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use sva_addr::Pasid;
use sva_mm::{IoError, IoMemory};
use sva_pcie::Dma;

/// Size of one work queue's portal (the page user space maps).
pub const PORTAL_SIZE: u64 = 4096;

/// How often idle engines and waiters re-check their stop conditions.
const POLL: Duration = Duration::from_millis(20);

/// How descriptors reach a work queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WqMode {
    /// One client, whose PASID the driver programs into the WQ; descriptors arrive by
    /// MOVDIR64B (posted: a full or disabled WQ drops them and records a software error).
    Dedicated,
    /// Many clients; descriptors arrive by ENQCMD, which carries the submitter's PASID and
    /// reports retry when the WQ cannot accept.
    Shared,
}

/// One work queue's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WqConfig {
    /// Dedicated or shared.
    pub mode: WqMode,
    /// Entries: descriptors that can wait for an engine.
    pub size: usize,
}

/// The device's configuration (GENCAP / WQCFG / GRPCFG, in short).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// The work queues, indexed from 0.
    pub wqs: Vec<WqConfig>,
    /// Engine threads (descriptors executed concurrently).
    pub engines: usize,
    /// Largest transfer size (bytes).
    pub max_xfer_size: u32,
    /// Largest batch (descriptors).
    pub max_batch_size: u32,
    /// How long a WQ disable or PASID drain lets queued and running descriptors finish
    /// before aborting them.
    pub drain_timeout: Duration,
    /// How long an abort may take (a descriptor blocked in a page fault cannot be stopped
    /// before its DMA returns) before the disable or drain gives up with a timeout.
    pub abort_timeout: Duration,
    /// Completion records kept for the driver when they could not be written.
    pub cr_fault_log: usize,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            wqs: vec![
                WqConfig {
                    mode: WqMode::Dedicated,
                    size: 16,
                },
                WqConfig {
                    mode: WqMode::Shared,
                    size: 32,
                },
            ],
            engines: 2,
            max_xfer_size: 2 << 20,
            max_batch_size: 32,
            drain_timeout: Duration::from_secs(2),
            abort_timeout: Duration::from_secs(10),
            cr_fault_log: 64,
        }
    }
}

/// A completion record the device could not write (CRA_XLAT), kept for the driver, which
/// can copy it into the process (as Linux's `idxd_evl_fault_work` does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrFault {
    /// The work queue.
    pub wq: usize,
    /// The PASID the descriptor ran in.
    pub pasid: Option<Pasid>,
    /// The completion record address.
    pub address: u64,
    /// The record.
    pub record: CompletionRecord,
}

struct Job {
    raw: [u8; DESCRIPTOR_SIZE],
    pasid: Option<Pasid>,
    seq: u64,
}

struct Wq {
    cfg: WqConfig,
    enabled: bool,
    /// The dedicated WQ's PASID.
    pasid: Option<Pasid>,
    queue: VecDeque<Job>,
    /// (sequence, PASID) of the descriptors engines are executing.
    running: Vec<(u64, Option<Pasid>)>,
    /// PASIDs whose ENQCMDs are refused (being drained or stopped).
    blocked: BTreeSet<Pasid>,
    abort_all: bool,
    aborting: BTreeSet<Pasid>,
    completions: BTreeMap<Option<Pasid>, u64>,
}

struct State {
    wqs: Vec<Wq>,
    next_wq: usize,
    next_seq: u64,
    swerr: SwErr,
    cr_faults: VecDeque<CrFault>,
}

struct Inner {
    config: DeviceConfig,
    dma: Arc<dyn Dma>,
    state: Mutex<State>,
    /// Signalled when a descriptor is queued.
    work: Condvar,
    /// Signalled when a descriptor finishes.
    idle: Condvar,
    stopping: AtomicBool,
    /// Drains in their abort phase.
    aborts: AtomicUsize,
    counters: CounterSet,
}

/// Which descriptors a quiesce waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    All,
    Pasid(Pasid),
}

impl Target {
    fn matches(self, pasid: Option<Pasid>) -> bool {
        match self {
            Target::All => true,
            Target::Pasid(p) => pasid == Some(p),
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(
        &self,
        cv: &Condvar,
        st: MutexGuard<'a, State>,
        d: Duration,
    ) -> MutexGuard<'a, State> {
        cv.wait_timeout(st, d)
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }

    fn record_swerr(&self, st: &mut State, word0: SwErrWord0, word1: SwErrWord1, address: u64) {
        if st.swerr.word0.valid() {
            st.swerr.word0.set_overflow(true);
        } else {
            st.swerr = SwErr {
                word0: word0.with_valid(true),
                word1,
                address,
            };
        }
    }

    /// A portal store: MOVDIR64B (`enqcmd` false) or ENQCMD with the submitter's PASID.
    fn submit(
        &self,
        wq: usize,
        offset: u64,
        raw: &[u8; DESCRIPTOR_SIZE],
        enqcmd: Option<Option<Pasid>>,
    ) -> core::result::Result<bool, IoError> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(IoError::Bus(offset));
        }
        let mut st = self.lock();
        let seq = st.next_seq;
        let w = &mut st.wqs[wq];
        let opcode = raw[7];
        let dropped = |error: u8| {
            SwErrWord0::new()
                .with_wq_idx_valid(true)
                .with_wq_idx(wq as u8)
                .with_error(error)
                .with_operation(opcode)
        };
        let pasid = match (w.cfg.mode, enqcmd) {
            (WqMode::Dedicated, Some(_)) => return Err(IoError::Unsupported(offset)),
            (WqMode::Shared, Some(None)) => return Err(IoError::Unsupported(offset)),
            (WqMode::Shared, None) => {
                CounterSet::add(&self.counters.dropped, 1);
                self.record_swerr(
                    &mut st,
                    dropped(SWERR_POSTED_TO_SHARED_WQ),
                    SwErrWord1::new(),
                    0,
                );
                return Ok(true);
            }
            (WqMode::Dedicated, None) => {
                let error = if !w.enabled {
                    Some(SWERR_WQ_DISABLED)
                } else if w.queue.len() >= w.cfg.size {
                    Some(SWERR_WQ_FULL)
                } else {
                    None
                };
                if let Some(error) = error {
                    CounterSet::add(&self.counters.dropped, 1);
                    self.record_swerr(&mut st, dropped(error), SwErrWord1::new(), 0);
                    return Ok(true);
                }
                w.pasid
            }
            (WqMode::Shared, Some(Some(p))) => {
                if !w.enabled || w.blocked.contains(&p) || w.queue.len() >= w.cfg.size {
                    CounterSet::add(&self.counters.retries, 1);
                    return Ok(false);
                }
                Some(p)
            }
        };
        w.queue.push_back(Job {
            raw: *raw,
            pasid,
            seq,
        });
        st.next_seq += 1;
        CounterSet::add(&self.counters.submitted, 1);
        drop(st);
        self.work.notify_one();
        Ok(true)
    }

    fn take_job(&self, st: &mut State) -> Option<(usize, Job)> {
        let n = st.wqs.len();
        for k in 0..n {
            let i = (st.next_wq + k) % n;
            if let Some(job) = st.wqs[i].queue.pop_front() {
                st.wqs[i].running.push((job.seq, job.pasid));
                st.next_wq = (i + 1) % n;
                return Some((i, job));
            }
        }
        None
    }

    fn engine(self: &Arc<Self>) {
        loop {
            let (wq, job) = {
                let mut st = self.lock();
                loop {
                    if self.stopping.load(Ordering::Acquire) {
                        return;
                    }
                    if let Some(x) = self.take_job(&mut st) {
                        break x;
                    }
                    st = self.wait(&self.work, st, POLL);
                }
            };
            self.run(wq, &job);
            let mut st = self.lock();
            let w = &mut st.wqs[wq];
            w.running.retain(|r| r.0 != job.seq);
            *w.completions.entry(job.pasid).or_default() += 1;
            drop(st);
            self.idle.notify_all();
        }
    }

    fn run(&self, wq: usize, job: &Job) {
        let d = Descriptor::decode(&job.raw);
        let hooks = JobHooks {
            inner: self,
            wq,
            pasid: job.pasid,
        };
        let exec = Exec {
            dma: &*self.dma,
            limits: Limits {
                max_xfer_size: self.config.max_xfer_size,
                max_batch_size: self.config.max_batch_size,
            },
            counters: &self.counters,
            hooks: &hooks,
            pasid: job.pasid,
        };
        if d.op() == Some(Opcode::Drain) && !self.wait_earlier(wq, job.seq, &hooks) {
            CounterSet::add(&self.counters.aborted, 1);
            return;
        }
        match exec.execute(&d, None) {
            Ok(rec) if !hooks.aborted() => {
                exec.deliver(&d, &rec, None);
            }
            _ => CounterSet::add(&self.counters.aborted, 1),
        }
    }

    /// Waits until no descriptor queued before `seq` on `wq` is running (a drain). False if
    /// aborted or the device stops.
    fn wait_earlier(&self, wq: usize, seq: u64, hooks: &JobHooks<'_>) -> bool {
        let mut st = self.lock();
        loop {
            if self.stopping.load(Ordering::Acquire) {
                return false;
            }
            if !st.wqs[wq].running.iter().any(|r| r.0 < seq) {
                return true;
            }
            drop(st);
            if hooks.aborted() {
                return false;
            }
            st = self.lock();
            st = self.wait(&self.idle, st, POLL);
        }
    }

    /// Waits for the descriptors of `target` on `wq` to finish; after the drain timeout,
    /// removes the queued ones and stops the running ones at their next chunk.
    fn quiesce(&self, wq: usize, target: Target) -> Result<()> {
        let mut st = self.lock();
        let deadline = Instant::now() + self.config.drain_timeout;
        let mut abort_deadline: Option<Instant> = None;
        let result = loop {
            let w = &st.wqs[wq];
            let pending = w.queue.iter().any(|j| target.matches(j.pasid))
                || w.running.iter().any(|r| target.matches(r.1));
            if !pending {
                break Ok(());
            }
            let now = Instant::now();
            match abort_deadline {
                None if now >= deadline => {
                    let w = &mut st.wqs[wq];
                    let before = w.queue.len();
                    w.queue.retain(|j| !target.matches(j.pasid));
                    CounterSet::add(&self.counters.aborted, (before - w.queue.len()) as u64);
                    match target {
                        Target::All => w.abort_all = true,
                        Target::Pasid(p) => {
                            w.aborting.insert(p);
                        }
                    }
                    self.aborts.fetch_add(1, Ordering::AcqRel);
                    abort_deadline = Some(now + self.config.abort_timeout);
                    continue;
                }
                Some(t) if now >= t => break Err(Error::Timeout("engines to leave the PASID")),
                _ => {}
            }
            let until = abort_deadline.unwrap_or(deadline);
            st = self.wait(
                &self.idle,
                st,
                until.saturating_duration_since(now).min(POLL),
            );
        };
        if abort_deadline.is_some() {
            let w = &mut st.wqs[wq];
            match target {
                Target::All => w.abort_all = false,
                Target::Pasid(p) => {
                    w.aborting.remove(&p);
                }
            }
            self.aborts.fetch_sub(1, Ordering::AcqRel);
        }
        result
    }
}

/// The device side of one running descriptor.
struct JobHooks<'a> {
    inner: &'a Inner,
    wq: usize,
    pasid: Option<Pasid>,
}

impl Hooks for JobHooks<'_> {
    fn aborted(&self) -> bool {
        if self.inner.stopping.load(Ordering::Acquire) {
            return true;
        }
        if self.inner.aborts.load(Ordering::Acquire) == 0 {
            return false;
        }
        let st = self.inner.lock();
        let w = &st.wqs[self.wq];
        w.abort_all || self.pasid.is_some_and(|p| w.aborting.contains(&p))
    }

    fn swerr(&self, r: SwErrReport) {
        let word0 = SwErrWord0::new()
            .with_desc_valid(true)
            .with_wq_idx_valid(true)
            .with_wq_idx(self.wq as u8)
            .with_batch(r.batch_idx.is_some())
            .with_fault_rw(r.fault_write)
            .with_privileged(r.privileged)
            .with_error(r.error)
            .with_operation(r.opcode)
            .with_pasid(self.pasid.map_or(0, Pasid::raw));
        let word1 = SwErrWord1::new()
            .with_batch_idx(r.batch_idx.unwrap_or(0))
            .with_invalid_flags(r.invalid_flags);
        let mut st = self.inner.lock();
        self.inner.record_swerr(&mut st, word0, word1, r.address);
    }

    fn cr_fault(&self, address: u64, record: CompletionRecord) {
        let mut st = self.inner.lock();
        if st.cr_faults.len() >= self.inner.config.cr_fault_log {
            st.cr_faults.pop_front();
        }
        st.cr_faults.push_back(CrFault {
            wq: self.wq,
            pasid: self.pasid,
            address,
            record,
        });
    }
}

/// A work queue's portal: the MMIO page a process maps and stores descriptors to.
struct Portal {
    inner: Arc<Inner>,
    wq: usize,
}

impl Portal {
    fn descriptor(
        &self,
        offset: u64,
        data: &[u8],
    ) -> core::result::Result<[u8; DESCRIPTOR_SIZE], IoError> {
        if offset >= PORTAL_SIZE {
            return Err(IoError::Bus(offset));
        }
        if !offset.is_multiple_of(DESCRIPTOR_SIZE as u64) {
            return Err(IoError::Unsupported(offset));
        }
        data.try_into().map_err(|_| IoError::Unsupported(offset))
    }
}

impl IoMemory for Portal {
    fn size(&self) -> u64 {
        PORTAL_SIZE
    }

    fn read(&self, offset: u64, _buf: &mut [u8]) -> core::result::Result<(), IoError> {
        // Portals are write-only.
        Err(IoError::Unsupported(offset))
    }

    fn write(&self, offset: u64, data: &[u8]) -> core::result::Result<(), IoError> {
        let raw = self.descriptor(offset, data)?;
        self.inner.submit(self.wq, offset, &raw, None).map(|_| ())
    }

    fn enqueue(
        &self,
        offset: u64,
        data: &[u8; 64],
        pasid: Option<Pasid>,
    ) -> core::result::Result<bool, IoError> {
        let raw = self.descriptor(offset, data)?;
        self.inner.submit(self.wq, offset, &raw, Some(pasid))
    }
}

/// The DSA device. Dropping it stops the engines (after the descriptors they are running).
pub struct Device {
    inner: Arc<Inner>,
    engines: Vec<JoinHandle<()>>,
}

impl core::fmt::Debug for Device {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Device")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// A device reaching memory through `dma`. Work queues start disabled.
    pub fn new(dma: Arc<dyn Dma>, config: DeviceConfig) -> Result<Self> {
        if config.wqs.is_empty() || config.wqs.len() > 256 {
            return Err(Error::Config("1 to 256 work queues"));
        }
        if config.wqs.iter().any(|w| w.size == 0) {
            return Err(Error::Config("a work queue needs at least one entry"));
        }
        if config.engines == 0 {
            return Err(Error::Config("at least one engine"));
        }
        if config.max_xfer_size == 0 || config.max_batch_size < 2 || config.max_batch_size > 1 << 16
        {
            return Err(Error::Config("transfer size >= 1, batch size 2..=65536"));
        }
        let wqs = config
            .wqs
            .iter()
            .map(|&cfg| Wq {
                cfg,
                enabled: false,
                pasid: None,
                queue: VecDeque::new(),
                running: Vec::new(),
                blocked: BTreeSet::new(),
                abort_all: false,
                aborting: BTreeSet::new(),
                completions: BTreeMap::new(),
            })
            .collect();
        let inner = Arc::new(Inner {
            dma,
            state: Mutex::new(State {
                wqs,
                next_wq: 0,
                next_seq: 0,
                swerr: SwErr::default(),
                cr_faults: VecDeque::new(),
            }),
            work: Condvar::new(),
            idle: Condvar::new(),
            stopping: AtomicBool::new(false),
            aborts: AtomicUsize::new(0),
            counters: CounterSet::new(),
            config,
        });
        let engine_count = inner.config.engines;
        let mut engines = Vec::with_capacity(engine_count);
        for i in 0..engine_count {
            let engine = inner.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("dsa-engine-{i}"))
                .spawn(move || engine.engine());
            match spawned {
                Ok(h) => engines.push(h),
                Err(_) => {
                    let dev = Self { inner, engines };
                    drop(dev);
                    return Err(Error::Config("cannot start an engine thread"));
                }
            }
        }
        Ok(Self { inner, engines })
    }

    /// The configuration.
    pub fn config(&self) -> &DeviceConfig {
        &self.inner.config
    }

    fn check_wq(&self, wq: usize) -> Result<WqConfig> {
        self.inner
            .config
            .wqs
            .get(wq)
            .copied()
            .ok_or(Error::NoWq(wq))
    }

    /// Work queue `wq`'s mode.
    pub fn wq_mode(&self, wq: usize) -> Result<WqMode> {
        Ok(self.check_wq(wq)?.mode)
    }

    /// Work queue `wq`'s portal page, for the driver to map into a process.
    pub fn portal(&self, wq: usize) -> Result<Arc<dyn IoMemory>> {
        self.check_wq(wq)?;
        Ok(Arc::new(Portal {
            inner: self.inner.clone(),
            wq,
        }))
    }

    /// Programs a dedicated WQ's PASID (`None`: requests without PASID). The WQ must be
    /// disabled.
    pub fn set_wq_pasid(&self, wq: usize, pasid: Option<Pasid>) -> Result<()> {
        let cfg = self.check_wq(wq)?;
        if cfg.mode != WqMode::Dedicated {
            return Err(Error::WrongMode { wq, mode: cfg.mode });
        }
        let mut st = self.inner.lock();
        let w = &mut st.wqs[wq];
        if w.enabled {
            return Err(Error::WqEnabled(wq));
        }
        w.pasid = pasid;
        Ok(())
    }

    /// Enables a work queue: it accepts descriptors from now on.
    pub fn enable_wq(&self, wq: usize) -> Result<()> {
        self.check_wq(wq)?;
        self.inner.lock().wqs[wq].enabled = true;
        Ok(())
    }

    /// Whether a work queue is enabled.
    pub fn is_wq_enabled(&self, wq: usize) -> Result<bool> {
        self.check_wq(wq)?;
        Ok(self.inner.lock().wqs[wq].enabled)
    }

    /// Disables a work queue: it stops accepting descriptors, and this returns once none
    /// of its descriptors is queued or running (they finish within the drain timeout, or
    /// are aborted). [`Error::Timeout`] if an aborted descriptor is still in a DMA after
    /// the abort timeout.
    pub fn disable_wq(&self, wq: usize) -> Result<()> {
        self.check_wq(wq)?;
        self.inner.lock().wqs[wq].enabled = false;
        self.inner.quiesce(wq, Target::All)
    }

    /// Drains `pasid` from a shared work queue: ENQCMDs with `pasid` are refused (retry)
    /// until [`Device::unblock_pasid`], and this returns once no descriptor of `pasid` is
    /// queued or running on the WQ (finished, or aborted after the drain timeout).
    pub fn drain_pasid(&self, wq: usize, pasid: Pasid) -> Result<()> {
        self.check_wq(wq)?;
        self.inner.lock().wqs[wq].blocked.insert(pasid);
        self.inner.quiesce(wq, Target::Pasid(pasid))
    }

    /// Lets a drained PASID submit to a shared work queue again.
    pub fn unblock_pasid(&self, wq: usize, pasid: Pasid) -> Result<()> {
        self.check_wq(wq)?;
        self.inner.lock().wqs[wq].blocked.remove(&pasid);
        Ok(())
    }

    /// Descriptors waiting in a work queue for an engine.
    pub fn wq_occupancy(&self, wq: usize) -> Result<usize> {
        self.check_wq(wq)?;
        Ok(self.inner.lock().wqs[wq].queue.len())
    }

    /// Descriptors of `pasid` a work queue has finished (completed or aborted while
    /// running) since the device started.
    pub fn completions(&self, wq: usize, pasid: Option<Pasid>) -> Result<u64> {
        self.check_wq(wq)?;
        Ok(self.inner.lock().wqs[wq]
            .completions
            .get(&pasid)
            .copied()
            .unwrap_or(0))
    }

    /// The software error register.
    pub fn swerr(&self) -> SwErr {
        self.inner.lock().swerr
    }

    /// Clears the software error register (write-1-to-clear of the valid bit).
    pub fn clear_swerr(&self) {
        self.inner.lock().swerr = SwErr::default();
    }

    /// Takes the completion records that could not be written.
    pub fn take_cr_faults(&self) -> Vec<CrFault> {
        self.inner.lock().cr_faults.drain(..).collect()
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        self.inner.counters.snapshot()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.inner.stopping.store(true, Ordering::Release);
        self.inner.work.notify_all();
        self.inner.idle.notify_all();
        for h in self.engines.drain(..) {
            let _ = h.join();
        }
    }
}
