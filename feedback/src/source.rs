//! Where pairs come from: two samples of one policy, an A/B of two checkpoints (one clip
//! each, the paper's side-by-side evaluation), or two samples of the newest parameters the
//! learner broadcast (`learner`: the source follows the broadcast as an actor does and swaps
//! the model in when a version arrives; until the first one, pairs are refused with 503).
//! Sampling runs on the rollout engine, off the async executor.
//!
//! Both policy families draw pairs: a melody policy (its tokens) or a MusicGen folder with an
//! optional trained checkpoint (its codes, `codebooks` rows of `policy.frames`, drawn at
//! the source's temperature with guidance off, as the actors draw them). All models of one
//! source are of one family.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use musicrl_config::{FeedbackConfig, PolicyConfig};
use musicrl_policy::melody::Engine;
use musicrl_policy::melody::params::load_policy;
use musicrl_policy::melody::sampling::Sampler;
use musicrl_policy::musicgen::rollout::MusicgenRollout;
use musicrl_scoring::audio::Codec;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::error::{Error, Result};

/// One model a clip can be drawn from.
#[derive(Debug)]
pub struct Model {
    /// The clip's `source` in the database (a checkpoint name).
    pub name: String,
    /// The clip's `policy_version`: the learner step of the parameters, when known (a
    /// checkpoint in a `step-NNNNNNNN` folder).
    pub version: Option<i64>,
    draws: Draws,
    /// Audio tokens: the codebooks of each clip (`None`: melody tokens).
    codebooks: Option<usize>,
}

/// What draws a model's clips.
enum Draws {
    Melody(Engine),
    /// One draw at a time (the engine splits each product over every core).
    MusicGen(Box<Mutex<MusicgenRollout>>),
}

impl std::fmt::Debug for Draws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Draws::Melody(_) => "Melody",
            Draws::MusicGen(_) => "MusicGen",
        })
    }
}

impl Model {
    /// A model from an engine already built (tests, or a policy held in memory).
    pub fn new(name: &str, engine: Engine) -> Self {
        Self {
            name: name.to_string(),
            version: None,
            draws: Draws::Melody(engine),
            codebooks: None,
        }
    }

    /// A MusicGen model: the folder's text encoder and the decoder the rollout holds.
    pub fn musicgen(name: &str, rollout: MusicgenRollout) -> Self {
        Self {
            name: name.to_string(),
            version: None,
            codebooks: Some(rollout.codebooks()),
            draws: Draws::MusicGen(Box::new(Mutex::new(rollout))),
        }
    }

    /// Audio tokens: the codebooks of each clip (`None`: melody tokens).
    pub fn codebooks(&self) -> Option<usize> {
        self.codebooks
    }

    /// The same model, its clips recorded as parameter version `version`.
    pub fn with_version(mut self, version: Option<i64>) -> Self {
        self.version = version;
        self
    }
}

/// The learner step of a checkpoint file in a `step-NNNNNNNN` folder (what `musicrl learner`
/// writes), else `None`.
pub fn checkpoint_step(path: &Path) -> Option<i64> {
    path.parent()?
        .file_name()?
        .to_str()?
        .strip_prefix("step-")?
        .parse()
        .ok()
}

/// A clip drawn for a pair, before it is stored.
#[derive(Debug, Clone)]
pub struct Drawn {
    pub source: String,
    pub policy_version: Option<i64>,
    pub seed: u64,
    pub tokens: Vec<u32>,
    /// Audio tokens: `tokens` is this many rows of codes (`None`: a melody).
    pub codebooks: Option<usize>,
}

/// The pair source with its prompts.
#[derive(Debug)]
pub struct PairSource {
    /// Swapped whole when the `learner` source receives a version (empty until then).
    models: RwLock<Vec<Arc<Model>>>,
    /// True: one clip from each of two different models; false: two from the one model.
    ab: bool,
    prompts: Vec<String>,
    temperature: f32,
    rng: Mutex<StdRng>,
    /// The codec a MusicGen source's clips are decoded with (for the page's WAV).
    codec: Option<Arc<Codec>>,
}

