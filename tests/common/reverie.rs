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
