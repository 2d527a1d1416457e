//! The JSON objects that `milspecd` and `milspecctl` print with `--json`,
//! one type per object, shared by both programs so that the same thing
//! reads the same from either (docs/json.md; the JSON Schemas are in
//! `docs/schema/`).
//!
//! Every object starts with `"schema": "milspec.<kind>/<major>"`. A reader
//! checks the kind and the major version; fields are added only as
//! optional, and anything else bumps the major version. Every field is
//! always present, in the order declared here: absent values are `null`,
//! never `""`; counts are numbers, flags are booleans, times are RFC 3339
//! UTC strings.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// `milspec.status/1`: what the daemon (or, when it is not running, the
/// state folder) says about this host.
pub const STATUS: &str = "milspec.status/1";
/// `milspec.outcome/1`: how one command ended.
pub const OUTCOME: &str = "milspec.outcome/1";
/// `milspec.history-event/1`: one record of the history.
pub const HISTORY_EVENT: &str = "milspec.history-event/1";
/// `milspec.slot/1`: one of the two A/B slots.
pub const SLOT: &str = "milspec.slot/1";
/// `milspec.kernels/1`: the installed kernels against the committed builds.
pub const KERNELS: &str = "milspec.kernels/1";
/// `milspec.bus-event/1`: one event `milspecctl watch` saw.
pub const BUS_EVENT: &str = "milspec.bus-event/1";
/// `milspec.inspect/1`: a package's manifest, not verified (`milspecctl inspect`).
pub const INSPECT: &str = "milspec.inspect/1";
/// `milspec.mirror-kernels/1`: a mirror's releases and their kernels
/// (`milspec-repo kernels`).
pub const MIRROR_KERNELS: &str = "milspec.mirror-kernels/1";
/// `milspec.host-policy/1`: what the kernel enforces for modules
/// (`milspecd policy`).
pub const HOST_POLICY: &str = "milspec.host-policy/1";

/// `milspec.report/1`: the compliance report (`milspecd report`,
/// `milspecctl report`, the `Report` method).
pub const REPORT: &str = "milspec.report/1";

/// `milspec.history-verify/1`: a check of the history's hash chain
/// (`milspecd history --verify`, `milspecctl history --verify`, the
/// `VerifyHistory` method).
pub const HISTORY_VERIFY: &str = "milspec.history-verify/1";

/// Every schema name, with the file in `docs/schema/` that defines it.
pub const ALL: [(&str, &str); 11] = [
    (STATUS, "status.schema.json"),
    (OUTCOME, "outcome.schema.json"),
    (HISTORY_EVENT, "history-event.schema.json"),
    (SLOT, "slot.schema.json"),
    (KERNELS, "kernels.schema.json"),
    (BUS_EVENT, "bus-event.schema.json"),
    (INSPECT, "inspect.schema.json"),
    (MIRROR_KERNELS, "mirror-kernels.schema.json"),
    (HOST_POLICY, "host-policy.schema.json"),
    (REPORT, "report.schema.json"),
    (HISTORY_VERIFY, "history-verify.schema.json"),
];

/// An empty string is an absent value.
pub fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// `milspec.outcome/1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub schema: String,
    /// The result word: an [`crate::ActionResult`] word (`committed`,
    /// `rolled-back`, `up-to-date`, ...), `nothing-committed`, `paused`,
    /// `resumed`, or an error word (`access-denied`, `busy`, `timeout`,
    /// `nothing-to-roll-back`, `not-running`, `gone`, `failed`).
    pub outcome: String,
    /// The version it is about (the one installed, offered or refused).
    pub version: Option<String>,
    /// Where a rollback went (a version, or null for no module).
    pub to: Option<String>,
    /// Why (a rejection, a rollback, a failure).
    pub reason: Option<String>,
    /// The kernel release it is about (kernel commands).
    pub kernel: Option<String>,
    /// One line for a person.
    pub message: String,
    /// The process's exit code (docs/operations.md, "Exit codes").
    pub exit_code: u8,
}

