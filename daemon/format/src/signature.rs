//! `signatures.json`: ed25519 signatures over the exact manifest bytes, and
//! the threshold rule that decides whether they are enough.

use std::collections::BTreeSet;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::keys::{KeyId, SecretKey, TrustedKeys};
use crate::limits::Limits;

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("signatures.json is not valid: {0}")]
    Parse(String),
    #[error("signatures.json holds {count} signatures, more than the limit of {limit}")]
    TooMany { count: usize, limit: usize },
    #[error(
        "not enough trusted signatures: {valid} valid of {threshold} required{}",
        detail(*untrusted, bad)
    )]
    ThresholdNotMet { valid: usize, threshold: usize, untrusted: usize, bad: Vec<KeyId> },
    #[error("threshold must be at least 1")]
    ZeroThreshold,
    #[error("threshold {threshold} can never be met: only {trusted} trusted keys are configured")]
    ThresholdAboveKeys { threshold: usize, trusted: usize },
    #[error("key {0} has already signed this package")]
    AlreadySigned(KeyId),
}

fn detail(untrusted: usize, bad: &[KeyId]) -> String {
    let mut s = String::new();
    if !bad.is_empty() {
        let ids: Vec<_> = bad.iter().map(KeyId::short).collect();
        s += &format!(
            "; signature by trusted key {} does not verify (the manifest or the signature was altered)",
            ids.join(", ")
        );
    }
    if untrusted > 0 {
        s += &format!("; {untrusted} signature(s) by keys that are not trusted here were ignored");
    }
    s
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEntry {
    pub keyid: KeyId,
    /// Base64 of the 64-byte ed25519 signature.
    pub sig: String,
}

impl SignatureEntry {
    fn bytes(&self) -> Option<[u8; 64]> {
        B64.decode(&self.sig).ok()?.try_into().ok()
    }
}

/// The parsed contents of `signatures.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureSet {
    pub signatures: Vec<SignatureEntry>,
}

impl SignatureSet {
    pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Self, SignatureError> {
        let set: SignatureSet = serde_json::from_slice(bytes)
            .map_err(|e| SignatureError::Parse(crate::text::sanitize_to(&e.to_string(), 200)))?;
        if set.signatures.len() > limits.max_signatures {
            return Err(SignatureError::TooMany { count: set.signatures.len(), limit: limits.max_signatures });
        }
        Ok(set)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Adds a signature by `key` over `message`; a key signs at most once.
    pub fn add(&mut self, key: &SecretKey, message: &[u8]) -> Result<(), SignatureError> {
        let id = key.public().id();
        if self.signatures.iter().any(|s| s.keyid == id) {
            return Err(SignatureError::AlreadySigned(id));
        }
        self.signatures.push(SignatureEntry { keyid: id, sig: B64.encode(key.sign(message)) });
        Ok(())
    }

    pub fn key_ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.signatures.iter().map(|s| s.keyid)
    }

    /// Checks that at least `threshold` distinct trusted keys made a valid
    /// signature over `message`. Signatures by unknown keys are ignored; two
    /// signatures by one key count once. Returns the ids of the valid signers.
    pub fn check(&self, message: &[u8], trusted: &TrustedKeys, threshold: usize) -> Result<Vec<KeyId>, SignatureError> {
        check_threshold_config(threshold, trusted.len())?;
        let mut valid = BTreeSet::new();
        let mut bad = BTreeSet::new();
        let mut untrusted = 0;
        for entry in &self.signatures {
            let Some(key) = trusted.get(&entry.keyid) else {
                untrusted += 1;
                continue;
            };
            match entry.bytes() {
                Some(sig) if key.verify(message, &sig) => {
                    valid.insert(entry.keyid);
                }
                _ => {
                    bad.insert(entry.keyid);
                }
            }
        }
        if valid.len() >= threshold {
            Ok(valid.into_iter().collect())
        } else {
            bad.retain(|k| !valid.contains(k));
            Err(SignatureError::ThresholdNotMet {
                valid: valid.len(),
                threshold,
                untrusted,
                bad: bad.into_iter().collect(),
            })
        }
    }
}

/// Rejects a threshold that is zero or larger than the trusted key count.
pub fn check_threshold_config(threshold: usize, trusted: usize) -> Result<(), SignatureError> {
    if threshold == 0 {
        return Err(SignatureError::ZeroThreshold);
    }
    if threshold > trusted {
        return Err(SignatureError::ThresholdAboveKeys { threshold, trusted });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<SecretKey> {
        (0..n).map(|i| SecretKey::generate(&format!("k{i}")).unwrap()).collect()
    }

    #[test]
    fn threshold_counts_distinct_trusted_keys() {
        let ks = keys(3);
        let trusted = TrustedKeys::new(ks[..2].iter().map(SecretKey::public));
        let msg = b"manifest";
        let mut set = SignatureSet::default();
        set.add(&ks[0], msg).unwrap();
        set.add(&ks[2], msg).unwrap(); // untrusted: ignored
        assert_eq!(set.check(msg, &trusted, 1).unwrap(), vec![ks[0].public().id()]);
        let err = set.check(msg, &trusted, 2).unwrap_err().to_string();
        assert!(err.contains("1 valid of 2 required") && err.contains("not trusted"), "{err}");

        // The same key twice counts once.
        let dup = set.signatures[0].clone();
        set.signatures.push(dup);
        assert!(set.check(msg, &trusted, 2).is_err());
        assert!(matches!(set.add(&ks[0], msg), Err(SignatureError::AlreadySigned(_))));

        set.add(&ks[1], msg).unwrap();
        assert_eq!(set.check(msg, &trusted, 2).unwrap().len(), 2);
    }

    #[test]
    fn altered_message_is_named() {
        let ks = keys(1);
        let trusted = TrustedKeys::new([ks[0].public()]);
        let mut set = SignatureSet::default();
        set.add(&ks[0], b"a").unwrap();
        let err = set.check(b"b", &trusted, 1).unwrap_err().to_string();
        assert!(err.contains("does not verify"), "{err}");
    }

    #[test]
    fn bad_thresholds() {
        let ks = keys(1);
        let trusted = TrustedKeys::new([ks[0].public()]);
        let set = SignatureSet::default();
        assert!(matches!(set.check(b"", &trusted, 0), Err(SignatureError::ZeroThreshold)));
        assert!(matches!(set.check(b"", &trusted, 2), Err(SignatureError::ThresholdAboveKeys { .. })));
    }

    #[test]
    fn parse_caps_and_rejects() {
        let limits = Limits { max_signatures: 1, ..Limits::DEFAULT };
        let ks = keys(2);
        let mut set = SignatureSet::default();
        set.add(&ks[0], b"m").unwrap();
        set.add(&ks[1], b"m").unwrap();
        assert!(matches!(SignatureSet::parse(&set.to_bytes(), &limits), Err(SignatureError::TooMany { .. })));
        assert!(SignatureSet::parse(b"{\"signatures\":[],\"x\":1}", &Limits::DEFAULT).is_err());
        assert!(SignatureSet::parse(b"not json", &Limits::DEFAULT).is_err());
    }
}
