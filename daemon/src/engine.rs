//! The update engine: install a verified package into the inactive slot,
//! swap the live module, watch it on probation, then commit it or roll back
//! on its own; and on start, bring the state record and the live kernel
//! back together after a crash or a reboot.
//!
//! Every step that changes the state record saves it *before* acting, so a
//! crash between any two lines leaves a record that [`Engine::recover`]
//! can finish from.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use milspec_format::package::{PackageError, PackageStream, PayloadSink, Trust};
use milspec_format::text::{Escaped, EscapedDisplay};
use milspec_format::Payload;
use serde::Serialize;
use tracing::{info, warn};

mod after_commit;

pub use after_commit::AfterCommit;

use crate::config::Config;
use crate::health::{Snapshot, UnattributedRise, Unhealthy, WatchOptions, WatchOutcome, Watcher};
use crate::history::{now_rfc3339, Actor, Event, EventKind, History, Origin};
use crate::host::{HostContext, HostError};
use crate::kernel::{loaded_module, Kernel, KernelError, LoadedModule, ReadyModule};
use crate::lock::{LockError, StateLock};
use crate::package_hash::PackageHash;
use crate::plan::{self, Facts, Rejection};
use crate::reason_class::{FailureClass, RollbackClass};
use crate::recovery::{recovery_plan, RecoveryAction, RecoveryFacts};
use crate::slot_id::SlotId;
use crate::slots::{NoBuild, Restaged, Slot, SlotError, SlotStore, SlotTrust, StagedSlot, Staging};
use crate::state::{Blocked, Checkpoint, State, StateError, StateFile, TransitionError, Trial, TrialPhase, Verdict};
use crate::status::{self, SlotView, StatusReport};

/// Marks a durable step; with the `failpoints` feature a test can crash
/// the process here (`FAILPOINTS=name=panic`).
macro_rules! step {
    ($name:literal) => {
        fail::fail_point!($name);
    };
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("cannot write history {}: {source}", path.display())]
    History { path: PathBuf, source: io::Error },
    #[error("cannot stage the package: {path}: {source}")]
    Stage { path: String, source: io::Error },
    #[error("cannot open the kernel log for watching: {0}")]
    Watch(io::Error),
    #[error("a trial of {version} is running; a rollback ends that trial instead")]
    TrialRunning { version: String },
    #[error("a rollback is pending a reboot (a faulty module is stuck); reboot first")]
    PendingReboot,
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("recovery meant to load the committed slot, but it is not valid")]
    NoCommittedSlot,
    #[error("the committed slot {slot} is not valid; nothing to roll back to")]
    FallbackInvalid { slot: SlotId },
    #[error("nothing to roll back to: {0}")]
    NothingToRollBack(RollbackRefusal),
}

/// What an operator's unblock did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unblock {
    /// Taken off the blocklist; the entry it had.
    Unblocked(Blocked),
    /// Not on the blocklist: nothing changed.
    NotBlocked { version: String, blocked: Vec<String> },
}

impl std::fmt::Display for Unblock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unblock::Unblocked(b) => {
                write!(f, "{} is off the blocklist (blocked since {}: {})", b.version, b.at, Escaped(&b.reason))
            }
            Unblock::NotBlocked { version, blocked } if blocked.is_empty() => {
                write!(f, "{} is not blocklisted; the blocklist is empty", Escaped(version))
            }
            Unblock::NotBlocked { version, blocked } => {
                write!(f, "{} is not blocklisted; blocklisted here: {}", Escaped(version), blocked.join(", "))
            }
        }
    }
}

/// Why a rollback to the other slot (no trial running) is refused. Each is
/// decided before anything is touched: nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RollbackRefusal {
    #[error("no version is committed yet")]
    NothingCommitted,
    #[error("slot {slot} holds no valid earlier version for kernel {release}")]
    NoEarlierVersion { slot: SlotId, release: String },
    #[error("slot {slot} holds the committed version {version} too")]
    SameVersion { slot: SlotId, version: String },
    #[error("slot {slot} holds {version}, which is blocklisted ({reason})")]
    Blocklisted { slot: SlotId, version: String, reason: String },
    #[error("slot {slot} holds {version}, which has no build for the running kernel {release}")]
    NoBuild { slot: SlotId, version: String, release: String },
    #[error("slot {slot} holds {version}, which was never committed on this host (it was staged but never passed probation here); going to it would be a step forward to an untried version, not a rollback")]
    NeverCommitted { slot: SlotId, version: String },
}

/// Why an install or a rollback was refused before any swap: nothing changed.
/// Its text is the `reason` of the `rejected` history record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    /// The package itself failed verification (signatures, manifest,
    /// payload hashes, bounds).
    #[error("invalid package: {0}")]
    InvalidPackage(String),
    /// The package verified, but the plan refused it for this host.
    #[error(transparent)]
    Plan(Rejection),
    /// The old module could not be unloaded; it stays loaded.
    #[error(
        "old module could not be unloaded: {error}; it was left loaded and nothing changed: stop its users and retry"
    )]
    OldModuleBusy { error: String },
    /// A declared health check (`health.d/*.toml`) is invalid: no trial
    /// could be judged, so none begins.
    #[error("health checks: {0}; fix or remove the file, then install again (nothing changed)")]
    HealthChecks(String),
}

impl Serialize for RejectReason {
    /// As its text, as the `reason` has always been written.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// How an install ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    Committed { version: String, slot: SlotId, swap_ms: u64, watched_ms: u64 },
    AlreadyInstalled { version: String },
    Rejected { reason: RejectReason },
    RolledBack { version: String, to: Option<String>, reason: String, detect_ms: u64, rollback_ms: u64 },
    RollbackPendingReboot { version: String, reason: String },
}

impl Outcome {
    /// `milspecd install` exit codes: 0 committed, 2 rejected before any
    /// swap, 3 swapped then rolled back.
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Committed { .. } | Outcome::AlreadyInstalled { .. } => 0,
            Outcome::Rejected { .. } => 2,
            Outcome::RolledBack { .. } | Outcome::RollbackPendingReboot { .. } => 3,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct InstallOptions {
    pub allow_downgrade: bool,
}

/// What recovery found and did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "recovery", rename_all = "kebab-case")]
pub enum Recovery {
    Clean,
    LoadedCommitted {
        version: String,
    },
    Drift {
        live: Option<String>,
    },
    Resumed(Outcome),
    RolledBack(Outcome),
    SwapAbandoned {
        version: String,
    },
    StillPendingReboot {
        reason: String,
    },
    /// Nothing loaded: the committed version has no build for this kernel.
    NoBuild(#[serde(serialize_with = "serialize_no_build")] NoBuild),
}

fn serialize_no_build<S: serde::Serializer>(nb: &NoBuild, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut st = s.serialize_struct("NoBuild", 4)?;
    st.serialize_field("slot", &nb.slot)?;
    st.serialize_field("version", &nb.version)?;
    st.serialize_field("kernel_release", &nb.release)?;
    st.serialize_field("kernels", &nb.kernels)?;
    st.end()
}

/// Milliseconds as a person reads them (`12 ms`, `30.0 s`).
fn readable_ms(n: u64) -> String {
    milspec_format::text::duration(Duration::from_millis(n))
}

impl std::fmt::Display for Outcome {
    /// One line for an operator.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Committed { version, slot, swap_ms, watched_ms } => {
                write!(
                    f,
                    "committed {version} in slot {slot} (swap {}, healthy for {})",
                    readable_ms(*swap_ms),
                    readable_ms(*watched_ms)
                )
            }
            Outcome::AlreadyInstalled { version } => write!(f, "{version} is already installed and committed"),
            Outcome::Rejected { reason } => write!(f, "rejected, nothing changed: {reason}"),
            Outcome::RolledBack { version, to, reason, detect_ms, rollback_ms } => write!(
                f,
                "rolled back {version} -> {}: {reason}; fault seen {} into probation, \
                 old module live again {} later",
                to.as_deref().unwrap_or("no module"),
                readable_ms(*detect_ms),
                readable_ms(*rollback_ms)
            ),
            Outcome::RollbackPendingReboot { version, reason } => {
                write!(f, "rollback of {version} pending reboot: {reason}; the committed slot loads at next boot")
            }
        }
    }
}

