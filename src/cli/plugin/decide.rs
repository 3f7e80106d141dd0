//! `approve` and `reject`: find out who the user is, then record the
//! decision in the MemoryPatch's annotations (the admission policy checks it).

use super::{api_status, get_patch, strip_kind, DecideArgs, PATCH_KINDS};
use crate::api::{
    MemoryPatch, APPROVAL_ANNOTATION, APPROVAL_REASON_ANNOTATION, APPROVED_BY_ANNOTATION,
};
use crate::cli::Exit;
use anyhow::Context as _;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::{Api, Patch, PatchParams, PostParams};

/// A reviewer's decision on a MemoryPatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Approved,
    Rejected,
}

impl Decision {
    /// The value of `reverie.dev/approval`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approved => "approved",
            Decision::Rejected => "rejected",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Decision::Approved => "approve",
            Decision::Rejected => "reject",
        }
    }
}

/// The JSON merge patch that records a decision: the approval, who made it
/// (the policy checks it equals the requester), the reason when given, and
/// the `resourceVersion` read, so that a concurrent change makes the write
/// fail (409) instead of deciding on a state the user did not see.
pub fn decision_patch(
    decision: Decision,
    user: &str,
    reason: Option<&str>,
    resource_version: Option<&str>,
) -> serde_json::Value {
    let mut annotations = serde_json::Map::new();
    annotations.insert(APPROVAL_ANNOTATION.into(), decision.as_str().into());
    annotations.insert(APPROVED_BY_ANNOTATION.into(), user.into());
    if let Some(reason) = reason {
        annotations.insert(APPROVAL_REASON_ANNOTATION.into(), reason.into());
    }
    let mut metadata = serde_json::Map::new();
    metadata.insert("annotations".into(), annotations.into());
    if let Some(rv) = resource_version {
        metadata.insert("resourceVersion".into(), rv.into());
    }
    serde_json::json!({ "metadata": metadata })
}

/// "already approved by alice (reason: …)" when the patch carries a
/// decision, else `None`.
pub fn existing_decision(patch: &MemoryPatch) -> Option<String> {
    let annotations = patch.metadata.annotations.as_ref()?;
    let decision = annotations.get(APPROVAL_ANNOTATION)?;
    let mut text = format!("already {decision}");
    if let Some(by) = annotations.get(APPROVED_BY_ANNOTATION) {
        text.push_str(&format!(" by {by}"));
    }
    if let Some(reason) = annotations.get(APPROVAL_REASON_ANNOTATION) {
        text.push_str(&format!(" (reason: {reason})"));
    }
    Some(text)
}

/// Who the apiserver says we are (after impersonation).
async fn whoami(client: &kube::Client) -> anyhow::Result<String> {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .context(
            "cannot ask the apiserver who you are (SelfSubjectReview, authentication.k8s.io/v1)",
        )?;
    review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the apiserver's SelfSubjectReview named no user; cannot record who decides"
            )
        })
}

/// Approves or rejects the patch named in `args`; returns what to print.
pub(super) async fn run(
    client: &kube::Client,
    ns: &str,
    args: &DecideArgs,
    decision: Decision,
) -> anyhow::Result<String> {
    let name = strip_kind(&args.patch, PATCH_KINDS)?;
    let patch = get_patch(client, ns, name).await?;
    if let Some(done) = existing_decision(&patch) {
        return Err(Exit::new(
            3,
            format!("MemoryPatch {name} in namespace {ns} is {done}; a decision is set once"),
        )
        .into());
    }
    let user = whoami(client).await?;
    let body = decision_patch(
        decision,
        &user,
        args.reason.as_deref(),
        patch.metadata.resource_version.as_deref(),
    );
    let api: Api<MemoryPatch> = Api::namespaced(client.clone(), ns);
    tracing::debug!(patch = name, namespace = ns, user = %user, "recording {}", decision.as_str());
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        Ok(_) => {}
        Err(e) => {
            let Some(status) = api_status(&e) else {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot {} MemoryPatch {name} in namespace {ns}",
                    decision.verb()
                )));
            };
            let message = match status.code {
                404 => format!("MemoryPatch {name} not found in namespace {ns}"),
                409 => {
                    // Someone changed the patch between our read and write: say
                    // what happened if it was a decision.
                    match get_patch(client, ns, name).await.ok().and_then(|p| existing_decision(&p)) {
                        Some(done) => format!(
                            "MemoryPatch {name} in namespace {ns} is {done}; a decision is set once"
                        ),
                        None => format!(
                            "MemoryPatch {name} in namespace {ns} changed while you decided; run the command again"
                        ),
                    }
                }
                _ => format!(
                    "the apiserver refused to let {user} {} MemoryPatch {name} in namespace {ns}: {}",
                    decision.verb(),
                    status.message
                ),
            };
            return Err(Exit::new(if status.code == 409 { 3 } else { 1 }, message).into());
        }
    }
    let store = &patch.spec.store_ref.name;
    let mut text = format!(
        "memorypatch/{name} {} by {user} (store {store}, namespace {ns})",
        decision.as_str()
    );
    if let Some(reason) = &args.reason {
        text.push_str(&format!("; reason: {reason}"));
    }
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::plugin::fixtures::*;

    use std::collections::BTreeMap;

    #[test]
    fn decision_patch_records_user_reason_and_precondition() {
        let body = decision_patch(Decision::Approved, "alice", Some("looks right"), Some("42"));
        assert_eq!(
            body,
            serde_json::json!({"metadata": {
                "annotations": {
                    "reverie.dev/approval": "approved",
                    "reverie.dev/approved-by": "alice",
                    "reverie.dev/approval-reason": "looks right"
                },
                "resourceVersion": "42"
            }})
        );
        let body = decision_patch(Decision::Rejected, "bob", None, None);
        assert_eq!(
            body,
            serde_json::json!({"metadata": {"annotations": {
                "reverie.dev/approval": "rejected",
                "reverie.dev/approved-by": "bob"
            }}})
        );
    }

    #[test]
    fn existing_decision_names_who_and_why() {
        let mut p = patch("p1", "s", vec![]);
        assert_eq!(existing_decision(&p), None);
        p.metadata.annotations = Some(BTreeMap::from([
            (APPROVAL_ANNOTATION.to_string(), "rejected".to_string()),
            (APPROVED_BY_ANNOTATION.to_string(), "carol".to_string()),
            (
                APPROVAL_REASON_ANNOTATION.to_string(),
                "too broad".to_string(),
            ),
        ]));
        assert_eq!(
            existing_decision(&p).as_deref(),
            Some("already rejected by carol (reason: too broad)")
        );
    }
}
