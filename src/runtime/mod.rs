//! The agent runtime (`reverie agent --session NS/NAME`): an LLM loop with
//! tools, run in the session's pod.
//!
//! [`run_session`] reads the session, its Agent and team from the API,
//! mounts the tools the Agent lists, runs [`AgentLoop`] and writes the
//! termination message ([`plan::Termination`]) the controller reads.

pub mod cluster;
pub mod plan;
pub mod provider;
pub mod tools;
pub mod transcript;

pub use cluster::run_session;

use crate::api::Usage;
use provider::{Block, Llm, Message, Reply, Role, StopReason, ToolDef};
use std::path::{Path, PathBuf};
use tools::{FilesTool, MemoryTool, ToolOutput};
use transcript::Transcript;

/// What can end a session early.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}")]
    Llm(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Invalid(String),
}

impl RuntimeError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        RuntimeError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The tools a session offers, built from the Agent's `tools`.
#[derive(Default)]
pub struct Toolbox {
    pub memory: Option<MemoryTool>,
    pub files: Option<FilesTool>,
    /// `Some(dir)` when `bash` is allowed; commands run in `dir` if it exists.
    pub bash: Option<Option<PathBuf>>,
    pub delegate: Option<cluster::Delegator>,
}

impl Toolbox {
    /// The definitions sent to the model.
    pub fn defs(&self) -> Vec<ToolDef> {
        let mut out = Vec::new();
        if let Some(m) = &self.memory {
            let names: Vec<String> = m
                .stores
                .iter()
                .map(|s| format!("/memories/{}", s.name))
                .collect();
            out.push(ToolDef {
                name: "memory".into(),
                description: format!(
                    "Persistent Markdown memory. Stores: {}. Commands: view {{path, view_range?}}, create {{path, file_text}}, str_replace {{path, old_str, new_str}}, insert {{path, insert_line, insert_text}}, delete {{path}}, rename {{old_path, new_path}}. Files end in .md.",
                    names.join(", ")
                ),
                input_schema: serde_json::json!({
                    "type": "object",
                    "properties": {
                        "command": {"type": "string", "enum": ["view", "create", "str_replace", "insert", "delete", "rename"]},
                        "path": {"type": "string"}, "file_text": {"type": "string"},
                        "old_str": {"type": "string"}, "new_str": {"type": "string"},
                        "insert_line": {"type": "integer"}, "insert_text": {"type": "string"},
                        "old_path": {"type": "string"}, "new_path": {"type": "string"},
                        "view_range": {"type": "array", "items": {"type": "integer"}}
                    },
                    "required": ["command"]
                }),
            });
        }
        if self.files.is_some() {
            out.push(ToolDef {
                name: "files".into(),
                description: "Files in the team workspace /workspace. Commands: read {path}, write {path, content}, list {path?}.".into(),
                input_schema: serde_json::json!({
                    "type": "object",
                    "properties": {
                        "command": {"type": "string", "enum": ["read", "write", "list"]},
                        "path": {"type": "string"}, "content": {"type": "string"}
                    },
                    "required": ["command"]
                }),
            });
        }
        if self.bash.is_some() {
            out.push(ToolDef {
                name: "bash".into(),
                description: format!(
                    "Run a shell command (sh -c); {} s timeout, output capped.",
                    tools::BASH_TIMEOUT.as_secs()
                ),
                input_schema: serde_json::json!({
                    "type": "object",
                    "properties": {"command": {"type": "string"}},
                    "required": ["command"]
                }),
            });
        }
        if let Some(d) = &self.delegate {
            out.push(d.def());
        }
        out
    }

    /// Runs one tool call; unknown tools and bad input are errors the model sees.
    pub async fn call(&self, name: &str, input: &serde_json::Value) -> ToolOutput {
        match name {
            "memory" => match &self.memory {
                Some(m) => m.call(input),
                None => ToolOutput::err("tool memory is not enabled for this agent"),
            },
            "files" => match &self.files {
                Some(f) => f.call(input),
                None => ToolOutput::err("tool files is not enabled for this agent"),
            },
            "bash" => match &self.bash {
                Some(dir) => tools::bash(dir.as_deref(), input).await,
                None => ToolOutput::err("tool bash is not enabled for this agent"),
            },
            "delegate" => match &self.delegate {
                Some(d) => d.call(input).await,
                None => ToolOutput::err("tool delegate is only available to a team's lead"),
            },
            other => ToolOutput::err(format!("unknown tool {other:?}")),
        }
    }
}

/// The model side of a loop: a real endpoint, or anything that answers.
pub trait Model {
    fn complete<'a>(
        &'a self,
        system: &'a str,
        messages: &'a [Message],
        tools: &'a [ToolDef],
    ) -> futures::future::BoxFuture<'a, Result<Reply, RuntimeError>>;
}

