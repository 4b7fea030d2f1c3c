//! `sva bench`: the benchmark suite (being written).

use anyhow::{Result, bail};
use std::io::Write;

/// Options of `sva bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
    /// Fewer samples: finishes in under a minute.
    #[arg(long)]
    pub quick: bool,
}

/// Runs the suite.
pub fn run(args: &BenchArgs, out: &mut dyn Write) -> Result<bool> {
    let _ = (args, out);
    bail!("sva bench is not implemented yet")
}
