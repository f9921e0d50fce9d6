//! `musicrl bench`: sampling throughput with and without the KV cache, and learner
//! throughput, for the configured policy (the embedded default unless `--config`).
//!
//! Numbers are medians over `--iters` timed repetitions after one warm-up. They belong in
//! `docs/performance.md` with the command that produced them; no test asserts on them.

use std::time::{Duration, Instant};

use burn::module::Module;
use serde::Serialize;

use musicrl_common::policy::sampling::Sampler;
use musicrl_common::{Config, PolicyVersion, Trajectory};
use musicrl_learner::trainer::Trainer;

use crate::args::BenchArgs;

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
    /// Tokens processed per second (median repetition).
    pub tokens_per_second: f64,
    pub median_seconds: f64,
    pub tokens_per_iteration: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub policy: musicrl_common::config::PolicyConfig,
    pub parameters: usize,
    pub sample_batch: usize,
    pub learner_batch: usize,
    pub iters: usize,
    pub threads: usize,
    pub measurements: Vec<Measurement>,
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn measure(name: &str, tokens: usize, iters: usize, mut f: impl FnMut()) -> Measurement {
    f(); // warm-up
    let times: Vec<Duration> = (0..iters.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    let m = median(times);
    let out = Measurement {
        name: name.to_string(),
        tokens_per_second: tokens as f64 / m.as_secs_f64(),
        median_seconds: m.as_secs_f64(),
        tokens_per_iteration: tokens,
    };
    eprintln!(
        "{:<28} {:>12.0} tokens/s   ({:.4} s per {} tokens)",
        out.name, out.tokens_per_second, out.median_seconds, out.tokens_per_iteration
    );
    out
}

pub fn run(config: &Config, args: &BenchArgs) -> anyhow::Result<BenchReport> {
    config.validate()?;
    let p = &config.policy;
    let sample_batch = args.sample_batch.unwrap_or(config.actor.batch_size);
    let learner_batch = args.learner_batch.unwrap_or(config.learner.batch_size);
    let len = p.max_tokens;
    let captions: Vec<&str> = CAPTIONS
        .iter()
        .copied()
        .cycle()
        .take(sample_batch.max(learner_batch))
        .collect();

    let device = musicrl_common::device::training_device();
    let mut trainer = Trainer::new(config, &device)?;
    let policy = trainer.policy().valid();
    let parameters = policy.num_params();
    eprintln!(
        "policy: vocab {} tokens {} d_model {} layers {} heads {} d_ff {} ({} parameters); sample batch {}, learner batch {}",
        p.vocab_size,
        p.max_tokens,
        p.d_model,
        p.n_layers,
        p.n_heads,
        p.d_ff,
        parameters,
        sample_batch,
        learner_batch
    );

    let mut measurements = Vec::new();
    let mut sampler = Sampler::new(1, config.sampling.temperature);
    let sample_captions = &captions[..sample_batch];
    measurements.push(measure(
        "sampling, KV cache",
        sample_batch * len,
        args.iters,
        || {
            sampler.sample(&policy, p, sample_captions, len, &device);
        },
    ));
    measurements.push(measure(
        "sampling, no cache",
        sample_batch * len,
        args.iters,
        || {
            sampler.sample_uncached(&policy, p, sample_captions, len, &device);
        },
    ));

    // Learner: real sequences from the policy, synthetic rewards.
    let learner_captions = &captions[..learner_batch];
    let sampled = sampler.sample(&policy, p, learner_captions, len, &device);
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
        "learner update",
        learner_batch * len,
        args.iters,
        || {
            trainer.train_step(&batch);
        },
    ));

    let report = BenchReport {
        policy: p.clone(),
        parameters,
        sample_batch,
        learner_batch,
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
