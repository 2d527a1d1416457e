//! Fleet simulation (a benchmark, `#[ignore]`d; run by
//! `tests/bench/fleet-sim.sh`): N hosts, as lightweight tasks of the pull
//! client (conditional index GET, verify, select, capped hashed download;
//! no engine), against one nginx on loopback.
//!
//! Measures requests/s and bytes served for a first contact, a no-update
//! poll and a release taken by every host at once, then simulates a wave
//! schedule over 25 hours (clock as input) to tell when each wave completes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod mirror_support;

use std::fs;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use milspec_format::index::{self, HostFacts, Selection};
use milspec_format::testkit::FakeKo;
use milspec_format::TrustedKeys;
use milspecd::mirror::fetch::{self, Fetched};
use milspecd::mirror::transport::{HttpTransport, Timeouts, Validators};
use mirror_support::*;

const THREADS: usize = 64;

#[derive(Default)]
struct SimHost {
    machine_id: String,
    validators: Option<Validators>,
    index_version: u64,
    installed: Option<semver::Version>,
}

struct Phase {
    name: &'static str,
    secs: f64,
    requests: usize,
    bytes: u64,
}

fn run_round(
    hosts: &mut [SimHost],
    url: &str,
    keys: &TrustedKeys,
    downloads: &AtomicU64,
    errors: &AtomicU64,
    scratch: &std::path::Path,
) -> f64 {
    let start = Instant::now();
    let chunk = hosts.len().div_ceil(THREADS);
    std::thread::scope(|s| {
        for (n, part) in hosts.chunks_mut(chunk).enumerate() {
            let dl_path = scratch.join(format!("dl-{n}"));
            s.spawn(move || {
                let mut dl =
                    fs::File::options().create(true).truncate(true).read(true).write(true).open(&dl_path).unwrap();
                let t = Timeouts { connect: Duration::from_secs(10), total: Duration::from_secs(60) };
                for h in part {
                    // A new client per poll: a real host's connection does not
                    // survive a 15-minute poll interval.
                    let transport = HttpTransport::new(t);
                    let index_url = format!("{url}index.json");
                    let got = fetch::fetch_small(
                        &transport,
                        &index_url,
                        h.validators.as_ref(),
                        index::MAX_INDEX_FILE,
                        Duration::from_secs(60),
                    );
                    let (bytes, validators) = match got {
                        Ok(Fetched::NotModified) => continue,
                        Ok(Fetched::Body { bytes, validators }) => (bytes, validators),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    };
                    let vi = index::verify_index(&bytes, keys, 1).unwrap();
                    h.validators = Some(validators);
                    h.index_version = vi.index.version;
                    let now = time::OffsetDateTime::now_utc();
                    let cur = h.installed.clone();
                    let facts = HostFacts {
                        kernel_release: RELEASE,
                        machine_id: &h.machine_id,
                        now,
                        blocklist: &[],
                        max_sequence: 0,
                        current: None,
                        ignore_waves: true,
                    };
                    if let Selection::Install { entry, .. } = index::select(&vi.index, &facts) {
                        if cur.as_ref() == Some(&entry.version) {
                            continue;
                        }
                        let u = format!("{url}{}", entry.path);
                        match fetch::download(
                            &transport,
                            &u,
                            entry.size,
                            &entry.sha256,
                            &mut dl,
                            &dl_path,
                            Duration::from_secs(60),
                            &mut |_| {},
                        ) {
                            Ok(()) => {
                                downloads.fetch_add(1, Ordering::Relaxed);
                                h.installed = Some(entry.version.clone());
                            }
                            Err(_) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            });
        }
    });
    start.elapsed().as_secs_f64()
}

fn log_since(nginx: &Nginx, from: usize) -> (usize, u64) {
    let log = nginx.log();
    let new = &log[from.min(log.len())..];
    (new.len(), new.iter().map(|l| l.1).sum())
}

#[test]
#[ignore = "benchmark: run tests/bench/fleet-sim.sh"]
fn fleet_simulation() {
    let n: usize = std::env::var("FLEET_HOSTS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let ko_padding: usize = std::env::var("FLEET_KO_BYTES").ok().and_then(|s| s.parse().ok()).unwrap_or(256 * 1024);
    let p = Publisher::new();
    // Realistically sized modules.
    let pack = |v: &str| {
        let ko = p.path(&format!("build/{v}-big.ko"));
        fs::write(&ko, FakeKo { version: v, padding: ko_padding, ..FakeKo::default() }.build()).unwrap();
        let out = p.path(&format!("build/big-{v}.mspkg"));
        bin("milspec-repo")
            .args(["pack", "--version", v, "--module"])
            .arg(&ko)
            .arg("--key")
            .arg(p.key())
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        out
    };
    let publish = |pkg: &std::path::Path| {
        bin("milspec-repo")
            .arg("publish")
            .arg("--mirror")
            .arg(p.mirror())
            .arg("--key")
            .arg(p.key())
            .arg(pkg)
            .assert()
            .success();
    };
    publish(&pack("1.0.0"));
    let nginx = Nginx::start_with(&p.mirror(), 2, "");
    let keys = TrustedKeys::load_dir(&p.path("trust")).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut hosts: Vec<SimHost> =
        (0..n).map(|i| SimHost { machine_id: format!("{i:032x}"), ..SimHost::default() }).collect();
    let downloads = AtomicU64::new(0);
    let errors = AtomicU64::new(0);
    let url = nginx.url();
    let mut phases = Vec::new();
    let mut measure = |name, hosts: &mut [SimHost]| {
        let from = nginx.log().len();
        let secs = run_round(hosts, &url, &keys, &downloads, &errors, scratch.path());
        std::thread::sleep(Duration::from_millis(300)); // access log flush
        let (requests, bytes) = log_since(&nginx, from);
        phases.push(Phase { name, secs, requests, bytes });
    };
    measure("first contact (index + package 1.0.0)", &mut hosts);
    measure("no-update poll (304)", &mut hosts);
    publish(&pack("1.1.0"));
    measure("release 1.1.0, all hosts at once", &mut hosts);
    measure("no-update poll after the release", &mut hosts);
    let pkg_size = fs::metadata(p.mirror().join("packages/dell-milspec-1.1.0.mspkg")).unwrap().len();
    let index_size = fs::metadata(p.mirror().join("index.json")).unwrap().len();

    println!("\n### Fleet simulation: {n} hosts, {THREADS} client threads, nginx with 2 workers on loopback\n");
    println!("package {pkg_size} bytes, index {index_size} bytes, errors {}\n", errors.load(Ordering::Relaxed));
    println!("| phase | requests | wall s | requests/s | bytes served | bytes per host |");
    println!("|---|---:|---:|---:|---:|---:|");
    for ph in &phases {
        println!(
            "| {} | {} | {:.2} | {:.0} | {} | {} |",
            ph.name,
            ph.requests,
            ph.secs,
            ph.requests as f64 / ph.secs,
            ph.bytes,
            ph.bytes / n as u64
        );
    }
    assert_eq!(errors.load(Ordering::Relaxed), 0);
    assert!(hosts.iter().all(|h| h.installed.as_ref().map(ToString::to_string).as_deref() == Some("1.1.0")));

    // Waves over simulated time: 1 %, 10 % after 1 h, 100 % after 24 h;
    // every host polls every 15 min at its own random phase (the jitter).
    let waves = "1%,10%@1h,100%@24h";
    publish(&pack("1.2.0"));
    bin("milspec-repo")
        .args(["publish", "--waves", waves, "--mirror"])
        .arg(p.mirror())
        .arg("--key")
        .arg(p.key())
        .arg(pack("1.3.0"))
        .assert()
        .success();
    let vi = index::verify_index(&fs::read(p.mirror().join("index.json")).unwrap(), &keys, 1).unwrap();
    let entry = vi.index.entry(&"1.3.0".parse().unwrap()).unwrap().clone();
    let t0 = entry.published;
    let interval = 15 * 60;
    let phase: Vec<i64> =
        (0..n).map(|i| (index::wave_position(&format!("phase{i}"), &entry.version) * interval as f64) as i64).collect();
    let mut done: Vec<Option<i64>> = vec![None; n];
    let per_round = Mutex::new(Vec::new());
    for round in 0..(26 * 4) {
        let mut took = 0;
        for i in 0..n {
            if done[i].is_some() {
                continue;
            }
            let t = round * interval + phase[i];
            let now = t0 + time::Duration::seconds(t);
            let pos = index::wave_position(&hosts[i].machine_id, &entry.version);
            if entry.reached(pos, now) {
                done[i] = Some(t);
                took += 1;
            }
        }
        per_round.lock().unwrap().push(took);
    }
    println!("\n### Waves `{waves}`, polls every 15 min (simulated clock)\n");
    println!("| wave | hosts | last host done after | peak downloads in one 15-min interval |");
    println!("|---|---:|---:|---:|");
    let mut prev = 0.0;
    for w in &entry.waves {
        let lo = prev;
        let hi = w.percent / 100.0;
        let members: Vec<usize> = (0..n)
            .filter(|&i| {
                let x = index::wave_position(&hosts[i].machine_id, &entry.version);
                x >= lo && x < hi
            })
            .collect();
        let last = members.iter().filter_map(|&i| done[i]).max().unwrap_or(0);
        let rounds = per_round.lock().unwrap();
        let start_round = (w.after_secs / interval as u64) as usize;
        let peak = rounds.iter().skip(start_round).take(2).max().copied().unwrap_or(0);
        println!(
            "| {}% after {} | {} | {} | {} |",
            w.percent,
            humantime::format_duration(Duration::from_secs(w.after_secs)),
            members.len(),
            humantime::format_duration(Duration::from_secs(last.max(0) as u64)),
            peak
        );
        prev = hi;
    }
    assert!(done.iter().all(Option::is_some));
}
