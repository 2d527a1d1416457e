//! `milspec-repo`: the publisher's tool. Makes keys, packs kernel modules
//! into signed packages and adds signatures.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use milspec_format::keys::SecretKey;
use milspec_format::manifest::{check_param, Probation, Requires};
use milspec_format::writer::{self, PackOptions};
use milspec_format::Limits;
use milspecd::cli::run_main;

#[derive(Parser, Debug)]
#[command(name = "milspec-repo", version, about = "Publish signed dell-milspec module packages")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Make an ed25519 key pair: NAME.key (mode 0600) and NAME.pub in DIR.
    Keygen {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// Pack one .ko per kernel release into a signed package.
    Pack {
        /// Package version (semver), e.g. 1.2.0.
        #[arg(long)]
        version: semver::Version,
        /// Anti-rollback sequence; defaults to major*10^9 + minor*10^6 + patch*10^3.
        #[arg(long)]
        sequence: Option<u64>,
        /// A kernel module; its kernel release is read from its vermagic.
        #[arg(long = "module", value_name = "KO", required = true)]
        modules: Vec<PathBuf>,
        /// A default module parameter, KEY=VALUE.
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Suggested probation window, e.g. 30s.
        #[arg(long, value_parser = humantime::parse_duration)]
        probation: Option<Duration>,
        /// Accepted DMI sys_vendor (repeatable; default "Dell Inc.").
        #[arg(long = "sys-vendor")]
        sys_vendors: Vec<String>,
        /// A secret key to sign with (repeatable for several signatures).
        #[arg(long = "key", value_name = "KEY", required = true)]
        keys: Vec<PathBuf>,
        #[arg(long, value_name = "FILE.mspkg")]
        out: PathBuf,
    },
    /// Add one more signature to a package, in place.
    Sign {
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        package: PathBuf,
    },
}

fn parse_params(raw: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for p in raw {
        let Some((k, v)) = p.split_once('=') else {
            bail!("--param `{p}` is not KEY=VALUE");
        };
        check_param(k, v)?;
        if out.insert(k.to_string(), v.to_string()).is_some() {
            bail!("--param `{k}` is given twice");
        }
    }
    Ok(out)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    run_main("milspec-repo", || {
        let limits = Limits::default();
        match cli.cmd {
            Cmd::Keygen { out, name } => {
                let key = SecretKey::generate(&name)?;
                let (k, p) = key.write_pair(&out)?;
                println!("wrote {} and {}", k.display(), p.display());
                println!("key id {}", key.public().id());
            }
            Cmd::Pack { version, sequence, modules, params, probation, sys_vendors, keys, out } => {
                let sequence = match sequence {
                    Some(s) => s,
                    None => writer::default_sequence(&version).with_context(|| {
                        format!("version {version} has no default sequence (pre-release, 0.0.0, or a number too large); give --sequence N")
                    })?,
                };
                let keys = keys.iter().map(|k| SecretKey::load(k)).collect::<Result<Vec<_>, _>>()?;
                let opts = PackOptions {
                    version,
                    sequence,
                    created: time::OffsetDateTime::now_utc().replace_nanosecond(0)?,
                    params: parse_params(&params)?,
                    probation: probation.map(|d| Probation { window_secs: Some(d.as_secs().max(1)) }),
                    requires: if sys_vendors.is_empty() {
                        Requires::default()
                    } else {
                        Requires { sys_vendor: sys_vendors }
                    },
                };
                let m = writer::pack(&modules, &opts, &keys, &out, &limits)?;
                println!(
                    "wrote {}: {} {} (sequence {}), {} payload(s), {} signature(s)",
                    out.display(),
                    m.name,
                    m.version,
                    m.sequence,
                    m.payloads.len(),
                    keys.len()
                );
                for p in &m.payloads {
                    println!("  {}  {} bytes  sha256 {}", p.kernel_release, p.size, p.sha256);
                }
            }
            Cmd::Sign { key, package } => {
                let key = SecretKey::load(&key)?;
                let (m, sigs) = writer::add_signature(&package, &key, &limits)?;
                println!(
                    "signed {}: {} {} now has {} signature(s); added key {}",
                    package.display(),
                    m.name,
                    m.version,
                    sigs.signatures.len(),
                    key.public().id()
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
