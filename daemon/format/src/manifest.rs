//! `manifest.json`: what a package holds, as signed by the publisher.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::digest::Sha256Digest;
use crate::evolution;
use crate::limits::Limits;
use crate::modsig::ModuleSigner;
use crate::text::sanitize_to;

/// The manifest format this build reads and writes (docs/format.md,
/// "Format versions and evolution"); a manifest without `format` is 1.
pub const FORMAT_VERSION: u32 = 1;
/// The fields of format 1, per object. `requires` is closed: a requirement
/// this build cannot check is never ignored, whatever `optional` says.
const FIELDS: &[&str] =
    &["format", "kind", "name", "version", "sequence", "created", "payloads", "params", "probation", "requires"];
const PAYLOAD_FIELDS: &[&str] = &["kernel_release", "module", "srcversion", "path", "size", "sha256", "module_signer"];
/// Fields a writer lists in `optional` when it uses them: a reader that
/// predates them loads the payload as before (the kernel still checks the
/// module's own signature).
const WRITTEN_OPTIONAL: &[&str] = &["module_signer"];
const PROBATION_FIELDS: &[&str] = &["window_secs"];
pub const KIND: &str = "milspec-package";
pub const PACKAGE_NAME: &str = "dell-milspec";
/// The DMI `sys_vendor` values a package without `requires` is for: the
/// two names Dell firmware reports, the same pair the module's own DMI
/// table (kmod/dell-milspec.c) and the udev rule (udev/60-milspecd.rules)
/// match.
pub const DEFAULT_SYS_VENDORS: &[&str] = &["Dell Inc.", "Dell Computer Corporation"];
/// Longest kernel release string accepted (also keeps tar paths short).
pub const MAX_RELEASE_LEN: usize = 96;
/// Longest module name the kernel accepts (`MODULE_NAME_LEN - 1`).
pub const MAX_MODULE_NAME_LEN: usize = 55;
pub const MAX_PARAMS: usize = 32;
/// Most accepted `sys_vendor` values, and the longest one.
pub const MAX_SYS_VENDORS: usize = 16;
pub const MAX_SYS_VENDOR_LEN: usize = 64;
/// Longest `srcversion` (the kernel writes 23-24 hex digits).
pub const MAX_SRCVERSION_LEN: usize = 64;
/// Longest version string (semver, build metadata included).
pub const MAX_VERSION_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest.json is not valid: {0}")]
    Parse(String),
    #[error("manifest format {0} is not supported (this build reads format {FORMAT_VERSION}); upgrade milspecd")]
    Format(u32),
    #[error("manifest kind `{0}` is not `{KIND}`")]
    Kind(String),
    #[error("manifest names package `{0}`, expected `{PACKAGE_NAME}`")]
    Name(String),
    #[error("manifest lists no payloads")]
    NoPayloads,
    #[error("manifest lists {count} payloads, more than the limit of {limit}")]
    TooManyPayloads { count: usize, limit: usize },
    #[error("manifest lists kernel release `{0}` twice; a package holds one payload per kernel release")]
    DuplicateRelease(String),
    #[error("manifest payload has an invalid kernel release `{0}`")]
    BadRelease(String),
    #[error("manifest payload has an invalid module name `{0}`")]
    BadModule(String),
    #[error("manifest payload path `{path}` should be `{expected}`")]
    BadPath { path: String, expected: String },
    #[error("manifest payload `{path}` is {size} bytes, more than the limit of {limit}")]
    PayloadTooLarge { path: String, size: u64, limit: u64 },
    #[error("manifest parameter `{key}={value}` is invalid: {why}")]
    BadParam { key: String, value: String, why: &'static str },
    #[error("manifest sets more than {MAX_PARAMS} module parameters")]
    TooManyParams,
    #[error("manifest sequence must be at least 1")]
    ZeroSequence,
    #[error("manifest requires.sys_vendor `{0}` is invalid: use 1-{MAX_SYS_VENDOR_LEN} printable ASCII characters (letters, digits, space and .,-_&()/+'), no leading or trailing space")]
    BadSysVendor(String),
    #[error("manifest lists {0} sys_vendor values, more than the limit of {MAX_SYS_VENDORS}")]
    TooManySysVendors(usize),
    #[error("manifest payload has an invalid srcversion `{0}`: use 1-{MAX_SRCVERSION_LEN} ASCII letters, digits and . _ + -")]
    BadSrcversion(String),
    #[error("manifest version `{0}` is longer than {MAX_VERSION_LEN} characters")]
    BadVersion(String),
    #[error("manifest payload `{path}` has an invalid module_signer: {why}")]
    BadSigner { path: String, why: &'static str },
}

/// One kernel module build inside a package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    /// The `uname -r` this build loads on, read from the module's vermagic.
    pub kernel_release: String,
    /// The module name as the kernel knows it (`dell_milspec`).
    pub module: String,
    /// The module's `srcversion` from `.modinfo`, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srcversion: Option<String>,
    /// Where the payload sits inside the package.
    pub path: String,
    pub size: u64,
    pub sha256: Sha256Digest,
    /// The key the module's own (kernel) signature is made with, when it
    /// has one: checked against the module's appended signature when the
    /// payload is read, and by a host that enforces module signatures
    /// before it writes the payload (docs/secure-boot.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_signer: Option<ModuleSigner>,
}

