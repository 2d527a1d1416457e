//! The committed module after its probation: what a later fault that
//! names it does. Pure: the looking is [`super::committed_watch`], the
//! recording and the rollback are the engine's.
//!
//! A fault is always recorded (a `fault` history event, a metric, a D-Bus
//! signal). It rolls back to the version kept in the other slot only when
//! `[health] after_commit_rollback` is set and the fault comes within that
//! long of the commit: a module that ran well for weeks is not swapped
//! out by itself on one report, an operator decides.

use std::fmt;
use std::time::Duration;

/// What the committed module's watch does, from `[health]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfterCommitPolicy {
    /// How often the committed module is looked at; zero: never.
    pub interval: Duration,
    /// A fault this soon after the commit rolls back; zero: never.
    pub rollback_within: Duration,
}

impl AfterCommitPolicy {
    pub fn watches(&self) -> bool {
        !self.interval.is_zero()
    }
}

/// A fault of the committed module, as one look saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedFault {
    /// The first report of the look that named the module (bounded text
    /// from the kernel log, or the module's own status).
    pub reason: String,
    /// Further reports naming the module in the same look.
    pub more: u32,
}

impl fmt::Display for CommittedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)?;
        match self.more {
            0 => Ok(()),
            1 => f.write_str(" (and 1 more report)"),
            n => write!(f, " (and {n} more reports)"),
        }
    }
}

/// What a fault of the committed module does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// Recorded only: no rollback is configured.
    Record,
    /// Recorded only: the commit is older than the rollback limit.
    RecordTooLate { since_commit: Duration, limit: Duration },
    /// Recorded only: when the version was committed is not known (no
    /// `committed` record kept), so the limit cannot be judged.
    RecordCommitUnknown,
    /// Recorded, then rolled back to the previous version.
    RollBack,
}

/// Decides what a fault does, `since_commit` being how long ago the live
/// version was committed (`None`: not known).
pub fn respond(policy: &AfterCommitPolicy, since_commit: Option<Duration>) -> Response {
    let limit = policy.rollback_within;
    if limit.is_zero() {
        return Response::Record;
    }
    match since_commit {
        None => Response::RecordCommitUnknown,
        Some(since_commit) if since_commit > limit => Response::RecordTooLate { since_commit, limit },
        Some(_) => Response::RollBack,
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let round = |d: &Duration| humantime::format_duration(Duration::from_secs(d.as_secs())).to_string();
        match self {
            Response::Record => f.write_str("recorded; no rollback configured ([health] after_commit_rollback)"),
            Response::RecordTooLate { since_commit, limit } => write!(
                f,
                "recorded; committed {} ago, past the {} in which a fault rolls back",
                round(since_commit),
                round(limit)
            ),
            Response::RecordCommitUnknown => {
                f.write_str("recorded; when this version was committed is not on record, so it is not rolled back")
            }
            Response::RollBack => f.write_str("rolling back to the previous version"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn policy(rollback_within: Duration) -> AfterCommitPolicy {
        AfterCommitPolicy { interval: Duration::from_secs(60), rollback_within }
    }

    #[test]
    fn without_a_limit_a_fault_is_only_recorded() {
        assert_eq!(respond(&policy(Duration::ZERO), Some(Duration::from_secs(1))), Response::Record);
        assert_eq!(respond(&policy(Duration::ZERO), None), Response::Record);
    }

    #[test]
    fn within_the_limit_it_rolls_back_and_past_it_not() {
        let p = policy(24 * HOUR);
        assert_eq!(respond(&p, Some(HOUR)), Response::RollBack);
        assert_eq!(respond(&p, Some(24 * HOUR)), Response::RollBack);
        let late = 24 * HOUR + Duration::from_secs(1);
        assert_eq!(respond(&p, Some(late)), Response::RecordTooLate { since_commit: late, limit: 24 * HOUR });
        assert!(respond(&p, Some(late)).to_string().contains("committed 1day 1s ago, past the 1day in which"));
    }

    #[test]
    fn an_unknown_commit_time_never_rolls_back() {
        assert_eq!(respond(&policy(HOUR), None), Response::RecordCommitUnknown);
    }

    #[test]
    fn zero_interval_watches_nothing() {
        assert!(!AfterCommitPolicy { interval: Duration::ZERO, rollback_within: HOUR }.watches());
        assert!(policy(HOUR).watches());
    }

    #[test]
    fn further_reports_are_counted_in_the_text() {
        let f = |more| CommittedFault { reason: "WARNING: at x [dell_milspec]".into(), more }.to_string();
        assert_eq!(f(0), "WARNING: at x [dell_milspec]");
        assert_eq!(f(1), "WARNING: at x [dell_milspec] (and 1 more report)");
        assert_eq!(f(7), "WARNING: at x [dell_milspec] (and 7 more reports)");
    }
}
