//! The attack matrix: one row per TUF attack class against the real mirror
//! client (a real nginx on 127.0.0.1 serving what `milspec-repo` wrote, a
//! fake kernel under the engine), and one per local abuse (the real
//! `milspecd run` on a real `dbus-daemon`, clients as root and `nobody`).
//! Every row asserts the refusal, a message that says why, and that nothing
//! changed: the state record, the slots, the accepted index where it
//! matters, and the live module.
//!
//! One test runs every row (two at a time) and prints the table that
//! docs/reliability.md quotes: `cargo test -p milspecd --all-features
//! --test attack_matrix -- --nocapture`. `ATTACK=rollback` runs one row.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod attack_support;
mod common;
mod mirror_support;

use std::ffi::OsStr;
use std::fs;
use std::time::{Duration, Instant};

use attack_support::*;
use milspec_format::index::{Index, IndexEntry};
use milspec_format::keys::SecretKey;
use milspec_format::Sha256Digest;
use milspecd::check::CheckReport;
use milspecd::engine::{Engine, InstallOptions, Outcome};
use mirror_support::{bin, Fault, FaultServer, Host, Nginx, Publisher};
use time::OffsetDateTime;

/// A host on 1.0.0 pulled from a real nginx; the publisher then has
/// `next` (if any) published too.
fn host_on_1_0_0(next: Option<&str>) -> (Publisher, Nginx, Host) {
    let p = Publisher::new();
    p.publish(&["1.0.0"], None);
    let nginx = Nginx::start(&p.mirror());
    let h = Host::new(&p, &nginx.url(), "attack-host");
    assert!(matches!(h.poll().unwrap(), CheckReport::Installed { .. }));
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.0.0"));
    if let Some(v) = next {
        p.publish(&[v], None);
    }
    (p, nginx, h)
}

/// What a refused attack must leave as it was.
struct Before {
    state: Fingerprint,
    history: usize,
    live: Option<String>,
}

fn before(h: &Host) -> Before {
    Before {
        state: fingerprint(&h.cfg.paths.state_dir),
        history: history_events(&h.cfg.paths.state_dir).len(),
        live: h.kernel.live_version(),
    }
}

/// Nothing changed since `b`, but for state paths starting with `except`.
fn unchanged(what: &str, h: &Host, b: &Before, except: &[&str]) {
    assert_unchanged(what, &b.state, &fingerprint(&h.cfg.paths.state_dir), except);
    assert_only_refusals(what, &h.cfg.paths.state_dir, b.history);
    assert_eq!(h.kernel.live_version(), b.live, "{what}: the live module changed");
    assert_eq!(h.leftover_downloads(), 0, "{what}: a download was left behind");
}

/// The poll fails and its error contains every one of `want`.
fn refused(what: &str, h: &Host, now: OffsetDateTime, want: &[&str]) {
    let e = h.poll_at(now, false).unwrap_err().to_string();
    for w in want {
        assert!(e.contains(w), "{what}: error should say `{w}`: {e}");
    }
}

/// `milspec-repo ARGS`, which must succeed.
fn repo(args: &[&OsStr]) {
    bin("milspec-repo").args(args).assert().success();
}

fn key(p: &Publisher) -> SecretKey {
    SecretKey::load(&p.key()).unwrap()
}

/// Writes the mirror's index.json with a modification time of its own, so
/// nginx's validators (mtime and size) change even within one second.
fn put_index(p: &Publisher, bytes: &[u8]) {
    static BUMP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let path = p.mirror().join("index.json");
    fs::write(&path, bytes).unwrap();
    let n = BUMP.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let f = fs::File::options().write(true).open(&path).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(n)).unwrap();
}

/// Signs `idx` (version raised) with `keys` and puts it on the mirror.
fn serve_index(p: &Publisher, mut idx: Index, keys: &[SecretKey]) {
    idx.version += 1;
    put_index(p, &idx.sign(keys).unwrap());
}

fn pkg_path(p: &Publisher, v: &str) -> std::path::PathBuf {
    p.mirror().join(format!("packages/dell-milspec-{v}.mspkg"))
}

