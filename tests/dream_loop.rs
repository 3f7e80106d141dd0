//! The operator's dream loop on the real control plane: MemoryStore →
//! DreamSchedule CronJob → MemoryPatch awaiting approval → apply Job. The
//! controller runs in-process (one per test, watching only that test's
//! namespace); the test node runs the pods as the cargo-built `reverie`.

mod common;

use common::reverie::{output_text as text, seeded_store};

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use common::node::TestNode;
use common::{eventually, ControlPlane};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams};
use reverie::api::{DreamSchedule, MemoryPatch, MemoryStore, PatchPhase};
use reverie::controller::{self, Context, ControllerConfig};

const WAIT: Duration = Duration::from_secs(90);

/// Starts the controller for `ns` on the calling test's runtime.
fn start_controller(cp: &ControlPlane, ns: &str) {
    let ctx = Arc::new(Context {
        client: cp.client(),
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

/// alice may approve patches in `ns`; bob may edit them but not approve.
fn grant_users(cp: &ControlPlane, ns: &str) {
    cp.apply_yaml(
        ns,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: patch-editor}\nrules:\n- {apiGroups: [reverie.dev], resources: [memorypatches], verbs: [get, list, patch, update]}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: alice-approves}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: reverie-approver}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: alice-edits}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: patch-editor}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: bob-edits}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: patch-editor}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: bob}]\n",
    );
}

fn condition_reason(
    conds: Option<&[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]>,
    type_: &str,
) -> Option<String> {
    conds?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| c.reason.clone())
}

/// `kind/name@resourceVersion` of every object the controller writes in
/// `ns` (its resources, their children, the worker identity, events).
async fn versions(cp: &ControlPlane, ns: &str) -> Vec<String> {
    async fn of<K>(c: &kube::Client, ns: &str, kind: &str, out: &mut Vec<String>)
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let list = Api::<K>::namespaced(c.clone(), ns)
            .list(&ListParams::default())
            .await
            .expect("list");
        for o in list {
            let m = o.meta();
            out.push(format!(
                "{kind}/{}@{}",
                m.name.clone().unwrap_or_default(),
                m.resource_version.clone().unwrap_or_default()
            ));
        }
    }
    let c = cp.client();
    let mut v = Vec::new();
    of::<MemoryStore>(&c, ns, "memorystore", &mut v).await;
    of::<DreamSchedule>(&c, ns, "dreamschedule", &mut v).await;
    of::<MemoryPatch>(&c, ns, "memorypatch", &mut v).await;
    of::<CronJob>(&c, ns, "cronjob", &mut v).await;
    of::<Job>(&c, ns, "job", &mut v).await;
    of::<PersistentVolumeClaim>(&c, ns, "pvc", &mut v).await;
    of::<ServiceAccount>(&c, ns, "serviceaccount", &mut v).await;
    of::<k8s_openapi::api::rbac::v1::Role>(&c, ns, "role", &mut v).await;
    of::<k8s_openapi::api::rbac::v1::RoleBinding>(&c, ns, "rolebinding", &mut v).await;
    of::<k8s_openapi::api::events::v1::Event>(&c, ns, "event", &mut v).await;
    v.sort();
    v
}

/// Asserts that nothing the controller writes changes during `idle`.
async fn assert_quiet(cp: &ControlPlane, ns: &str, idle: Duration) {
    // Let the last reconciles of whatever just happened settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = versions(cp, ns).await;
    tokio::time::sleep(idle).await;
    let after = versions(cp, ns).await;
    let changed: Vec<&String> = after.iter().filter(|v| !before.contains(v)).collect();
    assert!(
        changed.is_empty(),
        "the controller wrote while idle ({} objects watched): {changed:?}",
        before.len()
    );
}

fn entry_id(text: &str) -> String {
    reverie::memory::entry_id(text)
}

const TIMEOUT_ENTRY: &str = "The default request timeout is 10s.";

