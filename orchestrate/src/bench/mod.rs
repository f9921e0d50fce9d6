//! `musicrl bench`: what the actors and the learner run, timed, for the configured policy
//! (the embedded default unless `--config`).
//!
//! - `engine`: the actors' sampling path (`actor.engine = "native"`, `actor.threads`), with a
//!   policy decoded from a parameter blob exactly as an actor decodes the broadcast, at each
//!   of `--batches`;
//! - `burn`: burn's cached decoding on the inference device (`actor.engine = "burn"`, the
//!   GPU path) at the sample batch; `uncached`: the same recomputing the prefix per token;
//! - `learner`: one update (reference forward, policy forward, loss, backward, clipping,
//!   Adam) on the learner's device;
//! - `reward`: the reward server's throughput over gRPC against scoring the same clips in
//!   process (`reward.rs`), at each of `--batches`.
//!
//! Every sampled sequence runs the full `--tokens` (END does not stop it), so an iteration's
//! work is fixed and matches `../shared/bench/torch_policy_bench.py`, whose FLOP model this
//! uses too: each measurement reports the matmul GFLOP/s it reaches. Numbers are medians
//! over `--iters` timed repetitions after one warm-up. They belong in `docs/performance.md`
//! with the command that produced them; no test asserts on them.

use std::time::{Duration, Instant};

use anyhow::Context;
use burn::module::Module;
use serde::Serialize;

use musicrl_common::{PolicyVersion, Trajectory};
use musicrl_config::Config;
use musicrl_config::PolicyConfig;
use musicrl_learner::trainer::Trainer;
use musicrl_policy::melody::Engine;
use musicrl_policy::melody::params::{ParameterBlob, encode_policy};
use musicrl_policy::melody::sampling::Sampler;

use crate::plan::BenchPlan;

pub mod broadcast;
pub mod lora;
pub mod musicgen;
pub mod reward;

/// Captions of the shape the caption generator writes (the bench needs no prompt file).
const CAPTIONS: [&str; 4] = [
    "A lively Irish reel in D major, in cut time played on fiddle",
    "Flute solo, a slow air, in E minor",
    "On harp: a folk tune in 6/8 time in G major",
    "a moderate folk song in F major for solo organ",
];

#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub name: String,
    /// engine | burn | uncached | learner
    pub kind: String,
    pub batch: usize,
    /// Tokens processed per second (median repetition).
    pub tokens_per_second: f64,
    pub median_seconds: f64,
    pub tokens_per_iteration: usize,
    /// Matmul FLOPs of one iteration (the PyTorch reference's model of the workload).
    pub flops_per_iteration: f64,
    /// `flops_per_iteration / median_seconds / 1e9`.
    pub gflops_per_second: f64,
    pub times: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub policy: PolicyConfig,
    pub parameters: usize,
    pub tokens: usize,
    pub sample_batch: usize,
    pub learner_batch: usize,
    pub engine_threads: usize,
    pub iters: usize,
    pub threads: usize,
    pub measurements: Vec<Measurement>,
    /// The `broadcast` workload, when asked for.
    pub broadcast: Option<broadcast::BroadcastReport>,
    /// The `reward` workload, when asked for.
    pub reward: Option<reward::RewardReport>,
    /// The `musicgen` workload, when asked for.
    pub musicgen: Option<musicgen::MusicgenReport>,
    /// The `lora` workload, when asked for.
    pub lora: Option<lora::LoraReport>,
}

/// Matmul FLOPs of one position through the trunk and both heads, attending to `context`
/// keys (`forward_flops_per_position` of the PyTorch reference).
fn flops_per_position(p: &PolicyConfig, context: usize) -> f64 {
    let (d, f, v, l) = (p.d_model, p.d_ff, p.vocab_size, p.n_layers);
    let linear = l * (d * 3 * d + d * d + d * f + f * d) + d * v + d;
    let attn = l * 4 * context * d;
    (2 * linear + attn) as f64
}

