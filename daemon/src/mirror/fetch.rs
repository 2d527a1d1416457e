//! Defensive downloads: every body goes through a reader that caps its
//! size, enforces a deadline and hashes what passes; failures are retried
//! a bounded number of times with exponential backoff and jitter.

use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use milspec_format::Sha256Digest;
use sha2::{Digest, Sha256};
use tracing::warn;

use super::transport::{FetchError, Request, Response, Transport, Validators};

/// A reader that refuses more than `cap` bytes, gives up past `deadline`
/// (a slow-drip body) and hashes every byte it yields.
#[derive(Debug)]
pub struct Guarded<R> {
    inner: R,
    cap: u64,
    deadline: Instant,
    count: u64,
    hasher: Sha256,
}

impl<R: Read> Guarded<R> {
    pub fn new(inner: R, cap: u64, deadline: Instant) -> Self {
        Guarded { inner, cap, deadline, count: 0, hasher: Sha256::new() }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn digest(self) -> Sha256Digest {
        Sha256Digest(self.hasher.finalize().into())
    }
}

/// The io error kinds [`Guarded`] uses, told apart by [`classify`].
const OVER_CAP: &str = "body over the size cap";
const PAST_DEADLINE: &str = "body not complete before the deadline";

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if Instant::now() >= self.deadline {
            return Err(io::Error::new(io::ErrorKind::TimedOut, PAST_DEADLINE));
        }
        // Ask for at most one byte past the cap: enough to see it is exceeded.
        let room = self.cap.saturating_sub(self.count).saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.count += n as u64;
        if self.count > self.cap {
            return Err(io::Error::other(OVER_CAP));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn classify(url: &str, cap: u64, e: io::Error) -> FetchError {
    let text = e.to_string();
    if text.contains(OVER_CAP) {
        FetchError::TooLarge { url: url.into(), limit: cap }
    } else if e.kind() == io::ErrorKind::TimedOut || text.contains("imeout") {
        FetchError::Timeout { url: url.into(), what: text }
    } else {
        FetchError::Transfer { url: url.into(), detail: text }
    }
}

/// Bounded retries: `attempts` in all, waiting `base * 2^n` (at most `max`)
/// between them, each wait scaled by a random factor in [0.5, 1).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { attempts: 4, base: Duration::from_secs(2), max: Duration::from_secs(60) }
    }
}

