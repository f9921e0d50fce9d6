//! EnCodec's decoder (transformers' `EncodecModel.decode`): codes of a residual vector
//! quantiser → the sum of each codebook's embedding → the SEANet decoder → PCM at the
//! codec's rate. Loaded by tensor name from a Hugging Face folder: a standalone
//! `EncodecModel` (`facebook/encodec_32khz` layout: `config.json` with `model_type =
//! "encodec"`) or a MusicGen folder (its `audio_encoder` section and `audio_encoder.*`
//! tensors). Only the codec's tensors are read from the file, and of them only the decoder's
//! and the codebooks are loaded.
//!
//! Simplifications, each refused by name at load: weight-normalised convolutions only (not
//! the 48 kHz model's `time_group_norm`), one frame per clip (no chunking with overlap), no
//! per-chunk audio scales (MusicGen decodes without them).

pub mod config;
mod seanet;

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};

pub use config::{EncodecConfig, PadMode};
pub use seanet::SeanetDecoder;

use crate::PolicyError;
use crate::musicgen::open_weights_under;

/// Decoded audio: one row of samples per channel, at `sample_rate`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pcm {
    pub sample_rate: u32,
    pub channels: Vec<Vec<f32>>,
}

/// A loaded EnCodec decoder.
#[derive(Debug, Clone)]
pub struct Encodec {
    config: EncodecConfig,
    /// Each codebook's embedding `[codebook_size, codebook_dim]`.
    codebooks: Vec<Tensor<2>>,
    decoder: SeanetDecoder,
    version: String,
    folder: PathBuf,
    device: Device,
}

