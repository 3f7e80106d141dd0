//! Pure builders of the pods the operator starts (the dream CronJob, dream-now
//! Jobs, apply Jobs) and readers of their results. Nothing here talks to the
//! API: every function maps objects to objects, so all of it is unit-tested.
//!
//! The result contract: the in-pod command writes one JSON object to
//! `/dev/termination-log` (see [`DreamResult`], [`ApplyResult`]); the
//! controller reads it from the pod's terminated container state.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, EnvVarSource, PersistentVolumeClaimVolumeSource, Pod,
    PodSecurityContext, PodSpec, PodTemplateSpec, SeccompProfile, SecretKeySelector,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Error;
use crate::api::{DreamSchedule, MemoryPatch, MemoryStore, STORE_LABEL};

/// Where the store's claim is mounted in every pod.
pub const STORE_MOUNT: &str = "/store";
/// Where the in-pod command writes its JSON result.
pub const TERMINATION_LOG: &str = "/dev/termination-log";
/// Label naming the DreamSchedule of a dream Job or a MemoryPatch.
pub const SCHEDULE_LABEL: &str = "reverie.dev/schedule";
/// Label naming the MemoryPatch an apply Job applies.
pub const PATCH_LABEL: &str = "reverie.dev/patch";
/// Label saying what a Job does: `dream` or `apply`.
pub const ROLE_LABEL: &str = "reverie.dev/role";
/// Annotation holding the hash of the desired state of a child, so the
/// controller writes a child only when what it wants changed.
pub const SPEC_HASH_ANNOTATION: &str = "reverie.dev/spec-hash";
/// Environment variable carrying the LLM API key (from a Secret, never in args).
pub const LLM_API_KEY_ENV: &str = "REVERIE_LLM_API_KEY";
/// `app.kubernetes.io/managed-by` value of every child.
pub const MANAGED_BY: &str = "reverie";

/// The longest object name that is also a valid label value (Job names
/// become the `job-name` label of their pods).
const MAX_NAME: usize = 63;
/// The longest CronJob name (the Jobs it creates append 11 characters).
const MAX_CRONJOB_NAME: usize = 52;

/// `base-suffix`, shortened with a hash of the full name when it would be too
/// long, so the result stays deterministic and unique.
pub fn bounded_name(base: &str, suffix: &str, max: usize) -> String {
    let full = format!("{base}-{suffix}");
    if full.len() <= max {
        return full;
    }
    let hash = short_hash(&full, 8);
    let keep = max.saturating_sub(suffix.len() + hash.len() + 2);
    let head: String = base.chars().take(keep).collect();
    let head = head.trim_end_matches(['-', '.']);
    format!("{head}-{hash}-{suffix}")
}

/// The first `n` hex digits of the SHA-256 of `s`.
pub fn short_hash(s: &str, n: usize) -> String {
    let digest = hex::encode(Sha256::digest(s.as_bytes()));
    digest[..n.min(digest.len())].to_string()
}

/// The CronJob of a DreamSchedule.
pub fn cron_job_name(schedule: &str) -> String {
    bounded_name(schedule, "dream", MAX_CRONJOB_NAME)
}

/// The Job a `reverie.dev/dream-now` token starts: the same token always
/// gives the same name, so a restarted controller never starts it twice.
pub fn dream_now_job_name(schedule: &str, token: &str) -> String {
    bounded_name(schedule, &format!("now-{}", short_hash(token, 8)), MAX_NAME)
}

/// The Job that applies a MemoryPatch.
pub fn apply_job_name(patch: &str) -> String {
    bounded_name(patch, "apply", MAX_NAME)
}

/// The claim of a store: `storage.existingClaim`, or `<store>-memory`.
pub fn claim_name(store: &MemoryStore) -> String {
    store
        .spec
        .storage
        .existing_claim
        .clone()
        .unwrap_or_else(|| bounded_name(&store.name_any(), "memory", 253))
}

/// The labels every child of a store carries.
pub fn store_labels(store: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_string(),
            MANAGED_BY.to_string(),
        ),
        (STORE_LABEL.to_string(), store.to_string()),
    ])
}

/// The controller owner reference to `obj`.
pub fn owner_ref<K: Resource<DynamicType = ()>>(obj: &K) -> Result<OwnerReference, Error> {
    obj.controller_owner_ref(&()).ok_or_else(|| {
        Error::Invalid(format!(
            "{} has no uid yet; cannot own children",
            obj.meta().name.clone().unwrap_or_default()
        ))
    })
}

