//! The identity of the pods the operator starts: in every namespace that has
//! a MemoryStore, a ServiceAccount (`reverie-worker` by default), a Role and a
//! RoleBinding.
//!
//! They are shared by every store of the namespace and deliberately left in
//! place when the stores go: owning them by one store would pull the identity
//! from under the others' running pods, and they grant only read access to
//! stores and create access to patches in that one namespace.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::Client;

use super::jobs::MANAGED_BY;
use super::writes::apply_if_changed;
use super::Error;

fn meta(name: &str, ns: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(ns.to_string()),
        labels: Some(BTreeMap::from([(
            "app.kubernetes.io/managed-by".to_string(),
            MANAGED_BY.to_string(),
        )])),
        ..Default::default()
    }
}

/// The worker ServiceAccount.
pub fn service_account(name: &str, ns: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(name, ns),
        ..Default::default()
    }
}

/// What dream and apply pods may do: read stores (the dream resolves
/// `LastDream` and the owner reference), read and create patches (publish,
/// and the apply job reads the patch it applies).
pub fn role(name: &str, ns: &str) -> Role {
    let rule = |resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![crate::api::GROUP.to_string()]),
        resources: Some(resources.iter().map(|s| s.to_string()).collect()),
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    Role {
        metadata: meta(name, ns),
        rules: Some(vec![
            rule(&["memorystores"], &["get", "list", "watch"]),
            rule(&["memorypatches"], &["get", "list", "watch", "create"]),
        ]),
    }
}

/// Binds the worker Role to the worker ServiceAccount.
pub fn role_binding(name: &str, ns: &str) -> RoleBinding {
    RoleBinding {
        metadata: meta(name, ns),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".to_string()),
            kind: "Role".to_string(),
            name: name.to_string(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_string(),
            name: name.to_string(),
            namespace: Some(ns.to_string()),
            ..Default::default()
        }]),
    }
}

/// Makes sure the worker identity exists in `ns`.
pub async fn ensure(client: &Client, ns: &str, name: &str) -> Result<(), Error> {
    let wrote = apply_if_changed(
        &Api::namespaced(client.clone(), ns),
        service_account(name, ns),
    )
    .await?
        | apply_if_changed(&Api::namespaced(client.clone(), ns), role(name, ns)).await?
        | apply_if_changed(&Api::namespaced(client.clone(), ns), role_binding(name, ns)).await?;
    if wrote {
        tracing::info!(namespace = ns, name, "worker identity applied");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_allows_reading_stores_and_creating_patches_only() {
        let r = role("reverie-worker", "ns");
        let rules = r.rules.expect("rules");
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0].resources.as_deref(),
            Some(&["memorystores".to_string()][..])
        );
        assert!(!rules[0].verbs.contains(&"create".to_string()));
        assert!(rules[1].verbs.contains(&"create".to_string()));
        assert!(!rules[1].verbs.contains(&"delete".to_string()));
        let b = role_binding("reverie-worker", "ns");
        assert_eq!(b.role_ref.name, "reverie-worker");
        let s = &b.subjects.expect("subjects")[0];
        assert_eq!(
            (s.kind.as_str(), s.name.as_str(), s.namespace.as_deref()),
            ("ServiceAccount", "reverie-worker", Some("ns"))
        );
        assert_eq!(
            service_account("reverie-worker", "ns")
                .metadata
                .name
                .as_deref(),
            Some("reverie-worker")
        );
    }
}
