//! Kernel module signatures: the PKCS#7 `SignedData` that the kernel's
//! `scripts/sign-file` appends to a `.ko`, then a `struct module_signature`
//! and the `~Module signature appended~\n` trailer (the kernel's
//! `include/linux/module_signature.h`). [`parse`] reads one from the end of
//! a module without trusting it; [`ModuleSigner`] is what a manifest records
//! about the signer, so a host can decide before it writes a payload byte
//! whether its kernel will take the module.
//!
//! The signer is named the way the kernel names an X.509 key
//! ([`kernel_name`]): its CN, prefixed with its O when the CN does not
//! start with it; `/proc/keys` shows that name and the subject key id.

use cms::cert::IssuerAndSerialNumber;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier};
use const_oid::ObjectIdentifier;
use der::{Decode, Encode, Tag, Tagged};
use serde::{Deserialize, Serialize};
use x509_cert::name::Name;

use crate::text::{is_clean, sanitize_to};

/// The trailer every signed module ends with.
pub const MAGIC: &[u8] = b"~Module signature appended~\n";
/// `struct module_signature`: algo, hash, id_type, signer_len, key_id_len,
/// three bytes of padding, then the signature's length (big-endian).
pub const INFO_LEN: usize = 12;
/// `id_type` of a PKCS#7 signature, the only kind current kernels take.
pub const PKEY_ID_PKCS7: u8 = 2;
/// Largest PKCS#7 blob accepted (an RSA-4096 signature with its issuer is
/// under 1 KiB; sign-file with `-a sha512` and a long issuer well under 4).
pub const MAX_PKCS7: usize = 16 * 1024;
/// The longest module tail [`parse`] needs: the blob, its info and trailer.
pub const MAX_TAIL: usize = MAX_PKCS7 + INFO_LEN + MAGIC.len();
/// Longest signer or issuer name recorded (the kernel keeps them whole;
/// certificates in practice stay well under).
pub const MAX_NAME_LEN: usize = 128;
/// Longest subject key id (hex): 64 bytes covers SHA-512 based ids.
pub const MAX_KEY_ID_LEN: usize = 128;
/// Longest serial number (hex): RFC 5280 allows 20 octets.
pub const MAX_SERIAL_LEN: usize = 42;

const OID_SIGNED_DATA: ObjectIdentifier = const_oid::db::rfc5911::ID_SIGNED_DATA;
const OID_DATA: ObjectIdentifier = const_oid::db::rfc5911::ID_DATA;
const OID_CN: ObjectIdentifier = const_oid::db::rfc4519::CN;
const OID_O: ObjectIdentifier = const_oid::db::rfc4519::O;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModSigError {
    #[error("the module ends with the signature trailer but is too short to hold a signature")]
    Short,
    #[error("the module signature is of type {0}, not PKCS#7 ({PKEY_ID_PKCS7}); re-sign it with scripts/sign-file or milspec-repo sign-module")]
    NotPkcs7(u8),
    #[error("the module signature claims {len} bytes, more than the module holds or the limit of {MAX_PKCS7}")]
    BadLength { len: u64 },
    #[error("the module signature is not a valid PKCS#7 SignedData: {0}")]
    Asn1(String),
    #[error("the module signature holds {0} signers; the kernel takes exactly one")]
    SignerCount(usize),
    #[error("the module signature names its signer by subject key id; sign it by issuer and serial number (sign-file's default) so the signer can be shown and recorded")]
    NotIssuerSerial,
}

/// A signature found at the end of a module (parsed, not verified: the
/// kernel verifies it at load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendedSignature {
    /// Bytes of the module the signature covers (everything before it).
    pub signed_len: usize,
    /// The signer's issuer, named as the kernel names it ([`kernel_name`]).
    pub issuer: String,
    /// The signer certificate's serial number, lowercase hex.
    pub serial: String,
    /// The digest algorithm's name (`sha256`, ...), or its OID.
    pub digest: String,
}

/// What a manifest records about the key a payload's module is signed by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleSigner {
    /// The certificate's subject as the kernel names it (`/proc/keys`).
    pub name: String,
    /// Its subject key identifier, lowercase hex: the id `/proc/keys`
    /// shows after the name, and how a host tells whether it trusts it.
    pub key_id: String,
    /// The certificate's issuer, as the kernel names it.
    pub issuer: String,
    /// The certificate's serial number, lowercase hex.
    pub serial: String,
}

