//! `milspecd run`: the long-running daemon. Recovers, owns the bus name,
//! then fans the engine thread's notices out to the journal (MESSAGE_IDs),
//! the metrics textfile, systemd (status, watchdog) and D-Bus; stops
//! cleanly on SIGTERM.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::engine::Recovery;
use crate::journal::{self, LogTarget};
use crate::metrics::{self, Counters, TextfileWriter};
use crate::mirror;
use crate::notice::Notice;
use crate::notify::{self, Notifier};
use crate::state::StateFile;
use crate::worker::{self, DaemonState, KernelFactory, WorkerHandle};

/// How long a stop waits for a swap or rollback under way to reach a
/// stable point (trial running, or old module back) before exiting anyway.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// Longest wait between two looks at the engine (status countdown).
const SERVICE_TICK: Duration = Duration::from_secs(1);
/// Most notices taken together for one metrics write.
const NOTICE_BATCH: usize = 64;

/// `milspecd run`: recover, own the bus name, then serve. Under systemd
/// (`Type=notify`) it reports readiness, status and watchdog keep-alives.
pub fn run(cfg: Config, log_target: LogTarget, kernel: KernelFactory) -> anyhow::Result<ExitCode> {
    // SIGTERM and SIGINT go to one thread that stops cleanly; block them
    // before any other thread starts so every thread inherits the mask.
    let mut signals = nix::sys::signal::SigSet::empty();
    signals.add(nix::sys::signal::Signal::SIGTERM);
    signals.add(nix::sys::signal::Signal::SIGINT);
    signals.thread_block().context("cannot block SIGTERM for the signal thread")?;
    let notifier = Notifier::from_env();
    let watchdog = notify::watchdog_interval();
    let stall_limit = notify::stall_limit(&cfg);
    info!(?log_target, watchdog = ?watchdog, stall_limit = ?stall_limit, "milspecd starting");

    // Recovery may resume a trial for the rest of its probation window:
    // keep systemd's start timeout and watchdog at bay for that long.
    let resumed_window = StateFile::new(&cfg.paths.state_dir)
        .load()
        .ok()
        .and_then(|s| s.trial)
        .map_or(Duration::ZERO, |t| Duration::from_millis(t.window_ms));
    let startup = StartupKeepAlive::start(notifier.clone(), watchdog, resumed_window + stall_limit);
    notifier.status(if resumed_window.is_zero() { "recovering" } else { "recovering: resuming a trial" });
    let started = worker::start(cfg.clone(), kernel);
    startup.stop();
    let started = started?;
    let recovery_text = started.recovery.to_string();
    journal::log_recovery(&recovery_text, matches!(started.recovery, Recovery::Drift { .. }));
    let handle = started.handle.clone();
    // Without a bus the daemon still keeps the module healthy and
    // polls; only local control is missing, and it says so.
    let conn = match crate::dbus::service::serve(handle.clone(), cfg.clone()) {
        Ok(c) => {
            crate::dbus::service::watch_bus(&c).context("cannot start the bus watch thread")?;
            Some(c)
        }
        Err(e) => {
            error!("cannot serve com.dell.MilSpec1 on the system bus: {e}; running without local control (is dbus running, and is com.dell.MilSpec1.conf installed in /usr/share/dbus-1/system.d/?)");
            None
        }
    };
    match cfg.source.clone() {
        None => info!("milspecd running; no [source] configured, so no polling"),
        Some(source) => {
            info!(url = %source.url, "milspecd running; polling every {}", humantime::format_duration(source.poll_interval));
            let handle = handle.clone();
            let bus = conn.clone();
            std::thread::Builder::new().name("poll-timer".into()).spawn(move || {
                log_network_wait(crate::online::wait_for_network(bus.as_ref(), crate::online::FIRST_POLL_WAIT));
                worker::run_poll_timer(&handle, source.poll_interval, || {
                    mirror::next_poll_delay(source.poll_interval, mirror::fetch::random_unit())
                        .saturating_sub(source.poll_interval)
                })
            })?;
        }
    }

    let stopping = Arc::new(AtomicBool::new(false));
    let (bus_tx, bus_rx) = mpsc::sync_channel::<Notice>(worker::NOTICE_DEPTH);
    let service = Service {
        notifier: notifier.clone(),
        handle: handle.clone(),
        bus: conn.is_some(),
        bus_tx: conn.as_ref().map(|_| bus_tx),
        metrics: TextfileWriter::new(cfg.metrics.path()),
        counters: Counters::default(),
        last_write: Instant::now(),
        written_beat: None,
        heartbeat_every: cfg.metrics.heartbeat,
        trial: None,
        last_status: String::new(),
        watchdog,
        last_keepalive: Instant::now(),
        stall_limit,
        withheld: false,
        probation: cfg.health.probation,
        stopping: stopping.clone(),
        stop_deadline: None,
    };
    let notices = started.notices;
    let ready = notify::status_text(&handle.published(), None, conn.is_some());
    std::thread::Builder::new().name("service".into()).spawn(move || service.run(notices))?;
    std::thread::Builder::new().name("signals".into()).spawn(move || wait_for_stop(&signals, &stopping))?;
    notifier.ready(&ready);
    info!("ready: {ready}");

    match &conn {
        Some(conn) => crate::dbus::service::emit_notices(conn, bus_rx)?,
        None => {
            drop(bus_rx);
            // The service thread ends when the engine thread does.
            loop {
                std::thread::park();
            }
        }
    }
    error!("the engine thread stopped; exiting");
    notifier.stopping("the engine thread stopped");
    Ok(ExitCode::from(1))
}

