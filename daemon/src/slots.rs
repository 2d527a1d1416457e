//! The two A/B slots on disk, below the state folder:
//!
//! ```text
//! slots/<a|b>/format                the slot layout's format number
//!            /manifest.json         the package's signed manifest
//!            /signatures.json       its signatures
//!            /kernels/<release>.ko  one verified build per kernel release
//!            /module.ko             the build for the kernel that ran when the
//!                                   slot was written (what releases before
//!                                   `kernels/` read; a hard link)
//!            /trust.json            the trust it was staged under
//!                                   (crate::staged_trust)
//!            /valid                 the slot is complete
//! ```
//!
//! A slot keeps every build of its package; which one loads is decided by
//! the running kernel's release. A slot that lacks the running kernel's
//! build is still valid: it is a normal, reported condition ([`NoBuild`]),
//! never a damaged slot.
//!
//! A slot is never changed in place. A package is staged into a folder of
//! its own beside the slots (`slots/.staging-XXXXXX`): the builds are
//! written there while the package is being verified, then the signed
//! metadata and `valid`, all read back and checked. Only then does
//! [`SlotStore::replace`] put the staged folder in the slot's place, in one
//! atomic exchange of the two folders. Adding a kernel build to a slot
//! (or dropping one) stages the same way: the builds it keeps are hard
//! links to the slot's files, the new build is written and verified beside
//! them, and the exchange replaces the slot's whole record of its builds
//! last, so a crash at any step leaves the slot as it was, valid for every
//! kernel it served. A rejected package, whatever its bytes, never touches
//! a slot. A slot without `valid` is empty as far as anyone cares.

use std::collections::BTreeSet;
use std::fs::{self, DirBuilder, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use milspec_format::atomic::sync_dir;
use milspec_format::keys::KeyId;
use milspec_format::text::sanitize_to;
use milspec_format::trust_doc::TrustSet;
use milspec_format::{Limits, Manifest, Payload, SignatureSet, TrustedKeys};

use crate::slot_id::SlotId;
use crate::staged_trust::{self, StagedTrust};

const MANIFEST: &str = "manifest.json";
const SIGNATURES: &str = "signatures.json";
const MODULE: &str = "module.ko";
const KERNELS: &str = "kernels";
const VALID: &str = "valid";
/// The slot layout's format number, one decimal line; a slot without the
/// file is format 1 (docs/format.md, "Format versions and evolution").
const FORMAT: &str = "format";
/// The slot format this build reads and writes. A reader ignores files it
/// does not know in a slot folder; a file an older reader must not ignore
/// raises the format. `kernels/` is such an ignorable addition: a reader
/// that does not know it loads `module.ko`, as before.
pub const SLOT_FORMAT: u32 = 1;
/// Largest `format` file read.
const MAX_FORMAT_FILE: u64 = 16;
/// Staging folders beside the slots; never a slot.
const STAGING_PREFIX: &str = ".staging-";

#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("slot {slot}: {}: {source}", path.display())]
    Io { slot: SlotId, path: PathBuf, source: io::Error },
    #[error(
        "slot {slot}: stored manifest no longer verifies ({why}); the slot is treated as invalid: reinstall a package"
    )]
    Untrusted { slot: SlotId, why: String },
    #[error(
        "slot {slot}: the build for kernel {release} does not match the manifest ({why}); the slot was left as it was"
    )]
    Mismatch { slot: SlotId, release: String, why: String },
    #[error("slot {slot}: the slot is format {found}, written by a newer milspecd; this build reads format {supported} at most, so it does not use the slot and leaves it as it is. Upgrade milspecd to the release that wrote it")]
    NewerFormat { slot: SlotId, found: u32, supported: u32 },
    #[error(
        "slot {slot}: holds more than {limit} files in {KERNELS}/; the slot is treated as invalid: reinstall a package"
    )]
    TooManyBuilds { slot: SlotId, limit: usize },
    #[error("slot {slot}: signed by key {key}, which trust document version {version} marks compromised; the slot is refused: install a package signed by a key in force (docs/operations.md, \"Key rotation\")")]
    Compromised { slot: SlotId, key: String, version: u64 },
}

