//! What a dream pod does with its patch (`reverie dream --publish`): create
//! it as MemoryPatch objects through the API, labelled with the store and
//! schedule and owned by the MemoryStore, split into parts when one object
//! would be too large for etcd. Names are deterministic, so a retried job
//! finds its patches already there (AlreadyExists is success).
//!
//! A split patch is a **group**: every part carries the label
//! [`GROUP_LABEL`] and the annotation [`PARTS_ANNOTATION`] (the number of
//! parts). A dream killed between two creates leaves an incomplete group;
//! the MemoryPatch controller neither approves nor applies a part until the
//! whole group exists ([`group_gap`]), and the next publish of the same
//! proposal adopts the group's names and creates only the missing parts.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde::Serialize;

use super::jobs::{owner_ref, short_hash, SCHEDULE_LABEL};
use super::Error;
use crate::api::{MemoryPatch, MemoryPatchSpec, MemoryStore, PatchPhase, STORE_LABEL};
use crate::memory::apply::fault_point;

/// The largest serialised MemoryPatch published as one object (etcd's
/// limit is 1.5 MiB per object; the rest is headroom for metadata and
/// status).
pub const MAX_PATCH_BYTES: usize = 1_000_000;

/// The label that ties the parts of a split patch together.
pub const GROUP_LABEL: &str = "reverie.dev/patch-group";

/// The annotation on each part that says how many parts the group has.
pub const PARTS_ANNOTATION: &str = "reverie.dev/parts";

/// The group label's value for a patch named `name`: the name itself when
/// it fits a label value (63 bytes), else a hash of it.
pub fn group_value(name: &str) -> String {
    if name.len() <= 63 {
        name.to_string()
    } else {
        format!("g-{}", short_hash(name, 16))
    }
}

/// Names the parts `<base>-part-<i>` and labels them as one group.
fn name_parts(parts: &mut [MemoryPatch], base: &str, group: &str) {
    let n = parts.len();
    for (i, p) in parts.iter_mut().enumerate() {
        p.metadata.name = Some(format!("{base}-part-{}", i + 1));
        p.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(GROUP_LABEL.to_string(), group.to_string());
        p.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(PARTS_ANNOTATION.to_string(), n.to_string());
    }
}

/// Why `patch` must wait for the rest of its group, or `None` when it is
/// not a part or its group is complete among `siblings` (the patches of
/// its namespace, itself included).
pub fn incomplete_group(patch: &MemoryPatch, siblings: &[MemoryPatch]) -> Option<String> {
    let group = patch.labels().get(GROUP_LABEL)?;
    let want: usize = match patch.annotations().get(PARTS_ANNOTATION) {
        Some(n) => match n.trim().parse() {
            Ok(n) => n,
            Err(_) => {
                return Some(format!(
                    "annotation {PARTS_ANNOTATION}={n:?} is not a number of parts"
                ))
            }
        },
        None => {
            return Some(format!(
                "part of group {group} without the annotation {PARTS_ANNOTATION}"
            ))
        }
    };
    let have = siblings
        .iter()
        .filter(|p| p.labels().get(GROUP_LABEL) == Some(group))
        .count();
    (have < want).then(|| {
        format!(
            "{have} of {want} parts of group {group} exist; waiting for the rest before approval or apply (the dream that proposed it was interrupted; its next run completes the group)"
        )
    })
}

/// [`incomplete_group`] against the cluster: lists the group's patches
/// only when `patch` is a part.
pub async fn group_gap(
    client: &Client,
    namespace: &str,
    patch: &MemoryPatch,
) -> Result<Option<String>, Error> {
    let Some(group) = patch.labels().get(GROUP_LABEL) else {
        return Ok(None);
    };
    let siblings = Api::<MemoryPatch>::namespaced(client.clone(), namespace)
        .list(&kube::api::ListParams::default().labels(&format!("{GROUP_LABEL}={group}")))
        .await?
        .items;
    Ok(incomplete_group(patch, &siblings))
}

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
    /// What the optional LLM pass used; absent when it did not run.
    /// Its input + output tokens count against a schedule's
    /// `budget.tokensPerHour`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmUsage>,
}

/// The LLM usage of one dream, reported to the operator for its metrics.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LlmUsage {
    /// `anthropic` or `openai`.
    pub provider: String,
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    /// Requests that failed for good (the pass then keeps the
    /// deterministic ops).
    #[serde(default)]
    pub errors: u64,
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
/// with the summary saying which part it is, and labelled as one group
/// ([`GROUP_LABEL`], [`PARTS_ANNOTATION`]). An op too large on its own is
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
    let mut parts: Vec<MemoryPatch> = chunks
        .into_iter()
        .enumerate()
        .map(|(i, ops)| {
            let mut p = empty.clone();
            p.spec = MemoryPatchSpec {
                ops,
                summary: format!("{} (part {} of {n})", patch.spec.summary, i + 1),
                ..patch.spec.clone()
            };
            p
        })
        .collect();
    name_parts(&mut parts, &name, &group_value(&name));
    Ok(parts)
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

