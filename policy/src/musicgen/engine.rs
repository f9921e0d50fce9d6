//! The MusicGen rollout engine: the decoder's sampling step on plain `f32` buffers, for the
//! actors on the CPU.
//!
//! It computes the function of [`Decoder::forward`] over a self-attention cache, one grid
//! position at a time, but with each parameter version's weights copied once into
//! row-major buffers (the self-attention's q, k and v side by side in one `[d, 3d]`
//! matrix, the K output heads in one `[d, K·vocab]`), a key/value cache preallocated for
//! the whole grid and written in place (burn's path concatenates a growing cache every
//! step), the residual additions folded into the products (accumulating into the hidden
//! state) and every product split by columns over the machine's cores. A sampling step
//! multiplies a few rows by every weight once, so the products are laid out for that
//! ([`super::skinny`]: panels packed at load, streamed once per step). The caption's
//! cross-attention keys and values come from burn once per call ([`Decoder::cross_kv`]).
//! The loop around it — the delay pattern, guidance, the sampler — is
//! [`MusicGen::generate_scored`]'s own, so for a seed the engine draws the codes burn's
//! path draws (`policy/tests/musicgen_engine.rs`).
//!
//! *Simplified:* CPU and f32 only; the GELU's erf and the softmax's exp are the melody
//! engine's polynomial approximations (3e-7 relative).

#![allow(unsafe_code)]

use burn::module::Param;
use burn::nn::{LayerNorm, Linear};
use burn::tensor::Tensor;

use super::decoder::{Decoder, LAYER_NORM_EPS};
use super::skinny::{self, Packed};
use crate::melody::engine::kernels;

/// A layer norm's scale and shift.
#[derive(Debug, Clone)]
struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

/// One decoder block's weights, each product's matrix `[in, out]` row-major.
#[derive(Debug, Clone)]
struct Block {
    self_norm: Norm,
    /// `[d, 3d]`: q, k and v side by side.
    qkv: Packed,
    o: Packed,
    cross_norm: Norm,
    cross_q: Packed,
    cross_o: Packed,
    ffn_norm: Norm,
    fc1: Packed,
    fc2: Packed,
}

/// A decoder's weights on plain buffers.
#[derive(Debug, Clone)]
pub struct Engine {
    d: usize,
    heads: usize,
    ffn: usize,
    books: usize,
    vocab: usize,
    /// One `[vocab + 1, d]` table per codebook.
    embeds: Vec<Vec<f32>>,
    blocks: Vec<Block>,
    norm: Norm,
    /// `[d, K·vocab]`: the K output heads side by side.
    out: Packed,
    threads: usize,
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    super::to_vec(t)
}

fn matrix(l: &Linear) -> Vec<f32> {
    values(l.weight.val())
}

fn packed(l: &Linear) -> Packed {
    let [k, n] = l.weight.val().dims();
    Packed::new(&matrix(l), k, n)
}

fn norm(l: &LayerNorm) -> Norm {
    let gamma = values(l.gamma.val());
    let beta = l
        .beta
        .as_ref()
        .map(|b: &Param<Tensor<1>>| values(b.val()))
        .unwrap_or_else(|| vec![0.0; gamma.len()]);
    Norm { gamma, beta }
}

/// `[rows, a] ++ [rows, b] ++ …` side by side: `[rows, a + b + …]`.
fn side_by_side(parts: &[Vec<f32>], rows: usize) -> Vec<f32> {
    let widths: Vec<usize> = parts.iter().map(|p| p.len() / rows).collect();
    let mut out = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for r in 0..rows {
        for (p, w) in parts.iter().zip(&widths) {
            out.extend_from_slice(&p[r * w..(r + 1) * w]);
        }
    }
    out
}

/// The per-call state: the caption's cross-attention keys and values, the self-attention
/// cache and the scratch buffers, all sized once.
#[derive(Debug)]
pub struct Session {
    rows: usize,
    /// Caption positions.
    s: usize,
    /// Per block: `[rows, H, S, Dh]` keys, then values.
    cross: Vec<(Vec<f32>, Vec<f32>)>,
    /// `[rows, S]`: 0 where the caption position is real, −∞ where it is padding.
    cross_bias: Vec<f32>,
    /// Per block: `[rows, H, capacity, Dh]` keys and values of the positions fed so far.
    cache: Vec<(Vec<f32>, Vec<f32>)>,
    capacity: usize,
    len: usize,
    positions: Vec<f32>,
    x: Vec<f32>,
    n: Vec<f32>,
    qkv: Vec<f32>,
    att: Vec<f32>,
    ff: Vec<f32>,
    scores: Vec<f32>,
}

