//! Choosing each code from the decoder's logits: greedy, or temperature and top-k sampling,
//! optionally with classifier-free guidance. The order of operations is transformers':
//! guidance on the raw logits (`uncond + scale · (cond − uncond)`), then temperature, then
//! top-k (every logit tied with the k-th largest is kept), then a draw from the softmax.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::PolicyError;

/// How a code is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decoding {
    /// The most likely code (the first of equals, as `argmax` picks).
    Greedy,
    /// A draw from `softmax(logits / temperature)` restricted to the `top_k` most likely
    /// codes (`top_k` = 0: all of them).
    Sample { temperature: f32, top_k: usize },
}

/// Sampling settings for [`super::MusicGen::generate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingOptions {
    pub decoding: Decoding,
    /// Classifier-free guidance scale; `None` (or ≤ 1) is off. MusicGen's published
    /// generation settings use 3.0.
    pub guidance: Option<f32>,
    /// Seeds the draws; the same seed, model and captions give the same codes.
    pub seed: u64,
}

impl SamplingOptions {
    /// MusicGen's published defaults: top-k 250, temperature 1, guidance 3.
    pub fn musicgen_default(seed: u64) -> Self {
        Self {
            decoding: Decoding::Sample {
                temperature: 1.0,
                top_k: 250,
            },
            guidance: Some(3.0),
            seed,
        }
    }

    /// The guidance scale when guidance is on.
    pub fn guidance_scale(&self) -> Option<f32> {
        self.guidance.filter(|g| *g > 1.0)
    }

    /// Refuses settings that cannot sample (a non-positive or non-finite temperature, a
    /// non-finite guidance scale).
    pub fn validate(&self) -> Result<(), PolicyError> {
        if let Decoding::Sample { temperature, .. } = self.decoding
            && !(temperature.is_finite() && temperature > 0.0)
        {
            return Err(PolicyError::InvalidInput(format!(
                "temperature must be a positive number, got {temperature}"
            )));
        }
        if let Some(g) = self.guidance
            && !g.is_finite()
        {
            return Err(PolicyError::InvalidInput(format!(
                "guidance scale must be finite, got {g}"
            )));
        }
        Ok(())
    }
}

/// Draws codes row by row with its own seeded generator.
#[derive(Debug)]
pub struct Sampler {
    decoding: Decoding,
    rng: StdRng,
}

impl Sampler {
    pub fn new(options: &SamplingOptions) -> Self {
        Self {
            decoding: options.decoding,
            rng: StdRng::seed_from_u64(options.seed),
        }
    }

    /// Chooses a code from one row of logits.
    pub fn choose(&mut self, logits: &[f32]) -> u32 {
        match self.decoding {
            Decoding::Greedy => argmax(logits),
            Decoding::Sample { temperature, top_k } => {
                let u = self.rng.random::<f64>();
                sample_row(logits, temperature, top_k, u)
            }
        }
    }
}

impl Sampler {
    /// Chooses a code from one row of logits and gives the log-probability of that choice
    /// under the distribution it was drawn from: `log softmax(logits / temperature)`
    /// renormalised over the top-k kept codes (0 for greedy, a deterministic choice). This
    /// is the behaviour log-probability an actor reports.
    pub fn choose_scored(&mut self, logits: &[f32]) -> (u32, f64) {
        let code = self.choose(logits);
        let logprob = match self.decoding {
            Decoding::Greedy => 0.0,
            Decoding::Sample { temperature, top_k } => {
                kept_log_prob(logits, temperature, top_k, code as usize)
            }
        };
        (code, logprob)
    }
}

/// `log` of the probability of `index` under `softmax(logits / temperature)` restricted to
/// the top `top_k` logits (ties with the k-th kept; 0 keeps all), computed in f64: the
/// distribution [`sample_row`] draws from.
pub fn kept_log_prob(logits: &[f32], temperature: f32, top_k: usize, index: usize) -> f64 {
    let scaled: Vec<f64> = logits.iter().map(|&x| f64::from(x / temperature)).collect();
    let threshold = top_k_threshold(&scaled, top_k);
    if scaled[index] < threshold {
        return f64::NEG_INFINITY;
    }
    let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let total: f64 = scaled
        .iter()
        .filter(|&&x| x >= threshold)
        .map(|&x| (x - max).exp())
        .sum();
    scaled[index] - max - total.ln()
}

