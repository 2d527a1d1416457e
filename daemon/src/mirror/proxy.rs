//! Which proxy, if any, the HTTP(S) mirror client goes through: the
//! standard environment variables, decided here once per mirror rather
//! than left to the HTTP library's own order.
//!
//! - an `https://` mirror: `HTTPS_PROXY`, `https_proxy`, then `ALL_PROXY`,
//!   `all_proxy`;
//! - an `http://` mirror: `HTTP_PROXY`, `http_proxy`, then `ALL_PROXY`,
//!   `all_proxy`;
//! - `NO_PROXY` / `no_proxy` (comma-separated) is matched against the host
//!   of `[source] url`: `*` (all), a name (`mirror.corp`, also matching its
//!   subdomains; a leading `.` or `*.` is the same), an IP address, an IP
//!   range (`10.0.0.0/8`), each optionally with `:port`.
//!
//! An empty variable counts as unset. The proxy is an HTTP proxy
//! (`http://host:port`, CONNECT for both schemes) or an HTTPS one.

use std::net::IpAddr;

use milspec_format::text::Escaped;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error(
        "{var}=`{}` is not a usable proxy url; set it to http://host:port (or unset it in the unit's environment)",
        Escaped(value)
    )]
    Invalid { var: &'static str, value: String },
}

/// The proxy for one mirror, and the variable it came from.
#[derive(Debug, Clone)]
pub struct ProxySetting {
    pub var: &'static str,
    pub proxy: ureq::Proxy,
}

impl ProxySetting {
    /// The proxy as `scheme://host:port`, without credentials (for logs).
    pub fn display(&self) -> String {
        format!(
            "{}://{}:{}",
            self.proxy.protocol().to_string().to_ascii_lowercase(),
            self.proxy.host(),
            self.proxy.port()
        )
    }
}

/// What the environment asks for `mirror_url`.
#[derive(Debug, Clone)]
pub enum Choice {
    Direct,
    /// The mirror's host matches this `NO_PROXY` variable.
    Bypassed {
        var: &'static str,
    },
    Proxy(ProxySetting),
}

impl Choice {
    pub fn proxy(&self) -> Option<ureq::Proxy> {
        match self {
            Choice::Proxy(p) => Some(p.proxy.clone()),
            Choice::Direct | Choice::Bypassed { .. } => None,
        }
    }
}

