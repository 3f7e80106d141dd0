//! A scripted LLM server for tests (axum on 127.0.0.1:0), speaking both the
//! Anthropic Messages API (`POST /v1/messages`) and OpenAI-compatible chat
//! completions (`POST /chat/completions`, `/v1/chat/completions`).
//!
//! Replies are chosen by [`Rule`]s keyed on what the conversation contains:
//! the system prompt and the *last* user turn's text (user text or tool
//! results). The first rule that matches and has uses left answers. A rule
//! can answer text, tool calls (several in one turn), an HTTP error, or a
//! rate limit with `retry-after`, optionally after a delay. Every request is
//! recorded (path, the API key headers, body, time) for assertions.
//!
//! The server runs on its own thread and runtime, so it outlives the
//! `#[tokio::test]` runtime that started it.

#![allow(dead_code)]

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// What a rule answers.
#[derive(Clone, Debug)]
pub enum Answer {
    /// Final text (`end_turn` / `stop`).
    Text(String),
    /// Tool calls `(name, input)` in one turn, with optional text before them.
    Tools(Option<String>, Vec<(String, Value)>),
    /// An HTTP error with a provider-shaped body.
    Error(u16, String),
    /// 429 with `retry-after: <secs>`.
    RateLimit(u64),
}

/// One scripted reply.
#[derive(Clone, Debug)]
pub struct Rule {
    /// The system prompt must contain this.
    pub system: Option<String>,
    /// The last user turn (text or tool results) must contain this.
    pub last: Option<String>,
    pub answer: Answer,
    /// How often the rule may answer; `None` = always.
    pub times: Option<usize>,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Rule {
    pub fn new(answer: Answer) -> Rule {
        Rule {
            system: None,
            last: None,
            answer,
            times: None,
            delay: Duration::ZERO,
        }
    }
    pub fn system(mut self, s: &str) -> Rule {
        self.system = Some(s.into());
        self
    }
    pub fn last(mut self, s: &str) -> Rule {
        self.last = Some(s.into());
        self
    }
    pub fn times(mut self, n: usize) -> Rule {
        self.times = Some(n);
        self
    }
    pub fn delay(mut self, d: Duration) -> Rule {
        self.delay = d;
        self
    }
}

/// A request the server received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    pub api_key: Option<String>,
    pub authorization: Option<String>,
    pub body: Value,
    pub system: String,
    pub last: String,
    pub at: SystemTime,
}

#[derive(Default)]
struct Inner {
    rules: Vec<Rule>,
    used: Vec<usize>,
    requests: Vec<Recorded>,
}

type Shared = Arc<Mutex<Inner>>;

/// The running server.
pub struct MockLlm {
    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub url: String,
    state: Shared,
}

