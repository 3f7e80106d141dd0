//! The MemoryStore controller: owns the store's claim (or adopts
//! `storage.existingClaim`), keeps the worker identity in its namespace, and
//! reports what the last jobs on the volume found (revision, entries, bytes,
//! last dream, pending patches).
//!
//! Deleting a store goes through a finalizer: its patches that have not
//! been applied yet are marked `Failed` ("store deleted"), so no apply job
//! starts against a volume that is going away.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::agent::watched_api;
use super::trim;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, Pod, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use super::dreamschedule::finished_at;
use super::jobs::{
    claim_name, job_state, owner_ref, parse_result, pod_termination, store_labels, ApplyResult,
    DreamResult, JobState, ROLE_LABEL,
};
use super::publish::LlmUsage;
use super::status::{conditions, Health};
use super::writes::{apply_if_changed, event, now, write_status};
use super::{workers, Context, Error};
use crate::api::{
    DeletionPolicy, MemoryPatch, MemoryPatchStatus, MemoryStore, MemoryStoreStatus, PatchPhase,
    STORE_LABEL,
};

/// The finalizer that guards a store's pending patches.
pub const FINALIZER: &str = "reverie.dev/memorystore";

/// The claim `<store>-memory`, owned by the store only with
/// `deletionPolicy: Delete` (so garbage collection removes it with the store).
pub fn build_claim(store: &MemoryStore) -> Result<PersistentVolumeClaim, Error> {
    let storage = &store.spec.storage;
    let owners = match store.spec.deletion_policy {
        DeletionPolicy::Delete => Some(vec![owner_ref(store)?]),
        DeletionPolicy::Retain => None,
    };
    Ok(PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(claim_name(store)),
            namespace: store.namespace(),
            labels: Some(store_labels(&store.name_any())),
            owner_references: owners,
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(
                storage
                    .access_modes
                    .iter()
                    .map(|m| m.as_str().to_string())
                    .collect(),
            ),
            storage_class_name: storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(storage.size.clone()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    })
}

/// What the finished jobs on a store's volume reported, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobReport {
    /// When the job finished (orders the reports).
    pub finished: Option<Time>,
    pub name: String,
    /// `dream` or `apply`.
    pub role: String,
    pub revision: Option<u64>,
    pub entries: Option<u64>,
    pub bytes: Option<u64>,
    /// A dream's LLM usage, when its LLM pass ran.
    pub llm: Option<LlmUsage>,
}

/// Folds job reports (in any order) into the store's figures: the newest
/// report wins; `lastDream` is the newest finished dream.
pub fn fold_reports(mut reports: Vec<JobReport>, status: &mut MemoryStoreStatus) {
    reports.sort_by(|a, b| {
        let key = |r: &JobReport| r.finished.as_ref().map(|t| t.0);
        key(a).cmp(&key(b)).then_with(|| a.name.cmp(&b.name))
    });
    for r in reports {
        status.revision = r.revision.or(status.revision);
        status.entries = r.entries.or(status.entries);
        status.bytes = r.bytes.or(status.bytes);
        if r.role == "dream" {
            status.last_dream = r.finished.clone().or(status.last_dream.clone());
        }
    }
}

/// Whether a patch still waits to be applied (counts as pending).
pub fn is_open(phase: Option<PatchPhase>) -> bool {
    matches!(
        phase.unwrap_or_default(),
        PatchPhase::Pending | PatchPhase::Approved | PatchPhase::Applying
    )
}

/// A dream Job that finished after the store's `lastFinishedDream`.
#[derive(Clone, Debug, PartialEq)]
pub struct FinishedDream {
    /// The Job's [`super::metrics::object_key`].
    pub job: String,
    /// The Job's name.
    pub name: String,
    pub succeeded: bool,
    /// From the Job's start to its completion (or failure).
    pub took: Option<Duration>,
}

/// The dream Jobs among `jobs` that finished after `since` (all finished
/// ones when `since` is `None`), and the new watermark: the newest finish
/// time seen, or `since` when none is newer.
pub fn dreams_finished_after(
    jobs: &[Job],
    since: Option<&Time>,
) -> (Vec<FinishedDream>, Option<Time>) {
    let mut newest = since.cloned();
    let mut out = Vec::new();
    for job in jobs {
        if job.labels().get(ROLE_LABEL).map(String::as_str) != Some("dream") {
            continue;
        }
        let state = job_state(job);
        let Some(done) = finished_at(job).filter(|_| state != JobState::Running) else {
            continue;
        };
        if since.is_some_and(|s| done.0 <= s.0) {
            continue;
        }
        let took = job
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .and_then(|start| Duration::try_from(done.0.duration_since(start.0)).ok());
        out.push(FinishedDream {
            job: super::metrics::object_key(job),
            name: job.name_any(),
            succeeded: state == JobState::Succeeded,
            took,
        });
        if newest.as_ref().is_none_or(|n| done.0 > n.0) {
            newest = Some(done);
        }
    }
    (out, newest)
}

