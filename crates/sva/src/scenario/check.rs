//! Validation: turns a [`RawScenario`] into a [`Plan`] whose names are resolved to
//! indices and whose values are known to be possible, or reports every mistake with its
//! position (a byte range of the file, turned into `LINE:COL` by [`Diag::render`]).
//!
//! Names are defined by one step each (a `repeat` body runs that step again, which is
//! fine) and must be defined before they are used, in file order. A name means one kind
//! of thing: a process, a buffer, a device, a queue, a bond or a job.

use super::spec::*;
use crate::world::{DeviceOptions, DeviceSpec, Kind};
use std::collections::BTreeMap;
use std::ops::Range as Span;
use std::path::Path;
use sva_addr::StreamId;
use sva_mm::{AccessKind, MapFlags, Prot};
use sva_pcie::Capabilities;
use sva_platform::PlatformConfig;
use sva_smmuv3::HttuLevel;
use sva_zip::Alg;
use toml::Spanned;

/// A mistake in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    /// Where (byte range); `None` when it concerns the whole file.
    pub span: Option<Span<usize>>,
    /// What is wrong.
    pub message: String,
}

impl Diag {
    fn at(span: Span<usize>, message: impl Into<String>) -> Self {
        Self {
            span: Some(span),
            message: message.into(),
        }
    }

