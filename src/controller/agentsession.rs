//! The `AgentSession` controller: runs one Job `<session>-run` of
//! `reverie agent --session NS/NAME` and reports its phase, result, usage,
//! children and transcript from the Job and the pod's termination message.
//!
//! Children (sessions whose `parentRef` is a session) get their Jobs only
//! while fewer than the team's `maxParallel` siblings run; the check and the
//! create happen under one lock so two reconciles cannot both take the
//! last slot.

use super::agent::{
    apply_status, check_agent, now, publish, shared_error_policy, watched_api, STALLED_RECHECK,
};
use super::agentteam::workspace_claim;
use super::status::{conditions, Health};
use super::writes::apply_if_changed;
use super::{trim, Context, Error};
use crate::api::{
    Access, Agent, AgentSession, AgentSessionStatus, AgentTeam, ChildSession, MemoryStore,
    SessionPhase,
};
use crate::runtime::plan::{
    self, Outcome, Termination, API_KEY_ENV, PARENT_LABEL, SESSION_LABEL, TERMINATION_LOG,
    WORKSPACE,
};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, EnvVarSource, PersistentVolumeClaimVolumeSource, Pod,
    PodSecurityContext, PodSpec, PodTemplateSpec, SeccompProfile, SecretKeySelector,
    SecurityContext, ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The ServiceAccount (and Role, RoleBinding) agent pods run as.
pub const AGENT_SERVICE_ACCOUNT: &str = "reverie-agent";
/// How often a session waiting for a parallel slot looks again.
const SLOT_RECHECK: Duration = Duration::from_secs(2);
/// The uid agent containers run as (restricted pod security).
const AGENT_UID: i64 = 65532;

/// The name of a session's Job.
pub fn job_name(session: &str) -> String {
    format!("{session}-run")
}

/// A memory store as mounted into a pod: the Agent's mount and the claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreVolume {
    pub store: String,
    pub claim: String,
    pub path: String,
    pub read_only: bool,
}

/// The claim of a MemoryStore: `existingClaim`, else `<store>-memory`.
pub fn store_claim(store: &MemoryStore) -> String {
    store
        .spec
        .storage
        .existing_claim
        .clone()
        .unwrap_or_else(|| format!("{}-memory", store.name_any()))
}

fn labels(session: &AgentSession) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "reverie".to_string()),
        (
            "app.kubernetes.io/component".to_string(),
            "agent".to_string(),
        ),
        (SESSION_LABEL.to_string(), session.name_any()),
    ]);
    if let Some(p) = &session.spec.parent_ref {
        l.insert(PARENT_LABEL.to_string(), p.name.clone());
    }
    l
}

