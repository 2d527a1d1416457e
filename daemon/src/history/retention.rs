//! Which rotated history files to drop: a pure decision over their ages
//! and sizes. The live file is never dropped; of the rotated ones, those
//! whose newest record is older than the retention period go first, then
//! the oldest while all the files together are over the size bound.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `[history]` in the config: how long and how much rotated history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Rotated files whose newest record is older than this are dropped
    /// (humantime: `365d`, `90d`, `8w`).
    #[serde(serialize_with = "ser_duration", deserialize_with = "de_duration")]
    pub retention: Duration,
    /// All history files together, at most (`256 MiB`, `1 GiB`, `512 KiB`
    /// or a number of bytes): the oldest rotated files go first.
    #[serde(serialize_with = "ser_size", deserialize_with = "de_size")]
    pub max_size: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        let r = Retention::default();
        HistoryConfig { retention: r.period, max_size: r.max_size }
    }
}

impl HistoryConfig {
    /// Smallest `max_size`: a few rotated files.
    pub const MIN_SIZE: u64 = 4 * super::ROTATE_BYTES;

    pub fn retention(&self) -> Retention {
        Retention { period: self.retention, max_size: self.max_size }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.retention < Duration::from_secs(24 * 3600) {
            return Err("[history] retention must be at least 1d (e.g. \"365d\")".into());
        }
        if self.max_size < Self::MIN_SIZE {
            return Err(format!(
                "[history] max_size must be at least {} (e.g. \"256 MiB\")",
                size_text(Self::MIN_SIZE)
            ));
        }
        Ok(())
    }
}

/// Whole days as `365d` (humantime would write `11months 30days 3h ...`).
fn ser_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    const DAY_SECS: u64 = 24 * 3600;
    if d.subsec_nanos() == 0 && d.as_secs() % DAY_SECS == 0 {
        s.collect_str(&format_args!("{}d", d.as_secs() / DAY_SECS))
    } else {
        s.collect_str(&humantime::format_duration(*d))
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("`{s}` is not a duration like \"365d\" or \"8w\": {e}")))
}

const UNITS: [(&str, u64); 4] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1)];

/// A size as the config writes it: the largest unit it is a whole number of.
pub fn size_text(bytes: u64) -> String {
    let (unit, mult) = UNITS.iter().find(|(_, m)| bytes % m == 0 && bytes >= *m).copied().unwrap_or(("B", 1));
    format!("{} {unit}", bytes / mult)
}

/// `256 MiB`, `1GiB`, `512 KiB`, `1000 B` or `1000`.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: u64 = num.parse().ok()?;
    let unit = unit.trim();
    let mult = if unit.is_empty() { 1 } else { UNITS.iter().find(|(u, _)| *u == unit)?.1 };
    num.checked_mul(mult)
}

fn ser_size<S: Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&size_text(*n))
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Bytes(n) => Ok(n),
        Size::Text(s) => parse_size(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("`{s}` is not a size like \"256 MiB\", \"1 GiB\" or \"512 KiB\""))
        }),
    }
}

/// How long and how much history is kept (`[history]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// A rotated file whose newest record is older than this is dropped.
    pub period: Duration,
    /// All files together, at most (the oldest rotated files go first).
    pub max_size: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { period: Duration::from_secs(365 * 24 * 3600), max_size: 256 * 1024 * 1024 }
    }
}

/// One rotated file, as the decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotated {
    /// Its number: `history.jsonl.K` (higher is newer).
    pub k: u64,
    pub size: u64,
    /// When its newest record was written (the file's mtime).
    pub modified: SystemTime,
}

/// The numbers of the rotated files to drop, oldest first. `files` in any
/// order; `live_size` is the live file's size.
pub fn to_drop(files: &[Rotated], live_size: u64, now: SystemTime, r: Retention) -> Vec<u64> {
    let mut files = files.to_vec();
    files.sort_by_key(|f| f.k);
    let mut total = files.iter().fold(live_size, |t, f| t.saturating_add(f.size));
    let mut drop = Vec::new();
    for f in &files {
        let expired = now.duration_since(f.modified).is_ok_and(|age| age > r.period);
        if expired || total > r.max_size {
            drop.push(f.k);
            total = total.saturating_sub(f.size);
        } else {
            // Newer files are younger: only the size bound could drop them,
            // and it is met.
            break;
        }
    }
    drop
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn file(k: u64, size: u64, days_old: u64, now: SystemTime) -> Rotated {
        Rotated { k, size, modified: now - DAY * u32::try_from(days_old).unwrap() }
    }

    #[test]
    fn expired_files_go_oldest_first() {
        let now = SystemTime::now();
        let r = Retention { period: DAY * 30, max_size: u64::MAX };
        let files = [file(3, 10, 1, now), file(1, 10, 90, now), file(2, 10, 31, now)];
        assert_eq!(to_drop(&files, 5, now, r), [1, 2]);
        assert!(to_drop(&files[..1], 5, now, r).is_empty());
    }

    #[test]
    fn the_size_bound_drops_the_oldest_until_it_is_met() {
        let now = SystemTime::now();
        let r = Retention { period: DAY * 365, max_size: 100 };
        let files = [file(1, 40, 3, now), file(2, 40, 2, now), file(3, 40, 1, now)];
        // 40 * 3 + 30 = 150: two must go to reach 70.
        assert_eq!(to_drop(&files, 30, now, r), [1, 2]);
        assert_eq!(to_drop(&files, 0, now, r), [1]);
        // The live file alone over the bound: every rotated file goes, never the live one.
        assert_eq!(to_drop(&files, 500, now, r), [1, 2, 3]);
    }

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("256 MiB"), Some(256 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("12 MB"), None);
        assert_eq!(parse_size("99999999999999 GiB"), None);
        assert_eq!(size_text(256 << 20), "256 MiB");
        assert_eq!(size_text(1000), "1000 B");
        let c: HistoryConfig = toml::from_str("retention = \"90d\"\nmax_size = \"64 MiB\"").unwrap();
        assert_eq!((c.retention, c.max_size), (DAY * 90, 64 << 20));
        assert!(c.validate().is_ok());
        assert!(HistoryConfig { max_size: 1000, ..c }.validate().is_err());
        assert!(toml::from_str::<HistoryConfig>("max_size = \"lots\"").is_err());
        let d = HistoryConfig::default();
        assert_eq!(toml::to_string(&d).unwrap(), "retention = \"365d\"\nmax_size = \"256 MiB\"\n");
    }

    #[test]
    fn a_clock_behind_the_files_drops_nothing_for_age() {
        let now = SystemTime::now();
        let r = Retention { period: DAY, max_size: u64::MAX };
        let future = Rotated { k: 1, size: 1, modified: now + DAY * 10 };
        assert!(to_drop(&[future], 0, now, r).is_empty());
    }
}
