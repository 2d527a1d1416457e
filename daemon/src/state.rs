//! The daemon's durable state record (`state.json` in the state folder).
//!
//! The record is a small pure type: mutators change it in memory only, and
//! one explicit [`StateFile::save`] persists it atomically (temp file,
//! fsync, rename, fsync folder). The engine saves it *before* the action it
//! describes, so a crash at any point leaves a record recovery can act on.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::health::snapshot::Snapshot;
use crate::slot_id::SlotId;

/// The state record format this build reads and writes (docs/format.md,
/// "Format versions and evolution"); a record without `format` is 1.
pub const STATE_FORMAT: u32 = 1;
/// The top-level fields of format 1. Fields of a later release listed in
/// the record's `optional` list are kept, untouched, when this build
/// rewrites the record ([`State::optional`]).
const FIELDS: &[&str] = &[
    "format",
    "committed",
    "trial",
    "max_sequence",
    "blocklist",
    "last_rollback",
    "pending_reboot",
    "committed_versions",
    "trial_kernel",
    "blocked_builds",
    "inconclusive",
];
/// Fields of format 1 added after it was first written: a reader that does
/// not know them may go on without them, so every record that carries one
/// names it in its `optional` list (docs/format.md, "Format versions and
/// evolution").
const ADDED_FIELDS: &[&str] = &["trial_kernel", "blocked_builds", "inconclusive"];
const MAX_STATE_FILE: u64 = 1024 * 1024;
/// Most blocklist entries kept; the oldest go first.
pub const MAX_BLOCKLIST: usize = 256;
/// Most versions kept in [`State::committed_versions`]; the oldest go first.
pub const MAX_COMMITTED_VERSIONS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{}: cannot read the state record: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: the state record is corrupt ({why}); it was left as is. Inspect it, restore it from a backup, or move it away to start from an empty state (the committed slot will then be forgotten)", path.display())]
    Corrupt { path: PathBuf, why: String },
    #[error("{}: cannot write the state record: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("{}: the state record is format {found}, written by a newer milspecd; this build reads format {supported} at most and changed nothing (the loaded module and the slots are left as they are). Upgrade milspecd to the release that wrote it", path.display())]
    NewerFormat { path: PathBuf, found: u32, supported: u32 },
}

/// A version that failed on this host and is never retried automatically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blocked {
    pub version: semver::Version,
    pub sequence: u64,
    pub reason: String,
    pub at: String,
}

/// A version whose trial ended without a verdict: the host rebooted or
/// lost power during it, with no evidence that the module was at fault.
/// It is tried again, and blocklisted only when that happens more often
/// than `[health] inconclusive_retries` allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inconclusive {
    pub version: semver::Version,
    pub sequence: u64,
    /// Trials of it that ended this way.
    pub count: u32,
    pub reason: String,
    pub at: String,
}

/// How a trial that is rolled back is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The module's fault: its version is blocklisted.
    Guilty,
    /// No verdict, and no count: never judged (another kernel, a host
    /// policy refusal), or judged already (a rollback resumed).
    Unjudged,
    /// No verdict after a reboot: counted; blocklisted once the count
    /// passes `retries`.
    Inconclusive { retries: u32 },
}

/// A build of one version for one kernel release that failed on this host:
/// that pair is never loaded or fetched again; the version stays good for
/// the other kernels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockedBuild {
    pub version: semver::Version,
    pub kernel_release: String,
    pub reason: String,
    pub at: String,
}

/// What was live before a swap, so it can be put back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The slot the old module was loaded from, if it came from one.
    pub slot: Option<SlotId>,
    /// The old module's version, if one was loaded.
    pub version: Option<String>,
    /// Runtime parameters read from the old module, re-applied on load.
    pub params: BTreeMap<String, String>,
    /// Health before the swap.
    pub baseline: Snapshot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrialPhase {
    /// Checkpoint written; the old module may be unloaded and the new one
    /// not yet loaded.
    Swapping,
    /// The new module is loaded and on probation.
    Watching,
    /// The trial failed; the rollback to the checkpoint is under way.
    RollingBack,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trial {
    pub slot: SlotId,
    pub version: semver::Version,
    pub sequence: u64,
    pub phase: TrialPhase,
    /// `/proc/sys/kernel/random/boot_id` when the trial started.
    pub boot_id: String,
    /// CLOCK_BOOTTIME when the probation window started, in ms.
    pub started_ms: u64,
    pub window_ms: u64,
    pub checkpoint: Checkpoint,
    /// Why the trial is being rolled back, once it is.
    #[serde(default)]
    pub rollback_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    pub from: String,
    pub to: Option<String>,
    pub reason: String,
    pub at: String,
}

/// Set when a faulty module could not be unloaded: the committed slot
/// takes over at the next boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingReboot {
    pub boot_id: String,
    pub stuck_version: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub format: u32,
    /// The known-good slot.
    pub committed: Option<SlotId>,
    pub trial: Option<Trial>,
    /// Highest sequence ever committed here (anti-rollback).
    pub max_sequence: u64,
    pub blocklist: Vec<Blocked>,
    pub last_rollback: Option<Rollback>,
    pub pending_reboot: Option<PendingReboot>,
    /// Every version that passed its probation and was committed here,
    /// oldest first (bounded). A rollback to the other slot goes only to
    /// one of these. Absent in records written before it was kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub committed_versions: Vec<semver::Version>,
    /// The kernel release the running trial started on (with `trial`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial_kernel: Option<String>,
    /// (version, kernel) builds that failed here, oldest first (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked_builds: Vec<BlockedBuild>,
    /// Versions whose last trials ended without a verdict (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inconclusive: Vec<Inconclusive>,
    /// Top-level fields a newer release wrote and listed as optional, kept
    /// as they were (with that list) so a downgrade loses none of them.
    #[serde(skip)]
    pub optional: serde_json::Map<String, serde_json::Value>,
}

