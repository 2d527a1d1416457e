//! How the mirror's index grows as releases pick up kernel builds: its size
//! and the time a host takes to verify and parse it, for a small index,
//! today's shape and 1,000 releases x 64 kernels. A benchmark, not a test:
//! run it with `tests/bench/index-scale.sh` (docs/benchmarks.md, "Index
//! growth with kernels"), or directly:
//!
//! ```sh
//! cargo test --release -p milspec-format --test index_scale -- --ignored --nocapture
//! ```
//!
//! With `INDEX_SCALE_OUT=DIR` it also writes each index to
//! `DIR/<releases>x<kernels>/index.json` and the public key to
//! `DIR/bench.pub`, for the script to serve them and to run
//! `verify_peak_memory` on each in a process of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use milspec_format::index::{
    verify_index, Index, IndexEntry, Wave, MAX_ENTRIES, MAX_INDEX_FILE, MAX_PATH_LEN, MAX_RELEASES, MAX_REVOKED,
    MAX_WAVES,
};
use milspec_format::manifest::MAX_RELEASE_LEN;
use milspec_format::{SecretKey, Sha256Digest, TrustedKeys};
use time::OffsetDateTime;

/// Runs per shape; the median is reported.
const RUNS: usize = 9;

/// Debian 12 style releases: the stock and the cloud flavour of successive
/// backports kernels, e.g. `6.12.113+deb12-cloud-amd64`.
fn release(k: usize) -> String {
    let flavour = if k % 2 == 0 { "cloud-amd64" } else { "amd64" };
    format!("6.12.{}+deb12-{flavour}", 100 + k / 2)
}

fn index(releases: usize, kernels: usize) -> Index {
    let t0 = OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap();
    let mut i = Index::new(1_000, t0, t0 + time::Duration::days(7));
    for r in 0..releases {
        let (major, minor, patch) = (1 + r / 100, (r / 10) % 10, r % 10);
        let version: semver::Version = format!("{major}.{minor}.{patch}").parse().unwrap();
        let sequence = major as u64 * 1_000_000_000 + minor as u64 * 1_000_000 + patch as u64 * 1000;
        i.packages.push(IndexEntry {
            name: "dell-milspec".into(),
            version: version.clone(),
            sequence,
            path: format!("packages/dell-milspec-{version}-k{kernels}-0123456789ab.mspkg"),
            size: 48_000 * kernels as u64,
            sha256: Sha256Digest::of(version.to_string().as_bytes()),
            kernel_releases: (0..kernels).map(release).collect(),
            published: t0,
            waves: vec![
                Wave { after_secs: 0, percent: 1.0 },
                Wave { after_secs: 3600, percent: 10.0 },
                Wave { after_secs: 86_400, percent: 100.0 },
            ],
        });
    }
    i
}

/// The largest index the count caps allow: every entry at the limits of
/// its strings and lists, every version revoked, with one signature.
fn largest() -> Index {
    let mut i = index(MAX_ENTRIES, MAX_RELEASES);
    for (n, e) in i.packages.iter_mut().enumerate() {
        e.version = format!("{}.0.0-rc.{n}+{}", n + 1, "b".repeat(40)).parse().unwrap();
        e.path = format!("packages/{n}-{}", "p".repeat(MAX_PATH_LEN - 20));
        e.kernel_releases = (0..MAX_RELEASES).map(|k| format!("{k}.{}", "r".repeat(MAX_RELEASE_LEN - 4))).collect();
        e.waves = (0..MAX_WAVES).map(|w| Wave { after_secs: w as u64 * 3600, percent: 1.0 + w as f64 * 6.0 }).collect();
    }
    i.revoked = i.packages.iter().map(|e| e.version.clone()).take(MAX_REVOKED).collect();
    i
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
fn index_size_and_verify_time() {
    let key = SecretKey::generate("bench").unwrap();
    let trusted = TrustedKeys::new([key.public()]);
    let out = std::env::var_os("INDEX_SCALE_OUT").map(std::path::PathBuf::from);
    if let Some(dir) = &out {
        std::fs::create_dir_all(dir).unwrap();
        key.write_pair(dir).unwrap();
    }
    println!("cap MAX_INDEX_FILE = {MAX_INDEX_FILE} bytes");
    println!("{:>8} {:>7} {:>12} {:>12} {:>12}", "releases", "kernels", "index_bytes", "verify_ms", "per_entry_B");
    for (releases, kernels) in [(10, 4), (1000, 32), (1000, 64), (0, 0)] {
        // (0, 0): the largest index the count caps allow.
        let i = if releases == 0 { largest() } else { index(releases, kernels) };
        let (releases, kernels) = (i.packages.len(), i.packages[0].kernel_releases.len());
        let bytes = i.sign(std::slice::from_ref(&key)).unwrap();
        if let Some(dir) = &out {
            let d = dir.join(format!("{releases}x{kernels}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("index.json"), &bytes).unwrap();
        }
        let fits = bytes.len() as u64 <= MAX_INDEX_FILE;
        let verify_ms = if fits {
            let times = (0..RUNS)
                .map(|_| {
                    let t = Instant::now();
                    let v = verify_index(&bytes, &trusted, 1).unwrap();
                    let d = t.elapsed();
                    assert_eq!(v.index.packages.len(), releases);
                    d
                })
                .collect();
            format!("{:.2}", median(times).as_secs_f64() * 1000.0)
        } else {
            "over-cap".into()
        };
        println!(
            "{releases:>8} {kernels:>7} {:>12} {verify_ms:>12} {:>12}",
            bytes.len(),
            bytes.len() / releases.max(1)
        );
    }
}

/// The process's peak resident set so far (`VmHWM`), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The memory a host needs to verify one index: the peak resident set
/// before and after `verify_index` of `INDEX_SCALE_FILE` with the key
/// `INDEX_SCALE_PUB`. Run alone (`--exact`), one index per process.
#[test]
#[ignore = "benchmark: run by tests/bench/index-scale.sh"]
fn verify_peak_memory() {
    let (Some(file), Some(public)) = (std::env::var_os("INDEX_SCALE_FILE"), std::env::var_os("INDEX_SCALE_PUB")) else {
        println!("set INDEX_SCALE_FILE and INDEX_SCALE_PUB");
        return;
    };
    let trusted = TrustedKeys::new([milspec_format::PublicKey::load(std::path::Path::new(&public)).unwrap()]);
    let bytes = std::fs::read(&file).unwrap();
    if bytes.len() as u64 > MAX_INDEX_FILE {
        println!("peak_rss_kib not measured: {} bytes, over the cap of {MAX_INDEX_FILE}", bytes.len());
        return;
    }
    let before = peak_rss_kib();
    let v = verify_index(&bytes, &trusted, 1).unwrap();
    let after = peak_rss_kib();
    println!(
        "peak_rss_kib before {before} after {after} (+{}) for {} bytes, {} entries",
        after - before,
        bytes.len(),
        v.index.packages.len()
    );
}