impl std::fmt::Display for Recovery {
    /// One line for an operator.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recovery::Clean => f.write_str("state and kernel agree"),
            Recovery::LoadedCommitted { version } => write!(f, "loaded committed {version}"),
            Recovery::Drift { live } => {
                write!(f, "drift: loaded module {live:?} matches no committed slot (left alone)")
            }
            Recovery::Resumed(o) => write!(f, "resumed trial: {o}"),
            Recovery::RolledBack(o) => o.fmt(f),
            Recovery::SwapAbandoned { version } => {
                write!(f, "interrupted swap to {version} abandoned; old module kept")
            }
            Recovery::StillPendingReboot { reason } => write!(f, "a reboot is still needed: {reason}"),
            Recovery::NoBuild(nb) => write!(f, "no build for this kernel: {nb}"),
        }
    }
}

/// Told what the engine does as it goes, for the daemon's D-Bus layer
/// (properties and signals). Every method has a default that does nothing.
pub trait Observer {
    /// The state record was just saved.
    fn saved(&self, _state: &State) {}
    /// A package verified and was staged for `slot`; its swap begins
    /// (nothing is in the slot yet, nor in the history).
    fn staged(&self, _version: &str, _slot: SlotId) {}
    /// An event was just written to the history.
    fn recorded(&self, _event: &Event) {}
    /// A slot was just replaced: both slots as now verified.
    fn slots_changed(&self, _slots: &[SlotView]) {}
    /// Asked every probation tick: `Some(reason)` ends the trial now and
    /// rolls it back with that reason (an operator's rollback).
    fn stop_trial(&self) -> Option<String> {
        None
    }
    /// A request was refused or a build failed (its `rejected` or
    /// `build-failed` record follows), for the labelled failure metric.
    fn failed(&self, _class: FailureClass) {}
    /// A rollback begins (its intent is saved next), for the labelled
    /// rollback metric.
    fn rolling_back(&self, _class: RollbackClass) {}
}

pub struct Engine<'k> {
    cfg: Config,
    observer: Option<&'k dyn Observer>,
    host: HostContext,
    kernel: &'k dyn Kernel,
    state_file: StateFile,
    history: History,
    slots: SlotStore,
    /// The state record as last loaded or saved: this engine holds the
    /// lock, so no one else changes it.
    state: RefCell<Option<State>>,
    /// Both slots as last read and verified; dropped when a slot changes.
    slot_views: RefCell<Option<Vec<SlotView>>>,
    /// Who the current action is for and the package it reads: stamped on
    /// every history record it writes.
    audit: RefCell<Audit>,
    _lock: StateLock,
}

/// The audit fields of the current action's records.
#[derive(Debug, Default)]
struct Audit {
    actor: Option<Actor>,
    origin: Option<Origin>,
    sha256: Option<String>,
    signers: Vec<String>,
}

impl std::fmt::Debug for Engine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("state_dir", &self.cfg.paths.state_dir).finish_non_exhaustive()
    }
}

/// The committed (fallback) module, sealed and hashed, held while a trial
/// runs.
#[derive(Debug)]
struct Standby {
    slot: SlotId,
    version: String,
    ready: ReadyModule,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Streams every build of the package into a staging folder beside the
/// slots (never into a slot), one file per kernel release. A build the
/// staging folder already holds (linked from the slot being extended) is
/// verified and dropped.
struct StageSink<'a> {
    staging: &'a mut Staging,
    /// Builds that were already in the staging folder when copying began.
    linked: BTreeSet<String>,
}

impl PayloadSink for StageSink<'_> {
    fn data(&mut self, p: &Payload, chunk: &[u8]) -> io::Result<()> {
        if self.linked.contains(&p.kernel_release) {
            return Ok(());
        }
        self.staging.write(&p.kernel_release, chunk)
    }
}

impl<'k> Engine<'k> {
    /// Takes the state lock and loads the trusted keys.
    pub fn open(cfg: Config, kernel: &'k dyn Kernel) -> Result<Self, EngineError> {
        let lock = StateLock::acquire(&cfg.paths.state_dir)?;
        let host = HostContext::open(&cfg)?;
        let slots = SlotStore::open(&cfg.paths.state_dir)?;
        // Left by an install that stopped half-way; never part of a slot.
        slots.clean_staging()?;
        Ok(Engine {
            observer: None,
            host,
            state_file: StateFile::new(&cfg.paths.state_dir),
            history: History::new(&cfg.paths.state_dir).with_retention(cfg.history.retention()),
            kernel,
            slots,
            state: RefCell::new(None),
            slot_views: RefCell::new(None),
            audit: RefCell::new(Audit::default()),
            cfg,
            _lock: lock,
        })
    }

    /// Reports saves and history events to `observer` from now on.
    pub fn set_observer(&mut self, observer: &'k dyn Observer) {
        self.observer = Some(observer);
    }

    /// Reads the trust in force again: a poll may have rotated the keys.
    pub fn reload_trust(&mut self) -> Result<(), EngineError> {
        Ok(self.host.reload_trust(&self.cfg)?)
    }

    fn slot_trust<'a>(&'a self, release: &'a str) -> SlotTrust<'a> {
        self.host.slot_trust(release)
    }

    /// The next action is for `actor`, reading a package from `origin` (if
    /// it reads one): every history record it writes names them.
    pub fn act_for(&self, actor: Actor, origin: Option<Origin>) {
        *self.audit.borrow_mut() = Audit { actor: Some(actor), origin, ..Audit::default() };
    }

    /// The package the action reads next comes from `origin` (the actor stays).
    pub fn set_origin(&self, origin: Option<Origin>) {
        let mut a = self.audit.borrow_mut();
        a.origin = origin;
        a.sha256 = None;
        a.signers.clear();
    }

    /// Reads the rest of the package (bounded) so its hash is of the whole
    /// file, for the records that follow.
    fn package_read<R: Read>(&self, reader: &mut PackageHash<R>) {
        self.audit.borrow_mut().sha256 = reader.finish(self.host.limits.max_package_size);
    }

    fn record(&self, mut ev: Event) -> Result<(), EngineError> {
        {
            let a = self.audit.borrow();
            if let Some(actor) = &a.actor {
                ev = ev.actor(actor.clone());
            }
            if let Some(origin) = &a.origin {
                ev = ev.origin(origin.clone());
            }
            ev = ev.package(a.sha256.clone(), &a.signers);
        }
        if ev.kernel.is_none() {
            if let Ok(k) = self.host.kernel_release() {
                ev = ev.kernel(k);
            }
        }
        let appended = self
            .history
            .append(&ev)
            .map_err(|source| EngineError::History { path: self.history.path().into(), source })?;
        crate::journal::log_record(&ev, &appended);
        if let Some(o) = self.observer {
            o.recorded(&ev);
        }
        Ok(())
    }

    fn load_state(&self) -> Result<State, EngineError> {
        let state = self.state_file.load()?;
        *self.state.borrow_mut() = Some(state.clone());
        Ok(state)
    }

