//! Pulling from a mirror that `milspec-repo` wrote and a real nginx serves
//! on loopback, all the way to a committed install on a fake kernel.
//! Time is an input: waves and expiry are simulated, never slept through.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod mirror_support;

use std::fs;

use milspec_format::index::{Index, IndexEntry};
use milspec_format::keys::SecretKey;
use milspec_format::Sha256Digest;
use milspecd::check::{CheckError, CheckReport};
use milspecd::engine::Outcome;
use milspecd::mirror::MirrorError;
use mirror_support::*;
use time::OffsetDateTime;

fn installed(r: &CheckReport) -> Option<(&str, &Outcome)> {
    match r {
        CheckReport::Installed { version, outcome, .. } => Some((version, outcome)),
        _ => None,
    }
}

#[test]
fn pull_install_then_not_modified() {
    let p = Publisher::new();
    p.publish(&["1.0.0"], None);
    let nginx = Nginx::start(&p.mirror());
    let h = Host::new(&p, &nginx.url(), "host-a");
    let r = h.poll().unwrap();
    let (v, o) = installed(&r).unwrap();
    assert_eq!(v, "1.0.0");
    assert!(matches!(o, Outcome::Committed { .. }), "{o:?}");
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.0.0"));
    assert_eq!(h.leftover_downloads(), 0);

    // No change on the mirror: a 304 that carries no body.
    let r = h.poll().unwrap();
    assert_eq!(r, CheckReport::UpToDate { index_version: 1, not_modified: true });
    let log = nginx.log();
    let last = log.last().unwrap();
    assert_eq!((last.0, last.2.as_str()), (304, "/index.json"));
    assert!(last.1 < 400, "a 304 poll should cost a few hundred bytes, not {}", last.1);
    let first_index = log.iter().find(|l| l.2 == "/index.json").unwrap();
    assert_eq!(first_index.0, 200);

    // A new release on the mirror: fetched in full, installed.
    p.publish(&["1.1.0"], None);
    let r = h.poll().unwrap();
    assert_eq!(installed(&r).unwrap().0, "1.1.0");
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.1.0"));
    assert!(matches!(h.poll().unwrap(), CheckReport::UpToDate { index_version: 2, .. }));
}

#[test]
fn waves_over_simulated_time_and_force() {
    let p = Publisher::new();
    p.publish(&["1.0.0"], None);
    let nginx = Nginx::start(&p.mirror());
    // Three hosts: one in the 1 % wave, one in the 10 % wave, one in the rest.
    let ids = [
        machine_id_where("1.1.0", |x| x < 0.01),
        machine_id_where("1.1.0", |x| (0.01..0.10).contains(&x)),
        machine_id_where("1.1.0", |x| x >= 0.5),
    ];
    let hosts: Vec<Host> = ids.iter().map(|m| Host::new(&p, &nginx.url(), m)).collect();
    for h in &hosts {
        assert_eq!(installed(&h.poll().unwrap()).unwrap().0, "1.0.0");
    }
    p.publish(&["1.1.0"], Some("1%,10%@1h,100%@24h"));
    let t0 = p.index().entry(&"1.1.0".parse().unwrap()).unwrap().published;
    let at = |mins: i64| t0 + time::Duration::minutes(mins);
    let live = |hs: &[Host]| hs.iter().map(|h| h.kernel.live_version().unwrap()).collect::<Vec<_>>();

    // Minute 1: only the first host.
    let mut reports = hosts.iter().map(|h| h.poll_at(at(1), false).unwrap());
    assert!(installed(&reports.next().unwrap()).is_some());
    match reports.next().unwrap() {
        CheckReport::Waiting { version, fraction, next_wave, .. } => {
            assert_eq!((version.as_str(), fraction), ("1.1.0", 0.01));
            assert!(next_wave.is_some());
        }
        r => panic!("{r:?}"),
    }
    drop(reports);
    assert_eq!(live(&hosts), ["1.1.0", "1.0.0", "1.0.0"]);
    // Hour 1: the second.
    for h in &hosts[1..] {
        h.poll_at(at(61), false).unwrap();
    }
    assert_eq!(live(&hosts), ["1.1.0", "1.1.0", "1.0.0"]);
    // Hour 23: still not the third; the operator can force it.
    assert!(matches!(hosts[2].poll_at(at(23 * 60), false).unwrap(), CheckReport::Waiting { .. }));
    let forced = Host::new(&p, &nginx.url(), &ids[2]);
    assert_eq!(installed(&forced.poll_at(at(2), true).unwrap()).unwrap().0, "1.1.0");
    // Day 1: everyone.
    assert!(installed(&hosts[2].poll_at(at(24 * 60), false).unwrap()).is_some());
    assert_eq!(live(&hosts), ["1.1.0", "1.1.0", "1.1.0"]);
}

