//! Types shared by several resources: references, model settings, status
//! conditions.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to an object of a known kind in the same namespace.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub struct LocalRef {
    /// The object's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

impl LocalRef {
    pub fn new(name: impl Into<String>) -> Self {
        LocalRef { name: name.into() }
    }
}

/// A key of a Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key in the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Which wire protocol an LLM endpoint speaks.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// The Anthropic Messages API.
    Anthropic,
    /// Any OpenAI-compatible chat-completions endpoint.
    Openai,
}

fn default_max_tokens() -> u32 {
    4096
}

/// The model an agent (or a dream's optional LLM pass) talks to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// `anthropic` (Messages API) or `openai` (any OpenAI-compatible endpoint).
    pub provider: Provider,
    /// The model name the endpoint knows, e.g. `claude-sonnet-4-5`.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// Base URL of the endpoint; the provider's public API when absent.
    #[serde(default, rename = "baseURL", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = kube::core::Rule::new("self.startsWith('https://') || self.startsWith('http://')").message("baseURL must be an http:// or https:// URL"))]
    pub base_url: Option<String>,
    /// The Secret key that holds the API key. Never copied into args, logs,
    /// events or status.
    pub api_key_secret_ref: SecretKeyRef,
    /// Upper bound of output tokens per model call.
    #[serde(default = "default_max_tokens")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_tokens: u32,
}

/// Condition types used on every resource.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
}

/// Kubernetes volume access modes a claim may ask for.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum AccessMode {
    ReadWriteOnce,
    ReadWriteMany,
    ReadWriteOncePod,
    ReadOnlyMany,
}

impl AccessMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::ReadWriteOnce => "ReadWriteOnce",
            AccessMode::ReadWriteMany => "ReadWriteMany",
            AccessMode::ReadWriteOncePod => "ReadWriteOncePod",
            AccessMode::ReadOnlyMany => "ReadOnlyMany",
        }
    }
}

pub(crate) fn default_size() -> String {
    "1Gi".to_string()
}

pub(crate) fn default_access_modes() -> Vec<AccessMode> {
    vec![AccessMode::ReadWriteOnce]
}

/// CEL rule: a Kubernetes quantity such as `1Gi` or `500Mi`.
pub(crate) const QUANTITY_RULE: &str =
    "self.matches('^[0-9]+(\\\\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$')";
