//! The scenario file as written: TOML deserialized with serde, unknown keys refused, every
//! value that a later error may point at kept with its position ([`Spanned`]).
//!
//! Steps are flat tables: `do` names the step and the other keys are its options. Which
//! key belongs to which step is checked by [`super::check`], not by serde, so that an
//! option given to the wrong step is reported with its line like any other mistake.

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use std::fmt;
use toml::Spanned;

/// A value with its byte range in the file.
pub type S<T> = Spanned<T>;
/// An optional value with its byte range.
pub type O<T> = Option<Spanned<T>>;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScenario {
    /// A title for logs and reports.
    pub name: O<String>,
    /// What the scenario shows.
    pub description: O<String>,
    /// The seed of random steps and random data when `--seed` is not given (default 0).
    pub seed: O<u64>,
    /// The machine.
    #[serde(default)]
    pub platform: Option<S<RawPlatform>>,
    /// PCIe functions with an accelerator behind them.
    #[serde(default)]
    pub device: Vec<S<RawDevice>>,
    /// Processes that exist from the start.
    #[serde(default)]
    pub process: Vec<S<RawProcess>>,
    /// What happens, in order.
    #[serde(default)]
    pub step: Vec<S<RawStep>>,
    /// The modeled clock's cost table (docs/modeled-time.md); unset keys keep their
    /// defaults.
    #[serde(default)]
    pub costs: Option<crate::clock::CostTable>,
}

/// `[platform]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlatform {
    /// Simulated RAM (sparse: only what is touched costs host memory).
    pub memory: O<Size>,
    /// Transparent huge pages (2 MiB blocks) for aligned private memory.
    pub thp: O<bool>,
    /// Threads of the SVA core's fault queue.
    pub iopf_workers: O<u64>,
    /// The SMMU's features.
    pub smmu: Option<S<RawSmmu>>,
}

/// `[platform.smmu]`: what the hardware implements (and the driver then uses).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSmmu {
    /// SMMU_IDR1.SIDSIZE: StreamID bits, 1..=16.
    pub sidsize: O<u64>,
    /// SMMU_IDR1.SSIDSIZE: SubstreamID (PASID) bits, 1..=20.
    pub ssidsize: O<u64>,
    /// PCIe ATS.
    pub ats: O<bool>,
    /// PCIe PRI (needs ATS).
    pub pri: O<bool>,
    /// The stall fault model.
    pub stall: O<bool>,
    /// Hardware access flag / dirty state updates.
    pub httu: O<Httu>,
    /// Broadcast TLB maintenance.
    pub btm: O<bool>,
    /// Range invalidation (SMMU_IDR3.RIL).
    pub range_invalidation: O<bool>,
    /// IOTLB capacity in entries.
    pub iotlb_entries: O<u64>,
}

/// HTTU level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Httu {
    /// No hardware updates.
    None,
    /// Access flag only.
    Access,
    /// Access flag and dirty state.
    AccessDirty,
}

/// `[[device]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevice {
    /// The name steps use.
    pub name: S<String>,
    /// What is behind the function.
    pub kind: S<DeviceKind>,
    /// StreamID (PCIe Requester ID).
    pub sid: S<u64>,
    /// Max PASID Width, 1..=20.
    pub pasid_width: O<u64>,
    /// ATS capability (and an ATC).
    pub ats: O<bool>,
    /// PRI: outstanding page requests the function may have (0: no PRI, faults stall).
    pub pri_credits: O<u64>,
    /// ATC entries.
    pub atc_entries: O<u64>,
    /// Compression engine: depth of each queue, 2..=4096.
    pub queue_depth: O<u64>,
    /// Engine threads (default 1, which keeps reports reproducible).
    pub engines: O<u64>,
    /// Pages a Page Request Group asks for.
    pub pri_group_pages: O<u64>,
    /// A PASID limit for this device below its width.
    pub max_pasid: O<u64>,
}

/// The accelerator kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// The compression engine.
    Zip,
    /// The data mover.
    Dsa,
}

/// `[[process]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProcess {
    /// The name steps use.
    pub name: S<String>,
}

