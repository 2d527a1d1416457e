//! The `milspec-repo` binary itself: how it names itself and refuses a bad
//! command line. (Its commands are tested in daemon/tests/, which run this
//! binary: a workspace test run builds it because of this file.)
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn repo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_milspec-repo")).args(args).output().unwrap()
}

#[test]
fn names_its_version_and_commands() {
    let o = repo(&["--version"]);
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), format!("milspec-repo {}", env!("CARGO_PKG_VERSION")));
    let help = String::from_utf8_lossy(&repo(&["--help"]).stdout).into_owned();
    for cmd in ["keygen", "pack", "add-build", "publish", "refresh", "kernels"] {
        assert!(help.contains(cmd), "`{cmd}` missing from --help:\n{help}");
    }
}

#[test]
fn a_bad_command_line_is_a_usage_error_64_and_help_is_not() {
    for bad in [&["no-such-command"][..], &["pack", "--version", "1.0.0"], &["keygen", "--out", "k"], &[]] {
        let o = repo(bad);
        assert_eq!(o.status.code(), Some(64), "{bad:?}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(o.stdout.is_empty() && !o.stderr.is_empty(), "{bad:?}: usage errors go to stderr");
    }
    for ask in [&["--help"][..], &["keygen", "--help"], &["--version"]] {
        let o = repo(ask);
        assert_eq!(o.status.code(), Some(0), "{ask:?}");
        assert!(!o.stdout.is_empty(), "{ask:?}: help and version go to stdout");
    }
}

#[test]
fn keygen_makes_the_key_folder_mode_0700() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("keys/release");
    let o = repo(&["keygen", "--name", "rel", "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&out), 0o700);
    assert_eq!(mode(&out.join("rel.key")), 0o600);
    assert!(out.join("rel.pub").is_file());
    // An existing folder is used as it is, its mode kept.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o750)).unwrap();
    let o = repo(&["keygen", "--name", "rel", "--out", shared.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(mode(&shared), 0o750);
    // A path under a file cannot be made: an error, naming it.
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let o = repo(&["keygen", "--name", "rel", "--out", file.join("sub").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("file/sub"), "{}", String::from_utf8_lossy(&o.stderr));
}

mod republish {
    use std::collections::BTreeMap;
    use std::fs;
    use std::path::{Path, PathBuf};

    use milspec_format::index::{read_unverified, Index};
    use milspec_format::testkit::FakeKo;

    use super::repo;

    const OLD_KERNEL: &str = "6.12.111+deb12-amd64";
    const NEW_KERNEL: &str = "6.12.113+deb12-cloud-amd64";

    struct Work {
        dir: tempfile::TempDir,
    }

    impl Work {
        fn new() -> Self {
            let w = Work { dir: tempfile::tempdir().unwrap() };
            let o = w.run(&["keygen", "--out", w.s(""), "--name", "k"]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            w
        }
        fn p(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
        fn s(&self, name: &str) -> &'static str {
            // The paths live as long as the test; leaking keeps the calls short.
            Box::leak(self.p(name).to_string_lossy().into_owned().into_boxed_str())
        }
        fn run(&self, args: &[&str]) -> std::process::Output {
            repo(args)
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
        /// A fake 1.1.0 module built for `kernel`.
        fn ko(&self, kernel: &str) -> &'static str {
            let bytes = FakeKo { kernel_release: kernel, version: "1.1.0", ..FakeKo::default() }.build();
            let name = format!("{kernel}.ko");
            fs::write(self.p(&name), bytes).unwrap();
            self.s(&name)
        }
        fn pack(&self, out: &str, kernels: &[&str], extra: &[&str]) -> &'static str {
            let mut args = vec!["pack", "--version", "1.1.0", "--key", self.s("k.key"), "--out", self.s(out)];
            for k in kernels {
                args.extend(["--module", self.ko(k)]);
            }
            args.extend(extra);
            self.ok(&args);
            self.s(out)
        }
        fn publish(&self, pkg: &str, extra: &[&str]) -> std::process::Output {
            let mut args = vec!["publish", "--mirror", self.s("mirror"), "--key", self.s("k.key")];
            args.extend(extra);
            args.push(pkg);
            self.run(&args)
        }
        fn index(&self) -> Index {
            read_unverified(&fs::read(self.p("mirror/index.json")).unwrap()).unwrap()
        }
    }

    /// Every file under `dir` with its bytes.
    fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(snapshot(&p));
            } else {
                out.insert(p.clone(), fs::read(&p).unwrap());
            }
        }
        out
    }

    #[test]
    fn add_build_then_publish_replaces_the_entry_and_keeps_the_rollout() {
        let w = Work::new();
        let first = w.pack("first.mspkg", &[OLD_KERNEL], &["--param", "debug=0"]);
        assert!(w.publish(first, &["--waves", "1%,100%@1h"]).status.success());
        let before = w.index();
        let e0 = before.packages[0].clone();

        let out = w.ok(&[
            "add-build",
            "--package",
            first,
            "--module",
            w.ko(NEW_KERNEL),
            "--key",
            w.s("k.key"),
            "--out",
            w.s("second.mspkg"),
        ]);
        assert!(out.contains("2 payload(s), 1 added") && out.contains(NEW_KERNEL), "{out}");
        let o = w.publish(w.s("second.mspkg"), &[]);
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(stdout.contains("republished") && stdout.contains("rollout kept"), "{stdout}");

        let after = w.index();
        assert_eq!(after.version, before.version + 1);
        assert_eq!(after.packages.len(), 1);
        let e1 = &after.packages[0];
        assert_eq!((&e1.version, e1.sequence), (&e0.version, e0.sequence));
        assert_eq!(e1.kernel_releases, [OLD_KERNEL, NEW_KERNEL]);
        assert_eq!((e1.published, &e1.waves), (e0.published, &e0.waves), "a republish does not restart a rollout");
        assert_ne!(e1.path, e0.path);
        assert_ne!(e1.sha256, e0.sha256);
        assert_eq!(fs::read(w.p("mirror").join(&e1.path)).unwrap(), fs::read(w.p("second.mspkg")).unwrap());
        assert!(w.p("mirror").join(&e0.path).is_file(), "the old file stays for hosts downloading it");

        // Publishing the same republished package again changes nothing but the index version.
        assert!(w.publish(w.s("second.mspkg"), &[]).status.success());
        assert_eq!(w.index().packages, after.packages);

        // The listing.
        let lines = w.ok(&["kernels", "--mirror", w.s("mirror")]);
        assert_eq!(lines, format!("1.1.0 sequence 1001000000: 2 kernel(s): {OLD_KERNEL} {NEW_KERNEL}\n"));
        let json: serde_json::Value =
            serde_json::from_str(&w.ok(&["kernels", "--mirror", w.s("mirror"), "--json"])).unwrap();
        let schema_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/schema/mirror-kernels.schema.json");
        let schema: serde_json::Value = serde_json::from_str(&fs::read_to_string(schema_file).unwrap()).unwrap();
        let errors: Vec<String> = jsonschema::draft202012::new(&schema)
            .unwrap()
            .iter_errors(&json)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "kernels --json does not follow mirror-kernels.schema.json: {errors:?}\n{json:#}");
        assert_eq!(json["releases"][0]["sequence"], 1_001_000_000u64);
        assert_eq!(json["releases"][0]["kernel_releases"], serde_json::json!([OLD_KERNEL, NEW_KERNEL]));
    }

    #[test]
    fn add_build_refuses_a_kernel_it_has_and_a_package_that_does_not_parse() {
        let w = Work::new();
        let first = w.pack("first.mspkg", &[OLD_KERNEL], &[]);
        let key = w.s("k.key");
        let again = w.ko(OLD_KERNEL);
        let e = w.refused(&["add-build", "--package", first, "--module", again, "--key", key, "--out", w.s("o.mspkg")]);
        assert!(e.contains("already has a build for kernel") && e.contains(OLD_KERNEL), "{e}");
        let new = w.ko(NEW_KERNEL);
        let e = w.refused(&[
            "add-build",
            "--package",
            first,
            "--module",
            new,
            "--module",
            new,
            "--key",
            key,
            "--out",
            w.s("o.mspkg"),
        ]);
        assert!(e.contains("one module per kernel release"), "{e}");
        fs::write(w.p("junk.mspkg"), b"not a package").unwrap();
        let e = w.refused(&[
            "add-build",
            "--package",
            w.s("junk.mspkg"),
            "--module",
            new,
            "--key",
            key,
            "--out",
            w.s("o.mspkg"),
        ]);
        assert!(e.contains("not a package add-build can extend"), "{e}");
        let e = w.refused(&["add-build", "--package", first, "--module", new, "--key", key, "--out", first]);
        assert!(e.contains("--out must differ"), "{e}");
        assert!(!w.p("o.mspkg").exists(), "nothing written on a refusal");
    }

    #[test]
    fn a_bad_republish_is_refused_and_the_mirror_is_unchanged() {
        let w = Work::new();
        let first = w.pack("first.mspkg", &[OLD_KERNEL], &[]);
        assert!(w.publish(first, &[]).status.success());
        let before = snapshot(&w.p("mirror"));
        let cases: [(&str, &[&str], &[&str], &str); 3] = [
            ("params.mspkg", &[OLD_KERNEL, NEW_KERNEL], &["--param", "debug=1"], "`params` field differs"),
            ("seq.mspkg", &[OLD_KERNEL, NEW_KERNEL], &["--sequence", "7"], "`sequence` field differs"),
            ("same.mspkg", &[OLD_KERNEL], &[], "adds no kernel build"),
        ];
        for (name, kernels, extra, why) in cases {
            if name == "same.mspkg" {
                // A second apart, so the package differs from the first by `created` only.
                std::thread::sleep(std::time::Duration::from_millis(1100));
            }
            let pkg = w.pack(name, kernels, extra);
            let o = w.publish(pkg, &[]);
            let e = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{name} was published");
            assert!(e.contains("already on the mirror with different content") && e.contains(why), "{name}: {e}");
            assert!(snapshot(&w.p("mirror")) == before, "{name}: the mirror changed");
        }
    }

    #[test]
    fn a_republish_over_a_mirror_copy_that_no_longer_matches_its_entry_is_refused() {
        let w = Work::new();
        let first = w.pack("first.mspkg", &[OLD_KERNEL], &[]);
        assert!(w.publish(first, &[]).status.success());
        let key = w.s("k.key");
        let new = w.ko(NEW_KERNEL);
        w.ok(&["add-build", "--package", first, "--module", new, "--key", key, "--out", w.s("second.mspkg")]);
        // The mirror's copy replaced by another package of the same release.
        let held = w.p("mirror").join(&w.index().packages[0].path);
        fs::copy(w.p("second.mspkg"), &held).unwrap();
        let o = w.publish(w.s("second.mspkg"), &[]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && e.contains("does not match the sha256 the index lists"), "{e}");
    }
}