/// A random number in [0, 1) from the operating system.
pub fn random_unit() -> f64 {
    let mut b = [0u8; 8];
    if getrandom::getrandom(&mut b).is_err() {
        // No randomness: fall back to the clock's low bits; jitter only.
        let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        b[..4].copy_from_slice(&n.to_le_bytes());
    }
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

impl RetryPolicy {
    /// The wait after failed attempt `n` (0-based).
    pub fn backoff(&self, n: u32, unit: f64) -> Duration {
        let exp = self.base.saturating_mul(1u32.checked_shl(n.min(20)).unwrap_or(u32::MAX)).min(self.max);
        exp.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }

    /// Runs `op` until it succeeds, fails for good, or runs out of attempts.
    pub fn run<T>(
        &self,
        what: &str,
        sleep: &dyn Fn(Duration),
        mut op: impl FnMut() -> Result<T, FetchError>,
    ) -> Result<T, FetchError> {
        let attempts = self.attempts.max(1);
        let mut n = 0;
        loop {
            match op() {
                Ok(t) => return Ok(t),
                Err(e) if e.is_transient() && n + 1 < attempts => {
                    let wait = self.backoff(n, random_unit());
                    crate::journal::FAILED_POLLS.log("failed downloads", || {
                        warn!(
                            "{what}: attempt {} of {attempts} failed: {}; retrying in {wait:.1?}",
                            n + 1,
                            crate::journal::untrusted(&e.to_string())
                        )
                    });
                    sleep(wait);
                    n += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A fetched index body.
#[derive(Debug)]
pub enum Fetched {
    NotModified,
    Body { bytes: Vec<u8>, validators: Validators },
}

/// One GET of a small file into memory, at most `cap` bytes.
pub fn fetch_small(
    t: &dyn Transport,
    url: &str,
    validators: Option<&Validators>,
    cap: u64,
    total: Duration,
) -> Result<Fetched, FetchError> {
    let deadline = Instant::now() + total;
    match t.get(&Request { url, validators, deadline })? {
        Response::NotModified => Ok(Fetched::NotModified),
        Response::Body { body, length, validators } => {
            if length.is_some_and(|l| l > cap) {
                return Err(FetchError::TooLarge { url: url.into(), limit: cap });
            }
            let mut g = Guarded::new(body, cap, deadline);
            let mut bytes = Vec::new();
            g.read_to_end(&mut bytes).map_err(|e| classify(url, cap, e))?;
            if let Some(l) = length.filter(|l| *l != bytes.len() as u64) {
                return Err(FetchError::Truncated { url: url.into(), got: bytes.len() as u64, expected: l });
            }
            Ok(Fetched::Body { bytes, validators })
        }
    }
}

/// One GET of a package of exactly `size` bytes with digest `sha256` into
/// `out` (rewound and truncated first). `out` is good only on `Ok`.
/// `progress` is told the bytes received so far after each chunk.
#[allow(clippy::too_many_arguments)]
pub fn download(
    t: &dyn Transport,
    url: &str,
    size: u64,
    sha256: &Sha256Digest,
    out: &mut std::fs::File,
    out_path: &Path,
    total: Duration,
    progress: &mut dyn FnMut(u64),
) -> Result<(), FetchError> {
    let store = |source| FetchError::Store { path: out_path.to_path_buf(), source };
    out.set_len(0).map_err(store)?;
    io::Seek::rewind(out).map_err(store)?;
    let deadline = Instant::now() + total;
    let Response::Body { body, length, .. } = t.get(&Request { url, validators: None, deadline })? else {
        return Err(FetchError::Transfer {
            url: url.into(),
            detail: "not modified on an unconditional request".into(),
        });
    };
    if length.is_some_and(|l| l > size) {
        return Err(FetchError::TooLarge { url: url.into(), limit: size });
    }
    let mut g = Guarded::new(body, size, deadline);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match g.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(classify(url, size, e)),
        };
        out.write_all(&buf[..n]).map_err(store)?;
        progress(g.count());
    }
    if g.count() != size {
        return Err(FetchError::Truncated { url: url.into(), got: g.count(), expected: size });
    }
    let actual = g.digest();
    if actual != *sha256 {
        return Err(FetchError::Hash { url: url.into(), expected: sha256.to_string(), actual: actual.to_string() });
    }
    out.sync_all().map_err(store)?;
    io::Seek::rewind(out).map_err(store)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guarded_caps_and_hashes() {
        let data = vec![1u8; 1000];
        let far = Instant::now() + Duration::from_secs(60);
        let mut g = Guarded::new(&data[..], 1000, far);
        let mut v = Vec::new();
        g.read_to_end(&mut v).unwrap();
        assert_eq!(g.digest(), Sha256Digest::of(&data));
        let mut g = Guarded::new(&data[..], 999, far);
        let e = g.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(matches!(classify("u", 999, e), FetchError::TooLarge { .. }));
        // An endless reader is cut at the cap.
        let mut g = Guarded::new(io::repeat(0), 1 << 20, far);
        assert!(g.read_to_end(&mut Vec::new()).is_err());
        let mut g = Guarded::new(&data[..], 1000, Instant::now());
        let e = g.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(matches!(classify("u", 1000, e), FetchError::Timeout { .. }));
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_bounded() {
        let p = RetryPolicy { attempts: 5, base: Duration::from_secs(1), max: Duration::from_secs(10) };
        assert_eq!(p.backoff(0, 0.0), Duration::from_millis(500));
        assert_eq!(p.backoff(2, 0.0), Duration::from_secs(2));
        assert!(p.backoff(2, 0.999) < Duration::from_secs(4));
        assert_eq!(p.backoff(30, 0.0), Duration::from_secs(5));
        let u = random_unit();
        assert!((0.0..1.0).contains(&u));
    }

    #[test]
    fn retries_only_transient_and_bounded() {
        let p = RetryPolicy { attempts: 3, base: Duration::from_millis(1), max: Duration::from_millis(1) };
        let waits = std::cell::Cell::new(0);
        let sleep = |_d: Duration| waits.set(waits.get() + 1);
        let mut calls = 0;
        let r: Result<(), _> = p.run("x", &sleep, || {
            calls += 1;
            Err(FetchError::Status { url: "u".into(), code: 503 })
        });
        assert!(r.is_err());
        assert_eq!((calls, waits.get()), (3, 2));
        calls = 0;
        let r: Result<(), _> = p.run("x", &sleep, || {
            calls += 1;
            Err(FetchError::NotFound { url: "u".into(), code: 404 })
        });
        assert!(r.is_err());
        assert_eq!(calls, 1);
        calls = 0;
        let r = p.run("x", &sleep, || {
            calls += 1;
            if calls < 2 {
                Err(FetchError::Timeout { url: "u".into(), what: "t".into() })
            } else {
                Ok(7)
            }
        });
        assert_eq!(r.unwrap(), 7);
    }
}
