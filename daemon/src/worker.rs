//! The daemon's one engine thread. It owns the [`Engine`] (and so the state
//! lock) and handles [`Action`]s one at a time from a bounded queue: the
//! D-Bus methods and the poll timer send the same actions, so the D-Bus
//! layer stays a thin translation. What the engine does is published as a
//! [`Published`] snapshot plus [`Notice`]s, from which the D-Bus side emits
//! `PropertiesChanged` and its signals.

use std::cell::RefCell;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{error, info, warn};

use crate::check::CheckReport;
use crate::config::Config;
use crate::engine::{
    AfterCommit, BuildOutcome, Engine, EngineError, InstallOptions, Observer, Outcome, Recovery, RejectReason, Unblock,
};
use crate::health::committed_watch::{CommittedWatch, Loaded};
use crate::history::{now_rfc3339, Actor, Event, EventKind, Origin};
use crate::kernel::Kernel;
use crate::metrics::PollFacts;
use crate::mirror::{PollOptions, Poller};
use crate::notice::Notice;
use crate::reason_class::{FailureClass, FailureTally, RollbackClass, RollbackTally};
use crate::state::{State, TrialPhase};
use crate::status::SlotView;
use milspec_interface::ActionResult;

/// Actions waiting for the worker, at most.
pub const QUEUE_DEPTH: usize = 4;
/// Notices waiting for the D-Bus side, at most (the worker blocks beyond).
pub const NOTICE_DEPTH: usize = 256;
/// Download progress goes to the bus at most this often (and at its end).
const DOWNLOAD_NOTICE_EVERY: Duration = Duration::from_millis(250);
/// Marker file in the state folder: automatic polling is paused.
const PAUSED_FILE: &str = "paused";

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("{0}")]
    Busy(String),
    #[error("rejected, nothing changed: {0}")]
    Rejected(String),
    /// Its text already says what was wrong ("invalid package: ...").
    #[error("rejected, nothing changed: {0}")]
    InvalidPackage(String),
    #[error("{0}")]
    NothingToRollBack(String),
    #[error("{0}")]
    Failed(String),
    #[error("the daemon's engine thread has stopped; restart milspecd (systemctl restart milspecd)")]
    Gone,
}

/// What the daemon is doing, as the `State` property says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DaemonState {
    #[default]
    Idle,
    Checking,
    Downloading,
    Staged,
    Swapping,
    Trial,
    RollingBack,
    Error,
}

impl DaemonState {
    pub fn as_str(self) -> &'static str {
        match self {
            DaemonState::Idle => "idle",
            DaemonState::Checking => "checking",
            DaemonState::Downloading => "downloading",
            DaemonState::Staged => "staged",
            DaemonState::Swapping => "swapping",
            DaemonState::Trial => "trial",
            DaemonState::RollingBack => "rolling-back",
            DaemonState::Error => "error",
        }
    }
}

/// The values behind the D-Bus properties (empty string: none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Published {
    pub state: DaemonState,
    pub committed_version: String,
    pub trial_version: String,
    pub active_slot: String,
    pub paused: bool,
    pub last_error: String,
    pub last_check: String,
    pub reboot_required: bool,
    /// Refused installs and failed actions since the daemon started.
    pub failures: u64,
    /// Both slots as last verified (after every action and every slot change).
    pub slots: Vec<SlotView>,
    /// The running trial's probation window (0: no trial).
    pub trial_window_ms: u64,
    /// When the running trial's probation window ends, Unix ms (0: no
    /// trial); for a countdown.
    pub trial_ends_ms: u64,
    /// The running kernel against the committed version: `ready`,
    /// `no-build` or `no-version`.
    pub kernel_build: String,
    /// The kernel releases the committed slot holds builds for.
    pub committed_kernels: Vec<String>,
    /// Installed kernels (and the running one) with no build of the
    /// committed version.
    pub kernels_without_build: Vec<String>,
    /// What the polls found (for the metrics only).
    #[serde(skip)]
    pub poll: PollFacts,
    /// `failures` by reason class.
    #[serde(skip)]
    pub failures_by: FailureTally,
    /// Rollbacks since the daemon started, by reason class.
    #[serde(skip)]
    pub rollbacks_by: RollbackTally,
}

/// The answer to an action that was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionReply {
    pub result: ActionResult,
    pub version: String,
    pub message: String,
}

impl ActionReply {
    fn new(result: ActionResult, version: impl Into<String>, message: impl Into<String>) -> Self {
        ActionReply { result, version: version.into(), message: message.into() }
    }

    /// The answer on the bus: `(result, version, message)`.
    pub fn into_wire(self) -> (String, String, String) {
        (self.result.word().to_string(), self.version, self.message)
    }
}

pub type ReplyTx = async_channel::Sender<Result<ActionReply, ActionError>>;
pub type ReplyRx = async_channel::Receiver<Result<ActionReply, ActionError>>;

