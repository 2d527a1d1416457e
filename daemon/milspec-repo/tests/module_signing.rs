//! Kernel module signing: `mok-keygen`, `sign-module` and `pack
//! --module-cert/--module-key`, checked with what reads them elsewhere:
//! OpenSSL's CMS verifier, `modinfo`, and the package reader.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use milspec_format::modsig;
use milspec_format::testkit::FakeKo;

const KERNEL: &str = "6.12.113+deb12-cloud-amd64";

struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Self {
        Work { dir: tempfile::tempdir().unwrap() }
    }
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn s(&self, name: &str) -> String {
        self.p(name).to_string_lossy().into_owned()
    }
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_milspec-repo")).args(args).output().unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    fn refused(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(!o.status.success(), "{args:?} should fail: {}", String::from_utf8_lossy(&o.stdout));
        String::from_utf8_lossy(&o.stderr).into_owned()
    }
    fn mok(&self, name: &str, subject: &str) {
        self.ok(&["mok-keygen", "--out", &self.s("keys"), "--name", name, "--subject", subject]);
    }
    fn ko(&self, name: &str) -> String {
        let bytes = FakeKo { kernel_release: KERNEL, version: "1.1.0", ..FakeKo::default() }.build();
        fs::write(self.p(name), bytes).unwrap();
        self.s(name)
    }
}

fn openssl(args: &[&str]) -> std::process::Output {
    Command::new("openssl").args(args).output().expect("openssl is installed (the test command installs it)")
}

/// The module's PKCS#7 blob and the bytes it covers.
fn split(signed: &[u8]) -> (&[u8], &[u8]) {
    let sig = modsig::parse(signed).unwrap().unwrap();
    let info_at = signed.len() - modsig::MAGIC.len() - modsig::INFO_LEN;
    (&signed[..sig.signed_len], &signed[sig.signed_len..info_at])
}

#[test]
fn mok_keygen_makes_a_module_signing_certificate() {
    use std::os::unix::fs::PermissionsExt;
    let w = Work::new();
    let out = w.ok(&["mok-keygen", "--out", &w.s("keys"), "--name", "fleet", "--subject", "Fleet modules"]);
    assert!(out.contains("mokutil --import"), "{out}");
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&w.p("keys/fleet.key")), 0o600);
    let text = openssl(&["x509", "-in", &w.s("keys/fleet.pem"), "-noout", "-text"]);
    let text = String::from_utf8_lossy(&text.stdout);
    for want in ["CN = Fleet modules", "Code Signing", "1.3.6.1.4.1.2312.16.1.2", "CA:FALSE", "Subject Key Identifier"]
    {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    // The DER file is the same certificate.
    let der = openssl(&["x509", "-inform", "DER", "-in", &w.s("keys/fleet.der"), "-noout", "-subject"]);
    assert!(String::from_utf8_lossy(&der.stdout).contains("Fleet modules"));
    // Never over an existing key.
    let e = w.refused(&["mok-keygen", "--out", &w.s("keys"), "--name", "fleet"]);
    assert!(e.contains("exists"), "{e}");
    let e = w.refused(&["mok-keygen", "--out", &w.s("keys"), "--name", "x", "--subject", "bad,name=1"]);
    assert!(e.contains("--subject"), "{e}");
}

#[test]
fn sign_module_writes_what_openssl_and_modinfo_read() {
    let w = Work::new();
    w.mok("fleet", "Fleet modules");
    let ko = w.ko("m.ko");
    let unsigned = fs::read(&ko).unwrap();
    let out = w.ok(&[
        "sign-module",
        "--cert",
        &w.s("keys/fleet.pem"),
        "--key",
        &w.s("keys/fleet.key"),
        "--out",
        &w.s("signed.ko"),
        &ko,
    ]);
    assert!(out.contains("Fleet modules"), "{out}");
    let signed = fs::read(w.p("signed.ko")).unwrap();
    assert!(signed.starts_with(&unsigned) && signed.ends_with(modsig::MAGIC));
    let sig = modsig::parse(&signed).unwrap().unwrap();
    assert_eq!((sig.signed_len, sig.issuer.as_str(), sig.digest.as_str()), (unsigned.len(), "Fleet modules", "sha256"));

    // A detached CMS signature over the module, by the certificate.
    let (body, blob) = split(&signed);
    fs::write(w.p("body"), body).unwrap();
    fs::write(w.p("sig.p7"), blob).unwrap();
    let v = openssl(&[
        "cms",
        "-verify",
        "-binary",
        "-inform",
        "DER",
        "-in",
        &w.s("sig.p7"),
        "-content",
        &w.s("body"),
        "-certfile",
        &w.s("keys/fleet.pem"),
        "-CAfile",
        &w.s("keys/fleet.pem"),
        "-purpose",
        "any",
        "-out",
        "/dev/null",
    ]);
    assert!(v.status.success(), "openssl cms -verify: {}", String::from_utf8_lossy(&v.stderr));
    // No signed attributes: the kernel refuses module signatures with them.
    let dump = openssl(&["cms", "-cmsout", "-print", "-inform", "DER", "-in", &w.s("sig.p7")]);
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains("signedAttrs:\n") && dump.contains("<ABSENT>"), "{dump}");

    // modinfo names the signer, as it does for sign-file's output.
    if let Ok(o) = Command::new("modinfo").args(["-F", "signer", &w.s("signed.ko")]).output() {
        let shown = String::from_utf8_lossy(&o.stdout);
        assert_eq!(shown.trim(), "Fleet modules", "modinfo: {}", String::from_utf8_lossy(&o.stderr));
    }

    // Signing again with the same certificate keeps it; another refuses.
    w.ok(&["sign-module", "--cert", &w.s("keys/fleet.pem"), "--key", &w.s("keys/fleet.key"), &w.s("signed.ko")]);
    assert_eq!(fs::read(w.p("signed.ko")).unwrap(), signed);
    w.mok("other", "Other modules");
    let e = w.refused(&[
        "sign-module",
        "--cert",
        &w.s("keys/other.pem"),
        "--key",
        &w.s("keys/other.key"),
        &w.s("signed.ko"),
    ]);
    assert!(e.contains("signed already"), "{e}");
    // A key that is not the certificate's.
    let e = w.refused(&["sign-module", "--cert", &w.s("keys/fleet.pem"), "--key", &w.s("keys/other.key"), &ko]);
    assert!(e.contains("does not belong"), "{e}");
    assert_eq!(fs::read(&ko).unwrap(), unsigned, "a refused signing changes nothing");
}

