//! The publisher tool and offline verification, through the real binaries:
//! the good path, then every kind of bad input, each refused with a message
//! that names the reason and with nothing left behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;

use common::*;
use milspec_format::testkit::FakeKo;
use predicates::prelude::*;
use predicates::str::contains;
use tar::EntryType;

#[test]
fn pack_verify_inspect_sign_round_trip() {
    let f = Fixture::new();
    let k1 = f.key("rel1", true);
    let k2 = f.key("rel2", true);
    let pkg = f.pack("1.1.0", &[&k1], "p.mspkg");

    f.verify(&pkg, 1).success().stdout(contains("OK").and(contains("dell-milspec 1.1.0")).and(contains(RELEASE)));
    f.verify(&pkg, 2).failure().stderr(contains("p.mspkg").and(contains("1 valid of 2 required")));

    repo().args(["sign", "--key"]).arg(&k2).arg(&pkg).assert().success().stdout(contains("2 signature(s)"));
    f.verify(&pkg, 2).success().stdout(contains("2 of 2 required"));

    let out = ctl().args(["inspect", "--json"]).arg(&pkg).assert().success().get_output().stdout.clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["manifest"]["version"], "1.1.0");
    assert_eq!(v["manifest"]["sequence"], 1_001_000_000u64);
    assert_eq!(v["manifest"]["payloads"][0]["kernel_release"], RELEASE);
    assert_eq!(v["manifest"]["payloads"][0]["module"], "dell_milspec");
    assert!(v["manifest"]["payloads"][0]["srcversion"].is_string());
    assert_eq!(v["signatures"].as_array().unwrap().len(), 2);
    ctl().arg("inspect").arg(&pkg).assert().success().stdout(contains("not verified"));
}

#[test]
fn pack_is_reproducible_but_for_time_and_records_params() {
    let f = Fixture::new();
    let k = f.key("k", true);
    let ko = f.ko("m.ko", FakeKo { version: "2.0.0-rc.1", ..FakeKo::default() });
    repo()
        .args(["pack", "--version", "2.0.0-rc.1", "--sequence", "42", "--param", "mode5_level=2", "--probation", "45s"])
        .arg("--module")
        .arg(&ko)
        .arg("--key")
        .arg(&k)
        .arg("--out")
        .arg(f.path("p.mspkg"))
        .assert()
        .success();
    ctl()
        .arg("inspect")
        .arg(f.path("p.mspkg"))
        .assert()
        .success()
        .stdout(contains("sequence:  42").and(contains("params:    mode5_level=2")).and(contains("probation: 45s")));
    // A pre-release has no default sequence.
    repo()
        .args(["pack", "--version", "2.0.0-rc.1", "--module"])
        .arg(&ko)
        .arg("--key")
        .arg(&k)
        .arg("--out")
        .arg(f.path("q.mspkg"))
        .assert()
        .failure()
        .stderr(contains("give --sequence N"));
    assert!(!f.path("q.mspkg").exists());
}

/// Writes `bytes` as `bad.mspkg`, verifies it, and checks the refusal.
fn refuse(f: &Fixture, bytes: &[u8], threshold: usize, reason: &str) {
    let bad = f.path("bad.mspkg");
    fs::write(&bad, bytes).unwrap();
    let before = f.listing();
    f.verify(&bad, threshold)
        .failure()
        .code(2)
        .stdout(predicate::str::is_empty())
        .stderr(contains("bad.mspkg").and(contains(reason)).and(predicate::str::is_match("^[^\n]+\n$").unwrap()));
    assert_eq!(f.listing(), before, "verification must not write anything");
}

fn setup() -> (Fixture, std::path::PathBuf) {
    let f = Fixture::new();
    let k = f.key("rel1", true);
    let pkg = f.pack("1.0.0", &[&k], "good.mspkg");
    (f, pkg)
}

