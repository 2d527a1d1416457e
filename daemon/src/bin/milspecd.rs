//! `milspecd`: the daemon, plus one-shot `install`, `recover` and `status`.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use milspecd::cli::{init_logging, run_main, Exit};
use milspecd::config::{self, Config};
use milspecd::engine::{Engine, InstallOptions, Outcome, Recovery};
use milspecd::journal;
use milspecd::kernel::Kernel;
use milspecd::kernel::SysKernel;
use milspecd::metrics::{self, Counters, TextfileWriter};
use milspecd::mirror::{self, PollOptions, PollReport, Poller};
use milspecd::notify::{self, Notifier};
use milspecd::state::StateFile;
use milspecd::worker::{self, DaemonState, Notice, WorkerHandle};
use tracing::{error, info, warn};

#[derive(Parser, Debug)]
#[command(name = "milspecd", version, about = "Keep the dell-milspec kernel module up to date")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Debug)]
struct ConfigArg {
    /// Configuration file [default: /etc/milspecd/milspecd.toml]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the daemon: recover, then keep the module healthy.
    Run(ConfigArg),
    /// One full install cycle in the foreground, without a running daemon.
    /// Exit 0 committed, 2 rejected before any swap, 3 rolled back, 1 error.
    Install {
        #[command(flatten)]
        config: ConfigArg,
        /// Accept a package with a lower sequence than ever committed here.
        #[arg(long)]
        allow_downgrade: bool,
        /// Print the outcome as JSON on stdout.
        #[arg(long)]
        json: bool,
        package: PathBuf,
    },
    /// Bring the state and the live kernel together (what `run` does first), then exit.
    Recover(ConfigArg),
    /// Show slots, committed and trial versions, health and the last rollback.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long)]
        json: bool,
    },
    /// Load the committed slot's module (for modprobe's `install` hook):
    /// verified, hash-checked, with its parameters then PARAM=VALUE ones.
    /// Exit 0 loaded or already loaded, 3 no committed slot, 1 error.
    LoadCommitted {
        #[command(flatten)]
        config: ConfigArg,
        /// Module parameters over the package's defaults (modprobe's options).
        #[arg(last = true, value_name = "PARAM=VALUE")]
        params: Vec<String>,
    },
    /// Check the configuration and print it with every default filled in.
    Config(ConfigArg),
    /// Poll the mirror once in the foreground and say what was done.
    /// Exit 0 up to date, waiting or committed, 2 rejected, 3 rolled back, 1 error.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Ignore the rollout schedule: take the newest version now (operator's force).
        #[arg(long)]
        now: bool,
        /// Print the report as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

fn load_config(arg: &ConfigArg) -> anyhow::Result<Config> {
    let explicit = arg.config.is_some();
    let path = arg.config.clone().unwrap_or_else(|| config::DEFAULT_PATH.into());
    Ok(Config::load(&path, explicit)?)
}

fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Committed { version, slot, swap_ms, watched_ms } => {
            format!("committed {version} in slot {slot} (swap {swap_ms} ms, healthy for {watched_ms} ms)")
        }
        Outcome::AlreadyInstalled { version } => format!("{version} is already installed and committed"),
        Outcome::Rejected { reason } => format!("rejected, nothing changed: {reason}"),
        Outcome::RolledBack { version, to, reason, detect_ms, rollback_ms } => format!(
            "rolled back {version} -> {}: {reason}; fault seen {detect_ms} ms into probation, old module live again {rollback_ms} ms later",
            to.as_deref().unwrap_or("no module")
        ),
        Outcome::RollbackPendingReboot { version, reason } => {
            format!("rollback of {version} pending reboot: {reason}; the committed slot loads at next boot")
        }
    }
}

fn describe_recovery(r: &Recovery) -> String {
    match r {
        Recovery::Clean => "state and kernel agree".into(),
        Recovery::LoadedCommitted { version } => format!("loaded committed {version}"),
        Recovery::Drift { live } => format!("drift: loaded module {live:?} matches no committed slot (left alone)"),
        Recovery::Resumed(o) => format!("resumed trial: {}", describe(o)),
        Recovery::RolledBack(o) => describe(o),
        Recovery::SwapAbandoned { version } => format!("interrupted swap to {version} abandoned; old module kept"),
        Recovery::StillPendingReboot { reason } => format!("a reboot is still needed: {reason}"),
    }
}