    fn save(&self, state: &State) -> Result<(), EngineError> {
        self.state_file.save(state)?;
        *self.state.borrow_mut() = Some(state.clone());
        if let Some(o) = self.observer {
            o.saved(state);
        }
        Ok(())
    }

    fn live(&self) -> Option<LoadedModule> {
        loaded_module(&self.host.paths, &self.cfg.kernel.carry_params)
    }

    fn boottime_ms(&self) -> u64 {
        ms(self.kernel.boottime())
    }

    fn read_slot(&self, id: SlotId, release: &str) -> Result<Option<Slot>, EngineError> {
        match self.slots.read(id, self.slot_trust(release)) {
            // A key marked compromised signed it: the slot is not valid
            // (status names why), so the daemon runs on and can replace it.
            Err(e @ SlotError::Compromised { .. }) => {
                tracing::error!("{e}");
                Ok(None)
            }
            r => Ok(r?),
        }
    }

    /// Both slots, read and verified once and kept until a slot changes.
    fn slot_views(&self) -> Vec<SlotView> {
        if let Some(v) = self.slot_views.borrow().as_ref() {
            return v.clone();
        }
        // As `milspecd status` does: no kernel release, no payload for it.
        let release = self.host.kernel_release().unwrap_or_default();
        let views = status::slot_views(&self.slots, Ok(self.host.slot_trust(release)));
        *self.slot_views.borrow_mut() = Some(views.clone());
        views
    }

    fn committed_version(&self, state: &State) -> Option<String> {
        let id = state.committed?;
        let view = self.slot_views().into_iter().find(|v| v.slot == id)?;
        if let Some(e) = &view.error {
            warn!("committed slot {id} cannot be used: {}", Escaped(e));
        }
        view.version
    }

    /// The report `milspecd status` prints, from what this engine already
    /// knows (the state record, both slots as last verified) and a fresh
    /// look at the loaded module and its health.
    pub fn status(&self) -> Result<StatusReport, EngineError> {
        let cached = self.state.borrow().clone();
        let state = match cached {
            Some(s) => s,
            None => self.load_state()?,
        };
        let live = self.live();
        let release = self.host.kernel_release().unwrap_or_default().to_string();
        let installed = crate::kernels::installed(&self.cfg.kernel.modules_dir);
        Ok(status::report(state, self.slot_views(), live, Snapshot::read(&self.host.paths), &release, &installed))
    }

    /// The running kernel's release, read once per engine.
    pub fn kernel_release(&self) -> Result<&str, EngineError> {
        Ok(self.host.kernel_release()?)
    }

    /// What the host is now, as the planner sees it.
    pub fn facts(&self) -> Result<Facts, EngineError> {
        let state = self.load_state()?;
        self.facts_for(&state)
    }

    fn facts_for(&self, state: &State) -> Result<Facts, EngineError> {
        let release = self.host.kernel_release()?.to_string();
        let boot_id = self.host.boot_id()?.to_string();
        Ok(Facts {
            sys_vendor: self.host.sys_vendor().map(str::to_string),
            live_version: self.live().map(|m| m.version.unwrap_or_default()),
            committed_version: self.committed_version(state),
            pending_reboot_this_boot: state.pending_reboot.as_ref().is_some_and(|p| p.boot_id == boot_id),
            kernel_release: release,
            module_policy: crate::host_policy::read(&self.host.paths),
        })
    }

    /// Loads the module from a slot through a sealed copy whose hash was
    /// just checked, with `carried` parameters over the package defaults.
    fn load_slot(&self, slot: &Slot, carried: &BTreeMap<String, String>) -> Result<(), EngineError> {
        let ready = ReadyModule::from_slot(slot, carried, self.host.limits.max_payload_size)?;
        info!(slot = %slot.id, version = %slot.manifest.version, params = %ready.params, "loading module");
        Ok(ready.load(self.kernel)?)
    }

    /// Installs a package read from `reader`: one full cycle, in order:
    /// open and verify the signed header, plan, begin the staging folder,
    /// copy the payloads through their hash checks, seal the staged slot,
    /// then swap and watch.
    pub fn install(&mut self, reader: impl Read, opts: InstallOptions) -> Result<Outcome, EngineError> {
        let mut state = self.load_state()?;
        let facts = self.facts_for(&state)?;
        let invalid = |e: PackageError| RejectReason::InvalidPackage(e.to_string());
        let mut reader = PackageHash::new(reader);

        // 1. The signed header: signatures over the raw manifest, then the manifest.
        let mut stream = match PackageStream::new(&mut reader, &self.host.limits) {
            Ok(s) => s,
            Err(e) => return self.reject_package(&mut reader, None, invalid(e)),
        };
        let trust = Trust::Keys { keys: &self.host.keys, threshold: self.host.threshold };
        let opened = match stream.open(trust) {
            Ok(o) => o,
            Err(e) => return self.reject_package(&mut reader, None, invalid(e)),
        };
        self.audit.borrow_mut().signers = opened.signers.iter().map(ToString::to_string).collect();

        // The signatures verified: the manifest's version is trusted, and
        // every later refusal records it.
        let offered = opened.manifest.version.to_string();

        // 2. Plan (pure): where it goes, or why not.
        let popts =
            plan::Options { allow_downgrade: opts.allow_downgrade, adopt_unmanaged: self.cfg.kernel.adopt_unmanaged };
        let plan = match plan::plan(&state, &opened.manifest, &facts, &self.host.paths.module, popts) {
            Err(r) => return self.reject_package(&mut reader, Some(&offered), RejectReason::Plan(r)),
            Ok(p) if p.already_installed => {
                let version = facts.committed_version.clone().unwrap_or_default();
                info!(%version, "already installed and committed; nothing to do");
                return Ok(Outcome::AlreadyInstalled { version });
            }
            Ok(p) => p,
        };
        // The declared checks judge the trial: a broken one refuses it now.
        if let Err(e) = crate::health::declared::load(&self.cfg.health.checks_dir) {
            return self.reject_package(&mut reader, Some(&offered), RejectReason::HealthChecks(e.to_string()));
        }

        // 3. Begin the staging folder beside the slots (no slot changes).
        let mut staging = self.slots.stage(plan.target)?;
        step!("install.staging");

        // 4. Copy the payloads, each through its size and hash check.
        let mut sink = StageSink { staging: &mut staging, linked: BTreeSet::new() };
        let pkg = match opened.copy_payloads(&mut sink) {
            Ok(pkg) => pkg,
            Err(PackageError::Sink { path, source }) => return Err(EngineError::Stage { path, source }),
            Err(e) => return self.reject_package(&mut reader, Some(&offered), invalid(e)),
        };
        self.package_read(&mut reader);
        let version = pkg.manifest.version.to_string();
        info!(%version, slot = %plan.target, signers = pkg.signers.len(), "package verified");

        // 5. Finish: the whole package verified, so complete the staging
        // folder (signed metadata, read back, verified, `valid`). No slot
        // has changed; the target slot is replaced only once the old
        // module is unloaded.
        let staged =
            self.slots.seal(staging, &pkg.manifest_bytes, &pkg.signatures, self.slot_trust(&facts.kernel_release))?;
        info!(%version, slot = %plan.target, "staged");
        if let Some(o) = self.observer {
            o.staged(&version, plan.target);
        }
        step!("install.after-stage");

        let slot = staged.slot().clone();
        self.trial_of_slot(&mut state, &slot, plan.fallback, Some(staged))
    }

