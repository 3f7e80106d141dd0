//! Cluster-level scheduling of dreams on the real control plane: one
//! `DreamSchedule` selects 50 stores by label, spreads their dreams over a
//! 20-second window of a once-a-minute cron, and the controller (the real
//! `reverie controller` binary, `--max-concurrent-dreams 3`) never runs more
//! than 3 dream pods at once. Every store dreams once per cycle at the same
//! place in the window, a store labelled mid-cycle joins, and an idle store
//! is skipped.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::node::TestNode;
use common::reverie::{is_ready, ControllerProcess};
use common::{eventually, ControlPlane};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use reverie::api::{DreamSchedule, MemoryStore};

const STORES: usize = 50;
const LIMIT: usize = 3;

fn store_yaml(name: &str, labelled: bool) -> String {
    let labels = if labelled {
        "\n  labels: {tier: fleet}"
    } else {
        ""
    };
    format!("apiVersion: reverie.dev/v1alpha1\nkind: MemoryStore\nmetadata:\n  name: {name}{labels}\nspec:\n  deletionPolicy: Delete\n  storage: {{size: 10Mi}}\n---\n")
}

fn time(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&t.0.to_string())
        .expect("time")
        .with_timezone(&Utc)
}

/// Dream Jobs of the schedule by run label → store → slot offset from the
/// cycle start (ms) and creation time.
async fn runs(
    cp: &ControlPlane,
    ns: &str,
) -> BTreeMap<String, BTreeMap<String, (i64, DateTime<Utc>)>> {
    let jobs: Api<Job> = Api::namespaced(cp.client(), ns);
    let mut out: BTreeMap<String, BTreeMap<String, (i64, DateTime<Utc>)>> = BTreeMap::new();
    for j in jobs
        .list(&ListParams::default().labels("reverie.dev/schedule=fleet"))
        .await
        .expect("list jobs")
    {
        let run = j
            .labels()
            .get("reverie.dev/run")
            .cloned()
            .expect("run label");
        let store = j
            .labels()
            .get("reverie.dev/store")
            .cloned()
            .expect("store label");
        let start: i64 = run.trim_start_matches('c').parse().expect("cycle run");
        let slot = j
            .annotations()
            .get("reverie.dev/slot")
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .expect("slot annotation");
        let created = time(j.metadata.creation_timestamp.as_ref().expect("created"));
        let previous = out.entry(run.clone()).or_default().insert(
            store.clone(),
            (slot.timestamp_millis() - start * 1000, created),
        );
        assert!(
            previous.is_none(),
            "store {store} has two Jobs in run {run}"
        );
    }
    out
}

