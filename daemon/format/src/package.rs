//! Reading and verifying a package as a stream.
//!
//! The reader trusts nothing it has not checked: it reads `manifest.json`
//! and `signatures.json` (both size-capped), checks the signatures over the
//! raw manifest bytes, and only then parses the manifest and reads payloads.
//! Each payload is streamed through SHA-256 and handed to a [`PayloadSink`];
//! the package is good only once [`read_package`] (or, read in two phases,
//! [`OpenedPackage::copy_payloads`]) returns `Ok`.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use sha2::{Digest, Sha256};

use crate::digest::Sha256Digest;
use crate::keys::{KeyId, TrustedKeys};
use crate::limits::Limits;
use crate::manifest::{Manifest, ManifestError, Payload};
use crate::modsig::{self, ModuleSigner};
use crate::regular::{open_regular, shown, FileKind, OpenError, OpenPolicy};
use crate::signature::{SignatureError, SignatureSet};
use crate::text::{is_clean, sanitize_bytes, sanitize_to};

pub const MANIFEST_PATH: &str = "manifest.json";
pub const SIGNATURES_PATH: &str = "signatures.json";

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("the file is empty")]
    Empty,
    #[error("is {0}, not a regular file; a package must be a regular file")]
    NotRegularFile(FileKind),
    #[error("not a milspec package: not a tar archive ({0})")]
    NotTar(String),
    #[error("the package is corrupt after `{after}`: {detail}")]
    Corrupt { after: String, detail: String },
    #[error("the package is truncated: it ends inside `{0}`")]
    Truncated(String),
    #[error("the package is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the package ends before `{0}` (truncated?)")]
    MissingEntry(&'static str),
    #[error("unexpected entry `{path}` where `{expected}` was expected")]
    OutOfOrder { path: String, expected: &'static str },
    #[error("entry `{path}` has an unsafe path ({why}); the package is rejected")]
    UnsafePath { path: String, why: &'static str },
    #[error("entry `{path}` is a {kind}; a package may hold regular files only")]
    NotRegular { path: String, kind: &'static str },
    #[error("entry `{0}` appears twice")]
    Duplicate(String),
    #[error("entry `{0}` is not listed in the manifest")]
    Unlisted(String),
    #[error("`{what}` is {size} bytes, more than the limit of {limit}")]
    EntryTooLarge { what: String, size: u64, limit: u64 },
    #[error("payload `{path}` is {actual} bytes but the manifest says {expected}")]
    SizeMismatch { path: String, expected: u64, actual: u64 },
    #[error("payload `{path}` does not match its sha256 in the manifest (manifest {expected}, content {actual}): the package is corrupt or was tampered with")]
    HashMismatch { path: String, expected: Sha256Digest, actual: Sha256Digest },
    #[error("payload `{path}` does not carry the module signature its manifest records ({signer}): {why}; the package was built wrong or tampered with")]
    ModuleSignature { path: String, signer: String, why: String },
    #[error("payload `{0}` listed in the manifest is missing from the package (truncated?)")]
    MissingPayload(String),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("cannot read the package: {0}")]
    Io(io::Error),
    #[error("cannot store payload `{path}`: {source}")]
    Sink { path: String, source: io::Error },
}

/// A package error with the file it came from.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", shown(path))]
pub struct FileError {
    pub path: PathBuf,
    #[source]
    pub source: PackageError,
}

impl FileError {
    /// A path as messages show it: control characters escaped.
    pub fn shown_path(path: &Path) -> String {
        shown(path)
    }
}

/// How much to trust a package being read.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// At least `threshold` distinct keys from `keys` must have signed.
    Keys { keys: &'a TrustedKeys, threshold: usize },
    /// Check structure and hashes only (for `inspect` and the publisher).
    Unverified,
}

/// The signed part of a package, handed to a sink before any payload byte.
#[derive(Debug)]
pub struct Header<'a> {
    pub manifest: &'a Manifest,
    pub manifest_bytes: &'a [u8],
    pub signatures: &'a SignatureSet,
}

/// Receives payloads as they stream past. Every method may fail, which
/// aborts the read. A payload's bytes are good once `end` is called for it;
/// the package as a whole is good only when [`read_package`] returns `Ok`.
pub trait PayloadSink {
    fn start(&mut self, _header: &Header<'_>) -> io::Result<()> {
        Ok(())
    }
    fn begin(&mut self, _payload: &Payload) -> io::Result<()> {
        Ok(())
    }
    fn data(&mut self, _payload: &Payload, _chunk: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn end(&mut self, _payload: &Payload) -> io::Result<()> {
        Ok(())
    }
}

/// A sink that keeps nothing: verification only.
#[derive(Debug, Default)]
pub struct Discard;

impl PayloadSink for Discard {}

/// A package that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedPackage {
    pub manifest: Manifest,
    /// The exact signed bytes.
    pub manifest_bytes: Vec<u8>,
    pub signatures: SignatureSet,
    /// Trusted keys whose signatures verified; empty for [`Trust::Unverified`].
    pub signers: Vec<KeyId>,
}

/// Counts the bytes that pass, so a size overrun can be told apart from
/// a corrupt archive.
struct Counting<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

fn kind_name(t: tar::EntryType) -> Option<&'static str> {
    use tar::EntryType as T;
    Some(match t {
        T::Regular => return None,
        T::Symlink => "symbolic link",
        T::Link => "hard link",
        T::Char | T::Block => "device file",
        T::Directory => "directory",
        T::Fifo => "fifo",
        T::XHeader | T::XGlobalHeader => "pax extended header",
        T::GNULongName | T::GNULongLink => "GNU long-name header",
        T::GNUSparse => "sparse file",
        _ => "special entry",
    })
}

