//! The session model every analysis reads: transcripts (DESIGN §5) reduced
//! to what dreaming needs. Filled by `ingest`.

/// Where a piece of a session came from: file stem and 1-based line.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LineRef {
    pub session: String,
    pub line: u64,
}

/// One tool call and, once seen, its result.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The tool input as JSON.
    pub input: serde_json::Value,
    pub at: LineRef,
    /// The result text, when a `tool_result` with this id was seen.
    pub result: Option<String>,
    pub is_error: bool,
    pub result_at: Option<LineRef>,
}

/// What happened in a session, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Text a user (a person, or a lead delegating) wrote.
    UserText { text: String, at: LineRef },
    /// Text the agent wrote.
    AssistantText { text: String, at: LineRef },
    /// A tool call (with its result when one came back).
    Tool(ToolCall),
}

/// How a session ended, from its `outcome` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    /// No outcome line (still running, or crashed).
    Unknown,
}

/// One parsed transcript.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    /// The session's name (the file stem, or the `session` field).
    pub id: String,
    /// The agent that ran it (the `agent` field; empty when unknown).
    pub agent: String,
    /// RFC 3339 timestamp of the first line with one, if any.
    pub started: Option<chrono::DateTime<chrono::Utc>>,
    /// RFC 3339 timestamp of the last line with one, if any.
    pub ended: Option<chrono::DateTime<chrono::Utc>>,
    pub events: Vec<Event>,
    pub outcome: Outcome,
    pub outcome_summary: Option<String>,
    pub outcome_at: Option<LineRef>,
}

/// Counts of what the reader skipped, reported in the summary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestReport {
    pub files: usize,
    pub lines: u64,
    /// Lines that were not valid JSON (truncated, garbage).
    pub bad_json: u64,
    /// Lines that were not valid UTF-8.
    pub bad_utf8: u64,
    /// Valid JSON of a shape neither format knows.
    pub unknown_shape: u64,
    /// Sessions left out by `--since`.
    pub skipped_sessions: usize,
    /// First few problems, as `file:line: what`, for the summary.
    pub samples: Vec<String>,
}
