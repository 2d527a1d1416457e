//! `milspecd metrics-down`: the unit's `ExecStopPost=` marks the metrics
//! file `milspecd_up 0` after the daemon stopped, however it stopped (a
//! crash, SIGKILL, the watchdog), keeping every other value as it was.

use std::io;
use std::path::Path;

use super::MetricsError;

/// The largest metrics file read back (the daemon writes a few KiB).
const MAX_FILE: u64 = 1 << 20;

const UP_HEADER: &str =
    "# HELP milspecd_up 1 while milspecd runs, 0 once it stopped.\n# TYPE milspecd_up gauge\nmilspecd_up 0\n";

/// `text` with its `milspecd_up` sample set to 0; with none, the series
/// (HELP, TYPE, sample) put first.
pub fn mark_down(text: &str) -> String {
    let mut found = false;
    let mut out = String::with_capacity(text.len() + UP_HEADER.len());
    for line in text.lines() {
        if line.starts_with("milspecd_up ") || line.starts_with("milspecd_up{") {
            found = true;
            let series = line.rsplit_once(' ').map_or(line, |(s, _)| s);
            out.push_str(series);
            out.push_str(" 0\n");
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if found {
        out
    } else {
        format!("{UP_HEADER}{out}")
    }
}

/// Rewrites `path` atomically with `milspecd_up 0`; a missing file is
/// written with that series alone.
pub fn write_down(path: &Path) -> Result<(), MetricsError> {
    let write = |source| MetricsError::Write { path: path.to_path_buf(), source };
    let text = match milspec_format::read_regular(path, milspec_format::OpenPolicy::no_follow(MAX_FILE)) {
        Ok(bytes) => String::from_utf8(bytes)
            .map_err(|_| write(io::Error::new(io::ErrorKind::InvalidData, "the metrics file is not text")))?,
        Err(e) if e.is_not_found() => String::new(),
        Err(e) => return Err(write(io::Error::other(e.to_string()))),
    };
    milspec_format::atomic::write_atomic(path, mark_down(&text).as_bytes(), 0o644).map_err(write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_up_to_zero_and_keeps_the_rest() {
        let t = "# HELP milspecd_up x\n# TYPE milspecd_up gauge\nmilspecd_up 1\nmilspecd_swaps_total 3\n";
        assert_eq!(
            mark_down(t),
            "# HELP milspecd_up x\n# TYPE milspecd_up gauge\nmilspecd_up 0\nmilspecd_swaps_total 3\n"
        );
        assert_eq!(mark_down(&mark_down(t)), mark_down(t), "idempotent");
    }

    #[test]
    fn adds_the_series_when_missing() {
        assert_eq!(mark_down(""), UP_HEADER);
        assert!(mark_down("milspecd_swaps_total 3\n").starts_with(UP_HEADER));
        // A series merely starting with the name is not it.
        assert!(mark_down("milspecd_uptime 3\n").contains("milspecd_uptime 3\n"));
        assert!(mark_down("milspecd_uptime 3\n").starts_with(UP_HEADER));
    }

    #[test]
    fn rewrites_the_file_atomically() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = d.path().join("m.prom");
        write_down(&p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(std::fs::read_to_string(&p).unwrap_or_default(), UP_HEADER);
        std::fs::write(&p, "milspecd_up 1\nmilspecd_heartbeat_timestamp_seconds 5\n").unwrap_or_default();
        write_down(&p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            std::fs::read_to_string(&p).unwrap_or_default(),
            "milspecd_up 0\nmilspecd_heartbeat_timestamp_seconds 5\n"
        );
    }
}
