//! The runner: builds the world a [`Plan`] describes and executes its steps in order.
//!
//! # Reproducibility
//! Steps run one at a time on one thread. After every step the runner lets the devices
//! work until each job in flight has completed or waits for a page while faults are held
//! (`hold_faults`): an asynchronous job never races the next step, so the same file and
//! seed give the same results and counters. Steps that must wait for a device while its
//! job waits for a held fault (`exit`, `close`) answer the held faults only once the
//! process's address space is marked exited or the queue is stopped, which keeps their
//! outcome deterministic too.

use super::check::*;
use super::report::{self, Check, Failure, JobReport, Report, Timeline};
use super::spec::{ErrorClass, ErrorSpec, JobStatus, QueueStateSpec, RandomKind, StepKind};
use crate::trace::Trace;
use crate::world::World;
use anyhow::{Context, Result};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use sva_addr::{Pasid, Va};
use sva_dsa::{CompletionRecord, DsaSession, SessionConfig, Status};
use sva_iommu::{Bond, DeviceId, Sva};
use sva_mm::{AccessKind, MapFlags, Mm};
use sva_zip::Alg;
use sva_zip::user::{CompResult, CompSession, CompStatus, Op};

/// How long the devices may take to finish or reach a held fault after a step.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a data-mover session polls one completion record.
const DSA_POLL_TIMEOUT: Duration = Duration::from_secs(60);

/// What the command line asks of a run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The seed (default: the file's).
    pub seed: Option<u64>,
    /// Write a Chrome trace here.
    pub trace: Option<std::path::PathBuf>,
}

/// An error of a step, with its class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    /// Its class.
    pub class: ErrorClass,
    /// What happened.
    pub message: String,
}

impl StepError {
    fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
        }
    }

    /// Queue `q` has no open session of the kind the step needs.
    fn not_open(q: &str) -> Self {
        Self::new(ErrorClass::State, format!("queue `{q}` is not open"))
    }

    /// The process that opened queue `q` has exited: nothing more runs on it.
    fn owner_exited(q: &str) -> Self {
        Self::new(
            ErrorClass::Exited,
            format!("the process that opened `{q}` has exited"),
        )
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.class.name())
    }
}

fn class_mm(e: &sva_mm::Error) -> ErrorClass {
    use sva_mm::Error as E;
    match e {
        E::Exited(_) | E::NoProcess(_) => ErrorClass::Exited,
        E::Segv { .. }
        | E::Bus { .. }
        | E::NotMapped(_)
        | E::IoUnsupported { .. }
        | E::NotDeviceMemory(_)
        | E::EnqcmdUnaligned(_) => ErrorClass::Fault,
        E::Unaligned { .. }
        | E::ZeroLength
        | E::OutOfRange { .. }
        | E::InvalidFlags(_)
        | E::BadRegion(_)
        | E::NoSpace(_)
        | E::Exists { .. } => ErrorClass::Invalid,
        E::PageShared(_) => ErrorClass::Busy,
        _ => ErrorClass::Other,
    }
}

fn class_iommu(e: &sva_iommu::Error) -> ErrorClass {
    match e {
        sva_iommu::Error::Exited(_) => ErrorClass::Exited,
        sva_iommu::Error::Mm(m) => class_mm(m),
        _ => ErrorClass::Refused,
    }
}

fn class_uacce(e: &sva_uacce::Error) -> ErrorClass {
    use sva_uacce::Error as E;
    match e {
        E::NotOwner { .. } => ErrorClass::NotOwner,
        E::NoDevice => ErrorClass::NoDevice,
        E::Busy(_) => ErrorClass::Busy,
        E::State { .. } => ErrorClass::State,
        E::AlreadyMapped(_) | E::NoRegion(_) | E::UnknownIoctl(_) | E::Invalid(_) => {
            ErrorClass::Invalid
        }
        E::Sva(s) => class_iommu(s),
        E::Mm(m) => class_mm(m),
    }
}

fn class_zip(e: &sva_zip::Error) -> ErrorClass {
    use sva_zip::Error as E;
    match e {
        E::QueueFull => ErrorClass::QueueFull,
        E::QueueDisabled | E::Running(_) => ErrorClass::State,
        E::Timeout(_) | E::StopTimeout(_) => ErrorClass::Timeout,
        E::Invalid(_) => ErrorClass::Invalid,
        E::Uacce(u) => class_uacce(u),
        E::Mm(m) => class_mm(m),
        _ => ErrorClass::Other,
    }
}

fn class_dsa(e: &sva_dsa::Error) -> ErrorClass {
    use sva_dsa::Error as E;
    match e {
        E::Timeout(_) => ErrorClass::Timeout,
        E::Busy(_) => ErrorClass::Busy,
        E::Invalid(_) | E::Config(_) => ErrorClass::Invalid,
        E::Mm(m) => class_mm(m),
        E::Uacce(u) => class_uacce(u),
        _ => ErrorClass::Other,
    }
}

macro_rules! from_error {
    ($t:ty, $f:ident) => {
        impl From<$t> for StepError {
            fn from(e: $t) -> Self {
                StepError::new($f(&e), e.to_string())
            }
        }
    };
}
from_error!(sva_mm::Error, class_mm);
from_error!(sva_iommu::Error, class_iommu);
from_error!(sva_uacce::Error, class_uacce);
from_error!(sva_zip::Error, class_zip);
from_error!(sva_dsa::Error, class_dsa);

type StepResult<T = String> = Result<T, StepError>;

/// SplitMix64: small, fast, and the same on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(len);
        v
    }
}

/// A job's result.
#[derive(Debug, Clone)]
struct JobResult {
    status: JobStatus,
    code: String,
    fault_addr: Option<u64>,
    bytes: u64,
    crc: Option<u32>,
    /// Compression engine: where the output is (in the owner's address space).
    output: Option<(Va, u64)>,
    /// Why, for errors.
    detail: Option<String>,
}

impl JobResult {
    fn lost(why: &str) -> Self {
        Self {
            status: JobStatus::Lost,
            code: "lost".into(),
            fault_addr: None,
            bytes: 0,
            crc: None,
            output: None,
            detail: Some(why.into()),
        }
    }

    fn summary(&self) -> String {
        let mut s = format!("{} ({})", self.status.name(), self.code);
        if let Some(f) = self.fault_addr {
            s += &format!(" at {f:#x}");
        }
        if self.bytes > 0 {
            s += &format!(", {} bytes", self.bytes);
        }
        if let Some(c) = self.crc {
            s += &format!(", crc32c {c:#010x}");
        }
        if let Some(d) = &self.detail {
            s += &format!(": {d}");
        }
        s
    }
}

#[derive(Debug, Clone)]
enum JobState {
    Pending,
    Done(JobResult),
}

/// One submission.
#[derive(Debug, Clone)]
struct JobSlot {
    /// The job's name, if it has one.
    name: Option<Id>,
    state: JobState,
    queue: Id,
    device: usize,
    op: &'static str,
    alg: Alg,
    async_: bool,
    waited: bool,
    start_ns: u64,
    /// Compression engine: the destination.
    dst: Option<Va>,
}

type DsaThread = JoinHandle<(DsaSession, Result<CompletionRecord, sva_dsa::Error>)>;

enum QueueSlot {
    NotOpen,
    Zip {
        s: CompSession,
        pasid: Option<Pasid>,
        alg: Alg,
        /// Tag → job slot.
        pending: BTreeMap<u32, u64>,
        /// The owner exited: nothing can be polled any more.
        dead: bool,
    },
    Dsa {
        s: Option<DsaSession>,
        pasid: Option<Pasid>,
        running: Option<(u64, DsaThread)>,
        dead: bool,
    },
    Closed {
        pasid: Option<Pasid>,
    },
}

impl QueueSlot {
    fn pasid(&self) -> Option<Pasid> {
        match self {
            Self::NotOpen => None,
            Self::Zip { pasid, .. } | Self::Dsa { pasid, .. } | Self::Closed { pasid } => *pasid,
        }
    }

    fn has_pending(&self) -> bool {
        match self {
            Self::Zip { pending, .. } => !pending.is_empty(),
            Self::Dsa { running, .. } => running.is_some(),
            _ => false,
        }
    }
}

/// A check's runs so far.
struct CheckAgg {
    check: Check,
}

struct Runner<'a> {
    plan: &'a Plan,
    queues: Vec<QueueSlot>,
    w: World,
    sva: Arc<Sva>,
    log: &'a mut dyn Write,
    rng: Rng,
    seed: u64,
    procs: Vec<Option<Arc<Mm>>>,
    bufs: Vec<Option<Va>>,
    bonds: Vec<Option<Bond>>,
    bond_pasids: Vec<Option<Pasid>>,
    /// Submissions whose result may still be asked for, by slot number.
    jobs: BTreeMap<u64, JobSlot>,
    next_slot: u64,
    /// The latest submission of each named job.
    latest: Vec<Option<u64>>,
    /// Submissions of each named job.
    submitted: Vec<u64>,
    held: bool,
    stalls_at_hold: Vec<u64>,
    checks: Vec<CheckAgg>,
    check_of_step: BTreeMap<usize, usize>,
    failure: Option<Failure>,
    steps_run: u64,
    device_jobs: Vec<u64>,
    timeline: Timeline,
    trace: Option<Trace>,
    completed_now: Vec<u64>,
    progress: Progress,
}

/// A progress line on stderr for long runs, only on a terminal (wall-clock time decides
/// when to draw it; nothing of it reaches the report).
struct Progress {
    tty: bool,
    started: Instant,
    drawn: Option<Instant>,
}

impl Progress {
    fn new() -> Self {
        use std::io::IsTerminal;
        Self {
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
            drawn: None,
        }
    }

    /// Redraws the line at most five times a second, after the first second.
    fn tick(&mut self, steps: u64, modeled_ns: u64) {
        let now = Instant::now();
        if !self.tty
            || now.duration_since(self.started) < Duration::from_secs(1)
            || self
                .drawn
                .is_some_and(|d| now.duration_since(d) < Duration::from_millis(200))
        {
            return;
        }
        self.drawn = Some(now);
        eprint!(
            "\r  {steps} steps run, modeled time {}   ",
            report::show_ns(modeled_ns)
        );
    }

    fn done(&self) {
        if self.drawn.is_some() {
            eprintln!();
        }
    }
}

/// The run stopped at a step that failed unexpectedly (recorded in `failure`).
struct Stopped;

