//! The probation loop: watch a freshly loaded module for a fixed window.
//!
//! The engine arms a [`Watcher`] *before* it unloads the old module and
//! loads the new one, so kernel log records written during the load are
//! seen. Every tick the watcher drains the kernel log through the fault
//! matcher and compares a fresh [`Snapshot`] with the baseline; the first
//! fault of the module ends the watch. A counter rise no log record pins on
//! the module follows [`Unattributed`] (see [`super::attribution`]). At the
//! end of the window the custom checks run.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::attribution::{self, Decision, Unattributed, UnattributedRise};
use super::declared::DeclaredCheck;
use super::kmsg::{FaultMatcher, KmsgReader};
use super::snapshot::{assess, Snapshot};
use super::{checks, Unhealthy, DEFAULT_IGNORED_TAINT};
use crate::config::HealthConfig;
use crate::kernel_paths::KernelPaths;

/// Default time between two looks at the kernel.
pub const DEFAULT_TICK: Duration = Duration::from_millis(100);
/// How long a fault rise is left to settle (the report, the taint bit and
/// the counter are written one after the other) before it is judged.
const SETTLE: Duration = Duration::from_millis(20);
/// How often the progress callback is called.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// How to judge a module on probation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOptions {
    /// Taint bits that never count as added (default: `O` and `E`).
    pub ignored_taint: u64,
    /// Holds `required.d/` and `wanted.d/`.
    pub checks_dir: PathBuf,
    /// How long one custom check may run.
    pub check_timeout: Duration,
    /// Time between two looks at the kernel.
    pub tick: Duration,
    /// What a fault rise that no log record pins on the module does.
    pub unattributed: Unattributed,
    /// Declared checks (`health.d/*.toml`), run through the window.
    pub declared: Vec<DeclaredCheck>,
}

impl WatchOptions {
    pub fn from_config(health: &HealthConfig) -> Self {
        WatchOptions {
            checks_dir: health.checks_dir.clone(),
            check_timeout: health.check_timeout,
            unattributed: health.unattributed,
            declared: Vec::new(),
            ..WatchOptions::default()
        }
    }
}

impl Default for WatchOptions {
    fn default() -> Self {
        let health = HealthConfig::default();
        WatchOptions {
            ignored_taint: DEFAULT_IGNORED_TAINT,
            checks_dir: health.checks_dir,
            check_timeout: health.check_timeout,
            tick: DEFAULT_TICK,
            unattributed: health.unattributed,
            declared: Vec::new(),
        }
    }
}

impl From<&HealthConfig> for WatchOptions {
    fn from(health: &HealthConfig) -> Self {
        WatchOptions::from_config(health)
    }
}

/// How a probation window ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchOutcome {
    /// No fault of the module for the whole window, and the custom checks
    /// passed; `unattributed` lists the rises the policy let through.
    Healthy { watched: Duration, unattributed: Vec<UnattributedRise> },
    /// The first fault seen, and how long after the watch started.
    Unhealthy { reason: Unhealthy, after: Duration },
    /// Ended early on request (an operator's rollback), with its reason.
    Stopped { reason: String, after: Duration },
}

/// A declared check on its schedule.
#[derive(Debug)]
struct Scheduled<'a> {
    check: &'a DeclaredCheck,
    /// When it runs next, measured from the start of the watch.
    due: Duration,
    /// Failed runs in a row.
    failed: u32,
}

impl<'a> Scheduled<'a> {
    fn all(checks: &'a [DeclaredCheck]) -> Vec<Self> {
        checks.iter().map(|check| Scheduled { check, due: check.interval, failed: 0 }).collect()
    }

    /// Runs it if it is due at `now`; the verdict once a required check
    /// has failed its number of times in a row.
    fn run_if_due(&mut self, now: Duration, status: &std::path::Path) -> Option<Unhealthy> {
        if now < self.due {
            return None;
        }
        let c = self.check;
        self.due = now + c.interval;
        match super::probe::run(&c.probe, c.timeout, status) {
            Ok(()) => {
                if self.failed > 0 {
                    tracing::info!(check = %c.name, "health check passes again after {} failure(s)", self.failed);
                }
                self.failed = 0;
                None
            }
            Err(why) => {
                self.failed += 1;
                let why = format!("{why} ({} of {} failures in a row)", self.failed, c.failures);
                if c.required && self.failed >= c.failures {
                    return Some(Unhealthy::CheckFailed { name: format!("health.d/{}.toml", c.name), why });
                }
                let kind = if c.required { "required" } else { "wanted" };
                tracing::warn!(check = %c.name, "{kind} health check failed: {why}");
                None
            }
        }
    }
}

