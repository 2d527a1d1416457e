//! Whose fault is a fault? The kernel's `oops_count`, `warn_count` and
//! taint bits count faults of every driver; a rise during probation is the
//! module's only when a kernel log record of the same window names it (a
//! call-trace frame `[dell_milspec]`, see [`super::kmsg::FaultMatcher`]) or
//! the module's own status says it failed. Any other rise is
//! *unattributed* and follows [`Unattributed`], a setting. Pure: the
//! watcher reads the kernel, this decides.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::snapshot::Snapshot;
use super::Unhealthy;

/// Taint bits a fault report sets by itself: `D` (oops, bit 7), `W`
/// (warning, bit 9), `L` (soft lockup, bit 14). They rise with the
/// counters and are judged with them.
pub const FAULT_TAINT: u64 = (1 << 7) | (1 << 9) | (1 << 14);

/// Most times one trial's window is extended by unattributed rises; later
/// ones are ignored (and recorded), so a noisy neighbour cannot hold a
/// trial open for ever.
pub const MAX_EXTENSIONS: u32 = 3;

/// What a fault rise that no log record pins on the module does
/// (`[health] unattributed`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unattributed {
    /// Counts against the module: the trial is rolled back (and the
    /// version blocklisted) as if the module had faulted.
    Rollback,
    /// Recorded, and the trial goes on with the rise as its new baseline.
    Ignore,
    /// The default: recorded, and the window starts again from the rise
    /// (at most [`MAX_EXTENSIONS`] times), so the module is watched for a
    /// whole window on a kernel that has just faulted elsewhere.
    #[default]
    Extend,
}

impl fmt::Display for Unattributed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unattributed::Rollback => "rollback",
            Unattributed::Ignore => "ignore",
            Unattributed::Extend => "extend",
        })
    }
}

/// A finding of [`super::assess`] that may be another driver's doing: a
/// counter rise, or added taint bits that are all [`FAULT_TAINT`].
pub fn is_fault_rise(finding: &Unhealthy) -> bool {
    match finding {
        Unhealthy::OopsRose { .. } | Unhealthy::WarnRose { .. } => true,
        Unhealthy::TaintAdded { bits, .. } => *bits != 0 && bits & !FAULT_TAINT == 0,
        _ => false,
    }
}

/// The baseline with `now`'s counters and fault taint bits taken in, so
/// the rise just judged is not seen again (pure).
pub fn rebase(baseline: &Snapshot, now: &Snapshot) -> Snapshot {
    Snapshot {
        oops_count: now.oops_count.or(baseline.oops_count),
        warn_count: now.warn_count.or(baseline.warn_count),
        taint: baseline.taint | (now.taint & FAULT_TAINT),
        ..baseline.clone()
    }
}

/// A rise the watcher could not pin on the module, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnattributedRise {
    /// The rule that fired, e.g. `warn_count rose from 0 to 1`.
    pub rise: String,
    /// The header of the kernel's report of it, when one was seen (it
    /// names the other driver), escaped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    /// How long after the watch began.
    pub after_ms: u64,
    /// What the policy did with it.
    pub action: RiseAction,
}

impl UnattributedRise {
    /// The record of `rise`, seen `after` into the watch, with the header
    /// of the kernel's report of it (escaped here: it is kernel log text).
    pub fn new(rise: &Unhealthy, report: Option<&str>, after: Duration, action: RiseAction) -> Self {
        UnattributedRise {
            rise: rise.to_string(),
            report: report.map(milspec_format::text::sanitize),
            after_ms: after.as_millis() as u64,
            action,
        }
    }
}

/// What was done with one unattributed rise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RiseAction {
    RolledBack,
    Ignored,
    /// The window was started again from the rise.
    Extended,
    /// `extend`, but the trial was extended [`MAX_EXTENSIONS`] times already.
    IgnoredAfterExtensions,
}

impl fmt::Display for UnattributedRise {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.rise)?;
        match &self.report {
            Some(report) => write!(f, " (the kernel's report does not name the module: {report})")?,
            None => f.write_str(" (no kernel log record names the module)")?,
        }
        f.write_str(match self.action {
            RiseAction::RolledBack => "; rolled back ([health] unattributed = \"rollback\")",
            RiseAction::Ignored => "; ignored",
            RiseAction::Extended => "; window started again",
            RiseAction::IgnoredAfterExtensions => "; ignored (window already extended the most times)",
        })
    }
}

