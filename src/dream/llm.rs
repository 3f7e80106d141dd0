//! The optional LLM pass (DESIGN §6).
//!
//! The deterministic ops, the memory entries (with ids) and the session lines
//! they rest on go to a model (Anthropic Messages API or an OpenAI-compatible
//! chat completions endpoint), which answers `{"ops":[…]}` in the PatchOp
//! shape. Nothing it says is trusted: every op is parsed and validated like a
//! MemoryPatch op (shape, paths, named ids exist, evidence points at a real
//! session line or entry); `before` is filled from the corpus, never from the
//! model. Ops that fail are dropped and reported. The API key is read from an
//! environment variable, sent only in its header, and never logged.

use super::text::clip;
use super::{Corpus, DreamError, DreamOptions, Event};
use crate::api::{Evidence, OpKind, PatchOp};
use crate::llm_http;
use crate::memory::layout::check_memory_path;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Tries per request (the first one included) before giving up.
const MAX_TRIES: u32 = 3;
/// First backoff when the server gives no `retry-after`; doubles per try.
const BACKOFF: Duration = Duration::from_millis(500);
/// Budget of session excerpts in the prompt, in characters.
const EXCERPT_BUDGET: usize = 24_000;
/// Longest single excerpt line, in characters.
const EXCERPT_LINE: usize = 300;
/// Default completion budget.
const DEFAULT_MAX_TOKENS: u32 = 4096;
/// Default request timeout, seconds.
const DEFAULT_TIMEOUT: u64 = 120;

/// Which wire format the endpoint speaks.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LlmProvider {
    /// Anthropic Messages API (`POST {base}/v1/messages`).
    Anthropic,
    /// OpenAI-compatible chat completions (`POST {base}/chat/completions`).
    Openai,
}

impl LlmProvider {
    fn name(self) -> &'static str {
        match self {
            LlmProvider::Anthropic => "anthropic",
            LlmProvider::Openai => "openai",
        }
    }

    fn default_base_url(self) -> &'static str {
        match self {
            LlmProvider::Anthropic => "https://api.anthropic.com",
            LlmProvider::Openai => "https://api.openai.com/v1",
        }
    }

    fn default_key_env(self) -> &'static str {
        match self {
            LlmProvider::Anthropic => "ANTHROPIC_API_KEY",
            LlmProvider::Openai => "OPENAI_API_KEY",
        }
    }
}

/// Flags of the optional LLM pass of `reverie dream`. Without
/// `--llm-provider` the pass does not run.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LlmArgs {
    /// Run the LLM pass against this kind of endpoint.
    #[arg(long = "llm-provider", value_enum)]
    pub llm_provider: Option<LlmProvider>,
    /// The model name (required with --llm-provider).
    #[arg(long = "llm-model")]
    pub llm_model: Option<String>,
    /// Endpoint base URL [default: https://api.anthropic.com or https://api.openai.com/v1].
    #[arg(long = "llm-base-url")]
    pub llm_base_url: Option<String>,
    /// Environment variable that holds the API key [default: ANTHROPIC_API_KEY or OPENAI_API_KEY].
    #[arg(long = "llm-api-key-env")]
    pub llm_api_key_env: Option<String>,
    /// Completion token budget [default: 4096].
    #[arg(long = "llm-max-tokens")]
    pub llm_max_tokens: Option<u32>,
    /// Timeout of one request, in seconds [default: 120].
    #[arg(long = "llm-timeout")]
    pub llm_timeout: Option<u64>,
}

impl LlmArgs {
    /// True when the pass is asked for.
    pub fn enabled(&self) -> bool {
        self.llm_provider.is_some()
    }
}

/// What the LLM pass did, for the summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LlmReport {
    /// Ops the model returned.
    pub proposed: usize,
    /// Ops that passed validation (the ops returned).
    pub kept: usize,
    /// Each dropped op (`op N (kind path)`) and why.
    pub dropped: Vec<(String, String)>,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Runs the LLM pass: sends the corpus and `ops` to the model and returns
