//! Every write the controllers make goes through here, and each one first
//! compares with what is live, so an idle operator makes no API writes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource};
use serde::{de::DeserializeOwned, Serialize};

use super::jobs::{stamp_hash, up_to_date};
use super::{Error, FIELD_MANAGER};

/// Server-side applies `desired` unless the live object already carries
/// its hash. Returns whether it wrote.
pub async fn apply_if_changed<K>(api: &Api<K>, desired: K) -> Result<bool, Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let desired = stamp_hash(desired)?;
    let name = desired.meta().name.clone().unwrap_or_default();
    let existing = api.get_opt(&name).await?;
    if up_to_date(existing.as_ref(), &desired) {
        return Ok(false);
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await?;
    Ok(true)
}

/// Writes `status` to the status subresource of `obj` by server-side apply,
/// only when it differs from the live one. Returns whether it wrote.
pub async fn write_status<K, S>(
    api: &Api<K>,
    obj: &K,
    current: Option<&S>,
    status: &S,
) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(false);
    }
    let name = obj.meta().name.clone().unwrap_or_default();
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(true)
}

/// Records an Event on `obj` (best effort: a lost event is logged, not fatal).
pub async fn event<K: Resource<DynamicType = ()>>(
    client: &Client,
    obj: &K,
    warning: bool,
    reason: &str,
    note: String,
) {
    let recorder = Recorder::new(client.clone(), FIELD_MANAGER.into());
    let ev = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_string(),
        note: Some(note),
        action: "Reconcile".to_string(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &obj.object_ref(&())).await {
        tracing::warn!(
            name = obj.meta().name.as_deref().unwrap_or(""),
            error = %e,
            "could not record event"
        );
    }
}

/// The current time as a Kubernetes `Time` (the only wall clock reads of
/// the controllers, for condition transition times).
pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}
