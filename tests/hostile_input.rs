//! Hostile input against the real binary, the memory tool and the real
//! control plane: paths that try to leave the store (look-alikes, control
//! and bidirectional characters, symbolic links) in patches, in the memory
//! tool and in transcript names; a 50 MB transcript line; a 100,000-op
//! patch; odd Unicode in entries; a `before` that lies; and an API key that
//! must not appear in any log, Event, status or file.
//!
//! Covered elsewhere, not repeated: `..`, absolute, NUL and symlinked
//! directories in patch paths and a lying `before` on `update`
//! (`tests/memory_cli.rs`); a MemoryPatch spec edited after creation is
//! refused by the apiserver (`tests/crd_validation.rs`,
//! `patch_and_session_specs_are_immutable`).

mod common;
mod mock_llm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::node::TestNode;
use common::reverie::{copy_dir, output_text};
use common::{eventually, ControlPlane};
use kube::api::{Api, ListParams, PostParams};
use mock_llm::{Answer, MockLlm, Rule};
use reverie::api::{AgentSession, MemoryPatch, MemoryPatchSpec, SessionPhase};
use reverie::memory::entry_id;
use reverie::runtime::tools::{MemoryTool, StoreMount};

fn reverie(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reverie"))
        .args(args)
        .stdin(Stdio::null())
        .env_remove("REVERIE_FAULT_POINT")
        .output()
        .expect("the reverie binary runs")
}

