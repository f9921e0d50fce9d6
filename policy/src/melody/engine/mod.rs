//! The rollout engine: the actors' inference path, built for decoding.
//!
//! The learner trains the [`Policy`](super::Policy) with burn; the actors sample from the
//! same parameters with this engine, as large RLHF systems sample with an inference engine
//! and train with another. It computes exactly the policy's function (a test holds its
//! logits to the burn model's at every position of a sequence) but is shaped for one new
//! position per step:
//!
//! - weights are copied once per parameter version into plain row-major `f32` buffers;
//! - each decoder owns a key/value cache preallocated for the whole sequence and written in
//!   place (burn's path rebuilds the cache with `cat` at every step, copying the past);
//! - every buffer a step needs is allocated when the decoder is made, none per token;
//! - matrix products run over the whole batch of rows at once (`gemm`), attention, layer
//!   norm, GELU and softmax are single passes over contiguous rows;
//! - the batch is split into contiguous groups of at most [`GROUP_ROWS`] sequences, handed
//!   in turn to one thread per core, each group decoded to the end independently
//!   (sequences do not interact), so both cores work without a barrier per token.
//!
//! Simplifications, named: CPU only (a GPU actor uses burn, `actor.engine = "burn"`), f32
//! only, and the exponential and error function are polynomial approximations (errors
//! below 3e-7 relative and 1e-6 absolute, see `kernels`) rather than libm's.

mod attention;
pub(crate) mod kernels;

use std::sync::Arc;

use super::sampling::{Sampled, sample_row};
use crate::melody::caption;
use musicrl_config::PolicyConfig;

/// burn's `LayerNormConfig` default, which the policy uses.
pub(crate) const LAYER_NORM_EPS: f32 = 1e-5;

