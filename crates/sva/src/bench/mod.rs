//! `sva bench`: the benchmark suite. Every figure is measured next to the host doing the
//! same work in the same run (see docs/performance.md, "sva bench").
//!
//! Each measurement lives in a module of its own ([`smmu`], [`dma_copy`], [`iopf`],
//! [`unmap`], [`bind`], [`zip`]) that builds what it needs, checks that the set-up does
//! what the figure claims (the IOTLB hits or misses, the DMA faults, the ATCs hold the
//! page...) and times it with [`harness::Harness`]. A measurement that cannot run is
//! reported (stderr, and `errors` in the JSON) and the command exits 1; a goal that is not
//! met is only reported.

mod bind;
mod dma_copy;
mod harness;
mod iopf;
mod smmu;
mod unmap;
mod zip;

use anyhow::Result;
use harness::{Harness, Stats};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Options of `sva bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Fewer samples and a 16 MiB copy instead of 64 MiB: finishes in under a minute.
    #[arg(long)]
    pub quick: bool,
}

/// How much the suite measures.
#[derive(Debug, Clone, Copy)]
struct Settings {
    harness: Harness,
    /// Bytes of the data-mover copy.
    copy_size: u64,
}

impl Settings {
    fn new(args: &BenchArgs) -> Self {
        if args.quick {
            Self {
                harness: Harness {
                    samples: 10,
                    warmup: Duration::from_millis(100),
                    batch: Duration::from_millis(5),
                },
                copy_size: 16 << 20,
            }
        } else {
            Self {
                harness: Harness {
                    samples: 40,
                    warmup: Duration::from_millis(500),
                    batch: Duration::from_millis(20),
                },
                copy_size: 64 << 20,
            }
        }
    }
}

/// What a measurement module produced: figures (keys of [`METRICS`]) and the timings
/// behind them.
#[derive(Debug, Default)]
struct Outcome {
    figures: Vec<(&'static str, f64)>,
    timings: Vec<(&'static str, Stats)>,
}

impl Outcome {
    fn figure(&mut self, key: &'static str, value: f64) {
        self.figures.push((key, value));
    }

    fn timing(&mut self, name: &'static str, stats: Stats) {
        self.timings.push((name, stats));
    }
}

/// Progress lines on stderr, when it is a terminal.
#[derive(Debug)]
struct Progress {
    enabled: bool,
}

impl Progress {
    fn say(&self, what: &str) {
        if self.enabled {
            eprintln!("sva bench: {what}");
        }
    }
}

/// A goal for a figure.
#[derive(Debug, Clone, Copy)]
enum Goal {
    AtMost(f64),
    AtLeast(f64),
}

impl Goal {
    fn met(self, value: f64) -> bool {
        match self {
            Self::AtMost(g) => value <= g,
            Self::AtLeast(g) => value >= g,
        }
    }

    fn text(self) -> String {
        match self {
            Self::AtMost(g) => format!("<= {g}"),
            Self::AtLeast(g) => format!(">= {g}"),
        }
    }
}

/// One reported figure.
#[derive(Debug)]
struct Metric {
    key: &'static str,
    unit: &'static str,
    goal: Option<Goal>,
    /// The host figure it is compared with (a key of this table), or `None`.
    host: Option<&'static str>,
    /// What the host figure is, for host figures.
    host_what: Option<&'static str>,
}

const fn metric(
    key: &'static str,
    unit: &'static str,
    goal: Option<Goal>,
    host: Option<&'static str>,
) -> Metric {
    Metric {
        key,
        unit,
        goal,
        host,
        host_what: None,
    }
}

const fn host(key: &'static str, unit: &'static str, what: &'static str) -> Metric {
    Metric {
        key,
        unit,
        goal: None,
        host: None,
        host_what: Some(what),
    }
}

/// Every figure, in the order of the table.
const METRICS: &[Metric] = &[
    metric(
        "iotlb_hit_ns",
        "ns",
        Some(Goal::AtMost(20.0)),
        Some("host_hashmap_lookup_ns"),
    ),
    metric("walk_ns", "ns", None, Some("host_hashmap_lookup_ns")),
    host("host_hashmap_lookup_ns", "ns", "one HashMap lookup"),
    metric(
        "dma_copy_vs_memcpy",
        "x",
        Some(Goal::AtLeast(0.5)),
        Some("memcpy_gib_s"),
    ),
    metric("dma_copy_gib_s", "GiB/s", None, Some("memcpy_gib_s")),
    host("memcpy_gib_s", "GiB/s", "memcpy, same size"),
    metric("iopf_us", "us", None, Some("host_minor_fault_us")),
    metric(
        "iopf_vs_host_fault",
        "x",
        Some(Goal::AtMost(5.0)),
        Some("host_minor_fault_us"),
    ),
    host("host_minor_fault_us", "us", "minor fault, first store"),
    metric(
        "unmap_invalidate_us",
        "us",
        Some(Goal::AtMost(5.0)),
        Some("host_munmap_us"),
    ),
    host("host_munmap_us", "us", "munmap of one touched page"),
    metric(
        "bind_unbind_per_s",
        "1/s",
        Some(Goal::AtLeast(100_000.0)),
        None,
    ),
    metric("zip_vs_cpu", "x", None, Some("host_flate2_mib_s")),
    metric("zip_mib_s", "MiB/s", None, Some("host_flate2_mib_s")),
    host("host_flate2_mib_s", "MiB/s", "flate2 level 6, one core"),
];

/// The measurements, by name: each gives the settings and progress to its module.
type Run = fn(&Settings, &Progress) -> Result<Outcome>;
const SUITE: &[(&str, Run)] = &[
    ("smmu", |s, p| smmu::measure(&s.harness, p)),
    ("dma_copy", |s, p| {
        dma_copy::measure(&s.harness, p, s.copy_size)
    }),
    ("iopf", |s, p| iopf::measure(&s.harness, p)),
    ("unmap", |s, p| unmap::measure(&s.harness, p)),
    ("bind", |s, p| bind::measure(&s.harness, p)),
    ("zip", |s, p| zip::measure(&s.harness, p)),
];

/// Runs the suite and prints the table (or the JSON object) to `out`. `Ok(true)` when
/// every measurement ran; the ones that could not are reported on stderr.
pub fn run(args: &BenchArgs, out: &mut dyn Write) -> Result<bool> {
    let settings = Settings::new(args);
    let progress = Progress {
        enabled: std::io::stderr().is_terminal(),
    };
    if cfg!(debug_assertions) {
        eprintln!("sva bench: this is a debug build; use --release for meaningful figures");
    }
    let start = Instant::now();
    let mut results: BTreeMap<&'static str, f64> = BTreeMap::new();
    let mut timings: Vec<(&'static str, Stats)> = Vec::new();
    let mut errors: Vec<(&'static str, String)> = Vec::new();
    for (name, measure) in SUITE {
        match measure(&settings, &progress) {
            Ok(o) => {
                results.extend(o.figures);
                timings.extend(o.timings);
            }
            Err(e) => {
                eprintln!("sva bench: {name}: could not measure: {e:#}");
                errors.push((name, format!("{e:#}")));
            }
        }
    }
    let elapsed = start.elapsed();
    let machine = machine();
    if args.json {
        let report = json_report(args, &settings, &machine, &results, &timings, &errors);
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        print_table(args, &settings, &machine, &results, &timings, out)?;
        writeln!(out, "\nsuite ran in {:.1} s", elapsed.as_secs_f64())?;
        for (name, _) in &errors {
            writeln!(out, "not measured: {name} (see the error above)")?;
        }
    }
    Ok(errors.is_empty())
}

/// The machine: cores, OS, kernel, architecture, CPU model (when /proc says).
fn machine() -> Map<String, Value> {
    let mut m = Map::new();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    m.insert("cores".into(), json!(cores));
    m.insert("os".into(), json!(std::env::consts::OS));
    m.insert("arch".into(), json!(std::env::consts::ARCH));
    if let Ok(k) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        m.insert("kernel".into(), json!(k.trim()));
    }
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
    });
    if let Some(cpu) = cpu {
        m.insert("cpu".into(), json!(cpu));
    }
    m
}

/// `v` with four significant digits.
fn round4(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let scale = 10f64.powi(3 - v.abs().log10().floor() as i32);
    (v * scale).round() / scale
}

/// A figure for the table: four significant digits, no exponent.
fn show(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn mode(args: &BenchArgs) -> &'static str {
    if args.quick { "quick" } else { "full" }
}

fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// The JSON object: machine, mode, results, goals, and the timings behind the results.
fn json_report(
    args: &BenchArgs,
    settings: &Settings,
    machine: &Map<String, Value>,
    results: &BTreeMap<&'static str, f64>,
    timings: &[(&'static str, Stats)],
    errors: &[(&'static str, String)],
) -> Value {
    let mut res = Map::new();
    let mut goals = Map::new();
    for m in METRICS {
        let Some(&v) = results.get(m.key) else {
            continue;
        };
        res.insert(m.key.into(), json!(round4(v)));
        if let Some(g) = m.goal {
            goals.insert(m.key.into(), json!({"goal": g.text(), "met": g.met(v)}));
        }
    }
    let mut times = Map::new();
    for (name, s) in timings {
        times.insert(
            (*name).into(),
            json!({
                "median_ns": round4(s.median_ns),
                "min_ns": round4(s.min_ns),
                "samples": s.samples,
                "iters_per_sample": s.iters,
            }),
        );
    }
    let mut report = Map::new();
    report.insert("machine".into(), Value::Object(machine.clone()));
    report.insert("quick".into(), json!(args.quick));
    report.insert("profile".into(), json!(profile()));
    report.insert("samples".into(), json!(settings.harness.samples));
    report.insert("results".into(), Value::Object(res));
    report.insert("goals".into(), Value::Object(goals));
    report.insert("timings".into(), Value::Object(times));
    if !errors.is_empty() {
        let errs: Map<String, Value> = errors
            .iter()
            .map(|(n, e)| ((*n).to_owned(), json!(e)))
            .collect();
        report.insert("errors".into(), Value::Object(errs));
    }
    Value::Object(report)
}

/// The readable table: name, value, unit, goal, met or not, host reference; then the
/// median and minimum of every timing.
fn print_table(
    args: &BenchArgs,
    settings: &Settings,
    machine: &Map<String, Value>,
    results: &BTreeMap<&'static str, f64>,
    timings: &[(&'static str, Stats)],
    out: &mut dyn Write,
) -> Result<()> {
    let field = |k: &str| machine.get(k).map(|v| v.to_string().replace('"', ""));
    writeln!(
        out,
        "sva bench ({}, {} build, {} samples per timing): {} cores, {} {} {}, {}",
        mode(args),
        profile(),
        settings.harness.samples,
        field("cores").unwrap_or_default(),
        field("os").unwrap_or_default(),
        field("arch").unwrap_or_default(),
        field("kernel").unwrap_or_default(),
        field("cpu").unwrap_or_else(|| "CPU model unknown".into()),
    )?;
    writeln!(
        out,
        "\n{:<24} {:>10} {:<6} {:<10} {:<8} host reference (same run)",
        "name", "value", "unit", "goal", "met"
    )?;
    let mut met = 0;
    let mut with_goal = 0;
    for m in METRICS {
        let Some(&v) = results.get(m.key) else {
            writeln!(out, "{:<24} {:>10}", m.key, "not run")?;
            continue;
        };
        let (goal, ok) = match m.goal {
            Some(g) => {
                with_goal += 1;
                if g.met(v) {
                    met += 1;
                }
                (g.text(), if g.met(v) { "met" } else { "NOT met" })
            }
            None => ("-".into(), "-"),
        };
        let reference = match (m.host, m.host_what) {
            (_, Some(what)) => format!("(host: {what})"),
            (Some(h), None) => match (results.get(h), METRICS.iter().find(|x| x.key == h)) {
                (Some(&hv), Some(hm)) => format!(
                    "{} {} {}",
                    show(hv),
                    hm.unit,
                    hm.host_what.unwrap_or_default()
                ),
                _ => "not run".into(),
            },
            (None, None) => "-".into(),
        };
        writeln!(
            out,
            "{:<24} {:>10} {:<6} {:<10} {:<8} {reference}",
            m.key,
            show(v),
            m.unit,
            goal,
            ok
        )?;
    }
    writeln!(out, "\ngoals met: {met} of {with_goal}")?;
    writeln!(
        out,
        "\n{:<24} {:>12} {:>12} {:>8} {:>12}",
        "timing (per iteration)", "median ns", "min ns", "samples", "iters/sample"
    )?;
    for (name, s) in timings {
        writeln!(
            out,
            "{:<24} {:>12} {:>12} {:>8} {:>12}",
            name,
            show(s.median_ns),
            show(s.min_ns),
            s.samples,
            s.iters
        )?;
    }
    Ok(())
}