/// A patch of store `team` that adds a lesson and deletes the timeout note.
fn patch_yaml(name: &str, schedule: Option<&str>, with_delete: bool) -> String {
    let labels = match schedule {
        Some(s) => format!("  labels: {{reverie.dev/store: team, reverie.dev/schedule: {s}}}\n"),
        None => "  labels: {reverie.dev/store: team}\n".to_string(),
    };
    let delete = if with_delete {
        format!(
            "  - {{op: delete, path: notes.md, id: {}, before: {TIMEOUT_ENTRY:?}, reason: stale}}\n",
            entry_id(TIMEOUT_ENTRY)
        )
    } else {
        String::new()
    };
    format!(
        "apiVersion: reverie.dev/v1alpha1\nkind: MemoryPatch\nmetadata:\n  name: {name}\n{labels}spec:\n  storeRef: {{name: team}}\n  baseRevision: 0\n  summary: test patch\n  ops:\n  - {{op: add, path: lessons.md, section: Deploys, content: \"Drain the node before the kernel upgrade ({name}).\", reason: instruction}}\n{delete}"
    )
}

async fn wait_phase(cp: &ControlPlane, ns: &str, name: &str, want: PatchPhase) -> MemoryPatch {
    common::reverie::wait_patch_phase(cp, ns, name, want, WAIT).await
}

fn approve_as(cp: &ControlPlane, user: &str, ns: &str, patch: &str, verdict: &str) -> Output {
    cp.kubectl_as(
        user,
        &[
            "annotate",
            "-n",
            ns,
            "memorypatch",
            patch,
            &format!("reverie.dev/approval={verdict}"),
            &format!("reverie.dev/approved-by={user}"),
        ],
    )
}

