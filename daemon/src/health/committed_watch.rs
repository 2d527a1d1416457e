//! Looks at the committed module between actions, at a low rate: the
//! kernel log records written since the last look, and the module's own
//! status. Reads only; what a fault does is [`super::after_commit`].

use std::io;

use super::after_commit::CommittedFault;
use super::kmsg::{FaultMatcher, KmsgReader};
use super::snapshot::Snapshot;
use crate::kernel_paths::KernelPaths;

/// Batches of kernel log records read by one look at most (each is
/// bounded by the reader): a log storm cannot hold the engine thread.
const MAX_BATCHES: usize = 16;

/// The loaded module as its status names it (`loaded_at`, boot-time ns;
/// `None`: not loaded, or its status unreadable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loaded(Option<u64>);

/// The reader and matcher kept from one look to the next.
#[derive(Debug)]
pub struct CommittedWatch {
    paths: KernelPaths,
    kmsg: KmsgReader,
    matcher: FaultMatcher,
    /// The module's status said failed at the last look: a failed status
    /// is reported once, when it turns failed, not at every look.
    was_failed: bool,
}

impl CommittedWatch {
    /// Starts watching from now on: what the kernel logged before is a
    /// trial's (judged by it) or older than this daemon.
    pub fn arm(paths: &KernelPaths) -> io::Result<CommittedWatch> {
        let kmsg = KmsgReader::open_at_end(&paths.kmsg)?;
        let was_failed = Self::status_failed(paths).is_some();
        Ok(CommittedWatch { paths: paths.clone(), kmsg, matcher: FaultMatcher::new(&paths.module), was_failed })
    }

    /// Skips what was logged since the last look (an action just judged
    /// it, or swapped the module) and starts again from now.
    pub fn rearm(&mut self) -> io::Result<()> {
        *self = Self::arm(&self.paths)?;
        Ok(())
    }

    /// Which module is loaded now, to tell after an action whether it
    /// loaded, unloaded or swapped it.
    pub fn loaded(&self) -> Loaded {
        Loaded(Snapshot::read(&self.paths).status.map(|s| s.loaded_at))
    }

    /// After an action: when it loaded, unloaded or swapped the module,
    /// what the kernel logged meanwhile was the action's (a trial judged
    /// it), so the watch starts again from now; otherwise (a poll, a
    /// refused install) it goes on from its last look, and a fault the
    /// committed module logged during the action is still seen.
    pub fn after_action(&mut self, before: Loaded) -> io::Result<()> {
        if self.loaded() == before {
            return Ok(());
        }
        self.rearm()
    }

    /// Reads what is new. `Some` when a kernel log report names the module
    /// or its status turned failed since the last look.
    pub fn look(&mut self) -> Option<CommittedFault> {
        let mut fault: Option<CommittedFault> = None;
        let mut note = |reason: String| match &mut fault {
            None => fault = Some(CommittedFault { reason, more: 0 }),
            Some(f) => f.more = f.more.saturating_add(1),
        };
        for _ in 0..MAX_BATCHES {
            let records = self.kmsg.read_available();
            if records.is_empty() {
                break;
            }
            for r in &records {
                if let Some(reason) = self.matcher.feed(r) {
                    note(reason);
                }
            }
        }
        let failed = Self::status_failed(&self.paths);
        if let (Some(why), false) = (&failed, self.was_failed) {
            note(why.clone());
        }
        self.was_failed = failed.is_some();
        fault
    }

