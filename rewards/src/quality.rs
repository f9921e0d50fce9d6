//! Quality: a MOS-style regressor from audio to a 1–5 score (a simplified stand-in for the
//! paper's MOS predictor), trained on graded degradations of corpus renderings
//! ([`crate::degrade`]) and, optionally, a ratings file of real scores
//! (`musicrl train-reward quality`).
//!
//! The model is an audio tower ([`crate::encoder::AudioEncoder`]) and a linear head;
//! MOS = 1 + 4·σ(head). Each step trains on a random window of `window_frames` frames per
//! clip with a squared error on the MOS scale. The RL score of a clip is the mean predicted
//! MOS of its head and tail windows, rescaled from [1, 5] to [0, 1], as the paper scores the
//! first and the last 20 s of a 30 s clip.
//!
//! **Ratings file** (`--ratings FILE`): JSON Lines, one clip a line,
//! `{"wav": "clips/a.wav", "mos": 3.7}`, the path relative to the file's folder; any sample
//! rate and channel count (mixed to mono, resampled linearly to 16 kHz).
//!
//! Held-out measurement (`metrics.json`): Spearman's rank correlation of predicted and
//! labelled MOS on degraded renderings of test-split tunes (and on a held-out tenth of the
//! ratings file, when one is given).

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use musicrl_music::captions::default_bpm;
use musicrl_music::corpus::{Split, Tune};
use musicrl_music::render::Instrument;

use crate::clips::{par_map, render_audio, tune_events};
use crate::degrade::Degradation;
use crate::encoder::{AudioEncoder, AudioEncoderConfig, audio_batch};
use crate::error::{Error, Result};
use crate::features::{Extractor, FEATURE_SAMPLE_RATE, Features, window_starts};
use crate::store;

pub const KIND: &str = "quality";

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QualityModelConfig {
    pub audio: AudioEncoderConfig,
    /// Frames a window (25 a second).
    pub window_frames: usize,
}

