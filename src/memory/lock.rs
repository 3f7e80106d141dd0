//! The store's writer lock: an exclusive `flock` on `.reverie/lock`, held
//! around apply and rollback so a second writer waits for the first.

use std::fs::{File, OpenOptions};

use super::store::{Store, StoreError};

/// Name of the lock file below `.reverie/`.
pub const LOCK_FILE: &str = "lock";

/// Holds the exclusive lock until dropped. The lock is on the open file
/// description, so two handles in one process exclude each other too, and
/// the kernel releases it if the process dies.
#[derive(Debug)]
pub struct StoreLock {
    file: File,
}

impl StoreLock {
    /// Blocks until this process holds the store's writer lock.
    pub fn acquire(store: &Store) -> Result<StoreLock, StoreError> {
        let path = store.ensure_state_dir()?.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                // Said at info level, with the wait, because a writer that
                // stalls behind another is what an operator asks about.
                let started = std::time::Instant::now();
                tracing::info!(path = %path.display(), "store lock held by another writer; waiting");
                file.lock().map_err(|e| StoreError::io(&path, e))?;
                tracing::info!(
                    path = %path.display(),
                    waited_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "store lock acquired after waiting"
                );
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(StoreError::io(&path, e)),
        }
        Ok(StoreLock { file })
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        // Closing the file releases the lock as well; unlocking first just
        // makes the release explicit.
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn second_holder_waits() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("memories")).unwrap();
        let s = Store::open(d.path()).unwrap();
        let first = StoreLock::acquire(&s).unwrap();
        let got = Arc::new(AtomicBool::new(false));
        let (s2, got2) = (s.clone(), got.clone());
        let t = std::thread::spawn(move || {
            let _l = StoreLock::acquire(&s2).unwrap();
            got2.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            !got.load(Ordering::SeqCst),
            "second lock taken while the first is held"
        );
        drop(first);
        t.join().unwrap();
        assert!(got.load(Ordering::SeqCst));
    }
}