impl Default for State {
    fn default() -> Self {
        State {
            format: STATE_FORMAT,
            committed: None,
            trial: None,
            max_sequence: 0,
            blocklist: Vec::new(),
            last_rollback: None,
            pending_reboot: None,
            committed_versions: Vec::new(),
            trial_kernel: None,
            blocked_builds: Vec::new(),
            inconclusive: Vec::new(),
            optional: serde_json::Map::new(),
        }
    }
}

impl State {
    pub fn is_blocked(&self, v: &semver::Version) -> Option<&Blocked> {
        self.blocklist.iter().find(|b| milspec_format::version::same_release(&b.version, v))
    }

    pub fn block(&mut self, entry: Blocked) {
        self.blocklist.retain(|b| !milspec_format::version::same_release(&b.version, &entry.version));
        self.blocklist.push(entry);
        let excess = self.blocklist.len().saturating_sub(MAX_BLOCKLIST);
        self.blocklist.drain(..excess);
    }

    /// Takes `v` (any build of its release) off the blocklist: the entry
    /// removed, `None` when it was not there.
    pub fn unblock(&mut self, v: &semver::Version) -> Option<Blocked> {
        let i = self.blocklist.iter().position(|b| milspec_format::version::same_release(&b.version, v))?;
        Some(self.blocklist.remove(i))
    }

    /// Whether `v` was ever committed on this host (as far as this record
    /// knows: see [`State::committed_versions`]).
    pub fn was_committed(&self, v: &semver::Version) -> bool {
        self.committed_versions.contains(v)
    }

    /// Remembers that `v` was committed here.
    pub fn note_committed(&mut self, v: &semver::Version) {
        self.committed_versions.retain(|c| c != v);
        self.committed_versions.push(v.clone());
        let excess = self.committed_versions.len().saturating_sub(MAX_COMMITTED_VERSIONS);
        self.committed_versions.drain(..excess);
    }

    /// Whether the build of `v` for `release` failed here.
    pub fn is_build_blocked(&self, v: &semver::Version, release: &str) -> Option<&BlockedBuild> {
        self.blocked_builds.iter().find(|b| &b.version == v && b.kernel_release == release)
    }

    pub fn block_build(&mut self, entry: BlockedBuild) {
        self.blocked_builds.retain(|b| !(b.version == entry.version && b.kernel_release == entry.kernel_release));
        self.blocked_builds.push(entry);
        let excess = self.blocked_builds.len().saturating_sub(MAX_BLOCKLIST);
        self.blocked_builds.drain(..excess);
    }

    /// The slot a new package goes into: never the committed one.
    pub fn target_slot(&self) -> SlotId {
        self.committed.map_or(SlotId::A, SlotId::other)
    }
}

/// A trial transition asked of a record that is not where it may start
/// from. Nothing was changed; it points at a bug in the engine or at a
/// state record edited by hand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("cannot {action}: the state record holds no trial")]
    NoTrial { action: &'static str },
    #[error("cannot {action}: the trial of {version} is {phase:?}, it must be {from}")]
    WrongPhase { action: &'static str, version: String, phase: TrialPhase, from: &'static str },
    #[error("cannot start a trial of {version}: a trial of {running} is already in the state record")]
    TrialRunning { version: String, running: String },
}

