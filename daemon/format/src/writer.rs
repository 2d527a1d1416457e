//! Writing packages: `pack` builds one from kernel modules, `add_signature`
//! adds one more signature to an existing one. Output is replaced
//! atomically, so a failed write leaves no file behind.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::atomic::AtomicFile;
use crate::digest::Sha256Digest;
use crate::keys::SecretKey;
use crate::limits::Limits;
use crate::manifest::{self, Manifest, ManifestError, Payload, Probation, Requires};
use crate::modinfo::{ModInfo, ModInfoError};
use crate::modsig::ModuleSigner;
use crate::package::{self, Header, PackageError, PayloadSink, Trust, MANIFEST_PATH, SIGNATURES_PATH};
use crate::regular::{read_regular, OpenError, OpenPolicy};
use crate::signature::{SignatureError, SignatureSet};
use crate::tarwrite::TarWriter;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{}: {source}", path.display())]
    ModInfo { path: PathBuf, source: ModInfoError },
    #[error("{}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: larger than the payload limit of {limit} bytes", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{}: module `{found}` differs from `{expected}` in {}; a package carries one module", path.display(), first.display())]
    MixedModules { path: PathBuf, found: String, expected: String, first: PathBuf },
    #[error("{}: built for kernel {release}, which {} is built for too; give one module per kernel release", path.display(), other.display())]
    SameRelease { path: PathBuf, release: String, other: PathBuf },
    #[error("{}: the module says version {found} but the package is {expected}; rebuild it with VERSION={expected}", path.display())]
    VersionMismatch { path: PathBuf, found: String, expected: String },
    #[error("no module given: pass at least one --module")]
    NoModules,
    #[error("no signing key given: pass at least one --key")]
    NoKeys,
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Package(#[from] package::FileError),
    #[error("{}: cannot write: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Open(OpenError),
    #[error("{}: cannot sign the module: {why}", path.display())]
    ModuleSign { path: PathBuf, why: String },
}

/// Gives each module its kernel signature as a package is packed (the
/// publisher's tool holds the key; this crate only records the result).
pub trait ModuleSigning {
    /// `module` as it goes into the package (signed, or already signed by
    /// the certificate this signer stands for) and the record of its signer;
    /// the error says what to do.
    fn sign(&self, module: &[u8]) -> Result<(Vec<u8>, ModuleSigner), String>;
}

/// What the publisher says about a package beyond its modules.
#[derive(Debug, Clone)]
pub struct PackOptions {
    pub version: semver::Version,
    pub sequence: u64,
    pub created: OffsetDateTime,
    pub params: BTreeMap<String, String>,
    pub probation: Option<Probation>,
    pub requires: Requires,
}

/// The default anti-rollback sequence for a release version:
/// `major * 10^9 + minor * 10^6 + patch * 10^3`, so later versions always get
/// a higher sequence. Returns `None` for pre-releases and for minor or patch
/// numbers of 1000 or more, for 0.0.0 and for a major number too large,
/// which need an explicit sequence.
pub fn default_sequence(v: &semver::Version) -> Option<u64> {
    if !v.pre.is_empty() || v.minor >= 1000 || v.patch >= 1000 {
        return None;
    }
    v.major.checked_mul(1_000_000_000)?.checked_add(v.minor * 1_000_000 + v.patch * 1000).filter(|s| *s > 0)
}

struct Module {
    path: PathBuf,
    bytes: Vec<u8>,
    info: ModInfo,
    signer: Option<ModuleSigner>,
}

fn read_module(path: &Path, limits: &Limits) -> Result<Module, WriteError> {
    // A module named on the command line may be a link to the build tree.
    let bytes = read_regular(path, OpenPolicy::follow(limits.max_payload_size)).map_err(|e| match e {
        OpenError::TooLarge { .. } => WriteError::TooLarge { path: path.to_path_buf(), limit: limits.max_payload_size },
        OpenError::Io { source, .. } => WriteError::Read { path: path.to_path_buf(), source },
        e @ OpenError::NotRegular { .. } => WriteError::Open(e),
    })?;
    let info = ModInfo::parse(&bytes).map_err(|source| WriteError::ModInfo { path: path.to_path_buf(), source })?;
    Ok(Module { path: path.to_path_buf(), bytes, info, signer: None })
}

/// Signs `m` with `signing`, if given: the bytes hashed are the signed ones.
fn sign_module(mut m: Module, signing: Option<&dyn ModuleSigning>) -> Result<Module, WriteError> {
    if let Some(s) = signing {
        let (bytes, signer) = s.sign(&m.bytes).map_err(|why| WriteError::ModuleSign { path: m.path.clone(), why })?;
        m.bytes = bytes;
        m.signer = Some(signer);
    }
    Ok(m)
}