impl Default for QualityModelConfig {
    fn default() -> Self {
        Self {
            audio: AudioEncoderConfig {
                hidden: 64,
                out: 32,
                key_profile: false,
                metre_profile: true,
            },
            window_frames: 200,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityTrainConfig {
    /// Training tunes (a seeded sample of the train split; 0 = all).
    pub tunes: usize,
    pub renders_per_tune: usize,
    /// Share of clean clips.
    pub clean_share: f32,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub max_tokens: usize,
    /// Held-out clips (from test-split tunes).
    pub eval_clips: usize,
    /// Real ratings to train on as well (see the module doc).
    pub ratings: Option<PathBuf>,
    /// Train on the ratings file only.
    pub ratings_only: bool,
    pub seed: u64,
}

impl Default for QualityTrainConfig {
    fn default() -> Self {
        Self {
            tunes: 5000,
            renders_per_tune: 2,
            clean_share: 0.25,
            epochs: 20,
            batch_size: 32,
            learning_rate: 2e-3,
            max_tokens: 128,
            eval_clips: 400,
            ratings: None,
            ratings_only: false,
            seed: 11,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityConfig {
    pub model: QualityModelConfig,
    pub train: QualityTrainConfig,
}

#[derive(Module, Debug)]
pub struct QualityNet {
    audio: AudioEncoder,
    head: Linear,
}

impl QualityNet {
    pub fn new(config: &QualityModelConfig, device: &Device) -> Self {
        Self {
            audio: AudioEncoder::new(config.audio, device),
            head: LinearConfig::new(config.audio.out, 1).init(device),
        }
    }

    /// Predicted MOS in (1, 5) of equal-length windows: `[batch]`.
    pub fn mos(&self, windows: &[&Features], device: &Device) -> Tensor<1> {
        let input = audio_batch(windows, device);
        let x = self.head.forward(gelu(self.audio.forward(input)));
        let [b, _] = x.dims();
        sigmoid(x.reshape([b])) * 4.0 + 1.0
    }
}

/// A trained model ready to score.
pub struct QualityModel {
    net: QualityNet,
    pub config: QualityModelConfig,
    pub version: String,
    device: Device,
}

impl std::fmt::Debug for QualityModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QualityModel")
            .field("version", &self.version)
            .finish()
    }
}

impl QualityModel {
    pub fn new(net: QualityNet, config: QualityModelConfig, version: String) -> Self {
        Self {
            net: net.valid(),
            config,
            version,
            device: musicrl_policy::device::inference_device(),
        }
    }

    pub fn load(dir: &Path) -> Result<Self> {
        let config: QualityConfig = store::load_config(dir)?;
        let device = musicrl_policy::device::inference_device();
        let (net, version) =
            store::load_params(dir, KIND, QualityNet::new(&config.model, &device))?;
        Ok(Self::new(net, config.model, version))
    }

    /// Mean predicted MOS (1–5) of each clip's head and tail windows.
    pub fn mos(&self, clips: &[&Features]) -> Vec<f32> {
        self.window_mos(clips)
            .iter()
            .map(|w| (w[0] + w[1]) / 2.0)
            .collect()
    }

    /// Predicted MOS (1–5) of each clip's head and tail windows.
    fn window_mos(&self, clips: &[&Features]) -> Vec<[f32; 2]> {
        if clips.is_empty() {
            return Vec::new();
        }
        let len = self.config.window_frames;
        let windows: Vec<Features> = clips
            .iter()
            .flat_map(|f| {
                window_starts(f.frames, 2, len)
                    .into_iter()
                    .map(|s| f.window(s, len))
            })
            .collect();
        let refs: Vec<&Features> = windows.iter().collect();
        let per_window = musicrl_policy::melody::to_vec_f32(self.net.mos(&refs, &self.device));
        per_window.chunks(2).map(|w| [w[0], w[1]]).collect()
    }

    /// The RL score of each clip (see [`QualityModel::score`]) and of its head and tail
    /// windows, each rescaled the same way.
    pub fn score_windows(&self, clips: &[&Features]) -> Vec<(f32, Vec<f32>)> {
        let rescale = |m: f32| (m - 1.0) / 4.0;
        self.window_mos(clips)
            .iter()
            .map(|w| {
                (
                    rescale((w[0] + w[1]) / 2.0),
                    w.iter().map(|&m| rescale(m)).collect(),
                )
            })
            .collect()
    }

    /// The RL score: MOS rescaled from [1, 5] to [0, 1].
    pub fn score(&self, clips: &[&Features]) -> Vec<f32> {
        self.mos(clips)
            .into_iter()
            .map(|m| (m - 1.0) / 4.0)
            .collect()
    }
}

/// A labelled clip.
#[derive(Debug, Clone)]
pub struct Rated {
    pub features: Features,
    pub mos: f32,
}

/// Degraded renderings of `tunes` with their labels.
pub fn synthetic_clips(
    tunes: &[&Tune],
    renders: usize,
    clean_share: f32,
    max_tokens: usize,
    rng: &mut StdRng,
) -> Vec<Rated> {
    // Clips are cut at a random length between a third of the token budget and all of it,
    // clean or not, so a clip's length tells nothing of its label: otherwise every clean
    // clip fills the budget and the model learns that longer is better.
    let jobs: Vec<(&Tune, Instrument, f32, Degradation, u64, usize)> = tunes
        .iter()
        .flat_map(|t| std::iter::repeat_n(*t, renders))
        .map(|t| {
            let inst = Instrument::ALL[rng.random_range(0..Instrument::ALL.len())];
            let bpm = default_bpm(t) as f32 * rng.random_range(0.8f32..1.25);
            (
                t,
                inst,
                bpm,
                Degradation::random(clean_share, rng),
                rng.random::<u64>(),
                rng.random_range(max_tokens.div_ceil(3)..=max_tokens.max(1)),
            )
        })
        .collect();
    par_map(&jobs, |x, &(t, inst, bpm, d, seed, tokens)| {
        let mut r = StdRng::seed_from_u64(seed);
        let events = d.apply_to_events(&tune_events(t, tokens), &mut r);
        let mut audio = render_audio(&events, inst, bpm, seed);
        d.apply_to_audio(&mut audio, &mut r);
        Rated {
            features: x.extract(&audio),
            mos: d.mos(),
        }
    })
}

#[derive(Deserialize)]
struct RatingLine {
    wav: PathBuf,
    mos: f32,
}

/// Reads a WAV as mono samples at the feature sample rate.
pub fn read_wav(path: &Path) -> Result<Vec<f32>> {
    let mut reader = hound::WavReader::open(path)
        .map_err(|e| Error::Data(format!("{}: {e}", path.display())))?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels.max(1));
    let samples: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Data(format!("{}: {e}", path.display())))?,
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample.max(1) - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| Error::Data(format!("{}: {e}", path.display())))?
        }
    };
    let mono: Vec<f32> = samples
        .chunks(channels)
        .map(|c| c.iter().sum::<f32>() / c.len() as f32)
        .collect();
    Ok(resample_linear(
        &mono,
        spec.sample_rate,
        FEATURE_SAMPLE_RATE,
    ))
}

