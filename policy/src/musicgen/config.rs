//! A MusicGen folder's `config.json` (transformers' `MusicgenConfig`): the T5 text encoder's,
//! the decoder's and the codec's sections, with the defaults transformers uses for keys a
//! file leaves out, validated into the shapes this implementation runs.

use std::path::Path;

use serde::Deserialize;

use crate::PolicyError;

/// The `text_encoder` section (transformers' `T5Config`).
#[derive(Debug, Clone, Deserialize)]
pub struct T5Config {
    #[serde(default = "t5_vocab")]
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    #[serde(default = "t5_buckets")]
    pub relative_attention_num_buckets: usize,
    #[serde(default = "t5_max_distance")]
    pub relative_attention_max_distance: usize,
    #[serde(default = "t5_eps")]
    pub layer_norm_epsilon: f64,
    /// `"relu"` (T5 1.0, T5-base as MusicGen uses it), `"gated-gelu"` (T5 1.1, Flan-T5), or
    /// any `ACT` / `gated-ACT` transformers accepts (see [`T5FeedForward::parse`]).
    #[serde(default = "t5_ff")]
    pub feed_forward_proj: String,
    #[serde(default)]
    pub model_type: Option<String>,
}

fn t5_vocab() -> usize {
    32128
}
fn t5_buckets() -> usize {
    32
}
fn t5_max_distance() -> usize {
    128
}
fn t5_eps() -> f64 {
    1e-6
}
fn t5_ff() -> String {
    "relu".to_string()
}

/// The activation of T5's feed-forward layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum T5Activation {
    Relu,
    /// The exact (erf) GELU.
    Gelu,
    /// The tanh approximation (`gelu_new`), which T5 1.1's "gated-gelu" uses.
    GeluTanh,
    Silu,
}

/// The T5 feed-forward variant of a checkpoint, from its `feed_forward_proj`: `wo(act(wi(x)))`,
/// or gated, `wo(act(wi_0(x)) * wi_1(x))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct T5FeedForward {
    pub gated: bool,
    pub activation: T5Activation,
}

impl T5FeedForward {
    /// transformers' `T5Config` reading of `feed_forward_proj`: `"ACT"` or `"gated-ACT"`,
    /// where "gated-gelu" means the tanh GELU.
    pub fn parse(text: &str) -> Option<Self> {
        let (gated, act) = match text.split_once('-') {
            Some(("gated", act)) => (true, act),
            Some(_) => return None,
            None => (false, text),
        };
        let activation = match (gated, act) {
            (true, "gelu") | (_, "gelu_new") => T5Activation::GeluTanh,
            (false, "gelu") => T5Activation::Gelu,
            (_, "relu") => T5Activation::Relu,
            (_, "silu") => T5Activation::Silu,
            _ => return None,
        };
        Some(Self { gated, activation })
    }
}

/// The `decoder` section (transformers' `MusicgenDecoderConfig`).
#[derive(Debug, Clone, Deserialize)]
pub struct DecoderConfig {
    /// Codes per codebook; the embeddings have one more row (the pad/BOS id `vocab_size`).
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub num_hidden_layers: usize,
    pub ffn_dim: usize,
    pub num_attention_heads: usize,
    pub hidden_size: usize,
    #[serde(default = "gelu")]
    pub activation_function: String,
    pub num_codebooks: usize,
    #[serde(default = "one")]
    pub audio_channels: usize,
    #[serde(default)]
    pub scale_embedding: bool,
    pub pad_token_id: Option<usize>,
    pub bos_token_id: Option<usize>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// When set (it must equal the text encoder's width), the decoder attends to the text
    /// states directly and there is no `enc_to_dec_proj`.
    #[serde(default)]
    pub cross_attention_hidden_size: Option<usize>,
}

fn gelu() -> String {
    "gelu".to_string()
}
fn one() -> usize {
    1
}

#[derive(Debug, Clone, Deserialize)]
struct FileConfig {
    text_encoder: T5Config,
    decoder: DecoderConfig,
    #[serde(default)]
    audio_encoder: serde_json::Value,
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default)]
    decoder_start_token_id: Option<usize>,
}

/// A validated MusicGen configuration.
#[derive(Debug, Clone)]
pub struct MusicgenConfig {
    pub text: T5Config,
    pub t5_ff: T5FeedForward,
    pub decoder: DecoderConfig,
    /// The id every codebook starts from (position 0 of the delayed grid).
    pub bos: usize,
    /// The id of the delayed grid's empty cells.
    pub pad: usize,
    /// Whether `enc_to_dec_proj` maps the text states to the decoder's width (transformers
    /// adds it exactly when the two widths differ).
    pub has_projection: bool,
    /// The codec section as the file has it (used by the codec, not by the policy).
    pub audio_encoder: serde_json::Value,
}

