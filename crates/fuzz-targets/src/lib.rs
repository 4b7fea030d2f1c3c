//! Fuzz target bodies for the models, as plain library functions: arbitrary bytes in, never
//! a panic, never a hang (architectural errors, faults and events are fine).
//!
//! The cargo-fuzz targets in `fuzz/fuzz_targets/` are one-liners calling these, and
//! `tests/replay.rs` replays every seed and regression input of `fuzz/corpus/<target>/`
//! through them on stable Rust, so what a fuzzer once found stays fixed. See
//! `docs/fuzzing.md`.
//!
//! | function | model |
//! |---|---|
//! | [`smmu_mmio`] | `sva-smmuv3`: register writes, memory under its tables and queues, traffic |
//! | [`smmu_cmdq`] | `sva-smmuv3`: arbitrary command-queue entries, then a valid set-up must work |
//! | [`vmsa_walk`] | `sva-vmsa`: walks, lookups, map and unmap over arbitrary table memory |
//! | [`dsa_descriptor`] | `sva-dsa`: arbitrary 64-byte descriptors through both kinds of portal |
//! | [`zip_sqe`] | `sva-zip`: arbitrary 128-byte SQEs (and doorbells) on a QM queue pair |
//! | [`scenario`] | `sva`: the scenario-file parser and checker, and its error rendering |
//!
//! Every function is deterministic in what it feeds the model; the device models run
//! engine threads, whose panics [`watch`] turns into a panic of the caller.

mod dma;
mod dsa;
mod input;
mod scenario;
mod smmu;
mod vmsa;
pub mod watch;
mod zip;

pub use dsa::dsa_descriptor;
pub use input::Input;
pub use scenario::scenario;
pub use smmu::{smmu_cmdq, smmu_mmio};
pub use vmsa::vmsa_walk;
pub use zip::zip_sqe;

/// A target body: arbitrary bytes in.
pub type Target = fn(&[u8]);

/// The targets by name (the names of the cargo-fuzz targets and of the corpus
/// directories).
pub const TARGETS: &[(&str, Target)] = &[
    ("smmu_mmio", smmu_mmio),
    ("smmu_cmdq", smmu_cmdq),
    ("vmsa_walk", vmsa_walk),
    ("dsa_descriptor", dsa_descriptor),
    ("zip_sqe", zip_sqe),
    ("scenario", scenario),
];

/// The target called `name`.
#[must_use]
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|&(_, f)| f)
}
