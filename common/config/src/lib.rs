//! The one configuration file every role reads (TOML), its defaults, and its validation.
//!
//! Configuration is loaded in two stages: raw values (the file, then environment variables
//! and flags that the binary applies on top) and then [`Config::validate`], which every
//! process calls before it binds a port. The embedded default is [`Config::default`]; the
//! same values are written out in `config/default.toml` (a test keeps the two equal).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod caption;
pub mod device;
pub mod error;
mod feedback;
pub mod fsutil;
mod overrides;
pub mod paths;
mod security;
pub use error::ConfigError;
pub use feedback::FeedbackConfig;
pub use overrides::{ENV_ALIASES, ENV_PREFIX, flatten};
pub use security::SecurityConfig;

/// The whole configuration: one section per role, plus the policy's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub run: RunConfig,
    pub policy: PolicyConfig,
    pub sampling: SamplingConfig,
    pub learner: LearnerConfig,
    pub actor: ActorConfig,
    pub reward: RewardConfig,
    pub local: LocalConfig,
    pub pretrain: PretrainConfig,
    pub experiment: ExperimentConfig,
    pub security: SecurityConfig,
    pub feedback: FeedbackConfig,
    pub tracking: TrackingConfig,
}

/// Experiment trackers a run logs to (all off by default): see `docs/tracking.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackingConfig {
    /// A TensorBoard log folder (`tensorboard --logdir` it); empty: off. The learner writes the
    /// configuration and every step's statistics into `tensorboard/<run>/`.
    pub tensorboard: PathBuf,
    /// An MLflow tracking server (`http://HOST:PORT`); empty: off. The learner logs the
    /// configuration as parameters, every step's statistics as metrics, `history.jsonl` as an
    /// artifact and the run's end.
    pub mlflow: String,
    /// The MLflow experiment the runs go to (created when missing).
    pub mlflow_experiment: String,
    /// The run's name in the trackers; empty: `run.name`, else the name of the folder that
    /// holds `learner.history_path` (`local` for `musicrl local`, `rl-r-1` for an
    /// experiment's RL-R, seed 1).
    pub run: String,
}

impl Default for TrackingConfig {
    fn default() -> Self {
        Self {
            tensorboard: PathBuf::new(),
            mlflow: String::new(),
            mlflow_experiment: "musicrl".into(),
            run: String::new(),
        }
    }
}

impl TrackingConfig {
    /// The run's name in the trackers (see [`TrackingConfig::run`]).
    pub fn run_name(&self, run: &RunConfig, history_path: &Path) -> String {
        if !self.run.is_empty() {
            return self.run.clone();
        }
        if !run.name.is_empty() {
            return run.name.clone();
        }
        history_path
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().to_string())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "learner".into())
    }
}

/// A named training run on a shared volume (the cluster's learner): its checkpoints, history
/// and trajectory log live under `root/name/`, and a learner refuses to continue a run whose
/// saved configuration differs from its own unless `resume` says it may.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// The run's name (letters, digits, `-`, `_`, `.`); empty: no named run, the learner uses
    /// `learner.checkpoint_dir`, `learner.history_path` and `learner.trajectory_log` as given.
    pub name: String,
    /// The folder that holds every run's folder (a volume on the cluster).
    pub root: PathBuf,
    /// Continue this run even though the training configuration differs from the one it
    /// was started with (the differences are logged). A restart with the same configuration
    /// always resumes.
    pub resume: bool,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            root: PathBuf::from("runs"),
            resume: false,
        }
    }
}

/// `musicrl pretrain`: teacher-forced training of θ0 on the folk-tune corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainConfig {
    /// The corpus (gzip-compressed JSON lines, see data/corpus/README.md).
    pub corpus: PathBuf,
    /// Where policy.bpk, config.toml and metrics.json go.
    pub out: PathBuf,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// Global gradient-norm clip; 0 disables.
    pub max_grad_norm: f32,
    /// Use at most this many tunes of each split (0: all).
    pub max_tunes: usize,
    /// Sequences sampled after training to measure how many decode without repair.
    pub decode_check_samples: usize,
    pub seed: u64,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        Self {
            corpus: PathBuf::from("data/corpus/tunes.jsonl.gz"),
            out: PathBuf::from("runs/pretrain"),
            epochs: 8,
            batch_size: 32,
            learning_rate: 2e-3,
            max_grad_norm: 1.0,
            max_tunes: 0,
            decode_check_samples: 256,
            seed: 0,
        }
    }
}

/// `policy.family`: the built-in melody transformer.
pub const FAMILY_MELODY: &str = "melody";
/// `policy.family`: MusicGen from a Hugging Face folder.
pub const FAMILY_MUSICGEN: &str = "musicgen";

/// What `policy.folder`'s `config.json` says of a MusicGen decoder: (codebooks, codebook
/// size). Read here, without loading the model, so every role checks its configuration
/// against the folder before it starts.
pub fn musicgen_shape(folder: &Path) -> Result<(usize, usize), String> {
    let path = folder.join("config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    let field = |name: &str| {
        json.get("decoder")
            .and_then(|d| d.get(name))
            .and_then(serde_json::Value::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| format!("{} has no decoder.{name}", path.display()))
    };
    Ok((field("num_codebooks")?, field("vocab_size")?))
}

/// The policy's architecture. The RL system is token-agnostic: vocabulary, length and size
/// are configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// The model family: [`FAMILY_MELODY`] (the built-in transformer over the symbolic
    /// melody vocabulary, the keys below) or [`FAMILY_MUSICGEN`] (a Hugging Face MusicGen
    /// folder, `folder`; `d_model` … `caption_encoder` are then not used).
    pub family: String,
    /// MusicGen: the model folder (`config.json`, `model.safetensors`, `tokenizer.json`).
    pub folder: PathBuf,
    /// MusicGen: frames per clip (50 a second at the published codec's rate); a trajectory
    /// holds `codebooks × frames` tokens, so `max_tokens` must equal that product.
    pub frames: usize,
    /// Number of distinct music tokens (MusicGen: one codebook's size).
    pub vocab_size: usize,
    /// Tokens per sampled sequence (and the size of the position table).
    pub max_tokens: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_layers: usize,
    /// Width of each block's feed-forward layer.
    pub d_ff: usize,
    /// Hash buckets of the caption's bag-of-words encoder.
    pub caption_buckets: usize,
    /// Caption words beyond this many are ignored.
    pub max_caption_words: usize,
    /// The token that ends a sequence: sampling stops a sequence after it, and the learner
    /// trains on nothing after it. An id ≥ `vocab_size` means the vocabulary has none.
    pub end_token: u32,
    /// How captions are tokenised (one of [`crate::caption::ENCODERS`]): roles whose encoders differ
    /// would compute different log-probabilities for the same caption, so they refuse.
    pub caption_encoder: String,
    /// MusicGen: train low-rank adapters instead of the whole decoder (`rank = 0`: full
    /// fine-tuning).
    pub lora: LoraConfig,
}

/// Low-rank adapters (LoRA, Hu et al. 2021) on a MusicGen decoder's projections: each
/// chosen projection `W` becomes `W + (alpha / rank) · B·A` with `A` of `rank × d_in` and
/// `B` of `d_out × rank`; only the adapters and the value head are trained, and only the
/// adapters travel to the actors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    /// The adapters' rank; 0 trains the whole decoder.
    pub rank: usize,
    /// The scale's numerator: the update is `(alpha / rank) · B·A` (PEFT's convention).
    pub alpha: f32,
    /// Which projections of every decoder layer carry an adapter, by transformers' module
    /// name as PEFT matches it: a name matches a projection whose name is it or ends in
    /// `.` + it (`q_proj` is the self- and the cross-attention's query, `self_attn.q_proj`
    /// only the first). The projections: `self_attn.{q,k,v,out}_proj`,
    /// `encoder_attn.{q,k,v,out}_proj`, `fc1`, `fc2`.
    pub targets: Vec<String>,
    /// Seed of the adapters' initial `A` (`B` starts at zero, so step 0 is the folder's
    /// model).
    pub seed: u64,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: 0,
            alpha: 16.0,
            targets: vec!["q_proj".into(), "v_proj".into()],
            seed: 0,
        }
    }
}

/// A MusicGen decoder layer's projections that can carry an adapter, by transformers'
/// module name (relative to the layer).
pub const LORA_PROJECTIONS: [&str; 10] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.out_proj",
    "encoder_attn.q_proj",
    "encoder_attn.k_proj",
    "encoder_attn.v_proj",
    "encoder_attn.out_proj",
    "fc1",
    "fc2",
];

impl LoraConfig {
    /// Whether adapters are on.
    pub fn enabled(&self) -> bool {
        self.rank > 0
    }

