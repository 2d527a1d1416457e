//! Fuzz entry points for the daemon's own parsers: `/proc/milspec/status`,
//! kernel log records with the fault matcher, and the TOML config.
//!
//! Shared with `daemon/tests/fuzz_regressions.rs` through `#[path]`, so it
//! uses the `milspecd` library only.

use std::path::Path;

use milspecd::config::Config;
use milspecd::health::kmsg::{parse_record, FaultMatcher};
use milspecd::health::status;

/// Most lines fed to the fault matcher from one input.
const MAX_LINES: usize = 4096;
/// Upper bound on a fault reason: two bounded lines (300 characters of up
/// to 4 bytes, and an ellipsis) and a separator.
const MAX_REASON: usize = 2 * (300 * 4 + 3) + 2;

/// `/proc/milspec/status` text.
pub fn status(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(s) = status::parse(text) else {
        return;
    };
    assert!(text.len() <= status::MAX_STATUS);
    let failed = s.state == status::ModuleState::Failed || s.selftest == status::Selftest::Fail;
    assert_eq!(s.is_failed(), failed);
}

/// One raw `/dev/kmsg` record, then the input split into lines as a file
/// or FIFO source is, each parsed and fed to the fault matcher.
pub fn kmsg(data: &[u8]) {
    if let Some(r) = parse_record(data) {
        assert!(r.level <= 7);
    }
    let mut matcher = FaultMatcher::new("dell_milspec");
    for line in data.split(|&b| b == b'\n').take(MAX_LINES) {
        if let Some(reason) = parse_record(line).and_then(|r| matcher.feed(&r)) {
            assert!(reason.len() <= MAX_REASON, "fault reason of {} bytes", reason.len());
        }
        if let Ok(text) = std::str::from_utf8(line) {
            if let Some(reason) = matcher.feed_line(text) {
                assert!(reason.len() <= MAX_REASON, "fault reason of {} bytes", reason.len());
            }
        }
    }
}

/// `milspecd.toml`: parse and validate; what is accepted must survive
/// `to_toml` (what `milspecd config` prints) and parse back the same.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    let Ok(cfg) = Config::parse(text, path) else {
        return;
    };
    match Config::parse(&cfg.to_toml(), path) {
        Ok(again) => assert_eq!(again, cfg, "a config changed across to_toml/parse"),
        Err(e) => panic!("a valid config does not parse back after to_toml: {e}"),
    }
}