/// Most characters of archive-supplied text quoted in an error.
const MAX_SHOWN: usize = 200;

/// A tar parser error as text: its message may quote raw header bytes
/// (a name, a numeric field), so it is escaped and bounded.
fn tar_detail(e: &io::Error) -> String {
    sanitize_to(&e.to_string(), MAX_SHOWN)
}

fn check_path(raw: &[u8]) -> Result<String, PackageError> {
    // The path in an error is escaped: it comes from the archive.
    let Ok(path) = std::str::from_utf8(raw) else {
        return Err(PackageError::UnsafePath { path: sanitize_bytes(raw, MAX_SHOWN), why: "not UTF-8" });
    };
    let unsafe_path = |why| PackageError::UnsafePath { path: sanitize_to(path, MAX_SHOWN), why };
    if path.starts_with('/') {
        return Err(unsafe_path("absolute path"));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(unsafe_path("parent directory `..`"));
    }
    if !is_clean(path) || path.contains('\\') {
        return Err(unsafe_path("control or invisible formatting character, or backslash"));
    }
    Ok(path.to_string())
}

fn read_small(entry: &mut impl Read, path: &str, size: u64, limit: u64) -> Result<Vec<u8>, PackageError> {
    if size > limit {
        return Err(PackageError::EntryTooLarge { what: path.to_string(), size, limit });
    }
    let mut buf = Vec::with_capacity(size as usize);
    entry.take(size).read_to_end(&mut buf).map_err(PackageError::Io)?;
    if (buf.len() as u64) < size {
        return Err(PackageError::Truncated(path.to_string()));
    }
    Ok(buf)
}

type Stream<R> = Counting<BufReader<io::Take<R>>>;

/// A package being read from a stream, in two phases (RAUC's order):
/// [`PackageStream::open`] reads and verifies the signed header (the
/// signatures over the raw manifest bytes, then the manifest), so the
/// caller can decide what to do with it before a payload byte is read;
/// [`OpenedPackage::copy_payloads`] then streams every payload through
/// its hash check into a sink. The package is good only once
/// `copy_payloads` returns `Ok`. [`read_package`] runs both in one call.
pub struct PackageStream<R: Read> {
    archive: tar::Archive<Stream<R>>,
    count: Rc<Cell<u64>>,
    limits: Limits,
}