/// A one-shot reply channel.
pub fn reply_channel() -> (ReplyTx, ReplyRx) {
    async_channel::bounded(1)
}

/// An action and who asked for it (named in every history record it writes).
#[derive(Debug)]
pub struct Request {
    pub by: Actor,
    pub action: Action,
}

#[derive(Debug)]
pub enum Action {
    /// Install the package read from this file (the caller's descriptor),
    /// which the history names as `origin`.
    Install { package: File, origin: Origin, opts: InstallOptions, reply: ReplyTx },
    /// Poll the mirror once; `force` ignores the rollout schedule.
    Check { force: bool, reply: Option<ReplyTx> },
    /// No trial running: go back to the version in the other slot
    /// ([`Engine::revert`]). Answered once the swap is done.
    Revert { reason: String, reply: ReplyTx },
    /// The module may have been loaded or unloaded behind the daemon's
    /// back (udev): compare the kernel with the committed slot and repair
    /// as at startup ([`Engine::recover`]).
    Reconcile { reply: ReplyTx },
    /// Kernel `release` was installed: make the committed version ready
    /// for it (fetch and add its build) before it boots.
    PrepareKernel { release: String, reply: ReplyTx },
    /// Kernel `release` was removed: drop its build from the slots.
    KernelRemoved { release: String, reply: ReplyTx },
    /// Take `version` off the blocklist ([`Engine::unblock`]); `actor`
    /// names who asked (`uid N`).
    Unblock { version: semver::Version, actor: String, reply: ReplyTx },
}

impl Action {
    /// This action, asked for by `by`.
    pub fn by(self, by: Actor) -> Request {
        Request { by, action: self }
    }
}

struct Shared {
    published: Mutex<Published>,
    /// Every `State` the engine thread passed through, for the D-Bus side
    /// to announce even the brief ones (`staged`) in order; bounded.
    states: Mutex<std::collections::VecDeque<DaemonState>>,
    /// Set by an operator's rollback; the engine's probation asks for it.
    stop: Mutex<Option<String>>,
    busy: AtomicBool,
    paused_file: PathBuf,
    /// When the engine thread last showed progress, in ms of [`mono_ms`].
    beat: AtomicU64,
}

impl Shared {
    /// The engine thread is making progress (the service watchdog reads it).
    fn beat(&self) {
        self.beat.store(mono_ms(), Ordering::SeqCst);
    }
}

/// Milliseconds on a monotonic clock that starts with the process.
fn mono_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Most states kept for the D-Bus side between two notices.
const STATES_KEPT: usize = 64;

