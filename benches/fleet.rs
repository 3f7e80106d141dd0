//! Cluster-level dream scheduling at scale: 1,000 stores under one
//! `DreamSchedule` on the real control plane and test node, driven by the
//! real `reverie controller` binary. Prints the controller's resident memory
//! (VmRSS / VmHWM from /proc) and the API writes the controller made during
//! one full cycle, counted from watch events of the objects it writes.
//!
//! `cargo bench --bench fleet`; `FLEET_STORES` (default 1000),
//! `FLEET_LIMIT` (default 20 dreams at once), `FLEET_WINDOW` (default 100s,
//! with a tick every 2 minutes).

// The control-plane helpers of the integration tests; their own unit
// tests import what only a test harness uses.
#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::node::TestNode;
use common::reverie::ControllerProcess;
use common::{eventually, ControlPlane};
use futures::{Stream, StreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kube::runtime::watcher;
use reverie::api::{DreamSchedule, MemoryStore};

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Counts watch events by `kind event` while `on` is set.
type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

fn count<K, S>(
    kind: &'static str,
    stream: S,
    counts: Counts,
    on: Arc<std::sync::atomic::AtomicBool>,
) where
    K: kube::Resource + Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        // Jobs: only creations and deletions are the controller's writes
        // (their status is the Job controller's); other kinds: every change.
        let mut seen = std::collections::BTreeSet::new();
        while let Some(ev) = stream.next().await {
            let what = match ev {
                Ok(watcher::Event::InitApply(o)) => {
                    seen.insert(o.meta().name.clone().unwrap_or_default());
                    continue;
                }
                Ok(watcher::Event::Apply(o)) => {
                    let first = seen.insert(o.meta().name.clone().unwrap_or_default());
                    match (kind, first) {
                        ("Job", false) => continue,
                        (_, true) => "create",
                        (_, false) => "update",
                    }
                }
                Ok(watcher::Event::Delete(o)) => {
                    seen.remove(&o.meta().name.clone().unwrap_or_default());
                    "delete"
                }
                _ => continue,
            };
            if on.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(mut c) = counts.lock() {
                    *c.entry(format!("{kind} {what}")).or_default() += 1;
                }
            }
        }
    });
}

fn main() {
    let stores: usize = env_or("FLEET_STORES", "1000")
        .parse()
        .expect("FLEET_STORES");
    let limit: usize = env_or("FLEET_LIMIT", "20").parse().expect("FLEET_LIMIT");
    let window = env_or("FLEET_WINDOW", "100s");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let cp = ControlPlane::shared().await;
        let _node = TestNode::shared().await;
        cp.install_crds().await;
        let ns = cp.create_namespace("fleet-bench").await;

        let mut yaml = String::new();
        for i in 0..stores {
            let name = format!("s{i:04}");
            let dir = cp.pvc_dir(&ns, &format!("{name}-memory")).join("memories");
            std::fs::create_dir_all(&dir).expect("seed");
            std::fs::write(dir.join("notes.md"), format!("- Store {name} logs in UTC.\n"))
                .expect("seed");
            yaml.push_str(&format!("apiVersion: reverie.dev/v1alpha1\nkind: MemoryStore\nmetadata:\n  name: {name}\n  labels: {{tier: fleet}}\nspec:\n  storage: {{size: 10Mi}}\n---\n"));
        }
        let limit_flag = limit.to_string();
        let controller = ControllerProcess::start(
            cp,
            &ns,
            &["--max-concurrent-dreams", limit_flag.as_str()],
            "warn",
        );
        let pid = controller.pid();
        let t0 = Instant::now();
        // In chunks: one kubectl call per 200 stores.
        for chunk in yaml.split_inclusive("---\n").collect::<Vec<_>>().chunks(200) {
            cp.apply_yaml(&ns, &chunk.concat());
        }
        let store_api: Api<MemoryStore> = Api::namespaced(cp.client(), &ns);
        eventually("all stores reconciled", Duration::from_secs(600), || async {
            let list = store_api.list(&ListParams::default()).await.map_err(|e| e.to_string())?;
            let n = list.items.iter().filter(|s| s.status.is_some()).count();
            (n == stores).then_some(()).ok_or(format!("{n} of {stores}"))
        })
        .await;
        println!("{stores} stores created and reconciled in {:.1}s", t0.elapsed().as_secs_f64());
        let (rss, _) = memory_kib(pid);
        println!("controller RSS with {stores} stores, before the schedule: {} MiB", rss / 1024);

        let on = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let counts: Counts = Arc::default();
        let c = cp.client();
        count("Job", watcher(Api::<Job>::namespaced(c.clone(), &ns), watcher::Config::default()), counts.clone(), on.clone());
        count("DreamSchedule", watcher(Api::<DreamSchedule>::namespaced(c.clone(), &ns), watcher::Config::default()), counts.clone(), on.clone());
        count("MemoryStore", watcher(Api::<MemoryStore>::namespaced(c.clone(), &ns), watcher::Config::default()), counts.clone(), on.clone());
        count("Event", watcher(Api::<Event>::namespaced(c.clone(), &ns), watcher::Config::default()), counts.clone(), on.clone());

        cp.apply_yaml(&ns, &format!("apiVersion: reverie.dev/v1alpha1\nkind: DreamSchedule\nmetadata: {{name: fleet}}\nspec:\n  storeSelector: {{matchLabels: {{tier: fleet}}}}\n  schedule: '*/2 * * * *'\n  window: {window}\n  skipIdle: false\n"));
        // Measure the first full cycle: from its tick to the next.
        let now = Utc::now();
        let secs = now.timestamp();
        let tick = DateTime::from_timestamp(secs - secs.rem_euclid(120) + 120, 0).expect("tick");
        let wait = (tick - now).to_std().unwrap_or_default();
        println!("waiting {:.0}s for the cycle at {tick}", wait.as_secs_f64());
        tokio::time::sleep(wait).await;
        on.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut peak = 0;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(120) {
            peak = peak.max(memory_kib(pid).0);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        on.store(false, std::sync::atomic::Ordering::SeqCst);
        let (rss, hwm) = memory_kib(pid);
        let schedule = Api::<DreamSchedule>::namespaced(c.clone(), &ns).get("fleet").await.expect("schedule");
        let cycle = schedule.status.and_then(|s| s.last_cycle);
        println!("cycle {tick}: {:?}", cycle.map(|c| c.counts));
        println!("controller RSS during the cycle: peak {} MiB, now {} MiB, high-water {} MiB", peak / 1024, rss / 1024, hwm / 1024);
        let counts = counts.lock().map(|c| c.clone()).unwrap_or_default();
        let total: u64 = counts.values().sum();
        println!("watch events of controller-written objects in the cycle ({total}):");
        for (k, v) in counts {
            println!("  {k}: {v}");
        }
    });
}
