//! The dream engine (DESIGN §6): ingest, analyses, patch emitter.
//!
//! Data flows one way: transcripts + memory → findings → ops → patch.

pub mod session;

pub use session::{Event, IngestReport, LineRef, Outcome, Session, ToolCall};
