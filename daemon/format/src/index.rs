//! The mirror's signed index (`index.json` at the mirror root).
//!
//! A mirror is a folder of static files: packages, and one index that lists
//! them. The index file is an envelope holding the exact signed text of the
//! index as a JSON string, plus ed25519 signatures over the UTF-8 bytes of
//! that string:
//!
//! ```json
//! { "signed": "{\n  \"format\": 1,\n  \"kind\": \"milspec-index\", ... }\n",
//!   "signatures": [ { "keyid": "...", "sig": "..." } ] }
//! ```
//!
//! The signed text carries `"kind": "milspec-index"` and a package manifest
//! carries `"kind": "milspec-package"`; both readers require their own kind
//! and refuse every unknown field the document does not list as optional
//! ([`crate::evolution`]), so a signature over one can never pass for the
//! other.
//!
//! Everything in this module is pure: verification, freshness (expiry and
//! anti-rollback), the wave position of a host, the fraction of hosts a
//! wave schedule admits at a time, and the choice of the best entry for a
//! host. Time is always an input.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::digest::Sha256Digest;
use crate::evolution;
use crate::keys::{KeyId, SecretKey, TrustedKeys};
use crate::limits::Limits;
use crate::manifest::{valid_release, Manifest, PACKAGE_NAME};
use crate::signature::{SignatureEntry, SignatureError, SignatureSet};

/// The index's file name at the mirror root.
pub const INDEX_FILE: &str = "index.json";
/// The index format this build reads and writes (docs/format.md, "Format
/// versions and evolution"); an index without `format` is 1.
pub const INDEX_FORMAT: u32 = 1;
/// The fields of format 1, per object.
const FIELDS: &[&str] = &["format", "kind", "version", "created", "expires", "revoked", "packages"];
const ENTRY_FIELDS: &[&str] =
    &["name", "version", "sequence", "path", "size", "sha256", "kernel_releases", "published", "waves"];
const WAVE_FIELDS: &[&str] = &["after_secs", "percent"];
pub const INDEX_KIND: &str = "milspec-index";
/// Largest index file read, envelope and signatures included: 4 MiB.
/// 1,000 releases with 64 kernel builds each (release strings like
/// `6.12.113+deb12-cloud-amd64`) take 3.1 MB; verifying that takes a
/// host tens of milliseconds and about 11 MiB of memory at its peak
/// (docs/benchmarks.md, "Index growth with kernels"). The cap is the
/// binding one: the count caps below would allow about 9 MB of text at
/// the longest strings, which no host needs to fetch.
pub const MAX_INDEX_FILE: u64 = 4 * 1024 * 1024;
/// Most package entries in one index.
pub const MAX_ENTRIES: usize = 1024;
/// Most revoked versions in one index.
pub const MAX_REVOKED: usize = 1024;
/// Most waves in one rollout schedule.
pub const MAX_WAVES: usize = 16;
/// Most kernel releases one entry lists (a package's payload limit,
/// [`Limits::max_payloads`]): 64, room for a release that lives through
/// many kernel updates (Debian 12 shipped more than 25 kernel ABIs) in
/// two flavours (docs/benchmarks.md, "Index growth with kernels").
pub const MAX_RELEASES: usize = 64;
/// Longest package path inside the mirror.
pub const MAX_PATH_LEN: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index.json is {size} bytes or more, larger than the limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error("index.json is not valid: {0}")]
    Parse(String),
    #[error("index format {0} is not supported (this build reads format {INDEX_FORMAT}); upgrade milspecd")]
    Format(u32),
    #[error("index kind `{0}` is not `{INDEX_KIND}` (a package manifest is not an index)")]
    Kind(String),
    #[error("index signatures: {0}")]
    Signature(#[from] SignatureError),
    #[error("index is not valid: {0}")]
    Invalid(String),
    #[error("index version {version} expired at {expires} (this host's clock says {now}): the mirror is stale or frozen; the publisher must run `milspec-repo refresh`, or this host's clock is wrong")]
    Expired { version: u64, expires: String, now: String },
    #[error("index version {version} was signed at {created}, more than a day after this host's clock ({now}): this host's clock is behind; fix it (NTP), nothing was installed")]
    ClockBehind { version: u64, created: String, now: String },
    #[error("index version {version} is older than version {last} accepted before: the mirror is stale or someone replays an old index; nothing was installed")]
    Rollback { version: u64, last: u64 },
    #[error("index version {version} differs from the index accepted before under the same version number: the publisher must always raise the version; nothing was installed")]
    Conflict { version: u64 },
}

/// One step of a rollout schedule: `percent` of hosts may take the package
/// once `after_secs` have passed since it was published.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wave {
    pub after_secs: u64,
    /// In (0, 100].
    pub percent: f64,
}

/// One package on the mirror.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexEntry {
    pub name: String,
    pub version: semver::Version,
    pub sequence: u64,
    /// Relative to the mirror root, e.g. `packages/dell-milspec-1.1.0.mspkg`.
    pub path: String,
    pub size: u64,
    pub sha256: Sha256Digest,
    /// The kernel releases the package has a payload for.
    pub kernel_releases: Vec<String>,
    /// When the package was added to the index; waves count from here.
    #[serde(with = "time::serde::rfc3339")]
    pub published: OffsetDateTime,
    /// Empty: every host may take it at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waves: Vec<Wave>,
}

