//! The host's facts, read once: where the kernel's files are, the state
//! folder, the trusted keys, and what the host is (kernel release, boot
//! id, DMI vendor). The engine builds one [`HostContext`] when it opens and
//! is its one owner; the kernel release and the boot id cannot change
//! while a process runs, so each is read at most once (on first use, so a
//! missing file is reported by the action that needs it).

use std::cell::OnceCell;
use std::io;
use std::path::{Path, PathBuf};

use milspec_format::trust_doc::TrustSet;
use milspec_format::{KeyError, Limits, TrustedKeys};

use crate::config::Config;
use crate::kernel_paths::KernelPaths;
use crate::slots::SlotTrust;
use crate::trust_store::{self, TrustStoreError};

impl From<TrustStoreError> for HostError {
    fn from(e: TrustStoreError) -> Self {
        match e {
            TrustStoreError::Keys(k) => HostError::Keys(k),
            TrustStoreError::Config(c) => HostError::TrustConfig(c),
            other => HostError::Trust(other),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("[trust] {0}")]
    TrustConfig(String),
    #[error(transparent)]
    Trust(TrustStoreError),
    #[error("cannot read {what} from {}: {source}", path.display())]
    Fact { what: &'static str, path: PathBuf, source: io::Error },
}

#[derive(Debug)]
pub struct HostContext {
    pub paths: KernelPaths,
    pub state_dir: PathBuf,
    /// The trust in force (crate::trust_store).
    pub trust: TrustSet,
    /// Its package keys, and the distinct signatures a package needs.
    pub keys: TrustedKeys,
    pub threshold: usize,
    pub limits: Limits,
    release: OnceCell<String>,
    boot_id: OnceCell<String>,
    sys_vendor: OnceCell<Option<String>>,
}

fn read_fact(what: &'static str, path: &Path) -> Result<String, HostError> {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).map_err(|source| HostError::Fact {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn once<'a>(
    cell: &'a OnceCell<String>,
    what: &'static str,
    path: impl FnOnce() -> PathBuf,
) -> Result<&'a str, HostError> {
    if let Some(v) = cell.get() {
        return Ok(v);
    }
    let v = read_fact(what, &path())?;
    Ok(cell.get_or_init(|| v))
}

impl HostContext {
    /// Loads the trust in force: the accepted trust document, else the
    /// trusted keys with the signature threshold checked against them.
    pub fn open(cfg: &Config) -> Result<Self, HostError> {
        let trust = trust_store::in_force(cfg)?;
        Ok(HostContext {
            paths: KernelPaths::from_config(&cfg.kernel),
            state_dir: cfg.paths.state_dir.clone(),
            keys: trust.package.keys.clone(),
            threshold: trust.package.threshold,
            trust,
            limits: Limits::default(),
            release: OnceCell::new(),
            boot_id: OnceCell::new(),
            sys_vendor: OnceCell::new(),
        })
    }

    /// `/proc/sys/kernel/osrelease`, read once.
    pub fn kernel_release(&self) -> Result<&str, HostError> {
        once(&self.release, "the kernel release", || self.paths.osrelease())
    }

    /// `/proc/sys/kernel/random/boot_id`, read once.
    pub fn boot_id(&self) -> Result<&str, HostError> {
        once(&self.boot_id, "the boot id", || self.paths.boot_id())
    }

    /// The DMI `sys_vendor`, if the firmware gives one; read once.
    pub fn sys_vendor(&self) -> Option<&str> {
        self.sys_vendor
            .get_or_init(|| std::fs::read_to_string(self.paths.dmi_sys_vendor()).ok().map(|s| s.trim().to_string()))
            .as_deref()
    }

    /// Reads the trust in force again (a poll may have accepted a newer
    /// trust document).
    pub fn reload_trust(&mut self, cfg: &Config) -> Result<(), HostError> {
        let trust = trust_store::in_force(cfg)?;
        self.keys = trust.package.keys.clone();
        self.threshold = trust.package.threshold;
        self.trust = trust;
        Ok(())
    }

    /// Who a slot must be signed by, and for which kernel (`release`).
    pub fn slot_trust<'a>(&'a self, release: &'a str) -> SlotTrust<'a> {
        SlotTrust::of(&self.trust, release, &self.limits)
    }
}