/// Waits until the approval policy refuses bob in `ns` (a new policy takes a
/// moment to be enforced). Each try uses a fresh probe patch of a store that
/// does not exist, so a try that lands before enforcement changes nothing.
async fn wait_policy_enforced(cp: &ControlPlane, ns: &str) {
    let tries = std::sync::atomic::AtomicUsize::new(0);
    eventually("the approval policy to be enforced", WAIT, || {
        let probe = format!(
            "probe-{}",
            tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        cp.apply_yaml(
            ns,
            &format!("apiVersion: reverie.dev/v1alpha1\nkind: MemoryPatch\nmetadata: {{name: {probe}}}\nspec:\n  storeRef: {{name: no-such-store}}\n  ops:\n  - {{op: add, path: probe.md, content: probe, reason: instruction}}\n"),
        );
        let o = approve_as(cp, "bob", ns, &probe, "approved");
        let t = text(&o);
        async move {
            if !o.status.success() && t.contains("may not approve") {
                Ok(())
            } else {
                Err(t)
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn approved_patch_is_applied_by_a_job() {
    let cp = ControlPlane::shared().await;
    let _node = TestNode::shared().await;
    cp.install_crds().await;
    cp.install_approval_policy();
    let ns = cp.create_namespace("loop-apply").await;
    grant_users(cp, &ns);
    start_controller(cp, &ns);
    let dir = seeded_store(cp, &ns, "team", WAIT).await;

    // The store owns its claim and set up the worker identity.
    let claim: PersistentVolumeClaim = Api::namespaced(cp.client(), &ns)
        .get("team-memory")
        .await
        .expect("claim");
    assert_eq!(
        claim.metadata.owner_references.expect("owner")[0].kind,
        "MemoryStore"
    );
    Api::<ServiceAccount>::namespaced(cp.client(), &ns)
        .get("reverie-worker")
        .await
        .expect("worker service account");

    cp.apply_yaml(&ns, &patch_yaml("p1", None, true));
    wait_phase(cp, &ns, "p1", PatchPhase::Pending).await;
    let stores: Api<MemoryStore> = Api::namespaced(cp.client(), &ns);
    eventually("one pending patch", WAIT, || async {
        let s = stores.get("team").await.map_err(|e| e.to_string())?;
        (s.status.as_ref().and_then(|s| s.pending_patches) == Some(1))
            .then_some(())
            .ok_or(format!("{:?}", s.status))
    })
    .await;

    // bob may edit patches but not approve them.
    wait_policy_enforced(cp, &ns).await;
    let out = approve_as(cp, "bob", &ns, "p1", "approved");
    assert!(!out.status.success(), "bob approved: {}", text(&out));
    assert!(text(&out).contains("may not approve"), "{}", text(&out));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(Api::<Job>::namespaced(cp.client(), &ns)
        .get_opt("p1-apply")
        .await
        .expect("get job")
        .is_none());

    let out = approve_as(cp, "alice", &ns, "p1", "approved");
    assert!(out.status.success(), "alice: {}", text(&out));
    let p = wait_phase(cp, &ns, "p1", PatchPhase::Applied).await;
    let status = p.status.expect("status");
    assert_eq!(status.applied_revision, Some(1), "{status:?}");

    // Every phase change is an Event on the patch.
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(cp.client(), &ns);
    eventually("events of p1", WAIT, || async {
        let reasons: Vec<String> = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("p1"))
            .filter_map(|e| e.reason)
            .collect();
        ["Pending", "Applying", "Applied"]
            .iter()
            .all(|r| reasons.iter().any(|x| x == r))
            .then_some(())
            .ok_or(format!("{reasons:?}"))
    })
    .await;
    let lessons = std::fs::read_to_string(dir.join("memories/lessons.md")).expect("lessons");
    assert!(lessons.contains("Drain the node before the kernel upgrade (p1)."));
    let notes = std::fs::read_to_string(dir.join("memories/notes.md")).expect("notes");
    assert!(!notes.contains(TIMEOUT_ENTRY), "{notes}");

    eventually("store at revision 1, nothing pending", WAIT, || async {
        let s = stores.get("team").await.map_err(|e| e.to_string())?;
        let st = s.status.clone().unwrap_or_default();
        (st.revision == Some(1) && st.pending_patches == Some(0) && st.entries.is_some())
            .then_some(())
            .ok_or(format!("{st:?}"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_and_conflicting_patches_change_nothing() {
    let cp = ControlPlane::shared().await;
    let _node = TestNode::shared().await;
    cp.install_crds().await;
    cp.install_approval_policy();
    let ns = cp.create_namespace("loop-reject").await;
    grant_users(cp, &ns);
    start_controller(cp, &ns);
    let dir = seeded_store(cp, &ns, "team", WAIT).await;

    cp.apply_yaml(&ns, &patch_yaml("nope", None, false));
    wait_phase(cp, &ns, "nope", PatchPhase::Pending).await;
    let out = approve_as(cp, "alice", &ns, "nope", "rejected");
    assert!(out.status.success(), "{}", text(&out));
    wait_phase(cp, &ns, "nope", PatchPhase::Rejected).await;

    // Someone edits the entry the patch deletes between proposal and apply.
    cp.apply_yaml(&ns, &patch_yaml("late", None, true));
    wait_phase(cp, &ns, "late", PatchPhase::Pending).await;
    let notes_path = dir.join("memories/notes.md");
    let edited = std::fs::read_to_string(&notes_path)
        .expect("notes")
        .replace(TIMEOUT_ENTRY, "The default request timeout is 30s.");
    std::fs::write(&notes_path, &edited).expect("edit");
    let lessons_before = std::fs::read(dir.join("memories/lessons.md")).expect("lessons");

    let out = approve_as(cp, "alice", &ns, "late", "approved");
    assert!(out.status.success(), "{}", text(&out));
    let p = wait_phase(cp, &ns, "late", PatchPhase::Conflicted).await;
    let msg = p.status.and_then(|s| s.message).unwrap_or_default();
    assert!(
        msg.contains(&entry_id(TIMEOUT_ENTRY)) || msg.contains("delete"),
        "{msg}"
    );
    assert_eq!(std::fs::read_to_string(&notes_path).expect("notes"), edited);
    assert_eq!(
        std::fs::read(dir.join("memories/lessons.md")).expect("lessons"),
        lessons_before
    );
    assert!(Api::<Job>::namespaced(cp.client(), &ns)
        .get_opt("nope-apply")
        .await
        .expect("get")
        .is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn auto_mode_approves_only_listed_op_kinds() {
    let cp = ControlPlane::shared().await;
    let _node = TestNode::shared().await;
    cp.install_crds().await;
    cp.install_approval_policy();
    let ns = cp.create_namespace("loop-auto").await;
    start_controller(cp, &ns);
    let dir = seeded_store(cp, &ns, "team", WAIT).await;
    cp.apply_yaml(
        &ns,
        "apiVersion: reverie.dev/v1alpha1\nkind: DreamSchedule\nmetadata: {name: auto}\nspec:\n  storeRef: {name: team}\n  schedule: \"0 3 * * *\"\n  suspend: true\n  approval: {mode: Auto, autoApprove: [add]}\n",
    );
    cp.apply_yaml(&ns, &patch_yaml("adds", Some("auto"), false));
    cp.apply_yaml(&ns, &patch_yaml("deletes", Some("auto"), true));
    // Creation times have a resolution of one second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    cp.apply_yaml(&ns, &patch_yaml("adds-later", Some("auto"), false));

    // Both approved at once; applied one at a time, in creation order.
    let later = wait_phase(cp, &ns, "adds-later", PatchPhase::Applied).await;
    assert_eq!(later.status.and_then(|s| s.applied_revision), Some(2));
    let p = wait_phase(cp, &ns, "adds", PatchPhase::Applied).await;
    assert_eq!(p.status.as_ref().and_then(|s| s.applied_revision), Some(1));
    let ann = p.metadata.annotations.unwrap_or_default();
    assert_eq!(
        ann.get("reverie.dev/approval").map(String::as_str),
        Some("approved")
    );
    assert!(ann
        .get("reverie.dev/approved-by")
        .is_some_and(|u| !u.is_empty()));
    let lessons = std::fs::read_to_string(dir.join("memories/lessons.md")).expect("lessons");
    assert!(lessons.contains("(adds)."));

    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = wait_phase(cp, &ns, "deletes", PatchPhase::Pending).await;
    assert!(!p
        .metadata
        .annotations
        .unwrap_or_default()
        .contains_key("reverie.dev/approval"));
}

#[tokio::test(flavor = "multi_thread")]
async fn schedules_own_their_cron_job_and_stall_on_bad_input() {
    let cp = ControlPlane::shared().await;
    let _node = TestNode::shared().await;
    cp.install_crds().await;
    let ns = cp.create_namespace("loop-sched").await;
    start_controller(cp, &ns);
    seeded_store(cp, &ns, "team", WAIT).await;
    cp.apply_yaml(
        &ns,
        "apiVersion: reverie.dev/v1alpha1\nkind: DreamSchedule\nmetadata: {name: nightly}\nspec:\n  storeRef: {name: team}\n  schedule: \"* * * * *\"\n  suspend: true\n---\napiVersion: reverie.dev/v1alpha1\nkind: DreamSchedule\nmetadata: {name: bad-cron}\nspec:\n  storeRef: {name: team}\n  schedule: \"61 3 * * *\"\n---\napiVersion: reverie.dev/v1alpha1\nkind: DreamSchedule\nmetadata: {name: orphan}\nspec:\n  storeRef: {name: nowhere}\n  schedule: \"@daily\"\n",
    );
    let crons: Api<CronJob> = Api::namespaced(cp.client(), &ns);
    let cron = eventually("CronJob nightly-dream", WAIT, || async {
        crons
            .get_opt("nightly-dream")
            .await
            .map_err(|e| e.to_string())?
            .ok_or("missing".to_string())
    })
    .await;
    assert_eq!(cron.spec.suspend, Some(true));
    assert_eq!(cron.spec.concurrency_policy.as_deref(), Some("Forbid"));

    let schedules: Api<DreamSchedule> = Api::namespaced(cp.client(), &ns);

    // A dream that fails (an empty volume is not a store) is reported on the
    // schedule, which stays Ready: the next run may succeed.
    cp.apply_yaml(
        &ns,
        "apiVersion: reverie.dev/v1alpha1\nkind: MemoryStore\nmetadata: {name: empty}\nspec: {deletionPolicy: Delete}\n---\napiVersion: reverie.dev/v1alpha1\nkind: DreamSchedule\nmetadata:\n  name: empty\n  annotations: {reverie.dev/dream-now: first}\nspec:\n  storeRef: {name: empty}\n  schedule: \"@daily\"\n",
    );
    let failed = eventually("schedule empty reports the failed dream", WAIT, || async {
        let s = schedules.get("empty").await.map_err(|e| e.to_string())?;
        let conds = s.status.as_ref().map(|s| s.conditions.as_slice());
        conds
            .and_then(|c| {
                c.iter()
                    .find(|c| c.type_ == "Ready" && c.reason == "LastDreamFailed")
            })
            .map(|c| c.message.clone())
            .ok_or(format!("{:?}", s.status))
    })
    .await;
    assert!(failed.contains("memories"), "{failed}");

    for (name, reason) in [("bad-cron", "InvalidSchedule"), ("orphan", "StoreNotFound")] {
        eventually(&format!("{name} Stalled/{reason}"), WAIT, || async {
            let s = schedules.get(name).await.map_err(|e| e.to_string())?;
            let conds = s.status.as_ref().map(|s| s.conditions.as_slice());
            (condition_reason(conds, "Stalled").as_deref() == Some(reason))
                .then_some(())
                .ok_or(format!("{:?}", s.status))
        })
        .await;
    }
    assert!(crons
        .get_opt("bad-cron-dream")
        .await
        .expect("get")
        .is_none());

    // Quiet when idle: no reverie object or child changes while nothing happens.
    assert_quiet(cp, &ns, Duration::from_secs(35)).await;

    // The same schedule, not suspended, does fire here (so the silence of
    // the suspended one means something); by then a minute boundary has
    // passed for both.
    cp.apply_yaml(
        &ns,
        "apiVersion: reverie.dev/v1alpha1\nkind: DreamSchedule\nmetadata: {name: every}\nspec:\n  storeRef: {name: team}\n  schedule: \"* * * * *\"\n",
    );
    let jobs: Api<Job> = Api::namespaced(cp.client(), &ns);
    eventually(
        "a scheduled dream job of every",
        Duration::from_secs(150),
        || async {
            let l = jobs
                .list(&ListParams::default().labels("reverie.dev/schedule=every"))
                .await
                .map_err(|e| e.to_string())?;
            (!l.items.is_empty())
                .then_some(())
                .ok_or("none yet".to_string())
        },
    )
    .await;
    let suspended = jobs
        .list(&ListParams::default().labels("reverie.dev/schedule=nightly"))
        .await
        .expect("jobs");
    assert!(suspended.items.is_empty(), "{:?}", suspended.items);

    // Deleting the schedule removes its CronJob (garbage collection).
    schedules
        .delete("nightly", &DeleteParams::foreground())
        .await
        .expect("delete");
    eventually("CronJob nightly-dream gone", WAIT, || async {
        match crons
            .get_opt("nightly-dream")
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_store_fails_its_pending_patches_and_follows_the_deletion_policy() {
    let cp = ControlPlane::shared().await;
    cp.install_crds().await;
    let ns = cp.create_namespace("loop-delete").await;
    start_controller(cp, &ns);
    seeded_store(cp, &ns, "team", WAIT).await;
    cp.apply_yaml(
        &ns,
        "apiVersion: reverie.dev/v1alpha1\nkind: MemoryStore\nmetadata: {name: kept}\nspec:\n  deletionPolicy: Retain\n",
    );
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cp.client(), &ns);
    eventually("claim kept-memory", WAIT, || async {
        claims
            .get_opt("kept-memory")
            .await
            .map_err(|e| e.to_string())?
            .ok_or("missing".to_string())
    })
    .await;
    cp.apply_yaml(&ns, &patch_yaml("orphaned", None, false));
    wait_phase(cp, &ns, "orphaned", PatchPhase::Pending).await;

    let stores: Api<MemoryStore> = Api::namespaced(cp.client(), &ns);
    for name in ["team", "kept"] {
        stores
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete store");
    }
    let p = wait_phase(cp, &ns, "orphaned", PatchPhase::Failed).await;
    let msg = p.status.and_then(|s| s.message).unwrap_or_default();
    assert!(msg.contains("deleted"), "{msg}");
    eventually("stores gone", WAIT, || async {
        let left = stores
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        left.items
            .is_empty()
            .then_some(())
            .ok_or(format!("{} left", left.items.len()))
    })
    .await;
    // Delete: the claim goes with the store (garbage collection; the claim
    // may linger with its own protection finalizer, so a deletion mark counts).
    eventually("claim team-memory deleted", WAIT, || async {
        match claims
            .get_opt("team-memory")
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(c) if c.metadata.deletion_timestamp.is_some() => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await;
    // Retain: the claim stays.
    let kept = claims.get("kept-memory").await.expect("kept claim");
    assert!(kept.metadata.deletion_timestamp.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn dream_now_proposes_a_patch_that_an_approver_applies() {
    let cp = ControlPlane::shared().await;
    let _node = TestNode::shared().await;
    cp.install_crds().await;
    cp.install_approval_policy();
    let ns = cp.create_namespace("loop-dream").await;
    // Every pod the operator starts must pass the restricted Pod Security level.
    cp.kubectl_ok(&[
        "label",
        "namespace",
        &ns,
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    let refused = cp.kubectl(&[
        "run",
        "-n",
        &ns,
        "probe",
        "--image=busybox",
        "--restart=Never",
        "--dry-run=server",
    ]);
    assert!(
        !refused.status.success() && text(&refused).contains("restricted"),
        "the restricted level is not enforced here: {}",
        text(&refused)
    );
    grant_users(cp, &ns);
    start_controller(cp, &ns);
    let dir = seeded_store(cp, &ns, "team", WAIT).await;
    let before = std::fs::read_to_string(dir.join("memories/notes.md")).expect("notes");

    // Suspended: no scheduled dreams, but dream-now still works.
    cp.apply_yaml(
        &ns,
        "apiVersion: reverie.dev/v1alpha1\nkind: DreamSchedule\nmetadata:\n  name: nightly\n  annotations: {reverie.dev/dream-now: \"2026-11-30T21:00:00Z\"}\nspec:\n  storeRef: {name: team}\n  schedule: \"0 3 * * *\"\n  suspend: true\n  sessions: {since: LastDream}\n",
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
    let status = eventually("schedule reports the dream", WAIT, || async {
        let s = schedules.get("nightly").await.map_err(|e| e.to_string())?;
        let st = s.status.clone().unwrap_or_default();
        (st.last_patch.is_some() && st.last_dream.is_some())
            .then_some(st)
            .ok_or(format!("{:?}", s.status))
    })
    .await;
    assert_eq!(
        status.last_dream_now.as_deref(),
        Some("2026-11-30T21:00:00Z")
    );
    let name = status.last_patch.expect("patch name");

    let patches: Api<MemoryPatch> = Api::namespaced(cp.client(), &ns);
    let p = patches.get(&name).await.expect("patch");
    assert!(!p.spec.ops.is_empty());
    let labels = p.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("reverie.dev/schedule").map(String::as_str),
        Some("nightly")
    );
    assert_eq!(
        p.metadata.owner_references.clone().expect("owner")[0].kind,
        "MemoryStore"
    );
    wait_phase(cp, &ns, &name, PatchPhase::Pending).await;
    // Nothing changed on the volume before approval.
    assert_eq!(
        std::fs::read_to_string(dir.join("memories/notes.md")).expect("notes"),
        before
    );
    let stores: Api<MemoryStore> = Api::namespaced(cp.client(), &ns);
    eventually("store lastDream", WAIT, || async {
        let s = stores.get("team").await.map_err(|e| e.to_string())?;
        let st = s.status.clone().unwrap_or_default();
        (st.last_dream.is_some() && st.pending_patches == Some(1) && st.revision == Some(0))
            .then_some(())
            .ok_or(format!("{st:?}"))
    })
    .await;

    // The same token again (a controller restart, a re-apply) starts nothing new.
    let jobs: Api<Job> = Api::namespaced(cp.client(), &ns);
    let count = || async {
        jobs.list(&ListParams::default())
            .await
            .expect("jobs")
            .items
            .len()
    };
    assert_eq!(count().await, 1);

    let out = approve_as(cp, "alice", &ns, &name, "approved");
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
    assert_quiet(cp, &ns, Duration::from_secs(30)).await;
    let journal = cp.kubectl_ok(&[
        "get",
        "memorystore",
        "-n",
        &ns,
        "team",
        "-o",
        "jsonpath={.status.entries}",
    ]);
    assert!(!journal.trim().is_empty());
}
