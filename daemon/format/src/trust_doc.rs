//! Trust documents: the signed list of the keys a fleet trusts, so a key
//! can be added, retired or marked compromised without touching every host.
//!
//! A mirror publishes version N at `trust/N.keys.json` (and the latest as
//! `keys.json`, for people). The file is an envelope like the index's: the
//! exact signed text and the signatures over it. The text names:
//!
//! * `keys`: the public keys, as key file lines (`milspec-ed25519-public …`);
//! * `roles`: `trust` (who signs the next trust document), `package` (who
//!   signs packages) and `index` (who signs `index.json`), each a list of
//!   key ids and a threshold;
//! * `compromised`: key ids no host may trust again, for anything: a slot
//!   one of them signed is refused even if it was staged before.
//!
//! The rule ([`accept_next`], pure): a host holding version N accepts only
//! N+1, and only when a threshold of N's `trust` role *and* a threshold of
//! N+1's own `trust` role signed it. A host that has never accepted a
//! document holds version 0, "the local keys": every role is the keys of
//! `[trust] keys_dir` with `[trust] threshold` ([`TrustSet::local`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::digest::Sha256Digest;
use crate::index::Envelope;
use crate::keys::{KeyId, PublicKey, SecretKey, TrustedKeys};
use crate::limits::trust::{MAX_COMPROMISED, MAX_FILE, MAX_KEYS, MAX_SIGNATURES};
use crate::signature::{check_threshold_config, SignatureError, SignatureSet};
use crate::text::sanitize_to;

pub const TRUST_FORMAT: u32 = 1;
pub const TRUST_KIND: &str = "milspec-trust";
/// The latest document at the mirror root (for people; hosts walk `trust/`).
pub const LATEST_FILE: &str = "keys.json";
/// The folder of the numbered documents at the mirror root.
pub const TRUST_DIR: &str = "trust";

/// The mirror path of version `version`: `trust/N.keys.json`.
pub fn version_path(version: u64) -> String {
    format!("{TRUST_DIR}/{version}.keys.json")
}

