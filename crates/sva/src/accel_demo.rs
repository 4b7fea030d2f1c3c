//! The accelerator part of the demo: two processes use a compression engine (a PRI
//! device) and a data mover (a stall device) through uacce on the SMMUv3 model. One
//! address space bound to both devices has one PASID; buffers nobody touched are faulted
//! in by the devices; outputs are verified on the CPU; a destination unmapped while the
//! device waits ends that job at its address; a forked child cannot use its parent's
//! queue; a process exits with jobs in flight and its PASID comes back only after close.

use crate::demo::{Checks, DemoArgs};
use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};
use sva::clock::CostTable;
use sva::scenario::report::{self, Timeline};
use sva::trace::Trace;
use sva::world::{DeviceSpec, World};
use sva_addr::Va;
use sva_dsa::{DsaSession, SessionConfig, Status};
use sva_mm::{MapFlags, Mm, Prot};
use sva_pcie::PciFunction;
use sva_platform::{Platform, PlatformConfig};
use sva_uacce::Uacce;
use sva_zip::Alg;
use sva_zip::user::{CompSession, CompStatus, Op};

const RW: Prot = Prot::READ.union(Prot::WRITE);
const TEXT: &str = include_str!("accel_demo.rs");

/// A PASID for printing.
fn show(p: Option<sva_addr::Pasid>) -> String {
    p.map_or_else(|| "none".into(), |p| p.to_string())
}

fn read(mm: &Mm, va: Va, len: usize) -> Result<Vec<u8>> {
    let mut b = vec![0u8; len];
    mm.read(va, &mut b)?;
    Ok(b)
}

fn inflate(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(bytes).read_to_end(&mut out)?;
    Ok(out)
}

/// Jobs and bytes the demo ran per device, for the summary.
#[derive(Default)]
struct Tally {
    zip_jobs: u64,
    dsa_jobs: u64,
}

/// The two devices: the compression engine with ATS and PRI, the data mover with
/// neither (its faults stall in the SMMU).
fn machine() -> Result<Machine> {
    let w = World::new(PlatformConfig::default(), &DeviceSpec::demo_pair())?;
    let (zip, dsa) = (&w.devices[0], &w.devices[1]);
    Ok(Machine {
        p: w.p.clone(),
        zip_fn: zip.function.clone(),
        dsa_fn: dsa.function.clone(),
        zip: zip.uacce.clone(),
        dsa: dsa.uacce.clone(),
        w,
    })
}

/// The world and shortcuts to its two devices.
struct Machine {
    w: World,
    p: Arc<Platform>,
    zip_fn: Arc<PciFunction>,
    dsa_fn: Arc<PciFunction>,
    zip: Arc<Uacce>,
    dsa: Arc<Uacce>,
}

/// Charges each demo step on the modeled clock and traces it.
struct Recorder {
    timeline: Timeline,
    trace: Option<Trace>,
}

impl Recorder {
    fn new(w: &World, tracing: bool) -> Self {
        Self {
            timeline: Timeline::new(w, CostTable::default()),
            trace: tracing.then(Trace::new),
        }
    }

    /// Ends a step on `track` ("processes"/"devices", name): its modeled cost is what the
    /// hardware did since the previous step.
    fn step(&mut self, w: &World, track: (&str, &str), name: &str) {
        let (start, cost, delta) = self.timeline.charge(w);
        if let Some(t) = &mut self.trace {
            let tr = t.track(track.0, track.1);
            t.span(
                tr,
                name,
                start,
                cost,
                &serde_json::json!({
                    "page_requests": delta.page_requests,
                    "stalls": delta.stall_events,
                    "walks": delta.walks,
                    "atc_invalidations": delta.atc_invalidations,
                    "dma_bytes": delta.dma_bytes,
                    "cpu_faults": delta.cpu_faults,
                }),
            );
        }
    }
}

/// The second process's data: this file's lines in an order drawn from `seed`, upper
/// case (as long as the file, as compressible).
fn seeded_text(seed: u64) -> String {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut lines: Vec<&str> = TEXT.split('\n').collect();
    lines.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    lines.join("\n").to_uppercase()
}