    /// Swaps the live module for the one in `slot` (verified), watches it on
    /// probation, then commits it or rolls back to `fallback`. With `staged`
    /// (an install), `slot` is the staged copy: it goes into its slot only
    /// after the old module is unloaded, so a refusal up to there (the old
    /// module is busy) leaves both slots exactly as they were.
    fn trial_of_slot(
        &self,
        state: &mut State,
        slot: &Slot,
        fallback: Option<SlotId>,
        staged: Option<StagedSlot>,
    ) -> Result<Outcome, EngineError> {
        let version = slot.manifest.version.to_string();
        // Check the image before touching the live module; the live
        // module's parameters carry over to the new one.
        let live = self.live();
        let carried = live.as_ref().map(|m| m.params.clone()).unwrap_or_default();
        let ready = ReadyModule::from_slot(slot, &carried, self.host.limits.max_payload_size)?;
        // The module to fall back to, sealed and hashed now, so that a
        // rollback only unloads and loads.
        let standby = fallback.and_then(|id| self.standby(id, &slot.release, &carried));
        let before = state.clone();

        // Checkpoint, saved before the old module is touched.
        let window = slot
            .manifest
            .probation
            .as_ref()
            .and_then(|p| p.window_secs)
            .map_or(self.cfg.health.probation, Duration::from_secs)
            .clamp(Duration::from_secs(1), Duration::from_secs(24 * 3600));
        let checkpoint = Checkpoint {
            slot: fallback,
            version: live.as_ref().and_then(|m| m.version.clone()),
            params: carried,
            baseline: Snapshot::read(&self.host.paths),
        };
        let kernel = self.host.kernel_release()?.to_string();
        state.begin_trial(
            Trial {
                slot: slot.id,
                version: slot.manifest.version.clone(),
                sequence: slot.manifest.sequence,
                phase: TrialPhase::Swapping,
                boot_id: self.host.boot_id()?.to_string(),
                started_ms: self.boottime_ms(),
                window_ms: ms(window),
                checkpoint: checkpoint.clone(),
                rollback_reason: None,
            },
            &kernel,
        )?;
        self.save(state)?;
        info!(old = ?checkpoint.version, params = ?checkpoint.params, "checkpoint saved");
        step!("install.after-checkpoint");

        // Arm the log watch before the swap so nothing printed at load is missed.
        let mut watcher = Watcher::arm(&self.host.paths).map_err(EngineError::Watch)?;
        let swap_start = Instant::now();
        if live.is_some() {
            if let Err(e) = self.kernel.unload(&self.host.paths, self.cfg.health.unload_timeout) {
                // The old module stays; put the record back as it was and
                // drop the staged copy: no slot was touched.
                drop(staged);
                *state = before;
                self.save(state)?;
                return self.reject(Some(&version), RejectReason::OldModuleBusy { error: e.to_string() });
            }
            info!(ms = ms(swap_start.elapsed()), "old module unloaded");
        }
        step!("install.after-unload");

        if let Some(staged) = staged {
            // Past the point of no return: the old module is gone, so the
            // target slot is replaced now, in one exchange of folders.
            let replaced = self.slots.replace(staged, self.slot_trust(&slot.release));
            // The slot changed (or may have): read it again, once.
            *self.slot_views.borrow_mut() = None;
            if let Some(o) = self.observer {
                o.slots_changed(&self.slot_views());
            }
            if let Err(e) = replaced {
                warn!("cannot put {version} in slot {}: {e}", slot.id);
                let reason = format!("cannot write slot {}: {e}", slot.id);
                return self.roll_back(state, reason, RollbackClass::Load, Instant::now(), 0, standby);
            }
            self.record(Event::new(EventKind::Staged).version(&version).slot(slot.id))?;
            info!(%version, slot = %slot.id, "slot replaced");
        }

        let params = &ready.params;
        if let Err(e) = ready.load(self.kernel) {
            warn!("new module failed to load: {}", EscapedDisplay(&e));
            let detected = Instant::now();
            if let Some(errno) = crate::kernel::host_policy_refusal(&e) {
                // The kernel's signature or lockdown policy, not the
                // module's fault: back to the old one, never blocklisted.
                let reason = format!(
                    "host policy refused the module at load ({}): {e}; not blocklisted: see milspecd policy",
                    nix::errno::Errno::from_raw(errno)
                );
                return self.roll_back_as(state, reason, RollbackClass::Load, detected, 0, standby, Verdict::Unjudged);
            }
            return self.roll_back(state, format!("load failed: {e}"), RollbackClass::Load, detected, 0, standby);
        }
        let swap_ms = ms(swap_start.elapsed());
        info!(%version, swap_ms, params = %params, "new module loaded");
        step!("install.after-load");

        state.loaded(self.boottime_ms())?;
        self.save(state)?;
        self.record(
            Event::new(EventKind::Swapped)
                .version(&version)
                .slot(slot.id)
                .from_to(checkpoint.version.clone().unwrap_or_else(|| "none".into()), Some(version.clone()))
                .millis(swap_ms),
        )?;
        step!("install.after-swapped");
        let outcome = self.watch(state, &mut watcher, window, &checkpoint.baseline, standby)?;
        Ok(match outcome {
            Outcome::Committed { version, slot, watched_ms, .. } => {
                Outcome::Committed { version, slot, swap_ms, watched_ms }
            }
            other => other,
        })
    }

    /// An operator takes `version` (any build of its release) off the
    /// blocklist, so the mirror or an install may bring it again. The
    /// state record is saved first, then an `unblocked` record names the
    /// actor and the entry's old reason. A version that is not
    /// blocklisted changes nothing but one `rejected` record.
    pub fn unblock(&mut self, version: &semver::Version, actor: &str) -> Result<Unblock, EngineError> {
        let mut state = self.load_state()?;
        let Some(entry) = state.unblock(version) else {
            let blocked: Vec<String> = state.blocklist.iter().map(|b| b.version.to_string()).collect();
            let refusal = Unblock::NotBlocked { version: version.to_string(), blocked };
            self.failed(FailureClass::Refused);
            self.record(
                Event::new(EventKind::Rejected).version(version).reason(format!("unblock by {actor}: {refusal}")),
            )?;
            return Ok(refusal);
        };
        self.save(&state)?;
        self.record(
            Event::new(EventKind::Unblocked)
                .version(&entry.version)
                .reason(format!("unblocked by {actor}; blocked since {}: {}", entry.at, entry.reason)),
        )?;
        info!(version = %entry.version, actor, "{} taken off the blocklist", entry.version);
        Ok(Unblock::Unblocked(entry))
    }

