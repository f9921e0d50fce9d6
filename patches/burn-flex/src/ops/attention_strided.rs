//! musicrl patch: scaled dot-product attention on strided operands, forward and backward.
//!
//! `softmax(scale · Q Kᵀ [+ causal mask]) · V` for the case without an explicit mask, bias
//! or softcap, in f32 and f64, computed per (batch, key/value head) on rayon's threads and
//! per block of [`ROWS`] query rows, so a block's scores stay in cache and no score-sized
//! tensor is ever allocated:
//!
//! - The operands are read through their strides: a query that is `swap_dims(1, 2)` of a
//!   `[batch, seq, heads, head_dim]` projection is passed to `gemm` as it is, with no copy.
//! - The output (and every gradient) is written as `[batch, seq, heads, dim]` memory behind a
//!   `[batch, heads, seq, dim]` layout, so the caller's `swap_dims(1, 2).reshape(..)` back
//!   to `[batch, seq, heads · dim]` is a view, not a copy.
//! - Causal: query i sees keys `0 ..= i + (seq_kv − seq_q)` (burn's convention); a block
//!   multiplies only the keys its last row can see, and a row that sees no key at all
//!   attends to nothing (output 0, gradient 0; burn's fallback would give NaN there).
//! - The backward recomputes each block's probabilities from Q and K (nothing is kept
//!   between the passes but the inputs) and applies
//!   `dV += Pᵀ dO`, `dP = dO Vᵀ`, `dS = P ⊙ (dP − rowsum(P ⊙ dP))`,
//!   `dQ = scale · dS K`, `dK += scale · dSᵀ Q`.
//!   `rowsum(P ⊙ dP)` equals `rowsum(dO ⊙ O)`, so the output is not needed either.
//! - Grouped heads (fewer key/value heads than query heads) are supported: one task owns a
//!   key/value head and the query heads that share it, so its dK and dV are accumulated
//!   by one thread.

use alloc::vec;
use alloc::vec::Vec;
use burn_backend::DType;
use burn_backend::ops::AttentionModuleOptions;
use burn_std::{Bytes, Shape};

use super::attention::{BlockGemmArgs, FlashGemm};
use crate::{FlexTensor, Layout};

/// Query rows per block: the block's scores (`ROWS × seq_kv`) and their gradient are the
/// only scratch, and a causal block multiplies only the keys its last row sees.
const ROWS: usize = 32;

/// Below this many multiply-accumulates in all, one thread does the work.
#[cfg(feature = "rayon")]
const PARALLEL_MACS: usize = 256 * 1024;

/// Elements the strided kernels compute in: the block gemm and the exp of the softmax.
pub(crate) trait AttentionFloat: FlashGemm + burn_backend::Element + bytemuck::Pod {
    /// exp, exactly 0 for arguments far enough below 0 (the masked-out scores never reach
    /// it: masked entries are skipped, not exponentiated).
    fn exp_attn(x: Self) -> Self;
}

impl AttentionFloat for f32 {
    #[inline(always)]
    fn exp_attn(x: f32) -> f32 {
        super::unary::exp_f32(x)
    }
}

impl AttentionFloat for f64 {
    #[inline(always)]
    fn exp_attn(x: f64) -> f64 {
        x.exp()
    }
}

/// Whether [`attention_strided`] and [`attention_strided_backward`] take these operands:
/// no mask, no bias, no softcap, f32 or f64 (the same for all three), rank 4.
pub fn supports(
    query: &FlexTensor,
    key: &FlexTensor,
    value: &FlexTensor,
    has_mask: bool,
    has_bias: bool,
    options: &AttentionModuleOptions,
) -> bool {
    !has_mask
        && !has_bias
        && options.softcap.is_none()
        && matches!(query.dtype(), DType::F32 | DType::F64)
        && key.dtype() == query.dtype()
        && value.dtype() == query.dtype()
        && query.layout().shape().num_dims() == 4
        && key.layout().shape().num_dims() == 4
        && value.layout().shape().num_dims() == 4
}

