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
use std::time::Duration;

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

/// `reverie memory apply -o json` of patch `p` on store `s`.
fn apply_cmd(s: &tempfile::TempDir, p: &Path, fault: Option<&str>) -> Command {
    let args = [
        "memory",
        "apply",
        "--store",
        store_arg(s),
        p.to_str().expect("utf-8"),
        "-o",
        "json",
    ];
    reverie(&args, fault, &[])
}

/// Runs `cmd` to its end; asserts it succeeded; returns its JSON output.
fn run_ok(cmd: Command, what: &str) -> serde_json::Value {
    let (code, out, err) = finish(cmd);
    assert_eq!(code, Some(0), "{what}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {out}"))
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
    run_ok(apply_cmd(&clean, &p, None), "clean apply");
    let new = tree(&clean.path().join("memories"));
    let old = tree(&store().path().join("memories"));
    assert_ne!(old, new);

    let mut raw_states = Vec::new();
    for point in FAULT_POINTS {
        let s = store();
        let p = patch_file(s.path());
        let child = apply_cmd(&s, &p, Some(point)).spawn().expect("spawn");
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
        let v = run_ok(apply_cmd(&s, &p, None), point);
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
        run_ok(apply_cmd(&s, &p, None), point);
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

        let v = run_ok(reverie(&rollback, None, &[]), point);
        assert_eq!(v["revision"], 2, "{point}: {v}");
        assert_eq!(tree(&s.path().join("memories")), before, "{point}");
        assert_eq!(log_len(&s), 2, "{point}: exactly one rollback record");
        assert_no_leftovers(&s, point);
        // The rolled-back patch applies again on top.
        let v = run_ok(apply_cmd(&s, &p, None), point);
        assert_eq!(v["revision"], 3, "{point}: {v}");
        assert_eq!(tree(&s.path().join("memories")), applied, "{point}");
    }
}

/// The fault-point variables that make `point` block.
fn blocking(point: &str) -> Vec<(&'static str, String)> {
    vec![
        (FAULT_ENV, point.to_string()),
        (FAULT_ACTION_ENV, "block".to_string()),
    ]
}

fn marker(point: &str) -> String {
    format!("{FAULT_REACHED} {point}")
}

/// A store directory whose dream, under a small byte budget, proposes
/// ~5,000 budget deletes: a patch of ~2.5 MB, published in 3 parts.
fn big_store(dir: &Path) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let words = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
        "juliet", "kilo", "lima", "mike", "november", "oscar", "papa",
    ];
    let mut text = String::from("# Facts\n\n");
    for i in 0..5000 {
        let line: Vec<String> = (0..25)
            .map(|_| {
                let w = words[rng.random_range(0..words.len())];
                format!("{w}{}", rng.random_range(0..100_000))
            })
            .collect();
        text.push_str(&format!("- Fact {i}: {}.\n", line.join(" ")));
    }
    std::fs::create_dir_all(dir.join("memories")).expect("mkdir");
    std::fs::create_dir_all(dir.join("sessions")).expect("mkdir");
    std::fs::write(dir.join("memories/facts.md"), text).expect("write");
}

/// `reverie dream --publish` of store `big` in `ns`, with the engine's
/// clock at `now`.
fn publish_cmd(
    cp: &ControlPlane,
    dir: &Path,
    ns: &str,
    now: &str,
    term: &Path,
    fault: Option<&str>,
) -> Command {
    let args = [
        "dream",
        "--store",
        dir.to_str().expect("utf-8"),
        "--max-bytes",
        "1000",
        "--publish",
        "--namespace",
        ns,
        "--store-name",
        "big",
        "--schedule",
        "auto",
        "--termination-log",
        term.to_str().expect("utf-8"),
    ];
    let kubeconfig = cp.kubeconfig_path().display().to_string();
    let mut cmd = reverie(
        &args,
        fault,
        &[("KUBECONFIG", kubeconfig.as_str()), ("REVERIE_NOW", now)],
    );
    // The manifest (megabytes) goes to stdout; nobody reads it here.
    cmd.stdout(Stdio::null());
    cmd
}

