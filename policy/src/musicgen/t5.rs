//! The T5 encoder (transformers' `T5EncoderModel`) that turns a caption into the states the
//! MusicGen decoder attends to: RMS layer norms without a bias, attention without the
//! 1/sqrt(d) scale, a relative position bias computed once (in block 0) and shared by every
//! block, and the checkpoint's feed-forward variant (ReLU, or gated GELU for T5 1.1).
//! MusicGen keeps it frozen.

use burn::module::Module;
use burn::nn::{Embedding, Linear, RmsNorm, RmsNormConfig};
use burn::tensor::activation::{gelu, gelu_approximate, relu, silu};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use super::config::{T5Activation, T5Config, T5FeedForward};
use super::weights::WeightFile;
use crate::PolicyError;

/// One encoder block: `x + attn(ln(x))`, then `x + ff(ln(x))`.
#[derive(Module, Debug)]
struct T5Block {
    attn_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ff_norm: RmsNorm,
    /// `wi`, or `wi_0` when gated.
    wi: Linear,
    /// `wi_1`, the gate's linear branch, when gated.
    wi_gate: Option<Linear>,
    wo: Linear,
}

/// The T5 encoder stack with its token embedding.
#[derive(Module, Debug)]
pub struct T5Encoder {
    embed: Embedding,
    /// `[num_buckets, heads]`: one learned bias per relative-position bucket and head.
    relative_bias: Embedding,
    blocks: Vec<T5Block>,
    final_norm: RmsNorm,
    n_heads: usize,
    d_kv: usize,
    num_buckets: usize,
    max_distance: usize,
    #[module(skip)]
    activation: Activation,
}

/// The feed-forward activation (configuration, not a parameter).
#[derive(Debug, Clone, Copy)]
enum Activation {
    Relu,
    Gelu,
    GeluTanh,
    Silu,
}

impl Activation {
    fn apply(self, x: Tensor<3>) -> Tensor<3> {
        match self {
            Self::Relu => relu(x),
            Self::Gelu => gelu(x),
            Self::GeluTanh => gelu_approximate(x),
            Self::Silu => silu(x),
        }
    }
}

fn rms_norm(
    w: &WeightFile,
    name: &str,
    d: usize,
    eps: f64,
    device: &Device,
) -> Result<RmsNorm, PolicyError> {
    let mut norm = RmsNormConfig::new(d).with_epsilon(eps).init(device);
    norm.gamma = burn::module::Param::from_tensor(w.tensor(name, [d], device)?);
    Ok(norm)
}

impl T5Encoder {
    /// Loads the encoder from tensors under `prefix` (`text_encoder.` in a MusicGen folder).
    pub fn load(
        w: &WeightFile,
        prefix: &str,
        c: &T5Config,
        ff: T5FeedForward,
        device: &Device,
    ) -> Result<Self, PolicyError> {
        let (d, inner, eps) = (c.d_model, c.num_heads * c.d_kv, c.layer_norm_epsilon);
        // The token embedding is `shared` (tied to `encoder.embed_tokens`, which a saved
        // file may or may not also hold).
        let shared = format!("{prefix}shared.weight");
        let tied = format!("{prefix}encoder.embed_tokens.weight");
        let embed = if w.has(&shared) {
            let e = w.embedding(&shared, c.vocab_size, d, device)?;
            if w.has(&tied) {
                // Take it so it is not reported as unused; it is the same matrix.
                w.values(&tied, &[c.vocab_size, d])?;
            }
            e
        } else {
            w.embedding(&tied, c.vocab_size, d, device)?
        };
        let relative_bias = w.embedding(
            &format!(
                "{prefix}encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
            ),
            c.relative_attention_num_buckets,
            c.num_heads,
            device,
        )?;
        let blocks = (0..c.num_layers)
            .map(|i| {
                let b = format!("{prefix}encoder.block.{i}.layer");
                let lin = |name: &str, d_in, d_out| {
                    w.linear(&format!("{b}.{name}"), d_in, d_out, false, device)
                };
                let (wi, wi_gate) = if ff.gated {
                    (
                        lin("1.DenseReluDense.wi_0", d, c.d_ff)?,
                        Some(lin("1.DenseReluDense.wi_1", d, c.d_ff)?),
                    )
                } else {
                    (lin("1.DenseReluDense.wi", d, c.d_ff)?, None)
                };
                Ok(T5Block {
                    attn_norm: rms_norm(w, &format!("{b}.0.layer_norm.weight"), d, eps, device)?,
                    q: lin("0.SelfAttention.q", d, inner)?,
                    k: lin("0.SelfAttention.k", d, inner)?,
                    v: lin("0.SelfAttention.v", d, inner)?,
                    o: lin("0.SelfAttention.o", inner, d)?,
                    ff_norm: rms_norm(w, &format!("{b}.1.layer_norm.weight"), d, eps, device)?,
                    wi,
                    wi_gate,
                    wo: lin("1.DenseReluDense.wo", c.d_ff, d)?,
                })
            })
            .collect::<Result<Vec<_>, PolicyError>>()?;
        Ok(Self {
            embed,
            relative_bias,
            blocks,
            final_norm: rms_norm(
                w,
                &format!("{prefix}encoder.final_layer_norm.weight"),
                d,
                eps,
                device,
            )?,
            n_heads: c.num_heads,
            d_kv: c.d_kv,
            num_buckets: c.relative_attention_num_buckets,
            max_distance: c.relative_attention_max_distance,
            activation: match ff.activation {
                T5Activation::Relu => Activation::Relu,
                T5Activation::Gelu => Activation::Gelu,
                T5Activation::GeluTanh => Activation::GeluTanh,
                T5Activation::Silu => Activation::Silu,
            },
        })
    }

