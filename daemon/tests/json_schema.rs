//! Every `--json` output of `milspecd` checked against its JSON Schema in
//! `docs/schema/` (docs/json.md), on the fake kernel of a `fake-kernel`
//! build: install (committed, invalid package, failed), check (a real
//! `file://` mirror), prepare-kernel and the offline status.
#![cfg(feature = "fake-kernel")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod schema_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use schema_support::assert_valid;

struct Host {
    f: Fixture,
    key: PathBuf,
    conf: PathBuf,
}

impl Host {
    fn new() -> Host {
        let f = Fixture::new();
        let key = f.key("release", true);
        let conf = f.path("milspecd.toml");
        fs::write(
            &conf,
            f.daemon_config("1s") + &format!("[source]\nurl = \"file://{}\"\n", f.path("mirror").display()),
        )
        .unwrap();
        Host { f, key, conf }
    }

    fn milspecd(&self, args: &[&str]) -> Output {
        daemon()
            .args(args)
            .arg("--config")
            .arg(&self.conf)
            .env("MILSPECD_FAKE_KERNEL", "1")
            .env("MILSPECD_FAKE_RELEASE", RELEASE)
            .output()
            .unwrap()
    }

    fn publish(&self, pkg: &Path) {
        repo()
            .args(["publish", "--mirror"])
            .arg(self.f.path("mirror"))
            .arg("--key")
            .arg(&self.key)
            .arg(pkg)
            .assert()
            .success();
    }
}

/// `out`'s stdout as one JSON value, valid against `schema`; its exit code
/// is `code` and the object says so.
fn json_of(what: &str, out: &Output, schema: &str, code: i32) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(code), "{what}: {text}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not one JSON value ({e}): {text}"));
    assert_valid(schema, &v, what);
    if schema == "outcome" {
        assert_eq!(v["exit_code"], code, "{what}: {v}");
    }
    v
}