/// What a step does (`do = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Map anonymous memory as a named buffer.
    Mmap,
    /// Unmap a buffer or part of it.
    Munmap,
    /// Change the protection of a buffer range.
    Mprotect,
    /// MADV_DONTNEED on a buffer range.
    Madvise,
    /// CPU accesses to every page of a range.
    Touch,
    /// CPU stores of data.
    Write,
    /// CPU stores of one byte value.
    Fill,
    /// A new process.
    Spawn,
    /// A copy-on-write child.
    Fork,
    /// A process exits.
    Exit,
    /// Swap a range out.
    Reclaim,
    /// Move the present pages of a range to new frames.
    Migrate,
    /// Open a device queue (binds the process).
    Open,
    /// Close a queue (unbinds).
    Close,
    /// Bind a device to a process without a queue.
    Bind,
    /// Drop such a bond.
    Unbind,
    /// Submit a job.
    Submit,
    /// Collect an asynchronous job.
    Wait,
    /// Stop delivering SMMU interrupts: page requests and stalls wait unanswered.
    HoldFaults,
    /// Deliver them again.
    ReleaseFaults,
    /// Check something.
    Expect,
    /// Run steps several times.
    Repeat,
    /// Seeded random operations.
    Random,
}

impl StepKind {
    /// The name in files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mmap => "mmap",
            Self::Munmap => "munmap",
            Self::Mprotect => "mprotect",
            Self::Madvise => "madvise",
            Self::Touch => "touch",
            Self::Write => "write",
            Self::Fill => "fill",
            Self::Spawn => "spawn",
            Self::Fork => "fork",
            Self::Exit => "exit",
            Self::Reclaim => "reclaim",
            Self::Migrate => "migrate",
            Self::Open => "open",
            Self::Close => "close",
            Self::Bind => "bind",
            Self::Unbind => "unbind",
            Self::Submit => "submit",
            Self::Wait => "wait",
            Self::HoldFaults => "hold_faults",
            Self::ReleaseFaults => "release_faults",
            Self::Expect => "expect",
            Self::Repeat => "repeat",
            Self::Random => "random",
        }
    }
}

