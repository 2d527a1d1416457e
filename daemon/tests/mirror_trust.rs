//! Key rotation over a real nginx on loopback: trust documents written by
//! `milspec-repo trust`, walked by the poller one version at a time. A
//! rotation lets the new key's packages in and the retired key's out; a
//! rotation signed by the old keys only, by the new keys only, a replayed
//! older version and a skipped version are refused with nothing changed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod mirror_support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use milspec_format::trust_doc::TrustDocError;
use milspec_format::Limits;
use milspecd::check::{CheckError, CheckReport};
use milspecd::engine::Outcome;
use milspecd::mirror::rotation::RotationError;
use milspecd::mirror::MirrorError;
use milspecd::slots::{SlotError, SlotStore, SlotTrust};
use milspecd::trust_store::{self, TrustStore};
use mirror_support::*;

fn repo() -> assert_cmd::Command {
    bin("milspec-repo")
}

/// A second key pair, `keys/NAME.key` and `keys/NAME.pub`.
fn keygen(p: &Publisher, name: &str) {
    repo().args(["keygen", "--name", name, "--out"]).arg(p.path("keys")).assert().success();
}

fn key(p: &Publisher, name: &str, ext: &str) -> PathBuf {
    p.path(&format!("keys/{name}.{ext}"))
}

/// `trust rotate` from `from` into `out`, with extra arguments.
fn rotate(p: &Publisher, from: &Path, out: &Path, args: &[&str], signers: &[&str]) {
    let mut cmd = repo();
    cmd.args(["trust", "rotate", "--from"]).arg(from).arg("--out").arg(out).args(args);
    for s in signers {
        cmd.arg("--sign").arg(key(p, s, "key"));
    }
    cmd.assert().success();
}

fn publish_trust(p: &Publisher, file: &Path) {
    repo().args(["trust", "publish", "--mirror"]).arg(p.mirror()).arg(file).assert().success();
}

/// Packs `version` signed by `signer` and publishes it with an index
/// signed by `index_signer`.
fn publish_with(p: &Publisher, version: &str, signer: &str, index_signer: &str) {
    let ko = p.path(&format!("build/{version}.ko"));
    fs::write(&ko, milspec_format::testkit::FakeKo { version, kernel_release: RELEASE, ..Default::default() }.build())
        .unwrap();
    let pkg = p.path(&format!("build/{version}-{signer}.mspkg"));
    repo()
        .args(["pack", "--version", version, "--module"])
        .arg(&ko)
        .arg("--key")
        .arg(key(p, signer, "key"))
        .arg("--out")
        .arg(&pkg)
        .assert()
        .success();
    repo()
        .arg("publish")
        .arg("--mirror")
        .arg(p.mirror())
        .arg("--key")
        .arg(key(p, index_signer, "key"))
        .arg(&pkg)
        .assert()
        .success();
}

/// Version 1: the publisher's `release` key in every role.
fn init_v1(p: &Publisher) -> PathBuf {
    let out = p.path("build/1.keys.json");
    repo()
        .args(["trust", "init", "--key"])
        .arg(format!("all={}", key(p, "release", "pub").display()))
        .arg("--sign")
        .arg(p.key())
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    out
}

