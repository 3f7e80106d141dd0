//! Prometheus metrics and the health endpoints of `reverie controller`:
//! `/metrics` (Prometheus text format 0.0.4), `/healthz` (the controllers'
//! loops still run) and `/readyz` (the client reaches the apiserver; with
//! leader election, whether this replica leads or stands by).
//!
//! One [`Metrics`] (one `prometheus_client` registry) per process, behind a
//! `OnceLock`: `/metrics` is a property of the process, and the figures are
//! recorded from places that have no common handle — the reconcile wrapper
//! that kube-runtime calls, the AgentSession controller (whose context is its
//! own type), the status transitions of stores and patches — so threading a
//! handle through every one of them would change signatures other parts own
//! for no gain. Tests use label values of their own, so a shared registry
//! does not make them interfere.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use futures::future::BoxFuture;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tracing::Instrument;

use super::Error;
use crate::api::{AgentSession, MemoryPatch, PatchOp, PatchPhase, Provider, SessionPhase, Usage};

/// `controller` and `outcome` (`ok` or `error`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerOutcome {
    controller: String,
    outcome: String,
}

/// `controller` and the error's `reason` ([`Error::metric_label`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerReason {
    controller: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabel {
    controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

/// `provider` and `direction` (`input` or `output`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderDirection {
    provider: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn reconcile_histogram() -> Histogram {
    // 5 ms … ~10 s: a reconcile is a handful of API calls.
    Histogram::new(exponential_buckets(0.005, 2.0, 12))
}

/// Every series the controller exports.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerOutcome, Counter>,
    reconcile_errors: Family<ControllerReason, Counter>,
    reconcile_duration: HistogramFamily<ControllerLabel>,
    dreams: Family<OutcomeLabel, Counter>,
    dream_duration: Histogram,
    memory_patches: Family<PhaseLabel, Gauge>,
    patch_ops: Family<ReasonLabel, Counter>,
    llm_tokens: Family<ProviderDirection, Counter>,
    llm_errors: Family<ProviderLabel, Counter>,
    /// The MemoryPatch controllers' caches (one in a deployed process);
    /// `reverie_memory_patches` is counted from them at each scrape, so
    /// deleted patches drop out.
    patch_stores: Mutex<Vec<Store<MemoryPatch>>>,
    /// What was counted lately (see [`Metrics::first_time`]).
    counted: Mutex<BTreeMap<String, Instant>>,
}

