//! The `ClusterDreamSchedule` controller: expands each cluster object into
//! one `DreamSchedule` per selected namespace (same name, `spec = template`,
//! owned by the cluster object, labelled [`CLUSTER_SCHEDULE_LABEL`]).
//!
//! Expansion instead of a second scheduler: the fleet loop already drives
//! every multi-store DreamSchedule with cluster-wide limits and a fair
//! queue, so the generated schedules are scheduled exactly like hand-written
//! ones. A namespace that stops matching loses its schedule; a same-named
//! DreamSchedule the cluster object does not own is never taken over.

use super::agent::{shared_error_policy, watched_api};
use super::jobs::{owner_ref, stamp_hash, up_to_date, MANAGED_BY};
use super::scheduler::selector_matches;
use super::status::{conditions, Health};
use super::writes::{now, write_status};
use super::{trim, Context, Error, FIELD_MANAGER};
use crate::api::{
    ClusterDreamSchedule, ClusterDreamScheduleStatus, CycleCounts, DreamSchedule,
    CLUSTER_SCHEDULE_LABEL,
};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::ResourceExt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// How often a stalled cluster schedule is looked at again (a person may
/// have deleted the DreamSchedule that took its name).
const STALLED_RECHECK: Duration = Duration::from_secs(30);

/// The DreamSchedule generated for `cds` in `namespace`.
pub fn generated_schedule(
    cds: &ClusterDreamSchedule,
    namespace: &str,
) -> Result<DreamSchedule, Error> {
    let name = cds.name_any();
    Ok(DreamSchedule {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    MANAGED_BY.to_string(),
                ),
                (CLUSTER_SCHEDULE_LABEL.to_string(), name),
            ])),
            // A namespaced object may be owned by a cluster-scoped one; the
            // garbage collector deletes it with the cluster object.
            owner_references: Some(vec![owner_ref(cds)?]),
            ..Default::default()
        },
        spec: cds.spec.template.clone(),
        status: None,
    })
}

/// Whether `ds` is owned by the cluster object with `uid`.
fn owned_by(ds: &DreamSchedule, uid: &str) -> bool {
    ds.owner_references()
        .iter()
        .any(|o| o.kind == "ClusterDreamSchedule" && o.uid == uid)
}

/// The namespaces `cds` selects, sorted: of all namespaces, or only the
/// controller's when it watches one.
async fn selected_namespaces(
    cds: &ClusterDreamSchedule,
    ctx: &Context,
) -> Result<BTreeSet<String>, Error> {
    let api: Api<Namespace> = Api::all(ctx.client.clone());
    let candidates: Vec<PartialObjectMeta<Namespace>> = match &ctx.config.namespace {
        Some(ns) => api.get_metadata_opt(ns).await?.into_iter().collect(),
        None => api.list_metadata(&ListParams::default()).await?.items,
    };
    let empty = BTreeMap::new();
    Ok(candidates
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .filter(|n| {
            selector_matches(
                &cds.spec.namespace_selector,
                n.metadata.labels.as_ref().unwrap_or(&empty),
            )
        })
        .map(|n| n.name_any())
        .collect())
}

/// Adds the counts of one cycle to `sum`.
fn add_counts(sum: &mut CycleCounts, c: &CycleCounts) {
    sum.succeeded += c.succeeded;
    sum.failed += c.failed;
    sum.running += c.running;
    sum.pending += c.pending;
    sum.queued += c.queued;
    sum.skipped_idle += c.skipped_idle;
    sum.delayed_budget += c.delayed_budget;
}

async fn reconcile(cds: Arc<ClusterDreamSchedule>, ctx: Arc<Context>) -> Result<Action, Error> {
    if cds.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes the generated schedules.
        return Ok(Action::await_change());
    }
    let name = cds.name_any();
    let uid = cds
        .uid()
        .ok_or_else(|| Error::Invalid(format!("ClusterDreamSchedule {name} has no uid yet")))?;
    let wanted = selected_namespaces(&cds, &ctx).await?;

    // Generated schedules that exist now, by namespace.
    let all = watched_api::<DreamSchedule>(&ctx);
    let existing = all
        .list(&ListParams::default().labels(&format!("{CLUSTER_SCHEDULE_LABEL}={name}")))
        .await?;
    // The listed schedules spare one GET per namespace on every reconcile
    // (each child status change triggers one).
    let mut owned: BTreeMap<String, DreamSchedule> = BTreeMap::new();
    for ds in existing.items.into_iter().filter(|d| owned_by(d, &uid)) {
        let ns = ds.namespace().unwrap_or_default();
        if wanted.contains(&ns) {
            owned.insert(ns, ds);
        } else {
            let api: Api<DreamSchedule> = Api::namespaced(ctx.client.clone(), &ns);
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {
                    tracing::info!(%ns, %name, "namespace no longer selected: schedule deleted")
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    let mut schedules = Vec::new();
    let mut taken = Vec::new();
    let mut stores = 0u32;
    let mut cycle: Option<CycleCounts> = None;
    for ns in &wanted {
        let api: Api<DreamSchedule> = Api::namespaced(ctx.client.clone(), ns);
        let live = match owned.remove(ns) {
            Some(ds) => Some(ds),
            // Not listed as ours: free, or taken by a schedule we must not touch.
            None => match api.get_opt(&name).await? {
                Some(ds) if !owned_by(&ds, &uid) => {
                    taken.push(format!("{ns}/{name}"));
                    continue;
                }
                other => other,
            },
        };
        let desired = stamp_hash(generated_schedule(&cds, ns)?)?;
        if !up_to_date(live.as_ref(), &desired) {
            api.patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&desired),
            )
            .await?;
            tracing::info!(%ns, %name, "generated schedule applied");
        }
        if let Some(st) = live.and_then(|d| d.status) {
            stores += st.stores.unwrap_or(0);
            if let Some(c) = st.last_cycle {
                add_counts(cycle.get_or_insert_with(CycleCounts::default), &c.counts);
            }
        }
        schedules.push(format!("{ns}/{name}"));
    }

    let health = if !taken.is_empty() {
        Health::stalled(
            "NameTaken",
            format!(
                "DreamSchedule {} exists and is not owned by ClusterDreamSchedule {name}; rename or delete it",
                taken.join(", ")
            ),
        )
    } else {
        Health::ready(
            "SchedulesApplied",
            format!("{} namespace(s) selected", wanted.len()),
        )
    };
    let old = cds.status.clone().unwrap_or_default();
    let status = ClusterDreamScheduleStatus {
        observed_generation: cds.metadata.generation,
        conditions: conditions(&health, cds.metadata.generation, &old.conditions, &now()),
        namespaces: Some(wanted.len() as u32),
        schedules,
        stores: Some(stores),
        last_cycle: cycle,
    };
    let api: Api<ClusterDreamSchedule> = Api::all(ctx.client.clone());
    write_status(&api, cds.as_ref(), cds.status.as_ref(), &status).await?;
    Ok(match health {
        Health::Ready { .. } => Action::await_change(),
        _ => Action::requeue(STALLED_RECHECK),
    })
}

