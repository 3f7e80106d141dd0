//! `kubectl reverie` on a real apiserver: the binary linked as
//! `kubectl-reverie` first on `PATH`, run through the built kubectl's plugin
//! mechanism, with the approval policy of the chart installed.

mod common;

use common::reverie::output_text as text;

use common::ControlPlane;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A directory holding only `kubectl-reverie`, a symlink to the built binary.
fn plugin_dir(cp: &ControlPlane, ns: &str) -> PathBuf {
    let dir = cp.dir().join(format!("plugin-{ns}"));
    std::fs::create_dir_all(&dir).expect("create the plugin dir");
    let link = dir.join("kubectl-reverie");
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_reverie"), &link)
            .expect("link kubectl-reverie");
    }
    dir
}

/// Runs `kubectl reverie ARGS` with the plugin dir first on `PATH` and the
/// admin kubeconfig in `KUBECONFIG` (the plugin reads it from there).
fn kubectl_reverie(cp: &ControlPlane, dir: &Path, args: &[&str]) -> Output {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![dir.to_path_buf()];
    paths.extend(std::env::split_paths(&path));
    let joined = std::env::join_paths(paths).expect("PATH entries without ':'");
    let kubectl = cp.bin_dir().join("kubectl");
    match Command::new(&kubectl)
        .arg("reverie")
        .args(args)
        .env("PATH", joined)
        .env("KUBECONFIG", cp.kubeconfig_path())
        .env_remove("NO_COLOR")
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("cannot run {}: {e}", kubectl.display()),
    }
}

fn annotation(cp: &ControlPlane, ns: &str, kind: &str, name: &str, key: &str) -> String {
    let path = format!(
        "jsonpath={{.metadata.annotations.{}}}",
        key.replace('.', "\\.")
    );
    cp.kubectl_ok(&["get", "-n", ns, kind, name, "-o", &path])
}

fn patch_manifest(name: &str, store: &str) -> String {
    format!(
        "apiVersion: reverie.dev/v1alpha1\nkind: MemoryPatch\nmetadata: {{name: {name}}}\nspec:\n  storeRef: {{name: {store}}}\n  summary: add a lesson\n  ops:\n  - {{op: add, path: lessons.md, content: Use UTC., reason: instruction}}\n"
    )
}

fn set_status(cp: &ControlPlane, ns: &str, kind: &str, name: &str, status: &str) {
    let body = format!("{{\"status\":{status}}}");
    cp.kubectl_ok(&[
        "patch",
        "-n",
        ns,
        kind,
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &body,
    ]);
}