/// Sets [`SPEC_HASH_ANNOTATION`] on `obj` to the hash of its JSON form
/// (without the annotation itself).
pub fn stamp_hash<K: Resource + Serialize>(mut obj: K) -> Result<K, Error> {
    obj.meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .remove(SPEC_HASH_ANNOTATION);
    let json = serde_json::to_string(&obj).map_err(|source| Error::Serialize {
        what: "child object".to_string(),
        source,
    })?;
    let hash = short_hash(&json, 16);
    obj.meta_mut()
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(SPEC_HASH_ANNOTATION.to_string(), hash);
    Ok(obj)
}

/// Whether `existing` (if any) already carries the hash of `desired`.
pub fn up_to_date<K: Resource>(existing: Option<&K>, desired: &K) -> bool {
    let hash = |o: &K| {
        o.meta()
            .annotations
            .as_ref()
            .and_then(|a| a.get(SPEC_HASH_ANNOTATION).cloned())
    };
    match existing {
        Some(e) => hash(e).is_some() && hash(e) == hash(desired),
        None => false,
    }
}

/// The restricted Pod Security level for the pod.
pub fn restricted_pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(65532),
        run_as_group: Some(65532),
        fs_group: Some(65532),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The restricted Pod Security level for a container.
pub fn restricted_container_security() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            ..Default::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A one-container pod that mounts `claim` at [`STORE_MOUNT`] and runs
/// `reverie args…` under the restricted profile.
pub fn store_pod(
    image: &str,
    service_account: &str,
    claim: &str,
    container: &str,
    args: Vec<String>,
    env: Vec<EnvVar>,
) -> PodSpec {
    PodSpec {
        service_account_name: Some(service_account.to_string()),
        restart_policy: Some("Never".to_string()),
        security_context: Some(restricted_pod_security()),
        volumes: Some(vec![Volume {
            name: "store".to_string(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.to_string(),
                read_only: None,
            }),
            ..Default::default()
        }]),
        containers: vec![Container {
            name: container.to_string(),
            image: Some(image.to_string()),
            command: Some(vec!["reverie".to_string()]),
            args: Some(args),
            env: (!env.is_empty()).then_some(env),
            volume_mounts: Some(vec![VolumeMount {
                name: "store".to_string(),
                mount_path: STORE_MOUNT.to_string(),
                ..Default::default()
            }]),
            security_context: Some(restricted_container_security()),
            termination_message_path: Some(TERMINATION_LOG.to_string()),
            // A crash before the JSON is written still leaves a reason.
            termination_message_policy: Some("FallbackToLogsOnError".to_string()),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The arguments of `reverie dream` for a schedule over a store.
pub fn dream_args(schedule: &DreamSchedule, store: &MemoryStore, namespace: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "dream",
        "--store",
        STORE_MOUNT,
        "--publish",
        "--namespace",
        namespace,
        "--store-name",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(store.name_any());
    args.push("--schedule".to_string());
    args.push(schedule.name_any());
    // `LastDream` is resolved in the pod from the store's status (the
    // CronJob's arguments cannot change with every dream).
    if schedule.spec.sessions.since != "LastDream" {
        args.push("--since".to_string());
        args.push(schedule.spec.sessions.since.clone());
    }
    let instructions: Vec<&str> = [
        store.spec.instructions.as_deref(),
        schedule.spec.instructions.as_deref(),
    ]
    .into_iter()
    .flatten()
    .map(str::trim)
    .filter(|s| !s.is_empty())
    .collect();
    if !instructions.is_empty() {
        args.push("--instructions".to_string());
        args.push(instructions.join("\n\n"));
    }
    if let Some(keep) = store.spec.retention.as_ref().and_then(|r| r.sessions) {
        args.push("--keep-sessions".to_string());
        args.push(keep.to_string());
    }
    if let Some(limits) = &store.spec.limits {
        if let Some(b) = limits.max_bytes {
            args.push("--max-bytes".to_string());
            args.push(b.to_string());
        }
        if let Some(b) = limits.max_entry_bytes {
            args.push("--max-entry-bytes".to_string());
            args.push(b.to_string());
        }
    }
    if let Some(llm) = &schedule.spec.llm {
        let provider = match llm.provider {
            crate::api::Provider::Anthropic => "anthropic",
            crate::api::Provider::Openai => "openai",
        };
        args.extend([
            "--llm-provider".to_string(),
            provider.to_string(),
            "--llm-model".to_string(),
            llm.name.clone(),
            "--llm-max-tokens".to_string(),
            llm.max_tokens.to_string(),
            "--llm-api-key-env".to_string(),
            LLM_API_KEY_ENV.to_string(),
        ]);
        if let Some(url) = &llm.base_url {
            args.push("--llm-base-url".to_string());
            args.push(url.clone());
        }
    }
    args.push("--termination-log".to_string());
    args.push(TERMINATION_LOG.to_string());
    args
}

/// The environment of a dream pod: the LLM API key from its Secret.
pub fn dream_env(schedule: &DreamSchedule) -> Vec<EnvVar> {
    schedule
        .spec
        .llm
        .iter()
        .map(|llm| EnvVar {
            name: LLM_API_KEY_ENV.to_string(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: llm.api_key_secret_ref.name.clone(),
                    key: llm.api_key_secret_ref.key.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect()
}

/// The labels and pod of a dream of `schedule` over `store` in `ns`.
fn dream_pod(
    schedule: &DreamSchedule,
    store: &MemoryStore,
    ns: &str,
    image: &str,
    service_account: &str,
) -> (BTreeMap<String, String>, PodSpec) {
    let mut labels = store_labels(&store.name_any());
    labels.insert(SCHEDULE_LABEL.to_string(), schedule.name_any());
    labels.insert(ROLE_LABEL.to_string(), "dream".to_string());
    let pod = store_pod(
        image,
        service_account,
        &claim_name(store),
        "dream",
        dream_args(schedule, store, ns),
        dream_env(schedule),
    );
    (labels, pod)
}

/// The CronJob that runs a schedule's dreams, owned by the schedule.
pub fn dream_cron_job(
    schedule: &DreamSchedule,
    store: &MemoryStore,
    image: &str,
    service_account: &str,
) -> Result<CronJob, Error> {
    let ns = schedule.namespace().unwrap_or_default();
    let (labels, pod) = dream_pod(schedule, store, &ns, image, service_account);
    let spec = &schedule.spec;
    let cron = CronJob {
        metadata: ObjectMeta {
            name: Some(cron_job_name(&schedule.name_any())),
            namespace: Some(ns),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner_ref(schedule)?]),
            ..Default::default()
        },
        spec: CronJobSpec {
            schedule: spec.schedule.clone(),
            time_zone: spec.time_zone.clone(),
            suspend: Some(spec.suspend),
            concurrency_policy: Some(spec.concurrency_policy.as_str().to_string()),
            successful_jobs_history_limit: Some(spec.successful_jobs_history_limit as i32),
            failed_jobs_history_limit: Some(spec.failed_jobs_history_limit as i32),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..Default::default()
                }),
                // A dream is cheap to redo at the next tick; retries would
                // only repeat a deterministic failure.
                spec: Some(run_once(labels, pod)),
            },
            ..Default::default()
        },
        status: None,
    };
    stamp_hash(cron)
}

/// A Job made from a CronJob's `jobTemplate` (what `kubectl create job
/// --from=cronjob/…` does), named `name` and owned by the CronJob.
pub fn job_from_cron(cron: &CronJob, name: &str, token: &str) -> Result<Job, Error> {
    let template = cron.spec.job_template.clone();
    let mut meta = template.metadata.unwrap_or_default();
    meta.name = Some(name.to_string());
    meta.namespace = cron.namespace();
    meta.owner_references = Some(vec![owner_ref(cron)?]);
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert("reverie.dev/dream-now".to_string(), token.to_string());
    Ok(Job {
        metadata: meta,
        spec: template.spec,
        status: None,
    })
}

/// Label naming the run of a multi-store schedule a dream Job belongs to:
/// `c<unix seconds of the cycle's tick>` or `now-<8 hex of the dream-now token>`.
pub const RUN_LABEL: &str = "reverie.dev/run";
/// Annotation with the slot (RFC 3339, milliseconds) a fleet dream was placed at.
pub const SLOT_ANNOTATION: &str = "reverie.dev/slot";

/// The run key of the cycle that starts at `tick` (unix seconds).
pub fn cycle_run_key(tick: i64) -> String {
    format!("c{tick}")
}

/// The run key of a dream-now token on a multi-store schedule.
pub fn dream_now_run_key(token: &str) -> String {
    format!("now-{}", short_hash(token, 8))
}

/// The Job of one store in one run of a multi-store schedule:
/// `<store>-dream-<8 hex of schedule/run>`, the same on every reconcile and
/// every replica, so a store dreams at most once per run.
pub fn fleet_job_name(schedule: &str, store: &str, run: &str) -> String {
    bounded_name(
        store,
        &format!("dream-{}", short_hash(&format!("{schedule}/{run}"), 8)),
        MAX_NAME,
    )
}

/// The dream Job of `store` for run `run` of the multi-store `schedule`:
/// the pod of a CronJob dream, in the store's namespace (where its claim
/// is), owned by the schedule.
pub fn fleet_dream_job(
    schedule: &DreamSchedule,
    store: &MemoryStore,
    image: &str,
    service_account: &str,
    run: &str,
    slot: &str,
) -> Result<Job, Error> {
    let ns = store.namespace().unwrap_or_default();
    let store_name = store.name_any();
    let (mut labels, pod) = dream_pod(schedule, store, &ns, image, service_account);
    labels.insert(RUN_LABEL.to_string(), run.to_string());
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(fleet_job_name(&schedule.name_any(), &store_name, run)),
            namespace: Some(ns),
            labels: Some(labels.clone()),
            annotations: Some(BTreeMap::from([(
                SLOT_ANNOTATION.to_string(),
                slot.to_string(),
            )])),
            owner_references: Some(vec![owner_ref(schedule)?]),
            ..Default::default()
        },
        // As for CronJob dreams: the next cycle redoes a failed dream.
        spec: Some(run_once(labels, pod)),
        status: None,
    })
}

