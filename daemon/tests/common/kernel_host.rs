//! A host for the kernel-build tests: a fake kernel booted on either of
//! two releases, packages with builds for some of them, and
//! `milspec-repo add-build` republishes. Used by `kernel_builds.rs` and
//! `kernel_build_crashes.rs`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::fake_kernel::{write, FakeKernel};
use super::{repo, Fixture};
use milspec_format::testkit::FakeKo;
use milspecd::config::Config;
use milspecd::engine::{Engine, InstallOptions, Outcome, Recovery};
use milspecd::history::{EventKind, History};

pub const OLD: &str = "6.12.111+deb12-cloud-amd64";
pub const NEW: &str = "6.12.113+deb12-cloud-amd64";

pub struct Host {
    pub f: Fixture,
    pub cfg: Config,
    pub key: PathBuf,
    pub boots: u32,
}

impl Host {
    pub fn new() -> Self {
        let f = Fixture::new();
        let key = f.key("release", true);
        let mut cfg = Config::default();
        cfg.trust.keys_dir = f.path("trust");
        cfg.paths.state_dir = f.path("state");
        cfg.health.probation = Duration::from_millis(300);
        cfg.health.checks_dir = f.path("checks");
        // Never the host's node_exporter folder.
        cfg.metrics.textfile = f.path("metrics/milspecd.prom");
        cfg.kernel.modules_dir = f.path("modules");
        Host { f, cfg, key, boots: 0 }
    }

    /// Boots kernel `release`: a fresh boot id, nothing loaded.
    pub fn boot(&mut self, release: &str) -> FakeKernel {
        self.boots += 1;
        let root = self.f.path("root");
        let _ = fs::remove_dir_all(&root);
        let k = FakeKernel::new(&root, release);
        write(&k.paths.boot_id(), &format!("boot-{}\n", self.boots));
        self.cfg.kernel.proc = k.paths.proc.clone();
        self.cfg.kernel.sys = k.paths.sys.clone();
        self.cfg.kernel.kmsg = k.paths.kmsg.clone();
        k
    }

    pub fn ko(&self, version: &str, release: &str) -> PathBuf {
        let name = format!("m-{version}-{release}.ko");
        self.f.ko(&name, FakeKo { version, kernel_release: release, ..FakeKo::default() })
    }

    /// A package of `version` with a build for each of `releases`.
    pub fn pack(&self, version: &str, releases: &[&str], extra: &[&str], out: &str) -> PathBuf {
        let mut cmd = repo();
        cmd.args(["pack", "--version", version, "--key"]).arg(&self.key).arg("--out").arg(self.f.path(out));
        for r in releases {
            cmd.arg("--module").arg(self.ko(version, r));
        }
        cmd.args(extra).assert().success();
        self.f.path(out)
    }

    /// `milspec-repo add-build`: `pkg` republished with a build for `release`.
    pub fn add_build(&self, pkg: &Path, version: &str, release: &str, out: &str) -> PathBuf {
        repo()
            .arg("add-build")
            .arg("--package")
            .arg(pkg)
            .arg("--module")
            .arg(self.ko(version, release))
            .arg("--key")
            .arg(&self.key)
            .arg("--out")
            .arg(self.f.path(out))
            .assert()
            .success();
        self.f.path(out)
    }

    pub fn install(&self, k: &FakeKernel, pkg: &Path) -> Outcome {
        let mut e = Engine::open(self.cfg.clone(), k).unwrap();
        e.install(fs::File::open(pkg).unwrap(), InstallOptions::default()).unwrap()
    }

    pub fn recover(&self, k: &FakeKernel) -> Recovery {
        Engine::open(self.cfg.clone(), k).unwrap().recover().unwrap()
    }

    pub fn events(&self) -> Vec<EventKind> {
        History::new(&self.cfg.paths.state_dir).read(1000).unwrap().into_iter().map(|e| e.event).collect()
    }

    /// Every file of both slots and the state record, with its bytes.
    pub fn disk(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let root = &self.cfg.paths.state_dir;
        let mut stack = vec![root.join("slots")];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push((p.strip_prefix(root).unwrap().display().to_string(), fs::read(&p).unwrap()));
                }
            }
        }
        out.push(("state.json".into(), fs::read(root.join("state.json")).unwrap()));
        out.sort();
        out
    }
}
