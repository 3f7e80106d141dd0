//! `Agent`: one LLM agent — model, prompt, tools, the memory stores it mounts.

use super::common::{LocalRef, ModelSpec};
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A tool the agent runtime offers the model.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Tool {
    /// Read and write Markdown memory in the mounted stores.
    Memory,
    /// Read and write files under `/workspace`.
    Files,
    /// Run shell commands (opt-in; with a timeout and capped output).
    Bash,
    /// Delegate tasks to team members (team leads only).
    Delegate,
}

/// How an agent mounts a memory store.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Access {
    #[default]
    ReadWrite,
    ReadOnly,
}

/// A memory store mounted into the agent's pod.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemoryMount {
    /// The MemoryStore in this namespace.
    pub store_ref: LocalRef,
    /// `ReadWrite` (default) or `ReadOnly`.
    #[serde(default)]
    pub access: Access,
    /// Mount path; default `/memories/<store>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 1024))]
    #[x_kube(validation = kube::core::Rule::new("self.startsWith('/') && !self.contains('..')").message("path must be absolute and must not contain '..'"))]
    pub path: Option<String>,
}

fn default_max_turns() -> u32 {
    50
}

/// What an Agent is.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "reverie.dev",
    version = "v1alpha1",
    kind = "Agent",
    namespaced,
    status = "AgentStatus",
    shortname = "agt",
    category = "reverie",
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.model.provider"}"#,
    printcolumn = r#"{"name":"Model","type":"string","jsonPath":".spec.model.name"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.memory) || self.memory.all(m, self.memory.exists_one(n, n.storeRef.name == m.storeRef.name))").message("memory: each store may be mounted once"))]
pub struct AgentSpec {
    /// The model and its credentials.
    pub model: ModelSpec,
    /// The system prompt.
    #[serde(default)]
    #[schemars(length(max = 65536))]
    pub system_prompt: String,
    /// Tools the model may call.
    #[serde(default)]
    #[schemars(length(max = 4))]
    #[x_kube(validation = kube::core::Rule::new("self.all(t, self.exists_one(u, u == t))").message("tools must not repeat"))]
    pub tools: Vec<Tool>,
    /// Memory stores mounted into the agent's pod.
    #[serde(default)]
    #[schemars(length(max = 16))]
    pub memory: Vec<MemoryMount>,
    /// Upper bound of model turns in one session.
    #[serde(default = "default_max_turns")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_turns: u32,
    /// Compute resources of the agent's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The image to run; the operator's own image when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub image: Option<String>,
}

/// Status of an Agent, written only by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, plus `Reconciling`/`Stalled` (true only when abnormal).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