/// A Job spec that runs `pod` once (`backoffLimit: 0`), its pods labelled
/// `labels`.
fn run_once(labels: BTreeMap<String, String>, pod: PodSpec) -> JobSpec {
    JobSpec {
        backoff_limit: Some(0),
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels),
                ..Default::default()
            }),
            spec: Some(pod),
        },
        ..Default::default()
    }
}

/// The Job that applies `patch` to the store's claim, owned by the patch.
pub fn apply_job(
    patch: &MemoryPatch,
    claim: &str,
    image: &str,
    service_account: &str,
    keep_revisions: Option<u32>,
) -> Result<Job, Error> {
    let ns = patch.namespace().unwrap_or_default();
    let name = patch.name_any();
    let mut labels = store_labels(&patch.spec.store_ref.name);
    labels.insert(PATCH_LABEL.to_string(), name.clone());
    labels.insert(ROLE_LABEL.to_string(), "apply".to_string());
    let mut args: Vec<String> = [
        "memory",
        "apply",
        "--store",
        STORE_MOUNT,
        "--from-cluster",
        &format!("{ns}/{name}"),
        "--output",
        "json",
        "--termination-log",
        TERMINATION_LOG,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(keep) = keep_revisions {
        args.extend(["--keep-revisions".to_string(), keep.to_string()]);
    }
    let pod = store_pod(image, service_account, claim, "apply", args, Vec::new());
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(apply_job_name(&name)),
            namespace: Some(ns),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner_ref(patch)?]),
            ..Default::default()
        },
        // Exit 3 (conflict) and 2 (invalid) are final; a retry could only
        // repeat them.
        spec: Some(run_once(labels, pod)),
        status: None,
    })
}

