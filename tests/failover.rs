//! Failover (issue 8) on the real control plane, with the real binary:
//! - two `reverie controller --leader-elect` processes with a short lease;
//!   the leader is SIGKILLed in the middle of a reconcile (right after it
//!   created an apply Job); the standby takes over within the lease
//!   duration plus renew periods and the dream loop finishes exactly once;
//! - the apiserver is killed and started again mid-run: the controller
//!   reconnects and a patch created right after the outage is applied.
//!
//! This binary has its own control plane; the apiserver restart would hit
//! any other test of it, so the tests here run one at a time.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::node::TestNode;
use common::reverie::{copy_dir, wait_patch_phase};
use common::{eventually, ControlPlane};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams};
use reverie::api::{DreamSchedule, PatchPhase};
use reverie::memory::apply::{FAULT_ACTION_ENV, FAULT_ENV, FAULT_REACHED};

const WAIT: Duration = Duration::from_secs(120);
const LEASE: Duration = Duration::from_secs(4);
const RENEW: Duration = Duration::from_secs(1);

/// The tests of this binary, one at a time (see the module docs).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A namespace with store `team` seeded from `examples/store`, plus what
/// `extra` adds.
async fn namespace_with_store(cp: &ControlPlane, prefix: &str, extra: &str) -> String {
    cp.install_crds().await;
    let ns = cp.create_namespace(prefix).await;
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/store"),
        &cp.pvc_dir(&ns, "team-memory"),
    );
    cp.apply_yaml(
        &ns,
        &format!("apiVersion: reverie.dev/v1alpha1\nkind: MemoryStore\nmetadata: {{name: team}}\nspec:\n  deletionPolicy: Delete\n  storage: {{size: 1Gi}}\n{extra}"),
    );
    ns
}

/// The Jobs of `ns` with label `role`.
async fn jobs_with_role(cp: &ControlPlane, ns: &str, role: &str) -> Vec<String> {
    let mut names: Vec<String> = Api::<Job>::namespaced(cp.client(), ns)
        .list(&ListParams::default().labels(&format!("reverie.dev/role={role}")))
        .await
        .expect("list jobs")
        .items
        .into_iter()
        .filter_map(|j| j.metadata.name)
        .collect();
    names.sort();
    names
}

