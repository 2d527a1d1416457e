//! Shared helpers for the binary tests: keys, fake modules, packages and
//! hand-made archives.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod bus;
pub mod fake_kernel;
pub mod kernel_host;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use milspec_format::testkit::FakeKo;
use milspecd::metrics::{Counters, Snapshot};
use milspecd::reason_class::{FailureClass, RollbackClass};
use milspecd::worker::{DaemonState, Published};

pub const RELEASE: &str = "6.12.113+deb12-cloud-amd64";

pub fn repo() -> Command {
    Command::cargo_bin("milspec-repo").unwrap()
}

pub fn ctl() -> Command {
    Command::cargo_bin("milspecctl").unwrap()
}

pub fn daemon() -> Command {
    Command::cargo_bin("milspecd").unwrap()
}

/// A temporary publisher workspace: keys in `keys/`, trusted public keys
/// in `trust/`, modules and packages at the top.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    /// The start of a `milspecd.toml` for a daemon on the fake kernel of
    /// a `fake-kernel` build: this fixture's `trust/` keys, `state/`,
    /// `checks/` and a `root/` tree for /proc, /sys and kmsg, with a
    /// `probation` window. Callers append their own sections.
    pub fn daemon_config(&self, probation: &str) -> String {
        let root = self.path("root");
        format!(
            "[trust]\nkeys_dir = \"{}\"\n[paths]\nstate_dir = \"{}\"\n[health]\nprobation = \"{probation}\"\nchecks_dir = \"{}\"\n\
             [kernel]\nproc = \"{}\"\nsys = \"{}\"\nkmsg = \"{}\"\n",
            self.path("trust").display(),
            self.path("state").display(),
            self.path("checks").display(),
            root.join("proc").display(),
            root.join("sys").display(),
            root.join("kmsg").display(),
        )
    }

    /// The configuration of a `milspecd run` on the fake kernel under
    /// `root/` (1 s probation), written to `milspecd.toml`: the config, the
    /// fake kernel's paths and the file.
    pub fn fake_kernel_config(&self) -> (milspecd::config::Config, milspecd::kernel_paths::KernelPaths, PathBuf) {
        let paths = milspecd::kernel_paths::KernelPaths::under(&self.path("root"), "dell_milspec");
        let mut cfg = milspecd::config::Config::default();
        cfg.trust.keys_dir = self.path("trust");
        cfg.paths.state_dir = self.path("state");
        cfg.health.probation = std::time::Duration::from_secs(1);
        cfg.health.checks_dir = self.path("checks");
        // Never the host's node_exporter folder.
        cfg.metrics.textfile = self.path("metrics/milspecd.prom");
        cfg.kernel.proc = paths.proc.clone();
        cfg.kernel.sys = paths.sys.clone();
        cfg.kernel.kmsg = paths.kmsg.clone();
        let conf = self.path("milspecd.toml");
        fs::write(&conf, cfg.to_toml()).unwrap();
        (cfg, paths, conf)
    }

    pub fn new() -> Self {
        let f = Fixture { dir: tempfile::tempdir().unwrap() };
        fs::create_dir(f.path("keys")).unwrap();
        fs::create_dir(f.path("trust")).unwrap();
        f
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Makes key `name`; trusted ones get their .pub copied into trust/.
    pub fn key(&self, name: &str, trusted: bool) -> PathBuf {
        repo().args(["keygen", "--name", name, "--out"]).arg(self.path("keys")).assert().success();
        if trusted {
            fs::copy(self.path(&format!("keys/{name}.pub")), self.path(&format!("trust/{name}.pub"))).unwrap();
        }
        self.path(&format!("keys/{name}.key"))
    }

    pub fn ko(&self, file: &str, ko: FakeKo<'_>) -> PathBuf {
        let p = self.path(file);
        fs::write(&p, ko.build()).unwrap();
        p
    }

    pub fn pack(&self, version: &str, keys: &[&Path], out: &str) -> PathBuf {
        let ko = self.ko(&format!("m-{version}.ko"), FakeKo { version, ..FakeKo::default() });
        let mut cmd = repo();
        cmd.args(["pack", "--version", version, "--module"]).arg(&ko).arg("--out").arg(self.path(out));
        for k in keys {
            cmd.arg("--key").arg(k);
        }
        cmd.assert().success();
        self.path(out)
    }

    pub fn verify(&self, pkg: &Path, threshold: usize) -> assert_cmd::assert::Assert {
        ctl()
            .args(["verify", "--threshold", &threshold.to_string(), "--keys"])
            .arg(self.path("trust"))
            .arg(pkg)
            .assert()
    }

    /// Names of the files at the top of the fixture.
    pub fn listing(&self) -> Vec<String> {
        let mut v: Vec<_> = fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

/// The entries of a package, in order, as (path, bytes).
pub fn entries(pkg: &Path) -> Vec<(String, Vec<u8>)> {
    let mut a = tar::Archive::new(fs::File::open(pkg).unwrap());
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            let mut d = Vec::new();
            e.read_to_end(&mut d).unwrap();
            (p, d)
        })
        .collect()
}

