//! Fuzz entry points for the daemon's own parsers: `/proc/milspec/status`,
//! kernel log records with the fault matcher, and the TOML config.
//!
//! Shared with `daemon/tests/fuzz_regressions.rs` through `#[path]`, so it
//! uses the `milspecd` library only.

use std::path::Path;

use milspecd::config::Config;
use milspecd::health::kmsg::{parse_record, FaultMatcher};
use milspecd::health::status;

/// Most lines fed to the fault matcher from one input.
const MAX_LINES: usize = 4096;
/// Upper bound on a fault reason: two bounded lines (300 characters of up
/// to 4 bytes, and an ellipsis) and a separator.
const MAX_REASON: usize = 2 * (300 * 4 + 3) + 2;

/// `/proc/milspec/status` text.
pub fn status(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(s) = status::parse(text) else {
        return;
    };
    assert!(text.len() <= status::MAX_STATUS);
    let failed = s.state == status::ModuleState::Failed || s.selftest == status::Selftest::Fail;
    assert_eq!(s.is_failed(), failed);
}

/// One raw `/dev/kmsg` record, then the input split into lines as a file
/// or FIFO source is, each parsed and fed to the fault matcher.
pub fn kmsg(data: &[u8]) {
    if let Some(r) = parse_record(data) {
        assert!(r.level <= 7);
    }
    let mut matcher = FaultMatcher::new("dell_milspec");
    for line in data.split(|&b| b == b'\n').take(MAX_LINES) {
        if let Some(reason) = parse_record(line).and_then(|r| matcher.feed(&r)) {
            assert!(reason.len() <= MAX_REASON, "fault reason of {} bytes", reason.len());
        }
        if let Ok(text) = std::str::from_utf8(line) {
            if let Some(reason) = matcher.feed_line(text) {
                assert!(reason.len() <= MAX_REASON, "fault reason of {} bytes", reason.len());
            }
        }
    }
}

/// `milspecd.toml`: parse and validate; what is accepted must survive
/// `to_toml` (what `milspecd config` prints) and parse back the same.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    let Ok(cfg) = Config::parse(text, path) else {
        return;
    };
    match Config::parse(&cfg.to_toml(), path) {
        Ok(again) => assert_eq!(again, cfg, "a config changed across to_toml/parse"),
        Err(e) => panic!("a valid config does not parse back after to_toml: {e}"),
    }
}

/// Checks that `s`, zvariant-encoded as the D-Bus string a reply carries,
/// is a valid D-Bus string: valid UTF-8, no NUL inside, at most `max`
/// characters, nothing the sanitiser would escape; and that it decodes back
/// unchanged.
pub fn assert_valid_dbus_string(s: &str, max: usize) {
    use zbus::zvariant::{serialized::Context, to_bytes, LE};
    let encoded = to_bytes(Context::new_dbus(LE, 0), &s).expect("a string always encodes");
    let bytes: &[u8] = &encoded;
    let len = u32::from_le_bytes(bytes[..4].try_into().expect("a length prefix")) as usize;
    let body = &bytes[4..4 + len];
    assert_eq!(bytes[4 + len], 0, "a D-Bus string ends with one NUL");
    assert!(!body.contains(&0), "NUL inside a D-Bus string: {s:?}");
    let text = std::str::from_utf8(body).expect("a D-Bus string is UTF-8");
    assert!(text.chars().count() <= max, "{} characters, more than {max}", text.chars().count());
    assert!(milspec_format::text::is_clean(text), "unescaped control or formatting character in {text:?}");
    let (back, _): (String, _) = encoded.deserialize().expect("decodes");
    assert_eq!(back, s);
}

/// Untrusted bytes through the error paths a D-Bus reply is made from:
/// the package reader, `signatures.json`, the manifest and the index, each
/// error wrapped as the service wraps it (`ManagerError`, escaped), then
/// encoded as an error reply's message and as `LastError`.
pub fn dbus_error(data: &[u8]) {
    use milspec_format::{Limits, Manifest, SignatureSet, Trust};
    use milspecd::dbus::service::Clean;
    use milspecd::dbus::ManagerError;
    use milspecd::worker::ActionError;

    let limits = Limits::default();
    let mut texts = Vec::new();
    if let Err(e) = milspec_format::read_package(data, Trust::Unverified, &limits, &mut milspec_format::Discard) {
        texts.push(format!("package rejected: {e}"));
    }
    if let Err(e) = SignatureSet::parse(data, &limits) {
        texts.push(e.to_string());
    }
    if let Err(e) = Manifest::parse(data, &limits) {
        texts.push(e.to_string());
    }
    if let Err(e) = milspec_format::index::verify_index(data, &milspec_format::TrustedKeys::new([]), 1) {
        texts.push(e.to_string());
    }
    // The input itself, as a reason that reached the engine some other way
    // (kernel log, check output).
    texts.push(String::from_utf8_lossy(data).into_owned());
    for t in texts {
        for e in
            [ActionError::InvalidPackage(t.clone()), ActionError::Rejected(t.clone()), ActionError::Failed(t.clone())]
        {
            let m = ManagerError::from(e).clean();
            let msg = match &m {
                ManagerError::InvalidPackage(s) | ManagerError::Rejected(s) | ManagerError::Failed(s) => s.clone(),
                other => panic!("unexpected {other:?}"),
            };
            assert_valid_dbus_string(&msg, milspec_format::text::MAX_TEXT);
        }
        assert_valid_dbus_string(&t.clean(), milspec_format::text::MAX_TEXT);
    }
}

/// `history.jsonl` lines as `History` reads them and returns them over
/// D-Bus: each string of each dict must be a valid D-Bus string, and the
/// whole `aa{ss}` must encode.
pub fn dbus_history(data: &[u8]) {
    use milspecd::history::Event;
    use zbus::zvariant::{serialized::Context, to_bytes, LE};
    let events: Vec<Event> = data.split(|&b| b == b'\n').take(64).filter_map(Event::parse_line).collect();
    let maps = milspecd::dbus::service::history_maps(events);
    for m in &maps {
        for (k, v) in m {
            assert_valid_dbus_string(k, milspec_format::text::MAX_TEXT);
            assert_valid_dbus_string(v, milspec_format::text::MAX_TEXT);
        }
    }
    to_bytes(Context::new_dbus(LE, 0), &maps).expect("the History reply encodes");
}

/// `history.jsonl` lines fed to the chain's verifier as `history --verify`
/// and `VerifyHistory` do: it never panics, a verdict always comes, and
/// what it says (the reply's `message`, the text `--verify` prints) is a
/// valid D-Bus string.
pub fn history_chain(data: &[u8]) {
    use milspecd::history::chain::{ChainVerifier, Verdict};
    let mut v = ChainVerifier::new();
    for (i, line) in data.split(|&b| b == b'\n').take(256).enumerate() {
        v.feed("history.jsonl", i as u64 + 1, line);
    }
    let verdict = v.finish();
    if let Verdict::Broken(b) = &verdict {
        assert!(b.line >= 1 && b.line <= 256, "{b:?}");
    }
    assert_valid_dbus_string(&verdict.to_string(), usize::MAX);
}
