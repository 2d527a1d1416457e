//! The kernel's fault counters, taint mask and the module's status, read at
//! one moment, and the pure comparison of such a snapshot with a baseline.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::status::{self, ModuleState, ModuleStatus, Selftest, MAX_STATUS};
use super::Unhealthy;
use crate::kernel_paths::KernelPaths;

/// Largest counter or taint file read; they hold one decimal number.
const MAX_NUMBER_FILE: u64 = 64;

/// What the kernel and the module say about health at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// `/sys/kernel/oops_count`; `None` if the kernel does not have it.
    pub oops_count: Option<u64>,
    /// `/sys/kernel/warn_count`; `None` if the kernel does not have it.
    pub warn_count: Option<u64>,
    /// `/proc/sys/kernel/tainted` (0 if unreadable).
    pub taint: u64,
    /// The module's status; `None` when the file is missing or unreadable.
    pub status: Option<ModuleStatus>,
    /// Why the status file exists but could not be read or parsed.
    pub status_error: Option<String>,
}

impl Snapshot {
    /// Reads every source. Never fails: what cannot be read is recorded as
    /// absent (counters, status) or zero (taint).
    pub fn read(paths: &KernelPaths) -> Snapshot {
        let (status, status_error) = match read_status(&paths.milspec_status()) {
            Ok(status) => (status, None),
            Err(why) => (None, Some(why)),
        };
        Snapshot {
            oops_count: read_number(&paths.oops_count()),
            warn_count: read_number(&paths.warn_count()),
            taint: read_number(&paths.tainted()).unwrap_or(0),
            status,
            status_error,
        }
    }
}

/// Compares `now` with `baseline` (taken before the swap); the first rule
/// broken, if any. Taint bits in `ignored_taint` never count.
pub fn assess(baseline: &Snapshot, now: &Snapshot, ignored_taint: u64) -> Option<Unhealthy> {
    if let (Some(from), Some(to)) = (baseline.oops_count, now.oops_count) {
        if to > from {
            return Some(Unhealthy::OopsRose { from, to });
        }
    }
    if let (Some(from), Some(to)) = (baseline.warn_count, now.warn_count) {
        if to > from {
            return Some(Unhealthy::WarnRose { from, to });
        }
    }
    let added = now.taint & !baseline.taint & !ignored_taint;
    if added != 0 {
        return Some(Unhealthy::taint_added(added));
    }
    assess_status(now)
}

/// The module's own verdict on itself.
fn assess_status(now: &Snapshot) -> Option<Unhealthy> {
    if let Some(why) = &now.status_error {
        return Some(Unhealthy::StatusUnreadable { why: why.clone() });
    }
    let Some(status) = &now.status else {
        return Some(Unhealthy::StatusMissing);
    };
    if status.state == ModuleState::Failed {
        return Some(Unhealthy::StatusFailed { state: status.state.to_string() });
    }
    if status.selftest == Selftest::Fail {
        return Some(Unhealthy::SelftestFailed);
    }
    None
}

/// Reads one decimal number; `None` if the file is missing or holds no number.
fn read_number(path: &Path) -> Option<u64> {
    let text = read_bounded(path, MAX_NUMBER_FILE).ok()?;
    match text.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => {
            tracing::debug!(path = %path.display(), "not a number: {:?}", text.trim());
            None
        }
    }
}

/// Reads and parses the status file: `Ok(None)` if it does not exist.
fn read_status(path: &Path) -> Result<Option<ModuleStatus>, String> {
    let text = match read_bounded(path, MAX_STATUS as u64 + 1) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    status::parse(&text).map(Some).map_err(|e| format!("{}: {e}", path.display()))
}

