//! The one conversion module between wire types (`musicrl_proto::v1`) and domain types.
//!
//! Every conversion from the wire validates: token ids in range, lengths that match and fit,
//! finite floats, bounded strings. Nothing past this module sees an unchecked value.

use musicrl_proto::v1 as pb;

use crate::error::{Error, Result};
use crate::types::{
    ComponentInfo, PolicyVersion, RewardSeal, SampleScore, Trajectory, TrajectoryId,
};
use musicrl_config::PolicyConfig;
use musicrl_policy::melody::params::{ParameterBlob, ParameterEncoding};

/// Longest caption accepted, in bytes.
pub const MAX_CAPTION_BYTES: usize = 4096;
/// Longest actor id or name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest scorer version accepted, in bytes: the reward server's whole configuration
/// (every component's name, version and weight) in one string.
pub const MAX_SCORER_VERSION_BYTES: usize = 4096;

/// What a token sequence must satisfy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenLimits {
    pub vocab_size: u32,
    pub max_tokens: usize,
    /// Every sequence is exactly `max_tokens` long (a MusicGen clip: codebooks × frames).
    pub exact: bool,
}

impl TokenLimits {
    pub fn of(policy: &PolicyConfig) -> Self {
        Self {
            vocab_size: policy.vocab_size as u32,
            max_tokens: policy.max_tokens,
            exact: policy.family == musicrl_config::FAMILY_MUSICGEN,
        }
    }

    /// Checks one token sequence; the error names the offending position.
    pub fn check_tokens(&self, tokens: &[u32]) -> std::result::Result<(), Rejection> {
        if self.exact && tokens.len() != self.max_tokens {
            return Err(Rejection::new(
                "bad_length",
                format!(
                    "{} tokens, a clip of this policy is exactly {} (codebooks × frames)",
                    tokens.len(),
                    self.max_tokens
                ),
            ));
        }
        if tokens.is_empty() || tokens.len() > self.max_tokens {
            return Err(Rejection::new(
                "bad_length",
                format!("{} tokens, expected 1..={}", tokens.len(), self.max_tokens),
            ));
        }
        if let Some((i, t)) = tokens
            .iter()
            .enumerate()
            .find(|(_, t)| **t >= self.vocab_size)
        {
            return Err(Rejection::new(
                "token_out_of_range",
                format!(
                    "token {t} at position {i} is not below the vocabulary size {}",
                    self.vocab_size
                ),
            ));
        }
        Ok(())
    }
}

/// Why one item was refused: a short stable reason (a metric label) and a detail.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub reason: &'static str,
    pub detail: String,
}