/// Runs `plan`, writing a readable log to `log`. `Err` when the world cannot be built.
pub fn run(plan: &Plan, opts: &RunOptions, log: &mut dyn Write) -> Result<Report> {
    let world = World::with_options(plan.platform.clone(), &plan.devices, &plan.device_options)
        .context("setting up the platform")?;
    let sva = world
        .p
        .sva
        .clone()
        .context("the platform has the SVA core")?;
    let seed = opts.seed.unwrap_or(plan.seed);
    let n_dev = plan.devices.len();
    let mut r = Runner {
        plan,
        queues: (0..plan.queues.len()).map(|_| QueueSlot::NotOpen).collect(),
        sva,
        log,
        rng: Rng::new(seed),
        seed,
        procs: vec![None; plan.processes.len()],
        bufs: vec![None; plan.buffers.len()],
        bonds: vec![None; plan.bonds.len()],
        bond_pasids: vec![None; plan.bonds.len()],
        jobs: BTreeMap::new(),
        next_slot: 0,
        latest: vec![None; plan.jobs.len()],
        submitted: vec![0; plan.jobs.len()],
        held: false,
        stalls_at_hold: vec![0; n_dev],
        checks: Vec::new(),
        check_of_step: BTreeMap::new(),
        failure: None,
        steps_run: 0,
        device_jobs: vec![0; n_dev],
        timeline: Timeline::new(&world, plan.costs),
        trace: opts.trace.as_ref().map(|_| Trace::new()),
        completed_now: Vec::new(),
        progress: Progress::new(),
        w: world,
    };
    writeln!(
        r.log,
        "scenario \"{}\" (seed {seed}): {} device(s), {} process(es), {} step(s), {} expectation(s)",
        plan.name,
        plan.devices.len(),
        plan.initial.len(),
        plan.step_count,
        plan.expectations
    )?;
    if let Some(d) = &plan.description {
        writeln!(r.log, "{}", d.trim())?;
    }
    for &p in &plan.initial {
        let mm = r.w.p.system.spawn().context("spawning a process")?;
        r.procs[p] = Some(mm);
    }
    let _ = r.exec_steps(&plan.steps);
    r.progress.done();
    r.finish();
    let report = r.report();
    if let (Some(path), Some(trace)) = (&opts.trace, &r.trace) {
        trace.write(path)?;
        if !trace.is_empty() {
            writeln!(
                r.log,
                "trace: {} events written to {}",
                trace.len(),
                path.display()
            )?;
        }
    }
    writeln!(
        r.log,
        "\nchecks: {} of {} held",
        report.checks.iter().filter(|c| c.ok).count(),
        report.checks.len()
    )?;
    report::write_summary(r.log, &report.stats)?;
    writeln!(r.log, "result: {}", if report.ok { "ok" } else { "FAILED" })?;
    Ok(report)
}

fn status_of_zip(r: &CompResult) -> (JobStatus, String) {
    let code = match r.status {
        CompStatus::Ok => "ok".to_string(),
        CompStatus::NegativeCompression => "negative_compression".into(),
        CompStatus::StreamEnd => "stream_end".into(),
        CompStatus::OutputTooSmall => "output_too_small".into(),
        CompStatus::CrcError => "crc_error".into(),
        CompStatus::DataError => "data_error".into(),
        CompStatus::AddrFault => "addr_fault".into(),
        CompStatus::BadRequest => "bad_request".into(),
        CompStatus::BadLength => "bad_length".into(),
        CompStatus::Aborted => "aborted".into(),
        CompStatus::Other(c) => format!("other_{c:#04x}"),
    };
    let status = match r.status {
        s if s.is_ok() => JobStatus::Ok,
        CompStatus::AddrFault => JobStatus::Fault,
        CompStatus::Aborted => JobStatus::Aborted,
        _ => JobStatus::Error,
    };
    (status, code)
}

/// `PageFaultNoBof` → `page_fault_nobof`.
fn snake(name: &str) -> String {
    let mut s = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                s.push('_');
            }
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

fn dsa_result(rec: &CompletionRecord, crc: bool) -> JobResult {
    let st = rec.status();
    let code = st.map_or_else(
        || format!("code_{:#04x}", rec.code()),
        |s| snake(&format!("{s:?}")),
    );
    let status = match st {
        Some(Status::Success) => JobStatus::Ok,
        Some(Status::SuccessPred) => JobStatus::Mismatch,
        Some(Status::PageFaultNoBof | Status::PageFaultIr | Status::TranslationFail) => {
            JobStatus::Fault
        }
        _ => JobStatus::Error,
    };
    JobResult {
        status,
        code,
        fault_addr: (status == JobStatus::Fault).then_some(rec.fault_addr),
        bytes: u64::from(rec.bytes_completed),
        crc: (crc && status == JobStatus::Ok).then(|| rec.crc_val() as u32),
        output: None,
        detail: None,
    }
}

/// Decompresses `bytes` in `alg`, at most `limit` bytes of output (more is a mismatch
/// anyway, and a stream that inflates without end must not exhaust the host).
fn inflate(alg: Alg, bytes: &[u8], limit: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    match alg {
        Alg::Zlib => flate2::read::ZlibDecoder::new(bytes)
            .take(limit)
            .read_to_end(&mut out)?,
        Alg::Gzip => flate2::read::GzDecoder::new(bytes)
            .take(limit)
            .read_to_end(&mut out)?,
        Alg::Deflate => flate2::read::DeflateDecoder::new(bytes)
            .take(limit)
            .read_to_end(&mut out)?,
    };
    Ok(out)
}

fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or(if a.len() == b.len() {
            None
        } else {
            Some(a.len().min(b.len()))
        })
}

/// Adds `yes` or `no` to the description `parts` of an expectation, if it has `flag`.
fn push_flag(parts: &mut Vec<String>, flag: Option<bool>, yes: &str, no: &str) {
    if let Some(f) = flag {
        parts.push(if f { yes } else { no }.into());
    }
}

/// A data-mover operation with resolved addresses.
#[derive(Debug, Clone, Copy)]
enum DsaCall {
    Copy(Va, Va, u32),
    Fill(Va, u64, u32),
    Compare(Va, Va, u32),
    Crc(Va, u32, u32),
    Dualcast(Va, Va, Va, u32),
}

fn dsa_call(s: &mut DsaSession, c: DsaCall) -> Result<CompletionRecord, sva_dsa::Error> {
    match c {
        DsaCall::Copy(dst, src, len) => s.copy(dst, src, len),
        DsaCall::Fill(dst, pattern, len) => s.fill(dst, pattern, len),
        DsaCall::Compare(a, b, len) => s.compare(a, b, len),
        DsaCall::Crc(src, len, seed) => s.crc32c_seeded(src, len, seed),
        DsaCall::Dualcast(src, d1, d2, len) => s.dualcast(src, d1, d2, len),
    }
}

impl<'a> Runner<'a> {
    // ---- names and lookups ----

    fn pname(&self, p: Id) -> &str {
        &self.plan.processes[p]
    }

    fn bname(&self, b: Id) -> &str {
        &self.plan.buffers[b].name
    }

    fn qname(&self, q: Id) -> &str {
        &self.plan.queues[q].name
    }

    fn jname(&self, j: Id) -> &str {
        self.plan
            .jobs
            .get(j)
            .map_or("(unnamed)", |d| d.name.as_str())
    }

    fn mm(&self, p: Id) -> StepResult<Arc<Mm>> {
        self.procs[p].clone().ok_or_else(|| {
            StepError::new(
                ErrorClass::Exited,
                format!(
                    "process `{}` does not exist (its spawn or fork failed)",
                    self.pname(p)
                ),
            )
        })
    }

    fn va(&self, b: Id) -> StepResult<Va> {
        self.bufs[b].ok_or_else(|| {
            StepError::new(
                ErrorClass::Invalid,
                format!(
                    "buffer `{}` was never mapped (its mmap failed)",
                    self.bname(b)
                ),
            )
        })
    }

    /// The address space and address of a range.
    fn at(&self, r: &Range) -> StepResult<(Arc<Mm>, Va)> {
        let p = r.process.unwrap_or(self.plan.buffers[r.buf].owner);
        Ok((self.mm(p)?, self.va(r.buf)? + r.offset))
    }

    fn show_range(&self, r: &Range) -> String {
        let b = &self.plan.buffers[r.buf];
        let mut s = b.name.clone();
        if let Some(p) = r.process
            && p != b.owner
        {
            s = format!("{}:{s}", self.pname(p));
        }
        if r.offset != 0 || r.len != b.size {
            s += &format!("[{:#x}..{:#x}]", r.offset, r.offset + r.len);
        }
        s
    }

    fn read(&self, r: &Range) -> StepResult<Vec<u8>> {
        let (mm, va) = self.at(r)?;
        let mut buf = vec![0u8; r.len as usize];
        mm.read(va, &mut buf)?;
        Ok(buf)
    }

    /// [`Self::read`] for an expectation, which fails with a message naming the range.
    fn read_expected(&self, r: &Range) -> Result<Vec<u8>, String> {
        self.read(r)
            .map_err(|e| format!("reading {}: {e}", self.show_range(r)))
    }

    // ---- the step loop ----

    fn exec_steps(&mut self, steps: &'a [Step]) -> Result<(), Stopped> {
        for s in steps {
            self.exec(s)?;
        }
        Ok(())
    }

    fn exec(&mut self, s: &'a Step) -> Result<(), Stopped> {
        if let Action::Repeat { times, body } = &s.action {
            let _ = writeln!(self.log, "line {:>4}  repeat {times} times", s.line);
            for _ in 0..*times {
                self.exec_steps(body)?;
            }
            return Ok(());
        }
        self.steps_run += 1;
        self.progress.tick(self.steps_run, self.timeline.now_ns());
        let label = self.label(s);
        let outcome = self.action(s).and_then(|msg| self.settle().map(|()| msg));
        let (start_ns, cost, _) = self.timeline.charge(&self.w);
        self.trace_step(s, &label, start_ns, cost);
        let cost_note = if cost > 0 {
            format!("  (+{})", report::show_ns(cost))
        } else {
            String::new()
        };
        match (outcome, &s.expect_error) {
            (Ok(msg), None) => {
                if s.kind != StepKind::Expect && s.kind != StepKind::Random {
                    let _ = writeln!(
                        self.log,
                        "line {:>4}  {label}{}{msg}{cost_note}",
                        s.line,
                        if msg.is_empty() { "" } else { ": " }
                    );
                }
                Ok(())
            }
            (Ok(msg), Some(spec)) => {
                let want = match spec {
                    ErrorSpec::Any => "an error".to_string(),
                    ErrorSpec::Class(c) => format!("an error of class {}", c.name()),
                };
                let name = s.name.clone().unwrap_or_else(|| format!("{label} fails"));
                self.record(
                    s,
                    name,
                    false,
                    format!(
                        "expected {want}, but the step succeeded{}{msg}",
                        if msg.is_empty() { "" } else { ": " }
                    ),
                );
                Ok(())
            }
            (Err(e), Some(spec)) => {
                let ok = match spec {
                    ErrorSpec::Any => true,
                    ErrorSpec::Class(c) => *c == e.class,
                };
                let name = s.name.clone().unwrap_or_else(|| match spec {
                    ErrorSpec::Any => format!("{label} fails"),
                    ErrorSpec::Class(c) => format!("{label} fails with {}", c.name()),
                });
                let detail = if ok {
                    format!("refused: {e}")
                } else {
                    format!("failed with another class: {e}")
                };
                self.record(s, name, ok, detail);
                Ok(())
            }
            (Err(e), None) => {
                self.record(
                    s,
                    format!("line {}: {label}", s.line),
                    false,
                    format!("the step failed: {e}"),
                );
                self.failure = Some(Failure {
                    line: s.line,
                    step: label,
                    class: e.class.name().to_string(),
                    message: e.message,
                });
                Err(Stopped)
            }
        }
    }