impl Model for Llm {
    fn complete<'a>(
        &'a self,
        system: &'a str,
        messages: &'a [Message],
        tools: &'a [ToolDef],
    ) -> futures::future::BoxFuture<'a, Result<Reply, RuntimeError>> {
        Box::pin(Llm::complete(self, system, messages, tools))
    }
}

/// How a loop ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoopResult {
    pub succeeded: bool,
    /// The final answer (the last assistant text).
    pub result: String,
    /// Why it failed, when it did.
    pub message: Option<String>,
    pub usage: Usage,
}

/// One session's conversation.
pub struct AgentLoop<'a> {
    pub system: String,
    pub max_turns: u32,
    pub model: &'a dyn Model,
    pub tools: &'a Toolbox,
    pub transcript: Option<&'a mut Transcript>,
    /// Timestamps for transcript lines (injected so tests are deterministic).
    pub now: &'a dyn Fn() -> String,
}

fn text_of(content: &[Block]) -> String {
    content
        .iter()
        .filter_map(|b| match b {
            Block::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl AgentLoop<'_> {
    fn record(&mut self, m: &Message) {
        let ts = (self.now)();
        if let Some(t) = self.transcript.as_deref_mut() {
            // A transcript that cannot be written must not kill the work.
            if let Err(e) = t.message(m, &ts) {
                tracing::warn!("transcript: {e}");
            }
        }
    }

    /// Runs the loop on `prompt` until the model ends its turn, fails, or
    /// `max_turns` is reached; writes the `outcome` line.
    pub async fn run(&mut self, prompt: &str) -> LoopResult {
        let r = self.turns(prompt).await;
        let ts = (self.now)();
        if let Some(t) = self.transcript.as_deref_mut() {
            let summary = r.message.clone().unwrap_or_else(|| r.result.clone());
            if let Err(e) = t.outcome(r.succeeded, &provider::clip(&summary, 500), &ts) {
                tracing::warn!("transcript: {e}");
            }
        }
        r
    }

    async fn turns(&mut self, prompt: &str) -> LoopResult {
        let defs = self.tools.defs();
        let first = Message {
            role: Role::User,
            content: vec![Block::Text {
                text: prompt.to_string(),
            }],
        };
        self.record(&first);
        let mut messages = vec![first];
        let mut usage = Usage::default();
        let mut last_text = String::new();
        let fail = |usage: Usage, last: String, msg: String| LoopResult {
            succeeded: false,
            result: last,
            message: Some(msg),
            usage,
        };
        for turn in 1..=self.max_turns {
            let reply = match self.model.complete(&self.system, &messages, &defs).await {
                Ok(r) => r,
                Err(e) => {
                    // Reported to the operator (termination message), which
                    // counts it as an LLM error of the agent's provider.
                    usage.errors += 1;
                    return fail(usage, last_text, e.to_string());
                }
            };
            usage.input_tokens += reply.input_tokens;
            usage.output_tokens += reply.output_tokens;
            let assistant = Message {
                role: Role::Assistant,
                content: reply.content,
            };
            self.record(&assistant);
            let text = text_of(&assistant.content);
            if !text.is_empty() {
                last_text = text;
            }
            let calls: Vec<(String, String, serde_json::Value)> = assistant
                .content
                .iter()
                .filter_map(|b| match b {
                    Block::ToolUse { id, name, input } => {
                        Some((id.clone(), name.clone(), input.clone()))
                    }
                    _ => None,
                })
                .collect();
            messages.push(assistant);
            tracing::info!(turn, stop = ?reply.stop, tool_calls = calls.len(), "model turn");
            match reply.stop {
                StopReason::Refusal => {
                    return fail(usage, last_text, "the model refused the request".into())
                }
                StopReason::PauseTurn => {
                    // The provider paused a long turn: sending the conversation
                    // back as it is lets the model continue.
                    continue;
                }
                StopReason::MaxTokens if calls.is_empty() => {
                    let m = Message {
                        role: Role::User,
                        content: vec![Block::Text {
                            text: "Your reply was cut off at the token limit; continue.".into(),
                        }],
                    };
                    self.record(&m);
                    messages.push(m);
                    continue;
                }
                _ if calls.is_empty() => {
                    return LoopResult {
                        succeeded: true,
                        result: last_text,
                        message: None,
                        usage,
                    };
                }
                _ => {}
            }
            // Several calls in one turn run at the same time (two delegations
            // proceed in parallel); results keep the order of the calls.
            let tools = self.tools;
            let outputs = futures::future::join_all(
                calls
                    .iter()
                    .map(|(_, name, input)| async move { tools.call(name, input).await }),
            )
            .await;
            let results = Message {
                role: Role::User,
                content: calls
                    .iter()
                    .zip(outputs)
                    .map(|((id, _, _), out)| Block::ToolResult {
                        tool_use_id: id.clone(),
                        content: out.content,
                        is_error: out.is_error,
                    })
                    .collect(),
            };
            self.record(&results);
            messages.push(results);
        }
        fail(
            usage,
            last_text,
            format!(
                "maxTurns ({}) reached before the model finished",
                self.max_turns
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Replies from a list, in order; records what it was sent.
    struct Scripted {
        replies: Mutex<Vec<Result<Reply, RuntimeError>>>,
        seen: Mutex<Vec<usize>>,
    }

    impl Model for Scripted {
        fn complete<'a>(
            &'a self,
            _system: &'a str,
            messages: &'a [Message],
            _tools: &'a [ToolDef],
        ) -> futures::future::BoxFuture<'a, Result<Reply, RuntimeError>> {
            self.seen.lock().unwrap().push(messages.len());
            let r = self.replies.lock().unwrap().remove(0);
            Box::pin(async move { r })
        }
    }

    fn reply(content: Vec<Block>, stop: StopReason) -> Result<Reply, RuntimeError> {
        Ok(Reply {
            content,
            stop,
            input_tokens: 10,
            output_tokens: 5,
        })
    }

    #[tokio::test]
    async fn tool_calls_loop_until_end_turn_and_are_recorded() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("store/memories")).unwrap();
        let tools = Toolbox {
            memory: Some(MemoryTool {
                stores: vec![tools::StoreMount {
                    name: "team".into(),
                    root: d.path().join("store"),
                    read_only: false,
                }],
            }),
            ..Default::default()
        };
        let model = Scripted {
            replies: Mutex::new(vec![
                reply(
                    vec![
                        Block::ToolUse {
                            id: "a".into(),
                            name: "memory".into(),
                            input: serde_json::json!({"command": "create", "path": "/memories/team/x.md", "file_text": "- hi\n"}),
                        },
                        Block::ToolUse {
                            id: "b".into(),
                            name: "nope".into(),
                            input: serde_json::json!({}),
                        },
                    ],
                    StopReason::ToolUse,
                ),
                reply(
                    vec![Block::Text {
                        text: "part".into(),
                    }],
                    StopReason::MaxTokens,
                ),
                reply(
                    vec![Block::Text {
                        text: "done".into(),
                    }],
                    StopReason::EndTurn,
                ),
            ]),
            seen: Mutex::default(),
        };
        let path = d.path().join("store/sessions/s.jsonl");
        let mut t = Transcript::open(&path, "s", "a").unwrap();
        let now = || "2026-01-01T00:00:00Z".to_string();
        let mut l = AgentLoop {
            system: String::new(),
            max_turns: 5,
            model: &model,
            tools: &tools,
            transcript: Some(&mut t),
            now: &now,
        };
        let r = l.run("go").await;
        assert!(r.succeeded, "{r:?}");
        assert_eq!(r.result, "done");
        assert_eq!(r.usage.input_tokens, 30);
        assert_eq!(*model.seen.lock().unwrap(), vec![1, 3, 5]);
        assert!(d.path().join("store/memories/x.md").exists());
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 7);
        assert_eq!(lines[2]["content"][1]["is_error"], true);
        assert_eq!(lines[6]["type"], "outcome");
    }

    #[tokio::test]
    async fn errors_and_turn_limits_fail_the_session() {
        let tools = Toolbox::default();
        let now = || String::new();
        let model = Scripted {
            replies: Mutex::new(vec![Err(RuntimeError::Llm("HTTP 500: boom".into()))]),
            seen: Mutex::default(),
        };
        let r = AgentLoop {
            system: String::new(),
            max_turns: 3,
            model: &model,
            tools: &tools,
            transcript: None,
            now: &now,
        }
        .run("go")
        .await;
        assert!(!r.succeeded);
        assert_eq!(r.message.as_deref(), Some("HTTP 500: boom"));
        assert_eq!(r.usage.errors, 1);
        let call = || {
            reply(
                vec![Block::ToolUse {
                    id: "a".into(),
                    name: "bash".into(),
                    input: serde_json::json!({}),
                }],
                StopReason::ToolUse,
            )
        };
        let model = Scripted {
            replies: Mutex::new(vec![call(), call()]),
            seen: Mutex::default(),
        };
        let r = AgentLoop {
            system: String::new(),
            max_turns: 2,
            model: &model,
            tools: &tools,
            transcript: None,
            now: &now,
        }
        .run("go")
        .await;
        assert!(!r.succeeded);
        assert!(r.message.unwrap().contains("maxTurns (2)"));
        let model = Scripted {
            replies: Mutex::new(vec![reply(vec![], StopReason::Refusal)]),
            seen: Mutex::default(),
        };
        let r = AgentLoop {
            system: String::new(),
            max_turns: 2,
            model: &model,
            tools: &tools,
            transcript: None,
            now: &now,
        }
        .run("go")
        .await;
        assert!(r.message.unwrap().contains("refused"));
    }
}
