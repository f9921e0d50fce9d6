//! Text adherence: a two-tower text/audio model (a simplified MuLan stand-in) trained
//! contrastively on corpus renderings and their captions (`musicrl train-reward text`).
//!
//! Training pairs: each training tune rendered `renders_per_tune` times, each time with a
//! random instrument and a tempo around the tune's customary one (×0.8–1.25), captioned with
//! [`musicrl_music::captions::caption`] for that instrument and tempo. Each step takes a random
//! window of `window_frames` frames from every clip and minimises the symmetric InfoNCE loss
//! of the batch (temperature `temperature`).
//!
//! Score of (caption, clip): the cosine similarity of the caption's embedding and the clip's
//! embedding, averaged over `windows` windows spread over the clip, as MuLan is averaged over
//! three 10 s windows. Range [−1, 1].
//!
//! Held-out measurements (`metrics.json`), on test-split tunes:
//! - retrieval recall@1 and @5 of the right caption among 100 clip/caption pairs (captions
//!   distinct as strings), clip → caption;
//! - attribute accuracy (chance 0.5): how often the true caption outscores the same caption
//!   with one attribute changed (key: another tonic; mode; meter; tune type; instrument), over
//!   the pairs where the caption mentions that attribute and the model is shown it (with
//!   `renderer_words_removed` the instrument never is: its accuracy is not measured).

use std::path::Path;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use musicrl_music::captions::{adherence_text, caption, default_bpm};
use musicrl_music::corpus::{Split, Tune};
use musicrl_music::render::Instrument;

use crate::clips::{features_of, par_map, tune_events};
use crate::encoder::{
    AudioEncoder, AudioEncoderConfig, TextEncoder, TextEncoderConfig, audio_batch, l2_normalize,
    text_batch,
};
use crate::error::{Error, Result};
use crate::features::{Features, window_starts};
use crate::negatives::{self, Attribute, METERS, TONICS};
use crate::store;

pub const KIND: &str = "text";

/// The architecture and how scores are computed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TextModelConfig {
    pub audio: AudioEncoderConfig,
    pub text: TextEncoderConfig,
    /// Frames a window (25 a second).
    pub window_frames: usize,
    /// Windows a clip is scored on.
    pub windows: usize,
    pub temperature: f32,
    /// Compare the melody with the caption's [`adherence_text`] — without the instrument
    /// and tempo, which the renderer decides, not the policy — in training and scoring.
    #[serde(default)]
    pub renderer_words_removed: bool,
}

impl Default for TextModelConfig {
    fn default() -> Self {
        Self {
            audio: AudioEncoderConfig {
                hidden: 64,
                out: 64,
                key_profile: true,
                metre_profile: true,
            },
            text: TextEncoderConfig {
                buckets: 2048,
                max_words: 32,
                embed: 64,
                hidden: 64,
                out: 64,
            },
            window_frames: 160,
            windows: 3,
            temperature: 0.07,
            renderer_words_removed: true,
        }
    }
}

/// How the model is trained and measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextTrainConfig {
    /// Training tunes (a seeded sample of the train split; 0 = all).
    pub tunes: usize,
    pub renders_per_tune: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// Token budget of a clip (the policy's `max_tokens`).
    pub max_tokens: usize,
    /// Held-out pairs for retrieval.
    pub eval_pairs: usize,
    /// Held-out clips whose captions are swapped one attribute at a time (the attribute
    /// accuracies); 0 = `eval_pairs`.
    #[serde(default)]
    pub attribute_clips: usize,
    pub seed: u64,
    /// Each clip also meets its own caption with one stated attribute changed (the meter
    /// half the time when the caption states one, else the key's tonic or its mode) as an
    /// extra negative of the audio-to-text loss: a hard negative, the only kind that asks the
    /// audio tower to tell 3/4 from 6/8 rather than a reel from an air.
    #[serde(default)]
    pub hard_negatives: bool,
}

