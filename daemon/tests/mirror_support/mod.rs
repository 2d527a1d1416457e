//! Helpers for the mirror tests: a publisher workspace, a real nginx on
//! loopback, a small misbehaving HTTP server, and a fake kernel so a pull
//! can go all the way to a committed install on the build host.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use milspec_format::testkit::FakeKo;
use milspecd::check::{CheckError, CheckReport};
use milspecd::config::{Config, SourceConfig};
use milspecd::engine::Engine;
use milspecd::mirror::fetch::RetryPolicy;
use milspecd::mirror::{PollOptions, Poller};
use time::OffsetDateTime;

// The mirror tests do not include `common`; attack_matrix.rs includes both,
// so there the file is compiled twice, harmlessly (two private copies).
#[allow(clippy::duplicate_mod)]
#[path = "../common/fake_kernel.rs"]
mod fake_kernel;
pub use fake_kernel::FakeKernel;

pub const RELEASE: &str = "6.12.113+deb12-cloud-amd64";

pub fn bin(name: &str) -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin(name).unwrap()
}

/// A publisher: a key pair, a trust folder and a mirror folder, all in one
/// world-readable temp folder (nginx workers may run as `nobody`).
pub struct Publisher {
    pub dir: tempfile::TempDir,
}

impl Publisher {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let p = Publisher { dir };
        for d in ["keys", "trust", "mirror", "build"] {
            fs::create_dir(p.path(d)).unwrap();
        }
        bin("milspec-repo").args(["keygen", "--name", "release", "--out"]).arg(p.path("keys")).assert().success();
        fs::copy(p.path("keys/release.pub"), p.path("trust/release.pub")).unwrap();
        p
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn mirror(&self) -> PathBuf {
        self.path("mirror")
    }

    pub fn key(&self) -> PathBuf {
        self.path("keys/release.key")
    }

    /// Packs a fake module of `version` for `release` into build/.
    pub fn pack_for(&self, version: &str, release: &str) -> PathBuf {
        let ko = self.path(&format!("build/{version}-{release}.ko"));
        fs::write(&ko, FakeKo { version, kernel_release: release, ..FakeKo::default() }.build()).unwrap();
        let out = self.path(&format!("build/dell-milspec-{version}-{release}.mspkg"));
        bin("milspec-repo")
            .args(["pack", "--version", version, "--module"])
            .arg(&ko)
            .arg("--key")
            .arg(self.key())
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        out
    }

    pub fn pack(&self, version: &str) -> PathBuf {
        self.pack_for(version, RELEASE)
    }

    /// `milspec-repo publish` of these versions, each packed once: a
    /// version published again is the same package (its manifest carries
    /// the second it was packed, so a fresh pack would differ).
    pub fn publish(&self, versions: &[&str], waves: Option<&str>) {
        let pkgs: Vec<PathBuf> = versions
            .iter()
            .map(|v| {
                let packed = self.path(&format!("build/dell-milspec-{v}-{RELEASE}.mspkg"));
                if packed.exists() {
                    packed
                } else {
                    self.pack(v)
                }
            })
            .collect();
        let mut cmd = bin("milspec-repo");
        cmd.arg("publish").arg("--mirror").arg(self.mirror()).arg("--key").arg(self.key());
        if let Some(w) = waves {
            cmd.args(["--waves", w]);
        }
        cmd.args(&pkgs).assert().success();
    }

    pub fn revoke(&self, version: &str) {
        bin("milspec-repo")
            .arg("revoke")
            .arg("--mirror")
            .arg(self.mirror())
            .arg("--key")
            .arg(self.key())
            .arg(version)
            .assert()
            .success();
    }

