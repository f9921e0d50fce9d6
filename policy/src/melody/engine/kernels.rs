//! The rollout engine's kernels: row-major f32 buffers, no allocation, no tensors.
//!
//! Matrix products go to `gemm` (the crate burn's CPU backend uses), single-threaded: the
//! engine parallelises across sequences, one decoder per core, so a product never waits
//! for another thread (gemm picks its AVX2/FMA kernels at run time). Everything else is a
//! plain loop over contiguous memory, branch-free in its body so the compiler vectorises it
//! for the build's baseline target.

#![allow(unsafe_code)]

/// `c[m, n] = a[m, k] · b[k, n] + (if accumulate { c } else { 0 })`, all row-major and
/// contiguous.
///
/// # Panics
/// If a slice is shorter than its shape says.
pub fn matmul(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32], accumulate: bool) {
    assert!(a.len() >= m * k, "matmul: lhs has {} < {m}x{k}", a.len());
    assert!(b.len() >= k * n, "matmul: rhs has {} < {k}x{n}", b.len());
    assert!(c.len() >= m * n, "matmul: out has {} < {m}x{n}", c.len());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: the asserts above bound every index gemm touches: dst is m x n with row
    // stride n, lhs m x k with row stride k, rhs k x n with row stride n, all unit column
    // strides, inside the slices' lengths; the slices do not alias (c is &mut).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Writes `bias` into every row of `out` (`[rows, bias.len()]`).
#[inline(always)]
pub fn fill_rows(out: &mut [f32], bias: &[f32]) {
    for row in out.chunks_exact_mut(bias.len()) {
        row.copy_from_slice(bias);
    }
}

/// Adds `bias` to every row of `out`.
#[inline(always)]
pub fn add_rows(out: &mut [f32], bias: &[f32]) {
    for row in out.chunks_exact_mut(bias.len()) {
        for (o, b) in row.iter_mut().zip(bias) {
            *o += *b;
        }
    }
}

/// Layer normalisation of each row of `x` into `out`: `(x - mean) / sqrt(var + eps) * gamma
/// + beta`, with the biased variance (burn's `layer_norm`).
#[inline(always)]
pub fn layer_norm(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
    let d = gamma.len();
    for (row, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let mean = sum8(row) / d as f32;
        let mut acc = [0.0f32; 8];
        let chunks = row.chunks_exact(8);
        let mut var = chunks
            .remainder()
            .iter()
            .map(|v| (v - mean) * (v - mean))
            .sum::<f32>();
        for c in chunks {
            for j in 0..8 {
                acc[j] += (c[j] - mean) * (c[j] - mean);
            }
        }
        var += acc.iter().sum::<f32>();
        let var = var / d as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for (((o, v), g), b) in o.iter_mut().zip(row).zip(gamma).zip(beta) {
            *o = (v - mean) * inv * g + b;
        }
    }
}

/// `e^x` for f32 by range reduction (`x = n ln 2 + r`, |r| <= ln2 / 2) and a degree-6
/// polynomial, written so the compiler vectorises a loop over it. Relative error below
/// 2e-7 on [-87, 88]; inputs below -87 give 0 (as `f32::exp` underflows there too) and
/// above 88 saturate at `f32::MAX`-scale.
#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round to nearest by the 1.5 * 2^23 trick (`f32::round` is a libm call that stops
    // the loop from vectorising); |x log2 e| < 2^22 after the clamp.
    const SHIFT: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let y = x * std::f32::consts::LOG2_E + SHIFT;
    let n = y - SHIFT;
    // The integer n from y's bits (y = 1.5 * 2^23 + n exactly): a float-to-int `as` cast
    // saturates, and its checks keep the loop scalar.
    let ni = (y.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Taylor coefficients 1/k! to degree 6: |r| <= 0.347 keeps the remainder < 1e-7.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^n by building the exponent bits (n in [-126, 127] after the clamp).
    let bits = (ni.wrapping_add(127) as u32) << 23;
    p * f32::from_bits(bits)
}

/// The error function, Abramowitz & Stegun 7.1.26: absolute error 1.5e-7 in exact
/// arithmetic, below 1e-6 in f32 (measured against a series in f64 on [-8, 8]).
#[inline(always)]
pub fn erf_approx(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_74;
    const A3: f32 = 1.421_413_7;
    const A4: f32 = -1.453_152_1;
    const A5: f32 = 1.061_405_4;
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = t * (A1 + t * (A2 + t * (A3 + t * (A4 + t * A5))));
    let y = 1.0 - poly * exp_approx(-a * a);
    y.copysign(x)
}

/// Exact (erf) GELU in place: `0.5 x (1 + erf(x / sqrt 2))`, as `burn::tensor::activation::gelu`.
#[inline(always)]
pub fn gelu_in_place(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = 0.5 * *v * (1.0 + erf_approx(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// Softmax of `x` in place (max-subtracted).
#[inline(always)]
pub fn softmax_in_place(x: &mut [f32]) {
    // Four passes, each vectorisable: max, exp, sum, scale.
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let mut max = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for c in chunks {
        for j in 0..8 {
            lanes[j] = if c[j] > lanes[j] { c[j] } else { lanes[j] };
        }
    }
    for l in lanes {
        max = max.max(l);
    }
    for v in x.iter_mut() {
        *v = exp_approx(*v - max);
    }
    let sum = sum8(x);
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// Sum with eight independent accumulators (vectorisable; the same value whatever the
/// vector width).
#[inline(always)]
pub fn sum8(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for j in 0..8 {
            acc[j] += c[j];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for v in rest {
        s += v;
    }
    s
}

/// `out += w * v`.
#[inline(always)]
pub fn axpy(out: &mut [f32], w: f32, v: &[f32]) {
    for (o, x) in out.iter_mut().zip(v) {
        *o += w * x;
    }
}

/// Dot product with eight independent accumulators (one vector register: vectorisable
/// without reassociation flags, and the same sums whatever the vector width).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_matches_a_hand_computed_product() {
        // [[1, 2], [3, 4], [5, 6]] · [[1, 0, 2], [0, 1, 3]]
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [1.0, 0.0, 2.0, 0.0, 1.0, 3.0];
        let mut c = [100.0f32; 9];
        matmul(3, 2, 3, &a, &b, &mut c, false);
        assert_eq!(c, [1.0, 2.0, 8.0, 3.0, 4.0, 18.0, 5.0, 6.0, 28.0]);
        matmul(3, 2, 3, &a, &b, &mut c, true);
        assert_eq!(c, [2.0, 4.0, 16.0, 6.0, 8.0, 36.0, 10.0, 12.0, 56.0]);
    }

    #[test]
    fn exp_and_erf_track_the_standard_library() {
        let mut worst_exp = 0.0f32;
        let mut worst_erf = 0.0f32;
        for i in -8000..=8000 {
            let x = i as f32 / 100.0;
            let rel = (exp_approx(x) - x.exp()).abs() / x.exp();
            worst_exp = worst_exp.max(rel);
            let y = i as f32 / 1000.0;
            worst_erf = worst_erf.max((erf_approx(y) - erf_ref(f64::from(y)) as f32).abs());
        }
        assert!(worst_exp < 3e-7, "exp relative error {worst_exp}");
        assert!(worst_erf < 1e-6, "erf absolute error {worst_erf}");
        // Below the clamp, e^-87 (a tiny normal number), not garbage.
        let tiny = (-87.0f32).exp();
        assert!((exp_approx(-200.0) - tiny).abs() < 1e-6 * tiny);
        assert!(erf_approx(0.0).abs() < 1e-6);
        assert!((erf_approx(-1.0) + 0.842_700_8).abs() < 1e-6);
    }

    /// erf by its Maclaurin series in f64 (converges fast for |x| <= 8 with enough terms).
    fn erf_ref(x: f64) -> f64 {
        if x.abs() > 5.0 {
            return x.signum();
        }
        let mut term = x;
        let mut sum = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn layer_norm_and_softmax_of_tiny_rows() {
        // Row [1, 3]: mean 2, biased variance 1, so (x - 2) / sqrt(1 + eps).
        let mut out = [0.0f32; 2];
        layer_norm(&[1.0, 3.0], &[2.0, 1.0], &[0.5, 0.0], 0.0, &mut out);
        assert_eq!(out, [-1.5, 1.0]);
        let mut p = [0.0f32, 3f32.ln()];
        softmax_in_place(&mut p);
        assert!((p[0] - 0.25).abs() < 1e-6 && (p[1] - 0.75).abs() < 1e-6);
        let mut g = [0.0f32, 1.0, -1.0];
        gelu_in_place(&mut g);
        assert!(
            g[0] == 0.0 && (g[1] - 0.841_344_7).abs() < 1e-6 && (g[2] + 0.158_655_3).abs() < 1e-6
        );
        assert_eq!(dot(&[1.0; 11], &[2.0; 11]), 22.0);
    }
}
