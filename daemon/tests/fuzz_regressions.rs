//! Replays the fuzz seeds (`fuzz/seeds/<target>/`) and every input a fuzzer
//! once failed on (`fuzz/regressions/<target>/`) for the daemon's own
//! parsers, through the very entry points the `fuzz/` targets call.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../fuzz/src/daemon_harness.rs"]
mod daemon_harness;
#[path = "../../fuzz/src/replay.rs"]
mod replay;

use replay::{inputs, replay};

#[test]
fn status() {
    assert!(replay("status", daemon_harness::status) >= 3);
}

#[test]
fn kmsg() {
    assert!(replay("kmsg", daemon_harness::kmsg) >= 3);
}

#[test]
fn dbus_error() {
    assert!(replay("dbus_error", daemon_harness::dbus_error) >= 3);
}

#[test]
fn dbus_history() {
    assert!(replay("dbus_history", daemon_harness::dbus_history) >= 2);
}

#[test]
fn history_chain() {
    assert!(replay("history_chain", daemon_harness::history_chain) >= 2);
}

#[test]
fn config() {
    assert!(replay("config", daemon_harness::config) >= 2);
}

/// The config seeds are configs the daemon accepts, so the fuzzer starts
/// past validation.
#[test]
fn config_seeds_are_valid() {
    for (path, bytes) in inputs("seeds", "config") {
        milspecd::config::Config::parse(std::str::from_utf8(&bytes).unwrap(), &path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}
