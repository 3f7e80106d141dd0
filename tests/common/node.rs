//! The test node: a stand-in for scheduler + kubelet that runs pods as local processes.
//!
//! [`TestNode::start`] registers a Ready `Node` (kept fresh by a Lease heartbeat), binds
//! every unscheduled pod to itself (`pods/binding`) and runs each container's
//! `command` + `args` as a local process (the image is ignored; `reverie` and
//! `/usr/local/bin/reverie` mean the cargo-built binary). Status goes back through
//! `pods/status`: Pending → Running → Succeeded/Failed with exit codes and termination
//! messages.
//!
//! Volumes become directories. A mount path such as `/data` cannot exist on the real
//! root, so the node rewrites it:
//! - the process gets `REVERIE_PATH_MAP="/data=/real/dir:/workspace=/real/dir2"`:
//!   `:`-separated `mount=real` pairs, longest mount path first (an entry may map a
//!   single file, e.g. `/dev/termination-log`). In-pod programs written by this project
//!   (`reverie …`) must translate every absolute path they compute themselves through
//!   it (first entry whose mount path is the path or a `/`-prefix of it) before touching
//!   the file system;
//! - mount-path prefixes inside `command`, `args`, `workingDir` and env values are
//!   substituted with the real directory (so `sh -c 'echo ok > /data/out'` and
//!   `reverie dream --store /data` work without the map). Only whole path prefixes
//!   match: `/data` rewrites `/data/out`, not `/database` or `/x/data`.
//!
//! Not modelled: images and entrypoints (a container needs `command`, unless its image
//! names `reverie`), probes (containers are Ready once started), resources, ports
//! (the pod IP is 127.0.0.1), native sidecars (rejected with a message), `kubectl
//! logs` (read logs with [`TestNode::container_log`]).
//!
//! A PersistentVolumeClaim is one directory per claim, `ControlPlane::pvc_dir(ns, claim)`,
//! shared by every pod (and every test node) that mounts it; the claim need not be Bound.
//! Each process gets `KUBECONFIG` for its pod's service account (a TokenRequest token), so
//! in-pod clients reach the test apiserver as that account; `KUBERNETES_SERVICE_HOST/PORT`
//! are not set. The control plane's bin dir leads `PATH` (`kubectl`, `helm` work in pods).
//!
//! The node runs on its own thread and tokio runtime, so it may outlive the test that
//! started it (see [`TestNode::shared`]). With several nodes in one control plane, any of
//! them may bind a pod; volumes are shared, logs are per node.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvVar, KeyToPath, Node, ObjectFieldSelector, Pod, Secret,
    ServiceAccount, Volume,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::{oneshot, watch, OnceCell};

use super::{kill_group, tail, watched, ControlPlane};

/// Lines of the log used as termination message under `FallbackToLogsOnError`.
const FALLBACK_LOG_LINES: usize = 80;
/// Kubernetes caps termination messages at 4096 bytes.
const MAX_MESSAGE: usize = 4096;
/// Seconds between SIGTERM and SIGKILL when a pod is deleted or times out.
const KILL_GRACE: Duration = Duration::from_secs(3);

/// Why a running pod is being stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Deleted,
    Deadline,
    Shutdown,
}

/// What a node thread needs from the control plane (plain data, no runtime-bound client).
#[derive(Clone)]
struct NodeEnv {
    name: String,
    config: kube::Config,
    dir: PathBuf,
    pvc_root: PathBuf,
    bin_dir: PathBuf,
    server_url: String,
    ca: PathBuf,
    reverie: PathBuf,
}

/// A pod's directories, by `(namespace, name)`; the latest run wins.
type PodDirs = Arc<Mutex<BTreeMap<(String, String), PathBuf>>>;

/// A registered, Ready node that runs pods as local processes. Stops on drop.
pub struct TestNode {
    name: String,
    dir: PathBuf,
    pvc_root: PathBuf,
    pod_dirs: PodDirs,
    shutdown: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

static SHARED: OnceCell<TestNode> = OnceCell::const_new();

impl TestNode {
    /// The test node of this binary (named `reverie-test-node`), started on first use
    /// against [`ControlPlane::shared`]. Prefer it: one node per binary binds every pod.
    pub async fn shared() -> &'static TestNode {
        let cp = ControlPlane::shared().await;
        SHARED
            .get_or_init(|| TestNode::start(cp, "reverie-test-node"))
            .await
    }

