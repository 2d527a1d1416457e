//! Pulling updates from a mirror: a folder of static files (packages and
//! one signed `index.json`) served over HTTP(S) or mounted as `file://`.
//! This is a fetch layer: it decides and downloads, and never installs.
//!
//! One poll ([`Poller::poll`]):
//!
//! 0. walk the trust documents after the one held ([`rotation`]): the
//!    keys that sign the index and the packages may have been rotated;
//! 1. fetch the index with a conditional GET (ETag / If-Modified-Since);
//!    a 304 reuses the last accepted index from the state folder;
//! 2. refuse an index that is unsigned or under threshold, older than the
//!    last accepted one (rollback), or expired (freeze); persist it;
//! 3. pick the entry for this host ([`decide`], pure, clock as input):
//!    kernel release, not revoked, not blocklisted, newer than committed,
//!    and its rollout wave has reached this host; the host's side of that
//!    ([`PollHost`]) comes from the caller, which owns the host's state;
//! 4. download it to a temporary file in the state folder, capped at the
//!    size the index gives and hashed as it streams;
//! 5. check that the package's own signed manifest agrees with the index
//!    entry (no mix and match), and return the open file in
//!    [`PollReport::Install`]. Installing it is the engine's job
//!    (`crate::check` joins the two).
//!
//! If the committed version is revoked, the newest non-revoked version the
//! host may take (an older one counts as rolled out) is returned with
//! `allow_downgrade: true`: revocation is the publisher's signed word that
//! the running version must go, which outranks anti-rollback.

pub mod fetch;
pub mod proxy;
pub mod rotation;
pub mod store;
pub mod transport;
pub mod trust;

use std::fs::File;
use std::io::{self, Seek};
use std::path::PathBuf;
use std::time::Duration;

use milspec_format::index::{self, HostFacts, Index, IndexEntry, IndexError, Selection, VerifiedIndex, Why};
use milspec_format::package::{PackageError, PackageStream, Trust};
use milspec_format::text::Escaped;
use milspec_format::trust_doc::TrustSet;
use milspec_format::{KeyError, Limits};
use time::OffsetDateTime;
use tracing::{info, warn};

use crate::config::{Config, SourceConfig};
use crate::trust_store::{self, TrustStore, TrustStoreError};

use fetch::{Fetched, RetryPolicy};
use store::{MirrorStore, Record, StoreError};
use transport::{FetchError, Timeouts, Transport};

