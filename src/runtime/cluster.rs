//! The runtime's side of the API: reading the session, its Agent and team,
//! and the `delegate` tool that creates child sessions and waits for them.

use super::plan::{self, Outcome, Termination, API_KEY_ENV, PARENT_LABEL, WORKSPACE};
use super::provider::{Llm, ToolDef};
use super::tools::{FilesTool, MemoryTool, StoreMount, ToolOutput};
use super::transcript::Transcript;
use super::{AgentLoop, RuntimeError, Toolbox};
use crate::api::{
    Access, Agent, AgentSession, AgentSessionSpec, AgentSessionStatus, AgentTeam, LocalRef,
    SessionPhase, Tool,
};
use crate::memory::layout::SESSIONS;
use crate::pathmap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Resource;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The `delegate` tool of a team's lead.
pub struct Delegator {
    pub api: Api<AgentSession>,
    pub team: AgentTeam,
    pub parent: AgentSession,
    /// The workspace on this file system (already translated).
    pub workspace: PathBuf,
    counter: AtomicUsize,
}

impl Delegator {
    /// The tool for `parent`, a lead session of `team`.
    pub fn new(
        api: Api<AgentSession>,
        team: AgentTeam,
        parent: AgentSession,
        workspace: PathBuf,
    ) -> Self {
        Delegator {
            api,
            team,
            parent,
            workspace,
            counter: AtomicUsize::new(0),
        }
    }

    /// The tool definition, listing the members.
    pub fn def(&self) -> ToolDef {
        let members: Vec<String> = self
            .team
            .spec
            .members
            .iter()
            .map(|m| format!("{} ({})", m.name, m.description))
            .collect();
        ToolDef {
            name: "delegate".into(),
            description: format!(
                "Delegate tasks to team members, who run in parallel on the shared /workspace; waits for all of them and returns each result. Members: {}.",
                members.join(", ")
            ),
            input_schema: serde_json::json!({
                "type": "object",
                "properties": {"tasks": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"member": {"type": "string"}, "task": {"type": "string"}},
                    "required": ["member", "task"]}}},
                "required": ["tasks"]
            }),
        }
    }

    /// Parses the tasks; an unknown member or bad input is an error for the model.
    fn tasks(&self, input: &serde_json::Value) -> Result<Vec<(String, String)>, String> {
        let tasks = input
            .get("tasks")
            .and_then(|t| t.as_array())
            .ok_or("missing array argument `tasks`")?;
        if tasks.is_empty() {
            return Err("`tasks` is empty".into());
        }
        let known: Vec<&str> = self
            .team
            .spec
            .members
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        let mut out = Vec::new();
        for (i, t) in tasks.iter().enumerate() {
            let member = t
                .get("member")
                .and_then(|m| m.as_str())
                .ok_or_else(|| format!("tasks[{i}]: missing `member`"))?;
            let task = t
                .get("task")
                .and_then(|m| m.as_str())
                .filter(|s| !s.is_empty())
                .ok_or_else(|| format!("tasks[{i}]: missing `task`"))?;
            if !known.contains(&member) {
                return Err(format!(
                    "tasks[{i}]: unknown team member {member:?}; members are: {}",
                    known.join(", ")
                ));
            }
            out.push((member.to_string(), task.to_string()));
        }
        Ok(out)
    }

    fn child(&self, member: &str, task: &str) -> AgentSession {
        let k = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        let parent_name = self.parent.metadata.name.clone().unwrap_or_default();
        let name = plan::child_name(&parent_name, member, k);
        let owner = OwnerReference {
            api_version: AgentSession::api_version(&()).into_owned(),
            kind: AgentSession::kind(&()).into_owned(),
            name: parent_name.clone(),
            uid: self.parent.metadata.uid.clone().unwrap_or_default(),
            controller: Some(false),
            block_owner_deletion: Some(true),
        };
        AgentSession {
            metadata: ObjectMeta {
                name: Some(name),
                labels: Some(BTreeMap::from([(
                    PARENT_LABEL.to_string(),
                    parent_name.clone(),
                )])),
                owner_references: Some(vec![owner]),
                ..Default::default()
            },
            spec: AgentSessionSpec {
                agent_ref: None,
                team_ref: Some(LocalRef::new(
                    self.team.metadata.name.clone().unwrap_or_default(),
                )),
                prompt: task.to_string(),
                parent_ref: Some(LocalRef::new(parent_name)),
                member: Some(member.to_string()),
                timeout_seconds: self.parent.spec.timeout_seconds,
            },
            status: None,
        }
    }

    /// Creates one child session per task, waits for all of them (watch), and
    /// returns each child's result file and status.
    pub async fn call(&self, input: &serde_json::Value) -> ToolOutput {
        let tasks = match self.tasks(input) {
            Ok(t) => t,
            Err(e) => return ToolOutput::err(e),
        };
        let mut names = Vec::new();
        for (member, task) in &tasks {
            let child = self.child(member, task);
            let name = child.metadata.name.clone().unwrap_or_default();
            match self.api.create(&PostParams::default(), &child).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return ToolOutput::err(format!("cannot create session {name}: {e}")),
            }
            tracing::info!(child = %name, member = %member, "delegated");
            names.push((name, member.clone()));
        }
        let waits = names.iter().map(|(name, _)| {
            kube::runtime::wait::await_condition(
                self.api.clone(),
                name,
                |s: Option<&AgentSession>| {
                    s.and_then(|s| s.status.as_ref()).is_some_and(child_settled)
                },
            )
        });
        let done = futures::future::join_all(waits).await;
        let mut out = String::new();
        for ((name, member), res) in names.iter().zip(done) {
            let status = match res {
                Ok(Some(s)) => s.status.unwrap_or_default(),
                Ok(None) => {
                    out.push_str(&format!("## {name} (member {member}): deleted\n\n"));
                    continue;
                }
                Err(e) => {
                    out.push_str(&format!(
                        "## {name} (member {member}): cannot watch: {e}\n\n"
                    ));
                    continue;
                }
            };
            let phase = status.phase.unwrap_or_default();
            let stalled = stalled_message(&status);
            match &stalled {
                Some(m) if !matches!(phase, SessionPhase::Succeeded | SessionPhase::Failed) => {
                    out.push_str(&format!("## {name} (member {member}): Stalled: {m}\n\n"));
                    continue;
                }
                _ => out.push_str(&format!("## {name} (member {member}): {phase:?}\n")),
            }
            let file = self.workspace.join("results").join(format!("{name}.md"));
            match std::fs::read_to_string(&file) {
                Ok(text) => out.push_str(&format!("/workspace/results/{name}.md:\n{text}\n")),
                Err(_) => {
                    if let Some(r) = &status.result {
                        out.push_str(&format!("result: {r}\n"));
                    }
                }
            }
            if let Some(m) = &status.message {
                out.push_str(&format!("message: {m}\n"));
            }
            out.push('\n');
        }
        ToolOutput::ok(out)
    }
}

