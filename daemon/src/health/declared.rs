//! Declared health checks: `<checks_dir>/*.toml` drop-ins, one check per
//! file, of four types (a command, a TCP port, an HTTP answer, a key of
//! the module's status), each run on its own interval through the whole
//! probation window. Parsing and validation here are pure; running a
//! check is [`super::probe`].
//!
//! ```toml
//! # /etc/milspecd/health.d/web.toml
//! type = "http"            # command | tcp | http | status
//! required = true          # false: "wanted", a failure is only logged
//! interval = "2s"          # time between two runs
//! timeout = "1s"           # one run may take this long
//! failures = 3             # consecutive failed runs that make it unhealthy
//! url = "http://127.0.0.1:8080/healthz"
//! expect_status = 200
//! body_contains = "ok"
//! ```

use std::fs;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Most drop-ins read from one folder.
pub const MAX_FILES: usize = 64;
/// Largest drop-in read.
pub const MAX_FILE: u64 = 16 * 1024;
/// Shortest interval, and the shortest timeout.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longest interval or timeout.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// Most consecutive failures a check may ask for.
pub const MAX_FAILURES: u32 = 100;
/// Longest argument vector of a command check.
pub const MAX_ARGS: usize = 64;

/// Defaults: every 2 s, 1 s each, 3 failures in a row.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_FAILURES: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum DeclaredError {
    #[error("cannot read the health checks in {}: {source}; check [health] checks_dir", dir.display())]
    List { dir: PathBuf, source: io::Error },
    #[error("{}: cannot read it: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: larger than {MAX_FILE} bytes; one check per file", path.display())]
    TooLarge { path: PathBuf },
    #[error("{}: more than {MAX_FILES} check files in {}; merge or remove some", dir.display(), dir.display())]
    TooMany { dir: PathBuf },
    #[error("{}: not a valid check: {detail}", path.display())]
    Invalid { path: PathBuf, detail: String },
}

/// What one check looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Runs a program; exit 0 passes.
    Command { argv: Vec<String> },
    /// Connects to an address; a completed connection passes.
    Tcp { address: SocketAddr },
    /// `GET url` (plain `http://`); the status (and the body) must match.
    Http { url: String, expect_status: u16, body_contains: Option<String> },
    /// A key of `/proc/milspec/status` compared with a value.
    Status { key: String, rule: StatusRule },
}

/// How a status key is judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusRule {
    /// The value is a number below this.
    Below(u64),
    /// The value is exactly this text.
    Equals(String),
}

/// One declared check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredCheck {
    /// `health.d/web.toml` is `web`.
    pub name: String,
    pub required: bool,
    pub interval: Duration,
    pub timeout: Duration,
    pub failures: u32,
    pub probe: Probe,
}

/// A drop-in as written; every key of every type, checked by [`validate`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(rename = "type")]
    kind: String,
    required: Option<bool>,
    interval: Option<String>,
    timeout: Option<String>,
    failures: Option<u32>,
    command: Option<Vec<String>>,
    address: Option<String>,
    url: Option<String>,
    expect_status: Option<u16>,
    body_contains: Option<String>,
    key: Option<String>,
    below: Option<u64>,
    equals: Option<String>,
}

/// Parses one drop-in's text (pure).
pub fn parse(name: &str, text: &str) -> Result<DeclaredCheck, String> {
    let raw: Raw = toml::from_str(text).map_err(|e| e.message().to_string())?;
    validate(name, raw)
}

fn duration(key: &str, value: Option<&str>, default: Duration) -> Result<Duration, String> {
    let Some(text) = value else { return Ok(default) };
    let d = humantime::parse_duration(text).map_err(|e| format!("{key} = {text:?}: {e} (e.g. \"2s\", \"500ms\")"))?;
    if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&d) {
        return Err(format!("{key} = {text:?}: must be from 100ms to 1h"));
    }
    Ok(d)
}

