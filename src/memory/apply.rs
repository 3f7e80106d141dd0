//! Applying a patch, and rolling back, atomically across files and safely
//! across crashes (DESIGN §4).
//!
//! A write goes in this order, under the store lock:
//! 1. the **intent** — the new content of every changed file and the
//!    journal record — is written to `.reverie/intent.json` (temporary
//!    file, fsync, rename, fsync of `.reverie/`);
//! 2. each new file is written beside its target and renamed over it
//!    (file and directory fsynced);
//! 3. the journal record is written, then `.reverie/revision` is bumped;
//! 4. the intent is removed.
//!
//! A crash before step 1 completes leaves the old revision (a half-written
//! intent is only a temporary file, removed on recovery). A crash after it
//! is rolled forward by [`Store::open`] or the next apply/rollback, which
//! redo steps 2–4; each is idempotent, so the store converges to exactly
//! the new revision.
//!
//! Fault points, for crash tests: when `REVERIE_FAULT_POINT` names one of
//! them, the process aborts there (or blocks until killed, see
//! [`fault_point`]).
//! - `mid-intent`: intent written to its temporary file, not yet renamed;
//! - `after-intent`: intent in place, no memory file written;
//! - `after-first-rename`: the first changed file renamed into place;
//! - `before-journal`: every file in place, no journal record;
//! - `after-journal`: journal record written, revision not bumped;
//! - `after-revision`: revision bumped, intent not yet removed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::edit::{plan, EditError};
use super::journal::{
    live_spec_hashes, read_heads, read_journal, write_record, Action, FileRecord, JournalRecord,
};
use super::layout::{check_memory_path, resolve_no_symlinks};
use super::lock::StoreLock;
use super::patch::{spec_hash, validate_spec, PatchError};
use super::store::{
    fsync_dir, read_optional, sha256_hex, temp_path, write_atomic, write_revision, Store,
    StoreError, StoreStats,
};
use crate::api::memorypatch::{MemoryPatch, MemoryPatchSpec};

/// Every fault point, in the order a write passes them.
pub const FAULT_POINTS: &[&str] = &[
    "mid-intent",
    "after-intent",
    "after-first-rename",
    "before-journal",
    "after-journal",
    "after-revision",
];

/// Environment variable that names the fault point to abort at.
pub const FAULT_ENV: &str = "REVERIE_FAULT_POINT";

/// The intent file below `.reverie/`.
pub const INTENT_FILE: &str = "intent.json";

/// Environment variable that says what a fault point does: `abort` (the
/// default) or `block`.
pub const FAULT_ACTION_ENV: &str = "REVERIE_FAULT_ACTION";

/// The line a blocking fault point prints on stderr, followed by a space
/// and the point's name.
pub const FAULT_REACHED: &str = "reverie: fault point reached:";