/// The reports of the successful jobs among `jobs` (the store's), read from
/// their pods' termination messages.
async fn job_reports(client: &Client, ns: &str, jobs: &[Job]) -> Result<Vec<JobReport>, Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut out = Vec::new();
    for job in jobs {
        if job_state(job) != JobState::Succeeded {
            continue;
        }
        let name = job.name_any();
        let role = job.labels().get(ROLE_LABEL).cloned().unwrap_or_default();
        let pod_list = pods
            .list(&ListParams::default().labels(&format!("job-name={name}")))
            .await?;
        let Some(message) = pod_list
            .items
            .iter()
            .filter_map(pod_termination)
            .find(|t| t.exit_code == 0)
            .map(|t| t.message)
        else {
            continue;
        };
        let finished = job.status.as_ref().and_then(|s| s.completion_time.clone());
        let report = match role.as_str() {
            "dream" => parse_result::<DreamResult>(&message).map(|d| JobReport {
                finished,
                name,
                role,
                revision: Some(d.revision),
                entries: Some(d.entries),
                bytes: Some(d.bytes),
                llm: d.llm,
            }),
            _ => parse_result::<ApplyResult>(&message).map(|a| JobReport {
                finished,
                name,
                role,
                revision: a.revision,
                entries: a.entries,
                bytes: a.bytes,
                llm: None,
            }),
        };
        out.extend(report);
    }
    Ok(out)
}

/// The store's patches (by the `storeRef`, which the label only mirrors).
pub async fn store_patches(
    client: &Client,
    ns: &str,
    store: &str,
) -> Result<Vec<MemoryPatch>, Error> {
    let api: Api<MemoryPatch> = Api::namespaced(client.clone(), ns);
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|p| p.spec.store_ref.name == store)
        .collect())
}

async fn reconcile(store: Arc<MemoryStore>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = store
        .namespace()
        .ok_or_else(|| Error::Invalid("MemoryStore without namespace".to_string()))?;
    let api: Api<MemoryStore> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, store, |ev| async {
        match ev {
            Finalizer::Apply(s) => apply(&s, &ctx, &ns).await,
            Finalizer::Cleanup(s) => cleanup(&s, &ctx, &ns).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        kube::runtime::finalizer::Error::AddFinalizer(e)
        | kube::runtime::finalizer::Error::RemoveFinalizer(e) => Error::Kube(e),
        other => Error::Invalid(other.to_string()),
    })
}

async fn apply(store: &MemoryStore, ctx: &Context, ns: &str) -> Result<Action, Error> {
    let client = &ctx.client;
    let name = store.name_any();
    workers::ensure(client, ns, &ctx.config.worker_service_account).await?;

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let claim = claim_name(store);
    let health = if store.spec.storage.existing_claim.is_some() {
        match claims.get_opt(&claim).await? {
            Some(_) => Health::ready("ClaimAdopted", format!("uses existing claim {claim}")),
            None => Health::stalled(
                "ClaimNotFound",
                format!(
                    "storage.existingClaim names PersistentVolumeClaim {claim}, which does not exist in namespace {ns}; create it or remove existingClaim"
                ),
            ),
        }
    } else {
        match apply_if_changed(&claims, build_claim(store)?).await {
            Ok(_) => Health::ready("ClaimReady", format!("claim {claim} exists")),
            Err(Error::Kube(kube::Error::Api(e))) if e.code == 422 || e.code == 403 => {
                Health::stalled(
                    "ClaimRejected",
                    format!("the apiserver refused claim {claim}: {}", e.message),
                )
            }
            Err(e) => return Err(e),
        }
    };

    let previous = store.status.clone().unwrap_or_default();
    let mut status = previous.clone();
    let jobs = Api::<Job>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&format!("{STORE_LABEL}={name}")))
        .await?
        .items;
    let reports = job_reports(client, ns, &jobs).await?;
    let llm_of: BTreeMap<String, LlmUsage> = reports
        .iter()
        .filter_map(|r| r.llm.clone().map(|u| (r.name.clone(), u)))
        .collect();
    fold_reports(reports, &mut status);
    let (dreams, watermark) = dreams_finished_after(&jobs, previous.last_finished_dream.as_ref());
    status.last_finished_dream = watermark;
    let pending = store_patches(client, ns, &name)
        .await?
        .iter()
        .filter(|p| is_open(p.status.as_ref().and_then(|s| s.phase)))
        .count();
    status.pending_patches = Some(pending as u32);
    status.claim_name = Some(claim);
    status.observed_generation = store.metadata.generation;
    status.conditions = conditions(
        &health,
        store.metadata.generation,
        &previous.conditions,
        &now(),
    );
    let changed_health = previous.conditions.first().map(|c| &c.reason)
        != status.conditions.first().map(|c| &c.reason);
    if write_status(&api_of(ctx, ns), store, store.status.as_ref(), &status).await? {
        tracing::info!(namespace = ns, name, revision = ?status.revision, pending, "store status updated");
        // Counted only once the new watermark is recorded, so a failed
        // write (retried) does not count the same Jobs twice.
        let m = super::metrics::metrics();
        for d in &dreams {
            if let (true, Some(u)) = (
                m.record_dream(&d.job, d.succeeded, d.took),
                llm_of.get(&d.name),
            ) {
                m.record_llm(&u.provider, u.input_tokens, u.output_tokens, u.errors);
            }
        }
    }
    if changed_health {
        let (warning, reason, msg) = match &health {
            Health::Ready { reason, message } => (false, reason, message),
            Health::Reconciling { reason, message } | Health::Stalled { reason, message } => {
                (true, reason, message)
            }
        };
        event(client, store, warning, reason, msg.clone()).await;
    }
    Ok(match health {
        Health::Ready { .. } => Action::requeue(Duration::from_secs(300)),
        _ => Action::requeue(Duration::from_secs(30)),
    })
}

