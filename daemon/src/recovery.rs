//! Recovery as a decision: a pure function from the state record and what
//! was found on the host to what recovery does. Nothing here touches the
//! disk or the kernel; [`crate::engine::Engine::recover`] gathers the
//! facts, asks [`recovery_plan`], and carries the plan out.
//!
//! Each row of the recovery table in `docs/engine.md` has its unit test
//! below, named after the row.

use crate::kernel::LoadedModule;
use crate::slot_id::SlotId;
use crate::state::{State, TrialPhase, Verdict};

/// What recovery found on the host, read just before deciding.
#[derive(Debug, Clone, Default)]
pub struct RecoveryFacts {
    /// `/proc/sys/kernel/random/boot_id` now.
    pub boot_id: String,
    /// The loaded module, if one is loaded.
    pub live: Option<LoadedModule>,
    /// The committed slot and the version it holds, when it is valid.
    /// Read only when the record holds no trial.
    pub committed: Option<(SlotId, String)>,
    /// The committed slot holds a build for the running kernel.
    pub committed_build: bool,
    /// That build failed here and is blocked (a crash came between the
    /// block and its unload).
    pub committed_blocked: bool,
    /// The running kernel's release.
    pub kernel_release: String,
    /// `[kernel] adopt_unmanaged`: replace a loaded module that matches no slot.
    pub adopt_unmanaged: bool,
    /// A panic record kept across the reboot (pstore) that names the
    /// module in a call trace, written since the trial's last save.
    pub panic_evidence: Option<String>,
    /// `[health] inconclusive_retries`.
    pub inconclusive_retries: u32,
}

/// What recovery does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryPlan {
    /// A pending reboot from an earlier boot: clear it first (the stuck
    /// version it names), then carry out `action`.
    pub clear_pending_reboot: Option<String>,
    pub action: RecoveryAction,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryAction {
    /// The reboot a stuck rollback asked for has not happened yet.
    StillPendingReboot { reason: String },
    /// Roll the trial back to its checkpoint with `reason`; `note` is the
    /// `recovered` history record written first; `verdict` judges the
    /// version (a trial cut short by a reboot is inconclusive, unless a
    /// panic record names the module).
    RollBack { reason: String, note: String, verdict: Verdict },
    /// The swap stopped before the old module was unloaded: keep it.
    AbandonSwap,
    /// The trial module is live: check it now, then watch for the rest of
    /// its window.
    ResumeTrial,
    /// No module is loaded: load the committed slot.
    LoadCommitted,
    /// No module is loaded and the committed slot has no build for the
    /// running kernel: nothing to load; reported, never an error.
    NoBuild,
    /// The committed version's build for this kernel is loaded but
    /// blocked (it failed here): unload it and drop it from the slot.
    UnloadBlockedBuild,
    /// The loaded module matches no committed slot: report it, and
    /// replace it with the committed slot when `replace`.
    Drift { replace: bool },
    /// The record and the kernel agree.
    Clean,
}

