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
mod schema_support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::bus::SystemBus;
use common::fake_kernel;
use common::*;
use milspec_format::testkit::FakeKo;

/// A host: fake kernel tree, state, keys, a bus and a running milspecd.
struct Host {
    f: Fixture,
    key: PathBuf,
    bus: SystemBus,
    daemon: Option<Child>,
    conf: PathBuf,
    faults: String,
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
        Host::with_config(probation, faults, |_| String::new())
    }

    /// `extra`: more configuration (a `[source]`), given the fixture.
    fn with_config(probation: &str, faults: &str, extra: impl Fn(&Fixture) -> String) -> Host {
        let mut h = Host::without_daemon(probation, faults, extra);
        h.start_daemon();
        h
    }

    /// The host and its bus, with no daemon yet ([`Host::start_daemon`]).
    fn without_daemon(probation: &str, faults: &str, extra: impl Fn(&Fixture) -> String) -> Host {
        let f = Fixture::new();
        // nobody must reach the socket and the packages.
        fs::set_permissions(f.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let key = f.key("release", true);
        let conf = f.path("milspecd.toml");
        fs::write(&conf, f.daemon_config(probation) + &with_metrics(extra(&f), &f)).unwrap();
        let bus = SystemBus::start(f.dir.path());
        Host { f, key, bus, daemon: None, conf, faults: faults.to_string() }
    }

    /// Starts `milspecd run` (its log appended to `daemon.log`) and waits
    /// until it answers.
    fn start_daemon(&mut self) {
        assert!(self.daemon.is_none(), "the daemon runs already");
        let log = fs::OpenOptions::new().create(true).append(true).open(self.f.path("daemon.log")).unwrap();
        let daemon = Command::new(assert_cmd::cargo::cargo_bin("milspecd"))
            .args(["run", "--config"])
            .arg(&self.conf)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus.address)
            .env("MILSPECD_FAKE_KERNEL", "1")
            .env("MILSPECD_FAKE_RELEASE", RELEASE)
            .env("MILSPECD_FAKE_FAULTS", &self.faults)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(daemon);
        let start = Instant::now();
        while !self.ctl(&["status"]).status.success() {
            assert!(start.elapsed() < Duration::from_secs(20), "milspecd did not come up: {}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the daemon as a crash would (SIGKILL).
    fn kill_daemon(&mut self) {
        let mut d = self.daemon.take().expect("a running daemon");
        let _ = d.kill();
        let _ = d.wait();
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

    /// A `--json` command's output, checked against its JSON Schema.
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let o = self.ctl(args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        let v = serde_json::from_slice(&o.stdout).unwrap();
        schema_support::assert_follows(&v, &format!("milspecctl {}", args.join(" ")));
        v
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

/// `extra`, with the metrics in the fixture unless it says where they go:
/// never the host's node_exporter folder.
fn with_metrics(extra: String, f: &Fixture) -> String {
    if extra.contains("[metrics]") {
        return extra;
    }
    format!("{extra}\n[metrics]\ntextfile = \"{}\"\n", f.path("metrics/milspecd.prom").display())
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
    assert_eq!((s["state"].as_str(), s["committed_version"].as_str()), (Some("idle"), None), "{s}");

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
    schema_support::assert_follows(&v, "install --json");
    assert_eq!((v["outcome"].as_str(), v["version"].as_str()), (Some("committed"), Some("1.1.0")));
    let s = h.status();
    assert_eq!((s["committed_version"].as_str(), s["committed_slot"].as_str()), (Some("1.1.0"), Some("b")), "{s}");
    assert_eq!(s["health"]["module_version"], "1.1.0");

    // A faulty version: swapped, watched, rolled back on its own.
    let o = h.ctl(&["install", h.package("1.2.0").to_str().unwrap()]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("rolled back 1.2.0 -> 1.1.0: kernel log: WARNING: CPU: 0 PID: 1 at dell_milspec.c:80"),
        "{}",
        text(&o)
    );
    assert!(out.contains("State: trial"), "progress shown: {}", text(&o));

    // The watcher saw it all, in order.
    let mut watcher = watcher;
    std::thread::sleep(Duration::from_secs(1)); // let it print the last signal
    let _ = watcher.kill();
    let wout = watcher.wait_with_output().unwrap();
    let lines: Vec<serde_json::Value> =
        schema_support::assert_valid_lines("bus-event", &String::from_utf8_lossy(&wout.stdout), "watch --json");
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
    // The audit trail: each record names the D-Bus caller (root here) and
    // the file behind its descriptor, the package's hash and signer, the
    // kernel; the chain verifies, through the daemon and offline.
    let events = hist.as_array().unwrap();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["n"].as_u64(), Some(i as u64 + 1), "{e}");
        assert_eq!((e["actor"]["kind"].as_str(), e["actor"]["uid"].as_u64()), (Some("dbus"), Some(0)), "{e}");
        assert_eq!(e["actor"]["authorized"], "root", "{e}");
        assert!(e["actor"]["sender"].as_str().is_some_and(|s| s.starts_with(':')), "{e}");
        assert!(e["kernel"].is_string(), "{e}");
    }
    let staged = &events[0];
    assert!(staged["origin"]["file"].as_str().is_some_and(|f| f.ends_with("1.0.0.mspkg")), "{staged}");
    let file = staged["origin"]["file"].as_str().unwrap();
    let want = milspec_format::Sha256Digest::of(&fs::read(file).unwrap()).to_string();
    assert_eq!(staged["sha256"].as_str(), Some(want.as_str()), "{staged}");
    assert_eq!(staged["signers"].as_array().map(Vec::len), Some(1), "{staged}");
    let rejected = events.last().unwrap();
    assert!(rejected["sha256"].as_str().is_some_and(|s| s.len() == 64), "a refused package is hashed too: {rejected}");
    let v = h.json(&["history", "--verify", "--json"]);
    assert_eq!((v["result"].as_str(), v["records"].as_u64()), (Some("ok"), Some(10)), "{v}");
    schema_support::assert_valid("history-verify", &v, "milspecctl history --verify --json");
    let o = h.ctl(&["history", "--verify"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("10 records, 1 to 10"), "{}", text(&o));
    let slots = h.json(&["slots", "--json"]);
    let b = slots.as_array().unwrap().iter().find(|s| s["slot"] == "b").unwrap();
    assert_eq!(
        (b["version"].as_str(), b["committed"].as_bool(), b["valid"].as_bool()),
        (Some("1.1.0"), Some(true), Some(true))
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
    schema_support::assert_follows(&v, "reconcile --json");
    assert_eq!(
        (v["outcome"].as_str(), v["version"].as_str()),
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
    assert_eq!((s["committed_version"].as_str(), s["committed_slot"].as_str()), (Some("1.0.0"), Some("a")), "{s}");
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
        (s["committed_version"].as_str(), s["health"]["module_version"].as_str()),
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
        (Some("idle"), Some("1.0.0"), None)
    );
    assert_eq!(s["health"]["module_version"], "1.0.0");
}

#[test]
fn a_non_root_caller_reads_but_changes_nothing() {
    let h = Host::new("1s");
    assert_eq!(code(&h.ctl(&["install", h.package("1.0.0").to_str().unwrap()])), 0);
    let pkg = h.package("1.1.0");

    // Reads are open to anyone.
    for args in [&["status"][..], &["status", "--json"], &["history"], &["slots", "--json"], &["report"]] {
        let o = h.nobody(args);
        assert_eq!(code(&o), 0, "{args:?}: {}", text(&o));
    }
    let o = h.nobody(&["status", "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["committed_version"], "1.0.0");

    // Every change is refused by the daemon, with exit 4.
    let before = h.json(&["history", "--json", "--limit", "1000"]);
    for args in [
        &["install", pkg.to_str().unwrap()][..],
        &["check"],
        &["rollback"],
        &["pause"],
        &["resume"],
        &["unblock", "1.0.0"],
    ] {
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

// Hostile input: no byte from a package, an index or a mirror may take the
// daemon off the bus, and nothing unprintable may reach a terminal or a log.

/// Asserts that `out` is UTF-8 with no control character (but the newline
/// that ends a line), no DEL, no C1 and no bidi or invisible formatting.
fn assert_printable(what: &str, out: &[u8]) {
    let s = std::str::from_utf8(out).unwrap_or_else(|e| panic!("{what}: not UTF-8 ({e}): {out:?}"));
    for line in s.split_inclusive('\n') {
        let body = line.strip_suffix('\n').unwrap_or(line);
        if let Some(c) = body.chars().find(|c| milspec_format::text::is_unsafe(*c)) {
            panic!("{what}: unprintable {c:?} in {body:?}");
        }
    }
}

fn assert_output_printable(what: &str, o: &Output) {
    assert_printable(&format!("{what} stdout"), &o.stdout);
    assert_printable(&format!("{what} stderr"), &o.stderr);
}

/// Runs `milspecctl` with a deadline; None if it did not exit in time.
fn ctl_within(h: &Host, args: &[&str], limit: Duration) -> Option<Output> {
    let mut child = h.ctl_cmd(args, false).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    while start.elapsed() < limit {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// The name is still owned and `status`, as root and as nobody, answers.
fn assert_still_serving(h: &Host, after: &str) {
    for o in [h.ctl(&["status"]), h.nobody(&["status", "--json"])] {
        assert_eq!(code(&o), 0, "after {after}: {}\n{}", text(&o), h.log());
        assert_output_printable(&format!("status after {after}"), &o);
    }
    let o = Command::new("dbus-send")
        .args(["--system", "--print-reply", "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus"])
        .args(["org.freedesktop.DBus.NameHasOwner", "string:com.dell.MilSpec1"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", &h.bus.address)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("boolean true"), "after {after}: {}", text(&o));
}

/// A package rebuilt from a good one with `signatures.json` replaced.
fn with_signatures(h: &Host, version: &str, sigs: &[u8], out: &str) -> PathBuf {
    let good = h.package(version);
    let entries: Vec<_> = entries(&good)
        .into_iter()
        .map(|(p, d)| if p == "signatures.json" { (p, sigs.to_vec()) } else { (p, d) })
        .collect();
    let path = h.f.path(out);
    fs::write(&path, rebuild(&entries, &[])).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    path
}

/// Bytes that look random but are the same on every run.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn a_nul_in_a_mirror_index_leaves_the_daemon_on_the_bus() {
    let h = Host::with_config("1s", "", |f| {
        let mirror = f.path("mirror");
        fs::create_dir_all(&mirror).unwrap();
        // No key needed: anyone who can serve the index (or sits on an
        // http:// mirror's path) can send this.
        fs::write(mirror.join("index.json"), br#"{"signed":"x","signatures":[],"\u0000\u001b[2J\u009b\u202e":1}"#)
            .unwrap();
        format!("[source]\nurl = \"file://{}/\"\npoll_interval = \"1h\"\n", mirror.display())
    });
    let o = h.ctl(&["check"]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert_output_printable("check", &o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("\\x00\\x1b[2J\\x9b\\u{202e}"), "the index's field name, escaped: {}", text(&o));
    assert_still_serving(&h, "a NUL index");
    let last = h.status()["last_error"].as_str().unwrap().to_string();
    assert!(last.contains("\\x00") && !last.contains('\0'), "LastError escaped: {last:?}");
    // Again, as the poll timer would after every restart.
    assert_eq!(code(&h.ctl(&["check"])), 1);
    assert_still_serving(&h, "a second poll of the NUL index");
    assert_printable("daemon log", h.log().as_bytes());
}

#[test]
fn a_nul_in_signatures_json_is_escaped_in_install_history_and_status() {
    let h = Host::new("1s");
    let pkg = with_signatures(
        &h,
        "1.0.0",
        br#"{"signatures":[{"keyid":"\u0000\u001b]0;pwned\u0007\r\u009b\u202e","sig":"x"}]}"#,
        "nul-keyid.mspkg",
    );
    let unknown = with_signatures(&h, "1.0.0", br#"{"signatures":[],"\u0000\u001b[31m":1}"#, "nul-field.mspkg");
    for p in [&pkg, &unknown] {
        let o = ctl_within(&h, &["install", p.to_str().unwrap()], Duration::from_secs(30))
            .unwrap_or_else(|| panic!("no reply to Install: {}", h.log()));
        assert_eq!(code(&o), 2, "{}", text(&o));
        assert_output_printable("install", &o);
        assert!(String::from_utf8_lossy(&o.stderr).contains("\\x00"), "the reply escapes the NUL: {}", text(&o));
        assert_still_serving(&h, "an install with a NUL in signatures.json");
    }
    // The stored reasons, read by anyone.
    for o in [h.ctl(&["history"]), h.nobody(&["history"]), h.nobody(&["history", "--json"])] {
        assert_eq!(code(&o), 0, "{}", text(&o));
        assert_output_printable("history", &o);
        assert!(String::from_utf8_lossy(&o.stdout).contains("\\x00"), "{}", text(&o));
    }
    assert_still_serving(&h, "History");
    let raw = fs::read_to_string(h.f.path("state/history.jsonl")).unwrap();
    assert!(!raw.contains("\\u0000") && !raw.contains("\\u001b"), "stored escaped: {raw}");
    // Still installs a good package.
    assert_eq!(code(&h.ctl(&["install", h.package("1.0.0").to_str().unwrap()])), 0);
    assert_printable("daemon log", h.log().as_bytes());
}

#[test]
fn random_bytes_installed_get_a_reply_and_the_daemon_keeps_answering() {
    let h = Host::new("1s");
    for seed in 1..=5u64 {
        let p = h.f.path(&format!("noise-{seed}.mspkg"));
        fs::write(&p, noise(seed, 2048)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let o = ctl_within(&h, &["install", p.to_str().unwrap()], Duration::from_secs(30))
            .unwrap_or_else(|| panic!("no reply to Install of random bytes (seed {seed}): {}", h.log()));
        assert_eq!(code(&o), 2, "{}", text(&o));
        assert_output_printable("install of random bytes", &o);
        assert_still_serving(&h, "an install of random bytes");
    }
    let o = h.nobody(&["history", "--json", "--limit", "10"]);
    assert_output_printable("history", &o);
    assert_printable("daemon log", h.log().as_bytes());
}

#[test]
fn the_daemon_exits_non_zero_when_its_bus_goes_away() {
    let mut h = Host::new("1s");
    h.bus.stop();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = h.daemon.as_mut().unwrap().try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "milspecd kept running without its bus: {}", h.log());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(75), "exit status for systemd's Restart=on-failure: {}", h.log());
    assert!(h.log().contains("lost the system bus"), "{}", h.log());
}

#[test]
fn milspecctl_waiting_on_the_daemon_exits_5_when_the_daemon_dies() {
    let mut h = Host::new("120s");
    let install =
        h.ctl_cmd(&["install", h.package("1.0.0").to_str().unwrap()], false).stdout(Stdio::piped()).spawn().unwrap();
    h.wait_state("trial");
    std::thread::sleep(Duration::from_millis(300));
    let _ = h.daemon.as_mut().unwrap().kill();
    let killed = Instant::now();
    let mut install = install;
    let status = loop {
        if let Some(s) = install.try_wait().unwrap() {
            break s;
        }
        assert!(killed.elapsed() < Duration::from_secs(5), "milspecctl did not notice within 5 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(5), "the documented exit code for a daemon that left the bus");
    let _ = h.daemon.take().map(|mut d| d.wait());
    // With no daemon, status says so at once (exit 7, "not running"), then
    // shows the state folder as the daemon left it: the trial of 1.0.0.
    let conf = h.conf.to_str().unwrap().to_string();
    let o = ctl_within(&h, &["status", "--config", &conf], Duration::from_secs(5))
        .expect("status answers without a daemon");
    assert_eq!(code(&o), 7, "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.lines().next().unwrap_or_default().starts_with("milspecd is not running"), "{}", text(&o));
    assert!(out.lines().any(|l| l.starts_with("trial:") && l.contains("1.0.0")), "{}", text(&o));
    // Every other command says it is not running, in the same words.
    for args in [&["slots"][..], &["history"], &["check"], &["install", h.package("1.0.1").to_str().unwrap()]] {
        let o = ctl_within(&h, args, Duration::from_secs(5)).expect("an answer without a daemon");
        assert_eq!(code(&o), 7, "{args:?}: {}", text(&o));
        assert!(String::from_utf8_lossy(&o.stderr).contains("milspecd is not running on this host"), "{}", text(&o));
    }
}

#[test]
fn status_offline_changes_nothing_on_disk() {
    let mut h = Host::new("1s");
    assert_eq!(code(&h.ctl(&["install", h.package("1.0.0").to_str().unwrap()])), 0);
    h.wait_state("idle");
    h.kill_daemon();
    let state = h.f.path("state");
    let before = tree(&state);
    let conf = h.conf.to_str().unwrap().to_string();
    for args in [&["status", "--config", &conf][..], &["status", "--json", "--config", &conf]] {
        let o = ctl_within(&h, args, Duration::from_secs(5)).expect("status answers without a daemon");
        assert_eq!(code(&o), 7, "{args:?}: {}", text(&o));
        assert_eq!(tree(&state), before, "{args:?} changed the state folder");
    }
    let o = h.ctl(&["status", "--config", &conf]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.lines().any(|l| l.starts_with("committed:") && l.contains("1.0.0")), "{}", text(&o));
    let o = h.ctl(&["status", "--json", "--config", &conf]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["committed_version"], "1.0.0", "{v}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("not running"), "{}", text(&o));
}

/// Every path below `dir`, with its mode, size, times and bytes, sorted.
fn tree(dir: &std::path::Path) -> Vec<(PathBuf, u32, u64, i64, i64, Vec<u8>)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                todo.push(p.clone());
            }
            let data = if m.is_file() { fs::read(&p).unwrap() } else { Vec::new() };
            out.push((p, m.mode(), m.len(), m.mtime(), m.mtime_nsec(), data));
        }
    }
    out.sort();
    out
}

/// Lines of a child's pipe as they come.
fn lines_of(r: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Lines from `rx` until one contains `what` (that one last).
fn until(rx: &std::sync::mpsc::Receiver<String>, what: &str, h: &Host) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while !seen.last().is_some_and(|l: &String| l.contains(what)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => panic!("no line with {what:?}; saw {seen:?}; daemon log: {}", h.log()),
        }
    }
    seen
}

#[test]
fn watch_waits_for_the_daemon_and_follows_it_across_restarts() {
    let mut h = Host::without_daemon("1s", "", |_| String::new());
    let mut watch = h.ctl_cmd(&["watch"], false).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let out = lines_of(watch.stdout.take().unwrap());
    let err = lines_of(watch.stderr.take().unwrap());
    let first = until(&err, "waiting for milspecd to start", &h);
    assert_eq!(first.len(), 1, "{first:?}");

    h.start_daemon();
    until(&err, "milspecd started", &h);
    assert_eq!(code(&h.ctl(&["pause"])), 0);
    until(&out, "Paused: true", &h);

    h.kill_daemon();
    until(&err, "left the bus; waiting for milspecd to start again", &h);
    std::thread::sleep(Duration::from_millis(300));
    assert!(watch.try_wait().unwrap().is_none(), "watch ended with the daemon");

    h.start_daemon();
    until(&err, "milspecd started", &h);
    assert_eq!(code(&h.ctl(&["resume"])), 0);
    until(&out, "Paused: false", &h);
    assert!(watch.try_wait().unwrap().is_none(), "watch is still following");
    let _ = watch.kill();
    let _ = watch.wait();
    // "waiting for milspecd to start" was said once, at the start.
    let rest: Vec<String> = err.try_iter().collect();
    assert!(!rest.iter().any(|l| l.contains("waiting for milspecd to start (")), "{rest:?}");
}

#[test]
fn a_bad_command_line_is_a_usage_error_64_in_milspecd() {
    let milspecd = |args: &[&str]| Command::new(assert_cmd::cargo::cargo_bin("milspecd")).args(args).output().unwrap();
    for bad in [&["no-such-command"][..], &["status", "--no-such-flag"], &["prepare-kernel"], &[]] {
        let o = milspecd(bad);
        assert_eq!(code(&o), 64, "{bad:?}: {}", text(&o));
        assert!(o.stdout.is_empty(), "{bad:?}: {}", text(&o));
    }
    for ask in [&["--help"][..], &["status", "--help"], &["--version"]] {
        let o = milspecd(ask);
        assert_eq!(code(&o), 0, "{ask:?}: {}", text(&o));
        assert!(!o.stdout.is_empty(), "{ask:?}");
    }
}

#[test]
fn hostile_text_never_reaches_a_terminal_or_a_log() {
    let h = Host::new("1s");
    let evil = "\u{1b}[2J\u{1b}]0;verify OK\u{7}\r\n\u{9b}31m\u{202e}\u{7f}";
    let good = h.package("1.0.0");
    let base = entries(&good);
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    let edit = |f: &dyn Fn(&str, &[u8]) -> Vec<u8>| -> Vec<u8> {
        let e: Vec<_> = base.iter().map(|(p, d)| (p.clone(), f(p, d))).collect();
        rebuild(&e, &[])
    };
    let json_evil = serde_json::to_string(evil).unwrap();
    let json_evil = json_evil.trim_matches('"');
    // Vendor, kind and a parameter in the manifest (signature no longer matches).
    for (from, to) in [
        ("\"Dell Inc.\"".to_string(), format!("\"Dell Inc.{json_evil}\"")),
        ("\"milspec-package\"".to_string(), format!("\"milspec-package{json_evil}\"")),
        ("\"dell_milspec\"".to_string(), format!("\"dell_milspec{json_evil}\"")),
    ] {
        let bytes = edit(&|p, d| {
            if p == "manifest.json" {
                String::from_utf8_lossy(d).replace(&from, &to).into_bytes()
            } else {
                d.to_vec()
            }
        });
        cases.push((format!("manifest {from}"), bytes));
    }
    // Key ids and signatures in signatures.json; an unknown field.
    for sigs in [
        format!(r#"{{"signatures":[{{"keyid":"{json_evil}","sig":"x"}}]}}"#),
        format!(r#"{{"signatures":[{{"keyid":"{}","sig":"{json_evil}"}}]}}"#, "ab".repeat(32)),
        format!(r#"{{"signatures":[],"{json_evil}\u0000":1}}"#),
    ] {
        let bytes = edit(&|p, d| if p == "signatures.json" { sigs.clone().into_bytes() } else { d.to_vec() });
        cases.push((format!("signatures {sigs}"), bytes));
    }
    // Tar entry names: an extra entry, and a first entry with a bad checksum.
    let tar_name = format!("payload/x{}\u{0}y", &evil[..20]);
    let e: Vec<_> = base.clone();
    let extra = [Raw { path: &tar_name, kind: tar::EntryType::Regular, data: b"x" }];
    cases.push(("tar entry name".into(), rebuild(&e, &extra)));
    let mut bad_sum = raw_tar(&[Raw { path: "\u{1b}[2J\r\u{9b}", kind: tar::EntryType::Regular, data: b"x" }]);
    bad_sum[148..156].copy_from_slice(b"\x1b[2J\r\x00\xc2\x9b");
    cases.push(("tar checksum".into(), bad_sum));
    cases.push(("random bytes".into(), noise(42, 2048)));

    for (i, (what, bytes)) in cases.iter().enumerate() {
        let p = h.f.path(&format!("hostile-{i}.mspkg"));
        fs::write(&p, bytes).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let ps = p.to_str().unwrap();
        let trust = h.f.path("trust");
        let offline = [
            ctl().args(["verify", "--keys"]).arg(&trust).arg(ps).output().unwrap(),
            ctl().args(["inspect", ps]).output().unwrap(),
            ctl().args(["inspect", "--json", ps]).output().unwrap(),
        ];
        // `inspect` does not check signatures: it may succeed, but prints
        // nothing unprintable either way.
        assert_ne!(code(&offline[0]), 0, "{what}: {}", text(&offline[0]));
        for o in &offline {
            assert_output_printable(what, o);
        }
        let o = ctl_within(&h, &["install", ps], Duration::from_secs(30))
            .unwrap_or_else(|| panic!("{what}: no reply to Install: {}", h.log()));
        assert_eq!(code(&o), 2, "{what}: {}", text(&o));
        assert_output_printable(what, &o);
    }
    assert_still_serving(&h, "hostile packages");
    for args in [&["status"][..], &["status", "--json"], &["history", "--limit", "100"], &["history", "--json"]] {
        for o in [h.ctl(args), h.nobody(args)] {
            assert_eq!(code(&o), 0, "{args:?}: {}", text(&o));
            assert_output_printable(&format!("{args:?}"), &o);
        }
    }
    let log = h.log();
    assert!(log.contains("rejected"), "{log}");
    assert_printable("daemon log", log.as_bytes());
}

/// The members of `interface` in introspection XML, as
/// [`milspec_interface::proxy::MEMBERS`] writes them.
fn introspected_members(xml: &str, interface: &str) -> Vec<String> {
    let attr = |line: &str, name: &str| -> Option<String> {
        let key = format!("{name}=\"");
        let start = line.find(&key)? + key.len();
        Some(line[start..].split('"').next()?.to_string())
    };
    let mut members = Vec::new();
    let mut inside = false;
    // (kind, name, in, out) of the member being read.
    let mut open: Option<(String, String, String, String)> = None;
    for line in xml.lines().map(str::trim) {
        if line.starts_with("<interface ") {
            inside = attr(line, "name").as_deref() == Some(interface);
        } else if line.starts_with("</interface>") {
            inside = false;
        } else if !inside {
            continue;
        } else if line.starts_with("<method ") || line.starts_with("<signal ") {
            let kind = if line.starts_with("<method ") { "method" } else { "signal" };
            open = Some((kind.into(), attr(line, "name").unwrap(), String::new(), String::new()));
            if line.ends_with("/>") {
                let (k, n, i, o) = open.take().unwrap();
                members.push(if k == "method" {
                    format!("method {n}({i}) -> ({o})")
                } else {
                    format!("signal {n}({i})")
                });
            }
        } else if line.starts_with("<arg ") {
            let m = open.as_mut().expect("an arg outside a method or signal");
            let ty = attr(line, "type").unwrap();
            if attr(line, "direction").as_deref() == Some("out") {
                m.3.push_str(&ty);
            } else {
                m.2.push_str(&ty);
            }
        } else if line.starts_with("</method>") || line.starts_with("</signal>") {
            let (k, n, i, o) = open.take().unwrap();
            members.push(if k == "method" { format!("method {n}({i}) -> ({o})") } else { format!("signal {n}({i})") });
        } else if line.starts_with("<property ") {
            members.push(format!(
                "property {} {} {}",
                attr(line, "name").unwrap(),
                attr(line, "type").unwrap(),
                attr(line, "access").unwrap()
            ));
        }
    }
    members.sort();
    members
}

/// The server's interface and the client's proxy cannot drift: the live
/// daemon's introspection lists exactly the members the proxy declares,
/// and every read-only method and property decodes through the proxy.
#[test]
fn the_served_interface_is_the_one_the_client_proxy_declares() {
    let h = Host::new("1s");
    let conn = zbus::blocking::connection::Builder::address(h.bus.address.as_str()).unwrap().build().unwrap();
    let reply = conn
        .call_method(
            Some(milspec_interface::BUS_NAME),
            milspec_interface::OBJECT_PATH,
            Some("org.freedesktop.DBus.Introspectable"),
            "Introspect",
            &(),
        )
        .unwrap();
    let xml: String = reply.body().deserialize().unwrap();
    let mut declared: Vec<String> = milspec_interface::proxy::MEMBERS.iter().map(|m| m.to_string()).collect();
    declared.sort();
    assert_eq!(introspected_members(&xml, milspec_interface::INTERFACE), declared, "{xml}");

    let p = milspec_interface::ManagerProxyBlocking::new(&conn).unwrap();
    assert_eq!(p.state().unwrap(), "idle");
    p.committed_version().unwrap();
    p.trial_version().unwrap();
    p.active_slot().unwrap();
    assert!(!p.paused().unwrap());
    p.last_error().unwrap();
    p.last_check().unwrap();
    assert!(!p.reboot_required().unwrap());
    assert!(p.health().unwrap().contains_key("taint"));
    assert_eq!(p.slots().unwrap().len(), 2);
    p.history(10).unwrap();
    assert!(p.blocklist().unwrap().is_empty());
    let report: serde_json::Value = serde_json::from_str(&p.report().unwrap()).unwrap();
    schema_support::assert_valid("report", &report, "Report");
    let (result, _, _) = p.reconcile().unwrap();
    assert!(milspec_interface::ActionResult::from_word(&result).is_some(), "{result}");
}

/// Every `milspecctl --json` command, answered by the daemon, refused, or
/// with the daemon gone: stdout is always JSON that follows the schema its
/// `"schema"` key names (docs/json.md), and an outcome's `exit_code` is the
/// process's.
#[test]
fn every_milspecctl_json_output_follows_its_schema() {
    let mut h = Host::new("1s");
    let run = |h: &Host, args: &[&str], want: i32| -> serde_json::Value {
        let o = h.ctl(args);
        let what = format!("milspecctl {}", args.join(" "));
        assert_eq!(code(&o), want, "{what}: {}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        let v: serde_json::Value = if args[0] == "watch" {
            serde_json::Value::Array(schema_support::assert_valid_lines("bus-event", &out, &what))
        } else {
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{what}: not one JSON value ({e}): {out}"))
        };
        schema_support::assert_follows(&v, &what);
        if v["schema"] == "milspec.outcome/1" {
            assert_eq!(v["exit_code"], want, "{what}: {v}");
        }
        v
    };
    let p100 = h.package("1.0.0");
    let p110 = h.package("1.1.0");
    let v = run(&h, &["install", "--json", p100.to_str().unwrap()], 0);
    assert_eq!(v["outcome"], "committed", "{v}");
    let v = run(&h, &["install", "--json", p100.to_str().unwrap()], 0);
    assert_eq!(v["outcome"], "already-installed", "{v}");
    run(&h, &["install", "--json", p110.to_str().unwrap()], 0);
    let v = run(&h, &["rollback", "--json"], 0);
    assert_eq!((v["outcome"].as_str(), v["version"].as_str()), (Some("committed"), Some("1.0.0")), "{v}");
    // The version left behind is blocklisted: status lists it with its
    // reason and time; an unblock takes it off, once.
    let v = run(&h, &["status", "--json"], 0);
    assert_eq!(v["blocklist"][0]["version"], "1.1.0", "{v}");
    assert!(v["blocklist"][0]["reason"].as_str().unwrap().contains("rollback requested by the operator"), "{v}");
    assert!(v["blocklist"][0]["at"].as_str().unwrap().starts_with("20"), "{v}");
    let o = h.ctl(&["status"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("blocked:        1.1.0 since 20"), "{}", text(&o));
    let v = run(&h, &["unblock", "--json", "1.1.0"], 0);
    assert_eq!((v["outcome"].as_str(), v["version"].as_str()), (Some("unblocked"), Some("1.1.0")), "{v}");
    let v = run(&h, &["unblock", "--json", "1.1.0"], 2);
    assert_eq!(v["outcome"], "rejected", "{v}");
    assert!(v["message"].as_str().unwrap().contains("not blocklisted"), "{v}");
    let v = run(&h, &["unblock", "--json", "1.1.0\u{1b}[31m"], 1);
    assert!(v["message"].as_str().unwrap().contains("is not a version"), "{v}");
    let v = run(&h, &["status", "--json"], 0);
    assert_eq!(v["blocklist"], serde_json::json!([]), "{v}");
    let hist = h.json(&["history", "--json", "--limit", "3"]);
    assert!(hist.to_string().contains("unblocked by uid 0"), "{hist}");
    let v = run(&h, &["check", "--json"], 1);
    assert_eq!(v["outcome"], "failed", "{v}");
    assert!(v["message"].as_str().unwrap().contains("no [source]"), "{v}");
    let v = run(&h, &["reconcile", "--json"], 0);
    assert_eq!(v["outcome"], "clean", "{v}");
    // The watcher may still see the end of the actions before (a late
    // `State`): it reads up to the `Paused` change, which must come.
    let mut watcher =
        h.ctl_cmd(&["watch", "--json", "--timeout", "20s"], false).stdout(Stdio::piped()).spawn().unwrap();
    let out = lines_of(watcher.stdout.take().unwrap());
    std::thread::sleep(Duration::from_millis(500));
    let v = run(&h, &["pause", "--json"], 0);
    assert_eq!(v["outcome"], "paused", "{v}");
    let seen = until(&out, "\"Paused\"", &h);
    let _ = watcher.kill();
    let _ = watcher.wait();
    let events = schema_support::assert_valid_lines("bus-event", &seen.join("\n"), "watch --json");
    let paused = events.last().unwrap();
    assert_eq!((paused["name"].as_str(), &paused["value"]), (Some("Paused"), &serde_json::json!(true)), "{events:?}");
    assert!(events.iter().all(|e| e["type"] == "property"), "nothing but property changes: {events:?}");
    run(&h, &["resume", "--json"], 0);
    let v = run(&h, &["status", "--json"], 0);
    assert_eq!((v["daemon"].as_str(), v["committed_version"].as_str()), (Some("running"), Some("1.0.0")), "{v}");
    assert_eq!(v["slots"].as_array().map(Vec::len), Some(2), "{v}");
    let v = run(&h, &["history", "--json"], 0);
    assert!(v.as_array().unwrap().iter().any(|e| e["event"] == "committed"), "{v}");
    run(&h, &["slots", "--json"], 0);
    let v = run(&h, &["report", "--json"], 0);
    assert_eq!(v["committed"]["version"], "1.0.0", "{v}");
    let v = run(&h, &["kernels", "--json"], 0);
    assert_eq!(v["kernel_build"], "ready", "{v}");
    let v = run(&h, &["kernel-installed", "--json", RELEASE], 0);
    assert_eq!((v["outcome"].as_str(), v["kernel"].as_str()), (Some("kernel-ready"), Some(RELEASE)), "{v}");
    run(&h, &["kernel-removed", "--json", "6.1.0-99-cloud-amd64"], 0);
    let v = run(&h, &["inspect", "--json", p110.to_str().unwrap()], 0);
    assert_eq!(v["verified"], false, "{v}");
    let junk = h.f.path("junk.mspkg");
    fs::write(&junk, b"not a package").unwrap();
    fs::set_permissions(&junk, fs::Permissions::from_mode(0o644)).unwrap();
    let v = run(&h, &["install", "--json", junk.to_str().unwrap()], 2);
    assert_eq!(v["outcome"], "rejected", "{v}");

    // The daemon gone: the offline status, and a refusal that says so.
    h.kill_daemon();
    let conf = h.f.path("milspecd.toml");
    let v = run(&h, &["status", "--json", "--config", conf.to_str().unwrap()], 7);
    assert_eq!((v["daemon"].as_str(), v["committed_version"].as_str()), (Some("not-running"), Some("1.0.0")), "{v}");
    let v = run(&h, &["install", "--json", p110.to_str().unwrap()], 7);
    assert_eq!(v["outcome"], "not-running", "{v}");
    let v = run(&h, &["report", "--json"], 7);
    assert_eq!(v["outcome"], "not-running", "{v}");
}

/// `Report` on the bus: the daemon reads the host's facts (a Secure Boot
/// host locked down in integrity mode, a MOK key in `.machine`, a
/// tainted kernel, a hostile DMI string) and the committed build live;
/// any caller may read it (a report changes nothing), through the proxy
/// and through `milspecctl report`, as JSON that follows its schema and as
/// lines, nothing unprintable in either.
#[test]
fn the_report_method_gives_the_compliance_facts_to_any_caller() {
    let h = Host::new("1s");
    assert_eq!(code(&h.ctl(&["install", h.package("1.0.0").to_str().unwrap()])), 0);
    let root = h.f.path("root");
    let put = |rel: &str, b: &[u8]| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b).unwrap();
    };
    put("sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c", &[6, 0, 0, 0, 1]);
    put("sys/kernel/security/lockdown", b"none [integrity] confidentiality\n");
    put("sys/module/module/parameters/sig_enforce", b"N\n");
    put(
        "proc/keys",
        b"0a1b2c3d I------     1 perm 1f0b0000     0     0 keyring   .builtin_trusted_keys: 1\n\
          11111111 I------     1 perm 1f010000     0     0 asymmetri Debian Secure Boot CA: 6ccece7e: X509.rsa 7e []\n\
          0b1c2d3e I------     1 perm 1f0f0000     0     0 keyring   .machine: 1\n\
          33333333 I------     1 perm 1f010000     0     0 asymmetri Fleet modules 2027: a1b2c3d4: X509.rsa c3d4 []\n",
    );
    put("proc/sys/kernel/tainted", b"4608\n");
    put("sys/class/dmi/id/sys_vendor", b"Dell Inc.\n");
    put("sys/class/dmi/id/product_name", b"Latitude\x1b]0;owned\x07 \xe2\x80\xae Rugged\n");

    let conn = zbus::blocking::connection::Builder::address(h.bus.address.as_str()).unwrap().build().unwrap();
    let answer = milspec_interface::ManagerProxyBlocking::new(&conn).unwrap().report().unwrap();
    assert_printable("Report", answer.as_bytes());
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    schema_support::assert_valid("report", &v, "Report");
    assert_eq!(v["module_signing"]["enforcement"]["kind"], "lockdown", "{v}");
    assert_eq!(v["module_signing"]["keyrings"][1]["name"], ".machine", "{v}");
    assert_eq!(v["module_signing"]["keys"][1]["skid"], "a1b2c3d4", "{v}");
    let bits: Vec<u64> = v["taint"]["flags"].as_array().unwrap().iter().map(|f| f["bit"].as_u64().unwrap()).collect();
    assert_eq!((v["taint"]["value"].as_u64(), bits), (Some(4608), vec![9, 12]), "{v}");
    assert_eq!(v["host"]["sys_vendor"], "Dell Inc.", "{v}");
    assert_eq!(v["committed"]["version"], "1.0.0", "{v}");
    assert_eq!(v["live_module"]["committed_build"], true, "{v}");
    assert_eq!(v["live_module"]["sha256"].as_str().map(str::len), Some(64), "{v}");

    // As nobody, through milspecctl: the same facts.
    let o = h.nobody(&["report", "--json"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_output_printable("milspecctl report --json (nobody)", &o);
    let mine: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    schema_support::assert_follows(&mine, "milspecctl report --json");
    assert_eq!(mine["host"], v["host"]);
    assert_eq!(mine["live_module"], v["live_module"]);
    let o = h.nobody(&["report"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_output_printable("milspecctl report (nobody)", &o);
    let out = String::from_utf8_lossy(&o.stdout);
    for want in [
        "module signing: enforced: the kernel is locked down (integrity)\n",
        "secure boot:    on\n",
        "keyring:        .machine (1 keys)\n",
        "kernel key:     Fleet modules 2027 (skid a1b2c3d4, keyring unknown)\n",
        "taint:          4608 (WO)\n",
        "taint flag:     W (bit 9): kernel issued warning\n",
        "vendor:         Dell Inc.\n",
        "live module:    1.0.0 (the committed build)\n",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    assert!(h.log().lines().all(|l| !l.contains('\x1b')), "{}", h.log());
}

/// `milspecctl check` (not a terminal) shows the package's download and
/// the probation countdown as plain lines, then the outcome; `watch
/// --json` sees the download as `DownloadProgress` signals.
#[test]
fn check_shows_the_download_and_the_probation_countdown() {
    let h = Host::with_config("3s", "", |f| format!("[source]\nurl = \"file://{}\"\n", f.path("mirror").display()));
    let pkg = h.package("1.0.0");
    repo().args(["publish", "--mirror"]).arg(h.f.path("mirror")).arg("--key").arg(&h.key).arg(&pkg).assert().success();
    let watcher = h.ctl_cmd(&["watch", "--json", "--timeout", "30s"], false).stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let o = h.ctl(&["check"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    let at =
        |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("no {needle:?}: {out}"));
    let (start, end) = (at("downloading 1.0.0: 0% ("), at("downloading 1.0.0: 100% ("));
    let (countdown, committed) = (at("probation of 1.0.0: "), at("committed 1.0.0"));
    assert!(start < end && end < countdown && countdown < committed, "{out}");
    assert!(lines[countdown].ends_with(" s left"), "{out}");
    assert!(!out.contains('\r') && !out.contains('\x1b'), "no redrawing when stdout is not a terminal: {out:?}");
    let mut watcher = watcher;
    let _ = watcher.kill();
    let w = watcher.wait_with_output().unwrap();
    let events = schema_support::assert_valid_lines("bus-event", &String::from_utf8_lossy(&w.stdout), "watch --json");
    let last = events.iter().rfind(|e| e["name"] == "DownloadProgress").expect("DownloadProgress seen");
    assert_eq!(last["value"]["received"], last["value"]["total"], "{last}");
    assert_eq!(last["version"], "1.0.0");
}

/// After the commit, over the bus: a WARN naming the committed module is
/// a `CommittedFault` signal, a `fault` record and a metric, and (as
/// configured here, within 1 h of the commit) rolls back to the version
/// before, which blocklists the faulty one.
#[test]
fn a_fault_after_the_commit_is_signalled_and_rolled_back() {
    let mut h = Host::without_daemon("1s", "", |f| {
        format!("[metrics]\ntextfile = \"{}\"\n", f.path("metrics/milspecd.prom").display())
    });
    fs::create_dir_all(h.f.path("conf.d")).unwrap();
    fs::write(
        h.f.path("conf.d/50-after-commit.toml"),
        "[health]\nafter_commit_interval = \"1s\"\nafter_commit_rollback = \"1h\"\n",
    )
    .unwrap();
    h.start_daemon();
    for v in ["1.0.0", "1.1.0"] {
        let o = h.ctl(&["install", h.package(v).to_str().unwrap()]);
        assert_eq!(code(&o), 0, "{}", text(&o));
    }
    let mut watcher =
        h.ctl_cmd(&["watch", "--json", "--timeout", "60s"], false).stdout(Stdio::piped()).spawn().unwrap();
    let out = lines_of(watcher.stdout.take().unwrap());
    std::thread::sleep(Duration::from_millis(500));
    let mut kmsg = fs::OpenOptions::new().append(true).open(h.f.path("root/kmsg")).unwrap();
    std::io::Write::write_all(&mut kmsg, fake_kernel::warn_report("dell_milspec", 500_000_000).as_bytes()).unwrap();
    let seen = until(&out, "\"Committed\"", &h);
    let _ = watcher.kill();
    let _ = watcher.wait();
    let signals: Vec<serde_json::Value> = seen
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["type"] == "signal")
        .collect();
    let names: Vec<&str> = signals.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["CommittedFault", "Swapped", "Committed"], "{seen:?}");
    assert_eq!(signals[0]["version"], "1.1.0");
    let reason = signals[0]["reason"].as_str().unwrap();
    assert!(reason.contains("[dell_milspec]") && reason.ends_with("rolling back to the previous version"), "{reason}");
    assert_eq!(signals[2]["version"], "1.0.0");

    let s = h.status();
    assert_eq!(s["committed_version"], "1.0.0", "{s}");
    let history = h.json(&["history", "--json", "--limit", "3"]);
    let events: Vec<&str> = history.as_array().unwrap().iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(events, ["fault", "swapped", "committed"], "{history}");
    // The watch saw the fault and its rollback followed: both are its records.
    let actors: Vec<&str> = history.as_array().unwrap().iter().filter_map(|e| e["actor"]["kind"].as_str()).collect();
    assert_eq!(actors, ["watch", "watch", "watch"], "{history}");
    let blocked = h.ctl(&["status"]);
    assert!(String::from_utf8_lossy(&blocked.stdout).contains("1.1.0"), "{}", text(&blocked));
    let metrics = fs::read_to_string(h.f.path("metrics/milspecd.prom")).unwrap();
    assert!(metrics.lines().any(|l| l == "milspecd_committed_faults_total 1"), "{metrics}");
}
