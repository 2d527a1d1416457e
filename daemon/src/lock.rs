//! The state-folder lock: one process at a time changes the state, so
//! `milspecd install` refuses to run while the daemon holds it.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{}: another milspecd holds the state lock (is the service running? use milspecctl, or stop it first)", path.display())]
    Held { path: PathBuf },
    #[error("{}: is a symbolic link; the state folder must be a real folder owned by root", path.display())]
    Symlink { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// Held for as long as the value lives.
#[derive(Debug)]
pub struct StateLock {
    _lock: Flock<File>,
}

/// Creates the state folder (mode 0700) if needed, refusing a symlink.
pub fn ensure_state_dir(dir: &Path) -> Result<(), LockError> {
    match dir.symlink_metadata() {
        Ok(m) if m.file_type().is_symlink() => return Err(LockError::Symlink { path: dir.to_path_buf() }),
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(LockError::Io {
                path: dir.to_path_buf(),
                source: io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a folder"),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(LockError::Io { path: dir.to_path_buf(), source }),
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| LockError::Io { path: dir.to_path_buf(), source })
}

impl StateLock {
    pub fn acquire(state_dir: &Path) -> Result<Self, LockError> {
        ensure_state_dir(state_dir)?;
        let path = state_dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|source| LockError::Io { path: path.clone(), source })?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(StateLock { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(LockError::Held { path }),
            Err((_, e)) => Err(LockError::Io { path, source: io::Error::from(e) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_and_symlink_rejected() {
        let d = tempfile::tempdir().unwrap();
        let sd = d.path().join("state");
        let l = StateLock::acquire(&sd).unwrap();
        assert!(matches!(StateLock::acquire(&sd), Err(LockError::Held { .. })));
        drop(l);
        StateLock::acquire(&sd).unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&sd, &link).unwrap();
        assert!(matches!(StateLock::acquire(&link), Err(LockError::Symlink { .. })));
    }
}