/// Decides what recovery does, from the record and the host's facts.
pub fn recovery_plan(state: &State, facts: &RecoveryFacts) -> RecoveryPlan {
    let mut clear_pending_reboot = None;
    if let Some(p) = &state.pending_reboot {
        if p.boot_id == facts.boot_id {
            let action = RecoveryAction::StillPendingReboot { reason: p.reason.clone() };
            return RecoveryPlan { clear_pending_reboot: None, action };
        }
        clear_pending_reboot = Some(p.stuck_version.clone());
    }
    let action = match &state.trial {
        Some(trial) => {
            let version = trial.version.to_string();
            let live_version = facts.live.as_ref().and_then(|m| m.version.clone());
            let trial_live = live_version.as_deref() == Some(version.as_str());
            let other_kernel = state.trial_kernel.as_deref().filter(|k| *k != facts.kernel_release);
            let rebooted = trial.boot_id != facts.boot_id;
            if let (true, Some(k), false) = (rebooted, other_kernel, trial.phase == TrialPhase::RollingBack) {
                let reason = format!(
                    "the host rebooted into kernel {} during the trial of {version} on kernel {k}: the trial was interrupted before it could be judged (not blocklisted)",
                    facts.kernel_release
                );
                RecoveryAction::RollBack { note: reason.clone(), reason, verdict: Verdict::Unjudged }
            } else if trial.phase == TrialPhase::RollingBack {
                // Judged when the rollback began (saved before it): resumed as it was.
                RecoveryAction::RollBack {
                    reason: trial.rollback_reason.clone().unwrap_or_else(|| "interrupted rollback".into()),
                    note: "resuming an interrupted rollback".into(),
                    verdict: Verdict::Unjudged,
                }
            } else if let (true, Some(evidence)) = (rebooted, &facts.panic_evidence) {
                let reason = format!(
                    "the host rebooted during the trial of {version} after a kernel panic in the module (kept across the reboot: {evidence})"
                );
                RecoveryAction::RollBack { note: reason.clone(), reason, verdict: Verdict::Guilty }
            } else if rebooted {
                let reason = format!(
                    "the host rebooted during the trial of {version} (a power cut, a crash or a panic) with no evidence against the module: inconclusive"
                );
                let verdict = Verdict::Inconclusive { retries: facts.inconclusive_retries };
                RecoveryAction::RollBack { note: reason.clone(), reason, verdict }
            } else if trial.phase == TrialPhase::Swapping && !trial_live {
                if live_version.is_some() && live_version == trial.checkpoint.version {
                    // Stopped before the old module was unloaded.
                    RecoveryAction::AbandonSwap
                } else {
                    let reason = format!("the daemon stopped in the middle of swapping to {version}");
                    RecoveryAction::RollBack { note: reason.clone(), reason, verdict: Verdict::Guilty }
                }
            } else {
                RecoveryAction::ResumeTrial
            }
        }
        None => match (&facts.live, &facts.committed) {
            (None, Some(_)) if facts.committed_build => RecoveryAction::LoadCommitted,
            (None, Some(_)) => RecoveryAction::NoBuild,
            (None, None) => RecoveryAction::Clean,
            (Some(m), Some((_, v))) if m.version.as_deref() == Some(v.as_str()) && facts.committed_blocked => {
                RecoveryAction::UnloadBlockedBuild
            }
            (Some(m), Some((_, v))) if m.version.as_deref() == Some(v.as_str()) => RecoveryAction::Clean,
            (Some(_), committed) => RecoveryAction::Drift { replace: facts.adopt_unmanaged && committed.is_some() },
        },
    };
    RecoveryPlan { clear_pending_reboot, action }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::PendingReboot;

    const BOOT: &str = "boot-2";

    fn module(version: &str) -> LoadedModule {
        LoadedModule {
            version: Some(version.into()),
            srcversion: None,
            refcnt: None,
            holders: vec![],
            params: Default::default(),
        }
    }

    fn trial(phase: TrialPhase, boot_id: &str) -> State {
        State { committed: Some(SlotId::A), trial: Some(crate::state::test_trial(phase, boot_id)), ..State::default() }
    }

    fn facts(live: Option<&str>, committed: Option<&str>) -> RecoveryFacts {
        RecoveryFacts {
            boot_id: BOOT.into(),
            live: live.map(module),
            committed: committed.map(|v| (SlotId::A, v.to_string())),
            committed_build: true,
            committed_blocked: false,
            kernel_release: "6.12.113".into(),
            adopt_unmanaged: false,
            panic_evidence: None,
            inconclusive_retries: 1,
        }
    }

    fn action(state: &State, facts: &RecoveryFacts) -> RecoveryAction {
        recovery_plan(state, facts).action
    }

    #[test]
    fn trial_boot_changed_rolls_back_as_inconclusive() {
        let a = action(&trial(TrialPhase::Watching, "boot-1"), &facts(None, None));
        let RecoveryAction::RollBack { reason, note, verdict: Verdict::Inconclusive { retries: 1 } } = a else {
            panic!("{a:?}")
        };
        assert_eq!(
            reason,
            "the host rebooted during the trial of 1.1.0 (a power cut, a crash or a panic) with no evidence against the module: inconclusive"
        );
        assert_eq!(note, reason);
        // Rebooted on the kernel the trial started on: the same.
        let mut s = trial(TrialPhase::Watching, "boot-1");
        s.trial_kernel = Some("6.12.113".into());
        let a = action(&s, &facts(None, None));
        assert!(matches!(a, RecoveryAction::RollBack { verdict: Verdict::Inconclusive { .. }, .. }), "{a:?}");
        // Whatever is live.
        let a = action(&trial(TrialPhase::Swapping, "boot-1"), &facts(Some("1.1.0"), None));
        assert!(matches!(a, RecoveryAction::RollBack { verdict: Verdict::Inconclusive { .. }, .. }), "{a:?}");
        // A rollback already under way goes on as it was judged.
        let a = action(&trial(TrialPhase::RollingBack, "boot-1"), &facts(Some("1.1.0"), None));
        assert!(matches!(a, RecoveryAction::RollBack { verdict: Verdict::Unjudged, .. }), "{a:?}");
    }

    #[test]
    fn trial_boot_changed_after_a_panic_naming_the_module_is_guilty() {
        let mut f = facts(None, None);
        f.panic_evidence = Some("dmesg-efi-1: RIP: milspec_trip+0x10/0x20 [dell_milspec]".into());
        let a = action(&trial(TrialPhase::Watching, "boot-1"), &f);
        let RecoveryAction::RollBack { reason, verdict: Verdict::Guilty, .. } = a else { panic!("{a:?}") };
        assert!(reason.contains("kernel panic in the module") && reason.contains("[dell_milspec]"), "{reason}");
    }

    #[test]
    fn trial_boot_changed_into_another_kernel_rolls_back_as_interrupted() {
        for phase in [TrialPhase::Swapping, TrialPhase::Watching] {
            let mut s = trial(phase, "boot-1");
            s.trial_kernel = Some("6.12.111".into());
            let a = action(&s, &facts(None, None));
            let RecoveryAction::RollBack { reason, verdict: Verdict::Unjudged, .. } = a else {
                panic!("{phase:?}: {a:?}")
            };
            assert!(reason.contains("rebooted into kernel 6.12.113") && reason.contains("not blocklisted"), "{reason}");
        }
        // A rollback already under way goes on as it was decided.
        let mut s = trial(TrialPhase::RollingBack, "boot-1");
        s.trial_kernel = Some("6.12.111".into());
        let a = action(&s, &facts(None, None));
        assert!(
            matches!(&a, RecoveryAction::RollBack { note, verdict: Verdict::Unjudged, .. } if note.contains("resuming")),
            "{a:?}"
        );
    }

    #[test]
    fn trial_rolling_back_finishes_the_rollback() {
        let mut s = trial(TrialPhase::RollingBack, BOOT);
        let a = action(&s, &facts(Some("1.1.0"), None));
        let want = RecoveryAction::RollBack {
            reason: "interrupted rollback".into(),
            note: "resuming an interrupted rollback".into(),
            verdict: Verdict::Unjudged,
        };
        assert_eq!(a, want);
        s.trial.as_mut().unwrap().rollback_reason = Some("kernel log: oops".into());
        let RecoveryAction::RollBack { reason, .. } = action(&s, &facts(None, None)) else { panic!() };
        assert_eq!(reason, "kernel log: oops");
    }

    #[test]
    fn trial_swapping_old_module_live_abandons_the_swap() {
        let a = action(&trial(TrialPhase::Swapping, BOOT), &facts(Some("1.0.0"), None));
        assert_eq!(a, RecoveryAction::AbandonSwap);
    }

    #[test]
    fn trial_swapping_no_module_live_rolls_back() {
        let a = action(&trial(TrialPhase::Swapping, BOOT), &facts(None, None));
        let RecoveryAction::RollBack { reason, note, .. } = a else { panic!("{a:?}") };
        assert_eq!(reason, "the daemon stopped in the middle of swapping to 1.1.0");
        assert_eq!(note, reason);
        // A module that is neither the old nor the new one: roll back too.
        let a = action(&trial(TrialPhase::Swapping, BOOT), &facts(Some("0.9.0"), None));
        assert!(matches!(a, RecoveryAction::RollBack { .. }), "{a:?}");
    }

    #[test]
    fn trial_module_live_resumes_the_trial() {
        for phase in [TrialPhase::Swapping, TrialPhase::Watching] {
            let a = action(&trial(phase, BOOT), &facts(Some("1.1.0"), None));
            assert_eq!(a, RecoveryAction::ResumeTrial, "{phase:?}");
        }
        // Watching with the module gone: the watch finds it.
        let a = action(&trial(TrialPhase::Watching, BOOT), &facts(None, None));
        assert_eq!(a, RecoveryAction::ResumeTrial);
    }

    #[test]
    fn pending_reboot_boot_changed_clears_it_then_goes_on() {
        let mut s = State { committed: Some(SlotId::A), ..State::default() };
        s.pending_reboot =
            Some(PendingReboot { boot_id: "boot-1".into(), stuck_version: "1.1.0".into(), reason: "stuck".into() });
        let p = recovery_plan(&s, &facts(None, Some("1.0.0")));
        assert_eq!(p.clear_pending_reboot.as_deref(), Some("1.1.0"));
        assert_eq!(p.action, RecoveryAction::LoadCommitted);
        // Same boot: still pending, nothing else.
        s.pending_reboot.as_mut().unwrap().boot_id = BOOT.into();
        let p = recovery_plan(&s, &facts(None, Some("1.0.0")));
        assert_eq!(p.clear_pending_reboot, None);
        assert_eq!(p.action, RecoveryAction::StillPendingReboot { reason: "stuck".into() });
    }

    #[test]
    fn no_trial_no_module_a_committed_slot_loads_it() {
        let s = State { committed: Some(SlotId::A), ..State::default() };
        assert_eq!(action(&s, &facts(None, Some("1.0.0"))), RecoveryAction::LoadCommitted);
        // Nothing committed, nothing loaded: clean.
        assert_eq!(action(&State::default(), &facts(None, None)), RecoveryAction::Clean);
        // The committed version is live: clean.
        assert_eq!(action(&s, &facts(Some("1.0.0"), Some("1.0.0"))), RecoveryAction::Clean);
    }

    #[test]
    fn no_trial_a_blocked_build_live_is_unloaded() {
        let s = State { committed: Some(SlotId::A), ..State::default() };
        let f =
            RecoveryFacts { committed_build: false, committed_blocked: true, ..facts(Some("1.0.0"), Some("1.0.0")) };
        assert_eq!(action(&s, &f), RecoveryAction::UnloadBlockedBuild);
        let f = RecoveryFacts { committed_build: false, committed_blocked: true, ..facts(None, Some("1.0.0")) };
        assert_eq!(action(&s, &f), RecoveryAction::NoBuild);
    }

    #[test]
    fn no_trial_no_module_no_build_for_this_kernel_reports_it() {
        let s = State { committed: Some(SlotId::A), ..State::default() };
        let f = RecoveryFacts { committed_build: false, ..facts(None, Some("1.0.0")) };
        assert_eq!(action(&s, &f), RecoveryAction::NoBuild);
    }

    #[test]
    fn no_trial_unmanaged_module_is_drift() {
        let s = State { committed: Some(SlotId::A), ..State::default() };
        assert_eq!(action(&s, &facts(Some("9.9.9"), Some("1.0.0"))), RecoveryAction::Drift { replace: false });
        let adopt = RecoveryFacts { adopt_unmanaged: true, ..facts(Some("9.9.9"), Some("1.0.0")) };
        assert_eq!(action(&s, &adopt), RecoveryAction::Drift { replace: true });
        // Nothing valid to replace it with: reported only.
        let adopt = RecoveryFacts { adopt_unmanaged: true, ..facts(Some("9.9.9"), None) };
        assert_eq!(action(&s, &adopt), RecoveryAction::Drift { replace: false });
    }
}