/// Linear-interpolation resampling (adequate for features up to 8 kHz from common rates).
pub fn resample_linear(x: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || x.is_empty() {
        return x.to_vec();
    }
    let n = (x.len() as f64 * f64::from(to) / f64::from(from)).round() as usize;
    let step = f64::from(from) / f64::from(to);
    (0..n)
        .map(|i| {
            let pos = i as f64 * step;
            let k = pos.floor() as usize;
            let frac = (pos - k as f64) as f32;
            let a = x[k.min(x.len() - 1)];
            let b = x[(k + 1).min(x.len() - 1)];
            a + (b - a) * frac
        })
        .collect()
}

/// Reads a ratings file (see the module doc).
pub fn read_ratings(path: &Path) -> Result<Vec<Rated>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Data(format!("{}: {e}", path.display())))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let extractor = Extractor::new();
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let r: RatingLine = serde_json::from_str(line)
            .map_err(|e| Error::Data(format!("{}:{}: {e}", path.display(), i + 1)))?;
        if !(1.0..=5.0).contains(&r.mos) {
            return Err(Error::Data(format!(
                "{}:{}: mos {} is outside [1, 5]",
                path.display(),
                i + 1,
                r.mos
            )));
        }
        let audio = read_wav(&base.join(&r.wav))?;
        out.push(Rated {
            features: extractor.extract(&audio),
            mos: r.mos,
        });
    }
    Ok(out)
}