#[derive(Debug, thiserror::Error)]
pub enum TrustDocError {
    #[error("trust document is {size} bytes or more, larger than the limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error("trust document is not valid: {0}")]
    Parse(String),
    #[error("trust document format {0} is not supported (this build reads format {TRUST_FORMAT}); upgrade milspecd")]
    Format(u32),
    #[error("trust document kind `{0}` is not `{TRUST_KIND}`")]
    Kind(String),
    #[error("trust document version {version} is not valid: {why}")]
    Invalid { version: u64, why: String },
    #[error("trust document holds {count} signatures, more than the limit of {limit}")]
    TooManySignatures { count: usize, limit: usize },
    #[error("trust document version {version} is not newer than version {current} held here: the mirror is stale or someone replays an old document; nothing changed")]
    Replayed { version: u64, current: u64 },
    #[error("trust document version {version} skips versions: this host holds {current} and accepts only {}; the publisher must publish every version under trust/; nothing changed", current + 1)]
    Skipped { version: u64, current: u64 },
    #[error("trust document version {version} is not signed by the keys of version {current} held here ({source}); a rotation must be signed by a threshold of the old trust keys: run `milspec-repo trust sign` with them; nothing changed")]
    NotSignedByOld { version: u64, current: u64, source: SignatureError },
    #[error("trust document version {version} is not signed by its own trust keys ({source}); a rotation must be signed by a threshold of the new trust keys too: run `milspec-repo trust sign` with them; nothing changed")]
    NotSignedBySelf { version: u64, source: SignatureError },
    #[error("trust document version {version} expired at {expires} (this host's clock says {now}): the publisher must publish a new version (`milspec-repo trust rotate`), or this host's clock is wrong")]
    Expired { version: u64, expires: String, now: String },
    #[error("trust document version {version} no longer marks key {key} compromised, as version {current} held here does: a compromised key stays compromised in every later version (`milspec-repo trust rotate` carries the list forward); nothing changed")]
    Uncompromised { version: u64, current: u64, key: String },
    #[error("trust document: {0}")]
    Signing(#[from] SignatureError),
}

/// One role: the keys that may act for it and how many must.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    pub keyids: Vec<KeyId>,
    pub threshold: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Roles {
    /// Signs the next trust document.
    pub trust: Role,
    /// Signs packages.
    pub package: Role,
    /// Signs `index.json`.
    pub index: Role,
}

impl Roles {
    fn each(&self) -> [(&'static str, &Role); 3] {
        [("trust", &self.trust), ("package", &self.package), ("index", &self.index)]
    }

    pub fn each_mut(&mut self) -> [(&'static str, &mut Role); 3] {
        [("trust", &mut self.trust), ("package", &mut self.package), ("index", &mut self.index)]
    }
}

/// The signed text of a trust document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustDoc {
    pub format: u32,
    pub kind: String,
    /// 1, 2, 3 …: every document raises it by exactly one.
    pub version: u64,
    /// Hosts refuse to keep using the document after this time.
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub expires: Option<OffsetDateTime>,
    /// Public key file lines (`milspec-ed25519-public <base64> <name>`).
    pub keys: Vec<String>,
    pub roles: Roles,
    /// Key ids no host trusts again, for anything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compromised: Vec<KeyId>,
}

/// The keys of one role, resolved.
#[derive(Debug, Clone)]
pub struct RoleKeys {
    pub keys: TrustedKeys,
    pub threshold: usize,
}

/// The trust in force on a host: version 0 (the local keys) or an
/// accepted document.
#[derive(Debug, Clone)]
pub struct TrustSet {
    pub version: u64,
    pub trust: RoleKeys,
    pub package: RoleKeys,
    pub index: RoleKeys,
    pub compromised: BTreeSet<KeyId>,
    pub expires: Option<OffsetDateTime>,
}

impl TrustSet {
    /// Version 0: every role is the local keys with the local threshold.
    pub fn local(keys: &TrustedKeys, threshold: usize) -> Self {
        let role = RoleKeys { keys: keys.clone(), threshold };
        TrustSet {
            version: 0,
            trust: role.clone(),
            package: role.clone(),
            index: role,
            compromised: BTreeSet::new(),
            expires: None,
        }
    }

    pub fn is_compromised(&self, id: &KeyId) -> bool {
        self.compromised.contains(id)
    }