    /// An operator's rollback while no trial runs: back to the version kept
    /// in the other slot (the one committed before). It goes through a
    /// trial like any swap; once committed, the version left behind is
    /// blocklisted so the mirror does not bring it back. If the earlier
    /// version fails its probation, the current one is restored.
    pub fn revert(&mut self, reason: &str) -> Result<Outcome, EngineError> {
        let mut state = self.load_state()?;
        if let Some(t) = &state.trial {
            return Err(EngineError::TrialRunning { version: t.version.to_string() });
        }
        let facts = self.facts_for(&state)?;
        if facts.pending_reboot_this_boot {
            return Err(EngineError::PendingReboot);
        }
        let refuse = |r| Err(EngineError::NothingToRollBack(r));
        let Some(current) = state.committed else {
            return refuse(RollbackRefusal::NothingCommitted);
        };
        let release = &facts.kernel_release;
        let left = self.read_slot(current, release)?;
        let Some(earlier) = self.read_slot(current.other(), release)? else {
            return refuse(RollbackRefusal::NoEarlierVersion { slot: current.other(), release: release.clone() });
        };
        let from = left.as_ref().map(|s| s.manifest.version.clone());
        let (slot, version) = (earlier.id, earlier.manifest.version.to_string());
        if from.as_ref() == Some(&earlier.manifest.version) {
            return refuse(RollbackRefusal::SameVersion { slot, version });
        }
        if earlier.current().is_err() {
            return refuse(RollbackRefusal::NoBuild { slot, version, release: release.clone() });
        }
        if let Some(b) = state.is_blocked(&earlier.manifest.version) {
            return refuse(RollbackRefusal::Blocklisted { slot, version, reason: b.reason.clone() });
        }
        if !self.was_committed(&state, &earlier.manifest.version)? {
            return refuse(RollbackRefusal::NeverCommitted { slot, version });
        }
        warn!(from = ?from.as_ref().map(ToString::to_string), to = %earlier.manifest.version, "operator rollback to slot {}: {reason}", earlier.id);
        let outcome = self.trial_of_slot(&mut state, &earlier, Some(current), None)?;
        if let (Outcome::Committed { .. }, Some(left)) = (&outcome, left) {
            let mut state = self.load_state()?;
            state.block(Blocked {
                version: left.manifest.version.clone(),
                sequence: left.manifest.sequence,
                reason: reason.to_string(),
                at: now_rfc3339(),
            });
            self.save(&state)?;
        }
        Ok(outcome)
    }

    /// Whether `v` was committed on this host: the state record knows every
    /// version committed since it kept them; for older records, a
    /// `committed` event in the history.
    fn was_committed(&self, state: &State, v: &semver::Version) -> Result<bool, EngineError> {
        if state.was_committed(v) {
            return Ok(true);
        }
        let events = self
            .history
            .read(usize::MAX)
            .map_err(|source| EngineError::History { path: self.history.path().into(), source })?;
        let v = v.to_string();
        Ok(events.iter().any(|e| e.event == EventKind::Committed && e.version.as_deref() == Some(v.as_str())))
    }

    fn failed(&self, class: FailureClass) {
        if let Some(o) = self.observer {
            o.failed(class);
        }
    }

    /// [`Self::reject`] of the package `reader` reads, once its hash is known.
    fn reject_package<R: Read>(
        &self,
        reader: &mut PackageHash<R>,
        version: Option<&str>,
        reason: RejectReason,
    ) -> Result<Outcome, EngineError> {
        self.package_read(reader);
        self.reject(version, reason)
    }

    fn reject(&self, version: Option<&str>, reason: RejectReason) -> Result<Outcome, EngineError> {
        warn!("rejected: {}", EscapedDisplay(&reason));
        self.failed(FailureClass::of_reject(&reason));
        let mut ev = Event::new(EventKind::Rejected).reason(reason.to_string());
        if let Some(v) = version {
            ev = ev.version(v);
        }
        self.record(ev)?;
        Ok(Outcome::Rejected { reason })
    }

    /// Watches the trial for the rest of its window, then commits or rolls back.
    fn watch(
        &self,
        state: &mut State,
        watcher: &mut Watcher,
        window: Duration,
        baseline: &Snapshot,
        standby: Option<Standby>,
    ) -> Result<Outcome, EngineError> {
        let mut opts = WatchOptions::from_config(&self.cfg.health);
        match crate::health::declared::load(&self.cfg.health.checks_dir) {
            Ok(declared) => opts.declared = declared,
            Err(e) => {
                // Valid when the trial began: changed under it. Judge
                // nothing as healthy that a broken check was meant to watch,
                // and nothing against the module either (unjudged).
                let reason = Unhealthy::CheckFailed { name: "health.d".into(), why: e.to_string() };
                let text = reason_text(&reason);
                return self.roll_back_as(
                    state,
                    text,
                    RollbackClass::Check,
                    Instant::now(),
                    0,
                    standby,
                    Verdict::Unjudged,
                );
            }
        }
        let mut progress = |left: Duration| {
            info!(left = %humantime::format_duration(Duration::from_secs(left.as_secs())), "probation");
        };
        // The first look happens before any wait, so a fault of the load
        // itself ends the trial at once.
        let observer = self.observer;
        let stop = move || observer.and_then(|o| o.stop_trial());
        let outcome = watcher.watch_until(baseline, window, &opts, &mut progress, &stop);
        match outcome {
            WatchOutcome::Healthy { watched, unattributed } => self.commit(state, ms(watched), &unattributed),
            WatchOutcome::Unhealthy { reason, after } => {
                let detected = Instant::now();
                warn!(after_ms = ms(after), "unhealthy: {}", EscapedDisplay(&reason));
                let class = RollbackClass::of_unhealthy(&reason);
                self.roll_back(state, reason_text(&reason), class, detected, ms(after), standby)
            }
            WatchOutcome::Stopped { reason, after } => {
                let detected = Instant::now();
                warn!(after_ms = ms(after), "trial stopped: {}", Escaped(&reason));
                self.roll_back(state, reason, RollbackClass::Operator, detected, ms(after), standby)
            }
        }
    }

    fn commit(
        &self,
        state: &mut State,
        watched_ms: u64,
        unattributed: &[UnattributedRise],
    ) -> Result<Outcome, EngineError> {
        let trial = state.commit_trial()?;
        self.save(state)?;
        step!("commit.after-save");
        let version = trial.version.to_string();
        let mut event = Event::new(EventKind::Committed).version(&version).slot(trial.slot).millis(watched_ms);
        if !unattributed.is_empty() {
            let rises: Vec<String> = unattributed.iter().map(|r| r.to_string()).collect();
            event = event.reason(format!("faults not attributed to the module: {}", rises.join("; ")));
        }
        self.record(event)?;
        info!(%version, slot = %trial.slot, "committed");
        Ok(Outcome::Committed { version, slot: trial.slot, swap_ms: 0, watched_ms })
    }

    /// The committed module of slot `id` made ready to load again with
    /// `carried` parameters: held through a trial so that a rollback only
    /// unloads and loads. `None` (and a warning) if the slot cannot be
    /// used; a rollback then reads it again and says why.
    fn standby(&self, id: SlotId, release: &str, carried: &BTreeMap<String, String>) -> Option<Standby> {
        let ready = self
            .read_slot(id, release)
            .and_then(|slot| {
                let slot = slot.ok_or(EngineError::FallbackInvalid { slot: id })?;
                let ready = ReadyModule::from_slot(&slot, carried, self.host.limits.max_payload_size)?;
                Ok(Standby { slot: id, version: slot.manifest.version.to_string(), ready })
            })
            .map_err(|e| warn!("the fallback slot {id} cannot be made ready ahead: {}", EscapedDisplay(&e)));
        ready.ok()
    }

    /// Rolls the trial back to its checkpoint. The intent (and the
    /// blocklist entry) is saved first, so a crash here resumes the rollback.
    /// With `standby` (the checkpoint's slot, sealed during the trial) the
    /// old module is loaded from it at once; without (a rollback resumed
    /// by recovery), the slot is read, verified and sealed here.
    fn roll_back(
        &self,
        state: &mut State,
        reason: String,
        class: RollbackClass,
        detected: Instant,
        detect_ms: u64,
        standby: Option<Standby>,
    ) -> Result<Outcome, EngineError> {
        self.roll_back_as(state, reason, class, detected, detect_ms, standby, Verdict::Guilty)
    }

