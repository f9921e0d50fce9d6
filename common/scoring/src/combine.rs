//! Combining components: reward = Σ_i weight_i · (score_i − shift_i) · scale_i.

use std::sync::Arc;

use futures::future::try_join_all;

use musicrl_common::types::{ComponentInfo, SampleScore};
use musicrl_common::wire::ScoreInput;
use musicrl_config::RewardConfig;

use crate::audio::{Codec, Decoded};
use crate::error::{Result, RewardError};
use crate::scorer::{self, Batch, Scorer};

/// One configured component.
pub struct Component {
    pub scorer: Box<dyn Scorer>,
    pub weight: f32,
    pub shift: f32,
    pub scale: f32,
}

impl std::fmt::Debug for Component {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Component")
            .field("name", &self.scorer.name())
            .field("weight", &self.weight)
            .finish()
    }
}

/// The configured set of components, and the codec an audio-token policy's clips are heard
/// through.
#[derive(Debug)]
pub struct RewardModel {
    components: Vec<Component>,
    codec: Option<Arc<Codec>>,
}

impl RewardModel {
    pub fn new(components: Vec<Component>) -> Self {
        Self {
            components,
            codec: None,
        }
    }

    /// Hears every clip as audio-token codes through `codec` (an audio-token policy's).
    pub fn with_codec(mut self, codec: Arc<Codec>) -> Self {
        self.codec = Some(codec);
        self
    }

    /// The codec clips are decoded with, if any.
    pub fn codec(&self) -> Option<&Codec> {
        self.codec.as_deref()
    }

    /// Builds every component the config lists.
    pub fn from_config(config: &RewardConfig) -> Result<Self> {
        Self::from_config_secured(config, &musicrl_config::SecurityConfig::default())
    }