impl<R: Read> std::fmt::Debug for PackageStream<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackageStream").field("read", &self.count.get()).finish_non_exhaustive()
    }
}

impl<R: Read> PackageStream<R> {
    /// Starts reading `reader`, at most `limits.max_package_size` bytes.
    pub fn new(reader: R, limits: &Limits) -> Result<Self, PackageError> {
        let count = Rc::new(Cell::new(0u64));
        let mut buffered = BufReader::with_capacity(256 * 1024, reader.take(limits.max_package_size + 1));
        if buffered.fill_buf().map_err(PackageError::Io)?.is_empty() {
            return Err(PackageError::Empty);
        }
        let counting = Counting { inner: buffered, count: Rc::clone(&count) };
        Ok(PackageStream { archive: tar::Archive::new(counting), count, limits: *limits })
    }

    /// Phase one: reads `manifest.json` and `signatures.json` (both
    /// size-capped), checks the signatures over the raw manifest bytes
    /// against `trust`, and only then parses the manifest.
    pub fn open(&mut self, trust: Trust<'_>) -> Result<OpenedPackage<'_, R>, PackageError> {
        let limits = self.limits;
        let count = Rc::clone(&self.count);
        let entries = self.archive.entries().map_err(|e| PackageError::NotTar(tar_detail(&e)))?.raw(true);
        let mut cursor = Cursor { entries, last: String::new(), index: 0, count, limits };
        match cursor.read_header(trust) {
            Ok((manifest, manifest_bytes, signatures, signers)) => {
                Ok(OpenedPackage { cursor, manifest, manifest_bytes, signatures, signers })
            }
            Err(e) => Err(cursor.bounded(e)),
        }
    }
}

/// A package whose signed header verified; its payloads are still unread.
pub struct OpenedPackage<'a, R: Read> {
    cursor: Cursor<'a, R>,
    pub manifest: Manifest,
    /// The exact signed bytes.
    pub manifest_bytes: Vec<u8>,
    pub signatures: SignatureSet,
    /// Trusted keys whose signatures verified; empty for [`Trust::Unverified`].
    pub signers: Vec<KeyId>,
}

impl<R: Read> std::fmt::Debug for OpenedPackage<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedPackage").field("manifest", &self.manifest).finish_non_exhaustive()
    }
}

impl<R: Read> OpenedPackage<'_, R> {
    /// The signed part, as a [`PayloadSink`] sees it in `start`.
    pub fn header(&self) -> Header<'_> {
        Header { manifest: &self.manifest, manifest_bytes: &self.manifest_bytes, signatures: &self.signatures }
    }

    /// Phase two: streams every payload the manifest lists through
    /// SHA-256 into `sink` (never calling its `start`), and checks that
    /// nothing is missing, unlisted or doubled.
    pub fn copy_payloads(mut self, sink: &mut dyn PayloadSink) -> Result<VerifiedPackage, PackageError> {
        match self.cursor.read_payloads(&self.manifest, sink) {
            Ok(()) => Ok(VerifiedPackage {
                manifest: self.manifest,
                manifest_bytes: self.manifest_bytes,
                signatures: self.signatures,
                signers: self.signers,
            }),
            Err(e) => Err(self.cursor.bounded(e)),
        }
    }
}

/// Reads and verifies a package from `reader`: [`PackageStream::open`],
/// the sink's `start` with the header, then [`OpenedPackage::copy_payloads`].
pub fn read_package<R: Read>(
    reader: R,
    trust: Trust<'_>,
    limits: &Limits,
    sink: &mut dyn PayloadSink,
) -> Result<VerifiedPackage, PackageError> {
    let mut stream = PackageStream::new(reader, limits)?;
    let opened = stream.open(trust)?;
    sink.start(&opened.header()).map_err(|source| PackageError::Sink { path: MANIFEST_PATH.into(), source })?;
    opened.copy_payloads(sink)
}

/// An archive entry with its checked path and size.
type Next<'a, R> = (tar::Entry<'a, Stream<R>>, String, u64);

