//! The melody family: musicrl's built-in policy, a 577 k-parameter transformer over the
//! 64-token symbolic melody vocabulary, conditioned on a hashed bag-of-words caption
//! embedding; its sampler, rollout engine, divergence and parameter formats.

pub mod caption;
pub mod divergence;
pub mod engine;
pub mod model;
pub mod params;
pub mod safetensors;
pub mod sampling;

use burn::tensor::{Device, Int, Tensor, TensorData};

pub use engine::Engine;
pub use model::{CaptionBatch, KvCache, Policy, PolicyOutput};

use musicrl_config::PolicyConfig;

/// Tokenises and pads captions into tensors on `device`.
pub fn caption_batch<S: AsRef<str>>(
    captions: &[S],
    config: &PolicyConfig,
    device: &Device,
) -> CaptionBatch {
    let tokenised: Vec<Vec<u32>> = captions
        .iter()
        .map(|c| {
            caption::tokenize_with(
                &config.caption_encoder,
                c.as_ref(),
                config.caption_buckets,
                config.max_caption_words,
            )
        })
        .collect();
    let (ids, mask, words) = caption::pad_batch(&tokenised);
    let batch = captions.len();
    CaptionBatch {
        ids: Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, words]), device),
        mask: Tensor::<2>::from_data(TensorData::new(mask, [batch, words]), device),
    }
}

/// A `[rows, cols]` integer tensor from token ids.
pub fn token_tensor(tokens: &[u32], rows: usize, cols: usize, device: &Device) -> Tensor<2, Int> {
    let data: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
    Tensor::<2, Int>::from_data(TensorData::new(data, [rows, cols]), device)
}

/// Reads a float tensor back as a `Vec<f32>`.
pub fn to_vec_f32<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("a converted f32 tensor reads back as f32")
}

/// A two-layer, 16-wide policy for unit tests of the parameter formats.
#[cfg(test)]
pub(crate) fn tiny_test_config() -> PolicyConfig {
    PolicyConfig {
        vocab_size: 9,
        max_tokens: 6,
        d_model: 16,
        n_heads: 2,
        n_layers: 2,
        d_ff: 32,
        caption_buckets: 32,
        max_caption_words: 6,
        ..PolicyConfig::default()
    }
}
