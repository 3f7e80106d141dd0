//! The dream engine (DESIGN §6): ingest, analyses, patch emitter.
//!
//! Data flows one way: transcripts + memory → findings → ops → patch.
//! Every analysis is a pure, deterministic function
//! `find(&Corpus, &DreamOptions) -> Vec<PatchOp>`; `emit` orders them,
//! resolves ops that touch the same entry and builds the `MemoryPatch`.

pub mod budget;
pub mod contradictions;
pub mod duplicates;
pub mod emit;
pub mod errors;
pub mod index;
pub mod ingest;
pub mod llm;
pub mod methods;
pub mod preferences;
pub mod session;
pub mod stale;
pub mod text;

pub use session::{Event, IngestReport, LineRef, Outcome, Session, ToolCall};

use crate::memory::Entry;
use chrono::{DateTime, Utc};

/// One entry of the store as the analyses see it.
#[derive(Clone, Debug, PartialEq)]
pub struct MemoryEntry {
    /// The file, relative to `memories/`, with `/` separators.
    pub path: String,
    pub entry: Entry,
}

impl MemoryEntry {
    /// `path#id`, the form evidence and cross-file merges use.
    pub fn key(&self) -> String {
        format!("{}#{}", self.path, self.entry.id)
    }

    /// An op on this entry (update when `content` is given, else delete),
    /// with `before` set so the apply step can check the entry did not
    /// change since the dream.
    pub(crate) fn op(
        &self,
        content: Option<String>,
        reason: crate::api::Reason,
        superseded_by: Option<String>,
        evidence: Vec<crate::api::Evidence>,
    ) -> crate::api::PatchOp {
        crate::api::PatchOp {
            op: if content.is_some() {
                crate::api::OpKind::Update
            } else {
                crate::api::OpKind::Delete
            },
            path: self.path.clone(),
            section: None,
            id: Some(self.entry.id.clone()),
            ids: None,
            content,
            to: None,
            before: Some(self.entry.text.clone()),
            reason,
            superseded_by,
            evidence,
        }
    }
}

/// Builders shared by the analyses' unit tests.
#[cfg(test)]
pub(crate) mod testutil {
    use super::{Corpus, Event, LineRef, MemoryEntry, Outcome, Session};
    use chrono::{DateTime, Utc};

    /// A corpus of `(path, Markdown body)` files and the given sessions.
    pub(crate) fn corpus(files: &[(&str, &str)], sessions: Vec<Session>) -> Corpus {
        let mut memories = Vec::new();
        for (path, body) in files {
            for e in crate::memory::parse(body).entries() {
                memories.push(MemoryEntry {
                    path: path.to_string(),
                    entry: e.clone(),
                });
            }
        }
        Corpus { memories, sessions }
    }

    /// A succeeded session whose lines are text events made by `event`.
    pub(crate) fn session(
        id: &str,
        agent: &str,
        at: Option<DateTime<Utc>>,
        lines: &[&str],
        event: fn(String, LineRef) -> Event,
    ) -> Session {
        let events = lines
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let at = LineRef {
                    session: id.into(),
                    line: i as u64 + 1,
                };
                event(t.to_string(), at)
            })
            .collect();
        Session {
            id: id.into(),
            agent: agent.into(),
            started: at,
            ended: at,
            events,
            outcome: Outcome::Succeeded,
            outcome_summary: None,
            outcome_at: None,
        }
    }
}

/// Everything an analysis reads. Analyses are pure functions of this.
#[derive(Clone, Debug, Default)]
pub struct Corpus {
    /// Entries in (path, file order) order.
    pub memories: Vec<MemoryEntry>,
    /// Sessions sorted by (start time, id).
    pub sessions: Vec<Session>,
}

impl Corpus {
    /// The memory file an analysis should add to: `default` when it exists
    /// or when none of `aliases` does, else the first alias that exists —
    /// so a store that keeps preferences in `prefs.md` does not grow a
    /// second `preferences.md`.
    pub fn file_like(&self, default: &str, aliases: &[&str]) -> String {
        let exists = |p: &str| self.memories.iter().any(|m| m.path == p);
        if exists(default) {
            return default.to_string();
        }
        aliases
            .iter()
            .find(|a| exists(a))
            .map_or_else(|| default.to_string(), |a| a.to_string())
    }
}

/// Knobs of a dream run (CLI flags map onto these).
#[derive(Clone, Debug)]
pub struct DreamOptions {
    /// Only sessions that started at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Free-text instructions from the MemoryStore/DreamSchedule.
    pub instructions: Option<String>,
    /// A pattern (error, method, preference) must occur in at least this
    /// many distinct sessions to become an op. Default 2.
    pub min_sessions: usize,
    /// Size budget of all memory files together (`--max-bytes`).
    pub max_bytes: Option<u64>,
    /// Size budget of one entry (`--max-entry-bytes`).
    pub max_entry_bytes: Option<u64>,
    /// Name of the store for the patch's `storeRef` (default: the directory name).
    pub store_name: Option<String>,
    /// Jaccard threshold above which two entries are near-duplicates.
    pub duplicate_threshold: f64,
    /// The current time for the patch name and staleness (fixed in tests
    /// so output is byte-identical).
    pub now: Option<DateTime<Utc>>,
}

impl Default for DreamOptions {
    fn default() -> Self {
        DreamOptions {
            since: None,
            instructions: None,
            min_sessions: 2,
            max_bytes: None,
            max_entry_bytes: None,
            store_name: None,
            duplicate_threshold: 0.7,
            now: None,
        }
    }
}

/// What can stop a dream. Bad transcript lines are not errors: they are
/// counted in [`IngestReport`].
#[derive(Debug, thiserror::Error)]
pub enum DreamError {
    #[error("{0}: not a memory store: it has no memories/ directory (create it, or point --store at the directory that holds memories/ and sessions/)")]
    NoMemories(std::path::PathBuf),
    #[error("reading {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("LLM pass: {0}")]
    Llm(String),
}
