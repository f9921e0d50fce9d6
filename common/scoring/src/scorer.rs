//! The scorer trait, the music reward scorers, the remote scorer and the test scorer.

use std::sync::{Arc, Mutex};

use musicrl_common::wire::ScoreInput;
use musicrl_config::{ComponentConfig, SecurityConfig};
use musicrl_proto::v1 as pb;
use musicrl_rewards::features::Features;
use musicrl_rewards::preference::model::PreferenceModel;
use musicrl_rewards::quality::QualityModel;
use musicrl_rewards::text::TextModel;

pub use crate::audio::Decoded;
use crate::error::{Result, RewardError};

/// One request's samples, with their audio features when a component needs them: each
/// sequence is decoded and rendered once per request and shared by every audio scorer.
#[derive(Debug)]
pub struct Batch {
    pub inputs: Vec<ScoreInput>,
    /// One per input when any component [`Scorer::needs_audio`].
    pub audio: Option<Vec<Features>>,
    /// Audio-token clips decoded by the codec, when a component hears audio; `None` for
    /// melody clips (rendered by the synthesizer where audio is needed).
    pub decoded: Option<Decoded>,
}

impl Batch {
    /// Samples and nothing prepared (the scorers that read tokens only).
    pub fn tokens_only(inputs: Vec<ScoreInput>) -> Self {
        Self {
            inputs,
            audio: None,
            decoded: None,
        }
    }

    pub fn audio(&self) -> Result<&[Features]> {
        self.audio
            .as_deref()
            .ok_or_else(|| RewardError::Internal("audio features were not prepared".into()))
    }

    /// Every clip's mono audio at `rate` Hz: the codec's decoding resampled, or the melody
    /// rendered by the synthesizer at `rate` (seeded by its tokens, as every audio scorer
    /// hears it). Blocking work on every core: call it off the executor.
    pub fn pcm_at(&self, rate: u32) -> Result<Vec<Vec<f32>>> {
        match &self.decoded {
            Some(d) => {
                let resampled = musicrl_rewards::clips::par_map(&d.clips, |_, pcm| {
                    musicrl_rewards::resample::resample(pcm, d.sample_rate, rate)
                });
                resampled
                    .into_iter()
                    .collect::<std::result::Result<_, _>>()
                    .map_err(RewardError::Internal)
            }
            None => Ok(musicrl_rewards::clips::par_map(&self.inputs, |_, s| {
                musicrl_rewards::clips::sample_audio(&s.caption, &s.tokens, rate)
            })),
        }
    }
}

/// A sequence-level reward component. Implementations must be deterministic for a given
/// version, return one finite score per input, and do heavy work off the async executor.
#[tonic::async_trait]
pub trait Scorer: Send + Sync + 'static {
    /// The component's name on the wire and in metrics.
    fn name(&self) -> &str;
    /// Identifies the scorer's weights or rules; changes whenever its scores could change.
    fn version(&self) -> String;
    /// Whether the scorer reads [`Batch::audio`] (the clips' features at 16 kHz).
    fn needs_audio(&self) -> bool {
        false
    }
    /// Whether the scorer reads the clips' audio itself ([`Batch::pcm_at`]), so an
    /// audio-token batch must be decoded for it.
    fn needs_pcm(&self) -> bool {
        false
    }
    /// One score per input, in order.
    async fn score(&self, batch: Arc<Batch>) -> Result<Vec<f32>>;
    /// One score per input with the window scores it averaged (the provenance the learner
    /// logs); by default a scorer reports no windows.
    async fn score_windows(&self, batch: Arc<Batch>) -> Result<Vec<Scored>> {
        Ok(self
            .score(batch)
            .await?
            .into_iter()
            .map(Scored::whole)
            .collect())
    }
}

/// The scores of [`Scored`]s, without their windows.
fn values(scored: Vec<Scored>) -> Vec<f32> {
    scored.into_iter().map(|s| s.value).collect()
}

/// One sample's score and the scores of the windows averaged into it (empty when the
/// scorer reads the whole clip at once).
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub value: f32,
    pub windows: Vec<f32>,
}

impl Scored {
    pub fn whole(value: f32) -> Scored {
        Scored {
            value,
            windows: Vec::new(),
        }
    }
}

/// **A test scorer, not a music reward**: the fraction of a sequence's tokens whose id is
/// below `target_below`. It gives the RL system an honest, cheap, caption-independent
/// objective that a policy can visibly climb, so the distributed loop is tested end to end
/// independently of the music reward models.
#[derive(Debug, Clone)]
pub struct TokenFraction {
    name: String,
    target_below: u32,
}