/// Probation settings a publisher may suggest for this package.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probation {
    /// Seconds the new module must stay healthy before it is committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_secs: Option<u64>,
}

/// Which hardware the package is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requires {
    /// Accepted DMI `sys_vendor` values.
    pub sys_vendor: Vec<String>,
}

impl Default for Requires {
    fn default() -> Self {
        Requires { sys_vendor: DEFAULT_SYS_VENDORS.iter().map(|v| v.to_string()).collect() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub kind: String,
    pub name: String,
    pub version: semver::Version,
    /// Monotonic counter for anti-rollback; higher is newer.
    pub sequence: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    pub payloads: Vec<Payload>,
    /// Default module parameters, applied at load unless the host overrides.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probation: Option<Probation>,
    #[serde(default)]
    pub requires: Requires,
}

/// The path of a payload inside a package.
pub fn payload_path(kernel_release: &str, module: &str) -> String {
    format!("payload/{kernel_release}/{module}.ko")
}

pub fn valid_release(r: &str) -> bool {
    !r.is_empty()
        && r.len() <= MAX_RELEASE_LEN
        && r != "."
        && r != ".."
        && r.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+-~".contains(&b))
}

/// A DMI `sys_vendor` a package may require: printable ASCII from a small
/// set (no quotes, backslashes, control or non-ASCII characters), 1-64
/// characters, no space at either end. Real values look like `Dell Inc.`.
pub fn valid_sys_vendor(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= MAX_SYS_VENDOR_LEN
        && !v.starts_with(' ')
        && !v.ends_with(' ')
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b" .,-_&()/+'".contains(&b))
}

/// A module `srcversion`: 1-64 ASCII letters, digits and `. _ + -`.
pub fn valid_srcversion(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SRCVERSION_LEN
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
}

pub fn valid_module_name(m: &str) -> bool {
    !m.is_empty()
        && m.len() <= MAX_MODULE_NAME_LEN
        && m.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Checks a module parameter so that `key=value` pairs can be joined with
/// spaces into the string the kernel parses, without quoting tricks.
pub fn check_param(key: &str, value: &str) -> Result<(), ManifestError> {
    let bad = |why| ManifestError::BadParam { key: sanitize_to(key, 64), value: sanitize_to(value, 64), why };
    if !valid_module_name(key) {
        return Err(bad("names may use a-z, 0-9 and _ only"));
    }
    if value.is_empty() || value.len() > 256 {
        return Err(bad("values must be 1-256 characters"));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\'' && b != b'\\') {
        return Err(bad("values may not hold spaces, quotes, backslashes or control characters"));
    }
    Ok(())
}

/// Why a `NAME=VALUE` module parameter from a command line is refused.
#[derive(Debug, thiserror::Error)]
pub enum ParamArgError {
    #[error("expected NAME=VALUE")]
    NotKeyValue,
    #[error(transparent)]
    Bad(#[from] ManifestError),
}

/// Parses one `NAME=VALUE` module parameter given on a command line
/// (`milspec-repo pack --param`, modprobe's options to `load-committed`),
/// checked as a package's parameters are ([`check_param`]).
pub fn parse_param_arg(arg: &str) -> Result<(&str, &str), ParamArgError> {
    let (k, v) = arg.split_once('=').ok_or(ParamArgError::NotKeyValue)?;
    check_param(k, v)?;
    Ok((k, v))
}

impl Manifest {
    /// Parses and validates manifest bytes. Call this only on bytes whose
    /// signatures have been checked, or for offline inspection.
    pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Self, ManifestError> {
        // The format number first, so a newer format gets a clear error
        // rather than an "unknown field" one; then the fields the document
        // lists as optional and this build does not know are dropped
        // (crate::evolution), and the rest is parsed strictly.
        let parse_err = |e: String| ManifestError::Parse(sanitize_to(&e, 200));
        let mut doc = evolution::parse_object(bytes).map_err(parse_err)?;
        let format = evolution::format_of(&doc).map_err(|e| parse_err(e.to_string()))?;
        if format != FORMAT_VERSION {
            return Err(ManifestError::Format(format));
        }
        doc.insert(evolution::FORMAT_KEY.into(), format.into());
        let optional = evolution::take_optional(&mut doc).map_err(|e| parse_err(e.to_string()))?;
        evolution::strip(&mut doc, FIELDS, &optional);
        evolution::strip_each(&mut doc, "payloads", PAYLOAD_FIELDS, &optional);
        evolution::strip_in(&mut doc, "probation", PROBATION_FIELDS, &optional);
        let m: Manifest =
            serde_json::from_value(serde_json::Value::Object(doc)).map_err(|e| parse_err(e.to_string()))?;
        m.validate(limits)?;
        Ok(m)
    }

    pub fn validate(&self, limits: &Limits) -> Result<(), ManifestError> {
        if self.format != FORMAT_VERSION {
            return Err(ManifestError::Format(self.format));
        }
        if self.kind != KIND {
            return Err(ManifestError::Kind(sanitize_to(&self.kind, 64)));
        }
        if self.name != PACKAGE_NAME {
            return Err(ManifestError::Name(sanitize_to(&self.name, 64)));
        }
        if self.sequence == 0 {
            return Err(ManifestError::ZeroSequence);
        }
        // semver already limits identifiers to [0-9A-Za-z-.+]; bound the length.
        let version = self.version.to_string();
        if version.len() > MAX_VERSION_LEN {
            return Err(ManifestError::BadVersion(sanitize_to(&version, MAX_VERSION_LEN + 16)));
        }
        if self.requires.sys_vendor.len() > MAX_SYS_VENDORS {
            return Err(ManifestError::TooManySysVendors(self.requires.sys_vendor.len()));
        }
        if let Some(v) = self.requires.sys_vendor.iter().find(|v| !valid_sys_vendor(v)) {
            return Err(ManifestError::BadSysVendor(sanitize_to(v, MAX_SYS_VENDOR_LEN + 16)));
        }
        if self.payloads.is_empty() {
            return Err(ManifestError::NoPayloads);
        }
        if self.payloads.len() > limits.max_payloads {
            return Err(ManifestError::TooManyPayloads { count: self.payloads.len(), limit: limits.max_payloads });
        }
        let mut seen = BTreeSet::new();
        for p in &self.payloads {
            if !valid_release(&p.kernel_release) {
                return Err(ManifestError::BadRelease(sanitize_to(&p.kernel_release, 120)));
            }
            if !valid_module_name(&p.module) {
                return Err(ManifestError::BadModule(sanitize_to(&p.module, 80)));
            }
            if let Some(s) = p.srcversion.as_deref().filter(|s| !valid_srcversion(s)) {
                return Err(ManifestError::BadSrcversion(sanitize_to(s, MAX_SRCVERSION_LEN + 16)));
            }
            let expected = payload_path(&p.kernel_release, &p.module);
            if p.path != expected {
                return Err(ManifestError::BadPath { path: sanitize_to(&p.path, 200), expected });
            }
            if p.size > limits.max_payload_size {
                return Err(ManifestError::PayloadTooLarge {
                    path: p.path.clone(),
                    size: p.size,
                    limit: limits.max_payload_size,
                });
            }
            if let Some(why) = p.module_signer.as_ref().and_then(ModuleSigner::problem) {
                return Err(ManifestError::BadSigner { path: p.path.clone(), why });
            }
            if !seen.insert(p.kernel_release.as_str()) {
                return Err(ManifestError::DuplicateRelease(p.kernel_release.clone()));
            }
        }
        if self.params.len() > MAX_PARAMS {
            return Err(ManifestError::TooManyParams);
        }
        for (k, v) in &self.params {
            check_param(k, v)?;
        }
        Ok(())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        /// The manifest with the newer fields it uses named in `optional`,
        /// so older readers skip them (crate::evolution) instead of
        /// refusing the package.
        #[derive(Serialize)]
        struct Listed<'a> {
            #[serde(flatten)]
            manifest: &'a Manifest,
            optional: Vec<&'static str>,
        }
        let used: Vec<&'static str> = WRITTEN_OPTIONAL
            .iter()
            .copied()
            .filter(|f| *f == "module_signer" && self.payloads.iter().any(|p| p.module_signer.is_some()))
            .collect();
        let mut v = if used.is_empty() {
            serde_json::to_vec_pretty(self)
        } else {
            serde_json::to_vec_pretty(&Listed { manifest: self, optional: used })
        }
        .unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// The payload built for `kernel_release`, if the package has one.
    pub fn payload_for(&self, kernel_release: &str) -> Option<&Payload> {
        self.payloads.iter().find(|p| p.kernel_release == kernel_release)
    }

    pub fn total_payload_size(&self) -> u64 {
        self.payloads.iter().map(|p| p.size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            format: 1,
            kind: KIND.into(),
            name: PACKAGE_NAME.into(),
            version: "1.1.0".parse().unwrap(),
            sequence: 7,
            created: OffsetDateTime::UNIX_EPOCH,
            payloads: vec![Payload {
                kernel_release: "6.12.113+deb12-cloud-amd64".into(),
                module: "dell_milspec".into(),
                srcversion: Some("ABC".into()),
                path: payload_path("6.12.113+deb12-cloud-amd64", "dell_milspec"),
                size: 10,
                sha256: Sha256Digest::of(b"x"),
                module_signer: None,
            }],
            params: [("mode5_level".to_string(), "2".to_string())].into(),
            probation: None,
            requires: Requires::default(),
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(Manifest::parse(&m.to_bytes(), &Limits::DEFAULT).unwrap(), m);
    }

    #[test]
    fn rejects() {
        let l = Limits::DEFAULT;
        let check = |f: &dyn Fn(&mut Manifest), want: &str| {
            let mut m = sample();
            f(&mut m);
            let e = Manifest::parse(&m.to_bytes(), &l).unwrap_err().to_string();
            assert!(e.contains(want), "{e} !~ {want}");
        };
        check(&|m| m.format = 2, "format 2 is not supported");
        check(&|m| m.name = "other".into(), "expected `dell-milspec`");
        check(&|m| m.payloads.clear(), "no payloads");
        check(&|m| m.payloads[0].path = "../../etc/passwd".into(), "should be");
        check(&|m| m.payloads[0].kernel_release = "../x".into(), "invalid kernel release");
        check(&|m| m.payloads[0].module = "Dell-Milspec".into(), "invalid module name");
        check(&|m| m.payloads[0].size = u64::MAX, "more than the limit");
        check(&|m| m.payloads.push(m.payloads[0].clone()), "twice");
        check(
            &|m| {
                m.params.insert("x".into(), "a b".into());
            },
            "spaces",
        );
        check(&|m| m.sequence = 0, "sequence");
        for bad in ["Dell\x1b[32m Inc.", "Dell\u{202e}", "Dell\r\nInc.", " Dell", "Dell\0", "Dell\u{9b}", ""] {
            check(&|m| m.requires.sys_vendor = vec![bad.into()], "sys_vendor");
            let e = {
                let mut m = sample();
                m.requires.sys_vendor = vec![bad.into()];
                Manifest::parse(&m.to_bytes(), &l).unwrap_err().to_string()
            };
            assert!(crate::text::is_clean(&e), "{e:?}");
        }
        check(&|m| m.requires.sys_vendor = vec!["Dell Inc.".into(); MAX_SYS_VENDORS + 1], "sys_vendor values");
        check(&|m| m.payloads[0].srcversion = Some("ABC\x1b]0;x\x07".into()), "srcversion");
        check(
            &|m| m.version = "1.0.0-a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q.r.s.t.u.v.w.x.y.z.a.b.c.d.e.f.g".parse().unwrap(),
            "longer than",
        );
        check(&|m| m.kind = "\x1b[2Jmilspec".into(), "\\x1b[2J");
        let e = Manifest::parse(b"{\"format\":1,\"bogus\":1}", &l).unwrap_err().to_string();
        assert!(e.contains("not valid"), "{e}");
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_bytes()).unwrap();
        v["extra"] = 1.into();
        let e = Manifest::parse(&serde_json::to_vec(&v).unwrap(), &l).unwrap_err().to_string();
        assert!(e.contains("unknown field `extra`"), "{e}");
    }

    #[test]
    fn default_vendors_are_both_dell_names_and_valid() {
        assert_eq!(Requires::default().sys_vendor, ["Dell Inc.", "Dell Computer Corporation"]);
        assert!(DEFAULT_SYS_VENDORS.iter().all(|v| valid_sys_vendor(v)));
        // A manifest without `requires` reads as the default pair.
        let m = Manifest::parse(
            &with(|v| {
                v.as_object_mut().unwrap().remove("requires");
            }),
            &Limits::DEFAULT,
        )
        .unwrap();
        assert_eq!(m.requires, Requires::default());
    }

    fn with(f: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_bytes()).unwrap();
        f(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn field_lists_name_every_field_of_format_1() {
        let mut m = sample();
        m.probation = Some(Probation { window_secs: Some(5) });
        m.payloads[0].module_signer =
            Some(ModuleSigner { name: "n".into(), key_id: "00".into(), issuer: "n".into(), serial: "01".into() });
        let mut keys = BTreeSet::new();
        evolution::all_keys(&serde_json::to_value(&m).unwrap(), &["params"], &mut keys);
        let mut listed: BTreeSet<String> =
            FIELDS.iter().chain(PAYLOAD_FIELDS).chain(PROBATION_FIELDS).map(|s| s.to_string()).collect();
        listed.insert("sys_vendor".into());
        // The signer record is closed (deny_unknown_fields), named here.
        listed.extend(["name", "key_id", "issuer", "serial"].map(String::from));
        assert_eq!(keys, listed);
        // A manifest that uses the record lists it as optional for older readers.
        let v: serde_json::Value = serde_json::from_slice(&m.to_bytes()).unwrap();
        assert_eq!(v["optional"], serde_json::json!(["module_signer"]));
        assert_eq!(Manifest::parse(&m.to_bytes(), &Limits::DEFAULT).unwrap(), m);
        assert!(!String::from_utf8(sample().to_bytes()).unwrap().contains("optional"));
    }

    #[test]
    fn older_reader_ignores_listed_optional_fields_and_checks_the_rest() {
        let l = Limits::DEFAULT;
        let bytes = with(|v| {
            v["optional"] = serde_json::json!(["rollout_group", "signed_by_hsm", "min_window_secs"]);
            v["rollout_group"] = "canary".into();
            v["payloads"][0]["signed_by_hsm"] = true.into();
            v["probation"] = serde_json::json!({"window_secs": 30, "min_window_secs": 10});
        });
        let m = Manifest::parse(&bytes, &l).unwrap();
        assert_eq!(m.version, sample().version);
        assert_eq!(m.probation, Some(Probation { window_secs: Some(30) }));
        // An unknown field the document does not list is still refused.
        let e = Manifest::parse(
            &with(|v| {
                v["optional"] = serde_json::json!(["other"]);
                v["extra"] = 1.into();
            }),
            &l,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `extra`"), "{e}");
        // Listing a known field does not exempt it from its checks.
        let e = Manifest::parse(
            &with(|v| {
                v["optional"] = serde_json::json!(["sequence"]);
                v["sequence"] = 0.into();
            }),
            &l,
        )
        .unwrap_err();
        assert!(matches!(e, ManifestError::ZeroSequence), "{e}");
        // `requires` is closed: a requirement this build cannot check is never ignored.
        let e = Manifest::parse(
            &with(|v| {
                v["optional"] = serde_json::json!(["secure_boot"]);
                v["requires"]["secure_boot"] = true.into();
            }),
            &l,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `secure_boot`"), "{e}");
        // A malformed list, or a key given twice, is refused.
        for bad in [serde_json::json!("rollout_group"), serde_json::json!(["Rollout"])] {
            let e = Manifest::parse(&with(|v| v["optional"] = bad.clone()), &l).unwrap_err();
            assert!(matches!(e, ManifestError::Parse(_)), "{e}");
        }
        let mut twice = sample().to_bytes();
        let at = twice.iter().position(|b| *b == b'{').unwrap() + 1;
        twice.splice(at..at, b"\"sequence\": 99,".iter().copied());
        let e = Manifest::parse(&twice, &l).unwrap_err().to_string();
        assert!(e.contains("duplicate field `sequence`"), "{e}");
    }

    #[test]
    fn newer_format_is_refused_and_missing_format_is_1() {
        let l = Limits::DEFAULT;
        let e = Manifest::parse(&with(|v| v["format"] = 2.into()), &l).unwrap_err();
        assert!(matches!(e, ManifestError::Format(2)), "{e}");
        assert!(e.to_string().contains("upgrade milspecd"), "{e}");
        // A newer format is refused before its fields are looked at.
        let e = Manifest::parse(br#"{"format": 2, "new_required": {}}"#, &l).unwrap_err();
        assert!(matches!(e, ManifestError::Format(2)), "{e}");
        let m = Manifest::parse(&with(|v| drop(v.as_object_mut().unwrap().remove("format"))), &l).unwrap();
        assert_eq!(m, sample());
        for bad in [serde_json::json!(0), serde_json::json!("1"), serde_json::json!(-1)] {
            let e = Manifest::parse(&with(|v| v["format"] = bad.clone()), &l).unwrap_err();
            assert!(matches!(e, ManifestError::Parse(_)), "{e}");
        }
    }
}