    /// Whether the projection named `projection` (one of [`LORA_PROJECTIONS`]) carries an
    /// adapter: a target equal to it or to a dotted suffix of it.
    pub fn targets_projection(&self, projection: &str) -> bool {
        self.targets
            .iter()
            .any(|t| projection == t || projection.ends_with(&format!(".{t}")))
    }

    /// The scale of `B·A`.
    pub fn scale(&self) -> f32 {
        if self.rank == 0 {
            0.0
        } else {
            self.alpha / self.rank as f32
        }
    }

    /// Checks rank, alpha and that every target names at least one projection.
    pub fn validate(&self, family: &str) -> Result<(), ConfigError> {
        if !self.enabled() {
            return Ok(());
        }
        let invalid = |field: &str, why: String| {
            Err(ConfigError::Invalid {
                field: field.to_string(),
                why,
            })
        };
        if family != FAMILY_MUSICGEN {
            return invalid(
                "policy.lora.rank",
                format!(
                    "{}: adapters are for the {FAMILY_MUSICGEN:?} family; the {family:?} policy is \
                     trained whole (set rank = 0)",
                    self.rank
                ),
            );
        }
        if self.rank > 4096 {
            return invalid(
                "policy.lora.rank",
                format!("{} is not in 0..=4096", self.rank),
            );
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return invalid(
                "policy.lora.alpha",
                format!("{} must be finite and > 0", self.alpha),
            );
        }
        if self.targets.is_empty() {
            return invalid(
                "policy.lora.targets",
                format!("empty: name projections among {LORA_PROJECTIONS:?}"),
            );
        }
        for t in &self.targets {
            let hit = LORA_PROJECTIONS
                .iter()
                .any(|p| *p == t || p.ends_with(&format!(".{t}")));
            if !hit {
                return invalid(
                    "policy.lora.targets",
                    format!(
                        "{t:?} matches no projection of a MusicGen decoder layer (they are \
                         {LORA_PROJECTIONS:?}; a target matches a name or its dotted suffix)"
                    ),
                );
            }
        }
        Ok(())
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            family: FAMILY_MELODY.into(),
            folder: PathBuf::new(),
            frames: 0,
            vocab_size: 64,
            max_tokens: 128,
            d_model: 128,
            n_heads: 4,
            n_layers: 2,
            d_ff: 512,
            caption_buckets: 1024,
            max_caption_words: 24,
            end_token: 0,
            caption_encoder: crate::caption::ENCODER.to_string(),
            lora: LoraConfig::default(),
        }
    }
}

impl PolicyConfig {
    /// The keys whose values differ between two policy configurations, as `key (a vs b)`,
    /// in alphabetical order; empty when they agree.
    pub fn differences(&self, other: &PolicyConfig) -> Vec<String> {
        let (a, b) = (
            serde_json::to_value(self).expect("PolicyConfig serialises"),
            serde_json::to_value(other).expect("PolicyConfig serialises"),
        );
        let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
            return Vec::new();
        };
        a.iter()
            .filter(|(k, v)| b.get(*k) != Some(*v))
            .map(|(k, v)| {
                format!(
                    "policy.{k} ({v} vs {})",
                    b.get(k).map_or("missing".to_string(), |x| x.to_string())
                )
            })
            .collect()
    }
}

/// How actors sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingConfig {
    /// Softmax temperature (the paper samples at 0.99).
    pub temperature: f32,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self { temperature: 0.99 }
    }
}

/// The learner: objective, optimiser, staleness rule, checkpoints, service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LearnerConfig {
    /// Compute device: "cpu", or "vulkan:N" / "cuda:N" in a build with that feature.
    pub device: String,
    /// gRPC address (trajectory push, parameter broadcast, status, health). Loopback by
    /// default: serving other hosts is a choice the configuration makes (the Kubernetes
    /// configuration sets `0.0.0.0`).
    pub listen: String,
    /// Prometheus `/metrics` address; empty disables the exporter.
    pub metrics_listen: String,
    /// A second, plaintext listener serving only gRPC health (empty: none), for probes that
    /// cannot speak TLS (Kubernetes' gRPC probes) when `[security]` turns TLS on.
    pub health_listen: String,
    /// Most parameter subscribers served at once; more are refused with RESOURCE_EXHAUSTED.
    pub max_subscribers: usize,
    /// Most concurrent HTTP/2 streams (calls) one client connection may open.
    pub max_concurrent_streams: u32,
    /// Deadline of a push (the whole client stream), in seconds; a call that takes longer
    /// is cancelled with DEADLINE_EXCEEDED and nothing of it is used.
    pub request_timeout_seconds: f64,
    /// Learner steps to run before finishing; 0 runs until stopped.
    pub steps: u64,
    /// Trajectories per update.
    pub batch_size: usize,
    pub learning_rate: f64,
    /// α: weight of the exact KL to the reference policy; the policy-gradient term has 1 − α.
    pub kl_coef: f32,
    /// Weight of the value regression loss.
    pub value_coef: f32,
    /// Weight of an entropy bonus (0 by default: the paper has none; entropy is still logged).
    pub entropy_coef: f32,
    /// Global gradient-norm clip; 0 disables.
    pub max_grad_norm: f32,
    /// The declared bound on rewards: each trajectory's reward is clipped to
    /// [−reward_clip, reward_clip] before the loss (and counted), so one batch with an absurd
    /// reward cannot dominate an update. Well above every shipped reward's range (RL-R's is
    /// within [−1, 2], the preference model's within about ±6).
    pub reward_clip: f32,
    /// The first this many steps of a fresh run fit the value baseline alone (the policy is
    /// not updated; they count toward `steps`). The value head's bias starts at the first
    /// batch's mean reward.
    pub value_warmup_steps: u64,
    /// After the value warm-up, the learning rate rises linearly from 1/n of
    /// `learning_rate` to all of it over this many policy updates (0: no ramp). Adam's first
    /// updates move every parameter by about the learning rate whatever the gradient, so
    /// without a ramp the KL to θ0 jumps in the first few updates.
    pub lr_warmup_steps: u64,
    /// The policy term's baseline: "leave-one-out" (a trajectory whose caption was sampled
    /// more than once in the batch takes the mean reward of the caption's other clips; see
    /// `actor.samples_per_prompt`), or "value" (V(s_t) always, the paper's). The value head
    /// is trained either way; `learner/src/loss.rs` says why leave-one-out is the default.
    pub baseline: String,
    /// Staleness rule, part 1: trajectories sampled by a policy more than this many versions
    /// older than the one being updated are dropped (and counted).
    pub max_policy_lag: u64,
    /// Staleness rule, part 2: per-token importance weights π_θ/π_behaviour are truncated at
    /// this value (V-trace's c̄). 0 turns importance weighting off.
    pub importance_clip: f32,
    /// Where checkpoints go; the learner resumes from the newest one there.
    pub checkpoint_dir: PathBuf,
    /// Save a checkpoint every this many steps (and at the end); 0 saves only at the end.
    pub checkpoint_every: u64,
    /// A policy checkpoint (a burnpack file) to start from as θ0: by default the base policy
    /// pretrained on the folk-tune corpus that ships in `models/base/` (see `musicrl
    /// pretrain`). Empty starts from a seeded random initialisation.
    pub init_policy: PathBuf,
    /// The KL anchor π_ref of a fresh run (a burnpack policy file); empty anchors to the
    /// starting policy (`init_policy`). MusicRL-RU starts from RL-R's chosen checkpoint and
    /// anchors there too; a run could also start from one policy and be held near another.
    /// Saved once as `reference.bpk` in the checkpoint folder, so a resume keeps its anchor.
    pub reference_policy: PathBuf,
    /// Step folders kept on disk, the newest ones (0 keeps every one). A step folder holding
    /// a `PINNED` file (a checkpoint an experiment chose) is never deleted and does not count.
    pub keep_checkpoints: usize,
    /// Trajectories held between the service and the training loop while it trains. Pushes
    /// wait when it is full: this back-pressure is what keeps actors from sampling far ahead
    /// of the learner. Each blocked actor holds one more round, so the policy lag is about
    /// 1 + queue_capacity / batch_size; the default 1 keeps it near 1 with two actors
    /// (`docs/performance.md`).
    pub queue_capacity: usize,
    /// Largest number of trajectories one push may carry.
    pub max_push: usize,
    /// The memory, in MiB, that the pushes being received may hold together, across every
    /// connection (estimated from their size on the wire). A push that would go past it is
    /// refused whole with RESOURCE_EXHAUSTED before it is trained or counted; the actor
    /// retries it later, so nothing is lost.
    pub max_push_mb_in_flight: usize,
    /// Parameter broadcast chunk size in bytes (each chunk is one gRPC message).
    pub chunk_bytes: usize,
    /// Where per-step history (`history.jsonl`) is written; empty disables it.
    pub history_path: PathBuf,
    /// The trajectory log (JSON lines: every trained trajectory's step, actor, policy
    /// version, caption, tokens, reward, component scores and scorer version); empty
    /// disables it. `musicrl local` writes `OUT/trajectories.jsonl`.
    pub trajectory_log: PathBuf,
    /// Rotate the trajectory log to `<file>.1` past this many MiB.
    pub trajectory_log_max_mb: u64,
    /// Exit once `steps` are trained (`musicrl local`, batch jobs). False keeps serving the
    /// final parameters and status until stopped (a StatefulSet that must not restart).
    pub exit_on_completion: bool,
    pub seed: u64,
}