impl TokenFraction {
    pub fn new(name: impl Into<String>, target_below: u32) -> Self {
        Self {
            name: name.into(),
            target_below,
        }
    }

    /// The score of one sequence, in [0, 1].
    pub fn score_one(&self, tokens: &[u32]) -> f32 {
        if tokens.is_empty() {
            return 0.0;
        }
        tokens.iter().filter(|&&t| t < self.target_below).count() as f32 / tokens.len() as f32
    }
}

#[tonic::async_trait]
impl Scorer for TokenFraction {
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> String {
        format!("token-fraction-1(target_below={})", self.target_below)
    }

    async fn score(&self, batch: Arc<Batch>) -> Result<Vec<f32>> {
        Ok(batch
            .inputs
            .iter()
            .map(|s| self.score_one(&s.tokens))
            .collect())
    }
}

/// A trained model scored off the executor: `score_fn` maps the model and a batch to one score
/// per sample. The text, quality and preference components are instances.
pub struct ModelScorer<M: Send + 'static> {
    name: String,
    version: String,
    needs_audio: bool,
    model: Arc<Mutex<M>>,
    score_fn: fn(&M, &Batch) -> Result<Vec<Scored>>,
}

impl<M: Send + 'static> ModelScorer<M> {
    pub fn new(
        name: impl Into<String>,
        version: String,
        needs_audio: bool,
        model: M,
        score_fn: fn(&M, &Batch) -> Result<Vec<Scored>>,
    ) -> Self {
        Self {
            name: name.into(),
            version,
            needs_audio,
            model: Arc::new(Mutex::new(model)),
            score_fn,
        }
    }
}

#[tonic::async_trait]
impl<M: Send + 'static> Scorer for ModelScorer<M> {
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> String {
        self.version.clone()
    }

    fn needs_audio(&self) -> bool {
        self.needs_audio
    }

    async fn score(&self, batch: Arc<Batch>) -> Result<Vec<f32>> {
        Ok(values(self.score_windows(batch).await?))
    }

    async fn score_windows(&self, batch: Arc<Batch>) -> Result<Vec<Scored>> {
        let (model, score_fn, name) = (self.model.clone(), self.score_fn, self.name.clone());
        tokio::task::spawn_blocking(move || {
            let model = model
                .lock()
                .map_err(|_| RewardError::Internal(format!("{name} model lock poisoned")))?;
            score_fn(&model, &batch)
        })
        .await
        .map_err(|e| RewardError::Internal(format!("{} scorer task: {e}", self.name)))?
    }
}

/// Text adherence: the MuLan-style model's window-averaged cosine similarity, in [−1, 1].
pub fn text_scorer(name: &str, model: TextModel) -> ModelScorer<TextModel> {
    let version = model.version.clone();
    ModelScorer::new(name, version, true, model, |m, batch| {
        let items: Vec<(&str, &Features)> = batch
            .inputs
            .iter()
            .zip(batch.audio()?)
            .map(|(i, f)| (i.caption.as_str(), f))
            .collect();
        Ok(m.score_windows(&items)
            .into_iter()
            .map(|(value, windows)| Scored { value, windows })
            .collect())
    })
}

/// Quality: the MOS-style model's head/tail prediction rescaled to [0, 1].
pub fn quality_scorer(name: &str, model: QualityModel) -> ModelScorer<QualityModel> {
    let version = model.version.clone();
    ModelScorer::new(name, version, true, model, |m, batch| {
        let clips: Vec<&Features> = batch.audio()?.iter().collect();
        Ok(m.score_windows(&clips)
            .into_iter()
            .map(|(value, windows)| Scored { value, windows })
            .collect())
    })
}

/// User preference: the Bradley–Terry model's unbounded scalar over caption + tokens (a
/// melody's, or a MusicGen policy's audio tokens; no audio needed).
pub fn preference_scorer(name: &str, model: PreferenceModel) -> ModelScorer<PreferenceModel> {
    let version = model.version.clone();
    ModelScorer::new(name, version, false, model, |m, batch| {
        let items: Vec<(&str, &[u32])> = batch
            .inputs
            .iter()
            .map(|i| (i.caption.as_str(), i.tokens.as_slice()))
            .collect();
        Ok(m.try_score(&items)
            .map_err(|e| musicrl_common::Error::InvalidArgument(e.to_string()))?
            .into_iter()
            .map(Scored::whole)
            .collect())
    })
}

