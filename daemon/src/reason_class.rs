//! Closed sets of reason classes for failures and rollbacks, for the
//! labelled metrics (`milspecd_failures_total{reason=...}`,
//! `milspecd_rollbacks_total{reason=...}`). Each class is mapped from a
//! typed error or verdict, never from its text; the sets are small and
//! fixed so that every class is always written (zeros included) and
//! `rate()` works on each.

use crate::check::CheckError;
use crate::engine::{EngineError, RejectReason};
use crate::health::Unhealthy;
use crate::mirror::MirrorError;

/// Why an action failed or an install was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// A signature, hash or manifest check failed (package or index).
    Verify,
    /// A package could not be downloaded into the state folder (too large,
    /// no room for the download file).
    Download,
    /// The mirror could not be reached or answered wrongly.
    Mirror,
    /// The package verified, but this host refused it (plan, old module
    /// busy, an operator request that does not apply).
    Refused,
    /// A declared health check file is invalid.
    Check,
    /// A module or kernel build failed to load or to prove itself.
    Load,
    /// The configuration keeps the action from running (no source, keys,
    /// proxy, machine id).
    Config,
    /// Anything else (disk, state, history).
    Other,
}

impl FailureClass {
    pub const ALL: [FailureClass; 8] = [
        FailureClass::Verify,
        FailureClass::Download,
        FailureClass::Mirror,
        FailureClass::Refused,
        FailureClass::Check,
        FailureClass::Load,
        FailureClass::Config,
        FailureClass::Other,
    ];

    /// The `reason` label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Verify => "verify",
            FailureClass::Download => "download",
            FailureClass::Mirror => "mirror",
            FailureClass::Refused => "refused",
            FailureClass::Check => "check",
            FailureClass::Load => "load",
            FailureClass::Config => "config",
            FailureClass::Other => "other",
        }
    }

    pub fn of_check(e: &CheckError) -> Self {
        match e {
            CheckError::Mirror(m) => Self::of_mirror(m),
            CheckError::Engine(e) => Self::of_engine(e),
            CheckError::BadRelease(_) => FailureClass::Refused,
        }
    }

    pub fn of_mirror(e: &MirrorError) -> Self {
        match e {
            MirrorError::Fetch(_) => FailureClass::Mirror,
            MirrorError::Index { .. }
            | MirrorError::Mismatch { .. }
            | MirrorError::Package { .. }
            | MirrorError::Rotation(_) => FailureClass::Verify,
            MirrorError::TooLarge { .. } | MirrorError::Temp { .. } => FailureClass::Download,
            MirrorError::Store(_) | MirrorError::TrustStore(_) => FailureClass::Other,
            MirrorError::NoSource
            | MirrorError::MachineId { .. }
            | MirrorError::Keys(_)
            | MirrorError::Trust(_)
            | MirrorError::Proxy(_)
            | MirrorError::CaFileForFileMirror { .. } => FailureClass::Config,
        }
    }

    pub fn of_engine(e: &EngineError) -> Self {
        match e {
            EngineError::Kernel(_) | EngineError::FallbackInvalid { .. } => FailureClass::Load,
            EngineError::TrialRunning { .. } | EngineError::PendingReboot | EngineError::NothingToRollBack(_) => {
                FailureClass::Refused
            }
            _ => FailureClass::Other,
        }
    }

    pub fn of_reject(r: &RejectReason) -> Self {
        match r {
            RejectReason::InvalidPackage(_) => FailureClass::Verify,
            RejectReason::Plan(_) | RejectReason::OldModuleBusy { .. } => FailureClass::Refused,
            RejectReason::HealthChecks(_) => FailureClass::Check,
        }
    }
}

/// Why a version on trial (or committed) was rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RollbackClass {
    /// The kernel's oops count rose on probation.
    HealthOops,
    /// The kernel's warn count rose on probation.
    HealthWarn,
    /// Taint bits were added on probation.
    HealthTaint,
    /// The module's status (state, self-test) failed on probation.
    HealthStatus,
    /// The kernel log named the module on probation.
    HealthKmsg,
    /// A declared health check failed, or its file broke.
    Check,
    /// The new module did not load (or its slot could not be written).
    Load,
    /// The operator asked (rollback of a trial, or of the committed version).
    Operator,
    /// A fault of the committed module after its probation.
    AfterCommitFault,
    /// Recovery at start: a trial cut short by a crash or a reboot.
    Recovery,
    Other,
}

impl RollbackClass {
    pub const ALL: [RollbackClass; 11] = [
        RollbackClass::HealthOops,
        RollbackClass::HealthWarn,
        RollbackClass::HealthTaint,
        RollbackClass::HealthStatus,
        RollbackClass::HealthKmsg,
        RollbackClass::Check,
        RollbackClass::Load,
        RollbackClass::Operator,
        RollbackClass::AfterCommitFault,
        RollbackClass::Recovery,
        RollbackClass::Other,
    ];

