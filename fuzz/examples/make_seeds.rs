//! Writes the seed corpora under `fuzz/seeds/<target>/` from real parts:
//! packages made by the publisher's own `pack` from module look-alikes,
//! a mirror index signed like `milspec-repo publish` does, the recorded
//! `/proc/milspec/status` and kernel log fixtures, and configs as
//! `milspecd config` prints them. Signed with the fuzz key.
//!
//! cargo run --manifest-path fuzz/Cargo.toml --example make_seeds

use std::collections::BTreeMap;
use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

use milspec_format::index::{Index, IndexEntry, Wave};
use milspec_format::manifest::Probation;
use milspec_format::testkit::FakeKo;
use milspec_format::writer::{self, PackOptions};
use milspec_format::{Limits, SecretKey, Sha256Digest};
use milspecd::config::{Config, SourceConfig};
use milspecd_fuzz::format_harness::{join_parts, secret, FUZZ_SECRET};
use time::OffsetDateTime;

/// A second key, for a package with two signatures.
const SECOND_SECRET: &str = "milspec-ed25519-secret ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8= second\n";

type Res<T> = Result<T, Box<dyn Error>>;

fn put(root: &Path, target: &str, name: &str, bytes: &[u8]) -> Res<()> {
    let dir = root.join(target);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join(name), bytes)?;
    Ok(())
}

/// Trust document version 1 (the fuzz key for the trust and index roles,
/// both keys for packages, expiring after a year), and version 2 after it
/// (both keys, two of them, for the trust role; a compromised key id).
fn trust_docs(fuzz: &SecretKey, second: &SecretKey, created: OffsetDateTime) -> Res<(Vec<u8>, Vec<u8>)> {
    use milspec_format::trust_doc::{Role, Roles, TrustDoc};
    let one = Role { keyids: vec![fuzz.public().id()], threshold: 1 };
    let both = Role { keyids: vec![fuzz.public().id(), second.public().id()], threshold: 1 };
    let roles = Roles { trust: one.clone(), package: both.clone(), index: one };
    let mut v1 = TrustDoc::new(1, &[fuzz.public(), second.public()], roles);
    v1.expires = Some(created + time::Duration::days(365));
    let mut v2 = v1.clone();
    v2.version = 2;
    v2.roles.trust = Role { threshold: 2, ..both };
    v2.compromised = vec![milspec_format::KeyId([7; 32])];
    Ok((v1.sign([fuzz])?, v2.sign([fuzz, second])?))
}