/// A valid slot whose package has no build for the running kernel: a
/// normal condition (a kernel upgrade the package did not cover yet),
/// reported as such and never treated as damage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("slot {slot} holds {version}, which has no build for kernel {release} (it has builds for {}); nothing loaded from it: publish a build of {version} for this kernel (milspec-repo add-build) or boot a kernel it covers", kernels_text(.kernels))]
pub struct NoBuild {
    pub slot: SlotId,
    pub version: String,
    pub release: String,
    pub kernels: Vec<String>,
}

fn kernels_text(k: &[String]) -> String {
    if k.is_empty() {
        "no kernel".into()
    } else {
        k.join(", ")
    }
}

/// One verified build a slot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    /// Its entry in the slot's signed manifest.
    pub payload: Payload,
    /// The file in the slot.
    pub path: PathBuf,
}

/// A valid slot, as read back and verified.
#[derive(Debug, Clone)]
pub struct Slot {
    pub id: SlotId,
    pub manifest: Manifest,
    /// The signed manifest's exact bytes, and its signatures.
    pub manifest_bytes: Vec<u8>,
    pub signatures: SignatureSet,
    /// Every build the slot holds, by kernel release; each is one of the
    /// manifest's payloads.
    pub builds: Vec<Build>,
    /// The kernel release the slot was read for (the running one).
    pub release: String,
    pub signers: Vec<KeyId>,
}

impl Slot {
    /// The build for `release`, if the slot holds one.
    pub fn build(&self, release: &str) -> Option<&Build> {
        self.builds.iter().find(|b| b.payload.kernel_release == release)
    }

    /// The build for the kernel the slot was read for, or why there is none.
    pub fn current(&self) -> Result<&Build, NoBuild> {
        self.build(&self.release).ok_or_else(|| self.no_build(&self.release))
    }

    /// The kernel releases the slot holds builds for, sorted.
    pub fn kernels(&self) -> Vec<String> {
        self.builds.iter().map(|b| b.payload.kernel_release.clone()).collect()
    }

    pub fn no_build(&self, release: &str) -> NoBuild {
        NoBuild {
            slot: self.id,
            version: self.manifest.version.to_string(),
            release: sanitize_to(release, 120),
            kernels: self.kernels(),
        }
    }
}

/// What a slot check needs: who to trust and for which kernel.
#[derive(Debug, Clone, Copy)]
pub struct SlotTrust<'a> {
    pub keys: &'a TrustedKeys,
    pub threshold: usize,
    /// The trust document version `keys` come from (0: the local keys).
    pub version: u64,
    /// Keys the trust in force marks compromised: a slot they signed is
    /// refused, whatever trust it was staged under.
    pub compromised: &'a BTreeSet<KeyId>,
    pub release: &'a str,
    pub limits: &'a Limits,
}

