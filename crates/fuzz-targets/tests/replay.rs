//! Replays every file of every `fuzz/corpus/<target>/` directory through its target: the
//! seeds, and every input a fuzzer found a bug with (kept there once fixed). This is the
//! fuzzing regression test CI runs; no fuzzing happens here.

use std::path::{Path, PathBuf};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

fn replay(target: &str) {
    let run = sva_fuzz_targets::target(target).expect("a known target");
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no corpus files", dir.display());
    for f in &files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        eprintln!("{target}: {} ({} bytes)", f.display(), data.len());
        run(&data);
    }
}

#[test]
fn every_target_has_a_corpus() {
    let dirs: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus"))
            .expect("fuzz/corpus")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
    for (name, _) in sva_fuzz_targets::TARGETS {
        assert!(dirs.iter().any(|d| d == name), "no fuzz/corpus/{name}");
    }
    for d in &dirs {
        assert!(
            sva_fuzz_targets::target(d).is_some(),
            "fuzz/corpus/{d} has no target"
        );
    }
}

#[test]
fn replay_smmu_mmio() {
    replay("smmu_mmio");
}

#[test]
fn replay_smmu_cmdq() {
    replay("smmu_cmdq");
}

#[test]
fn replay_vmsa_walk() {
    replay("vmsa_walk");
}

#[test]
fn replay_dsa_descriptor() {
    replay("dsa_descriptor");
}

#[test]
fn replay_zip_sqe() {
    replay("zip_sqe");
}
