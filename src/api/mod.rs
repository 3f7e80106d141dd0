//! The custom resources of group `reverie.dev`, version `v1alpha1`: types,
//! defaults and validation only (no logic).

pub mod agent;
pub mod agentsession;
pub mod agentteam;
pub mod clusterdreamschedule;
pub mod common;
pub mod dreamschedule;
pub mod memorypatch;
pub mod memorystore;

pub use agent::*;
pub use agentsession::*;
pub use agentteam::*;
pub use clusterdreamschedule::*;
pub use common::*;
pub use dreamschedule::*;
pub use memorypatch::*;
pub use memorystore::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The API group of every reverie resource.
pub const GROUP: &str = "reverie.dev";
/// The version served and stored.
pub const VERSION: &str = "v1alpha1";

/// Annotation that approves or rejects a MemoryPatch.
pub const APPROVAL_ANNOTATION: &str = "reverie.dev/approval";
/// Annotation with a person's reason for the approval decision.
pub const APPROVAL_REASON_ANNOTATION: &str = "reverie.dev/approval-reason";
/// Annotation naming who approved (forced by the admission policy to equal the requester).
pub const APPROVED_BY_ANNOTATION: &str = "reverie.dev/approved-by";
/// Label naming the store an object belongs to.
pub const STORE_LABEL: &str = "reverie.dev/store";

/// Every CRD of the project, in a stable order (file names in `crds/`).
pub fn crds() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("agents", tidy(Agent::crd())),
        ("agentteams", tidy(AgentTeam::crd())),
        ("agentsessions", tidy(AgentSession::crd())),
        ("memorystores", tidy(MemoryStore::crd())),
        ("dreamschedules", tidy(DreamSchedule::crd())),
        ("clusterdreamschedules", tidy(ClusterDreamSchedule::crd())),
        ("memorypatches", tidy(MemoryPatch::crd())),
    ]
}

/// The apiserver warns on every apply about integer formats OpenAPI does
/// not define (`uint32`, `uint64`, from Rust's unsigned types); the bounds
/// are kept by `minimum: 0`, so the formats become `int32`/`int64`.
fn tidy(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(f)) = map.get_mut("format") {
                    match f.as_str() {
                        "uint32" => *f = "int32".to_string(),
                        "uint64" | "uint" => *f = "int64".to_string(),
                        _ => {}
                    }
                }
                map.values_mut().for_each(walk);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let Ok(mut value) = serde_json::to_value(&crd) else {
        return crd;
    };
    walk(&mut value);
    serde_json::from_value(value).unwrap_or(crd)
}