    /// Registers node `name` and starts binding and running pods.
    ///
    /// Panics (naming the step) when the node cannot be registered.
    pub async fn start(cp: &ControlPlane, name: &str) -> TestNode {
        let dir = cp.dir().join("nodes").join(name);
        let env = NodeEnv {
            name: name.to_string(),
            config: cp.config.clone(),
            dir: dir.clone(),
            pvc_root: cp.dir().join("pvc"),
            bin_dir: cp.bin_dir().to_path_buf(),
            server_url: cp.server_url().to_string(),
            ca: cp.ca_path().to_path_buf(),
            reverie: PathBuf::from(env!("CARGO_BIN_EXE_reverie")),
        };
        let pod_dirs: PodDirs = Arc::default();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = oneshot::channel();
        let dirs = pod_dirs.clone();
        let thread = std::thread::Builder::new()
            .name(format!("test-node-{name}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("cannot build the node runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(node_main(env, dirs, shutdown_rx, ready_tx));
            });
        let thread = match thread {
            Ok(t) => t,
            Err(e) => panic!("cannot start the thread of test node {name}: {e}"),
        };
        match ready_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("test node {name} failed to start: {e}"),
            Err(_) => panic!("test node {name} stopped while starting"),
        }
        TestNode {
            name: name.to_string(),
            dir,
            pvc_root: cp.dir().join("pvc"),
            pod_dirs,
            shutdown,
            thread: Some(thread),
        }
    }

    /// The Node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Directory of this node (pods, logs, volumes).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Directory backing PVC `claim` of namespace `ns` (same as `ControlPlane::pvc_dir`).
    pub fn pvc_dir(&self, ns: &str, claim: &str) -> PathBuf {
        self.pvc_root.join(ns).join(claim)
    }

    /// Directory of the latest run of pod `ns/pod` on this node, if it ran here.
    pub fn pod_dir(&self, ns: &str, pod: &str) -> Option<PathBuf> {
        lock(&self.pod_dirs)
            .get(&(ns.to_string(), pod.to_string()))
            .cloned()
    }

    /// Path of a container's log file (stdout and stderr, all restarts appended).
    pub fn log_path(&self, ns: &str, pod: &str, container: &str) -> Option<PathBuf> {
        self.pod_dir(ns, pod)
            .map(|d| d.join("logs").join(format!("{container}.log")))
    }

    /// The log of a container of pod `ns/pod`; an error names what is missing.
    pub fn container_log(&self, ns: &str, pod: &str, container: &str) -> Result<String, String> {
        let path = self
            .log_path(ns, pod, container)
            .ok_or_else(|| format!("pod {ns}/{pod} did not run on test node {}", self.name))?;
        std::fs::read(&path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The guarded maps stay consistent even if a holder panicked.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// State shared by the node's tasks.
struct Ctx {
    env: NodeEnv,
    client: kube::Client,
    pod_dirs: PodDirs,
    /// Stop signals of pods this node runs, by uid.
    running: Mutex<BTreeMap<String, watch::Sender<Option<Stop>>>>,
    /// Every pod uid this node has started (never restarted from an event).
    seen: Mutex<BTreeSet<String>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

async fn node_main(
    env: NodeEnv,
    pod_dirs: PodDirs,
    mut shutdown: watch::Receiver<bool>,
    ready: oneshot::Sender<Result<(), String>>,
) {
    let client = match kube::Client::try_from(env.config.clone()) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot build a client: {e}")));
            return;
        }
    };
    let ctx = Arc::new(Ctx {
        env,
        client,
        pod_dirs,
        running: Mutex::default(),
        seen: Mutex::default(),
        tasks: Mutex::default(),
    });
    if let Err(e) = register(&ctx).await {
        let _ = ready.send(Err(e));
        return;
    }
    let heartbeat = tokio::spawn(heartbeat(ctx.clone()));
    let binder = tokio::spawn(bind_loop(ctx.clone()));
    let manager = tokio::spawn(manage_loop(ctx.clone()));
    let _ = ready.send(Ok(()));
    let _ = shutdown.wait_for(|stop| *stop).await;
    heartbeat.abort();
    binder.abort();
    manager.abort();
    for stop in lock(&ctx.running).values() {
        let _ = stop.send(Some(Stop::Shutdown));
    }
    let tasks: Vec<_> = lock(&ctx.tasks).drain(..).collect();
    for t in tasks {
        let _ = tokio::time::timeout(KILL_GRACE * 2, t).await;
    }
}

async fn register(ctx: &Ctx) -> Result<(), String> {
    let name = &ctx.env.name;
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": std::env::consts::ARCH,
            "reverie.dev/test-node": "true",
        }},
    }))
    .map_err(|e| format!("cannot build Node {name}: {e}"))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(ae)) if ae.code == 409 => {}
        Err(e) => return Err(format!("cannot create Node {name}: {e}")),
    }
    // The TaintNodesByCondition admission plugin taints new nodes not-ready; the node
    // lifecycle controller that would lift it does not run here.
    let untaint = json!({"spec": {"taints": null}});
    nodes
        .patch(name, &PatchParams::default(), &Patch::Merge(&untaint))
        .await
        .map_err(|e| format!("cannot clear the taints of Node {name}: {e}"))?;
    let resources =
        json!({"cpu": "16", "memory": "64Gi", "pods": "500", "ephemeral-storage": "100Gi"});
    let status = json!({"status": {
        "capacity": resources,
        "allocatable": resources,
        "conditions": node_conditions(),
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "architecture": std::env::consts::ARCH, "bootID": "", "containerRuntimeVersion": "reverie-test://1",
            "kernelVersion": "", "kubeProxyVersion": "", "kubeletVersion": "v1.37.2", "machineID": name,
            "operatingSystem": "linux", "osImage": "reverie test node", "systemUUID": name,
        },
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(|e| format!("cannot set the status of Node {name}: {e}"))?;
    renew_lease(ctx).await
}

fn node_conditions() -> serde_json::Value {
    let t = now();
    json!([{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "reverie test node is ready", "lastHeartbeatTime": t, "lastTransitionTime": t}])
}

async fn renew_lease(ctx: &Ctx) -> Result<(), String> {
    let name = &ctx.env.name;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(ctx.client.clone(), "kube-node-lease");
    let renew = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": renew},
    });
    leases
        .patch(
            name,
            &PatchParams::apply("reverie-test-node").force(),
            &Patch::Apply(&lease),
        )
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot renew Lease kube-node-lease/{name}: {e}"))
}

/// Keeps the node Ready: Lease renewal and Ready heartbeat every 10 s.
async fn heartbeat(ctx: Arc<Ctx>) {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        if let Err(e) = renew_lease(&ctx).await {
            tracing::warn!("{e}");
        }
        let status = json!({"status": {"conditions": node_conditions()}});
        if let Err(e) = nodes
            .patch_status(
                &ctx.env.name,
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await
        {
            tracing::warn!("heartbeat of Node {}: {e}", ctx.env.name);
        }
    }
}

