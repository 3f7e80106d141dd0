//! Prometheus metrics and the health endpoints of `reverie controller`:
//! `/metrics` (text exposition format), `/healthz` (the process serves) and
//! `/readyz` (the client reaches the apiserver).
//!
//! The counters live in one process-wide registry because the controllers'
//! result streams have no handle to pass them through; output is sorted
//! (BTreeMap) so a scrape is deterministic for a given state.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use super::Error;

/// Reconcile outcomes per controller.
#[derive(Default)]
struct Counters {
    /// (controller, outcome) → count; outcome is `ok` or `error`.
    reconciles: BTreeMap<(String, &'static str), u64>,
}

fn counters() -> &'static Mutex<Counters> {
    static C: OnceLock<Mutex<Counters>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(Counters::default()))
}

/// Counts one reconcile of `controller`, successful or not.
pub fn record_reconcile(controller: &str, ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    // A poisoned lock only means another thread panicked mid-increment;
    // the counts are still usable.
    let mut c = counters()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    *c.reconciles
        .entry((controller.to_string(), outcome))
        .or_insert(0) += 1;
}

/// The metrics in the Prometheus text exposition format.
pub fn render() -> String {
    let c = counters()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut out = String::from(
        "# HELP reverie_reconciles_total Reconciles per controller and outcome.\n# TYPE reverie_reconciles_total counter\n",
    );
    for ((controller, outcome), n) in &c.reconciles {
        out.push_str(&format!(
            "reverie_reconciles_total{{controller=\"{controller}\",outcome=\"{outcome}\"}} {n}\n"
        ));
    }
    out
}

async fn metrics() -> (StatusCode, [(&'static str, &'static str); 1], String) {
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4")],
        render(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(client): State<kube::Client>) -> (StatusCode, String) {
    match client.apiserver_version().await {
        Ok(_) => (StatusCode::OK, "ok\n".to_string()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the apiserver is not reachable: {e}\n"),
        ),
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until the process
/// stops.
pub async fn serve(addr: SocketAddr, client: kube::Client) -> Result<(), Error> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(client);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Invalid(format!("cannot listen on {addr} for metrics: {e}")))?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    axum::serve(listener, app)
        .await
        .map_err(|e| Error::Invalid(format!("metrics server on {addr} stopped: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reconciles_per_controller_and_outcome() {
        record_reconcile("unit-test-kind", true);
        record_reconcile("unit-test-kind", true);
        record_reconcile("unit-test-kind", false);
        let text = render();
        assert!(text.contains(
            "reverie_reconciles_total{controller=\"unit-test-kind\",outcome=\"ok\"} 2\n"
        ));
        assert!(text.contains(
            "reverie_reconciles_total{controller=\"unit-test-kind\",outcome=\"error\"} 1\n"
        ));
    }
}
