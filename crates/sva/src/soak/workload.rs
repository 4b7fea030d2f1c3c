//! The soak workload: a seeded generator of operations on a [`World`] with a compression
//! engine (ATS + PRI) and a data mover (SMMU stall), a shadow copy of every buffer the
//! processes own, and the checks run after every step.

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};
use sva::world::{DeviceSpec, World};
use sva_addr::{Pa, Va};
use sva_dsa::{DsaSession, SessionConfig, Status};
use sva_mm::{AccessKind, MapFlags, Mm, Prot};
use sva_platform::{Platform, PlatformConfig};
use sva_zip::Alg;
use sva_zip::user::{CompSession, CompStatus, Op as ZipOp};

const PAGE: u64 = 4096;
const MAX_PROCS: usize = 4;
const MAX_BUFS: usize = 8;
const MAX_BUF_PAGES: u64 = 32;
/// Every this many steps, every page of every buffer is compared with the shadow.
pub(crate) const FULL_CHECK_EVERY: u64 = 64;
/// Pages compared with the shadow after every step.
const SAMPLE_PAGES: usize = 4;
/// Room left in a compression destination beyond the input length (zlib framing and
/// stored-block headers of incompressible input).
const ZIP_SLACK: u64 = 512;
const RW: Prot = Prot::READ.union(Prot::WRITE);
/// How long a job may take before the run calls it a hang.
const JOB_TIMEOUT: Duration = Duration::from_secs(10);

/// The operations the generator draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Op {
    Spawn,
    Fork,
    Exit,
    ExitInFlight,
    Mmap,
    Munmap,
    Mprotect,
    Write,
    Reclaim,
    Migrate,
    OpenZip,
    CloseZip,
    OpenDsa,
    CloseDsa,
    ZipCompress,
    ZipReadOnlyDst,
    ZipUnmapRace,
    DsaCopy,
    DsaFill,
}

impl Op {
    const ALL: [Op; 19] = [
        Op::Spawn,
        Op::Fork,
        Op::Exit,
        Op::ExitInFlight,
        Op::Mmap,
        Op::Munmap,
        Op::Mprotect,
        Op::Write,
        Op::Reclaim,
        Op::Migrate,
        Op::OpenZip,
        Op::CloseZip,
        Op::OpenDsa,
        Op::CloseDsa,
        Op::ZipCompress,
        Op::ZipReadOnlyDst,
        Op::ZipUnmapRace,
        Op::DsaCopy,
        Op::DsaFill,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::Spawn => "spawn",
            Op::Fork => "fork",
            Op::Exit => "exit",
            Op::ExitInFlight => "exit_in_flight",
            Op::Mmap => "mmap",
            Op::Munmap => "munmap",
            Op::Mprotect => "mprotect",
            Op::Write => "cpu_write",
            Op::Reclaim => "reclaim",
            Op::Migrate => "migrate",
            Op::OpenZip => "open_zip",
            Op::CloseZip => "close_zip",
            Op::OpenDsa => "open_dsa",
            Op::CloseDsa => "close_dsa",
            Op::ZipCompress => "zip_compress",
            Op::ZipReadOnlyDst => "zip_readonly_dst",
            Op::ZipUnmapRace => "zip_unmap_race",
            Op::DsaCopy => "dsa_copy",
            Op::DsaFill => "dsa_fill",
        }
    }

    /// Relative weight.
    fn weight(self) -> u32 {
        match self {
            Op::Spawn | Op::Fork | Op::Exit | Op::OpenZip | Op::OpenDsa => 2,
            Op::ExitInFlight | Op::CloseZip | Op::CloseDsa | Op::ZipReadOnlyDst => 1,
            Op::Mmap | Op::ZipCompress => 8,
            Op::Munmap => 4,
            Op::Mprotect | Op::Reclaim | Op::Migrate | Op::DsaFill | Op::ZipUnmapRace => 3,
            Op::Write => 12,
            Op::DsaCopy => 6,
        }
    }
}

/// A check that failed.
#[derive(Debug, Clone)]
pub(crate) struct Violation {
    pub step: u64,
    pub op: &'static str,
    pub what: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "violation at step {} (operation {}): {}",
            self.step, self.op, self.what
        )
    }
}

