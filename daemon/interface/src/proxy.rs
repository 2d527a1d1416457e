//! The client side of `com.dell.MilSpec1.Manager`, for `milspecctl`.

use std::collections::HashMap;

/// Every method is called with the no-auto-start flag: the bus never
/// starts milspecd for a client (it runs only where udev starts it).
#[zbus::proxy(
    interface = "com.dell.MilSpec1.Manager",
    default_service = "com.dell.MilSpec1",
    default_path = "/com/dell/MilSpec1"
)]
pub trait Manager {
    #[zbus(no_autostart)]
    fn install(&self, package: zbus::zvariant::Fd<'_>) -> zbus::Result<(String, String, String)>;
    #[zbus(no_autostart)]
    fn check_for_updates(&self) -> zbus::Result<(String, String, String)>;
    #[zbus(no_autostart)]
    fn rollback(&self) -> zbus::Result<(String, String, String)>;
    #[zbus(no_autostart)]
    fn reconcile(&self) -> zbus::Result<(String, String, String)>;
    #[zbus(no_autostart)]
    fn unblock(&self, version: &str) -> zbus::Result<(String, String, String)>;
    #[zbus(no_autostart)]
    fn blocklist(&self) -> zbus::Result<Vec<HashMap<String, String>>>;
    #[zbus(no_autostart)]
    fn set_paused(&self, paused: bool) -> zbus::Result<()>;
    #[zbus(no_autostart)]
    fn history(&self, limit: u32) -> zbus::Result<Vec<HashMap<String, String>>>;
    #[zbus(no_autostart)]
    fn verify_history(&self) -> zbus::Result<String>;
    #[zbus(no_autostart)]
    fn slots(&self) -> zbus::Result<Vec<HashMap<String, String>>>;
    #[zbus(no_autostart)]
    fn report(&self) -> zbus::Result<String>;
    #[zbus(no_autostart)]
    fn prepare_kernel(&self, release: &str) -> zbus::Result<(String, String, String)>;
    #[zbus(no_autostart)]
    fn kernel_removed(&self, release: &str) -> zbus::Result<(String, String, String)>;

    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn committed_version(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn trial_version(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn active_slot(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn paused(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn last_error(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn last_check(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn reboot_required(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn health(&self) -> zbus::Result<HashMap<String, String>>;
    #[zbus(property)]
    fn kernel_build(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn committed_kernels(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn kernels_without_build(&self) -> zbus::Result<Vec<String>>;
    #[zbus(property)]
    fn trial_ends_at(&self) -> zbus::Result<u64>;
}

/// Every member of the interface as this proxy (and `milspecctl`'s signal
/// reader) declares it, with its D-Bus signatures. The daemon's tests hold
/// it against the live server's introspection, and call each method and
/// property through [`ManagerProxyBlocking`], so the two sides cannot drift.
pub const MEMBERS: &[&str] = &[
    "method Blocklist() -> (aa{ss})",
    "method CheckForUpdates() -> (sss)",
    "method History(u) -> (aa{ss})",
    "method Install(h) -> (sss)",
    "method KernelRemoved(s) -> (sss)",
    "method PrepareKernel(s) -> (sss)",
    "method Reconcile() -> (sss)",
    "method Report() -> (s)",
    "method Rollback() -> (sss)",
    "method SetPaused(b) -> ()",
    "method Slots() -> (aa{ss})",
    "method Unblock(s) -> (sss)",
    "method VerifyHistory() -> (s)",
    "property ActiveSlot s read",
    "property CommittedKernels as read",
    "property CommittedVersion s read",
    "property Health a{ss} read",
    "property KernelBuild s read",
    "property KernelsWithoutBuild as read",
    "property LastCheck s read",
    "property LastError s read",
    "property Paused b read",
    "property RebootRequired b read",
    "property State s read",
    "property TrialEndsAt t read",
    "property TrialVersion s read",
    "signal Committed(s)",
    "signal CommittedFault(ss)",
    "signal DownloadProgress(stt)",
    "signal RolledBack(sss)",
    "signal Swapped(ss)",
];