/// A component served by another endpoint that speaks the same reward protocol (for
/// example a Python MuLan or CLAP service): the batch is forwarded as a Score request and
/// the named component of the answer is returned.
pub struct RemoteScorer {
    name: String,
    endpoint: String,
    component: String,
    /// `Some(rate)`: send each clip's audio at this sample rate with its tokens.
    audio_rate: Option<u32>,
    /// `[start_s, length_s]` windows of the audio scored, their mean the score (empty:
    /// the whole clip).
    windows: Vec<[f32; 2]>,
    client: pb::reward_service_client::RewardServiceClient<tonic::transport::Channel>,
    /// The remote component's version, as last reported.
    seen_version: Mutex<String>,
    /// The bearer token sent with every call (`security.token_file`).
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

/// Audio bytes per remote call: a batch whose clips exceed this goes as several calls, so each
/// message stays under gRPC's common 4 MiB receive limit.
pub const REMOTE_CALL_AUDIO_BYTES: usize = 3 << 20;

impl RemoteScorer {
    /// Connects lazily: the remote server may start after this one. With `audio_rate` the
    /// clips go with their rendered audio.
    pub fn new(
        name: impl Into<String>,
        endpoint: &str,
        component: &str,
        audio_rate: Option<u32>,
    ) -> Result<Self> {
        Self::secured(
            name,
            endpoint,
            component,
            audio_rate,
            &SecurityConfig::default(),
        )
    }

    /// As [`RemoteScorer::new`], reaching an `https://` endpoint with `[security]`'s TLS
    /// (and client certificate) and sending its `token_file` token on every call.
    pub fn secured(
        name: impl Into<String>,
        endpoint: &str,
        component: &str,
        audio_rate: Option<u32>,
        security: &SecurityConfig,
    ) -> Result<Self> {
        let bad = |e: String| RewardError::Config(format!("remote endpoint {endpoint:?}: {e}"));
        let e = tonic::transport::Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| bad(e.to_string()))?;
        let host = e.uri().host().unwrap_or("").to_string();
        let channel = musicrl_security::tls::endpoint(security, e, &host)
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(60))
            .connect_lazy();
        let token = musicrl_security::tokens::client_token(&security.token_file)?;
        Ok(Self {
            name: name.into(),
            endpoint: endpoint.to_string(),
            component: component.to_string(),
            audio_rate,
            windows: Vec::new(),
            // gzip: every gRPC implementation decodes it (grpcio, grpc-go, grpc-java).
            client: pb::reward_service_client::RewardServiceClient::new(channel)
                .send_compressed(tonic::codec::CompressionEncoding::Gzip)
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
                .max_decoding_message_size(64 << 20),
            seen_version: Mutex::new("unknown".into()),
            token,
        })
    }

    /// Scores `windows` of each clip (`[start_s, length_s]`, see `reward.components.windows`)
    /// and averages them.
    pub fn with_windows(mut self, windows: Vec<[f32; 2]>) -> Self {
        self.windows = windows;
        self
    }

    fn error(&self, message: String) -> RewardError {
        RewardError::Scorer {
            name: self.name.clone(),
            message,
        }
    }

    /// One call: the remote component's score of every sample of `request`, in order.
    async fn call(&self, request: pb::ScoreRequest) -> Result<Vec<f32>> {
        let n = request.samples.len();
        let mut request = tonic::Request::new(request);
        musicrl_security::authorize(&mut request, self.token.as_ref());
        let response = self
            .client
            .clone()
            .score(request)
            .await
            .map_err(|s| {
                self.error(format!(
                    "{}: {} ({:?})",
                    self.endpoint,
                    s.message(),
                    s.code()
                ))
            })?
            .into_inner();
        // The answer is validated where every answer from the wire is (counts, finite
        // numbers, one score per component); this component's column is then taken.
        let (scores, components, _) = musicrl_common::wire::score_response_from_wire(response, n)
            .map_err(|e| self.error(format!("{}: {e}", self.endpoint)))?;
        let index = components
            .iter()
            .position(|c| c.name == self.component)
            .ok_or_else(|| {
                let names: Vec<&str> = components.iter().map(|c| c.name.as_str()).collect();
                self.error(format!(
                    "{} has no component {:?} (it has {names:?})",
                    self.endpoint, self.component
                ))
            })?;
        if let Ok(mut v) = self.seen_version.lock() {
            *v = components[index].version.clone();
        }
        Ok(scores.iter().map(|s| s.components[index]).collect())
    }
}