/// Runs the binary under GNU time; returns the output and the peak RSS in
/// KiB (`None` when /usr/bin/time is not installed).
fn reverie_measured(args: &[&str]) -> (Output, Option<u64>) {
    let time = Path::new("/usr/bin/time");
    if !time.exists() {
        return (reverie(args), None);
    }
    let report = tempfile::NamedTempFile::new().expect("temp file");
    let out = Command::new(time)
        .args(["-f", "%M", "-o"])
        .arg(report.path())
        .arg(env!("CARGO_BIN_EXE_reverie"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("/usr/bin/time runs");
    let kib = std::fs::read_to_string(report.path())
        .ok()
        .and_then(|s| s.lines().last().and_then(|l| l.trim().parse().ok()));
    (out, kib)
}

/// Every entry below `dir` (not following links): files with their bytes,
/// links with their target, directories as empty.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("dir entry").path();
            let rel = p.strip_prefix(dir).expect("below dir").to_path_buf();
            if rel == Path::new(".reverie") {
                // Created empty by any writer to hold its lock; its
                // contents (revision, journal) are still compared below.
                todo.push(p);
                continue;
            }
            let md = std::fs::symlink_metadata(&p).expect("metadata");
            if md.file_type().is_symlink() {
                let target = std::fs::read_link(&p).expect("read_link");
                out.insert(rel, format!("-> {}", target.display()).into_bytes());
            } else if md.is_dir() {
                out.insert(rel, Vec::new());
                todo.push(p);
            } else if p.file_name().is_none_or(|n| n != "lock") {
                // The lock file is created empty by any writer that
                // waits for it; it holds no state.
                out.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    out
}

const NOTES: &str = "# Notes\n\n- Use UTC in logs.\n- The API port is 8080.\n";

/// A store with `memories/notes.md`, one transcript, and a directory
/// outside it that escapes would land in.
fn store() -> (tempfile::TempDir, tempfile::TempDir) {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(d.path().join("memories")).expect("mkdir");
    std::fs::create_dir_all(d.path().join("sessions")).expect("mkdir");
    std::fs::write(d.path().join("memories/notes.md"), NOTES).expect("write");
    std::fs::write(
        d.path().join("sessions/s-1.jsonl"),
        "{\"role\":\"user\",\"content\":\"hello\"}\n",
    )
    .expect("write");
    (d, tempfile::tempdir().expect("tempdir"))
}

/// Writes `ops` (a JSON array) as a bare-spec patch file and applies it.
fn apply(store: &Path, ops: serde_json::Value) -> Output {
    let patch = store.join("patch.json");
    std::fs::write(&patch, serde_json::json!({ "ops": ops }).to_string()).expect("write");
    let out = reverie(&[
        "memory",
        "apply",
        "--store",
        store.to_str().expect("utf-8"),
        patch.to_str().expect("utf-8"),
    ]);
    std::fs::remove_file(&patch).expect("remove patch");
    out
}

/// Paths that look like traversal or hide what they are.
const LOOKALIKES: &[&str] = &[
    "\u{FF0E}\u{FF0E}/x.md", // fullwidth full stops
    "..\u{FF0F}x.md",        // fullwidth solidus
    "\u{FF0E}\u{FF0E}\u{FF0F}etc/x.md",
    "a\u{2215}b.md",           // division slash
    "a\u{2044}..\u{2044}b.md", // fraction slash
    "evil\u{202E}dm.txt.md",   // right-to-left override
    "ok\u{200B}.md",           // zero-width space
    "a\u{FEFF}b.md",           // byte-order mark
    "line\nbreak.md",
    "tab\there.md",
];

#[test]
fn lookalike_and_invisible_paths_are_refused_and_the_store_is_unchanged() {
    let (s, outside) = store();
    let utc = entry_id("Use UTC in logs.");
    let before = tree(s.path());
    for p in LOOKALIKES {
        for (field, ops) in [
            (
                "path",
                serde_json::json!([{"op": "add", "path": p, "content": "x", "reason": "instruction"}]),
            ),
            (
                "to",
                serde_json::json!([{"op": "move", "path": "notes.md", "id": utc, "to": p, "before": "Use UTC in logs.", "reason": "instruction"}]),
            ),
            (
                "ids",
                serde_json::json!([{"op": "merge", "path": "notes.md", "ids": [utc, format!("{p}#{utc}")], "content": "x", "reason": "duplicate"}]),
            ),
        ] {
            let out = apply(s.path(), ops);
            let text = output_text(&out);
            assert_eq!(out.status.code(), Some(2), "{field} {p:?}: {text}");
            assert!(text.contains("spec.ops[0] ("), "{field} {p:?}: {text}");
            assert!(
                text.contains("U+") || text.contains("not allowed"),
                "{field} {p:?}: the message should say what is wrong: {text}"
            );
        }
    }
    assert_eq!(tree(s.path()), before);
    assert!(tree(outside.path()).is_empty());
}

#[test]
fn symlinks_in_the_store_are_not_followed() {
    let (s, outside) = store();
    let secret = outside.path().join("secret.md");
    std::fs::write(&secret, "- outside entry\n").expect("write");
    // A memory file that is a link to a file outside the store, and a
    // directory link to outside.
    std::os::unix::fs::symlink(&secret, s.path().join("memories/linked.md")).expect("symlink");
    std::os::unix::fs::symlink(outside.path(), s.path().join("memories/out")).expect("symlink");
    let id = entry_id("outside entry");
    let before = tree(s.path());
    for ops in [
        serde_json::json!([{"op": "update", "path": "linked.md", "id": id, "content": "pwned", "before": "outside entry", "reason": "instruction"}]),
        serde_json::json!([{"op": "add", "path": "linked.md", "content": "pwned", "reason": "instruction"}]),
        serde_json::json!([{"op": "add", "path": "out/new.md", "content": "pwned", "reason": "instruction"}]),
    ] {
        let out = apply(s.path(), ops);
        let text = output_text(&out);
        assert!(matches!(out.status.code(), Some(2) | Some(3)), "{text}");
        assert!(text.contains("symbolic link"), "{text}");
    }
    assert_eq!(tree(s.path()), before);
    assert_eq!(
        std::fs::read_to_string(&secret).expect("read"),
        "- outside entry\n"
    );
    assert!(!outside.path().join("new.md").exists());
}

#[test]
fn a_merge_whose_before_lies_exits_3_and_writes_nothing() {
    let (s, _outside) = store();
    let a = entry_id("Use UTC in logs.");
    let b = entry_id("The API port is 8080.");
    let before = tree(s.path());
    let out = apply(
        s.path(),
        serde_json::json!([
            {"op": "add", "path": "new.md", "content": "first op succeeds alone", "reason": "instruction"},
            {"op": "merge", "path": "notes.md", "ids": [a, b], "content": "merged",
             "before": "Use UTC in logs.\n\nThe API port is 9999.", "reason": "duplicate"}
        ]),
    );
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("spec.ops[1] (merge)"), "{text}");
    assert_eq!(tree(s.path()), before);
}

#[test]
fn the_memory_tool_refuses_hostile_paths() {
    let (s, outside) = store();
    std::os::unix::fs::symlink(outside.path(), s.path().join("memories/out")).expect("symlink");
    std::os::unix::fs::symlink(
        outside.path().join("x.md"),
        s.path().join("memories/dangling.md"),
    )
    .expect("symlink");
    let tool = MemoryTool {
        stores: vec![StoreMount {
            name: "team".into(),
            root: s.path().to_path_buf(),
            read_only: false,
        }],
    };
    let before = tree(s.path());
    let mut paths: Vec<String> = vec![
        "/memories/team/../escape.md".into(),
        "/memories/team/a/../../escape.md".into(),
        "/memories/../etc/passwd".into(),
        "/etc/passwd".into(),
        "/memories/team//etc/x.md".into(),
        "/memories/team/a\0.md".into(),
        "/memories/team/out/x.md".into(),
        "/memories/team/dangling.md".into(),
        "/memories/team/.reverie/revision.md".into(),
    ];
    paths.extend(LOOKALIKES.iter().map(|p| format!("/memories/team/{p}")));
    for p in &paths {
        for input in [
            serde_json::json!({"command": "create", "path": p, "file_text": "- pwned\n"}),
            serde_json::json!({"command": "view", "path": p}),
            serde_json::json!({"command": "str_replace", "path": p, "old_str": "a", "new_str": "b"}),
            serde_json::json!({"command": "insert", "path": p, "insert_line": 0, "insert_text": "x"}),
            serde_json::json!({"command": "delete", "path": p}),
            serde_json::json!({"command": "rename", "old_path": "/memories/team/notes.md", "new_path": p}),
        ] {
            let out = tool.call(&input);
            assert!(out.is_error, "{input}: accepted: {}", out.content);
        }
    }
    assert_eq!(tree(s.path()), before);
    assert!(!outside.path().join("x.md").exists());
    assert!(!s.path().join("escape.md").exists());
}

#[test]
fn hostile_transcript_names_and_since_values() {
    let (s, _outside) = store();
    let line =
        "{\"ts\":\"2026-11-20T10:00:00Z\",\"role\":\"user\",\"content\":\"always use UTC\"}\n";
    for name in [
        "evil\u{202E}lmth.jsonl",
        "a b.jsonl",
        "x\u{FF0F}y.jsonl",
        ".hidden.jsonl",
    ] {
        std::fs::write(s.path().join("sessions").join(name), line).expect("write");
    }
    let dir = s.path().to_str().expect("utf-8");
    let out = reverie(&["dream", "--store", dir, "--output", "json"]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("not a session name"), "{text}");
    let patch: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON patch");
    let sessions: Vec<&str> = patch["spec"]["ops"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|op| op["evidence"].as_array().into_iter().flatten())
        .filter_map(|e| e["session"].as_str())
        .collect();
    assert!(sessions.iter().all(|s| *s == "s-1"), "{sessions:?}");
    for since in ["../../etc/passwd", "\u{202E}1d", "1d; rm -rf /", ""] {
        let out = reverie(&["dream", "--store", dir, "--since", since]);
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(2), "--since {since:?}: {text}");
        assert!(text.contains("--since"), "--since {since:?}: {text}");
    }
}

