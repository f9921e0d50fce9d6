//! The statistics of a side-by-side evaluation: the Wilcoxon signed-rank test (the paper's
//! significance test) and the normal distribution it needs.

use serde::{Deserialize, Serialize};

/// How the p-value was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The exact null distribution of the rank sum (no ties, at most 50 differences).
    Exact,
    /// The normal approximation with the tie correction of the variance, no continuity
    /// correction.
    Normal,
}

/// A two-sided Wilcoxon signed-rank test of paired differences against zero.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Wilcoxon {
    /// Differences that are not zero (zeros are dropped: Wilcoxon's own treatment).
    pub n: usize,
    /// Sum of the ranks of the positive and of the negative differences.
    pub w_plus: f64,
    pub w_minus: f64,
    pub p_value: f64,
    pub method: Method,
}

/// The test on `diffs` (e.g. per-prompt mean score differences). Ranks of tied absolute
/// differences are averaged. With no non-zero difference the p-value is 1. This follows
/// `scipy.stats.wilcoxon` with `zero_method="wilcox"`, `correction=False`, and
/// `method="exact"` for at most 50 untied differences, `method="approx"` otherwise.
pub fn wilcoxon(diffs: &[f64]) -> Wilcoxon {
    let mut d: Vec<f64> = diffs.iter().copied().filter(|x| *x != 0.0).collect();
    let n = d.len();
    if n == 0 {
        return Wilcoxon {
            n,
            w_plus: 0.0,
            w_minus: 0.0,
            p_value: 1.0,
            method: Method::Exact,
        };
    }
    d.sort_by(|a, b| a.abs().total_cmp(&b.abs()));
    // Average ranks over runs of equal |d|; collect the tie sizes.
    let mut ranks = vec![0.0; n];
    let mut ties = Vec::new();
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && d[j + 1].abs() == d[i].abs() {
            j += 1;
        }
        let avg = (i + j + 2) as f64 / 2.0;
        for r in &mut ranks[i..=j] {
            *r = avg;
        }
        if j > i {
            ties.push((j - i + 1) as f64);
        }
        i = j + 1;
    }
    let w_plus: f64 = d
        .iter()
        .zip(&ranks)
        .filter(|(x, _)| **x > 0.0)
        .map(|(_, r)| r)
        .sum();
    let total = (n * (n + 1)) as f64 / 2.0;
    let w_minus = total - w_plus;
    let t = w_plus.min(w_minus);
    let nf = n as f64;
    let (p_value, method) = if ties.is_empty() && n <= 50 {
        // P(W ≤ t) from the exact distribution: subsets of {1..n} by their sum.
        let max = n * (n + 1) / 2;
        let mut counts = vec![0.0f64; max + 1];
        counts[0] = 1.0;
        for k in 1..=n {
            for s in (k..=max).rev() {
                counts[s] += counts[s - k];
            }
        }
        let all = 2f64.powi(n as i32);
        let below: f64 = counts[..=(t as usize)].iter().sum();
        ((2.0 * below / all).min(1.0), Method::Exact)
    } else {
        let mean = nf * (nf + 1.0) / 4.0;
        let tie_term: f64 = ties.iter().map(|t| t * t * t - t).sum();
        let var = nf * (nf + 1.0) * (2.0 * nf + 1.0) / 24.0 - tie_term / 48.0;
        let z = (t - mean) / var.sqrt();
        ((2.0 * normal_cdf(-z.abs())).min(1.0), Method::Normal)
    };
    Wilcoxon {
        n,
        w_plus,
        w_minus,
        p_value,
        method,
    }
}

/// Φ(x), the standard normal distribution function, from the complementary error function.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// erfc(x) with relative error below 1.2e-7 everywhere (the Chebyshev fit of Numerical
/// Recipes, 3rd ed., §6.2).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_test_by_hand() {
        // Differences 1, 2, 3, −4, 5: ranks 1..5, W− = 4, W+ = 11. Of the 32 sign patterns,
        // rank sums ≤ 4 are {}, {1}, {2}, {3}, {1,2}, {4}, {1,3}: 7, so p = 2 · 7/32.
        let w = wilcoxon(&[1.0, 2.0, 3.0, -4.0, 5.0]);
        assert_eq!((w.n, w.w_plus, w.w_minus), (5, 11.0, 4.0));
        assert_eq!(w.method, Method::Exact);
        assert!((w.p_value - 14.0 / 32.0).abs() < 1e-12, "{w:?}");
        // All positive: p = 2/32.
        assert!((wilcoxon(&[0.5, 1.0, 2.0, 3.0, 4.0]).p_value - 2.0 / 32.0).abs() < 1e-12);
        // Nothing to test.
        assert_eq!(wilcoxon(&[0.0, 0.0]).p_value, 1.0);
    }

    #[test]
    fn matches_scipy_on_the_reference_cases() {
        // scipy 1.17.1 (run in a throwaway venv, not a dependency):
        //   d = [0.9, -0.3, 1.4, 2.2, 0.8, -1.1, 1.7, 0.6, 2.5, -0.2, 1.3, 0.4]
        //   wilcoxon(d, method="exact").pvalue        -> 0.02099609375
        let d = [
            0.9, -0.3, 1.4, 2.2, 0.8, -1.1, 1.7, 0.6, 2.5, -0.2, 1.3, 0.4,
        ];
        let w = wilcoxon(&d);
        assert_eq!(w.method, Method::Exact);
        assert!((w.p_value - SCIPY_EXACT).abs() < 1e-9, "{w:?}");
        //   e = [1, 1, 0, 2, -1, 1, 2, 0, 3, 1, -2, 1, 1, 2, 0, 1, -1, 2, 1, 1]  (ties, zeros)
        //   wilcoxon(e, zero_method="wilcox", correction=False, method="approx").pvalue
        //   -> 0.013315317030670373 (statistic 26)
        let e = [
            1.0, 1.0, 0.0, 2.0, -1.0, 1.0, 2.0, 0.0, 3.0, 1.0, -2.0, 1.0, 1.0, 2.0, 0.0, 1.0, -1.0,
            2.0, 1.0, 1.0,
        ];
        let w = wilcoxon(&e);
        assert_eq!((w.n, w.method), (17, Method::Normal));
        assert!((w.p_value - SCIPY_APPROX).abs() < 1e-6, "{w:?}");
    }

    const SCIPY_EXACT: f64 = 0.020_996_093_75;
    const SCIPY_APPROX: f64 = 0.013_315_317_030_670_373;

    #[test]
    fn normal_cdf_at_known_points() {
        assert!((normal_cdf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_cdf(1.959_963_985) - 0.975).abs() < 1e-7);
        assert!((normal_cdf(-3.0) - 0.001_349_898).abs() < 1e-8);
    }
}
