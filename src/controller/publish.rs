//! What a dream pod does with its patch (`reverie dream --publish`): create
//! it as MemoryPatch objects through the API, labelled with the store and
//! schedule and owned by the MemoryStore, split into parts when one object
//! would be too large for etcd. Names are deterministic, so a retried job
//! finds its patches already there (AlreadyExists is success).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde::Serialize;

use super::jobs::{owner_ref, SCHEDULE_LABEL};
use super::Error;
use crate::api::{MemoryPatch, MemoryPatchSpec, MemoryStore, STORE_LABEL};

/// The largest serialised MemoryPatch published as one object (etcd's
/// limit is 1.5 MiB per object; the rest is headroom for metadata and
/// status).
pub const MAX_PATCH_BYTES: usize = 1_000_000;

/// The result a dream pod writes to its termination log.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishResult {
    pub patches: Vec<String>,
    pub ops: usize,
    pub revision: u64,
    pub entries: u64,
    pub bytes: u64,
    /// Sessions the dream read.
    pub sessions: usize,
    /// Tokens (input + output) the LLM pass used, counted against a
    /// schedule's `budget.tokensPerHour`.
    pub llm_tokens: u64,
}

fn size_of(patch: &MemoryPatch) -> Result<usize, Error> {
    serde_json::to_vec(patch)
        .map(|v| v.len())
        .map_err(|source| Error::Serialize {
            what: format!("MemoryPatch {}", patch.name_any()),
            source,
        })
}

/// Splits `patch` into parts of at most `max_bytes` each (serialised), in
/// op order; one part keeps the name, several are named `<name>-part-<i>`
/// with the summary saying which part it is. An op too large on its own is
/// an error (the apiserver would refuse it anyway).
pub fn split(patch: &MemoryPatch, max_bytes: usize) -> Result<Vec<MemoryPatch>, Error> {
    if size_of(patch)? <= max_bytes {
        return Ok(vec![patch.clone()]);
    }
    let name = patch.name_any();
    let empty = {
        let mut p = patch.clone();
        p.spec.ops.clear();
        p
    };
    // The part name and summary grow a little; keep room for them.
    let overhead = size_of(&empty)? + 64;
    let mut chunks: Vec<Vec<crate::api::PatchOp>> = vec![Vec::new()];
    let mut used = overhead;
    for op in &patch.spec.ops {
        let len = serde_json::to_vec(op)
            .map_err(|source| Error::Serialize {
                what: format!("an op of MemoryPatch {name}"),
                source,
            })?
            .len()
            + 1;
        if overhead + len > max_bytes {
            return Err(Error::Invalid(format!(
                "MemoryPatch {name}: one op on {} is {len} bytes, more than a patch object may hold ({max_bytes})",
                op.path
            )));
        }
        let current_len = chunks.last().map_or(0, Vec::len);
        if used + len > max_bytes && current_len > 0 {
            chunks.push(Vec::new());
            used = overhead;
        }
        used += len;
        if let Some(last) = chunks.last_mut() {
            last.push(op.clone());
        }
    }
    let n = chunks.len();
    Ok(chunks
        .into_iter()
        .enumerate()
        .map(|(i, ops)| {
            let mut p = empty.clone();
            p.metadata.name = Some(format!("{name}-part-{}", i + 1));
            p.spec = MemoryPatchSpec {
                ops,
                summary: format!("{} (part {} of {n})", patch.spec.summary, i + 1),
                ..patch.spec.clone()
            };
            p
        })
        .collect())
}

/// Readies `patch` for the cluster: namespace, labels, owner.
pub fn prepare(
    mut patch: MemoryPatch,
    namespace: &str,
    store: &str,
    schedule: Option<&str>,
    owner: Option<OwnerReference>,
) -> MemoryPatch {
    patch.metadata.namespace = Some(namespace.to_string());
    let labels = patch.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(STORE_LABEL.to_string(), store.to_string());
    if let Some(s) = schedule {
        labels.insert(SCHEDULE_LABEL.to_string(), s.to_string());
    }
    patch.metadata.owner_references = owner.map(|o| vec![o]);
    patch.metadata.resource_version = None;
    patch.metadata.uid = None;
    patch.status = None;
    patch.spec.store_ref.name = store.to_string();
    patch
}