#[test]
fn tampered_payload_byte() {
    let (f, pkg) = setup();
    let mut b = fs::read(&pkg).unwrap();
    let at = find(&b, b"license=GPL");
    b[at] ^= 0x20;
    refuse(&f, &b, 1, "does not match its sha256");
}

#[test]
fn tampered_manifest_byte() {
    let (f, pkg) = setup();
    let mut b = fs::read(&pkg).unwrap();
    let at = find(&b, b"\"sequence\": 1") + 12;
    b[at] = b'9';
    refuse(&f, &b, 1, "does not verify (the manifest or the signature was altered)");
}

#[test]
fn truncated_package() {
    let (f, pkg) = setup();
    let b = fs::read(&pkg).unwrap();
    // Cut inside the payload data and at an entry boundary.
    let at = find(&b, b"license=GPL");
    refuse(&f, &b[..at], 1, "truncated");
    let entries = entries(&pkg);
    let only_head = rebuild(&entries[..2], &[]);
    refuse(&f, &only_head[..only_head.len() - 1024], 1, "missing from the package (truncated?)");
    refuse(&f, &b[..700], 1, "truncated");
}

#[test]
fn untrusted_signer() {
    let f = Fixture::new();
    f.key("trusted", true);
    let stranger = f.key("stranger", false);
    let pkg = f.pack("1.0.0", &[&stranger], "p.mspkg");
    let b = fs::read(pkg).unwrap();
    refuse(&f, &b, 1, "0 valid of 1 required; 1 signature(s) by keys that are not trusted here were ignored");
}

#[test]
fn threshold_not_met() {
    let f = Fixture::new();
    let k1 = f.key("a", true);
    f.key("b", true);
    let pkg = f.pack("1.0.0", &[&k1], "p.mspkg");
    refuse(&f, &fs::read(pkg).unwrap(), 2, "1 valid of 2 required");
}

#[test]
fn same_key_twice_counts_once() {
    let f = Fixture::new();
    let k1 = f.key("a", true);
    f.key("b", true);
    let pkg = f.pack("1.0.0", &[&k1], "p.mspkg");
    // The tool refuses to sign twice with one key, and leaves the package as it was.
    let (before, listing) = (fs::read(&pkg).unwrap(), f.listing());
    repo().args(["sign", "--key"]).arg(&k1).arg(&pkg).assert().failure().stderr(contains("already signed"));
    assert_eq!(fs::read(&pkg).unwrap(), before);
    assert_eq!(f.listing(), listing, "no temporary file left behind");
    // A package whose signatures.json repeats one signature does not reach 2.
    let mut e = entries(&pkg);
    let mut sigs: serde_json::Value = serde_json::from_slice(&e[1].1).unwrap();
    let first = sigs["signatures"][0].clone();
    sigs["signatures"].as_array_mut().unwrap().push(first);
    e[1].1 = serde_json::to_vec(&sigs).unwrap();
    refuse(&f, &rebuild(&e, &[]), 2, "1 valid of 2 required");
}

#[test]
fn wrong_key_file_format() {
    let f = Fixture::new();
    f.key("a", true);
    let ko = f.ko("m.ko", FakeKo::default());
    for (keyfile, reason) in [("keys/a.pub", "this is a public key file"), ("m.ko", "not a text file")] {
        repo()
            .args(["pack", "--version", "1.0.0", "--module"])
            .arg(&ko)
            .arg("--key")
            .arg(f.path(keyfile))
            .arg("--out")
            .arg(f.path("out.mspkg"))
            .assert()
            .failure()
            .stderr(contains(keyfile).and(contains(reason)));
        assert!(!f.path("out.mspkg").exists());
    }
    // A folder of trusted keys holding a broken key is refused whole.
    fs::write(f.path("trust/broken.pub"), "milspec-ed25519-public !!! broken\n").unwrap();
    let (_, pkg) = setup();
    f.verify(&pkg, 1).failure().stderr(contains("broken.pub").and(contains("not base64")));
}