/// Spearman's rank correlation (average ranks for ties).
pub fn spearman(a: &[f32], b: &[f32]) -> f64 {
    fn ranks(x: &[f32]) -> Vec<f64> {
        let mut idx: Vec<usize> = (0..x.len()).collect();
        idx.sort_by(|&i, &j| x[i].total_cmp(&x[j]));
        let mut r = vec![0.0; x.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
                j += 1;
            }
            let avg = (i + j) as f64 / 2.0 + 1.0;
            for k in i..=j {
                r[idx[k]] = avg;
            }
            i = j + 1;
        }
        r
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    if va == 0.0 || vb == 0.0 {
        return 0.0;
    }
    cov / (va * vb).sqrt()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QualityMetrics {
    pub eval_clips: usize,
    pub spearman: f64,
    /// Mean predicted MOS of clean and of degraded held-out clips.
    pub mean_mos_clean: f64,
    pub mean_mos_degraded: f64,
    pub ratings_eval_clips: usize,
    pub ratings_spearman: Option<f64>,
    pub train_clips: usize,
    pub epochs: Vec<QualityEpoch>,
    pub parameters: usize,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QualityEpoch {
    pub epoch: usize,
    pub train_loss: f64,
    pub seconds: f64,
}

/// Trains the quality model and writes the checkpoint folder `out`.
pub fn train(
    config: &QualityConfig,
    tunes: &[Tune],
    out: &Path,
    progress: &mut dyn crate::text::Progress,
) -> Result<(QualityModel, QualityMetrics)> {
    let t = &config.train;
    let m = &config.model;
    let mut rng = StdRng::seed_from_u64(t.seed);
    let pick = |split: Split, n: usize, rng: &mut StdRng| -> Vec<&Tune> {
        let mut v: Vec<&Tune> = tunes.iter().filter(|x| x.split == split).collect();
        musicrl_music::shuffle(&mut v, rng);
        if n > 0 {
            v.truncate(n);
        }
        v
    };
    let mut train_clips = Vec::new();
    if !t.ratings_only {
        let train_tunes = pick(Split::Train, t.tunes, &mut rng);
        progress.stage(&format!(
            "rendering {} training clips",
            train_tunes.len() * t.renders_per_tune
        ));
        train_clips = synthetic_clips(
            &train_tunes,
            t.renders_per_tune.max(1),
            t.clean_share,
            t.max_tokens,
            &mut rng,
        );
    }
    let mut ratings_eval = Vec::new();
    if let Some(path) = &t.ratings {
        progress.stage(&format!("reading ratings from {}", path.display()));
        let mut rated = read_ratings(path)?;
        // Every tenth rating is held out.
        let mut k = 0;
        rated.retain(|r| {
            k += 1;
            if k % 10 == 0 {
                ratings_eval.push(r.clone());
                false
            } else {
                true
            }
        });
        train_clips.extend(rated);
    }
    if train_clips.len() < 2 {
        return Err(Error::Data("fewer than 2 training clips".into()));
    }

    let device = musicrl_policy::device::training_device();
    device.seed(t.seed);
    let mut net = QualityNet::new(m, &device);
    let parameters = net.num_params();
    let mut optimizer = AdamWConfig::new().with_weight_decay(1e-4).init();
    let mut order: Vec<usize> = (0..train_clips.len()).collect();
    let mut epochs = Vec::new();
    for epoch in 1..=t.epochs {
        let started = std::time::Instant::now();
        musicrl_music::shuffle(&mut order, &mut rng);
        let batches: Vec<&[usize]> = order.chunks(t.batch_size.max(1)).collect();
        progress.epoch_started(epoch, batches.len());
        let (mut sum, mut count) = (0.0f64, 0usize);
        for batch in batches {
            let windows: Vec<Features> = batch
                .iter()
                .map(|&k| {
                    let f = &train_clips[k].features;
                    let room = f.frames.saturating_sub(m.window_frames);
                    f.window(rng.random_range(0..=room), m.window_frames)
                })
                .collect();
            let refs: Vec<&Features> = windows.iter().collect();
            let labels: Vec<f32> = batch.iter().map(|&k| train_clips[k].mos).collect();
            let target = Tensor::<1>::from_data(TensorData::new(labels, [batch.len()]), &device);
            let diff = net.mos(&refs, &device) - target;
            let loss = (diff.clone() * diff).mean();
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            let value = f64::from(loss.into_scalar::<f32>());
            if !value.is_finite() {
                return Err(Error::Training(format!(
                    "the loss became {value} in epoch {epoch}"
                )));
            }
            net = optimizer.step(t.learning_rate, net, grads);
            sum += value;
            count += 1;
            progress.batch_done(value);
        }
        let loss = sum / count.max(1) as f64;
        progress.epoch_done(epoch, loss);
        epochs.push(QualityEpoch {
            epoch,
            train_loss: loss,
            seconds: started.elapsed().as_secs_f64(),
        });
    }

    progress.stage("measuring on held-out tunes");
    let model = QualityModel::new(net.clone(), *m, String::new());
    let mut eval_rng = StdRng::seed_from_u64(t.seed ^ 0x7e57);
    let eval_tunes = pick(Split::Test, t.eval_clips, &mut eval_rng);
    let eval = synthetic_clips(&eval_tunes, 1, t.clean_share, t.max_tokens, &mut eval_rng);
    let predict = |clips: &[Rated]| -> Vec<f32> {
        clips
            .chunks(64)
            .flat_map(|c| model.mos(&c.iter().map(|r| &r.features).collect::<Vec<_>>()))
            .collect()
    };
    let predicted = predict(&eval);
    let labels: Vec<f32> = eval.iter().map(|r| r.mos).collect();
    let mean_where = |clean: bool| {
        let v: Vec<f64> = predicted
            .iter()
            .zip(&labels)
            .filter(|(_, l)| (**l == crate::degrade::CLEAN_MOS) == clean)
            .map(|(p, _)| f64::from(*p))
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let ratings_spearman = (!ratings_eval.is_empty()).then(|| {
        let p = predict(&ratings_eval);
        let l: Vec<f32> = ratings_eval.iter().map(|r| r.mos).collect();
        spearman(&p, &l)
    });
    let mut metrics = QualityMetrics {
        eval_clips: eval.len(),
        spearman: spearman(&predicted, &labels),
        mean_mos_clean: mean_where(true),
        mean_mos_degraded: mean_where(false),
        ratings_eval_clips: ratings_eval.len(),
        ratings_spearman,
        train_clips: train_clips.len(),
        epochs,
        parameters,
        version: String::new(),
    };
    let version = store::save(out, KIND, &net.valid(), config, &metrics)?;
    metrics.version = version.clone();
    store::write_metrics(out, &metrics)?;
    Ok((QualityModel::new(net, *m, version), metrics))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_of_hand_computed_cases() {
        assert!((spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // Ranks a = (1, 2, 3, 4), b = (2, 1, 4, 3): ρ = 1 − 6·Σd²/(n(n²−1)) = 1 − 6·4/60 = 0.6.
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[2.0, 1.0, 4.0, 3.0]) - 0.6).abs() < 1e-12);
        // Ties take the average rank: b = (1.5, 1.5, 3).
        let r = spearman(&[1.0, 2.0, 3.0], &[5.0, 5.0, 9.0]);
        assert!((r - 0.866_025_403_784_438_6).abs() < 1e-9, "{r}");
    }

    #[test]
    fn a_ratings_file_reads_any_wav_and_refuses_bad_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, rate: u32, channels: u16| {
            let spec = hound::WavSpec {
                channels,
                sample_rate: rate,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            };
            let mut w = hound::WavWriter::create(dir.path().join(name), spec).expect("creates");
            for i in 0..rate {
                let v = (8000.0 * (i as f32 * 0.05).sin()) as i16;
                for _ in 0..channels {
                    w.write_sample(v).expect("writes");
                }
            }
            w.finalize().expect("finalises");
        };
        write("a.wav", 44_100, 2);
        write("b.wav", 16_000, 1);
        let file = dir.path().join("ratings.jsonl");
        std::fs::write(
            &file,
            "{\"wav\": \"a.wav\", \"mos\": 4.2}\n\n{\"wav\": \"b.wav\", \"mos\": 1.5}\n",
        )
        .expect("writes");
        let rated = read_ratings(&file).expect("reads");
        assert_eq!(rated.len(), 2);
        assert_eq!((rated[0].mos, rated[1].mos), (4.2, 1.5));
        // One second at any rate becomes 25 frames at 16 kHz.
        assert_eq!(
            (rated[0].features.frames, rated[1].features.frames),
            (25, 25)
        );
        std::fs::write(&file, "{\"wav\": \"a.wav\", \"mos\": 7}\n").expect("writes");
        let err = read_ratings(&file)
            .expect_err("mos 7 is refused")
            .to_string();
        assert!(
            err.contains("ratings.jsonl:1") && err.contains("outside"),
            "{err}"
        );
        std::fs::write(&file, "{\"wav\": \"missing.wav\", \"mos\": 3}\n").expect("writes");
        assert!(
            read_ratings(&file)
                .expect_err("no such file")
                .to_string()
                .contains("missing.wav")
        );
    }

    #[test]
    fn linear_resampling_keeps_duration_and_values() {
        let x: Vec<f32> = (0..441).map(|i| i as f32).collect();
        let y = resample_linear(&x, 44_100, 16_000);
        assert_eq!(y.len(), 160);
        assert!((y[1] - 2.75625).abs() < 1e-4);
    }
}