/// FLOPs of one iteration of a workload over `batch` sequences of `len` tokens
/// (`workload_flops` of the PyTorch reference; the caption projection included).
pub fn workload_flops(p: &PolicyConfig, kind: &str, batch: usize, len: usize) -> f64 {
    let cond = 2.0 * (p.d_model * p.d_model) as f64;
    let forward = |n: usize| (1..=n).map(|c| flops_per_position(p, c)).sum::<f64>() + cond;
    let per_seq = match kind {
        "uncached" => (1..=len).map(forward).sum::<f64>(),
        "learner" => 4.0 * forward(len),
        _ => forward(len),
    };
    batch as f64 * per_seq
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn measure(
    name: String,
    kind: &str,
    batch: usize,
    tokens: usize,
    flops: f64,
    iters: usize,
    mut f: impl FnMut(),
) -> Measurement {
    f(); // warm-up
    let times: Vec<Duration> = (0..iters.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    let m = median(times.clone());
    let out = Measurement {
        name,
        kind: kind.to_string(),
        batch,
        tokens_per_second: tokens as f64 / m.as_secs_f64(),
        median_seconds: m.as_secs_f64(),
        tokens_per_iteration: tokens,
        flops_per_iteration: flops,
        gflops_per_second: flops / m.as_secs_f64() / 1e9,
        times: times.iter().map(Duration::as_secs_f64).collect(),
    };
    eprintln!(
        "{:<40} {:>10.0} tokens/s {:>7.1} GFLOP/s   ({:.4} s per {} tokens)",
        out.name,
        out.tokens_per_second,
        out.gflops_per_second,
        out.median_seconds,
        out.tokens_per_iteration
    );
    out
}

/// The workloads of the built-in melody policy (`musicgen` is the other).
const MELODY_WORKLOADS: [&str; 6] = [
    "engine",
    "burn",
    "uncached",
    "learner",
    "broadcast",
    "reward",
];
pub fn run(config: &Config, args: &BenchPlan) -> anyhow::Result<BenchReport> {
    config.validate()?;
    let p = &config.policy;
    let sample_batch = args.sample_batch.unwrap_or(config.actor.batch_size);
    let learner_batch = args.learner_batch.unwrap_or(config.learner.batch_size);
    let len = args.tokens.unwrap_or(p.max_tokens);
    anyhow::ensure!(
        (1..=p.max_tokens).contains(&len),
        "--tokens {len} must be between 1 and policy.max_tokens ({})",
        p.max_tokens
    );
    anyhow::ensure!(
        args.batches.iter().all(|&b| b > 0),
        "--batches must be positive"
    );
    for w in &args.workloads {
        anyhow::ensure!(
            MELODY_WORKLOADS.contains(&w.as_str()) || w == "musicgen" || w == "lora",
            "--workloads: {w:?} is not one of {}, musicgen, lora",
            MELODY_WORKLOADS.join(", ")
        );
    }
    let wants = |w: &str| args.workloads.iter().any(|x| x == w);
    let musicgen = if wants("musicgen") {
        let folder = args.musicgen.as_deref().context(
            "the musicgen workload needs --musicgen DIR (a Hugging Face MusicGen folder)",
        )?;
        Some(musicgen::run(
            folder,
            args.musicgen_frames,
            &args.batches,
            args.musicgen_update_batch,
            args.iters,
        )?)
    } else {
        None
    };
    let lora = if wants("lora") {
        let folder = args
            .musicgen
            .as_deref()
            .context("the lora workload needs --musicgen DIR (a Hugging Face MusicGen folder)")?;
        Some(lora::run(config, folder, args.iters)?)
    } else {
        None
    };
    let most = args
        .batches
        .iter()
        .copied()
        .chain([sample_batch, learner_batch])
        .max()
        .unwrap_or(1);
    let captions: Vec<&str> = CAPTIONS.iter().copied().cycle().take(most).collect();

    let device = musicrl_policy::device::training_device();
    let mut trainer = Trainer::new(config, &device)?;
    let parameters = trainer.policy().valid().num_params();
    // The actors' copy: the learner's parameters through a broadcast blob, decoded on the
    // inference device.
    let blob = ParameterBlob::from_bytes(
        encode_policy(&trainer.policy().valid())?,
        PolicyVersion(0),
        p,
        config.sampling.temperature,
    );
    let inference = musicrl_policy::device::inference_device();
    let actor_policy = blob.to_policy(&inference)?;
    let engine = Engine::from_policy(&actor_policy, p, config.actor.threads)?;
    if MELODY_WORKLOADS.iter().any(|w| wants(w)) {
        eprintln!(
            "policy: vocab {} tokens {} d_model {} layers {} heads {} d_ff {} ({} parameters); {len} tokens per sequence; engine threads {}, sample batch {}, learner batch {}",
            p.vocab_size,
            p.max_tokens,
            p.d_model,
            p.n_layers,
            p.n_heads,
            p.d_ff,
            parameters,
            engine.threads(),
            sample_batch,
            learner_batch
        );
    }

    let mut measurements = Vec::new();
    let temperature = config.sampling.temperature;
    let mut sampler = Sampler::new(1, temperature).stop_at_end(false);
    if wants("engine") {
        for &b in &args.batches {
            let caps = &captions[..b];
            measurements.push(measure(
                format!("sampling, rollout engine (batch {b})"),
                "engine",
                b,
                b * len,
                workload_flops(p, "cached", b, len),
                args.iters,
                || {
                    sampler.sample_engine(&engine, caps, len);
                },
            ));
        }
    }
    let caps = &captions[..sample_batch];
    if wants("burn") {
        measurements.push(measure(
            format!("sampling, burn KV cache (batch {sample_batch})"),
            "burn",
            sample_batch,
            sample_batch * len,
            workload_flops(p, "cached", sample_batch, len),
            args.iters,
            || {
                sampler.sample(&actor_policy, p, caps, len, &inference);
            },
        ));
    }
    if wants("uncached") {
        measurements.push(measure(
            format!("sampling, burn no cache (batch {sample_batch})"),
            "uncached",
            sample_batch,
            sample_batch * len,
            workload_flops(p, "uncached", sample_batch, len),
            args.iters,
            || {
                sampler.sample_uncached(&actor_policy, p, caps, len, &inference);
            },
        ));
    }

    if wants("learner") {
        // Learner: real sequences from the policy, synthetic rewards.
        let learner_captions = &captions[..learner_batch];
        let sampled = sampler.sample_engine(&engine, learner_captions, len);
        let batch: Vec<Trajectory> = sampled
            .into_iter()
            .zip(learner_captions)
            .enumerate()
            .map(|(i, (s, c))| Trajectory {
                id: Default::default(),
                learner_run: 0,
                seal: None,
                actor_id: "bench".into(),
                policy_version: PolicyVersion(0),
                caption: (*c).to_string(),
                reward: (i % 4) as f32 / 4.0,
                components: vec![("bench".into(), (i % 4) as f32 / 4.0)],
                scorer_version: "bench".into(),
                component_windows: Vec::new(),
                tokens: s.tokens,
                behaviour_logprobs: s.logprobs,
            })
            .collect();
        measurements.push(measure(
            format!("learner update (batch {learner_batch})"),
            "learner",
            learner_batch,
            learner_batch * len,
            workload_flops(p, "learner", learner_batch, len),
            args.iters,
            || {
                trainer.train_step(&batch);
            },
        ));
    }

    let broadcast = if wants("broadcast") {
        let learner_gflops = measurements
            .iter()
            .find(|m| m.kind == "learner")
            .map(|m| m.gflops_per_second);
        Some(broadcast::run(
            config,
            broadcast::synthetic_policy(p, args.broadcast_d_model, args.broadcast_layers),
            args.iters,
            learner_gflops,
        )?)
    } else {
        None
    };

    let reward = if wants("reward") {
        // The actors' clips: sampled from the policy and stopped at END.
        let most = args.batches.iter().copied().max().unwrap_or(1);
        let clips = Sampler::new(2, temperature)
            .sample_engine(&engine, &captions[..most], p.max_tokens)
            .into_iter()
            .zip(&captions)
            .map(|(s, c)| musicrl_common::wire::ScoreInput {
                caption: (*c).to_string(),
                tokens: s.tokens,
            })
            .collect();
        Some(reward::run(config, clips, &args.batches, args.iters)?)
    } else {
        None
    };

    let report = BenchReport {
        broadcast,
        reward,
        musicgen,
        lora,
        policy: p.clone(),
        parameters,
        tokens: len,
        sample_batch,
        learner_batch,
        engine_threads: engine.threads(),
        iters: args.iters,
        threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        measurements,
    };
    if let Some(path) = &args.json {
        crate::process::write_json(path, &report)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The FLOP model agrees with a hand count on a one-layer policy: per position
    /// 2·(d·3d + d·d + d·f + f·d + d·v + d) + 4·context·d.
    #[test]
    fn the_flop_model_counts_a_tiny_policy_by_hand() {
        let p = PolicyConfig {
            vocab_size: 3,
            d_model: 2,
            d_ff: 4,
            n_layers: 1,
            ..PolicyConfig::default()
        };
        // linear = 12 + 4 + 8 + 8 + 6 + 2 = 40, so 80 + 8·context per position; cond 8.
        assert_eq!(flops_per_position(&p, 1), 88.0);
        // Two positions, cached: 88 + 96 + 8 per sequence, 3 sequences.
        assert_eq!(workload_flops(&p, "cached", 3, 2), 3.0 * 192.0);
        // Uncached: (88 + 8) + (88 + 96 + 8).
        assert_eq!(workload_flops(&p, "uncached", 1, 2), 288.0);
        assert_eq!(workload_flops(&p, "learner", 1, 2), 4.0 * 192.0);
    }
}