/// One operand seen as `[batch, heads, seq, dim]` through its strides.
#[derive(Clone, Copy)]
struct View<T> {
    ptr: *const T,
    batch: isize,
    head: isize,
    row: isize,
    col: isize,
}

impl<T> View<T> {
    fn of(t: &FlexTensor) -> Self
    where
        T: burn_backend::Element + bytemuck::Pod,
    {
        let layout = t.layout();
        let s = layout.strides();
        let data: &[T] = t.storage();
        // SAFETY: the start offset lies inside the tensor's storage.
        let ptr = unsafe { data.as_ptr().add(layout.start_offset()) };
        Self {
            ptr,
            batch: s[0],
            head: s[1],
            row: s[2],
            col: s[3],
        }
    }

    /// Pointer to row `i` of head `(b, h)`.
    ///
    /// # Safety
    /// `(b, h, i)` must be inside the operand's shape.
    unsafe fn at(&self, b: usize, h: usize, i: usize) -> *const T {
        unsafe {
            self.ptr.offset(
                b as isize * self.batch + h as isize * self.head + i as isize * self.row,
            )
        }
    }
}

/// An output written as `[batch, seq, heads, dim]` memory: row `i` of head `(b, h)` starts
/// at `((b · seq + i) · heads + h) · dim`.
#[derive(Clone, Copy)]
struct Out<T> {
    ptr: *mut T,
    heads: usize,
    seq: usize,
    dim: usize,
}

// SAFETY: every task writes only the rows of the heads it owns (see the callers).
unsafe impl<T> Send for Out<T> {}
unsafe impl<T> Sync for Out<T> {}
unsafe impl<T> Send for View<T> {}
unsafe impl<T> Sync for View<T> {}

impl<T> Out<T> {
    fn row_stride(&self) -> isize {
        (self.heads * self.dim) as isize
    }

    /// # Safety
    /// `(b, h, i)` must be inside the output's shape.
    unsafe fn at(&self, b: usize, h: usize, i: usize) -> *mut T {
        unsafe { self.ptr.add(((b * self.seq + i) * self.heads + h) * self.dim) }
    }
}

/// Allocates a zeroed `[batch, seq, heads, dim]` buffer (the kernels accumulate into dK and
/// dV, and rows that see no key stay 0).
fn zeroed<T: AttentionFloat>(batch: usize, heads: usize, seq: usize, dim: usize) -> Vec<T> {
    vec![T::zero(); batch * heads * seq * dim]
}

/// The tensor over a `[batch, seq, heads, dim]` buffer, shaped `[batch, heads, seq, dim]`.
fn heads_view<T: AttentionFloat>(
    data: Vec<T>,
    batch: usize,
    heads: usize,
    seq: usize,
    dim: usize,
) -> FlexTensor {
    let shape = Shape::from(vec![batch, heads, seq, dim]);
    let strides = vec![
        (seq * heads * dim) as isize,
        dim as isize,
        (heads * dim) as isize,
        1,
    ];
    FlexTensor::new(
        Bytes::from_elems(data),
        Layout::new(shape, strides, 0),
        T::dtype(),
    )
}

/// Shapes and options, checked once.
#[derive(Clone, Copy)]
struct Dims {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    seq_q: usize,
    seq_kv: usize,
    head_dim: usize,
    val_dim: usize,
    causal: bool,
}

impl Dims {
    fn of(query: &FlexTensor, key: &FlexTensor, value: &FlexTensor, causal: bool) -> Self {
        let q = query.layout().shape();
        let k = key.layout().shape();
        let v = value.layout().shape();
        let (batch, heads, seq_q, head_dim) = (q[0], q[1], q[2], q[3]);
        let (kv_heads, seq_kv, val_dim) = (k[1], k[2], v[3]);
        assert_eq!(k[0], batch, "attention: key batch mismatch");
        assert_eq!(k[3], head_dim, "attention: key head_dim mismatch");
        assert_eq!(v[0], batch, "attention: value batch mismatch");
        assert_eq!(v[1], kv_heads, "attention: key and value head counts differ");
        assert_eq!(v[2], seq_kv, "attention: value seq_kv mismatch");
        assert!(
            kv_heads > 0 && heads % kv_heads == 0,
            "attention: q_heads ({heads}) must be divisible by kv_heads ({kv_heads})"
        );
        Self {
            batch,
            heads,
            kv_heads,
            seq_q,
            seq_kv,
            head_dim,
            val_dim,
            causal,
        }
    }