/// Index of the largest logit, the first of equals.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// The code whose cumulative probability first exceeds `u` ∈ [0, 1) under
/// `softmax(logits / temperature)` restricted to the top `top_k` logits (ties with the
/// k-th kept).
pub fn sample_row(logits: &[f32], temperature: f32, top_k: usize, u: f64) -> u32 {
    let scaled: Vec<f64> = logits.iter().map(|&x| f64::from(x / temperature)).collect();
    let threshold = top_k_threshold(&scaled, top_k);
    let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = scaled
        .iter()
        .map(|&x| if x >= threshold { (x - max).exp() } else { 0.0 })
        .collect();
    let total: f64 = weights.iter().sum();
    let target = u * total;
    let mut acc = 0.0;
    let mut last = 0;
    for (i, w) in weights.iter().enumerate() {
        if *w > 0.0 {
            acc += w;
            last = i;
            if acc > target {
                return i as u32;
            }
        }
    }
    last as u32
}

/// The smallest scaled logit top-k keeps (ties with the k-th kept); −∞ keeps all.
fn top_k_threshold(scaled: &[f64], top_k: usize) -> f64 {
    if top_k > 0 && top_k < scaled.len() {
        let mut sorted = scaled.to_vec();
        sorted.sort_unstable_by(|a, b| b.total_cmp(a));
        sorted[top_k - 1]
    } else {
        f64::NEG_INFINITY
    }
}

/// Guided logits: `uncond + scale · (cond − uncond)`, in place in `cond`.
pub fn guide(cond: &mut [f32], uncond: &[f32], scale: f32) {
    for (c, u) in cond.iter_mut().zip(uncond) {
        *c = u + (*c - u) * scale;
    }
}

/// `log softmax(logits)[index]`, computed in f64.
pub fn log_prob(logits: &[f32], index: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&x| (f64::from(x) - max).exp()).sum();
    f64::from(logits[index]) - max - sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_of_equals() {
        assert_eq!(argmax(&[0.0, 2.0, 2.0, 1.0]), 1);
    }

    #[test]
    fn top_k_by_hand() {
        // logits ln(1), ln(2), ln(3), ln(4): top 2 keeps 3 and 4, p = 3/7, 4/7.
        let l: Vec<f32> = [1f32, 2.0, 3.0, 4.0].iter().map(|x| x.ln()).collect();
        assert_eq!(sample_row(&l, 1.0, 2, 0.0), 2);
        assert_eq!(sample_row(&l, 1.0, 2, 3.0 / 7.0 - 1e-6), 2);
        assert_eq!(sample_row(&l, 1.0, 2, 3.0 / 7.0 + 1e-6), 3);
        // No top-k: p = 0.1, 0.2, 0.3, 0.4.
        assert_eq!(sample_row(&l, 1.0, 0, 0.05), 0);
        assert_eq!(sample_row(&l, 1.0, 0, 0.25), 1);
        assert_eq!(sample_row(&l, 1.0, 0, 0.999), 3);
        // Temperature 0.5 squares the odds: 1, 4, 9, 16 over 30.
        assert_eq!(sample_row(&l, 0.5, 0, 4.5 / 30.0), 1);
        assert_eq!(sample_row(&l, 0.5, 0, 5.5 / 30.0), 2);
    }

    #[test]
    fn kept_log_probs_by_hand() {
        let l: Vec<f32> = [1f32, 2.0, 3.0, 4.0].iter().map(|x| x.ln()).collect();
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-6, "{a} vs {b}"); // f32 logits
        close(kept_log_prob(&l, 1.0, 0, 1), (0.2f64).ln());
        close(kept_log_prob(&l, 1.0, 2, 3), (4.0f64 / 7.0).ln());
        assert_eq!(kept_log_prob(&l, 1.0, 2, 0), f64::NEG_INFINITY);
        close(kept_log_prob(&l, 0.5, 0, 2), (9.0f64 / 30.0).ln());
    }

    #[test]
    fn guidance_and_log_prob_by_hand() {
        let mut c = vec![1.0, 3.0];
        guide(&mut c, &[2.0, 2.0], 3.0);
        assert_eq!(c, vec![-1.0, 5.0]);
        let lp = log_prob(&[0.0, 0.0], 1);
        assert!((lp - 0.5f64.ln()).abs() < 1e-12);
    }
}
