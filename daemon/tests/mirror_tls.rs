//! HTTPS mirrors behind a private CA, and proxies: a real nginx on
//! 127.0.0.1 with a certificate from a CA made in the test, and a small
//! CONNECT proxy on 127.0.0.1.
//!
//! The system store (`SSL_CERT_FILE`) and the proxy variables are
//! process-wide, so every case that depends on them runs in a child
//! process of this test binary (`child_fetch_index`, ignored when run on
//! its own) with an environment built from scratch for that case.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod mirror_support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use milspecd::check::CheckReport;
use milspecd::config::{Config, SourceConfig};
use milspecd::engine::Outcome;
use milspecd::mirror::transport::FetchError;
use milspecd::mirror::trust::TrustError;
use milspecd::mirror::{MirrorError, Poller};
use mirror_support::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use time::OffsetDateTime;

/// Every variable that changes which roots or which proxy are used.
const ENV_VARS: &[&str] = &[
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// A private CA, a server certificate it signed for 127.0.0.1, and an
/// unrelated CA (a "system store" that does not know the mirror's CA).
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let ca = make_ca("milspecd test mirror CA");
        let other = make_ca("some other CA");
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "127.0.0.1");
        let key = KeyPair::generate().unwrap();
        let server = params.signed_by(&key, &ca).unwrap();
        let pki = Pki { dir };
        fs::write(pki.path("ca.pem"), ca.pem()).unwrap();
        fs::write(pki.path("other-ca.pem"), other.pem()).unwrap();
        fs::write(pki.path("server.pem"), server.pem()).unwrap();
        fs::write(pki.path("server.key"), key.serialize_pem()).unwrap();
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn nginx(&self, root: &Path) -> Nginx {
        Nginx::start_tls(root, &self.path("server.pem"), &self.path("server.key"))
    }
}

fn make_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A config that pulls `url` into a fresh state folder.
fn config(state: &Path, keys: &Path, url: &str, ca_file: Option<PathBuf>) -> Config {
    fs::write(state.join("machine-id"), "0123456789abcdef0123456789abcdef\n").unwrap();
    let mut cfg = Config::default();
    cfg.trust.keys_dir = keys.to_path_buf();
    cfg.paths.state_dir = state.join("state");
    fs::create_dir_all(state.join("state/mirror")).unwrap();
    cfg.source = Some(SourceConfig {
        url: url.into(),
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
        attempts: 1,
        machine_id_file: state.join("machine-id"),
        ca_file,
        ..SourceConfig::default()
    });
    cfg
}

/// One case in a child process: `env` is its whole say on roots and proxy.
struct Case<'a> {
    name: &'a str,
    url: &'a str,
    keys: &'a Path,
    ca_file: Option<&'a Path>,
    env: &'a [(&'a str, &'a str)],
    /// `ok`, `untrusted` or `proxy-down`.
    expect: &'a str,
}

fn run_child(c: &Case<'_>) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["child_fetch_index", "--exact", "--ignored", "--nocapture", "--test-threads=1"]);
    for v in ENV_VARS {
        cmd.env_remove(v);
    }
    cmd.env("MIRROR_TLS_URL", c.url).env("MIRROR_TLS_KEYS", c.keys).env("MIRROR_TLS_EXPECT", c.expect);
    if let Some(ca) = c.ca_file {
        cmd.env("MIRROR_TLS_CA_FILE", ca);
    }
    cmd.envs(c.env.iter().copied());
    let out = cmd.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("case `{}`:\n{text}", c.name);
    assert!(out.status.success(), "case `{}` failed in its child process:\n{text}", c.name);
    assert!(text.contains("1 passed"), "case `{}`: the child ran no test:\n{text}", c.name);
}