/// Where the reader is in the archive.
struct Cursor<'a, R: Read> {
    entries: tar::Entries<'a, Stream<R>>,
    /// The last entry's path, for messages.
    last: String,
    index: usize,
    count: Rc<Cell<u64>>,
    limits: Limits,
}

impl<'a, R: Read> Cursor<'a, R> {
    /// Any error once more than the limit was read is the limit's.
    fn bounded(&self, e: PackageError) -> PackageError {
        if self.count.get() > self.limits.max_package_size {
            PackageError::TooLarge { limit: self.limits.max_package_size }
        } else {
            e
        }
    }

    /// Pulls the next entry and checks its type and path.
    fn next_entry(&mut self) -> Result<Option<Next<'a, R>>, PackageError> {
        match self.entries.next() {
            None => Ok(None),
            Some(Err(e)) if self.index == 0 => Err(PackageError::NotTar(tar_detail(&e))),
            Some(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Err(PackageError::Truncated(self.last.clone())),
            Some(Err(e)) => Err(PackageError::Corrupt { after: self.last.clone(), detail: tar_detail(&e) }),
            Some(Ok(entry)) => {
                self.index += 1;
                let path = check_path(&entry.path_bytes())?;
                if let Some(kind) = kind_name(entry.header().entry_type()) {
                    return Err(PackageError::NotRegular { path, kind });
                }
                let size = entry
                    .header()
                    .entry_size()
                    .map_err(|e| PackageError::Corrupt { after: self.last.clone(), detail: tar_detail(&e) })?;
                self.last = path.clone();
                Ok(Some((entry, path, size)))
            }
        }
    }

    fn read_header(&mut self, trust: Trust<'_>) -> Result<(Manifest, Vec<u8>, SignatureSet, Vec<KeyId>), PackageError> {
        let limits = self.limits;
        let Some((mut entry, path, size)) = self.next_entry()? else {
            return Err(PackageError::MissingEntry(MANIFEST_PATH));
        };
        if path != MANIFEST_PATH {
            return Err(PackageError::OutOfOrder { path, expected: MANIFEST_PATH });
        }
        let manifest_bytes = read_small(&mut entry, &path, size, limits.max_manifest)?;
        drop(entry);

        let Some((mut entry, path, size)) = self.next_entry()? else {
            return Err(PackageError::MissingEntry(SIGNATURES_PATH));
        };
        if path != SIGNATURES_PATH {
            return Err(match path.as_str() {
                MANIFEST_PATH => PackageError::Duplicate(path),
                _ => PackageError::OutOfOrder { path, expected: SIGNATURES_PATH },
            });
        }
        let sig_bytes = read_small(&mut entry, &path, size, limits.max_signatures_file)?;
        drop(entry);
        let signatures = SignatureSet::parse(&sig_bytes, &limits)?;

        // Authenticate the raw bytes before reading anything they describe.
        let signers = match trust {
            Trust::Keys { keys, threshold } => signatures.check(&manifest_bytes, keys, threshold)?,
            Trust::Unverified => Vec::new(),
        };
        let manifest = Manifest::parse(&manifest_bytes, &limits)?;
        Ok((manifest, manifest_bytes, signatures, signers))
    }

