//! The LLM pass against a local mock server that speaks both wire formats
//! (Anthropic Messages, OpenAI chat completions): validation of the model's
//! ops, retries, errors, and that the API key goes only into its header.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use reverie::api::{OpKind, PatchOp, Reason};
use reverie::dream::llm::{refine, LlmArgs, LlmProvider};
use reverie::dream::{Corpus, DreamOptions, Event, LineRef, MemoryEntry, Outcome, Session};
use reverie::memory::{entry_id, parse};
use std::sync::{Arc, Mutex};

/// One scripted reply: status, `retry-after`, body.
#[derive(Clone)]
struct Reply {
    status: u16,
    retry_after: Option<&'static str>,
    body: serde_json::Value,
}

#[derive(Default)]
struct Mock {
    /// Replies in order; the last one repeats.
    script: Vec<Reply>,
    /// Every request seen: (path, headers, body).
    seen: Vec<(String, HeaderMap, serde_json::Value)>,
}

type Shared = Arc<Mutex<Mock>>;

async fn handle(
    path: &'static str,
    state: Shared,
    headers: HeaderMap,
    body: serde_json::Value,
) -> Response {
    let reply = {
        let mut m = state.lock().expect("mock state");
        m.seen.push((path.to_string(), headers, body));
        let n = m.seen.len();
        let idx = (n - 1).min(m.script.len() - 1);
        m.script[idx].clone()
    };
    let mut resp = (
        StatusCode::from_u16(reply.status).expect("status"),
        Json(reply.body),
    )
        .into_response();
    if let Some(ra) = reply.retry_after {
        resp.headers_mut()
            .insert("retry-after", ra.parse().expect("header"));
    }
    resp
}

/// Starts the mock on 127.0.0.1:0; returns its base URL and state.
async fn start(script: Vec<Reply>) -> (String, Shared) {
    let state: Shared = Arc::new(Mutex::new(Mock {
        script,
        seen: Vec::new(),
    }));
    let app = Router::new()
        .route(
            "/v1/messages",
            post(
                |State(s): State<Shared>, h: HeaderMap, Json(b): Json<serde_json::Value>| {
                    handle("/v1/messages", s, h, b)
                },
            ),
        )
        .route(
            "/chat/completions",
            post(
                |State(s): State<Shared>, h: HeaderMap, Json(b): Json<serde_json::Value>| {
                    handle("/chat/completions", s, h, b)
                },
            ),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), state)
}

const MEMORY: &str = "# Infra\n\n- The API listens on port 8080.\n- Use UTC in every log line.\n";

fn corpus() -> Corpus {
    let memories = parse(MEMORY)
        .entries()
        .map(|e| MemoryEntry {
            path: "infra.md".into(),
            entry: e.clone(),
        })
        .collect();
    let at = |line| LineRef {
        session: "s-017".into(),
        line,
    };
    Corpus {
        memories,
        sessions: vec![Session {
            id: "s-017".into(),
            agent: "coder".into(),
            started: None,
            ended: None,
            events: vec![
                Event::UserText {
                    text: "The API moved to port 9090 with the new ingress.".into(),
                    at: at(1),
                },
                Event::AssistantText {
                    text: "Noted, I will use 9090.".into(),
                    at: at(2),
                },
            ],
            outcome: Outcome::Succeeded,
            outcome_summary: None,
            outcome_at: None,
        }],
    }
}

/// The model's answer: a good op, one without evidence, one naming a missing id.
fn model_ops() -> String {
    let id = entry_id("The API listens on port 8080.");
    serde_json::json!({"ops": [
        {"op": "update", "path": "infra.md", "id": id, "content": "The API listens on port 9090.",
         "reason": "contradiction", "evidence": [{"session": "s-017", "line": 1, "quote": "moved to port 9090"}]},
        {"op": "delete", "path": "infra.md", "id": entry_id("Use UTC in every log line."), "reason": "stale"},
        {"op": "delete", "path": "infra.md", "id": "deadbeef0000", "reason": "stale",
         "evidence": [{"session": "s-017", "line": 2}]}
    ]})
    .to_string()
}

