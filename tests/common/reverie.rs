//! Helpers for tests of reverie's own objects on the test control plane:
//! the approval policy, store seeding, readiness and patch phases.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::Api;
use reverie::api::{MemoryPatch, PatchPhase};

use super::{eventually, ControlPlane};

/// A command's stdout and stderr together, for assertion messages.
pub fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Copies a directory tree (seeds a claim directory from `examples/store`).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// True when the conditions hold `Ready=True`.
pub fn is_ready(conds: Option<&[Condition]>) -> bool {
    conds.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits until MemoryPatch `name` reaches phase `want`; returns it.
pub async fn wait_patch_phase(
    cp: &ControlPlane,
    ns: &str,
    name: &str,
    want: PatchPhase,
    timeout: Duration,
) -> MemoryPatch {
    let api: Api<MemoryPatch> = Api::namespaced(cp.client(), ns);
    eventually(&format!("patch {name} to be {want:?}"), timeout, || async {
        let p = api.get(name).await.map_err(|e| e.to_string())?;
        match p.status.as_ref().and_then(|s| s.phase) {
            Some(ph) if ph == want => Ok(p),
            _ => Err(format!("{:?}", p.status)),
        }
    })
    .await
}

impl ControlPlane {
    /// Applies the chart's approval admission policy (+ binding) and the
    /// `reverie-approver` ClusterRole.
    pub fn install_approval_policy(&self) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/reverie/templates");
        for f in ["approval-policy.yaml", "approver-clusterrole.yaml"] {
            let path = dir.join(f);
            let out = self.kubectl(&[
                "apply",
                "--server-side",
                "--field-manager=reverie-tests",
                "-f",
                path.to_str().expect("utf-8 path"),
            ]);
            assert!(out.status.success(), "applying {f}: {}", output_text(&out));
        }
    }
}

/// Seeds the claim of MemoryStore `name` with `examples/store`, creates the
/// store (`deletionPolicy: Delete`) and waits until it is Ready; returns the
/// claim's directory.
pub async fn seeded_store(
    cp: &ControlPlane,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> std::path::PathBuf {
    let dir = cp.pvc_dir(ns, &format!("{name}-memory"));
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/store"),
        &dir,
    );
    cp.apply_yaml(
        ns,
        &format!("apiVersion: reverie.dev/v1alpha1\nkind: MemoryStore\nmetadata: {{name: {name}}}\nspec:\n  deletionPolicy: Delete\n  storage: {{size: 1Gi}}\n"),
    );
    wait_ready::<reverie::api::MemoryStore>(cp, ns, name, timeout).await;
    dir
}

/// Waits until the object `ns/name` of kind `K` has `Ready=True` in its
/// `status.conditions`; returns it.
pub async fn wait_ready<K>(cp: &ControlPlane, ns: &str, name: &str, timeout: Duration) -> K
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize,
{
    let api: Api<K> = Api::namespaced(cp.client(), ns);
    let what = format!("{} {name} to be Ready", K::kind(&()));
    eventually(&what, timeout, || async {
        let obj = api.get(name).await.map_err(|e| e.to_string())?;
        let v = serde_json::to_value(&obj).map_err(|e| e.to_string())?;
        let conds: Vec<Condition> =
            serde_json::from_value(v["status"]["conditions"].clone()).unwrap_or_default();
        is_ready(Some(&conds))
            .then_some(obj)
            .ok_or(format!("{}", v["status"]))
    })
    .await
}

/// The value of the series `series` (name and labels exactly as exposed)
/// in a Prometheus text scrape; 0 when absent.
pub fn sample(text: &str, series: &str) -> f64 {
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A free loopback address (for the controller's metrics endpoints).
pub fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// `GET http://{addr}{path}`: the status and the body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String), String> {
    let r = reqwest::get(format!("http://{addr}{path}"))
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let body = r.text().await.map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// A `reverie controller` process (the real binary) against the control
/// plane, watching one namespace; killed when dropped.
pub struct ControllerProcess(std::process::Child);

impl ControllerProcess {
    /// Starts `reverie controller --namespace ns --image reverie
    /// --metrics-addr off` plus `extra` flags, logging at `log` level to
    /// `<control plane dir>/controller-<ns>.log`.
    pub fn start(cp: &ControlPlane, ns: &str, extra: &[&str], log: &str) -> ControllerProcess {
        let path = cp.dir().join(format!("controller-{ns}.log"));
        let file = std::fs::File::create(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_reverie"))
            .args(["controller", "--image", "reverie", "--namespace", ns])
            .args(["--metrics-addr", "off"])
            .args(extra)
            .env("KUBECONFIG", cp.kubeconfig_path())
            .env("RUST_LOG", log)
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start reverie controller: {e}"));
        ControllerProcess(child)
    }

    /// The process id (to read `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
