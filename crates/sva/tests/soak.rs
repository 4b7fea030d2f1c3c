//! `sva soak`: a short seeded run is clean, quick and reproducible.

use std::process::Command;
use std::time::{Duration, Instant};

fn soak(args: &[&str]) -> (i32, String, String, Duration) {
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_sva"))
        .arg("soak")
        .args(args)
        .output()
        .expect("sva runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        t0.elapsed(),
    )
}

/// The line of the summary that counts operations by kind.
fn operations(summary: &str) -> String {
    summary
        .lines()
        .find(|l| l.starts_with("operations:"))
        .unwrap_or_else(|| panic!("no operations line in {summary}"))
        .to_string()
}

#[test]
fn a_short_run_is_clean_and_quick() {
    let (code, out, err, took) = soak(&["--ops", "300", "--seed", "1"]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("300 operations"), "{out}");
    assert!(out.contains("no violations"), "{out}");
    assert!(out.contains("final balance ok"), "{out}");
    // Not a terminal: nothing on stderr.
    assert!(err.is_empty(), "{err}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn the_same_seed_gives_the_same_operations() {
    let (c1, a, e1, _) = soak(&["--ops", "300", "--seed", "1"]);
    let (c2, b, e2, _) = soak(&["--ops", "300", "--seed", "1"]);
    assert_eq!((c1, c2), (0, 0), "{e1}{e2}");
    assert_eq!(operations(&a), operations(&b));
    let (c3, c, e3, _) = soak(&["--ops", "300", "--seed", "2"]);
    assert_eq!(c3, 0, "{e3}");
    assert_ne!(
        operations(&a),
        operations(&c),
        "another seed, another sequence"
    );
}

#[test]
fn json_summary() {
    let (code, out, err, _) = soak(&["--ops", "50", "--seed", "3", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["ops"], 50);
    assert_eq!(v["violations"], 0);
    let ops: u64 = v["tally"]["ops"]
        .as_object()
        .expect("ops by kind")
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(ops, 50);
}