impl Default for TextTrainConfig {
    fn default() -> Self {
        Self {
            tunes: 3000,
            renders_per_tune: 2,
            epochs: 15,
            batch_size: 64,
            learning_rate: 2e-3,
            max_tokens: 128,
            eval_pairs: 100,
            attribute_clips: 500,
            seed: 7,
            hard_negatives: true,
        }
    }
}

/// What `config.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    pub model: TextModelConfig,
    pub train: TextTrainConfig,
}

#[derive(Module, Debug)]
pub struct TextAudioModel {
    audio: AudioEncoder,
    text: TextEncoder,
}

impl TextAudioModel {
    pub fn new(config: &TextModelConfig, device: &Device) -> Self {
        assert_eq!(
            config.audio.out, config.text.out,
            "the towers share one embedding size"
        );
        Self {
            audio: AudioEncoder::new(config.audio, device),
            text: TextEncoder::new(config.text, device),
        }
    }

    /// Unit-length embeddings of equal-length windows.
    pub fn embed_audio(&self, windows: &[&Features], device: &Device) -> Tensor<2> {
        let input = audio_batch(windows, device);
        l2_normalize(self.audio.forward(input))
    }

    /// Unit-length embeddings of captions.
    pub fn embed_text<S: AsRef<str>>(
        &self,
        captions: &[S],
        config: &TextModelConfig,
        device: &Device,
    ) -> Tensor<2> {
        let (ids, mask) = if config.renderer_words_removed {
            let stripped: Vec<String> = captions
                .iter()
                .map(|c| adherence_text(c.as_ref()))
                .collect();
            text_batch(&stripped, &config.text, device)
        } else {
            text_batch(captions, &config.text, device)
        };
        l2_normalize(self.text.forward(ids, mask))
    }
}

fn eye(n: usize, device: &Device) -> Tensor<2> {
    let mut data = vec![0.0f32; n * n];
    for i in 0..n {
        data[i * n + i] = 1.0;
    }
    Tensor::<2>::from_data(TensorData::new(data, [n, n]), device)
}

/// Symmetric InfoNCE of matched rows of unit-length `audio` and `text` (`[B, D]`).
pub fn contrastive_loss(audio: Tensor<2>, text: Tensor<2>, temperature: f32) -> Tensor<1> {
    let [b, _] = audio.dims();
    let device = audio.device();
    let logits = audio.matmul(text.transpose()) / temperature; // [B, B]
    let diag = eye(b, &device);
    let a2t = (log_softmax(logits.clone(), 1) * diag.clone()).sum();
    let t2a = (log_softmax(logits, 0) * diag).sum();
    (a2t + t2a).neg() / (2.0 * b as f32)
}

/// InfoNCE as [`contrastive_loss`] with hard negatives on both sides
/// ([`crate::negatives`]): row `i` of `neg_text` is a wrong caption for clip `i`, row `i` of
/// `neg_audio` a wrong clip for caption `i`. Each clip's softmax runs over the `B` captions
/// and the `B` wrong captions; each caption's over the `B` clips and the `B` wrong clips.
pub fn contrastive_loss_with_negatives(
    audio: Tensor<2>,
    text: Tensor<2>,
    neg_text: Tensor<2>,
    neg_audio: Tensor<2>,
    temperature: f32,
) -> Tensor<1> {
    let [b, _] = audio.dims();
    let device = audio.device();
    let diag = eye(b, &device);
    let mask = Tensor::cat(vec![diag, Tensor::<2>::zeros([b, b], &device)], 1); // [B, 2B]
    let all_text = Tensor::cat(vec![text.clone(), neg_text], 0); // [2B, D]
    let all_audio = Tensor::cat(vec![audio.clone(), neg_audio], 0); // [2B, D]
    let a2t = log_softmax(audio.matmul(all_text.transpose()) / temperature, 1); // [B, 2B]
    let t2a = log_softmax(text.matmul(all_audio.transpose()) / temperature, 1); // [B, 2B]
    ((a2t * mask.clone()).sum() + (t2a * mask).sum()).neg() / (2.0 * b as f32)
}