impl Engine {
    /// Copies a decoder's weights into plain buffers, sized for `threads` worker threads
    /// (0: one per core).
    pub fn new(decoder: &Decoder, threads: usize) -> Self {
        let p = decoder.parts();
        let d = decoder.d_model();
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let blocks = p
            .layers
            .iter()
            .map(|l| Block {
                self_norm: norm(&l.self_norm),
                qkv: Packed::new(
                    &side_by_side(&[matrix(&l.q), matrix(&l.k), matrix(&l.v)], d),
                    d,
                    3 * d,
                ),
                o: packed(&l.o),
                cross_norm: norm(&l.cross_norm),
                cross_q: packed(&l.cross_q),
                cross_o: packed(&l.cross_o),
                ffn_norm: norm(&l.ffn_norm),
                fc1: packed(&l.fc1),
                fc2: packed(&l.fc2),
            })
            .collect::<Vec<_>>();
        let heads: Vec<Vec<f32>> = p.heads.iter().map(matrix).collect();
        let vocab = heads[0].len() / d;
        Self {
            d,
            heads: p.n_heads,
            ffn: blocks[0].fc1.n(),
            books: heads.len(),
            vocab,
            embeds: p.embeds.iter().map(|e| values(e.weight.val())).collect(),
            blocks,
            norm: norm(p.norm),
            out: Packed::new(&side_by_side(&heads, d), d, heads.len() * vocab),
            threads,
        }
    }

    /// The worker threads each product is split over.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// A session for `rows` decoder rows over a grid of `capacity` positions, conditioned
    /// on cross-attention keys and values computed by burn for those rows.
    pub fn session(&self, cross: &super::CrossKv, capacity: usize) -> Session {
        let (layers, pad) = cross.parts();
        let [rows, _, s, _] = layers[0].0.dims();
        let cross_bias = values(pad.clone().reshape([rows * s]).float())
            .into_iter()
            .map(|is_pad| if is_pad > 0.5 { f32::NEG_INFINITY } else { 0.0 })
            .collect();
        let cross = layers
            .iter()
            .map(|(k, v)| (values(k.clone()), values(v.clone())))
            .collect();
        let (d, dh) = (self.d, self.d / self.heads);
        let cache_len = rows * self.heads * capacity * dh;
        Session {
            rows,
            s,
            cross,
            cross_bias,
            cache: (0..self.blocks.len())
                .map(|_| (vec![0.0; cache_len], vec![0.0; cache_len]))
                .collect(),
            capacity,
            len: 0,
            positions: super::decoder::sinusoid_table(0, capacity, d),
            x: vec![0.0; rows * d],
            n: vec![0.0; rows * d],
            qkv: vec![0.0; rows * 3 * d],
            att: vec![0.0; rows * d],
            ff: vec![0.0; rows * self.ffn],
            scores: vec![0.0; capacity.max(s)],
        }
    }

    /// Feeds one grid position: `ids` is `[rows, K]` (row-major), and `logits` receives
    /// `[rows, K, vocab]`, the layout of [`Decoder::forward`]'s `[B, K, 1, vocab]`.
    ///
    /// # Panics
    /// If the session is full or a buffer has the wrong length.
    pub fn step(&self, session: &mut Session, ids: &[u32], logits: &mut [f32]) {
        let (rows, d, k_books, vocab) = (session.rows, self.d, self.books, self.vocab);
        assert!(session.len < session.capacity, "the session's grid is full");
        assert_eq!(ids.len(), rows * k_books, "ids must be [rows, K]");
        assert_eq!(
            logits.len(),
            rows * k_books * vocab,
            "logits must be [rows, K, vocab]"
        );
        let pos = session.len;

        // x = Σ_k embed_k[id] + position: [rows, d].
        let position = &session.positions[pos * d..(pos + 1) * d];
        for (r, x) in session.x.chunks_exact_mut(d).enumerate() {
            x.copy_from_slice(position);
            for (k, table) in self.embeds.iter().enumerate() {
                let id = ids[r * k_books + k] as usize;
                for (v, e) in x.iter_mut().zip(&table[id * d..(id + 1) * d]) {
                    *v += e;
                }
            }
        }
        for (i, block) in self.blocks.iter().enumerate() {
            self.block(session, i, block, pos);
        }
        session.len += 1;
        layer_norm(&session.x, &self.norm, &mut session.n);
        self.product(rows, &session.n, &self.out, logits, false);
    }

