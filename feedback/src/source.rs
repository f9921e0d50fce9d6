//! Where pairs come from: two samples of one policy, or an A/B of two checkpoints (one clip
//! each, the paper's side-by-side evaluation). Sampling runs on the rollout engine, on one
//! thread per call, off the async executor.
//!
//! *Not yet:* a source that follows the learner's broadcast (samples of the newest parameter
//! version); today a running RL job is sampled by pointing `checkpoints` or `policy` at its
//! checkpoints.

use std::path::Path;
use std::sync::Mutex;

use musicrl_common::config::{FeedbackConfig, PolicyConfig};
use musicrl_common::policy::Engine;
use musicrl_common::policy::params::load_policy;
use musicrl_common::policy::sampling::Sampler;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::error::{Error, Result};

/// One model a clip can be drawn from.
#[derive(Debug)]
pub struct Model {
    /// The clip's `source` in the database (a checkpoint name).
    pub name: String,
    engine: Engine,
}

impl Model {
    /// A model from an engine already built (tests, or a policy held in memory).
    pub fn new(name: &str, engine: Engine) -> Self {
        Self {
            name: name.to_string(),
            engine,
        }
    }
}

/// A clip drawn for a pair, before it is stored.
#[derive(Debug, Clone)]
pub struct Drawn {
    pub source: String,
    pub seed: u64,
    pub tokens: Vec<u32>,
}

/// The pair source with its prompts.
#[derive(Debug)]
pub struct PairSource {
    models: Vec<Model>,
    /// True: one clip from each of two different models; false: two from the one model.
    ab: bool,
    prompts: Vec<String>,
    temperature: f32,
    max_tokens: usize,
    rng: Mutex<StdRng>,
}

/// Loads a policy checkpoint for the engine, with the architecture saved beside it when there
/// is one (`config.toml`).
pub fn load_model(name: &str, path: &Path, fallback: &PolicyConfig) -> Result<Model> {
    let config = match path
        .parent()
        .map(|d| d.join("config.toml"))
        .filter(|p| p.exists())
    {
        Some(saved) => {
            musicrl_common::config::Config::from_file(&saved)
                .map_err(|e| Error::Source(format!("{}: {e}", saved.display())))?
                .policy
        }
        None => fallback.clone(),
    };
    let device = musicrl_common::device::inference_device();
    let policy = load_policy(path, &config, &device)
        .map_err(|e| Error::Source(format!("cannot load the policy {}: {e}", path.display())))?;
    let engine = Engine::from_policy(&policy, &config, 1)
        .map_err(|e| Error::Source(format!("{}: {e}", path.display())))?;
    Ok(Model::new(name, engine))
}

impl PairSource {
    /// The source the configuration names. `default_policy` is used when `feedback.policy`
    /// is empty.
    pub fn from_config(
        config: &FeedbackConfig,
        policy: &PolicyConfig,
        default_policy: &Path,
        temperature: f32,
    ) -> Result<Self> {
        let prompts = musicrl_common::prompts::load_prompts(&config.prompts)
            .map_err(|e| Error::Source(format!("feedback.prompts: {e}")))?;
        let (models, ab) = match config.source.as_str() {
            "checkpoints" => (
                config
                    .named_checkpoints()
                    .iter()
                    .map(|(name, path)| load_model(name, path, policy))
                    .collect::<Result<Vec<_>>>()?,
                true,
            ),
            _ => {
                let path = if config.policy.as_os_str().is_empty() {
                    default_policy.to_path_buf()
                } else {
                    config.policy.clone()
                };
                let name = path.parent().and_then(|p| p.file_name()).map_or_else(
                    || "policy".to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                (vec![load_model(&name, &path, policy)?], false)
            }
        };
        Self::new(models, ab, prompts, temperature, config.seed)
    }

    pub fn new(
        models: Vec<Model>,
        ab: bool,
        prompts: Vec<String>,
        temperature: f32,
        seed: u64,
    ) -> Result<Self> {
        if models.is_empty() || (ab && models.len() < 2) {
            return Err(Error::Source("an A/B source needs two models".into()));
        }
        let max_tokens = models
            .iter()
            .map(|m| m.engine.config().max_tokens)
            .min()
            .unwrap_or(0);
        Ok(Self {
            models,
            ab,
            prompts,
            temperature,
            max_tokens,
            rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0xfeed_bac)),
        })
    }

    /// A caption and two clips of it (blocking: call from a blocking thread).
    pub fn draw(&self) -> (String, Drawn, Drawn) {
        let (caption, first, second, seeds) = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            let caption = self.prompts[rng.random_range(0..self.prompts.len())].clone();
            let (first, second) = if self.ab {
                let i = rng.random_range(0..self.models.len());
                let mut j = rng.random_range(0..self.models.len() - 1);
                if j >= i {
                    j += 1;
                }
                (i, j)
            } else {
                (0, 0)
            };
            let seeds: (u64, u64) = (rng.random(), rng.random());
            (caption, first, second, seeds)
        };
        let sample = |model: &Model, seed: u64| Drawn {
            source: model.name.clone(),
            seed,
            tokens: Sampler::new(seed, self.temperature)
                .sample_engine(&model.engine, &[caption.as_str()], self.max_tokens)
                .remove(0)
                .tokens,
        };
        let a = sample(&self.models[first], seeds.0 >> 1);
        let b = sample(&self.models[second], seeds.1 >> 1);
        (caption, a, b)
    }
}