    pub fn index(&self) -> milspec_format::index::Index {
        milspec_format::index::read_unverified(&fs::read(self.mirror().join("index.json")).unwrap()).unwrap()
    }
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_listening(port: u16, child: &mut Child, log: &Path) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("nginx exited with {status}: {}", fs::read_to_string(log).unwrap_or_default());
        }
        assert!(start.elapsed() < Duration::from_secs(10), "nginx did not listen on 127.0.0.1:{port} within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A real nginx serving `root` on 127.0.0.1, killed on drop.
pub struct Nginx {
    child: Child,
    pub port: u16,
    pub prefix: tempfile::TempDir,
    tls: bool,
}

pub const NGINX_MISSING: &str = "nginx is not installed: the mirror tests need a real nginx on loopback. \
     Install it with `apt-get install -y nginx-light` (tests/run-all.sh does)";

pub fn nginx_binary() -> PathBuf {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("{NGINX_MISSING}");
}

impl Nginx {
    pub fn start(root: &Path) -> Self {
        Self::start_with(root, 1, "")
    }

    /// `extra` goes inside the `server` block.
    pub fn start_with(root: &Path, workers: u32, extra: &str) -> Self {
        Self::start_conf(root, workers, "", extra)
    }

    /// HTTPS with this certificate chain and key (PEM files).
    pub fn start_tls(root: &Path, cert: &Path, key: &Path) -> Self {
        let extra = format!("ssl_certificate {};\n        ssl_certificate_key {};", cert.display(), key.display());
        Self::start_conf(root, 1, " ssl", &extra)
    }

    fn start_conf(root: &Path, workers: u32, listen_flags: &str, extra: &str) -> Self {
        let bin = nginx_binary();
        let prefix = tempfile::tempdir().unwrap();
        let p = prefix.path();
        fs::create_dir(p.join("tmp")).unwrap();
        for attempt in 0..5 {
            let port = free_port();
            let user = if nix_is_root() { "user root;\n" } else { "" };
            let conf = format!(
                r#"{user}worker_processes {workers};
error_log {p}/error.log warn;
pid {p}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    log_format sizes '$status $bytes_sent $request_uri';
    access_log {p}/access.log sizes;
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    types {{ application/json json; application/octet-stream mspkg; }}
    default_type application/octet-stream;
    sendfile on;
    etag on;
    keepalive_timeout 65;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port}{listen_flags};
        root {root};
        {extra}
    }}
}}
"#,
                p = p.display(),
                root = root.display(),
            );
            fs::write(p.join("nginx.conf"), conf).unwrap();
            let mut child = Command::new(&bin)
                .arg("-e")
                .arg(p.join("error.log"))
                .arg("-p")
                .arg(p)
                .arg("-c")
                .arg(p.join("nginx.conf"))
                .args(["-g", "daemon off;"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}; {NGINX_MISSING}", bin.display()));
            std::thread::sleep(Duration::from_millis(30));
            if let Ok(Some(_)) = child.try_wait() {
                let log = fs::read_to_string(p.join("error.log")).unwrap_or_default();
                if log.contains("Address already in use") && attempt < 4 {
                    continue;
                }
                panic!("nginx failed to start: {log}");
            }
            wait_listening(port, &mut child, &p.join("error.log"));
            return Nginx { child, port, prefix, tls: !listen_flags.is_empty() };
        }
        unreachable!()
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// (status, bytes sent) per request, from the access log.
    pub fn log(&self) -> Vec<(u16, u64, String)> {
        fs::read_to_string(self.prefix.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut it = l.split(' ');
                Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?, it.next()?.to_string()))
            })
            .collect()
    }
}

fn nix_is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

impl Drop for Nginx {
    /// SIGTERM, so the master stops its workers before it exits (a SIGKILL
    /// of the master alone leaves them running); SIGKILL after 5 s.
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the misbehaving server does with a request for a package
/// (`*.mspkg`); `index.json` and other files are served from the mirror.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Serve files properly.
    None,
    /// 200 with no length, zeros until the client hangs up.
    Endless,
    /// The right length announced, one byte every `gap`.
    SlowDrip { gap: Duration },
    /// Half the body, then a TCP reset.
    ResetMidBody,
    /// The right length announced, half the body, then a clean close.
    Truncated,
    /// This status for the next `n` requests, then as `None`.
    Status { code: u16, n: usize },
    /// `302` to itself, forever.
    RedirectLoop,
    /// Accept and never answer.
    Hang,
    /// Serve the file with one byte changed.
    WrongBytes,
}

