//! Append-only event history: one JSON object per line in
//! `history.jsonl`, fsynced per event, bounded by rotating to
//! `history.jsonl.1` when it grows past a limit.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use milspec_format::text::sanitize;
use serde::{Deserialize, Serialize};

/// Rotate past this many bytes; at most twice this is kept.
pub const MAX_HISTORY_BYTES: u64 = 512 * 1024;
/// Longest single line read back.
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    Staged,
    Swapped,
    Committed,
    RolledBack,
    Recovered,
    Rejected,
    Drift,
    RollbackPendingReboot,
    /// A build of the committed version for another kernel was added to its slot.
    BuildAdded,
    /// A build of the committed version failed on its kernel: that pair is blocked.
    BuildFailed,
    /// A build for a kernel that was removed was dropped from a slot.
    BuildDropped,
    /// An operator took a version off the blocklist.
    Unblocked,
    /// A fault naming the committed module was seen after its probation.
    Fault,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Wall-clock time, RFC 3339.
    pub at: String,
    pub event: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub millis: Option<u64>,
    /// The kernel release a build event is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
}

impl Event {
    pub fn new(event: EventKind) -> Self {
        Event {
            at: now_rfc3339(),
            event,
            version: None,
            slot: None,
            from: None,
            to: None,
            reason: None,
            millis: None,
            kernel: None,
        }
    }

    pub fn version(mut self, v: impl ToString) -> Self {
        self.version = Some(sanitize(&v.to_string()));
        self
    }

    pub fn slot(mut self, s: impl ToString) -> Self {
        self.slot = Some(sanitize(&s.to_string()));
        self
    }

    pub fn from_to(mut self, from: impl ToString, to: Option<String>) -> Self {
        self.from = Some(sanitize(&from.to_string()));
        self.to = to.map(|t| sanitize(&t));
        self
    }

    pub fn kernel(mut self, k: &str) -> Self {
        self.kernel = Some(sanitize(k));
        self
    }

    pub fn reason(mut self, r: impl ToString) -> Self {
        // Reasons quote package, index, kernel-log and check output.
        self.reason = Some(sanitize(&r.to_string()));
        self
    }

    /// Every text field escaped (for records written before the sanitiser).
    pub fn cleaned(mut self) -> Self {
        let c = |v: &mut Option<String>| {
            if let Some(s) = v {
                *s = sanitize(s);
            }
        };
        self.at = sanitize(&self.at);
        c(&mut self.version);
        c(&mut self.slot);
        c(&mut self.from);
        c(&mut self.to);
        c(&mut self.reason);
        c(&mut self.kernel);
        self
    }

    /// One line of `history.jsonl`, escaped; `None` if it is not an event.
    pub fn parse_line(line: &[u8]) -> Option<Event> {
        if line.len() > MAX_LINE {
            return None;
        }
        serde_json::from_slice::<Event>(line).ok().map(Event::cleaned)
    }

    pub fn millis(mut self, ms: u64) -> Self {
        self.millis = Some(ms);
        self
    }
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

#[derive(Debug, Clone)]
pub struct History {
    path: PathBuf,
}

impl History {
    pub fn new(state_dir: &Path) -> Self {
        History { path: state_dir.join("history.jsonl") }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn rotated(&self) -> PathBuf {
        self.path.with_extension("jsonl.1")
    }

    /// Appends one event and fsyncs it.
    pub fn append(&self, event: &Event) -> io::Result<()> {
        if fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0) >= MAX_HISTORY_BYTES {
            fs::rename(&self.path, self.rotated())?;
        }
        let mut line = serde_json::to_vec(event).map_err(io::Error::other)?;
        line.push(b'\n');
        let mut f = OpenOptions::new().create(true).append(true).mode(0o600).open(&self.path)?;
        f.write_all(&line)?;
        f.sync_data()?;
        milspec_format::atomic::sync_dir(self.path.parent().unwrap_or(Path::new(".")))
    }

    /// The newest `limit` events, oldest first. Unreadable lines are skipped.
    pub fn read(&self, limit: usize) -> io::Result<Vec<Event>> {
        let mut out = Vec::new();
        for p in [self.rotated(), self.path.clone()] {
            let f = match File::open(&p) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for line in BufReader::new(f).split(b'\n') {
                let line = line?;
                if line.len() > MAX_LINE {
                    continue;
                }
                if let Some(ev) = Event::parse_line(&line) {
                    out.push(ev);
                }
            }
        }
        let skip = out.len().saturating_sub(limit);
        Ok(out.split_off(skip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_read_rotate() {
        let d = tempfile::tempdir().unwrap();
        let h = History::new(d.path());
        h.append(&Event::new(EventKind::Staged).version("1.0.0").slot("a")).unwrap();
        h.append(&Event::new(EventKind::Committed).version("1.0.0")).unwrap();
        let ev = h.read(10).unwrap();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[1].event, EventKind::Committed);
        assert_eq!(h.read(1).unwrap().len(), 1);
        let big = Event::new(EventKind::Rejected).reason("x".repeat(10_000));
        for _ in 0..120 {
            h.append(&big).unwrap();
        }
        let total: u64 = fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
        assert!(total <= 2 * MAX_HISTORY_BYTES + 20_000, "{total}");
        assert_eq!(h.read(1000).unwrap().last().unwrap().event, EventKind::Rejected);
    }

    #[test]
    fn reasons_are_escaped_on_write_and_on_read() {
        let d = tempfile::tempdir().unwrap();
        let h = History::new(d.path());
        h.append(&Event::new(EventKind::Rejected).reason("bad\0sig\x1b[2J\u{202e}")).unwrap();
        // A record written raw (by an older build) is escaped when read.
        let raw = r#"{"at":"2026-01-01T00:00:00Z","event":"rejected","reason":"x\u0000\u001b\u009b"}"#;
        let mut f = OpenOptions::new().append(true).open(h.path()).unwrap();
        writeln!(f, "{raw}").unwrap();
        let ev = h.read(10).unwrap();
        assert_eq!(ev[0].reason.as_deref(), Some("bad\\x00sig\\x1b[2J\\u{202e}"));
        assert_eq!(ev[1].reason.as_deref(), Some("x\\x00\\x1b\\x9b"));
        let text = fs::read_to_string(h.path()).unwrap();
        assert!(!text.lines().next().unwrap().contains("\\u0000"), "{text}");
    }
}
