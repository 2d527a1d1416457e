//! Which certificate authorities the HTTPS mirror client trusts: the
//! system store, plus the PEM certificates of `[source] ca_file`.
//!
//! The system store is read with `rustls-native-certs`: the file and
//! folder OpenSSL uses on this host (`/etc/ssl/certs`, kept by
//! `update-ca-certificates`), or `SSL_CERT_FILE` / `SSL_CERT_DIR` when
//! set. A host whose store yields no usable certificate falls back to the
//! Mozilla roots built into the binary, with one warning.

use std::io::Read;
use std::path::{Path, PathBuf};

use milspec_format::{open_regular, FileKind, OpenError, OpenPolicy};
use rustls::pki_types::pem::{self, PemObject, SectionKind};
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;
use tracing::{debug, info, warn};

/// Largest `ca_file` read.
pub const MAX_CA_FILE: u64 = 1024 * 1024;
/// Most certificates one `ca_file` may hold.
pub const MAX_CA_CERTS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("[source] ca_file `{}` is not an absolute path; give the full path of a PEM file (e.g. /etc/milspecd/mirror-ca.pem)", path.display())]
    NotAbsolute { path: PathBuf },
    #[error("[source] ca_file {}: cannot read it: {source}; check the path, or remove ca_file", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("[source] ca_file {}: is {kind}, not a regular file; point ca_file at a PEM file", path.display())]
    NotRegular { path: PathBuf, kind: FileKind },
    #[error("[source] ca_file {}: larger than {limit} bytes; a CA file holds a few PEM certificates: keep only the mirror's CA in it", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("[source] ca_file {}: not valid PEM ({detail}); it must hold `-----BEGIN CERTIFICATE-----` blocks", path.display())]
    Pem { path: PathBuf, detail: String },
    #[error("[source] ca_file {}: holds no certificate; put the mirror's CA certificate in it in PEM form (`-----BEGIN CERTIFICATE-----`)", path.display())]
    Empty { path: PathBuf },
    #[error("[source] ca_file {}: holds a private key; a CA file holds only certificates: remove the key from it (and treat the key as exposed)", path.display())]
    PrivateKey { path: PathBuf },
    #[error("[source] ca_file {}: holds more than {limit} certificates; keep only the mirror's CA in it", path.display())]
    TooMany { path: PathBuf, limit: usize },
    #[error("[source] ca_file {}: certificate {number} is not a usable CA certificate ({detail}); replace it with the CA's PEM certificate", path.display())]
    BadCertificate { path: PathBuf, number: usize, detail: String },
}

/// Where the trusted roots came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// The host's CA store.
    System,
    /// The Mozilla roots built in: the host's store yielded nothing.
    BuiltIn,
}

/// The roots one HTTPS client trusts.
#[derive(Debug, Clone)]
pub struct Roots {
    pub certs: Vec<CertificateDer<'static>>,
    pub base: Base,
    /// How many of `certs` came from `[source] ca_file`.
    pub from_ca_file: usize,
}

impl Roots {
    /// The system store (or the built-in roots) plus `ca_file`'s certificates.
    pub fn load(ca_file: Option<&Path>) -> Result<Roots, TrustError> {
        let extra = ca_file.map(load_ca_file).transpose()?.unwrap_or_default();
        let mut roots = Roots::base(system_certs());
        roots.from_ca_file = extra.len();
        roots.certs.extend(extra);
        if let Some(p) = ca_file {
            info!("mirror: trusting {} certificate(s) from [source] ca_file {}", roots.from_ca_file, p.display());
        }
        Ok(roots)
    }

    /// The system store as read from the host, or the built-in roots if it
    /// yields no usable certificate.
    pub fn system() -> Roots {
        Roots::base(system_certs())
    }

    fn base(system: Vec<CertificateDer<'static>>) -> Roots {
        if system.is_empty() {
            warn!(
                "mirror: the system CA store holds no usable certificate (see SSL_CERT_FILE, SSL_CERT_DIR and \
                 /etc/ssl/certs; install ca-certificates); trusting the built-in Mozilla roots instead"
            );
            Roots { certs: webpki_root_certs::TLS_SERVER_ROOT_CERTS.to_vec(), base: Base::BuiltIn, from_ca_file: 0 }
        } else {
            Roots { certs: system, base: Base::System, from_ca_file: 0 }
        }
    }
}

/// The system store's certificates that parse as trust anchors.
fn system_certs() -> Vec<CertificateDer<'static>> {
    let found = rustls_native_certs::load_native_certs();
    for e in found.errors.iter().take(3) {
        debug!("mirror: system CA store: {}", milspec_format::text::EscapedDisplay(e));
    }
    let usable: Vec<_> = found.certs.into_iter().filter(|c| RootCertStore::empty().add(c.clone()).is_ok()).collect();
    debug!("mirror: {} certificate(s) from the system CA store", usable.len());
    usable
}

