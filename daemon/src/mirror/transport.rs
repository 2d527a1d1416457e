//! One door to the mirror for `file://` and HTTP(S) alike: a conditional
//! GET that yields either "not modified" or a body reader.
//!
//! Transports do not cap or hash; [`super::fetch`] wraps every body in a
//! reader that does, whatever the transport.

use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use milspec_format::{open_regular, FileKind, OpenError, OpenPolicy, RegularFile};
use serde::{Deserialize, Serialize};

use super::trust::Roots;

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
    #[error("{url}: the server's TLS certificate is not trusted ({detail}); {hint}")]
    Certificate { url: String, detail: String, hint: &'static str },
    #[error("{url}: transfer failed: {detail}")]
    Transfer { url: String, detail: String },
    #[error("{url}: cannot read: {source}")]
    File { url: String, source: io::Error },
    #[error("{url}: is {kind}, not a regular file; a mirror must hold regular files only; refused")]
    NotRegular { url: String, kind: FileKind },
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
            | FetchError::Certificate { .. }
            | FetchError::TooLarge { .. }
            | FetchError::File { .. }
            | FetchError::NotRegular { .. }
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
    /// When the whole request, body included, must be done. The HTTP
    /// transport has its own global timeout of the same length; the
    /// `file://` transport applies this one to the open and to every read.
    pub deadline: Instant,
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

/// The transport for a mirror url: HTTP(S) with [`HttpTransport::new`]'s
/// defaults (the system CA store, the proxy the environment names).
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
///
/// Each file is opened with [`open_regular`] without following a symbolic
/// link in its last component (`milspec-repo` writes regular files only;
/// a link could make the mirror serve a file from outside it): a FIFO, a
/// device, a socket or a link is refused at once with
/// [`FetchError::NotRegular`], never opened for reading. The open and every
/// read run on a worker thread and are waited for only until the request's
/// deadline, so a mirror on a network filesystem that stops answering
/// fails the poll with [`FetchError::Timeout`] instead of hanging it.
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

/// Most `file://` worker threads alive at once. A worker stuck in the
/// kernel (a hung network filesystem) outlives its request; once this many
/// are alive no new one is started and the request fails at once.
pub const MAX_FILE_WORKERS: usize = 16;
static FILE_WORKERS: AtomicUsize = AtomicUsize::new(0);

/// Counts a live worker; released however the worker ends.
struct WorkerSlot;

impl WorkerSlot {
    fn take() -> Option<WorkerSlot> {
        FILE_WORKERS
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < MAX_FILE_WORKERS).then_some(n + 1))
            .ok()
            .map(|_| WorkerSlot)
    }
}

impl Drop for WorkerSlot {
    fn drop(&mut self) {
        FILE_WORKERS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Bytes read per request to the worker.
const FILE_CHUNK: usize = 64 * 1024;

enum FromWorker {
    Opened(Result<std::fs::Metadata, OpenError>),
    Chunk(io::Result<Vec<u8>>),
}

/// Runs `open` on a worker thread and waits for it until `deadline`. The
/// worker then reads one chunk each time the returned body asks for one.
fn open_on_worker(
    url: &str,
    deadline: Instant,
    open: impl FnOnce() -> Result<RegularFile, OpenError> + Send + 'static,
) -> Result<(std::fs::Metadata, WorkerBody), FetchError> {
    let slot = WorkerSlot::take().ok_or_else(|| FetchError::Timeout {
        url: url.into(),
        what: format!(
            "{MAX_FILE_WORKERS} earlier reads of the mirror's filesystem are still stuck; it does not answer"
        ),
    })?;
    let (to_caller, from_worker) = mpsc::sync_channel(1);
    let (want, wanted) = mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("mirror-file".into())
        .spawn(move || {
            let _slot = slot;
            let file = match open() {
                Ok(f) => {
                    if to_caller.send(FromWorker::Opened(Ok(f.metadata))).is_err() {
                        return;
                    }
                    f.file
                }
                Err(e) => {
                    let _ = to_caller.send(FromWorker::Opened(Err(e)));
                    return;
                }
            };
            let mut file = file;
            // Ends when the body is dropped (the caller is done or gave up).
            while wanted.recv().is_ok() {
                let mut chunk = vec![0u8; FILE_CHUNK];
                let r = loop {
                    match file.read(&mut chunk) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        r => break r,
                    }
                };
                let msg = r.map(|n| {
                    chunk.truncate(n);
                    chunk
                });
                if to_caller.send(FromWorker::Chunk(msg)).is_err() {
                    return;
                }
            }
        })
        .map_err(|source| FetchError::File { url: url.into(), source })?;
    let timeout = || FetchError::Timeout { url: url.into(), what: "opening the file took past the deadline".into() };
    let md = match from_worker.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(FromWorker::Opened(Ok(md))) => md,
        Ok(FromWorker::Opened(Err(e))) => return Err(open_error(url, e)),
        Ok(FromWorker::Chunk(_)) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            return Err(FetchError::Transfer { url: url.into(), detail: "the file reader stopped".into() })
        }
        Err(mpsc::RecvTimeoutError::Timeout) => return Err(timeout()),
    };
    Ok((md, WorkerBody { want, from_worker, deadline, buf: Vec::new(), pos: 0, eof: false }))
}