    /// Records one run of a check.
    fn record(&mut self, s: &Step, name: String, ok: bool, detail: String) {
        let _ = writeln!(
            self.log,
            "line {:>4}  [{}] {name}: {detail}",
            s.line,
            if ok { "ok" } else { "FAILED" }
        );
        if let Some(t) = &mut self.trace {
            let track = t.track("scenario", "checks");
            t.instant(
                track,
                &name,
                self.timeline.now_ns(),
                &json!({"ok": ok, "detail": detail, "line": s.line}),
            );
        }
        let idx = match self.check_of_step.get(&s.id) {
            Some(&i) => i,
            None => {
                self.checks.push(CheckAgg {
                    check: Check {
                        name,
                        ok: true,
                        detail: String::new(),
                        line: s.line,
                        runs: 0,
                        failures: 0,
                    },
                });
                self.check_of_step.insert(s.id, self.checks.len() - 1);
                self.checks.len() - 1
            }
        };
        let c = &mut self.checks[idx].check;
        c.runs += 1;
        if ok {
            if c.failures == 0 {
                c.detail = detail;
            }
        } else {
            if c.failures == 0 {
                c.detail = detail;
            }
            c.failures += 1;
            c.ok = false;
        }
    }

    fn trace_step(&mut self, s: &Step, label: &str, start: u64, cost: u64) {
        let done = std::mem::take(&mut self.completed_now);
        self.trace_jobs_and_step(s, label, start, cost, &done);
        // Completed submissions nobody can ask about any more are forgotten.
        for slot in done {
            let keep = self.jobs.get(&slot).is_some_and(|j| {
                j.name.is_some_and(|n| self.latest[n] == Some(slot))
                    || matches!(j.state, JobState::Pending)
            });
            if !keep {
                self.jobs.remove(&slot);
            }
        }
    }

    fn trace_jobs_and_step(&mut self, s: &Step, label: &str, start: u64, cost: u64, done: &[u64]) {
        let Some(t) = &mut self.trace else {
            return;
        };
        let process = match &s.action {
            Action::Mmap { buf, .. } => Some(self.plan.buffers[*buf].owner),
            Action::Munmap(r)
            | Action::Mprotect(r, _)
            | Action::Madvise(r)
            | Action::Touch(r, _)
            | Action::Write(r, _)
            | Action::Fill(r, _)
            | Action::Reclaim(r)
            | Action::Migrate(r) => Some(r.process.unwrap_or(self.plan.buffers[r.buf].owner)),
            Action::Spawn(p) | Action::Exit(p) => Some(*p),
            Action::Fork { parent, .. } => Some(*parent),
            Action::Open { queue, .. } | Action::Close(queue) => {
                Some(self.plan.queues[*queue].owner)
            }
            Action::Submit(sub) => Some(sub.caller.unwrap_or(self.plan.queues[sub.queue].owner)),
            Action::Bind { process, .. } => Some(*process),
            Action::Random(r) => Some(r.process),
            _ => None,
        };
        let track = match process {
            Some(p) => t.track("processes", &self.plan.processes[p]),
            None => t.track("scenario", "steps"),
        };
        t.span(track, label, start, cost, &json!({"line": s.line}));
        let end = self.timeline.now_ns();
        for j in done {
            if let Some(slot) = self.jobs.get(j) {
                let dev = &self.plan.devices[slot.device].name;
                let track = t.track("devices", dev);
                let name = match slot.name {
                    Some(n) => format!("{} ({})", slot.op, self.plan.jobs[n].name),
                    None => slot.op.to_string(),
                };
                let status = match &slot.state {
                    JobState::Done(r) => r.summary(),
                    JobState::Pending => "pending".into(),
                };
                t.span(
                    track,
                    &name,
                    slot.start_ns,
                    end.saturating_sub(slot.start_ns),
                    &json!({"result": status}),
                );
            }
        }
    }

    fn label(&self, s: &Step) -> String {
        let base = match &s.action {
            Action::Mmap { buf, .. } => {
                let b = &self.plan.buffers[*buf];
                format!(
                    "mmap {} ({} bytes) in {}",
                    b.name,
                    b.size,
                    self.pname(b.owner)
                )
            }
            Action::Munmap(r) => format!("munmap {}", self.show_range(r)),
            Action::Mprotect(r, p) => format!("mprotect {} {p:?}", self.show_range(r)),
            Action::Madvise(r) => format!("madvise(DONTNEED) {}", self.show_range(r)),
            Action::Touch(r, k) => format!("touch {} ({k:?})", self.show_range(r)),
            Action::Write(r, _) => format!("write {}", self.show_range(r)),
            Action::Fill(r, b) => format!("fill {} with {b:#04x}", self.show_range(r)),
            Action::Spawn(p) => format!("spawn {}", self.pname(*p)),
            Action::Fork { parent, child } => {
                format!("fork {} -> {}", self.pname(*parent), self.pname(*child))
            }
            Action::Exit(p) => format!("exit {}", self.pname(*p)),
            Action::Reclaim(r) => format!("reclaim {}", self.show_range(r)),
            Action::Migrate(r) => format!("migrate {}", self.show_range(r)),
            Action::Open { queue, .. } => {
                let q = &self.plan.queues[*queue];
                format!(
                    "open {} on {} for {}",
                    q.name,
                    self.plan.devices[q.device].name,
                    self.pname(q.owner)
                )
            }
            Action::Close(q) => format!("close {}", self.qname(*q)),
            Action::Bind {
                bond,
                device,
                process,
            } => format!(
                "bind {} ({} to {})",
                self.plan.bonds[*bond],
                self.plan.devices[*device].name,
                self.pname(*process)
            ),
            Action::Unbind(b) => format!("unbind {}", self.plan.bonds[*b]),
            Action::Submit(sub) => {
                let mut t = format!("submit {} on {}", sub.op.name(), self.qname(sub.queue));
                if let Some(j) = sub.job {
                    t += &format!(" as {}", self.jname(j));
                }
                if sub.async_ {
                    t += " (async)";
                }
                if let Some(c) = sub.caller {
                    t += &format!(" from {}", self.pname(c));
                }
                t
            }
            Action::Wait(j) => format!("wait {}", self.jname(*j)),
            Action::HoldFaults => "hold faults".into(),
            Action::ReleaseFaults => "release faults".into(),
            Action::Expect(e) => self.describe(e),
            Action::Repeat { times, .. } => format!("repeat {times}"),
            Action::Random(r) => format!(
                "random: {} operations in {}",
                r.count,
                self.pname(r.process)
            ),
        };
        match (&s.name, s.kind) {
            (Some(n), k) if k != StepKind::Expect => format!("{n} [{base}]"),
            _ => base,
        }
    }

    fn pasid_name(&self, r: PasidRef) -> String {
        match r {
            PasidRef::Queue(q) => format!("queue {}", self.qname(q)),
            PasidRef::Bond(b) => format!("bond {}", self.plan.bonds[b]),
            PasidRef::Process(p) => format!("process {}", self.pname(p)),
        }
    }

    fn describe(&self, e: &Expect) -> String {
        match e {
            Expect::Job {
                job,
                status,
                code,
                fault_at,
                decompresses_to,
                crc32c,
                crc_of,
            } => {
                let mut parts = Vec::new();
                if let Some(s) = status {
                    parts.push(format!("status {}", s.name()));
                }
                if let Some(c) = code {
                    parts.push(format!("code {c}"));
                }
                if let Some((b, off)) = fault_at {
                    parts.push(if *off == 0 {
                        format!("faults at {}", self.bname(*b))
                    } else {
                        format!("faults at {}+{off:#x}", self.bname(*b))
                    });
                }
                if let Some(r) = decompresses_to {
                    parts.push(format!("output decompresses to {}", self.show_range(r)));
                }
                if let Some(c) = crc32c {
                    parts.push(format!("crc32c {c:#010x}"));
                }
                if let Some(r) = crc_of {
                    parts.push(format!("crc32c equals the CPU's of {}", self.show_range(r)));
                }
                format!("job {}: {}", self.jname(*job), parts.join(", "))
            }
            Expect::Buffer {
                range,
                equals,
                crc32c,
                byte,
                bytes,
                present,
                mapped,
            } => {
                let mut parts = Vec::new();
                if let Some(o) = equals {
                    parts.push(format!("equals {}", self.show_range(o)));
                }
                if let Some(c) = crc32c {
                    parts.push(format!("crc32c {c:#010x}"));
                }
                if let Some(b) = byte {
                    parts.push(format!("every byte {b:#04x}"));
                }
                if let Some(b) = bytes {
                    parts.push(match std::str::from_utf8(b) {
                        Ok(t) if t.len() <= 40 => format!("reads \"{t}\""),
                        _ => format!("starts with {} given bytes", b.len()),
                    });
                }
                push_flag(&mut parts, *present, "present", "not present");
                push_flag(&mut parts, *mapped, "mapped", "not mapped");
                format!("{}: {}", self.show_range(range), parts.join(", "))
            }
            Expect::Pasid {
                subject,
                same_as,
                differs_from,
                value,
                allocated,
                bound,
            } => {
                let mut parts = Vec::new();
                if let Some(o) = same_as {
                    parts.push(format!("same as {}'s", self.pasid_name(*o)));
                }
                if let Some(o) = differs_from {
                    parts.push(format!("differs from {}'s", self.pasid_name(*o)));
                }
                if let Some(v) = value {
                    parts.push(format!("is {v}"));
                }
                push_flag(&mut parts, *allocated, "allocated", "not allocated");
                push_flag(&mut parts, *bound, "bound", "unbound (no PASID)");
                format!(
                    "PASID of {}: {}",
                    self.pasid_name(*subject),
                    parts.join(", ")
                )
            }
            Expect::Counter { path, cmp } => {
                let c: Vec<String> = cmp
                    .iter()
                    .map(|(o, v)| format!("{} {v}", o.symbol()))
                    .collect();
                format!("{path} {}", c.join(" and "))
            }
            Expect::Queue { queue, state } => {
                format!("queue {} is {}", self.qname(*queue), state.name())
            }
        }
    }

