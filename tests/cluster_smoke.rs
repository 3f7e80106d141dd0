//! Smoke test of the test control plane and the test node: what every other cluster
//! test relies on. Needs go + openssl (the control plane is built by
//! `hack/control-plane.sh` on first use).

mod common;

use std::time::{Duration, Instant};

use common::node::TestNode;
use common::{eventually, ControlPlane};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams};

/// Waits until pod `ns/name` reaches a terminal phase; returns it.
async fn finished_pod(cp: &ControlPlane, ns: &str, name: &str, timeout: Duration) -> Pod {
    cp.wait_pod_finished(ns, name, timeout).await
}

/// Whether a Job has the true condition `type_`.
fn job_has(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

/// `(exitCode, reason, message)` of the first container's terminated state.
fn terminated(pod: &Pod) -> (i32, String, String) {
    let st = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    match st {
        Some(t) => (
            t.exit_code,
            t.reason.clone().unwrap_or_default(),
            t.message.clone().unwrap_or_default(),
        ),
        None => panic!("pod has no terminated container status: {:?}", pod.status),
    }
}

fn phase(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

fn pod_yaml(name: &str, script: &str, extra_spec: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  restartPolicy: Never
{extra_spec}  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", {script:?}]
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn control_plane_starts_and_is_ready() {
    let cp = ControlPlane::shared().await;
    eprintln!("control plane cold start: {:?}", cp.start_duration);
    let readyz = cp.kubectl_ok(&["get", "--raw", "/readyz"]);
    assert_eq!(readyz.trim(), "ok");
    let version = cp.kubectl_ok(&["version", "-o", "json"]);
    assert!(version.contains("v1.37.2"), "unexpected version: {version}");
    // The approval policy of the chart needs ValidatingAdmissionPolicy served.
    let resources = cp.kubectl_ok(&[
        "api-resources",
        "--api-group=admissionregistration.k8s.io",
        "-o",
        "name",
    ]);
    assert!(
        resources.contains("validatingadmissionpolicies"),
        "ValidatingAdmissionPolicy is not served: {resources}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn namespace_gets_default_service_account() {
    let cp = ControlPlane::shared().await;
    let ns = cp.create_namespace("smoke-sa").await;
    let sas: Api<ServiceAccount> = Api::namespaced(cp.client(), &ns);
    let sa = sas.get("default").await;
    assert!(sa.is_ok(), "default ServiceAccount missing in {ns}: {sa:?}");
    // The kube-root-ca.crt ConfigMap backs the projected token volume of pods.
    eventually(
        "ConfigMap kube-root-ca.crt",
        Duration::from_secs(20),
        || async {
            let out = cp.kubectl(&["get", "configmap", "kube-root-ca.crt", "-n", &ns]);
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).into_owned())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn job_writes_to_its_pvc_and_completes() {
    let cp = ControlPlane::shared().await;
    let node = TestNode::shared().await;
    let ns = cp.create_namespace("smoke-job").await;
    cp.apply_yaml(
        &ns,
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: work
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: batch/v1
kind: Job
metadata:
  name: write-ok
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox
        command: ["sh", "-c", "echo ok > /data/out"]
        volumeMounts:
        - {name: work, mountPath: /data}
      volumes:
      - name: work
        persistentVolumeClaim: {claimName: work}
"#,
    );
    let job = cp
        .wait_job_finished(&ns, "write-ok", Duration::from_secs(60))
        .await;
    assert!(job_has(&job, "Complete"), "job write-ok: {:?}", job.status);
    let out = std::fs::read_to_string(node.pvc_dir(&ns, "work").join("out"));
    assert_eq!(out.ok().as_deref(), Some("ok\n"));
    assert_eq!(cp.pvc_dir(&ns, "work"), node.pvc_dir(&ns, "work"));
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_pod_reports_exit_code_and_termination_message() {
    let cp = ControlPlane::shared().await;
    let node = TestNode::shared().await;
    let ns = cp.create_namespace("smoke-fail").await;
    cp.apply_yaml(
        &ns,
        &pod_yaml(
            "fails",
            "echo 'the store is locked' > /dev/termination-log; echo to-log; exit 3",
            "",
        ),
    );
    cp.apply_yaml(
        &ns,
        &format!(
            "{}    terminationMessagePolicy: FallbackToLogsOnError\n",
            pod_yaml(
                "fails-logs",
                "echo first; echo 'last words' >&2; exit 4",
                ""
            )
        ),
    );
    let pod = finished_pod(cp, &ns, "fails", Duration::from_secs(60)).await;
    assert_eq!(phase(&pod), "Failed");
    assert_eq!(
        terminated(&pod),
        (3, "Error".to_string(), "the store is locked\n".to_string())
    );
    assert_eq!(
        node.container_log(&ns, "fails", "main").ok().as_deref(),
        Some("to-log\n")
    );

    let pod = finished_pod(cp, &ns, "fails-logs", Duration::from_secs(60)).await;
    assert_eq!(phase(&pod), "Failed");
    let (code, reason, message) = terminated(&pod);
    assert_eq!((code, reason.as_str()), (4, "Error"));
    assert!(message.contains("last words"), "message: {message:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_uses_its_service_account_under_rbac() {
    let cp = ControlPlane::shared().await;
    let node = TestNode::shared().await;
    let ns = cp.create_namespace("smoke-rbac").await;
    let script = "kubectl get pods -o name";
    cp.apply_yaml(&ns, &pod_yaml("denied", script, ""));
    let pod = finished_pod(cp, &ns, "denied", Duration::from_secs(60)).await;
    let log = node
        .container_log(&ns, "denied", "main")
        .unwrap_or_default();
    assert_eq!(phase(&pod), "Failed", "log: {log}");
    assert!(
        log.contains("forbidden") && log.contains(&format!("system:serviceaccount:{ns}:default")),
        "expected an RBAC denial for the default service account, got: {log}"
    );

    cp.apply_yaml(
        &ns,
        &format!(
            r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: pod-reader
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: pod-reader
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}}
subjects:
- {{kind: ServiceAccount, name: default, namespace: {ns}}}
"#
        ),
    );
    cp.apply_yaml(&ns, &pod_yaml("allowed", script, ""));
    let pod = finished_pod(cp, &ns, "allowed", Duration::from_secs(60)).await;
    let log = node
        .container_log(&ns, "allowed", "main")
        .unwrap_or_default();
    assert_eq!(phase(&pod), "Succeeded", "log: {log}");
    assert!(log.contains("pod/allowed"), "kubectl output: {log}");

    // Impersonation sees the same RBAC.
    let sa_user = format!("system:serviceaccount:{ns}:default");
    let out = cp.kubectl_as(&sa_user, &["auth", "can-i", "list", "pods", "-n", &ns]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "yes");
    let out = cp.kubectl_as(&sa_user, &["auth", "can-i", "delete", "pods", "-n", &ns]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
    let can_i = ["auth", "can-i", "create", "namespaces"];
    let out = cp.kubectl_as("alice", &can_i);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
    let out = cp.kubectl_as_groups("alice", &["system:masters"], &can_i);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "yes");
    let alice: Api<Pod> = Api::namespaced(cp.client_as("alice", &[]), &ns);
    assert!(alice.list(&ListParams::default()).await.is_err());
    let admin: Api<Pod> = Api::namespaced(cp.client_as("alice", &["system:masters"]), &ns);
    assert!(admin.list(&ListParams::default()).await.is_ok());
    let pods: Api<Pod> = Api::namespaced(cp.client_as(&sa_user, &[]), &ns);
    assert!(pods.list(&ListParams::default()).await.is_ok());
    assert!(pods
        .delete("allowed", &DeleteParams::default())
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_env_volumes_deadline_and_deletion() {
    let cp = ControlPlane::shared().await;
    let node = TestNode::shared().await;
    let ns = cp.create_namespace("smoke-env").await;
    cp.apply_yaml(
        &ns,
        r#"apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {token: s3cret}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {mode: fast, file.txt: from-configmap}
---
apiVersion: v1
kind: Pod
metadata: {name: env}
spec:
  restartPolicy: Never
  initContainers:
  - name: init
    image: busybox
    command: ["sh", "-c", "echo init > /scratch/init"]
    volumeMounts: [{name: scratch, mountPath: /scratch}]
  containers:
  - name: main
    image: busybox
    workingDir: /scratch
    command: ["sh", "-c"]
    args: ["echo \"$TOKEN $MODE $POD $NS $(cat init) $(cat /etc/cfg/file.txt)\" > /out/env; echo \"$REVERIE_PATH_MAP\" > /out/map; test -s /var/run/secrets/kubernetes.io/serviceaccount/token"]
    env:
    - {name: TOKEN, valueFrom: {secretKeyRef: {name: creds, key: token}}}
    - {name: MODE, valueFrom: {configMapKeyRef: {name: cfg, key: mode}}}
    - {name: POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    - {name: NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    volumeMounts:
    - {name: scratch, mountPath: /scratch}
    - {name: out, mountPath: /out}
    - {name: cfg, mountPath: /etc/cfg}
  volumes:
  - {name: scratch, emptyDir: {}}
  - {name: out, persistentVolumeClaim: {claimName: out}}
  - {name: cfg, configMap: {name: cfg}}
"#,
    );
    cp.apply_yaml(
        &ns,
        &pod_yaml("deadline", "sleep 300", "  activeDeadlineSeconds: 2\n"),
    );
    cp.apply_yaml(&ns, &pod_yaml("deleted", "sleep 300", ""));

    let pod = finished_pod(cp, &ns, "env", Duration::from_secs(60)).await;
    let log = node.container_log(&ns, "env", "main").unwrap_or_default();
    assert_eq!(
        phase(&pod),
        "Succeeded",
        "log: {log}, status: {:?}",
        pod.status
    );
    let env = std::fs::read_to_string(node.pvc_dir(&ns, "out").join("env")).unwrap_or_default();
    assert_eq!(env, format!("s3cret fast env {ns} init from-configmap\n"));
    let map = std::fs::read_to_string(node.pvc_dir(&ns, "out").join("map")).unwrap_or_default();
    let out_entry = format!("/out={}", node.pvc_dir(&ns, "out").display());
    assert!(
        map.trim().split(':').any(|e| e == out_entry),
        "REVERIE_PATH_MAP {map:?} lacks {out_entry:?}"
    );

    let pod = finished_pod(cp, &ns, "deadline", Duration::from_secs(30)).await;
    assert_eq!(phase(&pod), "Failed");
    assert_eq!(
        pod.status.as_ref().and_then(|s| s.reason.as_deref()),
        Some("DeadlineExceeded")
    );

    let pods: Api<Pod> = Api::namespaced(cp.client(), &ns);
    eventually("pod deleted to run", Duration::from_secs(30), || async {
        let p = pods.get("deleted").await.map_err(|e| e.to_string())?;
        if phase(&p) == "Running" {
            Ok(())
        } else {
            Err(phase(&p))
        }
    })
    .await;
    let began = Instant::now();
    let deleted = pods.delete("deleted", &DeleteParams::default()).await;
    assert!(deleted.is_ok(), "delete failed: {deleted:?}");
    eventually(
        "pod deleted to disappear",
        Duration::from_secs(30),
        || async {
            match pods.get_opt("deleted").await {
                Ok(None) => Ok(()),
                Ok(Some(p)) => Err(format!("still there, phase {}", phase(&p))),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "deletion took {:?}",
        began.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cronjob_creates_a_job() {
    let cp = ControlPlane::shared().await;
    let _node = TestNode::shared().await;
    let ns = cp.create_namespace("smoke-cron").await;
    cp.apply_yaml(
        &ns,
        r#"apiVersion: batch/v1
kind: CronJob
metadata:
  name: every-minute
spec:
  schedule: "* * * * *"
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      backoffLimit: 0
      template:
        spec:
          restartPolicy: Never
          containers:
          - {name: main, image: busybox, command: ["true"]}
"#,
    );
    let jobs: Api<Job> = Api::namespaced(cp.client(), &ns);
    // The schedule fires at the next minute boundary: up to ~60 s.
    eventually(
        "the CronJob to create a Job",
        Duration::from_secs(90),
        || async {
            let list = jobs
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let owned = list.items.iter().any(|j| {
                j.metadata.owner_references.as_ref().is_some_and(|o| {
                    o.iter()
                        .any(|r| r.kind == "CronJob" && r.name == "every-minute")
                })
            });
            if owned {
                Ok(())
            } else {
                Err(format!("{} jobs", list.items.len()))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crds_install_and_become_established() {
    let cp = ControlPlane::shared().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let crd = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.reverie.dev
spec:
  group: smoke.reverie.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties: {size: {type: integer}}
"#;
    std::fs::write(dir.path().join("widgets.yaml"), crd).unwrap_or_else(|e| panic!("write: {e}"));
    std::fs::write(dir.path().join("README.md"), "not a manifest")
        .unwrap_or_else(|e| panic!("write: {e}"));
    let names = cp.install_crds_from(dir.path()).await;
    assert_eq!(names, vec!["widgets.smoke.reverie.dev".to_string()]);
    // Idempotent, and the new kind is served right away.
    assert_eq!(cp.install_crds_from(dir.path()).await, names);
    let ns = cp.create_namespace("smoke-crd").await;
    cp.apply_yaml(
        &ns,
        "apiVersion: smoke.reverie.dev/v1\nkind: Widget\nmetadata: {name: w}\nspec: {size: 3}\n",
    );
    assert!(cp
        .kubectl_ok(&["get", "widgets", "-n", &ns, "-o", "name"])
        .contains("widget.smoke.reverie.dev/w"));
    // The project's own crds/ (none yet is fine).
    cp.install_crds().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reverie_command_runs_the_built_binary() {
    let cp = ControlPlane::shared().await;
    let node = TestNode::shared().await;
    let ns = cp.create_namespace("smoke-bin").await;
    cp.apply_yaml(
        &ns,
        r#"apiVersion: v1
kind: Pod
metadata: {name: help}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: ghcr.io/example/reverie:dev
    command: ["/usr/local/bin/reverie"]
    args: ["--help"]
"#,
    );
    let pod = finished_pod(cp, &ns, "help", Duration::from_secs(60)).await;
    let log = node.container_log(&ns, "help", "main").unwrap_or_default();
    assert_eq!(phase(&pod), "Succeeded", "log: {log}");
    assert!(log.contains("Usage"), "reverie --help printed: {log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn deployment_pod_keeps_running_until_scaled_down() {
    let cp = ControlPlane::shared().await;
    let node = TestNode::shared().await;
    let ns = cp.create_namespace("smoke-deploy").await;
    cp.apply_yaml(
        &ns,
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: server}
spec:
  replicas: 1
  selector: {matchLabels: {app: server}}
  template:
    metadata: {labels: {app: server}}
    spec:
      containers:
      - name: main
        image: busybox
        command: ["sh", "-c", "echo up; exec sleep 300"]
"#,
    );
    let pods: Api<Pod> = Api::namespaced(cp.client(), &ns);
    let lp = ListParams::default().labels("app=server");
    let name = eventually(
        "the Deployment's pod to run",
        Duration::from_secs(60),
        || async {
            let list = pods.list(&lp).await.map_err(|e| e.to_string())?;
            list.items
                .iter()
                .find(|p| phase(p) == "Running")
                .and_then(|p| p.metadata.name.clone())
                .ok_or_else(|| format!("{} pods, none Running", list.items.len()))
        },
    )
    .await;
    eventually("the pod's log", Duration::from_secs(10), || async {
        match node.container_log(&ns, &name, "main") {
            Ok(log) if log == "up\n" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    cp.kubectl_ok(&["scale", "deployment/server", "--replicas=0", "-n", &ns]);
    eventually(
        "the Deployment's pod to go away",
        Duration::from_secs(30),
        || async {
            let list = pods.list(&lp).await.map_err(|e| e.to_string())?;
            if list.items.is_empty() {
                Ok(())
            } else {
                Err(format!("{} pods left", list.items.len()))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_reaches_the_control_plane() {
    let cp = ControlPlane::shared().await;
    let ns = cp.create_namespace("smoke-helm").await;
    let out = cp.helm(&["list", "-n", &ns, "-o", "json"]);
    assert!(
        out.status.success(),
        "helm list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

#[tokio::test(flavor = "multi_thread")]
async fn namespace_deletion_stops_its_pods_and_finishes() {
    let cp = ControlPlane::shared().await;
    let _node = TestNode::shared().await;
    let ns = cp.create_namespace("smoke-nsdel").await;
    cp.apply_yaml(
        &ns,
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: long}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "exec sleep 300"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - {name: data, persistentVolumeClaim: {claimName: data}}
"#,
    );
    let pods: Api<Pod> = Api::namespaced(cp.client(), &ns);
    eventually("pod long to run", Duration::from_secs(60), || async {
        let p = pods.get("long").await.map_err(|e| e.to_string())?;
        if phase(&p) == "Running" {
            Ok(())
        } else {
            Err(phase(&p))
        }
    })
    .await;
    cp.kubectl_ok(&["delete", "namespace", &ns, "--wait=false"]);
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(cp.client());
    eventually(
        &format!("namespace {ns} to be deleted"),
        Duration::from_secs(60),
        || async {
            match namespaces.get_opt(&ns).await {
                Ok(None) => Ok(()),
                Ok(Some(n)) => Err(format!("{:?}", n.status.and_then(|s| s.conditions))),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn job_pods_run_in_parallel() {
    let cp = ControlPlane::shared().await;
    let node = TestNode::shared().await;
    let ns = cp.create_namespace("smoke-parallel").await;
    // Each pod waits until all five have started: this only completes if they run at
    // the same time.
    cp.apply_yaml(
        &ns,
        r#"apiVersion: batch/v1
kind: Job
metadata: {name: fan-out}
spec:
  completions: 5
  parallelism: 5
  completionMode: Indexed
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox
        command:
        - sh
        - -c
        - 'touch /shared/started-$JOB_COMPLETION_INDEX; for i in $(seq 1 300); do [ "$(ls /shared | wc -l)" -ge 5 ] && exit 0; sleep 0.1; done; exit 1'
        volumeMounts: [{name: shared, mountPath: /shared}]
      volumes:
      - {name: shared, persistentVolumeClaim: {claimName: shared}}
"#,
    );
    let job = cp
        .wait_job_finished(&ns, "fan-out", Duration::from_secs(90))
        .await;
    assert!(job_has(&job, "Complete"), "job fan-out: {:?}", job.status);
    let mut started: Vec<String> = std::fs::read_dir(node.pvc_dir(&ns, "shared"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    started.sort();
    assert_eq!(
        started,
        (0..5).map(|i| format!("started-{i}")).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn validating_admission_policy_is_enforced() {
    let cp = ControlPlane::shared().await;
    let ns = cp.create_namespace("smoke-vap").await;
    cp.apply_yaml(
        &ns,
        &format!(
            r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: smoke-no-forbidden-{ns}}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: [v1]
      operations: [CREATE, UPDATE]
      resources: [configmaps]
  validations:
  - expression: "!object.metadata.name.startsWith('forbidden')"
    message: "forbidden names are forbidden"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: smoke-no-forbidden-{ns}}}
spec:
  policyName: smoke-no-forbidden-{ns}
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels: {{kubernetes.io/metadata.name: {ns}}}
"#
        ),
    );
    // Policies are loaded asynchronously: retry until the denial shows up.
    let mut n = 0;
    eventually("the policy to deny", Duration::from_secs(30), || {
        n += 1;
        let name = format!("forbidden-{n}");
        let ns = ns.clone();
        async move {
            let out = cp.kubectl(&["create", "configmap", &name, "-n", &ns]);
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            if !out.status.success() && err.contains("forbidden names are forbidden") {
                Ok(())
            } else {
                Err(format!("create {name}: {} {err}", out.status))
            }
        }
    })
    .await;
    cp.kubectl_ok(&["create", "configmap", "allowed", "-n", &ns]);
}
