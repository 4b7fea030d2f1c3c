//! `sva bench --quick` end to end (a few seconds even in the test profile: the harness
//! sizes its batches by time). Checks the JSON object: every figure present, positive and
//! finite; every goal stated with whether it is met; the machine described; and the table.

use std::process::Command;

/// Every figure `sva bench --json` reports.
const KEYS: &[&str] = &[
    "iotlb_hit_ns",
    "host_hashmap_lookup_ns",
    "walk_ns",
    "dma_copy_vs_memcpy",
    "dma_copy_gib_s",
    "memcpy_gib_s",
    "iopf_us",
    "iopf_vs_host_fault",
    "host_minor_fault_us",
    "unmap_invalidate_us",
    "host_munmap_us",
    "bind_unbind_per_s",
    "zip_vs_cpu",
    "zip_mib_s",
    "host_flate2_mib_s",
];

/// The figures with a goal.
const GOALS: &[&str] = &[
    "iotlb_hit_ns",
    "dma_copy_vs_memcpy",
    "iopf_vs_host_fault",
    "unmap_invalidate_us",
    "bind_unbind_per_s",
];

#[test]
fn bench_json_reports_every_figure() {
    let out = Command::new(env!("CARGO_BIN_EXE_sva"))
        .args(["bench", "--quick", "--json"])
        .output()
        .expect("running sva bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "sva bench failed: {stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["quick"], serde_json::Value::Bool(true));
    assert!(v["machine"]["cores"].as_u64().is_some_and(|c| c > 0), "{v}");
    assert!(v["machine"]["os"].is_string(), "{v}");
    let results = v["results"].as_object().expect("results");
    for key in KEYS {
        let x = results
            .get(*key)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or_else(|| panic!("{key} missing: {v}"));
        assert!(x.is_finite() && x > 0.0, "{key} = {x}");
    }
    let goals = v["goals"].as_object().expect("goals");
    for key in GOALS {
        let g = &goals[*key];
        assert!(g["goal"].is_string(), "{key}: {g}");
        assert!(g["met"].is_boolean(), "{key}: {g}");
    }
    assert!(v.get("errors").is_none(), "{v}");
}

#[test]
fn bench_table_lists_every_figure() {
    let out = Command::new(env!("CARGO_BIN_EXE_sva"))
        .args(["bench", "--quick"])
        .output()
        .expect("running sva bench");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    for key in KEYS {
        assert!(
            table.lines().any(|l| l.starts_with(key)),
            "{key} not in the table:\n{table}"
        );
    }
}
