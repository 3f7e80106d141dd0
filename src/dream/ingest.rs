//! Reading a store (DESIGN §3, §5): the Markdown memory files and the
//! `sessions/*.jsonl` transcripts, into a [`Corpus`].
//!
//! Transcripts are read line by line with `BufRead::read_until`, so memory
//! use is bounded by the longest line, not the file. Two line formats are
//! accepted and may be mixed:
//!
//! - canonical: a Messages-API message plus an envelope
//!   (`session, agent, ts, role, content`) and a last
//!   `{"type":"outcome","status":…,"summary":…}` line;
//! - Claude Code session logs: `type: user|assistant`, `message{role,content}`,
//!   `sessionId`, `timestamp`, `isSidechain`. Other Claude Code line types
//!   (`summary`, `system`, `file-history-snapshot` …) are skipped silently.
//!
//! Bad lines are never fatal: they are counted in [`IngestReport`] with the
//! first few described as `file:line: what`.

use super::session::{Event, IngestReport, LineRef, Outcome, Session, ToolCall};
use super::{Corpus, DreamError, DreamOptions, MemoryEntry};
use crate::memory::{entry, layout};
use chrono::{DateTime, Utc};
use rayon::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

/// How many problem samples the report keeps.
const MAX_SAMPLES: usize = 10;

/// Reads every `*.jsonl` file directly in `dir` (sorted by name; a missing
/// directory is an empty result). One file is one session; its id is the
/// file stem, which is also what [`LineRef`]s and evidence name, so that
/// `session: s-014, line: 37` always points at `sessions/s-014.jsonl:37`.
/// Sessions that started before `since` are left out (and counted); a
/// session without any timestamp is kept, because its age is unknown.
/// The result is sorted by (start time, id); sessions without a start time
/// sort first.
pub fn read_sessions(
    dir: &Path,
    since: Option<DateTime<Utc>>,
) -> Result<(Vec<Session>, IngestReport), DreamError> {
    let files = list_jsonl(dir)?;
    let parsed: Vec<Result<(Option<Session>, IngestReport), DreamError>> =
        files.par_iter().map(|p| read_session_file(p)).collect();
    let mut report = IngestReport::default();
    let mut sessions = Vec::with_capacity(parsed.len());
    for r in parsed {
        let (session, file_report) = r?;
        merge_report(&mut report, file_report);
        let Some(session) = session else { continue };
        if let (Some(since), Some(started)) = (since, session.started) {
            if started < since {
                report.skipped_sessions += 1;
                continue;
            }
        }
        sessions.push(session);
    }
    sessions.sort_by(|a, b| (a.started, &a.id).cmp(&(b.started, &b.id)));
    Ok((sessions, report))
}

/// Reads a whole store: `memories/` (required; [`DreamError::NoMemories`]
/// when missing) and `sessions/` (optional). Memory files are parsed in
/// parallel; entries come out in (path, file order) order. A memory file
/// that is not valid UTF-8 is read lossily (with a warning) rather than
/// refused, because one corrupt byte should not stop a dream.
pub fn load_corpus(
    store: &Path,
    opts: &DreamOptions,
) -> Result<(Corpus, IngestReport), DreamError> {
    let mem_dir = store.join(layout::MEMORIES);
    if !mem_dir.is_dir() {
        return Err(DreamError::NoMemories(store.to_path_buf()));
    }
    let files = layout::list_memory_files(store).map_err(|source| DreamError::Io {
        path: mem_dir.clone(),
        source,
    })?;
    let per_file: Vec<Result<Vec<MemoryEntry>, DreamError>> = files
        .par_iter()
        .map(|rel| {
            let path = mem_dir.join(rel);
            let bytes = std::fs::read(&path).map_err(|source| DreamError::Io {
                path: path.clone(),
                source,
            })?;
            let text = match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(file = %path.display(), "memory file is not valid UTF-8; invalid bytes replaced");
                    String::from_utf8_lossy(e.as_bytes()).into_owned()
                }
            };
            Ok(entry::parse(&text)
                .blocks
                .into_iter()
                .filter_map(|b| match b {
                    entry::Block::Entry { entry, .. } => Some(MemoryEntry {
                        path: rel.clone(),
                        entry,
                    }),
                    entry::Block::Raw(_) => None,
                })
                .collect())
        })
        .collect();
    let mut memories = Vec::new();
    for f in per_file {
        memories.extend(f?);
    }
    let (sessions, report) = read_sessions(&store.join(layout::SESSIONS), opts.since)?;
    Ok((Corpus { memories, sessions }, report))
}

