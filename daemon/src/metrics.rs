//! Prometheus metrics as a node_exporter textfile (`[metrics] textfile`).
//!
//! [`render`] is pure: a [`Snapshot`] in, the exposition text out. The
//! [`TextfileWriter`] writes it atomically (temporary file in the same
//! folder, fsync, rename, fsync folder) so the collector never reads half a
//! file. A metrics failure is logged and never stops the daemon.
//!
//! The file is rewritten on every change, every poll, every probation
//! tick and at least every `[metrics] heartbeat` (15 s) while idle, each time with
//! a new `milspecd_heartbeat_timestamp_seconds`: a heartbeat older than a
//! few periods means a dead or stuck daemon, whatever `milspecd_up` says
//! (`milspecd metrics-down`, the unit's `ExecStopPost=`, sets it to 0).

pub mod down;
pub mod process;

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::check::CheckReport;
use crate::worker::{DaemonState, Published};
pub use process::ProcessStats;

/// The label that sets the daemon's `process_*` series apart from those of
/// node_exporter itself, which shares their names on its `/metrics`.
const PROCESS_LABEL: &str = "{daemon=\"milspecd\"}";

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
    #[error("{}: cannot create the metrics folder: {source}; create it (mode 0755; the prometheus-node-exporter package makes /var/lib/prometheus/node-exporter) or set [metrics] textfile = \"\" to turn metrics off", path.display())]
    Folder { path: PathBuf, source: io::Error },
    #[error("{}: cannot write the metrics file: {source}; check the folder exists and is writable by milspecd (the unit's ReadWritePaths=), or set [metrics] textfile = \"\"", path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// Counts since the daemon started (the labelled failure and rollback
/// counts are in [`Published`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub swaps: u64,
    pub commits: u64,
    /// Faults naming the committed module seen after its probation.
    pub committed_faults: u64,
}

/// Where this host stands in the rollout of a version it waits for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rollout {
    /// This host's position in the rollout, in [0, 1).
    pub position: f64,
    /// The share of hosts the rollout admits now, in [0, 1].
    pub admitted: f64,
    /// When the next wave opens (Unix seconds), if one is scheduled.
    pub opens_unix: Option<i64>,
}

impl PartialEq for Rollout {
    fn eq(&self, o: &Self) -> bool {
        self.position.to_bits() == o.position.to_bits()
            && self.admitted.to_bits() == o.admitted.to_bits()
            && self.opens_unix == o.opens_unix
    }
}
impl Eq for Rollout {}

/// What the polls found, for the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PollFacts {
    /// The last poll's start, whatever its result (Unix seconds).
    pub attempt_unix: Option<i64>,
    /// The last poll that ended without an error.
    pub success_unix: Option<i64>,
    /// When the last index accepted expires.
    pub index_expires_unix: Option<i64>,
    /// The newer version the mirror offers this host (waiting for its wave,
    /// or being installed); `None` when up to date.
    pub available: Option<String>,
    /// This host's place in the rollout of `available`, while it waits.
    pub rollout: Option<Rollout>,
}

impl PollFacts {
    /// Takes in what a successful poll reported.
    pub fn saw(&mut self, r: &CheckReport) {
        (self.available, self.rollout) = match r {
            CheckReport::Waiting { version, position, fraction, next_wave, .. } => (
                Some(version.clone()),
                Some(Rollout {
                    position: *position,
                    admitted: *fraction,
                    opens_unix: next_wave.as_deref().and_then(parse_rfc3339),
                }),
            ),
            CheckReport::Installed { version, .. } => (Some(version.clone()), None),
            CheckReport::UpToDate { .. }
            | CheckReport::RevokedNoReplacement { .. }
            | CheckReport::BuildAdded { .. }
            | CheckReport::NoBuild { .. } => (None, None),
        };
    }
}

/// Everything one metrics file shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub daemon_version: String,
    pub published: Published,
    pub counters: Counters,
    /// `false` when the daemon is stopping.
    pub up: bool,
    /// When this snapshot was taken (Unix seconds).
    pub heartbeat_unix: f64,
    /// The daemon's process; `None`: left out.
    pub process: Option<ProcessStats>,
}

impl Snapshot {
    pub fn new(published: Published, counters: Counters, up: bool, heartbeat_unix: f64) -> Self {
        Snapshot {
            daemon_version: env!("CARGO_PKG_VERSION").into(),
            published,
            counters,
            up,
            heartbeat_unix,
            process: None,
        }
    }

    /// With this process's `process_*` metrics, read now.
    pub fn with_process(mut self) -> Self {
        self.process = ProcessStats::read();
        self
    }
}

