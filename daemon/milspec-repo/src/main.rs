//! `milspec-repo`: the publisher's tool. Makes keys, packs kernel modules
//! into signed packages and adds signatures, and writes the mirror that
//! hosts pull from: packages plus one signed `index.json`, and the signed
//! trust documents that rotate the keys hosts trust.

mod add_build;
mod mirror_view;
mod module_sign;
mod trust_cmd;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use milspec_cli::run_main;
use milspec_format::atomic;
use milspec_format::index::{read_unverified, Index, IndexEntry, Wave, INDEX_FILE};
use milspec_format::keys::SecretKey;
use milspec_format::manifest::{parse_param_arg, ParamArgError, Probation, Requires};
use milspec_format::package::{read_package_file, Discard, Trust};
use milspec_format::writer::{self, PackOptions};
use milspec_format::{republish, sanitize, Limits, Sha256Digest};
use milspec_repo::cli::{Cli, Cmd, MirrorArgs, ModuleSigningArgs};
use std::fs;

struct MirrorWrite {
    dir: PathBuf,
    keys: Vec<SecretKey>,
    index: Index,
}

impl MirrorWrite {
    /// Reads the mirror's index (or starts one) and prepares the next version.
    fn open(args: &MirrorArgs) -> anyhow::Result<Self> {
        let keys = args.keys.iter().map(|k| SecretKey::load(k)).collect::<Result<Vec<_>, _>>()?;
        fs::create_dir_all(&args.mirror)
            .with_context(|| format!("{}: cannot create the mirror folder", args.mirror.display()))?;
        let path = args.mirror.join(INDEX_FILE);
        let now = time::OffsetDateTime::now_utc().replace_nanosecond(0)?;
        let expires = now + time::Duration::try_from(args.expires).context("--expires is too long")?;
        let policy = milspec_format::OpenPolicy::no_follow(milspec_format::index::MAX_INDEX_FILE);
        let mut index = match milspec_format::read_regular(&path, policy) {
            Ok(bytes) => {
                read_unverified(&bytes).with_context(|| format!("{}: cannot read the index", path.display()))?
            }
            Err(e) if e.is_not_found() => Index::new(0, now, expires),
            Err(e) => return Err(e).context("cannot read the index"),
        };
        index.version = index.version.checked_add(1).context("index version overflow")?;
        index.created = now;
        index.expires = expires;
        Ok(MirrorWrite { dir: args.mirror.clone(), keys, index })
    }

    /// Signs and replaces the index, last, atomically.
    fn commit(mut self) -> anyhow::Result<Index> {
        self.index.packages.sort_by(|a, b| a.sequence.cmp(&b.sequence).then_with(|| a.version.cmp(&b.version)));
        self.index.validate()?;
        let bytes = self.index.sign(&self.keys)?;
        // Hosts refuse a larger index; better said here than by every host.
        let limit = milspec_format::index::MAX_INDEX_FILE;
        if bytes.len() as u64 > limit {
            bail!(
                "the signed index would be {} bytes, more than the {limit} hosts accept; nothing was written: \
                 the mirror lists more releases and kernel builds than one index can carry \
                 (docs/benchmarks.md, \"Index growth with kernels\")",
                bytes.len()
            );
        }
        let path = self.dir.join(INDEX_FILE);
        atomic::write_atomic(&path, &bytes, 0o644)
            .with_context(|| format!("{}: cannot write the index", path.display()))?;
        Ok(self.index)
    }
}