#[test]
fn revoked_version_is_left_on_its_own() {
    let p = Publisher::new();
    p.publish(&["1.0.0"], None);
    let nginx = Nginx::start(&p.mirror());
    let h = Host::new(&p, &nginx.url(), "host-r");
    h.poll().unwrap();
    p.publish(&["1.1.0"], None);
    assert_eq!(installed(&h.poll().unwrap()).unwrap().0, "1.1.0");
    assert_eq!(h.state().max_sequence, 1_001_000_000);

    p.revoke("1.1.0");
    match h.poll().unwrap() {
        CheckReport::Installed { version, reason, outcome, .. } => {
            assert_eq!(version, "1.0.0");
            assert!(reason.contains("revoked 1.1.0"), "{reason}");
            assert!(matches!(outcome, Outcome::Committed { .. }), "{outcome:?}");
        }
        r => panic!("{r:?}"),
    }
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.0.0"));
    // It stays there, and a fresh host never takes the revoked version.
    assert!(matches!(h.poll().unwrap(), CheckReport::UpToDate { .. }));
    let fresh = Host::new(&p, &nginx.url(), "host-fresh");
    assert_eq!(installed(&fresh.poll().unwrap()).unwrap().0, "1.0.0");
    // A fixed release moves both forward.
    p.publish(&["1.2.0"], None);
    assert_eq!(installed(&h.poll().unwrap()).unwrap().0, "1.2.0");
    // Everything revoked: said clearly, nothing done.
    p.revoke("1.2.0");
    p.revoke("1.0.0");
    assert!(matches!(h.poll().unwrap(), CheckReport::RevokedNoReplacement { .. }));
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.2.0"));
}

#[test]
fn stale_expired_unsigned_and_replayed_indexes_are_refused() {
    let p = Publisher::new();
    p.publish(&["1.0.0"], None);
    let nginx = Nginx::start(&p.mirror());
    let h = Host::new(&p, &nginx.url(), "host-x");
    let old_index = fs::read(p.mirror().join("index.json")).unwrap();

    // Clock far in the future: the index has expired (freeze attack).
    let e = h.poll_at(OffsetDateTime::now_utc() + time::Duration::days(30), false).unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");
    // Clock far in the past.
    let e = h.poll_at(OffsetDateTime::now_utc() - time::Duration::days(400), false).unwrap_err();
    assert!(e.to_string().contains("clock is behind"), "{e}");
    assert_eq!(h.kernel.live_version(), None);
    // Then a normal poll is fine.
    assert!(installed(&h.poll().unwrap()).is_some());

    // Replay of an older index after a newer one was accepted.
    p.publish(&["1.1.0"], None);
    assert!(installed(&h.poll().unwrap()).is_some());
    let new_index = fs::read(p.mirror().join("index.json")).unwrap();
    fs::write(p.mirror().join("index.json"), &old_index).unwrap();
    let e = h.poll().unwrap_err();
    assert!(
        matches!(&e, CheckError::Mirror(MirrorError::Index { .. })) && e.to_string().contains("older than version 2"),
        "{e}"
    );
    fs::write(p.mirror().join("index.json"), &new_index).unwrap();

    // Signed by a key this host does not trust.
    let stranger = SecretKey::generate("stranger").unwrap();
    let mut idx = p.index();
    idx.version += 1;
    fs::write(p.mirror().join("index.json"), idx.sign(&[stranger]).unwrap()).unwrap();
    let e = h.poll().unwrap_err().to_string();
    assert!(e.contains("not enough trusted signatures"), "{e}");
    // Not signed at all.
    fs::write(p.mirror().join("index.json"), idx.sign(&[]).unwrap()).unwrap();
    assert!(h.poll().unwrap_err().to_string().contains("0 valid of 1 required"));
    // Garbage.
    fs::write(p.mirror().join("index.json"), b"<html>captive portal</html>").unwrap();
    assert!(h.poll().unwrap_err().to_string().contains("index.json is not valid"));
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.1.0"));
    assert_eq!(h.leftover_downloads(), 0);
}