    /// As [`RewardModel::from_config`]; `remote` components reach their servers with
    /// `security` (TLS when their endpoint is `https://`, the `token_file` token).
    pub fn from_config_secured(
        config: &RewardConfig,
        security: &musicrl_config::SecurityConfig,
    ) -> Result<Self> {
        let components = config
            .components
            .iter()
            .map(|c| {
                Ok(Component {
                    scorer: scorer::build_secured(c, security)?,
                    weight: c.weight,
                    shift: c.shift,
                    scale: c.scale,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut model = Self::new(components);
        // The codec is loaded only when something will hear the clips.
        if !config.codec.as_os_str().is_empty() && model.hears_audio() {
            let folder = musicrl_config::paths::require("reward.codec", &config.codec)
                .map_err(|e| RewardError::Config(e.to_string()))?;
            let started = std::time::Instant::now();
            let codec = Codec::load(&folder)?;
            tracing::info!(
                folder = %folder.display(),
                version = codec.version(),
                seconds = started.elapsed().as_secs_f64(),
                "codec loaded: audio-token clips are decoded for the audio components"
            );
            model = model.with_codec(Arc::new(codec));
        }
        let version = model.scorer_version();
        if version.len() > musicrl_common::wire::MAX_SCORER_VERSION_BYTES {
            return Err(RewardError::Config(format!(
                "the reward components' combined version is {} bytes, over the {} a learner accepts: configure fewer components or shorter names",
                version.len(),
                musicrl_common::wire::MAX_SCORER_VERSION_BYTES
            )));
        }
        Ok(model)
    }

    pub fn components(&self) -> Vec<ComponentInfo> {
        self.components
            .iter()
            .map(|c| ComponentInfo {
                name: c.scorer.name().to_string(),
                version: self.component_version(c),
                weight: c.weight,
            })
            .collect()
    }

    /// A component's version; one that hears an audio-token clip names the codec too
    /// (its scores change with the codec's weights).
    fn component_version(&self, c: &Component) -> String {
        match &self.codec {
            Some(codec) if c.scorer.needs_audio() || c.scorer.needs_pcm() => {
                format!("{}+{}", c.scorer.version(), codec.version())
            }
            _ => c.scorer.version(),
        }
    }

    /// Identifies the whole configuration: every component's name, version and weight.
    pub fn scorer_version(&self) -> String {
        self.components
            .iter()
            .map(|c| {
                format!(
                    "{}@{}*{}",
                    c.scorer.name(),
                    self.component_version(c),
                    c.weight
                )
            })
            .collect::<Vec<_>>()
            .join("+")
    }

    /// Whether any component reads the clips' features.
    pub fn needs_audio(&self) -> bool {
        self.components.iter().any(|c| c.scorer.needs_audio())
    }

    /// Whether any component hears the clips (their features or their audio).
    pub fn hears_audio(&self) -> bool {
        self.components
            .iter()
            .any(|c| c.scorer.needs_audio() || c.scorer.needs_pcm())
    }

    /// Makes every sample's audio once (on all cores, off the executor) when a component
    /// hears it: an audio-token clip decoded by the codec, a melody rendered by the
    /// synthesizer; and the features at 16 kHz when a component reads them.
    pub async fn prepare(&self, inputs: Vec<ScoreInput>) -> Result<Arc<Batch>> {
        if !self.hears_audio() {
            return Ok(Arc::new(Batch::tokens_only(inputs)));
        }
        let started = std::time::Instant::now();
        let features = self.needs_audio();
        let codec = self.codec.clone();
        let batch = tokio::task::spawn_blocking(move || -> Result<Batch> {
            let Some(codec) = codec else {
                let audio = features.then(|| {
                    musicrl_rewards::clips::par_map(&inputs, |x, s| {
                        musicrl_rewards::clips::sample_features(x, &s.caption, &s.tokens)
                    })
                });
                return Ok(Batch {
                    inputs,
                    audio,
                    decoded: None,
                });
            };
            let decode_started = std::time::Instant::now();
            let clips = inputs
                .iter()
                .map(|s| codec.decode(&s.tokens))
                .collect::<Result<Vec<_>>>()?;
            metrics::histogram!(musicrl_telemetry::metrics_catalog::REWARD_DECODE_SECONDS)
                .record(decode_started.elapsed().as_secs_f64());
            let decoded = Decoded {
                sample_rate: codec.sample_rate(),
                clips,
            };
            let audio = if features {
                let rate = musicrl_rewards::features::FEATURE_SAMPLE_RATE;
                let heard = musicrl_rewards::clips::par_map(&decoded.clips, |x, pcm| {
                    musicrl_rewards::resample::resample(pcm, decoded.sample_rate, rate)
                        .map(|pcm| x.extract(&pcm))
                });
                Some(
                    heard
                        .into_iter()
                        .collect::<std::result::Result<Vec<_>, _>>()
                        .map_err(RewardError::Internal)?,
                )
            } else {
                None
            };
            Ok(Batch {
                inputs,
                audio,
                decoded: Some(decoded),
            })
        })
        .await
        .map_err(|e| RewardError::Internal(format!("rendering task: {e}")))??;
        metrics::histogram!(musicrl_telemetry::metrics_catalog::REWARD_RENDER_SECONDS)
            .record(started.elapsed().as_secs_f64());
        Ok(Arc::new(batch))
    }

    /// Scores a batch with every component (concurrently) and combines them.
    pub async fn score(&self, inputs: &[ScoreInput]) -> Result<Vec<SampleScore>> {
        let batch = self.prepare(inputs.to_vec()).await?;
        let n = batch.inputs.len();
        let per_component = try_join_all(self.components.iter().map(|c| {
            let batch = batch.clone();
            async move {
            let started = std::time::Instant::now();
            let scores = c.scorer.score_windows(batch).await?;
            metrics::histogram!(musicrl_telemetry::metrics_catalog::REWARD_COMPONENT_SECONDS, "component" => c.scorer.name().to_string())
                .record(started.elapsed().as_secs_f64());
            if scores.len() != n {
                return Err(RewardError::Scorer {
                    name: c.scorer.name().to_string(),
                    message: format!("{} scores for {n} samples", scores.len()),
                });
            }
            if let Some(i) = scores
                .iter()
                .position(|s| !s.value.is_finite() || s.windows.iter().any(|w| !w.is_finite()))
            {
                return Err(RewardError::Scorer {
                    name: c.scorer.name().to_string(),
                    message: format!("non-finite score {:?} for sample {i}", scores[i]),
                });
            }
            Ok(scores)
        }}))
        .await?;
        Ok((0..n)
            .map(|i| {
                let components: Vec<f32> = per_component.iter().map(|s| s[i].value).collect();
                let windows: Vec<Vec<f32>> =
                    if per_component.iter().all(|s| s[i].windows.is_empty()) {
                        Vec::new()
                    } else {
                        per_component.iter().map(|s| s[i].windows.clone()).collect()
                    };
                let reward = self
                    .components
                    .iter()
                    .zip(&components)
                    .map(|(c, s)| c.weight * (s - c.shift) * c.scale)
                    .sum();
                SampleScore {
                    reward,
                    components,
                    windows,
                    seal: None,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scorer::TokenFraction;

    #[tokio::test]
    async fn combination_is_the_weighted_normalised_sum() {
        let model = RewardModel::new(vec![
            Component {
                scorer: Box::new(TokenFraction::new("low", 2)),
                weight: 2.0,
                shift: 0.5,
                scale: 1.0,
            },
            Component {
                scorer: Box::new(TokenFraction::new("any", 100)),
                weight: 0.5,
                shift: 0.0,
                scale: 4.0,
            },
        ]);
        let batch = vec![ScoreInput {
            caption: "c".into(),
            tokens: vec![0, 1, 5, 7],
        }];
        let out = model.score(&batch).await.unwrap();
        assert_eq!(out[0].components, vec![0.5, 1.0]);
        // 2·(0.5 − 0.5)·1 + 0.5·(1 − 0)·4 = 2.
        assert!((out[0].reward - 2.0).abs() < 1e-6);
        assert!(model.scorer_version().contains("low@token-fraction-1"));
    }

    #[test]
    fn a_combined_version_too_long_for_the_wire_is_refused_at_start() {
        let component = |i: usize| musicrl_config::ComponentConfig {
            kind: "token-fraction".into(),
            name: format!("{i:0>200}"),
            ..musicrl_config::ComponentConfig::default()
        };
        let fits = RewardConfig {
            components: (0..4).map(component).collect(),
            ..RewardConfig::default()
        };
        assert!(RewardModel::from_config(&fits).is_ok());
        let long = RewardConfig {
            components: (0..20).map(component).collect(),
            ..RewardConfig::default()
        };
        let err = RewardModel::from_config(&long).expect_err("over the limit");
        assert!(err.to_string().contains("combined version"), "{err}");
    }
}
