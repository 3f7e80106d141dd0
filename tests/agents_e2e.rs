//! End to end on the real control plane and the test node: the Agent,
//! AgentTeam and AgentSession controllers run in-process, pods run the
//! cargo-built `reverie agent`, and the model is the scripted mock LLM.
//!
//! Covered: a lead delegating two tasks in one turn to two members whose pods
//! overlap in time on the shared workspace, the consolidated result, three
//! transcripts in the store's claim; a missing Secret (Agent Stalled, no
//! pod); three 500s (session Failed with the provider's message); a delegate
//! to an unknown member (a tool error the model sees); a session timeout.

mod common;
mod mock_llm;

use common::node::TestNode;
use common::{eventually, ControlPlane};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use mock_llm::{Answer, MockLlm, Rule};
use reverie::api::{Agent, AgentSession, AgentTeam, SessionPhase};
use reverie::controller::{agents_controllers, Context, ControllerConfig};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const KEY: &str = "sk-e2e-secret";

/// Starts the agents' controllers for namespace `ns` on this test's runtime.
fn start_controllers(cp: &ControlPlane, ns: &str) {
    let ctx = Arc::new(Context {
        client: cp.client(),
        config: ControllerConfig {
            image: "reverie:test".into(),
            worker_service_account: "reverie-worker".into(),
            namespace: Some(ns.into()),
        },
    });
    tokio::spawn(futures::future::join_all(agents_controllers(ctx)));
}

async fn setup(prefix: &str) -> (&'static ControlPlane, String) {
    let cp = ControlPlane::shared().await;
    TestNode::shared().await;
    cp.install_crds().await;
    let ns = cp.create_namespace(prefix).await;
    start_controllers(cp, &ns);
    (cp, ns)
}

fn secret_yaml() -> String {
    format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: llm\nstringData:\n  api-key: {KEY}\n")
}

fn store_yaml() -> &'static str {
    "apiVersion: reverie.dev/v1alpha1\nkind: MemoryStore\nmetadata:\n  name: team\nspec: {}\n"
}

fn agent_yaml(name: &str, url: &str, role: &str, tools: &str, secret: &str) -> String {
    agent_yaml_with(name, "anthropic", url, role, tools, secret)
}

fn agent_yaml_with(
    name: &str,
    provider: &str,
    url: &str,
    role: &str,
    tools: &str,
    secret: &str,
) -> String {
    format!(
        r#"apiVersion: reverie.dev/v1alpha1
kind: Agent
metadata:
  name: {name}
spec:
  model:
    provider: {provider}
    name: test-model
    baseURL: {url}
    apiKeySecretRef: {{name: {secret}, key: api-key}}
  systemPrompt: "ROLE:{role}"
  tools: {tools}
  memory:
  - storeRef: {{name: team}}
  maxTurns: 8
"#
    )
}

fn team_yaml(members: &[&str], max_parallel: u32) -> String {
    let mut y = format!(
        "apiVersion: reverie.dev/v1alpha1\nkind: AgentTeam\nmetadata:\n  name: devs\nspec:\n  lead: {{agentRef: {{name: lead}}}}\n  maxParallel: {max_parallel}\n  members:\n",
    );
    for m in members {
        y.push_str(&format!(
            "  - {{name: {m}, agentRef: {{name: {m}}}, description: \"deploys services\"}}\n"
        ));
    }
    y
}

fn session_yaml(name: &str, target: &str, prompt: &str, timeout: u32) -> String {
    format!(
        "apiVersion: reverie.dev/v1alpha1\nkind: AgentSession\nmetadata:\n  name: {name}\nspec:\n  {target}\n  prompt: {prompt:?}\n  timeoutSeconds: {timeout}\n"
    )
}

