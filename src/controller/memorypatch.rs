//! The MemoryPatch controller: a patch is `Pending` until the
//! `reverie.dev/approval` annotation says `approved` or `rejected`
//! (`Rejected` is final). Approved patches are applied by a Job
//! `<patch>-apply`, one at a time per store, in creation order; the Job's
//! result makes the patch `Applied`, `Conflicted` (exit 3) or `Failed`.
//!
//! With `approval.mode: Auto` on the DreamSchedule named by the patch's
//! `reverie.dev/schedule` label, the controller approves as itself, but only
//! when every op kind is in `autoApprove`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::agent::watched_api;
use super::trim;
use futures::StreamExt;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::ResourceExt;
use tokio::sync::OnceCell;

use super::jobs::{
    apply_job, apply_job_name, claim_name, job_state, parse_result, pod_termination, ApplyResult,
    JobState, Termination, SCHEDULE_LABEL,
};
use super::status::{conditions, Health};
use super::writes::{event, now, write_status};
use super::{Context, Error, FIELD_MANAGER};
use crate::api::{
    ApprovalMode, AutoApproveOp, DreamSchedule, MemoryPatch, MemoryPatchStatus, MemoryStore,
    OpKind, PatchPhase, APPROVAL_ANNOTATION, APPROVED_BY_ANNOTATION,
};

/// What the approval annotation says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    None,
    Approved,
    Rejected,
}

/// Reads `reverie.dev/approval` (anything but the two values counts as no
/// decision; the admission policy refuses other values anyway).
pub fn decision(patch: &MemoryPatch) -> Decision {
    match patch
        .annotations()
        .get(APPROVAL_ANNOTATION)
        .map(|s| s.trim())
    {
        Some("approved") => Decision::Approved,
        Some("rejected") => Decision::Rejected,
        _ => Decision::None,
    }
}

/// Whether a phase is the end of a patch's life.
pub fn is_final(phase: PatchPhase) -> bool {
    matches!(
        phase,
        PatchPhase::Rejected | PatchPhase::Applied | PatchPhase::Conflicted | PatchPhase::Failed
    )
}

/// Whether the schedule's policy lets the controller approve `patch`: mode
/// `Auto` and every op kind listed in `autoApprove` (`move` never is).
pub fn auto_approvable(schedule: &DreamSchedule, patch: &MemoryPatch) -> bool {
    let approval = &schedule.spec.approval;
    if approval.mode != ApprovalMode::Auto || patch.spec.ops.is_empty() {
        return false;
    }
    patch.spec.ops.iter().all(|op| {
        let kind = match op.op {
            OpKind::Add => AutoApproveOp::Add,
            OpKind::Update => AutoApproveOp::Update,
            OpKind::Merge => AutoApproveOp::Merge,
            OpKind::Delete => AutoApproveOp::Delete,
            OpKind::Move => return false,
        };
        approval.auto_approve.contains(&kind)
    })
}