impl Outcome {
    pub fn new(outcome: &str, message: impl Into<String>, exit_code: u8) -> Self {
        Outcome {
            schema: OUTCOME.into(),
            outcome: outcome.into(),
            version: None,
            to: None,
            reason: None,
            kernel: None,
            message: message.into(),
            exit_code,
        }
    }

    pub fn version(mut self, v: &str) -> Self {
        self.version = non_empty(v);
        self
    }

    pub fn to(mut self, v: Option<&str>) -> Self {
        self.to = v.and_then(non_empty);
        self
    }

    pub fn reason(mut self, r: &str) -> Self {
        self.reason = non_empty(r);
        self
    }

    pub fn kernel(mut self, k: &str) -> Self {
        self.kernel = non_empty(k);
        self
    }
}

/// The module's health, as `milspec.status/1` carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `/sys/kernel/oops_count`; null where the kernel has none.
    pub oops_count: Option<u64>,
    pub warn_count: Option<u64>,
    /// `/proc/sys/kernel/tainted`.
    pub taint: Option<u64>,
    /// From `/proc/milspec/status`; null when no module reports.
    pub module_version: Option<String>,
    /// `ok`, `degraded`, `failed`, or `missing` (no status file).
    pub module_state: Option<String>,
    /// `pass` or `fail`.
    pub selftest: Option<String>,
    pub mode5_level: Option<u64>,
    pub errors: Option<u64>,
    /// Why the status file could not be read.
    pub status_error: Option<String>,
}

impl Health {
    /// From the daemon's `Health` property (`a{ss}`).
    pub fn from_map(m: &HashMap<String, String>) -> Self {
        let s = |k: &str| m.get(k).and_then(|v| non_empty(v));
        let n = |k: &str| m.get(k).and_then(|v| v.parse().ok());
        Health {
            oops_count: n("oops_count"),
            warn_count: n("warn_count"),
            taint: n("taint"),
            module_version: s("version"),
            module_state: s("state"),
            selftest: s("selftest"),
            mode5_level: n("mode5_level"),
            errors: n("errors"),
            status_error: s("status_error"),
        }
    }
}

/// `milspec.slot/1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub schema: String,
    /// `a` or `b`.
    pub slot: String,
    /// The slot's `valid` marker is present.
    pub valid: bool,
    /// This is the committed slot.
    pub committed: bool,
    pub version: Option<String>,
    pub sequence: Option<u64>,
    /// The kernel releases it holds builds for.
    pub kernels: Vec<String>,
    /// Why it could not be read or verified.
    pub error: Option<String>,
}

impl Slot {
    /// From one entry of the daemon's `Slots` property (`aa{ss}`).
    pub fn from_map(m: &HashMap<String, String>) -> Self {
        let s = |k: &str| m.get(k).and_then(|v| non_empty(v));
        Slot {
            schema: SLOT.into(),
            slot: m.get("slot").cloned().unwrap_or_default(),
            valid: m.get("valid").map(String::as_str) == Some("true"),
            committed: m.get("committed").map(String::as_str) == Some("true"),
            version: s("version"),
            sequence: m.get("sequence").and_then(|v| v.parse().ok()),
            kernels: m.get("kernels").map(|k| k.split_whitespace().map(String::from).collect()).unwrap_or_default(),
            error: s("error"),
        }
    }
}

/// `milspec.status/1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub schema: String,
    /// `running` (read from the daemon over D-Bus) or `not-running` (read
    /// from the state folder, without the daemon).
    pub daemon: String,
    /// The daemon's `State` (`idle`, `trial`, ...); null when not running.
    pub state: Option<String>,
    pub committed_version: Option<String>,
    /// `a` or `b`.
    pub committed_slot: Option<String>,
    pub trial_version: Option<String>,
    /// Automatic polling is paused.
    pub paused: bool,
    /// A rollback waits for a reboot.
    pub reboot_required: bool,
    /// `ready`, `no-build` or `no-version`: the committed version against
    /// the running kernel.
    pub kernel_build: Option<String>,
    /// The last mirror poll (RFC 3339); null when none since start.
    pub last_check: Option<String>,
    pub last_error: Option<String>,
    pub health: Health,
    pub slots: Vec<Slot>,
    /// The versions this host refuses (from the daemon's `Blocklist`);
    /// absent from a daemon that predates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocklist: Option<Vec<BlockedVersion>>,
}

