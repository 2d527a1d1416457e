//! Network faults nginx cannot produce, from a small server of our own on
//! 127.0.0.1: an endless body, a slow drip, a reset mid-body, a truncated
//! body, 5xx, a redirect loop, a server that never answers. Each one:
//! bounded retries, nothing installed, a clear error, the next poll normal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod mirror_support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use milspecd::mirror::PollReport;
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
    assert!(matches!(h.poll().unwrap(), PollReport::Installed { .. }));
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
    // The index request, then the package requests (attempts and redirects).
    assert_eq!(server.requests.load(Ordering::SeqCst) - before, 1 + package_requests, "{fault:?}");
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.0.0"), "{fault:?}: nothing installed");
    assert_eq!(h.leftover_downloads(), 0, "{fault:?}");
    // The fault goes away: the next poll is normal.
    server.set(Fault::None);
    match h.poll().unwrap() {
        PollReport::Installed { version, .. } => assert_eq!(version, "1.1.0"),
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
    // Two 503s (the index, then its first retry) and the poll still works.
    server.set(Fault::Status { code: 503, n: 2 });
    match h.poll().unwrap() {
        PollReport::Installed { version, .. } => assert_eq!(version, "1.1.0"),
        r => panic!("{r:?}"),
    }
    // Too many: a clear error, nothing changed, next poll fine.
    let (_p, server, h) = setup();
    server.set(Fault::Status { code: 502, n: 3 });
    let e = h.poll().unwrap_err().to_string();
    assert!(e.contains("HTTP 502"), "{e}");
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.0.0"));
    assert!(matches!(h.poll().unwrap(), PollReport::Installed { .. }));
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
