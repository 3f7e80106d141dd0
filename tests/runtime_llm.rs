//! The runtime's agent loop against the scripted LLM server, in both wire
//! formats: tool use, two calls in one turn, retries on 429 (honouring
//! `retry-after`) and 500, and the API key sent only in its header.

mod mock_llm;

use mock_llm::{Answer, MockLlm, Rule};
use reverie::api::Provider;
use reverie::runtime::provider::Llm;
use reverie::runtime::tools::{MemoryTool, StoreMount};
use reverie::runtime::transcript::Transcript;
use reverie::runtime::{AgentLoop, Toolbox};
use serde_json::json;
use std::time::{Duration, Instant};

fn toolbox(dir: &std::path::Path) -> Toolbox {
    std::fs::create_dir_all(dir.join("memories")).unwrap();
    Toolbox {
        memory: Some(MemoryTool {
            stores: vec![StoreMount {
                name: "team".into(),
                root: dir.to_path_buf(),
                read_only: false,
            }],
        }),
        ..Default::default()
    }
}

async fn run_loop(
    provider: Provider,
    mock: &MockLlm,
    dir: &std::path::Path,
) -> reverie::runtime::LoopResult {
    let base = match provider {
        Provider::Anthropic => mock.url.clone(),
        Provider::Openai => format!("{}/v1", mock.url),
    };
    let llm = Llm::new(
        provider,
        Some(&base),
        "test-model",
        512,
        "sk-test-123".into(),
    )
    .unwrap();
    let tools = toolbox(dir);
    let mut t = Transcript::open(&dir.join("sessions/s-1.jsonl"), "s-1", "coder").unwrap();
    let now = || "2026-11-20T10:00:00Z".to_string();
    AgentLoop {
        system: "You are CODER".into(),
        max_turns: 6,
        model: &llm,
        tools: &tools,
        transcript: Some(&mut t),
        now: &now,
    }
    .run("Remember that deploys need --wait")
    .await
}

fn script() -> Vec<Rule> {
    vec![
        Rule::new(Answer::RateLimit(1)).times(1),
        Rule::new(Answer::Tools(
            Some("Saving two notes.".into()),
            vec![
                (
                    "memory".into(),
                    json!({"command": "create", "path": "/memories/team/deploys.md", "file_text": "- Deploys need --wait.\n"}),
                ),
                (
                    "memory".into(),
                    json!({"command": "create", "path": "/memories/../escape.md", "file_text": "x"}),
                ),
            ],
        ))
        .system("CODER")
        .last("Remember that"),
        Rule::new(Answer::Text("Saved.".into()))
            .system("CODER")
            .last("File created successfully"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_loop_with_tools_and_a_rate_limit() {
    let mock = MockLlm::start(script());
    let d = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let r = run_loop(Provider::Anthropic, &mock, d.path()).await;
    assert!(r.succeeded, "{r:?}");
    assert_eq!(r.result, "Saved.");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retry-after was not honoured"
    );
    let reqs = mock.requests();
    assert_eq!(reqs.len(), 3, "one rate-limited try, two turns");
    assert!(reqs
        .iter()
        .all(|q| q.api_key.as_deref() == Some("sk-test-123") && q.path == "/v1/messages"));
    assert!(!reqs[0].body.to_string().contains("sk-test-123"));
    assert_eq!(
        std::fs::read_to_string(d.path().join("memories/deploys.md")).unwrap(),
        "- Deploys need --wait.\n"
    );
    assert!(!d.path().join("escape.md").exists());
    // The escape attempt came back to the model as an error in the same turn.
    let last = &reqs[2].body["messages"].as_array().unwrap().last().unwrap()["content"];
    assert_eq!(last[0]["is_error"], false);
    assert_eq!(last[1]["is_error"], true);
    let transcript = std::fs::read_to_string(d.path().join("sessions/s-1.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = transcript
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[4]["type"], "outcome");
    assert_eq!(lines[4]["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_loop_with_tools() {
    let mock = MockLlm::start(script());
    let d = tempfile::tempdir().unwrap();
    let r = run_loop(Provider::Openai, &mock, d.path()).await;
    assert!(r.succeeded, "{r:?}");
    assert_eq!(r.usage.input_tokens, 200);
    let reqs = mock.requests();
    assert!(reqs
        .iter()
        .all(|q| q.authorization.as_deref() == Some("Bearer sk-test-123")));
    let msgs = reqs[2].body["messages"].as_array().unwrap();
    let tool_msgs: Vec<&serde_json::Value> = msgs.iter().filter(|m| m["role"] == "tool").collect();
    assert_eq!(tool_msgs.len(), 2);
    assert!(d.path().join("memories/deploys.md").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn three_server_errors_fail_with_the_providers_message() {
    let mock = MockLlm::start(vec![Rule::new(Answer::Error(
        500,
        "upstream model crashed".into(),
    ))]);
    let d = tempfile::tempdir().unwrap();
    let r = run_loop(Provider::Anthropic, &mock, d.path()).await;
    assert!(!r.succeeded);
    let msg = r.message.unwrap();
    assert!(
        msg.contains("upstream model crashed") && msg.contains("3 tries"),
        "{msg}"
    );
    assert_eq!(mock.requests().len(), 3);
    assert!(!msg.contains("sk-test-123"));
}
