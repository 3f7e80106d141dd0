//! Keeping only what reconciles read in the controllers' watch streams and
//! reflector stores.
//!
//! A controller keeps every object of its main kind in memory (the reflector
//! store) and decodes every object of the kinds it watches. Much of what
//! the apiserver sends is never read by a reconcile: `metadata.managedFields`
//! (one entry per field manager, often larger than the spec) and the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation (a second
//! copy of the whole object). Dropping both before an object enters the
//! store is what keeps the operator's memory flat with many objects.
//!
//! Kinds that only trigger reconciles (owned Jobs, CronJobs, claims, the
//! model Secrets) are watched as metadata only ([`metadata_trigger`]): their
//! mappers read names, labels and owner references, and a metadata watch
//! never decodes a Secret's data or a Job's pod template.
//!
//! Every controller also runs at most [`CONCURRENCY`] reconciles at once.
//!
//! Trimming is on by default; `reverie controller --trim-managed-fields=false`
//! turns it off (for comparing memory with and without it).

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{Stream, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use serde::de::DeserializeOwned;

/// The annotation `kubectl apply` (client-side) keeps a full copy of the
/// object in; nothing in the operator reads it.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Process-wide switch, set once from the command line before the
/// controllers start (the controllers' streams have no other handle on the
/// command line, and the flag must not change `ControllerConfig`'s shape).
static ENABLED: AtomicBool = AtomicBool::new(true);

/// How many reconciles of one controller run at once. kube-runtime's
/// default is unbounded: a start with 10,000 Agents then runs 10,000
/// reconciles at once, each holding its requests and responses, and peak
/// memory grows with the number of objects instead of staying flat.
pub const CONCURRENCY: u16 = 32;

/// The runner settings of every controller: bounded concurrency.
pub fn controller_config() -> controller::Config {
    controller::Config::default().concurrency(CONCURRENCY)
}

/// Turns trimming on or off for controllers started afterwards.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether controllers started now trim their objects.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Drops what no reconcile reads from an object's metadata: managed fields
/// and the client-side-apply copy of the object.
pub fn metadata(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
        if a.is_empty() {
            meta.annotations = None;
        }
    }
}

/// [`metadata`] on any object.
pub fn object<K: Resource>(obj: &mut K) {
    metadata(obj.meta_mut());
}

/// The per-object function the watch streams apply: [`object`] when
/// trimming is enabled (read once, when the stream is built), else nothing.
pub fn trimmer<K: Resource>() -> impl FnMut(&mut K) + Send + Sync + Clone + 'static {
    let on = enabled();
    move |obj: &mut K| {
        if on {
            object(obj);
        }
    }
}

/// The main stream of a controller: `api` watched with `wc`, trimmed, and
/// reflected into a new store. Pass both to `Controller::for_stream`; the
/// store is the controller's (what `Controller::store` would return).
pub fn reflected<K>(
    api: Api<K>,
    wc: watcher::Config,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    reflected_with_parents(api, wc, |_: &K| None)
}

/// Like [`reflected`], but every change of an object also triggers the
/// object `parent` names (when it is in the store), for kinds whose objects
/// point at another object of the same kind (a child session names its
/// parent).
///
/// One watch does both, instead of a second watch of the same kind mapped
/// to parents: the parent is reconciled only after the child is in the
/// store, so a reconcile that reads its children from the store never
/// misses the change that triggered it.
pub fn reflected_with_parents<K, P>(
    api: Api<K>,
    wc: watcher::Config,
    parent: P,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone,
    P: Fn(&K) -> Option<ObjectRef<K>> + Send + 'static,
{
    let (reader, writer) = reflector::store();
    let store = reader.clone();
    let stream = watcher(api, wc)
        .modify(trimmer::<K>())
        .reflect(writer)
        .map_ok(move |event| {
            let (own, up) = match event {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                    let up = parent(&o);
                    (Some(o), up)
                }
                // A deleted object is not reconciled itself, but its parent is.
                watcher::Event::Delete(o) => (None, parent(&o)),
                watcher::Event::Init | watcher::Event::InitDone => (None, None),
            };
            let up = up.and_then(|r| store.get(&r)).map(|p| p.as_ref().clone());
            futures::stream::iter(own.into_iter().chain(up).map(Ok))
        })
        .try_flatten();
    (reader, stream)
}

/// A watched kind whose mapper reads its spec: full objects, trimmed, not
/// stored. For `Controller::watches_stream`.
pub fn trigger<K>(
    api: Api<K>,
    wc: watcher::Config,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    watcher(api, wc).modify(trimmer::<K>()).touched_objects()
}

/// An owned or watched kind of which reconciles only need to know that it
/// changed: metadata only (an `Api<PartialObjectMeta<K>>` makes
/// metadata-only requests), trimmed, not stored. For
/// `Controller::owns_stream` and `Controller::watches_stream`.
pub fn metadata_trigger<K>(
    api: Api<PartialObjectMeta<K>>,
    wc: watcher::Config,
) -> impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
where
    K: Resource + Clone + Debug + Send + Sync + 'static,
    K::DynamicType: Clone + Debug + Send + Sync,
{
    trigger(api, wc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use std::collections::BTreeMap;

    fn meta_with_everything() -> ObjectMeta {
        ObjectMeta {
            name: Some("a".into()),
            namespace: Some("ns".into()),
            labels: Some(BTreeMap::from([("app".into(), "x".into())])),
            annotations: Some(BTreeMap::from([
                (LAST_APPLIED.into(), "{\"big\":true}".into()),
                ("reverie.dev/approval".into(), "approved".into()),
            ])),
            managed_fields: Some(vec![ManagedFieldsEntry {
                manager: Some("kubectl".into()),
                ..Default::default()
            }]),
            resource_version: Some("7".into()),
            generation: Some(3),
            ..Default::default()
        }
    }

    #[test]
    fn drops_managed_fields_and_last_applied_and_keeps_the_rest() {
        let mut m = meta_with_everything();
        metadata(&mut m);
        assert_eq!(m.managed_fields, None);
        assert_eq!(
            m.annotations,
            Some(BTreeMap::from([(
                "reverie.dev/approval".to_string(),
                "approved".to_string()
            )]))
        );
        assert_eq!(m.name.as_deref(), Some("a"));
        assert_eq!(m.labels, meta_with_everything().labels);
        assert_eq!(m.resource_version.as_deref(), Some("7"));
        assert_eq!(m.generation, Some(3));
    }

    #[test]
    fn removes_an_annotation_map_left_empty() {
        let mut m = ObjectMeta {
            annotations: Some(BTreeMap::from([(LAST_APPLIED.into(), "{}".into())])),
            ..Default::default()
        };
        metadata(&mut m);
        assert_eq!(m.annotations, None);
    }

    #[test]
    fn trims_a_metadata_only_object() {
        let mut p: PartialObjectMeta<Job> = PartialObjectMeta {
            types: None,
            metadata: meta_with_everything(),
            _phantom: Default::default(),
        };
        object(&mut p);
        assert_eq!(p.metadata.managed_fields, None);
    }

    #[test]
    fn the_switch_decides_when_the_stream_is_built() {
        // Both states are checked in one test: the switch is process-wide.
        set_enabled(false);
        let mut off = trimmer::<Job>();
        set_enabled(true);
        let mut on = trimmer::<Job>();
        let mut a = Job {
            metadata: meta_with_everything(),
            ..Default::default()
        };
        let mut b = a.clone();
        off(&mut a);
        on(&mut b);
        assert!(a.metadata.managed_fields.is_some());
        assert!(b.metadata.managed_fields.is_none());
        assert!(enabled());
    }
}
