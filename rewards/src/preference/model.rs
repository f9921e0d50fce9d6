//! The Bradley–Terry reward model and its training.
//!
//! **The model**: the policy's transformer trunk with its scalar (value) head, initialised from
//! the pretrained policy θ0; r(caption, tokens) is the head's output at the last real position.
//! Trained with the Bradley–Terry loss −log σ(r(chosen) − r(rejected)). The caption-less
//! variant (`caption_free`) replaces every caption by the empty caption, for the paper's
//! ablation.
//!
//! A MusicGen policy (`policy.family = "musicgen"`) gets the same loss over its audio tokens,
//! with the MusicGen decoder as the trunk ([`super::audio`]); [`train`] and
//! [`PreferenceModel`] take either family, by the configuration's policy section.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::log_sigmoid;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use musicrl_config::PolicyConfig;
use musicrl_music::tokens::END;
use musicrl_policy::melody::params::load_policy;
use musicrl_policy::melody::{Policy, caption_batch, to_vec_f32, token_tensor};

use super::{Choice, read_store};
use crate::error::{Error, Result};
use crate::store;

pub const KIND: &str = "preference";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreferenceTrainConfig {
    /// The preference store (JSON Lines, see the module doc of `preference`).
    pub store: PathBuf,
    /// The pretrained policy whose trunk initialises the model (empty: from scratch).
    pub init_policy: PathBuf,
    /// Ignore captions (the paper's caption-less ablation).
    pub caption_free: bool,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// Every n-th choice is held out.
    pub eval_every: usize,
    pub seed: u64,
}

impl Default for PreferenceTrainConfig {
    fn default() -> Self {
        Self {
            store: PathBuf::from("runs/preferences/store.jsonl"),
            init_policy: PathBuf::from("models/base/policy.bpk"),
            caption_free: false,
            epochs: 1,
            batch_size: 16,
            learning_rate: 3e-4,
            eval_every: 10,
            seed: 5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreferenceConfig {
    pub policy: PolicyConfig,
    pub train: PreferenceTrainConfig,
}

/// r(caption, tokens) for each sequence: the scalar head at the last real position (the
/// sequence is cut after its first END).
pub fn rewards(
    policy: &Policy,
    config: &PolicyConfig,
    caption_free: bool,
    captions: &[&str],
    sequences: &[&[u32]],
    device: &Device,
) -> Tensor<1> {
    let cut: Vec<&[u32]> = sequences
        .iter()
        .map(|s| {
            let s = &s[..s.len().min(config.max_tokens)];
            s.iter().position(|&t| t == END).map_or(s, |i| &s[..=i])
        })
        .collect();
    let b = cut.len();
    let t = cut.iter().map(|s| s.len()).max().unwrap_or(1).max(1);
    let mut ids = Vec::with_capacity(b * t);
    for s in &cut {
        ids.extend((0..t).map(|i| s.get(i).copied().unwrap_or(END)));
    }
    let last: Vec<i64> = cut.iter().map(|s| s.len().max(1) as i64 - 1).collect();
    let caps: Vec<&str> = if caption_free {
        vec![""; b]
    } else {
        captions.to_vec()
    };
    let out = policy.forward(
        &caption_batch(&caps, config, device),
        token_tensor(&ids, b, t, device),
    );
    let idx = Tensor::<2, Int>::from_data(TensorData::new(last, [b, 1]), device);
    out.values.gather(1, idx).reshape([b])
}

/// What scores: the melody policy's trunk, or the MusicGen decoder's.
enum Net {
    Melody(Box<Policy>),
    Audio(Box<super::audio::AudioPreference>),
}

/// A trained model ready to score.
pub struct PreferenceModel {
    net: Net,
    pub config: PreferenceConfig,
    pub version: String,
    device: Device,
}

impl std::fmt::Debug for PreferenceModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreferenceModel")
            .field("version", &self.version)
            .finish()
    }
}

impl PreferenceModel {
    pub fn load(dir: &Path) -> Result<Self> {
        let config: PreferenceConfig = store::load_config(dir)?;
        let device = musicrl_policy::device::inference_device();
        if config.policy.family == musicrl_config::FAMILY_MUSICGEN {
            let (audio, version) = super::audio::AudioPreference::load(dir, &config)?;
            return Ok(Self {
                net: Net::Audio(Box::new(audio)),
                config,
                version,
                device,
            });
        }
        let (policy, version) =
            store::load_params(dir, KIND, Policy::new(&config.policy, &device))?;
        Ok(Self {
            net: Net::Melody(Box::new(policy.valid())),
            config,
            version,
            device,
        })
    }