/// The patch of a store whose turn it is: the oldest approved patch that
/// is not finished (creation time, then name). Patches already applying
/// come first, so a new approval never overtakes a running apply.
pub fn next_in_line(patches: &[MemoryPatch]) -> Option<String> {
    let phase = |p: &MemoryPatch| p.status.as_ref().and_then(|s| s.phase).unwrap_or_default();
    if let Some(p) = patches.iter().find(|p| phase(p) == PatchPhase::Applying) {
        return Some(p.name_any());
    }
    let mut open: Vec<&MemoryPatch> = patches
        .iter()
        .filter(|p| decision(p) == Decision::Approved && !is_final(phase(p)))
        .collect();
    open.sort_by(|a, b| {
        let t = |p: &MemoryPatch| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        t(a).cmp(&t(b))
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    open.first().map(|p| p.name_any())
}

/// The phase and message a finished apply Job means.
pub fn outcome(state: JobState, term: Option<&Termination>) -> (PatchPhase, Option<u64>, String) {
    let parsed = term.and_then(|t| parse_result::<ApplyResult>(&t.message));
    let detail = || {
        parsed
            .as_ref()
            .and_then(|r| r.error.clone())
            .or_else(|| term.map(|t| t.message.trim().to_string()))
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "no message from the apply pod".to_string())
    };
    match state {
        JobState::Succeeded => {
            let rev = parsed.as_ref().and_then(|r| r.revision);
            let msg = match (&parsed, rev) {
                (Some(r), Some(rev)) if r.already_applied => {
                    format!("already applied (store at revision {rev})")
                }
                (_, Some(rev)) => format!("applied as revision {rev}"),
                _ => "applied".to_string(),
            };
            (PatchPhase::Applied, rev, msg)
        }
        JobState::Failed => {
            let code = term
                .map(|t| t.exit_code)
                .or(parsed.as_ref().and_then(|r| r.exit_code));
            if code == Some(3) {
                (
                    PatchPhase::Conflicted,
                    None,
                    format!(
                        "the store changed since the patch was proposed: {}",
                        detail()
                    ),
                )
            } else {
                (
                    PatchPhase::Failed,
                    None,
                    format!("apply failed (exit {}): {}", code.unwrap_or(-1), detail()),
                )
            }
        }
        JobState::Running => (PatchPhase::Applying, None, "apply job running".to_string()),
    }
}

/// The user this controller acts as (for `reverie.dev/approved-by`), asked
/// once with a SelfSubjectReview.
async fn own_username(ctx: &Context) -> Result<String, Error> {
    static NAME: OnceCell<String> = OnceCell::const_new();
    NAME.get_or_try_init(|| async {
        let api: Api<SelfSubjectReview> = Api::all(ctx.client.clone());
        let review = api
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await?;
        review
            .status
            .and_then(|s| s.user_info)
            .and_then(|u| u.username)
            .ok_or_else(|| Error::Invalid("SelfSubjectReview returned no username".to_string()))
    })
    .await
    .cloned()
}

struct Next {
    phase: PatchPhase,
    message: String,
    applied_revision: Option<u64>,
    health: Health,
    requeue: Option<Duration>,
}

impl Next {
    fn new(phase: PatchPhase, message: impl Into<String>, health: Health) -> Self {
        Next {
            phase,
            message: message.into(),
            applied_revision: None,
            health,
            requeue: None,
        }
    }
}

async fn reconcile(patch: Arc<MemoryPatch>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = patch
        .namespace()
        .ok_or_else(|| Error::Invalid("MemoryPatch without namespace".to_string()))?;
    let name = patch.name_any();
    let client = &ctx.client;
    let api: Api<MemoryPatch> = Api::namespaced(client.clone(), &ns);
    let current = patch.status.clone();
    let phase = current.as_ref().and_then(|s| s.phase).unwrap_or_default();
    if is_final(phase) {
        // The end of its life: nothing to do, ever.
        return Ok(Action::await_change());
    }
    let store_name = &patch.spec.store_ref.name;
    let store = Api::<MemoryStore>::namespaced(client.clone(), &ns)
        .get_opt(store_name)
        .await?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let job_name = apply_job_name(&name);
    let job = jobs.get_opt(&job_name).await?;

    // A part of a split patch waits until its whole group exists (a dream
    // killed mid-publish must not leave half a proposal approvable).
    let gap = if job.is_none() && decision(&patch) != Decision::Rejected {
        super::publish::group_gap(client, &ns, &patch).await?
    } else {
        None
    };

    let next = if let Some(job) = job {
        // An apply ran or runs: its result is the patch's fate.
        let state = job_state(&job);
        let term = if state == JobState::Running {
            None
        } else {
            Api::<Pod>::namespaced(client.clone(), &ns)
                .list(&ListParams::default().labels(&format!("job-name={job_name}")))
                .await?
                .items
                .iter()
                .find_map(pod_termination)
        };
        let (phase, rev, message) = outcome(state, term.as_ref());
        let health = match phase {
            PatchPhase::Applied => Health::ready("Applied", message.clone()),
            PatchPhase::Applying => Health::reconciling("Applying", message.clone()),
            PatchPhase::Conflicted => Health::stalled(
                "Conflicted",
                format!("{message}; dream again to propose a patch against the current memory"),
            ),
            _ => Health::stalled("ApplyFailed", message.clone()),
        };
        let mut n = Next::new(phase, message, health);
        n.applied_revision = rev;
        n
    } else if store
        .as_ref()
        .is_none_or(|s| s.metadata.deletion_timestamp.is_some())
    {
        Next::new(
            PatchPhase::Failed,
            format!(
                "MemoryStore {store_name} does not exist (deleted?); the patch cannot be applied"
            ),
            Health::stalled(
                "StoreNotFound",
                format!("MemoryStore {store_name} not found in namespace {ns}"),
            ),
        )
    } else if let Some(waiting) = gap {
        let mut n = Next::new(
            PatchPhase::Pending,
            waiting.clone(),
            Health::reconciling("IncompleteGroup", waiting),
        );
        n.requeue = Some(Duration::from_secs(10));
        n
    } else {
        match decision(&patch) {
            Decision::Rejected => {
                let reason = patch
                    .annotations()
                    .get(crate::api::APPROVAL_REASON_ANNOTATION)
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default();
                Next::new(
                    PatchPhase::Rejected,
                    format!("rejected{reason}"),
                    Health::ready(
                        "Rejected",
                        "rejected by a reviewer; nothing will be applied",
                    ),
                )
            }
            Decision::None => {
                if maybe_auto_approve(&ctx, &ns, &patch).await? {
                    // The annotation change triggers the next reconcile.
                    return Ok(Action::await_change());
                }
                Next::new(
                    PatchPhase::Pending,
                    "waiting for approval",
                    Health::ready(
                        "AwaitingApproval",
                        format!("annotate with {APPROVAL_ANNOTATION}=approved (needs the verb approve on memorystores/{store_name})"),
                    ),
                )
            }
            Decision::Approved => {
                let siblings = super::memorystore::store_patches(client, &ns, store_name).await?;
                match next_in_line(&siblings) {
                    Some(first) if first == name => {
                        let store = store.as_ref().ok_or_else(|| {
                            Error::Invalid(format!("MemoryStore {store_name} vanished"))
                        })?;
                        let job = apply_job(
                            &patch,
                            &claim_name(store),
                            &ctx.config.image,
                            &ctx.config.worker_service_account,
                            store.spec.retention.as_ref().and_then(|r| r.revisions),
                        )?;
                        match jobs.create(&PostParams::default(), &job).await {
                            Ok(_) => {}
                            Err(kube::Error::Api(s)) if s.code == 409 => {}
                            Err(e) => return Err(e.into()),
                        }
                        crate::memory::apply::fault_point("apply-job-created");
                        tracing::info!(namespace = ns, name, job = job_name, "apply job created");
                        Next::new(
                            PatchPhase::Applying,
                            format!("applying with Job {job_name}"),
                            Health::reconciling(
                                "Applying",
                                format!("Job {job_name} applies the patch"),
                            ),
                        )
                    }
                    other => {
                        let mut n = Next::new(
                            PatchPhase::Approved,
                            format!(
                                "approved; waiting for patch {} of the same store to finish",
                                other.unwrap_or_default()
                            ),
                            Health::reconciling(
                                "Queued",
                                "another patch of the store is applied first",
                            ),
                        );
                        n.requeue = Some(Duration::from_secs(3));
                        n
                    }
                }
            }
        }
    };

    let previous = current.clone().unwrap_or_default();
    let status = MemoryPatchStatus {
        conditions: conditions(
            &next.health,
            patch.metadata.generation,
            &previous.conditions,
            &now(),
        ),
        phase: Some(next.phase),
        applied_revision: next.applied_revision,
        message: Some(next.message.clone()),
        observed_generation: patch.metadata.generation,
    };
    if write_status(&api, &patch, current.as_ref(), &status).await?
        && previous.phase != Some(next.phase)
    {
        tracing::info!(namespace = ns, name, phase = ?next.phase, message = next.message, "patch phase changed");
        if next.phase == PatchPhase::Applied {
            // Counted on the recorded transition, once per patch.
            super::metrics::metrics().record_applied_ops(&patch);
        }
        let warning = matches!(next.phase, PatchPhase::Conflicted | PatchPhase::Failed);
        event(
            client,
            patch.as_ref(),
            warning,
            &format!("{:?}", next.phase),
            next.message,
        )
        .await;
    }
    Ok(match (next.requeue, next.phase) {
        (Some(d), _) => Action::requeue(d),
        (None, p) if is_final(p) => Action::await_change(),
        // The owned Job's changes wake an applying patch; a slow requeue is
        // only a safety net.
        (None, _) => Action::requeue(Duration::from_secs(300)),
    })
}

/// Approves `patch` as the controller itself when its schedule says Auto and
/// allows every op kind. Returns whether it approved.
async fn maybe_auto_approve(ctx: &Context, ns: &str, patch: &MemoryPatch) -> Result<bool, Error> {
    let Some(schedule_name) = patch.labels().get(SCHEDULE_LABEL) else {
        return Ok(false);
    };
    let Some(schedule) = Api::<DreamSchedule>::namespaced(ctx.client.clone(), ns)
        .get_opt(schedule_name)
        .await?
    else {
        return Ok(false);
    };
    if !auto_approvable(&schedule, patch) {
        return Ok(false);
    }
    let me = own_username(ctx).await?;
    let body = serde_json::json!({
        "apiVersion": "reverie.dev/v1alpha1",
        "kind": "MemoryPatch",
        "metadata": {"annotations": BTreeMap::from([
            (APPROVAL_ANNOTATION, "approved".to_string()),
            (APPROVED_BY_ANNOTATION, me.clone()),
            (crate::api::APPROVAL_REASON_ANNOTATION, format!("auto-approved by DreamSchedule {schedule_name}: every op kind is in autoApprove")),
        ])},
    });
    Api::<MemoryPatch>::namespaced(ctx.client.clone(), ns)
        .patch(
            &patch.name_any(),
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(&body),
        )
        .await?;
    tracing::info!(
        namespace = ns,
        name = patch.name_any(),
        by = me,
        "patch auto-approved"
    );
    event(
        &ctx.client,
        patch,
        false,
        "AutoApproved",
        format!("approved as {me} by the Auto policy of DreamSchedule {schedule_name}"),
    )
    .await;
    Ok(true)
}

fn error_policy(patch: Arc<MemoryPatch>, error: &Error, _ctx: Arc<Context>) -> Action {
    super::retry_after_error(patch.as_ref(), error, super::DREAM_LOOP_RETRY)
}

/// Runs the MemoryPatch controller until the stream ends.
pub async fn run(ctx: Arc<Context>) {
    let patches = watched_api::<MemoryPatch>(&ctx);
    let jobs = watched_api::<PartialObjectMeta<Job>>(&ctx);
    // Trimmed streams (see `trim`): owned Jobs as metadata only.
    let (reader, patches) = trim::reflected(patches, watcher::Config::default());
    super::metrics::metrics().watch_patches(reader.clone());
    let jobs = trim::metadata_trigger(
        jobs,
        watcher::Config::default().labels(super::jobs::PATCH_LABEL),
    );
    Controller::for_stream(patches, reader)
        .with_config(trim::controller_config())
        .owns_stream(jobs)
        .run(
            super::metrics::observe("memorypatch", reconcile),
            error_policy,
            ctx,
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Approval, DreamScheduleSpec};

    fn patch(name: &str, ops: &[&str], created: &str, ann: Option<&str>) -> MemoryPatch {
        let ops: Vec<serde_json::Value> = ops
            .iter()
            .map(|op| serde_json::json!({"op": op, "path": "a.md", "id": "0123456789ab", "content": "x", "to": "b.md", "ids": ["0123456789ab", "0123456789ac"], "reason": "duplicate"}))
            .collect();
        let mut p: MemoryPatch = serde_json::from_value(serde_json::json!({
            "apiVersion": "reverie.dev/v1alpha1", "kind": "MemoryPatch",
            "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created},
            "spec": {"storeRef": {"name": "team"}, "ops": ops}
        }))
        .expect("patch");
        if let Some(a) = ann {
            p.metadata.annotations = Some(BTreeMap::from([(
                APPROVAL_ANNOTATION.to_string(),
                a.to_string(),
            )]));
        }
        p
    }

    fn schedule(mode: ApprovalMode, auto: Vec<AutoApproveOp>) -> DreamSchedule {
        let mut spec: DreamScheduleSpec = serde_json::from_value(serde_json::json!({
            "storeRef": {"name": "team"}, "schedule": "0 3 * * *"
        }))
        .expect("spec");
        spec.approval = Approval {
            mode,
            auto_approve: auto,
        };
        DreamSchedule::new("nightly", spec)
    }

    #[test]
    fn auto_approves_only_listed_op_kinds() {
        let s = schedule(
            ApprovalMode::Auto,
            vec![AutoApproveOp::Add, AutoApproveOp::Merge],
        );
        let t = "2026-11-30T10:00:00Z";
        assert!(auto_approvable(&s, &patch("p", &["add", "merge"], t, None)));
        assert!(!auto_approvable(
            &s,
            &patch("p", &["add", "delete"], t, None)
        ));
        assert!(!auto_approvable(&s, &patch("p", &["move"], t, None)));
        assert!(!auto_approvable(&s, &patch("p", &[], t, None)));
        let manual = schedule(ApprovalMode::Manual, vec![]);
        assert!(!auto_approvable(&manual, &patch("p", &["add"], t, None)));
    }

    #[test]
    fn approved_patches_go_in_creation_order() {
        let a = patch(
            "b-first",
            &["add"],
            "2026-11-30T10:00:00Z",
            Some("approved"),
        );
        let b = patch(
            "a-second",
            &["add"],
            "2026-11-30T10:00:05Z",
            Some("approved"),
        );
        let c = patch("pending", &["add"], "2026-11-30T09:00:00Z", None);
        let d = patch(
            "rejected",
            &["add"],
            "2026-11-30T09:00:00Z",
            Some("rejected"),
        );
        let all = vec![b.clone(), c, d, a.clone()];
        assert_eq!(next_in_line(&all).as_deref(), Some("b-first"));
        let mut done = a.clone();
        done.status = Some(MemoryPatchStatus {
            phase: Some(PatchPhase::Applied),
            ..Default::default()
        });
        assert_eq!(
            next_in_line(&[b.clone(), done]).as_deref(),
            Some("a-second")
        );
        let mut running = b.clone();
        running.status = Some(MemoryPatchStatus {
            phase: Some(PatchPhase::Applying),
            ..Default::default()
        });
        assert_eq!(next_in_line(&[a, running]).as_deref(), Some("a-second"));
    }

    #[test]
    fn job_results_map_to_phases() {
        let ok = Termination {
            exit_code: 0,
            message:
                r#"{"revision":4,"entries":10,"bytes":99,"filesChanged":[],"alreadyApplied":false}"#
                    .to_string(),
        };
        assert_eq!(
            outcome(JobState::Succeeded, Some(&ok)).0,
            PatchPhase::Applied
        );
        assert_eq!(outcome(JobState::Succeeded, Some(&ok)).1, Some(4));
        let conflict = Termination {
            exit_code: 3,
            message:
                r#"{"error":"op 2 (delete notes.md#3f2a9c01b7de): entry is gone","exitCode":3}"#
                    .to_string(),
        };
        let (phase, _, msg) = outcome(JobState::Failed, Some(&conflict));
        assert_eq!(phase, PatchPhase::Conflicted);
        assert!(msg.contains("op 2"), "{msg}");
        let crash = Termination {
            exit_code: 1,
            message: "thread main panicked".to_string(),
        };
        let (phase, _, msg) = outcome(JobState::Failed, Some(&crash));
        assert_eq!(phase, PatchPhase::Failed);
        assert!(msg.contains("panicked"));
        assert_eq!(outcome(JobState::Failed, None).0, PatchPhase::Failed);
        assert_eq!(
            decision(&patch("p", &[], "2026-11-30T10:00:00Z", Some("maybe"))),
            Decision::None
        );
    }
}