impl MockLlm {
    /// Starts a server with `rules`.
    pub fn start(rules: Vec<Rule>) -> MockLlm {
        let state: Shared = Arc::new(Mutex::new(Inner {
            used: vec![0; rules.len()],
            rules,
            requests: Vec::new(),
        }));
        let (tx, rx) = std::sync::mpsc::channel();
        let st = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("mock LLM runtime");
            rt.block_on(async move {
                let app = Router::new()
                    .route("/v1/messages", post(anthropic))
                    .route("/chat/completions", post(openai))
                    .route("/v1/chat/completions", post(openai))
                    .with_state(st);
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind the mock LLM");
                let addr = listener.local_addr().expect("mock LLM address");
                tx.send(format!("http://{addr}"))
                    .expect("report the address");
                axum::serve(listener, app).await.expect("mock LLM serves");
            });
        });
        let url = rx.recv().expect("mock LLM started");
        MockLlm { url, state }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().expect("mock state").requests.clone()
    }
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Inner> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Text of a content value: a string, or blocks (text and tool results).
fn content_text(c: &Value) -> String {
    match c {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .map(|b| match b.get("type").and_then(|t| t.as_str()) {
                Some("text") => b["text"].as_str().unwrap_or("").to_string(),
                Some("tool_result") => content_text(&b["content"]),
                _ => String::new(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Picks the answer for a request, recording it.
fn pick(
    st: &Shared,
    path: &str,
    headers: &HeaderMap,
    body: Value,
    system: String,
    last: String,
) -> Option<(Answer, Duration, usize)> {
    let mut inner = lock(st);
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    inner.requests.push(Recorded {
        path: path.into(),
        api_key: header("x-api-key"),
        authorization: header("authorization"),
        body,
        system: system.clone(),
        last: last.clone(),
        at: SystemTime::now(),
    });
    let n = inner.requests.len();
    let i = inner.rules.iter().enumerate().position(|(i, r)| {
        r.system
            .as_ref()
            .is_none_or(|s| system.contains(s.as_str()))
            && r.last.as_ref().is_none_or(|s| last.contains(s.as_str()))
            && r.times.is_none_or(|t| inner.used[i] < t)
    })?;
    inner.used[i] += 1;
    let r = &inner.rules[i];
    Some((r.answer.clone(), r.delay, n))
}

fn error_response(status: u16, message: &str, retry_after: Option<u64>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"type": "error", "error": {"type": "api_error", "message": message}});
    let mut resp = (code, Json(body)).into_response();
    if let Some(s) = retry_after {
        resp.headers_mut()
            .insert("retry-after", s.to_string().parse().expect("header value"));
    }
    resp
}

async fn anthropic(
    State(st): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let system = body["system"].as_str().unwrap_or("").to_string();
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .map(|m| content_text(&m["content"]))
        .unwrap_or_default();
    let Some((answer, delay, n)) = pick(&st, "/v1/messages", &headers, body, system, last) else {
        return error_response(400, "mock LLM: no scripted reply matches", None);
    };
    tokio::time::sleep(delay).await;
    let usage = json!({"input_tokens": 100, "output_tokens": 20});
    match answer {
        Answer::Text(t) => Json(json!({
            "id": format!("msg_{n}"), "type": "message", "role": "assistant",
            "content": [{"type": "text", "text": t}],
            "stop_reason": "end_turn", "usage": usage
        }))
        .into_response(),
        Answer::Tools(text, calls) => {
            let mut content = Vec::new();
            if let Some(t) = text {
                content.push(json!({"type": "text", "text": t}));
            }
            for (k, (name, input)) in calls.into_iter().enumerate() {
                content.push(json!({"type": "tool_use", "id": format!("toolu_{n}_{k}"), "name": name, "input": input}));
            }
            Json(json!({
                "id": format!("msg_{n}"), "type": "message", "role": "assistant",
                "content": content, "stop_reason": "tool_use", "usage": usage
            }))
            .into_response()
        }
        Answer::Error(status, msg) => error_response(status, &msg, None),
        Answer::RateLimit(secs) => error_response(429, "rate limited", Some(secs)),
    }
}

async fn openai(State(st): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let msgs = body["messages"].as_array().cloned().unwrap_or_default();
    let system = msgs
        .iter()
        .filter(|m| m["role"] == "system")
        .map(|m| content_text(&m["content"]))
        .collect::<Vec<_>>()
        .join("\n");
    // The last user turn: the trailing run of tool messages, or the last user message.
    let mut tail = Vec::new();
    for m in msgs.iter().rev() {
        match m["role"].as_str() {
            Some("tool") => tail.push(content_text(&m["content"])),
            Some("user") if tail.is_empty() => {
                tail.push(content_text(&m["content"]));
                break;
            }
            _ => break,
        }
    }
    tail.reverse();
    let last = tail.join("\n");
    let Some((answer, delay, n)) = pick(&st, "/chat/completions", &headers, body, system, last)
    else {
        return error_response(400, "mock LLM: no scripted reply matches", None);
    };
    tokio::time::sleep(delay).await;
    let usage = json!({"prompt_tokens": 100, "completion_tokens": 20});
    match answer {
        Answer::Text(t) => Json(json!({
            "id": format!("chatcmpl_{n}"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": t}, "finish_reason": "stop"}],
            "usage": usage
        }))
        .into_response(),
        Answer::Tools(text, calls) => {
            let calls: Vec<Value> = calls
                .into_iter()
                .enumerate()
                .map(|(k, (name, input))| json!({"id": format!("call_{n}_{k}"), "type": "function", "function": {"name": name, "arguments": input.to_string()}}))
                .collect();
            Json(json!({
                "id": format!("chatcmpl_{n}"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "tool_calls": calls}, "finish_reason": "tool_calls"}],
                "usage": usage
            }))
            .into_response()
        }
        Answer::Error(status, msg) => error_response(status, &msg, None),
        Answer::RateLimit(secs) => error_response(429, "rate limited", Some(secs)),
    }
}