pub(crate) fn run<W: Write + ?Sized>(
    c: &mut Checks<'_, W>,
    args: &DemoArgs,
) -> Result<serde_json::Value> {
    let m = machine()?;
    let mut timeline = Recorder::new(&m.w, args.trace.is_some());
    let sva = m.p.sva.clone().context("SVA core")?;
    let mut tally = Tally::default();
    writeln!(
        c.out,
        "\nAccelerators through uacce: {} (SID {}, ATS + PRI) and {} (SID {}, stall)",
        m.zip.info().name,
        m.w.devices[0].spec.sid,
        m.dsa.info().name,
        m.w.devices[1].spec.sid
    )?;

    // Process A uses both devices: one address space, one PASID.
    let a = m.p.system.spawn()?;
    let mut zip_a = CompSession::open(&m.zip, &a, Alg::Zlib)?;
    let mut dsa_a = DsaSession::open(&m.dsa, &a, SessionConfig::default())?;
    let pasid_a = zip_a.handle().and_then(|q| q.pasid());
    writeln!(
        c.out,
        "process {} opened a compression queue (PASID {}) and a work queue (PASID {})",
        a.pid().0,
        show(pasid_a),
        show(dsa_a.handle().and_then(|q| q.pasid()))
    )?;
    c.check(
        pasid_a.is_some() && pasid_a == dsa_a.handle().and_then(|q| q.pasid()),
        "one address space bound to two devices has one PASID",
    )?;

    // Compress text into memory nobody touched: the engine faults it in through PRI.
    let len = TEXT.len() as u32;
    let src = a.mmap(None, u64::from(len), RW, MapFlags::PRIVATE)?;
    a.write(src, TEXT.as_bytes())?;
    let packed = a.mmap(None, 1 << 20, RW, MapFlags::PRIVATE)?;
    let r = zip_a.compress(src, len, packed, 1 << 20)?;
    tally.zip_jobs += 1;
    let bytes = read(&a, packed, r.produced as usize)?;
    writeln!(
        c.out,
        "compressed {len} bytes into {} ({:?}); the engine sent {} page requests",
        r.produced,
        r.status,
        m.zip_fn.stats().page_requests
    )?;
    c.check(
        r.status == CompStatus::Ok && inflate(&bytes)? == TEXT.as_bytes(),
        "the compressed output decompresses with zlib to the input",
    )?;
    c.check(
        m.zip_fn.stats().responses_success > 0,
        "untouched output pages were faulted in through PRI",
    )?;
    timeline.step(
        &m.w,
        ("devices", "hisi_zip"),
        "compress (A), output faulted in by PRI",
    );

    // Copy the compressed bytes with the data mover into more untouched memory: stalls.
    let copy = a.mmap(None, 1 << 20, RW, MapFlags::PRIVATE)?;
    let rec = dsa_a.copy(copy, packed, r.produced)?;
    tally.dsa_jobs += 1;
    c.check(
        rec.status() == Some(Status::Success) && read(&a, copy, bytes.len())? == bytes,
        "the data mover's copy equals the source",
    )?;
    c.check(
        m.dsa_fn.stats().stalls > 0,
        "untouched destination pages were faulted in through SMMU stalls",
    )?;
    timeline.step(
        &m.w,
        ("devices", "dsa"),
        "copy (A), destination faulted in by stalls",
    );

    // Process B at the same virtual addresses: its own PASID, its own data.
    let b = m.p.system.spawn()?;
    let mut zip_b = CompSession::open(&m.zip, &b, Alg::Zlib)?;
    let fixed = MapFlags::PRIVATE | MapFlags::FIXED;
    b.mmap(Some(src), u64::from(len), RW, fixed)?;
    b.mmap(Some(packed), 1 << 20, RW, fixed)?;
    let other = seeded_text(args.seed);
    b.write(src, other.as_bytes())?;
    let rb = zip_b.compress(src, len, packed, 1 << 20)?;
    tally.zip_jobs += 1;
    let pasid_b = zip_b.handle().and_then(|q| q.pasid());
    c.check(
        pasid_b != pasid_a
            && inflate(&read(&b, packed, rb.produced as usize)?)? == other.as_bytes(),
        "a second process at the same addresses gets its own PASID and its own data",
    )?;
    c.check(
        inflate(&read(&a, packed, r.produced as usize)?)? == TEXT.as_bytes(),
        "the first process's output is untouched",
    )?;
    timeline.step(&m.w, ("devices", "hisi_zip"), "compress (B), its own PASID");

    // A destination unmapped while the engine waits for it.
    let neighbour = b.mmap(None, 4096, RW, MapFlags::PRIVATE)?;
    b.write(neighbour, b"neighbour")?;
    let dst = b.mmap(None, 1 << 16, RW, MapFlags::PRIVATE)?;
    m.w.hold_irqs(true);
    let before = m.zip_fn.stats().page_request_groups;
    zip_b.submit(Op::Compress, src, len, dst, 1 << 16)?;
    let t0 = Instant::now();
    while m.zip_fn.stats().page_request_groups == before && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_micros(50));
    }
    b.munmap(dst, 1 << 16)?;
    m.w.hold_irqs(false);
    let done = zip_b
        .poll_timeout(Duration::from_secs(10))?
        .context("the job ended")?;
    tally.zip_jobs += 1;
    let fault = done.result.fault;
    writeln!(
        c.out,
        "munmap of {dst} while the engine waited for it: {:?} at {}",
        done.result.status,
        fault.map_or_else(|| "no address".into(), |f| Va(f.addr).to_string())
    )?;
    c.check(
        done.result.status == CompStatus::AddrFault
            && fault.is_some_and(|f| f.addr & !0xfff == dst.raw()),
        "the job ended with the unmapped address as its fault address",
    )?;
    c.check(
        read(&b, neighbour, 9)? == b"neighbour" && read(&b, src, 16)? == other.as_bytes()[..16],
        "nothing else was touched",
    )?;
    timeline.step(&m.w, ("processes", "B"), "munmap while the engine waits");

    // A forked child holds A's handles but cannot use them.
    let child = m.p.system.fork(a.pid())?;
    let refused = zip_a
        .handle()
        .map(|q| q.start(&child))
        .is_some_and(|r| matches!(r, Err(sva_uacce::Error::NotOwner { .. })));
    let doorbell = zip_a.queue().mapping().doorbell;
    c.check(
        refused && child.write(doorbell, &[0; 8]).is_err(),
        "a forked child cannot use its parent's queue (no mapping, handle refused)",
    )?;
    c.check(
        sva.pasid_of(child.pid()).is_none(),
        "the child is bound to nothing",
    )?;
    timeline.step(
        &m.w,
        ("processes", "A"),
        "fork; the child tries the parent's queue",
    );

    // Process C exits with jobs in flight.
    let cproc = m.p.system.spawn()?;
    let mut zip_c = CompSession::open(&m.zip, &cproc, Alg::Gzip)?;
    let pasid_c = zip_c.handle().and_then(|q| q.pasid()).context("PASID")?;
    let big = cproc.mmap(None, 4 << 20, RW, MapFlags::PRIVATE)?;
    cproc.fill(big, b'x', 4 << 20)?;
    let out = cproc.mmap(None, 32 << 20, RW, MapFlags::PRIVATE)?;
    for i in 0..16u64 {
        zip_c.submit(Op::Compress, big, 4 << 20, out + i * (2 << 20), 2 << 20)?;
    }
    tally.zip_jobs += 16;
    m.p.system.exit(cproc.pid())?;
    c.check(
        zip_c.handle().map(|q| q.state()) == Some(sva_uacce::QueueState::Zombie),
        "exit with 16 jobs in flight: the exit callback stopped the queue",
    )?;
    c.check(
        sva.pasid_allocated(pasid_c),
        "the exited process's PASID stays allocated while its queue is open",
    )?;
    drop(zip_c);
    c.check(
        !sva.pasid_allocated(pasid_c),
        "closing the queue unbinds and drains; the PASID is free",
    )?;
    let d = m.p.system.spawn()?;
    let zip_d = CompSession::open(&m.zip, &d, Alg::Zlib)?;
    writeln!(
        c.out,
        "process {} exited with jobs in flight (PASID {pasid_c}); the next process got PASID {}",
        cproc.pid().0,
        show(zip_d.handle().and_then(|q| q.pasid()))
    )?;
    drop((zip_a, zip_b, zip_d, dsa_a));
    timeline.step(
        &m.w,
        ("processes", "C"),
        "exit with 16 jobs in flight, close, PASID reused",
    );

    summary(c, &m, &tally)?;
    let stats = report::stats(
        &m.w,
        timeline.timeline.base(),
        timeline.timeline.now_ns(),
        &[tally.zip_jobs, tally.dsa_jobs],
    );
    writeln!(
        c.out,
        "modeled time of the accelerator part: {} (docs/modeled-time.md)",
        report::show_ns(timeline.timeline.now_ns())
    )?;
    if let (Some(path), Some(trace)) = (&args.trace, &timeline.trace) {
        trace.write(path)?;
        writeln!(c.out, "trace written to {}", path.display())?;
    }
    Ok(stats)
}

