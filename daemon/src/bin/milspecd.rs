//! `milspecd`: the daemon, plus one-shot `install`, `recover` and `status`.

use std::process::ExitCode;

use milspec_cli::run_main;
use milspecd::cli::{Cli, Cmd, ConfigArg};
use milspecd::config::{self, Config};
use milspecd::engine::{Engine, InstallOptions};
use milspecd::history::{Actor, History, Origin};
use milspecd::journal;
use milspecd::kernel::Kernel;
use milspecd::kernel::SysKernel;
use milspecd::mirror::{PollOptions, Poller};
use milspecd::outcome_json;
use milspecd::worker;
use tracing::{info, warn};

fn load_config(arg: &ConfigArg) -> anyhow::Result<Config> {
    let explicit = arg.config.is_some();
    let path = arg.config.clone().unwrap_or_else(|| config::DEFAULT_PATH.into());
    Ok(Config::load(&path, explicit)?)
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
    let cli: Cli = milspec_cli::parse();
    let _failpoints = fail::FailScenario::setup();
    run_main("milspecd", || match cli.cmd {
        Cmd::Config(arg) => {
            let cfg = load_config(&arg)?;
            print!("{}", cfg.to_toml());
            let problems = milspecd::preflight::problems(&cfg);
            for p in &problems {
                eprintln!("milspecd: problem: {}", milspec_format::text::sanitize(&p.to_string()));
            }
            if problems.is_empty() {
                Ok(ExitCode::SUCCESS)
            } else {
                Err(milspec_cli::Exit {
                    code: 1,
                    message: format!(
                        "{} problem(s) above: `milspecd run` would refuse this configuration or run without polling",
                        problems.len()
                    ),
                }
                .into())
            }
        }
        Cmd::Status { config, json } => {
            let cfg = load_config(&config)?;
            let report = milspecd::status::read(&cfg)?;
            if json {
                let paused = worker::paused_file(&cfg.paths.state_dir).exists();
                let out = milspecd::status_json::OfflineStatus::from_report(&report, paused);
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print!("{}", report.to_text());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Policy { config, json } => {
            let cfg = load_config(&config)?;
            let paths = milspecd::kernel_paths::KernelPaths::from_config(&cfg.kernel);
            let report = milspecd::host_policy::PolicyReport::new(milspecd::host_policy::read(&paths));
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Report { config, json } => {
            let cfg = load_config(&config)?;
            let report = milspecd::report::read(&cfg);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Recover(arg) => {
            journal::init_stderr_logging();
            let kernel = SysKernel::new()?;
            let mut engine = Engine::open(load_config(&arg)?, &kernel)?;
            engine.act_for(Actor::cli(), None);
            let r = engine.recover()?;
            println!("recovery: {r}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Install { config, allow_downgrade, json, package } => json_failure(json, || {
            journal::init_stderr_logging();
            let cfg = load_config(&config)?;
            // A FIFO or a device is refused here, at once, before the engine opens.
            let file = milspec_format::open_package(&package, &milspec_format::Limits::DEFAULT)?;
            let kernel = kernel_factory()(&cfg)?;
            let mut engine = Engine::open(cfg, kernel.as_ref())?;
            engine.act_for(Actor::cli(), None);
            let r = engine.recover()?;
            info!("recovery: {r}");
            info!(package = %package.display(), "installing");
            engine.set_origin(Some(Origin::File { file: package.display().to_string() }));
            let outcome = engine.install(file, InstallOptions { allow_downgrade })?;
            if json {
                println!("{}", serde_json::to_string(&outcome_json::of_outcome(&outcome))?);
            } else {
                println!("{}: {outcome}", package.display());
            }
            Ok(ExitCode::from(outcome.exit_code()))
        }),
        Cmd::MetricsDown(arg) => {
            let cfg = load_config(&arg)?;
            if let Some(path) = cfg.metrics.path() {
                milspecd::metrics::down::write_down(path)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Run(arg) => {
            let log_target = journal::init_logging();
            milspecd::daemon::run(load_config(&arg)?, log_target, kernel_factory())
        }
        Cmd::LoadCommitted { config, params } => {
            journal::init_stderr_logging();
            let cfg = load_config(&config)?;
            let kernel = kernel_factory()(&cfg)?;
            milspecd::load_committed::load_committed(&cfg, &params, kernel.as_ref())
        }
        Cmd::PrepareKernel { config, release, json } => json_failure(json, || {
            journal::init_stderr_logging();
            let cfg = load_config(&config)?;
            let poller = cfg.source.as_ref().map(|_| Poller::new(&cfg)).transpose()?;
            let kernel = kernel_factory()(&cfg)?;
            let mut engine = Engine::open(cfg.clone(), kernel.as_ref())?;
            engine.act_for(Actor::cli(), None);
            let r = engine.recover()?;
            info!("recovery: {r}");
            let opts = PollOptions { now: time::OffsetDateTime::now_utc(), force: false };
            let report = milspecd::check::prepare_kernel(poller.as_ref(), &mut engine, &release, opts)?;
            if json {
                println!("{}", serde_json::to_string(&outcome_json::of_prepare(&report))?);
            } else {
                println!("{report}");
            }
            Ok(ExitCode::from(report.exit_code()))
        }),
        Cmd::History { config, verify: _, json } => {
            let cfg = load_config(&config)?;
            let history = History::new(&cfg.paths.state_dir);
            let verdict = history
                .verify()
                .map_err(|e| anyhow::anyhow!("cannot read the history in {}: {e}", cfg.paths.state_dir.display()))?;
            if json {
                let report = milspecd::history::chain::VerifyReport::new(&verdict);
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{verdict}");
            }
            Ok(ExitCode::from(verdict.exit_code()))
        }
        Cmd::Check { config, now, json } => json_failure(json, || {
            journal::init_stderr_logging();
            let cfg = load_config(&config)?;
            let poller = Poller::new(&cfg)?;
            let kernel = kernel_factory()(&cfg)?;
            let mut engine = Engine::open(cfg.clone(), kernel.as_ref())?;
            engine.act_for(Actor::cli(), None);
            let r = engine.recover()?;
            info!("recovery: {r}");
            if now {
                warn!("--now: ignoring the rollout schedule");
            }
            let opts = PollOptions { now: time::OffsetDateTime::now_utc(), force: now };
            let report = milspecd::check::check(&poller, &mut engine, opts, &mut |_| {})?;
            if json {
                println!("{}", serde_json::to_string(&outcome_json::of_check(&report))?);
            } else {
                println!("{report}");
            }
            Ok(ExitCode::from(report.exit_code()))
        }),
    })
}

/// Runs `body`; with `--json`, a failure also prints a `failed` outcome on
/// stdout (the error line still goes to stderr), so a script always reads
/// one object.
fn json_failure(json: bool, body: impl FnOnce() -> anyhow::Result<ExitCode>) -> anyhow::Result<ExitCode> {
    body().inspect_err(|e| {
        if json {
            let code = e.downcast_ref::<milspec_cli::Exit>().map_or(1, |x| x.code);
            if let Ok(text) = serde_json::to_string(&outcome_json::of_error(&milspec_cli::one_line(e), code)) {
                println!("{text}");
            }
        }
    })
}