fn validate(name: &str, raw: Raw) -> Result<DeclaredCheck, String> {
    let interval = duration("interval", raw.interval.as_deref(), DEFAULT_INTERVAL)?;
    let timeout = duration("timeout", raw.timeout.as_deref(), DEFAULT_TIMEOUT)?;
    if timeout > interval {
        return Err(format!(
            "timeout ({}) is longer than interval ({}); a run must end before the next",
            humantime::format_duration(timeout),
            humantime::format_duration(interval)
        ));
    }
    let failures = raw.failures.unwrap_or(DEFAULT_FAILURES);
    if !(1..=MAX_FAILURES).contains(&failures) {
        return Err(format!("failures = {failures}: must be from 1 to {MAX_FAILURES}"));
    }
    let mut unused: Vec<&str> = Vec::new();
    let mut not_for = |present: bool, key: &'static str| {
        if present {
            unused.push(key);
        }
    };
    let probe = match raw.kind.as_str() {
        "command" => {
            not_for(raw.address.is_some(), "address");
            not_for(raw.url.is_some() || raw.expect_status.is_some() || raw.body_contains.is_some(), "url");
            not_for(raw.key.is_some() || raw.below.is_some() || raw.equals.is_some(), "key");
            let argv = raw.command.ok_or("type \"command\" needs command = [\"/absolute/path\", \"arg\", ...]")?;
            match argv.first() {
                None => return Err("command is empty".into()),
                Some(p) if !Path::new(p).is_absolute() => {
                    return Err(format!("command {p:?}: give the program's absolute path"))
                }
                _ => {}
            }
            if argv.len() > MAX_ARGS || argv.iter().any(|a| a.contains('\0')) {
                return Err(format!("command: at most {MAX_ARGS} arguments, no NUL bytes"));
            }
            Probe::Command { argv }
        }
        "tcp" => {
            not_for(raw.command.is_some(), "command");
            not_for(raw.url.is_some() || raw.expect_status.is_some() || raw.body_contains.is_some(), "url");
            not_for(raw.key.is_some() || raw.below.is_some() || raw.equals.is_some(), "key");
            let text = raw.address.ok_or("type \"tcp\" needs address = \"IP:PORT\"")?;
            let address = text
                .parse()
                .map_err(|_| format!("address {text:?}: give an IP address and a port (\"127.0.0.1:8080\", \"[::1]:22\"); names are not resolved"))?;
            Probe::Tcp { address }
        }
        "http" => {
            not_for(raw.command.is_some(), "command");
            not_for(raw.address.is_some(), "address");
            not_for(raw.key.is_some() || raw.below.is_some() || raw.equals.is_some(), "key");
            let url = raw.url.ok_or("type \"http\" needs url = \"http://HOST:PORT/PATH\"")?;
            if !url.starts_with("http://") || url.len() > 2048 || url.chars().any(|c| c.is_control()) {
                return Err(format!(
                    "url {:?}: a plain http:// URL of a local service (at most 2048 bytes)",
                    milspec_format::text::sanitize(&url)
                ));
            }
            let expect_status = raw.expect_status.unwrap_or(200);
            if !(100..=599).contains(&expect_status) {
                return Err(format!("expect_status = {expect_status}: an HTTP status from 100 to 599"));
            }
            if raw.body_contains.as_ref().is_some_and(|b| b.is_empty() || b.len() > 1024) {
                return Err("body_contains: from 1 to 1024 bytes".into());
            }
            Probe::Http { url, expect_status, body_contains: raw.body_contains }
        }
        "status" => {
            not_for(raw.command.is_some(), "command");
            not_for(raw.address.is_some(), "address");
            not_for(raw.url.is_some() || raw.expect_status.is_some() || raw.body_contains.is_some(), "url");
            let key = raw.key.ok_or("type \"status\" needs key = \"errors\" (a key of /proc/milspec/status)")?;
            if key.is_empty() || key.len() > 64 || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("key {:?}: a status key is [A-Za-z0-9_]", milspec_format::text::sanitize(&key)));
            }
            let rule = match (raw.below, raw.equals) {
                (Some(n), None) => StatusRule::Below(n),
                (None, Some(v)) => StatusRule::Equals(v),
                _ => return Err("type \"status\" needs exactly one of below = N or equals = \"VALUE\"".into()),
            };
            Probe::Status { key, rule }
        }
        other => {
            return Err(format!(
                "type = {:?}: one of \"command\", \"tcp\", \"http\", \"status\"",
                milspec_format::text::sanitize(other)
            ))
        }
    };
    if !unused.is_empty() {
        return Err(format!("type {:?} does not use {}", raw.kind, unused.join(", ")));
    }
    Ok(DeclaredCheck {
        name: name.to_string(),
        required: raw.required.unwrap_or(true),
        interval,
        timeout,
        failures,
        probe,
    })
}

/// The drop-ins of `dir` (`*.toml`, not hidden), in name order. A missing
/// folder holds none; any invalid file is an error naming it.
pub fn load(dir: &Path) -> Result<Vec<DeclaredCheck>, DeclaredError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(DeclaredError::List { dir: dir.into(), source }),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| DeclaredError::List { dir: dir.into(), source })?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".toml") {
            continue;
        }
        if files.len() == MAX_FILES {
            return Err(DeclaredError::TooMany { dir: dir.into() });
        }
        files.push(entry.path());
    }
    files.sort();
    files.iter().map(|path| load_one(path)).collect()
}

