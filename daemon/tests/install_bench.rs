//! Benchmark, not a gate (ignored by default): the time of one install
//! through the real `milspecd run` of a `fake-kernel` build on a fake
//! /proc,/sys tree, asked over a private `dbus-daemon` by `milspecctl
//! install`, from the call to its outcome (the daemon's own recovery,
//! staging, swap, the probation window, the commit and the status it
//! reports after the action). Versions 1.0.1, 1.0.2, ... are installed one
//! after the other over a committed 1.0.0; prints the median of N.
//!
//! ```sh
//! cargo test --locked -p milspecd --all-features --test install_bench -- --ignored --nocapture
//! ```
//! (the test build the other host tests use; add `--release` for an
//! optimised one, a separate build of several minutes.)
//! `INSTALL_BENCH_RUNS=N` sets N (default 20). See docs/benchmarks.md.
#![cfg(feature = "fake-kernel")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod attack_support;
mod common;

use std::fs;
use std::time::{Duration, Instant};

use attack_support::{ctl, show, Daemon, SystemBus};
use common::{Fixture, RELEASE};

fn median_ms(mut v: Vec<Duration>) -> f64 {
    v.sort();
    let n = v.len();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    if n % 2 == 1 {
        ms(v[n / 2])
    } else {
        (ms(v[n / 2 - 1]) + ms(v[n / 2])) / 2.0
    }
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn one_install_on_the_fake_kernel() {
    let runs: usize = std::env::var("INSTALL_BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let f = Fixture::new();
    let key = f.key("release", true);
    let (cfg, paths, conf) = f.fake_kernel_config();
    let probation = cfg.health.probation;
    let versions: Vec<String> = (0..=runs).map(|i| format!("1.0.{i}")).collect();
    let packages: Vec<_> = versions.iter().map(|v| f.pack(v, &[&key], &format!("{v}.mspkg"))).collect();

    let bus = SystemBus::start(f.dir.path());
    let log = f.path("daemon.log");
    let _d = Daemon::start(&conf, &bus, RELEASE, log.clone());

    let mut took = Vec::new();
    for (i, (v, pkg)) in versions.iter().zip(&packages).enumerate() {
        let t = Instant::now();
        let o = ctl(&bus, false, &["install", pkg.to_str().unwrap()]);
        let d = t.elapsed();
        assert!(o.status.success(), "install {v}: {}\n{}", show(&o), fs::read_to_string(&log).unwrap_or_default());
        let live = fs::read_to_string(paths.module_dir().join("version")).unwrap();
        assert_eq!(live.trim(), v, "install {v}: not live");
        // The first (1.0.0 onto an empty host) is the base, not a sample.
        if i > 0 {
            took.push(d);
        }
    }
    let min = took.iter().min().unwrap().as_secs_f64() * 1000.0;
    let max = took.iter().max().unwrap().as_secs_f64() * 1000.0;
    let med = median_ms(took);
    println!(
        "BENCH one install on the fake kernel: median {med:.1} ms of {runs} (range {min:.1}-{max:.1} ms); \
         without the {} ms probation window: {:.1} ms",
        probation.as_millis(),
        med - probation.as_secs_f64() * 1000.0
    );
}

/// What the daemon does on every heartbeat, timed: render the metrics
/// (with a `/proc/self` read for the `process_*` series) and write the
/// file atomically (temporary file, fsync, rename, fsync of the folder).
/// `METRICS_BENCH_RUNS=N` sets N (default 500).
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn render_and_write_one_metrics_file() {
    use milspecd::metrics::{self, Counters, Snapshot, TextfileWriter};
    use milspecd::worker::Published;
    let runs: usize = std::env::var("METRICS_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(500);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("milspecd.prom");
    let mut writer = TextfileWriter::new(Some(&path));
    let published = Published {
        committed_version: "1.1.0".into(),
        active_slot: "a".into(),
        committed_kernels: vec![RELEASE.into()],
        ..Published::default()
    };
    let (mut render, mut whole) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    let mut bytes = 0;
    for _ in 0..runs {
        let t0 = Instant::now();
        let snap = Snapshot::new(published.clone(), Counters::default(), true, metrics::unix_now()).with_process();
        bytes = metrics::render(&snap).len();
        render.push(t0.elapsed());
        let t0 = Instant::now();
        let snap = Snapshot::new(published.clone(), Counters::default(), true, metrics::unix_now()).with_process();
        writer.write(&snap);
        whole.push(t0.elapsed());
    }
    assert!(fs::read_to_string(&path).unwrap().contains("milspecd_heartbeat_timestamp_seconds"));
    println!(
        "BENCH metrics: {bytes} bytes; render with /proc/self read median {:.3} ms, render + atomic write median {:.3} ms (n={runs})",
        median_ms(render),
        median_ms(whole)
    );
}

/// The audit trail's cost: one chained, fsynced append (as every event
/// is written), and the whole chain's verification (`history --verify`)
/// across rotated files, in records per second.
#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn append_and_verify_the_history_chain() {
    use milspecd::history::{Actor, Event, EventKind, History, Verdict};
    let runs: usize = std::env::var("HISTORY_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000);
    let dir = tempfile::tempdir().unwrap();
    let history = History::new(dir.path());
    let mut appends = Vec::with_capacity(runs);
    for i in 0..runs {
        let event = Event::new(EventKind::Staged)
            .version(format!("1.{}.0", i % 1000))
            .slot("a")
            .kernel(RELEASE)
            .reason("a package verified and staged")
            .actor(Actor::Timer);
        let t0 = Instant::now();
        history.append(&event).unwrap();
        appends.push(t0.elapsed());
    }
    let files = history.rotated().unwrap().len() + 1;
    let t0 = Instant::now();
    let verdict = history.verify().unwrap();
    let took = t0.elapsed();
    let Verdict::Ok(v) = verdict else { panic!("{verdict:?}") };
    assert_eq!(v.records, runs as u64);
    println!(
        "BENCH history: {runs} chained records in {files} files; append (fsync) median {:.3} ms; verify {:.0} ms, {:.0} records/s",
        median_ms(appends),
        took.as_secs_f64() * 1000.0,
        runs as f64 / took.as_secs_f64()
    );
}
