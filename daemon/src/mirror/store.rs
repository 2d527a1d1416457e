//! The last accepted index, kept in the state folder:
//!
//! ```text
//! mirror/index.json   the exact envelope bytes last accepted (mode 0600)
//! mirror/fetch.json   its version and digest (the anti-rollback anchor),
//!                     the url it came from and its cache validators
//! ```
//!
//! Both are written atomically (`milspec_format::atomic`), `index.json`
//! first, so `fetch.json` never names an index that is not there.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use milspec_format::index::{verify_index, VerifiedIndex, MAX_INDEX_FILE};
use milspec_format::{Sha256Digest, TrustedKeys};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::transport::Validators;

pub const DIR: &str = "mirror";
const INDEX: &str = "index.json";
const FETCH: &str = "fetch.json";
const MAX_FETCH_FILE: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: cannot read the last accepted index record: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: the last accepted index record is corrupt ({why}); move it away to start over (the anti-rollback anchor is then lost)", path.display())]
    Corrupt { path: PathBuf, why: String },
    #[error("{}: cannot write: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// What is remembered about the last accepted index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub url: String,
    pub version: u64,
    pub digest: Sha256Digest,
    #[serde(default)]
    pub validators: Validators,
    /// When it was accepted (RFC 3339, for people).
    pub accepted_at: String,
}

#[derive(Debug, Clone)]
pub struct MirrorStore {
    dir: PathBuf,
}

fn read_capped(path: &Path, cap: u64) -> Result<Option<Vec<u8>>, StoreError> {
    let read_err = |source| StoreError::Read { path: path.to_path_buf(), source };
    // The state folder's own files: never a link, never anything but a file.
    match milspec_format::read_regular(path, milspec_format::OpenPolicy::no_follow(cap)) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(milspec_format::OpenError::TooLarge { .. }) => {
            Err(StoreError::Corrupt { path: path.to_path_buf(), why: format!("larger than {cap} bytes") })
        }
        Err(milspec_format::OpenError::Io { source, .. }) => Err(read_err(source)),
        Err(e) => Err(StoreError::Corrupt { path: path.to_path_buf(), why: e.to_string() }),
    }
}

impl MirrorStore {
    pub fn new(state_dir: &Path) -> Self {
        MirrorStore { dir: state_dir.join(DIR) }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ensure_dir(&self) -> Result<(), StoreError> {
        use std::os::unix::fs::DirBuilderExt;
        match fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(source) => Err(StoreError::Write { path: self.dir.clone(), source }),
        }
    }

    pub fn record(&self) -> Result<Option<Record>, StoreError> {
        let path = self.dir.join(FETCH);
        let Some(bytes) = read_capped(&path, MAX_FETCH_FILE)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| StoreError::Corrupt { path, why: e.to_string() })
    }

    /// The last accepted index, verified again with today's keys. `None`
    /// when there is none or it no longer verifies (keys rotated); the
    /// record's version still guards against rollback then.
    pub fn index(&self, keys: &TrustedKeys, threshold: usize) -> Result<Option<VerifiedIndex>, StoreError> {
        let Some(bytes) = read_capped(&self.dir.join(INDEX), MAX_INDEX_FILE)? else {
            return Ok(None);
        };
        match verify_index(&bytes, keys, threshold) {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                warn!(
                    "the last accepted index no longer verifies ({}); fetching it again",
                    crate::journal::untrusted(&e.to_string())
                );
                Ok(None)
            }
        }
    }

    /// Persists an accepted index: the bytes first, then the record.
    pub fn save(&self, bytes: &[u8], record: &Record) -> Result<(), StoreError> {
        self.ensure_dir()?;
        let w = |path: PathBuf, data: &[u8]| {
            milspec_format::atomic::write_atomic(&path, data, 0o600)
                .map_err(|source| StoreError::Write { path, source })
        };
        w(self.dir.join(INDEX), bytes)?;
        let mut rec = serde_json::to_vec_pretty(record).unwrap_or_default();
        rec.push(b'\n');
        w(self.dir.join(FETCH), &rec)
    }

    /// Updates only the validators (a 200 with the same index, new ETag).
    pub fn save_record(&self, record: &Record) -> Result<(), StoreError> {
        self.ensure_dir()?;
        let path = self.dir.join(FETCH);
        let mut rec = serde_json::to_vec_pretty(record).unwrap_or_default();
        rec.push(b'\n');
        milspec_format::atomic::write_atomic(&path, &rec, 0o600).map_err(|source| StoreError::Write { path, source })
    }
}
