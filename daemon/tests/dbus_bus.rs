//! The D-Bus API against a real `dbus-daemon` with a system-bus policy
//! (the shipped `com.dell.MilSpec1.conf` included as is) and the real
//! `milspecd run` binary, on the fake kernel of a `fake-kernel` build.
//! Clients are the real `milspecctl`, as root and as `nobody` (setpriv).
//!
//! Needs `dbus-daemon` (Debian package `dbus`) and `setpriv` (util-linux),
//! and root, as in CI.
#![cfg(feature = "fake-kernel")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use milspec_format::testkit::FakeKo;

/// A private system-like bus; killed on drop.
struct Bus {
    child: Child,
    address: String,
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn shipped_policy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/usr/share/dbus-1/system.d")
}

impl Bus {
    fn start(dir: &Path) -> Bus {
        let socket = dir.join("system_bus_socket");
        let conf = dir.join("bus.conf");
        fs::write(
            &conf,
            fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/system-bus.conf"))
                .unwrap()
                .replace("@SOCKET@", &socket.display().to_string())
                .replace("@POLICY_DIR@", &shipped_policy_dir().display().to_string()),
        )
        .unwrap();
        let child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .arg("--nofork")
            .arg("--nopidfile")
            .stdout(Stdio::null())
            .spawn()
            .expect("dbus-daemon is missing: apt-get install dbus");
        let start = Instant::now();
        while !socket.exists() {
            assert!(start.elapsed() < Duration::from_secs(10), "dbus-daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        fs::set_permissions(&socket, fs::Permissions::from_mode(0o777)).unwrap();
        Bus { child, address: format!("unix:path={}", socket.display()) }
    }
}

/// A host: fake kernel tree, state, keys, a bus and a running milspecd.
struct Host {
    f: Fixture,
    key: PathBuf,
    bus: Bus,
    daemon: Option<Child>,
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

impl Host {
    fn new(probation: &str) -> Host {
        Host::with_faults(probation, "1.2.0=warn")
    }

    /// `faults`: the fake kernel's `MILSPECD_FAKE_FAULTS` (VERSION=warn|busy|noload).
    fn with_faults(probation: &str, faults: &str) -> Host {
        let f = Fixture::new();
        // nobody must reach the socket and the packages.
        fs::set_permissions(f.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let key = f.key("release", true);
        let root = f.path("root");
        let conf = f.path("milspecd.toml");
        fs::write(
            &conf,
            format!(
                "[trust]\nkeys_dir = \"{}\"\n[paths]\nstate_dir = \"{}\"\n[health]\nprobation = \"{probation}\"\nchecks_dir = \"{}\"\n\
                 [kernel]\nproc = \"{}\"\nsys = \"{}\"\nkmsg = \"{}\"\n",
                f.path("trust").display(),
                f.path("state").display(),
                f.path("checks").display(),
                root.join("proc").display(),
                root.join("sys").display(),
                root.join("kmsg").display(),
            ),
        )
        .unwrap();
        let bus = Bus::start(f.dir.path());
        let daemon = Command::new(assert_cmd::cargo::cargo_bin("milspecd"))
            .args(["run", "--config"])
            .arg(&conf)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .env("MILSPECD_FAKE_KERNEL", "1")
            .env("MILSPECD_FAKE_RELEASE", RELEASE)
            .env("MILSPECD_FAKE_FAULTS", faults)
            .stdout(Stdio::null())
            .stderr(fs::File::create(f.path("daemon.log")).unwrap())
            .spawn()
            .unwrap();
        let h = Host { f, key, bus, daemon: Some(daemon) };
        let start = Instant::now();
        while !h.ctl(&["status"]).status.success() {
            assert!(start.elapsed() < Duration::from_secs(20), "milspecd did not come up: {}", h.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        h
    }

    fn log(&self) -> String {
        fs::read_to_string(self.f.path("daemon.log")).unwrap_or_default()
    }

    fn package(&self, version: &str) -> PathBuf {
        let out = self.f.pack(version, &[&self.key], &format!("{version}.mspkg"));
        fs::set_permissions(&out, fs::Permissions::from_mode(0o644)).unwrap();
        out
    }

    fn ctl_cmd(&self, args: &[&str], nobody: bool) -> Command {
        let bin = assert_cmd::cargo::cargo_bin("milspecctl");
        let mut c = if nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"]).arg(bin);
            c
        } else {
            Command::new(bin)
        };
        c.args(args).env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus.address);
        c
    }

    fn ctl(&self, args: &[&str]) -> Output {
        self.ctl_cmd(args, false).output().unwrap()
    }

    fn nobody(&self, args: &[&str]) -> Output {
        self.ctl_cmd(args, true).output().unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let o = self.ctl(args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    fn status(&self) -> serde_json::Value {
        self.json(&["status", "--json"])
    }

    fn wait_state(&self, state: &str) {
        let start = Instant::now();
        while self.status()["state"] != state {
            assert!(start.elapsed() < Duration::from_secs(20), "never reached {state}: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

#[test]
fn install_commit_rollback_and_every_method_over_the_bus() {
    let h = Host::new("1s");
    let s = h.status();
    assert_eq!((s["state"].as_str(), s["committed_version"].as_str()), (Some("idle"), Some("")), "{s}");

    // Install from a descriptor the caller opened; the outcome is followed.
    let o = h.ctl(&["install", h.package("1.0.0").to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("committed 1.0.0"), "{}", text(&o));

    // A watcher sees the signals and property changes of the next install.
    let watcher = h
        .ctl_cmd(&["watch", "--json", "--timeout", "30s", "--count", "200"], false)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let o = h.ctl(&["install", "--json", h.package("1.1.0").to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((v["outcome"].as_str(), v["version"].as_str()), (Some("committed"), Some("1.1.0")));
    let s = h.status();
    assert_eq!((s["committed_version"].as_str(), s["active_slot"].as_str()), (Some("1.1.0"), Some("b")), "{s}");
    assert_eq!(s["health"]["version"], "1.1.0");

    // A faulty version: swapped, watched, rolled back on its own.
    let o = h.ctl(&["install", h.package("1.2.0").to_str().unwrap()]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("rolled back 1.2.0 -> 1.1.0: warn_count rose from 0 to 1"), "{}", text(&o));
    assert!(out.contains("State: trial"), "progress shown: {}", text(&o));

    // The watcher saw it all, in order.
    let mut watcher = watcher;
    std::thread::sleep(Duration::from_secs(1)); // let it print the last signal
    let _ = watcher.kill();
    let wout = watcher.wait_with_output().unwrap();
    let lines: Vec<serde_json::Value> =
        String::from_utf8_lossy(&wout.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let signals: Vec<String> = lines
        .iter()
        .filter(|l| l["type"] == "signal")
        .map(|l| format!("{} {} {} {}", l["name"], l["from"], l["to"], l["version"]))
        .collect();
    assert_eq!(
        signals,
        [
            "\"Swapped\" \"1.0.0\" \"1.1.0\" null",
            "\"Committed\" null null \"1.1.0\"",
            "\"Swapped\" \"1.1.0\" \"1.2.0\" null",
            "\"RolledBack\" \"1.2.0\" \"1.1.0\" null",
        ],
        "{lines:?}"
    );
    let states: Vec<&str> = lines.iter().filter(|l| l["name"] == "State").filter_map(|l| l["value"].as_str()).collect();
    for s in ["staged", "swapping", "trial", "rolling-back", "idle"] {
        assert!(states.contains(&s), "State {s} was announced: {states:?}");
    }
    assert!(lines.iter().any(|l| l["name"] == "CommittedVersion" && l["value"] == "1.1.0"), "{lines:?}");
    assert!(lines.iter().any(|l| l["name"] == "Health"), "{lines:?}");

    // Offered again: refused, nothing changed.
    let o = h.ctl(&["install", h.package("1.2.0").to_str().unwrap()]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("blocklisted"), "{}", text(&o));

    // History and slots.
    let hist = h.json(&["history", "--json", "--limit", "100"]);
    let kinds: Vec<&str> = hist.as_array().unwrap().iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "staged",
            "swapped",
            "committed",
            "staged",
            "swapped",
            "committed",
            "staged",
            "swapped",
            "rolled-back",
            "rejected"
        ]
    );
    assert_eq!(h.json(&["history", "--json", "--limit", "2"]).as_array().unwrap().len(), 2);
    let slots = h.json(&["slots", "--json"]);
    let b = slots.as_array().unwrap().iter().find(|s| s["slot"] == "b").unwrap();
    assert_eq!(
        (b["version"].as_str(), b["committed"].as_str(), b["valid"].as_str()),
        (Some("1.1.0"), Some("true"), Some("true"))
    );
    let o = h.ctl(&["history"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("rolled-back"), "{}", text(&o));
    let o = h.ctl(&["slots"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("slot b: 1.1.0"), "{}", text(&o));

    // Pause and resume are properties, kept in the state folder.
    assert!(h.ctl(&["pause"]).status.success());
    assert_eq!(h.status()["paused"], true);
    assert!(h.f.path("state/paused").exists());
    let o = h.ctl(&["status"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("paused:         yes"), "{}", text(&o));
    assert!(h.ctl(&["resume"]).status.success());
    assert_eq!(h.status()["paused"], false);

    // No [source]: CheckForUpdates says so, as a D-Bus error.
    let o = h.ctl(&["check"]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no [source]"), "{}", text(&o));
    assert!(h.status()["last_error"].as_str().unwrap().contains("no [source]"));

    // A malformed package: a clear error, nothing changed.
    let before = (h.json(&["history", "--json", "--limit", "1000"]), h.json(&["slots", "--json"]));
    let bad = h.f.path("bad.mspkg");
    fs::write(&bad, b"this is not a package").unwrap();
    let o = h.ctl(&["install", bad.to_str().unwrap()]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid package"), "{}", text(&o));
    let hist = h.json(&["history", "--json", "--limit", "1000"]);
    assert_eq!(hist.as_array().unwrap().len(), before.0.as_array().unwrap().len() + 1, "one rejected event");
    assert_eq!(hist.as_array().unwrap().last().unwrap()["event"], "rejected");
    assert_eq!(h.json(&["slots", "--json"]), before.1);
    assert_eq!(h.status()["committed_version"], "1.1.0");

    // The module vanishes behind the daemon's back (as udev reports):
    // Reconcile loads the committed slot again.
    let o = h.ctl(&["reconcile"]);
    assert_eq!((code(&o), String::from_utf8_lossy(&o.stdout).starts_with("clean:")), (0, true), "{}", text(&o));
    fs::remove_dir_all(h.f.path("root/sys/module/dell_milspec")).unwrap();
    fs::remove_dir_all(h.f.path("root/proc/milspec")).unwrap();
    let o = h.ctl(&["reconcile", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    assert_eq!(
        (v["result"].as_str(), v["version"].as_str()),
        (Some("loaded-committed"), Some("1.1.0")),
        "{}",
        text(&o)
    );
    assert_eq!(fs::read_to_string(h.f.path("root/sys/module/dell_milspec/version")).unwrap().trim(), "1.1.0");
    assert_eq!(code(&h.nobody(&["reconcile"])), 4);
}

#[test]
fn rollback_with_no_trial_goes_back_to_the_other_slot() {
    let h = Host::new("1s");
    for v in ["1.0.0", "1.1.0"] {
        let o = h.ctl(&["install", h.package(v).to_str().unwrap()]);
        assert_eq!(code(&o), 0, "{}", text(&o));
    }
    // Rollback with no trial: back to the earlier version in the other
    // slot, through a trial, and the version left is blocklisted.
    let o = h.ctl(&["rollback"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("going back from 1.1.0 to 1.0.0") && out.contains("committed 1.0.0"), "{}", text(&o));
    let s = h.status();
    assert_eq!((s["committed_version"].as_str(), s["active_slot"].as_str()), (Some("1.0.0"), Some("a")), "{s}");
    let o = h.ctl(&["install", h.package("1.1.0").to_str().unwrap()]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("blocklisted"), "{}", text(&o));
    // Slot b holds the blocklisted 1.1.0: nothing to go back to.
    let o = h.ctl(&["rollback"]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("NothingToRollBack") && err.contains("blocklisted"), "{}", text(&o));
    assert_eq!(h.status()["committed_version"], "1.0.0");
    let hist = h.json(&["history", "--json", "--limit", "3"]);
    let kinds: Vec<&str> = hist.as_array().unwrap().iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(kinds, ["swapped", "committed", "rejected"], "{hist}");
}

#[test]
fn rollback_with_no_trial_is_refused_when_the_module_cannot_be_unloaded() {
    let h = Host::with_faults("1s", "1.1.0=busy");
    for v in ["1.0.0", "1.1.0"] {
        let o = h.ctl(&["install", h.package(v).to_str().unwrap()]);
        assert_eq!(code(&o), 0, "{}", text(&o));
    }
    let before = h.json(&["slots", "--json"]);
    let o = h.ctl(&["rollback"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("could not be unloaded"), "{}", text(&o));
    let s = h.status();
    assert_eq!(
        (s["committed_version"].as_str(), s["health"]["version"].as_str()),
        (Some("1.1.0"), Some("1.1.0")),
        "{s}"
    );
    assert_eq!(h.json(&["slots", "--json"]), before);
}

#[test]
fn operator_rollback_ends_a_trial() {
    let h = Host::new("60s");
    // 1.0.0 with a short window of its own, then 1.3.0 under the long one.
    let ko = h.f.ko("short.ko", FakeKo { version: "1.0.0", ..FakeKo::default() });
    let short = h.f.path("short.mspkg");
    repo()
        .args(["pack", "--version", "1.0.0", "--probation", "1s", "--module"])
        .arg(&ko)
        .arg("--key")
        .arg(&h.key)
        .arg("--out")
        .arg(&short)
        .assert()
        .success();
    assert_eq!(code(&h.ctl(&["install", short.to_str().unwrap()])), 0);
    let install =
        h.ctl_cmd(&["install", h.package("1.3.0").to_str().unwrap()], false).stdout(Stdio::piped()).spawn().unwrap();
    h.wait_state("trial");
    assert_eq!(h.status()["trial_version"], "1.3.0");
    // Busy while a trial runs.
    let o = h.ctl(&["install", h.package("1.4.0").to_str().unwrap()]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Busy: an install of 1.3.0 is in progress"), "{}", text(&o));
    // nobody cannot end it.
    assert_eq!(code(&h.nobody(&["rollback"])), 4);
    let start = Instant::now();
    let o = h.ctl(&["rollback"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("rolled back 1.3.0 -> 1.0.0"), "{}", text(&o));
    assert!(start.elapsed() < Duration::from_secs(10));
    let o = install.wait_with_output().unwrap();
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("rollback requested by the operator (uid 0)"), "{}", text(&o));
    let s = h.status();
    assert_eq!(
        (s["state"].as_str(), s["committed_version"].as_str(), s["trial_version"].as_str()),
        (Some("idle"), Some("1.0.0"), Some(""))
    );
    assert_eq!(s["health"]["version"], "1.0.0");
}

#[test]
fn a_non_root_caller_reads_but_changes_nothing() {
    let h = Host::new("1s");
    assert_eq!(code(&h.ctl(&["install", h.package("1.0.0").to_str().unwrap()])), 0);
    let pkg = h.package("1.1.0");

    // Reads are open to anyone.
    for args in [&["status"][..], &["status", "--json"], &["history"], &["slots", "--json"]] {
        let o = h.nobody(args);
        assert_eq!(code(&o), 0, "{args:?}: {}", text(&o));
    }
    let o = h.nobody(&["status", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["committed_version"], "1.0.0");

    // Every change is refused by the daemon, with exit 4.
    let before = h.json(&["history", "--json", "--limit", "1000"]);
    for args in [&["install", pkg.to_str().unwrap()][..], &["check"], &["rollback"], &["pause"], &["resume"]] {
        let o = h.nobody(args);
        assert_eq!(code(&o), 4, "{args:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("access denied") && err.contains("uid 65534"), "{args:?}: {}", text(&o));
    }
    assert_eq!(h.json(&["history", "--json", "--limit", "1000"]), before);
    let s = h.status();
    assert_eq!((s["committed_version"].as_str(), s["paused"].as_bool()), (Some("1.0.0"), Some(false)));

    // A file nobody cannot read cannot be installed through the daemon.
    let secret = h.f.path("secret");
    fs::create_dir(&secret).unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o700)).unwrap();
    let hidden = secret.join("1.1.0.mspkg");
    fs::copy(&pkg, &hidden).unwrap();
    let o = h.nobody(&["install", hidden.to_str().unwrap()]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot open the package"), "{}", text(&o));

    // The bus policy: nobody may not own the name, nor set a property.
    let o = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "dbus-send", "--system", "--print-reply"])
        .args(["--dest=com.dell.MilSpec1", "/com/dell/MilSpec1", "org.freedesktop.DBus.Properties.Set"])
        .args(["string:com.dell.MilSpec1.Manager", "string:Paused", "variant:boolean:true"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", &h.bus.address)
        .output()
        .unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("AccessDenied"), "{}", text(&o));
    assert_eq!(h.status()["paused"], false);
}
