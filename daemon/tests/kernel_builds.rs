//! Kernel upgrades against the fake kernel: builds per kernel in a slot,
//! "no build for this kernel" as a reported state, a kernel-build
//! republish added without a trial, a refused one changing nothing, a
//! build that fails blocked for its kernel only, and a trial interrupted
//! by a reboot into another kernel. The real kernels are in the VM tier
//! (tests/vm/scenarios/kernel-*.sh).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;

use common::fake_kernel::Fault;
use common::kernel_host::{Host, NEW, OLD};
use milspecd::engine::{BuildOutcome, Engine, Outcome, Recovery};
use milspecd::history::EventKind;
use milspecd::kernels::KernelBuild;
use milspecd::state::StateFile;

#[test]
fn a_two_kernel_package_loads_on_both_kernels_and_a_missing_build_is_reported_then_added() {
    let mut h = Host::new();
    let k = h.boot(OLD);
    let both = h.pack("1.0.0", &[OLD, NEW], &[], "both.mspkg");
    assert!(matches!(h.install(&k, &both), Outcome::Committed { .. }));

    // Reboot into the new kernel: its build loads at once.
    let k = h.boot(NEW);
    assert_eq!(h.recover(&k), Recovery::LoadedCommitted { version: "1.0.0".into() });
    assert_eq!(k.live_version().as_deref(), Some("1.0.0"));

    // A package for the new kernel only, then back to the old kernel.
    let one = h.pack("1.1.0", &[NEW], &[], "new-only.mspkg");
    assert!(matches!(h.install(&k, &one), Outcome::Committed { .. }));
    let k = h.boot(OLD);
    let r = h.recover(&k);
    let Recovery::NoBuild(nb) = &r else { panic!("{r:?}") };
    assert_eq!((nb.version.as_str(), nb.release.as_str(), nb.kernels.clone()), ("1.1.0", OLD, vec![NEW.to_string()]));
    assert!(r.to_string().contains("no build for this kernel"), "{r}");
    assert_eq!(k.live_version(), None);
    let e = Engine::open(h.cfg.clone(), &k).unwrap();
    let st = e.status().unwrap();
    assert_eq!(st.kernel.build, KernelBuild::NoBuild);
    assert_eq!(st.kernel.without_build, vec![OLD.to_string()]);
    drop(e);

    // A release with another parameter passed off as a republish: refused,
    // slots and state byte for byte as they were, one history record more.
    let changed = h.pack("1.1.0", &[NEW, OLD], &["--param", "mode5_level=3"], "changed.mspkg");
    let before = h.disk();
    let events = h.events().len();
    let mut e = Engine::open(h.cfg.clone(), &k).unwrap();
    let o = e.add_build(fs::File::open(&changed).unwrap(), OLD).unwrap();
    assert!(
        matches!(&o, BuildOutcome::Rejected { reason } if reason.contains("not a kernel-build republish")),
        "{o:?}"
    );
    assert_eq!(h.disk(), before);
    assert_eq!(h.events().len(), events + 1);

    // The republish with the old kernel's build: added and loaded, no trial.
    let swaps = h.events().iter().filter(|e| **e == EventKind::Swapped).count();
    let republished = h.add_build(&one, "1.1.0", OLD, "republished.mspkg");
    let o = e.add_build(fs::File::open(&republished).unwrap(), OLD).unwrap();
    assert_eq!(o, BuildOutcome::Added { version: "1.1.0".into(), kernel_release: OLD.into(), loaded: true });
    assert_eq!(k.live_version().as_deref(), Some("1.1.0"));
    assert_eq!(h.events().iter().filter(|e| **e == EventKind::Swapped).count(), swaps);
    assert!(h.events().contains(&EventKind::BuildAdded));
    let st = e.status().unwrap();
    assert_eq!(st.kernel.build, KernelBuild::Ready);
    assert_eq!(st.kernel.committed_kernels, vec![OLD.to_string(), NEW.to_string()]);
    assert!(st.blocklist.is_empty());
    // Asked again: ready, nothing changes.
    let before = h.disk();
    let o = e.add_build(fs::File::open(&republished).unwrap(), OLD).unwrap();
    assert!(matches!(o, BuildOutcome::Ready { .. }), "{o:?}");
    assert_eq!(h.disk(), before);

    // The new kernel is removed: its build goes from both slots (1.0.0 in
    // the other one had it too), the running kernel's stays.
    let id = StateFile::new(&h.cfg.paths.state_dir).load().unwrap().committed.unwrap();
    assert_eq!(e.drop_build(NEW).unwrap(), vec![milspecd::slot_id::SlotId::A, milspecd::slot_id::SlotId::B]);
    assert_eq!(e.drop_build(OLD).unwrap(), vec![]);
    assert_eq!(e.status().unwrap().kernel.committed_kernels, vec![OLD.to_string()]);
    assert!(h.cfg.paths.state_dir.join(format!("slots/{id}/kernels/{OLD}.ko")).exists());
    assert!(!h.cfg.paths.state_dir.join(format!("slots/{id}/kernels/{NEW}.ko")).exists());
    // The kernel comes back: the same republish adds its build again.
    let o = e.add_build(fs::File::open(&republished).unwrap(), NEW).unwrap();
    assert_eq!(o, BuildOutcome::Added { version: "1.1.0".into(), kernel_release: NEW.into(), loaded: false });
    assert_eq!(e.status().unwrap().kernel.committed_kernels, vec![OLD.to_string(), NEW.to_string()]);
}

