//! Replays the fuzz seeds (`fuzz/seeds/<target>/`) and every input a fuzzer
//! once failed on (`fuzz/regressions/<target>/`) through the very entry
//! points the `fuzz/` targets call, under plain `cargo test`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../fuzz/src/format_harness.rs"]
mod format_harness;
#[path = "../../../fuzz/src/replay.rs"]
mod replay;

use replay::{inputs, replay};

use format_harness::{join_parts, split_parts, trusted};
use milspec_format::{read_package, Discard, Limits, Trust};

#[test]
fn text() {
    assert!(replay("text", format_harness::text) >= 3);
}

#[test]
fn modsig() {
    assert!(replay("modsig", format_harness::modsig) >= 2);
    // The seed is OpenSSL's `cms -sign -noattr -nocerts` output with the
    // kernel's trailer: it parses, naming its signer.
    let (_, signed) = inputs("seeds", "modsig").into_iter().find(|(p, _)| p.ends_with("signed")).unwrap();
    let sig = milspec_format::modsig::parse(&signed).unwrap().unwrap();
    assert_eq!((sig.issuer.as_str(), sig.signed_len, sig.digest.as_str()), ("Fleet modules", 17, "sha256"));
}

#[test]
fn manifest() {
    assert!(replay("manifest", format_harness::manifest) >= 3);
}

#[test]
fn package() {
    assert!(replay("package", format_harness::package) >= 3);
}

#[test]
fn package_signed() {
    assert!(replay("package_signed", format_harness::package_signed) >= 3);
}

#[test]
fn index() {
    assert!(replay("index", format_harness::index) >= 2);
}

#[test]
fn trust_doc() {
    assert!(replay("trust_doc", format_harness::trust_doc) >= 2);
}

/// The fuzzers start from valid inputs: every seed package and index
/// verifies against the fuzz key, so mutations begin past the signature check.
#[test]
fn seeds_verify_with_the_fuzz_key() {
    for (path, bytes) in inputs("seeds", "package") {
        let trust = Trust::Keys { keys: trusted(), threshold: 1 };
        let pkg = read_package(&bytes[..], trust, &Limits::DEFAULT, &mut Discard)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(pkg.signers.len(), 1, "{}", path.display());
    }
    for (path, bytes) in inputs("seeds", "index") {
        milspec_format::index::verify_index(&bytes, trusted(), 1).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    // Version 1 follows the fuzz key's version 0; version 2 follows 1.
    let docs = inputs("seeds", "trust_doc");
    assert_eq!(docs.len(), 2);
    let local = milspec_format::trust_doc::TrustSet::local(trusted(), 1);
    let v1 = milspec_format::trust_doc::accept_next(&local, &docs[0].1).unwrap();
    milspec_format::trust_doc::accept_next(&v1.set, &docs[1].1).unwrap();
}

/// The structured seeds split back into the manifest and payloads they
/// were made of, and rebuild into a package that verifies.
#[test]
fn structured_seeds_round_trip() {
    for (path, bytes) in inputs("seeds", "package_signed") {
        let parts = split_parts(&bytes);
        assert!(parts.len() >= 2, "{}: no payload part", path.display());
        let entries: Vec<(&str, &[u8])> = parts[1..]
            .iter()
            .map(|p| {
                let nl = p.iter().position(|&b| b == b'\n').unwrap();
                (std::str::from_utf8(&p[..nl]).unwrap(), &p[nl + 1..])
            })
            .collect();
        assert_eq!(join_parts(parts[0], &entries), bytes);
        let built = format_harness::build_signed(parts[0], &entries).unwrap();
        let trust = Trust::Keys { keys: trusted(), threshold: 1 };
        read_package(&built[..], trust, &Limits::DEFAULT, &mut Discard)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}
