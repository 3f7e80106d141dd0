//! `cargo bench --bench operator`: the operator at scale, against the real
//! test control plane (etcd, kube-apiserver, kube-controller-manager).
//!
//! Creates N Agents (server-side apply, as a GitOps tool would), then runs
//! the real `reverie controller` binary as a child process twice on the same
//! objects — with `--trim-managed-fields=true`, then `false` — and per run
//! creates M AgentSessions and measures:
//! - the controller's peak RSS (`VmHWM` of `/proc/<pid>/status`) and its
//!   RSS at the end (`VmRSS`);
//! - the time from the first session create until every session's Job
//!   (`<session>-run`) exists;
//! - the controller's API writes (from the apiserver's audit log: the
//!   controller runs as its own impersonated user) at start, while the
//!   sessions start, and during an idle window once nothing moves;
//! - reconciles per object (`reverie_reconciles_total` from its `/metrics`).
//!
//! Scale: `REVERIE_BENCH_AGENTS` (default 10000), `REVERIE_BENCH_SESSIONS`
//! (default 1000), `REVERIE_BENCH_IDLE_SECS` (default 60); the order of the
//! measured runs: `REVERIE_BENCH_TRIM` (default `on,off`).

// The test control plane, shared with the integration tests. Its unit
// tests import helpers this binary does not build.
#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, Seek};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::ControlPlane;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use reverie::api::{Agent, AgentSession};
use serde_json::json;

/// The controller's identity in the audit log.
const CONTROLLER_USER: &str = "reverie-bench-controller";
/// Requests in flight while creating objects.
const IN_FLIGHT: usize = 32;
/// How long without a controller write counts as settled.
const QUIET: Duration = Duration::from_secs(5);

fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => match v.parse() {
            Ok(n) => n,
            Err(e) => panic!("{name}={v:?} is not a number: {e}"),
        },
        Err(_) => default,
    }
}

/// A system prompt of realistic size (about 1 KiB), different per agent.
fn system_prompt(i: usize) -> String {
    let mut p = format!("You are agent {i} of the platform team. ");
    while p.len() < 1024 {
        p.push_str("Check the runbook before changing production; prefer small reversible steps. ");
    }
    p
}

fn agent(i: usize) -> serde_json::Value {
    json!({
        "apiVersion": "reverie.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": format!("agent-{i:05}"), "labels": {"bench": "operator"}},
        "spec": {
            "model": {
                "provider": "anthropic",
                "name": "claude-sonnet",
                "apiKeySecretRef": {"name": "llm", "key": "api-key"}
            },
            "systemPrompt": system_prompt(i),
            "tools": ["memory", "files", "bash"],
            "maxTurns": 20
        }
    })
}

fn session(run: &str, i: usize, agents: usize) -> serde_json::Value {
    json!({
        "apiVersion": "reverie.dev/v1alpha1",
        "kind": "AgentSession",
        "metadata": {"name": format!("{run}-s{i:05}")},
        "spec": {
            "agentRef": {"name": format!("agent-{:05}", i % agents.max(1))},
            "prompt": format!("Task {i}: summarise yesterday's deploy failures."),
            "timeoutSeconds": 3600
        }
    })
}