#[test]
fn a_50_mb_transcript_line_is_skipped_with_bounded_memory() {
    let (s, _outside) = store();
    let mut body = Vec::with_capacity(51 * 1024 * 1024);
    body.extend_from_slice(b"{\"role\":\"user\",\"content\":\"");
    body.resize(body.len() + 50 * 1024 * 1024, b'x');
    body.extend_from_slice(b"\"}\n{\"role\":\"assistant\",\"content\":\"after the long line\"}\n");
    std::fs::write(s.path().join("sessions/big.jsonl"), &body).expect("write");
    drop(body);
    let t = Instant::now();
    let (out, kib) = reverie_measured(&["dream", "--store", s.path().to_str().expect("utf-8")]);
    let took = t.elapsed();
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("big.jsonl:1: line is longer than"), "{text}");
    eprintln!("50 MB line: dream took {took:.2?}, peak RSS {kib:?} KiB");
    if let Some(kib) = kib {
        // The reader keeps at most 8 MiB of one line; without the bound
        // the line, its parsed string and the event copy took > 150 MiB.
        assert!(kib < 64 * 1024, "peak RSS {kib} KiB");
    }
}

/// Validates and plans an `n`-op patch with `memory diff` (it parses,
/// validates and plans every op, then writes nothing); returns the time
/// and peak RSS.
fn big_patch_diff(n: usize) -> (Duration, Option<u64>) {
    let (s, _outside) = store();
    let ops: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({"op": "add", "path": format!("many/{}.md", i % 50),
                "content": format!("hostile fact {i}: e\u{301} \u{200D} \u{202E}rtl"), "reason": "instruction"})
        })
        .collect();
    let patch = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(patch.path(), serde_json::json!({ "ops": ops }).to_string()).expect("write");
    let before = tree(s.path());
    let t = Instant::now();
    let (out, kib) = reverie_measured(&[
        "memory",
        "diff",
        "--store",
        s.path().to_str().expect("utf-8"),
        patch.path().to_str().expect("utf-8"),
    ]);
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    eprintln!("{n}-op patch: validate + plan + diff {took:.2?}, peak RSS {kib:?} KiB");
    let diff = String::from_utf8_lossy(&out.stdout);
    assert_eq!(diff.matches("+- hostile fact").count(), n);
    assert_eq!(tree(s.path()), before);
    (took, kib)
}

