//! The policy: a decoder-only transformer over music tokens, conditioned on a caption,
//! with a value head on the same trunk.
//!
//! Layout of one sequence (positions 0..T):
//!
//! ```text
//! position   0          1          2               T-1
//! input      cond(c)    emb(a_0)   emb(a_1)   ...  emb(a_{T-2})
//! predicts   a_0        a_1        a_2        ...  a_{T-1}
//! value      V(s_0)     V(s_1)     V(s_2)     ...  V(s_{T-1})
//! ```
//!
//! where `cond(c)` is the caption embedding (see [`crate::melody::caption`]) and
//! `s_t = (caption, a_0 .. a_{t-1})`. The same blocks serve the learner's full-sequence
//! forward (causal mask) and the actors' incremental decoding (a per-layer key/value cache,
//! one new position per step, no recomputation of the prefix).
//!
//! This module does no IO and knows nothing of gRPC.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::gelu;
use burn::tensor::module::{attention, linear};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Int, Tensor};

use musicrl_config::PolicyConfig;

/// One pre-LN decoder block: `x + attn(ln1(x))`, then `x + mlp(ln2(x))`.
#[derive(Module, Debug)]
pub struct Block {
    ln1: LayerNorm,
    /// Fused query, key and value projection: `[d_model, 3 * d_model]`.
    qkv: Linear,
    attn_out: Linear,
    ln2: LayerNorm,
    mlp_in: Linear,
    mlp_out: Linear,
    n_heads: usize,
}

/// Keys and values of the positions seen so far, per layer: `[batch, heads, past, d_head]`.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    len: usize,
}

impl KvCache {
    /// An empty cache for a policy of `n_layers` blocks.
    pub fn new(n_layers: usize) -> Self {
        Self {
            layers: vec![None; n_layers],
            len: 0,
        }
    }

    /// Number of positions already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position has been fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Block {
    fn new(config: &PolicyConfig, device: &Device) -> Self {
        let d = config.d_model;
        Self {
            ln1: LayerNormConfig::new(d).init(device),
            qkv: LinearConfig::new(d, 3 * d).init(device),
            attn_out: LinearConfig::new(d, d).init(device),
            ln2: LayerNormConfig::new(d).init(device),
            mlp_in: LinearConfig::new(d, config.d_ff).init(device),
            mlp_out: LinearConfig::new(config.d_ff, d).init(device),
            n_heads: config.n_heads,
        }
    }

    /// `x`: `[batch, new, d_model]` at positions `past .. past + new`. With a cache slot, the
    /// new keys and values are appended to it and attention covers all `past + new`
    /// positions; without one (`past` = 0) this is the plain causal forward.
    fn forward(
        &self,
        x: Tensor<3>,
        cache: Option<&mut Option<(Tensor<4>, Tensor<4>)>>,
    ) -> Tensor<3> {
        let [batch, new, d_model] = x.dims();
        let n_heads = self.n_heads;
        let d_head = d_model / n_heads;

        // The queries, keys and values are three linear maps through column blocks of the
        // fused `qkv` weight (views, no copy), not one map and three slices of its output:
        // the same products, and each gradient arrives whole where slicing the output
        // would zero-fill and slice-assign a [B, new, 3d] tensor three times per backward.
        let h = self.ln1.forward(x.clone());
        let weight = self.qkv.weight.val(); // [d, 3d]
        let bias = self.qkv.bias.as_ref().map(|b| b.val()); // [3d]
        let project = |i: usize| {
            linear(
                h.clone(),
                weight.clone().narrow(1, i * d_model, d_model),
                bias.clone().map(|b| b.narrow(0, i * d_model, d_model)),
            )
            .reshape([batch, new, n_heads, d_head])
            .swap_dims(1, 2) // [B, H, new, Dh], a view
        };
        let (q, mut k, mut v) = (project(0), project(1), project(2));

        if let Some(slot) = cache {
            if let Some((k_past, v_past)) = slot.take() {
                k = Tensor::cat(vec![k_past, k], 2); // [B, H, past + new, Dh]
                v = Tensor::cat(vec![v_past, v], 2);
            }
            *slot = Some((k.clone(), v.clone()));
        }

        // Causal scaled dot-product attention as one operation: query i (absolute position
        // past + i) sees keys 0 ..= past + i, burn's `is_causal` convention for
        // seq_kv − seq_q = past. On flex it reads q, k and v through their strides, keeps
        // no score-sized tensor, and has its own backward (patches/README.md); its output's
        // layout makes the merge of the heads below a view.
        let attn = attention(
            q,
            k,
            v,
            None,
            None,
            AttentionModuleOptions {
                scale: Some(1.0 / (d_head as f64).sqrt()),
                softcap: None,
                is_causal: true,
            },
        ); // [B, H, new, Dh]
        let attn = attn.swap_dims(1, 2).reshape([batch, new, d_model]);
        let x = x + self.attn_out.forward(attn);

        let h = self
            .mlp_out
            .forward(gelu(self.mlp_in.forward(self.ln2.forward(x.clone()))));
        x + h
    }
}

/// The text-conditioned policy with its value head.
#[derive(Module, Debug)]
pub struct Policy {
    token_emb: Embedding,
    pos_emb: Embedding,
    caption_emb: Embedding,
    cond_proj: Linear,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: Linear,
    value_head: Linear,
}

