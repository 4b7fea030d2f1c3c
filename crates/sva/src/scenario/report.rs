//! The run's report: checks, job results and counters, as stable JSON (`--json`, see
//! docs/report.md) or as a readable summary. Everything in it is derived from the
//! simulation, never from the host's clock, and every map is ordered, so the same file
//! and seed give the same bytes.

use crate::clock::{CostTable, ModeledClock};
use crate::counters::Counters;
use crate::world::World;
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::io::Write;

/// Version of the report's layout; bumped when a field changes meaning or goes away.
pub const REPORT_VERSION: u32 = 1;

/// One check: an `expect` step (all its runs), a step with `expect_error`, a `random`
/// step's verification, or the step that failed unexpectedly.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Check {
    /// The step's `name`, or a description.
    pub name: String,
    /// Whether it held every time it ran.
    pub ok: bool,
    /// What was found (the first failure if any).
    pub detail: String,
    /// The step's line in the file.
    pub line: usize,
    /// How many times it ran (more than once in a repeat).
    pub runs: u64,
    /// How many of those failed.
    pub failures: u64,
}

/// The step that failed unexpectedly and stopped the run.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Failure {
    /// Its line.
    pub line: usize,
    /// What it was.
    pub step: String,
    /// The error's class (see docs/scenarios.md).
    pub class: String,
    /// The error.
    pub message: String,
}

/// The last result of a named job.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct JobReport {
    /// The device it ran on.
    pub device: String,
    /// Its operation.
    pub op: String,
    /// Status class.
    pub status: String,
    /// Device-specific completion code.
    pub code: String,
    /// Bytes produced (compression engine) or completed (data mover).
    pub bytes: u64,
    /// Where it faulted, if it did (hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault_addr: Option<String>,
    /// Times a job of this name was submitted.
    pub submitted: u64,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Layout version.
    pub version: u32,
    /// The scenario's name.
    pub scenario: String,
    /// Every check held and no step failed.
    pub ok: bool,
    /// The seed of the run.
    pub seed: u64,
    /// Steps executed (each repeat iteration counts).
    pub steps_run: u64,
    /// The checks, in the order they first ran.
    pub checks: Vec<Check>,
    /// The step that failed unexpectedly, if one did.
    pub error: Option<Failure>,
    /// Named jobs, by name.
    pub jobs: BTreeMap<String, JobReport>,
    /// Counters since the platform was set up (see docs/report.md).
    pub stats: Value,
}

impl Report {
    /// Pretty JSON with a final newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_else(|e| {
            format!("{{\"ok\": false, \"error\": \"serializing the report: {e}\"}}")
        });
        s.push('\n');
        s
    }
}

/// Per-device counters at some moment.
#[derive(Debug, Clone, Default)]
pub struct DeviceSample {
    bytes_read: u64,
    bytes_written: u64,
    ats_requests: u64,
    page_request_groups: u64,
    page_requests: u64,
    responses: [u64; 3],
    stalls: u64,
    atc_invalidations: u64,
    faults: u64,
    atc_hits: u64,
    atc_misses: u64,
}

/// Every counter of the world at some moment.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The world's counters.
    pub counters: Counters,
    devices: Vec<DeviceSample>,
}

impl Sample {
    /// Samples `w`.
    pub fn take(w: &World) -> Self {
        Self {
            counters: Counters::sample(w),
            devices: w
                .devices
                .iter()
                .map(|d| {
                    let s = d.function.stats();
                    let a = d.function.atc().stats();
                    DeviceSample {
                        bytes_read: s.bytes_read,
                        bytes_written: s.bytes_written,
                        ats_requests: s.ats_requests,
                        page_request_groups: s.page_request_groups,
                        page_requests: s.page_requests,
                        responses: [
                            s.responses_success,
                            s.responses_invalid,
                            s.responses_failure,
                        ],
                        stalls: s.stalls,
                        atc_invalidations: s.atc_invalidations,
                        faults: s.faults,
                        atc_hits: a.hits,
                        atc_misses: a.misses,
                    }
                })
                .collect(),
        }
    }
}

