//! `reverie controller`: runs every controller of the operator.

use std::sync::Arc;

use anyhow::Context as _;

use crate::controller::{self, Context, ControllerConfig};

/// `reverie controller`.
#[derive(clap::Args, Debug)]
pub struct ControllerArgs {
    /// The image of the pods the operator starts (dream, apply, agents).
    #[arg(long, env = "REVERIE_IMAGE")]
    pub image: Option<String>,
    /// Watch only this namespace (all namespaces when absent).
    #[arg(long, env = "REVERIE_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// The ServiceAccount (and Role/RoleBinding) created in each namespace
    /// for the pods the operator starts.
    #[arg(long, default_value = "reverie-worker")]
    pub worker_service_account: String,
}

/// Runs the controllers until the process is stopped.
pub fn run(args: ControllerArgs) -> anyhow::Result<()> {
    let defaults = ControllerConfig::default();
    let config = ControllerConfig {
        image: args.image.unwrap_or(defaults.image),
        worker_service_account: args.worker_service_account,
        namespace: args.namespace,
    };
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
        tracing::info!(image = config.image, namespace = ?config.namespace, "controller starting");
        let ctx = Arc::new(Context { client, config });
        tokio::select! {
            r = controller::run(ctx) => r.context("controller stopped"),
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("interrupted; stopping");
                Ok(())
            }
        }
    })
}
