//! Chrome trace-event JSON on the modeled clock (opens in Perfetto and chrome://tracing):
//! one track per process and per device, complete events ("X") for steps and jobs,
//! instant events ("i") for single happenings, metadata events naming the tracks.

use anyhow::{Context, Result};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

/// A track: a (process, thread) pair of the trace format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Track {
    pid: u32,
    tid: u32,
}

/// A trace being built. Timestamps are modeled nanoseconds.
#[derive(Debug, Default)]
pub struct Trace {
    groups: BTreeMap<String, u32>,
    tracks: BTreeMap<(String, String), Track>,
    events: Vec<Value>,
}

/// Trace-event timestamps are microseconds; modeled nanoseconds become fractions.
fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

impl Trace {
    /// An empty trace.
    pub fn new() -> Self {
        Self::default()
    }

    /// The track `name` in the group `group` (e.g. group "devices", name "zip0"),
    /// created on first use.
    pub fn track(&mut self, group: &str, name: &str) -> Track {
        if let Some(t) = self.tracks.get(&(group.to_string(), name.to_string())) {
            return *t;
        }
        let next_pid = self.groups.len() as u32 + 1;
        let pid = *self.groups.entry(group.to_string()).or_insert_with(|| {
            self.events.push(json!({
                "ph": "M", "name": "process_name", "pid": next_pid, "tid": 0,
                "args": {"name": group}
            }));
            next_pid
        });
        let tid = self.tracks.values().filter(|t| t.pid == pid).count() as u32 + 1;
        let track = Track { pid, tid };
        self.events.push(json!({
            "ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
            "args": {"name": name}
        }));
        self.tracks
            .insert((group.to_string(), name.to_string()), track);
        track
    }

    /// A span of `dur_ns` from `start_ns` on `track`.
    pub fn span(&mut self, track: Track, name: &str, start_ns: u64, dur_ns: u64, args: &Value) {
        self.events.push(json!({
            "ph": "X", "name": name, "pid": track.pid, "tid": track.tid,
            "ts": us(start_ns), "dur": us(dur_ns), "args": args
        }));
    }

    /// A single happening at `at_ns` on `track`.
    pub fn instant(&mut self, track: Track, name: &str, at_ns: u64, args: &Value) {
        self.events.push(json!({
            "ph": "i", "s": "t", "name": name, "pid": track.pid, "tid": track.tid,
            "ts": us(at_ns), "args": args
        }));
    }

    /// Events recorded (metadata included).
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The trace as JSON text.
    pub fn to_json(&self) -> String {
        json!({"traceEvents": self.events, "displayTimeUnit": "ns"}).to_string()
    }

    /// Writes the trace to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_json())
            .with_context(|| format!("writing the trace to {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_are_named_once_and_events_carry_modeled_microseconds() {
        let mut t = Trace::new();
        let a = t.track("devices", "zip0");
        let b = t.track("devices", "dsa0");
        let p = t.track("processes", "a");
        assert_eq!(t.track("devices", "zip0"), a);
        assert_ne!(a, b);
        t.span(a, "compress", 1_500, 2_000, &json!({"bytes": 10}));
        t.instant(p, "munmap", 4_000, &json!({}));
        let v: Value = serde_json::from_str(&t.to_json()).unwrap();
        let ev = v["traceEvents"].as_array().unwrap();
        // Two groups, three tracks, two events.
        assert_eq!(ev.len(), 2 + 3 + 2);
        let span = ev.iter().find(|e| e["ph"] == "X").unwrap();
        assert_eq!(span["ts"], 1.5);
        assert_eq!(span["dur"], 2.0);
        assert_eq!(span["tid"], a.tid);
        let names: Vec<&str> = ev
            .iter()
            .filter(|e| e["name"] == "thread_name")
            .map(|e| e["args"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["zip0", "dsa0", "a"]);
    }
}
