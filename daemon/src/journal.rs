//! Logging for the daemon: straight to journald when systemd connected
//! stderr to the journal, plain text on stderr otherwise; and the stable
//! `MESSAGE_ID`s of the events an operator or a monitor looks for.
//!
//! An event carries its id as the field `message_id`; the journald layer
//! is built without a field prefix, so the field arrives as the journal
//! field `MESSAGE_ID` and `journalctl MESSAGE_ID=...` finds it. The ids and
//! what to do about each event are described in `systemd/milspecd.catalog`.

use std::os::unix::fs::MetadataExt;

use tracing::{info, warn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::worker::Notice;

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

/// Every id with a short name, in catalog order (for docs and tests).
pub const ALL: [(&str, &str); 7] = [
    ("install-started", INSTALL_STARTED),
    ("swapped", SWAPPED),
    ("committed", COMMITTED),
    ("rolled-back", ROLLED_BACK),
    ("recovery", RECOVERY),
    ("drift", DRIFT),
    ("install-failed", INSTALL_FAILED),
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
    crate::cli::init_logging();
    LogTarget::Stderr
}

/// The journal id and text of a notice that is an event of its own.
pub fn notice_event(n: &Notice) -> Option<(&'static str, String)> {
    match n {
        Notice::Changed => None,
        Notice::Swapped { from, to } => Some((SWAPPED, format!("swapped {from} -> {to}; {to} is on probation"))),
        Notice::Committed { version } => Some((COMMITTED, format!("committed {version}"))),
        Notice::RolledBack { from, to, reason } => Some((
            ROLLED_BACK,
            format!("rolled back {from} -> {}: {reason}", if to.is_empty() { "no module" } else { to.as_str() }),
        )),
    }
}

/// Logs a notice's event with its `MESSAGE_ID` (nothing for `Changed`).
pub fn log_notice(n: &Notice) {
    let Some((id, text)) = notice_event(n) else {
        return;
    };
    match n {
        Notice::RolledBack { from, to, reason } => {
            warn!(message_id = id, version = %from, to = %to, reason = %reason, "{text}")
        }
        Notice::Swapped { from, to } => info!(message_id = id, version = %to, from = %from, "{text}"),
        Notice::Committed { version } => info!(message_id = id, version = %version, "{text}"),
        Notice::Changed => {}
    }
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
    fn notices_map_to_their_ids() {
        let swapped = Notice::Swapped { from: "1.0.0".into(), to: "1.1.0".into() };
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
