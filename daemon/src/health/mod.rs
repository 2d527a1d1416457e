//! Health of the loaded module: what "healthy" means and how it is watched.
//!
//! - [`status`]: the module's own `/proc/milspec/status`, typed.
//! - [`kmsg`]: kernel log records and the fault-report matcher.
//! - [`snapshot`]: counters, taint and status read at one moment, and the
//!   pure rule that compares a snapshot with a baseline.
//! - [`attribution`]: whether a counter rise is the module's fault, and
//!   what an unattributed one does.
//! - [`checks`]: operator-supplied executables in `required.d/` and `wanted.d/`.
//! - [`declared`]: typed checks declared in `health.d/*.toml`, and
//!   [`probe`], which runs one.
//! - [`watch`]: the probation loop tying them together.
//! - [`committed_watch`]: the committed module looked at between actions,
//!   and [`after_commit`], what a fault it shows does.

use std::fmt;

use serde::{Deserialize, Serialize};

pub mod after_commit;
pub mod attribution;
pub mod checks;
pub mod committed_watch;
pub mod declared;
pub mod kmsg;
pub mod probe;
pub mod snapshot;
pub mod status;
pub mod watch;

pub use attribution::{Unattributed, UnattributedRise};
pub use snapshot::{assess, Snapshot};
pub use status::ModuleStatus;
pub use watch::{WatchOptions, WatchOutcome, Watcher};

/// Taint bit 12, `O`: an out-of-tree module was loaded.
pub const TAINT_OOT_MODULE: u64 = 1 << 12;
/// Taint bit 13, `E`: an unsigned module was loaded.
pub const TAINT_UNSIGNED_MODULE: u64 = 1 << 13;
/// Taint bits that loading the module sets by itself, ignored by default.
pub const DEFAULT_IGNORED_TAINT: u64 = TAINT_OOT_MODULE | TAINT_UNSIGNED_MODULE;

/// The kernel's taint flags by bit number: letter and meaning, as the
/// kernel's `Documentation/admin-guide/tainted-kernels.rst` gives them.
pub const TAINT_FLAGS: [(char, &str); 20] = [
    ('P', "proprietary module was loaded"),
    ('F', "module was force loaded"),
    ('S', "kernel running on an out of specification system"),
    ('R', "module was force unloaded"),
    ('M', "processor reported a Machine Check Exception (MCE)"),
    ('B', "bad page referenced or some unexpected page flags"),
    ('U', "taint requested by userspace application"),
    ('D', "kernel died recently, i.e. there was an OOPS or BUG"),
    ('A', "ACPI table overridden by user"),
    ('W', "kernel issued warning"),
    ('C', "staging driver was loaded"),
    ('I', "workaround for bug in platform firmware applied"),
    ('O', "externally-built (\"out-of-tree\") module was loaded"),
    ('E', "unsigned module was loaded"),
    ('L', "soft lockup occurred"),
    ('K', "kernel has been live patched"),
    ('X', "auxiliary taint, defined for and used by distros"),
    ('T', "kernel was built with the struct randomization plugin"),
    ('N', "an in-kernel test has been run"),
    ('J', "userspace used a mutating debug operation in fwctl"),
];

/// One set bit of the kernel's taint mask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaintFlag {
    pub bit: u32,
    /// The kernel's letter; `None` for a bit this table does not know.
    pub letter: Option<char>,
    pub meaning: String,
}

/// Every set bit of `bits`, lowest first, with its letter and meaning (pure).
pub fn decode_taint(bits: u64) -> Vec<TaintFlag> {
    (0..64u32)
        .filter(|bit| bits & (1u64 << bit) != 0)
        .map(|bit| match TAINT_FLAGS.get(bit as usize) {
            Some((letter, meaning)) => TaintFlag { bit, letter: Some(*letter), meaning: (*meaning).to_string() },
            None => TaintFlag { bit, letter: None, meaning: format!("taint bit {bit}, unknown to this milspecd") },
        })
        .collect()
}

/// Why a module on probation is judged unhealthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Unhealthy {
    OopsRose {
        from: u64,
        to: u64,
    },
    WarnRose {
        from: u64,
        to: u64,
    },
    /// `letters` is the readable form of `bits`, e.g. `W (bit 9)`.
    TaintAdded {
        bits: u64,
        letters: String,
    },
    StatusFailed {
        state: String,
    },
    SelftestFailed,
    StatusMissing,
    StatusUnreadable {
        why: String,
    },
    KernelLog {
        line: String,
    },
    CheckFailed {
        name: String,
        why: String,
    },
}

