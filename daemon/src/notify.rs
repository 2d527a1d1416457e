//! The daemon's side of the systemd service protocol (`sd_notify(3)`):
//! `READY=1` once recovery is done and the bus name is owned, `STATUS=`
//! text on every state change, `WATCHDOG=1` keep-alives while the engine
//! thread makes progress, `STOPPING=1` on shutdown.
//!
//! Outside systemd (`NOTIFY_SOCKET` unset) every call is a no-op. The
//! texts and the watchdog decision are pure functions, tested here; the
//! loop that drives them is in `milspecd run`.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

use crate::config::Config;
use crate::worker::{DaemonState, Published};

/// Longest `STATUS=` text sent; longer ones are cut (systemd shows one line).
pub const MAX_STATUS: usize = 400;
/// Slack added to the longest legitimate step when judging a stall.
const STALL_MARGIN: Duration = Duration::from_secs(60);
/// Longest backoff between two attempts of one fetch (see `mirror::fetch`).
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Fetches in one poll: the index, then the package.
const FETCHES_PER_POLL: u32 = 2;

/// Sends notifications to the service manager, if there is one.
#[derive(Debug, Clone)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    /// Enabled when systemd passed a `NOTIFY_SOCKET`.
    pub fn from_env() -> Self {
        Notifier { enabled: std::env::var_os("NOTIFY_SOCKET").is_some() }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        // Lost notifications are not fatal: systemd times out or the next
        // status replaces this one.
        if let Err(e) = sd_notify::notify(states) {
            debug!("sd_notify failed: {e}");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(&one_line(status))]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(&one_line(status))]);
    }

    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// Asks for more time to start (a trial resumed at startup may run
    /// for its whole probation window before the daemon is ready).
    pub fn extend_timeout(&self, by: Duration) {
        let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
        self.send(&[NotifyState::ExtendTimeoutUsec(usec)]);
    }

    pub fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(&one_line(status))]);
    }
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC` (for this
/// process, per `WATCHDOG_PID`), as `sd_watchdog_enabled(3)` advises.
/// `None` when systemd asked for no watchdog.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero()).map(|d| d / 2)
}

/// The longest the engine thread may legitimately go without a sign of
/// progress while busy: one poll's fetches with every retry and backoff
/// (`[source]`), or one probation tick running custom checks, or an
/// unload; plus a margin. Longer than this, the engine is taken as hung.
pub fn stall_limit(cfg: &Config) -> Duration {
    let fetch = cfg.source.as_ref().map_or(Duration::ZERO, |s| {
        (s.timeout + MAX_BACKOFF).saturating_mul(s.attempts.max(1)).saturating_mul(FETCHES_PER_POLL)
    });
    let health = cfg.health.check_timeout.saturating_mul(2) + cfg.health.unload_timeout;
    fetch.max(health) + STALL_MARGIN
}

/// Whether the engine thread counts as alive and responsive: idle (it is
/// waiting on its queue) or busy with a recent sign of progress.
pub fn engine_responsive(busy: bool, since_beat: Duration, stall_limit: Duration) -> bool {
    !busy || since_beat <= stall_limit
}

/// What the daemon is doing, in one line for `systemctl status`.
/// `trial_left` is the probation time left when known; `bus` is false when
/// the daemon could not take its name on the system bus.
pub fn status_text(p: &Published, trial_left: Option<Duration>, bus: bool) -> String {
    let or = |s: &str, none: &str| if s.is_empty() { none.to_string() } else { s.to_string() };
    let trial = or(&p.trial_version, "a new version");
    let mut text = match p.state {
        DaemonState::Idle if p.committed_version.is_empty() => "idle; nothing committed".to_string(),
        DaemonState::Idle => format!("idle; committed {} in slot {}", p.committed_version, or(&p.active_slot, "?")),
        DaemonState::Checking => "checking mirror".to_string(),
        DaemonState::Downloading => format!("downloading {trial}"),
        DaemonState::Staged => format!("staged {trial}; swapping"),
        DaemonState::Swapping => format!("swapping to {trial}"),
        DaemonState::Trial => match trial_left {
            Some(left) => format!("trial of {trial}, {} s left", left.as_secs()),
            None => format!("trial of {trial}"),
        },
        DaemonState::RollingBack => format!("rolling back {trial}"),
        DaemonState::Error => format!("error: {}", or(&p.last_error, "unknown; see the journal")),
    };
    if p.paused {
        text.push_str("; polling paused");
    }
    if p.reboot_required {
        text.push_str("; REBOOT REQUIRED");
    }
    if !bus {
        text.push_str("; no system bus: local control unavailable");
    }
    one_line(&text)
}

/// One line, at most [`MAX_STATUS`] bytes (cut on a character boundary).
fn one_line(s: &str) -> String {
    let mut out: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if out.len() > MAX_STATUS {
        let mut end = MAX_STATUS - 3;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SourceConfig;

    fn published(state: DaemonState) -> Published {
        Published {
            state,
            committed_version: "1.1.0".into(),
            active_slot: "a".into(),
            trial_version: "1.2.0".into(),
            ..Published::default()
        }
    }

    #[test]
    fn status_texts() {
        let idle = Published { trial_version: String::new(), ..published(DaemonState::Idle) };
        assert_eq!(status_text(&idle, None, true), "idle; committed 1.1.0 in slot a");
        assert_eq!(status_text(&Published::default(), None, true), "idle; nothing committed");
        let trial = published(DaemonState::Trial);
        assert_eq!(status_text(&trial, Some(Duration::from_millis(12_900)), true), "trial of 1.2.0, 12 s left");
        assert_eq!(status_text(&trial, None, true), "trial of 1.2.0");
        assert_eq!(status_text(&published(DaemonState::RollingBack), None, true), "rolling back 1.2.0");
        assert_eq!(status_text(&published(DaemonState::Checking), None, true), "checking mirror");
        assert_eq!(status_text(&published(DaemonState::Swapping), None, true), "swapping to 1.2.0");
        let err = Published { last_error: "mirror: connection refused".into(), ..published(DaemonState::Error) };
        assert_eq!(status_text(&err, None, true), "error: mirror: connection refused");
    }

    #[test]
    fn status_flags_and_no_bus() {
        let p = Published { paused: true, reboot_required: true, ..published(DaemonState::Idle) };
        assert_eq!(
            status_text(&p, None, false),
            "idle; committed 1.1.0 in slot a; polling paused; REBOOT REQUIRED; no system bus: local control unavailable"
        );
    }

    #[test]
    fn status_is_one_bounded_line() {
        let p = Published { last_error: format!("line one\nline two {}", "é".repeat(500)), ..Published::default() };
        let p = Published { state: DaemonState::Error, ..p };
        let t = status_text(&p, None, true);
        assert!(!t.contains('\n'), "{t}");
        assert!(t.starts_with("error: line one line two é"), "{t}");
        assert!(t.len() <= MAX_STATUS && t.ends_with("..."), "{} bytes", t.len());
    }

    #[test]
    fn stall_limit_covers_the_longest_step() {
        let mut cfg = Config::default();
        // No mirror: the health steps bound it: 2 x 10 s + 5 s + 60 s.
        assert_eq!(stall_limit(&cfg), Duration::from_secs(85));
        cfg.source = Some(SourceConfig { timeout: Duration::from_secs(30), attempts: 3, ..SourceConfig::default() });
        // 2 fetches x 3 attempts x (30 s + 10 s backoff) + 60 s.
        assert_eq!(stall_limit(&cfg), Duration::from_secs(300));
    }

    #[test]
    fn responsiveness() {
        let limit = Duration::from_secs(60);
        assert!(engine_responsive(false, Duration::from_secs(3600), limit));
        assert!(engine_responsive(true, Duration::from_secs(59), limit));
        assert!(!engine_responsive(true, Duration::from_secs(61), limit));
    }
}
