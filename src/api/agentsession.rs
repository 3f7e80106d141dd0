//! `AgentSession`: one run of an agent or a team on a prompt.

use super::common::LocalRef;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

fn default_timeout() -> u32 {
    3600
}

/// What an AgentSession runs. Immutable after create: a session is one run.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "reverie.dev",
    version = "v1alpha1",
    kind = "AgentSession",
    namespaced,
    status = "AgentSessionStatus",
    shortname = "asess",
    category = "reverie",
    printcolumn = r#"{"name":"Agent","type":"string","jsonPath":".spec.agentRef.name"}"#,
    printcolumn = r#"{"name":"Team","type":"string","jsonPath":".spec.teamRef.name"}"#,
    printcolumn = r#"{"name":"Parent","type":"string","jsonPath":".spec.parentRef.name"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = kube::core::Rule::new("self.spec == oldSelf.spec").message("spec is immutable: a session is one run; create a new AgentSession")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.agentRef) != has(self.teamRef)").message("exactly one of agentRef or teamRef must be set"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.member) || has(self.parentRef)").message("member is only valid with parentRef (a delegated session)"))]
pub struct AgentSessionSpec {
    /// Run this agent alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_ref: Option<LocalRef>,
    /// Run this team: its lead receives the prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_ref: Option<LocalRef>,
    /// The task.
    #[schemars(length(min = 1, max = 262144))]
    pub prompt: String,
    /// The lead's session that delegated this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_ref: Option<LocalRef>,
    /// The team member this delegated session runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub member: Option<String>,
    /// The session fails when it runs longer than this.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 604800))]
    pub timeout_seconds: u32,
}

/// Where a session is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum SessionPhase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
}

/// Tokens a session used.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// LLM requests that failed for good (after the provider's retries);
    /// absent when none did.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub errors: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A delegated session started by this one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChildSession {
    pub name: String,
    pub member: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SessionPhase>,
}

/// Status of an AgentSession, written only by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentSessionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SessionPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// The final answer (for a team: the lead's consolidated result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<ChildSession>,
    /// The transcript, as `<store>:sessions/<name>.jsonl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<String>,
    /// Why the session failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