/// A linear layer, `y = x · w + b` with `w` row-major `[d_in, d_out]` (burn's layout).
#[derive(Debug, Clone)]
pub(crate) struct LinearWeights {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub d_in: usize,
    pub d_out: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct NormWeights {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

#[derive(Debug, Clone)]
pub(crate) struct BlockWeights {
    pub ln1: NormWeights,
    pub qkv: LinearWeights,
    pub attn_out: LinearWeights,
    pub ln2: NormWeights,
    pub mlp_in: LinearWeights,
    pub mlp_out: LinearWeights,
}

/// Every parameter of a policy, as plain buffers.
#[derive(Debug, Clone)]
pub(crate) struct Weights {
    pub config: PolicyConfig,
    /// `[vocab, d]`
    pub token_emb: Vec<f32>,
    /// `[max_tokens, d]`
    pub pos_emb: Vec<f32>,
    /// `[caption_buckets, d]`
    pub caption_emb: Vec<f32>,
    pub cond_proj: LinearWeights,
    pub blocks: Vec<BlockWeights>,
    pub ln_f: NormWeights,
    pub lm_head: LinearWeights,
    pub value_head: LinearWeights,
}

impl Weights {
    /// Checks every buffer against the configuration's shapes.
    fn check(&self) -> Result<(), String> {
        let c = &self.config;
        let d = c.d_model;
        let len = |name: &str, got: usize, want: usize| {
            if got == want {
                Ok(())
            } else {
                Err(format!(
                    "{name} has {got} values, the configuration needs {want}"
                ))
            }
        };
        let linear = |name: &str, l: &LinearWeights, d_in: usize, d_out: usize| {
            if l.d_in != d_in || l.d_out != d_out {
                return Err(format!(
                    "{name} is {}x{}, the configuration needs {d_in}x{d_out}",
                    l.d_in, l.d_out
                ));
            }
            len(name, l.w.len(), d_in * d_out)?;
            len(&format!("{name}.bias"), l.b.len(), d_out)
        };
        let norm = |name: &str, n: &NormWeights| {
            len(name, n.gamma.len(), d)?;
            len(&format!("{name}.beta"), n.beta.len(), d)
        };
        if d == 0 || c.n_heads == 0 || !d.is_multiple_of(c.n_heads) {
            return Err(format!(
                "d_model {d} is not a multiple of n_heads {}",
                c.n_heads
            ));
        }
        len("token_emb", self.token_emb.len(), c.vocab_size * d)?;
        len("pos_emb", self.pos_emb.len(), c.max_tokens * d)?;
        len("caption_emb", self.caption_emb.len(), c.caption_buckets * d)?;
        linear("cond_proj", &self.cond_proj, d, d)?;
        len("blocks", self.blocks.len(), c.n_layers)?;
        for (i, b) in self.blocks.iter().enumerate() {
            norm(&format!("blocks.{i}.ln1"), &b.ln1)?;
            linear(&format!("blocks.{i}.qkv"), &b.qkv, d, 3 * d)?;
            linear(&format!("blocks.{i}.attn_out"), &b.attn_out, d, d)?;
            norm(&format!("blocks.{i}.ln2"), &b.ln2)?;
            linear(&format!("blocks.{i}.mlp_in"), &b.mlp_in, d, c.d_ff)?;
            linear(&format!("blocks.{i}.mlp_out"), &b.mlp_out, c.d_ff, d)?;
        }
        norm("ln_f", &self.ln_f)?;
        linear("lm_head", &self.lm_head, d, c.vocab_size)?;
        linear("value_head", &self.value_head, d, 1)
    }
}

/// The rollout engine for one parameter version. Cheap to clone (the weights are shared).
#[derive(Debug, Clone)]
pub struct Engine {
    weights: Arc<Weights>,
    threads: usize,
}

impl Engine {
    /// An engine computing `policy` (whose configuration is `config`), decoding on
    /// `threads` threads (0: every core this process may use).
    pub fn from_policy(
        policy: &super::Policy,
        config: &PolicyConfig,
        threads: usize,
    ) -> crate::Result<Self> {
        let weights = policy.engine_weights(config);
        weights.check().map_err(|why| {
            crate::PolicyError::BadParameters(format!(
                "the rollout engine cannot load this policy: {why}"
            ))
        })?;
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        Ok(Self {
            weights: Arc::new(weights),
            threads,
        })
    }

    /// The policy configuration this engine computes.
    pub fn config(&self) -> &PolicyConfig {
        &self.weights.config
    }

    /// Threads a batch is split over.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Logits `[T, vocab]` and values `[T]` of one teacher-forced sequence, position by
    /// position through the cache: row t is the distribution of a_t given
    /// s_t = (caption, a_0 .. a_{t-1}), the rows of [`Policy::forward`](super::Policy::forward).
    pub fn teacher_forced(&self, caption: &str, tokens: &[u32]) -> (Vec<f32>, Vec<f32>) {
        let w = &*self.weights;
        let vocab = w.config.vocab_size;
        let t = tokens.len().min(w.config.max_tokens);
        let mut dec = Decoder::new(w, 1, t.max(1));
        let mut logits = Vec::with_capacity(t * vocab);
        let mut values = Vec::with_capacity(t);
        dec.start(&[caption]);
        for i in 0..t {
            logits.extend_from_slice(&dec.logits);
            values.push(dec.values[0]);
            if i + 1 < t {
                dec.step(&tokens[i..=i]);
            }
        }
        (logits, values)
    }

    /// Samples one sequence per caption, of at most `len` tokens (capped at the policy's
    /// `max_tokens`), at `temperature`. The draw of token t of row b uses
    /// `uniforms[t * captions.len() + b]` (`uniforms` holds `len × batch` numbers in [0, 1),
    /// see [`super::sampling::Sampler`]), so the result does not depend on how the batch
    /// is split over threads. With `stop_at_end`, a sequence stops after its first
    /// `end_token` (which it keeps); without it every sequence runs `len` tokens.
    ///
    /// # Panics
    /// If `uniforms` is shorter than `len × captions.len()`.
    pub fn sample<S: AsRef<str> + Sync>(
        &self,
        captions: &[S],
        len: usize,
        temperature: f32,
        uniforms: &[f64],
        stop_at_end: bool,
    ) -> Vec<Sampled> {
        let batch = captions.len();
        let len = len.min(self.weights.config.max_tokens);
        assert!(
            uniforms.len() >= len * batch,
            "sample: {} uniforms for {len} steps x {batch} rows",
            uniforms.len()
        );
        if batch == 0 || len == 0 {
            return vec![
                Sampled {
                    tokens: Vec::new(),
                    logprobs: Vec::new(),
                };
                batch
            ];
        }
        // Groups of at most GROUP_ROWS sequences, at least one per thread, handed out in
        // turn to `threads` workers, each decoding its group to the end with one decoder
        // it reuses.
        let per = GROUP_ROWS.min(batch.div_ceil(self.threads.max(1)));
        let starts: Vec<usize> = (0..batch).step_by(per).collect();
        let workers = self.threads.clamp(1, starts.len());
        let next = std::sync::atomic::AtomicUsize::new(0);
        let work = || {
            let mut dec = Decoder::new(&self.weights, per, len);
            let mut done = Vec::new();
            loop {
                let g = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&lo) = starts.get(g) else { break };
                let hi = (lo + per).min(batch);
                let rows = decode_group(
                    &mut dec,
                    &captions[lo..hi],
                    lo,
                    batch,
                    temperature,
                    uniforms,
                    stop_at_end,
                );
                done.push((g, rows));
            }
            done
        };
        let mut groups = if workers == 1 {
            work()
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = (1..workers).map(|_| s.spawn(work)).collect();
                let mut all = work();
                for h in handles {
                    all.extend(h.join().expect("a decoding thread panicked"));
                }
                all
            })
        };
        groups.sort_by_key(|(g, _)| *g);
        groups.into_iter().flat_map(|(_, rows)| rows).collect()
    }
}