    /// The last key query row `i` may see, plus one (0: none).
    fn visible(&self, i: usize) -> usize {
        if self.causal {
            let limit = i as isize + self.seq_kv as isize - self.seq_q as isize + 1;
            limit.clamp(0, self.seq_kv as isize) as usize
        } else {
            self.seq_kv
        }
    }

    #[cfg_attr(not(feature = "rayon"), allow(dead_code))]
    fn macs(&self) -> usize {
        self.batch * self.heads * self.seq_q * self.seq_kv * (self.head_dim + self.val_dim)
    }
}

/// Runs `task` for every (batch, key/value head), in parallel when the work is large
/// enough; `init` makes each worker's scratch.
fn for_each_group<S>(
    dims: &Dims,
    init: impl Fn() -> S + Sync + Send,
    task: impl Fn(&mut S, usize, usize) + Sync + Send,
) {
    let groups = dims.batch * dims.kv_heads;
    #[cfg(feature = "rayon")]
    if dims.macs() >= PARALLEL_MACS && groups > 1 {
        use rayon::prelude::*;
        (0..groups)
            .into_par_iter()
            .for_each_init(&init, |s, g| task(s, g / dims.kv_heads, g % dims.kv_heads));
        return;
    }
    let mut s = init();
    for g in 0..groups {
        task(&mut s, g / dims.kv_heads, g % dims.kv_heads);
    }
}

/// `scores[r, j] = scale · q_r · k_j` for the block's rows and keys `0 .. keys`, then the
/// causal softmax of each row in place (entries past a row's last visible key are 0).
///
/// # Safety
/// The views must cover rows `i0 .. i0 + rows` of head `(b, h)` and keys `0 .. keys` of
/// head `(b, kv_h)`.
#[allow(clippy::too_many_arguments)]
unsafe fn block_probabilities<T: AttentionFloat>(
    dims: &Dims,
    q: &View<T>,
    k: &View<T>,
    (b, h, kv_h): (usize, usize, usize),
    i0: usize,
    rows: usize,
    keys: usize,
    scale: T,
    scores: &mut [T],
) {
    let ld = dims.seq_kv;
    unsafe {
        T::block_gemm(BlockGemmArgs {
            m: rows,
            n: keys,
            k: dims.head_dim,
            dst: scores.as_mut_ptr(),
            dst_cs: 1,
            dst_rs: ld as isize,
            read_dst: false,
            lhs: q.at(b, h, i0),
            lhs_cs: q.col,
            lhs_rs: q.row,
            // Kᵀ: element (d, j) is K[j, d].
            rhs: k.at(b, kv_h, 0),
            rhs_cs: k.row,
            rhs_rs: k.col,
            alpha: T::zero(),
            beta: scale,
        });
    }
    for r in 0..rows {
        let row = &mut scores[r * ld..r * ld + keys];
        let seen = dims.visible(i0 + r).min(keys);
        let (live, hidden) = row.split_at_mut(seen);
        hidden.fill(T::zero());
        if live.is_empty() {
            continue;
        }
        softmax_row(live);
    }
}

/// Softmax of one row of scores in place, on AVX2 where the CPU has it. The AVX2 build is
/// the same code (no operation fused or reordered), so both give the same bits.
#[inline]
fn softmax_row<T: AttentionFloat>(row: &mut [T]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            #[target_feature(enable = "avx2")]
            unsafe fn run<T: AttentionFloat>(row: &mut [T]) {
                softmax_row_portable(row);
            }
            // SAFETY: the CPU reported AVX2.
            unsafe { run(row) };
            return;
        }
    }
    softmax_row_portable(row);
}

