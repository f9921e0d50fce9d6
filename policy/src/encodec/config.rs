//! An EnCodec configuration (transformers' `EncodecConfig`): the keys a folder's
//! `config.json` gives (a standalone `EncodecModel` folder) or its `audio_encoder` section (a
//! MusicGen folder), with transformers' defaults for keys a file leaves out, validated into
//! what this decoder runs.

use std::path::Path;

use serde::Deserialize;

use crate::PolicyError;

/// transformers' `EncodecConfig`, the keys the decoder reads.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct EncodecConfig {
    #[serde(default = "d_sampling_rate")]
    pub sampling_rate: usize,
    #[serde(default = "d_audio_channels")]
    pub audio_channels: usize,
    #[serde(default = "d_target_bandwidths")]
    pub target_bandwidths: Vec<f64>,
    #[serde(default)]
    pub normalize: bool,
    #[serde(default)]
    pub chunk_length_s: Option<f64>,
    #[serde(default = "d_hidden_size")]
    pub hidden_size: usize,
    #[serde(default = "d_num_filters")]
    pub num_filters: usize,
    #[serde(default = "d_one")]
    pub num_residual_layers: usize,
    #[serde(default = "d_upsampling_ratios")]
    pub upsampling_ratios: Vec<usize>,
    #[serde(default = "d_norm_type")]
    pub norm_type: String,
    #[serde(default = "d_kernel")]
    pub kernel_size: usize,
    #[serde(default = "d_kernel")]
    pub last_kernel_size: usize,
    #[serde(default = "d_residual_kernel")]
    pub residual_kernel_size: usize,
    #[serde(default = "d_two")]
    pub dilation_growth_rate: usize,
    #[serde(default = "d_true")]
    pub use_causal_conv: bool,
    #[serde(default = "d_pad_mode")]
    pub pad_mode: String,
    #[serde(default = "d_two")]
    pub compress: usize,
    #[serde(default = "d_two")]
    pub num_lstm_layers: usize,
    #[serde(default = "d_trim_right_ratio")]
    pub trim_right_ratio: f64,
    #[serde(default = "d_codebook_size")]
    pub codebook_size: usize,
    #[serde(default)]
    pub codebook_dim: Option<usize>,
    #[serde(default = "d_true")]
    pub use_conv_shortcut: bool,
}

fn d_sampling_rate() -> usize {
    24_000
}
fn d_audio_channels() -> usize {
    1
}
fn d_target_bandwidths() -> Vec<f64> {
    vec![1.5, 3.0, 6.0, 12.0, 24.0]
}
fn d_hidden_size() -> usize {
    128
}
fn d_num_filters() -> usize {
    32
}
fn d_one() -> usize {
    1
}
fn d_two() -> usize {
    2
}
fn d_upsampling_ratios() -> Vec<usize> {
    vec![8, 5, 4, 2]
}
fn d_norm_type() -> String {
    "weight_norm".into()
}
fn d_kernel() -> usize {
    7
}
fn d_residual_kernel() -> usize {
    3
}
fn d_true() -> bool {
    true
}
fn d_pad_mode() -> String {
    "reflect".into()
}
fn d_trim_right_ratio() -> f64 {
    1.0
}
fn d_codebook_size() -> usize {
    1024
}

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadMode {
    /// PyTorch's `reflect` (the default, and `facebook/encodec_32khz`'s).
    Reflect,
    /// Zeros (`constant`, `zeros`).
    Zeros,
    /// PyTorch's `replicate`.
    Replicate,
}

