//! `milspecd`: the daemon, plus one-shot `install`, `recover` and `status`.

use std::fs::File;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use milspecd::cli::{init_logging, run_main};
use milspecd::config::{self, Config};
use milspecd::engine::{Engine, InstallOptions, Outcome, Recovery};
use milspecd::kernel::SysKernel;
use milspecd::mirror::{self, PollOptions, PollReport, Poller};
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
        Cmd::Run(arg) => {
            init_logging();
            let kernel = SysKernel::new()?;
            let cfg = load_config(&arg)?;
            let mut engine = Engine::open(cfg.clone(), &kernel)?;
            let r = engine.recover()?;
            info!("recovery: {}", describe_recovery(&r));
            let Some(source) = cfg.source.clone() else {
                info!("milspecd running; no [source] configured, so no polling");
                loop {
                    std::thread::park();
                }
            };
            let poller = Poller::new(&cfg)?;
            info!(url = %source.url, "milspecd running; polling every {}", humantime::format_duration(source.poll_interval));
            loop {
                match poller.poll_once(&mut engine, PollOptions { now: time::OffsetDateTime::now_utc(), force: false })
                {
                    Ok(report) => info!("poll: {}", report.describe()),
                    Err(e) => error!(
                        "poll failed, nothing installed; next poll as usual: {}",
                        milspecd::cli::one_line(&e.into())
                    ),
                }
                let wait = mirror::next_poll_delay(source.poll_interval, mirror::fetch::random_unit());
                std::thread::sleep(wait);
            }
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
