//! A read-only report of slots, trial, live module and health, for
//! `milspecd status` and an offline `milspecctl status` (and the engine's
//! D-Bus properties). Takes no lock; [`read`] changes nothing on disk.

use serde::Serialize;

use milspec_format::Limits;

use crate::config::Config;
use crate::health::Snapshot;
use crate::kernel::{loaded_module, LoadedModule};
use crate::kernel_paths::KernelPaths;
use crate::kernels::{self, KernelBuild, KernelView};
use crate::slot_id::SlotId;
use crate::slots::{SlotStore, SlotTrust};
use crate::state::{
    Blocked, BlockedBuild, Inconclusive, PendingReboot, Rollback, State, StateError, StateFile, TrialPhase,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlotView {
    pub slot: SlotId,
    pub valid: bool,
    pub version: Option<String>,
    pub sequence: Option<u64>,
    pub error: Option<String>,
    /// The kernel releases the slot holds builds for.
    pub kernels: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrialView {
    pub slot: SlotId,
    pub version: String,
    pub phase: TrialPhase,
    pub window_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub committed_slot: Option<SlotId>,
    pub committed_version: Option<String>,
    pub trial: Option<TrialView>,
    pub slots: Vec<SlotView>,
    pub live: Option<LoadedModule>,
    pub health: Snapshot,
    pub max_sequence: u64,
    pub last_rollback: Option<Rollback>,
    pub pending_reboot: Option<PendingReboot>,
    pub blocklist: Vec<Blocked>,
    /// The running and installed kernels against the committed version's builds.
    pub kernel: KernelView,
    /// (version, kernel) builds that failed here.
    pub blocked_builds: Vec<BlockedBuild>,
    /// Versions whose last trials ended in a reboot without a verdict.
    pub inconclusive: Vec<Inconclusive>,
}

/// `milspecd status`: reads the state folder and the host (no lock), the
/// way a process that holds no engine sees them. Creates nothing: a
/// missing state folder or slots folder reads as a fresh host, two empty
/// slots.
pub fn read(cfg: &Config) -> Result<StatusReport, StateError> {
    let state: State = StateFile::new(&cfg.paths.state_dir).load()?;
    let paths = KernelPaths::from_config(&cfg.kernel);
    let release = std::fs::read_to_string(paths.osrelease()).map(|s| s.trim().to_string()).unwrap_or_default();
    let in_force = crate::trust_store::in_force(cfg);
    let limits = Limits::default();
    let store = SlotStore::at(&cfg.paths.state_dir);
    let trust = in_force.as_ref().map(|t| SlotTrust::of(t, &release, &limits)).map_err(ToString::to_string);
    let slots = slot_views(&store, trust);
    let installed = kernels::installed(&cfg.kernel.modules_dir);
    Ok(report(
        state,
        slots,
        loaded_module(&paths, &cfg.kernel.carry_params),
        Snapshot::read(&paths),
        &release,
        &installed,
    ))
}

/// Both slots as the report shows them, each read and verified with
/// `trust` (or the reason there is no trust to check them with). A slot
/// not marked valid is empty, whatever the trust: there is nothing to check.
pub fn slot_views(store: &SlotStore, trust: Result<SlotTrust<'_>, String>) -> Vec<SlotView> {
    let mut slots = Vec::new();
    for id in SlotId::ALL {
        let mut view = SlotView {
            slot: id,
            valid: store.is_valid(id),
            version: None,
            sequence: None,
            error: None,
            kernels: Vec::new(),
        };
        match &trust {
            _ if !view.valid => {}
            Ok(trust) => match store.read(id, *trust) {
                Ok(Some(s)) => {
                    view.version = Some(s.manifest.version.to_string());
                    view.sequence = Some(s.manifest.sequence);
                    view.kernels = s.kernels();
                }
                Ok(None) => {}
                Err(e) => view.error = Some(e.to_string()),
            },
            Err(e) => view.error = Some(e.clone()),
        }
        slots.push(view);
    }
    slots
}

/// The report from the state record, the slot views, the loaded module,
/// a health snapshot, the running kernel's release and the installed
/// kernels (pure).
pub fn report(
    state: State,
    slots: Vec<SlotView>,
    live: Option<LoadedModule>,
    health: Snapshot,
    release: &str,
    installed: &[String],
) -> StatusReport {
    let committed_view = state.committed.and_then(|c| slots.iter().find(|s| s.slot == c && s.version.is_some()));
    let committed_version = committed_view.and_then(|s| s.version.clone());
    // A build that failed here counts as none.
    let committed_kernels = committed_view.map(|s| {
        let v: Option<semver::Version> = s.version.as_deref().and_then(|v| v.parse().ok());
        s.kernels
            .iter()
            .filter(|k| v.as_ref().is_none_or(|v| state.is_build_blocked(v, k).is_none()))
            .cloned()
            .collect::<Vec<_>>()
    });
    let kernel = kernels::view(release, committed_kernels.as_deref(), installed);
    StatusReport {
        committed_slot: state.committed,
        committed_version,
        trial: state.trial.as_ref().map(|t| TrialView {
            slot: t.slot,
            version: t.version.to_string(),
            phase: t.phase,
            window_ms: t.window_ms,
        }),
        slots,
        live,
        health,
        max_sequence: state.max_sequence,
        last_rollback: state.last_rollback,
        pending_reboot: state.pending_reboot,
        blocklist: state.blocklist,
        kernel,
        blocked_builds: state.blocked_builds,
        inconclusive: state.inconclusive,
    }
}

impl StatusReport {
    /// The report as `key: value` lines for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut line = |k: &str, v: String| out.push_str(&format!("{k:<15} {v}\n"));
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        line(
            "committed:",
            match (&self.committed_slot, &self.committed_version) {
                (Some(s), v) => format!("{} (slot {s})", opt(v)),
                _ => "-".into(),
            },
        );
        line(
            "trial:",
            self.trial.as_ref().map_or("-".into(), |t| format!("{} (slot {}, {:?})", t.version, t.slot, t.phase)),
        );
        for s in &self.slots {
            let v = match (&s.version, &s.error) {
                (_, Some(e)) => format!("error: {e}"),
                (Some(v), _) => format!("{v} (sequence {})", s.sequence.unwrap_or_default()),
                (None, None) => "empty".into(),
            };
            line(&format!("slot {}:", s.slot), v);
        }
        line(
            "live module:",
            self.live.as_ref().map_or("not loaded".into(), |m| {
                let ps: Vec<_> = m.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{} {}", opt(&m.version), ps.join(" "))
            }),
        );
        let h = &self.health;
        let n = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
        line("counters:", format!("oops {} warn {} taint {}", n(h.oops_count), n(h.warn_count), h.taint));
        line(
            "module status:",
            h.status.as_ref().map_or("missing".into(), |s| {
                format!(
                    "state {} selftest {}",
                    s.state.as_str(),
                    if s.selftest == crate::health::status::Selftest::Pass { "pass" } else { "fail" }
                )
            }),
        );
        line(
            "last rollback:",
            self.last_rollback
                .as_ref()
                .map_or("-".into(), |r| format!("{} -> {} at {}: {}", r.from, opt(&r.to), r.at, r.reason)),
        );
        if let Some(p) = &self.pending_reboot {
            line("REBOOT NEEDED:", format!("{} is stuck: {}", p.stuck_version, p.reason));
        }
        let k = &self.kernel;
        line(
            "kernel:",
            format!(
                "{} ({})",
                k.release,
                match k.build {
                    KernelBuild::Ready => "the committed version has a build for it",
                    KernelBuild::NoBuild =>
                        "NO BUILD for this kernel: nothing loaded; publish one with milspec-repo add-build",
                    KernelBuild::NoVersion => "nothing committed",
                }
            ),
        );
        let list = |v: &[String]| if v.is_empty() { "-".to_string() } else { v.join(", ") };
        line("kernels:", list(&k.committed_kernels));
        if !k.without_build.is_empty() {
            line("NO BUILD FOR:", list(&k.without_build));
        }
        if self.blocklist.is_empty() {
            line("blocklisted:", "-".into());
        }
        for i in &self.inconclusive {
            line(
                "inconclusive:",
                format!(
                    "{} ({} so far, tried again) since {}: {}",
                    i.version,
                    i.count,
                    milspec_format::text::sanitize(&i.at),
                    milspec_format::text::sanitize(&i.reason)
                ),
            );
        }
        for b in &self.blocklist {
            line(
                "blocklisted:",
                format!(
                    "{} since {}: {}",
                    b.version,
                    milspec_format::text::sanitize(&b.at),
                    milspec_format::text::sanitize(&b.reason)
                ),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::path::Path;

    /// Every path below `dir`, with its kind and size.
    fn listing(dir: &Path) -> Vec<(std::path::PathBuf, bool, u64)> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let m = e.metadata().unwrap();
                if m.is_dir() {
                    todo.push(e.path());
                }
                out.push((e.path(), m.is_dir(), m.len()));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_fresh_host_reads_as_two_empty_slots_and_nothing_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n).display().to_string();
        let text = format!(
            "[trust]\nkeys_dir = \"{}\"\n[paths]\nstate_dir = \"{}\"\n[kernel]\nproc = \"{}\"\nsys = \"{}\"\nmodules_dir = \"{}\"\n",
            p("keys"),
            p("state"),
            p("proc"),
            p("sys"),
            p("modules")
        );
        let cfg = Config::parse(&text, Path::new("t.toml")).unwrap();
        // No state folder at all, then an empty one, then empty slot folders.
        for make in [None, Some("state"), Some("state/slots/a")] {
            if let Some(m) = make {
                std::fs::create_dir_all(dir.path().join(m)).unwrap();
            }
            let before = listing(dir.path());
            let r = read(&cfg).unwrap();
            assert_eq!(listing(dir.path()), before, "status changed the disk ({make:?})");
            assert_eq!(r.slots.len(), 2);
            for s in &r.slots {
                assert_eq!((s.valid, &s.version, &s.error), (false, &None, &None), "{make:?}: {s:?}");
            }
            let empty = r.to_text().lines().filter(|l| l.starts_with("slot ") && l.ends_with(" empty")).count();
            assert_eq!(empty, 2, "{}", r.to_text());
        }
    }
}