/// Reads `path`: at most [`MAX_CA_FILE`] bytes holding 1 to
/// [`MAX_CA_CERTS`] PEM certificates, each a valid trust anchor. Other PEM
/// sections (a CRL, say) are skipped; a private key is refused.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let p = || path.to_path_buf();
    if !path.is_absolute() {
        return Err(TrustError::NotAbsolute { path: p() });
    }
    let file = open_regular(path, OpenPolicy::follow(MAX_CA_FILE)).map_err(|e| match e {
        OpenError::NotRegular { kind, .. } => TrustError::NotRegular { path: p(), kind },
        OpenError::TooLarge { .. } => TrustError::TooLarge { path: p(), limit: MAX_CA_FILE },
        OpenError::Io { source, .. } => TrustError::Read { path: p(), source },
    })?;
    let mut bytes = Vec::new();
    // The cap again: the file may grow after the size check.
    file.file.take(MAX_CA_FILE + 1).read_to_end(&mut bytes).map_err(|source| TrustError::Read { path: p(), source })?;
    if bytes.len() as u64 > MAX_CA_FILE {
        return Err(TrustError::TooLarge { path: p(), limit: MAX_CA_FILE });
    }
    parse_ca_pem(&bytes, path)
}

/// The certificates of a CA file's text; `path` names it in errors.
pub fn parse_ca_pem(bytes: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let p = || path.to_path_buf();
    let mut certs = Vec::new();
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes) {
        let (kind, der) = item.map_err(|e| TrustError::Pem { path: p(), detail: pem_detail(&e) })?;
        match kind {
            SectionKind::Certificate => {
                if certs.len() == MAX_CA_CERTS {
                    return Err(TrustError::TooMany { path: p(), limit: MAX_CA_CERTS });
                }
                let cert = CertificateDer::from(der);
                RootCertStore::empty().add(cert.clone()).map_err(|e| TrustError::BadCertificate {
                    path: p(),
                    number: certs.len() + 1,
                    detail: e.to_string(),
                })?;
                certs.push(cert);
            }
            SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => {
                return Err(TrustError::PrivateKey { path: p() })
            }
            _ => {}
        }
    }
    if certs.is_empty() {
        return Err(TrustError::Empty { path: p() });
    }
    Ok(certs)
}

fn pem_detail(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a BEGIN line without its END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a malformed BEGIN line".into(),
        pem::Error::Base64Decode(_) => "bad base64 inside a block".into(),
        _ => "unreadable".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_block(kind: &str, der: &[u8]) -> String {
        use std::fmt::Write;
        const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut b64 = String::new();
        for chunk in der.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    b64.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    b64.push('=');
                }
            }
        }
        let mut out = format!("-----BEGIN {kind}-----\n");
        for line in b64.as_bytes().chunks(64) {
            let _ = writeln!(out, "{}", std::str::from_utf8(line).unwrap_or_default());
        }
        let _ = writeln!(out, "-----END {kind}-----");
        out
    }

    fn mozilla_pem(n: usize) -> String {
        webpki_root_certs::TLS_SERVER_ROOT_CERTS[..n].iter().map(|c| pem_block("CERTIFICATE", c)).collect()
    }

    #[test]
    fn ca_pem_accepts_certificates_and_refuses_the_rest() {
        let path = Path::new("/etc/milspecd/ca.pem");
        assert_eq!(parse_ca_pem(mozilla_pem(2).as_bytes(), path).map(|c| c.len()).ok(), Some(2));
        let with_crl = format!("{}{}", mozilla_pem(1), pem_block("X509 CRL", b"whatever"));
        assert_eq!(parse_ca_pem(with_crl.as_bytes(), path).map(|c| c.len()).ok(), Some(1));

        let cases: [(String, &str); 5] = [
            (String::new(), "holds no certificate"),
            ("just some text\n".into(), "holds no certificate"),
            (pem_block("CERTIFICATE", b"not a certificate"), "certificate 1 is not a usable CA"),
            (format!("{}{}", mozilla_pem(1), pem_block("PRIVATE KEY", b"k")), "private key"),
            ("-----BEGIN CERTIFICATE-----\nAAAA\n".into(), "not valid PEM"),
        ];
        for (text, want) in cases {
            let e = parse_ca_pem(text.as_bytes(), path).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("/etc/milspecd/ca.pem"), "{want}: {e}");
        }
        let many = mozilla_pem(1).repeat(MAX_CA_CERTS + 1);
        assert!(matches!(parse_ca_pem(many.as_bytes(), path), Err(TrustError::TooMany { .. })));
    }

    #[test]
    fn ca_file_is_read_bounded() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let d = dir.path();
        assert!(matches!(load_ca_file(Path::new("ca.pem")), Err(TrustError::NotAbsolute { .. })));
        assert!(matches!(load_ca_file(&d.join("missing.pem")), Err(TrustError::Read { .. })));
        assert!(matches!(load_ca_file(d), Err(TrustError::NotRegular { .. })));
        let big = d.join("big.pem");
        std::fs::write(&big, vec![b'\n'; MAX_CA_FILE as usize + 1]).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(load_ca_file(&big), Err(TrustError::TooLarge { .. })));
        let good = d.join("good.pem");
        std::fs::write(&good, mozilla_pem(3)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(load_ca_file(&good).map(|c| c.len()).ok(), Some(3));
        let roots = Roots::load(Some(&good)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(roots.from_ca_file, 3);
        assert!(roots.certs.len() > 3);
    }

    #[test]
    fn an_empty_system_store_falls_back_to_the_built_in_roots() {
        let r = Roots::base(Vec::new());
        assert_eq!(r.base, Base::BuiltIn);
        assert_eq!(r.certs.len(), webpki_root_certs::TLS_SERVER_ROOT_CERTS.len());
        let one = webpki_root_certs::TLS_SERVER_ROOT_CERTS[0].clone();
        let r = Roots::base(vec![one]);
        assert_eq!((r.base, r.certs.len()), (Base::System, 1));
    }
}