fn anthropic_ok(text: String) -> Reply {
    Reply {
        status: 200,
        retry_after: None,
        body: serde_json::json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 321, "output_tokens": 54}
        }),
    }
}

fn openai_ok(text: String) -> Reply {
    Reply {
        status: 200,
        retry_after: None,
        body: serde_json::json!({
            "id": "chatcmpl-1", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 111, "completion_tokens": 22, "total_tokens": 133}
        }),
    }
}

fn args(provider: LlmProvider, base: &str, key_env: &str, key: &str) -> LlmArgs {
    std::env::set_var(key_env, key);
    LlmArgs {
        llm_provider: Some(provider),
        llm_model: Some("test-model".into()),
        llm_base_url: Some(base.to_string()),
        llm_api_key_env: Some(key_env.to_string()),
        llm_max_tokens: Some(1000),
        llm_timeout: Some(10),
    }
}

fn deterministic_ops() -> Vec<PatchOp> {
    vec![PatchOp {
        op: OpKind::Delete,
        path: "infra.md".into(),
        section: None,
        id: Some(entry_id("The API listens on port 8080.")),
        ids: None,
        content: None,
        to: None,
        before: Some("The API listens on port 8080.".into()),
        reason: Reason::Contradiction,
        superseded_by: None,
        evidence: vec![],
    }]
}

fn check_kept(ops: &[PatchOp], report: &reverie::dream::llm::LlmReport) {
    assert_eq!(report.proposed, 3);
    assert_eq!(report.kept, 1);
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].op, OpKind::Update);
    assert_eq!(
        ops[0].before.as_deref(),
        Some("The API listens on port 8080.")
    );
    assert_eq!(report.dropped.len(), 2, "{:?}", report.dropped);
    assert!(
        report.dropped[0].1.contains("no evidence"),
        "{:?}",
        report.dropped
    );
    assert!(
        report.dropped[1].1.contains("deadbeef0000"),
        "{:?}",
        report.dropped
    );
}

#[tokio::test]
async fn anthropic_ops_are_validated_and_key_only_in_header() {
    let (base, state) = start(vec![anthropic_ok(model_ops())]).await;
    let key = "sk-ant-test-secret-4242";
    let a = args(
        LlmProvider::Anthropic,
        &base,
        "REVERIE_TEST_KEY_ANTHROPIC",
        key,
    );
    let (ops, report) = refine(&corpus(), deterministic_ops(), &DreamOptions::default(), &a)
        .await
        .expect("refine");
    check_kept(&ops, &report);
    assert_eq!((report.input_tokens, report.output_tokens), (321, 54));
    let m = state.lock().expect("state");
    assert_eq!(m.seen.len(), 1);
    let (path, headers, body) = &m.seen[0];
    assert_eq!(path, "/v1/messages");
    assert_eq!(
        headers.get("x-api-key").and_then(|v| v.to_str().ok()),
        Some(key)
    );
    assert_eq!(
        headers
            .get("anthropic-version")
            .and_then(|v| v.to_str().ok()),
        Some("2023-06-01")
    );
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["max_tokens"], 1000);
    let prompt = body["messages"][0]["content"].as_str().unwrap_or("");
    assert!(prompt.contains(&format!(
        "infra.md#{}",
        entry_id("The API listens on port 8080.")
    )));
    assert!(prompt.contains("s-017:1"));
    assert!(body["system"].as_str().unwrap_or("").contains("\"ops\""));
    assert!(
        !body.to_string().contains(key),
        "the key leaked into the request body"
    );
    for text in [format!("{report:?}"), format!("{ops:?}"), format!("{a:?}")] {
        assert!(!text.contains(key), "the key leaked: {text}");
    }
}