#[test]
fn a_build_that_fails_on_its_kernel_is_blocked_for_that_kernel_only() {
    let mut h = Host::new();
    let k = h.boot(NEW);
    let one = h.pack("1.2.0", &[NEW], &[], "new-only.mspkg");
    assert!(matches!(h.install(&k, &one), Outcome::Committed { .. }));
    let mut k = h.boot(OLD);
    k.faults.insert("1.2.0".into(), Fault::Warn);
    let republished = h.add_build(&one, "1.2.0", OLD, "republished.mspkg");
    let mut e = Engine::open(h.cfg.clone(), &k).unwrap();
    let o = e.add_build(fs::File::open(&republished).unwrap(), OLD).unwrap();
    assert!(matches!(&o, BuildOutcome::Failed { kernel_release, .. } if kernel_release == OLD), "{o:?}");
    assert_eq!(k.live_version(), None, "the failed build was unloaded");
    let st = e.status().unwrap();
    assert_eq!(st.kernel.build, KernelBuild::NoBuild);
    assert_eq!(st.kernel.committed_kernels, vec![NEW.to_string()]);
    assert!(st.blocklist.is_empty(), "1.2.0 stays good for the new kernel");
    assert_eq!(st.blocked_builds.len(), 1);
    // Never fetched or added again.
    let o = e.add_build(fs::File::open(&republished).unwrap(), OLD).unwrap();
    assert!(matches!(&o, BuildOutcome::Rejected { reason } if reason.contains("failed here before")), "{o:?}");
    drop(e);
    let k = h.boot(NEW);
    assert_eq!(h.recover(&k), Recovery::LoadedCommitted { version: "1.2.0".into() });
}

#[test]
fn a_trial_interrupted_by_a_reboot_into_another_kernel_is_rolled_back_unjudged() {
    let mut h = Host::new();
    let k = h.boot(OLD);
    let both = h.pack("1.0.0", &[OLD, NEW], &[], "both.mspkg");
    assert!(matches!(h.install(&k, &both), Outcome::Committed { .. }));
    // A trial of 1.1.0 starts on the old kernel, and the host reboots into
    // the new one in the middle of it (the record as the engine left it).
    let sf = StateFile::new(&h.cfg.paths.state_dir);
    let mut st = sf.load().unwrap();
    let committed = st.committed.unwrap();
    let trial = milspecd::state::Trial {
        slot: committed.other(),
        version: "1.1.0".parse().unwrap(),
        sequence: 1_001_000_000,
        phase: milspecd::state::TrialPhase::Watching,
        boot_id: format!("boot-{}", h.boots),
        started_ms: 5,
        window_ms: 30_000,
        checkpoint: milspecd::state::Checkpoint {
            slot: Some(committed),
            version: Some("1.0.0".into()),
            params: Default::default(),
            baseline: Default::default(),
        },
        rollback_reason: None,
    };
    st.begin_trial(trial, OLD).unwrap();
    sf.save(&st).unwrap();
    let k = h.boot(NEW);
    match h.recover(&k) {
        Recovery::RolledBack(Outcome::RolledBack { to, reason, .. }) => {
            assert_eq!(to.as_deref(), Some("1.0.0"));
            assert!(reason.contains("interrupted") && reason.contains(NEW), "{reason}");
        }
        r => panic!("{r:?}"),
    }
    assert_eq!(k.live_version().as_deref(), Some("1.0.0"));
    let st = sf.load().unwrap();
    assert!(st.blocklist.is_empty(), "never judged, so never blocklisted");
    assert!(st.trial.is_none() && st.trial_kernel.is_none());
}