type Checked<T = ()> = Result<T, Violation>;

/// One mapping a process owns, with its shadow.
#[derive(Clone)]
pub(crate) struct Buf {
    pub va: Va,
    pub data: Vec<u8>,
    pub writable: bool,
}

impl Buf {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
    fn pages(&self) -> u64 {
        self.len() / PAGE
    }
}

pub(crate) struct Proc {
    pub mm: Arc<Mm>,
    zip: Option<CompSession>,
    dsa: Option<DsaSession>,
    pub bufs: Vec<Buf>,
}

/// What the run did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub(crate) struct Tally {
    /// Operations by kind (the same for the same seed and number of steps).
    pub ops: BTreeMap<&'static str, u64>,
    /// Outcomes that depend on timing or on what the devices faulted in.
    pub outcomes: BTreeMap<&'static str, u64>,
    pub zip_jobs: u64,
    pub dsa_jobs: u64,
    /// Input bytes of the jobs.
    pub job_bytes: u64,
    pub cpu_bytes_written: u64,
    /// Pages compared with the shadow.
    pub pages_checked: u64,
    pub full_checks: u64,
    /// Released frames looked up in every device's ATC.
    pub freed_frames_checked: u64,
    /// Frames still allocated after the operation (shared copy-on-write, or already
    /// reused), so not expected to be gone from the ATCs.
    pub frames_still_allocated: u64,
    pub max_processes: usize,
}

/// The machine, the processes and the shadow.
pub(crate) struct Soak {
    pub w: World,
    pub p: Arc<Platform>,
    rng: ChaCha8Rng,
    check_rng: ChaCha8Rng,
    pub procs: Vec<Proc>,
    pub step: u64,
    op: &'static str,
    pub tally: Tally,
    baseline_frames: u64,
}

/// A guard that lets interrupts go again however the scope is left.
struct Hold<'a>(&'a World);

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.0.hold_irqs(false);
    }
}

fn inflate(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(bytes).read_to_end(&mut out)?;
    Ok(out)
}

/// Where two byte strings first differ, for messages.
fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

