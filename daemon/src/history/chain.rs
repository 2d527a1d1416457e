//! The hash chain over the history's records, and its verification.
//!
//! Each record holds `n` (its sequence number, from 1, continuing across
//! rotated files) and `prev`, the hex SHA-256 of the previous record's
//! exact line bytes (without the newline); the very first record holds
//! [`GENESIS`]. [`ChainVerifier`] is pure: it is fed the lines in order
//! and says whether they still form that chain, or which record is the
//! first one that does not.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// `prev` of the first record ever written.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of one record: hex SHA-256 of its line, without the newline.
pub fn line_hash(line: &[u8]) -> String {
    hex(&Sha256::digest(line))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The chain fields of one line, read without trusting the rest.
#[derive(Debug, serde::Deserialize)]
struct Link {
    #[serde(default)]
    n: Option<u64>,
    #[serde(default)]
    prev: Option<String>,
}

/// What is wrong with the first broken record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Break {
    /// Its `prev` is not the hash of the record before it: that one (or
    /// this one) was edited.
    #[error("its prev is not the hash of the record before it (that record or this one was edited)")]
    BadPrev { expected: String, found: String },
    /// Numbers are missing before it: records were deleted.
    #[error("record {expected} is missing (found {found} next): records were deleted")]
    Gap { expected: u64, found: u64 },
    /// It is out of order: records were moved.
    #[error("record {found} is out of order (expected {expected}): records were reordered")]
    Reordered { expected: u64, found: u64 },
    /// It is not a history record at all.
    #[error("the line is not a history record (bad JSON, or longer than any record)")]
    BadJson,
    /// It has no chain fields, yet comes after chained records.
    #[error("the record has no n/prev but follows chained records")]
    Unchained,
    /// The chain starts past record 1 right after records with no chain
    /// fields: the records before it were stripped of theirs (and maybe
    /// rewritten). A chain that retention cut starts at the head of a file.
    #[error("the chain starts at record {found} after records with no n/prev: the records before it were rewritten")]
    Unanchored { found: u64 },
}

/// Where the first broken record is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Broken {
    /// The file's name (`history.jsonl`, `history.jsonl.3`).
    pub file: String,
    /// Its line in that file, from 1.
    pub line: u64,
    /// Its `n`, if it could be read.
    pub n: Option<u64>,
    pub what: Break,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} line {}", self.file, self.line)?;
        if let Some(n) = self.n {
            write!(f, " (record {n})")?;
        }
        write!(f, ": {}", self.what)
    }
}

/// What the chain begins with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Anchor {
    /// Record 1, whose `prev` is [`GENESIS`]: the whole history is here.
    Genesis,
    /// Older files were dropped by retention: the oldest kept record,
    /// record `n`, is taken as the anchor (compare its hash with the
    /// forwarded journal's `MILSPEC_RECORD_HASH`).
    Retained { n: u64 },
    /// No chained record yet.
    Empty,
}

/// A chain that verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// Chained records checked.
    pub records: u64,
    pub first_n: Option<u64>,
    pub last_n: Option<u64>,
    /// The hash of the newest record: compare it with the newest
    /// `MILSPEC_RECORD_HASH` in the forwarded journal.
    pub last_hash: Option<String>,
    pub anchor: Anchor,
    /// Records written before the chain existed (no `n`/`prev`), all
    /// before the first chained one.
    pub unchained: u64,
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Verdict {
    Ok(Verified),
    Broken(Broken),
}

/// `milspec.history-verify/1`: a verification as `milspecd history
/// --verify --json`, `milspecctl history --verify --json` and the D-Bus
/// method `VerifyHistory` give it (docs/json.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub schema: &'static str,
    /// `ok` or `broken`.
    pub result: &'static str,
    pub records: u64,
    pub first_n: Option<u64>,
    pub last_n: Option<u64>,
    pub last_hash: Option<String>,
    pub anchor: Option<Anchor>,
    pub unchained: u64,
    /// The first broken record (null when the chain verified).
    pub broken: Option<Broken>,
    /// One line for an operator.
    pub message: String,
}

/// The schema name of [`VerifyReport`].
pub const VERIFY_SCHEMA: &str = milspec_interface::json::HISTORY_VERIFY;

impl VerifyReport {
    pub fn new(v: &Verdict) -> Self {
        let message = v.to_string();
        match v {
            Verdict::Ok(ok) => VerifyReport {
                schema: VERIFY_SCHEMA,
                result: "ok",
                records: ok.records,
                first_n: ok.first_n,
                last_n: ok.last_n,
                last_hash: ok.last_hash.clone(),
                anchor: Some(ok.anchor),
                unchained: ok.unchained,
                broken: None,
                message,
            },
            Verdict::Broken(b) => VerifyReport {
                schema: VERIFY_SCHEMA,
                result: "broken",
                records: 0,
                first_n: None,
                last_n: None,
                last_hash: None,
                anchor: None,
                unchained: 0,
                broken: Some(b.clone()),
                message,
            },
        }
    }
}