#[test]
fn path_traversal_entry() {
    let (f, pkg) = setup();
    let e = entries(&pkg);
    refuse(
        &f,
        &rebuild(&e, &[Raw { path: "../../etc/cron.d/x", kind: EntryType::Regular, data: b"x" }]),
        1,
        "unsafe path (parent directory `..`)",
    );
    refuse(
        &f,
        &rebuild(&e, &[Raw { path: "/etc/passwd", kind: EntryType::Regular, data: b"x" }]),
        1,
        "unsafe path (absolute path)",
    );
}

#[test]
fn symlink_and_device_entries() {
    let (f, pkg) = setup();
    let e = entries(&pkg);
    let p = e[2].0.clone();
    let mut swapped = e.clone();
    swapped.pop();
    refuse(&f, &rebuild(&swapped, &[Raw { path: &p, kind: EntryType::Symlink, data: b"" }]), 1, "symbolic link");
    refuse(&f, &rebuild(&e, &[Raw { path: "dev", kind: EntryType::Char, data: b"" }]), 1, "device file");
    refuse(&f, &rebuild(&e, &[Raw { path: "hl", kind: EntryType::Link, data: b"" }]), 1, "hard link");
}

#[test]
fn unlisted_and_duplicate_entries() {
    let (f, pkg) = setup();
    let e = entries(&pkg);
    refuse(
        &f,
        &rebuild(&e, &[Raw { path: "extra.sh", kind: EntryType::Regular, data: b"#!/bin/sh" }]),
        1,
        "`extra.sh` is not listed in the manifest",
    );
    let (p, d) = e[2].clone();
    refuse(&f, &rebuild(&e, &[Raw { path: &p, kind: EntryType::Regular, data: &d }]), 1, "appears twice");
    // Entries out of order: signatures first.
    let swapped = vec![e[1].clone(), e[0].clone(), e[2].clone()];
    refuse(&f, &rebuild(&swapped, &[]), 1, "where `manifest.json` was expected");
}

#[test]
fn oversized_manifest() {
    let (f, pkg) = setup();
    let mut e = entries(&pkg);
    e[0].1.resize(65 * 1024, b' ');
    refuse(&f, &rebuild(&e, &[]), 1, "`manifest.json` is 66560 bytes, more than the limit of 65536");
}

#[test]
fn empty_and_not_a_tar() {
    let (f, _) = setup();
    refuse(&f, b"", 1, "the file is empty");
    refuse(&f, &[b'x'; 4096], 1, "not a tar archive");
    refuse(&f, b"PK\x03\x04 a zip file", 1, "not a tar archive");
}

#[test]
fn module_without_vermagic() {
    let f = Fixture::new();
    let k = f.key("a", true);
    let ko = f.ko("novm.ko", FakeKo { no_vermagic: true, ..FakeKo::default() });
    let before = f.listing();
    repo()
        .args(["pack", "--version", "1.0.0", "--module"])
        .arg(&ko)
        .arg("--key")
        .arg(&k)
        .arg("--out")
        .arg(f.path("out.mspkg"))
        .assert()
        .failure()
        .stderr(contains("novm.ko").and(contains("no vermagic")));
    assert_eq!(f.listing(), before);
    // Not an ELF at all.
    repo()
        .args(["pack", "--version", "1.0.0", "--module"])
        .arg(f.path("keys/a.pub"))
        .arg("--key")
        .arg(&k)
        .arg("--out")
        .arg(f.path("out.mspkg"))
        .assert()
        .failure()
        .stderr(contains("a.pub").and(contains("not an ELF object")));
    assert_eq!(f.listing(), before);
}

