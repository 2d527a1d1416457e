//! Planning an install: a pure function from the state record, the signed
//! manifest and the host's facts to either a plan or a reason to refuse.
//! Nothing here touches the disk or the kernel.

use milspec_format::{Manifest, Payload};
use serde::Serialize;

use crate::host_policy::HostPolicy;
use crate::slot_id::SlotId;
use crate::state::State;

/// What the host is, as read just before planning.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub kernel_release: String,
    pub sys_vendor: Option<String>,
    /// Version of the loaded module, if one is loaded.
    pub live_version: Option<String>,
    /// Version held by the committed slot, if there is one.
    pub committed_version: Option<String>,
    /// Whether the current boot is the one a pending reboot was asked in.
    pub pending_reboot_this_boot: bool,
    /// What the kernel enforces for module signatures and the keys it
    /// holds (all unknown by default: nothing is refused on its account).
    pub module_policy: HostPolicy,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Accept a lower sequence than ever committed here.
    pub allow_downgrade: bool,
    /// Replace a loaded module that matches no slot.
    pub adopt_unmanaged: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Rejection {
    #[error("no payload for this kernel ({release}); the package has {}", available.join(", "))]
    WrongKernel { release: String, available: Vec<String> },
    #[error("this host's DMI vendor is {}, the package is for {}", vendor.as_deref().unwrap_or("unknown"), accepted.join(", "))]
    WrongHardware { vendor: Option<String>, accepted: Vec<String> },
    #[error("version {version} failed on this host before ({reason}) and is blocklisted; it is not retried")]
    Blocklisted { version: String, reason: String },
    #[error("downgrade refused: sequence {sequence} is below {max}, the highest committed here (use --allow-downgrade to override)")]
    Downgrade { sequence: u64, max: u64 },
    #[error("a trial of {version} is in progress; wait for it to commit or roll back")]
    TrialInProgress { version: String },
    #[error("a rollback is pending a reboot ({reason}); reboot first")]
    PendingReboot { reason: String },
    #[error("the loaded {module} {} matches no slot (drift); set [kernel] adopt_unmanaged = true to replace it", live.as_deref().unwrap_or("(unknown version)"))]
    Drift { module: String, live: Option<String> },
    #[error("the kernel enforces module signatures ({enforcement}) and the package records no module signature for the build for {release}; the kernel would refuse it, so the live module was not touched: publish the build signed (milspec-repo pack --module-cert --module-key, docs/secure-boot.md)")]
    UnsignedModule { release: String, enforcement: String },
    #[error("the kernel enforces module signatures ({enforcement}) and the build for {release} is signed by {signer}, a key the kernel does not hold (it trusts: {}); the live module was not touched: enrol that certificate (docs/secure-boot.md) or publish a build signed by a trusted key", trusted_list(trusted))]
    UntrustedSigner { release: String, signer: String, trusted: Vec<String>, enforcement: String },
}

/// Most trusted keys a refusal names.
const MAX_TRUSTED_SHOWN: usize = 8;

fn trusted_list(t: &[String]) -> String {
    if t.is_empty() {
        return "no keys /proc/keys shows".into();
    }
    let mut out = t.iter().take(MAX_TRUSTED_SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if t.len() > MAX_TRUSTED_SHOWN {
        out += &format!(" and {} more", t.len() - MAX_TRUSTED_SHOWN);
    }
    out
}

/// Whether the kernel will refuse `payload`'s module for its signature,
/// judged from the manifest's record before any payload byte is written.
/// Only a known refusal refuses: when the kernel does not enforce, or its
/// keys cannot be read, the load itself decides (and a refusal there rolls
/// back without blocklisting).
pub fn signature_refusal(policy: &HostPolicy, payload: &Payload) -> Option<Rejection> {
    let enforcement = policy.enforcement();
    if !enforcement.is_enforced() {
        return None;
    }
    let release = payload.kernel_release.clone();
    let Some(signer) = &payload.module_signer else {
        return Some(Rejection::UnsignedModule { release, enforcement: enforcement.to_string() });
    };
    match policy.holds_key(&signer.key_id) {
        Some(false) => Some(Rejection::UntrustedSigner {
            release,
            signer: signer.to_string(),
            trusted: policy.trusted_keys().map(|k| format!("\"{}\" (key id {})", k.name, k.skid)).collect(),
            enforcement: enforcement.to_string(),
        }),
        Some(true) | None => None,
    }
}

/// What to do: where the package goes and what to fall back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub target: SlotId,
    /// The slot to reload if the new module fails; `None` when no module
    /// was committed (the fallback is then "no module", as found).
    pub fallback: Option<SlotId>,
    pub payload: Payload,
    /// The version is already committed and live: nothing to do.
    pub already_installed: bool,
}

