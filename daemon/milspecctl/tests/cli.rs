//! The `milspecctl` binary itself: how it names itself, refuses a bad
//! command line, verifies packages offline, and behaves with no daemon on
//! a real `dbus-daemon` (a private system-type bus, `support::Bus`). Its
//! commands against the real daemon are tested in daemon/tests/dbus_bus.rs,
//! which runs this binary: a workspace test run builds it because of this
//! file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{listing, Bus};

fn milspecctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_milspecctl")).args(args).output().unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn names_its_version_and_commands() {
    let o = milspecctl(&["--version"]);
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), format!("milspecctl {}", env!("CARGO_PKG_VERSION")));
    let help = String::from_utf8_lossy(&milspecctl(&["--help"]).stdout).into_owned();
    for cmd in ["verify", "inspect", "status", "install", "check", "rollback", "history", "slots", "report", "watch"] {
        assert!(help.contains(cmd), "`{cmd}` missing from --help:\n{help}");
    }
}

#[test]
fn a_bad_command_line_is_a_usage_error_64_and_help_is_not() {
    for bad in [
        &["no-such-command"][..],
        &["verify"],
        &["install"],
        &["status", "--no-such-flag"],
        &["verify", "--threshold", "0", "x.mspkg"],
        &["history", "--limit", "many"],
        &["install", "--timeout", "soon", "x.mspkg"],
        &[],
    ] {
        let o = milspecctl(bad);
        assert_eq!(o.status.code(), Some(64), "{bad:?}: {}", text(&o));
        assert!(o.stdout.is_empty(), "{bad:?}: usage errors go to stderr: {}", text(&o));
        assert!(!o.stderr.is_empty(), "{bad:?}");
    }
    for ask in [&["--help"][..], &["status", "--help"], &["help", "verify"], &["--version"]] {
        let o = milspecctl(ask);
        assert_eq!(o.status.code(), Some(0), "{ask:?}: {}", text(&o));
        assert!(!o.stdout.is_empty(), "{ask:?}: help and version go to stdout");
    }
}

#[test]
fn every_json_flag_has_a_help_text() {
    let help = String::from_utf8_lossy(&milspecctl(&["--help"]).stdout).into_owned();
    let cmds: Vec<String> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    assert!(cmds.len() > 10, "{cmds:?}");
    let mut with_json = 0;
    for cmd in &cmds {
        let h = String::from_utf8_lossy(&milspecctl(&[cmd, "--help"]).stdout).into_owned();
        if let Some(line) = h.lines().find(|l| l.trim_start().starts_with("--json")) {
            with_json += 1;
            assert!(line.trim_start().trim_start_matches("--json").trim().len() > 10, "{cmd}: --json has no help: {h}");
        }
    }
    assert!(with_json >= 14, "{with_json} commands with --json");
}

/// A publisher's key, a host's trust folder with it, and packages.
struct Publisher {
    dir: tempfile::TempDir,
    key: milspec_format::SecretKey,
}