async fn wait_session_done(cp: &ControlPlane, ns: &str, name: &str, secs: u64) -> AgentSession {
    let api: Api<AgentSession> = Api::namespaced(cp.client(), ns);
    eventually(
        &format!("session {ns}/{name} to finish"),
        Duration::from_secs(secs),
        || async {
            let s = api.get(name).await.map_err(|e| e.to_string())?;
            match s.status.as_ref().and_then(|st| st.phase) {
                Some(SessionPhase::Succeeded) | Some(SessionPhase::Failed) => Ok(s),
                _ => Err(format!("status {:?}", s.status)),
            }
        },
    )
    .await
}

/// `(startedAt, finishedAt)` of a pod's finished agent container.
fn run_window(pod: &Pod) -> (k8s_openapi::jiff::Timestamp, k8s_openapi::jiff::Timestamp) {
    let t = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .unwrap_or_else(|| panic!("pod has no terminated state: {:?}", pod.status));
    (
        t.started_at.as_ref().expect("startedAt").0,
        t.finished_at.as_ref().expect("finishedAt").0,
    )
}

const DEPLOY_SH: &str = r#"if [ "$2" != "--migrate" ]; then echo "error: database migration pending; run with --migrate" >&2; exit 1; fi
echo "deployed $1"
"#;

