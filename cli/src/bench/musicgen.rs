//! The `musicgen` workload: sampling from a MusicGen folder (frames a second at each batch
//! size, guidance off and on) and the full-grid forward the learner runs, on this build's
//! device. `scripts/bench_musicgen.py` runs transformers on the same folder beside it.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use burn::tensor::{Int, Tensor, TensorData};
use musicrl_policy::musicgen::{Decoding, MusicGen, SamplingOptions};
use serde::Serialize;

use super::median;

#[derive(Debug, Clone, Serialize)]
pub struct MusicgenMeasurement {
    /// `sample` (top-k 250 draws over the KV cache) or `forward` (the whole delayed grid
    /// at once, as scoring and the learner run it).
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
    iters: usize,
) -> anyhow::Result<MusicgenReport> {
    anyhow::ensure!(frames > 0, "--musicgen-frames must be positive");
    let device = musicrl_common::device::inference_device();
    let model = MusicGen::load(folder, &device)
        .with_context(|| format!("--musicgen {}", folder.display()))?;
    let config = model.config().clone();
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
    Ok(MusicgenReport {
        folder: folder.display().to_string(),
        decoder_layers: config.decoder.num_hidden_layers,
        hidden_size: config.decoder.hidden_size,
        codebooks: config.n_codebooks(),
        measurements,
    })
}