/// A trained model ready to score.
pub struct TextModel {
    model: TextAudioModel,
    pub config: TextModelConfig,
    pub version: String,
    device: Device,
}

impl std::fmt::Debug for TextModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextModel")
            .field("version", &self.version)
            .finish()
    }
}

impl TextModel {
    pub fn new(model: TextAudioModel, config: TextModelConfig, version: String) -> Self {
        Self {
            model: model.valid(),
            config,
            version,
            device: musicrl_policy::device::inference_device(),
        }
    }

    /// Loads a checkpoint folder written by [`train`].
    pub fn load(dir: &Path) -> Result<Self> {
        let config: TextConfig = store::load_config(dir)?;
        let device = musicrl_policy::device::inference_device();
        let (model, version) =
            store::load_params(dir, KIND, TextAudioModel::new(&config.model, &device))?;
        Ok(Self::new(model, config.model, version))
    }

    /// The windows a clip is scored on.
    pub fn windows_of(&self, clip: &Features) -> Vec<Features> {
        let len = self.config.window_frames;
        window_starts(clip.frames, self.config.windows, len)
            .into_iter()
            .map(|s| clip.window(s, len))
            .collect()
    }

    /// Window-averaged cosine similarity of each (caption, clip).
    pub fn score(&self, items: &[(&str, &Features)]) -> Vec<f32> {
        self.score_windows(items)
            .into_iter()
            .map(|(s, _)| s)
            .collect()
    }

    /// Each (caption, clip)'s window-averaged cosine similarity and the cosine of every
    /// window.
    pub fn score_windows(&self, items: &[(&str, &Features)]) -> Vec<(f32, Vec<f32>)> {
        if items.is_empty() {
            return Vec::new();
        }
        let n = self.config.windows.max(1);
        let windows: Vec<Features> = items.iter().flat_map(|(_, f)| self.windows_of(f)).collect();
        let refs: Vec<&Features> = windows.iter().collect();
        let audio = self.model.embed_audio(&refs, &self.device); // [N·n, D]
        let captions: Vec<&str> = items.iter().map(|(c, _)| *c).collect();
        let text = self.model.embed_text(&captions, &self.config, &self.device); // [N, D]
        let [_, d] = text.dims();
        let text = text
            .unsqueeze_dim::<3>(1)
            .repeat_dim(1, n)
            .reshape([items.len() * n, d]);
        let cos = (audio * text).sum_dim(1).reshape([items.len() * n]);
        musicrl_policy::melody::to_vec_f32(cos)
            .chunks(n)
            .map(|w| (w.iter().sum::<f32>() / n as f32, w.to_vec()))
            .collect()
    }

    /// Cosine similarity of every clip (rows) with every caption (columns), window-averaged.
    pub fn similarity_matrix(&self, clips: &[&Features], captions: &[&str]) -> Vec<Vec<f32>> {
        let n = self.config.windows.max(1);
        let windows: Vec<Features> = clips.iter().flat_map(|f| self.windows_of(f)).collect();
        let refs: Vec<&Features> = windows.iter().collect();
        let audio = self.model.embed_audio(&refs, &self.device);
        let [_, d] = audio.dims();
        let audio = audio
            .reshape([clips.len(), n, d])
            .mean_dim(1)
            .reshape([clips.len(), d]);
        // The mean of cosines equals the cosine with the mean of unit window embeddings
        // (the caption embedding has unit length).
        let text = self.model.embed_text(captions, &self.config, &self.device);
        let sims = musicrl_policy::melody::to_vec_f32(audio.matmul(text.transpose()));
        sims.chunks(captions.len()).map(<[f32]>::to_vec).collect()
    }
}

/// One training or evaluation clip.
#[derive(Debug, Clone)]
pub struct Pair {
    pub tune: usize,
    pub instrument: Instrument,
    pub bpm: u32,
    pub caption: String,
    pub caption_seed: u64,
    pub features: Features,
    /// The pair made wrong in one attribute its caption states, when asked for and there
    /// is one.
    pub negative: Option<Negative>,
}

