//! The host's module-signing policy: whether the kernel will refuse a
//! module without a signature it trusts, and which keys it holds. Read
//! from the kernel's files under the configured `/proc` and `/sys` (so
//! tests use a fake tree): lockdown (`/sys/kernel/security/lockdown`),
//! `module.sig_enforce`, the UEFI `SecureBoot` variable, and the keys of
//! `/proc/keys`, each placed in the system keyring that holds it (read
//! with `keyctl(KEYCTL_READ)` on the host's own `/proc`). [`read`]
//! touches the files and the keyrings; everything else is pure.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::kernel_paths::KernelPaths;

/// Longest kernel file read here (`/proc/keys` of a busy host included).
const MAX_READ: u64 = 1024 * 1024;
/// Most keys kept from `/proc/keys`.
const MAX_KEYS: usize = 4096;
/// The keyrings module signatures are checked against (and the blocklist).
const SYSTEM_KEYRINGS: [&str; 5] =
    [".builtin_trusted_keys", ".secondary_trusted_keys", ".machine", ".platform", ".blacklist"];
/// Of those, the ones whose keys the kernel trusts for modules.
const TRUSTED_KEYRINGS: [&str; 4] = [".builtin_trusted_keys", ".secondary_trusted_keys", ".machine", ".platform"];

/// The kernel's lockdown mode (`/sys/kernel/security/lockdown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Lockdown {
    None,
    /// Unsigned modules are refused (among others).
    Integrity,
    /// As integrity, and kernel memory cannot be read.
    Confidentiality,
}

/// A key the kernel holds, as `/proc/keys` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelKey {
    /// `/proc/keys`' serial, hex.
    pub serial: String,
    /// The certificate's subject (its CN or O), as the kernel names it.
    pub name: String,
    /// The subject key identifier, lowercase hex: what a module
    /// signature names its signer by.
    pub skid: String,
    /// The system keyring that holds it (`.machine` for a MOK key,
    /// `.platform` for a UEFI db key, ...); `None` when it is in none of
    /// them or the keyrings' contents cannot be read.
    pub keyring: Option<String>,
}

/// A system keyring, with how many keys it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keyring {
    /// `.builtin_trusted_keys`, `.secondary_trusted_keys`, `.machine`, `.platform`.
    pub name: String,
    pub keys: u64,
    /// `/proc/keys`' serial, hex: what `keyctl` reads it by.
    pub serial: String,
}

/// What the host says, each fact `None` when it cannot be read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPolicy {
    /// The UEFI SecureBoot variable; `None` without UEFI or unreadable.
    pub secure_boot: Option<bool>,
    pub lockdown: Option<Lockdown>,
    /// `module.sig_enforce`.
    pub sig_enforce: Option<bool>,
    /// The asymmetric keys of `/proc/keys`; `None` when it cannot be read.
    pub keys: Option<Vec<KernelKey>>,
    /// The system keyrings `/proc/keys` shows.
    pub keyrings: Vec<Keyring>,
    /// Whether the keyrings' contents were read, so that each key's
    /// `keyring` is known; when not, every X.509 key counts as trusted.
    pub keyrings_read: bool,
}

/// Whether the kernel refuses a module without a trusted signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Enforcement {
    /// Refused: `module.sig_enforce=1` (or a kernel built to force it).
    SigEnforce,
    /// Refused: the kernel is locked down (Secure Boot turns that on).
    Lockdown { mode: Lockdown },
    /// Loaded anyway (an unsigned module taints the kernel).
    NotEnforced,
    /// Cannot tell; the reason.
    Unknown { why: String },
}

impl std::fmt::Display for Enforcement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Enforcement::SigEnforce => f.write_str("enforced: module.sig_enforce is on"),
            Enforcement::Lockdown { mode } => {
                write!(f, "enforced: the kernel is locked down ({})", lockdown_word(*mode))
            }
            Enforcement::NotEnforced => f.write_str("not enforced: an unsigned module loads (and taints the kernel)"),
            Enforcement::Unknown { why } => write!(f, "unknown: {why}"),
        }
    }
}

fn lockdown_word(l: Lockdown) -> &'static str {
    match l {
        Lockdown::None => "none",
        Lockdown::Integrity => "integrity",
        Lockdown::Confidentiality => "confidentiality",
    }
}

/// `milspecd policy --json`: `milspec.host-policy/1` (docs/json.md); also
/// the `module_signing` of a compliance report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyReport {
    pub schema: String,
    /// Whether the kernel refuses a module without a trusted signature.
    pub enforcement: Enforcement,
    #[serde(flatten)]
    pub policy: HostPolicy,
}