impl Default for LearnerConfig {
    fn default() -> Self {
        Self {
            device: "cpu".into(),
            listen: "127.0.0.1:50051".into(),
            metrics_listen: "127.0.0.1:9100".into(),
            health_listen: String::new(),
            max_subscribers: 64,
            max_concurrent_streams: 64,
            request_timeout_seconds: 120.0,
            steps: 0,
            batch_size: 32,
            learning_rate: 1e-3,
            kl_coef: 0.02,
            value_coef: 0.5,
            entropy_coef: 0.0,
            max_grad_norm: 1.0,
            reward_clip: 20.0,
            value_warmup_steps: 10,
            lr_warmup_steps: 50,
            baseline: BASELINE_LEAVE_ONE_OUT.into(),
            max_policy_lag: 4,
            importance_clip: 1.0,
            checkpoint_dir: PathBuf::from("runs/checkpoints"),
            checkpoint_every: 50,
            init_policy: PathBuf::from("models/base/policy.bpk"),
            reference_policy: PathBuf::new(),
            keep_checkpoints: 3,
            queue_capacity: 1,
            max_push: 1024,
            max_push_mb_in_flight: 256,
            chunk_bytes: 1 << 20,
            history_path: PathBuf::new(),
            trajectory_log: PathBuf::new(),
            trajectory_log_max_mb: 64,
            exit_on_completion: true,
            seed: 0,
        }
    }
}

/// `learner.baseline`: the mean reward of the other clips of the same caption.
pub const BASELINE_LEAVE_ONE_OUT: &str = "leave-one-out";
/// `learner.baseline`: the value head V(s_t).
pub const BASELINE_VALUE: &str = "value";

/// `actor.engine`: the rollout engine (CPU).
pub const ENGINE_NATIVE: &str = "native";
/// `actor.engine`: burn's forward with the KV cache, on the actor's device.
pub const ENGINE_BURN: &str = "burn";

/// An actor: where the learner and the reward server are, and how much it samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActorConfig {
    /// Compute device for sampling: "cpu", or "vulkan:N" / "cuda:N" in a build with that
    /// feature.
    pub device: String,
    /// What samples: "native" (the family's rollout engine, `policy/src/melody/engine` or
    /// `policy/src/musicgen/engine.rs`: CPU only,
    /// the default) or "burn" (the training model's own forward on `device`; the path for
    /// a GPU).
    pub engine: String,
    /// Threads the rollout engine splits a batch over; 0 uses every core the process may.
    pub threads: usize,
    /// Ask the learner to compress the parameter broadcast: "none" (the default: float
    /// weights shrink little and loopback is fast), "zstd" or "gzip".
    pub parameter_compression: String,
    /// The form the learner sends each version in: "f32" (the default: exactly the
    /// learner's parameters) or "bf16" (half the bytes, every parameter within a relative
    /// 2^-8; the learner makes it once per version, on demand, off its training thread).
    /// The behaviour log-probabilities an actor pushes are its own policy's, so training
    /// stays correct either way: the importance weights see the bf16 policy as the sampler.
    pub parameter_encoding: ParameterEncoding,
    /// Learner endpoint, e.g. `http://learner:50051`.
    pub learner: String,
    /// Reward server endpoint, e.g. `http://reward-server:50052`, or several,
    /// comma-separated. Each host is resolved to every address it has (a headless Service
    /// lists every ready replica) and Score calls are spread over them per request.
    pub reward: String,
    /// Re-resolve `reward`'s hosts this often, in seconds, so replicas added or removed by
    /// the autoscaler join or leave the actor's balancer.
    pub reward_resolve_seconds: f64,
    /// Prometheus `/metrics` address; empty disables the exporter.
    pub metrics_listen: String,
    /// Sequences sampled (and scored, and pushed) per round.
    pub batch_size: usize,
    /// Clips sampled for each caption drawn in a round (`batch_size` / this many captions),
    /// so the learner can take a leave-one-out baseline within each caption
    /// (`learner.baseline`); 1 samples a new caption for every clip. More than `batch_size`
    /// acts as `batch_size`.
    pub samples_per_prompt: usize,
    /// The prompt file (one caption a line): by default one caption for every
    /// training-split tune of the corpus (`musicrl prompts` writes it).
    pub prompts: PathBuf,
    /// Base seed; each actor mixes in its id.
    pub seed: u64,
    /// Shortest wait before a retry, in seconds: every failed or refused call (any error
    /// class, and a push the learner refused whole) waits a delay that starts here and
    /// doubles up to `max_backoff_seconds`; each wait is drawn from the delay's upper half.
    pub min_backoff_seconds: f64,
    /// Longest wait before a retry or reconnection, in seconds: no wait exceeds it.
    pub max_backoff_seconds: f64,
    /// Deadline of one reward call, in seconds.
    pub reward_timeout_seconds: f64,
    /// Exit when the learner announces the end of training. False waits for a newer version
    /// instead (a Deployment whose pods must not restart in a loop).
    pub exit_on_completion: bool,
    /// Deterministic mode: sample exactly `learner.batch_size` trajectories with each policy
    /// version, then wait for the next one, every round's draws seeded by (seed, version,
    /// round). With one actor a seed then reproduces its run bit for bit, at the cost of the
    /// overlap of sampling and training (`docs/experiment.md`).
    pub synchronous: bool,
}

impl Default for ActorConfig {
    fn default() -> Self {
        Self {
            device: "cpu".into(),
            engine: ENGINE_NATIVE.into(),
            threads: 0,
            parameter_compression: "none".into(),
            parameter_encoding: ParameterEncoding::F32,
            learner: "http://127.0.0.1:50051".into(),
            reward: "http://127.0.0.1:50052".into(),
            reward_resolve_seconds: 10.0,
            metrics_listen: "127.0.0.1:9102".into(),
            batch_size: 16,
            samples_per_prompt: 8,
            synchronous: false,
            prompts: PathBuf::from("data/prompts/train.txt"),
            seed: 0,
            min_backoff_seconds: 0.1,
            max_backoff_seconds: 5.0,
            reward_timeout_seconds: 30.0,
            exit_on_completion: true,
        }
    }
}

/// The reward server and its scorers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RewardConfig {
    /// Compute device of the reward models, set apart from the policy's: "cpu", or
    /// "vulkan:N" / "cuda:N" in a build with that feature.
    pub device: String,
    pub listen: String,
    /// Prometheus `/metrics` address; empty disables the exporter.
    pub metrics_listen: String,
    /// A second, plaintext listener serving only gRPC health (empty: none), for probes that
    /// cannot speak TLS.
    pub health_listen: String,
    /// Largest number of samples one Score call may carry.
    pub max_batch: usize,
    /// Load shedding: samples accepted and not yet scored, at most; a call that would go
    /// past it is refused at once with RESOURCE_EXHAUSTED (the actor backs off and retries).
    pub max_queued_samples: usize,
    /// Fairness: a call is scored in slices of at most this many samples, taken in turn
    /// from every waiting call, so a small call waits for at most one batch of others'
    /// slices however large they are.
    pub slice_samples: usize,
    /// Most concurrent HTTP/2 streams (calls) one client connection may open.
    pub max_concurrent_streams: u32,
    /// Most calls being decoded and served at once, all connections together; later calls
    /// wait their turn with their bodies unread. With `max_batch` this bounds the memory the
    /// requests in flight can hold, however many clients connect.
    pub max_concurrent_requests: usize,
    /// Close client connections after this many seconds (in-flight calls finish), so that
    /// actors spread over reward-server replicas added later. 0 keeps connections forever.
    pub max_connection_age_seconds: u64,
    /// Dynamic batching: concurrent Score calls are merged and scored together, up to this
    /// many samples (a single larger call is scored alone). 1 disables merging.
    pub batch_max_samples: usize,
    /// Dynamic batching: how long the first call of a batch waits for others to join.
    pub batch_max_wait_ms: u64,
    /// Every this many seconds, look for changed reward-model checkpoints and swap the new
    /// models in without a restart (each Score call is scored by exactly one version). 0: off.
    pub reload_seconds: f64,
    /// The scorers, combined as Σ weight · normalise(score).
    pub components: Vec<ComponentConfig>,
    /// An audio-token policy's codec (`policy.family = "musicgen"`): the folder whose
    /// EnCodec decoder turns a clip's codes into the audio every audio component hears — an
    /// EnCodec folder (`facebook/encodec_32khz` layout) or a MusicGen folder (its
    /// `audio_encoder`). Empty: `policy.folder`. The melody family has no codec: its clips are
    /// rendered by the synthesizer.
    pub codec: PathBuf,
}