/// The choice for `mirror_url`, reading variables through `env` (the
/// process environment in [`from_env`]; a table in tests).
pub fn choose(mirror_url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Choice, ProxyError> {
    let get =
        |names: &[&'static str]| names.iter().find_map(|n| env(n).filter(|v| !v.trim().is_empty()).map(|v| (*n, v)));
    let vars: &[&'static str] = if mirror_url.starts_with("https://") {
        &["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
    } else if mirror_url.starts_with("http://") {
        &["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"]
    } else {
        return Ok(Choice::Direct);
    };
    let Some((var, value)) = get(vars) else {
        return Ok(Choice::Direct);
    };
    if let (Some((no_var, list)), Some((host, port))) = (get(&["NO_PROXY", "no_proxy"]), host_port(mirror_url)) {
        if no_proxy_matches(&list, &host, port) {
            return Ok(Choice::Bypassed { var: no_var });
        }
    }
    let invalid = || ProxyError::Invalid { var, value: redact(&value) };
    let value_trimmed = value.trim();
    // Only http(s) proxies (no SOCKS support is built in); a bare
    // host:port means http://.
    let scheme_ok = match value_trimmed.split_once("://") {
        Some((s, _)) => s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"),
        None => true,
    };
    if !scheme_ok {
        return Err(invalid());
    }
    let proxy = ureq::Proxy::new(value_trimmed).map_err(|_| invalid())?;
    Ok(Choice::Proxy(ProxySetting { var, proxy }))
}

/// A proxy url with any `user:password@` replaced by `***@`.
fn redact(value: &str) -> String {
    let (scheme, rest) = value.split_once("://").map_or(("", value), |(s, r)| (s, r));
    let rest = match rest.split_once('@') {
        Some((_, after)) if !after.contains('/') || rest.find('@') < rest.find('/') => format!("***@{after}"),
        _ => rest.to_string(),
    };
    if scheme.is_empty() {
        rest
    } else {
        format!("{scheme}://{rest}")
    }
}

/// [`choose`] over the process environment.
pub fn from_env(mirror_url: &str) -> Result<Choice, ProxyError> {
    choose(mirror_url, &|n| std::env::var(n).ok())
}

/// The lower-cased host (IPv6 without brackets) and port of an http(s) url.
fn host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let default = if scheme.eq_ignore_ascii_case("https") { 443 } else { 80 };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        (h, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default,
    };
    (!host.is_empty()).then(|| (host.to_ascii_lowercase(), port))
}

/// Whether `host:port` matches a `NO_PROXY` list.
pub fn no_proxy_matches(list: &str, host: &str, port: u16) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let ip: Option<IpAddr> = host.parse().ok();
    list.split(',').map(str::trim).filter(|e| !e.is_empty()).any(|entry| {
        if entry == "*" {
            return true;
        }
        let (pattern, want_port) = split_entry_port(entry);
        if want_port.is_some_and(|p| p != port) {
            return false;
        }
        let pattern = pattern.to_ascii_lowercase();
        if let Some(ip) = ip {
            return ip_matches(&pattern, ip);
        }
        let name = pattern.trim_start_matches("*.").trim_start_matches('.').trim_end_matches('.');
        !name.is_empty()
            && (host == name
                || (host.len() > name.len() && host.ends_with(name) && host[..host.len() - name.len()].ends_with('.')))
    })
}

/// An entry and its `:port`, if any (`[v6]:port`, `name:port`, `v4:port`;
/// a bare IPv6 address or range has no port).
fn split_entry_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(v6) = entry.strip_prefix('[') {
        if let Some((h, after)) = v6.split_once(']') {
            return (h, after.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
    }
    match entry.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (entry, None),
        },
        _ => (entry, None),
    }
}

fn ip_matches(pattern: &str, ip: IpAddr) -> bool {
    let (addr, bits) = match pattern.split_once('/') {
        Some((a, b)) => match b.parse::<u32>() {
            Ok(b) => (a, Some(b)),
            Err(_) => return false,
        },
        None => (pattern, None),
    };
    let Ok(net) = addr.parse::<IpAddr>() else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => prefix_eq(u128::from(u32::from(n)), u128::from(u32::from(i)), 32, bits),
        (IpAddr::V6(n), IpAddr::V6(i)) => prefix_eq(u128::from(n), u128::from(i), 128, bits),
        _ => false,
    }
}

