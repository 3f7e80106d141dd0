//! `DreamSchedule`: when and how a memory store dreams.

use super::common::{LocalRef, ModelSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which sessions a dream reads.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionSelection {
    /// `LastDream` (sessions since the previous dream) or a duration such
    /// as `24h`, `7d`, `30m`.
    #[serde(default = "default_since")]
    #[schemars(length(min = 1, max = 32))]
    #[x_kube(validation = kube::core::Rule::new("self == 'LastDream' || self.matches('^[0-9]+(s|m|h|d)$')").message("since must be LastDream or a duration such as 24h or 7d"))]
    pub since: String,
    /// Only sessions of these agents; all when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub agents: Vec<String>,
    /// At most this many sessions (the newest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max: Option<u32>,
}

fn default_since() -> String {
    "LastDream".to_string()
}

impl Default for SessionSelection {
    fn default() -> Self {
        SessionSelection {
            since: default_since(),
            agents: Vec::new(),
            max: None,
        }
    }
}

/// Who approves the patches a dream proposes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ApprovalMode {
    /// A person with the `approve` verb sets `reverie.dev/approval`.
    #[default]
    Manual,
    /// The controller approves patches whose every op kind is in `autoApprove`.
    Auto,
}

/// Op kinds that may be approved automatically.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum AutoApproveOp {
    Add,
    Update,
    Merge,
    Delete,
}

/// The approval policy of a schedule's patches.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.mode == 'Auto' || !has(self.autoApprove) || size(self.autoApprove) == 0").message("autoApprove is only allowed with mode: Auto"))]
pub struct Approval {
    /// `Manual` (default) or `Auto`.
    #[serde(default)]
    pub mode: ApprovalMode,
    /// With `Auto`: the op kinds the controller may approve on its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    #[x_kube(validation = kube::core::Rule::new("self.all(t, self.exists_one(u, u == t))").message("autoApprove must not repeat an op kind"))]
    pub auto_approve: Vec<AutoApproveOp>,
}

/// What the CronJob does when the previous dream still runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ConcurrencyPolicy {
    #[default]
    Forbid,
    Allow,
    Replace,
}

impl ConcurrencyPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ConcurrencyPolicy::Forbid => "Forbid",
            ConcurrencyPolicy::Allow => "Allow",
            ConcurrencyPolicy::Replace => "Replace",
        }
    }
}

fn default_successful_history() -> u32 {
    3
}

fn default_failed_history() -> u32 {
    1
}

fn default_skip_idle() -> bool {
    true
}

/// Limits on what a schedule's dreams may spend.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// LLM tokens (input + output) the schedule's dreams may use in any
    /// hour; a dream due while the last hour's dreams used this many waits
    /// (`DelayedBudget`) until the oldest of them is an hour old.
    #[schemars(range(min = 1))]
    pub tokens_per_hour: u64,
}

/// What a DreamSchedule is.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "reverie.dev",
    version = "v1alpha1",
    kind = "DreamSchedule",
    namespaced,
    status = "DreamScheduleStatus",
    shortname = "dsched",
    category = "reverie",
    printcolumn = r#"{"name":"Store","type":"string","jsonPath":".spec.storeRef.name"}"#,
    printcolumn = r#"{"name":"Stores","type":"integer","jsonPath":".status.stores"}"#,
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Suspend","type":"boolean","jsonPath":".spec.suspend"}"#,
    printcolumn = r#"{"name":"Approval","type":"string","jsonPath":".spec.approval.mode"}"#,
    printcolumn = r#"{"name":"Last Dream","type":"date","jsonPath":".status.lastDream"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.storeRef) != has(self.storeSelector)").message("exactly one of storeRef or storeSelector must be set"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.window) || has(self.storeSelector)").message("window is only allowed with storeSelector (a storeRef schedule runs as a CronJob)"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.budget) || has(self.llm)").message("budget limits the LLM pass and needs llm"))]
