//! Pure decisions shared by the runtime and the AgentSession controller:
//! which Agent a session runs, where stores are mounted, how children are
//! named, and the termination-message contract.

use crate::api::{AgentSessionSpec, AgentTeam, MemoryMount, Usage};
use serde::{Deserialize, Serialize};

/// Where the team workspace is mounted.
pub const WORKSPACE: &str = "/workspace";
/// Where the runtime writes its termination message.
pub const TERMINATION_LOG: &str = "/dev/termination-log";
/// Environment variable that carries the API key (from a `secretKeyRef`).
pub const API_KEY_ENV: &str = "REVERIE_API_KEY";
/// Kubernetes caps termination messages at 4096 bytes; stay below.
pub const MAX_TERMINATION: usize = 4000;
/// Label on child sessions and Jobs naming the parent session.
pub const PARENT_LABEL: &str = "reverie.dev/parent";
/// Label on Jobs and pods naming their session.
pub const SESSION_LABEL: &str = "reverie.dev/session";

/// The Agent a session runs: its own `agentRef`, else the team's lead, or
/// for a delegated session the member's Agent.
pub fn session_agent(spec: &AgentSessionSpec, team: Option<&AgentTeam>) -> Result<String, String> {
    if let Some(a) = &spec.agent_ref {
        return Ok(a.name.clone());
    }
    let team_name = spec
        .team_ref
        .as_ref()
        .map(|t| t.name.as_str())
        .unwrap_or("");
    let team = team.ok_or_else(|| format!("AgentTeam {team_name} not found"))?;
    match &spec.member {
        None => Ok(team.spec.lead.agent_ref.name.clone()),
        Some(m) => team
            .spec
            .members
            .iter()
            .find(|x| &x.name == m)
            .map(|x| x.agent_ref.name.clone())
            .ok_or_else(|| format!("AgentTeam {team_name} has no member {m:?}")),
    }
}

/// The in-pod mount path of a store: its `path`, else `/memories/<store>`.
pub fn mount_path(m: &MemoryMount) -> String {
    m.path
        .clone()
        .unwrap_or_else(|| format!("/memories/{}", m.store_ref.name))
}

/// The name of the `k`-th child a session delegates to `member`. Kept short
/// enough that `<child>-run` is a valid Job name (63 bytes, a label value).
pub fn child_name(parent: &str, member: &str, k: usize) -> String {
    let suffix = format!("-{member}-{k}");
    let room = 59usize.saturating_sub(suffix.len());
    let mut head: String = parent.chars().take(room).collect();
    while head.ends_with('-') {
        head.pop();
    }
    format!("{head}{suffix}")
}

/// How a session ended, as the runtime reports it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Succeeded,
    Failed,
}

/// The JSON the runtime writes to `/dev/termination-log`; the controller
/// reads it from the pod's status into the session's status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Termination {
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default)]
    pub usage: Usage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl Termination {
    /// Serialises under [`MAX_TERMINATION`] bytes, shortening the result
    /// and the message when needed (the full result is in the transcript).
    pub fn to_json(&self) -> String {
        let mut t = self.clone();
        t.message = t.message.map(|m| cut(&m, 1000));
        let mut budget = 2800usize;
        loop {
            t.result = self.result.as_deref().map(|r| cut(r, budget));
            let s = serde_json::to_string(&t).unwrap_or_default();
            if s.len() <= MAX_TERMINATION || budget == 0 {
                return s;
            }
            budget /= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AgentTeamSpec, LocalRef, TeamLead, TeamMember};

    fn team() -> AgentTeam {
        AgentTeam::new(
            "t",
            AgentTeamSpec {
                lead: TeamLead {
                    agent_ref: LocalRef::new("lead-agent"),
                },
                members: vec![TeamMember {
                    name: "coder".into(),
                    agent_ref: LocalRef::new("coder-agent"),
                    description: String::new(),
                }],
                workspace: Default::default(),
                max_parallel: 2,
            },
        )
    }

    fn spec(member: Option<&str>) -> AgentSessionSpec {
        AgentSessionSpec {
            agent_ref: None,
            team_ref: Some(LocalRef::new("t")),
            prompt: "p".into(),
            parent_ref: member.map(|_| LocalRef::new("parent")),
            member: member.map(str::to_string),
            timeout_seconds: 60,
        }
    }

    #[test]
    fn lead_member_and_unknown_member() {
        let t = team();
        assert_eq!(session_agent(&spec(None), Some(&t)).unwrap(), "lead-agent");
        assert_eq!(
            session_agent(&spec(Some("coder")), Some(&t)).unwrap(),
            "coder-agent"
        );
        assert!(session_agent(&spec(Some("nobody")), Some(&t))
            .unwrap_err()
            .contains("no member \"nobody\""));
        assert!(session_agent(&spec(None), None).is_err());
    }

    #[test]
    fn child_names_fit_a_job_name() {
        assert_eq!(child_name("fix-bug", "coder", 1), "fix-bug-coder-1");
        let long = "a".repeat(80);
        let n = child_name(&long, "reviewer", 12);
        assert!(format!("{n}-run").len() <= 63, "{n}");
        assert!(n.ends_with("-reviewer-12"));
    }

    #[test]
    fn termination_message_stays_under_the_cap() {
        let t = Termination {
            outcome: Outcome::Succeeded,
            result: Some("é".repeat(10_000)),
            usage: Usage {
                input_tokens: 1,
                output_tokens: 2,
                errors: 1,
            },
            message: Some("m".repeat(5000)),
        };
        let s = t.to_json();
        assert!(s.len() <= MAX_TERMINATION, "{}", s.len());
        let back: Termination = serde_json::from_str(&s).unwrap();
        assert_eq!(back.outcome, Outcome::Succeeded);
        assert_eq!(back.usage.output_tokens, 2);
        assert_eq!(back.usage.errors, 1);
    }
}