fn publish(args: &MirrorArgs, waves: Option<Vec<Wave>>, packages: &[PathBuf], limits: &Limits) -> anyhow::Result<()> {
    let mut m = MirrorWrite::open(args)?;
    let pkg_dir = m.dir.join("packages");
    fs::create_dir_all(&pkg_dir).with_context(|| format!("{}: cannot create", pkg_dir.display()))?;
    let now = m.index.created;
    for pkg in packages {
        let verified = read_package_file(pkg, Trust::Unverified, limits, &mut Discard)?;
        let man = verified.manifest;
        let file = milspec_format::open_package(pkg, limits)?;
        let (sha256, size) = Sha256Digest::of_reader(file, limits.max_package_size)
            .with_context(|| format!("{}: cannot read", pkg.display()))?;
        let size = size.with_context(|| format!("{}: larger than {} bytes", pkg.display(), limits.max_package_size))?;
        let rel = format!("packages/{}-{}.mspkg", man.name, man.version);
        let mut entry = IndexEntry::for_package(&man, &rel, size, sha256, now);
        if let Some(w) = &waves {
            entry.waves = w.clone();
        }
        if let Some(old) = m.index.packages.iter_mut().find(|e| e.version == man.version) {
            if old.sha256 == sha256 {
                if waves.is_some() {
                    old.waves = entry.waves.clone();
                }
                println!(
                    "{} {} is already published; schedule {}",
                    man.name,
                    man.version,
                    if waves.is_some() { "updated" } else { "kept" }
                );
                continue;
            }
            // Same version, other content: only a kernel-build republish of
            // the package the mirror holds may replace it.
            let held = m.dir.join(&old.path);
            let held_file = milspec_format::open_package(&held, limits)?;
            let (held_sha, _) = Sha256Digest::of_reader(held_file, limits.max_package_size)
                .with_context(|| format!("{}: cannot read", held.display()))?;
            if held_sha != old.sha256 {
                bail!(
                    "{}: does not match the sha256 the index lists for {} ({held_sha}, listed {}); \
                     restore the mirror's copy before republishing",
                    held.display(),
                    man.version,
                    old.sha256
                );
            }
            let held_man = read_package_file(&held, Trust::Unverified, limits, &mut Discard)
                .with_context(|| {
                    format!("{}: cannot read the package the mirror lists for {}", held.display(), man.version)
                })?
                .manifest;
            let added = republish::added_builds(&held_man, &man).with_context(|| {
                format!("{}: version {} is already on the mirror with different content", pkg.display(), man.version)
            })?;
            // A new file name: hosts may be downloading the old file.
            let rel = republish_path(&man, &sha256);
            copy_into_mirror(pkg, &m.dir.join(&rel), limits)?;
            println!(
                "republished {} {} (sequence {}) as {rel}, {size} bytes, sha256 {sha256}: {} kernel build(s) added ({}); {}",
                man.name,
                man.version,
                man.sequence,
                added.len(),
                added.iter().map(|p| sanitize(&p.kernel_release)).collect::<Vec<_>>().join(", "),
                if waves.is_some() { "schedule replaced" } else { "rollout kept" }
            );
            old.path = rel;
            old.size = size;
            old.sha256 = sha256;
            old.kernel_releases = entry.kernel_releases;
            if waves.is_some() {
                old.waves = entry.waves;
            }
            continue;
        }
        // The package goes in before the index that names it.
        copy_into_mirror(pkg, &m.dir.join(&rel), limits)?;
        println!(
            "added {} {} (sequence {}) as {rel}, {size} bytes, sha256 {sha256}",
            man.name, man.version, man.sequence
        );
        m.index.packages.push(entry);
    }
    let index = m.commit()?;
    println!(
        "signed {}/{INDEX_FILE}: version {}, {} package(s), expires {}",
        args.mirror.display(),
        index.version,
        index.packages.len(),
        rfc3339(index.expires)
    );
    Ok(())
}

/// Where a republished package goes: its name carries a short hash of its
/// bytes, so it never overwrites the file the index named before.
fn republish_path(man: &milspec_format::Manifest, sha256: &Sha256Digest) -> String {
    let hex = sha256.to_string();
    format!("packages/{}-{}-{}.mspkg", man.name, man.version, &hex[..hex.len().min(12)])
}

