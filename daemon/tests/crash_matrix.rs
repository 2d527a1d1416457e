//! The crash matrix of the VM tier (`tests/vm/scenarios/engine-crash-matrix.sh`)
//! on the host: the real `milspecd run` of a `failpoints,fake-kernel` build
//! on a fake /proc,/sys tree is crashed (`FAILPOINTS=<step>=panic`) at each
//! durable step while installing a package over a committed one, then
//! started again; its recovery must leave exactly what the guest matrix
//! asserts: no trial, the committed module live and healthy, slots, state
//! and history that agree. One case per row of `MATRIX`, run in parallel.
#![cfg(all(feature = "failpoints", feature = "fake-kernel"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod attack_support;
mod common;

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use attack_support::{ctl, fingerprint, history_events, show, Fingerprint, SystemBus};
use common::{find, Fixture, RELEASE};
use milspecd::config::Config;
use milspecd::kernel_paths::KernelPaths;

/// What the package of a case is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pkg {
    /// 1.1.0: healthy, commits.
    Commits,
    /// 1.2.0: WARNs at load and is rolled back.
    Warns,
    /// 1.2.0 with a flipped payload byte: refused while staging.
    Flipped,
    /// 1.1.0 over a 1.0.0 that refuses to unload: refused, 1.0.0 kept.
    OverBusy,
}

/// (failpoint, package): the guest matrix, row for row.
const MATRIX: &[(&str, Pkg)] = &[
    ("install.after-stage", Pkg::Commits),
    ("install.after-checkpoint", Pkg::Commits),
    ("install.after-unload", Pkg::Commits),
    ("install.after-replace", Pkg::Commits),
    ("install.after-load", Pkg::Commits),
    ("install.after-swapped", Pkg::Commits),
    ("commit.after-save", Pkg::Commits),
    ("install.after-load", Pkg::Warns),
    ("rollback.after-intent", Pkg::Warns),
    ("rollback.after-unload", Pkg::Warns),
    ("install.staging", Pkg::Flipped),
    ("install.after-stage", Pkg::OverBusy),
    ("install.after-checkpoint", Pkg::OverBusy),
];

const LIMIT: Duration = Duration::from_secs(30);

struct Case {
    f: Fixture,
    key: PathBuf,
    conf: PathBuf,
    cfg: Config,
    paths: KernelPaths,
    faults: &'static str,
}

