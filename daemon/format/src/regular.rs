//! Opening a file whose path or kind someone else controls (a mirror, an
//! operator's argument, a folder of drop-ins or keys): the open never
//! blocks, anything but a regular file is refused before it is opened for
//! reading, and the size is bounded.
//!
//! [`open_regular`] does, in this order:
//!
//! 1. `open(path, O_PATH | O_CLOEXEC [| O_NOFOLLOW])`: resolves the name
//!    without opening what it names, so a FIFO does not wait for a writer,
//!    a device's driver is never called (no tape rewind, no watchdog armed),
//!    a socket is not connected to;
//! 2. `fstat` on that descriptor: anything but a regular file is refused
//!    with [`OpenError::NotRegular`], which names the path and the kind;
//!    so is a file larger than the limit;
//! 3. the same inode is opened for reading through `/proc/self/fd/N` with
//!    `O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC` (no race with a rename
//!    between steps 1 and 3), checked again with `fstat`, and `O_NONBLOCK`
//!    is cleared so reads behave as usual.
//!
//! Without `/proc` step 3 opens the path again with the same flags and
//! checks that it is still the inode of step 1.
//!
//! A hung network filesystem can still stall the name lookup of step 1 or a
//! later read; callers that must bound that wait run the open on a thread
//! of their own (the `file://` mirror transport does).

use std::fmt;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};

/// Whether the last component of the path may be a symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Symlinks {
    /// Follow it: the operator may link a file into place (config
    /// drop-ins, trusted keys, a package path given on the command line).
    Follow,
    /// Refuse it (`O_NOFOLLOW`): the file must be what the folder holds
    /// (files in a mirror folder, which must not point outside it).
    Refuse,
}

/// How a file is opened by [`open_regular`] and [`read_regular`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenPolicy {
    pub symlinks: Symlinks,
    /// Largest size accepted, in bytes.
    pub max_size: u64,
}

impl OpenPolicy {
    pub const fn follow(max_size: u64) -> Self {
        OpenPolicy { symlinks: Symlinks::Follow, max_size }
    }

    pub const fn no_follow(max_size: u64) -> Self {
        OpenPolicy { symlinks: Symlinks::Refuse, max_size }
    }
}

/// What a path turned out to be, when it is not a regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
    Symlink,
    Other,
}

impl FileKind {
    fn of(md: &Metadata) -> Option<FileKind> {
        let t = md.file_type();
        let kind = if t.is_file() {
            return None;
        } else if t.is_dir() {
            FileKind::Directory
        } else if t.is_fifo() {
            FileKind::Fifo
        } else if t.is_socket() {
            FileKind::Socket
        } else if t.is_char_device() {
            FileKind::CharDevice
        } else if t.is_block_device() {
            FileKind::BlockDevice
        } else if t.is_symlink() {
            FileKind::Symlink
        } else {
            FileKind::Other
        };
        Some(kind)
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Directory => "a directory",
            FileKind::Fifo => "a FIFO (named pipe)",
            FileKind::Socket => "a socket",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
            FileKind::Symlink => "a symbolic link",
            FileKind::Other => "a special file",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{}: is {kind}, not a regular file; refused", shown(path))]
    NotRegular { path: PathBuf, kind: FileKind },
    #[error("{}: is {size} bytes, more than the limit of {limit}; refused", shown(path))]
    TooLarge { path: PathBuf, size: u64, limit: u64 },
    #[error("{}: {source}", shown(path))]
    Io { path: PathBuf, source: io::Error },
}

impl OpenError {
    pub fn path(&self) -> &Path {
        match self {
            OpenError::NotRegular { path, .. } | OpenError::TooLarge { path, .. } | OpenError::Io { path, .. } => path,
        }
    }