/// 100,000 ops: about 8 s in a debug build on an idle machine (up to 80 s
/// while other builds run). Applying one is timed in `tests/memory_cli.rs`
/// (`large_patch_applies`); the apiserver refuses one
/// (`the_apiserver_refuses_oversized_patches`).
#[test]
fn a_100k_op_patch_is_validated_with_bounded_memory() {
    let (_, kib) = big_patch_diff(100_000);
    if let Some(kib) = kib {
        // 12 MB of JSON; a copy per op or per file would show here.
        assert!(kib < 1024 * 1024, "peak RSS {kib} KiB");
    }
}

#[test]
fn odd_unicode_entries_round_trip_byte_identically() {
    let (s, _outside) = store();
    let odd = "\u{FEFF}# Odd\r\n\r\n- caf\u{0065}\u{0301} with a combining accent\r\n- family \u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467} joined\r\n  continued \u{202E}reversed\u{202C}\r\n\r\nZero\u{200B}width paragraph \u{0000} with NUL\r\n\r\n- last \u{FFFD}\n";
    std::fs::write(s.path().join("memories/odd.md"), odd).expect("write");
    let parsed = reverie::memory::parse(odd);
    assert_eq!(parsed.render(), odd);
    let entries: Vec<_> = parsed.entries().cloned().collect();
    // The byte-order mark is not part of the heading, so four entries.
    assert_eq!(entries.len(), 4, "{entries:?}");
    // An op on one odd entry leaves every other byte of the file alone.
    let target = &entries[1];
    let out = apply(
        s.path(),
        serde_json::json!([{"op": "update", "path": "odd.md", "id": target.id,
            "content": "family \u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467} updated", "before": target.text, "reason": "instruction"}]),
    );
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    let after = std::fs::read_to_string(s.path().join("memories/odd.md")).expect("read");
    let old_raw = &odd[target.span.clone()];
    assert_eq!(
        after.replacen(
            "- family \u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467} updated",
            old_raw,
            1
        ),
        odd
    );
    let ids_after: Vec<String> = reverie::memory::parse(&after)
        .entries()
        .map(|e| e.id.clone())
        .collect();
    for (i, e) in entries.iter().enumerate() {
        if i != 1 {
            assert!(ids_after.contains(&e.id), "entry {:?} lost its id", e.text);
        }
    }
    // Lone surrogates in JSON escapes: the patch is refused, the transcript
    // line counted as bad; neither stops anything else.
    let before = tree(s.path());
    let patch = s.path().join("lone.json");
    std::fs::write(
        &patch,
        r#"{"ops":[{"op":"add","path":"a.md","content":"\ud800 lone","reason":"instruction"}]}"#,
    )
    .expect("write");
    let out = reverie(&[
        "memory",
        "apply",
        "--store",
        s.path().to_str().expect("utf-8"),
        patch.to_str().expect("utf-8"),
    ]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("not valid JSON"), "{text}");
    std::fs::remove_file(&patch).expect("remove");
    assert_eq!(tree(s.path()), before);
    std::fs::write(
        s.path().join("sessions/s-2.jsonl"),
        "{\"role\":\"user\",\"content\":\"\\udc00 lone\"}\n{\"role\":\"user\",\"content\":\"fine\"}\n",
    )
    .expect("write");
    let out = reverie(&["dream", "--store", s.path().to_str().expect("utf-8")]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("s-2.jsonl:1: not valid JSON"), "{text}");
}