impl PolicyReport {
    pub fn new(policy: HostPolicy) -> Self {
        PolicyReport { schema: milspec_interface::json::HOST_POLICY.into(), enforcement: policy.enforcement(), policy }
    }

    /// Lines for a person.
    pub fn to_text(&self) -> String {
        let p = &self.policy;
        let known = |v: Option<bool>| match v {
            Some(true) => "on",
            Some(false) => "off",
            None => "unknown",
        };
        let mut out = format!("{:<15} {}\n", "module signing:", self.enforcement);
        out += &format!("{:<15} {}\n", "secure boot:", known(p.secure_boot));
        out += &format!("{:<15} {}\n", "lockdown:", p.lockdown.map_or("unknown", lockdown_word));
        out += &format!("{:<15} {}\n", "sig_enforce:", known(p.sig_enforce));
        for r in &p.keyrings {
            out += &format!("{:<15} {} ({} keys)\n", "keyring:", r.name, r.keys);
        }
        match &p.keys {
            None => out += &format!("{:<15} unknown (/proc/keys cannot be read)\n", "kernel keys:"),
            Some(keys) => {
                for k in keys {
                    let ring = k.keyring.as_deref().unwrap_or(if p.keyrings_read {
                        "no system keyring"
                    } else {
                        "keyring unknown"
                    });
                    out += &format!("{:<15} {} (skid {}, {})\n", "kernel key:", k.name, k.skid, ring);
                }
            }
        }
        out
    }
}

impl Enforcement {
    pub fn is_enforced(&self) -> bool {
        matches!(self, Enforcement::SigEnforce | Enforcement::Lockdown { .. })
    }
}

impl HostPolicy {
    /// The kernel's verdict on unsigned modules (pure).
    /// Lockdown is named first: Secure Boot locks the kernel down, which
    /// also turns `sig_enforce` on, and the lockdown is the cause.
    pub fn enforcement(&self) -> Enforcement {
        match self.lockdown {
            Some(mode @ (Lockdown::Integrity | Lockdown::Confidentiality)) => {
                return Enforcement::Lockdown { mode };
            }
            Some(Lockdown::None) if self.sig_enforce == Some(false) => return Enforcement::NotEnforced,
            _ => {}
        }
        if self.sig_enforce == Some(true) {
            return Enforcement::SigEnforce;
        }
        match (self.sig_enforce, self.secure_boot) {
            (None, _) => Enforcement::Unknown { why: "module.sig_enforce cannot be read".into() },
            (Some(false), Some(true)) => Enforcement::Unknown {
                why: "Secure Boot is on but the lockdown mode cannot be read (is securityfs mounted?)".into(),
            },
            // No lockdown file and no Secure Boot: no lockdown to enforce.
            (Some(false), _) => Enforcement::NotEnforced,
            (Some(true), _) => Enforcement::SigEnforce,
        }
    }

    /// Whether the kernel holds a key with subject key identifier `skid`
    /// (hex, any case) in a keyring it trusts for modules; `None` when
    /// its keys cannot be read.
    pub fn holds_key(&self, skid: &str) -> Option<bool> {
        let want = skid.trim().to_ascii_lowercase();
        self.keys.as_ref()?;
        Some(self.trusted_keys().any(|k| k.skid == want))
    }

    /// The keys the kernel checks module signatures against: those of
    /// the trusted system keyrings, or every X.509 key when the keyrings'
    /// contents could not be read.
    pub fn trusted_keys(&self) -> impl Iterator<Item = &KernelKey> {
        let read = self.keyrings_read;
        self.keys.iter().flatten().filter(move |k| !read || k.keyring.as_deref().is_some_and(is_trusted_keyring))
    }
}

fn is_trusted_keyring(name: &str) -> bool {
    TRUSTED_KEYRINGS.contains(&name)
}

/// Reads the policy under `paths` (never fails: what cannot be read is
/// `None`). The keyrings' contents are read from the kernel only when
/// `paths` is the host's own `/proc`: a fake tree's serials name nothing.
pub fn read(paths: &KernelPaths) -> HostPolicy {
    if paths.proc == Path::new("/proc") {
        read_with(paths, &keyctl_read)
    } else {
        read_with(paths, &|_| None)
    }
}