/// Binds every pod that has no node yet to this node (no scheduler runs).
async fn bind_loop(ctx: Arc<Ctx>) {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let cfg = watcher::Config::default().fields("spec.nodeName=");
    let mut stream = watcher(pods, cfg).boxed();
    while let Some(ev) = stream.next().await {
        let pod = match ev {
            Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => p,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!("watching unscheduled pods: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let gated = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduling_gates.as_ref())
            .is_some_and(|g| !g.is_empty());
        if pod.metadata.deletion_timestamp.is_some() || gated {
            continue;
        }
        let (Some(ns), Some(name)) = (pod.metadata.namespace.clone(), pod.metadata.name.clone())
        else {
            continue;
        };
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name, "namespace": ns},
            "target": {"apiVersion": "v1", "kind": "Node", "name": ctx.env.name},
        });
        match api
            .create_subresource::<_, serde_json::Value>(
                "binding",
                &name,
                &PostParams::default(),
                &binding,
            )
            .await
        {
            Ok(_) => {}
            // Bound by another node, or gone: nothing to do.
            Err(kube::Error::Api(ae)) if ae.code == 409 || ae.code == 404 => {}
            Err(e) => tracing::warn!("binding pod {ns}/{name} to {}: {e}", ctx.env.name),
        }
    }
}

/// Starts, stops and cleans up the pods bound to this node.
async fn manage_loop(ctx: Arc<Ctx>) {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.env.name));
    let mut stream = watcher(pods, cfg).boxed();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Apply(p)) | Ok(watcher::Event::InitApply(p)) => on_pod(&ctx, p),
            Ok(watcher::Event::Delete(p)) => {
                if let Some(uid) = p.metadata.uid.as_deref() {
                    if let Some(stop) = lock(&ctx.running).get(uid) {
                        let _ = stop.send(Some(Stop::Deleted));
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("watching pods of node {}: {e}", ctx.env.name);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

fn on_pod(ctx: &Arc<Ctx>, pod: Pod) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    let terminal = phase == "Succeeded" || phase == "Failed";
    if pod.metadata.deletion_timestamp.is_some() {
        if let Some(stop) = lock(&ctx.running).get(&uid) {
            let _ = stop.send(Some(Stop::Deleted));
            return;
        }
        // Not running here (finished, or never started): finish the deletion.
        let ctx2 = ctx.clone();
        let t = tokio::spawn(async move { force_delete(&ctx2, &pod).await });
        lock(&ctx.tasks).push(t);
        return;
    }
    if terminal || !lock(&ctx.seen).insert(uid.clone()) {
        return;
    }
    let (stop_tx, stop_rx) = watch::channel(None);
    lock(&ctx.running).insert(uid.clone(), stop_tx.clone());
    let ctx2 = ctx.clone();
    let t = tokio::spawn(async move {
        run_pod(&ctx2, pod, stop_tx, stop_rx).await;
        lock(&ctx2.running).remove(&uid);
    });
    let mut tasks = lock(&ctx.tasks);
    tasks.retain(|t| !t.is_finished());
    tasks.push(t);
}

/// Deletes a pod with grace 0, so Jobs and namespaces see it gone.
async fn force_delete(ctx: &Ctx, pod: &Pod) {
    let (Some(ns), Some(name)) = (
        pod.metadata.namespace.as_deref(),
        pod.metadata.name.as_deref(),
    ) else {
        return;
    };
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: pod
            .metadata
            .uid
            .clone()
            .map(|uid| kube::api::Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
        ..DeleteParams::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => {}
        Err(kube::Error::Api(ae)) if ae.code == 404 || ae.code == 409 => {}
        Err(e) => tracing::warn!("deleting pod {ns}/{name}: {e}"),
    }
}

async fn patch_pod_status(ctx: &Ctx, ns: &str, name: &str, status: serde_json::Value) {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let body = json!({"status": status});
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(ae)) if ae.code == 404 => {}
        Err(e) => tracing::warn!("updating the status of pod {ns}/{name}: {e}"),
    }
}

/// Everything a container process of one pod needs.
struct PodRun {
    ns: String,
    name: String,
    dir: PathBuf,
    /// Volume name → real directory.
    mounts_by_volume: BTreeMap<String, PathBuf>,
    kubeconfig: PathBuf,
    /// `containerStatuses`, in spec order: a merge patch replaces the whole list, so
    /// containers running in parallel update their entry here and send the full list.
    statuses: Mutex<Vec<serde_json::Value>>,
}

/// Result of one container run.
#[derive(Clone)]
struct Exit {
    code: i32,
    started_at: String,
    finished_at: String,
    message: String,
    pid: u32,
}

fn pod_conditions(initialized: bool, ready: bool) -> serde_json::Value {
    let t = now();
    let s = |b: bool| if b { "True" } else { "False" };
    json!([
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
        {"type": "Initialized", "status": s(initialized), "lastTransitionTime": t},
        {"type": "ContainersReady", "status": s(ready), "lastTransitionTime": t},
        {"type": "Ready", "status": s(ready), "lastTransitionTime": t},
    ])
}

fn waiting_status(c: &Container, reason: &str, restarts: u32) -> serde_json::Value {
    json!({"name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
           "ready": false, "started": false, "restartCount": restarts,
           "state": {"waiting": {"reason": reason}}})
}

fn running_status(c: &Container, pid: u32, started_at: &str, restarts: u32) -> serde_json::Value {
    json!({"name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
           "containerID": format!("reverie-test://{pid}"),
           "ready": true, "started": true, "restartCount": restarts,
           "state": {"running": {"startedAt": started_at}}})
}

fn terminated_status(c: &Container, exit: &Exit, restarts: u32) -> serde_json::Value {
    let reason = if exit.code == 0 { "Completed" } else { "Error" };
    let cid = format!("reverie-test://{}", exit.pid);
    json!({"name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
           "containerID": cid, "ready": false, "started": false, "restartCount": restarts,
           "state": {"terminated": {"exitCode": exit.code, "reason": reason, "message": exit.message,
                                    "startedAt": exit.started_at, "finishedAt": exit.finished_at,
                                    "containerID": cid}}})
}

