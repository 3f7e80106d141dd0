//! The journal of applied patches and rollbacks.
//!
//! One JSON file per revision: `.reverie/journal/<revision, 10 digits>.json`,
//! written atomically (temporary file, fsync, rename) before
//! `.reverie/revision` is bumped. A record holds the patch name, its spec
//! hash (to recognise a re-applied patch), the ops and their inverse ops,
//! and for every changed file its SHA-256 before and after and its previous
//! content, so that a rollback restores the exact bytes. Revision 0 is the
//! state before the first record; it has no file.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::store::{read_optional, write_atomic, Store, StoreError};
use crate::api::memorypatch::PatchOp;

/// Directory of the journal below `.reverie/`.
pub const JOURNAL_DIR: &str = "journal";

/// What made a revision.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A MemoryPatch was applied.
    Apply,
    /// The memory files of an earlier revision were restored.
    Rollback,
}

/// One changed file in a journal record.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FileRecord {
    /// Relative to `memories/`.
    pub path: String,
    /// SHA-256 of the file before; `None` when it did not exist.
    pub sha256_before: Option<String>,
    /// SHA-256 of the file after; `None` when it was removed.
    pub sha256_after: Option<String>,
    /// The file's content before (what a rollback writes back).
    pub previous: Option<String>,
}

/// One revision of the store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JournalRecord {
    pub revision: u64,
    /// RFC 3339 time of the apply.
    pub time: String,
    pub action: Action,
    /// The patch's `metadata.name` (`rollback-to-N` for a rollback).
    pub patch: String,
    /// SHA-256 of the patch spec, see [`super::patch::spec_hash`].
    pub spec_hash: String,
    /// The revision the patch was proposed against.
    #[serde(default)]
    pub base_revision: u64,
    /// For a rollback, the revision whose files were restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_to: Option<u64>,
    pub ops: Vec<PatchOp>,
    /// Ops that undo `ops`, in the order to apply them (informational: a
    /// rollback restores `files[].previous`, which is exact).
    pub inverse_ops: Vec<PatchOp>,
    pub files: Vec<FileRecord>,
}

impl JournalRecord {
    /// Paths of the changed files.
    pub fn paths(&self) -> Vec<String> {
        self.files.iter().map(|f| f.path.clone()).collect()
    }
}

/// Where the record of `revision` is stored.
pub fn record_path(store: &Store, revision: u64) -> PathBuf {
    store
        .state_dir()
        .join(JOURNAL_DIR)
        .join(format!("{revision:010}.json"))
}

/// Writes a record atomically.
pub(crate) fn write_record(store: &Store, rec: &JournalRecord) -> Result<(), StoreError> {
    let dir = store.ensure_state_dir()?.join(JOURNAL_DIR);
    if !dir.is_dir() {
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        super::store::fsync_dir(&store.state_dir())?;
    }
    let bytes = serde_json::to_vec(rec).map_err(|e| StoreError::Corrupt {
        path: dir.display().to_string(),
        message: format!("cannot serialise journal record: {e}"),
    })?;
    write_atomic(&record_path(store, rec.revision), &bytes)
}

/// Reads the record of one revision, `None` when there is none.
pub fn read_record(store: &Store, revision: u64) -> Result<Option<JournalRecord>, StoreError> {
    let path = record_path(store, revision);
    let Some(text) = read_optional(&path)? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            path: path.display().to_string(),
            message: format!("not a journal record: {e}"),
        })
}

/// Every record up to and including `upto`, in revision order. Revisions
/// whose record is missing are skipped.
pub fn read_journal(store: &Store, upto: u64) -> Result<Vec<JournalRecord>, StoreError> {
    let dir = store.state_dir().join(JOURNAL_DIR);
    let mut revs = BTreeSet::new();
    match std::fs::read_dir(&dir) {
        Ok(rd) => {
            for ent in rd {
                let ent = ent.map_err(|e| StoreError::io(&dir, e))?;
                let name = ent.file_name();
                let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                    continue;
                };
                if let Ok(rev) = stem.parse::<u64>() {
                    if rev >= 1 && rev <= upto {
                        revs.insert(rev);
                    }
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::io(&dir, e)),
    }
    let mut out = Vec::with_capacity(revs.len());
    for rev in revs {
        if let Some(r) = read_record(store, rev)? {
            out.push(r);
        }
    }
    Ok(out)
}

/// The spec hashes of the patches whose effect is part of the state at
/// the last record: applies add theirs, a rollback to N resets to the set
/// at revision N (so a rolled-back patch can be applied again, and rolling
/// back a rollback brings its patches back).
pub fn live_spec_hashes(records: &[JournalRecord]) -> BTreeSet<String> {
    let mut at: Vec<(u64, BTreeSet<String>)> = vec![(0, BTreeSet::new())];
    for r in records {
        let prev = at.last().map(|(_, s)| s.clone()).unwrap_or_default();
        let set = match (r.action, r.rolled_back_to) {
            (Action::Rollback, Some(to)) => at
                .iter()
                .rev()
                .find(|(rev, _)| *rev <= to)
                .map(|(_, s)| s.clone())
                .unwrap_or_default(),
            _ => {
                let mut s = prev;
                s.insert(r.spec_hash.clone());
                s
            }
        };
        at.push((r.revision, set));
    }
    at.pop().map(|(_, s)| s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(revision: u64, action: Action, hash: &str, to: Option<u64>) -> JournalRecord {
        JournalRecord {
            revision,
            time: String::new(),
            action,
            patch: String::new(),
            spec_hash: hash.into(),
            base_revision: 0,
            rolled_back_to: to,
            ops: vec![],
            inverse_ops: vec![],
            files: vec![],
        }
    }

    #[test]
    fn live_hashes_follow_rollbacks() {
        let mut j = vec![
            rec(1, Action::Apply, "a", None),
            rec(2, Action::Apply, "b", None),
        ];
        let set = |j: &[JournalRecord]| live_spec_hashes(j).into_iter().collect::<Vec<_>>();
        assert_eq!(set(&j), vec!["a", "b"]);
        j.push(rec(3, Action::Rollback, "r", Some(1)));
        assert_eq!(set(&j), vec!["a"]);
        j.push(rec(4, Action::Rollback, "r2", Some(2)));
        assert_eq!(set(&j), vec!["a", "b"]);
        j.push(rec(5, Action::Rollback, "r3", Some(0)));
        assert!(set(&j).is_empty());
    }

    #[test]
    fn records_round_trip() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("memories")).unwrap();
        let s = Store::open(d.path()).unwrap();
        assert!(read_journal(&s, 10).unwrap().is_empty());
        let r = rec(1, Action::Apply, "a", None);
        write_record(&s, &r).unwrap();
        assert_eq!(read_record(&s, 1).unwrap(), Some(r.clone()));
        assert_eq!(read_journal(&s, 10).unwrap(), vec![r]);
        assert!(read_journal(&s, 0).unwrap().is_empty());
    }
}