/// Arbitrary package: the mirror serves other bytes than the signed index
/// lists (a payload byte changed; a whole package by another key); and an
/// index re-signed by a key this host does not trust.
fn arbitrary_package() {
    let (p, _nginx, h) = host_on_1_0_0(Some("1.1.0"));
    let pkg = pkg_path(&p, "1.1.0");
    let good = fs::read(&pkg).unwrap();
    let b = before(&h);
    let mut bad = good.clone();
    let at = common::find(&bad, b"license=GPL");
    bad[at] ^= 0x20;
    fs::write(&pkg, &bad).unwrap();
    refused("payload byte swapped", &h, OffsetDateTime::now_utc(), &["differs from", "signed index"]);
    unchanged("payload byte swapped", &h, &b, &["mirror/"]);

    // The attacker's own 1.1.0, signed by their key, with an index they
    // signed for it.
    let stranger = SecretKey::generate("stranger").unwrap();
    let b = before(&h);
    let mut idx = p.index();
    let e = idx.packages.iter_mut().find(|e| e.version.to_string() == "1.1.0").unwrap();
    e.size = bad.len() as u64;
    e.sha256 = Sha256Digest::of(&bad);
    serve_index(&p, idx, &[stranger]);
    refused("index by an untrusted key", &h, OffsetDateTime::now_utc(), &["not enough trusted signatures"]);
    unchanged("index by an untrusted key", &h, &b, &[]);
}

/// Rollback: an older index replayed, the same index version with other
/// content, a newer index that offers only older packages, and a package
/// whose sequence is below the highest ever committed.
fn rollback() {
    let (p, _nginx, h) = host_on_1_0_0(None);
    let old_index = fs::read(p.mirror().join("index.json")).unwrap();
    p.publish(&["1.1.0"], None);
    assert!(matches!(h.poll().unwrap(), CheckReport::Installed { .. }));
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.1.0"));
    let current = fs::read(p.mirror().join("index.json")).unwrap();

    let b = before(&h);
    put_index(&p, &old_index);
    refused("old index replayed", &h, OffsetDateTime::now_utc(), &["older than version 2", "replays"]);
    unchanged("old index replayed", &h, &b, &[]);

    // Same version number, other content (1.1.0 dropped).
    let mut same = milspec_format::index::read_unverified(&current).unwrap();
    same.packages.retain(|e| e.version.to_string() != "1.1.0");
    put_index(&p, &same.sign(&[key(&p)]).unwrap());
    refused("same version, other content", &h, OffsetDateTime::now_utc(), &["differs from the index accepted"]);
    unchanged("same version, other content", &h, &b, &[]);

    // A newer, validly signed index that lists only 1.0.0: not taken.
    serve_index(&p, same, &[key(&p)]);
    assert!(matches!(h.poll().unwrap(), CheckReport::UpToDate { .. }));
    unchanged("only older packages offered", &h, &b, &["mirror/"]);

    // A package of a new version with a low sequence, offered directly.
    let ko = p.path("build/low.ko");
    fs::write(&ko, milspec_format::testkit::FakeKo { version: "1.9.0", ..Default::default() }.build()).unwrap();
    let low = p.path("build/low.mspkg");
    let key = p.key();
    let pack = ["pack", "--version", "1.9.0", "--sequence", "5", "--module"].map(OsStr::new);
    repo(
        &[&pack[..], &[ko.as_os_str(), "--key".as_ref(), key.as_os_str(), "--out".as_ref(), low.as_os_str()]].concat(),
    );
    let b = before(&h);
    let mut e = Engine::open(h.cfg.clone(), &h.kernel).unwrap();
    match e.install(fs::File::open(&low).unwrap(), InstallOptions::default()).unwrap() {
        Outcome::Rejected { reason } => assert!(reason.to_string().contains("downgrade"), "{reason}"),
        o => panic!("low sequence: {o:?}"),
    }
    drop(e);
    unchanged("low sequence", &h, &b, &[]);
}

/// Indefinite freeze: the mirror keeps serving the last index after it
/// expired (and one signed to have expired already).
fn indefinite_freeze() {
    let (p, _nginx, h) = host_on_1_0_0(Some("1.1.0"));
    let b = before(&h);
    let later = OffsetDateTime::now_utc() + time::Duration::days(30);
    refused("frozen mirror", &h, later, &["expired", "stale or frozen"]);
    unchanged("frozen mirror", &h, &b, &[]);
    let mut idx = p.index();
    let now = OffsetDateTime::now_utc();
    idx.created = now - time::Duration::days(8);
    idx.expires = now - time::Duration::hours(1);
    serve_index(&p, idx, &[key(&p)]);
    refused("expired index", &h, now, &["expired"]);
    unchanged("expired index", &h, &b, &[]);
}