    /// [`Self::roll_back`], the version judged by `verdict` (a trial never
    /// judged, or cut short by a reboot, is not blocklisted at once).
    #[allow(clippy::too_many_arguments)]
    fn roll_back_as(
        &self,
        state: &mut State,
        reason: String,
        class: RollbackClass,
        detected: Instant,
        detect_ms: u64,
        standby: Option<Standby>,
        verdict: Verdict,
    ) -> Result<Outcome, EngineError> {
        if let Some(o) = self.observer {
            o.rolling_back(class);
        }
        let trial = state.begin_rollback(&reason, now_rfc3339(), verdict)?;
        let reason = trial.rollback_reason.clone().unwrap_or(reason);
        let version = trial.version.to_string();
        self.save(state)?;
        warn!(%version, "rolling back: {}", Escaped(&reason));
        step!("rollback.after-intent");

        let live = self.live();
        let trial_is_live = live.as_ref().is_some_and(|m| m.version.as_deref() == Some(version.as_str()));
        if trial_is_live {
            if let Err(e) = self.kernel.unload(&self.host.paths, self.cfg.health.unload_timeout) {
                return self.pending_reboot(
                    state,
                    &trial,
                    format!("{reason}; the faulty module cannot be unloaded: {e}"),
                );
            }
        }
        step!("rollback.after-unload");

        let to = match trial.checkpoint.slot {
            Some(id) if self.live().is_none() => match standby.filter(|s| s.slot == id) {
                Some(standby) => {
                    info!(slot = %id, version = %standby.version, params = %standby.ready.params, "loading module (ready since the swap)");
                    standby.ready.load(self.kernel)?;
                    Some(standby.version)
                }
                None => {
                    let release = self.host.kernel_release()?.to_string();
                    let slot = self.read_slot(id, &release)?.ok_or(EngineError::FallbackInvalid { slot: id })?;
                    match slot.current() {
                        Ok(_) => {
                            self.load_slot(&slot, &trial.checkpoint.params)?;
                            Some(slot.manifest.version.to_string())
                        }
                        // Back on a kernel the checkpoint's version has no
                        // build for: nothing to load, reported as such.
                        Err(nb) => {
                            warn!(message_id = crate::journal::NO_BUILD, "{}", EscapedDisplay(&nb));
                            None
                        }
                    }
                }
            },
            _ => self.live().and_then(|m| m.version),
        };
        let rollback_ms = ms(detected.elapsed());
        state.end_rollback(to.clone(), now_rfc3339())?;
        self.save(state)?;
        self.record(
            Event::new(EventKind::RolledBack)
                .version(&version)
                .from_to(&version, to.clone())
                .reason(&reason)
                .millis(rollback_ms),
        )?;
        info!(from = %version, to = ?to, rollback_ms, "rolled back");
        Ok(Outcome::RolledBack { version, to, reason, detect_ms, rollback_ms })
    }

    fn pending_reboot(&self, state: &mut State, trial: &Trial, reason: String) -> Result<Outcome, EngineError> {
        let version = trial.version.to_string();
        let boot_id = self.host.boot_id()?.to_string();
        state.rollback_pending_reboot(boot_id, &reason, now_rfc3339())?;
        self.save(state)?;
        self.record(Event::new(EventKind::RollbackPendingReboot).version(&version).reason(&reason))?;
        warn!(%version, "rollback pending reboot: the faulty module cannot be unloaded; the committed slot loads at next boot");
        if self.cfg.health.reboot_on_stuck_module {
            request_reboot();
        }
        Ok(Outcome::RollbackPendingReboot { version, reason })
    }

    /// Brings the state record and the live kernel together after a start:
    /// gathers the facts, asks [`recovery_plan`], and carries the plan out.
    pub fn recover(&mut self) -> Result<Recovery, EngineError> {
        let mut state = self.load_state()?;
        let release = self.host.kernel_release()?.to_string();
        let boot_id = self.host.boot_id()?.to_string();
        let still_pending = state.pending_reboot.as_ref().is_some_and(|p| p.boot_id == boot_id);
        // The committed slot matters only with no trial (and no reboot awaited).
        let committed = match (&state.trial, state.committed) {
            (None, Some(id)) if !still_pending => self.read_slot(id, &release)?,
            _ => None,
        };
        // Only a trial cut short by a reboot asks for the evidence.
        let panic_evidence = state.trial.as_ref().filter(|t| t.boot_id != boot_id).and_then(|_| {
            let since = std::fs::metadata(self.state_file.path()).and_then(|m| m.modified()).ok()?;
            crate::panic_evidence::read(&self.host.paths.pstore(), &self.host.paths.module, since)
        });
        let facts = RecoveryFacts {
            boot_id,
            live: self.live(),
            committed: committed.as_ref().map(|s| (s.id, s.manifest.version.to_string())),
            committed_build: committed.as_ref().is_some_and(|s| {
                s.current().is_ok() && state.is_build_blocked(&s.manifest.version, &release).is_none()
            }),
            committed_blocked: committed
                .as_ref()
                .is_some_and(|s| state.is_build_blocked(&s.manifest.version, &release).is_some()),
            kernel_release: release.clone(),
            adopt_unmanaged: self.cfg.kernel.adopt_unmanaged,
            panic_evidence,
            inconclusive_retries: self.cfg.health.inconclusive_retries,
        };
        let plan = recovery_plan(&state, &facts);

        if let Some(stuck_version) = &plan.clear_pending_reboot {
            state.pending_reboot = None;
            self.save(&state)?;
            self.record(
                Event::new(EventKind::Recovered)
                    .version(stuck_version)
                    .reason("rebooted after a rollback that was pending a reboot"),
            )?;
        }
        if state.trial.is_none() && !matches!(plan.action, RecoveryAction::StillPendingReboot { .. }) {
            self.reconcile_history(&state, &release)?;
        }
        let version = state.trial.as_ref().map(|t| t.version.to_string()).unwrap_or_default();
        match plan.action {
            RecoveryAction::StillPendingReboot { reason } => Ok(Recovery::StillPendingReboot { reason }),
            RecoveryAction::RollBack { reason, note, verdict } => {
                self.record(Event::new(EventKind::Recovered).version(&version).reason(note))?;
                let o =
                    self.roll_back_as(&mut state, reason, RollbackClass::Recovery, Instant::now(), 0, None, verdict)?;
                Ok(Recovery::RolledBack(o))
            }
            RecoveryAction::UnloadBlockedBuild => {
                let slot = committed.ok_or(EngineError::NoCommittedSlot)?;
                warn!(version = %slot.manifest.version, "the loaded build for this kernel failed here and is blocked: unloading it");
                self.kernel.unload(&self.host.paths, self.cfg.health.unload_timeout)?;
                if slot.build(&release).is_some() && slot.builds.len() > 1 {
                    self.drop_build_from(&slot, &release)?;
                }
                self.record(
                    Event::new(EventKind::Recovered)
                        .version(slot.manifest.version.to_string())
                        .kernel(&release)
                        .reason("unloaded a build blocked for this kernel (it failed here)"),
                )?;
                Ok(Recovery::NoBuild(slot.no_build(&release)))
            }
            RecoveryAction::NoBuild => {
                let slot = committed.ok_or(EngineError::NoCommittedSlot)?;
                let nb = slot.no_build(&release);
                warn!(message_id = crate::journal::NO_BUILD, "{}", EscapedDisplay(&nb));
                Ok(Recovery::NoBuild(nb))
            }
            RecoveryAction::AbandonSwap => {
                state.abandon_swap()?;
                self.save(&state)?;
                self.record(
                    Event::new(EventKind::Recovered)
                        .version(&version)
                        .reason("swap interrupted before unload; old module kept"),
                )?;
                Ok(Recovery::SwapAbandoned { version })
            }
            RecoveryAction::ResumeTrial => self.resume_trial(state).map(Recovery::Resumed),
            RecoveryAction::LoadCommitted => {
                let slot = committed.ok_or(EngineError::NoCommittedSlot)?;
                self.load_slot(&slot, &Default::default())?;
                let version = slot.manifest.version.to_string();
                self.record(
                    Event::new(EventKind::Recovered)
                        .version(&version)
                        .slot(slot.id)
                        .reason("no module was loaded; loaded the committed slot"),
                )?;
                Ok(Recovery::LoadedCommitted { version })
            }
            RecoveryAction::Clean => Ok(Recovery::Clean),
            RecoveryAction::Drift { replace } => {
                let Some(live) = facts.live else {
                    return Ok(Recovery::Clean);
                };
                let live_v = live.version.clone();
                warn!(live = ?live_v, "the loaded module matches no committed slot (drift)");
                self.record(
                    Event::new(EventKind::Drift)
                        .reason(format!("loaded version {:?} matches no committed slot", live_v)),
                )?;
                match committed.filter(|_| replace) {
                    Some(slot) => {
                        self.kernel.unload(&self.host.paths, self.cfg.health.unload_timeout)?;
                        self.load_slot(&slot, &live.params)?;
                        Ok(Recovery::LoadedCommitted { version: slot.manifest.version.to_string() })
                    }
                    None => Ok(Recovery::Drift { live: live_v }),
                }
            }
        }
    }

