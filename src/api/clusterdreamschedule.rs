//! `ClusterDreamSchedule`: one cluster-scoped schedule for the stores of
//! many namespaces. The controller expands it into one `DreamSchedule` per
//! selected namespace (same name, `spec = template`), so the multi-store
//! loop schedules those stores like any other.

use super::dreamschedule::{CycleCounts, DreamScheduleSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Label on every DreamSchedule generated from a ClusterDreamSchedule,
/// naming it.
pub const CLUSTER_SCHEDULE_LABEL: &str = "reverie.dev/cluster-schedule";

/// What a ClusterDreamSchedule is.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "reverie.dev",
    version = "v1alpha1",
    kind = "ClusterDreamSchedule",
    status = "ClusterDreamScheduleStatus",
    shortname = "cdsched",
    category = "reverie",
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.template.schedule"}"#,
    printcolumn = r#"{"name":"Namespaces","type":"integer","jsonPath":".status.namespaces"}"#,
    printcolumn = r#"{"name":"Suspend","type":"boolean","jsonPath":".spec.template.suspend"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.template.storeRef) && has(self.template.storeSelector)").message("template must use storeSelector, not storeRef"))]
pub struct ClusterDreamScheduleSpec {
    /// The namespaces to schedule in, by label; `{}` selects every
    /// namespace (only the controller's namespace when it watches one).
    pub namespace_selector: LabelSelector,
    /// The spec of the DreamSchedule generated in each selected namespace;
    /// its `storeSelector` selects stores within that namespace. Limits
    /// such as `budget.tokensPerHour` apply per namespace (each generated
    /// schedule has its own budget), not to the cluster as a whole.
    pub template: DreamScheduleSpec,
}

/// Status of a ClusterDreamSchedule, written only by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterDreamScheduleStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// How many namespaces the selector matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<u32>,
    /// The generated DreamSchedules, as `namespace/name`, sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<String>,
    /// The stores the generated schedules select, summed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stores: Option<u32>,
    /// The generated schedules' current-cycle counts, summed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_cycle: Option<CycleCounts>,
}
