//! Kernel module signing for the publisher: the signature the kernel's
//! `scripts/sign-file` appends (PKCS#7 `SignedData`, detached, no signed
//! attributes, the signer named by issuer and serial number, RSA PKCS#1
//! v1.5 over SHA-256 of the module), made with an X.509 certificate and
//! its private key, a PKCS#11 URI (through `openssl`) or an external
//! signer command; and `mok-keygen`, a key pair fit for MOK enrolment.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context};
use cms::cert::IssuerAndSerialNumber;
use cms::content_info::CmsVersion;
use cms::signed_data::{EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos};
use const_oid::db::rfc5911::ID_DATA;
use const_oid::db::rfc5912::{ID_SHA_256, RSA_ENCRYPTION};
use const_oid::ObjectIdentifier;
use der::asn1::{OctetString, SetOfVec};
use der::{Decode, DecodePem, Encode, EncodePem};
use milspec_format::modsig::{self, ModuleSigner};
use milspec_format::writer::ModuleSigning;
use milspec_format::{sanitize, FileError};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer as _, Verifier as _};
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::ext::pkix::{ExtendedKeyUsage, SubjectKeyIdentifier};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::Validity;
use x509_cert::Certificate;

/// The extended key usage shim and the kernel's `.machine` keyring know as
/// "module signing only" (Red Hat's OID, used by mokutil and DKMS).
pub const EKU_MODULE_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.2312.16.1.2");
/// Longest raw signature an external signer may print (RSA-16384).
const MAX_SIGNATURE: u64 = 2048;
/// Longest certificate or key file read.
const MAX_PEM: u64 = 64 * 1024;

/// How the private half is reached.
#[derive(Debug)]
enum KeySource {
    /// A PEM file (PKCS#8 or PKCS#1, unencrypted).
    File(Box<rsa::pkcs1v15::SigningKey<Sha256>>),
    /// A command that reads the module on stdin and prints the raw
    /// PKCS#1 v1.5 SHA-256 signature on stdout.
    Command { program: String, args: Vec<String>, shown: String },
    /// None: modules must come signed by the certificate already.
    None,
}

/// A module-signing certificate and the way to sign with its key.
#[derive(Debug)]
pub struct ModuleKey {
    cert: Certificate,
    public: rsa::pkcs1v15::VerifyingKey<Sha256>,
    key: KeySource,
    signer: ModuleSigner,
}

fn shown(p: &Path) -> String {
    FileError::shown_path(p)
}

fn read_small(path: &Path) -> anyhow::Result<Vec<u8>> {
    let f = std::fs::File::open(path).with_context(|| format!("{}: cannot open", shown(path)))?;
    let mut out = Vec::new();
    f.take(MAX_PEM + 1).read_to_end(&mut out).with_context(|| format!("{}: cannot read", shown(path)))?;
    if out.len() as u64 > MAX_PEM {
        bail!("{}: larger than {MAX_PEM} bytes; not a certificate or key", shown(path));
    }
    Ok(out)
}

/// A certificate from a PEM or DER file.
pub fn load_cert(path: &Path) -> anyhow::Result<Certificate> {
    let bytes = read_small(path)?;
    let cert = if bytes.starts_with(b"-----BEGIN") {
        Certificate::from_pem(&bytes).map_err(|e| anyhow::anyhow!("{e}"))
    } else {
        Certificate::from_der(&bytes).map_err(|e| anyhow::anyhow!("{e}"))
    };
    cert.with_context(|| format!("{}: not an X.509 certificate (PEM or DER)", shown(path)))
}

/// What the kernel will call the certificate's key, as a manifest records it.
pub fn signer_of(cert: &Certificate) -> ModuleSigner {
    let tbs = &cert.tbs_certificate;
    let serial = modsig::serial_hex(tbs.serial_number.as_bytes());
    // The kernel names a key by its subject key id, else by its serial.
    let skid = tbs
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == const_oid::db::rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER)
        .and_then(|e| SubjectKeyIdentifier::from_der(e.extn_value.as_bytes()).ok())
        .map(|s| hex::encode(s.0.as_bytes()));
    ModuleSigner {
        name: modsig::kernel_name(&tbs.subject),
        key_id: skid.unwrap_or_else(|| serial.clone()),
        issuer: modsig::kernel_name(&tbs.issuer),
        serial,
    }
}