/// Every file below `dir`, by path, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                todo.push(e.path());
            } else if ft.is_file() {
                out.insert(e.path(), fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

fn held_version(h: &Host) -> Option<u64> {
    TrustStore::new(&h.cfg.paths.state_dir).accepted().unwrap().map(|v| v.set.version)
}

fn committed_slot(h: &Host) -> Result<Option<milspecd::slots::Slot>, SlotError> {
    let id = h.state().committed.unwrap();
    let trust = trust_store::in_force(&h.cfg).unwrap();
    let limits = Limits::default();
    SlotStore::open(&h.cfg.paths.state_dir).unwrap().read(id, SlotTrust::of(&trust, RELEASE, &limits))
}

fn installed(r: &CheckReport) -> Option<&str> {
    match r {
        CheckReport::Installed { version, outcome: Outcome::Committed { .. }, .. } => Some(version),
        _ => None,
    }
}

#[test]
fn a_rotation_lets_the_new_key_in_and_the_retired_key_out() {
    let p = Publisher::new();
    keygen(&p, "next");
    p.publish(&["1.0.0"], None);
    let nginx = Nginx::start(&p.mirror());
    let h = Host::new(&p, &nginx.url(), "host-rot");
    let h2 = Host::new(&p, &nginx.url(), "host-rot-2");
    assert_eq!(installed(&h.poll().unwrap()), Some("1.0.0"));
    assert_eq!(installed(&h2.poll().unwrap()), Some("1.0.0"));
    assert_eq!(held_version(&h), None, "no trust document on the mirror: the local keys are in force");

    // Version 1: the same key; version 2: the next key only, signed by both.
    let v1 = init_v1(&p);
    publish_trust(&p, &v1);
    let v2 = p.path("build/2.keys.json");
    let next_pub = format!("all={}", key(&p, "next", "pub").display());
    let release_pub = key(&p, "release", "pub").display().to_string();
    rotate(&p, &v1, &v2, &["--add", &next_pub, "--retire", &release_pub], &["release", "next"]);
    publish_trust(&p, &v2);
    assert!(p.mirror().join("keys.json").exists());

    // One poll walks 1 then 2. The index is still signed by the retired
    // key: refused, nothing installed, but the rotation is kept.
    let e = h.poll().unwrap_err();
    assert!(matches!(e, CheckError::Mirror(MirrorError::Index { .. })), "{e}");
    assert_eq!(held_version(&h), Some(2));
    let walked: Vec<String> =
        nginx.log().iter().filter(|l| l.2.starts_with("/trust/")).map(|l| format!("{} {}", l.0, l.2)).collect();
    // Each host's first poll asked for 1 (none yet); this one walks 1, 2, then 3 (none).
    let want = ["404 /trust/1.keys.json", "404 /trust/1.keys.json", "200 /trust/1.keys.json", "200 /trust/2.keys.json"];
    assert_eq!(walked, [&want[..], &["404 /trust/3.keys.json"]].concat());

    // The committed slot was signed by the retired key: it still loads.
    let slot = committed_slot(&h).unwrap().expect("the committed slot stays valid");
    assert_eq!(slot.manifest.version.to_string(), "1.0.0");
    assert_eq!(h2_rotate(&h2), 2);
    assert!(committed_slot(&h2).unwrap().is_some());
    let staged =
        fs::read_to_string(h2.cfg.paths.state_dir.join(format!("slots/{}/trust.json", slot.id.name()))).unwrap();
    assert!(staged.contains("\"version\": 0"), "{staged}");

    // The new key's package and index: in.
    publish_with(&p, "1.1.0", "next", "next");
    assert_eq!(installed(&h.poll().unwrap()), Some("1.1.0"));
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.1.0"));

    // The retired key's package, on an index the new key signed: out.
    publish_with(&p, "1.2.0", "release", "next");
    let e = h.poll().unwrap_err().to_string();
    assert!(e.contains("1.2.0") && e.contains("not enough trusted signatures"), "{e}");
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.1.0"));

    // The retired key marked compromised in version 3: a slot it signed
    // is refused, at boot too. A second host still runs 1.0.0 (signed by
    // the retired key, staged under the local keys); it takes the
    // rotation only.
    let v3 = p.path("build/3.keys.json");
    rotate(&p, &v2, &v3, &["--compromise", &release_pub], &["next"]);
    publish_trust(&p, &v3);
    assert_eq!(h2_rotate(&h2), 3);
    let e = committed_slot(&h2).unwrap_err();
    assert!(matches!(e, SlotError::Compromised { version: 3, .. }), "{e:?}");
    assert!(e.to_string().contains("marks compromised") && e.to_string().contains("Key rotation"), "{e}");
    // The module stays loaded until it is unloaded or the host reboots
    // (the engine replaces no module it cannot match with a valid slot).
    publish_with(&p, "1.3.0", "next", "next");
    let r = h2.poll().unwrap();
    assert!(matches!(&r, CheckReport::Installed { outcome: Outcome::Rejected { .. }, .. }), "{r:?}");
    assert_eq!(h2.kernel.live_version().as_deref(), Some("1.0.0"));
    // A reboot: load-committed loads nothing, the daemon starts (the slot
    // counts as not valid) and takes the release the good key signed.
    fs::remove_dir_all(h2.kernel.paths.module_dir()).unwrap();
    fs::write(h2.kernel.paths.boot_id(), "boot-2\n").unwrap();
    let boot = milspecd::load_committed::load_committed(&h2.cfg, &[], &h2.kernel).unwrap_err();
    assert!(format!("{boot:#}").contains("marks compromised"), "{boot:#}");
    assert_eq!(h2.kernel.live_version(), None);
    let mut engine = milspecd::engine::Engine::open(h2.cfg.clone(), &h2.kernel).unwrap();
    engine.recover().unwrap();
    drop(engine);
    let r = h2.poll().unwrap();
    assert_eq!(installed(&r), Some("1.3.0"), "{r:?}");
    assert_eq!(h2.kernel.live_version().as_deref(), Some("1.3.0"));
    assert!(committed_slot(&h2).unwrap().is_some());
}

/// Walks the trust documents only (no index, no install).
fn h2_rotate(h: &Host) -> u64 {
    h.poller().rotate(time::OffsetDateTime::now_utc()).unwrap().version
}

/// What a refused document's error must be.
type Expect = fn(&TrustDocError) -> bool;

#[test]
fn bad_rotations_are_refused_and_change_nothing() {
    let p = Publisher::new();
    keygen(&p, "next");
    p.publish(&["1.0.0"], None);
    let v1 = init_v1(&p);
    publish_trust(&p, &v1);
    let nginx = Nginx::start(&p.mirror());
    let h = Host::new(&p, &nginx.url(), "host-bad");
    assert_eq!(installed(&h.poll().unwrap()), Some("1.0.0"));
    assert_eq!(held_version(&h), Some(1));
    let before = snapshot(&h.cfg.paths.state_dir);

    let next_pub = format!("all={}", key(&p, "next", "pub").display());
    let release_pub = key(&p, "release", "pub").display().to_string();
    let to_next = ["--add", next_pub.as_str(), "--retire", release_pub.as_str()];
    let build = |name: &str| p.path(&format!("build/{name}"));
    rotate(&p, &v1, &build("old-only.json"), &to_next, &["release"]);
    rotate(&p, &v1, &build("new-only.json"), &to_next, &["next"]);
    rotate(&p, &v1, &build("good-2.json"), &to_next, &["release", "next"]);
    rotate(&p, &build("good-2.json"), &build("good-3.json"), &[], &["next"]);

    let slot2 = p.mirror().join("trust/2.keys.json");
    let cases: [(&str, PathBuf, Expect); 4] = [
        ("signed by the old keys only", build("old-only.json"), |e| {
            matches!(e, TrustDocError::NotSignedBySelf { version: 2, .. })
        }),
        ("signed by the new keys only", build("new-only.json"), |e| {
            matches!(e, TrustDocError::NotSignedByOld { version: 2, current: 1, .. })
        }),
        ("a replayed older version", v1.clone(), |e| matches!(e, TrustDocError::Replayed { version: 1, current: 1 })),
        ("a skipped version", build("good-3.json"), |e| matches!(e, TrustDocError::Skipped { version: 3, current: 1 })),
    ];
    for (name, file, want) in cases {
        fs::copy(&file, &slot2).unwrap();
        let e = h.poll().unwrap_err();
        match &e {
            CheckError::Mirror(MirrorError::Rotation(RotationError::Refused { url, source })) => {
                assert!(want(source), "{name}: {source}");
                assert!(url.ends_with("/trust/2.keys.json"), "{name}: {url}");
                assert!(e.to_string().contains("nothing changed"), "{name}: {e}");
            }
            other => panic!("{name}: {other}"),
        }
        assert_eq!(snapshot(&h.cfg.paths.state_dir), before, "{name}: the state folder changed");
        assert_eq!(held_version(&h), Some(1), "{name}");
    }

    // Version 3 alone on the mirror (2 missing): the walk stops at 2's 404.
    fs::remove_file(&slot2).unwrap();
    fs::copy(build("good-3.json"), p.mirror().join("trust/3.keys.json")).unwrap();
    assert!(matches!(h.poll().unwrap(), CheckReport::UpToDate { .. }));
    assert_eq!(held_version(&h), Some(1));
    assert!(!nginx.log().iter().any(|l| l.2 == "/trust/3.keys.json"), "3 is never asked for before 2");

    // The good version 2: accepted, then 3 in the same poll.
    publish_trust(&p, &build("good-2.json"));
    // (The index is still signed by the key version 2 retired: refused.)
    let e = h.poll().unwrap_err();
    assert!(matches!(e, CheckError::Mirror(MirrorError::Index { .. })), "{e}");
    assert_eq!(held_version(&h), Some(3));
    assert_eq!(
        fs::read(h.cfg.paths.state_dir.join("trust/keys.json")).unwrap(),
        fs::read(build("good-3.json")).unwrap(),
        "the exact envelope is kept"
    );
    // A replayed version 1 after 3 is never fetched (the walk asks for 4).
    assert!(nginx.log().iter().any(|l| l.2 == "/trust/4.keys.json" && l.0 == 404));
}
