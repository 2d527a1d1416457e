//! ed25519 signing keys, public keys, key ids and the trusted-key folder.
//!
//! Key files are one line of text so an operator can read and diff them:
//!
//! ```text
//! milspec-ed25519-public <base64 of the 32-byte key> <name>
//! milspec-ed25519-secret <base64 of the 32-byte seed> <name>
//! ```
//!
//! A key id is the SHA-256 of the 32 public key bytes, in hex.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::digest::Sha256Digest;
use crate::regular::{read_regular, shown, FileKind, OpenError, OpenPolicy};

pub const PUBLIC_TAG: &str = "milspec-ed25519-public";
pub const SECRET_TAG: &str = "milspec-ed25519-secret";
/// Largest key file accepted.
const MAX_KEY_FILE: u64 = 4096;
/// Most `*.pub` files read from a trusted-key folder.
pub const MAX_TRUSTED_KEYS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: cannot read key file: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{}: is {kind}, not a regular file; a key file must be a regular file (remove it from the folder)",
        shown(path)
    )]
    NotRegular { path: PathBuf, kind: FileKind },
    #[error("{path}: not a milspec {expected} key file ({why})")]
    Format { path: PathBuf, expected: &'static str, why: String },
    #[error("{path}: the key is a weak ed25519 key and cannot be trusted")]
    Weak { path: PathBuf },
    #[error("{path}: already exists; refusing to overwrite a key (move it away first)")]
    Exists { path: PathBuf },
    #[error("{path}: cannot write key file: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("key name `{0}` is invalid: use 1-64 characters from A-Z a-z 0-9 . _ - not starting with `.`")]
    BadName(String),
    #[error("{path}: cannot read trusted key folder: {source}")]
    ReadDir { path: PathBuf, source: io::Error },
    #[error("{path}: holds more than {MAX_TRUSTED_KEYS} public keys")]
    TooManyKeys { path: PathBuf },
    #[error("{path}: holds no trusted public keys (*.pub)")]
    NoKeys { path: PathBuf },
    #[error("cannot get randomness from the operating system: {0}")]
    Random(String),
}

/// The id of a public key: SHA-256 over its 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 32]);

impl KeyId {
    pub fn of(key: &VerifyingKey) -> Self {
        KeyId(Sha256Digest::of(key.as_bytes()).0)
    }

    /// The first 16 hex characters, for people.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..8])
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.short())
    }
}

impl FromStr for KeyId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<Sha256Digest>()
            .map(|d| KeyId(d.0))
            .map_err(|_| format!("`{}` is not a key id (64 lowercase hex characters)", crate::text::sanitize_to(s, 80)))
    }
}

impl Serialize for KeyId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

fn check_name(name: &str) -> Result<(), KeyError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(KeyError::BadName(crate::text::sanitize_to(name, 80)))
    }
}

/// Splits `<tag> <base64> <name>` and decodes the 32 key bytes.
fn parse_line(text: &str, tag: &str) -> Result<([u8; 32], String), String> {
    let line = text.strip_suffix('\n').unwrap_or(text);
    if line.contains('\n') {
        return Err("expected a single line".into());
    }
    let mut parts = line.split(' ');
    let found = parts.next().unwrap_or_default();
    if found != tag {
        let hint = match found {
            PUBLIC_TAG => " (this is a public key file)",
            SECRET_TAG => " (this is a secret key file)",
            _ => "",
        };
        return Err(format!("expected first word `{tag}`{hint}"));
    }
    let b64 = parts.next().ok_or("missing key material")?;
    let name = parts.next().ok_or("missing key name")?.to_string();
    if parts.next().is_some() {
        return Err("unexpected text after the key name".into());
    }
    check_name(&name).map_err(|e| e.to_string())?;
    let raw = B64.decode(b64).map_err(|e| format!("key material is not base64: {e}"))?;
    let bytes: [u8; 32] =
        raw.try_into().map_err(|v: Vec<u8>| format!("key material is {} bytes, expected 32", v.len()))?;
    Ok((bytes, name))
}