impl Shared {
    /// Sets the published state (the caller holds the lock) and queues it
    /// for announcement if it changed.
    fn set_state(&self, p: &mut Published, s: DaemonState) {
        if p.state != s {
            p.state = s;
            let mut q = lock(&self.states);
            if q.len() >= STATES_KEPT {
                q.pop_front();
            }
            q.push_back(s);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The handle the D-Bus side and the poll timer hold.
#[derive(Clone)]
pub struct WorkerHandle {
    tx: SyncSender<Request>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle").field("published", &self.published()).finish_non_exhaustive()
    }
}

impl WorkerHandle {
    pub fn published(&self) -> Published {
        lock(&self.shared.published).clone()
    }

    /// The states passed through since the last call, oldest first.
    pub fn take_states(&self) -> Vec<DaemonState> {
        lock(&self.shared.states).drain(..).collect()
    }

    pub fn is_busy(&self) -> bool {
        self.shared.busy.load(Ordering::SeqCst)
    }

    /// How long since the engine thread last showed progress: took or
    /// finished an action, saved the state, recorded an event, or ran a
    /// probation tick. Only meaningful while [`Self::is_busy`].
    pub fn since_beat(&self) -> Duration {
        Duration::from_millis(mono_ms().saturating_sub(self.shared.beat.load(Ordering::SeqCst)))
    }

    /// The engine thread's last sign of progress, as an opaque mark that
    /// changes with each (a probation tick is one).
    pub fn beat_mark(&self) -> u64 {
        self.shared.beat.load(Ordering::SeqCst)
    }

    /// Queues an action without waiting; `Busy` if an install is running
    /// or the queue is full.
    pub fn send(&self, action: Request) -> Result<(), ActionError> {
        if self.is_busy() {
            let p = self.published();
            return Err(ActionError::Busy(busy_text(&p)));
        }
        self.tx.try_send(action).map_err(|e| match e {
            TrySendError::Full(_) => ActionError::Busy(busy_text(&self.published())),
            TrySendError::Disconnected(_) => ActionError::Gone,
        })
    }

    /// An operator's rollback of the running trial. Returns the version
    /// being rolled back; the `RolledBack` signal follows.
    pub fn request_rollback(&self, reason: String) -> Result<String, ActionError> {
        let p = self.published();
        let in_trial = matches!(p.state, DaemonState::Swapping | DaemonState::Trial) && !p.trial_version.is_empty();
        if !in_trial {
            return Err(ActionError::NothingToRollBack(format!(
                "no trial is running (state {}, committed {}); only a module on probation can be rolled back",
                p.state.as_str(),
                if p.committed_version.is_empty() { "none" } else { &p.committed_version }
            )));
        }
        *lock(&self.shared.stop) = Some(reason);
        Ok(p.trial_version)
    }

    /// Pauses or resumes automatic polling; kept across restarts.
    pub fn set_paused(&self, paused: bool) -> Result<bool, ActionError> {
        let path = &self.shared.paused_file;
        let res = if paused {
            milspec_format::atomic::write_atomic(path, b"paused by the operator\n", 0o600)
        } else {
            match milspec_format::atomic::remove_durable(path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        };
        res.map_err(|e| ActionError::Failed(format!("{}: {e}", path.display())))?;
        let mut p = lock(&self.shared.published);
        let changed = p.paused != paused;
        p.paused = paused;
        Ok(changed)
    }
}

fn busy_text(p: &Published) -> String {
    if p.trial_version.is_empty() {
        format!("the daemon is busy ({}); try again when it is idle", p.state.as_str())
    } else {
        format!(
            "an install of {} is in progress (state {}); wait for its outcome, or call Rollback to end it",
            p.trial_version,
            p.state.as_str()
        )
    }
}

/// Makes the kernel the worker uses (the real one, or a test fake).
pub type KernelFactory = Box<dyn FnOnce(&Config) -> anyhow::Result<Box<dyn Kernel>> + Send>;

/// The running worker: its handle, the notices for the D-Bus side and the
/// result of the recovery it ran first.
pub struct Started {
    pub handle: WorkerHandle,
    pub notices: Receiver<Notice>,
    pub recovery: Recovery,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started").field("recovery", &self.recovery).finish_non_exhaustive()
    }
}

/// Starts the engine thread: opens the engine (taking the state lock),
/// recovers, then serves actions. Returns once recovery is done.
pub fn start(cfg: Config, make_kernel: KernelFactory) -> anyhow::Result<Started> {
    let (tx, rx) = mpsc::sync_channel::<Request>(QUEUE_DEPTH);
    let (ntx, nrx) = mpsc::sync_channel::<Notice>(NOTICE_DEPTH);
    let paused_file = cfg.paths.state_dir.join(PAUSED_FILE);
    let shared = Arc::new(Shared {
        published: Mutex::new(Published { paused: paused_file.exists(), ..Published::default() }),
        states: Mutex::new(std::collections::VecDeque::new()),
        stop: Mutex::new(None),
        busy: AtomicBool::new(true),
        paused_file,
        beat: AtomicU64::new(mono_ms()),
    });
    let (ready_tx, ready_rx) = mpsc::sync_channel::<anyhow::Result<Recovery>>(1);
    let worker_shared = shared.clone();
    std::thread::Builder::new().name("engine".into()).spawn(move || {
        let kernel = match make_kernel(&cfg) {
            Ok(k) => k,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let observer = WorkerObserver {
            shared: worker_shared,
            notices: ntx,
            reply: RefCell::new(None),
            class: std::cell::Cell::new(FailureClass::Other),
        };
        let mut engine = match Engine::open(cfg.clone(), kernel.as_ref()) {
            Ok(e) => e,
            Err(e) => {
                let _ = ready_tx.send(Err(e.into()));
                return;
            }
        };
        engine.set_observer(&observer);
        engine.act_for(Actor::Recover, None);
        let recovery = engine.recover();
        observer.refresh(&engine);
        observer.set_state(DaemonState::Idle);
        observer.shared.busy.store(false, Ordering::SeqCst);
        match recovery {
            Ok(r) => {
                let _ = ready_tx.send(Ok(r));
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e.into()));
                return;
            }
        }
        serve(&cfg, &mut engine, &observer, rx);
    })?;
    let recovery = ready_rx.recv().map_err(|_| anyhow::anyhow!("the engine thread stopped during startup"))??;
    Ok(Started { handle: WorkerHandle { tx, shared }, notices: nrx, recovery })
}

fn serve(cfg: &Config, engine: &mut Engine<'_>, obs: &WorkerObserver, rx: Receiver<Request>) {
    let poller = match cfg.source.as_ref().map(|_| Poller::new(cfg)).transpose() {
        Ok(p) => p,
        Err(e) => {
            error!("cannot set up polling: {}", crate::journal::untrusted(&e.to_string()));
            None
        }
    };
    let interval = cfg.health.after_commit().interval;
    let mut watch = arm_committed_watch(cfg);
    let mut next_look = Instant::now() + interval;
    loop {
        let Request { by, action } = match next_action(&rx, watch.is_some().then_some(next_look)) {
            Next::Action(a) => a,
            Next::Look => {
                look_after_commit(engine, obs, &mut watch);
                next_look = Instant::now() + interval;
                continue;
            }
            Next::Closed => break,
        };
        // What the committed module logged before this action is its own.
        look_after_commit(engine, obs, &mut watch);
        let loaded_before = watch.as_ref().map(CommittedWatch::loaded);
        obs.shared.beat();
        obs.shared.busy.store(true, Ordering::SeqCst);
        *lock(&obs.shared.stop) = None;
        obs.class.set(FailureClass::Other);
        // A failed poll is logged once, by the poll itself (rate-limited).
        let logged = matches!(action, Action::Check { .. });
        let result = match action {
            Action::Install { package, origin, opts, reply } => {
                *obs.reply.borrow_mut() = Some(reply);
                engine.act_for(by, Some(origin));
                info!("install requested over D-Bus");
                engine.install(package, opts).map_err(|e| obs.engine_failed(e)).and_then(|o| {
                    let r = outcome_reply(&o);
                    match o {
                        Outcome::Rejected { reason: reason @ RejectReason::InvalidPackage(_) } => {
                            Err(ActionError::InvalidPackage(reason.to_string()))
                        }
                        Outcome::Rejected { reason } => Err(ActionError::Rejected(reason.to_string())),
                        _ => Ok(r),
                    }
                })
            }
            Action::Check { force, reply } => {
                *obs.reply.borrow_mut() = reply;
                let attempt_unix = unix_ms() as i64 / 1000;
                engine.act_for(by, None);
                obs.set_state(DaemonState::Checking);
                let res = match &poller {
                    None => Err(ActionError::Failed(
                        "no [source] in the configuration: nothing to check; add [source] url = \"https://…/\"".into(),
                    )),
                    Some(p) => {
                        let opts = PollOptions { now: time::OffsetDateTime::now_utc(), force };
                        let mut last = Instant::now();
                        let mut downloading = |d: crate::mirror::DownloadProgress<'_>| {
                            if d.received == 0 {
                                info!(version = %d.version, bytes = d.total, "downloading");
                                obs.set_state(DaemonState::Downloading);
                            } else if d.received < d.total && last.elapsed() < DOWNLOAD_NOTICE_EVERY {
                                return;
                            }
                            last = Instant::now();
                            obs.shared.beat();
                            obs.notify(Notice::Download {
                                version: d.version.to_string(),
                                received: d.received,
                                total: d.total,
                            });
                        };
                        crate::check::check(p, engine, opts, &mut downloading).map_err(|e| {
                            obs.class.set(FailureClass::of_check(&e));
                            ActionError::Failed(one_line(e.into()))
                        })
                    }
                };
                {
                    let mut pb = lock(&obs.shared.published);
                    pb.last_check = now_rfc3339();
                    let facts = &mut pb.poll;
                    facts.attempt_unix = Some(attempt_unix);
                    if let Ok(r) = &res {
                        facts.success_unix = Some(unix_ms() as i64 / 1000);
                        facts.saw(r);
                    }
                    facts.index_expires_unix =
                        poller.as_ref().and_then(Poller::index_expires).map(|t| t.unix_timestamp());
                }
                match &res {
                    Ok(r) => info!("poll: {r}"),
                    Err(e) => crate::journal::FAILED_POLLS.log("failed polls", || {
                        error!(
                            message_id = crate::journal::INSTALL_FAILED,
                            "poll failed, nothing installed; next poll as usual: {}",
                            crate::journal::untrusted(&e.to_string())
                        )
                    }),
                }
                res.map(|r| poll_reply(&r))
            }
            Action::Revert { reason, reply } => {
                *obs.reply.borrow_mut() = Some(reply);
                engine.act_for(by, None);
                info!("rollback to the other slot requested over D-Bus");
                let res = engine.revert(&reason).map_err(|e| match e {
                    EngineError::NothingToRollBack(m) => ActionError::NothingToRollBack(format!(
                        "no trial is running and {m}; nothing changed: install or publish the version wanted"
                    )),
                    e => obs.engine_failed(e),
                });
                match res {
                    // Refused before any swap (the old module is busy): nothing changed.
                    Ok(Outcome::Rejected { reason }) => Err(ActionError::Rejected(reason.to_string())),
                    other => other.map(|o| {
                        obs.rolled_back(RollbackClass::Operator);
                        outcome_reply(&o)
                    }),
                }
            }
            Action::Reconcile { reply } => {
                *obs.reply.borrow_mut() = Some(reply);
                engine.act_for(by, None);
                engine.recover().map(|r| recovery_reply(&r)).map_err(|e| obs.engine_failed(e))
            }
            Action::PrepareKernel { release, reply } => {
                *obs.reply.borrow_mut() = Some(reply);
                engine.act_for(by, None);
                let shown = crate::journal::untrusted(&release);
                info!(kernel = %shown, "kernel {shown} installed: preparing its build");
                let opts = PollOptions { now: time::OffsetDateTime::now_utc(), force: false };
                crate::check::prepare_kernel(poller.as_ref(), engine, &release, opts)
                    .map(|r| prepare_reply(&r))
                    .map_err(|e| {
                        obs.class.set(FailureClass::of_check(&e));
                        ActionError::Failed(one_line(e.into()))
                    })
            }
            Action::Unblock { version, actor, reply } => {
                *obs.reply.borrow_mut() = Some(reply);
                engine.act_for(by, None);
                match engine.unblock(&version, &actor) {
                    Ok(u @ Unblock::Unblocked(_)) => {
                        Ok(ActionReply::new(ActionResult::Unblocked, version.to_string(), u.to_string()))
                    }
                    Ok(u @ Unblock::NotBlocked { .. }) => Err(ActionError::Rejected(u.to_string())),
                    Err(e) => Err(obs.engine_failed(e)),
                }
            }
            Action::KernelRemoved { release, reply } => {
                *obs.reply.borrow_mut() = Some(reply);
                engine.act_for(by, None);
                engine
                    .drop_build(&release)
                    .map(|slots| {
                        let msg = if slots.is_empty() {
                            format!("no slot held a build for kernel {release} that is no longer needed")
                        } else {
                            let s: Vec<String> = slots.iter().map(ToString::to_string).collect();
                            format!("dropped the build for kernel {release} from slot {}", s.join(", "))
                        };
                        ActionReply::new(ActionResult::Clean, "", msg)
                    })
                    .map_err(|e| obs.engine_failed(e))
            }
        };
        obs.refresh(engine);
        obs.shared.beat();
        let final_state = match &result {
            Err(ActionError::Failed(e)) => {
                if !logged {
                    error!(
                        message_id = crate::journal::INSTALL_FAILED,
                        "action failed: {}",
                        crate::journal::untrusted(e)
                    );
                }
                let mut p = lock(&obs.shared.published);
                // Shown as LastError to anyone on the bus: escaped.
                p.last_error = milspec_format::text::sanitize(e);
                p.failures += 1;
                p.failures_by.add(obs.class.replace(FailureClass::Other));
                drop(p);
                DaemonState::Error
            }
            Err(e) => {
                lock(&obs.shared.published).last_error = e.to_string();
                DaemonState::Idle
            }
            Ok(_) => DaemonState::Idle,
        };
        // Not busy before `idle` is announced: a client that saw `idle` may
        // send the next action at once.
        obs.shared.busy.store(false, Ordering::SeqCst);
        obs.set_state(final_state);
        if let Some(reply) = obs.reply.borrow_mut().take() {
            let _ = reply.try_send(result);
        }
        // An action that swapped the module judged what it logged (a
        // trial): the committed module's watch starts anew after it.
        if let Some(before) = loaded_before {
            after_action(&mut watch, before);
        }
    }
}