/// The real kernel; in a `fake-kernel` test build with
/// `MILSPECD_FAKE_KERNEL=1`, a fake one over the `[kernel]` paths.
fn kernel_factory() -> worker::KernelFactory {
    Box::new(|_cfg: &Config| -> anyhow::Result<Box<dyn Kernel>> {
        #[cfg(feature = "fake-kernel")]
        if std::env::var(milspecd::kernel_fake::ENABLE_VAR).as_deref() == Ok("1") {
            warn!("using the FAKE kernel (test build): no module is really loaded");
            let paths = milspecd::kernel_paths::KernelPaths::from_config(&_cfg.kernel);
            let release =
                std::env::var("MILSPECD_FAKE_RELEASE").unwrap_or_else(|_| "6.12.113+deb12-cloud-amd64".into());
            return Ok(Box::new(milspecd::kernel_fake::FakeKernel::from_env(paths, &release)?));
        }
        Ok(Box::new(SysKernel::new()?))
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _failpoints = fail::FailScenario::setup();
    run_main("milspecd", || match cli.cmd {
        Cmd::Config(arg) => {
            print!("{}", load_config(&arg)?.to_toml());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { config, json } => {
            let report = milspecd::status::read(&load_config(&config)?)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Recover(arg) => {
            init_logging();
            let kernel = SysKernel::new()?;
            let mut engine = Engine::open(load_config(&arg)?, &kernel)?;
            let r = engine.recover()?;
            println!("recovery: {}", describe_recovery(&r));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Install { config, allow_downgrade, json, package } => {
            init_logging();
            let cfg = load_config(&config)?;
            let file = File::open(&package).with_context(|| format!("{}: cannot open package", package.display()))?;
            let kernel = SysKernel::new()?;
            let mut engine = Engine::open(cfg, &kernel)?;
            let r = engine.recover()?;
            info!("recovery: {}", describe_recovery(&r));
            info!(package = %package.display(), "installing");
            let outcome = engine.install(file, InstallOptions { allow_downgrade })?;
            if json {
                println!("{}", serde_json::to_string(&outcome)?);
            } else {
                println!("{}: {}", package.display(), describe(&outcome));
            }
            Ok(ExitCode::from(outcome.exit_code()))
        }
        Cmd::Run(arg) => run_daemon(&arg),
        Cmd::LoadCommitted { config, params } => {
            init_logging();
            load_committed(&load_config(&config)?, &params)
        }
        Cmd::Check { config, now, json } => {
            init_logging();
            let cfg = load_config(&config)?;
            let poller = Poller::new(&cfg)?;
            let kernel = SysKernel::new()?;
            let mut engine = Engine::open(cfg, &kernel)?;
            let r = engine.recover()?;
            info!("recovery: {}", describe_recovery(&r));
            if now {
                warn!("--now: ignoring the rollout schedule");
            }
            let report =
                poller.poll_once(&mut engine, PollOptions { now: time::OffsetDateTime::now_utc(), force: now })?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{}", report.describe());
            }
            let code = match &report {
                PollReport::Installed { outcome, .. } => outcome.exit_code(),
                _ => 0,
            };
            Ok(ExitCode::from(code))
        }
    })
}

/// How long a stop waits for a swap or rollback under way to reach a
/// stable point (trial running, or old module back) before exiting anyway.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// Longest wait between two looks at the engine (status countdown).
const SERVICE_TICK: Duration = Duration::from_secs(1);

/// `milspecd run`: recover, own the bus name, then serve. Under systemd
/// (`Type=notify`) it reports readiness, status and watchdog keep-alives.
fn run_daemon(arg: &ConfigArg) -> anyhow::Result<ExitCode> {
    let log_target = journal::init_logging();
    let cfg = load_config(arg)?;
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
    let started = worker::start(cfg.clone(), kernel_factory());
    startup.stop();
    let started = started?;
    let recovery_text = describe_recovery(&started.recovery);
    journal::log_recovery(&recovery_text, matches!(started.recovery, Recovery::Drift { .. }));
    let handle = started.handle.clone();
    // Without a bus the daemon still keeps the module healthy and
    // polls; only local control is missing, and it says so.
    let conn = match milspecd::dbus::service::serve(handle.clone(), cfg.clone()) {
        Ok(c) => Some(c),
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
            std::thread::Builder::new().name("poll-timer".into()).spawn(move || {
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
        trial: None,
        last_status: String::new(),
        watchdog,
        last_keepalive: Instant::now(),
        stall_limit,
        withheld: false,
        state_dir: cfg.paths.state_dir.clone(),
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
        Some(conn) => milspecd::dbus::service::emit_notices(conn, bus_rx)?,
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
    /// The trial on probation: version, when its window started, length.
    trial: Option<(String, Instant, Duration)>,
    last_status: String,
    watchdog: Option<Duration>,
    last_keepalive: Instant,
    stall_limit: Duration,
    /// Keep-alives are being withheld (the engine looks hung).
    withheld: bool,
    state_dir: PathBuf,
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
                Ok(n) => self.notice(n),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.update_status();
            self.keep_alive();
            if self.stopping.load(Ordering::SeqCst) {
                self.stop();
            }
        }
        // The engine thread is gone: dropping bus_tx ends the D-Bus loop,
        // and `run` exits 1 so systemd restarts the daemon.
        self.write_metrics(false);
    }

    fn notice(&mut self, n: Notice) {
        journal::log_notice(&n);
        match &n {
            Notice::Changed => {}
            Notice::Swapped { to, .. } => {
                self.counters.swaps += 1;
                let window = StateFile::new(&self.state_dir)
                    .load()
                    .ok()
                    .and_then(|s| s.trial)
                    .map_or(self.probation, |t| Duration::from_millis(t.window_ms));
                self.trial = Some((to.clone(), Instant::now(), window));
            }
            Notice::Committed { .. } => {
                self.counters.commits += 1;
                self.trial = None;
            }
            Notice::RolledBack { .. } => {
                self.counters.rollbacks += 1;
                self.trial = None;
            }
        }
        self.write_metrics(true);
        if let Some(tx) = &self.bus_tx {
            // Blocks only if the D-Bus side is NOTICE_DEPTH behind.
            let _ = tx.send(n);
        }
    }

    fn write_metrics(&mut self, up: bool) {
        let snap = metrics::Snapshot::new(self.handle.published(), self.counters, up);
        self.metrics.write(&snap);
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

/// Parses modprobe's options: `name=value`, each checked like a
/// package's parameters.
fn parse_params(params: &[String]) -> Result<BTreeMap<String, String>, Exit> {
    let mut out = BTreeMap::new();
    for p in params {
        let bad = |why: String| Exit { code: 1, message: format!("module parameter `{p}`: {why}; nothing loaded") };
        let (k, v) = p.split_once('=').ok_or_else(|| bad("expected NAME=VALUE".into()))?;
        milspecd::format::manifest::check_param(k, v).map_err(|e| bad(e.to_string()))?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// `milspecd load-committed`: the committed slot's module, through the
/// same checks as the engine's own loads (signatures of the slot's
/// manifest, then the hash of the sealed copy handed to the kernel).
/// Reads the state folder only; takes no lock.
fn load_committed(cfg: &Config, params: &[String]) -> anyhow::Result<ExitCode> {
    use milspecd::kernel::{param_string, KernelError, SealedModule};
    use milspecd::kernel_paths::KernelPaths;
    use milspecd::slots::{SlotStore, SlotTrust};

    let given = parse_params(params)?;
    let state = StateFile::new(&cfg.paths.state_dir).load()?;
    let Some(id) = state.committed else {
        eprintln!(
            "milspecd: no committed slot in {}; nothing loaded (modprobe falls back to the module installed by the system)",
            cfg.paths.state_dir.display()
        );
        return Ok(ExitCode::from(3));
    };
    let paths = KernelPaths::from_config(&cfg.kernel);
    let release = std::fs::read_to_string(paths.osrelease())
        .with_context(|| format!("{}: cannot read the kernel release", paths.osrelease().display()))?;
    let keys = milspecd::format::TrustedKeys::load_dir(&cfg.trust.keys_dir)?;
    let limits = milspecd::format::Limits::default();
    let trust = SlotTrust { keys: &keys, threshold: cfg.trust.threshold, release: release.trim(), limits: &limits };
    let slot = SlotStore::open(&cfg.paths.state_dir)?.read(id, trust)?.ok_or_else(|| Exit {
        code: 1,
        message: format!("the committed slot {id} is not marked valid; nothing loaded: run `milspecd recover` or reinstall a package"),
    })?;
    let image = SealedModule::from_file(&slot.module_path, &slot.payload.sha256, limits.max_payload_size)
        .with_context(|| format!("committed slot {id} ({})", slot.manifest.version))?;
    let kernel = kernel_factory()(cfg)?;
    let params = param_string(&slot.manifest.params, &given);
    match kernel.load(&image, &params) {
        Ok(()) => {
            println!("loaded {} {} from slot {id} ({params})", cfg.kernel.module, slot.manifest.version);
            Ok(ExitCode::SUCCESS)
        }
        Err(KernelError::Load { errno, .. }) if errno == libc::EEXIST => {
            println!("{} is already loaded; nothing done", cfg.kernel.module);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            Err(anyhow::Error::new(e)
                .context(format!("cannot load {} from committed slot {id}", slot.manifest.version)))
        }
    }
}
