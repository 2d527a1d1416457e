//! The offline status report as `milspec.status/1` (docs/json.md): the
//! fields `milspecctl status --json` prints from the daemon, then the
//! details only the state folder holds (the trial, the live module, the
//! blocklist, the kernels, ...), which the schema lists as optional.

use serde::Serialize;

use milspec_interface::json;

use crate::kernel::LoadedModule;
use crate::kernels::KernelView;
use crate::state::{Blocked, BlockedBuild, Inconclusive, PendingReboot, Rollback};
use crate::status::{StatusReport, TrialView};

/// `milspecd status --json`.
#[derive(Debug, Clone, Serialize)]
pub struct OfflineStatus {
    #[serde(flatten)]
    pub status: json::Status,
    pub trial: Option<TrialView>,
    pub live: Option<LoadedModule>,
    pub max_sequence: u64,
    pub last_rollback: Option<Rollback>,
    pub pending_reboot: Option<PendingReboot>,
    pub blocklist: Vec<Blocked>,
    pub kernel: KernelView,
    pub blocked_builds: Vec<BlockedBuild>,
    pub inconclusive: Vec<Inconclusive>,
}

impl OfflineStatus {
    /// `r` as the daemon would report it (it is not running); `paused`:
    /// the state folder holds the paused marker.
    pub fn from_report(r: &StatusReport, paused: bool) -> Self {
        let committed = r.committed_slot.map(|s| s.to_string());
        let mut status = json::Status::not_running();
        status.committed_version = r.committed_version.clone();
        status.committed_slot = committed.clone();
        status.trial_version = r.trial.as_ref().map(|t| t.version.clone());
        status.paused = paused;
        status.reboot_required = r.pending_reboot.is_some();
        status.kernel_build = Some(r.kernel.build.as_str().to_string());
        status.health = json::Health::from_map(&crate::dbus::service::snapshot_map(r.health.clone()));
        status.slots = r
            .slots
            .iter()
            .map(|s| json::Slot {
                schema: json::SLOT.into(),
                slot: s.slot.to_string(),
                valid: s.valid,
                committed: committed.as_deref() == Some(&s.slot.to_string()),
                version: s.version.clone(),
                sequence: s.sequence,
                kernels: s.kernels.clone(),
                error: s.error.clone(),
            })
            .collect();
        OfflineStatus {
            status,
            trial: r.trial.clone(),
            live: r.live.clone(),
            max_sequence: r.max_sequence,
            last_rollback: r.last_rollback.clone(),
            pending_reboot: r.pending_reboot.clone(),
            blocklist: r.blocklist.clone(),
            kernel: r.kernel.clone(),
            blocked_builds: r.blocked_builds.clone(),
            inconclusive: r.inconclusive.clone(),
        }
    }
}