/// The signed index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    pub format: u32,
    pub kind: String,
    /// Monotonic: every re-signed index has a higher one.
    pub version: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// Hosts refuse the index after this time (freeze attack).
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    /// Versions no host may run: hosts running one move off it.
    #[serde(default)]
    pub revoked: Vec<semver::Version>,
    pub packages: Vec<IndexEntry>,
}

/// The file at the mirror root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// The exact signed text.
    pub signed: String,
    pub signatures: Vec<SignatureEntry>,
}

/// An index whose signatures met the threshold.
#[derive(Debug, Clone)]
pub struct VerifiedIndex {
    pub index: Index,
    /// SHA-256 of the signed text: two indexes with one version must agree.
    pub digest: Sha256Digest,
    pub signers: Vec<KeyId>,
}

/// Is `p` a safe relative path inside the mirror: 1 to 255 characters from
/// `A-Z a-z 0-9 . _ + ~ - /`, no leading `/`, no empty, `.` or `..` part.
pub fn valid_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= MAX_PATH_LEN
        && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+~-/".contains(&b))
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

impl Index {
    /// A fresh, empty index.
    pub fn new(version: u64, created: OffsetDateTime, expires: OffsetDateTime) -> Self {
        Index {
            format: INDEX_FORMAT,
            kind: INDEX_KIND.into(),
            version,
            created,
            expires,
            revoked: Vec::new(),
            packages: Vec::new(),
        }
    }

    /// Parses and validates the signed text (after its signatures passed).
    pub fn parse(text: &str) -> Result<Self, IndexError> {
        // The format and kind first, for a clear error; then the fields the
        // index lists as optional and this build does not know are dropped
        // (crate::evolution), and the rest is parsed strictly.
        let parse_err = |e: String| IndexError::Parse(crate::text::sanitize_to(&e, 200));
        let mut doc = evolution::parse_object(text.as_bytes()).map_err(parse_err)?;
        let format = evolution::format_of(&doc).map_err(|e| parse_err(e.to_string()))?;
        if format != INDEX_FORMAT {
            return Err(IndexError::Format(format));
        }
        doc.insert(evolution::FORMAT_KEY.into(), format.into());
        match doc.get("kind").and_then(|k| k.as_str()) {
            Some(INDEX_KIND) => {}
            other => return Err(IndexError::Kind(crate::text::sanitize_to(other.unwrap_or(""), 64))),
        }
        let optional = evolution::take_optional(&mut doc).map_err(|e| parse_err(e.to_string()))?;
        evolution::strip(&mut doc, FIELDS, &optional);
        if let Some(serde_json::Value::Array(entries)) = doc.get_mut("packages") {
            for e in entries.iter_mut().filter_map(|e| e.as_object_mut()) {
                evolution::strip(e, ENTRY_FIELDS, &optional);
                evolution::strip_each(e, "waves", WAVE_FIELDS, &optional);
            }
        }
        let index: Index =
            serde_json::from_value(serde_json::Value::Object(doc)).map_err(|e| parse_err(e.to_string()))?;
        index.validate()?;
        Ok(index)
    }

