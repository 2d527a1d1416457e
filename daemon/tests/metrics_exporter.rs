//! The metrics as Prometheus sees them: `promtool check metrics` on the
//! rendered text, and a real `prometheus-node-exporter` (textfile collector
//! only, on 127.0.0.1) serving the file a real `milspecd run` writes (fake
//! kernel, a private dbus-daemon, a `file://` mirror): the values read
//! back from its `/metrics`, a heartbeat that moves while the daemon runs
//! and stops once it is killed (-9), and `milspecd metrics-down` setting
//! `milspecd_up 0`.
//!
//! Needs `promtool` (Debian package `prometheus`) and
//! `prometheus-node-exporter`; without them outside CI the tests say so
//! and pass, in CI (`CI=true`) they fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{full_snapshot, have};
use milspecd::metrics::{self, Counters, Snapshot};
use milspecd::reason_class::{FailureClass, RollbackClass};
use milspecd::worker::Published;

/// `promtool check metrics` on `text`: its complaints, if any.
fn promtool(text: &str) -> Result<(), String> {
    let mut c = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    if o.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(said)
    }
}

#[test]
fn promtool_finds_nothing_to_fix_in_the_rendered_metrics() {
    if !have("promtool", "prometheus") {
        return;
    }
    let full = full_snapshot();
    assert!(full.process.is_some());
    let text = metrics::render(&full);
    for series in ["milspecd_available_info", "milspecd_rollout_next_wave", "process_max_fds", "kernel_without_build"] {
        assert!(text.contains(series), "{series} is exercised: {text}");
    }
    promtool(&text).unwrap_or_else(|e| panic!("promtool check metrics:\n{e}\n{text}"));
    // The bare minimum (nothing polled, no process read) too.
    let bare = Snapshot::new(Published::default(), Counters::default(), false, 0.0);
    promtool(&metrics::render(&bare)).unwrap_or_else(|e| panic!("promtool check metrics:\n{e}"));
    // And it does complain about a file that breaks the conventions (a
    // test that cannot fail is no test).
    assert!(promtool("# HELP x_seconds_total y\n# TYPE x_seconds_total gauge\nx_seconds_total 1\n").is_err());
}

