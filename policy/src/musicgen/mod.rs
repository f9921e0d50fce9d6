//! MusicGen (Copet et al. 2023) in burn, loaded from a Hugging Face folder
//! (`MusicgenForConditionalGeneration`: `config.json`, `model.safetensors` or its shards,
//! `tokenizer.json`) by transformers' tensor names.
//!
//! The caption is tokenised by the folder's own tokenizer, encoded by the frozen T5
//! ([`t5`]), projected to the decoder's width (`enc_to_dec_proj`, when the widths differ)
//! and zeroed at padding; the decoder ([`decoder`]) reads the delayed codebook grid
//! ([`delay`]). [`MusicGen::score`] gives log p of every code of a clip,
//! [`MusicGen::generate`] samples clips. The codec (`audio_encoder.*`) is not loaded here.
//!
//! Classifier-free guidance changes the sampling distribution: the codes are drawn from
//! `softmax(uncond + s·(cond − uncond))`, which is not the model's conditional
//! distribution. [`MusicGen::score`] always returns the conditional log-probabilities
//! (guidance off, temperature 1); docs/real-models.md says how the learner accounts for
//! samples drawn with guidance.

pub mod config;
pub mod decoder;
pub mod delay;
pub mod engine;
pub mod export;
pub mod lora;
pub mod rl;
pub mod rollout;
pub mod sampling;
pub mod skinny;
pub mod t5;
pub mod weights;

use std::path::{Path, PathBuf};

use burn::nn::Linear;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use tokenizers::Tokenizer;

pub use config::MusicgenConfig;
pub use decoder::{CrossKv, Decoder, SelfCache};
pub use sampling::{Decoding, SamplingOptions};
pub use t5::T5Encoder;
pub use weights::WeightFile;

use crate::PolicyError;

/// Tensors under this prefix belong to the codec and are left for it.
pub const CODEC_PREFIX: &str = "audio_encoder.";

/// The sinusoidal position table, which checkpoints saved by older transformers versions
/// hold (it was a parameter then, a non-persistent buffer now); the decoder computes it, so
/// a stored copy is not read.
const STALE_POSITIONS: &str = "decoder.model.decoder.embed_positions.";

/// A loaded MusicGen: text encoder, projection, decoder and tokenizer. A clone shares the
/// tensors (burn's are reference-counted): it copies no weights.
#[derive(Debug, Clone)]
pub struct MusicGen {
    config: MusicgenConfig,
    text: T5Encoder,
    projection: Option<Linear>,
    decoder: Decoder,
    tokenizer: Tokenizer,
    folder: PathBuf,
    device: Device,
}

/// Sampled clips and the behaviour log-probability of each code.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// `[B][K][T]`, undelayed.
    pub codes: Vec<Vec<Vec<u32>>>,
    /// `[B][K][T]`: log μ(code) under the distribution it was drawn from.
    pub logprobs: Vec<Vec<Vec<f64>>>,
}

/// A batch of captions encoded for the decoder.
#[derive(Debug, Clone)]
pub struct Conditioning {
    /// `[B, S, width]`, zero at padding.
    pub states: Tensor<3>,
    /// `[B, S]`, true at padding.
    pub pad: Tensor<2, Bool>,
}

impl MusicGen {
    /// Loads a Hugging Face MusicGen folder. Refuses, naming what is wrong: a folder without
    /// `config.json`, a `pytorch_model.bin`-only folder (with the conversion command), a
    /// missing, mis-shaped or unused tensor, a missing `tokenizer.json`.
    pub fn load(folder: &Path, device: &Device) -> Result<Self, PolicyError> {
        let folder_err = |why: String| PolicyError::Folder {
            path: folder.to_path_buf(),
            why,
        };
        if !folder.is_dir() {
            return Err(folder_err("not a folder (a MusicGen model folder holds config.json, model.safetensors and tokenizer.json)".into()));
        }
        let config_path = folder.join("config.json");
        if !config_path.is_file() {
            return Err(folder_err(
                "no config.json: not a Hugging Face model folder".into(),
            ));
        }
        let config = MusicgenConfig::from_file(&config_path)?;
        let weights = open_weights(folder)?;
        let tokenizer_path = folder.join("tokenizer.json");
        if !tokenizer_path.is_file() {
            return Err(PolicyError::Tokenizer {
                path: tokenizer_path,
                why: "missing: write the caption tokenizer into the folder with \
                      `AutoTokenizer.from_pretrained(FOLDER).save_pretrained(FOLDER)` \
                      (transformers), or copy the T5 tokenizer.json the model was trained with"
                    .into(),
            });
        }
        let tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| PolicyError::Tokenizer {
                path: tokenizer_path.clone(),
                why: e.to_string(),
            })?;