/// One look at the kernel, attributed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Look {
    Fine,
    /// A fault of the module (or one the rules count against it).
    Guilty(Unhealthy),
    /// A fault rise no log record names the module in; the rise's
    /// snapshot and the header of another driver's report, if one was seen.
    Unattributed {
        rise: Unhealthy,
        now: Box<Snapshot>,
        report: Option<String>,
    },
}

/// Watches the kernel for faults of one module.
#[derive(Debug)]
pub struct Watcher {
    paths: KernelPaths,
    kmsg: KmsgReader,
    matcher: FaultMatcher,
    /// Taint bits [`Self::check_now`] ignores; [`Self::watch_until`] sets them from its options.
    ignored_taint: u64,
}

impl Watcher {
    /// Opens the kernel log positioned at its end. Call before the module
    /// is (re)loaded so records from its load are seen.
    pub fn arm(paths: &KernelPaths) -> io::Result<Watcher> {
        Self::with_reader(paths, KmsgReader::open_at_end(&paths.kmsg))
    }

    /// A watcher that first reads the kernel log records stamped since
    /// `since` (time since boot, on the kernel log's clock): a trial
    /// resumed after a crash judges what was logged while no one watched.
    pub fn arm_since(paths: &KernelPaths, since: Duration) -> io::Result<Watcher> {
        Self::with_reader(paths, KmsgReader::open_since(&paths.kmsg, since))
    }

    fn with_reader(paths: &KernelPaths, kmsg: io::Result<KmsgReader>) -> io::Result<Watcher> {
        let kmsg = kmsg
            .map_err(|e| io::Error::new(e.kind(), format!("cannot open kernel log {}: {e}", paths.kmsg.display())))?;
        Ok(Watcher {
            paths: paths.clone(),
            kmsg,
            matcher: FaultMatcher::new(&paths.module),
            ignored_taint: DEFAULT_IGNORED_TAINT,
        })
    }

    /// Sets the taint bits that never count as added (default: `O` and `E`).
    pub fn with_ignored_taint(mut self, ignored_taint: u64) -> Self {
        self.ignored_taint = ignored_taint;
        self
    }

    /// One immediate assessment: the kernel log since the last look, then a
    /// fresh snapshot against `baseline`.
    pub fn check_now(&mut self, baseline: &Snapshot) -> Option<Unhealthy> {
        for record in self.kmsg.read_available() {
            if let Some(line) = self.matcher.feed(&record) {
                return Some(Unhealthy::KernelLog { line });
            }
        }
        assess(baseline, &Snapshot::read(&self.paths), self.ignored_taint)
    }

    /// [`Self::check_now`] with attribution: a counter or fault-taint rise
    /// is the module's only when a log record of the window names it; the
    /// log is read once more first, since a report's records are written
    /// before the kernel counts it.
    fn look(&mut self, baseline: &Snapshot) -> Look {
        for record in self.kmsg.read_available() {
            if let Some(line) = self.matcher.feed(&record) {
                return Look::Guilty(Unhealthy::KernelLog { line });
            }
        }
        let now = Snapshot::read(&self.paths);
        match assess(baseline, &now, self.ignored_taint) {
            None => Look::Fine,
            Some(rise) if attribution::is_fault_rise(&rise) => {
                // The kernel writes a report, then sets its taint bit and
                // counts it, and this snapshot may have been read between
                // two of those: let them settle, then judge everything seen.
                std::thread::sleep(SETTLE);
                for record in self.kmsg.read_available() {
                    if let Some(line) = self.matcher.feed(&record) {
                        return Look::Guilty(Unhealthy::KernelLog { line });
                    }
                }
                let now = Snapshot::read(&self.paths);
                let rise = assess(baseline, &now, self.ignored_taint).unwrap_or(rise);
                if !attribution::is_fault_rise(&rise) {
                    return Look::Guilty(rise);
                }
                let report = self.matcher.take_foreign();
                Look::Unattributed { rise, now: Box::new(now), report }
            }
            Some(reason) => Look::Guilty(reason),
        }
    }

