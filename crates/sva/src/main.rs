//! The `sva` command: the demo (the default), benchmarks, and (as they land) scenario
//! files. Exit status: 0 when every check held, 1 when one failed, 2 for unusable input.

mod accel_demo;
mod bench;
mod demo;
mod soak;
mod sva_demo;

use sva::scenario;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Shared Virtual Addressing for IOMMUs, end to end: an SMMUv3 model and driver, the SVA
/// core, CPU address spaces and accelerators, all simulated.
#[derive(Debug, Parser)]
#[command(name = "sva", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the demo (what `cargo run --release` does).
    Demo(demo::DemoArgs),
    /// Runs the benchmark suite; figures are ratios against the host doing the same work.
    Bench(bench::BenchArgs),
    /// Runs a seeded random workload against a shadow model of memory (docs/soak.md).
    Soak(soak::SoakArgs),
    /// Runs a scenario file (docs/scenarios.md): exit 0 when every expectation held, 1
    /// when one failed, 2 when the file is unusable.
    Run(scenario::RunArgs),
    /// Validates a scenario file without running it: exit 0, or 2 with FILE:LINE:COL
    /// errors on stderr.
    Check(scenario::CheckArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors.
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli
        .command
        .unwrap_or_else(|| Command::Demo(demo::DemoArgs::default()))
    {
        Command::Demo(args) => demo::run_with(&args, &mut std::io::stdout()),
        Command::Bench(args) => bench::run(&args, &mut std::io::stdout()),
        Command::Soak(args) => soak::run(&args, &mut std::io::stdout()),
        Command::Run(args) => {
            return ExitCode::from(scenario::run_command(&args, &mut std::io::stdout()));
        }
        Command::Check(args) => {
            return ExitCode::from(scenario::check_command(&args, &mut std::io::stdout()));
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("sva: {e:#}");
            ExitCode::from(2)
        }
    }
}