/// One `[[step]]`: every option of every step kind; [`super::check`] decides which ones
/// the kind takes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    /// The step kind.
    #[serde(rename = "do")]
    pub kind: O<StepKind>,
    /// A label for the log and, on `expect`, the check's name.
    pub name: O<String>,
    /// The step must fail (true: any error; a string: an error of that class).
    pub expect_error: O<ErrorSpec>,

    // ---- names ----
    /// A process.
    pub process: O<String>,
    /// A buffer.
    pub buffer: O<String>,
    /// The child of `fork`.
    pub child: O<String>,
    /// A queue.
    pub queue: O<String>,
    /// A device.
    pub device: O<String>,
    /// A bond (`bind`/`unbind`).
    pub bond: O<String>,
    /// A job.
    pub job: O<String>,

    // ---- mmap ----
    /// Length of a mapping.
    pub size: O<Size>,
    /// Protection: "r", "rw", "rx", "rwx", "none".
    pub prot: O<ProtSpec>,
    /// MAP_SHARED instead of MAP_PRIVATE.
    pub shared: O<bool>,
    /// MAP_POPULATE.
    pub populate: O<bool>,
    /// A fixed address (MAP_FIXED_NOREPLACE).
    pub at: O<u64>,
    /// The address of another buffer (MAP_FIXED_NOREPLACE), e.g. in another process.
    pub same_address_as: O<String>,
    /// Allow huge pages (default true; false = MADV_NOHUGEPAGE).
    pub hugepages: O<bool>,
    /// MADV_DONTFORK.
    pub dontfork: O<bool>,
    /// MADV_WIPEONFORK.
    pub wipeonfork: O<bool>,

    // ---- ranges and data ----
    /// Offset into the buffer.
    pub offset: O<Size>,
    /// Length (default: to the end of the buffer).
    pub len: O<Size>,
    /// Access kind of `touch`: "read", "write", "exec".
    pub access: O<AccessSpec>,
    /// Text (write: the data, repeated to fill `len`; expect: the expected bytes).
    pub text: O<String>,
    /// Hex bytes (like `text`).
    pub hex: O<String>,
    /// Write pseudo-random bytes from the run's seed.
    pub random: O<bool>,
    /// Write a file's contents (path relative to the scenario file).
    pub file: O<String>,
    /// A byte value (fill; expect: every byte of the range).
    pub byte: O<u64>,

    // ---- queues and jobs ----
    /// Compression format of a zip queue.
    pub alg: O<AlgSpec>,
    /// Data-mover descriptors block on faults (default true).
    pub block_on_fault: O<bool>,
    /// The job's operation.
    pub op: O<OpSpec>,
    /// Source buffer.
    pub src: O<String>,
    /// Offset into `src`.
    pub src_offset: O<Size>,
    /// Second source buffer (compare).
    pub src2: O<String>,
    /// Offset into `src2`.
    pub src2_offset: O<Size>,
    /// Destination buffer.
    pub dst: O<String>,
    /// Offset into `dst`.
    pub dst_offset: O<Size>,
    /// Second destination buffer (dualcast).
    pub dst2: O<String>,
    /// Offset into `dst2`.
    pub dst2_offset: O<Size>,
    /// Output capacity (compression engine).
    pub cap: O<Size>,
    /// 8-byte fill pattern (data mover fill).
    pub pattern: O<u64>,
    /// CRC seed (data mover crc32c).
    pub crc_seed: O<u64>,
    /// Decompress the output of this job (its destination, its produced bytes).
    pub from_job: O<String>,
    /// Submit without waiting; collect with `wait`.
    #[serde(rename = "async")]
    pub async_: O<bool>,

    // ---- repeat and random ----
    /// Iterations of `repeat`.
    pub times: O<u64>,
    /// The body of `repeat`.
    pub steps: Option<S<Vec<S<RawStep>>>>,
    /// Operations of `random`.
    pub count: O<u64>,
    /// Buffers `random` works on.
    pub buffers: O<Vec<S<String>>>,
    /// Operation kinds `random` draws from (repeat a kind to weigh it).
    pub kinds: O<Vec<S<RandomKind>>>,
    /// Queues `random` submits to.
    pub queues: O<Vec<S<String>>>,
    /// Largest length of one random operation.
    pub max_len: O<Size>,

    // ---- expect ----
    /// Job status class.
    pub status: O<JobStatus>,
    /// Device-specific completion code.
    pub code: O<String>,
    /// The job's fault address is in the page at this buffer (+ `fault_offset`).
    pub fault_at: O<String>,
    /// Offset for `fault_at`.
    pub fault_offset: O<Size>,
    /// The job's output decompresses to this buffer's range.
    pub decompresses_to: O<String>,
    /// A CRC-32C value (of a job, or of a buffer range).
    pub crc32c: O<u64>,
    /// The job's CRC equals the CPU's CRC-32C of this buffer's range.
    pub crc_of: O<String>,
    /// The buffer range equals this buffer's.
    pub equals: O<String>,
    /// Offset into `equals`.
    pub equals_offset: O<Size>,
    /// Every page of the range is present (mapped in the page tables).
    pub present: O<bool>,
    /// The range is mapped (a VMA covers it).
    pub mapped: O<bool>,
    /// A PASID: of a queue, a bond, or a process.
    pub pasid: O<String>,
    /// The PASID equals another's.
    pub same_as: O<String>,
    /// The PASID differs from another's.
    pub differs_from: O<String>,
    /// The PASID's value.
    pub value: O<u64>,
    /// Whether the PASID is allocated.
    pub allocated: O<bool>,
    /// Whether the process has a PASID.
    pub bound: O<bool>,
    /// A counter of the report's `stats`, by dotted path.
    pub counter: O<String>,
    /// Counter = value.
    pub eq: O<u64>,
    /// Counter ≠ value.
    pub ne: O<u64>,
    /// Counter > value.
    pub gt: O<u64>,
    /// Counter ≥ value.
    pub ge: O<u64>,
    /// Counter < value.
    pub lt: O<u64>,
    /// Counter ≤ value.
    pub le: O<u64>,
    /// Queue state.
    pub state: O<QueueStateSpec>,
}

/// A byte count: an integer, or a string with a binary unit ("64KiB", "4K", "2 MiB",
/// "1G", "0x1000").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl Size {
    /// Parses the string form.
    pub fn parse(s: &str) -> Result<u64, String> {
        let t = s.trim();
        if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            return u64::from_str_radix(&hex.replace('_', ""), 16)
                .map_err(|_| format!("`{s}` is not a size"));
        }
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '_'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .replace('_', "")
            .parse()
            .map_err(|_| format!("`{s}` is not a size (e.g. 4096, \"64KiB\", \"2M\")"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "K" | "KB" | "KiB" | "k" | "kB" => 1 << 10,
            "M" | "MB" | "MiB" => 1 << 20,
            "G" | "GB" | "GiB" => 1 << 30,
            "T" | "TB" | "TiB" => 1 << 40,
            u => {
                return Err(format!(
                    "unknown size unit `{u}` (B, K/KiB, M/MiB, G/GiB, T/TiB)"
                ));
            }
        };
        n.checked_mul(mult)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: a non-negative integer or a string such as \"64KiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("size {v} is negative")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                Ok(Size(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                Size::parse(v).map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A protection string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtSpec {
    /// PROT_READ.
    pub read: bool,
    /// PROT_WRITE.
    pub write: bool,
    /// PROT_EXEC.
    pub exec: bool,
}