#[tonic::async_trait]
impl Scorer for RemoteScorer {
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> String {
        let seen = self
            .seen_version
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default();
        let audio = self
            .audio_rate
            .map(|r| format!("+audio@{r}Hz"))
            .unwrap_or_default();
        format!("remote({}#{}{audio})@{seen}", self.endpoint, self.component)
    }

    fn needs_pcm(&self) -> bool {
        self.audio_rate.is_some()
    }

    async fn score(&self, batch: Arc<Batch>) -> Result<Vec<f32>> {
        Ok(values(self.score_windows(batch).await?))
    }

    async fn score_windows(&self, batch: Arc<Batch>) -> Result<Vec<Scored>> {
        let Some(rate) = self.audio_rate else {
            let scores = self
                .call(musicrl_common::wire::score_request_to_wire(&batch.inputs))
                .await?;
            return Ok(scores.into_iter().map(Scored::whole).collect());
        };
        // Every clip as the audio scorers hear it (decoded by the codec, or rendered with
        // the same synthesizer seed), at the remote model's rate, off the executor.
        let (pieces, owners) = {
            let batch = batch.clone();
            let windows = self.windows.clone();
            tokio::task::spawn_blocking(move || -> Result<_> {
                let clips = batch.pcm_at(rate)?;
                // Each window goes as its own sample (with its clip's caption and tokens).
                let mut pieces: Vec<(usize, Vec<f32>)> = Vec::new();
                for (i, pcm) in clips.iter().enumerate() {
                    for range in crate::audio::windows(pcm.len(), rate, &windows) {
                        pieces.push((i, pcm[range].to_vec()));
                    }
                }
                let owners: Vec<usize> = pieces.iter().map(|(i, _)| *i).collect();
                Ok((
                    pieces.into_iter().map(|(_, p)| p).collect::<Vec<_>>(),
                    owners,
                ))
            })
            .await
            .map_err(|e| RewardError::Internal(format!("audio task: {e}")))??
        };
        let inputs: Vec<ScoreInput> = owners.iter().map(|&i| batch.inputs[i].clone()).collect();
        // Calls of at most REMOTE_CALL_AUDIO_BYTES of audio each (a longer clip goes alone).
        let mut scores = Vec::with_capacity(inputs.len());
        let mut start = 0;
        while start < inputs.len() {
            let mut end = start + 1;
            let mut bytes = musicrl_common::wire::audio_wire_bytes(pieces[start].len());
            while end < inputs.len() {
                let next = musicrl_common::wire::audio_wire_bytes(pieces[end].len());
                if bytes + next > REMOTE_CALL_AUDIO_BYTES {
                    break;
                }
                bytes += next;
                end += 1;
            }
            let request = musicrl_common::wire::score_request_with_audio(
                &inputs[start..end],
                &pieces[start..end],
                rate,
            );
            scores.extend(self.call(request).await?);
            start = end;
        }
        let mut out: Vec<Scored> = (0..batch.inputs.len())
            .map(|_| Scored {
                value: 0.0,
                windows: Vec::new(),
            })
            .collect();
        for (&i, score) in owners.iter().zip(scores) {
            out[i].windows.push(score);
        }
        for s in &mut out {
            s.value = s.windows.iter().sum::<f32>() / s.windows.len().max(1) as f32;
            if self.windows.is_empty() {
                s.windows.clear();
            }
        }
        Ok(out)
    }
}

/// **A test scorer, not a music reward**: how loud the clip is heard, its mean level over
/// the loudness envelope mapped from [−60, 0] dBFS to [0, 1]. Like `token-fraction` it gives
/// the loop an honest objective a policy can climb, but one it meets only through the audio
/// (for an audio-token policy: through the codec), so the whole audio path is tested end to
/// end.
#[derive(Debug, Clone)]
pub struct Loudness {
    name: String,
}

impl Loudness {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    /// The score of one clip's features, in [0, 1].
    pub fn score_one(features: &Features) -> f32 {
        if features.envelope.is_empty() {
            return 0.0;
        }
        let mean = features
            .envelope
            .iter()
            .map(|db| db.max(-60.0))
            .sum::<f32>()
            / features.envelope.len() as f32;
        ((mean + 60.0) / 60.0).clamp(0.0, 1.0)
    }
}

#[tonic::async_trait]
impl Scorer for Loudness {
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> String {
        "loudness-1(mean envelope dB, -60..0 -> 0..1)".into()
    }

    fn needs_audio(&self) -> bool {
        true
    }

    async fn score(&self, batch: Arc<Batch>) -> Result<Vec<f32>> {
        Ok(batch.audio()?.iter().map(Loudness::score_one).collect())
    }
}

