//! The approval guard of DESIGN §2 on a real apiserver: only users with the
//! custom verb `approve` on `memorystores/<store>` may set
//! `reverie.dev/approval`; the value is set once; `reverie.dev/approved-by`
//! must be the requesting user.

mod common;

use common::reverie::output_text as text;

use common::ControlPlane;
use std::process::Output;
use std::time::Duration;

fn patch_manifest(name: &str, store: &str) -> String {
    format!(
        "apiVersion: reverie.dev/v1alpha1\nkind: MemoryPatch\nmetadata: {{name: {name}}}\nspec:\n  storeRef: {{name: {store}}}\n  ops:\n  - {{op: add, path: lessons.md, content: Use UTC., reason: instruction}}\n"
    )
}

/// Sets annotations on a patch as `user` (impersonated).
fn annotate_as(cp: &ControlPlane, user: &str, ns: &str, patch: &str, kv: &[&str]) -> Output {
    let mut args = vec!["annotate", "-n", ns, "memorypatch", patch, "--overwrite"];
    args.extend_from_slice(kv);
    cp.kubectl_as(user, &args)
}

#[tokio::test(flavor = "multi_thread")]
async fn only_approvers_may_approve_once_and_as_themselves() {
    let cp = ControlPlane::shared().await;
    cp.install_crds().await;
    cp.install_approval_policy();
    let ns = cp.create_namespace("approval").await;

    // alice may approve patches of team-memory; bob may edit patches but not approve.
    cp.apply_yaml(
        &ns,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: alice-approves}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: reverie-approver}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: patch-editor}\nrules:\n- {apiGroups: [reverie.dev], resources: [memorypatches], verbs: [get, list, patch, update, create]}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: bob-edits}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: patch-editor}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: bob}]\n",
    );
    cp.apply_yaml(&ns, &patch_manifest("p1", "team-memory"));

    // A new policy binding takes a moment to be enforced: wait until bob is
    // refused. Each try uses a fresh probe patch, since a try that lands
    // before enforcement decides its probe for good.
    let tries = std::sync::atomic::AtomicUsize::new(0);
    common::eventually(
        "the approval policy to be enforced",
        Duration::from_secs(30),
        || {
            let probe = format!(
                "probe-{}",
                tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            );
            cp.apply_yaml(&ns, &patch_manifest(&probe, "team-memory"));
            let o = annotate_as(
                cp,
                "bob",
                &ns,
                &probe,
                &[
                    "reverie.dev/approval=approved",
                    "reverie.dev/approved-by=bob",
                ],
            );
            let t = text(&o);
            async move {
                if !o.status.success() && t.contains("may not approve") {
                    Ok(())
                } else {
                    Err(t)
                }
            }
        },
    )
    .await;

    // bob has patch rights on the object but not the approve verb.
    let o = annotate_as(
        cp,
        "bob",
        &ns,
        "p1",
        &[
            "reverie.dev/approval=approved",
            "reverie.dev/approved-by=bob",
        ],
    );
    assert!(!o.status.success(), "bob approved without the approve verb");
    assert!(
        text(&o).contains("needs the verb approve on memorystores/team-memory"),
        "{}",
        text(&o)
    );

    // alice may approve, but not in bob's name.
    let o = annotate_as(
        cp,
        "alice",
        &ns,
        "p1",
        &[
            "reverie.dev/approval=approved",
            "reverie.dev/approved-by=bob",
        ],
    );
    assert!(!o.status.success(), "a spoofed approved-by was accepted");
    assert!(
        text(&o).contains("must be set to the requesting user (alice)"),
        "{}",
        text(&o)
    );

    // Nor with a value other than approved/rejected.
    let o = annotate_as(
        cp,
        "alice",
        &ns,
        "p1",
        &[
            "reverie.dev/approval=maybe",
            "reverie.dev/approved-by=alice",
        ],
    );
    assert!(!o.status.success(), "approval=maybe was accepted");
    assert!(
        text(&o).contains("must be 'approved' or 'rejected'"),
        "{}",
        text(&o)
    );

    // The right user, in her own name: accepted.
    let o = annotate_as(
        cp,
        "alice",
        &ns,
        "p1",
        &[
            "reverie.dev/approval=approved",
            "reverie.dev/approved-by=alice",
            "reverie.dev/approval-reason=looks right",
        ],
    );
    assert!(o.status.success(), "alice could not approve: {}", text(&o));

    // Set once: not even alice may flip it afterwards.
    let o = annotate_as(cp, "alice", &ns, "p1", &["reverie.dev/approval=rejected"]);
    assert!(!o.status.success(), "the approval was flipped");
    assert!(text(&o).contains("set once"), "{}", text(&o));
    let o = cp.kubectl(&[
        "annotate",
        "-n",
        &ns,
        "memorypatch",
        "p1",
        "reverie.dev/approval-",
    ]);
    assert!(!o.status.success(), "the approval was removed");

    // Unrelated changes still pass.
    let o = annotate_as(cp, "bob", &ns, "p1", &["example.com/note=reviewed"]);
    assert!(
        o.status.success(),
        "an unrelated annotation was refused: {}",
        text(&o)
    );

    // Creating a patch that is already approved needs the verb too.
    let pre = patch_manifest("p2", "team-memory").replace(
        "metadata: {name: p2}",
        "metadata: {name: p2, annotations: {reverie.dev/approval: approved, reverie.dev/approved-by: bob}}",
    );
    let file = cp.dir().join(format!("{ns}-p2.yaml"));
    std::fs::write(&file, pre).expect("write manifest");
    let o = cp.kubectl_as(
        "bob",
        &["create", "-n", &ns, "-f", file.to_str().expect("utf-8")],
    );
    assert!(!o.status.success(), "bob created a pre-approved patch");

    // The approve verb is scoped to the store: a Role granting it on another
    // store only does not let carol approve team-memory's patches.
    cp.apply_yaml(
        &ns,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: approve-other}\nrules:\n- {apiGroups: [reverie.dev], resources: [memorystores], resourceNames: [other-store], verbs: [approve]}\n- {apiGroups: [reverie.dev], resources: [memorypatches], verbs: [get, patch]}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: carol-approves-other}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: approve-other}\nsubjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: carol}]\n",
    );
    cp.apply_yaml(&ns, &patch_manifest("p3", "team-memory"));
    let o = annotate_as(
        cp,
        "carol",
        &ns,
        "p3",
        &[
            "reverie.dev/approval=rejected",
            "reverie.dev/approved-by=carol",
        ],
    );
    assert!(!o.status.success(), "carol approved a store she may not");
    cp.apply_yaml(&ns, &patch_manifest("p4", "other-store"));
    let o = annotate_as(
        cp,
        "carol",
        &ns,
        "p4",
        &[
            "reverie.dev/approval=rejected",
            "reverie.dev/approved-by=carol",
        ],
    );
    assert!(
        o.status.success(),
        "carol could not reject other-store's patch: {}",
        text(&o)
    );
}
