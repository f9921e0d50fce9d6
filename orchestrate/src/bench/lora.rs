//! The `lora` workload: one MusicGen parameter version from a real learner to an actor's
//! sampler, with the whole decoder trained (`policy.lora.rank = 0`) and with adapters
//! (`policy.lora` as configured, or rank 16 on `q_proj` and `v_proj` when the configuration
//! has none). For each: the bytes of a version, the learner's time to serialise it, the
//! subscribe (a real learner, `musicrl_learner::run::serve` on loopback, streaming version
//! 0; the client reassembles and verifies it as an actor does), and the actor's time to
//! turn it into the decoder it samples (`MusicgenRollout::load`: decode, merge the
//! adapters, build the rollout engine). Medians of `--iters` after one warm-up.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use musicrl_config::{Config, FAMILY_MUSICGEN, LoraConfig};
use musicrl_policy::family::Rollout;
use musicrl_policy::melody::params::ParameterEncoding;
use musicrl_policy::musicgen::MusicGen;
use musicrl_policy::musicgen::rl::Trainable;
use musicrl_policy::musicgen::rollout::MusicgenRollout;

#[derive(Debug, Clone, Serialize)]
pub struct LoraMeasurement {
    /// `full` or `lora`.
    pub kind: String,
    pub lora: LoraConfig,
    /// Values a version carries (the decoder and value head, or the adapters).
    pub values: usize,
    pub version_bytes: usize,
    /// The learner serialising a version (`Trainable::broadcast_bytes`).
    pub serialise_seconds: f64,
    /// Subscribe to a whole verified version, through the real learner.
    pub transfer_seconds: f64,
    /// The actor loading it: decode, merge, rollout engine.
    pub apply_seconds: f64,
    /// Of which decoding the bytes and merging the adapters into a decoder
    /// (`Trainable::decoder_from_broadcast`); the rest is the rollout engine packing it.
    pub decode_merge_seconds: f64,
    /// `transfer + apply`: subscribe to a policy that samples.
    pub subscribe_to_policy_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoraReport {
    pub folder: String,
    pub decoder_layers: usize,
    pub hidden_size: usize,
    pub measurements: Vec<LoraMeasurement>,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// A configuration that trains `folder` with `lora`, serving on loopback, nothing written.
fn musicgen_config(base: &Config, folder: &Path, lora: &LoraConfig) -> anyhow::Result<Config> {
    let (codebooks, codebook) =
        musicrl_config::musicgen_shape(folder).map_err(anyhow::Error::msg)?;
    let mut c = base.clone();
    c.policy.family = FAMILY_MUSICGEN.into();
    c.policy.folder = folder.to_path_buf();
    c.policy.frames = 10;
    c.policy.vocab_size = codebook;
    c.policy.max_tokens = codebooks * c.policy.frames;
    c.policy.end_token = codebook as u32;
    c.policy.lora = lora.clone();
    c.reward.components.retain(|x| x.kind != "preference");
    c.learner.steps = 0;
    c.learner.init_policy = Default::default();
    c.learner.reference_policy = Default::default();
    c.learner.metrics_listen = String::new();
    c.learner.health_listen = String::new();
    c.learner.history_path = Default::default();
    c.learner.trajectory_log = Default::default();
    c.run.name = String::new();
    c.learner.checkpoint_dir =
        std::env::temp_dir().join(format!("musicrl-bench-lora-{}", std::process::id()));
    Ok(c)
}

pub fn run(config: &Config, folder: &Path, iters: usize) -> anyhow::Result<LoraReport> {
    let iters = iters.max(1);
    let lora = if config.policy.lora.enabled() {
        config.policy.lora.clone()
    } else {
        LoraConfig {
            rank: 16,
            ..LoraConfig::default()
        }
    };
    let device = musicrl_policy::device::inference_device();
    let model = MusicGen::load(folder, &device)
        .with_context(|| format!("--musicgen {}", folder.display()))?;
    let (layers, width) = (model.decoder().n_layers(), model.decoder().d_model());
    let mut measurements = Vec::new();
    for (kind, lora) in [("full", LoraConfig::default()), ("lora", lora)] {
        let c = musicgen_config(config, folder, &lora)?;
        c.validate()?;
        // The learner's side: serialising a version.
        let template = Trainable::for_policy(&model, &lora, &device)?;
        let (values, serialise_seconds) = {
            let trainable = Trainable::for_policy(&model, &lora, &device)?;
            let values = match &trainable.adapters {
                Some(a) => a.len(),
                None => {
                    use burn::module::Module;
                    trainable.num_params()
                }
            };
            let mut times = Vec::new();
            for _ in 0..=iters {
                let t = Instant::now();
                std::hint::black_box(trainable.broadcast_bytes()?);
                times.push(t.elapsed().as_secs_f64());
            }
            (values, median(times[1..].to_vec()))
        };
        eprintln!(
            "lora bench: {kind}: {values} values; starting a learner on {}",
            folder.display()
        );
        let mut rollout = MusicgenRollout::load(&c.policy, &device, Some(0))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let (transfers, applies, merges, bytes) = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("http://{}", listener.local_addr()?);
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let learner = tokio::spawn(musicrl_learner::run::serve(c.clone(), listener, async {
                let _ = stop_rx.await;
            }));
            let (mut transfers, mut applies, mut merges, mut bytes) =
                (Vec::new(), Vec::new(), Vec::new(), 0);
            for i in 0..=iters {
                let (t, blob) =
                    super::broadcast::receive_version_once_up(&url, ParameterEncoding::F32, i == 0)
                        .await?;
                let started = Instant::now();
                std::hint::black_box(Trainable::decoder_from_broadcast(&template, &blob.bytes)?);
                merges.push(started.elapsed().as_secs_f64());
                let started = Instant::now();
                rollout.load(&blob)?;
                applies.push(started.elapsed().as_secs_f64());
                transfers.push(t.as_secs_f64());
                bytes = blob.bytes.len();
            }
            let _ = stop_tx.send(());
            let _ = learner.await;
            anyhow::Ok((transfers, applies, merges, bytes))
        })?;
        let _ = std::fs::remove_dir_all(&c.learner.checkpoint_dir);
        let (transfer, apply) = (
            median(transfers[1..].to_vec()),
            median(applies[1..].to_vec()),
        );
        let merge = median(merges[1..].to_vec());
        eprintln!(
            "lora bench: {kind}: {:.1} MiB a version; serialise {serialise_seconds:.3} s, \
             transfer {transfer:.3} s, apply {apply:.3} s (decode and merge {merge:.3} s)",
            bytes as f64 / (1 << 20) as f64
        );
        measurements.push(LoraMeasurement {
            kind: kind.into(),
            lora,
            values,
            version_bytes: bytes,
            serialise_seconds,
            transfer_seconds: transfer,
            apply_seconds: apply,
            decode_merge_seconds: merge,
            subscribe_to_policy_seconds: transfer + apply,
        });
    }
    Ok(LoraReport {
        folder: folder.display().to_string(),
        decoder_layers: layers,
        hidden_size: width,
        measurements,
    })
}
