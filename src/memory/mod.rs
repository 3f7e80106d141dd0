//! The memory store on disk (DESIGN §3): entries, patch apply, journal.

pub mod entry;
pub mod layout;

pub use entry::{entry_id, parse, Entry, MemoryFile};
