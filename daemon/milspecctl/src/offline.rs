//! What `milspecctl` does without the daemon: `verify` with the host's
//! trust, and `status` read from the state folder while milspecd is not
//! running. Both go through the milspecd library, so they read the same
//! configuration (and its defaults) as `milspecd` itself.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use milspec_cli::Exit;
use milspec_format::package::{read_package_file, Discard, Trust, VerifiedPackage};
use milspec_format::text::sanitize;
use milspec_format::{Limits, PackageError, TrustedKeys};
use milspecd::config::{self, Config};

use crate::bus::{EXIT_NOT_RUNNING, EXIT_REJECTED};

/// The milspecd configuration: `path` if given (it must exist), else the
/// default file (a missing one means built-in defaults, as for milspecd).
pub fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    let explicit = path.is_some();
    let path = path.map_or_else(|| PathBuf::from(config::DEFAULT_PATH), Path::to_path_buf);
    Ok(Config::load(&path, explicit)?)
}

/// Which keys and how many signatures `verify` requires: the options
/// given, the rest from the configuration's `[trust]`.
pub fn trust(
    config: Option<&Path>,
    keys: Option<PathBuf>,
    threshold: Option<usize>,
) -> anyhow::Result<(PathBuf, usize)> {
    if let (Some(k), Some(t)) = (&keys, threshold) {
        return Ok((k.clone(), t));
    }
    let cfg = load_config(config).context("reading the host's [trust] (or give both --keys and --threshold)")?;
    Ok((keys.unwrap_or(cfg.trust.keys_dir), threshold.unwrap_or(cfg.trust.threshold)))
}

/// `verify`: exit 0 trusted, [`EXIT_REJECTED`] for a package `install`
/// would refuse, 1 (an error) when the keys or the file cannot be read, or
/// the path is not a regular file (refused before reading, as `install`
/// refuses it).
pub fn verify(
    package: &Path,
    keys: &Path,
    threshold: usize,
    limits: &Limits,
    describe: impl Fn(&VerifiedPackage),
) -> anyhow::Result<ExitCode> {
    let trusted = TrustedKeys::load_dir(keys)?;
    let pkg = match read_package_file(package, Trust::Keys { keys: &trusted, threshold }, limits, &mut Discard) {
        Ok(pkg) => pkg,
        Err(e)
            if matches!(
                e.source,
                PackageError::Io(_) | PackageError::Sink { .. } | PackageError::NotRegularFile(_)
            ) =>
        {
            return Err(e.into())
        }
        Err(e) => {
            let message = milspec_cli::one_line(&anyhow::Error::from(e));
            return Err(Exit { code: EXIT_REJECTED, message }.into());
        }
    };
    println!("{}: OK", sanitize(&package.display().to_string()));
    describe(&pkg);
    for id in &pkg.signers {
        let name = sanitize(trusted.get(id).map(|k| k.name()).unwrap_or("?"));
        println!("signed by: {name} ({id})");
    }
    println!("trust:     {} of {} required trusted signatures", pkg.signers.len(), threshold);
    Ok(ExitCode::SUCCESS)
}

/// `status` with milspecd not running: one line that says so, then the
/// state folder as `milspecd status` reads it (nothing is written or
/// created). Exit [`EXIT_NOT_RUNNING`], also when the view cannot be read.
pub fn status(config: Option<&Path>, json_out: bool) -> anyhow::Result<ExitCode> {
    let view = load_config(config).and_then(|cfg| {
        let report = milspecd::status::read(&cfg)?;
        Ok((cfg.paths.state_dir, report))
    });
    let (state_dir, report) = match view {
        Ok(v) => v,
        Err(e) => {
            return Err(Exit {
                code: EXIT_NOT_RUNNING,
                message: format!(
                    "{}; and its state cannot be read for an offline view: {}",
                    crate::bus::NOT_RUNNING,
                    milspec_cli::one_line(&e)
                ),
            }
            .into())
        }
    };
    let note = format!(
        "{}; offline view of {}, read-only:",
        crate::bus::NOT_RUNNING,
        sanitize(&state_dir.display().to_string())
    );
    if json_out {
        eprintln!("{note}");
        let paused = milspecd::worker::paused_file(&state_dir).exists();
        let view = milspecd::status_json::OfflineStatus::from_report(&report, paused);
        crate::bus::print_json_pretty(&crate::bus::clean_json(serde_json::to_value(&view)?))?;
    } else {
        println!("{note}");
        print!("{}", sanitize_lines(&report.to_text()));
    }
    Ok(ExitCode::from(EXIT_NOT_RUNNING))
}

/// The report's lines, each escaped (the state folder's text is the
/// daemon's, which quoted packages and the kernel).
fn sanitize_lines(text: &str) -> String {
    text.lines().map(|l| sanitize(l) + "\n").collect()
}
