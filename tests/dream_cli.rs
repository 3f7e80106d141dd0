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
    assert_eq!(ops.len(), 1, "{yaml}");
    assert_eq!(ops[0]["op"].as_str(), Some("merge"));
    assert_eq!(ops[0]["path"].as_str(), Some("prefs.md"));
    let ids = ops[0]["ids"].as_sequence().unwrap();
    assert!(ids[1].as_str().unwrap().starts_with("team/notes.md#"));
    let ev = ops[0]["evidence"].as_sequence().unwrap();
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
