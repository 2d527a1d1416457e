//! The two A/B slots on disk: `slots/<a|b>/{manifest.json, signatures.json,
//! module.ko, valid}` below the state folder.
//!
//! Staging follows one order so a slot is never half-written and valid:
//! remove `valid`, write the files, read them back and verify them, then
//! write `valid`. A slot without `valid` is empty as far as anyone cares.

use std::fs::{self, DirBuilder, File};
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use milspec_format::atomic::{remove_durable, write_atomic, AtomicFile};
use milspec_format::keys::KeyId;
use milspec_format::{Limits, Manifest, Payload, SignatureSet, TrustedKeys};

use crate::slot_id::SlotId;

const MANIFEST: &str = "manifest.json";
const SIGNATURES: &str = "signatures.json";
const MODULE: &str = "module.ko";
const VALID: &str = "valid";

#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("slot {slot}: {}: {source}", path.display())]
    Io { slot: SlotId, path: PathBuf, source: io::Error },
    #[error(
        "slot {slot}: stored manifest no longer verifies ({why}); the slot is treated as invalid: reinstall a package"
    )]
    Untrusted { slot: SlotId, why: String },
    #[error("slot {slot}: holds no payload for kernel {release}")]
    NoPayload { slot: SlotId, release: String },
    #[error("slot {slot}: module.ko does not match the manifest ({why}); the slot was left invalid")]
    Mismatch { slot: SlotId, why: String },
}

/// A valid slot, as read back and verified.
#[derive(Debug, Clone)]
pub struct Slot {
    pub id: SlotId,
    pub manifest: Manifest,
    /// The payload for the running kernel release.
    pub payload: Payload,
    pub module_path: PathBuf,
    pub signers: Vec<KeyId>,
}

/// What a slot check needs: who to trust and for which kernel.
#[derive(Debug, Clone, Copy)]
pub struct SlotTrust<'a> {
    pub keys: &'a TrustedKeys,
    pub threshold: usize,
    pub release: &'a str,
    pub limits: &'a Limits,
}

#[derive(Debug, Clone)]
pub struct SlotStore {
    root: PathBuf,
}

impl SlotStore {
    /// Opens (and creates, mode 0700) `state_dir/slots/{a,b}`.
    pub fn open(state_dir: &Path) -> Result<Self, SlotError> {
        let root = state_dir.join("slots");
        for id in SlotId::ALL {
            let dir = root.join(id.name());
            DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(|source| SlotError::Io {
                slot: id,
                path: dir.clone(),
                source,
            })?;
        }
        Ok(SlotStore { root })
    }

    pub fn dir(&self, id: SlotId) -> PathBuf {
        self.root.join(id.name())
    }

    pub fn module_path(&self, id: SlotId) -> PathBuf {
        self.dir(id).join(MODULE)
    }

    pub fn is_valid(&self, id: SlotId) -> bool {
        self.dir(id).join(VALID).exists()
    }

    fn io(&self, id: SlotId, path: PathBuf) -> impl FnOnce(io::Error) -> SlotError {
        move |source| SlotError::Io { slot: id, path, source }
    }

    /// Marks the slot invalid on disk (durably) before anything in it changes.
    pub fn invalidate(&self, id: SlotId) -> Result<(), SlotError> {
        let p = self.dir(id).join(VALID);
        remove_durable(&p).map_err(self.io(id, p.clone()))
    }

    /// Starts staging: invalidates the slot and returns the module file to
    /// stream the payload into. Nothing replaces `module.ko` until
    /// [`SlotStore::finish`].
    pub fn begin(&self, id: SlotId) -> Result<AtomicFile, SlotError> {
        self.invalidate(id)?;
        let p = self.module_path(id);
        AtomicFile::create(&p, 0o600).map_err(self.io(id, p.clone()))
    }

    /// Finishes staging: writes the module and the signed metadata, reads
    /// everything back and verifies it, then marks the slot valid.
    pub fn finish(
        &self,
        id: SlotId,
        module: AtomicFile,
        manifest_bytes: &[u8],
        signatures: &SignatureSet,
        trust: SlotTrust<'_>,
    ) -> Result<Slot, SlotError> {
        let dir = self.dir(id);
        module.commit().map_err(self.io(id, self.module_path(id)))?;
        let mp = dir.join(MANIFEST);
        write_atomic(&mp, manifest_bytes, 0o600).map_err(self.io(id, mp.clone()))?;
        let sp = dir.join(SIGNATURES);
        write_atomic(&sp, &signatures.to_bytes(), 0o600).map_err(self.io(id, sp.clone()))?;
        let slot = self.read_unchecked(id, trust)?;
        let file = File::open(&slot.module_path).map_err(self.io(id, slot.module_path.clone()))?;
        let (digest, size) = milspec_format::Sha256Digest::of_reader(file, trust.limits.max_payload_size)
            .map_err(self.io(id, slot.module_path.clone()))?;
        if size != Some(slot.payload.size) || digest != slot.payload.sha256 {
            return Err(SlotError::Mismatch { slot: id, why: format!("sha256 {digest}, size {size:?}") });
        }
        let vp = dir.join(VALID);
        write_atomic(&vp, format!("{}\n", slot.manifest.version).as_bytes(), 0o600).map_err(self.io(id, vp.clone()))?;
        Ok(slot)
    }

    /// Reads a slot back. `Ok(None)` when the slot is not marked valid.
    /// Signatures are checked again; the module's hash is checked when it
    /// is loaded, on the sealed copy that is handed to the kernel.
    pub fn read(&self, id: SlotId, trust: SlotTrust<'_>) -> Result<Option<Slot>, SlotError> {
        if !self.is_valid(id) {
            return Ok(None);
        }
        self.read_unchecked(id, trust).map(Some)
    }

    fn read_unchecked(&self, id: SlotId, trust: SlotTrust<'_>) -> Result<Slot, SlotError> {
        let dir = self.dir(id);
        let read = |name: &str, limit: u64| -> Result<Vec<u8>, SlotError> {
            let p = dir.join(name);
            let data = fs::read(&p).map_err(self.io(id, p.clone()))?;
            if data.len() as u64 > limit {
                return Err(SlotError::Untrusted { slot: id, why: format!("{name} is larger than {limit} bytes") });
            }
            Ok(data)
        };
        let manifest_bytes = read(MANIFEST, trust.limits.max_manifest)?;
        let sig_bytes = read(SIGNATURES, trust.limits.max_signatures_file)?;
        let untrusted = |why: String| SlotError::Untrusted { slot: id, why };
        let sigs = SignatureSet::parse(&sig_bytes, trust.limits).map_err(|e| untrusted(e.to_string()))?;
        let signers = sigs.check(&manifest_bytes, trust.keys, trust.threshold).map_err(|e| untrusted(e.to_string()))?;
        let manifest = Manifest::parse(&manifest_bytes, trust.limits).map_err(|e| untrusted(e.to_string()))?;
        let payload = manifest
            .payload_for(trust.release)
            .cloned()
            .ok_or_else(|| SlotError::NoPayload { slot: id, release: trust.release.to_string() })?;
        Ok(Slot { id, manifest, payload, module_path: self.module_path(id), signers })
    }
}

/// Writes all of a payload's chunks into a staging file.
pub fn write_chunk(file: &mut AtomicFile, chunk: &[u8]) -> io::Result<()> {
    file.write_all(chunk)
}
