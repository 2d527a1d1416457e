//! Helpers for the attack matrix: a runner that executes every row (in
//! parallel, each in its own thread) and prints the summary table, a
//! fingerprint of a state folder to prove "nothing changed", and a host
//! running the real `milspecd run` on the real Debian system-bus
//! configuration (`/usr/share/dbus-1/system.conf`) plus the shipped policy.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use milspec_format::Sha256Digest;

/// One attack class and the test that shows it refused.
pub struct Row {
    pub class: &'static str,
    pub attack: &'static str,
    /// `None`: proven by another test file (named in `elsewhere`).
    pub run: Option<fn()>,
    pub elsewhere: &'static str,
}

/// Runs every row, at most `parallel` at a time; prints the table; panics
/// naming the rows that failed. `ATTACK=substring` runs only matching rows.
pub fn run_matrix(rows: &[Row], parallel: usize) {
    let only = std::env::var("ATTACK").unwrap_or_default();
    let selected: Vec<&Row> = rows.iter().filter(|r| r.class.contains(only.as_str())).collect();
    let mut results: Vec<(&Row, Option<(bool, Duration)>)> = Vec::new();
    for chunk in selected.chunks(parallel.max(1)) {
        let handles: Vec<_> = chunk
            .iter()
            .map(|row| {
                let run = row.run;
                let h = run.map(|f| {
                    std::thread::Builder::new()
                        .name(row.class.to_string())
                        .spawn(move || {
                            let t = Instant::now();
                            f();
                            t.elapsed()
                        })
                        .unwrap()
                });
                (*row, h)
            })
            .collect();
        for (row, h) in handles {
            let r = h.map(|h| match h.join() {
                Ok(d) => (true, d),
                Err(_) => (false, Duration::ZERO),
            });
            results.push((row, r));
        }
    }
    let ran: Vec<_> = results.iter().filter_map(|(row, r)| r.map(|r| (row, r))).collect();
    let passed = ran.iter().filter(|(_, (ok, _))| *ok).count();
    println!("\n| attack class | attack | result |");
    println!("|---|---|---|");
    for (row, r) in &results {
        let result = match r {
            Some((true, d)) => format!("refused, nothing changed ({:.1} s)", d.as_secs_f64()),
            Some((false, _)) => "FAILED".to_string(),
            None => format!("see {}", row.elsewhere),
        };
        println!("| {} | {} | {} |", row.class, row.attack, result);
    }
    println!("\nAttack matrix {passed}/{}", ran.len());
    let failed: Vec<&str> = ran.iter().filter(|(_, (ok, _))| !ok).map(|(row, _)| row.class).collect();
    assert!(failed.is_empty(), "attacks not refused cleanly: {failed:?}");
}

/// Every file under a state folder with its hash, but the history (which
/// records refusals) and the lock file.
pub type Fingerprint = BTreeMap<String, Sha256Digest>;

pub fn fingerprint(dir: &Path) -> Fingerprint {
    fn walk(root: &Path, dir: &Path, out: &mut Fingerprint) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if rel.starts_with("history.jsonl") || rel == "lock" {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                out.insert(format!("{rel}/"), Sha256Digest::of(b""));
                walk(root, &p, out);
            } else {
                out.insert(rel, Sha256Digest::of(&fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Fingerprint::new();
    walk(dir, dir, &mut out);
    out
}

/// `after` equals `before` but for paths starting with one of `except`.
pub fn assert_unchanged(what: &str, before: &Fingerprint, after: &Fingerprint, except: &[&str]) {
    let keep = |m: &Fingerprint| -> Fingerprint {
        m.iter().filter(|(k, _)| !except.iter().any(|e| k.starts_with(e))).map(|(k, v)| (k.clone(), *v)).collect()
    };
    let (b, a) = (keep(before), keep(after));
    let changed: Vec<&String> = b
        .keys()
        .chain(a.keys())
        .filter(|k| b.get(*k) != a.get(*k))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(changed.is_empty(), "{what}: the state folder changed: {changed:?}");
}

/// The `event` of every history line.
pub fn history_events(state_dir: &Path) -> Vec<String> {
    fs::read_to_string(state_dir.join("history.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Since `before` events: nothing but refusals were recorded.
pub fn assert_only_refusals(what: &str, state_dir: &Path, before: usize) {
    let ev = history_events(state_dir);
    let new = &ev[before.min(ev.len())..];
    assert!(new.iter().all(|e| e == "rejected"), "{what}: history recorded more than a refusal: {new:?}");
}

// The one bus launcher of the binary tests (the mirror tests and those that
// include `common` compile it too).
#[allow(clippy::duplicate_mod)]
#[path = "../common/bus.rs"]
mod bus;
pub use bus::SystemBus;

/// `milspecd run` of a `fake-kernel` build on a bus; killed on drop.
pub struct Daemon {
    child: Child,
    pub log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    pub fn start(config: &Path, bus: &SystemBus, release: &str, log: PathBuf) -> Daemon {
        let child = Command::new(assert_cmd::cargo::cargo_bin("milspecd"))
            .args(["run", "--config"])
            .arg(config)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .env("MILSPECD_FAKE_KERNEL", "1")
            .env("MILSPECD_FAKE_RELEASE", release)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let d = Daemon { child, log };
        let start = Instant::now();
        while !ctl(bus, false, &["status"]).status.success() {
            assert!(start.elapsed() < Duration::from_secs(20), "milspecd did not come up: {}", d.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            d.log_text().contains("FAKE kernel"),
            "{} is not a fake-kernel build (another cargo build replaced it?): {}",
            assert_cmd::cargo::cargo_bin("milspecd").display(),
            d.log_text()
        );
        d
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `milspecctl ARGS` on `bus`, as root or as `nobody` (setpriv).
pub fn ctl(bus: &SystemBus, nobody: bool, args: &[&str]) -> Output {
    let bin = assert_cmd::cargo::cargo_bin("milspecctl");
    let mut c = if nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    c.args(args).env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address).output().unwrap()
}

pub fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