impl ModuleKey {
    /// `cert` with the private key at `key` (a PEM file, or a `pkcs11:`
    /// URI signed through `openssl dgst -sign`), or `signer_cmd` (run by
    /// `sh -c`), or neither (modules must already be signed by `cert`).
    pub fn open(cert_path: &Path, key: Option<&str>, signer_cmd: Option<&str>) -> anyhow::Result<Self> {
        let cert = load_cert(cert_path)?;
        let spki = &cert.tbs_certificate.subject_public_key_info;
        if spki.algorithm.oid != RSA_ENCRYPTION {
            bail!(
                "{}: the certificate's key is {}, not RSA; the kernel module signatures made here use RSA keys",
                shown(cert_path),
                spki.algorithm.oid
            );
        }
        let der = spki.to_der().context("cannot encode the certificate's public key")?;
        let public = RsaPublicKey::from_public_key_der(&der)
            .map_err(|e| anyhow::anyhow!("{}: the certificate's RSA key is invalid: {e}", shown(cert_path)))?;
        let key = match (key, signer_cmd) {
            (Some(_), Some(_)) => bail!("give --module-key or --module-signer-cmd, not both"),
            (Some(uri), None) if uri.starts_with("pkcs11:") => KeySource::Command {
                program: "openssl".into(),
                args: ["dgst", "-sha256", "-sign", uri].map(String::from).to_vec(),
                shown: format!("openssl dgst -sha256 -sign {}", sanitize(uri)),
            },
            (Some(path), None) => {
                let path = PathBuf::from(path);
                let text = String::from_utf8(read_small(&path)?)
                    .with_context(|| format!("{}: not a PEM private key", shown(&path)))?;
                let private = RsaPrivateKey::from_pkcs8_pem(&text)
                    .or_else(|_| RsaPrivateKey::from_pkcs1_pem(&text))
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "{}: not an unencrypted RSA private key (PKCS#8 or PKCS#1 PEM); for an encrypted key or a token use --module-signer-cmd",
                            shown(&path)
                        )
                    })?;
                if RsaPublicKey::from(&private) != public {
                    bail!("{}: this key does not belong to the certificate {}", shown(&path), shown(cert_path));
                }
                KeySource::File(Box::new(rsa::pkcs1v15::SigningKey::new(private)))
            }
            (None, Some(cmd)) => {
                KeySource::Command { program: "sh".into(), args: vec!["-c".into(), cmd.into()], shown: sanitize(cmd) }
            }
            (None, None) => KeySource::None,
        };
        let signer = signer_of(&cert);
        Ok(ModuleKey { public: rsa::pkcs1v15::VerifyingKey::new(public), key, signer, cert })
    }

    pub fn signer(&self) -> &ModuleSigner {
        &self.signer
    }

    /// The raw signature over `module`, checked against the certificate.
    fn raw_signature(&self, module: &[u8]) -> anyhow::Result<Vec<u8>> {
        let sig = match &self.key {
            KeySource::File(k) => k.sign(module).to_vec(),
            KeySource::Command { program, args, shown } => {
                run_signer(program, args, module).with_context(|| format!("signer command `{shown}`"))?
            }
            KeySource::None => bail!(
                "the module has no kernel signature and no key was given: pass --module-key (or --module-signer-cmd) to sign it"
            ),
        };
        let parsed = rsa::pkcs1v15::Signature::try_from(sig.as_slice())
            .map_err(|_| anyhow::anyhow!("the signer returned {} bytes, not an RSA signature", sig.len()))?;
        self.public.verify(module, &parsed).map_err(|_| {
            anyhow::anyhow!(
                "the signature does not verify with the certificate {}: the key is not the certificate's, or the signer does not make RSA PKCS#1 v1.5 SHA-256 signatures",
                self.signer
            )
        })?;
        Ok(sig)
    }

    /// `module` with its kernel signature appended.
    pub fn sign_bytes(&self, module: &[u8]) -> anyhow::Result<Vec<u8>> {
        if let Some(sig) = modsig::parse(module)? {
            if self.signer.matches(&sig) {
                return Ok(module.to_vec());
            }
            bail!(
                "the module is signed already, by issuer \"{}\" serial {}, not by {}; give the unsigned module",
                sig.issuer,
                sig.serial,
                self.signer
            );
        }
        let signature = self.raw_signature(module)?;
        let sha256 = AlgorithmIdentifierOwned { oid: ID_SHA_256, parameters: None };
        let tbs = &self.cert.tbs_certificate;
        let info = SignerInfo {
            version: CmsVersion::V1,
            sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: tbs.issuer.clone(),
                serial_number: tbs.serial_number.clone(),
            }),
            digest_alg: sha256.clone(),
            // The kernel refuses module signatures with signed attributes.
            signed_attrs: None,
            // rsaEncryption, as sign-file writes it (the kernel takes the
            // hash from digest_alg).
            signature_algorithm: AlgorithmIdentifierOwned { oid: RSA_ENCRYPTION, parameters: Some(der::Any::null()) },
            signature: OctetString::new(signature)?,
            unsigned_attrs: None,
        };
        let signed_data = SignedData {
            version: CmsVersion::V1,
            digest_algorithms: SetOfVec::try_from(vec![sha256])?,
            encap_content_info: EncapsulatedContentInfo { econtent_type: ID_DATA, econtent: None },
            certificates: None,
            crls: None,
            signer_infos: SignerInfos(SetOfVec::try_from(vec![info])?),
        };
        Ok(modsig::append(module, &signed_data)?)
    }
}

