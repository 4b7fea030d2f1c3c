//! The library behind the `sva` command: the machine with accelerators ([`world`]), the
//! scenario-file language and runner ([`scenario`]), the counters, modeled clock and
//! trace writer its reports use. The binary (`src/main.rs`) adds the demo, the benchmark
//! suite and the soak run; the fuzz targets (`crates/fuzz-targets`) use the scenario
//! parser from here.

pub mod clock;
pub mod counters;
pub mod scenario;
pub mod trace;
pub mod world;