/// The script of one member: a failing deploy, the fix, a note, the answer.
fn member_rules(role: &str, service: &str, done: &str) -> Vec<Rule> {
    let sys = format!("ROLE:{role}");
    vec![
        Rule::new(Answer::Tools(
            Some(format!("Deploying {service}.")),
            vec![("bash".into(), json!({"command": format!("sh deploy.sh {service}")}))],
        ))
        .system(&sys)
        .last(&format!("Deploy {service}"))
        // Both members are mid-session at the same time.
        .delay(Duration::from_secs(3)),
        Rule::new(Answer::Tools(
            None,
            vec![(
                "bash".into(),
                json!({"command": format!("sh deploy.sh {service} --migrate")}),
            )],
        ))
        .system(&sys)
        .last("error: database migration pending"),
        Rule::new(Answer::Tools(
            None,
            vec![(
                "files".into(),
                json!({"command": "write", "path": format!("/workspace/notes/{service}.md"), "content": format!("{service} deployed after --migrate\n")}),
            )],
        ))
        .system(&sys)
        .last(&format!("deployed {service}")),
        Rule::new(Answer::Text(format!(
            "{done}: {service} deployed; it needed --migrate first."
        )))
        .system(&sys)
        .last("Wrote"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn lead_delegates_two_tasks_that_run_in_parallel() {
    let mut rules = vec![
        Rule::new(Answer::Tools(
            Some("Splitting the release.".into()),
            vec![(
                "delegate".into(),
                json!({"tasks": [
                    {"member": "alice", "task": "Deploy service-a"},
                    {"member": "bob", "task": "Deploy service-b"}
                ]}),
            )],
        ))
        .system("ROLE:LEAD")
        .last("Ship release 7"),
        Rule::new(Answer::Text(
            "CONSOLIDATED: service-a and service-b are deployed; both needed --migrate.".into(),
        ))
        .system("ROLE:LEAD")
        .last("ALICE-DONE"),
    ];
    rules.extend(member_rules("ALICE", "service-a", "ALICE-DONE"));
    rules.extend(member_rules("BOB", "service-b", "BOB-DONE"));
    let mock = MockLlm::start(rules);
    let (cp, ns) = setup("agents-team").await;
    let ws = cp.pvc_dir(&ns, "devs-workspace");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("deploy.sh"), DEPLOY_SH).unwrap();
    cp.apply_yaml(&ns, &secret_yaml());
    cp.apply_yaml(&ns, store_yaml());
    cp.apply_yaml(
        &ns,
        &agent_yaml(
            "lead",
            &mock.url,
            "LEAD",
            "[delegate, files, memory]",
            "llm",
        ),
    );
    // One member speaks the Anthropic wire format, the other OpenAI's.
    let openai_url = format!("{}/v1", mock.url);
    for (m, provider, url, role) in [
        ("alice", "anthropic", &mock.url, "ALICE"),
        ("bob", "openai", &openai_url, "BOB"),
    ] {
        cp.apply_yaml(
            &ns,
            &agent_yaml_with(m, provider, url, role, "[bash, files, memory]", "llm"),
        );
    }
    cp.apply_yaml(&ns, &team_yaml(&["alice", "bob"], 2));
    let teams: Api<AgentTeam> = Api::namespaced(cp.client(), &ns);
    eventually("team devs Ready", Duration::from_secs(60), || async {
        let t = teams.get("devs").await.map_err(|e| e.to_string())?;
        let ready = t.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        });
        if ready {
            Ok(())
        } else {
            Err(format!("{:?}", t.status))
        }
    })
    .await;
    cp.apply_yaml(
        &ns,
        &session_yaml("release-7", "teamRef: {name: devs}", "Ship release 7", 300),
    );
    let s = wait_session_done(cp, &ns, "release-7", 180).await;
    let st = s.status.clone().unwrap();
    assert_eq!(st.phase, Some(SessionPhase::Succeeded), "{st:?}");
    assert!(
        st.result
            .as_deref()
            .unwrap_or("")
            .starts_with("CONSOLIDATED"),
        "{st:?}"
    );
    assert!(st.usage.as_ref().is_some_and(|u| u.input_tokens >= 200));
    assert_eq!(
        st.transcript.as_deref(),
        Some("team:sessions/release-7.jsonl")
    );
    let children: Vec<(String, String)> = st
        .children
        .iter()
        .map(|c| (c.name.clone(), c.member.clone()))
        .collect();
    assert_eq!(
        children,
        vec![
            ("release-7-alice-1".to_string(), "alice".to_string()),
            ("release-7-bob-2".to_string(), "bob".to_string())
        ]
    );
    // The parent's status catches up with the children's last phase.
    let sessions: Api<AgentSession> = Api::namespaced(cp.client(), &ns);
    eventually(
        "children Succeeded in the parent's status",
        Duration::from_secs(30),
        || async {
            let s = sessions.get("release-7").await.map_err(|e| e.to_string())?;
            let kids = s.status.map(|s| s.children).unwrap_or_default();
            if kids
                .iter()
                .all(|c| c.phase == Some(SessionPhase::Succeeded))
            {
                Ok(())
            } else {
                Err(format!("{kids:?}"))
            }
        },
    )
    .await;

    // Quiet when idle: nothing is rewritten once the work is done.
    let teams_rv = teams.get("devs").await.unwrap().metadata.resource_version;
    let session_rv = sessions
        .get("release-7")
        .await
        .unwrap()
        .metadata
        .resource_version;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        teams.get("devs").await.unwrap().metadata.resource_version,
        teams_rv
    );
    assert_eq!(
        sessions
            .get("release-7")
            .await
            .unwrap()
            .metadata
            .resource_version,
        session_rv
    );
    // Phase changes are recorded as Events.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(cp.client(), &ns);
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("release-7"))
        .filter_map(|e| e.reason)
        .collect();
    assert!(reasons.iter().any(|r| r == "Succeeded"), "{reasons:?}");

    // The two member pods ran at the same time.
    let pods: Api<Pod> = Api::namespaced(cp.client(), &ns);
    let kids = pods
        .list(&ListParams::default().labels("reverie.dev/parent=release-7"))
        .await
        .unwrap();
    assert_eq!(kids.items.len(), 2, "one pod per child");
    let (a0, a1) = run_window(&kids.items[0]);
    let (b0, b1) = run_window(&kids.items[1]);
    eprintln!("member pods ran {a0}..{a1} and {b0}..{b1}");
    assert!(
        a0 < b1 && b0 < a1,
        "member pods did not overlap: {a0}..{a1} and {b0}..{b1}"
    );

    // Each member wrote its files on the shared workspace.
    for (child, done, service) in [
        ("release-7-alice-1", "ALICE-DONE", "service-a"),
        ("release-7-bob-2", "BOB-DONE", "service-b"),
    ] {
        let result = std::fs::read_to_string(ws.join(format!("results/{child}.md"))).unwrap();
        assert!(result.starts_with(done), "{result}");
        assert!(ws.join(format!("notes/{service}.md")).exists());
    }
    // The lead saw both results in one tool result.
    let reqs = mock.requests();
    let consolidating = reqs
        .iter()
        .find(|r| r.system.contains("ROLE:LEAD") && r.last.contains("ALICE-DONE"))
        .expect("the lead got the delegation result");
    assert!(consolidating.last.contains("BOB-DONE"));
    for r in &reqs {
        if r.system.contains("ROLE:BOB") {
            assert_eq!(r.path, "/chat/completions");
            assert_eq!(r.authorization.as_deref(), Some(&*format!("Bearer {KEY}")));
        } else {
            assert_eq!(r.path, "/v1/messages");
            assert_eq!(r.api_key.as_deref(), Some(KEY));
        }
    }

    // Three transcripts, each closed by an outcome line.
    let store = cp.pvc_dir(&ns, "team-memory");
    for name in ["release-7", "release-7-alice-1", "release-7-bob-2"] {
        let text = std::fs::read_to_string(store.join(format!("sessions/{name}.jsonl")))
            .unwrap_or_else(|e| panic!("transcript {name}: {e}"));
        let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last["type"], "outcome", "{name}");
        assert_eq!(last["status"], "succeeded", "{name}");
        assert!(!text.contains(KEY), "the API key leaked into {name}");
    }
    let member = std::fs::read_to_string(store.join("sessions/release-7-alice-1.jsonl")).unwrap();
    assert!(member.contains("error: database migration pending"));

    // The API key is only in a secretKeyRef.
    let jobs: Api<Job> = Api::namespaced(cp.client(), &ns);
    let job = jobs.get("release-7-run").await.unwrap();
    assert!(!serde_json::to_string(&job).unwrap().contains(KEY));

    // Dreaming over the store finds the error both members hit and its fix.
    let patch = dream_over(&store);
    let ops = patch["spec"]["ops"].as_sequence().expect("ops");
    let lesson = ops
        .iter()
        .find(|op| op["reason"].as_str() == Some("recurring-error"))
        .unwrap_or_else(|| panic!("no lesson in {patch:?}"));
    assert_eq!(lesson["op"].as_str(), Some("add"));
    assert_eq!(lesson["path"].as_str(), Some("lessons.md"));
    let content = lesson["content"].as_str().unwrap_or("");
    assert!(
        content.contains("database migration pending") && content.contains("--migrate"),
        "{content}"
    );
    let mut sessions: Vec<&str> = lesson["evidence"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|e| e["session"].as_str())
        .collect();
    sessions.sort();
    sessions.dedup();
    assert_eq!(sessions, vec!["release-7-alice-1", "release-7-bob-2"]);
}