/// The Stalled condition's message, when the session cannot progress.
fn stalled_message(s: &AgentSessionStatus) -> Option<String> {
    s.conditions
        .iter()
        .find(|c| c.type_ == crate::api::condition::STALLED && c.status == "True")
        .map(|c| c.message.clone())
}

/// A child the lead stops waiting for: finished, or stalled before it could
/// start (say its Agent's Secret is missing) — the lead hears why instead of
/// waiting for its own deadline.
fn child_settled(s: &AgentSessionStatus) -> bool {
    matches!(
        s.phase,
        Some(SessionPhase::Succeeded) | Some(SessionPhase::Failed)
    ) || (s.phase == Some(SessionPhase::Pending) && stalled_message(s).is_some())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Everything a session needs before its loop starts.
struct Prepared {
    agent_name: String,
    agent: Agent,
    tools: Toolbox,
    transcript: Option<PathBuf>,
    /// For a delegated session: where its final answer goes.
    result_file: Option<PathBuf>,
    system: String,
}

async fn prepare(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<(AgentSession, Prepared), RuntimeError> {
    let sessions: Api<AgentSession> = Api::namespaced(client.clone(), ns);
    let session = sessions.get(name).await?;
    let team = match &session.spec.team_ref {
        Some(t) => Some(
            Api::<AgentTeam>::namespaced(client.clone(), ns)
                .get(&t.name)
                .await?,
        ),
        None => None,
    };
    let agent_name =
        plan::session_agent(&session.spec, team.as_ref()).map_err(RuntimeError::Invalid)?;
    let agent = Api::<Agent>::namespaced(client.clone(), ns)
        .get(&agent_name)
        .await?;
    let stores: Vec<StoreMount> = agent
        .spec
        .memory
        .iter()
        .map(|m| StoreMount {
            name: m.store_ref.name.clone(),
            root: pathmap::translate(plan::mount_path(m)),
            read_only: m.access == Access::ReadOnly,
        })
        .collect();
    // A store someone dreams over needs `memories/`, even before the agent
    // writes its first memory.
    for s in stores.iter().filter(|s| !s.read_only) {
        let dir = s.root.join(crate::memory::layout::MEMORIES);
        std::fs::create_dir_all(&dir).map_err(|e| RuntimeError::io(&dir, e))?;
    }
    let transcript = agent
        .spec
        .memory
        .iter()
        .find(|m| m.access == Access::ReadWrite)
        .map(|m| pathmap::translate(format!("{}/{SESSIONS}/{name}.jsonl", plan::mount_path(m))));
    let workspace = team.as_ref().map(|_| pathmap::translate(WORKSPACE));
    let has = |t: Tool| agent.spec.tools.contains(&t);
    let mut tools = Toolbox::default();
    if has(Tool::Memory) && !stores.is_empty() {
        tools.memory = Some(MemoryTool { stores });
    }
    if let Some(ws) = &workspace {
        if has(Tool::Files) {
            tools.files = Some(FilesTool { root: ws.clone() });
        }
    }
    if has(Tool::Bash) {
        tools.bash = Some(workspace.clone());
    }
    let is_lead = team.is_some() && session.spec.parent_ref.is_none();
    let mut system = agent.spec.system_prompt.clone();
    if let (true, Some(team), Some(ws)) = (is_lead && has(Tool::Delegate), team.clone(), &workspace)
    {
        tools.delegate = Some(Delegator::new(
            sessions.clone(),
            team,
            session.clone(),
            ws.clone(),
        ));
    }
    let result_file = match (&workspace, &session.spec.parent_ref) {
        (Some(ws), Some(_)) => {
            system.push_str(&format!(
                "\n\nYou are team member {:?}. Your final answer is saved to /workspace/results/{name}.md for the lead.",
                session.spec.member.as_deref().unwrap_or("")
            ));
            Some(ws.join("results").join(format!("{name}.md")))
        }
        _ => None,
    };
    Ok((
        session,
        Prepared {
            agent_name,
            agent,
            tools,
            transcript,
            result_file,
            system,
        },
    ))
}

/// Runs session `ns/name` to its end and writes the termination message.
/// Returns the termination it wrote (the caller decides the exit code).
pub async fn run_session(ns: &str, name: &str) -> Termination {
    let term = match run_inner(ns, name).await {
        Ok(t) => t,
        Err(e) => Termination {
            outcome: Outcome::Failed,
            result: None,
            usage: Default::default(),
            message: Some(e.to_string()),
        },
    };
    let path = pathmap::translate(plan::TERMINATION_LOG);
    if let Err(e) = std::fs::write(&path, term.to_json()) {
        tracing::warn!(path = %path.display(), "cannot write the termination message: {e}");
    }
    term
}

async fn run_inner(ns: &str, name: &str) -> Result<Termination, RuntimeError> {
    let client = kube::Client::try_default().await?;
    let (session, p) = prepare(&client, ns, name).await?;
    let api_key = std::env::var(API_KEY_ENV).map_err(|_| {
        RuntimeError::Invalid(format!(
            "environment variable {API_KEY_ENV} (the API key) is not set"
        ))
    })?;
    let m = &p.agent.spec.model;
    let llm = Llm::new(
        m.provider,
        m.base_url.as_deref(),
        &m.name,
        m.max_tokens,
        api_key,
    )?;
    let mut transcript = match &p.transcript {
        Some(path) => Some(Transcript::open(path, name, &p.agent_name)?),
        None => None,
    };
    tracing::info!(session = %name, agent = %p.agent_name, "session starts");
    let r = AgentLoop {
        system: p.system.clone(),
        max_turns: p.agent.spec.max_turns,
        model: &llm,
        tools: &p.tools,
        transcript: transcript.as_mut(),
        now: &now,
    }
    .run(&session.spec.prompt)
    .await;
    if let Some(file) = &p.result_file {
        let text = if r.succeeded {
            r.result.clone()
        } else {
            format!(
                "FAILED: {}\n\n{}",
                r.message.clone().unwrap_or_default(),
                r.result
            )
        };
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| RuntimeError::io(parent, e))?;
        }
        std::fs::write(file, text).map_err(|e| RuntimeError::io(file, e))?;
    }
    Ok(Termination {
        outcome: if r.succeeded {
            Outcome::Succeeded
        } else {
            Outcome::Failed
        },
        result: Some(r.result).filter(|s| !s.is_empty()),
        usage: r.usage,
        message: r.message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn cond(type_: &str, status: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "SecretNotFound".into(),
            message: "Secret llm (key api-key) not found".into(),
            observed_generation: None,
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        }
    }

    #[test]
    fn the_lead_stops_waiting_for_finished_or_stalled_children() {
        let mut s = AgentSessionStatus {
            phase: Some(SessionPhase::Running),
            ..Default::default()
        };
        assert!(!child_settled(&s));
        s.phase = Some(SessionPhase::Failed);
        assert!(child_settled(&s));
        s.phase = Some(SessionPhase::Pending);
        s.conditions = vec![cond("Ready", "False"), cond("Reconciling", "True")];
        assert!(!child_settled(&s));
        s.conditions = vec![cond("Ready", "False"), cond("Stalled", "True")];
        assert!(child_settled(&s));
        assert_eq!(
            stalled_message(&s).as_deref(),
            Some("Secret llm (key api-key) not found")
        );
    }
}
