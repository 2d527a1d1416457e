//! `milspecd run` as systemd sees it: the real daemon binary (fake kernel)
//! talks the sd_notify protocol to a datagram socket this test binds as
//! `NOTIFY_SOCKET`, pulls an update from a `file://` mirror, writes its
//! metrics file, and stops on SIGTERM. Plus `milspecd load-committed`'s
//! answers for modprobe.
#![cfg(feature = "fake-kernel")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use milspecd::config::Config;
use milspecd::engine::{Engine, InstallOptions, Outcome};
use milspecd::kernel::Kernel;
use milspecd::kernel_fake::FakeKernel;
use milspecd::kernel_paths::KernelPaths;

struct Host {
    f: Fixture,
    key: PathBuf,
    conf: PathBuf,
}

impl Host {
    fn new(extra: &str) -> Host {
        let f = Fixture::new();
        let key = f.key("release", true);
        let conf = f.path("milspecd.toml");
        fs::write(f.path("machine-id"), format!("{:032x}\n", 7)).unwrap();
        fs::write(
            &conf,
            f.daemon_config("3s")
                + &format!("[metrics]\ntextfile = \"{}\"\n{extra}", f.path("run/milspecd/milspecd.prom").display()),
        )
        .unwrap();
        Host { f, key, conf }
    }

    fn package(&self, version: &str) -> PathBuf {
        let out = self.f.pack(version, &[&self.key], &format!("{version}.mspkg"));
        out
    }

    fn cfg(&self) -> Config {
        Config::load(&self.conf, true).unwrap()
    }

    fn kernel(&self) -> FakeKernel {
        let cfg = self.cfg();
        FakeKernel::new(KernelPaths::from_config(&cfg.kernel), RELEASE, Default::default()).unwrap()
    }

    fn metrics(&self) -> String {
        fs::read_to_string(self.f.path("run/milspecd/milspecd.prom")).unwrap_or_default()
    }

    fn load_committed(&self, params: &[&str]) -> (i32, String) {
        let o = daemon()
            .args(["load-committed", "--config"])
            .arg(&self.conf)
            .arg("--")
            .args(params)
            .env("MILSPECD_FAKE_KERNEL", "1")
            .env("MILSPECD_FAKE_RELEASE", RELEASE)
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        (o.status.code().unwrap_or(-1), text)
    }
}

fn sample(metrics: &str, series: &str) -> Option<String> {
    metrics.lines().find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')).map(str::to_string))
}