fn summary<W: Write + ?Sized>(c: &mut Checks<'_, W>, m: &Machine, tally: &Tally) -> Result<()> {
    let smmu = m.p.smmu.stats();
    writeln!(
        c.out,
        "\n{:<10} {:>6} {:>10} {:>22} {:>7} {:>15} {:>13}",
        "device",
        "jobs",
        "DMA bytes",
        "PRI success/inv/fail",
        "stalls",
        "ATC hit rate",
        "ATC invals"
    )?;
    for (name, f, jobs) in [
        (m.zip.info().name.as_str(), &m.zip_fn, tally.zip_jobs),
        (m.dsa.info().name.as_str(), &m.dsa_fn, tally.dsa_jobs),
    ] {
        let s = f.stats();
        let atc = f.atc().stats();
        let rate = if atc.hits + atc.misses == 0 {
            "-".to_string()
        } else {
            format!(
                "{:.1}%",
                100.0 * atc.hits as f64 / (atc.hits + atc.misses) as f64
            )
        };
        writeln!(
            c.out,
            "{name:<10} {jobs:>6} {:>10} {:>22} {:>7} {rate:>15} {:>13}",
            s.bytes_read + s.bytes_written,
            format!(
                "{}/{}/{}",
                s.responses_success, s.responses_invalid, s.responses_failure
            ),
            s.stalls,
            s.atc_invalidations
        )?;
    }
    let lookups = smmu.iotlb_hits + smmu.iotlb_misses;
    writeln!(
        c.out,
        "SMMU: IOTLB hit rate {:.1}% of {lookups} lookups, {} walks, {} page requests, {} stalls, {} CMD_SYNC",
        if lookups == 0 {
            0.0
        } else {
            100.0 * smmu.iotlb_hits as f64 / lookups as f64
        },
        smmu.walks,
        smmu.page_requests,
        smmu.stalls,
        smmu.syncs
    )?;
    writeln!(c.out, "      events {:?}", smmu.events)?;
    Ok(())
}
