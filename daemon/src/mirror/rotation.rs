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
