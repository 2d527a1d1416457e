//! Everything `milspecd run` checks before it serves, checked at once and
//! reported together: `milspecd config` names each problem instead of
//! stopping at the first, so a configuration it accepts is one `run`
//! accepts too.

use std::path::PathBuf;

use crate::config::Config;
use crate::health::checks::{list_checks, CheckKind};
use crate::host::{HostContext, HostError};
use crate::mirror::{MirrorError, Poller};

/// One thing `run` would refuse or stumble over.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The trusted keys or the threshold (`run` refuses to start).
    #[error("{0}")]
    Trust(#[from] HostError),
    /// The `[source]` (`run` starts but never polls).
    #[error("[source]: {0}; the daemon would run without polling")]
    Source(#[source] MirrorError),
    /// A health-check folder that exists but cannot be listed.
    #[error("[health] checks_dir: cannot list {}: {source}; fix its permissions or remove it", path.display())]
    Checks { path: PathBuf, source: std::io::Error },
    /// A declared check (`health.d/*.toml`) is invalid: every install
    /// would be refused until it is fixed.
    #[error("[health] checks_dir: {0}; every install is refused until it is fixed")]
    Declared(#[source] crate::health::declared::DeclaredError),
}

/// Every problem of `cfg`, in the order `run` meets them; empty when `run`
/// would start and poll.
pub fn problems(cfg: &Config) -> Vec<Problem> {
    let mut out = Vec::new();
    if let Err(e) = HostContext::open(cfg) {
        out.push(Problem::Trust(e));
    }
    if cfg.source.is_some() {
        if let Err(e) = Poller::new(cfg) {
            // A key folder or trust problem is already named above.
            if !matches!(e, MirrorError::Keys(_) | MirrorError::TrustStore(_)) || out.is_empty() {
                out.push(Problem::Source(e));
            }
        }
    }
    for kind in [CheckKind::Required, CheckKind::Wanted] {
        let path = cfg.health.checks_dir.join(kind.dir_name());
        if let Err(source) = list_checks(&path) {
            if source.kind() != std::io::ErrorKind::NotFound {
                out.push(Problem::Checks { path, source });
            }
        }
    }
    if let Err(e) = crate::health::declared::load(&cfg.health.checks_dir) {
        out.push(Problem::Declared(e));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use milspec_format::SecretKey;
    use std::path::Path;

    fn config(dir: &Path, threshold: usize) -> Config {
        let text = format!(
            "[paths]\nstate_dir = \"{d}/state\"\n[trust]\nkeys_dir = \"{d}/keys\"\nthreshold = {threshold}\n\
             [health]\nchecks_dir = \"{d}/health.d\"\n[source]\nurl = \"file://{d}/mirror\"\n",
            d = dir.display()
        );
        Config::parse(&text, Path::new("t.toml")).unwrap()
    }

    fn one_key(dir: &Path) {
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        let k = SecretKey::generate("fleet").unwrap();
        std::fs::write(dir.join("keys/fleet.pub"), k.public().to_file_text()).unwrap();
    }

    #[test]
    fn a_good_configuration_has_no_problem() {
        let d = tempfile::tempdir().unwrap();
        one_key(d.path());
        let p = problems(&config(d.path(), 1));
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn an_invalid_declared_check_is_named() {
        let d = tempfile::tempdir().unwrap();
        let cfg = config(d.path(), 1);
        std::fs::create_dir_all(&cfg.health.checks_dir).unwrap();
        std::fs::write(cfg.health.checks_dir.join("web.toml"), "type = \"http\"\n").unwrap();
        let text: Vec<String> = problems(&cfg).iter().map(|p| p.to_string()).collect();
        assert!(text.iter().any(|t| t.contains("web.toml") && t.contains("needs url")), "{text:?}");
    }

    #[test]
    fn a_threshold_above_the_keys_is_named() {
        let d = tempfile::tempdir().unwrap();
        one_key(d.path());
        let p = problems(&config(d.path(), 3));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(matches!(p[0], Problem::Trust(HostError::TrustConfig(_))), "{p:?}");
        assert!(p[0].to_string().contains('3'), "{}", p[0]);
    }

    #[test]
    fn every_problem_is_named_not_only_the_first() {
        let d = tempfile::tempdir().unwrap();
        // No keys folder, and a check folder that is a file.
        std::fs::create_dir_all(d.path().join("health.d")).unwrap();
        std::fs::write(d.path().join("health.d/required.d"), "").unwrap();
        let p = problems(&config(d.path(), 1));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(matches!(p[0], Problem::Trust(HostError::Keys(_))), "{p:?}");
        assert!(matches!(p[1], Problem::Checks { .. }), "{p:?}");
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let d = tempfile::tempdir().unwrap();
        one_key(d.path());
        let text = config(d.path(), 1).to_toml().replace(
            &format!("url = \"file://{}/mirror\"", d.path().display()),
            &format!("url = \"https://mirror.example/\"\nca_file = \"{}/no-ca.pem\"", d.path().display()),
        );
        let p = problems(&Config::parse(&text, Path::new("t.toml")).unwrap());
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(matches!(p[0], Problem::Source(_)) && p[0].to_string().contains("no-ca.pem"), "{}", p[0]);
    }
}