/// The softmax as four passes that each vectorise: the max over eight lanes (a compare and
/// select, not `max`'s NaN handling), the exponentials, the sum over eight partial sums,
/// the scaling. (A single loop with a running maximum or a running sum stays scalar.)
#[inline(always)]
fn softmax_row_portable<T: AttentionFloat>(row: &mut [T]) {
    let mut lanes = [T::neg_infinity(); 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for j in 0..8 {
            lanes[j] = if c[j] > lanes[j] { c[j] } else { lanes[j] };
        }
    }
    let mut max = T::neg_infinity();
    for &v in lanes.iter().chain(chunks.remainder()) {
        max = if v > max { v } else { max };
    }
    for x in row.iter_mut() {
        *x = T::exp_attn(*x - max);
    }
    let mut partial = [T::zero(); 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for j in 0..8 {
            partial[j] += c[j];
        }
    }
    let mut sum = ((partial[0] + partial[4]) + (partial[1] + partial[5]))
        + ((partial[2] + partial[6]) + (partial[3] + partial[7]));
    for &v in chunks.remainder() {
        sum += v;
    }
    let inv = T::one() / sum;
    for x in row.iter_mut() {
        *x = *x * inv;
    }
}

/// Forward of strided attention. See the module docs; [`supports`] must hold.
pub fn attention_strided(
    query: FlexTensor,
    key: FlexTensor,
    value: FlexTensor,
    options: AttentionModuleOptions,
) -> FlexTensor {
    match query.dtype() {
        DType::F32 => forward::<f32>(&query, &key, &value, options),
        DType::F64 => forward::<f64>(&query, &key, &value, options),
        dtype => panic!("attention_strided: unsupported dtype {dtype:?}"),
    }
}

fn scale_of<T: AttentionFloat>(dims: &Dims, options: &AttentionModuleOptions) -> T {
    let scale = options
        .scale
        .unwrap_or_else(|| 1.0 / (dims.head_dim as f64).sqrt());
    T::from(scale).unwrap()
}

fn forward<T: AttentionFloat>(
    query: &FlexTensor,
    key: &FlexTensor,
    value: &FlexTensor,
    options: AttentionModuleOptions,
) -> FlexTensor {
    let dims = Dims::of(query, key, value, options.is_causal);
    let scale: T = scale_of(&dims, &options);
    let (q, k, v) = (View::<T>::of(query), View::<T>::of(key), View::<T>::of(value));
    let mut data = zeroed::<T>(dims.batch, dims.heads, dims.seq_q, dims.val_dim);
    let out = Out {
        ptr: data.as_mut_ptr(),
        heads: dims.heads,
        seq: dims.seq_q,
        dim: dims.val_dim,
    };
    let per_group = dims.heads / dims.kv_heads;
    if dims.seq_kv > 0 && dims.val_dim > 0 {
        for_each_group(
            &dims,
            || vec![T::zero(); ROWS * dims.seq_kv],
            |scores, b, kv_h| {
                for h in kv_h * per_group..(kv_h + 1) * per_group {
                    for i0 in (0..dims.seq_q).step_by(ROWS) {
                        let rows = ROWS.min(dims.seq_q - i0);
                        let keys = dims.visible(i0 + rows - 1);
                        if keys == 0 {
                            continue; // the rows stay 0
                        }
                        // SAFETY: rows i0 .. i0 + rows of head (b, h) and keys 0 .. keys of
                        // (b, kv_h) are inside the operands; this task alone writes head h of
                        // batch b.
                        unsafe {
                            block_probabilities(
                                &dims,
                                &q,
                                &k,
                                (b, h, kv_h),
                                i0,
                                rows,
                                keys,
                                scale,
                                scores,
                            );
                            T::block_gemm(BlockGemmArgs {
                                m: rows,
                                n: dims.val_dim,
                                k: keys,
                                dst: out.at(b, h, i0),
                                dst_cs: 1,
                                dst_rs: out.row_stride(),
                                read_dst: false,
                                lhs: scores.as_ptr(),
                                lhs_cs: 1,
                                lhs_rs: dims.seq_kv as isize,
                                rhs: v.at(b, kv_h, 0),
                                rhs_cs: v.col,
                                rhs_rs: v.row,
                                alpha: T::zero(),
                                beta: T::one(),
                            });
                        }
                    }
                }
            },
        );
    }
    heads_view(data, dims.batch, dims.heads, dims.seq_q, dims.val_dim)
}