/// The policy's outputs over a whole sequence.
#[derive(Debug)]
pub struct PolicyOutput {
    /// `[batch, T, vocab]`: row t is the distribution of a_t given s_t (before temperature).
    pub logits: Tensor<3>,
    /// `[batch, T]`: V(s_t).
    pub values: Tensor<2>,
}

/// A batch of tokenised captions: hashed word ids and a mask of real (non-pad) words.
#[derive(Debug, Clone)]
pub struct CaptionBatch {
    /// `[batch, words]` word-bucket ids; pads are 0 and masked out.
    pub ids: Tensor<2, Int>,
    /// `[batch, words]` 1.0 for a real word, 0.0 for a pad.
    pub mask: Tensor<2>,
}

impl Policy {
    /// A freshly initialised policy. Seed the device first for a reproducible init.
    pub fn new(config: &PolicyConfig, device: &Device) -> Self {
        let d = config.d_model;
        Self {
            token_emb: EmbeddingConfig::new(config.vocab_size, d).init(device),
            pos_emb: EmbeddingConfig::new(config.max_tokens, d).init(device),
            caption_emb: EmbeddingConfig::new(config.caption_buckets, d).init(device),
            cond_proj: LinearConfig::new(d, d).init(device),
            blocks: (0..config.n_layers)
                .map(|_| Block::new(config, device))
                .collect(),
            ln_f: LayerNormConfig::new(d).init(device),
            lm_head: LinearConfig::new(d, config.vocab_size).init(device),
            value_head: LinearConfig::new(d, 1).init(device),
        }
    }

    /// Number of decoder blocks.
    pub fn n_layers(&self) -> usize {
        self.blocks.len()
    }

    /// The conditioning vector of each caption: the masked mean of its word embeddings,
    /// projected. `[batch, 1, d_model]`.
    fn condition(&self, captions: &CaptionBatch) -> Tensor<3> {
        let emb = self.caption_emb.forward(captions.ids.clone()); // [B, W, d]
        let mask = captions.mask.clone().unsqueeze_dim::<3>(2); // [B, W, 1]
        let count = mask.clone().sum_dim(1).clamp_min(1.0); // [B, 1, 1]
        let mean = (emb * mask).sum_dim(1) / count; // [B, 1, d]
        self.cond_proj.forward(mean)
    }

    fn positions(&self, batch: usize, start: usize, len: usize, device: &Device) -> Tensor<3> {
        let pos = Tensor::<1, Int>::arange(start as i64..(start + len) as i64, device)
            .unsqueeze_dim::<2>(0)
            .repeat_dim(0, batch); // [B, len]
        self.pos_emb.forward(pos)
    }

    fn head(&self, h: Tensor<3>) -> (Tensor<3>, Tensor<2>) {
        let h = self.ln_f.forward(h);
        let logits = self.lm_head.forward(h.clone());
        let values = self.value_head.forward(h).squeeze_dim::<2>(2);
        (logits, values)
    }

    /// Teacher-forced forward over whole sequences (the learner's path).
    ///
    /// `tokens`: `[batch, T]` the actions a_0 .. a_{T-1}, T >= 1. Returns logits and values
    /// for every step t, computed from s_t.
    pub fn forward(&self, captions: &CaptionBatch, tokens: Tensor<2, Int>) -> PolicyOutput {
        let (logits, values) = self.head(self.trunk(captions, tokens));
        PolicyOutput { logits, values }
    }

    /// The blocks' output over whole sequences, `[batch, T, d_model]`.
    fn trunk(&self, captions: &CaptionBatch, tokens: Tensor<2, Int>) -> Tensor<3> {
        let [batch, t] = tokens.dims();
        let device = tokens.device();
        let cond = self.condition(captions); // [B, 1, d]
        let x = if t > 1 {
            let prev = self.token_emb.forward(tokens.narrow(1, 0, t - 1)); // [B, T-1, d]
            Tensor::cat(vec![cond, prev], 1) // [B, T, d]
        } else {
            cond
        };
        let mut x = x + self.positions(batch, 0, t, &device);
        for block in &self.blocks {
            x = block.forward(x, None);
        }
        x
    }

    /// The learner's forward: like [`Policy::forward`], but the value head reads the trunk's
    /// features through a stop-gradient, so the value regression trains the head alone and
    /// never moves the policy's distribution (a value head sharing the trunk, untrained at
    /// θ0, otherwise drags the policy away from θ0 in the first updates).
    pub fn forward_rl(&self, captions: &CaptionBatch, tokens: Tensor<2, Int>) -> PolicyOutput {
        let h = self.trunk(captions, tokens);
        let h = self.ln_f.forward(h);
        let logits = self.lm_head.forward(h.clone());
        let values = self.value_head.forward(h.detach()).squeeze_dim::<2>(2);
        PolicyOutput { logits, values }
    }

    /// Adds `delta` to the value head's bias (a data-dependent initialisation of the
    /// baseline: the learner shifts V to the first batch's mean reward).
    pub fn shift_value_bias(mut self, delta: f32) -> Self {
        if let Some(bias) = self.value_head.bias.take() {
            // A fresh leaf (not a node computed from the old one), tracked when the
            // parameter was.
            let tracked = bias.is_require_grad();
            self.value_head.bias = Some(bias.map(|b| {
                let device = b.device();
                let values: Vec<f32> = crate::melody::to_vec_f32(b)
                    .into_iter()
                    .map(|x| x + delta)
                    .collect();
                let n = values.len();
                let b = Tensor::<1>::from_data(burn::tensor::TensorData::new(values, [n]), &device);
                if tracked { b.require_grad() } else { b }
            }));
        }
        self
    }