impl EncodecConfig {
    /// Parses and validates a configuration; `path` names the file in errors.
    pub fn from_value(value: serde_json::Value, path: &Path) -> Result<Self, PolicyError> {
        let config: EncodecConfig =
            serde_json::from_value(value).map_err(|e| PolicyError::Config {
                path: path.to_path_buf(),
                field: "audio_encoder".into(),
                why: format!("not an EnCodec configuration: {e}"),
            })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), PolicyError> {
        let bad = |field: &str, why: String| PolicyError::Config {
            path: path.to_path_buf(),
            field: field.into(),
            why,
        };
        let positive = [
            ("sampling_rate", self.sampling_rate),
            ("audio_channels", self.audio_channels),
            ("hidden_size", self.hidden_size),
            ("num_filters", self.num_filters),
            ("kernel_size", self.kernel_size),
            ("last_kernel_size", self.last_kernel_size),
            ("residual_kernel_size", self.residual_kernel_size),
            ("dilation_growth_rate", self.dilation_growth_rate),
            ("compress", self.compress),
            ("num_lstm_layers", self.num_lstm_layers),
            ("codebook_size", self.codebook_size),
            ("codebook_dim", self.codebook_dim()),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(bad(field, "must be at least 1".into()));
            }
        }
        if self.upsampling_ratios.is_empty() || self.upsampling_ratios.contains(&0) {
            return Err(bad(
                "upsampling_ratios",
                format!(
                    "{:?}: expected one or more ratios ≥ 1",
                    self.upsampling_ratios
                ),
            ));
        }
        if self.num_filters << self.upsampling_ratios.len() > 1 << 20 {
            return Err(bad(
                "upsampling_ratios",
                "too many stages for num_filters: the first layer would exceed 2^20 channels"
                    .into(),
            ));
        }
        if self.norm_type != "weight_norm" {
            return Err(bad(
                "norm_type",
                format!(
                    "{:?}: this decoder runs weight-normalised convolutions (\"weight_norm\", \
                     the 24 and 32 kHz models'); \"time_group_norm\" (the 48 kHz model's) is \
                     not implemented",
                    self.norm_type
                ),
            ));
        }
        if self.chunk_length_s.is_some() {
            return Err(bad(
                "chunk_length_s",
                "chunked decoding with overlap (the 48 kHz model's) is not implemented; this \
                 decoder decodes a clip in one frame, as MusicGen's codec does"
                    .into(),
            ));
        }
        self.pad_mode(path)?;
        if !(0.0..=1.0).contains(&self.trim_right_ratio) {
            return Err(bad(
                "trim_right_ratio",
                format!("{} is outside [0, 1]", self.trim_right_ratio),
            ));
        }
        Ok(())
    }

    /// The padding mode.
    pub fn pad_mode(&self, path: &Path) -> Result<PadMode, PolicyError> {
        match self.pad_mode.as_str() {
            "reflect" => Ok(PadMode::Reflect),
            "constant" | "zeros" => Ok(PadMode::Zeros),
            "replicate" => Ok(PadMode::Replicate),
            other => Err(PolicyError::Config {
                path: path.to_path_buf(),
                field: "pad_mode".into(),
                why: format!("{other:?}: expected \"reflect\", \"constant\" or \"replicate\""),
            }),
        }
    }

    /// The codebooks' width (`codebook_dim`, or `hidden_size` when unset).
    pub fn codebook_dim(&self) -> usize {
        self.codebook_dim.unwrap_or(self.hidden_size)
    }

    /// Audio samples per code frame: the product of the upsampling ratios.
    pub fn hop_length(&self) -> usize {
        self.upsampling_ratios.iter().product()
    }

    /// Code frames a second, as transformers computes it (`ceil(rate / hop)`).
    pub fn frame_rate(&self) -> usize {
        self.sampling_rate.div_ceil(self.hop_length())
    }

    /// The codebooks the model has: transformers' `num_quantizers`.
    pub fn num_quantizers(&self) -> usize {
        let bandwidth = self.target_bandwidths.last().copied().unwrap_or(0.0);
        let bits = (self.codebook_size as f64).log2();
        ((1000.0 * bandwidth) / (self.frame_rate() as f64 * bits)).floor() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn musicgen_small_codec_shape_is_computed_as_transformers_does() {
        // facebook/encodec_32khz's config.json keys that differ from the defaults.
        let value = serde_json::json!({
            "sampling_rate": 32000, "target_bandwidths": [2.2], "num_filters": 64,
            "upsampling_ratios": [8, 5, 4, 4], "use_causal_conv": false,
            "codebook_size": 2048, "use_conv_shortcut": false
        });
        let c = EncodecConfig::from_value(value, Path::new("config.json")).unwrap();
        assert_eq!(c.hop_length(), 640);
        assert_eq!(c.frame_rate(), 50);
        // 1000 · 2.2 / (50 · 11) = 4 codebooks.
        assert_eq!(c.num_quantizers(), 4);
        assert_eq!(c.codebook_dim(), 128);
        assert_eq!(c.pad_mode(Path::new("x")).unwrap(), PadMode::Reflect);
    }

    #[test]
    fn what_the_decoder_cannot_run_is_refused_by_name() {
        let err = EncodecConfig::from_value(
            serde_json::json!({"norm_type": "time_group_norm"}),
            Path::new("c.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("norm_type") && err.contains("time_group_norm"),
            "{err}"
        );
        let err = EncodecConfig::from_value(
            serde_json::json!({"chunk_length_s": 1.0}),
            Path::new("c.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("chunk_length_s"), "{err}");
        let err =
            EncodecConfig::from_value(serde_json::json!({"pad_mode": "circular"}), Path::new("c"))
                .unwrap_err()
                .to_string();
        assert!(err.contains("pad_mode"), "{err}");
        let err =
            EncodecConfig::from_value(serde_json::json!({"upsampling_ratios": []}), Path::new("c"))
                .unwrap_err()
                .to_string();
        assert!(err.contains("upsampling_ratios"), "{err}");
    }
}