/// Gradients of [`attention_strided`] with respect to query, key and value, from the
/// output's gradient (`[batch, heads, seq_q, val_dim]`, any strides).
pub fn attention_strided_backward(
    query: FlexTensor,
    key: FlexTensor,
    value: FlexTensor,
    out_grad: FlexTensor,
    options: AttentionModuleOptions,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    use super::attention::{cast_from_f32, cast_to_f32};
    use burn_std::{bf16, f16};
    match query.dtype() {
        DType::F32 => backward::<f32>(&query, &key, &value, &out_grad, options),
        DType::F64 => backward::<f64>(&query, &key, &value, &out_grad, options),
        // Half precision computes in f32, as flex's attention forward does.
        DType::F16 => {
            let up = |t: FlexTensor| cast_to_f32(t, f16::to_f32);
            let (dq, dk, dv) =
                backward::<f32>(&up(query), &up(key), &up(value), &up(out_grad), options);
            let down = |t: FlexTensor| cast_from_f32(t, f16::from_f32);
            (down(dq), down(dk), down(dv))
        }
        DType::BF16 => {
            let up = |t: FlexTensor| cast_to_f32(t, bf16::to_f32);
            let (dq, dk, dv) =
                backward::<f32>(&up(query), &up(key), &up(value), &up(out_grad), options);
            let down = |t: FlexTensor| cast_from_f32(t, bf16::from_f32);
            (down(dq), down(dk), down(dv))
        }
        dtype => panic!("attention_strided_backward: unsupported dtype {dtype:?}"),
    }
}

