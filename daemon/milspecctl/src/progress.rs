//! Progress a person can follow while `install`, `check` or `rollback`
//! waits: the package's download and the probation countdown. On a
//! terminal one line is redrawn in place; otherwise plain lines, a few per
//! step (every quarter of a download, every 10 s of probation), so a log
//! stays short. Shared by the main thread and the signal reader.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use milspec_format::text::duration;

/// Plain-line countdown step.
const COUNTDOWN_STEP: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Progress {
    tty: bool,
    inner: Mutex<Shown>,
}

/// What was last shown.
#[derive(Debug, Default)]
struct Shown {
    /// A redrawn line is on screen (it must be ended before other text).
    open: bool,
    /// Last download quarter printed as a plain line (0..=4), per version.
    quarter: Option<(String, u64)>,
    /// Last countdown step printed as a plain line.
    step: Option<u64>,
}

impl Progress {
    /// `tty`: redraw one line in place.
    pub fn new(tty: bool) -> Self {
        Progress { tty, inner: Mutex::new(Shown::default()) }
    }

    /// For stdout as it is (a terminal or not).
    pub fn for_stdout() -> Self {
        use std::io::IsTerminal;
        Progress::new(std::io::stdout().is_terminal())
    }

    fn shown(&self) -> std::sync::MutexGuard<'_, Shown> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A whole line of other text (ends a redrawn line first).
    pub fn line(&self, text: &str) {
        let mut s = self.shown();
        let mut out = std::io::stdout().lock();
        if s.open {
            let _ = write!(out, "\r\x1b[K");
            s.open = false;
        }
        let _ = writeln!(out, "{text}");
    }

    /// `received` of `total` bytes of `version`'s package.
    pub fn download(&self, version: &str, received: u64, total: u64) {
        let text = download_text(version, received, total);
        if self.tty {
            self.redraw(&text, received >= total);
            return;
        }
        let q = quarter(received, total);
        let mut s = self.shown();
        if s.quarter.as_ref().is_some_and(|(v, last)| v == version && *last >= q) {
            return;
        }
        s.quarter = Some((version.to_string(), q));
        drop(s);
        self.line(&text);
    }

    /// `left` of the probation window.
    pub fn countdown(&self, version: &str, left: Duration) {
        let text = format!("  probation of {version}: {} left", countdown_text(left));
        if self.tty {
            self.redraw(&text, false);
            return;
        }
        let step = left.as_secs() / COUNTDOWN_STEP.as_secs();
        let mut s = self.shown();
        if s.step.is_some_and(|last| last <= step) {
            return;
        }
        s.step = Some(step);
        drop(s);
        self.line(&text);
    }

    fn redraw(&self, text: &str, done: bool) {
        let mut s = self.shown();
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r\x1b[K{text}");
        if done {
            let _ = writeln!(out);
        }
        let _ = out.flush();
        s.open = !done;
    }
}

/// Whole seconds left, as a person reads them (`25 s`, `2 min 5 s`).
fn countdown_text(left: Duration) -> String {
    if left < Duration::from_secs(1) {
        "under 1 s".into()
    } else {
        duration(Duration::from_secs(left.as_secs())).replace(".0 s", " s")
    }
}

/// `  downloading 1.2.0: 45% (1.2 MB of 2.7 MB)`.
pub fn download_text(version: &str, received: u64, total: u64) -> String {
    let pct = (received.min(total) * 100).checked_div(total).unwrap_or(100);
    format!("  downloading {version}: {pct}% ({} of {})", megabytes(received), megabytes(total))
}

fn megabytes(n: u64) -> String {
    if n < 1_000_000 {
        format!("{} kB", n.div_ceil(1000))
    } else {
        format!("{}.{} MB", n / 1_000_000, n % 1_000_000 / 100_000)
    }
}

/// Which quarter of the download `received` is in (0 at the start, 4 done).
fn quarter(received: u64, total: u64) -> u64 {
    if total == 0 || received >= total {
        4
    } else {
        received * 4 / total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn download_lines_read_well() {
        assert_eq!(download_text("1.2.0", 0, 2_700_000), "  downloading 1.2.0: 0% (0 kB of 2.7 MB)");
        assert_eq!(download_text("1.2.0", 1_215_000, 2_700_000), "  downloading 1.2.0: 45% (1.2 MB of 2.7 MB)");
        assert_eq!(download_text("1.2.0", 512, 512), "  downloading 1.2.0: 100% (1 kB of 1 kB)");
    }

    #[test]
    fn the_countdown_is_in_whole_seconds() {
        assert_eq!(countdown_text(Duration::from_millis(400)), "under 1 s");
        assert_eq!(countdown_text(Duration::from_millis(25_900)), "25 s");
        assert_eq!(countdown_text(Duration::from_secs(125)), "2 min 5 s");
    }

    #[test]
    fn plain_lines_come_a_quarter_at_a_time() {
        let q: Vec<u64> = [0, 10, 24, 25, 60, 99, 100].iter().map(|r| quarter(*r, 100)).collect();
        assert_eq!(q, [0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(quarter(0, 0), 4);
    }
}
