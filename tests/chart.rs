//! The Helm chart `charts/reverie` against the real control plane: it lints,
//! its rendered objects pass the apiserver's server-side dry run, its
//! ClusterRole names no wildcard, and the dream loop works end to end with
//! the controller authenticated as the chart's ServiceAccount (so a missing
//! RBAC rule fails here); leader election hands the Lease over.

mod common;

use common::reverie::{copy_dir, is_ready as ready, output_text as text};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::node::TestNode;
use common::{eventually, ControlPlane};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use reverie::api::{DreamSchedule, MemoryPatch, MemoryStore, PatchPhase};
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
    let release = system.clone();
    let yaml = render(
        cp,
        &release,
        &system,
        &[
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/controller-rbac.yaml",
            "--show-only",
            "templates/approval-policy.yaml",
            "--show-only",
            "templates/approver-clusterrole.yaml",
        ],
    );
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
    let sa = documents(&yaml)
        .iter()
        .find(|d| kind_of(d) == "ServiceAccount")
        .and_then(|d| d["metadata"]["name"].as_str().map(str::to_string))
        .expect("ServiceAccount name");
    let user = format!("system:serviceaccount:{system}:{sa}");
    let ns_group = format!("system:serviceaccounts:{system}");
    start_controller_as(
        cp,
        &ns,
        &user,
        &["system:serviceaccounts", &ns_group, "system:authenticated"],
    );
    // alice approves.
    cp.apply_yaml(
        &ns,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: patch-editor}\nrules:\n- {apiGroups: [reverie.dev], resources: [memorypatches], verbs: [get, list, patch, update]}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: alice-approves}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: reverie-approver}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: alice-edits}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: patch-editor}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}]\n",
    );

    // A seeded store.
    let dir = cp.pvc_dir(&ns, "team-memory");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/store"),
        &dir,
    );
    cp.apply_yaml(
        &ns,
        "apiVersion: reverie.dev/v1alpha1\nkind: MemoryStore\nmetadata: {name: team}\nspec:\n  deletionPolicy: Delete\n  storage: {size: 1Gi}\n",
    );
    let stores: Api<MemoryStore> = Api::namespaced(cp.client(), &ns);
    eventually("store team to be Ready", WAIT, || async {
        let s = stores.get("team").await.map_err(|e| e.to_string())?;
        ready(s.status.as_ref().map(|s| s.conditions.as_slice()))
            .then_some(())
            .ok_or(format!("{:?}", s.status))
    })
    .await;
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
    let schedules: Api<DreamSchedule> = Api::namespaced(cp.client(), &ns);
    let name = eventually("schedule reports the dream", WAIT, || async {
        let s = schedules.get("nightly").await.map_err(|e| e.to_string())?;
        s.status
            .clone()
            .and_then(|st| st.last_patch)
            .ok_or(format!("{:?}", s.status))
    })
    .await;
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
    let yaml = render(
        cp,
        &system,
        &system,
        &[
            "--show-only",
            "templates/serviceaccount.yaml",
            "--show-only",
            "templates/controller-rbac.yaml",
        ],
    );
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

fn reconciles(text: &str, controller: &str) -> u64 {
    let prefix = format!("reverie_reconciles_total{{controller=\"{controller}\",outcome=\"ok\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_reconciles_and_health_endpoints_answer() {
    let cp = ControlPlane::shared().await;
    cp.install_crds().await;
    let ns = cp.create_namespace("chart-metrics").await;
    // A free loopback port for the endpoints.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let server = tokio::spawn(reverie::controller::metrics::serve(addr, cp.client()));
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let url = format!("http://{addr}{path}");
        let http = http.clone();
        async move {
            let r = http.get(&url).send().await.map_err(|e| e.to_string())?;
            let status = r.status().as_u16();
            let body = r.text().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((status, body))
        }
    };
    let (_, before) = eventually("the metrics endpoint to answer", WAIT, || get("/metrics")).await;
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
    let stores: Api<MemoryStore> = Api::namespaced(cp.client(), &ns);
    eventually("store team to be Ready", WAIT, || async {
        let s = stores.get("team").await.map_err(|e| e.to_string())?;
        ready(s.status.as_ref().map(|s| s.conditions.as_slice()))
            .then_some(())
            .ok_or(format!("{:?}", s.status))
    })
    .await;
    let (status, text) = get("/metrics").await.expect("scrape");
    assert_eq!(status, 200);
    assert!(
        text.contains("# TYPE reverie_reconciles_total counter"),
        "{text}"
    );
    assert!(
        reconciles(&text, "memorystore") > before,
        "memorystore reconciles did not grow from {before}:\n{text}"
    );
    assert_eq!(get("/healthz").await.expect("healthz").0, 200);
    assert_eq!(get("/readyz").await.expect("readyz").0, 200);
    controller.abort();
    server.abort();
}
