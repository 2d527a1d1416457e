//! `/proc/milspec/status`: the module's own, machine-readable view of itself.
//!
//! The module writes one `key: value` per line. [`parse`] turns that text
//! into a [`ModuleStatus`]; reading the file is left to the caller
//! ([`crate::health::snapshot`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Largest status text accepted; the real one is a few hundred bytes.
pub const MAX_STATUS: usize = 64 * 1024;

/// Longest piece of a bad line quoted back in an error.
const QUOTE_MAX: usize = 80;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StatusError {
    #[error("status text is {len} bytes, more than the {MAX_STATUS} accepted")]
    TooLarge { len: usize },
    #[error("status line {line_no} `{line}` is not `key: value`")]
    BadLine { line_no: usize, line: String },
    #[error("status line {line_no} repeats key `{key}`")]
    Duplicate { line_no: usize, key: String },
    #[error("status has no `{key}` line")]
    Missing { key: &'static str },
    #[error("status `{key}: {value}` is not {expected}")]
    BadValue { key: &'static str, value: String, expected: &'static str },
}

/// The module's overall state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleState {
    Ok,
    /// Running, but it has counted errors.
    Degraded,
    Failed,
}

impl ModuleState {
    pub fn as_str(self) -> &'static str {
        match self {
            ModuleState::Ok => "ok",
            ModuleState::Degraded => "degraded",
            ModuleState::Failed => "failed",
        }
    }
}

impl fmt::Display for ModuleState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Result of the module's load-time self-test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selftest {
    Pass,
    Fail,
}

/// A parsed `/proc/milspec/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleStatus {
    pub version: String,
    pub state: ModuleState,
    pub selftest: Selftest,
    pub mode5_level: u32,
    pub errors: u64,
    /// Boot-time nanoseconds at which the module finished loading.
    pub loaded_at: u64,
    /// Keys this parser does not interpret (`forced`, `fault`, ...), kept for display.
    pub other: BTreeMap<String, String>,
}

impl ModuleStatus {
    /// The value of one key as the file shows it (`None` if absent).
    pub fn value(&self, key: &str) -> Option<String> {
        Some(match key {
            "version" => self.version.clone(),
            "state" => self.state.as_str().to_string(),
            "selftest" => match self.selftest {
                Selftest::Pass => "pass".into(),
                Selftest::Fail => "fail".into(),
            },
            "mode5_level" => self.mode5_level.to_string(),
            "errors" => self.errors.to_string(),
            "loaded_at" => self.loaded_at.to_string(),
            other => return self.other.get(other).cloned(),
        })
    }

    /// Whether the module reports itself as broken.
    pub fn is_failed(&self) -> bool {
        self.state == ModuleState::Failed || self.selftest == Selftest::Fail
    }
}

/// Parses the text of `/proc/milspec/status`.
///
/// Blank lines are skipped and whitespace around keys and values is
/// ignored. Every known key must appear exactly once.
pub fn parse(text: &str) -> Result<ModuleStatus, StatusError> {
    if text.len() > MAX_STATUS {
        return Err(StatusError::TooLarge { len: text.len() });
    }
    let mut fields = split_lines(text)?;
    let mut take = |key: &'static str| fields.remove(key).ok_or(StatusError::Missing { key });
    let version = take("version")?;
    let state = match take("state")?.as_str() {
        "ok" => ModuleState::Ok,
        "degraded" => ModuleState::Degraded,
        "failed" => ModuleState::Failed,
        other => return Err(bad_value("state", other, "ok, degraded or failed")),
    };
    let selftest = match take("selftest")?.as_str() {
        "pass" => Selftest::Pass,
        "fail" => Selftest::Fail,
        other => return Err(bad_value("selftest", other, "pass or fail")),
    };
    let mode5_level = number("mode5_level", &take("mode5_level")?)?;
    let errors = number("errors", &take("errors")?)?;
    let loaded_at = number("loaded_at", &take("loaded_at")?)?;
    Ok(ModuleStatus { version, state, selftest, mode5_level, errors, loaded_at, other: fields })
}