impl ModuleSigning for ModuleKey {
    fn sign(&self, module: &[u8]) -> Result<(Vec<u8>, ModuleSigner), String> {
        self.sign_bytes(module).map(|b| (b, self.signer.clone())).map_err(|e| format!("{e:#}"))
    }
}

/// Runs a signer: `module` on its stdin, the raw signature from its stdout.
fn run_signer(program: &str, args: &[String], module: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start it")?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let mut stdout = child.stdout.take().context("no stdout")?;
    let data = module.to_vec();
    // Written from a thread, so a signer that prints before it has read
    // everything cannot deadlock with us.
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let mut sig = Vec::new();
    (&mut stdout).take(MAX_SIGNATURE + 1).read_to_end(&mut sig).context("cannot read its output")?;
    let status = child.wait().context("cannot wait for it")?;
    let wrote = writer.join().map_err(|_| anyhow::anyhow!("the writer thread failed"))?;
    if !status.success() {
        bail!("it failed ({status})");
    }
    wrote.context("it did not read the whole module")?;
    if sig.len() as u64 > MAX_SIGNATURE {
        bail!("it printed more than {MAX_SIGNATURE} bytes; expected a raw RSA signature");
    }
    Ok(sig)
}

/// A new module-signing key pair, as `mok-keygen` writes it.
#[derive(Debug)]
pub struct NewMok {
    pub key: PathBuf,
    pub cert_pem: PathBuf,
    pub cert_der: PathBuf,
    pub signer: ModuleSigner,
}

/// Checks a subject common name for `mok-keygen`.
fn check_common_name(cn: &str) -> anyhow::Result<()> {
    let ok = !cn.is_empty()
        && cn.len() <= 64
        && cn.chars().all(|c| c.is_ascii_alphanumeric() || " .-_()/:".contains(c))
        && !cn.starts_with(' ')
        && !cn.ends_with(' ');
    if !ok {
        bail!(
            "--subject `{}`: use 1-64 characters of letters, digits, space and .-_()/: (no leading or trailing space)",
            sanitize(cn)
        );
    }
    Ok(())
}