/// Stops the process at fault point `name` when `REVERIE_FAULT_POINT` names
/// it; does nothing otherwise (only crash tests set the variable). With
/// `REVERIE_FAULT_ACTION=block` it prints [`FAULT_REACHED`] and sleeps
/// until killed, so a test can send SIGKILL at exactly this point (an
/// abort runs no handler either, but a kill from outside is what a node
/// failure or an OOM kill does); otherwise it aborts. Shared by every
/// fault point of the crate (apply, publish, the controllers).
pub fn fault_point(name: &str) {
    if !std::env::var(FAULT_ENV).is_ok_and(|v| v == name) {
        return;
    }
    if std::env::var(FAULT_ACTION_ENV).is_ok_and(|v| v == "block") {
        tracing::error!(point = name, "blocking at fault point until killed");
        eprintln!("{FAULT_REACHED} {name}");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    tracing::error!(point = name, "aborting at fault point");
    std::process::abort();
}

/// Why a patch or rollback was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The patch is invalid (exit code 2).
    #[error(transparent)]
    Invalid(#[from] PatchError),
    /// A precondition failed, or the patch does not fit the store.
    #[error(transparent)]
    Edit(#[from] EditError),
    /// The rollback target is not a revision of this store (exit code 2).
    #[error("cannot roll back to revision {to}: {message}")]
    BadRevision { to: u64, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApplyError {
    /// The process exit code: 2 invalid input, 3 failed precondition, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            ApplyError::Invalid(_) | ApplyError::BadRevision { .. } => 2,
            ApplyError::Edit(EditError::Conflict { .. }) => 3,
            ApplyError::Edit(EditError::Invalid { .. }) => 2,
            ApplyError::Edit(EditError::Store(_)) | ApplyError::Store(_) => 1,
        }
    }
}

/// What an apply or rollback did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyOutcome {
    /// The store's revision afterwards.
    pub revision: u64,
    /// Number of entries in all memory files afterwards.
    pub entries: usize,
    /// Total bytes of all memory files afterwards.
    pub bytes: u64,
    /// Files whose bytes changed, relative to `memories/`.
    pub files_changed: Vec<String>,
    /// The patch had been applied before; nothing was done.
    pub already_applied: bool,
    /// Ops that changed nothing (adds of entries already present).
    #[serde(skip)]
    pub noops: usize,
}

impl ApplyOutcome {
    fn new(revision: u64, stats: StoreStats, files_changed: Vec<String>) -> Self {
        ApplyOutcome {
            revision,
            entries: stats.entries,
            bytes: stats.bytes,
            files_changed,
            already_applied: false,
            noops: 0,
        }
    }
}

/// A write that has been decided and is being carried out.
#[derive(Serialize, Deserialize, Debug)]
struct Intent {
    record: JournalRecord,
    /// New content of each changed file; `None` removes it.
    files: BTreeMap<String, Option<String>>,
}

/// Applies `patch` with the current time in its journal record.
pub fn apply(store: &Store, patch: &MemoryPatch) -> Result<ApplyOutcome, ApplyError> {
    apply_at(store, patch, Utc::now())
}

/// Applies `patch` all or nothing; `now` is the time recorded in the
/// journal. Re-applying a patch whose effect is in place (same spec hash)
/// does nothing and says so.
pub fn apply_at(
    store: &Store,
    patch: &MemoryPatch,
    now: DateTime<Utc>,
) -> Result<ApplyOutcome, ApplyError> {
    validate_spec(&patch.spec)?;
    let name = patch.metadata.name.clone().unwrap_or_default();
    let _lock = StoreLock::acquire(store)?;
    recover_locked(store)?;
    let rev = store.revision()?;
    let hash = spec_hash(&patch.spec);
    if is_applied_at(store, rev, &hash)? {
        tracing::info!(patch = %name, revision = rev, "patch already applied");
        let mut out = ApplyOutcome::new(rev, store.stats()?, Vec::new());
        out.already_applied = true;
        return Ok(out);
    }
    if patch.spec.base_revision != rev {
        tracing::debug!(
            base = patch.spec.base_revision,
            revision = rev,
            "patch was proposed against another revision; preconditions decide"
        );
    }
    let plan = plan(store, &patch.spec)?;
    if plan.files.is_empty() {
        let mut out = ApplyOutcome::new(rev, store.stats()?, Vec::new());
        out.noops = plan.noops;
        return Ok(out);
    }
    let files: BTreeMap<String, Option<String>> = plan
        .files
        .iter()
        .map(|(p, f)| (p.clone(), f.after.clone()))
        .collect();
    let record = JournalRecord {
        revision: rev + 1,
        time: now.to_rfc3339_opts(SecondsFormat::Secs, true),
        action: Action::Apply,
        patch: name.clone(),
        spec_hash: hash,
        base_revision: patch.spec.base_revision,
        rolled_back_to: None,
        ops: patch.spec.ops.clone(),
        inverse_ops: plan.inverse_ops,
        files: plan
            .files
            .iter()
            .map(|(p, f)| file_record(p, f.before.as_deref(), f.after.as_deref()))
            .collect(),
        compacted: None,
    };
    let changed = record.paths();
    commit(store, Intent { record, files })?;
    tracing::info!(patch = %name, revision = rev + 1, files = changed.len(), "patch applied");
    let mut out = ApplyOutcome::new(rev + 1, store.stats()?, changed);
    out.noops = plan.noops;
    Ok(out)
}

/// Whether a patch with this spec is applied in the store's current state.
pub fn is_applied(store: &Store, spec: &MemoryPatchSpec) -> Result<bool, StoreError> {
    is_applied_at(store, store.revision()?, &spec_hash(spec))
}

fn is_applied_at(store: &Store, rev: u64, hash: &str) -> Result<bool, StoreError> {
    if rev == 0 {
        return Ok(false);
    }
    Ok(live_spec_hashes(&read_heads(store, rev)?).contains(hash))
}

fn file_record(path: &str, before: Option<&str>, after: Option<&str>) -> FileRecord {
    FileRecord {
        path: path.to_string(),
        sha256_before: before.map(|b| sha256_hex(b.as_bytes())),
        sha256_after: after.map(|a| sha256_hex(a.as_bytes())),
        previous: before.map(str::to_string),
    }
}

/// Restores the memory files of revision `to`, as a new revision, with the
/// current time in its journal record.
pub fn rollback(store: &Store, to: u64) -> Result<ApplyOutcome, ApplyError> {
    rollback_at(store, to, Utc::now())
}

/// Restores the memory files of revision `to` as a new revision (itself
/// journaled, so it can be rolled back too). Files that changed outside
/// reverie since their last journaled write are restored all the same,
/// with a warning.
pub fn rollback_at(store: &Store, to: u64, now: DateTime<Utc>) -> Result<ApplyOutcome, ApplyError> {
    let _lock = StoreLock::acquire(store)?;
    recover_locked(store)?;
    let rev = store.revision()?;
    if to > rev {
        return Err(ApplyError::BadRevision {
            to,
            message: format!("the store is at revision {rev}"),
        });
    }
    let later = read_journal(store, to + 1, rev)?;
    if later.len() as u64 != rev - to {
        return Err(ApplyError::BadRevision {
            to,
            message: format!(
                "the journal lacks records between revision {to} and {rev} (found {})",
                later.len()
            ),
        });
    }
    if let Some(c) = later.iter().rev().find(|r| r.compacted.is_some()) {
        return Err(ApplyError::BadRevision {
            to,
            message: format!(
                "revision {}'s record was compacted by the store's revision retention, so \
                 revisions before it cannot be restored; the oldest revision that can be \
                 restored is {}",
                c.revision, c.revision
            ),
        });
    }
    // The earliest record after `to` that touched a file holds its content at `to`.
    let mut target: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut last_hash: BTreeMap<String, Option<String>> = BTreeMap::new();
    for r in later.iter().rev() {
        for f in &r.files {
            target.insert(f.path.clone(), f.previous.clone());
            last_hash
                .entry(f.path.clone())
                .or_insert_with(|| f.sha256_after.clone());
        }
    }
    let mut files = BTreeMap::new();
    let mut file_records = Vec::new();
    for (path, want) in target {
        let full = memory_target(store, &path)?;
        let current = read_optional(&full)?;
        if current == want {
            continue;
        }
        let current_hash = current.as_deref().map(|c| sha256_hex(c.as_bytes()));
        if last_hash.get(&path) != Some(&current_hash) {
            tracing::warn!(file = %path, "file changed outside reverie since its last journaled write; restoring anyway");
        }
        file_records.push(file_record(&path, current.as_deref(), want.as_deref()));
        files.insert(path, want);
    }
    if files.is_empty() {
        return Ok(ApplyOutcome::new(rev, store.stats()?, Vec::new()));
    }
    let record = JournalRecord {
        revision: rev + 1,
        time: now.to_rfc3339_opts(SecondsFormat::Secs, true),
        action: Action::Rollback,
        patch: format!("rollback-to-{to}"),
        spec_hash: sha256_hex(format!("rollback:{to}@{rev}").as_bytes()),
        base_revision: rev,
        rolled_back_to: Some(to),
        ops: Vec::new(),
        inverse_ops: Vec::new(),
        files: file_records,
        compacted: None,
    };
    let changed = record.paths();
    commit(store, Intent { record, files })?;
    tracing::info!(to, revision = rev + 1, "rolled back");
    Ok(ApplyOutcome::new(rev + 1, store.stats()?, changed))
}

/// The absolute path of a memory file named in an intent or journal,
/// checked again (the state directory is on the same volume as anything
/// an agent may write).
fn memory_target(store: &Store, rel: &str) -> Result<PathBuf, StoreError> {
    let corrupt = |message: String| StoreError::Corrupt {
        path: rel.to_string(),
        message,
    };
    let rel = check_memory_path(rel).map_err(|e| corrupt(e.to_string()))?;
    resolve_no_symlinks(&store.memories_dir(), &rel).map_err(|e| corrupt(e.to_string()))
}

/// Records the intent durably, then carries it out.
fn commit(store: &Store, intent: Intent) -> Result<(), StoreError> {
    let dir = store.ensure_state_dir()?;
    let path = dir.join(INTENT_FILE);
    let bytes = serde_json::to_vec(&intent).map_err(|e| StoreError::Corrupt {
        path: path.display().to_string(),
        message: format!("cannot serialise the intent: {e}"),
    })?;
    let tmp = temp_path(&path);
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
        f.write_all(&bytes).map_err(|e| StoreError::io(&tmp, e))?;
        f.sync_all().map_err(|e| StoreError::io(&tmp, e))?;
    }
    fault_point("mid-intent");
    std::fs::rename(&tmp, &path).map_err(|e| StoreError::io(&path, e))?;
    fsync_dir(&dir)?;
    fault_point("after-intent");
    roll_forward(store, &intent)
}