    /// The `reason` label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            RollbackClass::HealthOops => "health-oops",
            RollbackClass::HealthWarn => "health-warn",
            RollbackClass::HealthTaint => "health-taint",
            RollbackClass::HealthStatus => "health-status",
            RollbackClass::HealthKmsg => "health-kmsg",
            RollbackClass::Check => "check",
            RollbackClass::Load => "load",
            RollbackClass::Operator => "operator",
            RollbackClass::AfterCommitFault => "after-commit-fault",
            RollbackClass::Recovery => "recovery",
            RollbackClass::Other => "other",
        }
    }

    pub fn of_unhealthy(u: &Unhealthy) -> Self {
        match u {
            Unhealthy::OopsRose { .. } => RollbackClass::HealthOops,
            Unhealthy::WarnRose { .. } => RollbackClass::HealthWarn,
            Unhealthy::TaintAdded { .. } => RollbackClass::HealthTaint,
            Unhealthy::StatusFailed { .. }
            | Unhealthy::SelftestFailed
            | Unhealthy::StatusMissing
            | Unhealthy::StatusUnreadable { .. } => RollbackClass::HealthStatus,
            Unhealthy::KernelLog { .. } => RollbackClass::HealthKmsg,
            Unhealthy::CheckFailed { .. } => RollbackClass::Check,
        }
    }
}

/// Counts per class since the daemon started, every class present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally<const N: usize>(pub [u64; N]);

impl<const N: usize> Default for Tally<N> {
    fn default() -> Self {
        Tally([0; N])
    }
}

pub type FailureTally = Tally<{ FailureClass::ALL.len() }>;
pub type RollbackTally = Tally<{ RollbackClass::ALL.len() }>;

impl FailureTally {
    pub fn add(&mut self, c: FailureClass) {
        // `ALL` lists the classes in declaration order (a test holds it).
        self.0[c as usize] += 1;
    }

    /// `(label, count)` for every class, in [`FailureClass::ALL`] order.
    pub fn samples(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        FailureClass::ALL.iter().zip(self.0).map(|(c, n)| (c.as_str(), n))
    }
}

impl RollbackTally {
    pub fn add(&mut self, c: RollbackClass) {
        self.0[c as usize] += 1;
    }

    /// `(label, count)` for every class, in [`RollbackClass::ALL`] order.
    pub fn samples(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        RollbackClass::ALL.iter().zip(self.0).map(|(c, n)| (c.as_str(), n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct_and_prometheus_safe() {
        let mut f: Vec<_> = FailureClass::ALL.iter().map(|c| c.as_str()).collect();
        let mut r: Vec<_> = RollbackClass::ALL.iter().map(|c| c.as_str()).collect();
        for l in f.iter().chain(&r) {
            assert!(l.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'), "{l}");
        }
        f.sort_unstable();
        f.dedup();
        r.sort_unstable();
        r.dedup();
        assert_eq!(f.len(), FailureClass::ALL.len());
        assert_eq!(r.len(), RollbackClass::ALL.len());
    }

    #[test]
    fn all_lists_the_classes_in_declaration_order() {
        for (i, c) in FailureClass::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{c:?}");
        }
        for (i, c) in RollbackClass::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{c:?}");
        }
        // `Other` is declared last: nothing is left out of `ALL`.
        assert_eq!(FailureClass::Other as usize + 1, FailureClass::ALL.len());
        assert_eq!(RollbackClass::Other as usize + 1, RollbackClass::ALL.len());
    }

    #[test]
    fn tallies_count_per_class_and_list_every_class() {
        let mut t = FailureTally::default();
        t.add(FailureClass::Mirror);
        t.add(FailureClass::Mirror);
        t.add(FailureClass::Other);
        let s: Vec<_> = t.samples().collect();
        assert_eq!(s.len(), FailureClass::ALL.len());
        assert!(s.contains(&("mirror", 2)) && s.contains(&("other", 1)) && s.contains(&("verify", 0)));
        let mut r = RollbackTally::default();
        r.add(RollbackClass::of_unhealthy(&Unhealthy::WarnRose { from: 0, to: 1 }));
        r.add(RollbackClass::of_unhealthy(&Unhealthy::CheckFailed { name: "x".into(), why: "y".into() }));
        let s: Vec<_> = r.samples().collect();
        assert!(s.contains(&("health-warn", 1)) && s.contains(&("check", 1)) && s.contains(&("operator", 0)));
    }

    #[test]
    fn typed_errors_map_to_classes() {
        assert_eq!(FailureClass::of_mirror(&MirrorError::NoSource), FailureClass::Config);
        assert_eq!(
            FailureClass::of_mirror(&MirrorError::TooLarge { url: "u".into(), version: "1".into(), size: 2, limit: 1 }),
            FailureClass::Download
        );
        assert_eq!(FailureClass::of_reject(&RejectReason::InvalidPackage("x".into())), FailureClass::Verify);
        assert_eq!(FailureClass::of_reject(&RejectReason::HealthChecks("x".into())), FailureClass::Check);
        assert_eq!(FailureClass::of_engine(&EngineError::PendingReboot), FailureClass::Refused);
    }
}
