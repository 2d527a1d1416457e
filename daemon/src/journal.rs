//! Logging for the daemon: straight to journald when systemd connected
//! stderr to the journal, plain text on stderr otherwise; and the stable
//! `MESSAGE_ID`s of the events an operator or a monitor looks for.
//!
//! An event carries its id as the field `message_id`; the journald layer
//! is built without a field prefix, so the field arrives as the journal
//! field `MESSAGE_ID` and `journalctl MESSAGE_ID=...` finds it. The ids and
//! what to do about each event are described in `systemd/milspecd.catalog`.

use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use milspec_format::text::{sanitize, sanitize_to};

use tracing::{info, warn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::notice::Notice;

/// A package was verified and staged; its swap begins.
pub const INSTALL_STARTED: &str = "39c9427969954e4e8db68bf4a00b7310";
/// The new module is live and on probation.
pub const SWAPPED: &str = "b425e5aac17c489da2f2c95136c91323";
/// The new module passed probation and is the known-good one now.
pub const COMMITTED: &str = "97ab94505dc440ccb3b41f4f8f7a17c2";
/// A trial failed (or was stopped) and the old module is back.
pub const ROLLED_BACK: &str = "282cfe861371462485207fdb47e3ab92";
/// Startup recovery brought the state and the live kernel together.
pub const RECOVERY: &str = "1165e1fe67544f9388bd35c41727417b";
/// The module was loaded or removed behind the daemon's back.
pub const DRIFT: &str = "1eb05a39379a4706bb1c5ecafa6daa10";
/// An install was refused before any swap, or an action failed.
pub const INSTALL_FAILED: &str = "c54eacf4d68e42fc91068a04c66fc5c1";

/// The committed version has no build for a kernel: the running one (nothing
/// loaded) or one just installed (nothing ready for its first boot).
pub const NO_BUILD: &str = "ec2095c7ed4a49969929182fe7633e92";
/// A build of the committed version for another kernel was added to its slot.
pub const BUILD_ADDED: &str = "a27a11028b0047159bc93c419749072d";

/// A fault naming the committed module was seen after its probation.
pub const COMMITTED_FAULT: &str = "4a84de26ffd64200babd17c78c2d56b2";

/// A record was appended to the hash-chained history; its fields
/// `MILSPEC_RECORD_N`, `MILSPEC_RECORD_HASH` and `MILSPEC_RECORD_PREV`
/// anchor the chain in a forwarded journal.
pub const HISTORY_RECORD: &str = "5e0c3f9b2d7a4e61b8f4a9c07d21e6b3";

/// Every id with a short name, in catalog order (for docs and tests).
pub const ALL: [(&str, &str); 11] = [
    ("install-started", INSTALL_STARTED),
    ("swapped", SWAPPED),
    ("committed", COMMITTED),
    ("rolled-back", ROLLED_BACK),
    ("recovery", RECOVERY),
    ("drift", DRIFT),
    ("install-failed", INSTALL_FAILED),
    ("no-build", NO_BUILD),
    ("build-added", BUILD_ADDED),
    ("committed-fault", COMMITTED_FAULT),
    ("history-record", HISTORY_RECORD),
];

/// The environment variable systemd sets to `DEV:INODE` of the journal
/// stream it connected to stdout/stderr.
pub const JOURNAL_STREAM: &str = "JOURNAL_STREAM";

/// Whether `journal_stream` (the value of `JOURNAL_STREAM`) names the file
/// behind stderr, whose device and inode are `dev` and `ino`. A child that
/// inherited the variable but had stderr redirected gets `false`.
pub fn is_journal_stream(journal_stream: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = journal_stream.trim().split_once(':') else {
        return false;
    };
    matches!((d.parse::<u64>(), i.parse::<u64>()), (Ok(d), Ok(i)) if d == dev && i == ino)
}

fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os(JOURNAL_STREAM) else {
        return false;
    };
    match std::fs::metadata("/proc/self/fd/2") {
        Ok(m) => is_journal_stream(&value.to_string_lossy(), m.dev(), m.ino()),
        Err(_) => false,
    }
}

/// Where the daemon's log goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Journald,
    Stderr,
}

/// Sets up `tracing` for `milspecd run`, filtered by `RUST_LOG` (default
/// `info`): native journald records (with `MESSAGE_ID`, priority and code
/// location) when stderr is the journal, text on stderr otherwise or if
/// the journal socket cannot be opened.
pub fn init_logging() -> LogTarget {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if stderr_is_journal() {
        match tracing_journald::layer() {
            Ok(layer) => {
                let layer = layer.with_field_prefix(None).with_syslog_identifier("milspecd".into());
                if tracing_subscriber::registry().with(layer.with_filter(filter())).try_init().is_ok() {
                    return LogTarget::Journald;
                }
            }
            Err(e) => eprintln!("milspecd: cannot open the journal socket ({e}); logging to stderr"),
        }
    }
    init_stderr_logging();
    LogTarget::Stderr
}