#[test]
#[ignore = "run by the other tests of this file in a child process, with the environment of one case"]
fn child_fetch_index() {
    let var = |n: &str| std::env::var(n).unwrap_or_else(|_| panic!("{n} unset: this case runs only as a child"));
    let (url, keys, expect) = (var("MIRROR_TLS_URL"), var("MIRROR_TLS_KEYS"), var("MIRROR_TLS_EXPECT"));
    let ca_file = std::env::var_os("MIRROR_TLS_CA_FILE").map(PathBuf::from);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), Path::new(&keys), &url, ca_file);
    let r = Poller::new(&cfg).and_then(|p| p.fetch_index(OffsetDateTime::now_utc()));
    match (expect.as_str(), r) {
        ("ok", Ok((index, not_modified))) => {
            assert_eq!((index.index.version, not_modified), (1, false));
        }
        ("untrusted", Err(MirrorError::Fetch(e @ FetchError::Certificate { .. }))) => {
            assert!(!e.is_transient(), "a certificate the host does not trust is not worth a retry");
            let text = e.to_string();
            println!("child case: {text}");
            for want in [
                "not trusted (issued by a CA this host does not trust)",
                "update-ca-certificates",
                "[source] ca_file",
                "127.0.0.1",
            ] {
                assert!(text.contains(want), "`{want}` missing from: {text}");
            }
        }
        ("proxy-down", Err(MirrorError::Fetch(e))) => {
            assert!(matches!(e, FetchError::Connect { .. } | FetchError::Transfer { .. }), "{e:?}");
        }
        (expect, r) => panic!("expected {expect}, got {:?}", r.map(|(i, _)| i.index.version)),
    }
    println!("child case: {expect}, as expected");
}

#[test]
fn a_private_ca_is_trusted_through_the_system_store_or_ca_file() {
    let p = Publisher::new();
    p.publish(&["1.0.0"], None);
    let pki = Pki::new();
    let nginx = pki.nginx(&p.mirror());
    let url = nginx.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let keys = p.path("trust");
    let (ca, other) = (pki.path("ca.pem"), pki.path("other-ca.pem"));
    let (ca, other) = (ca.to_str().unwrap(), other.to_str().unwrap());
    let missing = pki.path("no-such-store.pem");
    let case = |name, ca_file: Option<&Path>, env: &[(&str, &str)], expect| {
        run_child(&Case { name, url: &url, keys: &keys, ca_file, env, expect });
    };
    case("the system store does not know the CA", None, &[("SSL_CERT_FILE", other)], "untrusted");
    case(
        "the built-in roots do not know it either",
        None,
        &[("SSL_CERT_FILE", missing.to_str().unwrap())],
        "untrusted",
    );
    case("ca_file adds the CA", Some(Path::new(ca)), &[("SSL_CERT_FILE", other)], "ok");
    case("the CA in the system store", None, &[("SSL_CERT_FILE", ca)], "ok");
    let store = pki.path("certs");
    fs::create_dir(&store).unwrap();
    fs::copy(ca, store.join("mirror-ca.pem")).unwrap();
    let dir_env = [("SSL_CERT_DIR", store.to_str().unwrap()), ("SSL_CERT_FILE", other)];
    case("the CA in a system store folder", None, &dir_env, "ok");
    case(
        "ca_file on top of the built-in roots",
        Some(Path::new(ca)),
        &[("SSL_CERT_FILE", missing.to_str().unwrap())],
        "ok",
    );
    // Each case above failed before its request or fetched the index once.
    let fetched = nginx.log().iter().filter(|l| l.2 == "/index.json" && l.0 == 200).count();
    assert_eq!(fetched, 4, "{:?}", nginx.log());
}

#[test]
fn https_proxy_carries_the_traffic_unless_no_proxy_matches() {
    let p = Publisher::new();
    p.publish(&["1.0.0"], None);
    let pki = Pki::new();
    let nginx = pki.nginx(&p.mirror());
    let proxy = ConnectProxy::start();
    let (url, keys, proxy_url) = (nginx.url(), p.path("trust"), proxy.url());
    let ca = pki.path("ca.pem");
    let store = ("SSL_CERT_FILE", ca.to_str().unwrap());
    let target = format!("127.0.0.1:{}", nginx.port);
    let case = |name, env: &[(&str, &str)], expect| {
        run_child(&Case { name, url: &url, keys: &keys, ca_file: None, env, expect });
    };

    case("through HTTPS_PROXY", &[store, ("HTTPS_PROXY", &proxy_url)], "ok");
    // One CONNECT per request: the next trust document (none: a 404), the index.
    assert_eq!(proxy.targets(), [target.clone(), target], "one CONNECT to the mirror per request");
    case("through https_proxy", &[store, ("https_proxy", &proxy_url)], "ok");
    case("through ALL_PROXY", &[store, ("ALL_PROXY", &proxy_url)], "ok");
    assert_eq!(proxy.targets().len(), 6);

    case("NO_PROXY names the mirror", &[store, ("HTTPS_PROXY", &proxy_url), ("NO_PROXY", "localhost,127.0.0.1")], "ok");
    case("no_proxy covers its range", &[store, ("HTTPS_PROXY", &proxy_url), ("no_proxy", "127.0.0.0/8")], "ok");
    case("HTTP_PROXY is for http:// mirrors", &[store, ("HTTP_PROXY", &proxy_url)], "ok");
    case("NO_PROXY for another host", &[store, ("HTTPS_PROXY", &proxy_url), ("NO_PROXY", "mirror.example")], "ok");
    assert_eq!(proxy.targets().len(), 8, "only the last case went through the proxy: {:?}", proxy.targets());

    // A proxy that is down fails the poll: the mirror is not reached
    // directly behind the operator's back.
    let dead = format!("http://127.0.0.1:{}", free_port());
    case("the proxy is down", &[store, ("HTTPS_PROXY", &dead)], "proxy-down");
    let fetched = nginx.log().iter().filter(|l| l.2 == "/index.json").count();
    assert_eq!(fetched, 7, "{:?}", nginx.log());
}