/// [`read`], with `members` giving the serials (hex) a keyring holds.
pub fn read_with(paths: &KernelPaths, members: &dyn Fn(&str) -> Option<Vec<String>>) -> HostPolicy {
    let text = |p: &Path| read_bounded(p).and_then(|b| String::from_utf8(b).ok());
    let secure_boot = if paths.efi_dir().is_dir() {
        read_bounded(&paths.efi_secure_boot()).and_then(|b| parse_efi_bool(&b))
    } else {
        None
    };
    let (keys, keyrings, keyrings_read) = match text(&paths.proc_keys()) {
        Some(t) => {
            let (mut k, r) = parse_proc_keys(&t);
            let read = place_keys(&mut k, &r, members);
            (Some(k), r, read)
        }
        None => (None, Vec::new(), false),
    };
    HostPolicy {
        secure_boot,
        lockdown: text(&paths.lockdown()).and_then(|t| parse_lockdown(&t)),
        sig_enforce: text(&paths.sig_enforce()).and_then(|t| parse_yes_no(&t)),
        keys,
        keyrings,
        keyrings_read,
    }
}

/// Sets each key's `keyring` from the keyrings' members; whether any
/// keyring's contents could be read.
pub fn place_keys(keys: &mut [KernelKey], rings: &[Keyring], members: &dyn Fn(&str) -> Option<Vec<String>>) -> bool {
    let mut read = false;
    for ring in rings {
        let Some(serials) = members(&ring.serial) else { continue };
        read = true;
        for k in keys.iter_mut().filter(|k| k.keyring.is_none() && serials.contains(&k.serial)) {
            k.keyring = Some(ring.name.clone());
        }
    }
    read
}

/// `keyctl(KEYCTL_READ)` on a keyring: the serials of its keys, as
/// `/proc/keys` prints them (`%08x`). `None` when it cannot be read (no
/// permission, the system call filtered, a serial that is not hex).
fn keyctl_read(serial_hex: &str) -> Option<Vec<String>> {
    /// `KEYCTL_READ` of `linux/keyctl.h`.
    const KEYCTL_READ: libc::c_long = 11;
    // Serials are positive 32-bit numbers (`key_serial_t`).
    let serial = libc::c_long::from(u32::from_str_radix(serial_hex, 16).ok()? as i32);
    let mut buf = vec![0i32; MAX_KEYS];
    let len = buf.len() * size_of::<i32>();
    // SAFETY: the kernel writes at most `len` bytes into `buf`, which
    // holds `len` bytes, and returns the size the whole list needs.
    #[allow(unsafe_code)]
    let n = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_READ, serial, buf.as_mut_ptr(), len) };
    let n = usize::try_from(n).ok()?.min(len) / size_of::<i32>();
    Some(buf[..n].iter().map(|s| format!("{:08x}", *s as u32)).collect())
}

/// A kernel file, at most [`MAX_READ`] bytes; `None` if unreadable.
pub fn read_bounded(p: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    fs::File::open(p).ok()?.take(MAX_READ).read_to_end(&mut out).ok()?;
    Some(out)
}

/// `none [integrity] confidentiality`: the bracketed word.
pub fn parse_lockdown(text: &str) -> Option<Lockdown> {
    let chosen = text.split_whitespace().find(|w| w.starts_with('[') && w.ends_with(']'))?;
    match chosen.trim_matches(['[', ']']) {
        "none" => Some(Lockdown::None),
        "integrity" => Some(Lockdown::Integrity),
        "confidentiality" => Some(Lockdown::Confidentiality),
        _ => None,
    }
}

/// A boolean module parameter: `Y`/`N` (or `1`/`0`).
pub fn parse_yes_no(text: &str) -> Option<bool> {
    match text.trim() {
        "Y" | "y" | "1" => Some(true),
        "N" | "n" | "0" => Some(false),
        _ => None,
    }
}

/// An efivarfs boolean: 4 bytes of attributes, then the value byte.
pub fn parse_efi_bool(bytes: &[u8]) -> Option<bool> {
    match bytes {
        [_, _, _, _, v] => Some(*v == 1),
        _ => None,
    }
}

/// The asymmetric keys and the system keyrings of `/proc/keys`. A line is
/// `SERIAL FLAGS USAGE EXPIRY PERM UID GID TYPE DESCRIPTION`; an X.509
/// key's description is `NAME: SKID: X509.ALGO ID [...]`, a keyring's
/// `NAME: COUNT` (or `NAME: empty`).
pub fn parse_proc_keys(text: &str) -> (Vec<KernelKey>, Vec<Keyring>) {
    let mut keys = Vec::new();
    let mut rings = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let serial = f.next().unwrap_or_default().to_string();
        // FLAGS USAGE EXPIRY PERM UID GID
        let kind = f.nth(6).unwrap_or_default();
        let rest: Vec<&str> = f.collect();
        let desc = rest.join(" ");
        match kind {
            "keyring" if SYSTEM_KEYRINGS.iter().any(|r| desc.starts_with(&format!("{r}:"))) => {
                let (name, count) = desc.split_once(": ").unwrap_or((desc.as_str(), "0"));
                let name = milspec_format::text::sanitize(name);
                rings.push(Keyring { name, keys: count.trim().parse().unwrap_or(0), serial: serial.clone() });
            }
            // The type column is 9 characters wide: `asymmetri`.
            k if k.starts_with("asymmetri") && keys.len() < MAX_KEYS => {
                if let Some(key) = parse_x509_description(&serial, &desc) {
                    keys.push(key);
                }
            }
            _ => {}
        }
    }
    (keys, rings)
}

