//! `reverie memory apply|diff|log|rollback` run as a process on temporary
//! stores: every op kind, byte identity of untouched text, conflicts,
//! invalid patches, path traversal, idempotence, journal and rollback,
//! crashes at every fault point, concurrent appliers and a large patch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use reverie::memory::entry_id;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn reverie(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reverie"));
    cmd.args(args).stdin(Stdio::null());
    cmd.env_remove("REVERIE_FAULT_POINT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the reverie binary runs");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

const NOTES: &str = "# Notes\n\n- Use UTC in logs.\n- The API port is 8080.\n\nDeploys go through the\nstaging cluster first. <!-- reverie: {\"hits\":3} -->\n\n## Tools\n* prefer ripgrep\n* old tip\n";
const PREFS: &str = "# Preferences\n\n- Answer in English.\n- Keep answers short.\n";
const UNTOUCHED: &str = "Never touched.\n\n- keep me   exactly\n";
const SESSION: &str = "{\"session\":\"s-1\",\"role\":\"user\",\"content\":\"hi\"}\n";

/// A store with three memory files and one session transcript.
fn store() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let m = d.path().join("memories");
    std::fs::create_dir_all(m.join("team")).unwrap();
    std::fs::write(m.join("notes.md"), NOTES).unwrap();
    std::fs::write(m.join("team/prefs.md"), PREFS).unwrap();
    std::fs::write(m.join("untouched.md"), UNTOUCHED).unwrap();
    std::fs::create_dir_all(d.path().join("sessions")).unwrap();
    std::fs::write(d.path().join("sessions/s-1.jsonl"), SESSION).unwrap();
    d
}

