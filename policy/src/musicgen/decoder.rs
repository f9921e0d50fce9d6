//! The MusicGen decoder (transformers' `MusicgenForCausalLM`): the K codebooks' embeddings
//! summed, sinusoidal positions, pre-LN blocks of causal self-attention, cross-attention to
//! the caption's states and a GELU feed-forward (no biases in any projection), a final
//! layer norm and one output head per codebook. The same blocks serve a whole delayed grid
//! at once (scoring, the learner) and one position at a time over a key/value cache
//! (sampling). The cross-attention's keys and values are computed once per caption.

use burn::module::Module;
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::tensor::activation::gelu;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use super::config::MusicgenConfig;
use super::weights::WeightFile;
use crate::PolicyError;

/// transformers' `nn.LayerNorm` default.
pub(super) const LAYER_NORM_EPS: f64 = 1e-5;

#[derive(Module, Debug)]
pub(super) struct DecoderLayer {
    pub(super) self_norm: LayerNorm,
    pub(super) q: Linear,
    pub(super) k: Linear,
    pub(super) v: Linear,
    pub(super) o: Linear,
    pub(super) cross_norm: LayerNorm,
    pub(super) cross_q: Linear,
    cross_k: Linear,
    cross_v: Linear,
    pub(super) cross_o: Linear,
    pub(super) ffn_norm: LayerNorm,
    pub(super) fc1: Linear,
    pub(super) fc2: Linear,
}

/// A decoder's modules, for the rollout engine to copy.
pub(super) struct DecoderParts<'a> {
    pub(super) embeds: &'a [Embedding],
    pub(super) layers: &'a [DecoderLayer],
    pub(super) norm: &'a LayerNorm,
    pub(super) heads: &'a [Linear],
    pub(super) n_heads: usize,
}

/// The decoder with its embeddings and output heads.
#[derive(Module, Debug)]
pub struct Decoder {
    /// One table per codebook, `vocab + 1` rows (the last is the pad/BOS id).
    embeds: Vec<Embedding>,
    layers: Vec<DecoderLayer>,
    norm: LayerNorm,
    /// One head per codebook, `d_model -> vocab`.
    heads: Vec<Linear>,
    n_heads: usize,
    d_model: usize,
}

/// The cross-attention keys and values of a batch of captions, per layer, and which caption
/// positions are padding. `None` where a decoder runs unconditionally (the guidance branch).
#[derive(Debug, Clone)]
pub struct CrossKv {
    layers: Vec<(Tensor<4>, Tensor<4>)>, // [B, H, S, Dh] each
    /// `[B, 1, 1, S]`, true where the caption position is padding.
    pad: Tensor<4, Bool>,
}

/// Self-attention keys and values of the positions fed so far, per layer.
#[derive(Debug, Clone)]
pub struct SelfCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    len: usize,
}

impl CrossKv {
    /// Per layer `[B, H, S, Dh]` keys and values, and `[B, 1, 1, S]` padding.
    pub(super) fn parts(&self) -> (&[(Tensor<4>, Tensor<4>)], &Tensor<4, Bool>) {
        (&self.layers, &self.pad)
    }
}