/// The Job that runs `session` as `agent`. `team` is set for a team session
/// (lead or child): then the workspace claim is mounted at `/workspace`.
pub fn build_job(
    session: &AgentSession,
    agent: &Agent,
    team: Option<&str>,
    stores: &[StoreVolume],
    image: &str,
) -> Job {
    let name = session.name_any();
    let ns = session.namespace().unwrap_or_default();
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    if let Some(team) = team {
        volumes.push(Volume {
            name: "workspace".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: workspace_claim(team),
                read_only: None,
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "workspace".into(),
            mount_path: WORKSPACE.into(),
            ..Default::default()
        });
    }
    for (i, s) in stores.iter().enumerate() {
        let vol = format!("memory-{i}");
        volumes.push(Volume {
            name: vol.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: s.claim.clone(),
                read_only: s.read_only.then_some(true),
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: vol,
            mount_path: s.path.clone(),
            read_only: s.read_only.then_some(true),
            ..Default::default()
        });
    }
    let key = &agent.spec.model.api_key_secret_ref;
    let container = Container {
        name: "agent".into(),
        image: Some(
            agent
                .spec
                .image
                .clone()
                .unwrap_or_else(|| image.to_string()),
        ),
        command: Some(vec!["reverie".into()]),
        args: Some(vec![
            "agent".into(),
            "--session".into(),
            format!("{ns}/{name}"),
        ]),
        env: Some(vec![
            EnvVar {
                name: API_KEY_ENV.into(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: key.name.clone(),
                        key: key.key.clone(),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            EnvVar {
                name: "REVERIE_LOG".into(),
                value: Some("info".into()),
                ..Default::default()
            },
        ]),
        volume_mounts: Some(mounts),
        resources: agent.spec.resources.clone(),
        termination_message_path: Some(TERMINATION_LOG.into()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let labels = labels(session);
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&name)),
            namespace: Some(ns.clone()),
            labels: Some(labels.clone()),
            owner_references: session.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(i64::from(session.spec.timeout_seconds)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: Some(AGENT_SERVICE_ACCOUNT.into()),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(AGENT_UID),
                        run_as_group: Some(AGENT_UID),
                        fs_group: Some(AGENT_UID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// The Role agent pods get: the lead creates and watches child sessions and
/// reads Agents and teams.
pub fn build_agent_role(ns: &str) -> Role {
    let rule = |resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(vec!["reverie.dev".into()]),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    Role {
        metadata: ObjectMeta {
            name: Some(AGENT_SERVICE_ACCOUNT.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        rules: Some(vec![
            rule(&["agentsessions"], &["create", "get", "list", "watch"]),
            rule(&["agents", "agentteams"], &["get", "list", "watch"]),
        ]),
    }
}

/// Makes sure the agent ServiceAccount, Role and RoleBinding exist in `ns`.
/// Each is applied only when the live one differs, so starting many
/// sessions in a namespace writes them once, not once per session.
async fn ensure_agent_rbac(client: &kube::Client, ns: &str) -> Result<(), Error> {
    let meta = ObjectMeta {
        name: Some(AGENT_SERVICE_ACCOUNT.into()),
        namespace: Some(ns.into()),
        ..Default::default()
    };
    let sa = ServiceAccount {
        metadata: meta.clone(),
        ..Default::default()
    };
    let role = build_agent_role(ns);
    let binding = RoleBinding {
        metadata: meta,
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: AGENT_SERVICE_ACCOUNT.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: AGENT_SERVICE_ACCOUNT.into(),
            namespace: Some(ns.into()),
            ..Default::default()
        }]),
    };
    let wrote = apply_if_changed(&Api::namespaced(client.clone(), ns), sa).await?
        | apply_if_changed(&Api::namespaced(client.clone(), ns), role).await?
        | apply_if_changed(&Api::namespaced(client.clone(), ns), binding).await?;
    if wrote {
        tracing::info!(namespace = ns, "agent identity applied");
    }
    Ok(())
}

/// Whether a Job has a true `Complete`/`Failed` condition, and which.
fn job_finished(job: &Job) -> Option<(bool, Option<Time>, String)> {
    let status = job.status.as_ref()?;
    status.conditions.as_ref()?.iter().find_map(|c| {
        if c.status != "True" {
            return None;
        }
        match c.type_.as_str() {
            "Complete" => Some((
                true,
                status
                    .completion_time
                    .clone()
                    .or(c.last_transition_time.clone()),
                String::new(),
            )),
            "Failed" => Some((
                false,
                c.last_transition_time.clone(),
                format!(
                    "{}: {}",
                    c.reason.as_deref().unwrap_or("Failed"),
                    c.message.as_deref().unwrap_or("the Job failed")
                ),
            )),
            _ => None,
        }
    })
}

/// The termination message of the Job's pod, parsed when it is ours.
async fn termination(pods: &Api<Pod>, job: &str) -> Result<Option<Termination>, Error> {
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await?;
    let mut msgs: Vec<(String, String)> = list
        .items
        .iter()
        .filter_map(|p| {
            let st = p.status.as_ref()?.container_statuses.as_ref()?;
            let msg = st
                .iter()
                .find(|c| c.name == "agent")?
                .state
                .as_ref()?
                .terminated
                .as_ref()?
                .message
                .clone()?;
            Some((p.name_any(), msg))
        })
        .collect();
    msgs.sort();
    Ok(msgs
        .into_iter()
        .find_map(|(_, m)| serde_json::from_str::<Termination>(m.trim()).ok()))
}

/// What a session's status says, from its Job (and pod), children aside.
pub fn status_from_job(
    job: Option<&Job>,
    term: Option<&Termination>,
) -> (SessionPhase, Option<Time>, Option<Time>, Health) {
    let Some(job) = job else {
        return (
            SessionPhase::Pending,
            None,
            None,
            Health::reconciling("Starting", "the session's Job is being created"),
        );
    };
    let start = job.status.as_ref().and_then(|s| s.start_time.clone());
    match job_finished(job) {
        // The Job controller sets startTime once it starts the Job's pod.
        None if start.is_none() => (
            SessionPhase::Pending,
            None,
            None,
            Health::reconciling("Starting", "the session's pod is starting"),
        ),
        None => (
            SessionPhase::Running,
            start,
            None,
            Health::reconciling("Running", "the agent is running"),
        ),
        Some((complete, done, job_msg)) => {
            let failed_msg = term.and_then(|t| t.message.clone());
            match (complete, term.map(|t| t.outcome)) {
                (true, Some(Outcome::Succeeded)) | (true, None) => (
                    SessionPhase::Succeeded,
                    start,
                    done,
                    Health::ready("Succeeded", "the session finished"),
                ),
                _ => {
                    let msg = failed_msg.unwrap_or(job_msg);
                    (
                        SessionPhase::Failed,
                        start,
                        done,
                        Health::stalled("Failed", msg),
                    )
                }
            }
        }
    }
}

/// Shared by session reconciles.
pub struct SessionContext {
    pub ctx: Arc<Context>,
    /// Held while counting running siblings and creating a Job.
    slots: tokio::sync::Mutex<()>,
    /// When the agent identity was last found in place, per namespace: many
    /// sessions starting at once check it once, not once each.
    identities: std::sync::Mutex<BTreeMap<String, std::time::Instant>>,
    /// The controller's store of sessions, where children are looked up
    /// (listing them from the API on every reconcile is quadratic).
    sessions: Store<AgentSession>,
}

/// How long a namespace's agent identity is trusted to be in place before
/// it is checked again (someone may delete it).
const IDENTITY_RECHECK: Duration = Duration::from_secs(300);

impl SessionContext {
    fn identities(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, std::time::Instant>> {
        // A poisoned lock only means a reconcile panicked; the map is still valid.
        self.identities
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the agent identity of `ns` should be checked (and applied).
    fn identity_due(&self, ns: &str) -> bool {
        self.identities()
            .get(ns)
            .is_none_or(|t| t.elapsed() >= IDENTITY_RECHECK)
    }

    /// Records that the agent identity of `ns` is in place.
    fn identity_checked(&self, ns: &str) {
        self.identities()
            .insert(ns.to_string(), std::time::Instant::now());
    }
}

async fn reconcile(session: Arc<AgentSession>, sctx: Arc<SessionContext>) -> Result<Action, Error> {
    let ctx = &sctx.ctx;
    let client = &ctx.client;
    let ns = session.namespace().unwrap_or_default();
    let name = session.name_any();
    let sessions: Api<AgentSession> = Api::namespaced(client.clone(), &ns);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let old = session.status.clone().unwrap_or_default();
    let mut status = AgentSessionStatus {
        observed_generation: session.metadata.generation,
        ..old.clone()
    };
    let mut requeue = None;
    let mut provider = None;

    // Children: every session whose `parentRef` is this one (by spec, not by
    // label, so a child created by hand counts too), sorted by name.
    let mut children: Vec<ChildSession> = sctx
        .sessions
        .state()
        .iter()
        .filter(|k| {
            k.namespace().as_deref() == Some(ns.as_str())
                && k.spec.parent_ref.as_ref().is_some_and(|p| p.name == name)
        })
        .map(|k| ChildSession {
            name: k.name_any(),
            member: k.spec.member.clone().unwrap_or_default(),
            phase: k.status.as_ref().and_then(|s| s.phase),
        })
        .collect();
    children.sort_by(|a, b| a.name.cmp(&b.name));
    status.children = children;

    let finished = matches!(
        old.phase,
        Some(SessionPhase::Succeeded) | Some(SessionPhase::Failed)
    );
    let health = if finished {
        // A finished session keeps its outcome; only the children move.
        None
    } else {
        let team = match &session.spec.team_ref {
            Some(t) => {
                Api::<AgentTeam>::namespaced(client.clone(), &ns)
                    .get_opt(&t.name)
                    .await?
            }
            None => None,
        };
        let resolved = plan::session_agent(&session.spec, team.as_ref());
        let agent = match &resolved {
            Ok(a) => {
                Api::<Agent>::namespaced(client.clone(), &ns)
                    .get_opt(a)
                    .await?
            }
            Err(_) => None,
        };
        let job_name = job_name(&name);
        let mut job = jobs.get_opt(&job_name).await?;
        let mut blocked = None;
        if job.is_none() {
            blocked = match (&resolved, &agent) {
                (Err(e), _) => Some(Health::stalled("ReferenceNotFound", e.clone())),
                (Ok(a), None) => Some(Health::stalled(
                    "AgentNotFound",
                    format!("Agent {a} not found"),
                )),
                (Ok(_), Some(agent)) => match check_agent(client, &ns, &agent.spec).await? {
                    Health::Ready { .. } => None,
                    h => Some(h),
                },
            };
        }
        if let (None, None, Some(agent)) = (&blocked, &job, &agent) {
            let mut stores = Vec::new();
            let store_api: Api<MemoryStore> = Api::namespaced(client.clone(), &ns);
            for m in &agent.spec.memory {
                // check_agent found every store just now.
                if let Some(s) = store_api.get_opt(&m.store_ref.name).await? {
                    stores.push(StoreVolume {
                        store: m.store_ref.name.clone(),
                        claim: store_claim(&s),
                        path: plan::mount_path(m),
                        read_only: m.access == Access::ReadOnly,
                    });
                }
            }
            if sctx.identity_due(&ns) {
                ensure_agent_rbac(client, &ns).await?;
                sctx.identity_checked(&ns);
            }
            let built = build_job(
                &session,
                agent,
                session.spec.team_ref.as_ref().map(|t| t.name.as_str()),
                &stores,
                &ctx.config.image,
            );
            // Only children compete for slots; other sessions' Jobs are
            // created without waiting for each other.
            let _slot = match session.spec.parent_ref {
                Some(_) => Some(sctx.slots.lock().await),
                None => None,
            };
            let room = match (&session.spec.parent_ref, &team) {
                (Some(parent), Some(team)) => {
                    let running = jobs
                        .list(
                            &ListParams::default()
                                .labels(&format!("{PARENT_LABEL}={}", parent.name)),
                        )
                        .await?
                        .items
                        .iter()
                        .filter(|j| job_finished(j).is_none())
                        .count();
                    running < team.spec.max_parallel as usize
                }
                _ => true,
            };
            if room {
                match jobs.create(&PostParams::default(), &built).await {
                    Ok(j) => {
                        tracing::info!(%ns, session = %name, job = %job_name, "job created");
                        job = Some(j);
                    }
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        job = jobs.get_opt(&job_name).await?;
                    }
                    Err(e) => return Err(e.into()),
                }
            } else {
                blocked = Some(Health::reconciling(
                    "WaitingForSlot",
                    "the team's maxParallel sessions are running",
                ));
                requeue = Some(SLOT_RECHECK);
            }
        }
        if let Some(h) = blocked {
            if matches!(h, Health::Stalled { .. }) {
                requeue = Some(STALLED_RECHECK);
            }
            status.phase = Some(SessionPhase::Pending);
            Some(h)
        } else {
            let term = match &job {
                Some(j) if job_finished(j).is_some() => {
                    termination(&Api::namespaced(client.clone(), &ns), &job_name).await?
                }
                _ => None,
            };
            let (phase, start, done, h) = status_from_job(job.as_ref(), term.as_ref());
            status.phase = Some(phase);
            status.start_time = start.or(status.start_time);
            status.completion_time = done;
            if let Some(t) = &term {
                status.result = t.result.clone();
                status.usage = Some(t.usage.clone());
            }
            status.message = match (&h, phase) {
                (Health::Stalled { message, .. }, SessionPhase::Failed) => Some(message.clone()),
                _ => None,
            };
            provider = agent.as_ref().map(|a| a.spec.model.provider);
            status.transcript = agent.as_ref().and_then(|a| {
                a.spec
                    .memory
                    .iter()
                    .find(|m| m.access == Access::ReadWrite)
                    .map(|m| format!("{}:sessions/{name}.jsonl", m.store_ref.name))
            });
            Some(h)
        }
    };
    if let Some(h) = &health {
        status.conditions = conditions(h, session.metadata.generation, &old.conditions, &now());
    }
    if status != old {
        apply_status(&sessions, session.as_ref(), &status).await?;
        if status.phase != old.phase {
            let phase = status.phase.unwrap_or_default();
            let failed = phase == SessionPhase::Failed;
            super::metrics::record_finished_session(
                &session,
                phase,
                provider,
                status.usage.as_ref(),
            );
            let note = match (&health, failed) {
                (_, true) => status.message.clone().unwrap_or_default(),
                (Some(Health::Stalled { message, .. }), _)
                | (Some(Health::Reconciling { message, .. }), _) => message.clone(),
                _ => format!("session is {phase:?}"),
            };
            publish(
                ctx.as_ref(),
                session.as_ref(),
                failed,
                &format!("{phase:?}"),
                note,
            )
            .await;
        }
    }
    Ok(match requeue {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

/// Runs the AgentSession controller until the watch ends.
pub async fn run(ctx: Arc<Context>) {
    // Trimmed streams (see `trim`): owned Jobs as metadata only.
    // A child's change updates its parent's `children`; a finished child
    // frees a slot for its waiting siblings.
    let (store, sessions) = trim::reflected_with_parents(
        watched_api::<AgentSession>(&ctx),
        watcher::Config::default(),
        |child: &AgentSession| {
            let ns = child.namespace().unwrap_or_default();
            child
                .spec
                .parent_ref
                .as_ref()
                .map(|p| ObjectRef::<AgentSession>::new(&p.name).within(&ns))
        },
    );
    let jobs = trim::metadata_trigger(
        watched_api::<PartialObjectMeta<Job>>(&ctx),
        watcher::Config::default().labels("app.kubernetes.io/component=agent"),
    );
    let sctx = Arc::new(SessionContext {
        ctx: ctx.clone(),
        slots: tokio::sync::Mutex::new(()),
        identities: std::sync::Mutex::new(BTreeMap::new()),
        sessions: store.clone(),
    });
    Controller::for_stream(sessions, store)
        .with_config(trim::controller_config())
        .owns_stream(jobs)
        .shutdown_on_signal()
        .run(
            super::metrics::observe("agentsession", reconcile),
            |s, e, c: Arc<SessionContext>| shared_error_policy(s, e, c.ctx.clone()),
            sctx,
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!("agentsession controller: {e}");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AgentSessionSpec, AgentSpec, LocalRef, ModelSpec, Provider, SecretKeyRef};
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};

    fn agent() -> Agent {
        Agent::new(
            "coder",
            AgentSpec {
                model: ModelSpec {
                    provider: Provider::Anthropic,
                    name: "m".into(),
                    base_url: None,
                    api_key_secret_ref: SecretKeyRef {
                        name: "llm".into(),
                        key: "api-key".into(),
                    },
                    max_tokens: 100,
                },
                system_prompt: String::new(),
                tools: vec![],
                memory: vec![],
                max_turns: 5,
                resources: None,
                image: None,
            },
        )
    }

    fn session() -> AgentSession {
        let mut s = AgentSession::new(
            "fix-1-coder-1",
            AgentSessionSpec {
                agent_ref: None,
                team_ref: Some(LocalRef::new("devs")),
                prompt: "p".into(),
                parent_ref: Some(LocalRef::new("fix-1")),
                member: Some("coder".into()),
                timeout_seconds: 90,
            },
        );
        s.metadata.namespace = Some("ns".into());
        s.metadata.uid = Some("u".into());
        s
    }

    #[test]
    fn job_mounts_workspace_and_stores_and_keeps_the_key_in_a_secret_ref() {
        let stores = vec![
            StoreVolume {
                store: "team".into(),
                claim: "team-memory".into(),
                path: "/memories/team".into(),
                read_only: false,
            },
            StoreVolume {
                store: "docs".into(),
                claim: "existing".into(),
                path: "/ro".into(),
                read_only: true,
            },
        ];
        let job = build_job(&session(), &agent(), Some("devs"), &stores, "img:1");
        assert_eq!(job.metadata.name.as_deref(), Some("fix-1-coder-1-run"));
        assert_eq!(job.metadata.labels.as_ref().unwrap()[PARENT_LABEL], "fix-1");
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(spec.active_deadline_seconds, Some(90));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some(AGENT_SERVICE_ACCOUNT)
        );
        let c = &pod.containers[0];
        assert_eq!(
            c.args.as_ref().unwrap(),
            &vec![
                "agent".to_string(),
                "--session".into(),
                "ns/fix-1-coder-1".into()
            ]
        );
        let env = &c.env.as_ref().unwrap()[0];
        assert_eq!(env.name, API_KEY_ENV);
        assert!(env.value.is_none());
        assert_eq!(
            env.value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .key,
            "api-key"
        );
        let mounts = c.volume_mounts.as_ref().unwrap();
        let paths: Vec<(&str, Option<bool>)> = mounts
            .iter()
            .map(|m| (m.mount_path.as_str(), m.read_only))
            .collect();
        assert_eq!(
            paths,
            vec![
                ("/workspace", None),
                ("/memories/team", None),
                ("/ro", Some(true))
            ]
        );
        let claims: Vec<String> = pod
            .volumes
            .unwrap()
            .iter()
            .map(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .unwrap()
                    .claim_name
                    .clone()
            })
            .collect();
        assert_eq!(claims, vec!["devs-workspace", "team-memory", "existing"]);
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_ref().unwrap(),
            &vec!["ALL".to_string()]
        );
        assert_eq!(
            pod.security_context.unwrap().seccomp_profile.unwrap().type_,
            "RuntimeDefault"
        );
        let single = build_job(&session(), &agent(), None, &[], "img:1");
        let vols = single.spec.unwrap().template.spec.unwrap().volumes.unwrap();
        assert!(vols.is_empty());
    }

    fn job_with(cond: &str, reason: &str) -> Job {
        Job {
            status: Some(JobStatus {
                conditions: Some(vec![JobCondition {
                    type_: cond.into(),
                    status: "True".into(),
                    reason: Some(reason.into()),
                    message: Some("Job was active longer than specified deadline".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn phases_come_from_the_job_and_the_termination_message() {
        assert_eq!(status_from_job(None, None).0, SessionPhase::Pending);
        assert_eq!(
            status_from_job(Some(&Job::default()), None).0,
            SessionPhase::Pending
        );
        let started = Job {
            status: Some(JobStatus {
                start_time: Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            status_from_job(Some(&started), None).0,
            SessionPhase::Running
        );
        let term = Termination {
            outcome: Outcome::Failed,
            result: None,
            usage: Default::default(),
            message: Some("anthropic: giving up after 3 tries: HTTP 500: boom".into()),
        };
        let (p, _, _, h) = status_from_job(
            Some(&job_with("Failed", "BackoffLimitExceeded")),
            Some(&term),
        );
        assert_eq!(p, SessionPhase::Failed);
        assert!(matches!(h, Health::Stalled { message, .. } if message.contains("HTTP 500")));
        let (p, _, _, h) = status_from_job(Some(&job_with("Failed", "DeadlineExceeded")), None);
        assert_eq!(p, SessionPhase::Failed);
        assert!(
            matches!(h, Health::Stalled { message, .. } if message.starts_with("DeadlineExceeded"))
        );
        let (p, ..) = status_from_job(Some(&job_with("Complete", "")), None);
        assert_eq!(p, SessionPhase::Succeeded);
    }
}
