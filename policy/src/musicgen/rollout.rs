//! Sampling a MusicGen policy for the actors: the folder's frozen text encoder and a
//! decoder the learner broadcast, clips drawn with the behaviour log-probability of every
//! code ([`crate::family::Rollout`]).
//!
//! The folder loads once; each parameter version replaces only the decoder
//! ([`Trainable::broadcast_bytes`]: the trained decoder, or with `policy.lora` the adapters,
//! merged into the folder's decoder as they arrive). Clips are drawn at the version's temperature over the
//! whole codebook, guidance off: the distribution whose log-probabilities the learner
//! computes. With the rollout engine (`actor.engine = "native"`, the default) each
//! version's decoder is copied into [`Engine`], which draws the codes burn would for the
//! same seed; otherwise burn's own forward samples (the path for a GPU).

use std::path::Path;

use burn::tensor::Device;
use musicrl_config::PolicyConfig;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::engine::Engine;
use super::rl::{Trainable, flatten_codes};
use super::sampling::Decoding;
use super::{MusicGen, SamplingOptions};
use crate::family::Rollout;
use crate::melody::params::ParameterBlob;
use crate::melody::sampling::Sampled;
use crate::{PolicyError, PolicyVersion, Result};

/// A loaded MusicGen folder and the shapes its versions must fit.
pub struct MusicgenRollout {
    model: MusicGen,
    /// The trainable part as the folder has it: each version's bytes load into a copy.
    template: Trainable,
    frames: usize,
    /// The current version on plain buffers (`None`: sample with burn), and the threads it
    /// splits each product over.
    engine: Option<Engine>,
    threads: Option<usize>,
    /// The version loaded and the temperature it samples at.
    version: Option<(PolicyVersion, f32)>,
    /// Each round's sampling seed is drawn from it.
    rng: StdRng,
}

impl std::fmt::Debug for MusicgenRollout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MusicgenRollout")
            .field("folder", &self.model.folder())
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

impl MusicgenRollout {
    /// Loads `policy.folder` (found from the working directory or the installation).
    /// `engine_threads`: sample on the rollout engine with that many threads (0: every
    /// core), or `None` to sample with burn.
    pub fn load(
        policy: &PolicyConfig,
        device: &Device,
        engine_threads: Option<usize>,
    ) -> Result<Self> {
        let folder = musicrl_config::paths::require("policy.folder", &policy.folder)
            .map_err(|e| PolicyError::BadParameters(e.to_string()))?;
        let model = MusicGen::load(Path::new(&folder), device)
            .map_err(|e| PolicyError::BadParameters(format!("policy.folder: {e}")))?;
        let template = Trainable::for_policy(&model, &policy.lora, device)?;
        Ok(Self {
            model,
            template,
            frames: policy.frames,
            engine: None,
            threads: engine_threads,
            version: None,
            rng: StdRng::seed_from_u64(0),
        })
    }

    /// The same folder, sharing its tensors (no weights are copied or read again), with no
    /// version loaded and no engine: a second rollout to load a new version into while this
    /// one keeps sampling.
    pub fn fresh(&self) -> Self {
        Self {
            model: self.model.clone(),
            template: self.template.clone(),
            frames: self.frames,
            engine: None,
            threads: self.threads,
            version: None,
            rng: StdRng::seed_from_u64(0),
        }
    }

    /// Takes a version's parameters ([`Trainable::broadcast_bytes`]: the trainable part, or
    /// the adapters, merged here into the folder's decoder).
    pub fn set_parameters(&mut self, bytes: &[u8]) -> Result<()> {
        let decoder = Trainable::decoder_from_broadcast(&self.template, bytes).map_err(|e| {
            PolicyError::BadParameters(format!("a MusicGen parameter version: {e}"))
        })?;
        self.install(decoder);
        Ok(())
    }

    /// Takes a checkpoint's `policy.bpk` ([`Trainable::to_bytes`]: the trained decoder and
    /// value head, or with `policy.lora` the adapters and value head, merged here).
    pub fn set_checkpoint(&mut self, bytes: &[u8]) -> Result<()> {
        let trained = Trainable::from_bytes(self.template.clone(), bytes)
            .map_err(|e| PolicyError::BadParameters(format!("a MusicGen checkpoint: {e}")))?;
        self.install(trained.merged_decoder());
        Ok(())
    }

    /// Samples with the folder's own decoder (step 0), as loaded.
    pub fn use_folder_decoder(&mut self) {
        let decoder = self.template.merged_decoder();
        self.install(decoder);
    }

    fn install(&mut self, decoder: super::decoder::Decoder) {
        self.model.set_decoder(decoder);
        // The old version's buffers go before the new ones are made: one packed copy of
        // the decoder at a time (1.4 GB at musicgen-small's shape).
        self.engine = None;
        self.engine = self
            .threads
            .map(|threads| Engine::new(self.model.decoder(), threads));
    }

    /// The codebooks of each clip (its rows).
    pub fn codebooks(&self) -> usize {
        self.model.config().decoder.num_codebooks
    }

    /// Frames a clip is sampled to (`policy.frames`).
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// One clip per caption, `codebooks × frames` tokens each (codebook by codebook), with
    /// log μ of every code at `temperature`.
    pub fn sample_at(
        &self,
        captions: &[String],
        temperature: f32,
        seed: u64,
    ) -> Result<Vec<Sampled>> {
        let options = SamplingOptions {
            decoding: Decoding::Sample {
                temperature,
                top_k: 0,
            },
            guidance: None,
            seed,
        };
        let out = match &self.engine {
            Some(engine) => {
                self.model
                    .generate_scored_with(engine, captions, self.frames, &options)
            }
            None => self.model.generate_scored(captions, self.frames, &options),
        }
        .map_err(|e| PolicyError::Internal(format!("MusicGen sampling: {e}")))?;
        Ok(out
            .codes
            .iter()
            .zip(&out.logprobs)
            .map(|(codes, logprobs)| Sampled {
                tokens: flatten_codes(codes),
                logprobs: logprobs.iter().flatten().map(|&x| x as f32).collect(),
            })
            .collect())
    }
}

impl Rollout for MusicgenRollout {
    fn version(&self) -> Option<PolicyVersion> {
        self.version.map(|(v, _)| v)
    }

    fn load(&mut self, blob: &ParameterBlob) -> Result<()> {
        self.set_parameters(&blob.bytes)?;
        self.version = Some((blob.version, blob.temperature));
        Ok(())
    }

    fn reseed(&mut self, seed: u64) {
        self.rng = StdRng::seed_from_u64(seed);
    }

    fn sample(&mut self, captions: &[String]) -> Result<Vec<Sampled>> {
        let Some((_, temperature)) = self.version else {
            return Err(PolicyError::InvalidInput(
                "sample before any parameter version was loaded".into(),
            ));
        };
        let seed = self.rng.random::<u64>();
        self.sample_at(captions, temperature, seed)
    }
}
