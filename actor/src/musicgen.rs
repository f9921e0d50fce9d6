//! Sampling a MusicGen policy: the folder's frozen text encoder and a decoder the learner
//! broadcast, clips drawn with the behaviour log-probability of every code.
//!
//! The actor loads the folder once; each parameter version replaces only the decoder and
//! value head (`musicrl_policy::musicgen::rl::Trainable`, burnpack bytes). Clips are drawn
//! at the learner's temperature over the whole codebook, guidance off: the distribution
//! whose log-probabilities the learner computes (`learner/src/musicgen.rs`). With
//! `actor.engine = "native"` (the default) each version's decoder is copied into the
//! MusicGen rollout engine (`musicrl_policy::musicgen::engine`), which draws the codes burn
//! would for the same seed; `"burn"` samples with burn's own forward (the path for a GPU).

use std::path::Path;

use burn::tensor::Device;
use musicrl_config::PolicyConfig;
use musicrl_policy::melody::sampling::Sampled;
use musicrl_policy::musicgen::engine::Engine;
use musicrl_policy::musicgen::rl::{Trainable, flatten_codes};
use musicrl_policy::musicgen::sampling::Decoding;
use musicrl_policy::musicgen::{MusicGen, SamplingOptions};

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
}

impl std::fmt::Debug for MusicgenRollout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MusicgenRollout")
            .field("folder", &self.model.folder())
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

fn bad(why: String) -> musicrl_common::Error {
    musicrl_common::Error::BadParameters(why)
}

impl MusicgenRollout {
    /// Loads `policy.folder` (found from the working directory or the installation).
    /// `engine_threads`: sample on the rollout engine with that many threads (0: every
    /// core), or `None` to sample with burn.
    pub fn load(
        policy: &PolicyConfig,
        device: &Device,
        engine_threads: Option<usize>,
    ) -> musicrl_common::Result<Self> {
        let folder = musicrl_config::paths::require("policy.folder", &policy.folder)?;
        let model = MusicGen::load(Path::new(&folder), device)
            .map_err(|e| bad(format!("policy.folder: {e}")))?;
        let template = Trainable::new(&model, device).map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            model,
            template,
            frames: policy.frames,
            engine: None,
            threads: engine_threads,
        })
    }

    /// Takes a broadcast version's parameters.
    pub fn set_parameters(&mut self, bytes: &[u8]) -> musicrl_common::Result<()> {
        let trained = Trainable::from_bytes(self.template.clone(), bytes)
            .map_err(|e| bad(format!("a MusicGen parameter version: {e}")))?;
        self.model.set_decoder(trained.decoder);
        // The old version's buffers go before the new ones are made: one packed copy of
        // the decoder at a time (1.4 GB at musicgen-small's shape).
        self.engine = None;
        self.engine = self
            .threads
            .map(|threads| Engine::new(self.model.decoder(), threads));
        Ok(())
    }

    /// One clip per caption, `codebooks × frames` tokens each (codebook by codebook), with
    /// log μ of every code at `temperature`.
    pub fn sample(
        &self,
        captions: &[String],
        temperature: f32,
        seed: u64,
    ) -> musicrl_common::Result<Vec<Sampled>> {
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
        .map_err(|e| musicrl_common::Error::Internal(format!("MusicGen sampling: {e}")))?;
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
