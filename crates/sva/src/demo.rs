//! The demo: every step prints what happened and checks it; the run fails if a check does.

use anyhow::{Context, Result};
use std::io::Write;
use std::sync::{Arc, Mutex};
use sva_mm::{AccessKind, InvalidateRange, MapFlags, MmConfig, MmuNotifier, Prot, System};
use sva_physmem::{PhysMemory, Ram};
use sva_vmsa::{Access, AccessKind as Kind, Httu};

/// Logs every invalidation it is told about, like an IOMMU would act on them.
#[derive(Default)]
struct Log(Mutex<Vec<String>>);

impl MmuNotifier for Log {
    fn invalidate_range_end(&self, r: &InvalidateRange) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!(
                "{:?} [{}, {}) asid {}",
                r.reason, r.start, r.end, r.asid
            ));
    }
}

pub(crate) struct Checks<'a, W: Write + ?Sized> {
    pub(crate) out: &'a mut W,
    failed: usize,
    /// Every check so far: what it claims, whether it held.
    pub(crate) list: Vec<(String, bool)>,
}

impl<W: Write + ?Sized> Checks<'_, W> {
    pub(crate) fn check(&mut self, ok: bool, what: &str) -> Result<()> {
        if !ok {
            self.failed += 1;
        }
        self.list.push((what.to_string(), ok));
        writeln!(self.out, "  [{}] {what}", if ok { "ok" } else { "FAILED" })?;
        Ok(())
    }
}

/// Options of `sva demo`.
#[derive(Debug, Default, clap::Args)]
pub struct DemoArgs {
    /// Print the report as JSON (docs/report.md) instead of the narrative.
    #[arg(long)]
    pub json: bool,
    /// Seed of the data the second process compresses.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write a Chrome trace-event file of the accelerator part on the modeled clock.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<std::path::PathBuf>,
}

/// Runs the demo as `args` say: the narrative to `out`, or the JSON report.
pub fn run_with(args: &DemoArgs, out: &mut dyn Write) -> Result<bool> {
    if !args.json {
        return run(args, out);
    }
    let mut narrative = Vec::new();
    let mut c = Checks {
        out: &mut narrative,
        failed: 0,
        list: Vec::new(),
    };
    let stats = run_checks(args, &mut c)?;
    let ok = c.failed == 0;
    let report = serde_json::json!({
        "version": sva::scenario::report::REPORT_VERSION,
        "scenario": "demo",
        "ok": ok,
        "seed": args.seed,
        "checks": c.list.iter().map(|(name, ok)| serde_json::json!({
            "name": name, "ok": ok, "detail": if *ok { "held" } else { "did not hold" },
        })).collect::<Vec<_>>(),
        "stats": stats,
    });
    writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    Ok(ok)
}

/// Runs the demo, writing its narrative to `out`. Returns whether every check held.
pub fn run(args: &DemoArgs, out: &mut dyn Write) -> Result<bool> {
    let mut c = Checks {
        out,
        failed: 0,
        list: Vec::new(),
    };
    run_checks(args, &mut c)?;
    Ok(c.failed == 0)
}