    /// `ids` `[batch, S]` token ids, `mask` `[batch, S]` true where a position is padding.
    /// Returns the last hidden states `[batch, S, d_model]`.
    pub fn forward(&self, ids: Tensor<2, Int>, pad: Tensor<2, Bool>) -> Tensor<3> {
        let [batch, s] = ids.dims();
        let device = ids.device();
        let (h, dk) = (self.n_heads, self.d_kv);
        let bias = self.position_bias(s, &device).expand([batch, h, s, s]); // [B, H, S, S]
        let mask = pad.reshape([batch, 1, 1, s]).expand([batch, h, s, s]); // true = key is padding
        let mut x = self.embed.forward(ids); // [B, S, d]
        for block in &self.blocks {
            let n = block.attn_norm.forward(x.clone());
            let heads = |l: &Linear| {
                l.forward(n.clone())
                    .reshape([batch, s, h, dk])
                    .swap_dims(1, 2)
            };
            let a = attention(
                heads(&block.q),
                heads(&block.k),
                heads(&block.v),
                Some(mask.clone()),
                Some(bias.clone()),
                AttentionModuleOptions {
                    scale: Some(1.0), // T5 folds the scale into its initialisation
                    softcap: None,
                    is_causal: false,
                },
            ); // [B, H, S, dk]
            let a = a.swap_dims(1, 2).reshape([batch, s, h * dk]);
            x = x + block.o.forward(a);

            let n = block.ff_norm.forward(x.clone());
            let act = self.activation.apply(block.wi.forward(n.clone()));
            let inner = match &block.wi_gate {
                None => act,
                Some(gate) => act * gate.forward(n),
            };
            x = x + block.wo.forward(inner);
        }
        self.final_norm.forward(x)
    }

    /// The shared relative position bias `[1, heads, S, S]`.
    fn position_bias(&self, s: usize, device: &Device) -> Tensor<4> {
        let buckets: Vec<i64> = (0..s)
            .flat_map(|i| (0..s).map(move |j| (i, j)))
            .map(|(i, j)| {
                relative_bucket(j as i64 - i as i64, self.num_buckets, self.max_distance) as i64
            })
            .collect();
        let idx = Tensor::<2, Int>::from_data(TensorData::new(buckets, [s, s]), device);
        self.relative_bias
            .forward(idx) // [S, S, H]
            .permute([2, 0, 1])
            .unsqueeze_dim::<4>(0)
    }
}

/// T5's bidirectional relative-position bucket of `relative = key − query`: half the buckets
/// for keys after the query; within a half, exact buckets for distances below a quarter of
/// the buckets, then logarithmically wider ones up to `max_distance`. Computed in f32 as
/// transformers does, so boundary distances fall in the same bucket.
pub fn relative_bucket(relative: i64, num_buckets: usize, max_distance: usize) -> usize {
    let half = num_buckets / 2;
    let base = if relative > 0 { half } else { 0 };
    let distance = relative.unsigned_abs() as usize;
    let max_exact = half / 2;
    if distance < max_exact {
        return base + distance;
    }
    let scale = ((max_distance as f64) / (max_exact as f64)).ln() as f32;
    let large = max_exact
        + (((distance as f32) / (max_exact as f32)).ln() / scale * (half - max_exact) as f32)
            as usize;
    base + large.min(half - 1)
}

#[cfg(test)]
mod tests {
    use super::relative_bucket;

    #[test]
    fn buckets_of_t5_base_by_hand() {
        // 32 buckets, max distance 128: 16 per direction, 8 exact, then log-spaced.
        let b = |r| relative_bucket(r, 32, 128);
        assert_eq!(b(0), 0);
        assert_eq!(b(-7), 7);
        assert_eq!(b(3), 16 + 3);
        // distance 8: 8 + floor(ln(1)/ln(16) * 8) = 8.
        assert_eq!(b(-8), 8);
        // distance 16: 8 + floor(ln 2 / ln 16 * 8) = 8 + 2 = 10 (an exact boundary).
        assert_eq!(b(-16), 10);
        assert_eq!(b(-15), 9);
        // distance 127: 8 + floor(ln(15.875)/ln(16) * 8) = 8 + 7 = 15; beyond: clamped.
        assert_eq!(b(-127), 15);
        assert_eq!(b(-1000), 15);
        assert_eq!(b(1000), 31);
    }
}