/// Reads notify datagrams until `done` holds for what was received.
fn collect(sock: &UnixDatagram, msgs: &mut Vec<String>, limit: Duration, done: impl Fn(&[String]) -> bool) {
    let start = Instant::now();
    let mut buf = vec![0u8; 4096];
    while !done(msgs) {
        assert!(start.elapsed() < limit, "timed out; notifications so far: {msgs:#?}");
        if let Ok(n) = sock.recv(&mut buf) {
            msgs.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

fn statuses(msgs: &[String]) -> Vec<&str> {
    msgs.iter().flat_map(|m| m.lines()).filter_map(|l| l.strip_prefix("STATUS=")).collect()
}

fn spawn_run(h: &Host, sock: &Path, watchdog_usec: &str) -> Child {
    Command::new(assert_cmd::cargo::cargo_bin("milspecd"))
        .args(["run", "--config"])
        .arg(&h.conf)
        .env("NOTIFY_SOCKET", sock)
        .env("WATCHDOG_USEC", watchdog_usec)
        .env_remove("WATCHDOG_PID")
        .env_remove("JOURNAL_STREAM")
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/milspecd-test-bus")
        .env("MILSPECD_FAKE_KERNEL", "1")
        .env("MILSPECD_FAKE_RELEASE", RELEASE)
        .stdout(Stdio::null())
        .stderr(fs::File::create(h.f.path("daemon.log")).unwrap())
        .spawn()
        .unwrap()
}

#[test]
fn ready_status_watchdog_metrics_then_clean_stop() {
    let mirror = tempfile::tempdir().unwrap();
    let h = Host::new(&format!(
        "[source]\nurl = \"file://{}/\"\npoll_interval = \"1h\"\nmachine_id_file = \"{}\"\n",
        mirror.path().display(),
        "MACHINE_ID"
    ));
    let text = fs::read_to_string(&h.conf).unwrap().replace("MACHINE_ID", &h.f.path("machine-id").to_string_lossy());
    fs::write(&h.conf, text).unwrap();
    repo()
        .args(["publish", "--mirror"])
        .arg(mirror.path())
        .arg("--key")
        .arg(&h.key)
        .arg(h.package("1.1.0"))
        .assert()
        .success();

    let sock_path = h.f.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut child = spawn_run(&h, &sock_path, "600000");
    let log = || fs::read_to_string(h.f.path("daemon.log")).unwrap_or_default();

    let mut msgs = Vec::new();
    collect(&sock, &mut msgs, Duration::from_secs(40), |m| {
        statuses(m).iter().any(|s| s.starts_with("idle; committed 1.1.0 in slot"))
    });
    // Ready once, after recovery, saying that local control is missing.
    let ready: Vec<_> = msgs.iter().filter(|m| m.lines().any(|l| l == "READY=1")).collect();
    assert_eq!(ready.len(), 1, "{msgs:#?}");
    assert!(ready[0].contains("no system bus: local control unavailable"), "{}", ready[0]);
    let ready_at = msgs.iter().position(|m| m.contains("READY=1")).unwrap();
    assert!(msgs[..ready_at].iter().any(|m| m.contains("STATUS=recovering")), "{msgs:#?}");
    // The trial counts down, then the commit is the status.
    let st = statuses(&msgs);
    let countdown: Vec<u64> = st
        .iter()
        .filter_map(|s| s.strip_prefix("trial of 1.1.0, "))
        .filter_map(|s| s.split(' ').next()?.parse().ok())
        .collect();
    assert!(countdown.len() >= 2 && countdown.windows(2).all(|w| w[0] > w[1]), "{st:#?}");
    assert!(countdown[0] <= 3, "{st:#?}");
    // The poll shows as checking, then downloading (sampled: either may be brief).
    assert!(st.iter().any(|s| s.starts_with("checking mirror") || s.starts_with("downloading")), "{st:#?}");

    // Keep-alives every half of WATCHDOG_USEC (600 ms): about 5 in 1.5 s.
    let before = msgs.iter().filter(|m| m.trim() == "WATCHDOG=1").count();
    assert!(before >= 3, "{msgs:#?}");
    let mut later = Vec::new();
    let t0 = Instant::now();
    collect(&sock, &mut later, Duration::from_secs(5), |_| t0.elapsed() > Duration::from_millis(1500));
    let n = later.iter().filter(|m| m.trim() == "WATCHDOG=1").count();
    assert!((3..=6).contains(&n), "{n} keep-alives in 1.5 s: {later:#?}");

    let m = h.metrics();
    assert_eq!(sample(&m, "milspecd_up"), Some("1".into()), "{m}");
    assert_eq!(sample(&m, "milspecd_swaps_total"), Some("1".into()), "{m}");
    assert_eq!(sample(&m, "milspecd_commits_total"), Some("1".into()), "{m}");
    assert_eq!(sample(&m, "milspecd_rollbacks_total{reason=\"load\"}"), Some("0".into()), "{m}");
    assert_eq!(sample(&m, "milspecd_failures_total{reason=\"mirror\"}"), Some("0".into()), "{m}");
    assert_eq!(sample(&m, "milspecd_state{state=\"idle\"}"), Some("1".into()), "{m}");
    assert!(m.contains("committed_version=\"1.1.0\""), "{m}");
    for series in [
        "milspecd_last_poll_attempt_timestamp_seconds",
        "milspecd_last_poll_success_timestamp_seconds",
        "milspecd_index_expiry_timestamp_seconds",
        "milspecd_heartbeat_timestamp_seconds",
    ] {
        assert!(sample(&m, series).is_some(), "{series}: {m}");
    }

    // SIGTERM: STOPPING=1, exit 0, metrics say down.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    collect(&sock, &mut msgs, Duration::from_secs(10), |m| m.iter().any(|x| x.contains("STOPPING=1")));
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "did not exit after SIGTERM: {}", log());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!((status.code(), status.signal()), (Some(0), None), "{}", log());
    assert_eq!(sample(&h.metrics(), "milspecd_up"), Some("0".into()));
    let l = log();
    assert!(l.contains("SIGTERM: stopping"), "{l}");
}

#[test]
fn without_notify_socket_nothing_is_sent_and_run_still_works() {
    let h = Host::new("");
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("milspecd"))
        .args(["run", "--config"])
        .arg(&h.conf)
        .env_remove("NOTIFY_SOCKET")
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/milspecd-test-bus")
        .env("MILSPECD_FAKE_KERNEL", "1")
        .env("MILSPECD_FAKE_RELEASE", RELEASE)
        .stdout(Stdio::null())
        .stderr(fs::File::create(h.f.path("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while sample(&h.metrics(), "milspecd_up").is_none() {
        assert!(start.elapsed() < Duration::from_secs(20), "no metrics file");
        std::thread::sleep(Duration::from_millis(50));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(sample(&h.metrics(), "milspecd_state{state=\"idle\"}"), Some("1".into()));
}

#[test]
fn load_committed_for_modprobe() {
    let h = Host::new("");
    // Nothing committed yet: 3, so modprobe falls back to the system's module.
    let (code, text) = h.load_committed(&[]);
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("no committed slot"), "{text}");

    // Commit 1.0.0 with the engine (fake kernel), then unload it.
    let kernel = h.kernel();
    let pkg = h.package("1.0.0");
    {
        let mut e = Engine::open(h.cfg(), &kernel).unwrap();
        let o = e.install(fs::File::open(&pkg).unwrap(), InstallOptions::default()).unwrap();
        assert!(matches!(o, Outcome::Committed { .. }), "{o:?}");
    }
    let paths = KernelPaths::from_config(&h.cfg().kernel);
    kernel.unload(&paths, Duration::from_secs(1)).unwrap();
    assert!(!paths.module_dir().exists());

    let (code, text) = h.load_committed(&["mode5_level=2"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("loaded dell_milspec 1.0.0 from slot a"), "{text}");
    let read = |rel: &str| fs::read_to_string(paths.module_dir().join(rel)).unwrap_or_default().trim().to_string();
    assert_eq!(read("version"), "1.0.0");
    assert_eq!(read("parameters/mode5_level"), "2");

    // Already loaded (EEXIST): fine for modprobe.
    let (code, text) = h.load_committed(&[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("already loaded"), "{text}");

    // A malformed option loads nothing.
    kernel.unload(&paths, Duration::from_secs(1)).unwrap();
    let (code, text) = h.load_committed(&["mode5_level"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("expected NAME=VALUE"), "{text}");
    let (code, text) = h.load_committed(&["mode5_level=a b"]);
    assert_eq!(code, 1, "{text}");

    // A tampered module.ko is refused, never loaded.
    let ko = h.f.path("state/slots/a/module.ko");
    let mut bytes = fs::read(&ko).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&ko, bytes).unwrap();
    let (code, text) = h.load_committed(&[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("does not match its manifest"), "{text}");
    assert!(!paths.module_dir().exists(), "nothing was loaded");
}