        let text = T5Encoder::load(
            &weights,
            "text_encoder.",
            &config.text,
            config.t5_ff,
            device,
        )?;
        let projection = if config.has_projection {
            Some(weights.linear(
                "enc_to_dec_proj",
                config.text.d_model,
                config.decoder.hidden_size,
                true,
                device,
            )?)
        } else {
            None
        };
        let decoder = Decoder::load(&weights, &config, device)?;
        weights.finish(&[CODEC_PREFIX, STALE_POSITIONS])?;
        Ok(Self {
            config,
            text,
            projection,
            decoder,
            tokenizer,
            folder: folder.to_path_buf(),
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &MusicgenConfig {
        &self.config
    }

    pub fn folder(&self) -> &Path {
        &self.folder
    }

    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// The folder's decoder loaded afresh onto `device` (the learner's autodiff device: a
    /// module must be built where it trains, moving one does not make it trainable).
    pub fn load_decoder(&self, device: &Device) -> Result<Decoder, PolicyError> {
        let weights = open_weights(&self.folder)?;
        Decoder::load(&weights, &self.config, device)
    }

    /// Replaces the decoder's parameters (a version the learner broadcast).
    pub fn set_decoder(&mut self, decoder: Decoder) {
        self.decoder = decoder;
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The same model with other decoder parameters (the learner's updated ones).
    pub fn with_decoder(self, decoder: Decoder) -> Self {
        Self { decoder, ..self }
    }

    /// The caption's token ids as the folder's tokenizer gives them (special tokens
    /// included, as transformers' processor adds them).
    pub fn tokenize(&self, caption: &str) -> Result<Vec<u32>, PolicyError> {
        let encoding =
            self.tokenizer
                .encode(caption, true)
                .map_err(|e| PolicyError::Tokenizer {
                    path: self.folder.join("tokenizer.json"),
                    why: format!("cannot encode {caption:?}: {e}"),
                })?;
        let ids = encoding.get_ids().to_vec();
        if ids.is_empty() {
            return Err(PolicyError::InvalidInput(format!(
                "caption {caption:?} has no tokens"
            )));
        }
        if let Some(&bad) = ids
            .iter()
            .find(|&&id| id as usize >= self.config.text.vocab_size)
        {
            return Err(PolicyError::Tokenizer {
                path: self.folder.join("tokenizer.json"),
                why: format!(
                    "token id {bad} is outside the text encoder's {} embeddings",
                    self.config.text.vocab_size
                ),
            });
        }
        Ok(ids)
    }

    /// Encodes captions (padded to the longest) into decoder-width states.
    pub fn encode<S: AsRef<str>>(&self, captions: &[S]) -> Result<Conditioning, PolicyError> {
        let ids = captions
            .iter()
            .map(|c| self.tokenize(c.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.encode_ids(&ids))
    }

    /// Encodes token ids (each non-empty and in range), padding with 0 as T5 does.
    pub fn encode_ids(&self, ids: &[Vec<u32>]) -> Conditioning {
        let batch = ids.len();
        let s = ids.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let mut flat = vec![0i64; batch * s];
        let mut pad = vec![true; batch * s];
        for (b, row) in ids.iter().enumerate() {
            for (i, &id) in row.iter().enumerate() {
                flat[b * s + i] = i64::from(id);
                pad[b * s + i] = false;
            }
        }
        let ids = Tensor::<2, Int>::from_data(TensorData::new(flat, [batch, s]), &self.device);
        let pad = Tensor::<2, Bool>::from_data(TensorData::new(pad, [batch, s]), &self.device);
        let mut states = self.text.forward(ids, pad.clone());
        if let Some(proj) = &self.projection {
            states = proj.forward(states);
        }
        // transformers multiplies the (projected) states by the attention mask.
        let keep = pad.clone().bool_not().float().unsqueeze_dim::<3>(2); // [B, S, 1]
        Conditioning {
            states: states * keep,
            pad,
        }
    }

    /// The T5 encoder's output before the projection (for parity checks).
    pub fn text_states(&self, ids: Tensor<2, Int>, pad: Tensor<2, Bool>) -> Tensor<3> {
        self.text.forward(ids, pad)
    }

    /// Logits `[B, K, L, vocab]` over whole delayed grids `[B, K, L]` (positions 0 .. L),
    /// conditioned on `cond` (None: unconditional).
    pub fn grid_logits(&self, cond: Option<&Conditioning>, grid: Tensor<3, Int>) -> Tensor<4> {
        let cross = cond.map(|c| self.decoder.cross_kv(c.states.clone(), c.pad.clone()));
        self.decoder.forward(grid, cross.as_ref(), None)
    }

    /// Checks that `codes` are K rows of T ≥ 1 codes, each below the vocabulary size.
    pub fn check_codes(&self, codes: &[Vec<u32>]) -> Result<(), PolicyError> {
        let k_total = self.config.n_codebooks();
        let vocab = self.config.vocab_size();
        if codes.len() != k_total {
            return Err(PolicyError::InvalidInput(format!(
                "{} codebook rows, this model has {k_total}",
                codes.len()
            )));
        }
        let frames = codes[0].len();
        if frames == 0 {
            return Err(PolicyError::InvalidInput(
                "no frames: each codebook row is empty".into(),
            ));
        }
        for (k, row) in codes.iter().enumerate() {
            if row.len() != frames {
                return Err(PolicyError::InvalidInput(format!(
                    "codebook rows differ in length: row 0 has {frames} frames, row {k} has {}",
                    row.len()
                )));
            }
            if let Some((t, &c)) = row.iter().enumerate().find(|(_, c)| **c as usize >= vocab) {
                return Err(PolicyError::InvalidInput(format!(
                    "code {c} at codebook {k}, frame {t} is outside the codebook of {vocab}"
                )));
            }
        }
        Ok(())
    }

    /// The delayed grids' inputs `[B, K, T + K − 1]` for clips `[B][K][T]` of one length.
    pub fn grid_inputs(&self, clips: &[Vec<Vec<u32>>]) -> Result<Tensor<3, Int>, PolicyError> {
        let first = clips
            .first()
            .ok_or_else(|| PolicyError::InvalidInput("no clips".into()))?;
        self.check_codes(first)?;
        let (k_total, frames) = (first.len(), first[0].len());
        let len = frames + k_total - 1;
        let mut flat = Vec::with_capacity(clips.len() * k_total * len);
        for (b, codes) in clips.iter().enumerate() {
            self.check_codes(codes)?;
            if codes[0].len() != frames {
                return Err(PolicyError::InvalidInput(format!(
                    "clip {b} has {} frames, clip 0 has {frames}",
                    codes[0].len()
                )));
            }
            let grid = delay::delay(codes, self.bos(), self.pad())?;
            flat.extend(
                grid.iter()
                    .flat_map(|row| row[..len].iter().map(|&id| i64::from(id))),
            );
        }
        Ok(Tensor::from_data(
            TensorData::new(flat, [clips.len(), k_total, len]),
            &self.device,
        ))
    }

    /// `log softmax` of the distribution of every code of clips `[B][K][T]`, aligned with
    /// the codes: `[B, K, T, vocab]`, row `[b, k, t]` being the distribution code
    /// `[k][t]` was drawn from (position `t + k` of the delayed grid). Differentiable on an
    /// autodiff device: the learner's log-probabilities, and with a frozen reference's,
    /// its exact per-code KL ([`kl_per_code`]).
    pub fn aligned_log_softmax(
        &self,
        cond: &Conditioning,
        clips: &[Vec<Vec<u32>>],
    ) -> Result<Tensor<4>, PolicyError> {
        let inputs = self.grid_inputs(clips)?;
        let [_, k_total, len] = inputs.dims();
        let frames = len + 1 - k_total;
        let logits = self.grid_logits(Some(cond), inputs); // [B, K, L, V]
        let aligned: Vec<Tensor<4>> = (0..k_total)
            .map(|k| logits.clone().narrow(1, k, 1).narrow(2, k, frames)) // [B, 1, T, V]
            .collect();
        Ok(burn::tensor::activation::log_softmax(
            Tensor::cat(aligned, 1),
            3,
        ))
    }

    /// log-probabilities of every code of clips `[B][K][T]` as a `[B, K, T]` tensor
    /// (differentiable; the tensor form of [`MusicGen::score`]).
    pub fn code_log_probs(
        &self,
        cond: &Conditioning,
        clips: &[Vec<Vec<u32>>],
    ) -> Result<Tensor<3>, PolicyError> {
        let log_softmax = self.aligned_log_softmax(cond, clips)?;
        Ok(gather_codes(log_softmax, clips, &self.device))
    }

    /// log p(codes[k][t] | caption, every code the delay pattern shows the model before
    /// it), `[K][T]`, guidance off, temperature 1.
    pub fn score(&self, caption: &str, codes: &[Vec<u32>]) -> Result<Vec<Vec<f64>>, PolicyError> {
        let inputs = self.grid_inputs(std::slice::from_ref(&codes.to_vec()))?; // [1, K, L]
        let cond = self.encode(&[caption])?;
        let [_, k_total, len] = inputs.dims();
        let frames = codes[0].len();
        let logits = to_vec(self.grid_logits(Some(&cond), inputs)); // [1, K, L, V]
        let vocab = self.config.vocab_size();
        Ok((0..k_total)
            .map(|k| {
                (0..frames)
                    .map(|t| {
                        let p = t + k; // logits at position p predict position p + 1
                        let row = &logits[(k * len + p) * vocab..(k * len + p + 1) * vocab];
                        sampling::log_prob(row, codes[k][t] as usize)
                    })
                    .collect()
            })
            .collect())
    }

    /// Samples `frames` frames for each caption: `[B][K][frames]` codes, undelayed. One
    /// position of the delayed grid per step over a key/value cache; with guidance, the
    /// unconditional rows in the same batch.
    pub fn generate<S: AsRef<str>>(
        &self,
        captions: &[S],
        frames: usize,
        options: &SamplingOptions,
    ) -> Result<Vec<Vec<Vec<u32>>>, PolicyError> {
        Ok(self.generate_scored(captions, frames, options)?.codes)
    }

    /// [`MusicGen::generate`], with the log-probability of every code under the
    /// distribution it was drawn from (guidance, temperature and top-k applied; see
    /// [`sampling::Sampler::choose_scored`]): what an actor reports as the behaviour
    /// policy's. With guidance off, top-k 0 and the learner's temperature, these equal the
    /// learner's tempered log-probabilities of the same codes.
    pub fn generate_scored<S: AsRef<str>>(
        &self,
        captions: &[S],
        frames: usize,
        options: &SamplingOptions,
    ) -> Result<Generated, PolicyError> {
        let (cross, len) = self.prepare(captions, frames, options)?;
        let mut cache = self.decoder.new_cache();
        let k_total = self.config.n_codebooks();
        let rows = cross.parts().1.dims()[0];
        self.sample_grid(captions.len(), frames, options, &mut |ids, logits| {
            debug_assert!(cache.len() < len);
            let ids: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
            let ids =
                Tensor::<3, Int>::from_data(TensorData::new(ids, [rows, k_total, 1]), &self.device);
            let out = to_vec(self.decoder.forward(ids, Some(&cross), Some(&mut cache)));
            logits.copy_from_slice(&out);
        })
    }

    /// [`MusicGen::generate_scored`] on the rollout engine (built from this model's decoder
    /// by [`engine::Engine::new`]): the same loop, the same draws for a seed, each position
    /// computed on plain buffers instead of burn tensors.
    pub fn generate_scored_with<S: AsRef<str>>(
        &self,
        engine: &engine::Engine,
        captions: &[S],
        frames: usize,
        options: &SamplingOptions,
    ) -> Result<Generated, PolicyError> {
        let (cross, len) = self.prepare(captions, frames, options)?;
        let mut session = engine.session(&cross, len);
        self.sample_grid(captions.len(), frames, options, &mut |ids, logits| {
            engine.step(&mut session, ids, logits);
        })
    }

    /// Checks a sampling request and computes the caption's cross-attention keys and
    /// values for every decoder row (with guidance, the unconditional rows B .. 2B after
    /// the conditional ones); gives them with the grid's length.
    fn prepare<S: AsRef<str>>(
        &self,
        captions: &[S],
        frames: usize,
        options: &SamplingOptions,
    ) -> Result<(CrossKv, usize), PolicyError> {
        options.validate()?;
        if frames == 0 {
            return Err(PolicyError::InvalidInput(
                "frames must be at least 1".into(),
            ));
        }
        if captions.is_empty() {
            return Err(PolicyError::InvalidInput("no captions".into()));
        }
        let batch = captions.len();
        let cond = self.encode(captions)?;
        // With guidance the unconditional rows run in the same batch (rows B .. 2B), as
        // transformers runs them: their caption states are zeros, so the cross-attention's
        // keys and values are zero and it adds exactly nothing, the unconditional model.
        let (cross_states, cross_pad) = if options.guidance_scale().is_some() {
            let [_, s, _] = cond.states.dims();
            let none = Tensor::<2, Bool>::from_data(
                TensorData::new(vec![false; batch * s], [batch, s]),
                &self.device,
            );
            (
                Tensor::cat(vec![cond.states.clone(), cond.states.zeros_like()], 0),
                Tensor::cat(vec![cond.pad, none], 0),
            )
        } else {
            (cond.states, cond.pad)
        };
        let cross = self.decoder.cross_kv(cross_states, cross_pad);
        Ok((cross, delay::grid_len(frames, self.config.n_codebooks())))
    }

    /// The sampling loop over the delayed grid: `step(ids, logits)` feeds the next grid
    /// position's inputs `[rows, K]` (rows = B, or 2B with guidance: the grid repeated) and
    /// writes its logits `[rows, K, vocab]`; guidance, the sampler and the delay pattern are
    /// applied here, once for every way of computing a step.
    fn sample_grid(
        &self,
        batch: usize,
        frames: usize,
        options: &SamplingOptions,
        step: &mut dyn FnMut(&[u32], &mut [f32]),
    ) -> Result<Generated, PolicyError> {
        let k_total = self.config.n_codebooks();
        let vocab = self.config.vocab_size();
        let (bos, pad) = (self.bos(), self.pad());
        let guidance = options.guidance_scale();
        let rows = if guidance.is_some() { 2 * batch } else { batch };
        let mut sampler = sampling::Sampler::new(options);

        let len = delay::grid_len(frames, k_total);
        // grid[b][k][p]
        let mut grid = vec![vec![vec![pad; len]; k_total]; batch];
        let mut logprob_grid = vec![vec![vec![0f64; len]; k_total]; batch];
        for row in grid.iter_mut().flatten() {
            row[0] = bos;
        }
        let mut ids = vec![0u32; rows * k_total];
        let mut logits = vec![0f32; rows * k_total * vocab];
        for p in 0..len - 1 {
            for (slot, clip) in ids.chunks_exact_mut(k_total).zip(grid.iter().cycle()) {
                for (id, row) in slot.iter_mut().zip(clip) {
                    *id = row[p];
                }
            }
            step(&ids, &mut logits);
            if let Some(scale) = guidance {
                let (cond_logits, uncond) = logits.split_at_mut(batch * k_total * vocab);
                sampling::guide(cond_logits, uncond, scale);
            }
            for (b, rows) in grid.iter_mut().enumerate() {
                for (k, row) in rows.iter_mut().enumerate() {
                    if delay::frame_at(k, p + 1, frames).is_some() {
                        let at = (b * k_total + k) * vocab;
                        let (code, logprob) = sampler.choose_scored(&logits[at..at + vocab]);
                        row[p + 1] = code;
                        logprob_grid[b][k][p + 1] = logprob;
                    }
                }
            }
        }
        let codes = grid
            .iter()
            .map(|rows| delay::undelay(rows, bos, pad))
            .collect::<Result<Vec<_>, _>>()?;
        // Code [k][t] sits at grid position t + k + 1.
        let logprobs = logprob_grid
            .iter()
            .map(|rows| {
                rows.iter()
                    .enumerate()
                    .map(|(k, row)| row[k + 1..k + 1 + frames].to_vec())
                    .collect()
            })
            .collect();
        Ok(Generated { codes, logprobs })
    }

    fn bos(&self) -> u32 {
        self.config.bos as u32
    }

    fn pad(&self) -> u32 {
        self.config.pad as u32
    }
}

/// The weights of a folder: `model.safetensors`, or the shards its
/// `model.safetensors.index.json` lists. A `pytorch_model.bin`-only folder is refused with
/// the command that converts it.
pub(crate) fn open_weights(folder: &Path) -> Result<WeightFile, PolicyError> {
    open_weights_under(folder, "")
}

/// [`open_weights`], reading only the tensors whose names start with `prefix`.
pub(crate) fn open_weights_under(folder: &Path, prefix: &str) -> Result<WeightFile, PolicyError> {
    let (name, files) = weight_files(folder)?;
    WeightFile::open_under(&name, &files, prefix)
}

/// A folder's safetensors files: `model.safetensors`, or the shards its
/// `model.safetensors.index.json` names (sorted), with the file errors are reported against.
pub(crate) fn weight_files(folder: &Path) -> Result<(PathBuf, Vec<PathBuf>), PolicyError> {
    let single = folder.join("model.safetensors");
    if single.is_file() {
        return Ok((single.clone(), vec![single]));
    }
    let index = folder.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|error| PolicyError::Io {
            path: index.clone(),
            error,
        })?;
        let parsed: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| PolicyError::Folder {
                path: index.clone(),
                why: format!("not a safetensors index: {e}"),
            })?;
        let map = parsed
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| PolicyError::Folder {
                path: index.clone(),
                why: "no weight_map object".into(),
            })?;
        let mut files: Vec<String> = map
            .values()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        files.sort_unstable();
        files.dedup();
        let files: Vec<PathBuf> = files.iter().map(|f| folder.join(f)).collect();
        return Ok((index, files));
    }
    let why = if folder.join("pytorch_model.bin").is_file() {
        "holds only pytorch_model.bin, which this loader does not read (pickle files can run code); \
         convert it once with transformers: `python -c \"from transformers import \
         MusicgenForConditionalGeneration as M; M.from_pretrained('DIR').save_pretrained('DIR', \
         safe_serialization=True)\"`, which writes model.safetensors beside it"
    } else {
        "no model.safetensors (nor model.safetensors.index.json)"
    };
    Err(PolicyError::Folder {
        path: folder.to_path_buf(),
        why: why.into(),
    })
}

/// Picks each code's entry of aligned log-softmaxes `[B, K, T, V]`: `[B, K, T]`.
pub fn gather_codes(log_softmax: Tensor<4>, clips: &[Vec<Vec<u32>>], device: &Device) -> Tensor<3> {
    let [b, k, t, _] = log_softmax.dims();
    let idx: Vec<i64> = clips
        .iter()
        .flat_map(|codes| {
            codes
                .iter()
                .flat_map(|row| row.iter().map(|&c| i64::from(c)))
        })
        .collect();
    let idx = Tensor::<4, Int>::from_data(TensorData::new(idx, [b, k, t, 1]), device);
    log_softmax.gather(3, idx).reshape([b, k, t])
}

/// The exact KL(π ‖ π_ref) over the whole codebook at every code position, `[B, K, T]`,
/// from aligned log-softmaxes `[B, K, T, V]` of the policy and the frozen reference.
pub fn kl_per_code(log_policy: Tensor<4>, log_reference: Tensor<4>) -> Tensor<3> {
    let [b, k, t, _] = log_policy.dims();
    (log_policy.clone().exp() * (log_policy - log_reference))
        .sum_dim(3)
        .reshape([b, k, t])
}

/// A float tensor's values, row-major.
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("a converted f32 tensor reads back as f32")
}