/// Creates `patch` (split as needed) in `namespace`, owned by the store.
/// Returns the names; no objects when the patch has no ops.
pub async fn publish(
    client: &Client,
    namespace: &str,
    store: &str,
    schedule: Option<&str>,
    patch: MemoryPatch,
) -> Result<Vec<String>, Error> {
    if patch.spec.ops.is_empty() {
        return Ok(Vec::new());
    }
    let owner = Api::<MemoryStore>::namespaced(client.clone(), namespace)
        .get(store)
        .await?;
    let prepared = prepare(patch, namespace, store, schedule, Some(owner_ref(&owner)?));
    let api: Api<MemoryPatch> = Api::namespaced(client.clone(), namespace);
    // The engine's names carry the minute; a retried or repeated dream over
    // unchanged input proposes the same spec, which must not be queued twice.
    let existing = api
        .list(&kube::api::ListParams::default().labels(&format!("{STORE_LABEL}={store}")))
        .await?
        .items;
    let mut names = Vec::new();
    for part in split(&prepared, MAX_PATCH_BYTES)? {
        let name = part.name_any();
        if let Some(same) = existing.iter().find(|p| {
            p.spec == part.spec
                && !p.status.as_ref().and_then(|s| s.phase).is_some_and(|ph| {
                    matches!(
                        ph,
                        crate::api::PatchPhase::Rejected
                            | crate::api::PatchPhase::Applied
                            | crate::api::PatchPhase::Conflicted
                            | crate::api::PatchPhase::Failed
                    )
                })
        }) {
            tracing::info!(
                namespace,
                name = same.name_any(),
                "the same patch is already proposed"
            );
            names.push(same.name_any());
            continue;
        }
        match api.create(&PostParams::default(), &part).await {
            Ok(_) => tracing::info!(
                namespace,
                name,
                ops = part.spec.ops.len(),
                "MemoryPatch created"
            ),
            // A retried job: the same input gave the same name.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                tracing::info!(namespace, name, "MemoryPatch exists already")
            }
            Err(e) => return Err(e.into()),
        }
        names.push(name);
    }
    Ok(names)
}

/// When the store last dreamed (its status), for `sessions.since: LastDream`.
pub async fn last_dream(
    client: &Client,
    namespace: &str,
    store: &str,
) -> Result<Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>, Error> {
    let s = Api::<MemoryStore>::namespaced(client.clone(), namespace)
        .get(store)
        .await?;
    Ok(s.status.and_then(|s| s.last_dream))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(ops: usize, content_len: usize) -> MemoryPatch {
        let ops: Vec<serde_json::Value> = (0..ops)
            .map(|i| serde_json::json!({"op": "add", "path": format!("f{i}.md"), "content": "x".repeat(content_len), "reason": "instruction"}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "reverie.dev/v1alpha1", "kind": "MemoryPatch",
            "metadata": {"name": "team-20261130-0300-ab12"},
            "spec": {"storeRef": {"name": "x"}, "summary": "s", "ops": ops}
        }))
        .expect("patch")
    }

    #[test]
    fn small_patches_stay_whole() {
        let p = patch(3, 10);
        let parts = split(&p, MAX_PATCH_BYTES).expect("split");
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].spec, p.spec);
        assert_eq!(parts[0].metadata, p.metadata);
    }

    #[test]
    fn large_patches_split_in_order_under_the_limit() {
        let p = patch(300, 10_000);
        let parts = split(&p, MAX_PATCH_BYTES).expect("split");
        assert!(parts.len() >= 3, "{}", parts.len());
        let mut all = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            assert!(size_of(part).expect("size") <= MAX_PATCH_BYTES);
            assert_eq!(
                part.metadata.name.as_deref(),
                Some(format!("team-20261130-0300-ab12-part-{}", i + 1).as_str())
            );
            assert!(part
                .spec
                .summary
                .contains(&format!("part {} of {}", i + 1, parts.len())));
            all.extend(part.spec.ops.clone());
        }
        assert_eq!(all, p.spec.ops);
        let again = split(&p, MAX_PATCH_BYTES).expect("again");
        let specs = |v: &[MemoryPatch]| v.iter().map(|p| p.spec.clone()).collect::<Vec<_>>();
        assert_eq!(specs(&again), specs(&parts));
    }

    #[test]
    fn an_op_larger_than_an_object_is_an_error() {
        assert!(split(&patch(1, 2000), 1000).is_err());
    }

    #[test]
    fn prepare_labels_and_owns() {
        let owner = OwnerReference {
            api_version: "reverie.dev/v1alpha1".to_string(),
            kind: "MemoryStore".to_string(),
            name: "team".to_string(),
            uid: "u".to_string(),
            controller: Some(true),
            block_owner_deletion: None,
        };
        let p = prepare(patch(1, 1), "ns", "team", Some("nightly"), Some(owner));
        let labels = p.metadata.labels.clone().expect("labels");
        assert_eq!(labels.get(STORE_LABEL).map(String::as_str), Some("team"));
        assert_eq!(
            labels.get(SCHEDULE_LABEL).map(String::as_str),
            Some("nightly")
        );
        assert_eq!(p.spec.store_ref.name, "team");
        assert_eq!(
            p.metadata.owner_references.expect("owner")[0].kind,
            "MemoryStore"
        );
    }
}