    /// The path does not exist (so a caller may treat it as absent).
    pub fn is_not_found(&self) -> bool {
        matches!(self, OpenError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// A path for a message: control characters and bidirectional overrides
/// are escaped, so a hostile name cannot drive the terminal or reorder the
/// text it is shown in.
pub(crate) fn shown(path: &Path) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// An open regular file and its metadata as `fstat` saw it.
#[derive(Debug)]
pub struct RegularFile {
    pub file: File,
    pub metadata: Metadata,
}

/// Opens `path` for reading as described in the module documentation.
pub fn open_regular(path: &Path, policy: OpenPolicy) -> Result<RegularFile, OpenError> {
    let io_err = |source| OpenError::Io { path: path.to_path_buf(), source };
    let mut flags = OFlags::PATH;
    if policy.symlinks == Symlinks::Refuse {
        flags |= OFlags::NOFOLLOW;
    }
    // std adds O_CLOEXEC; with O_PATH the access mode is ignored.
    let handle = OpenOptions::new().read(true).custom_flags(flag_bits(flags)).open(path).map_err(io_err)?;
    let md = handle.metadata().map_err(io_err)?;
    check(path, &md, policy.max_size)?;

    let read_flags = flag_bits(OFlags::NONBLOCK | OFlags::NOCTTY);
    let mut opts = OpenOptions::new();
    opts.read(true).custom_flags(read_flags);
    let file = match opts.open(format!("/proc/self/fd/{}", handle.as_raw_fd())) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut again = OpenOptions::new();
            let nofollow = if policy.symlinks == Symlinks::Refuse { flag_bits(OFlags::NOFOLLOW) } else { 0 };
            again.read(true).custom_flags(read_flags | nofollow);
            again.open(path).map_err(io_err)?
        }
        Err(e) => return Err(io_err(e)),
    };
    let metadata = file.metadata().map_err(io_err)?;
    if (metadata.dev(), metadata.ino()) != (md.dev(), md.ino()) {
        return Err(io_err(io::Error::other("the file was replaced while it was being opened")));
    }
    check(path, &metadata, policy.max_size)?;
    let fl = fcntl_getfl(&file).map_err(|e| io_err(e.into()))?;
    fcntl_setfl(&file, fl & !OFlags::NONBLOCK).map_err(|e| io_err(e.into()))?;
    Ok(RegularFile { file, metadata })
}

/// Open flags as `OpenOptionsExt::custom_flags` takes them.
fn flag_bits(flags: OFlags) -> i32 {
    i32::try_from(flags.bits()).unwrap_or(0)
}

fn check(path: &Path, md: &Metadata, limit: u64) -> Result<(), OpenError> {
    if let Some(kind) = FileKind::of(md) {
        return Err(OpenError::NotRegular { path: path.to_path_buf(), kind });
    }
    if md.len() > limit {
        return Err(OpenError::TooLarge { path: path.to_path_buf(), size: md.len(), limit });
    }
    Ok(())
}

/// Reads a whole regular file of at most `policy.max_size` bytes. A file
/// that grows past the limit while it is read is refused too.
pub fn read_regular(path: &Path, policy: OpenPolicy) -> Result<Vec<u8>, OpenError> {
    let RegularFile { file, metadata } = open_regular(path, policy)?;
    let mut data = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0).min(1 << 20));
    let limit = policy.max_size;
    file.take(limit.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|source| OpenError::Io { path: path.to_path_buf(), source })?;
    if data.len() as u64 > limit {
        return Err(OpenError::TooLarge { path: path.to_path_buf(), size: data.len() as u64, limit });
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn mkfifo(path: &Path) {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    }

    #[test]
    fn regular_file_reads_and_blocks_normally() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        assert_eq!(read_regular(&p, OpenPolicy::no_follow(5)).unwrap(), b"hello");
        let f = open_regular(&p, OpenPolicy::follow(5)).unwrap();
        let fl = fcntl_getfl(&f.file).unwrap();
        assert!(!fl.contains(OFlags::NONBLOCK), "O_NONBLOCK cleared for reading");
        let fd = rustix::io::fcntl_getfd(&f.file).unwrap();
        assert!(fd.contains(rustix::io::FdFlags::CLOEXEC), "close-on-exec");
        let e = read_regular(&p, OpenPolicy::follow(4)).unwrap_err();
        assert!(matches!(e, OpenError::TooLarge { size: 5, limit: 4, .. }), "{e}");
    }

    #[test]
    fn fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("index.json");
        mkfifo(&p);
        let start = Instant::now();
        let e = read_regular(&p, OpenPolicy::follow(1024)).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(matches!(e, OpenError::NotRegular { kind: FileKind::Fifo, .. }), "{e}");
        let text = e.to_string();
        assert!(text.contains("index.json: is a FIFO (named pipe), not a regular file"), "{text}");
    }

    #[test]
    fn devices_directories_and_sockets_are_refused() {
        let e = open_regular(Path::new("/dev/null"), OpenPolicy::follow(1)).unwrap_err();
        assert!(matches!(e, OpenError::NotRegular { kind: FileKind::CharDevice, .. }), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let e = open_regular(dir.path(), OpenPolicy::follow(1)).unwrap_err();
        assert!(matches!(e, OpenError::NotRegular { kind: FileKind::Directory, .. }), "{e}");
        let s = dir.path().join("sock");
        let _l = std::os::unix::net::UnixListener::bind(&s).unwrap();
        let e = open_regular(&s, OpenPolicy::follow(1)).unwrap_err();
        assert!(matches!(e, OpenError::NotRegular { kind: FileKind::Socket, .. }), "{e}");
        let e = open_regular(&dir.path().join("missing"), OpenPolicy::follow(1)).unwrap_err();
        assert!(e.is_not_found(), "{e}");
    }

    #[test]
    fn symlinks_follow_or_refuse_by_policy() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        std::fs::write(&target, b"x").unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(read_regular(&link, OpenPolicy::follow(1)).unwrap(), b"x");
        let e = open_regular(&link, OpenPolicy::no_follow(1)).unwrap_err();
        assert!(matches!(e, OpenError::NotRegular { kind: FileKind::Symlink, .. }), "{e}");
        // A link to a FIFO is judged by what it points at.
        let fifo = dir.path().join("p");
        mkfifo(&fifo);
        let to_fifo = dir.path().join("lp");
        std::os::unix::fs::symlink(&fifo, &to_fifo).unwrap();
        let e = open_regular(&to_fifo, OpenPolicy::follow(1)).unwrap_err();
        assert!(matches!(e, OpenError::NotRegular { kind: FileKind::Fifo, .. }), "{e}");
    }

    #[test]
    fn paths_are_escaped_in_messages() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("evil\x1b[2J\u{202e}.pub");
        mkfifo(&p);
        let text = open_regular(&p, OpenPolicy::follow(1)).unwrap_err().to_string();
        assert!(!text.contains('\x1b') && !text.contains('\u{202e}'), "{text:?}");
        assert!(text.contains("evil\\u{1b}[2J\\u{202e}.pub"), "{text}");
    }
}
