//! `MemoryStore`: a volume of Markdown memory files plus session transcripts.

use super::common::{default_access_modes, default_size, AccessMode, QUANTITY_RULE};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The store's volume.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.existingClaim) || !has(self.storageClassName)").message("storageClassName cannot be set with existingClaim (the claim exists already)"))]
pub struct StorageSpec {
    /// Requested size, e.g. `1Gi`.
    #[serde(default = "default_size")]
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = kube::core::Rule::new(QUANTITY_RULE).message("size must be a quantity such as 1Gi or 500Mi"))]
    pub size: String,
    /// StorageClass of the claim; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub storage_class_name: Option<String>,
    /// Access modes of the claim.
    #[serde(default = "default_access_modes")]
    #[schemars(length(min = 1, max = 4))]
    pub access_modes: Vec<AccessMode>,
    /// Use this existing PersistentVolumeClaim instead of creating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub existing_claim: Option<String>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec {
            size: default_size(),
            storage_class_name: None,
            access_modes: default_access_modes(),
            existing_claim: None,
        }
    }
}

/// Size limits the dream enforces with `budget` ops.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.maxBytes) || !has(self.maxEntryBytes) || self.maxEntryBytes <= self.maxBytes").message("maxEntryBytes must not exceed maxBytes"))]
pub struct Limits {
    /// All memory files together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_bytes: Option<u64>,
    /// One entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_entry_bytes: Option<u64>,
}

/// How much history to keep.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Transcripts to keep (oldest removed first); all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub sessions: Option<u32>,
    /// Journal revisions to keep; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub revisions: Option<u32>,
}

/// What happens to the volume when the store is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the PersistentVolumeClaim (the memory survives the resource).
    #[default]
    Retain,
    /// Delete the claim with the store.
    Delete,
}

/// What a MemoryStore is.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "reverie.dev",
    version = "v1alpha1",
    kind = "MemoryStore",
    namespaced,
    status = "MemoryStoreStatus",
    shortname = "mstore",
    category = "reverie",
    printcolumn = r#"{"name":"Revision","type":"integer","jsonPath":".status.revision"}"#,
    printcolumn = r#"{"name":"Entries","type":"integer","jsonPath":".status.entries"}"#,
    printcolumn = r#"{"name":"Pending","type":"integer","jsonPath":".status.pendingPatches"}"#,
    printcolumn = r#"{"name":"Last Dream","type":"date","jsonPath":".status.lastDream"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStoreSpec {
    /// The volume.
    #[serde(default)]
    pub storage: StorageSpec,
    /// Instructions for every dream of this store (what to keep, what to drop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16384))]
    pub instructions: Option<String>,
    /// Size limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// History to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// `Retain` (default) or `Delete` the claim with the store.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Status of a MemoryStore, written only by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStoreStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The journal revision of the memory files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_dream: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_patches: Option<u32>,
    /// The claim that holds the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_name: Option<String>,
    /// When the newest dream Job the controller has counted (succeeded or
    /// failed) finished: the dream metrics count only Jobs that finished
    /// later, so a Job is counted once even across controller restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_finished_dream: Option<Time>,
}