/// Endless data: nginx serves a 4 GiB file where the 1.1.0 package should
/// be, and a 4 GiB index: both cut at their cap, fast.
fn endless_data() {
    let (p, nginx, h) = host_on_1_0_0(Some("1.1.0"));
    // A server that announces no length and streams zeros forever, in
    // front of the same mirror and state folder.
    let server = FaultServer::start(&p.mirror());
    server.set(Fault::Endless);
    let mut via = Host::new(&p, &server.url(), "attack-host");
    via.cfg.paths.state_dir = h.cfg.paths.state_dir.clone();
    let b = before(&h);
    let t = Instant::now();
    refused("endless stream", &via, OffsetDateTime::now_utc(), &["larger than the limit"]);
    assert!(t.elapsed() < Duration::from_secs(10), "endless stream took {:?}", t.elapsed());
    unchanged("endless stream", &h, &b, &["mirror/"]);
    drop((via, server));

    let pkg = pkg_path(&p, "1.1.0");
    let listed = fs::metadata(&pkg).unwrap().len();
    let b = before(&h);
    fs::File::create(&pkg).unwrap().set_len(4 << 30).unwrap();
    let t = Instant::now();
    refused("endless package", &h, OffsetDateTime::now_utc(), &["larger than the limit"]);
    assert!(t.elapsed() < Duration::from_secs(10), "endless package took {:?}", t.elapsed());
    unchanged("endless package", &h, &b, &["mirror/"]);
    let sent: u64 = nginx.log().iter().filter(|l| l.2.ends_with("1.1.0.mspkg")).map(|l| l.1).sum();
    assert!(sent < listed + (64 << 20), "the client read far past the cap: nginx sent {sent} bytes");
    println!("endless package: nginx sent {sent} bytes for a package listed at {listed} bytes");

    let b = before(&h);
    fs::File::create(p.mirror().join("index.json")).unwrap().set_len(4 << 30).unwrap();
    refused("endless index", &h, OffsetDateTime::now_utc(), &["larger than the limit"]);
    unchanged("endless index", &h, &b, &[]);
    let sent: u64 = nginx.log().iter().filter(|l| l.2 == "/index.json").map(|l| l.1).sum();
    assert!(sent < 1 << 30, "the client read far past the index cap: nginx sent {sent} bytes");
    println!("endless index: nginx sent {sent} bytes");
}

/// Mix and match: a validly signed index whose 1.1.0 entry is the 1.0.0
/// package; and a 1.1.0 package carrying the signatures of 1.0.0's
/// manifest, listed by a validly signed index.
fn mix_and_match() {
    let (p, _nginx, h) = host_on_1_0_0(Some("1.1.0"));
    let old = fs::read(pkg_path(&p, "1.0.0")).unwrap();
    let b = before(&h);
    fs::write(p.mirror().join("packages/swap.mspkg"), &old).unwrap();
    let mut idx = p.index();
    let e = idx.packages.iter_mut().find(|e| e.version.to_string() == "1.1.0").unwrap();
    *e = IndexEntry {
        path: "packages/swap.mspkg".into(),
        size: old.len() as u64,
        sha256: Sha256Digest::of(&old),
        ..e.clone()
    };
    serve_index(&p, idx, &[key(&p)]);
    refused(
        "index entry names another release",
        &h,
        OffsetDateTime::now_utc(),
        &["does not match its index entry", "1.0.0"],
    );
    unchanged("index entry names another release", &h, &b, &["mirror/"]);

    let mut new = common::entries(&pkg_path(&p, "1.1.0"));
    let old_entries = common::entries(&pkg_path(&p, "1.0.0"));
    assert_eq!(new[1].0, "signatures.json");
    new[1].1 = old_entries[1].1.clone();
    let franken = common::rebuild(&new, &[]);
    fs::write(p.mirror().join("packages/franken.mspkg"), &franken).unwrap();
    let mut idx = p.index();
    let e = idx.packages.iter_mut().find(|e| e.version.to_string() == "1.1.0").unwrap();
    *e = IndexEntry {
        path: "packages/franken.mspkg".into(),
        size: franken.len() as u64,
        sha256: Sha256Digest::of(&franken),
        ..e.clone()
    };
    serve_index(&p, idx, &[key(&p)]);
    refused(
        "signatures of another manifest",
        &h,
        OffsetDateTime::now_utc(),
        &["downloaded package refused", "does not verify"],
    );
    unchanged("signatures of another manifest", &h, &b, &["mirror/"]);
}