/// Splits `key: value` lines into a map, rejecting malformed and repeated lines.
fn split_lines(text: &str) -> Result<BTreeMap<String, String>, StatusError> {
    let mut fields = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let bad = || StatusError::BadLine { line_no, line: quote(line) };
        let (key, value) = line.split_once(':').ok_or_else(bad)?;
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(bad());
        }
        if fields.insert(key.to_string(), value.trim().to_string()).is_some() {
            return Err(StatusError::Duplicate { line_no, key: key.to_string() });
        }
    }
    Ok(fields)
}

fn number<T: std::str::FromStr>(key: &'static str, value: &str) -> Result<T, StatusError> {
    value.parse().map_err(|_| bad_value(key, value, "a non-negative whole number"))
}

fn bad_value(key: &'static str, value: &str, expected: &'static str) -> StatusError {
    StatusError::BadValue { key, value: quote(value), expected }
}

/// A bounded, single-line copy of untrusted text for an error message.
fn quote(s: &str) -> String {
    let mut out: String = s.chars().take(QUOTE_MAX).flat_map(char::escape_debug).collect();
    if s.chars().count() > QUOTE_MAX {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn ok_fixture() {
        let s = parse(&fixture("status-ok.txt")).unwrap();
        assert_eq!(s.version, "1.2.0");
        assert_eq!(s.state, ModuleState::Ok);
        assert_eq!(s.selftest, Selftest::Pass);
        assert_eq!(s.mode5_level, 0);
        assert_eq!(s.errors, 0);
        assert_eq!(s.loaded_at, 5_123_456_789);
        assert_eq!(s.other.get("forced").map(String::as_str), Some("0"));
        assert!(!s.is_failed());
    }

    #[test]
    fn failed_fixture() {
        let s = parse(&fixture("status-failed.txt")).unwrap();
        assert_eq!(s.state, ModuleState::Failed);
        assert_eq!(s.selftest, Selftest::Fail);
        assert_eq!(s.errors, 2);
        assert_eq!(s.other.get("fault").map(String::as_str), Some("selftest"));
        assert!(s.is_failed());
    }

    #[test]
    fn selftest_fail_alone_is_failed() {
        let text = fixture("status-ok.txt").replace("selftest: pass", "selftest: fail");
        let s = parse(&text).unwrap();
        assert_eq!(s.state, ModuleState::Ok);
        assert!(s.is_failed());
    }

    #[test]
    fn degraded_is_not_failed() {
        let s = parse(&fixture("status-degraded.txt")).unwrap();
        assert_eq!(s.state, ModuleState::Degraded);
        assert!(!s.is_failed());
    }

    #[test]
    fn tolerates_whitespace() {
        let text = "\n  version :  1.0.0 \nstate:ok\n\tselftest:\tpass\nmode5_level: 3\nerrors: 0\nloaded_at: 1\n\n";
        let s = parse(text).unwrap();
        assert_eq!((s.version.as_str(), s.mode5_level), ("1.0.0", 3));
    }

    #[test]
    fn garbage_names_the_line() {
        let e = parse(&fixture("status-garbage.txt")).unwrap_err();
        assert!(matches!(e, StatusError::BadLine { line_no: 2, .. }), "{e}");
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn bad_values_and_missing_keys() {
        let ok = fixture("status-ok.txt");
        for (text, want) in [
            (ok.replace("state: ok", "state: confused"), "ok, degraded or failed"),
            (ok.replace("errors: 0", "errors: -1"), "whole number"),
            (ok.replace("version: 1.2.0\n", ""), "no `version`"),
            (format!("{ok}state: ok\n"), "repeats key `state`"),
            (String::from("\u{0}\u{1}binary"), "not `key: value`"),
        ] {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{e} !~ {want}");
        }
    }

    #[test]
    fn oversized_is_refused() {
        let text = format!("{}{}", fixture("status-ok.txt"), "x: y\n".repeat(MAX_STATUS / 4));
        assert!(matches!(parse(&text), Err(StatusError::TooLarge { .. })));
    }

    #[test]
    fn long_lines_are_quoted_bounded() {
        let e = parse(&"z".repeat(10_000)).unwrap_err().to_string();
        assert!(e.len() < 300, "{e}");
    }

    #[test]
    fn serde_round_trip() {
        let s = parse(&fixture("status-ok.txt")).unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"state\":\"ok\""), "{json}");
        assert_eq!(serde_json::from_str::<ModuleStatus>(&json).unwrap(), s);
    }
}
