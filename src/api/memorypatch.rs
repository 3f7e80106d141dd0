//! `MemoryPatch`: a reviewable list of ops against one memory store (DESIGN §4).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a MemoryPatch proposes. Immutable after create.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "reverie.dev",
    version = "v1alpha1",
    kind = "MemoryPatch",
    namespaced,
    status = "MemoryPatchStatus",
    shortname = "mpatch",
    category = "reverie"
)]
#[serde(rename_all = "camelCase")]
pub struct MemoryPatchSpec {
    /// The store this patch applies to.
    pub store_ref: LocalRef,
    /// The store revision the patch was proposed against.
    #[serde(default)]
    pub base_revision: u64,
    /// One line a reviewer reads first.
    #[serde(default)]
    pub summary: String,
    /// The ops, applied in order, all or nothing.
    pub ops: Vec<PatchOp>,
}

/// A reference to an object in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct LocalRef {
    pub name: String,
}

/// The kind of a patch op.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Add,
    Update,
    Merge,
    Delete,
    Move,
}

/// Why an op is proposed.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    Duplicate,
    Contradiction,
    Stale,
    RecurringError,
    WorkingMethod,
    SharedPreference,
    Budget,
    Instruction,
}

/// Where an op's justification can be read: a line of a session transcript
/// (`session` + `line`, 1-based), and/or a memory entry (`entry` as `path#id`).
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    /// A short quote of what the evidence says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<String>,
}

/// One change to the memory files (DESIGN §4).
///
/// Which fields are required depends on `op`:
/// `add` needs `content`; `update` needs `id` + `content`; `merge` needs
/// `ids` (two or more) + `content`; `delete` needs `id`; `move` needs `id` + `to`.
/// Ops that name an entry carry `before` (its text when proposed; for `merge`
/// the texts of all merged entries in `ids` order, separated by blank lines).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatchOp {
    pub op: OpKind,
    /// The memory file, relative to `memories/`.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    pub reason: Reason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded_by: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<Evidence>,
}

/// Where a patch is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum PatchPhase {
    #[default]
    Pending,
    Approved,
    Rejected,
    Applying,
    Applied,
    Conflicted,
    Failed,
}

/// Status of a MemoryPatch, written only by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemoryPatchStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PatchPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_revision: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
