//! Runs one declared check ([`super::declared`]) once, within its timeout:
//! `Ok(())` when it passes, otherwise why not (bounded, escaped).

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use milspec_format::text::sanitize;

use super::declared::{Probe, StatusRule};
use super::status;

/// Most bytes of an HTTP answer read (headers and body).
pub const MAX_HTTP_BODY: u64 = 64 * 1024;

/// Runs `probe` once; `status_path` is the module's status file.
pub fn run(probe: &Probe, timeout: Duration, status_path: &Path) -> Result<(), String> {
    match probe {
        Probe::Command { argv } => match super::checks::run_command(argv, timeout) {
            None => Ok(()),
            Some(why) => Err(why),
        },
        Probe::Tcp { address } => TcpStream::connect_timeout(address, timeout)
            .map(drop)
            .map_err(|e| format!("cannot connect to {address}: {e}")),
        Probe::Http { url, expect_status, body_contains } => {
            http(url, *expect_status, body_contains.as_deref(), timeout)
        }
        Probe::Status { key, rule } => status_key(status_path, key, rule),
    }
}

fn http(url: &str, expect: u16, body_contains: Option<&str>, timeout: Duration) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .into();
    let response = agent.get(url).call().map_err(|e| format!("GET {}: {}", sanitize(url), sanitize(&e.to_string())))?;
    let code = response.status().as_u16();
    if code != expect {
        return Err(format!("GET {}: HTTP {code}, want {expect}", sanitize(url)));
    }
    let Some(needle) = body_contains else { return Ok(()) };
    let mut body = Vec::new();
    response
        .into_body()
        .into_reader()
        .take(MAX_HTTP_BODY)
        .read_to_end(&mut body)
        .map_err(|e| format!("GET {}: reading the body: {e}", sanitize(url)))?;
    if body.windows(needle.len()).any(|w| w == needle.as_bytes()) {
        Ok(())
    } else {
        Err(format!("GET {}: the body does not contain {:?}", sanitize(url), sanitize(needle)))
    }
}

fn status_key(path: &Path, key: &str, rule: &StatusRule) -> Result<(), String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(status::MAX_STATUS as u64 + 1).read_to_string(&mut text))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let parsed = status::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let value = parsed.value(key).ok_or_else(|| format!("{} has no key {key}", path.display()))?;
    match rule {
        StatusRule::Below(n) => match value.parse::<u64>() {
            Ok(v) if v < *n => Ok(()),
            Ok(v) => Err(format!("{key} is {v}, want below {n}")),
            Err(_) => Err(format!("{key} is {:?}, not a number", sanitize(&value))),
        },
        StatusRule::Equals(want) if &value == want => Ok(()),
        StatusRule::Equals(want) => Err(format!("{key} is {:?}, want {:?}", sanitize(&value), sanitize(want))),
    }
}

/// A tiny HTTP server on 127.0.0.1 for the tests: answers every request
/// with `answer` until dropped.
#[cfg(test)]
pub(crate) struct TestServer {
    pub addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[cfg(test)]
impl TestServer {
    pub fn start(answer: &'static str) -> Self {
        use std::io::Write;
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let mut buf = [0u8; 1024];
                        let _ = s.read(&mut buf);
                        let _ = s.write_all(answer.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        TestServer { addr, stop, thread: Some(thread) }
    }
}

#[cfg(test)]
impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(2);
    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nall ok\n";

    fn http_probe(url: String, body: Option<&str>) -> Probe {
        Probe::Http { url, expect_status: 200, body_contains: body.map(String::from) }
    }

    #[test]
    fn tcp_and_http_against_a_real_listener() {
        let server = TestServer::start(OK);
        let st = Path::new("/nonexistent");
        assert_eq!(run(&Probe::Tcp { address: server.addr }, T, st), Ok(()));
        let url = format!("http://{}/health", server.addr);
        assert_eq!(run(&http_probe(url.clone(), None), T, st), Ok(()));
        assert_eq!(run(&http_probe(url.clone(), Some("all ok")), T, st), Ok(()));
        let e = run(&http_probe(url, Some("degraded")), T, st).unwrap_err();
        assert!(e.contains("does not contain"), "{e}");
        let addr = server.addr;
        drop(server);
        let e = run(&Probe::Tcp { address: addr }, T, st).unwrap_err();
        assert!(e.contains("cannot connect"), "{e}");
        let e = run(&http_probe(format!("http://{addr}/"), None), T, st).unwrap_err();
        assert!(e.starts_with("GET http://"), "{e}");
    }

    #[test]
    fn http_status_must_match() {
        let server = TestServer::start("HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let e = run(&http_probe(format!("http://{}/", server.addr), None), T, Path::new("/x")).unwrap_err();
        assert!(e.contains("HTTP 503, want 200"), "{e}");
    }

    #[test]
    fn status_keys() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("status");
        std::fs::write(&p, "version: 1.0\nstate: ok\nselftest: pass\nmode5_level: 0\nerrors: 4\nloaded_at: 1\n")
            .unwrap();
        let probe = |key: &str, rule| Probe::Status { key: key.into(), rule };
        assert_eq!(run(&probe("errors", StatusRule::Below(5)), T, &p), Ok(()));
        assert_eq!(run(&probe("errors", StatusRule::Below(4)), T, &p).unwrap_err(), "errors is 4, want below 4");
        assert_eq!(run(&probe("state", StatusRule::Equals("ok".into())), T, &p), Ok(()));
        assert!(run(&probe("state", StatusRule::Below(1)), T, &p).unwrap_err().contains("not a number"));
        assert!(run(&probe("nokey", StatusRule::Below(1)), T, &p).unwrap_err().contains("no key nokey"));
        assert!(run(&probe("errors", StatusRule::Below(1)), T, &d.path().join("gone"))
            .unwrap_err()
            .contains("cannot read"));
    }

    #[test]
    fn commands() {
        let ok = Probe::Command { argv: vec!["/bin/sh".into(), "-c".into(), "exit 0".into()] };
        assert_eq!(run(&ok, T, Path::new("/x")), Ok(()));
        let bad = Probe::Command { argv: vec!["/bin/sh".into(), "-c".into(), "echo broken >&2; exit 2".into()] };
        assert_eq!(run(&bad, T, Path::new("/x")).unwrap_err(), "exit status 2: broken");
    }
}