/// Reads at most `max` bytes of a file as text.
fn read_bounded(path: &Path, max: u64) -> io::Result<String> {
    let mut text = String::new();
    File::open(path)?.take(max).read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::DEFAULT_IGNORED_TAINT;

    const STATUS_OK: &str = "version: 1.0\nstate: ok\nselftest: pass\nmode5_level: 0\nerrors: 0\nloaded_at: 1\n";

    fn healthy() -> Snapshot {
        Snapshot {
            oops_count: Some(0),
            warn_count: Some(1),
            taint: 0,
            status: Some(status::parse(STATUS_OK).unwrap()),
            status_error: None,
        }
    }

    fn check(now: impl FnOnce(&mut Snapshot)) -> Option<Unhealthy> {
        let mut s = healthy();
        now(&mut s);
        assess(&healthy(), &s, DEFAULT_IGNORED_TAINT)
    }

    #[test]
    fn unchanged_is_healthy() {
        assert_eq!(check(|_| {}), None);
    }

    #[test]
    fn counters_rising() {
        assert_eq!(check(|s| s.oops_count = Some(1)), Some(Unhealthy::OopsRose { from: 0, to: 1 }));
        assert_eq!(check(|s| s.warn_count = Some(3)), Some(Unhealthy::WarnRose { from: 1, to: 3 }));
    }

    #[test]
    fn missing_counters_are_no_alarm() {
        let mut base = healthy();
        base.oops_count = None;
        base.warn_count = None;
        let mut now = healthy();
        now.oops_count = Some(5);
        now.warn_count = Some(5);
        assert_eq!(assess(&base, &now, DEFAULT_IGNORED_TAINT), None);
        now.oops_count = None;
        now.warn_count = None;
        assert_eq!(assess(&healthy(), &now, DEFAULT_IGNORED_TAINT), None);
    }

    #[test]
    fn taint_bits_added() {
        // O and E come with loading the module itself.
        assert_eq!(check(|s| s.taint = DEFAULT_IGNORED_TAINT), None);
        assert_eq!(check(|s| s.taint = DEFAULT_IGNORED_TAINT | (1 << 9)), Some(Unhealthy::taint_added(1 << 9)));
        // A bit already set before the swap is not news.
        let mut base = healthy();
        base.taint = 1 << 9;
        let mut now = healthy();
        now.taint = (1 << 9) | (1 << 12);
        assert_eq!(assess(&base, &now, DEFAULT_IGNORED_TAINT), None);
        // With nothing ignored, O counts too.
        assert_eq!(assess(&base, &now, 0), Some(Unhealthy::taint_added(1 << 12)));
    }

    #[test]
    fn status_rules() {
        let failed = status::parse(&STATUS_OK.replace("state: ok", "state: failed")).unwrap();
        assert_eq!(check(|s| s.status = Some(failed)), Some(Unhealthy::StatusFailed { state: "failed".into() }));
        let selftest = status::parse(&STATUS_OK.replace("pass", "fail")).unwrap();
        assert_eq!(check(|s| s.status = Some(selftest)), Some(Unhealthy::SelftestFailed));
        let degraded = status::parse(&STATUS_OK.replace("state: ok", "state: degraded")).unwrap();
        assert_eq!(check(|s| s.status = Some(degraded)), None);
        assert_eq!(check(|s| s.status = None), Some(Unhealthy::StatusMissing));
        assert_eq!(
            check(|s| {
                s.status = None;
                s.status_error = Some("bad".into());
            }),
            Some(Unhealthy::StatusUnreadable { why: "bad".into() })
        );
    }

    #[test]
    fn reads_a_fake_tree() {
        let dir = tempfile::tempdir().unwrap();
        let paths = KernelPaths::under(dir.path(), "dell_milspec");
        // Nothing there yet: no counters, no status, no error.
        assert_eq!(Snapshot::read(&paths), Snapshot::default());

        std::fs::create_dir_all(paths.milspec_dir()).unwrap();
        std::fs::create_dir_all(paths.tainted().parent().unwrap()).unwrap();
        std::fs::create_dir_all(paths.warn_count().parent().unwrap()).unwrap();
        std::fs::write(paths.milspec_status(), STATUS_OK).unwrap();
        std::fs::write(paths.warn_count(), "1\n").unwrap();
        std::fs::write(paths.oops_count(), "0\n").unwrap();
        std::fs::write(paths.tainted(), "0\n").unwrap();
        assert_eq!(Snapshot::read(&paths), healthy());

        std::fs::write(paths.milspec_status(), "garbage\n").unwrap();
        std::fs::write(paths.oops_count(), "lots\n").unwrap();
        let s = Snapshot::read(&paths);
        assert_eq!((s.status, s.oops_count), (None, None));
        let why = s.status_error.unwrap();
        assert!(why.contains("proc/milspec/status") && why.contains("line 1"), "{why}");
    }
}