/// The `stats` object: the world's counters since `base`, the modeled time, and a block
/// per device. `jobs` counts the jobs each device ran.
pub fn stats(w: &World, base: &Sample, modeled_time_ns: u64, jobs: &[u64]) -> Value {
    let now = Sample::take(w);
    let names: Vec<(String, &'static str, u32)> = w
        .devices
        .iter()
        .map(|d| {
            (
                d.spec.name.clone(),
                match d.spec.kind {
                    crate::world::Kind::Zip => "zip",
                    crate::world::Kind::Dsa => "dsa",
                },
                d.spec.sid.raw(),
            )
        })
        .collect();
    let pasids_in_use = w.p.sva.as_ref().map_or(0, |s| s.stats().pasids_in_use);
    build(&now, base, modeled_time_ns, pasids_in_use, &names, jobs)
}

fn build(
    now: &Sample,
    base: &Sample,
    modeled_time_ns: u64,
    pasids_in_use: u64,
    devices: &[(String, &'static str, u32)],
    jobs: &[u64],
) -> Value {
    let delta = now.counters.since(&base.counters);
    let mut v = serde_json::to_value(&delta).unwrap_or_else(|_| json!({}));
    let Value::Object(map) = &mut v else {
        return v;
    };
    map.insert("modeled_time_ns".into(), json!(modeled_time_ns));
    map.insert("pasids_in_use".into(), json!(pasids_in_use));
    let mut devs = Map::new();
    for (i, (name, kind, sid)) in devices.iter().enumerate() {
        let n = now.devices.get(i).cloned().unwrap_or_default();
        let b = base.devices.get(i).cloned().unwrap_or_default();
        let d = |a: u64, b: u64| a.saturating_sub(b);
        devs.insert(
            name.clone(),
            json!({
                "kind": kind,
                "sid": sid,
                "jobs": jobs.get(i).copied().unwrap_or(0),
                "dma_bytes": d(n.bytes_read + n.bytes_written, b.bytes_read + b.bytes_written),
                "ats_requests": d(n.ats_requests, b.ats_requests),
                "atc_hits": d(n.atc_hits, b.atc_hits),
                "atc_misses": d(n.atc_misses, b.atc_misses),
                "atc_invalidations": d(n.atc_invalidations, b.atc_invalidations),
                "page_request_groups": d(n.page_request_groups, b.page_request_groups),
                "page_requests": d(n.page_requests, b.page_requests),
                "page_responses": {
                    "success": d(n.responses[0], b.responses[0]),
                    "invalid": d(n.responses[1], b.responses[1]),
                    "failure": d(n.responses[2], b.responses[2]),
                },
                "stalls": d(n.stalls, b.stalls),
                "dma_faults": d(n.faults, b.faults),
            }),
        );
    }
    map.insert("devices".into(), Value::Object(devs));
    v
}

/// The modeled clock of a run, charged step by step: each [`Timeline::charge`] costs what
/// the world's hardware did since the previous one.
#[derive(Debug)]
pub struct Timeline {
    costs: CostTable,
    clock: ModeledClock,
    base: Sample,
    last: Sample,
}

impl Timeline {
    /// A timeline at modeled time 0, starting from what `w` did so far.
    pub fn new(w: &World, costs: CostTable) -> Self {
        let base = Sample::take(w);
        Self {
            costs,
            clock: ModeledClock::default(),
            last: base.clone(),
            base,
        }
    }

    /// Ends a step: returns when it started, what it cost and the counters it moved.
    pub fn charge(&mut self, w: &World) -> (u64, u64, Counters) {
        let now = Sample::take(w);
        let delta = now.counters.since(&self.last.counters);
        let cost = self.costs.cost_ns(&delta);
        self.last = now;
        (self.clock.advance(cost), cost, delta)
    }

    /// Modeled nanoseconds so far.
    pub fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    /// The sample the timeline started from.
    pub fn base(&self) -> &Sample {
        &self.base
    }
}

/// Looks up a dotted path in `stats`; maps of names (`events`, `commands`) give 0 for a
/// name that never occurred.
pub fn lookup(stats: &Value, path: &str) -> Option<u64> {
    let mut cur = stats;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        match cur.get(*p) {
            Some(next) => cur = next,
            None if i == parts.len() - 1
                && i > 0
                && matches!(parts[i - 1], "events" | "commands") =>
            {
                return Some(0);
            }
            None => return None,
        }
    }
    cur.as_u64()
}

/// Whether `path` names a counter of the report (for `expect` steps), given the devices.
pub fn check_counter_path(path: &str, devices: &[String]) -> Result<(), String> {
    let names: Vec<(String, &'static str, u32)> =
        devices.iter().map(|d| (d.clone(), "zip", 0)).collect();
    let jobs = vec![0; devices.len()];
    let empty = Sample {
        counters: Counters::default(),
        devices: vec![DeviceSample::default(); devices.len()],
    };
    let template = build(&empty, &empty, 0, 0, &names, &jobs);
    let parts: Vec<&str> = path.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("counter `{path}`: empty part in the dotted path"));
    }
    let mut cur = &template;
    for (i, p) in parts.iter().enumerate() {
        let prefix = parts[..i].join(".");
        if i > 0 && matches!(parts[i - 1], "events" | "commands") && i == 1 {
            if parts.len() != 2 {
                return Err(format!(
                    "counter `{path}`: {} has one level of names",
                    parts[0]
                ));
            }
            return Ok(());
        }
        match cur.get(*p) {
            Some(next) => cur = next,
            None => {
                let known: Vec<String> = cur
                    .as_object()
                    .map(|m| m.keys().cloned().collect())
                    .unwrap_or_default();
                let what = if prefix.is_empty() {
                    "counter".to_string()
                } else if prefix == "devices" {
                    "device".to_string()
                } else {
                    format!("field of `{prefix}`")
                };
                return Err(format!(
                    "unknown {what} `{p}` in `{path}` (known: {})",
                    known.join(", ")
                ));
            }
        }
    }
    if cur.is_object() {
        let known: Vec<String> = cur
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        if matches!(parts.last(), Some(&"events") | Some(&"commands")) {
            return Err(format!(
                "`{path}` is a map of names: give one, e.g. `{path}.{}`",
                if path.ends_with("events") {
                    "F_TRANSLATION"
                } else {
                    "CMD_SYNC"
                }
            ));
        }
        return Err(format!(
            "`{path}` is a group: use one of {}",
            known.join(", ")
        ));
    }
    if !cur.is_u64() {
        return Err(format!("`{path}` is not a number"));
    }
    Ok(())
}

/// The readable summary of the counters.
pub fn write_summary(out: &mut dyn Write, stats: &Value) -> std::io::Result<()> {
    let g = |p: &str| lookup(stats, p).unwrap_or(0);
    writeln!(
        out,
        "  binds {}, unbinds {}, PASIDs allocated {} ({} in use)",
        g("binds"),
        g("unbinds"),
        g("pasids_allocated"),
        g("pasids_in_use")
    )?;
    writeln!(
        out,
        "  page requests {} in {} groups, responses {}/{}/{} (success/invalid/failure), stalls {}",
        g("page_requests"),
        g("page_request_groups"),
        g("page_responses.success"),
        g("page_responses.invalid"),
        g("page_responses.failure"),
        g("stall_events")
    )?;
    writeln!(
        out,
        "  IOTLB {} hits / {} misses, {} walks; ATC {} hits / {} misses / {} invalidations",
        g("iotlb_hits"),
        g("iotlb_misses"),
        g("walks"),
        g("atc_hits"),
        g("atc_misses"),
        g("atc_invalidations")
    )?;
    writeln!(
        out,
        "  TLBI commands {}, CMD_SYNC {}, DMA {} bytes, CPU faults {}, modeled time {}",
        g("tlbi_commands"),
        g("sync_commands"),
        g("dma_bytes"),
        g("cpu_faults"),
        show_ns(g("modeled_time_ns"))
    )?;
    if let Some(ev) = stats.get("events").and_then(Value::as_object)
        && !ev.is_empty()
    {
        let list: Vec<String> = ev.iter().map(|(k, v)| format!("{k} {v}")).collect();
        writeln!(out, "  events: {}", list.join(", "))?;
    }
    if let Some(devs) = stats.get("devices").and_then(Value::as_object) {
        for (name, d) in devs {
            let n = |k: &str| lookup(d, k).unwrap_or(0);
            writeln!(
                out,
                "  device {name} ({}): {} jobs, DMA {} bytes, page requests {} (responses {}/{}/{}), stalls {}, ATC {}/{} hit/miss, {} invalidations",
                d.get("kind").and_then(Value::as_str).unwrap_or("?"),
                n("jobs"),
                n("dma_bytes"),
                n("page_requests"),
                n("page_responses.success"),
                n("page_responses.invalid"),
                n("page_responses.failure"),
                n("stalls"),
                n("atc_hits"),
                n("atc_misses"),
                n("atc_invalidations"),
            )?;
        }
    }
    Ok(())
}

/// Modeled nanoseconds for people.
pub fn show_ns(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.3} s", ns as f64 / 1e9)
    } else if ns >= 1_000_000 {
        format!("{:.3} ms", ns as f64 / 1e6)
    } else if ns >= 1_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{ns} ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_paths_are_checked_against_the_report() {
        let devs = vec!["zip0".to_string()];
        assert!(check_counter_path("page_requests", &devs).is_ok());
        assert!(check_counter_path("page_responses.success", &devs).is_ok());
        assert!(check_counter_path("events.F_TRANSLATION", &devs).is_ok());
        assert!(check_counter_path("commands.CMD_SYNC", &devs).is_ok());
        assert!(check_counter_path("devices.zip0.page_requests", &devs).is_ok());
        assert!(check_counter_path("devices.zip0.page_responses.invalid", &devs).is_ok());
        assert!(check_counter_path("modeled_time_ns", &devs).is_ok());
        assert!(check_counter_path("page_responses", &devs).is_err());
        assert!(check_counter_path("devices.dsa0.stalls", &devs).is_err());
        assert!(check_counter_path("devices.zip0.kind", &devs).is_err());
        assert!(check_counter_path("nonsense", &devs).is_err());
        assert!(check_counter_path("events", &devs).is_err());
        assert!(check_counter_path("events.A.B", &devs).is_err());
        assert!(check_counter_path("", &devs).is_err());
    }

    #[test]
    fn lookup_gives_zero_for_names_that_never_occurred() {
        let v =
            json!({"events": {"F_PERMISSION": 2}, "binds": 3, "page_responses": {"success": 1}});
        assert_eq!(lookup(&v, "events.F_PERMISSION"), Some(2));
        assert_eq!(lookup(&v, "events.F_TRANSLATION"), Some(0));
        assert_eq!(lookup(&v, "binds"), Some(3));
        assert_eq!(lookup(&v, "page_responses.success"), Some(1));
        assert_eq!(lookup(&v, "unbinds"), None);
    }
}