/// Runs the ClusterDreamSchedule controller until the watch ends.
pub async fn run(ctx: Arc<Context>) {
    let (store, cluster_schedules) = trim::reflected(
        Api::<ClusterDreamSchedule>::all(ctx.client.clone()),
        watcher::Config::default(),
    );
    // Namespaces as metadata only: their labels decide the selection.
    let ns_config = match &ctx.config.namespace {
        Some(ns) => watcher::Config::default().fields(&format!("metadata.name={ns}")),
        None => watcher::Config::default(),
    };
    let namespaces = trim::metadata_trigger(
        Api::<PartialObjectMeta<Namespace>>::all(ctx.client.clone()),
        ns_config,
    );
    let schedules_api = watched_api::<PartialObjectMeta<DreamSchedule>>(&ctx);
    let schedules = trim::metadata_trigger(
        schedules_api,
        watcher::Config::default().labels(CLUSTER_SCHEDULE_LABEL),
    );
    let all = store.clone();
    Controller::for_stream(cluster_schedules, store)
        .with_config(trim::controller_config())
        // Any namespace change may change any selection.
        .watches_stream(namespaces, move |_: PartialObjectMeta<Namespace>| {
            all.state()
                .iter()
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect::<Vec<_>>()
        })
        // Generated schedules, by label: `owns` would look the cluster-scoped
        // owner up in the child's namespace.
        .watches_stream(schedules, |d: PartialObjectMeta<DreamSchedule>| {
            d.labels()
                .get(CLUSTER_SCHEDULE_LABEL)
                .map(|n| ObjectRef::<ClusterDreamSchedule>::new(n))
        })
        .shutdown_on_signal()
        .run(
            super::metrics::observe("clusterdreamschedule", reconcile),
            shared_error_policy,
            ctx,
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!("clusterdreamschedule controller: {e}");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ClusterDreamScheduleSpec;

    fn cds() -> ClusterDreamSchedule {
        let spec: ClusterDreamScheduleSpec = serde_json::from_value(serde_json::json!({
            "namespaceSelector": {"matchLabels": {"tier": "gold"}},
            "template": {"schedule": "@daily", "storeSelector": {"matchLabels": {"dream": "yes"}}, "window": "1h"}
        }))
        .expect("spec");
        let mut c = ClusterDreamSchedule::new("nightly", spec);
        c.metadata.uid = Some("u1".into());
        c
    }

    #[test]
    fn generated_schedule_copies_the_template_and_is_owned_and_labelled() {
        let c = cds();
        let ds = generated_schedule(&c, "team-a").expect("generated");
        assert_eq!(ds.metadata.name.as_deref(), Some("nightly"));
        assert_eq!(ds.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(ds.spec, c.spec.template);
        assert_eq!(ds.labels()[CLUSTER_SCHEDULE_LABEL], "nightly");
        let owner = &ds.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("ClusterDreamSchedule", "u1", Some(true))
        );
        assert!(owned_by(&ds, "u1"));
        assert!(!owned_by(&ds, "u2"));
    }

    #[test]
    fn without_a_uid_there_is_no_owner_and_no_schedule() {
        let mut c = cds();
        c.metadata.uid = None;
        assert!(generated_schedule(&c, "team-a").is_err());
    }

    #[test]
    fn counts_add_up_field_by_field() {
        let mut sum = CycleCounts::default();
        let one = CycleCounts {
            succeeded: 1,
            failed: 2,
            running: 3,
            pending: 4,
            queued: 5,
            skipped_idle: 6,
            delayed_budget: 7,
        };
        add_counts(&mut sum, &one);
        add_counts(&mut sum, &one);
        assert_eq!(
            sum,
            CycleCounts {
                succeeded: 2,
                failed: 4,
                running: 6,
                pending: 8,
                queued: 10,
                skipped_idle: 12,
                delayed_budget: 14,
            }
        );
    }
}
