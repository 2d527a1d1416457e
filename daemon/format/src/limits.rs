//! Caps on every size and count a package reader will accept.

/// Bounds applied while reading a package. Every field is a hard cap: input
/// beyond it is rejected, never truncated and never buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest `manifest.json` in bytes.
    pub max_manifest: u64,
    /// Largest `signatures.json` in bytes.
    pub max_signatures_file: u64,
    /// Most signatures in `signatures.json`.
    pub max_signatures: usize,
    /// Most payloads (kernel releases) in one package; the index lists as
    /// many per entry ([`crate::index::MAX_RELEASES`]).
    pub max_payloads: usize,
    /// Largest single payload in bytes.
    pub max_payload_size: u64,
    /// Largest whole package in bytes.
    pub max_package_size: u64,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        max_manifest: 64 * 1024,
        max_signatures_file: 64 * 1024,
        max_signatures: 64,
        max_payloads: 64,
        max_payload_size: 256 * 1024 * 1024,
        max_package_size: 1024 * 1024 * 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// Caps on a trust document ([`crate::trust_doc`]): its file, its keys and
/// each role's key list.
pub mod trust {
    /// Largest `trust/N.keys.json` (the envelope) in bytes.
    pub const MAX_FILE: u64 = 256 * 1024;
    /// Most public keys one document names.
    pub const MAX_KEYS: usize = 64;
    /// Most signatures on one document.
    pub const MAX_SIGNATURES: usize = 64;
    /// Most key ids marked compromised.
    pub const MAX_COMPROMISED: usize = 256;
}
