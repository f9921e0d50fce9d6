//! Products of a few rows by a large weight matrix, the rollout engine's whole cost: a
//! sampling step multiplies 1–16 hidden states by every weight of the decoder once, so the
//! product is bound by reading the weights, and a general matrix product (which packs its
//! right-hand side on every call) reads them more than once.
//!
//! [`Packed`] lays a `[k, n]` matrix out once, at load, as panels of 16 columns, each panel
//! `[k, 16]` contiguous; [`product`] then streams every panel once per block of up to four
//! rows (the panel stays in the core's L2 between blocks), with an AVX2/FMA kernel chosen at
//! run time and a portable loop otherwise.

#![allow(unsafe_code)]

/// Columns per panel: two AVX2 registers of f32.
pub const PANEL: usize = 16;
/// Rows per register block.
const ROWS: usize = 4;

/// A `[k, n]` row-major matrix as panels of [`PANEL`] columns (the last one zero-padded).
#[derive(Debug, Clone)]
pub struct Packed {
    k: usize,
    n: usize,
    data: Vec<f32>,
}

impl Packed {
    /// Packs `b`, `[k, n]` row-major.
    ///
    /// # Panics
    /// If `b` is not `k · n` long.
    pub fn new(b: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(b.len(), k * n, "a [{k}, {n}] matrix has {} values", b.len());
        let panels = n.div_ceil(PANEL);
        let mut data = vec![0.0; panels * k * PANEL];
        for p in 0..panels {
            let cols = PANEL.min(n - p * PANEL);
            for row in 0..k {
                let src = &b[row * n + p * PANEL..row * n + p * PANEL + cols];
                data[(p * k + row) * PANEL..(p * k + row) * PANEL + cols].copy_from_slice(src);
            }
        }
        Self { k, n, data }
    }

    /// Rows (the inner dimension).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Number of panels.
    pub fn panels(&self) -> usize {
        self.n.div_ceil(PANEL)
    }
}

/// `c[m, n] (+)= a[m, k] · b[k, n]` for panels `first .. last` of `b` only (columns
/// `16·first .. min(16·last, n)`), `a` contiguous, `c` with rows `c_stride` apart.
///
/// # Safety
/// `c` must be valid for writes of `m` rows `c_stride` apart over those columns, and no
/// other thread may touch them during the call.
///
/// # Panics
/// If `a` is shorter than `m · k`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn product(
    m: usize,
    a: &[f32],
    b: &Packed,
    first: usize,
    last: usize,
    c: *mut f32,
    c_stride: usize,
    accumulate: bool,
) {
    let k = b.k;
    assert!(a.len() >= m * k, "product: lhs has {} < {m}x{k}", a.len());
    assert!(
        first <= last && last <= b.panels(),
        "product: panels {first}..{last}"
    );
    #[cfg(target_arch = "x86_64")]
    let avx2 =
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    let avx2 = false;
    for p in first..last {
        let panel = &b.data[p * k * PANEL..(p + 1) * k * PANEL];
        let cols = PANEL.min(b.n - p * PANEL);
        let mut row = 0;
        while row < m {
            let rows = ROWS.min(m - row);
            let mut out = [[0f32; PANEL]; ROWS];
            let a_block = &a[row * k..(row + rows) * k];
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the CPU has AVX2 and FMA (checked above); the block reads
                // `rows · k` values of `a_block` and `k · 16` of `panel`, both that long.
                unsafe {
                    match rows {
                        4 => x86::block::<4>(k, a_block, panel, &mut out),
                        3 => x86::block::<3>(k, a_block, panel, &mut out),
                        2 => x86::block::<2>(k, a_block, panel, &mut out),
                        _ => x86::block::<1>(k, a_block, panel, &mut out),
                    }
                }
            } else {
                portable_block(k, rows, a_block, panel, &mut out);
            }
            #[cfg(not(target_arch = "x86_64"))]
            portable_block(k, rows, a_block, panel, &mut out);
            for (r, values) in out.iter().enumerate().take(rows) {
                // SAFETY: row `row + r` < m and columns `16p .. 16p + cols` ≤ n are inside
                // the caller's block.
                let dst = unsafe { c.add((row + r) * c_stride + p * PANEL) };
                for (j, v) in values.iter().enumerate().take(cols) {
                    // SAFETY: as above.
                    unsafe {
                        let slot = dst.add(j);
                        *slot = if accumulate { *slot + v } else { *v };
                    }
                }
            }
            row += rows;
        }
    }
}