#[cfg(feature = "fake-kernel")]
mod exporter {
    use super::*;
    use common::bus::SystemBus;
    use common::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    /// A child process killed and reaped on drop.
    struct Running(Child);

    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// node_exporter's `/metrics` body, or `None` while it does not answer.
    fn scrape(port: u16) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).ok()?;
        let (head, body) = raw.split_once("\r\n\r\n")?;
        (head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200")).then(|| body.to_string())
    }

    /// A sample's value, as node_exporter prints it (it may use exponents).
    fn value(body: &str, series: &str) -> Option<f64> {
        body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    fn until<T>(what: &str, limit: Duration, log: &dyn Fn() -> String, mut f: impl FnMut() -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(start.elapsed() < limit, "timed out waiting for {what}; daemon log:\n{}", log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn start_exporter(dir: &Path, port: u16) -> Running {
        let c = Command::new("prometheus-node-exporter")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(["--collector.disable-defaults", "--collector.textfile"])
            .arg(format!("--collector.textfile.directory={}", dir.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Running(c)
    }

    #[test]
    fn node_exporter_serves_the_daemon_metrics_and_a_kill_stops_the_heartbeat() {
        if !have("prometheus-node-exporter", "prometheus-node-exporter") || !have("promtool", "prometheus") {
            return;
        }
        let f = Fixture::new();
        fs::set_permissions(f.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let key = f.key("release", true);
        let mirror = f.path("mirror");
        let textfiles = f.path("textfile");
        fs::create_dir_all(&mirror).unwrap();
        fs::create_dir_all(&textfiles).unwrap();
        fs::write(f.path("machine-id"), format!("{:032x}\n", 9)).unwrap();
        let conf = f.path("milspecd.toml");
        fs::write(
            &conf,
            f.daemon_config("1s")
                + &format!(
                    "[metrics]\ntextfile = \"{}\"\nheartbeat = \"1s\"\n\
                     [source]\nurl = \"file://{}/\"\npoll_interval = \"1h\"\nmachine_id_file = \"{}\"\n",
                    textfiles.join("milspecd.prom").display(),
                    mirror.display(),
                    f.path("machine-id").display(),
                ),
        )
        .unwrap();
        let pkg = f.pack("1.1.0", &[&key], "1.1.0.mspkg");
        repo().args(["publish", "--mirror"]).arg(&mirror).arg("--key").arg(&key).arg(&pkg).assert().success();

        let port = free_port();
        let _exporter = start_exporter(&textfiles, port);
        let mut bus = SystemBus::start(f.dir.path());
        let log_path = f.path("daemon.log");
        let log = || fs::read_to_string(&log_path).unwrap_or_default();
        let mut milspecd = Running(
            Command::new(assert_cmd::cargo::cargo_bin("milspecd"))
                .args(["run", "--config"])
                .arg(&conf)
                .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
                .env_remove("NOTIFY_SOCKET")
                .env("MILSPECD_FAKE_KERNEL", "1")
                .env("MILSPECD_FAKE_RELEASE", RELEASE)
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log_path).unwrap())
                .spawn()
                .unwrap(),
        );

        // The first poll pulls 1.1.0, its 1 s trial commits it.
        let body = until("the commit, through node_exporter", Duration::from_secs(60), &log, || {
            scrape(port).filter(|b| {
                value(b, "milspecd_commits_total") == Some(1.0) && b.contains("milspecd_state{state=\"idle\"} 1")
            })
        });
        assert_eq!(value(&body, "node_textfile_scrape_error"), Some(0.0), "{body}");
        assert_eq!(value(&body, "milspecd_up"), Some(1.0), "{body}");
        assert_eq!(value(&body, "milspecd_swaps_total"), Some(1.0), "{body}");
        assert!(body.contains("committed_version=\"1.1.0\""), "{body}");
        assert_eq!(value(&body, &format!("milspecd_committed_kernel_info{{kernel_release=\"{RELEASE}\"}}")), Some(1.0));
        assert_eq!(value(&body, "milspecd_kernel_build_missing"), Some(0.0), "{body}");
        for class in FailureClass::ALL {
            let s = format!("milspecd_failures_total{{reason=\"{}\"}}", class.as_str());
            assert_eq!(value(&body, &s), Some(0.0), "{s}: {body}");
        }
        for class in RollbackClass::ALL {
            let s = format!("milspecd_rollbacks_total{{reason=\"{}\"}}", class.as_str());
            assert_eq!(value(&body, &s), Some(0.0), "{s}: {body}");
        }
        let now = metrics::unix_now();
        let attempt = value(&body, "milspecd_last_poll_attempt_timestamp_seconds").expect("attempt");
        let success = value(&body, "milspecd_last_poll_success_timestamp_seconds").expect("success");
        assert!(attempt <= success + 1.0 && (now - success).abs() < 120.0, "{attempt} {success} {now}");
        let expiry = value(&body, "milspecd_index_expiry_timestamp_seconds").expect("index expiry");
        assert!(expiry > now, "the index just published has not expired: {expiry}");
        let rss = value(&body, "process_resident_memory_bytes{daemon=\"milspecd\"}").expect("the daemon's rss");
        assert!(rss > 1.0e5, "{rss}");
        let started = value(&body, "process_start_time_seconds{daemon=\"milspecd\"}").expect("start time");
        assert!((now - started).abs() < 120.0, "{started} {now}");
        assert!(value(&body, "process_open_fds{daemon=\"milspecd\"}").is_some_and(|n| n >= 3.0), "{body}");
        // node_exporter's own process_* series stay beside the daemon's.
        assert!(value(&body, "process_resident_memory_bytes").is_some(), "{body}");
        // What the daemon wrote passes promtool as it is.
        let file = fs::read_to_string(textfiles.join("milspecd.prom")).unwrap();
        promtool(&file).unwrap_or_else(|e| panic!("promtool check metrics on the daemon's file:\n{e}\n{file}"));

        // Idle, the heartbeat still moves (every [metrics] heartbeat, 1 s here).
        let beat = value(&body, "milspecd_heartbeat_timestamp_seconds").expect("heartbeat");
        until("the heartbeat to move while idle", Duration::from_secs(10), &log, || {
            scrape(port).and_then(|b| value(&b, "milspecd_heartbeat_timestamp_seconds")).filter(|b| *b > beat)
        });

        // kill -9: no clean stop, so up stays 1, but the heartbeat freezes.
        let _ = milspecd.0.kill();
        let _ = milspecd.0.wait();
        let frozen = value(&scrape(port).unwrap(), "milspecd_heartbeat_timestamp_seconds").unwrap();
        std::thread::sleep(Duration::from_secs(3));
        let body = scrape(port).unwrap();
        assert_eq!(value(&body, "milspecd_heartbeat_timestamp_seconds"), Some(frozen), "{body}");
        assert_eq!(value(&body, "milspecd_up"), Some(1.0), "nothing marked it down yet: {body}");
        assert!(metrics::unix_now() - frozen >= 3.0, "stale by the heartbeat's age");

        // What the unit's ExecStopPost= runs: up 0, every other value kept.
        daemon().args(["metrics-down", "--config"]).arg(&conf).assert().success();
        let body = scrape(port).unwrap();
        assert_eq!(value(&body, "milspecd_up"), Some(0.0), "{body}");
        assert_eq!(value(&body, "milspecd_heartbeat_timestamp_seconds"), Some(frozen), "{body}");
        assert_eq!(value(&body, "milspecd_commits_total"), Some(1.0), "{body}");
        assert_eq!(value(&body, "node_textfile_scrape_error"), Some(0.0), "{body}");
        bus.stop();
    }
}