/// Extraneous or wrong-hardware packages: a newer package built for
/// another kernel is never downloaded; a package for this kernel on a host
/// whose DMI vendor is not Dell is refused before any swap; an index entry
/// whose path leaves the mirror is refused.
fn wrong_hardware() {
    let (p, nginx, h) = host_on_1_0_0(None);
    let other = p.pack_for("2.0.0", "6.1.0-28-amd64");
    repo(&[
        "publish".as_ref(),
        "--mirror".as_ref(),
        p.mirror().as_os_str(),
        "--key".as_ref(),
        p.key().as_os_str(),
        other.as_os_str(),
    ]);
    let b = before(&h);
    assert!(matches!(h.poll().unwrap(), CheckReport::UpToDate { .. }));
    assert!(!nginx.log().iter().any(|l| l.2.contains("2.0.0")), "a package for another kernel was downloaded");
    unchanged("another kernel's package", &h, &b, &["mirror/"]);

    p.publish(&["1.1.0"], None);
    fs::write(h.kernel.paths.dmi_sys_vendor(), "QEMU\n").unwrap();
    let b = before(&h);
    match h.poll().unwrap() {
        CheckReport::Installed { outcome: Outcome::Rejected { reason }, .. } => {
            assert!(reason.to_string().contains("QEMU") && reason.to_string().contains("Dell Inc."), "{reason}")
        }
        r => panic!("non-Dell host: {r:?}"),
    }
    unchanged("non-Dell host", &h, &b, &["mirror/"]);
    fs::write(h.kernel.paths.dmi_sys_vendor(), "Dell Inc.\n").unwrap();

    let b = before(&h);
    let mut idx = p.index();
    idx.packages[0].path = "../../../etc/passwd".into();
    serve_index(&p, idx, &[key(&p)]);
    refused("path out of the mirror", &h, OffsetDateTime::now_utc(), &["index refused"]);
    unchanged("path out of the mirror", &h, &b, &[]);
}

/// Fewer than the threshold of keys: two trusted keys, threshold 2; an
/// index and a package signed by one, and the one signature repeated.
fn fewer_than_threshold() {
    let p = Publisher::new();
    bin("milspec-repo").args(["keygen", "--name", "second", "--out"]).arg(p.path("keys")).assert().success();
    fs::copy(p.path("keys/second.pub"), p.path("trust/second.pub")).unwrap();
    let both = [key(&p), SecretKey::load(&p.path("keys/second.key")).unwrap()];
    p.publish(&["1.0.0"], None);
    // Add the second signature to the package and the index, then install.
    bin("milspec-repo")
        .args(["sign", "--key"])
        .arg(p.path("keys/second.key"))
        .arg(pkg_path(&p, "1.0.0"))
        .assert()
        .success();
    let mut idx = p.index();
    let e = &mut idx.packages[0];
    let signed = fs::read(pkg_path(&p, "1.0.0")).unwrap();
    (e.size, e.sha256) = (signed.len() as u64, Sha256Digest::of(&signed));
    serve_index(&p, idx, &both);
    let nginx = Nginx::start(&p.mirror());
    let mut h = Host::new(&p, &nginx.url(), "threshold-host");
    h.cfg.trust.threshold = 2;
    assert!(matches!(h.poll().unwrap(), CheckReport::Installed { outcome: Outcome::Committed { .. }, .. }));

    // An index signed by one key, then with that signature twice.
    let b = before(&h);
    let one = [key(&p)];
    serve_index(&p, p.index(), &one);
    refused("index with one of two", &h, OffsetDateTime::now_utc(), &["1 valid of 2 required"]);
    let mut env: serde_json::Value = serde_json::from_slice(&fs::read(p.mirror().join("index.json")).unwrap()).unwrap();
    let first = env["signatures"][0].clone();
    env["signatures"].as_array_mut().unwrap().push(first);
    put_index(&p, &serde_json::to_vec(&env).unwrap());
    refused("index with one signature twice", &h, OffsetDateTime::now_utc(), &["1 valid of 2 required"]);
    unchanged("index below threshold", &h, &b, &[]);

    // A package signed by one key, then with that signature twice.
    let single = p.pack("1.1.0");
    let mut e = common::entries(&single);
    let mut sigs: serde_json::Value = serde_json::from_slice(&e[1].1).unwrap();
    let first = sigs["signatures"][0].clone();
    sigs["signatures"].as_array_mut().unwrap().push(first);
    e[1].1 = serde_json::to_vec(&sigs).unwrap();
    let doubled = common::rebuild(&e, &[]);
    let mut engine = Engine::open(h.cfg.clone(), &h.kernel).unwrap();
    for (what, bytes) in
        [("package with one of two", fs::read(&single).unwrap()), ("package with one signature twice", doubled)]
    {
        match engine.install(&bytes[..], InstallOptions::default()) {
            Ok(Outcome::Rejected { reason }) => {
                assert!(reason.to_string().contains("1 valid of 2 required"), "{what}: {reason}")
            }
            Err(err) => assert!(err.to_string().contains("1 valid of 2 required"), "{what}: {err}"),
            Ok(o) => panic!("{what}: {o:?}"),
        }
    }
    drop(engine);
    unchanged("package below threshold", &h, &b, &[]);
}