/// A hard negative of a [`Pair`] ([`crate::negatives`]).
#[derive(Debug, Clone)]
pub struct Negative {
    pub attribute: Attribute,
    /// The caption with the attribute changed (wrong for the pair's clip).
    pub caption: String,
    /// The clip changed to fit the changed attribute (wrong for the pair's caption).
    pub features: Features,
}

/// The swap a hard negative makes for `tune` captioned `caption` (seeded `caption_seed`):
/// the meter half the time when the caption states it, else the tonic or the mode, in a
/// random order; the first whose changed caption reads differently without the renderer's
/// words. `None` when the caption states none of them.
fn pick_negative(
    tune: &Tune,
    instrument: Instrument,
    bpm: u32,
    caption_text: &str,
    caption_seed: u64,
    rng: &mut StdRng,
) -> Option<(Attribute, Tune, String)> {
    let meter_first = rng.random::<bool>();
    let mut order = if rng.random::<bool>() {
        vec![Attribute::Tonic, Attribute::Mode]
    } else {
        vec![Attribute::Mode, Attribute::Tonic]
    };
    order.insert(if meter_first { 0 } else { 2 }, Attribute::Meter);
    for attr in order {
        let Some(t2) = negatives::swap(tune, attr, rng) else {
            continue;
        };
        let wrong = caption(
            &t2,
            instrument,
            bpm,
            &mut StdRng::seed_from_u64(caption_seed),
        );
        if adherence_text(&wrong) != adherence_text(caption_text) {
            return Some((attr, t2, wrong));
        }
    }
    None
}

fn sample_tunes<'a>(
    tunes: &'a [Tune],
    split: Split,
    n: usize,
    rng: &mut StdRng,
) -> Vec<(usize, &'a Tune)> {
    let mut v: Vec<(usize, &Tune)> = tunes
        .iter()
        .enumerate()
        .filter(|(_, t)| t.split == split)
        .collect();
    musicrl_music::shuffle(&mut v, rng);
    if n > 0 {
        v.truncate(n);
    }
    v
}

/// Renders `(tune, renders)` pairs with random instruments, tempos and captions, and with
/// `negatives`, each pair's hard negative.
pub fn render_pairs(
    tunes: &[(usize, &Tune)],
    renders: usize,
    max_tokens: usize,
    negatives: bool,
    rng: &mut StdRng,
) -> Vec<Pair> {
    struct Job<'a> {
        tune: usize,
        t: &'a Tune,
        instrument: Instrument,
        bpm: u32,
        caption: String,
        caption_seed: u64,
        seed: u64,
        negative: Option<(Attribute, Tune, String)>,
    }
    let mut jobs = Vec::new();
    for &(i, t) in tunes {
        for _ in 0..renders {
            let instrument = Instrument::ALL[rng.random_range(0..Instrument::ALL.len())];
            let bpm = (default_bpm(t) as f32 * rng.random_range(0.8f32..1.25)).round() as u32;
            let caption_seed = rng.random::<u64>();
            let caption = caption(t, instrument, bpm, &mut StdRng::seed_from_u64(caption_seed));
            let seed = rng.random();
            let negative = if negatives {
                let mut r = StdRng::seed_from_u64(seed ^ 0x4e45_47);
                pick_negative(t, instrument, bpm, &caption, caption_seed, &mut r)
            } else {
                None
            };
            jobs.push(Job {
                tune: i,
                t,
                instrument,
                bpm,
                caption,
                caption_seed,
                seed,
                negative,
            });
        }
    }
    par_map(&jobs, |x, j| {
        let events = tune_events(j.t, max_tokens);
        Pair {
            tune: j.tune,
            instrument: j.instrument,
            bpm: j.bpm,
            caption: j.caption.clone(),
            caption_seed: j.caption_seed,
            features: features_of(x, &events, j.instrument, j.bpm as f32, j.seed),
            negative: j.negative.as_ref().map(|(attr, t2, wrong)| Negative {
                attribute: *attr,
                caption: wrong.clone(),
                features: features_of(
                    x,
                    &negatives::refit(&events, j.t, t2, *attr),
                    j.instrument,
                    j.bpm as f32,
                    j.seed,
                ),
            }),
        }
    })
}

