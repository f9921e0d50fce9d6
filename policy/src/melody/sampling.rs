//! Temperature sampling with the key/value cache, recording each token's log-probability.
//!
//! The draw itself happens on the host with a seeded RNG, so a run is reproducible for a
//! given seed whatever the backend.

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::{KvCache, Policy, caption_batch, to_vec_f32};
use musicrl_config::PolicyConfig;

/// One sampled sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub tokens: Vec<u32>,
    /// log π(a_t | s_t) at the sampling temperature, one per token.
    pub logprobs: Vec<f32>,
}

/// Samples sequences from a policy, with burn ([`Sampler::sample`]) or the rollout engine
/// ([`Sampler::sample_engine`]).
///
/// Each batch of `B` sequences of at most `len` tokens takes `len × B` uniform numbers from
/// the seeded RNG up front, step-major (`u[t * B + b]` draws token t of row b), whether or
/// not every row runs to `len`. So a row's draws depend neither on when other rows end nor
/// on how a batch is split over threads, and burn and the engine, given the same seed, draw
/// the same sequences (up to float rounding at a sampling boundary).
#[derive(Debug)]
pub struct Sampler {
    rng: StdRng,
    temperature: f32,
    stop_at_end: bool,
}

impl Sampler {
    pub fn new(seed: u64, temperature: f32) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            temperature,
            stop_at_end: true,
        }
    }

    /// Whether a sequence stops after its first END token (the default) or always runs the
    /// full length (the benchmark's fixed workload).
    pub fn stop_at_end(mut self, stop: bool) -> Self {
        self.stop_at_end = stop;
        self
    }

    /// The uniform numbers of one batch: `len × batch`, step-major.
    fn uniforms(&mut self, len: usize, batch: usize) -> Vec<f64> {
        (0..len * batch).map(|_| self.rng.random::<f64>()).collect()
    }

    /// Samples one sequence per caption with the rollout engine: the actors' path.
    pub fn sample_engine<S: AsRef<str> + Sync>(
        &mut self,
        engine: &super::Engine,
        captions: &[S],
        len: usize,
    ) -> Vec<Sampled> {
        let len = len.min(engine.config().max_tokens);
        let u = self.uniforms(len, captions.len());
        engine.sample(captions, len, self.temperature, &u, self.stop_at_end)
    }

    /// Samples one sequence per caption, of at most `len` tokens: a sequence stops after its
    /// first `config.end_token` (which it keeps), so nothing is sampled past the end of a
    /// tune. Each new token goes through the cache (one position per step: the prefix is
    /// never recomputed); decoding stops when every sequence has ended.
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
        let u = self.uniforms(len, batch);
        let captions = caption_batch(captions, config, device);
        let mut cache = KvCache::new(policy.n_layers());
        let mut logits = policy.start(&captions, &mut cache).0;
        let mut done = vec![false; batch];
        for t in 0..len {
            let step_u = &u[t * batch..(t + 1) * batch];
            let next = self.draw(logits, step_u, &mut out, &mut done, config.end_token);
            if t + 1 == len || done.iter().all(|d| *d) {
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
        let u = self.uniforms(len, batch);
        let captions = caption_batch(captions, config, device);
        // Ended rows keep being fed (their END repeated) so the batch stays rectangular;
        // nothing is recorded for them.
        let mut fed: Vec<Vec<u32>> = vec![Vec::with_capacity(len); batch];
        let mut done = vec![false; batch];
        for t in 0..len {
            let prefix: Vec<i64> = fed
                .iter()
                .flat_map(|s| s.iter().map(|&x| i64::from(x)))
                .collect();
            let prefix = Tensor::<2, Int>::from_data(TensorData::new(prefix, [batch, t]), device);
            let logits = policy.next_logits_uncached(&captions, prefix);
            let step_u = &u[t * batch..(t + 1) * batch];
            let next = self.draw(logits, step_u, &mut out, &mut done, config.end_token);
            for (row, id) in fed.iter_mut().zip(next) {
                row.push(id as u32);
            }
            if done.iter().all(|d| *d) {
                break;
            }
        }
        out
    }

    /// Draws one token per row of `logits` `[B, V]` with this step's uniforms `u` `[B]`,
    /// appends it (and its log-probability) to the rows of `out` that have not ended, marks
    /// rows that draw `end` as done (when stopping at END), and returns the ids to feed next
    /// (`end` again for rows already done).
    fn draw(
        &mut self,
        logits: Tensor<2>,
        u: &[f64],
        out: &mut [Sampled],
        done: &mut [bool],
        end: u32,
    ) -> Vec<i64> {
        let rows = to_vec_f32(logits);
        let vocab = rows.len() / out.len();
        let mut next = Vec::with_capacity(out.len());
        for (b, row) in rows.chunks(vocab).enumerate() {
            let (token, logp) = sample_row(row, self.temperature, u[b]);
            if done[b] {
                next.push(i64::from(end));
                continue;
            }
            out[b].tokens.push(token);
            out[b].logprobs.push(logp);
            done[b] = self.stop_at_end && token == end;
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
            // No END in this vocabulary: every sequence runs to the length asked.
            end_token: 13,
            ..PolicyConfig::default()
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

    #[test]
    fn sequences_stop_at_their_first_end_token() {
        let config = PolicyConfig {
            vocab_size: 4,
            max_tokens: 40,
            d_model: 16,
            n_heads: 2,
            n_layers: 1,
            d_ff: 32,
            caption_buckets: 64,
            max_caption_words: 8,
            end_token: 0,
            ..PolicyConfig::default()
        };
        let device = Device::flex();
        device.seed(2);
        let policy = Policy::new(&config, &device);
        let captions = ["a", "b", "c", "d", "e", "f"];
        let cached = Sampler::new(9, 1.0).sample(&policy, &config, &captions, 40, &device);
        let uncached =
            Sampler::new(9, 1.0).sample_uncached(&policy, &config, &captions, 40, &device);
        for (c, u) in cached.iter().zip(&uncached) {
            assert_eq!(c.tokens, u.tokens);
            for (a, b) in c.logprobs.iter().zip(&u.logprobs) {
                assert!((a - b).abs() < 1e-4);
            }
        }
        let mut ended = 0;
        for s in &cached {
            assert_eq!(s.tokens.len(), s.logprobs.len());
            // END appears at most once, and only last.
            let ends = s.tokens.iter().filter(|&&t| t == 0).count();
            assert!(ends <= 1, "{:?}", s.tokens);
            if ends == 1 {
                assert_eq!(*s.tokens.last().unwrap(), 0);
                ended += 1;
            } else {
                assert_eq!(s.tokens.len(), 40);
            }
        }
        // With a quarter of the vocabulary being END, most sequences end early.
        assert!(ended >= 5, "{ended} of 6 ended");
    }
}