/// Reads a key file: a regular file (a symbolic link to one is followed, so
/// an operator may link keys into a trust folder) of at most
/// [`MAX_KEY_FILE`] bytes. A FIFO, a device or a folder named like a key is
/// refused at once, never opened for reading.
fn read_small(path: &Path) -> Result<String, KeyError> {
    let bad = |why: String| KeyError::Format { path: path.to_path_buf(), expected: "secret or public", why };
    let raw = read_regular(path, OpenPolicy::follow(MAX_KEY_FILE)).map_err(|e| match e {
        OpenError::TooLarge { .. } => bad(format!("larger than {MAX_KEY_FILE} bytes")),
        OpenError::Io { source, .. } => KeyError::Read { path: path.to_path_buf(), source },
        OpenError::NotRegular { kind, .. } => KeyError::NotRegular { path: path.to_path_buf(), kind },
    })?;
    String::from_utf8(raw).map_err(|_| bad("not a text file".into()))
}

/// A public key that may be trusted to sign packages.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    id: KeyId,
    name: String,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({} {})", self.name, self.id.short())
    }
}

impl PublicKey {
    pub fn parse(text: &str, path: &Path) -> Result<Self, KeyError> {
        let (bytes, name) = parse_line(text, PUBLIC_TAG).map_err(|why| KeyError::Format {
            path: path.to_path_buf(),
            expected: "public",
            why,
        })?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|e| KeyError::Format {
            path: path.to_path_buf(),
            expected: "public",
            why: format!("not a valid ed25519 point: {e}"),
        })?;
        if key.is_weak() {
            return Err(KeyError::Weak { path: path.to_path_buf() });
        }
        Ok(PublicKey { id: KeyId::of(&key), key, name })
    }

    pub fn load(path: &Path) -> Result<Self, KeyError> {
        Self::parse(&read_small(path)?, path)
    }

    pub fn id(&self) -> KeyId {
        self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn to_file_text(&self) -> String {
        format!("{PUBLIC_TAG} {} {}\n", B64.encode(self.key.as_bytes()), self.name)
    }

    /// Strict ed25519 verification: rejects non-canonical signatures and
    /// small-order components that plain `verify` would let through.
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let sig = Signature::from_bytes(signature);
        self.key.verify_strict(message, &sig).is_ok()
    }
}

/// A signing key. Its `Debug` output never shows the secret.
pub struct SecretKey {
    key: SigningKey,
    name: String,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({} {})", self.name, self.public().id.short())
    }
}

impl SecretKey {
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        check_name(name)?;
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(SecretKey { key: SigningKey::from_bytes(&seed), name: name.to_string() })
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, KeyError> {
        let (seed, name) = parse_line(text, SECRET_TAG).map_err(|why| KeyError::Format {
            path: path.to_path_buf(),
            expected: "secret",
            why,
        })?;
        Ok(SecretKey { key: SigningKey::from_bytes(&seed), name })
    }

    pub fn load(path: &Path) -> Result<Self, KeyError> {
        Self::parse(&read_small(path)?, path)
    }

    pub fn public(&self) -> PublicKey {
        let key = self.key.verifying_key();
        PublicKey { id: KeyId::of(&key), key, name: self.name.clone() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    fn to_file_text(&self) -> String {
        format!("{SECRET_TAG} {} {}\n", B64.encode(self.key.to_bytes()), self.name)
    }

    /// Writes `NAME.key` (mode 0600) and `NAME.pub` into `dir`, refusing to
    /// overwrite either. Returns both paths.
    pub fn write_pair(&self, dir: &Path) -> Result<(PathBuf, PathBuf), KeyError> {
        let secret_path = dir.join(format!("{}.key", self.name));
        let public_path = dir.join(format!("{}.pub", self.name));
        for p in [&secret_path, &public_path] {
            if p.symlink_metadata().is_ok() {
                return Err(KeyError::Exists { path: p.clone() });
            }
        }
        write_new(&secret_path, self.to_file_text().as_bytes(), 0o600)?;
        if let Err(e) = write_new(&public_path, self.public().to_file_text().as_bytes(), 0o644) {
            let _ = fs::remove_file(&secret_path);
            return Err(e);
        }
        Ok((secret_path, public_path))
    }
}

/// Creates `path` exclusively with `mode`, writes and syncs it.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), KeyError> {
    let mut file =
        OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(|source| {
            match source.kind() {
                io::ErrorKind::AlreadyExists => KeyError::Exists { path: path.to_path_buf() },
                _ => KeyError::Write { path: path.to_path_buf(), source },
            }
        })?;
    let res = file.write_all(data).and_then(|()| file.sync_all());
    if let Err(source) = res {
        let _ = fs::remove_file(path);
        return Err(KeyError::Write { path: path.to_path_buf(), source });
    }
    Ok(())
}

/// The set of public keys a host trusts, by key id.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: BTreeMap<KeyId, PublicKey>,
}