fn parse_x509_description(serial: &str, desc: &str) -> Option<KernelKey> {
    // The name may itself hold ": "; the SKID is the hex field before the
    // `X509.` part.
    let parts: Vec<&str> = desc.split(": ").collect();
    let x509 = parts.iter().position(|p| p.starts_with("X509."))?;
    if x509 < 2 {
        return None;
    }
    let skid = parts[x509 - 1].trim();
    if skid.is_empty() || !skid.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    Some(KernelKey {
        serial: serial.to_string(),
        name: milspec_format::text::sanitize(&parts[..x509 - 1].join(": ")),
        skid: skid.to_ascii_lowercase(),
        keyring: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC_KEYS: &str = "\
0a1b2c3d I------     1 perm 1f0b0000     0     0 keyring   .builtin_trusted_keys: 2
11111111 I------     1 perm 1f010000     0     0 asymmetri Debian Secure Boot CA: 6ccece7e4c6c0d1f6149f3dd27dfcc5cbb419ea1: X509.rsa 4cbb419ea1 []
22222222 I------     1 perm 1f010000     0     0 asymmetri Debian Secure Boot Signer 2022 - linux: 7a0b1c2d3e4f: X509.rsa 3e4f []
0b1c2d3e I------     1 perm 1f0f0000     0     0 keyring   .machine: 1
33333333 I------     1 perm 1f010000     0     0 asymmetri Fleet: module signing: AABBCCDDEEFF00112233: X509.rsa 2233 []
0c1d2e3f I------     1 perm 1f0b0000     0     0 keyring   .platform: empty
44444444 I--Q---     1 perm 3f010000     0     0 user      some-user-key: 12
55555555 I--Q---     1 perm 3f010000     0     0 asymmetri Root's own: 99887766: X509.rsa 7766 []
";

    /// What keyctl would read: the builtin keyring holds the Debian keys,
    /// `.machine` (MOK) the fleet key; root's own key is in none of them.
    fn members(serial: &str) -> Option<Vec<String>> {
        let v: &[&str] = match serial {
            "0a1b2c3d" => &["11111111", "22222222"],
            "0b1c2d3e" => &["33333333"],
            "0c1d2e3f" => &[],
            _ => return None,
        };
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn proc_keys_gives_the_x509_keys_and_the_system_keyrings() {
        let (keys, rings) = parse_proc_keys(PROC_KEYS);
        let got: Vec<(&str, &str)> = keys.iter().map(|k| (k.name.as_str(), k.skid.as_str())).collect();
        assert_eq!(
            got,
            [
                ("Debian Secure Boot CA", "6ccece7e4c6c0d1f6149f3dd27dfcc5cbb419ea1"),
                ("Debian Secure Boot Signer 2022 - linux", "7a0b1c2d3e4f"),
                ("Fleet: module signing", "aabbccddeeff00112233"),
                ("Root's own", "99887766"),
            ]
        );
        let rings: Vec<(&str, u64)> = rings.iter().map(|r| (r.name.as_str(), r.keys)).collect();
        assert_eq!(rings, [(".builtin_trusted_keys", 2), (".machine", 1), (".platform", 0)]);
    }

    #[test]
    fn a_mok_key_is_placed_in_machine_and_only_system_keyring_keys_are_trusted() {
        let (mut keys, rings) = parse_proc_keys(PROC_KEYS);
        assert!(place_keys(&mut keys, &rings, &members));
        let placed: Vec<(&str, Option<&str>)> = keys.iter().map(|k| (k.skid.as_str(), k.keyring.as_deref())).collect();
        assert_eq!(
            placed,
            [
                ("6ccece7e4c6c0d1f6149f3dd27dfcc5cbb419ea1", Some(".builtin_trusted_keys")),
                ("7a0b1c2d3e4f", Some(".builtin_trusted_keys")),
                ("aabbccddeeff00112233", Some(".machine")),
                ("99887766", None),
            ]
        );
        let policy =
            HostPolicy { keys: Some(keys.clone()), keyrings: rings.clone(), keyrings_read: true, ..Default::default() };
        assert_eq!(policy.holds_key("AABBCCDDEEFF00112233"), Some(true), "a MOK key signs modules");
        assert_eq!(policy.holds_key("99887766"), Some(false), "a key outside the system keyrings does not");
        assert_eq!(policy.trusted_keys().count(), 3);
        // A key on the blocklist keyring is not trusted either.
        let mut blocked = keys.clone();
        blocked[2].keyring = Some(".blacklist".into());
        let policy = HostPolicy { keys: Some(blocked), keyrings_read: true, ..Default::default() };
        assert_eq!(policy.holds_key("aabbccddeeff00112233"), Some(false));
        // Keyrings unreadable: every X.509 key counts (the load decides the rest).
        let (mut keys, rings) = parse_proc_keys(PROC_KEYS);
        assert!(!place_keys(&mut keys, &rings, &|_| None));
        let policy = HostPolicy { keys: Some(keys), keyrings: rings, ..Default::default() };
        assert_eq!(policy.holds_key("99887766"), Some(true));
        assert_eq!(policy.trusted_keys().count(), 4);
    }

    #[test]
    fn lockdown_sig_enforce_and_the_efi_variable_are_read() {
        assert_eq!(parse_lockdown("none [integrity] confidentiality\n"), Some(Lockdown::Integrity));
        assert_eq!(parse_lockdown("[none] integrity confidentiality"), Some(Lockdown::None));
        assert_eq!(parse_lockdown("none integrity"), None);
        assert_eq!((parse_yes_no("Y\n"), parse_yes_no("N"), parse_yes_no("maybe")), (Some(true), Some(false), None));
        assert_eq!(parse_efi_bool(&[6, 0, 0, 0, 1]), Some(true));
        assert_eq!(parse_efi_bool(&[6, 0, 0, 0, 0]), Some(false));
        assert_eq!(parse_efi_bool(&[6, 0, 0]), None);
    }

    #[test]
    fn the_verdict_follows_sig_enforce_then_lockdown() {
        let p =
            |sig, lock, sb| HostPolicy { sig_enforce: sig, lockdown: lock, secure_boot: sb, ..HostPolicy::default() };
        assert_eq!(p(Some(true), Some(Lockdown::None), None).enforcement(), Enforcement::SigEnforce);
        assert_eq!(
            p(Some(false), Some(Lockdown::Integrity), Some(true)).enforcement(),
            Enforcement::Lockdown { mode: Lockdown::Integrity }
        );
        assert_eq!(p(Some(false), Some(Lockdown::None), Some(true)).enforcement(), Enforcement::NotEnforced);
        assert_eq!(p(Some(false), None, None).enforcement(), Enforcement::NotEnforced);
        assert!(matches!(p(Some(false), None, Some(true)).enforcement(), Enforcement::Unknown { .. }));
        assert!(matches!(p(None, None, None).enforcement(), Enforcement::Unknown { .. }));
        assert!(p(None, Some(Lockdown::Confidentiality), None).enforcement().is_enforced());
        // Secure Boot: locked down and sig_enforce on; the lockdown is named.
        assert_eq!(
            p(Some(true), Some(Lockdown::Integrity), Some(true)).enforcement(),
            Enforcement::Lockdown { mode: Lockdown::Integrity }
        );
    }

    #[test]
    fn a_fake_tree_is_read_and_a_missing_file_is_unknown() {
        let d = tempfile::tempdir().unwrap();
        let paths = KernelPaths::under(d.path(), "dell_milspec");
        assert_eq!(read(&paths), HostPolicy::default(), "nothing readable: every fact unknown");
        let put = |p: std::path::PathBuf, b: &[u8]| {
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, b).unwrap();
        };
        put(paths.lockdown(), b"none [integrity] confidentiality\n");
        put(paths.sig_enforce(), b"N\n");
        put(paths.efi_secure_boot(), &[6, 0, 0, 0, 1]);
        put(paths.proc_keys(), PROC_KEYS.as_bytes());
        let policy = read(&paths);
        assert!(!policy.keyrings_read, "a fake tree's keyrings are never read from the kernel");
        let policy = read_with(&paths, &members);
        assert!(policy.keyrings_read);
        assert_eq!(policy.secure_boot, Some(true));
        assert_eq!(policy.enforcement(), Enforcement::Lockdown { mode: Lockdown::Integrity });
        assert_eq!(policy.holds_key("AABBCCDDEEFF00112233"), Some(true));
        assert_eq!(policy.holds_key("0011"), Some(false));
        assert_eq!(HostPolicy::default().holds_key("0011"), None);
    }
}