    /// Watches for `window`, then runs the custom checks, asking `stop`
    /// every tick: `Some(reason)` ends the watch at once with
    /// [`WatchOutcome::Stopped`]. `progress` is called with the time left
    /// about once a second (pass `&mut |_| {}` to ignore it). From here on
    /// the watcher ignores `opts.ignored_taint`.
    pub fn watch_until(
        &mut self,
        baseline: &Snapshot,
        window: Duration,
        opts: &WatchOptions,
        progress: &mut dyn FnMut(Duration),
        stop: &dyn Fn() -> Option<String>,
    ) -> WatchOutcome {
        let start = Instant::now();
        self.ignored_taint = opts.ignored_taint;
        tracing::info!(
            module = %self.paths.module,
            window = %milspec_format::text::duration(window),
            "probation started"
        );
        let outcome = self.run(baseline, window, opts, start, progress, stop);
        match &outcome {
            WatchOutcome::Healthy { watched, .. } => tracing::info!(
                module = %self.paths.module,
                watched = %milspec_format::text::duration(*watched),
                "probation passed"
            ),
            WatchOutcome::Unhealthy { reason, after } => tracing::warn!(
                module = %self.paths.module,
                kind = reason.kind(),
                after_ms = after.as_millis() as u64,
                "probation failed: {reason}"
            ),
            WatchOutcome::Stopped { reason, .. } => {
                tracing::warn!(module = %self.paths.module, "probation stopped: {reason}")
            }
        }
        outcome
    }