    /// Starts incremental decoding: feeds the caption condition (position 0) and returns
    /// the logits of a_0, `[batch, vocab]`, and V(s_0), `[batch]`.
    pub fn start(&self, captions: &CaptionBatch, cache: &mut KvCache) -> (Tensor<2>, Tensor<1>) {
        let x = self.condition(captions);
        self.step_embedded(x, cache)
    }

    /// Feeds the previous actions `[batch]` at the next position and returns the logits of
    /// the next action and the value of the new state.
    pub fn step(&self, prev_tokens: Tensor<1, Int>, cache: &mut KvCache) -> (Tensor<2>, Tensor<1>) {
        let x = self.token_emb.forward(prev_tokens.unsqueeze_dim::<2>(1)); // [B, 1, d]
        self.step_embedded(x, cache)
    }

    fn step_embedded(&self, x: Tensor<3>, cache: &mut KvCache) -> (Tensor<2>, Tensor<1>) {
        let [batch, new, _] = x.dims();
        let device = x.device();
        let mut x = x + self.positions(batch, cache.len, new, &device);
        for (block, slot) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            x = block.forward(x, Some(slot));
        }
        cache.len += new;
        let (logits, values) = self.head(x); // [B, 1, V], [B, 1]
        (logits.squeeze_dim::<2>(1), values.squeeze_dim::<1>(1))
    }

    /// Every parameter as plain row-major buffers, for the rollout engine
    /// ([`crate::melody::Engine`]), which checks them against `config`.
    pub(crate) fn engine_weights(&self, config: &PolicyConfig) -> crate::melody::engine::Weights {
        use crate::melody::engine::{BlockWeights, LinearWeights, NormWeights, Weights};
        use crate::melody::to_vec_f32;
        let linear = |l: &Linear| {
            let w = l.weight.val();
            let [d_in, d_out] = w.dims();
            LinearWeights {
                w: to_vec_f32(w),
                b: l.bias
                    .as_ref()
                    .map_or_else(|| vec![0.0; d_out], |b| to_vec_f32(b.val())),
                d_in,
                d_out,
            }
        };
        let norm = |n: &LayerNorm| {
            let gamma = to_vec_f32(n.gamma.val());
            let beta = n
                .beta
                .as_ref()
                .map_or_else(|| vec![0.0; gamma.len()], |b| to_vec_f32(b.val()));
            NormWeights { gamma, beta }
        };
        Weights {
            config: config.clone(),
            token_emb: to_vec_f32(self.token_emb.weight.val()),
            pos_emb: to_vec_f32(self.pos_emb.weight.val()),
            caption_emb: to_vec_f32(self.caption_emb.weight.val()),
            cond_proj: linear(&self.cond_proj),
            blocks: self
                .blocks
                .iter()
                .map(|b| BlockWeights {
                    ln1: norm(&b.ln1),
                    qkv: linear(&b.qkv),
                    attn_out: linear(&b.attn_out),
                    ln2: norm(&b.ln2),
                    mlp_in: linear(&b.mlp_in),
                    mlp_out: linear(&b.mlp_out),
                })
                .collect(),
            ln_f: norm(&self.ln_f),
            lm_head: linear(&self.lm_head),
            value_head: linear(&self.value_head),
        }
    }

    /// Logits of the last position recomputed from scratch for the given prefix (no cache):
    /// the reference path the cache is tested and benchmarked against.
    pub fn next_logits_uncached(
        &self,
        captions: &CaptionBatch,
        prefix: Tensor<2, Int>,
    ) -> Tensor<2> {
        let [batch, t] = prefix.dims();
        // The sequence a_0..a_{t-1} plus one dummy action: its last row is conditioned on
        // s_t = (c, a_0 .. a_{t-1}) and ignores the dummy.
        let dummy = Tensor::<2, Int>::zeros([batch, 1], &prefix.device());
        let tokens = if t == 0 {
            dummy
        } else {
            Tensor::cat(vec![prefix, dummy], 1)
        };
        let out = self.forward(captions, tokens);
        let [_, len, vocab] = out.logits.dims();
        out.logits.narrow(1, len - 1, 1).reshape([batch, vocab])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::melody::{caption_batch, to_vec_f32, token_tensor};

    fn tiny() -> PolicyConfig {
        PolicyConfig {
            vocab_size: 11,
            max_tokens: 9,
            d_model: 16,
            n_heads: 2,
            n_layers: 2,
            d_ff: 32,
            caption_buckets: 64,
            max_caption_words: 8,
            ..PolicyConfig::default()
        }
    }

    /// `n` deterministic values on a 0.001 grid in [-1, 1], a different sequence per `seed`:
    /// operands for the kernel tests against f64.
    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// Matmul on the training device against f64 on every path of the patched flex matmul,
    /// whose output gemm writes without zeroing first: one 2-D matrix large enough for gemm's
    /// own threads, a batch large enough for a matmul per thread, a small batch of large
    /// matrices, a broadcast batch, a transposed (strided) operand, and an empty inner
    /// dimension (all zeros). NaNs are left on the freed heap first: an output that reuses
    /// that memory shows an element gemm failed to write as NaN, and one on fresh (zeroed)
    /// pages as a 0 that the f64 comparison catches (except where 0 is right: k = 0).
    #[test]
    fn matmul_on_the_training_device_matches_f64_on_every_path() {
        let device = Device::flex();
        // Poison the allocator's free lists: the next outputs may reuse these buffers.
        for n in [1 << 16, 1 << 18, 1 << 20] {
            drop(std::hint::black_box(vec![f32::NAN; n]));
        }
        let check = |a_shape: [usize; 3], b_shape: [usize; 3], transpose_b: bool| {
            let [ba, m, k] = a_shape;
            let [bb, _, n] = b_shape;
            let a = values(ba * m * k, 7);
            let b = values(bb * k * n, 11);
            let ta =
                Tensor::<3>::from_data(burn::tensor::TensorData::new(a.clone(), a_shape), &device);
            let tb = if transpose_b {
                // Stored [bb, n, k] and viewed as [bb, k, n]: a strided right operand.
                let mut bt = vec![0f32; b.len()];
                for x in 0..bb {
                    for r in 0..k {
                        for c in 0..n {
                            bt[x * n * k + c * k + r] = b[x * k * n + r * n + c];
                        }
                    }
                }
                Tensor::<3>::from_data(burn::tensor::TensorData::new(bt, [bb, n, k]), &device)
                    .swap_dims(1, 2)
            } else {
                Tensor::<3>::from_data(burn::tensor::TensorData::new(b.clone(), b_shape), &device)
            };
            let got = to_vec_f32(ta.matmul(tb));
            let batch = ba.max(bb);
            assert_eq!(got.len(), batch * m * n, "{a_shape:?} x {b_shape:?}");
            let mut worst = 0.0f64;
            for x in 0..batch {
                let (xa, xb) = (x % ba, x % bb);
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = (0..k)
                            .map(|r| {
                                f64::from(a[xa * m * k + i * k + r])
                                    * f64::from(b[xb * k * n + r * n + j])
                            })
                            .sum();
                        let d = (f64::from(got[x * m * n + i * n + j]) - want).abs();
                        assert!(
                            d.is_finite(),
                            "{a_shape:?} x {b_shape:?}: element {x},{i},{j} unwritten"
                        );
                        worst = worst.max(d);
                    }
                }
            }
            assert!(worst < 1e-4, "{a_shape:?} x {b_shape:?}: error {worst}");
        };
        check([1, 300, 200], [1, 200, 100], false); // one matrix, gemm's threads
        check([8, 64, 96], [8, 96, 80], false); // a matmul per thread
        check([2, 160, 160], [2, 160, 160], false); // few large matrices
        check([6, 70, 64], [1, 64, 90], false); // broadcast right operand
        check([4, 64, 128], [4, 128, 64], true); // strided right operand
        check([3, 5, 0], [3, 0, 4], false); // empty inner dimension: zeros
    }

    /// Attention on the training device (autodiff over flex, `patches/burn-flex`'s strided
    /// kernel and its own backward, recorded as one operation by `patches/burn-autodiff`)
    /// against a plain f64 evaluation of softmax(scale · Q Kᵀ + causal mask) · V and of its
    /// gradients, on operands viewed through `swap_dims` as the model passes them, for the
    /// shapes that take different paths: rows not a multiple of the kernel's 32-row blocks,
    /// fewer queries than keys (a cache's offset), grouped key/value heads, no mask, one
    /// thread and many, and more queries than keys (rows that see no key give 0).
    #[test]
    fn attention_and_its_gradients_on_the_training_device_match_f64() {
        let device = Device::flex().autodiff();
        // [b, t, h, d] row-major data viewed as [b, h, t, d]: what `project` in `Block::forward` passes.
        let at = |x: &[f32],
                  [_, t, h, d]: [usize; 4],
                  (bi, hi, ti, di): (usize, usize, usize, usize)| {
            f64::from(x[((bi * t + ti) * h + hi) * d + di])
        };
        let check = |b: usize,
                     h: usize,
                     kvh: usize,
                     tq: usize,
                     tk: usize,
                     d: usize,
                     causal: bool| {
            let name = format!("b{b} h{h}/{kvh} tq{tq} tk{tk} d{d} causal {causal}");
            let (qs, ks, vs) = ([b, tq, h, d], [b, tk, kvh, d], [b, tk, kvh, d]);
            let (q, k, v, g) = (
                values(b * tq * h * d, 3),
                values(b * tk * kvh * d, 5),
                values(b * tk * kvh * d, 9),
                values(b * tq * h * d, 13),
            );
            let leaf = |x: &[f32], shape: [usize; 4]| {
                Tensor::<4>::from_data(burn::tensor::TensorData::new(x.to_vec(), shape), &device)
                    .require_grad()
            };
            let (tq_, tk_, tv_) = (leaf(&q, qs), leaf(&k, ks), leaf(&v, vs));
            let scale = 1.0 / (d as f64).sqrt();
            let out = attention(
                tq_.clone().swap_dims(1, 2),
                tk_.clone().swap_dims(1, 2),
                tv_.clone().swap_dims(1, 2),
                None,
                None,
                AttentionModuleOptions {
                    scale: Some(scale),
                    softcap: None,
                    is_causal: causal,
                },
            ); // [b, h, tq, d]
            let gt = Tensor::<4>::from_data(burn::tensor::TensorData::new(g.clone(), qs), &device)
                .swap_dims(1, 2);
            let grads = (out.clone() * gt).sum().backward();
            let got = to_vec_f32(out.swap_dims(1, 2)); // [b, tq, h, d]
            let got_dq = to_vec_f32(tq_.grad(&grads).expect("q is tracked"));
            let got_dk = to_vec_f32(tk_.grad(&grads).expect("k is tracked"));
            let got_dv = to_vec_f32(tv_.grad(&grads).expect("v is tracked"));

            let mut want = vec![0f64; got.len()];
            let (mut dq, mut dk, mut dv) = (
                vec![0f64; q.len()],
                vec![0f64; k.len()],
                vec![0f64; v.len()],
            );
            for bi in 0..b {
                for hi in 0..h {
                    let kh = hi / (h / kvh);
                    for i in 0..tq {
                        // Query i sees keys 0 ..= i + (tk − tq).
                        let seen = if causal {
                            (i as isize + tk as isize - tq as isize + 1).clamp(0, tk as isize)
                                as usize
                        } else {
                            tk
                        };
                        if seen == 0 {
                            continue;
                        }
                        let s: Vec<f64> = (0..seen)
                            .map(|j| {
                                scale
                                    * (0..d)
                                        .map(|x| {
                                            at(&q, qs, (bi, hi, i, x)) * at(&k, ks, (bi, kh, j, x))
                                        })
                                        .sum::<f64>()
                            })
                            .collect();
                        let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                        let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                        let sum: f64 = e.iter().sum();
                        let p: Vec<f64> = e.iter().map(|x| x / sum).collect();
                        let oi = |x: usize| ((bi * tq + i) * h + hi) * d + x;
                        let ki = |j: usize, x: usize| ((bi * tk + j) * kvh + kh) * d + x;
                        for x in 0..d {
                            want[oi(x)] =
                                (0..seen).map(|j| p[j] * at(&v, vs, (bi, kh, j, x))).sum();
                        }
                        let dp: Vec<f64> = (0..seen)
                            .map(|j| {
                                (0..d)
                                    .map(|x| f64::from(g[oi(x)]) * at(&v, vs, (bi, kh, j, x)))
                                    .sum()
                            })
                            .collect();
                        let dot: f64 = (0..seen).map(|j| p[j] * dp[j]).sum();
                        for j in 0..seen {
                            let ds = p[j] * (dp[j] - dot) * scale;
                            for x in 0..d {
                                dq[oi(x)] += ds * at(&k, ks, (bi, kh, j, x));
                                dk[ki(j, x)] += ds * at(&q, qs, (bi, hi, i, x));
                                dv[ki(j, x)] += p[j] * f64::from(g[oi(x)]);
                            }
                        }
                    }
                }
            }
            let worst = |a: &[f32], b: &[f64], what: &str| {
                assert_eq!(a.len(), b.len(), "{name}: {what} length");
                let w = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (f64::from(*x) - y).abs())
                    .fold(0.0, f64::max);
                assert!(w < 1e-5, "{name}: {what} error {w}");
            };
            worst(&got, &want, "output");
            worst(&got_dq, &dq, "dq");
            worst(&got_dk, &dk, "dk");
            worst(&got_dv, &dv, "dv");
        };
        check(2, 4, 4, 70, 70, 8, true); // 32-row blocks and a remainder, many threads
        check(1, 2, 2, 5, 5, 4, true); // one thread
        check(2, 2, 2, 3, 40, 8, true); // fewer queries than keys: a cache's offset
        check(2, 4, 2, 33, 33, 8, true); // grouped key/value heads
        check(2, 2, 2, 20, 30, 8, false); // no mask
        check(1, 2, 2, 40, 10, 4, true); // 30 rows see no key: output and gradients 0
    }

    /// Layer norm and its gradients on the training device (one autodiff operation with
    /// `patches/burn-flex`'s fused backward) against f64: the input's, gamma's and beta's
    /// gradients, over more rows than one of the backward's 64-row blocks (several blocks'
    /// gamma and beta sums, on rayon's threads) and over a few rows (one thread).
    #[test]
    fn layer_norm_and_its_gradients_on_the_training_device_match_f64() {
        let device = Device::flex().autodiff();
        let values = |n: usize, seed: u32, spread: f32| -> Vec<f32> {
            values(n, seed).into_iter().map(|v| v * spread).collect()
        };
        let check = |rows: usize, d: usize| {
            let eps = 1e-5;
            let (x, gamma, beta, g) = (
                values(rows * d, 3, 3.0),
                values(d, 5, 1.0),
                values(d, 7, 1.0),
                values(rows * d, 11, 1.0),
            );
            let t = |v: &[f32], shape: Vec<usize>| {
                Tensor::<2>::from_data(burn::tensor::TensorData::new(v.to_vec(), shape), &device)
            };
            let tx = t(&x, vec![rows, d]).require_grad();
            let tgamma =
                Tensor::<1>::from_data(burn::tensor::TensorData::new(gamma.clone(), [d]), &device)
                    .require_grad();
            let tbeta =
                Tensor::<1>::from_data(burn::tensor::TensorData::new(beta.clone(), [d]), &device)
                    .require_grad();
            let y = burn::tensor::module::layer_norm(
                tx.clone(),
                tgamma.clone(),
                Some(tbeta.clone()),
                eps,
            );
            let grads = (y.clone() * t(&g, vec![rows, d])).sum().backward();
            let got = to_vec_f32(y);
            let got_dx = to_vec_f32(tx.grad(&grads).expect("x is tracked"));
            let got_dgamma = to_vec_f32(tgamma.grad(&grads).expect("gamma is tracked"));
            let got_dbeta = to_vec_f32(tbeta.grad(&grads).expect("beta is tracked"));

            let (mut want, mut dx) = (vec![0f64; rows * d], vec![0f64; rows * d]);
            let (mut dgamma, mut dbeta) = (vec![0f64; d], vec![0f64; d]);
            for r in 0..rows {
                let xr: Vec<f64> = x[r * d..(r + 1) * d]
                    .iter()
                    .map(|&v| f64::from(v))
                    .collect();
                let gr: Vec<f64> = g[r * d..(r + 1) * d]
                    .iter()
                    .map(|&v| f64::from(v))
                    .collect();
                let mean = xr.iter().sum::<f64>() / d as f64;
                let var = xr.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d as f64;
                let rstd = 1.0 / (var + eps).sqrt();
                let xh: Vec<f64> = xr.iter().map(|v| (v - mean) * rstd).collect();
                let h: Vec<f64> = (0..d).map(|j| gr[j] * f64::from(gamma[j])).collect();
                let a = h.iter().sum::<f64>() / d as f64;
                let c = (0..d).map(|j| h[j] * xh[j]).sum::<f64>() / d as f64;
                for j in 0..d {
                    want[r * d + j] = xh[j] * f64::from(gamma[j]) + f64::from(beta[j]);
                    dx[r * d + j] = rstd * (h[j] - a - xh[j] * c);
                    dgamma[j] += gr[j] * xh[j];
                    dbeta[j] += gr[j];
                }
            }
            let check = |a: &[f32], b: &[f64], what: &str, tol: f64| {
                assert_eq!(a.len(), b.len(), "{rows}x{d}: {what} length");
                let w = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (f64::from(*x) - y).abs())
                    .fold(0.0, f64::max);
                assert!(w < tol, "{rows}x{d}: {what} error {w}");
            };
            check(&got, &want, "output", 1e-5);
            check(&got_dx, &dx, "dx", 1e-5);
            // Sums over the rows: the tolerance grows with their count.
            check(&got_dgamma, &dgamma, "dgamma", 1e-6 * rows as f64);
            check(&got_dbeta, &dbeta, "dbeta", 1e-6 * rows as f64);
        };
        check(1000, 128); // 16 blocks on rayon's threads
        check(3, 16); // one thread
    }

    /// Linear layers with a bias on the training device (`patches/burn-flex` adds the bias
    /// inside the product) against f64, with the operands the model passes: a 3-D input,
    /// the whole weight, and a column block of it with the matching slice of the bias
    /// (strided views of the fused `qkv`); and a transposed input, which takes burn's
    /// general path. Gradients of input, weight and bias too.
    #[test]
    fn linear_with_a_bias_on_the_training_device_matches_f64() {
        let device = Device::flex().autodiff();
        let (b, t, d_in, d_all) = (3, 50, 24, 36);
        let (x, w, bias, g) = (
            values(b * t * d_in, 3),
            values(d_in * d_all, 5),
            values(d_all, 7),
            values(b * t * d_all, 11),
        );
        let check = |cols: std::ops::Range<usize>, transposed: bool| {
            let name = format!("columns {cols:?}, transposed input {transposed}");
            let n = cols.len();
            let tx = if transposed {
                // Stored [b, d_in, t], viewed as [b, t, d_in].
                let mut xt = vec![0f32; x.len()];
                for bi in 0..b {
                    for ti in 0..t {
                        for j in 0..d_in {
                            xt[(bi * d_in + j) * t + ti] = x[(bi * t + ti) * d_in + j];
                        }
                    }
                }
                Tensor::<3>::from_data(burn::tensor::TensorData::new(xt, [b, d_in, t]), &device)
                    .require_grad()
            } else {
                Tensor::<3>::from_data(
                    burn::tensor::TensorData::new(x.clone(), [b, t, d_in]),
                    &device,
                )
                .require_grad()
            };
            let x_view = if transposed {
                tx.clone().swap_dims(1, 2)
            } else {
                tx.clone()
            };
            let tw = Tensor::<2>::from_data(
                burn::tensor::TensorData::new(w.clone(), [d_in, d_all]),
                &device,
            )
            .require_grad();
            let tb = Tensor::<1>::from_data(
                burn::tensor::TensorData::new(bias.clone(), [d_all]),
                &device,
            )
            .require_grad();
            let y = linear(
                x_view,
                tw.clone().narrow(1, cols.start, n),
                Some(tb.clone().narrow(0, cols.start, n)),
            ); // [b, t, n]
            let gy: Vec<f32> = (0..b * t)
                .flat_map(|r| g[r * d_all..r * d_all + n].to_vec())
                .collect();
            let grads = (y.clone()
                * Tensor::<3>::from_data(
                    burn::tensor::TensorData::new(gy.clone(), [b, t, n]),
                    &device,
                ))
            .sum()
            .backward();
            let got = to_vec_f32(y);
            // The input's gradient in [b, t, d_in] order, whichever way it was stored.
            let dx = tx.grad(&grads).expect("x is tracked");
            let got_dx = to_vec_f32(if transposed { dx.swap_dims(1, 2) } else { dx });
            let got_dw = to_vec_f32(tw.grad(&grads).expect("w is tracked"));
            let got_db = to_vec_f32(tb.grad(&grads).expect("bias is tracked"));
            let mut worst = [0f64; 4];
            let mut note = |i: usize, got: f32, want: f64| {
                worst[i] = worst[i].max((f64::from(got) - want).abs());
            };
            for r in 0..b * t {
                for (c, col) in cols.clone().enumerate() {
                    let want = f64::from(bias[col])
                        + (0..d_in)
                            .map(|j| f64::from(x[r * d_in + j]) * f64::from(w[j * d_all + col]))
                            .sum::<f64>();
                    note(0, got[r * n + c], want);
                }
                for j in 0..d_in {
                    let want: f64 = cols
                        .clone()
                        .enumerate()
                        .map(|(c, col)| f64::from(gy[r * n + c]) * f64::from(w[j * d_all + col]))
                        .sum();
                    note(1, got_dx[r * d_in + j], want);
                }
            }
            for j in 0..d_in {
                for col in 0..d_all {
                    let want: f64 = if cols.contains(&col) {
                        (0..b * t)
                            .map(|r| {
                                f64::from(x[r * d_in + j]) * f64::from(gy[r * n + col - cols.start])
                            })
                            .sum()
                    } else {
                        0.0
                    };
                    note(2, got_dw[j * d_all + col], want);
                }
            }
            for col in 0..d_all {
                let want: f64 = if cols.contains(&col) {
                    (0..b * t)
                        .map(|r| f64::from(gy[r * n + col - cols.start]))
                        .sum()
                } else {
                    0.0
                };
                note(3, got_db[col], want);
            }
            for (what, w) in ["output", "dx", "dw", "dbias"].iter().zip(worst) {
                assert!(w < 1e-4, "{name}: {what} error {w}");
            }
        };
        check(0..d_all, false); // the whole weight
        check(12..24, false); // a column block: strided weight and bias views
        check(24..36, true); // a transposed input: burn's general path
    }

    /// GELU and its gradient on the training device (autodiff over flex, with the
    /// vectorisable erf of `patches/burn-flex`) against exact GELU in f64.
    #[test]
    fn gelu_and_its_gradient_on_the_training_device_match_exact_gelu() {
        let device = Device::flex().autodiff();
        // 80,001 points on [-12, 12]: more than the 64 Ki elements from which the patch
        // computes GELU and its backward on every thread, so that path is the one tested.
        let xs: Vec<f32> = (-40_000..=40_000).map(|i| i as f32 * 3e-4).collect();
        let x = Tensor::<1>::from_data(
            burn::tensor::TensorData::new(xs.clone(), [xs.len()]),
            &device,
        )
        .require_grad();
        let y = gelu(x.clone());
        // A contiguous, non-uniform output gradient w (a plain sum's is a broadcast scalar).
        let ws: Vec<f32> = (0..xs.len()).map(|i| 1.0 + (i % 7) as f32 / 8.0).collect();
        let w = Tensor::<1>::from_data(
            burn::tensor::TensorData::new(ws.clone(), [ws.len()]),
            &device,
        );
        let grads = (y.clone() * w).sum().backward();
        let got: Vec<f32> = to_vec_f32(y);
        let dgot: Vec<f32> = to_vec_f32(x.grad(&grads).expect("x is tracked"))
            .iter()
            .zip(&ws)
            .map(|(d, w)| d / w)
            .collect();
        let erf = |v: f64| -> f64 {
            // Maclaurin series in f64. Beyond |v| = 4 its alternating terms (up to e^(v²))
            // cancel away f64's digits, and erf is within 2e-8 of ±1 there anyway.
            if v.abs() > 4.0 {
                return v.signum();
            }
            let (mut term, mut sum) = (v, v);
            for n in 1..400 {
                term *= -v * v / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        };
        let (mut worst, mut worst_grad) = (0.0f64, 0.0f64);
        for (i, &xi) in xs.iter().enumerate() {
            let v = f64::from(xi);
            let cdf = 0.5 * (1.0 + erf(v / std::f64::consts::SQRT_2));
            let pdf = (-0.5 * v * v).exp() / (2.0 * std::f64::consts::PI).sqrt();
            worst = worst.max((f64::from(got[i]) - v * cdf).abs());
            worst_grad = worst_grad.max((f64::from(dgot[i]) - (cdf + v * pdf)).abs());
        }
        assert!(worst < 2e-6, "GELU absolute error {worst}");
        assert!(
            worst_grad < 2e-6,
            "GELU gradient absolute error {worst_grad}"
        );
    }

    /// exp on the training device (flex's `float_exp`, the branch-free form of
    /// `patches/burn-flex`) against f64's exp: within 3e-7 relative wherever the result is a
    /// normal float, exactly 0 below ln(f32::MIN_POSITIVE) (the causal mask's -1e9 scores),
    /// +inf past ln(f32::MAX), NaN for NaN; its gradient is its value.
    #[test]
    fn exp_on_the_training_device_matches_exact_exp() {
        let device = Device::flex().autodiff();
        let mut xs: Vec<f32> = (-8800..=8870).map(|i| i as f32 / 100.0).collect();
        xs.extend([
            -87.336,
            -87.34,
            -100.0,
            -1.0e9,
            88.72,
            88.73,
            1.0e9,
            f32::NAN,
        ]);
        let x = Tensor::<1>::from_data(
            burn::tensor::TensorData::new(xs.clone(), [xs.len()]),
            &device,
        )
        .require_grad();
        let y = x.clone().exp();
        let grads = y.clone().sum().backward();
        let got: Vec<f32> = to_vec_f32(y);
        let dgot: Vec<f32> = to_vec_f32(x.grad(&grads).expect("x is tracked"));
        let mut worst = 0.0f64;
        for (&xi, &yi) in xs.iter().zip(&got) {
            let want = f64::from(xi).exp();
            if xi.is_nan() {
                assert!(yi.is_nan(), "exp(NaN) = {yi}");
            } else if want < f64::from(f32::MIN_POSITIVE) {
                assert_eq!(yi, 0.0, "exp({xi})");
            } else if want > f64::from(f32::MAX) {
                assert_eq!(yi, f32::INFINITY, "exp({xi})");
            } else {
                worst = worst.max((f64::from(yi) - want).abs() / want);
            }
        }
        assert!(worst < 3e-7, "exp relative error {worst}");
        for (i, (&g, &yi)) in dgot.iter().zip(&got).enumerate() {
            if !xs[i].is_nan() && yi.is_finite() {
                assert_eq!(g, yi, "d exp/dx at {}", xs[i]);
            }
        }
    }

    #[test]
    fn cached_and_uncached_decoding_give_the_same_logits() {
        let config = tiny();
        let device = Device::flex();
        device.seed(7);
        let policy = Policy::new(&config, &device);
        let captions = caption_batch(
            &["a fast reel", "a slow air in e minor, flute"],
            &config,
            &device,
        );
        let seq: [[u32; 6]; 2] = [[3, 1, 4, 1, 5, 9], [2, 7, 1, 8, 2, 8]];

        let mut cache = KvCache::new(policy.n_layers());
        let (mut cached, _) = policy.start(&captions, &mut cache);
        for t in 0..=seq[0].len() {
            let prefix: Vec<u32> = seq.iter().flat_map(|s| s[..t].iter().copied()).collect();
            let uncached =
                policy.next_logits_uncached(&captions, token_tensor(&prefix, 2, t, &device));
            let (a, b) = (to_vec_f32(cached.clone()), to_vec_f32(uncached));
            assert!(
                max_abs_diff(&a, &b) < 1e-4,
                "step {t}: cached and uncached logits differ"
            );
            if t < seq[0].len() {
                let next = Tensor::<1, Int>::from_data(
                    burn::tensor::TensorData::new(
                        vec![i64::from(seq[0][t]), i64::from(seq[1][t])],
                        [2],
                    ),
                    &device,
                );
                cached = policy.step(next, &mut cache).0;
            }
        }
        assert_eq!(cache.len(), seq[0].len() + 1);
    }

    #[test]
    fn full_forward_rows_match_incremental_values_and_logits() {
        let config = tiny();
        let device = Device::flex();
        device.seed(3);
        let policy = Policy::new(&config, &device);
        let captions = caption_batch(&["jig"], &config, &device);
        let tokens = [4u32, 0, 10];
        let full = policy.forward(&captions, token_tensor(&tokens, 1, 3, &device));
        let logits = to_vec_f32(full.logits);
        let values = to_vec_f32(full.values);
        let mut cache = KvCache::new(policy.n_layers());
        let (l0, v0) = policy.start(&captions, &mut cache);
        assert!(max_abs_diff(&to_vec_f32(l0), &logits[..11]) < 1e-4);
        assert!((to_vec_f32(v0)[0] - values[0]).abs() < 1e-4);
        let prev =
            Tensor::<1, Int>::from_data(burn::tensor::TensorData::new(vec![4i64], [1]), &device);
        let (l1, v1) = policy.step(prev, &mut cache);
        assert!(max_abs_diff(&to_vec_f32(l1), &logits[11..22]) < 1e-4);
        assert!((to_vec_f32(v1)[0] - values[1]).abs() < 1e-4);
    }

    #[test]
    fn captions_change_the_distribution() {
        let config = tiny();
        let device = Device::flex();
        device.seed(1);
        let policy = Policy::new(&config, &device);
        let captions = caption_batch(&["reel", "waltz in three"], &config, &device);
        let empty = Tensor::<2, Int>::zeros([2, 0], &device);
        let rows = to_vec_f32(policy.next_logits_uncached(&captions, empty));
        assert!(max_abs_diff(&rows[..11], &rows[11..]) > 1e-3);
    }

    #[test]
    fn parameters_round_trip_through_bytes() {
        let config = tiny();
        let device = Device::flex();
        device.seed(5);
        let policy = Policy::new(&config, &device);
        let bytes = crate::melody::params::encode_policy(&policy).unwrap();
        let restored = crate::melody::params::decode_policy(&config, &bytes, &device).unwrap();
        let captions = caption_batch(&["air"], &config, &device);
        let t = token_tensor(&[1, 2, 3], 1, 3, &device);
        let a = to_vec_f32(policy.forward(&captions, t.clone()).logits);
        let b = to_vec_f32(restored.forward(&captions, t).logits);
        assert_eq!(a, b);
        let mut other = config.clone();
        other.d_model = 32;
        assert!(crate::melody::params::decode_policy(&other, &bytes, &device).is_err());
        assert!(
            crate::melody::params::decode_policy(&config, &bytes[..bytes.len() / 2], &device)
                .is_err()
        );
    }
}
