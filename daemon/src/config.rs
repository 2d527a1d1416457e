//! The daemon's configuration file (TOML, default `/etc/milspecd/milspecd.toml`).
//!
//! Every key has a default; an unknown key is an error that names it, so a
//! typo never silently falls back to a default.

use milspec_format::{read_regular, OpenError, OpenPolicy};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub const DEFAULT_PATH: &str = "/etc/milspecd/milspecd.toml";
/// Drop-in fragments: `conf.d/*.toml` beside the main file, in name order.
pub const DROP_IN_DIR: &str = "conf.d";
/// Most drop-in fragments read.
const MAX_DROP_INS: usize = 64;
/// Largest config file read.
const MAX_CONFIG: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read config: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot read config: {0}")]
    NotRegular(OpenError),
    #[error("{}: config is larger than {MAX_CONFIG} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("{}: more than {MAX_DROP_INS} drop-in fragments", path.display())]
    TooManyDropIns { path: PathBuf },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub trust: TrustConfig,
    pub paths: PathsConfig,
    pub health: HealthConfig,
    pub kernel: KernelConfig,
    pub metrics: MetricsConfig,
    /// `[history]`: how long and how much rotated history is kept.
    pub history: crate::history::retention::HistoryConfig,
    /// The mirror to pull from; absent means no polling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceConfig>,
}

/// `[source]`: where and how often to pull updates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// Mirror root: `https://`, `http://` or `file://`.
    pub url: String,
    /// Time between polls; each wait gets up to 10 % random jitter added.
    #[serde(with = "human_duration")]
    pub poll_interval: Duration,
    /// Largest package downloaded, in bytes.
    pub max_package_size: u64,
    /// Connect timeout for one request.
    #[serde(with = "human_duration")]
    pub connect_timeout: Duration,
    /// Total time one request may take, body included.
    #[serde(with = "human_duration")]
    pub timeout: Duration,
    /// Attempts per fetch, the first included (bounded retries with backoff).
    pub attempts: u32,
    /// This host's stable id, for its place in rollout waves.
    pub machine_id_file: PathBuf,
    /// Extra CA certificates (PEM) trusted for an `https://` mirror, on top
    /// of the system store. An absolute path; not for `file://` mirrors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            url: String::new(),
            poll_interval: Duration::from_secs(15 * 60),
            max_package_size: 256 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(300),
            attempts: 4,
            machine_id_file: "/etc/machine-id".into(),
            ca_file: None,
        }
    }
}

/// Where the metrics go by default: the folder Debian's
/// prometheus-node-exporter reads with its textfile collector.
pub const DEFAULT_TEXTFILE: &str = "/var/lib/prometheus/node-exporter/milspecd.prom";

/// `[metrics]`: a Prometheus textfile (node_exporter's textfile collector).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where `milspecd run` writes its metrics, atomically, on start, on
    /// every change and at least every 15 s (the heartbeat); an empty
    /// string writes none. Must end in `.prom`.
    pub textfile: PathBuf,
    /// The longest the file goes unwritten while the daemon runs and its
    /// engine thread is responsive (1s to 5m): its heartbeat period.
    #[serde(with = "human_duration")]
    pub heartbeat: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { textfile: DEFAULT_TEXTFILE.into(), heartbeat: Duration::from_secs(15) }
    }
}

impl MetricsConfig {
    /// The file to write, or `None` when metrics are off.
    pub fn path(&self) -> Option<&Path> {
        (!self.textfile.as_os_str().is_empty()).then_some(self.textfile.as_path())
    }

