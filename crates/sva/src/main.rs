//! The `sva` command. Until the scenario runner lands, running it shows the foundation
//! layers at work: a process's address space in simulated RAM, demand paging, a walk of
//! the real VMSAv8-64 tables, fork with copy-on-write, reclaim and migration seen through
//! an MMU notifier, and a clean exit.

mod demo;

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
