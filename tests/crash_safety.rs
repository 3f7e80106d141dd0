//! Crash safety (issue 8), with real processes killed by SIGKILL:
//! - `reverie memory apply` and `rollback` killed at every fault point of
//!   the store's write: any reader sees exactly the old or the new revision,
//!   and a rerun converges on the new one;
//! - `reverie dream --publish` killed between the parts of a split patch and
//!   before its termination message: no incomplete group is approvable, and
//!   a rerun completes the same names without duplicates;
//! - `reverie controller` killed between creating a Job and recording it:
//!   the restarted controller finds the Job by its name, creates no second
//!   one, and the loop finishes.
//!
//! A fault point is chosen with `REVERIE_FAULT_POINT` and made to block
//! (`REVERIE_FAULT_ACTION=block`): the process prints a marker on stderr and
//! waits; the test then kills it, so the kill lands exactly there.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::node::TestNode;
use common::reverie::{copy_dir, output_text, wait_patch_phase};
use common::{eventually, ControlPlane};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use reverie::api::{MemoryPatch, PatchPhase};
use reverie::memory::apply::{FAULT_ACTION_ENV, FAULT_ENV, FAULT_POINTS, FAULT_REACHED};
use reverie::memory::entry_id;

const WAIT: Duration = Duration::from_secs(90);