/// Waits for SIGTERM or SIGINT, then asks the service loop to stop; exits
/// on its own if the loop does not manage within the grace period.
fn wait_for_stop(signals: &nix::sys::signal::SigSet, stopping: &AtomicBool) {
    match signals.wait() {
        Ok(sig) => info!("{sig}: stopping"),
        Err(e) => {
            error!("cannot wait for signals: {e}; SIGTERM will not stop milspecd cleanly");
            return;
        }
    }
    stopping.store(true, Ordering::SeqCst);
    std::thread::sleep(STOP_GRACE + Duration::from_secs(5));
    warn!("stop did not finish within {}s; exiting anyway", STOP_GRACE.as_secs() + 5);
    std::process::exit(0);
}

/// During recovery (before the worker's heartbeat exists): watchdog
/// keep-alives and start-timeout extensions, for at most `limit`.
struct StartupKeepAlive {
    done: Arc<AtomicBool>,
}

impl StartupKeepAlive {
    fn start(notifier: Notifier, watchdog: Option<Duration>, limit: Duration) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        if notifier.enabled() {
            let flag = done.clone();
            let tick = watchdog.unwrap_or(SERVICE_TICK * 5).min(SERVICE_TICK * 5);
            let spawned = std::thread::Builder::new().name("startup".into()).spawn(move || {
                let t0 = Instant::now();
                while !flag.load(Ordering::SeqCst) && t0.elapsed() < limit {
                    if watchdog.is_some() {
                        notifier.watchdog();
                    }
                    notifier.extend_timeout(tick * 3);
                    std::thread::sleep(tick);
                }
            });
            if let Err(e) = spawned {
                warn!("cannot start the startup keep-alive thread: {e}");
            }
        }
        StartupKeepAlive { done }
    }

    fn stop(self) {
        self.done.store(true, Ordering::SeqCst);
    }
}

/// The fan-out of the engine's notices: journal events with their
/// MESSAGE_IDs, metrics, systemd status and watchdog; then on to D-Bus.
struct Service {
    notifier: Notifier,
    handle: WorkerHandle,
    bus: bool,
    bus_tx: Option<SyncSender<Notice>>,
    metrics: TextfileWriter,
    counters: Counters,
    /// When the metrics file was last written, and the engine's progress
    /// mark then (a new mark while busy, e.g. a probation tick, rewrites it).
    last_write: Instant,
    written_beat: Option<u64>,
    /// `[metrics] heartbeat`.
    heartbeat_every: Duration,
    /// The trial on probation: version, when its window started, length.
    trial: Option<(String, Instant, Duration)>,
    last_status: String,
    watchdog: Option<Duration>,
    last_keepalive: Instant,
    stall_limit: Duration,
    /// Keep-alives are being withheld (the engine looks hung).
    withheld: bool,
    probation: Duration,
    stopping: Arc<AtomicBool>,
    stop_deadline: Option<Instant>,
}