/// The `*.jsonl` files directly in `dir`, sorted; empty when `dir` is missing.
fn list_jsonl(dir: &Path) -> Result<Vec<PathBuf>, DreamError> {
    let io = |source| DreamError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(io)?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".jsonl") else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        // The stem becomes the session id that evidence quotes and a
        // reviewer reads: a name with control, bidirectional or path
        // characters would make the patch lie about where it came from.
        if !layout::check_session_name(stem) {
            tracing::warn!(file = ?name, "transcript skipped: its name is not a session name (letters, digits, '-', '_', '.')");
            continue;
        }
        if ent.file_type().map_err(io)?.is_file() {
            out.push(ent.path());
        }
    }
    out.sort();
    Ok(out)
}

fn merge_report(into: &mut IngestReport, from: IngestReport) {
    into.files += from.files;
    into.lines += from.lines;
    into.bad_json += from.bad_json;
    into.bad_utf8 += from.bad_utf8;
    into.unknown_shape += from.unknown_shape;
    into.skipped_sessions += from.skipped_sessions;
    for s in from.samples {
        if into.samples.len() < MAX_SAMPLES {
            into.samples.push(s);
        }
    }
}

/// What one line turned out to be.
enum Line {
    /// A message: role, content, timestamp, agent.
    Message {
        role: Role,
        content: Value,
        ts: Option<DateTime<Utc>>,
        agent: Option<String>,
    },
    Outcome {
        status: Outcome,
        summary: Option<String>,
        ts: Option<DateTime<Utc>>,
    },
    /// A line of a known kind that carries nothing dreaming needs.
    Skip { ts: Option<DateTime<Utc>> },
    /// Valid JSON that neither format knows; the text says why.
    Unknown(&'static str),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    User,
    Assistant,
}

fn parse_ts(v: Option<&Value>) -> Option<DateTime<Utc>> {
    v.and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn parse_role(s: Option<&str>) -> Option<Role> {
    match s {
        Some("user") => Some(Role::User),
        Some("assistant") => Some(Role::Assistant),
        _ => None,
    }
}

/// Classifies one JSON line into the canonical or Claude Code shape.
fn classify(mut v: Value) -> Line {
    let Some(obj) = v.as_object_mut() else {
        return Line::Unknown("not a JSON object");
    };
    let ts = parse_ts(obj.get("ts")).or_else(|| parse_ts(obj.get("timestamp")));
    let agent = obj.get("agent").and_then(Value::as_str).map(str::to_string);
    let kind = obj.get("type").and_then(Value::as_str).map(str::to_string);
    match kind.as_deref() {
        Some("outcome") => {
            let status = match obj.get("status").and_then(Value::as_str) {
                Some("succeeded") => Outcome::Succeeded,
                Some("failed") => Outcome::Failed,
                _ => return Line::Unknown("outcome line without status succeeded|failed"),
            };
            let summary = obj
                .get("summary")
                .and_then(Value::as_str)
                .map(str::to_string);
            return Line::Outcome {
                status,
                summary,
                ts,
            };
        }
        Some("user") | Some("assistant") if obj.contains_key("message") => {
            // Claude Code. Side chains are a sub-agent's own conversation,
            // interleaved in the file; mixing them into this session's event
            // order would invent tool sequences that never ran together.
            if obj.get("isSidechain").and_then(Value::as_bool) == Some(true) {
                return Line::Skip { ts };
            }
            let Some(msg) = obj.get_mut("message").and_then(Value::as_object_mut) else {
                return Line::Unknown("`message` is not an object");
            };
            let role = parse_role(msg.get("role").and_then(Value::as_str))
                .or_else(|| parse_role(kind.as_deref()));
            let Some(role) = role else {
                return Line::Unknown("message role is not user|assistant");
            };
            let Some(content) = msg.remove("content") else {
                return Line::Unknown("message has no content");
            };
            return Line::Message {
                role,
                content,
                ts,
                agent,
            };
        }
        _ => {}
    }
    if let Some(role) = obj.get("role").and_then(Value::as_str) {
        let Some(role) = parse_role(Some(role)) else {
            if role == "system" {
                return Line::Skip { ts };
            }
            return Line::Unknown("role is not user|assistant|system");
        };
        let Some(content) = obj.remove("content") else {
            return Line::Unknown("message has no content");
        };
        return Line::Message {
            role,
            content,
            ts,
            agent,
        };
    }
    if kind.is_some() {
        // Claude Code writes other line types (summary, system,
        // file-history-snapshot, …): known, nothing to read.
        return Line::Skip { ts };
    }
    Line::Unknown("neither a message, an outcome nor a Claude Code line")
}

/// Text of a `tool_result` content: a string, or the text blocks joined.
fn result_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => {
            let mut out = String::new();
            for b in blocks {
                if let Some(t) = b.get("text").and_then(Value::as_str) {
                    if !out.is_empty() {
                        out.push('\n');
                    }
                    out.push_str(t);
                }
            }
            out
        }
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Builds one session while its lines stream by.
struct Builder {
    stem: String,
    agent: Option<String>,
    started: Option<DateTime<Utc>>,
    ended: Option<DateTime<Utc>>,
    events: Vec<Event>,
    /// tool_use id → index into `events`, for attaching results.
    calls: BTreeMap<String, usize>,
    outcome: Outcome,
    outcome_summary: Option<String>,
    outcome_at: Option<LineRef>,
    recognised: bool,
}

impl Builder {
    fn new(stem: String) -> Self {
        Builder {
            stem,
            agent: None,
            started: None,
            ended: None,
            events: Vec::new(),
            calls: BTreeMap::new(),
            outcome: Outcome::Unknown,
            outcome_summary: None,
            outcome_at: None,
            recognised: false,
        }
    }

    fn at(&self, line: u64) -> LineRef {
        LineRef {
            session: self.stem.clone(),
            line,
        }
    }

    fn see_ts(&mut self, ts: Option<DateTime<Utc>>) {
        if let Some(t) = ts {
            if self.started.is_none() {
                self.started = Some(t);
            }
            self.ended = Some(t);
        }
    }

    fn push_text(&mut self, role: Role, text: &str, line: u64) {
        if text.trim().is_empty() {
            return;
        }
        let at = self.at(line);
        let text = text.to_string();
        self.events.push(match role {
            Role::User => Event::UserText { text, at },
            Role::Assistant => Event::AssistantText { text, at },
        });
    }

    fn message(&mut self, role: Role, content: Value, line: u64) {
        match content {
            Value::String(s) => self.push_text(role, &s, line),
            Value::Array(blocks) => {
                for b in blocks {
                    self.block(role, b, line);
                }
            }
            _ => {}
        }
    }

    fn block(&mut self, role: Role, mut b: Value, line: u64) {
        let kind = b.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "text" => {
                if let Some(t) = b.get("text").and_then(Value::as_str) {
                    self.push_text(role, t, line);
                }
            }
            "tool_use" => {
                let id = b
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let name = b
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let input = b
                    .as_object_mut()
                    .and_then(|o| o.remove("input"))
                    .unwrap_or(Value::Null);
                if !id.is_empty() {
                    self.calls.insert(id.clone(), self.events.len());
                }
                let at = self.at(line);
                self.events.push(Event::Tool(ToolCall {
                    id,
                    name,
                    input,
                    at,
                    result: None,
                    is_error: false,
                    result_at: None,
                }));
            }
            "tool_result" => {
                let id = b.get("tool_use_id").and_then(Value::as_str).unwrap_or("");
                let Some(&idx) = self.calls.get(id) else {
                    // A result for a call this file never showed (a
                    // truncated transcript): nothing to attach it to.
                    return;
                };
                let text = result_text(b.get("content").unwrap_or(&Value::Null));
                let is_error = b.get("is_error").and_then(Value::as_bool).unwrap_or(false);
                let at = self.at(line);
                if let Some(Event::Tool(call)) = self.events.get_mut(idx) {
                    call.result = Some(text);
                    call.is_error = is_error;
                    call.result_at = Some(at);
                }
            }
            // `thinking`, `redacted_thinking`, images and block types
            // added later carry nothing the analyses read.
            _ => {}
        }
    }

    fn finish(self) -> Option<Session> {
        if !self.recognised {
            return None;
        }
        Some(Session {
            id: self.stem,
            agent: self.agent.unwrap_or_default(),
            started: self.started,
            ended: self.ended,
            events: self.events,
            outcome: self.outcome,
            outcome_summary: self.outcome_summary,
            outcome_at: self.outcome_at,
        })
    }
}

/// Reads one transcript. `None` when the file held no usable line.
fn read_session_file(path: &Path) -> Result<(Option<Session>, IngestReport), DreamError> {
    let io = |source| DreamError::Io {
        path: path.to_path_buf(),
        source,
    };
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    let file = std::fs::File::open(path).map_err(io)?;
    let reader = std::io::BufReader::with_capacity(64 * 1024, file);
    read_transcript_bounded(&stem, reader, MAX_LINE_BYTES).map_err(io)
}

/// The longest transcript line read, in bytes. A longer line is skipped
/// without being held in memory and counted as bad JSON: one runaway tool
/// output must not make a dream pod's memory use grow with it.
pub const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;

/// Reads one transcript from `reader`; `stem` is the session id that
/// [`LineRef`]s name. `None` when no line was usable. Lines longer than
/// [`MAX_LINE_BYTES`] are counted as bad, never buffered whole.
pub fn read_transcript(
    stem: &str,
    reader: impl BufRead,
) -> std::io::Result<(Option<Session>, IngestReport)> {
    read_transcript_bounded(stem, reader, MAX_LINE_BYTES)
}

/// [`read_transcript`] with the line bound as a parameter, so the fuzzing
/// checks can reach the too-long path with small inputs.
pub(crate) fn read_transcript_bounded(
    stem: &str,
    mut reader: impl BufRead,
    max_line: usize,
) -> std::io::Result<(Option<Session>, IngestReport)> {
    let mut report = IngestReport {
        files: 1,
        ..IngestReport::default()
    };
    let mut b = Builder::new(stem.to_string());
    let mut buf: Vec<u8> = Vec::new();
    let mut line_no: u64 = 0;
    let sample = |report: &mut IngestReport, line: u64, what: &str| {
        if report.samples.len() < MAX_SAMPLES {
            report.samples.push(format!("{stem}.jsonl:{line}: {what}"));
        }
    };
    loop {
        buf.clear();
        let (n, too_long) = read_line_bounded(&mut reader, &mut buf, max_line)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        if too_long {
            report.lines += 1;
            report.bad_json += 1;
            sample(
                &mut report,
                line_no,
                &format!("line is longer than {max_line} bytes; skipped"),
            );
            continue;
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        report.lines += 1;
        let Ok(text) = std::str::from_utf8(&buf) else {
            report.bad_utf8 += 1;
            sample(&mut report, line_no, "not valid UTF-8");
            continue;
        };
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                report.bad_json += 1;
                sample(&mut report, line_no, &format!("not valid JSON ({e})"));
                continue;
            }
        };
        match classify(value) {
            Line::Message {
                role,
                content,
                ts,
                agent,
            } => {
                b.recognised = true;
                b.see_ts(ts);
                if b.agent.is_none() {
                    b.agent = agent;
                }
                b.message(role, content, line_no);
            }
            Line::Outcome {
                status,
                summary,
                ts,
            } => {
                b.recognised = true;
                b.see_ts(ts);
                b.outcome = status;
                b.outcome_summary = summary;
                b.outcome_at = Some(b.at(line_no));
            }
            Line::Skip { ts } => b.see_ts(ts),
            Line::Unknown(why) => {
                report.unknown_shape += 1;
                sample(&mut report, line_no, why);
            }
        }
    }
    // Free the buffer of a very long line before the next file is read.
    drop(buf);
    Ok((b.finish(), report))
}