/// Runs one pod from start to a terminal phase, reporting status on the way.
async fn run_pod(
    ctx: &Arc<Ctx>,
    pod: Pod,
    stop_tx: watch::Sender<Option<Stop>>,
    mut stop_rx: watch::Receiver<Option<Stop>>,
) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let Some(spec) = pod.spec.clone() else { return };
    let dir = ctx
        .env
        .dir
        .join("pods")
        .join(&ns)
        .join(format!("{name}-{}", &uid[..uid.len().min(8)]));
    lock(&ctx.pod_dirs).insert((ns.clone(), name.clone()), dir.clone());

    let waiting = all_waiting(&spec.containers, "ContainerCreating");
    patch_pod_status(
        ctx,
        &ns,
        &name,
        json!({
            "phase": "Pending", "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}], "podIPs": [{"ip": "127.0.0.1"}],
            "startTime": now(), "conditions": pod_conditions(false, false),
            "containerStatuses": waiting,
        }),
    )
    .await;
    if let Some(secs) = spec.active_deadline_seconds {
        start_deadline(stop_tx, secs);
    }

    let prepared = match sidecars_unsupported(&spec) {
        Some(e) => Err(e),
        None => prepare(ctx, &pod, &dir).await,
    };
    let status = match prepared {
        Err(e) => json!({
            "phase": "Failed", "reason": "CreateContainerConfigError", "message": e,
            "conditions": pod_conditions(false, false),
            "containerStatuses": all_waiting(&spec.containers, "CreateContainerConfigError"),
        }),
        Ok(run) => {
            let run = Arc::new(run);
            match run_init_containers(ctx, &run, &pod, &mut stop_rx).await {
                Ok(()) => run_main_containers(ctx, &run, &pod, &stop_rx).await,
                Err((message, init_statuses)) => {
                    let mut status = json!({
                        "phase": "Failed", "message": message,
                        "conditions": pod_conditions(false, false),
                        "containerStatuses": all_waiting(&spec.containers, "PodInitializing"),
                        "initContainerStatuses": init_statuses,
                    });
                    if *stop_rx.borrow() == Some(Stop::Deadline) {
                        status["reason"] = json!("DeadlineExceeded");
                    }
                    status
                }
            }
        }
    };
    patch_pod_status(ctx, &ns, &name, status).await;
    wait_deleted(ctx, &pod, &mut stop_rx).await;
}

fn all_waiting(containers: &[Container], reason: &str) -> Vec<serde_json::Value> {
    containers
        .iter()
        .map(|c| waiting_status(c, reason, 0))
        .collect()
}

/// Native sidecars (init containers with `restartPolicy: Always`) would block the
/// sequential init phase forever; say so instead.
fn sidecars_unsupported(spec: &k8s_openapi::api::core::v1::PodSpec) -> Option<String> {
    spec.init_containers
        .iter()
        .flatten()
        .find(|c| c.restart_policy.as_deref() == Some("Always"))
        .map(|c| {
            format!(
                "init container {} is a sidecar (restartPolicy: Always), which the test node does not support",
                c.name
            )
        })
}

/// Stops the pod with [`Stop::Deadline`] after `activeDeadlineSeconds`, unless it is
/// already stopping for another reason.
fn start_deadline(stop_tx: watch::Sender<Option<Stop>>, secs: i64) {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(secs.max(0).unsigned_abs())).await;
        stop_tx.send_if_modified(|s| {
            if s.is_none() {
                *s = Some(Stop::Deadline);
                true
            } else {
                false
            }
        });
    });
}

/// Runs the init containers in order; each must exit 0 (retried unless
/// `restartPolicy: Never`). On failure returns the message and the init statuses.
async fn run_init_containers(
    ctx: &Ctx,
    run: &PodRun,
    pod: &Pod,
    stop_rx: &mut watch::Receiver<Option<Stop>>,
) -> Result<(), (String, Vec<serde_json::Value>)> {
    let spec = pod.spec.clone().unwrap_or_default();
    let never = spec.restart_policy.as_deref() == Some("Never");
    let inits = spec.init_containers.unwrap_or_default();
    let mut statuses = all_waiting(&inits, "PodInitializing");
    for (i, c) in inits.iter().enumerate() {
        let mut restarts = 0;
        loop {
            let exit = match run_container(ctx, run, pod, c, stop_rx, None).await {
                Ok(exit) => exit,
                Err(e) => return Err((format!("init container {}: {e}", c.name), statuses)),
            };
            statuses[i] = terminated_status(c, &exit, restarts);
            let patch = json!({"initContainerStatuses": statuses});
            patch_pod_status(ctx, &run.ns, &run.name, patch).await;
            if exit.code == 0 {
                break;
            }
            let stopping = stop_rx.borrow().is_some();
            if never || stopping || !backoff(stop_rx).await {
                let msg = format!("init container {} exited with code {}", c.name, exit.code);
                return Err((msg, statuses));
            }
            restarts += 1;
        }
    }
    if stop_rx.borrow().is_some() {
        return Err(("pod stopped during initialisation".into(), statuses));
    }
    Ok(())
}

