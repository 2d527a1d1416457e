//! `milspec-repo trust init|rotate|sign|publish|show`: trust documents
//! (milspec_format::trust_doc) for the publisher.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use milspec_format::atomic;
use milspec_format::keys::{KeyId, PublicKey, SecretKey};
use milspec_format::trust_doc::{self, Role, Roles, TrustDoc, LATEST_FILE, TRUST_DIR};
use milspec_format::{sanitize, OpenPolicy};
use milspec_repo::cli::{RoleArg, RoleName, RoleThreshold, TrustCmd};

fn read_doc_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    milspec_format::read_regular(path, OpenPolicy::no_follow(milspec_format::limits::trust::MAX_FILE))
        .with_context(|| format!("{}: cannot read the trust document", path.display()))
}

fn write_doc_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    atomic::write_atomic(path, bytes, 0o644).with_context(|| format!("{}: cannot write", path.display()))
}

fn roles_of(r: RoleName) -> &'static [&'static str] {
    match r {
        RoleName::Trust => &["trust"],
        RoleName::Package => &["package"],
        RoleName::Index => &["index"],
        RoleName::All => &["trust", "package", "index"],
    }
}

/// A key named by its id or by its `.pub` file.
fn key_id(arg: &str) -> anyhow::Result<KeyId> {
    if let Ok(id) = arg.parse::<KeyId>() {
        return Ok(id);
    }
    Ok(PublicKey::load(Path::new(arg))
        .with_context(|| format!("`{}` is neither a key id nor a .pub file", sanitize(arg)))?
        .id())
}

/// Adds keys to roles (and to the document's key list).
fn add_keys(doc: &mut TrustDoc, keys: &[RoleArg]) -> anyhow::Result<()> {
    for k in keys {
        let public = PublicKey::load(&k.path)?;
        let id = public.id();
        if doc.compromised.contains(&id) {
            bail!("{}: key {} is marked compromised; it can never be trusted again", k.path.display(), id.short());
        }
        let line = public.to_file_text().trim_end().to_string();
        if !doc.keys.iter().any(|l| PublicKey::parse(l, Path::new("keys")).is_ok_and(|p| p.id() == id)) {
            doc.keys.push(line);
        }
        for (name, role) in doc.roles.each_mut() {
            if roles_of(k.role).contains(&name) && !role.keyids.contains(&id) {
                role.keyids.push(id);
            }
        }
    }
    Ok(())
}

fn set_thresholds(doc: &mut TrustDoc, thresholds: &[RoleThreshold]) {
    for t in thresholds {
        for (name, role) in doc.roles.each_mut() {
            if roles_of(t.role).contains(&name) {
                role.threshold = t.threshold;
            }
        }
    }
}

/// Drops `id` from every role; `forget` drops it from the key list too.
fn take_out(doc: &mut TrustDoc, id: KeyId) -> bool {
    let mut found = false;
    for (_, role) in doc.roles.each_mut() {
        let before = role.keyids.len();
        role.keyids.retain(|k| *k != id);
        found |= role.keyids.len() != before;
    }
    let before = doc.keys.len();
    doc.keys.retain(|l| PublicKey::parse(l, Path::new("keys")).map_or(true, |p| p.id() != id));
    found || doc.keys.len() != before
}

fn expiry(d: Option<Duration>) -> anyhow::Result<Option<time::OffsetDateTime>> {
    let Some(d) = d else { return Ok(None) };
    let now = time::OffsetDateTime::now_utc().replace_nanosecond(0)?;
    Ok(Some(now + time::Duration::try_from(d).context("--expires is too long")?))
}

fn sign_and_write(doc: &TrustDoc, sign: &[PathBuf], out: &Path) -> anyhow::Result<()> {
    doc.validate()?;
    let keys = sign.iter().map(|k| SecretKey::load(k)).collect::<Result<Vec<_>, _>>()?;
    let bytes = doc.sign(&keys)?;
    write_doc_file(out, &bytes)?;
    println!(
        "wrote {}: trust document version {}, {} key(s), {} signature(s)",
        out.display(),
        doc.version,
        doc.keys.len(),
        keys.len()
    );
    Ok(())
}

fn empty_roles() -> Roles {
    let r = Role { keyids: Vec::new(), threshold: 1 };
    Roles { trust: r.clone(), package: r.clone(), index: r }
}