    // ---- devices ----

    /// Polls every queue with jobs in flight; records what completed.
    fn collect(&mut self) {
        for q in 0..self.queues.len() {
            let mut done: Vec<(u64, JobResult)> = Vec::new();
            match &mut self.queues[q] {
                QueueSlot::Zip {
                    s,
                    pending,
                    dead: false,
                    ..
                } if !pending.is_empty() => loop {
                    match s.poll() {
                        Ok(Some(c)) => {
                            let Some(job) = pending.remove(&c.tag) else {
                                continue;
                            };
                            let (status, code) = status_of_zip(&c.result);
                            done.push((
                                job,
                                JobResult {
                                    status,
                                    code,
                                    fault_addr: c.result.fault.map(|f| f.addr),
                                    bytes: u64::from(c.result.produced),
                                    crc: None,
                                    output: None,
                                    detail: None,
                                },
                            ));
                        }
                        Ok(None) => break,
                        Err(e) => {
                            for (_, job) in std::mem::take(pending) {
                                let mut r = JobResult::lost("the queue could not be polled");
                                r.status = JobStatus::Error;
                                r.code = "poll_error".into();
                                r.detail = Some(e.to_string());
                                done.push((job, r));
                            }
                            break;
                        }
                    }
                },
                QueueSlot::Dsa { s, running, .. } => {
                    if running.as_ref().is_some_and(|(_, t)| t.is_finished())
                        && let Some((job, t)) = running.take()
                    {
                        let crc = self.jobs.get(&job).is_some_and(|j| j.op == "crc32c");
                        let r = match t.join() {
                            Ok((session, res)) => {
                                *s = Some(session);
                                match res {
                                    Ok(rec) => dsa_result(&rec, crc),
                                    Err(e) if class_dsa(&e) == ErrorClass::Exited => {
                                        JobResult::lost("the process exited")
                                    }
                                    Err(e) => {
                                        let mut r = JobResult::lost("");
                                        r.status = JobStatus::Error;
                                        r.code = class_dsa(&e).name().into();
                                        r.detail = Some(e.to_string());
                                        r
                                    }
                                }
                            }
                            Err(_) => {
                                let mut r = JobResult::lost("");
                                r.status = JobStatus::Error;
                                r.code = "panic".into();
                                r.detail = Some("the session thread panicked".into());
                                r
                            }
                        };
                        done.push((job, r));
                    }
                }
                _ => {}
            }
            for (job, mut r) in done {
                if let Some(slot) = self.jobs.get_mut(&job) {
                    if let Some(dst) = slot.dst {
                        r.output = Some((dst, r.bytes));
                    }
                    slot.state = JobState::Done(r);
                }
                self.completed_now.push(job);
            }
        }
    }

    /// Whether device `d` waits for a page that a held interrupt would answer.
    fn device_waiting(&self, d: usize) -> bool {
        let f = &self.w.devices[d].function;
        f.outstanding_page_requests() > 0 || f.stats().stalls > self.stalls_at_hold[d]
    }

