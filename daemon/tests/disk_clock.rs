//! Disk and clock faults, against the real engine on the fake kernel:
//!
//! - the state folder on a full filesystem (a 1 MiB tmpfs) and on a
//!   read-only one: a clear error, the state and history left byte for byte
//!   as they were, the old module still live, and the same engine installs
//!   again once there is room;
//! - a wall clock jump during probation (libfaketime under the real
//!   `milspecd run`) neither commits the trial early nor holds it late:
//!   windows run on the monotonic clock;
//! - index expiry decided on the wall clock only, as an input: a clock
//!   jumped back or forward refuses or accepts exactly by the rules, and a
//!   refusal leaves the accepted index in place.
//!
//! The mounts need root (as in CI); without it those tests say so and pass.
#![cfg(feature = "fake-kernel")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use milspec_format::testkit::FakeKo;
use milspecd::config::{Config, SourceConfig};
use milspecd::engine::{Engine, InstallOptions, Outcome};
use milspecd::kernel_fake::FakeKernel;
use milspecd::kernel_paths::KernelPaths;
use milspecd::mirror::{MirrorError, Poller};
use milspecd::state::StateFile;

/// Skips a test that mounts filesystems when not run as root.
macro_rules! require_root {
    () => {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: this test mounts a tmpfs and needs root (CI runs it as root)");
            return;
        }
    };
}

