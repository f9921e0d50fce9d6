//! The two towers the audio reward models are built from.
//!
//! - [`AudioEncoder`]: a window of feature frames (`[batch, frames, FRAME_DIM]`, see
//!   [`crate::features`]) → layer norm and a per-frame projection → two strided 1-D
//!   convolutions over time (kernel 5, stride 2; receptive field ≈ 0.7 s) → mean and max over
//!   time, concatenated with projections of the window's tempogram, and optionally of its
//!   pitch-class profile and its metre profile → a linear output.
//! - [`TextEncoder`]: a caption as hashed word buckets (the policy's tokenizer,
//!   [`musicrl_policy::melody::caption`]) → embeddings averaged over the words → a two-layer MLP.
//!
//! Both are small (tens of thousands of parameters) so that training and scoring fit a CPU.

use burn::module::Module;
use burn::nn::conv::{Conv1d, Conv1dConfig};
use burn::nn::{
    Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig1d,
};
use burn::tensor::activation::{gelu, relu};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::features::{FRAME_DIM, Features, METRE_STEPS, N_CHROMA, N_MELS, TEMPO_LAGS};

/// Sizes of an audio tower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudioEncoderConfig {
    pub hidden: usize,
    pub out: usize,
    /// Also read the window's pitch-class profile (its mean chroma): the key of a melody is
    /// a property of a whole window, which per-frame convolutions see only indirectly.
    #[serde(default)]
    pub key_profile: bool,
    /// Also read the window's metre profile ([`Features::metre_profile`]): the onset
    /// autocorrelation in multiples of the tatum, where a bar's length does not move with
    /// the tempo.
    #[serde(default)]
    pub metre_profile: bool,
}

/// A batch of windows as the audio tower reads them.
#[derive(Debug, Clone)]
pub struct AudioInput {
    /// `[batch, time, FRAME_DIM]`.
    pub frames: Tensor<3>,
    /// `[batch, TEMPO_LAGS]`.
    pub tempogram: Tensor<2>,
    /// `[batch, N_CHROMA]`.
    pub profile: Tensor<2>,
    /// `[batch, METRE_STEPS]`.
    pub metre: Tensor<2>,
}

#[derive(Module, Debug)]
pub struct AudioEncoder {
    norm: LayerNorm,
    frame: Linear,
    conv1: Conv1d,
    conv2: Conv1d,
    tempo: Linear,
    key: Option<Linear>,
    metre: Option<Linear>,
    out: Linear,
}

impl AudioEncoder {
    pub fn new(config: AudioEncoderConfig, device: &Device) -> Self {
        let h = config.hidden;
        let conv = || {
            Conv1dConfig::new(h, h, 5)
                .with_stride(2)
                .with_padding(PaddingConfig1d::Explicit(2, 2))
                .init(device)
        };
        Self {
            norm: LayerNormConfig::new(FRAME_DIM).init(device),
            frame: LinearConfig::new(FRAME_DIM, h).init(device),
            conv1: conv(),
            conv2: conv(),
            tempo: LinearConfig::new(TEMPO_LAGS, h).init(device),
            key: config
                .key_profile
                .then(|| LinearConfig::new(N_CHROMA, h).init(device)),
            metre: config
                .metre_profile
                .then(|| LinearConfig::new(METRE_STEPS, h).init(device)),
            out: LinearConfig::new(
                (3 + usize::from(config.key_profile) + usize::from(config.metre_profile)) * h,
                config.out,
            )
            .init(device),
        }
    }

    /// A batch of windows → `[batch, out]` (the pitch-class and metre profiles are read
    /// only when configured).
    pub fn forward(&self, input: AudioInput) -> Tensor<2> {
        let AudioInput {
            frames,
            tempogram,
            profile,
            metre,
        } = input;
        let x = gelu(self.frame.forward(self.norm.forward(frames))); // [B, T, H]
        let x = x.swap_dims(1, 2); // [B, H, T]
        let x = gelu(self.conv1.forward(x));
        let x = gelu(self.conv2.forward(x)); // [B, H, T/4]
        let [b, h, _] = x.dims();
        let mean = x.clone().mean_dim(2).reshape([b, h]);
        let max = x.max_dim(2).reshape([b, h]);
        let tempo = relu(self.tempo.forward(tempogram));
        let mut parts = vec![mean, max, tempo];
        if let Some(key) = &self.key {
            // The profile sums to one; centred and scaled so a flat one reads as zero.
            let centred = (profile - 1.0 / N_CHROMA as f64) * N_CHROMA as f64;
            parts.push(relu(key.forward(centred)));
        }
        if let Some(m) = &self.metre {
            parts.push(relu(m.forward(metre)));
        }
        self.out.forward(Tensor::cat(parts, 1))
    }
}

