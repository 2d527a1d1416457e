//! The compliance report (`milspecd report`, `milspecctl report`, the
//! D-Bus `Report` method): what an operator hands an auditor about one
//! host, as `milspec.report/1` (docs/json.md). The module-signing policy
//! (Secure Boot, lockdown, `sig_enforce`, the kernel's keys), the kernel's
//! taint mask decoded bit by bit, the machine (DMI vendor and product),
//! the package keys this host trusts and the threshold, the committed
//! slot, and the live module: its version, whether it is the committed
//! build, that build's SHA-256 and who signed it.
//!
//! [`read_facts`] touches the files (every read bounded, every path from
//! the configuration, so tests use a fake tree); [`build`] turns the facts
//! into the report and decides everything else (pure). A fact that
//! cannot be read is `null` (or an `error` string beside it), never an
//! error that hides the rest. Every string from a file, the kernel or a
//! package is escaped here, before it reaches a terminal, a log or D-Bus.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use milspec_format::modsig::{self, AppendedSignature, ModuleSigner};
use milspec_format::text::{sanitize, sanitize_to};
use milspec_format::trust_doc::TrustSet;
use milspec_format::{KeyId, Limits, OpenPolicy, Payload, Sha256Digest};
use milspec_interface::json;

use crate::config::Config;
use crate::health::{decode_taint, TaintFlag};
use crate::host_policy::{self, HostPolicy, PolicyReport};
use crate::kernel::{loaded_module, LoadedModule};
use crate::kernel_paths::KernelPaths;
use crate::slot_id::SlotId;
use crate::slots::{SlotStore, SlotTrust};
use crate::state::StateFile;

/// Longest one-line fact kept from a file (DMI strings, kernel release).
const MAX_FACT: usize = 256;

/// `milspec.report/1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    /// When it was read (RFC 3339 UTC).
    pub at: String,
    pub host: Machine,
    /// What the kernel enforces for modules: a `milspec.host-policy/1`.
    pub module_signing: PolicyReport,
    pub taint: Taint,
    pub package_trust: PackageTrust,
    pub committed: Committed,
    pub live_module: LiveModule,
}

/// The machine and its kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// DMI `sys_vendor`.
    pub sys_vendor: Option<String>,
    /// DMI `product_name`.
    pub product_name: Option<String>,
    /// `uname -r`.
    pub kernel_release: Option<String>,
}

/// `/proc/sys/kernel/tainted`, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Taint {
    /// The mask; `None` when it cannot be read.
    pub value: Option<u64>,
    /// Every set bit, lowest first.
    pub flags: Vec<TaintFlag>,
}

/// The ed25519 keys packages must be signed by, and how many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageTrust {
    pub keys_dir: String,
    /// Distinct trusted signatures a package needs.
    pub threshold: u64,
    /// `None` when the keys folder cannot be read (see `error`).
    pub keys: Option<Vec<PackageKey>>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageKey {
    /// The name in the key file.
    pub name: String,
    /// The key id: SHA-256 of the public key, hex.
    pub id: String,
}

/// The committed slot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committed {
    /// `a` or `b`; `None` when nothing is committed (or unknown, see `error`).
    pub slot: Option<String>,
    pub version: Option<String>,
    pub sequence: Option<u64>,
    /// The kernel releases it holds builds for.
    pub kernels: Vec<String>,
    /// Whether it holds a build for the running kernel.
    pub running_kernel_build: Option<bool>,
    /// Why the state record or the slot could not be read or verified.
    pub error: Option<String>,
}

/// The loaded `dell_milspec`, and what is known of the build it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveModule {
    pub loaded: bool,
    /// `/sys/module/<name>/version`.
    pub version: Option<String>,
    pub srcversion: Option<String>,
    /// Whether the loaded module is the committed slot's build for the
    /// running kernel (its version, and its srcversion when the manifest
    /// records one); `None` when that cannot be told.
    pub committed_build: Option<bool>,
    /// The SHA-256 of that build, from the signed manifest (when
    /// `committed_build` is true).
    pub sha256: Option<String>,
    /// Whether the build's file in the slot hashes to `sha256` now.
    pub file_matches: Option<bool>,
    /// The module signer the manifest records for that build.
    pub signer: Option<ModuleSigner>,
    /// Whether the kernel holds the recorded signer's key (`/proc/keys`).
    pub signer_trusted: Option<bool>,
    /// The signature appended to the build's file, parsed (not verified:
    /// the kernel did that at load); `None` when unsigned or unreadable.
    pub signature: Option<Signature>,
    /// Whether the build's file carries an appended signature.
    pub signed: Option<bool>,
    /// Why the build's file could not be read or its signature parsed.
    pub error: Option<String>,
}