impl Encodec {
    /// Loads the decoder of a standalone EnCodec folder or of a MusicGen folder's codec.
    /// Refuses, naming what is wrong: no `config.json`, a configuration this decoder cannot
    /// run, a missing or mis-shaped tensor, a tensor under the decoder's names it does not
    /// use.
    pub fn load(folder: &Path, device: &Device) -> Result<Self, PolicyError> {
        let config_path = folder.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|error| {
            if folder.is_dir() {
                PolicyError::Io {
                    path: config_path.clone(),
                    error,
                }
            } else {
                PolicyError::Folder {
                    path: folder.to_path_buf(),
                    why: "not a folder (an EnCodec or MusicGen folder holds config.json and \
                          model.safetensors)"
                        .into(),
                }
            }
        })?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| PolicyError::Folder {
                path: config_path.clone(),
                why: format!("not JSON: {e}"),
            })?;
        let (section, prefix) = match (value.get("audio_encoder"), value.get("model_type")) {
            (Some(section), _) => (section.clone(), "audio_encoder."),
            (None, Some(t)) if t == "encodec" => (value.clone(), ""),
            _ => {
                return Err(PolicyError::Folder {
                    path: config_path,
                    why: "neither an EnCodec configuration (model_type \"encodec\") nor a \
                          MusicGen one (an audio_encoder section)"
                        .into(),
                });
            }
        };
        let config = EncodecConfig::from_value(section, &config_path)?;
        let pad = config.pad_mode(&config_path)?;
        // Only the codec's own tensors are read (a MusicGen file is mostly the decoder).
        let weights = open_weights_under(folder, prefix)?;
        let mut reader = seanet::Reader {
            weights: &weights,
            prefix: prefix.to_string(),
            hasher: blake3::Hasher::new(),
            device: device.clone(),
        };
        let dim = config.codebook_dim();
        if dim != config.hidden_size {
            // transformers' quantiser has no projection: its output feeds the decoder as is.
            return Err(PolicyError::Config {
                path: config_path,
                field: "codebook_dim".into(),
                why: format!(
                    "{dim} differs from hidden_size {}: EnCodec's quantiser has no projection",
                    config.hidden_size
                ),
            });
        }
        let mut codebooks = Vec::new();
        let mut ignored = vec![format!("{prefix}encoder.")];
        for n in 0..config.num_quantizers() {
            let embed = format!("quantizer.layers.{n}.codebook.embed");
            let values = reader.values(&embed, &[config.codebook_size, dim])?;
            codebooks.push(Tensor::from_data(
                TensorData::new(values, [config.codebook_size, dim]),
                device,
            ));
            // The codebook's training statistics (k-means state), not needed to decode.
            for stat in ["inited", "cluster_size", "embed_avg"] {
                ignored.push(format!("{prefix}quantizer.layers.{n}.codebook.{stat}"));
            }
        }
        if codebooks.is_empty() {
            return Err(PolicyError::Config {
                path: config_path,
                field: "target_bandwidths".into(),
                why: "gives no codebooks (num_quantizers = 0)".into(),
            });
        }
        let decoder = SeanetDecoder::load(&mut reader, &config, pad)?;
        let hash = reader.hasher.finalize().to_hex();
        let ignored: Vec<&str> = ignored.iter().map(String::as_str).collect();
        weights.finish_within(prefix, &ignored)?;
        Ok(Self {
            version: format!("encodec-{}", &hash.as_str()[..12]),
            config,
            codebooks,
            decoder,
            folder: folder.to_path_buf(),
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &EncodecConfig {
        &self.config
    }

    /// `encodec-` and the first 12 hex digits of a hash of the decoder's weights.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn folder(&self) -> &Path {
        &self.folder
    }

    pub fn sample_rate(&self) -> u32 {
        self.config.sampling_rate as u32
    }

    /// The codebooks this codec holds (a clip may use the first K of them).
    pub fn num_codebooks(&self) -> usize {
        self.codebooks.len()
    }

    /// Checks a clip's codes: 1 to [`num_codebooks`](Self::num_codebooks) rows, all of one
    /// length T ≥ 1, every code below the codebook size. Returns T.
    pub fn check(&self, codes: &[Vec<u32>]) -> Result<usize, PolicyError> {
        let k = codes.len();
        if k == 0 || k > self.codebooks.len() {
            return Err(PolicyError::InvalidInput(format!(
                "{k} rows of codes; this codec decodes 1 to {} codebooks",
                self.codebooks.len()
            )));
        }
        let t = codes[0].len();
        if t == 0 {
            return Err(PolicyError::InvalidInput("no frames to decode".into()));
        }
        for (row, r) in codes.iter().enumerate() {
            if r.len() != t {
                return Err(PolicyError::InvalidInput(format!(
                    "codebook {row} has {} frames, codebook 0 has {t}: every row must be as long",
                    r.len()
                )));
            }
            if let Some((frame, code)) = r
                .iter()
                .enumerate()
                .find(|(_, c)| **c as usize >= self.config.codebook_size)
            {
                return Err(PolicyError::InvalidInput(format!(
                    "code {code} at codebook {row}, frame {frame} is not below the codebook size {}",
                    self.config.codebook_size
                )));
            }
        }
        Ok(t)
    }

    /// The quantiser's output for one clip: `[1, hidden, T]`.
    fn embed(&self, codes: &[Vec<u32>], t: usize) -> Tensor<3> {
        let mut sum: Option<Tensor<2>> = None;
        for (row, book) in codes.iter().zip(&self.codebooks) {
            let ids: Vec<i64> = row.iter().map(|&c| i64::from(c)).collect();
            let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [t]), &self.device);
            let e = book.clone().select(0, ids); // [T, dim]
            sum = Some(match sum {
                Some(s) => s + e,
                None => e,
            });
        }
        sum.expect("check() requires one row at least")
            .transpose()
            .unsqueeze::<3>()
    }

    /// Decodes one clip's codes (K rows of T frames, undelayed, as MusicGen writes them) to
    /// `T · hop` samples a channel.
    pub fn decode(&self, codes: &[Vec<u32>]) -> Result<Pcm, PolicyError> {
        let t = self.check(codes)?;
        let audio = self.decoder.forward(self.embed(codes, t)); // [1, C, samples]
        let [_, channels, samples] = audio.dims();
        let values = audio
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| PolicyError::Internal(format!("reading decoded audio: {e:?}")))?;
        Ok(Pcm {
            sample_rate: self.sample_rate(),
            channels: values
                .chunks_exact(samples)
                .take(channels)
                .map(<[f32]>::to_vec)
                .collect(),
        })
    }
}