/// A rule-based scorer of the audio: nothing to load, no checkpoint; its version names its
/// rules and constants. Two are served:
///
/// - `attributes` ([`musicrl_rewards::theory`]): the caption's claims heard, the key by the
///   Krumhansl–Schmuckler algorithm with Albrecht–Shanahan profiles on the heard pitch, the
///   meter from the downbeat accents; each claim's score in [0, 1], their mean;
/// - `form` ([`musicrl_rewards::form`]): the tune's form heard, a regular metre, a whole last
///   bar, no degenerate repetition, a singable range; a quality stand-in.
pub struct RuleScorer {
    name: String,
    version: fn() -> String,
    rule: fn(&str, &Features) -> f32,
}

impl RuleScorer {
    pub fn attributes(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: musicrl_rewards::theory::version,
            rule: |caption, features| musicrl_rewards::theory::score(caption, features).overall,
        }
    }

    pub fn form(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: musicrl_rewards::form::version,
            rule: |caption, features| musicrl_rewards::form::score(caption, features).overall,
        }
    }
}

#[tonic::async_trait]
impl Scorer for RuleScorer {
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> String {
        (self.version)()
    }

    fn needs_audio(&self) -> bool {
        true
    }

    async fn score(&self, batch: Arc<Batch>) -> Result<Vec<f32>> {
        let rule = self.rule;
        tokio::task::spawn_blocking(move || {
            Ok(batch
                .inputs
                .iter()
                .zip(batch.audio()?)
                .map(|(input, features)| rule(&input.caption, features))
                .collect())
        })
        .await
        .map_err(|e| RewardError::Internal(format!("{} scorer task: {e}", self.name)))?
    }
}

/// Builds the scorer a component names.
pub fn build(component: &ComponentConfig) -> Result<Box<dyn Scorer>> {
    build_secured(component, &SecurityConfig::default())
}

/// As [`build`]; a `remote` component reaches its server with `security` (TLS, token).
pub fn build_secured(
    component: &ComponentConfig,
    security: &SecurityConfig,
) -> Result<Box<dyn Scorer>> {
    let name = component.display_name();
    let checkpoint = || {
        if component.checkpoint.as_os_str().is_empty() {
            Err(RewardError::Config(format!(
                "component {name:?} of kind {:?} needs `checkpoint`, the folder `musicrl train-reward {}` wrote",
                component.kind, component.kind
            )))
        } else {
            // Found where the binary looks for every input (the working directory, then the
            // installation), whoever loaded the configuration.
            musicrl_config::paths::require(
                &format!("reward.components[{name}].checkpoint"),
                &component.checkpoint,
            )
            .map_err(|e| RewardError::Config(e.to_string()))
        }
    };
    match component.kind.as_str() {
        "token-fraction" => Ok(Box::new(TokenFraction::new(name, component.target_below))),
        "loudness" => Ok(Box::new(Loudness::new(name))),
        "attributes" => Ok(Box::new(RuleScorer::attributes(name))),
        "form" => Ok(Box::new(RuleScorer::form(name))),
        "text" => {
            let model =
                TextModel::load(&checkpoint()?).map_err(|e| RewardError::Config(e.to_string()))?;
            Ok(Box::new(text_scorer(name, model)))
        }
        "quality" => {
            let model = QualityModel::load(&checkpoint()?)
                .map_err(|e| RewardError::Config(e.to_string()))?;
            Ok(Box::new(quality_scorer(name, model)))
        }
        "preference" => {
            let model = PreferenceModel::load(&checkpoint()?)
                .map_err(|e| RewardError::Config(e.to_string()))?;
            Ok(Box::new(preference_scorer(name, model)))
        }
        "remote" => {
            if component.endpoint.is_empty() || component.remote_component.is_empty() {
                return Err(RewardError::Config(format!(
                    "component {name:?} of kind \"remote\" needs `endpoint` and `remote_component`"
                )));
            }
            Ok(Box::new(
                RemoteScorer::secured(
                    name,
                    &component.endpoint,
                    &component.remote_component,
                    component.send_audio.then_some(component.sample_rate),
                    security,
                )?
                .with_windows(component.windows.clone()),
            ))
        }
        other => Err(RewardError::UnknownScorer(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_fraction_counts_hits() {
        let s = TokenFraction::new("t", 4);
        assert_eq!(s.score_one(&[0, 1, 5, 9]), 0.5);
        assert_eq!(s.score_one(&[3, 3]), 1.0);
        assert_eq!(s.score_one(&[4]), 0.0);
    }
}
