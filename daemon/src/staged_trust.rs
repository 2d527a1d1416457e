//! The trust a slot was staged under, kept in the slot as `trust.json`:
//! the trust document version and the package keys and threshold that
//! verified it. A slot is judged by that record ever after, so retiring a
//! key (a rotation) never stops the committed module from loading; the one
//! exception is a key the trust in force marks compromised
//! ([`crate::slots::SlotError::Compromised`]).
//!
//! A slot without the file (staged before trust documents) is judged by
//! the trust in force.

use std::path::Path;

use milspec_format::{OpenError, OpenPolicy, PublicKey, TrustedKeys};
use serde::{Deserialize, Serialize};

pub const FILE: &str = "trust.json";
/// Largest `trust.json` read.
const MAX_FILE: u64 = 64 * 1024;

/// What `trust.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagedTrust {
    /// The trust document version in force at staging (0: the local keys).
    pub version: u64,
    pub threshold: usize,
    /// Public key file lines.
    pub keys: Vec<String>,
}

impl StagedTrust {
    pub fn of(version: u64, keys: &TrustedKeys, threshold: usize) -> Self {
        StagedTrust { version, threshold, keys: keys.iter().map(|k| k.to_file_text().trim_end().to_string()).collect() }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Reads `dir/trust.json`; `Ok(None)` when the slot has none.
    pub fn read(dir: &Path) -> Result<Option<(Self, TrustedKeys)>, String> {
        let path = dir.join(FILE);
        let bytes = match milspec_format::read_regular(&path, OpenPolicy::no_follow(MAX_FILE)) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(OpenError::TooLarge { .. }) => return Err(format!("{FILE} is larger than {MAX_FILE} bytes")),
            Err(e) => return Err(format!("{FILE}: {e}")),
        };
        let rec: StagedTrust = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{FILE} is not valid: {}", milspec_format::sanitize(&e.to_string())))?;
        if rec.keys.len() > milspec_format::limits::trust::MAX_KEYS {
            return Err(format!("{FILE} lists more than {} keys", milspec_format::limits::trust::MAX_KEYS));
        }
        let keys = rec
            .keys
            .iter()
            .map(|l| PublicKey::parse(l, Path::new(FILE)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        Ok(Some((rec, TrustedKeys::new(keys))))
    }
}
