//! The command line of `milspec-repo`: its clap definition, shared by the
//! binary and by the generated manual page and shell completions.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use milspec_format::index::{check_waves, Wave};

#[derive(Parser, Debug)]
#[command(name = "milspec-repo", version, about = "Publish signed dell-milspec module packages")]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Make an ed25519 key pair: NAME.key (mode 0600) and NAME.pub in DIR
    /// (made, mode 0700, if it does not exist).
    Keygen {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// Pack one .ko per kernel release into a signed package.
    Pack {
        /// Package version (semver), e.g. 1.2.0.
        #[arg(long)]
        version: semver::Version,
        /// Anti-rollback sequence; defaults to major*10^9 + minor*10^6 + patch*10^3.
        #[arg(long)]
        sequence: Option<u64>,
        /// A kernel module; its kernel release is read from its vermagic.
        #[arg(long = "module", value_name = "KO", required = true)]
        modules: Vec<PathBuf>,
        /// A default module parameter, KEY=VALUE.
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
        /// Suggested probation window, e.g. 30s.
        #[arg(long, value_parser = humantime::parse_duration)]
        probation: Option<Duration>,
        /// Accepted DMI sys_vendor (repeatable; default: "Dell Inc." and "Dell Computer Corporation").
        #[arg(long = "sys-vendor")]
        sys_vendors: Vec<String>,
        /// A secret key to sign with (repeatable for several signatures).
        #[arg(long = "key", value_name = "KEY", required = true)]
        keys: Vec<PathBuf>,
        #[command(flatten)]
        module_signing: ModuleSigningArgs,
        #[arg(long, value_name = "FILE.mspkg")]
        out: PathBuf,
    },
    /// Add builds for more kernels to a package: the same release, re-signed.
    ///
    /// Everything else of the manifest stays (version, sequence, params,
    /// requirements, probation, every existing build), so `publish` can
    /// replace the release on a mirror without restarting its rollout.
    AddBuild {
        /// The package to extend.
        #[arg(long, value_name = "IN.mspkg")]
        package: PathBuf,
        /// A kernel module for a kernel the package has no build for (repeatable).
        #[arg(long = "module", value_name = "KO", required = true)]
        modules: Vec<PathBuf>,
        /// A secret key to sign with (repeatable for several signatures).
        #[arg(long = "key", value_name = "KEY", required = true)]
        keys: Vec<PathBuf>,
        #[command(flatten)]
        module_signing: ModuleSigningArgs,
        /// The new package (must differ from --package).
        #[arg(long, value_name = "OUT.mspkg")]
        out: PathBuf,
    },
    /// Append a kernel module signature (the format of the kernel's
    /// scripts/sign-file) to a .ko, made with an X.509 certificate and its
    /// RSA key, a PKCS#11 URI or an external signer command.
    SignModule {
        /// The module-signing certificate (PEM or DER).
        #[arg(long = "cert", value_name = "CERT")]
        cert: PathBuf,
        /// Its private key: a PEM file (PKCS#8 or PKCS#1) or a pkcs11: URI
        /// (signed with `openssl dgst -sha256 -sign URI`).
        #[arg(long = "key", value_name = "KEY|URI", required_unless_present = "signer_cmd")]
        key: Option<String>,
        /// A command (run by sh -c) that reads the module on stdin and
        /// prints its raw RSA PKCS#1 v1.5 SHA-256 signature on stdout.
        #[arg(long = "signer-cmd", value_name = "CMD", conflicts_with = "key")]
        signer_cmd: Option<String>,
        /// Where the signed module goes (default: replace KO).
        #[arg(long, value_name = "OUT.ko")]
        out: Option<PathBuf>,
        #[arg(value_name = "KO")]
        module: PathBuf,
    },
    /// Make an RSA key and a self-signed certificate for signing modules
    /// (extended key usage codeSigning and module signing), ready for
    /// `mokutil --import`: NAME.key (mode 0600), NAME.pem and NAME.der in DIR.
    MokKeygen {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        #[arg(long)]
        name: String,
        /// The certificate's common name: the name hosts' kernels show.
        #[arg(long, default_value = "milspec module signing")]
        subject: String,
        /// How long the certificate is valid.
        #[arg(long, value_name = "DURATION", default_value = "3650d", value_parser = humantime::parse_duration)]
        valid: Duration,
        /// RSA key size.
        #[arg(long, default_value_t = 2048, value_parser = parse_bits)]
        bits: usize,
    },
    /// Add one more signature to a package, in place.
    Sign {
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        package: PathBuf,
    },
    /// Add packages to a mirror folder and re-sign its index with a higher version.
    Publish {
        #[command(flatten)]
        mirror: MirrorArgs,
        /// Rollout schedule, e.g. `1%,10%@1h,100%@24h` (PERCENT[@AFTER], comma separated).
        /// Without it every host may take the packages at once.
        #[arg(long, value_name = "SPEC", value_parser = parse_waves)]
        waves: Option<WaveSpec>,
        #[arg(required = true, value_name = "PKG")]
        packages: Vec<PathBuf>,
    },
    /// Revoke a version: hosts running it move off it on their own.
    Revoke {
        #[command(flatten)]
        mirror: MirrorArgs,
        version: semver::Version,
    },
    /// Re-sign the index unchanged with a higher version and a new expiry.
    Refresh {
        #[command(flatten)]
        mirror: MirrorArgs,
    },
    /// Trust documents: the signed list of the keys hosts trust, so keys
    /// can be rotated without touching every host (docs/operations.md,
    /// "Key rotation").
    Trust {
        #[command(subcommand)]
        cmd: TrustCmd,
    },
    /// List each release on a mirror with the kernel releases it has builds for.
    Kernels {
        /// The mirror folder.
        #[arg(long, value_name = "DIR")]
        mirror: PathBuf,
        /// One JSON document instead of one line per release.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TrustCmd {
    /// Make trust document version 1 from public key files.
    Init {
        /// A public key and the role it acts for: ROLE=FILE.pub, ROLE one
        /// of trust, package, index or all (repeatable).
        #[arg(long = "key", value_name = "ROLE=PUB", required = true, value_parser = parse_role_key)]
        keys: Vec<RoleArg>,
        /// A role's threshold: ROLE=N (default 1 for each role).
        #[arg(long = "threshold", value_name = "ROLE=N", value_parser = parse_role_threshold)]
        thresholds: Vec<RoleThreshold>,
        /// Hosts stop trusting the document after this long.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
        /// A secret key to sign with (repeatable; `trust sign` adds more later).
        #[arg(long = "sign", value_name = "KEY")]
        sign: Vec<PathBuf>,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Make version N+1 from version N: add, retire or mark keys
    /// compromised, change thresholds. Hosts accept it only when a
    /// threshold of N's trust keys and of N+1's trust keys signed it.
    Rotate {
        /// The current document (version N).
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// A key to add, for a role: ROLE=FILE.pub (repeatable).
        #[arg(long = "add", value_name = "ROLE=PUB", value_parser = parse_role_key)]
        add: Vec<RoleArg>,
        /// A key to take out of every role: its key id or its .pub file
        /// (repeatable). Slots it signed keep loading.
        #[arg(long = "retire", value_name = "KEYID|PUB")]
        retire: Vec<String>,
        /// A key no host may trust again, for anything: its key id or its
        /// .pub file (repeatable). Slots it signed are refused.
        #[arg(long = "compromise", value_name = "KEYID|PUB")]
        compromise: Vec<String>,
        /// A role's new threshold: ROLE=N.
        #[arg(long = "threshold", value_name = "ROLE=N", value_parser = parse_role_threshold)]
        thresholds: Vec<RoleThreshold>,
        /// Hosts stop trusting the new document after this long (default: no expiry).
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
        /// A secret key to sign with (repeatable).
        #[arg(long = "sign", value_name = "KEY")]
        sign: Vec<PathBuf>,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Add one more signature to a trust document, in place.
    Sign {
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        file: PathBuf,
    },
    /// Copy a trust document into a mirror folder as trust/N.keys.json and
    /// keys.json, after checking it follows the version the mirror holds.
    Publish {
        /// The mirror folder.
        #[arg(long, value_name = "DIR")]
        mirror: PathBuf,
        file: PathBuf,
    },
    /// Print a trust document: version, keys, roles, compromised keys, signers.
    Show { file: PathBuf },
}

/// Which role a key acts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleName {
    Trust,
    Package,
    Index,
    All,
}

#[derive(Debug, Clone)]
pub struct RoleArg {
    pub role: RoleName,
    pub path: PathBuf,
}

#[derive(Debug, Clone, Copy)]
pub struct RoleThreshold {
    pub role: RoleName,
    pub threshold: usize,
}

fn parse_role(s: &str) -> Result<RoleName, String> {
    match s {
        "trust" => Ok(RoleName::Trust),
        "package" => Ok(RoleName::Package),
        "index" => Ok(RoleName::Index),
        "all" => Ok(RoleName::All),
        _ => Err(format!("role `{s}`: use trust, package, index or all")),
    }
}

fn parse_role_key(s: &str) -> Result<RoleArg, String> {
    let (role, path) = s.split_once('=').ok_or("write ROLE=FILE.pub, e.g. package=release-2.pub")?;
    Ok(RoleArg { role: parse_role(role)?, path: path.into() })
}

fn parse_role_threshold(s: &str) -> Result<RoleThreshold, String> {
    let (role, n) = s.split_once('=').ok_or("write ROLE=N, e.g. trust=2")?;
    let threshold = n.parse().map_err(|_| format!("threshold `{n}` is not a number"))?;
    Ok(RoleThreshold { role: parse_role(role)?, threshold })
}

fn parse_bits(s: &str) -> Result<usize, String> {
    match s {
        "2048" | "3072" | "4096" => s.parse().map_err(|_| String::new()),
        _ => Err("use 2048, 3072 or 4096".into()),
    }
}

/// Kernel module signing while packing (docs/secure-boot.md).
#[derive(clap::Args, Debug, Default)]
pub struct ModuleSigningArgs {
    /// Sign each module for the kernel with this certificate (PEM or DER)
    /// and record its signer in the manifest; without --module-key or
    /// --module-signer-cmd, every module must already be signed by it.
    #[arg(long = "module-cert", value_name = "CERT")]
    pub cert: Option<PathBuf>,
    /// The certificate's private key: a PEM file or a pkcs11: URI.
    #[arg(long = "module-key", value_name = "KEY|URI", requires = "cert")]
    pub key: Option<String>,
    /// A command (sh -c) that signs the module on stdin: raw RSA PKCS#1
    /// v1.5 SHA-256 signature on stdout.
    #[arg(long = "module-signer-cmd", value_name = "CMD", requires = "cert", conflicts_with = "key")]
    pub signer_cmd: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct MirrorArgs {
    /// The mirror folder (created if missing).
    #[arg(long, value_name = "DIR")]
    pub mirror: PathBuf,
    /// A secret key to sign the index with (repeatable).
    #[arg(long = "key", value_name = "KEY", required = true)]
    pub keys: Vec<PathBuf>,
    /// How long hosts accept this index; refresh before it runs out.
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub expires: Duration,
}

/// A parsed `--waves` value (one argument, several waves).
#[derive(Debug, Clone)]
pub struct WaveSpec(pub Vec<Wave>);

/// `1%,10%@1h,100%@24h`: PERCENT with an optional `@` delay after publication.
fn parse_waves(spec: &str) -> Result<WaveSpec, String> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim) {
        let (pct, after) = part.split_once('@').unwrap_or((part, "0s"));
        let percent: f64 = pct
            .trim()
            .strip_suffix('%')
            .ok_or_else(|| format!("wave `{part}`: write the share as PERCENT%, e.g. 10%"))?
            .parse()
            .map_err(|e| format!("wave `{part}`: {e}"))?;
        let after_secs = if after.trim() == "0" {
            0
        } else {
            humantime::parse_duration(after.trim()).map_err(|e| format!("wave `{part}`: {e}"))?.as_secs()
        };
        out.push(Wave { after_secs, percent });
    }
    check_waves(&out)?;
    Ok(WaveSpec(out))
}