impl Unhealthy {
    /// A short, stable name for the rule that fired.
    pub fn kind(&self) -> &'static str {
        match self {
            Unhealthy::OopsRose { .. } => "oops",
            Unhealthy::WarnRose { .. } => "warn",
            Unhealthy::TaintAdded { .. } => "taint",
            Unhealthy::StatusFailed { .. } | Unhealthy::StatusMissing | Unhealthy::StatusUnreadable { .. } => "status",
            Unhealthy::SelftestFailed => "selftest",
            Unhealthy::KernelLog { .. } => "kmsg",
            Unhealthy::CheckFailed { .. } => "check",
        }
    }

    /// The `TaintAdded` reason for newly set `bits`.
    pub fn taint_added(bits: u64) -> Self {
        Unhealthy::TaintAdded { bits, letters: taint_letters(bits) }
    }
}

impl fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unhealthy::OopsRose { from, to } => write!(f, "oops_count rose from {from} to {to}"),
            Unhealthy::WarnRose { from, to } => write!(f, "warn_count rose from {from} to {to}"),
            Unhealthy::TaintAdded { letters, .. } => write!(f, "taint bits added: {letters}"),
            Unhealthy::StatusFailed { state } => write!(f, "module reports state {state}"),
            Unhealthy::SelftestFailed => f.write_str("module self-test failed"),
            Unhealthy::StatusMissing => f.write_str("module status file is missing"),
            Unhealthy::StatusUnreadable { why } => write!(f, "module status is unreadable: {why}"),
            Unhealthy::KernelLog { line } => write!(f, "kernel log: {line}"),
            Unhealthy::CheckFailed { name, why } => write!(f, "health check {name} failed: {why}"),
        }
    }
}

/// Names taint bits the way the kernel does: `W (bit 9), D (bit 7)`,
/// lowest bit first; bits without a letter as `bit 25`.
pub fn taint_letters(bits: u64) -> String {
    decode_taint(bits)
        .iter()
        .map(|f| match f.letter {
            Some(letter) => format!("{letter} (bit {})", f.bit),
            None => format!("bit {}", f.bit),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_taint_bit_is_decoded_with_its_letter_and_meaning() {
        assert_eq!(decode_taint(0), []);
        let all: String = decode_taint((1 << 20) - 1).iter().filter_map(|f| f.letter).collect();
        assert_eq!(all, "PFSRMBUDAWCIOELKXTNJ");
        let f = decode_taint(DEFAULT_IGNORED_TAINT | (1 << 9));
        let got: Vec<(u32, Option<char>)> = f.iter().map(|f| (f.bit, f.letter)).collect();
        assert_eq!(got, [(9, Some('W')), (12, Some('O')), (13, Some('E'))]);
        assert_eq!(f[0].meaning, "kernel issued warning");
        assert_eq!(f[2].meaning, "unsigned module was loaded");
        let unknown = decode_taint(1 << 63);
        assert_eq!((unknown[0].bit, unknown[0].letter), (63, None));
        assert!(unknown[0].meaning.contains("63"), "{unknown:?}");
        assert!(decode_taint(u64::MAX).iter().all(|f| !f.meaning.is_empty()));
    }

    #[test]
    fn taint_names() {
        assert_eq!(taint_letters(1 << 9), "W (bit 9)");
        assert_eq!(taint_letters((1 << 7) | (1 << 9)), "D (bit 7), W (bit 9)");
        assert_eq!(taint_letters(DEFAULT_IGNORED_TAINT), "O (bit 12), E (bit 13)");
        assert_eq!(taint_letters(1 << 19), "J (bit 19)");
        assert_eq!(taint_letters(1 << 25), "bit 25");
        assert_eq!(taint_letters(0), "");
    }

    #[test]
    fn messages_kinds_and_serde() {
        let cases = [
            (Unhealthy::WarnRose { from: 0, to: 1 }, "warn", "warn_count rose from 0 to 1"),
            (Unhealthy::OopsRose { from: 2, to: 3 }, "oops", "oops_count rose from 2 to 3"),
            (Unhealthy::taint_added(1 << 9), "taint", "taint bits added: W (bit 9)"),
            (Unhealthy::StatusFailed { state: "failed".into() }, "status", "module reports state failed"),
            (Unhealthy::SelftestFailed, "selftest", "module self-test failed"),
            (Unhealthy::StatusMissing, "status", "module status file is missing"),
            (
                Unhealthy::KernelLog { line: "WARNING: CPU: 0 PID: 1 at x [dell_milspec]".into() },
                "kmsg",
                "kernel log: WARNING: CPU: 0 PID: 1 at x [dell_milspec]",
            ),
            (
                Unhealthy::CheckFailed { name: "10-ping".into(), why: "exit status 1: no reply".into() },
                "check",
                "health check 10-ping failed: exit status 1: no reply",
            ),
        ];
        for (u, kind, msg) in cases {
            assert_eq!((u.kind(), u.to_string().as_str()), (kind, msg));
            let json = serde_json::to_string(&u).unwrap();
            assert_eq!(serde_json::from_str::<Unhealthy>(&json).unwrap(), u, "{json}");
        }
    }
}