/// Held-out measurements.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextMetrics {
    pub eval_pairs: usize,
    pub recall_at_1: f64,
    pub recall_at_5: f64,
    /// Recall@1 of a model that ranks at random.
    pub chance_recall_at_1: f64,
    /// Attribute accuracies: the share of held-out clips whose true caption outscores the
    /// same caption with that one attribute changed (chance 0.5), and how many clips' captions
    /// state the attribute. Key: another tonic, same mode; mode: same tonic, other mode.
    #[serde(default)]
    pub key_accuracy: f64,
    #[serde(default)]
    pub key_pairs: usize,
    #[serde(default)]
    pub mode_accuracy: f64,
    #[serde(default)]
    pub mode_pairs: usize,
    pub tune_type_accuracy: f64,
    pub tune_type_pairs: usize,
    pub meter_accuracy: f64,
    pub meter_pairs: usize,
    /// Clip-side accuracies: how often the true caption scores its clip above the same clip
    /// changed to fit a wrong tonic, mode or meter (`negatives::refit`); chance 0.5. This is
    /// the direction RL uses (one caption, which clip adheres), where the accuracies above
    /// change the caption.
    #[serde(default)]
    pub key_clip_accuracy: f64,
    #[serde(default)]
    pub key_clip_pairs: usize,
    #[serde(default)]
    pub mode_clip_accuracy: f64,
    #[serde(default)]
    pub mode_clip_pairs: usize,
    #[serde(default)]
    pub meter_clip_accuracy: f64,
    #[serde(default)]
    pub meter_clip_pairs: usize,
    pub instrument_accuracy: f64,
    pub instrument_pairs: usize,
    pub train_pairs: usize,
    pub epochs: Vec<TextEpoch>,
    pub parameters: usize,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TextEpoch {
    pub epoch: usize,
    pub train_loss: f64,
    pub seconds: f64,
}

/// Progress of a training run, for the command line.
pub trait Progress {
    fn stage(&mut self, what: &str);
    fn epoch_started(&mut self, epoch: usize, batches: usize);
    fn batch_done(&mut self, loss: f64);
    fn epoch_done(&mut self, epoch: usize, loss: f64);
}

const TYPES: [&str; 8] = [
    "reel",
    "jig",
    "hornpipe",
    "waltz",
    "march",
    "polka",
    "air",
    "strathspey",
];

