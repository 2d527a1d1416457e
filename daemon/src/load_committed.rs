//! `milspecd load-committed`, modprobe's `install` hook: loads the
//! committed slot's build for the running kernel so that a plain
//! `modprobe dell_milspec` or a boot-time autoload never loads a stale copy.
//!
//! Exit codes (the start of the table in docs/operations.md):
//! 0 loaded (or already loaded), 1 error (nothing loaded), 3 nothing
//! committed yet, 4 the committed version has no build for the running
//! kernel. On 3 and 4 the modprobe line falls back to the module the
//! system installed for this kernel (DKMS), if there is one.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;

use crate::config::Config;
use crate::kernel::{Kernel, KernelError, ReadyModule};
use crate::kernel_paths::KernelPaths;
use crate::slots::{SlotStore, SlotTrust};
use crate::state::StateFile;
use milspec_cli::Exit;

/// Nothing is committed yet: modprobe falls back to the system's module.
pub const EXIT_NOTHING_COMMITTED: u8 = 3;
/// The committed version has no build for the running kernel: modprobe
/// falls back to the system's module.
pub const EXIT_NO_BUILD: u8 = 4;

/// Parses modprobe's options: `name=value`, each checked like a
/// package's parameters.
fn parse_params(params: &[String]) -> Result<BTreeMap<String, String>, Exit> {
    let mut out = BTreeMap::new();
    for p in params {
        let bad = |why: String| Exit { code: 1, message: format!("module parameter `{p}`: {why}; nothing loaded") };
        let (k, v) = crate::format::manifest::parse_param_arg(p).map_err(|e| bad(e.to_string()))?;
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// `milspecd load-committed`: the committed slot's module, through the
/// same checks as the engine's own loads (signatures of the slot's
/// manifest, then the hash of the sealed copy handed to the kernel).
/// Reads the state folder only; takes no lock.
pub fn load_committed(cfg: &Config, params: &[String], kernel: &dyn Kernel) -> anyhow::Result<ExitCode> {
    let given = parse_params(params)?;
    let state = StateFile::new(&cfg.paths.state_dir).load()?;
    let Some(id) = state.committed else {
        eprintln!(
            "milspecd: no committed slot in {}; nothing loaded (modprobe falls back to the module installed by the system)",
            cfg.paths.state_dir.display()
        );
        return Ok(ExitCode::from(EXIT_NOTHING_COMMITTED));
    };
    let paths = KernelPaths::from_config(&cfg.kernel);
    let release = std::fs::read_to_string(paths.osrelease())
        .with_context(|| format!("{}: cannot read the kernel release", paths.osrelease().display()))?;
    let in_force = crate::trust_store::in_force(cfg)?;
    let limits = crate::format::Limits::default();
    let trust = SlotTrust::of(&in_force, release.trim(), &limits);
    let slot = SlotStore::open(&cfg.paths.state_dir)?.read(id, trust)?.ok_or_else(|| Exit {
        code: 1,
        message: format!("the committed slot {id} is not marked valid; nothing loaded: run `milspecd recover` or reinstall a package"),
    })?;
    let blocked = state.is_build_blocked(&slot.manifest.version, release.trim()).is_some();
    if slot.current().is_err() || blocked {
        let nb = slot.no_build(release.trim());
        eprintln!(
            "milspecd: {}{}; modprobe falls back to the module installed by the system for this kernel, if any",
            nb,
            if blocked { " (its build failed here and is blocked)" } else { "" }
        );
        return Ok(ExitCode::from(EXIT_NO_BUILD));
    }
    let ready = ReadyModule::from_slot(&slot, &given, limits.max_payload_size)
        .with_context(|| format!("committed slot {id} ({})", slot.manifest.version))?;
    let params = &ready.params;
    match ready.load(kernel) {
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