/// How long [`Metrics::first_time`] remembers a key: far longer than a
/// reflector cache lags behind the controller's own writes.
const REMEMBER: Duration = Duration::from_secs(15 * 60);

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<ControllerOutcome, Counter>::default();
        registry.register(
            "reverie_reconciles",
            "Reconciles per controller and outcome (ok or error)",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<ControllerReason, Counter>::default();
        registry.register(
            "reverie_reconcile_errors",
            "Failed reconciles per controller and error reason (kube, invalid, serialize)",
            reconcile_errors.clone(),
        );
        let reconcile_duration: HistogramFamily<ControllerLabel> =
            Family::new_with_constructor(reconcile_histogram);
        registry.register(
            "reverie_reconcile_duration_seconds",
            "Time one reconcile took, per controller",
            reconcile_duration.clone(),
        );
        let dreams = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "reverie_dreams",
            "Dream Jobs that finished, per outcome (succeeded or failed)",
            dreams.clone(),
        );
        // 1 s … ~34 min: a dream reads a whole store, maybe with an LLM pass.
        let dream_duration = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "reverie_dream_duration_seconds",
            "Run time of finished dream Jobs, from the Job's start to its completion",
            dream_duration.clone(),
        );
        let memory_patches = Family::<PhaseLabel, Gauge>::default();
        registry.register(
            "reverie_memory_patches",
            "MemoryPatches that exist now, per phase",
            memory_patches.clone(),
        );
        let patch_ops = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "reverie_patch_ops",
            "Ops of the patches that reached Applied, per reason",
            patch_ops.clone(),
        );
        let llm_tokens = Family::<ProviderDirection, Counter>::default();
        registry.register(
            "reverie_llm_tokens",
            "LLM tokens used by finished agent sessions and dreams, per provider and direction (input or output)",
            llm_tokens.clone(),
        );
        let llm_errors = Family::<ProviderLabel, Counter>::default();
        registry.register(
            "reverie_llm_errors",
            "LLM requests that failed for good (after retries) in finished agent sessions and dreams, per provider",
            llm_errors.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            dreams,
            dream_duration,
            memory_patches,
            patch_ops,
            llm_tokens,
            llm_errors,
            patch_stores: Mutex::new(Vec::new()),
            counted: Mutex::new(BTreeMap::new()),
        }
    }

    /// True the first time `key` is seen in [`REMEMBER`]. A transition is
    /// counted when the controller records it, but a reconcile that reads a
    /// cache not yet showing its own last write sees the same transition
    /// again; this keeps it from being counted twice. (After a restart the
    /// cache shows the recorded state, so there is no transition to count.)
    pub fn first_time(&self, key: &str) -> bool {
        let mut seen = lock(&self.counted);
        let now = Instant::now();
        seen.retain(|_, at| now.duration_since(*at) < REMEMBER);
        if seen.contains_key(key) {
            return false;
        }
        seen.insert(key.to_string(), now);
        true
    }

    /// Counts one reconcile of `controller` and how long it took.
    pub fn record_reconcile(&self, controller: &str, took: Duration, error: Option<&Error>) {
        let outcome = if error.is_some() { "error" } else { "ok" };
        self.reconciles
            .get_or_create(&ControllerOutcome {
                controller: controller.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        if let Some(e) = error {
            self.reconcile_errors
                .get_or_create(&ControllerReason {
                    controller: controller.to_string(),
                    reason: e.metric_label().to_string(),
                })
                .inc();
        }
        self.reconcile_duration
            .get_or_create(&ControllerLabel {
                controller: controller.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts one finished dream Job, `job` being its [`object_key`]; returns
    /// whether it was counted now (once per Job). `took` is `None` when the
    /// Job has no start time: it is counted, its duration is not observed.
    pub fn record_dream(&self, job: &str, succeeded: bool, took: Option<Duration>) -> bool {
        if !self.first_time(job) {
            return false;
        }
        let outcome = if succeeded { "succeeded" } else { "failed" };
        self.dreams
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
        if let Some(t) = took {
            self.dream_duration.observe(t.as_secs_f64());
        }
        true
    }

    /// Counts the ops of `patch`, which just reached `Applied`, by reason
    /// (once per patch).
    pub fn record_applied_ops(&self, patch: &MemoryPatch) {
        if !self.first_time(&object_key(patch)) {
            return;
        }
        for op in &patch.spec.ops {
            self.patch_ops
                .get_or_create(&ReasonLabel {
                    reason: op_reason(op),
                })
                .inc();
        }
    }

    /// Counts the LLM usage of one finished session or dream.
    pub fn record_llm(&self, provider: &str, input: u64, output: u64, errors: u64) {
        for (direction, n) in [("input", input), ("output", output)] {
            self.llm_tokens
                .get_or_create(&ProviderDirection {
                    provider: provider.to_string(),
                    direction: direction.to_string(),
                })
                .inc_by(n);
        }
        if errors > 0 {
            self.llm_errors
                .get_or_create(&ProviderLabel {
                    provider: provider.to_string(),
                })
                .inc_by(errors);
        }
    }

    /// Makes `reverie_memory_patches` count the patches in `store` too.
    pub fn watch_patches(&self, store: Store<MemoryPatch>) {
        lock(&self.patch_stores).push(store);
    }

    fn refresh_patch_phases(&self) {
        let stores = lock(&self.patch_stores).clone();
        if stores.is_empty() {
            return;
        }
        // By object, so a patch two caches hold counts once.
        let phases: BTreeMap<String, PatchPhase> = stores
            .iter()
            .flat_map(|s| s.state())
            .map(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase).unwrap_or_default();
                (object_key(p.as_ref()), phase)
            })
            .collect();
        let phases: Vec<PatchPhase> = phases.into_values().collect();
        for (label, n) in count_phases(&phases) {
            self.memory_patches
                .get_or_create(&PhaseLabel {
                    phase: label.to_string(),
                })
                .set(n);
        }
    }

    /// The metrics in the Prometheus text format (0.0.4), each family's
    /// series sorted by their labels so a scrape is deterministic.
    pub fn render(&self) -> String {
        self.refresh_patch_phases();
        let mut text = String::new();
        if prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry).is_err()
        {
            // Writing to a String cannot fail; an encoder error would be a
            // bug in a label value, and an empty scrape says so loudly.
            tracing::error!("encoding the metrics failed");
            return String::new();
        }
        sort_series(&text)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another thread panicked while holding it;
    // the value is still usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What identifies an object for [`Metrics::first_time`]: its kind and uid
/// (namespace and name when it has none, as in unit tests).
pub fn object_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    let id =
        obj.meta().uid.clone().unwrap_or_else(|| {
            format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
        });
    format!("{}/{id}", K::kind(&()))
}

/// The `reason` of an op as its serialised (kebab-case) name.
fn op_reason(op: &PatchOp) -> String {
    serde_json::to_value(op)
        .ok()
        .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string())
}

/// Every phase with how many of `phases` are in it (zeros included, so a
/// phase that empties shows 0 instead of its last value).
fn count_phases(phases: &[PatchPhase]) -> Vec<(&'static str, i64)> {
    [
        (PatchPhase::Pending, "Pending"),
        (PatchPhase::Approved, "Approved"),
        (PatchPhase::Rejected, "Rejected"),
        (PatchPhase::Applying, "Applying"),
        (PatchPhase::Applied, "Applied"),
        (PatchPhase::Conflicted, "Conflicted"),
        (PatchPhase::Failed, "Failed"),
    ]
    .into_iter()
    .map(|(phase, label)| {
        let n = phases.iter().filter(|p| **p == phase).count();
        (label, i64::try_from(n).unwrap_or(i64::MAX))
    })
    .collect()
}

/// Sorts the series of each family by their labels (without `le`), keeping
/// a histogram's own lines in order: the registry's families keep
/// registration order, but a family's series come out of a hash map.
fn sort_series(text: &str) -> String {
    fn key(line: &str) -> String {
        let labels = line
            .split_once('{')
            .and_then(|(_, rest)| rest.split_once('}'))
            .map_or("", |(l, _)| l);
        labels
            .split(',')
            .filter(|pair| !pair.starts_with("le="))
            .collect::<Vec<_>>()
            .join(",")
    }
    let mut out = String::with_capacity(text.len());
    let mut series: Vec<&str> = Vec::new();
    let flush = |series: &mut Vec<&str>, out: &mut String| {
        series.sort_by_key(|l| key(l));
        for l in series.drain(..) {
            out.push_str(l);
            out.push('\n');
        }
    };
    for line in text.lines() {
        if line.starts_with('#') {
            flush(&mut series, &mut out);
            out.push_str(line);
            out.push('\n');
        } else if !line.is_empty() {
            series.push(line);
        }
    }
    flush(&mut series, &mut out);
    out
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

/// Counts the LLM usage of `session`, which just reached `phase`
/// (recorded on the status transition the controller writes, once per
/// session): only a finished session with a known provider and a reported
/// usage counts.
pub fn record_finished_session(
    session: &AgentSession,
    phase: SessionPhase,
    provider: Option<Provider>,
    usage: Option<&Usage>,
) {
    let finished = matches!(phase, SessionPhase::Succeeded | SessionPhase::Failed);
    if let (true, Some(p), Some(u)) = (finished, provider, usage) {
        if !metrics().first_time(&object_key(session)) {
            return;
        }
        metrics().record_llm(provider_label(p), u.input_tokens, u.output_tokens, u.errors);
    }
}

/// The provider as it is spelled in the API (`anthropic`, `openai`).
pub fn provider_label(p: Provider) -> &'static str {
    match p {
        Provider::Anthropic => "anthropic",
        Provider::Openai => "openai",
    }
}

/// Wraps a reconcile function: each call runs in a `reconcile` span that
/// carries `controller`, `kind`, `namespace` and `name` (so every line it
/// logs names the object), and is counted and timed in the metrics.
pub fn observe<K, C, F, Fut>(
    controller: &'static str,
    reconcile: F,
) -> impl FnMut(Arc<K>, Arc<C>) -> BoxFuture<'static, Result<Action, Error>>
where
    K: Resource<DynamicType = ()>,
    F: Fn(Arc<K>, Arc<C>) -> Fut,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    move |obj, ctx| {
        let span = tracing::info_span!(
            "reconcile",
            controller,
            kind = %K::kind(&()),
            namespace = obj.namespace().unwrap_or_default(),
            name = obj.name_any(),
        );
        let work = reconcile(obj, ctx);
        Box::pin(
            async move {
                let start = Instant::now();
                let result = work.await;
                metrics().record_reconcile(controller, start.elapsed(), result.as_ref().err());
                result
            }
            .instrument(span),
        )
    }
}