/// Trains a text/audio model on `tunes`, measures it on held-out tunes and writes the
/// checkpoint folder `out`.
pub fn train(
    config: &TextConfig,
    tunes: &[Tune],
    out: &Path,
    progress: &mut dyn Progress,
) -> Result<(TextModel, TextMetrics)> {
    let t = &config.train;
    let m = &config.model;
    if t.batch_size < 2 {
        return Err(Error::Training(
            "batch_size must be at least 2 for a contrastive loss".into(),
        ));
    }
    let mut rng = StdRng::seed_from_u64(t.seed);
    let train_tunes = sample_tunes(tunes, Split::Train, t.tunes, &mut rng);
    if train_tunes.len() < 2 {
        return Err(Error::Data(
            "the corpus has fewer than 2 training tunes".into(),
        ));
    }
    progress.stage(&format!(
        "rendering {} training clips",
        train_tunes.len() * t.renders_per_tune
    ));
    let pairs = render_pairs(
        &train_tunes,
        t.renders_per_tune.max(1),
        t.max_tokens,
        t.hard_negatives,
        &mut rng,
    );

    let device = musicrl_policy::device::training_device();
    device.seed(t.seed);
    let mut model = TextAudioModel::new(m, &device);
    let parameters = model.num_params();
    let mut optimizer = AdamWConfig::new().with_weight_decay(1e-4).init();
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    let mut epochs = Vec::new();
    for epoch in 1..=t.epochs {
        let started = std::time::Instant::now();
        musicrl_music::shuffle(&mut order, &mut rng);
        // Drop the last partial batch: a contrastive batch of one teaches nothing.
        let batches: Vec<&[usize]> = order
            .chunks(t.batch_size)
            .filter(|b| b.len() >= 2)
            .collect();
        progress.epoch_started(epoch, batches.len());
        let (mut sum, mut count) = (0.0f64, 0usize);
        for batch in batches {
            let windows: Vec<Features> = batch
                .iter()
                .map(|&k| {
                    let f = &pairs[k].features;
                    let room = f.frames.saturating_sub(m.window_frames);
                    f.window(rng.random_range(0..=room), m.window_frames)
                })
                .collect();
            let refs: Vec<&Features> = windows.iter().collect();
            let captions: Vec<&str> = batch.iter().map(|&k| pairs[k].caption.as_str()).collect();
            let audio = model.embed_audio(&refs, &device);
            let text = model.embed_text(&captions, m, &device);
            let loss = if t.hard_negatives {
                // A pair whose caption states no swappable attribute meets the next pair's
                // caption and clip instead (ordinary negatives).
                let (mut neg_captions, mut neg_windows) = (Vec::new(), Vec::new());
                for (i, &k) in batch.iter().enumerate() {
                    let (c, f) = match &pairs[k].negative {
                        Some(n) => (n.caption.as_str(), &n.features),
                        None => {
                            let other = &pairs[batch[(i + 1) % batch.len()]];
                            (other.caption.as_str(), &other.features)
                        }
                    };
                    neg_captions.push(c);
                    let room = f.frames.saturating_sub(m.window_frames);
                    neg_windows.push(f.window(rng.random_range(0..=room), m.window_frames));
                }
                let neg_refs: Vec<&Features> = neg_windows.iter().collect();
                contrastive_loss_with_negatives(
                    audio,
                    text,
                    model.embed_text(&neg_captions, m, &device),
                    model.embed_audio(&neg_refs, &device),
                    m.temperature,
                )
            } else {
                contrastive_loss(audio, text, m.temperature)
            };
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let value = f64::from(loss.into_scalar::<f32>());
            if !value.is_finite() {
                return Err(Error::Training(format!(
                    "the loss became {value} in epoch {epoch}"
                )));
            }
            model = optimizer.step(t.learning_rate, model, grads);
            sum += value;
            count += 1;
            progress.batch_done(value);
        }
        let loss = sum / count.max(1) as f64;
        progress.epoch_done(epoch, loss);
        epochs.push(TextEpoch {
            epoch,
            train_loss: loss,
            seconds: started.elapsed().as_secs_f64(),
        });
    }

    progress.stage("measuring on held-out tunes");
    let scorer = TextModel::new(model.clone(), *m, String::new());
    let mut metrics = evaluate(&scorer, tunes, t)?;
    metrics.train_pairs = pairs.len();
    metrics.epochs = epochs;
    metrics.parameters = parameters;
    let version = store::save(out, KIND, &model.valid(), config, &metrics)?;
    metrics.version = version.clone();
    store::write_metrics(out, &metrics)?;
    Ok((TextModel::new(model, *m, version), metrics))
}