    fn run(
        &mut self,
        baseline: &Snapshot,
        window: Duration,
        opts: &WatchOptions,
        start: Instant,
        progress: &mut dyn FnMut(Duration),
        stop: &dyn Fn() -> Option<String>,
    ) -> WatchOutcome {
        let tick = if opts.tick.is_zero() { DEFAULT_TICK } else { opts.tick };
        let unhealthy = |reason, start: Instant| WatchOutcome::Unhealthy { reason, after: start.elapsed() };
        let mut baseline = baseline.clone();
        let mut until = window;
        let mut extensions = 0;
        let mut rises = Vec::new();
        let mut next_progress = start;
        let mut declared = Scheduled::all(&opts.declared);
        let status_path = self.paths.milspec_status();
        loop {
            for check in &mut declared {
                if let Some(reason) = check.run_if_due(start.elapsed(), &status_path) {
                    return unhealthy(reason, start);
                }
            }
            match self.look(&baseline) {
                Look::Fine => {}
                Look::Guilty(reason) => return unhealthy(reason, start),
                Look::Unattributed { rise, now, report } => {
                    let at = start.elapsed();
                    let (decision, action) = attribution::decide(opts.unattributed, at, window, until, extensions);
                    let noted = UnattributedRise::new(&rise, report.as_deref(), at, action);
                    tracing::warn!(module = %self.paths.module, policy = %opts.unattributed, "fault not attributed to the module: {noted}");
                    match decision {
                        Decision::RollBack => return unhealthy(rise, start),
                        Decision::GoOn { until: extended } => {
                            if let Some(extended) = extended {
                                until = extended;
                                extensions += 1;
                            }
                            baseline = attribution::rebase(&baseline, &now);
                            rises.push(noted);
                            continue;
                        }
                    }
                }
            }
            if let Some(reason) = stop() {
                return WatchOutcome::Stopped { reason, after: start.elapsed() };
            }
            let left = until.saturating_sub(start.elapsed());
            if left.is_zero() {
                break;
            }
            if Instant::now() >= next_progress {
                progress(left);
                next_progress += PROGRESS_EVERY;
            }
            self.kmsg.wait(left.min(tick));
        }
        if let Some(reason) = checks::run_checks(&opts.checks_dir, opts.check_timeout) {
            return unhealthy(reason, start);
        }
        // The checks take time; a fault while they ran still counts.
        match self.look(&baseline) {
            Look::Guilty(reason) => return unhealthy(reason, start),
            Look::Unattributed { rise, .. } if opts.unattributed == Unattributed::Rollback => {
                return unhealthy(rise, start)
            }
            Look::Unattributed { rise, report, .. } => rises.push(UnattributedRise::new(
                &rise,
                report.as_deref(),
                start.elapsed(),
                attribution::RiseAction::Ignored,
            )),
            Look::Fine => {}
        }
        WatchOutcome::Healthy { watched: start.elapsed(), unattributed: rises }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::attribution::RiseAction;
    use std::fs;
    use std::io::Write;
    use std::path::Path;

    const STATUS_OK: &str = "version: 1.0\nstate: ok\nselftest: pass\nmode5_level: 0\nerrors: 0\nloaded_at: 1\n";

    /// A fake kernel tree with a healthy module and a regular-file kmsg.
    fn fake_tree(root: &Path) -> KernelPaths {
        let paths = KernelPaths::under(root, "dell_milspec");
        for file in [paths.milspec_status(), paths.warn_count(), paths.tainted()] {
            fs::create_dir_all(file.parent().unwrap()).unwrap();
        }
        fs::write(paths.milspec_status(), STATUS_OK).unwrap();
        fs::write(paths.warn_count(), "0\n").unwrap();
        fs::write(paths.oops_count(), "0\n").unwrap();
        fs::write(paths.tainted(), "4096\n").unwrap();
        fs::write(&paths.kmsg, "6,1,1,-;old: WARNING: x [dell_milspec]\n").unwrap();
        paths
    }

    fn opts(root: &Path) -> WatchOptions {
        WatchOptions {
            checks_dir: root.join("checks"),
            check_timeout: Duration::from_millis(300),
            ..WatchOptions::default()
        }
    }

    fn later(delay: Duration, f: impl FnOnce() + Send + 'static) -> std::thread::JoinHandle<()> {
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            f();
        })
    }

    const WINDOW: Duration = Duration::from_secs(10);

    /// A healthy fake tree, its baseline and a watcher armed on it.
    struct Rig {
        dir: tempfile::TempDir,
        paths: KernelPaths,
        baseline: Snapshot,
        w: Watcher,
    }

    impl Rig {
        fn new() -> Rig {
            let dir = tempfile::tempdir().unwrap();
            let paths = fake_tree(dir.path());
            let baseline = Snapshot::read(&paths);
            let w = Watcher::arm(&paths).unwrap();
            Rig { dir, paths, baseline, w }
        }

        fn opts(&self) -> WatchOptions {
            opts(self.dir.path())
        }

        /// Watches a window of `window` with `o`, no progress, never stopped.
        fn watch(&mut self, window: Duration, o: &WatchOptions) -> WatchOutcome {
            self.w.watch_until(&self.baseline, window, o, &mut |_| {}, &|| None)
        }
    }

    #[test]
    fn quiet_window_is_healthy_and_reports_progress() {
        let mut r = Rig::new();
        let mut calls = Vec::new();
        let o = r.opts();
        let outcome =
            r.w.watch_until(&r.baseline, Duration::from_millis(500), &o, &mut |left| calls.push(left), &|| None);
        let WatchOutcome::Healthy { watched, .. } = outcome else { panic!("{outcome:?}") };
        assert!(watched >= Duration::from_millis(500), "{watched:?}");
        assert_eq!(calls.len(), 1, "{calls:?}");
    }

    #[test]
    fn warn_count_rising_is_seen_fast_under_rollback() {
        let mut r = Rig::new();
        let counter = r.paths.warn_count();
        let bump = later(Duration::from_millis(200), move || fs::write(counter, "1\n").unwrap());
        let o = WatchOptions { unattributed: Unattributed::Rollback, ..r.opts() };
        let outcome = r.watch(WINDOW, &o);
        bump.join().unwrap();
        let WatchOutcome::Unhealthy { reason, after } = outcome else { panic!("{outcome:?}") };
        assert_eq!(reason, Unhealthy::WarnRose { from: 0, to: 1 });
        assert!(after >= Duration::from_millis(200) && after < WINDOW, "{after:?}");
    }

    /// Appends kernel log records to the fake tree's kmsg.
    fn log(kmsg: &Path, lines: &[&str]) {
        let mut f = fs::OpenOptions::new().append(true).open(kmsg).unwrap();
        for l in lines {
            writeln!(f, "4,9,9,-;{l}").unwrap();
        }
    }

    const OTHER_WARN: [&str; 5] = [
        "------------[ cut here ]------------",
        "WARNING: CPU: 0 PID: 9 at neighbour.c:20 warn_set+0x1a/0x40 [milspec_neighbour]",
        "Modules linked in: milspec_neighbour(OE) dell_milspec(OE)",
        " warn_set+0x1a/0x40 [milspec_neighbour]",
        "---[ end trace 0000000000000000 ]---",
    ];

    /// Another driver WARNs 200 ms into a 600 ms window: the report is
    /// written, then the counter and the W bit rise.
    fn other_driver_warns(paths: &KernelPaths) -> std::thread::JoinHandle<()> {
        let (kmsg, counter, tainted) = (paths.kmsg.clone(), paths.warn_count(), paths.tainted());
        later(Duration::from_millis(200), move || {
            log(&kmsg, &OTHER_WARN);
            fs::write(counter, "1\n").unwrap();
            fs::write(tainted, format!("{}\n", 4096 | (1 << 9))).unwrap();
        })
    }

    #[test]
    fn another_drivers_warn_extends_the_window_by_default() {
        let mut r = Rig::new();
        let warn = other_driver_warns(&r.paths);
        let window = Duration::from_millis(600);
        let outcome = r.watch(window, &r.opts());
        warn.join().unwrap();
        let WatchOutcome::Healthy { watched, unattributed } = outcome else { panic!("{outcome:?}") };
        // One rise (the counter; the W bit is taken in with it), and a
        // whole window watched after it.
        assert_eq!(unattributed.len(), 1, "{unattributed:?}");
        let rise = &unattributed[0];
        assert_eq!((rise.rise.as_str(), rise.action), ("warn_count rose from 0 to 1", RiseAction::Extended));
        assert!(rise.report.as_deref().unwrap().contains("[milspec_neighbour]"), "{rise:?}");
        assert!(watched >= Duration::from_millis(rise.after_ms) + window, "{watched:?} {rise:?}");
    }

    #[test]
    fn another_drivers_warn_is_ignored_or_rolled_back_as_configured() {
        for (policy, healthy) in [(Unattributed::Ignore, true), (Unattributed::Rollback, false)] {
            let mut r = Rig::new();
            let warn = other_driver_warns(&r.paths);
            let window = Duration::from_millis(600);
            let o = WatchOptions { unattributed: policy, ..r.opts() };
            let outcome = r.watch(window, &o);
            warn.join().unwrap();
            match outcome {
                WatchOutcome::Healthy { watched, unattributed } if healthy => {
                    assert_eq!(unattributed[0].action, RiseAction::Ignored, "{unattributed:?}");
                    assert!(watched < window + Duration::from_millis(300), "{watched:?}");
                }
                WatchOutcome::Unhealthy { reason, .. } if !healthy => {
                    assert_eq!(reason, Unhealthy::WarnRose { from: 0, to: 1 })
                }
                other => panic!("{policy}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_warn_naming_the_module_is_guilty_under_every_policy() {
        for policy in [Unattributed::Extend, Unattributed::Ignore, Unattributed::Rollback] {
            let mut r = Rig::new();
            // The counter first, as a reader racing the kernel may see it.
            fs::write(r.paths.warn_count(), "1\n").unwrap();
            log(&r.paths.kmsg, &["WARNING: CPU: 0 PID: 1 at dell-milspec.c:80 milspec_init+0x1a/0x40 [dell_milspec]"]);
            let o = WatchOptions { unattributed: policy, ..r.opts() };
            let outcome = r.watch(WINDOW, &o);
            let WatchOutcome::Unhealthy { reason, .. } = outcome else { panic!("{policy}: {outcome:?}") };
            assert_eq!(reason.kind(), "kmsg", "{policy}: {reason}");
        }
    }

    #[test]
    fn a_rise_with_a_failed_status_is_guilty() {
        let mut r = Rig::new();
        fs::write(r.paths.oops_count(), "1\n").unwrap();
        fs::write(r.paths.milspec_status(), STATUS_OK.replace("state: ok", "state: failed")).unwrap();
        let outcome = r.watch(WINDOW, &r.opts());
        let WatchOutcome::Unhealthy { reason, .. } = outcome else { panic!("{outcome:?}") };
        assert_eq!(reason, Unhealthy::StatusFailed { state: "failed".into() });
    }

    #[test]
    fn a_noisy_neighbour_extends_a_window_at_most_three_times() {
        let mut r = Rig::new();
        let counter = r.paths.warn_count();
        let noise = later(Duration::ZERO, move || {
            for n in 1..=8 {
                std::thread::sleep(Duration::from_millis(150));
                fs::write(&counter, format!("{n}\n")).unwrap();
            }
        });
        let window = Duration::from_millis(200);
        let outcome = r.watch(window, &r.opts());
        noise.join().unwrap();
        let WatchOutcome::Healthy { unattributed, watched } = outcome else { panic!("{outcome:?}") };
        let extended = unattributed.iter().filter(|r| r.action == RiseAction::Extended).count();
        assert_eq!(extended, attribution::MAX_EXTENSIONS as usize, "{unattributed:?}");
        assert!(watched < Duration::from_secs(3), "{watched:?}");
    }

    #[test]
    fn kmsg_warn_record_is_seen() {
        let mut r = Rig::new();
        let kmsg = r.paths.kmsg.clone();
        let append = later(Duration::from_millis(200), move || {
            let mut f = fs::OpenOptions::new().append(true).open(kmsg).unwrap();
            f.write_all(
                b"4,2,2,-;WARNING: CPU: 0 PID: 1 at /build/kmod/dell-milspec.c:80 milspec_init+0x1a/0x40 [dell_milspec]\n",
            )
            .unwrap();
        });
        let outcome = r.watch(WINDOW, &r.opts());
        append.join().unwrap();
        let WatchOutcome::Unhealthy { reason, after } = outcome else { panic!("{outcome:?}") };
        assert_eq!(reason.kind(), "kmsg", "{reason}");
        assert!(reason.to_string().starts_with("kernel log: WARNING: CPU: 0 PID: 1 at"), "{reason}");
        assert!(after < WINDOW, "{after:?}");
    }

    #[test]
    fn kmsg_oops_through_a_fifo_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let paths = fake_tree(dir.path());
        fs::remove_file(&paths.kmsg).unwrap();
        nix::unistd::mkfifo(&paths.kmsg, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let baseline = Snapshot::read(&paths);
        let mut w = Watcher::arm(&paths).unwrap();
        let kmsg = paths.kmsg.clone();
        let writer = later(Duration::from_millis(200), move || {
            let text = fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kmsg-oops.txt")).unwrap();
            let mut f = fs::OpenOptions::new().write(true).open(kmsg).unwrap();
            f.write_all(&text).unwrap();
        });
        let outcome = w.watch_until(&baseline, WINDOW, &opts(dir.path()), &mut |_| {}, &|| None);
        writer.join().unwrap();
        let WatchOutcome::Unhealthy { reason, after } = outcome else { panic!("{outcome:?}") };
        assert!(reason.to_string().contains("BUG: kernel NULL pointer dereference"), "{reason}");
        assert!(after < WINDOW, "{after:?}");
    }

    #[test]
    fn status_vanishing_and_failing() {
        let mut r = Rig::new();
        assert_eq!(r.w.check_now(&r.baseline), None);
        fs::write(r.paths.milspec_status(), STATUS_OK.replace("pass", "fail")).unwrap();
        assert_eq!(r.w.check_now(&r.baseline), Some(Unhealthy::SelftestFailed));
        fs::remove_file(r.paths.milspec_status()).unwrap();
        assert_eq!(r.w.check_now(&r.baseline), Some(Unhealthy::StatusMissing));
    }

    #[test]
    fn taint_added_after_load_is_seen() {
        let mut r = Rig::new();
        // O and E from loading the module are fine; D is not.
        fs::write(r.paths.tainted(), format!("{}\n", (1 << 12) | (1 << 13))).unwrap();
        assert_eq!(r.w.check_now(&r.baseline), None);
        fs::write(r.paths.tainted(), format!("{}\n", (1 << 7) | (1 << 12))).unwrap();
        let bad = r.w.check_now(&r.baseline).unwrap();
        assert_eq!(bad.to_string(), "taint bits added: D (bit 7)");
        // With nothing ignored, E counts as well (O was set before, by the old module).
        fs::write(r.paths.tainted(), format!("{}\n", (1 << 7) | (1 << 12) | (1 << 13))).unwrap();
        let mut w = r.w.with_ignored_taint(0);
        assert_eq!(w.check_now(&r.baseline).unwrap().to_string(), "taint bits added: D (bit 7), E (bit 13)");
    }

    #[test]
    fn required_check_failing_at_the_end() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let paths = fake_tree(dir.path());
        let o = opts(dir.path());
        let req = o.checks_dir.join("required.d");
        fs::create_dir_all(&req).unwrap();
        fs::write(req.join("10-node"), "#!/bin/sh\necho 'no device node' >&2\nexit 1\n").unwrap();
        fs::set_permissions(req.join("10-node"), fs::Permissions::from_mode(0o755)).unwrap();
        let baseline = Snapshot::read(&paths);
        let mut w = Watcher::arm(&paths).unwrap();
        let outcome = w.watch_until(&baseline, Duration::from_millis(200), &o, &mut |_| {}, &|| None);
        let WatchOutcome::Unhealthy { reason, .. } = outcome else { panic!("{outcome:?}") };
        assert_eq!(reason.to_string(), "health check required.d/10-node failed: exit status 1: no device node");
    }

    #[test]
    fn declared_checks_run_through_the_window_and_end_it_early() {
        use crate::health::declared::parse;
        let dir = tempfile::tempdir().unwrap();
        let paths = fake_tree(dir.path());
        let baseline = Snapshot::read(&paths);
        // A port that was open and is closed now.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let tcp = format!(
            "type = \"tcp\"\naddress = \"{closed}\"\ninterval = \"200ms\"\ntimeout = \"100ms\"\nfailures = 2\n"
        );
        let wanted = format!("{tcp}required = false\n");
        let errors =
            "type = \"status\"\nkey = \"errors\"\nbelow = 1\ninterval = \"100ms\"\ntimeout = \"100ms\"\nfailures = 1\n";

        // A wanted check failing is only logged: the window runs to its end.
        let mut w = Watcher::arm(&paths).unwrap();
        let o = WatchOptions { declared: vec![parse("port", &wanted).unwrap()], ..opts(dir.path()) };
        let outcome = w.watch_until(&baseline, Duration::from_millis(700), &o, &mut |_| {}, &|| None);
        assert!(matches!(outcome, WatchOutcome::Healthy { .. }), "{outcome:?}");

        // Required: two failures in a row, 200 ms apart, end a 10 s window.
        let mut w = Watcher::arm(&paths).unwrap();
        let o = WatchOptions { declared: vec![parse("port", &tcp).unwrap()], ..opts(dir.path()) };
        let outcome = w.watch_until(&baseline, WINDOW, &o, &mut |_| {}, &|| None);
        let WatchOutcome::Unhealthy { reason, after } = outcome else { panic!("{outcome:?}") };
        assert!(after >= Duration::from_millis(400) && after < Duration::from_secs(2), "{after:?}");
        let text = reason.to_string();
        assert!(text.starts_with("health check health.d/port.toml failed: cannot connect to 127.0.0.1:"), "{text}");
        assert!(text.ends_with("(2 of 2 failures in a row)"), "{text}");

        // A status key going bad mid-window.
        let mut w = Watcher::arm(&paths).unwrap();
        let o = WatchOptions { declared: vec![parse("errors", errors).unwrap()], ..opts(dir.path()) };
        let status = paths.milspec_status();
        let bad = later(Duration::from_millis(300), move || {
            fs::write(status, STATUS_OK.replace("errors: 0", "errors: 3")).unwrap()
        });
        let outcome = w.watch_until(&baseline, WINDOW, &o, &mut |_| {}, &|| None);
        bad.join().unwrap();
        let WatchOutcome::Unhealthy { reason, after } = outcome else { panic!("{outcome:?}") };
        assert_eq!(
            reason.to_string(),
            "health check health.d/errors.toml failed: errors is 3, want below 1 (1 of 1 failures in a row)"
        );
        assert!(after < Duration::from_secs(1), "{after:?}");
    }

    #[test]
    fn options_from_config() {
        let h =
            HealthConfig { check_timeout: Duration::from_secs(3), checks_dir: "/x".into(), ..HealthConfig::default() };
        let o = WatchOptions::from(&h);
        assert_eq!((o.check_timeout, o.checks_dir.as_path()), (Duration::from_secs(3), Path::new("/x")));
        assert_eq!((o.ignored_taint, o.tick), (DEFAULT_IGNORED_TAINT, DEFAULT_TICK));
    }

    #[test]
    fn arm_names_a_missing_kmsg() {
        let dir = tempfile::tempdir().unwrap();
        let paths = KernelPaths::under(dir.path(), "dell_milspec");
        let e = Watcher::arm(&paths).unwrap_err().to_string();
        assert!(e.contains("kernel log") && e.contains("kmsg"), "{e}");
    }
}