fn portable_block(k: usize, rows: usize, a: &[f32], panel: &[f32], out: &mut [[f32; PANEL]; ROWS]) {
    for (r, acc) in out.iter_mut().enumerate().take(rows) {
        let a_row = &a[r * k..(r + 1) * k];
        for (kk, &x) in a_row.iter().enumerate() {
            let b_row = &panel[kk * PANEL..(kk + 1) * PANEL];
            for j in 0..PANEL {
                acc[j] += x * b_row[j];
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{PANEL, ROWS};

    /// `out[r] = Σ_kk a[r, kk] · panel[kk]` for the first `R` rows.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `a` must hold `R · k` values and `panel` `k · 16`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block<const R: usize>(
        k: usize,
        a: &[f32],
        panel: &[f32],
        out: &mut [[f32; PANEL]; ROWS],
    ) {
        assert!(a.len() >= R * k && panel.len() >= k * PANEL);
        let (a, b) = (a.as_ptr(), panel.as_ptr());
        let mut lo = [_mm256_setzero_ps(); R];
        let mut hi = [_mm256_setzero_ps(); R];
        for kk in 0..k {
            // SAFETY: kk < k, so every read is inside the asserted lengths.
            unsafe {
                let b0 = _mm256_loadu_ps(b.add(kk * PANEL));
                let b1 = _mm256_loadu_ps(b.add(kk * PANEL + 8));
                for r in 0..R {
                    let x = _mm256_broadcast_ss(&*a.add(r * k + kk));
                    lo[r] = _mm256_fmadd_ps(x, b0, lo[r]);
                    hi[r] = _mm256_fmadd_ps(x, b1, hi[r]);
                }
            }
        }
        for r in 0..R {
            // SAFETY: each row of `out` holds 16 values.
            unsafe {
                _mm256_storeu_ps(out[r].as_mut_ptr(), lo[r]);
                _mm256_storeu_ps(out[r].as_mut_ptr().add(8), hi[r]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(m: usize, k: usize, n: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k)
                    .map(|kk| f64::from(a[i * k + kk]) * f64::from(b[kk * n + j]))
                    .sum();
            }
        }
        c
    }

    #[test]
    fn products_match_f64_for_every_row_count_and_a_ragged_last_panel() {
        for (m, k, n) in [
            (1, 3, 5),
            (4, 17, 16),
            (5, 8, 33),
            (7, 64, 48),
            (16, 40, 20),
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 30.0)
                .collect();
            let packed = Packed::new(&b, k, n);
            let expected = reference(m, k, n, &a, &b);
            for accumulate in [false, true] {
                let mut c = vec![1.0f32; m * n];
                // SAFETY: c is m x n, this thread's alone.
                unsafe {
                    product(
                        m,
                        &a,
                        &packed,
                        0,
                        packed.panels(),
                        c.as_mut_ptr(),
                        n,
                        accumulate,
                    )
                };
                for (got, want) in c.iter().zip(&expected) {
                    let want = want + if accumulate { 1.0 } else { 0.0 };
                    assert!(
                        (f64::from(*got) - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "{m}x{k}x{n}: {got} vs {want}"
                    );
                }
            }
            // Two halves of the panels give the whole.
            let mut c = vec![0f32; m * n];
            let half = packed.panels() / 2;
            // SAFETY: disjoint column blocks of c, one thread.
            unsafe {
                product(m, &a, &packed, 0, half, c.as_mut_ptr(), n, false);
                product(
                    m,
                    &a,
                    &packed,
                    half,
                    packed.panels(),
                    c.as_mut_ptr(),
                    n,
                    false,
                );
            }
            for (got, want) in c.iter().zip(&expected) {
                assert!((f64::from(*got) - want).abs() < 1e-4 * (1.0 + want.abs()));
            }
        }
    }
}