impl SelfCache {
    /// Number of grid positions already fed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing has been fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Decoder {
    /// Loads the decoder from `decoder.model.decoder.*` and `decoder.lm_heads.*`.
    pub fn load(w: &WeightFile, c: &MusicgenConfig, device: &Device) -> Result<Self, PolicyError> {
        let d = &c.decoder;
        let (dm, ff, cross) = (d.hidden_size, d.ffn_dim, c.cross_width());
        let base = "decoder.model.decoder";
        let embeds = (0..d.num_codebooks)
            .map(|k| {
                w.embedding(
                    &format!("{base}.embed_tokens.{k}.weight"),
                    d.vocab_size + 1,
                    dm,
                    device,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let layers = (0..d.num_hidden_layers)
            .map(|i| {
                let p = format!("{base}.layers.{i}");
                let lin = |name: &str, d_in, d_out| {
                    w.linear(&format!("{p}.{name}"), d_in, d_out, false, device)
                };
                let norm =
                    |name: &str| w.layer_norm(&format!("{p}.{name}"), dm, LAYER_NORM_EPS, device);
                Ok(DecoderLayer {
                    self_norm: norm("self_attn_layer_norm")?,
                    q: lin("self_attn.q_proj", dm, dm)?,
                    k: lin("self_attn.k_proj", dm, dm)?,
                    v: lin("self_attn.v_proj", dm, dm)?,
                    o: lin("self_attn.out_proj", dm, dm)?,
                    cross_norm: norm("encoder_attn_layer_norm")?,
                    cross_q: lin("encoder_attn.q_proj", dm, dm)?,
                    cross_k: lin("encoder_attn.k_proj", cross, dm)?,
                    cross_v: lin("encoder_attn.v_proj", cross, dm)?,
                    cross_o: lin("encoder_attn.out_proj", dm, dm)?,
                    ffn_norm: norm("final_layer_norm")?,
                    fc1: lin("fc1", dm, ff)?,
                    fc2: lin("fc2", ff, dm)?,
                })
            })
            .collect::<Result<Vec<_>, PolicyError>>()?;
        let heads = (0..d.num_codebooks)
            .map(|k| {
                w.linear(
                    &format!("decoder.lm_heads.{k}"),
                    dm,
                    d.vocab_size,
                    false,
                    device,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            embeds,
            layers,
            norm: w.layer_norm(&format!("{base}.layer_norm"), dm, LAYER_NORM_EPS, device)?,
            heads,
            n_heads: d.num_attention_heads,
            d_model: dm,
        })
    }

    /// The modules, for the rollout engine to copy.
    pub(super) fn parts(&self) -> DecoderParts<'_> {
        DecoderParts {
            embeds: &self.embeds,
            layers: &self.layers,
            norm: &self.norm,
            heads: &self.heads,
            n_heads: self.n_heads,
        }
    }

    /// An empty self-attention cache.
    pub fn new_cache(&self) -> SelfCache {
        SelfCache {
            layers: vec![None; self.layers.len()],
            len: 0,
        }
    }

    /// The cross-attention keys and values of caption states `[B, S, width]` with their
    /// padding `[B, S]` (true = pad).
    pub fn cross_kv(&self, states: Tensor<3>, pad: Tensor<2, Bool>) -> CrossKv {
        let [batch, s, _] = states.dims();
        let (h, dh) = (self.n_heads, self.d_model / self.n_heads);
        let layers = self
            .layers
            .iter()
            .map(|l| {
                let split = |x: Tensor<3>| x.reshape([batch, s, h, dh]).swap_dims(1, 2);
                (
                    split(l.cross_k.forward(states.clone())),
                    split(l.cross_v.forward(states.clone())),
                )
            })
            .collect();
        CrossKv {
            layers,
            pad: pad.reshape([batch, 1, 1, s]),
        }
    }

    /// Logits `[B, K, L, vocab]` for grid inputs `[B, K, L]` at positions `past .. past + L`,
    /// where `past` is the cache's length (0 without a cache: a whole grid, causal).
    /// Without `cross` the decoder runs unconditionally: the cross-attention adds nothing,
    /// which is exactly what transformers computes for its guidance branch (zeroed,
    /// fully-masked caption states give zero values and bias-free projections).
    pub fn forward(
        &self,
        ids: Tensor<3, Int>,
        cross: Option<&CrossKv>,
        cache: Option<&mut SelfCache>,
    ) -> Tensor<4> {
        self.heads(self.hidden(ids, cross, cache))
    }

    /// The output heads over final hidden states `[B, L, d]`: logits `[B, K, L, vocab]`.
    pub fn heads(&self, x: Tensor<3>) -> Tensor<4> {
        let logits: Vec<Tensor<3>> = self
            .heads
            .iter()
            .map(|head| head.forward(x.clone()))
            .collect();
        Tensor::stack(logits, 1)
    }

    /// The model width.
    pub fn d_model(&self) -> usize {
        self.d_model
    }

    /// The final (normed) hidden states `[B, L, d]` that [`Decoder::forward`] feeds its
    /// heads (the learner's value head reads them too).
    pub fn hidden(
        &self,
        ids: Tensor<3, Int>,
        cross: Option<&CrossKv>,
        mut cache: Option<&mut SelfCache>,
    ) -> Tensor<3> {
        let [batch, _, len] = ids.dims();
        let device = ids.device();
        let past = cache.as_ref().map_or(0, |c| c.len);
        let (h, dh) = (self.n_heads, self.d_model / self.n_heads);

        // [B, L, d]: the codebooks' embeddings summed, plus the sinusoidal positions.
        let mut x = self
            .embeds
            .iter()
            .enumerate()
            .map(|(k, e)| e.forward(ids.clone().narrow(1, k, 1).reshape([batch, len])))
            .reduce(|a, b| a + b)
            .expect("a decoder has at least one codebook");
        x = x + sinusoidal_positions(past, len, self.d_model, &device).unsqueeze_dim::<3>(0);

        for (i, layer) in self.layers.iter().enumerate() {
            let split = |t: Tensor<3>| t.reshape([batch, len, h, dh]).swap_dims(1, 2);
            let merge = |t: Tensor<4>| t.swap_dims(1, 2).reshape([batch, len, self.d_model]);

            // Causal self-attention over the cache and the new positions.
            let n = layer.self_norm.forward(x.clone());
            let q = split(layer.q.forward(n.clone()));
            let mut k = split(layer.k.forward(n.clone()));
            let mut v = split(layer.v.forward(n));
            if let Some(cache) = cache.as_deref_mut() {
                let slot = &mut cache.layers[i];
                if let Some((k_past, v_past)) = slot.take() {
                    k = Tensor::cat(vec![k_past, k], 2); // [B, H, past + L, Dh]
                    v = Tensor::cat(vec![v_past, v], 2);
                }
                *slot = Some((k.clone(), v.clone()));
            }
            let a = scaled_attention(q, k, v, None);
            x = x + layer.o.forward(merge(a));

            // Cross-attention to the caption.
            if let Some(cross) = cross {
                let n = layer.cross_norm.forward(x.clone());
                let q = split(layer.cross_q.forward(n));
                let (ck, cv) = &cross.layers[i];
                let s = ck.dims()[2];
                let mask = cross.pad.clone().expand([batch, h, len, s]);
                let a = scaled_attention(q, ck.clone(), cv.clone(), Some(mask));
                x = x + layer.cross_o.forward(merge(a));
            }

            let n = layer.ffn_norm.forward(x.clone());
            x = x + layer.fc2.forward(gelu(layer.fc1.forward(n)));
        }
        if let Some(cache) = cache {
            cache.len += len;
        }
        self.norm.forward(x)
    }
}

/// Attention scaled by 1/sqrt(head width): causal (burn's `is_causal`, which places the
/// queries at the end of the keys, as a cache needs) without a mask, and over every
/// unmasked key (the caption) with one.
fn scaled_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Option<Tensor<4, Bool>>,
) -> Tensor<4> {
    let dh = q.dims()[3];
    let is_causal = mask.is_none();
    attention(
        q,
        k,
        v,
        mask,
        None,
        AttentionModuleOptions {
            scale: Some(1.0 / (dh as f64).sqrt()),
            softcap: None,
            is_causal,
        },
    )
}

/// MusicGen's sinusoidal position embeddings for positions `start .. start + len`,
/// `[len, d]`: the first half of each row cosines, the second half sines, of
/// `position · 10000^(−i / (d/2 − 1))`, computed in f32 as transformers does.
pub fn sinusoidal_positions(start: usize, len: usize, d: usize, device: &Device) -> Tensor<2> {
    let values = sinusoid_table(start, len, d);
    Tensor::from_data(TensorData::new(values, [len, d]), device)
}

/// [`sinusoidal_positions`] as a row-major `[len, d]` buffer.
pub(super) fn sinusoid_table(start: usize, len: usize, d: usize) -> Vec<f32> {
    let half = d / 2;
    let step = (10000f64.ln() / (half as f64 - 1.0)) as f32;
    let freqs: Vec<f32> = (0..half).map(|i| (i as f32 * -step).exp()).collect();
    let mut values = vec![0f32; len * d];
    for (row, pos) in (start..start + len).enumerate() {
        for (i, f) in freqs.iter().enumerate() {
            let angle = pos as f32 * f;
            values[row * d + i] = angle.cos();
            values[row * d + half + i] = angle.sin();
        }
        // An odd width keeps a zero last column.
    }
    values
}
