//! The trust in force on this host.
//!
//! ```text
//! trust/keys.json   the exact envelope of the last accepted trust
//!                   document (mode 0600)
//! ```
//!
//! A host that has never accepted a trust document trusts the local keys
//! of `[trust] keys_dir` with `[trust] threshold` (version 0). Once one is
//! accepted ([`milspec_format::trust_doc::accept_next`]), it is the root of
//! trust: it is written atomically, and never replaced by a version that
//! is not higher.

use std::path::{Path, PathBuf};

use milspec_format::trust_doc::{self, TrustDocError, TrustSet, VerifiedTrust};
use milspec_format::{KeyError, OpenError, OpenPolicy, TrustedKeys};

use crate::config::Config;

pub const DIR: &str = "trust";
const FILE: &str = "keys.json";

#[derive(Debug, thiserror::Error)]
pub enum TrustStoreError {
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("[trust] {0}")]
    Config(String),
    #[error("{}: cannot read the accepted trust document: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: the accepted trust document is damaged ({source}); restore it from the mirror's trust/ folder (the version this host held), or move it away to fall back to [trust] keys_dir", path.display())]
    Corrupt { path: PathBuf, source: TrustDocError },
    #[error("{}: cannot write the accepted trust document: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("trust document version {version} is not higher than version {held} held here; not written")]
    NotHigher { version: u64, held: u64 },
}

/// The state folder's trust document.
#[derive(Debug, Clone)]
pub struct TrustStore {
    dir: PathBuf,
}

impl TrustStore {
    pub fn new(state_dir: &Path) -> Self {
        TrustStore { dir: state_dir.join(DIR) }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The accepted document, checked again (it parses and its own trust
    /// keys signed it). `None` before any was accepted.
    pub fn accepted(&self) -> Result<Option<VerifiedTrust>, TrustStoreError> {
        let path = self.path();
        let bytes = match milspec_format::read_regular(&path, OpenPolicy::no_follow(trust_doc_limit())) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(OpenError::Io { source, .. }) => return Err(TrustStoreError::Read { path, source }),
            Err(OpenError::TooLarge { .. }) => {
                let source = TrustDocError::TooLarge { size: trust_doc_limit() + 1, limit: trust_doc_limit() };
                return Err(TrustStoreError::Corrupt { path, source });
            }
            Err(e) => {
                let source = TrustDocError::Parse(e.to_string());
                return Err(TrustStoreError::Corrupt { path, source });
            }
        };
        trust_doc::verify_self(&bytes).map(Some).map_err(|source| TrustStoreError::Corrupt { path, source })
    }

    /// Persists an accepted document (`bytes`, its envelope): atomically,
    /// and only above the version held.
    pub fn save(&self, bytes: &[u8], accepted: &VerifiedTrust, held: u64) -> Result<(), TrustStoreError> {
        if accepted.set.version <= held {
            return Err(TrustStoreError::NotHigher { version: accepted.set.version, held });
        }
        use std::os::unix::fs::DirBuilderExt;
        let w = |path: PathBuf, source| TrustStoreError::Write { path, source };
        match std::fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => milspec_format::atomic::sync_dir(self.dir.parent().unwrap_or(Path::new("/")))
                .map_err(|e| w(self.dir.clone(), e))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(w(self.dir.clone(), e)),
        }
        let path = self.path();
        milspec_format::atomic::write_atomic(&path, bytes, 0o600).map_err(|e| w(path, e))
    }
}

fn trust_doc_limit() -> u64 {
    milspec_format::limits::trust::MAX_FILE
}

/// The trust in force: the accepted document, else the local keys.
pub fn in_force(cfg: &Config) -> Result<TrustSet, TrustStoreError> {
    if let Some(v) = TrustStore::new(&cfg.paths.state_dir).accepted()? {
        return Ok(v.set);
    }
    local(cfg)
}

/// Version 0: `[trust] keys_dir` with `[trust] threshold`.
pub fn local(cfg: &Config) -> Result<TrustSet, TrustStoreError> {
    let keys = TrustedKeys::load_dir(&cfg.trust.keys_dir)?;
    milspec_format::signature::check_threshold_config(cfg.trust.threshold, keys.len())
        .map_err(|e| TrustStoreError::Config(e.to_string()))?;
    Ok(TrustSet::local(&keys, cfg.trust.threshold))
}

#[cfg(test)]
mod tests {
    use super::*;
    use milspec_format::trust_doc::{accept_next, Role, Roles, TrustDoc};
    use milspec_format::SecretKey;

    #[test]
    fn saved_once_never_lowered_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = TrustStore::new(dir.path());
        assert!(store.accepted().unwrap().is_none());
        let k = SecretKey::generate("k").unwrap();
        let role = Role { keyids: vec![k.public().id()], threshold: 1 };
        let roles = Roles { trust: role.clone(), package: role.clone(), index: role };
        let local = TrustSet::local(&TrustedKeys::new([k.public()]), 1);
        let bytes = TrustDoc::new(1, &[k.public()], roles).sign([&k]).unwrap();
        let v1 = accept_next(&local, &bytes).unwrap();
        store.save(&bytes, &v1, 0).unwrap();
        assert_eq!(std::fs::read(store.path()).unwrap(), bytes);
        assert_eq!(store.accepted().unwrap().map(|v| v.set.version), Some(1));
        assert!(matches!(store.save(&bytes, &v1, 1), Err(TrustStoreError::NotHigher { version: 1, held: 1 })));
        std::fs::write(store.path(), b"{}").unwrap();
        let e = store.accepted().unwrap_err().to_string();
        assert!(e.contains("damaged") && e.contains("keys_dir"), "{e}");
    }
}
