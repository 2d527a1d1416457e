//! Fuzz entry points for `milspec-format`: the manifest, the package
//! reader (raw bytes, and a structured variant whose manifest is always
//! correctly signed), the mirror index and trust documents.
//!
//! Shared with `daemon/format/tests/fuzz_regressions.rs` through `#[path]`,
//! so it uses `milspec_format` only.

use std::io;
use std::path::Path;
use std::sync::OnceLock;

use milspec_format::index::{self, HostFacts, Index};
use milspec_format::package::{Header, MANIFEST_PATH, SIGNATURES_PATH};
use milspec_format::tarwrite::TarWriter;
use milspec_format::{
    read_package, Limits, Manifest, PackageError, Payload, PayloadSink, SecretKey, SignatureSet, Trust, TrustedKeys,
};
use time::OffsetDateTime;

/// The fuzzing key. Its secret is public on purpose: it signs seed
/// packages and the structured variant's manifests, and it is the only
/// key the harnesses trust.
pub const FUZZ_SECRET: &str = "milspec-ed25519-secret AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA= fuzz\n";

/// Separates the parts of a `package_signed` input.
pub const PART_SEP: &[u8] = b"\n=====\n";
/// Most parts read from a `package_signed` input.
const MAX_PARTS: usize = 40;

pub fn secret() -> &'static SecretKey {
    static KEY: OnceLock<SecretKey> = OnceLock::new();
    KEY.get_or_init(|| match SecretKey::parse(FUZZ_SECRET, Path::new("fuzz.key")) {
        Ok(k) => k,
        Err(e) => panic!("the built-in fuzz key does not parse: {e}"),
    })
}

pub fn trusted() -> &'static TrustedKeys {
    static KEYS: OnceLock<TrustedKeys> = OnceLock::new();
    KEYS.get_or_init(|| TrustedKeys::new([secret().public()]))
}

/// `manifest.json`: parse and validate; what parses must round-trip.
pub fn manifest(data: &[u8]) {
    let Ok(m) = Manifest::parse(data, &Limits::DEFAULT) else {
        return;
    };
    match Manifest::parse(&m.to_bytes(), &Limits::DEFAULT) {
        Ok(again) => assert_eq!(again, m, "a manifest changed across to_bytes/parse"),
        Err(e) => panic!("a valid manifest does not parse back after to_bytes: {e}"),
    }
}

/// A sink that checks the reader's contract: `start` once before any
/// payload, `begin`/`data`/`end` properly nested, the bytes handed over
/// adding up to the size the manifest states.
#[derive(Debug, Default)]
struct Checking {
    started: bool,
    open: Option<(String, u64)>,
    done: Vec<(String, u64)>,
}

impl PayloadSink for Checking {
    fn start(&mut self, _header: &Header<'_>) -> io::Result<()> {
        assert!(!self.started, "start called twice");
        self.started = true;
        Ok(())
    }

    fn begin(&mut self, payload: &Payload) -> io::Result<()> {
        assert!(self.started, "payload before start");
        assert!(self.open.is_none(), "begin inside an open payload");
        self.open = Some((payload.path.clone(), 0));
        Ok(())
    }

    fn data(&mut self, payload: &Payload, chunk: &[u8]) -> io::Result<()> {
        let Some((path, n)) = self.open.as_mut() else { panic!("data outside a payload") };
        assert_eq!(*path, payload.path);
        *n += chunk.len() as u64;
        assert!(*n <= payload.size, "more bytes than the manifest states for {path}");
        Ok(())
    }

    fn end(&mut self, payload: &Payload) -> io::Result<()> {
        let Some((path, n)) = self.open.take() else { panic!("end outside a payload") };
        assert_eq!(n, payload.size, "{path}: end before all bytes");
        self.done.push((path, n));
        Ok(())
    }
}

/// Reads `data` with `trust` and checks the sink saw exactly what an `Ok`
/// claims.
fn read_checked(data: &[u8], trust: Trust<'_>) -> Result<(), PackageError> {
    let mut sink = Checking::default();
    let pkg = read_package(data, trust, &Limits::DEFAULT, &mut sink)?;
    assert!(sink.started && sink.open.is_none());
    let want: Vec<(String, u64)> = pkg.manifest.payloads.iter().map(|p| (p.path.clone(), p.size)).collect();
    let mut got = sink.done.clone();
    got.sort();
    let mut want_sorted = want;
    want_sorted.sort();
    assert_eq!(got, want_sorted, "an accepted package must deliver every listed payload once");
    if matches!(trust, Trust::Keys { .. }) {
        assert!(!pkg.signers.is_empty(), "accepted under a key threshold with no signer");
    }
    Ok(())
}