/// What the engine thread does next.
enum Next {
    Action(Request),
    /// Time to look at the committed module.
    Look,
    /// Every sender is gone.
    Closed,
}

fn next_action(rx: &Receiver<Request>, look_at: Option<Instant>) -> Next {
    let Some(at) = look_at else {
        return rx.recv().map_or(Next::Closed, Next::Action);
    };
    match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
        Ok(a) => Next::Action(a),
        Err(mpsc::RecvTimeoutError::Timeout) => Next::Look,
        Err(mpsc::RecvTimeoutError::Disconnected) => Next::Closed,
    }
}

/// The committed module's watch, unless `[health] after_commit_interval`
/// is `0s` or the kernel log cannot be opened (logged).
fn arm_committed_watch(cfg: &Config) -> Option<CommittedWatch> {
    if !cfg.health.after_commit().watches() {
        info!("the committed module is not watched after its probation ([health] after_commit_interval = \"0s\")");
        return None;
    }
    let paths = crate::kernel_paths::KernelPaths::from_config(&cfg.kernel);
    CommittedWatch::arm(&paths)
        .map_err(|e| {
            error!(
                "cannot open {} to watch the committed module: {e}; it is watched only on probation",
                paths.kmsg.display()
            )
        })
        .ok()
}

fn after_action(watch: &mut Option<CommittedWatch>, before: Loaded) {
    if let Some(w) = watch {
        if let Err(e) = w.after_action(before) {
            error!(
                "cannot open the kernel log again to watch the committed module: {e}; it is watched only on probation"
            );
            *watch = None;
        }
    }
}