/// Whether the controllers run under leader election, and this replica's
/// part in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// No leader election: this process reconciles.
    Single,
    /// Waiting for the lease; another replica reconciles.
    Standby,
    /// Holding the lease and reconciling.
    Leader,
}

static ROLE: AtomicU8 = AtomicU8::new(0);
static LOOP_STOPPED: AtomicBool = AtomicBool::new(false);

/// Records this replica's part in leader election (read by `/readyz`).
pub fn set_role(role: Role) {
    let v = match role {
        Role::Single => 0,
        Role::Standby => 1,
        Role::Leader => 2,
    };
    ROLE.store(v, Ordering::SeqCst);
}

/// This replica's part in leader election.
pub fn role() -> Role {
    match ROLE.load(Ordering::SeqCst) {
        1 => Role::Standby,
        2 => Role::Leader,
        _ => Role::Single,
    }
}

/// Runs one controller's loop; when it ends (it should not while the
/// process runs), `/healthz` fails so the pod is restarted.
pub async fn until_stopped<F: Future<Output = ()>>(controller_loop: F) {
    controller_loop.await;
    LOOP_STOPPED.store(true, Ordering::SeqCst);
    tracing::error!("a controller loop stopped; /healthz now fails");
}

/// The `/healthz` answer: 200 while every controller loop runs.
pub fn health() -> (StatusCode, &'static str) {
    if LOOP_STOPPED.load(Ordering::SeqCst) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "a controller loop has stopped\n",
        )
    } else {
        (StatusCode::OK, "ok\n")
    }
}

