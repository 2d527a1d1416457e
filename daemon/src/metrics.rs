//! Prometheus metrics as a node_exporter textfile (`[metrics] textfile`).
//!
//! [`render`] is pure: a [`Snapshot`] in, the exposition text out. The
//! [`TextfileWriter`] writes it atomically (temporary file in the same
//! folder, fsync, rename, fsync folder) so the collector never reads half a
//! file. A metrics failure is logged and never stops the daemon.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::worker::{DaemonState, Published};

/// Every value of `milspecd_state{state=...}`, in order.
pub const STATES: [DaemonState; 8] = [
    DaemonState::Idle,
    DaemonState::Checking,
    DaemonState::Downloading,
    DaemonState::Staged,
    DaemonState::Swapping,
    DaemonState::Trial,
    DaemonState::RollingBack,
    DaemonState::Error,
];

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("{}: cannot create the metrics folder: {source}; create it (mode 0755) or set [metrics] textfile = \"\" to turn metrics off", path.display())]
    Folder { path: PathBuf, source: io::Error },
    #[error("{}: cannot write the metrics file: {source}; check the folder is writable by milspecd (RuntimeDirectory=milspecd), or set [metrics] textfile = \"\"", path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// Counts since the daemon started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub swaps: u64,
    pub commits: u64,
    pub rollbacks: u64,
    /// Faults naming the committed module seen after its probation.
    pub committed_faults: u64,
}

/// Everything one metrics file shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub daemon_version: String,
    pub published: Published,
    pub counters: Counters,
    /// `last_check` as Unix seconds, if a check ran.
    pub last_check_unix: Option<i64>,
    /// `false` when the daemon is stopping.
    pub up: bool,
}

impl Snapshot {
    pub fn new(published: Published, counters: Counters, up: bool) -> Self {
        let last_check_unix = parse_rfc3339(&published.last_check);
        Snapshot { daemon_version: env!("CARGO_PKG_VERSION").into(), published, counters, last_check_unix, up }
    }
}

fn parse_rfc3339(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok().map(|t| t.unix_timestamp())
}

/// A label value escaped per the text exposition format: `\` `"` and
/// newline become `\\` `\"` `\n`.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, String)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

fn flag(b: bool) -> String {
    if b { "1" } else { "0" }.to_string()
}

/// The metrics file's text.
pub fn render(s: &Snapshot) -> String {
    let p = &s.published;
    let mut out = String::new();
    metric(
        &mut out,
        "milspecd_up",
        "gauge",
        "1 while milspecd runs, 0 once it stopped.",
        &[(String::new(), flag(s.up))],
    );
    let info = format!(
        "{{daemon_version=\"{}\",committed_version=\"{}\",active_slot=\"{}\"}}",
        escape_label(&s.daemon_version),
        escape_label(&p.committed_version),
        escape_label(&p.active_slot)
    );
    metric(
        &mut out,
        "milspecd_info",
        "gauge",
        "The daemon's version, the committed module version and its slot (empty: none).",
        &[(info, "1".into())],
    );
    let states: Vec<(String, String)> =
        STATES.iter().map(|st| (format!("{{state=\"{}\"}}", st.as_str()), flag(*st == p.state))).collect();
    metric(&mut out, "milspecd_state", "gauge", "What the daemon is doing: 1 for the current state.", &states);
    metric(
        &mut out,
        "milspecd_paused",
        "gauge",
        "1 when automatic polling is paused by the operator.",
        &[(String::new(), flag(p.paused))],
    );
    metric(
        &mut out,
        "milspecd_reboot_required",
        "gauge",
        "1 when a faulty module could not be unloaded and a reboot is needed.",
        &[(String::new(), flag(p.reboot_required))],
    );
    metric(
        &mut out,
        "milspecd_kernel_build_missing",
        "gauge",
        "1 when a version is committed but it has no build for the running kernel: nothing of it is loaded.",
        &[(String::new(), flag(p.kernel_build == "no-build"))],
    );
    let missing: Vec<(String, String)> = p
        .kernels_without_build
        .iter()
        .map(|k| (format!("{{kernel_release=\"{}\"}}", escape_label(k)), "1".into()))
        .collect();
    if !missing.is_empty() {
        metric(
            &mut out,
            "milspecd_kernel_without_build",
            "gauge",
            "An installed kernel (or the running one) the committed version has no build for: its next boot starts without the module.",
            &missing,
        );
    }
    metric(
        &mut out,
        "milspecd_committed_kernels",
        "gauge",
        "How many kernel releases the committed slot holds builds for.",
        &[(String::new(), p.committed_kernels.len().to_string())],
    );
    if let Some(t) = s.last_check_unix {
        metric(
            &mut out,
            "milspecd_last_check_timestamp_seconds",
            "gauge",
            "When the mirror was last checked (Unix time).",
            &[(String::new(), t.to_string())],
        );
    }
    let c = &s.counters;
    for (name, help, v) in [
        ("milspecd_swaps_total", "Live module swaps since the daemon started.", c.swaps),
        ("milspecd_commits_total", "Modules committed after probation since the daemon started.", c.commits),
        ("milspecd_rollbacks_total", "Rollbacks since the daemon started.", c.rollbacks),
        (
            "milspecd_committed_faults_total",
            "Faults naming the committed module after its probation, since the daemon started.",
            c.committed_faults,
        ),
        ("milspecd_failures_total", "Refused installs and failed actions since the daemon started.", p.failures),
    ] {
        metric(&mut out, name, "counter", help, &[(String::new(), v.to_string())]);
    }
    out
}

