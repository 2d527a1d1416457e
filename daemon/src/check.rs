//! One check for updates: the mirror decides and downloads
//! ([`Poller::poll`]), the engine installs ([`Engine::install`]). The
//! engine thread and `milspecd check` both run a check through here.

use serde::Serialize;

use crate::engine::{BuildOutcome, Engine, EngineError, InstallOptions, Outcome};
use crate::mirror::{MirrorError, PollHost, PollOptions, PollReport, Poller};

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Mirror(#[from] MirrorError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("`{0}` is not a kernel release (1-96 characters of letters, digits and . _ + - ~)")]
    BadRelease(String),
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
    /// The committed version republished with this kernel's build.
    BuildAdded {
        index_version: u64,
        outcome: BuildOutcome,
    },
    /// No build for the running kernel that this host may take.
    NoBuild {
        index_version: u64,
        kernel_release: String,
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
            CheckReport::BuildAdded { outcome, .. } => outcome.fmt(f),
            CheckReport::NoBuild { kernel_release, .. } => write!(
                f,
                "no build for the running kernel {kernel_release}: the mirror has none this host may take; nothing loaded, polling on (publish one with milspec-repo add-build)"
            ),
        }
    }
}

/// What preparing for a newly installed kernel found and did.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum PrepareReport {
    /// Nothing is committed: nothing to prepare.
    NothingCommitted { kernel_release: String },
    /// Ready (it was, or the build was just added), or refused.
    Build(BuildOutcome),
    /// The committed version has no build for the kernel, on this host or
    /// on the mirror: its first boot will start without the module.
    NoBuild { version: String, kernel_release: String, why: String },
}

impl PrepareReport {
    /// `milspecd prepare-kernel` exit codes: 0 ready (or nothing
    /// committed), 2 refused, 6 no build for that kernel.
    pub fn exit_code(&self) -> u8 {
        match self {
            PrepareReport::NothingCommitted { .. }
            | PrepareReport::Build(BuildOutcome::Ready { .. } | BuildOutcome::Added { .. }) => 0,
            PrepareReport::Build(BuildOutcome::Rejected { .. }) => 2,
            PrepareReport::NoBuild { .. } | PrepareReport::Build(BuildOutcome::Failed { .. }) => 6,
        }
    }
}

impl std::fmt::Display for PrepareReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PrepareReport::NothingCommitted { kernel_release } => {
                write!(f, "nothing is committed yet: nothing to prepare for kernel {kernel_release}")
            }
            PrepareReport::Build(o) => o.fmt(f),
            PrepareReport::NoBuild { version, kernel_release, why } => write!(
                f,
                "WARNING: no build of {version} for kernel {kernel_release} ({why}): the first boot into it will start without dell_milspec. Hold the reboot until one is published (milspec-repo add-build), or expect the daemon to fetch it once it is"
            ),
        }
    }
}

/// Kernel `release` was installed: makes the committed version ready for
/// it before it boots, from the mirror if the slot lacks its build.
pub fn prepare_kernel(
    poller: Option<&Poller>,
    engine: &mut Engine<'_>,
    release: &str,
    opts: PollOptions,
) -> Result<PrepareReport, CheckError> {
    if !milspec_format::manifest::valid_release(release) {
        return Err(CheckError::BadRelease(milspec_format::text::sanitize_to(release, 120)));
    }
    let kernel_release = release.to_string();
    let Some((version, _, has)) = engine.committed_covers(release)? else {
        return Ok(PrepareReport::NothingCommitted { kernel_release });
    };
    if has {
        return Ok(PrepareReport::Build(BuildOutcome::Ready { version, kernel_release }));
    }
    let no_build = |why: String| {
        tracing::warn!(message_id = crate::journal::NO_BUILD, %version, kernel = %kernel_release, "no build of {version} for the installed kernel {kernel_release}: {why}");
        PrepareReport::NoBuild { version: version.clone(), kernel_release: kernel_release.clone(), why }
    };
    let Some(poller) = poller else {
        return Ok(no_build("no [source] to fetch one from".into()));
    };
    let host = poll_host(engine)?;
    let polled = poller.poll_build(&host, release, opts, &mut |_| {});
    // A trust document the walk accepted counts even if the poll then
    // failed (a later document refused, the mirror gone).
    engine.reload_trust()?;
    match polled? {
        PollReport::AddBuild(d) => {
            engine.set_origin(Some(mirror_origin(poller, d.index_version)));
            let o = engine.add_build(d.file, release)?;
            if matches!(o, BuildOutcome::Rejected { .. }) {
                poller.refuse_build(d.sha256);
            }
            Ok(PrepareReport::Build(o))
        }
        _ => Ok(no_build("the mirror has none".into())),
    }
}