/// Carries out an intent: every step can be repeated after a crash.
fn roll_forward(store: &Store, intent: &Intent) -> Result<(), StoreError> {
    for (i, (rel, content)) in intent.files.iter().enumerate() {
        let full = memory_target(store, rel)?;
        match content {
            Some(text) => {
                if let Some(parent) = full.parent() {
                    create_dirs(&store.memories_dir(), parent)?;
                }
                write_atomic(&full, text.as_bytes())?;
            }
            None => {
                match std::fs::remove_file(&full) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::io(&full, e)),
                }
                if let Some(parent) = full.parent() {
                    if parent.is_dir() {
                        fsync_dir(parent)?;
                    }
                }
            }
        }
        if i == 0 {
            fault_point("after-first-rename");
        }
    }
    fault_point("before-journal");
    write_record(store, &intent.record)?;
    fault_point("after-journal");
    write_revision(store, intent.record.revision)?;
    fault_point("after-revision");
    let dir = store.state_dir();
    let path = dir.join(INTENT_FILE);
    std::fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
    fsync_dir(&dir)
}

/// Creates `dir` (below `base`) and the directories above it, flushing
/// each parent so the new entries survive a crash.
fn create_dirs(base: &std::path::Path, dir: &std::path::Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        if parent != base {
            create_dirs(base, parent)?;
        }
        std::fs::create_dir(dir).map_err(|e| StoreError::io(dir, e))?;
        fsync_dir(parent)?;
    }
    Ok(())
}