/// One hand-made tar entry; `path` is written into the header as is.
pub struct Raw<'a> {
    pub path: &'a str,
    pub kind: tar::EntryType,
    pub data: &'a [u8],
}

pub fn raw_tar(list: &[Raw<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in list {
        let mut h = tar::Header::new_ustar();
        let name = &mut h.as_ustar_mut().unwrap().name;
        name[..r.path.len()].copy_from_slice(r.path.as_bytes());
        h.set_size(r.data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(r.kind);
        if r.kind == tar::EntryType::Symlink {
            h.set_link_name("/etc/shadow").unwrap();
        }
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(r.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// Rebuilds `pkg` with the given entries (all regular files) plus extras.
pub fn rebuild(entries: &[(String, Vec<u8>)], extra: &[Raw<'_>]) -> Vec<u8> {
    let mut list: Vec<Raw<'_>> =
        entries.iter().map(|(p, d)| Raw { path: p, kind: tar::EntryType::Regular, data: d }).collect();
    list.extend(extra.iter().map(|r| Raw { path: r.path, kind: r.kind, data: r.data }));
    raw_tar(&list)
}

pub fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).expect("needle present")
}

/// Whether `tool` can run; outside CI a missing tool skips the test (with
/// a message), in CI it fails it.
pub fn have(tool: &str, package: &str) -> bool {
    if std::process::Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
    {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{tool} is missing in CI: tests/run-all.sh installs the Debian package {package}"
    );
    eprintln!("SKIPPED: {tool} not installed (apt-get install {package})");
    false
}

/// A metrics snapshot with every optional series present.
pub fn full_snapshot() -> Snapshot {
    let mut p = Published {
        state: DaemonState::Idle,
        committed_version: "1.1.0".into(),
        active_slot: "a".into(),
        kernel_build: "no-build".into(),
        committed_kernels: vec!["6.12.113+deb12-cloud-amd64".into()],
        kernels_without_build: vec!["6.12.115+deb12-cloud-amd64".into()],
        ..Published::default()
    };
    p.poll.saw(&milspecd::check::CheckReport::Waiting {
        index_version: 3,
        version: "1.2.0".into(),
        position: 0.42,
        fraction: 0.1,
        next_wave: Some("2030-01-01T00:00:00Z".into()),
    });
    p.poll.attempt_unix = Some(1_800_000_000);
    p.poll.success_unix = Some(1_800_000_000);
    p.poll.index_expires_unix = Some(1_800_600_000);
    p.failures_by.add(FailureClass::Verify);
    p.rollbacks_by.add(RollbackClass::HealthOops);
    Snapshot::new(p, Counters { swaps: 2, commits: 1, committed_faults: 0 }, true, 1_800_000_001.5).with_process()
}