/// Makes an RSA key and a self-signed certificate for module signing (key
/// usage digitalSignature, extended key usage codeSigning and module
/// signing, not a CA, a subject key id) in `dir`: NAME.key (0600),
/// NAME.pem and NAME.der (for `mokutil --import`). Refuses to overwrite.
pub fn mok_keygen(dir: &Path, name: &str, common_name: &str, valid: Duration, bits: usize) -> anyhow::Result<NewMok> {
    check_common_name(common_name)?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) || name.starts_with('.')
    {
        bail!("--name `{}`: use letters, digits and -_. (not starting with a dot)", sanitize(name));
    }
    let paths = [dir.join(format!("{name}.key")), dir.join(format!("{name}.pem")), dir.join(format!("{name}.der"))];
    if let Some(p) = paths.iter().find(|p| p.symlink_metadata().is_ok()) {
        bail!("{}: exists; choose another --name or move it away", shown(p));
    }
    let private = RsaPrivateKey::new(&mut rand_core::OsRng, bits).context("cannot generate the RSA key")?;
    let signing = rsa::pkcs1v15::SigningKey::<Sha256>::new(private.clone());
    let public_der = rsa::pkcs8::EncodePublicKey::to_public_key_der(&RsaPublicKey::from(&private))
        .context("cannot encode the public key")?;
    let spki = SubjectPublicKeyInfoOwned::from_der(public_der.as_bytes())?;
    let mut serial = [0u8; 16];
    getrandom::getrandom(&mut serial).context("cannot read random bytes")?;
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    let subject = Name::from_str(&format!("CN={common_name}")).context("cannot make the subject name")?;
    let validity = Validity::from_now(valid).context("cannot set the validity period")?;
    // A self-signed leaf: the profile adds the subject (and authority) key
    // id, basicConstraints CA:FALSE and keyUsage digitalSignature.
    let profile =
        Profile::Leaf { issuer: subject.clone(), enable_key_agreement: false, enable_key_encipherment: false };
    let mut b = CertificateBuilder::new(profile, SerialNumber::new(&serial)?, validity, subject, spki, &signing)
        .context("cannot start the certificate")?;
    b.add_extension(&ExtendedKeyUsage(vec![const_oid::db::rfc5280::ID_KP_CODE_SIGNING, EKU_MODULE_SIGNING]))?;
    let cert = b.build::<rsa::pkcs1v15::Signature>().context("cannot sign the certificate")?;

    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("{}: cannot create the key folder", shown(dir)))?;
    let key_pem = private.to_pkcs8_pem(LineEnding::LF).context("cannot encode the key")?;
    let cert_pem = cert.to_pem(LineEnding::LF).context("cannot encode the certificate")?;
    let cert_der = cert.to_der().context("cannot encode the certificate")?;
    milspec_format::atomic::write_atomic(&paths[0], key_pem.as_bytes(), 0o600)
        .with_context(|| format!("{}: cannot write", shown(&paths[0])))?;
    milspec_format::atomic::write_atomic(&paths[1], cert_pem.as_bytes(), 0o644)
        .with_context(|| format!("{}: cannot write", shown(&paths[1])))?;
    milspec_format::atomic::write_atomic(&paths[2], &cert_der, 0o644)
        .with_context(|| format!("{}: cannot write", shown(&paths[2])))?;
    let [key, cert_pem, cert_der] = paths;
    Ok(NewMok { key, cert_pem, cert_der, signer: signer_of(&cert) })
}

/// Signs the module at `input` into `out` (atomically; `out` may be `input`).
pub fn sign_file(key: &ModuleKey, input: &Path, out: &Path, max: u64) -> anyhow::Result<modsig::AppendedSignature> {
    use milspec_format::{read_regular, OpenPolicy};
    let bytes =
        read_regular(input, OpenPolicy::follow(max)).with_context(|| format!("{}: cannot read", shown(input)))?;
    milspec_format::ModInfo::parse(&bytes).with_context(|| format!("{}: not a kernel module", shown(input)))?;
    let signed = key.sign_bytes(&bytes).with_context(|| shown(input))?;
    milspec_format::atomic::write_atomic(out, &signed, 0o644)
        .with_context(|| format!("{}: cannot write", shown(out)))?;
    modsig::parse(&signed)?.context("the signature just made cannot be read back")
}