/// Most sequences one decoder holds, so the rows of its weight products. Measured
/// (`musicrl bench`, default policy, 2 cores): on an Intel Xeon with AVX-512 (2026-12-03,
/// CPU seconds of a batch-64 run over four alternating rounds) groups of 8 took 2.33 s, 16
/// took 2.00 s and 32 took 1.98 s; on an AMD EPYC with AVX-512 (2026-12-05, six
/// alternating rounds) batch 64 ran at 151,700 tokens/s in groups of 16 against 139,600 in
/// groups of 32 (5 of 6 rounds faster). From 16 rows gemm's microkernels already run at the
/// machine's f32 peak, so more rows buy nothing there, while a group's key/value cache
/// (256 KiB a sequence) grows past what the caches hold: 4 MiB at 16 rows, 8 MiB at 32,
/// and attention streams all of it every step.
pub const GROUP_ROWS: usize = 16;

/// Decodes rows `first .. first + captions.len()` of a batch of `batch` rows with `dec`
/// (reset for them), for up to the decoder's capacity in tokens.
fn decode_group<S: AsRef<str>>(
    dec: &mut Decoder<'_>,
    captions: &[S],
    first: usize,
    batch: usize,
    temperature: f32,
    uniforms: &[f64],
    stop_at_end: bool,
) -> Vec<Sampled> {
    let rows = captions.len();
    let len = dec.cap;
    let vocab = dec.w.config.vocab_size;
    let end = dec.w.config.end_token;
    let mut out = vec![
        Sampled {
            tokens: Vec::with_capacity(len),
            logprobs: Vec::with_capacity(len),
        };
        rows
    ];
    dec.start(captions);
    let mut done = vec![false; rows];
    let mut next = vec![end; rows];
    for t in 0..len {
        for r in 0..rows {
            let row = &dec.logits[r * vocab..(r + 1) * vocab];
            let (token, logp) = sample_row(row, temperature, uniforms[t * batch + first + r]);
            if done[r] {
                next[r] = end;
                continue;
            }
            out[r].tokens.push(token);
            out[r].logprobs.push(logp);
            done[r] = stop_at_end && token == end;
            next[r] = token;
        }
        if t + 1 == len || done.iter().all(|d| *d) {
            break;
        }
        dec.step(&next);
    }
    out
}

