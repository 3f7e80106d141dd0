//! `reverie controller` as a process against the real control plane, as it
//! runs in its Deployment: `--log-format json` lines that each parse and, in
//! a reconcile, name the object; `/readyz` telling the leader from the
//! standby; `/metrics` counting only on the replica that reconciles.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::reverie::{free_addr, http_get, sample, wait_ready};
use common::{eventually, ControlPlane, Logged};
use reverie::api::MemoryStore;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// A running `reverie controller` and where it serves its endpoints.
struct Controller {
    process: Logged,
    addr: SocketAddr,
}

/// Starts `reverie controller --log-format json` for `ns`, competing for
/// the Lease `reverie-test` in `ns` as `identity`.
fn start(ns: &str, identity: &str, kubeconfig: &Path) -> Controller {
    let addr = free_addr();
    let args: Vec<String> = [
        "controller",
        "--log-format",
        "json",
        "--log",
        "info",
        "--namespace",
        ns,
        "--image",
        "reverie:test",
        "--metrics-addr",
        &addr.to_string(),
        "--leader-elect",
        "--lease-name",
        "reverie-test",
        "--lease-namespace",
        ns,
        "--lease-identity",
        identity,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let process = Logged::spawn(
        &format!("controller {identity}"),
        Path::new(env!("CARGO_BIN_EXE_reverie")),
        &args,
        &[("KUBECONFIG", kubeconfig.display().to_string())],
    );
    Controller { process, addr }
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

fn lines(text: &str) -> Vec<Value> {
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

    let mut a = start(&ns, "a", cp.kubeconfig_path());
    wait_for(a.addr, "/readyz", (200, "ok: leader\n")).await;
    let mut b = start(&ns, "b", cp.kubeconfig_path());
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

    a.process.kill();
    b.process.kill();
    let lines = lines(&a.process.text());
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