    /// Refuses a document past its `expires`.
    pub fn check_expiry(&self, now: OffsetDateTime) -> Result<(), TrustDocError> {
        match self.expires {
            Some(e) if now > e => {
                Err(TrustDocError::Expired { version: self.version, expires: rfc3339(e), now: rfc3339(now) })
            }
            _ => Ok(()),
        }
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// A document whose version and signatures passed, with its envelope bytes.
#[derive(Debug, Clone)]
pub struct VerifiedTrust {
    pub doc: TrustDoc,
    pub set: TrustSet,
    /// SHA-256 of the signed text.
    pub digest: Sha256Digest,
    /// Who signed it, of the new trust role.
    pub signers: Vec<KeyId>,
}

impl TrustDoc {
    /// A new document; `keys` are the public keys it names.
    pub fn new(version: u64, keys: &[PublicKey], roles: Roles) -> Self {
        TrustDoc {
            format: TRUST_FORMAT,
            kind: TRUST_KIND.into(),
            version,
            expires: None,
            keys: keys.iter().map(|k| k.to_file_text().trim_end().to_string()).collect(),
            roles,
            compromised: Vec::new(),
        }
    }

    /// The signed text: pretty JSON and a newline.
    pub fn to_text(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Parses the signed text strictly and checks its rules; returns the
    /// document and its keys by id.
    pub fn parse(text: &str) -> Result<(Self, BTreeMap<KeyId, PublicKey>), TrustDocError> {
        let parse_err = |e: String| TrustDocError::Parse(sanitize_to(&e, 200));
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        match value.get("format").and_then(serde_json::Value::as_u64) {
            Some(f) if f == u64::from(TRUST_FORMAT) => {}
            Some(f) => return Err(TrustDocError::Format(u32::try_from(f).unwrap_or(u32::MAX))),
            None => return Err(parse_err("no `format` number".into())),
        }
        match value.get("kind").and_then(|k| k.as_str()) {
            Some(TRUST_KIND) => {}
            other => return Err(TrustDocError::Kind(sanitize_to(other.unwrap_or(""), 64))),
        }
        let doc: TrustDoc = serde_json::from_value(value).map_err(|e| parse_err(e.to_string()))?;
        let keys = doc.validate()?;
        Ok((doc, keys))
    }

    /// The rules: version ≥ 1; at most [`MAX_KEYS`] distinct valid keys;
    /// each role names known, distinct, uncompromised keys and a threshold
    /// it can meet.
    pub fn validate(&self) -> Result<BTreeMap<KeyId, PublicKey>, TrustDocError> {
        let bad = |why: String| TrustDocError::Invalid { version: self.version, why };
        if self.version == 0 {
            return Err(bad("version 0 is the local keys of a host; documents start at 1".into()));
        }
        if self.keys.len() > MAX_KEYS {
            return Err(bad(format!("it names {} keys, more than the limit of {MAX_KEYS}", self.keys.len())));
        }
        if self.compromised.len() > MAX_COMPROMISED {
            return Err(bad(format!("it marks more than {MAX_COMPROMISED} keys compromised")));
        }
        let mut keys = BTreeMap::new();
        for (i, line) in self.keys.iter().enumerate() {
            let k = PublicKey::parse(line, Path::new("keys"))
                .map_err(|e| bad(format!("key {}: {}", i + 1, sanitize_to(&e.to_string(), 200))))?;
            if keys.insert(k.id(), k).is_some() {
                return Err(bad(format!("key {} is listed twice", i + 1)));
            }
        }
        let compromised: BTreeSet<KeyId> = self.compromised.iter().copied().collect();
        if compromised.len() != self.compromised.len() {
            return Err(bad("a key id is marked compromised twice".into()));
        }
        for (name, role) in self.roles.each() {
            let distinct: BTreeSet<KeyId> = role.keyids.iter().copied().collect();
            if distinct.len() != role.keyids.len() {
                return Err(bad(format!("role {name} lists a key twice")));
            }
            if let Some(id) = role.keyids.iter().find(|id| !keys.contains_key(id)) {
                return Err(bad(format!("role {name} names key {} that the document does not hold", id.short())));
            }
            if let Some(id) = role.keyids.iter().find(|id| compromised.contains(id)) {
                return Err(bad(format!("role {name} names key {} that it marks compromised", id.short())));
            }
            check_threshold_config(role.threshold, role.keyids.len()).map_err(|e| bad(format!("role {name}: {e}")))?;
        }
        Ok(keys)
    }

    fn role_keys(role: &Role, keys: &BTreeMap<KeyId, PublicKey>) -> RoleKeys {
        RoleKeys {
            keys: TrustedKeys::new(role.keyids.iter().filter_map(|id| keys.get(id).cloned())),
            threshold: role.threshold,
        }
    }

    /// The trust this document puts in force.
    pub fn to_set(&self, keys: &BTreeMap<KeyId, PublicKey>) -> TrustSet {
        TrustSet {
            version: self.version,
            trust: Self::role_keys(&self.roles.trust, keys),
            package: Self::role_keys(&self.roles.package, keys),
            index: Self::role_keys(&self.roles.index, keys),
            compromised: self.compromised.iter().copied().collect(),
            expires: self.expires,
        }
    }

    /// The envelope: this document's text signed by every key.
    pub fn sign<'a>(&self, keys: impl IntoIterator<Item = &'a SecretKey>) -> Result<Vec<u8>, TrustDocError> {
        let signed = self.to_text();
        let mut set = SignatureSet::default();
        for k in keys {
            set.add(k, signed.as_bytes())?;
        }
        Ok(envelope_bytes(&Envelope { signed, signatures: set.signatures }))
    }
}

fn envelope_bytes(env: &Envelope) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(env).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Reads an envelope, bounded, without checking who signed it.
pub fn read_envelope(bytes: &[u8]) -> Result<Envelope, TrustDocError> {
    if bytes.len() as u64 > MAX_FILE {
        return Err(TrustDocError::TooLarge { size: bytes.len() as u64, limit: MAX_FILE });
    }
    let env: Envelope =
        serde_json::from_slice(bytes).map_err(|e| TrustDocError::Parse(sanitize_to(&e.to_string(), 200)))?;
    if env.signatures.len() > MAX_SIGNATURES {
        return Err(TrustDocError::TooManySignatures { count: env.signatures.len(), limit: MAX_SIGNATURES });
    }
    Ok(env)
}

/// Reads a document without checking who signed it (for the publisher and
/// for `show`); its structure and rules are still checked.
pub fn read_unverified(bytes: &[u8]) -> Result<(Envelope, TrustDoc), TrustDocError> {
    let env = read_envelope(bytes)?;
    let (doc, _) = TrustDoc::parse(&env.signed)?;
    Ok((env, doc))
}

/// Adds `key`'s signature to an envelope (`milspec-repo trust sign`).
pub fn add_signature(bytes: &[u8], key: &SecretKey) -> Result<Vec<u8>, TrustDocError> {
    let (env, _) = read_unverified(bytes)?;
    let mut set = SignatureSet { signatures: env.signatures };
    set.add(key, env.signed.as_bytes())?;
    Ok(envelope_bytes(&Envelope { signed: env.signed, signatures: set.signatures }))
}

/// The self check of a document already accepted (read back from the
/// state folder): it parses and a threshold of its own trust role signed it.
pub fn verify_self(bytes: &[u8]) -> Result<VerifiedTrust, TrustDocError> {
    let env = read_envelope(bytes)?;
    let (doc, keys) = TrustDoc::parse(&env.signed)?;
    let set = doc.to_set(&keys);
    let sigs = SignatureSet { signatures: env.signatures };
    let signers = sigs
        .check(env.signed.as_bytes(), &set.trust.keys, set.trust.threshold)
        .map_err(|source| TrustDocError::NotSignedBySelf { version: doc.version, source })?;
    Ok(VerifiedTrust { digest: Sha256Digest::of(env.signed.as_bytes()), doc, set, signers })
}

/// The rotation rule. `bytes` is the envelope offered as the next version
/// for a host holding `current`: it must be version `current.version + 1`,
/// signed by a threshold of `current`'s trust role and by a threshold of
/// its own trust role.
pub fn accept_next(current: &TrustSet, bytes: &[u8]) -> Result<VerifiedTrust, TrustDocError> {
    let env = read_envelope(bytes)?;
    let (doc, keys) = TrustDoc::parse(&env.signed)?;
    let version = doc.version;
    if version <= current.version {
        return Err(TrustDocError::Replayed { version, current: current.version });
    }
    if version != current.version + 1 {
        return Err(TrustDocError::Skipped { version, current: current.version });
    }
    let sigs = SignatureSet { signatures: env.signatures };
    let message = env.signed.as_bytes();
    // A key the host already holds as compromised never counts.
    let old = TrustedKeys::new(current.trust.keys.iter().filter(|k| !current.is_compromised(&k.id())).cloned());
    sigs.check(message, &old, current.trust.threshold).map_err(|source| TrustDocError::NotSignedByOld {
        version,
        current: current.version,
        source,
    })?;
    let set = doc.to_set(&keys);
    let signers = sigs
        .check(message, &set.trust.keys, set.trust.threshold)
        .map_err(|source| TrustDocError::NotSignedBySelf { version, source })?;
    // "No host may trust it again": a later version cannot lift it.
    if let Some(id) = current.compromised.iter().find(|id| !set.compromised.contains(id)) {
        return Err(TrustDocError::Uncompromised { version, current: current.version, key: id.short() });
    }
    Ok(VerifiedTrust { digest: Sha256Digest::of(message), doc, set, signers })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<SecretKey> {
        (0..n).map(|i| SecretKey::generate(&format!("k{i}")).unwrap()).collect()
    }

    fn role(ks: &[&SecretKey], threshold: usize) -> Role {
        Role { keyids: ks.iter().map(|k| k.public().id()).collect(), threshold }
    }

    fn doc(version: u64, ks: &[&SecretKey], threshold: usize) -> TrustDoc {
        let pubs: Vec<_> = ks.iter().map(|k| k.public()).collect();
        let r = role(ks, threshold);
        TrustDoc::new(version, &pubs, Roles { trust: r.clone(), package: r.clone(), index: r })
    }

    fn local(ks: &[&SecretKey], threshold: usize) -> TrustSet {
        TrustSet::local(&TrustedKeys::new(ks.iter().map(|k| k.public())), threshold)
    }

    #[test]
    fn rotation_needs_old_and_new_keys() {
        let ks = keys(4);
        let (a, b, c, d) = (&ks[0], &ks[1], &ks[2], &ks[3]);
        let v0 = local(&[a, b], 1);
        let d1 = doc(1, &[a, b], 2);
        let v1 = accept_next(&v0, &d1.sign([a, b]).unwrap()).unwrap();
        assert_eq!(v1.set.version, 1);
        assert_eq!(v1.set.package.threshold, 2);

        // v2 moves to c and d.
        let d2 = doc(2, &[c, d], 1);
        let both = d2.sign([a, b, c]).unwrap();
        assert_eq!(accept_next(&v1.set, &both).unwrap().set.version, 2);
        let old_only = d2.sign([a, b]).unwrap();
        assert!(matches!(accept_next(&v1.set, &old_only), Err(TrustDocError::NotSignedBySelf { version: 2, .. })));
        let new_only = d2.sign([c, d]).unwrap();
        assert!(matches!(accept_next(&v1.set, &new_only), Err(TrustDocError::NotSignedByOld { version: 2, .. })));
        // Under the old threshold (2 of a, b).
        let one_old = d2.sign([a, c]).unwrap();
        let e = accept_next(&v1.set, &one_old).unwrap_err();
        assert!(matches!(e, TrustDocError::NotSignedByOld { .. }), "{e}");
        assert!(e.to_string().contains("1 valid of 2 required"), "{e}");
    }

    #[test]
    fn versions_go_one_at_a_time_and_never_back() {
        let ks = keys(1);
        let a = &ks[0];
        let v1 = accept_next(&local(&[a], 1), &doc(1, &[a], 1).sign([a]).unwrap()).unwrap().set;
        let again = doc(1, &[a], 1).sign([a]).unwrap();
        assert!(matches!(accept_next(&v1, &again), Err(TrustDocError::Replayed { version: 1, current: 1 })));
        let skip = doc(3, &[a], 1).sign([a]).unwrap();
        let e = accept_next(&v1, &skip).unwrap_err();
        assert!(matches!(e, TrustDocError::Skipped { version: 3, current: 1 }), "{e}");
        assert!(e.to_string().contains("accepts only 2"), "{e}");
    }

    #[test]
    fn a_compromised_key_never_counts() {
        let ks = keys(3);
        let (a, b, c) = (&ks[0], &ks[1], &ks[2]);
        let v1 = accept_next(&local(&[a, b], 1), &doc(1, &[a, b], 1).sign([a]).unwrap()).unwrap().set;
        let mut d2 = doc(2, &[b, c], 1);
        d2.keys.push(a.public().to_file_text().trim_end().to_string());
        d2.compromised = vec![a.public().id()];
        let v2 = accept_next(&v1, &d2.sign([b, c]).unwrap()).unwrap().set;
        assert!(v2.is_compromised(&a.public().id()));
        // a cannot sign v3 any more.
        let d3 = doc(3, &[a, c], 1);
        let e = accept_next(&v2, &d3.sign([a]).unwrap()).unwrap_err();
        assert!(matches!(e, TrustDocError::NotSignedByOld { .. }), "{e}");
        // Nor can good keys lift the mark: v3 must keep a compromised.
        let e = accept_next(&v2, &d3.sign([c]).unwrap()).unwrap_err();
        assert!(matches!(e, TrustDocError::Uncompromised { version: 3, current: 2, .. }), "{e}");
        let mut d3 = doc(3, &[b, c], 1);
        d3.keys.push(a.public().to_file_text().trim_end().to_string());
        d3.compromised = vec![a.public().id()];
        assert_eq!(accept_next(&v2, &d3.sign([c]).unwrap()).unwrap().set.version, 3);
    }

    #[test]
    fn documents_are_checked() {
        let ks = keys(2);
        let (a, b) = (&ks[0], &ks[1]);
        let cases: Vec<(TrustDoc, &str)> = vec![
            (doc(0, &[a], 1), "version 0"),
            (doc(1, &[a], 2), "can never be met"),
            (
                {
                    let mut d = doc(1, &[a], 1);
                    d.roles.index.keyids.push(b.public().id());
                    d
                },
                "does not hold",
            ),
            (
                {
                    let mut d = doc(1, &[a], 1);
                    d.compromised.push(a.public().id());
                    d
                },
                "marks compromised",
            ),
            (
                {
                    let mut d = doc(1, &[a], 1);
                    d.keys.push(d.keys[0].clone());
                    d
                },
                "listed twice",
            ),
            (
                {
                    let mut d = doc(1, &[a], 1);
                    d.keys[0] = "garbage".into();
                    d
                },
                "key 1",
            ),
        ];
        for (d, want) in cases {
            let e = TrustDoc::parse(&d.to_text()).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
        assert!(matches!(TrustDoc::parse("{\"format\":2,\"kind\":\"milspec-trust\"}"), Err(TrustDocError::Format(2))));
        assert!(matches!(TrustDoc::parse("{\"format\":1,\"kind\":\"milspec-index\"}"), Err(TrustDocError::Kind(_))));
        let mut text = doc(1, &[a], 1).to_text();
        text.insert_str(1, "\"extra\": 1,");
        assert!(matches!(TrustDoc::parse(&text), Err(TrustDocError::Parse(_))));
        let big = vec![b' '; MAX_FILE as usize + 1];
        assert!(matches!(read_envelope(&big), Err(TrustDocError::TooLarge { .. })));
    }

    #[test]
    fn signatures_are_added_one_by_one_and_expiry_is_kept() {
        let ks = keys(2);
        let (a, b) = (&ks[0], &ks[1]);
        let mut d = doc(1, &[a, b], 2);
        d.expires = Some(OffsetDateTime::UNIX_EPOCH + time::Duration::days(1));
        let bytes = d.sign([a]).unwrap();
        assert!(verify_self(&bytes).is_err());
        let bytes = add_signature(&bytes, b).unwrap();
        let v = verify_self(&bytes).unwrap();
        assert_eq!(v.signers.len(), 2);
        assert!(matches!(add_signature(&bytes, b), Err(TrustDocError::Signing(SignatureError::AlreadySigned(_)))));
        assert!(v.set.check_expiry(OffsetDateTime::UNIX_EPOCH).is_ok());
        let late = OffsetDateTime::UNIX_EPOCH + time::Duration::days(2);
        assert!(matches!(v.set.check_expiry(late), Err(TrustDocError::Expired { version: 1, .. })));
    }
}