    fn block(&self, s: &mut Session, i: usize, b: &Block, pos: usize) {
        let (rows, d, h) = (s.rows, self.d, self.heads);
        let dh = d / h;
        let scale = 1.0 / (dh as f32).sqrt();

        // Causal self-attention: q, k, v in one product; k and v written into the cache.
        layer_norm(&s.x, &b.self_norm, &mut s.n);
        self.product(rows, &s.n, &b.qkv, &mut s.qkv, false);
        let (keys, vals) = &mut s.cache[i];
        for r in 0..rows {
            let row = &s.qkv[r * 3 * d..(r + 1) * 3 * d];
            for head in 0..h {
                let at = ((r * h + head) * s.capacity + pos) * dh;
                keys[at..at + dh].copy_from_slice(&row[d + head * dh..d + (head + 1) * dh]);
                vals[at..at + dh].copy_from_slice(&row[2 * d + head * dh..2 * d + (head + 1) * dh]);
            }
        }
        for r in 0..rows {
            for head in 0..h {
                let q = &s.qkv[r * 3 * d + head * dh..r * 3 * d + (head + 1) * dh];
                let base = (r * h + head) * s.capacity * dh;
                let scores = &mut s.scores[..=pos];
                for (t, sc) in scores.iter_mut().enumerate() {
                    *sc = kernels::dot(q, &keys[base + t * dh..base + (t + 1) * dh]) * scale;
                }
                kernels::softmax_in_place(scores);
                let out = &mut s.att[r * d + head * dh..r * d + (head + 1) * dh];
                out.fill(0.0);
                for (t, &w) in scores.iter().enumerate() {
                    kernels::axpy(out, w, &vals[base + t * dh..base + (t + 1) * dh]);
                }
            }
        }
        self.product(rows, &s.att, &b.o, &mut s.x, true);

        // Cross-attention to the caption (padding masked).
        layer_norm(&s.x, &b.cross_norm, &mut s.n);
        self.product(rows, &s.n, &b.cross_q, &mut s.qkv[..rows * d], false);
        let (ck, cv) = &s.cross[i];
        let len = s.s;
        for r in 0..rows {
            for head in 0..h {
                let q = &s.qkv[r * d + head * dh..r * d + (head + 1) * dh];
                let base = (r * h + head) * len * dh;
                let scores = &mut s.scores[..len];
                for (t, sc) in scores.iter_mut().enumerate() {
                    *sc = kernels::dot(q, &ck[base + t * dh..base + (t + 1) * dh]) * scale
                        + s.cross_bias[r * len + t];
                }
                kernels::softmax_in_place(scores);
                let out = &mut s.att[r * d + head * dh..r * d + (head + 1) * dh];
                out.fill(0.0);
                for (t, &w) in scores.iter().enumerate() {
                    if w != 0.0 {
                        kernels::axpy(out, w, &cv[base + t * dh..base + (t + 1) * dh]);
                    }
                }
            }
        }
        self.product(rows, &s.att, &b.cross_o, &mut s.x, true);

        // Feed-forward.
        layer_norm(&s.x, &b.ffn_norm, &mut s.n);
        self.product(rows, &s.n, &b.fc1, &mut s.ff, false);
        kernels::gelu_in_place(&mut s.ff);
        self.product(rows, &s.ff, &b.fc2, &mut s.x, true);
    }

    /// `c[m, n] (+)= a[m, k] · b[k, n]`, the panels split over the engine's threads.
    fn product(&self, m: usize, a: &[f32], b: &Packed, c: &mut [f32], accumulate: bool) {
        let n = b.n();
        assert!(c.len() >= m * n, "product: out has {} < {m}x{n}", c.len());
        let panels = b.panels();
        // A thread is worth its start-up only with a few panels of its own.
        let parts = self.threads.min(panels / 4).max(1);
        let c_ptr = SendPtr(c.as_mut_ptr());
        if parts == 1 {
            // SAFETY: c holds m rows of n, and this thread is its only user.
            unsafe { skinny::product(m, a, b, 0, panels, c_ptr.at(0), n, accumulate) };
            return;
        }
        let chunk = panels.div_ceil(parts);
        std::thread::scope(|scope| {
            for first in (chunk..panels).step_by(chunk) {
                let last = (first + chunk).min(panels);
                scope.spawn(move || {
                    // SAFETY: each thread writes only its panels' columns of c's m rows,
                    // disjoint from every other thread's; c outlives the scope.
                    unsafe { skinny::product(m, a, b, first, last, c_ptr.at(0), n, accumulate) };
                });
            }
            // The first block on this thread.
            // SAFETY: as above.
            unsafe { skinny::product(m, a, b, 0, chunk, c_ptr.at(0), n, accumulate) };
        });
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);

impl SendPtr {
    /// The pointer `offset` values on.
    ///
    /// # Safety
    /// As [`pointer::add`].
    unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: the caller's.
        unsafe { self.0.add(offset) }
    }
}
// SAFETY: the pointer is only used for disjoint column blocks inside one scope.
unsafe impl Send for SendPtr {}

fn layer_norm(x: &[f32], n: &Norm, out: &mut [f32]) {
    kernels::layer_norm(x, &n.gamma, &n.beta, LAYER_NORM_EPS as f32, out);
}
