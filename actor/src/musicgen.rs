//! Sampling a MusicGen policy: the folder's frozen text encoder and a decoder the learner
//! broadcast, clips drawn with the behaviour log-probability of every code.
//!
//! The actor loads the folder once; each parameter version replaces only the decoder and
//! value head (`musicrl_policy::musicgen::rl::Trainable`, burnpack bytes). Clips are drawn
//! at the learner's temperature over the whole codebook, guidance off: the distribution
//! whose log-probabilities the learner computes (`learner/src/musicgen.rs`).

use std::path::Path;

use burn::tensor::Device;
use musicrl_common::config::PolicyConfig;
use musicrl_common::policy::sampling::Sampled;
use musicrl_policy::musicgen::rl::{Trainable, flatten_codes};
use musicrl_policy::musicgen::sampling::Decoding;
use musicrl_policy::musicgen::{MusicGen, SamplingOptions};

/// A loaded MusicGen folder and the shapes its versions must fit.
pub struct MusicgenRollout {
    model: MusicGen,
    /// The trainable part as the folder has it: each version's bytes load into a copy.
    template: Trainable,
    frames: usize,
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
    pub fn load(policy: &PolicyConfig, device: &Device) -> musicrl_common::Result<Self> {
        let folder = musicrl_common::config::paths::require("policy.folder", &policy.folder)?;
        let model = MusicGen::load(Path::new(&folder), device)
            .map_err(|e| bad(format!("policy.folder: {e}")))?;
        let template = Trainable::new(&model, device).map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            model,
            template,
            frames: policy.frames,
        })
    }

    /// Takes a broadcast version's parameters.
    pub fn set_parameters(&mut self, bytes: &[u8]) -> musicrl_common::Result<()> {
        let trained = Trainable::from_bytes(self.template.clone(), bytes)
            .map_err(|e| bad(format!("a MusicGen parameter version: {e}")))?;
        self.model.set_decoder(trained.decoder);
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
        let out = self
            .model
            .generate_scored(captions, self.frames, &options)
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
