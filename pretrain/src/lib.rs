//! Pretraining θ0: teacher-forced next-token training of the policy on the folk-tune corpus,
//! conditioned on captions (`musicrl pretrain`).
//!
//! Each epoch pairs every training tune with a fresh caption (a random instrument and
//! wording), takes the tune's first `max_tokens − 1` tokens (cut at a note boundary) plus END,
//! and minimises the mean cross-entropy of the real (unpadded) tokens. Validation perplexity is
//! measured each epoch on the validation split with fixed captions, against a unigram baseline
//! fitted on the training tokens. The value head is not trained here.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use musicrl_config::Config;
use musicrl_music::captions::{caption, default_bpm};
use musicrl_music::corpus::{Split, Tune};
use musicrl_music::render::Instrument;
use musicrl_music::tokens::{self, END, VOCAB_SIZE};
use musicrl_policy::melody::params::save_policy;
use musicrl_policy::melody::sampling::Sampler;
use musicrl_policy::melody::{Policy, caption_batch, to_vec_f32, token_tensor};

use musicrl_policy::optim::clip_global_norm;

/// What can stop pretraining.
#[derive(Debug, thiserror::Error)]
pub enum PretrainError {
    #[error(transparent)]
    Config(#[from] musicrl_config::ConfigError),
    #[error(transparent)]
    Policy(#[from] musicrl_policy::PolicyError),
    #[error(transparent)]
    File(#[from] musicrl_config::fsutil::FileError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The configuration or the corpus cannot be pretrained on.
    #[error("{0}")]
    Invalid(String),
    /// The loss stopped being finite.
    #[error("{0}")]
    Diverged(String),
}

/// Result with [`PretrainError`].
pub type Result<T, E = PretrainError> = std::result::Result<T, E>;

/// One training sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub caption: String,
    /// At most `max_tokens`, ending with END.
    pub tokens: Vec<u32>,
}

/// Turns tunes into examples, each with a caption drawn from `rng`.
pub fn examples(tunes: &[&Tune], max_tokens: usize, rng: &mut StdRng) -> Vec<Example> {
    tunes
        .iter()
        .map(|t| {
            let encoded = tokens::encode(&t.events);
            let mut toks = tokens::clip(&encoded, max_tokens.saturating_sub(1)).to_vec();
            toks.push(END);
            let inst = Instrument::ALL[rng.random_range(0..Instrument::ALL.len())];
            Example {
                caption: caption(t, inst, default_bpm(t), rng),
                tokens: toks,
            }
        })
        .collect()
}

/// Per-epoch measurements.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub train_loss: f64,
    pub validation_loss: f64,
    pub validation_perplexity: f64,
    pub seconds: f64,
}

/// What `metrics.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PretrainReport {
    pub epochs: Vec<EpochStats>,
    pub train_tunes: usize,
    pub validation_tunes: usize,
    pub train_tokens_per_epoch: usize,
    /// Perplexity on the validation tokens of a unigram model fitted on the training tokens.
    pub unigram_validation_perplexity: f64,
    pub validation_perplexity: f64,
    /// Of `samples_checked` sequences sampled for validation captions, the share that decode
    /// without any repair.
    pub decode_without_repair: f64,
    pub samples_checked: usize,
    pub parameters: usize,
}

/// Mean cross-entropy of `batch` (a tensor tracked for gradients) and its token count.
fn batch_loss(
    policy: &Policy,
    config: &Config,
    batch: &[&Example],
    device: &Device,
) -> (Tensor<1>, usize) {
    let b = batch.len();
    let t = batch.iter().map(|e| e.tokens.len()).max().unwrap_or(1);
    let mut ids = Vec::with_capacity(b * t);
    let mut mask = Vec::with_capacity(b * t);
    for e in batch {
        for i in 0..t {
            ids.push(e.tokens.get(i).copied().unwrap_or(END));
            mask.push(if i < e.tokens.len() { 1.0f32 } else { 0.0 });
        }
    }
    let n_tokens = batch.iter().map(|e| e.tokens.len()).sum::<usize>();
    let captions: Vec<&str> = batch.iter().map(|e| e.caption.as_str()).collect();
    let out = policy.forward(
        &caption_batch(&captions, &config.policy, device),
        token_tensor(&ids, b, t, device),
    );
    let logp = log_softmax(out.logits, 2); // [B, T, V]
    let actions: Tensor<3, Int> = token_tensor(&ids, b, t, device).unsqueeze_dim::<3>(2);
    let picked = logp.gather(2, actions).squeeze_dim::<2>(2); // [B, T]
    let mask = Tensor::<2>::from_data(TensorData::new(mask, [b, t]), device);
    let loss = (picked * mask).sum().neg() / n_tokens as f32;
    (loss, n_tokens)
}

