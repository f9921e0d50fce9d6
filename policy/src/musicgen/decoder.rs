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
use super::lora::{Adapter, Adapters, LayerAdapters};
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

/// Indices of a layer's projections in `musicrl_config::LORA_PROJECTIONS` order.
const Q: usize = 0;
const K: usize = 1;
const V: usize = 2;
const O: usize = 3;
const CROSS_Q: usize = 4;
const CROSS_K: usize = 5;
const CROSS_V: usize = 6;
const CROSS_O: usize = 7;
const FC1: usize = 8;
const FC2: usize = 9;

impl DecoderLayer {
    /// Projection `slot` (an index into `musicrl_config::LORA_PROJECTIONS`).
    fn projection(&self, slot: usize) -> &Linear {
        match slot {
            Q => &self.q,
            K => &self.k,
            V => &self.v,
            O => &self.o,
            CROSS_Q => &self.cross_q,
            CROSS_K => &self.cross_k,
            CROSS_V => &self.cross_v,
            CROSS_O => &self.cross_o,
            FC1 => &self.fc1,
            FC2 => &self.fc2,
            _ => panic!("a decoder layer has 10 projections, not slot {slot}"),
        }
    }

    fn projection_mut(&mut self, slot: usize) -> &mut Linear {
        match slot {
            Q => &mut self.q,
            K => &mut self.k,
            V => &mut self.v,
            O => &mut self.o,
            CROSS_Q => &mut self.cross_q,
            CROSS_K => &mut self.cross_k,
            CROSS_V => &mut self.cross_v,
            CROSS_O => &mut self.cross_o,
            FC1 => &mut self.fc1,
            FC2 => &mut self.fc2,
            _ => panic!("a decoder layer has 10 projections, not slot {slot}"),
        }
    }
}

/// Projection `slot` of `layer` applied to `x`, plus its adapter's update when it has one.
fn project<const D: usize>(
    layer: &DecoderLayer,
    adapters: Option<&LayerAdapters>,
    slot: usize,
    x: Tensor<D>,
) -> Tensor<D> {
    let base = layer.projection(slot);
    match adapters.and_then(|a| a.slot(slot)) {
        Some(adapter) => base.forward(x.clone()) + Adapter::delta(adapter, x),
        None => base.forward(x),
    }
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

    /// Number of layers.
    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// Layer `i`'s projection `slot` (an index into `musicrl_config::LORA_PROJECTIONS`).
    pub fn projection(&self, i: usize, slot: usize) -> &Linear {
        self.layers[i].projection(slot)
    }

    /// Layer `i`'s projection `slot`, to replace its weight.
    pub(super) fn projection_mut(&mut self, i: usize, slot: usize) -> &mut Linear {
        self.layers[i].projection_mut(slot)
    }

    /// Every tensor by its transformers name (`decoder.model.decoder.*`, `decoder.lm_heads.*`)
    /// in PyTorch's layout (a linear weight `[d_out, d_in]`), f32: what an export writes.
    pub fn named_tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        use super::to_vec as values;
        let linear = |name: String, l: &Linear| {
            let w = l.weight.val().transpose(); // burn's [d_in, d_out] → [d_out, d_in]
            let shape = w.dims().to_vec();
            (name, shape, values(w))
        };
        let norm = |name: String, n: &LayerNorm| {
            let gamma = n.gamma.val();
            let d = gamma.dims()[0];
            let beta = n
                .beta
                .as_ref()
                .map_or_else(|| vec![0.0; d], |b| values(b.val()));
            [
                (format!("{name}.weight"), vec![d], values(gamma)),
                (format!("{name}.bias"), vec![d], beta),
            ]
        };
        let base = "decoder.model.decoder";
        let mut out = Vec::new();
        for (k, e) in self.embeds.iter().enumerate() {
            let w = e.weight.val();
            out.push((
                format!("{base}.embed_tokens.{k}.weight"),
                w.dims().to_vec(),
                values(w),
            ));
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let p = format!("{base}.layers.{i}");
            out.extend(norm(format!("{p}.self_attn_layer_norm"), &layer.self_norm));
            out.extend(norm(
                format!("{p}.encoder_attn_layer_norm"),
                &layer.cross_norm,
            ));
            out.extend(norm(format!("{p}.final_layer_norm"), &layer.ffn_norm));
            for (slot, name) in musicrl_config::LORA_PROJECTIONS.iter().enumerate() {
                out.push(linear(format!("{p}.{name}.weight"), layer.projection(slot)));
            }
        }
        out.extend(norm(format!("{base}.layer_norm"), &self.norm));
        for (k, head) in self.heads.iter().enumerate() {
            out.push(linear(format!("decoder.lm_heads.{k}.weight"), head));
        }
        out
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
        self.cross_kv_adapted(states, pad, None)
    }

    /// [`Decoder::cross_kv`] with `adapters` on the projections that carry one.
    pub fn cross_kv_adapted(
        &self,
        states: Tensor<3>,
        pad: Tensor<2, Bool>,
        adapters: Option<&Adapters>,
    ) -> CrossKv {
        let [batch, s, _] = states.dims();
        let (h, dh) = (self.n_heads, self.d_model / self.n_heads);
        let layers = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let split = |x: Tensor<3>| x.reshape([batch, s, h, dh]).swap_dims(1, 2);
                let a = adapters.and_then(|a| a.layer(i));
                (
                    split(project(l, a, CROSS_K, states.clone())),
                    split(project(l, a, CROSS_V, states.clone())),
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
        cache: Option<&mut SelfCache>,
    ) -> Tensor<3> {
        self.hidden_adapted(ids, cross, cache, None)
    }

    /// [`Decoder::hidden`] with `adapters` on the projections that carry one (the learner's
    /// LoRA forward: the base weights stay as loaded).
    pub fn hidden_adapted(
        &self,
        ids: Tensor<3, Int>,
        cross: Option<&CrossKv>,
        mut cache: Option<&mut SelfCache>,
        adapters: Option<&Adapters>,
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

            let ad = adapters.and_then(|a| a.layer(i));
            // Causal self-attention over the cache and the new positions.
            let n = layer.self_norm.forward(x.clone());
            let q = split(project(layer, ad, Q, n.clone()));
            let mut k = split(project(layer, ad, K, n.clone()));
            let mut v = split(project(layer, ad, V, n));
            if let Some(cache) = cache.as_deref_mut() {
                let slot = &mut cache.layers[i];
                if let Some((k_past, v_past)) = slot.take() {
                    k = Tensor::cat(vec![k_past, k], 2); // [B, H, past + L, Dh]
                    v = Tensor::cat(vec![v_past, v], 2);
                }
                *slot = Some((k.clone(), v.clone()));
            }
            let a = scaled_attention(q, k, v, None);
            x = x + project(layer, ad, O, merge(a));

            // Cross-attention to the caption.
            if let Some(cross) = cross {
                let n = layer.cross_norm.forward(x.clone());
                let q = split(project(layer, ad, CROSS_Q, n));
                let (ck, cv) = &cross.layers[i];
                let s = ck.dims()[2];
                let mask = cross.pad.clone().expand([batch, h, len, s]);
                let a = scaled_attention(q, ck.clone(), cv.clone(), Some(mask));
                x = x + project(layer, ad, CROSS_O, merge(a));
            }

            let n = layer.ffn_norm.forward(x.clone());
            x = x + project(layer, ad, FC2, gelu(project(layer, ad, FC1, n)));
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
