//! Crash-safe file replacement: write a temporary file beside the target,
//! fsync it, rename it over the target, fsync the folder.

use std::fs::{self, File, Permissions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A file being written that replaces `target` only on [`AtomicFile::commit`].
/// Dropped without commit, it leaves nothing behind.
#[derive(Debug)]
pub struct AtomicFile {
    target: PathBuf,
    temp: BufWriter<tempfile::NamedTempFile>,
    mode: u32,
}

fn parent_of(target: &Path) -> &Path {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

impl AtomicFile {
    pub fn create(target: &Path, mode: u32) -> io::Result<Self> {
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let temp =
            tempfile::Builder::new().prefix(&format!(".{name}.")).suffix(".tmp").tempfile_in(parent_of(target))?;
        Ok(AtomicFile { target: target.to_path_buf(), temp: BufWriter::with_capacity(256 * 1024, temp), mode })
    }

    /// Flushes, fsyncs, renames over the target and fsyncs the folder.
    pub fn commit(self) -> io::Result<()> {
        let temp = self.temp.into_inner().map_err(|e| e.into_error())?;
        temp.as_file().set_permissions(Permissions::from_mode(self.mode))?;
        temp.as_file().sync_all()?;
        temp.persist(&self.target).map_err(|e| e.error)?;
        sync_dir(parent_of(&self.target))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.temp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.temp.flush()
    }
}

/// Fsyncs a folder so that a rename inside it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `target` with `data` atomically and durably.
pub fn write_atomic(target: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let mut f = AtomicFile::create(target, mode)?;
    f.write_all(data)?;
    f.commit()
}

/// Removes a file and fsyncs its folder; a missing file is not an error.
pub fn remove_durable(target: &Path) -> io::Result<()> {
    match fs::remove_file(target) {
        Ok(()) => sync_dir(parent_of(target)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_replaces_drop_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("state.json");
        write_atomic(&t, b"one", 0o600).unwrap();
        {
            let mut f = AtomicFile::create(&t, 0o600).unwrap();
            f.write_all(b"two").unwrap();
            // dropped: no commit
        }
        assert_eq!(fs::read(&t).unwrap(), b"one");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        write_atomic(&t, b"three", 0o644).unwrap();
        assert_eq!(fs::read(&t).unwrap(), b"three");
        assert_eq!(fs::metadata(&t).unwrap().permissions().mode() & 0o777, 0o644);
    }
}