fn api_of(ctx: &Context, ns: &str) -> Api<MemoryStore> {
    Api::namespaced(ctx.client.clone(), ns)
}

async fn cleanup(store: &MemoryStore, ctx: &Context, ns: &str) -> Result<Action, Error> {
    let name = store.name_any();
    let patches: Api<MemoryPatch> = Api::namespaced(ctx.client.clone(), ns);
    for p in store_patches(&ctx.client, ns, &name).await? {
        let current = p.status.clone();
        let phase = current.as_ref().and_then(|s| s.phase);
        // An apply that already runs finishes on its own; only queued
        // patches are closed.
        if !matches!(
            phase.unwrap_or_default(),
            PatchPhase::Pending | PatchPhase::Approved
        ) {
            continue;
        }
        let status = MemoryPatchStatus {
            phase: Some(PatchPhase::Failed),
            message: Some(format!(
                "MemoryStore {name} was deleted before the patch was applied"
            )),
            observed_generation: p.metadata.generation,
            conditions: conditions(
                &Health::stalled("StoreDeleted", format!("MemoryStore {name} was deleted")),
                p.metadata.generation,
                &current.clone().unwrap_or_default().conditions,
                &now(),
            ),
            applied_revision: None,
        };
        write_status(&patches, &p, current.as_ref(), &status).await?;
        event(
            &ctx.client,
            &p,
            true,
            "StoreDeleted",
            format!("MemoryStore {name} was deleted; the patch will not be applied"),
        )
        .await;
    }
    tracing::info!(namespace = ns, name, policy = ?store.spec.deletion_policy, "store deleted");
    Ok(Action::await_change())
}

fn error_policy(store: Arc<MemoryStore>, error: &Error, _ctx: Arc<Context>) -> Action {
    super::retry_after_error(store.as_ref(), error, super::DREAM_LOOP_RETRY)
}