    /// Lets the devices run until every job in flight completed or waits on a held fault.
    fn settle(&mut self) -> StepResult<()> {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut spins = 0u32;
        loop {
            self.collect();
            let busy: Vec<usize> = (0..self.queues.len())
                .filter(|&q| self.queues[q].has_pending())
                .map(|q| self.plan.queues[q].device)
                .collect();
            if busy.is_empty() {
                return Ok(());
            }
            if self.held && busy.iter().all(|&d| self.device_waiting(d)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(StepError::new(
                    ErrorClass::Timeout,
                    format!("the devices did not finish their jobs within {SETTLE_TIMEOUT:?}"),
                ));
            }
            spins += 1;
            if spins < 100 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(20));
            }
        }
    }

    fn hold(&mut self, on: bool) {
        if on {
            self.stalls_at_hold = self
                .w
                .devices
                .iter()
                .map(|d| d.function.stats().stalls)
                .collect();
        }
        self.held = on;
        self.w.hold_irqs(on);
    }

    /// Jobs of process `p` still in flight.
    fn pending_of(&self, p: Id) -> Vec<Id> {
        (0..self.queues.len())
            .filter(|&q| self.plan.queues[q].owner == p && self.queues[q].has_pending())
            .collect()
    }

    fn total_commands(&self) -> u64 {
        self.w.p.smmu.stats().commands.values().sum()
    }

    fn wait_until(&self, what: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !what() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(20));
        }
        true
    }

    /// Marks the jobs of queue `q` lost (nobody can collect them any more).
    fn lose_jobs(&mut self, q: Id, why: &str) {
        let jobs: Vec<u64> = match &mut self.queues[q] {
            QueueSlot::Zip { pending, .. } => std::mem::take(pending).into_values().collect(),
            _ => Vec::new(),
        };
        for j in jobs {
            if let Some(slot) = self.jobs.get_mut(&j) {
                slot.state = JobState::Done(JobResult::lost(why));
            }
            self.completed_now.push(j);
        }
    }

    // ---- actions ----

    fn action(&mut self, s: &Step) -> StepResult {
        match &s.action {
            Action::Mmap {
                buf,
                place,
                prot,
                flags,
            } => {
                let b = &self.plan.buffers[*buf];
                let mm = self.mm(b.owner)?;
                let (hint, flags) = match place {
                    Place::Anywhere => (None, *flags),
                    Place::At(a) => (Some(Va(*a)), *flags | MapFlags::FIXED_NOREPLACE),
                    Place::SameAs(o) => (Some(self.va(*o)?), *flags | MapFlags::FIXED_NOREPLACE),
                };
                let va = mm.mmap(hint, b.size, *prot, flags)?;
                self.bufs[*buf] = Some(va);
                Ok(format!("at {va}"))
            }
            Action::Munmap(r) => {
                let (mm, va) = self.at(r)?;
                mm.munmap(va, r.len)?;
                Ok(String::new())
            }
            Action::Mprotect(r, p) => {
                let (mm, va) = self.at(r)?;
                mm.mprotect(va, r.len, *p)?;
                Ok(String::new())
            }
            Action::Madvise(r) => {
                let (mm, va) = self.at(r)?;
                mm.madvise_dontneed(va, r.len)?;
                Ok(String::new())
            }
            Action::Touch(r, k) => {
                let (mm, va) = self.at(r)?;
                mm.touch(va, r.len, *k)?;
                Ok(String::new())
            }
            Action::Write(r, data) => {
                let (mm, va) = self.at(r)?;
                match data {
                    Data::Bytes(b) => mm.write(va, b)?,
                    Data::Random => {
                        let b = self.rng.bytes(r.len as usize);
                        mm.write(va, &b)?;
                    }
                }
                Ok(format!("{} bytes", r.len))
            }
            Action::Fill(r, b) => {
                let (mm, va) = self.at(r)?;
                mm.fill(va, *b, r.len as usize)?;
                Ok(String::new())
            }
            Action::Reclaim(r) => {
                let (mm, va) = self.at(r)?;
                let n = mm.reclaim(va, r.len)?;
                Ok(format!("{n} page(s) swapped out"))
            }
            Action::Migrate(r) => {
                let (mm, va) = self.at(r)?;
                let page = mm.page_size();
                let (mut moved, mut absent) = (0, 0);
                let mut at = va.align_down(page);
                while at < va + r.len {
                    if mm.translate(at, AccessKind::Read)?.is_some() {
                        mm.migrate(at)?;
                        moved += 1;
                    } else {
                        absent += 1;
                    }
                    at = at + page;
                }
                Ok(format!("{moved} page(s) moved, {absent} not present"))
            }
            Action::Spawn(p) => {
                let mm = self.w.p.system.spawn()?;
                let pid = mm.pid();
                self.procs[*p] = Some(mm);
                Ok(format!("pid {}", pid.0))
            }
            Action::Fork { parent, child } => {
                let pm = self.mm(*parent)?;
                let mm = self.w.p.system.fork(pm.pid())?;
                let pid = mm.pid();
                self.procs[*child] = Some(mm);
                Ok(format!("child pid {}", pid.0))
            }
            Action::Exit(p) => self.exit(*p),
            Action::Open {
                queue,
                alg,
                block_on_fault,
            } => self.open(*queue, *alg, *block_on_fault),
            Action::Close(q) => self.close(*q),
            Action::Bind {
                bond,
                device,
                process,
            } => {
                if self.bonds[*bond].is_some() {
                    return Err(StepError::new(
                        ErrorClass::State,
                        format!("bond `{}` is already bound", self.plan.bonds[*bond]),
                    ));
                }
                let mm = self.mm(*process)?;
                let dev = DeviceId(self.plan.devices[*device].sid.raw());
                let b = self.sva.bind(dev, &mm)?;
                self.bonds[*bond] = Some(b);
                self.bond_pasids[*bond] = Some(b.pasid);
                Ok(format!("PASID {}", b.pasid))
            }
            Action::Unbind(b) => {
                let bond = self.bonds[*b].take().ok_or_else(|| {
                    StepError::new(
                        ErrorClass::State,
                        format!("bond `{}` is not bound", self.plan.bonds[*b]),
                    )
                })?;
                self.sva.unbind(bond)?;
                Ok(String::new())
            }
            Action::Submit(sub) => self.submit(sub),
            Action::Wait(j) => self.wait(*j),
            Action::HoldFaults => {
                self.hold(true);
                Ok(String::new())
            }
            Action::ReleaseFaults => {
                self.hold(false);
                Ok(String::new())
            }
            Action::Expect(e) => {
                let (ok, detail) = self.expect(e);
                let name = s.name.clone().unwrap_or_else(|| self.describe(e));
                self.record(s, name, ok, detail);
                Ok(String::new())
            }
            Action::Repeat { .. } => Ok(String::new()),
            Action::Random(r) => {
                let (ok, detail) = self.random(r)?;
                let name = s.name.clone().unwrap_or_else(|| {
                    format!(
                        "random: {} operations in {} verified",
                        r.count,
                        self.pname(r.process)
                    )
                });
                self.record(s, name, ok, detail);
                Ok(String::new())
            }
        }
    }

    fn exit(&mut self, p: Id) -> StepResult {
        let mm = self.mm(p)?;
        let pid = mm.pid();
        let pending = self.pending_of(p);
        let mut note = String::new();
        if self.held && !pending.is_empty() {
            // The exit must wait for the devices to let go of the process's jobs, which
            // wait for held faults. Answer them once the core has marked the address
            // space exited (so they are answered Invalid) and the first device's queue
            // is stopping (so it fetches nothing more).
            let before = self.total_commands();
            let plat = self.w.p.clone();
            let t = std::thread::spawn(move || plat.system.exit(pid));
            self.wait_until(|| self.total_commands() > before || t.is_finished());
            let _ = self.sva.stats(); // Serialises with the core's exit bookkeeping.
            let first = pending
                .iter()
                .copied()
                .min_by_key(|&q| self.plan.devices[self.plan.queues[q].device].sid.raw());
            if let Some(q) = first
                && let QueueSlot::Zip { s, .. } = &self.queues[q]
                && let Some(qm) = &self.w.devices[self.plan.queues[q].device].qm
            {
                let sqn = s.queue().mapping().sqn;
                if qm.qp_status(sqn).is_ok_and(|st| st.busy) {
                    self.wait_until(|| {
                        qm.qp_status(sqn).is_ok_and(|st| !st.running) || t.is_finished()
                    });
                }
            }
            self.hold(false);
            note = "; the held faults were answered and the hold ended".into();
            t.join()
                .map_err(|_| StepError::new(ErrorClass::Other, "the exit thread panicked"))??;
        } else {
            self.w.p.system.exit(pid)?;
        }
        // Nobody can collect the process's jobs any more.
        let mut lost = 0;
        for q in 0..self.queues.len() {
            if self.plan.queues[q].owner != p {
                continue;
            }
            let before = self.completed_now.len();
            self.lose_jobs(q, "the process exited");
            lost += self.completed_now.len() - before;
            match &mut self.queues[q] {
                QueueSlot::Zip { dead, .. } | QueueSlot::Dsa { dead, .. } => *dead = true,
                _ => {}
            }
        }
        // A data-mover job's session thread ends once its address space is gone.
        self.settle()?;
        for q in 0..self.queues.len() {
            if self.plan.queues[q].owner == p
                && let QueueSlot::Dsa {
                    running: Some(_), ..
                } = &self.queues[q]
            {
                self.settle()?;
            }
        }
        Ok(format!(
            "pid {}{}{note}",
            pid.0,
            if lost > 0 {
                format!(", {lost} job(s) in flight lost")
            } else {
                String::new()
            }
        ))
    }

    fn open(&mut self, q: Id, alg: Alg, block_on_fault: bool) -> StepResult {
        if matches!(
            self.queues[q],
            QueueSlot::Zip { .. } | QueueSlot::Dsa { .. }
        ) {
            return Err(StepError::new(
                ErrorClass::State,
                format!("queue `{}` is already open", self.qname(q)),
            ));
        }
        let decl = &self.plan.queues[q];
        let mm = self.mm(decl.owner)?;
        let dev = self
            .w
            .device(&self.plan.devices[decl.device].name)
            .map(|d| d.uacce.clone())
            .ok_or_else(|| StepError::new(ErrorClass::NoDevice, "the device is not plugged in"))?;
        let slot = match self.w.devices[decl.device].spec.kind {
            crate::world::Kind::Zip => {
                let s = CompSession::open(&dev, &mm, alg)?;
                let pasid = s.handle().and_then(|h| h.pasid());
                QueueSlot::Zip {
                    s,
                    pasid,
                    alg,
                    pending: BTreeMap::new(),
                    dead: false,
                }
            }
            crate::world::Kind::Dsa => {
                let s = DsaSession::open(
                    &dev,
                    &mm,
                    SessionConfig {
                        block_on_fault,
                        poll_timeout: DSA_POLL_TIMEOUT,
                        ..SessionConfig::default()
                    },
                )?;
                let pasid = s.handle().and_then(|h| h.pasid());
                QueueSlot::Dsa {
                    s: Some(s),
                    pasid,
                    running: None,
                    dead: false,
                }
            }
        };
        let pasid = slot.pasid();
        self.queues[q] = slot;
        Ok(pasid.map_or_else(|| "no PASID".into(), |p| format!("PASID {p}")))
    }

    fn close(&mut self, q: Id) -> StepResult {
        let pasid = self.queues[q].pasid();
        let slot = std::mem::replace(&mut self.queues[q], QueueSlot::Closed { pasid });
        match slot {
            QueueSlot::NotOpen | QueueSlot::Closed { .. } => {
                self.queues[q] = slot;
                Err(StepError::not_open(self.qname(q)))
            }
            QueueSlot::Dsa {
                running: Some((j, t)),
                s,
                pasid: p,
                dead,
            } => {
                let j_name = self
                    .jobs
                    .get(&j)
                    .and_then(|x| x.name)
                    .map_or("(unnamed)", |n| self.plan.jobs[n].name.as_str())
                    .to_string();
                self.queues[q] = QueueSlot::Dsa {
                    running: Some((j, t)),
                    s,
                    pasid: p,
                    dead,
                };
                Err(StepError::new(
                    ErrorClass::State,
                    format!(
                        "job `{j_name}` of data-mover queue `{}` waits for a held fault; release_faults (or wait for it) before closing",
                        self.qname(q)
                    ),
                ))
            }
            QueueSlot::Dsa { s, .. } => {
                drop(s);
                Ok(String::new())
            }
            QueueSlot::Zip {
                s, pending, dead, ..
            } if self.held && !pending.is_empty() && !dead => {
                // Closing stops the queue, which waits for the engine, which waits for a
                // held fault: answer it once the queue is marked stopped.
                let device = self.plan.queues[q].device;
                let sqn = s.queue().mapping().sqn;
                let t = std::thread::spawn(move || drop(s));
                if let Some(qm) = &self.w.devices[device].qm {
                    self.wait_until(|| {
                        qm.qp_status(sqn).is_ok_and(|st| !st.running) || t.is_finished()
                    });
                }
                self.hold(false);
                t.join()
                    .map_err(|_| StepError::new(ErrorClass::Other, "the close thread panicked"))?;
                let n = pending.len();
                for (_, j) in pending {
                    if let Some(slot) = self.jobs.get_mut(&j) {
                        slot.state = JobState::Done(JobResult::lost("the queue was closed"));
                    }
                    self.completed_now.push(j);
                }
                Ok(format!(
                    "{n} job(s) in flight lost; the held faults were answered and the hold ended"
                ))
            }
            QueueSlot::Zip { s, pending, .. } => {
                let n = pending.len();
                for (_, j) in pending {
                    if let Some(slot) = self.jobs.get_mut(&j) {
                        slot.state = JobState::Done(JobResult::lost("the queue was closed"));
                    }
                    self.completed_now.push(j);
                }
                drop(s);
                Ok(if n > 0 {
                    format!("{n} job(s) lost")
                } else {
                    String::new()
                })
            }
        }
    }

    fn submit(&mut self, sub: &Submit) -> StepResult {
        let decl = &self.plan.queues[sub.queue];
        let owner = decl.owner;
        let device = decl.device;
        let qn = decl.name.clone();
        // Another process using the queue: what a forked child holding the parent's
        // descriptor gets.
        if let Some(c) = sub.caller
            && c != owner
        {
            let caller = self.mm(c)?;
            let handle = match &self.queues[sub.queue] {
                QueueSlot::Zip { s, .. } => s.handle(),
                QueueSlot::Dsa { s, .. } => s.as_ref().and_then(|s| s.handle()),
                _ => None,
            };
            let Some(h) = handle else {
                return Err(StepError::not_open(&qn));
            };
            let refused = h.poll(&caller);
            let mut note = String::new();
            if let QueueSlot::Zip { s, .. } = &self.queues[sub.queue] {
                let db = s.queue().mapping().doorbell;
                if let Err(e) = caller.write(db, &[0u8; 8]) {
                    note = format!("; its store to the doorbell at {db} faults: {e}");
                }
            }
            return Err(match refused {
                Err(e) => StepError::new(class_uacce(&e), format!("{e}{note}")),
                Ok(_) => StepError::new(
                    ErrorClass::Other,
                    format!(
                        "process `{}` was allowed to use queue `{qn}`{note}",
                        self.pname(c)
                    ),
                ),
            });
        }
        self.mm(owner)?;
        let va = |r: &Range| -> StepResult<Va> { Ok(self.va(r.buf)? + r.offset) };
        let alg = match &self.queues[sub.queue] {
            QueueSlot::Zip { alg, .. } => *alg,
            _ => Alg::Zlib,
        };
        let slot = self.next_slot;
        let new_slot = |state, dst| JobSlot {
            name: sub.job,
            state,
            queue: sub.queue,
            device,
            op: sub.op.name(),
            alg,
            async_: sub.async_,
            waited: false,
            start_ns: self.timeline.now_ns(),
            dst,
        };
        match &sub.op {
            JobOp::Compress { src, dst }
            | JobOp::Decompress {
                src: Input::Range(src),
                dst,
            } => {
                let op = if matches!(sub.op, JobOp::Compress { .. }) {
                    Op::Compress
                } else {
                    Op::Decompress
                };
                let (s_va, d_va) = (va(src)?, va(dst)?);
                let job = new_slot(JobState::Pending, Some(d_va));
                self.zip_submit(sub.queue, slot, op, s_va, src.len, d_va, dst.len)?;
                self.jobs.insert(slot, job);
            }
            JobOp::Decompress {
                src: Input::Job(from),
                dst,
            } => {
                let from_name = self.jname(*from).to_string();
                let (o_va, o_len) = match self.latest[*from]
                    .and_then(|l| self.jobs.get(&l))
                    .map(|j| &j.state)
                {
                    Some(JobState::Done(r)) if r.status == JobStatus::Ok => {
                        r.output.ok_or_else(|| {
                            StepError::new(
                                ErrorClass::Invalid,
                                format!("job `{from_name}` has no output"),
                            )
                        })?
                    }
                    Some(JobState::Done(r)) => {
                        return Err(StepError::new(
                            ErrorClass::Invalid,
                            format!(
                                "job `{from_name}` has no output to decompress: {}",
                                r.summary()
                            ),
                        ));
                    }
                    _ => {
                        return Err(StepError::new(
                            ErrorClass::Invalid,
                            format!("job `{from_name}` has not completed"),
                        ));
                    }
                };
                let d_va = va(dst)?;
                let job = new_slot(JobState::Pending, Some(d_va));
                self.zip_submit(sub.queue, slot, Op::Decompress, o_va, o_len, d_va, dst.len)?;
                self.jobs.insert(slot, job);
            }
            other => {
                let call = match *other {
                    JobOp::Copy { src, dst } => DsaCall::Copy(va(&dst)?, va(&src)?, src.len as u32),
                    JobOp::Fill { dst, pattern } => {
                        DsaCall::Fill(va(&dst)?, pattern, dst.len as u32)
                    }
                    JobOp::Compare { a, b } => DsaCall::Compare(va(&a)?, va(&b)?, a.len as u32),
                    JobOp::Crc32c { src, seed } => DsaCall::Crc(va(&src)?, src.len as u32, seed),
                    JobOp::Dualcast { src, dst, dst2 } => {
                        DsaCall::Dualcast(va(&src)?, va(&dst)?, va(&dst2)?, src.len as u32)
                    }
                    _ => unreachable!("zip ops are handled above"),
                };
                let job = new_slot(JobState::Pending, None);
                let busy = match &self.queues[sub.queue] {
                    QueueSlot::Dsa {
                        running: Some((j, _)),
                        ..
                    } => Some(*j),
                    _ => None,
                };
                if let Some(j) = busy {
                    let what = self.jobs.get(&j).and_then(|j| j.name).map_or_else(
                        || "a job".to_string(),
                        |n| format!("job `{}`", self.plan.jobs[n].name),
                    );
                    return Err(StepError::new(
                        ErrorClass::Busy,
                        format!(
                            "queue `{qn}` still runs {what} (a data-mover session has one descriptor in flight); wait for it first"
                        ),
                    ));
                }
                let QueueSlot::Dsa {
                    s, running, dead, ..
                } = &mut self.queues[sub.queue]
                else {
                    return Err(StepError::not_open(&qn));
                };
                if *dead {
                    return Err(StepError::owner_exited(&qn));
                }
                let mut session = s
                    .take()
                    .ok_or_else(|| StepError::new(ErrorClass::State, "no session"))?;
                let t = std::thread::Builder::new()
                    .name("dsa-job".into())
                    .spawn(move || {
                        let r = dsa_call(&mut session, call);
                        (session, r)
                    })
                    .map_err(|e| {
                        StepError::new(ErrorClass::Other, format!("spawning a thread: {e}"))
                    })?;
                *running = Some((slot, t));
                self.jobs.insert(slot, job);
            }
        }
        self.next_slot += 1;
        if let Some(n) = sub.job {
            self.latest[n] = Some(slot);
            self.submitted[n] += 1;
        }
        self.device_jobs[device] += 1;
        self.settle()?;
        let state = self.jobs.get(&slot).map(|j| j.state.clone());
        match state {
            Some(JobState::Done(r)) => Ok(r.summary()),
            Some(JobState::Pending) if sub.async_ => {
                Ok("in flight (waits for a held fault)".into())
            }
            Some(JobState::Pending) => Err(StepError::new(
                ErrorClass::State,
                "the job waits for a page while faults are held: submit it with async = true, or release_faults first",
            )),
            None => Ok("done".into()),
        }
    }

    #[expect(clippy::too_many_arguments, reason = "the request's fields")]
    fn zip_submit(
        &mut self,
        q: Id,
        slot: u64,
        op: Op,
        src: Va,
        len: u64,
        dst: Va,
        cap: u64,
    ) -> StepResult<()> {
        let qn = self.qname(q).to_string();
        let QueueSlot::Zip {
            s, pending, dead, ..
        } = &mut self.queues[q]
        else {
            return Err(StepError::not_open(&qn));
        };
        if *dead {
            return Err(StepError::owner_exited(&qn));
        }
        let tag = s.submit(
            op,
            src,
            len as u32,
            dst,
            cap.min(u64::from(u32::MAX)) as u32,
        )?;
        pending.insert(tag, slot);
        Ok(())
    }

    fn wait(&mut self, j: Id) -> StepResult {
        self.settle()?;
        let held = self.held;
        let name = self.jname(j).to_string();
        let Some(slot) = self.latest[j].and_then(|l| self.jobs.get_mut(&l)) else {
            return Err(StepError::new(
                ErrorClass::Invalid,
                format!("job `{name}` was never submitted"),
            ));
        };
        match &slot.state {
            JobState::Pending if held => Err(StepError::new(
                ErrorClass::State,
                format!(
                    "job `{name}` waits for a page while faults are held: release_faults first"
                ),
            )),
            JobState::Pending => Err(StepError::new(
                ErrorClass::Timeout,
                format!("job `{name}` did not complete"),
            )),
            JobState::Done(r) => {
                slot.waited = true;
                Ok(r.summary())
            }
        }
    }

    // ---- expectations ----

    fn job_result(&self, j: Id) -> Result<(&JobSlot, &JobResult), String> {
        let name = self.jname(j);
        match self.latest[j].and_then(|l| self.jobs.get(&l)) {
            None => Err(format!("job {name} was never submitted")),
            Some(slot) => match &slot.state {
                JobState::Pending => Err(format!("job {name} is still in flight")),
                JobState::Done(r) if slot.async_ && !slot.waited && r.status != JobStatus::Lost => {
                    Err(format!("job {name} was not waited for (add a wait step)"))
                }
                JobState::Done(r) => Ok((slot, r)),
            },
        }
    }

    fn pasid_of(&self, r: PasidRef) -> Option<Pasid> {
        match r {
            PasidRef::Queue(q) => self.queues[q].pasid(),
            PasidRef::Bond(b) => self.bond_pasids[b],
            PasidRef::Process(p) => self.procs[p]
                .as_ref()
                .and_then(|mm| self.sva.pasid_of(mm.pid())),
        }
    }

    fn expect(&mut self, e: &Expect) -> (bool, String) {
        match self.expect_inner(e) {
            Ok(v) => v,
            Err(msg) => (false, msg),
        }
    }

    fn expect_inner(&mut self, e: &Expect) -> Result<(bool, String), String> {
        let mut fails: Vec<String> = Vec::new();
        let mut facts: Vec<String> = Vec::new();
        match e {
            Expect::Job {
                job,
                status,
                code,
                fault_at,
                decompresses_to,
                crc32c,
                crc_of,
            } => {
                let (slot, r) = self.job_result(*job)?;
                facts.push(r.summary());
                if let Some(s) = status
                    && *s != r.status
                {
                    fails.push(format!(
                        "status is {}, expected {}",
                        r.status.name(),
                        s.name()
                    ));
                }
                if let Some(c) = code
                    && *c != r.code
                {
                    fails.push(format!("code is {}, expected {c}", r.code));
                }
                if let Some((b, off)) = fault_at {
                    let want = (self.va(*b).map_err(|e| e.message)? + *off).raw() & !0xfff;
                    match r.fault_addr {
                        Some(f) if f & !0xfff == want => {}
                        Some(f) => fails.push(format!(
                            "fault address {f:#x} is not in the page at {want:#x}"
                        )),
                        None => fails.push("the job did not fault".into()),
                    }
                }
                if let Some(range) = decompresses_to {
                    let owner = self.plan.queues[slot.queue].owner;
                    let (va, n) = r.output.ok_or("the job has no output")?;
                    let mm = self.mm(owner).map_err(|e| e.message)?;
                    let mut out = vec![0u8; n as usize];
                    mm.read(va, &mut out)
                        .map_err(|e| format!("reading the output: {e}"))?;
                    let want = self.read_expected(range)?;
                    match inflate(slot.alg, &out, want.len() as u64 + 1) {
                        Err(e) => fails.push(format!("the output does not decompress ({:?}): {e}", slot.alg)),
                        Ok(got) if got == want => facts.push(format!("{} bytes decompress to {}", n, got.len())),
                        Ok(got) => fails.push(format!(
                            "the output decompresses to {} bytes that differ from the {} bytes of {} at offset {}",
                            got.len(),
                            want.len(),
                            self.show_range(range),
                            first_diff(&got, &want).unwrap_or(0)
                        )),
                    }
                }
                if let Some(c) = crc32c {
                    match r.crc {
                        Some(v) if v == *c => {}
                        Some(v) => fails.push(format!("crc32c is {v:#010x}, expected {c:#010x}")),
                        None => fails.push("the job has no CRC".into()),
                    }
                }
                if let Some(range) = crc_of {
                    let data = self.read_expected(range)?;
                    let cpu = crc32c::crc32c(&data);
                    match r.crc {
                        Some(v) if v == cpu => {}
                        Some(v) => {
                            fails
                                .push(format!("crc32c is {v:#010x}, the CPU computes {cpu:#010x}"));
                        }
                        None => fails.push("the job has no CRC".into()),
                    }
                }
            }
            Expect::Buffer {
                range,
                equals,
                crc32c,
                byte,
                bytes,
                present,
                mapped,
            } => {
                let (mm, va) = self.at(range).map_err(|e| e.message)?;
                if let Some(m) = mapped {
                    let vmas = mm.vmas().map_err(|e| e.to_string())?;
                    let end = va + range.len;
                    let mut at = va;
                    for v in &vmas {
                        if v.start <= at && at < v.end {
                            at = v.end;
                        }
                    }
                    let covered = at >= end;
                    let any = vmas.iter().any(|v| v.start < end && va < v.end);
                    if *m && !covered {
                        fails.push(format!(
                            "{} is not mapped (first hole at {at})",
                            self.show_range(range)
                        ));
                    } else if !*m && any {
                        fails.push(format!("{} is (partly) mapped", self.show_range(range)));
                    }
                }
                if let Some(p) = present {
                    let page = mm.page_size();
                    let mut at = va.align_down(page);
                    let (mut yes, mut no) = (0u64, 0u64);
                    while at < va + range.len {
                        match mm.translate(at, AccessKind::Read) {
                            Ok(Some(_)) => yes += 1,
                            _ => no += 1,
                        }
                        at = at + page;
                    }
                    facts.push(format!("{yes} page(s) present, {no} not"));
                    if *p && no > 0 {
                        fails.push(format!("{no} page(s) not present"));
                    } else if !*p && yes > 0 {
                        fails.push(format!("{yes} page(s) present"));
                    }
                }
                if equals.is_some() || crc32c.is_some() || byte.is_some() || bytes.is_some() {
                    let data = self.read_expected(range)?;
                    if let Some(o) = equals {
                        let other = self.read_expected(o)?;
                        if let Some(i) = first_diff(&data, &other) {
                            fails.push(format!(
                                "differs from {} at offset {i:#x} ({:#04x} vs {:#04x})",
                                self.show_range(o),
                                data.get(i).copied().unwrap_or(0),
                                other.get(i).copied().unwrap_or(0)
                            ));
                        } else {
                            facts.push(format!("{} equal bytes", data.len()));
                        }
                    }
                    if let Some(c) = crc32c {
                        let v = crc32c::crc32c(&data);
                        if v != *c {
                            fails.push(format!("crc32c is {v:#010x}, expected {c:#010x}"));
                        } else {
                            facts.push(format!("crc32c {v:#010x}"));
                        }
                    }
                    if let Some(b) = byte
                        && let Some(i) = data.iter().position(|x| x != b)
                    {
                        fails.push(format!(
                            "byte at offset {i:#x} is {:#04x}, expected {b:#04x}",
                            data[i]
                        ));
                    }
                    if let Some(want) = bytes
                        && let Some(i) = first_diff(&data[..want.len()], want)
                    {
                        fails.push(format!(
                            "byte at offset {i:#x} is {:#04x}, expected {:#04x}",
                            data[i], want[i]
                        ));
                    }
                }
            }
            Expect::Pasid {
                subject,
                same_as,
                differs_from,
                value,
                allocated,
                bound,
            } => {
                let p = self.pasid_of(*subject);
                facts.push(format!(
                    "{} has {}",
                    self.pasid_name(*subject),
                    p.map_or_else(|| "no PASID".into(), |p| format!("PASID {p}"))
                ));
                let need = |what: &str| {
                    format!(
                        "{} has no PASID to compare {what}",
                        self.pasid_name(*subject)
                    )
                };
                if let Some(o) = same_as {
                    let q = self.pasid_of(*o);
                    match (p, q) {
                        (Some(a), Some(b)) if a == b => {}
                        (Some(a), Some(b)) => {
                            fails.push(format!("{a} differs from {}'s {b}", self.pasid_name(*o)));
                        }
                        (None, _) => fails.push(need("")),
                        (_, None) => fails.push(format!("{} has no PASID", self.pasid_name(*o))),
                    }
                }
                if let Some(o) = differs_from {
                    let q = self.pasid_of(*o);
                    match (p, q) {
                        (Some(a), Some(b)) if a == b => {
                            fails.push(format!("{a} is also {}'s", self.pasid_name(*o)));
                        }
                        (None, _) => fails.push(need("")),
                        _ => {}
                    }
                }
                if let Some(v) = value {
                    match p {
                        Some(x) if x.raw() == *v => {}
                        Some(x) => fails.push(format!("PASID is {x}, expected {v}")),
                        None => fails.push(format!("no PASID, expected {v}")),
                    }
                }
                if let Some(a) = allocated {
                    let is = p.is_some_and(|x| self.sva.pasid_allocated(x));
                    if is != *a {
                        fails.push(if is {
                            "the PASID is allocated".into()
                        } else {
                            "the PASID is not allocated".into()
                        });
                    }
                }
                if let Some(b) = bound
                    && p.is_some() != *b
                {
                    fails.push(if *b {
                        "the process is bound to nothing".into()
                    } else {
                        "the process has a PASID".into()
                    });
                }
            }
            Expect::Counter { path, cmp } => {
                let stats = self.stats();
                let v = report::lookup(&stats, path).ok_or_else(|| format!("no counter {path}"))?;
                facts.push(format!("{path} = {v}"));
                for (op, want) in cmp {
                    if !op.holds(v, *want) {
                        fails.push(format!("{path} = {v}, expected {} {want}", op.symbol()));
                    }
                }
            }
            Expect::Queue { queue, state } => {
                let now = match &self.queues[*queue] {
                    QueueSlot::NotOpen => "not opened",
                    QueueSlot::Closed { .. } => QueueStateSpec::Closed.name(),
                    QueueSlot::Zip { s, .. } => queue_state(s.handle()),
                    QueueSlot::Dsa { s: Some(s), .. } => queue_state(s.handle()),
                    QueueSlot::Dsa { s: None, .. } => QueueStateSpec::Started.name(),
                };
                facts.push(format!("queue {} is {now}", self.qname(*queue)));
                if now != state.name() {
                    fails.push(format!(
                        "queue {} is {now}, expected {}",
                        self.qname(*queue),
                        state.name()
                    ));
                }
            }
        }
        Ok(if fails.is_empty() {
            (
                true,
                if facts.is_empty() {
                    "as expected".into()
                } else {
                    facts.join("; ")
                },
            )
        } else {
            (false, fails.join("; "))
        })
    }

    fn stats(&self) -> serde_json::Value {
        report::stats(
            &self.w,
            self.timeline.base(),
            self.timeline.now_ns(),
            &self.device_jobs,
        )
    }

    // ---- random ----

    fn random(&mut self, r: &RandomPlan) -> StepResult<(bool, String)> {
        if self.held {
            return Err(StepError::new(
                ErrorClass::State,
                "a random step cannot run while faults are held (its jobs would wait for them)",
            ));
        }
        let mm = self.mm(r.process)?;
        let page = mm.page_size();
        let mut shadows: Vec<Shadow> = r
            .buffers
            .iter()
            .map(|&b| Shadow::new(self.plan.buffers[b].size))
            .collect();
        let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
        let mut skipped = 0u64;
        let bases: Vec<Va> = r
            .buffers
            .iter()
            .map(|&b| self.va(b))
            .collect::<StepResult<_>>()?;
        let sizes: Vec<u64> = r
            .buffers
            .iter()
            .map(|&b| self.plan.buffers[b].size)
            .collect();
        let shared: Vec<bool> = r
            .buffers
            .iter()
            .map(|&b| self.plan.buffers[b].shared)
            .collect();
        let n = r.buffers.len() as u64;
        for i in 0..r.count {
            let kind = r.kinds[self.rng.below(r.kinds.len() as u64) as usize];
            *counts.entry(kind.name()).or_default() += 1;
            let fail = |what: String| -> StepResult<(bool, String)> {
                Ok((false, format!("operation #{i} ({}): {what}", kind.name())))
            };
            // Two (or three) distinct buffers when the kind needs them.
            let a = self.rng.below(n) as usize;
            let mut b = (a + 1 + self.rng.below(n.max(2) - 1) as usize) % n as usize;
            let mut c = b;
            if kind == RandomKind::DsaDualcast {
                while c == a || c == b {
                    c = self.rng.below(n) as usize;
                }
            }
            if !kind.two_buffers() {
                b = a;
            }
            let (off, len) = pick(&mut self.rng, sizes[a], r.max_len);
            match kind {
                RandomKind::Write => {
                    let data = self.rng.bytes(len as usize);
                    mm.write(bases[a] + off, &data)?;
                    shadows[a].put(off, &data);
                }
                RandomKind::Fill => {
                    let v = self.rng.next_u64() as u8;
                    mm.fill(bases[a] + off, v, len as usize)?;
                    shadows[a].put(off, &vec![v; len as usize]);
                }
                RandomKind::Touch => mm.touch(bases[a] + off, len, AccessKind::Write)?,
                RandomKind::Madvise | RandomKind::Reclaim | RandomKind::Migrate => {
                    let pages = sizes[a].div_ceil(page);
                    let first = self.rng.below(pages);
                    let count = 1 + self
                        .rng
                        .below((pages - first).min((r.max_len / page).max(1)));
                    let (at, plen) = (bases[a] + first * page, count * page);
                    match kind {
                        RandomKind::Madvise => {
                            mm.madvise_dontneed(at, plen)?;
                            if !shared[a] {
                                let s = first * page;
                                let e = (s + plen).min(sizes[a]);
                                shadows[a].put(s, &vec![0; (e - s) as usize]);
                            }
                        }
                        RandomKind::Reclaim => {
                            mm.reclaim(at, plen)?;
                        }
                        _ => {
                            if mm.translate(at, AccessKind::Read)?.is_some() {
                                match mm.migrate(at) {
                                    Ok(_) => {}
                                    Err(sva_mm::Error::PageShared(_)) => skipped += 1,
                                    Err(e) => return Err(e.into()),
                                }
                            } else {
                                skipped += 1;
                            }
                        }
                    }
                }
                RandomKind::DsaCopy
                | RandomKind::DsaCompare
                | RandomKind::DsaDualcast
                | RandomKind::ZipCompress => {
                    // A second range of the same length (fewer bytes if b is smaller).
                    let len = len.min(sizes[b]).min(if kind == RandomKind::DsaDualcast {
                        sizes[c]
                    } else {
                        u64::MAX
                    });
                    let off = off.min(sizes[a] - len);
                    let off_b = self.rng.below(sizes[b] - len + 1);
                    let q = match kind {
                        RandomKind::ZipCompress => {
                            r.zip[self.rng.below(r.zip.len() as u64) as usize]
                        }
                        _ => r.dsa[self.rng.below(r.dsa.len() as u64) as usize],
                    };
                    let device = self.plan.queues[q].device;
                    self.device_jobs[device] += 1;
                    let (src, dst) = (bases[a] + off, bases[b] + off_b);
                    match kind {
                        RandomKind::DsaCopy => {
                            let rec = self.dsa_now(q, DsaCall::Copy(dst, src, len as u32))?;
                            if rec.status() != Some(Status::Success) {
                                return fail(format!(
                                    "copy {len} bytes: {}",
                                    dsa_result(&rec, false).summary()
                                ));
                            }
                            let (d, k) = shadows[a].get(off, len);
                            shadows[b].put_known(off_b, &d, &k);
                        }
                        RandomKind::DsaCompare => {
                            let rec = self.dsa_now(q, DsaCall::Compare(src, dst, len as u32))?;
                            let x = read_at(&mm, src, len)?;
                            let y = read_at(&mm, dst, len)?;
                            let want = if x == y {
                                Status::Success
                            } else {
                                Status::SuccessPred
                            };
                            if rec.status() != Some(want) {
                                return fail(format!(
                                    "compare {len} bytes: {}, the CPU sees them {}",
                                    dsa_result(&rec, false).summary(),
                                    if x == y { "equal" } else { "different" }
                                ));
                            }
                        }
                        RandomKind::DsaDualcast => {
                            // dst2 agrees with dst in address bits 11:0.
                            let low = off_b & 0xfff;
                            if sizes[c] < len + low {
                                skipped += 1;
                                continue;
                            }
                            let off_c =
                                low + self.rng.below((sizes[c] - len - low) / 4096 + 1) * 4096;
                            let dst2 = bases[c] + off_c;
                            let rec =
                                self.dsa_now(q, DsaCall::Dualcast(src, dst, dst2, len as u32))?;
                            if rec.status() != Some(Status::Success) {
                                return fail(format!(
                                    "dualcast {len} bytes: {}",
                                    dsa_result(&rec, false).summary()
                                ));
                            }
                            let (d, k) = shadows[a].get(off, len);
                            shadows[b].put_known(off_b, &d, &k);
                            shadows[c].put_known(off_c, &d, &k);
                        }
                        _ => {
                            // Room for incompressible data: the output may be a little
                            // longer than the input.
                            let len = len
                                .min((sizes[b] - off_b).saturating_sub(64) * 8 / 9)
                                .max(1);
                            let cap = sizes[b] - off_b;
                            let QueueSlot::Zip { s, alg, .. } = &mut self.queues[q] else {
                                return Err(StepError::not_open(&self.plan.queues[q].name));
                            };
                            let alg = *alg;
                            let res = s.compress(
                                src,
                                len as u32,
                                dst,
                                cap.min(u64::from(u32::MAX)) as u32,
                            )?;
                            let (status, code) = status_of_zip(&res);
                            if status != JobStatus::Ok {
                                return fail(format!(
                                    "compress {len} bytes into {cap}: {} ({code})",
                                    status.name()
                                ));
                            }
                            let out = read_at(&mm, dst, u64::from(res.produced))?;
                            let input = read_at(&mm, src, len)?;
                            match inflate(alg, &out, len + 1) {
                                Ok(v) if v == input => {}
                                Ok(v) => {
                                    return fail(format!(
                                        "the output decompresses to {} bytes that differ from the {len} input bytes",
                                        v.len()
                                    ));
                                }
                                Err(e) => {
                                    return fail(format!("the output does not decompress: {e}"));
                                }
                            }
                            if let Some(at) = shadows[a].check(off, &input) {
                                return fail(format!(
                                    "source byte {:#x} of {} differs from what was written",
                                    off + at,
                                    self.bname(r.buffers[a])
                                ));
                            }
                            shadows[b].put(off_b, &out);
                        }
                    }
                }
                RandomKind::DsaFill | RandomKind::DsaCrc32c => {
                    let q = r.dsa[self.rng.below(r.dsa.len() as u64) as usize];
                    let device = self.plan.queues[q].device;
                    self.device_jobs[device] += 1;
                    let at = bases[a] + off;
                    if kind == RandomKind::DsaFill {
                        let pattern = self.rng.next_u64();
                        let rec = self.dsa_now(q, DsaCall::Fill(at, pattern, len as u32))?;
                        if rec.status() != Some(Status::Success) {
                            return fail(format!(
                                "fill {len} bytes: {}",
                                dsa_result(&rec, false).summary()
                            ));
                        }
                        let p = pattern.to_le_bytes();
                        let data: Vec<u8> = (0..len as usize).map(|i| p[i % 8]).collect();
                        shadows[a].put(off, &data);
                    } else {
                        let rec = self.dsa_now(q, DsaCall::Crc(at, len as u32, 0))?;
                        let res = dsa_result(&rec, true);
                        let data = read_at(&mm, at, len)?;
                        let cpu = crc32c::crc32c(&data);
                        if res.crc != Some(cpu) {
                            return fail(format!(
                                "crc32c of {len} bytes: {}, the CPU computes {cpu:#010x}",
                                res.summary()
                            ));
                        }
                        if let Some(x) = shadows[a].check(off, &data) {
                            return fail(format!(
                                "byte {:#x} of {} differs from what was written",
                                off + x,
                                self.bname(r.buffers[a])
                            ));
                        }
                    }
                }
            }
        }
        // Every byte the step wrote reads back as written.
        let mut known = 0u64;
        for (i, sh) in shadows.iter().enumerate() {
            let data = read_at(&mm, bases[i], sizes[i])?;
            if let Some(at) = sh.check(0, &data) {
                return Ok((
                    false,
                    format!(
                        "after {} operations, byte {at:#x} of {} is {:#04x}, expected {:#04x}",
                        r.count,
                        self.bname(r.buffers[i]),
                        data[at as usize],
                        sh.data[at as usize]
                    ),
                ));
            }
            known += sh.known_bytes();
        }
        let list: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
        Ok((
            true,
            format!(
                "{} operations ({}{}), device results match the CPU, {known} written bytes read back",
                r.count,
                list.join(", "),
                if skipped > 0 {
                    format!("; {skipped} skipped")
                } else {
                    String::new()
                }
            ),
        ))
    }

    /// Runs a data-mover operation now on queue `q`.
    fn dsa_now(&mut self, q: Id, call: DsaCall) -> StepResult<CompletionRecord> {
        let name = self.plan.queues[q].name.clone();
        match &mut self.queues[q] {
            QueueSlot::Dsa {
                s: Some(s),
                running: None,
                dead: false,
                ..
            } => Ok(dsa_call(s, call)?),
            _ => Err(StepError::new(
                ErrorClass::State,
                format!("queue `{name}` is not open and idle"),
            )),
        }
    }

    // ---- the end ----

    fn finish(&mut self) {
        if self.held {
            self.hold(false);
        }
        let _ = self.settle();
        // Data-mover threads still running end with their sessions' timeouts at worst.
        for q in &mut self.queues {
            if let QueueSlot::Dsa { running, .. } = q
                && let Some((_, t)) = running.take()
            {
                let _ = t.join();
            }
        }
    }

    fn report(&self) -> Report {
        let checks: Vec<Check> = self
            .checks
            .iter()
            .map(|c| {
                let mut c = c.check.clone();
                if c.runs > 1 {
                    c.detail = if c.failures > 0 {
                        format!("{} (failed {} of {} runs)", c.detail, c.failures, c.runs)
                    } else {
                        format!("{} ({} runs)", c.detail, c.runs)
                    };
                }
                c
            })
            .collect();
        let ok = self.failure.is_none() && checks.iter().all(|c| c.ok);
        let mut jobs = BTreeMap::new();
        for (j, decl) in self.plan.jobs.iter().enumerate() {
            if let Some(slot) = self.latest[j].and_then(|l| self.jobs.get(&l)) {
                let (status, code, bytes, fault) = match &slot.state {
                    JobState::Done(r) => (
                        r.status.name().to_string(),
                        r.code.clone(),
                        r.bytes,
                        r.fault_addr,
                    ),
                    JobState::Pending => ("pending".into(), "pending".into(), 0, None),
                };
                jobs.insert(
                    decl.name.clone(),
                    JobReport {
                        device: self.plan.devices[slot.device].name.clone(),
                        op: slot.op.to_string(),
                        status,
                        code,
                        bytes,
                        fault_addr: fault.map(|f| format!("{f:#x}")),
                        submitted: self.submitted[j],
                    },
                );
            }
        }
        Report {
            version: report::REPORT_VERSION,
            scenario: self.plan.name.clone(),
            ok,
            seed: self.seed,
            steps_run: self.steps_run,
            checks,
            error: self.failure.clone(),
            jobs,
            stats: self.stats(),
        }
    }
}