    /// Audio tokens: the codebooks of the clips it scores (`None`: melody tokens).
    pub fn codebooks(&self) -> Option<usize> {
        match &self.net {
            Net::Melody(_) => None,
            Net::Audio(a) => Some(a.codebooks()),
        }
    }

    /// One unbounded scalar per (caption, tokens); an audio-token clip that is not this
    /// folder's shape is an error.
    pub fn try_score(&self, items: &[(&str, &[u32])]) -> Result<Vec<f32>> {
        match &self.net {
            Net::Melody(_) => Ok(self.score(items)),
            Net::Audio(audio) => audio.score(items),
        }
    }

    /// One unbounded scalar per (caption, tokens) of a melody model (an audio model's clips go
    /// through [`PreferenceModel::try_score`]; here its errors panic).
    pub fn score(&self, items: &[(&str, &[u32])]) -> Vec<f32> {
        let policy = match &self.net {
            Net::Melody(policy) => policy,
            Net::Audio(audio) => return audio.score(items).expect("clips of this MusicGen folder"),
        };
        if items.is_empty() {
            return Vec::new();
        }
        let captions: Vec<&str> = items.iter().map(|i| i.0).collect();
        let seqs: Vec<&[u32]> = items.iter().map(|i| i.1).collect();
        to_vec_f32(rewards(
            policy,
            &self.config.policy,
            self.config.train.caption_free,
            &captions,
            &seqs,
            &self.device,
        ))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreferenceMetrics {
    pub train_choices: usize,
    pub eval_choices: usize,
    /// Held-out accuracy: the model ranks the chosen clip higher.
    pub accuracy: f64,
    pub caption_free: bool,
    pub initialised_from: String,
    pub epochs: Vec<(usize, f64)>,
    pub version: String,
}

fn accuracy(policy: &Policy, c: &PreferenceConfig, eval: &[&Choice], device: &Device) -> f64 {
    let mut right = 0usize;
    for chunk in eval.chunks(32) {
        let (caps, seqs) = pairs_of(chunk);
        let r = to_vec_f32(rewards(
            policy,
            &c.policy,
            c.train.caption_free,
            &caps,
            &seqs,
            device,
        ));
        let half = chunk.len();
        right += (0..half).filter(|&i| r[i] > r[half + i]).count();
    }
    right as f64 / eval.len().max(1) as f64
}

/// Captions and sequences of a batch: all chosen clips, then all rejected ones.
fn pairs_of<'a>(chunk: &[&'a Choice]) -> (Vec<&'a str>, Vec<&'a [u32]>) {
    let mut caps = Vec::with_capacity(chunk.len() * 2);
    let mut seqs = Vec::with_capacity(chunk.len() * 2);
    for c in chunk {
        caps.push(c.caption.as_str());
        seqs.push(c.ordered().0);
    }
    for c in chunk {
        caps.push(c.caption.as_str());
        seqs.push(c.ordered().1);
    }
    (caps, seqs)
}

/// The Bradley–Terry loss −mean log σ(r(chosen) − r(rejected)) of a batch whose rewards are
/// all its chosen clips', then all its rejected clips' (`half` each).
pub(crate) fn bradley_terry_loss(r: Tensor<1>, half: usize) -> Tensor<1> {
    let margin = r.clone().narrow(0, 0, half) - r.narrow(0, half, half);
    log_sigmoid(margin).mean().neg()
}

/// A batch loss's value; an error naming the epoch when it is not finite.
pub(crate) fn finite_loss(loss: Tensor<1>, epoch: usize) -> Result<f64> {
    let value = f64::from(loss.into_scalar::<f32>());
    if value.is_finite() {
        Ok(value)
    } else {
        Err(Error::Training(format!(
            "the loss became {value} in epoch {epoch}"
        )))
    }
}

/// Trains on the store and writes the checkpoint folder `out`.
pub fn train(
    config: &PreferenceConfig,
    out: &Path,
    progress: &mut dyn crate::text::Progress,
) -> Result<(PreferenceMetrics, Vec<Choice>)> {
    let t = &config.train;
    let choices = read_store(&t.store)?;
    let every = t.eval_every.max(2);
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for (i, c) in choices.iter().enumerate() {
        if i % every == every - 1 {
            eval.push(c)
        } else {
            train.push(c)
        }
    }
    if train.is_empty() || eval.is_empty() {
        return Err(Error::Data(format!(
            "{}: too few choices ({})",
            t.store.display(),
            choices.len()
        )));
    }
    if config.policy.family == musicrl_config::FAMILY_MUSICGEN {
        let metrics = super::audio::train(config, train, &eval, out, progress)?;
        return Ok((metrics, eval.into_iter().cloned().collect()));
    }
    if let Some(c) = choices.iter().find(|c| c.codebooks.is_some()) {
        return Err(Error::Data(format!(
            "{}: a pair of audio-token clips ({:?} codebooks) for a melody policy: train it              with policy.family = \"musicgen\" and the clips' folder",
            t.store.display(),
            c.codebooks
        )));
    }
    let device = musicrl_policy::device::training_device();
    device.seed(t.seed);
    let (mut policy, from) = if t.init_policy.as_os_str().is_empty() {
        (Policy::new(&config.policy, &device), "scratch".to_string())
    } else {
        let p = load_policy(&t.init_policy, &config.policy, &device).map_err(|e| {
            Error::Checkpoint(format!(
                "initialising from {}: {e}",
                t.init_policy.display()
            ))
        })?;
        (p, t.init_policy.display().to_string())
    };
    let mut optimizer = AdamConfig::new().init();
    let mut rng = StdRng::seed_from_u64(t.seed);
    let mut epochs = Vec::new();
    for epoch in 1..=t.epochs {
        musicrl_music::shuffle(&mut train, &mut rng);
        let batches: Vec<&[&Choice]> = train.chunks(t.batch_size.max(1)).collect();
        progress.epoch_started(epoch, batches.len());
        let (mut sum, mut n) = (0.0f64, 0usize);
        for batch in batches {
            let (caps, seqs) = pairs_of(batch);
            let r = rewards(
                &policy,
                &config.policy,
                t.caption_free,
                &caps,
                &seqs,
                &device,
            );
            let loss = bradley_terry_loss(r, batch.len());
            let grads = GradientsParams::from_grads(loss.backward(), &policy);
            let value = finite_loss(loss, epoch)?;
            policy = optimizer.step(t.learning_rate, policy, grads);
            sum += value;
            n += 1;
            progress.batch_done(value);
        }
        progress.epoch_done(epoch, sum / n.max(1) as f64);
        epochs.push((epoch, sum / n.max(1) as f64));
    }
    let valid = policy.valid();
    let plain = device.clone().without_autodiff();
    let mut metrics = PreferenceMetrics {
        train_choices: train.len(),
        eval_choices: eval.len(),
        accuracy: accuracy(&valid, config, &eval, &plain),
        caption_free: t.caption_free,
        initialised_from: from,
        epochs,
        version: String::new(),
    };
    let version = store::save(out, KIND, &valid, config, &metrics)?;
    metrics.version = version;
    store::write_metrics(out, &metrics)?;
    Ok((metrics, eval.into_iter().cloned().collect()))
}
