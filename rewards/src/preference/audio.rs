//! The Bradley–Terry model of audio-token clips (MusicGen's codes), initialised from the
//! policy, as the paper initialised its user-preference model from MusicLM (from scratch it
//! stayed at chance).
//!
//! **The model** ([`AudioPreferenceNet`]): the MusicGen folder's decoder (its embeddings and
//! transformer blocks, cross-attending to the frozen T5 encoding of the caption; the LM heads
//! are carried but unused) and a scalar head `Linear(d_model → 1)`, zero at the start so every
//! clip scores 0 before training. r(caption, codes) is the head at the last position of the
//! clip's delayed grid (the grid the policy reads, `[K, T + K − 1]`), which has attended to
//! every code but the last code of the last codebook. The trunk trains with the head (the
//! text encoder stays frozen, as in the policy's own training). The caption-free variant
//! feeds the empty caption. The paper scored head and tail windows and averaged them; this
//! model scores the clip whole (as the melody model does): a simplification, named here.
//!
//! **Initialisation**: the folder's decoder (`train.init_policy` empty; what `musicrl
//! train-reward preference` does), a trained MusicGen checkpoint's (`STEP/policy.bpk`;
//! adapters are merged), or an earlier preference model's `model.bpk` (`--continue-from`).
//!
//! **Checkpoint**: the usual reward folder ([`crate::store`]): `model.bpk` (the decoder and
//! head), `config.json` (the policy section naming the MusicGen folder, and the training
//! settings), `metrics.json`. The folder's T5 and codec are read from `policy.folder` at load.

use std::path::Path;

use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;

use musicrl_config::PolicyConfig;
use musicrl_policy::musicgen::MusicGen;
use musicrl_policy::musicgen::decoder::Decoder;
use musicrl_policy::musicgen::rl::{Trainable, unflatten_codes};

use super::Choice;
use super::model::{KIND, PreferenceConfig, PreferenceMetrics, bradley_terry_loss, finite_loss};
use crate::error::{Error, Result};
use crate::store;

/// The decoder trunk and the scalar head.
#[derive(Module, Debug)]
pub struct AudioPreferenceNet {
    pub decoder: Decoder,
    pub head: Linear,
}

/// The MusicGen folder a preference model reads its captions and clips with.
pub fn load_folder(policy: &PolicyConfig, device: &Device) -> Result<MusicGen> {
    let folder = musicrl_config::paths::require("policy.folder", &policy.folder)
        .map_err(|e| Error::Checkpoint(e.to_string()))?;
    MusicGen::load(&folder, device)
        .map_err(|e| Error::Checkpoint(format!("policy.folder {}: {e}", folder.display())))
}

impl AudioPreferenceNet {
    /// The folder's decoder (or `init`'s trained one) on `device`, and a zero head.
    pub fn initial(
        model: &MusicGen,
        policy: &PolicyConfig,
        init: &Path,
        device: &Device,
    ) -> Result<Self> {
        let decoder = if init.as_os_str().is_empty() {
            Trainable::new(model, device)
                .map_err(|e| Error::Checkpoint(format!("the folder's decoder: {e}")))?
                .decoder
        } else {
            let bytes = std::fs::read(init)
                .map_err(|e| Error::Checkpoint(format!("{}: {e}", init.display())))?;
            let template = Trainable::for_policy(model, &policy.lora, model.device())
                .map_err(|e| Error::Checkpoint(e.to_string()))?;
            let merged = Trainable::from_bytes(template, &bytes)
                .map_err(|e| Error::Checkpoint(format!("{}: {e}", init.display())))?
                .merged_decoder();
            // On the model's device (as `Trainable::new` compares devices: the autodiff flag
            // aside) the merged decoder is wrapped for training; elsewhere it moves there.
            let merged = if device.is_autodiff() {
                merged.train()
            } else {
                merged
            };
            if device == model.device() {
                merged
            } else {
                merged.to_device(device)
            }
        };
        let head = LinearConfig::new(decoder.d_model(), 1)
            .with_initializer(Initializer::Zeros)
            .init(device);
        Ok(Self { decoder, head })
    }

