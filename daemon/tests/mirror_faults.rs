//! Network faults nginx cannot produce, from a small server of our own on
//! 127.0.0.1: an endless body, a slow drip, a reset mid-body, a truncated
//! body, 5xx, a redirect loop, a server that never answers. Each one:
//! bounded retries, nothing installed, a clear error, the next poll normal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod mirror_support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use milspecd::check::CheckReport;
use milspecd::mirror::Poller;
use mirror_support::*;

/// A host behind the fault server, with short timeouts, holding 1.0.0, and
/// 1.1.0 waiting on the mirror.
fn setup() -> (Publisher, FaultServer, Host) {
    let p = Publisher::new();
    p.publish(&["1.0.0"], None);
    let server = FaultServer::start(&p.mirror());
    let mut h = Host::new(&p, &server.url(), "host-fault");
    if let Some(s) = h.cfg.source.as_mut() {
        s.timeout = Duration::from_millis(1500);
        s.connect_timeout = Duration::from_millis(500);
    }
    assert!(matches!(h.poll().unwrap(), CheckReport::Installed { .. }));
    p.publish(&["1.1.0"], None);
    (p, server, h)
}

fn check_fault(fault: Fault, want: &str, package_requests: usize) {
    let (_p, server, h) = setup();
    server.set(fault.clone());
    let before = server.requests.load(Ordering::SeqCst);
    let start = Instant::now();
    let e = h.poll().unwrap_err().to_string();
    assert!(e.contains(want), "{fault:?}: {e}");
    assert!(start.elapsed() < Duration::from_secs(8), "{fault:?} took {:?}", start.elapsed());
    // The next trust document (a 404: none is published), the index
    // request, then the package requests (attempts and redirects).
    assert_eq!(server.requests.load(Ordering::SeqCst) - before, 2 + package_requests, "{fault:?}");
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.0.0"), "{fault:?}: nothing installed");
    assert_eq!(h.leftover_downloads(), 0, "{fault:?}");
    // The fault goes away: the next poll is normal.
    server.set(Fault::None);
    match h.poll().unwrap() {
        CheckReport::Installed { version, .. } => assert_eq!(version, "1.1.0"),
        r => panic!("{fault:?}: {r:?}"),
    }
}

#[test]
fn endless_body_is_cut_at_the_size_cap() {
    check_fault(Fault::Endless, "larger than the limit", 1);
}

#[test]
fn slow_drip_hits_the_total_timeout() {
    check_fault(Fault::SlowDrip { gap: Duration::from_millis(200) }, "timed out", 3);
}

#[test]
fn reset_mid_body() {
    check_fault(Fault::ResetMidBody, "transfer failed", 3);
}

#[test]
fn truncated_body() {
    check_fault(Fault::Truncated, "1.1.0.mspkg", 3);
}

#[test]
fn wrong_bytes() {
    check_fault(Fault::WrongBytes, "differs from", 3);
}

#[test]
fn redirect_loop_is_not_retried() {
    // One attempt: the first request and five redirects.
    check_fault(Fault::RedirectLoop, "redirects", 6);
}

#[test]
fn server_that_never_answers() {
    check_fault(Fault::Hang, "timed out", 3);
}

#[test]
fn server_errors_are_retried_then_succeed() {
    let (_p, server, h) = setup();
    // Two 503s (the poll's first request, the next trust document, then
    // its first retry) and the poll still works.
    server.set(Fault::Status { code: 503, n: 2 });
    match h.poll().unwrap() {
        CheckReport::Installed { version, .. } => assert_eq!(version, "1.1.0"),
        r => panic!("{r:?}"),
    }
    // Too many: a clear error, nothing changed, next poll fine.
    let (_p, server, h) = setup();
    server.set(Fault::Status { code: 502, n: 3 });
    let e = h.poll().unwrap_err().to_string();
    assert!(e.contains("HTTP 502"), "{e}");
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.0.0"));
    assert!(matches!(h.poll().unwrap(), CheckReport::Installed { .. }));
}

#[test]
fn nothing_listening() {
    let p = Publisher::new();
    p.publish(&["1.0.0"], None);
    let h = Host::new(&p, &format!("http://127.0.0.1:{}/", free_port()), "host-none");
    let e = h.poll().unwrap_err().to_string();
    assert!(e.contains("cannot connect") || e.contains("transfer failed"), "{e}");
    assert_eq!(h.kernel.live_version(), None);
}

// Non-regular files in a `file://` mirror or in the trust folder: refused at
// once with a message naming the file and what it is, never waited on.

/// Replaces `path` with a FIFO that no one ever writes to.
fn make_fifo(path: &std::path::Path) {
    let _ = std::fs::remove_file(path);
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
}

/// The longest a refusal may take; the command is killed (and the test
/// fails) at `GUARD`, so a regression that blocks does not hang the suite.
const PROMPT: Duration = Duration::from_secs(10);
const GUARD: Duration = Duration::from_secs(30);