/// The `/readyz` body when the apiserver answered.
pub fn ready_body(role: Role) -> &'static str {
    match role {
        Role::Single => "ok\n",
        Role::Standby => "ok: standby\n",
        Role::Leader => "ok: leader\n",
    }
}

async fn metrics_handler() -> (StatusCode, [(&'static str, &'static str); 1], String) {
    (
        StatusCode::OK,
        [(
            "content-type",
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        metrics().render(),
    )
}

async fn healthz() -> (StatusCode, &'static str) {
    health()
}

async fn readyz(State(client): State<kube::Client>) -> (StatusCode, String) {
    match client.apiserver_version().await {
        Ok(_) => (StatusCode::OK, ready_body(role()).to_string()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the apiserver is not reachable: {e}\n"),
        ),
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until the process
/// stops.
pub async fn serve(addr: SocketAddr, client: kube::Client) -> Result<(), Error> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(client);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Invalid(format!("cannot listen on {addr} for metrics: {e}")))?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    axum::serve(listener, app)
        .await
        .map_err(|e| Error::Invalid(format!("metrics server on {addr} stopped: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_times_reconciles_per_controller_and_outcome() {
        let m = Metrics::new();
        m.record_reconcile("agent", Duration::from_millis(3), None);
        m.record_reconcile("agent", Duration::from_millis(30), None);
        let err = Error::Invalid("bad".to_string());
        m.record_reconcile("agent", Duration::from_millis(1), Some(&err));
        let text = m.render();
        assert!(
            text.contains("reverie_reconciles_total{controller=\"agent\",outcome=\"ok\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("reverie_reconciles_total{controller=\"agent\",outcome=\"error\"} 1\n")
        );
        assert!(text.contains(
            "reverie_reconcile_errors_total{controller=\"agent\",reason=\"invalid\"} 1\n"
        ));
        assert!(text.contains("reverie_reconcile_duration_seconds_count{controller=\"agent\"} 3\n"));
        assert!(text.contains(
            "reverie_reconcile_duration_seconds_bucket{controller=\"agent\",le=\"0.005\"} 2\n"
        ));
        assert!(text.contains("# TYPE reverie_reconcile_duration_seconds histogram\n"));
    }

    #[test]
    fn dreams_ops_and_llm_usage_are_counted() {
        let m = Metrics::new();
        m.record_dream("uid-1", true, Some(Duration::from_secs(3)));
        m.record_dream("uid-2", false, None);
        // The same Job seen again (a stale cache) is not counted twice.
        assert!(!m.record_dream("uid-1", true, Some(Duration::from_secs(3))));
        let op: PatchOp = serde_json::from_value(serde_json::json!(
            {"op": "delete", "path": "a.md", "id": "0123456789ab", "reason": "duplicate"}
        ))
        .unwrap();
        let patch: MemoryPatch = serde_json::from_value(serde_json::json!({
            "apiVersion": "reverie.dev/v1alpha1", "kind": "MemoryPatch",
            "metadata": {"name": "p1", "namespace": "ns", "uid": "u1"},
            "spec": {"storeRef": {"name": "team"}, "baseRevision": 0, "summary": "", "ops": [op.clone(), op]},
        }))
        .unwrap();
        m.record_applied_ops(&patch);
        m.record_applied_ops(&patch);
        m.record_llm("anthropic", 10, 4, 0);
        m.record_llm("anthropic", 1, 1, 2);
        let text = m.render();
        assert!(
            text.contains("reverie_dreams_total{outcome=\"succeeded\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("reverie_dreams_total{outcome=\"failed\"} 1\n"));
        assert!(text.contains("reverie_dream_duration_seconds_count 1\n"));
        assert!(text.contains("reverie_dream_duration_seconds_sum 3.0\n"));
        assert!(text.contains("reverie_patch_ops_total{reason=\"duplicate\"} 2\n"));
        assert!(text
            .contains("reverie_llm_tokens_total{provider=\"anthropic\",direction=\"input\"} 11\n"));
        assert!(text
            .contains("reverie_llm_tokens_total{provider=\"anthropic\",direction=\"output\"} 5\n"));
        assert!(text.contains("reverie_llm_errors_total{provider=\"anthropic\"} 2\n"));
    }

    #[test]
    fn scrape_is_sorted_and_repeatable() {
        let m = Metrics::new();
        for c in ["zeta", "alpha", "mid", "beta", "omega", "gamma"] {
            m.record_reconcile(c, Duration::from_millis(2), None);
        }
        let a = m.render();
        assert_eq!(a, m.render());
        let counts: Vec<&str> = a
            .lines()
            .filter(|l| l.starts_with("reverie_reconciles_total{"))
            .collect();
        let mut sorted = counts.clone();
        sorted.sort();
        assert_eq!(counts, sorted);
        // A histogram's buckets stay in `le` order, +Inf last.
        let buckets: Vec<&str> = a
            .lines()
            .filter(|l| {
                l.starts_with("reverie_reconcile_duration_seconds_bucket{controller=\"mid\"")
            })
            .collect();
        assert!(
            buckets.first().is_some_and(|l| l.contains("le=\"0.005\"")),
            "{a}"
        );
        assert!(buckets.last().is_some_and(|l| l.contains("le=\"+Inf\"")));
    }

    #[test]
    fn every_phase_is_counted_with_zeros() {
        let counts = count_phases(&[
            PatchPhase::Applied,
            PatchPhase::Applied,
            PatchPhase::Pending,
        ]);
        assert_eq!(counts.len(), 7);
        assert!(counts.contains(&("Applied", 2)));
        assert!(counts.contains(&("Pending", 1)));
        assert!(counts.contains(&("Failed", 0)));
    }

    #[tokio::test]
    async fn healthz_fails_once_a_controller_loop_stops() {
        assert_eq!(health().0, StatusCode::OK);
        until_stopped(async {}).await;
        let (code, body) = health();
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("stopped"));
    }

    #[test]
    fn readyz_body_names_the_role() {
        assert_eq!(ready_body(Role::Leader), "ok: leader\n");
        assert_eq!(ready_body(Role::Standby), "ok: standby\n");
        assert_eq!(ready_body(Role::Single), "ok\n");
    }
}