/// Whether a patch may still be approved or applied (not in a final phase).
fn is_open(p: &MemoryPatch) -> bool {
    !p.status.as_ref().and_then(|s| s.phase).is_some_and(|ph| {
        matches!(
            ph,
            PatchPhase::Rejected
                | PatchPhase::Applied
                | PatchPhase::Conflicted
                | PatchPhase::Failed
        )
    })
}

/// The base name and group label of an open group in `existing` that an
/// interrupted publish of the same proposal left (one of its parts has the
/// spec of one of `parts`, at the same position). The engine's names carry
/// the minute, so a rerun would otherwise start a second, equally
/// incomplete group under another name.
pub fn interrupted_group(
    parts: &[MemoryPatch],
    existing: &[MemoryPatch],
) -> Option<(String, String)> {
    if parts.len() < 2 {
        return None;
    }
    existing.iter().filter(|p| is_open(p)).find_map(|p| {
        let group = p.labels().get(GROUP_LABEL)?;
        let i = parts.iter().position(|part| part.spec == p.spec)?;
        let base = p
            .name_any()
            .strip_suffix(&format!("-part-{}", i + 1))?
            .to_string();
        Some((base, group.clone()))
    })
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
    let mut parts = split(&prepared, MAX_PATCH_BYTES)?;
    if let Some((base, group)) = interrupted_group(&parts, &existing) {
        tracing::info!(
            namespace,
            group,
            "completing an interrupted group of patch parts"
        );
        name_parts(&mut parts, &base, &group);
    }
    let mut names = Vec::new();
    for (i, part) in parts.into_iter().enumerate() {
        let name = part.name_any();
        if existing
            .iter()
            .any(|p| p.name_any() == name && p.spec == part.spec)
        {
            tracing::info!(namespace, name, "MemoryPatch exists already");
            names.push(name);
            fault_point(&format!("publish-after-part-{}", i + 1));
            continue;
        }
        if let Some(same) = existing
            .iter()
            .filter(|p| is_open(p))
            .find(|p| p.spec == part.spec && !p.labels().contains_key(GROUP_LABEL))
        {
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
        fault_point(&format!("publish-after-part-{}", i + 1));
    }
    // Every object exists; the termination message is not written yet.
    fault_point("publish-before-result");
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
    fn parts_form_a_group_that_is_complete_only_with_every_part() {
        let parts = split(&patch(300, 10_000), MAX_PATCH_BYTES).expect("split");
        let n = parts.len();
        for p in &parts {
            assert_eq!(
                p.labels().get(GROUP_LABEL).map(String::as_str),
                Some("team-20261130-0300-ab12")
            );
            assert_eq!(p.annotations().get(PARTS_ANNOTATION), Some(&n.to_string()));
        }
        let first = &parts[0];
        let gap = incomplete_group(first, &parts[..n - 1]).expect("one part missing");
        assert!(gap.contains(&format!("{} of {n} parts", n - 1)), "{gap}");
        assert_eq!(incomplete_group(first, &parts), None);
        // A whole patch is no group; a long name gets a hashed label value.
        assert_eq!(incomplete_group(&patch(1, 1), &[]), None);
        let long = "x".repeat(80);
        assert!(group_value(&long).len() <= 63);
        assert_eq!(group_value(&long), group_value(&long));
        let mut broken = first.clone();
        broken
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(PARTS_ANNOTATION.to_string(), "many".to_string());
        assert!(incomplete_group(&broken, &parts).is_some());
    }

    #[test]
    fn a_rerun_adopts_the_names_of_an_interrupted_group() {
        let parts = split(&patch(300, 10_000), MAX_PATCH_BYTES).expect("split");
        // The first run, a minute earlier, created part 2 under its name.
        let mut earlier = parts[1].clone();
        earlier.metadata.name = Some("team-20261130-0259-ffff-part-2".to_string());
        earlier
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(
                GROUP_LABEL.to_string(),
                "team-20261130-0259-ffff".to_string(),
            );
        assert_eq!(
            interrupted_group(&parts, std::slice::from_ref(&earlier)),
            Some((
                "team-20261130-0259-ffff".to_string(),
                "team-20261130-0259-ffff".to_string()
            ))
        );
        // A finished group, or a whole patch, is not adopted.
        let mut done = earlier.clone();
        done.status = Some(crate::api::MemoryPatchStatus {
            phase: Some(PatchPhase::Applied),
            ..Default::default()
        });
        assert_eq!(interrupted_group(&parts, &[done]), None);
        assert_eq!(interrupted_group(&parts[..1], &[earlier]), None);
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
