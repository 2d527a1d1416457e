//! `milspecctl`: the operator's tool on a host.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use milspec_format::package::{read_package_file, Discard, Trust, VerifiedPackage};
use milspec_format::{Limits, TrustedKeys};
use milspecd::cli::run_main;

#[derive(Parser, Debug)]
#[command(name = "milspecctl", version, about = "Inspect, verify and control dell-milspec module updates")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Verify a package offline against a folder of trusted public keys.
    Verify {
        /// Folder of trusted *.pub keys.
        #[arg(long, value_name = "DIR")]
        keys: PathBuf,
        /// Distinct trusted signatures required.
        #[arg(long, default_value_t = 1)]
        threshold: usize,
        package: PathBuf,
    },
    /// Show what a package holds, checking its structure and hashes but not
    /// who signed it.
    Inspect {
        package: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn describe(pkg: &VerifiedPackage) {
    let m = &pkg.manifest;
    println!("package:   {} {}", m.name, m.version);
    println!("sequence:  {}", m.sequence);
    println!("created:   {}", m.created.format(&time::format_description::well_known::Rfc3339).unwrap_or_default());
    println!("vendors:   {}", m.requires.sys_vendor.join(", "));
    if !m.params.is_empty() {
        let ps: Vec<_> = m.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("params:    {}", ps.join(" "));
    }
    if let Some(w) = m.probation.as_ref().and_then(|p| p.window_secs) {
        println!("probation: {w}s");
    }
    for p in &m.payloads {
        println!("payload:   {} {} ({} bytes, sha256 {})", p.kernel_release, p.module, p.size, p.sha256);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    run_main("milspecctl", || {
        let limits = Limits::default();
        match cli.cmd {
            Cmd::Verify { keys, threshold, package } => {
                let trusted = TrustedKeys::load_dir(&keys)?;
                let pkg =
                    read_package_file(&package, Trust::Keys { keys: &trusted, threshold }, &limits, &mut Discard)?;
                println!("{}: OK", package.display());
                describe(&pkg);
                for id in &pkg.signers {
                    let name = trusted.get(id).map(|k| k.name()).unwrap_or("?");
                    println!("signed by: {name} ({id})");
                }
                println!("trust:     {} of {} required trusted signatures", pkg.signers.len(), threshold);
            }
            Cmd::Inspect { package, json } => {
                let pkg = read_package_file(&package, Trust::Unverified, &limits, &mut Discard)?;
                if json {
                    let v = serde_json::json!({
                        "manifest": pkg.manifest,
                        "signatures": pkg.signatures.key_ids().map(|k| k.to_string()).collect::<Vec<_>>(),
                        "verified": false,
                    });
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    describe(&pkg);
                    for id in pkg.signatures.key_ids() {
                        println!("signature: {id} (not verified; use `milspecctl verify`)");
                    }
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