/// The decoding state of a group of rows: the cache and every scratch buffer, allocated
/// once for `cap` positions.
struct Decoder<'w> {
    w: &'w Weights,
    /// The attention kernels' instruction set.
    isa: attention::Isa,
    /// Rows the buffers hold.
    max_rows: usize,
    /// Rows of the group being decoded (<= max_rows).
    rows: usize,
    cap: usize,
    /// Positions already fed.
    len: usize,
    /// Residual stream `[rows, d]`.
    x: Vec<f32>,
    /// Normalised input of a sublayer `[rows, d]`.
    h: Vec<f32>,
    /// `[rows, 3d]`
    qkv: Vec<f32>,
    /// Attention output before its projection `[rows, d]`.
    attn: Vec<f32>,
    /// `[rows, d_ff]`
    ff: Vec<f32>,
    /// Blocks of [`attention::KEY_TILE`] positions in the key cache: `cap` rounded up, so
    /// every pass of the score kernel is a full one (the lanes past the newest position
    /// are computed and not used).
    key_blocks: usize,
    /// `[key_blocks * KEY_TILE]` one query's scores over the past.
    scores: Vec<f32>,
    /// Per layer, `[rows, heads, key_blocks, d_head, KEY_TILE]`: each block of positions
    /// transposed, so a block's scores are `d_head` passes along one contiguous tile.
    keys: Vec<Vec<f32>>,
    /// Per layer, `[rows, heads, cap, d_head]`.
    values_cache: Vec<Vec<f32>>,
    /// `[rows, vocab]` the logits of the newest position.
    logits: Vec<f32>,
    /// `[rows]` the values of the newest position.
    values: Vec<f32>,
}

impl<'w> Decoder<'w> {
    fn new(w: &'w Weights, rows: usize, cap: usize) -> Self {
        let c = &w.config;
        let d = c.d_model;
        let cache = rows * cap * d;
        let key_blocks = cap.div_ceil(attention::KEY_TILE);
        Self {
            w,
            isa: attention::Isa::detect(),
            max_rows: rows,
            rows,
            cap,
            len: 0,
            x: vec![0.0; rows * d],
            h: vec![0.0; rows * d],
            qkv: vec![0.0; rows * 3 * d],
            attn: vec![0.0; rows * d],
            ff: vec![0.0; rows * c.d_ff],
            key_blocks,
            scores: vec![0.0; key_blocks * attention::KEY_TILE],
            keys: (0..c.n_layers)
                .map(|_| vec![0.0; rows * d * key_blocks * attention::KEY_TILE])
                .collect(),
            values_cache: (0..c.n_layers).map(|_| vec![0.0; cache]).collect(),
            logits: vec![0.0; rows * c.vocab_size],
            values: vec![0.0; rows],
        }
    }

    /// Position 0 of a new group of `captions.len()` rows: the caption condition (masked
    /// mean of word embeddings, projected).
    fn start<S: AsRef<str>>(&mut self, captions: &[S]) {
        let c = &self.w.config;
        let d = c.d_model;
        assert!(
            captions.len() <= self.max_rows,
            "decoder holds {} rows",
            self.max_rows
        );
        self.rows = captions.len();
        self.h.fill(0.0);
        for (r, caption) in captions.iter().enumerate() {
            let ids = caption::tokenize_with(
                &c.caption_encoder,
                caption.as_ref(),
                c.caption_buckets,
                c.max_caption_words,
            );
            let mean = &mut self.h[r * d..(r + 1) * d];
            for &id in &ids {
                let row = &self.w.caption_emb[id as usize * d..(id as usize + 1) * d];
                kernels::axpy(mean, 1.0, row);
            }
            // burn: sum / clamp_min(count, 1).
            let inv = 1.0 / (ids.len().max(1) as f32);
            mean.iter_mut().for_each(|v| *v *= inv);
        }
        let p = &self.w.cond_proj;
        kernels::fill_rows(&mut self.x[..self.rows * d], &p.b);
        kernels::matmul(self.rows, d, d, &self.h, &p.w, &mut self.x, true);
        self.len = 0;
        self.forward_position();
    }

