//! `milspecctl`: the operator's tool on a host. `verify` and `inspect`
//! work offline; the other commands talk to `milspecd` over the system bus
//! (`com.dell.MilSpec1`, docs/dbus.md), and `status` falls back to an
//! offline view when milspecd is not running.

use std::process::ExitCode;

use milspec_cli::run_main;
use milspec_format::package::{read_package_file, Discard, Trust, VerifiedPackage};
use milspec_format::text::sanitize;
use milspec_format::Limits;

mod bus;
mod offline;
mod progress;
use bus as ctl_bus;
use milspecctl::cli::{Cli, Cmd};

/// What a package says, escaped: `inspect` shows an unverified manifest.
fn describe(pkg: &VerifiedPackage) {
    let m = &pkg.manifest;
    let e = |s: &str| sanitize(s);
    println!("package:   {} {}", e(&m.name), e(&m.version.to_string()));
    println!("sequence:  {}", m.sequence);
    println!("created:   {}", m.created.format(&time::format_description::well_known::Rfc3339).unwrap_or_default());
    let vendors: Vec<_> = m.requires.sys_vendor.iter().map(|v| e(v)).collect();
    println!("vendors:   {}", vendors.join(", "));
    if !m.params.is_empty() {
        let ps: Vec<_> = m.params.iter().map(|(k, v)| format!("{}={}", e(k), e(v))).collect();
        println!("params:    {}", ps.join(" "));
    }
    if let Some(w) = m.probation.as_ref().and_then(|p| p.window_secs) {
        println!("probation: {w}s");
    }
    for p in &m.payloads {
        println!("payload:   {} {} ({} bytes, sha256 {})", e(&p.kernel_release), e(&p.module), p.size, p.sha256);
    }
}

fn main() -> ExitCode {
    let cli: Cli = milspec_cli::parse();
    let json_out = cli.cmd.json();
    run_main("milspecctl", || {
        // With --json a failure is also one outcome object on stdout (the
        // error line still goes to stderr).
        run(cli.cmd).inspect_err(|e| {
            if json_out {
                let code = e.downcast_ref::<milspec_cli::Exit>().map_or(1, |x| x.code);
                let o = milspec_interface::json::Outcome::new(
                    ctl_bus::failure_word(code),
                    sanitize(&milspec_cli::one_line(e)),
                    code,
                );
                let _ = ctl_bus::print_json(&o);
            }
        })
    })
}

fn run(cmd: Cmd) -> anyhow::Result<ExitCode> {
    {
        let limits = Limits::default();
        match cmd {
            Cmd::Status { config, json } => {
                return match ctl_bus::status(json) {
                    Err(e) if ctl_bus::is_not_running(&e) => offline::status(config.as_deref(), json),
                    other => other,
                }
            }
            Cmd::Install { package, timeout, json } => return ctl_bus::install(&package, timeout, json),
            Cmd::Check { timeout, json } => return ctl_bus::check(timeout, json),
            Cmd::Rollback { timeout, json } => return ctl_bus::rollback(timeout, json),
            Cmd::Reconcile { json } => return ctl_bus::reconcile(json),
            Cmd::Unblock { version, json } => return ctl_bus::unblock(&version, json),
            Cmd::Pause { json } => return ctl_bus::set_paused(true, json),
            Cmd::Resume { json } => return ctl_bus::set_paused(false, json),
            Cmd::History { verify: true, json, .. } => return ctl_bus::verify_history(json),
            Cmd::History { limit, json, .. } => return ctl_bus::history(limit, json),
            Cmd::Slots { json } => return ctl_bus::slots(json),
            Cmd::Report { json } => return ctl_bus::report(json),
            Cmd::Kernels { json } => return ctl_bus::kernels(json),
            Cmd::KernelInstalled { release, timeout, json } => {
                return ctl_bus::kernel_installed(&release, timeout, json)
            }
            Cmd::KernelRemoved { release, json } => return ctl_bus::kernel_removed(&release, json),
            Cmd::Watch { count, timeout, json } => return ctl_bus::watch(count, timeout, json),
            Cmd::Verify { config, keys, threshold, package } => {
                let (keys, threshold) = offline::trust(config.as_deref(), keys, threshold)?;
                return offline::verify(&package, &keys, threshold, &limits, describe);
            }
            Cmd::Inspect { package, json } => {
                let pkg = read_package_file(&package, Trust::Unverified, &limits, &mut Discard)?;
                if json {
                    let v = serde_json::json!({
                        "schema": milspec_interface::json::INSPECT,
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
    }
}