/// Runs the containers in parallel (restarting them as `restartPolicy` says) and
/// returns the final pod status.
async fn run_main_containers(
    ctx: &Arc<Ctx>,
    run: &Arc<PodRun>,
    pod: &Pod,
    stop_rx: &watch::Receiver<Option<Stop>>,
) -> serde_json::Value {
    let spec = pod.spec.clone().unwrap_or_default();
    let restart = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());
    let mut handles = Vec::new();
    for (idx, c) in spec.containers.iter().cloned().enumerate() {
        let ctx = ctx.clone();
        let pod = pod.clone();
        let restart = restart.clone();
        let rx = stop_rx.clone();
        let run = run.clone();
        handles.push(tokio::spawn(async move {
            let res = run_restarting(&ctx, &run, &pod, &c, idx, &restart, rx).await;
            (c, res)
        }));
    }
    let running = json!({"phase": "Running", "conditions": pod_conditions(true, true)});
    patch_pod_status(ctx, &run.ns, &run.name, running).await;
    let mut statuses = Vec::new();
    let mut all_ok = true;
    let mut errors = Vec::new();
    for h in handles {
        match h.await {
            Ok((c, Ok((exit, restarts)))) => {
                all_ok &= exit.code == 0;
                statuses.push(terminated_status(&c, &exit, restarts));
            }
            Ok((c, Err(e))) => {
                all_ok = false;
                errors.push(format!("container {}: {e}", c.name));
                statuses.push(waiting_status(&c, "CreateContainerError", 0));
            }
            Err(e) => {
                all_ok = false;
                errors.push(format!("container task failed: {e}"));
            }
        }
    }
    let stop = *stop_rx.borrow();
    let mut status = json!({
        "phase": if all_ok && stop.is_none() { "Succeeded" } else { "Failed" },
        "conditions": pod_conditions(true, false),
        "containerStatuses": statuses,
    });
    if stop == Some(Stop::Deadline) {
        status["reason"] = json!("DeadlineExceeded");
        status["message"] = json!(format!(
            "Pod was active on the node longer than the specified deadline ({}s)",
            spec.active_deadline_seconds.unwrap_or_default()
        ));
    } else if !errors.is_empty() {
        status["message"] = json!(errors.join("; "));
    }
    status
}

/// Runs container `idx` until it ends for good; returns its last exit and restarts.
async fn run_restarting(
    ctx: &Ctx,
    run: &PodRun,
    pod: &Pod,
    c: &Container,
    idx: usize,
    restart: &str,
    mut rx: watch::Receiver<Option<Stop>>,
) -> Result<(Exit, u32), String> {
    let mut restarts = 0u32;
    loop {
        let exit = run_container(ctx, run, pod, c, &mut rx, Some((idx, restarts))).await?;
        let again = match restart {
            "Never" => false,
            "OnFailure" => exit.code != 0,
            _ => true,
        };
        let statuses = {
            let mut st = lock(&run.statuses);
            if let Some(slot) = st.get_mut(idx) {
                *slot = terminated_status(c, &exit, restarts);
            }
            st.clone()
        };
        let patch = json!({"containerStatuses": statuses});
        patch_pod_status(ctx, &run.ns, &run.name, patch).await;
        let stopping = rx.borrow().is_some();
        if !again || stopping || !backoff(&mut rx).await {
            return Ok((exit, restarts));
        }
        restarts += 1;
    }
}

/// After a run, a pod deleted while it ran (or later) is removed with grace 0.
async fn wait_deleted(ctx: &Ctx, pod: &Pod, stop_rx: &mut watch::Receiver<Option<Stop>>) {
    if *stop_rx.borrow() == Some(Stop::Deleted) {
        force_delete(ctx, pod).await;
    }
}

/// Waits 1 s before a restart; false when the pod is being stopped meanwhile.
async fn backoff(stop_rx: &mut watch::Receiver<Option<Stop>>) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(1)) => false,
        _ = stop_rx.wait_for(|s| s.is_some()) => true,
    };
    !stopped && stop_rx.borrow().is_none()
}

/// Volumes and the service-account kubeconfig of a pod.
async fn prepare(ctx: &Ctx, pod: &Pod, dir: &Path) -> Result<PodRun, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    for sub in ["logs", "volumes", "home", "rootfs", "termination"] {
        mkdir(&dir.join(sub))?;
    }
    let mut mounts_by_volume = BTreeMap::new();
    for v in spec.volumes.clone().unwrap_or_default() {
        let path = volume_dir(ctx, pod, &ns, dir, &v).await?;
        mounts_by_volume.insert(v.name.clone(), path);
    }
    let sa = spec
        .service_account_name
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into());
    let token = token_for(ctx, &ns, &sa, None, 3600).await?;
    let kubeconfig = dir.join("kubeconfig");
    let yaml = super::kubeconfig_yaml(
        &ctx.env.server_url,
        &ctx.env.ca,
        &format!("    token: {token}\n"),
        &ns,
    );
    std::fs::write(&kubeconfig, yaml)
        .map_err(|e| format!("cannot write {}: {e}", kubeconfig.display()))?;
    Ok(PodRun {
        ns,
        name,
        dir: dir.to_path_buf(),
        mounts_by_volume,
        kubeconfig,
        statuses: Mutex::new(
            spec.containers
                .iter()
                .map(|c| waiting_status(c, "PodInitializing", 0))
                .collect(),
        ),
    })
}

fn mkdir(p: &Path) -> Result<(), String> {
    std::fs::create_dir_all(p).map_err(|e| format!("cannot create {}: {e}", p.display()))
}

async fn token_for(
    ctx: &Ctx,
    ns: &str,
    sa: &str,
    audience: Option<String>,
    seconds: i64,
) -> Result<String, String> {
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), ns);
    let tr: k8s_openapi::api::authentication::v1::TokenRequest = serde_json::from_value(json!({
        "spec": {"audiences": audience.into_iter().collect::<Vec<_>>(), "expirationSeconds": seconds.max(600)}
    }))
    .map_err(|e| format!("cannot build a TokenRequest: {e}"))?;
    let out = api
        .create_token_request(sa, &PostParams::default(), &tr)
        .await
        .map_err(|e| format!("TokenRequest for service account {ns}/{sa} failed: {e}"))?;
    out.status
        .and_then(|s| s.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| format!("TokenRequest for service account {ns}/{sa} returned no token"))
}