/// Journal record files of the store's volume.
fn journal(cp: &ControlPlane, ns: &str) -> Vec<String> {
    let dir = cp.pvc_dir(ns, "team-memory").join(".reverie/journal");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Leader election with the short test lease, as candidate `id`.
fn lease_args<'a>(ns: &'a str, id: &'a str) -> Vec<&'a str> {
    vec![
        "--leader-elect",
        "--lease-namespace",
        ns,
        "--lease-identity",
        id,
        "--lease-duration",
        "4s",
        "--lease-renew-every",
        "1s",
    ]
}

fn approve(cp: &ControlPlane, ns: &str, patch: &str) {
    cp.kubectl_ok(&[
        "annotate",
        "-n",
        ns,
        "memorypatch",
        patch,
        "reverie.dev/approval=approved",
    ]);
}

#[tokio::test(flavor = "multi_thread")]
async fn standby_takes_over_from_a_leader_killed_mid_reconcile_and_the_loop_finishes_once() {
    let _serial = SERIAL.lock().await;
    let cp = ControlPlane::shared().await;
    let _node = TestNode::shared().await;
    let token = "2026-11-30T22:00:00Z";
    let ns = namespace_with_store(
        cp,
        "failover-leader",
        &format!("---\napiVersion: reverie.dev/v1alpha1\nkind: DreamSchedule\nmetadata:\n  name: nightly\n  annotations: {{reverie.dev/dream-now: \"{token}\"}}\nspec:\n  storeRef: {{name: team}}\n  schedule: \"0 3 * * *\"\n  suspend: true\n"),
    )
    .await;
    // The leader blocks in the MemoryPatch reconcile right after creating
    // the apply Job, before recording it; that is where it is killed.
    let fault = [
        (FAULT_ENV, "apply-job-created".to_string()),
        (FAULT_ACTION_ENV, "block".to_string()),
    ];
    let mut a = cp.spawn_controller("controller-a", &ns, &lease_args(&ns, "a"), &fault);
    a.wait_line("lease acquired", WAIT).await;
    let mut b = cp.spawn_controller("controller-b", &ns, &lease_args(&ns, "b"), &[]);
    b.wait_line("waiting for the lease", WAIT).await;

    // The leader runs the dream; the standby does nothing.
    let schedules: Api<DreamSchedule> = Api::namespaced(cp.client(), &ns);
    let patch = eventually("a patch proposed by the dream", WAIT, || async {
        let s = schedules.get("nightly").await.map_err(|e| e.to_string())?;
        s.status
            .as_ref()
            .and_then(|st| st.last_patch.clone())
            .ok_or(format!("{:?}", s.status))
    })
    .await;
    wait_patch_phase(cp, &ns, &patch, PatchPhase::Pending, WAIT).await;
    assert!(b.line_time("lease acquired").is_none(), "{}", b.text());
    approve(cp, &ns, &patch);
    let stuck = a
        .wait_line(&format!("{FAULT_REACHED} apply-job-created"), WAIT)
        .await;
    let killed = a.kill();
    let took_over = b.wait_line("lease acquired", LEASE * 6).await;
    let takeover = took_over.saturating_duration_since(killed);
    let since_stuck = took_over.saturating_duration_since(stuck);

    // The loop finishes once: one dream Job, one apply Job, the patch
    // Applied at revision 1, one journal record.
    let applied = wait_patch_phase(cp, &ns, &patch, PatchPhase::Applied, WAIT).await;
    assert_eq!(applied.status.and_then(|s| s.applied_revision), Some(1));
    assert_eq!(jobs_with_role(cp, &ns, "dream").await.len(), 1);
    assert_eq!(
        jobs_with_role(cp, &ns, "apply").await,
        vec![reverie::controller::jobs::apply_job_name(&patch)]
    );
    assert_eq!(journal(cp, &ns), vec!["0000000001.json".to_string()]);
    let lease = Api::<Lease>::namespaced(cp.client(), &ns)
        .get("reverie-controller")
        .await
        .expect("lease");
    let spec = lease.spec.expect("lease spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));
    assert_eq!(spec.lease_duration_seconds, Some(4));
    eprintln!(
        "takeover {takeover:.2?} after SIGKILL ({since_stuck:.2?} after the leader stopped in its reconcile); lease {LEASE:?}, renew every {RENEW:?}"
    );
    // The standby sees the last renewal within one period, waits out the
    // lease, and notices at its next look: lease + 2 renew periods (plus
    // a second for a loaded machine).
    assert!(
        takeover <= LEASE + RENEW * 2 + Duration::from_secs(1),
        "takeover took {takeover:?}"
    );
    assert!(b.running(), "{}", b.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn controller_reconnects_after_an_apiserver_restart_and_converges() {
    let _serial = SERIAL.lock().await;
    let cp = ControlPlane::shared().await;
    let _node = TestNode::shared().await;
    let ns = namespace_with_store(cp, "failover-apiserver", "").await;
    let mut c = cp.spawn_controller("controller", &ns, &[], &[]);
    let patch = |name: &str, content: &str| {
        format!("apiVersion: reverie.dev/v1alpha1\nkind: MemoryPatch\nmetadata:\n  name: {name}\n  labels: {{reverie.dev/store: team}}\n  annotations: {{reverie.dev/approval: approved}}\nspec:\n  storeRef: {{name: team}}\n  summary: restart test\n  ops:\n  - {{op: add, path: lessons.md, section: Restarts, content: \"{content}\", reason: instruction}}\n")
    };
    cp.apply_yaml(&ns, &patch("before", "Applied before the outage."));
    wait_patch_phase(cp, &ns, "before", PatchPhase::Applied, WAIT).await;

    let outage = cp.restart_apiserver(Duration::from_secs(5)).await;
    let back = Instant::now();
    // Created as soon as the apiserver answers, while the controller's
    // watches are still failing and backing off.
    cp.apply_yaml(&ns, &patch("after", "Applied after the outage."));
    let p = wait_patch_phase(cp, &ns, "after", PatchPhase::Applied, WAIT).await;
    let converged = back.elapsed();
    assert_eq!(p.status.and_then(|s| s.applied_revision), Some(2));
    assert!(c.running(), "the controller exited:\n{}", c.text());
    let lessons =
        std::fs::read_to_string(cp.pvc_dir(&ns, "team-memory").join("memories/lessons.md"))
            .expect("lessons");
    assert!(lessons.contains("Applied before the outage."), "{lessons}");
    assert!(lessons.contains("Applied after the outage."), "{lessons}");
    assert_eq!(
        journal(cp, &ns),
        vec!["0000000001.json".to_string(), "0000000002.json".to_string()]
    );
    assert_eq!(jobs_with_role(cp, &ns, "apply").await.len(), 2);
    eprintln!(
        "apiserver down and back in {outage:.2?}; the patch created after it was applied {converged:.2?} later"
    );
    c.kill();
}