/// Reads one line (up to and including `\n`) into `buf`. Returns the bytes
/// consumed (0 at the end) and whether the line was longer than `max`
/// bytes (its terminator not counted); such a line is consumed but not kept.
fn read_line_bounded(
    reader: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<(usize, bool)> {
    let mut consumed = 0;
    let mut too_long = false;
    loop {
        let avail = match reader.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            break;
        }
        let (n, done) = match avail.iter().position(|&c| c == b'\n') {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        if !too_long {
            buf.extend_from_slice(&avail[..n]);
            // A `\r` may wait for its `\n` in the next chunk: it is part
            // of the terminator, not of the line.
            let terminator = match (done, buf.ends_with(b"\r\n"), buf.ends_with(b"\r")) {
                (true, true, _) => 2,
                (true, false, _) | (false, _, true) => 1,
                (false, _, false) => 0,
            };
            if buf.len() - terminator > max {
                too_long = true;
                buf.clear();
                buf.shrink_to(64 * 1024);
            }
        }
        reader.consume(n);
        consumed += n;
        if done {
            break;
        }
    }
    Ok((consumed, too_long))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, body: &[u8]) {
        let mut f = std::fs::File::create(dir.join(name)).unwrap();
        f.write_all(body).unwrap();
    }

    #[test]
    fn canonical_format_with_blocks_results_and_outcome() {
        let d = tempfile::tempdir().unwrap();
        let body = concat!(
            r#"{"session":"s-1","agent":"coder","ts":"2026-11-20T10:00:00Z","role":"user","content":"Fix the build"}"#,
            "\n",
            r#"{"session":"s-1","agent":"coder","ts":"2026-11-20T10:00:05Z","role":"assistant","content":[{"type":"thinking","thinking":"hmm"},{"type":"text","text":"Running tests"},{"type":"tool_use","id":"tu_1","name":"bash","input":{"command":"cargo test"}}]}"#,
            "\n",
            r#"{"session":"s-1","agent":"coder","ts":"2026-11-20T10:00:09Z","role":"user","content":[{"type":"tool_result","tool_use_id":"tu_1","content":[{"type":"text","text":"error: linker"}],"is_error":true}]}"#,
            "\n\n",
            r#"{"session":"s-1","type":"outcome","status":"failed","summary":"gave up"}"#,
            "\n"
        );
        write(d.path(), "s-1.jsonl", body.as_bytes());
        let (s, r) = read_sessions(d.path(), None).unwrap();
        assert_eq!(r.lines, 4);
        assert_eq!(r.bad_json + r.bad_utf8 + r.unknown_shape, 0);
        assert_eq!(s.len(), 1);
        let s = &s[0];
        assert_eq!(s.id, "s-1");
        assert_eq!(s.agent, "coder");
        assert_eq!(s.outcome, Outcome::Failed);
        assert_eq!(s.outcome_summary.as_deref(), Some("gave up"));
        assert_eq!(s.outcome_at.as_ref().map(|l| l.line), Some(5));
        assert_eq!(s.events.len(), 3, "thinking is ignored: {:?}", s.events);
        assert!(
            matches!(&s.events[0], Event::UserText { text, at } if text == "Fix the build" && at.line == 1)
        );
        assert!(
            matches!(&s.events[1], Event::AssistantText { text, .. } if text == "Running tests")
        );
        let Event::Tool(call) = &s.events[2] else {
            panic!("expected a tool call")
        };
        assert_eq!(call.name, "bash");
        assert_eq!(call.input["command"], "cargo test");
        assert_eq!(call.result.as_deref(), Some("error: linker"));
        assert!(call.is_error);
        assert_eq!(call.result_at.as_ref().map(|l| l.line), Some(3));
        assert_eq!(
            s.started.map(|t| t.to_rfc3339()),
            Some("2026-11-20T10:00:00+00:00".into())
        );
        assert_eq!(
            s.ended.map(|t| t.to_rfc3339()),
            Some("2026-11-20T10:00:09+00:00".into())
        );
    }

    #[test]
    fn claude_code_format() {
        let d = tempfile::tempdir().unwrap();
        let body = concat!(
            r#"{"type":"summary","summary":"Fixing things","leafUuid":"x"}"#,
            "\n",
            r#"{"type":"user","sessionId":"abc","timestamp":"2026-11-21T09:00:00Z","isSidechain":false,"message":{"role":"user","content":"please use UTC"}}"#,
            "\n",
            r#"{"type":"assistant","sessionId":"abc","timestamp":"2026-11-21T09:00:03Z","isSidechain":false,"message":{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"Bash","input":{"command":"date -u"}}]}}"#,
            "\n",
            r#"{"type":"assistant","sessionId":"abc","timestamp":"2026-11-21T09:00:04Z","isSidechain":true,"message":{"role":"assistant","content":"side chain"}}"#,
            "\n",
            r#"{"type":"user","sessionId":"abc","timestamp":"2026-11-21T09:00:05Z","isSidechain":false,"message":{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"Sat Nov 21 09:00:05 UTC 2026"}]}}"#,
            "\n",
            r#"{"type":"file-history-snapshot","messageId":"m"}"#,
            "\n",
        );
        write(d.path(), "abc.jsonl", body.as_bytes());
        let (s, r) = read_sessions(d.path(), None).unwrap();
        assert_eq!(r.bad_json + r.bad_utf8 + r.unknown_shape, 0, "{r:?}");
        let s = &s[0];
        assert_eq!(s.events.len(), 2, "{:?}", s.events);
        assert!(matches!(&s.events[0], Event::UserText { text, .. } if text == "please use UTC"));
        let Event::Tool(call) = &s.events[1] else {
            panic!("expected a tool call")
        };
        assert_eq!(call.result.as_deref(), Some("Sat Nov 21 09:00:05 UTC 2026"));
        assert!(!call.is_error);
        assert_eq!(call.result_at.as_ref().map(|l| l.line), Some(5));
        assert_eq!(s.outcome, Outcome::Unknown);
    }

    #[test]
    fn bad_lines_are_counted_and_skipped() {
        let d = tempfile::tempdir().unwrap();
        let mut body = Vec::new();
        body.extend_from_slice(br#"{"role":"user","ts":"2026-11-20T10:00:00Z","content":"ok"}"#);
        body.extend_from_slice(b"\n{\"role\":\"user\",\"content\":\"trunc\n");
        body.extend_from_slice(b"\xff\xfe garbage\n");
        body.extend_from_slice(b"[1,2,3]\n{\"foo\":1}\n");
        body.extend_from_slice(br#"{"role":"assistant","content":"still read"}"#);
        write(d.path(), "s-2.jsonl", &body);
        let (s, r) = read_sessions(d.path(), None).unwrap();
        assert_eq!(r.lines, 6);
        assert_eq!((r.bad_json, r.bad_utf8, r.unknown_shape), (1, 1, 2));
        assert_eq!(r.samples.len(), 4);
        assert!(
            r.samples[0].starts_with("s-2.jsonl:2: not valid JSON"),
            "{:?}",
            r.samples
        );
        assert_eq!(r.samples[1], "s-2.jsonl:3: not valid UTF-8");
        assert_eq!(s[0].events.len(), 2);
        assert!(matches!(&s[0].events[1], Event::AssistantText { at, .. } if at.line == 6));
    }

    #[test]
    fn a_five_megabyte_line_is_read() {
        let d = tempfile::tempdir().unwrap();
        let big = "x".repeat(5 * 1024 * 1024);
        let body = format!(
            "{{\"role\":\"user\",\"content\":\"{big}\"}}\n{{\"role\":\"assistant\",\"content\":\"after\"}}\n"
        );
        write(d.path(), "big.jsonl", body.as_bytes());
        let (s, r) = read_sessions(d.path(), None).unwrap();
        assert_eq!(r.lines, 2);
        assert!(matches!(&s[0].events[0], Event::UserText { text, .. } if text.len() == big.len()));
        assert!(matches!(&s[0].events[1], Event::AssistantText { at, .. } if at.line == 2));
    }

    #[test]
    fn a_line_over_the_bound_is_counted_and_skipped() {
        let body = concat!(
            r#"{"role":"user","content":"short"}"#,
            "\n",
            r#"{"role":"user","content":"this line is longer than the bound"}"#,
            "\r\n",
            r#"{"role":"assistant","content":"after"}"#,
        );
        let (s, r) = read_transcript_bounded("t", body.as_bytes(), 40).unwrap();
        assert_eq!((r.lines, r.bad_json), (3, 1));
        assert_eq!(
            r.samples,
            vec!["t.jsonl:2: line is longer than 40 bytes; skipped"]
        );
        let s = s.unwrap();
        assert_eq!(s.events.len(), 2);
        assert!(matches!(&s.events[1], Event::AssistantText { at, .. } if at.line == 3));
        // Exactly at the bound (terminator not counted) is read.
        let line = r#"{"role":"user","content":"x"}"#;
        let (s, r) =
            read_transcript_bounded("t", format!("{line}\r\n").as_bytes(), line.len()).unwrap();
        assert_eq!(
            (r.lines, r.bad_json, s.map(|s| s.events.len())),
            (1, 0, Some(1))
        );
        // Also when the `\r` and the `\n` arrive in different reads.
        let body = format!("{line}\r\n");
        let split = std::io::BufReader::with_capacity(line.len() + 1, body.as_bytes());
        let (s, r) = read_transcript_bounded("t", split, line.len()).unwrap();
        assert_eq!(
            (r.lines, r.bad_json, s.map(|s| s.events.len())),
            (1, 0, Some(1))
        );
    }

    #[test]
    fn since_filters_and_order_is_by_start_then_id() {
        let d = tempfile::tempdir().unwrap();
        for (name, ts) in [
            ("b", "2026-11-22T00:00:00Z"),
            ("a", "2026-11-22T00:00:00Z"),
            ("c", "2026-11-21T00:00:00Z"),
            ("old", "2026-10-01T00:00:00Z"),
        ] {
            let line = format!("{{\"ts\":\"{ts}\",\"role\":\"user\",\"content\":\"hi\"}}\n");
            write(d.path(), &format!("{name}.jsonl"), line.as_bytes());
        }
        write(d.path(), "notes.txt", b"ignored");
        write(
            d.path(),
            "evil\u{202E}lsonj.jsonl",
            b"{\"role\":\"user\",\"content\":\"x\"}\n",
        );
        write(
            d.path(),
            "a b.jsonl",
            b"{\"role\":\"user\",\"content\":\"x\"}\n",
        );
        let since = DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let (s, r) = read_sessions(d.path(), Some(since)).unwrap();
        let ids: Vec<_> = s.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, vec!["c", "a", "b"]);
        assert_eq!(r.skipped_sessions, 1);
        assert_eq!(r.files, 4);
    }

    #[test]
    fn load_corpus_needs_memories_but_not_sessions() {
        let d = tempfile::tempdir().unwrap();
        let err = load_corpus(d.path(), &DreamOptions::default()).unwrap_err();
        assert!(matches!(err, DreamError::NoMemories(_)));
        std::fs::create_dir_all(d.path().join("memories/team")).unwrap();
        write(&d.path().join("memories"), "a.md", b"# A\n\n- one\n- two\n");
        write(&d.path().join("memories/team"), "b.md", b"Para one.\n");
        let (c, r) = load_corpus(d.path(), &DreamOptions::default()).unwrap();
        let keys: Vec<_> = c.memories.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(keys, vec!["a.md", "a.md", "team/b.md"]);
        assert!(c.sessions.is_empty());
        assert_eq!(r.files, 0);
    }
}