fn prefix_eq(net: u128, ip: u128, width: u32, bits: Option<u32>) -> bool {
    let bits = bits.unwrap_or(width);
    if bits > width {
        return false;
    }
    if bits == 0 {
        return true;
    }
    let shift = width - bits;
    (net >> shift) == (ip >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(table: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |n| table.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string())
    }

    fn chosen(url: &str, table: &'static [(&'static str, &'static str)]) -> String {
        match choose(url, &env(table)).unwrap_or_else(|e| panic!("{e}")) {
            Choice::Direct => "direct".into(),
            Choice::Bypassed { var } => format!("bypassed by {var}"),
            Choice::Proxy(p) => format!("{} from {}", p.display(), p.var),
        }
    }

    #[test]
    fn the_variable_for_the_mirrors_scheme_wins() {
        let all: &[(&str, &str)] = &[
            ("HTTPS_PROXY", "http://s.corp:3128"),
            ("HTTP_PROXY", "http://p.corp:8080"),
            ("ALL_PROXY", "http://a.corp:1"),
        ];
        assert_eq!(chosen("https://m.corp/x/", all), "http://s.corp:3128 from HTTPS_PROXY");
        assert_eq!(chosen("http://m.corp/x/", all), "http://p.corp:8080 from HTTP_PROXY");
        assert_eq!(chosen("https://m/", &[("https_proxy", "s:3128")]), "http://s:3128 from https_proxy");
        assert_eq!(
            chosen("https://m/", &[("HTTP_PROXY", "http://p:1"), ("all_proxy", "http://a:2")]),
            "http://a:2 from all_proxy"
        );
        assert_eq!(chosen("https://m/", &[("HTTP_PROXY", "http://p:1")]), "direct");
        assert_eq!(chosen("https://m/", &[("HTTPS_PROXY", "  ")]), "direct");
        assert_eq!(chosen("file:///srv/m", &[("ALL_PROXY", "http://a:2")]), "direct");
        let bad = choose("https://m/", &env(&[("HTTPS_PROXY", "socks5://s:1080")])).unwrap_err().to_string();
        assert!(bad.contains("HTTPS_PROXY") && bad.contains("http://host:port"), "{bad}");
        assert!(choose("https://m/", &env(&[("HTTPS_PROXY", "http://")])).is_err());
        let e = choose("https://m/", &env(&[("HTTPS_PROXY", "socks5://user:secret@s:1080")])).unwrap_err().to_string();
        assert!(!e.contains("secret") && e.contains("socks5://***@s:1080"), "{e}");
    }

    #[test]
    fn no_proxy_is_matched_against_the_mirror_host() {
        let t: &[(&str, &str)] =
            &[("HTTPS_PROXY", "http://s:3128"), ("NO_PROXY", "localhost, .corp.example,10.0.0.0/8")];
        assert_eq!(chosen("https://m.corp.example/x", t), "bypassed by NO_PROXY");
        assert_eq!(chosen("https://10.1.2.3:8443/", t), "bypassed by NO_PROXY");
        assert_eq!(chosen("https://mirror.example/", t), "http://s:3128 from HTTPS_PROXY");
        let t: &[(&str, &str)] = &[("HTTPS_PROXY", "http://s:3128"), ("no_proxy", "*")];
        assert_eq!(chosen("https://anything/", t), "bypassed by no_proxy");
    }

    #[test]
    fn no_proxy_entries() {
        let yes = [
            ("corp.example", "corp.example", 443),
            ("corp.example", "m.corp.example", 443),
            (".corp.example", "m.corp.example", 443),
            ("*.corp.example", "a.b.corp.example", 443),
            ("CORP.example", "corp.EXAMPLE.", 443),
            ("corp.example:8443", "corp.example", 8443),
            ("127.0.0.1", "127.0.0.1", 80),
            ("127.0.0.0/8", "127.9.9.9", 80),
            ("127.0.0.1:8080", "127.0.0.1", 8080),
            ("::1", "::1", 443),
            ("[::1]:443", "::1", 443),
            ("fd00::/8", "fd12::1", 443),
            ("0.0.0.0/0", "8.8.8.8", 443),
        ];
        for (list, host, port) in yes {
            assert!(no_proxy_matches(list, host, port), "{list} should match {host}:{port}");
        }
        let no = [
            ("corp.example", "evilcorp.example", 443),
            ("corp.example:8443", "corp.example", 443),
            ("127.0.0.1", "127.0.0.2", 80),
            ("127.0.0.0/33", "127.0.0.1", 80),
            ("10.0.0.0/8", "fd00::1", 80),
            ("example", "corp.example.com", 80),
            (".", "corp", 80),
            ("", "corp", 80),
        ];
        for (list, host, port) in no {
            assert!(!no_proxy_matches(list, host, port), "{list} should not match {host}:{port}");
        }
    }

    #[test]
    fn hosts_of_urls() {
        assert_eq!(host_port("https://M.corp/x"), Some(("m.corp".into(), 443)));
        assert_eq!(host_port("http://m:8080/"), Some(("m".into(), 8080)));
        assert_eq!(host_port("https://[::1]:9/"), Some(("::1".into(), 9)));
        assert_eq!(host_port("https://u:p@h/"), Some(("h".into(), 443)));
        assert_eq!(host_port("https:///x"), None);
    }
}
