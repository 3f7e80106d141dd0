//! LLM providers with tool use: the Anthropic Messages API and any
//! OpenAI-compatible chat-completions endpoint.
//!
//! The conversation is kept in the Messages API's shape ([`Message`] of
//! [`Block`]s), which is also the transcript format (DESIGN §5); the OpenAI
//! wire format is produced from it and parsed back into it. Requests are
//! retried on 429, 529 and 5xx (and connection errors) at most
//! [`MAX_TRIES`] times, honouring `retry-after`. The API key goes only into
//! its header, marked sensitive.

use super::RuntimeError;
use crate::api::Provider;
use crate::llm_http;
pub use crate::llm_http::{clip, provider_message};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Tries per request (the first one included) before the session fails.
pub const MAX_TRIES: u32 = 3;
/// First backoff when the server gives no `retry-after`; doubles per try.
const BACKOFF: Duration = Duration::from_millis(300);

/// A content block (the Messages API's shape).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    /// Text from the model or the user.
    Text { text: String },
    /// A tool call by the model.
    ToolUse {
        id: String,
        name: String,
        input: serde_json::Value,
    },
    /// The result of a tool call, sent back as `role: user`.
    ToolResult {
        tool_use_id: String,
        content: String,
        #[serde(default)]
        is_error: bool,
    },
}

/// Who said a message.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

/// One message of the conversation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Block>,
}

/// A tool offered to the model.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolDef {
    pub name: String,
    pub description: String,
    /// JSON Schema of the input.
    pub input_schema: serde_json::Value,
}

/// Why the model stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    EndTurn,
    ToolUse,
    MaxTokens,
    StopSequence,
    Refusal,
    PauseTurn,
    /// A reason this runtime does not know; treated like the end of a turn.
    Other(String),
}

/// One model reply.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub content: Vec<Block>,
    pub stop: StopReason,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// A configured endpoint.
pub struct Llm {
    pub provider: Provider,
    pub base_url: String,
    pub model: String,
    pub max_tokens: u32,
    api_key: String,
    http: reqwest::Client,
}

impl Llm {
    /// An endpoint for `provider` at `base_url` (the public API when `None`).
    pub fn new(
        provider: Provider,
        base_url: Option<&str>,
        model: &str,
        max_tokens: u32,
        api_key: String,
    ) -> Result<Llm, RuntimeError> {
        let base_url = base_url
            .unwrap_or(match provider {
                Provider::Anthropic => "https://api.anthropic.com",
                Provider::Openai => "https://api.openai.com/v1",
            })
            .trim_end_matches('/')
            .to_string();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(|e| RuntimeError::Llm(format!("cannot build an HTTP client: {e}")))?;
        Ok(Llm {
            provider,
            base_url,
            model: model.to_string(),
            max_tokens,
            api_key,
            http,
        })
    }

    /// The URL requests go to.
    pub fn url(&self) -> String {
        match self.provider {
            Provider::Anthropic => format!("{}/v1/messages", self.base_url),
            Provider::Openai => format!("{}/chat/completions", self.base_url),
        }
    }

    /// Sends the conversation and returns the model's reply.
    pub async fn complete(
        &self,
        system: &str,
        messages: &[Message],
        tools: &[ToolDef],
    ) -> Result<Reply, RuntimeError> {
        let body = match self.provider {
            Provider::Anthropic => {
                anthropic_request(&self.model, self.max_tokens, system, messages, tools)
            }
            Provider::Openai => {
                openai_request(&self.model, self.max_tokens, system, messages, tools)
            }
        };
        let value = self.post(&body).await?;
        match self.provider {
            Provider::Anthropic => parse_anthropic(&value),
            Provider::Openai => parse_openai(&value),
        }
    }

    fn provider_name(&self) -> &'static str {
        match self.provider {
            Provider::Anthropic => "anthropic",
            Provider::Openai => "openai",
        }
    }

    async fn post(&self, body: &serde_json::Value) -> Result<serde_json::Value, RuntimeError> {
        let auth = match self.provider {
            Provider::Anthropic => llm_http::Auth::AnthropicKey,
            Provider::Openai => llm_http::Auth::Bearer,
        };
        let retry = llm_http::Retry {
            max_tries: MAX_TRIES,
            backoff: BACKOFF,
        };
        let url = self.url();
        llm_http::post_json(
            &self.http,
            self.provider_name(),
            &url,
            auth,
            &self.api_key,
            body,
            retry,
        )
        .await
        .map_err(|e| RuntimeError::Llm(e.to_string()))
    }
}

