//! A real Kubernetes control plane for integration tests.
//!
//! Every integration test binary that declares `mod common;` gets one control plane
//! (etcd, kube-apiserver, kube-controller-manager built by `hack/control-plane.sh`),
//! started on first use by [`ControlPlane::shared`] and shared by all tests of that
//! binary. No scheduler and no kubelet run: [`node::TestNode`] binds pods and runs
//! their containers as local processes.
//!
//! ```ignore
//! mod common;
//! use common::{node::TestNode, ControlPlane};
//!
//! #[tokio::test(flavor = "multi_thread")]
//! async fn my_test() {
//!     let cp = ControlPlane::shared().await;
//!     let node = TestNode::shared().await; // only when pods must run
//!     cp.install_crds().await;
//!     let ns = cp.create_namespace("my-test").await;
//!     cp.apply_yaml(&ns, "…");
//!     // cp.client(), cp.client_as(user, groups), cp.kubectl(&[…]), node.pvc_dir(&ns, "claim")
//! }
//! ```
//!
//! Environment: `REVERIE_TEST_KEEP=1` keeps the temp dir (path printed on stderr);
//! `REVERIE_K8S_BIN=<dir>` uses prebuilt binaries instead of running the script.
//!
//! Teardown: a `static` is never dropped, so every server runs under a small `sh`
//! watchdog that kills its process group once the test binary's PID is gone, and a
//! last watchdog removes the temporary directory (unless `REVERIE_TEST_KEEP=1`).
//!
//! Tokio note: each `#[tokio::test]` has its own runtime, and a `kube::Client` is bound
//! to the runtime that created it. So [`ControlPlane::client`] builds a fresh client
//! on every call (cheap: the parsed configuration is cached) — do not keep a client
//! in a `static`.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub mod node;
pub mod reverie;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::OnceCell;

/// How long each server may take to become ready before the start is declared failed.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Shell watchdog wrapped around every long-running process started by the tests.
///
/// Runs `"$@"` as a child, waits for it and exits with its status. A guard subshell
/// kills the whole process group (the caller makes this `sh` a group leader) with TERM,
/// then KILL 2 s later, once the test process (`REVERIE_TEST_PID`) or this `sh` is gone —
/// statics are never dropped, so this is what stops servers and pods when a test binary
/// exits or panics. The guard ignores TERM so that a group-wide TERM (from the test node,
/// or its own) is always followed by the KILL. (Polling the child with `kill -0`
/// instead of `wait` would not work: a zombie still answers it.)
pub(crate) const WATCHDOG: &str = r#"
"$@" &
child=$!
(
  trap '' TERM
  while kill -0 "$REVERIE_TEST_PID" 2>/dev/null && kill -0 $$ 2>/dev/null; do sleep 1; done
  kill -TERM -$$ 2>/dev/null
  sleep 2
  kill -KILL -$$ 2>/dev/null
) </dev/null >/dev/null 2>&1 &
guard=$!
wait $child
code=$?
kill -KILL $guard 2>/dev/null
exit $code
"#;

/// Removes the temporary directory once the test process is gone (after the servers).
const DIR_REAPER: &str = r#"
while kill -0 "$REVERIE_TEST_PID" 2>/dev/null; do sleep 1; done
sleep 4
rm -rf -- "$1"
"#;

/// Builds a command that runs `program args…` under [`WATCHDOG`], in a new process group.
pub(crate) fn watched(program: &Path, args: &[String]) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(WATCHDOG)
        .arg("reverie-watchdog")
        .arg(program)
        .args(args)
        .env("REVERIE_TEST_PID", std::process::id().to_string())
        .stdin(Stdio::null())
        .process_group(0);
    cmd
}

/// Sends `signal` to the process group `pgid` (the watchdog is the group leader).
pub(crate) fn kill_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The last `n` lines of a log file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// A running server process (etcd, kube-apiserver, kube-controller-manager).
struct Server {
    name: &'static str,
    child: std::process::Child,
    log: PathBuf,
}

/// One etcd + kube-apiserver + kube-controller-manager, private to a test binary.
pub struct ControlPlane {
    dir: PathBuf,
    bin: PathBuf,
    kubeconfig: PathBuf,
    server_url: String,
    ca: PathBuf,
    config: kube::Config,
    servers: Mutex<Vec<Server>>,
    counter: AtomicU64,
    /// Time the cold start took (binaries present), for reports.
    pub start_duration: Duration,
}