impl ModuleSigner {
    /// Why the record is not well formed, if it is not.
    pub fn problem(&self) -> Option<&'static str> {
        let name_ok = |s: &str| !s.is_empty() && s.len() <= MAX_NAME_LEN && is_clean(s);
        let hex_ok = |s: &str, max: usize| {
            !s.is_empty()
                && s.len() <= max
                && s.len() % 2 == 0
                && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !name_ok(&self.name) || !name_ok(&self.issuer) {
            return Some("name and issuer must be 1-128 printable characters");
        }
        if !hex_ok(&self.key_id, MAX_KEY_ID_LEN) {
            return Some("key_id must be an even number (at most 128) of lowercase hex digits");
        }
        if !hex_ok(&self.serial, MAX_SERIAL_LEN) {
            return Some("serial must be an even number (at most 42) of lowercase hex digits");
        }
        None
    }

    /// Whether `sig` was made by the certificate this record names.
    pub fn matches(&self, sig: &AppendedSignature) -> bool {
        self.issuer == sig.issuer && self.serial == sig.serial
    }
}

impl std::fmt::Display for ModuleSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{}\" (key id {})", sanitize_to(&self.name, MAX_NAME_LEN), self.key_id)
    }
}

/// The module's appended signature: `Ok(None)` when it has none.
pub fn parse(module: &[u8]) -> Result<Option<AppendedSignature>, ModSigError> {
    let Some(rest) = module.strip_suffix(MAGIC) else {
        return Ok(None);
    };
    let info_at = rest.len().checked_sub(INFO_LEN).ok_or(ModSigError::Short)?;
    let info = &rest[info_at..];
    if info[2] != PKEY_ID_PKCS7 {
        return Err(ModSigError::NotPkcs7(info[2]));
    }
    let len = u32::from_be_bytes([info[8], info[9], info[10], info[11]]);
    let len_usize = usize::try_from(len).map_err(|_| ModSigError::BadLength { len: len.into() })?;
    if len_usize > MAX_PKCS7 || len_usize > info_at || len_usize == 0 {
        return Err(ModSigError::BadLength { len: len.into() });
    }
    let signed_len = info_at - len_usize;
    let blob = &rest[signed_len..info_at];
    let asn1 = |e: der::Error| ModSigError::Asn1(sanitize_to(&e.to_string(), 160));
    let ci = ContentInfo::from_der(blob).map_err(asn1)?;
    if ci.content_type != OID_SIGNED_DATA {
        return Err(ModSigError::Asn1(format!("content type {} is not signedData", ci.content_type)));
    }
    let sd: SignedData = ci.content.decode_as().map_err(asn1)?;
    if sd.encap_content_info.econtent_type != OID_DATA || sd.encap_content_info.econtent.is_some() {
        return Err(ModSigError::Asn1("the signature is not detached over data".into()));
    }
    let signers: Vec<_> = sd.signer_infos.0.iter().collect();
    let [si] = signers.as_slice() else {
        return Err(ModSigError::SignerCount(signers.len()));
    };
    let SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber { issuer, serial_number }) = &si.sid else {
        return Err(ModSigError::NotIssuerSerial);
    };
    let digest = digest_name(&si.digest_alg.oid);
    Ok(Some(AppendedSignature {
        signed_len,
        issuer: kernel_name(issuer),
        serial: serial_hex(serial_number.as_bytes()),
        digest,
    }))
}

/// A certificate serial number as lowercase hex, without the sign byte.
pub fn serial_hex(bytes: &[u8]) -> String {
    let trimmed = match bytes {
        [0, rest @ ..] if !rest.is_empty() => rest,
        b => b,
    };
    hex::encode(trimmed)
}

fn digest_name(oid: &ObjectIdentifier) -> String {
    use const_oid::db::rfc5912::{ID_SHA_224, ID_SHA_256, ID_SHA_384, ID_SHA_512};
    match *oid {
        ID_SHA_256 => "sha256".into(),
        ID_SHA_384 => "sha384".into(),
        ID_SHA_512 => "sha512".into(),
        ID_SHA_224 => "sha224".into(),
        other => other.to_string(),
    }
}

/// A name as the kernel's X.509 parser makes it (`x509_fabricate_name`):
/// the CN, or `O: CN` when the CN does not begin with the O, or the O
/// alone; control characters escaped, at most [`MAX_NAME_LEN`] bytes.
pub fn kernel_name(name: &Name) -> String {
    let mut cn = None;
    let mut o = None;
    for rdn in name.0.iter() {
        for atv in rdn.0.iter() {
            let slot = match atv.oid {
                OID_CN => &mut cn,
                OID_O => &mut o,
                _ => continue,
            };
            if slot.is_none() {
                *slot = directory_string(&atv.value);
            }
        }
    }
    let made = match (cn, o) {
        (Some(cn), Some(o)) if cn.starts_with(&o) => cn,
        (Some(cn), Some(o)) => format!("{o}: {cn}"),
        (Some(cn), None) => cn,
        (None, Some(o)) => o,
        (None, None) => String::new(),
    };
    sanitize_to(&made, MAX_NAME_LEN)
}

