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
//! where `cond(c)` is the caption embedding (see [`crate::caption`]) and
//! `s_t = (caption, a_0 .. a_{t-1})`. The same blocks serve the learner's full-sequence
//! forward (causal mask) and the actors' incremental decoding (a per-layer key/value cache,
//! one new position per step, no recomputation of the prefix).
//!
//! This module does no IO and knows nothing of gRPC.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Bool, Device, Int, Tensor};

use crate::config::PolicyConfig;

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

        let qkv = self.qkv.forward(self.ln1.forward(x.clone())); // [B, new, 3d]
        let split = |i: usize| {
            qkv.clone()
                .narrow(2, i * d_model, d_model)
                .reshape([batch, new, n_heads, d_head])
                .swap_dims(1, 2) // [B, H, new, Dh]
        };
        let (q, mut k, mut v) = (split(0), split(1), split(2));

        if let Some(slot) = cache {
            if let Some((k_past, v_past)) = slot.take() {
                k = Tensor::cat(vec![k_past, k], 2); // [B, H, past + new, Dh]
                v = Tensor::cat(vec![v_past, v], 2);
            }
            *slot = Some((k.clone(), v.clone()));
        }
        let total = k.dims()[2];
        let past = total - new;

        // The scale goes on the queries ([B, H, new, Dh]), not on the scores
        // ([B, H, new, total]): the same product, a quarter of the elementwise work forward
        // and backward at the default shape.
        let q = q * (1.0 / (d_head as f64).sqrt());
        let scores = q.matmul(k.swap_dims(2, 3)); // [B, H, new, total]
        let scores = if new > 1 {
            // Query i (absolute position past + i) may see keys 0 ..= past + i. The mask is
            // an additive bias of -1e9 on the keys it hides, built once at [new, total] and
            // broadcast: the softmax gives them exactly 0 (as a fill would), the add's
            // backward is the identity, and it runs as one vectorised broadcast pass where
            // a broadcast boolean fill takes flex's per-element path.
            let mask = Tensor::<2, Bool>::tril_mask([new, total], past as i64, &x.device());
            let bias = Tensor::<2>::zeros([new, total], &x.device())
                .mask_fill(mask, -1.0e9)
                .unsqueeze_dims::<4>(&[0, 1]);
            scores + bias
        } else {
            scores
        };
        let attn = softmax(scores, 3).matmul(v); // [B, H, new, Dh]
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
                let values: Vec<f32> = crate::policy::to_vec_f32(b)
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
    /// ([`crate::policy::Engine`]), which checks them against `config`.
    pub(crate) fn engine_weights(&self, config: &PolicyConfig) -> crate::policy::engine::Weights {
        use crate::policy::engine::{BlockWeights, LinearWeights, NormWeights, Weights};
        use crate::policy::to_vec_f32;
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
    use crate::policy::{caption_batch, to_vec_f32, token_tensor};

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
        let values = |n: usize, seed: u32| -> Vec<f32> {
            (0..n)
                .map(|i| {
                    (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 2001) as f32 / 1000.0 - 1.0
                })
                .collect()
        };
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
        let bytes = crate::policy::params::encode_policy(&policy).unwrap();
        let restored = crate::policy::params::decode_policy(&config, &bytes, &device).unwrap();
        let captions = caption_batch(&["air"], &config, &device);
        let t = token_tensor(&[1, 2, 3], 1, 3, &device);
        let a = to_vec_f32(policy.forward(&captions, t.clone()).logits);
        let b = to_vec_f32(restored.forward(&captions, t).logits);
        assert_eq!(a, b);
        let mut other = config.clone();
        other.d_model = 32;
        assert!(crate::policy::params::decode_policy(&other, &bytes, &device).is_err());
        assert!(
            crate::policy::params::decode_policy(&config, &bytes[..bytes.len() / 2], &device)
                .is_err()
        );
    }
}