    /// Feeds one token per row at the next position.
    fn step(&mut self, tokens: &[u32]) {
        let d = self.w.config.d_model;
        for (r, &tok) in tokens.iter().enumerate() {
            let t = tok as usize;
            self.x[r * d..(r + 1) * d].copy_from_slice(&self.w.token_emb[t * d..(t + 1) * d]);
        }
        self.forward_position();
    }

    /// Runs the blocks and heads on `x` (the embeddings at position `len`), fills
    /// `logits` and `values`, and advances `len`. On a CPU with AVX2 and FMA the loops are
    /// compiled for them (chosen at run time) and attention runs its AVX2/FMA kernels
    /// ([`attention::Isa`]): results differ from other CPUs' in the last bits, as gemm's
    /// products do.
    fn forward_position(&mut self) {
        #[cfg(target_arch = "x86_64")]
        {
            if self.isa.avx2_fma() {
                self.forward_position_avx2();
                return;
            }
        }
        self.forward_position_portable();
    }

    #[cfg(target_arch = "x86_64")]
    #[allow(unsafe_code)]
    fn forward_position_avx2(&mut self) {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn run(d: &mut Decoder<'_>) {
            d.forward_position_portable();
        }
        // SAFETY: `isa.avx2_fma()` holds only where the CPU has AVX2 and FMA.
        unsafe { run(self) }
    }