impl Rejection {
    pub fn new(reason: &'static str, detail: String) -> Self {
        Self { reason, detail }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

fn check_caption(caption: &str) -> std::result::Result<(), Rejection> {
    if caption.len() > MAX_CAPTION_BYTES {
        return Err(Rejection::new(
            "caption_too_long",
            format!(
                "caption of {} bytes, at most {MAX_CAPTION_BYTES}",
                caption.len()
            ),
        ));
    }
    Ok(())
}

// ---- trajectories ----

/// The rejection reason for pushes that arrive after training ended: sampled while the last
/// update ran, no fault of the data (the learner's totals and the actors' outcomes count them
/// apart from rejected data).
pub const TRAINING_COMPLETE: &str = "training_complete";

/// Most window scores one component may report for one sample.
pub const MAX_WINDOWS: usize = 64;
/// Most components one trajectory may report.
pub const MAX_COMPONENTS: usize = 32;

/// The largest encoded Trajectory message a learner with these limits accepts: the tokens
/// and log-probabilities at their longest, the caption, names and every component's windows
/// at theirs, and room for the tags. The learner's decoder refuses a larger message before
/// reading it (`max_decoding_message_size`).
pub fn max_trajectory_bytes(limits: &TokenLimits) -> usize {
    let tokens = limits.max_tokens * 5 + 16; // varint u32 ≤ 5 bytes, packed
    let logprobs = limits.max_tokens * 4 + 16;
    let names = 2 * (MAX_NAME_BYTES + 8) + MAX_SCORER_VERSION_BYTES + 8;
    let component = MAX_NAME_BYTES + 8 + 5 + MAX_WINDOWS * 4 + 16;
    let seal = 32 + 64 + 32;
    tokens + logprobs + MAX_CAPTION_BYTES + 8 + names + MAX_COMPONENTS * component + seal + 128
}

/// The id of a pushed trajectory, read before anything else so that a refused item can
/// still be accounted for; `missing_id` if it has none.
pub fn trajectory_id(t: &pb::Trajectory) -> std::result::Result<TrajectoryId, Rejection> {
    if t.actor_run == 0 {
        return Err(Rejection::new(
            "missing_id",
            "actor_run is 0: every trajectory needs its actor incarnation and sequence".into(),
        ));
    }
    if t.actor_id.len() > MAX_NAME_BYTES {
        return Err(Rejection::new(
            "bad_actor_id",
            format!("actor id of {} bytes", t.actor_id.len()),
        ));
    }
    Ok(TrajectoryId {
        actor_run: t.actor_run,
        sequence: t.sequence,
    })
}

fn seal_from_wire(s: pb::RewardSeal) -> std::result::Result<RewardSeal, Rejection> {
    let mac: [u8; 32] = s.mac.as_slice().try_into().map_err(|_| {
        Rejection::new(
            "forged_reward",
            format!("a seal's MAC has {} bytes, not 32", s.mac.len()),
        )
    })?;
    if s.key_id.len() > 64 {
        return Err(Rejection::new(
            "unknown_seal_key",
            format!("a key id of {} bytes", s.key_id.len()),
        ));
    }
    let nonce: [u8; 16] = s.nonce.as_slice().try_into().map_err(|_| {
        Rejection::new(
            "forged_reward",
            format!("a seal's nonce has {} bytes, not 16", s.nonce.len()),
        )
    })?;
    Ok(RewardSeal {
        signed_at_unix_ms: s.signed_at_unix_ms,
        mac,
        key_id: s.key_id,
        nonce,
    })
}

fn seal_to_wire(s: &RewardSeal) -> pb::RewardSeal {
    pb::RewardSeal {
        signed_at_unix_ms: s.signed_at_unix_ms,
        mac: s.mac.to_vec(),
        key_id: s.key_id.clone(),
        nonce: s.nonce.to_vec(),
    }
}

/// Validates and converts a pushed trajectory.
pub fn trajectory_from_wire(
    t: pb::Trajectory,
    limits: &TokenLimits,
) -> std::result::Result<Trajectory, Rejection> {
    let id = trajectory_id(&t)?;
    check_caption(&t.caption)?;
    if t.scorer_version.len() > MAX_SCORER_VERSION_BYTES {
        return Err(Rejection::new(
            "bad_component",
            format!("scorer version of {} bytes", t.scorer_version.len()),
        ));
    }
    if t.components.len() > MAX_COMPONENTS {
        return Err(Rejection::new(
            "bad_component",
            format!(
                "{} components, at most {MAX_COMPONENTS}",
                t.components.len()
            ),
        ));
    }
    limits.check_tokens(&t.tokens)?;
    if t.behaviour_logprobs.len() != t.tokens.len() {
        return Err(Rejection::new(
            "length_mismatch",
            format!(
                "{} tokens but {} log-probabilities",
                t.tokens.len(),
                t.behaviour_logprobs.len()
            ),
        ));
    }
    if let Some(i) = t
        .behaviour_logprobs
        .iter()
        .position(|lp| !lp.is_finite() || *lp > 1e-4)
    {
        return Err(Rejection::new(
            "bad_logprob",
            format!(
                "log-probability {} at position {i} is not a finite value <= 0",
                t.behaviour_logprobs[i]
            ),
        ));
    }
    if !t.reward.is_finite() {
        return Err(Rejection::new(
            "non_finite_reward",
            format!("reward {}", t.reward),
        ));
    }
    if let Some(c) = t
        .components
        .iter()
        .find(|c| !c.value.is_finite() || c.name.len() > MAX_NAME_BYTES)
    {
        return Err(Rejection::new(
            "bad_component",
            format!("component {:?} = {}", c.name, c.value),
        ));
    }
    if let Some(c) = t
        .components
        .iter()
        .find(|c| c.windows.len() > MAX_WINDOWS || c.windows.iter().any(|w| !w.is_finite()))
    {
        return Err(Rejection::new(
            "bad_component",
            format!(
                "component {:?} has {} window scores (at most {MAX_WINDOWS}, all finite)",
                c.name,
                c.windows.len()
            ),
        ));
    }
    let component_windows = if t.components.iter().all(|c| c.windows.is_empty()) {
        Vec::new()
    } else {
        t.components.iter().map(|c| c.windows.clone()).collect()
    };
    let seal = t.reward_seal.map(seal_from_wire).transpose()?;
    Ok(Trajectory {
        id,
        learner_run: t.learner_run,
        seal,
        component_windows,
        actor_id: t.actor_id,
        policy_version: PolicyVersion(t.policy_version),
        caption: t.caption,
        tokens: t.tokens,
        behaviour_logprobs: t.behaviour_logprobs,
        reward: t.reward,
        components: t
            .components
            .into_iter()
            .map(|c| (c.name, c.value))
            .collect(),
        scorer_version: t.scorer_version,
    })
}

pub fn trajectory_to_wire(t: &Trajectory) -> pb::Trajectory {
    pb::Trajectory {
        actor_run: t.id.actor_run,
        sequence: t.id.sequence,
        learner_run: t.learner_run,
        reward_seal: t.seal.as_ref().map(seal_to_wire),
        actor_id: t.actor_id.clone(),
        policy_version: t.policy_version.0,
        caption: t.caption.clone(),
        tokens: t.tokens.clone(),
        behaviour_logprobs: t.behaviour_logprobs.clone(),
        reward: t.reward,
        components: t
            .components
            .iter()
            .enumerate()
            .map(|(i, (name, value))| pb::ComponentScore {
                name: name.clone(),
                value: *value,
                windows: t.component_windows.get(i).cloned().unwrap_or_default(),
            })
            .collect(),
        scorer_version: t.scorer_version.clone(),
    }
}

// ---- scoring ----

/// One sample to score.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreInput {
    pub caption: String,
    pub tokens: Vec<u32>,
}

/// Validates a Score request: non-empty, at most `max_batch` samples, each valid.
pub fn score_request_from_wire(
    req: pb::ScoreRequest,
    limits: &TokenLimits,
    max_batch: usize,
) -> Result<Vec<ScoreInput>> {
    if req.samples.is_empty() {
        return Err(Error::invalid("empty batch: at least one sample is needed"));
    }
    if req.samples.len() > max_batch {
        return Err(Error::invalid(format!(
            "batch of {} samples exceeds the server's limit of {max_batch}",
            req.samples.len()
        )));
    }
    req.samples
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            check_caption(&s.caption)
                .and_then(|()| limits.check_tokens(&s.tokens))
                .and_then(|()| s.audio.as_ref().map_or(Ok(()), check_audio))
                .map_err(|r| Error::invalid(format!("sample {i}: {r}")))?;
            Ok(ScoreInput {
                caption: s.caption,
                tokens: s.tokens,
            })
        })
        .collect()
}