/// A tiny HTTP/1.1 server on 127.0.0.1 whose faults apply to packages.
pub struct FaultServer {
    pub port: u16,
    pub fault: Arc<Mutex<Fault>>,
    pub requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FaultServer {
    pub fn start(root: &Path) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let fault = Arc::new(Mutex::new(Fault::None));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, r, s, root) = (fault.clone(), requests.clone(), stop.clone(), root.to_path_buf());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (f, r, s, root) = (f.clone(), r.clone(), s.clone(), root.clone());
                std::thread::spawn(move || serve(conn, &root, &f, &r, &s));
            }
        });
        FaultServer { port, fault, requests, stop }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    pub fn set(&self, f: Fault) {
        *self.fault.lock().unwrap() = f;
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(mut conn: TcpStream, root: &Path, fault: &Mutex<Fault>, requests: &AtomicUsize, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    // The request line only, byte by byte: the headers stay unread, so a
    // close becomes a TCP reset.
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 4096 {
        match conn.read(&mut b) {
            Ok(1) if b[0] == b'\n' => break,
            Ok(1) => line.push(b[0]),
            _ => return,
        }
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let line = String::from_utf8_lossy(&line).into_owned();
    let path = line.split(' ').nth(1).unwrap_or("/").trim_start_matches('/').to_string();
    let is_pkg = path.ends_with(".mspkg");
    let current = fault.lock().unwrap().clone();
    let current = match current {
        Fault::Status { code, n } if n > 0 => {
            *fault.lock().unwrap() = if n > 1 { Fault::Status { code, n: n - 1 } } else { Fault::None };
            return respond_status(conn, code);
        }
        f if is_pkg => f,
        _ => Fault::None,
    };
    if path.contains("..") {
        return respond_status(conn, 400);
    }
    let body = match fs::read(root.join(&path)) {
        Ok(b) => b,
        Err(_) => return respond_status(conn, 404),
    };
    // Read the rest of the headers for the well-behaved cases.
    let drain = |conn: &mut TcpStream| {
        let mut r = BufReader::new(conn);
        let mut l = String::new();
        while r.read_line(&mut l).map(|n| n > 2).unwrap_or(false) {
            l.clear();
        }
    };
    let head = |len: usize| format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n");
    match current {
        Fault::None | Fault::Status { .. } => {
            drain(&mut conn);
            let _ = conn.write_all(head(body.len()).as_bytes());
            let _ = conn.write_all(&body);
        }
        Fault::WrongBytes => {
            drain(&mut conn);
            let mut body = body;
            let mid = body.len() / 2;
            body[mid] ^= 0xff;
            let _ = conn.write_all(head(body.len()).as_bytes());
            let _ = conn.write_all(&body);
        }
        Fault::Endless => {
            drain(&mut conn);
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            let chunk = vec![0u8; 64 * 1024];
            while !stop.load(Ordering::SeqCst) && conn.write_all(&chunk).is_ok() {}
        }
        Fault::SlowDrip { gap } => {
            drain(&mut conn);
            let _ = conn.write_all(head(body.len()).as_bytes());
            for byte in &body {
                if stop.load(Ordering::SeqCst) || conn.write_all(std::slice::from_ref(byte)).is_err() {
                    break;
                }
                std::thread::sleep(gap);
            }
        }
        Fault::ResetMidBody => {
            let _ = conn.write_all(head(body.len()).as_bytes());
            let _ = conn.write_all(&body[..body.len() / 2]);
            // Headers unread: closing now sends RST.
        }
        Fault::Truncated => {
            drain(&mut conn);
            let _ = conn.write_all(head(body.len()).as_bytes());
            let _ = conn.write_all(&body[..body.len() / 2]);
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
        Fault::RedirectLoop => {
            drain(&mut conn);
            let _ = conn.write_all(
                format!("HTTP/1.1 302 Found\r\nLocation: /{path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
        Fault::Hang => {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn respond_status(mut conn: TcpStream, code: u16) {
    let mut r = BufReader::new(&mut conn);
    let mut l = String::new();
    while r.read_line(&mut l).map(|n| n > 2).unwrap_or(false) {
        l.clear();
    }
    let _ =
        conn.write_all(format!("HTTP/1.1 {code} Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
}

fn write(p: &Path, s: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, s).unwrap();
}

/// A fleet host: its own state folder, machine id and fake kernel.
pub struct Host {
    pub dir: tempfile::TempDir,
    pub kernel: FakeKernel,
    pub cfg: Config,
}

impl Host {
    pub fn new(publisher: &Publisher, url: &str, machine_id: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kernel = FakeKernel::new(&dir.path().join("root"), RELEASE);
        write(&dir.path().join("machine-id"), &format!("{machine_id}\n"));
        let mut cfg = Config::default();
        cfg.trust.keys_dir = publisher.path("trust");
        cfg.paths.state_dir = dir.path().join("state");
        cfg.health.probation = Duration::from_millis(100);
        cfg.health.checks_dir = dir.path().join("checks");
        cfg.kernel.proc = kernel.paths.proc.clone();
        cfg.kernel.sys = kernel.paths.sys.clone();
        cfg.kernel.kmsg = kernel.paths.kmsg.clone();
        cfg.source = Some(SourceConfig {
            url: url.into(),
            connect_timeout: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            attempts: 3,
            machine_id_file: dir.path().join("machine-id"),
            ..SourceConfig::default()
        });
        Host { dir, kernel, cfg }
    }

    pub fn poller(&self) -> Poller {
        let mut p = Poller::new(&self.cfg).unwrap();
        p.retry = RetryPolicy { attempts: 3, base: Duration::from_millis(1), max: Duration::from_millis(5) };
        p
    }

    pub fn poll_at(&self, now: OffsetDateTime, force: bool) -> Result<CheckReport, CheckError> {
        let mut engine = Engine::open(self.cfg.clone(), &self.kernel).unwrap();
        milspecd::check::check(&self.poller(), &mut engine, PollOptions { now, force }, &mut |_| {})
    }

    pub fn poll(&self) -> Result<CheckReport, CheckError> {
        self.poll_at(OffsetDateTime::now_utc(), false)
    }

    pub fn state(&self) -> milspecd::state::State {
        milspecd::state::StateFile::new(&self.cfg.paths.state_dir).load().unwrap()
    }

    /// Files left in the state folder's download area (should be none).
    pub fn leftover_downloads(&self) -> usize {
        fs::read_dir(self.cfg.paths.state_dir.join("mirror"))
            .map(|rd| rd.filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(".download")).count())
            .unwrap_or(0)
    }
}

/// A machine id whose wave position for `version` satisfies `want`.
pub fn machine_id_where(version: &str, want: impl Fn(f64) -> bool) -> String {
    let v: semver::Version = version.parse().unwrap();
    (0..100_000).map(|n| format!("{n:032x}")).find(|m| want(milspec_format::index::wave_position(m, &v))).unwrap()
}

/// A small HTTP CONNECT proxy on 127.0.0.1 that tunnels to loopback
/// targets only and records each CONNECT target.
pub struct ConnectProxy {
    pub port: u16,
    pub targets: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl ConnectProxy {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let targets = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s) = (targets.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let t = t.clone();
                std::thread::spawn(move || tunnel(conn, &t));
            }
        });
        ConnectProxy { port, targets, stop }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn tunnel(mut client: TcpStream, targets: &Mutex<Vec<String>>) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(20)));
    // The request head, byte by byte, so nothing after it is consumed.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut b) {
            Ok(1) if head.len() < 8192 => head.push(b[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut words = head.split(' ');
    let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
        let _ = client.write_all(b"HTTP/1.1 405 Only CONNECT\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    targets.lock().unwrap().push(target.to_string());
    // Loopback only: a test never reaches past this machine.
    let upstream = match target.rsplit_once(':') {
        Some(("127.0.0.1", port)) => port.parse::<u16>().ok().and_then(|p| TcpStream::connect(("127.0.0.1", p)).ok()),
        _ => None,
    };
    let Some(upstream) = upstream else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    if client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").is_err() {
        return;
    }
    let _ = upstream.set_read_timeout(Some(Duration::from_secs(20)));
    let (mut c2, mut u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(std::net::Shutdown::Write);
    });
    let (mut u, mut c) = (upstream, client);
    let _ = std::io::copy(&mut u, &mut c);
    let _ = c.shutdown(std::net::Shutdown::Both);
    let _ = up.join();
}