fn open_error(url: &str, e: OpenError) -> FetchError {
    match e {
        e if e.is_not_found() => FetchError::NotFound { url: url.into(), code: 404 },
        OpenError::NotRegular { kind, .. } => FetchError::NotRegular { url: url.into(), kind },
        OpenError::Io { source, .. } => FetchError::File { url: url.into(), source },
        e @ OpenError::TooLarge { .. } => FetchError::File { url: url.into(), source: io::Error::other(e.to_string()) },
    }
}

/// A `file://` body: each read asks the worker for a chunk and waits for it
/// until the deadline at most.
struct WorkerBody {
    want: mpsc::Sender<()>,
    from_worker: mpsc::Receiver<FromWorker>,
    deadline: Instant,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
}

impl Read for WorkerBody {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len() && !self.eof {
            let gone = || io::Error::other("the file reader stopped");
            self.want.send(()).map_err(|_| gone())?;
            match self.from_worker.recv_timeout(self.deadline.saturating_duration_since(Instant::now())) {
                Ok(FromWorker::Chunk(Ok(chunk))) => {
                    self.eof = chunk.is_empty();
                    self.buf = chunk;
                    self.pos = 0;
                }
                Ok(FromWorker::Chunk(Err(e))) => return Err(e),
                Ok(FromWorker::Opened(_)) | Err(mpsc::RecvTimeoutError::Disconnected) => return Err(gone()),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "reading the file took past the deadline"))
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Transport for FileTransport {
    fn get(&self, req: &Request<'_>) -> Result<Response, FetchError> {
        let path = file_path(req.url)?;
        let (md, body) =
            open_on_worker(req.url, req.deadline, move || open_regular(&path, OpenPolicy::no_follow(u64::MAX)))?;
        let etag = format!("\"{:x}-{:x}-{:x}.{:x}\"", md.ino(), md.len(), md.mtime(), md.mtime_nsec());
        if req.validators.and_then(|v| v.etag.as_deref()) == Some(etag.as_str()) {
            return Ok(Response::NotModified);
        }
        Ok(Response::Body {
            length: Some(md.len()),
            body: Box::new(body),
            validators: Validators { etag: Some(etag), last_modified: None },
        })
    }
}

/// HTTP(S) through ureq and rustls; no compression (nothing to inflate),
/// at most [`MAX_REDIRECTS`] redirects, every timeout bounded. The roots
/// it trusts and the proxy it uses are given explicitly
/// ([`HttpTransport::with`]); ureq's own defaults (the built-in roots only,
/// its own order of proxy variables) are never in force.
#[derive(Debug)]
pub struct HttpTransport {
    agent: ureq::Agent,
}

impl HttpTransport {
    /// The system CA store (see [`Roots::system`]) and the proxy the
    /// environment names for `https://` (an unusable proxy variable is
    /// logged and ignored; [`crate::mirror::Poller::new`] refuses it instead).
    pub fn new(t: Timeouts) -> Self {
        let proxy = match super::proxy::from_env("https://") {
            Ok(c) => c.proxy(),
            Err(e) => {
                tracing::warn!("mirror: {e}; connecting directly");
                None
            }
        };
        Self::with(t, &Roots::system(), proxy)
    }