fn rearm(watch: &mut Option<CommittedWatch>) {
    if let Some(w) = watch {
        if let Err(e) = w.rearm() {
            error!(
                "cannot open the kernel log again to watch the committed module: {e}; it is watched only on probation"
            );
            *watch = None;
        }
    }
}

/// Looks at the committed module; a fault is the engine's to record (and,
/// if so configured, to roll back), with the daemon busy meanwhile.
fn look_after_commit(engine: &mut Engine<'_>, obs: &WorkerObserver, watch: &mut Option<CommittedWatch>) {
    let Some(fault) = watch.as_mut().and_then(CommittedWatch::look) else {
        return;
    };
    obs.shared.busy.store(true, Ordering::SeqCst);
    obs.shared.beat();
    *lock(&obs.shared.stop) = None;
    engine.act_for(Actor::Watch, None);
    let rolled_back = match engine.committed_fault(&fault) {
        Ok(AfterCommit::RolledBack { version, outcome }) => {
            obs.rolled_back(RollbackClass::AfterCommitFault);
            info!(%version, "after its fault: {}", outcome_reply(&outcome).message);
            true
        }
        Ok(AfterCommit::NotCommitted | AfterCommit::Recorded { .. }) => false,
        Err(e) => {
            error!("cannot record a fault of the committed module: {}", crate::journal::untrusted(&one_line(e.into())));
            false
        }
    };
    obs.refresh(engine);
    obs.shared.beat();
    obs.shared.busy.store(false, Ordering::SeqCst);
    obs.set_state(DaemonState::Idle);
    if rolled_back {
        rearm(watch);
    }
}

