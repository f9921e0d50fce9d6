//! Policy parameters as bytes: the burnpack format, used for the broadcast to actors and
//! for checkpoints, and the broadcast's compact form (bf16 safetensors). Loading checks
//! shapes against the configured architecture.

use std::path::Path;

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device};

use super::Policy;
use crate::PolicyVersion;
use crate::error::{PolicyError as Error, Result};
use musicrl_config::PolicyConfig;

pub use musicrl_config::ParameterEncoding;

/// A published parameter version, ready to send.
#[derive(Debug, Clone)]
pub struct ParameterBlob {
    pub version: PolicyVersion,
    /// What `bytes` hold.
    pub encoding: ParameterEncoding,
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
            encoding: ParameterEncoding::F32,
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
        match self.encoding {
            ParameterEncoding::F32 => decode_policy(&self.config, &self.bytes, device),
            ParameterEncoding::Bf16 => {
                let (policy, declared) = super::safetensors::from_bytes(&self.bytes, device)?;
                if declared != self.config {
                    return Err(Error::BadParameters(format!(
                        "version {}: the bf16 file declares another policy config than its \
                         chunks announce",
                        self.version
                    )));
                }
                Ok(policy)
            }
        }
    }

    /// This version in `encoding`: itself when it already is; the bf16 form is made by
    /// decoding the f32 parameters on the CPU and rounding each to bfloat16 (seconds at
    /// 100 M parameters: callers run it off any latency-sensitive thread). The result keeps
    /// the version, run, temperature and completion flag, with its own checksum.
    pub fn encoded_as(&self, encoding: ParameterEncoding) -> Result<Self> {
        if encoding == self.encoding {
            return Ok(self.clone());
        }
        if self.config.family != musicrl_config::FAMILY_MELODY {
            return Err(Error::BadParameters(format!(
                "a {} policy is broadcast in f32 only (its parameters are the family's own \
                 burnpack record)",
                self.config.family
            )));
        }
        let policy = self.to_policy(&Device::flex())?;
        let bytes = match encoding {
            ParameterEncoding::F32 => encode_policy(&policy)?,
            ParameterEncoding::Bf16 => super::safetensors::to_bytes_bf16(&policy, &self.config)?,
        };
        let mut blob = Self::from_bytes(bytes, self.version, &self.config, self.temperature);
        blob.encoding = encoding;
        blob.training_complete = self.training_complete;
        blob.learner_run = self.learner_run;
        Ok(blob)
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
    Ok(musicrl_config::fsutil::write_atomic(path, &bytes)?)
}

/// Reads a policy from a burnpack file.
pub fn load_policy(path: &Path, config: &PolicyConfig, device: &Device) -> Result<Policy> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_policy(config, &bytes, device).map_err(|e| match e {
        Error::BadParameters(m) => Error::BadParameters(format!("{}: {m}", path.display())),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The compact form keeps the version's identity, halves the parameter bytes, and
    /// decodes to the same parameters within the declared bf16 tolerance.
    #[test]
    fn a_version_encoded_as_bf16_keeps_its_identity_and_its_parameters() {
        let config = crate::melody::tiny_test_config();
        let device = Device::flex();
        let policy = Policy::new(&config, &device);
        let mut blob = ParameterBlob::from_policy(&policy, PolicyVersion(7), &config, 0.9).unwrap();
        blob.learner_run = 42;
        blob.training_complete = true;
        let bf16 = blob.encoded_as(ParameterEncoding::Bf16).unwrap();
        assert_eq!(bf16.encoding, ParameterEncoding::Bf16);
        assert_eq!(
            (
                bf16.version,
                bf16.learner_run,
                bf16.training_complete,
                bf16.temperature
            ),
            (PolicyVersion(7), 42, true, 0.9)
        );
        assert_eq!(bf16.checksum, *blake3::hash(&bf16.bytes).as_bytes());
        assert!(
            3 * bf16.bytes.len() < 2 * blob.bytes.len(),
            "{} vs {}",
            bf16.bytes.len(),
            blob.bytes.len()
        );
        let exact = super::super::safetensors::named_parameters(&policy);
        let widened =
            super::super::safetensors::named_parameters(&bf16.to_policy(&device).unwrap());
        for ((name, _, a), (_, _, b)) in exact.iter().zip(&widened) {
            for (x, y) in a.iter().zip(b) {
                assert!(
                    (x - y).abs() <= x.abs() * super::super::safetensors::BF16_RELATIVE_ERROR,
                    "{name}: {x} vs {y}"
                );
            }
        }
        // Back to f32 gives the widened values exactly; f32 to f32 is the blob itself.
        let again = bf16.encoded_as(ParameterEncoding::F32).unwrap();
        assert_eq!(again.encoding, ParameterEncoding::F32);
        let round = super::super::safetensors::named_parameters(&again.to_policy(&device).unwrap());
        assert_eq!(round, widened);
        assert_eq!(
            blob.encoded_as(ParameterEncoding::F32).unwrap().bytes,
            blob.bytes
        );
        // A bf16 file whose declared config disagrees with the announced one is refused.
        let mut liar = bf16.clone();
        liar.config.max_tokens = 5;
        let e = liar.to_policy(&device).unwrap_err().to_string();
        assert!(e.contains("another policy config"), "{e}");
    }
}