/// The package reader over arbitrary bytes, with the fuzz key trusted
/// (signature path) and unverified (everything after it).
pub fn package(data: &[u8]) {
    let keyed = read_checked(data, Trust::Keys { keys: trusted(), threshold: 1 });
    let unverified = read_checked(data, Trust::Unverified);
    if keyed.is_ok() {
        assert!(unverified.is_ok(), "accepted with keys but refused unverified: {unverified:?}");
    }
}

/// Splits a `package_signed` input: the manifest bytes, then entries of
/// the form `path\ncontent`.
pub fn split_parts(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while parts.len() + 1 < MAX_PARTS {
        let Some(at) = rest.windows(PART_SEP.len()).position(|w| w == PART_SEP) else { break };
        parts.push(&rest[..at]);
        rest = &rest[at + PART_SEP.len()..];
    }
    parts.push(rest);
    parts
}

/// The inverse of [`split_parts`], for seeds.
pub fn join_parts(manifest: &[u8], entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = manifest.to_vec();
    for (path, content) in entries {
        out.extend_from_slice(PART_SEP);
        out.extend_from_slice(path.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(content);
    }
    out
}

/// Builds a package whose `signatures.json` holds a valid signature by
/// the fuzz key over the given manifest bytes, followed by the entries.
/// `None` if an entry path cannot go in a ustar header.
pub fn build_signed(manifest: &[u8], entries: &[(&str, &[u8])]) -> Option<Vec<u8>> {
    let mut sigs = SignatureSet::default();
    if let Err(e) = sigs.add(secret(), manifest) {
        panic!("cannot sign with the fuzz key: {e}");
    }
    let mut tar = TarWriter::new(Vec::new());
    tar.append(MANIFEST_PATH, manifest).ok()?;
    tar.append(SIGNATURES_PATH, &sigs.to_bytes()).ok()?;
    for (path, content) in entries {
        tar.append(path, content).ok()?;
    }
    tar.finish().ok()
}

/// The structured variant: arbitrary manifest bytes and entries, always
/// correctly signed, so the fuzzer reaches the payload checks that a
/// signature guards.
pub fn package_signed(data: &[u8]) {
    let parts = split_parts(data);
    let mut entries = Vec::new();
    for part in &parts[1..] {
        let (path, content) = match part.iter().position(|&b| b == b'\n') {
            Some(nl) => (&part[..nl], &part[nl + 1..]),
            None => (*part, &[][..]),
        };
        let Ok(path) = std::str::from_utf8(path) else { return };
        entries.push((path, content));
    }
    let Some(bytes) = build_signed(parts[0], &entries) else { return };
    let res = read_checked(&bytes, Trust::Keys { keys: trusted(), threshold: 1 });
    if let Err(PackageError::Signature(e)) = &res {
        panic!("a correctly signed manifest was refused on its signature: {e}");
    }
    if Manifest::parse(parts[0], &Limits::DEFAULT).is_err() {
        assert!(res.is_err(), "a package with an invalid manifest was accepted");
    }
}

/// Instants at which the pure index decisions are taken.
fn clocks(index: &Index) -> Vec<OffsetDateTime> {
    let mut v = vec![OffsetDateTime::UNIX_EPOCH, index.created, index.expires];
    v.extend(index.created.checked_sub(time::Duration::days(2)));
    v.extend(index.expires.checked_add(time::Duration::days(400)));
    v.extend(index.packages.iter().map(|e| e.published));
    v
}

/// The mirror index: envelope and signature check, then parse, round trip,
/// re-signing, and every pure decision taken on it (expiry, waves, choice
/// of an entry) at several clock readings.
pub fn index(data: &[u8]) {
    if let Ok(v) = index::verify_index(data, trusted(), 1) {
        assert!(!v.signers.is_empty());
    }
    let Ok(index) = index::read_unverified(data) else {
        return;
    };
    match Index::parse(&index.to_text()) {
        Ok(again) => assert_eq!(again, index, "an index changed across to_text/parse"),
        Err(e) => panic!("a valid index does not parse back after to_text: {e}"),
    }
    match index.sign(std::slice::from_ref(secret())).map(|b| index::verify_index(&b, trusted(), 1)) {
        Ok(Ok(v)) => assert_eq!(v.index, index),
        Ok(Err(e)) | Err(e) => panic!("a valid index does not verify after signing: {e}"),
    }
    let release = index.packages.first().and_then(|e| e.kernel_releases.first()).map_or("6.1.0-fuzz", String::as_str);
    let revoked = index.revoked.first();
    for now in clocks(&index) {
        let _ = index.check_expiry(now);
        for e in &index.packages {
            let f = e.fraction_at(now);
            assert!((0.0..=1.0).contains(&f), "fraction {f} out of [0, 1]");
            let _ = e.next_wave(now);
            for pos in [0.0, 0.5, 0.999_999] {
                let _ = e.admits_from(pos);
                let _ = e.reached(pos, now);
            }
        }
        for current in [None, revoked.map(|v| (v, 1)), index.packages.first().map(|e| (&e.version, e.sequence))] {
            let host = HostFacts {
                kernel_release: release,
                machine_id: "fuzz-machine",
                now,
                blocklist: &[],
                max_sequence: 0,
                current,
                ignore_waves: false,
            };
            let _ = index::select(&index, &host);
            let _ = index::select(&index, &HostFacts { ignore_waves: true, ..host });
        }
    }
}

/// A trust document: the rotation rule against a host holding the fuzz
/// key (version 0), the self check, parse round trip, adding a signature,
/// and expiry at several clocks.
pub fn trust_doc(data: &[u8]) {
    use milspec_format::trust_doc::{self, TrustDoc, TrustSet};
    let local = TrustSet::local(trusted(), 1);
    if let Ok(v) = trust_doc::accept_next(&local, data) {
        assert_eq!(v.set.version, 1, "version 0 accepted something other than version 1");
        assert!(!v.signers.is_empty());
        match trust_doc::verify_self(data) {
            Ok(again) => assert_eq!(again.doc, v.doc),
            Err(e) => panic!("an accepted document fails its self check: {e}"),
        }
    }
    let Ok((env, doc)) = trust_doc::read_unverified(data) else {
        return;
    };
    match TrustDoc::parse(&doc.to_text()) {
        Ok((again, _)) => assert_eq!(again, doc, "a trust document changed across to_text/parse"),
        Err(e) => panic!("a valid trust document does not parse back after to_text: {e}"),
    }
    if let Ok(more) = trust_doc::add_signature(data, secret()) {
        match trust_doc::read_unverified(&more) {
            Ok((env2, doc2)) => {
                assert_eq!(doc2, doc);
                assert_eq!(env2.signatures.len(), env.signatures.len() + 1);
            }
            Err(e) => panic!("a signed document no longer reads: {e}"),
        }
    }
    let keys = match doc.validate() {
        Ok(k) => k,
        Err(e) => panic!("a parsed document fails validation: {e}"),
    };
    let set = doc.to_set(&keys);
    for now in [OffsetDateTime::UNIX_EPOCH, doc.expires.unwrap_or(OffsetDateTime::UNIX_EPOCH)] {
        let _ = set.check_expiry(now);
    }
    let _ = trust_doc::accept_next(&set, data);
}

/// The sanitiser: on any bytes, its output is printable (nothing it would
/// escape), holds no NUL, is within the bound, and sanitising it again
/// changes nothing.
pub fn text(data: &[u8]) {
    use milspec_format::text::{is_clean, sanitize_bytes, sanitize_to};
    let max = 24 + usize::from(data.first().copied().unwrap_or(0)) * 4;
    let s = sanitize_bytes(data, max);
    assert!(is_clean(&s) && !s.contains('\0'), "{s:?}");
    assert!(s.chars().count() <= max, "{} > {max}", s.chars().count());
    assert_eq!(sanitize_to(&s, max), s, "not idempotent");
    if let Ok(t) = std::str::from_utf8(data) {
        let s = sanitize_to(t, max);
        assert!(is_clean(&s) && s.chars().count() <= max);
        assert_eq!(sanitize_to(&s, max), s);
        // Clean text within the bound passes unchanged.
        if is_clean(t) && t.chars().count() <= max {
            assert_eq!(s, t);
        }
    }
}

/// A module's appended signature, from any bytes: refused or parsed, never
/// a panic; what it parses is bounded, printable and covers a prefix.
pub fn modsig(data: &[u8]) {
    use milspec_format::modsig::{parse, MAX_NAME_LEN};
    use milspec_format::text::is_clean;
    if let Ok(Some(sig)) = parse(data) {
        assert!(sig.signed_len < data.len());
        assert!(is_clean(&sig.issuer) && sig.issuer.len() <= MAX_NAME_LEN, "{:?}", sig.issuer);
        assert!(sig.serial.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