    fn read_payloads(&mut self, manifest: &Manifest, sink: &mut dyn PayloadSink) -> Result<(), PackageError> {
        let mut pending: BTreeMap<&str, &Payload> = manifest.payloads.iter().map(|p| (p.path.as_str(), p)).collect();
        let mut buf = vec![0u8; 256 * 1024];
        while let Some((mut entry, path, size)) = self.next_entry()? {
            let Some(payload) = pending.remove(path.as_str()) else {
                let listed = path == MANIFEST_PATH
                    || path == SIGNATURES_PATH
                    || manifest.payloads.iter().any(|p| p.path == path);
                return Err(if listed { PackageError::Duplicate(path) } else { PackageError::Unlisted(path) });
            };
            if size != payload.size {
                return Err(PackageError::SizeMismatch { path, expected: payload.size, actual: size });
            }
            let sink_err = |source| PackageError::Sink { path: payload.path.clone(), source };
            sink.begin(payload).map_err(sink_err)?;
            let mut hasher = Sha256::new();
            // The module's last bytes, where its kernel signature sits.
            let mut tail = Tail::new(payload.module_signer.is_some());
            let mut left = size;
            while left > 0 {
                let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = match entry.read(&mut buf[..want]) {
                    Ok(0) => return Err(PackageError::Truncated(path)),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(PackageError::Truncated(path)),
                    Err(e) => return Err(PackageError::Io(e)),
                };
                hasher.update(&buf[..n]);
                tail.push(&buf[..n]);
                sink.data(payload, &buf[..n]).map_err(sink_err)?;
                left -= n as u64;
            }
            let actual = Sha256Digest(hasher.finalize().into());
            if actual != payload.sha256 {
                return Err(PackageError::HashMismatch { path, expected: payload.sha256, actual });
            }
            if let Some(signer) = &payload.module_signer {
                check_module_signature(&path, signer, tail.bytes())?;
            }
            sink.end(payload).map_err(sink_err)?;
        }
        if let Some(missing) = pending.keys().next() {
            return Err(PackageError::MissingPayload((*missing).to_string()));
        }
        Ok(())
    }
}

/// The last [`modsig::MAX_TAIL`] bytes of a payload, kept only when needed.
struct Tail {
    keep: bool,
    buf: Vec<u8>,
}

impl Tail {
    fn new(keep: bool) -> Self {
        Tail { keep, buf: Vec::new() }
    }

    fn push(&mut self, chunk: &[u8]) {
        if !self.keep {
            return;
        }
        self.buf.extend_from_slice(chunk);
        if self.buf.len() > 2 * modsig::MAX_TAIL {
            self.buf.drain(..self.buf.len() - modsig::MAX_TAIL);
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.buf.len().saturating_sub(modsig::MAX_TAIL)..]
    }
}

/// The payload's appended signature (in `tail`, its last bytes) is the one
/// its manifest records. The kernel verifies the signature itself at load.
fn check_module_signature(path: &str, signer: &ModuleSigner, tail: &[u8]) -> Result<(), PackageError> {
    let err = |why: String| PackageError::ModuleSignature { path: path.into(), signer: signer.to_string(), why };
    match modsig::parse(tail) {
        Ok(Some(sig)) if signer.matches(&sig) => Ok(()),
        Ok(Some(sig)) => Err(err(format!(
            "it is signed by issuer \"{}\", serial {}, not issuer \"{}\", serial {}",
            sig.issuer,
            sig.serial,
            sanitize_to(&signer.issuer, modsig::MAX_NAME_LEN),
            signer.serial
        ))),
        Ok(None) => Err(err("the module has no appended signature".into())),
        Err(e) => Err(err(e.to_string())),
    }
}

/// Opens the package file at `path` for reading: a regular file (a symbolic
/// link to one is followed: the path is the caller's own argument) of at most
/// `limits.max_package_size` bytes. A FIFO or a device is refused at once
/// with [`PackageError::NotRegularFile`], never opened for reading, so
/// `verify`, `inspect` and `install` cannot be made to wait on one.
pub fn open_package(path: &Path, limits: &Limits) -> Result<File, FileError> {
    let source = match open_regular(path, OpenPolicy::follow(limits.max_package_size)) {
        Ok(f) => return Ok(f.file),
        Err(OpenError::NotRegular { kind, .. }) => PackageError::NotRegularFile(kind),
        Err(OpenError::TooLarge { limit, .. }) => PackageError::TooLarge { limit },
        Err(OpenError::Io { source, .. }) => PackageError::Io(source),
    };
    Err(FileError { path: path.to_path_buf(), source })
}

/// Reads and verifies the package at `path`.
pub fn read_package_file(
    path: &Path,
    trust: Trust<'_>,
    limits: &Limits,
    sink: &mut dyn PayloadSink,
) -> Result<VerifiedPackage, FileError> {
    let wrap = |source| FileError { path: path.to_path_buf(), source };
    let file = open_package(path, limits)?;
    read_package(file, trust, limits, sink).map_err(wrap)
}
