//! One interface to every model family: what the actor samples a broadcast version with
//! ([`Rollout`], made by [`rollout`]) and what the learner broadcasts and checkpoints
//! ([`Parameters`]). The roles hold `Box<dyn Rollout>` and `Box<dyn Parameters>`; only
//! this crate knows a family's layout (`policy.family` chooses it).
//!
//! - [`MelodyRollout`]: the built-in transformer, on the rollout engine (`actor.engine =
//!   "native"`) or burn's forward (`"burn"`, the GPU path);
//! - [`crate::musicgen::rollout::MusicgenRollout`]: a MusicGen folder whose decoder each
//!   version replaces.

use burn::tensor::Device;
use musicrl_config::{ENGINE_BURN, FAMILY_MUSICGEN, PolicyConfig};

use crate::melody::params::ParameterBlob;
use crate::melody::sampling::{Sampled, Sampler};
use crate::melody::{Engine, Policy};
use crate::musicgen::rl::Trainable;
use crate::musicgen::rollout::MusicgenRollout;
use crate::{PolicyError, PolicyVersion, Result};

/// What samples a family's parameter versions (one per actor; it moves in and out of the
/// blocking pool, so it is `Send`).
pub trait Rollout: Send {
    /// The version loaded now (`None` before the first).
    fn version(&self) -> Option<PolicyVersion>;
    /// Takes a broadcast version, replacing the one loaded.
    fn load(&mut self, blob: &ParameterBlob) -> Result<()>;
    /// Restarts the draws from `seed`: the same seed, version and captions give the same
    /// clips.
    fn reseed(&mut self, seed: u64);
    /// One clip per caption, with the behaviour log-probability of every token (the
    /// distribution the learner scores: the version's temperature, no guidance).
    fn sample(&mut self, captions: &[String]) -> Result<Vec<Sampled>>;
}

/// The rollout of `policy.family`. `engine` is `actor.engine` (`"native"`: the family's
/// CPU rollout engine with `threads` threads, 0 every core; `"burn"`: burn's forward on
/// `device`); `temperature` the melody sampler's (`sampling.temperature`; MusicGen samples
/// at each version's).
pub fn rollout(
    policy: &PolicyConfig,
    engine: &str,
    threads: usize,
    temperature: f32,
    device: &Device,
) -> Result<Box<dyn Rollout>> {
    let engine_threads = (engine != ENGINE_BURN).then_some(threads);
    if policy.family == FAMILY_MUSICGEN {
        return Ok(Box::new(MusicgenRollout::load(
            policy,
            device,
            engine_threads,
        )?));
    }
    Ok(Box::new(MelodyRollout {
        sampler: Sampler::new(0, temperature),
        temperature,
        engine_threads,
        device: device.clone(),
        loaded: None,
    }))
}

/// The melody transformer's rollout.
pub struct MelodyRollout {
    sampler: Sampler,
    temperature: f32,
    /// `Some(threads)`: the rollout engine; `None`: burn's forward on `device`.
    engine_threads: Option<usize>,
    device: Device,
    loaded: Option<(PolicyVersion, PolicyConfig, Loaded)>,
}

enum Loaded {
    Engine(Engine),
    Burn(Box<Policy>),
}

impl Rollout for MelodyRollout {
    fn version(&self) -> Option<PolicyVersion> {
        self.loaded.as_ref().map(|(v, _, _)| *v)
    }

    fn load(&mut self, blob: &ParameterBlob) -> Result<()> {
        let policy = blob.to_policy(&self.device)?;
        let loaded = match self.engine_threads {
            Some(threads) => Loaded::Engine(Engine::from_policy(&policy, &blob.config, threads)?),
            None => Loaded::Burn(Box::new(policy)),
        };
        self.loaded = Some((blob.version, blob.config.clone(), loaded));
        Ok(())
    }

    fn reseed(&mut self, seed: u64) {
        self.sampler = Sampler::new(seed, self.temperature);
    }

    fn sample(&mut self, captions: &[String]) -> Result<Vec<Sampled>> {
        let Some((_, config, loaded)) = &self.loaded else {
            return Err(PolicyError::InvalidInput(
                "sample before any parameter version was loaded".into(),
            ));
        };
        Ok(match loaded {
            Loaded::Engine(engine) => {
                self.sampler
                    .sample_engine(engine, captions, config.max_tokens)
            }
            Loaded::Burn(policy) => {
                self.sampler
                    .sample(policy, config, captions, config.max_tokens, &self.device)
            }
        })
    }
}

/// A frozen copy of a version's parameters, as the learner hands it to its publisher
/// thread (sharing the tensors: nothing is copied until it is serialised).
pub trait Parameters: Send {
    /// The version's broadcast form.
    fn blob(
        &self,
        version: PolicyVersion,
        config: &PolicyConfig,
        temperature: f32,
    ) -> Result<ParameterBlob>;
}

impl Parameters for Policy {
    fn blob(
        &self,
        version: PolicyVersion,
        config: &PolicyConfig,
        temperature: f32,
    ) -> Result<ParameterBlob> {
        ParameterBlob::from_policy(self, version, config, temperature)
    }
}

impl Parameters for Trainable {
    fn blob(
        &self,
        version: PolicyVersion,
        config: &PolicyConfig,
        temperature: f32,
    ) -> Result<ParameterBlob> {
        Ok(ParameterBlob::from_bytes(
            self.broadcast_bytes()?,
            version,
            config,
            temperature,
        ))
    }
}
