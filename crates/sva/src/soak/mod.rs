//! `sva soak`: a long seeded random workload over both accelerators with a shadow model of
//! every process's buffers (see docs/soak.md). A violation stops the run with exit status 1.

mod workload;

use anyhow::Result;
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use workload::Soak;

/// Options of `sva soak`.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// Stop after this many seconds (60 when neither --seconds nor --ops is given).
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Stop after this many operations (whichever of --ops and --seconds comes first).
    #[arg(long)]
    pub ops: Option<u64>,
    /// Seed of the operation sequence.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// A step that makes no progress for this long is a hang: the run reports it and exits 1.
const WATCHDOG: Duration = Duration::from_secs(120);

/// Runs the soak; `Ok(false)` after a violation (already reported on stderr).
pub fn run<W: Write>(args: &SoakArgs, out: &mut W) -> Result<bool> {
    let limit = match (args.seconds, args.ops) {
        (None, None) => Some(Duration::from_secs(60)),
        (s, _) => s.map(Duration::from_secs_f64),
    };
    let mut soak = Soak::new(args.seed)?;
    let t0 = Instant::now();

    // The watchdog: every wait in the workload has a timeout, this catches the rest.
    let progress = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (progress, done) = (progress.clone(), done.clone());
        std::thread::Builder::new()
            .name("soak-watchdog".into())
            .spawn(move || {
                let (mut seen, mut since) = (0, Instant::now());
                while !done.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(100));
                    let now = progress.load(Ordering::Acquire);
                    if now != seen {
                        (seen, since) = (now, Instant::now());
                    } else if since.elapsed() > WATCHDOG {
                        eprintln!(
                            "sva soak: violation at step {}: no progress for {WATCHDOG:?} (hang)",
                            now + 1
                        );
                        std::process::exit(1);
                    }
                }
            })?
    };

    let tty = std::io::stderr().is_terminal();
    let mut last_progress = Instant::now();
    let mut result = Ok(());
    loop {
        if args.ops.is_some_and(|n| soak.step >= n) || limit.is_some_and(|l| t0.elapsed() >= l) {
            break;
        }
        if let Err(v) = soak.step() {
            result = Err(v);
            break;
        }
        progress.store(soak.step, Ordering::Release);
        if tty && last_progress.elapsed() >= Duration::from_millis(500) {
            last_progress = Instant::now();
            let secs = t0.elapsed().as_secs_f64();
            eprint!(
                "\rsoak: {:.0} s, {} ops ({:.0}/s), {} processes, {} jobs   ",
                secs,
                soak.step,
                soak.step as f64 / secs,
                soak.procs.len(),
                soak.tally.zip_jobs + soak.tally.dsa_jobs
            );
        }
    }
    if result.is_ok() {
        result = soak.finish();
    }
    done.store(true, Ordering::Release);
    let _ = watchdog.join();
    if tty {
        eprintln!();
    }
    let secs = t0.elapsed().as_secs_f64();
    let violation = result.as_ref().err().map(ToString::to_string);
    if let Some(v) = &violation {
        eprintln!("sva soak: {v}");
    }
    summary(args, &soak, secs, violation.as_deref(), out)?;
    Ok(violation.is_none())
}

fn summary<W: Write>(
    args: &SoakArgs,
    soak: &Soak,
    secs: f64,
    violation: Option<&str>,
    out: &mut W,
) -> Result<()> {
    let t = &soak.tally;
    let (zip, dsa) = (
        soak.w.devices[0].function.stats(),
        soak.w.devices[1].function.stats(),
    );
    let atc = soak.w.devices[0].function.atc().stats();
    let smmu = soak.p.smmu.stats();
    let ops = soak.step;
    if args.json {
        let v = json!({
            "seed": args.seed,
            "seconds": secs,
            "ops": ops,
            "ops_per_second": ops as f64 / secs,
            "violations": u32::from(violation.is_some()),
            "violation": violation,
            "tally": t,
            "zip": {"dma_bytes": zip.bytes_read + zip.bytes_written,
                    "page_requests": zip.page_requests, "prg": zip.page_request_groups,
                    "responses_success": zip.responses_success,
                    "responses_invalid": zip.responses_invalid,
                    "responses_failure": zip.responses_failure,
                    "atc_invalidations": zip.atc_invalidations, "atc_hits": atc.hits,
                    "atc_misses": atc.misses},
            "dsa": {"dma_bytes": dsa.bytes_read + dsa.bytes_written, "stalls": dsa.stalls},
            "smmu": {"page_requests": smmu.page_requests, "stalls": smmu.stalls,
                     "walks": smmu.walks, "iotlb_invalidations": smmu.iotlb_invalidations,
                     "syncs": smmu.syncs, "events": smmu.events},
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "soak seed {}: {ops} operations in {secs:.1} s ({:.0} ops/s), {}",
        args.seed,
        ops as f64 / secs,
        if violation.is_some() {
            "1 violation"
        } else {
            "no violations"
        }
    )?;
    let list = |m: &std::collections::BTreeMap<&str, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(out, "operations: {}", list(&t.ops))?;
    writeln!(out, "outcomes: {}", list(&t.outcomes))?;
    writeln!(
        out,
        "jobs: zip {}, dsa {}, {} input bytes; CPU wrote {} bytes; up to {} processes",
        t.zip_jobs, t.dsa_jobs, t.job_bytes, t.cpu_bytes_written, t.max_processes
    )?;
    writeln!(
        out,
        "devices: zip DMA {} bytes, {} page requests ({} groups; {}/{}/{} success/invalid/failure), \
         {} ATC invalidations; dsa DMA {} bytes, {} stalls",
        zip.bytes_read + zip.bytes_written,
        zip.page_requests,
        zip.page_request_groups,
        zip.responses_success,
        zip.responses_invalid,
        zip.responses_failure,
        zip.atc_invalidations,
        dsa.bytes_read + dsa.bytes_written,
        dsa.stalls
    )?;
    writeln!(
        out,
        "SMMU: {} page requests, {} stalls, {} walks, {} IOTLB invalidations, {} CMD_SYNC",
        smmu.page_requests, smmu.stalls, smmu.walks, smmu.iotlb_invalidations, smmu.syncs
    )?;
    writeln!(
        out,
        "checks: {} pages compared with the shadow, {} full checks, {} released frames absent \
         from every ATC ({} still allocated, not checked), final balance {}",
        t.pages_checked,
        t.full_checks,
        t.freed_frames_checked,
        t.frames_still_allocated,
        if violation.is_some() {
            "not reached or failed"
        } else {
            "ok"
        }
    )?;
    Ok(())
}
