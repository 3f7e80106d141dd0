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
    /// Set when retention compacted the record: its ops, inverse ops and
    /// previous file contents were dropped (the revision can no longer be
    /// rolled back across), the head stays for `log` and re-apply checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compacted: Option<Compacted>,
}

/// What a compacted record still says about what it dropped.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Compacted {
    /// The number of ops the record had.
    pub ops: usize,
}

impl JournalRecord {
    /// Paths of the changed files.
    pub fn paths(&self) -> Vec<String> {
        self.files.iter().map(|f| f.path.clone()).collect()
    }
}

/// The small part of a record that `log` and the re-apply check need;
/// reading it skips the ops and previous file contents.
#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct JournalHead {
    pub revision: u64,
    pub time: String,
    pub action: Action,
    pub patch: String,
    pub spec_hash: String,
    #[serde(default)]
    pub rolled_back_to: Option<u64>,
    /// Number of ops.
    #[serde(deserialize_with = "count")]
    pub ops: usize,
    pub files: Vec<FileHead>,
    #[serde(default)]
    pub compacted: Option<Compacted>,
}

impl JournalHead {
    /// The number of ops of the revision, also after compaction.
    pub fn op_count(&self) -> usize {
        self.compacted.as_ref().map_or(self.ops, |c| c.ops)
    }
}

/// The path of a changed file, from a [`JournalHead`].
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FileHead {
    pub path: String,
}

/// Counts a sequence without keeping its elements.
fn count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let items: Vec<serde::de::IgnoredAny> = Deserialize::deserialize(d)?;
    Ok(items.len())
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
    read_as(store, revision)
}

fn read_as<T: serde::de::DeserializeOwned>(
    store: &Store,
    revision: u64,
) -> Result<Option<T>, StoreError> {
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

/// The revisions in `from..=upto` that have a record.
pub(crate) fn revisions(store: &Store, from: u64, upto: u64) -> Result<BTreeSet<u64>, StoreError> {
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
                    if rev >= from.max(1) && rev <= upto {
                        revs.insert(rev);
                    }
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StoreError::io(&dir, e)),
    }
    Ok(revs)
}

/// Every record in `from..=upto`, in revision order. Revisions whose
/// record is missing are skipped.
pub fn read_journal(store: &Store, from: u64, upto: u64) -> Result<Vec<JournalRecord>, StoreError> {
    let mut out = Vec::new();
    for rev in revisions(store, from, upto)? {
        out.extend(read_as::<JournalRecord>(store, rev)?);
    }
    Ok(out)
}

/// The heads of every record up to and including `upto`, in revision order.
pub fn read_heads(store: &Store, upto: u64) -> Result<Vec<JournalHead>, StoreError> {
    let mut out = Vec::new();
    for rev in revisions(store, 1, upto)? {
        out.extend(read_as::<JournalHead>(store, rev)?);
    }
    Ok(out)
}

/// The spec hashes of the patches whose effect is part of the state at
/// the last record: applies add theirs, a rollback to N resets to the set
/// at revision N (so a rolled-back patch can be applied again, and rolling
/// back a rollback brings its patches back).
pub fn live_spec_hashes(records: &[JournalHead]) -> BTreeSet<String> {
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
            files: vec![FileRecord {
                path: "a.md".into(),
                sha256_before: None,
                sha256_after: None,
                previous: Some("x".into()),
            }],
            compacted: None,
        }
    }

    fn head(r: &JournalRecord) -> JournalHead {
        JournalHead {
            revision: r.revision,
            time: r.time.clone(),
            action: r.action,
            patch: r.patch.clone(),
            spec_hash: r.spec_hash.clone(),
            rolled_back_to: r.rolled_back_to,
            ops: r.ops.len(),
            files: r
                .files
                .iter()
                .map(|f| FileHead {
                    path: f.path.clone(),
                })
                .collect(),
            compacted: None,
        }
    }

    #[test]
    fn live_hashes_follow_rollbacks() {
        let mut j = vec![
            rec(1, Action::Apply, "a", None),
            rec(2, Action::Apply, "b", None),
        ];
        let set = |j: &[JournalRecord]| {
            let heads: Vec<JournalHead> = j.iter().map(head).collect();
            live_spec_hashes(&heads).into_iter().collect::<Vec<_>>()
        };
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
        assert!(read_journal(&s, 0, 10).unwrap().is_empty());
        let r = rec(1, Action::Apply, "a", None);
        write_record(&s, &r).unwrap();
        let r2 = rec(2, Action::Rollback, "b", Some(0));
        write_record(&s, &r2).unwrap();
        assert_eq!(read_record(&s, 1).unwrap(), Some(r.clone()));
        assert_eq!(
            read_journal(&s, 0, 10).unwrap(),
            vec![r.clone(), r2.clone()]
        );
        assert_eq!(read_journal(&s, 2, 10).unwrap(), vec![r2.clone()]);
        assert!(read_journal(&s, 0, 0).unwrap().is_empty());
        assert_eq!(read_heads(&s, 10).unwrap(), vec![head(&r), head(&r2)]);
    }
}