fn queue_state(h: Option<&sva_uacce::Queue>) -> &'static str {
    match h.map(|h| h.state()) {
        Some(sva_uacce::QueueState::Init) => QueueStateSpec::Init.name(),
        Some(sva_uacce::QueueState::Started) => QueueStateSpec::Started.name(),
        Some(sva_uacce::QueueState::Zombie) => QueueStateSpec::Zombie.name(),
        None => "unknown",
    }
}

fn read_at(mm: &Mm, va: Va, len: u64) -> StepResult<Vec<u8>> {
    let mut b = vec![0u8; len as usize];
    mm.read(va, &mut b)?;
    Ok(b)
}

/// A random range of a buffer of `size` bytes, at most `max_len` long.
fn pick(rng: &mut Rng, size: u64, max_len: u64) -> (u64, u64) {
    let len = 1 + rng.below(max_len.min(size));
    let off = rng.below(size - len + 1);
    (off, len)
}

/// What a random step knows a buffer holds: the bytes it wrote.
struct Shadow {
    data: Vec<u8>,
    known: Vec<u64>,
}

impl Shadow {
    fn new(size: u64) -> Self {
        Self {
            data: vec![0; size as usize],
            known: vec![0; (size as usize).div_ceil(64)],
        }
    }

    fn is_known(&self, i: usize) -> bool {
        self.known[i / 64] & (1 << (i % 64)) != 0
    }

