//! The exact KL between two policies along given sequences: how far a trained policy has
//! moved from its reference where it actually goes, the x-axis of the paper's reward-against-KL
//! curves. Summed over a sequence's steps up to and including its first END, each step exact
//! over the whole vocabulary at the sampling temperature (the same per-step term the learner
//! optimises).

use burn::tensor::Device;

use super::sampling::tempered_log_softmax;
use super::{Policy, caption_batch, to_vec_f32, token_tensor};
use musicrl_config::PolicyConfig;

/// Σ_t KL(π(·|s_t) ‖ π_ref(·|s_t)) for each sequence, and its number of steps. Sequences
/// stop at their first `config.end_token`; an empty sequence has KL 0 over 0 steps.
pub fn sequence_kl<S: AsRef<str>>(
    policy: &Policy,
    reference: &Policy,
    config: &PolicyConfig,
    captions: &[S],
    sequences: &[Vec<u32>],
    temperature: f32,
    device: &Device,
) -> Vec<(f64, usize)> {
    assert_eq!(captions.len(), sequences.len(), "one caption per sequence");
    let lens: Vec<usize> = sequences
        .iter()
        .map(|s| {
            s.iter()
                .position(|&t| t == config.end_token)
                .map_or(s.len(), |i| i + 1)
                .min(config.max_tokens)
        })
        .collect();
    let width = lens.iter().copied().max().unwrap_or(0);
    if width == 0 {
        return vec![(0.0, 0); sequences.len()];
    }
    let rows = sequences.len();
    let mut padded = Vec::with_capacity(rows * width);
    for (s, &n) in sequences.iter().zip(&lens) {
        padded.extend_from_slice(&s[..n]);
        padded.extend(std::iter::repeat_n(0, width - n));
    }
    let captions = caption_batch(captions, config, device);
    let tokens = token_tensor(&padded, rows, width, device);
    let p = to_vec_f32(policy.forward(&captions, tokens.clone()).logits);
    let q = to_vec_f32(reference.forward(&captions, tokens).logits);
    let v = config.vocab_size;
    lens.iter()
        .enumerate()
        .map(|(b, &n)| {
            let kl: f64 = (0..n)
                .map(|t| {
                    let at = (b * width + t) * v;
                    let lp = tempered_log_softmax(&p[at..at + v], temperature);
                    let lq = tempered_log_softmax(&q[at..at + v], temperature);
                    lp.iter()
                        .zip(&lq)
                        .map(|(a, b)| a.exp() * (a - b))
                        .sum::<f64>()
                })
                .sum();
            (kl, n)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PolicyConfig {
        PolicyConfig {
            vocab_size: 11,
            max_tokens: 8,
            d_model: 16,
            n_heads: 2,
            n_layers: 1,
            d_ff: 32,
            caption_buckets: 32,
            max_caption_words: 6,
            end_token: 0,
            ..PolicyConfig::default()
        }
    }

    #[test]
    fn zero_against_itself_positive_against_another_and_stops_at_end() {
        let device = crate::device::inference_device();
        let c = config();
        device.seed(5);
        let a = Policy::new(&c, &device);
        let b = Policy::new(&c, &device);
        let seqs = vec![vec![3, 4, 5, 0, 7, 7], vec![2, 2], vec![]];
        let caps = ["a jig", "a reel", "a waltz"];
        let same = sequence_kl(&a, &a, &c, &caps, &seqs, 1.0, &device);
        assert_eq!(same.iter().map(|x| x.1).collect::<Vec<_>>(), [4, 2, 0]);
        assert!(same.iter().all(|x| x.0.abs() < 1e-9), "{same:?}");
        let other = sequence_kl(&a, &b, &c, &caps, &seqs, 1.0, &device);
        assert!(other[0].0 > 0.0 && other[1].0 > 0.0, "{other:?}");
        assert_eq!(other[2], (0.0, 0));
        // Tokens after END change nothing.
        let cut = vec![vec![3, 4, 5, 0], vec![2, 2], vec![]];
        let again = sequence_kl(&a, &b, &c, &caps, &cut, 1.0, &device);
        assert!((again[0].0 - other[0].0).abs() < 1e-6);
        // By hand for the first step of one sequence: the same rows through the formula.
        let caps1 = ["a jig"];
        let one = sequence_kl(&a, &b, &c, &caps1, &[vec![0]], 1.0, &device)[0];
        let cb = caption_batch(&caps1, &c, &device);
        let t = token_tensor(&[0], 1, 1, &device);
        let pa = tempered_log_softmax(&to_vec_f32(a.forward(&cb, t.clone()).logits), 1.0);
        let pb = tempered_log_softmax(&to_vec_f32(b.forward(&cb, t).logits), 1.0);
        let by_hand: f64 = pa.iter().zip(&pb).map(|(x, y)| x.exp() * (x - y)).sum();
        assert_eq!(one.1, 1);
        assert!((one.0 - by_hand).abs() < 1e-9);
    }
}