/// An appended module signature, as the kernel names its signer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub issuer: String,
    /// The certificate's serial number, lowercase hex.
    pub serial: String,
    /// The digest algorithm (`sha256`, ...).
    pub digest: String,
}

/// What [`read_facts`] found, each fact as found or why not: the input of
/// [`build`].
#[derive(Debug, Clone)]
pub struct Facts {
    pub at: String,
    pub policy: HostPolicy,
    pub taint: Option<u64>,
    pub sys_vendor: Option<String>,
    pub product_name: Option<String>,
    pub kernel_release: Option<String>,
    pub keys_dir: PathBuf,
    pub threshold: usize,
    pub package_keys: Result<Vec<(String, KeyId)>, String>,
    pub loaded: Option<LoadedModule>,
    /// `Ok(None)`: nothing committed.
    pub committed: Result<Option<CommittedFacts>, String>,
}

#[derive(Debug, Clone)]
pub struct CommittedFacts {
    pub slot: SlotId,
    /// The slot read back and verified, or why it could not be.
    pub read: Result<SlotFacts, String>,
}

#[derive(Debug, Clone)]
pub struct SlotFacts {
    pub version: String,
    pub sequence: u64,
    pub kernels: Vec<String>,
    /// The build for the running kernel, if the slot holds one.
    pub build: Option<BuildFacts>,
}

#[derive(Debug, Clone)]
pub struct BuildFacts {
    /// Its entry in the signed manifest.
    pub payload: Payload,
    /// Its file in the slot as read now, or why it could not be.
    pub file: Result<ModuleFile, String>,
}

#[derive(Debug, Clone)]
pub struct ModuleFile {
    pub sha256: Sha256Digest,
    /// The appended signature (`Ok(None)`: unsigned), or why it cannot be parsed.
    pub signature: Result<Option<AppendedSignature>, String>,
}

/// The report of this host now, read under `cfg`'s paths.
pub fn read(cfg: &Config) -> Report {
    build(read_facts(cfg, now_rfc3339()))
}

fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    // Whole seconds: a report is read by people.
    now.replace_nanosecond(0).unwrap_or(now).format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// Reads every fact (never fails: what cannot be read says so).
pub fn read_facts(cfg: &Config, at: String) -> Facts {
    let paths = KernelPaths::from_config(&cfg.kernel);
    let line = |p: PathBuf| {
        host_policy::read_bounded(&p).map(|b| String::from_utf8_lossy(&b).trim().to_string()).filter(|s| !s.is_empty())
    };
    let kernel_release = line(paths.osrelease());
    let trust = crate::trust_store::in_force(cfg);
    let package_keys = match &trust {
        Ok(t) => Ok(t.package.keys.iter().map(|k| (k.name().to_string(), k.id())).collect()),
        Err(e) => Err(e.to_string()),
    };
    let committed = read_committed(cfg, trust.as_ref().ok(), kernel_release.as_deref().unwrap_or_default());
    Facts {
        at,
        policy: host_policy::read(&paths),
        taint: line(paths.tainted()).and_then(|t| t.parse().ok()),
        sys_vendor: line(paths.dmi_sys_vendor()),
        product_name: line(paths.dmi_product_name()),
        kernel_release,
        keys_dir: cfg.trust.keys_dir.clone(),
        threshold: trust.as_ref().map_or(cfg.trust.threshold, |t| t.package.threshold),
        package_keys,
        loaded: loaded_module(&paths, &[]),
        committed,
    }
}

