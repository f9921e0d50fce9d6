//! musicrl patch: the backward of layer norm over the last dimension, fused.
//!
//! Per row of `d` elements, with `x̂ = (x − mean) · r`, `r = 1 / sqrt(var + ε)` (biased
//! variance, as the forward) and `h = g ⊙ γ` for the output gradient `g`:
//!
//! ```text
//! dx = r · (h − mean(h) − x̂ · mean(h ⊙ x̂))
//! dγ = Σ_rows g ⊙ x̂        dβ = Σ_rows g
//! ```
//!
//! Rows are taken in fixed blocks of [`BLOCK_ROWS`] on rayon's threads; each block sums its
//! own dγ and dβ and the blocks' sums are added in block order, so the result does not
//! depend on how the blocks were scheduled.

use alloc::vec;
use alloc::vec::Vec;
use burn_backend::DType;
use burn_std::{Bytes, Shape, bf16, f16};
use num_traits::Float;

use crate::{FlexTensor, Layout};

/// Rows per block (and per rayon task).
const BLOCK_ROWS: usize = 64;

/// `(dx, dγ, dβ)` of `layer_norm(x, γ, β, ε)` for the output gradient `out_grad`.
pub fn layer_norm_backward(
    x: FlexTensor,
    gamma: FlexTensor,
    epsilon: f64,
    out_grad: FlexTensor,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    assert_eq!(
        x.layout().shape(),
        out_grad.layout().shape(),
        "layer_norm backward: the output gradient's shape differs from the input's"
    );
    assert_eq!(x.dtype(), out_grad.dtype(), "layer_norm backward: dtype mismatch");
    assert_eq!(x.dtype(), gamma.dtype(), "layer_norm backward: gamma dtype mismatch");
    use super::attention::{cast_from_f32, cast_to_f32};
    match x.dtype() {
        DType::F32 => typed::<f32>(x, gamma, epsilon, out_grad),
        DType::F64 => typed::<f64>(x, gamma, epsilon, out_grad),
        // Half precision computes in f32, as flex's forward does.
        DType::F16 => {
            let up = |t: FlexTensor| cast_to_f32(t, f16::to_f32);
            let (a, b, c) = typed::<f32>(up(x), up(gamma), epsilon, up(out_grad));
            let down = |t: FlexTensor| cast_from_f32(t, f16::from_f32);
            (down(a), down(b), down(c))
        }
        DType::BF16 => {
            let up = |t: FlexTensor| cast_to_f32(t, bf16::to_f32);
            let (a, b, c) = typed::<f32>(up(x), up(gamma), epsilon, up(out_grad));
            let down = |t: FlexTensor| cast_from_f32(t, bf16::from_f32);
            (down(a), down(b), down(c))
        }
        dtype => panic!("layer_norm backward: unsupported dtype {dtype:?}"),
    }
}

fn typed<T>(
    x: FlexTensor,
    gamma: FlexTensor,
    epsilon: f64,
    out_grad: FlexTensor,
) -> (FlexTensor, FlexTensor, FlexTensor)
where
    T: Float + burn_backend::Element + bytemuck::Pod + Send + Sync + core::ops::AddAssign,
{
    let shape = x.layout().shape().clone();
    let d = *shape.last().expect("layer_norm backward: empty shape");
    let x = x.to_contiguous();
    let g = out_grad.to_contiguous();
    let gamma = gamma.to_contiguous();
    let xs: &[T] = x.storage();
    let gs: &[T] = g.storage();
    let gam: &[T] = gamma.storage();
    assert_eq!(gam.len(), d, "layer_norm backward: gamma must have the last dim's length");
    let eps = T::from(epsilon).unwrap();
    let n = T::from(d).unwrap();

    let mut dx = vec![T::zero(); xs.len()];
    // One block: its rows' dx, and its (dγ, dβ) sums.
    let block = |(b, dx_block): (usize, &mut [T])| -> (Vec<T>, Vec<T>) {
        let mut dgamma = vec![T::zero(); d];
        let mut dbeta = vec![T::zero(); d];
        let row0 = b * BLOCK_ROWS;
        for (r, dx_row) in dx_block.chunks_exact_mut(d).enumerate() {
            let at = (row0 + r) * d;
            let (xr, gr) = (&xs[at..at + d], &gs[at..at + d]);
            let mut sum = T::zero();
            for &v in xr {
                sum += v;
            }
            let mean = sum / n;
            let mut sq = T::zero();
            for &v in xr {
                sq += (v - mean) * (v - mean);
            }
            let rstd = T::one() / (sq / n + eps).sqrt();
            let (mut sum_h, mut sum_hx) = (T::zero(), T::zero());
            for j in 0..d {
                let xh = (xr[j] - mean) * rstd;
                let h = gr[j] * gam[j];
                sum_h += h;
                sum_hx += h * xh;
                dgamma[j] += gr[j] * xh;
                dbeta[j] += gr[j];
            }
            let (a, c) = (sum_h / n, sum_hx / n);
            for j in 0..d {
                let xh = (xr[j] - mean) * rstd;
                dx_row[j] = rstd * (gr[j] * gam[j] - a - xh * c);
            }
        }
        (dgamma, dbeta)
    };
    let partials: Vec<(Vec<T>, Vec<T>)> = if d == 0 {
        Vec::new()
    } else {
        #[cfg(feature = "rayon")]
        {
            use rayon::prelude::*;
            if xs.len() >= super::PARALLEL_THRESHOLD / 4 {
                dx.par_chunks_mut(BLOCK_ROWS * d)
                    .enumerate()
                    .map(block)
                    .collect()
            } else {
                dx.chunks_mut(BLOCK_ROWS * d).enumerate().map(block).collect()
            }
        }
        #[cfg(not(feature = "rayon"))]
        {
            dx.chunks_mut(BLOCK_ROWS * d).enumerate().map(block).collect()
        }
    };
    let mut dgamma = vec![T::zero(); d];
    let mut dbeta = vec![T::zero(); d];
    for (pg, pb) in &partials {
        for j in 0..d {
            dgamma[j] += pg[j];
            dbeta[j] += pb[j];
        }
    }
    let make = |data: Vec<T>, shape: Shape| {
        FlexTensor::new(Bytes::from_elems(data), Layout::contiguous(shape), T::dtype())
    };
    (
        make(dx, shape),
        make(dgamma, Shape::from(vec![d])),
        make(dbeta, Shape::from(vec![d])),
    )
}