/// Rolls a leftover intent forward and removes a half-written one. The
/// caller holds the store lock.
fn recover_locked(store: &Store) -> Result<(), StoreError> {
    let dir = store.state_dir();
    let path = dir.join(INTENT_FILE);
    let tmp = temp_path(&path);
    if tmp.exists() {
        tracing::warn!(path = %tmp.display(), "removing an incomplete intent (the write it described never started)");
        std::fs::remove_file(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
    }
    let Some(text) = read_optional(&path)? else {
        return Ok(());
    };
    let intent: Intent = serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
        path: path.display().to_string(),
        message: format!("unreadable intent: {e}"),
    })?;
    tracing::warn!(
        revision = intent.record.revision,
        "rolling forward a write interrupted by a crash"
    );
    roll_forward(store, &intent)
}

/// Rolls forward a leftover intent; the caller holds the store lock.
pub(crate) fn recover_with_lock(store: &Store) -> Result<(), StoreError> {
    recover_locked(store)
}

/// Rolls forward an interrupted write, if there is one (taking the lock
/// only then, so readers of a clean store never wait).
pub(crate) fn recover_if_needed(store: &Store) -> Result<(), StoreError> {
    let dir = store.state_dir();
    let path = dir.join(INTENT_FILE);
    if !path.exists() && !temp_path(&path).exists() {
        return Ok(());
    }
    let _lock = StoreLock::acquire(store)?;
    recover_locked(store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::patch::parse_patch;

    fn store(files: &[(&str, &str)]) -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("memories")).unwrap();
        for (p, c) in files {
            let full = d.path().join("memories").join(p);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, c).unwrap();
        }
        let s = Store::open(d.path()).unwrap();
        (d, s)
    }

    fn read(s: &Store, p: &str) -> String {
        std::fs::read_to_string(s.memories_dir().join(p)).unwrap()
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-30T03:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn apply_then_rollback_restores_bytes() {
        let src = "# Notes\n\n- Use UTC.\n- Port is 8080.\n";
        let (_d, s) = store(&[("notes.md", src)]);
        let id = crate::memory::entry_id("Port is 8080.");
        let p = parse_patch(
            &format!("ops:\n- {{op: update, path: notes.md, id: {id}, content: Port is 9090., before: Port is 8080., reason: contradiction}}\n- {{op: add, path: new/x.md, section: S, content: hello, reason: instruction}}\n"),
            "p1",
        )
        .unwrap();
        let out = apply_at(&s, &p, now()).unwrap();
        assert_eq!(out.revision, 1);
        assert_eq!(out.files_changed, vec!["new/x.md", "notes.md"]);
        assert_eq!(
            read(&s, "notes.md"),
            "# Notes\n\n- Use UTC.\n- Port is 9090.\n"
        );
        assert_eq!(read(&s, "new/x.md"), "## S\n\n- hello\n");
        let again = apply_at(&s, &p, now()).unwrap();
        assert!(again.already_applied);
        assert_eq!(again.revision, 1);
        let rb = rollback_at(&s, 0, now()).unwrap();
        assert_eq!(rb.revision, 2);
        assert_eq!(read(&s, "notes.md"), src);
        assert!(!s.memories_dir().join("new/x.md").exists());
        // The rolled-back patch applies again; rolling back the rollback works too.
        let rb2 = rollback_at(&s, 1, now()).unwrap();
        assert_eq!(rb2.revision, 3);
        assert_eq!(read(&s, "new/x.md"), "## S\n\n- hello\n");
        assert!(apply_at(&s, &p, now()).unwrap().already_applied);
        assert!(!s.state_dir().join(INTENT_FILE).exists());
    }

    #[test]
    fn conflict_writes_nothing() {
        let src = "- a\n- b\n";
        let (_d, s) = store(&[("n.md", src)]);
        let id = crate::memory::entry_id("a");
        let p = parse_patch(
            &format!("ops:\n- {{op: add, path: n.md, content: c, reason: instruction}}\n- {{op: delete, path: n.md, id: {id}, before: not a, reason: stale}}\n"),
            "p",
        )
        .unwrap();
        let err = apply_at(&s, &p, now()).unwrap_err();
        assert_eq!(err.exit_code(), 3);
        assert!(
            err.to_string().starts_with("spec.ops[1] (delete) n.md#"),
            "{err}"
        );
        assert_eq!(read(&s, "n.md"), src);
        assert_eq!(s.revision().unwrap(), 0);
        assert!(matches!(
            rollback_at(&s, 5, now()),
            Err(ApplyError::BadRevision { .. })
        ));
    }

    #[test]
    fn merge_and_move_across_files() {
        let (_d, s) = store(&[
            ("a.md", "## P\n- x one\n- keep\n"),
            ("b.md", "- x two\n\n## Shared\n- s\n"),
        ]);
        let (x1, x2, keep) = (
            crate::memory::entry_id("x one"),
            crate::memory::entry_id("x two"),
            crate::memory::entry_id("keep"),
        );
        let p = parse_patch(
            &format!("ops:\n- {{op: merge, path: a.md, ids: [{x1}, \"b.md#{x2}\"], content: x both, before: \"x one\\n\\nx two\", reason: duplicate}}\n- {{op: move, path: a.md, id: {keep}, to: b.md, section: Shared, reason: shared-preference}}\n"),
            "p",
        )
        .unwrap();
        apply_at(&s, &p, now()).unwrap();
        assert_eq!(read(&s, "a.md"), "## P\n- x both\n");
        assert_eq!(read(&s, "b.md"), "## Shared\n- s\n- keep\n");
    }

    #[test]
    fn move_without_section_keeps_its_section() {
        let (_d, s) = store(&[("a.md", "## Tips\n* one\n\n## Other\n- two\n")]);
        let one = crate::memory::entry_id("one");
        let two = crate::memory::entry_id("two");
        let p = parse_patch(
            &format!("ops:\n- {{op: move, path: a.md, id: {one}, to: b.md, reason: stale}}\n- {{op: move, path: a.md, id: {two}, to: a.md, section: Tips, reason: stale}}\n"),
            "p",
        )
        .unwrap();
        let out = apply_at(&s, &p, now()).unwrap();
        assert_eq!(out.files_changed, vec!["a.md", "b.md"]);
        assert_eq!(read(&s, "a.md"), "## Tips\n- two\n\n## Other\n");
        assert_eq!(read(&s, "b.md"), "## Tips\n\n* one\n");
        // The journal holds the inverse ops, last op first.
        let rec = crate::memory::journal::read_record(&s, 1).unwrap().unwrap();
        let inv: Vec<_> = rec
            .inverse_ops
            .iter()
            .map(|o| (o.path.clone(), o.to.clone(), o.section.clone()))
            .collect();
        assert_eq!(
            inv,
            vec![
                ("a.md".into(), Some("a.md".into()), Some("Other".into())),
                ("b.md".into(), Some("a.md".into()), Some("Tips".into())),
            ]
        );
    }
}