/// Longest machine id read.
const MAX_MACHINE_ID: u64 = 256;

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("no [source] in the configuration: nothing to pull from; add [source] url = \"https://…/\"")]
    NoSource,
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("{url}: index refused: {source}")]
    Index { url: String, source: IndexError },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}: cannot read this host's machine id ({why}); it places the host in rollout waves: set [source] machine_id_file", path.display())]
    MachineId { path: PathBuf, why: String },
    #[error("{url}: package {version} is {size} bytes, more than [source] max_package_size {limit}; not downloaded")]
    TooLarge { url: String, version: String, size: u64, limit: u64 },
    #[error("{url}: the package does not match its index entry for {version} ({why}); the mirror mixes files; nothing installed")]
    Mismatch { url: String, version: String, why: String },
    #[error("{url}: downloaded package refused: {source}")]
    Package { url: String, source: PackageError },
    #[error("cannot make a download file in {}: {source}", path.display())]
    Temp { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Trust(#[from] trust::TrustError),
    #[error(transparent)]
    Proxy(#[from] proxy::ProxyError),
    #[error("[source] ca_file is set, but {url} is a file:// mirror, which has no TLS; remove ca_file")]
    CaFileForFileMirror { url: String },
    #[error(transparent)]
    Rotation(rotation::RotationError),
    #[error(transparent)]
    TrustStore(TrustStoreError),
}

impl From<rotation::RotationError> for MirrorError {
    fn from(e: rotation::RotationError) -> Self {
        match e {
            rotation::RotationError::Fetch(f) => MirrorError::Fetch(f),
            rotation::RotationError::Store(s) => s.into(),
            other => MirrorError::Rotation(other),
        }
    }
}

impl From<TrustStoreError> for MirrorError {
    fn from(e: TrustStoreError) -> Self {
        match e {
            TrustStoreError::Keys(k) => MirrorError::Keys(k),
            other => MirrorError::TrustStore(other),
        }
    }
}

/// How far a package download is: `received` of `total` bytes (told with
/// 0 before the first byte, then after each chunk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadProgress<'a> {
    pub version: &'a str,
    pub received: u64,
    pub total: u64,
}

/// What one poll decided. Only [`PollReport::Install`] asks for action:
/// its file is downloaded, checked against the signed index and rewound.
#[derive(Debug)]
pub enum PollReport {
    UpToDate {
        index_version: u64,
        not_modified: bool,
    },
    Waiting {
        index_version: u64,
        version: String,
        position: f64,
        fraction: f64,
        next_wave: Option<String>,
    },
    RevokedNoReplacement {
        index_version: u64,
        current: String,
    },
    Install(Download),
    /// The committed version republished with a build for the kernel
    /// asked about: add that build to the committed slot (no trial).
    AddBuild(Download),
    /// Nothing on the mirror has a build for the kernel asked about that
    /// this host may take.
    NoBuild {
        index_version: u64,
        kernel_release: String,
    },
}

/// A package the mirror offers this host, downloaded and matched with its
/// index entry (the package's own signatures are checked again on install).
#[derive(Debug)]
pub struct Download {
    pub index_version: u64,
    pub version: String,
    /// `upgrade`, or `replaces revoked <version>`.
    pub reason: String,
    /// The running version is revoked: a lower version may replace it.
    pub allow_downgrade: bool,
    /// The package, open and rewound; its name is already gone.
    pub file: File,
    /// The package's SHA-256, as the signed index gives it.
    pub sha256: milspec_format::Sha256Digest,
}

/// The host's side of the decision, from whoever owns the host's state.
#[derive(Debug, Clone, Default)]
pub struct PollHost {
    pub kernel_release: String,
    /// The committed version and its sequence.
    pub current: Option<(semver::Version, u64)>,
    pub blocklist: Vec<semver::Version>,
    pub max_sequence: u64,
    /// The committed slot holds a usable build for `kernel_release` (or
    /// nothing is committed).
    pub has_build: bool,
    /// (version, kernel) builds that failed here.
    pub blocked_builds: Vec<(semver::Version, String)>,
    /// Installed kernels (and the running one) the committed version has
    /// no build for.
    pub kernels_without_build: Vec<String>,
}

impl PollHost {
    /// The entry of the committed version republished with a build for
    /// `release` that this host may take.
    fn build_entry<'a>(&self, index: &'a Index, release: &str) -> Option<&'a IndexEntry> {
        let (v, seq) = self.current.as_ref()?;
        if self.blocked_builds.iter().any(|(bv, br)| bv == v && br == release) {
            return None;
        }
        index::select_build(index, (v, *seq), release)
    }
}

/// Inputs of one poll.
#[derive(Debug, Clone, Copy)]
pub struct PollOptions {
    /// The wall clock, as an input.
    pub now: OffsetDateTime,
    /// Ignore the wave schedule (the operator's `--now`).
    pub force: bool,
}

/// The pure poll decision: refuse an expired index, then pick.
pub fn decide<'a>(index: &'a Index, host: &HostFacts<'_>) -> Result<Selection<'a>, IndexError> {
    index.check_expiry(host.now)?;
    Ok(index::select(index, host))
}

/// The wait before the next poll: `interval` plus up to 10 % jitter
/// (`unit` in [0, 1)), so a fleet started together spreads out.
pub fn next_poll_delay(interval: Duration, unit: f64) -> Duration {
    interval + interval.mul_f64(0.1 * unit.clamp(0.0, 1.0))
}