#[test]
fn module_version_must_match_package_version() {
    let f = Fixture::new();
    let k = f.key("a", true);
    let ko = f.ko("m.ko", FakeKo { version: "1.0.0", ..FakeKo::default() });
    repo()
        .args(["pack", "--version", "1.1.0", "--module"])
        .arg(&ko)
        .arg("--key")
        .arg(&k)
        .arg("--out")
        .arg(f.path("o.mspkg"))
        .assert()
        .failure()
        .stderr(contains("m.ko").and(contains("says version 1.0.0 but the package is 1.1.0")));
    assert!(!f.path("o.mspkg").exists());
}

#[test]
fn two_modules_for_one_release_refused() {
    let f = Fixture::new();
    let k = f.key("a", true);
    let a = f.ko("a.ko", FakeKo::default());
    let b = f.ko("b.ko", FakeKo { padding: 10, ..FakeKo::default() });
    repo()
        .args(["pack", "--version", "1.0.0"])
        .arg("--module")
        .arg(&a)
        .arg("--module")
        .arg(&b)
        .arg("--key")
        .arg(&k)
        .arg("--out")
        .arg(f.path("o.mspkg"))
        .assert()
        .failure()
        .stderr(contains("one module per kernel release"));
    // Two releases in one package is fine.
    let c = f.ko("c.ko", FakeKo { kernel_release: "6.1.0-28-amd64", ..FakeKo::default() });
    repo()
        .args(["pack", "--version", "1.0.0"])
        .arg("--module")
        .arg(&a)
        .arg("--module")
        .arg(&c)
        .arg("--key")
        .arg(&k)
        .arg("--out")
        .arg(f.path("o.mspkg"))
        .assert()
        .success();
    f.verify(&f.path("o.mspkg"), 1).success().stdout(contains("6.1.0-28-amd64").and(contains(RELEASE)));
}

#[test]
fn tools_have_help_and_version() {
    for mut c in [repo(), ctl(), daemon()] {
        c.arg("--version").assert().success().stdout(contains(env!("CARGO_PKG_VERSION")));
    }
    for mut c in [repo(), ctl(), daemon()] {
        c.arg("--help").assert().success().stdout(contains("Usage"));
    }
    ctl().args(["verify", "--keys", "/nonexistent", "x"]).assert().failure().stderr(contains("/nonexistent"));
}

#[test]
fn daemon_config_errors_name_the_key() {
    let f = Fixture::new();
    fs::write(f.path("c.toml"), "[health]\nprobation = \"10s\"\nbogus = 1\n").unwrap();
    daemon().args(["config", "--config"]).arg(f.path("c.toml")).assert().failure().stderr(contains("bogus"));
    f.key("rel1", true);
    let trust = format!("[trust]\nkeys_dir = \"{}\"\n", f.path("trust").display());
    fs::write(f.path("c.toml"), format!("[health]\nprobation = \"10s\"\n{trust}")).unwrap();
    daemon()
        .args(["config", "--config"])
        .arg(f.path("c.toml"))
        .assert()
        .success()
        .stdout(contains("probation = \"10s\""));
}

/// `milspecd config` checks what `run` checks: a threshold the trusted
/// keys cannot meet, or a missing key folder, is named, with exit 1; the
/// effective configuration is still printed.
#[test]
fn daemon_config_names_what_run_would_refuse() {
    let f = Fixture::new();
    f.key("rel1", true);
    let conf = f.path("c.toml");
    fs::write(&conf, format!("[trust]\nkeys_dir = \"{}\"\nthreshold = 3\n", f.path("trust").display())).unwrap();
    daemon()
        .args(["config", "--config"])
        .arg(&conf)
        .assert()
        .code(1)
        .stdout(contains("threshold = 3"))
        .stderr(contains("problem: [trust]").and(contains("threshold 3")).and(contains("1 problem(s)")));
    fs::write(&conf, format!("[trust]\nkeys_dir = \"{}\"\n", f.path("no-keys").display())).unwrap();
    daemon().args(["config", "--config"]).arg(&conf).assert().code(1).stderr(contains("no-keys"));
}