fn one_line(e: anyhow::Error) -> String {
    milspec_cli::one_line(&e)
}

fn outcome_reply(o: &Outcome) -> ActionReply {
    match o {
        Outcome::Committed { version, .. } => {
            ActionReply::new(ActionResult::Committed, version, format!("committed {version}"))
        }
        Outcome::AlreadyInstalled { version } => ActionReply::new(
            ActionResult::AlreadyInstalled,
            version,
            format!("{version} is already installed and committed"),
        ),
        Outcome::Rejected { reason } => ActionReply::new(ActionResult::Rejected, "", reason.to_string()),
        Outcome::RolledBack { version, reason, .. } => {
            ActionReply::new(ActionResult::RolledBack, version, reason.clone())
        }
        Outcome::RollbackPendingReboot { version, reason } => {
            ActionReply::new(ActionResult::RolledBack, version, format!("rollback pending reboot: {reason}"))
        }
    }
}

fn recovery_reply(r: &Recovery) -> ActionReply {
    match r {
        Recovery::Clean => ActionReply::new(ActionResult::Clean, "", "the loaded module matches the committed slot"),
        Recovery::LoadedCommitted { version } => ActionReply::new(
            ActionResult::LoadedCommitted,
            version,
            format!("no module was loaded (or an unmanaged one was replaced); loaded the committed {version}"),
        ),
        Recovery::Drift { live } => ActionReply::new(
            ActionResult::Drift,
            live.clone().unwrap_or_default(),
            format!(
                "the loaded module ({}) matches no committed slot; left as it is ([kernel] adopt_unmanaged = false)",
                live.as_deref().unwrap_or("unknown version")
            ),
        ),
        Recovery::StillPendingReboot { reason } => {
            ActionReply::new(ActionResult::PendingReboot, "", format!("a rollback is pending a reboot: {reason}"))
        }
        Recovery::Resumed(o) | Recovery::RolledBack(o) => outcome_reply(o),
        Recovery::NoBuild(nb) => ActionReply::new(ActionResult::NoBuild, nb.version.clone(), nb.to_string()),
        Recovery::SwapAbandoned { version } => {
            ActionReply::new(ActionResult::Clean, version, format!("an interrupted swap to {version} was abandoned"))
        }
    }
}

fn prepare_reply(r: &crate::check::PrepareReport) -> ActionReply {
    use crate::check::PrepareReport;
    let msg = r.to_string();
    match r {
        PrepareReport::NothingCommitted { .. } => ActionReply::new(ActionResult::Clean, "", msg),
        PrepareReport::NoBuild { version, .. } => ActionReply::new(ActionResult::NoBuild, version.clone(), msg),
        PrepareReport::Build(o) => match o {
            BuildOutcome::Ready { version, .. } => ActionReply::new(ActionResult::KernelReady, version.clone(), msg),
            BuildOutcome::Added { version, .. } => ActionReply::new(ActionResult::BuildAdded, version.clone(), msg),
            BuildOutcome::Rejected { .. } => ActionReply::new(ActionResult::Rejected, "", msg),
            BuildOutcome::Failed { version, .. } => ActionReply::new(ActionResult::NoBuild, version.clone(), msg),
        },
    }
}