/// Writes the metrics file; `None` path: metrics are off.
#[derive(Debug)]
pub struct TextfileWriter {
    path: Option<PathBuf>,
    /// The last error reported, so a failing write is logged once, not on
    /// every notice.
    last_error: Option<String>,
}

impl TextfileWriter {
    /// Creates the folder (0755) if missing; on failure logs a warning and
    /// keeps trying on each write.
    pub fn new(path: Option<&Path>) -> Self {
        let mut w = TextfileWriter { path: path.map(Path::to_path_buf), last_error: None };
        if let Some(dir) = w.path.as_deref().and_then(Path::parent) {
            if let Err(e) = create_folder(dir) {
                w.report(e);
            }
        }
        w
    }

    /// Writes `snapshot`; errors are logged (once per distinct error).
    pub fn write(&mut self, snapshot: &Snapshot) {
        let Some(path) = self.path.clone() else {
            return;
        };
        match milspec_format::atomic::write_atomic(&path, render(snapshot).as_bytes(), 0o644) {
            Ok(()) => self.last_error = None,
            Err(source) => self.report(MetricsError::Write { path, source }),
        }
    }

    fn report(&mut self, e: MetricsError) {
        let text = e.to_string();
        if self.last_error.as_deref() != Some(text.as_str()) {
            warn!("metrics: {text}");
            self.last_error = Some(text);
        }
    }
}

