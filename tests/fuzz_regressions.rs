//! Every input of the committed fuzz corpus (`fuzz/corpus/<target>/`) and
//! every crash the fuzzers found (`fuzz/regressions/<target>/`) goes through
//! the same check its fuzz target runs (`reverie::fuzzing::check`), in plain
//! `cargo test`, so a fixed bug stays fixed without nightly or libFuzzer.

use reverie::fuzzing::{check, TARGETS};
use std::path::{Path, PathBuf};

/// The files directly in `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// Runs every file of `fuzz/<kind>/<target>/` through the check; returns how
/// many ran and the failures.
fn run(kind: &str) -> (usize, Vec<String>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind);
    let mut ran = 0;
    let mut failures = Vec::new();
    for target in TARGETS {
        for f in files(&root.join(target)) {
            let data = std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            ran += 1;
            let outcome = std::panic::catch_unwind(|| check(target, &data));
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(format!("{}: {e}", f.display())),
                Err(_) => failures.push(format!("{}: panicked", f.display())),
            }
        }
    }
    (ran, failures)
}

#[test]
fn corpus_inputs_pass_their_checks() {
    let (ran, failures) = run("corpus");
    // The corpus is committed; an empty run means the path is wrong.
    assert!(ran >= 30, "only {ran} corpus files found under fuzz/corpus");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn crashes_found_by_fuzzing_stay_fixed() {
    let (_, failures) = run("regressions");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_checks_catch_a_broken_invariant() {
    // An unknown target is refused rather than silently passing, so a typo
    // in a directory name cannot skip its inputs.
    assert!(check("no_such_target", b"x").is_err());
    for target in TARGETS {
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fuzz/corpus")
                .join(target)
                .is_dir(),
            "fuzz/corpus/{target} is missing"
        );
    }
}