/// The mirror root with exactly one trailing `/`.
pub fn base_url(url: &str) -> String {
    format!("{}/", url.trim_end_matches('/'))
}

/// Pulls from one mirror.
pub struct Poller {
    cfg: Config,
    source: SourceConfig,
    base: String,
    transport: Box<dyn Transport>,
    store: MirrorStore,
    /// The trust in force, updated by each poll's rotation walk.
    trust: std::sync::Mutex<TrustSet>,
    trust_store: TrustStore,
    /// Retries per fetch; tests shorten the waits.
    pub retry: RetryPolicy,
    sleep: Box<dyn Fn(Duration) + Send + Sync>,
    /// Kernel-build republishes this host refused (by package hash): not
    /// downloaded again, so a bad one costs one download and one
    /// `rejected` record, not one each poll. Kept while the daemon runs.
    refused: std::sync::Mutex<Vec<milspec_format::Sha256Digest>>,
    /// When the last index accepted (fetched or not modified) expires.
    expires: std::sync::Mutex<Option<OffsetDateTime>>,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller").field("url", &self.source.url).finish_non_exhaustive()
    }
}

/// The transport for `[source]`: a `file://` folder, or HTTP(S) trusting
/// the system CA store plus `ca_file`, through the proxy the environment
/// names for the url (see [`proxy`]).
pub fn open_transport(source: &SourceConfig) -> Result<Box<dyn Transport>, MirrorError> {
    let t = Timeouts { connect: source.connect_timeout, total: source.timeout };
    if source.url.starts_with("file://") {
        if source.ca_file.is_some() {
            return Err(MirrorError::CaFileForFileMirror { url: Escaped(&source.url).to_string() });
        }
        return Ok(transport::for_url(&source.url, t)?);
    }
    if !source.url.starts_with("http://") && !source.url.starts_with("https://") {
        return Err(FetchError::Unsupported { url: source.url.clone() }.into());
    }
    let roots = trust::Roots::load(source.ca_file.as_deref())?;
    let choice = proxy::from_env(&source.url)?;
    match &choice {
        proxy::Choice::Proxy(p) => info!("mirror: connecting through the proxy {} (from {})", p.display(), p.var),
        proxy::Choice::Bypassed { var } => info!("mirror: the mirror's host matches {var}: connecting directly"),
        proxy::Choice::Direct => {}
    }
    Ok(Box::new(transport::HttpTransport::with(t, &roots, choice.proxy())))
}

impl Poller {
    /// A poller for `[source]`, with the transport its url asks for.
    pub fn new(cfg: &Config) -> Result<Self, MirrorError> {
        let source = cfg.source.clone().ok_or(MirrorError::NoSource)?;
        let t = open_transport(&source)?;
        Self::with_transport(cfg, t)
    }

    pub fn with_transport(cfg: &Config, transport: Box<dyn Transport>) -> Result<Self, MirrorError> {
        let source = cfg.source.clone().ok_or(MirrorError::NoSource)?;
        let trust = trust_store::in_force(cfg)?;
        Ok(Poller {
            base: base_url(&source.url),
            retry: RetryPolicy { attempts: source.attempts, ..RetryPolicy::default() },
            store: MirrorStore::new(&cfg.paths.state_dir),
            transport,
            trust: std::sync::Mutex::new(trust),
            trust_store: TrustStore::new(&cfg.paths.state_dir),
            source,
            cfg: cfg.clone(),
            sleep: Box::new(std::thread::sleep),
            refused: std::sync::Mutex::new(Vec::new()),
            expires: std::sync::Mutex::new(None),
        })
    }

    /// The engine refused the kernel-build republish `sha256`: never
    /// offer it again (bounded: the oldest go first).
    pub fn refuse_build(&self, sha256: milspec_format::Sha256Digest) {
        let mut r = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        if !r.contains(&sha256) {
            if r.len() >= 64 {
                r.remove(0);
            }
            r.push(sha256);
        }
    }

