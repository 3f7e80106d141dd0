//! `ClusterDreamSchedule` on the real control plane: the controller (in
//! process, watching every namespace) generates one DreamSchedule per
//! namespace its `namespaceSelector` matches, follows namespace labels as
//! they change, refuses to take over a DreamSchedule it does not own, and
//! the generated schedules go with the cluster object (garbage collector).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, ControlPlane};
use kube::api::{Api, DeleteParams, ListParams};
use kube::ResourceExt;
use reverie::api::{ClusterDreamSchedule, DreamSchedule, CLUSTER_SCHEDULE_LABEL};
use reverie::controller::{clusterdreamschedule, Context, ControllerConfig};

const WAIT: Duration = Duration::from_secs(20);
const NAME: &str = "cds-gold";

/// Namespaces (among `candidates`) that hold a DreamSchedule generated
/// from [`NAME`].
async fn generated_in(cp: &ControlPlane, candidates: &[&String]) -> BTreeSet<String> {
    let all: Api<DreamSchedule> = Api::all(cp.client());
    all.list(&ListParams::default().labels(&format!("{CLUSTER_SCHEDULE_LABEL}={NAME}")))
        .await
        .expect("list schedules")
        .items
        .iter()
        .filter_map(|d| d.namespace())
        .filter(|ns| candidates.contains(&ns))
        .collect()
}

async fn wait_generated(
    cp: &ControlPlane,
    candidates: &[&String],
    want: &[&String],
    timeout: Duration,
) {
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    eventually("generated schedules", timeout, || {
        let want = want.clone();
        async move {
            let got = generated_in(cp, candidates).await;
            if got == want {
                Ok(())
            } else {
                Err(format!("{got:?}, want {want:?}"))
            }
        }
    })
    .await
}

async fn status_of(cp: &ControlPlane) -> Option<reverie::api::ClusterDreamScheduleStatus> {
    let api: Api<ClusterDreamSchedule> = Api::all(cp.client());
    api.get(NAME).await.expect("get cluster schedule").status
}

fn label(cp: &ControlPlane, ns: &str, label: &str) {
    cp.kubectl_ok(&["label", "namespace", ns, label, "--overwrite"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_schedule_expands_into_one_schedule_per_selected_namespace() {
    let cp = ControlPlane::shared().await;
    cp.install_crds().await;
    let a = cp.create_namespace("cds-a").await;
    let b = cp.create_namespace("cds-b").await;
    let c = cp.create_namespace("cds-c").await;
    // A selector key of this test only, so no other namespace matches.
    label(cp, &a, "cds-test-tier=gold");
    label(cp, &b, "cds-test-tier=gold");
    let all = [&a, &b, &c];

    let ctx = Arc::new(Context {
        client: cp.client(),
        config: ControllerConfig {
            image: "reverie".to_string(),
            worker_service_account: "reverie-worker".to_string(),
            namespace: None,
        },
    });
    let controller = tokio::spawn(clusterdreamschedule::run(ctx));

    cp.apply_yaml(
        "default",
        &format!(
            "apiVersion: reverie.dev/v1alpha1\nkind: ClusterDreamSchedule\nmetadata: {{name: {NAME}}}\nspec:\n  namespaceSelector: {{matchLabels: {{cds-test-tier: gold}}}}\n  template:\n    schedule: '0 3 * * *'\n    storeSelector: {{matchLabels: {{dreams: nightly}}}}\n    window: 30m\n"
        ),
    );
    wait_generated(cp, &all, &[&a, &b], WAIT).await;

    // The generated schedule carries the template and an owner reference.
    let ds: DreamSchedule = Api::namespaced(cp.client(), &a)
        .get(NAME)
        .await
        .expect("generated schedule");
    assert_eq!(ds.spec.schedule, "0 3 * * *");
    assert_eq!(ds.spec.window.as_deref(), Some("30m"));
    let owner = &ds.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("ClusterDreamSchedule", NAME)
    );

    // Labelling the third namespace adds it; unlabelling one removes it.
    label(cp, &c, "cds-test-tier=gold");
    wait_generated(cp, &all, &[&a, &b, &c], WAIT).await;
    label(cp, &b, "cds-test-tier-");
    wait_generated(cp, &all, &[&a, &c], WAIT).await;

    eventually("status counts namespaces", WAIT, || async {
        let st = status_of(cp).await.unwrap_or_default();
        let want = vec![format!("{a}/{NAME}"), format!("{c}/{NAME}")];
        let ready = st
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if st.namespaces == Some(2) && st.schedules == want && ready {
            Ok(())
        } else {
            Err(format!("{st:?}"))
        }
    })
    .await;

    // A namespace change that leaves the selection as it is makes the
    // controller reconcile, and write nothing.
    let versions = || async {
        let cds: Api<ClusterDreamSchedule> = Api::all(cp.client());
        let mut v = vec![cds.get(NAME).await.expect("get").resource_version()];
        for ns in [&a, &c] {
            let ds: Api<DreamSchedule> = Api::namespaced(cp.client(), ns);
            v.push(ds.get(NAME).await.expect("get").resource_version());
        }
        v
    };
    let before = versions().await;
    label(cp, &c, "cds-test-unrelated=yes");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(versions().await, before, "an idle reconcile wrote");

    // A same-named schedule it does not own is left alone and reported.
    cp.apply_yaml(
        &b,
        &format!(
            "apiVersion: reverie.dev/v1alpha1\nkind: DreamSchedule\nmetadata: {{name: {NAME}}}\nspec:\n  schedule: '@daily'\n  storeRef: {{name: mine}}\n"
        ),
    );
    label(cp, &b, "cds-test-tier=gold");
    eventually("Stalled/NameTaken", WAIT, || async {
        let st = status_of(cp).await.unwrap_or_default();
        match st.conditions.iter().find(|c| c.type_ == "Stalled") {
            Some(s) if s.reason == "NameTaken" && s.message.contains(&format!("{b}/{NAME}")) => {
                Ok(())
            }
            _ => Err(format!("{st:?}")),
        }
    })
    .await;
    let theirs: DreamSchedule = Api::namespaced(cp.client(), &b)
        .get(NAME)
        .await
        .expect("unowned schedule");
    assert!(theirs.owner_references().is_empty(), "not taken over");
    assert_eq!(theirs.spec.schedule, "@daily");

    // Deleting the cluster object removes what it generated (garbage
    // collector) and nothing else.
    let api: Api<ClusterDreamSchedule> = Api::all(cp.client());
    api.delete(NAME, &DeleteParams::default())
        .await
        .expect("delete cluster schedule");
    let t = std::time::Instant::now();
    // The garbage collector learns new kinds by discovery every 30 s.
    wait_generated(cp, &all, &[], Duration::from_secs(60)).await;
    eprintln!("garbage collected in {:?}", t.elapsed());
    let still: Api<DreamSchedule> = Api::namespaced(cp.client(), &b);
    assert!(still.get_opt(NAME).await.expect("get").is_some());
    controller.abort();
}
