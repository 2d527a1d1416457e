//! One record of the history: what happened and when, who asked (the
//! actor), where the package came from (the origin), which bytes and which
//! signers, on which kernel; and its place in the hash chain (`n`, `prev`).

use milspec_format::text::sanitize;
use serde::{Deserialize, Serialize};

/// Longest single line read back.
pub const MAX_LINE: usize = 64 * 1024;
/// Most signer key ids kept in one record.
pub const MAX_SIGNERS: usize = 16;

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

impl EventKind {
    /// The word written in the record.
    pub fn word(&self) -> &'static str {
        match self {
            EventKind::Staged => "staged",
            EventKind::Swapped => "swapped",
            EventKind::Committed => "committed",
            EventKind::RolledBack => "rolled-back",
            EventKind::Recovered => "recovered",
            EventKind::Rejected => "rejected",
            EventKind::Drift => "drift",
            EventKind::RollbackPendingReboot => "rollback-pending-reboot",
            EventKind::BuildAdded => "build-added",
            EventKind::BuildFailed => "build-failed",
            EventKind::BuildDropped => "build-dropped",
            EventKind::Unblocked => "unblocked",
            EventKind::Fault => "fault",
        }
    }
}

/// How a D-Bus caller was allowed to change things.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Authorized {
    /// uid 0.
    Root,
    /// polkit said yes for the caller's bus name.
    Polkit,
}

/// Who caused an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Actor {
    /// A D-Bus caller: its uid as the bus daemon knows it, its unique bus
    /// name (also the polkit subject, `system-bus-name`), and how it was
    /// authorized.
    Dbus { uid: u32, sender: String, authorized: Authorized },
    /// The daemon's poll timer.
    Timer,
    /// The committed module's watch after its probation (a fault it saw).
    Watch,
    /// Startup recovery.
    Recover,
    /// The local command line (`milspecd install`, `recover`, ...).
    Cli { uid: u32 },
}

impl Actor {
    /// The command line's actor: the real uid of this process.
    pub fn cli() -> Self {
        Actor::Cli { uid: nix::unistd::getuid().as_raw() }
    }

    fn cleaned(self) -> Self {
        match self {
            Actor::Dbus { uid, sender, authorized } => Actor::Dbus { uid, sender: sanitize(&sender), authorized },
            other => other,
        }
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::Dbus { uid, sender, .. } => write!(f, "uid {uid} ({})", sanitize(sender)),
            Actor::Timer => f.write_str("the poll timer"),
            Actor::Watch => f.write_str("the committed module's watch"),
            Actor::Recover => f.write_str("startup recovery"),
            Actor::Cli { uid } => write!(f, "uid {uid} (command line)"),
        }
    }
}

/// Where the package of an event came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Origin {
    /// Downloaded from the mirror `[source] url`, offered by its signed
    /// index of this version.
    Mirror { mirror: String, index_version: u64 },
    /// A local file (the command line's path, or the file behind the
    /// descriptor a D-Bus caller passed).
    File { file: String },
}

impl Origin {
    fn cleaned(self) -> Self {
        match self {
            Origin::Mirror { mirror, index_version } => Origin::Mirror { mirror: sanitize(&mirror), index_version },
            Origin::File { file } => Origin::File { file: sanitize(&file) },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Sequence number, from 1, continuing across rotated files; absent in
    /// records written before the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u64>,
    /// Hex SHA-256 of the previous record's line (64 zeros for the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
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
    /// The kernel release the event is about (a build event's), else the
    /// running one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// SHA-256 of the package file, as the daemon read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Key ids (hex SHA-256 of the public key) whose signatures verified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signers: Vec<String>,
}

impl Event {
    pub fn new(event: EventKind) -> Self {
        Event {
            n: None,
            prev: None,
            at: now_rfc3339(),
            event,
            version: None,
            slot: None,
            from: None,
            to: None,
            reason: None,
            millis: None,
            kernel: None,
            actor: None,
            origin: None,
            sha256: None,
            signers: Vec::new(),
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

    pub fn millis(mut self, ms: u64) -> Self {
        self.millis = Some(ms);
        self
    }

    pub fn actor(mut self, a: Actor) -> Self {
        self.actor = Some(a.cleaned());
        self
    }

    pub fn origin(mut self, o: Origin) -> Self {
        self.origin = Some(o.cleaned());
        self
    }

    /// The package's bytes and the keys whose signatures verified (at most
    /// [`MAX_SIGNERS`]).
    pub fn package(mut self, sha256: Option<String>, signers: &[String]) -> Self {
        self.sha256 = sha256.map(|s| sanitize(&s));
        self.signers = signers.iter().take(MAX_SIGNERS).map(|s| sanitize(s)).collect();
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
        c(&mut self.prev);
        c(&mut self.version);
        c(&mut self.slot);
        c(&mut self.from);
        c(&mut self.to);
        c(&mut self.reason);
        c(&mut self.kernel);
        c(&mut self.sha256);
        self.actor = self.actor.map(Actor::cleaned);
        self.origin = self.origin.map(Origin::cleaned);
        self.signers = std::mem::take(&mut self.signers).iter().map(|s| sanitize(s)).collect();
        self
    }

    /// One line of `history.jsonl`, escaped; `None` if it is not an event.
    pub fn parse_line(line: &[u8]) -> Option<Event> {
        if line.len() > MAX_LINE {
            return None;
        }
        serde_json::from_slice::<Event>(line).ok().map(Event::cleaned)
    }
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_records_read_back_without_chain_fields() {
        let old = br#"{"at":"2026-01-01T00:00:00Z","event":"committed","version":"1.0.0"}"#;
        let ev = Event::parse_line(old).unwrap();
        assert_eq!((ev.n, ev.prev.as_deref(), ev.actor.as_ref()), (None, None, None));
        assert_eq!(ev.event, EventKind::Committed);
    }

    #[test]
    fn actor_and_origin_round_trip_as_documented() {
        let ev = Event::new(EventKind::Staged)
            .actor(Actor::Dbus { uid: 1000, sender: ":1.42\x1b".into(), authorized: Authorized::Polkit })
            .origin(Origin::Mirror { mirror: "https://m.example/".into(), index_version: 7 })
            .package(Some("ab".repeat(32)), &["cd".repeat(32)]);
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["actor"]["kind"], "dbus");
        assert_eq!(v["actor"]["sender"], ":1.42\\x1b");
        assert_eq!(v["actor"]["authorized"], "polkit");
        assert_eq!(v["origin"]["index_version"], 7);
        assert_eq!(v["signers"][0].as_str().map(str::len), Some(64));
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, ev);
        let file = serde_json::to_value(Event::new(EventKind::Rejected).origin(Origin::File { file: "/tmp/p".into() }))
            .unwrap();
        assert_eq!(file["origin"], serde_json::json!({"file": "/tmp/p"}));
        let timer = serde_json::to_value(Event::new(EventKind::Rejected).actor(Actor::Timer)).unwrap();
        assert_eq!(timer["actor"], serde_json::json!({"kind": "timer"}));
    }

    #[test]
    fn words_match_serde() {
        for k in [EventKind::RolledBack, EventKind::RollbackPendingReboot, EventKind::BuildAdded, EventKind::Unblocked]
        {
            assert_eq!(serde_json::to_value(&k).unwrap(), k.word());
        }
    }
}
