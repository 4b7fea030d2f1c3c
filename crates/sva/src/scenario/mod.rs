//! Scenario files: a machine, devices, processes and ordered steps in TOML, run on the
//! simulated platform with checks (`sva run FILE`), or only validated (`sva check FILE`).
//! The format is in docs/scenarios.md, the JSON report in docs/report.md.
//!
//! - [`spec`]: the file as serde reads it (unknown keys refused, positions kept);
//! - [`check`]: validation into a [`check::Plan`] with `FILE:LINE:COL: reason` errors;
//! - [`run`]: the runner on a [`crate::world::World`];
//! - [`report`]: the report (JSON and text).

pub mod check;
pub mod report;
pub mod run;
pub mod spec;

use check::{Diag, Plan};
use std::io::Write;
use std::path::{Path, PathBuf};

/// `sva run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The scenario file.
    pub file: PathBuf,
    /// Print the report as JSON (docs/report.md) instead of the log.
    #[arg(long)]
    pub json: bool,
    /// Seed of random steps and random data (default: the file's `seed`, else 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write a Chrome trace (Perfetto, chrome://tracing) of the run on the modeled clock.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
}

/// `sva check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The scenario file.
    pub file: PathBuf,
}

/// Exit status: every expectation held.
pub const EXIT_OK: u8 = 0;
/// Exit status: an expectation failed (or a step failed unexpectedly).
pub const EXIT_FAILED: u8 = 1;
/// Exit status: the file cannot be used (unreadable, bad TOML, bad reference, impossible
/// value, or the platform it describes cannot be set up).
pub const EXIT_UNUSABLE: u8 = 2;

/// Parses and checks the text of a scenario file (`path` names it and locates the files
/// it refers to).
pub fn parse(src: &str, path: &Path) -> Result<Plan, Vec<Diag>> {
    let raw: spec::RawScenario = toml::from_str(src).map_err(|e| {
        vec![Diag {
            span: e.span(),
            message: shorten(e.message().trim()),
        }]
    })?;
    check::check(&raw, src, path)
}

/// serde's "unknown field `x`, expected one of ..." lists every key of a step (dozens):
/// name the closest key instead, if one is close.
fn shorten(msg: &str) -> String {
    let Some((head, list)) = msg.split_once(", expected one of ") else {
        return msg.to_string();
    };
    let names: Vec<&str> = list.split('`').skip(1).step_by(2).collect();
    if names.len() <= 12 {
        return msg.to_string();
    }
    let given = head.split('`').nth(1).unwrap_or("");
    let best = names
        .iter()
        .map(|n| (distance(given, n), *n))
        .min()
        .filter(|(d, _)| *d <= 2 && *d < given.len());
    match best {
        Some((_, n)) => format!("{head}: did you mean `{n}`? (docs/scenarios.md lists the keys)"),
        None => format!("{head} (docs/scenarios.md lists the keys of each table)"),
    }
}

/// Levenshtein distance.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Reads and checks `path`; on failure, the rendered errors.
pub fn load(path: &Path) -> Result<Plan, Vec<String>> {
    let name = path.display().to_string();
    let src =
        std::fs::read_to_string(path).map_err(|e| vec![format!("{name}: cannot read: {e}")])?;
    parse(&src, path).map_err(|diags| diags.iter().map(|d| d.render(&name, &src)).collect())
}

/// `sva check FILE`: prints what the file holds, or its errors; returns the exit status.
pub fn check_command(args: &CheckArgs, out: &mut dyn Write) -> u8 {
    match load(&args.file) {
        Ok(plan) => {
            let _ = writeln!(
                out,
                "{}: ok: \"{}\", {} device(s), {} process(es) at the start, {} step(s), {} expectation(s)",
                args.file.display(),
                plan.name,
                plan.devices.len(),
                plan.initial.len(),
                plan.step_count,
                plan.expectations
            );
            EXIT_OK
        }
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            EXIT_UNUSABLE
        }
    }
}