/// `milspecd run` with `env`; killed on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Case {
    fn new(pkg: Pkg) -> Case {
        let f = Fixture::new();
        let key = f.key("release", true);
        let (cfg, paths, conf) = f.fake_kernel_config();
        let faults = if pkg == Pkg::OverBusy { "1.0.0=busy,1.2.0=warn" } else { "1.2.0=warn" };
        Case { f, key, conf, cfg, paths, faults }
    }

    fn start(&self, bus: &SystemBus, failpoint: Option<&str>, log: &str) -> Daemon {
        let mut c = Command::new(assert_cmd::cargo::cargo_bin("milspecd"));
        c.args(["run", "--config"])
            .arg(&self.conf)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .env("MILSPECD_FAKE_KERNEL", "1")
            .env("MILSPECD_FAKE_RELEASE", RELEASE)
            .env("MILSPECD_FAKE_FAULTS", self.faults)
            .env_remove("FAILPOINTS")
            .stdout(Stdio::null())
            .stderr(fs::File::create(self.f.path(log)).unwrap());
        if let Some(point) = failpoint {
            c.env("FAILPOINTS", format!("{point}=panic"));
        }
        let d = Daemon(c.spawn().unwrap());
        let start = Instant::now();
        while !ctl(bus, false, &["status"]).status.success() {
            assert!(start.elapsed() < LIMIT, "milspecd did not come up: {}", self.log(log));
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    fn log(&self, name: &str) -> String {
        fs::read_to_string(self.f.path(name)).unwrap_or_default()
    }

    fn package(&self, pkg: Pkg) -> PathBuf {
        match pkg {
            Pkg::Commits | Pkg::OverBusy => self.f.pack("1.1.0", &[&self.key], "1.1.0.mspkg"),
            Pkg::Warns => self.f.pack("1.2.0", &[&self.key], "1.2.0.mspkg"),
            Pkg::Flipped => {
                let good = self.f.pack("1.2.0", &[&self.key], "1.2.0.mspkg");
                let mut bytes = fs::read(&good).unwrap();
                let ko = fs::read(self.f.path("m-1.2.0.ko")).unwrap();
                let at = find(&bytes, &ko) + ko.len() / 2;
                bytes[at] ^= 0x01;
                let out = self.f.path("1.2.0-flipped.mspkg");
                fs::write(&out, bytes).unwrap();
                out
            }
        }
    }

    fn live(&self) -> Option<String> {
        fs::read_to_string(self.paths.module_dir().join("version")).ok().map(|s| s.trim().to_string())
    }

    fn history(&self) -> Vec<String> {
        history_events(&self.cfg.paths.state_dir)
    }

    fn history_lines(&self) -> Vec<String> {
        fs::read_to_string(self.cfg.paths.state_dir.join("history.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn state(&self) -> Fingerprint {
        fingerprint(&self.cfg.paths.state_dir)
    }
}

/// One row: commit 1.0.0, crash at `point` installing `pkg`, restart, check.
fn run_case(point: &'static str, pkg: Pkg) {
    let what = format!("{point} ({pkg:?})");
    let c = Case::new(pkg);
    let bus = SystemBus::start(c.f.dir.path());

    // Base: 1.0.0 committed.
    {
        let _d = c.start(&bus, None, "base.log");
        let o = ctl(&bus, false, &["install", c.f.pack("1.0.0", &[&c.key], "1.0.0.mspkg").to_str().unwrap()]);
        assert!(o.status.success(), "{what}: base install of 1.0.0: {}\n{}", show(&o), c.log("base.log"));
        assert_eq!(c.live().as_deref(), Some("1.0.0"), "{what}: base");
    }
    let before = c.state();
    let hist_before = c.history_lines();

    // The crash.
    let package = c.package(pkg);
    let mut d = c.start(&bus, Some(point), "crash.log");
    let o = ctl(&bus, false, &["install", package.to_str().unwrap()]);
    let start = Instant::now();
    while d.0.try_wait().unwrap().is_none() {
        assert!(start.elapsed() < LIMIT, "{what}: milspecd did not crash: {}\n{}", show(&o), c.log("crash.log"));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        c.log("crash.log").contains(point),
        "{what}: the crash point was not reached: {}\n{}",
        show(&o),
        c.log("crash.log")
    );
    drop(d);

    // Recovery: a fresh start, then no trial left once it settles.
    let _d = c.start(&bus, None, "recover.log");
    let start = Instant::now();
    let report = loop {
        let r = milspecd::status::read(&c.cfg).unwrap();
        if r.trial.is_none() {
            break r;
        }
        assert!(start.elapsed() < LIMIT, "{what}: a trial is left: {:?}\n{}", r.trial, c.log("recover.log"));
        std::thread::sleep(Duration::from_millis(50));
    };
    let recover_log = c.log("recover.log");
    let live = c.live();
    assert_eq!(live, report.committed_version, "{what}: exactly one module, the committed one\n{recover_log}");
    let status = fs::read_to_string(c.paths.milspec_status()).unwrap();
    assert!(status.contains("state: ok"), "{what}: module healthy: {status}");
    let hist = c.history();
    let lines = c.history_lines();
    let last = lines.last().cloned().unwrap_or_default();
    let committed_110 =
        lines.iter().any(|l| l.contains(r#""event":"committed""#) && l.contains(r#""version":"1.1.0""#));

    match pkg {
        Pkg::Commits => {
            if live.as_deref() == Some("1.1.0") {
                assert!(
                    last.contains(r#""event":"committed""#) && last.contains(r#""version":"1.1.0""#),
                    "{what}: history ends in the commit of 1.1.0: {last}"
                );
            } else {
                assert_eq!(live.as_deref(), Some("1.0.0"), "{what}: 1.0.0 kept");
                assert!(!committed_110, "{what}: history says 1.1.0 was committed but 1.0.0 is live: {hist:?}");
            }
        }
        Pkg::Warns => {
            assert_eq!(live.as_deref(), Some("1.0.0"), "{what}: rolled back to 1.0.0\n{recover_log}");
            assert!(report.blocklist.iter().any(|b| b.version.to_string() == "1.2.0"), "{what}: 1.2.0 blocklisted");
            assert!(last.contains(r#""event":"rolled-back""#), "{what}: history ends in the rollback: {last}");
        }
        Pkg::Flipped | Pkg::OverBusy => {
            if pkg == Pkg::OverBusy {
                assert_eq!(live.as_deref(), Some("1.0.0"), "{what}: busy 1.0.0 kept");
            }
            let after = c.state();
            attack_support::assert_unchanged(&what, &before, &after, &[]);
            assert_eq!(lines[..hist_before.len().min(lines.len())], hist_before[..], "{what}: history rewritten");
            let added: Vec<&str> = hist[hist_before.len()..].iter().map(String::as_str).collect();
            let want: &[&str] =
                if pkg == Pkg::OverBusy && point == "install.after-checkpoint" { &["recovered"] } else { &[] };
            assert_eq!(added, want, "{what}: events appended");
        }
    }
}

#[test]
fn crash_at_every_durable_step_recovers() {
    let t = Instant::now();
    let mut failed = Vec::new();
    for chunk in MATRIX.chunks(4) {
        let handles: Vec<_> =
            chunk.iter().map(|&(point, pkg)| (point, pkg, std::thread::spawn(move || run_case(point, pkg)))).collect();
        for (point, pkg, h) in handles {
            if h.join().is_err() {
                failed.push(format!("{point} ({pkg:?})"));
            }
        }
    }
    println!(
        "crash matrix: {}/{} crash points recovered ({:.1} s)",
        MATRIX.len() - failed.len(),
        MATRIX.len(),
        t.elapsed().as_secs_f64()
    );
    assert!(failed.is_empty(), "crash points not recovered: {failed:?}");
}
