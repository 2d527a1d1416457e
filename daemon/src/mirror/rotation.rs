//! Key rotation over the mirror: before each index fetch, the poller walks
//! the trust documents after the one this host holds, one version at a
//! time: `trust/N+1.keys.json`, then N+2, … until the mirror has no next
//! one (404) or [`MAX_STEPS`] were taken in this poll. Each document must
//! pass [`milspec_format::trust_doc::accept_next`] against the one before
//! and is persisted ([`crate::trust_store`]) before the next is fetched.
//! A refused one stops the walk with its typed error and changes nothing.

use std::time::Duration;

use milspec_format::limits::trust::MAX_FILE;
use milspec_format::trust_doc::{self, TrustDocError, TrustSet};
use time::OffsetDateTime;
use tracing::info;

use super::fetch::{self, Fetched, RetryPolicy};
use super::transport::{FetchError, Transport};
use crate::trust_store::{TrustStore, TrustStoreError};

/// Most trust documents accepted in one poll; the rest follow next poll.
pub const MAX_STEPS: u64 = 16;

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("{url}: trust document refused: {source}")]
    Refused { url: String, source: TrustDocError },
    #[error("the trust document version {version} held here is no longer valid: {source}")]
    Expired { version: u64, source: TrustDocError },
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Store(#[from] TrustStoreError),
}

/// Where to fetch from and how.
pub struct Source<'a> {
    pub transport: &'a dyn Transport,
    /// The mirror root, with one trailing `/`.
    pub base: &'a str,
    pub retry: &'a RetryPolicy,
    pub sleep: &'a dyn Fn(Duration),
    pub timeout: Duration,
}

impl std::fmt::Debug for Source<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").field("base", &self.base).finish_non_exhaustive()
    }
}

/// Walks from `current` and returns the trust in force afterwards.
pub fn walk(
    src: &Source<'_>,
    store: &TrustStore,
    mut current: TrustSet,
    now: OffsetDateTime,
) -> Result<TrustSet, RotationError> {
    for _ in 0..MAX_STEPS {
        let next = current.version + 1;
        let url = format!("{}{}", src.base, trust_doc::version_path(next));
        let fetched = src
            .retry
            .run("trust document", src.sleep, || fetch::fetch_small(src.transport, &url, None, MAX_FILE, src.timeout));
        let bytes = match fetched {
            Ok(Fetched::Body { bytes, .. }) => bytes,
            Err(FetchError::NotFound { .. }) => break,
            Ok(Fetched::NotModified) => {
                return Err(FetchError::Transfer { url, detail: "304 to an unconditional request".into() }.into())
            }
            Err(e) => return Err(e.into()),
        };
        let accepted = trust_doc::accept_next(&current, &bytes)
            .map_err(|source| RotationError::Refused { url: url.clone(), source })?;
        store.save(&bytes, &accepted, current.version)?;
        info!(
            version = accepted.set.version,
            "accepted trust document version {} (package keys: {}, index keys: {}, compromised: {})",
            accepted.set.version,
            accepted.set.package.keys.len(),
            accepted.set.index.keys.len(),
            accepted.set.compromised.len()
        );
        current = accepted.set;
    }
    current.check_expiry(now).map_err(|source| RotationError::Expired { version: current.version, source })?;
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::transport::{for_url, Timeouts};
    use milspec_format::trust_doc::{Role, Roles, TrustDoc};
    use milspec_format::{SecretKey, TrustedKeys};

    /// A `file://` mirror holding versions 1..=`n`, each rotating to a new
    /// key signed by the one before and its own.
    fn mirror(dir: &std::path::Path, n: u64) -> TrustSet {
        std::fs::create_dir_all(dir.join("trust")).unwrap();
        let keys: Vec<SecretKey> = (0..=n).map(|i| SecretKey::generate(&format!("k{i}")).unwrap()).collect();
        for v in 1..=n {
            let k = &keys[v as usize];
            let role = Role { keyids: vec![k.public().id()], threshold: 1 };
            let roles = Roles { trust: role.clone(), package: role.clone(), index: role };
            let bytes = TrustDoc::new(v, &[k.public()], roles).sign([&keys[v as usize - 1], k]).unwrap();
            std::fs::write(dir.join(trust_doc::version_path(v)), bytes).unwrap();
        }
        TrustSet::local(&TrustedKeys::new([keys[0].public()]), 1)
    }

    #[test]
    fn walks_at_most_max_steps_per_poll_and_persists_each() {
        let d = tempfile::tempdir().unwrap();
        let local = mirror(&d.path().join("m"), MAX_STEPS + 4);
        let base = format!("file://{}/", d.path().join("m").display());
        let t = for_url(&base, Timeouts { connect: Duration::from_secs(1), total: Duration::from_secs(5) }).unwrap();
        let retry = RetryPolicy { attempts: 1, ..RetryPolicy::default() };
        let src =
            Source { transport: &*t, base: &base, retry: &retry, sleep: &|_| {}, timeout: Duration::from_secs(5) };
        let store = TrustStore::new(&d.path().join("state"));
        std::fs::create_dir_all(d.path().join("state")).unwrap();
        let now = OffsetDateTime::now_utc();
        let first = walk(&src, &store, local, now).unwrap();
        assert_eq!(first.version, MAX_STEPS);
        assert_eq!(store.accepted().unwrap().map(|v| v.set.version), Some(MAX_STEPS));
        let second = walk(&src, &store, first, now).unwrap();
        assert_eq!(second.version, MAX_STEPS + 4);
        // Nothing further: a 404 ends the walk, nothing changes.
        assert_eq!(walk(&src, &store, second, now).unwrap().version, MAX_STEPS + 4);
    }
}
