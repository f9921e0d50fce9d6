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
use musicrl_policy::Parameters;
use musicrl_policy::melody::params::{ParameterBlob, encode_policy};
use musicrl_policy::musicgen::MusicGen;

use crate::error::{LearnerError, Result};
use crate::musicgen::MusicgenTrainer;
use crate::trainer::{SkippedBatch, StepStats, Trainer};

/// A frozen copy of a version's parameters, handed to the publisher thread: the policy
/// crate's [`Parameters`] of whichever family (sharing the tensors: nothing is copied
/// until it is serialised).
pub type Snapshot = Box<dyn Parameters>;

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
    /// One update on `batch`, or why the batch was skipped (nothing changed then).
    fn try_train_step(
        &mut self,
        batch: &[Trajectory],
    ) -> std::result::Result<StepStats, SkippedBatch>;
}

impl Learn for Trainer {
    fn step_count(&self) -> u64 {
        Trainer::step_count(self)
    }
    fn snapshot(&self) -> Snapshot {
        Box::new(self.policy().valid())
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
    fn try_train_step(
        &mut self,
        batch: &[Trajectory],
    ) -> std::result::Result<StepStats, SkippedBatch> {
        Trainer::try_train_step(self, batch)
    }
}

impl Learn for MusicgenTrainer {
    fn step_count(&self) -> u64 {
        MusicgenTrainer::step_count(self)
    }
    fn snapshot(&self) -> Snapshot {
        Box::new(self.trainable())
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
    fn try_train_step(
        &mut self,
        batch: &[Trajectory],
    ) -> std::result::Result<StepStats, SkippedBatch> {
        MusicgenTrainer::try_train_step(self, batch)
    }
}

/// The trainer of the configured family, behind [`Learn`]: the run loop, the publisher
/// and checkpoints never ask which family it is.
pub struct FamilyTrainer(Box<dyn Learn + Send>);

impl std::fmt::Debug for FamilyTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FamilyTrainer { .. }")
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
            return Ok(Self::from_trainer(trainer));
        }
        Ok(Self::from_trainer(Trainer::new(config, device)?))
    }

    /// Wraps a family's trainer.
    pub fn from_trainer(trainer: impl Learn + Send + 'static) -> Self {
        Self(Box::new(trainer))
    }

    /// The current parameters, ready to broadcast.
    pub fn blob(&self, config: &PolicyConfig, temperature: f32) -> Result<ParameterBlob> {
        Ok(self.snapshot().blob(self.version(), config, temperature)?)
    }
}

impl Learn for FamilyTrainer {
    fn step_count(&self) -> u64 {
        self.0.step_count()
    }
    fn snapshot(&self) -> Snapshot {
        self.0.snapshot()
    }
    fn policy_bytes(&self) -> Result<Vec<u8>> {
        self.0.policy_bytes()
    }
    fn reference_bytes(&self) -> Result<Option<Vec<u8>>> {
        self.0.reference_bytes()
    }
    fn optimizer_bytes(&self) -> Result<Vec<u8>> {
        self.0.optimizer_bytes()
    }
    fn try_train_step(
        &mut self,
        batch: &[Trajectory],
    ) -> std::result::Result<StepStats, SkippedBatch> {
        self.0.try_train_step(batch)
    }
}