/// `reverie` with `args`, no fault point unless `fault` names one (then
/// blocking), stdout and stderr piped.
fn reverie(args: &[&str], fault: Option<&str>, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reverie"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove(FAULT_ENV)
        .env_remove(FAULT_ACTION_ENV);
    if let Some(point) = fault {
        cmd.env(FAULT_ENV, point).env(FAULT_ACTION_ENV, "block");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Reads the child's stderr until the fault point's marker, then sends
/// SIGKILL and reaps it. Returns the stderr read so far.
fn kill_at_fault(mut child: Child, point: &str) -> String {
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = String::new();
    let want = format!("{FAULT_REACHED} {point}");
    loop {
        match lines.next() {
            Some(Ok(line)) => {
                let hit = line.trim() == want;
                seen.push_str(&line);
                seen.push('\n');
                if hit {
                    break;
                }
            }
            _ => {
                let status = child.wait().expect("wait");
                panic!(
                    "the process ended ({status}) without reaching fault point {point}:\n{seen}"
                );
            }
        }
    }
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{point}: killed by SIGKILL"
    );
    seen
}

/// Runs a command to its end: exit code, stdout, stderr.
fn finish(mut cmd: Command) -> (Option<i32>, String, String) {
    let out = cmd.output().expect("the reverie binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every file below `dir` with its bytes, by path relative to `dir`.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else if let Ok(rel) = p.strip_prefix(base) {
                out.insert(rel.display().to_string(), std::fs::read(&p).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

const NOTES: &str = "# Notes\n\n- Use UTC in logs.\n- The API port is 8080.\n- The default request timeout is 10s.\n\n## Tools\n* prefer ripgrep\n";
const PREFS: &str = "# Preferences\n\n- Answer in English.\n- Keep answers short.\n";
const SESSION: &str = "{\"session\":\"s-1\",\"role\":\"user\",\"content\":\"hi\"}\n";

/// A store with two memory files and a transcript.
fn store() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    let m = d.path().join("memories");
    std::fs::create_dir_all(m.join("team")).expect("mkdir");
    std::fs::write(m.join("notes.md"), NOTES).expect("write");
    std::fs::write(m.join("team/prefs.md"), PREFS).expect("write");
    std::fs::create_dir_all(d.path().join("sessions")).expect("mkdir");
    std::fs::write(d.path().join("sessions/s-1.jsonl"), SESSION).expect("write");
    d
}

/// A patch that changes three files (one new), so that a crash after the
/// first rename leaves the raw tree between the two revisions.
fn patch_file(dir: &Path) -> PathBuf {
    let body = format!(
        "apiVersion: reverie.dev/v1alpha1\nkind: MemoryPatch\nmetadata: {{name: crash}}\nspec:\n  storeRef: {{name: team}}\n  baseRevision: 0\n  summary: crash test\n  ops:\n  - {{op: add, path: lessons.md, section: Deploys, content: Drain first., reason: instruction}}\n  - {{op: update, path: notes.md, id: {}, content: The API port is 9090., before: The API port is 8080., reason: contradiction}}\n  - {{op: delete, path: team/prefs.md, id: {}, before: Keep answers short., reason: stale}}\n",
        entry_id("The API port is 8080."),
        entry_id("Keep answers short.")
    );
    let p = dir.join("crash.yaml");
    std::fs::write(&p, body).expect("write patch");
    p
}

fn store_arg(d: &tempfile::TempDir) -> &str {
    d.path().to_str().expect("utf-8 path")
}

/// The number of journal records `reverie memory log` lists (it opens the
/// store, which rolls an interrupted write forward).
fn log_len(d: &tempfile::TempDir) -> usize {
    let (code, out, err) = finish(reverie(
        &["memory", "log", "--store", store_arg(d), "-o", "json"],
        None,
        &[],
    ));
    assert_eq!(code, Some(0), "log: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("log json");
    v.as_array().map_or(0, Vec::len)
}

/// No temporary file or intent left anywhere in the store.
fn assert_no_leftovers(d: &tempfile::TempDir, what: &str) {
    let left: Vec<String> = tree(d.path())
        .into_keys()
        .filter(|k| k.contains("intent") || k.contains("tmp"))
        .collect();
    assert!(left.is_empty(), "{what}: leftovers {left:?}");
}

/// How the raw tree (before any recovery) compared with the two revisions.
fn classify(
    raw: &BTreeMap<String, Vec<u8>>,
    old: &BTreeMap<String, Vec<u8>>,
    new: &BTreeMap<String, Vec<u8>>,
) -> &'static str {
    if raw == old {
        "old"
    } else if raw == new {
        "new"
    } else {
        "between"
    }
}

#[test]
fn apply_killed_at_every_fault_point_is_old_or_new_and_converges() {
    // The new revision, from a run nobody kills.
    let clean = store();
    let p = patch_file(clean.path());
    let (code, _, err) = finish(reverie(
        &[
            "memory",
            "apply",
            "--store",
            store_arg(&clean),
            p.to_str().expect("utf-8"),
        ],
        None,
        &[],
    ));
    assert_eq!(code, Some(0), "{err}");
    let new = tree(&clean.path().join("memories"));
    let old = tree(&store().path().join("memories"));
    assert_ne!(old, new);

    let mut raw_states = Vec::new();
    for point in FAULT_POINTS {
        let s = store();
        let p = patch_file(s.path());
        let child = reverie(
            &[
                "memory",
                "apply",
                "--store",
                store_arg(&s),
                p.to_str().expect("utf-8"),
            ],
            Some(point),
            &[],
        )
        .spawn()
        .expect("spawn");
        kill_at_fault(child, point);
        let raw = tree(&s.path().join("memories"));
        raw_states.push(format!("{point}: {}", classify(&raw, &old, &new)));

        // Any reader opens the store and sees a whole revision.
        let records = log_len(&s);
        let seen = tree(&s.path().join("memories"));
        if *point == "mid-intent" {
            assert_eq!(seen, old, "{point}: the old revision");
            assert_eq!(records, 0, "{point}");
        } else {
            assert_eq!(seen, new, "{point}: rolled forward to the new revision");
            assert_eq!(records, 1, "{point}");
        }
        assert_eq!(
            std::fs::read_to_string(s.path().join("sessions/s-1.jsonl")).expect("session"),
            SESSION,
            "{point}: sessions/ untouched"
        );

        // The rerun (the apply Job's next attempt) converges on revision 1.
        let (code, out, err) = finish(reverie(
            &[
                "memory",
                "apply",
                "--store",
                store_arg(&s),
                p.to_str().expect("utf-8"),
                "-o",
                "json",
            ],
            None,
            &[],
        ));
        assert_eq!(code, Some(0), "{point}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("outcome json");
        assert_eq!(v["revision"], 1, "{point}: {v}");
        assert_eq!(v["alreadyApplied"], *point != "mid-intent", "{point}: {v}");
        assert_eq!(tree(&s.path().join("memories")), new, "{point}");
        assert_eq!(log_len(&s), 1, "{point}: one journal record");
        assert_no_leftovers(&s, point);
    }
    eprintln!("raw tree after SIGKILL, before recovery: {raw_states:?}");
    // The point between two renames really is between the revisions: the
    // recovery is what makes it whole.
    assert!(
        raw_states.iter().any(|s| s.ends_with("between")),
        "{raw_states:?}"
    );
}

#[test]
fn rollback_killed_at_every_fault_point_is_old_or_new_and_converges() {
    let before = tree(&store().path().join("memories"));
    for point in FAULT_POINTS {
        let s = store();
        let p = patch_file(s.path());
        let (code, _, err) = finish(reverie(
            &[
                "memory",
                "apply",
                "--store",
                store_arg(&s),
                p.to_str().expect("utf-8"),
            ],
            None,
            &[],
        ));
        assert_eq!(code, Some(0), "{err}");
        let applied = tree(&s.path().join("memories"));
        let rollback = [
            "memory",
            "rollback",
            "--store",
            store_arg(&s),
            "--to",
            "0",
            "-o",
            "json",
        ];
        let child = reverie(&rollback, Some(point), &[]).spawn().expect("spawn");
        kill_at_fault(child, point);

        let records = log_len(&s);
        let seen = tree(&s.path().join("memories"));
        if *point == "mid-intent" {
            assert_eq!(seen, applied, "{point}: still revision 1");
            assert_eq!(records, 1, "{point}");
        } else {
            assert_eq!(
                seen, before,
                "{point}: rolled forward to revision 0's files"
            );
            assert_eq!(records, 2, "{point}");
        }

        let (code, out, err) = finish(reverie(&rollback, None, &[]));
        assert_eq!(code, Some(0), "{point}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("outcome json");
        assert_eq!(v["revision"], 2, "{point}: {v}");
        assert_eq!(tree(&s.path().join("memories")), before, "{point}");
        assert_eq!(log_len(&s), 2, "{point}: exactly one rollback record");
        assert_no_leftovers(&s, point);
        // The rolled-back patch applies again on top.
        let (code, out, err) = finish(reverie(
            &[
                "memory",
                "apply",
                "--store",
                store_arg(&s),
                p.to_str().expect("utf-8"),
                "-o",
                "json",
            ],
            None,
            &[],
        ));
        assert_eq!(code, Some(0), "{point}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("outcome json");
        assert_eq!(v["revision"], 3, "{point}: {v}");
        assert_eq!(tree(&s.path().join("memories")), applied, "{point}");
    }
}
