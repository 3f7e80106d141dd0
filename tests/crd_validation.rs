//! The CRDs on a real apiserver: they are Established, every manifest in
//! `examples/` applies, invalid manifests are rejected at apply time with a
//! message that names the field (ClusterDreamSchedule included), and
//! MemoryPatch/AgentSession specs are immutable.

mod common;

use common::reverie::output_text as text;

use common::ControlPlane;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs kubectl against the test apiserver, feeding `stdin` when given.
fn kubectl(cp: &ControlPlane, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(cp.bin_dir().join("kubectl"));
    cmd.arg("--kubeconfig")
        .arg(cp.kubeconfig_path())
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin piped")
            .write_all(input.as_bytes())
            .expect("write manifest");
    }
    child.wait_with_output().expect("kubectl finishes")
}

async fn setup(prefix: &str) -> (&'static ControlPlane, String) {
    let cp = ControlPlane::shared().await;
    cp.install_crds().await;
    let ns = cp.create_namespace(prefix).await;
    (cp, ns)
}

#[tokio::test(flavor = "multi_thread")]
async fn crds_are_established_and_listed_in_the_reverie_category() {
    let (cp, ns) = setup("crd-est").await;
    for (plural, _) in reverie::api::crds() {
        let o = kubectl(
            cp,
            &[
                "get",
                "crd",
                &format!("{plural}.reverie.dev"),
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
            ],
            None,
        );
        assert_eq!(
            text(&o).trim(),
            "True",
            "{plural} is not Established: {}",
            text(&o)
        );
    }
    let o = kubectl(cp, &["get", "reverie", "-n", &ns], None);
    assert!(o.status.success(), "kubectl get reverie: {}", text(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_example_manifest_applies_server_side() {
    let (cp, ns) = setup("crd-examples").await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "examples/ has the manifests");
    for f in files {
        let o = kubectl(
            cp,
            &[
                "apply",
                "--server-side",
                "--field-manager=examples-test",
                "-n",
                &ns,
                "-f",
                f.to_str().expect("utf-8 path"),
            ],
            None,
        );
        assert!(
            o.status.success(),
            "{} did not apply: {}",
            f.display(),
            text(&o)
        );
    }
    // Defaults from the schema are filled in by the apiserver.
    let o = kubectl(
        cp,
        &[
            "get",
            "agent",
            "reviewer",
            "-n",
            &ns,
            "-o",
            "jsonpath={.spec.maxTurns} {.spec.model.maxTokens}",
        ],
        None,
    );
    assert_eq!(text(&o).trim(), "50 4096", "schema defaults applied");
}

const AGENT: &str = r#"apiVersion: reverie.dev/v1alpha1
kind: Agent
metadata: {name: bad}
spec:
  model: {provider: anthropic, name: m, apiKeySecretRef: {name: s, key: k}}
"#;

/// (case, manifest, a substring the apiserver's message must contain).
fn invalid_manifests() -> Vec<(&'static str, String, &'static str)> {
    let agent = |extra: &str| format!("{AGENT}{extra}");
    let session = |spec: &str| {
        format!("apiVersion: reverie.dev/v1alpha1\nkind: AgentSession\nmetadata: {{name: bad}}\nspec:\n{spec}")
    };
    let team = |spec: &str| {
        format!("apiVersion: reverie.dev/v1alpha1\nkind: AgentTeam\nmetadata: {{name: bad}}\nspec:\n  lead: {{agentRef: {{name: lead}}}}\n{spec}")
    };
    let store = |spec: &str| {
        format!("apiVersion: reverie.dev/v1alpha1\nkind: MemoryStore\nmetadata: {{name: bad}}\nspec:\n{spec}")
    };
    let sched = |spec: &str| {
        format!("apiVersion: reverie.dev/v1alpha1\nkind: DreamSchedule\nmetadata: {{name: bad}}\nspec:\n  storeRef: {{name: s}}\n{spec}")
    };
    let fleet = |spec: &str| {
        format!("apiVersion: reverie.dev/v1alpha1\nkind: DreamSchedule\nmetadata: {{name: bad}}\nspec:\n{spec}")
    };
    let cluster = |spec: &str| {
        format!("apiVersion: reverie.dev/v1alpha1\nkind: ClusterDreamSchedule\nmetadata: {{name: bad}}\nspec:\n{spec}")
    };
    let patch = |op: &str| {
        format!("apiVersion: reverie.dev/v1alpha1\nkind: MemoryPatch\nmetadata: {{name: bad}}\nspec:\n  storeRef: {{name: s}}\n  ops:\n  - {op}\n")
    };
    vec![
        ("session with agentRef and teamRef", session("  agentRef: {name: a}\n  teamRef: {name: t}\n  prompt: p\n"), "exactly one of agentRef or teamRef"),
        ("session with neither agentRef nor teamRef", session("  prompt: p\n"), "exactly one of agentRef or teamRef"),
        ("session member without parentRef", session("  agentRef: {name: a}\n  member: coder\n  prompt: p\n"), "member is only valid with parentRef"),
        ("session with an empty prompt", session("  agentRef: {name: a}\n  prompt: \"\"\n"), "spec.prompt"),
        ("session timeout 0", session("  agentRef: {name: a}\n  prompt: p\n  timeoutSeconds: 0\n"), "spec.timeoutSeconds"),
        ("agent with an unknown provider", AGENT.replace("anthropic", "gemini"), "spec.model.provider"),
        ("agent without apiKeySecretRef", "apiVersion: reverie.dev/v1alpha1\nkind: Agent\nmetadata: {name: bad}\nspec:\n  model: {provider: openai, name: m}\n".to_string(), "spec.model.apiKeySecretRef"),
        ("agent with a repeated tool", agent("  tools: [memory, memory]\n"), "tools must not repeat"),
        ("agent with an unknown tool", agent("  tools: [browser]\n"), "spec.tools[0]"),
        ("agent maxTurns 0", agent("  maxTurns: 0\n"), "spec.maxTurns"),
        ("agent memory path relative", agent("  memory:\n  - storeRef: {name: s}\n    path: memories/s\n"), "path must be absolute"),
        ("agent memory access unknown", agent("  memory:\n  - storeRef: {name: s}\n    access: WriteOnly\n"), "spec.memory[0].access"),
        ("agent mounting a store twice", agent("  memory:\n  - storeRef: {name: s}\n  - storeRef: {name: s}\n    path: /other\n"), "each store may be mounted once"),
        ("agent baseURL not http", AGENT.replace("name: m,", "name: m, baseURL: 'ftp://x',"), "baseURL must be an http"),
        ("team without members", team("  members: []\n"), "spec.members"),
        ("team with duplicate member names", team("  members:\n  - {name: a, agentRef: {name: x}}\n  - {name: a, agentRef: {name: x2}}\n"), "names must be unique"),
        ("team member name not a DNS label", team("  members:\n  - {name: Bad_Name, agentRef: {name: x}}\n"), "spec.members[0].name"),
        ("team maxParallel 0", team("  members:\n  - {name: a, agentRef: {name: x}}\n  maxParallel: 0\n"), "spec.maxParallel"),
        ("store size not a quantity", store("  storage: {size: lots}\n"), "size must be a quantity"),
        ("store maxEntryBytes > maxBytes", store("  limits: {maxBytes: 100, maxEntryBytes: 200}\n"), "maxEntryBytes must not exceed maxBytes"),
        ("store existingClaim with storageClassName", store("  storage: {existingClaim: c, storageClassName: fast}\n"), "storageClassName cannot be set with existingClaim"),
        ("store unknown deletionPolicy", store("  deletionPolicy: Shred\n"), "spec.deletionPolicy"),
        ("schedule autoApprove without Auto", sched("  schedule: '0 3 * * *'\n  approval: {mode: Manual, autoApprove: [add]}\n"), "autoApprove is only allowed with mode: Auto"),
        ("schedule not cron", sched("  schedule: every night\n"), "schedule must be a cron expression"),
        ("schedule since not a duration", sched("  schedule: '@daily'\n  sessions: {since: yesterday}\n"), "since must be LastDream or a duration"),
        ("schedule unknown approval mode", sched("  schedule: '@daily'\n  approval: {mode: Sometimes}\n"), "spec.approval.mode"),
        ("schedule unknown autoApprove op", sched("  schedule: '@daily'\n  approval: {mode: Auto, autoApprove: [move]}\n"), "spec.approval.autoApprove[0]"),
        ("schedule without storeRef or storeSelector", fleet("  schedule: '@daily'\n"), "exactly one of storeRef or storeSelector"),
        ("schedule with storeRef and storeSelector", sched("  schedule: '@daily'\n  storeSelector: {matchLabels: {tier: a}}\n"), "exactly one of storeRef or storeSelector"),
        ("schedule window with storeRef", sched("  schedule: '@daily'\n  window: 2h\n"), "window is only allowed with storeSelector"),
        ("schedule window not a duration", fleet("  schedule: '@daily'\n  storeSelector: {matchLabels: {tier: a}}\n  window: 2 hours\n"), "window must be a duration"),
        ("schedule budget without llm", fleet("  schedule: '@daily'\n  storeSelector: {matchLabels: {tier: a}}\n  budget: {tokensPerHour: 1000}\n"), "budget limits the LLM pass and needs llm"),
        ("schedule budget of 0 tokens", fleet("  schedule: '@daily'\n  storeSelector: {matchLabels: {tier: a}}\n  llm: {provider: openai, name: m, apiKeySecretRef: {name: k, key: k}}\n  budget: {tokensPerHour: 0}\n"), "spec.budget.tokensPerHour"),
        ("cluster schedule template with storeRef", cluster("  namespaceSelector: {}\n  template: {schedule: '@daily', storeRef: {name: s}}\n"), "template must use storeSelector, not storeRef"),
        ("cluster schedule template without storeSelector", cluster("  namespaceSelector: {}\n  template: {schedule: '@daily'}\n"), "template must use storeSelector, not storeRef"),
        ("cluster schedule without namespaceSelector", cluster("  template: {schedule: '@daily', storeSelector: {matchLabels: {a: b}}}\n"), "spec.namespaceSelector"),
        ("cluster schedule template window not a duration", cluster("  namespaceSelector: {}\n  template: {schedule: '@daily', storeSelector: {matchLabels: {a: b}}, window: soon}\n"), "window must be a duration"),
        ("patch add without content", patch("{op: add, path: a.md, reason: instruction}"), "an add op needs content"),
        ("patch update without id", patch("{op: update, path: a.md, content: c, reason: contradiction}"), "an update op needs id and content"),
        ("patch merge with one id", patch("{op: merge, path: a.md, ids: [aaaaaaaaaaaa], content: c, reason: duplicate}"), "a merge op needs at least two ids"),
        ("patch delete without id", patch("{op: delete, path: a.md, reason: stale}"), "a delete op needs id"),
        ("patch move without to", patch("{op: move, path: a.md, id: aaaaaaaaaaaa, reason: instruction}"), "a move op needs id and to"),
        ("patch path escaping memories/", patch("{op: add, path: ../etc/passwd.md, content: c, reason: instruction}"), "spec.ops[0].path"),
        ("patch id not 12 hex digits", patch("{op: delete, path: a.md, id: xyz, reason: stale}"), "spec.ops[0].id"),
        ("patch unknown reason", patch("{op: add, path: a.md, content: c, reason: because}"), "spec.ops[0].reason"),
        ("patch unknown op", patch("{op: rewrite, path: a.md, content: c, reason: instruction}"), "spec.ops[0].op"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_manifests_are_rejected_with_the_field_named() {
    let (cp, ns) = setup("crd-invalid").await;
    let cases = invalid_manifests();
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for (case, manifest, want) in &cases {
        let o = kubectl(
            cp,
            &[
                "apply",
                "--server-side",
                "--field-manager=invalid-test",
                "-n",
                &ns,
                "-f",
                "-",
            ],
            Some(manifest),
        );
        let out = text(&o);
        if o.status.success() {
            failures.push(format!("{case}: was accepted"));
        } else if !out.contains(want) {
            failures.push(format!("{case}: message does not contain {want:?}: {out}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_and_session_specs_are_immutable() {
    let (cp, ns) = setup("crd-immutable").await;
    let patch = "apiVersion: reverie.dev/v1alpha1\nkind: MemoryPatch\nmetadata: {name: p}\nspec:\n  storeRef: {name: s}\n  summary: one\n  ops:\n  - {op: add, path: a.md, content: c, reason: instruction}\n";
    let o = kubectl(
        cp,
        &["apply", "--server-side", "-n", &ns, "-f", "-"],
        Some(patch),
    );
    assert!(o.status.success(), "create patch: {}", text(&o));
    let o = kubectl(
        cp,
        &["apply", "--server-side", "-n", &ns, "-f", "-"],
        Some(&patch.replace("summary: one", "summary: two")),
    );
    assert!(!o.status.success(), "an edited patch spec was accepted");
    assert!(text(&o).contains("spec is immutable"), "{}", text(&o));
    // Metadata (the approval annotation) can still change.
    let o = kubectl(
        cp,
        &[
            "annotate",
            "-n",
            &ns,
            "memorypatch",
            "p",
            "example.com/note=x",
        ],
        None,
    );
    assert!(o.status.success(), "annotating a patch: {}", text(&o));

    let session = "apiVersion: reverie.dev/v1alpha1\nkind: AgentSession\nmetadata: {name: s}\nspec:\n  agentRef: {name: a}\n  prompt: one\n";
    let o = kubectl(
        cp,
        &["apply", "--server-side", "-n", &ns, "-f", "-"],
        Some(session),
    );
    assert!(o.status.success(), "create session: {}", text(&o));
    let o = kubectl(
        cp,
        &["apply", "--server-side", "-n", &ns, "-f", "-"],
        Some(&session.replace("prompt: one", "prompt: two")),
    );
    assert!(text(&o).contains("spec is immutable"), "{}", text(&o));
}