impl TrustedKeys {
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        TrustedKeys { keys: keys.into_iter().map(|k| (k.id, k)).collect() }
    }

    /// Loads every `*.pub` file in `dir`. Any unreadable or malformed key
    /// file is an error: a trust folder is never half-read.
    pub fn load_dir(dir: &Path) -> Result<Self, KeyError> {
        let rd = |source| KeyError::ReadDir { path: dir.to_path_buf(), source };
        let mut paths = Vec::new();
        for entry in fs::read_dir(dir).map_err(rd)? {
            let path = entry.map_err(rd)?.path();
            if path.extension().is_some_and(|e| e == "pub") {
                paths.push(path);
                if paths.len() > MAX_TRUSTED_KEYS {
                    return Err(KeyError::TooManyKeys { path: dir.to_path_buf() });
                }
            }
        }
        if paths.is_empty() {
            return Err(KeyError::NoKeys { path: dir.to_path_buf() });
        }
        paths.sort();
        let keys = paths.iter().map(|p| PublicKey::load(p)).collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedKeys::new(keys))
    }

    pub fn get(&self, id: &KeyId) -> Option<&PublicKey> {
        self.keys.get(id)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_round_trip_and_sign() {
        let dir = tempfile::tempdir().unwrap();
        let sk = SecretKey::generate("release-1").unwrap();
        let (kp, pp) = sk.write_pair(dir.path()).unwrap();
        let mode = fs::metadata(&kp).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        let sk2 = SecretKey::load(&kp).unwrap();
        let pk = PublicKey::load(&pp).unwrap();
        assert_eq!(pk, sk.public());
        let sig = sk2.sign(b"hello");
        assert!(pk.verify(b"hello", &sig));
        assert!(!pk.verify(b"hellO", &sig));
        assert!(matches!(sk.write_pair(dir.path()), Err(KeyError::Exists { .. })));
    }

    #[test]
    fn wrong_files_are_named() {
        let p = Path::new("x.key");
        let sk = SecretKey::generate("k").unwrap();
        let e = SecretKey::parse(&sk.public().to_file_text(), p).unwrap_err().to_string();
        assert!(e.contains("this is a public key file"), "{e}");
        let e = PublicKey::parse("garbage", p).unwrap_err().to_string();
        assert!(e.contains("x.key") && e.contains("expected first word"), "{e}");
        let e = PublicKey::parse(&format!("{PUBLIC_TAG} AAAA k"), p).unwrap_err().to_string();
        assert!(e.contains("3 bytes, expected 32"), "{e}");
    }

    #[test]
    fn weak_key_refused() {
        // The identity point is of small order.
        let mut id = [0u8; 32];
        id[0] = 1;
        let text = format!("{PUBLIC_TAG} {} weak", B64.encode(id));
        assert!(matches!(PublicKey::parse(&text, Path::new("w.pub")), Err(KeyError::Weak { .. })));
    }

    #[test]
    fn fifo_in_trust_folder_fails_the_load_at_once_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let sk = SecretKey::generate("good").unwrap();
        fs::write(dir.path().join("good.pub"), sk.public().to_file_text()).unwrap();
        let fifo = dir.path().join("x.pub");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let start = std::time::Instant::now();
        let e = TrustedKeys::load_dir(dir.path()).unwrap_err();
        assert!(start.elapsed() < std::time::Duration::from_secs(2), "{:?}", start.elapsed());
        assert!(matches!(e, KeyError::NotRegular { kind: FileKind::Fifo, .. }), "{e}");
        let text = e.to_string();
        assert!(text.contains("x.pub: is a FIFO (named pipe), not a regular file"), "{text}");
        // A folder named like a key, and a device linked in, are refused too.
        fs::remove_file(&fifo).unwrap();
        fs::create_dir(dir.path().join("d.pub")).unwrap();
        assert!(matches!(TrustedKeys::load_dir(dir.path()), Err(KeyError::NotRegular { .. })));
        fs::remove_dir(dir.path().join("d.pub")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("z.pub")).unwrap();
        let e = TrustedKeys::load_dir(dir.path()).unwrap_err();
        assert!(e.to_string().contains("is a character device"), "{e}");
        // A link to a real key file is followed.
        fs::remove_file(dir.path().join("z.pub")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("good.pub"), dir.path().join("link.pub")).unwrap();
        assert_eq!(TrustedKeys::load_dir(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn bad_names() {
        for n in ["", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(SecretKey::generate(n).is_err(), "{n:?}");
        }
    }
}