/// The Messages API request body.
pub fn anthropic_request(
    model: &str,
    max_tokens: u32,
    system: &str,
    messages: &[Message],
    tools: &[ToolDef],
) -> serde_json::Value {
    let mut body = serde_json::json!({
        "model": model,
        "max_tokens": max_tokens,
        "messages": messages,
    });
    if !system.is_empty() {
        body["system"] = system.into();
    }
    if !tools.is_empty() {
        body["tools"] = tools
            .iter()
            .map(|t| {
                serde_json::json!({"name": t.name, "description": t.description, "input_schema": t.input_schema})
            })
            .collect();
    }
    body
}

/// Parses a Messages API response.
pub fn parse_anthropic(v: &serde_json::Value) -> Result<Reply, RuntimeError> {
    let bad = |what: &str| RuntimeError::Llm(format!("anthropic response: {what}"));
    let blocks = v
        .get("content")
        .and_then(|c| c.as_array())
        .ok_or_else(|| bad("no `content` array"))?;
    let mut content = Vec::new();
    for b in blocks {
        // Blocks this runtime does not use (thinking, server tools) are left out.
        match b.get("type").and_then(|t| t.as_str()) {
            Some("text") | Some("tool_use") => content.push(
                serde_json::from_value(b.clone())
                    .map_err(|e| bad(&format!("content block {b}: {e}")))?,
            ),
            _ => {}
        }
    }
    let stop = match v.get("stop_reason").and_then(|s| s.as_str()) {
        Some("end_turn") | None => StopReason::EndTurn,
        Some("tool_use") => StopReason::ToolUse,
        Some("max_tokens") => StopReason::MaxTokens,
        Some("stop_sequence") => StopReason::StopSequence,
        Some("refusal") => StopReason::Refusal,
        Some("pause_turn") => StopReason::PauseTurn,
        Some(other) => StopReason::Other(other.to_string()),
    };
    let tokens = |k: &str| {
        v.pointer(&format!("/usage/{k}"))
            .and_then(|t| t.as_u64())
            .unwrap_or(0)
    };
    Ok(Reply {
        content,
        stop,
        input_tokens: tokens("input_tokens"),
        output_tokens: tokens("output_tokens"),
    })
}

/// The chat-completions request body.
pub fn openai_request(
    model: &str,
    max_tokens: u32,
    system: &str,
    messages: &[Message],
    tools: &[ToolDef],
) -> serde_json::Value {
    let mut out = Vec::new();
    if !system.is_empty() {
        out.push(serde_json::json!({"role": "system", "content": system}));
    }
    for m in messages {
        match m.role {
            Role::Assistant => {
                let text: Vec<&str> = m
                    .content
                    .iter()
                    .filter_map(|b| match b {
                        Block::Text { text } => Some(text.as_str()),
                        _ => None,
                    })
                    .collect();
                let calls: Vec<serde_json::Value> = m
                    .content
                    .iter()
                    .filter_map(|b| match b {
                        Block::ToolUse { id, name, input } => Some(serde_json::json!({
                            "id": id, "type": "function",
                            "function": {"name": name, "arguments": input.to_string()}
                        })),
                        _ => None,
                    })
                    .collect();
                let mut msg = serde_json::json!({"role": "assistant", "content": text.join("\n")});
                if !calls.is_empty() {
                    msg["tool_calls"] = calls.into();
                }
                out.push(msg);
            }
            Role::User => {
                // Tool results become `role: tool` messages; text stays a user message.
                let mut text = Vec::new();
                for b in &m.content {
                    match b {
                        Block::ToolResult {
                            tool_use_id,
                            content,
                            is_error,
                        } => {
                            let content = if *is_error {
                                format!("error: {content}")
                            } else {
                                content.clone()
                            };
                            out.push(serde_json::json!({"role": "tool", "tool_call_id": tool_use_id, "content": content}));
                        }
                        Block::Text { text: t } => text.push(t.as_str()),
                        Block::ToolUse { .. } => {}
                    }
                }
                if !text.is_empty() {
                    out.push(serde_json::json!({"role": "user", "content": text.join("\n")}));
                }
            }
        }
    }
    let mut body = serde_json::json!({"model": model, "max_tokens": max_tokens, "messages": out});
    if !tools.is_empty() {
        body["tools"] = tools
            .iter()
            .map(|t| serde_json::json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.input_schema}}))
            .collect();
    }
    body
}