fn backward<T: AttentionFloat>(
    query: &FlexTensor,
    key: &FlexTensor,
    value: &FlexTensor,
    out_grad: &FlexTensor,
    options: AttentionModuleOptions,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let dims = Dims::of(query, key, value, options.is_causal);
    let g = out_grad.layout().shape();
    assert!(
        g.num_dims() == 4
            && [g[0], g[1], g[2], g[3]] == [dims.batch, dims.heads, dims.seq_q, dims.val_dim],
        "attention backward: the output gradient's shape differs from the output's"
    );
    assert_eq!(out_grad.dtype(), query.dtype(), "attention backward: dtype");
    let scale: T = scale_of(&dims, &options);
    let (q, k, v) = (View::<T>::of(query), View::<T>::of(key), View::<T>::of(value));
    let d_o = View::<T>::of(out_grad);
    let (b_, h_, kvh, sq, skv) = (
        dims.batch,
        dims.heads,
        dims.kv_heads,
        dims.seq_q,
        dims.seq_kv,
    );
    let mut dq_data = zeroed::<T>(b_, h_, sq, dims.head_dim);
    let mut dk_data = zeroed::<T>(b_, kvh, skv, dims.head_dim);
    let mut dv_data = zeroed::<T>(b_, kvh, skv, dims.val_dim);
    let dq = Out {
        ptr: dq_data.as_mut_ptr(),
        heads: h_,
        seq: sq,
        dim: dims.head_dim,
    };
    let dk = Out {
        ptr: dk_data.as_mut_ptr(),
        heads: kvh,
        seq: skv,
        dim: dims.head_dim,
    };
    let dv = Out {
        ptr: dv_data.as_mut_ptr(),
        heads: kvh,
        seq: skv,
        dim: dims.val_dim,
    };
    let per_group = h_ / kvh;
    let ld = skv as isize;
    if skv > 0 && dims.head_dim > 0 {
        for_each_group(
            &dims,
            || (vec![T::zero(); ROWS * skv], vec![T::zero(); ROWS * skv]),
            |(p, ds), b, kv_h| {
                for h in kv_h * per_group..(kv_h + 1) * per_group {
                    for i0 in (0..sq).step_by(ROWS) {
                        let rows = ROWS.min(sq - i0);
                        let keys = dims.visible(i0 + rows - 1);
                        if keys == 0 {
                            continue; // no key seen: every gradient of these rows is 0
                        }
                        // SAFETY: as in the forward; this task alone writes head h's dQ rows
                        // and kv_h's dK and dV rows of batch b.
                        unsafe {
                            block_probabilities(
                                &dims,
                                &q,
                                &k,
                                (b, h, kv_h),
                                i0,
                                rows,
                                keys,
                                scale,
                                p,
                            );
                            // dV[0..keys] += Pᵀ dO (Pᵀ: element (j, r) is P[r, j]).
                            T::block_gemm(BlockGemmArgs {
                                m: keys,
                                n: dims.val_dim,
                                k: rows,
                                dst: dv.at(b, kv_h, 0),
                                dst_cs: 1,
                                dst_rs: dv.row_stride(),
                                read_dst: true,
                                lhs: p.as_ptr(),
                                lhs_cs: ld,
                                lhs_rs: 1,
                                rhs: d_o.at(b, h, i0),
                                rhs_cs: d_o.col,
                                rhs_rs: d_o.row,
                                alpha: T::one(),
                                beta: T::one(),
                            });
                            // dP = dO Vᵀ.
                            T::block_gemm(BlockGemmArgs {
                                m: rows,
                                n: keys,
                                k: dims.val_dim,
                                dst: ds.as_mut_ptr(),
                                dst_cs: 1,
                                dst_rs: ld,
                                read_dst: false,
                                lhs: d_o.at(b, h, i0),
                                lhs_cs: d_o.col,
                                lhs_rs: d_o.row,
                                rhs: v.at(b, kv_h, 0),
                                rhs_cs: v.row,
                                rhs_rs: v.col,
                                alpha: T::zero(),
                                beta: T::one(),
                            });
                        }
                        // dS = scale · P ⊙ (dP − rowsum(P ⊙ dP)); 0 wherever P is 0.
                        for r in 0..rows {
                            let pr = &p[r * skv..r * skv + keys];
                            let dr = &mut ds[r * skv..r * skv + keys];
                            let mut dot = T::zero();
                            for (a, g) in pr.iter().zip(dr.iter()) {
                                dot += *a * *g;
                            }
                            for (a, g) in pr.iter().zip(dr.iter_mut()) {
                                *g = scale * *a * (*g - dot);
                            }
                        }
                        unsafe {
                            // dQ rows = dS K.
                            T::block_gemm(BlockGemmArgs {
                                m: rows,
                                n: dims.head_dim,
                                k: keys,
                                dst: dq.at(b, h, i0),
                                dst_cs: 1,
                                dst_rs: dq.row_stride(),
                                read_dst: false,
                                lhs: ds.as_ptr(),
                                lhs_cs: 1,
                                lhs_rs: ld,
                                rhs: k.at(b, kv_h, 0),
                                rhs_cs: k.col,
                                rhs_rs: k.row,
                                alpha: T::zero(),
                                beta: T::one(),
                            });
                            // dK[0..keys] += dSᵀ Q rows.
                            T::block_gemm(BlockGemmArgs {
                                m: keys,
                                n: dims.head_dim,
                                k: rows,
                                dst: dk.at(b, kv_h, 0),
                                dst_cs: 1,
                                dst_rs: dk.row_stride(),
                                read_dst: true,
                                lhs: ds.as_ptr(),
                                lhs_cs: ld,
                                lhs_rs: 1,
                                rhs: q.at(b, h, i0),
                                rhs_cs: q.col,
                                rhs_rs: q.row,
                                alpha: T::one(),
                                beta: T::one(),
                            });
                        }
                    }
                }
            },
        );
    }
    (
        heads_view(dq_data, b_, h_, sq, dims.head_dim),
        heads_view(dk_data, b_, kvh, skv, dims.head_dim),
        heads_view(dv_data, b_, kvh, skv, dims.val_dim),
    )
}
