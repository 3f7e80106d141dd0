//! `reverie dream` end to end on a temporary store.

use std::path::Path;
use std::process::{Command, Output};

const NOW: &str = "2026-11-30T12:00:00Z";

fn store() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let m = d.path().join("memories");
    std::fs::create_dir_all(m.join("team")).unwrap();
    std::fs::create_dir_all(d.path().join("sessions")).unwrap();
    std::fs::write(
        m.join("prefs.md"),
        "# Time\n\n- Always use UTC for timestamps in logs.\n- The API listens on port 8080.\n",
    )
    .unwrap();
    std::fs::write(
        m.join("team/notes.md"),
        "# Notes\n\n- use utc for timestamps in logs!\n- The API listens on port 8081.\n\nA paragraph about the release train.\n",
    )
    .unwrap();
    std::fs::write(
        d.path().join("sessions/s-001.jsonl"),
        concat!(
            r#"{"session":"s-001","agent":"coder","ts":"2026-11-20T10:00:00Z","role":"user","content":"Use UTC for timestamps in logs, please."}"#,
            "\n",
            r#"{"session":"s-001","agent":"coder","ts":"2026-11-20T10:00:01Z","role":"assistant","content":[{"type":"text","text":"ok"}]}"#,
            "\n",
            "{\"truncated\": \n",
            r#"{"session":"s-001","type":"outcome","status":"succeeded","summary":"done"}"#,
            "\n"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(d.path().join(".reverie")).unwrap();
    std::fs::write(d.path().join(".reverie/revision"), "7\n").unwrap();
    d
}

fn dream(store: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reverie"))
        .arg("dream")
        .arg("--store")
        .arg(store)
        .args(extra)
        .env("REVERIE_NOW", NOW)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

#[test]
fn proposes_a_merge_with_evidence_and_reports_bad_lines() {
    let d = store();
    let out = dream(d.path(), &["--store-name", "team-memory"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    let v: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(v["kind"].as_str(), Some("MemoryPatch"));
    assert_eq!(v["spec"]["storeRef"]["name"].as_str(), Some("team-memory"));
    assert_eq!(v["spec"]["baseRevision"].as_u64(), Some(7));
    assert_eq!(
        v["metadata"]["labels"]["reverie.dev/store"].as_str(),
        Some("team-memory")
    );
    let name = v["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("team-memory-20261130-1200-"), "{name}");
    let ops = v["spec"]["ops"].as_sequence().unwrap();
    // The two UTC entries are one merge; the 8080/8081 pair is never merged
    // (a hard negative), but it is a contradiction: the later file wins.
    assert_eq!(ops.len(), 2, "{yaml}");
    let merges: Vec<_> = ops
        .iter()
        .filter(|o| o["op"].as_str() == Some("merge"))
        .collect();
    assert_eq!(merges.len(), 1, "{yaml}");
    let merge = merges[0];
    assert_eq!(merge["path"].as_str(), Some("prefs.md"));
    assert!(
        !merge["before"].as_str().unwrap().contains("8080"),
        "{yaml}"
    );
    let contradiction = ops
        .iter()
        .find(|o| o["reason"].as_str() == Some("contradiction"))
        .expect("a contradiction op");
    assert_eq!(contradiction["op"].as_str(), Some("delete"));
    assert_eq!(
        contradiction["before"].as_str(),
        Some("The API listens on port 8080.")
    );
    let ids = merge["ids"].as_sequence().unwrap();
    assert!(ids[1].as_str().unwrap().starts_with("team/notes.md#"));
    let ev = merge["evidence"].as_sequence().unwrap();
    assert!(ev
        .iter()
        .any(|e| e["session"].as_str() == Some("s-001") && e["line"].as_u64() == Some(1)));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("1 bad JSON"), "{err}");
    assert!(err.contains("s-001.jsonl:3"), "{err}");
    assert!(err.contains("merged 1 duplicate"), "{err}");
}

#[test]
fn two_runs_are_byte_identical_and_out_file_matches_stdout() {
    let d = store();
    let a = dream(d.path(), &[]);
    let b = dream(d.path(), &[]);
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout);
    assert_eq!(a.stderr, b.stderr);
    let out = d.path().join("patch.yaml");
    let c = dream(d.path(), &["--out", out.to_str().unwrap()]);
    assert!(c.status.success());
    assert!(c.stdout.is_empty());
    assert_eq!(std::fs::read(&out).unwrap(), a.stdout);
    let names: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(names.is_empty(), "temporary file left behind: {names:?}");
}

#[test]
fn json_output_and_empty_patch_exit_zero() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("memories")).unwrap();
    std::fs::write(
        d.path().join("memories/a.md"),
        "- one fact\n- another thing entirely\n",
    )
    .unwrap();
    let out = dream(d.path(), &["--output", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["spec"]["ops"].as_array().map(Vec::len), Some(0));
    assert_eq!(v["spec"]["summary"], "no changes");
}

#[test]
fn budget_flags_and_since_reach_the_engine() {
    let d = store();
    let out = dream(d.path(), &["--max-entry-bytes", "24", "--since", "1d"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    let ops = v["spec"]["ops"].as_sequence().unwrap();
    // The session is older than a day: no session evidence on the merge.
    let merge = ops
        .iter()
        .find(|o| o["op"].as_str() == Some("merge"))
        .unwrap();
    assert!(merge["evidence"]
        .as_sequence()
        .unwrap()
        .iter()
        .all(|e| e["session"].is_null()));
    // Oversized entries not merged are trimmed.
    let trims: Vec<_> = ops
        .iter()
        .filter(|o| o["reason"].as_str() == Some("budget"))
        .collect();
    assert!(!trims.is_empty());
    for t in trims {
        assert!(t["content"].as_str().unwrap().len() <= 24);
    }
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("1 sessions before --since"), "{err}");
}

#[test]
fn errors_name_the_problem() {
    let d = tempfile::tempdir().unwrap();
    let out = dream(d.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("no memories/ directory"), "{err}");
    std::fs::create_dir_all(d.path().join("memories")).unwrap();
    let out = dream(d.path(), &["--since", "yesterday"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since"));
}

/// Copies `examples/store` (memories and sessions) into a temp dir.
fn example_store() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/store");
    for sub in ["memories", "sessions"] {
        std::fs::create_dir_all(d.path().join(sub)).unwrap();
        for e in std::fs::read_dir(src.join(sub)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), d.path().join(sub).join(e.file_name())).unwrap();
        }
    }
    d
}

fn reasons(yaml: &str) -> std::collections::BTreeSet<String> {
    let v: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
    v["spec"]["ops"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|o| o["reason"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_example_store_shows_every_kind_of_finding() {
    let d = example_store();
    let out = dream(d.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    let got = reasons(&yaml);
    for want in [
        "duplicate",
        "contradiction",
        "stale",
        "recurring-error",
        "working-method",
        "shared-preference",
    ] {
        assert!(
            got.contains(want),
            "no {want} op on examples/store:\n{yaml}"
        );
    }
    // With a size budget, the same store also gets budget ops.
    let out = dream(d.path(), &["--max-entry-bytes", "100"]);
    assert!(out.status.success());
    assert!(reasons(&String::from_utf8(out.stdout).unwrap()).contains("budget"));
}

/// The README's second block, command by command, on a copy of the examples.
#[test]
fn the_readme_walkthrough_works_and_rolls_back_to_the_original_bytes() {
    let d = example_store();
    let store = d.path();
    let snapshot = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(dir.join("memories"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let original = snapshot(store);
    let patch = store.join("patch.yaml");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_reverie"))
            .args(args)
            .env("REVERIE_NOW", NOW)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "reverie {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let s = store.to_str().unwrap();
    let p = patch.to_str().unwrap();
    run(&["dream", "--store", s, "--out", p]);
    let diff = run(&["memory", "diff", "--store", s, p]);
    assert!(
        diff.contains("--- a/memories/") && diff.contains("+++ b/memories/"),
        "{diff}"
    );
    run(&["memory", "apply", "--store", s, p]);
    assert_ne!(snapshot(store), original, "apply changed nothing");
    let log = run(&["memory", "log", "--store", s]);
    assert!(log.contains('1'), "{log}");
    run(&["memory", "rollback", "--store", s, "--to", "0"]);
    assert_eq!(
        snapshot(store),
        original,
        "rollback to 0 did not restore the files"
    );
    // Sessions are never touched.
    let sessions = std::fs::read_dir(store.join("sessions")).unwrap().count();
    assert_eq!(sessions, 22);
}