/// Server-side applies `objs` with `IN_FLIGHT` requests at a time.
async fn apply_all<K>(api: &Api<K>, objs: Vec<serde_json::Value>)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let pp = PatchParams::apply("bench-gitops");
    let results: Vec<Result<(), String>> = futures::stream::iter(objs)
        .map(|o| {
            let pp = pp.clone();
            async move {
                let name = o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                api.patch(&name, &pp, &Patch::Apply(&o))
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("{name}: {e}"))
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let errors: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    assert!(
        errors.is_empty(),
        "{} applies failed, first: {}",
        errors.len(),
        errors[0]
    );
}

/// One line of `/proc/<pid>/status` in kB.
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The pid of the first child of `pid` (the watchdog `sh` runs the
/// controller as its child).
fn child_pid(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Writes of the controller in the audit log from `from` (byte offset) to
/// its end: (count by "verb resource[/subresource]", new offset).
fn controller_writes(log: &Path, from: u64) -> (BTreeMap<String, u64>, u64) {
    let mut counts = BTreeMap::new();
    let Ok(mut f) = std::fs::File::open(log) else {
        return (counts, from);
    };
    if f.seek(std::io::SeekFrom::Start(from)).is_err() {
        return (counts, from);
    }
    let mut reader = std::io::BufReader::new(f);
    let mut offset = from;
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            // A line still being written is read again next time.
            Ok(_) if !line.ends_with('\n') => break,
            Ok(n) => offset += n as u64,
        }
        let Ok(ev) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if ev["impersonatedUser"]["username"] != CONTROLLER_USER {
            continue;
        }
        let r = &ev["objectRef"];
        let mut what = format!(
            "{} {}",
            ev["verb"].as_str().unwrap_or("?"),
            r["resource"].as_str().unwrap_or("?")
        );
        if let Some(sub) = r["subresource"].as_str() {
            what.push('/');
            what.push_str(sub);
        }
        *counts.entry(what).or_insert(0) += 1;
    }
    (counts, offset)
}

fn total(counts: &BTreeMap<String, u64>) -> u64 {
    counts.values().sum()
}

fn show(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `reverie_reconciles_total` per controller (outcomes summed).
async fn reconciles(port: u16) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(resp) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await else {
        return out;
    };
    let Ok(text) = resp.text().await else {
        return out;
    };
    for line in text
        .lines()
        .filter(|l| l.starts_with("reverie_reconciles_total{"))
    {
        let Some(c) = line
            .split("controller=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        else {
            continue;
        };
        let n = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        *out.entry(c.to_string()).or_insert(0) += n as u64;
    }
    out
}

/// The controller as a child process, with a thread sampling its RSS.
struct Controller {
    watchdog: std::process::Child,
    pid: u32,
    port: u16,
    stop: Arc<AtomicBool>,
    max_rss_kb: Arc<AtomicU64>,
}

impl Controller {
    fn start(cp: &ControlPlane, trim: bool, log: &Path) -> Controller {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port for /metrics");
        let kubeconfig = cp.kubeconfig_as(CONTROLLER_USER, &["system:masters"]);
        let args: Vec<String> = vec![
            "controller".into(),
            format!("--metrics-addr=127.0.0.1:{port}"),
            format!("--trim-managed-fields={trim}"),
            "--image=reverie:bench".into(),
        ];
        let file = std::fs::File::create(log).expect("controller log file");
        let watchdog = common::watched(Path::new(env!("CARGO_BIN_EXE_reverie")), &args)
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("start reverie controller");
        let started = Instant::now();
        let pid = loop {
            if let Some(p) = child_pid(watchdog.id()) {
                break p;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "reverie controller did not start; log: {}",
                common::tail(log, 20)
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let stop = Arc::new(AtomicBool::new(false));
        let max_rss_kb = Arc::new(AtomicU64::new(0));
        {
            let (stop, max) = (stop.clone(), max_rss_kb.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(kb) = status_kb(pid, "VmRSS:") {
                        max.fetch_max(kb, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            });
        }
        Controller {
            watchdog,
            pid,
            port,
            stop,
            max_rss_kb,
        }
    }

    /// (VmHWM, VmRSS now, highest VmRSS sampled), in MiB.
    fn memory_mib(&self) -> (f64, f64, f64) {
        let mib = |kb: Option<u64>| kb.unwrap_or(0) as f64 / 1024.0;
        (
            mib(status_kb(self.pid, "VmHWM:")),
            mib(status_kb(self.pid, "VmRSS:")),
            mib(Some(self.max_rss_kb.load(Ordering::Relaxed))),
        )
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        common::kill_group(self.watchdog.id(), "TERM");
        let _ = self.watchdog.wait();
    }
}

/// What one controller run measured.
struct RunReport {
    trim: bool,
    sync: Duration,
    sessions_to_jobs: Duration,
    hwm_mib: f64,
    rss_end_mib: f64,
    writes_start: BTreeMap<String, u64>,
    writes_sessions: BTreeMap<String, u64>,
    writes_idle: BTreeMap<String, u64>,
    idle_secs: u64,
    reconciles: BTreeMap<String, u64>,
}

/// Waits until the controller has made no write for [`QUIET`] (or `limit`
/// passed); returns the writes seen meanwhile and the new offset.
async fn settle(log: &Path, mut offset: u64, limit: Duration) -> (BTreeMap<String, u64>, u64) {
    let started = Instant::now();
    let mut all = BTreeMap::new();
    let mut last_write = Instant::now();
    while last_write.elapsed() < QUIET && started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (w, o) = controller_writes(log, offset);
        offset = o;
        if !w.is_empty() {
            last_write = Instant::now();
        }
        for (k, v) in w {
            *all.entry(k).or_insert(0) += v;
        }
    }
    (all, offset)
}

/// A started controller once every Agent was reconciled and its writes
/// stopped.
struct Synced {
    ctl: Controller,
    log: std::path::PathBuf,
    sync: Duration,
    writes: BTreeMap<String, u64>,
    offset: u64,
}

/// Starts the controller and waits until it reconciled every Agent and
/// went quiet.
async fn start_and_sync(cp: &ControlPlane, trim: bool, n_agents: usize, tag: &str) -> Synced {
    let audit = cp.audit_log_path();
    let offset = std::fs::metadata(&audit).map(|m| m.len()).unwrap_or(0);
    let log = cp.dir().join(format!("controller-{tag}.log"));
    let ctl = Controller::start(cp, trim, &log);
    let t0 = Instant::now();
    loop {
        let r = reconciles(ctl.port).await;
        if r.get("agent").copied().unwrap_or(0) >= n_agents as u64 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "the controller did not reconcile {n_agents} agents in 600 s ({r:?}); log: {}",
            common::tail(&log, 20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sync = t0.elapsed();
    let (writes, offset) = settle(&audit, offset, Duration::from_secs(300)).await;
    Synced {
        ctl,
        log,
        sync,
        writes,
        offset,
    }
}

async fn run_once(
    cp: &ControlPlane,
    ns: &str,
    trim: bool,
    n_agents: usize,
    n_sessions: usize,
    idle: Duration,
) -> RunReport {
    let audit = cp.audit_log_path();
    let run = if trim { "trim" } else { "full" };
    let Synced {
        ctl,
        log,
        sync,
        writes: writes_start,
        mut offset,
    } = start_and_sync(cp, trim, n_agents, run).await;

    // Sessions: from the first create until every Job exists.
    let sessions: Api<AgentSession> = Api::namespaced(cp.client(), ns);
    let jobs: Api<Job> = Api::namespaced(cp.client(), ns);
    let t1 = Instant::now();
    apply_all(
        &sessions,
        (0..n_sessions).map(|i| session(run, i, n_agents)).collect(),
    )
    .await;
    let prefix = format!("{run}-s");
    loop {
        let list = jobs
            .list_metadata(&ListParams::default().labels("app.kubernetes.io/component=agent"))
            .await
            .expect("list jobs");
        let n = list
            .items
            .iter()
            .filter(|j| {
                j.metadata
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with(&prefix))
            })
            .count();
        if n >= n_sessions {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(600),
            "only {n} of {n_sessions} Jobs after 600 s; log: {}",
            common::tail(&log, 20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sessions_to_jobs = t1.elapsed();
    // The Job controller starts pods and the sessions follow their Jobs;
    // wait until that has settled before the idle window.
    let (writes_sessions, o) = settle(&audit, offset, Duration::from_secs(300)).await;
    offset = o;

    tokio::time::sleep(idle).await;
    let (writes_idle, _) = controller_writes(&audit, offset);
    let reconciles = reconciles(ctl.port).await;
    let (hwm, rss_end, sampled) = ctl.memory_mib();
    eprintln!("run {run}: sampled max VmRSS {sampled:.1} MiB");
    drop(ctl);

    // The next run starts from the same objects: remove this run's sessions
    // (their Jobs and pods go by garbage collection).
    let dp = DeleteParams::background();
    sessions
        .delete_collection(&dp, &ListParams::default())
        .await
        .expect("delete sessions");
    jobs.delete_collection(&dp, &ListParams::default())
        .await
        .expect("delete jobs");
    let t2 = Instant::now();
    while !sessions
        .list_metadata(&ListParams::default())
        .await
        .expect("list sessions")
        .items
        .is_empty()
    {
        assert!(
            t2.elapsed() < Duration::from_secs(300),
            "sessions not deleted"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    RunReport {
        trim,
        sync,
        sessions_to_jobs,
        hwm_mib: hwm,
        rss_end_mib: rss_end,
        writes_start,
        writes_sessions,
        writes_idle,
        idle_secs: idle.as_secs(),
        reconciles,
    }
}

fn per(n: u64, of: usize) -> f64 {
    n as f64 / of.max(1) as f64
}

fn print_report(reports: &[RunReport], n_agents: usize, n_sessions: usize, create: Duration) {
    println!();
    println!("Operator at scale: {n_agents} Agents, {n_sessions} AgentSessions (agents created in {:.1} s, {IN_FLIGHT} in flight)", create.as_secs_f64());
    println!();
    println!("| trimming | peak RSS (VmHWM) | RSS at end | start-up sync | sessions → all Jobs | writes at start | writes for sessions | idle writes/min | reconciles per Agent | per AgentSession |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in reports {
        let idle_per_min = total(&r.writes_idle) as f64 * 60.0 / r.idle_secs.max(1) as f64;
        println!(
            "| {} | {:.1} MiB | {:.1} MiB | {:.1} s | {:.1} s | {} | {} | {:.1} | {:.2} | {:.2} |",
            if r.trim { "on" } else { "off" },
            r.hwm_mib,
            r.rss_end_mib,
            r.sync.as_secs_f64(),
            r.sessions_to_jobs.as_secs_f64(),
            total(&r.writes_start),
            total(&r.writes_sessions),
            idle_per_min,
            per(r.reconciles.get("agent").copied().unwrap_or(0), n_agents),
            per(
                r.reconciles.get("agentsession").copied().unwrap_or(0),
                n_sessions
            ),
        );
    }
    for r in reports {
        let t = if r.trim { "on" } else { "off" };
        println!();
        println!("trimming {t}: writes at start: {}", show(&r.writes_start));
        println!(
            "trimming {t}: writes for sessions: {}",
            show(&r.writes_sessions)
        );
        println!(
            "trimming {t}: writes in {} s idle: {}",
            r.idle_secs,
            show(&r.writes_idle)
        );
        println!("trimming {t}: reconciles: {:?}", r.reconciles);
    }
}

/// The order of the measured runs: `REVERIE_BENCH_TRIM` (default `on,off`).
fn trim_order() -> Vec<bool> {
    let spec = std::env::var("REVERIE_BENCH_TRIM").unwrap_or_else(|_| "on,off".into());
    spec.split(',')
        .map(|t| match t.trim() {
            "on" => true,
            "off" => false,
            other => panic!("REVERIE_BENCH_TRIM: {other:?} is neither on nor off"),
        })
        .collect()
}

async fn bench() {
    let n_agents = env_usize("REVERIE_BENCH_AGENTS", 10_000);
    let n_sessions = env_usize("REVERIE_BENCH_SESSIONS", 1_000);
    let idle = Duration::from_secs(env_usize("REVERIE_BENCH_IDLE_SECS", 60) as u64);
    let cp = match ControlPlane::start_audited().await {
        Ok(cp) => cp,
        Err(e) => panic!("control plane: {e}"),
    };
    eprintln!(
        "control plane up in {:.1} s ({})",
        cp.start_duration.as_secs_f64(),
        cp.dir().display()
    );
    cp.install_crds().await;
    let ns = cp.create_namespace("bench").await;
    let secrets: Api<Secret> = Api::namespaced(cp.client(), &ns);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "llm"},
        "stringData": {"api-key": "sk-bench"}
    }))
    .expect("secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    let agents: Api<Agent> = Api::namespaced(cp.client(), &ns);
    let t = Instant::now();
    apply_all(&agents, (0..n_agents).map(agent).collect()).await;
    let create = t.elapsed();
    eprintln!("{n_agents} agents created in {:.1} s", create.as_secs_f64());

    // The first start makes every Agent Ready (a status write each); the
    // measured runs then start from the same, settled objects.
    let first = start_and_sync(&cp, true, n_agents, "first").await;
    let (hwm, _, _) = first.ctl.memory_mib();
    println!(
        "first start (trimming on): every Agent reconciled in {:.1} s, peak RSS {hwm:.1} MiB, writes: {}",
        first.sync.as_secs_f64(),
        show(&first.writes)
    );
    drop(first);

    let mut reports = Vec::new();
    for trim in trim_order() {
        let r = run_once(&cp, &ns, trim, n_agents, n_sessions, idle).await;
        eprintln!(
            "run trim={trim}: VmHWM {:.1} MiB, sessions → Jobs {:.1} s",
            r.hwm_mib,
            r.sessions_to_jobs.as_secs_f64()
        );
        reports.push(r);
    }
    print_report(&reports, n_agents, n_sessions, create);
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    if std::env::args().skip(1).any(|a| a != "--bench") {
        eprintln!("usage: cargo bench --bench operator (scale with REVERIE_BENCH_AGENTS, REVERIE_BENCH_SESSIONS, REVERIE_BENCH_IDLE_SECS)");
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(bench());
}