pub fn score_request_to_wire(samples: &[ScoreInput]) -> pb::ScoreRequest {
    pb::ScoreRequest {
        samples: samples
            .iter()
            .map(|s| pb::Sample {
                caption: s.caption.clone(),
                tokens: s.tokens.clone(),
                audio: None,
            })
            .collect(),
    }
}

/// The largest encoded ScoreRequest a reward server with these limits accepts: `max_batch`
/// samples with the longest caption and token list, plus the audio a musicrl reward server
/// sends a remote component in one call (at most 3 MiB, `REMOTE_CALL_AUDIO_BYTES`), and never
/// below gRPC's usual 4 MiB.
pub fn max_score_request_bytes(limits: &TokenLimits, max_batch: usize) -> usize {
    let sample = MAX_CAPTION_BYTES + limits.max_tokens * 5 + 64;
    (max_batch * sample + (3 << 20) + 4096).max(4 << 20)
}

pub use musicrl_config::AUDIO_SAMPLE_RATES;

/// A Score request that carries each sample's rendered audio (`audio[i]` for `samples[i]`,
/// mono, in [-1, 1], clipped) as 16-bit PCM at `sample_rate`.
pub fn score_request_with_audio(
    samples: &[ScoreInput],
    audio: &[Vec<f32>],
    sample_rate: u32,
) -> pb::ScoreRequest {
    pb::ScoreRequest {
        samples: samples
            .iter()
            .zip(audio)
            .map(|(s, a)| pb::Sample {
                caption: s.caption.clone(),
                tokens: s.tokens.clone(),
                audio: Some(audio_to_wire(a, sample_rate)),
            })
            .collect(),
    }
}

/// Mono audio in [-1, 1] as 16-bit little-endian PCM.
pub fn audio_to_wire(samples: &[f32], sample_rate: u32) -> pb::Audio {
    let mut pcm = Vec::with_capacity(samples.len() * 2);
    for &x in samples {
        let v = if x.is_finite() {
            x.clamp(-1.0, 1.0)
        } else {
            0.0
        };
        pcm.extend_from_slice(&((v * 32767.0).round() as i16).to_le_bytes());
    }
    pb::Audio {
        sample_rate,
        pcm_s16le: pcm,
    }
}

/// The bytes an audio message of `samples` samples takes on the wire (for splitting calls).
pub const fn audio_wire_bytes(samples: usize) -> usize {
    samples * 2
}