impl Soak {
    /// The world with both accelerators and an empty workload.
    pub fn new(seed: u64) -> anyhow::Result<Self> {
        let w = World::new(PlatformConfig::default(), &DeviceSpec::demo_pair())?;
        let p = w.p.clone();
        // Warm-up: a first bind allocates a CD-table leaf for the stream (1024 PASIDs'
        // worth, kept for later binds, as Linux keeps them); take the baseline after it.
        let warm = p.system.spawn()?;
        let zip = CompSession::open(&w.devices[0].uacce, &warm, Alg::Zlib)?;
        let dsa = DsaSession::open(&w.devices[1].uacce, &warm, SessionConfig::default())?;
        p.system.exit(warm.pid())?;
        drop((zip, dsa, warm));
        let baseline_frames = p.ram.stats().used_frames;
        Ok(Self {
            w,
            p,
            rng: ChaCha8Rng::seed_from_u64(seed),
            check_rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_c4ec),
            procs: Vec::new(),
            step: 0,
            op: "setup",
            tally: Tally::default(),
            baseline_frames,
        })
    }

    fn fail(&self, what: impl Into<String>) -> Violation {
        Violation {
            step: self.step,
            op: self.op,
            what: what.into(),
        }
    }

    fn outcome(&mut self, what: &'static str) {
        *self.tally.outcomes.entry(what).or_default() += 1;
    }

    /// Processes (indices) for which `op` can run.
    fn eligible(&self, op: Op) -> Vec<usize> {
        let n = self.procs.len();
        let all = 0..n;
        let has_ro = |p: &Proc| p.bufs.iter().any(|b| !b.writable);
        let has_rw = |p: &Proc| p.bufs.iter().any(|b| b.writable);
        match op {
            Op::Spawn => {
                if n < MAX_PROCS {
                    vec![0]
                } else {
                    vec![]
                }
            }
            Op::Fork => {
                if n < MAX_PROCS {
                    all.collect()
                } else {
                    vec![]
                }
            }
            Op::Exit => all.collect(),
            _ => all
                .filter(|&i| {
                    let p = &self.procs[i];
                    match op {
                        Op::ExitInFlight => p.zip.is_some() && !p.bufs.is_empty(),
                        Op::Mmap => p.bufs.len() < MAX_BUFS,
                        Op::Munmap | Op::Mprotect | Op::Reclaim | Op::Migrate => !p.bufs.is_empty(),
                        Op::Write => has_rw(p),
                        Op::OpenZip => p.zip.is_none(),
                        Op::CloseZip => p.zip.is_some(),
                        Op::OpenDsa => p.dsa.is_none(),
                        Op::CloseDsa => p.dsa.is_some(),
                        Op::ZipCompress => p.zip.is_some() && has_rw(p) && p.bufs.len() >= 2,
                        Op::ZipReadOnlyDst => p.zip.is_some() && has_ro(p) && p.bufs.len() >= 2,
                        Op::ZipUnmapRace => {
                            p.zip.is_some() && !p.bufs.is_empty() && p.bufs.len() < MAX_BUFS
                        }
                        Op::DsaCopy | Op::DsaFill => p.dsa.is_some() && has_rw(p),
                        Op::Spawn | Op::Fork | Op::Exit => unreachable!(),
                    }
                })
                .collect(),
        }
    }

    /// Draws the next operation and its process.
    fn choose(&mut self) -> (Op, usize) {
        let mut cands: Vec<(Op, Vec<usize>, u32)> = Vec::new();
        for op in Op::ALL {
            let procs = self.eligible(op);
            if procs.is_empty() {
                continue;
            }
            let mut w = op.weight();
            if op == Op::Spawn && self.procs.is_empty() {
                w = 50;
            }
            cands.push((op, procs, w));
        }
        let total: u32 = cands.iter().map(|c| c.2).sum();
        let mut x = self.rng.random_range(0..total);
        for (op, procs, w) in cands {
            if x < w {
                let i = procs[self.rng.random_range(0..procs.len())];
                return (op, i);
            }
            x -= w;
        }
        unreachable!("weights add up")
    }

    /// One step: an operation and the checks after it.
    pub fn step(&mut self) -> Checked {
        self.step += 1;
        let (op, i) = self.choose();
        self.op = op.name();
        *self.tally.ops.entry(op.name()).or_default() += 1;
        self.exec(op, i)?;
        self.sample_check()?;
        if self.step.is_multiple_of(FULL_CHECK_EVERY) {
            self.full_check()?;
        }
        self.tally.max_processes = self.tally.max_processes.max(self.procs.len());
        Ok(())
    }

    /// Ends the workload: every process exits, every session closes, then the allocators
    /// must be back where they started.
    pub fn finish(&mut self) -> Checked {
        self.op = "final";
        self.full_check()?;
        while !self.procs.is_empty() {
            self.exit(0, false)?;
        }
        // Frees can trail the close by a little (the interrupt pump, queue drains).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let used = self.p.ram.stats().used_frames;
            let pasids = self.p.sva.as_ref().map_or(0, |s| s.stats().pasids_in_use);
            if used == self.baseline_frames && pasids == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.fail(format!(
                    "after every process exited and every queue closed: {used} frames used \
                     (baseline {}), {pasids} PASIDs in use (expected 0)",
                    self.baseline_frames
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    // ---- checks ----

    /// Compares pages `[first, first + n)` of buffer `b` of process `i` with the shadow.
    fn check_pages(&mut self, i: usize, b: usize, first: u64, n: u64) -> Checked {
        let buf = &self.procs[i].bufs[b];
        let (start, end) = ((first * PAGE) as usize, ((first + n) * PAGE) as usize);
        let va = buf.va + first * PAGE;
        let mut got = vec![0u8; end - start];
        if let Err(e) = self.procs[i].mm.read(va, &mut got) {
            return Err(self.fail(format!(
                "process {}: CPU read of {} bytes at {va} failed: {e}",
                self.procs[i].mm.pid().0,
                got.len()
            )));
        }
        if let Some(d) = first_diff(&got, &buf.data[start..end]) {
            let at = va + d as u64;
            let frame = self.procs[i]
                .mm
                .translate(at, AccessKind::Read)
                .ok()
                .flatten();
            return Err(self.fail(format!(
                "process {}: memory at {at} (buffer {} + {:#x}, frame {}) reads {:#04x}, shadow \
                 has {:#04x}",
                self.procs[i].mm.pid().0,
                buf.va,
                start + d,
                frame.map_or_else(|| "none".into(), |p| p.to_string()),
                got[d],
                buf.data[start + d]
            )));
        }
        self.tally.pages_checked += n;
        Ok(())
    }

    fn check_buf(&mut self, i: usize, b: usize) -> Checked {
        let n = self.procs[i].bufs[b].pages();
        self.check_pages(i, b, 0, n)
    }

    fn check_proc(&mut self, i: usize) -> Checked {
        for b in 0..self.procs[i].bufs.len() {
            self.check_buf(i, b)?;
        }
        Ok(())
    }

    /// Every page of every live buffer.
    pub fn full_check(&mut self) -> Checked {
        for i in 0..self.procs.len() {
            self.check_proc(i)?;
        }
        self.tally.full_checks += 1;
        Ok(())
    }

    /// A few random pages.
    fn sample_check(&mut self) -> Checked {
        let bufs: Vec<(usize, usize)> = self
            .procs
            .iter()
            .enumerate()
            .flat_map(|(i, p)| (0..p.bufs.len()).map(move |b| (i, b)))
            .collect();
        if bufs.is_empty() {
            return Ok(());
        }
        for _ in 0..SAMPLE_PAGES {
            let (i, b) = bufs[self.check_rng.random_range(0..bufs.len())];
            let page = self
                .check_rng
                .random_range(0..self.procs[i].bufs[b].pages());
            self.check_pages(i, b, page, 1)?;
        }
        Ok(())
    }

    /// The frames behind `[va, va + len)` now.
    fn frames(mm: &Mm, va: Va, len: u64) -> Vec<Pa> {
        (0..len / PAGE)
            .filter_map(|k| mm.translate(va + k * PAGE, AccessKind::Read).ok().flatten())
            .collect()
    }

    /// Frames an operation released must be in no device's ATC. A frame that is still
    /// allocated (copy-on-write shared with another process, or reused already) may be.
    fn check_released(&mut self, frames: &[Pa]) -> Checked {
        for &pa in frames {
            let pa = Pa(pa.raw() & !(PAGE - 1));
            if self.p.ram.refcount(pa).is_ok() {
                self.tally.frames_still_allocated += 1;
                continue;
            }
            for d in &self.w.devices {
                if d.function.atc().maps_frame(pa, PAGE) {
                    return Err(self.fail(format!(
                        "frame {pa} was released but the ATC of {} still translates to it",
                        d.spec.name
                    )));
                }
            }
            self.tally.freed_frames_checked += 1;
        }
        Ok(())
    }

    // ---- operations ----

    fn exec(&mut self, op: Op, i: usize) -> Checked {
        match op {
            Op::Spawn => {
                let mm = self
                    .p
                    .system
                    .spawn()
                    .map_err(|e| self.fail(format!("spawn: {e}")))?;
                self.procs.push(Proc {
                    mm,
                    zip: None,
                    dsa: None,
                    bufs: Vec::new(),
                });
            }
            Op::Fork => {
                let parent = self.procs[i].mm.pid();
                let mm = self
                    .p
                    .system
                    .fork(parent)
                    .map_err(|e| self.fail(format!("fork of {}: {e}", parent.0)))?;
                let bufs = self.procs[i].bufs.clone();
                self.procs.push(Proc {
                    mm,
                    zip: None,
                    dsa: None,
                    bufs,
                });
                // The child must read what the parent had.
                let c = self.procs.len() - 1;
                self.check_proc(c)?;
            }
            Op::Exit => self.exit(i, false)?,
            Op::ExitInFlight => self.exit(i, true)?,
            Op::Mmap => {
                let pages = if self.rng.random_bool(0.7) {
                    self.rng.random_range(1..=4)
                } else {
                    self.rng.random_range(1..=MAX_BUF_PAGES)
                };
                let mut flags = MapFlags::PRIVATE;
                if self.rng.random_bool(0.25) {
                    flags |= MapFlags::POPULATE;
                }
                let va = self.procs[i]
                    .mm
                    .mmap(None, pages * PAGE, RW, flags)
                    .map_err(|e| self.fail(format!("mmap of {pages} pages: {e}")))?;
                self.procs[i].bufs.push(Buf {
                    va,
                    data: vec![0; (pages * PAGE) as usize],
                    writable: true,
                });
            }
            Op::Munmap => {
                let b = self.pick_buf(i, |_| true);
                let buf = self.procs[i].bufs.remove(b);
                let frames = Self::frames(&self.procs[i].mm, buf.va, buf.len());
                self.procs[i]
                    .mm
                    .munmap(buf.va, buf.len())
                    .map_err(|e| self.fail(format!("munmap of {}: {e}", buf.va)))?;
                self.check_released(&frames)?;
            }
            Op::Mprotect => {
                let b = self.pick_buf(i, |_| true);
                let buf = &mut self.procs[i].bufs[b];
                buf.writable = !buf.writable;
                let prot = if buf.writable { RW } else { Prot::READ };
                let (va, len) = (buf.va, buf.len());
                self.procs[i]
                    .mm
                    .mprotect(va, len, prot)
                    .map_err(|e| self.fail(format!("mprotect of {va}: {e}")))?;
            }
            Op::Write => {
                let b = self.pick_buf(i, |b| b.writable);
                let len_buf = self.procs[i].bufs[b].len();
                let off = self.rng.random_range(0..len_buf);
                let len = self.rng.random_range(1..=(len_buf - off).min(3 * PAGE)) as usize;
                let mut bytes = vec![0u8; len];
                if self.rng.random_bool(0.5) {
                    self.rng.fill_bytes(&mut bytes);
                } else {
                    bytes.fill(self.rng.random());
                }
                let buf = &mut self.procs[i].bufs[b];
                let va = buf.va + off;
                buf.data[off as usize..off as usize + len].copy_from_slice(&bytes);
                self.procs[i]
                    .mm
                    .write(va, &bytes)
                    .map_err(|e| self.fail(format!("CPU write of {len} bytes at {va}: {e}")))?;
                self.tally.cpu_bytes_written += len as u64;
            }
            Op::Reclaim => {
                let b = self.pick_buf(i, |_| true);
                let pages = self.procs[i].bufs[b].pages();
                let first = self.rng.random_range(0..pages);
                let n = self.rng.random_range(1..=pages - first);
                let va = self.procs[i].bufs[b].va + first * PAGE;
                let frames = Self::frames(&self.procs[i].mm, va, n * PAGE);
                let r = self.procs[i]
                    .mm
                    .reclaim(va, n * PAGE)
                    .map_err(|e| self.fail(format!("reclaim of {n} pages at {va}: {e}")))?;
                if r > 0 {
                    self.outcome("reclaim_swapped_out");
                }
                self.check_released(&frames)?;
                self.check_pages(i, b, first, n)?;
            }
            Op::Migrate => {
                let b = self.pick_buf(i, |_| true);
                let page = self.rng.random_range(0..self.procs[i].bufs[b].pages());
                let va = self.procs[i].bufs[b].va + page * PAGE;
                let old = Self::frames(&self.procs[i].mm, va, PAGE);
                match self.procs[i].mm.migrate(va) {
                    Ok(new) => {
                        self.outcome("migrate_moved");
                        if old.contains(&new) {
                            return Err(self.fail(format!("migrate of {va} kept frame {new}")));
                        }
                        self.check_released(&old)?;
                    }
                    // Not resident, or shared copy-on-write: nothing to move.
                    Err(_) => self.outcome("migrate_skipped"),
                }
                self.check_pages(i, b, page, 1)?;
            }
            Op::OpenZip => {
                let s = CompSession::open(&self.w.devices[0].uacce, &self.procs[i].mm, Alg::Zlib)
                    .map_err(|e| self.fail(format!("opening a compression queue: {e}")))?;
                self.procs[i].zip = Some(s);
            }
            Op::CloseZip => self.procs[i].zip = None,
            Op::OpenDsa => {
                let s = DsaSession::open(
                    &self.w.devices[1].uacce,
                    &self.procs[i].mm,
                    SessionConfig::default(),
                )
                .map_err(|e| self.fail(format!("opening a work queue: {e}")))?;
                self.procs[i].dsa = Some(s);
            }
            Op::CloseDsa => self.procs[i].dsa = None,
            Op::ZipCompress => self.zip_compress(i, false)?,
            Op::ZipReadOnlyDst => self.zip_compress(i, true)?,
            Op::ZipUnmapRace => self.zip_unmap_race(i)?,
            Op::DsaCopy => self.dsa_job(i, false)?,
            Op::DsaFill => self.dsa_job(i, true)?,
        }
        Ok(())
    }

    /// A buffer of process `i` that `ok` accepts (there is one).
    fn pick_buf(&mut self, i: usize, ok: impl Fn(&Buf) -> bool) -> usize {
        let c: Vec<usize> = (0..self.procs[i].bufs.len())
            .filter(|&b| ok(&self.procs[i].bufs[b]))
            .collect();
        c[self.rng.random_range(0..c.len())]
    }

    /// Process `i` exits (with 1 to 4 compressions in flight if `in_flight`); its sessions
    /// close after the exit, as a process's files are closed after its address space goes.
    fn exit(&mut self, i: usize, in_flight: bool) -> Checked {
        if in_flight {
            let k = self.rng.random_range(1..=4);
            let nb = self.procs[i].bufs.len();
            for _ in 0..k {
                let (s, d) = (self.rng.random_range(0..nb), self.rng.random_range(0..nb));
                let p = &mut self.procs[i];
                let (src, dst) = (&p.bufs[s], &p.bufs[d]);
                let (sva, slen, dva, dlen) = (src.va, src.len(), dst.va, dst.len());
                if let Some(z) = p.zip.as_mut() {
                    z.submit(ZipOp::Compress, sva, slen as u32, dva, dlen as u32)
                        .map_err(|e| self.fail(format!("submitting before exit: {e}")))?;
                }
                self.tally.zip_jobs += 1;
                self.tally.job_bytes += slen;
            }
        }
        let proc = self.procs.remove(i);
        let frames: Vec<Pa> = proc
            .bufs
            .iter()
            .flat_map(|b| Self::frames(&proc.mm, b.va, b.len()))
            .collect();
        let pid = proc.mm.pid();
        self.p
            .system
            .exit(pid)
            .map_err(|e| self.fail(format!("exit of {}: {e}", pid.0)))?;
        self.check_released(&frames)?;
        drop(proc);
        self.check_released(&frames)
    }

    /// Compresses part of one buffer into another and checks the output with zlib on the
    /// CPU; with `read_only`, the destination is read-only and the job must fault on it
    /// without writing anything.
    fn zip_compress(&mut self, i: usize, read_only: bool) -> Checked {
        let d = self.pick_buf(i, |b| b.writable != read_only);
        let nb = self.procs[i].bufs.len();
        let mut s = self.rng.random_range(0..nb - 1);
        if s >= d {
            s += 1;
        }
        let (slen_buf, dlen) = (self.procs[i].bufs[s].len(), self.procs[i].bufs[d].len());
        let off = self.rng.random_range(0..slen_buf);
        let len = self
            .rng
            .random_range(1..=(slen_buf - off).min(dlen - ZIP_SLACK));
        let p = &mut self.procs[i];
        let (src, dst) = (p.bufs[s].va + off, p.bufs[d].va);
        let zip = p.zip.as_mut().expect("eligible");
        let r = zip
            .compress(src, len as u32, dst, dlen as u32)
            .map_err(|e| self.fail(format!("compress of {len} bytes at {src} into {dst}: {e}")))?;
        self.tally.zip_jobs += 1;
        self.tally.job_bytes += len;
        if read_only {
            let ok = r.status == CompStatus::AddrFault
                && r.fault
                    .is_some_and(|f| f.write && f.addr >= dst.raw() && f.addr < dst.raw() + dlen);
            if !ok {
                return Err(self.fail(format!(
                    "compress into read-only {dst}: expected a write fault there, got {:?} (fault \
                     {:?})",
                    r.status, r.fault
                )));
            }
            return self.check_buf(i, d);
        }
        if !r.status.is_ok() || u64::from(r.consumed) != len || u64::from(r.produced) > dlen {
            return Err(self.fail(format!(
                "compress of {len} bytes at {src} into {dst} ({dlen} bytes): {:?}, consumed {}, \
                 produced {}, fault {:?}",
                r.status, r.consumed, r.produced, r.fault
            )));
        }
        let mut out = vec![0u8; r.produced as usize];
        self.procs[i]
            .mm
            .read(dst, &mut out)
            .map_err(|e| self.fail(format!("reading the output at {dst}: {e}")))?;
        let want = &self.procs[i].bufs[s].data[off as usize..(off + len) as usize];
        match inflate(&out) {
            Ok(back) if back == want => {}
            Ok(back) => {
                return Err(self.fail(format!(
                    "compress of {len} bytes at {src}: the output inflates to {} bytes that \
                     differ from the shadow at offset {:?}",
                    back.len(),
                    first_diff(&back, want)
                )));
            }
            Err(e) => {
                return Err(self.fail(format!(
                    "compress of {len} bytes at {src}: the output does not inflate: {e}"
                )));
            }
        }
        self.procs[i].bufs[d].data[..out.len()].copy_from_slice(&out);
        // Nothing beyond what the engine reported may have changed.
        self.check_buf(i, d)
    }

    /// Submits a compression into a fresh destination, unmaps the destination while the
    /// job runs (sometimes with interrupts held, so the engine waits on a page request),
    /// and waits: the job either finished first or faults at the destination; the rest of
    /// the process must be untouched.
    fn zip_unmap_race(&mut self, i: usize) -> Checked {
        let s = self.pick_buf(i, |_| true);
        let slen_buf = self.procs[i].bufs[s].len();
        let off = self.rng.random_range(0..slen_buf);
        let dpages = self.rng.random_range(2..=8u64);
        let dlen = dpages * PAGE;
        let len = self
            .rng
            .random_range(1..=(slen_buf - off).min(dlen - ZIP_SLACK));
        let hold = self.rng.random_bool(0.5);
        let mm = self.procs[i].mm.clone();
        let dst = mm
            .mmap(None, dlen, RW, MapFlags::PRIVATE)
            .map_err(|e| self.fail(format!("mmap of the destination: {e}")))?;
        let src = self.procs[i].bufs[s].va + off;
        let zip_fn = self.w.devices[0].function.clone();
        let before = zip_fn.stats().page_request_groups;
        let guard = hold.then(|| {
            self.w.hold_irqs(true);
            Hold(&self.w)
        });
        let zip = self.procs[i].zip.as_mut().expect("eligible");
        let tag = zip.submit(ZipOp::Compress, src, len as u32, dst, dlen as u32);
        let tag = match tag {
            Ok(t) => t,
            Err(e) => {
                drop(guard);
                return Err(self.fail(format!("submit: {e}")));
            }
        };
        if hold {
            let t0 = Instant::now();
            while zip_fn.stats().page_request_groups == before
                && t0.elapsed() < Duration::from_secs(1)
            {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        let frames = Self::frames(&mm, dst, dlen);
        let unmapped = mm.munmap(dst, dlen);
        drop(guard);
        let done = self.procs[i]
            .zip
            .as_mut()
            .expect("eligible")
            .poll_timeout(JOB_TIMEOUT);
        self.tally.zip_jobs += 1;
        self.tally.job_bytes += len;
        unmapped.map_err(|e| self.fail(format!("munmap of {dst}: {e}")))?;
        let done = match done {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Err(self.fail(format!(
                    "no completion within {JOB_TIMEOUT:?} after unmapping the destination {dst}"
                )));
            }
            Err(e) => return Err(self.fail(format!("poll: {e}"))),
        };
        let r = done.result;
        if done.tag != tag {
            return Err(self.fail(format!("completion of tag {} instead of {tag}", done.tag)));
        }
        match r.status {
            s if s.is_ok() => self.outcome("race_completed_first"),
            CompStatus::AddrFault
                if r.fault.is_some_and(|f| {
                    f.write && f.addr >= dst.raw() && f.addr < dst.raw() + dlen
                }) =>
            {
                self.outcome("race_faulted_at_dst");
            }
            _ => {
                return Err(self.fail(format!(
                    "compress into {dst} unmapped under it: {:?}, fault {:?}",
                    r.status, r.fault
                )));
            }
        }
        self.check_released(&frames)?;
        self.check_proc(i)
    }

    /// A copy (memmove) or a fill by the data mover between buffers of process `i`.
    fn dsa_job(&mut self, i: usize, fill: bool) -> Checked {
        let d = self.pick_buf(i, |b| b.writable);
        let dlen_buf = self.procs[i].bufs[d].len();
        let doff = self.rng.random_range(0..dlen_buf);
        let max = (dlen_buf - doff).min(4 * PAGE);
        let (s, soff, len, pattern) = if fill {
            let len = self.rng.random_range(1..=max);
            (d, 0, len, self.rng.random::<u64>())
        } else {
            let s = self.rng.random_range(0..self.procs[i].bufs.len());
            let slen_buf = self.procs[i].bufs[s].len();
            let soff = self.rng.random_range(0..slen_buf);
            let len = self.rng.random_range(1..=max.min(slen_buf - soff));
            (s, soff, len, 0)
        };
        let p = &mut self.procs[i];
        let dst = p.bufs[d].va + doff;
        let src = p.bufs[s].va + soff;
        let dsa = p.dsa.as_mut().expect("eligible");
        let rec = if fill {
            dsa.fill(dst, pattern, len as u32)
        } else {
            dsa.copy(dst, src, len as u32)
        };
        self.tally.dsa_jobs += 1;
        self.tally.job_bytes += len;
        let what = if fill { "fill" } else { "copy" };
        let rec = rec.map_err(|e| self.fail(format!("{what} of {len} bytes to {dst}: {e}")))?;
        if rec.status() != Some(Status::Success) {
            return Err(self.fail(format!(
                "{what} of {len} bytes to {dst}: status {:?}, {} bytes completed, fault at {:#x}",
                rec.status(),
                rec.bytes_completed,
                rec.fault_addr
            )));
        }
        let (doff, soff, len) = (doff as usize, soff as usize, len as usize);
        let bytes: Vec<u8> = if fill {
            let pat = pattern.to_le_bytes();
            (0..len).map(|k| pat[k % 8]).collect()
        } else {
            self.procs[i].bufs[s].data[soff..soff + len].to_vec()
        };
        self.procs[i].bufs[d].data[doff..doff + len].copy_from_slice(&bytes);
        self.check_buf(i, d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sva_physmem::PhysMemory;

    #[test]
    fn the_shadow_check_sees_a_write_behind_the_process_s_back() {
        let mut s = Soak::new(3).unwrap();
        s.exec(Op::Spawn, 0).unwrap();
        s.exec(Op::Mmap, 0).unwrap();
        s.exec(Op::Write, 0).unwrap();
        s.full_check().unwrap();
        // Corrupt one byte of a resident page through physical memory.
        let buf = s.procs[0].bufs[0].clone();
        let page = (0..buf.pages())
            .find(|&k| buf.data[(k * PAGE) as usize..((k + 1) * PAGE) as usize] != [0; 4096])
            .unwrap();
        let va = buf.va + page * PAGE + 17;
        let pa = s.procs[0]
            .mm
            .translate(va, AccessKind::Read)
            .unwrap()
            .unwrap();
        let old = buf.data[(page * PAGE) as usize + 17];
        s.p.ram.write(pa, &[old ^ 0x5a]).unwrap();
        let v = s.full_check().unwrap_err();
        assert!(v.what.contains(&format!("{va}")), "{v}");
        // Put it back: the checker is satisfied again, and the run ends balanced.
        s.p.ram.write(pa, &[old]).unwrap();
        s.full_check().unwrap();
        s.finish().unwrap();
    }

    #[test]
    fn a_short_run_is_clean() {
        let mut s = Soak::new(11).unwrap();
        for _ in 0..150 {
            s.step().unwrap_or_else(|v| panic!("{v}"));
        }
        s.finish().unwrap_or_else(|v| panic!("{v}"));
    }
}