/// Retrieval and attribute measurements on test-split tunes.
pub fn evaluate(scorer: &TextModel, tunes: &[Tune], t: &TextTrainConfig) -> Result<TextMetrics> {
    let mut rng = StdRng::seed_from_u64(t.seed ^ 0x7e57);
    let candidates = sample_tunes(tunes, Split::Test, 0, &mut rng);
    // Render more than needed, then keep the first clips with distinct captions: retrieval
    // ranks the first `eval_pairs`, the attribute swaps use `attribute_clips` (more, so
    // that an attribute few captions state is still measured on enough pairs).
    let attribute_clips = if t.attribute_clips == 0 {
        t.eval_pairs
    } else {
        t.attribute_clips
    };
    let wanted = t.eval_pairs.max(attribute_clips);
    let take: Vec<(usize, &Tune)> = candidates.into_iter().take(wanted * 2).collect();
    let rendered = render_pairs(&take, 1, t.max_tokens, true, &mut rng);
    let mut seen = std::collections::HashSet::new();
    let all: Vec<&Pair> = rendered
        .iter()
        .filter(|p| seen.insert(p.caption.clone()))
        .take(wanted)
        .collect();
    let pairs: Vec<&Pair> = all.iter().take(t.eval_pairs).copied().collect();
    let n = pairs.len();
    if n < 5 {
        return Err(Error::Data(format!("only {n} held-out test clips")));
    }
    let clips: Vec<&Features> = pairs.iter().map(|p| &p.features).collect();
    let captions: Vec<&str> = pairs.iter().map(|p| p.caption.as_str()).collect();
    let sims = scorer.similarity_matrix(&clips, &captions);
    let (mut r1, mut r5) = (0usize, 0usize);
    for (i, row) in sims.iter().enumerate() {
        let higher = row.iter().filter(|&&s| s > row[i]).count();
        r1 += usize::from(higher < 1);
        r5 += usize::from(higher < 5);
    }

    // Attribute swaps: the same caption wording (same caption seed) with one attribute changed.
    // ok[k] / n[k] for k = tune type, meter, instrument, key, mode.
    let (mut ok, mut count) = ([0usize; 5], [0usize; 5]);
    for p in all.iter().take(attribute_clips) {
        let tune = &tunes[p.tune];
        let recaption = |t: &Tune, inst: Instrument| {
            caption(t, inst, p.bpm, &mut StdRng::seed_from_u64(p.caption_seed))
        };
        let mut wrong = Vec::new();
        if TYPES.contains(&tune.tune_type.as_str()) {
            let mut t2 = tune.clone();
            t2.tune_type = TYPES[(TYPES
                .iter()
                .position(|x| *x == tune.tune_type)
                .expect("listed")
                + 1
                + rng.random_range(0..TYPES.len() - 1))
                % TYPES.len()]
            .to_string();
            wrong.push((0, recaption(&t2, p.instrument)));
        }
        if METERS.contains(&tune.meter.as_str()) {
            let mut t2 = tune.clone();
            t2.meter = METERS[(METERS
                .iter()
                .position(|x| *x == tune.meter)
                .expect("listed")
                + 1
                + rng.random_range(0..METERS.len() - 1))
                % METERS.len()]
            .to_string();
            wrong.push((1, recaption(&t2, p.instrument)));
        }
        let other = Instrument::ALL[(Instrument::ALL
            .iter()
            .position(|x| *x == p.instrument)
            .expect("listed")
            + 1
            + rng.random_range(0..Instrument::ALL.len() - 1))
            % Instrument::ALL.len()];
        wrong.push((2, recaption(tune, other)));
        if let Some(i) = TONICS.iter().position(|x| *x == tune.key_tonic) {
            let mut t2 = tune.clone();
            t2.key_tonic =
                TONICS[(i + 1 + rng.random_range(0..TONICS.len() - 1)) % TONICS.len()].to_string();
            wrong.push((3, recaption(&t2, p.instrument)));
        }
        let mut t2 = tune.clone();
        t2.key_mode = if tune.key_mode == "minor" {
            "major"
        } else {
            "minor"
        }
        .to_string();
        wrong.push((4, recaption(&t2, p.instrument)));
        for (kind, w) in wrong {
            let same = if scorer.config.renderer_words_removed {
                adherence_text(&w) == adherence_text(&p.caption)
            } else {
                w == p.caption
            };
            if same {
                // The caption does not state this attribute (or, with the renderer's
                // words removed, the model is not shown it: instrument).
                continue;
            }
            let s = scorer.score(&[(p.caption.as_str(), &p.features), (w.as_str(), &p.features)]);
            ok[kind] += usize::from(s[0] > s[1]);
            count[kind] += 1;
        }
    }
    // Clip side: the true caption against the true clip and the clip refitted to a wrong
    // attribute. ok/count by Attribute: tonic, mode, meter.
    let (mut clip_ok, mut clip_count) = ([0usize; 3], [0usize; 3]);
    for p in all.iter().take(attribute_clips) {
        let Some(neg) = &p.negative else { continue };
        let k = match neg.attribute {
            Attribute::Tonic => 0,
            Attribute::Mode => 1,
            Attribute::Meter => 2,
        };
        let s = scorer.score(&[
            (p.caption.as_str(), &p.features),
            (p.caption.as_str(), &neg.features),
        ]);
        clip_ok[k] += usize::from(s[0] > s[1]);
        clip_count[k] += 1;
    }
    let ratio = |a: usize, b: usize| {
        if b == 0 {
            f64::NAN
        } else {
            a as f64 / b as f64
        }
    };
    Ok(TextMetrics {
        eval_pairs: n,
        recall_at_1: ratio(r1, n),
        recall_at_5: ratio(r5, n),
        chance_recall_at_1: 1.0 / n as f64,
        key_accuracy: ratio(ok[3], count[3]),
        key_pairs: count[3],
        mode_accuracy: ratio(ok[4], count[4]),
        mode_pairs: count[4],
        tune_type_accuracy: ratio(ok[0], count[0]),
        tune_type_pairs: count[0],
        meter_accuracy: ratio(ok[1], count[1]),
        meter_pairs: count[1],
        key_clip_accuracy: ratio(clip_ok[0], clip_count[0]),
        key_clip_pairs: clip_count[0],
        mode_clip_accuracy: ratio(clip_ok[1], clip_count[1]),
        mode_clip_pairs: clip_count[1],
        meter_clip_accuracy: ratio(clip_ok[2], clip_count[2]),
        meter_clip_pairs: clip_count[2],
        instrument_accuracy: ratio(ok[2], count[2]),
        instrument_pairs: count[2],
        train_pairs: 0,
        epochs: Vec::new(),
        parameters: 0,
        version: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(rows: [[f32; 2]; 2], device: &Device) -> Tensor<2> {
        Tensor::<2>::from_data(
            TensorData::new(rows.iter().flatten().copied().collect::<Vec<_>>(), [2, 2]),
            device,
        )
    }

    #[test]
    fn hard_negatives_enter_each_side_of_the_softmax() {
        // audio = text = I, temperature 1. Wrong captions and wrong clips that swap the rows:
        // every row reads (1, 0 | 0, 1) up to order on both sides, log(e / (2e + 2)), so the
        // loss is −log(e/(e+1)) + log 2 = 1.006409.
        let device = musicrl_policy::device::inference_device();
        let eye2 = [[1.0, 0.0], [0.0, 1.0]];
        let swapped = [[0.0, 1.0], [1.0, 0.0]];
        let zeros = [[0.0, 0.0], [0.0, 0.0]];
        let loss = |neg: [[f32; 2]; 2]| {
            contrastive_loss_with_negatives(
                t(eye2, &device),
                t(eye2, &device),
                t(neg, &device),
                t(neg, &device),
                1.0,
            )
            .into_scalar::<f32>()
        };
        let both = loss(swapped);
        assert!((both - 1.006_409).abs() < 1e-5, "{both}");
        // Negatives orthogonal to everything: rows (1, 0 | 0, 0), log(e / (e + 3)) on both
        // sides, loss ln(e + 3) − 1 = 0.743668.
        let orthogonal = loss(zeros);
        assert!((orthogonal - 0.743_668).abs() < 1e-5, "{orthogonal}");
        // Without negatives: −log(e/(e+1)) = 0.313262.
        let plain = contrastive_loss(t(eye2, &device), t(eye2, &device), 1.0).into_scalar::<f32>();
        assert!((plain - 0.313_262).abs() < 1e-5, "{plain}");
    }
}
