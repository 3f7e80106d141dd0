//! `MemoryPatch`: a reviewable list of ops against one memory store (DESIGN §4).

pub use super::common::LocalRef;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a MemoryPatch proposes. Immutable after create.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "reverie.dev",
    version = "v1alpha1",
    kind = "MemoryPatch",
    namespaced,
    status = "MemoryPatchStatus",
    shortname = "mpatch",
    category = "reverie",
    printcolumn = r#"{"name":"Store","type":"string","jsonPath":".spec.storeRef.name"}"#,
    printcolumn = r#"{"name":"Base","type":"integer","jsonPath":".spec.baseRevision"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Summary","type":"string","jsonPath":".spec.summary","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.spec == oldSelf.spec").message("spec is immutable: a reviewed patch cannot change; create a new MemoryPatch")
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
    #[schemars(length(max = 1024))]
    pub summary: String,
    /// The ops, applied in order, all or nothing.
    #[schemars(length(max = 5000))]
    pub ops: Vec<PatchOp>,
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
    #[schemars(length(max = 253))]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 530))]
    pub entry: Option<String>,
    /// A short quote of what the evidence says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub quote: Option<String>,
}

/// One change to the memory files (DESIGN §4).
///
/// Which fields are required depends on `op`:
/// `add` needs `content`; `update` needs `id` + `content`; `merge` needs
/// `ids` (two or more) + `content`; `delete` needs `id`; `move` needs `id` + `to`.
/// Ops that name an entry carry `before` (its text when proposed; for `merge`
/// the texts of all merged entries in `ids` order, separated by blank lines).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.op != 'add' || has(self.content)").message("an add op needs content"))]
#[x_kube(validation = Rule::new("self.op != 'update' || (has(self.id) && has(self.content))").message("an update op needs id and content"))]
#[x_kube(validation = Rule::new("self.op != 'merge' || (has(self.ids) && size(self.ids) >= 2 && has(self.content))").message("a merge op needs at least two ids and content"))]
#[x_kube(validation = Rule::new("self.op != 'delete' || has(self.id)").message("a delete op needs id"))]
#[x_kube(validation = Rule::new("self.op != 'move' || (has(self.id) && has(self.to))").message("a move op needs id and to"))]
pub struct PatchOp {
    pub op: OpKind,
    /// The memory file, relative to `memories/` (no component may start
    /// with `.`, so `..` and hidden files are impossible).
    #[schemars(
        length(min = 1, max = 512),
        regex(pattern = r"^[^/.][^/]*(/[^/.][^/]*)*\.md$")
    )]
    pub path: String,
    /// The heading the entry belongs under (`add`, `move`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub section: Option<String>,
    /// The entry this op names (12 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{12}$"))]
    pub id: Option<String>,
    /// The entries a merge combines: `id`, or `path#id` for another file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 64),
        inner(length(max = 530), regex(pattern = r"^([^#]+#)?[0-9a-f]{12}$"))
    )]
    pub ids: Option<Vec<String>>,
    /// The new entry text (`add`, `update`, `merge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    pub content: Option<String>,
    /// The destination file of a `move`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 512),
        regex(pattern = r"^[^/.][^/]*(/[^/.][^/]*)*\.md$")
    )]
    pub to: Option<String>,
    /// The named entry's text when the patch was proposed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub before: Option<String>,
    pub reason: self::Reason,
    /// The entry that replaces a deleted one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 530))]
    pub superseded_by: Option<String>,
    /// Where the reason can be checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PatchPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_revision: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
