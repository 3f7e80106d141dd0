//! `kubectl reverie status dreamschedule/NAME`: a schedule's last cycle and,
//! for a multi-store schedule, every selected store's next run, computed
//! with the controller's own placement ([`crate::controller::scheduler`]).

use chrono::{DateTime, Utc};
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use serde::Serialize;

use super::status::{table, ConditionRow};
use crate::api::{CycleCounts, DreamSchedule, MemoryStore};
use crate::controller::scheduler::{self, Cron};

/// One selected store and its next dream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreRun {
    pub store: String,
    pub next_run: String,
}

/// What `status dreamschedule/NAME` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleReport {
    pub name: String,
    pub namespace: String,
    pub schedule: String,
    /// `store NAME` or the selector, as text.
    pub selects: String,
    pub window: String,
    pub stores: u32,
    pub cycle_start: Option<String>,
    pub counts: Option<CycleCounts>,
    pub next_run: Option<String>,
    pub conditions: Vec<ConditionRow>,
    /// Multi-store schedules: each selected store's next run, soonest first.
    pub runs: Vec<StoreRun>,
    /// Why `runs` is empty when it is (a storeRef schedule, a bad spec).
    pub note: Option<String>,
}

fn selector_text(s: &DreamSchedule) -> String {
    if let Some(r) = &s.spec.store_ref {
        return format!("store {}", r.name);
    }
    let sel = s.spec.store_selector.clone().unwrap_or_default();
    let mut parts: Vec<String> = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    parts.extend(sel.match_expressions.iter().flatten().map(|e| {
        format!(
            "{} {} ({})",
            e.key,
            e.operator,
            e.values.clone().unwrap_or_default().join(",")
        )
    }));
    if parts.is_empty() {
        "every store of the namespace".to_string()
    } else {
        format!("stores with {}", parts.join(", "))
    }
}

/// The report of `schedule` with `stores` (the namespace's stores), at `now`.
pub fn schedule_report(
    schedule: &DreamSchedule,
    stores: &[MemoryStore],
    now: DateTime<Utc>,
) -> ScheduleReport {
    let ns = schedule.namespace().unwrap_or_default();
    let status = schedule.status.clone().unwrap_or_default();
    let mut report = ScheduleReport {
        name: schedule.name_any(),
        namespace: ns.clone(),
        schedule: schedule.spec.schedule.clone(),
        selects: selector_text(schedule),
        window: schedule
            .spec
            .window
            .clone()
            .unwrap_or_else(|| "0s".to_string()),
        stores: status
            .stores
            .unwrap_or(u32::from(schedule.spec.store_ref.is_some())),
        cycle_start: status.last_cycle.as_ref().map(|c| c.start.0.to_string()),
        counts: status.last_cycle.as_ref().map(|c| c.counts.clone()),
        next_run: status.next_run.as_ref().map(|t| t.0.to_string()),
        conditions: super::status::condition_rows(&status.conditions),
        runs: Vec::new(),
        note: None,
    };
    let Some(selector) = &schedule.spec.store_selector else {
        report.note = Some(format!(
            "runs as CronJob {}",
            status
                .cron_job
                .unwrap_or_else(|| "(not created yet)".to_string())
        ));
        return report;
    };
    let plan = Cron::parse(&schedule.spec.schedule).and_then(|cron| {
        Ok((
            cron,
            scheduler::parse_window(schedule.spec.window.as_deref())?,
        ))
    });
    let (cron, window) = match plan {
        Ok(p) => p,
        Err(why) => {
            report.note = Some(format!("no runs: {why}"));
            return report;
        }
    };
    let selected: Vec<(String, String)> = stores
        .iter()
        .filter(|s| s.namespace().as_deref() == Some(ns.as_str()))
        .filter(|s| scheduler::selector_matches(selector, s.labels()))
        .map(|s| (ns.clone(), s.name_any()))
        .collect();
    report.runs = scheduler::next_runs(
        &cron,
        window,
        now,
        selected.iter().map(|(n, s)| (n.as_str(), s.as_str())),
    )
    .into_iter()
    .map(|(_, store, at)| StoreRun {
        store,
        next_run: at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })
    .collect();
    if schedule.spec.suspend {
        report.note = Some("suspended: these runs start only when resumed".to_string());
    }
    report
}

