//! The first poll after boot waits for the network: systemd's
//! `network-online.target`, asked over the system bus, for a bounded time.
//! Only the poll waits; recovery and the module load at start never do
//! (the unit `Wants=` the target but is not ordered after it).

use std::path::Path;
use std::time::{Duration, Instant};

/// How long the first poll waits for the network at most; then it polls
/// anyway (a failed poll is retried at the next interval).
pub const FIRST_POLL_WAIT: Duration = Duration::from_secs(90);
const RECHECK: Duration = Duration::from_secs(1);
const TARGET_PATH: &str = "/org/freedesktop/systemd1/unit/network_2donline_2etarget";

/// What the wait found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkWait {
    /// `network-online.target` is active (after waiting this long).
    Online(Duration),
    /// Not booted with systemd, or no bus: nothing to wait for.
    NotSystemd,
    /// The target did not come up in time (its last state).
    TimedOut(String),
    /// systemd could not be asked (its error); the poll goes ahead.
    Unknown(String),
}

/// Whether a unit in `active_state` lets the first poll go: active, or a
/// state it will not leave by itself (failed, inactive with no job).
pub fn decided(active_state: &str) -> Option<bool> {
    match active_state {
        "active" => Some(true),
        "failed" => Some(false),
        _ => None,
    }
}

/// Waits until `network-online.target` is active, at most `limit`.
pub fn wait_for_network(conn: Option<&zbus::blocking::Connection>, limit: Duration) -> NetworkWait {
    // sd_booted(3): systemd is PID 1 only if this folder exists.
    let Some(conn) = conn.filter(|_| Path::new("/run/systemd/system").is_dir()) else {
        return NetworkWait::NotSystemd;
    };
    // Uncached: systemd sends PropertiesChanged for units only to its
    // subscribers, so a cached ActiveState could stay "inactive" for good.
    let proxy = match zbus::blocking::proxy::Builder::<zbus::blocking::Proxy<'_>>::new(conn)
        .destination("org.freedesktop.systemd1")
        .and_then(|b| b.path(TARGET_PATH))
        .and_then(|b| b.interface("org.freedesktop.systemd1.Unit"))
        .map(|b| b.cache_properties(zbus::proxy::CacheProperties::No))
        .and_then(|b| b.build())
    {
        Ok(p) => p,
        Err(e) => return NetworkWait::Unknown(e.to_string()),
    };
    let start = Instant::now();
    loop {
        let state = match proxy.get_property::<String>("ActiveState") {
            Ok(s) => s,
            Err(e) => return NetworkWait::Unknown(e.to_string()),
        };
        match decided(&state) {
            Some(true) => return NetworkWait::Online(start.elapsed()),
            Some(false) => return NetworkWait::TimedOut(state),
            None if start.elapsed() >= limit => return NetworkWait::TimedOut(state),
            None => std::thread::sleep(RECHECK),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_active_or_failed_target_ends_the_wait() {
        assert_eq!(decided("active"), Some(true));
        assert_eq!(decided("failed"), Some(false));
        for s in ["inactive", "activating", "deactivating", "reloading", ""] {
            assert_eq!(decided(s), None, "{s}");
        }
    }

    #[test]
    fn without_a_bus_nothing_waits() {
        assert_eq!(wait_for_network(None, Duration::from_secs(60)), NetworkWait::NotSystemd);
    }
}