    /// What the module's status says, when it says it failed.
    fn status_failed(paths: &KernelPaths) -> Option<String> {
        let status = Snapshot::read(paths).status?;
        let selftest = status.value("selftest").unwrap_or_default();
        status.is_failed().then(|| format!("the module's status says state {}, selftest {selftest}", status.state))
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{self, OpenOptions};
    use std::io::Write;
    use std::path::Path;

    use super::*;

    const OK: &str = "version: 1.0\nstate: ok\nselftest: pass\nmode5_level: 0\nerrors: 0\nloaded_at: 1\n";

    fn setup(dir: &Path) -> KernelPaths {
        let paths = KernelPaths::under(dir, "dell_milspec");
        fs::create_dir_all(paths.proc.join("milspec")).unwrap();
        fs::write(paths.milspec_status(), OK).unwrap();
        fs::write(&paths.kmsg, "6,1,1000,-;booted\n").unwrap();
        paths
    }

    fn log(paths: &KernelPaths, lines: &[&str]) {
        let mut f = OpenOptions::new().append(true).open(&paths.kmsg).unwrap();
        for (i, l) in lines.iter().enumerate() {
            writeln!(f, "4,{},{},-;{l}", 100 + i, 2_000_000 + i).unwrap();
        }
    }

    const NAMED: [&str; 4] = [
        "WARNING: CPU: 0 PID: 1 at drivers/x.c:1 f+0x1/0x2",
        "Call Trace:",
        " f+0x1/0x2 [dell_milspec]",
        "---[ end trace 0000000000000000 ]---",
    ];
    const ELSEWHERE: [&str; 3] =
        ["WARNING: CPU: 0 PID: 1 at drivers/y.c:1 g+0x1/0x2", "Modules linked in: dell_milspec", " g+0x1/0x2 [other]"];

    #[test]
    fn a_report_naming_the_module_is_seen_once() {
        let dir = tempfile::tempdir().unwrap();
        let paths = setup(dir.path());
        let mut w = CommittedWatch::arm(&paths).unwrap();
        assert_eq!(w.look(), None);
        log(&paths, &NAMED);
        let f = w.look().expect("a fault");
        assert!(f.reason.contains("[dell_milspec]"), "{f}");
        assert_eq!(f.more, 0);
        assert_eq!(w.look(), None, "reported once");
    }

    #[test]
    fn another_drivers_report_and_what_came_before_arming_are_not_faults() {
        let dir = tempfile::tempdir().unwrap();
        let paths = setup(dir.path());
        log(&paths, &NAMED);
        let mut w = CommittedWatch::arm(&paths).unwrap();
        log(&paths, &ELSEWHERE);
        assert_eq!(w.look(), None);
    }

    #[test]
    fn rearming_skips_what_an_action_already_judged() {
        let dir = tempfile::tempdir().unwrap();
        let paths = setup(dir.path());
        let mut w = CommittedWatch::arm(&paths).unwrap();
        log(&paths, &NAMED);
        w.rearm().unwrap();
        assert_eq!(w.look(), None);
        log(&paths, &NAMED);
        log(&paths, &NAMED);
        assert_eq!(w.look().map(|f| f.more), Some(1));
    }

    #[test]
    fn an_action_that_did_not_touch_the_module_keeps_what_it_logged() {
        let dir = tempfile::tempdir().unwrap();
        let paths = setup(dir.path());
        let mut w = CommittedWatch::arm(&paths).unwrap();
        let before = w.loaded();
        log(&paths, &NAMED);
        w.after_action(before).unwrap();
        assert!(w.look().is_some(), "a poll does not hide the committed module's fault");
        let before = w.loaded();
        log(&paths, &NAMED);
        fs::write(paths.milspec_status(), OK.replace("loaded_at: 1", "loaded_at: 2")).unwrap();
        w.after_action(before).unwrap();
        assert_eq!(w.look(), None, "a swap's own log was the trial's to judge");
    }

    #[test]
    fn a_failed_status_is_reported_when_it_turns_failed() {
        let dir = tempfile::tempdir().unwrap();
        let paths = setup(dir.path());
        let mut w = CommittedWatch::arm(&paths).unwrap();
        fs::write(paths.milspec_status(), OK.replace("state: ok", "state: failed")).unwrap();
        let f = w.look().expect("a fault");
        assert!(f.reason.contains("state failed"), "{f}");
        assert_eq!(w.look(), None, "still failed: not again");
        fs::write(paths.milspec_status(), OK).unwrap();
        assert_eq!(w.look(), None);
        fs::write(paths.milspec_status(), OK.replace("selftest: pass", "selftest: fail")).unwrap();
        assert!(w.look().is_some(), "failed again");
    }

    #[test]
    fn a_module_not_loaded_is_no_fault() {
        let dir = tempfile::tempdir().unwrap();
        let paths = setup(dir.path());
        let mut w = CommittedWatch::arm(&paths).unwrap();
        fs::remove_file(paths.milspec_status()).unwrap();
        assert_eq!(w.look(), None);
    }
}