/// Waits until the schedule reports a finished cycle that starts after
/// `after`, in which `want` stores succeeded; returns its start.
async fn finished_cycle(
    cp: &ControlPlane,
    ns: &str,
    after: DateTime<Utc>,
    want: u32,
) -> DateTime<Utc> {
    let api: Api<DreamSchedule> = Api::namespaced(cp.client(), ns);
    eventually(
        &format!("a cycle after {after} with {want} dreams succeeded"),
        Duration::from_secs(150),
        || async {
            let s = api.get("fleet").await.map_err(|e| e.to_string())?;
            let status = s.status.clone().unwrap_or_default();
            let cycle = status.last_cycle.clone().ok_or("no cycle yet")?;
            let start = time(&cycle.start);
            let c = &cycle.counts;
            if start > after
                && c.succeeded == want
                && c.running == 0
                && c.queued == 0
                && c.pending == 0
            {
                Ok(start)
            } else {
                Err(format!("stores {:?}, cycle {start}: {c:?}", status.stores))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_stores_dream_once_per_cycle_under_the_cluster_limit() {
    let cp = ControlPlane::shared().await;
    let _node = TestNode::shared().await;
    cp.install_crds().await;
    let ns = cp.create_namespace("fleet").await;
    let limit = LIMIT.to_string();
    let _controller = ControllerProcess::start(
        cp,
        &ns,
        &["--max-concurrent-dreams", limit.as_str()],
        "info",
    );

    // 50 labelled stores and one that is labelled later, each with a small
    // memory and no sessions (a dream takes a fraction of a second, so the
    // test measures scheduling, not dreaming).
    let names: Vec<String> = (0..STORES).map(|i| format!("s{i:02}")).collect();
    let mut yaml = String::new();
    for n in names.iter().map(String::as_str).chain(["late"]) {
        let dir = cp.pvc_dir(&ns, &format!("{n}-memory")).join("memories");
        std::fs::create_dir_all(&dir).expect("seed dir");
        std::fs::write(dir.join("notes.md"), format!("- Store {n} logs in UTC.\n")).expect("seed");
        yaml.push_str(&store_yaml(n, n != "late"));
    }
    cp.apply_yaml(&ns, &yaml);
    let stores: Api<MemoryStore> = Api::namespaced(cp.client(), &ns);
    eventually("all stores Ready", Duration::from_secs(90), || async {
        let list = stores
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let ready = list
            .items
            .iter()
            .filter(|s| is_ready(s.status.as_ref().map(|s| s.conditions.as_slice())))
            .count();
        (ready == STORES + 1)
            .then_some(())
            .ok_or(format!("{ready} ready"))
    })
    .await;

    // Sample the dream pods' phases every 200 ms for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let max_active = Arc::new(AtomicUsize::new(0));
    let samples = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, max_active, samples) = (stop.clone(), max_active.clone(), samples.clone());
        let pods: Api<Pod> = Api::namespaced(cp.client(), &ns);
        tokio::spawn(async move {
            let mut worst = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                if let Ok(list) = pods
                    .list(&ListParams::default().labels("reverie.dev/role=dream"))
                    .await
                {
                    let active: Vec<String> = list
                        .items
                        .iter()
                        .filter(|p| {
                            !matches!(
                                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                                Some("Succeeded") | Some("Failed")
                            )
                        })
                        .map(|p| p.name_any())
                        .collect();
                    samples.fetch_add(1, Ordering::SeqCst);
                    if active.len() > max_active.fetch_max(active.len(), Ordering::SeqCst) {
                        worst = active;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            worst
        })
    };

    // Every minute, spread over 20 s. Idle stores are dreamt in the first
    // cycles (skipIdle is switched on below).
    cp.apply_yaml(
        &ns,
        "apiVersion: reverie.dev/v1alpha1\nkind: DreamSchedule\nmetadata: {name: fleet}\nspec:\n  storeSelector: {matchLabels: {tier: fleet}}\n  schedule: '* * * * *'\n  window: 20s\n  skipIdle: false\n",
    );
    let schedules: Api<DreamSchedule> = Api::namespaced(cp.client(), &ns);
    let created = time(
        schedules
            .get("fleet")
            .await
            .expect("schedule")
            .metadata
            .creation_timestamp
            .as_ref()
            .expect("creation time"),
    );

    // Cycle 1: the first that starts after the schedule exists.
    let first = finished_cycle(cp, &ns, created, STORES as u32).await;
    let by_run = runs(cp, &ns).await;
    let run1 = format!("c{}", first.timestamp());
    let cycle1 = by_run.get(&run1).cloned().unwrap_or_default();
    assert_eq!(
        cycle1.keys().cloned().collect::<BTreeSet<_>>(),
        names.iter().cloned().collect::<BTreeSet<_>>(),
        "every selected store dreams once in cycle {first}"
    );

    // Mid-cycle: `late` gets the label and dreams in this cycle still (its
    // slot has passed or comes before the next tick).
    cp.kubectl_ok(&[
        "label",
        "-n",
        ns.as_str(),
        "memorystore",
        "late",
        "tier=fleet",
    ]);
    let jobs: Api<Job> = Api::namespaced(cp.client(), &ns);
    let late_run = format!("reverie.dev/store=late,reverie.dev/run={run1}");
    eventually(
        "store late to dream in the cycle it joined",
        Duration::from_secs(40),
        || async {
            let list = jobs
                .list(&ListParams::default().labels(&late_run))
                .await
                .map_err(|e| e.to_string())?;
            let done = list
                .items
                .iter()
                .any(|j| j.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) > 0);
            done.then_some(())
                .ok_or(format!("{} jobs, none finished", list.items.len()))
        },
    )
    .await;
    // Every store but s07 gets a new session (the annotation a transcript
    // writer sets); idle stores are skipped from now on.
    let stamp = Utc::now().to_rfc3339();
    for n in names
        .iter()
        .filter(|n| *n != "s07")
        .map(String::as_str)
        .chain(["late"])
    {
        cp.kubectl_ok(&[
            "annotate",
            "-n",
            ns.as_str(),
            "memorystore",
            n,
            format!("reverie.dev/sessions-updated={stamp}").as_str(),
        ]);
    }
    cp.kubectl_ok(&[
        "patch",
        "-n",
        ns.as_str(),
        "dreamschedule",
        "fleet",
        "--type=merge",
        "-p",
        "{\"spec\":{\"skipIdle\":true}}",
    ]);

    // Cycle 2: 49 + late dream, s07 is skipped as idle.
    let second = finished_cycle(cp, &ns, first, STORES as u32).await;
    let status = schedules
        .get("fleet")
        .await
        .expect("schedule")
        .status
        .expect("status");
    let counts = status.last_cycle.expect("cycle").counts;
    assert_eq!(status.stores, Some(STORES as u32 + 1));
    assert_eq!(counts.skipped_idle, 1, "{counts:?}");
    assert_eq!(counts.failed, 0, "{counts:?}");
    let by_run = runs(cp, &ns).await;
    let cycle2 = by_run
        .get(&format!("c{}", second.timestamp()))
        .cloned()
        .unwrap_or_default();
    assert!(
        cycle2.contains_key("late"),
        "the labelled store joins: {:?}",
        cycle2.keys()
    );
    assert!(!cycle2.contains_key("s07"), "the idle store is skipped");
    assert_eq!(cycle2.len(), STORES);

    // The placement is the same in both cycles, spread over the window,
    // and no dream started before its slot.
    let mut offsets = BTreeSet::new();
    for (store, (offset, created)) in &cycle2 {
        if let Some((offset1, _)) = cycle1.get(store) {
            assert_eq!(offset, offset1, "store {store} moved between cycles");
        }
        assert!((0..20_000).contains(offset), "{store} at {offset} ms");
        let slot = second + chrono::Duration::milliseconds(*offset);
        // creationTimestamp has second precision.
        assert!(
            *created >= slot - chrono::Duration::seconds(1),
            "{store} started at {created}, before its slot {slot}"
        );
        offsets.insert(offset / 1000);
    }
    assert!(
        offsets.len() >= 10,
        "the dreams are spread over the window: {offsets:?}"
    );

    // `kubectl reverie status` lists every selected store's next run, from
    // the controller's placement: the same offset in the next cycle.
    let out = Command::new(env!("CARGO_BIN_EXE_reverie"))
        .args([
            "plugin",
            "status",
            "dreamschedule/fleet",
            "-n",
            ns.as_str(),
            "-o",
            "json",
        ])
        .env("KUBECONFIG", cp.kubeconfig_path())
        .output()
        .expect("reverie plugin status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json report");
    let listed = report["runs"].as_array().expect("runs");
    assert_eq!(listed.len(), STORES + 1, "{report}");
    for run in listed {
        let store = run["store"].as_str().expect("store");
        let at = DateTime::parse_from_rfc3339(run["nextRun"].as_str().expect("nextRun"))
            .expect("time")
            .with_timezone(&Utc);
        let offset = at.timestamp_millis().rem_euclid(60_000);
        if let Some((o, _)) = cycle2.get(store) {
            assert_eq!(offset, *o, "{store}: status and controller disagree");
        }
    }

    stop.store(true, Ordering::SeqCst);
    let worst = sampler.await.expect("sampler");
    let max = max_active.load(Ordering::SeqCst);
    assert!(
        samples.load(Ordering::SeqCst) > 100,
        "too few samples of the pod phases"
    );
    assert!(max <= LIMIT, "{max} dream pods at once: {worst:?}");
    assert!(
        max >= 2,
        "the limit was never approached (max {max}), so it was not tested"
    );
}
