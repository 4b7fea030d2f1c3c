//! Scenario files through the `sva` binary: every file in `scenarios/` and every example of
//! docs/scenarios.md runs and holds (exit 0); broken files are refused with their position
//! (exit 2); a failing expectation fails the run (exit 1); the JSON report is complete and
//! the same bytes for the same seed.

mod common;

use common::U64_STATS;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn sva(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sva"))
        .args(args)
        .output()
        .expect("running sva")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A directory of its own for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sva-scenarios-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("creating a scratch directory");
    d
}

fn scenario_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("scenarios"))
        .expect("scenarios/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

/// The ```toml blocks of docs/scenarios.md.
fn doc_examples() -> Vec<String> {
    let doc = std::fs::read_to_string(root().join("docs/scenarios.md")).expect("docs/scenarios.md");
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in doc.lines() {
        match &mut cur {
            None if line.trim_end() == "```toml" => cur = Some(String::new()),
            Some(_) if line.trim_end() == "```" => out.push(cur.take().unwrap_or_default()),
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    out
}

fn assert_runs_ok(path: &Path) {
    let p = path.to_str().expect("utf-8 path");
    let c = sva(&["check", p]);
    assert_eq!(
        c.status.code(),
        Some(0),
        "sva check {p}: {}",
        text(&c.stderr)
    );
    let t0 = Instant::now();
    let r = sva(&["run", p]);
    let took = t0.elapsed();
    assert_eq!(
        r.status.code(),
        Some(0),
        "sva run {p}:\n{}\n{}",
        text(&r.stdout),
        text(&r.stderr)
    );
    assert!(
        text(&r.stdout).contains("result: ok"),
        "{}",
        text(&r.stdout)
    );
    assert!(took < Duration::from_secs(10), "{p} took {took:?}");
}

#[test]
fn every_file_in_scenarios_runs_and_holds() {
    let files = scenario_files();
    assert!(files.len() >= 6, "at least six examples: {files:?}");
    for f in files {
        assert_runs_ok(&f);
    }
}

#[test]
fn every_example_of_the_documentation_runs_and_holds() {
    let examples = doc_examples();
    assert!(
        examples.len() >= 4,
        "examples in docs/scenarios.md: {}",
        examples.len()
    );
    let dir = scratch("docs");
    for (i, ex) in examples.iter().enumerate() {
        let f = dir.join(format!("example-{i}.toml"));
        std::fs::write(&f, ex).expect("writing an example");
        assert_runs_ok(&f);
    }
}

/// Writes `src` as `name` in `dir` and checks that `sva check` and `sva run` refuse it
/// with exit 2, nothing on stdout from run, and `FILE:LINE:` plus `what` on stderr.
fn assert_refused(dir: &Path, name: &str, src: &str, line: usize, what: &str) {
    let f = dir.join(name);
    std::fs::write(&f, src).expect("writing a broken file");
    let p = f.to_str().expect("utf-8 path");
    for cmd in ["check", "run"] {
        let o = sva(&[cmd, p]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "sva {cmd} {name}: {err}");
        assert!(
            err.contains(&format!("{p}:{line}:")),
            "sva {cmd} {name}: expected {p}:{line}: in\n{err}"
        );
        assert!(
            err.contains(what),
            "sva {cmd} {name}: expected `{what}` in\n{err}"
        );
        if cmd == "run" {
            assert!(o.stdout.is_empty(), "run printed {}", text(&o.stdout));
        }
    }
}

const HEAD: &str = r#"[[device]]
name = "zip"
kind = "zip"
sid = 0x300

[[process]]
name = "a"

[[step]]
do = "mmap"
process = "a"
buffer = "src"
size = "16KiB"
"#;

#[test]
fn broken_files_are_refused_with_their_line() {
    let d = scratch("broken");
    assert_refused(&d, "syntax.toml", "[[step]\ndo = 1\n", 1, "");
    assert_refused(
        &d,
        "unknown-key.toml",
        &format!("{HEAD}colour = \"blue\"\n"),
        14,
        "unknown field `colour`",
    );
    assert_refused(
        &d,
        "zero-size.toml",
        &HEAD.replace("size = \"16KiB\"", "size = 0"),
        13,
        "size 0",
    );
    assert_refused(
        &d,
        "sid.toml",
        &HEAD.replace("sid = 0x300", "sid = 0x1_0000"),
        4,
        "above SIDSIZE",
    );
    assert_refused(
        &d,
        "sidsize.toml",
        &format!("[platform.smmu]\nsidsize = 8\n\n{HEAD}"),
        7,
        "above SIDSIZE 8",
    );
    assert_refused(
        &d,
        "pasid-width.toml",
        &HEAD.replace("sid = 0x300", "sid = 0x300\npasid_width = 0"),
        5,
        "pasid_width 0",
    );
    assert_refused(
        &d,
        "pasid-wide.toml",
        &HEAD.replace("sid = 0x300", "sid = 0x300\npasid_width = 21"),
        5,
        "pasid_width 21",
    );
    assert_refused(
        &d,
        "kind.toml",
        &HEAD.replace("kind = \"zip\"", "kind = \"gpu\""),
        3,
        "unknown variant `gpu`",
    );
    assert_refused(
        &d,
        "step-kind.toml",
        &format!("{HEAD}\n[[step]]\ndo = \"teleport\"\n"),
        16,
        "unknown variant `teleport`",
    );
    assert_refused(
        &d,
        "unknown-buffer.toml",
        &format!("{HEAD}\n[[step]]\ndo = \"touch\"\nbuffer = \"nope\"\n"),
        17,
        "unknown buffer `nope`",
    );
    assert_refused(
        &d,
        "before-mmap.toml",
        &format!(
            "{HEAD}\n[[step]]\ndo = \"touch\"\nbuffer = \"later\"\n\n[[step]]\ndo = \"mmap\"\nprocess = \"a\"\nbuffer = \"later\"\nsize = 4096\n"
        ),
        17,
        "used before it is mapped",
    );
    assert_refused(
        &d,
        "unknown-device.toml",
        &format!(
            "{HEAD}\n[[step]]\ndo = \"open\"\nqueue = \"q\"\ndevice = \"gpu0\"\nprocess = \"a\"\n"
        ),
        18,
        "unknown device `gpu0`",
    );
    assert_refused(
        &d,
        "unknown-process.toml",
        &format!("{HEAD}\n[[step]]\ndo = \"exit\"\nprocess = \"ghost\"\n"),
        17,
        "unknown process `ghost`",
    );
    assert_refused(
        &d,
        "unknown-job.toml",
        &format!("{HEAD}\n[[step]]\ndo = \"wait\"\njob = \"j\"\n"),
        17,
        "unknown job `j`",
    );
    assert_refused(
        &d,
        "wrong-option.toml",
        &format!("{HEAD}\n[[step]]\ndo = \"touch\"\nbuffer = \"src\"\npattern = 7\n"),
        18,
        "not an option of `touch`",
    );
    assert_refused(
        &d,
        "out-of-range.toml",
        &format!(
            "{HEAD}\n[[step]]\ndo = \"fill\"\nbuffer = \"src\"\noffset = 4096\nlen = \"16KiB\"\nbyte = 1\n"
        ),
        19,
        "beyond the end of `src`",
    );
    assert_refused(
        &d,
        "wrong-device-op.toml",
        &format!(
            "{HEAD}\n[[step]]\ndo = \"open\"\nqueue = \"q\"\ndevice = \"zip\"\nprocess = \"a\"\n\n[[step]]\ndo = \"submit\"\nqueue = \"q\"\nop = \"copy\"\nsrc = \"src\"\ndst = \"src\"\n"
        ),
        24,
        "`copy` runs on dsa devices",
    );
    assert_refused(
        &d,
        "bad-counter.toml",
        &format!("{HEAD}\n[[step]]\ndo = \"expect\"\ncounter = \"warp_speed\"\ngt = 0\n"),
        17,
        "unknown counter `warp_speed`",
    );
    // Unreadable: no line, but the file's name and exit 2.
    let missing = d.join("missing.toml");
    let o = sva(&["check", missing.to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("missing.toml"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn a_failing_expectation_fails_the_run() {
    let d = scratch("failing");
    let f = d.join("fails.toml");
    std::fs::write(
        &f,
        format!("{HEAD}\n[[step]]\ndo = \"fill\"\nbuffer = \"src\"\nbyte = 1\n\n[[step]]\ndo = \"expect\"\nname = \"deliberately wrong\"\nbuffer = \"src\"\nbyte = 2\n\n[[step]]\ndo = \"expect\"\ncounter = \"binds\"\neq = 0\n"),
    )
    .expect("writing");
    let p = f.to_str().expect("utf-8");
    assert_eq!(sva(&["check", p]).status.code(), Some(0));
    let o = sva(&["run", p]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
    let out = text(&o.stdout);
    assert!(out.contains("[FAILED] deliberately wrong"), "{out}");
    assert!(out.contains("result: FAILED"), "{out}");
    let o = sva(&["run", "--json", p]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON report");
    assert_eq!(v["ok"], false);
    let checks = v["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[0]["name"], "deliberately wrong");
    assert_eq!(checks[0]["ok"], false);
    assert_eq!(checks[0]["line"], 21);
    assert!(
        checks[0]["detail"]
            .as_str()
            .expect("detail")
            .contains("expected 0x02")
    );
    assert_eq!(checks[1]["ok"], true);
}

#[test]
fn a_step_that_fails_unexpectedly_stops_the_run() {
    let d = scratch("step-error");
    let f = d.join("overlap.toml");
    std::fs::write(
        &f,
        "[[process]]\nname = \"a\"\n\n[[step]]\ndo = \"mmap\"\nprocess = \"a\"\nbuffer = \"x\"\nsize = 4096\nat = 0x1000_0000\n\n[[step]]\ndo = \"mmap\"\nprocess = \"a\"\nbuffer = \"y\"\nsize = 4096\nsame_address_as = \"x\"\nexpect_error = \"invalid\"\n\n[[step]]\ndo = \"mmap\"\nprocess = \"a\"\nbuffer = \"z\"\nsize = 4096\nat = 0x1000_0000\n\n[[step]]\ndo = \"expect\"\nbuffer = \"x\"\nbyte = 0\n",
    )
    .expect("writing");
    let o = sva(&["run", "--json", f.to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON report");
    assert_eq!(v["error"]["line"], 20);
    assert_eq!(v["error"]["class"], "invalid");
    let checks = v["checks"].as_array().expect("checks");
    // The expected refusal held; the unexpected one failed; the expect after it never ran.
    assert_eq!(checks.len(), 2, "{checks:?}");
    assert_eq!(checks[0]["ok"], true);
    assert_eq!(checks[1]["ok"], false);
}

#[test]
fn the_json_report_is_complete_and_the_same_for_the_same_seed() {
    let f = root().join("scenarios/random-load.toml");
    let p = f.to_str().expect("utf-8");
    let a = sva(&["run", "--json", p]);
    let b = sva(&["run", "--json", p]);
    assert_eq!(a.status.code(), Some(0), "{}", text(&a.stderr));
    assert_eq!(a.stdout, b.stdout, "same file, same seed: the same bytes");
    let c = sva(&["run", "--json", "--seed", "42", p]);
    assert_eq!(a.stdout, c.stdout, "the file's seed is 42");
    let d = sva(&["run", "--json", "--seed", "5", p]);
    assert_eq!(d.status.code(), Some(0), "{}", text(&d.stdout));
    assert_ne!(a.stdout, d.stdout, "another seed, another workload");

    let v: serde_json::Value = serde_json::from_slice(&a.stdout).expect("JSON report");
    assert_eq!(v["ok"], true);
    assert_eq!(v["seed"], 42);
    assert_eq!(v["version"], 1);
    for c in v["checks"].as_array().expect("checks") {
        for k in ["name", "ok", "detail", "line"] {
            assert!(c.get(k).is_some(), "check without {k}: {c}");
        }
    }
    let s = &v["stats"];
    for k in U64_STATS {
        assert!(s[k].is_u64(), "stats.{k} missing in {s}");
    }
    for k in ["success", "invalid", "failure"] {
        assert!(s["page_responses"][k].is_u64(), "stats.page_responses.{k}");
    }
    assert!(s["events"].is_object());
    assert!(s["modeled_time_ns"].as_u64().expect("modeled time") > 0);
    assert!(
        s["devices"]["zip"]["page_requests"]
            .as_u64()
            .expect("per device")
            > 0
    );
}

#[test]
fn every_example_gives_the_same_report_twice() {
    for f in scenario_files() {
        let p = f.to_str().expect("utf-8");
        let a = sva(&["run", "--json", p]);
        let b = sva(&["run", "--json", p]);
        assert_eq!(a.status.code(), Some(0), "{p}");
        assert_eq!(text(&a.stdout), text(&b.stdout), "{p}: two runs differ");
    }
}

#[test]
fn the_trace_is_written_on_the_modeled_clock() {
    let d = scratch("trace");
    let t = d.join("trace.json");
    let f = root().join("scenarios/munmap-mid-job.toml");
    let o = sva(&[
        "run",
        f.to_str().expect("utf-8"),
        "--trace",
        t.to_str().expect("utf-8"),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&t).expect("the trace file")).expect("trace JSON");
    let events = v["traceEvents"].as_array().expect("traceEvents");
    let names: Vec<&str> = events.iter().filter_map(|e| e["name"].as_str()).collect();
    assert!(
        names.iter().any(|n| n.starts_with("compress")),
        "a job span: {names:?}"
    );
    assert!(
        names.iter().any(|n| n.starts_with("munmap")),
        "a step span: {names:?}"
    );
    assert!(events.iter().any(|e| e["ph"] == "i"), "check instants");
}

/// Step-level mutations of the examples (steps dropped, repeated, swapped) make files that
/// are refused, fail or hold; `sva` never panics or hangs on them.
#[test]
fn mutated_examples_never_make_sva_panic() {
    let dir = scratch("mutants");
    let sources: Vec<String> = scenario_files()
        .iter()
        .map(|f| std::fs::read_to_string(f).expect("reading an example"))
        .chain(doc_examples())
        .collect();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n.max(1) as u64) as usize
    };
    for case in 0..40 {
        let src = &sources[next(sources.len())];
        let mut parts: Vec<String> = src.split("\n[[step]]").map(String::from).collect();
        let head = parts.remove(0);
        for _ in 0..1 + next(4) {
            if parts.is_empty() {
                break;
            }
            let i = next(parts.len());
            match next(3) {
                0 => {
                    parts.remove(i);
                }
                1 => {
                    let s = parts[i].clone();
                    parts.insert(next(parts.len() + 1), s);
                }
                _ => {
                    let j = next(parts.len());
                    parts.swap(i, j);
                }
            }
        }
        let mut text_out = head;
        for p in &parts {
            text_out.push_str("\n[[step]]");
            text_out.push_str(p);
        }
        let f = dir.join(format!("mutant-{case}.toml"));
        std::fs::write(&f, &text_out).expect("writing a mutant");
        let t0 = Instant::now();
        let o = sva(&["run", "--json", f.to_str().expect("utf-8")]);
        let err = text(&o.stderr);
        assert!(
            matches!(o.status.code(), Some(0..=2)) && !err.contains("panicked"),
            "{}: exit {:?}\n{err}",
            f.display(),
            o.status.code()
        );
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{} took {:?}",
            f.display(),
            t0.elapsed()
        );
    }
}