    /// The signed text: pretty JSON and a newline.
    pub fn to_text(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    pub fn validate(&self) -> Result<(), IndexError> {
        let bad = |m: String| Err(IndexError::Invalid(crate::text::sanitize_to(&m, 400)));
        if self.kind != INDEX_KIND {
            return Err(IndexError::Kind(crate::text::sanitize_to(&self.kind, 64)));
        }
        if self.version == 0 {
            return bad("version must be at least 1".into());
        }
        if self.expires <= self.created {
            return bad("expires must be later than created".into());
        }
        if self.packages.len() > MAX_ENTRIES {
            return bad(format!("{} packages, more than the limit of {MAX_ENTRIES}", self.packages.len()));
        }
        if self.revoked.len() > MAX_REVOKED {
            return bad(format!("{} revoked versions, more than the limit of {MAX_REVOKED}", self.revoked.len()));
        }
        let mut versions = BTreeSet::new();
        let mut paths = BTreeSet::new();
        for e in &self.packages {
            e.validate()?;
            if !versions.insert(&e.version) {
                return bad(format!("version {} is listed twice", e.version));
            }
            if !paths.insert(&e.path) {
                return bad(format!("path `{}` is listed twice", e.path));
            }
        }
        Ok(())
    }

    /// `v` is revoked, build metadata ignored: revoking `1.2.0` revokes
    /// `1.2.0+b1` ([`crate::version::same_release`]).
    pub fn is_revoked(&self, v: &semver::Version) -> bool {
        crate::version::listed(&self.revoked, v)
    }

    pub fn entry(&self, v: &semver::Version) -> Option<&IndexEntry> {
        self.packages.iter().find(|e| &e.version == v)
    }

    /// Refuses an index past its expiry time, or one signed more than a
    /// day after `now` (the host's clock is far behind: waves and expiry
    /// would mean nothing).
    pub fn check_expiry(&self, now: OffsetDateTime) -> Result<(), IndexError> {
        if self.created > now + time::Duration::days(1) {
            return Err(IndexError::ClockBehind {
                version: self.version,
                created: rfc3339(self.created),
                now: rfc3339(now),
            });
        }
        if now >= self.expires {
            return Err(IndexError::Expired {
                version: self.version,
                expires: rfc3339(self.expires),
                now: rfc3339(now),
            });
        }
        Ok(())
    }

    /// Signs the text of this index with every key into an envelope.
    pub fn sign(&self, keys: &[SecretKey]) -> Result<Vec<u8>, IndexError> {
        let signed = self.to_text();
        let mut set = SignatureSet::default();
        for k in keys {
            set.add(k, signed.as_bytes())?;
        }
        let env = Envelope { signed, signatures: set.signatures };
        let mut out = serde_json::to_vec_pretty(&env)
            .map_err(|e| IndexError::Parse(crate::text::sanitize_to(&e.to_string(), 200)))?;
        out.push(b'\n');
        Ok(out)
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_else(|_| t.to_string())
}

impl IndexEntry {
    /// The entry for a package whose manifest is `m`, stored at `path`.
    pub fn for_package(m: &Manifest, path: &str, size: u64, sha256: Sha256Digest, published: OffsetDateTime) -> Self {
        IndexEntry {
            name: m.name.clone(),
            version: m.version.clone(),
            sequence: m.sequence,
            path: path.into(),
            size,
            sha256,
            kernel_releases: m.payloads.iter().map(|p| p.kernel_release.clone()).collect(),
            published,
            waves: Vec::new(),
        }
    }

    pub fn validate(&self) -> Result<(), IndexError> {
        let v = &self.version;
        let bad = |m: String| Err(IndexError::Invalid(crate::text::sanitize_to(&format!("package {v}: {m}"), 400)));
        if self.name != PACKAGE_NAME {
            return bad(format!("name `{}` is not `{PACKAGE_NAME}`", self.name.chars().take(64).collect::<String>()));
        }
        if self.sequence == 0 {
            return bad("sequence must be at least 1".into());
        }
        if !valid_path(&self.path) {
            return bad(format!(
                "path `{}` is not a safe relative path",
                self.path.chars().take(MAX_PATH_LEN + 1).collect::<String>()
            ));
        }
        if self.size == 0 || self.size > Limits::DEFAULT.max_package_size {
            return bad(format!("size {} is not between 1 and {}", self.size, Limits::DEFAULT.max_package_size));
        }
        if self.kernel_releases.is_empty() || self.kernel_releases.len() > MAX_RELEASES {
            return bad(format!("must list 1 to {MAX_RELEASES} kernel releases"));
        }
        if let Some(r) = self.kernel_releases.iter().find(|r| !valid_release(r)) {
            return bad(format!("invalid kernel release `{}`", r.chars().take(100).collect::<String>()));
        }
        check_waves(&self.waves)
            .map_err(|m| IndexError::Invalid(crate::text::sanitize_to(&format!("package {v}: {m}"), 400)))
    }

    /// The fraction of hosts, in [0, 1], the schedule admits at `now`.
    /// No schedule admits every host. A clock before `published` counts as
    /// `published`, so only the first wave's hosts (if it starts at 0) go.
    pub fn fraction_at(&self, now: OffsetDateTime) -> f64 {
        if self.waves.is_empty() {
            return 1.0;
        }
        let elapsed = u64::try_from((now - self.published).whole_seconds()).unwrap_or(0);
        let pct = self.waves.iter().filter(|w| w.after_secs <= elapsed).map(|w| w.percent).fold(0.0, f64::max);
        (pct / 100.0).clamp(0.0, 1.0)
    }

    /// When the next wave after `now` starts, if any.
    pub fn next_wave(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.waves.iter().filter_map(|w| self.wave_start(w)).find(|t| *t > now)
    }

    /// When wave `w` starts; `None` if that is past the end of the calendar
    /// (year 9999): such a wave never starts. Adding with `+` would panic
    /// there, and a signed index may say so (found by the `index` fuzz
    /// target; fuzz/regressions/index/).
    fn wave_start(&self, w: &Wave) -> Option<OffsetDateTime> {
        let secs = i64::try_from(w.after_secs).ok()?;
        self.published.checked_add(time::Duration::seconds(secs))
    }

    /// The time from which a host at `position` may take this package.
    pub fn admits_from(&self, position: f64) -> Option<OffsetDateTime> {
        if self.waves.is_empty() {
            return Some(self.published);
        }
        self.waves.iter().find(|w| position < w.percent / 100.0).and_then(|w| self.wave_start(w))
    }

    /// Has the schedule reached a host at `position` by `now`?
    pub fn reached(&self, position: f64, now: OffsetDateTime) -> bool {
        position < self.fraction_at(now)
    }
}

/// Waves: at most [`MAX_WAVES`], percent in (0, 100], start times strictly
/// increasing and percents strictly increasing.
pub fn check_waves(waves: &[Wave]) -> Result<(), String> {
    if waves.len() > MAX_WAVES {
        return Err(format!("{} waves, more than the limit of {MAX_WAVES}", waves.len()));
    }
    let mut prev: Option<&Wave> = None;
    for w in waves {
        if !(w.percent.is_finite() && w.percent > 0.0 && w.percent <= 100.0) {
            return Err(format!("wave percent {} is not in (0, 100]", w.percent));
        }
        if let Some(p) = prev {
            if w.after_secs <= p.after_secs || w.percent <= p.percent {
                return Err("waves must start later and admit more hosts than the wave before".into());
            }
        }
        prev = Some(w);
    }
    Ok(())
}

/// A host's stable place in a rollout, in [0, 1): SHA-256 over the
/// machine id and the package version. Salting by version gives each
/// release different early hosts.
pub fn wave_position(machine_id: &str, version: &semver::Version) -> f64 {
    let d = Sha256Digest::of(format!("milspec-wave-v1\n{}\n{version}", machine_id.trim()).as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&d.0[..8]);
    // 53 bits: exactly representable, strictly below 1.
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// Reads the envelope, checks the threshold over the signed text, then
/// parses and validates the index. Nothing is parsed before the signatures
/// pass except the envelope itself.
pub fn verify_index(bytes: &[u8], trusted: &TrustedKeys, threshold: usize) -> Result<VerifiedIndex, IndexError> {
    if bytes.len() as u64 > MAX_INDEX_FILE {
        return Err(IndexError::TooLarge { size: bytes.len() as u64, limit: MAX_INDEX_FILE });
    }
    let env: Envelope =
        serde_json::from_slice(bytes).map_err(|e| IndexError::Parse(crate::text::sanitize_to(&e.to_string(), 200)))?;
    if env.signatures.len() > Limits::DEFAULT.max_signatures {
        return Err(
            SignatureError::TooMany { count: env.signatures.len(), limit: Limits::DEFAULT.max_signatures }.into()
        );
    }
    let set = SignatureSet { signatures: env.signatures };
    let signers = set.check(env.signed.as_bytes(), trusted, threshold)?;
    let index = Index::parse(&env.signed)?;
    Ok(VerifiedIndex { index, digest: Sha256Digest::of(env.signed.as_bytes()), signers })
}

/// Reads an index without checking who signed it (for the publisher, who
/// re-signs it). Structure and rules are still checked.
pub fn read_unverified(bytes: &[u8]) -> Result<Index, IndexError> {
    if bytes.len() as u64 > MAX_INDEX_FILE {
        return Err(IndexError::TooLarge { size: bytes.len() as u64, limit: MAX_INDEX_FILE });
    }
    let env: Envelope =
        serde_json::from_slice(bytes).map_err(|e| IndexError::Parse(crate::text::sanitize_to(&e.to_string(), 200)))?;
    Index::parse(&env.signed)
}

/// The anti-rollback rule: a new index must have a higher version than the
/// last accepted one, or the same version with the same signed text.
pub fn check_not_older(new: &VerifiedIndex, last: Option<(u64, Sha256Digest)>) -> Result<(), IndexError> {
    let Some((last_version, last_digest)) = last else {
        return Ok(());
    };
    let version = new.index.version;
    if version < last_version {
        return Err(IndexError::Rollback { version, last: last_version });
    }
    if version == last_version && new.digest != last_digest {
        return Err(IndexError::Conflict { version });
    }
    Ok(())
}

/// What a host knows about itself when it picks an entry.
#[derive(Debug, Clone)]
pub struct HostFacts<'a> {
    pub kernel_release: &'a str,
    pub machine_id: &'a str,
    pub now: OffsetDateTime,
    /// Versions that failed here and are never retried automatically.
    pub blocklist: &'a [semver::Version],
    /// Highest sequence ever committed here.
    pub max_sequence: u64,
    /// The committed version and its sequence, if any.
    pub current: Option<(&'a semver::Version, u64)>,
    /// The operator's force: ignore the wave schedule.
    pub ignore_waves: bool,
}

/// Why an entry was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// Newer than anything committed here.
    Upgrade,
    /// The committed version is revoked; this one replaces it, possibly
    /// older (installed with downgrade allowed).
    Revoked { current: semver::Version },
}

/// The pure outcome of choosing from an index.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection<'a> {
    Install {
        entry: &'a IndexEntry,
        why: Why,
    },
    /// Nothing newer fits this host.
    UpToDate,
    /// A newer entry fits, but its rollout has not reached this host.
    Waiting {
        entry: &'a IndexEntry,
        position: f64,
        fraction: f64,
        next: Option<OffsetDateTime>,
    },
    /// The committed version is revoked and nothing on the mirror replaces it.
    RevokedNoReplacement {
        current: semver::Version,
    },
}

/// Picks the best entry for a host: the highest sequence that lists this
/// kernel release, is neither revoked nor blocklisted here, and whose wave
/// has reached the host (unless waves are ignored). If the committed version
/// is revoked, the best replacement may also be older than it, and older
/// entries count as reached (they rolled out before).
pub fn select<'a>(index: &'a Index, host: &HostFacts<'_>) -> Selection<'a> {
    let fits = |e: &&IndexEntry| {
        e.kernel_releases.iter().any(|r| r == host.kernel_release)
            && !index.is_revoked(&e.version)
            && !crate::version::listed(host.blocklist, &e.version)
    };
    let reached = |e: &IndexEntry| host.ignore_waves || e.reached(wave_position(host.machine_id, &e.version), host.now);
    let mut candidates: Vec<&IndexEntry> = index.packages.iter().filter(fits).collect();
    candidates.sort_by(|a, b| b.sequence.cmp(&a.sequence).then_with(|| b.version.cmp(&a.version)));

    if let Some((cur, cur_seq)) = host.current.filter(|(v, _)| index.is_revoked(v)) {
        let other = |e: &&IndexEntry| !crate::version::same_release(&e.version, cur);
        return candidates.into_iter().filter(other).find(|e| e.sequence < cur_seq || reached(e)).map_or(
            Selection::RevokedNoReplacement { current: cur.clone() },
            |entry| Selection::Install { entry, why: Why::Revoked { current: cur.clone() } },
        );
    }
    let floor = host.max_sequence.max(host.current.map_or(0, |c| c.1));
    let newer: Vec<&IndexEntry> = candidates.into_iter().filter(|e| e.sequence > floor).collect();
    if let Some(entry) = newer.iter().find(|e| reached(e)) {
        return Selection::Install { entry, why: Why::Upgrade };
    }
    match newer.first() {
        None => Selection::UpToDate,
        Some(entry) => Selection::Waiting {
            entry,
            position: wave_position(host.machine_id, &entry.version),
            fraction: entry.fraction_at(host.now),
            next: entry.next_wave(host.now),
        },
    }
}

/// The entry that carries a build of the committed version `current`
/// (version and sequence) for kernel `release`: a kernel-build republish
/// of it, same version and sequence, listing `release`, not revoked. It is
/// neither an upgrade nor a downgrade nor a replay; the host still checks
/// the package against its committed manifest
/// (`crate::republish::added_builds`) before it takes a single byte.
pub fn select_build<'a>(index: &'a Index, current: (&semver::Version, u64), release: &str) -> Option<&'a IndexEntry> {
    index.packages.iter().find(|e| {
        &e.version == current.0
            && e.sequence == current.1
            && e.kernel_releases.iter().any(|r| r == release)
            && !index.is_revoked(&e.version)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> semver::Version {
        s.parse().unwrap()
    }

    const R: &str = "6.12.113+deb12-cloud-amd64";
    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_767_225_600).unwrap()
    }

    fn entry(ver: &str, seq: u64, waves: Vec<Wave>) -> IndexEntry {
        IndexEntry {
            name: PACKAGE_NAME.into(),
            version: v(ver),
            sequence: seq,
            path: format!("packages/dell-milspec-{ver}.mspkg"),
            size: 4096,
            sha256: Sha256Digest::of(ver.as_bytes()),
            kernel_releases: vec![R.into()],
            published: t0(),
            waves,
        }
    }

    fn index(entries: Vec<IndexEntry>) -> Index {
        let mut i = Index::new(1, t0(), t0() + time::Duration::days(7));
        i.packages = entries;
        i
    }

    fn host<'a>(mid: &'a str, now: OffsetDateTime, max: u64, cur: Option<(&'a semver::Version, u64)>) -> HostFacts<'a> {
        HostFacts {
            kernel_release: R,
            machine_id: mid,
            now,
            blocklist: &[],
            max_sequence: max,
            current: cur,
            ignore_waves: false,
        }
    }

    fn waves() -> Vec<Wave> {
        vec![
            Wave { after_secs: 0, percent: 1.0 },
            Wave { after_secs: 3600, percent: 10.0 },
            Wave { after_secs: 86400, percent: 100.0 },
        ]
    }

    #[test]
    fn select_build_finds_the_committed_version_republished_for_a_kernel() {
        const NEW: &str = "6.12.115+deb12-cloud-amd64";
        let mut e = entry("1.1.0", 1_001_000_000, vec![]);
        e.kernel_releases.push(NEW.into());
        let mut i = index(vec![entry("1.0.0", 1_000_000_000, vec![]), e, entry("1.2.0", 1_002_000_000, vec![])]);
        let cur = v("1.1.0");
        let got = select_build(&i, (&cur, 1_001_000_000), NEW).map(|e| e.version.to_string());
        assert_eq!(got.as_deref(), Some("1.1.0"));
        // Another sequence is another release, not a republish.
        assert!(select_build(&i, (&cur, 1_001_000_001), NEW).is_none());
        // No entry of that version lists the kernel.
        assert!(select_build(&i, (&v("1.0.0"), 1_000_000_000), NEW).is_none());
        // Revoked: never.
        i.revoked.push(cur.clone());
        assert!(select_build(&i, (&cur, 1_001_000_000), NEW).is_none());
    }

    #[test]
    fn sign_verify_and_kind_separation() {
        let k = SecretKey::generate("k").unwrap();
        let trusted = TrustedKeys::new([k.public()]);
        let i = index(vec![entry("1.0.0", 1, vec![])]);
        let bytes = i.sign(std::slice::from_ref(&k)).unwrap();
        let vi = verify_index(&bytes, &trusted, 1).unwrap();
        assert_eq!(vi.index, i);
        assert_eq!(read_unverified(&bytes).unwrap(), i);

        // One byte of the signed text changed.
        let mut env: Envelope = serde_json::from_slice(&bytes).unwrap();
        env.signed = env.signed.replace("\"version\": 1,", "\"version\": 2,");
        let e = verify_index(&serde_json::to_vec(&env).unwrap(), &trusted, 1).unwrap_err().to_string();
        assert!(e.contains("does not verify"), "{e}");

        // A correctly signed package manifest is not an index.
        let manifest = "{\"format\":1,\"kind\":\"milspec-package\",\"name\":\"dell-milspec\"}";
        let mut set = SignatureSet::default();
        set.add(&k, manifest.as_bytes()).unwrap();
        let env = Envelope { signed: manifest.into(), signatures: set.signatures };
        let e = verify_index(&serde_json::to_vec(&env).unwrap(), &trusted, 1).unwrap_err();
        assert!(matches!(e, IndexError::Kind(_)), "{e}");

        // Unsigned, or signed by someone else.
        let unsigned = i.sign(&[]).unwrap();
        assert!(matches!(verify_index(&unsigned, &trusted, 1), Err(IndexError::Signature(_))));
        let other = SecretKey::generate("other").unwrap();
        assert!(matches!(verify_index(&i.sign(&[other]).unwrap(), &trusted, 1), Err(IndexError::Signature(_))));
        // Over the size cap.
        let big = vec![b' '; MAX_INDEX_FILE as usize + 1];
        assert!(matches!(verify_index(&big, &trusted, 1), Err(IndexError::TooLarge { .. })));
    }

    #[test]
    fn validation_rejects() {
        let mut e = entry("1.0.0", 1, vec![]);
        for p in ["../x", "/abs", "a//b", "a/./b", "a b", "", "x?y", "%2e%2e/x"] {
            e.path = p.into();
            assert!(e.validate().is_err(), "{p}");
        }
        e.path = "packages/ok-1.0.0+b.mspkg".into();
        e.validate().unwrap();
        e.waves = vec![Wave { after_secs: 10, percent: 10.0 }, Wave { after_secs: 5, percent: 50.0 }];
        assert!(e.validate().is_err());
        e.waves = vec![Wave { after_secs: 0, percent: f64::NAN }];
        assert!(e.validate().is_err());
        e.waves = vec![];
        let mut i = index(vec![e.clone(), e]);
        assert!(i.validate().unwrap_err().to_string().contains("twice"));
        i.packages.clear();
        i.version = 0;
        assert!(i.validate().is_err());
        let e = Index::parse("{\"format\":2}").unwrap_err();
        assert!(matches!(e, IndexError::Format(2)));
        let e = Index::parse(&index(vec![]).to_text().replace("\"packages\"", "\"extra\": 1, \"packages\""));
        assert!(matches!(e, Err(IndexError::Parse(_))));
    }

    #[test]
    fn expiry_and_rollback() {
        let k = SecretKey::generate("k").unwrap();
        let trusted = TrustedKeys::new([k.public()]);
        let i = index(vec![]);
        i.check_expiry(t0() + time::Duration::days(6)).unwrap();
        i.check_expiry(t0() - time::Duration::hours(23)).unwrap();
        let e = i.check_expiry(t0() - time::Duration::days(400)).unwrap_err().to_string();
        assert!(e.contains("clock is behind"), "{e}");
        let e = i.check_expiry(t0() + time::Duration::days(7)).unwrap_err().to_string();
        assert!(e.contains("expired") && e.contains("refresh"), "{e}");
        let v1 = verify_index(&i.sign(std::slice::from_ref(&k)).unwrap(), &trusted, 1).unwrap();
        let mut i2 = i.clone();
        i2.version = 2;
        let v2 = verify_index(&i2.sign(std::slice::from_ref(&k)).unwrap(), &trusted, 1).unwrap();
        check_not_older(&v2, Some((1, v1.digest))).unwrap();
        check_not_older(&v1, Some((1, v1.digest))).unwrap();
        assert!(matches!(check_not_older(&v1, Some((2, v2.digest))), Err(IndexError::Rollback { .. })));
        assert!(matches!(check_not_older(&v1, Some((1, v2.digest))), Err(IndexError::Conflict { .. })));
    }

    #[test]
    fn wave_position_is_stable_and_uniform() {
        let ver = v("1.1.0");
        assert_eq!(wave_position("abc\n", &ver), wave_position("abc", &ver));
        assert_ne!(wave_position("abc", &ver), wave_position("abc", &v("1.2.0")));
        let n = 20_000;
        let below = (0..n).filter(|i| wave_position(&format!("{i:032x}"), &ver) < 0.1).count();
        assert!((1800..2200).contains(&below), "{below}");
        assert!((0..n).all(|i| (0.0..1.0).contains(&wave_position(&format!("{i}"), &ver))));
    }

    #[test]
    fn fraction_over_time() {
        let e = entry("1.1.0", 2, waves());
        let at = |s: i64| e.fraction_at(t0() + time::Duration::seconds(s));
        assert_eq!(at(-3600), 0.01, "clock before publication: first wave only");
        assert_eq!(at(0), 0.01);
        assert_eq!(at(3599), 0.01);
        assert_eq!(at(3600), 0.10);
        assert_eq!(at(86400), 1.0);
        assert_eq!(e.next_wave(t0()), Some(t0() + time::Duration::hours(1)));
        assert_eq!(e.next_wave(t0() + time::Duration::days(2)), None);
        assert_eq!(e.admits_from(0.05), Some(t0() + time::Duration::hours(1)));
        assert_eq!(entry("1.0.0", 1, vec![]).fraction_at(t0()), 1.0);
        let held = entry("1.0.0", 1, vec![Wave { after_secs: 0, percent: 5.0 }]);
        assert_eq!(held.fraction_at(t0() + time::Duration::days(365)), 0.05);
        assert_eq!(held.admits_from(0.5), None);
    }

    #[test]
    fn select_upgrade_wait_and_fallback_to_older_reached() {
        let i = index(vec![entry("1.0.0", 1, vec![]), entry("1.1.0", 2, vec![]), entry("1.2.0", 3, waves())]);
        // Find a host outside the 10% wave of 1.2.0.
        let mid = (0..).map(|n| format!("host-{n}")).find(|m| wave_position(m, &v("1.2.0")) > 0.5).unwrap();
        let cur = v("1.0.0");
        match select(&i, &host(&mid, t0(), 1, Some((&cur, 1)))) {
            Selection::Install { entry, why: Why::Upgrade } => assert_eq!(entry.version, v("1.1.0")),
            s => panic!("{s:?}"),
        }
        let cur = v("1.1.0");
        match select(&i, &host(&mid, t0(), 2, Some((&cur, 2)))) {
            Selection::Waiting { entry, fraction, next, .. } => {
                assert_eq!((entry.version.clone(), fraction), (v("1.2.0"), 0.01));
                assert_eq!(next, Some(t0() + time::Duration::hours(1)));
            }
            s => panic!("{s:?}"),
        }
        let late = t0() + time::Duration::days(1);
        assert!(matches!(select(&i, &host(&mid, late, 2, Some((&cur, 2)))), Selection::Install { .. }));
        let mut forced = host(&mid, t0(), 2, Some((&cur, 2)));
        forced.ignore_waves = true;
        assert!(matches!(select(&i, &forced), Selection::Install { entry, .. } if entry.version == v("1.2.0")));
        let top = v("1.2.0");
        assert_eq!(select(&i, &host(&mid, late, 3, Some((&top, 3)))), Selection::UpToDate);
        // Another kernel: nothing fits.
        let mut other = host(&mid, late, 0, None);
        other.kernel_release = "6.1.0-28-amd64";
        assert_eq!(select(&i, &other), Selection::UpToDate);
        // Blocklisted here: skipped for the next one down.
        let blocked = [v("1.2.0")];
        let one = v("1.0.0");
        let mut b = host(&mid, late, 1, Some((&one, 1)));
        b.blocklist = &blocked;
        assert!(matches!(select(&i, &b), Selection::Install { entry, .. } if entry.version == v("1.1.0")));
    }

    #[test]
    fn select_revocation() {
        let mut i = index(vec![entry("1.0.0", 1, vec![]), entry("1.1.0", 2, vec![]), entry("1.2.0", 3, waves())]);
        i.revoked = vec![v("1.1.0")];
        let mid = (0..).map(|n| format!("h{n}")).find(|m| wave_position(m, &v("1.2.0")) > 0.5).unwrap();
        let cur = v("1.1.0");
        // 1.2.0 has not reached this host: back to 1.0.0, a downgrade.
        match select(&i, &host(&mid, t0(), 2, Some((&cur, 2)))) {
            Selection::Install { entry, why: Why::Revoked { current } } => {
                assert_eq!((entry.version.clone(), current), (v("1.0.0"), cur.clone()));
            }
            s => panic!("{s:?}"),
        }
        // Once it has, forward to 1.2.0.
        let late = t0() + time::Duration::days(1);
        assert!(
            matches!(select(&i, &host(&mid, late, 2, Some((&cur, 2)))), Selection::Install { entry, .. } if entry.version == v("1.2.0"))
        );
        // A host not running the revoked version is not moved.
        let old = v("1.0.0");
        assert!(matches!(select(&i, &host(&mid, t0(), 1, Some((&old, 1)))), Selection::Waiting { .. }));
        // Nothing left.
        i.revoked = vec![v("1.0.0"), v("1.1.0"), v("1.2.0")];
        assert!(matches!(select(&i, &host(&mid, late, 2, Some((&cur, 2)))), Selection::RevokedNoReplacement { .. }));
    }

    #[test]
    fn revocation_and_blocklist_ignore_build_metadata() {
        let mut i = index(vec![entry("1.0.0", 1, vec![]), entry("1.1.0+b1", 2, vec![]), entry("1.2.0+b7", 3, vec![])]);
        // Revoking 1.1.0 revokes the build 1.1.0+b1 a host runs.
        i.revoked = vec![v("1.1.0"), v("1.2.0")];
        assert!(i.is_revoked(&v("1.1.0+b1")) && i.is_revoked(&v("1.2.0+b7")));
        assert!(!i.is_revoked(&v("1.1.0-rc.1")));
        let cur = v("1.1.0+b1");
        match select(&i, &host("h", t0(), 2, Some((&cur, 2)))) {
            Selection::Install { entry, why: Why::Revoked { current } } => {
                assert_eq!((entry.version.clone(), current), (v("1.0.0"), cur.clone()));
            }
            s => panic!("{s:?}"),
        }
        // A revocation naming the build exactly still matches.
        i.revoked = vec![v("1.2.0+b7")];
        assert!(i.is_revoked(&v("1.2.0")));
        // Blocklisting 1.2.0 here skips 1.2.0+b7 on the mirror.
        i.revoked = vec![];
        let blocked = [v("1.2.0")];
        let one = v("1.0.0");
        let mut b = host("h", t0(), 1, Some((&one, 1)));
        b.blocklist = &blocked;
        assert!(matches!(select(&i, &b), Selection::Install { entry, .. } if entry.version == v("1.1.0+b1")));
    }

    fn text_with(f: impl FnOnce(&mut serde_json::Value)) -> String {
        let mut i = index(vec![entry("1.0.0", 1, waves())]);
        i.revoked = vec![v("0.9.0")];
        let mut doc: serde_json::Value = serde_json::from_str(&i.to_text()).unwrap();
        f(&mut doc);
        serde_json::to_string_pretty(&doc).unwrap()
    }

    #[test]
    fn field_lists_name_every_field_of_format_1() {
        let mut keys = BTreeSet::new();
        evolution::all_keys(&serde_json::from_str(&text_with(|_| {})).unwrap(), &[], &mut keys);
        let listed: BTreeSet<String> =
            FIELDS.iter().chain(ENTRY_FIELDS).chain(WAVE_FIELDS).map(|s| s.to_string()).collect();
        assert_eq!(keys, listed);
    }

    #[test]
    fn older_reader_ignores_listed_optional_fields_signatures_still_over_the_bytes() {
        let k = SecretKey::generate("k").unwrap();
        let trusted = TrustedKeys::new([k.public()]);
        let text = text_with(|d| {
            d["optional"] = serde_json::json!(["fleet", "channel", "jitter_secs"]);
            d["fleet"] = serde_json::json!({"name": "north"});
            d["packages"][0]["channel"] = "stable".into();
            d["packages"][0]["waves"][0]["jitter_secs"] = 30.into();
        });
        let parsed = Index::parse(&text).unwrap();
        assert_eq!(parsed.packages[0].waves, waves());
        // Signed as is: verification is over the exact text, optional fields and all.
        let mut sig = SignatureSet::default();
        sig.add(&k, text.as_bytes()).unwrap();
        let env = Envelope { signed: text.clone(), signatures: sig.signatures };
        let vi = verify_index(&serde_json::to_vec(&env).unwrap(), &trusted, 1).unwrap();
        assert_eq!(vi.digest, Sha256Digest::of(text.as_bytes()));
        assert_eq!(vi.index, parsed);
        // The same text with the optional field altered no longer verifies.
        let env = Envelope { signed: text.replace("north", "south"), signatures: env.signatures };
        assert!(matches!(verify_index(&serde_json::to_vec(&env).unwrap(), &trusted, 1), Err(IndexError::Signature(_))));
        // Unlisted unknown fields stay refused, at any level.
        for f in [
            (|d: &mut serde_json::Value| d["extra"] = 1.into()) as fn(&mut serde_json::Value),
            |d| d["packages"][0]["extra"] = 1.into(),
            |d| d["packages"][0]["waves"][0]["extra"] = 1.into(),
        ] {
            let e = Index::parse(&text_with(f)).unwrap_err();
            assert!(matches!(e, IndexError::Parse(_)) && e.to_string().contains("unknown field `extra`"), "{e}");
        }
        // Listing a known field does not exempt it from its checks.
        let e = Index::parse(&text_with(|d| {
            d["optional"] = serde_json::json!(["version"]);
            d["version"] = 0.into();
        }))
        .unwrap_err();
        assert!(matches!(e, IndexError::Invalid(_)), "{e}");
    }

    #[test]
    fn newer_format_is_refused_and_missing_format_is_1() {
        let e = Index::parse(&text_with(|d| d["format"] = 2.into())).unwrap_err();
        assert!(matches!(e, IndexError::Format(2)) && e.to_string().contains("upgrade milspecd"), "{e}");
        let e = Index::parse(r#"{"format": 2, "kind": "milspec-index", "new_required": []}"#).unwrap_err();
        assert!(matches!(e, IndexError::Format(2)), "{e}");
        let no_format = Index::parse(&text_with(|d| drop(d.as_object_mut().unwrap().remove("format")))).unwrap();
        assert_eq!(no_format, Index::parse(&text_with(|_| {})).unwrap());
        assert_eq!(no_format.format, INDEX_FORMAT);
        // The kind is still required.
        let e = Index::parse(&text_with(|d| drop(d.as_object_mut().unwrap().remove("kind")))).unwrap_err();
        assert!(matches!(e, IndexError::Kind(_)), "{e}");
    }
}