    fn validate(&self) -> Result<(), String> {
        if !(Duration::from_secs(1)..=Duration::from_secs(300)).contains(&self.heartbeat) {
            return Err("[metrics] heartbeat must be between 1s and 5m".into());
        }
        let Some(p) = self.path() else {
            return Ok(());
        };
        if !p.is_absolute() || p.extension().is_none_or(|e| e != "prom") || p.file_name().is_none() {
            return Err(format!(
                "[metrics] textfile `{}` must be an absolute path ending in .prom (or \"\" for no metrics)",
                p.display()
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrustConfig {
    /// Folder of trusted `*.pub` keys.
    pub keys_dir: PathBuf,
    /// How many distinct trusted keys must sign a package.
    pub threshold: usize,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig { keys_dir: "/etc/milspecd/keys".into(), threshold: 1 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathsConfig {
    pub state_dir: PathBuf,
}

impl Default for PathsConfig {
    fn default() -> Self {
        PathsConfig { state_dir: "/var/lib/milspecd".into() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// How long a new module must stay healthy before it is committed.
    #[serde(with = "human_duration")]
    pub probation: Duration,
    /// Custom checks: executables in `required.d/` and `wanted.d/` below it.
    pub checks_dir: PathBuf,
    /// How long one custom check may run.
    #[serde(with = "human_duration")]
    pub check_timeout: Duration,
    /// How long to wait for the old module to unload on rollback.
    #[serde(with = "human_duration")]
    pub unload_timeout: Duration,
    /// Ask for a reboot when a faulty module cannot be unloaded.
    pub reboot_on_stuck_module: bool,
    /// Trials that may end without a verdict (the host rebooted or lost
    /// power during them, with no evidence against the module) before the
    /// version is blocklisted: each is tried again meanwhile.
    pub inconclusive_retries: u32,
    /// What a rise of `oops_count`, `warn_count` or a fault taint bit does
    /// when no kernel log record of the window names the module:
    /// `extend` (default), `ignore` or `rollback`.
    pub unattributed: crate::health::Unattributed,
    /// How often the committed module is looked at after its probation
    /// (kernel log reports naming it, its status); `0s`: not watched.
    #[serde(with = "human_duration")]
    pub after_commit_interval: Duration,
    /// A fault of the committed module this soon after its commit rolls
    /// back to the previous version; `0s` (default): recorded only.
    #[serde(with = "human_duration")]
    pub after_commit_rollback: Duration,
}

impl HealthConfig {
    pub fn after_commit(&self) -> crate::health::after_commit::AfterCommitPolicy {
        crate::health::after_commit::AfterCommitPolicy {
            interval: self.after_commit_interval,
            rollback_within: self.after_commit_rollback,
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            probation: Duration::from_secs(30),
            checks_dir: "/etc/milspecd/health.d".into(),
            check_timeout: Duration::from_secs(10),
            unload_timeout: Duration::from_secs(5),
            reboot_on_stuck_module: false,
            inconclusive_retries: 1,
            unattributed: crate::health::Unattributed::Extend,
            after_commit_interval: Duration::from_secs(60),
            after_commit_rollback: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KernelConfig {
    pub proc: PathBuf,
    pub sys: PathBuf,
    pub kmsg: PathBuf,
    /// The module this daemon manages.
    pub module: String,
    /// Runtime parameters read from the old module and re-applied to the new one.
    pub carry_params: Vec<String>,
    /// Replace a loaded module that matches no slot (drift). Off: report it only.
    pub adopt_unmanaged: bool,
    /// Where installed kernels keep their modules, one folder per release
    /// (`/lib/modules`): the kernels a build is wanted for.
    pub modules_dir: PathBuf,
}

impl Default for KernelConfig {
    fn default() -> Self {
        KernelConfig {
            proc: "/proc".into(),
            sys: "/sys".into(),
            kmsg: "/dev/kmsg".into(),
            module: "dell_milspec".into(),
            carry_params: vec!["mode5_level".into()],
            adopt_unmanaged: false,
            modules_dir: "/lib/modules".into(),
        }
    }
}

mod human_duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map_err(|e| serde::de::Error::custom(format!("`{s}` is not a duration like \"30s\" or \"5m\": {e}")))
    }
}

impl Config {
    /// Parses config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        cfg.validate().map_err(|message| ConfigError::Invalid { path: path.to_path_buf(), message })?;
        Ok(cfg)
    }

    /// Loads `path`, then the drop-in fragments `conf.d/*.toml` beside it
    /// in name order; a later file's keys win over earlier ones, table by
    /// table. With `explicit` false a missing main file means defaults (a
    /// host with no config file runs with built-in settings, plus drop-ins).
    /// Each file is checked on its own first, so an unknown key names the
    /// file it is in.
    pub fn load(path: &Path, explicit: bool) -> Result<Self, ConfigError> {
        let mut files = Vec::new();
        match read_capped(path) {
            Ok(text) => files.push((path.to_path_buf(), text)),
            Err(ConfigError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound && !explicit => {}
            Err(e) => return Err(e),
        }
        for frag in drop_ins(path)? {
            let text = read_capped(&frag)?;
            files.push((frag, text));
        }
        let Some((first_path, _)) = files.first() else {
            return Ok(Config::default());
        };
        let first_path = first_path.clone();
        if files.len() == 1 {
            return Self::parse(&files[0].1, &first_path);
        }
        let mut merged = toml::Table::new();
        for (p, text) in &files {
            let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
                path: p.clone(),
                message: e.to_string().trim_end().replace('\n', " "),
            })?;
            // Alone, so an unknown key or a bad value names this file.
            Config::deserialize(table.clone()).map_err(|e| ConfigError::Parse {
                path: p.clone(),
                message: e.to_string().trim_end().replace('\n', " "),
            })?;
            merge(&mut merged, table);
        }
        let names: Vec<String> = files.iter().map(|(p, _)| p.display().to_string()).collect();
        let joined = PathBuf::from(names.join(" + "));
        let cfg = Config::deserialize(merged).map_err(|e| ConfigError::Parse {
            path: joined.clone(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        cfg.validate().map_err(|message| ConfigError::Invalid { path: joined, message })?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        if self.trust.threshold == 0 {
            return Err("[trust] threshold must be at least 1".into());
        }
        let p = self.health.probation;
        if p < Duration::from_secs(1) || p > Duration::from_secs(24 * 3600) {
            return Err("[health] probation must be between 1s and 24h".into());
        }
        for (name, d) in [("check_timeout", self.health.check_timeout), ("unload_timeout", self.health.unload_timeout)]
        {
            if d.is_zero() || d > Duration::from_secs(600) {
                return Err(format!("[health] {name} must be between 1ms and 10m"));
            }
        }
        let i = self.health.after_commit_interval;
        if !i.is_zero() && (i < Duration::from_secs(1) || i > Duration::from_secs(24 * 3600)) {
            return Err("[health] after_commit_interval must be 0s (not watched) or between 1s and 24h".into());
        }
        if self.health.after_commit_rollback > Duration::from_secs(365 * 24 * 3600) {
            return Err("[health] after_commit_rollback must be at most 365d (0s: never roll back)".into());
        }
        if !milspec_format::manifest::valid_module_name(&self.kernel.module) {
            return Err(format!("[kernel] module `{}` is not a valid module name", self.kernel.module));
        }
        if let Some(p) = self.kernel.carry_params.iter().find(|p| !milspec_format::manifest::valid_module_name(p)) {
            return Err(format!("[kernel] carry_params: `{p}` is not a valid parameter name"));
        }
        if let Some(src) = &self.source {
            src.validate()?;
        }
        self.metrics.validate()?;
        self.history.validate()?;
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

impl SourceConfig {
    fn validate(&self) -> Result<(), String> {
        let scheme_ok = ["https://", "http://", "file://"].iter().any(|p| self.url.starts_with(p));
        if self.url.is_empty() {
            return Err("[source] url is required (or remove [source] to disable polling)".into());
        }
        if !scheme_ok || self.url.len() > 2048 || self.url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "[source] url `{}` must start with https://, http:// or file:// and hold no spaces",
                self.url.chars().take(100).collect::<String>()
            ));
        }
        let p = self.poll_interval;
        if p < Duration::from_secs(1) || p > Duration::from_secs(7 * 24 * 3600) {
            return Err("[source] poll_interval must be between 1s and 7d".into());
        }
        if self.max_package_size == 0 || self.max_package_size > milspec_format::Limits::DEFAULT.max_package_size {
            return Err(format!(
                "[source] max_package_size must be between 1 and {}",
                milspec_format::Limits::DEFAULT.max_package_size
            ));
        }
        for (name, d) in [("connect_timeout", self.connect_timeout), ("timeout", self.timeout)] {
            if d.is_zero() || d > Duration::from_secs(3600) {
                return Err(format!("[source] {name} must be between 1ms and 1h"));
            }
        }
        if self.attempts == 0 || self.attempts > 10 {
            return Err("[source] attempts must be between 1 and 10".into());
        }
        if let Some(ca) = &self.ca_file {
            if !ca.is_absolute() {
                return Err(format!(
                    "[source] ca_file `{}` must be an absolute path (e.g. /etc/milspecd/mirror-ca.pem)",
                    milspec_format::text::Escaped(&ca.to_string_lossy())
                ));
            }
            if self.url.starts_with("file://") {
                return Err(
                    "[source] ca_file is for https:// mirrors; a file:// mirror has no TLS: remove ca_file".into()
                );
            }
        }
        Ok(())
    }
}

/// Reads a config file or drop-in: a regular file (a symbolic link to one
/// is followed: packaging tools link drop-ins into place) of at most
/// [`MAX_CONFIG`] bytes. A FIFO or a device is refused at once.
fn read_capped(path: &Path) -> Result<String, ConfigError> {
    let read_err = |source| ConfigError::Read { path: path.to_path_buf(), source };
    let bytes = read_regular(path, OpenPolicy::follow(MAX_CONFIG)).map_err(|e| match e {
        OpenError::TooLarge { .. } => ConfigError::TooLarge { path: path.to_path_buf() },
        OpenError::Io { source, .. } => read_err(source),
        e @ OpenError::NotRegular { .. } => ConfigError::NotRegular(e),
    })?;
    String::from_utf8(bytes).map_err(|_| {
        read_err(std::io::Error::new(std::io::ErrorKind::InvalidData, "stream did not contain valid UTF-8"))
    })
}

/// The `*.toml` files in `conf.d/` beside `main`, sorted by name.
fn drop_ins(main: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let dir = main.parent().unwrap_or(Path::new(".")).join(DROP_IN_DIR);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(ConfigError::Read { path: dir, source }),
    };
    let mut out = Vec::new();
    for entry in rd {
        let p = entry.map_err(|source| ConfigError::Read { path: dir.clone(), source })?.path();
        if p.extension().is_some_and(|e| e == "toml") && p.is_file() {
            out.push(p);
            if out.len() > MAX_DROP_INS {
                return Err(ConfigError::TooManyDropIns { path: dir });
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Merges `over` into `base`: tables merge key by key, anything else is
/// replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = Config::parse("[health]\nprobation = \"5s\"\n[trust]\nthreshold = 2\n", Path::new("c.toml")).unwrap();
        assert_eq!(c.health.probation, Duration::from_secs(5));
        assert_eq!(c.trust.threshold, 2);
        assert_eq!(c.kernel.proc, PathBuf::from("/proc"));
        assert_eq!(Config::parse(&c.to_toml(), Path::new("x")).unwrap(), c);
    }

    #[test]
    fn after_commit_keys_default_and_bounds() {
        let c = Config::parse("", Path::new("c.toml")).unwrap();
        assert_eq!(c.health.after_commit_interval, Duration::from_secs(60));
        assert!(c.health.after_commit_rollback.is_zero(), "recorded only unless configured");
        let c = Config::parse(
            "[health]\nafter_commit_interval = \"0s\"\nafter_commit_rollback = \"24h\"\n",
            Path::new("c"),
        )
        .unwrap();
        assert!(!c.health.after_commit().watches());
        assert_eq!(c.health.after_commit().rollback_within, Duration::from_secs(24 * 3600));
        for bad in
            ["after_commit_interval = \"10ms\"", "after_commit_interval = \"2d\"", "after_commit_rollback = \"400d\""]
        {
            let e = Config::parse(&format!("[health]\n{bad}\n"), Path::new("c")).unwrap_err().to_string();
            assert!(e.contains("after_commit"), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("[health]\nprobaton = \"5s\"\n", Path::new("c.toml")).unwrap_err().to_string();
        assert!(e.contains("c.toml") && e.contains("probaton"), "{e}");
        let e = Config::parse("[nope]\n", Path::new("c.toml")).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn bad_values() {
        for (text, want) in [
            ("[health]\nprobation = \"soon\"\n", "not a duration"),
            ("[health]\nprobation = \"0s\"\n", "between 1s and 24h"),
            ("[trust]\nthreshold = 0\n", "at least 1"),
            ("[kernel]\nmodule = \"../x\"\n", "not a valid module name"),
        ] {
            let e = Config::parse(text, Path::new("c.toml")).unwrap_err().to_string();
            assert!(e.contains(want), "{e} !~ {want}");
        }
    }

    #[test]
    fn source_section() {
        let c = Config::parse("", Path::new("c.toml")).unwrap();
        assert!(c.source.is_none(), "no [source], no polling");
        let c = Config::parse("[source]\nurl = \"https://m.example/x/\"\npoll_interval = \"1h\"\n", Path::new("c"))
            .unwrap();
        let s = c.source.clone().unwrap();
        assert_eq!((s.poll_interval, s.attempts), (Duration::from_secs(3600), 4));
        assert_eq!(Config::parse(&c.to_toml(), Path::new("x")).unwrap(), c);
        assert_eq!(s.ca_file, None);
        let c = Config::parse("[source]\nurl = \"https://m/\"\nca_file = \"/etc/milspecd/ca.pem\"\n", Path::new("c"))
            .unwrap();
        assert_eq!(c.source.as_ref().and_then(|s| s.ca_file.as_deref()), Some(Path::new("/etc/milspecd/ca.pem")));
        assert_eq!(Config::parse(&c.to_toml(), Path::new("x")).unwrap(), c);
        for (text, want) in [
            ("[source]\npoll_interval = \"1h\"\n", "url is required"),
            ("[source]\nurl = \"ftp://x\"\n", "must start with"),
            ("[source]\nurl = \"file:///m\"\nmax_package_size = 0\n", "max_package_size"),
            ("[source]\nurl = \"file:///m\"\nurll = 1\n", "urll"),
            ("[source]\nurl = \"https://m/\"\nca_file = \"ca.pem\"\n", "ca_file `ca.pem` must be an absolute path"),
            ("[source]\nurl = \"file:///m\"\nca_file = \"/etc/ca.pem\"\n", "a file:// mirror has no TLS"),
        ] {
            let e = Config::parse(text, Path::new("c.toml")).unwrap_err().to_string();
            assert!(e.contains(want), "{e} !~ {want}");
        }
    }

    #[test]
    fn drop_ins_later_win_and_name_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("milspecd.toml");
        std::fs::write(&main, "[trust]\nthreshold = 2\n[source]\nurl = \"file:///a\"\n").unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::write(dir.path().join("conf.d/10-mirror.toml"), "[source]\nurl = \"https://b/\"\n").unwrap();
        std::fs::write(dir.path().join("conf.d/20-poll.toml"), "[source]\npoll_interval = \"5m\"\n").unwrap();
        std::fs::write(dir.path().join("conf.d/README"), "not toml").unwrap();
        let c = Config::load(&main, true).unwrap();
        let s = c.source.unwrap();
        assert_eq!((s.url.as_str(), s.poll_interval, c.trust.threshold), ("https://b/", Duration::from_secs(300), 2));
        std::fs::write(dir.path().join("conf.d/30-typo.toml"), "[source]\npoll_intervall = \"5m\"\n").unwrap();
        let e = Config::load(&main, true).unwrap_err().to_string();
        assert!(e.contains("30-typo.toml") && e.contains("poll_intervall"), "{e}");
        // Drop-ins alone, no main file.
        std::fs::remove_file(dir.path().join("conf.d/30-typo.toml")).unwrap();
        std::fs::remove_file(&main).unwrap();
        assert_eq!(Config::load(&main, false).unwrap().source.unwrap().url, "https://b/");
    }

    #[test]
    fn missing_file() {
        let p = Path::new("/nonexistent/milspecd.toml");
        assert_eq!(Config::load(p, false).unwrap(), Config::default());
        assert!(Config::load(p, true).is_err());
    }

    #[test]
    fn metrics_section() {
        let c = Config::parse("", Path::new("c.toml")).unwrap();
        assert_eq!(c.metrics.path(), Some(Path::new("/var/lib/prometheus/node-exporter/milspecd.prom")));
        assert_eq!(c.metrics.heartbeat, Duration::from_secs(15));
        let c = Config::parse("[metrics]\ntextfile = \"\"\n", Path::new("c")).unwrap();
        assert_eq!(c.metrics.path(), None, "empty: no metrics");
        let c = Config::parse("[metrics]\nheartbeat = \"2s\"\n", Path::new("c")).unwrap();
        assert_eq!(c.metrics.heartbeat, Duration::from_secs(2));
        for bad in ["0s", "6m"] {
            assert!(Config::parse(&format!("[metrics]\nheartbeat = \"{bad}\"\n"), Path::new("c")).is_err(), "{bad}");
        }
        assert_eq!(Config::parse(&c.to_toml(), Path::new("x")).unwrap(), c);
        for text in ["[metrics]\ntextfile = \"m.prom\"\n", "[metrics]\ntextfile = \"/run/m.txt\"\n"] {
            let e = Config::parse(text, Path::new("c.toml")).unwrap_err().to_string();
            assert!(e.contains("absolute path ending in .prom"), "{e}");
        }
    }
}