impl MusicgenConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|error| PolicyError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Self::from_json(&text, path)
    }

    /// Parses and validates the text of a `config.json`; `path` names it in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self, PolicyError> {
        let raw: FileConfig = serde_json::from_str(text).map_err(|e| PolicyError::Folder {
            path: path.to_path_buf(),
            why: format!("not a MusicGen config.json (text_encoder, decoder sections): {e}"),
        })?;
        let invalid = |field: &str, why: String| PolicyError::Config {
            path: path.to_path_buf(),
            field: field.to_string(),
            why,
        };
        if let Some(kind) = raw.model_type.as_deref()
            && kind != "musicgen"
        {
            return Err(invalid(
                "model_type",
                format!(
                    "{kind:?}; this loader reads \"musicgen\" folders (MusicgenForConditionalGeneration)"
                ),
            ));
        }
        if let Some(kind) = raw.text_encoder.model_type.as_deref()
            && kind != "t5"
        {
            return Err(invalid(
                "text_encoder.model_type",
                format!("{kind:?}; only a T5 text encoder is implemented"),
            ));
        }
        let t5_ff = T5FeedForward::parse(&raw.text_encoder.feed_forward_proj).ok_or_else(|| {
            invalid(
                "text_encoder.feed_forward_proj",
                format!(
                    "{:?}; implemented: ACT or gated-ACT with ACT one of relu, gelu, gelu_new, silu",
                    raw.text_encoder.feed_forward_proj
                ),
            )
        })?;
        let d = &raw.decoder;
        if d.activation_function != "gelu" {
            return Err(invalid(
                "decoder.activation_function",
                format!("{:?}; implemented: \"gelu\"", d.activation_function),
            ));
        }
        if d.audio_channels != 1 {
            return Err(invalid(
                "decoder.audio_channels",
                format!(
                    "{}: stereo MusicGen (codebooks interleaved per channel) is not implemented yet; \
                     docs/real-models.md says what it needs",
                    d.audio_channels
                ),
            ));
        }
        if d.num_codebooks == 0 || d.vocab_size == 0 || d.num_attention_heads == 0 {
            return Err(invalid(
                "decoder",
                "num_codebooks, vocab_size and num_attention_heads must be positive".into(),
            ));
        }
        if !d.hidden_size.is_multiple_of(d.num_attention_heads) {
            return Err(invalid(
                "decoder.hidden_size",
                format!(
                    "{} is not a multiple of num_attention_heads {}",
                    d.hidden_size, d.num_attention_heads
                ),
            ));
        }
        if raw.text_encoder.num_heads == 0 || raw.text_encoder.num_layers == 0 {
            return Err(invalid(
                "text_encoder",
                "num_heads and num_layers must be positive".into(),
            ));
        }
        let pad = d.pad_token_id.unwrap_or(d.vocab_size);
        let bos = raw
            .decoder_start_token_id
            .or(d.bos_token_id)
            .unwrap_or(d.vocab_size);
        for (field, id) in [("decoder.pad_token_id", pad), ("decoder.bos_token_id", bos)] {
            if id > d.vocab_size {
                return Err(invalid(
                    field,
                    format!(
                        "{id} has no embedding row (the embeddings have vocab_size + 1 = {} rows)",
                        d.vocab_size + 1
                    ),
                ));
            }
        }
        let has_projection =
            raw.text_encoder.d_model != d.hidden_size && d.cross_attention_hidden_size.is_none();
        Ok(Self {
            t5_ff,
            bos,
            pad,
            has_projection,
            text: raw.text_encoder,
            decoder: raw.decoder,
            audio_encoder: raw.audio_encoder,
        })
    }

    /// Number of codebooks, K.
    pub fn n_codebooks(&self) -> usize {
        self.decoder.num_codebooks
    }

    /// The width of the states the decoder's cross-attention reads.
    pub fn cross_width(&self) -> usize {
        if self.has_projection {
            self.decoder.hidden_size
        } else {
            self.text.d_model
        }
    }

    /// Codes per codebook.
    pub fn vocab_size(&self) -> usize {
        self.decoder.vocab_size
    }
}

#[cfg(test)]
mod tests {
    use super::{T5Activation as A, T5FeedForward};

    #[test]
    fn feed_forward_variants_as_transformers_reads_them() {
        let p = |t| T5FeedForward::parse(t).map(|f| (f.gated, f.activation));
        assert_eq!(p("relu"), Some((false, A::Relu)));
        assert_eq!(p("gelu"), Some((false, A::Gelu)));
        assert_eq!(p("gated-gelu"), Some((true, A::GeluTanh)));
        assert_eq!(p("gated-silu"), Some((true, A::Silu)));
        assert_eq!(p("gated-gelu_new"), Some((true, A::GeluTanh)));
        assert_eq!(p("fancy-relu"), None);
        assert_eq!(p("tanh"), None);
    }
}