pub fn run(cmd: TrustCmd) -> anyhow::Result<()> {
    match cmd {
        TrustCmd::Init { keys, thresholds, expires, sign, out } => {
            if out.symlink_metadata().is_ok() {
                bail!("{}: already exists; refusing to overwrite a trust document", out.display());
            }
            let mut doc = TrustDoc::new(1, &[], empty_roles());
            add_keys(&mut doc, &keys)?;
            set_thresholds(&mut doc, &thresholds);
            doc.expires = expiry(expires)?;
            sign_and_write(&doc, &sign, &out)
        }
        TrustCmd::Rotate { from, add, retire, compromise, thresholds, expires, sign, out } => {
            let (_, mut doc) = trust_doc::read_unverified(&read_doc_file(&from)?)?;
            doc.version = doc.version.checked_add(1).context("trust document version overflow")?;
            for r in &retire {
                let id = key_id(r)?;
                if !take_out(&mut doc, id) {
                    bail!("--retire {}: version {} does not hold key {}", sanitize(r), doc.version - 1, id.short());
                }
            }
            for c in &compromise {
                let id = key_id(c)?;
                take_out(&mut doc, id);
                if !doc.compromised.contains(&id) {
                    doc.compromised.push(id);
                }
            }
            add_keys(&mut doc, &add)?;
            set_thresholds(&mut doc, &thresholds);
            doc.expires = expiry(expires)?;
            sign_and_write(&doc, &sign, &out)
        }
        TrustCmd::Sign { key, file } => {
            let key = SecretKey::load(&key)?;
            let bytes = trust_doc::add_signature(&read_doc_file(&file)?, &key)?;
            write_doc_file(&file, &bytes)?;
            let (env, doc) = trust_doc::read_unverified(&bytes)?;
            println!(
                "signed {}: trust document version {} now has {} signature(s); added key {}",
                file.display(),
                doc.version,
                env.signatures.len(),
                key.public().id()
            );
            Ok(())
        }
        TrustCmd::Publish { mirror, file } => publish(&mirror, &file),
        TrustCmd::Show { file } => {
            print!("{}", show(&read_doc_file(&file)?)?);
            Ok(())
        }
    }
}

/// Checks the document against the mirror's previous version (hosts would
/// refuse it otherwise), then writes `trust/N.keys.json`, then `keys.json`.
fn publish(mirror: &Path, file: &Path) -> anyhow::Result<()> {
    let bytes = read_doc_file(file)?;
    let own = trust_doc::verify_self(&bytes).with_context(|| format!("{}: not ready to publish", file.display()))?;
    let version = own.set.version;
    let dir = mirror.join(TRUST_DIR);
    fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let target = mirror.join(trust_doc::version_path(version));
    match milspec_format::read_regular(&target, OpenPolicy::no_follow(milspec_format::limits::trust::MAX_FILE)) {
        Ok(held) if held == bytes => {}
        Ok(_) => bail!(
            "{}: the mirror already holds a different version {version}; a published version is never replaced: \
             make version {} with `milspec-repo trust rotate`",
            target.display(),
            version + 1
        ),
        Err(e) if e.is_not_found() => {
            if version > 1 {
                let prev_path = mirror.join(trust_doc::version_path(version - 1));
                let prev = read_doc_file(&prev_path)
                    .with_context(|| format!("version {} must be published before version {version}", version - 1))?;
                let prev = trust_doc::verify_self(&prev)?;
                trust_doc::accept_next(&prev.set, &bytes).with_context(|| {
                    format!("{}: hosts holding version {} would refuse it", file.display(), version - 1)
                })?;
            }
            write_doc_file(&target, &bytes)?;
        }
        Err(e) => return Err(e).context("cannot read the mirror's trust folder"),
    }
    write_doc_file(&mirror.join(LATEST_FILE), &bytes)?;
    println!("published trust document version {version} as {} and {LATEST_FILE}", target.display());
    Ok(())
}

/// The document for people; every untrusted text sanitised.
fn show(bytes: &[u8]) -> anyhow::Result<String> {
    let (env, doc) = trust_doc::read_unverified(bytes)?;
    let keys = doc.validate()?;
    let mut out = String::new();
    let _ = writeln!(out, "trust document version {}", doc.version);
    if let Some(e) = doc.expires {
        let _ =
            writeln!(out, "expires {}", e.format(&time::format_description::well_known::Rfc3339).unwrap_or_default());
    }
    let _ = writeln!(out, "keys:");
    for k in keys.values() {
        let _ = writeln!(out, "  {}  {}", k.id(), sanitize(k.name()));
    }
    for (name, role) in [("trust", &doc.roles.trust), ("package", &doc.roles.package), ("index", &doc.roles.index)] {
        let ids: Vec<String> = role.keyids.iter().map(KeyId::short).collect();
        let _ = writeln!(out, "role {name}: {} of {} ({})", role.threshold, role.keyids.len(), ids.join(", "));
    }
    for c in &doc.compromised {
        let _ = writeln!(out, "compromised {c}");
    }
    let signers: Vec<String> = env.signatures.iter().map(|s| s.keyid.short()).collect();
    let _ = writeln!(out, "signatures: {} ({})", env.signatures.len(), signers.join(", "));
    Ok(out)
}