fn check_audio(a: &pb::Audio) -> std::result::Result<(), Rejection> {
    if !AUDIO_SAMPLE_RATES.contains(&a.sample_rate) {
        return Err(Rejection::new(
            "bad_audio",
            format!(
                "audio sample rate {} Hz is outside {}..={} Hz",
                a.sample_rate,
                AUDIO_SAMPLE_RATES.start(),
                AUDIO_SAMPLE_RATES.end()
            ),
        ));
    }
    if !a.pcm_s16le.len().is_multiple_of(2) {
        return Err(Rejection::new(
            "bad_audio",
            format!(
                "audio has {} bytes: 16-bit PCM needs an even number",
                a.pcm_s16le.len()
            ),
        ));
    }
    Ok(())
}

pub fn components_to_wire(components: &[ComponentInfo]) -> Vec<pb::Component> {
    components
        .iter()
        .map(|c| pb::Component {
            name: c.name.clone(),
            version: c.version.clone(),
            weight: c.weight,
        })
        .collect()
}

/// One sample's scores on the wire.
pub fn sample_score_to_wire(s: SampleScore) -> pb::SampleScore {
    pb::SampleScore {
        seal: s.seal.as_ref().map(seal_to_wire),
        reward: s.reward,
        components: s.components,
        windows: s
            .windows
            .into_iter()
            .map(|values| pb::WindowScores { values })
            .collect(),
    }
}

