//! A fault of the committed module after its probation: recorded, and
//! rolled back to the previous version when `[health] after_commit_rollback`
//! says so ([`crate::health::after_commit::respond`] decides).

use std::time::Duration;

use milspec_format::text::{Escaped, EscapedDisplay};
use tracing::warn;

use super::{Engine, EngineError, Outcome, RollbackRefusal};
use crate::health::after_commit::{respond, CommittedFault, Response};
use crate::history::{Event, EventKind};

/// History records searched for the commit a fault is judged against, at
/// most (about a year of a busy host's polls; the files are read newest
/// first and no further): a fault never makes the engine read the whole
/// history into memory.
const COMMIT_SCAN: usize = 10_000;

/// What a fault of the committed module did.
#[derive(Debug)]
pub enum AfterCommit {
    /// The live module is not the committed version (a trial runs, nothing
    /// is committed, or the module was changed behind the daemon's back):
    /// not a committed module's fault, nothing recorded.
    NotCommitted,
    /// Recorded as a `fault` event; `refused` says why the rollback the
    /// policy asked for could not be done.
    Recorded { version: String, response: Response, refused: Option<RollbackRefusal> },
    /// Recorded, then rolled back to the version in the other slot (on
    /// probation, as any rollback to it).
    RolledBack { version: String, outcome: Outcome },
}

impl Engine<'_> {
    /// Records `fault`, seen on the committed module, and rolls back when
    /// the policy says so.
    pub fn committed_fault(&mut self, fault: &CommittedFault) -> Result<AfterCommit, EngineError> {
        let state = self.load_state()?;
        let (None, Some(id)) = (&state.trial, state.committed) else {
            return Ok(AfterCommit::NotCommitted);
        };
        let release = self.host.kernel_release()?.to_string();
        let Some(slot) = self.read_slot(id, &release)? else {
            return Ok(AfterCommit::NotCommitted);
        };
        let version = slot.manifest.version.to_string();
        if self.live().and_then(|m| m.version).as_deref() != Some(version.as_str()) {
            return Ok(AfterCommit::NotCommitted);
        }
        let response = respond(&self.cfg.health.after_commit(), self.since_committed(&version)?);
        warn!(%version, "fault of committed {version}: {}; {response}", EscapedDisplay(fault));
        self.record(
            Event::new(EventKind::Fault)
                .version(&version)
                .slot(id)
                .kernel(&release)
                .reason(format!("{fault}; {response}")),
        )?;
        if response != Response::RollBack {
            return Ok(AfterCommit::Recorded { version, response, refused: None });
        }
        match self.revert(&format!("fault after commit: {fault}")) {
            Ok(outcome) => Ok(AfterCommit::RolledBack { version, outcome }),
            Err(EngineError::NothingToRollBack(refusal)) => {
                warn!(%version, "cannot roll back the faulty committed version: {}", Escaped(&refusal.to_string()));
                Ok(AfterCommit::Recorded { version, response, refused: Some(refusal) })
            }
            Err(e) => Err(e),
        }
    }

    /// How long ago `version` was last committed here, from its newest
    /// `committed` record among the newest [`COMMIT_SCAN`] (`None`: none
    /// there, or its time unreadable).
    fn since_committed(&self, version: &str) -> Result<Option<Duration>, EngineError> {
        let events = self
            .history
            .read(COMMIT_SCAN)
            .map_err(|source| EngineError::History { path: self.history.path().into(), source })?;
        let at = events
            .iter()
            .rev()
            .find(|e| e.event == EventKind::Committed && e.version.as_deref() == Some(version))
            .and_then(|e| time::OffsetDateTime::parse(&e.at, &time::format_description::well_known::Rfc3339).ok());
        Ok(at.map(|at| {
            let age = time::OffsetDateTime::now_utc() - at;
            Duration::try_from(age).unwrap_or(Duration::ZERO)
        }))
    }
}
