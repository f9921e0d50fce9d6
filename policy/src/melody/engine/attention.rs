//! The rollout engine's attention kernels: one query's scores over its sequence's tiled
//! key cache, and the probability-weighted sum of its value rows. Decoding reads each
//! sequence's whole cache once per step, so these loops are where the engine meets memory
//! bandwidth; they keep their sums in registers and read the cache in one contiguous
//! stream per head.

#![allow(unsafe_code)]

/// Which instruction set the attention kernels use: AVX2 with fused multiply-adds
/// (hand-written with `core::arch`; the compiler kept the loops' accumulators on the stack
/// whatever form the portable code took), or portable code with separate products and
/// sums. The fused kernels round once per multiply-add, so their sums differ from the
/// portable ones in the last bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Isa {
    /// Set only by [`Isa::detect`], after the CPU reported AVX2 and FMA.
    avx2_fma: bool,
}

impl Isa {
    /// The best this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Self { avx2_fma: true };
            }
        }
        Self::portable()
    }

    /// Portable code only.
    pub fn portable() -> Self {
        Self { avx2_fma: false }
    }

    /// Whether the AVX2/FMA kernels run.
    pub fn avx2_fma(self) -> bool {
        self.avx2_fma
    }
}

/// Positions per block of the tiled key cache, and per pass of [`scores_tiled`].
pub const KEY_TILE: usize = 32;

/// One query's attention scores over a tiled key cache. `tiles` holds blocks of
/// [`KEY_TILE`] positions, each `[q.len(), KEY_TILE]` (component `j` of the key at position
/// `b * KEY_TILE + l` at `(b * q.len() + j) * KEY_TILE + l`), so a block is one contiguous
/// read; `out[p] = Σ_j (q[j] * scale) * key_p[j]` for every `p < out.len()`, with the
/// scores of a block held in registers: even and odd `j` in two accumulators, added at
/// the end.
///
/// # Panics
/// If `out.len()` is not a multiple of [`KEY_TILE`], or `tiles` is shorter than the
/// `out.len() / KEY_TILE` blocks it needs.
#[inline(always)]
pub fn scores_tiled(isa: Isa, q: &[f32], scale: f32, tiles: &[f32], out: &mut [f32]) {
    const L: usize = KEY_TILE;
    let dh = q.len();
    assert!(
        out.len().is_multiple_of(L) && tiles.len() >= out.len() * dh,
        "scores_tiled: {} scores over {} cached values of width {dh}",
        out.len(),
        tiles.len()
    );
    #[cfg(target_arch = "x86_64")]
    if isa.avx2_fma {
        // SAFETY: `avx2_fma` is set only where the CPU has AVX2 and FMA; the assert above
        // is the bound the kernel relies on.
        unsafe { x86::scores_tiled(q, scale, tiles, out) };
        return;
    }
    let _ = isa;
    for (o, tile) in out.chunks_exact_mut(L).zip(tiles.chunks_exact(dh * L)) {
        let mut even = [0.0f32; L];
        let mut odd = [0.0f32; L];
        for i in 0..dh / 2 {
            let (w0, w1) = (q[2 * i] * scale, q[2 * i + 1] * scale);
            let r0 = &tile[2 * i * L..(2 * i + 1) * L];
            let r1 = &tile[(2 * i + 1) * L..(2 * i + 2) * L];
            for l in 0..L {
                even[l] += w0 * r0[l];
                odd[l] += w1 * r1[l];
            }
        }
        if dh % 2 == 1 {
            let w0 = q[dh - 1] * scale;
            let r0 = &tile[(dh - 1) * L..dh * L];
            for l in 0..L {
                even[l] += w0 * r0[l];
            }
        }
        for l in 0..L {
            o[l] = even[l] + odd[l];
        }
    }
}

/// `out[i] = Σ_p w[p] * rows[p * out.len() + i]`: the attention-weighted sum of value rows
/// (`rows` is `[w.len(), out.len()]`), with the sum held in registers: even and odd rows
/// in two accumulators, added at the end.
///
/// # Panics
/// If `rows` is shorter than `w.len() * out.len()`.
#[inline(always)]
pub fn weighted_rows(isa: Isa, w: &[f32], rows: &[f32], out: &mut [f32]) {
    let width = out.len();
    assert!(
        rows.len() >= w.len() * width,
        "weighted_rows: {} values for {} rows of {width}",
        rows.len(),
        w.len()
    );
    let mut col = 0;
    #[cfg(target_arch = "x86_64")]
    if isa.avx2_fma {
        while col + 32 <= width {
            // SAFETY: AVX2 and FMA were detected (`avx2_fma`); the assert above and
            // `col + 32 <= width` bound every element read and written.
            unsafe { x86::weighted_rows_32(w, rows, width, col, out) };
            col += 32;
        }
    }
    let _ = isa;
    while col + 8 <= width {
        weighted_rows_lanes::<8>(w, rows, width, col, out);
        col += 8;
    }
    while col < width {
        weighted_rows_lanes::<1>(w, rows, width, col, out);
        col += 1;
    }
}