#[test]
fn wrong_hash_missing_file_and_mix_and_match() {
    let p = Publisher::new();
    p.publish(&["1.0.0", "1.1.0"], None);
    let nginx = Nginx::start(&p.mirror());
    let h = Host::new(&p, &nginx.url(), "host-m");
    let pkg = p.mirror().join("packages/dell-milspec-1.1.0.mspkg");
    let good = fs::read(&pkg).unwrap();

    // The mirror holds other bytes than the index lists.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 1;
    fs::write(&pkg, &bad).unwrap();
    let e = h.poll().unwrap_err().to_string();
    assert!(e.contains("differs from") && e.contains("signed index"), "{e}");
    let tries = nginx.log().iter().filter(|l| l.2.ends_with("1.1.0.mspkg")).count();
    assert_eq!(tries, 3, "bounded retries");

    // Gone from the mirror: not retried.
    fs::remove_file(&pkg).unwrap();
    let e = h.poll().unwrap_err().to_string();
    assert!(e.contains("not found on the mirror"), "{e}");
    assert_eq!(h.kernel.live_version(), None);
    assert_eq!(h.leftover_downloads(), 0);

    // Mix and match: a validly signed index whose 1.1.0 entry points at
    // the (validly signed) 1.0.0 package.
    fs::write(&pkg, &good).unwrap();
    let key = SecretKey::load(&p.key()).unwrap();
    let mut idx: Index = p.index();
    idx.version += 1;
    let old = fs::read(p.mirror().join("packages/dell-milspec-1.0.0.mspkg")).unwrap();
    fs::write(p.mirror().join("packages/swap.mspkg"), &old).unwrap();
    let e11 = idx.packages.iter_mut().find(|e| e.version.to_string() == "1.1.0").unwrap();
    *e11 = IndexEntry {
        path: "packages/swap.mspkg".into(),
        size: old.len() as u64,
        sha256: Sha256Digest::of(&old),
        ..e11.clone()
    };
    fs::write(p.mirror().join("index.json"), idx.sign(&[key]).unwrap()).unwrap();
    let e = h.poll().unwrap_err().to_string();
    assert!(e.contains("does not match its index entry") && e.contains("1.0.0"), "{e}");
    assert_eq!(h.kernel.live_version(), None);
}

#[test]
fn other_kernel_and_file_mirror_and_redirect_loop() {
    let p = Publisher::new();
    let other = p.pack_for("2.0.0", "6.1.0-28-amd64");
    p.publish(&["1.0.0"], None);
    bin("milspec-repo")
        .arg("publish")
        .arg("--mirror")
        .arg(p.mirror())
        .arg("--key")
        .arg(p.key())
        .arg(&other)
        .assert()
        .success();
    // file:// mirror: the 2.0.0 package is for another kernel; 1.0.0 fits.
    let h = Host::new(&p, &format!("file://{}", p.mirror().display()), "host-f");
    assert_eq!(installed(&h.poll().unwrap()).unwrap().0, "1.0.0");
    assert_eq!(h.poll().unwrap(), CheckReport::UpToDate { index_version: 2, not_modified: true });

    let nginx = Nginx::start_with(&p.mirror(), 1, "location = /loop/index.json { return 302 /loop/index.json; }");
    let h = Host::new(&p, &format!("{}loop", nginx.url()), "host-l");
    let e = h.poll().unwrap_err().to_string();
    assert!(e.contains("redirects"), "{e}");
}

#[test]
fn publisher_commands() {
    let p = Publisher::new();
    p.publish(&["1.0.0"], Some("5%,100%@2h"));
    let i1 = p.index();
    assert_eq!((i1.version, i1.packages.len()), (1, 1));
    assert_eq!(i1.packages[0].waves.len(), 2);
    assert!(p.mirror().join("packages/dell-milspec-1.0.0.mspkg").exists());
    // Republishing the same package changes nothing but the version.
    p.publish(&["1.0.0"], None);
    assert_eq!(p.index().packages, i1.packages);
    bin("milspec-repo")
        .args(["refresh", "--expires", "30d", "--mirror"])
        .arg(p.mirror())
        .arg("--key")
        .arg(p.key())
        .assert()
        .success();
    let i3 = p.index();
    assert_eq!(i3.version, 3);
    assert!(i3.expires - i3.created >= time::Duration::days(29));
    p.revoke("1.0.0");
    assert_eq!(p.index().revoked, vec!["1.0.0".parse::<semver::Version>().unwrap()]);
    // Same version, other bytes: refused, index untouched.
    let other = p.pack_for("1.0.0", "6.1.0-28-amd64");
    let before = fs::read(p.mirror().join("index.json")).unwrap();
    bin("milspec-repo")
        .arg("publish")
        .arg("--mirror")
        .arg(p.mirror())
        .arg("--key")
        .arg(p.key())
        .arg(&other)
        .assert()
        .failure()
        .stderr(predicates::str::contains("already on the mirror with different content"));
    assert_eq!(fs::read(p.mirror().join("index.json")).unwrap(), before);
    // Bad wave specs are usage errors.
    for bad in ["10", "50%,10%@1h", "0%", "10%@soon"] {
        bin("milspec-repo")
            .args(["publish", "--waves", bad, "--mirror"])
            .arg(p.mirror())
            .arg("--key")
            .arg(p.key())
            .arg(&other)
            .assert()
            .code(64); // a bad --waves is a usage error
    }
}