impl Verdict {
    /// 0 verified, 2 broken.
    pub fn exit_code(&self) -> u8 {
        match self {
            Verdict::Ok(_) => 0,
            Verdict::Broken(_) => 2,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Broken(b) => write!(f, "history chain broken at {b}"),
            Verdict::Ok(v) => {
                match (v.first_n, v.last_n) {
                    (Some(a), Some(z)) => write!(f, "history chain verified: {} records, {a} to {z}", v.records)?,
                    _ => f.write_str("history chain verified: no chained record yet")?,
                }
                match v.anchor {
                    Anchor::Genesis => f.write_str(", from the first record")?,
                    Anchor::Retained { n } => write!(
                        f,
                        ", anchored at record {n} (older files were dropped by retention: compare its hash with the forwarded journal)"
                    )?,
                    Anchor::Empty => {}
                }
                if v.unchained > 0 {
                    write!(f, "; {} older records before the chain have no hash", v.unchained)?;
                }
                if let Some(h) = &v.last_hash {
                    write!(f, "; last hash {h}")?;
                }
                Ok(())
            }
        }
    }
}

/// Checks lines, fed in order, against the chain.
#[derive(Debug, Default)]
pub struct ChainVerifier {
    /// The previous chained record: its n and its hash.
    last: Option<(u64, String)>,
    first_n: Option<u64>,
    records: u64,
    unchained: u64,
    /// A gap seen on the last line: it becomes `Reordered` if the missing
    /// number turns up next, else it is reported as a gap.
    suspect: Option<Broken>,
    broken: Option<Broken>,
}

impl ChainVerifier {
    pub fn new() -> Self {
        ChainVerifier::default()
    }

    /// Whether a broken record was found (nothing more is checked then).
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// Feeds one line (without its newline) of `file`, line number `line`.
    pub fn feed(&mut self, file: &str, line: u64, bytes: &[u8]) {
        if self.broken.is_some() {
            return;
        }
        let at = |n, what| Broken { file: file.to_string(), line, n, what };
        let link = if bytes.len() > super::event::MAX_LINE { None } else { serde_json::from_slice::<Link>(bytes).ok() };
        let Some(link) = link else {
            return self.fail(at(None, Break::BadJson));
        };
        if let Some(s) = self.suspect.take() {
            // The number the gap skipped came next: moved, not deleted.
            let reordered = match (&s.what, link.n) {
                (Break::Gap { expected, found }, Some(n)) if n < *found => Some((*expected, *found)),
                _ => None,
            };
            let (expected, found) = reordered.unwrap_or_default();
            self.broken =
                Some(if reordered.is_some() { Broken { what: Break::Reordered { expected, found }, ..s } } else { s });
            return;
        }
        let (n, prev) = match (link.n, link.prev) {
            (Some(n), Some(prev)) => (n, prev),
            (None, None) if self.last.is_none() => {
                self.unchained += 1;
                return;
            }
            (n, _) => return self.fail(at(n, Break::Unchained)),
        };
        match &self.last {
            None => {
                if n > 1 && self.unchained > 0 {
                    return self.fail(at(Some(n), Break::Unanchored { found: n }));
                }
                if n == 1 && prev != GENESIS {
                    let found = milspec_format::text::sanitize_to(&prev, 80);
                    return self.fail(at(Some(n), Break::BadPrev { expected: GENESIS.into(), found }));
                }
                self.first_n = Some(n);
            }
            Some((last_n, last_hash)) => {
                let expected = last_n.saturating_add(1);
                if n < expected {
                    return self.fail(at(Some(n), Break::Reordered { expected, found: n }));
                }
                if n > expected {
                    self.suspect = Some(at(Some(n), Break::Gap { expected, found: n }));
                    return;
                }
                if &prev != last_hash {
                    let found = milspec_format::text::sanitize_to(&prev, 80);
                    return self.fail(at(Some(n), Break::BadPrev { expected: last_hash.clone(), found }));
                }
            }
        }
        self.records += 1;
        self.last = Some((n, line_hash(bytes)));
    }

    fn fail(&mut self, b: Broken) {
        self.broken = Some(b);
    }