/// Where a Job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
}

/// The state of a Job from its conditions (`Complete`/`Failed`).
pub fn job_state(job: &Job) -> JobState {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .cloned()
        .unwrap_or_default();
    let is = |t: &str| {
        conditions
            .iter()
            .any(|c| c.type_ == t && c.status == "True")
    };
    if is("Complete") || is("SuccessCriteriaMet") {
        JobState::Succeeded
    } else if is("Failed") || is("FailureTarget") {
        JobState::Failed
    } else {
        JobState::Running
    }
}

/// What a finished container said: its exit code and termination message.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Termination {
    pub exit_code: i32,
    pub message: String,
}

/// The termination of the first terminated container of `pod`.
pub fn pod_termination(pod: &Pod) -> Option<Termination> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|s| {
        let t = s.state.as_ref()?.terminated.as_ref()?;
        Some(Termination {
            exit_code: t.exit_code,
            message: t.message.clone().unwrap_or_default(),
        })
    })
}

/// The JSON a dream pod writes to its termination log.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DreamResult {
    /// The MemoryPatches created (none when there was nothing to change).
    #[serde(default)]
    pub patches: Vec<String>,
    /// Ops in all of them.
    #[serde(default)]
    pub ops: u64,
    /// The store's revision the dream read.
    #[serde(default)]
    pub revision: u64,
    #[serde(default)]
    pub entries: u64,
    #[serde(default)]
    pub bytes: u64,
    /// The LLM pass's usage, when it ran.
    #[serde(default)]
    pub llm: Option<super::publish::LlmUsage>,
    /// Sessions the dream read.
    #[serde(default)]
    pub sessions: u64,
}