/// What the watcher does next about an unattributed rise (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    RollBack,
    /// Go on; with `Some(deadline)` the window now ends there (measured
    /// from the start of the watch).
    GoOn {
        until: Option<Duration>,
    },
}

/// Decides about one unattributed rise seen `at` into a watch whose
/// window ends at `until`, already extended `extensions` times.
pub fn decide(
    policy: Unattributed,
    at: Duration,
    window: Duration,
    until: Duration,
    extensions: u32,
) -> (Decision, RiseAction) {
    match policy {
        Unattributed::Rollback => (Decision::RollBack, RiseAction::RolledBack),
        Unattributed::Ignore => (Decision::GoOn { until: None }, RiseAction::Ignored),
        Unattributed::Extend if extensions >= MAX_EXTENSIONS => {
            (Decision::GoOn { until: None }, RiseAction::IgnoredAfterExtensions)
        }
        Unattributed::Extend => (Decision::GoOn { until: Some(until.max(at + window)) }, RiseAction::Extended),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_rises_are_counters_and_fault_taint_only() {
        assert!(is_fault_rise(&Unhealthy::WarnRose { from: 0, to: 1 }));
        assert!(is_fault_rise(&Unhealthy::OopsRose { from: 0, to: 1 }));
        assert!(is_fault_rise(&Unhealthy::taint_added(1 << 9)));
        assert!(is_fault_rise(&Unhealthy::taint_added((1 << 7) | (1 << 9) | (1 << 14))));
        // P (proprietary module) is no fault report: still judged at once.
        assert!(!is_fault_rise(&Unhealthy::taint_added((1 << 9) | 1)));
        assert!(!is_fault_rise(&Unhealthy::StatusFailed { state: "failed".into() }));
        assert!(!is_fault_rise(&Unhealthy::KernelLog { line: "x".into() }));
        assert!(!is_fault_rise(&Unhealthy::SelftestFailed));
    }

    #[test]
    fn rebase_takes_counters_and_fault_taint_only() {
        let base = Snapshot { oops_count: Some(0), warn_count: Some(1), taint: 1 << 12, ..Snapshot::default() };
        let now =
            Snapshot { oops_count: Some(0), warn_count: Some(2), taint: (1 << 12) | (1 << 9) | 1, ..base.clone() };
        let r = rebase(&base, &now);
        assert_eq!((r.oops_count, r.warn_count, r.taint), (Some(0), Some(2), (1 << 12) | (1 << 9)));
        // The P bit is still news against the new baseline.
        assert_eq!(super::super::assess(&r, &now, 0), Some(Unhealthy::taint_added(1)));
        // A counter the kernel stopped showing keeps its old baseline.
        let gone = Snapshot { warn_count: None, ..now };
        assert_eq!(rebase(&base, &gone).warn_count, Some(1));
    }

    #[test]
    fn policies_decide() {
        let s = Duration::from_secs;
        assert_eq!(decide(Unattributed::Rollback, s(5), s(30), s(30), 0).0, Decision::RollBack);
        assert_eq!(
            decide(Unattributed::Ignore, s(5), s(30), s(30), 0),
            (Decision::GoOn { until: None }, RiseAction::Ignored)
        );
        assert_eq!(
            decide(Unattributed::Extend, s(5), s(30), s(30), 0),
            (Decision::GoOn { until: Some(s(35)) }, RiseAction::Extended)
        );
        // Never shortened: a rise early in an already extended window.
        assert_eq!(decide(Unattributed::Extend, s(1), s(30), s(50), 1).0, Decision::GoOn { until: Some(s(50)) });
        assert_eq!(
            decide(Unattributed::Extend, s(5), s(30), s(30), MAX_EXTENSIONS),
            (Decision::GoOn { until: None }, RiseAction::IgnoredAfterExtensions)
        );
        assert_eq!(Unattributed::default(), Unattributed::Extend);
    }

    #[test]
    fn rise_text() {
        let r = UnattributedRise {
            rise: "warn_count rose from 0 to 1".into(),
            report: Some("WARNING: CPU: 0 PID: 9 at x.c:1 f+0x1/0x2 [other]".into()),
            after_ms: 1200,
            action: RiseAction::Extended,
        };
        assert_eq!(
            r.to_string(),
            "warn_count rose from 0 to 1 (the kernel's report does not name the module: \
             WARNING: CPU: 0 PID: 9 at x.c:1 f+0x1/0x2 [other]); window started again"
        );
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"action\":\"extended\""), "{json}");
    }
}
