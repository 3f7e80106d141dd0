//! What every reconcile gets: the client and the operator's configuration.

/// Operator settings (flags of `reverie controller`, chart values).
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// The image of every pod the operator starts (dream, apply, agents).
    pub image: String,
    /// Name of the per-namespace ServiceAccount (and Role/RoleBinding) the
    /// operator creates for the pods it starts.
    pub worker_service_account: String,
    /// Watch only this namespace; all namespaces when `None`.
    pub namespace: Option<String>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            image: format!("ghcr.io/reverie-dev/reverie:{}", env!("CARGO_PKG_VERSION")),
            worker_service_account: "reverie-worker".to_string(),
            namespace: None,
        }
    }
}

/// Shared by all reconciles.
#[derive(Clone)]
pub struct Context {
    pub client: kube::Client,
    pub config: ControllerConfig,
}
