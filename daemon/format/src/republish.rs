//! Kernel-build republish: the same release published again with builds
//! for more kernels.
//!
//! A republish keeps the name, version, sequence, parameters, requirements,
//! probation and format of the release, and every payload it had (kernel
//! release, module, srcversion, path, size, sha256) unchanged; it adds at
//! least one payload. Only `created` and the added payloads may differ.
//! A host tells it apart from an upgrade (higher sequence), a downgrade or
//! a replay (lower or equal sequence with other content) by checking the
//! new manifest against the one it committed with [`added_builds`].
//!
//! Pure: no file, no network.

use crate::manifest::{Manifest, Payload};
use crate::text::sanitize_to;

/// Longest untrusted text (a version or kernel release) put in a message.
const SHOWN: usize = 100;

/// Why a manifest is not a kernel-build republish of another.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepublishError {
    /// A field of the release other than `created` and the payloads differs.
    #[error("not a kernel-build republish of {version}: its `{field}` field differs; a republish may only add kernel builds: publish a new version instead")]
    NotTheSameRelease { version: String, field: &'static str },
    /// A kernel release both list has a different build.
    #[error("not a kernel-build republish of {version}: the build for kernel {release} changed; a republish may only add kernel builds: publish a new version instead")]
    PayloadChanged { version: String, release: String },
    /// A kernel release the old manifest lists is missing from the new one.
    #[error("not a kernel-build republish of {version}: the build for kernel {release} was dropped; a republish keeps every build it had: publish a new version instead")]
    PayloadDropped { version: String, release: String },
    /// The new manifest lists exactly the kernels of the old one.
    #[error("not a kernel-build republish of {version}: it adds no kernel build (it lists the same kernels); to change a build, publish a new version")]
    NothingAdded { version: String },
}