fn poll_reply(r: &CheckReport) -> ActionReply {
    match r {
        CheckReport::UpToDate { .. } => ActionReply::new(ActionResult::UpToDate, "", r.to_string()),
        CheckReport::Waiting { version, .. } => ActionReply::new(ActionResult::Waiting, version.clone(), r.to_string()),
        CheckReport::RevokedNoReplacement { current, .. } => {
            ActionReply::new(ActionResult::RevokedNoReplacement, current.clone(), r.to_string())
        }
        CheckReport::BuildAdded { outcome, .. } => {
            let msg = r.to_string();
            match outcome {
                BuildOutcome::Ready { version, .. } => {
                    ActionReply::new(ActionResult::KernelReady, version.clone(), msg)
                }
                BuildOutcome::Added { version, .. } => ActionReply::new(ActionResult::BuildAdded, version.clone(), msg),
                BuildOutcome::Rejected { .. } => ActionReply::new(ActionResult::Rejected, "", msg),
                BuildOutcome::Failed { version, .. } => ActionReply::new(ActionResult::NoBuild, version.clone(), msg),
            }
        }
        CheckReport::NoBuild { .. } => ActionReply::new(ActionResult::NoBuild, "", r.to_string()),
        CheckReport::Installed { version, outcome, .. } => {
            let mut a = outcome_reply(outcome);
            a.version = version.clone();
            a.message = r.to_string();
            a
        }
    }
}

/// Sees the engine's saves and events from inside the engine thread.
struct WorkerObserver {
    shared: Arc<Shared>,
    notices: SyncSender<Notice>,
    /// The caller waiting on the running action; answered early, as soon
    /// as the package is staged, so a long probation does not hold a call.
    reply: RefCell<Option<ReplyTx>>,
    /// The class of the running action's failure, if it fails.
    class: std::cell::Cell<FailureClass>,
}

impl WorkerObserver {
    /// An engine error ends the action: its class is kept for the metric.
    fn engine_failed(&self, e: EngineError) -> ActionError {
        self.class.set(FailureClass::of_engine(&e));
        ActionError::Failed(one_line(e.into()))
    }

    fn rolled_back(&self, class: RollbackClass) {
        lock(&self.shared.published).rollbacks_by.add(class);
    }

    fn notify(&self, n: Notice) {
        // Blocks only if the D-Bus side is NOTICE_DEPTH behind.
        let _ = self.notices.send(n);
    }

    fn set_state(&self, s: DaemonState) {
        let changed = {
            let mut p = lock(&self.shared.published);
            let changed = p.state != s;
            self.shared.set_state(&mut p, s);
            changed
        };
        if changed {
            self.notify(Notice::Changed);
        }
    }

    /// Republishes committed version, slot and reboot flag from what the
    /// engine knows (no second read of the state folder or the slots).
    fn refresh(&self, engine: &Engine<'_>) {
        match engine.status() {
            Ok(r) => {
                let mut p = lock(&self.shared.published);
                p.committed_version = r.committed_version.unwrap_or_default();
                p.active_slot = r.committed_slot.map(|s| s.to_string()).unwrap_or_default();
                p.trial_version = r.trial.map(|t| t.version).unwrap_or_default();
                if p.trial_version.is_empty() {
                    p.trial_ends_ms = 0;
                }
                p.reboot_required = r.pending_reboot.is_some();
                p.slots = r.slots;
                p.kernel_build = r.kernel.build.as_str().to_string();
                p.committed_kernels = r.kernel.committed_kernels;
                p.kernels_without_build = r.kernel.without_build;
            }
            Err(e) => warn!("cannot read the state for the D-Bus properties: {e}"),
        }
        self.notify(Notice::Changed);
    }
}

impl Observer for WorkerObserver {
    fn slots_changed(&self, slots: &[SlotView]) {
        self.shared.beat();
        lock(&self.shared.published).slots = slots.to_vec();
    }

    fn saved(&self, state: &State) {
        self.shared.beat();
        {
            let mut p = lock(&self.shared.published);
            let version = state.trial.as_ref().map(|t| t.version.to_string()).unwrap_or_default();
            p.trial_ends_ms = match &state.trial {
                // A new trial (or its window starts now): its end, from now.
                Some(t) if version != p.trial_version || p.trial_ends_ms == 0 => unix_ms() + t.window_ms,
                Some(_) => p.trial_ends_ms,
                None => 0,
            };
            p.trial_version = version;
            p.trial_window_ms = state.trial.as_ref().map_or(0, |t| t.window_ms);
            p.reboot_required = state.pending_reboot.is_some();
            if let Some(t) = &state.trial {
                let s = match t.phase {
                    TrialPhase::Swapping => DaemonState::Swapping,
                    TrialPhase::Watching => DaemonState::Trial,
                    TrialPhase::RollingBack => DaemonState::RollingBack,
                };
                self.shared.set_state(&mut p, s);
            }
        }
        self.notify(Notice::Changed);
    }

    fn staged(&self, version: &str, _slot: crate::slot_id::SlotId) {
        self.shared.beat();
        info!(message_id = crate::journal::INSTALL_STARTED, %version, "install of {version} started: staged, swapping now");
        self.shared.set_state(&mut lock(&self.shared.published), DaemonState::Staged);
        self.notify(Notice::Changed);
    }