/// Validates a Score response against the request it answers.
pub fn score_response_from_wire(
    resp: pb::ScoreResponse,
    n_samples: usize,
) -> Result<(Vec<SampleScore>, Vec<ComponentInfo>, String)> {
    if resp.scores.len() != n_samples {
        return Err(Error::Internal(format!(
            "reward server answered {} scores for {n_samples} samples",
            resp.scores.len()
        )));
    }
    let n_components = resp.components.len();
    let scores =
        resp.scores
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                if !s.reward.is_finite() || s.components.iter().any(|v| !v.is_finite()) {
                    return Err(Error::Internal(format!(
                        "reward server returned a non-finite score for sample {i}"
                    )));
                }
                if s.components.len() != n_components {
                    return Err(Error::Internal(format!(
                        "sample {i} has {} component scores for {n_components} components",
                        s.components.len()
                    )));
                }
                if !s.windows.is_empty() && s.windows.len() != n_components {
                    return Err(Error::Internal(format!(
                        "sample {i} has window scores for {} of {n_components} components",
                        s.windows.len()
                    )));
                }
                if s.windows.iter().any(|w| {
                    w.values.len() > MAX_WINDOWS || w.values.iter().any(|v| !v.is_finite())
                }) {
                    return Err(Error::Internal(format!(
                        "sample {i} has more than {MAX_WINDOWS} or non-finite window scores"
                    )));
                }
                let seal = s
                    .seal
                    .map(seal_from_wire)
                    .transpose()
                    .map_err(|r| Error::Internal(format!("sample {i}: {r}")))?;
                Ok(SampleScore {
                    seal,
                    reward: s.reward,
                    components: s.components,
                    windows: s.windows.into_iter().map(|w| w.values).collect(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
    let components = resp
        .components
        .into_iter()
        .map(|c| ComponentInfo {
            name: c.name,
            version: c.version,
            weight: c.weight,
        })
        .collect();
    Ok((scores, components, resp.scorer_version))
}

// ---- parameters ----

/// The wire's name of an encoding.
pub fn encoding_to_wire(e: ParameterEncoding) -> pb::ParameterEncoding {
    match e {
        ParameterEncoding::F32 => pb::ParameterEncoding::BurnpackF32,
        ParameterEncoding::Bf16 => pb::ParameterEncoding::SafetensorsBf16,
    }
}

/// The encoding a wire value names; a value this build does not know is an error naming it
/// (a newer peer's encoding, or garbage).
pub fn encoding_from_wire(value: i32) -> Result<ParameterEncoding> {
    match pb::ParameterEncoding::try_from(value) {
        Ok(pb::ParameterEncoding::BurnpackF32) => Ok(ParameterEncoding::F32),
        Ok(pb::ParameterEncoding::SafetensorsBf16) => Ok(ParameterEncoding::Bf16),
        Err(_) => Err(Error::BadParameters(format!(
            "unknown parameter encoding {value} (this build knows 0: burnpack f32, 1: \
             safetensors bf16)"
        ))),
    }
}

/// The wire chunks of a parameter blob, at most `chunk_bytes` of data each, made one at a
/// time as a sender asks for them. Each chunk's data is a slice of the blob's shared buffer
/// (no copy), so any number of subscribers stream one version without copying it.
pub fn blob_to_chunks(
    blob: &ParameterBlob,
    chunk_bytes: usize,
) -> impl Iterator<Item = pb::ParameterChunk> + Send + 'static {
    let chunk_bytes = chunk_bytes.max(1);
    let bytes = blob.bytes.clone();
    let total = bytes.len();
    let chunk_count = total.div_ceil(chunk_bytes).max(1);
    let config_json = serde_json::to_string(&blob.config).expect("PolicyConfig serialises to JSON");
    let checksum = blob.checksum;
    let encoding = encoding_to_wire(blob.encoding) as i32;
    let (version, complete, temperature, run) = (
        blob.version.0,
        blob.training_complete,
        blob.temperature,
        blob.learner_run,
    );
    (0..chunk_count).map(move |i| {
        let start = i * chunk_bytes;
        let end = (start + chunk_bytes).min(total);
        pb::ParameterChunk {
            version,
            chunk_index: i as u32,
            chunk_count: chunk_count as u32,
            total_bytes: total as u64,
            data: bytes.slice(start..end),
            checksum: checksum.to_vec(),
            policy_config_json: if i == 0 {
                config_json.clone()
            } else {
                String::new()
            },
            training_complete: complete,
            temperature,
            learner_run: run,
            encoding,
        }
    })
}

/// Reassembles parameter chunks into blobs. A chunk out of sequence discards the partial
/// version and waits for the next version's first chunk.
#[derive(Debug, Default)]
pub struct ChunkAssembler {
    partial: Option<Partial>,
    /// Largest blob accepted, in bytes.
    max_bytes: usize,
}

#[derive(Debug)]
struct Partial {
    version: u64,
    next_index: u32,
    chunk_count: u32,
    total: usize,
    checksum: Vec<u8>,
    config: PolicyConfig,
    temperature: f32,
    training_complete: bool,
    learner_run: u64,
    encoding: ParameterEncoding,
    data: Vec<u8>,
    /// blake3 of `data` so far: hashing as chunks arrive overlaps it with the transfer.
    hasher: blake3::Hasher,
}

impl ChunkAssembler {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            partial: None,
            max_bytes,
        }
    }

    /// Feeds one chunk; returns a blob when its last chunk arrives.
    pub fn push(&mut self, chunk: pb::ParameterChunk) -> Result<Option<ParameterBlob>> {
        if chunk.chunk_index == 0 {
            let config: PolicyConfig =
                serde_json::from_str(&chunk.policy_config_json).map_err(|e| {
                    Error::BadParameters(format!(
                        "chunk 0 of version {} has no valid policy config: {e}",
                        chunk.version
                    ))
                })?;
            let encoding = encoding_from_wire(chunk.encoding).map_err(|e| {
                Error::BadParameters(format!("chunk 0 of version {}: {e}", chunk.version))
            })?;
            let total = usize::try_from(chunk.total_bytes).unwrap_or(usize::MAX);
            if total > self.max_bytes || chunk.chunk_count == 0 {
                return Err(Error::BadParameters(format!(
                    "version {} announces {} bytes in {} chunks (limit {} bytes)",
                    chunk.version, chunk.total_bytes, chunk.chunk_count, self.max_bytes
                )));
            }
            self.partial = Some(Partial {
                version: chunk.version,
                next_index: 0,
                chunk_count: chunk.chunk_count,
                total,
                checksum: chunk.checksum.to_vec(),
                config,
                temperature: chunk.temperature,
                training_complete: chunk.training_complete,
                learner_run: chunk.learner_run,
                encoding,
                // Grown as chunks arrive past the first GiB: an announced size is not
                // trusted with an allocation.
                data: Vec::with_capacity(total.min(1 << 30)),
                hasher: blake3::Hasher::new(),
            });
        }
        let Some(p) = self.partial.as_mut() else {
            return Err(Error::BadParameters(format!(
                "chunk {} of version {} arrived without its chunk 0",
                chunk.chunk_index, chunk.version
            )));
        };
        if chunk.version != p.version
            || chunk.learner_run != p.learner_run
            || chunk.encoding != encoding_to_wire(p.encoding) as i32
            || chunk.chunk_index != p.next_index
            || p.data.len() + chunk.data.len() > p.total
        {
            let msg = format!(
                "chunk {}/{} of version {} out of sequence (expected chunk {} of version {})",
                chunk.chunk_index, chunk.chunk_count, chunk.version, p.next_index, p.version
            );
            self.partial = None;
            return Err(Error::BadParameters(msg));
        }
        p.data.extend_from_slice(&chunk.data);
        p.hasher.update(&chunk.data);
        p.next_index += 1;
        if p.next_index < p.chunk_count {
            return Ok(None);
        }
        let p = self.partial.take().expect("checked above");
        if p.data.len() != p.total {
            return Err(Error::BadParameters(format!(
                "version {} carried {} bytes, announced {}",
                p.version,
                p.data.len(),
                p.total
            )));
        }
        let sum = *p.hasher.finalize().as_bytes();
        if sum.as_slice() != p.checksum.as_slice() {
            return Err(Error::BadParameters(format!(
                "version {} failed its checksum",
                p.version
            )));
        }
        let mut blob = ParameterBlob::from_hashed_bytes(
            p.data,
            sum,
            PolicyVersion(p.version),
            &p.config,
            p.temperature,
        );
        blob.training_complete = p.training_complete;
        blob.learner_run = p.learner_run;
        blob.encoding = p.encoding;
        Ok(Some(blob))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> TokenLimits {
        TokenLimits {
            exact: false,
            vocab_size: 8,
            max_tokens: 4,
        }
    }

    fn good() -> pb::Trajectory {
        pb::Trajectory {
            actor_id: "a".into(),
            policy_version: 3,
            caption: "a reel".into(),
            tokens: vec![1, 2, 7],
            behaviour_logprobs: vec![-0.1, -2.0, -0.5],
            reward: 0.5,
            components: vec![],
            scorer_version: "s".into(),
            actor_run: 1,
            sequence: 0,
            ..Default::default()
        }
    }

    #[test]
    fn a_musicgen_clip_is_exactly_codebooks_times_frames_long() {
        let mut policy = musicrl_config::PolicyConfig {
            vocab_size: 8,
            max_tokens: 4,
            ..Default::default()
        };
        assert!(!TokenLimits::of(&policy).exact);
        policy.family = musicrl_config::FAMILY_MUSICGEN.into();
        let exact = TokenLimits::of(&policy);
        assert!(exact.check_tokens(&[1, 2, 3, 4]).is_ok());
        let short = exact.check_tokens(&[1, 2, 3]).unwrap_err();
        assert_eq!(short.reason, "bad_length");
        assert!(short.detail.contains("exactly 4"), "{short}");
        assert_eq!(
            exact.check_tokens(&[1, 2, 3, 8]).unwrap_err().reason,
            "token_out_of_range"
        );
    }

    #[test]
    fn trajectories_are_validated_with_named_reasons() {
        assert!(trajectory_from_wire(good(), &limits()).is_ok());
        let cases: Vec<(&str, Box<dyn Fn(&mut pb::Trajectory)>)> = vec![
            ("token_out_of_range", Box::new(|t| t.tokens[1] = 8)),
            (
                "length_mismatch",
                Box::new(|t| t.behaviour_logprobs.pop().map(drop).unwrap_or(())),
            ),
            ("bad_length", Box::new(|t| t.tokens.clear())),
            (
                "bad_logprob",
                Box::new(|t| t.behaviour_logprobs[0] = f32::NAN),
            ),
            ("non_finite_reward", Box::new(|t| t.reward = f32::INFINITY)),
            ("missing_id", Box::new(|t| t.actor_run = 0)),
            (
                "forged_reward",
                Box::new(|t| {
                    t.reward_seal = Some(pb::RewardSeal {
                        mac: vec![0; 31],
                        ..Default::default()
                    })
                }),
            ),
        ];
        for (reason, mutate) in cases {
            let mut t = good();
            mutate(&mut t);
            let err = trajectory_from_wire(t, &limits()).unwrap_err();
            assert_eq!(err.reason, reason, "{err}");
        }
    }

    #[test]
    fn score_requests_reject_empty_oversized_and_bad_samples() {
        let sample = |tokens: Vec<u32>| pb::Sample {
            caption: "c".into(),
            tokens,
            audio: None,
        };
        let ok = pb::ScoreRequest {
            samples: vec![sample(vec![1, 2])],
        };
        assert_eq!(score_request_from_wire(ok, &limits(), 2).unwrap().len(), 1);
        for req in [
            pb::ScoreRequest { samples: vec![] },
            pb::ScoreRequest {
                samples: vec![sample(vec![1]); 3],
            },
            pb::ScoreRequest {
                samples: vec![sample(vec![9])],
            },
            pb::ScoreRequest {
                samples: vec![sample(vec![1; 5])],
            },
            pb::ScoreRequest {
                samples: vec![pb::Sample {
                    audio: Some(pb::Audio {
                        sample_rate: 100,
                        pcm_s16le: vec![0; 4],
                    }),
                    ..sample(vec![1])
                }],
            },
            pb::ScoreRequest {
                samples: vec![pb::Sample {
                    audio: Some(pb::Audio {
                        sample_rate: 16_000,
                        pcm_s16le: vec![0; 3],
                    }),
                    ..sample(vec![1])
                }],
            },
        ] {
            assert!(matches!(
                score_request_from_wire(req, &limits(), 2),
                Err(Error::InvalidArgument(_))
            ));
        }
    }

    #[test]
    fn audio_goes_on_the_wire_as_clipped_16_bit_pcm() {
        let a = audio_to_wire(&[0.0, 1.0, -1.0, 0.5, 2.0, f32::NAN], 16_000);
        let got: Vec<i16> = a
            .pcm_s16le
            .chunks(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(got, vec![0, 32767, -32767, 16384, 32767, 0]);
        assert_eq!(a.sample_rate, 16_000);
        assert_eq!(audio_wire_bytes(6), a.pcm_s16le.len());
    }

    #[test]
    fn chunks_reassemble_and_corruption_is_caught() {
        let config = PolicyConfig::default();
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let blob = ParameterBlob::from_bytes(bytes.clone(), PolicyVersion(7), &config, 0.99);
        let chunks: Vec<_> = blob_to_chunks(&blob, 4096).collect();
        assert_eq!(chunks.len(), 3);
        let mut asm = ChunkAssembler::new(1 << 20);
        let mut out = None;
        for c in chunks.clone() {
            out = asm.push(c).unwrap();
        }
        let got = out.expect("complete after the last chunk");
        assert_eq!(got.version, PolicyVersion(7));
        assert_eq!(got.bytes.as_ref(), bytes.as_slice());
        assert_eq!(got.config, config);

        let mut bad = chunks.clone();
        bad[1].data = bytes::Bytes::from(vec![0u8; bad[1].data.len()]);
        let mut asm = ChunkAssembler::new(1 << 20);
        asm.push(bad[0].clone()).unwrap();
        asm.push(bad[1].clone()).unwrap();
        assert!(asm.push(bad[2].clone()).is_err());

        let mut asm = ChunkAssembler::new(1 << 20);
        assert!(
            asm.push(chunks[1].clone()).is_err(),
            "a chunk without its chunk 0"
        );
    }

    /// The encoding travels on every chunk: the assembled blob says what its bytes are, an
    /// unknown encoding is refused by number at chunk 0, and a chunk whose encoding
    /// disagrees with its version's chunk 0 breaks the version.
    #[test]
    fn chunks_carry_their_encoding_and_an_unknown_one_is_refused() {
        let config = PolicyConfig::default();
        let mut blob = ParameterBlob::from_bytes(vec![5u8; 9000], PolicyVersion(2), &config, 1.0);
        blob.encoding = ParameterEncoding::Bf16;
        let chunks: Vec<_> = blob_to_chunks(&blob, 4096).collect();
        assert!(
            chunks
                .iter()
                .all(|c| c.encoding == pb::ParameterEncoding::SafetensorsBf16 as i32)
        );
        let mut asm = ChunkAssembler::new(1 << 20);
        let mut out = None;
        for c in chunks.clone() {
            out = asm.push(c).unwrap();
        }
        assert_eq!(out.unwrap().encoding, ParameterEncoding::Bf16);

        let mut unknown = chunks[0].clone();
        unknown.encoding = 9;
        let e = ChunkAssembler::new(1 << 20)
            .push(unknown)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown parameter encoding 9"), "{e}");

        let mut asm = ChunkAssembler::new(1 << 20);
        asm.push(chunks[0].clone()).unwrap();
        let mut mixed = chunks[1].clone();
        mixed.encoding = pb::ParameterEncoding::BurnpackF32 as i32;
        assert!(asm.push(mixed).is_err());
        assert_eq!(encoding_from_wire(0).unwrap(), ParameterEncoding::F32);
        assert_eq!(encoding_from_wire(1).unwrap(), ParameterEncoding::Bf16);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> TokenLimits {
        TokenLimits {
            exact: false,
            vocab_size: 16,
            max_tokens: 12,
        }
    }

    prop_compose! {
        fn wire_trajectory()(
            tokens in proptest::collection::vec(0u32..20, 0..16),
            logprobs in proptest::collection::vec(prop_oneof![-20.0f32..0.0, Just(f32::NAN), Just(1.0f32)], 0..16),
            reward in prop_oneof![-1e30f32..1e30, Just(f32::INFINITY)],
            caption in ".{0,40}",
            actor_run in prop_oneof![Just(0u64), 1u64..],
            sequence in any::<u64>(),
            mac in proptest::collection::vec(any::<u8>(), 0..40),
            sealed in any::<bool>(),
        ) -> pb::Trajectory {
            pb::Trajectory {
                actor_id: "a".into(),
                actor_run,
                sequence,
                policy_version: 1,
                caption,
                tokens,
                behaviour_logprobs: logprobs,
                reward,
                reward_seal: sealed.then(|| pb::RewardSeal { signed_at_unix_ms: 5, mac, key_id: "k".into(), nonce: vec![7; 16] }),
                ..Default::default()
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Whatever arrives, the conversion never panics; what it accepts satisfies the
        /// domain invariant and converts back to the same message.
        #[test]
        fn trajectory_conversion_accepts_only_valid_items_and_round_trips(t in wire_trajectory()) {
            match trajectory_from_wire(t.clone(), &limits()) {
                Ok(d) => {
                    prop_assert_eq!(d.tokens.len(), d.behaviour_logprobs.len());
                    prop_assert!(!d.tokens.is_empty() && d.tokens.len() <= 12);
                    prop_assert!(d.tokens.iter().all(|&x| x < 16));
                    prop_assert!(d.reward.is_finite());
                    prop_assert!(d.id.actor_run != 0);
                    prop_assert_eq!(trajectory_to_wire(&d), t);
                }
                Err(r) => prop_assert!(!r.reason.is_empty()),
            }
        }

        /// Chunks of any size reassemble into the same blob; dropping or repeating any one
        /// chunk never yields a blob (the version is discarded).
        #[test]
        fn chunks_reassemble_exactly_and_a_broken_sequence_never_yields_a_blob(
            bytes in proptest::collection::vec(any::<u8>(), 0..5000),
            chunk in 1usize..700,
            victim in any::<prop::sample::Index>(),
            repeat in any::<bool>(),
        ) {
            let config = PolicyConfig::default();
            let mut blob = ParameterBlob::from_bytes(bytes, PolicyVersion(3), &config, 0.99);
            blob.learner_run = 7;
            let chunks: Vec<_> = blob_to_chunks(&blob, chunk).collect();
            let mut assembler = ChunkAssembler::new(1 << 20);
            let mut out = None;
            for (i, c) in chunks.iter().enumerate() {
                let got = assembler.push(c.clone()).expect("in sequence");
                prop_assert_eq!(got.is_some(), i + 1 == chunks.len());
                out = got.or(out);
            }
            let out = out.expect("a blob");
            prop_assert_eq!(out.bytes.as_ref(), blob.bytes.as_ref());
            prop_assert_eq!((out.version, out.learner_run), (blob.version, 7));

            if chunks.len() > 1 {
                let k = victim.index(chunks.len());
                let mut broken = chunks.clone();
                if repeat { broken.insert(k, chunks[k].clone()) } else { broken.remove(k); }
                let mut assembler = ChunkAssembler::new(1 << 20);
                let mut yielded = Vec::new();
                for c in broken {
                    if let Ok(Some(b)) = assembler.push(c) {
                        yielded.push(b);
                    }
                }
                // A repeated last chunk is a new, incomplete version; a repeated first one
                // restarts the version and completes it correctly.
                for b in yielded {
                    prop_assert_eq!(b.bytes.as_ref(), blob.bytes.as_ref());
                }
            }
        }
    }
}

// ---- the learner's status ----

/// Reason → count pairs (rejections, drops, losses) on the wire.
pub fn rejection_counts<R: ToString>(
    counts: impl IntoIterator<Item = (R, u64)>,
) -> Vec<pb::RejectionCount> {
    counts
        .into_iter()
        .map(|(reason, count)| pb::RejectionCount {
            reason: reason.to_string(),
            count,
        })
        .collect()
}

/// The learner's trajectory ledger totals on the wire.
pub fn accounting_to_wire(a: &crate::types::Accounting) -> pb::Accounting {
    let counts = |m: &std::collections::BTreeMap<String, u64>| {
        rejection_counts(m.iter().map(|(r, c)| (r, *c)))
    };
    pb::Accounting {
        sampled: a.sampled,
        received: a.received,
        duplicates: a.duplicates,
        trained: a.trained,
        pending: a.pending,
        rejected: counts(&a.rejected),
        dropped: counts(&a.dropped),
        lost: counts(&a.lost),
        unidentified: a.unidentified,
        sources: a.sources,
    }
}
