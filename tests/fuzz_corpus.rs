//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) and crash reproducers
//! (`fuzz/regressions/<target>/`) through the same `agentwatch::fuzzing` functions the
//! cargo-fuzz targets call, on stable, in every `cargo test`: an input the fuzzer once
//! reached stays covered, and a fixed crash stays fixed. Coverage-guided fuzzing
//! itself is opt-in: `scripts/fuzz.sh`.

use std::{
    collections::BTreeSet,
    fs,
    panic::{catch_unwind, AssertUnwindSafe},
    path::{Path, PathBuf},
};

use agentwatch::fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files directly in `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// File stems (or directory names) in `dir`.
fn names(dir: &Path, only_dirs: bool) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir() == only_dirs)
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .collect()
}

#[test]
fn every_target_has_a_fuzz_target_file_and_a_non_empty_corpus_and_nothing_else_does() {
    let targets: BTreeSet<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(names(&fuzz_dir().join("fuzz_targets"), false), targets);
    assert_eq!(names(&fuzz_dir().join("corpus"), true), targets);
    for name in &targets {
        let corpus = files(&fuzz_dir().join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} is empty");
    }
    let regressions = fuzz_dir().join("regressions");
    if regressions.is_dir() {
        for dir in names(&regressions, true) {
            assert!(
                targets.contains(&dir),
                "fuzz/regressions/{dir} names no target"
            );
        }
    }
}

#[test]
fn every_corpus_and_regression_input_passes_its_target() {
    let mut failures = Vec::new();
    let mut replayed = 0;
    for (name, target) in TARGETS {
        for kind in ["corpus", "regressions"] {
            for file in files(&fuzz_dir().join(kind).join(name)) {
                let data = fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
                    failures.push(file.display().to_string());
                }
                replayed += 1;
            }
        }
    }
    assert!(replayed >= TARGETS.len(), "replayed only {replayed} inputs");
    assert!(
        failures.is_empty(),
        "inputs that fail their target: {failures:#?}"
    );
}