/// The table text of a schedule report.
pub fn render_schedule_report(r: &ScheduleReport) -> String {
    let mut out = format!(
        "DreamSchedule {}/{}: {} at {:?}, window {}\n",
        r.namespace, r.name, r.selects, r.schedule, r.window
    );
    out.push_str(&format!("Stores selected: {}\n", r.stores));
    if let (Some(start), Some(c)) = (&r.cycle_start, &r.counts) {
        out.push_str(&format!(
            "Last cycle {start}: {} succeeded, {} failed, {} running, {} pending, {} queued, {} skipped idle, {} delayed by budget\n",
            c.succeeded, c.failed, c.running, c.pending, c.queued, c.skipped_idle, c.delayed_budget
        ));
    }
    if let Some(n) = &r.next_run {
        out.push_str(&format!("Next run: {n}\n"));
    }
    for c in &r.conditions {
        out.push_str(&format!(
            "{}={} {}: {}\n",
            c.type_, c.status, c.reason, c.message
        ));
    }
    if let Some(note) = &r.note {
        out.push_str(&format!("Note: {note}\n"));
    }
    if !r.runs.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = r
            .runs
            .iter()
            .map(|s| vec![s.store.clone(), s.next_run.clone()])
            .collect();
        out.push_str(&table(&["STORE", "NEXT RUN"], &rows));
    }
    out
}

/// Reads the schedule `name` and the namespace's stores; `None` when there
/// is no such schedule.
pub async fn read(
    client: &kube::Client,
    ns: &str,
    name: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<ScheduleReport>> {
    use anyhow::Context as _;
    let schedules: Api<DreamSchedule> = Api::namespaced(client.clone(), ns);
    let Some(schedule) = schedules
        .get_opt(name)
        .await
        .with_context(|| format!("cannot read DreamSchedule {name} in namespace {ns}"))?
    else {
        return Ok(None);
    };
    let stores: Vec<MemoryStore> = if schedule.spec.store_selector.is_some() {
        Api::<MemoryStore>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .with_context(|| format!("cannot read MemoryStores in namespace {ns}"))?
            .items
    } else {
        Vec::new()
    };
    Ok(Some(schedule_report(&schedule, &stores, now)))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::controller::scheduler::utc as t;

    fn store(name: &str, tier: &str) -> MemoryStore {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "reverie.dev/v1alpha1", "kind": "MemoryStore",
            "metadata": {"name": name, "namespace": "ns", "labels": {"tier": tier}},
            "spec": {}
        }))
        .expect("store")
    }

    #[test]
    fn multi_store_report_lists_each_store_from_the_controller_placement() {
        let s: DreamSchedule = serde_json::from_value(serde_json::json!({
            "apiVersion": "reverie.dev/v1alpha1", "kind": "DreamSchedule",
            "metadata": {"name": "fleet", "namespace": "ns"},
            "spec": {"storeSelector": {"matchLabels": {"tier": "a"}}, "schedule": "0 2 * * *", "window": "2h"},
            "status": {"stores": 2, "lastCycle": {"start": "2026-11-30T02:00:00Z",
                "counts": {"succeeded": 1, "failed": 0, "running": 0, "pending": 0, "queued": 0, "skippedIdle": 1, "delayedBudget": 0}}}
        }))
        .expect("schedule");
        let stores = [store("x", "a"), store("y", "a"), store("z", "b")];
        let now = t("2026-11-30T12:00:00Z");
        let r = schedule_report(&s, &stores, now);
        assert_eq!(r.runs.len(), 2);
        for run in &r.runs {
            let want = scheduler::slot(
                t("2026-12-01T02:00:00Z"),
                "ns",
                &run.store,
                std::time::Duration::from_secs(7200),
            );
            assert_eq!(
                run.next_run,
                want.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            );
        }
        let text = render_schedule_report(&r);
        assert!(text.contains("stores with tier=a"), "{text}");
        assert!(
            text.contains("1 succeeded") && text.contains("1 skipped idle"),
            "{text}"
        );
        assert!(
            text.contains("STORE") && text.contains("NEXT RUN"),
            "{text}"
        );
        assert_eq!(r, schedule_report(&s, &stores, now), "deterministic");
    }

    #[test]
    fn single_store_report_points_at_the_cron_job() {
        let s: DreamSchedule = serde_json::from_value(serde_json::json!({
            "apiVersion": "reverie.dev/v1alpha1", "kind": "DreamSchedule",
            "metadata": {"name": "nightly", "namespace": "ns"},
            "spec": {"storeRef": {"name": "team"}, "schedule": "0 3 * * *"},
            "status": {"cronJob": "nightly-dream"}
        }))
        .expect("schedule");
        let r = schedule_report(&s, &[], t("2026-11-30T12:00:00Z"));
        assert_eq!(r.stores, 1);
        assert!(r.runs.is_empty());
        assert_eq!(r.note.as_deref(), Some("runs as CronJob nightly-dream"));
        assert!(render_schedule_report(&r).contains("store team"));
    }
}