/// A tmpfs mounted for the test; unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs on {}", dir.display());
        Tmpfs { dir: dir.to_path_buf() }
    }

    fn remount(&self, opt: &str) {
        let st = Command::new("mount").args(["-o", &format!("remount,{opt}")]).arg(&self.dir).status().unwrap();
        assert!(st.success(), "remount {opt} {}", self.dir.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// A host: keys, a fake kernel tree and a config whose state folder is `state`.
struct Host {
    f: Fixture,
    key: PathBuf,
    paths: KernelPaths,
    cfg: Config,
}

impl Host {
    fn new(f: Fixture, state: &Path) -> Host {
        let key = f.key("release", true);
        let paths = KernelPaths::under(&f.path("root"), "dell_milspec");
        let mut cfg = Config::default();
        cfg.trust.keys_dir = f.path("trust");
        cfg.paths.state_dir = state.to_path_buf();
        cfg.health.probation = Duration::from_secs(1);
        cfg.health.checks_dir = f.path("checks");
        // Never the host's node_exporter folder.
        cfg.metrics.textfile = f.path("metrics/milspecd.prom");
        cfg.kernel.proc = paths.proc.clone();
        cfg.kernel.sys = paths.sys.clone();
        cfg.kernel.kmsg = paths.kmsg.clone();
        Host { f, key, paths, cfg }
    }

    fn kernel(&self) -> FakeKernel {
        FakeKernel::new(self.paths.clone(), RELEASE, BTreeMap::new()).unwrap()
    }

    /// A package of `version` whose module carries `padding` extra bytes.
    fn package(&self, version: &str, padding: usize) -> PathBuf {
        let ko = self.f.ko(&format!("m-{version}.ko"), FakeKo { version, padding, ..FakeKo::default() });
        let out = self.f.path(&format!("{version}.mspkg"));
        repo()
            .args(["pack", "--version", version, "--module"])
            .arg(&ko)
            .arg("--key")
            .arg(&self.key)
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        out
    }

    fn live(&self) -> Option<String> {
        fs::read_to_string(self.paths.module_dir().join("version")).ok().map(|s| s.trim().to_string())
    }
}

fn install(e: &mut Engine<'_>, pkg: &Path) -> Result<Outcome, String> {
    match e.install(fs::File::open(pkg).unwrap(), InstallOptions::default()) {
        Ok(Outcome::Rejected { reason }) => Err(reason.to_string()),
        Ok(o) => Ok(o),
        Err(err) => Err(err.to_string()),
    }
}

/// Fills the filesystem of `dir` with a file `filler` until it is full.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let p = dir.join("filler");
    let mut f = fs::File::create(&p).unwrap();
    let chunk = vec![0x5a; 16 * 1024];
    loop {
        match f.write_all(&chunk).and_then(|()| f.sync_all()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::StorageFull => break,
            Err(e) => panic!("filling {}: {e}", p.display()),
        }
    }
    drop(f);
    p
}

#[test]
fn full_state_filesystem_refuses_cleanly_and_keeps_everything() {
    require_root!();
    let f = Fixture::new();
    let fs_ = Tmpfs::mount(&f.path("fs"), "1m");
    let state = fs_.dir.join("state");
    let h = Host::new(f, &state);
    let kernel = h.kernel();
    let v1 = h.package("1.0.0", 0);
    // Larger than the whole filesystem: the disk fills in the middle of staging.
    let huge = h.package("1.1.0", 1536 * 1024);
    let small = h.package("1.1.1", 0);

    // One engine for the whole test, as in the daemon.
    let mut e = Engine::open(h.cfg.clone(), &kernel).unwrap();
    assert!(matches!(install(&mut e, &v1), Ok(Outcome::Committed { .. })));
    let before = snapshot(&state);

    let err = install(&mut e, &huge).expect_err("a package larger than the disk must be refused");
    eprintln!("full during staging: {err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(snapshot(&state), before, "staging into a full disk changed the state folder");
    assert_eq!(h.live().as_deref(), Some("1.0.0"));

    // Now the disk is full before anything is written.
    let filler = fill(&fs_.dir);
    let err = install(&mut e, &small).expect_err("an install on a full disk must be refused");
    eprintln!("full before install: {err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(snapshot(&state), before, "an install on a full disk changed the state folder");
    assert_eq!(h.live().as_deref(), Some("1.0.0"));
    // Read-only commands still answer.
    let conf = h.f.path("milspecd.toml");
    fs::write(&conf, h.cfg.to_toml()).unwrap();
    daemon().args(["status", "--config"]).arg(&conf).assert().success().stdout(predicates::str::contains("1.0.0"));

    // Room again: the same engine installs.
    fs::remove_file(filler).unwrap();
    assert!(matches!(install(&mut e, &small), Ok(Outcome::Committed { .. })), "no install after the disk had room");
    assert_eq!(h.live().as_deref(), Some("1.1.1"));
}

#[test]
fn read_only_state_filesystem_refuses_cleanly_and_keeps_everything() {
    require_root!();
    let f = Fixture::new();
    let fs_ = Tmpfs::mount(&f.path("fs"), "4m");
    let state = fs_.dir.join("state");
    let h = Host::new(f, &state);
    let kernel = h.kernel();
    let v1 = h.package("1.0.0", 0);
    let v2 = h.package("1.1.0", 0);
    {
        let mut e = Engine::open(h.cfg.clone(), &kernel).unwrap();
        assert!(matches!(install(&mut e, &v1), Ok(Outcome::Committed { .. })));
    }
    let before = snapshot(&state);
    fs_.remount("ro");

    let Err(err) = Engine::open(h.cfg.clone(), &kernel) else { panic!("a read-only state folder must be refused") };
    let err = err.to_string();
    eprintln!("read-only: {err}");
    assert!(err.contains("Read-only file system") && err.contains(&state.display().to_string()), "{err}");
    assert_eq!(snapshot(&state), before);
    assert_eq!(h.live().as_deref(), Some("1.0.0"));
    let conf = h.f.path("milspecd.toml");
    fs::write(&conf, h.cfg.to_toml()).unwrap();
    daemon().args(["status", "--config"]).arg(&conf).assert().success().stdout(predicates::str::contains("1.0.0"));

    fs_.remount("rw");
    let mut e = Engine::open(h.cfg.clone(), &kernel).unwrap();
    assert!(matches!(install(&mut e, &v2), Ok(Outcome::Committed { .. })));
    assert_eq!(h.live().as_deref(), Some("1.1.0"));
}

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// `milspecd run` on the fake kernel, polling a file:// mirror, with its
/// wall clock (only) shifted by the offset written in `clock`.
struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_daemon(h: &Host, conf: &Path, clock: &Path, log: &Path) -> Daemon {
    let child = Command::new(assert_cmd::cargo::cargo_bin("milspecd"))
        .args(["run", "--config"])
        .arg(conf)
        .env("MILSPECD_FAKE_KERNEL", "1")
        .env("MILSPECD_FAKE_RELEASE", RELEASE)
        .env("DBUS_SYSTEM_BUS_ADDRESS", format!("unix:path={}", h.f.path("no-bus").display()))
        .env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME_TIMESTAMP_FILE", clock)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Daemon { child }
}

fn wait_for(what: &str, log: &Path, limit: Duration, mut cond: impl FnMut() -> bool) -> Instant {
    let start = Instant::now();
    loop {
        if cond() {
            return Instant::now();
        }
        assert!(
            start.elapsed() < limit,
            "timed out waiting for {what}; log:\n{}",
            fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The time of the last `event` record of `version` in the history.
fn event_at(history: &Path, event: &str, version: &str) -> Option<time::OffsetDateTime> {
    let text = fs::read_to_string(history).ok()?;
    text.lines().rev().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        if v["event"] != event || v["version"] != version {
            return None;
        }
        time::OffsetDateTime::parse(v["at"].as_str()?, &time::format_description::well_known::Rfc3339).ok()
    })
}

/// `at`, written under a wall clock that was either real or shifted by
/// `days`, taken back to the real clock (the two are 30 days apart, so the
/// nearer one is the one it was written under).
fn unshifted(at: time::OffsetDateTime, days: i64) -> time::OffsetDateTime {
    let shift = time::Duration::days(days);
    let now = time::OffsetDateTime::now_utc();
    if (at - shift - now).abs() < (at - now).abs() {
        at - shift
    } else {
        at
    }
}

#[test]
fn wall_clock_jumps_neither_shorten_nor_stretch_probation() {
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: apt-get install faketime (tests/run-all.sh installs it)"
    );
    let f = Fixture::new();
    let state = f.path("state");
    let mut h = Host::new(f, &state);
    const WINDOW: Duration = Duration::from_secs(4);
    h.cfg.health.probation = WINDOW;
    let mirror = h.f.path("mirror");
    fs::write(h.f.path("machine-id"), "0123456789abcdef0123456789abcdef\n").unwrap();
    h.cfg.source = Some(SourceConfig {
        url: format!("file://{}", mirror.display()),
        poll_interval: Duration::from_secs(1),
        machine_id_file: h.f.path("machine-id"),
        ..SourceConfig::default()
    });
    let conf = h.f.path("milspecd.toml");
    fs::write(&conf, h.cfg.to_toml()).unwrap();
    let clock = h.f.path("clock");
    let history = state.join("history.jsonl");

    // Forward by 30 days, then back by 30 days from the real time.
    for (version, jump, days) in [("1.0.0", "+30d", 30i64), ("1.1.0", "-30d", -30)] {
        let pkg = h.package(version, 0);
        repo().args(["publish", "--mirror"]).arg(&mirror).arg("--key").arg(&h.key).arg(&pkg).assert().success();
        fs::write(&clock, "+0\n").unwrap();
        let log = h.f.path(&format!("daemon-{version}.log"));
        let _d = run_daemon(&h, &conf, &clock, &log);
        wait_for(&format!("{version} live"), &log, Duration::from_secs(60), || h.live().as_deref() == Some(version));
        fs::write(&clock, format!("{jump}\n")).unwrap();
        wait_for(&format!("{version} committed"), &log, Duration::from_secs(60), || {
            StateFile::new(&state).load().is_ok_and(|s| s.committed.is_some() && s.trial.is_none())
                && event_at(&history, "committed", version).is_some()
                && h.live().as_deref() == Some(version)
        });
        // The window as the daemon lived it, from its own records (swapped
        // as the window starts, committed as it ends), each taken back to
        // the real clock: how promptly this test looked does not count.
        let swapped = event_at(&history, "swapped", version).expect("a swapped record");
        let committed = event_at(&history, "committed", version).expect("a committed record");
        let took: Duration = (unshifted(committed, days) - unshifted(swapped, days)).try_into().unwrap_or_default();
        eprintln!("{version}: wall clock {jump} during a {WINDOW:?} probation: committed {took:?} after it went live");
        assert!(
            took >= WINDOW - Duration::from_millis(250),
            "{jump}: committed early, {took:?} into a {WINDOW:?} window"
        );
        assert!(took <= WINDOW + Duration::from_secs(5), "{jump}: committed late, {took:?} into a {WINDOW:?} window");
        // The jump did reach the daemon: its last history record is dated by the shifted clock.
        let text = fs::read_to_string(&history).unwrap();
        let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        let at =
            time::OffsetDateTime::parse(last["at"].as_str().unwrap(), &time::format_description::well_known::Rfc3339)
                .unwrap();
        let shift = (at - time::OffsetDateTime::now_utc()).whole_days();
        assert!((shift - days).abs() <= 1, "the daemon's wall clock was not shifted by {days} days: {at}");
    }
}

#[test]
fn index_expiry_follows_the_wall_clock_given_and_keeps_the_accepted_index() {
    let f = Fixture::new();
    let state = f.path("state");
    let mut h = Host::new(f, &state);
    let mirror = h.f.path("mirror");
    h.cfg.source =
        Some(SourceConfig { url: format!("file://{}", mirror.display()), attempts: 1, ..SourceConfig::default() });
    let pkg = h.package("1.0.0", 0);
    repo().args(["publish", "--mirror"]).arg(&mirror).arg("--key").arg(&h.key).arg(&pkg).assert().success();
    // The daemon opens (and makes) its state folder before it polls.
    fs::create_dir_all(&state).unwrap();
    let poller = Poller::new(&h.cfg).unwrap();

    let index_text = fs::read(mirror.join("index.json")).unwrap();
    let published = milspec_format::index::read_unverified(&index_text).unwrap();
    let (created, expires) = (published.created, published.expires);
    let hour = time::Duration::hours(1);

    let (v, _) = poller.fetch_index(created + hour).unwrap();
    assert_eq!(v.index.version, published.version);
    let accepted = snapshot(&state);

    // Jumps that stay inside the rules are accepted, whatever their size.
    for now in [created - time::Duration::hours(23), created, expires - time::Duration::seconds(1)] {
        poller.fetch_index(now).unwrap_or_else(|e| panic!("refused at {now}: {e}"));
    }
    // Past expiry, or more than a day before the index was signed: refused,
    // with the reason, and the accepted index stays.
    for (now, want) in [
        (expires, "expired"),
        (expires + time::Duration::days(365), "expired"),
        (created - time::Duration::hours(25), "clock is behind"),
    ] {
        let e = poller.fetch_index(now).expect_err("must be refused");
        assert!(matches!(e, MirrorError::Index { .. }), "{e}");
        assert!(e.to_string().contains(want), "{e} !~ {want}");
        assert_eq!(
            snapshot(&state).keys().collect::<Vec<_>>(),
            accepted.keys().collect::<Vec<_>>(),
            "a refused index changed the stored one"
        );
        assert_eq!(snapshot(&state).get(Path::new("mirror/index.json")), accepted.get(Path::new("mirror/index.json")));
    }
    // Back to a sane clock: accepted again.
    poller.fetch_index(created + hour).unwrap();
}