fn write_file(dir: &Path, rel: &str, data: &[u8], mode: Option<i32>) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if rel.split('/').any(|c| c == "..") || rel.starts_with('/') {
        return Err(format!(
            "volume item path {rel:?} must be relative without '..'"
        ));
    }
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        mkdir(parent)?;
    }
    std::fs::write(&path, data).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let mode = mode.unwrap_or(0o644) as u32 & 0o777;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot chmod {}: {e}", path.display()))
}

/// Writes `data` (key → bytes) into `dir`, honouring `items` like the kubelet does.
fn write_keys(
    dir: &Path,
    what: &str,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    mode: Option<i32>,
) -> Result<(), String> {
    match items {
        Some(items) if !items.is_empty() => {
            for it in items {
                let bytes = data
                    .get(&it.key)
                    .ok_or_else(|| format!("{what} has no key {:?}", it.key))?;
                write_file(dir, &it.path, bytes, it.mode.or(mode))?;
            }
        }
        _ => {
            for (k, v) in data {
                write_file(dir, k, v, mode)?;
            }
        }
    }
    Ok(())
}

async fn secret_data(
    ctx: &Ctx,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(s)) => Ok(s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .chain(
                s.string_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes())),
            )
            .collect()),
        Ok(None) if optional => Ok(BTreeMap::new()),
        Ok(None) => Err(format!("secret {ns}/{name} not found")),
        Err(e) => Err(format!("cannot read secret {ns}/{name}: {e}")),
    }
}

async fn configmap_data(
    ctx: &Ctx,
    ns: &str,
    name: &str,
    optional: bool,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(cm)) => Ok(cm
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .chain(
                cm.binary_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0)),
            )
            .collect()),
        Ok(None) if optional => Ok(BTreeMap::new()),
        Ok(None) => Err(format!("configmap {ns}/{name} not found")),
        Err(e) => Err(format!("cannot read configmap {ns}/{name}: {e}")),
    }
}

/// The value of a downward-API `fieldRef`.
fn field_value(pod: &Pod, f: &ObjectFieldSelector) -> Result<String, String> {
    let m = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let kv = |map: &Option<BTreeMap<String, String>>| {
        map.clone()
            .unwrap_or_default()
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let path = f.field_path.as_str();
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => kv(&m.labels),
        "metadata.annotations" => kv(&m.annotations),
        "spec.nodeName" => spec.node_name.unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .service_account_name
            .unwrap_or_else(|| "default".into()),
        "status.podIP" | "status.hostIP" => "127.0.0.1".into(),
        _ => {
            if let Some(key) = path
                .strip_prefix("metadata.labels['")
                .and_then(|s| s.strip_suffix("']"))
            {
                m.labels
                    .clone()
                    .unwrap_or_default()
                    .get(key)
                    .cloned()
                    .unwrap_or_default()
            } else if let Some(key) = path
                .strip_prefix("metadata.annotations['")
                .and_then(|s| s.strip_suffix("']"))
            {
                m.annotations
                    .clone()
                    .unwrap_or_default()
                    .get(key)
                    .cloned()
                    .unwrap_or_default()
            } else {
                return Err(format!(
                    "fieldRef {path:?} is not supported by the test node"
                ));
            }
        }
    })
}

/// Makes the directory that backs volume `v` and fills it.
async fn volume_dir(
    ctx: &Ctx,
    pod: &Pod,
    ns: &str,
    pod_dir: &Path,
    v: &Volume,
) -> Result<PathBuf, String> {
    if let Some(pvc) = &v.persistent_volume_claim {
        let dir = ctx.env.pvc_root.join(ns).join(&pvc.claim_name);
        mkdir(&dir)?;
        return Ok(dir);
    }
    if let Some(hp) = &v.host_path {
        return Ok(PathBuf::from(&hp.path));
    }
    let dir = pod_dir.join("volumes").join(&v.name);
    mkdir(&dir)?;
    if v.empty_dir.is_some() {
        return Ok(dir);
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let data = secret_data(ctx, ns, &name, s.optional.unwrap_or(false)).await?;
        write_keys(
            &dir,
            &format!("secret {ns}/{name}"),
            &data,
            s.items.as_ref(),
            s.default_mode,
        )?;
        return Ok(dir);
    }
    if let Some(c) = &v.config_map {
        let name = c.name.clone();
        let data = configmap_data(ctx, ns, &name, c.optional.unwrap_or(false)).await?;
        write_keys(
            &dir,
            &format!("configmap {ns}/{name}"),
            &data,
            c.items.as_ref(),
            c.default_mode,
        )?;
        return Ok(dir);
    }
    if let Some(d) = &v.downward_api {
        for it in d.items.clone().unwrap_or_default() {
            if let Some(f) = &it.field_ref {
                write_file(
                    &dir,
                    &it.path,
                    field_value(pod, f)?.as_bytes(),
                    it.mode.or(d.default_mode),
                )?;
            }
        }
        return Ok(dir);
    }
    if let Some(p) = &v.projected {
        let mode = p.default_mode;
        for src in p.sources.clone().unwrap_or_default() {
            if let Some(t) = &src.service_account_token {
                let sa = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.clone())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "default".into());
                let token = token_for(
                    ctx,
                    ns,
                    &sa,
                    t.audience.clone(),
                    t.expiration_seconds.unwrap_or(3600),
                )
                .await?;
                write_file(&dir, &t.path, token.as_bytes(), mode)?;
            }
            if let Some(s) = &src.secret {
                let name = s.name.clone();
                let data = secret_data(ctx, ns, &name, s.optional.unwrap_or(false)).await?;
                write_keys(
                    &dir,
                    &format!("secret {ns}/{name}"),
                    &data,
                    s.items.as_ref(),
                    mode,
                )?;
            }
            if let Some(c) = &src.config_map {
                let name = c.name.clone();
                let data = configmap_data(ctx, ns, &name, c.optional.unwrap_or(false)).await?;
                write_keys(
                    &dir,
                    &format!("configmap {ns}/{name}"),
                    &data,
                    c.items.as_ref(),
                    mode,
                )?;
            }
            if let Some(d) = &src.downward_api {
                for it in d.items.clone().unwrap_or_default() {
                    if let Some(f) = &it.field_ref {
                        write_file(
                            &dir,
                            &it.path,
                            field_value(pod, f)?.as_bytes(),
                            it.mode.or(mode),
                        )?;
                    }
                }
            }
        }
        return Ok(dir);
    }
    Err(format!(
        "volume {:?} has a type the test node does not support (persistentVolumeClaim, emptyDir, hostPath, secret, configMap, downwardAPI, projected are)",
        v.name
    ))
}