impl<'de> Deserialize<'de> for ProtSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "none" {
            return Ok(ProtSpec {
                read: false,
                write: false,
                exec: false,
            });
        }
        let mut p = ProtSpec {
            read: false,
            write: false,
            exec: false,
        };
        if s.is_empty() {
            return Err(de::Error::custom("empty protection (use \"none\")"));
        }
        for c in s.chars() {
            let slot = match c {
                'r' => &mut p.read,
                'w' => &mut p.write,
                'x' => &mut p.exec,
                _ => {
                    return Err(de::Error::custom(format!(
                        "protection `{s}`: use the letters r, w, x (e.g. \"rw\") or \"none\""
                    )));
                }
            };
            if *slot {
                return Err(de::Error::custom(format!("protection `{s}` repeats `{c}`")));
            }
            *slot = true;
        }
        Ok(p)
    }
}

/// `expect_error`: `true` (any error) or an error class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorSpec {
    /// Any error.
    Any,
    /// An error of this class.
    Class(ErrorClass),
}

impl<'de> Deserialize<'de> for ErrorSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ErrorSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true or an error class")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ErrorSpec, E> {
                if v {
                    Ok(ErrorSpec::Any)
                } else {
                    Err(E::custom(
                        "expect_error = false is the default; leave the key out",
                    ))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ErrorSpec, E> {
                ErrorClass::from_name(v)
                    .map(ErrorSpec::Class)
                    .ok_or_else(|| {
                        E::custom(format!(
                            "unknown error class `{v}`, expected one of {}",
                            ErrorClass::ALL
                                .iter()
                                .map(|c| format!("`{}`", c.name()))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })
            }
        }
        d.deserialize_any(V)
    }
}

/// Classes of step errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorClass {
    /// The caller is not the process that opened the queue (EPERM).
    NotOwner,
    /// The device was removed (ENXIO).
    NoDevice,
    /// No queue free, or a work queue refused (EBUSY).
    Busy,
    /// The queue is not in a state for this.
    State,
    /// The process has exited.
    Exited,
    /// A CPU access faulted: SIGSEGV or SIGBUS, an unmapped range.
    Fault,
    /// Every slot of the queue is in flight.
    QueueFull,
    /// The SVA core refused (PASIDs exhausted, above the device's max, not bound, ...).
    Refused,
    /// An argument out of range.
    Invalid,
    /// Something did not finish in time.
    Timeout,
    /// Anything else.
    Other,
}

impl ErrorClass {
    /// Every class.
    pub const ALL: [ErrorClass; 11] = [
        Self::NotOwner,
        Self::NoDevice,
        Self::Busy,
        Self::State,
        Self::Exited,
        Self::Fault,
        Self::QueueFull,
        Self::Refused,
        Self::Invalid,
        Self::Timeout,
        Self::Other,
    ];

    /// The name in files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::NotOwner => "not_owner",
            Self::NoDevice => "no_device",
            Self::Busy => "busy",
            Self::State => "state",
            Self::Exited => "exited",
            Self::Fault => "fault",
            Self::QueueFull => "queue_full",
            Self::Refused => "refused",
            Self::Invalid => "invalid",
            Self::Timeout => "timeout",
            Self::Other => "other",
        }
    }

    /// The class called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// `access` of `touch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessSpec {
    /// Loads.
    Read,
    /// Stores.
    Write,
    /// Instruction fetches.
    Exec,
}

/// `alg` of a zip queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlgSpec {
    /// zlib (RFC 1950).
    Zlib,
    /// gzip (RFC 1952).
    Gzip,
    /// Raw DEFLATE (RFC 1951).
    Deflate,
}

/// `op` of `submit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpSpec {
    /// Compression engine: compress `src` into `dst`.
    Compress,
    /// Compression engine: decompress `src` (or `from_job`'s output) into `dst`.
    Decompress,
    /// Data mover: copy `src` to `dst`.
    Copy,
    /// Data mover: fill `dst` with `pattern`.
    Fill,
    /// Data mover: compare `src` with `src2`.
    Compare,
    /// Data mover: CRC-32C of `src`.
    Crc32c,
    /// Data mover: copy `src` to `dst` and `dst2`.
    Dualcast,
}