#[tokio::test]
async fn openai_ops_are_validated_and_bearer_sent() {
    let fenced = format!("Here is the patch:\n```json\n{}\n```", model_ops());
    let (base, state) = start(vec![openai_ok(fenced)]).await;
    let key = "sk-openai-test-secret-777";
    let a = args(LlmProvider::Openai, &base, "REVERIE_TEST_KEY_OPENAI", key);
    let (ops, report) = refine(&corpus(), deterministic_ops(), &DreamOptions::default(), &a)
        .await
        .expect("refine");
    check_kept(&ops, &report);
    assert_eq!((report.input_tokens, report.output_tokens), (111, 22));
    let m = state.lock().expect("state");
    let (path, headers, body) = &m.seen[0];
    assert_eq!(path, "/chat/completions");
    assert_eq!(
        headers.get("authorization").and_then(|v| v.to_str().ok()),
        Some(format!("Bearer {key}").as_str())
    );
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(body["messages"][1]["role"], "user");
    assert!(!format!("{report:?}").contains(key));
}

#[tokio::test]
async fn rate_limit_is_retried_after_retry_after() {
    let limited = Reply {
        status: 429,
        retry_after: Some("0"),
        body: serde_json::json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}),
    };
    let (base, state) = start(vec![limited, anthropic_ok(model_ops())]).await;
    let a = args(
        LlmProvider::Anthropic,
        &base,
        "REVERIE_TEST_KEY_429",
        "k-429",
    );
    let started = std::time::Instant::now();
    let (ops, _) = refine(&corpus(), vec![], &DreamOptions::default(), &a)
        .await
        .expect("refine after a 429");
    assert_eq!(ops.len(), 1);
    assert_eq!(state.lock().expect("state").seen.len(), 2);
    // retry-after: 0 means no backoff of our own.
    assert!(started.elapsed() < std::time::Duration::from_millis(400));
}

#[tokio::test]
async fn server_errors_give_up_after_three_tries_with_the_providers_message() {
    let failing = Reply {
        status: 500,
        retry_after: Some("0"),
        body: serde_json::json!({"error": {"message": "the upstream database is on fire", "type": "server_error"}}),
    };
    let (base, state) = start(vec![failing]).await;
    let key = "sk-never-print-me";
    let a = args(LlmProvider::Openai, &base, "REVERIE_TEST_KEY_500", key);
    let err = refine(&corpus(), vec![], &DreamOptions::default(), &a)
        .await
        .expect_err("three 500s must fail");
    let msg = err.to_string();
    assert!(msg.contains("the upstream database is on fire"), "{msg}");
    assert!(msg.contains("HTTP 500"), "{msg}");
    assert!(msg.contains("3 tries"), "{msg}");
    assert!(!msg.contains(key) && !format!("{err:?}").contains(key));
    assert_eq!(state.lock().expect("state").seen.len(), 3);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let bad = Reply {
        status: 401,
        retry_after: None,
        body: serde_json::json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}),
    };
    let (base, state) = start(vec![bad]).await;
    let a = args(
        LlmProvider::Anthropic,
        &base,
        "REVERIE_TEST_KEY_401",
        "wrong",
    );
    let err = refine(&corpus(), vec![], &DreamOptions::default(), &a)
        .await
        .expect_err("401 fails");
    assert!(
        err.to_string().contains("HTTP 401: invalid x-api-key"),
        "{err}"
    );
    assert_eq!(state.lock().expect("state").seen.len(), 1);
}

#[tokio::test]
async fn missing_key_and_non_json_reply_are_clear_errors() {
    let a = LlmArgs {
        llm_provider: Some(LlmProvider::Anthropic),
        llm_model: Some("m".into()),
        llm_api_key_env: Some("REVERIE_TEST_KEY_UNSET_XYZ".into()),
        ..LlmArgs::default()
    };
    let err = refine(&corpus(), vec![], &DreamOptions::default(), &a)
        .await
        .expect_err("no key");
    assert!(
        err.to_string().contains("REVERIE_TEST_KEY_UNSET_XYZ"),
        "{err}"
    );

    let (base, _state) = start(vec![anthropic_ok("I think the memory looks fine.".into())]).await;
    let a = args(LlmProvider::Anthropic, &base, "REVERIE_TEST_KEY_PROSE", "k");
    let err = refine(&corpus(), vec![], &DreamOptions::default(), &a)
        .await
        .expect_err("prose is not ops");
    assert!(err.to_string().contains("JSON"), "{err}");
}