pub fn plan(state: &State, manifest: &Manifest, facts: &Facts, module: &str, opts: Options) -> Result<Plan, Rejection> {
    if let Some(t) = &state.trial {
        return Err(Rejection::TrialInProgress { version: t.version.to_string() });
    }
    if let Some(p) = state.pending_reboot.as_ref().filter(|_| facts.pending_reboot_this_boot) {
        return Err(Rejection::PendingReboot { reason: p.reason.clone() });
    }
    let payload = manifest.payload_for(&facts.kernel_release).cloned().ok_or_else(|| Rejection::WrongKernel {
        release: facts.kernel_release.clone(),
        available: manifest.payloads.iter().map(|p| p.kernel_release.clone()).collect(),
    })?;
    let vendor_ok = facts.sys_vendor.as_ref().is_some_and(|v| manifest.requires.sys_vendor.iter().any(|a| a == v));
    if !vendor_ok {
        return Err(Rejection::WrongHardware {
            vendor: facts.sys_vendor.clone(),
            accepted: manifest.requires.sys_vendor.clone(),
        });
    }
    if let Some(b) = state.is_blocked(&manifest.version) {
        return Err(Rejection::Blocklisted { version: b.version.to_string(), reason: b.reason.clone() });
    }
    let version = manifest.version.to_string();
    let live_is_committed = facts.live_version.is_some() && facts.live_version == facts.committed_version;
    if live_is_committed && facts.committed_version.as_deref() == Some(version.as_str()) {
        return Ok(Plan {
            target: state.committed.unwrap_or(SlotId::A),
            fallback: state.committed,
            payload,
            already_installed: true,
        });
    }
    // After "already installed": the live module is proof the kernel took
    // it, whatever an older manifest records.
    if let Some(r) = signature_refusal(&facts.module_policy, &payload) {
        return Err(r);
    }
    if manifest.sequence < state.max_sequence && !opts.allow_downgrade {
        return Err(Rejection::Downgrade { sequence: manifest.sequence, max: state.max_sequence });
    }
    if facts.live_version.is_some() && !live_is_committed && !opts.adopt_unmanaged {
        return Err(Rejection::Drift { module: module.to_string(), live: facts.live_version.clone() });
    }
    Ok(Plan { target: state.target_slot(), fallback: state.committed, payload, already_installed: false })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Blocked;
    use milspec_format::manifest::{payload_path, Requires, KIND, PACKAGE_NAME};
    use milspec_format::Sha256Digest;

    const REL: &str = "6.12.113+deb12-cloud-amd64";

    fn manifest(version: &str, sequence: u64) -> Manifest {
        Manifest {
            format: 1,
            kind: KIND.into(),
            name: PACKAGE_NAME.into(),
            version: version.parse().unwrap(),
            sequence,
            created: time::OffsetDateTime::UNIX_EPOCH,
            payloads: vec![Payload {
                kernel_release: REL.into(),
                module: "dell_milspec".into(),
                srcversion: None,
                path: payload_path(REL, "dell_milspec"),
                size: 1,
                sha256: Sha256Digest::of(b"x"),
                module_signer: None,
            }],
            params: Default::default(),
            probation: None,
            requires: Requires::default(),
        }
    }

    fn facts() -> Facts {
        Facts { kernel_release: REL.into(), sys_vendor: Some("Dell Inc.".into()), ..Facts::default() }
    }

    fn run(state: &State, m: &Manifest, f: &Facts) -> Result<Plan, Rejection> {
        plan(state, m, f, "dell_milspec", Options::default())
    }

    #[test]
    fn first_install_goes_to_a_with_no_fallback() {
        let p = run(&State::default(), &manifest("1.0.0", 1), &facts()).unwrap();
        assert_eq!((p.target, p.fallback, p.already_installed), (SlotId::A, None, false));
    }

    #[test]
    fn next_install_goes_to_the_other_slot() {
        let s = State { committed: Some(SlotId::A), max_sequence: 1, ..State::default() };
        let f = Facts { live_version: Some("1.0.0".into()), committed_version: Some("1.0.0".into()), ..facts() };
        let p = run(&s, &manifest("1.1.0", 2), &f).unwrap();
        assert_eq!((p.target, p.fallback), (SlotId::B, Some(SlotId::A)));
        assert!(run(&s, &manifest("1.0.0", 1), &f).unwrap().already_installed);
    }

    #[test]
    fn live_module_identity_is_the_exact_version_string() {
        // 1.0.0+b1 is live and committed; 1.0.0+b2 is another build: it is
        // installed, not "already installed", and so is plain 1.0.0.
        let s = State { committed: Some(SlotId::A), max_sequence: 1, ..State::default() };
        let f = Facts { live_version: Some("1.0.0+b1".into()), committed_version: Some("1.0.0+b1".into()), ..facts() };
        assert!(run(&s, &manifest("1.0.0+b1", 1), &f).unwrap().already_installed);
        for other in ["1.0.0+b2", "1.0.0"] {
            let p = run(&s, &manifest(other, 2), &f).unwrap();
            assert!(!p.already_installed, "{other}");
            assert_eq!(p.target, SlotId::B, "{other}");
        }
    }

    #[test]
    fn refusals() {
        let s = State { committed: Some(SlotId::A), max_sequence: 5, ..State::default() };
        let f = Facts { live_version: Some("1.0.0".into()), committed_version: Some("1.0.0".into()), ..facts() };
        assert!(matches!(run(&s, &manifest("0.9.0", 4), &f), Err(Rejection::Downgrade { .. })));
        assert!(
            plan(&s, &manifest("0.9.0", 4), &f, "m", Options { allow_downgrade: true, ..Options::default() }).is_ok()
        );

        let mut other = manifest("2.0.0", 9);
        other.payloads[0].kernel_release = "6.1.0-28-amd64".into();
        let e = run(&s, &other, &f).unwrap_err();
        assert!(e.to_string().contains("6.1.0-28-amd64"), "{e}");

        let hp = Facts { sys_vendor: Some("LENOVO".into()), ..f.clone() };
        assert!(matches!(run(&s, &manifest("2.0.0", 9), &hp), Err(Rejection::WrongHardware { .. })));

        let mut b = s.clone();
        b.block(Blocked { version: "2.0.0".parse().unwrap(), sequence: 9, reason: "warn".into(), at: String::new() });
        assert!(matches!(run(&b, &manifest("2.0.0", 9), &f), Err(Rejection::Blocklisted { .. })));

        // Blocklisted as 2.0.0: the build 2.0.0+b1 is the same release.
        assert!(matches!(run(&b, &manifest("2.0.0+b1", 10), &f), Err(Rejection::Blocklisted { .. })));

        // Signature enforcement: unsigned and untrusted builds are refused,
        // a trusted signer passes, and unknown keys leave it to the load.
        use crate::host_policy::KernelKey;
        use milspec_format::modsig::ModuleSigner;
        let key = |skid: &str| KernelKey { serial: "1".into(), name: "Fleet".into(), skid: skid.into(), keyring: None };
        let enforced = HostPolicy { sig_enforce: Some(true), keys: Some(vec![key("aa11")]), ..HostPolicy::default() };
        let ef = Facts { module_policy: enforced.clone(), ..f.clone() };
        assert!(matches!(run(&s, &manifest("2.0.0", 9), &ef), Err(Rejection::UnsignedModule { .. })));
        let signed = |skid: &str| {
            let mut m = manifest("2.0.0", 9);
            m.payloads[0].module_signer = Some(ModuleSigner {
                name: "Other".into(),
                key_id: skid.into(),
                issuer: "Other".into(),
                serial: "01".into(),
            });
            m
        };
        let e = run(&s, &signed("bb22"), &ef).unwrap_err();
        assert!(matches!(e, Rejection::UntrustedSigner { .. }), "{e}");
        let text = e.to_string();
        assert!(text.contains("\"Other\" (key id bb22)") && text.contains("\"Fleet\" (key id aa11)"), "{text}");
        assert!(run(&s, &signed("AA11"), &ef).is_ok(), "a key the kernel holds");
        let unknown = Facts { module_policy: HostPolicy { keys: None, ..enforced }, ..f.clone() };
        assert!(run(&s, &signed("bb22"), &unknown).is_ok(), "keys unreadable: the load decides");
        assert!(run(&s, &manifest("2.0.0", 9), &f).is_ok(), "not enforced: unsigned loads");
        let same = run(&s, &manifest("1.0.0", 1), &ef).unwrap();
        assert!(same.already_installed, "the live, committed version is never refused for its record");

        let drift = Facts { live_version: Some("0.1.0".into()), ..f.clone() };
        assert!(matches!(run(&s, &manifest("2.0.0", 9), &drift), Err(Rejection::Drift { .. })));
        assert!(plan(&s, &manifest("2.0.0", 9), &drift, "m", Options { adopt_unmanaged: true, ..Options::default() })
            .is_ok());
    }
}