/// One blocklist entry: a version this host refuses, why and since when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedVersion {
    pub version: String,
    pub sequence: u64,
    pub reason: String,
    /// When it was blocked (RFC 3339).
    pub at: String,
}

impl BlockedVersion {
    /// From a `Blocklist` dict (already escaped by the caller).
    pub fn from_map(m: &HashMap<String, String>) -> Self {
        let get = |k: &str| m.get(k).cloned().unwrap_or_default();
        BlockedVersion {
            version: get("version"),
            sequence: m.get("sequence").and_then(|s| s.parse().ok()).unwrap_or(0),
            reason: get("reason"),
            at: get("at"),
        }
    }
}

impl Status {
    pub fn running() -> Self {
        Status::new("running")
    }

    pub fn not_running() -> Self {
        Status::new("not-running")
    }

    fn new(daemon: &str) -> Self {
        Status {
            schema: STATUS.into(),
            daemon: daemon.into(),
            state: None,
            committed_version: None,
            committed_slot: None,
            trial_version: None,
            paused: false,
            reboot_required: false,
            kernel_build: None,
            last_check: None,
            last_error: None,
            health: Health::default(),
            slots: Vec::new(),
            blocklist: None,
        }
    }
}

/// `milspec.history-event/1`: the fields of a `history.jsonl` record, each
/// always present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEvent {
    pub schema: String,
    pub at: String,
    pub event: String,
    pub version: Option<String>,
    pub slot: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub reason: Option<String>,
    pub millis: Option<u64>,
    pub kernel: Option<String>,
    /// Its place in the hash chain (null in records older than the chain).
    pub n: Option<u64>,
    /// The previous record's hash.
    pub prev: Option<String>,
    /// Who caused it.
    pub actor: Option<HistoryActor>,
    /// Where its package came from.
    pub origin: Option<HistoryOrigin>,
    /// The package file's SHA-256.
    pub sha256: Option<String>,
    /// Key ids whose signatures verified (empty: none, or no package).
    pub signers: Vec<String>,
}

/// Who caused a history event: `kind` `dbus` (with `uid`, `sender`,
/// `authorized` `root` or `polkit`), `timer`, `watch`, `recover` or `cli`
/// (with `uid`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryActor {
    pub kind: String,
    pub uid: Option<u32>,
    pub sender: Option<String>,
    pub authorized: Option<String>,
}

/// Where a history event's package came from: `mirror` and
/// `index_version`, or `file`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryOrigin {
    pub mirror: Option<String>,
    pub index_version: Option<u64>,
    pub file: Option<String>,
}

impl HistoryEvent {
    /// From one entry of the daemon's `History` answer (`aa{ss}`).
    pub fn from_map(m: &HashMap<String, String>) -> Self {
        let s = |k: &str| m.get(k).and_then(|v| non_empty(v));
        HistoryEvent {
            schema: HISTORY_EVENT.into(),
            at: m.get("at").cloned().unwrap_or_default(),
            event: m.get("event").cloned().unwrap_or_default(),
            version: s("version"),
            slot: s("slot"),
            from: s("from"),
            to: s("to"),
            reason: s("reason"),
            millis: m.get("millis").and_then(|v| v.parse().ok()),
            kernel: s("kernel"),
            n: m.get("n").and_then(|v| v.parse().ok()),
            prev: s("prev"),
            actor: m.get("actor").and_then(|v| serde_json::from_str(v).ok()).map(|v: serde_json::Value| HistoryActor {
                kind: v["kind"].as_str().unwrap_or_default().to_string(),
                uid: v["uid"].as_u64().and_then(|u| u32::try_from(u).ok()),
                sender: v["sender"].as_str().map(str::to_string),
                authorized: v["authorized"].as_str().map(str::to_string),
            }),
            origin: m.get("origin").and_then(|v| serde_json::from_str(v).ok()).map(|v: serde_json::Value| {
                HistoryOrigin {
                    mirror: v["mirror"].as_str().map(str::to_string),
                    index_version: v["index_version"].as_u64(),
                    file: v["file"].as_str().map(str::to_string),
                }
            }),
            sha256: s("sha256"),
            signers: m.get("signers").and_then(|v| serde_json::from_str(v).ok()).unwrap_or_default(),
        }
    }
}

