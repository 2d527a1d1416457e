//! `milspec-repo add-build`: the same release with builds for more kernels.
//!
//! The input package is read twice: once for its manifest (the new
//! manifest is that one plus one payload per new module, a new `created`,
//! checked with [`republish::added_builds`] before anything is written),
//! and once to stream its payloads, hash-checked again, into the output
//! after the new manifest and signatures. The output is replaced
//! atomically, so a failed run leaves no file behind.

use std::io;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use milspec_format::atomic::AtomicFile;
use milspec_format::manifest::{payload_path, Manifest};
use milspec_format::package::{read_package_file, Discard, Header, Trust, MANIFEST_PATH, SIGNATURES_PATH};
use milspec_format::tarwrite::TarWriter;
use milspec_format::writer::ModuleSigning;
use milspec_format::{read_regular, Sha256Digest, SignatureSet};
use milspec_format::{republish, sanitize, FileError, Limits, ModInfo, OpenPolicy, Payload, SecretKey};

/// A new module read from disk.
struct Build {
    path: PathBuf,
    bytes: Vec<u8>,
    payload: Payload,
}

fn shown(p: &Path) -> String {
    FileError::shown_path(p)
}

fn read_build(
    path: &Path,
    old: &Manifest,
    signing: Option<&dyn ModuleSigning>,
    limits: &Limits,
) -> anyhow::Result<Build> {
    // A module named on the command line may be a link to the build tree.
    let bytes = read_regular(path, OpenPolicy::follow(limits.max_payload_size))
        .with_context(|| format!("{}: cannot read the module", shown(path)))?;
    let info = ModInfo::parse(&bytes).with_context(|| shown(path))?;
    let (bytes, module_signer) = match signing {
        Some(s) => {
            let (b, signer) =
                s.sign(&bytes).map_err(|why| anyhow::anyhow!("{}: cannot sign the module: {why}", shown(path)))?;
            (b, Some(signer))
        }
        None => (bytes, None),
    };
    let version = old.version.to_string();
    if let Some(v) = info.version.as_deref().filter(|v| *v != version) {
        bail!(
            "{}: the module says version {} but the package is {version}; rebuild it with VERSION={version}",
            shown(path),
            sanitize(v)
        );
    }
    // Every build of a package is the same module (pack refuses mixed ones).
    if let Some(first) = old.payloads.first().filter(|p| p.module != info.name) {
        bail!(
            "{}: module `{}` differs from `{}` in the package; a package carries one module",
            shown(path),
            sanitize(&info.name),
            sanitize(&first.module)
        );
    }
    if old.payload_for(&info.kernel_release).is_some() {
        bail!(
            "{}: the package already has a build for kernel {}; add-build only adds kernels (to change a build, publish a new version)",
            shown(path),
            sanitize(&info.kernel_release)
        );
    }
    let payload = Payload {
        path: payload_path(&info.kernel_release, &info.name),
        kernel_release: info.kernel_release,
        module: info.name,
        srcversion: info.srcversion,
        size: bytes.len() as u64,
        sha256: Sha256Digest::of(&bytes),
        module_signer,
    };
    Ok(Build { path: path.to_path_buf(), bytes, payload })
}

/// Streams the input's payloads into the output, after the new header.
struct Copy<'a> {
    expected: &'a Manifest,
    manifest_bytes: &'a [u8],
    signatures: &'a SignatureSet,
    out: &'a Path,
    tar: Option<TarWriter<AtomicFile>>,
}

impl Copy<'_> {
    fn tar(&mut self) -> io::Result<&mut TarWriter<AtomicFile>> {
        self.tar.as_mut().ok_or_else(|| io::Error::other("no header"))
    }
}

impl milspec_format::PayloadSink for Copy<'_> {
    fn start(&mut self, h: &Header<'_>) -> io::Result<()> {
        if h.manifest != self.expected {
            return Err(io::Error::other("the input package changed while it was read; run add-build again"));
        }
        let mut tar = TarWriter::new(AtomicFile::create(self.out, 0o644)?);
        tar.append(MANIFEST_PATH, self.manifest_bytes)?;
        tar.append(SIGNATURES_PATH, &self.signatures.to_bytes())?;
        self.tar = Some(tar);
        Ok(())
    }

    fn begin(&mut self, p: &Payload) -> io::Result<()> {
        self.tar()?.begin(&p.path, p.size)
    }

    fn data(&mut self, _p: &Payload, chunk: &[u8]) -> io::Result<()> {
        self.tar()?.data(chunk)
    }

    fn end(&mut self, _p: &Payload) -> io::Result<()> {
        self.tar()?.end()
    }
}

/// Writes `out`: the package `input` with one more build per module in
/// `modules`, signed by `keys`. Returns the new manifest and the number of
/// builds added.
pub fn add_build(
    input: &Path,
    modules: &[PathBuf],
    keys: &[SecretKey],
    signing: Option<&dyn ModuleSigning>,
    out: &Path,
    limits: &Limits,
) -> anyhow::Result<(Manifest, usize)> {
    if keys.is_empty() {
        bail!("no signing key given: pass at least one --key");
    }
    if input == out {
        bail!("--out must differ from --package: a host may be downloading the input");
    }
    let old = read_package_file(input, Trust::Unverified, limits, &mut Discard)
        .with_context(|| format!("{}: not a package add-build can extend", shown(input)))?
        .manifest;
    let mut builds: Vec<Build> = Vec::new();
    for m in modules {
        let b = read_build(m, &old, signing, limits)?;
        if let Some(o) = builds.iter().find(|o| o.payload.kernel_release == b.payload.kernel_release) {
            bail!(
                "{}: built for kernel {}, which {} is built for too; give one module per kernel release",
                shown(m),
                sanitize(&b.payload.kernel_release),
                shown(&o.path)
            );
        }
        builds.push(b);
    }
    let mut new = old.clone();
    new.created = time::OffsetDateTime::now_utc().replace_nanosecond(0)?;
    new.payloads.extend(builds.iter().map(|b| b.payload.clone()));
    new.validate(limits).context("the package with the new builds is not valid")?;
    // The tool checks its own result by the rule hosts apply.
    let added = republish::added_builds(&old, &new)?.len();
    let manifest_bytes = new.to_bytes();
    let mut signatures = SignatureSet::default();
    for k in keys {
        signatures.add(k, &manifest_bytes)?;
    }
    let mut copy = Copy { expected: &old, manifest_bytes: &manifest_bytes, signatures: &signatures, out, tar: None };
    read_package_file(input, Trust::Unverified, limits, &mut copy)?;
    let write_err = || format!("{}: cannot write", shown(out));
    let mut tar = copy.tar.take().context("the input package had no header")?;
    for b in &builds {
        tar.append(&b.payload.path, &b.bytes).with_context(write_err)?;
    }
    tar.finish().and_then(AtomicFile::commit).with_context(write_err)?;
    Ok((new, added))
}