/// Columns `col .. col + L` of [`weighted_rows`], portable.
#[inline(always)]
fn weighted_rows_lanes<const L: usize>(
    w: &[f32],
    rows: &[f32],
    stride: usize,
    col: usize,
    out: &mut [f32],
) {
    let mut even = [0.0f32; L];
    let mut odd = [0.0f32; L];
    let n = w.len();
    for i in 0..n / 2 {
        let a = &rows[2 * i * stride + col..2 * i * stride + col + L];
        let b = &rows[(2 * i + 1) * stride + col..(2 * i + 1) * stride + col + L];
        for l in 0..L {
            even[l] += w[2 * i] * a[l];
            odd[l] += w[2 * i + 1] * b[l];
        }
    }
    if n % 2 == 1 {
        let a = &rows[(n - 1) * stride + col..(n - 1) * stride + col + L];
        for l in 0..L {
            even[l] += w[n - 1] * a[l];
        }
    }
    for l in 0..L {
        out[col + l] = even[l] + odd[l];
    }
}

/// The attention kernels in AVX2 with FMA: eight 8-lane accumulators in registers.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_setzero_ps,
        _mm256_storeu_ps,
    };

    use super::KEY_TILE;

    /// `acc[k] += w * src[8k .. 8k + 8]` for k < 4.
    ///
    /// # Safety
    /// AVX2 and FMA; `src` points at 32 readable floats.
    #[inline(always)]
    unsafe fn fma4(acc: &mut [__m256; 4], w: __m256, src: *const f32) {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: the caller's contract.
            *a = unsafe { _mm256_fmadd_ps(w, _mm256_loadu_ps(src.add(8 * k)), *a) };
        }
    }

    /// `dst[8k .. 8k + 8] = a[k] + b[k]` for k < 4.
    ///
    /// # Safety
    /// AVX2; `dst` points at 32 writable floats.
    #[inline(always)]
    unsafe fn store_sum4(dst: *mut f32, a: &[__m256; 4], b: &[__m256; 4]) {
        for k in 0..4 {
            // SAFETY: the caller's contract.
            unsafe { _mm256_storeu_ps(dst.add(8 * k), _mm256_add_ps(a[k], b[k])) };
        }
    }

    /// [`super::scores_tiled`] for the whole of `out`.
    ///
    /// # Safety
    /// AVX2 and FMA; `out.len()` a multiple of `KEY_TILE` (32) and `tiles.len() >=
    /// out.len() * q.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scores_tiled(q: &[f32], scale: f32, tiles: &[f32], out: &mut [f32]) {
        const _: () = assert!(KEY_TILE == 32);
        let dh = q.len();
        for b in 0..out.len() / KEY_TILE {
            // SAFETY (all pointer arithmetic below): block b spans tiles[b dh 32 ..
            // (b + 1) dh 32], inside `tiles` by the contract; out[32 b .. 32 b + 32]
            // likewise.
            let tile = unsafe { tiles.as_ptr().add(b * dh * KEY_TILE) };
            let mut even = [_mm256_setzero_ps(); 4];
            let mut odd = [_mm256_setzero_ps(); 4];
            for i in 0..dh / 2 {
                let w0 = _mm256_set1_ps(q[2 * i] * scale);
                let w1 = _mm256_set1_ps(q[2 * i + 1] * scale);
                unsafe {
                    fma4(&mut even, w0, tile.add(2 * i * KEY_TILE));
                    fma4(&mut odd, w1, tile.add((2 * i + 1) * KEY_TILE));
                }
            }
            if dh % 2 == 1 {
                let w0 = _mm256_set1_ps(q[dh - 1] * scale);
                unsafe { fma4(&mut even, w0, tile.add((dh - 1) * KEY_TILE)) };
            }
            unsafe { store_sum4(out.as_mut_ptr().add(b * KEY_TILE), &even, &odd) };
        }
    }

    /// Columns `col .. col + 32` of [`super::weighted_rows`].
    ///
    /// # Safety
    /// AVX2 and FMA; `rows.len() >= w.len() * stride`, `col + 32 <= stride` and
    /// `col + 32 <= out.len()`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weighted_rows_32(
        w: &[f32],
        rows: &[f32],
        stride: usize,
        col: usize,
        out: &mut [f32],
    ) {
        let n = w.len();
        let base = rows.as_ptr();
        let mut even = [_mm256_setzero_ps(); 4];
        let mut odd = [_mm256_setzero_ps(); 4];
        // SAFETY (all pointer arithmetic below): row p's columns col .. col + 32 are
        // inside `rows` for every p < n by the contract, and out's likewise.
        for i in 0..n / 2 {
            unsafe {
                fma4(
                    &mut even,
                    _mm256_set1_ps(w[2 * i]),
                    base.add(2 * i * stride + col),
                );
                fma4(
                    &mut odd,
                    _mm256_set1_ps(w[2 * i + 1]),
                    base.add((2 * i + 1) * stride + col),
                );
            }
        }
        if n % 2 == 1 {
            unsafe {
                fma4(
                    &mut even,
                    _mm256_set1_ps(w[n - 1]),
                    base.add((n - 1) * stride + col),
                )
            };
        }
        unsafe { store_sum4(out.as_mut_ptr().add(col), &even, &odd) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every instruction set this CPU runs, portable first.
    fn isas() -> Vec<Isa> {
        let mut all = vec![Isa::portable()];
        if Isa::detect().avx2_fma() {
            all.push(Isa::detect());
        }
        all
    }

    #[test]
    fn attention_scores_and_weighted_rows_of_tiny_cases() {
        for isa in isas() {
            // Keys of width 3 over 35 positions (two tiles): key p = (p, 10 p, -p);
            // q = (1, 2, 4), scale 0.5: score p = 0.5 (p + 20 p - 4 p) = 8.5 p.
            let (dh, n) = (3, 35);
            let mut tiles = vec![f32::NAN; 2 * dh * KEY_TILE];
            for p in 0..2 * KEY_TILE {
                let (b, l) = (p / KEY_TILE, p % KEY_TILE);
                for (j, v) in [1.0f32, 10.0, -1.0].iter().enumerate() {
                    tiles[(b * dh + j) * KEY_TILE + l] = v * p as f32;
                }
            }
            let mut s = vec![-1.0f32; 2 * KEY_TILE];
            scores_tiled(isa, &[1.0, 2.0, 4.0], 0.5, &tiles, &mut s);
            for (p, v) in s[..n].iter().enumerate() {
                assert_eq!(*v, 8.5 * p as f32, "position {p}, {isa:?}");
            }
            // Rows of width 41 (one 32-lane pass, one 8-lane pass, one single lane), three
            // of them (an odd count): out[i] = 1 i + 2 (100 + i) + 3 (200 + i) = 800 + 6 i.
            let width = 41;
            let rows: Vec<f32> = (0..3)
                .flat_map(|p| (0..width).map(move |i| (100 * p + i) as f32))
                .collect();
            let mut out = vec![f32::NAN; width];
            weighted_rows(isa, &[1.0, 2.0, 3.0], &rows, &mut out);
            for (i, v) in out.iter().enumerate() {
                assert_eq!(*v, 800.0 + 6.0 * i as f32, "column {i}, {isa:?}");
            }
            // No rows: zeros.
            weighted_rows(isa, &[], &[], &mut out);
            assert!(out.iter().all(|v| *v == 0.0));
        }
    }

    /// The attention kernels against sums in f64, on non-integer data of the policy's
    /// head width (32) and of widths that leave remainders, for every instruction set.
    #[test]
    fn attention_kernels_match_f64_sums() {
        let value = |i: usize| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.9;
        for isa in isas() {
            for (dh, seen) in [(32usize, 70usize), (7, 33), (48, 1), (32, 64)] {
                let blocks = seen.div_ceil(KEY_TILE);
                let tiles: Vec<f32> = (0..blocks * dh * KEY_TILE).map(value).collect();
                let q: Vec<f32> = (0..dh).map(|j| value(j + 13)).collect();
                let mut s = vec![0.0f32; blocks * KEY_TILE];
                scores_tiled(isa, &q, 0.25, &tiles, &mut s);
                for (p, got) in s[..seen].iter().enumerate() {
                    let (b, l) = (p / KEY_TILE, p % KEY_TILE);
                    let want: f64 = (0..dh)
                        .map(|j| {
                            f64::from(q[j] * 0.25) * f64::from(tiles[(b * dh + j) * KEY_TILE + l])
                        })
                        .sum();
                    assert!(
                        (f64::from(*got) - want).abs() < 1e-5,
                        "{isa:?} d_head {dh}: score {p} is {got}, want {want}"
                    );
                }
                let rows: Vec<f32> = (0..seen * dh).map(|i| value(i + 5)).collect();
                let w: Vec<f32> = (0..seen).map(|p| value(p + 101).abs()).collect();
                let mut out = vec![0.0f32; dh];
                weighted_rows(isa, &w, &rows, &mut out);
                for (i, got) in out.iter().enumerate() {
                    let want: f64 = (0..seen)
                        .map(|p| f64::from(w[p]) * f64::from(rows[p * dh + i]))
                        .sum();
                    assert!(
                        (f64::from(*got) - want).abs() < 1e-5,
                        "{isa:?} d_head {dh}: column {i} is {got}, want {want}"
                    );
                }
            }
        }
    }
}
