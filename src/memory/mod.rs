//! The memory store on disk (DESIGN §3): entries, patch validation, apply
//! with journal and rollback, diff, and the writer lock.
//!
//! - [`store`]: opening a store, its revision, loading and sizing the files;
//! - [`patch`]: reading and validating MemoryPatch manifests;
//! - [`edit`]: computing a patch's effect in memory (preconditions);
//! - [`apply`]: crash-safe, atomic apply and rollback;
//! - [`journal`]: one record per revision, with previous contents;
//! - [`diff`]: the unified diff of a patch;
//! - [`lock`]: the exclusive writer lock;
//! - [`retention`]: compacting old journal records, removing old transcripts.

pub mod apply;
pub mod diff;
pub mod edit;
pub mod entry;
pub mod journal;
pub mod layout;
pub mod lock;
pub mod patch;
pub mod retention;
pub mod store;

pub use apply::{apply, apply_at, rollback, rollback_at, ApplyError, ApplyOutcome};
pub use diff::diff;
pub use entry::{entry_id, parse, Entry, MemoryFile};
pub use patch::{load_patch, parse_patch, validate_spec, PatchError};
pub use store::{Store, StoreError, StoreStats};
