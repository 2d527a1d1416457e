//! The engine's decisions against a fake kernel: a temporary /proc and /sys
//! tree that a fake `Kernel` edits on load and unload. The real syscalls
//! are proven in the VM tier; this covers the logic quickly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::fake_kernel::{self, write, FakeKernel, Fault};
use common::*;
use milspec_format::testkit::FakeKo;
use milspecd::config::Config;
use milspecd::engine::{AfterCommit, Engine, InstallOptions, Outcome, Recovery, RejectReason, Unblock};
use milspecd::health::after_commit::Response;
use milspecd::health::committed_watch::CommittedWatch;
use milspecd::history::{EventKind, History};
use milspecd::kernel::{Kernel, KernelError, SealedModule};
use milspecd::kernel_paths::KernelPaths;
use milspecd::plan::Rejection;
use milspecd::slot_id::SlotId;
use milspecd::state::StateFile;

struct Host {
    f: Fixture,
    kernel: FakeKernel,
    cfg: Config,
    key: std::path::PathBuf,
}

impl Host {
    fn new() -> Self {
        let f = Fixture::new();
        let key = f.key("release", true);
        let kernel = FakeKernel::new(&f.path("root"), RELEASE);
        let mut cfg = Config::default();
        cfg.trust.keys_dir = f.path("trust");
        cfg.paths.state_dir = f.path("state");
        cfg.health.probation = Duration::from_millis(300);
        cfg.health.checks_dir = f.path("checks");
        cfg.kernel.proc = kernel.paths.proc.clone();
        cfg.kernel.sys = kernel.paths.sys.clone();
        cfg.kernel.kmsg = kernel.paths.kmsg.clone();
        Host { f, kernel, cfg, key }
    }

    fn package(&self, version: &str) -> std::path::PathBuf {
        let out = self.f.pack(version, &[&self.key], &format!("{version}.mspkg"));
        out
    }

    fn install(&self, version: &str) -> Outcome {
        self.install_opts(version, InstallOptions::default())
    }

    fn install_opts(&self, version: &str, opts: InstallOptions) -> Outcome {
        let pkg = self.package(version);
        let mut e = Engine::open(self.cfg.clone(), &self.kernel).unwrap();
        e.install(fs::File::open(pkg).unwrap(), opts).unwrap()
    }

    fn state(&self) -> milspecd::state::State {
        StateFile::new(&self.cfg.paths.state_dir).load().unwrap()
    }

    fn history(&self) -> Vec<EventKind> {
        History::new(&self.cfg.paths.state_dir).read(100).unwrap().into_iter().map(|e| e.event).collect()
    }
}

#[test]
fn install_swap_commit_and_carry_settings() {
    let h = Host::new();
    assert!(matches!(h.install("1.0.0"), Outcome::Committed { slot: SlotId::A, .. }));
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.0.0"));
    // The operator changes a runtime setting; it survives the swap.
    write(&h.kernel.paths.module_param("mode5_level"), "3\n");
    assert!(matches!(h.install("1.1.0"), Outcome::Committed { slot: SlotId::B, .. }));
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.1.0"));
    assert_eq!(h.kernel.param("mode5_level").as_deref(), Some("3"));
    let s = h.state();
    assert_eq!((s.committed, s.trial.is_none(), s.max_sequence), (Some(SlotId::B), true, 1_001_000_000));
    assert_eq!(
        h.history(),
        [
            EventKind::Staged,
            EventKind::Swapped,
            EventKind::Committed,
            EventKind::Staged,
            EventKind::Swapped,
            EventKind::Committed
        ]
    );
    assert!(matches!(h.install("1.1.0"), Outcome::AlreadyInstalled { .. }));
}

/// The engine answers `status()` from what it already knows; its report
/// reads the same as `milspecd status`, which reads the state folder itself.
#[test]
fn engine_status_matches_the_status_command() {
    let h = Host::new();
    assert!(matches!(h.install("1.0.0"), Outcome::Committed { slot: SlotId::A, .. }));
    let pkg = h.package("1.1.0");
    let mut e = Engine::open(h.cfg.clone(), &h.kernel).unwrap();
    let same = |e: &Engine<'_>| {
        let (mine, read) = (e.status().unwrap(), milspecd::status::read(&h.cfg).unwrap());
        assert_eq!(mine.to_text(), read.to_text());
        mine
    };
    assert_eq!(same(&e).committed_version.as_deref(), Some("1.0.0"));
    assert!(matches!(
        e.install(fs::File::open(pkg).unwrap(), InstallOptions::default()).unwrap(),
        Outcome::Committed { .. }
    ));
    let r = same(&e);
    assert_eq!((r.committed_slot, r.committed_version.as_deref()), (Some(SlotId::B), Some("1.1.0")));
    assert_eq!(e.facts().unwrap().committed_version.as_deref(), Some("1.1.0"));
}