/// `milspecd check` with `h`'s configuration, on the fake kernel tree.
fn check_cmd(h: &Host) -> (assert_cmd::assert::Assert, Duration) {
    let conf = h.dir.path().join("milspecd.toml");
    let mut cfg = h.cfg.clone();
    cfg.health.probation = Duration::from_secs(1);
    std::fs::write(&conf, cfg.to_toml()).unwrap();
    let start = Instant::now();
    let a = bin("milspecd")
        .args(["check", "--config"])
        .arg(&conf)
        .env("MILSPECD_FAKE_KERNEL", "1")
        .env("MILSPECD_FAKE_RELEASE", RELEASE)
        .timeout(GUARD)
        .assert();
    (a, start.elapsed())
}

/// The guard of every FIFO test: `milspecd check` exits 1 within `PROMPT`
/// (it is killed at `GUARD`). Returns its stdout and stderr.
fn check_refused_promptly(h: &Host) -> (String, String) {
    let (a, took) = check_cmd(h);
    let o = a.get_output();
    let (out, err) = (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned());
    assert_eq!(o.status.code(), Some(1), "took {took:?}\nstdout: {out}\nstderr: {err}");
    assert!(took < PROMPT, "took {took:?}");
    (out, err)
}

/// The same through the library: the poll fails within `PROMPT`; its error.
fn poll_fails_promptly(h: &Host) -> String {
    let start = Instant::now();
    let e = h.poll().unwrap_err().to_string();
    assert!(start.elapsed() < PROMPT, "{e} ({:?})", start.elapsed());
    e
}

#[test]
fn fifo_as_index_json_in_a_file_mirror_fails_check_promptly() {
    let p = Publisher::new();
    p.publish(&["1.0.0"], None);
    make_fifo(&p.mirror().join("index.json"));
    let h = Host::new(&p, &format!("file://{}", p.mirror().display()), "host-fifo-index");
    let (out, err) = check_refused_promptly(&h);
    assert!(err.contains("index.json: is a FIFO (named pipe), not a regular file"), "{err}");
    assert!(err.contains("a mirror must hold regular files only"), "{err}");
    // Not retried: refused once, on the first attempt.
    assert!(!err.contains("retrying"), "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(!h.cfg.paths.state_dir.join("mirror/index.json").exists(), "no index accepted");
    assert_eq!(h.kernel.live_version(), None);
    // The same through the library: the poll fails the same way, at once.
    let e = poll_fails_promptly(&h);
    assert!(e.contains("is a FIFO"), "{e}");
}

#[test]
fn fifo_as_package_file_in_a_file_mirror_is_refused_then_the_real_file_installs() {
    let p = Publisher::new();
    p.publish(&["1.0.0"], None);
    let pkg = p.mirror().join("packages/dell-milspec-1.0.0.mspkg");
    let saved = std::fs::read(&pkg).unwrap();
    make_fifo(&pkg);
    let h = Host::new(&p, &format!("file://{}", p.mirror().display()), "host-fifo-pkg");
    // The binary first: a regression that blocks is killed at GUARD.
    let (_, err) = check_refused_promptly(&h);
    assert!(err.contains("dell-milspec-1.0.0.mspkg: is a FIFO (named pipe), not a regular file"), "{err}");
    assert_eq!(h.kernel.live_version(), None, "nothing installed");
    assert_eq!(h.leftover_downloads(), 0);
    let e = poll_fails_promptly(&h);
    assert!(e.contains("1.0.0.mspkg: is a FIFO"), "{e}");
    // A symbolic link in its place is refused as well: a mirror holds files.
    std::fs::remove_file(&pkg).unwrap();
    let elsewhere = p.path("build/elsewhere.mspkg");
    std::fs::write(&elsewhere, &saved).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &pkg).unwrap();
    let e = h.poll().unwrap_err().to_string();
    assert!(e.contains("is a symbolic link, not a regular file"), "{e}");
    // The publisher puts the file back: the next poll is normal.
    std::fs::remove_file(&pkg).unwrap();
    std::fs::write(&pkg, &saved).unwrap();
    assert!(matches!(h.poll().unwrap(), CheckReport::Installed { .. }));
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.0.0"));
}

#[test]
fn fifo_pub_in_the_keys_dir_fails_key_loading_naming_it() {
    let p = Publisher::new();
    p.publish(&["1.0.0"], None);
    make_fifo(&p.path("trust/x.pub"));
    let h = Host::new(&p, &format!("file://{}", p.mirror().display()), "host-fifo-key");
    let (_, err) = check_refused_promptly(&h);
    assert!(
        err.contains("x.pub: is a FIFO (named pipe), not a regular file; a key file must be a regular file"),
        "{err}"
    );
    let e = Poller::new(&h.cfg).unwrap_err().to_string();
    assert!(e.contains("x.pub: is a FIFO"), "{e}");
}