#[test]
fn each_poll_prepares_the_installed_kernels_the_committed_version_lacks() {
    let mut h = Host::new();
    let k = h.boot(OLD);
    let one = h.pack("1.1.0", &[OLD], &[], "old-only.mspkg");
    assert!(matches!(h.install(&k, &one), Outcome::Committed { .. }));
    // The new kernel is installed (its hook never reached the daemon) and
    // the mirror has the republish with its build.
    fs::create_dir_all(h.cfg.kernel.modules_dir.join(NEW)).unwrap();
    let republished = h.add_build(&one, "1.1.0", NEW, "republished.mspkg");
    let (cfg, poller) = mirror_of(&h, &republished);
    let mut e = Engine::open(cfg, &k).unwrap();
    assert_eq!(e.status().unwrap().kernel.without_build, vec![NEW.to_string()]);
    let opts = milspecd::mirror::PollOptions { now: time::OffsetDateTime::now_utc(), force: false };
    let r = milspecd::check::check(&poller, &mut e, opts, &mut |_| {}).unwrap();
    assert!(matches!(r, milspecd::check::CheckReport::UpToDate { .. }), "{r:?}");
    let st = e.status().unwrap();
    assert_eq!(st.kernel.committed_kernels, vec![OLD.to_string(), NEW.to_string()]);
    assert!(st.kernel.without_build.is_empty());
    assert!(h.events().contains(&EventKind::BuildAdded));
    assert_eq!(k.live_version().as_deref(), Some("1.1.0"));
}

/// A `file://` mirror publishing `pkg`, and the configuration and poller
/// of a host that pulls from it.
fn mirror_of(h: &Host, pkg: &std::path::Path) -> (milspecd::config::Config, milspecd::mirror::Poller) {
    let mirror = h.f.path("mirror");
    common::repo().args(["publish", "--mirror"]).arg(&mirror).arg("--key").arg(&h.key).arg(pkg).assert().success();
    fs::write(h.f.path("machine-id"), "0123456789abcdef0123456789abcdef\n").unwrap();
    let mut cfg = h.cfg.clone();
    let mut source =
        milspecd::config::SourceConfig { url: format!("file://{}/", mirror.display()), ..Default::default() };
    source.machine_id_file = h.f.path("machine-id");
    cfg.source = Some(source);
    let poller = milspecd::mirror::Poller::new(&cfg).unwrap();
    (cfg, poller)
}

#[test]
fn a_refused_republish_is_downloaded_and_recorded_once_not_at_every_poll() {
    let mut h = Host::new();
    let k = h.boot(OLD);
    let one = h.pack("1.1.0", &[OLD], &[], "old-only.mspkg");
    assert!(matches!(h.install(&k, &one), Outcome::Committed { .. }));
    let k = h.boot(NEW);
    let changed = h.pack("1.1.0", &[OLD, NEW], &["--param", "mode5_level=3"], "changed.mspkg");
    let (cfg, poller) = mirror_of(&h, &changed);
    let mut e = Engine::open(cfg, &k).unwrap();
    let opts = milspecd::mirror::PollOptions { now: time::OffsetDateTime::now_utc(), force: false };
    let rejected = |h: &Host| h.events().iter().filter(|e| **e == EventKind::Rejected).count();
    let r = milspecd::check::check(&poller, &mut e, opts, &mut |_| {}).unwrap();
    assert!(
        matches!(&r, milspecd::check::CheckReport::BuildAdded { outcome: BuildOutcome::Rejected { .. }, .. }),
        "{r:?}"
    );
    assert_eq!(rejected(&h), 1);
    for _ in 0..3 {
        let r = milspecd::check::check(&poller, &mut e, opts, &mut |_| {}).unwrap();
        assert!(matches!(r, milspecd::check::CheckReport::NoBuild { .. }), "{r:?}");
    }
    assert_eq!(rejected(&h), 1, "refused once, not at every poll");
    assert_eq!(k.live_version(), None);
}

/// The fleet's key changed after the committed slot was staged (here
/// `keys_dir` swaps the old key for a new one, as a trust document's
/// rotation does): a kernel-build republish signed by the new key is
/// added, and the slot, republished, is judged by the trust that verified
/// it from then on.
#[test]
fn a_kernel_build_signed_by_a_key_rotated_in_later_is_added() {
    let mut h = Host::new();
    let k = h.boot(NEW);
    let one = h.pack("1.0.0", &[NEW], &[], "one.mspkg");
    assert!(matches!(h.install(&k, &one), Outcome::Committed { .. }));
    h.key = h.f.key("next", true);
    fs::remove_file(h.f.path("trust/release.pub")).unwrap();
    let republished = h.add_build(&one, "1.0.0", OLD, "republished.mspkg");
    let mut e = Engine::open(h.cfg.clone(), &k).unwrap();
    let o = e.add_build(fs::File::open(&republished).unwrap(), OLD).unwrap();
    assert_eq!(o, BuildOutcome::Added { version: "1.0.0".into(), kernel_release: OLD.into(), loaded: false });
    assert_eq!(e.status().unwrap().kernel.committed_kernels, vec![OLD.to_string(), NEW.to_string()]);
    drop(e);
    // The slot still loads at boot, by the trust recorded with it.
    let k = h.boot(NEW);
    assert_eq!(h.recover(&k), Recovery::LoadedCommitted { version: "1.0.0".into() });
}