fn create_folder(dir: &Path) -> Result<(), MetricsError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|source| MetricsError::Folder { path: dir.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Snapshot {
        let p = Published {
            state: DaemonState::Trial,
            committed_version: "1.1.0".into(),
            trial_version: "1.2.0".into(),
            active_slot: "b".into(),
            last_check: "2025-01-02T03:04:05Z".into(),
            failures: 2,
            ..Published::default()
        };
        Snapshot::new(p, Counters { swaps: 3, commits: 1, rollbacks: 1, committed_faults: 2 }, true)
    }

    fn sample(text: &str, series: &str) -> Option<String> {
        text.lines().find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')).map(str::to_string))
    }

    #[test]
    fn renders_every_metric_with_help_and_type() {
        let t = render(&snap());
        let v = env!("CARGO_PKG_VERSION");
        assert_eq!(
            sample(
                &t,
                &format!("milspecd_info{{daemon_version=\"{v}\",committed_version=\"1.1.0\",active_slot=\"b\"}}")
            ),
            Some("1".into())
        );
        assert_eq!(sample(&t, "milspecd_state{state=\"trial\"}"), Some("1".into()));
        let hot: Vec<_> = t.lines().filter(|l| l.starts_with("milspecd_state{") && l.ends_with(" 1")).collect();
        assert_eq!(hot.len(), 1, "one-hot: {hot:?}");
        assert_eq!(t.lines().filter(|l| l.starts_with("milspecd_state{")).count(), STATES.len());
        assert_eq!(sample(&t, "milspecd_last_check_timestamp_seconds"), Some("1735787045".into()));
        assert_eq!(sample(&t, "milspecd_swaps_total"), Some("3".into()));
        assert_eq!(sample(&t, "milspecd_commits_total"), Some("1".into()));
        assert_eq!(sample(&t, "milspecd_rollbacks_total"), Some("1".into()));
        assert_eq!(sample(&t, "milspecd_committed_faults_total"), Some("2".into()));
        assert_eq!(sample(&t, "milspecd_failures_total"), Some("2".into()));
        assert_eq!(sample(&t, "milspecd_paused"), Some("0".into()));
        assert_eq!(sample(&t, "milspecd_reboot_required"), Some("0".into()));
        assert_eq!(sample(&t, "milspecd_up"), Some("1".into()));
        assert_eq!(sample(&t, "milspecd_kernel_build_missing"), Some("0".into()));
        assert_eq!(sample(&t, "milspecd_committed_kernels"), Some("0".into()));
        assert_eq!(t.lines().filter(|l| l.starts_with("milspecd_kernel_without_build")).count(), 0);
        let mut s = snap();
        s.published.kernel_build = "no-build".into();
        s.published.kernels_without_build = vec!["6.12.115+deb12-cloud-amd64".into()];
        let t2 = render(&s);
        assert_eq!(sample(&t2, "milspecd_kernel_build_missing"), Some("1".into()));
        assert_eq!(
            sample(&t2, "milspecd_kernel_without_build{kernel_release=\"6.12.115+deb12-cloud-amd64\"}"),
            Some("1".into())
        );
        // Every series has its HELP and TYPE, and every line is one of the three.
        for line in t.lines() {
            if let Some(name) = line.split(['{', ' ']).next().filter(|_| !line.starts_with('#')) {
                assert!(t.contains(&format!("# HELP {name} ")), "{name}");
                assert!(t.contains(&format!("# TYPE {name} ")), "{name}");
            }
        }
        assert!(t.ends_with('\n'));
    }

    #[test]
    fn no_check_yet_means_no_timestamp() {
        let mut s = snap();
        s.published.last_check.clear();
        s.last_check_unix = None;
        assert!(!render(&s).contains("milspecd_last_check_timestamp_seconds"));
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        let mut s = snap();
        s.published.committed_version = "1.0.0\"} 9\nevil 1".into();
        let t = render(&s);
        assert!(t.contains(r#"committed_version="1.0.0\"} 9\nevil 1""#), "{t}");
        assert!(!t.lines().any(|l| l.starts_with("evil")), "{t}");
    }

    #[test]
    fn writer_creates_folder_and_replaces_atomically() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = d.path().join("run/milspecd/milspecd.prom");
        let mut w = TextfileWriter::new(Some(&path));
        w.write(&snap());
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(sample(&text, "milspecd_swaps_total"), Some("3".into()));
        let mut s = snap();
        s.up = false;
        w.write(&s);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(sample(&text, "milspecd_up"), Some("0".into()));
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap_or(d.path()))
            .map(|r| r.filter_map(Result::ok).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("milspecd.prom")], "no temporary files left");
    }

    #[test]
    fn writer_failure_does_not_panic() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let blocker = d.path().join("file");
        std::fs::write(&blocker, "").unwrap_or_default();
        let mut w = TextfileWriter::new(Some(&blocker.join("sub/m.prom")));
        w.write(&snap());
        assert!(w.last_error.is_some());
        TextfileWriter::new(None).write(&snap());
    }
}