#[tokio::test]
async fn overloaded_without_retry_after_backs_off_then_succeeds() {
    let overloaded = Reply {
        status: 529,
        retry_after: None,
        body: serde_json::json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
    };
    let (base, state) = start(vec![overloaded, anthropic_ok(model_ops())]).await;
    let a = args(
        LlmProvider::Anthropic,
        &base,
        "REVERIE_TEST_KEY_529",
        "k-529",
    );
    let started = std::time::Instant::now();
    let (ops, report) = refine(&corpus(), vec![], &DreamOptions::default(), &a)
        .await
        .expect("refine after a 529");
    assert_eq!((ops.len(), report.kept), (1, 1));
    assert_eq!(state.lock().expect("state").seen.len(), 2);
    // Our own backoff applies when the server gives no retry-after.
    assert!(started.elapsed() >= std::time::Duration::from_millis(400));
}

/// Runs `reverie dream` on a copy of `examples/store` with the LLM pass
/// pointed at `base`; returns (exit ok, stdout, stderr).
fn dream_with_llm(base: &str, key: Option<&str>) -> (bool, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/store");
    for sub in ["memories", "sessions"] {
        std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        for e in std::fs::read_dir(src.join(sub)).expect("read examples") {
            let e = e.expect("entry");
            std::fs::copy(e.path(), dir.path().join(sub).join(e.file_name())).expect("copy");
        }
    }
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_reverie"));
    cmd.args(["dream", "--store"])
        .arg(dir.path())
        .args([
            "--llm-provider",
            "anthropic",
            "--llm-model",
            "m",
            "--llm-base-url",
            base,
        ])
        .args(["--llm-api-key-env", "REVERIE_TEST_LLM_KEY"])
        .env("REVERIE_NOW", "2026-11-30T12:00:00Z")
        .env_remove("REVERIE_TEST_LLM_KEY");
    if let Some(k) = key {
        cmd.env("REVERIE_TEST_LLM_KEY", k);
    }
    let out = cmd.output().expect("run reverie dream");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dream_command_uses_the_models_ops_and_falls_back_when_it_fails() {
    // The model keeps one add with evidence and invents one without: the
    // patch holds exactly the first.
    let ops = serde_json::json!({"ops": [
        {"op": "add", "path": "lessons.md", "section": "Deploys",
         "content": "Check the readiness probe path before blaming the rollout.",
         "reason": "recurring-error", "evidence": [{"session": "s-017", "line": 1}]},
        {"op": "add", "path": "lessons.md", "content": "Invented without evidence.", "reason": "instruction"}
    ]});
    let (base, state) = start(vec![anthropic_ok(ops.to_string())]).await;
    let (ok, stdout, stderr) =
        tokio::task::spawn_blocking(move || dream_with_llm(&base, Some("sk-test-cli-key")))
            .await
            .expect("join");
    assert!(ok, "dream failed: {stderr}");
    assert!(
        stdout.contains("Check the readiness probe path"),
        "{stdout}"
    );
    assert!(!stdout.contains("Invented without evidence"), "{stdout}");
    assert!(
        stderr.contains("LLM pass: 2 ops proposed, 1 kept"),
        "{stderr}"
    );
    assert!(!stderr.contains("sk-test-cli-key") && !stdout.contains("sk-test-cli-key"));
    assert_eq!(state.lock().expect("state").seen.len(), 1);

    // No key: a warning, and the deterministic ops stand (exit 0).
    let (base, _state) = start(vec![anthropic_ok(ops.to_string())]).await;
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || dream_with_llm(&base, None))
        .await
        .expect("join");
    assert!(ok, "dream failed without a key: {stderr}");
    assert!(stderr.contains("keeping the deterministic ops"), "{stderr}");
    assert!(stdout.contains("reason: shared-preference"), "{stdout}");
    assert!(!stdout.contains("Check the readiness probe path"));
}