    /// r for each (caption, clip `[K][T]`), clips of one length; differentiable on an autodiff
    /// device. `model` encodes the captions (on its own device).
    pub fn rewards(
        &self,
        model: &MusicGen,
        captions: &[&str],
        clips: &[Vec<Vec<u32>>],
    ) -> Result<Tensor<1>> {
        let device = self.head.weight.device();
        let bad = |e: musicrl_policy::PolicyError| Error::Data(e.to_string());
        let cond = model.encode(captions).map_err(bad)?;
        let inputs = model.grid_inputs(clips).map_err(bad)?;
        let inputs = Tensor::<3, Int>::from_data(inputs.into_data(), &device);
        let states = Tensor::<3>::from_data(cond.states.into_data(), &device);
        let pad = Tensor::from_data(cond.pad.into_data(), &device);
        let [batch, _, len] = inputs.dims();
        let cross = self.decoder.cross_kv_adapted(states, pad, None);
        let hidden = self
            .decoder
            .hidden_adapted(inputs, Some(&cross), None, None); // [B, L, d]
        let d = self.decoder.d_model();
        let last = hidden.narrow(1, len - 1, 1).reshape([batch, d]);
        Ok(self.head.forward(last).reshape([batch]))
    }
}

/// Trajectory tokens (K rows of codes, row after row) as codes `[K][T]`, or a clear error.
pub fn codes_of(tokens: &[u32], k_total: usize, at: &str) -> Result<Vec<Vec<u32>>> {
    unflatten_codes(tokens, k_total).ok_or_else(|| {
        Error::Data(format!(
            "{at}: {} tokens are not {k_total} rows of codes (a clip of this MusicGen folder)",
            tokens.len()
        ))
    })
}

/// r for clips of any lengths: each run of one length is one forward pass.
pub fn rewards_any_length(
    net: &AudioPreferenceNet,
    model: &MusicGen,
    captions: &[&str],
    clips: &[Vec<Vec<u32>>],
) -> Result<Vec<f32>> {
    let mut out = vec![0f32; clips.len()];
    let mut start = 0;
    while start < clips.len() {
        let frames = clips[start].first().map_or(0, Vec::len);
        let end = (start..clips.len())
            .find(|&i| clips[i].first().map_or(0, Vec::len) != frames)
            .unwrap_or(clips.len());
        let r = net.rewards(model, &captions[start..end], &clips[start..end])?;
        let values = musicrl_policy::musicgen::to_vec(r);
        out[start..end].copy_from_slice(&values);
        start = end;
    }
    Ok(out)
}

/// Captions (empty when caption-free) and codes of a batch: all chosen clips, then all
/// rejected ones.
fn batch_of<'a>(
    chunk: &[&'a Choice],
    caption_free: bool,
    k_total: usize,
) -> Result<(Vec<&'a str>, Vec<Vec<Vec<u32>>>)> {
    let mut caps = Vec::with_capacity(chunk.len() * 2);
    let mut clips = Vec::with_capacity(chunk.len() * 2);
    for side in [0, 1] {
        for c in chunk {
            let (chosen, rejected) = c.ordered();
            let tokens = if side == 0 { chosen } else { rejected };
            caps.push(if caption_free { "" } else { c.caption.as_str() });
            clips.push(codes_of(tokens, k_total, &c.caption)?);
        }
    }
    Ok((caps, clips))
}

/// How often the chosen clip scores higher, over `eval`.
fn accuracy(
    net: &AudioPreferenceNet,
    model: &MusicGen,
    caption_free: bool,
    eval: &[&Choice],
) -> Result<f64> {
    let k_total = model.config().n_codebooks();
    let mut right = 0usize;
    for chunk in eval.chunks(16) {
        let (caps, clips) = batch_of(chunk, caption_free, k_total)?;
        let r = rewards_any_length(net, model, &caps, &clips)?;
        let half = chunk.len();
        right += (0..half).filter(|&i| r[i] > r[half + i]).count();
    }
    Ok(right as f64 / eval.len().max(1) as f64)
}