/// Polls the mirror for this host and installs what it offers.
/// `downloading` is told how far the package's download is (first with 0).
pub fn check(
    poller: &Poller,
    engine: &mut Engine<'_>,
    opts: PollOptions,
    downloading: &mut dyn FnMut(crate::mirror::DownloadProgress<'_>),
) -> Result<CheckReport, CheckError> {
    let host = poll_host(engine)?;
    let polled = poller.poll(&host, opts, downloading);
    // The poll may have accepted a new trust document, also when it
    // failed afterwards (a later document refused, the mirror gone): the
    // keys it retired or marked compromised stop counting at once.
    engine.reload_trust()?;
    let report = match polled? {
        PollReport::UpToDate { index_version, not_modified } => CheckReport::UpToDate { index_version, not_modified },
        PollReport::Waiting { index_version, version, position, fraction, next_wave } => {
            CheckReport::Waiting { index_version, version, position, fraction, next_wave }
        }
        PollReport::RevokedNoReplacement { index_version, current } => {
            CheckReport::RevokedNoReplacement { index_version, current }
        }
        PollReport::Install(d) => {
            engine.set_origin(Some(mirror_origin(poller, d.index_version)));
            let outcome = engine.install(d.file, InstallOptions { allow_downgrade: d.allow_downgrade })?;
            CheckReport::Installed { index_version: d.index_version, version: d.version, reason: d.reason, outcome }
        }
        PollReport::AddBuild(d) => {
            engine.set_origin(Some(mirror_origin(poller, d.index_version)));
            let outcome = engine.add_build(d.file, &host.kernel_release)?;
            if matches!(outcome, BuildOutcome::Rejected { .. }) {
                poller.refuse_build(d.sha256);
            }
            CheckReport::BuildAdded { index_version: d.index_version, outcome }
        }
        PollReport::NoBuild { index_version, kernel_release } => CheckReport::NoBuild { index_version, kernel_release },
    };
    if !matches!(report, CheckReport::Installed { .. } | CheckReport::BuildAdded { .. }) {
        catch_up(poller, engine, &host, opts);
    }
    Ok(report)
}

/// Most installed kernels a poll prepares builds for.
const MAX_CATCH_UP: usize = 8;

/// The installed kernels, other than the running one, that the committed
/// version has no build for: each poll looks for their builds too, so a
/// kernel installed while the daemon was down, or whose hook could not
/// reach it, is still ready before its first boot. Its outcome is logged
/// and recorded by the engine; a failure here never fails the poll.
fn catch_up(poller: &Poller, engine: &mut Engine<'_>, host: &PollHost, opts: PollOptions) {
    let wanted = host.kernels_without_build.iter().filter(|r| **r != host.kernel_release).take(MAX_CATCH_UP);
    for release in wanted {
        let shown = milspec_format::text::sanitize_to(release, 120);
        let polled = poller.poll_build(host, release, opts, &mut |_| {});
        let res = match engine.reload_trust().map(|()| polled) {
            Err(e) => Err(e.into()),
            Ok(Ok(PollReport::AddBuild(d))) => {
                let sha256 = d.sha256;
                engine.set_origin(Some(mirror_origin(poller, d.index_version)));
                let o = engine.add_build(d.file, release);
                if let Ok(BuildOutcome::Rejected { .. }) = &o {
                    poller.refuse_build(sha256);
                }
                o.map(Some).map_err(CheckError::from)
            }
            Ok(Ok(_)) => Ok(None),
            Ok(Err(e)) => Err(e.into()),
        };
        match res {
            Ok(Some(o)) => tracing::info!(kernel = %shown, "installed kernel {shown}: {o}"),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                kernel = %shown,
                "cannot prepare the build for the installed kernel {shown}: {}",
                crate::journal::untrusted(&e.to_string())
            ),
        }
    }
}

/// Where a download came from, for the history.
fn mirror_origin(poller: &Poller, index_version: u64) -> crate::history::Origin {
    crate::history::Origin::Mirror { mirror: poller.mirror_url().to_string(), index_version }
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
        // Nothing committed counts as nothing missing: a fresh host takes
        // what the mirror offers for its kernel.
        has_build: status.kernel.build != crate::kernels::KernelBuild::NoBuild,
        blocked_builds: status.blocked_builds.iter().map(|b| (b.version.clone(), b.kernel_release.clone())).collect(),
        kernels_without_build: status.kernel.without_build.clone(),
    })
}
