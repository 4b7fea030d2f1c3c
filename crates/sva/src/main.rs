//! The `sva` command. Until the scenario runner lands, running it shows the layers at
//! work: a process's address space in simulated RAM, demand paging, a walk of the real
//! VMSAv8-64 tables, fork with copy-on-write, reclaim and migration seen through an MMU
//! notifier; then the same kind of process bound to two devices through the SMMUv3 model
//! and its driver, with faults served through stall and PRI, invalidation on munmap, and
//! exit.

mod demo;
mod sva_demo;

fn main() -> std::process::ExitCode {
    match demo::run(&mut std::io::stdout()) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("sva: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