/// Every file below `dir/sub` with its bytes.
fn snapshot(dir: &Path, sub: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let base = dir.join(sub);
    let mut stack = vec![base.clone()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(&base).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// The memory files, sessions and reverie state of a store (the empty
/// lock file, created by any writer, aside).
fn all_state(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for sub in ["memories", "sessions", ".reverie"] {
        for (k, v) in snapshot(dir, sub) {
            if sub == ".reverie" && k == "lock" {
                continue;
            }
            out.insert(format!("{sub}/{k}"), v);
        }
    }
    out
}

fn read(dir: &Path, rel: &str) -> String {
    std::fs::read_to_string(dir.join("memories").join(rel)).unwrap()
}

/// Writes a patch file outside the store and returns its path.
fn patch_file(dir: &tempfile::TempDir, name: &str, body: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, body).unwrap();
    p
}

fn manifest(name: &str, ops: &str) -> String {
    format!(
        "apiVersion: reverie.dev/v1alpha1\nkind: MemoryPatch\nmetadata:\n  name: {name}\nspec:\n  storeRef: {{name: team-memory}}\n  baseRevision: 0\n  summary: test\n  ops:\n{ops}"
    )
}

fn apply_json(store: &Path, patch: &Path, env: &[(&str, &str)]) -> (Run, serde_json::Value) {
    let r = reverie(
        &[
            "memory",
            "apply",
            "--store",
            store.to_str().unwrap(),
            patch.to_str().unwrap(),
            "--output",
            "json",
        ],
        env,
    );
    let v = serde_json::from_str(r.stdout.trim()).unwrap_or(serde_json::Value::Null);
    (r, v)
}

/// A patch using every op kind.
fn all_ops_patch() -> String {
    let port = entry_id("The API port is 8080.");
    let deploy = entry_id("Deploys go through the\nstaging cluster first.");
    let utc = entry_id("Use UTC in logs.");
    let short = entry_id("Keep answers short.");
    let old_tip = entry_id("old tip");
    manifest(
        "all-ops",
        &format!(
            "  - {{op: add, path: notes.md, section: Tools, content: run cargo fmt before commits, reason: working-method, evidence: [{{session: s-1, line: 1}}]}}\n\
             \x20 - {{op: update, path: notes.md, id: {port}, content: The API port is 9090., before: The API port is 8080., reason: contradiction}}\n\
             \x20 - {{op: merge, path: notes.md, ids: [{deploy}, \"team/prefs.md#{short}\"], content: \"Deploys go through staging\\nfirst; keep answers short.\", reason: duplicate}}\n\
             \x20 - {{op: delete, path: notes.md, id: {old_tip}, before: old tip, reason: stale}}\n\
             \x20 - {{op: move, path: notes.md, id: {utc}, to: team/prefs.md, section: Shared, reason: shared-preference}}\n\
             \x20 - {{op: add, path: new/lessons.md, section: Deploys, content: check the rollout, reason: recurring-error}}\n\
             \x20 - {{op: add, path: notes.md, content: prefer ripgrep, reason: duplicate}}\n"
        ),
    )
}

const NOTES_AFTER: &str = "# Notes\n\n- The API port is 9090.\n\nDeploys go through staging\nfirst; keep answers short. <!-- reverie: {\"hits\":3} -->\n\n## Tools\n* prefer ripgrep\n- run cargo fmt before commits\n";
const PREFS_AFTER: &str =
    "# Preferences\n\n- Answer in English.\n\n## Shared\n\n- Use UTC in logs.\n";
const LESSONS_AFTER: &str = "## Deploys\n\n- check the rollout\n";

#[test]
fn every_op_kind_and_untouched_bytes() {
    let s = store();
    let p = patch_file(&s, "p.yaml", &all_ops_patch());
    let sessions = snapshot(s.path(), "sessions");
    let (r, v) = apply_json(s.path(), &p, &[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(read(s.path(), "notes.md"), NOTES_AFTER);
    assert_eq!(read(s.path(), "team/prefs.md"), PREFS_AFTER);
    assert_eq!(read(s.path(), "new/lessons.md"), LESSONS_AFTER);
    assert_eq!(read(s.path(), "untouched.md"), UNTOUCHED);
    assert_eq!(snapshot(s.path(), "sessions"), sessions);
    assert_eq!(v["revision"], 1);
    assert_eq!(v["alreadyApplied"], false);
    assert_eq!(
        v["filesChanged"],
        serde_json::json!(["new/lessons.md", "notes.md", "team/prefs.md"])
    );
    // 4 notes + 2 prefs + 1 lesson + 2 untouched.
    assert_eq!(v["entries"], 9);
    let bytes = NOTES_AFTER.len() + PREFS_AFTER.len() + LESSONS_AFTER.len() + UNTOUCHED.len();
    assert_eq!(v["bytes"], bytes as u64);
    assert!(
        !s.path().join(".reverie/intent.json").exists(),
        "the intent is removed after a write"
    );
}

#[test]
fn diff_shows_the_change_and_writes_nothing() {
    let s = store();
    let port = entry_id("The API port is 8080.");
    let p = patch_file(
        &s,
        "p.yaml",
        &manifest(
            "d",
            &format!("  - {{op: update, path: notes.md, id: {port}, content: The API port is 9090., reason: contradiction}}\n"),
        ),
    );
    let before = all_state(s.path());
    let r = reverie(
        &[
            "memory",
            "diff",
            "--store",
            s.path().to_str().unwrap(),
            p.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "--- a/memories/notes.md\n+++ b/memories/notes.md\n@@ -1,7 +1,7 @@\n # Notes\n \n - Use UTC in logs.\n-- The API port is 8080.\n+- The API port is 9090.\n \n Deploys go through the\n staging cluster first. <!-- reverie: {\"hits\":3} -->\n"
    );
    assert_eq!(all_state(s.path()), before);
}

#[test]
fn conflict_exits_3_and_writes_nothing() {
    let s = store();
    let port = entry_id("The API port is 8080.");
    let gone = entry_id("no such entry");
    for (i, ops) in [
        // `before` that lies.
        format!("  - {{op: add, path: notes.md, content: x, reason: instruction}}\n  - {{op: update, path: notes.md, id: {port}, content: y, before: The API port is 1., reason: contradiction}}\n"),
        // An entry that is gone.
        format!("  - {{op: add, path: notes.md, content: x, reason: instruction}}\n  - {{op: delete, path: team/prefs.md, id: {gone}, reason: stale}}\n"),
        // A file that does not exist.
        format!("  - {{op: add, path: notes.md, content: x, reason: instruction}}\n  - {{op: move, path: missing.md, id: {gone}, to: notes.md, reason: stale}}\n"),
    ]
    .iter()
    .enumerate()
    {
        let before = all_state(s.path());
        let p = patch_file(&s, &format!("c{i}.yaml"), &manifest("c", ops));
        let (r, _) = apply_json(s.path(), &p, &[]);
        assert_eq!(r.code, Some(3), "case {i}: {}", r.stderr);
        assert!(r.stderr.contains("spec.ops[1] ("), "case {i}: {}", r.stderr);
        assert!(r.stdout.is_empty());
        assert_eq!(all_state(s.path()), before, "case {i}");
    }
}

#[test]
fn invalid_patches_exit_2_naming_the_op() {
    let s = store();
    let before = all_state(s.path());
    let cases = [
        ("  - {op: add, path: notes.md, content: x, reason: instruction}\n  - {op: frobnicate, path: notes.md, reason: stale}\n", "spec.ops[1]: unknown op \"frobnicate\""),
        ("  - {op: update, path: notes.md, content: x, reason: stale}\n", "spec.ops[0] (update): missing field `id`"),
        ("  - {op: add, path: notes.md, reason: stale}\n", "spec.ops[0] (add): missing field `content`"),
        ("  - {op: add, path: notes.md, content: x}\n", "spec.ops[0] (add): missing field `reason`"),
        ("  - {op: merge, path: notes.md, ids: [0123456789ab], content: x, reason: duplicate}\n", "spec.ops[0] (merge): needs at least two ids"),
        ("  - {op: move, path: notes.md, id: 0123456789ab, reason: stale}\n", "spec.ops[0] (move): missing field `to`"),
        ("  - {op: add, path: notes.md, content: \"x\\n## Heading\", reason: stale}\n", "spec.ops[0] (add): content has a heading"),
        ("  - {op: delete, path: notes.md, id: 0123456789AB, reason: stale}\n", "spec.ops[0] (delete): id"),
    ];
    for (i, (ops, want)) in cases.iter().enumerate() {
        let p = patch_file(&s, &format!("i{i}.yaml"), &manifest("i", ops));
        let (r, _) = apply_json(s.path(), &p, &[]);
        assert_eq!(r.code, Some(2), "case {i}: {}", r.stderr);
        assert!(r.stderr.contains(want), "case {i}: {}", r.stderr);
    }
    // Not YAML at all, and a JSON bare spec with a bad op.
    let p = patch_file(&s, "bad.yaml", "ops: [\n");
    assert_eq!(apply_json(s.path(), &p, &[]).0.code, Some(2));
    let p = patch_file(
        &s,
        "bad.json",
        r#"{"ops":[{"op":"delete","path":"notes.md","reason":"stale"}]}"#,
    );
    let (r, _) = apply_json(s.path(), &p, &[]);
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr
            .contains("spec.ops[0] (delete): missing field `id`"),
        "{}",
        r.stderr
    );
    assert_eq!(all_state(s.path()), before);
}

#[test]
fn path_traversal_is_rejected() {
    let s = store();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), s.path().join("memories/link")).unwrap();
    let before = all_state(s.path());
    for (i, path) in [
        "../escape.md",
        "team/../../escape.md",
        "/tmp/escape.md",
        "a\\u0000b.md",
        "link/escape.md",
        ".reverie/x.md",
        "notes.txt",
    ]
    .iter()
    .enumerate()
    {
        let ops = format!("  - {{op: add, path: \"{path}\", content: x, reason: instruction}}\n");
        let p = patch_file(&s, &format!("t{i}.yaml"), &manifest("t", &ops));
        let (r, _) = apply_json(s.path(), &p, &[]);
        assert_eq!(r.code, Some(2), "{path}: {}", r.stderr);
        assert!(
            r.stderr.contains("spec.ops[0] (add)"),
            "{path}: {}",
            r.stderr
        );
    }
    // A move whose target goes out through the link.
    let utc = entry_id("Use UTC in logs.");
    let ops =
        format!("  - {{op: move, path: notes.md, id: {utc}, to: link/x.md, reason: stale}}\n");
    let p = patch_file(&s, "mv.yaml", &manifest("t", &ops));
    let (r, _) = apply_json(s.path(), &p, &[]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("symbolic link"), "{}", r.stderr);
    assert_eq!(all_state(s.path()), before);
    assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
    assert!(!s.path().join("escape.md").exists());
}

#[test]
fn reapply_is_a_noop_and_log_and_rollback_work() {
    let s = store();
    let original = snapshot(s.path(), "memories");
    let sessions = snapshot(s.path(), "sessions");
    let p = patch_file(&s, "p.yaml", &all_ops_patch());
    assert_eq!(apply_json(s.path(), &p, &[]).0.code, Some(0));
    let applied = snapshot(s.path(), "memories");
    let (r, v) = apply_json(s.path(), &p, &[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(v["alreadyApplied"], true);
    assert_eq!(v["revision"], 1);
    let table = reverie(
        &[
            "memory",
            "apply",
            "--store",
            s.path().to_str().unwrap(),
            p.to_str().unwrap(),
        ],
        &[],
    );
    assert!(table.stdout.contains("already applied"), "{}", table.stdout);
    let d = reverie(
        &[
            "memory",
            "diff",
            "--store",
            s.path().to_str().unwrap(),
            p.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!((d.code, d.stdout.as_str()), (Some(0), ""));
    assert!(d.stderr.contains("already applied"), "{}", d.stderr);
    assert_eq!(snapshot(s.path(), "memories"), applied);

    let store_arg = s.path().to_str().unwrap();
    let r = reverie(
        &[
            "memory", "rollback", "--store", store_arg, "--to", "0", "--output", "json",
        ],
        &[],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["revision"], 2);
    assert_eq!(snapshot(s.path(), "memories"), original);
    assert!(!s.path().join("memories/new/lessons.md").exists());

    // The rollback is a revision of its own and can be rolled back.
    let r = reverie(
        &["memory", "rollback", "--store", store_arg, "--to", "1"],
        &[],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(snapshot(s.path(), "memories"), applied);
    assert_eq!(
        reverie(
            &["memory", "rollback", "--store", store_arg, "--to", "9"],
            &[]
        )
        .code,
        Some(2)
    );

    let r = reverie(
        &["memory", "log", "--store", store_arg, "--output", "json"],
        &[],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let log: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let revs: Vec<(u64, String, String)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["revision"].as_u64().unwrap(),
                e["action"].as_str().unwrap().to_string(),
                e["patch"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        revs,
        vec![
            (3, "rollback".into(), "rollback-to-1".into()),
            (2, "rollback".into(), "rollback-to-0".into()),
            (1, "apply".into(), "all-ops".into()),
        ]
    );
    let r = reverie(&["memory", "log", "--store", store_arg], &[]);
    assert!(r.stdout.starts_with("REVISION"), "{}", r.stdout);
    let r = reverie(&["memory", "log", "--store", store_arg, "-o", "yaml"], &[]);
    assert!(r.stdout.contains("patch: all-ops"), "{}", r.stdout);
    assert_eq!(snapshot(s.path(), "sessions"), sessions);
}

#[test]
fn crash_at_every_fault_point_converges() {
    let points = [
        "mid-intent",
        "after-intent",
        "after-first-rename",
        "before-journal",
        "after-journal",
        "after-revision",
    ];
    // The state the all-ops patch produces, from a clean run.
    let clean = store();
    let p = patch_file(&clean, "p.yaml", &all_ops_patch());
    assert_eq!(apply_json(clean.path(), &p, &[]).0.code, Some(0));
    let new_state = snapshot(clean.path(), "memories");

    for point in points {
        let s = store();
        let old_state = snapshot(s.path(), "memories");
        let p = patch_file(&s, "p.yaml", &all_ops_patch());
        let (r, _) = apply_json(s.path(), &p, &[("REVERIE_FAULT_POINT", point)]);
        assert_eq!(
            r.code, None,
            "{point}: the process should abort: {}",
            r.stderr
        );
        // Any reader (here `log`) sees a whole revision: old or new.
        let store_arg = s.path().to_str().unwrap();
        let log = reverie(&["memory", "log", "--store", store_arg, "-o", "json"], &[]);
        assert_eq!(log.code, Some(0), "{point}: {}", log.stderr);
        let seen = snapshot(s.path(), "memories");
        let records = serde_json::from_str::<serde_json::Value>(&log.stdout).unwrap();
        if point == "mid-intent" {
            assert_eq!(seen, old_state, "{point}: old state expected");
            assert_eq!(records.as_array().unwrap().len(), 0);
        } else {
            assert_eq!(seen, new_state, "{point}: rolled forward to the new state");
            assert_eq!(records.as_array().unwrap().len(), 1);
        }
        // Rerunning converges on exactly the new revision.
        let (r, v) = apply_json(s.path(), &p, &[]);
        assert_eq!(r.code, Some(0), "{point}: {}", r.stderr);
        assert_eq!(v["revision"], 1, "{point}");
        assert_eq!(snapshot(s.path(), "memories"), new_state, "{point}");
        let state = snapshot(s.path(), ".reverie");
        assert!(
            state
                .keys()
                .all(|k| !k.contains("intent") && !k.contains("reverie-tmp")),
            "{point}: leftovers {:?}",
            state.keys().collect::<Vec<_>>()
        );
        let left: Vec<_> = snapshot(s.path(), "memories")
            .into_keys()
            .filter(|k| k.contains("reverie-tmp"))
            .collect();
        assert!(left.is_empty(), "{point}: {left:?}");
    }
}

#[test]
fn concurrent_appliers_both_finish() {
    let s = store();
    let big = |tag: &str| {
        let ops: String = (0..2000)
            .map(|i| format!("  - {{op: add, path: {tag}.md, section: S, content: {tag} fact {i}, reason: instruction}}\n"))
            .collect();
        manifest(tag, &ops)
    };
    let pa = patch_file(&s, "a.yaml", &big("alpha"));
    let pb = patch_file(&s, "b.yaml", &big("beta"));
    let spawn = |p: &Path| {
        Command::new(env!("CARGO_BIN_EXE_reverie"))
            .args([
                "memory",
                "apply",
                "--store",
                s.path().to_str().unwrap(),
                p.to_str().unwrap(),
                "-o",
                "json",
            ])
            .env_remove("REVERIE_FAULT_POINT")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(&pa), spawn(&pb));
    let mut revs = Vec::new();
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        revs.push(v["revision"].as_u64().unwrap());
    }
    revs.sort();
    assert_eq!(revs, vec![1, 2]);
    for tag in ["alpha", "beta"] {
        let text = read(s.path(), &format!("{tag}.md"));
        assert_eq!(text.lines().filter(|l| l.starts_with("- ")).count(), 2000);
    }
}

#[test]
fn large_patch_applies() {
    let s = store();
    let n = 100_000;
    let ops: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "op": "add",
                "path": format!("bulk/f{}.md", i % 20),
                "section": format!("Part {}", i % 7),
                "content": format!("fact number {i} about the system"),
                "reason": "instruction",
            })
        })
        .collect();
    let body = serde_json::json!({
        "apiVersion": "reverie.dev/v1alpha1",
        "kind": "MemoryPatch",
        "metadata": {"name": "bulk"},
        "spec": {"storeRef": {"name": "s"}, "ops": ops},
    });
    let p = patch_file(&s, "bulk.json", &body.to_string());
    let t = std::time::Instant::now();
    let (r, v) = apply_json(s.path(), &p, &[]);
    let took = t.elapsed();
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(v["filesChanged"].as_array().unwrap().len(), 20);
    assert_eq!(v["entries"], n + 9);
    println!("applied a {n}-op patch in {:.2?}", took);
    eprintln!("applied a {n}-op patch in {:.2?}", took);
}

#[test]
fn help_and_argument_errors() {
    for sub in ["apply", "diff", "log", "rollback"] {
        let r = reverie(&["memory", sub, "--help"], &[]);
        assert_eq!(r.code, Some(0), "{sub}: {}", r.stderr);
        assert!(r.stdout.contains("--store"), "{sub}: {}", r.stdout);
    }
    let s = store();
    let store_arg = s.path().to_str().unwrap();
    // Missing --to, a missing patch file, and a directory that is not a store.
    assert_eq!(
        reverie(&["memory", "rollback", "--store", store_arg], &[]).code,
        Some(2)
    );
    let r = reverie(
        &[
            "memory",
            "apply",
            "--store",
            store_arg,
            "/nonexistent/p.yaml",
        ],
        &[],
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    let empty = tempfile::tempdir().unwrap();
    let r = reverie(
        &["memory", "log", "--store", empty.path().to_str().unwrap()],
        &[],
    );
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("memories"), "{}", r.stderr);
}

#[test]
fn retention_compacts_the_journal_and_keeps_the_log() {
    let s = store();
    let st = s.path().to_str().unwrap();
    for i in 0..4 {
        let ops = format!(
            "  - op: add\n    path: notes.md\n    content: retained entry {i}\n    reason: recurring-error\n    evidence:\n    - {{session: s-1, line: 1}}\n"
        );
        let p = patch_file(&s, &format!("p{i}.yaml"), &manifest(&format!("p{i}"), &ops));
        let r = reverie(
            &[
                "memory",
                "apply",
                "--store",
                st,
                p.to_str().unwrap(),
                "--keep-revisions",
                "2",
            ],
            &[],
        );
        assert_eq!(r.code, Some(0), "{}", r.stderr);
    }
    // Revisions 1 and 2 are compacted, the log still lists all four with their op counts.
    let log = reverie(&["memory", "log", "--store", st, "-o", "json"], &[]);
    let rows: serde_json::Value = serde_json::from_str(&log.stdout).unwrap();
    let revs: Vec<(u64, u64)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["revision"].as_u64().unwrap(), r["ops"].as_u64().unwrap()))
        .collect();
    assert_eq!(revs, vec![(4, 1), (3, 1), (2, 1), (1, 1)]);
    let rec1 = std::fs::read_to_string(s.path().join(".reverie/journal/0000000001.json")).unwrap();
    assert!(
        rec1.contains("\"compacted\"") && !rec1.contains("retained entry 0"),
        "{rec1}"
    );
    // Rolling back across a compacted record is refused with the reachable revision named.
    let r = reverie(&["memory", "rollback", "--store", st, "--to", "1"], &[]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("oldest revision that can be restored is 2"),
        "{}",
        r.stderr
    );
    let r = reverie(&["memory", "rollback", "--store", st, "--to", "2"], &[]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let notes = read(s.path(), "notes.md");
    assert!(
        notes.contains("retained entry 1") && !notes.contains("retained entry 2"),
        "{notes}"
    );
    // `memory prune` removes old transcripts; the rest of the store is untouched.
    let memories = snapshot(s.path(), "memories");
    std::fs::write(s.path().join("sessions/s-2.jsonl"), SESSION).unwrap();
    let r = reverie(
        &[
            "memory",
            "prune",
            "--store",
            st,
            "--keep-sessions",
            "1",
            "-o",
            "json",
        ],
        &[],
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["sessionsRemoved"].as_array().unwrap().len(), 1);
    assert_eq!(snapshot(s.path(), "sessions").len(), 1);
    assert_eq!(snapshot(s.path(), "memories"), memories);
    let r = reverie(&["memory", "prune", "--store", st], &[]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
}