/// The trial's transitions, one method each. Each checks where it may
/// start from and changes the record in memory only; the caller saves.
///
/// ```text
///   (none) --begin_trial--> swapping --loaded--> watching --commit_trial--> (none)
///                              |                    |
///                              +--begin_rollback----+--> rolling-back --end_rollback--> (none)
///   swapping --abandon_swap--> (none)           rolling-back --rollback_pending_reboot--> (none)
/// ```
impl State {
    fn trial_in(&mut self, action: &'static str, from: &[TrialPhase]) -> Result<&mut Trial, TransitionError> {
        let t = self.trial.as_mut().ok_or(TransitionError::NoTrial { action })?;
        if !from.contains(&t.phase) {
            let names: &'static str = match from {
                [TrialPhase::Swapping] => "swapping",
                [TrialPhase::Watching] => "watching",
                [TrialPhase::RollingBack] => "rolling-back",
                _ => "swapping, watching or rolling-back",
            };
            return Err(TransitionError::WrongPhase {
                action,
                version: t.version.to_string(),
                phase: t.phase,
                from: names,
            });
        }
        Ok(t)
    }

    /// No trial -> `swapping`: the checkpoint is in `trial`; `kernel` is
    /// the release it runs on.
    pub fn begin_trial(&mut self, trial: Trial, kernel: &str) -> Result<(), TransitionError> {
        if let Some(t) = &self.trial {
            return Err(TransitionError::TrialRunning {
                version: trial.version.to_string(),
                running: t.version.to_string(),
            });
        }
        self.trial = Some(Trial { phase: TrialPhase::Swapping, ..trial });
        self.trial_kernel = Some(kernel.to_string());
        Ok(())
    }

    /// `swapping` -> `watching`: the new module is live; its window starts at `now_ms`.
    pub fn loaded(&mut self, now_ms: u64) -> Result<(), TransitionError> {
        let t = self.trial_in("start the probation", &[TrialPhase::Swapping])?;
        t.phase = TrialPhase::Watching;
        t.started_ms = now_ms;
        Ok(())
    }

    /// `watching` -> no trial: the trial's slot becomes the committed one.
    pub fn commit_trial(&mut self) -> Result<Trial, TransitionError> {
        self.trial_in("commit", &[TrialPhase::Watching])?;
        let trial = self.trial.take().ok_or(TransitionError::NoTrial { action: "commit" })?;
        self.trial_kernel = None;
        self.committed = Some(trial.slot);
        self.max_sequence = self.max_sequence.max(trial.sequence);
        self.note_committed(&trial.version);
        self.inconclusive.retain(|i| !milspec_format::version::same_release(&i.version, &trial.version));
        Ok(trial)
    }

    /// Any phase -> `rolling-back`, the version judged by `verdict`:
    /// blocklisted with `reason` when guilty; counted as inconclusive (and
    /// blocklisted once the count passes the retries); untouched when
    /// unjudged (resuming a rollback starts from `rolling-back` itself).
    pub fn begin_rollback(&mut self, reason: &str, at: String, verdict: Verdict) -> Result<Trial, TransitionError> {
        let all = [TrialPhase::Swapping, TrialPhase::Watching, TrialPhase::RollingBack];
        let (version, sequence) = {
            let t = self.trial_in("roll back", &all)?;
            (t.version.clone(), t.sequence)
        };
        // The reason the rollback carries names the verdict's effect.
        let reason = match verdict {
            Verdict::Guilty => {
                self.block(Blocked { version, sequence, reason: reason.into(), at });
                reason.to_string()
            }
            Verdict::Unjudged => reason.to_string(),
            Verdict::Inconclusive { retries } => {
                let count = self.inconclusive_count(&version) + 1;
                self.inconclusive.retain(|i| !milspec_format::version::same_release(&i.version, &version));
                if count > retries {
                    let reason = format!("{reason} ({count} trials ended this way; blocklisted)");
                    self.block(Blocked { version, sequence, reason: reason.clone(), at });
                    reason
                } else {
                    let reason = format!("{reason}; tried again ({count} of {retries} allowed)");
                    self.inconclusive.push(Inconclusive { version, sequence, count, reason: reason.clone(), at });
                    let excess = self.inconclusive.len().saturating_sub(MAX_BLOCKLIST);
                    self.inconclusive.drain(..excess);
                    reason
                }
            }
        };
        let t = self.trial_in("roll back", &all)?;
        t.phase = TrialPhase::RollingBack;
        t.rollback_reason = Some(reason);
        Ok(t.clone())
    }

    /// How many trials of `v` (its release) ended without a verdict.
    pub fn inconclusive_count(&self, v: &semver::Version) -> u32 {
        self.inconclusive.iter().find(|i| milspec_format::version::same_release(&i.version, v)).map_or(0, |i| i.count)
    }

    /// `rolling-back` -> no trial: the checkpoint's module (`to`) is live again.
    pub fn end_rollback(&mut self, to: Option<String>, at: String) -> Result<Trial, TransitionError> {
        self.trial_in("finish the rollback", &[TrialPhase::RollingBack])?;
        let trial = self.trial.take().ok_or(TransitionError::NoTrial { action: "finish the rollback" })?;
        self.trial_kernel = None;
        let reason = trial.rollback_reason.clone().unwrap_or_default();
        self.last_rollback = Some(Rollback { from: trial.version.to_string(), to, reason, at });
        Ok(trial)
    }

    /// `rolling-back` -> no trial, pending a reboot: the faulty module
    /// cannot be unloaded; the committed slot loads at the next boot.
    pub fn rollback_pending_reboot(
        &mut self,
        boot_id: String,
        reason: &str,
        at: String,
    ) -> Result<Trial, TransitionError> {
        self.trial_in("mark the rollback pending a reboot", &[TrialPhase::RollingBack])?;
        let trial =
            self.trial.take().ok_or(TransitionError::NoTrial { action: "mark the rollback pending a reboot" })?;
        self.trial_kernel = None;
        let version = trial.version.to_string();
        self.pending_reboot = Some(PendingReboot { boot_id, stuck_version: version.clone(), reason: reason.into() });
        self.last_rollback = Some(Rollback {
            from: version,
            to: trial.checkpoint.version.clone(),
            reason: format!("rollback pending reboot: {reason}"),
            at,
        });
        Ok(trial)
    }

    /// `swapping` -> no trial: the swap stopped before the old module was
    /// unloaded; the old module stays.
    pub fn abandon_swap(&mut self) -> Result<Trial, TransitionError> {
        self.trial_in("abandon the swap", &[TrialPhase::Swapping])?;
        self.trial_kernel = None;
        self.trial.take().ok_or(TransitionError::NoTrial { action: "abandon the swap" })
    }
}

