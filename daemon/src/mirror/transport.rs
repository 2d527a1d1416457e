//! One door to the mirror for `file://` and HTTP(S) alike: a conditional
//! GET that yields either "not modified" or a body reader.
//!
//! Transports do not cap or hash; [`super::fetch`] wraps every body in a
//! reader that does, whatever the transport.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Most redirects followed before a request fails.
pub const MAX_REDIRECTS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: timed out ({what}); the mirror or the network is slow; will retry")]
    Timeout { url: String, what: String },
    #[error("{url}: cannot connect: {detail}; check [source] url and the network")]
    Connect { url: String, detail: String },
    #[error("{url}: the server answered HTTP {code}")]
    Status { url: String, code: u16 },
    #[error("{url}: not found on the mirror (HTTP {code}); the index names a file the mirror does not have")]
    NotFound { url: String, code: u16 },
    #[error("{url}: more than {limit} redirects (a redirect loop?); fix the mirror's server configuration")]
    Redirects { url: String, limit: u32 },
    #[error("{url}: the body is larger than the limit of {limit} bytes; refused (endless or oversized download)")]
    TooLarge { url: String, limit: u64 },
    #[error("{url}: the body ended after {got} bytes, expected {expected} (truncated download)")]
    Truncated { url: String, got: u64, expected: u64 },
    #[error("{url}: sha256 {actual} differs from {expected} in the signed index; the mirror holds a different file than it lists")]
    Hash { url: String, expected: String, actual: String },
    #[error("{url}: transfer failed: {detail}")]
    Transfer { url: String, detail: String },
    #[error("{url}: cannot read: {source}")]
    File { url: String, source: io::Error },
    #[error("{url}: unsupported url; use https://, http:// or file:///absolute/path without %, ? or #")]
    Unsupported { url: String },
    #[error("cannot write the download to {}: {source}", path.display())]
    Store { path: PathBuf, source: io::Error },
}

impl FetchError {
    /// Worth another attempt: network trouble, server errors, short or
    /// wrong bodies (a CDN edge may be mid-update). Not: a missing file,
    /// a bad url, a full disk, an oversized body.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Timeout { .. }
            | FetchError::Connect { .. }
            | FetchError::Truncated { .. }
            | FetchError::Hash { .. }
            | FetchError::Transfer { .. } => true,
            FetchError::Status { code, .. } => *code >= 500 || *code == 408 || *code == 429,
            FetchError::NotFound { .. }
            | FetchError::Redirects { .. }
            | FetchError::TooLarge { .. }
            | FetchError::File { .. }
            | FetchError::Unsupported { .. }
            | FetchError::Store { .. } => false,
        }
    }
}

/// Cache validators of a response, sent back on the next request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

/// A GET, conditional when validators are given.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub url: &'a str,
    pub validators: Option<&'a Validators>,
}

pub enum Response {
    NotModified,
    Body { body: Box<dyn Read + Send>, length: Option<u64>, validators: Validators },
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Response::NotModified => f.write_str("NotModified"),
            Response::Body { length, validators, .. } => {
                f.debug_struct("Body").field("length", length).field("validators", validators).finish()
            }
        }
    }
}

pub trait Transport: Send + Sync {
    fn get(&self, req: &Request<'_>) -> Result<Response, FetchError>;
}

/// Timeouts for one request.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// The whole request, body included.
    pub total: Duration,
}

/// The transport for a mirror url.
pub fn for_url(url: &str, t: Timeouts) -> Result<Box<dyn Transport>, FetchError> {
    if url.starts_with("file://") {
        Ok(Box::new(FileTransport))
    } else if url.starts_with("http://") || url.starts_with("https://") {
        Ok(Box::new(HttpTransport::new(t)))
    } else {
        Err(FetchError::Unsupported { url: url.into() })
    }
}

/// `file://` mirrors (a mounted folder). The ETag is the file's inode,
/// size and modification time, so an unchanged index is "not modified".
#[derive(Debug, Default)]
pub struct FileTransport;

fn file_path(url: &str) -> Result<PathBuf, FetchError> {
    let unsupported = || FetchError::Unsupported { url: url.into() };
    let p = url.strip_prefix("file://").ok_or_else(unsupported)?;
    if !p.starts_with('/') || p.contains(['%', '?', '#']) {
        return Err(unsupported());
    }
    Ok(PathBuf::from(p))
}