#[test]
fn an_external_signer_makes_the_same_signature() {
    let w = Work::new();
    w.mok("fleet", "Fleet modules");
    let ko = w.ko("m.ko");
    let (cert, key) = (w.s("keys/fleet.pem"), w.s("keys/fleet.key"));
    w.ok(&["sign-module", "--cert", &cert, "--key", &key, "--out", &w.s("a.ko"), &ko]);
    let cmd = format!("openssl dgst -sha256 -sign '{key}'");
    w.ok(&["sign-module", "--cert", &cert, "--signer-cmd", &cmd, "--out", &w.s("b.ko"), &ko]);
    // RSA PKCS#1 v1.5 is deterministic: the same bytes.
    assert_eq!(fs::read(w.p("a.ko")).unwrap(), fs::read(w.p("b.ko")).unwrap());
    // A signer that fails, or signs with another key, is refused.
    let e = w.refused(&["sign-module", "--cert", &cert, "--signer-cmd", "exit 3", &ko]);
    assert!(e.contains("failed"), "{e}");
    w.mok("other", "Other");
    let cmd = format!("openssl dgst -sha256 -sign '{}'", w.s("keys/other.key"));
    let e = w.refused(&["sign-module", "--cert", &cert, "--signer-cmd", &cmd, &ko]);
    assert!(e.contains("does not verify"), "{e}");
}

#[test]
fn pack_signs_modules_and_records_the_signer() {
    let w = Work::new();
    w.ok(&["keygen", "--out", &w.s("pkg"), "--name", "k"]);
    w.mok("fleet", "Fleet modules");
    let ko = w.ko("m.ko");
    let pack = |extra: &[&str], out: &str| {
        let mut args = vec!["pack".to_string(), "--version".into(), "1.1.0".into(), "--key".into(), w.s("pkg/k.key")];
        args.extend(["--module".into(), ko.clone(), "--out".into(), w.s(out)]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        w.run(&args)
    };
    let o = pack(&["--module-cert", &w.s("keys/fleet.pem"), "--module-key", &w.s("keys/fleet.key")], "p.mspkg");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let pkg = milspec_format::read_package_file(
        &w.p("p.mspkg"),
        milspec_format::Trust::Unverified,
        &milspec_format::Limits::default(),
        &mut milspec_format::Discard,
    )
    .unwrap();
    let signer = pkg.manifest.payloads[0].module_signer.clone().expect("the signer is recorded");
    assert_eq!(signer.name, "Fleet modules");
    let text = openssl(&["x509", "-in", &w.s("keys/fleet.pem"), "-noout", "-ext", "subjectKeyIdentifier"]);
    let skid = String::from_utf8_lossy(&text.stdout).lines().nth(1).unwrap().trim().replace(':', "").to_lowercase();
    assert_eq!(signer.key_id, skid, "the key id is the certificate's subject key id");
    let manifest: serde_json::Value = serde_json::from_slice(&pkg.manifest_bytes).unwrap();
    assert_eq!(manifest["optional"], serde_json::json!(["module_signer"]));

    // An unsigned module with the certificate only: refused, no package.
    let o = pack(&["--module-cert", &w.s("keys/fleet.pem")], "q.mspkg");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no key was given"));
    assert!(!w.p("q.mspkg").exists());
    // A module signed already by the certificate: recorded as it is.
    w.ok(&["sign-module", "--cert", &w.s("keys/fleet.pem"), "--key", &w.s("keys/fleet.key"), &ko]);
    let o = pack(&["--module-cert", &w.s("keys/fleet.pem")], "r.mspkg");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
