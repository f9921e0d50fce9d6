//! The policy families the learner trains, behind one interface: what the run loop, the
//! publisher and checkpoints use ([`Learn`], [`FamilyTrainer`]), so that none of them
//! knows a family's layout.
//!
//! - `melody`: [`crate::trainer::Trainer`], the built-in transformer.
//! - `musicgen`: [`crate::musicgen::MusicgenTrainer`], a Hugging Face MusicGen folder
//!   (`policy.folder`); the folder is θ0 and the KL reference, so `learner.init_policy`
//!   and `learner.reference_policy` are not read.

use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;

use musicrl_common::{PolicyVersion, Trajectory};
use musicrl_config::{Config, FAMILY_MUSICGEN, PolicyConfig};
use musicrl_policy::melody::Policy;
use musicrl_policy::melody::params::{ParameterBlob, encode_policy};
use musicrl_policy::musicgen::MusicGen;
use musicrl_policy::musicgen::rl::Trainable;

use crate::error::{LearnerError, Result};
use crate::musicgen::MusicgenTrainer;
use crate::trainer::{SkippedBatch, StepStats, Trainer};

/// A frozen copy of a version's parameters, handed to the publisher thread (sharing the
/// tensors: nothing is copied until it is serialised).
pub enum Snapshot {
    Melody(Policy),
    MusicGen(Trainable),
}

impl Snapshot {
    /// The version's broadcast form.
    pub fn blob(
        &self,
        version: PolicyVersion,
        config: &PolicyConfig,
        temperature: f32,
    ) -> musicrl_common::Result<ParameterBlob> {
        match self {
            Self::Melody(policy) => Ok(ParameterBlob::from_policy(
                policy,
                version,
                config,
                temperature,
            )?),
            Self::MusicGen(trainable) => Ok(ParameterBlob::from_bytes(
                trainable
                    .to_bytes()
                    .map_err(|e| musicrl_common::Error::Internal(e.to_string()))?,
                version,
                config,
                temperature,
            )),
        }
    }
}

/// What the run loop, the publisher and checkpoints need of a trainer.
pub trait Learn {
    /// Updates completed so far.
    fn step_count(&self) -> u64;
    /// Version n after n updates.
    fn version(&self) -> PolicyVersion {
        PolicyVersion(self.step_count())
    }
    /// The current parameters, frozen.
    fn snapshot(&self) -> Snapshot;
    /// The trained parameters as checkpoint bytes (`policy.bpk`).
    fn policy_bytes(&self) -> Result<Vec<u8>>;
    /// The frozen KL reference as checkpoint bytes (`reference.bpk`); `None` where the
    /// reference is the model folder itself.
    fn reference_bytes(&self) -> Result<Option<Vec<u8>>>;
    /// The optimiser's state (`optimizer.bpk`).
    fn optimizer_bytes(&self) -> Result<Vec<u8>>;
}

impl Learn for Trainer {
    fn step_count(&self) -> u64 {
        Trainer::step_count(self)
    }
    fn snapshot(&self) -> Snapshot {
        Snapshot::Melody(self.policy().valid())
    }
    fn policy_bytes(&self) -> Result<Vec<u8>> {
        Ok(encode_policy(self.policy())?)
    }
    fn reference_bytes(&self) -> Result<Option<Vec<u8>>> {
        Ok(Some(encode_policy(self.reference())?))
    }
    fn optimizer_bytes(&self) -> Result<Vec<u8>> {
        Trainer::optimizer_bytes(self)
    }
}

impl Learn for MusicgenTrainer {
    fn step_count(&self) -> u64 {
        MusicgenTrainer::step_count(self)
    }
    fn snapshot(&self) -> Snapshot {
        Snapshot::MusicGen(self.trainable())
    }
    fn policy_bytes(&self) -> Result<Vec<u8>> {
        self.trainable()
            .to_bytes()
            .map_err(|e| LearnerError::Checkpoint(e.to_string()))
    }
    fn reference_bytes(&self) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }
    fn optimizer_bytes(&self) -> Result<Vec<u8>> {
        MusicgenTrainer::optimizer_bytes(self)
    }
}

/// The trainer of the configured family.
pub enum FamilyTrainer {
    Melody(Box<Trainer>),
    MusicGen(Box<MusicgenTrainer>),
}

impl std::fmt::Debug for FamilyTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Melody(t) => t.fmt(f),
            Self::MusicGen(t) => t.fmt(f),
        }
    }
}

/// Loads `policy.folder` on the inference device.
pub fn load_musicgen(config: &Config) -> Result<MusicGen> {
    let p = &config.policy;
    let folder = musicrl_config::paths::require("policy.folder", &p.folder)
        .map_err(musicrl_common::Error::from)?;
    MusicGen::load(
        Path::new(&folder),
        &musicrl_policy::device::inference_device(),
    )
    .map_err(|e| bad_folder(e).into())
}

/// A folder the policy crate refused, as the learner reports it.
fn bad_folder(e: musicrl_policy::PolicyError) -> musicrl_common::Error {
    musicrl_common::Error::BadParameters(format!("policy.folder: {e}"))
}

impl FamilyTrainer {
    /// A fresh trainer at step 0 for `policy.family`.
    pub fn new(config: &Config, device: &Device) -> Result<Self> {
        if config.policy.family == FAMILY_MUSICGEN {
            let model = load_musicgen(config)?;
            let trainer = MusicgenTrainer::new(model, config.policy.frames, config, device)
                .map_err(bad_folder)?;
            return Ok(Self::MusicGen(Box::new(trainer)));
        }
        Ok(Self::Melody(Box::new(Trainer::new(config, device)?)))
    }

    fn inner(&self) -> &dyn Learn {
        match self {
            Self::Melody(t) => t.as_ref(),
            Self::MusicGen(t) => t.as_ref(),
        }
    }

    /// One update (see each family's `try_train_step`).
    pub fn try_train_step(
        &mut self,
        batch: &[Trajectory],
    ) -> std::result::Result<StepStats, SkippedBatch> {
        match self {
            Self::Melody(t) => t.try_train_step(batch),
            Self::MusicGen(t) => t.try_train_step(batch),
        }
    }

    /// The current parameters, ready to broadcast.
    pub fn blob(&self, config: &PolicyConfig, temperature: f32) -> Result<ParameterBlob> {
        Ok(self.snapshot().blob(self.version(), config, temperature)?)
    }
}

impl Learn for FamilyTrainer {
    fn step_count(&self) -> u64 {
        self.inner().step_count()
    }
    fn snapshot(&self) -> Snapshot {
        self.inner().snapshot()
    }
    fn policy_bytes(&self) -> Result<Vec<u8>> {
        self.inner().policy_bytes()
    }
    fn reference_bytes(&self) -> Result<Option<Vec<u8>>> {
        self.inner().reference_bytes()
    }
    fn optimizer_bytes(&self) -> Result<Vec<u8>> {
        self.inner().optimizer_bytes()
    }
}