/// Copies a package into the mirror folder, atomically.
fn copy_into_mirror(pkg: &std::path::Path, dest: &std::path::Path, limits: &Limits) -> anyhow::Result<()> {
    let mut out =
        atomic::AtomicFile::create(dest, 0o644).with_context(|| format!("{}: cannot create", dest.display()))?;
    let mut src = milspec_format::open_package(pkg, limits)?;
    std::io::copy(&mut src, &mut out).with_context(|| format!("{}: cannot copy", dest.display()))?;
    out.commit().with_context(|| format!("{}: cannot write", dest.display()))?;
    Ok(())
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn parse_params(raw: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for p in raw {
        let (k, v) = parse_param_arg(p).map_err(|e| match e {
            ParamArgError::NotKeyValue => anyhow::anyhow!("--param `{p}` is not KEY=VALUE"),
            ParamArgError::Bad(e) => e.into(),
        })?;
        if out.insert(k.to_string(), v.to_string()).is_some() {
            bail!("--param `{k}` is given twice");
        }
    }
    Ok(out)
}

/// The module-signing key `pack` and `add-build` were given, if any.
fn module_key(args: &ModuleSigningArgs) -> anyhow::Result<Option<module_sign::ModuleKey>> {
    match &args.cert {
        None => Ok(None),
        Some(cert) => module_sign::ModuleKey::open(cert, args.key.as_deref(), args.signer_cmd.as_deref()).map(Some),
    }
}

fn print_signer(key: &Option<module_sign::ModuleKey>) {
    if let Some(k) = key {
        println!("  modules signed by {}", k.signer());
    }
}

fn main() -> ExitCode {
    let cli: Cli = milspec_cli::parse();
    run_main("milspec-repo", || {
        let limits = Limits::default();
        match cli.cmd {
            Cmd::Keygen { out, name } => {
                let key = SecretKey::generate(&name)?;
                // A folder for a secret key: the owner's alone. An existing
                // folder is left as it is.
                use std::os::unix::fs::DirBuilderExt;
                fs::DirBuilder::new().recursive(true).mode(0o700).create(&out).with_context(|| {
                    format!("{}: cannot create the key folder", sanitize(&out.display().to_string()))
                })?;
                let (k, p) = key.write_pair(&out)?;
                println!("wrote {} and {}", k.display(), p.display());
                println!("key id {}", key.public().id());
            }
            Cmd::Pack { version, sequence, modules, params, probation, sys_vendors, keys, module_signing, out } => {
                let sequence = match sequence {
                    Some(s) => s,
                    None => writer::default_sequence(&version).with_context(|| {
                        format!("version {version} has no default sequence (pre-release, 0.0.0, or a number too large); give --sequence N")
                    })?,
                };
                let keys = keys.iter().map(|k| SecretKey::load(k)).collect::<Result<Vec<_>, _>>()?;
                let opts = PackOptions {
                    version,
                    sequence,
                    created: time::OffsetDateTime::now_utc().replace_nanosecond(0)?,
                    params: parse_params(&params)?,
                    probation: probation.map(|d| Probation { window_secs: Some(d.as_secs().max(1)) }),
                    requires: if sys_vendors.is_empty() {
                        Requires::default()
                    } else {
                        Requires { sys_vendor: sys_vendors }
                    },
                };
                let mkey = module_key(&module_signing)?;
                let signing = mkey.as_ref().map(|k| k as &dyn writer::ModuleSigning);
                let m = writer::pack(&modules, &opts, &keys, signing, &out, &limits)?;
                println!(
                    "wrote {}: {} {} (sequence {}), {} payload(s), {} signature(s)",
                    out.display(),
                    m.name,
                    m.version,
                    m.sequence,
                    m.payloads.len(),
                    keys.len()
                );
                for p in &m.payloads {
                    println!("  {}  {} bytes  sha256 {}", p.kernel_release, p.size, p.sha256);
                }
                print_signer(&mkey);
            }
            Cmd::AddBuild { package, modules, keys, module_signing, out } => {
                let keys = keys.iter().map(|k| SecretKey::load(k)).collect::<Result<Vec<_>, _>>()?;
                let mkey = module_key(&module_signing)?;
                let signing = mkey.as_ref().map(|k| k as &dyn writer::ModuleSigning);
                let (m, added) = add_build::add_build(&package, &modules, &keys, signing, &out, &limits)?;
                println!(
                    "wrote {}: {} {} (sequence {}), {} payload(s), {added} added, {} signature(s)",
                    out.display(),
                    m.name,
                    m.version,
                    m.sequence,
                    m.payloads.len(),
                    keys.len()
                );
                for p in &m.payloads[m.payloads.len() - added..] {
                    println!("  + {}  {} bytes  sha256 {}", sanitize(&p.kernel_release), p.size, p.sha256);
                }
                print_signer(&mkey);
            }
            Cmd::SignModule { cert, key, signer_cmd, out, module } => {
                let mkey = module_sign::ModuleKey::open(&cert, key.as_deref(), signer_cmd.as_deref())?;
                let out = out.unwrap_or_else(|| module.clone());
                let sig = module_sign::sign_file(&mkey, &module, &out, limits.max_payload_size)?;
                println!(
                    "signed {}: signer {}, issuer \"{}\", serial {}, {}",
                    out.display(),
                    mkey.signer(),
                    sig.issuer,
                    sig.serial,
                    sig.digest
                );
            }
            Cmd::MokKeygen { out, name, subject, valid, bits } => {
                let new = module_sign::mok_keygen(&out, &name, &subject, valid, bits)?;
                println!(
                    "wrote {} (private, mode 0600), {} and {}",
                    new.key.display(),
                    new.cert_pem.display(),
                    new.cert_der.display()
                );
                println!("signer {}", new.signer);
                println!(
                    "sign packages with: milspec-repo pack ... --module-cert {} --module-key {}",
                    new.cert_pem.display(),
                    new.key.display()
                );
                println!("enrol on each host (Secure Boot with shim), then reboot and confirm in MokManager:");
                println!("  mokutil --import {}", new.cert_der.display());
                println!("or add {} to the firmware's db (docs/secure-boot.md)", new.cert_der.display());
            }
            Cmd::Sign { key, package } => {
                let key = SecretKey::load(&key)?;
                let (m, sigs) = writer::add_signature(&package, &key, &limits)?;
                println!(
                    "signed {}: {} {} now has {} signature(s); added key {}",
                    package.display(),
                    m.name,
                    m.version,
                    sigs.signatures.len(),
                    key.public().id()
                );
            }
            Cmd::Publish { mirror, waves, packages } => publish(&mirror, waves.map(|w| w.0), &packages, &limits)?,
            Cmd::Revoke { mirror, version } => {
                let mut m = MirrorWrite::open(&mirror)?;
                if m.index.revoked.contains(&version) {
                    bail!("version {version} is already revoked");
                }
                if m.index.entry(&version).is_none() {
                    eprintln!("milspec-repo: note: version {version} is not listed on this mirror; revoking it anyway");
                }
                m.index.revoked.push(version.clone());
                let index = m.commit()?;
                println!("revoked {version}: index version {}, expires {}", index.version, rfc3339(index.expires));
            }
            Cmd::Refresh { mirror } => {
                let index = MirrorWrite::open(&mirror)?.commit()?;
                println!("refreshed index: version {}, expires {}", index.version, rfc3339(index.expires));
            }
            Cmd::Trust { cmd } => trust_cmd::run(cmd)?,
            Cmd::Kernels { mirror, json } => print!("{}", mirror_view::kernels(&mirror, json)?),
        }
        Ok(ExitCode::SUCCESS)
    })
}