/// The patches of store `big`, by name.
async fn big_patches(cp: &ControlPlane, ns: &str) -> BTreeMap<String, MemoryPatch> {
    Api::<MemoryPatch>::namespaced(cp.client(), ns)
        .list(&ListParams::default().labels("reverie.dev/store=big"))
        .await
        .expect("list patches")
        .items
        .into_iter()
        .map(|p| (p.metadata.name.clone().unwrap_or_default(), p))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn dream_killed_mid_publish_leaves_no_approvable_half_and_a_rerun_completes_it() {
    let cp = ControlPlane::shared().await;
    let _node = TestNode::shared().await;
    cp.install_crds().await;
    let ns = cp.create_namespace("crash-publish").await;
    let dir = cp.pvc_dir(&ns, "big-memory");
    big_store(&dir);
    // Auto approval of deletes: a complete group is approved and applied
    // by the controller on its own, so "not approved" below means the gate.
    cp.apply_yaml(
        &ns,
        "apiVersion: reverie.dev/v1alpha1\nkind: MemoryStore\nmetadata: {name: big}\nspec:\n  deletionPolicy: Delete\n  storage: {size: 1Gi}\n---\napiVersion: reverie.dev/v1alpha1\nkind: DreamSchedule\nmetadata: {name: auto}\nspec:\n  storeRef: {name: big}\n  schedule: \"0 3 * * *\"\n  suspend: true\n  approval: {mode: Auto, autoApprove: [delete]}\n",
    );
    let _controller = cp.spawn_controller("controller", &ns, &[], &[]);
    let term = cp.dir().join(format!("{ns}-termination.json"));

    // 1. Killed after the first part.
    let child = publish_cmd(
        cp,
        &dir,
        &ns,
        "2026-11-30T03:00:00Z",
        &term,
        Some("publish-after-part-1"),
    )
    .spawn()
    .expect("spawn dream");
    kill_at_fault(child, "publish-after-part-1");
    let first = big_patches(cp, &ns).await;
    assert_eq!(first.len(), 1, "{:?}", first.keys());
    let (part1, p) = first.iter().next().expect("one part");
    assert!(part1.ends_with("-part-1"), "{part1}");
    let parts: usize = p
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("reverie.dev/parts"))
        .and_then(|n| n.parse().ok())
        .expect("parts annotation");
    assert!(parts >= 2, "{parts}");
    assert!(!term.exists(), "no termination message from a killed dream");
    // The lone part waits: not approved (though Auto would approve it),
    // no apply Job, and its status says why.
    let waiting = wait_patch_phase(cp, &ns, part1, PatchPhase::Pending, WAIT).await;
    let message = waiting.status.and_then(|s| s.message).unwrap_or_default();
    assert!(
        message.contains(&format!("1 of {parts} parts")),
        "{message}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = Api::<MemoryPatch>::namespaced(cp.client(), &ns)
        .get(part1)
        .await
        .expect("part 1");
    assert!(
        !still
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("reverie.dev/approval"),
        "an incomplete group was approved"
    );
    let jobs: Api<Job> = Api::namespaced(cp.client(), &ns);
    let apply_jobs = || async {
        jobs.list(&ListParams::default().labels("reverie.dev/role=apply"))
            .await
            .expect("jobs")
            .items
            .len()
    };
    assert_eq!(apply_jobs().await, 0);

    // 2. A rerun a minute later (the engine would name it differently)
    //    adopts the group's names; killed after the last create, before
    //    its termination message.
    let base = part1.trim_end_matches("-part-1").to_string();
    let child = publish_cmd(
        cp,
        &dir,
        &ns,
        "2026-11-30T03:01:00Z",
        &term,
        Some("publish-before-result"),
    )
    .spawn()
    .expect("spawn dream");
    kill_at_fault(child, "publish-before-result");
    let names: Vec<String> = big_patches(cp, &ns).await.into_keys().collect();
    let want: Vec<String> = (1..=parts).map(|i| format!("{base}-part-{i}")).collect();
    assert_eq!(names, want, "the same names, no second group");
    assert!(!term.exists());

    // 3. A third run finds every part and writes the result.
    let (code, _, err) = finish(publish_cmd(
        cp,
        &dir,
        &ns,
        "2026-11-30T03:01:00Z",
        &term,
        None,
    ));
    assert_eq!(code, Some(0), "{err}");
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&term).expect("termination log"))
            .expect("result json");
    assert_eq!(result["patches"], serde_json::json!(want));
    assert_eq!(big_patches(cp, &ns).await.len(), parts, "no duplicates");

    // The complete group is approved and applied, one part at a time (in
    // the order the parts were approved: the parts are independent).
    let mut revisions = Vec::new();
    for name in &want {
        let p =
            wait_patch_phase(cp, &ns, name, PatchPhase::Applied, Duration::from_secs(150)).await;
        revisions.extend(p.status.and_then(|s| s.applied_revision));
    }
    revisions.sort_unstable();
    assert_eq!(revisions, (1..=parts as u64).collect::<Vec<_>>());
    assert_eq!(apply_jobs().await, parts);
    eprintln!(
        "split patch of {} ops in {parts} parts: killed after part 1 (1 part visible, Pending/IncompleteGroup, not approved), rerun killed before its result ({parts} parts, same names), third run wrote the result; {parts} apply Jobs, revisions 1..={parts}",
        result["ops"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn controller_killed_between_creating_a_job_and_recording_it_makes_no_second_job() {
    let cp = ControlPlane::shared().await;
    let _node = TestNode::shared().await;
    cp.install_crds().await;
    let ns = cp.create_namespace("crash-controller").await;
    let dir = cp.pvc_dir(&ns, "team-memory");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/store"),
        &dir,
    );
    let token = "2026-11-30T21:00:00Z";
    cp.apply_yaml(
        &ns,
        &format!("apiVersion: reverie.dev/v1alpha1\nkind: MemoryStore\nmetadata: {{name: team}}\nspec:\n  deletionPolicy: Delete\n  storage: {{size: 1Gi}}\n---\napiVersion: reverie.dev/v1alpha1\nkind: DreamSchedule\nmetadata:\n  name: nightly\n  annotations: {{reverie.dev/dream-now: \"{token}\"}}\nspec:\n  storeRef: {{name: team}}\n  schedule: \"0 3 * * *\"\n  suspend: true\n"),
    );
    let jobs: Api<Job> = Api::namespaced(cp.client(), &ns);
    let count = |selector: &'static str| {
        let jobs = jobs.clone();
        async move {
            jobs.list(&ListParams::default().labels(selector))
                .await
                .expect("jobs")
                .items
                .len()
        }
    };

    // 1. Killed right after creating the dream-now Job.
    let mut a = cp.spawn_controller("controller-a", &ns, &[], &blocking("dream-job-created"));
    a.wait_line(&marker("dream-job-created"), WAIT).await;
    a.kill();
    let dream_job = reverie::controller::jobs::dream_now_job_name("nightly", token);
    assert!(jobs.get_opt(&dream_job).await.expect("get").is_some());
    let schedules: Api<reverie::api::DreamSchedule> = Api::namespaced(cp.client(), &ns);
    let s = schedules.get("nightly").await.expect("schedule");
    assert_eq!(
        s.status.and_then(|s| s.last_dream_now),
        None,
        "the token was not recorded before the kill"
    );

    // 2. The next controller records the token without a second Job; the
    //    dream publishes a patch; it is killed right after creating the
    //    apply Job for it.
    let mut b = cp.spawn_controller("controller-b", &ns, &[], &blocking("apply-job-created"));
    let status = eventually("the token recorded and a patch proposed", WAIT, || async {
        let s = schedules.get("nightly").await.map_err(|e| e.to_string())?;
        let st = s.status.clone().unwrap_or_default();
        match (&st.last_dream_now, &st.last_patch) {
            (Some(t), Some(_)) if t == token => Ok(st),
            _ => Err(format!("{st:?}")),
        }
    })
    .await;
    assert_eq!(count("reverie.dev/role=dream").await, 1);
    let patch = status.last_patch.expect("patch");
    cp.kubectl_ok(&[
        "annotate",
        "-n",
        &ns,
        "memorypatch",
        &patch,
        "reverie.dev/approval=approved",
    ]);
    b.wait_line(&marker("apply-job-created"), WAIT).await;
    b.kill();
    let p = Api::<MemoryPatch>::namespaced(cp.client(), &ns)
        .get(&patch)
        .await
        .expect("patch");
    assert_ne!(
        p.status.and_then(|s| s.phase),
        Some(PatchPhase::Applying),
        "Applying was not recorded before the kill"
    );

    // 3. A clean controller finishes the loop: one dream Job, one apply
    //    Job, the patch applied once, one journal record.
    let _c = cp.spawn_controller("controller-c", &ns, &[], &[]);
    let applied = wait_patch_phase(cp, &ns, &patch, PatchPhase::Applied, WAIT).await;
    assert_eq!(applied.status.and_then(|s| s.applied_revision), Some(1));
    assert_eq!(count("reverie.dev/role=dream").await, 1);
    assert_eq!(count("reverie.dev/role=apply").await, 1);
    let journal: Vec<String> = tree(&dir.join(".reverie/journal")).into_keys().collect();
    assert_eq!(journal, vec!["0000000001.json".to_string()]);
    assert!(output_text(&cp.kubectl(&["get", "jobs", "-n", &ns])).contains("-apply"));
}