/// Replaces each mount path that starts a path in `s` by its real directory.
///
/// A mount path matches only as a whole path prefix: `/data` rewrites `/data` and
/// `/data/out` but not `/database` or `/x/data`.
fn rewrite_paths(s: &str, map: &[(String, PathBuf)]) -> String {
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/');
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut prev: Option<char> = None;
    'outer: while i < s.len() {
        let rest = &s[i..];
        if prev.is_none_or(|p| !is_path_char(p)) && rest.starts_with('/') {
            for (mount, real) in map {
                if let Some(after) = rest.strip_prefix(mount.as_str()) {
                    let boundary = after
                        .chars()
                        .next()
                        .is_none_or(|c| c == '/' || !is_path_char(c));
                    if boundary {
                        out.push_str(&real.to_string_lossy());
                        i += mount.len();
                        prev = mount.chars().last();
                        continue 'outer;
                    }
                }
            }
        }
        let Some(c) = rest.chars().next() else { break };
        out.push(c);
        prev = Some(c);
        i += c.len_utf8();
    }
    out
}

/// Expands `$(VAR)` references like the kubelet; `$$(VAR)` escapes, unknown stay as is.
fn expand_vars(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(t) = tail.strip_prefix("$$") {
            out.push('$');
            rest = t;
        } else if let Some(inner) = tail.strip_prefix("$(") {
            match inner.find(')') {
                Some(end) if vars.contains_key(&inner[..end]) => {
                    out.push_str(&vars[&inner[..end]]);
                    rest = &inner[end + 1..];
                }
                _ => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

async fn env_value(
    ctx: &Ctx,
    pod: &Pod,
    ns: &str,
    e: &EnvVar,
    vars: &BTreeMap<String, String>,
) -> Result<Option<String>, String> {
    if let Some(v) = &e.value {
        return Ok(Some(expand_vars(v, vars)));
    }
    let Some(from) = &e.value_from else {
        return Ok(Some(String::new()));
    };
    if let Some(r) = &from.secret_key_ref {
        let optional = r.optional.unwrap_or(false);
        let data = secret_data(ctx, ns, &r.name, optional).await?;
        return match data.get(&r.key) {
            Some(b) => Ok(Some(String::from_utf8_lossy(b).into_owned())),
            None if optional => Ok(None),
            None => Err(format!(
                "env {}: secret {ns}/{} has no key {:?}",
                e.name, r.name, r.key
            )),
        };
    }
    if let Some(r) = &from.config_map_key_ref {
        let optional = r.optional.unwrap_or(false);
        let data = configmap_data(ctx, ns, &r.name, optional).await?;
        return match data.get(&r.key) {
            Some(b) => Ok(Some(String::from_utf8_lossy(b).into_owned())),
            None if optional => Ok(None),
            None => Err(format!(
                "env {}: configmap {ns}/{} has no key {:?}",
                e.name, r.name, r.key
            )),
        };
    }
    if let Some(f) = &from.field_ref {
        return field_value(pod, f)
            .map(Some)
            .map_err(|m| format!("env {}: {m}", e.name));
    }
    Err(format!(
        "env {}: this valueFrom is not supported by the test node",
        e.name
    ))
}

/// Runs one container once; waits for it or for a stop signal.
async fn run_container(
    ctx: &Ctx,
    run: &PodRun,
    pod: &Pod,
    c: &Container,
    stop_rx: &mut watch::Receiver<Option<Stop>>,
    main: Option<(usize, u32)>,
) -> Result<Exit, String> {
    let ns = &run.ns;
    // Mount path → real dir, longest first so nested mounts win.
    let mut map: Vec<(String, PathBuf)> = Vec::new();
    for m in c.volume_mounts.clone().unwrap_or_default() {
        let base = run
            .mounts_by_volume
            .get(&m.name)
            .ok_or_else(|| format!("container {} mounts unknown volume {:?}", c.name, m.name))?;
        let real = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) if sub.split('/').any(|p| p == "..") => {
                return Err(format!(
                    "container {}: subPath {sub:?} must not contain '..'",
                    c.name
                ))
            }
            Some(sub) => {
                let p = base.join(sub);
                if !p.exists() {
                    mkdir(&p)?;
                }
                p
            }
            None => base.clone(),
        };
        let mount = m.mount_path.trim_end_matches('/').to_string();
        if mount.is_empty() {
            return Err(format!(
                "container {} mounts {:?} at /, which the test node cannot map",
                c.name, m.name
            ));
        }
        map.push((mount, real));
    }
    let term_path = c
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    let term_file = run.dir.join("termination").join(&c.name);
    let _ = std::fs::remove_file(&term_file);
    map.push((term_path, term_file.clone()));
    map.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));

    // Environment: a clean one, so the test's own environment does not leak in.
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    let mut env: Vec<(String, String)> = Vec::new();
    for ef in c.env_from.clone().unwrap_or_default() {
        let prefix = ef.prefix.clone().unwrap_or_default();
        let data = if let Some(s) = &ef.secret_ref {
            secret_data(ctx, ns, &s.name, s.optional.unwrap_or(false)).await?
        } else if let Some(cm) = &ef.config_map_ref {
            configmap_data(ctx, ns, &cm.name, cm.optional.unwrap_or(false)).await?
        } else {
            BTreeMap::new()
        };
        for (k, v) in data {
            let v = String::from_utf8_lossy(&v).into_owned();
            vars.insert(format!("{prefix}{k}"), v.clone());
            env.push((format!("{prefix}{k}"), v));
        }
    }
    for e in c.env.clone().unwrap_or_default() {
        if let Some(v) = env_value(ctx, pod, ns, &e, &vars).await? {
            let v = rewrite_paths(&v, &map);
            vars.insert(e.name.clone(), v.clone());
            env.push((e.name.clone(), v));
        }
    }

    let mut command = c.command.clone().unwrap_or_default();
    let mut args = c.args.clone().unwrap_or_default();
    if command.is_empty() {
        if c.image.as_deref().is_some_and(|i| i.contains("reverie")) {
            command = vec!["reverie".into()];
        } else {
            return Err(format!(
                "container {} has no command; the test node runs commands, not image entrypoints",
                c.name
            ));
        }
    }
    command.append(&mut args);
    let mut argv: Vec<String> = command
        .iter()
        .map(|a| rewrite_paths(&expand_vars(a, &vars), &map))
        .collect();
    let program = if argv[0] == "reverie" || argv[0] == "/usr/local/bin/reverie" {
        ctx.env.reverie.clone()
    } else {
        PathBuf::from(&argv[0])
    };
    argv.remove(0);

    let workdir = match c.working_dir.as_deref().filter(|w| !w.is_empty()) {
        Some(w) => {
            let mapped = rewrite_paths(w, &map);
            let p = if mapped == w {
                run.dir.join("rootfs").join(w.trim_start_matches('/'))
            } else {
                PathBuf::from(mapped)
            };
            mkdir(&p)?;
            p
        }
        None => run.dir.join("home"),
    };

    let path_map = map
        .iter()
        .map(|(m, r)| format!("{m}={}", r.display()))
        .collect::<Vec<_>>()
        .join(":");
    let host_path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    let log_path = run.dir.join("logs").join(format!("{}.log", c.name));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
    let log_err = log
        .try_clone()
        .map_err(|e| format!("cannot reopen {}: {e}", log_path.display()))?;

    let mut cmd = watched(&program, &argv);
    cmd.env_clear()
        .env("PATH", format!("{}:{host_path}", ctx.env.bin_dir.display()))
        .env("HOME", run.dir.join("home"))
        .env("HOSTNAME", &run.name)
        .env("KUBECONFIG", &run.kubeconfig)
        .env("REVERIE_PATH_MAP", &path_map)
        .env("REVERIE_TEST_PID", std::process::id().to_string())
        .current_dir(&workdir)
        .stdout(log)
        .stderr(log_err);
    for k in ["TMPDIR", "LANG", "RUST_BACKTRACE"] {
        if let Ok(v) = std::env::var(k) {
            cmd.env(k, v);
        }
    }
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let started_at = now();
    let mut child = tokio::process::Command::from(cmd)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let pid = child.id().unwrap_or_default();
    // Kills the process group if this task is dropped (node shutdown).
    let guard = GroupGuard(pid);
    if let Some((idx, restarts)) = main {
        let statuses = {
            let mut st = lock(&run.statuses);
            if let Some(slot) = st.get_mut(idx) {
                *slot = running_status(c, pid, &started_at, restarts);
            }
            st.clone()
        };
        patch_pod_status(ctx, ns, &run.name, json!({"containerStatuses": statuses})).await;
    }
    let finished = tokio::select! {
        s = child.wait() => Some(s),
        _ = stop_rx.wait_for(|s| s.is_some()) => None,
    };
    let status = match finished {
        Some(s) => s,
        None => {
            kill_group(pid, "TERM");
            match tokio::time::timeout(KILL_GRACE, child.wait()).await {
                Ok(s) => s,
                Err(_) => {
                    kill_group(pid, "KILL");
                    child.wait().await
                }
            }
        }
    }
    .map_err(|e| format!("waiting for {}: {e}", program.display()))?;
    drop(guard);
    let code = status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(9)
    });
    let mut message = std::fs::read(&term_file)
        .map(|b| String::from_utf8_lossy(&b[..b.len().min(MAX_MESSAGE)]).into_owned())
        .unwrap_or_default();
    let fallback = c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
    if message.is_empty() && fallback && code != 0 {
        let t = tail(&log_path, FALLBACK_LOG_LINES);
        let start = t.len().saturating_sub(2048);
        let start = (start..t.len())
            .find(|i| t.is_char_boundary(*i))
            .unwrap_or(t.len());
        message = t[start..].to_string();
    }
    Ok(Exit {
        code,
        started_at,
        finished_at: now(),
        message,
        pid,
    })
}

/// Kills a process group on drop (TERM, then the watchdog's own cleanup).
struct GroupGuard(u32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.0 != 0 {
            kill_group(self.0, "KILL");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_whole_path_prefixes_only() {
        let map = vec![
            ("/data/sub".to_string(), PathBuf::from("/r/sub")),
            ("/data".to_string(), PathBuf::from("/r/data")),
        ];
        assert_eq!(
            rewrite_paths("echo ok > /data/out", &map),
            "echo ok > /r/data/out"
        );
        assert_eq!(rewrite_paths("/data", &map), "/r/data");
        assert_eq!(rewrite_paths("/data/sub/x", &map), "/r/sub/x");
        assert_eq!(
            rewrite_paths("/database /x/data", &map),
            "/database /x/data"
        );
        assert_eq!(rewrite_paths("--store=/data", &map), "--store=/r/data");
    }

    #[test]
    fn expands_known_vars() {
        let vars = BTreeMap::from([("A".to_string(), "1".to_string())]);
        assert_eq!(expand_vars("x$(A)y $(B) $$(A)", &vars), "x1y $(B) $(A)");
    }
}