/// Trains on `choices` (pairs of audio-token clips; the held-out split is the caller's) and
/// writes the checkpoint folder `out`.
pub fn train(
    config: &PreferenceConfig,
    train: Vec<&Choice>,
    eval: &[&Choice],
    out: &Path,
    progress: &mut dyn crate::text::Progress,
) -> Result<PreferenceMetrics> {
    let t = &config.train;
    let plain = musicrl_policy::device::inference_device();
    let device = musicrl_policy::device::training_device();
    device.seed(t.seed);
    let model = load_folder(&config.policy, &plain)?;
    let k_total = model.config().n_codebooks();
    if let Some(c) = train
        .iter()
        .chain(eval)
        .find(|c| c.codebooks != Some(k_total))
    {
        return Err(Error::Data(format!(
            "{}: a choice of {:?} codebooks, and the MusicGen folder's clips have {k_total}: \
             the store must hold this policy's clips",
            t.store.display(),
            c.codebooks
        )));
    }
    progress.stage("loading the policy's decoder");
    // `--continue-from`: a preference checkpoint's `model.bpk` (the trunk and head).
    let continued = t.init_policy.file_name() == Some(std::ffi::OsStr::new(store::MODEL_FILE));
    let mut net = if continued {
        let fresh = AudioPreferenceNet::initial(&model, &config.policy, Path::new(""), &device)?;
        let dir = t.init_policy.parent().unwrap_or(Path::new("."));
        store::load_params(dir, KIND, fresh)?.0
    } else {
        AudioPreferenceNet::initial(&model, &config.policy, &t.init_policy, &device)?
    };
    let from = if t.init_policy.as_os_str().is_empty() {
        format!("{}", Path::new(&config.policy.folder).display())
    } else {
        t.init_policy.display().to_string()
    };
    let mut optimizer = AdamConfig::new().init();
    let mut rng = StdRng::seed_from_u64(t.seed);
    let mut train = train;
    let mut epochs = Vec::new();
    for epoch in 1..=t.epochs {
        musicrl_music::shuffle(&mut train, &mut rng);
        // One length a batch: a batch is one forward pass over one grid shape.
        let mut batches: Vec<Vec<&Choice>> = Vec::new();
        for c in &train {
            let key = |c: &Choice| (c.a.len(), c.b.len());
            match batches
                .iter_mut()
                .find(|b| b.len() < t.batch_size.max(1) && key(b[0]) == key(c))
            {
                Some(b) => b.push(c),
                None => batches.push(vec![c]),
            }
        }
        progress.epoch_started(epoch, batches.len());
        let (mut sum, mut n) = (0.0f64, 0usize);
        for batch in batches {
            let (caps, clips) = batch_of(&batch, t.caption_free, k_total)?;
            let half = batch.len();
            let r = if clips.iter().all(|c| c[0].len() == clips[0][0].len()) {
                net.rewards(&model, &caps, &clips)?
            } else {
                // A pair of clips of two lengths: one pass each.
                let parts: Vec<Tensor<1>> = (0..clips.len())
                    .map(|i| net.rewards(&model, &caps[i..=i], &clips[i..=i]))
                    .collect::<Result<_>>()?;
                Tensor::cat(parts, 0)
            };
            let loss = bradley_terry_loss(r, half);
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            let value = finite_loss(loss, epoch)?;
            net = optimizer.step(t.learning_rate, net, grads);
            sum += value;
            n += 1;
            progress.batch_done(value);
        }
        progress.epoch_done(epoch, sum / n.max(1) as f64);
        epochs.push((epoch, sum / n.max(1) as f64));
    }
    let valid = net.valid();
    let mut metrics = PreferenceMetrics {
        train_choices: train.len(),
        eval_choices: eval.len(),
        accuracy: accuracy(&valid, &model, t.caption_free, eval)?,
        caption_free: t.caption_free,
        initialised_from: from,
        epochs,
        version: String::new(),
    };
    let version = store::save(out, KIND, &valid, config, &metrics)?;
    metrics.version = version;
    store::write_metrics(out, &metrics)?;
    Ok(metrics)
}

/// A trained audio preference model ready to score.
pub struct AudioPreference {
    model: MusicGen,
    net: AudioPreferenceNet,
    caption_free: bool,
}

impl AudioPreference {
    /// The checkpoint `dir` over the folder its config names.
    pub fn load(dir: &Path, config: &PreferenceConfig) -> Result<(Self, String)> {
        let device = musicrl_policy::device::inference_device();
        let model = load_folder(&config.policy, &device)?;
        let init = AudioPreferenceNet::initial(&model, &config.policy, Path::new(""), &device)?;
        let (net, version) = store::load_params(dir, KIND, init)?;
        Ok((
            Self {
                model,
                net,
                caption_free: config.train.caption_free,
            },
            version,
        ))
    }

    /// The codebooks of the clips it scores.
    pub fn codebooks(&self) -> usize {
        self.model.config().n_codebooks()
    }

    /// One unbounded scalar per (caption, tokens: K rows of codes, row after row).
    pub fn score(&self, items: &[(&str, &[u32])]) -> Result<Vec<f32>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let k_total = self.model.config().n_codebooks();
        let clips: Vec<Vec<Vec<u32>>> = items
            .iter()
            .enumerate()
            .map(|(i, (_, t))| codes_of(t, k_total, &format!("clip {i}")))
            .collect::<Result<_>>()?;
        let caps: Vec<&str> = items
            .iter()
            .map(|i| if self.caption_free { "" } else { i.0 })
            .collect();
        rewards_any_length(&self.net, &self.model, &caps, &clips)
    }
}