/// The state record's committed slot, read back and verified with the
/// host's trust, and its build for `release`.
fn read_committed(cfg: &Config, trust: Option<&TrustSet>, release: &str) -> Result<Option<CommittedFacts>, String> {
    let state = StateFile::new(&cfg.paths.state_dir).load().map_err(|e| e.to_string())?;
    let Some(slot) = state.committed else { return Ok(None) };
    let limits = Limits::default();
    let read = match trust {
        None => Err("the trusted keys cannot be read, so the slot cannot be verified".to_string()),
        Some(in_force) => {
            let trust = SlotTrust::of(in_force, release, &limits);
            match SlotStore::at(&cfg.paths.state_dir).read(slot, trust) {
                Ok(Some(s)) => Ok(SlotFacts {
                    version: s.manifest.version.to_string(),
                    sequence: s.manifest.sequence,
                    kernels: s.kernels(),
                    build: s.build(release).map(|b| BuildFacts {
                        payload: b.payload.clone(),
                        file: read_module_file(&b.path, limits.max_payload_size),
                    }),
                }),
                Ok(None) => Err(format!("slot {slot} is committed but not marked valid")),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    Ok(Some(CommittedFacts { slot, read }))
}

/// A build's file: its hash and its appended signature (at most `limit` bytes).
fn read_module_file(path: &std::path::Path, limit: u64) -> Result<ModuleFile, String> {
    let bytes = milspec_format::read_regular(path, OpenPolicy::no_follow(limit)).map_err(|e| e.to_string())?;
    Ok(ModuleFile { sha256: Sha256Digest::of(&bytes), signature: modsig::parse(&bytes).map_err(|e| e.to_string()) })
}

/// An untrusted one-line fact, escaped and bounded.
fn fact(s: &str) -> String {
    sanitize_to(s, MAX_FACT)
}

/// The report from the facts (pure).
pub fn build(f: Facts) -> Report {
    let taint = Taint { value: f.taint, flags: f.taint.map(decode_taint).unwrap_or_default() };
    let package_trust =
        PackageTrust {
            keys_dir: sanitize(&f.keys_dir.display().to_string()),
            threshold: u64::try_from(f.threshold).unwrap_or(u64::MAX),
            keys: f.package_keys.as_ref().ok().map(|keys| {
                keys.iter().map(|(name, id)| PackageKey { name: fact(name), id: id.to_string() }).collect()
            }),
            error: f.package_keys.as_ref().err().map(|e| sanitize(e)),
        };
    let (committed, build) = committed_view(&f.committed, f.kernel_release.is_some());
    let live_module = live_view(f.loaded.as_ref(), &committed, build, &f.policy);
    Report {
        schema: json::REPORT.into(),
        at: fact(&f.at),
        host: Machine {
            sys_vendor: f.sys_vendor.as_deref().map(fact),
            product_name: f.product_name.as_deref().map(fact),
            kernel_release: f.kernel_release.as_deref().map(fact),
        },
        module_signing: PolicyReport::new(f.policy),
        taint,
        package_trust,
        committed,
        live_module,
    }
}

/// The committed slot as reported, and its build for the running kernel.
fn committed_view(c: &Result<Option<CommittedFacts>, String>, release_known: bool) -> (Committed, Option<&BuildFacts>) {
    match c {
        Err(e) => (Committed { error: Some(sanitize(e)), ..Committed::default() }, None),
        Ok(None) => (Committed::default(), None),
        Ok(Some(cf)) => {
            let slot = Some(cf.slot.to_string());
            match &cf.read {
                Err(e) => (Committed { slot, error: Some(sanitize(e)), ..Committed::default() }, None),
                Ok(s) => (
                    Committed {
                        slot,
                        version: Some(fact(&s.version)),
                        sequence: Some(s.sequence),
                        kernels: s.kernels.iter().map(|k| fact(k)).collect(),
                        running_kernel_build: release_known.then_some(s.build.is_some()),
                        error: None,
                    },
                    s.build.as_ref(),
                ),
            }
        }
    }
}

/// The live module, and, when it is the committed build, that build's
/// hash and signer.
fn live_view(
    loaded: Option<&LoadedModule>,
    committed: &Committed,
    build: Option<&BuildFacts>,
    policy: &HostPolicy,
) -> LiveModule {
    let Some(m) = loaded else {
        return LiveModule { loaded: false, committed_build: Some(false), ..LiveModule::default() };
    };
    let mut live = LiveModule {
        loaded: true,
        version: m.version.as_deref().map(fact),
        srcversion: m.srcversion.as_deref().map(fact),
        ..LiveModule::default()
    };
    live.committed_build = match (&live.version, &committed.version, committed.error.is_some()) {
        (_, _, true) | (None, _, _) => None,
        (Some(_), None, false) => Some(false),
        (Some(v), Some(c), false) if v != c => Some(false),
        (Some(_), Some(_), false) => match build {
            None => Some(false),
            Some(b) => Some(match (&b.payload.srcversion, &m.srcversion) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            }),
        },
    };
    let Some(b) = build.filter(|_| live.committed_build == Some(true)) else { return live };
    live.sha256 = Some(b.payload.sha256.to_string());
    live.signer = b.payload.module_signer.as_ref().map(|s| ModuleSigner {
        name: fact(&s.name),
        key_id: fact(&s.key_id),
        issuer: fact(&s.issuer),
        serial: fact(&s.serial),
    });
    live.signer_trusted = b.payload.module_signer.as_ref().and_then(|s| policy.holds_key(&s.key_id));
    match &b.file {
        Err(e) => live.error = Some(sanitize(e)),
        Ok(file) => {
            live.file_matches = Some(file.sha256 == b.payload.sha256);
            match &file.signature {
                Ok(sig) => {
                    live.signed = Some(sig.is_some());
                    live.signature = sig.as_ref().map(|s| Signature {
                        issuer: fact(&s.issuer),
                        serial: fact(&s.serial),
                        digest: fact(&s.digest),
                    });
                }
                Err(e) => live.error = Some(sanitize(e)),
            }
        }
    }
    live
}

impl Report {
    /// Lines for a person (an auditor): one fact per line.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut line = |k: &str, v: &str| out.push_str(&format!("{k:<15} {v}\n"));
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
        let yes_no = |v: Option<bool>, yes: &str, no: &str| match v {
            Some(true) => yes.to_string(),
            Some(false) => no.to_string(),
            None => "unknown".to_string(),
        };
        line("report at:", &self.at);
        line("vendor:", &opt(&self.host.sys_vendor));
        line("product:", &opt(&self.host.product_name));
        line("kernel:", &opt(&self.host.kernel_release));
        let policy = self.module_signing.to_text();
        let t = &self.taint;
        let taint = match t.value {
            None => "unknown (/proc/sys/kernel/tainted cannot be read)".to_string(),
            Some(0) => "0 (not tainted)".to_string(),
            Some(v) => {
                let letters: String = t.flags.iter().map(|f| f.letter.unwrap_or('?')).collect();
                format!("{v} ({letters})")
            }
        };
        let p = &self.package_trust;
        let c = &self.committed;
        let m = &self.live_module;
        // The policy's own lines, as `milspecd policy` prints them.
        let mut rest = String::new();
        let mut more = |k: &str, v: &str| rest.push_str(&format!("{k:<15} {v}\n"));
        more("taint:", &taint);
        for f in &t.flags {
            let letter = f.letter.map_or("?".to_string(), String::from);
            more("taint flag:", &format!("{letter} (bit {}): {}", f.bit, f.meaning));
        }
        more("package keys:", &format!("{} (threshold {})", p.keys_dir, p.threshold));
        match (&p.keys, &p.error) {
            (Some(keys), _) => {
                for k in keys {
                    more("package key:", &format!("{} (id {})", k.name, k.id));
                }
            }
            (None, e) => more("package key:", &format!("unknown: {}", e.clone().unwrap_or_default())),
        }
        match (&c.slot, &c.error) {
            (_, Some(e)) => more("committed:", &format!("unknown: {e}")),
            (None, None) => more("committed:", "nothing committed"),
            (Some(s), None) => more(
                "committed:",
                &format!("{} (slot {s}, sequence {})", opt(&c.version), c.sequence.unwrap_or_default()),
            ),
        }
        if c.slot.is_some() && c.error.is_none() {
            let kernels = if c.kernels.is_empty() { "-".to_string() } else { c.kernels.join(", ") };
            more("builds for:", &kernels);
            more(
                "running kernel:",
                &yes_no(c.running_kernel_build, "has a committed build", "NO committed build for it"),
            );
        }
        if !m.loaded {
            more("live module:", "not loaded");
        } else {
            let which = yes_no(m.committed_build, "the committed build", "NOT the committed build");
            more("live module:", &format!("{} ({which})", opt(&m.version)));
            if let Some(s) = &m.srcversion {
                more("srcversion:", s);
            }
        }
        if let Some(h) = &m.sha256 {
            let check = yes_no(m.file_matches, "the slot's file matches", "the slot's file DOES NOT match");
            more("module sha256:", &format!("{h} ({check})"));
        }
        if m.committed_build == Some(true) {
            match &m.signer {
                Some(s) => {
                    let held = yes_no(m.signer_trusted, "held by the kernel", "NOT held by the kernel");
                    more("module signer:", &format!("{s} ({held})"));
                }
                None => more("module signer:", "none recorded in the manifest"),
            }
            match (&m.signature, m.signed) {
                (Some(s), _) => {
                    more("signature:", &format!("{} serial {} ({})", s.issuer, s.serial, s.digest));
                }
                (None, Some(false)) => more("signature:", "none (the module is unsigned)"),
                _ => {}
            }
            if let Some(e) = &m.error {
                more("module file:", &format!("unknown: {e}"));
            }
        }
        out + &policy + &rest
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::host_policy::{Enforcement, Lockdown};
    use std::fs;
    use std::path::Path;

    const PROC_KEYS: &str = "\
0a1b2c3d I------     1 perm 1f0b0000     0     0 keyring   .builtin_trusted_keys: 1
11111111 I------     1 perm 1f010000     0     0 asymmetri Debian Secure Boot CA: 6ccece7e4c6c0d1f6149f3dd27dfcc5cbb419ea1: X509.rsa 4cbb419ea1 []
0b1c2d3e I------     1 perm 1f0f0000     0     0 keyring   .machine: 1
33333333 I------     1 perm 1f010000     0     0 asymmetri Example fleet modules 2027: a1b2c3d4e5f60718293a: X509.rsa 293a []
0c1d2e3f I------     1 perm 1f0b0000     0     0 keyring   .platform: empty
";

    fn put(p: PathBuf, b: &[u8]) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b).unwrap();
    }

    fn config(dir: &Path) -> Config {
        let p = |n: &str| dir.join(n).display().to_string();
        let text = format!(
            "[trust]\nkeys_dir = \"{}\"\n[paths]\nstate_dir = \"{}\"\n[kernel]\nproc = \"{}\"\nsys = \"{}\"\nmodules_dir = \"{}\"\n",
            p("keys"),
            p("state"),
            p("proc"),
            p("sys"),
            p("modules")
        );
        Config::parse(&text, Path::new("t.toml")).unwrap()
    }

    /// A Secure Boot host locked down in integrity mode, with a MOK key
    /// in `.machine`, tainted O and E.
    fn secure_boot_tree(dir: &Path) -> KernelPaths {
        let paths = KernelPaths::under(dir, "dell_milspec");
        put(paths.efi_secure_boot(), &[6, 0, 0, 0, 1]);
        put(paths.lockdown(), b"none [integrity] confidentiality\n");
        put(paths.sig_enforce(), b"N\n");
        put(paths.proc_keys(), PROC_KEYS.as_bytes());
        put(paths.tainted(), b"12288\n");
        put(paths.dmi_sys_vendor(), b"Dell Inc.\n");
        put(paths.dmi_product_name(), b"Latitude 7330 Rugged Extreme\n");
        put(paths.osrelease(), b"6.1.0-18-amd64\n");
        paths
    }

    #[test]
    fn a_bare_host_reports_every_fact_unknown_and_nothing_fails() {
        let d = tempfile::tempdir().unwrap();
        let r = build(read_facts(&config(d.path()), "2027-01-01T00:00:00Z".into()));
        assert_eq!(r.schema, "milspec.report/1");
        assert_eq!(r.host, Machine::default());
        assert!(matches!(r.module_signing.enforcement, Enforcement::Unknown { .. }));
        assert_eq!(r.taint, Taint::default());
        assert!(r.package_trust.keys.is_none() && r.package_trust.error.is_some(), "{:?}", r.package_trust);
        assert_eq!(r.committed, Committed::default(), "a missing state folder: nothing committed");
        assert!(!r.live_module.loaded);
        let text = r.to_text();
        for want in ["vendor:         unknown", "taint:          unknown", "committed:      nothing committed"] {
            assert!(text.contains(want), "{want:?} missing:\n{text}");
        }
        assert!(!d.path().join("state").exists(), "the report created the state folder");
    }

    #[test]
    fn a_secure_boot_host_with_a_mok_key_is_reported_as_enforcing() {
        let d = tempfile::tempdir().unwrap();
        secure_boot_tree(d.path());
        let key = milspec_format::SecretKey::generate("release-1").unwrap();
        put(d.path().join("keys/release-1.pub"), key.public().to_file_text().as_bytes());
        let r = build(read_facts(&config(d.path()), "2027-01-01T00:00:00Z".into()));
        assert_eq!(r.module_signing.enforcement, Enforcement::Lockdown { mode: Lockdown::Integrity });
        assert_eq!(r.module_signing.policy.secure_boot, Some(true));
        let rings: Vec<(&str, u64)> =
            r.module_signing.policy.keyrings.iter().map(|k| (k.name.as_str(), k.keys)).collect();
        assert_eq!(rings, [(".builtin_trusted_keys", 1), (".machine", 1), (".platform", 0)]);
        let keys = r.module_signing.policy.keys.as_ref().unwrap();
        assert_eq!(keys[1].name, "Example fleet modules 2027");
        assert_eq!(keys[1].skid, "a1b2c3d4e5f60718293a");
        assert_eq!(r.taint.value, Some(12288));
        let letters: Vec<Option<char>> = r.taint.flags.iter().map(|f| f.letter).collect();
        assert_eq!(letters, [Some('O'), Some('E')]);
        assert_eq!(r.host.product_name.as_deref(), Some("Latitude 7330 Rugged Extreme"));
        let keys = r.package_trust.keys.as_ref().unwrap();
        assert_eq!((keys[0].name.as_str(), keys[0].id.clone()), ("release-1", key.public().id().to_string()));
        assert_eq!(r.package_trust.threshold, 1);
        let text = r.to_text();
        for want in [
            "secure boot:    on\n",
            "lockdown:       integrity\n",
            "module signing: enforced: the kernel is locked down (integrity)\n",
            "keyring:        .machine (1 keys)\n",
            "kernel key:     Example fleet modules 2027 (skid a1b2c3d4e5f60718293a, keyring unknown)\n",
            "taint:          12288 (OE)\n",
            "taint flag:     E (bit 13): unsigned module was loaded\n",
            "product:        Latitude 7330 Rugged Extreme\n",
            "package key:    release-1 (id ",
        ] {
            assert!(text.contains(want), "{want:?} missing:\n{text}");
        }
        // The JSON reads back as the same report (what milspecctl does).
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn hostile_file_contents_are_escaped_and_bounded() {
        let d = tempfile::tempdir().unwrap();
        let paths = KernelPaths::under(d.path(), "dell_milspec");
        put(paths.dmi_sys_vendor(), b"Dell\x1b[2J\xff Inc.\n");
        put(paths.dmi_product_name(), "x\u{202e}".repeat(5000).as_bytes());
        put(paths.tainted(), b"not a number\n");
        let r = build(read_facts(&config(d.path()), "t".into()));
        let v = r.host.sys_vendor.unwrap();
        assert!(milspec_format::text::is_clean(&v) && v.contains("\\x1b"), "{v}");
        let p = r.host.product_name.unwrap();
        assert!(milspec_format::text::is_clean(&p) && p.chars().count() <= MAX_FACT, "{p}");
        assert_eq!(r.taint.value, None);
    }

    fn loaded(version: &str, srcversion: Option<&str>) -> LoadedModule {
        LoadedModule {
            version: Some(version.into()),
            srcversion: srcversion.map(String::from),
            refcnt: None,
            holders: Vec::new(),
            params: Default::default(),
        }
    }

    fn slot_facts(
        file: Result<ModuleFile, String>,
        srcversion: Option<&str>,
    ) -> Result<Option<CommittedFacts>, String> {
        let bytes = b"module bytes";
        let payload = Payload {
            kernel_release: "6.1.0-18-amd64".into(),
            module: "dell_milspec".into(),
            srcversion: srcversion.map(String::from),
            path: "payload/6.1.0-18-amd64/dell-milspec.ko".into(),
            size: bytes.len() as u64,
            sha256: Sha256Digest::of(bytes),
            module_signer: Some(ModuleSigner {
                name: "Example fleet modules 2027".into(),
                key_id: "a1b2c3d4e5f60718293a".into(),
                issuer: "Example fleet modules 2027".into(),
                serial: "01".into(),
            }),
        };
        Ok(Some(CommittedFacts {
            slot: SlotId::B,
            read: Ok(SlotFacts {
                version: "1.1.0".into(),
                sequence: 7,
                kernels: vec!["6.1.0-18-amd64".into(), "6.12.0-1-amd64".into()],
                build: Some(BuildFacts { payload, file }),
            }),
        }))
    }

    fn facts(loaded: Option<LoadedModule>, committed: Result<Option<CommittedFacts>, String>) -> Facts {
        let (keys, keyrings) = host_policy::parse_proc_keys(PROC_KEYS);
        Facts {
            at: "t".into(),
            policy: HostPolicy { keys: Some(keys), keyrings, ..HostPolicy::default() },
            taint: Some(0),
            sys_vendor: None,
            product_name: None,
            kernel_release: Some("6.1.0-18-amd64".into()),
            keys_dir: "/etc/milspecd/keys".into(),
            threshold: 2,
            package_keys: Ok(Vec::new()),
            loaded,
            committed,
        }
    }

    fn good_file(signature: Result<Option<AppendedSignature>, String>) -> Result<ModuleFile, String> {
        Ok(ModuleFile { sha256: Sha256Digest::of(b"module bytes"), signature })
    }

    #[test]
    fn the_committed_build_live_gives_its_hash_and_signer() {
        let sig = AppendedSignature {
            signed_len: 10,
            issuer: "Example fleet modules 2027".into(),
            serial: "01".into(),
            digest: "sha256".into(),
        };
        let r = build(facts(Some(loaded("1.1.0", Some("ABC"))), slot_facts(good_file(Ok(Some(sig))), Some("ABC"))));
        assert_eq!(r.committed.slot.as_deref(), Some("b"));
        assert_eq!((r.committed.version.as_deref(), r.committed.sequence), (Some("1.1.0"), Some(7)));
        assert_eq!(r.committed.kernels, ["6.1.0-18-amd64", "6.12.0-1-amd64"]);
        assert_eq!(r.committed.running_kernel_build, Some(true));
        let m = &r.live_module;
        assert_eq!((m.loaded, m.committed_build, m.file_matches), (true, Some(true), Some(true)));
        assert_eq!(m.sha256, Some(Sha256Digest::of(b"module bytes").to_string()));
        assert_eq!(m.signer.as_ref().unwrap().key_id, "a1b2c3d4e5f60718293a");
        assert_eq!((m.signer_trusted, m.signed), (Some(true), Some(true)));
        assert_eq!(m.signature.as_ref().unwrap().digest, "sha256");
        let text = r.to_text();
        for want in [
            "committed:      1.1.0 (slot b, sequence 7)\n",
            "live module:    1.1.0 (the committed build)\n",
            "module signer:  \"Example fleet modules 2027\" (key id a1b2c3d4e5f60718293a) (held by the kernel)\n",
            "package keys:   /etc/milspecd/keys (threshold 2)\n",
            "taint:          0 (not tainted)\n",
        ] {
            assert!(text.contains(want), "{want:?} missing:\n{text}");
        }
    }

    #[test]
    fn another_module_live_or_a_changed_file_is_said_so() {
        // Another version loaded: not the committed build, no hash claimed.
        let r = build(facts(Some(loaded("9.9.9", None)), slot_facts(good_file(Ok(None)), None)));
        assert_eq!((r.live_module.committed_build, &r.live_module.sha256), (Some(false), &None));
        // Same version, another srcversion: not the committed build either.
        let r = build(facts(Some(loaded("1.1.0", Some("OTHER"))), slot_facts(good_file(Ok(None)), Some("ABC"))));
        assert_eq!(r.live_module.committed_build, Some(false));
        // The slot's file changed on disk since it was verified.
        let changed = Ok(ModuleFile { sha256: Sha256Digest::of(b"other"), signature: Ok(None) });
        let r = build(facts(Some(loaded("1.1.0", None)), slot_facts(changed, None)));
        assert_eq!((r.live_module.file_matches, r.live_module.signed), (Some(false), Some(false)));
        assert!(r.to_text().contains("DOES NOT match"), "{}", r.to_text());
        // The file cannot be read: the rest is still there.
        let r = build(facts(Some(loaded("1.1.0", None)), slot_facts(Err("gone\x1b".into()), None)));
        assert_eq!(r.live_module.error.as_deref(), Some("gone\\x1b"));
        assert!(r.live_module.sha256.is_some());
        // A state record that cannot be read: committed unknown, said why.
        let r = build(facts(Some(loaded("1.1.0", None)), Err("bad state".into())));
        assert_eq!((r.committed.error.as_deref(), r.live_module.committed_build), (Some("bad state"), None));
        // Nothing loaded.
        let r = build(facts(None, slot_facts(good_file(Ok(None)), None)));
        assert_eq!((r.live_module.loaded, r.live_module.committed_build), (false, Some(false)));
        assert!(r.to_text().contains("live module:    not loaded\n"), "{}", r.to_text());
    }
}