/// The committed module is sealed and hashed before the swap and held
/// through probation, so a rollback only unloads and loads: here the
/// committed slot's file is damaged once the trial is live, and the
/// rollback still loads the bytes verified before the swap.
#[test]
fn rollback_loads_the_committed_module_made_ready_before_the_swap() {
    struct Damage(std::path::PathBuf);
    impl milspecd::engine::Observer for Damage {
        fn recorded(&self, ev: &milspecd::history::Event) {
            if ev.event == EventKind::Swapped {
                fs::remove_file(&self.0).unwrap();
                fs::write(&self.0, b"damaged").unwrap();
            }
        }
    }
    let mut h = Host::new();
    h.kernel.faults.insert("1.2.0".into(), Fault::Warn);
    assert!(matches!(h.install("1.1.0"), Outcome::Committed { slot: SlotId::A, .. }));
    let damage = Damage(h.cfg.paths.state_dir.join("slots/a/module.ko"));
    let pkg = h.package("1.2.0");
    let mut e = Engine::open(h.cfg.clone(), &h.kernel).unwrap();
    e.set_observer(&damage);
    let o = e.install(fs::File::open(pkg).unwrap(), InstallOptions::default()).unwrap();
    assert!(matches!(&o, Outcome::RolledBack { to: Some(v), .. } if v == "1.1.0"), "{o:?}");
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.1.0"));
    let s = h.state();
    assert_eq!((s.committed, s.trial.is_none()), (Some(SlotId::A), true));
}

/// An operator's unblock takes the version off the blocklist and names who
/// did it; the next install of it is tried again. A version that is not
/// blocklisted changes nothing but one `rejected` record.
#[test]
fn an_unblocked_version_is_installed_again_and_the_unblock_is_recorded() {
    let mut h = Host::new();
    h.kernel.faults.insert("1.2.0".into(), Fault::Warn);
    h.install("1.1.0");
    assert!(matches!(h.install("1.2.0"), Outcome::RolledBack { .. }));
    assert!(matches!(h.install("1.2.0"), Outcome::Rejected { .. }), "blocklisted");

    let state_file = h.cfg.paths.state_dir.join("state.json");
    let before = fs::read(&state_file).unwrap();
    let events = h.history().len();
    let mut e = Engine::open(h.cfg.clone(), &h.kernel).unwrap();
    let u = e.unblock(&"1.3.0".parse().unwrap(), "uid 0").unwrap();
    assert!(matches!(&u, Unblock::NotBlocked { blocked, .. } if blocked == &["1.2.0"]), "{u:?}");
    assert!(u.to_string().contains("1.3.0 is not blocklisted; blocklisted here: 1.2.0"), "{u}");
    assert_eq!(fs::read(&state_file).unwrap(), before, "a refused unblock changes no byte of the state");
    assert_eq!(h.history()[events..], [EventKind::Rejected]);

    let u = e.unblock(&"1.2.0".parse().unwrap(), "uid 0").unwrap();
    assert!(matches!(&u, Unblock::Unblocked(b) if b.version.to_string() == "1.2.0"), "{u:?}");
    drop(e);
    assert!(h.state().blocklist.is_empty());
    let last = History::new(&h.cfg.paths.state_dir).read(1).unwrap().pop().unwrap();
    assert_eq!((last.event, last.version.as_deref()), (EventKind::Unblocked, Some("1.2.0")));
    let reason = last.reason.unwrap();
    assert!(reason.contains("unblocked by uid 0") && reason.contains("kernel log: WARNING"), "{reason}");
    // Fixed (here: the fault is gone), it installs and commits.
    h.kernel.faults.clear();
    assert!(matches!(h.install("1.2.0"), Outcome::Committed { .. }));
}

