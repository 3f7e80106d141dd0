//! The `Agent` controller: checks what an Agent references (the model
//! Secret and its key, the memory stores) and reports `Ready`, or `Stalled`
//! naming the missing thing. Also home of the small helpers the agents'
//! controllers share (status apply, events, watched APIs).

use super::status::{conditions, Health};
use super::{trim, Context, Error, FIELD_MANAGER};
use crate::api::{Agent, AgentSpec, AgentStatus, MemoryStore};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

/// How often a Stalled object is looked at again even without a change.
pub(crate) const STALLED_RECHECK: Duration = Duration::from_secs(30);

/// The API of kind `K` in the watched namespace, or in all namespaces.
pub(crate) fn watched_api<K>(ctx: &Context) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match &ctx.config.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    }
}

/// Writes `status` of `obj` by server-side apply under [`FIELD_MANAGER`].
pub(crate) async fn apply_status<K>(
    api: &Api<K>,
    obj: &K,
    status: &impl serde::Serialize,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// Publishes an Event about `obj`; failures are logged, never fatal.
pub(crate) async fn publish<K>(ctx: &Context, obj: &K, warning: bool, reason: &str, note: String)
where
    K: Resource<DynamicType = ()>,
{
    let recorder = Recorder::new(
        ctx.client.clone(),
        Reporter {
            controller: FIELD_MANAGER.into(),
            instance: None,
        },
    );
    let ev = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &obj.object_ref(&())).await {
        tracing::warn!(object = %obj.meta().name.as_deref().unwrap_or(""), "cannot publish an event: {e}");
    }
}

/// The current time, for condition transitions.
pub(crate) fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// The Ready condition's status (`True`/`False`), if any.
pub(crate) fn ready_status(conds: &[Condition]) -> Option<&str> {
    conds
        .iter()
        .find(|c| c.type_ == crate::api::condition::READY)
        .map(|c| c.status.as_str())
}

/// Checks that everything `spec` references exists in `ns`.
pub async fn check_agent(
    client: &kube::Client,
    ns: &str,
    spec: &AgentSpec,
) -> Result<Health, Error> {
    let r = &spec.model.api_key_secret_ref;
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(&r.name)
        .await?;
    let Some(secret) = secret else {
        return Ok(Health::stalled(
            "SecretNotFound",
            format!("Secret {} (key {}) not found", r.name, r.key),
        ));
    };
    let has_key = secret.data.as_ref().is_some_and(|d| d.contains_key(&r.key))
        || secret
            .string_data
            .as_ref()
            .is_some_and(|d| d.contains_key(&r.key));
    if !has_key {
        return Ok(Health::stalled(
            "SecretKeyNotFound",
            format!("Secret {} has no key {}", r.name, r.key),
        ));
    }
    let stores = Api::<MemoryStore>::namespaced(client.clone(), ns);
    for m in &spec.memory {
        if stores.get_opt(&m.store_ref.name).await?.is_none() {
            return Ok(Health::stalled(
                "MemoryStoreNotFound",
                format!("MemoryStore {} not found", m.store_ref.name),
            ));
        }
    }
    Ok(Health::ready(
        "ReferencesFound",
        format!(
            "Secret {} and {} memory store(s) found",
            r.name,
            spec.memory.len()
        ),
    ))
}

async fn reconcile(agent: Arc<Agent>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = agent.namespace().unwrap_or_default();
    let health = check_agent(&ctx.client, &ns, &agent.spec).await?;
    let old = agent.status.clone().unwrap_or_default();
    let status = AgentStatus {
        observed_generation: agent.metadata.generation,
        conditions: conditions(&health, agent.metadata.generation, &old.conditions, &now()),
    };
    if status != old {
        let api: Api<Agent> = Api::namespaced(ctx.client.clone(), &ns);
        apply_status(&api, agent.as_ref(), &status).await?;
        if ready_status(&status.conditions) != ready_status(&old.conditions) {
            let (warning, reason, note) = match &health {
                Health::Ready { reason, message } => (false, reason, message),
                Health::Reconciling { reason, message } | Health::Stalled { reason, message } => {
                    (true, reason, message)
                }
            };
            publish(ctx.as_ref(), agent.as_ref(), warning, reason, note.clone()).await;
        }
    }
    Ok(match health {
        Health::Ready { .. } => Action::await_change(),
        _ => Action::requeue(STALLED_RECHECK),
    })
}

/// Logs a failed reconcile and retries it shortly.
pub(crate) fn shared_error_policy<K: Resource>(
    obj: Arc<K>,
    err: &Error,
    _ctx: Arc<Context>,
) -> Action {
    super::retry_after_error(obj.as_ref(), err, Duration::from_secs(5))
}

/// Runs the Agent controller until the watch ends.
pub async fn run(ctx: Arc<Context>) {
    // Trimmed streams (see `trim`): Secrets as metadata only, never their data.
    let (store, agents) = trim::reflected(watched_api::<Agent>(&ctx), watcher::Config::default());
    let secrets = trim::metadata_trigger(
        watched_api::<PartialObjectMeta<Secret>>(&ctx),
        watcher::Config::default(),
    );
    let stores = trim::metadata_trigger(
        watched_api::<PartialObjectMeta<MemoryStore>>(&ctx),
        watcher::Config::default(),
    );
    let controller =
        Controller::for_stream(agents, store.clone()).with_config(trim::controller_config());
    let store2 = store.clone();
    controller
        // A Secret or MemoryStore appearing makes the Agents that name it Ready.
        .watches_stream(secrets, move |s: PartialObjectMeta<Secret>| {
            let (ns, name) = (s.namespace(), s.name_any());
            store
                .state()
                .into_iter()
                .filter(|a| a.namespace() == ns && a.spec.model.api_key_secret_ref.name == name)
                .map(|a| ObjectRef::from_obj(a.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches_stream(stores, move |m: PartialObjectMeta<MemoryStore>| {
            let (ns, name) = (m.namespace(), m.name_any());
            store2
                .state()
                .into_iter()
                .filter(|a| {
                    a.namespace() == ns && a.spec.memory.iter().any(|x| x.store_ref.name == name)
                })
                .map(|a| ObjectRef::from_obj(a.as_ref()))
                .collect::<Vec<_>>()
        })
        .shutdown_on_signal()
        .run(
            super::metrics::observe("agent", reconcile),
            shared_error_policy,
            ctx,
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!("agent controller: {e}");
            }
        })
        .await;
}