#[test]
fn seeded_example_store_survives_every_lookalike() {
    // The seeded example store with each look-alike as a real file name
    // on disk: the dream engine never proposes an op on such a path.
    let d = tempfile::tempdir().expect("tempdir");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/store"),
        d.path(),
    );
    for p in LOOKALIKES.iter().filter(|p| !p.contains('/')) {
        std::fs::write(
            d.path().join("memories").join(p),
            "- Always use UTC timestamps in logs.\n",
        )
        .expect("write");
    }
    let out = reverie(&[
        "dream",
        "--store",
        d.path().to_str().expect("utf-8"),
        "--output",
        "json",
    ]);
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let patch: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    for op in patch["spec"]["ops"].as_array().into_iter().flatten() {
        let path = op["path"].as_str().unwrap_or_default();
        assert!(
            reverie::memory::layout::check_memory_path(path).is_ok(),
            "the dream proposed an op on {path:?}"
        );
    }
}

// ---------------------------------------------------------------------
// On the real control plane.

/// `n` add ops, each valid on its own.
fn add_ops(n: usize) -> MemoryPatchSpec {
    let spec = serde_json::json!({
        "storeRef": {"name": "team"},
        "ops": (0..n).map(|i| serde_json::json!({"op": "add", "path": "a.md", "content": format!("fact {i}"), "reason": "instruction"})).collect::<Vec<_>>(),
    });
    serde_json::from_value(spec).expect("a valid spec")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_apiserver_refuses_oversized_patches() {
    let cp = ControlPlane::shared().await;
    cp.install_crds().await;
    let ns = cp.create_namespace("hostile-size").await;
    let api: Api<MemoryPatch> = Api::namespaced(cp.client(), &ns);
    let pp = PostParams::default();
    api.create(&pp, &MemoryPatch::new("at-limit", add_ops(5_000)))
        .await
        .expect("5,000 ops (maxItems) are accepted");
    for (name, n) in [("over-limit", 5_001), ("hundred-k", 100_000)] {
        let err = api
            .create(&pp, &MemoryPatch::new(name, add_ops(n)))
            .await
            .expect_err("refused");
        let msg = err.to_string();
        eprintln!("{n} ops: {msg:.300}");
        assert!(
            msg.contains("5000") || msg.contains("too large") || msg.contains("Too many"),
            "{n} ops: {msg:.600}"
        );
    }
    assert!(api.get_opt("hundred-k").await.expect("get").is_none());
}

/// A key nobody else uses, so finding it anywhere is a leak.
fn unique_key() -> String {
    format!(
        "sk-leak-{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    )
}

/// Every file below `dir` as text (lossy), with its path.
fn files_text(dir: &Path, out: &mut Vec<(String, String)>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if md.is_dir() {
            files_text(&p, out);
        } else if md.is_file() {
            if let Ok(b) = std::fs::read(&p) {
                out.push((
                    p.display().to_string(),
                    String::from_utf8_lossy(&b).into_owned(),
                ));
            }
        }
    }
}

/// Kills and reaps the controller process when the test ends, pass or fail.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_key_appears_in_no_log_event_status_or_file() {
    let cp = ControlPlane::shared().await;
    let node = TestNode::shared().await;
    cp.install_crds().await;
    let ns = cp.create_namespace("hostile-key").await;
    let key = unique_key();
    // The model answers the `ok` agent; everything else (the `denied`
    // agent, the dream's LLM pass) gets a 401 that echoes the key, as a
    // careless proxy would.
    let mock = MockLlm::start(vec![
        Rule::new(Answer::Text("done".into())).system("ROLE:ok"),
        Rule::new(Answer::Error(401, format!("invalid x-api-key: {key}"))),
    ]);
    // The whole operator as a process, its logs at debug level captured.
    let logs = tempfile::tempdir().expect("tempdir");
    let log_path = logs.path().join("controller.log");
    let log_file = std::fs::File::create(&log_path).expect("log file");
    let _controller = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_reverie"))
            .args([
                "controller",
                "--namespace",
                &ns,
                "--image",
                "reverie",
                "--metrics-addr",
                "off",
            ])
            .env("KUBECONFIG", cp.kubeconfig_path())
            .env(
                "RUST_LOG",
                "debug,hyper=info,h2=info,rustls=info,tower=info",
            )
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone"))
            .stderr(log_file)
            .spawn()
            .expect("the controller starts"),
    );
    let claim = cp.pvc_dir(&ns, "team-memory");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/store"),
        &claim,
    );
    let url = &mock.url;
    let agent = |name: &str| {
        format!(
            "apiVersion: reverie.dev/v1alpha1\nkind: Agent\nmetadata: {{name: {name}}}\nspec:\n  model: {{provider: anthropic, name: m, baseURL: \"{url}\", apiKeySecretRef: {{name: llm, key: api-key}}}}\n  systemPrompt: \"ROLE:{name}\"\n  tools: [memory]\n  memory: [{{storeRef: {{name: team}}}}]\n  maxTurns: 4\n"
        )
    };
    let session = |name: &str, agent: &str| {
        format!("apiVersion: reverie.dev/v1alpha1\nkind: AgentSession\nmetadata: {{name: {name}}}\nspec: {{agentRef: {{name: {agent}}}, prompt: \"work\", timeoutSeconds: 60}}\n")
    };
    cp.apply_yaml(
        &ns,
        &[
            format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: llm}}\nstringData: {{api-key: {key}}}\n"),
            "apiVersion: reverie.dev/v1alpha1\nkind: MemoryStore\nmetadata: {name: team}\nspec: {deletionPolicy: Delete}\n".to_string(),
            agent("ok"),
            agent("denied"),
            session("s-ok", "ok"),
            session("s-denied", "denied"),
            format!("apiVersion: reverie.dev/v1alpha1\nkind: DreamSchedule\nmetadata:\n  name: nightly\n  annotations: {{reverie.dev/dream-now: leak-check}}\nspec:\n  storeRef: {{name: team}}\n  schedule: \"@daily\"\n  llm: {{provider: anthropic, name: m, baseURL: \"{url}\", apiKeySecretRef: {{name: llm, key: api-key}}}}\n"),
        ]
        .join("---\n"),
    );
    let wait = Duration::from_secs(120);
    let sessions: Api<AgentSession> = Api::namespaced(cp.client(), &ns);
    for (name, want) in [
        ("s-ok", SessionPhase::Succeeded),
        ("s-denied", SessionPhase::Failed),
    ] {
        let s = eventually(&format!("session {name} to finish"), wait, || async {
            let s = sessions.get(name).await.map_err(|e| e.to_string())?;
            match s.status.as_ref().and_then(|st| st.phase) {
                Some(p) if p == want => Ok(s),
                other => Err(format!(
                    "phase {other:?}; log: {}",
                    common::tail(&log_path, 5)
                )),
            }
        })
        .await;
        if want == SessionPhase::Failed {
            // The error path ran: the provider's message reached the status.
            let text = serde_json::to_string(&s.status).expect("json");
            assert!(text.contains("401"), "{text}");
            assert!(text.contains("[REDACTED]"), "{text}");
        }
    }
    let patches: Api<MemoryPatch> = Api::namespaced(cp.client(), &ns);
    eventually("the dream to publish a patch", wait, || async {
        let l = patches
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        (!l.items.is_empty())
            .then_some(())
            .ok_or_else(|| common::tail(&log_path, 5))
    })
    .await;
    // The key was in use: the model was called with it, for the sessions
    // and for the dream's LLM pass.
    let used = mock
        .requests()
        .iter()
        .filter(|r| r.api_key.as_deref() == Some(key.as_str()))
        .count();
    assert!(used >= 3, "{used} requests carried the key");

    let mut haystack: Vec<(String, String)> = Vec::new();
    haystack.push((
        "controller log".into(),
        std::fs::read_to_string(&log_path).expect("controller log"),
    ));
    let kinds = "pods,jobs,cronjobs,events,agentsessions,agents,agentteams,memorystores,dreamschedules,memorypatches,persistentvolumeclaims,configmaps,serviceaccounts";
    let objects = cp.kubectl(&["get", kinds, "-n", &ns, "-o", "json"]);
    assert!(objects.status.success(), "{}", output_text(&objects));
    let objects = String::from_utf8_lossy(&objects.stdout).into_owned();
    assert!(objects.contains("\"kind\": \"Event\""), "no events listed");
    haystack.push((
        "objects (spec, status, termination messages)".into(),
        objects,
    ));
    let events = cp.kubectl(&["get", "events.events.k8s.io", "-n", &ns, "-o", "json"]);
    haystack.push((
        "events.k8s.io".into(),
        String::from_utf8_lossy(&events.stdout).into_owned(),
    ));
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(cp.client(), &ns);
    let mut pod_logs = 0;
    for p in pods.list(&ListParams::default()).await.expect("pods") {
        let name = p.metadata.name.clone().unwrap_or_default();
        for c in p.spec.iter().flat_map(|s| s.containers.iter()) {
            if let Ok(log) = node.container_log(&ns, &name, &c.name) {
                pod_logs += 1;
                haystack.push((format!("log of {name}/{}", c.name), log));
            }
        }
        if let Some(dir) = node.pod_dir(&ns, &name) {
            files_text(&dir, &mut haystack);
        }
    }
    assert!(pod_logs >= 3, "only {pod_logs} pod logs found");
    let before = haystack.len();
    files_text(&claim, &mut haystack);
    assert!(
        haystack[before..]
            .iter()
            .any(|(p, _)| p.ends_with("sessions/s-denied.jsonl")),
        "no transcript of s-denied in the claim"
    );
    let leaks: Vec<&str> = haystack
        .iter()
        .filter(|(_, text)| text.contains(&key))
        .map(|(what, _)| what.as_str())
        .collect();
    assert!(leaks.is_empty(), "the API key appears in: {leaks:?}");
    eprintln!(
        "searched {} logs, object dumps and files: no key",
        haystack.len()
    );
}