    fn is_refused(&self, entry: &IndexEntry) -> bool {
        self.refused.lock().unwrap_or_else(|e| e.into_inner()).contains(&entry.sha256)
    }

    /// When the last index this poller accepted expires (`None`: none yet).
    pub fn index_expires(&self) -> Option<OffsetDateTime> {
        *self.expires.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces how retries wait (tests count instead of sleeping).
    pub fn set_sleep(&mut self, sleep: Box<dyn Fn(Duration) + Send + Sync>) {
        self.sleep = sleep;
    }

    /// The mirror's root (`[source] url`), as the history names a download's origin.
    pub fn mirror_url(&self) -> &str {
        &self.base
    }

    pub fn index_url(&self) -> String {
        format!("{}{}", self.base, index::INDEX_FILE)
    }

    /// The trust in force, as the last poll left it.
    pub fn trust(&self) -> TrustSet {
        self.trust.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Walks the mirror's trust documents after the one held
    /// ([`rotation::walk`]) and returns the trust in force after it.
    pub fn rotate(&self, now: OffsetDateTime) -> Result<TrustSet, MirrorError> {
        let src = rotation::Source {
            transport: &*self.transport,
            base: &self.base,
            retry: &self.retry,
            sleep: &*self.sleep,
            timeout: self.source.timeout,
        };
        // The file is the authority: another process may have walked on.
        let held = trust_store::in_force(&self.cfg)?;
        let set = rotation::walk(&src, &self.trust_store, held, now)?;
        *self.trust.lock().unwrap_or_else(|e| e.into_inner()) = set.clone();
        Ok(set)
    }

    /// Walks the trust documents, then fetches, verifies and persists the
    /// index. Returns it and whether the mirror said "not modified".
    pub fn fetch_index(&self, now: OffsetDateTime) -> Result<(VerifiedIndex, bool), MirrorError> {
        let trust = self.rotate(now)?;
        let url = self.index_url();
        let (keys, threshold) = (&trust.index.keys, trust.index.threshold);
        let refused = |source| MirrorError::Index { url: url.clone(), source };
        let record = self.store.record()?;
        let cached = self.store.index(keys, threshold)?;
        let validators = match (&record, &cached) {
            (Some(r), Some(c)) if r.url == url && r.digest == c.digest => Some(&r.validators),
            _ => None,
        };
        let fetched = self.retry.run("index", &*self.sleep, || {
            fetch::fetch_small(&*self.transport, &url, validators, index::MAX_INDEX_FILE, self.source.timeout)
        })?;
        let (bytes, new_validators) = match fetched {
            Fetched::NotModified => {
                // `validators` was only sent with a cached index at hand.
                let Some(c) = cached else {
                    return Err(FetchError::Transfer { url, detail: "304 to an unconditional request".into() }.into());
                };
                c.index.check_expiry(now).map_err(refused)?;
                *self.expires.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.index.expires);
                return Ok((c, true));
            }
            Fetched::Body { bytes, validators } => (bytes, validators),
        };
        let v = index::verify_index(&bytes, keys, threshold).map_err(refused)?;
        index::check_not_older(&v, record.as_ref().map(|r| (r.version, r.digest))).map_err(refused)?;
        v.index.check_expiry(now).map_err(refused)?;
        *self.expires.lock().unwrap_or_else(|e| e.into_inner()) = Some(v.index.expires);
        let rec = Record {
            url: url.clone(),
            version: v.index.version,
            digest: v.digest,
            validators: new_validators,
            accepted_at: now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        };
        if record.as_ref().is_some_and(|r| r.digest == v.digest) && cached.is_some() {
            self.store.save_record(&rec)?;
        } else {
            self.store.save(&bytes, &rec)?;
            info!(url = %url, version = v.index.version, "accepted index version {}", v.index.version);
        }
        Ok((v, false))
    }

    fn machine_id(&self) -> Result<String, MirrorError> {
        let path = &self.source.machine_id_file;
        let bad = |why: String| MirrorError::MachineId { path: path.clone(), why };
        let raw = milspec_format::read_regular(path, milspec_format::OpenPolicy::follow(MAX_MACHINE_ID))
            .map_err(|e| bad(e.to_string()))?;
        let s = String::from_utf8(raw).map_err(|_| bad("it is not text".into()))?;
        let id = s.trim().to_string();
        if id.is_empty() {
            return Err(bad("it is empty".into()));
        }
        Ok(id)
    }

    /// One poll: index, decision and, if there is one to take, the
    /// download. `downloading` is told how far the download is (first with 0).
    pub fn poll(
        &self,
        host: &PollHost,
        opts: PollOptions,
        downloading: &mut dyn FnMut(DownloadProgress<'_>),
    ) -> Result<PollReport, MirrorError> {
        let (vi, not_modified) = self.fetch_index(opts.now)?;
        let index_version = vi.index.version;
        let machine_id = self.machine_id()?;
        let facts = HostFacts {
            kernel_release: &host.kernel_release,
            machine_id: &machine_id,
            now: opts.now,
            blocklist: &host.blocklist,
            max_sequence: host.max_sequence,
            current: host.current.as_ref().map(|(v, s)| (v, *s)),
            ignore_waves: opts.force,
        };
        let selection =
            decide(&vi.index, &facts).map_err(|source| MirrorError::Index { url: self.index_url(), source })?;
        // The committed version first gets its build for this kernel: it
        // needs no trial, and it is what a later upgrade falls back to.
        if !host.has_build {
            if let Some(entry) = host.build_entry(&vi.index, &host.kernel_release).filter(|e| !self.is_refused(e)) {
                return self.add_build(index_version, entry, downloading);
            }
        }
        let (entry, why) = match selection {
            Selection::UpToDate
                if !host.has_build
                    || (host.current.is_none()
                        && !vi.index.packages.is_empty()
                        && !vi.index.packages.iter().any(|e| e.kernel_releases.contains(&host.kernel_release))) =>
            {
                let kernel_release = host.kernel_release.clone();
                warn!(
                    message_id = crate::journal::NO_BUILD,
                    "the mirror has no build for the running kernel {} that this host may take; polling on",
                    Escaped(&kernel_release)
                );
                return Ok(PollReport::NoBuild { index_version, kernel_release });
            }
            Selection::UpToDate => return Ok(PollReport::UpToDate { index_version, not_modified }),
            Selection::Waiting { entry, position, fraction, next } => {
                return Ok(PollReport::Waiting {
                    index_version,
                    version: entry.version.to_string(),
                    position,
                    fraction,
                    next_wave: next.and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
                })
            }
            Selection::RevokedNoReplacement { current } => {
                warn!("running version {current} is revoked by the mirror and nothing replaces it");
                return Ok(PollReport::RevokedNoReplacement { index_version, current: current.to_string() });
            }
            Selection::Install { entry, why } => (entry, why),
        };
        let reason = match &why {
            Why::Upgrade => "upgrade".to_string(),
            Why::Revoked { current } => format!("replaces revoked {current}"),
        };
        let version = entry.version.to_string();
        info!(%version, "pulling {version} from the mirror ({reason})");
        downloading(DownloadProgress { version: &version, received: 0, total: entry.size });
        let file = self.download(entry, downloading)?;
        let allow_downgrade = matches!(why, Why::Revoked { .. });
        Ok(PollReport::Install(Download {
            index_version,
            version,
            reason,
            allow_downgrade,
            file,
            sha256: entry.sha256,
        }))
    }

    /// For a kernel just installed: fetches the index and, if it carries
    /// the committed version republished with a build for `release`,
    /// downloads it ([`PollReport::AddBuild`]); else [`PollReport::NoBuild`].
    pub fn poll_build(
        &self,
        host: &PollHost,
        release: &str,
        opts: PollOptions,
        downloading: &mut dyn FnMut(DownloadProgress<'_>),
    ) -> Result<PollReport, MirrorError> {
        let (vi, _) = self.fetch_index(opts.now)?;
        match host.build_entry(&vi.index, release).filter(|e| !self.is_refused(e)) {
            Some(entry) => self.add_build(vi.index.version, entry, downloading),
            None => Ok(PollReport::NoBuild { index_version: vi.index.version, kernel_release: release.to_string() }),
        }
    }

    fn add_build(
        &self,
        index_version: u64,
        entry: &IndexEntry,
        downloading: &mut dyn FnMut(DownloadProgress<'_>),
    ) -> Result<PollReport, MirrorError> {
        let version = entry.version.to_string();
        info!(%version, "pulling the republished {version} from the mirror (more kernel builds)");
        downloading(DownloadProgress { version: &version, received: 0, total: entry.size });
        let file = self.download(entry, downloading)?;
        Ok(PollReport::AddBuild(Download {
            index_version,
            version,
            reason: "kernel build".into(),
            allow_downgrade: false,
            file,
            sha256: entry.sha256,
        }))
    }

    /// Downloads an entry to a temporary file in the state folder (removed
    /// when dropped) and checks it against the entry. Returns the open file,
    /// rewound.
    pub fn download(
        &self,
        entry: &IndexEntry,
        progress: &mut dyn FnMut(DownloadProgress<'_>),
    ) -> Result<File, MirrorError> {
        let url = format!("{}{}", self.base, entry.path);
        if entry.size > self.source.max_package_size {
            return Err(MirrorError::TooLarge {
                url,
                version: entry.version.to_string(),
                size: entry.size,
                limit: self.source.max_package_size,
            });
        }
        self.store.ensure_dir()?;
        let dir = self.store.dir().to_path_buf();
        let temp = tempfile::Builder::new()
            .prefix(".download-")
            .suffix(".mspkg")
            .tempfile_in(&dir)
            .map_err(|source| MirrorError::Temp { path: dir.clone(), source })?;
        let (mut file, path) = temp.into_parts();
        let total = self.source.timeout;
        self.retry.run("package", &*self.sleep, || {
            let version = entry.version.to_string();
            let mut told = |received| progress(DownloadProgress { version: &version, received, total: entry.size });
            fetch::download(&*self.transport, &url, entry.size, &entry.sha256, &mut file, &path, total, &mut told)
        })?;
        // Mix and match: the signed manifest must be the one the index means.
        // Only the signed header is read here: the file's bytes already match
        // the hash the signed index gives, and the engine verifies every
        // payload as it stages them, so the package is read in full once.
        let limits = Limits { max_package_size: self.source.max_package_size, ..Limits::DEFAULT };
        let in_force = self.trust();
        let trust = Trust::Keys { keys: &in_force.package.keys, threshold: in_force.package.threshold };
        let package = |source| MirrorError::Package { url: url.clone(), source };
        let mut stream = PackageStream::new(io::BufReader::new(&file), &limits).map_err(package)?;
        let opened = stream.open(trust).map_err(package)?;
        let m = &opened.manifest;
        let mismatch =
            |why: String| MirrorError::Mismatch { url: url.clone(), version: entry.version.to_string(), why };
        if m.version != entry.version || m.name != entry.name {
            return Err(mismatch(format!("its manifest says {} {}", m.name, m.version)));
        }
        if m.sequence != entry.sequence {
            return Err(mismatch(format!("its manifest says sequence {}, the index {}", m.sequence, entry.sequence)));
        }
        let mut releases: Vec<&str> = m.payloads.iter().map(|p| p.kernel_release.as_str()).collect();
        let mut listed: Vec<&str> = entry.kernel_releases.iter().map(String::as_str).collect();
        releases.sort_unstable();
        listed.sort_unstable();
        if releases != listed {
            return Err(mismatch("its kernel releases differ from the index's".into()));
        }
        file.rewind().map_err(|source| MirrorError::Temp { path: path.to_path_buf(), source })?;
        // `path` (a TempPath) is dropped here: the name goes, the open file stays.
        Ok(file)
    }
}