fn load_one(path: &Path) -> Result<DeclaredCheck, DeclaredError> {
    let read = |source| DeclaredError::Read { path: path.into(), source };
    let opened = milspec_format::open_regular(path, milspec_format::OpenPolicy::follow(MAX_FILE + 1)).map_err(|e| {
        DeclaredError::Invalid { path: path.into(), detail: milspec_format::text::sanitize(&e.to_string()) }
    })?;
    let mut text = String::new();
    opened.file.take(MAX_FILE + 1).read_to_string(&mut text).map_err(read)?;
    if text.len() as u64 > MAX_FILE {
        return Err(DeclaredError::TooLarge { path: path.into() });
    }
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    parse(&milspec_format::text::sanitize(&stem), &text)
        .map_err(|detail| DeclaredError::Invalid { path: path.into(), detail })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_type_parses_with_defaults() {
        let c = parse("port", "type = \"tcp\"\naddress = \"127.0.0.1:8080\"\n").unwrap();
        assert_eq!(
            c,
            DeclaredCheck {
                name: "port".into(),
                required: true,
                interval: DEFAULT_INTERVAL,
                timeout: DEFAULT_TIMEOUT,
                failures: DEFAULT_FAILURES,
                probe: Probe::Tcp { address: "127.0.0.1:8080".parse().unwrap() },
            }
        );
        let c = parse(
            "web",
            "type = \"http\"\nurl = \"http://127.0.0.1:1/h\"\nbody_contains = \"ok\"\nrequired = false\n\
             interval = \"500ms\"\ntimeout = \"200ms\"\nfailures = 2\n",
        )
        .unwrap();
        assert_eq!(
            (c.required, c.interval, c.timeout, c.failures),
            (false, Duration::from_millis(500), Duration::from_millis(200), 2)
        );
        assert_eq!(
            c.probe,
            Probe::Http { url: "http://127.0.0.1:1/h".into(), expect_status: 200, body_contains: Some("ok".into()) }
        );
        let c = parse("cmd", "type = \"command\"\ncommand = [\"/bin/true\", \"x\"]\n").unwrap();
        assert_eq!(c.probe, Probe::Command { argv: vec!["/bin/true".into(), "x".into()] });
        let c = parse("errs", "type = \"status\"\nkey = \"errors\"\nbelow = 3\n").unwrap();
        assert_eq!(c.probe, Probe::Status { key: "errors".into(), rule: StatusRule::Below(3) });
        let c = parse("state", "type = \"status\"\nkey = \"state\"\nequals = \"ok\"\n").unwrap();
        assert_eq!(c.probe, Probe::Status { key: "state".into(), rule: StatusRule::Equals("ok".into()) });
    }

    #[test]
    fn bad_checks_are_named() {
        let cases = [
            ("type = \"ping\"\n", "one of"),
            ("type = \"tcp\"\n", "needs address"),
            ("type = \"tcp\"\naddress = \"localhost:80\"\n", "names are not resolved"),
            ("type = \"tcp\"\naddress = \"127.0.0.1:80\"\nurl = \"http://x/\"\n", "does not use url"),
            ("type = \"http\"\nurl = \"https://x/\"\n", "plain http://"),
            ("type = \"http\"\nurl = \"http://x/\"\nexpect_status = 42\n", "100 to 599"),
            ("type = \"command\"\ncommand = [\"true\"]\n", "absolute path"),
            ("type = \"command\"\ncommand = []\n", "empty"),
            ("type = \"status\"\nkey = \"errors\"\n", "exactly one of"),
            ("type = \"status\"\nkey = \"err ors\"\nbelow = 1\n", "[A-Za-z0-9_]"),
            ("type = \"tcp\"\naddress = \"127.0.0.1:1\"\ninterval = \"10ms\"\n", "from 100ms to 1h"),
            (
                "type = \"tcp\"\naddress = \"127.0.0.1:1\"\ninterval = \"1s\"\ntimeout = \"2s\"\n",
                "longer than interval",
            ),
            ("type = \"tcp\"\naddress = \"127.0.0.1:1\"\nfailures = 0\n", "from 1 to 100"),
            ("type = \"tcp\"\naddress = \"127.0.0.1:1\"\nbogus = 1\n", "unknown field"),
            ("not toml", ""),
        ];
        for (text, want) in cases {
            let e = parse("x", text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn a_folder_of_drop_ins() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(load(&d.path().join("missing")).unwrap(), []);
        fs::write(d.path().join("b.toml"), "type = \"tcp\"\naddress = \"127.0.0.1:2\"\n").unwrap();
        fs::write(d.path().join("a.toml"), "type = \"tcp\"\naddress = \"127.0.0.1:1\"\n").unwrap();
        fs::write(d.path().join(".hidden.toml"), "junk").unwrap();
        fs::write(d.path().join("README"), "junk").unwrap();
        fs::create_dir(d.path().join("required.d")).unwrap();
        let names: Vec<String> = load(d.path()).unwrap().into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["a", "b"]);
        fs::write(d.path().join("c.toml"), "type = \"nope\"\n").unwrap();
        let e = load(d.path()).unwrap_err().to_string();
        assert!(e.contains("c.toml") && e.contains("one of"), "{e}");
        fs::write(d.path().join("c.toml"), "#".repeat(MAX_FILE as usize + 1)).unwrap();
        assert!(matches!(load(d.path()), Err(DeclaredError::TooLarge { .. })));
    }
}
