//! The Helm chart `charts/reverie` against the real control plane: it lints,
//! its rendered objects pass the apiserver's server-side dry run, its
//! ClusterRole names no wildcard; the dream loop, the agents' team flow
//! (delegation to two members, keys from Secrets) and Auto approval work end
//! to end with the controller authenticated as the chart's ServiceAccount (so
//! a missing RBAC rule fails here) and leave the expected metrics; leader
//! election hands the Lease over.

mod common;
mod mock_llm;

use common::reverie::{free_addr, http_get, output_text as text, sample, seeded_store, wait_ready};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::node::TestNode;
use common::{eventually, ControlPlane};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use mock_llm::{Answer, MockLlm, Rule};
use reverie::api::{
    Agent, AgentSession, AgentTeam, DreamSchedule, MemoryPatch, MemoryStore, PatchPhase,
    SessionPhase,
};
use reverie::controller::leader::{self, LeaseConfig};
use reverie::controller::{self, Context, ControllerConfig};

const WAIT: Duration = Duration::from_secs(90);

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/reverie")
}

/// `helm template <release> charts/reverie -n <ns> <extra…>`; panics on failure.
fn render(cp: &ControlPlane, release: &str, ns: &str, extra: &[&str]) -> String {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        release,
        chart.to_str().expect("utf-8 path"),
        "--namespace",
        ns,
    ];
    args.extend_from_slice(extra);
    let out = cp.helm(&args);
    assert!(out.status.success(), "helm template: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The rendered documents, skipping empty ones.
fn documents(yaml: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|d| {
            <serde_yaml::Value as serde::Deserialize>::deserialize(d).expect("rendered YAML parses")
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn kind_of(v: &serde_yaml::Value) -> &str {
    v.get("kind").and_then(|k| k.as_str()).unwrap_or("")
}

fn write_temp(cp: &ControlPlane, name: &str, yaml: &str) -> PathBuf {
    let path = cp.dir().join(name);
    std::fs::write(&path, yaml).expect("write rendered chart");
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn chart_lints() {
    let cp = ControlPlane::shared().await;
    let chart = chart_dir();
    let out = cp.helm(&["lint", chart.to_str().expect("utf-8 path")]);
    assert!(out.status.success(), "helm lint: {}", text(&out));
    // The values schema refuses a wrong type.
    let bad = cp.helm(&[
        "lint",
        chart.to_str().expect("utf-8 path"),
        "--set",
        "replicas=two",
    ]);
    assert!(
        !bad.status.success(),
        "the schema accepted replicas=two: {}",
        text(&bad)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rendered_chart_passes_server_side_dry_run() {
    let cp = ControlPlane::shared().await;
    let ns = cp.create_namespace("chart-dry").await;
    let yaml = render(
        cp,
        "dry",
        &ns,
        &[
            "--include-crds",
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "watchNamespace=team-a",
        ],
    );
    let kinds: Vec<String> = documents(&yaml)
        .iter()
        .map(|d| kind_of(d).to_string())
        .collect();
    for want in [
        "CustomResourceDefinition",
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "NetworkPolicy",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ] {
        assert!(kinds.iter().any(|k| k == want), "no {want} in {kinds:?}");
    }
    let path = write_temp(cp, &format!("{ns}-chart.yaml"), &yaml);
    let out = cp.kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=reverie-chart-test",
        "--dry-run=server",
        "-f",
        path.to_str().expect("utf-8 path"),
    ]);
    assert!(out.status.success(), "dry run: {}", text(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn deployment_runs_restricted_and_cluster_role_has_no_wildcards() {
    let cp = ControlPlane::shared().await;
    let docs = documents(&render(cp, "sec", "reverie-system", &[]));
    let role = docs
        .iter()
        .find(|d| kind_of(d) == "ClusterRole" && d["metadata"]["name"] == "sec-reverie-controller")
        .expect("controller ClusterRole");
    let rules = role["rules"].as_sequence().expect("rules");
    assert!(!rules.is_empty());
    for rule in rules {
        for field in ["apiGroups", "resources", "verbs"] {
            let items = rule[field].as_sequence().expect(field);
            assert!(
                items
                    .iter()
                    .all(|i| i.as_str().is_some_and(|s| !s.contains('*'))),
                "wildcard in {field}: {rule:?}"
            );
        }
    }
    // Auto mode needs `approve` on memorystores.
    assert!(rules.iter().any(|r| {
        r["resources"]
            .as_sequence()
            .is_some_and(|s| s.iter().any(|x| x == "memorystores"))
            && r["verbs"]
                .as_sequence()
                .is_some_and(|s| s.iter().any(|x| x == "approve"))
    }));

    let deploy = docs
        .iter()
        .find(|d| kind_of(d) == "Deployment")
        .expect("Deployment");
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(c["args"][0], "controller");
    // JSON logs by default, so log pipelines get the object on each line.
    let args = c["args"].as_sequence().expect("args");
    assert!(args.iter().any(|a| a == "--log-format=json"), "{args:?}");
    assert_eq!(c["env"][2]["name"], "RUST_LOG");
}

/// Renders `templates` of the chart as release `system` in namespace
/// `system`, applies them for real and returns the rendered YAML.
fn apply_chart_templates(cp: &ControlPlane, system: &str, templates: &[&str]) -> String {
    let mut extra = Vec::new();
    for t in templates {
        extra.push("--show-only");
        extra.push(*t);
    }
    let yaml = render(cp, system, system, &extra);
    let path = write_temp(cp, &format!("{system}-rbac.yaml"), &yaml);
    let out = cp.kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=reverie-chart-test",
        "-f",
        path.to_str().expect("utf-8 path"),
    ]);
    assert!(
        out.status.success(),
        "applying the chart's RBAC: {}",
        text(&out)
    );
    yaml
}

/// The chart's ServiceAccount, its RBAC and the approval policy, applied in
/// `system`; returns the ServiceAccount's user name.
fn install_chart_identity(cp: &ControlPlane, system: &str) -> String {
    let yaml = apply_chart_templates(
        cp,
        system,
        &[
            "templates/serviceaccount.yaml",
            "templates/controller-rbac.yaml",
            "templates/approval-policy.yaml",
            "templates/approver-clusterrole.yaml",
        ],
    );
    let sa = documents(&yaml)
        .iter()
        .find(|d| kind_of(d) == "ServiceAccount")
        .and_then(|d| d["metadata"]["name"].as_str().map(str::to_string))
        .expect("ServiceAccount name");
    format!("system:serviceaccount:{system}:{sa}")
}

/// Starts the controller for `ns` as the ServiceAccount `user` of namespace
/// `system`, with the groups the apiserver gives a ServiceAccount.
fn start_controller_as_service_account(cp: &ControlPlane, ns: &str, system: &str, user: &str) {
    let ns_group = format!("system:serviceaccounts:{system}");
    start_controller_as(
        cp,
        ns,
        user,
        &["system:serviceaccounts", &ns_group, "system:authenticated"],
    );
}

/// Starts the controller for `ns`, authenticated as `user` in `groups`.
fn start_controller_as(cp: &ControlPlane, ns: &str, user: &str, groups: &[&str]) {
    let ctx = Arc::new(Context {
        client: cp.client_as(user, groups),
        config: ControllerConfig {
            image: "reverie".to_string(),
            worker_service_account: "reverie-worker".to_string(),
            namespace: Some(ns.to_string()),
        },
    });
    tokio::spawn(async move {
        if let Err(e) = controller::run(ctx).await {
            eprintln!("controller stopped: {e}");
        }
    });
}

/// Waits until DreamSchedule `schedule` reports a patch; returns its name.
async fn last_patch(cp: &ControlPlane, ns: &str, schedule: &str) -> String {
    let schedules: Api<DreamSchedule> = Api::namespaced(cp.client(), ns);
    eventually(
        &format!("schedule {schedule} reports its patch"),
        WAIT,
        || async {
            let s = schedules.get(schedule).await.map_err(|e| e.to_string())?;
            s.status
                .clone()
                .and_then(|st| st.last_patch)
                .ok_or(format!("{:?}", s.status))
        },
    )
    .await
}

async fn wait_phase(cp: &ControlPlane, ns: &str, name: &str, want: PatchPhase) -> MemoryPatch {
    common::reverie::wait_patch_phase(cp, ns, name, want, WAIT).await
}

#[tokio::test(flavor = "multi_thread")]
async fn dream_loop_runs_with_the_charts_service_account() {
    let cp = ControlPlane::shared().await;
    let _node = TestNode::shared().await;
    cp.install_crds().await;
    let system = cp.create_namespace("chart-system").await;
    let ns = cp.create_namespace("chart-loop").await;
    // The chart's RBAC, its ServiceAccount and the approval policy, for real.
    let user = install_chart_identity(cp, &system);
    start_controller_as_service_account(cp, &ns, &system, &user);
    // alice approves.
    cp.apply_yaml(
        &ns,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: patch-editor}\nrules:\n- {apiGroups: [reverie.dev], resources: [memorypatches], verbs: [get, list, patch, update]}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: alice-approves}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: reverie-approver}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: alice-edits}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: patch-editor}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}]\n",
    );

    // A seeded store.
    let dir = seeded_store(cp, &ns, "team", WAIT).await;
    let stores: Api<MemoryStore> = Api::namespaced(cp.client(), &ns);
    let before = std::fs::read_to_string(dir.join("memories/notes.md")).expect("notes");

    // Dream now → a pending patch.
    cp.apply_yaml(
        &ns,
        "apiVersion: reverie.dev/v1alpha1\nkind: DreamSchedule\nmetadata:\n  name: nightly\n  annotations: {reverie.dev/dream-now: \"2026-11-30T21:00:00Z\"}\nspec:\n  storeRef: {name: team}\n  schedule: \"0 3 * * *\"\n  sessions: {since: LastDream}\n",
    );
    let job_name = reverie::controller::jobs::dream_now_job_name("nightly", "2026-11-30T21:00:00Z");
    let job = cp.wait_job_finished(&ns, &job_name, WAIT).await;
    assert_eq!(
        reverie::controller::jobs::job_state(&job),
        reverie::controller::jobs::JobState::Succeeded,
        "dream job: {:?}",
        job.status
    );
    let name = last_patch(cp, &ns, "nightly").await;
    wait_phase(cp, &ns, &name, PatchPhase::Pending).await;

    // Approve → applied by a Job the controller started.
    let out = cp.kubectl_as(
        "alice",
        &[
            "annotate",
            "-n",
            &ns,
            "memorypatch",
            &name,
            "reverie.dev/approval=approved",
            "reverie.dev/approved-by=alice",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let p = wait_phase(cp, &ns, &name, PatchPhase::Applied).await;
    assert_eq!(p.status.and_then(|s| s.applied_revision), Some(1));
    assert_ne!(
        std::fs::read_to_string(dir.join("memories/notes.md")).expect("notes"),
        before,
        "the patch's ops did not reach the volume"
    );
    eventually("store at revision 1", WAIT, || async {
        let s = stores.get("team").await.map_err(|e| e.to_string())?;
        let st = s.status.clone().unwrap_or_default();
        (st.revision == Some(1) && st.pending_patches == Some(0))
            .then_some(())
            .ok_or(format!("{st:?}"))
    })
    .await;
}

/// Runs a candidate for `cfg` as `client`; `running` is set while it leads.
fn candidate(
    client: kube::Client,
    cfg: LeaseConfig,
    running: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let work = async {
            running.store(true, Ordering::SeqCst);
            futures::future::pending::<Result<(), reverie::controller::Error>>().await
        };
        if let Err(e) = leader::run_as_leader(&client, &cfg, work).await {
            eprintln!("candidate {} stopped: {e}", cfg.identity);
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn one_replica_leads_and_the_other_takes_over_when_it_goes() {
    let cp = ControlPlane::shared().await;
    let system = cp.create_namespace("chart-lease").await;
    // As the chart's ServiceAccount, so the leader-election Role is tested too.
    apply_chart_templates(
        cp,
        &system,
        &[
            "templates/serviceaccount.yaml",
            "templates/controller-rbac.yaml",
        ],
    );
    let user = format!("system:serviceaccount:{system}:{system}-reverie");
    let ns_group = format!("system:serviceaccounts:{system}");
    let client = || {
        cp.client_as(
            &user,
            &["system:serviceaccounts", &ns_group, "system:authenticated"],
        )
    };
    let lease_duration = Duration::from_secs(3);
    let cfg = |id: &str| LeaseConfig {
        lease_duration,
        renew_every: Duration::from_millis(500),
        ..LeaseConfig::new("reverie-controller", &system, id)
    };
    let (a_runs, b_runs) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let a = candidate(client(), cfg("a"), a_runs.clone());
    let b = candidate(client(), cfg("b"), b_runs.clone());
    eventually("one candidate to lead", WAIT, || async {
        (a_runs.load(Ordering::SeqCst) || b_runs.load(Ordering::SeqCst))
            .then_some(())
            .ok_or("none leads".to_string())
    })
    .await;
    // Well past a lease duration, still exactly one leads.
    tokio::time::sleep(lease_duration * 2).await;
    let (a_leads, b_leads) = (a_runs.load(Ordering::SeqCst), b_runs.load(Ordering::SeqCst));
    assert!(a_leads != b_leads, "a leads: {a_leads}, b leads: {b_leads}");
    let (holder, standby, standby_runs) = if a_leads {
        (a, b, b_runs)
    } else {
        (b, a, a_runs)
    };
    let leases: Api<Lease> = Api::namespaced(cp.client(), &system);
    let held = leases.get("reverie-controller").await.expect("lease");
    let holder_id = held.spec.and_then(|s| s.holder_identity);
    assert_eq!(holder_id.as_deref(), Some(if a_leads { "a" } else { "b" }));

    // The holder goes away without releasing: the other takes over once
    // the lease has not been renewed for its duration.
    holder.abort();
    let gone = tokio::time::Instant::now();
    eventually("the standby to take over", WAIT, || async {
        standby_runs
            .load(Ordering::SeqCst)
            .then_some(())
            .ok_or("standby still waiting".to_string())
    })
    .await;
    let took = gone.elapsed();
    assert!(
        took <= lease_duration + Duration::from_secs(2),
        "take-over took {took:?} for a {lease_duration:?} lease"
    );
    standby.abort();
}

fn reconciles(text: &str, controller: &str) -> f64 {
    sample(
        text,
        &format!("reverie_reconciles_total{{controller=\"{controller}\",outcome=\"ok\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_reconciles_and_health_endpoints_answer() {
    let cp = ControlPlane::shared().await;
    cp.install_crds().await;
    let ns = cp.create_namespace("chart-metrics").await;
    let addr = free_addr();
    let server = tokio::spawn(reverie::controller::metrics::serve(addr, cp.client()));
    let (_, before) = eventually("the metrics endpoint to answer", WAIT, || {
        http_get(addr, "/metrics")
    })
    .await;
    let before = reconciles(&before, "memorystore");

    let ctx = Arc::new(Context {
        client: cp.client(),
        config: ControllerConfig {
            image: "reverie".to_string(),
            worker_service_account: "reverie-worker".to_string(),
            namespace: Some(ns.clone()),
        },
    });
    let controller = tokio::spawn(async move { controller::run(ctx).await });
    cp.apply_yaml(
        &ns,
        "apiVersion: reverie.dev/v1alpha1\nkind: MemoryStore\nmetadata: {name: team}\nspec:\n  deletionPolicy: Delete\n  storage: {size: 1Gi}\n",
    );
    wait_ready::<MemoryStore>(cp, &ns, "team", WAIT).await;
    let (status, text) = http_get(addr, "/metrics").await.expect("scrape");
    assert_eq!(status, 200);
    assert!(
        text.contains("# TYPE reverie_reconciles_total counter"),
        "{text}"
    );
    assert!(
        reconciles(&text, "memorystore") > before,
        "memorystore reconciles did not grow from {before}:\n{text}"
    );
    assert!(
        sample(
            &text,
            "reverie_reconcile_duration_seconds_count{controller=\"memorystore\"}"
        ) > 0.0,
        "{text}"
    );
    assert_eq!(http_get(addr, "/healthz").await.expect("healthz").0, 200);
    assert_eq!(
        http_get(addr, "/readyz").await.expect("readyz"),
        (200, "ok\n".to_string())
    );
    controller.abort();
    server.abort();
}

/// The mock model's script: the lead hands two tasks to two members in one
/// turn and consolidates their answers; the members answer at once; the
/// `FLAKY` agent's endpoint and the dream's LLM pass always fail.
fn team_script() -> Vec<Rule> {
    vec![
        Rule::new(Answer::Tools(
            Some("Splitting the audit.".into()),
            vec![(
                "delegate".into(),
                serde_json::json!({"tasks": [
                    {"member": "ana", "task": "Audit the API"},
                    {"member": "ben", "task": "Audit the web app"}
                ]}),
            )],
        ))
        .system("ROLE:LEAD")
        .last("Audit everything"),
        Rule::new(Answer::Text("AUDITED: both parts are clean.".into()))
            .system("ROLE:LEAD")
            .last("API-CLEAN"),
        Rule::new(Answer::Text("API-CLEAN".into()))
            .system("ROLE:ANA")
            // Both members are mid-session at the same time.
            .delay(Duration::from_secs(2)),
        Rule::new(Answer::Text("WEB-CLEAN".into()))
            .system("ROLE:BEN")
            .delay(Duration::from_secs(2)),
        Rule::new(Answer::Error(500, "the model is down".into())).system("ROLE:FLAKY"),
        // The dream's LLM pass: it fails, the deterministic ops stand.
        Rule::new(Answer::Error(503, "overloaded".into()))
            .system("You maintain the Markdown memory"),
    ]
}

/// An Agent on the mock model whose key comes from Secret `llm`.
fn agent(name: &str, provider: &str, url: &str, role: &str, tools: &str) -> String {
    format!(
        "apiVersion: reverie.dev/v1alpha1\nkind: Agent\nmetadata: {{name: {name}}}\nspec:\n  model:\n    provider: {provider}\n    name: test-model\n    baseURL: {url}\n    apiKeySecretRef: {{name: llm, key: api-key}}\n  systemPrompt: \"ROLE:{role}\"\n  tools: {tools}\n  memory:\n  - storeRef: {{name: team}}\n  maxTurns: 4\n"
    )
}

async fn wait_session(cp: &ControlPlane, ns: &str, name: &str) -> AgentSession {
    let api: Api<AgentSession> = Api::namespaced(cp.client(), ns);
    eventually(&format!("session {name} to finish"), WAIT * 2, || async {
        let s = api.get(name).await.map_err(|e| e.to_string())?;
        match s.status.as_ref().and_then(|st| st.phase) {
            Some(SessionPhase::Succeeded | SessionPhase::Failed) => Ok(s),
            _ => Err(format!("{:?}", s.status)),
        }
    })
    .await
}

/// The agents' team flow, an Auto-approved dream and the metrics they
/// leave, with the controller authenticated as the chart's ServiceAccount:
/// a rule the chart's ClusterRole lacks fails here.
#[tokio::test(flavor = "multi_thread")]
async fn agent_team_and_auto_approval_run_with_the_charts_service_account() {
    let mock = MockLlm::start(team_script());
    let cp = ControlPlane::shared().await;
    let _node = TestNode::shared().await;
    cp.install_crds().await;
    let system = cp.create_namespace("chart-agents-system").await;
    let ns = cp.create_namespace("chart-agents").await;
    let user = install_chart_identity(cp, &system);
    start_controller_as_service_account(cp, &ns, &system, &user);
    let addr = free_addr();
    let server = tokio::spawn(reverie::controller::metrics::serve(addr, cp.client()));

    // The team: a lead (Anthropic) and two members, one per wire format,
    // every key read from a Secret.
    cp.apply_yaml(
        &ns,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: llm}\nstringData: {api-key: sk-chart-test}\n---\napiVersion: reverie.dev/v1alpha1\nkind: MemoryStore\nmetadata: {name: team}\nspec: {deletionPolicy: Delete}\n",
    );
    let openai_url = format!("{}/v1", mock.url);
    let agents = [
        agent("lead", "anthropic", &mock.url, "LEAD", "[delegate, memory]"),
        agent("ana", "anthropic", &mock.url, "ANA", "[memory]"),
        agent("ben", "openai", &openai_url, "BEN", "[memory]"),
        agent("flaky", "openai", &openai_url, "FLAKY", "[memory]"),
    ];
    cp.apply_yaml(&ns, &agents.join("---\n"));
    cp.apply_yaml(
        &ns,
        "apiVersion: reverie.dev/v1alpha1\nkind: AgentTeam\nmetadata: {name: auditors}\nspec:\n  lead: {agentRef: {name: lead}}\n  maxParallel: 2\n  members:\n  - {name: ana, agentRef: {name: ana}, description: audits the API}\n  - {name: ben, agentRef: {name: ben}, description: audits the web app}\n",
    );
    // An Agent whose Secret comes later turns Ready when it appears (the
    // Secret watch), well before the 30 s recheck of a stalled Agent.
    cp.apply_yaml(
        &ns,
        // No store, so only the Secret can wake it.
        &agent("late", "anthropic", &mock.url, "LATE", "[bash]")
            .replace("name: llm", "name: late-key")
            .replace("  memory:\n  - storeRef: {name: team}\n", ""),
    );
    let agents_api: Api<Agent> = Api::namespaced(cp.client(), &ns);

    eventually("agent late to stall on its Secret", WAIT, || async {
        let a = agents_api.get("late").await.map_err(|e| e.to_string())?;
        let reason = a
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Stalled"))
            .map(|c| c.reason.clone());
        (reason.as_deref() == Some("SecretNotFound"))
            .then_some(())
            .ok_or(format!("{:?}", a.status))
    })
    .await;
    // Past the reconcile its own status write triggers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    cp.apply_yaml(
        &ns,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: late-key}\nstringData: {api-key: sk-late}\n",
    );
    wait_ready::<Agent>(cp, &ns, "late", Duration::from_secs(15)).await;

    wait_ready::<AgentTeam>(cp, &ns, "auditors", WAIT).await;
    cp.apply_yaml(
        &ns,
        "apiVersion: reverie.dev/v1alpha1\nkind: AgentSession\nmetadata: {name: audit}\nspec:\n  teamRef: {name: auditors}\n  prompt: Audit everything\n  timeoutSeconds: 300\n---\napiVersion: reverie.dev/v1alpha1\nkind: AgentSession\nmetadata: {name: down}\nspec:\n  agentRef: {name: flaky}\n  prompt: Say hello\n  timeoutSeconds: 300\n",
    );

    // Meanwhile, a dream on a seeded store, approved by the controller; its
    // LLM pass (key from the Secret) fails and is reported.
    seeded_store(cp, &ns, "kb", WAIT).await;
    cp.apply_yaml(
        &ns,
        &"apiVersion: reverie.dev/v1alpha1\nkind: DreamSchedule\nmetadata:\n  name: auto\n  annotations: {reverie.dev/dream-now: first}\nspec:\n  storeRef: {name: kb}\n  schedule: \"0 3 * * *\"\n  suspend: true\n  approval: {mode: Auto, autoApprove: [add, update, merge, delete]}\n  llm: {provider: anthropic, name: test-model, baseURL: \"MOCK\", apiKeySecretRef: {name: llm, key: api-key}, maxTokens: 1000}\n".replace("MOCK", &mock.url),
    );

    let audit = wait_session(cp, &ns, "audit").await;
    let st = audit.status.clone().expect("status");
    assert_eq!(st.phase, Some(SessionPhase::Succeeded), "{st:?}");
    assert!(
        st.result.as_deref().unwrap_or("").starts_with("AUDITED"),
        "{st:?}"
    );
    let children: Vec<&str> = st.children.iter().map(|c| c.member.as_str()).collect();
    assert_eq!(children, ["ana", "ben"]);
    let down = wait_session(cp, &ns, "down").await;
    let down_st = down.status.clone().expect("status");
    assert_eq!(down_st.phase, Some(SessionPhase::Failed), "{down_st:?}");
    assert_eq!(down_st.usage.as_ref().map(|u| u.errors), Some(1));

    let patch = last_patch(cp, &ns, "auto").await;
    let applied = wait_phase(cp, &ns, &patch, PatchPhase::Applied).await;
    let approver = applied
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .get("reverie.dev/approved-by")
        .cloned();
    assert_eq!(approver.as_deref(), Some(user.as_str()));

    // Every session's tokens are counted under its Agent's provider, once.
    let sessions: Api<AgentSession> = Api::namespaced(cp.client(), &ns);
    let all = sessions.list(&Default::default()).await.expect("sessions");
    let mut want: std::collections::BTreeMap<(&str, &str), u64> = Default::default();
    for s in &all.items {
        let agent = match s.spec.member.as_deref() {
            Some(m) => m,
            None if s.spec.team_ref.is_some() => "lead",
            None => "flaky",
        };
        let provider = if matches!(agent, "ben" | "flaky") {
            "openai"
        } else {
            "anthropic"
        };
        let u = s.status.clone().and_then(|st| st.usage).unwrap_or_default();
        *want.entry((provider, "input")).or_default() += u.input_tokens;
        *want.entry((provider, "output")).or_default() += u.output_tokens;
    }
    assert_eq!(all.items.len(), 4, "audit, its two children and down");
    assert!(want[&("anthropic", "input")] > 0 && want[&("openai", "input")] > 0);
    let ops = applied.spec.ops.len() as f64;
    let text = eventually("the metrics to show the dream", WAIT, || async {
        let (_, text) = http_get(addr, "/metrics").await?;
        (sample(&text, "reverie_dreams_total{outcome=\"succeeded\"}") >= 1.0
            && sample(&text, "reverie_memory_patches{phase=\"Applied\"}") >= 1.0)
            .then_some(text.clone())
            .ok_or(text)
    })
    .await;
    for ((provider, direction), n) in &want {
        let series = format!(
            "reverie_llm_tokens_total{{provider=\"{provider}\",direction=\"{direction}\"}}"
        );
        assert_eq!(sample(&text, &series), *n as f64, "{series}:\n{text}");
    }
    // The flaky agent's session and the dream's LLM pass, one each.
    for provider in ["openai", "anthropic"] {
        let series = format!("reverie_llm_errors_total{{provider=\"{provider}\"}}");
        assert_eq!(sample(&text, &series), 1.0, "{series}:\n{text}");
    }
    let applied_ops: f64 = text
        .lines()
        .filter(|l| l.starts_with("reverie_patch_ops_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(applied_ops >= ops, "{ops} ops applied:\n{text}");
    assert!(sample(&text, "reverie_dream_duration_seconds_count") >= 1.0);
    for controller in [
        "agent",
        "agentteam",
        "agentsession",
        "memorystore",
        "dreamschedule",
        "memorypatch",
    ] {
        assert!(reconciles(&text, controller) > 0.0, "{controller}:\n{text}");
    }
    server.abort();
}