/// its validated ops with a report. Fails when the endpoint cannot be used
/// (no key, HTTP errors after retries, a reply that is not `{"ops":[…]}`);
/// the caller decides whether to fall back to `ops`.
pub async fn refine(
    corpus: &Corpus,
    ops: Vec<PatchOp>,
    opts: &DreamOptions,
    args: &LlmArgs,
) -> Result<(Vec<PatchOp>, LlmReport), DreamError> {
    let provider = args.llm_provider.ok_or_else(|| {
        DreamError::Llm("no --llm-provider given (anthropic or openai)".to_string())
    })?;
    let model = args
        .llm_model
        .as_deref()
        .filter(|m| !m.trim().is_empty())
        .ok_or_else(|| {
            DreamError::Llm(format!(
                "--llm-model is required with --llm-provider {}",
                provider.name()
            ))
        })?;
    let key_env = args
        .llm_api_key_env
        .clone()
        .unwrap_or_else(|| provider.default_key_env().to_string());
    let key = std::env::var(&key_env)
        .ok()
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| {
            DreamError::Llm(format!(
                "environment variable {key_env} is not set: the {} API key is read from it (choose another variable with --llm-api-key-env)",
                provider.name()
            ))
        })?;
    let base = args
        .llm_base_url
        .clone()
        .unwrap_or_else(|| provider.default_base_url().to_string());
    let base = base.trim_end_matches('/');
    let max_tokens = args.llm_max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    let timeout = Duration::from_secs(args.llm_timeout.unwrap_or(DEFAULT_TIMEOUT));

    let system = system_prompt(opts);
    let user = user_prompt(corpus, &ops);
    let (url, body) = match provider {
        LlmProvider::Anthropic => (
            format!("{base}/v1/messages"),
            serde_json::json!({
                "model": model,
                "max_tokens": max_tokens,
                "system": system,
                "messages": [{"role": "user", "content": user}],
            }),
        ),
        LlmProvider::Openai => (
            format!("{base}/chat/completions"),
            serde_json::json!({
                "model": model,
                "max_tokens": max_tokens,
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": user},
                ],
            }),
        ),
    };
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| DreamError::Llm(format!("building the HTTP client: {e}")))?;
    tracing::info!(provider = provider.name(), %url, model, "LLM pass: sending {} ops", ops.len());
    let reply = call(&client, provider, &url, &key, &body).await?;
    let (text, input_tokens, output_tokens) = read_reply(provider, &reply)
        .map_err(|e| DreamError::Llm(format!("{} reply from {url}: {e}", provider.name())))?;
    let proposed = parse_ops(&text)
        .map_err(|e| DreamError::Llm(format!("{} reply from {url}: {e}", provider.name())))?;

    let mut report = LlmReport {
        proposed: proposed.len(),
        input_tokens,
        output_tokens,
        ..LlmReport::default()
    };
    let kept = validate(corpus, opts, proposed, &mut report);
    report.kept = kept.len();
    tracing::info!(
        proposed = report.proposed,
        kept = report.kept,
        dropped = report.dropped.len(),
        "LLM pass done"
    );
    Ok((kept, report))
}