/// Another driver's WARN during the trial is not the module's fault: by
/// default the trial goes on (a whole window after it) and commits, the
/// commit naming the rise and the other driver's report; with
/// `[health] unattributed = "rollback"` it is rolled back and blocklisted.
#[test]
fn another_drivers_warn_commits_by_default_and_rolls_back_when_configured() {
    let mut h = Host::new();
    h.kernel.faults.insert("1.2.0".into(), Fault::WarnElsewhere);
    h.kernel.faults.insert("1.3.0".into(), Fault::WarnElsewhere);
    h.install("1.1.0");
    assert!(matches!(h.install("1.2.0"), Outcome::Committed { .. }), "default: extend");
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.2.0"));
    let last = History::new(&h.cfg.paths.state_dir).read(1).unwrap().pop().unwrap();
    assert_eq!(last.event, EventKind::Committed);
    let reason = last.reason.unwrap();
    assert!(
        reason.starts_with("faults not attributed to the module: warn_count rose from 0 to 1")
            && reason.contains("[other_driver]"),
        "{reason}"
    );

    h.cfg.health.unattributed = milspecd::health::Unattributed::Rollback;
    match h.install("1.3.0") {
        Outcome::RolledBack { to, reason, .. } => {
            assert_eq!(to.as_deref(), Some("1.2.0"));
            assert!(reason.contains("warn_count rose from 1 to 2"), "{reason}");
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(h.state().blocklist[0].version.to_string(), "1.3.0");
}

/// After the commit: a WARN naming the module is recorded as a `fault`
/// and nothing else changes unless `after_commit_rollback` is set; then it
/// rolls back to the version before, which blocklists the faulty one once
/// committed. Another driver's WARN and a trial's own are no such fault.
#[test]
fn a_fault_after_the_commit_is_recorded_and_rolls_back_only_when_configured() {
    let mut h = Host::new();
    h.kernel.faults.insert("1.1.5".into(), Fault::Warn);
    h.install("1.1.0");
    let mut watch = CommittedWatch::arm(&h.kernel.paths).unwrap();
    assert!(matches!(h.install("1.1.5"), Outcome::RolledBack { .. }));
    watch.rearm().unwrap(); // as the daemon does after each action
    h.install("1.2.0");
    watch.rearm().unwrap();
    let warn = |module: &str| {
        let mut f = fs::OpenOptions::new().append(true).open(&h.kernel.paths.kmsg).unwrap();
        std::io::Write::write_all(&mut f, fake_kernel::warn_report(module, 200_000_000).as_bytes()).unwrap();
    };
    warn("other_driver");
    assert_eq!(watch.look(), None, "another driver's report");
    warn("dell_milspec");
    let fault = watch.look().expect("a report naming the module");

    let mut e = Engine::open(h.cfg.clone(), &h.kernel).unwrap();
    match e.committed_fault(&fault).unwrap() {
        AfterCommit::Recorded { version, response: Response::Record, refused: None } => assert_eq!(version, "1.2.0"),
        o => panic!("{o:?}"),
    }
    drop(e);
    let last = History::new(&h.cfg.paths.state_dir).read(1).unwrap().pop().unwrap();
    assert_eq!(
        (last.event, last.version.as_deref(), last.kernel.as_deref()),
        (EventKind::Fault, Some("1.2.0"), Some(RELEASE))
    );
    let reason = last.reason.unwrap();
    assert!(reason.contains("[dell_milspec]") && reason.contains("no rollback configured"), "{reason}");
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.2.0"));
    assert_eq!(h.state().blocklist.len(), 1, "1.1.5 only");

    h.cfg.health.after_commit_rollback = Duration::from_secs(24 * 3600);
    warn("dell_milspec");
    let fault = watch.look().expect("the next report");
    let mut e = Engine::open(h.cfg.clone(), &h.kernel).unwrap();
    match e.committed_fault(&fault).unwrap() {
        AfterCommit::RolledBack { version, outcome: Outcome::Committed { version: to, .. } } => {
            assert_eq!((version.as_str(), to.as_str()), ("1.2.0", "1.1.0"))
        }
        o => panic!("{o:?}"),
    }
    drop(e);
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.1.0"));
    let s = h.state();
    let blocked = s.blocklist.iter().find(|b| b.version.to_string() == "1.2.0").expect("1.2.0 blocklisted");
    assert!(blocked.reason.starts_with("fault after commit: "), "{}", blocked.reason);
    assert_eq!(
        h.history().iter().rev().take(3).rev().cloned().collect::<Vec<_>>(),
        [EventKind::Fault, EventKind::Swapped, EventKind::Committed]
    );

    // The live module is not the committed one (changed behind the
    // daemon's back): not recorded.
    let fault = milspecd::health::after_commit::CommittedFault { reason: "x".into(), more: 0 };
    write(&h.kernel.paths.module_dir().join("version"), "9.9.9\n");
    let mut e = Engine::open(h.cfg.clone(), &h.kernel).unwrap();
    assert!(matches!(e.committed_fault(&fault).unwrap(), AfterCommit::NotCommitted));
}

/// A declared check that cannot be read refuses the install before any
/// swap (one `rejected` record, nothing else changed); a valid one that
/// fails through the window rolls the trial back before it ends.
#[test]
fn declared_checks_refuse_when_invalid_and_roll_back_when_failing() {
    let mut h = Host::new();
    h.install("1.1.0");
    fs::create_dir_all(&h.cfg.health.checks_dir).unwrap();
    let check = h.cfg.health.checks_dir.join("port.toml");
    fs::write(&check, "type = \"tcp\"\n").unwrap();
    let state_file = h.cfg.paths.state_dir.join("state.json");
    let before = fs::read(&state_file).unwrap();
    let events = h.history().len();
    match h.install("1.2.0") {
        Outcome::Rejected { reason } => {
            let text = reason.to_string();
            assert!(
                text.starts_with("health checks: ") && text.contains("port.toml") && text.contains("needs address"),
                "{text}"
            );
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(fs::read(&state_file).unwrap(), before);
    assert_eq!(h.history()[events..], [EventKind::Rejected]);
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.1.0"));

    // A closed port, checked every 100 ms, twice in a row: a 30 s window
    // ends in about 200 ms.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    fs::write(
        &check,
        format!("type = \"tcp\"\naddress = \"{closed}\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nfailures = 2\n"),
    )
    .unwrap();
    h.cfg.health.probation = Duration::from_secs(30);
    let start = Instant::now();
    match h.install("1.2.0") {
        Outcome::RolledBack { reason, .. } => {
            assert!(reason.contains("health check health.d/port.toml failed: cannot connect"), "{reason}")
        }
        o => panic!("{o:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(15), "{:?}", start.elapsed());
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.1.0"));
}

#[test]
fn warn_rolls_back_and_is_never_retried() {
    let mut h = Host::new();
    h.kernel.faults.insert("1.2.0".into(), Fault::Warn);
    h.install("1.1.0");
    write(&h.kernel.paths.module_param("mode5_level"), "2\n");
    match h.install("1.2.0") {
        Outcome::RolledBack { to, reason, .. } => {
            assert_eq!(to.as_deref(), Some("1.1.0"));
            assert!(reason.contains("kernel log: WARNING") && reason.contains("[dell_milspec]"), "{reason}");
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.1.0"));
    assert_eq!(h.kernel.param("mode5_level").as_deref(), Some("2"), "checkpointed setting restored");
    let s = h.state();
    assert_eq!((s.committed, s.trial.is_none()), (Some(SlotId::A), true));
    assert_eq!(s.blocklist[0].version.to_string(), "1.2.0");
    assert!(h.history().contains(&EventKind::RolledBack));
    match h.install("1.2.0") {
        Outcome::Rejected { reason } => assert!(reason.to_string().contains("blocklisted"), "{reason}"),
        o => panic!("{o:?}"),
    }
    // A later good version still goes through, into the free slot.
    assert!(matches!(h.install("1.3.0"), Outcome::Committed { slot: SlotId::B, .. }));
}

#[test]
fn refused_before_swap_leaves_module_alone() {
    let mut h = Host::new();
    h.install("2.0.0");
    let loads = h.kernel.loads.borrow().len();
    // Downgrade.
    assert!(
        matches!(h.install("1.0.0"), Outcome::Rejected { reason: reason @ RejectReason::Plan(Rejection::Downgrade { .. }) } if reason.to_string().contains("downgrade"))
    );
    // Another kernel's module.
    let ko = h.f.ko("other.ko", FakeKo { version: "3.0.0", kernel_release: "6.1.0-28-amd64", ..FakeKo::default() });
    repo()
        .args(["pack", "--version", "3.0.0", "--module"])
        .arg(&ko)
        .arg("--key")
        .arg(&h.key)
        .arg("--out")
        .arg(h.f.path("other.mspkg"))
        .assert()
        .success();
    let mut e = Engine::open(h.cfg.clone(), &h.kernel).unwrap();
    let o = e.install(fs::File::open(h.f.path("other.mspkg")).unwrap(), InstallOptions::default()).unwrap();
    assert!(
        matches!(&o, Outcome::Rejected { reason } if reason.to_string().contains("no payload for this kernel")),
        "{o:?}"
    );
    drop(e);
    // Busy old module.
    h.kernel.faults.insert("2.0.0".into(), Fault::Busy);
    assert!(
        matches!(h.install("2.1.0"), Outcome::Rejected { reason: reason @ RejectReason::OldModuleBusy { .. } } if reason.to_string().contains("in use"))
    );
    assert_eq!(h.kernel.loads.borrow().len(), loads);
    assert_eq!(h.kernel.live_version().as_deref(), Some("2.0.0"));
    assert!(h.state().trial.is_none());
    // A tampered package.
    let pkg = h.package("2.2.0");
    let mut b = fs::read(&pkg).unwrap();
    let at = find(&b, b"license=GPL");
    b[at] ^= 1;
    let mut e = Engine::open(h.cfg.clone(), &h.kernel).unwrap();
    let o = e.install(&b[..], InstallOptions::default()).unwrap();
    assert!(
        matches!(&o, Outcome::Rejected { reason: reason @ RejectReason::InvalidPackage(_) } if reason.to_string().contains("sha256")),
        "{o:?}"
    );
    assert_eq!(h.kernel.live_version().as_deref(), Some("2.0.0"));
    // Only one engine at a time.
    let e2 = Engine::open(h.cfg.clone(), &h.kernel);
    assert!(e2.unwrap_err().to_string().contains("state lock"));
}

#[test]
fn load_failure_reloads_old_at_once() {
    let mut h = Host::new();
    h.kernel.faults.insert("1.1.0".into(), Fault::NoLoad);
    h.install("1.0.0");
    match h.install("1.1.0") {
        Outcome::RolledBack { to, reason, .. } => {
            assert_eq!(to.as_deref(), Some("1.0.0"));
            assert!(reason.contains("load failed"), "{reason}");
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.0.0"));
}

/// Warns at load, and then its unload hangs in the kernel.
struct Stuck<'a>(&'a FakeKernel);

impl Kernel for Stuck<'_> {
    fn load(&self, i: &SealedModule, p: &str) -> Result<(), KernelError> {
        self.0.load(i, p)
    }
    fn unload(&self, paths: &KernelPaths, t: Duration) -> Result<(), KernelError> {
        if self.0.live_version().as_deref() == Some("1.1.0") {
            return Err(KernelError::UnloadTimeout { module: paths.module.clone(), timeout: t });
        }
        self.0.unload(paths, t)
    }
    fn boottime(&self) -> Duration {
        self.0.boottime()
    }
}

#[test]
fn stuck_module_means_rollback_pending_reboot() {
    let h = Host::new();
    h.install("1.0.0");
    let mut k2 = FakeKernel::new(&h.f.path("root"), RELEASE);
    k2.faults.insert("1.1.0".into(), Fault::Warn);
    let stuck = Stuck(&k2);
    let pkg = h.package("1.1.0");
    let mut e = Engine::open(h.cfg.clone(), &stuck).unwrap();
    let o = e.install(fs::File::open(pkg).unwrap(), InstallOptions::default()).unwrap();
    assert!(matches!(o, Outcome::RollbackPendingReboot { .. }), "{o:?}");
    assert_eq!(o.exit_code(), 3);
    let s = h.state();
    assert!(s.pending_reboot.is_some() && s.trial.is_none());
    assert_eq!(s.committed, Some(SlotId::A));
    // Until a reboot, installs are refused; after one, the committed slot loads.
    let o = e.install(fs::File::open(h.package("1.3.0")).unwrap(), InstallOptions::default()).unwrap();
    assert!(matches!(&o, Outcome::Rejected { reason } if reason.to_string().contains("reboot")), "{o:?}");
    drop(e);
    fs::remove_dir_all(k2.paths.module_dir()).unwrap();
    fs::remove_dir_all(k2.paths.milspec_dir()).unwrap();
    write(&k2.paths.boot_id(), "boot-2\n");
    let mut e = Engine::open(h.cfg.clone(), &k2).unwrap();
    assert!(matches!(e.recover().unwrap(), Recovery::Clean | Recovery::LoadedCommitted { .. }));
    let _ = e.recover().unwrap();
    assert_eq!(k2.live_version().as_deref(), Some("1.0.0"));
    assert!(h.state().pending_reboot.is_none());
}

#[test]
fn reboot_during_trial_rolls_back_at_start() {
    let h = Host::new();
    h.install("1.0.0");
    let sf = StateFile::new(&h.cfg.paths.state_dir);
    assert!(matches!(h.install("1.1.0"), Outcome::Committed { .. }));
    // Now fake a trial of 1.2.0 in slot a (the inactive one), from another boot.
    let mut st = sf.load().unwrap();
    let committed = st.committed.unwrap();
    let trial_slot = committed.other();
    let trial = milspecd::state::Trial {
        slot: trial_slot,
        version: "1.2.0".parse().unwrap(),
        sequence: 1_002_000_000,
        phase: milspecd::state::TrialPhase::Watching,
        boot_id: "boot-0".into(),
        started_ms: 5,
        window_ms: 30_000,
        checkpoint: milspecd::state::Checkpoint {
            slot: Some(committed),
            version: Some("1.1.0".into()),
            params: BTreeMap::new(),
            baseline: Default::default(),
        },
        rollback_reason: None,
    };
    st.trial = Some(trial.clone());
    sf.save(&st).unwrap();
    // After the reboot no module is loaded.
    fs::remove_dir_all(h.kernel.paths.module_dir()).unwrap();
    fs::remove_dir_all(h.kernel.paths.milspec_dir()).unwrap();
    let mut e = Engine::open(h.cfg.clone(), &h.kernel).unwrap();
    match e.recover().unwrap() {
        Recovery::RolledBack(Outcome::RolledBack { to, reason, .. }) => {
            assert_eq!(to.as_deref(), Some("1.1.0"));
            assert!(reason.contains("rebooted during the trial"), "{reason}");
        }
        r => panic!("{r:?}"),
    }
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.1.0"));
    let s = sf.load().unwrap();
    assert!(s.trial.is_none());
    // No evidence against the module: inconclusive, tried again, not blocklisted.
    let v120: semver::Version = "1.2.0".parse().unwrap();
    assert!(s.is_blocked(&v120).is_none());
    assert_eq!(s.inconclusive_count(&v120), 1);
    drop(e);

    // The same again, and this time pstore kept a panic naming the module:
    // guilty, blocklisted at once.
    let mut st = sf.load().unwrap();
    st.trial = Some(trial.clone());
    sf.save(&st).unwrap();
    let pstore = h.kernel.paths.pstore();
    fs::create_dir_all(&pstore).unwrap();
    fs::write(
        pstore.join("dmesg-efi-177"),
        "<4>[ 3.1] Modules linked in: dell_milspec(O)\n<4>[ 3.1] RIP: 0010:milspec_trip+0x15/0x30 [dell_milspec]\n<0>[ 3.2] Kernel panic - not syncing: Fatal exception\n",
    )
    .unwrap();
    fs::remove_dir_all(h.kernel.paths.module_dir()).unwrap();
    fs::remove_dir_all(h.kernel.paths.milspec_dir()).unwrap();
    let mut e = Engine::open(h.cfg.clone(), &h.kernel).unwrap();
    match e.recover().unwrap() {
        Recovery::RolledBack(Outcome::RolledBack { reason, .. }) => {
            assert!(reason.contains("kernel panic in the module") && reason.contains("dmesg-efi-177"), "{reason}");
        }
        r => panic!("{r:?}"),
    }
    let s = sf.load().unwrap();
    assert!(s.is_blocked(&v120).is_some(), "a panic naming the module is its fault");
}

#[test]
fn corrupt_state_is_an_error_not_a_reset() {
    let h = Host::new();
    h.install("1.0.0");
    let sf = StateFile::new(&h.cfg.paths.state_dir);
    fs::write(sf.path(), b"{ not json").unwrap();
    let mut e = Engine::open(h.cfg.clone(), &h.kernel).unwrap();
    let err = e.recover().unwrap_err().to_string();
    assert!(err.contains("corrupt"), "{err}");
    assert_eq!(fs::read(sf.path()).unwrap(), b"{ not json");
}

/// Every file and folder below `dir`, by relative path, with its bytes
/// (folders as `None`).
fn tree(dir: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Option<Vec<u8>>>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                out.insert(format!("{rel}/"), None);
                walk(root, &p, out);
            } else {
                out.insert(rel, Some(fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The state folder is byte for byte `before`, but for exactly one
/// `rejected` event appended to the history.
fn assert_only_one_rejected(before: &BTreeMap<String, Option<Vec<u8>>>, dir: &Path, what: &str) {
    let mut after = tree(dir);
    let mut before = before.clone();
    let old = before.remove("history.jsonl").flatten().unwrap_or_default();
    let new = after.remove("history.jsonl").flatten().unwrap_or_default();
    let changed: Vec<_> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(changed.is_empty(), "{what}: the state folder changed: {changed:?}");
    assert!(new.starts_with(&old), "{what}: the history was rewritten, not appended to");
    let added = String::from_utf8(new[old.len()..].to_vec()).unwrap();
    let lines: Vec<&str> = added.lines().collect();
    assert_eq!(lines.len(), 1, "{what}: want exactly one new history line: {added}");
    let ev: milspecd::history::Event = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(ev.event, EventKind::Rejected, "{what}: {added}");
}

fn copy_tree(from: &Path, to: &Path) {
    if to.exists() {
        fs::remove_dir_all(to).unwrap();
    }
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &dest);
        } else {
            fs::copy(&p, &dest).unwrap();
        }
    }
}

impl Host {
    /// 1.0.0 committed in slot a, then 1.1.0 in slot b: slot a holds the
    /// version a rollback goes back to.
    fn two_slots() -> Self {
        let h = Host::new();
        assert!(matches!(h.install("1.0.0"), Outcome::Committed { slot: SlotId::A, .. }));
        assert!(matches!(h.install("1.1.0"), Outcome::Committed { slot: SlotId::B, .. }));
        h
    }

    fn install_bytes(&self, bytes: &[u8]) -> Outcome {
        let mut e = Engine::open(self.cfg.clone(), &self.kernel).unwrap();
        e.install(bytes, InstallOptions::default()).unwrap()
    }

    fn revert(&self) -> Result<Outcome, milspecd::engine::EngineError> {
        let mut e = Engine::open(self.cfg.clone(), &self.kernel).unwrap();
        e.revert("test rollback")
    }
}

#[test]
fn flipped_or_truncated_payload_leaves_both_slots_byte_identical() {
    let h = Host::two_slots();
    let state_dir = h.cfg.paths.state_dir.clone();
    let good = fs::read(h.package("1.2.0")).unwrap();
    let at = find(&good, b"license=GPL");

    let mut flipped = good.clone();
    flipped[at] ^= 1;
    let before = tree(&state_dir);
    let o = h.install_bytes(&flipped);
    assert!(matches!(&o, Outcome::Rejected { reason } if reason.to_string().contains("sha256")), "{o:?}");
    assert_only_one_rejected(&before, &state_dir, "one payload byte flipped");

    let before = tree(&state_dir);
    let o = h.install_bytes(&good[..at]);
    assert!(matches!(&o, Outcome::Rejected { reason } if reason.to_string().contains("truncated")), "{o:?}");
    assert_only_one_rejected(&before, &state_dir, "truncated in the payload");

    // The way back is still there.
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.1.0"));
    assert!(matches!(h.revert().unwrap(), Outcome::Committed { slot: SlotId::A, .. }));
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.0.0"));
}

#[test]
fn busy_old_module_rejection_leaves_both_slots_byte_identical() {
    let mut h = Host::two_slots();
    let state_dir = h.cfg.paths.state_dir.clone();
    h.kernel.faults.insert("1.1.0".into(), Fault::Busy);
    let before = tree(&state_dir);
    let o = h.install("1.2.0");
    assert!(matches!(&o, Outcome::Rejected { reason } if reason.to_string().contains("in use")), "{o:?}");
    assert_only_one_rejected(&before, &state_dir, "old module busy");
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.1.0"));
    // Slot a still holds 1.0.0, the committed earlier version: a rollback
    // goes back to it, not forward to the untried 1.2.0.
    h.kernel.faults.clear();
    assert!(matches!(h.revert().unwrap(), Outcome::Committed { slot: SlotId::A, .. }));
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.0.0"));
    assert!(h.state().is_blocked(&"1.1.0".parse().unwrap()).is_some());
    assert!(h.state().is_blocked(&"1.2.0".parse().unwrap()).is_none());
}

#[test]
fn rollback_refuses_a_version_never_committed_here() {
    let h = Host::two_slots();
    let sf = StateFile::new(&h.cfg.paths.state_dir);
    let hist = h.cfg.paths.state_dir.join("history.jsonl");
    let mut st = sf.load().unwrap();
    assert_eq!(st.committed_versions, ["1.0.0".parse().unwrap(), "1.1.0".parse().unwrap()]);
    // As if 1.0.0 had been staged in slot a but never committed (what an
    // install refused for a busy module used to leave behind).
    st.committed_versions.retain(|v| v.to_string() != "1.0.0");
    sf.save(&st).unwrap();
    let full = fs::read_to_string(&hist).unwrap();
    let without: String = full
        .lines()
        .filter(|l| !(l.contains("\"event\":\"committed\"") && l.contains("\"version\":\"1.0.0\"")))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&hist, &without).unwrap();
    let before = tree(&h.cfg.paths.state_dir);
    match h.revert() {
        Err(milspecd::engine::EngineError::NothingToRollBack(r)) => {
            assert_eq!(
                r,
                milspecd::engine::RollbackRefusal::NeverCommitted { slot: SlotId::A, version: "1.0.0".into() }
            );
            assert!(r.to_string().contains("never committed on this host"), "{r}");
        }
        o => panic!("{o:?}"),
    }
    assert_eq!(tree(&h.cfg.paths.state_dir), before, "a refused rollback changes nothing");
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.1.0"));
    // A record from before versions were kept: the history still knows.
    fs::write(&hist, &full).unwrap();
    assert!(matches!(h.revert().unwrap(), Outcome::Committed { slot: SlotId::A, .. }));
}

#[test]
fn staging_left_by_a_stopped_install_is_removed_and_never_a_slot() {
    let h = Host::two_slots();
    let slots = h.cfg.paths.state_dir.join("slots");
    fs::create_dir(slots.join(".staging-abc123")).unwrap();
    fs::write(slots.join(".staging-abc123/module.ko"), b"half").unwrap();
    let e = Engine::open(h.cfg.clone(), &h.kernel).unwrap();
    drop(e);
    let mut names: Vec<_> = fs::read_dir(&slots).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
}

/// A small seeded generator (xorshift64*), so a failing case can be
/// replayed with `MILSPEC_PROPTEST_SEED`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Mutates a valid package the way a hostile mirror or a bad disk could.
fn mutate(rng: &mut Rng, good: &[u8], members: &[(String, Vec<u8>)], payload_at: usize) -> (String, Vec<u8>) {
    let mut b = good.to_vec();
    match rng.below(7) {
        0 => {
            let n = 1 + rng.below(4);
            for _ in 0..n {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            (format!("{n} bit(s) flipped anywhere"), b)
        }
        1 => {
            let i = payload_at + rng.below(64);
            b[i] ^= 1 << rng.below(8);
            (format!("payload byte {i} flipped"), b)
        }
        2 => {
            let n = rng.below(b.len());
            b.truncate(n);
            (format!("truncated to {n} bytes"), b)
        }
        3 => {
            let n = rng.below(4096);
            let r: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            (format!("{n} random bytes"), r)
        }
        4 => {
            let mut m = members.to_vec();
            for i in (1..m.len()).rev() {
                m.swap(i, rng.below(i + 1));
            }
            let order: Vec<_> = m.iter().map(|(p, _)| p.clone()).collect();
            (format!("members reordered: {order:?}"), rebuild(&m, &[]))
        }
        5 => {
            let mut m = members.to_vec();
            let i = rng.below(m.len());
            let dup = m[i].clone();
            m.push(dup);
            (format!("member {} appears twice", m[i].0), rebuild(&m, &[]))
        }
        _ => {
            let i = rng.below(b.len());
            let n = 1 + rng.below(512);
            let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            b.splice(i..i, junk);
            (format!("{n} random bytes inserted at {i}"), b)
        }
    }
}

#[test]
fn any_rejected_install_changes_nothing_but_one_history_line() {
    let seed: u64 = std::env::var("MILSPEC_PROPTEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    let cases: usize = std::env::var("MILSPEC_PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(150);
    let mut h = Host::two_slots();
    let state_dir = h.cfg.paths.state_dir.clone();
    let root = h.f.path("root");
    let (gold_state, gold_root) = (h.f.path("gold-state"), h.f.path("gold-root"));
    copy_tree(&state_dir, &gold_state);
    copy_tree(&root, &gold_root);
    let pkg = h.package("1.2.0");
    let good = fs::read(&pkg).unwrap();
    let members = entries(&pkg);
    let payload_at = find(&good, b"license=GPL");
    let mut rng = Rng(seed);
    let (mut rejected, mut accepted) = (0, 0);
    let t0 = Instant::now();
    for case in 0..cases {
        let (what, bytes) = mutate(&mut rng, &good, &members, payload_at);
        let busy = rng.below(4) == 0;
        if busy {
            h.kernel.faults.insert("1.1.0".into(), Fault::Busy);
        } else {
            h.kernel.faults.clear();
        }
        let what = format!("seed {seed} case {case}: {what}{}", if busy { ", old module busy" } else { "" });
        let before = tree(&state_dir);
        let mut e = Engine::open(h.cfg.clone(), &h.kernel).unwrap();
        let o = e.install(&bytes[..], InstallOptions::default());
        drop(e);
        match o {
            Ok(Outcome::Rejected { .. }) => {
                assert_only_one_rejected(&before, &state_dir, &what);
                assert_eq!(h.kernel.live_version().as_deref(), Some("1.1.0"), "{what}");
                rejected += 1;
            }
            Ok(Outcome::Committed { .. }) => {
                // The change did not matter (tar padding, a header field
                // tar ignores): a real install. Start the next case afresh.
                copy_tree(&gold_state, &state_dir);
                copy_tree(&gold_root, &root);
                accepted += 1;
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    eprintln!(
        "property: seed {seed}: {cases} mutated packages, {rejected} rejected with nothing changed, {accepted} accepted; {} ms",
        t0.elapsed().as_millis()
    );
    assert!(rejected > cases / 2, "{rejected} of {cases} rejected");
}

/// Refuses its first load as a kernel enforcing module signatures does.
struct KeyRejected<'a>(&'a FakeKernel, std::cell::Cell<bool>);

impl Kernel for KeyRejected<'_> {
    fn load(&self, i: &SealedModule, p: &str) -> Result<(), KernelError> {
        if !self.1.replace(true) {
            return Err(KernelError::Load { errno: libc::EKEYREJECTED, detail: "signature rejected".into() });
        }
        self.0.load(i, p)
    }
    fn unload(&self, paths: &KernelPaths, t: Duration) -> Result<(), KernelError> {
        self.0.unload(paths, t)
    }
    fn boottime(&self) -> Duration {
        self.0.boottime()
    }
}

#[test]
fn an_enforcing_kernel_refuses_an_unsigned_build_before_the_unload() {
    let h = Host::new();
    h.install("1.0.0");
    let loads = h.kernel.loads.borrow().len();
    let put = |p: std::path::PathBuf, text: &str| {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    };
    put(h.kernel.paths.sig_enforce(), "Y\n");
    put(
        h.kernel.paths.proc_keys(),
        "1a2b3c4d I------     1 perm 1f0b0000     0     0 asymmetric Fleet modules: caddfa9cd6f7a7a716a85b47a78278d5681bd0fe: X509.rsa 681bd0fe []\n",
    );
    let before = tree(&h.cfg.paths.state_dir);
    let o = h.install("1.1.0");
    let Outcome::Rejected { reason: reason @ RejectReason::Plan(Rejection::UnsignedModule { .. }) } = &o else {
        panic!("{o:?}");
    };
    assert!(reason.to_string().contains("module.sig_enforce"), "{reason}");
    assert_eq!(h.kernel.loads.borrow().len(), loads, "nothing loaded");
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.0.0"), "the live module was never unloaded");
    assert_only_one_rejected(&before, &h.cfg.paths.state_dir, "unsigned build under sig_enforce");
}

#[test]
fn a_signature_refused_at_load_rolls_back_and_is_not_blocklisted() {
    let h = Host::new();
    h.install("1.0.0");
    let kernel = KeyRejected(&h.kernel, std::cell::Cell::new(false));
    let pkg = h.package("1.1.0");
    let mut e = Engine::open(h.cfg.clone(), &kernel).unwrap();
    match e.install(fs::File::open(pkg).unwrap(), InstallOptions::default()).unwrap() {
        Outcome::RolledBack { to, reason, .. } => {
            assert_eq!(to.as_deref(), Some("1.0.0"));
            assert!(reason.contains("host policy refused"), "{reason}");
        }
        o => panic!("{o:?}"),
    }
    drop(e);
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.0.0"));
    assert!(
        h.state().is_blocked(&"1.1.0".parse().unwrap()).is_none(),
        "a host-policy refusal is not the module's fault"
    );
}

/// Every record of an action names its actor and origin, the package's
/// hash (of the bytes read, a refused package's too) and signers, and the
/// kernel; the chain verifies.
#[test]
fn records_name_the_actor_origin_package_and_kernel() {
    use milspecd::history::{Actor, Origin, Verdict};
    let h = Host::new();
    let pkg = h.package("1.1.0");
    let want = milspec_format::Sha256Digest::of(&fs::read(&pkg).unwrap()).to_string();
    let mut e = Engine::open(h.cfg.clone(), &h.kernel).unwrap();
    e.act_for(Actor::Cli { uid: 0 }, Some(Origin::File { file: pkg.display().to_string() }));
    assert!(matches!(
        e.install(fs::File::open(&pkg).unwrap(), InstallOptions::default()).unwrap(),
        Outcome::Committed { .. }
    ));
    e.act_for(Actor::Timer, Some(Origin::Mirror { mirror: "https://m.example/".into(), index_version: 9 }));
    let garbage = h.f.path("garbage.mspkg");
    fs::write(&garbage, vec![b'x'; 5000]).unwrap();
    let bad = milspec_format::Sha256Digest::of(&fs::read(&garbage).unwrap()).to_string();
    assert!(matches!(
        e.install(fs::File::open(&garbage).unwrap(), InstallOptions::default()).unwrap(),
        Outcome::Rejected { .. }
    ));
    drop(e);
    let history = History::new(&h.cfg.paths.state_dir);
    let events = history.read(100).unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.event.clone()).collect();
    assert_eq!(kinds, [EventKind::Staged, EventKind::Swapped, EventKind::Committed, EventKind::Rejected]);
    for ev in &events[..3] {
        assert_eq!(ev.actor, Some(Actor::Cli { uid: 0 }), "{ev:?}");
        assert_eq!(ev.origin, Some(Origin::File { file: pkg.display().to_string() }), "{ev:?}");
        assert_eq!(ev.sha256.as_deref(), Some(want.as_str()), "{ev:?}");
        assert_eq!(ev.signers.len(), 1, "{ev:?}");
        assert_eq!(ev.kernel.as_deref(), Some(RELEASE), "{ev:?}");
    }
    let rejected = &events[3];
    assert_eq!(rejected.actor, Some(Actor::Timer));
    assert!(matches!(&rejected.origin, Some(Origin::Mirror { index_version: 9, .. })), "{rejected:?}");
    assert_eq!(rejected.sha256.as_deref(), Some(bad.as_str()), "the refused bytes are named");
    assert!(rejected.signers.is_empty());
    let Verdict::Ok(v) = history.verify().unwrap() else { panic!("{:?}", history.verify()) };
    assert_eq!((v.records, v.last_n), (4, Some(4)));
}