/// The start result is kept, so that after a failed start every other test of the
/// binary fails at once with the same message instead of trying again.
static SHARED: OnceCell<Result<ControlPlane, String>> = OnceCell::const_new();

impl ControlPlane {
    /// The control plane of this test binary, started on first use.
    ///
    /// Panics with a message naming the failing step (and the server's last log lines)
    /// when the control plane cannot start: there is nothing a test could do instead.
    pub async fn shared() -> &'static ControlPlane {
        let started = SHARED.get_or_init(ControlPlane::start).await;
        match started {
            Ok(cp) => cp,
            Err(e) => panic!("test control plane failed to start: {e}"),
        }
    }

    /// Starts a new control plane (most tests want [`ControlPlane::shared`]).
    ///
    /// Tried a second time when a port picked as free was taken meanwhile by another
    /// process (parallel test binaries pick ports at the same time).
    pub async fn start() -> Result<ControlPlane, String> {
        ControlPlane::start_with(false).await
    }

    /// Starts a new control plane whose apiserver writes an audit log of every
    /// write request ([`ControlPlane::audit_log_path`], one JSON event per
    /// line, metadata level), for counting the writes a component makes.
    pub async fn start_audited() -> Result<ControlPlane, String> {
        ControlPlane::start_with(true).await
    }

    async fn start_with(audit: bool) -> Result<ControlPlane, String> {
        match ControlPlane::start_once(audit).await {
            Err(e) if e.contains("address already in use") => {
                eprintln!("control plane start hit a port race, retrying: {e}");
                ControlPlane::start_once(audit).await
            }
            other => other,
        }
    }

    async fn start_once(audit: bool) -> Result<ControlPlane, String> {
        let started = Instant::now();
        let bin = ensure_binaries()?;
        let dir = make_temp_dir()?;
        let keep = std::env::var("REVERIE_TEST_KEEP").is_ok_and(|v| v == "1");
        if keep {
            eprintln!(
                "REVERIE_TEST_KEEP=1: control plane files kept in {}",
                dir.display()
            );
        } else {
            Command::new("sh")
                .arg("-c")
                .arg(DIR_REAPER)
                .arg("reverie-reaper")
                .arg(&dir)
                .env("REVERIE_TEST_PID", std::process::id().to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start the temp dir reaper: {e}"))?;
        }
        let pki = dir.join("pki");
        make_pki(&pki)?;

        let etcd_port = free_port()?;
        let etcd_peer_port = free_port()?;
        let api_port = free_port()?;
        let server_url = format!("https://127.0.0.1:{api_port}");
        let ca = pki.join("ca.crt");
        let kubeconfig = dir.join("admin.kubeconfig");
        std::fs::write(
            &kubeconfig,
            kubeconfig_yaml(
                &server_url,
                &ca,
                &format!(
                    "    client-certificate: {}\n    client-key: {}\n",
                    pki.join("admin.crt").display(),
                    pki.join("admin.key").display()
                ),
                "default",
            ),
        )
        .map_err(|e| format!("cannot write {}: {e}", kubeconfig.display()))?;

        let mut servers = Vec::new();
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        servers.push(spawn_server(
            "etcd",
            &bin,
            &dir,
            &[
                "--name=reverie-test".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer_port}"),
                format!("--initial-cluster=reverie-test=http://127.0.0.1:{etcd_peer_port}"),
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
        )?);
        let p = |f: &str| pki.join(f).display().to_string();
        let audit_args = if audit {
            audit_flags(&dir)?
        } else {
            Vec::new()
        };
        servers.push(spawn_server(
            "kube-apiserver",
            &bin,
            &dir,
            &[
                audit_args,
                vec![
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                // The default reconciler refuses a loopback advertise address; nothing
                // in the tests needs the `kubernetes` Service endpoints.
                "--endpoint-reconciler-type=none".into(),
                format!("--secure-port={api_port}"),
                format!("--cert-dir={}", dir.join("apiserver-certs").display()),
                format!("--tls-cert-file={}", p("apiserver.crt")),
                format!("--tls-private-key-file={}", p("apiserver.key")),
                format!("--client-ca-file={}", p("ca.crt")),
                "--authorization-mode=RBAC".into(),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                format!("--service-account-key-file={}", p("sa.pub")),
                format!("--service-account-signing-key-file={}", p("sa.key")),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                // ValidatingAdmissionPolicy is GA and on by default in 1.37; naming it
                // keeps the chart's approval policy working even if defaults change.
                "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,DefaultStorageClass,ResourceQuota,ValidatingAdmissionPolicy,ValidatingAdmissionWebhook,MutatingAdmissionWebhook".into(),
                "--allow-privileged=true".into(),
                "--profiling=false".into(),
                "--enable-priority-and-fairness=false".into(),
                ],
            ]
            .concat(),
        )?);
        let km = kubeconfig.display().to_string();
        let kcm_args = [
            format!("--kubeconfig={km}"),
            format!("--authentication-kubeconfig={km}"),
            format!("--authorization-kubeconfig={km}"),
            "--bind-address=127.0.0.1".into(),
            "--secure-port=0".into(),
            format!("--service-account-private-key-file={}", p("sa.key")),
            format!("--root-ca-file={}", p("ca.crt")),
            "--leader-elect=false".into(),
            // Only what the tests need: every extra controller adds start-up time on a
            // loaded machine (the full set takes ~10 s). No kubelet runs, so no node
            // lifecycle or IPAM controller; the PVC/PV protection controllers lift the
            // finalizers that admission puts on claims, so namespaces can be deleted.
            "--controllers=garbage-collector-controller,job-controller,cronjob-controller,\
             ttl-after-finished-controller,serviceaccount-controller,\
             serviceaccount-token-controller,root-ca-certificate-publisher-controller,\
             namespace-controller,deployment-controller,replicaset-controller,\
             pod-garbage-collector-controller,persistentvolumeclaim-protection-controller,\
             persistentvolume-protection-controller,clusterrole-aggregation-controller,\
             validatingadmissionpolicy-status-controller"
                .into(),
            "--concurrent-job-syncs=10".into(),
        ];
        // Started before the apiserver is ready so that their start-ups overlap; if it
        // gave up waiting for the apiserver, it is started again below.
        let mut kcm = spawn_server("kube-controller-manager", &bin, &dir, &kcm_args)?;
        let config = Kubeconfig::read_from(&kubeconfig)
            .map_err(|e| format!("cannot read {}: {e}", kubeconfig.display()))?;
        let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
            .await
            .map_err(|e| format!("cannot load {}: {e}", kubeconfig.display()))?;
        let cp = ControlPlane {
            dir,
            bin,
            kubeconfig,
            server_url,
            ca,
            config,
            servers: Mutex::new(servers),
            counter: AtomicU64::new(0),
            start_duration: Duration::ZERO,
        };
        if let Err(e) = cp.wait_ready().await {
            kill_group(kcm.child.id(), "KILL");
            return Err(e);
        }
        if let Ok(Some(_)) = kcm.child.try_wait() {
            kcm = spawn_server("kube-controller-manager", &cp.bin, &cp.dir, &kcm_args)?;
        }
        cp.lock_servers().push(kcm);
        cp.wait_controller_manager().await?;
        let mut cp = cp;
        cp.start_duration = started.elapsed();
        Ok(cp)
    }

    fn lock_servers(&self) -> std::sync::MutexGuard<'_, Vec<Server>> {
        // A panic while holding this lock leaves the data valid (a Vec of children).
        self.servers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Error text for a server that failed: what, and its last log lines.
    fn server_failure(&self, name: &str, what: &str) -> String {
        let servers = self.lock_servers();
        let mut msg = format!("{name} {what}");
        for s in servers.iter() {
            msg.push_str(&format!(
                "\n--- last log lines of {} ({}):\n{}",
                s.name,
                s.log.display(),
                tail(&s.log, 25)
            ));
        }
        msg
    }

    /// Checks that no server has exited; names the one that did.
    fn check_alive(&self) -> Result<(), String> {
        let mut dead = None;
        for s in self.lock_servers().iter_mut() {
            if let Ok(Some(status)) = s.child.try_wait() {
                dead = Some((s.name, status));
                break;
            }
        }
        match dead {
            Some((name, status)) => Err(self.server_failure(name, &format!("exited ({status})"))),
            None => Ok(()),
        }
    }

    async fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let pem = std::fs::read(&self.ca)
            .map_err(|e| format!("cannot read {}: {e}", self.ca.display()))?;
        let ca =
            reqwest::Certificate::from_pem(&pem).map_err(|e| format!("bad CA certificate: {e}"))?;
        // /readyz is open to anonymous users (system:public-info-viewer).
        let http = reqwest::Client::builder()
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        let url = format!("{}/readyz", self.server_url);
        loop {
            self.check_alive()?;
            if let Ok(resp) = http.get(&url).send().await {
                if resp.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(self.server_failure(
                    "kube-apiserver",
                    &format!("did not become ready in {}s", READY_TIMEOUT.as_secs()),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The controller manager is working once it made the `default` ServiceAccount of
    /// `default`; tests create pods right away, and pods need that account.
    async fn wait_controller_manager(&self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let sas: Api<ServiceAccount> = Api::namespaced(self.client(), "default");
        loop {
            self.check_alive()?;
            if let Ok(Some(_)) = sas.get_opt("default").await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.server_failure(
                    "kube-controller-manager",
                    &format!(
                        "did not create the default ServiceAccount in {}s",
                        READY_TIMEOUT.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Path of the admin (`system:masters`) kubeconfig.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Directory holding etcd, kube-apiserver, kube-controller-manager, kubectl and helm.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The temporary directory of this control plane (PKI, logs, volumes).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `https://127.0.0.1:<port>` of the apiserver.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The cluster CA certificate (PEM file).
    pub fn ca_path(&self) -> &Path {
        &self.ca
    }

    /// The apiserver's audit log (written only by [`ControlPlane::start_audited`]).
    pub fn audit_log_path(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    /// A kubeconfig file with the admin credentials that impersonates `user`
    /// in `groups`, for a process that must show up as its own user (e.g. in
    /// the audit log). Written under the control plane's directory.
    pub fn kubeconfig_as(&self, user: &str, groups: &[&str]) -> PathBuf {
        let pki = self.dir.join("pki");
        let mut auth = format!(
            "    client-certificate: {}\n    client-key: {}\n    as: {user}\n",
            pki.join("admin.crt").display(),
            pki.join("admin.key").display()
        );
        if !groups.is_empty() {
            auth.push_str("    as-groups:\n");
            for g in groups {
                auth.push_str(&format!("    - {g}\n"));
            }
        }
        let path = self.dir.join(format!("{user}.kubeconfig"));
        let yaml = kubeconfig_yaml(&self.server_url, &self.ca, &auth, "default");
        if let Err(e) = std::fs::write(&path, yaml) {
            panic!("cannot write {}: {e}", path.display());
        }
        path
    }

    /// A new admin client bound to the calling tokio runtime.
    pub fn client(&self) -> kube::Client {
        match kube::Client::try_from(self.config.clone()) {
            Ok(c) => c,
            Err(e) => panic!("cannot build a client for {}: {e}", self.server_url),
        }
    }

    /// A client impersonating `user` with `groups` (admin credentials + `Impersonate-*`).
    pub fn client_as(&self, user: &str, groups: &[&str]) -> kube::Client {
        let mut config = self.config.clone();
        config.auth_info.impersonate = Some(user.to_string());
        config.auth_info.impersonate_groups = if groups.is_empty() {
            None
        } else {
            Some(groups.iter().map(|g| g.to_string()).collect())
        };
        match kube::Client::try_from(config) {
            Ok(c) => c,
            Err(e) => panic!(
                "cannot build a client as {user} for {}: {e}",
                self.server_url
            ),
        }
    }

    /// Runs the built kubectl with the admin kubeconfig; panics only when it cannot start.
    pub fn kubectl<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        let mut cmd = Command::new(self.bin.join("kubectl"));
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        match cmd.output() {
            Ok(out) => out,
            Err(e) => panic!("cannot run {}: {e}", self.bin.join("kubectl").display()),
        }
    }

    /// Runs kubectl as `user` (impersonation with `--as`; a plain user gets only the
    /// `system:authenticated` group).
    pub fn kubectl_as<S: AsRef<std::ffi::OsStr>>(&self, user: &str, args: &[S]) -> Output {
        self.kubectl_as_groups(user, &[], args)
    }

    /// Runs kubectl as `user` in `groups` (`--as`, plus `--as-group` for each group).
    pub fn kubectl_as_groups<S: AsRef<std::ffi::OsStr>>(
        &self,
        user: &str,
        groups: &[&str],
        args: &[S],
    ) -> Output {
        let mut cmd = Command::new(self.bin.join("kubectl"));
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg(format!("--as={user}"));
        for g in groups {
            cmd.arg(format!("--as-group={g}"));
        }
        cmd.args(args);
        match cmd.output() {
            Ok(out) => out,
            Err(e) => panic!("cannot run {}: {e}", self.bin.join("kubectl").display()),
        }
    }

    /// Runs the built helm against this control plane (`--kubeconfig`, and a helm
    /// home under the temp dir so tests never touch the user's helm config).
    pub fn helm<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        let home = self.dir.join("helm");
        let mut cmd = Command::new(self.bin.join("helm"));
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_DATA_HOME", home.join("data"));
        match cmd.output() {
            Ok(out) => out,
            Err(e) => panic!("cannot run {}: {e}", self.bin.join("helm").display()),
        }
    }

    /// Like [`ControlPlane::kubectl`], but panics with stdout/stderr when kubectl fails;
    /// returns stdout.
    pub fn kubectl_ok<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> String {
        let out = self.kubectl(args);
        let shown: Vec<String> = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        assert!(
            out.status.success(),
            "kubectl {} failed ({}):\nstdout: {}\nstderr: {}",
            shown.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Applies a YAML manifest (one or more documents) with kubectl, server-side, into
    /// namespace `ns` (objects that name no namespace land there); panics with kubectl's
    /// output when it fails. Returns kubectl's stdout.
    pub fn apply_yaml(&self, ns: &str, yaml: &str) -> String {
        use std::io::Write;
        let kubectl = self.bin.join("kubectl");
        let mut child = match Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args([
                "apply",
                "--server-side",
                "--field-manager=reverie-tests",
                "-n",
                ns,
                "-f",
                "-",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => panic!("cannot run {}: {e}", kubectl.display()),
        };
        if let Some(mut stdin) = child.stdin.take() {
            if let Err(e) = stdin.write_all(yaml.as_bytes()) {
                panic!("cannot write the manifest to kubectl: {e}");
            }
        }
        let out = match child.wait_with_output() {
            Ok(o) => o,
            Err(e) => panic!("waiting for kubectl apply: {e}"),
        };
        assert!(
            out.status.success(),
            "kubectl apply in namespace {ns} failed ({}):\n{}\nmanifest:\n{yaml}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until pod `ns/name` is `Succeeded` or `Failed`; returns it.
    pub async fn wait_pod_finished(&self, ns: &str, name: &str, timeout: Duration) -> Pod {
        let pods: Api<Pod> = Api::namespaced(self.client(), ns);
        eventually(&format!("pod {ns}/{name} to finish"), timeout, || async {
            let pod = pods.get_opt(name).await.map_err(|e| e.to_string())?;
            let phase = pod
                .as_ref()
                .and_then(|p| p.status.as_ref())
                .and_then(|s| s.phase.clone())
                .unwrap_or_default();
            match pod {
                Some(p) if phase == "Succeeded" || phase == "Failed" => Ok(p),
                Some(_) => Err(format!("phase {phase:?}")),
                None => Err("not found".into()),
            }
        })
        .await
    }

    /// Waits until Job `ns/name` has a true `Complete` or `Failed` condition; returns it.
    pub async fn wait_job_finished(&self, ns: &str, name: &str, timeout: Duration) -> Job {
        let jobs: Api<Job> = Api::namespaced(self.client(), ns);
        eventually(&format!("job {ns}/{name} to finish"), timeout, || async {
            let job = jobs.get_opt(name).await.map_err(|e| e.to_string())?;
            let Some(job) = job else {
                return Err("not found".into());
            };
            let conds = job
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            let done = conds
                .iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True");
            if done {
                Ok(job)
            } else {
                Err(format!("status {:?}", job.status))
            }
        })
        .await
    }

    /// Creates a namespace `<prefix>-<n>` unique in this control plane and waits for its
    /// `default` ServiceAccount (pods cannot be admitted before it exists).
    pub async fn create_namespace(&self, prefix: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::SeqCst);
        let prefix: String = prefix
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        let name = format!("{}-{n}", prefix.trim_matches('-'));
        let ns: Namespace = match serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"reverie.dev/test": "true"}}
        })) {
            Ok(ns) => ns,
            Err(e) => panic!("cannot build namespace {name}: {e}"),
        };
        let api: Api<Namespace> = Api::all(self.client());
        if let Err(e) = api.create(&PostParams::default(), &ns).await {
            panic!("cannot create namespace {name}: {e}");
        }
        let sas: Api<ServiceAccount> = Api::namespaced(self.client(), &name);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(_)) = sas.get_opt("default").await {
                return name;
            }
            assert!(
                Instant::now() < deadline,
                "the default ServiceAccount of namespace {name} did not appear in 30s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Server-side applies every file in `crds/` (if any) and waits until each CRD is
    /// Established. Safe to call from many tests: apply is idempotent.
    pub async fn install_crds(&self) -> Vec<String> {
        self.install_crds_from(&Path::new(env!("CARGO_MANIFEST_DIR")).join("crds"))
            .await
    }

    /// [`ControlPlane::install_crds`] for another directory; returns the CRD names
    /// (empty when the directory is missing or holds no YAML/JSON file).
    pub async fn install_crds_from(&self, dir: &Path) -> Vec<String> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
                })
                .collect(),
            Err(_) => return Vec::new(),
        };
        if files.is_empty() {
            return Vec::new();
        }
        files.sort();
        let mut names = Vec::new();
        for file in &files {
            let out = self.kubectl_ok(&[
                "apply".as_ref(),
                "--server-side".as_ref(),
                "--force-conflicts".as_ref(),
                "--field-manager=reverie-tests".as_ref(),
                "-o".as_ref(),
                "name".as_ref(),
                "-f".as_ref(),
                file.as_os_str(),
            ]);
            for line in out.lines() {
                if let Some(name) = line
                    .trim()
                    .strip_prefix("customresourcedefinition.apiextensions.k8s.io/")
                {
                    names.push(name.to_string());
                }
            }
        }
        let api: Api<CustomResourceDefinition> = Api::all(self.client());
        let deadline = Instant::now() + Duration::from_secs(30);
        for name in &names {
            loop {
                let established = api.get_opt(name).await.ok().flatten().is_some_and(|crd| {
                    crd.status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
                if established {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "CRD {name} did not become Established in 30s"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        names
    }

    /// Directory that backs PersistentVolumeClaim `claim` of namespace `ns` for every
    /// test node of this control plane (created on first use by a pod, or by a test
    /// that seeds it).
    pub fn pvc_dir(&self, ns: &str, claim: &str) -> PathBuf {
        self.dir.join("pvc").join(ns).join(claim)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Reverse start order: controller manager, apiserver, etcd.
        let mut servers = self.lock_servers();
        while let Some(mut s) = servers.pop() {
            kill_group(s.child.id(), "TERM");
            let _ = s.child.wait();
        }
    }
}

/// Polls `check` every 200 ms until it returns `Some`, or panics after `timeout` with
/// "timed out after Ns waiting for <what>" (plus the last state `check` described).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(state) => state,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {}s waiting for {what}; last state: {last}",
            timeout.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The audit policy of [`ControlPlane::start_audited`]: every write, at
/// metadata level, once its response is sent; nothing else.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
- level: None
";

/// Writes the audit policy into `dir`; the apiserver flags that use it.
fn audit_flags(dir: &Path) -> Result<Vec<String>, String> {
    let policy = dir.join("audit-policy.yaml");
    std::fs::write(&policy, AUDIT_POLICY)
        .map_err(|e| format!("cannot write {}: {e}", policy.display()))?;
    Ok(vec![
        format!("--audit-policy-file={}", policy.display()),
        format!("--audit-log-path={}", dir.join("audit.log").display()),
        "--audit-log-format=json".into(),
        // The log backend's default (blocking) mode writes each event as the
        // request completes, so the file is complete when a count is taken.
        "--audit-log-mode=blocking".into(),
    ])
}

fn kubeconfig_yaml(server: &str, ca: &Path, user: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: reverie-test\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: user\n  user:\n{user}contexts:\n- name: reverie-test\n  context:\n    cluster: reverie-test\n    user: user\n    namespace: {namespace}\ncurrent-context: reverie-test\n",
        ca = ca.display()
    )
}

/// Runs `hack/control-plane.sh` and returns the bin directory it prints last.
///
/// `REVERIE_K8S_BIN=<dir>` skips the script and uses that directory as is (e.g. while
/// the script's lock is held by a long build of an unrelated binary).
fn ensure_binaries() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("REVERIE_K8S_BIN").filter(|d| !d.is_empty()) {
        return check_bin_dir(PathBuf::from(dir));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/control-plane.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed ({})", script.display(), out.status));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let bin = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| PathBuf::from(l.trim()))
        .ok_or_else(|| format!("{} printed no bin directory", script.display()))?;
    check_bin_dir(bin)
}

fn check_bin_dir(bin: PathBuf) -> Result<PathBuf, String> {
    for b in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kubectl",
    ] {
        if !bin.join(b).is_file() {
            return Err(format!("{} is missing from {}", b, bin.display()));
        }
    }
    Ok(bin)
}

fn make_temp_dir() -> Result<PathBuf, String> {
    let dir = tempfile::Builder::new()
        .prefix("reverie-cp-")
        .tempdir()
        .map_err(|e| format!("cannot create a temp dir: {e}"))?;
    // The reaper watchdog (or the user, with REVERIE_TEST_KEEP=1) removes it.
    Ok(dir.keep())
}

/// A loopback port that was free a moment ago (the OS picks it).
fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("cannot bind 127.0.0.1:0 to find a free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("cannot read the bound port: {e}"))
}

fn spawn_server(
    name: &'static str,
    bin: &Path,
    dir: &Path,
    args: &[String],
) -> Result<Server, String> {
    let log = dir.join(format!("{name}.log"));
    let file =
        std::fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let err = file
        .try_clone()
        .map_err(|e| format!("cannot reopen {}: {e}", log.display()))?;
    let child = watched(&bin.join(name), args)
        .stdout(file)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    Ok(Server { name, child, log })
}

/// Runs openssl with `args` in `dir`; the error names the step.
fn openssl(dir: &Path, step: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run openssl ({step}): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl failed making the {step}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `openssl genpkey` arguments for a P-256 key in PKCS#8 (read by Go, rustls, openssl).
fn ec_key(out: &str) -> [&str; 7] {
    [
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        out,
    ]
}

/// CA, apiserver serving cert, admin client cert (`O=system:masters`), SA key pair.
fn make_pki(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).map_err(|e| format!("cannot write {name}: {e}"))
    };
    write(
        "server.ext",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1\n",
    )?;
    write(
        "client.ext",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    )?;
    // P-256 keys: generating RSA keys costs seconds on a loaded machine.
    openssl(dir, "CA key", &ec_key("ca.key"))?;
    openssl(
        dir,
        "CA certificate",
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=reverie-test-ca",
            "-days",
            "3650",
            "-out",
            "ca.crt",
        ],
    )?;
    for (name, subj, ext) in [
        ("apiserver", "/CN=kube-apiserver", "server.ext"),
        (
            "admin",
            "/O=system:masters/CN=reverie-test-admin",
            "client.ext",
        ),
    ] {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let crt = format!("{name}.crt");
        openssl(dir, &format!("{name} key"), &ec_key(&key))?;
        openssl(
            dir,
            &format!("{name} CSR"),
            &["req", "-new", "-key", &key, "-subj", subj, "-out", &csr],
        )?;
        openssl(
            dir,
            &format!("{name} certificate"),
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "3650",
                "-extfile",
                ext,
                "-out",
                &crt,
            ],
        )?;
    }
    openssl(dir, "service-account key", &ec_key("sa.key"))?;
    openssl(
        dir,
        "service-account public key",
        &["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"],
    )?;
    Ok(())
}

/// A process started by a test whose stderr is kept line by line, with the
/// time each line arrived (for waiting on a log line, and for measuring
/// when something happened). It runs under [`WATCHDOG`] in its own process
/// group, so it dies with the test binary; [`Logged::kill`] sends SIGKILL
/// to the whole group.
pub struct Logged {
    name: String,
    child: std::process::Child,
    lines: std::sync::Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Logged {
    /// Starts `program args…` with `env` (stdout discarded, stderr kept).
    pub fn spawn(name: &str, program: &Path, args: &[String], env: &[(&str, String)]) -> Logged {
        use std::io::BufRead;
        let mut cmd = watched(program, args);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => panic!("cannot start {name} ({}): {e}", program.display()),
        };
        let lines = std::sync::Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            let sink = lines.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    sink.lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push((Instant::now(), line));
                }
            });
        }
        Logged {
            name: name.to_string(),
            child,
            lines,
        }
    }

    /// When the first stderr line containing `needle` arrived, if it did.
    pub fn line_time(&self, needle: &str) -> Option<Instant> {
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|(_, l)| l.contains(needle))
            .map(|(t, _)| *t)
    }

    /// Waits up to `timeout` for a stderr line containing `needle`; panics
    /// with the output so far when it does not come (or the process ends).
    pub async fn wait_line(&mut self, needle: &str, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = self.line_time(needle) {
                return t;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Give the reader thread a moment to drain the pipe.
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Some(t) = self.line_time(needle) {
                    return t;
                }
                panic!(
                    "{} exited ({status}) before logging {needle:?}:\n{}",
                    self.name,
                    self.text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not log {needle:?} within {}s:\n{}",
                self.name,
                timeout.as_secs(),
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        let lines = self
            .lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let all: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
        all.join("\n")
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL to the process group, then reaps it; returns when the kill
    /// was sent.
    pub fn kill(&mut self) -> Instant {
        let at = Instant::now();
        kill_group(self.child.id(), "KILL");
        let _ = self.child.wait();
        at
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if self.running() {
            self.kill();
        }
    }
}

impl ControlPlane {
    /// Starts `reverie controller` as its own process against this control
    /// plane (admin kubeconfig), watching `ns`, with `args` added and
    /// `env` set (e.g. a fault point). Logs at info level for reverie.
    pub fn spawn_controller(
        &self,
        name: &str,
        ns: &str,
        args: &[&str],
        env: &[(&str, String)],
    ) -> Logged {
        let mut all: Vec<String> = [
            "controller",
            "--namespace",
            ns,
            "--image",
            "reverie",
            "--metrics-addr",
            "off",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        all.extend(args.iter().map(|s| s.to_string()));
        let mut vars = vec![
            ("KUBECONFIG", self.kubeconfig.display().to_string()),
            ("RUST_LOG", "reverie=info".to_string()),
            // Plain log lines (no colour codes) to search.
            ("NO_COLOR", "1".to_string()),
        ];
        vars.extend(env.iter().cloned());
        Logged::spawn(name, Path::new(env!("CARGO_BIN_EXE_reverie")), &all, &vars)
    }
}

impl ControlPlane {
    /// Kills kube-apiserver (SIGKILL to its process group, as a crash
    /// would), keeps it down for `down`, starts it again with the same
    /// arguments (same port, same etcd, so every object survives) and waits
    /// until it is ready. Returns how long it was unreachable in total.
    ///
    /// Every client of this control plane sees the outage: use it only in a
    /// test binary of its own, and hold its tests apart from each other.
    pub async fn restart_apiserver(&self, down: Duration) -> Duration {
        let started = Instant::now();
        let (program, args) = {
            let mut servers = self.lock_servers();
            let Some(i) = servers.iter().position(|s| s.name == "kube-apiserver") else {
                panic!("no kube-apiserver among the servers of this control plane");
            };
            let pid = servers[i].child.id();
            // The watchdog's command line is `sh -c <script> reverie-watchdog
            // <program> <args…>`: the arguments to start it again with.
            let cmdline = match std::fs::read(format!("/proc/{pid}/cmdline")) {
                Ok(c) => c,
                Err(e) => panic!("cannot read the apiserver's command line (pid {pid}): {e}"),
            };
            let parts: Vec<String> = cmdline
                .split(|b| *b == 0)
                .filter(|p| !p.is_empty())
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            let Some(at) = parts.iter().position(|p| p == "reverie-watchdog") else {
                panic!("unexpected apiserver command line: {parts:?}");
            };
            let program = PathBuf::from(&parts[at + 1]);
            let args = parts[at + 2..].to_vec();
            kill_group(pid, "KILL");
            let mut old = servers.remove(i);
            let _ = old.child.wait();
            (program, args)
        };
        tokio::time::sleep(down).await;
        let log = self.dir.join("kube-apiserver.restarted.log");
        let file = match std::fs::File::create(&log) {
            Ok(f) => f,
            Err(e) => panic!("cannot create {}: {e}", log.display()),
        };
        let err = match file.try_clone() {
            Ok(f) => f,
            Err(e) => panic!("cannot reopen {}: {e}", log.display()),
        };
        let child = match watched(&program, &args).stdout(file).stderr(err).spawn() {
            Ok(c) => c,
            Err(e) => panic!("cannot start kube-apiserver again: {e}"),
        };
        self.lock_servers().push(Server {
            name: "kube-apiserver",
            child,
            log,
        });
        if let Err(e) = self.wait_ready().await {
            panic!("kube-apiserver did not come back: {e}");
        }
        started.elapsed()
    }
}
