//! The dream engine (DESIGN §6): ingest, analyses, patch emitter.
//!
//! Data flows one way: transcripts + memory → findings → ops → patch.

pub mod session;

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

/// Everything an analysis reads. Analyses are pure functions of this.
#[derive(Clone, Debug, Default)]
pub struct Corpus {
    /// Entries in (path, file order) order.
    pub memories: Vec<MemoryEntry>,
    /// Sessions sorted by (start time, id).
    pub sessions: Vec<Session>,
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
        }
    }
}