/// The state record on disk.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(state_dir: &Path) -> Self {
        StateFile { path: state_dir.join("state.json") }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the record. A missing file is a fresh host; an unreadable or
    /// corrupt one is an error and is never replaced by a default. A
    /// record of a newer format is refused ([`StateError::NewerFormat`]) and
    /// left as it is. An older one (a record without `format` is format 1)
    /// is migrated in memory and, only once it loaded, written back in
    /// this build's format, atomically; if that write fails the old record
    /// stays on disk, still readable, and the next load migrates it again.
    pub fn load(&self) -> Result<State, StateError> {
        let read_err = |source| StateError::Read { path: self.path.clone(), source };
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(State::default()),
            Err(e) => return Err(read_err(e)),
        };
        let mut raw = Vec::new();
        file.take(MAX_STATE_FILE + 1).read_to_end(&mut raw).map_err(read_err)?;
        let corrupt = |why: String| StateError::Corrupt { path: self.path.clone(), why };
        if raw.len() as u64 > MAX_STATE_FILE {
            return Err(corrupt(format!("larger than {MAX_STATE_FILE} bytes")));
        }
        let (state, migrated) = parse(&raw).map_err(|e| match e {
            ParseError::Newer(found) => {
                StateError::NewerFormat { path: self.path.clone(), found, supported: STATE_FORMAT }
            }
            ParseError::Corrupt(why) => corrupt(why),
        })?;
        if let Some(from) = migrated {
            match self.save(&state) {
                Ok(()) => tracing::info!(
                    path = %self.path.display(),
                    from,
                    to = STATE_FORMAT,
                    "migrated the state record to format {STATE_FORMAT}"
                ),
                Err(e) => {
                    tracing::warn!("{e}; the record stays in its old format and is migrated again at the next load")
                }
            }
        }
        Ok(state)
    }

    pub fn save(&self, state: &State) -> Result<(), StateError> {
        let write_err =
            |e: serde_json::Error| StateError::Write { path: self.path.clone(), source: io::Error::other(e) };
        let plain = state.optional.is_empty()
            && state.trial_kernel.is_none()
            && state.blocked_builds.is_empty()
            && state.inconclusive.is_empty();
        if plain {
            // Byte for byte as every release of format 1 writes it.
            let mut data = serde_json::to_vec_pretty(state).map_err(write_err)?;
            data.push(b'\n');
            return milspec_format::atomic::write_atomic(&self.path, &data, 0o600)
                .map_err(|source| StateError::Write { path: self.path.clone(), source });
        }
        let mut v = serde_json::to_value(state).map_err(write_err)?;
        if let Some(o) = v.as_object_mut() {
            o.extend(state.optional.iter().map(|(k, v)| (k.clone(), v.clone())));
            // Name the added fields this record carries, beside those of
            // a newer release kept from its own list.
            let mut names: Vec<serde_json::Value> = match o.remove(milspec_format::evolution::OPTIONAL_KEY) {
                Some(serde_json::Value::Array(a)) => a,
                _ => Vec::new(),
            };
            for f in ADDED_FIELDS.iter().filter(|f| o.contains_key(**f)) {
                if !names.iter().any(|n| n.as_str() == Some(f)) {
                    names.push((*f).into());
                }
            }
            if !names.is_empty() {
                o.insert(milspec_format::evolution::OPTIONAL_KEY.into(), serde_json::Value::Array(names));
            }
        }
        let mut data = serde_json::to_vec_pretty(&v).map_err(write_err)?;
        data.push(b'\n');
        milspec_format::atomic::write_atomic(&self.path, &data, 0o600)
            .map_err(|source| StateError::Write { path: self.path.clone(), source })
    }
}