/// The payloads `new` adds to `old`, if `new` is a kernel-build republish
/// of `old`, in the order `new` lists them.
pub fn added_builds<'a>(old: &Manifest, new: &'a Manifest) -> Result<Vec<&'a Payload>, RepublishError> {
    let version = sanitize_to(&old.version.to_string(), SHOWN);
    let differs = |field: &'static str| Err(RepublishError::NotTheSameRelease { version: version.clone(), field });
    if old.format != new.format {
        return differs("format");
    }
    if old.kind != new.kind {
        return differs("kind");
    }
    if old.name != new.name {
        return differs("name");
    }
    // Build metadata counts (semver equality compares it): 1.1.0+b2 is not
    // a republish of 1.1.0.
    if old.version != new.version {
        return differs("version");
    }
    if old.sequence != new.sequence {
        return differs("sequence");
    }
    if old.params != new.params {
        return differs("params");
    }
    if old.requires != new.requires {
        return differs("requires");
    }
    if old.probation != new.probation {
        return differs("probation");
    }
    for p in &old.payloads {
        match new.payload_for(&p.kernel_release) {
            None => {
                return Err(RepublishError::PayloadDropped { version, release: sanitize_to(&p.kernel_release, SHOWN) })
            }
            Some(n) if n != p => {
                return Err(RepublishError::PayloadChanged { version, release: sanitize_to(&p.kernel_release, SHOWN) })
            }
            Some(_) => {}
        }
    }
    let added: Vec<&Payload> = new.payloads.iter().filter(|n| old.payload_for(&n.kernel_release).is_none()).collect();
    if added.is_empty() {
        return Err(RepublishError::NothingAdded { version });
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use time::OffsetDateTime;

    use super::*;
    use crate::digest::Sha256Digest;
    use crate::manifest::{payload_path, Probation, Requires, FORMAT_VERSION, KIND, PACKAGE_NAME};

    fn payload(release: &str) -> Payload {
        Payload {
            kernel_release: release.into(),
            module: "dell_milspec".into(),
            srcversion: Some("F110".into()),
            path: payload_path(release, "dell_milspec"),
            size: 4096,
            sha256: Sha256Digest::of(release.as_bytes()),
            module_signer: None,
        }
    }

    fn old() -> Manifest {
        Manifest {
            format: FORMAT_VERSION,
            kind: KIND.into(),
            name: PACKAGE_NAME.into(),
            version: "1.1.0".parse().unwrap(),
            sequence: 1_001_000_000,
            created: OffsetDateTime::UNIX_EPOCH,
            payloads: vec![payload("6.12.111+deb12-amd64"), payload("6.12.113+deb12-cloud-amd64")],
            params: BTreeMap::from([("debug".to_string(), "0".to_string())]),
            probation: Some(Probation { window_secs: Some(30) }),
            requires: Requires::default(),
        }
    }

    /// `old` plus one build, created later.
    fn republished() -> Manifest {
        let mut m = old();
        m.created = OffsetDateTime::UNIX_EPOCH + time::Duration::days(3);
        m.payloads.push(payload("6.12.115+deb12-amd64"));
        m
    }

    #[test]
    fn a_republish_that_adds_builds_names_them() {
        let (o, n) = (old(), republished());
        let added = added_builds(&o, &n).unwrap();
        assert_eq!(added, vec![&payload("6.12.115+deb12-amd64")]);
        // Added builds may come in any position; the order of `new` is kept.
        let mut n = old();
        n.payloads.insert(0, payload("6.1.0-28-amd64"));
        n.payloads.push(payload("6.12.115+deb12-amd64"));
        n.payloads.swap(1, 2);
        let added: Vec<&str> = added_builds(&o, &n).unwrap().iter().map(|p| p.kernel_release.as_str()).collect();
        assert_eq!(added, ["6.1.0-28-amd64", "6.12.115+deb12-amd64"]);
    }

    #[test]
    fn every_field_of_the_release_must_stay() {
        let o = old();
        type Change = fn(&mut Manifest);
        let cases: [(&str, Change); 9] = [
            ("format", |m| m.format = 2),
            ("kind", |m| m.kind = "milspec-index".into()),
            ("name", |m| m.name = "other".into()),
            ("version", |m| m.version = "1.1.1".parse().unwrap()),
            ("version", |m| m.version = "1.1.0+b2".parse().unwrap()),
            ("sequence", |m| m.sequence += 1),
            ("params", |m| drop(m.params.insert("debug".into(), "1".into()))),
            ("requires", |m| m.requires.sys_vendor.push("Other Inc.".into())),
            ("probation", |m| m.probation = None),
        ];
        for (field, change) in cases {
            let mut n = republished();
            change(&mut n);
            let e = added_builds(&o, &n).unwrap_err();
            assert_eq!(e, RepublishError::NotTheSameRelease { version: "1.1.0".into(), field }, "{field}");
            let msg = e.to_string();
            assert!(msg.contains(field) && msg.contains("publish a new version"), "{msg}");
        }
    }

    #[test]
    fn a_changed_build_is_refused_field_by_field() {
        let o = old();
        let cases: [fn(&mut Payload); 5] = [
            |p| p.module = "dell_milspec2".into(),
            |p| p.srcversion = None,
            |p| p.path = "payload/x/dell_milspec.ko".into(),
            |p| p.size += 1,
            |p| p.sha256 = Sha256Digest::of(b"other"),
        ];
        for change in cases {
            let mut n = republished();
            change(&mut n.payloads[1]);
            let e = added_builds(&o, &n).unwrap_err();
            assert_eq!(
                e,
                RepublishError::PayloadChanged {
                    version: "1.1.0".into(),
                    release: "6.12.113+deb12-cloud-amd64".into()
                }
            );
        }
    }

    #[test]
    fn a_dropped_build_is_refused_even_when_others_are_added() {
        let mut n = republished();
        n.payloads.remove(0);
        let e = added_builds(&old(), &n).unwrap_err();
        assert_eq!(
            e,
            RepublishError::PayloadDropped { version: "1.1.0".into(), release: "6.12.111+deb12-amd64".into() }
        );
        assert!(e.to_string().contains("dropped"), "{e}");
    }

    #[test]
    fn the_same_kernels_again_is_not_a_republish() {
        let mut n = old();
        n.created = OffsetDateTime::UNIX_EPOCH + time::Duration::days(1);
        let e = added_builds(&old(), &n).unwrap_err();
        assert_eq!(e, RepublishError::NothingAdded { version: "1.1.0".into() });
        assert!(added_builds(&old(), &old()).is_err());
    }

    #[test]
    fn untrusted_text_in_messages_is_escaped() {
        // Not a valid release, but `added_builds` does not rely on validation.
        let mut o = old();
        o.payloads[0].kernel_release = "6.12\x1b[2J\n".into();
        let e = added_builds(&o, &republished()).unwrap_err().to_string();
        assert!(!e.contains('\x1b') && !e.contains('\n') && e.contains("\\x1b"), "{e}");
    }
}
