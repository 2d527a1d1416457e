//! The `com.dell.MilSpec1.Manager` interface as the daemon serves it.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use futures_lite::FutureExt;
use tracing::{info, warn};
use zbus::message::Header;
use zbus::object_server::SignalEmitter;

use milspec_format::text::{sanitize, sanitize_to};

use super::auth::authorize;
use super::{ManagerError, BUS_NAME, MAX_HISTORY, OBJECT_PATH};
use crate::config::Config;
use crate::engine::InstallOptions;
use crate::health::status::Selftest;
use crate::health::Snapshot;
use crate::history::History;
use crate::kernel_paths::KernelPaths;
use crate::notice::Notice;
use crate::worker::{reply_channel, Action, ActionError, ActionReply, Published, ReplyRx, WorkerHandle};
use milspec_interface::ActionResult;

/// Longest an `Install` call waits for its package to be read and staged.
pub const INSTALL_REPLY_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Longest a `CheckForUpdates` call waits (download retries included).
pub const CHECK_REPLY_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Largest package accepted through a descriptor (as the format's limit).
pub const MAX_PACKAGE_FD_SIZE: u64 = 1 << 30;

/// The D-Bus object. Reads (properties, `History`, `Slots`) are answered
/// here from the state folder; changes go to the engine thread.
#[derive(Debug)]
pub struct Manager {
    handle: WorkerHandle,
    cfg: Config,
    paths: KernelPaths,
}

impl Manager {
    pub fn new(handle: WorkerHandle, cfg: Config) -> Self {
        let paths = KernelPaths::from_config(&cfg.kernel);
        Manager { handle, cfg, paths }
    }

    fn published(&self) -> Published {
        self.handle.published()
    }
}

impl Manager {
    /// A method about one kernel release: the caller checked, the release
    /// checked, one action sent, its answer awaited at most `limit`.
    async fn kernel_action(
        &self,
        conn: &zbus::Connection,
        hdr: &Header<'_>,
        method: &'static str,
        release: String,
        make: impl FnOnce(String, crate::worker::ReplyTx) -> Action,
        limit: Duration,
    ) -> Result<(String, String, String), ManagerError> {
        let (uid, by) = authorize(conn, hdr, method).await?;
        let release = checked_release(release)?;
        info!(uid, kernel = %release, "{method}");
        let (tx, rx) = reply_channel();
        self.handle.send(make(release, tx).by(by))?;
        Ok(wait_reply(rx, limit, method).await?.into_wire())
    }
}

/// The file behind a caller's descriptor, as the daemon sees it (the
/// history's `origin`): its path, or `fd` if it has none to show.
fn descriptor_origin(file: &File) -> crate::history::Origin {
    use std::os::fd::AsRawFd;
    let link = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let file = link.map_or_else(|_| "fd".to_string(), |p| p.to_string_lossy().into_owned());
    crate::history::Origin::File { file: sanitize_to(&file, 4096) }
}

/// A kernel release from a caller: checked before it goes anywhere.
fn checked_release(release: String) -> Result<String, ManagerError> {
    if milspec_format::manifest::valid_release(&release) {
        Ok(release)
    } else {
        Err(ManagerError::Failed(format!(
            "`{}` is not a kernel release (1-96 characters of letters, digits and . _ + - ~); nothing done",
            sanitize_to(&release, 120)
        )))
    }
}

/// A version from a caller: at most 64 characters of a semantic version.
fn checked_version(version: &str) -> Result<semver::Version, ManagerError> {
    let parsed = (version.len() <= 64).then(|| version.parse::<semver::Version>().ok()).flatten();
    parsed.ok_or_else(|| {
        ManagerError::Failed(format!(
            "`{}` is not a version (a semantic version such as 1.2.0, at most 64 characters); nothing done",
            sanitize_to(version, 80)
        ))
    })
}

async fn wait_reply(rx: ReplyRx, timeout: Duration, what: &str) -> Result<ActionReply, ManagerError> {
    let recv =
        async { rx.recv().await.map_err(|_| ManagerError::Failed(format!("{what}: the engine thread stopped"))) };
    let limit = async {
        async_io::Timer::after(timeout).await;
        Err(ManagerError::Timeout(format!(
            "{what} did not answer within {}; see `milspecctl status` and the daemon's log",
            humantime::format_duration(timeout)
        )))
    };
    Ok(recv.or(limit).await??)
}

/// Reads the health the `Health` property shows, as strings.
pub fn health_map(paths: &KernelPaths) -> HashMap<String, String> {
    snapshot_map(Snapshot::read(paths))
}

/// A health snapshot as the `Health` property shows it, as strings.
pub fn snapshot_map(s: Snapshot) -> HashMap<String, String> {
    let mut m = HashMap::new();
    let n = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
    m.insert("oops_count".into(), n(s.oops_count));
    m.insert("warn_count".into(), n(s.warn_count));
    m.insert("taint".into(), s.taint.to_string());
    match &s.status {
        Some(st) => {
            m.insert("version".into(), st.version.clone());
            m.insert("state".into(), st.state.as_str().into());
            m.insert("selftest".into(), if st.selftest == Selftest::Pass { "pass" } else { "fail" }.into());
            m.insert("mode5_level".into(), st.mode5_level.to_string());
            m.insert("errors".into(), st.errors.to_string());
        }
        None => {
            m.insert("state".into(), "missing".into());
        }
    }
    if let Some(e) = s.status_error {
        m.insert("status_error".into(), e);
    }
    m.clean()
}

/// History events as `History` returns them: one dict of strings each,
/// escaped.
pub fn history_maps(events: Vec<crate::history::Event>) -> Vec<HashMap<String, String>> {
    events
        .into_iter()
        .map(|e| {
            let mut m = HashMap::new();
            let v = serde_json::to_value(&e).unwrap_or_default();
            if let Some(obj) = v.as_object() {
                for (k, v) in obj {
                    let s = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                    m.insert(k.clone(), s);
                }
            }
            m
        })
        .collect::<Vec<_>>()
        .clean()
}

/// What every string the service returns, emits or puts in an error
/// passes through: untrusted text (a package's, an index's, the kernel
/// log's) never reaches a D-Bus string unescaped. A NUL there would make
/// the message invalid, and the bus daemon drops the connection that sent it.
pub trait Clean {
    fn clean(self) -> Self;
}

impl Clean for String {
    fn clean(self) -> Self {
        if milspec_format::text::is_clean(&self) && self.len() <= milspec_format::text::MAX_TEXT {
            self
        } else {
            sanitize(&self)
        }
    }
}

impl<A: Clean, B: Clean, C: Clean> Clean for (A, B, C) {
    fn clean(self) -> Self {
        (self.0.clean(), self.1.clean(), self.2.clean())
    }
}

impl Clean for () {
    fn clean(self) -> Self {}
}

impl<V: Clean> Clean for HashMap<String, V> {
    fn clean(self) -> Self {
        self.into_iter().map(|(k, v)| (k.clean(), v.clean())).collect()
    }
}

impl<T: Clean> Clean for Vec<T> {
    fn clean(self) -> Self {
        self.into_iter().map(Clean::clean).collect()
    }
}

impl Clean for ManagerError {
    fn clean(self) -> Self {
        use ManagerError as E;
        match self {
            E::ZBus(e) => E::ZBus(e),
            E::AccessDenied(t) => E::AccessDenied(t.clean()),
            E::Rejected(t) => E::Rejected(t.clean()),
            E::InvalidPackage(t) => E::InvalidPackage(t.clean()),
            E::Busy(t) => E::Busy(t.clean()),
            E::NothingToRollBack(t) => E::NothingToRollBack(t.clean()),
            E::Timeout(t) => E::Timeout(t.clean()),
            E::Failed(t) => E::Failed(t.clean()),
        }
    }
}

/// A method's result, escaped on both arms.
pub fn clean<T: Clean>(r: Result<T, ManagerError>) -> Result<T, ManagerError> {
    match r {
        Ok(v) => Ok(v.clean()),
        Err(e) => Err(e.clean()),
    }
}

#[zbus::interface(name = "com.dell.MilSpec1.Manager")]
impl Manager {
    /// Installs the package read from `package`, a descriptor the caller
    /// opened (a regular file). Returns once the package is staged
    /// (`started`) or needs no swap; the outcome follows as `Committed` or
    /// `RolledBack`.
    #[zbus(out_args("result", "version", "message"))]
    async fn install(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        package: zbus::zvariant::OwnedFd,
    ) -> Result<(String, String, String), ManagerError> {
        clean(
            async {
                let (uid, by) = authorize(conn, &hdr, "Install").await?;
                let file = File::from(OwnedFd::from(package));
                let meta = file
                    .metadata()
                    .map_err(|e| ManagerError::InvalidPackage(format!("cannot stat the descriptor: {e}")))?;
                if !meta.is_file() {
                    return Err(ManagerError::InvalidPackage(
                        "the descriptor is not a regular file; pass an open package file (milspecctl install PKG)"
                            .into(),
                    ));
                }
                if meta.len() > MAX_PACKAGE_FD_SIZE {
                    return Err(ManagerError::InvalidPackage(format!(
                        "the package is {} bytes, more than {MAX_PACKAGE_FD_SIZE}",
                        meta.len()
                    )));
                }
                info!(uid, size = meta.len(), "Install");
                let (tx, rx) = reply_channel();
                let origin = descriptor_origin(&file);
                let install = Action::Install { package: file, origin, opts: InstallOptions::default(), reply: tx };
                self.handle.send(install.by(by))?;
                let r = wait_reply(rx, INSTALL_REPLY_TIMEOUT, "Install").await?;
                Ok(r.into_wire())
            }
            .await,
        )
    }

    /// Polls the mirror once (honouring the rollout schedule).
    #[zbus(out_args("result", "version", "message"))]
    async fn check_for_updates(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(String, String, String), ManagerError> {
        clean(
            async {
                let (uid, by) = authorize(conn, &hdr, "CheckForUpdates").await?;
                info!(uid, "CheckForUpdates");
                let (tx, rx) = reply_channel();
                self.handle.send(Action::Check { force: false, reply: Some(tx) }.by(by))?;
                let r = wait_reply(rx, CHECK_REPLY_TIMEOUT, "CheckForUpdates").await?;
                Ok(r.into_wire())
            }
            .await,
        )
    }

    /// During a trial: ends it now and rolls back to the committed slot
    /// (the version is blocklisted, as after a fault); returns when done,
    /// with `result` `rolled-back`. With no trial: goes back to the
    /// version kept in the other slot, through a trial of its own;
    /// returns once swapped, with `result` `started`, and the outcome
    /// follows as `Committed` or `RolledBack`.
    #[zbus(out_args("from", "to", "result"))]
    async fn rollback(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(String, String, String), ManagerError> {
        clean(
            async {
                let (uid, by) = authorize(conn, &hdr, "Rollback").await?;
                let reason = format!("rollback requested by the operator (uid {uid})");
                let from = match self.handle.request_rollback(reason.clone()) {
                    Ok(from) => from,
                    Err(ActionError::NothingToRollBack(_)) => {
                        let from = self.published().committed_version;
                        info!(uid, version = %from, "Rollback to the other slot");
                        let (tx, rx) = reply_channel();
                        self.handle.send(Action::Revert { reason, reply: tx }.by(by))?;
                        let r = wait_reply(rx, INSTALL_REPLY_TIMEOUT, "Rollback").await?;
                        return Ok((from, r.version, r.result.word().to_string()));
                    }
                    Err(e) => return Err(e.into()),
                };
                info!(uid, version = %from, "Rollback");
                let limit = self.cfg.health.unload_timeout * 2 + Duration::from_secs(60);
                let start = std::time::Instant::now();
                loop {
                    async_io::Timer::after(Duration::from_millis(50)).await;
                    let p = self.published();
                    // Done when the engine thread has finished the install it ran.
                    if !self.handle.is_busy() {
                        return Ok((from, p.committed_version, ActionResult::RolledBack.word().to_string()));
                    }
                    if start.elapsed() > limit {
                        return Err(ManagerError::Timeout(format!(
                            "the rollback of {from} did not finish within {}; see `milspecctl status`",
                            humantime::format_duration(limit)
                        )));
                    }
                }
            }
            .await,
        )
    }

    /// Tells the daemon the module was loaded or unloaded behind its back
    /// (the udev rule calls it): compares the kernel with the committed
    /// slot and repairs as at startup. Returns `result` (`clean`,
    /// `loaded-committed`, `drift`, `pending-reboot`), a version and a
    /// message. Busy while the daemon itself is changing the module.
    #[zbus(out_args("result", "version", "message"))]
    async fn reconcile(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
    ) -> Result<(String, String, String), ManagerError> {
        clean(
            async {
                let (uid, by) = authorize(conn, &hdr, "Reconcile").await?;
                info!(uid, "Reconcile");
                let (tx, rx) = reply_channel();
                self.handle.send(Action::Reconcile { reply: tx }.by(by))?;
                let limit = self.cfg.health.unload_timeout * 2 + Duration::from_secs(60);
                let r = wait_reply(rx, limit, "Reconcile").await?;
                Ok(r.into_wire())
            }
            .await,
        )
    }

    /// Kernel `release` was installed (the kernel's postinst hook calls
    /// it): makes the committed version ready for it before its first
    /// boot, fetching and adding its build from the mirror if the
    /// committed slot lacks one. Returns `result` (`kernel-ready`,
    /// `build-added`, `no-build`, `rejected`, `clean` when nothing is
    /// committed), the version and a message.
    #[zbus(out_args("result", "version", "message"))]
    async fn prepare_kernel(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        release: String,
    ) -> Result<(String, String, String), ManagerError> {
        let limit =
            self.cfg.source.as_ref().map_or(Duration::from_secs(60), |s| s.timeout * 3) + Duration::from_secs(60);
        let make = |release, reply| Action::PrepareKernel { release, reply };
        clean(self.kernel_action(conn, &hdr, "PrepareKernel", release, make, limit).await)
    }

    /// Kernel `release` was removed (the kernel's postrm hook calls it):
    /// drops its build from the slots, unless it is the running kernel.
    #[zbus(out_args("result", "version", "message"))]
    async fn kernel_removed(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        release: String,
    ) -> Result<(String, String, String), ManagerError> {
        let make = |release, reply| Action::KernelRemoved { release, reply };
        clean(self.kernel_action(conn, &hdr, "KernelRemoved", release, make, Duration::from_secs(60)).await)
    }

    /// Takes `version` (any build of its release) off this host's
    /// blocklist, so the mirror or an install may bring it again; the
    /// history records who did it and why it had been blocked. Returns
    /// `result` `unblocked`, the version and a message; a version that
    /// is not blocklisted is `Rejected` (nothing changed but that record).
    #[zbus(out_args("result", "version", "message"))]
    async fn unblock(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        version: String,
    ) -> Result<(String, String, String), ManagerError> {
        clean(
            async {
                let (uid, by) = authorize(conn, &hdr, "Unblock").await?;
                let version = checked_version(&version)?;
                info!(uid, %version, "Unblock");
                let (tx, rx) = reply_channel();
                self.handle.send(Action::Unblock { version, actor: format!("uid {uid}"), reply: tx }.by(by))?;
                Ok(wait_reply(rx, Duration::from_secs(60), "Unblock").await?.into_wire())
            }
            .await,
        )
    }

    /// The versions blocklisted on this host, oldest first; each a dict
    /// of `version`, `sequence`, `reason` and `at` (when it was blocked).
    #[zbus(out_args("blocked"))]
    async fn blocklist(&self) -> Result<Vec<HashMap<String, String>>, ManagerError> {
        clean(
            async {
                let state = crate::state::StateFile::new(&self.cfg.paths.state_dir)
                    .load()
                    .map_err(|e| ManagerError::Failed(format!("cannot read the state record: {e}")))?;
                Ok(state
                    .blocklist
                    .iter()
                    .map(|b| {
                        HashMap::from([
                            ("version".to_string(), sanitize(&b.version.to_string())),
                            ("sequence".to_string(), b.sequence.to_string()),
                            ("reason".to_string(), sanitize(&b.reason)),
                            ("at".to_string(), sanitize(&b.at)),
                        ])
                    })
                    .collect())
            }
            .await,
        )
    }

    /// Pauses (`true`) or resumes automatic polling; kept across restarts.
    async fn set_paused(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        paused: bool,
    ) -> Result<(), ManagerError> {
        clean(
            async {
                let (uid, _) = authorize(conn, &hdr, "SetPaused").await?;
                info!(uid, paused, "SetPaused");
                if self.handle.set_paused(paused)? {
                    self.paused_changed(&emitter).await?;
                }
                Ok(())
            }
            .await,
        )
    }

    /// The newest `limit` history events (at most 1000), oldest first;
    /// each a dict of the event's fields (`at`, `event`, `version`, `slot`,
    /// `from`, `to`, `reason`, `millis`).
    #[zbus(out_args("events"))]
    async fn history(&self, limit: u32) -> Result<Vec<HashMap<String, String>>, ManagerError> {
        clean(
            async {
                let limit = usize::try_from(limit.min(MAX_HISTORY)).unwrap_or(0);
                let events = History::new(&self.cfg.paths.state_dir)
                    .read(limit)
                    .map_err(|e| ManagerError::Failed(format!("cannot read the history: {e}")))?;
                Ok(history_maps(events))
            }
            .await,
        )
    }

    /// Checks the history's hash chain (every file, rotated ones first) and
    /// returns the verification as `milspec.history-verify/1` JSON: what
    /// verified, or the first broken record. Read-only, open to every
    /// caller as `History` is; one verification at a time (`Busy` else).
    #[zbus(out_args("verification"))]
    async fn verify_history(&self) -> Result<String, ManagerError> {
        static RUNNING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        use std::sync::atomic::Ordering;
        if RUNNING.swap(true, Ordering::SeqCst) {
            return Err(ManagerError::Busy("a history verification is running; try again when it is done".into()));
        }
        let history = History::new(&self.cfg.paths.state_dir);
        let (tx, rx) = async_channel::bounded(1);
        /// Lets the next verification run once this one ends, however it ends.
        struct Done;
        impl Drop for Done {
            fn drop(&mut self) {
                RUNNING.store(false, Ordering::SeqCst);
            }
        }
        let spawned = std::thread::Builder::new().name("verify-history".into()).spawn(move || {
            let _done = Done;
            let _ = tx.send_blocking(history.verify());
        });
        if let Err(e) = spawned {
            RUNNING.store(false, Ordering::SeqCst);
            return Err(ManagerError::Failed(format!("cannot start the verification: {e}")));
        }
        let verdict = rx
            .recv()
            .await
            .map_err(|_| ManagerError::Failed("the verification stopped without an answer".into()))?
            .map_err(|e| ManagerError::Failed(format!("cannot read the history: {e}")).clean())?;
        let report = crate::history::chain::VerifyReport::new(&verdict);
        let text = serde_json::to_string(&report)
            .map_err(|e| ManagerError::Failed(format!("cannot write the verification: {e}")))?;
        if !milspec_format::text::is_clean(&text) {
            return Err(ManagerError::Failed(
                "the verification holds unprintable text; see `milspecd history --verify`".into(),
            ));
        }
        Ok(text)
    }

    /// The two slots: `slot`, `valid` (`true`/`false`), `committed`,
    /// `version`, `sequence`, `error`, `kernels` (the kernel releases it
    /// holds builds for, space separated; keys present when known).
    #[zbus(out_args("slots"))]
    async fn slots(&self) -> Result<Vec<HashMap<String, String>>, ManagerError> {
        clean(
            async {
                // As the engine last verified them: no slot is re-read here.
                let p = self.handle.published();
                Ok(p.slots
                    .iter()
                    .map(|s| {
                        let mut m = HashMap::new();
                        m.insert("slot".into(), s.slot.to_string());
                        m.insert("valid".into(), s.valid.to_string());
                        m.insert("committed".into(), (p.active_slot == s.slot.to_string()).to_string());
                        if let Some(v) = &s.version {
                            m.insert("version".into(), v.clone());
                        }
                        if let Some(q) = s.sequence {
                            m.insert("sequence".into(), q.to_string());
                        }
                        if let Some(e) = &s.error {
                            m.insert("error".into(), e.clone());
                        }
                        if s.version.is_some() {
                            m.insert("kernels".into(), s.kernels.join(" "));
                        }
                        m
                    })
                    .collect())
            }
            .await,
        )
    }

    /// The compliance report (`milspec.report/1`, docs/json.md) as one
    /// JSON text, read now from the kernel's files, the trusted keys and
    /// the state folder. Read-only, so open to every caller as the
    /// properties are; every string in it is escaped.
    #[zbus(out_args("report"))]
    async fn report(&self) -> Result<String, ManagerError> {
        let report = crate::report::read(&self.cfg);
        let text = serde_json::to_string(&report)
            .map_err(|e| ManagerError::Failed(format!("cannot write the report: {e}")).clean())?;
        // Each string was escaped when the report was built; serde_json
        // escapes what is left of the C0 range. A report is longer than one
        // message line may be, so it is checked, never cut.
        if !milspec_format::text::is_clean(&text) {
            return Err(ManagerError::Failed("the report holds unprintable text; see `milspecd report`".into()));
        }
        Ok(text)
    }

    /// `idle`, `checking`, `downloading`, `staged`, `swapping`, `trial`,
    /// `rolling-back` or `error`.
    #[zbus(property)]
    async fn state(&self) -> String {
        self.published().state.as_str().into()
    }

    #[zbus(property)]
    async fn committed_version(&self) -> String {
        sanitize(&self.published().committed_version)
    }

    #[zbus(property)]
    async fn trial_version(&self) -> String {
        sanitize(&self.published().trial_version)
    }

    /// The committed slot, `a` or `b` (empty: none).
    #[zbus(property)]
    async fn active_slot(&self) -> String {
        sanitize(&self.published().active_slot)
    }

    #[zbus(property)]
    async fn paused(&self) -> bool {
        self.published().paused
    }

    #[zbus(property)]
    async fn last_error(&self) -> String {
        sanitize(&self.published().last_error)
    }

    /// RFC 3339 time of the last mirror poll (empty: none since start).
    #[zbus(property)]
    async fn last_check(&self) -> String {
        sanitize(&self.published().last_check)
    }

    #[zbus(property)]
    async fn reboot_required(&self) -> bool {
        self.published().reboot_required
    }

    /// The module's `/proc/milspec/status` and the kernel's counters.
    #[zbus(property)]
    async fn health(&self) -> HashMap<String, String> {
        health_map(&self.paths)
    }

    /// The running kernel against the committed version: `ready` (its
    /// build is in the committed slot), `no-build` (nothing of the
    /// committed version can load on it), `no-version` (nothing committed).
    #[zbus(property)]
    async fn kernel_build(&self) -> String {
        self.published().kernel_build.clean()
    }

    /// The kernel releases the committed slot holds builds for.
    #[zbus(property)]
    async fn committed_kernels(&self) -> Vec<String> {
        self.published().committed_kernels.clean()
    }

    /// Installed kernels (the running one included) the committed version
    /// has no build for: booting one of them starts without the module.
    #[zbus(property)]
    async fn kernels_without_build(&self) -> Vec<String> {
        self.published().kernels_without_build.clean()
    }

    /// When the running trial's probation window ends, in Unix
    /// milliseconds (0: no trial), for a countdown.
    #[zbus(property)]
    async fn trial_ends_at(&self) -> u64 {
        self.published().trial_ends_ms
    }

    #[zbus(signal)]
    async fn swapped(emitter: &SignalEmitter<'_>, from: &str, to: &str) -> zbus::Result<()>;

    /// A package download went on: `received` of `total` bytes (a few
    /// times a second at most, and at its end).
    #[zbus(signal)]
    async fn download_progress(
        emitter: &SignalEmitter<'_>,
        version: &str,
        received: u64,
        total: u64,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn committed(emitter: &SignalEmitter<'_>, version: &str) -> zbus::Result<()>;

    /// A fault naming the committed module was seen after its probation
    /// (`reason` also says whether it rolls back).
    #[zbus(signal)]
    async fn committed_fault(emitter: &SignalEmitter<'_>, version: &str, reason: &str) -> zbus::Result<()>;

    #[zbus(signal)]
    async fn rolled_back(emitter: &SignalEmitter<'_>, from: &str, to: &str, reason: &str) -> zbus::Result<()>;
}

/// Connects to the system bus (`DBUS_SYSTEM_BUS_ADDRESS` if set), serves
/// the object, then takes the name (after the object is there).
pub fn serve(handle: WorkerHandle, cfg: Config) -> zbus::Result<zbus::blocking::Connection> {
    let conn =
        zbus::blocking::connection::Builder::system()?.serve_at(OBJECT_PATH, Manager::new(handle, cfg))?.build()?;
    conn.request_name(BUS_NAME)?;
    info!(name = BUS_NAME, "serving on the system bus");
    Ok(conn)
}

/// Exit status of a daemon that lost the system bus (its connection
/// closed, its name taken away, or the bus stopped answering): non-zero,
/// so `Restart=on-failure` starts it again with a fresh connection.
pub const EXIT_BUS_LOST: i32 = 75;
/// How often the daemon checks that it still owns its name.
const BUS_CHECK_EVERY: Duration = Duration::from_secs(5);
/// Longest wait for the bus daemon to answer that check.
const BUS_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Checks in a row that may fail (timeouts) before the bus counts as lost.
const BUS_CHECK_FAILURES: u32 = 2;

/// Why the daemon gave up its bus connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusLost {
    /// The socket closed (the bus daemon dropped us, or stopped).
    Closed,
    /// Someone else owns the name, or nobody does.
    NameLost(String),
    /// The bus (or our own connection) stopped answering.
    NoAnswer(String),
}

impl std::fmt::Display for BusLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BusLost::Closed => write!(f, "the connection to the system bus closed"),
            BusLost::NameLost(why) => write!(f, "{BUS_NAME} is no longer ours: {why}"),
            BusLost::NoAnswer(why) => write!(f, "the system bus does not answer: {why}"),
        }
    }
}

/// One check: does the bus say we own the name?
async fn check_owner(conn: &zbus::Connection) -> Result<(), BusLost> {
    let ask = async {
        let dbus = zbus::fdo::DBusProxy::new(conn).await.map_err(|e| BusLost::NoAnswer(e.to_string()))?;
        let name = zbus::names::BusName::try_from(BUS_NAME).map_err(|e| BusLost::NoAnswer(e.to_string()))?;
        match dbus.get_name_owner(name).await {
            Ok(owner) if Some(owner.as_str()) == conn.unique_name().map(|u| u.as_str()) => Ok(()),
            Ok(owner) => Err(BusLost::NameLost(format!("owned by {owner}"))),
            Err(zbus::fdo::Error::NameHasNoOwner(_)) => Err(BusLost::NameLost("nobody owns it".into())),
            Err(e) => Err(BusLost::NoAnswer(e.to_string())),
        }
    };
    let limit = async {
        async_io::Timer::after(BUS_CHECK_TIMEOUT).await;
        Err(BusLost::NoAnswer(format!("no answer to GetNameOwner within {}s", BUS_CHECK_TIMEOUT.as_secs())))
    };
    ask.or(limit).await
}

/// Waits until the daemon has lost the bus: the connection closes, the
/// name goes, or [`BUS_CHECK_FAILURES`] checks in a row get no answer.
pub async fn wait_bus_lost(conn: &zbus::Connection) -> BusLost {
    let closed = async {
        conn.closed().await;
        BusLost::Closed
    };
    let checks = async {
        let mut failures = 0;
        loop {
            async_io::Timer::after(BUS_CHECK_EVERY).await;
            match check_owner(conn).await {
                Ok(()) => failures = 0,
                Err(_) if conn.is_closed() => return BusLost::Closed,
                Err(e @ BusLost::NameLost(_)) => return e,
                Err(e) => {
                    failures += 1;
                    if failures >= BUS_CHECK_FAILURES {
                        return e;
                    }
                }
            }
        }
    };
    closed.or(checks).await
}

/// Watches the connection on a thread of its own; when the bus is lost,
/// logs why and exits with [`EXIT_BUS_LOST`]. A daemon without its name
/// must not go on as if it could be reached: systemd restarts it.
pub fn watch_bus(conn: &zbus::blocking::Connection) -> std::io::Result<()> {
    let conn = conn.inner().clone();
    std::thread::Builder::new().name("bus-watch".into()).spawn(move || {
        let why = zbus::block_on(wait_bus_lost(&conn));
        tracing::error!("lost the system bus: {why}; exiting so that systemd restarts milspecd");
        std::process::exit(EXIT_BUS_LOST);
    })?;
    Ok(())
}

/// Turns the worker's notices into `PropertiesChanged` and signals, until
/// the worker stops.
pub fn emit_notices(conn: &zbus::blocking::Connection, notices: Receiver<Notice>) -> zbus::Result<()> {
    let iface_ref = conn.object_server().interface::<_, Manager>(OBJECT_PATH)?;
    let mut last = Published::default();
    let mut last_health = HashMap::new();
    while let Ok(n) = notices.recv() {
        let emitter = iface_ref.signal_emitter();
        let iface = iface_ref.get();
        let res = match n {
            Notice::Changed => {
                let now = iface.published();
                let health = health_map(&iface.paths);
                let states = iface.handle.take_states();
                let r = zbus::block_on(async {
                    // Each state passed through, in order, even a brief one.
                    // Each value is sent as it was taken here: the property
                    // getter could already read a later state.
                    let mut shown = last.state;
                    for s in states.into_iter().filter(|s| *s != now.state).chain([now.state]) {
                        if s != shown {
                            let changed = HashMap::from([("State", zbus::zvariant::Value::from(s.as_str()))]);
                            let iface_name = zbus::names::InterfaceName::from_static_str_unchecked(super::INTERFACE);
                            zbus::fdo::Properties::properties_changed(emitter, iface_name, changed, (&[][..]).into())
                                .await?;
                            shown = s;
                        }
                    }
                    if now.committed_version != last.committed_version {
                        iface.committed_version_changed(emitter).await?;
                    }
                    if now.trial_version != last.trial_version {
                        iface.trial_version_changed(emitter).await?;
                    }
                    if now.trial_ends_ms != last.trial_ends_ms {
                        iface.trial_ends_at_changed(emitter).await?;
                    }
                    if now.active_slot != last.active_slot {
                        iface.active_slot_changed(emitter).await?;
                    }
                    if now.paused != last.paused {
                        iface.paused_changed(emitter).await?;
                    }
                    if now.last_error != last.last_error {
                        iface.last_error_changed(emitter).await?;
                    }
                    if now.last_check != last.last_check {
                        iface.last_check_changed(emitter).await?;
                    }
                    if now.reboot_required != last.reboot_required {
                        iface.reboot_required_changed(emitter).await?;
                    }
                    if health != last_health {
                        iface.health_changed(emitter).await?;
                    }
                    if now.kernel_build != last.kernel_build {
                        iface.kernel_build_changed(emitter).await?;
                    }
                    if now.committed_kernels != last.committed_kernels {
                        iface.committed_kernels_changed(emitter).await?;
                    }
                    if now.kernels_without_build != last.kernels_without_build {
                        iface.kernels_without_build_changed(emitter).await?;
                    }
                    Ok::<_, zbus::Error>(())
                });
                last = now;
                last_health = health;
                r
            }
            Notice::Swapped { from, to, .. } => {
                zbus::block_on(Manager::swapped(emitter, &sanitize(&from), &sanitize(&to)))
            }
            Notice::Committed { version } => zbus::block_on(Manager::committed(emitter, &sanitize(&version))),
            Notice::Download { version, received, total } => {
                zbus::block_on(Manager::download_progress(emitter, &sanitize(&version), received, total))
            }
            Notice::CommittedFault { version, reason } => {
                zbus::block_on(Manager::committed_fault(emitter, &sanitize(&version), &sanitize(&reason)))
            }
            Notice::RolledBack { from, to, reason } => {
                zbus::block_on(Manager::rolled_back(emitter, &sanitize(&from), &sanitize(&to), &sanitize(&reason)))
            }
        };
        if let Err(e) = res {
            warn!("cannot emit a D-Bus signal: {e}");
        }
    }
    Ok(())
}