/// Runs the MemoryStore controller until the stream ends.
pub async fn run(ctx: Arc<Context>) {
    let stores = watched_api::<MemoryStore>(&ctx);
    let claims = watched_api::<PartialObjectMeta<PersistentVolumeClaim>>(&ctx);
    let jobs = watched_api::<PartialObjectMeta<Job>>(&ctx);
    let patches = watched_api::<MemoryPatch>(&ctx);
    // Trimmed streams (see `trim`): claims and Jobs as metadata only.
    let managed = watcher::Config::default().labels(STORE_LABEL);
    let (reader, stores) = trim::reflected(stores, watcher::Config::default());
    let claims = trim::metadata_trigger(claims, managed.clone());
    let jobs = trim::metadata_trigger(jobs, managed);
    let patches = trim::trigger(patches, watcher::Config::default());
    Controller::for_stream(stores, reader)
        .with_config(trim::controller_config())
        .owns_stream(claims)
        .watches_stream(jobs, |job: PartialObjectMeta<Job>| {
            let ns = job.namespace();
            job.labels()
                .get(STORE_LABEL)
                .cloned()
                .and_then(|s| ns.map(|ns| ObjectRef::new(&s).within(&ns)))
        })
        .watches_stream(patches, |p: MemoryPatch| {
            p.namespace()
                .map(|ns| ObjectRef::new(&p.spec.store_ref.name).within(&ns))
        })
        .run(
            super::metrics::observe("memorystore", reconcile),
            error_policy,
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MemoryStoreSpec;

    fn store(policy: DeletionPolicy) -> MemoryStore {
        let mut s = MemoryStore::new(
            "team",
            MemoryStoreSpec {
                storage: Default::default(),
                instructions: None,
                limits: None,
                retention: None,
                deletion_policy: policy,
            },
        );
        s.metadata.namespace = Some("ns".to_string());
        s.metadata.uid = Some("u1".to_string());
        s
    }

    #[test]
    fn claim_is_owned_only_when_it_goes_with_the_store() {
        let c = build_claim(&store(DeletionPolicy::Delete)).expect("claim");
        assert_eq!(c.metadata.name.as_deref(), Some("team-memory"));
        assert_eq!(c.metadata.owner_references.as_ref().map(Vec::len), Some(1));
        let spec = c.spec.expect("spec");
        assert_eq!(spec.access_modes, Some(vec!["ReadWriteOnce".to_string()]));
        assert_eq!(
            spec.resources
                .and_then(|r| r.requests)
                .and_then(|r| r.get("storage").cloned()),
            Some(Quantity("1Gi".to_string()))
        );
        let kept = build_claim(&store(DeletionPolicy::Retain)).expect("claim");
        assert!(kept.metadata.owner_references.is_none());
    }

    fn t(s: &str) -> Option<Time> {
        Some(Time(s.parse().expect("time")))
    }

    #[test]
    fn newest_report_wins() {
        let r = |name: &str, at: &str, role: &str, rev: u64| JobReport {
            finished: t(at),
            name: name.to_string(),
            role: role.to_string(),
            revision: Some(rev),
            entries: Some(rev * 10),
            bytes: Some(rev * 100),
            llm: None,
        };
        let mut s = MemoryStoreStatus::default();
        fold_reports(
            vec![
                r("apply-2", "2026-11-30T10:00:00Z", "apply", 2),
                r("dream-1", "2026-11-30T09:00:00Z", "dream", 1),
                r("apply-1", "2026-11-30T09:30:00Z", "apply", 1),
            ],
            &mut s,
        );
        assert_eq!(s.revision, Some(2));
        assert_eq!(s.entries, Some(20));
        assert_eq!(s.last_dream, t("2026-11-30T09:00:00Z"));
        assert!(is_open(None));
        assert!(!is_open(Some(PatchPhase::Applied)));
    }

    fn dream_job(name: &str, role: &str, cond: Option<&str>, start: &str, end: &str) -> Job {
        let mut status = serde_json::json!({"startTime": start});
        if let Some(c) = cond {
            status["conditions"] =
                serde_json::json!([{"type": c, "status": "True", "lastTransitionTime": end}]);
            if c == "Complete" {
                status["completionTime"] = serde_json::json!(end);
            }
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {ROLE_LABEL: role}},
            "status": status,
        }))
        .expect("job")
    }

    #[test]
    fn each_finished_dream_is_counted_once() {
        let jobs = vec![
            dream_job(
                "d1",
                "dream",
                Some("Complete"),
                "2026-11-30T09:00:00Z",
                "2026-11-30T09:00:42Z",
            ),
            dream_job(
                "d2",
                "dream",
                Some("Failed"),
                "2026-11-30T10:00:00Z",
                "2026-11-30T10:00:05Z",
            ),
            dream_job("d3", "dream", None, "2026-11-30T11:00:00Z", ""),
            dream_job(
                "a1",
                "apply",
                Some("Complete"),
                "2026-11-30T12:00:00Z",
                "2026-11-30T12:00:01Z",
            ),
        ];
        let (first, mark) = dreams_finished_after(&jobs, None);
        assert_eq!(
            first,
            vec![
                FinishedDream {
                    job: "Job//d1".to_string(),
                    name: "d1".to_string(),
                    succeeded: true,
                    took: Some(Duration::from_secs(42))
                },
                FinishedDream {
                    job: "Job//d2".to_string(),
                    name: "d2".to_string(),
                    succeeded: false,
                    took: Some(Duration::from_secs(5))
                },
            ]
        );
        assert_eq!(mark, t("2026-11-30T10:00:05Z"));
        // The next reconcile (or a restarted controller) reads the watermark
        // from the status and counts nothing again.
        let (again, same) = dreams_finished_after(&jobs, mark.as_ref());
        assert!(again.is_empty());
        assert_eq!(same, mark);
        let (later, newer) = dreams_finished_after(&jobs, t("2026-11-30T09:30:00Z").as_ref());
        assert_eq!(later.len(), 1);
        assert!(!later[0].succeeded);
        assert_eq!(newer, mark);
    }
}