impl OpSpec {
    /// The name in files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Compress => "compress",
            Self::Decompress => "decompress",
            Self::Copy => "copy",
            Self::Fill => "fill",
            Self::Compare => "compare",
            Self::Crc32c => "crc32c",
            Self::Dualcast => "dualcast",
        }
    }

    /// The device kind that runs it.
    pub fn device(self) -> DeviceKind {
        match self {
            Self::Compress | Self::Decompress => DeviceKind::Zip,
            _ => DeviceKind::Dsa,
        }
    }
}

/// Job status classes, common to both devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Completed.
    Ok,
    /// Ended at an address that could not be translated.
    Fault,
    /// A compare found a difference.
    Mismatch,
    /// The queue was stopped while the job ran.
    Aborted,
    /// The result can no longer be collected (the process exited or the queue closed).
    Lost,
    /// Any other failure.
    Error,
}

impl JobStatus {
    /// The name in files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Fault => "fault",
            Self::Mismatch => "mismatch",
            Self::Aborted => "aborted",
            Self::Lost => "lost",
            Self::Error => "error",
        }
    }
}

/// Queue states for `expect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueStateSpec {
    /// Opened, not started.
    Init,
    /// Running.
    Started,
    /// Stopped by process exit or device removal, handle still open.
    Zombie,
    /// Closed.
    Closed,
}

impl QueueStateSpec {
    /// The name in files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Init => "init",
            Self::Started => "started",
            Self::Zombie => "zombie",
            Self::Closed => "closed",
        }
    }
}

/// Operations of a `random` step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RandomKind {
    /// CPU stores of random bytes.
    Write,
    /// CPU fill with a random byte.
    Fill,
    /// CPU write accesses to a range.
    Touch,
    /// MADV_DONTNEED on a range.
    Madvise,
    /// Swap a range out.
    Reclaim,
    /// Migrate the present pages of a range.
    Migrate,
    /// Data-mover copy between two buffers.
    DsaCopy,
    /// Data-mover fill.
    DsaFill,
    /// Data-mover compare of two ranges.
    DsaCompare,
    /// Data-mover CRC-32C.
    DsaCrc32c,
    /// Data-mover dualcast to two buffers.
    DsaDualcast,
    /// Compression of a range into another buffer, checked by decompressing.
    ZipCompress,
}

impl RandomKind {
    /// The name in files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Write => "write",
            Self::Fill => "fill",
            Self::Touch => "touch",
            Self::Madvise => "madvise",
            Self::Reclaim => "reclaim",
            Self::Migrate => "migrate",
            Self::DsaCopy => "dsa_copy",
            Self::DsaFill => "dsa_fill",
            Self::DsaCompare => "dsa_compare",
            Self::DsaCrc32c => "dsa_crc32c",
            Self::DsaDualcast => "dsa_dualcast",
            Self::ZipCompress => "zip_compress",
        }
    }

    /// The device kind it needs, if any.
    pub fn device(self) -> Option<DeviceKind> {
        match self {
            Self::DsaCopy
            | Self::DsaFill
            | Self::DsaCompare
            | Self::DsaCrc32c
            | Self::DsaDualcast => Some(DeviceKind::Dsa),
            Self::ZipCompress => Some(DeviceKind::Zip),
            _ => None,
        }
    }

    /// Whether it needs two distinct buffers.
    pub fn two_buffers(self) -> bool {
        matches!(
            self,
            Self::DsaCopy | Self::DsaCompare | Self::DsaDualcast | Self::ZipCompress
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(Size::parse("4096"), Ok(4096));
        assert_eq!(Size::parse("64KiB"), Ok(64 << 10));
        assert_eq!(Size::parse("64K"), Ok(64 << 10));
        assert_eq!(Size::parse("2 MiB"), Ok(2 << 20));
        assert_eq!(Size::parse("1G"), Ok(1 << 30));
        assert_eq!(Size::parse("0x1000"), Ok(4096));
        assert_eq!(Size::parse("1_000"), Ok(1000));
        assert!(Size::parse("12 parsecs").is_err());
        assert!(Size::parse("").is_err());
        assert!(Size::parse("-1").is_err());
        assert!(Size::parse("99999999999T").is_err());
    }
}