#[test]
fn a_bad_ca_file_is_refused_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let publisher = Publisher::new();
    let keys = publisher.path("trust");
    let pki = Pki::new();
    let url = "https://127.0.0.1:9/";
    let poller = |ca: &Path| Poller::new(&config(d, &keys, url, Some(ca.to_path_buf())));

    fs::write(d.join("not-pem.pem"), "this is not a certificate\n").unwrap();
    let e = poller(&d.join("not-pem.pem")).unwrap_err();
    assert!(matches!(e, MirrorError::Trust(TrustError::Empty { .. })), "{e:?}");
    let text = e.to_string();
    assert!(text.contains(&d.join("not-pem.pem").display().to_string()) && text.contains("PEM"), "{text}");

    let e = poller(&pki.path("server.key")).unwrap_err();
    assert!(matches!(e, MirrorError::Trust(TrustError::PrivateKey { .. })), "{e:?}");
    let e = poller(&d.join("missing.pem")).unwrap_err();
    assert!(matches!(e, MirrorError::Trust(TrustError::Read { .. })), "{e:?}");
    assert!(e.to_string().contains("missing.pem"), "{e}");
    let e = poller(d).unwrap_err();
    assert!(matches!(e, MirrorError::Trust(TrustError::NotRegular { .. })), "{e:?}");
    let mut broken = fs::read_to_string(pki.path("ca.pem")).unwrap();
    broken.truncate(broken.len() / 2);
    fs::write(d.join("broken.pem"), broken).unwrap();
    let e = poller(&d.join("broken.pem")).unwrap_err();
    assert!(matches!(e, MirrorError::Trust(TrustError::Pem { .. })), "{e:?}");
    // The CA itself loads.
    poller(&pki.path("ca.pem")).unwrap();

    // Config: a relative path, and a file:// mirror, are refused up front.
    let text = "[source]\nurl = \"https://m/\"\nca_file = \"mirror-ca.pem\"\n";
    let e = Config::parse(text, Path::new("milspecd.toml")).unwrap_err().to_string();
    assert!(e.contains("must be an absolute path"), "{e}");
    let text = format!("[source]\nurl = \"file://{}\"\nca_file = \"/etc/ca.pem\"\n", d.display());
    let e = Config::parse(&text, Path::new("milspecd.toml")).unwrap_err().to_string();
    assert!(e.contains("file:// mirror has no TLS"), "{e}");
    let mut cfg = config(d, &keys, &format!("file://{}/", d.display()), Some(pki.path("ca.pem")));
    let e = Poller::new(&cfg).unwrap_err();
    assert!(matches!(e, MirrorError::CaFileForFileMirror { .. }), "{e:?}");
    cfg.source.as_mut().unwrap().ca_file = None;
    Poller::new(&cfg).unwrap();
}

#[test]
fn pull_and_install_over_https_with_ca_file() {
    let p = Publisher::new();
    p.publish(&["1.0.0"], None);
    let pki = Pki::new();
    let nginx = pki.nginx(&p.mirror());
    let mut h = Host::new(&p, &nginx.url(), "host-tls");
    h.cfg.source.as_mut().unwrap().ca_file = Some(pki.path("ca.pem"));
    match h.poll().unwrap() {
        CheckReport::Installed { version, outcome, .. } => {
            assert_eq!(version, "1.0.0");
            assert!(matches!(outcome, Outcome::Committed { .. }), "{outcome:?}");
        }
        r => panic!("{r:?}"),
    }
    assert_eq!(h.kernel.live_version().as_deref(), Some("1.0.0"));
    assert!(matches!(h.poll().unwrap(), CheckReport::UpToDate { not_modified: true, .. }));
}