impl Transport for FileTransport {
    fn get(&self, req: &Request<'_>) -> Result<Response, FetchError> {
        let path = file_path(req.url)?;
        let file = File::open(&path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => FetchError::NotFound { url: req.url.into(), code: 404 },
            _ => FetchError::File { url: req.url.into(), source },
        })?;
        let md = file.metadata().map_err(|source| FetchError::File { url: req.url.into(), source })?;
        if !md.is_file() {
            return Err(FetchError::NotFound { url: req.url.into(), code: 404 });
        }
        let etag = format!("\"{:x}-{:x}-{:x}.{:x}\"", md.ino(), md.len(), md.mtime(), md.mtime_nsec());
        if req.validators.and_then(|v| v.etag.as_deref()) == Some(etag.as_str()) {
            return Ok(Response::NotModified);
        }
        Ok(Response::Body {
            length: Some(md.len()),
            body: Box::new(file),
            validators: Validators { etag: Some(etag), last_modified: None },
        })
    }
}

/// HTTP(S) through ureq and rustls; no compression (nothing to inflate),
/// at most [`MAX_REDIRECTS`] redirects, every timeout bounded.
#[derive(Debug)]
pub struct HttpTransport {
    agent: ureq::Agent,
}

impl HttpTransport {
    pub fn new(t: Timeouts) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(t.connect))
            .timeout_global(Some(t.total))
            .timeout_per_read(Some(t.connect.max(Duration::from_secs(1)).min(t.total)))
            .max_redirects(MAX_REDIRECTS)
            .max_redirects_will_error(true)
            .http_status_as_error(false)
            .max_response_header_size(64 * 1024)
            .user_agent(format!("milspecd/{}", env!("CARGO_PKG_VERSION")))
            .build();
        HttpTransport { agent: config.into() }
    }
}

fn map_ureq(url: &str, e: ureq::Error) -> FetchError {
    let url = url.to_string();
    match e {
        ureq::Error::Timeout(t) => FetchError::Timeout { url, what: t.to_string() },
        ureq::Error::TooManyRedirects | ureq::Error::RedirectFailed => {
            FetchError::Redirects { url, limit: MAX_REDIRECTS }
        }
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => FetchError::Connect { url, detail: e.to_string() },
        ureq::Error::Io(io) if io.kind() == io::ErrorKind::ConnectionRefused => {
            FetchError::Connect { url, detail: io.to_string() }
        }
        ureq::Error::Io(io) if io.kind() == io::ErrorKind::TimedOut => {
            FetchError::Timeout { url, what: io.to_string() }
        }
        ureq::Error::BadUri(_) => FetchError::Unsupported { url },
        ureq::Error::StatusCode(code) => FetchError::Status { url, code },
        e => FetchError::Transfer { url, detail: e.to_string() },
    }
}

fn header(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).filter(|s| s.len() <= 1024).map(str::to_string)
}

impl Transport for HttpTransport {
    fn get(&self, req: &Request<'_>) -> Result<Response, FetchError> {
        let mut rb = self.agent.get(req.url);
        if let Some(v) = req.validators {
            if let Some(e) = &v.etag {
                rb = rb.header("If-None-Match", e);
            }
            if let Some(m) = &v.last_modified {
                rb = rb.header("If-Modified-Since", m);
            }
        }
        let resp = rb.call().map_err(|e| map_ureq(req.url, e))?;
        let code = resp.status().as_u16();
        match code {
            304 => return Ok(Response::NotModified),
            200 => {}
            404 | 410 => return Err(FetchError::NotFound { url: req.url.into(), code }),
            _ => return Err(FetchError::Status { url: req.url.into(), code }),
        }
        let validators = Validators { etag: header(&resp, "etag"), last_modified: header(&resp, "last-modified") };
        let body = resp.into_body();
        let length = body.content_length();
        let url = req.url.to_string();
        let reader = body.into_reader();
        Ok(Response::Body { body: Box::new(MapErr { inner: reader, url }), length, validators })
    }
}

/// Turns ureq's body errors into io errors that keep the url.
struct MapErr<R> {
    inner: R,
    url: String,
}

impl<R: Read> Read for MapErr<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.url)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls() {
        assert!(file_path("file:///srv/mirror/index.json").is_ok());
        for bad in ["file://relative", "file:///a%2e", "file:///a?b", "http://x"] {
            assert!(file_path(bad).is_err(), "{bad}");
        }
        assert!(
            for_url("ftp://x", Timeouts { connect: Duration::from_secs(1), total: Duration::from_secs(1) }).is_err()
        );
    }

    #[test]
    fn transient_classes() {
        let u = || "u".to_string();
        assert!(FetchError::Status { url: u(), code: 503 }.is_transient());
        assert!(!FetchError::Status { url: u(), code: 403 }.is_transient());
        assert!(!FetchError::NotFound { url: u(), code: 404 }.is_transient());
        assert!(!FetchError::TooLarge { url: u(), limit: 1 }.is_transient());
        assert!(FetchError::Truncated { url: u(), got: 1, expected: 2 }.is_transient());
    }
}
