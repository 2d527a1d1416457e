//! The signed `dell-milspec` package format (`.mspkg`).
//!
//! One crate holds the types, the exact bytes that are signed and the
//! verification rules, so the daemon, `milspecctl` and the publisher tool
//! `milspec-repo` cannot disagree about what a valid package is.
//!
//! A package is a plain ustar archive whose entries come in a fixed order:
//!
//! 1. `manifest.json`: the exact bytes that are signed;
//! 2. `signatures.json`: ed25519 signatures over those bytes;
//! 3. one `payload/<kernel release>/<module>.ko` per kernel release.
//!
//! [`package::read_package`] checks the signatures before it parses the
//! manifest and before it reads a single payload byte, then streams every
//! payload through SHA-256 with the sizes bounded by [`Limits`].

pub mod atomic;
pub mod digest;
pub mod evolution;
pub mod index;
pub mod keys;
pub mod limits;
pub mod manifest;
pub mod modinfo;
pub mod modsig;
pub mod package;
pub mod regular;
pub mod republish;
pub mod signature;
pub mod tarwrite;
pub mod text;
pub mod trust_doc;
pub mod version;
pub mod writer;

#[cfg(feature = "test-support")]
pub mod testkit;

pub use digest::Sha256Digest;
pub use keys::{KeyError, KeyId, PublicKey, SecretKey, TrustedKeys};
pub use limits::Limits;
pub use manifest::{Manifest, ManifestError, Payload};
pub use modinfo::{ModInfo, ModInfoError};
pub use package::{
    open_package, read_package, read_package_file, Discard, FileError, OpenedPackage, PackageError, PackageStream,
    PayloadSink, Trust, VerifiedPackage,
};
pub use regular::{open_regular, read_regular, FileKind, OpenError, OpenPolicy, RegularFile, Symlinks};
pub use signature::{SignatureError, SignatureSet};
pub use text::{sanitize, sanitize_bytes, sanitize_to, Escaped};