/// Loads a policy checkpoint for the engine, with the architecture saved beside it when there
/// is one (`config.toml`). A MusicGen policy (`policy.family = "musicgen"`) is its folder
/// and, unless `path` is empty, a checkpoint's `policy.bpk` over it.
pub fn load_model(name: &str, path: &Path, fallback: &PolicyConfig) -> Result<Model> {
    let config = match path
        .parent()
        .map(|d| d.join("config.toml"))
        .filter(|p| p.exists())
    {
        Some(saved) => {
            musicrl_config::Config::from_file(&saved)
                .map_err(|e| Error::Source(format!("{}: {e}", saved.display())))?
                .policy
        }
        None => fallback.clone(),
    };
    if config.family == musicrl_config::FAMILY_MUSICGEN {
        return load_musicgen(name, path, &config);
    }
    let device = musicrl_policy::device::inference_device();
    let policy = load_policy(path, &config, &device)
        .map_err(|e| Error::Source(format!("cannot load the policy {}: {e}", path.display())))?;
    let engine = Engine::from_policy(&policy, &config, 1)
        .map_err(|e| Error::Source(format!("{}: {e}", path.display())))?;
    Ok(Model::new(name, engine).with_version(checkpoint_step(path)))
}

/// The codec a MusicGen source's clips are decoded with ([`musicrl_config::Config::codec_folder`]:
/// `reward.codec`, else the policy folder's own `audio_encoder`).
fn load_codec(folder: &Path) -> Result<Codec> {
    let folder = musicrl_config::paths::require("reward.codec", folder)
        .map_err(|e| Error::Source(e.to_string()))?;
    Codec::load(&folder).map_err(|e| Error::Source(format!("the codec: {e}")))
}

/// A MusicGen folder and, when `path` names one, a checkpoint over it.
fn load_musicgen(name: &str, path: &Path, config: &PolicyConfig) -> Result<Model> {
    let device = musicrl_policy::device::inference_device();
    let mut rollout = MusicgenRollout::load(config, &device, Some(0))
        .map_err(|e| Error::Source(format!("{e}")))?;
    if path.as_os_str().is_empty() {
        rollout.use_folder_decoder();
    } else {
        let bytes = std::fs::read(path).map_err(|e| {
            Error::Source(format!("cannot read the policy {}: {e}", path.display()))
        })?;
        rollout
            .set_checkpoint(&bytes)
            .map_err(|e| Error::Source(format!("{}: {e}", path.display())))?;
    }
    // θ0 (the folder's own decoder) records no version, as a melody θ0 does.
    Ok(Model::musicgen(name, rollout).with_version(checkpoint_step(path)))
}