impl<'a> SlotTrust<'a> {
    /// A slot is staged under `set`'s package role.
    pub fn of(set: &'a TrustSet, release: &'a str, limits: &'a Limits) -> Self {
        SlotTrust {
            keys: &set.package.keys,
            threshold: set.package.threshold,
            version: set.version,
            compromised: &set.compromised,
            release,
            limits,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SlotStore {
    root: PathBuf,
}

/// The file of `release`'s build inside a slot folder.
fn build_file(dir: &Path, release: &str) -> PathBuf {
    dir.join(KERNELS).join(format!("{release}.ko"))
}

/// What a restaged slot's record is signed with, so which trust judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restaged {
    /// The slot's own manifest and signatures (a build dropped): it keeps
    /// the trust it was first staged under.
    SameManifest,
    /// A republished manifest, verified just now against the trust in
    /// force (a build added): that trust is recorded, as for a new stage,
    /// so a slot republished after a key rotation verifies by the new keys.
    NewManifest,
}

impl SlotStore {
    /// The slots below `state_dir` as they are, for reading only: nothing
    /// is created, and a missing folder reads as two empty slots (not
    /// valid). What `milspecd status` and an offline `milspecctl status`
    /// read; only [`SlotStore::open`] prepares the folders to write to.
    pub fn at(state_dir: &Path) -> Self {
        SlotStore { root: state_dir.join("slots") }
    }

    /// Opens (and creates, mode 0700) `state_dir/slots/{a,b}`.
    pub fn open(state_dir: &Path) -> Result<Self, SlotError> {
        let store = SlotStore::at(state_dir);
        let root = store.root.clone();
        for id in SlotId::ALL {
            let dir = root.join(id.name());
            DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|source| SlotError::Io {
                slot: id,
                path: dir.clone(),
                source,
            })?;
        }
        Ok(store)
    }

    pub fn dir(&self, id: SlotId) -> PathBuf {
        self.root.join(id.name())
    }

    /// The build of `release` in slot `id` (whether or not it exists).
    pub fn build_path(&self, id: SlotId, release: &str) -> PathBuf {
        build_file(&self.dir(id), release)
    }

    pub fn is_valid(&self, id: SlotId) -> bool {
        self.dir(id).join(VALID).exists()
    }

    fn io(&self, id: SlotId, path: PathBuf) -> impl FnOnce(io::Error) -> SlotError {
        move |source| SlotError::Io { slot: id, path, source }
    }

    /// Removes staging folders left behind by a process that stopped in
    /// the middle of an install (and the previous content of a slot that
    /// was being replaced). They are never part of a slot. Called with the
    /// state lock held.
    pub fn clean_staging(&self) -> Result<(), SlotError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) => return Err(SlotError::Io { slot: SlotId::A, path: self.root.clone(), source: e }),
        };
        let mut removed = false;
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(STAGING_PREFIX) {
                let p = entry.path();
                let res = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
                res.map_err(|source| SlotError::Io { slot: SlotId::A, path: p.clone(), source })?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&self.root).map_err(|source| SlotError::Io {
                slot: SlotId::A,
                path: self.root.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Starts staging a package meant for slot `id`: a fresh folder
    /// `slots/.staging-XXXXXX` with an empty `kernels/` to stream the
    /// builds into. No slot is touched; dropped, it leaves nothing behind.
    pub fn stage(&self, id: SlotId) -> Result<Staging, SlotError> {
        let dir = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(&self.root)
            .map_err(self.io(id, self.root.clone()))?;
        let kernels = dir.path().join(KERNELS);
        DirBuilder::new().mode(0o700).create(&kernels).map_err(self.io(id, kernels.clone()))?;
        Ok(Staging { id, current: None, releases: BTreeSet::new(), dir })
    }

    /// Starts staging a new record of `slot`'s builds, in place of the
    /// slot: the builds `keep` accepts are hard links to the slot's files
    /// (nothing is copied), more can be written with [`Staging::write`].
    /// `trust` says which trust the new record is judged by. The slot
    /// itself is not touched.
    pub fn restage(&self, slot: &Slot, keep: impl Fn(&str) -> bool, trust: Restaged) -> Result<Staging, SlotError> {
        let mut staging = self.stage(slot.id)?;
        for b in slot.builds.iter().filter(|b| keep(&b.payload.kernel_release)) {
            let to = build_file(staging.dir.path(), &b.payload.kernel_release);
            fs::hard_link(&b.path, &to).map_err(self.io(slot.id, to.clone()))?;
            staging.releases.insert(b.payload.kernel_release.clone());
        }
        let recorded = self.dir(slot.id).join(staged_trust::FILE);
        if trust == Restaged::SameManifest && recorded.exists() {
            let to = staging.dir.path().join(staged_trust::FILE);
            fs::hard_link(&recorded, &to).map_err(self.io(slot.id, to.clone()))?;
        }
        Ok(staging)
    }

    /// Finishes staging once the whole package verified: writes the signed
    /// metadata beside the builds, reads everything back and verifies it
    /// (signatures, then every build's hash and size), then writes
    /// `valid`, each file and the folder fsynced. Still no slot is touched.
    pub fn seal(
        &self,
        staging: Staging,
        manifest_bytes: &[u8],
        signatures: &SignatureSet,
        trust: SlotTrust<'_>,
    ) -> Result<StagedSlot, SlotError> {
        let Staging { id, dir, current, releases } = staging;
        let root = dir.path().to_path_buf();
        if let Some((release, file)) = current {
            let p = build_file(&root, &release);
            let file =
                file.into_inner().map_err(|e| SlotError::Io { slot: id, path: p.clone(), source: e.into_error() })?;
            file.sync_all().map_err(self.io(id, p.clone()))?;
        }
        let kernels = root.join(KERNELS);
        sync_dir(&kernels).map_err(self.io(id, kernels.clone()))?;
        let write = |name: &str, data: &[u8]| -> Result<(), SlotError> {
            let p = root.join(name);
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&p)
                .map_err(self.io(id, p.clone()))?;
            f.write_all(data).map_err(self.io(id, p.clone()))?;
            f.sync_all().map_err(self.io(id, p.clone()))
        };
        write(FORMAT, format!("{SLOT_FORMAT}\n").as_bytes())?;
        write(MANIFEST, manifest_bytes)?;
        write(SIGNATURES, &signatures.to_bytes())?;
        if !root.join(staged_trust::FILE).exists() {
            write(staged_trust::FILE, &StagedTrust::of(trust.version, trust.keys, trust.threshold).to_bytes())?;
        }
        // For releases that read `module.ko` only: the running kernel's
        // build when the slot has one, else the first.
        let legacy = releases.get(trust.release).or_else(|| releases.iter().next());
        if let Some(r) = legacy {
            let to = root.join(MODULE);
            fs::hard_link(build_file(&root, r), &to).map_err(self.io(id, to.clone()))?;
        }
        let slot = self.read_dir(id, &root, trust)?;
        for release in &releases {
            let Some(b) = slot.build(release) else {
                return Err(SlotError::Mismatch {
                    slot: id,
                    release: sanitize_to(release, 120),
                    why: "the manifest lists no such build".into(),
                });
            };
            let f = File::open(&b.path).map_err(self.io(id, b.path.clone()))?;
            let (digest, size) = milspec_format::Sha256Digest::of_reader(f, trust.limits.max_payload_size)
                .map_err(self.io(id, b.path.clone()))?;
            if size != Some(b.payload.size) || digest != b.payload.sha256 {
                return Err(SlotError::Mismatch {
                    slot: id,
                    release: release.clone(),
                    why: format!("sha256 {digest}, size {size:?}"),
                });
            }
        }
        write(VALID, format!("{}\n", slot.manifest.version).as_bytes())?;
        sync_dir(&root).map_err(self.io(id, root.clone()))?;
        Ok(StagedSlot { dir, slot })
    }

    /// Puts a staged folder in the place of its slot: one atomic exchange
    /// of the two folders (`renameat2(RENAME_EXCHANGE)`), `slots/` fsynced,
    /// then the previous content (now under the staging name) removed. A
    /// crash at any point leaves the slot either as it was or complete and
    /// valid; a leftover staging folder is removed by
    /// [`SlotStore::clean_staging`]. On a file system without the exchange,
    /// the old folder is moved aside first, so for a moment the slot is
    /// absent (empty, which the caller accepts: the old module is already
    /// unloaded and the slot is being replaced).
    pub fn replace(&self, staged: StagedSlot, trust: SlotTrust<'_>) -> Result<Slot, SlotError> {
        use nix::errno::Errno;
        use nix::fcntl::{renameat2, RenameFlags};

        let id = staged.slot.id;
        let staged_path = staged.dir.keep();
        let target = self.dir(id);
        let root = File::open(&self.root).map_err(self.io(id, self.root.clone()))?;
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |e: Errno| SlotError::Io { slot: id, path, source: io::Error::from(e) }
        };
        let staged_name = staged_path.file_name().map(PathBuf::from).unwrap_or_default();
        let target_name = PathBuf::from(id.name());
        match renameat2(&root, &staged_name, &root, &target_name, RenameFlags::RENAME_EXCHANGE) {
            Ok(()) => {}
            Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {
                let aside = self.root.join(format!("{STAGING_PREFIX}old-{}", id.name()));
                let _ = fs::remove_dir_all(&aside);
                fs::rename(&target, &aside).map_err(self.io(id, target.clone()))?;
                fs::rename(&staged_path, &target).map_err(self.io(id, target.clone()))?;
                fs::rename(&aside, &staged_path).map_err(self.io(id, aside.clone()))?;
            }
            Err(e) => return Err(io_err(&target)(e)),
        }
        sync_dir(&self.root).map_err(self.io(id, self.root.clone()))?;
        fail::fail_point!("install.after-replace");
        fs::remove_dir_all(&staged_path).map_err(self.io(id, staged_path.clone()))?;
        sync_dir(&self.root).map_err(self.io(id, self.root.clone()))?;
        self.read(id, trust)?.ok_or_else(|| SlotError::Mismatch {
            slot: id,
            release: trust.release.to_string(),
            why: "not valid after replacing".into(),
        })
    }

    /// Reads a slot back. `Ok(None)` when the slot is not marked valid.
    /// Signatures are checked again; a build's hash is checked when it is
    /// loaded, on the sealed copy that is handed to the kernel.
    pub fn read(&self, id: SlotId, trust: SlotTrust<'_>) -> Result<Option<Slot>, SlotError> {
        if !self.is_valid(id) {
            return Ok(None);
        }
        self.read_dir(id, &self.dir(id), trust).map(Some)
    }

    fn read_dir(&self, id: SlotId, dir: &Path, trust: SlotTrust<'_>) -> Result<Slot, SlotError> {
        read_format(id, dir)?;
        let read = |name: &str, limit: u64| -> Result<Vec<u8>, SlotError> {
            let p = dir.join(name);
            let data = fs::read(&p).map_err(self.io(id, p.clone()))?;
            if data.len() as u64 > limit {
                return Err(SlotError::Untrusted { slot: id, why: format!("{name} is larger than {limit} bytes") });
            }
            Ok(data)
        };
        let manifest_bytes = read(MANIFEST, trust.limits.max_manifest)?;
        let sig_bytes = read(SIGNATURES, trust.limits.max_signatures_file)?;
        let untrusted = |why: String| SlotError::Untrusted { slot: id, why };
        let signatures = SignatureSet::parse(&sig_bytes, trust.limits).map_err(|e| untrusted(e.to_string()))?;
        // Judged by the trust it was staged under, when it recorded one.
        let recorded = StagedTrust::read(dir).map_err(untrusted)?;
        let (keys, threshold) = match &recorded {
            Some((rec, keys)) => (keys, rec.threshold),
            None => (trust.keys, trust.threshold),
        };
        let signers = signatures.check(&manifest_bytes, keys, threshold).map_err(|e| untrusted(e.to_string()))?;
        if let Some(key) = signers.iter().find(|k| trust.compromised.contains(k)) {
            return Err(SlotError::Compromised { slot: id, key: key.short(), version: trust.version });
        }
        let manifest = Manifest::parse(&manifest_bytes, trust.limits).map_err(|e| untrusted(e.to_string()))?;
        let builds = self.read_builds(id, dir, &manifest, trust)?;
        Ok(Slot { id, manifest, manifest_bytes, signatures, builds, release: trust.release.to_string(), signers })
    }

    /// The builds in `dir/kernels/` the manifest lists (other files there,
    /// such as a build written by an add that did not finish, are not part
    /// of the slot). A slot written before `kernels/` holds one build,
    /// `module.ko`: the payload whose hash it has; if it has none (it was
    /// changed on disk), it stands for the running kernel's payload, so
    /// that loading it reports the damage.
    fn read_builds(
        &self,
        id: SlotId,
        dir: &Path,
        manifest: &Manifest,
        trust: SlotTrust<'_>,
    ) -> Result<Vec<Build>, SlotError> {
        let kernels = dir.join(KERNELS);
        let mut builds = Vec::new();
        match fs::read_dir(&kernels) {
            Ok(entries) => {
                let limit = trust.limits.max_payloads * 2 + 8;
                for (n, entry) in entries.enumerate() {
                    if n >= limit {
                        return Err(SlotError::TooManyBuilds { slot: id, limit });
                    }
                    let entry = entry.map_err(self.io(id, kernels.clone()))?;
                    let name = entry.file_name();
                    let Some(release) = name.to_str().and_then(|n| n.strip_suffix(".ko")) else { continue };
                    if let Some(p) = manifest.payload_for(release) {
                        builds.push(Build { payload: p.clone(), path: entry.path() });
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let path = dir.join(MODULE);
                let found = match File::open(&path) {
                    Ok(f) => {
                        let (digest, size) = milspec_format::Sha256Digest::of_reader(f, trust.limits.max_payload_size)
                            .map_err(self.io(id, path.clone()))?;
                        manifest.payloads.iter().find(|p| p.sha256 == digest && Some(p.size) == size)
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(e) => return Err(SlotError::Io { slot: id, path, source: e }),
                };
                if let Some(p) = found.or_else(|| manifest.payload_for(trust.release)) {
                    builds.push(Build { payload: p.clone(), path });
                }
            }
            Err(e) => return Err(SlotError::Io { slot: id, path: kernels, source: e }),
        }
        builds.sort_by(|a, b| a.payload.kernel_release.cmp(&b.payload.kernel_release));
        Ok(builds)
    }
}

/// The format of the slot in `dir`: 1 without a `format` file; a newer
/// one than [`SLOT_FORMAT`] is refused.
fn read_format(id: SlotId, dir: &Path) -> Result<u32, SlotError> {
    let p = dir.join(FORMAT);
    let raw = match milspec_format::read_regular(&p, milspec_format::OpenPolicy::no_follow(MAX_FORMAT_FILE)) {
        Ok(raw) => raw,
        Err(e) if e.is_not_found() => return Ok(1),
        Err(e) => return Err(SlotError::Untrusted { slot: id, why: e.to_string() }),
    };
    let found = std::str::from_utf8(&raw)
        .ok()
        .and_then(|t| t.strip_suffix('\n'))
        .filter(|t| t.bytes().all(|b| b.is_ascii_digit()) && !t.starts_with('0'))
        .and_then(|t| t.parse::<u32>().ok())
        .ok_or_else(|| SlotError::Untrusted { slot: id, why: format!("{FORMAT} is not one decimal format number") })?;
    if found > SLOT_FORMAT {
        return Err(SlotError::NewerFormat { slot: id, found, supported: SLOT_FORMAT });
    }
    Ok(found)
}

/// A package being staged for a slot, in its own folder beside the slots.
#[derive(Debug)]
pub struct Staging {
    id: SlotId,
    // Declared before `dir`: dropped first, the build file is closed
    // before its folder is removed, so its space is freed at once.
    current: Option<(String, io::BufWriter<File>)>,
    /// The builds in the staging folder (written or linked).
    releases: BTreeSet<String>,
    dir: tempfile::TempDir,
}

impl Staging {
    /// The slot the package is meant for.
    pub fn target(&self) -> SlotId {
        self.id
    }

    /// Whether the staging folder holds a build for `release`.
    pub fn has(&self, release: &str) -> bool {
        self.releases.contains(release)
    }

    /// Appends bytes to the build of `release`: its file is created on the
    /// first chunk (the previous build's file is then finished and fsynced).
    pub fn write(&mut self, release: &str, chunk: &[u8]) -> io::Result<()> {
        if self.current.as_ref().is_none_or(|(r, _)| r != release) {
            if self.releases.contains(release) {
                return Err(io::Error::other(format!("the build for {} is already staged", sanitize_to(release, 120))));
            }
            if let Some((_, done)) = self.current.take() {
                done.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            }
            let p = build_file(self.dir.path(), release);
            let f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&p)?;
            self.releases.insert(release.to_string());
            self.current = Some((release.to_string(), io::BufWriter::with_capacity(256 * 1024, f)));
        }
        match &mut self.current {
            Some((_, f)) => f.write_all(chunk),
            None => Err(io::Error::other("no build file open")),
        }
    }
}

/// A fully staged and verified package, not yet in its slot. Dropped, its
/// folder is removed and the slot stays exactly as it was.
#[derive(Debug)]
pub struct StagedSlot {
    dir: tempfile::TempDir,
    slot: Slot,
}

impl StagedSlot {
    /// The staged slot as read back; its `module_path` is in the staging
    /// folder (load from it, or from the slot after [`SlotStore::replace`]).
    pub fn slot(&self) -> &Slot {
        &self.slot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_format_missing_is_1_newer_is_refused() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_format(SlotId::A, d.path()).unwrap(), 1);
        fs::write(d.path().join(FORMAT), b"1\n").unwrap();
        assert_eq!(read_format(SlotId::A, d.path()).unwrap(), 1);
        fs::write(d.path().join(FORMAT), b"2\n").unwrap();
        let e = read_format(SlotId::B, d.path()).unwrap_err();
        assert!(matches!(e, SlotError::NewerFormat { slot: SlotId::B, found: 2, supported: SLOT_FORMAT }), "{e}");
        assert!(e.to_string().contains("Upgrade milspecd"), "{e}");
        for bad in
            [&b"01\n"[..], b"1", b"+1\n", b"one\n", b" 1\n", b"99999999999\n", b"1\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n\n"]
        {
            fs::write(d.path().join(FORMAT), bad).unwrap();
            let e = read_format(SlotId::A, d.path()).unwrap_err();
            assert!(matches!(e, SlotError::Untrusted { .. }), "{bad:?}: {e}");
        }
        fs::remove_file(d.path().join(FORMAT)).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", d.path().join(FORMAT)).unwrap();
        assert!(matches!(read_format(SlotId::A, d.path()), Err(SlotError::Untrusted { .. })));
    }
}
