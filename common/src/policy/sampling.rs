//! Temperature sampling with the key/value cache, recording each token's log-probability.
//!
//! The draw itself happens on the host with a seeded RNG, so a run is reproducible for a
//! given seed whatever the backend.

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::{KvCache, Policy, caption_batch, to_vec_f32};
use crate::config::PolicyConfig;

/// One sampled sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub tokens: Vec<u32>,
    /// log π(a_t | s_t) at the sampling temperature, one per token.
    pub logprobs: Vec<f32>,
}

/// Samples sequences from a policy.
#[derive(Debug)]
pub struct Sampler {
    rng: StdRng,
    temperature: f32,
}

impl Sampler {
    pub fn new(seed: u64, temperature: f32) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            temperature,
        }
    }

    /// Samples one sequence of `len` tokens per caption, feeding each new token through the
    /// cache (one position per step: the prefix is never recomputed).
    pub fn sample<S: AsRef<str>>(
        &mut self,
        policy: &Policy,
        config: &PolicyConfig,
        captions: &[S],
        len: usize,
        device: &Device,
    ) -> Vec<Sampled> {
        let batch = captions.len();
        let mut out = vec![
            Sampled {
                tokens: Vec::with_capacity(len),
                logprobs: Vec::with_capacity(len),
            };
            batch
        ];
        if batch == 0 || len == 0 {
            return out;
        }
        let captions = caption_batch(captions, config, device);
        let mut cache = KvCache::new(policy.n_layers());
        let mut logits = policy.start(&captions, &mut cache).0;
        for t in 0..len {
            let next = self.draw(logits, &mut out);
            if t + 1 == len {
                break;
            }
            let prev = Tensor::<1, Int>::from_data(TensorData::new(next, [batch]), device);
            logits = policy.step(prev, &mut cache).0;
        }
        out
    }

    /// The same draw as [`Sampler::sample`] but recomputing the whole prefix for every token
    /// (no cache): quadratic work, kept as the reference the cache is tested and benchmarked
    /// against. For the same seed it returns the same sequences as `sample` (up to float
    /// rounding at a sampling boundary).
    pub fn sample_uncached<S: AsRef<str>>(
        &mut self,
        policy: &Policy,
        config: &PolicyConfig,
        captions: &[S],
        len: usize,
        device: &Device,
    ) -> Vec<Sampled> {
        let batch = captions.len();
        let mut out = vec![
            Sampled {
                tokens: Vec::with_capacity(len),
                logprobs: Vec::with_capacity(len),
            };
            batch
        ];
        if batch == 0 || len == 0 {
            return out;
        }
        let captions = caption_batch(captions, config, device);
        for t in 0..len {
            let prefix: Vec<i64> = out
                .iter()
                .flat_map(|s| s.tokens.iter().map(|&x| i64::from(x)))
                .collect();
            let prefix = Tensor::<2, Int>::from_data(TensorData::new(prefix, [batch, t]), device);
            let logits = policy.next_logits_uncached(&captions, prefix);
            self.draw(logits, &mut out);
        }
        out
    }

    /// Draws one token per row of `logits` `[B, V]`, appends it (and its log-probability)
    /// to `out`, and returns the drawn ids.
    fn draw(&mut self, logits: Tensor<2>, out: &mut [Sampled]) -> Vec<i64> {
        let rows = to_vec_f32(logits);
        let vocab = rows.len() / out.len();
        let mut next = Vec::with_capacity(out.len());
        for (b, row) in rows.chunks(vocab).enumerate() {
            let (token, logp) = sample_row(row, self.temperature, self.rng.random::<f64>());
            out[b].tokens.push(token);
            out[b].logprobs.push(logp);
            next.push(i64::from(token));
        }
        next
    }
}

/// Draws from softmax(row / temperature) with the uniform number `u` in [0, 1); returns
/// the token and its log-probability under that tempered distribution.
pub fn sample_row(row: &[f32], temperature: f32, u: f64) -> (u32, f32) {
    let logp = tempered_log_softmax(row, temperature);
    let mut acc = 0.0f64;
    let mut chosen = logp.len() - 1;
    for (i, &lp) in logp.iter().enumerate() {
        acc += lp.exp();
        if u < acc {
            chosen = i;
            break;
        }
    }
    (chosen as u32, logp[chosen] as f32)
}

/// log softmax(row / temperature), in f64 for a stable normaliser.
pub fn tempered_log_softmax(row: &[f32], temperature: f32) -> Vec<f64> {
    let t = f64::from(temperature);
    let max = row
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x) / t));
    let log_z = row
        .iter()
        .map(|&x| (f64::from(x) / t - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    row.iter().map(|&x| f64::from(x) / t - log_z).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_row_follows_the_cumulative_distribution() {
        // softmax([0, ln 3]) = [0.25, 0.75].
        let row = [0.0f32, 3f32.ln()];
        assert_eq!(sample_row(&row, 1.0, 0.10).0, 0);
        assert_eq!(sample_row(&row, 1.0, 0.30).0, 1);
        let (_, lp) = sample_row(&row, 1.0, 0.9);
        assert!((lp - 0.75f32.ln()).abs() < 1e-6);
        // Temperature 0.5 squares the odds: [1, 9] / 10.
        let (_, lp) = sample_row(&row, 0.5, 0.05);
        assert!((lp - 0.1f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn cached_and_uncached_sampling_draw_the_same_sequences() {
        let config = PolicyConfig {
            vocab_size: 13,
            max_tokens: 10,
            d_model: 16,
            n_heads: 2,
            n_layers: 2,
            d_ff: 32,
            caption_buckets: 64,
            max_caption_words: 8,
        };
        let device = Device::flex();
        device.seed(11);
        let policy = Policy::new(&config, &device);
        let captions = ["a jig in d major", "a slow air", "a reel"];
        let cached = Sampler::new(5, 0.99).sample(&policy, &config, &captions, 10, &device);
        let uncached =
            Sampler::new(5, 0.99).sample_uncached(&policy, &config, &captions, 10, &device);
        for (c, u) in cached.iter().zip(&uncached) {
            assert_eq!(c.tokens, u.tokens);
            assert_eq!(c.tokens.len(), 10);
            for (a, b) in c.logprobs.iter().zip(&u.logprobs) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
                assert!(*a <= 0.0);
            }
        }
        // A different seed draws something else.
        let other = Sampler::new(6, 0.99).sample(&policy, &config, &captions, 10, &device);
        assert_ne!(
            other.iter().map(|s| &s.tokens).collect::<Vec<_>>(),
            cached.iter().map(|s| &s.tokens).collect::<Vec<_>>()
        );
    }
}