    #[inline(always)]
    fn forward_position_portable(&mut self) {
        let w = self.w;
        let c = &w.config;
        let (d, rows, pos) = (c.d_model, self.rows, self.len);
        assert!(
            pos < self.cap,
            "decoder full: {pos} positions of {}",
            self.cap
        );
        let rd = rows * d;
        kernels::add_rows(&mut self.x[..rd], &w.pos_emb[pos * d..(pos + 1) * d]);
        let heads = c.n_heads;
        let dh = d / heads;
        let scale = 1.0 / (dh as f32).sqrt();
        for (layer, b) in w.blocks.iter().enumerate() {
            // Attention.
            kernels::layer_norm(
                &self.x[..rd],
                &b.ln1.gamma,
                &b.ln1.beta,
                LAYER_NORM_EPS,
                &mut self.h[..rd],
            );
            kernels::fill_rows(&mut self.qkv[..3 * rd], &b.qkv.b);
            kernels::matmul(rows, d, 3 * d, &self.h, &b.qkv.w, &mut self.qkv, true);
            let (keys, vals) = (&mut self.keys[layer], &mut self.values_cache[layer]);
            const TILE: usize = attention::KEY_TILE;
            let cap = self.cap;
            let head_keys = self.key_blocks * dh * TILE;
            let seen = pos + 1;
            let blocks = seen.div_ceil(TILE);
            let (block, lane) = (pos / TILE, pos % TILE);
            for r in 0..rows {
                let qkv = &self.qkv[r * 3 * d..(r + 1) * 3 * d];
                for hd in 0..heads {
                    // Keys in transposed blocks [key_blocks, d_head, KEY_TILE].
                    let kbase = (r * heads + hd) * head_keys;
                    let kt = &mut keys[kbase..kbase + head_keys];
                    let at = block * dh * TILE + lane;
                    for (j, &k) in qkv[d + hd * dh..d + (hd + 1) * dh].iter().enumerate() {
                        kt[at + j * TILE] = k;
                    }
                    // Values [cap, d_head].
                    let vbase = (r * heads + hd) * cap * dh;
                    let at = vbase + pos * dh;
                    vals[at..at + dh].copy_from_slice(&qkv[2 * d + hd * dh..2 * d + (hd + 1) * dh]);
                    let q = &qkv[hd * dh..(hd + 1) * dh];
                    let scores = &mut self.scores[..blocks * TILE];
                    attention::scores_tiled(self.isa, q, scale, kt, scores);
                    let scores = &mut scores[..seen];
                    kernels::softmax_in_place(scores);
                    attention::weighted_rows(
                        self.isa,
                        scores,
                        &vals[vbase..vbase + seen * dh],
                        &mut self.attn[r * d + hd * dh..r * d + (hd + 1) * dh],
                    );
                }
            }
            kernels::add_rows(&mut self.x[..rd], &b.attn_out.b);
            kernels::matmul(rows, d, d, &self.attn, &b.attn_out.w, &mut self.x, true);
            // MLP.
            kernels::layer_norm(
                &self.x[..rd],
                &b.ln2.gamma,
                &b.ln2.beta,
                LAYER_NORM_EPS,
                &mut self.h[..rd],
            );
            kernels::fill_rows(&mut self.ff[..rows * c.d_ff], &b.mlp_in.b);
            kernels::matmul(rows, d, c.d_ff, &self.h, &b.mlp_in.w, &mut self.ff, true);
            kernels::gelu_in_place(&mut self.ff[..rows * c.d_ff]);
            kernels::add_rows(&mut self.x[..rd], &b.mlp_out.b);
            kernels::matmul(rows, c.d_ff, d, &self.ff, &b.mlp_out.w, &mut self.x, true);
        }
        kernels::layer_norm(
            &self.x[..rd],
            &w.ln_f.gamma,
            &w.ln_f.beta,
            LAYER_NORM_EPS,
            &mut self.h[..rd],
        );
        kernels::fill_rows(&mut self.logits[..rows * c.vocab_size], &w.lm_head.b);
        kernels::matmul(
            rows,
            d,
            c.vocab_size,
            &self.h,
            &w.lm_head.w,
            &mut self.logits,
            true,
        );
        for r in 0..rows {
            self.values[r] =
                kernels::dot(&self.h[r * d..(r + 1) * d], &w.value_head.w) + w.value_head.b[0];
        }
        self.len += 1;
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;

    use super::*;
    use crate::melody::sampling::Sampler;
    use crate::melody::{Policy, caption_batch, to_vec_f32, token_tensor};

    fn tiny() -> PolicyConfig {
        PolicyConfig {
            vocab_size: 11,
            max_tokens: 12,
            d_model: 16,
            n_heads: 2,
            n_layers: 2,
            d_ff: 32,
            caption_buckets: 64,
            max_caption_words: 8,
            ..PolicyConfig::default()
        }
    }

    /// The engine's logits and values equal the training model's full forward at every
    /// position of a sequence, to 2e-5 (f32 rounding of a different summation order and
    /// of the exp/erf approximations).
    #[test]
    fn engine_logits_equal_the_training_model_at_every_position() {
        // The tiny policy, and one with the default policy's head width (32, the AVX2
        // attention kernels' full width) over 70 positions (three key tiles).
        let wide = PolicyConfig {
            max_tokens: 70,
            d_model: 64,
            n_heads: 2,
            d_ff: 64,
            ..tiny()
        };
        let long: Vec<u32> = (0..70u32).map(|i| (i * 7 + 3) % 11).collect();
        let cases: [(PolicyConfig, Vec<(&str, Vec<u32>)>); 2] = [
            (
                tiny(),
                vec![
                    (
                        "a lively reel in D major",
                        vec![3u32, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8],
                    ),
                    ("", vec![7u32, 0, 10]),
                    ("air", vec![2u32]),
                ],
            ),
            (
                wide,
                vec![("a slow air", long.clone()), ("jig", long[..33].to_vec())],
            ),
        ];
        for (config, sequences) in cases {
            check_logits(&config, &sequences);
        }
    }

    fn check_logits(config: &PolicyConfig, sequences: &[(&str, Vec<u32>)]) {
        let config = config.clone();
        let device = Device::flex();
        device.seed(11);
        let policy = Policy::new(&config, &device);
        let engine = Engine::from_policy(&policy, &config, 1).unwrap();
        for (caption, tokens) in sequences {
            let caption = *caption;
            let t = tokens.len();
            let full = policy.forward(
                &caption_batch(&[caption], &config, &device),
                token_tensor(tokens, 1, t, &device),
            );
            let (want_l, want_v) = (to_vec_f32(full.logits), to_vec_f32(full.values));
            let (got_l, got_v) = engine.teacher_forced(caption, tokens);
            assert_eq!(got_l.len(), t * config.vocab_size);
            for (i, (a, b)) in got_l.iter().zip(&want_l).enumerate() {
                assert!(
                    (a - b).abs() < 2e-5,
                    "{caption:?}: logit {i} (position {}) differs: {a} vs {b}",
                    i / config.vocab_size
                );
            }
            for (i, (a, b)) in got_v.iter().zip(&want_v).enumerate() {
                assert!(
                    (a - b).abs() < 2e-5,
                    "{caption:?}: value {i} differs: {a} vs {b}"
                );
            }
        }
    }

    /// For the same seed, the engine draws the same sequences as burn's cached sampler, on
    /// one thread or split over several, in one group per thread or in many.
    #[test]
    fn engine_sampling_matches_the_burn_sampler_whatever_the_split() {
        let config = PolicyConfig {
            end_token: 0,
            ..tiny()
        };
        let device = Device::flex();
        device.seed(4);
        let policy = Policy::new(&config, &device);
        let captions = ["reel", "a slow air in e minor", "jig", "march", "waltz"];
        let want = Sampler::new(9, 1.0).sample(&policy, &config, &captions, 12, &device);
        for threads in [1, 3] {
            let engine = Engine::from_policy(&policy, &config, threads).unwrap();
            let got = Sampler::new(9, 1.0).sample_engine(&engine, &captions, 12);
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.tokens, w.tokens, "{threads} threads");
                for (a, b) in g.logprobs.iter().zip(&w.logprobs) {
                    assert!((a - b).abs() < 1e-5);
                }
            }
        }
        // More rows than two threads' groups hold: each thread decodes several groups with
        // one decoder it resets between them, and the last group is a short one.
        let many: Vec<String> = (0..2 * GROUP_ROWS + 3)
            .map(|i| captions[i % captions.len()].repeat(1 + i % 3))
            .collect();
        let want = Sampler::new(5, 1.0).sample(&policy, &config, &many, 12, &device);
        for threads in [1, 2] {
            let engine = Engine::from_policy(&policy, &config, threads).unwrap();
            let got = Sampler::new(5, 1.0).sample_engine(&engine, &many, 12);
            assert_eq!(got.len(), want.len());
            for (row, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.tokens, w.tokens, "{threads} threads, row {row}");
                for (a, b) in g.logprobs.iter().zip(&w.logprobs) {
                    assert!((a - b).abs() < 1e-5, "{threads} threads, row {row}");
                }
            }
        }
        // Without stopping at END every row runs the full length.
        let engine = Engine::from_policy(&policy, &config, 2).unwrap();
        let u = vec![0.5; 12 * captions.len()];
        for s in engine.sample(&captions, 12, 1.0, &u, false) {
            assert_eq!(s.tokens.len(), 12);
        }
    }

    #[test]
    fn a_policy_of_another_shape_is_refused() {
        let config = tiny();
        let device = Device::flex();
        device.seed(1);
        let policy = Policy::new(&config, &device);
        let other = PolicyConfig { d_ff: 64, ..config };
        let err = Engine::from_policy(&policy, &other, 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("blocks.0.mlp_in is 16x32"), "{err}");
    }
}