impl DreamResult {
    /// Tokens (input + output) the LLM pass used; what a schedule's
    /// `budget.tokensPerHour` counts.
    pub fn llm_tokens(&self) -> u64 {
        self.llm
            .as_ref()
            .map_or(0, |u| u.input_tokens + u.output_tokens)
    }
}

/// The JSON an apply pod writes to its termination log: the apply outcome,
/// or an error with the exit code.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResult {
    #[serde(default)]
    pub revision: Option<u64>,
    #[serde(default)]
    pub entries: Option<u64>,
    #[serde(default)]
    pub bytes: Option<u64>,
    #[serde(default)]
    pub already_applied: bool,
    /// Set when the apply failed: what went wrong (names the op on a conflict).
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
}

/// Parses a termination message as `T`; `None` when it is not that JSON
/// (e.g. the log tail of a crash).
pub fn parse_result<T: for<'de> Deserialize<'de>>(message: &str) -> Option<T> {
    serde_json::from_str(message.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        Approval, ConcurrencyPolicy, DreamScheduleSpec, Limits, LocalRef, MemoryPatchSpec,
        MemoryStoreSpec, ModelSpec, Provider, SecretKeyRef, SessionSelection,
    };

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some("ns".to_string()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        }
    }

    fn store() -> MemoryStore {
        let mut s = MemoryStore::new(
            "team",
            MemoryStoreSpec {
                storage: Default::default(),
                instructions: Some("Keep deploy lessons.".to_string()),
                limits: Some(Limits {
                    max_bytes: Some(10_000),
                    max_entry_bytes: Some(500),
                }),
                retention: None,
                deletion_policy: Default::default(),
            },
        );
        s.metadata = meta("team");
        s
    }

    fn schedule() -> DreamSchedule {
        let mut d = DreamSchedule::new(
            "nightly",
            DreamScheduleSpec {
                store_ref: Some(LocalRef::new("team")),
                store_selector: None,
                window: None,
                skip_idle: true,
                budget: None,
                schedule: "0 3 * * *".to_string(),
                time_zone: Some("Europe/Berlin".to_string()),
                suspend: false,
                sessions: SessionSelection {
                    since: "24h".to_string(),
                    ..Default::default()
                },
                instructions: Some("Prefer short entries.".to_string()),
                approval: Approval::default(),
                llm: None,
                concurrency_policy: ConcurrencyPolicy::Forbid,
                successful_jobs_history_limit: 3,
                failed_jobs_history_limit: 1,
            },
        );
        d.metadata = meta("nightly");
        d
    }

    #[test]
    fn names_are_deterministic_and_bounded() {
        assert_eq!(cron_job_name("nightly"), "nightly-dream");
        let a = dream_now_job_name("nightly", "2026-11-30T10:00:00Z");
        assert_eq!(a, dream_now_job_name("nightly", "2026-11-30T10:00:00Z"));
        assert_ne!(a, dream_now_job_name("nightly", "2026-11-30T10:00:01Z"));
        assert!(a.starts_with("nightly-now-") && a.len() == "nightly-now-".len() + 8);
        let long = "x".repeat(80);
        let n = apply_job_name(&long);
        assert!(n.len() <= 63 && n.ends_with("-apply"), "{n}");
        assert_ne!(n, apply_job_name(&"x".repeat(81)));
        assert!(cron_job_name(&long).len() <= 52);
        assert_eq!(claim_name(&store()), "team-memory");
    }

    #[test]
    fn retention_reaches_the_dream_and_apply_pods() {
        let mut s = store();
        assert!(!dream_args(&schedule(), &s, "ns").contains(&"--keep-sessions".to_string()));
        s.spec.retention = Some(crate::api::memorystore::Retention {
            sessions: Some(50),
            revisions: Some(20),
        });
        let args = dream_args(&schedule(), &s, "ns");
        assert!(args.windows(2).any(|w| w == ["--keep-sessions", "50"]));
    }

    #[test]
    fn existing_claim_is_adopted() {
        let mut s = store();
        s.spec.storage.existing_claim = Some("old-claim".to_string());
        assert_eq!(claim_name(&s), "old-claim");
    }

    #[test]
    fn cron_job_runs_the_dream_with_the_schedule_settings() {
        let cron = dream_cron_job(&schedule(), &store(), "img:1", "reverie-worker").expect("cron");
        assert_eq!(cron.metadata.name.as_deref(), Some("nightly-dream"));
        let owner = &cron.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(owner.kind, "DreamSchedule");
        assert_eq!(owner.controller, Some(true));
        let spec = &cron.spec;
        assert_eq!(spec.schedule, "0 3 * * *");
        assert_eq!(spec.time_zone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
        assert_eq!(spec.suspend, Some(false));
        assert_eq!(spec.successful_jobs_history_limit, Some(3));
        let pod = spec
            .job_template
            .spec
            .as_ref()
            .and_then(|j| j.template.spec.as_ref())
            .expect("pod");
        assert_eq!(pod.service_account_name.as_deref(), Some("reverie-worker"));
        let c = &pod.containers[0];
        let args = c.args.clone().expect("args");
        let expected: Vec<String> = [
            "dream",
            "--store",
            "/store",
            "--publish",
            "--namespace",
            "ns",
            "--store-name",
            "team",
            "--schedule",
            "nightly",
            "--since",
            "24h",
            "--instructions",
            "Keep deploy lessons.\n\nPrefer short entries.",
            "--max-bytes",
            "10000",
            "--max-entry-bytes",
            "500",
            "--termination-log",
            "/dev/termination-log",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(args, expected);
        assert_eq!(
            pod.volumes.as_ref().expect("volumes")[0]
                .persistent_volume_claim
                .as_ref()
                .map(|p| p.claim_name.as_str()),
            Some("team-memory")
        );
        let sc = c.security_context.as_ref().expect("security");
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(
            sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_string()])
        );
        assert!(cron
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(SPEC_HASH_ANNOTATION)));
    }

    #[test]
    fn llm_key_comes_from_the_secret_never_the_args() {
        let mut s = schedule();
        s.spec.sessions.since = "LastDream".to_string();
        s.spec.llm = Some(ModelSpec {
            provider: Provider::Openai,
            name: "gpt-x".to_string(),
            base_url: Some("http://llm:8080".to_string()),
            api_key_secret_ref: SecretKeyRef {
                name: "my-llm-secret".to_string(),
                key: "k9z".to_string(),
            },
            max_tokens: 1000,
        });
        let cron = dream_cron_job(&s, &store(), "img", "sa").expect("cron");
        let pod = cron
            .spec
            .job_template
            .spec
            .and_then(|j| j.template.spec)
            .expect("pod");
        let c = &pod.containers[0];
        let args = c.args.clone().expect("args");
        assert!(!args.contains(&"--since".to_string()));
        assert!(args.windows(2).any(|w| w == ["--llm-model", "gpt-x"]));
        assert!(args
            .windows(2)
            .any(|w| w == ["--llm-base-url", "http://llm:8080"]));
        assert!(!args
            .iter()
            .any(|a| a.contains("my-llm-secret") || a.contains("k9z")));
        let env = c.env.as_ref().expect("env");
        let key = env[0]
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("secret ref");
        assert_eq!(
            (key.name.as_str(), key.key.as_str()),
            ("my-llm-secret", "k9z")
        );
    }

    #[test]
    fn hash_changes_only_with_the_content() {
        let a = dream_cron_job(&schedule(), &store(), "img", "sa").expect("a");
        let b = dream_cron_job(&schedule(), &store(), "img", "sa").expect("b");
        assert!(up_to_date(Some(&a), &b));
        assert!(!up_to_date(None, &b));
        let mut s = schedule();
        s.spec.suspend = true;
        let c = dream_cron_job(&s, &store(), "img", "sa").expect("c");
        assert!(!up_to_date(Some(&a), &c));
    }

    #[test]
    fn dream_now_job_copies_the_template() {
        let mut cron = dream_cron_job(&schedule(), &store(), "img", "sa").expect("cron");
        cron.metadata.uid = Some("cron-uid".to_string());
        let job = job_from_cron(&cron, "nightly-now-abcd1234", "tok").expect("job");
        assert_eq!(job.metadata.name.as_deref(), Some("nightly-now-abcd1234"));
        assert_eq!(
            job.metadata.owner_references.as_ref().expect("owner")[0].kind,
            "CronJob"
        );
        assert_eq!(job.spec, cron.spec.job_template.spec);
    }

    #[test]
    fn fleet_job_dreams_one_store_for_one_run() {
        let mut s = schedule();
        s.spec.store_ref = None;
        let job = fleet_dream_job(&s, &store(), "img", "sa", "c1764558000", "t").expect("job");
        let name = job.metadata.name.clone().expect("name");
        assert!(name.starts_with("team-dream-") && name.len() == "team-dream-".len() + 8);
        assert_eq!(name, fleet_job_name("nightly", "team", "c1764558000"));
        assert_ne!(name, fleet_job_name("nightly", "team", "c1764644400"));
        assert_ne!(name, fleet_job_name("other", "team", "c1764558000"));
        let labels = job.metadata.labels.clone().expect("labels");
        assert_eq!(
            labels.get(RUN_LABEL).map(String::as_str),
            Some("c1764558000")
        );
        assert_eq!(
            labels.get(SCHEDULE_LABEL).map(String::as_str),
            Some("nightly")
        );
        assert_eq!(labels.get(ROLE_LABEL).map(String::as_str), Some("dream"));
        let owner = &job.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(owner.kind, "DreamSchedule");
        let spec = job.spec.expect("spec");
        assert_eq!(spec.backoff_limit, Some(0));
        let pod_labels = spec
            .template
            .metadata
            .and_then(|m| m.labels)
            .expect("pod labels");
        assert_eq!(pod_labels.get(RUN_LABEL), labels.get(RUN_LABEL));
        let args = spec.template.spec.expect("pod").containers[0]
            .args
            .clone()
            .expect("args");
        assert_eq!(args, dream_args(&s, &store(), "ns"));
        assert!(fleet_job_name(&"s".repeat(70), &"x".repeat(70), "c1").len() <= 63);
        assert_eq!(dream_now_run_key("tok").len(), "now-".len() + 8);
        assert_eq!(cycle_run_key(60), "c60");
    }

    #[test]
    fn apply_job_reads_the_patch_from_the_cluster() {
        let mut p = MemoryPatch::new(
            "team-20261130-abcd",
            MemoryPatchSpec {
                store_ref: LocalRef::new("team"),
                base_revision: 0,
                summary: String::new(),
                ops: Vec::new(),
            },
        );
        p.metadata = meta("team-20261130-abcd");
        let job = apply_job(&p, "team-memory", "img", "sa", Some(20)).expect("job");
        assert_eq!(
            job.metadata.name.as_deref(),
            Some("team-20261130-abcd-apply")
        );
        let spec = job.spec.expect("spec");
        assert_eq!(spec.backoff_limit, Some(0));
        let args = spec.template.spec.expect("pod").containers[0]
            .args
            .clone()
            .expect("args");
        assert!(args
            .windows(2)
            .any(|w| w == ["--from-cluster", "ns/team-20261130-abcd"]));
        assert!(args.windows(2).any(|w| w == ["--output", "json"]));
        assert!(args.windows(2).any(|w| w == ["--keep-revisions", "20"]));
    }

    #[test]
    fn results_parse_and_garbage_does_not() {
        let d: DreamResult =
            parse_result(r#"{"patches":["a","b"],"ops":7,"revision":2,"entries":30,"bytes":900}"#)
                .expect("dream");
        assert_eq!(d.patches, vec!["a", "b"]);
        assert_eq!(d.ops, 7);
        let a: ApplyResult = parse_result(
            r#"{"revision":3,"entries":29,"bytes":800,"filesChanged":["x.md"],"alreadyApplied":false}"#,
        )
        .expect("apply");
        assert_eq!(a.revision, Some(3));
        assert!(parse_result::<DreamResult>("panicked at main.rs").is_none());
    }
}