    fn set_known(&mut self, i: usize, k: bool) {
        if k {
            self.known[i / 64] |= 1 << (i % 64);
        } else {
            self.known[i / 64] &= !(1 << (i % 64));
        }
    }

    fn put(&mut self, off: u64, bytes: &[u8]) {
        let off = off as usize;
        self.data[off..off + bytes.len()].copy_from_slice(bytes);
        for i in off..off + bytes.len() {
            self.set_known(i, true);
        }
    }

    fn get(&self, off: u64, len: u64) -> (Vec<u8>, Vec<bool>) {
        let (off, len) = (off as usize, len as usize);
        (
            self.data[off..off + len].to_vec(),
            (off..off + len).map(|i| self.is_known(i)).collect(),
        )
    }

    fn put_known(&mut self, off: u64, bytes: &[u8], known: &[bool]) {
        let off = off as usize;
        self.data[off..off + bytes.len()].copy_from_slice(bytes);
        for (i, k) in known.iter().enumerate() {
            self.set_known(off + i, *k);
        }
    }

    /// The first known byte at `off + i` that differs from `actual[i]`.
    fn check(&self, off: u64, actual: &[u8]) -> Option<u64> {
        let off = off as usize;
        actual
            .iter()
            .enumerate()
            .find(|(i, b)| self.is_known(off + i) && self.data[off + i] != **b)
            .map(|(i, _)| (off + i) as u64)
    }

    fn known_bytes(&self) -> u64 {
        self.known.iter().map(|w| u64::from(w.count_ones())).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_fixed_per_seed() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::new(8).next_u64(), xs[0]);
        // SplitMix64's published first output for seed 0.
        assert_eq!(Rng::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
        for n in 1..50 {
            assert!(a.below(n) < n);
        }
    }

    #[test]
    fn the_shadow_checks_known_bytes_only() {
        let mut s = Shadow::new(100);
        s.put(10, b"abc");
        assert_eq!(s.check(0, &[0u8; 100]), Some(10));
        let mut mem = vec![0u8; 100];
        mem[10..13].copy_from_slice(b"abc");
        mem[50] = 9;
        assert_eq!(s.check(0, &mem), None);
        let (d, k) = s.get(9, 5);
        s.put_known(60, &d, &k);
        assert_eq!(s.known_bytes(), 6);
        assert!(s.is_known(61) && !s.is_known(60));
    }
}