/// Posts `body`, retrying on 429, 529 and 5xx (and on connection errors)
/// up to [`MAX_TRIES`] times, honouring `retry-after`.
async fn call(
    client: &reqwest::Client,
    provider: LlmProvider,
    url: &str,
    key: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, DreamError> {
    let auth = match provider {
        LlmProvider::Anthropic => llm_http::Auth::AnthropicKey,
        LlmProvider::Openai => llm_http::Auth::Bearer,
    };
    let retry = llm_http::Retry {
        max_tries: MAX_TRIES,
        backoff: BACKOFF,
    };
    llm_http::post_json(client, provider.name(), url, auth, key, body, retry)
        .await
        .map_err(|e| DreamError::Llm(e.to_string()))
}

/// The reply text and token usage of a successful response.
fn read_reply(provider: LlmProvider, v: &serde_json::Value) -> Result<(String, u64, u64), String> {
    let u = |p: &str| v.pointer(p).and_then(|x| x.as_u64()).unwrap_or(0);
    match provider {
        LlmProvider::Anthropic => {
            let blocks = v
                .get("content")
                .and_then(|c| c.as_array())
                .ok_or("no content[] in the Messages API response")?;
            let text: String = blocks
                .iter()
                .filter(|b| b.get("type").and_then(|t| t.as_str()) == Some("text"))
                .filter_map(|b| b.get("text").and_then(|t| t.as_str()))
                .collect();
            Ok((text, u("/usage/input_tokens"), u("/usage/output_tokens")))
        }
        LlmProvider::Openai => {
            let text = v
                .pointer("/choices/0/message/content")
                .and_then(|c| c.as_str())
                .ok_or("no choices[0].message.content in the chat completions response")?;
            Ok((
                text.to_string(),
                u("/usage/prompt_tokens"),
                u("/usage/completion_tokens"),
            ))
        }
    }
}

/// The `ops` array of the model's reply, which may be wrapped in prose or
/// a code fence.
fn parse_ops(text: &str) -> Result<Vec<serde_json::Value>, String> {
    let (Some(a), Some(b)) = (text.find('{'), text.rfind('}')) else {
        return Err(format!(
            "the model did not answer with a JSON object {{\"ops\":[…]}}: {}",
            clip(text, 200)
        ));
    };
    if b < a {
        return Err("the model's JSON object is malformed".into());
    }
    let v: serde_json::Value = serde_json::from_str(&text[a..=b])
        .map_err(|e| format!("the model's JSON does not parse ({e}): {}", clip(text, 200)))?;
    match v.get("ops") {
        Some(serde_json::Value::Array(ops)) => Ok(ops.clone()),
        _ => Err("the model's JSON has no \"ops\" array".into()),
    }
}

/// The instructions: what to do and the exact shape to answer in.
fn system_prompt(opts: &DreamOptions) -> String {
    let mut s = String::from(
        "You maintain the Markdown memory of a team of LLM agents. Between sessions you review what the agents \
remember (memory entries, each with a path and a 12-hex-digit id) against what happened in their sessions \
(lines referenced as session:line), and propose changes as typed ops.\n\n\
You receive the entries, session excerpts and the ops a deterministic engine already proposed. Return the \
complete list of ops you propose: keep the proposed ops you agree with (you may improve their content), leave \
out the ones that are wrong, and add ops the engine missed (better wording, lessons, merges).\n\n\
Answer with one JSON object and nothing else: {\"ops\":[...]}. Each op:\n\
{\"op\":\"add|update|merge|delete|move\",\"path\":\"file.md\",\"section\":\"optional heading\",\"id\":\"12 hex\",\
\"ids\":[\"id or path#id\",...],\"content\":\"new entry text\",\"to\":\"file.md\",\"reason\":\"duplicate|contradiction|stale|\
recurring-error|working-method|shared-preference|budget|instruction\",\"supersededBy\":\"id\",\
\"evidence\":[{\"session\":\"s-014\",\"line\":37,\"quote\":\"...\"} or {\"entry\":\"path#id\",\"quote\":\"...\"}]}\n\
Rules: add needs content; update needs id and content; merge needs two or more ids and content; delete needs id; \
move needs id and to. Only name ids that exist in the given path. Every op needs evidence that points at a \
session line or an entry given below; ops without such evidence are discarded. Keep entries short, factual and \
self-contained; never put secrets in memory.",
    );
    if let Some(i) = opts
        .instructions
        .as_deref()
        .filter(|i| !i.trim().is_empty())
    {
        s.push_str("\n\nInstructions from the store's owners:\n");
        s.push_str(i.trim());
    }
    s
}

/// The material: entries, session excerpts, the deterministic ops.
fn user_prompt(corpus: &Corpus, ops: &[PatchOp]) -> String {
    let mut s = String::from("## Memory entries\n");
    for m in &corpus.memories {
        let section = m
            .entry
            .section
            .as_deref()
            .map(|h| format!(" [{h}]"))
            .unwrap_or_default();
        s.push_str(&format!(
            "- {}{}: {}\n",
            m.key(),
            section,
            m.entry.text.replace('\n', "\n  ")
        ));
    }
    s.push_str("\n## Session excerpts\n");
    s.push_str(&excerpts(corpus, ops));
    s.push_str("\n## Proposed ops\n");
    s.push_str(
        &serde_json::to_string_pretty(&serde_json::json!({ "ops": ops })).unwrap_or_default(),
    );
    s.push('\n');
    s
}

/// Session lines worth showing, within [`EXCERPT_BUDGET`]: first the lines
/// the ops cite, then what users said, then failed tool calls, then what
/// agents said; printed in session order.
fn excerpts(corpus: &Corpus, ops: &[PatchOp]) -> String {
    let cited: BTreeSet<(String, u64)> = ops
        .iter()
        .flat_map(|o| &o.evidence)
        .filter_map(|e| Some((e.session.clone()?, e.line?)))
        .collect();
    // (priority, session index, line) → rendered line
    let mut lines: Vec<((u8, usize, u64), String)> = Vec::new();
    for (si, s) in corpus.sessions.iter().enumerate() {
        for ev in &s.events {
            let (at, who, text, base) = match ev {
                Event::UserText { text, at } => (at, "user", text.as_str(), 1),
                Event::AssistantText { text, at } => (at, "assistant", text.as_str(), 3),
                Event::Tool(c) => match (&c.result, &c.result_at) {
                    (Some(r), Some(at)) => (at, "tool", r.as_str(), if c.is_error { 2 } else { 4 }),
                    _ => continue,
                },
            };
            let prio = if cited.contains(&(at.session.clone(), at.line)) {
                0
            } else {
                base
            };
            let agent = if s.agent.is_empty() {
                String::new()
            } else {
                format!(" ({})", s.agent)
            };
            lines.push((
                (prio, si, at.line),
                format!(
                    "{}:{}{} {}: {}\n",
                    at.session,
                    at.line,
                    agent,
                    who,
                    clip(text, EXCERPT_LINE)
                ),
            ));
        }
    }
    lines.sort();
    let mut used = 0;
    let mut chosen: BTreeMap<(usize, u64), String> = BTreeMap::new();
    for ((_, si, line), text) in lines {
        if used + text.len() > EXCERPT_BUDGET {
            continue;
        }
        used += text.len();
        chosen.insert((si, line), text);
    }
    chosen.into_values().collect()
}

/// Validates the model's ops; returns the ones kept and records the others
/// in `report.dropped`.
fn validate(
    corpus: &Corpus,
    opts: &DreamOptions,
    proposed: Vec<serde_json::Value>,
    report: &mut LlmReport,
) -> Vec<PatchOp> {
    let entries: BTreeMap<String, &str> = corpus
        .memories
        .iter()
        .map(|m| (m.key(), m.entry.text.as_str()))
        .collect();
    let mut lines: BTreeSet<(&str, u64)> = BTreeSet::new();
    for s in &corpus.sessions {
        for ev in &s.events {
            match ev {
                Event::UserText { at, .. } | Event::AssistantText { at, .. } => {
                    lines.insert((at.session.as_str(), at.line));
                }
                Event::Tool(c) => {
                    lines.insert((c.at.session.as_str(), c.at.line));
                    if let Some(at) = &c.result_at {
                        lines.insert((at.session.as_str(), at.line));
                    }
                }
            }
        }
        if let Some(at) = &s.outcome_at {
            lines.insert((at.session.as_str(), at.line));
        }
    }
    // Ids a `supersededBy` may name: existing entries, and the entries the
    // proposed ops write.
    let known_ids: BTreeSet<String> = corpus
        .memories
        .iter()
        .map(|m| m.entry.id.clone())
        .chain(proposed.iter().filter_map(|v| {
            v.get("content")
                .and_then(|c| c.as_str())
                .map(crate::memory::entry_id)
        }))
        .collect();
    let mut touched: BTreeSet<String> = BTreeSet::new();
    let mut kept = Vec::new();
    for (i, raw) in proposed.into_iter().enumerate() {
        let label = describe(i, &raw);
        let op = match serde_json::from_value::<PatchOp>(raw) {
            Ok(op) => op,
            Err(e) => {
                report.dropped.push((label, format!("not a patch op: {e}")));
                continue;
            }
        };
        match check(op, &entries, &lines, opts, &known_ids, &mut touched) {
            Ok(op) => kept.push(op),
            Err(why) => {
                tracing::debug!("LLM op dropped: {label}: {why}");
                report.dropped.push((label, why));
            }
        }
    }
    kept
}

/// `op N (kind path)` for the report.
fn describe(i: usize, raw: &serde_json::Value) -> String {
    let s = |k: &str| raw.get(k).and_then(|v| v.as_str()).unwrap_or("?");
    format!("op {} ({} {})", i + 1, s("op"), s("path"))
}

/// Checks one op and fills its `before` from the corpus.
fn check(
    mut op: PatchOp,
    entries: &BTreeMap<String, &str>,
    lines: &BTreeSet<(&str, u64)>,
    opts: &DreamOptions,
    known_ids: &BTreeSet<String>,
    touched: &mut BTreeSet<String>,
) -> Result<PatchOp, String> {
    op.path = check_memory_path(&op.path).map_err(|e| e.to_string())?;
    let kind = op.op;
    let path = op.path.clone();
    let content_ok = |c: &Option<String>| -> Result<(), String> {
        let c = c.as_deref().map(str::trim).unwrap_or("");
        if c.is_empty() {
            return Err(format!("{kind:?} needs content").to_lowercase());
        }
        if c.contains(crate::memory::entry::META_OPEN) {
            return Err("content holds a reverie metadata comment".into());
        }
        if let Some(max) = opts.max_entry_bytes {
            if c.len() as u64 > max {
                return Err(format!(
                    "content is {} bytes, over the entry limit of {max}",
                    c.len()
                ));
            }
        }
        Ok(())
    };
    let lookup = |id: &str| -> Result<(String, String), String> {
        let key = if id.contains('#') {
            id.to_string()
        } else {
            format!("{path}#{id}")
        };
        entries
            .get(&key)
            .map(|t| (key.clone(), t.to_string()))
            .ok_or_else(|| format!("names entry {key}, which does not exist"))
    };
    // Fields that do not belong to the kind make the apply side refuse
    // the whole patch, so such an op is dropped here.
    let stray: Vec<&str> = [
        (
            "id",
            op.id.is_some() && matches!(kind, OpKind::Add | OpKind::Merge),
        ),
        ("ids", op.ids.is_some() && kind != OpKind::Merge),
        (
            "content",
            op.content.is_some() && matches!(kind, OpKind::Delete | OpKind::Move),
        ),
        ("to", op.to.is_some() && kind != OpKind::Move),
        (
            "supersededBy",
            op.superseded_by.is_some() && kind == OpKind::Add,
        ),
    ]
    .into_iter()
    .filter_map(|(f, bad)| bad.then_some(f))
    .collect();
    if !stray.is_empty() {
        return Err(format!(
            "{} does not take {}",
            format!("{kind:?}").to_lowercase(),
            stray.join(", ")
        ));
    }
    if let Some(sup) = op.superseded_by.as_deref() {
        if !known_ids.contains(sup) {
            return Err(format!(
                "supersededBy {sup} is neither an entry nor the content of an op"
            ));
        }
    }
    op.before = None;
    let mut named: Vec<String> = Vec::new();
    match op.op {
        OpKind::Add => content_ok(&op.content)?,
        OpKind::Update | OpKind::Delete | OpKind::Move => {
            if op.op == OpKind::Update {
                content_ok(&op.content)?;
            }
            if op.op == OpKind::Move {
                let to = op.to.as_deref().ok_or("move needs `to`")?;
                op.to = Some(check_memory_path(to).map_err(|e| format!("to: {e}"))?);
            }
            let id = op
                .id
                .clone()
                .ok_or_else(|| format!("{:?} needs id", op.op).to_lowercase())?;
            if id.contains('#') {
                return Err(format!(
                    "id {id:?} must be a bare id of an entry in {}",
                    op.path
                ));
            }
            let (key, before) = lookup(&id)?;
            named.push(key);
            op.before = Some(before);
        }
        OpKind::Merge => {
            content_ok(&op.content)?;
            let ids = op.ids.clone().unwrap_or_default();
            if ids.len() < 2 {
                return Err("merge needs two or more ids".into());
            }
            let mut befores = Vec::new();
            for id in &ids {
                let (key, before) = lookup(id)?;
                if named.contains(&key) {
                    return Err(format!("merge names {key} twice"));
                }
                named.push(key);
                befores.push(before);
            }
            op.before = Some(befores.join("\n\n"));
        }
    }
    if op.evidence.is_empty() {
        return Err("no evidence".into());
    }
    for e in &op.evidence {
        evidence_ok(e, entries, lines)?;
    }
    if let Some(k) = named.iter().find(|k| touched.contains(*k)) {
        return Err(format!("entry {k} is already changed by an earlier op"));
    }
    touched.extend(named);
    Ok(op)
}

/// Evidence must point at a session line or an entry that exists.
fn evidence_ok(
    e: &Evidence,
    entries: &BTreeMap<String, &str>,
    lines: &BTreeSet<(&str, u64)>,
) -> Result<(), String> {
    match (&e.session, e.line, &e.entry) {
        (Some(s), Some(l), _) if lines.contains(&(s.as_str(), l)) => Ok(()),
        (Some(s), Some(l), _) => Err(format!("evidence {s}:{l} is not a line of any session")),
        (Some(s), None, _) => Err(format!("evidence names session {s} without a line")),
        (None, _, Some(k)) if entries.contains_key(k) => Ok(()),
        (None, _, Some(k)) => Err(format!("evidence names entry {k}, which does not exist")),
        (None, _, None) => Err("evidence names neither a session line nor an entry".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dream::{LineRef, MemoryEntry, Outcome, Session};
    use crate::memory::parse;

    fn corpus() -> Corpus {
        Corpus {
            memories: parse("- The API listens on 8080.\n- Use UTC.\n")
                .entries()
                .map(|e| MemoryEntry {
                    path: "infra.md".into(),
                    entry: e.clone(),
                })
                .collect(),
            sessions: vec![Session {
                id: "s-1".into(),
                agent: "coder".into(),
                started: None,
                ended: None,
                events: vec![Event::UserText {
                    text: "the api listens on 9090 now".into(),
                    at: LineRef {
                        session: "s-1".into(),
                        line: 3,
                    },
                }],
                outcome: Outcome::Unknown,
                outcome_summary: None,
                outcome_at: None,
            }],
        }
    }

    fn run(ops: serde_json::Value) -> (Vec<PatchOp>, LlmReport) {
        let c = corpus();
        let mut r = LlmReport::default();
        let arr = ops.as_array().cloned().unwrap_or_default();
        r.proposed = arr.len();
        let kept = validate(&c, &DreamOptions::default(), arr, &mut r);
        (kept, r)
    }

    #[test]
    fn validation_keeps_good_ops_and_fills_before() {
        let id = crate::memory::entry_id("The API listens on 8080.");
        let (kept, r) = run(serde_json::json!([
            {"op":"update","path":"infra.md","id":id,"content":"The API listens on 9090.","reason":"contradiction",
             "before":"forged","evidence":[{"session":"s-1","line":3}]},
        ]));
        assert_eq!(r.dropped, vec![]);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].before.as_deref(), Some("The API listens on 8080."));
    }

    #[test]
    fn validation_drops_bad_ops_with_reasons() {
        let id = crate::memory::entry_id("Use UTC.");
        let (kept, r) = run(serde_json::json!([
            {"op":"delete","path":"infra.md","id":id,"reason":"stale"},
            {"op":"delete","path":"infra.md","id":"000000000000","reason":"stale","evidence":[{"session":"s-1","line":3}]},
            {"op":"add","path":"../etc/passwd.md","content":"x","reason":"instruction","evidence":[{"session":"s-1","line":3}]},
            {"op":"add","path":"a.md","content":"x","reason":"instruction","evidence":[{"session":"s-1","line":99}]},
            {"op":"merge","path":"infra.md","ids":[id],"content":"x","reason":"duplicate","evidence":[{"session":"s-1","line":3}]},
            {"op":"frobnicate","path":"a.md","reason":"stale"},
            {"op":"update","path":"infra.md","id":id,"reason":"stale","evidence":[{"session":"s-1","line":3}]},
            {"op":"delete","path":"infra.md","id":id,"content":"x","reason":"stale","evidence":[{"session":"s-1","line":3}]},
            {"op":"delete","path":"infra.md","id":id,"supersededBy":"123456789abc","reason":"duplicate","evidence":[{"session":"s-1","line":3}]},
        ]));
        assert!(kept.is_empty());
        let why: Vec<&str> = r.dropped.iter().map(|(_, w)| w.as_str()).collect();
        assert_eq!(why.len(), 9);
        assert_eq!(why[7], "delete does not take content");
        assert!(why[8].contains("supersededBy 123456789abc"));
        assert_eq!(why[0], "no evidence");
        assert!(why[1].contains("does not exist"));
        assert!(why[2].contains("leaves the store"));
        assert!(why[3].contains("s-1:99"));
        assert!(why[4].contains("two or more"));
        assert!(why[5].starts_with("not a patch op"));
        assert!(why[6].contains("needs content"));
    }

    #[test]
    fn parse_ops_accepts_fenced_json() {
        let v = parse_ops("Here:\n```json\n{\"ops\":[{\"op\":\"add\"}]}\n```").unwrap_or_default();
        assert_eq!(v.len(), 1);
        assert!(parse_ops("no json here").is_err());
        assert!(parse_ops("{\"nope\":1}").is_err());
    }

    #[test]
    fn debug_of_args_names_only_the_variable() {
        let a = LlmArgs {
            llm_provider: Some(LlmProvider::Openai),
            llm_api_key_env: Some("MY_KEY".into()),
            ..LlmArgs::default()
        };
        assert!(format!("{a:?}").contains("MY_KEY"));
    }
}