/// The mean chroma of a window (its pitch-class profile; sums to one unless silent).
pub fn pitch_class_profile(w: &Features) -> [f32; N_CHROMA] {
    let mut p = [0.0f32; N_CHROMA];
    for i in 0..w.frames {
        for (k, v) in w.frame(i)[N_MELS..N_MELS + N_CHROMA].iter().enumerate() {
            p[k] += v;
        }
    }
    let sum: f32 = p.iter().sum();
    if sum > 0.0 {
        p.iter_mut().for_each(|x| *x /= sum);
    }
    p
}

/// Windows of equal length as the audio tower's input tensors.
pub fn audio_batch(windows: &[&Features], device: &Device) -> AudioInput {
    let b = windows.len();
    let t = windows.first().map_or(1, |w| w.frames);
    let mut frames = Vec::with_capacity(b * t * FRAME_DIM);
    let mut tempo = Vec::with_capacity(b * TEMPO_LAGS);
    let mut profiles = Vec::with_capacity(b * N_CHROMA);
    let mut metre = Vec::with_capacity(b * METRE_STEPS);
    for w in windows {
        assert_eq!(w.frames, t, "windows in a batch have one length");
        frames.extend_from_slice(&w.data);
        tempo.extend(w.tempogram());
        profiles.extend(pitch_class_profile(w));
        metre.extend(w.metre_profile());
    }
    AudioInput {
        frames: Tensor::<3>::from_data(TensorData::new(frames, [b, t, FRAME_DIM]), device),
        tempogram: Tensor::<2>::from_data(TensorData::new(tempo, [b, TEMPO_LAGS]), device),
        profile: Tensor::<2>::from_data(TensorData::new(profiles, [b, N_CHROMA]), device),
        metre: Tensor::<2>::from_data(TensorData::new(metre, [b, METRE_STEPS]), device),
    }
}

/// Sizes of a text tower.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextEncoderConfig {
    pub buckets: usize,
    pub max_words: usize,
    pub embed: usize,
    pub hidden: usize,
    pub out: usize,
}

#[derive(Module, Debug)]
pub struct TextEncoder {
    embed: Embedding,
    l1: Linear,
    l2: Linear,
}

impl TextEncoder {
    pub fn new(config: TextEncoderConfig, device: &Device) -> Self {
        Self {
            embed: EmbeddingConfig::new(config.buckets, config.embed).init(device),
            l1: LinearConfig::new(config.embed, config.hidden).init(device),
            l2: LinearConfig::new(config.hidden, config.out).init(device),
        }
    }

    /// `ids`, `mask`: `[batch, words]` → `[batch, out]`.
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<2> {
        let [b, w] = ids.dims();
        let e = self.embed.forward(ids); // [B, W, E]
        let m = mask.reshape([b, w, 1]);
        let summed = (e * m.clone()).sum_dim(1); // [B, 1, E]
        let count = m.sum_dim(1).clamp_min(1.0);
        let [_, _, d] = summed.dims();
        let pooled = (summed / count).reshape([b, d]);
        self.l2.forward(gelu(self.l1.forward(pooled)))
    }
}

/// Captions as the text tower's input tensors.
pub fn text_batch<S: AsRef<str>>(
    captions: &[S],
    config: &TextEncoderConfig,
    device: &Device,
) -> (Tensor<2, Int>, Tensor<2>) {
    let tokenised: Vec<Vec<u32>> = captions
        .iter()
        .map(|c| {
            musicrl_policy::melody::caption::tokenize(c.as_ref(), config.buckets, config.max_words)
        })
        .collect();
    let (ids, mask, words) = musicrl_policy::melody::caption::pad_batch(&tokenised);
    let b = captions.len();
    (
        Tensor::<2, Int>::from_data(TensorData::new(ids, [b, words]), device),
        Tensor::<2>::from_data(TensorData::new(mask, [b, words]), device),
    )
}

/// Rows scaled to unit length.
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = (x.clone() * x.clone()).sum_dim(1).sqrt().clamp_min(1e-6);
    x / norm
}
