//! How a foreground command ended, as `milspec.outcome/1` (docs/json.md):
//! the same object `milspecctl` prints for the same result.

use milspec_interface::json;
use milspec_interface::ActionResult as R;

use crate::check::{CheckReport, PrepareReport};
use crate::engine::{BuildOutcome, Outcome};

/// An install's outcome (`milspecd install --json`).
pub fn of_outcome(o: &Outcome) -> json::Outcome {
    let out = |r: R| json::Outcome::new(r.word(), o.to_string(), o.exit_code());
    match o {
        Outcome::Committed { version, .. } => out(R::Committed).version(version),
        Outcome::AlreadyInstalled { version } => out(R::AlreadyInstalled).version(version),
        // An invalid package is rejected too; its reason says so.
        Outcome::Rejected { reason } => out(R::Rejected).reason(&reason.to_string()),
        Outcome::RolledBack { version, to, reason, .. } => {
            out(R::RolledBack).version(version).to(to.as_deref()).reason(reason)
        }
        Outcome::RollbackPendingReboot { version, reason } => out(R::PendingReboot).version(version).reason(reason),
    }
}

/// A mirror poll's report (`milspecd check --json`).
pub fn of_check(r: &CheckReport) -> json::Outcome {
    let out = |w: R| json::Outcome::new(w.word(), r.to_string(), r.exit_code());
    match r {
        CheckReport::UpToDate { .. } => out(R::UpToDate),
        CheckReport::Waiting { version, .. } => out(R::Waiting).version(version),
        CheckReport::RevokedNoReplacement { current, .. } => out(R::RevokedNoReplacement).version(current),
        CheckReport::Installed { outcome, .. } => {
            let mut o = of_outcome(outcome);
            o.message = r.to_string();
            o
        }
        CheckReport::BuildAdded { outcome, .. } => of_build(outcome, r.to_string(), r.exit_code()),
        CheckReport::NoBuild { kernel_release, .. } => out(R::NoBuild).kernel(kernel_release),
    }
}

/// Preparing for a kernel (`milspecd prepare-kernel --json`).
pub fn of_prepare(r: &PrepareReport) -> json::Outcome {
    match r {
        PrepareReport::NothingCommitted { kernel_release } => {
            json::Outcome::new("nothing-committed", r.to_string(), r.exit_code()).kernel(kernel_release)
        }
        PrepareReport::Build(b) => of_build(b, r.to_string(), r.exit_code()),
        PrepareReport::NoBuild { version, kernel_release, why } => {
            json::Outcome::new(R::NoBuild.word(), r.to_string(), r.exit_code())
                .version(version)
                .kernel(kernel_release)
                .reason(why)
        }
    }
}

fn of_build(b: &BuildOutcome, message: String, code: u8) -> json::Outcome {
    let out = |w: &str| json::Outcome::new(w, message.clone(), code);
    match b {
        BuildOutcome::Ready { version, kernel_release } => {
            out(R::KernelReady.word()).version(version).kernel(kernel_release)
        }
        BuildOutcome::Added { version, kernel_release, .. } => {
            out(R::BuildAdded.word()).version(version).kernel(kernel_release)
        }
        BuildOutcome::Rejected { reason } => out(R::Rejected.word()).reason(reason),
        BuildOutcome::Failed { version, kernel_release, reason } => {
            out(R::NoBuild.word()).version(version).kernel(kernel_release).reason(reason)
        }
    }
}

/// A command that failed before it had an outcome (exit 1, or the code the
/// error carries).
pub fn of_error(message: &str, exit_code: u8) -> json::Outcome {
    json::Outcome::new("failed", milspec_format::text::sanitize(message), exit_code)
}
