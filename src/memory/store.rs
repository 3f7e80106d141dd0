//! A store directory opened for reading and for crash-safe writes.
//!
//! The store is `memories/` (Markdown files), `sessions/` (transcripts, never
//! read or written here) and `.reverie/` (revision, journal, lock, intent).
//! `.reverie/revision` holds the current revision as a decimal number; it is
//! absent (revision 0) until the first journaled apply.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::entry::{parse, MemoryFile};
use super::layout::{list_memory_files, MEMORIES, STATE};

/// File under `.reverie/` that holds the current revision.
pub const REVISION_FILE: &str = "revision";

/// Why the store could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} is not a reverie store: {1} is missing (expected a `memories/` directory)")]
    NotAStore(String, String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Corrupt { path: String, message: String },
}

impl StoreError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Sizes of the memory files, as `MemoryStore.status` reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Number of files below `memories/`.
    pub files: usize,
    /// Number of entries in all memory files.
    pub entries: usize,
    /// Total size of all memory files in bytes.
    pub bytes: u64,
}

/// An opened store directory.
#[derive(Clone, Debug)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens the store at `dir`, which must contain `memories/`. A write that
    /// a crash interrupted after its intent was recorded is rolled forward
    /// here, so every reader sees a whole revision.
    pub fn open(dir: impl AsRef<Path>) -> Result<Store, StoreError> {
        let root = dir.as_ref().to_path_buf();
        let mem = root.join(MEMORIES);
        if !mem.is_dir() {
            return Err(StoreError::NotAStore(
                root.display().to_string(),
                mem.display().to_string(),
            ));
        }
        let store = Store { root };
        super::apply::recover_if_needed(&store)?;
        Ok(store)
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `memories/` below the store directory.
    pub fn memories_dir(&self) -> PathBuf {
        self.root.join(MEMORIES)
    }

    /// `.reverie/` below the store directory (it may not exist yet).
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(STATE)
    }

    /// Creates `.reverie/` if it is missing.
    pub(crate) fn ensure_state_dir(&self) -> Result<PathBuf, StoreError> {
        let dir = self.state_dir();
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
            fsync_dir(&self.root)?;
        }
        Ok(dir)
    }

    /// The current revision: 0 before the first journaled apply.
    pub fn revision(&self) -> Result<u64, StoreError> {
        let path = self.state_dir().join(REVISION_FILE);
        match std::fs::read_to_string(&path) {
            Ok(s) => s.trim().parse().map_err(|_| StoreError::Corrupt {
                path: path.display().to_string(),
                message: format!("not a revision number: {:?}", s.trim()),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    /// Every memory file parsed, by path relative to `memories/`.
    pub fn load(&self) -> Result<BTreeMap<String, MemoryFile>, StoreError> {
        let mut out = BTreeMap::new();
        for rel in self.list()? {
            let text = self.read(&rel)?.unwrap_or_default();
            out.insert(rel, parse(&text));
        }
        Ok(out)
    }

    /// Sorted paths of the memory files, relative to `memories/`.
    pub fn list(&self) -> Result<Vec<String>, StoreError> {
        list_memory_files(&self.root).map_err(|e| StoreError::io(&self.memories_dir(), e))
    }

    /// Number of files, entries and bytes of the memory files.
    pub fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut st = StoreStats::default();
        for rel in self.list()? {
            let text = self.read(&rel)?.unwrap_or_default();
            st.files += 1;
            st.bytes += text.len() as u64;
            st.entries += parse(&text).entries().count();
        }
        Ok(st)
    }

    /// The text of one memory file (a path already checked), `None` when it
    /// does not exist.
    pub(crate) fn read(&self, rel: &str) -> Result<Option<String>, StoreError> {
        let path = self.memories_dir().join(rel);
        read_optional(&path)
    }
}

/// Reads a file as UTF-8, `None` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, StoreError> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| StoreError::Corrupt {
                path: path.display().to_string(),
                message: "not valid UTF-8".into(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

/// Flushes a directory so that renames and creations in it survive a crash.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    let f = std::fs::File::open(dir).map_err(|e| StoreError::io(dir, e))?;
    f.sync_all().map_err(|e| StoreError::io(dir, e))
}

/// The temporary name a file is written under before it is renamed over
/// `path`: hidden, in the same directory (so the rename is atomic), and
/// skipped by [`list_memory_files`].
pub(crate) fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.reverie-tmp"))
}

/// Writes `data` to a temporary file beside `path`, flushes it, renames it
/// over `path` and flushes the directory.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    let tmp = temp_path(path);
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
        f.write_all(data).map_err(|e| StoreError::io(&tmp, e))?;
        // The replacement keeps the mode of the file it replaces (a volume
        // may rely on group permissions).
        if let Ok(md) = std::fs::metadata(path) {
            f.set_permissions(md.permissions())
                .map_err(|e| StoreError::io(&tmp, e))?;
        }
        f.sync_all().map_err(|e| StoreError::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))?;
    if let Some(dir) = path.parent() {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// Writes the revision number (atomically).
pub(crate) fn write_revision(store: &Store, rev: u64) -> Result<(), StoreError> {
    let dir = store.ensure_state_dir()?;
    write_atomic(&dir.join(REVISION_FILE), format!("{rev}\n").as_bytes())
}

/// Hex SHA-256 of a text.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_needs_memories() {
        let d = tempfile::tempdir().unwrap();
        let err = Store::open(d.path()).unwrap_err();
        assert!(err.to_string().contains("memories"), "{err}");
        std::fs::create_dir(d.path().join("memories")).unwrap();
        let s = Store::open(d.path()).unwrap();
        assert_eq!(s.revision().unwrap(), 0);
        assert_eq!(s.stats().unwrap(), StoreStats::default());
    }

    #[test]
    fn atomic_write_keeps_mode() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.md");
        std::fs::write(&p, "old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert!(!temp_path(&p).exists());
    }

    #[test]
    fn stats_and_load() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("memories/a")).unwrap();
        std::fs::write(d.path().join("memories/a/x.md"), "# T\n\n- one\n- two\n").unwrap();
        std::fs::write(d.path().join("memories/y.md"), "Para.\n").unwrap();
        std::fs::write(d.path().join("memories/.hidden.md"), "- no\n").unwrap();
        let s = Store::open(d.path()).unwrap();
        let st = s.stats().unwrap();
        assert_eq!((st.files, st.entries), (2, 3));
        assert_eq!(st.bytes, 23);
        let files = s.load().unwrap();
        assert_eq!(
            files.keys().cloned().collect::<Vec<_>>(),
            vec!["a/x.md", "y.md"]
        );
    }
}