    /// The trial module is live: check it now, then watch it for the rest
    /// of its window (a trial caught mid-swap starts its window now).
    fn resume_trial(&self, mut state: State) -> Result<Outcome, EngineError> {
        let Some(trial) = state.trial.clone() else {
            return Err(TransitionError::NoTrial { action: "resume the trial" }.into());
        };
        if trial.phase == TrialPhase::Swapping {
            state.loaded(self.boottime_ms())?;
        }
        self.save(&state)?;
        let elapsed = Duration::from_millis(self.boottime_ms().saturating_sub(trial.started_ms));
        let left = Duration::from_millis(trial.window_ms).saturating_sub(elapsed);
        self.record(Event::new(EventKind::Recovered).version(trial.version.to_string()).reason(format!(
            "resuming the trial with {} left",
            humantime::format_duration(Duration::from_secs(left.as_secs()))
        )))?;
        // What the kernel logged since the trial began counts: a fault
        // report written before the crash still names the module. The log's
        // clock stops while the host sleeps, CLOCK_BOOTTIME does not, so the
        // time slept so far is taken off (reading a little more is safe).
        let since = Duration::from_millis(trial.started_ms).saturating_sub(slept());
        let mut watcher = Watcher::arm_since(&self.host.paths, since).map_err(EngineError::Watch)?;
        self.watch(&mut state, &mut watcher, left, &trial.checkpoint.baseline, None)
    }
}

/// How adding a kernel build to the committed slot ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum BuildOutcome {
    /// The committed slot holds a build for that kernel already.
    Ready { version: String, kernel_release: String },
    /// The build was verified and added to the committed slot; `loaded`
    /// when it is the running kernel's and it was loaded (no module was).
    Added { version: String, kernel_release: String, loaded: bool },
    /// Refused before anything changed.
    Rejected { reason: String },
    /// Added, then it failed on the running kernel: unloaded, that
    /// (version, kernel) pair blocked and the build dropped again.
    Failed { version: String, kernel_release: String, reason: String },
}

impl std::fmt::Display for BuildOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildOutcome::Ready { version, kernel_release } => {
                write!(f, "{version} already has a build for kernel {kernel_release}")
            }
            BuildOutcome::Added { version, kernel_release, loaded } => write!(
                f,
                "added the build of {version} for kernel {kernel_release} to the committed slot{}",
                if *loaded { "; loaded it" } else { "" }
            ),
            BuildOutcome::Rejected { reason } => write!(f, "rejected, nothing changed: {reason}"),
            BuildOutcome::Failed { version, kernel_release, reason } => write!(
                f,
                "the build of {version} for kernel {kernel_release} failed ({reason}); unloaded, dropped, and blocked for this kernel only"
            ),
        }
    }
}