    fn recorded(&self, ev: &Event) {
        self.shared.beat();
        let version = ev.version.clone().unwrap_or_default();
        match ev.event {
            EventKind::Staged => {
                // Recorded once the old module is unloaded and the slot
                // holds the package: the install can no longer be refused.
                if let Some(reply) = self.reply.borrow_mut().take() {
                    let msg = format!(
                        "{version} staged in slot {}; swapping and watching it now",
                        ev.slot.as_deref().unwrap_or("?")
                    );
                    let _ = reply.try_send(Ok(ActionReply::new(ActionResult::Started, version.clone(), msg)));
                }
                self.notify(Notice::Changed);
            }
            EventKind::Swapped => {
                let (from, to) = (ev.from.clone().unwrap_or_default(), ev.to.clone().unwrap_or_default());
                // A rollback to the other slot is answered once swapped.
                if let Some(reply) = self.reply.borrow_mut().take() {
                    let msg = format!("swapped {from} -> {to}; watching {to} on probation now");
                    let _ = reply.try_send(Ok(ActionReply::new(ActionResult::Started, to.clone(), msg)));
                }
                let window = Duration::from_millis(lock(&self.shared.published).trial_window_ms);
                self.notify(Notice::Swapped { from, to, window })
            }
            EventKind::Committed => {
                {
                    let mut p = lock(&self.shared.published);
                    p.committed_version = version.clone();
                    p.trial_version.clear();
                    if let Some(s) = &ev.slot {
                        p.active_slot = s.clone();
                    }
                }
                self.notify(Notice::Changed);
                self.notify(Notice::Committed { version });
            }
            EventKind::RolledBack => self.notify(Notice::RolledBack {
                from: ev.from.clone().unwrap_or(version),
                to: ev.to.clone().unwrap_or_default(),
                reason: ev.reason.clone().unwrap_or_default(),
            }),
            EventKind::RollbackPendingReboot => self.notify(Notice::RolledBack {
                from: version,
                to: String::new(),
                reason: format!("rollback pending reboot: {}", ev.reason.clone().unwrap_or_default()),
            }),
            EventKind::Rejected => {
                let reason = ev.reason.as_deref().unwrap_or_default();
                warn!(
                    message_id = crate::journal::INSTALL_FAILED,
                    version = %crate::journal::untrusted(&version),
                    "install refused: {}",
                    crate::journal::untrusted(reason)
                );
                lock(&self.shared.published).failures += 1;
            }
            EventKind::Fault => {
                self.notify(Notice::CommittedFault { version, reason: ev.reason.clone().unwrap_or_default() })
            }
            EventKind::Drift => {
                warn!(message_id = crate::journal::DRIFT, "drift: the loaded module matches no committed slot");
            }
            EventKind::Recovered | EventKind::BuildAdded | EventKind::BuildDropped => self.notify(Notice::Changed),
            EventKind::Unblocked => {
                warn!(
                    version = %crate::journal::untrusted(&version),
                    "{} taken off the blocklist: {}",
                    crate::journal::untrusted(&version),
                    crate::journal::untrusted(ev.reason.as_deref().unwrap_or_default())
                );
                self.notify(Notice::Changed);
            }
            EventKind::BuildFailed => {
                warn!(
                    message_id = crate::journal::NO_BUILD,
                    version = %crate::journal::untrusted(&version),
                    kernel = %crate::journal::untrusted(ev.kernel.as_deref().unwrap_or_default()),
                    "the build for kernel {} failed and is blocked: {}",
                    crate::journal::untrusted(ev.kernel.as_deref().unwrap_or_default()),
                    crate::journal::untrusted(ev.reason.as_deref().unwrap_or_default())
                );
                lock(&self.shared.published).failures += 1;
            }
        }
    }

    fn stop_trial(&self) -> Option<String> {
        self.shared.beat();
        lock(&self.shared.stop).take()
    }

    fn failed(&self, class: FailureClass) {
        lock(&self.shared.published).failures_by.add(class);
    }

    fn rolling_back(&self, class: RollbackClass) {
        self.rolled_back(class);
    }
}

/// Runs the poll timer: a `Check` every `interval` (plus `jitter`) unless
/// paused or busy. Returns only if the worker is gone.
pub fn run_poll_timer(handle: &WorkerHandle, interval: Duration, jitter: impl Fn() -> Duration) {
    loop {
        if handle.published().paused {
            info!("polling is paused (SetPaused); skipping this poll");
        } else {
            match handle.send(Action::Check { force: false, reply: None }.by(Actor::Timer)) {
                Ok(()) => {}
                Err(ActionError::Gone) => return,
                Err(e) => info!("skipping this poll: {e}"),
            }
        }
        std::thread::sleep(interval + jitter());
    }
}

/// Where the paused marker lives, for documentation and tests.
pub fn paused_file(state_dir: &Path) -> PathBuf {
    state_dir.join(PAUSED_FILE)
}

/// Now, in Unix milliseconds (the wall clock a client counts down by).
fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