/// Every part of the demo; returns the accelerator part's counters (the report's
/// `stats`).
fn run_checks<W: Write + ?Sized>(
    args: &DemoArgs,
    c: &mut Checks<'_, W>,
) -> Result<serde_json::Value> {
    let ram = Arc::new(Ram::with_default_size());
    let sys = System::new(ram.clone(), MmConfig::default())?;
    let rw = Prot::READ | Prot::WRITE;
    writeln!(
        c.out,
        "sva demo: simulated RAM, VMSAv8-64 tables, CPU address spaces"
    )?;
    writeln!(
        c.out,
        "RAM {} GiB (sparse), {} frames in use",
        ram.size() >> 30,
        ram.stats().used_frames
    )?;

    let p = sys.spawn()?;
    let cfg = p.table_config();
    writeln!(
        c.out,
        "\nprocess {}: ASID {}, TTBR0 {}, {}-bit VA, {} KiB pages (T0SZ {}, TG0 {:#04b})",
        p.pid(),
        p.asid(),
        p.table_root(),
        cfg.ia_bits(),
        cfg.page_size() >> 10,
        cfg.t0sz(),
        cfg.granule().tg0()
    )?;
    let buf = p.mmap(
        None,
        256 << 10,
        rw,
        MapFlags::PRIVATE | MapFlags::NOHUGEPAGE,
    )?;
    let used0 = ram.stats().used_frames;
    writeln!(
        c.out,
        "mmap 256 KiB private rw at {buf}: {used0} frames in use"
    )?;
    let msg = b"shared virtual addressing";
    p.write(buf + 0x1ff0, msg)?;
    let mut back = vec![0u8; msg.len()];
    p.read(buf + 0x1ff0, &mut back)?;
    c.check(back == msg, "a store across a page boundary reads back")?;
    let tables = p.table().table_count(&*ram)?;
    c.check(
        p.stats().faults == 2 && p.resident_bytes()? == 2 * cfg.page_size(),
        &format!("two demand faults map two pages; the table now has {tables} table frames"),
    )?;

    let target = buf + 0x2000;
    let access = Access {
        kind: Kind::Write,
        privileged: false,
    };
    let t = p
        .table()
        .walk(&*ram, target, access, Httu::default())
        .map_err(|f| anyhow::anyhow!("{f}"))?;
    writeln!(
        c.out,
        "walk {target} (write, EL0): level {} page of {} KiB -> PA {}, descriptor {:#018x}, perms {:?}",
        t.level,
        t.size >> 10,
        t.pa,
        t.desc.into_bits(),
        t.perms
    )?;
    let fault = p
        .table()
        .walk(&*ram, buf + 0x8000, access, Httu::default())
        .err();
    writeln!(c.out, "walk {} (never touched): {fault:?}", buf + 0x8000)?;
    c.check(
        fault.is_some(),
        "an untouched page is a translation fault to the walker",
    )?;

    let huge = p.mmap(None, 4 << 20, rw, MapFlags::PRIVATE)?;
    p.fill(huge, 0xab, 4 << 20)?;
    let leaf = p.table().lookup(&*ram, huge)?.context("block mapped")?;
    writeln!(
        c.out,
        "mmap 4 MiB at {huge} and fill: {} block faults, leaf at level {} of {} MiB",
        p.stats().thp_faults,
        leaf.level,
        leaf.size >> 20
    )?;
    c.check(
        leaf.size == 2 << 20,
        "aligned anonymous memory is mapped with 2 MiB blocks",
    )?;

    let log = Arc::new(Log::default());
    p.register_notifier(log.clone())?;
    writeln!(
        c.out,
        "\nfork: an MMU notifier is registered on process {}",
        p.pid()
    )?;
    let child = sys.fork(p.pid())?;
    let pa = p.translate(target, AccessKind::Read)?.context("mapped")?;
    c.check(
        child.translate(target, AccessKind::Read)? == Some(pa) && ram.refcount(pa)? == 2,
        "parent and child share the frame, refcount 2",
    )?;
    child.write(buf + 0x1ff0, b"child")?;
    p.read(buf + 0x1ff0, &mut back)?;
    c.check(
        back == msg,
        "the child's store broke copy-on-write; the parent's data is intact",
    )?;
    p.write(buf + 0x1000, b"parent")?;
    c.check(
        p.stats().cow_reuses == 1 && p.stats().cow_breaks == 0,
        "the parent's store to that page reused its now-exclusive frame",
    )?;
    sys.exit(child.pid())?;
    writeln!(c.out, "child {} exited", child.pid())?;

    let swapped = p.reclaim(buf, 256 << 10)?;
    let moved_from = p.translate(huge, AccessKind::Read)?.context("mapped")?;
    let moved_to = p.migrate(huge)?;
    writeln!(
        c.out,
        "reclaim: {swapped} pages to swap; migrate {huge}: {moved_from} -> {moved_to}"
    )?;
    p.read(buf + 0x1ff0, &mut back)?;
    c.check(back == msg, "swapped-out data comes back on the next fault")?;
    let mut b = [0u8; 1];
    p.read(huge, &mut b)?;
    c.check(b[0] == 0xab, "migrated data is intact")?;
    writeln!(c.out, "the notifier saw:")?;
    for line in log.0.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        writeln!(c.out, "    {line}")?;
    }

    let ro = p.mmap(None, 4096, Prot::READ, MapFlags::PRIVATE)?;
    match p.write(ro, b"x") {
        Err(e) => writeln!(c.out, "store to a read-only mapping: {e}")?,
        Ok(()) => c.check(false, "a store to a read-only mapping must fault")?,
    }
    c.check(
        ram.stats().used_frames > used0,
        &format!("{} frames in use before exit", ram.stats().used_frames),
    )?;
    sys.exit(p.pid())?;
    c.check(
        ram.stats().used_frames == 0 && sys.swap_stats().used == 0,
        "after the exits every frame and swap slot is free",
    )?;
    crate::sva_demo::run(c)?;
    let stats = crate::accel_demo::run(c, args)?;
    writeln!(
        c.out,
        "\n{} checks failed; frames allocated over the run: {}, peak {}",
        c.failed,
        ram.stats().total_allocations,
        ram.stats().peak_used_frames
    )?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    #[test]
    fn demo_checks_hold() {
        let mut out = Vec::new();
        let ok = super::run(&super::DemoArgs::default(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(ok, "{text}");
        assert!(!text.contains("FAILED"));
    }
}