enum ParseError {
    Newer(u32),
    Corrupt(String),
}

/// One migration step per older format: `MIGRATIONS[n - 1]` turns a record
/// of format `n` into format `n + 1`. Format 1 is the first, so there are
/// none yet; a bump of [`STATE_FORMAT`] adds its step here.
const MIGRATIONS: &[fn(&mut serde_json::Map<String, serde_json::Value>)] = &[];

/// Parses a record of any format up to [`STATE_FORMAT`]; the second value
/// is the format it was migrated from, when the bytes on disk are not in
/// this build's format (or carry no `format`).
fn parse(raw: &[u8]) -> Result<(State, Option<u32>), ParseError> {
    use milspec_format::evolution;
    let corrupt = |why: String| ParseError::Corrupt(why);
    let mut doc = evolution::parse_object(raw).map_err(corrupt)?;
    let found = evolution::format_of(&doc).map_err(|e| corrupt(e.to_string()))?;
    if found > STATE_FORMAT {
        return Err(ParseError::Newer(found));
    }
    let explicit = doc.contains_key(evolution::FORMAT_KEY);
    for step in &MIGRATIONS[(found - 1) as usize..] {
        step(&mut doc);
    }
    doc.insert(evolution::FORMAT_KEY.into(), STATE_FORMAT.into());
    let list = doc.get(evolution::OPTIONAL_KEY).cloned();
    let listed = evolution::take_optional(&mut doc).map_err(|e| corrupt(e.to_string()))?;
    let mut optional = evolution::strip(&mut doc, FIELDS, &listed);
    if let (Some(list), false) = (list, optional.is_empty()) {
        optional.insert(evolution::OPTIONAL_KEY.into(), list);
    }
    let mut state: State =
        serde_json::from_value(serde_json::Value::Object(doc)).map_err(|e| corrupt(e.to_string()))?;
    state.optional = optional;
    let migrated = (found != STATE_FORMAT || !explicit).then_some(found);
    Ok((state, migrated))
}