    /// The verdict over every line fed.
    pub fn finish(mut self) -> Verdict {
        if let Some(b) = self.broken.take().or(self.suspect.take()) {
            return Verdict::Broken(b);
        }
        let anchor = match self.first_n {
            None => Anchor::Empty,
            Some(1) => Anchor::Genesis,
            Some(n) => Anchor::Retained { n },
        };
        let (last_n, last_hash) = self.last.map_or((None, None), |(n, h)| (Some(n), Some(h)));
        Verdict::Ok(Verified {
            records: self.records,
            first_n: self.first_n,
            last_n,
            last_hash,
            anchor,
            unchained: self.unchained,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `count` chained lines, as the history writes them.
    fn chain(count: u64) -> Vec<String> {
        let mut prev = GENESIS.to_string();
        (1..=count)
            .map(|n| {
                let line = format!(r#"{{"n":{n},"prev":"{prev}","at":"2026-01-01T00:00:00Z","event":"staged"}}"#);
                prev = line_hash(line.as_bytes());
                line
            })
            .collect()
    }

    fn verify(lines: &[String]) -> Verdict {
        let mut v = ChainVerifier::new();
        for (i, l) in lines.iter().enumerate() {
            v.feed("history.jsonl", i as u64 + 1, l.as_bytes());
        }
        v.finish()
    }

    fn broken(lines: &[String]) -> Broken {
        match verify(lines) {
            Verdict::Broken(b) => b,
            Verdict::Ok(v) => panic!("verified: {v:?}"),
        }
    }

    #[test]
    fn an_intact_chain_verifies() {
        let lines = chain(5);
        let Verdict::Ok(v) = verify(&lines) else { panic!() };
        assert_eq!((v.records, v.first_n, v.last_n, v.anchor), (5, Some(1), Some(5), Anchor::Genesis));
        assert_eq!(v.last_hash, Some(line_hash(lines[4].as_bytes())));
        assert_eq!(
            verify(&[]),
            Verdict::Ok(Verified {
                records: 0,
                first_n: None,
                last_n: None,
                last_hash: None,
                anchor: Anchor::Empty,
                unchained: 0
            })
        );
    }

    #[test]
    fn an_edited_record_breaks_the_next_link() {
        let mut lines = chain(5);
        lines[2] = lines[2].replace("staged", "swapped");
        let b = broken(&lines);
        assert_eq!((b.line, b.n), (4, Some(4)));
        assert!(matches!(b.what, Break::BadPrev { .. }), "{b:?}");
    }

    #[test]
    fn a_deleted_record_is_a_gap() {
        let mut lines = chain(5);
        lines.remove(2);
        let b = broken(&lines);
        assert_eq!((b.line, b.n, b.what), (3, Some(4), Break::Gap { expected: 3, found: 4 }));
        // The last one deleted too: still a gap, reported at the end.
        let mut lines = chain(3);
        lines.remove(1);
        assert_eq!(broken(&lines).what, Break::Gap { expected: 2, found: 3 });
    }

    #[test]
    fn a_reordered_record_is_named() {
        let mut lines = chain(5);
        lines.swap(1, 2);
        let b = broken(&lines);
        assert_eq!((b.line, b.what), (2, Break::Reordered { expected: 2, found: 3 }));
        let mut lines = chain(5);
        let moved = lines.remove(1);
        lines.push(moved);
        assert!(matches!(broken(&lines).what, Break::Gap { .. } | Break::Reordered { .. }));
    }

    #[test]
    fn bad_json_and_a_forged_genesis_are_broken() {
        let mut lines = chain(3);
        lines[1] = "{not json".into();
        assert_eq!(broken(&lines).what, Break::BadJson);
        let first = chain(1)[0].replace(GENESIS, &"1".repeat(64));
        assert!(matches!(broken(&[first]).what, Break::BadPrev { .. }));
    }

    #[test]
    fn unchained_records_before_the_chain_are_counted_and_after_it_break_it() {
        let old = r#"{"at":"2025-01-01T00:00:00Z","event":"committed"}"#.to_string();
        let mut lines = vec![old.clone(), old.clone()];
        lines.extend(chain(2));
        let Verdict::Ok(v) = verify(&lines) else { panic!() };
        assert_eq!((v.unchained, v.records), (2, 2));
        lines.push(old);
        assert_eq!(broken(&lines).what, Break::Unchained);
    }

    #[test]
    fn reports_say_what_verified_or_where_it_broke() {
        let lines = chain(3);
        let ok = verify(&lines);
        let r = VerifyReport::new(&ok);
        assert_eq!((r.result, r.records, ok.exit_code()), ("ok", 3, 0));
        assert!(r.message.contains("3 records, 1 to 3"), "{}", r.message);
        let mut bad = lines.clone();
        bad.remove(1);
        let v = verify(&bad);
        let r = VerifyReport::new(&v);
        assert_eq!((r.result, v.exit_code()), ("broken", 2));
        assert_eq!(r.message, "history chain broken at history.jsonl line 2 (record 3): record 2 is missing (found 3 next): records were deleted");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["broken"]["what"]["kind"], "gap");
    }

    #[test]
    fn a_chain_that_starts_later_is_anchored_there() {
        let lines = chain(6);
        let Verdict::Ok(v) = verify(&lines[3..]) else { panic!() };
        assert_eq!((v.anchor, v.first_n, v.records), (Anchor::Retained { n: 4 }, Some(4), 3));
    }

    #[test]
    fn records_stripped_of_their_chain_fields_are_found() {
        // Records 1-3 rewritten without n/prev, record 4 left as it was.
        let mut lines = chain(6);
        for l in &mut lines[..3] {
            *l = r#"{"at":"2026-01-01T00:00:00Z","event":"committed","version":"6.6.6"}"#.into();
        }
        let b = broken(&lines);
        assert_eq!((b.line, b.n, b.what), (4, Some(4), Break::Unanchored { found: 4 }));
        // Records older than the chain before its record 1 are fine.
        let mut lines = chain(2);
        lines.insert(0, r#"{"at":"2025-01-01T00:00:00Z","event":"staged"}"#.into());
        assert!(matches!(verify(&lines), Verdict::Ok(v) if v.unchained == 1 && v.records == 2));
    }
}