/// Sets up `tracing` to stderr, filtered by `RUST_LOG` (default `info`).
/// Each line is escaped ([`SafeStderr`]), so no colour. For the one-shot
/// commands, and for `milspecd run` when stderr is not the journal.
pub fn init_stderr_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| SafeStderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}

/// The journal id and text of a notice that is an event of its own.
pub fn notice_event(n: &Notice) -> Option<(&'static str, String)> {
    match n {
        Notice::Changed | Notice::Download { .. } => None,
        Notice::Swapped { from, to, .. } => Some((SWAPPED, format!("swapped {from} -> {to}; {to} is on probation"))),
        Notice::Committed { version } => Some((COMMITTED, format!("committed {version}"))),
        Notice::CommittedFault { version, reason } => {
            Some((COMMITTED_FAULT, format!("fault of committed {version}: {reason}")))
        }
        Notice::RolledBack { from, to, reason } => Some((
            ROLLED_BACK,
            format!("rolled back {from} -> {}: {reason}", if to.is_empty() { "no module" } else { to.as_str() }),
        )),
    }
}

/// Logs a notice's event with its `MESSAGE_ID` (nothing for `Changed`).
/// Versions and reasons come from packages and the kernel: escaped.
pub fn log_notice(n: &Notice) {
    let Some((id, text)) = notice_event(n) else {
        return;
    };
    let text = sanitize(&text);
    match n {
        Notice::RolledBack { from, to, reason } => {
            let (from, to, reason) = (sanitize(from), sanitize(to), sanitize(reason));
            warn!(message_id = id, version = %from, to = %to, reason = %reason, "{text}")
        }
        Notice::Swapped { from, to, .. } => {
            info!(message_id = id, version = %sanitize(to), from = %sanitize(from), "{text}")
        }
        Notice::Committed { version } => info!(message_id = id, version = %sanitize(version), "{text}"),
        Notice::CommittedFault { version, reason } => {
            warn!(message_id = id, version = %sanitize(version), reason = %sanitize(reason), "{text}")
        }
        Notice::Changed | Notice::Download { .. } => {}
    }
}

/// Longest log line written to stderr, in characters.
pub const MAX_LOG_LINE: usize = 16 * 1024;

/// The text log's writer: every formatted event arrives in one write, is
/// escaped with the format crate's sanitiser (so a reason that holds a CR,
/// LF, NUL or ESC cannot forge or hide a line) and ends with one newline.
/// Colour is off for this log, so no escape sequence is legitimate in it.
#[derive(Debug, Default, Clone, Copy)]
pub struct SafeStderr;