/// A trial of 1.1.0 in slot b over 1.0.0 committed in slot a, for the
/// unit tests of the modules that decide on a state record.
#[cfg(test)]
pub(crate) fn test_trial(phase: TrialPhase, boot_id: &str) -> Trial {
    Trial {
        slot: SlotId::B,
        version: "1.1.0".parse().unwrap(),
        sequence: 2,
        phase,
        boot_id: boot_id.into(),
        started_ms: 0,
        window_ms: 1000,
        checkpoint: Checkpoint {
            slot: Some(SlotId::A),
            version: Some("1.0.0".into()),
            params: Default::default(),
            baseline: Snapshot::default(),
        },
        rollback_reason: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a_trial() -> Trial {
        test_trial(TrialPhase::Swapping, "b")
    }

    #[test]
    fn transitions_happy_path_commits() {
        let mut s = State { committed: Some(SlotId::A), max_sequence: 1, ..State::default() };
        s.begin_trial(a_trial(), "6.12.113").unwrap();
        assert!(matches!(s.begin_trial(a_trial(), "6.12.113"), Err(TransitionError::TrialRunning { .. })));
        assert!(matches!(s.commit_trial(), Err(TransitionError::WrongPhase { from: "watching", .. })));
        s.loaded(42).unwrap();
        assert_eq!(s.trial.as_ref().map(|t| (t.phase, t.started_ms)), Some((TrialPhase::Watching, 42)));
        assert!(matches!(s.abandon_swap(), Err(TransitionError::WrongPhase { .. })));
        let t = s.commit_trial().unwrap();
        assert_eq!((s.committed, s.max_sequence, s.trial.is_none()), (Some(t.slot), 2, true));
        assert!(s.was_committed(&t.version));
        assert!(matches!(s.commit_trial(), Err(TransitionError::NoTrial { .. })));
    }

    #[test]
    fn transitions_abandoned_path_rolls_back() {
        let mut s = State { committed: Some(SlotId::A), ..State::default() };
        assert!(matches!(s.begin_rollback("x", "t".into(), Verdict::Guilty), Err(TransitionError::NoTrial { .. })));
        s.begin_trial(a_trial(), "6.12.113").unwrap();
        assert!(matches!(s.end_rollback(None, "t".into()), Err(TransitionError::WrongPhase { .. })));
        s.begin_rollback("oops", "t".into(), Verdict::Guilty).unwrap();
        assert!(s.is_blocked(&"1.1.0".parse().unwrap()).is_some());
        // Resuming an interrupted rollback starts from rolling-back.
        s.begin_rollback("oops", "t".into(), Verdict::Guilty).unwrap();
        s.end_rollback(Some("1.0.0".into()), "t".into()).unwrap();
        let rb = s.last_rollback.clone().unwrap();
        assert_eq!((rb.from.as_str(), rb.to.as_deref(), rb.reason.as_str()), ("1.1.0", Some("1.0.0"), "oops"));
        assert_eq!((s.trial.is_none(), s.committed), (true, Some(SlotId::A)));

        s.begin_trial(a_trial(), "6.12.113").unwrap();
        assert!(matches!(
            s.rollback_pending_reboot("b".into(), "stuck", "t".into()),
            Err(TransitionError::WrongPhase { .. })
        ));
        s.begin_rollback("stuck", "t".into(), Verdict::Guilty).unwrap();
        s.rollback_pending_reboot("b".into(), "stuck", "t".into()).unwrap();
        assert_eq!(s.pending_reboot.as_ref().map(|p| p.stuck_version.as_str()), Some("1.1.0"));
        assert_eq!(s.last_rollback.as_ref().map(|r| r.reason.as_str()), Some("rollback pending reboot: stuck"));

        s.begin_trial(a_trial(), "6.12.113").unwrap();
        assert_eq!(s.abandon_swap().unwrap().version.to_string(), "1.1.0");
        assert!(s.trial.is_none());
    }

    #[test]
    fn an_inconclusive_trial_is_counted_retried_and_blocklisted_only_past_its_retries() {
        let d = tempfile::tempdir().unwrap();
        let f = StateFile::new(d.path());
        let mut s = State { committed: Some(SlotId::A), ..State::default() };
        let v: semver::Version = "1.1.0".parse().unwrap();
        let once = Verdict::Inconclusive { retries: 1 };
        s.begin_trial(a_trial(), "6.12.113").unwrap();
        s.begin_rollback("the host rebooted during the trial", "t1".into(), once).unwrap();
        s.end_rollback(Some("1.0.0".into()), "t1".into()).unwrap();
        assert_eq!((s.is_blocked(&v).is_none(), s.inconclusive_count(&v)), (true, 1), "retried once");
        // Saved, the record names the added field as optional; read back the same.
        f.save(&s).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(f.path()).unwrap()).unwrap();
        assert_eq!(doc["optional"], serde_json::json!(["inconclusive"]));
        assert_eq!(f.load().unwrap(), s);
        // The second such end blocklists it, with the count in the reason.
        s.begin_trial(a_trial(), "6.12.113").unwrap();
        s.begin_rollback("the host rebooted during the trial", "t2".into(), once).unwrap();
        let b = s.is_blocked(&v).expect("blocklisted the second time");
        assert!(b.reason.contains("2 trials ended this way"), "{}", b.reason);
        assert_eq!(s.inconclusive_count(&v), 0);
        // A commit clears the count; retries 0 blocklists at once.
        let mut s = State { committed: Some(SlotId::A), ..State::default() };
        s.begin_trial(a_trial(), "6.12.113").unwrap();
        s.begin_rollback("r", "t".into(), once).unwrap();
        s.end_rollback(None, "t".into()).unwrap();
        s.begin_trial(a_trial(), "6.12.113").unwrap();
        s.loaded(1).unwrap();
        s.commit_trial().unwrap();
        assert_eq!(s.inconclusive_count(&v), 0);
        let mut s = State { committed: Some(SlotId::A), ..State::default() };
        s.begin_trial(a_trial(), "6.12.113").unwrap();
        s.begin_rollback("r", "t".into(), Verdict::Inconclusive { retries: 0 }).unwrap();
        assert!(s.is_blocked(&v).is_some());
        // Resuming a rollback judges nothing again.
        let mut s = State { committed: Some(SlotId::A), ..State::default() };
        s.begin_trial(a_trial(), "6.12.113").unwrap();
        s.begin_rollback("r", "t".into(), once).unwrap();
        s.begin_rollback("r", "t".into(), Verdict::Unjudged).unwrap();
        assert_eq!((s.is_blocked(&v).is_none(), s.inconclusive_count(&v)), (true, 1));
    }

    #[test]
    fn fresh_save_load() {
        let d = tempfile::tempdir().unwrap();
        let f = StateFile::new(d.path());
        assert_eq!(f.load().unwrap(), State::default());
        let mut s = State { committed: Some(SlotId::B), max_sequence: 5, ..State::default() };
        s.block(Blocked { version: "1.2.0".parse().unwrap(), sequence: 9, reason: "warn".into(), at: "t".into() });
        f.save(&s).unwrap();
        assert_eq!(f.load().unwrap(), s);
        assert_eq!(s.target_slot(), SlotId::A);
        assert!(s.is_blocked(&"1.2.0".parse().unwrap()).is_some());
    }

    #[test]
    fn added_fields_are_listed_optional_and_an_interrupted_rollback_blocks_nothing() {
        let d = tempfile::tempdir().unwrap();
        let f = StateFile::new(d.path());
        let mut s = State { committed: Some(SlotId::A), ..State::default() };
        f.save(&s).unwrap();
        let plain = std::fs::read_to_string(f.path()).unwrap();
        assert!(!plain.contains("optional"), "{plain}");
        s.begin_trial(a_trial(), "6.12.111").unwrap();
        s.block_build(BlockedBuild {
            version: "1.0.0".parse().unwrap(),
            kernel_release: "6.12.113".into(),
            reason: "load failed".into(),
            at: "t".into(),
        });
        f.save(&s).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(f.path()).unwrap()).unwrap();
        assert_eq!(doc["optional"], serde_json::json!(["trial_kernel", "blocked_builds"]));
        assert_eq!(f.load().unwrap(), s);
        assert!(s.is_build_blocked(&"1.0.0".parse().unwrap(), "6.12.113").is_some());
        assert!(s.is_build_blocked(&"1.0.0".parse().unwrap(), "6.12.111").is_none());
        s.begin_rollback("rebooted into another kernel", "t".into(), Verdict::Unjudged).unwrap();
        assert!(s.is_blocked(&"1.1.0".parse().unwrap()).is_none());
        s.end_rollback(Some("1.0.0".into()), "t".into()).unwrap();
        assert_eq!(s.trial_kernel, None);
    }

    #[test]
    fn blocklist_ignores_build_metadata() {
        let mut s = State::default();
        let at = String::new();
        s.block(Blocked { version: "1.2.0".parse().unwrap(), sequence: 9, reason: "warn".into(), at: at.clone() });
        assert!(s.is_blocked(&"1.2.0+b1".parse().unwrap()).is_some());
        assert!(s.is_blocked(&"1.2.0-rc.1".parse().unwrap()).is_none());
        // Another build of the same release replaces the entry, not adds one.
        s.block(Blocked { version: "1.2.0+b2".parse().unwrap(), sequence: 10, reason: "oops".into(), at });
        assert_eq!(s.blocklist.len(), 1);
        assert_eq!(s.is_blocked(&"1.2.0".parse().unwrap()).map(|b| b.reason.as_str()), Some("oops"));
    }

    #[test]
    fn corrupt_is_reported_not_replaced() {
        let d = tempfile::tempdir().unwrap();
        let f = StateFile::new(d.path());
        std::fs::write(f.path(), b"{\"format\":1,\"committed\":\"a\"").unwrap();
        let e = f.load().unwrap_err().to_string();
        assert!(e.contains("corrupt") && e.contains("state.json"), "{e}");
        assert_eq!(std::fs::read(f.path()).unwrap(), b"{\"format\":1,\"committed\":\"a\"");
    }

    #[test]
    fn unblock_takes_the_release_off_and_nothing_else() {
        let mut s = State::default();
        let at = "2026-12-01T00:00:00Z".to_string();
        s.block(Blocked { version: "1.2.0+b1".parse().unwrap(), sequence: 9, reason: "warn".into(), at: at.clone() });
        s.block(Blocked { version: "1.3.0".parse().unwrap(), sequence: 10, reason: "oops".into(), at });
        assert!(s.unblock(&"1.4.0".parse().unwrap()).is_none());
        let gone = s.unblock(&"1.2.0".parse().unwrap()).expect("1.2.0+b1 is the same release");
        assert_eq!((gone.version.to_string(), gone.reason.as_str()), ("1.2.0+b1".into(), "warn"));
        assert!(s.is_blocked(&"1.2.0".parse().unwrap()).is_none());
        assert!(s.is_blocked(&"1.3.0".parse().unwrap()).is_some(), "the other entry stays");
    }

    #[test]
    fn blocklist_bounded() {
        let mut s = State::default();
        for i in 0..(MAX_BLOCKLIST as u64 + 10) {
            s.block(Blocked {
                version: semver::Version::new(1, 0, i),
                sequence: i,
                reason: String::new(),
                at: String::new(),
            });
        }
        assert_eq!(s.blocklist.len(), MAX_BLOCKLIST);
        assert_eq!(s.blocklist[0].version, semver::Version::new(1, 0, 10));
    }

    /// A record as this release and the one before it write it.
    const TODAY: &str = "{\n  \"format\": 1,\n  \"committed\": \"b\",\n  \"trial\": null,\n  \"max_sequence\": 7,\n  \"blocklist\": [],\n  \"last_rollback\": null,\n  \"pending_reboot\": null,\n  \"committed_versions\": [\n    \"1.0.0\",\n    \"1.1.0\"\n  ]\n}\n";

    fn file_with(text: &str) -> (tempfile::TempDir, StateFile) {
        let d = tempfile::tempdir().unwrap();
        let f = StateFile::new(d.path());
        std::fs::write(f.path(), text).unwrap();
        (d, f)
    }

    #[test]
    fn todays_record_loads_unchanged_and_saves_byte_for_byte() {
        let (_d, f) = file_with(TODAY);
        let s = f.load().unwrap();
        assert_eq!(s.committed, Some(SlotId::B));
        assert!(s.was_committed(&"1.1.0".parse().unwrap()));
        assert_eq!(std::fs::read_to_string(f.path()).unwrap(), TODAY, "a current record is never rewritten by a load");
        f.save(&s).unwrap();
        assert_eq!(std::fs::read_to_string(f.path()).unwrap(), TODAY);
    }

    #[test]
    fn older_reader_keeps_a_newer_optional_field_through_a_rewrite() {
        let newer = TODAY.replace(
            "\"format\": 1,",
            "\"format\": 1,\n  \"optional\": [\"fleet_ring\"],\n  \"fleet_ring\": {\"ring\": 2, \"since\": \"t\"},",
        );
        let (_d, f) = file_with(&newer);
        let mut s = f.load().unwrap();
        assert_eq!(s.max_sequence, 7);
        assert_eq!(s.optional.get("fleet_ring"), Some(&serde_json::json!({"ring": 2, "since": "t"})));
        s.max_sequence = 8;
        f.save(&s).unwrap();
        let back: serde_json::Value = serde_json::from_slice(&std::fs::read(f.path()).unwrap()).unwrap();
        assert_eq!(back["fleet_ring"], serde_json::json!({"ring": 2, "since": "t"}));
        assert_eq!(back["optional"], serde_json::json!(["fleet_ring"]));
        assert_eq!(back["max_sequence"], 8);
        assert_eq!(f.load().unwrap(), s);
        // A field the record does not list is not optional: refused, and left as it was.
        let unlisted = TODAY.replace("\"format\": 1,", "\"format\": 1,\n  \"fleet_ring\": 2,");
        let (_d, f) = file_with(&unlisted);
        let e = f.load().unwrap_err();
        assert!(matches!(e, StateError::Corrupt { .. }) && e.to_string().contains("fleet_ring"), "{e}");
        assert_eq!(std::fs::read_to_string(f.path()).unwrap(), unlisted);
    }

    #[test]
    fn newer_format_is_refused_with_a_typed_error_and_left_as_is() {
        // The downgrade case: this build reading a record of a later format.
        let newer = TODAY.replace("\"format\": 1,", "\"format\": 2,\n  \"slots_v2\": {},");
        let (_d, f) = file_with(&newer);
        let e = f.load().unwrap_err();
        assert!(matches!(e, StateError::NewerFormat { found: 2, supported: STATE_FORMAT, .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("newer milspecd") && text.contains("Upgrade milspecd") && text.contains("changed nothing"),
            "{text}"
        );
        assert_eq!(std::fs::read_to_string(f.path()).unwrap(), newer);
    }

    #[test]
    fn record_without_format_is_1_and_migrated_after_it_loaded() {
        let old = TODAY.replace("  \"format\": 1,\n", "");
        let (_d, f) = file_with(&old);
        let s = f.load().unwrap();
        assert_eq!(s.format, 1);
        assert_eq!(s.committed, Some(SlotId::B));
        // Written back in this build's format, atomically, with nothing lost.
        assert_eq!(std::fs::read_to_string(f.path()).unwrap(), TODAY);
        assert_eq!(f.load().unwrap(), s);
        // A record without format that does not load is not rewritten.
        let broken = old.replace("\"b\"", "\"c\"");
        let (_d, f) = file_with(&broken);
        assert!(matches!(f.load(), Err(StateError::Corrupt { .. })));
        assert_eq!(std::fs::read_to_string(f.path()).unwrap(), broken);
    }

    #[test]
    fn bad_format_numbers_and_duplicates_are_corrupt() {
        for bad in ["0", "-1", "\"1\"", "1.5"] {
            let (_d, f) = file_with(&TODAY.replace("\"format\": 1,", &format!("\"format\": {bad},")));
            assert!(matches!(f.load(), Err(StateError::Corrupt { .. })), "{bad}");
        }
        let (_d, f) = file_with(&TODAY.replace("\"format\": 1,", "\"format\": 1,\n  \"max_sequence\": 99,"));
        let e = f.load().unwrap_err();
        assert!(e.to_string().contains("duplicate field `max_sequence`"), "{e}");
    }
}