/// Builds a package from `.ko` files and writes it to `out`, signed by every
/// key in `keys`; with `signing`, each module gets its kernel signature
/// first. Each module is read once into memory, so the bytes hashed are
/// the bytes stored.
pub fn pack(
    modules: &[PathBuf],
    opts: &PackOptions,
    keys: &[SecretKey],
    signing: Option<&dyn ModuleSigning>,
    out: &Path,
    limits: &Limits,
) -> Result<Manifest, WriteError> {
    if modules.is_empty() {
        return Err(WriteError::NoModules);
    }
    if keys.is_empty() {
        return Err(WriteError::NoKeys);
    }
    let mods = modules
        .iter()
        .map(|p| read_module(p, limits).and_then(|m| sign_module(m, signing)))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, m) in mods.iter().enumerate() {
        // The daemon tells which slot is live by the module's own version.
        if let Some(v) = m.info.version.as_deref().filter(|v| *v != opts.version.to_string()) {
            return Err(WriteError::VersionMismatch {
                path: m.path.clone(),
                found: v.to_string(),
                expected: opts.version.to_string(),
            });
        }
        let first = &mods[0];
        if m.info.name != first.info.name {
            return Err(WriteError::MixedModules {
                path: m.path.clone(),
                found: m.info.name.clone(),
                expected: first.info.name.clone(),
                first: first.path.clone(),
            });
        }
        if let Some(o) = mods[..i].iter().find(|o| o.info.kernel_release == m.info.kernel_release) {
            return Err(WriteError::SameRelease {
                path: m.path.clone(),
                release: m.info.kernel_release.clone(),
                other: o.path.clone(),
            });
        }
    }
    let manifest = Manifest {
        format: manifest::FORMAT_VERSION,
        kind: manifest::KIND.into(),
        name: manifest::PACKAGE_NAME.into(),
        version: opts.version.clone(),
        sequence: opts.sequence,
        created: opts.created,
        payloads: mods
            .iter()
            .map(|m| Payload {
                kernel_release: m.info.kernel_release.clone(),
                module: m.info.name.clone(),
                srcversion: m.info.srcversion.clone(),
                path: manifest::payload_path(&m.info.kernel_release, &m.info.name),
                size: m.bytes.len() as u64,
                sha256: Sha256Digest::of(&m.bytes),
                module_signer: m.signer.clone(),
            })
            .collect(),
        params: opts.params.clone(),
        probation: opts.probation.clone(),
        requires: opts.requires.clone(),
    };
    manifest.validate(limits)?;
    let manifest_bytes = manifest.to_bytes();
    let mut sigs = SignatureSet::default();
    for k in keys {
        sigs.add(k, &manifest_bytes)?;
    }
    let write_err = |source| WriteError::Write { path: out.to_path_buf(), source };
    let file = AtomicFile::create(out, 0o644).map_err(write_err)?;
    let mut tar = TarWriter::new(file);
    let res = (|| -> io::Result<AtomicFile> {
        tar.append(MANIFEST_PATH, &manifest_bytes)?;
        tar.append(SIGNATURES_PATH, &sigs.to_bytes())?;
        for (m, p) in mods.iter().zip(&manifest.payloads) {
            tar.append(&p.path, &m.bytes)?;
        }
        tar.finish()
    })();
    res.and_then(AtomicFile::commit).map_err(write_err)?;
    Ok(manifest)
}

/// Copies a package into a new archive with one more signature.
struct Resign<'a> {
    key: &'a SecretKey,
    tar: Option<TarWriter<AtomicFile>>,
    out: &'a Path,
    signatures: Option<SignatureSet>,
}

impl PayloadSink for Resign<'_> {
    fn start(&mut self, h: &Header<'_>) -> io::Result<()> {
        let mut sigs = h.signatures.clone();
        sigs.add(self.key, h.manifest_bytes).map_err(io::Error::other)?;
        let mut tar = TarWriter::new(AtomicFile::create(self.out, 0o644)?);
        tar.append(MANIFEST_PATH, h.manifest_bytes)?;
        tar.append(SIGNATURES_PATH, &sigs.to_bytes())?;
        self.tar = Some(tar);
        self.signatures = Some(sigs);
        Ok(())
    }

    fn begin(&mut self, p: &Payload) -> io::Result<()> {
        self.tar.as_mut().ok_or_else(|| io::Error::other("no header"))?.begin(&p.path, p.size)
    }

    fn data(&mut self, _p: &Payload, chunk: &[u8]) -> io::Result<()> {
        self.tar.as_mut().ok_or_else(|| io::Error::other("no header"))?.data(chunk)
    }

    fn end(&mut self, _p: &Payload) -> io::Result<()> {
        self.tar.as_mut().ok_or_else(|| io::Error::other("no header"))?.end()
    }
}

/// Adds a signature by `key` to the package at `path`, in place. The
/// package's structure and payload hashes are checked first; a key that
/// already signed is refused.
pub fn add_signature(path: &Path, key: &SecretKey, limits: &Limits) -> Result<(Manifest, SignatureSet), WriteError> {
    let mut sink = Resign { key, tar: None, out: path, signatures: None };
    let res = package::read_package_file(path, Trust::Unverified, limits, &mut sink);
    let pkg = match res {
        Ok(pkg) => pkg,
        Err(e) => {
            // A signature refusal surfaces through the sink; report it as such.
            let refused = match &e.source {
                PackageError::Sink { source, .. } => source.get_ref().and_then(|r| r.downcast_ref::<SignatureError>()),
                _ => None,
            };
            if let Some(SignatureError::AlreadySigned(id)) = refused {
                return Err(WriteError::Signature(SignatureError::AlreadySigned(*id)));
            }
            return Err(e.into());
        }
    };
    let write_err = |source| WriteError::Write { path: path.to_path_buf(), source };
    let tar = sink.tar.take().ok_or_else(|| write_err(io::Error::other("package had no header")))?;
    tar.finish().and_then(AtomicFile::commit).map_err(write_err)?;
    let sigs = sink.signatures.take().unwrap_or_default();
    Ok((pkg.manifest, sigs))
}