impl PairSource {
    /// The source the configuration names. `default_policy` is used when `feedback.policy`
    /// is empty; `codec_folder` ([`musicrl_config::Config::codec_folder`], set for a MusicGen
    /// policy) decodes its clips for the page.
    pub fn from_config(
        config: &FeedbackConfig,
        policy: &PolicyConfig,
        default_policy: &Path,
        temperature: f32,
        codec_folder: Option<&Path>,
    ) -> Result<Self> {
        let prompts = musicrl_common::prompts::load_prompts(&config.prompts)
            .map_err(|e| Error::Source(format!("feedback.prompts: {e}")))?;
        let codec = codec_folder.map(load_codec).transpose()?.map(Arc::new);
        let with_codec = |s: Self| match &codec {
            Some(c) => Self {
                codec: Some(c.clone()),
                ..s
            },
            None => s,
        };
        if config.source == "learner" {
            return Ok(with_codec(Self::following(
                prompts,
                temperature,
                config.seed,
            )));
        }
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
                let musicgen = policy.family == musicrl_config::FAMILY_MUSICGEN;
                let path = if !config.policy.as_os_str().is_empty() {
                    config.policy.clone()
                } else if musicgen {
                    // The folder's own decoder.
                    std::path::PathBuf::new()
                } else {
                    default_policy.to_path_buf()
                };
                let name = if path.as_os_str().is_empty() {
                    Path::new(&policy.folder).file_name().map_or_else(
                        || "musicgen".to_string(),
                        |n| n.to_string_lossy().into_owned(),
                    )
                } else {
                    path.parent().and_then(|p| p.file_name()).map_or_else(
                        || "policy".to_string(),
                        |n| n.to_string_lossy().into_owned(),
                    )
                };
                (vec![load_model(&name, &path, policy)?], false)
            }
        };
        if let (Some(codec), Some(k)) = (&codec, models.first().and_then(Model::codebooks)) {
            codec
                .check_policy(k, 0)
                .map_err(|e| Error::Source(e.to_string()))?;
        }
        Self::new(models, ab, prompts, temperature, config.seed).map(with_codec)
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
        if models
            .iter()
            .any(|m| m.codebooks() != models[0].codebooks())
        {
            return Err(Error::Source(
                "the models of a source must all be melody policies or all MusicGen policies \
                 with the same codebooks"
                    .into(),
            ));
        }
        Ok(Self {
            models: RwLock::new(models.into_iter().map(Arc::new).collect()),
            ab,
            prompts,
            temperature,
            rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0xfeed_bac)),
            codec: None,
        })
    }

    /// A source with no model yet, for [`PairSource::set_model`] (the `learner` source).
    pub fn following(prompts: Vec<String>, temperature: f32, seed: u64) -> Self {
        Self {
            models: RwLock::new(Vec::new()),
            ab: false,
            prompts,
            temperature,
            rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0xfeed_bac)),
            codec: None,
        }
    }

    /// The same source, its audio-token clips decoded by `codec`.
    pub fn with_codec(mut self, codec: Codec) -> Self {
        self.codec = Some(Arc::new(codec));
        self
    }

    /// The codec its clips are decoded with (a MusicGen source's).
    pub fn codec(&self) -> Option<Arc<Codec>> {
        self.codec.clone()
    }

    /// Replaces the models by `model` (a new parameter version); pairs being drawn finish
    /// on the model they started with.
    pub fn set_model(&self, model: Model) {
        *self.models.write().unwrap_or_else(|p| p.into_inner()) = vec![Arc::new(model)];
    }

    /// The parameter version pairs are drawn from now (the newest model's).
    pub fn version(&self) -> Option<i64> {
        self.models
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .first()
            .and_then(|m| m.version)
    }

    /// A caption and two clips of it (blocking: call from a blocking thread); `None` while
    /// the source has no model (a `learner` source before the first version).
    pub fn draw(&self) -> Option<Result<(String, Drawn, Drawn)>> {
        let models: Vec<Arc<Model>> = self
            .models
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if models.is_empty() || (self.ab && models.len() < 2) {
            return None;
        }
        let max_tokens = models
            .iter()
            .filter_map(|m| match &m.draws {
                Draws::Melody(engine) => Some(engine.config().max_tokens),
                Draws::MusicGen(_) => None,
            })
            .min()
            .unwrap_or(0);
        let (caption, first, second, seeds) = {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            let caption = self.prompts[rng.random_range(0..self.prompts.len())].clone();
            let (first, second) = if self.ab {
                let i = rng.random_range(0..models.len());
                let mut j = rng.random_range(0..models.len() - 1);
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
        let sample = |model: &Model, seed: u64| -> Result<Drawn> {
            let tokens = match &model.draws {
                Draws::Melody(engine) => {
                    Sampler::new(seed, self.temperature)
                        .sample_engine(engine, &[caption.as_str()], max_tokens)
                        .remove(0)
                        .tokens
                }
                Draws::MusicGen(rollout) => {
                    rollout
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .sample_at(std::slice::from_ref(&caption), self.temperature, seed)
                        .map_err(|e| Error::Source(format!("sampling {}: {e}", model.name)))?
                        .remove(0)
                        .tokens
                }
            };
            Ok(Drawn {
                source: model.name.clone(),
                policy_version: model.version,
                seed,
                tokens,
                codebooks: model.codebooks(),
            })
        };
        let a = sample(&models[first], seeds.0 >> 1);
        let b = sample(&models[second], seeds.1 >> 1);
        Some(a.and_then(|a| Ok((caption, a, b?))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_folder_names_its_step() {
        assert_eq!(
            checkpoint_step(Path::new("runs/x/checkpoints/step-00000042/policy.bpk")),
            Some(42)
        );
        assert_eq!(checkpoint_step(Path::new("models/base/policy.bpk")), None);
        assert_eq!(checkpoint_step(Path::new("step-x/policy.bpk")), None);
        assert_eq!(checkpoint_step(Path::new("policy.bpk")), None);
    }
}