    /// Trusting exactly `roots`, through `proxy` (or directly).
    pub fn with(t: Timeouts, roots: &Roots, proxy: Option<ureq::Proxy>) -> Self {
        let certs: Vec<ureq::tls::Certificate<'static>> =
            roots.certs.iter().map(|c| ureq::tls::Certificate::from_der(c.as_ref()).to_owned()).collect();
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
            .build();
        let config = ureq::Agent::config_builder()
            .tls_config(tls)
            .proxy(proxy)
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

/// The certificate error inside a ureq error, if the failure is the
/// server's certificate (as opposed to the network or the TLS protocol).
fn certificate_error(e: &ureq::Error) -> Option<&rustls::CertificateError> {
    let tls = match e {
        ureq::Error::Rustls(t) => Some(t),
        ureq::Error::Io(io) => io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    match tls? {
        rustls::Error::InvalidCertificate(c) => Some(c),
        _ => None,
    }
}

/// The refusal in words.
fn certificate_detail(c: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match c {
        C::UnknownIssuer => "issued by a CA this host does not trust".into(),
        C::Expired | C::ExpiredContext { .. } => "expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => "not valid yet".into(),
        C::NotValidForName | C::NotValidForNameContext { .. } => "issued for another name".into(),
        C::Revoked => "revoked".into(),
        C::BadSignature => "a bad signature".into(),
        other => milspec_format::text::EscapedDisplay(other).to_string(),
    }
}

/// What an operator does about a certificate the client refused.
fn certificate_hint(c: &rustls::CertificateError) -> &'static str {
    use rustls::CertificateError as C;
    match c {
        C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. } => {
            "renew the mirror's certificate, or check this host's clock"
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "the certificate does not name the host in [source] url: use the name it was issued for"
        }
        _ => {
            "if the mirror uses a private or corporate CA, add that CA to the system store \
             (copy it to /usr/local/share/ca-certificates/NAME.crt and run update-ca-certificates) \
             or set [source] ca_file = \"/path/to/ca.pem\""
        }
    }
}

fn map_ureq(url: &str, e: ureq::Error) -> FetchError {
    let url = url.to_string();
    if let Some(c) = certificate_error(&e) {
        return FetchError::Certificate { url, detail: certificate_detail(c), hint: certificate_hint(c) };
    }
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
    fn file_open_and_reads_are_bounded_by_the_deadline() {
        // An open that never returns in time (a hung network filesystem).
        let start = Instant::now();
        let e = open_on_worker("file:///hung", start + Duration::from_millis(200), || {
            std::thread::sleep(Duration::from_secs(3));
            Err(OpenError::Io { path: "/hung".into(), source: io::Error::other("late") })
        })
        .err()
        .unwrap();
        assert!(matches!(e, FetchError::Timeout { .. }), "{e}");
        assert!(e.is_transient());
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());

        // A read that never returns: a FIFO opened as its own writer.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("p");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let start = Instant::now();
        let (_, mut body) = open_on_worker("file:///p", start + Duration::from_millis(300), move || {
            let file = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).unwrap();
            let metadata = file.metadata().unwrap();
            Ok(RegularFile { file, metadata })
        })
        .unwrap();
        let e = body.read(&mut [0u8; 16]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    }

    #[test]
    fn file_transport_refuses_what_is_not_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        nix::unistd::mkfifo(&d.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::write(d.join("real"), b"x").unwrap();
        std::os::unix::fs::symlink(d.join("real"), d.join("link")).unwrap();
        let get = |name: &str| {
            let url = format!("file://{}/{name}", d.display());
            let deadline = Instant::now() + Duration::from_secs(5);
            FileTransport.get(&Request { url: &url, validators: None, deadline })
        };
        for (name, kind) in [("fifo", FileKind::Fifo), ("link", FileKind::Symlink)] {
            match get(name) {
                Err(FetchError::NotRegular { kind: k, .. }) => assert_eq!(k, kind, "{name}"),
                r => panic!("{name}: {r:?}"),
            }
        }
        assert!(matches!(get("missing"), Err(FetchError::NotFound { .. })));
        let Ok(Response::Body { mut body, length, .. }) = get("real") else { panic!("real") };
        let mut v = Vec::new();
        body.read_to_end(&mut v).unwrap();
        assert_eq!((v.as_slice(), length), (&b"x"[..], Some(1)));
    }

    #[test]
    fn certificate_refusals_are_typed_and_final() {
        let wrapped =
            |c| ureq::Error::Io(io::Error::new(io::ErrorKind::InvalidData, rustls::Error::InvalidCertificate(c)));
        let e = map_ureq("https://m/index.json", wrapped(rustls::CertificateError::UnknownIssuer));
        assert!(matches!(e, FetchError::Certificate { .. }), "{e:?}");
        assert!(!e.is_transient());
        let text = e.to_string();
        assert!(text.contains("update-ca-certificates") && text.contains("[source] ca_file"), "{text}");
        let e =
            map_ureq("u", ureq::Error::Rustls(rustls::Error::InvalidCertificate(rustls::CertificateError::Expired)));
        assert!(e.to_string().contains("expired") && e.to_string().contains("clock"), "{e}");
        let e = map_ureq("u", wrapped(rustls::CertificateError::NotValidForName));
        assert!(e.to_string().contains("another name"), "{e}");
        // Other TLS trouble stays a transfer error (retried).
        let e = map_ureq("u", ureq::Error::Rustls(rustls::Error::DecryptError));
        assert!(matches!(e, FetchError::Transfer { .. }) && e.is_transient(), "{e:?}");
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