/// Runs `reverie dream` over the store directory; returns the patch.
fn dream_over(store: &std::path::Path) -> serde_yaml::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_reverie"))
        .args(["dream", "--store"])
        .arg(store)
        .output()
        .expect("run reverie dream");
    assert!(
        out.status.success(),
        "reverie dream failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml::from_slice(&out.stdout).expect("the dream prints a MemoryPatch")
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_secret_stalls_the_agent_and_starts_no_pod() {
    let mock = MockLlm::start(vec![Rule::new(Answer::Text("never".into()))]);
    let (cp, ns) = setup("agents-nosecret").await;
    cp.apply_yaml(&ns, store_yaml());
    cp.apply_yaml(
        &ns,
        &agent_yaml("solo", &mock.url, "SOLO", "[memory]", "llm-credentials"),
    );
    let agents: Api<Agent> = Api::namespaced(cp.client(), &ns);
    let stalled = eventually("agent Stalled", Duration::from_secs(60), || async {
        let a = agents.get("solo").await.map_err(|e| e.to_string())?;
        let conds = a.status.map(|s| s.conditions).unwrap_or_default();
        conds
            .into_iter()
            .find(|c| c.type_ == "Stalled" && c.status == "True")
            .ok_or_else(|| "not Stalled yet".to_string())
    })
    .await;
    assert_eq!(stalled.reason, "SecretNotFound");
    assert_eq!(
        stalled.message,
        "Secret llm-credentials (key api-key) not found"
    );
    cp.apply_yaml(
        &ns,
        &session_yaml("s1", "agentRef: {name: solo}", "hello", 60),
    );
    let sessions: Api<AgentSession> = Api::namespaced(cp.client(), &ns);
    eventually("session Stalled", Duration::from_secs(60), || async {
        let s = sessions.get("s1").await.map_err(|e| e.to_string())?;
        let st = s.status.unwrap_or_default();
        let stalled = st
            .conditions
            .iter()
            .any(|c| c.type_ == "Stalled" && c.status == "True" && c.reason == "SecretNotFound");
        if stalled && st.phase == Some(SessionPhase::Pending) {
            Ok(())
        } else {
            Err(format!("{st:?}"))
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let jobs: Api<Job> = Api::namespaced(cp.client(), &ns);
    let pods: Api<Pod> = Api::namespaced(cp.client(), &ns);
    assert!(jobs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    assert!(pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    assert!(mock.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn three_server_errors_fail_the_session_with_the_providers_message() {
    let mock = MockLlm::start(vec![Rule::new(Answer::Error(
        500,
        "the model backend exploded".into(),
    ))]);
    let (cp, ns) = setup("agents-500").await;
    cp.apply_yaml(&ns, &secret_yaml());
    cp.apply_yaml(&ns, store_yaml());
    cp.apply_yaml(
        &ns,
        &agent_yaml("solo", &mock.url, "SOLO", "[memory]", "llm"),
    );
    cp.apply_yaml(
        &ns,
        &session_yaml("s1", "agentRef: {name: solo}", "hello", 120),
    );
    let s = wait_session_done(cp, &ns, "s1", 120).await;
    let st = s.status.unwrap();
    assert_eq!(st.phase, Some(SessionPhase::Failed));
    let msg = st.message.unwrap_or_default();
    assert!(
        msg.contains("the model backend exploded") && msg.contains("3 tries"),
        "{msg}"
    );
    assert_eq!(mock.requests().len(), 3);
    let transcript =
        std::fs::read_to_string(cp.pvc_dir(&ns, "team-memory").join("sessions/s1.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(transcript.lines().last().unwrap()).unwrap();
    assert_eq!(last["status"], "failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn delegating_to_an_unknown_member_is_a_tool_error() {
    let mock = MockLlm::start(vec![
        Rule::new(Answer::Tools(
            None,
            vec![(
                "delegate".into(),
                json!({"tasks": [{"member": "carol", "task": "Deploy service-c"}]}),
            )],
        ))
        .system("ROLE:LEAD")
        .last("Ship release 8"),
        Rule::new(Answer::Text("NO-CAROL: there is no such member.".into()))
            .system("ROLE:LEAD")
            .last("unknown team member \"carol\""),
    ]);
    let (cp, ns) = setup("agents-unknown").await;
    cp.apply_yaml(&ns, &secret_yaml());
    cp.apply_yaml(&ns, store_yaml());
    cp.apply_yaml(
        &ns,
        &agent_yaml("lead", &mock.url, "LEAD", "[delegate]", "llm"),
    );
    cp.apply_yaml(
        &ns,
        &agent_yaml("alice", &mock.url, "ALICE", "[files]", "llm"),
    );
    cp.apply_yaml(&ns, &team_yaml(&["alice"], 2));
    cp.apply_yaml(
        &ns,
        &session_yaml("r8", "teamRef: {name: devs}", "Ship release 8", 120),
    );
    let s = wait_session_done(cp, &ns, "r8", 120).await;
    let st = s.status.unwrap();
    assert_eq!(st.phase, Some(SessionPhase::Succeeded), "{st:?}");
    assert!(st.result.unwrap_or_default().starts_with("NO-CAROL"));
    assert!(st.children.is_empty());
    let reqs = mock.requests();
    let body = &reqs[1].body["messages"];
    let result = &body.as_array().unwrap().last().unwrap()["content"][0];
    assert_eq!(result["is_error"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_past_its_timeout_fails_with_the_reason() {
    let mock = MockLlm::start(vec![
        Rule::new(Answer::Text("too late".into())).delay(Duration::from_secs(60))
    ]);
    let (cp, ns) = setup("agents-timeout").await;
    cp.apply_yaml(&ns, &secret_yaml());
    cp.apply_yaml(&ns, store_yaml());
    cp.apply_yaml(
        &ns,
        &agent_yaml("solo", &mock.url, "SOLO", "[memory]", "llm"),
    );
    cp.apply_yaml(
        &ns,
        &session_yaml("slow", "agentRef: {name: solo}", "hello", 4),
    );
    let s = wait_session_done(cp, &ns, "slow", 90).await;
    let st = s.status.unwrap();
    assert_eq!(st.phase, Some(SessionPhase::Failed));
    let msg = st.message.unwrap_or_default();
    assert!(msg.contains("DeadlineExceeded"), "{msg}");
}

#[tokio::test(flavor = "multi_thread")]
async fn max_parallel_one_runs_the_children_one_after_the_other() {
    let mut rules = vec![
        Rule::new(Answer::Tools(
            None,
            vec![(
                "delegate".into(),
                json!({"tasks": [
                    {"member": "alice", "task": "Deploy service-a"},
                    {"member": "bob", "task": "Deploy service-b"}
                ]}),
            )],
        ))
        .system("ROLE:LEAD")
        .last("Ship release 9"),
        Rule::new(Answer::Text("SERIAL-DONE".into()))
            .system("ROLE:LEAD")
            .last("BOB-DONE"),
    ];
    rules.extend(member_rules("ALICE", "service-a", "ALICE-DONE"));
    rules.extend(member_rules("BOB", "service-b", "BOB-DONE"));
    let mock = MockLlm::start(rules);
    let (cp, ns) = setup("agents-serial").await;
    let ws = cp.pvc_dir(&ns, "devs-workspace");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("deploy.sh"), DEPLOY_SH).unwrap();
    cp.apply_yaml(&ns, &secret_yaml());
    cp.apply_yaml(&ns, store_yaml());
    cp.apply_yaml(
        &ns,
        &agent_yaml("lead", &mock.url, "LEAD", "[delegate]", "llm"),
    );
    for (m, role) in [("alice", "ALICE"), ("bob", "BOB")] {
        cp.apply_yaml(&ns, &agent_yaml(m, &mock.url, role, "[bash, files]", "llm"));
    }
    cp.apply_yaml(&ns, &team_yaml(&["alice", "bob"], 1));
    cp.apply_yaml(
        &ns,
        &session_yaml("r9", "teamRef: {name: devs}", "Ship release 9", 300),
    );
    let s = wait_session_done(cp, &ns, "r9", 180).await;
    let st = s.status.unwrap();
    assert_eq!(st.phase, Some(SessionPhase::Succeeded), "{st:?}");
    assert_eq!(st.result.as_deref(), Some("SERIAL-DONE"));
    let pods: Api<Pod> = Api::namespaced(cp.client(), &ns);
    let kids = pods
        .list(&ListParams::default().labels("reverie.dev/parent=r9"))
        .await
        .unwrap();
    assert_eq!(kids.items.len(), 2);
    let (a0, a1) = run_window(&kids.items[0]);
    let (b0, b1) = run_window(&kids.items[1]);
    eprintln!("maxParallel 1: member pods ran {a0}..{a1} and {b0}..{b1}");
    assert!(
        a1 <= b0 || b1 <= a0,
        "member pods overlapped with maxParallel 1"
    );
}
