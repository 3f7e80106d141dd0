//! Retention (`MemoryStore.spec.retention`): how much history a store keeps.
//!
//! - **Revisions.** Journal records older than the newest `keep` are
//!   *compacted*, not deleted: their ops, inverse ops and previous file
//!   contents (the bulk of the journal) are dropped, while the head stays,
//!   so `memory log` still shows the whole history and a patch applied long
//!   ago is still recognised when it is applied again. Rolling back across
//!   a compacted record is refused with a message naming the oldest
//!   revision that can still be restored.
//! - **Sessions.** Transcripts beyond the newest `keep` (by modification
//!   time, then name) are removed from `sessions/`.
//!
//! Both run under the store's writer lock, after any interrupted write is
//! rolled forward, and each file is rewritten atomically, so a crash in
//! the middle leaves every record either whole or compacted.

use std::path::Path;

use serde::Serialize;

use super::apply::recover_with_lock;
use super::journal::{read_record, revisions, write_record, Compacted};
use super::lock::StoreLock;
use super::store::{fsync_dir, Store, StoreError};

/// What [`prune`] did.
#[derive(Serialize, Debug, Default, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    /// Revisions whose records were compacted by this run.
    pub revisions_compacted: Vec<u64>,
    /// Transcripts removed, as names below `sessions/`.
    pub sessions_removed: Vec<String>,
    /// Bytes freed on disk (journal and transcripts).
    pub bytes_freed: u64,
}

/// Applies the retention limits; `None` keeps everything of that kind.
pub fn prune(
    store: &Store,
    keep_revisions: Option<u32>,
    keep_sessions: Option<u32>,
) -> Result<PruneReport, StoreError> {
    let _lock = StoreLock::acquire(store)?;
    recover_with_lock(store)?;
    let mut report = PruneReport::default();
    if let Some(keep) = keep_revisions {
        compact_revisions(store, u64::from(keep), &mut report)?;
    }
    if let Some(keep) = keep_sessions {
        remove_sessions(store, keep as usize, &mut report)?;
    }
    Ok(report)
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn compact_revisions(store: &Store, keep: u64, report: &mut PruneReport) -> Result<(), StoreError> {
    let rev = store.revision()?;
    let upto = rev.saturating_sub(keep);
    if upto == 0 {
        return Ok(());
    }
    for r in revisions(store, 1, upto)? {
        let Some(mut record) = read_record(store, r)? else {
            continue;
        };
        if record.compacted.is_some() {
            continue;
        }
        let path = super::journal::record_path(store, r);
        let before = file_len(&path);
        record.compacted = Some(Compacted {
            ops: record.ops.len(),
        });
        record.ops.clear();
        record.inverse_ops.clear();
        for f in &mut record.files {
            f.previous = None;
        }
        write_record(store, &record)?;
        report.bytes_freed += before.saturating_sub(file_len(&path));
        report.revisions_compacted.push(r);
    }
    if !report.revisions_compacted.is_empty() {
        tracing::info!(
            compacted = report.revisions_compacted.len(),
            keep,
            "compacted journal records beyond the retention limit"
        );
    }
    Ok(())
}

fn remove_sessions(store: &Store, keep: usize, report: &mut PruneReport) -> Result<(), StoreError> {
    let dir = store.root().join(super::layout::SESSIONS);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io(&dir, e)),
    };
    let mut sessions = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| StoreError::io(&dir, e))?;
        let name = ent.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".jsonl") {
            continue;
        }
        // symlink_metadata: a link is judged (and removed) as the link,
        // never followed out of the store.
        let meta =
            std::fs::symlink_metadata(ent.path()).map_err(|e| StoreError::io(&ent.path(), e))?;
        if meta.is_dir() {
            continue;
        }
        let mtime = meta.modified().ok();
        sessions.push((mtime, name, meta.len()));
    }
    if sessions.len() <= keep {
        return Ok(());
    }
    // Newest first; ties broken by name so the choice is deterministic.
    sessions.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    let mut removed: Vec<String> = Vec::new();
    for (_, name, len) in sessions.into_iter().skip(keep) {
        let path = dir.join(&name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StoreError::io(&path, e)),
        }
        report.bytes_freed += len;
        removed.push(name);
    }
    fsync_dir(&dir)?;
    removed.sort();
    tracing::info!(
        removed = removed.len(),
        keep,
        "removed transcripts beyond the retention limit"
    );
    report.sessions_removed = removed;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{apply, parse_patch, rollback};

    fn store_with_revisions(n: usize) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("memories")).expect("mkdir");
        std::fs::write(dir.path().join("memories/a.md"), "- one\n").expect("write");
        let store = Store::open(dir.path()).expect("open");
        for i in 0..n {
            let yaml = format!(
                "apiVersion: reverie.dev/v1alpha1\nkind: MemoryPatch\nmetadata:\n  name: p{i}\n\
                 spec:\n  storeRef:\n    name: s\n  baseRevision: {i}\n  summary: add {i}\n  ops:\n\
                 \x20 - op: add\n    path: a.md\n    content: entry number {i}\n    reason: recurring-error\n\
                 \x20   evidence:\n    - session: s1\n      line: 1\n"
            );
            let patch = parse_patch(&yaml, "p").expect("patch");
            apply(&store, &patch).expect("apply");
        }
        (dir, store)
    }

    #[test]
    fn compacts_old_records_and_refuses_rollback_across_them() {
        let (_dir, store) = store_with_revisions(5);
        let report = prune(&store, Some(2), None).expect("prune");
        assert_eq!(report.revisions_compacted, vec![1, 2, 3]);
        assert!(report.bytes_freed > 0);
        // Again: nothing more to do.
        assert!(prune(&store, Some(2), None)
            .expect("prune")
            .revisions_compacted
            .is_empty());
        // The heads survive with their op counts.
        let heads = crate::memory::journal::read_heads(&store, 5).expect("heads");
        assert_eq!(heads.len(), 5);
        assert_eq!(heads[0].op_count(), 1);
        // Revision 3 can be restored (records 4 and 5 are whole), 2 cannot.
        let err = rollback(&store, 2).expect_err("across a compacted record");
        assert!(
            err.to_string()
                .contains("oldest revision that can be restored is 3"),
            "{err}"
        );
        rollback(&store, 3).expect("rollback to 3");
        let text = std::fs::read_to_string(store.memories_dir().join("a.md")).expect("read");
        assert!(
            text.contains("entry number 2") && !text.contains("entry number 3"),
            "{text}"
        );
    }

    #[test]
    fn removes_the_oldest_sessions_beyond_the_limit() {
        let (dir, store) = store_with_revisions(0);
        let sessions = dir.path().join("sessions");
        std::fs::create_dir_all(&sessions).expect("mkdir");
        let base =
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        for (i, name) in ["c", "a", "b", "d"].iter().enumerate() {
            let path = sessions.join(format!("{name}.jsonl"));
            std::fs::write(&path, "{}\n").expect("write");
            let f = std::fs::File::options()
                .write(true)
                .open(&path)
                .expect("open");
            f.set_modified(base + std::time::Duration::from_secs(i as u64))
                .expect("mtime");
        }
        std::fs::write(sessions.join("notes.txt"), "x").expect("write");
        let report = prune(&store, None, Some(2)).expect("prune");
        assert_eq!(report.sessions_removed, vec!["a.jsonl", "c.jsonl"]);
        let mut left: Vec<String> = std::fs::read_dir(&sessions)
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec!["b.jsonl", "d.jsonl", "notes.txt"]);
    }
}