impl Write for SafeStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::stderr().lock().write_all(safe_line(buf).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// One log record as it is written: escaped, bounded, one trailing newline.
pub fn safe_line(buf: &[u8]) -> String {
    let body = buf.strip_suffix(b"\n").unwrap_or(buf);
    let mut line = milspec_format::text::sanitize_bytes(body, MAX_LOG_LINE);
    line.push('\n');
    line
}

/// Keeps an outsider from flooding the log: per class of message, the
/// first `burst` in each `every` are logged, the rest counted; the first
/// one logged in a later period says how many were left out.
#[derive(Debug)]
pub struct RateLimit {
    burst: u32,
    every: Duration,
    state: Mutex<RateState>,
}

#[derive(Debug)]
struct RateState {
    window: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

/// What to do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Log it; `suppressed` similar ones were left out before it.
    Log { suppressed: u64 },
    /// Leave it out (counted).
    Drop,
}

impl RateLimit {
    pub const fn new(burst: u32, every: Duration) -> Self {
        RateLimit { burst, every, state: Mutex::new(RateState { window: None, logged: 0, suppressed: 0 }) }
    }

    pub fn check(&self, now: Instant) -> Verdict {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let fresh = s.window.is_none_or(|w| now.saturating_duration_since(w) >= self.every);
        if fresh {
            s.window = Some(now);
            s.logged = 0;
        }
        if s.logged < self.burst {
            s.logged += 1;
            let suppressed = std::mem::take(&mut s.suppressed);
            Verdict::Log { suppressed }
        } else {
            s.suppressed += 1;
            Verdict::Drop
        }
    }

    /// Runs `log` unless this class is over its rate; says first how many
    /// similar messages were left out.
    pub fn log(&self, class: &str, log: impl FnOnce()) {
        if let Verdict::Log { suppressed } = self.check(Instant::now()) {
            if suppressed > 0 {
                warn!("suppressed {suppressed} similar messages ({class}) in the last {}s", self.every.as_secs());
            }
            log();
        }
    }
}

/// Refused D-Bus calls (anyone on the bus can cause them).
pub static REFUSED_CALLS: RateLimit = RateLimit::new(5, Duration::from_secs(60));
/// Failed polls and download retries (a mirror, or the path to it, causes them).
pub static FAILED_POLLS: RateLimit = RateLimit::new(5, Duration::from_secs(60));

/// Untrusted text for a log message: escaped and bounded.
pub fn untrusted(s: &str) -> String {
    sanitize_to(s, MAX_LOG_LINE / 4)
}

/// Logs one history record with the `HISTORY_RECORD` id and its place in
/// the chain (the journal fields `MILSPEC_RECORD_N`, `MILSPEC_RECORD_HASH`,
/// `MILSPEC_RECORD_PREV`, `MILSPEC_EVENT`).
pub fn log_record(ev: &crate::history::Event, at: &crate::history::Appended) {
    let word = ev.event.word();
    info!(
        message_id = HISTORY_RECORD,
        milspec_record_n = at.n,
        milspec_record_hash = %at.hash,
        milspec_record_prev = %at.prev,
        milspec_event = word,
        "history record {} ({word}): {}",
        at.n,
        at.hash
    );
}

/// Logs the result of startup recovery with the `RECOVERY` id.
pub fn log_recovery(text: &str, drift: bool) {
    if drift {
        warn!(message_id = RECOVERY, "recovery: {text}");
    } else {
        info!(message_id = RECOVERY, "recovery: {text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_match_stderr() {
        assert!(is_journal_stream("8:12345", 8, 12345));
        assert!(is_journal_stream("8:12345\n", 8, 12345));
        assert!(!is_journal_stream("8:12345", 8, 12346));
        assert!(!is_journal_stream("9:12345", 8, 12345));
        assert!(!is_journal_stream("", 8, 12345));
        assert!(!is_journal_stream("8", 8, 12345));
        assert!(!is_journal_stream("x:y", 8, 12345));
    }

    #[test]
    fn ids_are_distinct_128_bit_hex() {
        let mut seen = std::collections::BTreeSet::new();
        for (name, id) in ALL {
            assert_eq!(id.len(), 32, "{name}");
            assert!(id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{name}");
            assert!(seen.insert(id), "{name} repeats an id");
        }
    }

    #[test]
    fn log_lines_are_escaped_and_end_once() {
        let line = safe_line(b"WARN rejected: a\rb\nINFO forged\0\x1b[2J\xc2\x9b\xe2\x80\xae\xff\n");
        assert_eq!(line, "WARN rejected: a\\rb\\nINFO forged\\x00\\x1b[2J\\x9b\\u{202e}\\xff\n");
        assert_eq!(line.matches('\n').count(), 1);
        assert!(safe_line(&vec![b'x'; 100_000]).chars().count() <= MAX_LOG_LINE + 1);
    }

    #[test]
    fn rate_limit_logs_a_burst_then_counts() {
        let r = RateLimit::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let v: Vec<_> = (0..5).map(|i| r.check(t0 + Duration::from_millis(i))).collect();
        assert_eq!(v[..3], [Verdict::Log { suppressed: 0 }; 3]);
        assert_eq!(v[3..], [Verdict::Drop; 2]);
        assert_eq!(r.check(t0 + Duration::from_secs(61)), Verdict::Log { suppressed: 2 });
        assert_eq!(r.check(t0 + Duration::from_secs(62)), Verdict::Log { suppressed: 0 });
    }

    #[test]
    fn notices_map_to_their_ids() {
        let swapped = Notice::Swapped { from: "1.0.0".into(), to: "1.1.0".into(), window: Duration::from_secs(1) };
        let (id, text) = notice_event(&swapped).unwrap_or_default();
        assert_eq!(id, SWAPPED);
        assert!(text.contains("1.0.0 -> 1.1.0"), "{text}");
        let committed = Notice::Committed { version: "1.1.0".into() };
        assert_eq!(notice_event(&committed).map(|e| e.0), Some(COMMITTED));
        let rb = Notice::RolledBack { from: "1.2.0".into(), to: String::new(), reason: "warn_count 0 -> 1".into() };
        let (id, text) = notice_event(&rb).unwrap_or_default();
        assert_eq!(id, ROLLED_BACK);
        assert!(text.contains("1.2.0 -> no module: warn_count 0 -> 1"), "{text}");
        assert_eq!(notice_event(&Notice::Changed), None);
    }
}
