//! The demo through the binary: the narrative (what `cargo run --release` prints), the JSON
//! report with the keys docs/report.md promises, the trace, and the exit statuses.

mod common;

use common::U64_STATS;
use std::process::Command;

fn sva(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sva"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn no_arguments_runs_the_demo_and_every_check_holds() {
    let out = sva(&[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("0 checks failed"), "{text}");
    assert!(!text.contains("FAILED"), "{text}");
}

#[test]
fn the_json_report_and_the_trace() {
    let dir = std::env::temp_dir().join(format!("sva-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("trace.json");
    let out = sva(&[
        "demo",
        "--json",
        "--seed",
        "5",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["seed"], 5);
    let checks = v["checks"].as_array().unwrap();
    assert!(checks.len() > 20);
    assert!(
        checks
            .iter()
            .all(|c| c["ok"] == true && c["name"].is_string())
    );
    let stats = &v["stats"];
    for key in U64_STATS {
        assert!(stats[key].is_u64(), "stats.{key} missing: {stats}");
    }
    for key in ["success", "invalid", "failure"] {
        assert!(stats["page_responses"][key].is_u64());
    }
    assert!(stats["events"].is_object());
    assert!(stats["binds"].as_u64().unwrap() >= 5);
    assert!(stats["modeled_time_ns"].as_u64().unwrap() > 0);
    let t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let events = t["traceEvents"].as_array().unwrap();
    assert!(events.iter().any(|e| e["ph"] == "X"), "{t}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unusable_arguments_exit_2() {
    assert_eq!(sva(&["no-such-command"]).status.code(), Some(2));
    assert_eq!(sva(&["demo", "--seed", "x"]).status.code(), Some(2));
    assert_eq!(sva(&["--help"]).status.code(), Some(0));
}