/// A state folder that is a symbolic link is refused, and nothing is
/// written through it.
fn symlinked_state_dir() {
    let p = Publisher::new();
    p.publish(&["1.0.0"], None);
    let mut h = Host::new(&p, &format!("file://{}", p.mirror().display()), "symlink-host");
    let target = h.dir.path().join("elsewhere");
    fs::create_dir(&target).unwrap();
    let link = h.dir.path().join("state-link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    h.cfg.paths.state_dir = link.clone();
    let err = match Engine::open(h.cfg.clone(), &h.kernel) {
        Ok(_) => panic!("a symlinked state folder was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("symbolic link") && err.contains("state-link"), "{err}");
    assert_eq!(fs::read_dir(&target).unwrap().count(), 0, "something was written through the link");
    assert_eq!(h.kernel.live_version(), None);
    // The binary says the same and exits non-zero.
    h.cfg.health.probation = Duration::from_secs(1);
    let conf = h.dir.path().join("milspecd.toml");
    fs::write(&conf, h.cfg.to_toml()).unwrap();
    let o = bin("milspecd").args(["install", "--config"]).arg(&conf).arg(p.pack("1.1.0")).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("symbolic link"), "{}", show(&o));
    assert_eq!(fs::read_dir(&target).unwrap().count(), 0, "something was written through the link");
}

/// A host running `milspecd run` on a real system bus, with 1.0.0 committed.
#[cfg(feature = "fake-kernel")]
fn bus_host() -> (Publisher, Host, SystemBus, Daemon) {
    use std::os::unix::fs::PermissionsExt;
    let p = Publisher::new();
    let mut h = Host::new(&p, "file:///nonexistent", "bus-host");
    h.cfg.source = None;
    h.cfg.health.probation = Duration::from_secs(1);
    fs::set_permissions(h.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let conf = h.dir.path().join("milspecd.toml");
    fs::write(&conf, h.cfg.to_toml()).unwrap();
    let bus = SystemBus::start(h.dir.path());
    let d = Daemon::start(&conf, &bus, mirror_support::RELEASE, h.dir.path().join("daemon.log"));
    let o = ctl(&bus, false, &["install", p.pack("1.0.0").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.0.0"));
    (p, h, bus, d)
}

/// Non-root over D-Bus: every changing method is refused by the daemon
/// (exit 4, access denied naming the uid), the bus policy refuses the
/// property write and the name; nothing changed.
#[cfg(feature = "fake-kernel")]
fn non_root_over_dbus() {
    let (p, h, bus, d) = bus_host();
    let pkg = p.pack("1.1.0");
    let b = before(&h);
    for args in [&["install", pkg.to_str().unwrap()][..], &["check"], &["rollback"], &["pause"], &["resume"]] {
        let o = ctl(&bus, true, args);
        assert_eq!(o.status.code(), Some(4), "{args:?}: {}", show(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("access denied") && err.contains("uid 65534"), "{args:?}: {}", show(&o));
    }
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "dbus-send", "--system", "--print-reply"])
        .args(["--dest=com.dell.MilSpec1", "/com/dell/MilSpec1", "org.freedesktop.DBus.Properties.Set"])
        .args(["string:com.dell.MilSpec1.Manager", "string:Paused", "variant:boolean:true"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .output()
        .unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("AccessDenied"), "{}", show(&o));
    unchanged("non-root over D-Bus", &h, &b, &[]);
    assert_eq!(history_events(&h.cfg.paths.state_dir).len(), b.history, "nobody's calls reached the engine");
    assert!(!h.cfg.paths.state_dir.join("paused").exists());
    drop(d);
}

/// A package the caller cannot read: `milspecctl install` as nobody of a
/// root-only file fails in the client, before the daemon hears of it; and
/// no method of the interface takes a path at all (only descriptors).
#[cfg(feature = "fake-kernel")]
fn unreadable_package() {
    use std::os::unix::fs::PermissionsExt;
    let (p, h, bus, d) = bus_host();
    let hidden = h.dir.path().join("root-only.mspkg");
    fs::copy(p.pack("1.1.0"), &hidden).unwrap();
    fs::set_permissions(&hidden, fs::Permissions::from_mode(0o600)).unwrap();
    let b = before(&h);
    let log_before = d.log_text().len();
    let o = ctl(&bus, true, &["install", hidden.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cannot open the package") && err.contains("root-only.mspkg"), "{}", show(&o));
    unchanged("unreadable package", &h, &b, &[]);
    assert_eq!(history_events(&h.cfg.paths.state_dir).len(), b.history, "the daemon heard of it");
    let new_log = &d.log_text()[log_before..];
    assert!(!new_log.contains("install"), "the daemon logged an install: {new_log}");

    let o = std::process::Command::new("dbus-send")
        .args(["--system", "--print-reply", "--dest=com.dell.MilSpec1", "/com/dell/MilSpec1"])
        .arg("org.freedesktop.DBus.Introspectable.Introspect")
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .output()
        .unwrap();
    let xml = String::from_utf8_lossy(&o.stdout);
    assert!(xml.contains(r#"<method name="Install">"#), "{}", show(&o));
    let manager = xml
        .split(r#"<interface name="com.dell.MilSpec1.Manager">"#)
        .nth(1)
        .unwrap()
        .split("</interface>")
        .next()
        .unwrap();
    // The only string arguments are kernel releases (checked against the
    // release character set before use) and Unblock's version (parsed as
    // a semantic version); never a path.
    let string_in: Vec<&str> =
        manager.lines().filter(|l| l.contains(r#"type="s""#) && l.contains(r#"direction="in""#)).collect();
    assert_eq!(string_in.len(), 3, "PrepareKernel and KernelRemoved take a release, Unblock a version: {manager}");
    assert!(
        string_in.iter().all(|l| l.contains(r#"name="release""#) || l.contains(r#"name="version""#)),
        "a method takes a string argument (a path?): {manager}"
    );
    assert!(manager.contains(r#"type="h""#), "Install takes a descriptor: {manager}");
}

fn rows() -> Vec<Row> {
    #[cfg(feature = "fake-kernel")]
    let bus: [Option<fn()>; 2] = [Some(non_root_over_dbus as fn()), Some(unreadable_package as fn())];
    #[cfg(not(feature = "fake-kernel"))]
    let bus: [Option<fn()>; 2] = [None, None];
    let row = |class: &'static str, attack: &'static str, run: Option<fn()>| Row {
        class,
        attack,
        run,
        elsewhere: "--features fake-kernel",
    };
    vec![
        row(
            "arbitrary package",
            "payload byte changed on the mirror; another key's package and index",
            Some(arbitrary_package),
        ),
        row(
            "rollback",
            "old index replayed; same index version re-signed; newer index with only older packages; lower sequence",
            Some(rollback),
        ),
        row("indefinite freeze", "index served past its expiry; index signed already expired", Some(indefinite_freeze)),
        row(
            "endless data",
            "4 GiB package and 4 GiB index from nginx; a package streamed without end",
            Some(endless_data),
        ),
        row(
            "mix and match",
            "index entry naming another release's package; package with another manifest's signatures",
            Some(mix_and_match),
        ),
        row(
            "wrong hardware / extraneous",
            "package for another kernel; non-Dell sys_vendor; entry path leaving the mirror",
            Some(wrong_hardware),
        ),
        row(
            "fewer than threshold",
            "threshold 2: index and package signed by one key, and that signature twice",
            Some(fewer_than_threshold),
        ),
        row("non-root over D-Bus", "nobody calls Install, CheckForUpdates, Rollback, SetPaused, sets Paused", bus[0]),
        row("unreadable package path", "nobody installs a 0600 root file; no method takes a path", bus[1]),
        row("symlinked state dir", "state_dir is a symbolic link", Some(symlinked_state_dir)),
        Row {
            class: "full disk during staging",
            attack: "state dir on a small full tmpfs",
            run: None,
            elsewhere: "daemon/tests/disk_clock.rs",
        },
    ]
}

#[test]
fn attack_matrix() {
    run_matrix(&rows(), 2);
}