fn unigram_perplexity(train: &[Example], validation: &[Example]) -> f64 {
    let mut counts = vec![1.0f64; VOCAB_SIZE]; // add-one smoothing
    for e in train {
        for &t in &e.tokens {
            counts[t as usize] += 1.0;
        }
    }
    let total: f64 = counts.iter().sum();
    let (mut nll, mut n) = (0.0f64, 0usize);
    for e in validation {
        for &t in &e.tokens {
            nll -= (counts[t as usize] / total).ln();
            n += 1;
        }
    }
    (nll / n.max(1) as f64).exp()
}

/// Progress callbacks for the command line.
pub trait Progress {
    fn epoch_started(&mut self, epoch: usize, batches: usize);
    fn batch_done(&mut self, loss: f64);
    fn epoch_done(&mut self, stats: &EpochStats);
}

/// Pretrains a policy of `config.policy` on `tunes` and writes `policy.bpk`, `config.toml`
/// and `metrics.json` into `out`. Returns the report.
pub fn pretrain(
    config: &Config,
    tunes: &[Tune],
    out: &Path,
    progress: &mut dyn Progress,
) -> Result<PretrainReport> {
    config.validate()?;
    let p = &config.pretrain;
    if config.policy.vocab_size != VOCAB_SIZE {
        return Err(PretrainError::Invalid(format!(
            "policy.vocab_size is {} but the melody vocabulary has {VOCAB_SIZE} tokens",
            config.policy.vocab_size
        )));
    }
    let device = musicrl_policy::device::training_device();
    device.seed(p.seed);
    let mut rng = StdRng::seed_from_u64(p.seed);
    let pick = |s: Split| -> Vec<&Tune> {
        let mut v: Vec<&Tune> = tunes.iter().filter(|t| t.split == s).collect();
        if p.max_tunes > 0 {
            v.truncate(p.max_tunes);
        }
        v
    };
    let (train_tunes, val_tunes) = (pick(Split::Train), pick(Split::Validation));
    if train_tunes.is_empty() || val_tunes.is_empty() {
        return Err(PretrainError::Invalid(
            "the corpus has no train or validation tunes".into(),
        ));
    }
    let validation = examples(
        &val_tunes,
        config.policy.max_tokens,
        &mut StdRng::seed_from_u64(p.seed ^ 0x5eed),
    );
    let first_epoch = examples(&train_tunes, config.policy.max_tokens, &mut rng);
    let unigram = unigram_perplexity(&first_epoch, &validation);
    let train_tokens: usize = first_epoch.iter().map(|e| e.tokens.len()).sum();

    let mut policy = Policy::new(&config.policy, &device);
    let parameters = policy.num_params();
    let mut optimizer = AdamConfig::new().init();
    let mut epochs = Vec::new();
    let mut train = first_epoch;
    for epoch in 1..=p.epochs {
        let started = std::time::Instant::now();
        if epoch > 1 {
            train = examples(&train_tunes, config.policy.max_tokens, &mut rng);
        }
        // Shuffle, then batch similar lengths together within windows to limit padding.
        musicrl_music::shuffle(&mut train, &mut rng);
        let batches: Vec<Vec<&Example>> = train
            .chunks(p.batch_size)
            .map(|c| c.iter().collect())
            .collect();
        progress.epoch_started(epoch, batches.len());
        let (mut sum, mut count) = (0.0f64, 0usize);
        for batch in &batches {
            let (loss, n) = batch_loss(&policy, config, batch, &device);
            let grads = GradientsParams::from_grads(loss.backward(), &policy);
            let value = f64::from(loss.into_scalar::<f32>());
            if !value.is_finite() {
                return Err(PretrainError::Diverged(format!(
                    "pretraining loss became {value} in epoch {epoch}; lower pretrain.learning_rate"
                )));
            }
            let (grads, _) = clip_global_norm(grads, &policy, p.max_grad_norm);
            policy = optimizer.step(p.learning_rate, policy, grads);
            sum += value * n as f64;
            count += n;
            progress.batch_done(value);
        }
        let validation_loss = evaluate(&policy.valid(), config, &validation, p.batch_size);
        let stats = EpochStats {
            epoch,
            train_loss: sum / count.max(1) as f64,
            validation_loss,
            validation_perplexity: validation_loss.exp(),
            seconds: started.elapsed().as_secs_f64(),
        };
        progress.epoch_done(&stats);
        epochs.push(stats);
    }

    let valid = policy.valid();
    let plain = device.clone().without_autodiff();
    let captions: Vec<&str> = validation
        .iter()
        .take(p.decode_check_samples)
        .map(|e| e.caption.as_str())
        .collect();
    let mut sampler = Sampler::new(p.seed, config.sampling.temperature);
    let mut clean = 0;
    for chunk in captions.chunks(32) {
        for s in sampler.sample(
            &valid,
            &config.policy,
            chunk,
            config.policy.max_tokens,
            &plain,
        ) {
            if tokens::decode(&s.tokens).repairs == 0 {
                clean += 1;
            }
        }
    }
    let report = PretrainReport {
        validation_perplexity: epochs.last().map_or(f64::NAN, |e| e.validation_perplexity),
        epochs,
        train_tunes: train_tunes.len(),
        validation_tunes: val_tunes.len(),
        train_tokens_per_epoch: train_tokens,
        unigram_validation_perplexity: unigram,
        decode_without_repair: clean as f64 / captions.len().max(1) as f64,
        samples_checked: captions.len(),
        parameters,
    };
    save(out, &valid, config, &report)?;
    Ok(report)
}