/// `sva run FILE`: runs the file; prints the log (or the JSON report); returns the exit
/// status.
pub fn run_command(args: &RunArgs, out: &mut dyn Write) -> u8 {
    let plan = match load(&args.file) {
        Ok(p) => p,
        Err(errors) => {
            for e in errors {
                eprintln!("{e}");
            }
            return EXIT_UNUSABLE;
        }
    };
    if let Some(t) = &args.trace
        && let Err(e) = std::fs::File::create(t)
    {
        eprintln!("{}: cannot write the trace: {e}", t.display());
        return EXIT_UNUSABLE;
    }
    let opts = run::RunOptions {
        seed: args.seed,
        trace: args.trace.clone(),
    };
    let mut sink = std::io::sink();
    let log: &mut dyn Write = if args.json { &mut sink } else { out };
    let report = match run::run(&plan, &opts, log) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: {e:#}", args.file.display());
            return EXIT_UNUSABLE;
        }
    };
    if args.json {
        let _ = out.write_all(report.to_json().as_bytes());
    }
    if report.ok { EXIT_OK } else { EXIT_FAILED }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn errors(src: &str) -> Vec<String> {
        match parse(src, Path::new("t.toml")) {
            Ok(_) => Vec::new(),
            Err(d) => d.iter().map(|d| d.render("t.toml", src)).collect(),
        }
    }

    const BASE: &str = r#"
[[device]]
name = "zip"
kind = "zip"
sid = 0x10

[[process]]
name = "a"

[[step]]
do = "mmap"
process = "a"
buffer = "src"
size = "64KiB"
"#;

    #[test]
    fn a_minimal_file_checks() {
        assert_eq!(errors(BASE), Vec::<String>::new());
        assert_eq!(errors(""), Vec::<String>::new());
    }

    #[test]
    fn errors_carry_the_line_of_the_offending_value() {
        let e = errors(&format!("{BASE}bogus = 1\n"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("t.toml:15:"), "{e:?}");
        assert!(e[0].contains("unknown field `bogus` (docs"), "{e:?}");
        let e = errors(&format!("{BASE}bufer = 1\n"));
        assert!(e[0].contains("did you mean `buffer`?"), "{e:?}");
        let e = errors(&BASE.replace("size = \"64KiB\"", "size = 0"));
        assert!(e[0].starts_with("t.toml:14:8: size 0"), "{e:?}");
        let e = errors(&BASE.replace("sid = 0x10", "sid = 0x10000"));
        assert!(
            e[0].starts_with("t.toml:5:7:") && e[0].contains("SIDSIZE"),
            "{e:?}"
        );
        let e = errors(&format!(
            "{BASE}\n[[step]]\ndo = \"touch\"\nbuffer = \"nope\"\n"
        ));
        assert!(
            e[0].starts_with("t.toml:18:") && e[0].contains("unknown buffer `nope`"),
            "{e:?}"
        );
        let e = errors(&format!("{BASE}\n[[step]]\ndo = \"fly\"\n"));
        assert!(
            e[0].starts_with("t.toml:17:") && e[0].contains("unknown variant `fly`"),
            "{e:?}"
        );
        let e = errors(&format!(
            "{BASE}\n[[step]]\ndo = \"touch\"\nbuffer = \"src\"\nsize = 4\n"
        ));
        assert!(
            e[0].starts_with("t.toml:19:") && e[0].contains("not an option of `touch`"),
            "{e:?}"
        );
    }

    #[test]
    fn a_buffer_used_before_its_mmap_is_named_as_such() {
        let src = r#"
[[process]]
name = "a"

[[step]]
do = "touch"
buffer = "later"

[[step]]
do = "mmap"
process = "a"
buffer = "later"
size = 4096
"#;
        let e = errors(src);
        assert!(
            e[0].starts_with("t.toml:7:") && e[0].contains("before it is"),
            "{e:?}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_text_never_panics(s in "\\PC{0,300}") {
            let _ = parse(&s, Path::new("x.toml"));
        }

        #[test]
        fn mutated_scenarios_never_panic(cut in 0usize..400, insert in "[\\[\\]=\"a-z0-9 .\\n{}]{0,20}") {
            let mut s = BASE.to_string();
            let at = cut.min(s.len());
            let at = (0..=at).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
            s.insert_str(at, &insert);
            if let Err(d) = parse(&s, Path::new("x.toml")) {
                for d in d {
                    let r = d.render("x.toml", &s);
                    prop_assert!(r.starts_with("x.toml:"));
                }
            }
        }
    }
}
