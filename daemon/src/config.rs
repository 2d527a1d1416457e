//! The daemon's configuration file (TOML, default `/etc/milspecd/milspecd.toml`).
//!
//! Every key has a default; an unknown key is an error that names it, so a
//! typo never silently falls back to a default.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub const DEFAULT_PATH: &str = "/etc/milspecd/milspecd.toml";
/// Largest config file read.
const MAX_CONFIG: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read config: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: config is larger than {MAX_CONFIG} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub trust: TrustConfig,
    pub paths: PathsConfig,
    pub health: HealthConfig,
    pub kernel: KernelConfig,
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
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            probation: Duration::from_secs(30),
            checks_dir: "/etc/milspecd/health.d".into(),
            check_timeout: Duration::from_secs(10),
            unload_timeout: Duration::from_secs(5),
            reboot_on_stuck_module: false,
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

    /// Loads `path`. With `explicit` false a missing file means defaults
    /// (a host with no config file runs with built-in settings).
    pub fn load(path: &Path, explicit: bool) -> Result<Self, ConfigError> {
        let read_err = |source| ConfigError::Read { path: path.to_path_buf(), source };
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Config::default());
            }
            Err(e) => return Err(read_err(e)),
        };
        let mut text = String::new();
        file.take(MAX_CONFIG + 1).read_to_string(&mut text).map_err(read_err)?;
        if text.len() as u64 > MAX_CONFIG {
            return Err(ConfigError::TooLarge { path: path.to_path_buf() });
        }
        Self::parse(&text, path)
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
        if !milspec_format::manifest::valid_module_name(&self.kernel.module) {
            return Err(format!("[kernel] module `{}` is not a valid module name", self.kernel.module));
        }
        if let Some(p) = self.kernel.carry_params.iter().find(|p| !milspec_format::manifest::valid_module_name(p)) {
            return Err(format!("[kernel] carry_params: `{p}` is not a valid parameter name"));
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
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
    fn missing_file() {
        let p = Path::new("/nonexistent/milspecd.toml");
        assert_eq!(Config::load(p, false).unwrap(), Config::default());
        assert!(Config::load(p, true).is_err());
    }
}
