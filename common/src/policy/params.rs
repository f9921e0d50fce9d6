//! Policy parameters as bytes: the burnpack format, used for the broadcast to actors and
//! for checkpoints. Loading checks shapes against the configured architecture.

use std::path::Path;

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device};

use super::Policy;
use crate::config::PolicyConfig;
use crate::error::{Error, Result};
use crate::types::PolicyVersion;

/// A published parameter version, ready to send.
#[derive(Debug, Clone)]
pub struct ParameterBlob {
    pub version: PolicyVersion,
    /// Shared, immutable: every subscriber's chunks are slices of it (no copy per
    /// subscriber or per chunk).
    pub bytes: bytes::Bytes,
    /// blake3 of `bytes`.
    pub checksum: [u8; 32],
    pub config: PolicyConfig,
    pub temperature: f32,
    /// No newer version will follow.
    pub training_complete: bool,
    /// The learner incarnation that published it (0: not published by a learner).
    pub learner_run: u64,
}

impl ParameterBlob {
    /// Serialises `policy` as version `version`.
    pub fn from_policy(
        policy: &Policy,
        version: PolicyVersion,
        config: &PolicyConfig,
        temperature: f32,
    ) -> Result<Self> {
        let bytes = encode_policy(policy)?;
        Ok(Self::from_bytes(bytes, version, config, temperature))
    }

    pub fn from_bytes(
        bytes: Vec<u8>,
        version: PolicyVersion,
        config: &PolicyConfig,
        temperature: f32,
    ) -> Self {
        let checksum = *blake3::hash(&bytes).as_bytes();
        Self::from_hashed_bytes(bytes, checksum, version, config, temperature)
    }

    /// Like [`ParameterBlob::from_bytes`] with `checksum` already computed over `bytes`
    /// (the assembler hashes chunks as they arrive).
    pub fn from_hashed_bytes(
        bytes: Vec<u8>,
        checksum: [u8; 32],
        version: PolicyVersion,
        config: &PolicyConfig,
        temperature: f32,
    ) -> Self {
        Self {
            version,
            bytes: bytes::Bytes::from(bytes),
            checksum,
            config: config.clone(),
            temperature,
            training_complete: false,
            learner_run: 0,
        }
    }

    /// Rebuilds the policy on `device`.
    pub fn to_policy(&self, device: &Device) -> Result<Policy> {
        decode_policy(&self.config, &self.bytes, device)
    }
}

/// The policy's parameters as burnpack bytes.
pub fn encode_policy(policy: &Policy) -> Result<Vec<u8>> {
    let bytes = policy
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| Error::Internal(format!("serialising policy: {e}")))?;
    Ok(bytes.to_vec())
}

/// A policy of architecture `config` with the parameters in `bytes`.
pub fn decode_policy(config: &PolicyConfig, bytes: &[u8], device: &Device) -> Result<Policy> {
    // burn's record reader takes its own buffer: one copy here, none before (the actor's
    // assembler writes chunks straight into the blob's buffer).
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| Error::BadParameters(format!("not a burnpack parameter blob: {e}")))?;
    Policy::new(config, device)
        .try_load_record(record)
        .map_err(|e| Error::BadParameters(format!("parameters do not fit the policy config: {e}")))
}

/// Writes the policy to a burnpack file (atomically: a temporary file, then a rename).
pub fn save_policy(policy: &Policy, path: &Path) -> Result<()> {
    let bytes = encode_policy(policy)?;
    crate::fsutil::write_atomic(path, &bytes)
}

/// Reads a policy from a burnpack file.
pub fn load_policy(path: &Path, config: &PolicyConfig, device: &Device) -> Result<Policy> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_policy(config, &bytes, device).map_err(|e| match e {
        Error::BadParameters(m) => Error::BadParameters(format!("{}: {m}", path.display())),
        other => other,
    })
}
