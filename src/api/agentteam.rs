//! `AgentTeam`: a lead agent and its members, sharing one workspace volume.

use super::common::{default_access_modes, default_size, AccessMode, LocalRef, QUANTITY_RULE};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The team's lead.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeamLead {
    /// The Agent that leads.
    pub agent_ref: LocalRef,
}

/// A member the lead can delegate to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeamMember {
    /// The name the lead uses for this member (a DNS label).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The Agent that does the work.
    pub agent_ref: LocalRef,
    /// What this member is good at; shown to the lead.
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub description: String,
}

/// The shared workspace volume of a team.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceSpec {
    /// Requested size, e.g. `1Gi`.
    #[serde(default = "default_size")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = kube::core::Rule::new(QUANTITY_RULE).message("size must be a quantity such as 1Gi or 500Mi"))]
    pub size: String,
    /// StorageClass of the claim; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub storage_class_name: Option<String>,
    /// Access modes of the claim. Members run in parallel on this volume:
    /// across nodes that needs `ReadWriteMany`.
    #[serde(default = "default_access_modes")]
    #[schemars(length(min = 1, max = 4))]
    pub access_modes: Vec<AccessMode>,
}

impl Default for WorkspaceSpec {
    fn default() -> Self {
        WorkspaceSpec {
            size: default_size(),
            storage_class_name: None,
            access_modes: default_access_modes(),
        }
    }
}

fn default_max_parallel() -> u32 {
    4
}

/// What an AgentTeam is.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "reverie.dev",
    version = "v1alpha1",
    kind = "AgentTeam",
    namespaced,
    status = "AgentTeamStatus",
    shortname = "team",
    category = "reverie",
    printcolumn = r#"{"name":"Lead","type":"string","jsonPath":".spec.lead.agentRef.name"}"#,
    printcolumn = r#"{"name":"Members","type":"integer","jsonPath":".status.members"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AgentTeamSpec {
    /// The lead agent: it receives the session's prompt and delegates.
    pub lead: TeamLead,
    /// The members the lead can delegate to.
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = kube::core::Rule::new("self.all(m, self.exists_one(n, n.name == m.name))").message("members: names must be unique"))]
    pub members: Vec<TeamMember>,
    /// The shared workspace volume.
    #[serde(default)]
    pub workspace: WorkspaceSpec,
    /// How many member sessions may run at once.
    #[serde(default = "default_max_parallel")]
    #[schemars(range(min = 1, max = 64))]
    pub max_parallel: u32,
}

/// Status of an AgentTeam, written only by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentTeamStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, plus `Reconciling`/`Stalled` (true only when abnormal).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Number of members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<u32>,
    /// The workspace PersistentVolumeClaim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_claim: Option<String>,
}