impl Default for RewardConfig {
    fn default() -> Self {
        Self {
            device: "cpu".into(),
            listen: "127.0.0.1:50052".into(),
            metrics_listen: "127.0.0.1:9101".into(),
            health_listen: String::new(),
            max_batch: 512,
            max_queued_samples: 4096,
            max_concurrent_requests: 256,
            slice_samples: 16,
            max_concurrent_streams: 64,
            max_connection_age_seconds: 60,
            batch_max_samples: 64,
            batch_max_wait_ms: 5,
            reload_seconds: 10.0,
            codec: PathBuf::new(),
            // RL-R of the paper: text adherence (the learned model and the rule-based caption
            // attributes) + quality (the learned MOS-style model and the rule-based form,
            // weighted 2 so its spread within a caption matches the attributes'), the models
            // shipped in models/rewards.
            components: vec![
                ComponentConfig {
                    kind: "text".into(),
                    checkpoint: PathBuf::from("models/rewards/text"),
                    ..ComponentConfig::default()
                },
                ComponentConfig {
                    kind: "attributes".into(),
                    ..ComponentConfig::default()
                },
                ComponentConfig {
                    kind: "quality".into(),
                    checkpoint: PathBuf::from("models/rewards/quality"),
                    ..ComponentConfig::default()
                },
                ComponentConfig {
                    kind: "form".into(),
                    weight: 2.0,
                    ..ComponentConfig::default()
                },
            ],
        }
    }
}

/// One reward component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComponentConfig {
    /// The scorer: `text` (text adherence), `attributes` and `form` (rule-based: the caption's
    /// claims and the tune's form heard), `quality`, `preference`, `remote` (a component of another
    /// reward server), or the test scorers `token-fraction` and `loudness` (see the scoring
    /// crate).
    pub kind: String,
    /// Name reported on the wire and in metrics; defaults to `kind`.
    pub name: String,
    pub weight: f32,
    /// Affine normalisation applied before weighting: (score − shift) · scale.
    pub shift: f32,
    pub scale: f32,
    /// `token-fraction`: a token counts as a hit when its id is below this.
    pub target_below: u32,
    /// `text`, `quality`, `preference`: the checkpoint folder written by `musicrl train-reward`.
    pub checkpoint: PathBuf,
    /// `remote`: the other reward server's URL, e.g. `http://clap-service:50052`.
    pub endpoint: String,
    /// `remote`: the name of the component to take from the other server's answer.
    pub remote_component: String,
    /// `remote`: also send each clip as this server renders it (mono 16-bit PCM at
    /// `sample_rate`), so a remote audio model needs no synthesizer of its own.
    pub send_audio: bool,
    /// `remote` with `send_audio`: the audio's sample rate in Hz.
    pub sample_rate: u32,
    /// `remote` with `send_audio`: windows of the clip the component scores, each
    /// `[start_s, length_s]` (a negative start counts from the clip's end), its score the
    /// windows' mean — the paper's MuLan windows are `[[0, 10], [10, 10], [20, 10]]`, its
    /// quality windows `[[0, 20], [-20, 20]]`. A window is cut to the clip; empty: the whole
    /// clip.
    pub windows: Vec<[f32; 2]>,
}

impl Default for ComponentConfig {
    fn default() -> Self {
        Self {
            kind: "token-fraction".into(),
            name: String::new(),
            weight: 1.0,
            shift: 0.0,
            scale: 1.0,
            target_below: 16,
            checkpoint: PathBuf::new(),
            endpoint: String::new(),
            remote_component: String::new(),
            send_audio: false,
            sample_rate: 16_000,
            windows: Vec::new(),
        }
    }
}

impl ComponentConfig {
    /// The component's reported name.
    pub fn display_name(&self) -> &str {
        if self.name.is_empty() {
            &self.kind
        } else {
            &self.name
        }
    }
}

/// `musicrl local`: one machine, every role as its own process on loopback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalConfig {
    /// Learner steps.
    pub steps: u64,
    /// Actor processes.
    pub actors: usize,
    /// Output folder (summary, history, checkpoints, logs).
    pub out: PathBuf,
    /// Serve Prometheus metrics from each process on an ephemeral loopback port.
    pub metrics: bool,
    /// At the end (melody family), θ0 and the final policy sample this many held-out captions
    /// (`experiment.judge_prompts`, two clips each) and the simulated rater panel compares
    /// them: the run's answer to "did the music get better?"; 0 skips it.
    pub verdict_prompts: usize,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            steps: 200,
            actors: 2,
            out: PathBuf::from("runs/local"),
            metrics: true,
            verdict_prompts: 24,
        }
    }
}

/// `musicrl experiment`: the paper's recipes run in order over several seeds, each run
/// evaluated on held-out prompts every `eval_every` steps, its checkpoint chosen by the rater
/// panel's expected score (with the over-optimisation rule), then every chosen model judged
/// against θ0 and against the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Output folder: runs/, judge/, samples/, results.json, report.html.
    pub out: PathBuf,
    /// Independent runs of every recipe (seeds `first_seed`, `first_seed + 1`, …).
    pub runs: usize,
    pub first_seed: u64,
    /// Held-out evaluation (and a checkpoint) every this many learner steps.
    pub eval_every: u64,
    /// The held-out prompts the curves and checkpoint selection use (test split only; by
    /// default other tunes than the judge's).
    pub eval_prompts: PathBuf,
    /// The prompts of the final side-by-side judgment (test split only).
    pub judge_prompts: PathBuf,
    /// Use the first this many of them for the curves (0: all).
    pub eval_prompt_count: usize,
    /// Clips sampled per prompt at each evaluation.
    pub eval_samples_per_prompt: usize,
    /// The final side-by-side judgment: clips per prompt and model.
    pub judge_pairs_per_prompt: usize,
    /// The over-optimisation rule: evaluations in a row below the best held-out score …
    pub patience: usize,
    /// … by more than this and by more than this many standard errors of the difference
    /// (the held-out score's own noise), while the training reward rises.
    pub min_delta: f64,
    pub fall_standard_errors: f64,
    /// Deterministic runs: one synchronous actor (`actor.synchronous`), so a seed
    /// reproduces its run exactly, at the cost of the overlap of sampling and training.
    pub deterministic: bool,
    /// The recipes, in order; a recipe may start from an earlier one's chosen checkpoint.
    pub recipes: Vec<RecipeConfig>,
}

/// One recipe of an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecipeConfig {
    pub name: String,
    /// The configuration file its runs use (rewards, learner); "" = the experiment's own.
    pub config: PathBuf,
    /// Learner steps per run.
    pub steps: u64,
    /// `"theta0"` (learner.init_policy), or the name of an earlier recipe: the run starts
    /// from that recipe's chosen checkpoint (same seed) and its KL is measured against it.
    pub start: String,
}

impl Default for RecipeConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            config: PathBuf::new(),
            steps: 100,
            start: START_THETA0.into(),
        }
    }
}

/// `RecipeConfig::start`: the base policy.
pub const START_THETA0: &str = "theta0";

impl Default for ExperimentConfig {
    fn default() -> Self {
        let recipe = |name: &str, config: &str, steps: u64, start: &str| RecipeConfig {
            name: name.into(),
            config: PathBuf::from(config),
            steps,
            start: start.into(),
        };
        Self {
            out: PathBuf::from("runs/experiment"),
            runs: 3,
            first_seed: 1,
            eval_every: 50,
            eval_prompts: PathBuf::from("data/prompts/select.txt"),
            judge_prompts: PathBuf::from("data/prompts/test.txt"),
            eval_prompt_count: 0,
            eval_samples_per_prompt: 2,
            judge_pairs_per_prompt: 3,
            patience: 2,
            min_delta: 0.0,
            fall_standard_errors: 2.0,
            deterministic: false,
            recipes: vec![
                recipe("rl-r", "", 300, START_THETA0),
                recipe("rl-u", "config/rl-u.toml", 100, START_THETA0),
                recipe("rl-ru", "config/rl-ru.toml", 100, "rl-r"),
                recipe("joint", "config/rl-all.toml", 300, START_THETA0),
            ],
        }
    }
}

