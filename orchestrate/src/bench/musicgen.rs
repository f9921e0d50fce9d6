//! The `musicgen` workload: sampling from a MusicGen folder (frames a second at each batch
//! size, guidance off and on), the full-grid forward, and one learner update
//! (`MusicgenTrainer::try_train_step`, the loop's objective), on this build's device. `scripts/bench_musicgen.py` runs transformers on the same folder beside it.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use burn::tensor::{Int, Tensor, TensorData};
use musicrl_policy::musicgen::engine::Engine;
use musicrl_policy::musicgen::{Decoding, MusicGen, SamplingOptions};
use serde::Serialize;

use super::median;

#[derive(Debug, Clone, Serialize)]
pub struct MusicgenMeasurement {
    /// `sample` (top-k 250 draws on the rollout engine, what actors run), `sample-burn`
    /// (the same draws with burn's cached forward), `forward` (the whole delayed grid at
    /// once, as scoring runs it) or `update` (one learner update: T5 frozen, the reference
    /// and trained decoders' grids, the loss, backward, Adam).
    pub kind: String,
    pub batch: usize,
    pub guidance: bool,
    pub frames: usize,
    /// Frames of every clip in the batch per second (`batch · frames / median`).
    pub frames_per_second: f64,
    pub median_seconds: f64,
    pub times: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MusicgenReport {
    pub folder: String,
    pub decoder_layers: usize,
    pub hidden_size: usize,
    pub codebooks: usize,
    pub measurements: Vec<MusicgenMeasurement>,
}

const CAPTION: &str = "an upbeat folk tune with fiddle and guitar";

pub fn run(
    folder: &Path,
    frames: usize,
    batches: &[usize],
    update_batch: usize,
    iters: usize,
) -> anyhow::Result<MusicgenReport> {
    anyhow::ensure!(frames > 0, "--musicgen-frames must be positive");
    let device = musicrl_policy::device::inference_device();
    let model = MusicGen::load(folder, &device)
        .with_context(|| format!("--musicgen {}", folder.display()))?;
    let config = model.config().clone();
    let engine = Engine::new(model.decoder(), 0);
    let mut measurements = Vec::new();
    let mut time = |kind: &str,
                    batch: usize,
                    guidance: bool,
                    f: &mut dyn FnMut() -> anyhow::Result<()>|
     -> anyhow::Result<()> {
        f()?; // warm-up
        let mut times = Vec::new();
        for _ in 0..iters.max(1) {
            let t = Instant::now();
            f()?;
            times.push(t.elapsed());
        }
        let m = median(times.clone()).as_secs_f64();
        let out = MusicgenMeasurement {
            kind: kind.into(),
            batch,
            guidance,
            frames,
            frames_per_second: (batch * frames) as f64 / m,
            median_seconds: m,
            times: times.iter().map(|d| d.as_secs_f64()).collect(),
        };
        eprintln!(
            "musicgen {kind:<8} batch {batch:>3} guidance {:<5} {:>9.1} frames/s ({m:.3} s per {frames} frames)",
            guidance, out.frames_per_second
        );
        measurements.push(out);
        Ok(())
    };
    for &batch in batches {
        let captions = vec![CAPTION; batch];
        for guidance in [false, true] {
            let options = SamplingOptions {
                decoding: Decoding::Sample {
                    temperature: 1.0,
                    top_k: 250,
                },
                guidance: guidance.then_some(3.0),
                seed: 1,
            };
            time("sample", batch, guidance, &mut || {
                model.generate_scored_with(&engine, &captions, frames, &options)?;
                Ok(())
            })?;
            time("sample-burn", batch, guidance, &mut || {
                model.generate(&captions, frames, &options)?;
                Ok(())
            })?;
        }
        // The whole delayed grid in one pass (no cache), as the learner scores a batch.
        let k_total = config.n_codebooks();
        let len = frames + k_total - 1;
        let ids: Vec<i64> = (0..batch * k_total * len)
            .map(|i| (i * 7 % config.vocab_size()) as i64)
            .collect();
        let cond = model.encode(&captions)?;
        time("forward", batch, false, &mut || {
            let grid = Tensor::<3, Int>::from_data(
                TensorData::new(ids.clone(), [batch, k_total, len]),
                &device,
            );
            let logits = model.grid_logits(Some(&cond), grid);
            let _ = musicrl_policy::musicgen::to_vec(logits.narrow(2, len - 1, 1));
            Ok(())
        })?;
    }
    if update_batch > 0 {
        anyhow::ensure!(
            update_batch >= 2,
            "--musicgen-update-batch must be 0 or at least 2"
        );
        drop(engine);
        let trainer_model = MusicGen::load(folder, &device)?;
        let mut c = musicrl_config::Config::default();
        c.sampling.temperature = 1.0;
        c.learner.value_warmup_steps = 0;
        c.learner.lr_warmup_steps = 0;
        c.learner.learning_rate = 1e-5;
        let mut trainer = musicrl_learner::musicgen::MusicgenTrainer::new(
            trainer_model,
            frames,
            &c,
            &musicrl_policy::device::training_device(),
        )?;
        let (k_total, vocab) = (config.n_codebooks(), config.vocab_size());
        // Two captions, so every clip has a leave-one-out baseline, as in the loop.
        let batch: Vec<musicrl_common::Trajectory> = (0..update_batch)
            .map(|b| musicrl_common::Trajectory {
                caption: if b % 2 == 0 {
                    CAPTION
                } else {
                    "a slow lament on the harp"
                }
                .into(),
                tokens: (0..k_total * frames)
                    .map(|i| ((b * k_total * frames + i) * 7 % vocab) as u32)
                    .collect(),
                behaviour_logprobs: vec![-(vocab as f32).ln(); k_total * frames],
                reward: b as f32 / update_batch as f32,
                ..Default::default()
            })
            .collect();
        let mut step = || -> anyhow::Result<()> {
            trainer
                .try_train_step(&batch)
                .map_err(|s| anyhow::anyhow!("the update was skipped: {s}"))?;
            Ok(())
        };
        step()?; // warm-up
        let mut times = Vec::new();
        for _ in 0..iters.max(1) {
            let t = Instant::now();
            step()?;
            times.push(t.elapsed());
        }
        let m = median(times.clone()).as_secs_f64();
        eprintln!(
            "musicgen update   batch {update_batch:>3} {m:>9.2} s per update ({:.1} frames/s)",
            (update_batch * frames) as f64 / m
        );
        measurements.push(MusicgenMeasurement {
            kind: "update".into(),
            batch: update_batch,
            guidance: false,
            frames,
            frames_per_second: (update_batch * frames) as f64 / m,
            median_seconds: m,
            times: times.iter().map(|d| d.as_secs_f64()).collect(),
        });
    }
    Ok(MusicgenReport {
        folder: folder.display().to_string(),
        decoder_layers: config.decoder.num_hidden_layers,
        hidden_size: config.decoder.hidden_size,
        codebooks: config.n_codebooks(),
        measurements,
    })
}
