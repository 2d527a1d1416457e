//! A crash at each durable step of adding or dropping a kernel build
//! (the failure path included), in-process with the `failpoints` crash
//! points: after it, recovery leaves one consistent state: the committed
//! slot valid for every kernel it served, no staging folder, the module
//! live. Alone in its test binary: crash points are process-wide.
#![cfg(feature = "failpoints")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};

use common::fake_kernel::{FakeKernel, Fault};
use common::kernel_host::{Host, NEW, OLD};
use milspecd::engine::{Engine, Outcome, Recovery};
use milspecd::kernels::KernelBuild;

/// Builds and blocked builds of the committed version after a recovery.
fn settled(h: &Host, k: &FakeKernel) -> (Vec<String>, usize, KernelBuild) {
    let mut e = Engine::open(h.cfg.clone(), k).unwrap();
    let r = e.recover().unwrap();
    assert!(!matches!(r, Recovery::RolledBack(_)), "{r:?}");
    let st = e.status().unwrap();
    assert!(st.slots.iter().all(|s| s.error.is_none()), "{:?}", st.slots);
    let staging = fs::read_dir(h.cfg.paths.state_dir.join("slots"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(".staging"))
        .count();
    assert_eq!(staging, 0, "a staging folder was left");
    assert_eq!(st.committed_version.as_deref(), Some("1.1.0"));
    (st.kernel.committed_kernels, st.blocked_builds.len(), st.kernel.build)
}

#[test]
fn a_crash_at_each_step_of_a_kernel_build_recovers_to_one_consistent_state() {
    let old = || vec![OLD.to_string()];
    let both = || vec![OLD.to_string(), NEW.to_string()];
    // (point, what crashes, the builds after recovery)
    let cases: [(&str, &str, Vec<String>); 6] = [
        ("build.staging", "add", old()),
        ("build.after-stage", "add", old()),
        ("install.after-replace", "add", both()),
        ("build.after-replace", "add", both()),
        ("build.drop-staged", "drop", both()),
        ("install.after-replace", "drop", old()),
    ];
    for (point, what, want) in cases {
        let mut h = Host::new();
        let k = h.boot(OLD);
        let one = h.pack("1.1.0", &[OLD], &[], "old-only.mspkg");
        assert!(matches!(h.install(&k, &one), Outcome::Committed { .. }));
        let republished = h.add_build(&one, "1.1.0", NEW, "republished.mspkg");
        if what == "drop" {
            let mut e = Engine::open(h.cfg.clone(), &k).unwrap();
            e.add_build(fs::File::open(&republished).unwrap(), NEW).unwrap();
        }
        fail::cfg(point, "panic").unwrap();
        let crashed = catch_unwind(AssertUnwindSafe(|| {
            let mut e = Engine::open(h.cfg.clone(), &k).unwrap();
            match what {
                "add" => drop(e.add_build(fs::File::open(&republished).unwrap(), NEW)),
                _ => drop(e.drop_build(NEW)),
            }
        }));
        fail::remove(point);
        assert!(crashed.is_err(), "{point} ({what}) was not reached");
        let (kernels, blocked, build) = settled(&h, &k);
        assert_eq!((kernels, blocked, build), (want, 0, KernelBuild::Ready), "{point} ({what})");
        assert_eq!(k.live_version().as_deref(), Some("1.1.0"), "{point} ({what})");
    }

    // The failure path: the build for the running kernel fails at load; a
    // crash once the block is saved leaves it blocked, and never loaded.
    let mut h = Host::new();
    let k = h.boot(NEW);
    let one = h.pack("1.1.0", &[NEW], &[], "new-only.mspkg");
    assert!(matches!(h.install(&k, &one), Outcome::Committed { .. }));
    let republished = h.add_build(&one, "1.1.0", OLD, "republished.mspkg");
    let mut k = h.boot(OLD);
    k.faults.insert("1.1.0".into(), Fault::Warn);
    fail::cfg("build.after-block", "panic").unwrap();
    let crashed = catch_unwind(AssertUnwindSafe(|| {
        let mut e = Engine::open(h.cfg.clone(), &k).unwrap();
        drop(e.add_build(fs::File::open(&republished).unwrap(), OLD));
    }));
    fail::remove("build.after-block");
    assert!(crashed.is_err(), "build.after-block was not reached");
    // The faulty build was still loaded (the crash came before the unload):
    // recovery unloads it and drops it.
    assert_eq!(k.live_version().as_deref(), Some("1.1.0"));
    let mut e = Engine::open(h.cfg.clone(), &k).unwrap();
    assert!(matches!(e.recover().unwrap(), Recovery::NoBuild(_)));
    assert_eq!(k.live_version(), None);
    let st = e.status().unwrap();
    assert_eq!((st.kernel.build, st.blocked_builds.len()), (KernelBuild::NoBuild, 1));
    assert_eq!(st.kernel.committed_kernels, vec![NEW.to_string()]);
    // And again: nothing left to do, still reported.
    assert!(matches!(e.recover().unwrap(), Recovery::NoBuild(nb) if nb.kernels == vec![NEW.to_string()]));
}
