//! `reverie controller` as a process against the real control plane, as it
//! runs in its Deployment: `--log-format json` lines that each parse and, in
//! a reconcile, name the object; `/readyz` telling the leader from the
//! standby; `/metrics` counting only on the replica that reconciles.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::reverie::{free_addr, http_get, sample, wait_ready};
use common::{eventually, ControlPlane};
use reverie::api::MemoryStore;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// A running `reverie controller`, killed when dropped.
struct Controller {
    child: Child,
    log: PathBuf,
    addr: SocketAddr,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `reverie controller --log-format json` for `ns`, competing for
/// the Lease `reverie-test` in `ns` as `identity`; stderr goes to a file.
fn start(cp: &ControlPlane, ns: &str, identity: &str) -> Controller {
    let addr = free_addr();
    let log = cp.dir().join(format!("{ns}-{identity}.log"));
    let stderr = std::fs::File::create(&log).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_reverie"))
        .args(["controller", "--log-format", "json", "--log", "info"])
        .args(["--namespace", ns, "--image", "reverie:test"])
        .args(["--metrics-addr", &addr.to_string()])
        .args(["--leader-elect", "--lease-name", "reverie-test"])
        .args(["--lease-namespace", ns, "--lease-identity", identity])
        .env("KUBECONFIG", cp.kubeconfig_path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start reverie controller");
    Controller { child, log, addr }
}

/// Waits until `path` answers `want` (status and body).
async fn wait_for(addr: SocketAddr, path: &str, want: (u16, &str)) {
    eventually(
        &format!("{path} on {addr} to be {want:?}"),
        WAIT,
        || async {
            let got = http_get(addr, path).await?;
            (got.0 == want.0 && got.1 == want.1)
                .then_some(())
                .ok_or(format!("{got:?}"))
        },
    )
    .await
}

fn lines(log: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(log).expect("read the log");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_name_the_object_and_readyz_tells_leader_from_standby() {
    let cp = ControlPlane::shared().await;
    cp.install_crds().await;
    let ns = cp.create_namespace("metrics-bin").await;

    let a = start(cp, &ns, "a");
    wait_for(a.addr, "/readyz", (200, "ok: leader\n")).await;
    let b = start(cp, &ns, "b");
    wait_for(b.addr, "/readyz", (200, "ok: standby\n")).await;
    for c in [&a, &b] {
        assert_eq!(
            http_get(c.addr, "/healthz").await.expect("healthz"),
            (200, "ok\n".to_string())
        );
    }

    cp.apply_yaml(
        &ns,
        "apiVersion: reverie.dev/v1alpha1\nkind: MemoryStore\nmetadata: {name: team}\nspec: {deletionPolicy: Delete}\n",
    );
    wait_ready::<MemoryStore>(cp, &ns, "team", WAIT).await;

    // Only the leader reconciles, and its scrape says so.
    let ok = "reverie_reconciles_total{controller=\"memorystore\",outcome=\"ok\"}";
    let (status, leader) = http_get(a.addr, "/metrics").await.expect("scrape a");
    assert_eq!(status, 200);
    assert!(sample(&leader, ok) >= 1.0, "{leader}");
    assert!(
        sample(
            &leader,
            "reverie_reconcile_duration_seconds_count{controller=\"memorystore\"}"
        ) >= 1.0,
        "{leader}"
    );
    let (status, standby) = http_get(b.addr, "/metrics").await.expect("scrape b");
    assert_eq!(status, 200);
    assert_eq!(sample(&standby, ok), 0.0, "{standby}");

    let log = a.log.clone();
    drop(a);
    drop(b);
    let lines = lines(&log);
    assert!(!lines.is_empty());
    for l in &lines {
        assert!(l["timestamp"].is_string() && l["level"].is_string(), "{l}");
    }
    // Every line logged inside a reconcile names the object.
    let in_reconcile: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["spans"]
                .as_str()
                .is_some_and(|s| s.split(':').any(|x| x == "reconcile"))
        })
        .collect();
    assert!(
        !in_reconcile.is_empty(),
        "no line from a reconcile: {lines:?}"
    );
    for l in &in_reconcile {
        assert_eq!(l["namespace"], ns.as_str(), "{l}");
        assert!(l["name"].as_str().is_some_and(|n| !n.is_empty()), "{l}");
        assert!(l["kind"].is_string(), "{l}");
        // The only object here is the store: even a line about another
        // object it touched (the worker ServiceAccount) names the store.
        if l["controller"] == "memorystore" {
            assert_eq!(l["name"], "team", "{l}");
        }
    }
    assert!(
        in_reconcile.iter().any(|l| l["kind"] == "MemoryStore"
            && l["name"] == "team"
            && l["controller"] == "memorystore"),
        "{in_reconcile:?}"
    );
}
