//! `reverie controller`: one kube-runtime Controller per kind (one file
//! each), sharing a [`Context`]. The controller never writes `spec`; it
//! writes `status` by server-side apply under [`FIELD_MANAGER`].

pub mod agent;
pub mod agentsession;
pub mod agentteam;
pub mod context;
pub mod leader;
pub mod metrics;
pub mod status;
pub mod trim;

// The dream loop: stores, schedules, patches and the pods they start.
pub mod clusterdreamschedule;
pub mod dreamschedule;
pub mod fleet;
pub mod jobs;
pub mod memorypatch;
pub mod memorystore;
pub mod publish;
pub mod scheduler;
pub mod workers;
pub mod writes;

pub use context::{Context, ControllerConfig};

/// The field manager of every write the controller makes.
pub const FIELD_MANAGER: &str = "reverie-controller";

/// What can stop or fail a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("serialising {what}: {source}")]
    Serialize {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Invalid(_) => "invalid",
            Error::Serialize { .. } => "serialize",
        }
    }
}

/// How long the dream-loop controllers wait before retrying a failed
/// reconcile.
pub(crate) const DREAM_LOOP_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// Logs a failed reconcile of `obj` (its namespace and name, the error and
/// its metric label) and retries after `after`: every controller's error
/// policy.
pub(crate) fn retry_after_error<K: kube::Resource>(
    obj: &K,
    err: &Error,
    after: std::time::Duration,
) -> kube::runtime::controller::Action {
    use kube::ResourceExt;
    tracing::warn!(
        namespace = obj.namespace().unwrap_or_default(),
        name = obj.name_any(),
        error = %err,
        label = err.metric_label(),
        "reconcile failed"
    );
    kube::runtime::controller::Action::requeue(after)
}

/// Runs every controller until one of them stops (which only happens when
/// the API is gone for good) or the process is signalled.
pub async fn run(ctx: std::sync::Arc<Context>) -> Result<(), Error> {
    // Each kind's module adds its `run(ctx)` future here.
    let mut controllers: Vec<futures::future::BoxFuture<'static, ()>> = vec![];
    controllers.extend(agents_controllers(ctx.clone()));
    controllers.extend(dream_loop_controllers(ctx.clone()));
    futures::future::join_all(controllers.into_iter().map(metrics::until_stopped)).await;
    Ok(())
}

/// The Agent, AgentTeam and AgentSession controllers, ready to be awaited.
pub fn agents_controllers(
    ctx: std::sync::Arc<Context>,
) -> Vec<futures::future::BoxFuture<'static, ()>> {
    vec![
        Box::pin(agent::run(ctx.clone())),
        Box::pin(agentteam::run(ctx.clone())),
        Box::pin(agentsession::run(ctx)),
    ]
}

/// The MemoryStore, DreamSchedule and MemoryPatch controllers (the dream
/// loop), ready to be awaited.
pub fn dream_loop_controllers(
    ctx: std::sync::Arc<Context>,
) -> Vec<futures::future::BoxFuture<'static, ()>> {
    use futures::FutureExt;
    vec![
        memorystore::run(ctx.clone()).boxed(),
        dreamschedule::run(ctx.clone()).boxed(),
        fleet::run(ctx.clone()).boxed(),
        clusterdreamschedule::run(ctx.clone()).boxed(),
        memorypatch::run(ctx).boxed(),
    ]
}