/// Now, in Unix seconds.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// An RFC 3339 time as Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
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

/// One unlabelled sample.
fn one(v: impl ToString) -> [(String, String); 1] {
    [(String::new(), v.to_string())]
}

fn gauge(out: &mut String, name: &str, help: &str, v: impl ToString) {
    metric(out, name, "gauge", help, &one(v));
}

fn flag(b: bool) -> String {
    if b { "1" } else { "0" }.to_string()
}

fn kernel_series(kernels: &[String]) -> Vec<(String, String)> {
    kernels.iter().map(|k| (format!("{{kernel_release=\"{}\"}}", escape_label(k)), "1".into())).collect()
}

/// The metrics file's text.
pub fn render(s: &Snapshot) -> String {
    let p = &s.published;
    let mut out = String::with_capacity(6 * 1024);
    gauge(
        &mut out,
        "milspecd_up",
        "1 while milspecd runs, 0 once it stopped (judge liveness by the heartbeat's age).",
        flag(s.up),
    );
    gauge(
        &mut out,
        "milspecd_heartbeat_timestamp_seconds",
        "When milspecd last wrote this file (Unix time): on every poll, every probation tick and at least every [metrics] heartbeat (15 s) while it runs; older means dead or stuck.",
        format!("{:.3}", s.heartbeat_unix),
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
    gauge(&mut out, "milspecd_paused", "1 when automatic polling is paused by the operator.", flag(p.paused));
    gauge(
        &mut out,
        "milspecd_reboot_required",
        "1 when a faulty module could not be unloaded and a reboot is needed.",
        flag(p.reboot_required),
    );
    gauge(
        &mut out,
        "milspecd_kernel_build_missing",
        "1 when a version is committed but it has no build for the running kernel: nothing of it is loaded.",
        flag(p.kernel_build == "no-build"),
    );
    let missing = kernel_series(&p.kernels_without_build);
    if !missing.is_empty() {
        metric(
            &mut out,
            "milspecd_kernel_without_build",
            "gauge",
            "An installed kernel (or the running one) the committed version has no build for: its next boot starts without the module.",
            &missing,
        );
    }
    gauge(
        &mut out,
        "milspecd_committed_kernels",
        "How many kernel releases the committed slot holds builds for.",
        p.committed_kernels.len(),
    );
    let covered = kernel_series(&p.committed_kernels);
    if !covered.is_empty() {
        metric(
            &mut out,
            "milspecd_committed_kernel_info",
            "gauge",
            "A kernel release the committed slot holds a build for.",
            &covered,
        );
    }
    let poll = &p.poll;
    for (name, help, v) in [
        (
            "milspecd_last_poll_attempt_timestamp_seconds",
            "When the mirror was last polled, whatever the result (Unix time).",
            poll.attempt_unix,
        ),
        (
            "milspecd_last_poll_success_timestamp_seconds",
            "When a poll of the mirror last ended without an error (Unix time).",
            poll.success_unix,
        ),
        (
            "milspecd_index_expiry_timestamp_seconds",
            "When the last verified index expires (Unix time): past it, this host installs nothing new.",
            poll.index_expires_unix,
        ),
    ] {
        if let Some(t) = v {
            gauge(&mut out, name, help, t);
        }
    }
    if let Some(v) = &poll.available {
        metric(
            &mut out,
            "milspecd_available_info",
            "gauge",
            "The newer version the mirror offers this host (waiting for its wave, or being installed).",
            &[(format!("{{version=\"{}\"}}", escape_label(v)), "1".into())],
        );
    }
    if let Some(r) = &poll.rollout {
        gauge(
            &mut out,
            "milspecd_rollout_position_ratio",
            "This host's position in the rollout of the available version, 0 to 1: it takes it once the admitted share passes it.",
            r.position,
        );
        gauge(
            &mut out,
            "milspecd_rollout_admitted_ratio",
            "The share of hosts the rollout of the available version admits now, 0 to 1.",
            r.admitted,
        );
        if let Some(t) = r.opens_unix {
            gauge(
                &mut out,
                "milspecd_rollout_next_wave_timestamp_seconds",
                "When the next wave of the available version's rollout opens (Unix time).",
                t,
            );
        }
    }
    let c = &s.counters;
    for (name, help, v) in [
        ("milspecd_swaps_total", "Live module swaps since the daemon started.", c.swaps),
        ("milspecd_commits_total", "Modules committed after probation since the daemon started.", c.commits),
        (
            "milspecd_committed_faults_total",
            "Faults naming the committed module after its probation, since the daemon started.",
            c.committed_faults,
        ),
    ] {
        metric(&mut out, name, "counter", help, &one(v));
    }
    let failures: Vec<(String, String)> =
        p.failures_by.samples().map(|(r, n)| (format!("{{reason=\"{r}\"}}",), n.to_string())).collect();
    metric(
        &mut out,
        "milspecd_failures_total",
        "counter",
        "Refused installs and failed actions since the daemon started, by reason class.",
        &failures,
    );
    let rollbacks: Vec<(String, String)> =
        p.rollbacks_by.samples().map(|(r, n)| (format!("{{reason=\"{r}\"}}"), n.to_string())).collect();
    metric(
        &mut out,
        "milspecd_rollbacks_total",
        "counter",
        "Rollbacks since the daemon started, by reason class.",
        &rollbacks,
    );
    if let Some(pr) = &s.process {
        render_process(&mut out, pr);
    }
    out
}

/// The `process_*` series, with the help texts of the Prometheus client
/// libraries (node_exporter refuses a series whose help differs from its
/// own series of that name).
fn render_process(out: &mut String, p: &ProcessStats) {
    let l = |v: String| [(PROCESS_LABEL.to_string(), v)];
    metric(
        out,
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        &l(format!("{:.2}", p.cpu_seconds)),
    );
    metric(out, "process_open_fds", "gauge", "Number of open file descriptors.", &l(p.open_fds.to_string()));
    if let Some(m) = p.max_fds {
        metric(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.", &l(m.to_string()));
    }
    metric(
        out,
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        &l(p.virtual_memory_bytes.to_string()),
    );
    metric(
        out,
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        &l(p.resident_memory_bytes.to_string()),
    );
    metric(
        out,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        &l(format!("{:.2}", p.start_time_seconds)),
    );
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
    use crate::reason_class::{FailureClass, RollbackClass};

    fn snap() -> Snapshot {
        let mut p = Published {
            state: DaemonState::Trial,
            committed_version: "1.1.0".into(),
            trial_version: "1.2.0".into(),
            active_slot: "b".into(),
            last_check: "2025-01-02T03:04:05Z".into(),
            failures: 2,
            committed_kernels: vec!["6.12.113+deb12-cloud-amd64".into()],
            ..Published::default()
        };
        p.poll.attempt_unix = Some(1_735_787_045);
        p.poll.success_unix = Some(1_735_787_000);
        p.poll.index_expires_unix = Some(1_736_000_000);
        p.failures_by.add(FailureClass::Mirror);
        p.failures_by.add(FailureClass::Verify);
        p.rollbacks_by.add(RollbackClass::HealthWarn);
        Snapshot::new(p, Counters { swaps: 3, commits: 1, committed_faults: 2 }, true, 1_735_787_050.25)
    }

    fn sample(text: &str, series: &str) -> Option<String> {
        text.lines().find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')).map(str::to_string))
    }

    /// Every series has its HELP and TYPE, once, before its samples.
    fn assert_well_formed(t: &str) {
        let mut declared: Vec<&str> = Vec::new();
        for line in t.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap_or_default();
                assert!(!declared.contains(&name), "{name} declared twice");
                declared.push(name);
            } else if !line.starts_with("# HELP ") {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                assert_eq!(declared.last(), Some(&name), "{line}: not under its own TYPE");
                assert!(t.contains(&format!("# HELP {name} ")), "{name}");
            }
        }
        assert!(t.ends_with('\n'));
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
        assert_eq!(sample(&t, "milspecd_heartbeat_timestamp_seconds"), Some("1735787050.250".into()));
        assert_eq!(sample(&t, "milspecd_last_poll_attempt_timestamp_seconds"), Some("1735787045".into()));
        assert_eq!(sample(&t, "milspecd_last_poll_success_timestamp_seconds"), Some("1735787000".into()));
        assert_eq!(sample(&t, "milspecd_index_expiry_timestamp_seconds"), Some("1736000000".into()));
        assert!(!t.contains("milspecd_last_check_timestamp_seconds"), "replaced by attempt and success");
        assert_eq!(sample(&t, "milspecd_swaps_total"), Some("3".into()));
        assert_eq!(sample(&t, "milspecd_commits_total"), Some("1".into()));
        assert_eq!(sample(&t, "milspecd_committed_faults_total"), Some("2".into()));
        assert_eq!(sample(&t, "milspecd_failures_total{reason=\"mirror\"}"), Some("1".into()));
        assert_eq!(sample(&t, "milspecd_failures_total{reason=\"verify\"}"), Some("1".into()));
        assert_eq!(sample(&t, "milspecd_failures_total{reason=\"load\"}"), Some("0".into()));
        assert_eq!(t.lines().filter(|l| l.starts_with("milspecd_failures_total{")).count(), FailureClass::ALL.len());
        assert_eq!(sample(&t, "milspecd_rollbacks_total{reason=\"health-warn\"}"), Some("1".into()));
        assert_eq!(sample(&t, "milspecd_rollbacks_total{reason=\"operator\"}"), Some("0".into()));
        assert_eq!(t.lines().filter(|l| l.starts_with("milspecd_rollbacks_total{")).count(), RollbackClass::ALL.len());
        assert_eq!(sample(&t, "milspecd_paused"), Some("0".into()));
        assert_eq!(sample(&t, "milspecd_reboot_required"), Some("0".into()));
        assert_eq!(sample(&t, "milspecd_up"), Some("1".into()));
        assert_eq!(sample(&t, "milspecd_kernel_build_missing"), Some("0".into()));
        assert_eq!(sample(&t, "milspecd_committed_kernels"), Some("1".into()));
        assert_eq!(
            sample(&t, "milspecd_committed_kernel_info{kernel_release=\"6.12.113+deb12-cloud-amd64\"}"),
            Some("1".into())
        );
        assert_eq!(t.lines().filter(|l| l.starts_with("milspecd_kernel_without_build")).count(), 0);
        assert!(!t.contains("milspecd_available_info") && !t.contains("milspecd_rollout_"), "up to date");
        assert!(!t.contains("process_"), "left out unless read");
        let mut s = snap();
        s.published.kernel_build = "no-build".into();
        s.published.kernels_without_build = vec!["6.12.115+deb12-cloud-amd64".into()];
        let t2 = render(&s);
        assert_eq!(sample(&t2, "milspecd_kernel_build_missing"), Some("1".into()));
        assert_eq!(
            sample(&t2, "milspecd_kernel_without_build{kernel_release=\"6.12.115+deb12-cloud-amd64\"}"),
            Some("1".into())
        );
        assert_well_formed(&t);
        assert_well_formed(&t2);
    }

    #[test]
    fn a_waiting_host_shows_the_version_and_its_wave() {
        let mut s = snap();
        s.published.poll.saw(&CheckReport::Waiting {
            index_version: 4,
            version: "1.3.0".into(),
            position: 0.625,
            fraction: 0.25,
            next_wave: Some("2025-01-03T00:00:00Z".into()),
        });
        let t = render(&s);
        assert_eq!(sample(&t, "milspecd_available_info{version=\"1.3.0\"}"), Some("1".into()));
        assert_eq!(sample(&t, "milspecd_rollout_position_ratio"), Some("0.625".into()));
        assert_eq!(sample(&t, "milspecd_rollout_admitted_ratio"), Some("0.25".into()));
        assert_eq!(sample(&t, "milspecd_rollout_next_wave_timestamp_seconds"), Some("1735862400".into()));
        assert_well_formed(&t);
        s.published.poll.saw(&CheckReport::UpToDate { index_version: 5, not_modified: false });
        let t = render(&s);
        assert!(!t.contains("milspecd_available_info") && !t.contains("milspecd_rollout_"), "{t}");
    }

    #[test]
    fn process_series_carry_the_client_library_names_and_a_label() {
        let s = snap().with_process();
        assert!(s.process.is_some(), "/proc/self is readable");
        let t = render(&s);
        for name in [
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_max_fds",
            "process_virtual_memory_bytes",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
        ] {
            assert!(sample(&t, &format!("{name}{{daemon=\"milspecd\"}}")).is_some(), "{name}: {t}");
        }
        assert!(t.contains("# HELP process_resident_memory_bytes Resident memory size in bytes.\n"));
        assert_well_formed(&t);
    }

    #[test]
    fn no_poll_yet_means_no_poll_timestamps() {
        let mut s = snap();
        s.published.poll = PollFacts::default();
        let t = render(&s);
        assert!(!t.contains("milspecd_last_poll_"), "{t}");
        assert!(!t.contains("milspecd_index_expiry"), "{t}");
        assert_well_formed(&t);
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("x\ny"), "x\\ny");
        let mut s = snap();
        s.published.committed_version = "1.0.0\"} 9\nevil 1".into();
        s.published.poll.available = Some("2\n3".into());
        let t = render(&s);
        assert!(t.contains(r#"committed_version="1.0.0\"} 9\nevil 1""#), "{t}");
        assert!(t.contains(r#"milspecd_available_info{version="2\n3"} 1"#), "{t}");
        assert!(!t.lines().any(|l| l.starts_with("evil") || l.starts_with("3\"")), "{t}");
    }

    #[test]
    fn writer_creates_folder_and_replaces_atomically() {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = d.path().join("var/lib/prometheus/node-exporter/milspecd.prom");
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