impl Service {
    fn run(mut self, notices: Receiver<Notice>) {
        self.write_metrics(true);
        let tick = self.watchdog.map_or(SERVICE_TICK, |w| w.min(SERVICE_TICK));
        loop {
            match notices.recv_timeout(tick) {
                Ok(n) => {
                    // What queued up meanwhile goes with it: one metrics
                    // write for the lot, before any of it reaches the bus.
                    let mut batch = vec![n];
                    while batch.len() < NOTICE_BATCH {
                        let Ok(n) = notices.try_recv() else { break };
                        batch.push(n);
                    }
                    self.notices(batch);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.update_status();
            self.keep_alive();
            self.heartbeat();
            if self.stopping.load(Ordering::SeqCst) {
                self.stop();
            }
        }
        // The engine thread is gone: dropping bus_tx ends the D-Bus loop,
        // and `run` exits 1 so systemd restarts the daemon.
        self.write_metrics(false);
    }

    /// Journal and counters for each notice, then the metrics (unless
    /// only download progress came), then each on to the bus in order.
    fn notices(&mut self, batch: Vec<Notice>) {
        let mut changed = false;
        for n in &batch {
            changed |= self.notice(n);
        }
        if changed {
            self.write_metrics(true);
        }
        if let Some(tx) = &self.bus_tx {
            for n in batch {
                // Blocks only if the D-Bus side is NOTICE_DEPTH behind.
                let _ = tx.send(n);
            }
        }
    }

    /// Logs `n` and counts it; `false`: no metric changes (download progress).
    fn notice(&mut self, n: &Notice) -> bool {
        journal::log_notice(n);
        match n {
            Notice::Changed => {}
            Notice::Download { .. } => return false,
            Notice::Swapped { to, window, .. } => {
                self.counters.swaps += 1;
                let window = if window.is_zero() { self.probation } else { *window };
                self.trial = Some((to.clone(), Instant::now(), window));
            }
            Notice::Committed { .. } => {
                self.counters.commits += 1;
                self.trial = None;
            }
            Notice::CommittedFault { .. } => self.counters.committed_faults += 1,
            Notice::RolledBack { .. } => self.trial = None,
        }
        true
    }

    fn write_metrics(&mut self, up: bool) {
        let snap = metrics::Snapshot::new(self.handle.published(), self.counters, up, metrics::unix_now());
        self.metrics.write(&snap.with_process());
        self.last_write = Instant::now();
        self.written_beat = Some(self.handle.beat_mark());
    }

    /// Rewrites the metrics file (a new heartbeat) when the engine made
    /// progress while busy (a probation tick, a download) or at least
    /// every `[metrics] heartbeat`; never while the engine looks
    /// hung, so a stuck daemon's heartbeat stops as a dead one's does.
    fn heartbeat(&mut self) {
        let busy = self.handle.is_busy();
        if !notify::engine_responsive(busy, self.handle.since_beat(), self.stall_limit) {
            return;
        }
        let progressed = busy && self.written_beat != Some(self.handle.beat_mark());
        if progressed || self.last_write.elapsed() >= self.heartbeat_every {
            self.write_metrics(true);
        }
    }

    fn update_status(&mut self) {
        let p = self.handle.published();
        let left = match (&self.trial, p.state) {
            (Some((v, t0, window)), DaemonState::Trial) if *v == p.trial_version => {
                Some(window.saturating_sub(t0.elapsed()))
            }
            _ => None,
        };
        let text = notify::status_text(&p, left, self.bus);
        if text != self.last_status {
            self.notifier.status(&text);
            self.last_status = text;
        }
    }

    /// `WATCHDOG=1` every half period, only while the engine is responsive.
    fn keep_alive(&mut self) {
        let Some(every) = self.watchdog else {
            return;
        };
        if self.last_keepalive.elapsed() < every {
            return;
        }
        let since = self.handle.since_beat();
        if notify::engine_responsive(self.handle.is_busy(), since, self.stall_limit) {
            if self.withheld {
                info!("the engine thread is making progress again; watchdog keep-alives resume");
                self.withheld = false;
            }
            self.notifier.watchdog();
            self.last_keepalive = Instant::now();
        } else if !self.withheld {
            error!(
                "the engine thread has shown no progress for {}s (limit {}s); withholding watchdog keep-alives so systemd restarts milspecd",
                since.as_secs(),
                self.stall_limit.as_secs()
            );
            self.withheld = true;
        }
    }

    /// On SIGTERM: exit 0 once no swap or rollback is half done (the state
    /// is crash-safe anyway; this only avoids a gap with no module loaded).
    fn stop(&mut self) {
        let deadline = *self.stop_deadline.get_or_insert_with(|| {
            self.notifier.stopping("stopping");
            Instant::now() + STOP_GRACE
        });
        let state = self.handle.published().state;
        let mid_swap = matches!(state, DaemonState::Staged | DaemonState::Swapping | DaemonState::RollingBack);
        if mid_swap && Instant::now() < deadline {
            info!("waiting for the {} step to finish before stopping", state.as_str());
            return;
        }
        self.write_metrics(false);
        info!("stopped (state {}); the next start resumes from the state record", state.as_str());
        std::process::exit(0);
    }
}

fn log_network_wait(w: crate::online::NetworkWait) {
    use crate::online::NetworkWait as W;
    match w {
        W::Online(d) if d >= Duration::from_secs(1) => {
            info!("network-online.target is active (after {}); first poll", milspec_format::text::duration(d))
        }
        W::Online(_) => info!("network-online.target is active; first poll"),
        W::NotSystemd => {}
        W::TimedOut(state) => warn!(
            "network-online.target is still {state} after {}; polling anyway (a failed poll is retried at the next interval)",
            milspec_format::text::duration(crate::online::FIRST_POLL_WAIT)
        ),
        W::Unknown(e) => warn!(
            "cannot ask systemd whether the network is online ({}); polling now",
            journal::untrusted(&e)
        ),
    }
}