#[test]
fn every_milspecd_json_output_follows_its_schema() {
    let h = Host::new();
    // Offline status of a host that never ran: nothing is created.
    let v = json_of("status (fresh)", &h.milspecd(&["status", "--json"]), "status", 0);
    assert_eq!((v["daemon"].as_str(), v["committed_version"].as_null()), (Some("not-running"), Some(())), "{v}");
    assert!(!h.f.path("state/slots").exists(), "status created the slots folder");

    let pkg = h.f.pack("1.1.0", &[&h.key], "1.1.0.mspkg");
    let v = json_of("install", &h.milspecd(&["install", "--json", pkg.to_str().unwrap()]), "outcome", 0);
    assert_eq!((v["outcome"].as_str(), v["version"].as_str()), (Some("committed"), Some("1.1.0")), "{v}");

    let junk = h.f.path("junk.mspkg");
    fs::write(&junk, b"not a package").unwrap();
    let v = json_of("install junk", &h.milspecd(&["install", "--json", junk.to_str().unwrap()]), "outcome", 2);
    assert_eq!(v["outcome"], "rejected", "{v}");
    assert!(v["reason"].as_str().unwrap().starts_with("invalid package: "), "{v}");

    let missing = h.f.path("missing.mspkg");
    let v = json_of("install missing", &h.milspecd(&["install", "--json", missing.to_str().unwrap()]), "outcome", 1);
    assert_eq!(v["outcome"], "failed", "{v}");
    assert!(v["message"].as_str().unwrap().contains("missing.mspkg"), "{v}");

    let v = json_of("status", &h.milspecd(&["status", "--json"]), "status", 0);
    assert_eq!((v["committed_version"].as_str(), v["kernel_build"].as_str()), (Some("1.1.0"), Some("ready")), "{v}");
    assert_eq!(v["slots"].as_array().unwrap().len(), 2, "{v}");

    h.publish(&pkg);
    let v = json_of("check", &h.milspecd(&["check", "--json"]), "outcome", 0);
    assert_eq!(v["outcome"], "up-to-date", "{v}");
    let pkg2 = h.f.pack("1.2.0", &[&h.key], "1.2.0.mspkg");
    h.publish(&pkg2);
    let v = json_of("check (new)", &h.milspecd(&["check", "--json", "--now"]), "outcome", 0);
    assert_eq!((v["outcome"].as_str(), v["version"].as_str()), (Some("committed"), Some("1.2.0")), "{v}");

    let v = json_of("prepare-kernel", &h.milspecd(&["prepare-kernel", "--json", RELEASE]), "outcome", 0);
    assert_eq!((v["outcome"].as_str(), v["kernel"].as_str()), (Some("kernel-ready"), Some(RELEASE)), "{v}");

    // The host's module-signing policy: nothing readable, then a tree that
    // enforces signatures through lockdown.
    let v = json_of("policy (bare)", &h.milspecd(&["policy", "--json"]), "host-policy", 0);
    assert_eq!(v["enforcement"]["kind"], "unknown", "{v}");
    let root = h.f.path("root");
    let put = |rel: &str, b: &[u8]| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b).unwrap();
    };
    put("sys/kernel/security/lockdown", b"none [integrity] confidentiality\n");
    put("sys/module/module/parameters/sig_enforce", b"N\n");
    put(
        "proc/keys",
        b"11111111 I------     1 perm 1f010000     0     0 asymmetri Fleet CA: 00aabb: X509.rsa aabb []\n",
    );
    let v = json_of("policy", &h.milspecd(&["policy", "--json"]), "host-policy", 0);
    assert_eq!(
        (v["enforcement"]["kind"].as_str(), v["enforcement"]["mode"].as_str()),
        (Some("lockdown"), Some("integrity")),
        "{v}"
    );
    assert_eq!(v["keys"][0]["skid"], "00aabb", "{v}");

    // The compliance report: a Secure Boot host locked down, with a MOK
    // key in `.machine`, the committed build live.
    put("sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c", &[6, 0, 0, 0, 1]);
    put(
        "proc/keys",
        b"0b1c2d3e I------     1 perm 1f0f0000     0     0 keyring   .machine: 1\n\
          33333333 I------     1 perm 1f010000     0     0 asymmetri Fleet modules: a1b2c3: X509.rsa b2c3 []\n",
    );
    put("proc/sys/kernel/tainted", b"12289\n");
    put("sys/class/dmi/id/product_name", b"Latitude 7330 Rugged\x1b[2J\n");
    let v = json_of("report", &h.milspecd(&["report", "--json"]), "report", 0);
    assert_eq!(v["module_signing"]["enforcement"]["kind"], "lockdown", "{v}");
    assert_eq!(v["module_signing"]["keyrings"][0]["name"], ".machine", "{v}");
    assert_eq!(v["module_signing"]["secure_boot"], true, "{v}");
    let letters: Vec<&str> =
        v["taint"]["flags"].as_array().unwrap().iter().map(|f| f["letter"].as_str().unwrap()).collect();
    assert_eq!(letters, ["P", "O", "E"], "{v}");
    assert_eq!(v["host"]["product_name"], "Latitude 7330 Rugged\\x1b[2J", "{v}");
    assert_eq!((v["committed"]["version"].as_str(), v["committed"]["slot"].is_string()), (Some("1.2.0"), true), "{v}");
    assert_eq!(v["committed"]["running_kernel_build"], true, "{v}");
    assert_eq!(v["package_trust"]["keys"].as_array().map(Vec::len), Some(1), "{v}");
    let m = &v["live_module"];
    assert_eq!((m["loaded"].as_bool(), m["version"].as_str()), (Some(true), Some("1.2.0")), "{v}");
    assert_eq!((m["committed_build"].as_bool(), m["file_matches"].as_bool()), (Some(true), Some(true)), "{v}");
    assert_eq!(m["sha256"].as_str().map(str::len), Some(64), "{v}");
    let text = h.milspecd(&["report"]);
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("secure boot:    on\n") && text.contains("taint flag:     P (bit 0): "), "{text}");
    assert!(!text.contains('\x1b'), "{text}");

    // The history as written is what the history-event schema describes,
    // once milspecctl shows it (the daemon's own file has no schema key).
    let hist = fs::read_to_string(h.f.path("state/history.jsonl")).unwrap();
    assert!(hist.lines().count() >= 4, "{hist}");
}
