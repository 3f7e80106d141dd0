//! Concurrency (issue 8): the agents' memory tool writing while
//! `reverie memory apply` runs, and two appliers on one store.
//!
//! Nothing is lost: a tool edit of an entry the patch changes either lands
//! first (the patch then comes back Conflicted, exit 3, and the edit is in
//! the file) or comes after the patch (and then sees the new file: its
//! `old_str` is gone, so it fails visibly instead of overwriting). Edits the
//! patch does not touch land either way and survive the apply.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use reverie::memory::apply::{FAULT_ACTION_ENV, FAULT_ENV, FAULT_REACHED};
use reverie::memory::entry_id;
use reverie::runtime::tools::{MemoryTool, StoreMount};

const NOTES: &str = "# Notes\n\n- Use UTC in logs.\n- The API port is 8080.\n";
const PORT: &str = "The API port is 8080.";

fn store() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(d.path().join("memories")).expect("mkdir");
    std::fs::write(d.path().join("memories/notes.md"), NOTES).expect("write");
    d
}

/// A patch that updates the port entry (a precondition the tool's edit of
/// that entry breaks) and adds a lesson in another file.
fn patch(dir: &Path) -> PathBuf {
    let body = format!(
        "apiVersion: reverie.dev/v1alpha1\nkind: MemoryPatch\nmetadata: {{name: port}}\nspec:\n  storeRef: {{name: team}}\n  ops:\n  - {{op: update, path: notes.md, id: {}, content: The API port is 9090., before: {PORT}, reason: contradiction}}\n  - {{op: add, path: lessons.md, content: Check the port., reason: instruction}}\n",
        entry_id(PORT)
    );
    let p = dir.join("port.yaml");
    std::fs::write(&p, body).expect("write patch");
    p
}

fn apply_cmd(store: &Path, patch: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reverie"));
    cmd.args(["memory", "apply", "--store"])
        .arg(store)
        .arg(patch)
        .args(["-o", "json"])
        .env_remove(FAULT_ENV)
        .env_remove(FAULT_ACTION_ENV)
        .env("RUST_LOG", "reverie=info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn read(store: &Path, rel: &str) -> Option<String> {
    std::fs::read_to_string(store.join("memories").join(rel)).ok()
}

/// What one round saw.
#[derive(Debug, Default)]
struct Tally {
    applied: usize,
    conflicted: usize,
    edits_landed_first: usize,
    edits_refused_after: usize,
}

#[test]
fn memory_tool_writes_during_apply_are_never_lost() {
    const ROUNDS: usize = 40;
    const SEED: u64 = 20261130;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(SEED);

    // How long an apply takes here, so that the tool's writes are spread
    // over before, during and after it.
    let calib = store();
    let started = Instant::now();
    let out = apply_cmd(calib.path(), &patch(calib.path()))
        .output()
        .expect("apply runs");
    assert!(out.status.success());
    let span = started.elapsed() * 2;

    let mut tally = Tally::default();
    for round in 0..ROUNDS {
        let s = store();
        let root = s.path().to_path_buf();
        let p = patch(&root);
        let delay = Duration::from_micros(rng.random_range(0..span.as_micros() as u64));
        let order: Vec<usize> = {
            let mut o = vec![0, 1, 2];
            for i in (1..o.len()).rev() {
                o.swap(i, rng.random_range(0..=i));
            }
            o
        };
        let apply = apply_cmd(&root, &p).spawn().expect("spawn apply");
        let tool = MemoryTool {
            stores: vec![StoreMount {
                name: "team".to_string(),
                root: root.clone(),
                read_only: false,
            }],
        };
        let edit = format!("The API port is 8080 (edited in round {round}).");
        let appended = format!("- appended in round {round}");
        let created = format!("- created in round {round}");
        let writer = {
            let (edit, appended, created) = (edit.clone(), appended.clone(), created.clone());
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let mut results = BTreeMap::new();
                for op in order {
                    let (name, input) = match op {
                        0 => (
                            "edit",
                            serde_json::json!({"command": "str_replace", "path": "/memories/team/notes.md", "old_str": PORT, "new_str": edit}),
                        ),
                        1 => (
                            "append",
                            serde_json::json!({"command": "insert", "path": "/memories/team/notes.md", "insert_line": 2, "insert_text": appended}),
                        ),
                        _ => (
                            "create",
                            serde_json::json!({"command": "create", "path": format!("/memories/team/round-{round}.md"), "file_text": format!("{created}\n")}),
                        ),
                    };
                    results.insert(name, tool.call(&input));
                }
                results
            })
        };
        let out = apply.wait_with_output().expect("apply ends");
        let results = writer.join().expect("writer thread");
        let code = out.status.code();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let notes = read(&root, "notes.md").expect("notes");
        let ctx = format!("round {round} (delay {delay:?}): apply {code:?} {stderr}\nnotes:\n{notes}\ntool: {results:?}");

        // The edits that do not touch the patch's entry always land.
        for (name, marker) in [("append", &appended), ("create", &created)] {
            assert!(!results[name].is_error, "{name}: {ctx}");
            let file = if name == "append" {
                notes.clone()
            } else {
                read(&root, &format!("round-{round}.md")).unwrap_or_default()
            };
            assert!(file.contains(marker.as_str()), "{name} lost: {ctx}");
        }
        let edit_result = &results["edit"];
        if edit_result.is_error {
            // The patch came first: the edit saw the new file.
            assert!(edit_result.content.contains("not found"), "{ctx}");
            assert_eq!(code, Some(0), "{ctx}");
            assert!(notes.contains("The API port is 9090."), "{ctx}");
            assert!(read(&root, "lessons.md").is_some(), "{ctx}");
            tally.applied += 1;
            tally.edits_refused_after += 1;
        } else {
            // The edit came first: the patch's precondition fails, nothing
            // of it is written, and the edit is in the file.
            assert_eq!(code, Some(3), "{ctx}");
            assert!(notes.contains(&edit), "{ctx}");
            assert!(!notes.contains("9090"), "{ctx}");
            assert!(read(&root, "lessons.md").is_none(), "{ctx}");
            assert!(!root.join(".reverie/journal").exists(), "{ctx}");
            tally.conflicted += 1;
            tally.edits_landed_first += 1;
        }
    }
    eprintln!(
        "{ROUNDS} rounds (seed {SEED}, tool delay 0..{span:?}): {} applied (edit refused after), {} conflicted (edit landed first); {} tool writes, none lost",
        tally.applied,
        tally.conflicted,
        ROUNDS * 3
    );
    assert_eq!(tally.applied + tally.conflicted, ROUNDS);
    assert_eq!(tally.edits_landed_first, tally.conflicted);
    assert_eq!(tally.edits_refused_after, tally.applied);
    // Both orders happened, so both branches above were exercised.
    assert!(tally.applied > 0 && tally.conflicted > 0, "{tally:?}");
}