pub struct DreamScheduleSpec {
    /// The one store to dream over (a CronJob runs its dreams).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_ref: Option<LocalRef>,
    /// The stores of this namespace to dream over, by label (the controller
    /// runs one dream per selected store per cycle). A namespaced schedule
    /// never reaches stores of another namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_selector: Option<LabelSelector>,
    /// With `storeSelector`: how long after each cron tick the selected
    /// stores' dreams are spread over (`30s`, `90m`, `2h`); each store's
    /// place in the window is a hash of its namespace and name, so it is
    /// the same every cycle. Absent or `0s`: all at the tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 16))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^[0-9]+(s|m|h)$')").message("window must be a duration such as 40s, 30m or 2h"))]
    pub window: Option<String>,
    /// With `storeSelector`: no dream for a store that has had no new
    /// session since its last dream (`dream-now` still dreams every store).
    #[serde(default = "default_skip_idle")]
    pub skip_idle: bool,
    /// With `llm`: how many tokens the schedule's LLM passes may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// Cron schedule (5 fields, or a macro such as `@daily`).
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = kube::core::Rule::new("self.matches('^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|\\\\S+\\\\s+\\\\S+\\\\s+\\\\S+\\\\s+\\\\S+\\\\s+\\\\S+)$')").message("schedule must be a cron expression of 5 fields (e.g. '0 3 * * *') or a macro such as @daily"))]
    pub schedule: String,
    /// IANA time zone of the schedule, e.g. `Europe/Berlin`; the controller
    /// manager's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub time_zone: Option<String>,
    /// Stop scheduling dreams (running ones finish).
    #[serde(default)]
    pub suspend: bool,
    /// Which sessions a dream reads.
    #[serde(default)]
    pub sessions: SessionSelection,
    /// Instructions for the dream, added to the store's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16384))]
    pub instructions: Option<String>,
    /// Who approves the patches.
    #[serde(default)]
    pub approval: Approval,
    /// An optional LLM pass after the deterministic analyses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<ModelSpec>,
    /// What to do when the previous dream still runs.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// Finished dream jobs to keep.
    #[serde(default = "default_successful_history")]
    #[schemars(range(max = 100))]
    pub successful_jobs_history_limit: u32,
    /// Failed dream jobs to keep.
    #[serde(default = "default_failed_history")]
    #[schemars(range(max = 100))]
    pub failed_jobs_history_limit: u32,
}

/// Status of a DreamSchedule, written only by the controller.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DreamScheduleStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The CronJob that runs the dreams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron_job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_dream: Option<Time>,
    /// The MemoryPatch the last dream proposed, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_patch: Option<String>,
    /// The last `reverie.dev/dream-now` token acted on (a new token starts
    /// one more dream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_dream_now: Option<String>,
    /// With `storeSelector`: how many stores the selector matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stores: Option<u32>,
    /// With `storeSelector`: the earliest dream still to start (its slot in
    /// the current cycle, or the first slot of the next one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<Time>,
    /// With `storeSelector`: the current (most recent) cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_cycle: Option<CycleStatus>,
    /// With `budget`: LLM tokens the schedule's dreams used in the last hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_last_hour: Option<u64>,
}

/// One cycle of a multi-store schedule: when it started and where each
/// selected store's dream is.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CycleStatus {
    /// The cron tick that started the cycle.
    pub start: Time,
    /// Selected stores by where their dream of this cycle is.
    pub counts: CycleCounts,
}

/// Stores of a cycle by outcome; they add up to `status.stores`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CycleCounts {
    /// The dream finished.
    pub succeeded: u32,
    /// The dream's pod failed (the next cycle tries again).
    pub failed: u32,
    /// The dream's Job runs.
    pub running: u32,
    /// The store's slot has not come yet.
    pub pending: u32,
    /// Due, waiting for a place under the concurrency limits.
    pub queued: u32,
    /// No new session since the store's last dream: no dream this cycle.
    pub skipped_idle: u32,
    /// Due, waiting for the schedule's token budget.
    pub delayed_budget: u32,
}