/// `milspec.kernels/1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kernels {
    pub schema: String,
    pub kernel_build: Option<String>,
    pub committed_version: Option<String>,
    /// The kernels the committed slot holds builds for.
    pub committed_kernels: Vec<String>,
    /// Installed kernels the committed version has no build for.
    pub kernels_without_build: Vec<String>,
}

/// `milspec.bus-event/1`: a property change or a signal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BusEvent {
    pub schema: String,
    pub at: String,
    /// `property`, `signal`, `daemon-started` or `daemon-stopped`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The property or signal name; null for the daemon events.
    pub name: Option<String>,
    /// A property's new value; null for the others.
    pub value: Option<serde_json::Value>,
    pub version: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub reason: Option<String>,
}

impl BusEvent {
    pub fn new(at: &str, kind: &str, name: Option<&str>) -> Self {
        BusEvent {
            schema: BUS_EVENT.into(),
            at: at.into(),
            kind: kind.into(),
            name: name.map(String::from),
            value: None,
            version: None,
            from: None,
            to: None,
            reason: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_values_are_null_and_every_key_is_there_in_order() {
        let o = Outcome::new("up-to-date", "nothing newer", 0).version("");
        let text = serde_json::to_string(&o).unwrap();
        assert_eq!(
            text,
            r#"{"schema":"milspec.outcome/1","outcome":"up-to-date","version":null,"to":null,"reason":null,"kernel":null,"message":"nothing newer","exit_code":0}"#
        );
    }

    #[test]
    fn every_schema_file_exists_and_every_result_word_is_an_outcome() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/schema");
        for (name, file) in ALL {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(schema["title"], name, "{file}");
            assert_eq!(schema["properties"]["schema"]["const"], name, "{file}");
        }
        let text = std::fs::read_to_string(dir.join("outcome.schema.json")).unwrap();
        let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
        let words = schema["properties"]["outcome"]["enum"].as_array().unwrap();
        for r in crate::ActionResult::ALL {
            assert!(words.iter().any(|w| w == r.word()), "{} is not in outcome.schema.json", r.word());
        }
    }

    #[test]
    fn the_report_schema_holds_the_host_policy_schema_as_it_is() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/schema");
        let read = |f: &str| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap()
        };
        let mut policy = read("host-policy.schema.json");
        let obj = policy.as_object_mut().unwrap();
        obj.remove("$schema");
        obj.remove("$id");
        assert_eq!(read("report.schema.json")["$defs"]["host_policy"], policy, "copy host-policy.schema.json again");
    }

    #[test]
    fn maps_from_the_bus_become_typed_values() {
        let m: HashMap<String, String> =
            [("slot", "b"), ("valid", "true"), ("committed", "false"), ("sequence", "7"), ("kernels", "k1 k2")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let s = Slot::from_map(&m);
        assert_eq!((s.valid, s.committed, s.sequence, s.version), (true, false, Some(7), None));
        assert_eq!(s.kernels, ["k1", "k2"]);
        let h = Health::from_map(&[("oops_count".to_string(), "3".to_string())].into_iter().collect());
        assert_eq!((h.oops_count, h.warn_count), (Some(3), None));
    }
}