/// A patch of `n` adds to `<tag>.md`.
fn big_patch(dir: &Path, tag: &str, n: usize) -> PathBuf {
    let ops: String = (0..n)
        .map(|i| format!("  - {{op: add, path: {tag}.md, section: S, content: {tag} fact {i}, reason: instruction}}\n"))
        .collect();
    let body = format!("apiVersion: reverie.dev/v1alpha1\nkind: MemoryPatch\nmetadata: {{name: {tag}}}\nspec:\n  storeRef: {{name: team}}\n  ops:\n{ops}");
    let p = dir.join(format!("{tag}.yaml"));
    std::fs::write(&p, body).expect("write patch");
    p
}

/// The wait a `store lock acquired after waiting` line reports, in ms.
fn waited_ms(stderr: &str) -> Option<u64> {
    stderr
        .lines()
        .find(|l| l.contains("store lock acquired after waiting"))
        .and_then(|l| l.split("waited_ms=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// The revisions `memory log` lists, with their patch names.
fn journal(store: &Path) -> Vec<(u64, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_reverie"))
        .args(["memory", "log", "--store"])
        .arg(store)
        .args(["-o", "json"])
        .output()
        .expect("log runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("log json");
    let mut revs: Vec<(u64, String)> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            (
                r["revision"].as_u64().expect("revision"),
                r["patch"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    revs.sort();
    revs
}

#[test]
fn a_second_applier_waits_for_the_first_even_when_the_first_is_killed() {
    let s = store();
    let a = big_patch(s.path(), "alpha", 500);
    let b = big_patch(s.path(), "beta", 10);
    // A holds the lock, stuck after recording its intent.
    let mut first = apply_cmd(s.path(), &a)
        .env(FAULT_ENV, "after-intent")
        .env(FAULT_ACTION_ENV, "block")
        .spawn()
        .expect("spawn A");
    let stderr = first.stderr.take().expect("stderr");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains(FAULT_REACHED) => break,
            Some(_) => {}
            None => panic!("A ended before its fault point"),
        }
    }
    let mut second = apply_cmd(s.path(), &b).spawn().expect("spawn B");
    let hold = Duration::from_millis(1500);
    std::thread::sleep(hold);
    // B is still waiting: A holds the lock.
    assert!(
        second.try_wait().expect("try_wait").is_none(),
        "B finished while A held the lock"
    );
    first.kill().expect("SIGKILL A");
    first.wait().expect("reap A");
    let out = second.wait_with_output().expect("B ends");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let waited = waited_ms(&err).expect("B logged its wait");
    // B began to wait once started (a few ms after its spawn) and stopped
    // when A died.
    assert!(waited >= 1000, "{waited} ms: {err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("outcome");
    // B rolled A's intent forward first, then applied its own patch.
    assert_eq!(v["revision"], 2, "{v}");
    assert_eq!(
        journal(s.path()),
        vec![(1, "alpha".to_string()), (2, "beta".to_string())]
    );
    eprintln!("B waited {waited} ms behind a stuck A; after A was killed, B recovered A's write (revision 1) and applied its own (revision 2)");
}

#[test]
fn two_appliers_at_once_serialise_with_a_consistent_journal() {
    const ROUNDS: usize = 8;
    let mut waits = Vec::new();
    // Both patches add to one large file, so each holds the lock while it
    // reads, edits and writes ~1.5 MB: long enough for the two to meet.
    let mut shared = String::from("# Shared\n\n");
    for i in 0..20_000 {
        shared.push_str(&format!("- shared fact number {i} about the system\n"));
    }
    for round in 0..ROUNDS {
        let s = store();
        std::fs::write(s.path().join("memories/alpha.md"), &shared).expect("write");
        std::fs::write(s.path().join("memories/beta.md"), &shared).expect("write");
        let a = big_patch(s.path(), "alpha", 2000);
        let b = big_patch(s.path(), "beta", 2000);
        let (pa, pb) = (
            apply_cmd(s.path(), &a).spawn().expect("spawn A"),
            apply_cmd(s.path(), &b).spawn().expect("spawn B"),
        );
        let mut revs = Vec::new();
        for child in [pa, pb] {
            let out = child.wait_with_output().expect("apply ends");
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(out.status.success(), "round {round}: {err}");
            if let Some(ms) = waited_ms(&err) {
                waits.push(ms);
            }
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("outcome");
            revs.push(v["revision"].as_u64().expect("revision"));
        }
        revs.sort();
        assert_eq!(revs, vec![1, 2], "round {round}");
        let j = journal(s.path());
        assert_eq!(j.len(), 2, "round {round}: {j:?}");
        let mut names: Vec<&str> = j.iter().map(|(_, n)| n.as_str()).collect();
        names.sort();
        assert_eq!(names, vec!["alpha", "beta"], "round {round}");
        for tag in ["alpha", "beta"] {
            let text = read(s.path(), &format!("{tag}.md")).expect("file");
            assert_eq!(
                text.lines().filter(|l| l.starts_with("- ")).count(),
                22_000,
                "round {round}: {tag}"
            );
        }
    }
    waits.sort_unstable();
    eprintln!(
        "{ROUNDS} rounds of two 2,000-op appliers: {} waited for the lock (ms, sorted: {waits:?})",
        waits.len()
    );
}

#[test]
fn a_tool_write_queued_behind_an_apply_that_dies_sees_the_rolled_forward_file() {
    // An intent as a killed apply leaves it: made on a twin store.
    let twin = store();
    let mut killed = apply_cmd(twin.path(), &patch(twin.path()))
        .env(FAULT_ENV, "after-intent")
        .env(FAULT_ACTION_ENV, "block")
        .spawn()
        .expect("spawn apply");
    let stderr = killed.stderr.take().expect("stderr");
    let reached = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .map_while(Result::ok)
        .any(|l| l.contains(FAULT_REACHED));
    assert!(reached, "the apply did not reach its fault point");
    killed.kill().expect("SIGKILL");
    killed.wait().expect("reap");
    let intent = std::fs::read(twin.path().join(".reverie/intent.json")).expect("intent");

    // The store: an apply holds the lock (here: this thread) when the tool
    // has already opened the store and queues for the lock; the apply
    // records its intent and dies; the tool gets the lock.
    let s = store();
    let root = s.path().to_path_buf();
    let opened = reverie::memory::Store::open(&root).expect("open");
    let held = reverie::memory::lock::StoreLock::acquire(&opened).expect("lock");
    let tool = MemoryTool {
        stores: vec![StoreMount {
            name: "team".to_string(),
            root: root.clone(),
            read_only: false,
        }],
    };
    let writer = std::thread::spawn(move || {
        tool.call(&serde_json::json!({"command": "str_replace", "path": "/memories/team/notes.md", "old_str": PORT, "new_str": "The API port is 7070."}))
    });
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(root.join(".reverie/intent.json"), intent).expect("intent");
    drop(held);
    let result = writer.join().expect("writer");

    // The tool edited the new revision: its old_str was gone, so it wrote
    // nothing, and no later recovery can bring the old write back over it.
    assert!(result.is_error, "{result:?}");
    assert!(result.content.contains("not found"), "{result:?}");
    reverie::memory::Store::open(&root).expect("reopen");
    let notes = read(&root, "notes.md").expect("notes");
    assert!(notes.contains("The API port is 9090."), "{notes}");
    assert!(!root.join(".reverie/intent.json").exists());
}