/// Parses a chat-completions response.
pub fn parse_openai(v: &serde_json::Value) -> Result<Reply, RuntimeError> {
    let bad = |what: &str| RuntimeError::Llm(format!("openai response: {what}"));
    let choice = v
        .pointer("/choices/0")
        .ok_or_else(|| bad("no `choices[0]`"))?;
    let msg = choice
        .get("message")
        .ok_or_else(|| bad("no `choices[0].message`"))?;
    let mut content = Vec::new();
    if let Some(text) = msg.get("content").and_then(|c| c.as_str()) {
        if !text.is_empty() {
            content.push(Block::Text {
                text: text.to_string(),
            });
        }
    }
    for call in msg
        .get("tool_calls")
        .and_then(|c| c.as_array())
        .into_iter()
        .flatten()
    {
        let id = call
            .get("id")
            .and_then(|i| i.as_str())
            .ok_or_else(|| bad("a tool call without `id`"))?;
        let name = call
            .pointer("/function/name")
            .and_then(|n| n.as_str())
            .ok_or_else(|| bad(&format!("tool call {id} without `function.name`")))?;
        let args = call
            .pointer("/function/arguments")
            .and_then(|a| a.as_str())
            .unwrap_or("{}");
        // Arguments the model garbled still reach the tool, which reports the error.
        let input = serde_json::from_str(args)
            .unwrap_or_else(|_| serde_json::json!({"_unparsed_arguments": args}));
        content.push(Block::ToolUse {
            id: id.to_string(),
            name: name.to_string(),
            input,
        });
    }
    let stop = match choice.get("finish_reason").and_then(|f| f.as_str()) {
        Some("stop") | None => StopReason::EndTurn,
        Some("tool_calls") | Some("function_call") => StopReason::ToolUse,
        Some("length") => StopReason::MaxTokens,
        Some("content_filter") => StopReason::Refusal,
        Some(other) => StopReason::Other(other.to_string()),
    };
    let tokens = |k: &str| {
        v.pointer(&format!("/usage/{k}"))
            .and_then(|t| t.as_u64())
            .unwrap_or(0)
    };
    Ok(Reply {
        content,
        stop,
        input_tokens: tokens("prompt_tokens"),
        output_tokens: tokens("completion_tokens"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn anthropic_tool_use_reply_is_parsed() {
        let r = parse_anthropic(&json!({
            "content": [
                {"type": "thinking", "thinking": "…"},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "tu_1", "name": "memory", "input": {"command": "view", "path": "/memories"}}
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 12, "output_tokens": 7}
        }))
        .unwrap();
        assert_eq!(r.stop, StopReason::ToolUse);
        assert_eq!(r.content.len(), 2);
        assert_eq!((r.input_tokens, r.output_tokens), (12, 7));
        assert!(matches!(&r.content[1], Block::ToolUse { name, .. } if name == "memory"));
        for (s, want) in [
            ("end_turn", StopReason::EndTurn),
            ("max_tokens", StopReason::MaxTokens),
            ("stop_sequence", StopReason::StopSequence),
            ("refusal", StopReason::Refusal),
            ("pause_turn", StopReason::PauseTurn),
            ("new_one", StopReason::Other("new_one".into())),
        ] {
            let r = parse_anthropic(&json!({"content": [], "stop_reason": s})).unwrap();
            assert_eq!(r.stop, want);
        }
        assert!(parse_anthropic(&json!({"error": "x"})).is_err());
    }

    #[test]
    fn openai_round_trip_of_tool_calls_and_results() {
        let r = parse_openai(&json!({
            "choices": [{"message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "files", "arguments": "{\"command\":\"list\"}"}},
                {"id": "c2", "type": "function", "function": {"name": "files", "arguments": "not json"}}
            ]}, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3}
        }))
        .unwrap();
        assert_eq!(r.stop, StopReason::ToolUse);
        assert_eq!(r.content.len(), 2);
        assert_eq!((r.input_tokens, r.output_tokens), (5, 3));
        let msgs = vec![
            Message {
                role: Role::User,
                content: vec![Block::Text { text: "hi".into() }],
            },
            Message {
                role: Role::Assistant,
                content: r.content.clone(),
            },
            Message {
                role: Role::User,
                content: vec![Block::ToolResult {
                    tool_use_id: "c1".into(),
                    content: "a.md".into(),
                    is_error: false,
                }],
            },
        ];
        let tools = [ToolDef {
            name: "files".into(),
            description: "d".into(),
            input_schema: json!({"type": "object"}),
        }];
        let body = openai_request("m", 10, "sys", &msgs, &tools);
        let m = body["messages"].as_array().unwrap();
        assert_eq!(m[0]["role"], "system");
        assert_eq!(
            m[2]["tool_calls"][0]["function"]["arguments"],
            "{\"command\":\"list\"}"
        );
        assert_eq!(m[3]["role"], "tool");
        assert_eq!(m[3]["tool_call_id"], "c1");
        assert_eq!(body["tools"][0]["function"]["name"], "files");
        let len = parse_openai(
            &json!({"choices": [{"message": {"content": "x"}, "finish_reason": "length"}]}),
        )
        .unwrap();
        assert_eq!(len.stop, StopReason::MaxTokens);
    }

    #[test]
    fn provider_error_message_is_extracted() {
        assert_eq!(
            provider_message(r#"{"error":{"type":"overloaded","message":"Overloaded"}}"#),
            "Overloaded"
        );
        assert_eq!(provider_message(" boom "), "boom");
    }
}