/// A FIFO or a device given where a package, a config file or a key folder
/// entry is expected: refused at once, naming the path and what it is. Each
/// command is killed after 30 s, so a regression that blocks fails here.
#[test]
fn fifo_or_device_as_package_is_refused_promptly() {
    use std::time::{Duration, Instant};
    let guard = Duration::from_secs(30);
    let f = Fixture::new();
    f.key("rel1", true);
    let fifo = f.path("pipe.mspkg");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let conf = f.path("milspecd.toml");
    fs::write(&conf, format!("[paths]\nstate_dir = \"{}\"\n", f.path("state").display())).unwrap();
    let no_bus = format!("unix:path={}", f.path("no-bus").display());
    for (pkg, kind) in
        [(fifo.as_path(), "is a FIFO (named pipe)"), (std::path::Path::new("/dev/zero"), "is a character device")]
    {
        let runs: Vec<(&str, assert_cmd::Command)> = vec![
            ("verify", {
                let mut c = ctl();
                c.args(["verify", "--keys"]).arg(f.path("trust")).arg(pkg);
                c
            }),
            ("inspect", {
                let mut c = ctl();
                c.arg("inspect").arg(pkg);
                c
            }),
            ("milspecctl install", {
                let mut c = ctl();
                c.arg("install").arg(pkg).env("DBUS_SYSTEM_BUS_ADDRESS", &no_bus);
                c
            }),
            ("milspecd install", {
                let mut c = daemon();
                c.args(["install", "--config"]).arg(&conf).arg(pkg);
                c
            }),
        ];
        for (what, mut c) in runs {
            let start = Instant::now();
            let o = c.timeout(guard).output().unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(1), "{what} {}: {err}", pkg.display());
            assert!(start.elapsed() < Duration::from_secs(10), "{what}: took {:?}", start.elapsed());
            let want = format!("{}: {kind}, not a regular file; a package must be a regular file", pkg.display());
            assert!(err.contains(&want), "{what}: {err}");
            assert!(o.stdout.is_empty(), "{what}: {}", String::from_utf8_lossy(&o.stdout));
        }
    }
    assert!(!f.path("state").exists(), "milspecd install refused before opening its state folder");
    // The config file itself.
    let conf_fifo = f.path("fifo.toml");
    nix::unistd::mkfifo(&conf_fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    daemon()
        .args(["config", "--config"])
        .arg(&conf_fifo)
        .timeout(guard)
        .assert()
        .failure()
        .stderr(contains("fifo.toml: is a FIFO (named pipe), not a regular file"));
}

