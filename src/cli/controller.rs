//! `reverie controller`: runs every controller of the operator.

use std::sync::Arc;

use anyhow::Context as _;

use crate::controller::leader::{self, LeaseConfig};
use crate::controller::metrics::{self, Role};
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
    /// Run the controllers only while holding a Lease, so that of several
    /// replicas exactly one reconciles; the process exits when it loses it.
    #[arg(long)]
    pub leader_elect: bool,
    /// The Lease used for leader election.
    #[arg(long, default_value = "reverie-controller")]
    pub lease_name: String,
    /// The namespace of the Lease (the pod's own namespace in a cluster).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub lease_identity: Option<String>,
    /// How long the Lease stays valid without renewal (seconds, `15s`);
    /// a standby replica takes over at most about this long after the
    /// leader stops renewing.
    #[arg(long, default_value = "15s", value_parser = leader::parse_seconds)]
    pub lease_duration: std::time::Duration,
    /// How often the leader renews the Lease (and a standby looks at it);
    /// at most half of `--lease-duration`.
    #[arg(long, default_value = "5s", value_parser = leader::parse_seconds)]
    pub lease_renew_every: std::time::Duration,
    /// At most this many dream pods of multi-store schedules start while
    /// this many dreams run in the cluster (all namespaces watched); 0 is no limit.
    #[arg(long, env = "REVERIE_MAX_CONCURRENT_DREAMS")]
    pub max_concurrent_dreams: Option<u32>,
    /// The same limit per namespace (fair queueing across namespaces).
    #[arg(long, env = "REVERIE_MAX_CONCURRENT_DREAMS_PER_NAMESPACE")]
    pub max_concurrent_dreams_per_namespace: Option<u32>,
    /// Where to serve `/metrics`, `/healthz` and `/readyz`; `off` serves nothing.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: String,
    /// Drop managed fields and the last-applied annotation from watched
    /// objects before they are cached (less memory); `false` keeps them.
    #[arg(long, env = "REVERIE_TRIM_MANAGED_FIELDS", default_value_t = true, action = clap::ArgAction::Set)]
    pub trim_managed_fields: bool,
}

/// Runs the controllers until the process is stopped.
pub fn run(args: ControllerArgs) -> anyhow::Result<()> {
    controller::fleet::set_limits(controller::scheduler::Limits {
        // 0, like an absent flag, is no limit (the chart's default value).
        cluster: args.max_concurrent_dreams.filter(|n| *n > 0),
        per_namespace: args.max_concurrent_dreams_per_namespace.filter(|n| *n > 0),
    });
    controller::trim::set_enabled(args.trim_managed_fields);
    let defaults = ControllerConfig::default();
    let config = ControllerConfig {
        image: args.image.unwrap_or(defaults.image),
        worker_service_account: args.worker_service_account,
        namespace: args.namespace,
    };
    let metrics_addr: Option<std::net::SocketAddr> = match args.metrics_addr.as_str() {
        "off" => None,
        a => Some(a.parse().with_context(|| {
            format!("--metrics-addr {a:?} is not an address like 0.0.0.0:8080")
        })?),
    };
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
        tracing::info!(image = config.image, namespace = ?config.namespace, "controller starting");
        let lease = if args.leader_elect {
            let namespace = args.lease_namespace.context(
                "--leader-elect needs --lease-namespace (or the POD_NAMESPACE environment variable)",
            )?;
            let identity = args
                .lease_identity
                .or_else(|| std::env::var("HOSTNAME").ok())
                .context("--leader-elect needs --lease-identity (or POD_NAME or HOSTNAME)")?;
            Some(
                LeaseConfig::new(&args.lease_name, &namespace, &identity)
                    .with_timings(args.lease_duration, args.lease_renew_every)
                    .map_err(|e| anyhow::anyhow!("--lease-renew-every: {e}"))?,
            )
        } else {
            None
        };
        if let Some(addr) = metrics_addr {
            let client = client.clone();
            tokio::spawn(async move {
                if let Err(e) = metrics::serve(addr, client).await {
                    tracing::error!(error = %e, "metrics and health endpoints stopped");
                }
            });
        }
        let ctx = Arc::new(Context {
            client: client.clone(),
            config,
        });
        let work = async move {
            match lease {
                Some(cfg) => {
                    tracing::info!(lease = cfg.name, namespace = cfg.namespace, identity = cfg.identity, "waiting for the lease");
                    metrics::set_role(Role::Standby);
                    // Polled only once the lease is held.
                    let lead = async move {
                        metrics::set_role(Role::Leader);
                        controller::run(ctx).await
                    };
                    leader::run_as_leader(&client, &cfg, lead).await
                }
                None => controller::run(ctx).await,
            }
        };
        tokio::select! {
            r = work => r.context("controller stopped"),
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("interrupted; stopping");
                Ok(())
            }
        }
    })
}