    /// `FILE:LINE:COL: message` (or `FILE: message`).
    pub fn render(&self, file: &str, src: &str) -> String {
        match &self.span {
            Some(s) => {
                let (line, col) = line_col(src, s.start);
                format!("{file}:{line}:{col}: {}", self.message)
            }
            None => format!("{file}: {}", self.message),
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` of `src`.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before, |i| &before[i + 1..])
        .chars()
        .count()
        + 1;
    (line, col)
}

/// A process, buffer, queue, bond or job: an index into the plan's tables.
pub type Id = usize;

/// A scenario ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Title.
    pub name: String,
    /// What the scenario shows.
    pub description: Option<String>,
    /// The file's `seed` (the default of `--seed`).
    pub seed: u64,
    /// The modeled clock's costs.
    pub costs: crate::clock::CostTable,
    /// The machine.
    pub platform: PlatformConfig,
    /// The devices.
    pub devices: Vec<DeviceSpec>,
    /// Their options.
    pub device_options: Vec<DeviceOptions>,
    /// Every process name (declared, spawned, forked), by id.
    pub processes: Vec<String>,
    /// Processes that exist from the start.
    pub initial: Vec<Id>,
    /// Every buffer.
    pub buffers: Vec<BufferDecl>,
    /// Every queue.
    pub queues: Vec<QueueDecl>,
    /// Every bond name.
    pub bonds: Vec<String>,
    /// Every job.
    pub jobs: Vec<JobDecl>,
    /// The steps.
    pub steps: Vec<Step>,
    /// Steps in the file (repeat bodies counted once).
    pub step_count: usize,
    /// Expect steps in the file.
    pub expectations: usize,
}

/// A named buffer.
#[derive(Debug, Clone)]
pub struct BufferDecl {
    /// Its name.
    pub name: String,
    /// The process that maps it.
    pub owner: Id,
    /// Its length.
    pub size: u64,
    /// MAP_SHARED.
    pub shared: bool,
}

/// A named queue.
#[derive(Debug, Clone)]
pub struct QueueDecl {
    /// Its name.
    pub name: String,
    /// The device (index into [`Plan::devices`]).
    pub device: usize,
    /// The process that opens it.
    pub owner: Id,
}

/// A named job.
#[derive(Debug, Clone)]
pub struct JobDecl {
    /// Its name.
    pub name: String,
    /// Submitted without waiting.
    pub async_: bool,
}

/// One step, resolved.
#[derive(Debug, Clone)]
pub struct Step {
    /// Unique per step of the file (repeat bodies keep theirs across iterations).
    pub id: usize,
    /// Line in the file.
    pub line: usize,
    /// The step kind.
    pub kind: StepKind,
    /// The user's label.
    pub name: Option<String>,
    /// The step must fail.
    pub expect_error: Option<ErrorSpec>,
    /// What it does.
    pub action: Action,
}

/// A range of a buffer, seen from a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// The buffer.
    pub buf: Id,
    /// The address space (default: the buffer's owner).
    pub process: Option<Id>,
    /// Offset into the buffer.
    pub offset: u64,
    /// Length.
    pub len: u64,
}

/// Where `mmap` places a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Anywhere.
    Anywhere,
    /// At this address.
    At(u64),
    /// At another buffer's address.
    SameAs(Id),
}

/// Data of `write`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// These bytes.
    Bytes(Vec<u8>),
    /// Pseudo-random bytes from the run's generator.
    Random,
}

/// A step's action.
#[derive(Debug, Clone)]
pub enum Action {
    /// mmap.
    Mmap {
        /// The buffer.
        buf: Id,
        /// Placement.
        place: Place,
        /// Protection.
        prot: Prot,
        /// Flags.
        flags: MapFlags,
    },
    /// munmap.
    Munmap(Range),
    /// mprotect.
    Mprotect(Range, Prot),
    /// madvise(DONTNEED).
    Madvise(Range),
    /// CPU accesses.
    Touch(Range, AccessKind),
    /// CPU stores.
    Write(Range, Data),
    /// CPU fill.
    Fill(Range, u8),
    /// A new process.
    Spawn(Id),
    /// fork.
    Fork {
        /// Parent.
        parent: Id,
        /// Child.
        child: Id,
    },
    /// exit.
    Exit(Id),
    /// Swap out.
    Reclaim(Range),
    /// Migrate.
    Migrate(Range),
    /// Open a queue.
    Open {
        /// The queue.
        queue: Id,
        /// Format (zip).
        alg: Alg,
        /// Block on fault (dsa).
        block_on_fault: bool,
    },
    /// Close a queue.
    Close(Id),
    /// Bind without a queue.
    Bind {
        /// The bond.
        bond: Id,
        /// Device index.
        device: usize,
        /// Process.
        process: Id,
    },
    /// Unbind.
    Unbind(Id),
    /// Submit a job.
    Submit(Submit),
    /// Collect an asynchronous job.
    Wait(Id),
    /// Hold SMMU interrupts.
    HoldFaults,
    /// Deliver them again.
    ReleaseFaults,
    /// Check.
    Expect(Expect),
    /// Loop.
    Repeat {
        /// Iterations.
        times: u64,
        /// Body.
        body: Vec<Step>,
    },
    /// Random operations.
    Random(RandomPlan),
}

/// A job submission.
#[derive(Debug, Clone)]
pub struct Submit {
    /// The queue.
    pub queue: Id,
    /// The job's name.
    pub job: Option<Id>,
    /// Do not wait.
    pub async_: bool,
    /// Submit as this process instead of the queue's owner (refused: not the owner).
    pub caller: Option<Id>,
    /// The operation.
    pub op: JobOp,
}

/// Input of a decompression.
#[derive(Debug, Clone, Copy)]
pub enum Input {
    /// A buffer range.
    Range(Range),
    /// The output of a job.
    Job(Id),
}

/// A job's operation and buffers.
#[derive(Debug, Clone)]
pub enum JobOp {
    /// Compress `src` into `dst` (its length is the capacity).
    Compress {
        /// Source.
        src: Range,
        /// Destination.
        dst: Range,
    },
    /// Decompress.
    Decompress {
        /// Source.
        src: Input,
        /// Destination.
        dst: Range,
    },
    /// Copy.
    Copy {
        /// Source.
        src: Range,
        /// Destination.
        dst: Range,
    },
    /// Fill.
    Fill {
        /// Destination.
        dst: Range,
        /// Pattern.
        pattern: u64,
    },
    /// Compare.
    Compare {
        /// First.
        a: Range,
        /// Second.
        b: Range,
    },
    /// CRC-32C.
    Crc32c {
        /// Source.
        src: Range,
        /// Seed.
        seed: u32,
    },
    /// Dualcast.
    Dualcast {
        /// Source.
        src: Range,
        /// First destination.
        dst: Range,
        /// Second destination.
        dst2: Range,
    },
}

impl JobOp {
    /// The op's name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Compress { .. } => "compress",
            Self::Decompress { .. } => "decompress",
            Self::Copy { .. } => "copy",
            Self::Fill { .. } => "fill",
            Self::Compare { .. } => "compare",
            Self::Crc32c { .. } => "crc32c",
            Self::Dualcast { .. } => "dualcast",
        }
    }
}

/// A PASID reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasidRef {
    /// The queue's PASID (when it was opened).
    Queue(Id),
    /// The bond's PASID.
    Bond(Id),
    /// The process's PASID now.
    Process(Id),
}

/// Comparison of a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// =
    Eq,
    /// ≠
    Ne,
    /// >
    Gt,
    /// ≥
    Ge,
    /// <
    Lt,
    /// ≤
    Le,
}

impl Cmp {
    /// The symbol.
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::Ne => "!=",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Lt => "<",
            Self::Le => "<=",
        }
    }

    /// Whether `a op b`.
    pub fn holds(self, a: u64, b: u64) -> bool {
        match self {
            Self::Eq => a == b,
            Self::Ne => a != b,
            Self::Gt => a > b,
            Self::Ge => a >= b,
            Self::Lt => a < b,
            Self::Le => a <= b,
        }
    }
}

/// What an `expect` step checks.
#[derive(Debug, Clone)]
pub enum Expect {
    /// A job's result.
    Job {
        /// The job.
        job: Id,
        /// Status class.
        status: Option<JobStatus>,
        /// Device code.
        code: Option<String>,
        /// Fault address page: buffer and offset.
        fault_at: Option<(Id, u64)>,
        /// Output decompresses to this range.
        decompresses_to: Option<Range>,
        /// CRC value.
        crc32c: Option<u32>,
        /// CRC equals the CPU's of this range.
        crc_of: Option<Range>,
    },
    /// A buffer range.
    Buffer {
        /// The range.
        range: Range,
        /// Equals this range (same length).
        equals: Option<Range>,
        /// CRC-32C of the range.
        crc32c: Option<u32>,
        /// Every byte.
        byte: Option<u8>,
        /// The range starts with these bytes.
        bytes: Option<Vec<u8>>,
        /// Every page present.
        present: Option<bool>,
        /// Covered by a VMA.
        mapped: Option<bool>,
    },
    /// A PASID.
    Pasid {
        /// Whose.
        subject: PasidRef,
        /// Equal to.
        same_as: Option<PasidRef>,
        /// Different from.
        differs_from: Option<PasidRef>,
        /// Value.
        value: Option<u32>,
        /// Allocated.
        allocated: Option<bool>,
        /// The process has one.
        bound: Option<bool>,
    },
    /// A counter.
    Counter {
        /// Dotted path in `stats`.
        path: String,
        /// Comparisons.
        cmp: Vec<(Cmp, u64)>,
    },
    /// A queue's state.
    Queue {
        /// The queue.
        queue: Id,
        /// The state.
        state: QueueStateSpec,
    },
}

/// A `random` step.
#[derive(Debug, Clone)]
pub struct RandomPlan {
    /// The address space.
    pub process: Id,
    /// Operations.
    pub count: u64,
    /// Buffers.
    pub buffers: Vec<Id>,
    /// Kinds, with repeats as weights.
    pub kinds: Vec<RandomKind>,
    /// Compression queues.
    pub zip: Vec<Id>,
    /// Data-mover queues.
    pub dsa: Vec<Id>,
    /// Largest operation.
    pub max_len: u64,
}

/// Largest request of the compression engine (`sva_zip::sqe::MAX_REQUEST_SIZE`).
pub const ZIP_MAX_REQUEST: u64 = 8 << 20;
/// Largest transfer of the data mover (its default `max_xfer_size`).
pub const DSA_MAX_XFER: u64 = 2 << 20;
/// Largest total size of the buffers of one `random` step (it keeps a shadow copy).
pub const RANDOM_MAX_BYTES: u64 = 64 << 20;
/// Largest range a step reads or writes as data (`write`, and `expect` on contents).
pub const DATA_MAX_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameKind {
    Process,
    Buffer,
    Device,
    Queue,
    Bond,
    Job,
}

impl NameKind {
    fn name(self) -> &'static str {
        match self {
            Self::Process => "process",
            Self::Buffer => "buffer",
            Self::Device => "device",
            Self::Queue => "queue",
            Self::Bond => "bond",
            Self::Job => "job",
        }
    }
}

/// A name's definition.
#[derive(Debug, Clone, Copy)]
struct Def {
    kind: NameKind,
    id: usize,
    /// The defining step id (`usize::MAX` for top-level declarations).
    step: usize,
    line: usize,
}

/// The checker's state while walking the steps in file order.
struct Checker<'a> {
    src: &'a str,
    dir: &'a Path,
    diags: Vec<Diag>,
    names: BTreeMap<String, Def>,
    plan: Plan,
    /// Device kinds, by device index.
    device_kinds: Vec<DeviceKind>,
    /// Jobs submitted by a compress step.
    compress_jobs: Vec<bool>,
    next_step: usize,
    /// Names some step defines, with the line of the first such step.
    later: BTreeMap<String, (NameKind, usize)>,
}

fn span_of<T>(s: &Spanned<T>) -> Span<usize> {
    s.span()
}

impl<'a> Checker<'a> {
    fn err(&mut self, span: Span<usize>, msg: impl Into<String>) {
        self.diags.push(Diag::at(span, msg));
    }

    fn line(&self, span: &Span<usize>) -> usize {
        line_col(self.src, span.start).0
    }

    /// Defines `name` as a `kind`, by step `step`.
    fn define(&mut self, name: &S<String>, kind: NameKind, id: usize, step: usize) -> bool {
        let n = name.get_ref();
        let span = span_of(name);
        if n.is_empty() {
            self.err(span, format!("empty {} name", kind.name()));
            return false;
        }
        let line = self.line(&span);
        if let Some(d) = self.names.get(n).copied() {
            if d.kind == kind && d.step == step && step != usize::MAX {
                return true;
            }
            self.err(
                span,
                format!(
                    "`{n}` is already defined as a {} on line {}",
                    d.kind.name(),
                    d.line
                ),
            );
            return false;
        }
        self.names.insert(
            n.clone(),
            Def {
                kind,
                id,
                step,
                line,
            },
        );
        true
    }

    /// Resolves a reference to a `kind`.
    fn resolve(&mut self, name: &S<String>, kind: NameKind) -> Option<usize> {
        let n = name.get_ref();
        match self.names.get(n).copied() {
            Some(d) if d.kind == kind => Some(d.id),
            Some(d) => {
                self.err(
                    span_of(name),
                    format!(
                        "`{n}` is a {} (line {}), not a {}",
                        d.kind.name(),
                        d.line,
                        kind.name()
                    ),
                );
                None
            }
            None => {
                let here = self.line(&span_of(name));
                let msg = match self.later.get(n) {
                    Some(&(k, line)) if k == kind && line <= here => format!(
                        "{} `{n}` is not defined: the step on line {line} that defines it has errors",
                        kind.name()
                    ),
                    Some(&(k, line)) if k == kind => format!(
                        "{} `{n}` is used before it is {} (on line {line})",
                        kind.name(),
                        match kind {
                            NameKind::Buffer => "mapped",
                            NameKind::Queue => "opened",
                            NameKind::Bond => "bound",
                            NameKind::Job => "submitted",
                            _ => "created",
                        }
                    ),
                    _ => format!("unknown {} `{n}`{}", kind.name(), self.hint(kind)),
                };
                self.err(span_of(name), msg);
                None
            }
        }
    }

    /// Records the names the steps define, so that a use before the definition is named
    /// as such.
    fn prescan(&mut self, steps: &[S<RawStep>]) {
        for st in steps {
            let s = st.get_ref();
            let Some(k) = &s.kind else { continue };
            let def = match k.get_ref() {
                StepKind::Mmap => s.buffer.as_ref().map(|n| (n, NameKind::Buffer)),
                StepKind::Spawn => s.process.as_ref().map(|n| (n, NameKind::Process)),
                StepKind::Fork => s.child.as_ref().map(|n| (n, NameKind::Process)),
                StepKind::Open => s.queue.as_ref().map(|n| (n, NameKind::Queue)),
                StepKind::Bind => s.bond.as_ref().map(|n| (n, NameKind::Bond)),
                StepKind::Submit => s.job.as_ref().map(|n| (n, NameKind::Job)),
                _ => None,
            };
            if let Some((n, kind)) = def {
                let line = self.line(&span_of(n));
                self.later
                    .entry(n.get_ref().clone())
                    .or_insert((kind, line));
            }
            if let Some(body) = &s.steps {
                self.prescan(body.get_ref());
            }
        }
    }

    fn hint(&self, kind: NameKind) -> String {
        let known: Vec<&str> = self
            .names
            .iter()
            .filter(|(_, d)| d.kind == kind)
            .map(|(k, _)| k.as_str())
            .collect();
        let what = match kind {
            NameKind::Process => "declare it in [[process]] or create it with spawn/fork first",
            NameKind::Buffer => "map it with an earlier mmap step",
            NameKind::Device => "declare it in [[device]]",
            NameKind::Queue => "open it with an earlier open step",
            NameKind::Bond => "create it with an earlier bind step",
            NameKind::Job => "submit it with an earlier submit step",
        };
        if known.is_empty() {
            format!(" ({what})")
        } else {
            format!(" ({what}; known: {})", known.join(", "))
        }
    }

    fn buffer(&mut self, name: &S<String>) -> Option<Id> {
        self.resolve(name, NameKind::Buffer)
    }

    /// A range of `buf` from an offset and an optional length (default: to the end).
    fn range(
        &mut self,
        buf: Id,
        at: Span<usize>,
        offset: &O<Size>,
        len: &O<Size>,
        default_len: Option<u64>,
    ) -> Option<Range> {
        let size = self.plan.buffers[buf].size;
        let name = self.plan.buffers[buf].name.clone();
        let off = offset.as_ref().map_or(0, |o| o.get_ref().0);
        if off >= size {
            let span = offset.as_ref().map_or(at, span_of);
            self.err(
                span,
                format!("offset {off} is at or beyond the end of `{name}` ({size} bytes)"),
            );
            return None;
        }
        let len = match len {
            Some(l) => {
                let v = l.get_ref().0;
                if v == 0 {
                    self.err(span_of(l), "length 0: a range must have at least one byte");
                    return None;
                }
                if off.checked_add(v).is_none_or(|e| e > size) {
                    self.err(
                        span_of(l),
                        format!(
                            "offset {off} + length {v} goes beyond the end of `{name}` ({size} bytes)"
                        ),
                    );
                    return None;
                }
                v
            }
            None => default_len.map_or(size - off, |d| d.min(size - off)),
        };
        Some(Range {
            buf,
            process: None,
            offset: off,
            len,
        })
    }

    /// Refuses a data range the runner would have to hold in host memory at once.
    fn data_cap(&mut self, r: &Range, at: Span<usize>) -> Option<()> {
        if r.len > DATA_MAX_BYTES {
            self.err(
                at,
                format!(
                    "{} bytes: a step reads or writes at most 64 MiB of data at once (use offset/len)",
                    r.len
                ),
            );
            return None;
        }
        Some(())
    }

    fn process_ref(&mut self, name: &O<String>) -> Option<Option<Id>> {
        match name {
            None => Some(None),
            Some(n) => self.resolve(n, NameKind::Process).map(Some),
        }
    }
}

/// Keys present in a step, with their spans.
fn present(s: &RawStep) -> Vec<(&'static str, Span<usize>)> {
    let mut v = Vec::new();
    macro_rules! keys {
        ($($field:ident => $key:literal),* $(,)?) => {
            $( if let Some(x) = &s.$field { v.push(($key, x.span())); } )*
        };
    }
    keys!(
        name => "name", expect_error => "expect_error", process => "process",
        buffer => "buffer", child => "child", queue => "queue", device => "device",
        bond => "bond", job => "job", size => "size", prot => "prot", shared => "shared",
        populate => "populate", at => "at", same_address_as => "same_address_as",
        hugepages => "hugepages", dontfork => "dontfork", wipeonfork => "wipeonfork",
        offset => "offset", len => "len", access => "access", text => "text", hex => "hex",
        random => "random", file => "file", byte => "byte", alg => "alg",
        block_on_fault => "block_on_fault", op => "op", src => "src",
        src_offset => "src_offset", src2 => "src2", src2_offset => "src2_offset",
        dst => "dst", dst_offset => "dst_offset", dst2 => "dst2",
        dst2_offset => "dst2_offset", cap => "cap", pattern => "pattern",
        crc_seed => "crc_seed", from_job => "from_job", async_ => "async",
        times => "times", steps => "steps", count => "count", buffers => "buffers",
        kinds => "kinds", queues => "queues", max_len => "max_len", status => "status",
        code => "code", fault_at => "fault_at", fault_offset => "fault_offset",
        decompresses_to => "decompresses_to", crc32c => "crc32c", crc_of => "crc_of",
        equals => "equals", equals_offset => "equals_offset", present => "present",
        mapped => "mapped", pasid => "pasid", same_as => "same_as",
        differs_from => "differs_from", value => "value", allocated => "allocated",
        bound => "bound", counter => "counter", eq => "eq", ne => "ne", gt => "gt",
        ge => "ge", lt => "lt", le => "le", state => "state",
    );
    v
}

/// Options of `submit`: the five every submit takes, then [`OP_KEYS`].
const SUBMIT_KEYS: &[&str] = &[
    "queue",
    "op",
    "job",
    "async",
    "process",
    "src",
    "src_offset",
    "src2",
    "src2_offset",
    "dst",
    "dst_offset",
    "dst2",
    "dst2_offset",
    "len",
    "cap",
    "pattern",
    "crc_seed",
    "from_job",
];

/// The operands of `submit`: each op takes some of them (`Checker::submit` says which).
const OP_KEYS: &[&str] = SUBMIT_KEYS.split_at(5).1;

/// Options each step kind takes (besides `do`, `name` and `expect_error`).
fn allowed(kind: StepKind) -> &'static [&'static str] {
    use StepKind::*;
    match kind {
        Mmap => &[
            "process",
            "buffer",
            "size",
            "prot",
            "shared",
            "populate",
            "at",
            "same_address_as",
            "hugepages",
            "dontfork",
            "wipeonfork",
        ],
        Munmap | Madvise | Reclaim | Migrate => &["buffer", "process", "offset", "len"],
        Mprotect => &["buffer", "process", "offset", "len", "prot"],
        Touch => &["buffer", "process", "offset", "len", "access"],
        Write => &[
            "buffer", "process", "offset", "len", "text", "hex", "random", "file",
        ],
        Fill => &["buffer", "process", "offset", "len", "byte"],
        Spawn | Exit => &["process"],
        Fork => &["process", "child"],
        Open => &["queue", "device", "process", "alg", "block_on_fault"],
        Close => &["queue"],
        Bind => &["bond", "device", "process"],
        Unbind => &["bond"],
        Submit => SUBMIT_KEYS,
        Wait => &["job"],
        HoldFaults | ReleaseFaults => &[],
        Expect => &[
            "job",
            "buffer",
            "pasid",
            "counter",
            "queue",
            "process",
            "offset",
            "len",
            "status",
            "code",
            "fault_at",
            "fault_offset",
            "decompresses_to",
            "crc32c",
            "crc_of",
            "equals",
            "equals_offset",
            "byte",
            "text",
            "hex",
            "present",
            "mapped",
            "same_as",
            "differs_from",
            "value",
            "allocated",
            "bound",
            "eq",
            "ne",
            "gt",
            "ge",
            "lt",
            "le",
            "state",
        ],
        Repeat => &["times", "steps"],
        Random => &["process", "count", "buffers", "kinds", "queues", "max_len"],
    }
}

fn prot_of(p: ProtSpec) -> Prot {
    let mut prot = Prot::NONE;
    if p.read {
        prot |= Prot::READ;
    }
    if p.write {
        prot |= Prot::WRITE | Prot::READ;
    }
    if p.exec {
        prot |= Prot::EXEC;
    }
    prot
}

fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let clean: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '_' && *c != ':')
        .collect();
    let clean = clean
        .strip_prefix("0x")
        .or_else(|| clean.strip_prefix("0X"))
        .unwrap_or(&clean);
    if clean.is_empty() || !clean.len().is_multiple_of(2) {
        return Err(format!("`{s}`: hex bytes need an even number of digits"));
    }
    (0..clean.len())
        .step_by(2)
        .map(|i| {
            clean
                .get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or_else(|| format!("`{s}` is not hex bytes"))
        })
        .collect()
}

/// Checks `raw` (from the file at `path`, whose text is `src`).
pub fn check(raw: &RawScenario, src: &str, path: &Path) -> Result<Plan, Vec<Diag>> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut c = Checker {
        src,
        dir,
        diags: Vec::new(),
        names: BTreeMap::new(),
        plan: Plan {
            name: raw.name.as_ref().map_or_else(
                || {
                    path.file_stem()
                        .map_or_else(|| "scenario".into(), |s| s.to_string_lossy().into())
                },
                |n| n.get_ref().clone(),
            ),
            description: raw.description.as_ref().map(|d| d.get_ref().clone()),
            seed: raw.seed.as_ref().map_or(0, |s| *s.get_ref()),
            costs: raw.costs.unwrap_or_default(),
            platform: PlatformConfig::default(),
            devices: Vec::new(),
            device_options: Vec::new(),
            processes: Vec::new(),
            initial: Vec::new(),
            buffers: Vec::new(),
            queues: Vec::new(),
            bonds: Vec::new(),
            jobs: Vec::new(),
            steps: Vec::new(),
            step_count: 0,
            expectations: 0,
        },
        device_kinds: Vec::new(),
        compress_jobs: Vec::new(),
        next_step: 0,
        later: BTreeMap::new(),
    };
    c.prescan(&raw.step);
    c.platform(raw.platform.as_ref());
    for d in &raw.device {
        c.device(d);
    }
    for p in &raw.process {
        let id = c.plan.processes.len();
        if c.define(&p.get_ref().name, NameKind::Process, id, usize::MAX) {
            c.plan.processes.push(p.get_ref().name.get_ref().clone());
            c.plan.initial.push(id);
        }
    }
    let steps = c.steps(&raw.step);
    c.plan.steps = steps;
    if c.diags.is_empty() {
        Ok(c.plan)
    } else {
        c.diags
            .sort_by_key(|d| d.span.as_ref().map_or(0, |s| s.start));
        Err(c.diags)
    }
}

impl Checker<'_> {
    fn platform(&mut self, raw: Option<&S<RawPlatform>>) {
        // Scenario runs are reproducible: interrupts come from the world's pump.
        let mut cfg = PlatformConfig {
            irq_thread: false,
            ..PlatformConfig::default()
        };
        let Some(raw) = raw else {
            self.plan.platform = cfg;
            return;
        };
        let p = raw.get_ref();
        if let Some(m) = &p.memory {
            let v = m.get_ref().0;
            if v < (16 << 20) {
                self.err(span_of(m), format!("memory {v} bytes: at least 16 MiB"));
            } else if v % 4096 != 0 {
                self.err(span_of(m), "memory must be a multiple of 4 KiB");
            } else if v > sva_physmem::MAX_RAM_SIZE {
                self.err(span_of(m), "memory above 256 TiB");
            } else {
                cfg.ram_size = v;
            }
        }
        if let Some(t) = &p.thp {
            cfg.mm.thp = *t.get_ref();
        }
        if let Some(w) = &p.iopf_workers {
            let v = *w.get_ref();
            if !(1..=64).contains(&v) {
                self.err(span_of(w), format!("iopf_workers {v}: 1 to 64"));
            } else {
                cfg.iopf_workers = v as usize;
            }
        }
        if let Some(s) = &p.smmu {
            let s = s.get_ref();
            if let Some(v) = &s.sidsize {
                let n = *v.get_ref();
                if !(1..=16).contains(&n) {
                    self.err(
                        span_of(v),
                        format!("sidsize {n}: StreamID bits are 1 to 16"),
                    );
                } else {
                    cfg.smmu.sidsize = n as u8;
                }
            }
            if let Some(v) = &s.ssidsize {
                let n = *v.get_ref();
                if !(1..=20).contains(&n) {
                    self.err(
                        span_of(v),
                        format!("ssidsize {n}: SubstreamID bits are 1 to 20 (SVA needs PASIDs)"),
                    );
                } else {
                    cfg.smmu.ssidsize = n as u8;
                }
            }
            let flag = |o: &O<bool>, d: bool| o.as_ref().map_or(d, |v| *v.get_ref());
            cfg.smmu.ats = flag(&s.ats, cfg.smmu.ats);
            cfg.smmu.pri = flag(&s.pri, cfg.smmu.pri);
            cfg.smmu.stall = flag(&s.stall, cfg.smmu.stall);
            cfg.smmu.btm = flag(&s.btm, cfg.smmu.btm);
            cfg.smmu.range_inv = flag(&s.range_invalidation, cfg.smmu.range_inv);
            if let (Some(pri), false) = (&s.pri, cfg.smmu.ats)
                && *pri.get_ref()
            {
                self.err(
                    span_of(pri),
                    "pri = true needs ats = true (PRI is part of ATS)",
                );
            }
            if let Some(h) = &s.httu {
                cfg.smmu.httu = match h.get_ref() {
                    Httu::None => HttuLevel::None,
                    Httu::Access => HttuLevel::Access,
                    Httu::AccessDirty => HttuLevel::AccessDirty,
                };
            }
            if let Some(v) = &s.iotlb_entries {
                let n = *v.get_ref();
                if !(1..=1 << 20).contains(&n) {
                    self.err(span_of(v), format!("iotlb_entries {n}: 1 to 1048576"));
                } else {
                    cfg.smmu.iotlb_entries = n as usize;
                }
            }
        }
        cfg.probe.ats = cfg.smmu.ats;
        cfg.probe.pri = cfg.smmu.pri;
        cfg.probe.stall = cfg.smmu.stall;
        cfg.probe.btm = cfg.smmu.btm;
        cfg.probe.range_inv = cfg.smmu.range_inv;
        cfg.probe.httu = cfg.smmu.httu != HttuLevel::None;
        self.plan.platform = cfg;
    }

    fn device(&mut self, raw: &S<RawDevice>) {
        let d = raw.get_ref();
        let index = self.plan.devices.len();
        if !self.define(&d.name, NameKind::Device, index, usize::MAX) {
            return;
        }
        let kind = *d.kind.get_ref();
        let smmu = &self.plan.platform.smmu;
        let (sidsize, smmu_ats, smmu_pri, smmu_stall) =
            (smmu.sidsize, smmu.ats, smmu.pri, smmu.stall);
        let sid = *d.sid.get_ref();
        let max_sid = (1u64 << sidsize) - 1;
        if sid > max_sid {
            self.err(
                span_of(&d.sid),
                format!(
                    "StreamID {sid:#x} is above SIDSIZE {sidsize} (largest StreamID {max_sid:#x})"
                ),
            );
        }
        if let Some((other, _)) = self
            .plan
            .devices
            .iter()
            .zip(0..)
            .find(|(o, _)| u64::from(o.sid.raw()) == sid)
        {
            let other = other.name.clone();
            self.err(
                span_of(&d.sid),
                format!("StreamID {sid:#x} is taken by device `{other}`"),
            );
        }
        let mut caps = Capabilities::default();
        if let Some(w) = &d.pasid_width {
            let v = *w.get_ref();
            if !(1..=20).contains(&v) {
                self.err(
                    span_of(w),
                    format!("pasid_width {v}: the PASID capability has 1 to 20 bits"),
                );
            } else {
                caps.pasid_width = v as u8;
            }
        }
        if let Some(a) = &d.ats {
            caps.ats = *a.get_ref();
        }
        if !caps.ats {
            // PRI is part of ATS: without it, no PRI unless asked (and then refused below).
            caps.pri_capacity = 0;
        }
        if let Some(p) = &d.pri_credits {
            let v = *p.get_ref();
            if v > 1 << 16 {
                self.err(span_of(p), format!("pri_credits {v}: at most 65536"));
            } else {
                caps.pri_capacity = v as u32;
            }
            if v > 0 && !caps.ats {
                self.err(
                    span_of(p),
                    "PRI needs ATS: set ats = true or pri_credits = 0",
                );
            }
        }
        if let Some(a) = &d.atc_entries {
            let v = *a.get_ref();
            if !(1..=1 << 20).contains(&v) {
                self.err(span_of(a), format!("atc_entries {v}: 1 to 1048576"));
            } else {
                caps.atc_entries = v as usize;
            }
        }
        let mut queue_depth = 64u16;
        if let Some(q) = &d.queue_depth {
            let v = *q.get_ref();
            if kind != DeviceKind::Zip {
                self.err(span_of(q), "queue_depth is an option of zip devices");
            } else if !(2..=4096).contains(&v) {
                self.err(span_of(q), format!("queue_depth {v}: 2 to 4096"));
            } else {
                queue_depth = v as u16;
            }
        }
        let mut opts = DeviceOptions {
            engines: 1,
            ..DeviceOptions::default()
        };
        if let Some(e) = &d.engines {
            let v = *e.get_ref();
            if !(1..=16).contains(&v) {
                self.err(span_of(e), format!("engines {v}: 1 to 16"));
            } else {
                opts.engines = v as usize;
            }
        }
        if let Some(g) = &d.pri_group_pages {
            let v = *g.get_ref();
            if !(1..=512).contains(&v) {
                self.err(span_of(g), format!("pri_group_pages {v}: 1 to 512"));
            } else {
                opts.pri_group_pages = v as u32;
            }
        }
        if let Some(m) = &d.max_pasid {
            let v = *m.get_ref();
            if !(1..(1 << 20)).contains(&v) {
                self.err(span_of(m), format!("max_pasid {v}: 1 to 1048575"));
            } else {
                opts.max_pasid = Some(v as u32);
            }
        }
        let pri_path = caps.pri_capacity > 0 && caps.ats && smmu_ats && smmu_pri;
        if !pri_path && !smmu_stall {
            self.err(
                span_of(raw),
                format!(
                    "device `{}` cannot take I/O page faults: it has no PRI path (pri_credits, \
                     ats and the SMMU's ats/pri) and the SMMU has no stall model (stall = false)",
                    d.name.get_ref()
                ),
            );
        }
        self.plan.devices.push(DeviceSpec {
            name: d.name.get_ref().clone(),
            kind: match kind {
                DeviceKind::Zip => Kind::Zip,
                DeviceKind::Dsa => Kind::Dsa,
            },
            sid: StreamId(sid.min(u64::from(u32::MAX)) as u32),
            caps,
            queue_depth,
        });
        self.plan.device_options.push(opts);
        self.device_kinds.push(kind);
    }

    fn steps(&mut self, raw: &[S<RawStep>]) -> Vec<Step> {
        let mut out = Vec::new();
        for s in raw {
            if let Some(step) = self.step(s) {
                out.push(step);
            }
        }
        out
    }

    fn require<'r, T>(
        &mut self,
        v: &'r O<T>,
        key: &str,
        kind: StepKind,
        at: &Span<usize>,
    ) -> Option<&'r S<T>> {
        if v.is_none() {
            self.err(at.clone(), format!("`{}` needs `{key}`", kind.name()));
        }
        v.as_ref()
    }

    fn step(&mut self, raw: &S<RawStep>) -> Option<Step> {
        let s = raw.get_ref();
        let at = span_of(raw);
        let id = self.next_step;
        self.next_step += 1;
        self.plan.step_count += 1;
        let Some(kind) = &s.kind else {
            self.err(at, "a step needs `do` (what it does, e.g. do = \"mmap\")");
            return None;
        };
        let kind_span = span_of(kind);
        let kind = *kind.get_ref();
        let line = self.line(&kind_span);
        let ok_keys = allowed(kind);
        let mut bad = false;
        for (key, span) in present(s) {
            if key != "name" && key != "expect_error" && !ok_keys.contains(&key) {
                let takes = if ok_keys.is_empty() {
                    "it takes no options".to_string()
                } else {
                    format!("it takes {}", ok_keys.join(", "))
                };
                self.err(
                    span,
                    format!("`{key}` is not an option of `{}` ({takes})", kind.name()),
                );
                bad = true;
            }
        }
        if let Some(e) = &s.expect_error
            && matches!(kind, StepKind::Expect | StepKind::Repeat | StepKind::Random)
        {
            self.err(
                span_of(e),
                format!("`{}` cannot have expect_error", kind.name()),
            );
            bad = true;
        }
        let action = self.action(kind, s, &kind_span, id);
        if bad {
            return None;
        }
        Some(Step {
            id,
            line,
            kind,
            name: s.name.as_ref().map(|n| n.get_ref().clone()),
            expect_error: s.expect_error.as_ref().map(|e| e.get_ref().clone()),
            action: action?,
        })
    }

    /// A buffer range from `buffer`/`process`/`offset`/`len`.
    fn step_range(&mut self, s: &RawStep, kind: StepKind, at: &Span<usize>) -> Option<Range> {
        let b = self.require(&s.buffer, "buffer", kind, at)?;
        let buf = self.buffer(b);
        let process = self.process_ref(&s.process);
        let buf = buf?;
        let mut r = self.range(buf, span_of(b), &s.offset, &s.len, None)?;
        r.process = process?;
        if matches!(
            kind,
            StepKind::Munmap | StepKind::Mprotect | StepKind::Madvise | StepKind::Reclaim
        ) && r.offset % 4096 != 0
        {
            let sp = s.offset.as_ref().map_or_else(|| span_of(b), span_of);
            self.err(
                sp,
                format!(
                    "`{}` works on whole pages: offset {:#x} is not 4 KiB-aligned",
                    kind.name(),
                    r.offset
                ),
            );
            return None;
        }
        Some(r)
    }

    /// A job buffer (`src`, `dst`, ...) with its offset; `len` limits the default length.
    fn job_range(&mut self, name: &S<String>, offset: &O<Size>, len: Option<u64>) -> Option<Range> {
        let buf = self.buffer(name)?;
        let r = self.range(buf, span_of(name), offset, &None, None)?;
        match len {
            Some(l) if l > r.len => {
                let b = &self.plan.buffers[buf];
                let msg = format!(
                    "`{}` has {} bytes from offset {}, the job needs {l}",
                    b.name, r.len, r.offset
                );
                self.err(span_of(name), msg);
                None
            }
            Some(l) => Some(Range { len: l, ..r }),
            None => Some(r),
        }
    }

    fn new_process(&mut self, name: &S<String>, step: usize) -> Option<Id> {
        if let Some(d) = self.names.get(name.get_ref())
            && d.kind == NameKind::Process
            && d.step == step
        {
            return Some(d.id);
        }
        let id = self.plan.processes.len();
        if self.define(name, NameKind::Process, id, step) {
            self.plan.processes.push(name.get_ref().clone());
            Some(id)
        } else {
            None
        }
    }

    fn new_named(
        &mut self,
        name: &S<String>,
        kind: NameKind,
        next: usize,
        step: usize,
    ) -> Option<(Id, bool)> {
        if let Some(d) = self.names.get(name.get_ref())
            && d.kind == kind
            && d.step == step
        {
            return Some((d.id, false));
        }
        if self.define(name, kind, next, step) {
            Some((next, true))
        } else {
            None
        }
    }

    fn action(
        &mut self,
        kind: StepKind,
        s: &RawStep,
        at: &Span<usize>,
        id: usize,
    ) -> Option<Action> {
        use StepKind as K;
        match kind {
            K::Mmap => self.mmap(s, at, id),
            K::Munmap => Some(Action::Munmap(self.step_range(s, kind, at)?)),
            K::Madvise => Some(Action::Madvise(self.step_range(s, kind, at)?)),
            K::Reclaim => Some(Action::Reclaim(self.step_range(s, kind, at)?)),
            K::Migrate => Some(Action::Migrate(self.step_range(s, kind, at)?)),
            K::Mprotect => {
                let r = self.step_range(s, kind, at);
                let p = self
                    .require(&s.prot, "prot", kind, at)
                    .map(|p| prot_of(*p.get_ref()));
                Some(Action::Mprotect(r?, p?))
            }
            K::Touch => {
                let r = self.step_range(s, kind, at)?;
                let access = match s.access.as_ref().map(|a| *a.get_ref()) {
                    None | Some(AccessSpec::Write) => AccessKind::Write,
                    Some(AccessSpec::Read) => AccessKind::Read,
                    Some(AccessSpec::Exec) => AccessKind::Execute,
                };
                Some(Action::Touch(r, access))
            }
            K::Write => self.write(s, at),
            K::Fill => {
                let r = self.step_range(s, kind, at);
                let b = self.require(&s.byte, "byte", kind, at);
                let byte = b.and_then(|b| match u8::try_from(*b.get_ref()) {
                    Ok(v) => Some(v),
                    Err(_) => {
                        self.err(span_of(b), format!("byte {} is above 255", b.get_ref()));
                        None
                    }
                });
                Some(Action::Fill(r?, byte?))
            }
            K::Spawn => {
                let p = self.require(&s.process, "process", kind, at)?;
                Some(Action::Spawn(self.new_process(p, id)?))
            }
            K::Fork => {
                let p = self.require(&s.process, "process", kind, at);
                let ch = self.require(&s.child, "child", kind, at);
                let parent = p.and_then(|p| self.resolve(p, NameKind::Process));
                let child = ch.and_then(|c| self.new_process(c, id));
                Some(Action::Fork {
                    parent: parent?,
                    child: child?,
                })
            }
            K::Exit => {
                let p = self.require(&s.process, "process", kind, at)?;
                Some(Action::Exit(self.resolve(p, NameKind::Process)?))
            }
            K::Open => self.open(s, at, id),
            K::Close => {
                let q = self.require(&s.queue, "queue", kind, at)?;
                Some(Action::Close(self.resolve(q, NameKind::Queue)?))
            }
            K::Bind => {
                let b = self.require(&s.bond, "bond", kind, at);
                let d = self.require(&s.device, "device", kind, at);
                let p = self.require(&s.process, "process", kind, at);
                let device = d.and_then(|d| self.resolve(d, NameKind::Device));
                let process = p.and_then(|p| self.resolve(p, NameKind::Process));
                let next = self.plan.bonds.len();
                let bond = b.and_then(|b| self.new_named(b, NameKind::Bond, next, id));
                let (bond, fresh) = bond?;
                if fresh {
                    self.plan.bonds.push(b?.get_ref().clone());
                }
                Some(Action::Bind {
                    bond,
                    device: device?,
                    process: process?,
                })
            }
            K::Unbind => {
                let b = self.require(&s.bond, "bond", kind, at)?;
                Some(Action::Unbind(self.resolve(b, NameKind::Bond)?))
            }
            K::Submit => self.submit(s, at, id),
            K::Wait => {
                let j = self.require(&s.job, "job", kind, at)?;
                let job = self.resolve(j, NameKind::Job)?;
                if !self.plan.jobs[job].async_ {
                    self.err(
                        span_of(j),
                        format!(
                            "job `{}` was submitted without async = true: its result is there when the submit step ends",
                            j.get_ref()
                        ),
                    );
                    return None;
                }
                Some(Action::Wait(job))
            }
            K::HoldFaults => Some(Action::HoldFaults),
            K::ReleaseFaults => Some(Action::ReleaseFaults),
            K::Expect => {
                self.plan.expectations += 1;
                Some(Action::Expect(self.expect(s, at)?))
            }
            K::Repeat => {
                let t = self.require(&s.times, "times", kind, at);
                let body = self.require(&s.steps, "steps", kind, at);
                let times = t.and_then(|t| {
                    let v = *t.get_ref();
                    if v == 0 {
                        self.err(
                            span_of(t),
                            "times = 0: a repeat runs its steps at least once",
                        );
                        None
                    } else if v > 1_000_000 {
                        self.err(span_of(t), format!("times = {v}: at most 1000000"));
                        None
                    } else {
                        Some(v)
                    }
                });
                let body = body?;
                if body.get_ref().is_empty() {
                    self.err(span_of(body), "a repeat needs at least one step");
                    return None;
                }
                let steps = self.steps(body.get_ref());
                Some(Action::Repeat {
                    times: times?,
                    body: steps,
                })
            }
            K::Random => self.random(s, at),
        }
    }

    fn mmap(&mut self, s: &RawStep, at: &Span<usize>, id: usize) -> Option<Action> {
        let kind = StepKind::Mmap;
        let p = self.require(&s.process, "process", kind, at);
        let b = self.require(&s.buffer, "buffer", kind, at);
        let z = self.require(&s.size, "size", kind, at);
        let process = p.and_then(|p| self.resolve(p, NameKind::Process));
        let size = z.and_then(|z| {
            let v = z.get_ref().0;
            if v == 0 {
                self.err(span_of(z), "size 0: a mapping needs at least one byte");
                None
            } else if v > 1 << 40 {
                self.err(span_of(z), format!("size {v}: at most 1 TiB"));
                None
            } else {
                Some(v)
            }
        });
        let shared = s.shared.as_ref().is_some_and(|v| *v.get_ref());
        let mut flags = if shared {
            MapFlags::SHARED
        } else {
            MapFlags::PRIVATE
        };
        for (o, f) in [
            (&s.populate, MapFlags::POPULATE),
            (&s.dontfork, MapFlags::DONTCOPY),
            (&s.wipeonfork, MapFlags::WIPEONFORK),
        ] {
            if o.as_ref().is_some_and(|v| *v.get_ref()) {
                flags |= f;
            }
        }
        if let Some(w) = &s.wipeonfork
            && *w.get_ref()
            && shared
        {
            self.err(span_of(w), "wipeonfork applies to private mappings only");
        }
        if s.hugepages.as_ref().is_some_and(|v| !*v.get_ref()) {
            flags |= MapFlags::NOHUGEPAGE;
        }
        let place = match (&s.at, &s.same_address_as) {
            (Some(_), Some(o)) => {
                self.err(
                    span_of(o),
                    "give either `at` or `same_address_as`, not both",
                );
                None
            }
            (Some(a), None) => {
                let v = *a.get_ref();
                if v % 4096 != 0 || v == 0 {
                    self.err(
                        span_of(a),
                        format!("at = {v:#x}: a non-zero, page-aligned address"),
                    );
                    None
                } else {
                    Some(Place::At(v))
                }
            }
            (None, Some(o)) => self.buffer(o).map(Place::SameAs),
            (None, None) => Some(Place::Anywhere),
        };
        let prot = s
            .prot
            .as_ref()
            .map_or(Prot::READ | Prot::WRITE, |p| prot_of(*p.get_ref()));
        let (b, process, size, place) = (b?, process?, size?, place?);
        if let Place::SameAs(o) = place
            && self.plan.buffers[o].name == *b.get_ref()
        {
            self.err(span_of(b), "a buffer cannot be placed at its own address");
            return None;
        }
        // The name is defined only by a valid step, so that every buffer id has its entry.
        let next = self.plan.buffers.len();
        let (buf, fresh) = self.new_named(b, NameKind::Buffer, next, id)?;
        if fresh {
            self.plan.buffers.push(BufferDecl {
                name: b.get_ref().clone(),
                owner: process,
                size,
                shared,
            });
        }
        Some(Action::Mmap {
            buf,
            place,
            prot,
            flags,
        })
    }

    fn write(&mut self, s: &RawStep, at: &Span<usize>) -> Option<Action> {
        let kind = StepKind::Write;
        let b = self.require(&s.buffer, "buffer", kind, at)?;
        let buf = self.buffer(b);
        let process = self.process_ref(&s.process);
        let sources = [
            s.text.as_ref().map(span_of),
            s.hex.as_ref().map(span_of),
            s.random.as_ref().map(span_of),
            s.file.as_ref().map(span_of),
        ];
        let given: Vec<Span<usize>> = sources.iter().flatten().cloned().collect();
        if given.is_empty() {
            self.err(
                at.clone(),
                "`write` needs the data: text, hex, random = true or file",
            );
            return None;
        }
        if given.len() > 1 {
            self.err(given[1].clone(), "give one of text, hex, random and file");
            return None;
        }
        let data: Option<Vec<u8>> = if let Some(t) = &s.text {
            if t.get_ref().is_empty() {
                self.err(span_of(t), "empty text");
                None
            } else {
                Some(t.get_ref().as_bytes().to_vec())
            }
        } else if let Some(h) = &s.hex {
            match parse_hex(h.get_ref()) {
                Ok(v) => Some(v),
                Err(e) => {
                    self.err(span_of(h), e);
                    None
                }
            }
        } else if let Some(f) = &s.file {
            let path = self.dir.join(f.get_ref());
            match std::fs::read(&path) {
                Ok(v) if v.is_empty() => {
                    self.err(span_of(f), format!("{} is empty", path.display()));
                    None
                }
                Ok(v) => Some(v),
                Err(e) => {
                    self.err(span_of(f), format!("cannot read {}: {e}", path.display()));
                    None
                }
            }
        } else {
            if let Some(r) = &s.random
                && !*r.get_ref()
            {
                self.err(
                    span_of(r),
                    "random = false writes nothing; give text, hex or file",
                );
                return None;
            }
            let buf = buf?;
            let mut r = self.range(buf, span_of(b), &s.offset, &s.len, None)?;
            r.process = process?;
            self.data_cap(&r, s.len.as_ref().map_or_else(|| span_of(b), span_of))?;
            return Some(Action::Write(r, Data::Random));
        };
        let data = data?;
        let buf = buf?;
        // Without `len`, the data's length; with it, the data repeated to fill it.
        let mut r = self.range(buf, span_of(b), &s.offset, &s.len, Some(data.len() as u64))?;
        if s.len.is_none() && r.len < data.len() as u64 {
            let name = self.plan.buffers[buf].name.clone();
            self.err(
                span_of(b),
                format!(
                    "{} bytes of data do not fit in `{name}` from offset {} ({} bytes left)",
                    data.len(),
                    r.offset,
                    r.len
                ),
            );
            return None;
        }
        r.process = process?;
        self.data_cap(&r, s.len.as_ref().map_or_else(|| span_of(b), span_of))?;
        let bytes: Vec<u8> = data.iter().copied().cycle().take(r.len as usize).collect();
        Some(Action::Write(r, Data::Bytes(bytes)))
    }

    fn open(&mut self, s: &RawStep, at: &Span<usize>, id: usize) -> Option<Action> {
        let kind = StepKind::Open;
        let q = self.require(&s.queue, "queue", kind, at);
        let d = self.require(&s.device, "device", kind, at);
        let p = self.require(&s.process, "process", kind, at);
        let device = d.and_then(|d| self.resolve(d, NameKind::Device));
        let process = p.and_then(|p| self.resolve(p, NameKind::Process));
        let q = q?;
        let (device, process) = (device?, process?);
        let dk = self.device_kinds[device];
        if let Some(a) = &s.alg
            && dk != DeviceKind::Zip
        {
            self.err(span_of(a), "alg is an option of queues on zip devices");
            return None;
        }
        if let Some(b) = &s.block_on_fault
            && dk != DeviceKind::Dsa
        {
            self.err(
                span_of(b),
                "block_on_fault is an option of queues on dsa devices",
            );
            return None;
        }
        let next = self.plan.queues.len();
        let (queue, fresh) = self.new_named(q, NameKind::Queue, next, id)?;
        if fresh {
            self.plan.queues.push(QueueDecl {
                name: q.get_ref().clone(),
                device,
                owner: process,
            });
        }
        let alg = match s.alg.as_ref().map(|a| *a.get_ref()) {
            None | Some(AlgSpec::Zlib) => Alg::Zlib,
            Some(AlgSpec::Gzip) => Alg::Gzip,
            Some(AlgSpec::Deflate) => Alg::Deflate,
        };
        Some(Action::Open {
            queue,
            alg,
            block_on_fault: s.block_on_fault.as_ref().is_none_or(|b| *b.get_ref()),
        })
    }

    fn submit(&mut self, s: &RawStep, at: &Span<usize>, id: usize) -> Option<Action> {
        let kind = StepKind::Submit;
        let q = self.require(&s.queue, "queue", kind, at);
        let o = self.require(&s.op, "op", kind, at);
        let queue = q.and_then(|q| self.resolve(q, NameKind::Queue));
        let caller = self.process_ref(&s.process);
        let (q, o) = (q?, o?);
        let queue = queue?;
        let op = *o.get_ref();
        let device = self.plan.queues[queue].device;
        let dk = self.device_kinds[device];
        if op.device() != dk {
            self.err(
                span_of(o),
                format!(
                    "`{}` runs on {} devices; queue `{}` is on a {} device",
                    op.name(),
                    match op.device() {
                        DeviceKind::Zip => "zip",
                        DeviceKind::Dsa => "dsa",
                    },
                    q.get_ref(),
                    match dk {
                        DeviceKind::Zip => "zip",
                        DeviceKind::Dsa => "dsa",
                    }
                ),
            );
            return None;
        }
        // Options the op does not take.
        let takes: &[&str] = match op {
            OpSpec::Compress => &["src", "src_offset", "dst", "dst_offset", "len", "cap"],
            OpSpec::Decompress => &[
                "src",
                "src_offset",
                "from_job",
                "dst",
                "dst_offset",
                "len",
                "cap",
            ],
            OpSpec::Copy => &["src", "src_offset", "dst", "dst_offset", "len"],
            OpSpec::Fill => &["dst", "dst_offset", "len", "pattern"],
            OpSpec::Compare => &["src", "src_offset", "src2", "src2_offset", "len"],
            OpSpec::Crc32c => &["src", "src_offset", "len", "crc_seed"],
            OpSpec::Dualcast => &[
                "src",
                "src_offset",
                "dst",
                "dst_offset",
                "dst2",
                "dst2_offset",
                "len",
            ],
        };
        let mut bad = false;
        for (key, span) in present(s) {
            if OP_KEYS.contains(&key) && !takes.contains(&key) {
                self.err(
                    span,
                    format!(
                        "`{key}` is not an option of op `{}` (it takes {})",
                        op.name(),
                        takes.join(", ")
                    ),
                );
                bad = true;
            }
        }
        if bad {
            return None;
        }
        let len = s.len.as_ref().map(|l| {
            if l.get_ref().0 == 0 {
                self.err(span_of(l), "len = 0: a job needs at least one byte");
            }
            l.get_ref().0
        });
        if len == Some(0) {
            return None;
        }
        let limit = if dk == DeviceKind::Zip {
            ZIP_MAX_REQUEST
        } else {
            DSA_MAX_XFER
        };
        let what = if dk == DeviceKind::Zip {
            "the compression engine's largest request is 8 MiB"
        } else {
            "the data mover's largest transfer is 2 MiB"
        };
        let need = |c: &mut Self, v: &O<String>, key: &str| -> Option<S<String>> {
            if v.is_none() {
                c.err(at.clone(), format!("op `{}` needs `{key}`", op.name()));
            }
            v.clone()
        };
        let job_op = match op {
            OpSpec::Compress | OpSpec::Decompress => {
                let dst_name = need(self, &s.dst, "dst");
                let src = if op == OpSpec::Decompress && s.from_job.is_some() {
                    if let Some(x) = &s.src {
                        self.err(span_of(x), "give either `src` or `from_job`, not both");
                        return None;
                    }
                    let j = s.from_job.as_ref()?;
                    let job = self.resolve(j, NameKind::Job)?;
                    if !self.compress_jobs[job] {
                        self.err(
                            span_of(j),
                            format!("job `{}` is not a compress job", j.get_ref()),
                        );
                        return None;
                    }
                    Some(Input::Job(job))
                } else {
                    let src_name = need(
                        self,
                        &s.src,
                        if op == OpSpec::Decompress {
                            "src or from_job"
                        } else {
                            "src"
                        },
                    )?;
                    let r = self.job_range(&src_name, &s.src_offset, len)?;
                    if r.len > limit {
                        self.err(span_of(&src_name), format!("{} bytes: {what}", r.len));
                        return None;
                    }
                    Some(Input::Range(r))
                };
                let dst_name = dst_name?;
                let cap = s.cap.as_ref().map(|c| c.get_ref().0);
                if cap == Some(0) {
                    self.err(span_of(s.cap.as_ref()?), "cap = 0: the output needs room");
                    return None;
                }
                let dst = self.job_range(&dst_name, &s.dst_offset, cap)?;
                let src = src?;
                match (op, src) {
                    (OpSpec::Compress, Input::Range(src)) => JobOp::Compress { src, dst },
                    _ => JobOp::Decompress { src, dst },
                }
            }
            OpSpec::Copy => {
                let (sn, dn) = (need(self, &s.src, "src"), need(self, &s.dst, "dst"));
                let src = self.job_range(&sn?, &s.src_offset, len)?;
                let dst = self.job_range(&dn?, &s.dst_offset, Some(src.len))?;
                JobOp::Copy { src, dst }
            }
            OpSpec::Fill => {
                let dn = need(self, &s.dst, "dst")?;
                let dst = self.job_range(&dn, &s.dst_offset, len)?;
                JobOp::Fill {
                    dst,
                    pattern: s.pattern.as_ref().map_or(0, |p| *p.get_ref()),
                }
            }
            OpSpec::Compare => {
                let (an, bn) = (need(self, &s.src, "src"), need(self, &s.src2, "src2"));
                let a = self.job_range(&an?, &s.src_offset, len)?;
                let b = self.job_range(&bn?, &s.src2_offset, Some(a.len))?;
                JobOp::Compare { a, b }
            }
            OpSpec::Crc32c => {
                let sn = need(self, &s.src, "src")?;
                let src = self.job_range(&sn, &s.src_offset, len)?;
                let seed = match &s.crc_seed {
                    None => 0,
                    Some(v) => match u32::try_from(*v.get_ref()) {
                        Ok(x) => x,
                        Err(_) => {
                            self.err(span_of(v), "crc_seed is a 32-bit value");
                            return None;
                        }
                    },
                };
                JobOp::Crc32c { src, seed }
            }
            OpSpec::Dualcast => {
                let (sn, dn, d2n) = (
                    need(self, &s.src, "src"),
                    need(self, &s.dst, "dst"),
                    need(self, &s.dst2, "dst2"),
                );
                let src = self.job_range(&sn?, &s.src_offset, len)?;
                let dst = self.job_range(&dn?, &s.dst_offset, Some(src.len))?;
                let d2n = d2n?;
                let dst2 = self.job_range(&d2n, &s.dst2_offset, Some(src.len))?;
                if (dst.offset ^ dst2.offset) & 0xfff != 0 {
                    self.err(
                        span_of(&d2n),
                        "dualcast destinations must agree in address bits 11:0 (dst_offset and dst2_offset modulo 4096)",
                    );
                    return None;
                }
                JobOp::Dualcast { src, dst, dst2 }
            }
        };
        for r in job_ranges(&job_op) {
            if r.len > limit && !matches!(job_op, JobOp::Compress { .. } | JobOp::Decompress { .. })
            {
                self.err(at.clone(), format!("{} bytes: {what}", r.len));
                return None;
            }
        }
        let async_ = s.async_.as_ref().is_some_and(|a| *a.get_ref());
        let job = match &s.job {
            None => None,
            Some(j) => {
                let next = self.plan.jobs.len();
                let (jid, fresh) = self.new_named(j, NameKind::Job, next, id)?;
                if fresh {
                    self.plan.jobs.push(JobDecl {
                        name: j.get_ref().clone(),
                        async_,
                    });
                    self.compress_jobs
                        .push(matches!(job_op, JobOp::Compress { .. }));
                }
                Some(jid)
            }
        };
        let caller = caller?;
        Some(Action::Submit(Submit {
            queue,
            job,
            async_,
            caller,
            op: job_op,
        }))
    }

    fn expect(&mut self, s: &RawStep, at: &Span<usize>) -> Option<Expect> {
        let subjects: Vec<(&str, Span<usize>)> = [
            ("job", s.job.as_ref().map(span_of)),
            ("buffer", s.buffer.as_ref().map(span_of)),
            ("pasid", s.pasid.as_ref().map(span_of)),
            ("counter", s.counter.as_ref().map(span_of)),
            ("queue", s.queue.as_ref().map(span_of)),
        ]
        .into_iter()
        .filter_map(|(k, sp)| sp.map(|sp| (k, sp)))
        .collect();
        if subjects.is_empty() {
            self.err(
                at.clone(),
                "`expect` needs what it checks: job, buffer, pasid, counter or queue",
            );
            return None;
        }
        if subjects.len() > 1 {
            self.err(
                subjects[1].1.clone(),
                format!(
                    "one subject per expect step: `{}` and `{}` given",
                    subjects[0].0, subjects[1].0
                ),
            );
            return None;
        }
        let subject = subjects[0].0;
        let takes: &[&str] = match subject {
            "job" => &[
                "status",
                "code",
                "fault_at",
                "fault_offset",
                "decompresses_to",
                "crc32c",
                "crc_of",
                "offset",
                "len",
            ],
            "buffer" => &[
                "process",
                "offset",
                "len",
                "equals",
                "equals_offset",
                "crc32c",
                "byte",
                "text",
                "hex",
                "present",
                "mapped",
            ],
            "pasid" => &["same_as", "differs_from", "value", "allocated", "bound"],
            "counter" => &["eq", "ne", "gt", "ge", "lt", "le"],
            _ => &["state"],
        };
        let subject_keys = ["job", "buffer", "pasid", "counter", "queue"];
        let mut predicates = 0;
        let mut bad = false;
        for (key, span) in present(s) {
            if key == "name" || subject_keys.contains(&key) {
                continue;
            }
            if !takes.contains(&key) {
                self.err(
                    span,
                    format!(
                        "`{key}` does not apply to an expect on a {subject} (it takes {})",
                        takes.join(", ")
                    ),
                );
                bad = true;
            } else if !matches!(
                key,
                "offset" | "len" | "process" | "fault_offset" | "equals_offset"
            ) {
                predicates += 1;
            }
        }
        if bad {
            return None;
        }
        if predicates == 0 {
            self.err(
                subjects[0].1.clone(),
                format!(
                    "nothing to check about this {subject}: give one of {}",
                    takes.join(", ")
                ),
            );
            return None;
        }
        match subject {
            "job" => {
                let j = s.job.as_ref()?;
                let job = self.resolve(j, NameKind::Job);
                let fault_at = match &s.fault_at {
                    None => None,
                    Some(b) => {
                        let buf = self.buffer(b)?;
                        let off = s.fault_offset.as_ref().map_or(0, |o| o.get_ref().0);
                        if off >= self.plan.buffers[buf].size {
                            self.err(
                                span_of(s.fault_offset.as_ref()?),
                                "fault_offset is beyond the buffer",
                            );
                            return None;
                        }
                        Some((buf, off))
                    }
                };
                if s.fault_offset.is_some() && s.fault_at.is_none() {
                    self.err(
                        span_of(s.fault_offset.as_ref()?),
                        "fault_offset goes with fault_at",
                    );
                    return None;
                }
                let both = s.decompresses_to.is_some() as u8 + s.crc_of.is_some() as u8;
                if both > 1 {
                    self.err(
                        at.clone(),
                        "give one of decompresses_to and crc_of per expect step",
                    );
                    return None;
                }
                if both == 0 && (s.offset.is_some() || s.len.is_some()) {
                    let sp = s
                        .offset
                        .as_ref()
                        .map(span_of)
                        .or(s.len.as_ref().map(span_of))?;
                    self.err(sp, "offset and len go with decompresses_to or crc_of");
                    return None;
                }
                let range_of = |c: &mut Self, b: &S<String>| -> Option<Range> {
                    let buf = c.buffer(b)?;
                    let r = c.range(buf, span_of(b), &s.offset, &s.len, None)?;
                    c.data_cap(&r, span_of(b))?;
                    Some(r)
                };
                let decompresses_to = match &s.decompresses_to {
                    Some(b) => {
                        if let Some(j) = job
                            && !self.compress_jobs[j]
                        {
                            self.err(
                                span_of(b),
                                format!("decompresses_to checks the output of a compress job; `{}` is not one", s.job.as_ref()?.get_ref()),
                            );
                            return None;
                        }
                        Some(range_of(self, b)?)
                    }
                    None => None,
                };
                let crc_of = match &s.crc_of {
                    Some(b) => Some(range_of(self, b)?),
                    None => None,
                };
                let crc32c = self.expect_crc32c(&s.crc32c)?;
                Some(Expect::Job {
                    job: job?,
                    status: s.status.as_ref().map(|v| *v.get_ref()),
                    code: s.code.as_ref().map(|v| v.get_ref().clone()),
                    fault_at,
                    decompresses_to,
                    crc32c,
                    crc_of,
                })
            }
            "buffer" => {
                let b = s.buffer.as_ref()?;
                let buf = self.buffer(b)?;
                let process = self.process_ref(&s.process)?;
                let bytes = match (&s.text, &s.hex) {
                    (Some(_), Some(h)) => {
                        self.err(span_of(h), "give one of text and hex");
                        return None;
                    }
                    (Some(t), None) => Some(t.get_ref().as_bytes().to_vec()),
                    (None, Some(h)) => match parse_hex(h.get_ref()) {
                        Ok(v) => Some(v),
                        Err(e) => {
                            self.err(span_of(h), e);
                            return None;
                        }
                    },
                    (None, None) => None,
                };
                if let (Some(bytes), Some(t)) = (
                    &bytes,
                    s.text.as_ref().map(span_of).or(s.hex.as_ref().map(span_of)),
                ) && bytes.is_empty()
                {
                    self.err(t, "empty text");
                    return None;
                }
                let default_len = bytes.as_ref().map(|b| b.len() as u64);
                let mut range = self.range(buf, span_of(b), &s.offset, &s.len, default_len)?;
                range.process = process;
                if let Some(bytes) = &bytes
                    && (bytes.len() as u64) > range.len
                {
                    self.err(
                        span_of(b),
                        format!(
                            "{} expected bytes do not fit in the range ({} bytes)",
                            bytes.len(),
                            range.len
                        ),
                    );
                    return None;
                }
                let equals = match &s.equals {
                    None => None,
                    Some(o) => {
                        let other = self.buffer(o)?;
                        let r = self.range(other, span_of(o), &s.equals_offset, &None, None)?;
                        if r.len < range.len {
                            let n = self.plan.buffers[other].name.clone();
                            self.err(
                                span_of(o),
                                format!(
                                    "`{n}` has {} bytes from offset {}, the comparison needs {}",
                                    r.len, r.offset, range.len
                                ),
                            );
                            return None;
                        }
                        Some(Range {
                            len: range.len,
                            process,
                            ..r
                        })
                    }
                };
                if equals.is_some() || s.crc32c.is_some() || s.byte.is_some() || bytes.is_some() {
                    self.data_cap(&range, s.len.as_ref().map_or_else(|| span_of(b), span_of))?;
                }
                if s.equals_offset.is_some() && s.equals.is_none() {
                    self.err(
                        span_of(s.equals_offset.as_ref()?),
                        "equals_offset goes with equals",
                    );
                    return None;
                }
                let byte = match &s.byte {
                    None => None,
                    Some(v) => Some(u8::try_from(*v.get_ref()).ok().or_else(|| {
                        self.err(span_of(v), format!("byte {} is above 255", v.get_ref()));
                        None
                    })?),
                };
                let crc32c = self.expect_crc32c(&s.crc32c)?;
                Some(Expect::Buffer {
                    range,
                    equals,
                    crc32c,
                    byte,
                    bytes,
                    present: s.present.as_ref().map(|v| *v.get_ref()),
                    mapped: s.mapped.as_ref().map(|v| *v.get_ref()),
                })
            }
            "pasid" => {
                let subject = self.pasid_ref(s.pasid.as_ref()?);
                let same_as = match &s.same_as {
                    Some(r) => Some(self.pasid_ref(r)?),
                    None => None,
                };
                let differs_from = match &s.differs_from {
                    Some(r) => Some(self.pasid_ref(r)?),
                    None => None,
                };
                let subject = subject?;
                if let Some(b) = &s.bound
                    && !matches!(subject, PasidRef::Process(_))
                {
                    self.err(span_of(b), "`bound` applies to a process's PASID");
                    return None;
                }
                let value = match &s.value {
                    None => None,
                    Some(v) => Some(
                        u32::try_from(*v.get_ref())
                            .ok()
                            .filter(|v| *v < 1 << 20)
                            .or_else(|| {
                                self.err(span_of(v), "a PASID is below 2^20");
                                None
                            })?,
                    ),
                };
                Some(Expect::Pasid {
                    subject,
                    same_as,
                    differs_from,
                    value,
                    allocated: s.allocated.as_ref().map(|v| *v.get_ref()),
                    bound: s.bound.as_ref().map(|v| *v.get_ref()),
                })
            }
            "counter" => {
                let p = s.counter.as_ref()?;
                let names: Vec<String> = self.plan.devices.iter().map(|d| d.name.clone()).collect();
                if let Err(e) = super::report::check_counter_path(p.get_ref(), &names) {
                    self.err(span_of(p), e);
                    return None;
                }
                let mut cmp = Vec::new();
                for (o, op) in [
                    (&s.eq, Cmp::Eq),
                    (&s.ne, Cmp::Ne),
                    (&s.gt, Cmp::Gt),
                    (&s.ge, Cmp::Ge),
                    (&s.lt, Cmp::Lt),
                    (&s.le, Cmp::Le),
                ] {
                    if let Some(v) = o {
                        cmp.push((op, *v.get_ref()));
                    }
                }
                Some(Expect::Counter {
                    path: p.get_ref().clone(),
                    cmp,
                })
            }
            _ => {
                let q = s.queue.as_ref()?;
                let queue = self.resolve(q, NameKind::Queue)?;
                Some(Expect::Queue {
                    queue,
                    state: *s.state.as_ref()?.get_ref(),
                })
            }
        }
    }

    /// The `crc32c` an `expect` step gives, checked to fit in 32 bits (`None` after an error).
    fn expect_crc32c(&mut self, v: &O<u64>) -> Option<Option<u32>> {
        match v {
            None => Some(None),
            Some(v) => Some(Some(u32::try_from(*v.get_ref()).ok().or_else(|| {
                self.err(span_of(v), "a CRC-32C is a 32-bit value");
                None
            })?)),
        }
    }

    fn pasid_ref(&mut self, name: &S<String>) -> Option<PasidRef> {
        let n = name.get_ref();
        match self.names.get(n).copied() {
            Some(d) if d.kind == NameKind::Queue => Some(PasidRef::Queue(d.id)),
            Some(d) if d.kind == NameKind::Bond => Some(PasidRef::Bond(d.id)),
            Some(d) if d.kind == NameKind::Process => Some(PasidRef::Process(d.id)),
            Some(d) => {
                self.err(
                    span_of(name),
                    format!(
                        "`{n}` is a {} (line {}); a PASID belongs to a queue, a bond or a process",
                        d.kind.name(),
                        d.line
                    ),
                );
                None
            }
            None => {
                self.err(
                    span_of(name),
                    format!("unknown queue, bond or process `{n}`"),
                );
                None
            }
        }
    }

    fn random(&mut self, s: &RawStep, at: &Span<usize>) -> Option<Action> {
        let kind = StepKind::Random;
        let p = self.require(&s.process, "process", kind, at);
        let n = self.require(&s.count, "count", kind, at);
        let bs = self.require(&s.buffers, "buffers", kind, at);
        let ks = self.require(&s.kinds, "kinds", kind, at);
        let process = p.and_then(|p| self.resolve(p, NameKind::Process));
        let count = n.and_then(|n| {
            let v = *n.get_ref();
            if v == 0 || v > 10_000_000 {
                self.err(span_of(n), format!("count {v}: 1 to 10000000"));
                None
            } else {
                Some(v)
            }
        });
        let mut buffers = Vec::new();
        let mut ok = true;
        if let Some(bs) = bs {
            if bs.get_ref().is_empty() {
                self.err(span_of(bs), "a random step needs at least one buffer");
                ok = false;
            }
            for b in bs.get_ref() {
                match self.buffer(b) {
                    Some(id) if buffers.contains(&id) => {
                        self.err(
                            span_of(b),
                            format!("buffer `{}` is listed twice", b.get_ref()),
                        );
                        ok = false;
                    }
                    Some(id) => buffers.push(id),
                    None => ok = false,
                }
            }
        }
        let total: u64 = buffers.iter().map(|&b| self.plan.buffers[b].size).sum();
        if total > RANDOM_MAX_BYTES {
            self.err(
                span_of(bs?),
                format!(
                    "the buffers add up to {total} bytes; a random step handles at most 64 MiB"
                ),
            );
            ok = false;
        }
        let (mut zip, mut dsa) = (Vec::new(), Vec::new());
        if let Some(qs) = &s.queues {
            for q in qs.get_ref() {
                let Some(id) = self.resolve(q, NameKind::Queue) else {
                    ok = false;
                    continue;
                };
                let decl = &self.plan.queues[id];
                if Some(decl.owner) != process && process.is_some() {
                    let owner = self.plan.processes[decl.owner].clone();
                    self.err(span_of(q), format!("queue `{}` belongs to process `{owner}`, not to the random step's process", q.get_ref()));
                    ok = false;
                    continue;
                }
                match self.device_kinds[decl.device] {
                    DeviceKind::Zip => zip.push(id),
                    DeviceKind::Dsa => dsa.push(id),
                }
            }
        }
        let mut kinds = Vec::new();
        if let Some(ks) = ks {
            if ks.get_ref().is_empty() {
                self.err(span_of(ks), "a random step needs at least one kind");
                ok = false;
            }
            for k in ks.get_ref() {
                let kd = *k.get_ref();
                let needs = match kd.device() {
                    Some(DeviceKind::Zip) if zip.is_empty() => Some("a zip queue in `queues`"),
                    Some(DeviceKind::Dsa) if dsa.is_empty() => Some("a dsa queue in `queues`"),
                    _ => None,
                };
                if let Some(n) = needs {
                    self.err(span_of(k), format!("`{}` needs {n}", kd.name()));
                    ok = false;
                }
                let min_bufs = if kd == RandomKind::DsaDualcast {
                    3
                } else if kd.two_buffers() {
                    2
                } else {
                    1
                };
                if !buffers.is_empty() && buffers.len() < min_bufs {
                    self.err(
                        span_of(k),
                        format!("`{}` needs {min_bufs} buffers", kd.name()),
                    );
                    ok = false;
                }
                kinds.push(kd);
            }
        }
        let max_len = match &s.max_len {
            None => 16 << 10,
            Some(m) => {
                let v = m.get_ref().0;
                if v == 0 || v > DSA_MAX_XFER {
                    self.err(span_of(m), format!("max_len {v}: 1 byte to 2 MiB"));
                    ok = false;
                }
                v
            }
        };
        if !ok {
            return None;
        }
        Some(Action::Random(RandomPlan {
            process: process?,
            count: count?,
            buffers,
            kinds,
            zip,
            dsa,
            max_len,
        }))
    }
}

/// The buffer ranges a job touches.
pub fn job_ranges(op: &JobOp) -> Vec<Range> {
    match *op {
        JobOp::Compress { src, dst } | JobOp::Copy { src, dst } => vec![src, dst],
        JobOp::Decompress { src, dst } => match src {
            Input::Range(r) => vec![r, dst],
            Input::Job(_) => vec![dst],
        },
        JobOp::Fill { dst, .. } => vec![dst],
        JobOp::Compare { a, b } => vec![a, b],
        JobOp::Crc32c { src, .. } => vec![src],
        JobOp::Dualcast { src, dst, dst2 } => vec![src, dst, dst2],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_keys_are_the_submit_operands() {
        assert_eq!(OP_KEYS.first(), Some(&"src"));
        assert_eq!(OP_KEYS.last(), Some(&"from_job"));
        assert_eq!(allowed(StepKind::Submit).len(), OP_KEYS.len() + 5);
    }
}