#[test]
fn trust_init_sign_rotate_publish_show() {
    let f = Fixture::new();
    let a = f.key("root-a", false);
    let b = f.key("root-b", false);
    let pubs = |k: &std::path::Path| k.with_extension("pub");
    let v1 = f.path("1.keys.json");
    // Version 1: a in every role, b for the trust role too, trust threshold 2.
    repo()
        .args(["trust", "init", "--key"])
        .arg(format!("all={}", pubs(&a).display()))
        .arg("--key")
        .arg(format!("trust={}", pubs(&b).display()))
        .args(["--threshold", "trust=2", "--sign"])
        .arg(&a)
        .arg("--out")
        .arg(&v1)
        .assert()
        .success()
        .stdout(contains("version 1, 2 key(s), 1 signature(s)"));
    // Init never overwrites.
    repo()
        .args(["trust", "init", "--key"])
        .arg(format!("all={}", pubs(&a).display()))
        .arg("--out")
        .arg(&v1)
        .assert()
        .failure()
        .stderr(contains("already exists"));
    // Under its own trust threshold: not publishable yet.
    let mirror = f.path("mirror");
    repo()
        .args(["trust", "publish", "--mirror"])
        .arg(&mirror)
        .arg(&v1)
        .assert()
        .failure()
        .stderr(contains("not ready to publish").and(contains("1 valid of 2 required")));
    repo().args(["trust", "sign", "--key"]).arg(&b).arg(&v1).assert().success().stdout(contains("2 signature(s)"));
    repo().args(["trust", "sign", "--key"]).arg(&b).arg(&v1).assert().failure().stderr(contains("already signed"));
    repo().args(["trust", "publish", "--mirror"]).arg(&mirror).arg(&v1).assert().success();
    assert_eq!(fs::read(mirror.join("trust/1.keys.json")).unwrap(), fs::read(&v1).unwrap());
    assert_eq!(fs::read(mirror.join("keys.json")).unwrap(), fs::read(&v1).unwrap());
    repo().args(["trust", "show"]).arg(&v1).assert().success().stdout(
        contains("trust document version 1").and(contains("role trust: 2 of 2")).and(contains("role package: 1 of 1")),
    );

    // Version 2 retires b, signed by a only: below version 1's trust
    // threshold, so publish refuses it (hosts would).
    let v2 = f.path("2.keys.json");
    repo()
        .args(["trust", "rotate", "--from"])
        .arg(&v1)
        .arg("--retire")
        .arg(pubs(&b))
        .args(["--threshold", "trust=1", "--sign"])
        .arg(&a)
        .arg("--out")
        .arg(&v2)
        .assert()
        .success()
        .stdout(contains("version 2, 1 key(s)"));
    repo()
        .args(["trust", "publish", "--mirror"])
        .arg(&mirror)
        .arg(&v2)
        .assert()
        .failure()
        .stderr(contains("would refuse it").and(contains("not signed by the keys of version 1")));
    assert!(!mirror.join("trust/2.keys.json").exists());
    repo().args(["trust", "sign", "--key"]).arg(&b).arg(&v2).assert().success();
    repo().args(["trust", "publish", "--mirror"]).arg(&mirror).arg(&v2).assert().success();
    // A version is never replaced by different bytes.
    let other = f.path("2b.keys.json");
    repo()
        .args(["trust", "rotate", "--from"])
        .arg(&v1)
        .arg("--sign")
        .arg(&a)
        .arg("--sign")
        .arg(&b)
        .arg("--out")
        .arg(&other)
        .assert()
        .success();
    repo()
        .args(["trust", "publish", "--mirror"])
        .arg(&mirror)
        .arg(&other)
        .assert()
        .failure()
        .stderr(contains("already holds a different version 2"));
    // Compromising the last trust key leaves a role empty: refused.
    repo()
        .args(["trust", "rotate", "--from"])
        .arg(&v2)
        .arg("--compromise")
        .arg(pubs(&a))
        .arg("--out")
        .arg(f.path("3.keys.json"))
        .assert()
        .failure()
        .stderr(contains("role trust"));
    // Retiring a key the document does not hold is named.
    repo()
        .args(["trust", "rotate", "--from"])
        .arg(&v2)
        .arg("--retire")
        .arg(pubs(&b))
        .arg("--out")
        .arg(f.path("3.keys.json"))
        .assert()
        .failure()
        .stderr(contains("does not hold key"));
}

#[test]
fn trust_show_sanitises_and_bounds() {
    let f = Fixture::new();
    let big = f.path("big.json");
    fs::write(&big, vec![b' '; 300 * 1024]).unwrap();
    repo().args(["trust", "show"]).arg(&big).assert().failure();
    let evil = f.path("evil.json");
    fs::write(&evil, "{\"signed\":\"{\\\"format\\\":1,\\\"kind\\\":\\\"\\u001b[31mx\\\"}\",\"signatures\":[]}")
        .unwrap();
    let out = repo().args(["trust", "show"]).arg(&evil).assert().failure().get_output().stderr.clone();
    assert!(!out.contains(&0x1b), "an escape byte reached the terminal: {}", String::from_utf8_lossy(&out));
}