#[tokio::test(flavor = "multi_thread")]
async fn approve_and_reject_go_through_the_policy() {
    let cp = ControlPlane::shared().await;
    cp.install_crds().await;
    cp.install_approval_policy();
    let ns = cp.create_namespace("plugin-approve").await;
    let dir = plugin_dir(cp, &ns);

    cp.apply_yaml(
        &ns,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: alice-approves}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: reverie-approver}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: patch-editor}\nrules:\n- {apiGroups: [reverie.dev], resources: [memorypatches], verbs: [get, list, patch, update]}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: bob-edits}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: patch-editor}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: bob}]\n",
    );
    for p in ["p1", "p2", "p3"] {
        cp.apply_yaml(&ns, &patch_manifest(p, "team-memory"));
    }

    // A new policy binding takes a moment to be enforced: wait until bob is
    // refused. Each try uses a new probe patch, because a try that comes
    // before enforcement succeeds and decides its probe for good.
    let mut tries = 0;
    common::eventually(
        "the approval policy to be enforced",
        Duration::from_secs(30),
        || {
            tries += 1;
            let probe = format!("probe-{tries}");
            cp.apply_yaml(&ns, &patch_manifest(&probe, "team-memory"));
            let o = kubectl_reverie(cp, &dir, &["approve", &probe, "-n", &ns, "--as", "bob"]);
            let t = text(&o);
            async move {
                if !o.status.success() && t.contains("may not approve") {
                    Ok(())
                } else {
                    Err(t)
                }
            }
        },
    )
    .await;

    // bob may patch the object but lacks the verb: the policy's message is shown.
    let o = kubectl_reverie(cp, &dir, &["approve", "p2", "-n", &ns, "--as", "bob"]);
    assert!(!o.status.success(), "bob approved: {}", text(&o));
    assert!(
        text(&o).contains("needs the verb approve on memorystores/team-memory"),
        "{}",
        text(&o)
    );
    assert_eq!(
        annotation(cp, &ns, "memorypatch", "p2", "reverie.dev/approval"),
        ""
    );

    // alice may: the plugin finds out who she is and records it.
    let o = kubectl_reverie(
        cp,
        &dir,
        &[
            "approve",
            "p1",
            "-n",
            &ns,
            "--as",
            "alice",
            "--reason",
            "looks right",
        ],
    );
    assert!(o.status.success(), "alice could not approve: {}", text(&o));
    assert!(
        stdout(&o).contains("memorypatch/p1 approved by alice"),
        "{}",
        text(&o)
    );
    assert_eq!(
        annotation(cp, &ns, "memorypatch", "p1", "reverie.dev/approval"),
        "approved"
    );
    assert_eq!(
        annotation(cp, &ns, "memorypatch", "p1", "reverie.dev/approved-by"),
        "alice"
    );
    assert_eq!(
        annotation(cp, &ns, "memorypatch", "p1", "reverie.dev/approval-reason"),
        "looks right"
    );

    // Reject, with the kind prefix kubectl users type.
    let o = kubectl_reverie(
        cp,
        &dir,
        &["reject", "memorypatch/p3", "-n", &ns, "--as", "alice"],
    );
    assert!(o.status.success(), "alice could not reject: {}", text(&o));
    assert_eq!(
        annotation(cp, &ns, "memorypatch", "p3", "reverie.dev/approval"),
        "rejected"
    );
    assert_eq!(
        annotation(cp, &ns, "memorypatch", "p3", "reverie.dev/approved-by"),
        "alice"
    );

    // A decision is set once: the second says by whom it was made.
    let o = kubectl_reverie(cp, &dir, &["reject", "p1", "-n", &ns, "--as", "alice"]);
    assert!(!o.status.success(), "p1 was decided twice");
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("already approved by alice (reason: looks right)"),
        "{}",
        text(&o)
    );

    // An unknown patch is named.
    let o = kubectl_reverie(cp, &dir, &["approve", "nope", "-n", &ns, "--as", "alice"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains(&format!("MemoryPatch nope not found in namespace {ns}")),
        "{}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn diff_shows_the_patch_from_the_resource() {
    let cp = ControlPlane::shared().await;
    cp.install_crds().await;
    let ns = cp.create_namespace("plugin-diff").await;
    let dir = plugin_dir(cp, &ns);
    cp.apply_yaml(
        &ns,
        "apiVersion: reverie.dev/v1alpha1\nkind: MemoryPatch\nmetadata: {name: fix-infra}\nspec:\n  storeRef: {name: team-memory}\n  baseRevision: 41\n  summary: resolved 1 contradiction, removed 1 stale entry\n  ops:\n  - op: update\n    path: infra.md\n    id: 77aa01c2d3e4\n    before: \"The cluster runs 1.29.\\nUpgrades on Fridays.\"\n    content: \"The cluster runs 1.31.\\nUpgrades on Fridays.\"\n    reason: contradiction\n    evidence: [{session: s-014, line: 37, quote: kubectl version says 1.31}]\n  - op: delete\n    path: notes.md\n    id: 3f2a9c01b7de\n    before: Old VPN host is vpn1.\n    reason: stale\n    evidence: [{session: s-020, line: 3}]\n",
    );

    let o = kubectl_reverie(cp, &dir, &["diff", "fix-infra", "-n", &ns]);
    assert!(o.status.success(), "{}", text(&o));
    let out = stdout(&o);
    for want in [
        "memorypatch/fix-infra",
        "store team-memory, base revision 41, 2 op(s)",
        "summary: resolved 1 contradiction, removed 1 stale entry",
        "@@ op 1/2: update infra.md#77aa01c2d3e4 | reason: contradiction @@",
        "evidence: session s-014 line 37, \"kubectl version says 1.31\"",
        "\n-The cluster runs 1.29.\n+The cluster runs 1.31.\n Upgrades on Fridays.\n",
        "@@ op 2/2: delete notes.md#3f2a9c01b7de | reason: stale @@",
        "\n-Old VPN host is vpn1.\n",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    // Not a terminal: no colour unless asked.
    assert!(!out.contains('\x1b'), "{out}");
    let o = kubectl_reverie(
        cp,
        &dir,
        &["diff", "fix-infra", "-n", &ns, "--color", "always"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stdout(&o).contains("\x1b[31m-Old VPN host is vpn1.\x1b[0m"),
        "{}",
        stdout(&o)
    );

    // `reverie plugin diff` is the same command for those who do not link it.
    let o = Command::new(env!("CARGO_BIN_EXE_reverie"))
        .args(["plugin", "diff", "fix-infra", "-n", &ns])
        .env("KUBECONFIG", cp.kubeconfig_path())
        .output()
        .expect("run reverie");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(stdout(&o), out);
}

#[tokio::test(flavor = "multi_thread")]
async fn dream_now_sets_the_annotation() {
    let cp = ControlPlane::shared().await;
    cp.install_crds().await;
    let ns = cp.create_namespace("plugin-dream-now").await;
    let dir = plugin_dir(cp, &ns);
    cp.apply_yaml(
        &ns,
        "apiVersion: reverie.dev/v1alpha1\nkind: DreamSchedule\nmetadata: {name: nightly}\nspec:\n  storeRef: {name: team-memory}\n  schedule: \"0 3 * * *\"\n",
    );
    let before = chrono::Utc::now() - chrono::Duration::seconds(2);
    let o = kubectl_reverie(cp, &dir, &["dream-now", "nightly", "-n", &ns]);
    assert!(o.status.success(), "{}", text(&o));
    let after = chrono::Utc::now() + chrono::Duration::seconds(2);
    let value = annotation(cp, &ns, "dreamschedule", "nightly", "reverie.dev/dream-now");
    let at = chrono::DateTime::parse_from_rfc3339(&value)
        .unwrap_or_else(|e| panic!("dream-now={value:?} is not RFC 3339: {e}"));
    assert!(
        at >= before && at <= after,
        "dream-now={value} is not the time of the request"
    );
    let out = stdout(&o);
    assert!(
        out.contains(&format!("reverie.dev/dream-now={value}")),
        "{out}"
    );
    // The Job the controller will start for this token.
    let hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(value.as_bytes()))
    };
    assert!(
        out.contains(&format!("as Job nightly-now-{}", &hash[..8])),
        "{out}"
    );

    let o = kubectl_reverie(cp, &dir, &["dream-now", "missing", "-n", &ns]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains(&format!(
            "DreamSchedule missing not found in namespace {ns}"
        )),
        "{}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn status_of_a_store_lists_its_patches() {
    let cp = ControlPlane::shared().await;
    cp.install_crds().await;
    let ns = cp.create_namespace("plugin-status-store").await;
    let dir = plugin_dir(cp, &ns);
    cp.apply_yaml(
        &ns,
        "apiVersion: reverie.dev/v1alpha1\nkind: MemoryStore\nmetadata: {name: team-memory}\nspec: {}\n---\napiVersion: reverie.dev/v1alpha1\nkind: MemoryStore\nmetadata: {name: other}\nspec: {}\n",
    );
    set_status(
        cp,
        &ns,
        "memorystore",
        "team-memory",
        r#"{"revision":7,"entries":120,"bytes":9000,"pendingPatches":1,"conditions":[{"type":"Ready","status":"True","reason":"Bound","message":"claim bound","lastTransitionTime":"2026-11-30T10:00:00Z"}]}"#,
    );
    cp.apply_yaml(&ns, &patch_manifest("tm-1", "team-memory"));
    cp.apply_yaml(&ns, &patch_manifest("tm-2", "team-memory"));
    cp.apply_yaml(&ns, &patch_manifest("oth-1", "other"));
    set_status(
        cp,
        &ns,
        "memorypatch",
        "tm-1",
        r#"{"phase":"Applied","appliedRevision":7}"#,
    );
    set_status(cp, &ns, "memorypatch", "tm-2", r#"{"phase":"Pending"}"#);

    let o = kubectl_reverie(cp, &dir, &["status", "team-memory", "-n", &ns]);
    assert!(o.status.success(), "{}", text(&o));
    let out = stdout(&o);
    for want in [
        "MemoryStore team-memory",
        "revision: 7",
        "entries: 120",
        "bytes: 9000",
        "Ready  True    Bound   claim bound",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.trim_start().starts_with("tm-1") && l.contains("Applied")),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.trim_start().starts_with("tm-2") && l.contains("Pending")),
        "{out}"
    );
    assert!(
        !out.contains("oth-1"),
        "another store's patch is listed:\n{out}"
    );

    // As data.
    let o = kubectl_reverie(
        cp,
        &dir,
        &["status", "team-memory", "-n", &ns, "-o", "json"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON output");
    assert_eq!(v["revision"], 7);
    let names: Vec<&str> = v["patches"]
        .as_array()
        .expect("patches")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, ["tm-1", "tm-2"]);

    // Without a name: every store of the namespace.
    let o = kubectl_reverie(cp, &dir, &["status", "-n", &ns]);
    assert!(o.status.success(), "{}", text(&o));
    let out = stdout(&o);
    assert!(out.starts_with("NAME"), "{out}");
    assert!(out.contains("\nother "), "{out}");
    assert!(out.contains("\nteam-memory  7"), "{out}");

    let o = kubectl_reverie(cp, &dir, &["status", "nothing", "-n", &ns]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains(&format!(
            "no MemoryStore or AgentSession named nothing in namespace {ns}"
        )),
        "{}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn status_of_a_session_shows_the_delegation_tree() {
    let cp = ControlPlane::shared().await;
    cp.install_crds().await;
    let ns = cp.create_namespace("plugin-status-session").await;
    let dir = plugin_dir(cp, &ns);
    cp.apply_yaml(
        &ns,
        "apiVersion: reverie.dev/v1alpha1\nkind: AgentSession\nmetadata: {name: lead}\nspec: {teamRef: {name: dev}, prompt: ship it}\n---\napiVersion: reverie.dev/v1alpha1\nkind: AgentSession\nmetadata: {name: lead-coder}\nspec: {agentRef: {name: coder}, prompt: write it, parentRef: {name: lead}, member: coder}\n---\napiVersion: reverie.dev/v1alpha1\nkind: AgentSession\nmetadata: {name: lead-tester}\nspec: {agentRef: {name: tester}, prompt: test it, parentRef: {name: lead}, member: tester}\n---\napiVersion: reverie.dev/v1alpha1\nkind: AgentSession\nmetadata: {name: lead-coder-docs}\nspec: {agentRef: {name: writer}, prompt: document it, parentRef: {name: lead-coder}, member: writer}\n---\napiVersion: reverie.dev/v1alpha1\nkind: AgentSession\nmetadata: {name: elsewhere}\nspec: {agentRef: {name: coder}, prompt: unrelated}\n",
    );
    set_status(cp, &ns, "agentsession", "lead", r#"{"phase":"Running"}"#);
    set_status(
        cp,
        &ns,
        "agentsession",
        "lead-coder",
        r#"{"phase":"Succeeded"}"#,
    );
    set_status(
        cp,
        &ns,
        "agentsession",
        "lead-tester",
        r#"{"phase":"Failed"}"#,
    );
    set_status(
        cp,
        &ns,
        "agentsession",
        "lead-coder-docs",
        r#"{"phase":"Running"}"#,
    );

    let o = kubectl_reverie(cp, &dir, &["status", "agentsession/lead", "-n", &ns]);
    assert!(o.status.success(), "{}", text(&o));
    let out = stdout(&o);
    let expected = "\
SESSION               PHASE      RUNS
lead                  Running    team/dev
├─ lead-coder         Succeeded  agent/coder, member coder
│  └─ lead-coder-docs  Running    agent/writer, member writer
└─ lead-tester        Failed     agent/tester, member tester
";
    // Compare the tree shape and phases, not the padding.
    let squash = |s: &str| -> Vec<Vec<String>> {
        s.lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect())
            .collect()
    };
    assert_eq!(squash(&out), squash(expected), "{out}");

    let o = kubectl_reverie(cp, &dir, &["status", "lead", "-n", &ns, "-o", "yaml"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_yaml::from_slice(&o.stdout).expect("YAML output");
    assert_eq!(v["name"], "lead");
    assert_eq!(v["children"][0]["name"], "lead-coder");
    assert_eq!(v["children"][0]["children"][0]["phase"], "Running");
    assert_eq!(v["children"][1]["phase"], "Failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn namespace_comes_from_the_context_and_flags_override_it() {
    let cp = ControlPlane::shared().await;
    cp.install_crds().await;
    let ns = cp.create_namespace("plugin-context").await;
    let dir = plugin_dir(cp, &ns);
    cp.apply_yaml(
        &ns,
        "apiVersion: reverie.dev/v1alpha1\nkind: MemoryStore\nmetadata: {name: in-context}\nspec: {}\n",
    );

    // A kubeconfig whose context names the test namespace, and a second
    // context (same cluster and user) that names `default`.
    let admin = std::fs::read_to_string(cp.kubeconfig_path()).expect("read the kubeconfig");
    let mut config: serde_yaml::Value = serde_yaml::from_str(&admin).expect("kubeconfig YAML");
    let contexts = config["contexts"]
        .as_sequence_mut()
        .expect("kubeconfig contexts");
    let mut other = contexts[0].clone();
    contexts[0]["context"]["namespace"] = serde_yaml::Value::from(ns.as_str());
    other["name"] = serde_yaml::Value::from("elsewhere");
    other["context"]["namespace"] = serde_yaml::Value::from("default");
    contexts.push(other);
    let file = cp.dir().join(format!("{ns}.kubeconfig"));
    std::fs::write(&file, serde_yaml::to_string(&config).expect("encode")).expect("write");
    let file = file.to_str().expect("utf-8 path");

    // No -n: the current context's namespace.
    let o = kubectl_reverie(cp, &dir, &["status", "--kubeconfig", file]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(stdout(&o).contains("in-context"), "{}", text(&o));

    // --context picks the other context and its namespace.
    let o = kubectl_reverie(
        cp,
        &dir,
        &[
            "status",
            "in-context",
            "--kubeconfig",
            file,
            "--context",
            "elsewhere",
        ],
    );
    assert!(!o.status.success(), "found in the wrong namespace");
    assert!(text(&o).contains("in namespace default"), "{}", text(&o));

    // -n wins over the context.
    let o = kubectl_reverie(
        cp,
        &dir,
        &[
            "status",
            "in-context",
            "--kubeconfig",
            file,
            "--context",
            "elsewhere",
            "-n",
            &ns,
        ],
    );
    assert!(o.status.success(), "{}", text(&o));

    // An unknown context is an error that names it.
    let o = kubectl_reverie(
        cp,
        &dir,
        &["status", "--kubeconfig", file, "--context", "nope"],
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("nope"), "{}", text(&o));
}

/// Every manifest in `docs/resources.md` is accepted by the apiserver, so
/// the documented examples cannot drift from the CRDs.
#[tokio::test(flavor = "multi_thread")]
async fn documented_examples_are_valid() {
    let cp = ControlPlane::shared().await;
    cp.install_crds().await;
    let ns = cp.create_namespace("plugin-docs").await;
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/resources.md"))
            .expect("read docs/resources.md");
    let mut blocks = Vec::new();
    let mut rest = doc.as_str();
    while let Some(start) = rest.find("```yaml\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").expect("closed yaml block");
        blocks.push(&body[..end]);
        rest = &body[end + 3..];
    }
    assert_eq!(blocks.len(), 6, "one full example per resource");
    for (i, block) in blocks.iter().enumerate() {
        let file = cp.dir().join(format!("{ns}-doc-{i}.yaml"));
        std::fs::write(&file, block).expect("write manifest");
        let o = cp.kubectl(&[
            "apply",
            "--dry-run=server",
            "-n",
            &ns,
            "-f",
            file.to_str().expect("utf-8 path"),
        ]);
        assert!(
            o.status.success(),
            "example {i} of docs/resources.md: {}\n{block}",
            text(&o)
        );
    }
}