/// Mean per-token cross-entropy of `examples` under `policy` (no gradients).
pub fn evaluate(policy: &Policy, config: &Config, examples: &[Example], batch_size: usize) -> f64 {
    let device = musicrl_policy::device::inference_device();
    let (mut sum, mut count) = (0.0f64, 0usize);
    for chunk in examples.chunks(batch_size.max(1)) {
        let batch: Vec<&Example> = chunk.iter().collect();
        let (loss, n) = batch_loss(policy, config, &batch, &device);
        sum += f64::from(to_vec_f32(loss)[0]) * n as f64;
        count += n;
    }
    sum / count.max(1) as f64
}

fn save(out: &Path, policy: &Policy, config: &Config, report: &PretrainReport) -> Result<()> {
    std::fs::create_dir_all(out)?;
    save_policy(policy, &out.join("policy.bpk"))?;
    musicrl_config::fsutil::write_atomic(&out.join("config.toml"), config.to_toml().as_bytes())?;
    let json = serde_json::to_vec_pretty(report).expect("the report serialises");
    musicrl_config::fsutil::write_atomic(&out.join("metrics.json"), &json)?;
    Ok(())
}

/// Where `musicrl pretrain` writes by default.
pub fn default_out() -> PathBuf {
    PathBuf::from("runs/pretrain")
}

#[cfg(test)]
mod tests {
    use super::*;
    use musicrl_config::PolicyConfig;
    use musicrl_music::tokens::Event;

    struct Quiet;
    impl Progress for Quiet {
        fn epoch_started(&mut self, _: usize, _: usize) {}
        fn batch_done(&mut self, _: f64) {}
        fn epoch_done(&mut self, _: &EpochStats) {}
    }

    fn tune(i: usize, split: Split) -> Tune {
        // A family of simple tunes: a scale fragment whose start depends on the tune.
        let events = (0..12)
            .map(|k| {
                if k % 4 == 3 {
                    Event::Bar
                } else {
                    Event::Note {
                        pitch: Some(60 + ((i + k) % 7) as u8),
                        twelfths: 6,
                    }
                }
            })
            .collect();
        Tune {
            id: format!("t{i}"),
            collection: "ryans_mammoth".into(),
            title: String::new(),
            tune_type: if i.is_multiple_of(2) {
                "reel".into()
            } else {
                "jig".into()
            },
            origin: String::new(),
            meter: "4/4".into(),
            key_tonic: "C".into(),
            key_mode: "major".into(),
            tempo_bpm: None,
            split,
            events,
        }
    }

    #[test]
    fn a_few_epochs_lower_the_loss_and_beat_the_unigram_baseline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::default();
        config.policy = PolicyConfig {
            vocab_size: VOCAB_SIZE,
            max_tokens: 24,
            d_model: 32,
            n_heads: 2,
            n_layers: 1,
            d_ff: 64,
            caption_buckets: 64,
            max_caption_words: 12,
            ..PolicyConfig::default()
        };
        config.pretrain.epochs = 8;
        config.pretrain.batch_size = 8;
        config.pretrain.learning_rate = 0.01;
        config.pretrain.decode_check_samples = 16;
        let tunes: Vec<Tune> = (0..48)
            .map(|i| {
                tune(
                    i,
                    if i < 40 {
                        Split::Train
                    } else {
                        Split::Validation
                    },
                )
            })
            .collect();
        let report = pretrain(&config, &tunes, dir.path(), &mut Quiet).expect("pretrains");
        let first = report.epochs.first().expect("epochs").train_loss;
        let last = report.epochs.last().expect("epochs").train_loss;
        assert!(last < 0.7 * first, "training loss {first} -> {last}");
        assert!(
            report.validation_perplexity < report.unigram_validation_perplexity,
            "{report:?}"
        );
        assert!(dir.path().join("policy.bpk").exists() && dir.path().join("metrics.json").exists());
        // The saved policy loads as θ0.
        let loaded = musicrl_policy::melody::params::load_policy(
            &dir.path().join("policy.bpk"),
            &config.policy,
            &musicrl_policy::device::inference_device(),
        )
        .expect("loads");
        assert_eq!(loaded.num_params(), report.parameters);
    }
}
