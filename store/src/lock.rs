//! The data directory's lock: one file, `sikkermail.lock`, locked with
//! `flock(2)` in one of two modes.
//!
//! - **Exclusive** for what replaces the master key or creates the store:
//!   `init` and `key rotate-master`.
//! - **Shared** for everything that reads the master key, seals or unseals.
//!
//! The kernel drops the lock when the process dies, so a killed command
//! never leaves the directory locked. Processes on other machines (nodes on
//! one PostgreSQL) do not see this lock; they agree through an advisory
//! lock inside the writing transaction instead (see [`crate::Tx`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::StoreError;

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "sikkermail.lock";

/// Which mode a [`DirLock`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Many holders at once: sealing and unsealing.
    Shared,
    /// One holder, nobody else: `init`, master-key rotation.
    Exclusive,
}

/// A held lock on a data directory; released when dropped (or when the
/// process ends, however it ends).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
    mode: LockMode,
}

impl DirLock {
    /// Takes the lock on `dir` in `mode`, waiting for other holders. When it
    /// has to wait, `on_wait` is called once first (to tell the operator).
    pub fn acquire(
        dir: &Path,
        mode: LockMode,
        on_wait: impl FnOnce(),
    ) -> Result<DirLock, StoreError> {
        Self::acquire_file(&dir.join(LOCK_FILE), mode, on_wait)
    }

    /// The same on any lock file.
    pub fn acquire_file(
        path: &Path,
        mode: LockMode,
        on_wait: impl FnOnce(),
    ) -> Result<DirLock, StoreError> {
        let path = path.to_path_buf();
        let file = open_lock_file(&path)?;
        let op = op_of(mode);
        if flock(&file, op | libc::LOCK_NB).is_err() {
            on_wait();
            loop {
                match flock(&file, op) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(StoreError::Lock(format!(
                            "cannot lock {}: {e}",
                            path.display()
                        )));
                    }
                }
            }
        }
        Ok(DirLock {
            _file: file,
            path,
            mode,
        })
    }

    /// Takes the lock only if nobody holds a conflicting one.
    pub fn try_acquire(dir: &Path, mode: LockMode) -> Result<Option<DirLock>, StoreError> {
        Self::try_acquire_file(&dir.join(LOCK_FILE), mode)
    }

    /// The same on any lock file.
    pub fn try_acquire_file(path: &Path, mode: LockMode) -> Result<Option<DirLock>, StoreError> {
        let path = path.to_path_buf();
        let file = open_lock_file(&path)?;
        if flock(&file, op_of(mode) | libc::LOCK_NB).is_err() {
            return Ok(None);
        }
        Ok(Some(DirLock {
            _file: file,
            path,
            mode,
        }))
    }

    /// The mode held.
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn open_lock_file(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| StoreError::Lock(format!("cannot open {}: {e}", path.display())))
}

fn op_of(mode: LockMode) -> libc::c_int {
    match mode {
        LockMode::Shared => libc::LOCK_SH,
        LockMode::Exclusive => libc::LOCK_EX,
    }
}

fn flock(f: &File, op: libc::c_int) -> io::Result<()> {
    // SAFETY: flock on a descriptor this File owns for its whole life.
    let r = unsafe { libc::flock(f.as_raw_fd(), op) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_locks_share_and_exclude_the_exclusive_one() {
        let d = tempfile::tempdir().unwrap();
        let a = DirLock::acquire(d.path(), LockMode::Shared, || {}).unwrap();
        let b = DirLock::try_acquire(d.path(), LockMode::Shared).unwrap();
        assert!(b.is_some(), "two shared holders");
        assert!(
            DirLock::try_acquire(d.path(), LockMode::Exclusive)
                .unwrap()
                .is_none()
        );
        drop((a, b));
        let x = DirLock::try_acquire(d.path(), LockMode::Exclusive).unwrap();
        assert!(x.is_some());
        assert!(
            DirLock::try_acquire(d.path(), LockMode::Shared)
                .unwrap()
                .is_none()
        );
    }
}