/// Keys that change where or how long a run goes, not what it trains: a named run may
/// continue with these changed (`Config::training_differences` skips them).
const NOT_TRAINING_KEYS: &[&str] = &[
    "learner.device",
    "learner.listen",
    "learner.metrics_listen",
    "learner.steps",
    "learner.checkpoint_dir",
    "learner.checkpoint_every",
    "learner.keep_checkpoints",
    "learner.history_path",
    "learner.trajectory_log",
    "learner.trajectory_log_max_mb",
    "learner.exit_on_completion",
    "learner.queue_capacity",
    "learner.max_push",
    "learner.max_push_mb_in_flight",
    "learner.chunk_bytes",
    "learner.health_listen",
    "learner.max_subscribers",
    "learner.max_concurrent_streams",
    "learner.request_timeout_seconds",
];

/// A name safe as a folder or run name: letters, digits, `-`, `_` and `.`, not first.
fn is_safe_name(t: &str) -> bool {
    t.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !t.starts_with('.')
}

fn is_http_url(m: &str) -> bool {
    m.starts_with("http://") || m.starts_with("https://")
}

/// A validation failure of `field`, as the section checks return it.
fn bad(field: &str, why: String) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid {
        field: field.to_string(),
        why,
    })
}

impl Config {
    /// The keys of what a run trains (the policy, sampling, the learner's objective and
    /// optimiser, the reward components) whose values differ
    /// between `self` and `other`, as `key (self vs other)`.
    pub fn training_differences(&self, other: &Config) -> Vec<String> {
        let training = |k: &str| {
            ["policy.", "sampling.", "learner.", "reward.components"]
                .iter()
                .any(|p| k.starts_with(p))
                && !NOT_TRAINING_KEYS.contains(&k)
        };
        let (a, b) = (flatten(self), flatten(other));
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).filter(|k| training(k)).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter(|k| a.get(*k) != b.get(*k))
            .map(|k| {
                let show = |m: &std::collections::BTreeMap<String, String>| {
                    m.get(k).cloned().unwrap_or_else(|| "absent".into())
                };
                format!("{k} ({} vs {})", show(&a), show(&b))
            })
            .collect()
    }

    /// Reads a TOML file; missing keys take their defaults, unknown keys are an error.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<inline>"),
            message: e.to_string(),
        })
    }

    /// The default file, or `path` when given.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            Some(p) => Self::from_file(p),
            None => Ok(Self::default()),
        }
    }

    /// Serialises to TOML (saved beside every checkpoint).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("Config holds only TOML-representable values")
    }

    /// Checks every value a process relies on. Call before binding anything.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_devices_and_tracking()?;
        self.validate_policy_section()?;
        self.validate_sampling()?;
        self.validate_learner()?;
        self.validate_actor()?;
        self.validate_reward()?;
        self.validate_pretrain_and_local()?;
        self.security.validate()?;
        self.feedback.validate()?;
        self.validate_experiment()
    }

    /// Checks the devices, `[tracking]` and `[run]`.
    fn validate_devices_and_tracking(&self) -> Result<(), ConfigError> {
        for (key, text) in [
            ("learner.device", &self.learner.device),
            ("actor.device", &self.actor.device),
            ("reward.device", &self.reward.device),
        ] {
            crate::device::parse(key, text)?;
        }
        let m = &self.tracking.mlflow;
        if !m.is_empty() && !is_http_url(m) {
            return bad(
                "tracking.mlflow",
                format!("{m:?} must be an http:// or https:// URL (or empty: off)"),
            );
        }
        if !m.is_empty() && self.tracking.mlflow_experiment.trim().is_empty() {
            return bad(
                "tracking.mlflow_experiment",
                "must name an experiment when tracking.mlflow is set".into(),
            );
        }
        let t = &self.tracking.run;
        if !t.is_empty() && !is_safe_name(t) {
            return bad(
                "tracking.run",
                format!("{t:?} must be letters, digits, -, _ and . (not first)"),
            );
        }
        let run = &self.run;
        if !run.name.is_empty() {
            if !is_safe_name(&run.name) {
                return bad(
                    "run.name",
                    format!(
                        "{:?} must be letters, digits, -, _ and . (not first)",
                        run.name
                    ),
                );
            }
            if run.root.as_os_str().is_empty() {
                return bad("run.root", "a named run needs the folder of runs".into());
            }
        }
        Ok(())
    }

    /// Checks `[policy]`.
    fn validate_policy_section(&self) -> Result<(), ConfigError> {
        let p = &self.policy;
        p.lora.validate(&p.family)?;
        if p.family == FAMILY_MUSICGEN {
            self.validate_musicgen()?;
        } else if !self.reward.codec.as_os_str().is_empty() {
            return bad(
                "reward.codec",
                format!(
                    "{}: only an audio-token policy (policy.family = {FAMILY_MUSICGEN:?}) has a \
                     codec; the {:?} family's clips are rendered by the synthesizer",
                    self.reward.codec.display(),
                    p.family
                ),
            );
        } else if p.family != FAMILY_MELODY {
            return bad(
                "policy.family",
                format!(
                    "{:?} is not {FAMILY_MELODY:?} or {FAMILY_MUSICGEN:?}",
                    p.family
                ),
            );
        }
        if p.vocab_size < 2 || p.vocab_size > (1 << 24) {
            return bad(
                "policy.vocab_size",
                format!("{} is not in 2..=16777216", p.vocab_size),
            );
        }
        if p.max_tokens == 0 || p.max_tokens > 65_536 {
            return bad(
                "policy.max_tokens",
                format!("{} is not in 1..=65536", p.max_tokens),
            );
        }
        if p.n_heads == 0 || p.d_model == 0 || !p.d_model.is_multiple_of(p.n_heads) {
            return bad(
                "policy.d_model",
                format!(
                    "d_model {} must be a positive multiple of n_heads {}",
                    p.d_model, p.n_heads
                ),
            );
        }
        if p.n_layers == 0 || p.d_ff == 0 {
            return bad(
                "policy.n_layers",
                "n_layers and d_ff must be positive".into(),
            );
        }
        if !crate::caption::ENCODERS.contains(&p.caption_encoder.as_str()) {
            return bad(
                "policy.caption_encoder",
                format!(
                    "{:?} is not an encoder this build has (it has {:?})",
                    p.caption_encoder,
                    crate::caption::ENCODERS
                ),
            );
        }
        if p.caption_buckets < 2 || p.max_caption_words == 0 {
            return bad(
                "policy.caption_buckets",
                "caption_buckets must be >= 2 and max_caption_words >= 1".into(),
            );
        }
        Ok(())
    }

    /// Checks `[sampling]`.
    fn validate_sampling(&self) -> Result<(), ConfigError> {
        let t = self.sampling.temperature;
        if !t.is_finite() || t <= 0.0 {
            return bad(
                "sampling.temperature",
                format!("{t} must be finite and > 0"),
            );
        }
        Ok(())
    }

    /// Checks `[learner]`.
    fn validate_learner(&self) -> Result<(), ConfigError> {
        let l = &self.learner;
        if l.batch_size == 0 {
            return bad("learner.batch_size", "must be positive".into());
        }
        if !(l.learning_rate.is_finite() && l.learning_rate > 0.0) {
            return bad(
                "learner.learning_rate",
                format!("{} must be > 0", l.learning_rate),
            );
        }
        if !(0.0..=1.0).contains(&l.kl_coef) {
            return bad(
                "learner.kl_coef",
                format!("α = {} must be in [0, 1]", l.kl_coef),
            );
        }
        if !(l.reward_clip.is_finite() && l.reward_clip > 0.0) {
            return bad(
                "learner.reward_clip",
                format!("{} must be finite and > 0", l.reward_clip),
            );
        }
        for (field, v) in [
            ("learner.value_coef", l.value_coef),
            ("learner.entropy_coef", l.entropy_coef),
            ("learner.max_grad_norm", l.max_grad_norm),
            ("learner.importance_clip", l.importance_clip),
        ] {
            if !v.is_finite() || v < 0.0 {
                return bad(field, format!("{v} must be finite and >= 0"));
            }
        }
        if l.max_push_mb_in_flight == 0 || l.max_push_mb_in_flight > 1 << 20 {
            return bad(
                "learner.max_push_mb_in_flight",
                format!(
                    "{} must be between 1 and 1048576 MiB",
                    l.max_push_mb_in_flight
                ),
            );
        }
        if l.queue_capacity == 0 || l.max_push == 0 {
            return bad(
                "learner.queue_capacity",
                "queue_capacity and max_push must be positive".into(),
            );
        }
        if l.max_subscribers == 0 || l.max_concurrent_streams == 0 {
            return bad(
                "learner.max_subscribers",
                "max_subscribers and max_concurrent_streams must be positive".into(),
            );
        }
        if !(l.request_timeout_seconds.is_finite() && l.request_timeout_seconds > 0.0) {
            return bad("learner.request_timeout_seconds", "must be > 0".into());
        }
        if l.chunk_bytes < 1024 || l.chunk_bytes > 3 << 20 {
            return bad(
                "learner.chunk_bytes",
                format!(
                    "{} must be in 1 KiB ..= 3 MiB (below gRPC's 4 MiB message limit)",
                    l.chunk_bytes
                ),
            );
        }
        if ![BASELINE_LEAVE_ONE_OUT, BASELINE_VALUE].contains(&l.baseline.as_str()) {
            return bad(
                "learner.baseline",
                format!(
                    "{:?} is not a baseline (use {BASELINE_LEAVE_ONE_OUT:?} or {BASELINE_VALUE:?})",
                    l.baseline
                ),
            );
        }
        Ok(())
    }

    /// Checks `[actor]`.
    fn validate_actor(&self) -> Result<(), ConfigError> {
        let a = &self.actor;
        match a.engine.as_str() {
            ENGINE_NATIVE => {
                if crate::device::parse("actor.device", &a.device)?
                    != crate::device::DeviceSpec::Cpu
                {
                    return bad(
                        "actor.engine",
                        format!(
                            "{ENGINE_NATIVE:?} runs on the CPU only, but actor.device is {:?}: set actor.engine = {ENGINE_BURN:?} to sample on a GPU",
                            a.device
                        ),
                    );
                }
            }
            ENGINE_BURN => {}
            other => {
                return bad(
                    "actor.engine",
                    format!(
                        "{other:?} is not an engine (use {ENGINE_NATIVE:?} or {ENGINE_BURN:?})"
                    ),
                );
            }
        }
        if !["none", "zstd", "gzip"].contains(&a.parameter_compression.as_str()) {
            return bad(
                "actor.parameter_compression",
                format!(
                    "{:?} is not one of \"none\", \"zstd\", \"gzip\"",
                    a.parameter_compression
                ),
            );
        }
        if a.batch_size == 0 {
            return bad("actor.batch_size", "must be positive".into());
        }
        if a.samples_per_prompt == 0 {
            return bad(
                "actor.samples_per_prompt",
                "must be positive (1 samples a new caption for every clip)".into(),
            );
        }
        if a.synchronous && !self.learner.batch_size.is_multiple_of(a.batch_size) {
            return bad(
                "actor.synchronous",
                format!(
                    "needs learner.batch_size ({}) to be a multiple of actor.batch_size ({}), so that whole rounds fill each update",
                    self.learner.batch_size, a.batch_size
                ),
            );
        }
        if !(a.max_backoff_seconds.is_finite() && a.max_backoff_seconds > 0.0) {
            return bad("actor.max_backoff_seconds", "must be > 0".into());
        }
        if !(a.min_backoff_seconds.is_finite()
            && a.min_backoff_seconds > 0.0
            && a.min_backoff_seconds <= a.max_backoff_seconds)
        {
            return bad(
                "actor.min_backoff_seconds",
                format!(
                    "{} must be > 0 and at most actor.max_backoff_seconds ({})",
                    a.min_backoff_seconds, a.max_backoff_seconds
                ),
            );
        }
        if !(a.reward_resolve_seconds.is_finite() && a.reward_resolve_seconds >= 0.1) {
            return bad(
                "actor.reward_resolve_seconds",
                "must be at least 0.1".into(),
            );
        }
        if !(a.reward_timeout_seconds.is_finite() && a.reward_timeout_seconds > 0.0) {
            return bad("actor.reward_timeout_seconds", "must be > 0".into());
        }
        Ok(())
    }

    /// A `preference` component reads the policy's own tokens: its checkpoint must have been
    /// trained for this policy's family (its `config.json`'s `policy.family`), and a MusicGen
    /// one on clips of this folder's shape. A checkpoint that cannot be read yet is left to
    /// the reward server, which loads it.
    fn validate_preference_families(&self) -> Result<(), ConfigError> {
        for c in self
            .reward
            .components
            .iter()
            .filter(|c| c.kind == "preference")
        {
            let Some(saved) = paths::find(&c.checkpoint)
                .and_then(|d| std::fs::read_to_string(d.join("config.json")).ok())
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            else {
                continue;
            };
            let policy = &saved["policy"];
            let family = policy["family"].as_str().unwrap_or(FAMILY_MELODY);
            let name = c.display_name();
            if family != self.policy.family {
                return bad(
                    "reward.components",
                    format!(
                        "component {name:?} (preference) was trained over the {family} family's \
                         tokens ({}'s config.json), and this policy is {:?}: train one on this \
                         policy's clips (`musicrl train-reward preference` with this \
                         configuration)",
                        c.checkpoint.display(),
                        self.policy.family
                    ),
                );
            }
            if family == FAMILY_MUSICGEN {
                let shape = |v: &serde_json::Value| {
                    paths::find(Path::new(v["folder"].as_str().unwrap_or("")))
                        .and_then(|f| musicgen_shape(&f).ok())
                };
                let (theirs, ours) = (
                    shape(policy),
                    paths::find(&self.policy.folder).and_then(|f| musicgen_shape(&f).ok()),
                );
                if let (Some(theirs), Some(ours)) = (theirs, ours)
                    && theirs != ours
                {
                    return bad(
                        "reward.components",
                        format!(
                            "component {name:?} (preference) reads clips of {} codebooks of {} \
                             codes, and policy.folder's clips are {} of {}",
                            theirs.0, theirs.1, ours.0, ours.1
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// Checks `[reward]`.
    fn validate_reward(&self) -> Result<(), ConfigError> {
        let r = &self.reward;
        self.validate_preference_families()?;
        if r.max_batch == 0 {
            return bad("reward.max_batch", "must be positive".into());
        }
        if r.max_concurrent_requests == 0 {
            return bad("reward.max_concurrent_requests", "must be positive".into());
        }
        if r.max_queued_samples < r.max_batch {
            return bad(
                "reward.max_queued_samples",
                format!(
                    "{} must be at least reward.max_batch ({}), or a full call could never be queued",
                    r.max_queued_samples, r.max_batch
                ),
            );
        }
        if r.slice_samples == 0 || r.max_concurrent_streams == 0 {
            return bad(
                "reward.slice_samples",
                "slice_samples and max_concurrent_streams must be positive".into(),
            );
        }
        if r.batch_max_samples == 0 {
            return bad(
                "reward.batch_max_samples",
                "must be positive (1 disables merging)".into(),
            );
        }
        if !r.reload_seconds.is_finite() || r.reload_seconds < 0.0 {
            return bad(
                "reward.reload_seconds",
                format!("{} must be finite and >= 0", r.reload_seconds),
            );
        }
        if r.batch_max_wait_ms > 10_000 {
            return bad(
                "reward.batch_max_wait_ms",
                format!("{} ms is more than 10 s", r.batch_max_wait_ms),
            );
        }
        if r.components.is_empty() {
            return bad(
                "reward.components",
                "at least one component is needed".into(),
            );
        }
        for (i, c) in r.components.iter().enumerate() {
            if c.send_audio && !AUDIO_SAMPLE_RATES.contains(&c.sample_rate) {
                return bad(
                    &format!("reward.components[{i}].sample_rate"),
                    format!("{} Hz is outside 8000..=192000", c.sample_rate),
                );
            }
            let hears_remote_audio = c.kind == "remote" && c.send_audio;
            if !c.windows.is_empty() && !hears_remote_audio {
                return bad(
                    &format!("reward.components[{i}].windows"),
                    "windows cut the audio a `remote` component with send_audio = true is sent; \
                     the built-in scorers choose their own windows"
                        .into(),
                );
            }
            for (j, [start, length]) in c.windows.iter().enumerate() {
                if !start.is_finite() || !length.is_finite() || *length <= 0.0 {
                    return bad(
                        &format!("reward.components[{i}].windows[{j}]"),
                        format!(
                            "[{start}, {length}]: expected [start_s, length_s] with a finite start and a length above 0"
                        ),
                    );
                }
            }
            for (what, v) in [("weight", c.weight), ("shift", c.shift), ("scale", c.scale)] {
                if !v.is_finite() {
                    return bad(
                        &format!("reward.components[{i}].{what}"),
                        format!("{v} is not finite"),
                    );
                }
            }
        }
        Ok(())
    }

    /// Checks `[pretrain]` and `[local]`.
    fn validate_pretrain_and_local(&self) -> Result<(), ConfigError> {
        let pt = &self.pretrain;
        if pt.epochs == 0 || pt.batch_size == 0 {
            return bad(
                "pretrain.epochs",
                "epochs and batch_size must be positive".into(),
            );
        }
        if !(pt.learning_rate.is_finite() && pt.learning_rate > 0.0) {
            return bad(
                "pretrain.learning_rate",
                format!("{} must be > 0", pt.learning_rate),
            );
        }
        if !pt.max_grad_norm.is_finite() || pt.max_grad_norm < 0.0 {
            return bad(
                "pretrain.max_grad_norm",
                format!("{} must be finite and >= 0", pt.max_grad_norm),
            );
        }
        if self.local.actors == 0 {
            return bad("local.actors", "at least one actor is needed".into());
        }
        Ok(())
    }

    /// A MusicGen policy: the folder exists and its decoder's shape is the configured one
    /// (`vocab_size` = codebook size, `max_tokens` = codebooks × `frames`, no END), and
    /// every reward component can read codec tokens.
    /// The folder whose codec turns the policy's clips into audio: `reward.codec`, or
    /// `policy.folder` when that is empty; `None` for the melody family (no codec).
    pub fn codec_folder(&self) -> Option<PathBuf> {
        if self.policy.family != FAMILY_MUSICGEN {
            return None;
        }
        Some(if self.reward.codec.as_os_str().is_empty() {
            self.policy.folder.clone()
        } else {
            self.reward.codec.clone()
        })
    }

    fn validate_musicgen(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, why: String| {
            Err(ConfigError::Invalid {
                field: field.to_string(),
                why,
            })
        };
        let p = &self.policy;
        let Some(folder) = paths::find(&p.folder) else {
            return bad(
                "policy.folder",
                format!(
                    "{} (a MusicGen model folder: config.json, model.safetensors, \
                     tokenizer.json; see docs/real-models.md)",
                    paths::missing("policy.folder", &p.folder)
                ),
            );
        };
        let (codebooks, codebook) =
            musicgen_shape(&folder).map_err(|why| ConfigError::Invalid {
                field: "policy.folder".into(),
                why,
            })?;
        if p.frames == 0 {
            return bad(
                "policy.frames",
                "a MusicGen clip needs at least 1 frame".into(),
            );
        }
        if p.vocab_size != codebook {
            return bad(
                "policy.vocab_size",
                format!(
                    "{} but the folder's codebooks hold {codebook} codes: set policy.vocab_size = {codebook}",
                    p.vocab_size
                ),
            );
        }
        if p.max_tokens != codebooks * p.frames {
            return bad(
                "policy.max_tokens",
                format!(
                    "{} but a clip is {codebooks} codebooks × {} frames: set policy.max_tokens = {}",
                    p.max_tokens,
                    p.frames,
                    codebooks * p.frames
                ),
            );
        }
        if (p.end_token as usize) < p.vocab_size {
            return bad(
                "policy.end_token",
                format!(
                    "{} is a code; MusicGen clips have no END: set it to {} (the codebook size) or more",
                    p.end_token, p.vocab_size
                ),
            );
        }
        // The audio components hear the clip through the codec; a `preference` component
        // reads the codes themselves (`validate_preference_families` checks its family and
        // its folder's shape).
        Ok(())
    }

    fn validate_experiment(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, why: String| {
            Err(ConfigError::Invalid {
                field: field.to_string(),
                why,
            })
        };
        let e = &self.experiment;
        if e.runs == 0 {
            return bad("experiment.runs", "at least one run is needed".into());
        }
        if e.eval_every == 0 {
            return bad("experiment.eval_every", "must be at least 1 step".into());
        }
        if e.eval_samples_per_prompt == 0 || e.judge_pairs_per_prompt == 0 {
            return bad(
                "experiment.eval_samples_per_prompt",
                "eval_samples_per_prompt and judge_pairs_per_prompt must be at least 1".into(),
            );
        }
        if !e.fall_standard_errors.is_finite() || e.fall_standard_errors < 0.0 {
            return bad(
                "experiment.fall_standard_errors",
                format!("{} must be finite and >= 0", e.fall_standard_errors),
            );
        }
        if !e.min_delta.is_finite() || e.min_delta < 0.0 {
            return bad(
                "experiment.min_delta",
                format!("{} must be finite and >= 0", e.min_delta),
            );
        }
        if e.recipes.is_empty() {
            return bad("experiment.recipes", "at least one recipe is needed".into());
        }
        let mut seen: Vec<&str> = Vec::new();
        for (i, r) in e.recipes.iter().enumerate() {
            let field = format!("experiment.recipes[{i}]");
            let name_ok = !r.name.is_empty()
                && r.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !name_ok || r.name == START_THETA0 {
                return bad(
                    &format!("{field}.name"),
                    format!(
                        "{:?} must be a non-empty name of letters, digits, - and _ (not {START_THETA0:?})",
                        r.name
                    ),
                );
            }
            if seen.contains(&r.name.as_str()) {
                return bad(
                    &format!("{field}.name"),
                    format!("{:?} is used twice", r.name),
                );
            }
            if r.steps < e.eval_every {
                return bad(
                    &format!("{field}.steps"),
                    format!(
                        "{} steps is fewer than one evaluation interval (experiment.eval_every = {})",
                        r.steps, e.eval_every
                    ),
                );
            }
            if r.start != START_THETA0 && !seen.contains(&r.start.as_str()) {
                return bad(
                    &format!("{field}.start"),
                    format!(
                        "{:?} is neither {START_THETA0:?} nor a recipe listed before {:?}",
                        r.start, r.name
                    ),
                );
            }
            seen.push(&r.name);
        }
        Ok(())
    }
}

/// The form of a parameter version's bytes (the wire's `ParameterEncoding`; an actor's
/// `actor.parameter_encoding`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParameterEncoding {
    /// burn's burnpack record, every parameter f32: exactly the learner's parameters.
    #[default]
    F32,
    /// A safetensors file with every parameter bfloat16 (rounded to nearest even): half the
    /// bytes, each parameter within a relative
    /// `BF16_RELATIVE_ERROR` (`musicrl_policy::melody::safetensors`) of the learner's.
    Bf16,
}

impl std::fmt::Display for ParameterEncoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
        })
    }
}

