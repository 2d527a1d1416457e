//! One check for updates: the mirror decides and downloads
//! ([`Poller::poll`]), the engine installs ([`Engine::install`]). The
//! engine thread and `milspecd check` both run a check through here.

use serde::Serialize;

use crate::engine::{Engine, EngineError, InstallOptions, Outcome};
use crate::mirror::{MirrorError, PollHost, PollOptions, PollReport, Poller};

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// What one check found and did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum CheckReport {
    UpToDate {
        index_version: u64,
        not_modified: bool,
    },
    Waiting {
        index_version: u64,
        version: String,
        position: f64,
        fraction: f64,
        next_wave: Option<String>,
    },
    RevokedNoReplacement {
        index_version: u64,
        current: String,
    },
    Installed {
        index_version: u64,
        version: String,
        /// `upgrade`, or `replaces revoked <version>`.
        reason: String,
        outcome: Outcome,
    },
}

impl CheckReport {
    /// `milspecd check` exit codes: those of the install, if one ran.
    pub fn exit_code(&self) -> u8 {
        match self {
            CheckReport::Installed { outcome, .. } => outcome.exit_code(),
            _ => 0,
        }
    }
}

impl std::fmt::Display for CheckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckReport::UpToDate { index_version, not_modified } => write!(
                f,
                "up to date (index version {index_version}{})",
                if *not_modified { ", not modified" } else { "" }
            ),
            CheckReport::Waiting { version, position, fraction, next_wave, .. } => write!(
                f,
                "{version} is available but its rollout has not reached this host yet (host position {position:.4}, {:.1}% of hosts admitted{}); `milspecd check --now` forces it",
                fraction * 100.0,
                next_wave.as_ref().map(|t| format!(", next wave at {t}")).unwrap_or_default()
            ),
            CheckReport::RevokedNoReplacement { current, .. } => write!(
                f,
                "the running version {current} is revoked and the mirror offers no version to replace it; publish one"
            ),
            CheckReport::Installed { version, reason, outcome, .. } => write!(f, "{version} ({reason}): {outcome}"),
        }
    }
}

/// Polls the mirror for this host and installs what it offers.
/// `downloading` is told the version before its download starts.
pub fn check(
    poller: &Poller,
    engine: &mut Engine<'_>,
    opts: PollOptions,
    downloading: &mut dyn FnMut(&str),
) -> Result<CheckReport, CheckError> {
    let host = poll_host(engine)?;
    Ok(match poller.poll(&host, opts, downloading)? {
        PollReport::UpToDate { index_version, not_modified } => CheckReport::UpToDate { index_version, not_modified },
        PollReport::Waiting { index_version, version, position, fraction, next_wave } => {
            CheckReport::Waiting { index_version, version, position, fraction, next_wave }
        }
        PollReport::RevokedNoReplacement { index_version, current } => {
            CheckReport::RevokedNoReplacement { index_version, current }
        }
        PollReport::Install(d) => {
            let outcome = engine.install(d.file, InstallOptions { allow_downgrade: d.allow_downgrade })?;
            CheckReport::Installed { index_version: d.index_version, version: d.version, reason: d.reason, outcome }
        }
    })
}

/// The mirror's view of this host, from the engine that owns it.
fn poll_host(engine: &Engine<'_>) -> Result<PollHost, EngineError> {
    let status = engine.status()?;
    let current_seq = status.committed_slot.and_then(|c| status.slots.iter().find(|s| s.slot == c)?.sequence);
    let current = status.committed_version.as_deref().and_then(|v| v.parse().ok()).zip(current_seq);
    Ok(PollHost {
        kernel_release: engine.kernel_release()?.to_string(),
        current,
        blocklist: status.blocklist.iter().map(|b| b.version.clone()).collect(),
        max_sequence: status.max_sequence,
    })
}