fn main() -> Res<()> {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = fuzz.join("seeds");
    let fixtures = fuzz.join("../daemon/tests/fixtures");
    let work = fuzz.join("target/seed-work");
    fs::create_dir_all(&work)?;
    let created = OffsetDateTime::from_unix_timestamp(1_795_305_600)?; // 2026-11-22T00:00:00Z

    let ko_one = FakeKo { version: "1.0.1", ..FakeKo::default() }.build();
    let ko_a = FakeKo { version: "1.1.0", ..FakeKo::default() }.build();
    let ko_b = FakeKo { version: "1.1.0", kernel_release: "6.1.0-28-amd64", ..FakeKo::default() }.build();
    let ko_c = FakeKo { version: "1.2.0", padding: 3000, ..FakeKo::default() }.build();
    let mut ko_paths = Vec::new();
    for (name, bytes) in [("one.ko", &ko_one), ("a.ko", &ko_a), ("b.ko", &ko_b), ("c.ko", &ko_c)] {
        let p = work.join(name);
        fs::write(&p, bytes)?;
        ko_paths.push(p);
    }
    let opts = |version: &str| -> Res<PackOptions> {
        let version: semver::Version = version.parse()?;
        Ok(PackOptions {
            sequence: writer::default_sequence(&version).ok_or("no default sequence")?,
            version,
            created,
            params: BTreeMap::new(),
            probation: None,
            requires: Default::default(),
        })
    };
    let mut two = opts("1.1.0")?;
    two.params.insert("mode5_level".into(), "2".into());
    two.probation = Some(Probation { window_secs: Some(60) });
    let packs = [
        ("one", vec![ko_paths[0].clone()], opts("1.0.1")?, vec![FUZZ_SECRET]),
        ("two", vec![ko_paths[1].clone(), ko_paths[2].clone()], two, vec![FUZZ_SECRET]),
        ("two-keys", vec![ko_paths[3].clone()], opts("1.2.0")?, vec![FUZZ_SECRET, SECOND_SECRET]),
    ];
    let mut entries = Vec::new();
    for (name, mods, opts, keys) in packs {
        let keys: Vec<SecretKey> =
            keys.iter().map(|k| SecretKey::parse(k, Path::new("seed.key"))).collect::<Result<_, _>>()?;
        let out = work.join(format!("{name}.mspkg"));
        let manifest = writer::pack(&mods, &opts, &keys, None, &out, &Limits::DEFAULT)?;
        let bytes = fs::read(&out)?;
        put(&root, "package", &format!("{name}.mspkg"), &bytes)?;
        let manifest_bytes = manifest.to_bytes();
        put(&root, "manifest", &format!("{name}.json"), &manifest_bytes)?;
        let payloads: Vec<(String, Vec<u8>)> =
            mods.iter().zip(&manifest.payloads).map(|(m, p)| Ok((p.path.clone(), fs::read(m)?))).collect::<Res<_>>()?;
        let refs: Vec<(&str, &[u8])> = payloads.iter().map(|(p, b)| (p.as_str(), b.as_slice())).collect();
        put(&root, "package_signed", &format!("{name}.parts"), &join_parts(&manifest_bytes, &refs))?;
        let path = format!("packages/dell-milspec-{}.mspkg", manifest.version);
        let mut entry =
            IndexEntry::for_package(&manifest, &path, bytes.len() as u64, Sha256Digest::of(&bytes), created);
        if name == "two" {
            entry.waves = vec![
                Wave { after_secs: 0, percent: 10.0 },
                Wave { after_secs: 3600, percent: 50.0 },
                Wave { after_secs: 86_400, percent: 100.0 },
            ];
        }
        entries.push(entry);
    }
    let expires = created + time::Duration::days(7);
    let empty = Index::new(1, created, expires);
    put(&root, "index", "empty.json", &empty.sign(std::slice::from_ref(secret()))?)?;
    let mut full = Index::new(5, created, expires);
    full.packages = entries;
    full.revoked = vec!["1.0.0".parse()?];
    put(&root, "index", "full.json", &full.sign(std::slice::from_ref(secret()))?)?;

    let second = SecretKey::parse(SECOND_SECRET, Path::new("second.key"))?;
    let (v1, v2) = trust_docs(secret(), &second, created)?;
    put(&root, "trust_doc", "v1.json", &v1)?;
    put(&root, "trust_doc", "v2.json", &v2)?;

    for entry in fs::read_dir(&fixtures)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let target = if name.starts_with("status-") {
            "status"
        } else if name.starts_with("kmsg-") {
            "kmsg"
        } else {
            continue;
        };
        put(&root, target, &name, &fs::read(&path)?)?;
    }

    put(&root, "config", "default.toml", Config::default().to_toml().as_bytes())?;
    let mut cfg = Config {
        source: Some(SourceConfig { url: "https://mirror.example/milspec/".into(), ..SourceConfig::default() }),
        ..Config::default()
    };
    cfg.kernel.carry_params.push("debug_level".into());
    put(&root, "config", "source.toml", cfg.to_toml().as_bytes())?;
    put(
        &root,
        "config",
        "short.toml",
        b"[health]\nprobation = \"2m 30s\"\nreboot_on_stuck_module = true\n[source]\nurl = \"file:///srv/mirror\"\npoll_interval = \"1h\"\n",
    )?;
    fs::remove_dir_all(&work)?;
    println!("seeds written to {}", root.display());
    Ok(())
}