/// Sample rates an `Audio` message may declare.
pub const AUDIO_SAMPLE_RATES: std::ops::RangeInclusive<u32> = 8_000..=192_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_codec_belongs_to_an_audio_token_policy_and_windows_to_a_remote_audio_component() {
        let mut c = Config::default();
        c.reward.codec = PathBuf::from("models/encodec");
        let e = c.validate().expect_err("melody has no codec").to_string();
        assert!(
            e.contains("reward.codec") && e.contains("synthesizer"),
            "{e}"
        );
        assert_eq!(c.codec_folder(), None);

        let mut c = Config::default();
        c.reward.components[0].windows = vec![[0.0, 10.0]];
        let e = c
            .validate()
            .expect_err("text chooses its own windows")
            .to_string();
        assert!(e.contains("reward.components[0].windows"), "{e}");
        c.reward.components[0] = ComponentConfig {
            kind: "remote".into(),
            endpoint: "http://127.0.0.1:1".into(),
            remote_component: "clap".into(),
            send_audio: true,
            sample_rate: 48_000,
            windows: vec![[0.0, 10.0], [-20.0, 20.0]],
            ..ComponentConfig::default()
        };
        c.validate().expect("a remote audio component's windows");
        c.reward.components[0].windows = vec![[0.0, 0.0]];
        let e = c.validate().expect_err("an empty window").to_string();
        assert!(
            e.contains("windows[0]") && e.contains("length above 0"),
            "{e}"
        );
    }

    #[test]
    fn shipped_default_file_matches_embedded_default() {
        let text = include_str!("../../../config/default.toml");
        let parsed = Config::from_toml(text).expect("config/default.toml parses");
        assert_eq!(parsed, Config::default());
        parsed.validate().expect("the default is valid");
    }

    #[test]
    fn the_shipped_reward_recipes_are_valid_and_point_at_shipped_models() {
        for (name, text, kinds) in [
            (
                "config/rl-u.toml",
                include_str!("../../../config/rl-u.toml"),
                &["preference"][..],
            ),
            (
                "config/rl-ru.toml",
                include_str!("../../../config/rl-ru.toml"),
                &["preference"][..],
            ),
            (
                "config/rl-all.toml",
                include_str!("../../../config/rl-all.toml"),
                &["text", "attributes", "quality", "form", "preference"][..],
            ),
        ] {
            let c = Config::from_toml(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            c.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            let got: Vec<&str> = c
                .reward
                .components
                .iter()
                .map(|k| k.kind.as_str())
                .collect();
            assert_eq!(got, kinds, "{name}");
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            for k in c
                .reward
                .components
                .iter()
                .filter(|k| k.kind != "attributes" && k.kind != "form")
            {
                let dir = root.join(&k.checkpoint);
                for file in ["model.bpk", "config.json"] {
                    assert!(dir.join(file).exists(), "{name}: {}/{file}", dir.display());
                }
            }
        }
    }

    #[test]
    fn adapters_are_checked_and_match_projections_as_peft_does() {
        let lora = LoraConfig {
            rank: 8,
            alpha: 16.0,
            targets: vec!["q_proj".into(), "encoder_attn.v_proj".into(), "fc2".into()],
            seed: 0,
        };
        lora.validate(FAMILY_MUSICGEN).unwrap();
        let chosen: Vec<&str> = LORA_PROJECTIONS
            .iter()
            .copied()
            .filter(|p| lora.targets_projection(p))
            .collect();
        assert_eq!(
            chosen,
            [
                "self_attn.q_proj",
                "encoder_attn.q_proj",
                "encoder_attn.v_proj",
                "fc2"
            ]
        );
        assert!((lora.scale() - 2.0).abs() < 1e-6);
        // "proj" is not a dotted suffix of any name: it matches nothing and is refused.
        let err = |l: LoraConfig, family: &str| l.validate(family).unwrap_err().to_string();
        let none = LoraConfig {
            targets: vec!["proj".into()],
            ..lora.clone()
        };
        assert!(err(none, FAMILY_MUSICGEN).contains("\"proj\" matches no projection"));
        let melody = err(lora.clone(), FAMILY_MELODY);
        assert!(melody.contains("policy.lora.rank"), "{melody}");
        let alpha = LoraConfig {
            alpha: 0.0,
            ..lora.clone()
        };
        assert!(err(alpha, FAMILY_MUSICGEN).contains("policy.lora.alpha"));
        let empty = LoraConfig {
            targets: vec![],
            ..lora.clone()
        };
        assert!(err(empty, FAMILY_MUSICGEN).contains("policy.lora.targets"));
        // Rank 0 is full fine-tuning: nothing else is checked.
        LoraConfig {
            rank: 0,
            targets: vec![],
            ..lora
        }
        .validate(FAMILY_MELODY)
        .unwrap();
    }

    #[test]
    fn the_musicgen_configurations_parse_and_name_the_family() {
        for text in [
            include_str!("../../../config/musicgen-tiny.toml"),
            include_str!("../../../config/musicgen-tiny-audio.toml"),
            include_str!("../../../config/musicgen-small.toml"),
            include_str!("../../../config/musicgen-medium-lora.toml"),
        ] {
            let c = Config::from_toml(text).expect("parses");
            c.policy
                .lora
                .validate(&c.policy.family)
                .expect("valid adapters");
            assert_eq!(c.policy.family, FAMILY_MUSICGEN);
            assert!(c.policy.end_token as usize >= c.policy.vocab_size);
        }
        // musicgen-small's recipe is RL-R heard through its own codec: CLAP and Aesthetics.
        let small = Config::from_toml(include_str!("../../../config/musicgen-small.toml")).unwrap();
        assert_eq!(small.codec_folder(), Some(small.policy.folder.clone()));
        let heard: Vec<(&str, u32)> = small
            .reward
            .components
            .iter()
            .filter(|k| k.kind == "remote" && k.send_audio)
            .map(|k| (k.remote_component.as_str(), k.sample_rate))
            .collect();
        assert_eq!(heard, [("clap", 48_000), ("PQ", 16_000)]);
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let tiny = Config::from_toml(include_str!("../../../config/musicgen-tiny.toml")).unwrap();
        let (codebooks, codebook) = musicgen_shape(&root.join(&tiny.policy.folder)).unwrap();
        assert_eq!((codebooks, codebook), (4, 32));
        assert_eq!(tiny.policy.max_tokens, codebooks * tiny.policy.frames);
        // The cluster's MusicGen configuration is valid once its folder is there (the tiny
        // fixture stands in for musicgen-small, with its shape).
        let mut cluster = Config::from_toml(include_str!(
            "../../../deploy/overlays/musicgen/musicrl.toml"
        ))
        .unwrap();
        assert_eq!(cluster.policy.max_tokens, 4 * cluster.policy.frames);
        cluster.policy.folder = root.join(&tiny.policy.folder);
        cluster.policy.frames = tiny.policy.frames;
        cluster.policy.vocab_size = codebook;
        cluster.policy.max_tokens = tiny.policy.max_tokens;
        cluster.policy.end_token = tiny.policy.end_token;
        cluster
            .validate()
            .expect("the musicgen overlay's configuration");
    }

    #[test]
    fn the_experiments_recipes_exist_and_are_valid() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for (name, text) in [
            (
                "config/default.toml",
                include_str!("../../../config/default.toml"),
            ),
            (
                "config/experiment-rl-u-long.toml",
                include_str!("../../../config/experiment-rl-u-long.toml"),
            ),
        ] {
            let c = Config::from_toml(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            c.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            for r in &c.experiment.recipes {
                if !r.config.as_os_str().is_empty() {
                    let path = root.join(&r.config);
                    let recipe = Config::from_file(&path)
                        .unwrap_or_else(|e| panic!("{name}: recipe {}: {e}", r.name));
                    recipe.validate().expect("a valid recipe");
                    assert_eq!(recipe.policy, c.policy, "{name}: {} shares θ0", r.name);
                }
            }
        }
        // RL-RU starts from RL-R.
        let d = ExperimentConfig::default();
        let ru = d.recipes.iter().find(|r| r.name == "rl-ru").expect("rl-ru");
        assert_eq!(ru.start, "rl-r");
    }

    #[test]
    fn bad_experiments_are_named() {
        let mut c = Config::default();
        c.experiment.recipes[0].start = "rl-ru".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("experiment.recipes[0].start"), "{err}");
        let mut c = Config::default();
        c.experiment.recipes[1].name = "rl-r".into();
        assert!(c.validate().unwrap_err().to_string().contains("used twice"));
        let mut c = Config::default();
        c.experiment.recipes[0].steps = 10;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("evaluation interval")
        );
        let mut c = Config::default();
        c.actor.synchronous = true;
        c.actor.batch_size = 5;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("actor.synchronous")
        );
    }

    #[test]
    fn every_listener_binds_loopback_unless_configured() {
        let c = Config::default();
        for (key, addr) in [
            ("learner.listen", &c.learner.listen),
            ("learner.metrics_listen", &c.learner.metrics_listen),
            ("reward.listen", &c.reward.listen),
            ("reward.metrics_listen", &c.reward.metrics_listen),
            ("actor.metrics_listen", &c.actor.metrics_listen),
        ] {
            assert!(addr.starts_with("127.0.0.1:"), "{key} = {addr}");
        }
        // The cluster configuration opens them on purpose.
        let k8s = Config::from_toml(include_str!("../../../deploy/base/config/musicrl.toml"))
            .expect("parses");
        for addr in [
            &k8s.learner.listen,
            &k8s.learner.metrics_listen,
            &k8s.reward.listen,
            &k8s.reward.metrics_listen,
            &k8s.actor.metrics_listen,
        ] {
            assert!(addr.starts_with("0.0.0.0:"), "{addr}");
        }
    }

    #[test]
    fn the_kubernetes_configuration_is_valid() {
        let text = include_str!("../../../deploy/base/config/musicrl.toml");
        let c = Config::from_toml(text).expect("deploy/base/config/musicrl.toml parses");
        c.validate().expect("and is valid");
        assert!(!c.learner.exit_on_completion && !c.actor.exit_on_completion);
        assert!(c.run.root.starts_with("/var/lib/musicrl") && !c.run.name.is_empty());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = Config::from_toml("[learner]\nbatch_sise = 3\n").unwrap_err();
        assert!(err.to_string().contains("batch_sise"), "{err}");
        let mut c = Config::default();
        c.policy.n_heads = 3;
        let err = c.validate().unwrap_err();
        assert!(err.to_string().contains("policy.d_model"), "{err}");
        let mut c = Config::default();
        c.learner.baseline = "mean".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("learner.baseline") && err.contains("leave-one-out"),
            "{err}"
        );
        let mut c = Config::default();
        c.actor.samples_per_prompt = 0;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("actor.samples_per_prompt"), "{err}");
        let mut c = Config::default();
        c.policy.caption_encoder = "bpe".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("policy.caption_encoder") && err.contains("words-trigrams-fnv1a"),
            "{err}"
        );
    }
}