fn directory_string(v: &der::Any) -> Option<String> {
    match v.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::TeletexString | Tag::VisibleString => {
            Some(String::from_utf8_lossy(v.value()).into_owned())
        }
        _ => None,
    }
}

/// The `struct module_signature` and trailer that follow a PKCS#7 blob of
/// `pkcs7_len` bytes.
pub fn trailer(pkcs7_len: u32) -> Vec<u8> {
    let mut out = vec![0, 0, PKEY_ID_PKCS7, 0, 0, 0, 0, 0];
    out.extend_from_slice(&pkcs7_len.to_be_bytes());
    out.extend_from_slice(MAGIC);
    out
}

/// `module` with `signed_data` (a DER `SignedData`) appended as the kernel
/// expects: in a `ContentInfo`, then the info and the trailer.
pub fn append(module: &[u8], signed_data: &SignedData) -> Result<Vec<u8>, ModSigError> {
    let asn1 = |e: der::Error| ModSigError::Asn1(e.to_string());
    let ci = ContentInfo { content_type: OID_SIGNED_DATA, content: der::Any::encode_from(signed_data).map_err(asn1)? };
    let blob = ci.to_der().map_err(asn1)?;
    let len = u32::try_from(blob.len()).ok().filter(|l| (*l as usize) <= MAX_PKCS7);
    let len = len.ok_or(ModSigError::BadLength { len: blob.len() as u64 })?;
    let mut out = Vec::with_capacity(module.len() + blob.len() + INFO_LEN + MAGIC.len());
    out.extend_from_slice(module);
    out.extend_from_slice(&blob);
    out.extend_from_slice(&trailer(len));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn name(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    #[test]
    fn names_as_the_kernel_makes_them() {
        assert_eq!(kernel_name(&name("CN=Fleet modules")), "Fleet modules");
        assert_eq!(kernel_name(&name("CN=Debian Secure Boot CA,O=Debian")), "Debian Secure Boot CA");
        assert_eq!(kernel_name(&name("CN=module signing,O=Example Corp")), "Example Corp: module signing");
        assert_eq!(kernel_name(&name("O=Only Org")), "Only Org");
        assert_eq!(kernel_name(&name("C=DE")), "");
    }

    #[test]
    fn unsigned_modules_have_no_signature() {
        assert_eq!(parse(b"\x7fELF plain module"), Ok(None));
        assert_eq!(parse(b""), Ok(None));
    }

    #[test]
    fn hostile_trailers_are_refused_not_trusted() {
        let with = |info: [u8; INFO_LEN], body: &[u8]| {
            let mut m = body.to_vec();
            m.extend_from_slice(&info);
            m.extend_from_slice(MAGIC);
            m
        };
        assert_eq!(parse(MAGIC), Err(ModSigError::Short));
        let mut info = [0u8; INFO_LEN];
        info[2] = 1;
        assert_eq!(parse(&with(info, b"x")), Err(ModSigError::NotPkcs7(1)));
        info[2] = PKEY_ID_PKCS7;
        info[8..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(parse(&with(info, b"x")), Err(ModSigError::BadLength { .. })));
        info[8..].copy_from_slice(&2u32.to_be_bytes());
        assert!(matches!(parse(&with(info, b"x")), Err(ModSigError::BadLength { .. })), "longer than the module");
        assert!(matches!(parse(&with(info, b"body\x30\x00")), Err(ModSigError::Asn1(_))));
    }

    #[test]
    fn signer_records_are_checked() {
        let good = ModuleSigner {
            name: "Fleet modules".into(),
            key_id: "00ff".into(),
            issuer: "Fleet modules".into(),
            serial: "01".into(),
        };
        assert_eq!(good.problem(), None);
        for bad in [
            ModuleSigner { key_id: "0F".into(), ..good.clone() },
            ModuleSigner { key_id: "abc".into(), ..good.clone() },
            ModuleSigner { serial: String::new(), ..good.clone() },
            ModuleSigner { name: "evil\u{1b}[2J".into(), ..good.clone() },
            ModuleSigner { issuer: "x".repeat(MAX_NAME_LEN + 1), ..good.clone() },
        ] {
            assert!(bad.problem().is_some(), "{bad:?}");
        }
        assert_eq!(serial_hex(&[0, 0x80, 1]), "8001");
        assert_eq!(serial_hex(&[0]), "00");
    }
}