impl Publisher {
    fn new() -> Publisher {
        let dir = tempfile::tempdir().unwrap();
        let key = milspec_format::SecretKey::generate("release").unwrap();
        fs::create_dir(dir.path().join("trust")).unwrap();
        key.write_pair(&dir.path().join("trust")).unwrap();
        fs::remove_file(dir.path().join("trust/release.key")).unwrap();
        Publisher { dir, key }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn pack(&self, version: &str) -> PathBuf {
        let ko = self.path(&format!("m-{version}.ko"));
        fs::write(&ko, milspec_format::testkit::FakeKo { version, ..Default::default() }.build()).unwrap();
        let v: semver::Version = version.parse().unwrap();
        let opts = milspec_format::writer::PackOptions {
            sequence: milspec_format::writer::default_sequence(&v).unwrap(),
            version: v,
            created: time::OffsetDateTime::now_utc(),
            params: Default::default(),
            probation: None,
            requires: Default::default(),
        };
        let out = self.path(&format!("{version}.mspkg"));
        milspec_format::writer::pack(
            &[ko],
            &opts,
            std::slice::from_ref(&self.key),
            None,
            &out,
            &milspec_format::Limits::default(),
        )
        .unwrap();
        out
    }

    /// A milspecd configuration whose `[trust]` is the trust folder.
    fn config(&self, threshold: usize) -> PathBuf {
        let p = self.path(&format!("milspecd-{threshold}.toml"));
        fs::write(&p, format!("[trust]\nkeys_dir = \"{}\"\nthreshold = {threshold}\n", self.path("trust").display()))
            .unwrap();
        p
    }
}

fn run(args: &[&str], paths: &[&Path]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_milspecctl")).args(args).args(paths).output().unwrap()
}

#[test]
fn verify_exits_2_for_what_install_rejects_and_1_for_io_errors() {
    let p = Publisher::new();
    let good = p.pack("1.0.0");
    let trust = p.path("trust");
    let o = run(&["verify", "--keys"], &[&trust, &good]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(": OK"), "{}", text(&o));

    // Not signed by enough trusted keys: rejected.
    let o = run(&["verify", "--threshold", "2", "--keys"], &[&trust, &good]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // Tampered bytes: rejected.
    let mut bytes = fs::read(&good).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    let bad = p.path("tampered.mspkg");
    fs::write(&bad, &bytes).unwrap();
    let o = run(&["verify", "--keys"], &[&trust, &bad]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    // Not a package at all: rejected.
    let junk = p.path("junk.mspkg");
    fs::write(&junk, b"not a tar archive at all, just words").unwrap();
    let o = run(&["verify", "--keys"], &[&trust, &junk]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("junk.mspkg"), "{}", text(&o));

    // A file that cannot be read, or no keys: an error, 1.
    let o = run(&["verify", "--keys"], &[&trust, &p.path("missing.mspkg")]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = run(&["verify", "--keys"], &[&p.path("no-such-folder"), &good]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[test]
fn verify_uses_the_configured_trust_unless_told_otherwise() {
    let p = Publisher::new();
    let good = p.pack("1.0.0");
    // The keys folder and threshold come from the configuration.
    let o = run(&["verify", "--config"], &[&p.config(1), &good]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("1 of 1 required"), "{}", text(&o));
    let o = run(&["verify", "--config"], &[&p.config(2), &good]);
    assert_eq!(o.status.code(), Some(2), "configured threshold 2 with one signature: {}", text(&o));
    // --threshold overrides the configured one; --keys the configured folder.
    let o = run(&["verify", "--threshold", "1", "--config"], &[&p.config(2), &good]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let empty = p.path("empty-trust");
    fs::create_dir(&empty).unwrap();
    let o = run(&["verify", "--keys"], &[&empty, Path::new("--config"), &p.config(1), &good]);
    assert_eq!(o.status.code(), Some(1), "an empty keys folder is a configuration error: {}", text(&o));
    // An explicit configuration that does not exist is an error.
    let o = run(&["verify", "--config"], &[&p.path("nope.toml"), &good]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope.toml"), "{}", text(&o));
}

/// Every command that needs the daemon, with a bus but no daemon on it.
const BUS_COMMANDS: &[&[&str]] = &[
    &["check"],
    &["rollback"],
    &["reconcile"],
    &["pause"],
    &["resume"],
    &["history"],
    &["slots"],
    &["kernels"],
    &["kernel-installed", "6.1.0-test"],
    &["kernel-removed", "6.1.0-test"],
    &["report"],
    &["check", "--json"],
    &["history", "--json"],
    &["report", "--json"],
];

#[test]
fn with_no_daemon_every_command_says_so_once_and_exits_7() {
    let bus = Bus::start();
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("p.mspkg");
    fs::write(&pkg, b"x").unwrap();
    let install = ["install", pkg.to_str().unwrap()];
    for args in BUS_COMMANDS.iter().copied().chain([&install[..]]) {
        let o = bus.ctl(args).output().unwrap();
        assert_eq!(o.status.code(), Some(7), "{args:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            err.trim_end(),
            "milspecctl: error: milspecd is not running on this host (nothing owns com.dell.MilSpec1 on the system bus; \
             it is started by udev on Dell hardware, never by this command): see `systemctl status milspecd`",
            "{args:?}"
        );
        if args.contains(&"--json") {
            // With --json, the refusal is also one outcome object on stdout.
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!((v["outcome"].as_str(), v["exit_code"].as_u64()), (Some("not-running"), Some(7)), "{args:?}");
        } else {
            assert!(o.stdout.is_empty(), "{args:?}: {}", text(&o));
        }
    }
    // No system bus at all is another error (1), said as such.
    let o = Command::new(env!("CARGO_BIN_EXE_milspecctl"))
        .arg("slots")
        .env("DBUS_SYSTEM_BUS_ADDRESS", format!("unix:path={}", dir.path().join("none").display()))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot connect to the system bus"), "{}", text(&o));
}

#[test]
fn offline_status_reads_the_state_folder_and_changes_nothing() {
    let bus = Bus::start();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let conf = dir.path().join("milspecd.toml");
    fs::write(
        &conf,
        format!(
            "[trust]\nkeys_dir = \"{}\"\n[paths]\nstate_dir = \"{}\"\n[kernel]\nproc = \"{}\"\nsys = \"{}\"\nmodules_dir = \"{}\"\n",
            dir.path().join("keys").display(),
            state.display(),
            dir.path().join("proc").display(),
            dir.path().join("sys").display(),
            dir.path().join("modules").display(),
        ),
    )
    .unwrap();
    let c = conf.to_str().unwrap();
    // A fresh host (no state folder), then an empty one, then a state record.
    for step in 0..3 {
        match step {
            1 => fs::create_dir(&state).unwrap(),
            2 => milspecd::state::StateFile::new(&state).save(&milspecd::state::State::default()).unwrap(),
            _ => {}
        }
        let before = listing(dir.path());
        let o = bus.ctl(&["status", "--config", c]).output().unwrap();
        assert_eq!(listing(dir.path()), before, "step {step}: status changed the disk");
        assert_eq!(o.status.code(), Some(7), "step {step}: {}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        let first = out.lines().next().unwrap_or_default();
        assert!(first.starts_with("milspecd is not running on this host"), "step {step}: {}", text(&o));
        assert!(first.contains(&format!("offline view of {}", state.display())), "{first}");
        let slots: Vec<_> = out.lines().filter(|l| l.starts_with("slot ")).collect();
        assert_eq!(slots.len(), 2, "{out}");
        assert!(slots.iter().all(|l| l.ends_with(" empty")), "empty slots are not an error: {out}");
        assert!(o.stderr.is_empty(), "{}", text(&o));

        let o = bus.ctl(&["status", "--json", "--config", c]).output().unwrap();
        assert_eq!(listing(dir.path()), before, "step {step}: status --json changed the disk");
        assert_eq!(o.status.code(), Some(7), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is one JSON document");
        assert_eq!(v["slots"].as_array().map(Vec::len), Some(2), "{v}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("not running"), "{}", text(&o));
    }
    // A state folder it cannot make sense of: still 7, and says why.
    fs::write(state.join("state.json"), b"{ not json").unwrap();
    let o = bus.ctl(&["status", "--config", c]).output().unwrap();
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not running") && err.contains("state.json"), "{}", text(&o));
}

#[test]
fn watch_waits_for_the_daemon_and_says_so_once() {
    let bus = Bus::start();
    let mut w = support::Lines::spawn(bus.ctl(&["watch", "--timeout", "3s"]));
    let first = w.err(Duration::from_secs(5)).expect("a note on stderr");
    assert!(first.contains("waiting for milspecd to start"), "{first}");
    let status = w.wait(Duration::from_secs(10)).expect("watch --timeout ends");
    assert_eq!(status.code(), Some(0));
    assert!(w.err(Duration::from_millis(200)).is_none(), "said more than once");
    assert!(w.out(Duration::from_millis(200)).is_none(), "stdout holds only events");
}