impl Engine<'_> {
    /// Adds the build for `release` from a kernel-build republish of the
    /// committed version (read from `reader`) to the committed slot,
    /// without a trial: the version was proven here. The package must be a
    /// republish of the committed manifest (same version, sequence,
    /// parameters and builds, only builds added) and carry `release`.
    /// The slot is rewritten by exchange, so it stays valid for every
    /// kernel it served at every step. When `release` is the running
    /// kernel and no module is loaded, the build is loaded and checked at
    /// once; a failure blocks that (version, kernel) pair only.
    pub fn add_build(&mut self, reader: impl Read, release: &str) -> Result<BuildOutcome, EngineError> {
        let mut state = self.load_state()?;
        let running = self.host.kernel_release()?.to_string();
        let mut reader = PackageHash::new(reader);
        let reject = |this: &Self, reader: &mut PackageHash<_>, reason: String| -> Result<BuildOutcome, EngineError> {
            this.package_read(reader);
            warn!("kernel build refused: {}", Escaped(&reason));
            this.failed(FailureClass::Refused);
            this.record(Event::new(EventKind::Rejected).kernel(release).reason(&reason))?;
            Ok(BuildOutcome::Rejected { reason })
        };
        if let Some(t) = &state.trial {
            return reject(
                self,
                &mut reader,
                format!("a trial of {} is running; add kernel builds once it ends", t.version),
            );
        }
        let id = state.committed.ok_or(EngineError::NoCommittedSlot)?;
        let slot = self.read_slot(id, &running)?.ok_or(EngineError::NoCommittedSlot)?;
        let version = slot.manifest.version.to_string();
        if slot.build(release).is_some() {
            return Ok(BuildOutcome::Ready { version, kernel_release: release.to_string() });
        }
        if let Some(b) = state.is_build_blocked(&slot.manifest.version, release) {
            return reject(
                self,
                &mut reader,
                format!("the build of {version} for kernel {release} failed here before ({})", b.reason),
            );
        }
        let mut stream = match PackageStream::new(&mut reader, &self.host.limits) {
            Ok(s) => s,
            Err(e) => return reject(self, &mut reader, format!("invalid package: {e}")),
        };
        let trust = Trust::Keys { keys: &self.host.keys, threshold: self.host.threshold };
        let opened = match stream.open(trust) {
            Ok(o) => o,
            Err(e) => return reject(self, &mut reader, format!("invalid package: {e}")),
        };
        // The slot may hold fewer builds than its manifest lists (a removed
        // kernel's was dropped): the same manifest again brings one back.
        self.audit.borrow_mut().signers = opened.signers.iter().map(ToString::to_string).collect();
        let same = opened.manifest == slot.manifest;
        match milspec_format::republish::added_builds(&slot.manifest, &opened.manifest) {
            Err(_) if same && opened.manifest.payload_for(release).is_some() => {}
            Err(e) => return reject(self, &mut reader, e.to_string()),
            Ok(added) if !added.iter().any(|p| p.kernel_release == release) => {
                return reject(
                    self,
                    &mut reader,
                    format!("the republished {version} has no build for kernel {release}"),
                );
            }
            Ok(_) => {}
        }
        let mut staging = self.slots.restage(&slot, |_| true, Restaged::NewManifest)?;
        step!("build.staging");
        let mut sink = StageSink { staging: &mut staging, linked: slot.kernels().into_iter().collect() };
        let pkg = match opened.copy_payloads(&mut sink) {
            Ok(pkg) => pkg,
            Err(PackageError::Sink { path, source }) => return Err(EngineError::Stage { path, source }),
            Err(e) => return reject(self, &mut reader, format!("invalid package: {e}")),
        };
        self.package_read(&mut reader);
        let staged = self.slots.seal(staging, &pkg.manifest_bytes, &pkg.signatures, self.slot_trust(&running))?;
        step!("build.after-stage");
        let replaced = self.slots.replace(staged, self.slot_trust(&running));
        *self.slot_views.borrow_mut() = None;
        if let Some(o) = self.observer {
            o.slots_changed(&self.slot_views());
        }
        let slot = replaced?;
        step!("build.after-replace");
        self.record(Event::new(EventKind::BuildAdded).version(&version).slot(id).kernel(release))?;
        info!(message_id = crate::journal::BUILD_ADDED, %version, kernel = %Escaped(release), "added the build of {version} for kernel {} to slot {id}", Escaped(release));
        let kernel_release = release.to_string();
        if release != running || self.live().is_some() {
            return Ok(BuildOutcome::Added { version, kernel_release, loaded: false });
        }
        // The running kernel had nothing to load: load it now, and check it
        // at once against the health before.
        let baseline = Snapshot::read(&self.host.paths);
        let mut watcher = Watcher::arm(&self.host.paths).map_err(EngineError::Watch)?;
        let fault = match self.load_slot(&slot, &Default::default()) {
            Err(e) => Some(format!("load failed: {e}")),
            Ok(()) => watcher.check_now(&baseline).map(|r| reason_text(&r)),
        };
        let Some(reason) = fault else {
            self.record(
                Event::new(EventKind::Recovered)
                    .version(&version)
                    .slot(id)
                    .kernel(release)
                    .reason("loaded the committed version's build that was just added for this kernel"),
            )?;
            return Ok(BuildOutcome::Added { version, kernel_release, loaded: true });
        };
        warn!(%version, "the build for kernel {} failed: {}", Escaped(release), Escaped(&reason));
        // The block first, durable, then the module and the build go.
        state.block_build(crate::state::BlockedBuild {
            version: slot.manifest.version.clone(),
            kernel_release: release.to_string(),
            reason: reason.clone(),
            at: now_rfc3339(),
        });
        self.save(&state)?;
        step!("build.after-block");
        if self.live().is_some() {
            if let Err(e) = self.kernel.unload(&self.host.paths, self.cfg.health.unload_timeout) {
                warn!("the failed build cannot be unloaded: {}", EscapedDisplay(&e));
            }
        }
        self.drop_build_from(&slot, release)?;
        self.failed(FailureClass::Load);
        self.record(Event::new(EventKind::BuildFailed).version(&version).slot(id).kernel(release).reason(&reason))?;
        Ok(BuildOutcome::Failed { version, kernel_release, reason })
    }

    /// A kernel was removed: drops its build from both slots, unless it is
    /// the running kernel. Returns the slots it was dropped from.
    pub fn drop_build(&mut self, release: &str) -> Result<Vec<SlotId>, EngineError> {
        let running = self.host.kernel_release()?.to_string();
        if release == running {
            return Ok(Vec::new());
        }
        let state = self.load_state()?;
        if state.trial.is_some() {
            return Ok(Vec::new());
        }
        let mut dropped = Vec::new();
        for id in SlotId::ALL {
            let Some(slot) = self.read_slot(id, &running)? else { continue };
            if slot.build(release).is_none() || slot.builds.len() < 2 {
                continue;
            }
            self.drop_build_from(&slot, release)?;
            self.record(
                Event::new(EventKind::BuildDropped)
                    .version(slot.manifest.version.to_string())
                    .slot(id)
                    .kernel(release)
                    .reason("the kernel was removed"),
            )?;
            dropped.push(id);
        }
        Ok(dropped)
    }

    /// Rewrites `slot` without its build for `release` (by exchange).
    fn drop_build_from(&self, slot: &Slot, release: &str) -> Result<(), EngineError> {
        let running = self.host.kernel_release()?.to_string();
        let staging = self.slots.restage(slot, |r| r != release, Restaged::SameManifest)?;
        let staged = self.slots.seal(staging, &slot.manifest_bytes, &slot.signatures, self.slot_trust(&running))?;
        step!("build.drop-staged");
        let replaced = self.slots.replace(staged, self.slot_trust(&running));
        *self.slot_views.borrow_mut() = None;
        if let Some(o) = self.observer {
            o.slots_changed(&self.slot_views());
        }
        replaced?;
        Ok(())
    }

    /// The committed slot's view of `release`: its version and whether it
    /// holds a build for it (none committed: `None`).
    pub fn committed_covers(&self, release: &str) -> Result<Option<(String, u64, bool)>, EngineError> {
        let state = self.load_state()?;
        let Some(id) = state.committed else { return Ok(None) };
        let running = self.host.kernel_release()?.to_string();
        let Some(slot) = self.read_slot(id, &running)? else { return Ok(None) };
        let has = slot.build(release).is_some() && state.is_build_blocked(&slot.manifest.version, release).is_none();
        Ok(Some((slot.manifest.version.to_string(), slot.manifest.sequence, has)))
    }

    /// The state record is saved before the history line of the same step,
    /// so a crash between the two leaves a swap with no outcome in the
    /// history. With no trial in the record the outcome is known: write it.
    fn reconcile_history(&self, state: &State, release: &str) -> Result<(), EngineError> {
        let events = self
            .history
            .read(64)
            .map_err(|source| EngineError::History { path: self.history.path().into(), source })?;
        let Some(pos) = events.iter().rposition(|e| e.event == EventKind::Swapped) else {
            return Ok(());
        };
        let swapped = &events[pos];
        let decided = events[pos + 1..].iter().any(|e| {
            matches!(e.event, EventKind::Committed | EventKind::RolledBack | EventKind::RollbackPendingReboot)
        });
        if decided {
            return Ok(());
        }
        let version = swapped.version.clone().unwrap_or_default();
        let note = "recorded at recovery: the daemon stopped before writing this event";
        let committed = state.committed.and_then(|id| self.read_slot(id, release).ok().flatten());
        let ev = match (&committed, &state.last_rollback) {
            (Some(slot), _) if slot.manifest.version.to_string() == version => {
                Event::new(EventKind::Committed).version(&version).slot(slot.id).reason(note)
            }
            (_, Some(rb)) if rb.from == version => Event::new(EventKind::RolledBack)
                .version(&version)
                .from_to(&version, rb.to.clone())
                .reason(format!("{}; {note}", rb.reason)),
            _ => return Ok(()),
        };
        warn!(%version, "history was missing the outcome of the last swap; {note}");
        self.record(ev)
    }
}

/// How long this host has been suspended since boot: CLOCK_BOOTTIME
/// minus CLOCK_MONOTONIC (zero if either cannot be read).
fn slept() -> Duration {
    use nix::time::{clock_gettime, ClockId};
    match (clock_gettime(ClockId::CLOCK_BOOTTIME), clock_gettime(ClockId::CLOCK_MONOTONIC)) {
        (Ok(boot), Ok(mono)) => Duration::from(boot).saturating_sub(Duration::from(mono)),
        _ => Duration::ZERO,
    }
}

fn reason_text(r: &Unhealthy) -> String {
    format!("{} ({})", r, r.kind())
}

/// Asks the init system for a reboot, if there is one to ask.
fn request_reboot() {
    match std::process::Command::new("systemctl").arg("reboot").status() {
        Ok(s) if s.success() => warn!("reboot requested"),
        other => warn!("could not request a reboot: {other:?}"),
    }
}
