//! The host's facts, read once: where the kernel's files are, the state
//! folder, the trusted keys, and what the host is (kernel release, boot
//! id, DMI vendor). The engine builds one [`HostContext`] when it opens and
//! is its one owner; the kernel release and the boot id cannot change
//! while a process runs, so each is read at most once (on first use, so a
//! missing file is reported by the action that needs it).

use std::cell::OnceCell;
use std::io;
use std::path::{Path, PathBuf};

use milspec_format::{KeyError, Limits, TrustedKeys};

use crate::config::Config;
use crate::kernel_paths::KernelPaths;
use crate::slots::SlotTrust;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("[trust] {0}")]
    TrustConfig(String),
    #[error("cannot read {what} from {}: {source}", path.display())]
    Fact { what: &'static str, path: PathBuf, source: io::Error },
}

#[derive(Debug)]
pub struct HostContext {
    pub paths: KernelPaths,
    pub state_dir: PathBuf,
    pub keys: TrustedKeys,
    /// Distinct trusted signatures a package and a slot need.
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
    /// Loads the trusted keys and checks the signature threshold against them.
    pub fn open(cfg: &Config) -> Result<Self, HostError> {
        let keys = TrustedKeys::load_dir(&cfg.trust.keys_dir)?;
        milspec_format::signature::check_threshold_config(cfg.trust.threshold, keys.len())
            .map_err(|e| HostError::TrustConfig(e.to_string()))?;
        Ok(HostContext {
            paths: KernelPaths::from_config(&cfg.kernel),
            state_dir: cfg.paths.state_dir.clone(),
            keys,
            threshold: cfg.trust.threshold,
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

    /// Who a slot must be signed by, and for which kernel (`release`).
    pub fn slot_trust<'a>(&'a self, release: &'a str) -> SlotTrust<'a> {
        SlotTrust { keys: &self.keys, threshold: self.threshold, release, limits: &self.limits }
    }
}
