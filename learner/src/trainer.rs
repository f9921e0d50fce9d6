//! The training state and one update: batch → tensors → loss → clipped Adam step.
//!
//! Runs on a dedicated thread (never on the async executor). No network IO here; files only
//! through [`crate::checkpoint`].

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};

use musicrl_common::{PolicyVersion, Trajectory};
use musicrl_config::{Config, PolicyConfig};
use musicrl_policy::melody::params::{ParameterBlob, load_policy};
use musicrl_policy::melody::{Policy, caption_batch, token_tensor};

pub use musicrl_policy::optim::clip_global_norm;

use crate::error::{LearnerError, Result};
use crate::loss::{GroupBaseline, LossCoefs, LossInputs, leave_one_out, reinforce_kl_loss};

/// What one update measured.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct StepStats {
    pub step: u64,
    /// The learning rate this update used (see `learner.lr_warmup_steps`).
    #[serde(default)]
    pub learning_rate: f64,
    pub loss: f32,
    pub policy_loss: f32,
    pub kl: f32,
    pub value_loss: f32,
    pub entropy: f32,
    pub reward_mean: f32,
    /// Mean raw score per reward component.
    pub component_means: Vec<(String, f32)>,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    pub importance_weight: f32,
    /// Mean versions between the sampling policy and the updated one.
    pub policy_lag_mean: f32,
    pub batch_size: usize,
    /// Tokens trained on: each trajectory up to and including its first END.
    pub batch_tokens: usize,
    /// Whether this was a value warm-up step (the policy was not updated).
    #[serde(default)]
    pub value_warmup: bool,
    /// Mean trajectory length (up to and including END) and the share that ended with END
    /// rather than at `max_tokens`.
    #[serde(default)]
    pub mean_length: f32,
    #[serde(default)]
    pub ended_share: f32,
    /// Share of the batch whose policy term used a leave-one-out baseline (its caption was
    /// sampled more than once in the batch) rather than V(s_t).
    #[serde(default)]
    pub grouped_share: f32,
    /// Distinct scorer versions among the batch's trajectories (more than 1: a mixed batch,
    /// counted by `musicrl_learner_mixed_scorer_batches_total`).
    #[serde(default)]
    pub scorer_versions: usize,
    /// Trajectories whose reward was outside ±`learner.reward_clip` and was clipped to it.
    #[serde(default)]
    pub rewards_clipped: usize,
    /// The largest |log π_θ(a) − log μ(a)| over the tokens of the batch's trajectories
    /// sampled by exactly the parameters being updated (none: `None`): how far the actors'
    /// recorded log-probabilities are from the learner's own for the same version. Near 0
    /// (float error) when the actors sample the learner's distribution; larger with bf16
    /// broadcasts, guidance or top-k at the actors.
    #[serde(default)]
    pub fresh_logprob_gap: Option<f32>,
}

/// [`StepStats::fresh_logprob_gap`]: `logprobs` is `[B, width]` row-major (the learner's
/// log π of each taken action), `lens[b]` the real tokens of row b.
pub(crate) fn fresh_logprob_gap(
    batch: &[Trajectory],
    version: PolicyVersion,
    logprobs: &[f32],
    width: usize,
    lens: &[usize],
) -> Option<f32> {
    let mut gap: Option<f32> = None;
    for (b, x) in batch.iter().enumerate() {
        if x.policy_version != version {
            continue;
        }
        for (t, mu) in x.behaviour_logprobs.iter().take(lens[b]).enumerate() {
            let d = (logprobs[b * width + t] - mu).abs();
            gap = Some(gap.map_or(d, |g| g.max(d)));
        }
    }
    gap
}

/// The distinct scorer versions in a batch (more than one: the reward configuration changed
/// while the batch was being sampled, e.g. a reward server replaced mid-run).
pub fn scorer_versions(batch: &[Trajectory]) -> usize {
    let mut v: Vec<&str> = batch.iter().map(|t| t.scorer_version.as_str()).collect();
    v.sort_unstable();
    v.dedup();
    v.len()
}

/// How much of a trajectory the learner trains on: up to and including the first `end`
/// token (ending is an action the policy takes), nothing after it.
pub fn trained_len(tokens: &[u32], end: u32) -> usize {
    tokens
        .iter()
        .position(|&t| t == end)
        .map_or(tokens.len(), |i| i + 1)
}

/// Where `path` is (the working directory, then the installation), else an error naming the
/// `learner.` key that gave it.
fn existing(path: &std::path::Path, key: &str) -> Result<std::path::PathBuf> {
    if let Some(found) = musicrl_config::paths::find(path) {
        return Ok(found);
    }
    Err(LearnerError::Checkpoint(format!(
        "{}; point it at a policy.bpk (the shipped θ0 is models/base/policy.bpk, run from the \
         repository or an installation that has it), or set {key} = \"\" ({})",
        musicrl_config::paths::missing(&format!("learner.{key}"), path),
        if key == "init_policy" {
            "a seeded random policy"
        } else {
            "anchor the KL to the starting policy"
        }
    )))
}

/// The objective's settings and the learning-rate schedule, shared by every policy family.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    pub coefs: LossCoefs,
    pub learning_rate: f64,
    pub max_grad_norm: f32,
    pub value_warmup_steps: u64,
    pub lr_warmup_steps: u64,
    /// `learner.baseline = "leave-one-out"`.
    pub leave_one_out: bool,
    /// `learner.reward_clip`: rewards are clipped to ±this before the loss.
    pub reward_clip: f32,
}

impl Schedule {
    /// From the configuration; `max_tokens` is T_max of the loss's normalisation.
    pub fn from_config(config: &Config, max_tokens: usize) -> Self {
        let l = &config.learner;
        Self {
            coefs: LossCoefs {
                kl_coef: l.kl_coef,
                value_coef: l.value_coef,
                entropy_coef: l.entropy_coef,
                importance_clip: l.importance_clip,
                temperature: config.sampling.temperature,
                max_tokens,
            },
            learning_rate: l.learning_rate,
            max_grad_norm: l.max_grad_norm,
            value_warmup_steps: l.value_warmup_steps,
            lr_warmup_steps: l.lr_warmup_steps,
            leave_one_out: l.baseline == musicrl_config::BASELINE_LEAVE_ONE_OUT,
            reward_clip: l.reward_clip,
        }
    }

    /// See [`Trainer::learning_rate_at`].
    pub fn learning_rate_at(&self, step: u64) -> f64 {
        if step < self.value_warmup_steps || self.lr_warmup_steps == 0 {
            return self.learning_rate;
        }
        let k = (step - self.value_warmup_steps + 1) as f64;
        self.learning_rate * (k / self.lr_warmup_steps as f64).min(1.0)
    }

    /// The batch's rewards clipped to ±`reward_clip` (a misconfigured or hostile scorer
    /// counts as the bound, so no single batch can dominate the update), and how many were.
    pub fn clipped_rewards(&self, batch: &[Trajectory]) -> (Vec<f32>, usize) {
        let clip = self.reward_clip;
        (
            batch.iter().map(|x| x.reward.clamp(-clip, clip)).collect(),
            batch.iter().filter(|x| x.reward.abs() > clip).count(),
        )
    }

    /// Leave-one-out baselines over the clips of each caption (see `loss.rs`), and how many
    /// trajectories have one.
    pub fn group_baseline(
        &self,
        captions: &[&str],
        rewards: &[f32],
        device: &Device,
    ) -> (Option<GroupBaseline>, usize) {
        let b = rewards.len();
        let loo = if self.leave_one_out {
            leave_one_out(captions, rewards)
        } else {
            vec![None; b]
        };
        let grouped = loo.iter().filter(|x| x.is_some()).count();
        let baseline = (grouped > 0).then(|| GroupBaseline {
            baseline: Tensor::from_data(
                TensorData::new(loo.iter().map(|x| x.unwrap_or(0.0)).collect(), [b]),
                device,
            ),
            present: Tensor::from_data(
                TensorData::new(
                    loo.iter()
                        .map(|x| if x.is_some() { 1.0f32 } else { 0.0 })
                        .collect(),
                    [b],
                ),
                device,
            ),
        });
        (baseline, grouped)
    }
}

/// The policy being trained, its frozen KL reference (θ0 unless `learner.reference_policy`
/// names another), and the optimiser.
pub struct Trainer {
    policy_config: PolicyConfig,
    schedule: Schedule,
    device: Device,
    policy: Policy,
    reference: Policy,
    optimizer: ModuleOptimizer,
    step: u64,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl Trainer {
    /// A fresh trainer at step 0: the policy starts from `learner.init_policy` when set,
    /// otherwise from a random initialisation seeded by `learner.seed`. The frozen KL
    /// reference is `learner.reference_policy` when set, otherwise a copy of the start.
    pub fn new(config: &Config, device: &Device) -> Result<Self> {
        let policy = if config.learner.init_policy.as_os_str().is_empty() {
            device.seed(config.learner.seed);
            Policy::new(&config.policy, device)
        } else {
            load_policy(
                &existing(&config.learner.init_policy, "init_policy")?,
                &config.policy,
                device,
            )?
        };
        let reference = if config.learner.reference_policy.as_os_str().is_empty() {
            policy.valid()
        } else {
            load_policy(
                &existing(&config.learner.reference_policy, "reference_policy")?,
                &config.policy,
                device,
            )?
            .valid()
        };
        Ok(Self::assemble(
            config,
            device,
            policy,
            reference,
            optimizer(config),
            0,
        ))
    }

    /// A trainer restored from saved parts.
    pub fn restore(
        config: &Config,
        device: &Device,
        policy: Policy,
        reference: Policy,
        optimizer_bytes: Vec<u8>,
        step: u64,
    ) -> Result<Self> {
        let optimizer = optimizer(config)
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(optimizer_bytes))
            .map_err(|e| LearnerError::Checkpoint(format!("optimizer state: {e}")))?;
        Ok(Self::assemble(
            config,
            device,
            policy,
            reference.valid(),
            optimizer,
            step,
        ))
    }

    fn assemble(
        config: &Config,
        device: &Device,
        policy: Policy,
        reference: Policy,
        optimizer: ModuleOptimizer,
        step: u64,
    ) -> Self {
        Self {
            policy_config: config.policy.clone(),
            schedule: Schedule::from_config(config, config.policy.max_tokens),
            device: device.clone(),
            policy,
            reference,
            optimizer,
            step,
        }
    }

    /// The learning rate of the update after `step` updates: the value warm-up uses the full
    /// rate (it moves only the value head), then the policy updates ramp up linearly over
    /// `lr_warmup_steps`.
    pub fn learning_rate_at(&self, step: u64) -> f64 {
        self.schedule.learning_rate_at(step)
    }

    /// Updates completed so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The version of the current parameters: version n after n updates.
    pub fn version(&self) -> PolicyVersion {
        PolicyVersion(self.step)
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn reference(&self) -> &Policy {
        &self.reference
    }

    pub fn optimizer_bytes(&self) -> Result<Vec<u8>> {
        Ok(self
            .optimizer
            .into_bytes()
            .map_err(|e| LearnerError::Checkpoint(format!("serialising optimizer: {e}")))?
            .to_vec())
    }

    /// The current parameters, ready to broadcast.
    pub fn blob(&self, temperature: f32) -> Result<ParameterBlob> {
        Ok(ParameterBlob::from_policy(
            &self.policy.valid(),
            self.version(),
            &self.policy_config,
            temperature,
        )?)
    }

    /// One update on `batch` (non-empty, already admitted by the staleness rule). During
    /// the first `value_warmup_steps` only the value baseline is fitted; at step 0 the
    /// value head's bias is first shifted so that V starts at the batch's mean reward.
    /// [`Trainer::try_train_step`] for callers whose batches cannot make the update
    /// non-finite (tests, the benchmark). Panics on a skipped batch.
    pub fn train_step(&mut self, batch: &[Trajectory]) -> StepStats {
        self.try_train_step(batch)
            .unwrap_or_else(|s| panic!("the update was skipped: {s}"))
    }

    /// The gradient the next update on `batch` would follow (before clipping), flattened
    /// in the module's visiting order, with the loss and its parts: what
    /// `tests/update_numerics.rs` holds against a recorded reference. Nothing changes but
    /// the value head's start at the first batch's mean reward (step 0 only, as in an
    /// update).
    pub fn gradient(&mut self, batch: &[Trajectory]) -> GradientReport {
        let c = self.compute(batch);
        GradientReport {
            gradient: flatten_gradients(&c.grads, &self.policy),
            loss: c.loss,
            policy_loss: c.parts.policy,
            kl: c.parts.kl,
            value_loss: c.parts.value,
            entropy: c.parts.entropy,
            importance_weight: c.parts.importance_weight,
        }
    }

    /// One update on `batch`, unless its loss or its gradient is not finite: then nothing
    /// changes (parameters, optimiser state, step) and the reason comes back.
    pub fn try_train_step(
        &mut self,
        batch: &[Trajectory],
    ) -> std::result::Result<StepStats, SkippedBatch> {
        let Computed {
            parts,
            loss,
            grads,
            lens,
            rewards_clipped,
            reward_mean,
            value_only,
            grouped,
            gap,
        } = self.compute(batch);
        let end = self.policy_config.end_token;
        let b = batch.len();
        let (grads, grad_norm) = clip_global_norm(grads, &self.policy, self.schedule.max_grad_norm);
        SkippedBatch::unless_finite(loss, grad_norm)?;
        let learning_rate = self.learning_rate_at(self.step);
        self.policy = self
            .optimizer
            .step(learning_rate, self.policy.clone(), grads);
        self.step += 1;

        let new_version = self.version();
        Ok(StepStats {
            step: self.step,
            learning_rate,
            loss,
            policy_loss: parts.policy,
            kl: parts.kl,
            value_loss: parts.value,
            entropy: parts.entropy,
            reward_mean,
            component_means: component_means(batch),
            grad_norm,
            importance_weight: parts.importance_weight,
            // The batch was sampled to update version step-1.
            policy_lag_mean: batch
                .iter()
                .map(|x| {
                    x.policy_version
                        .lag_behind(PolicyVersion(new_version.0 - 1)) as f32
                })
                .sum::<f32>()
                / b as f32,
            batch_size: b,
            batch_tokens: lens.iter().sum(),
            value_warmup: value_only,
            mean_length: lens.iter().sum::<usize>() as f32 / b as f32,
            ended_share: batch.iter().filter(|x| x.tokens.contains(&end)).count() as f32 / b as f32,
            grouped_share: grouped as f32 / b as f32,
            scorer_versions: scorer_versions(batch),
            rewards_clipped,
            fresh_logprob_gap: gap,
        })
    }

    /// Starts the value baseline at the first batch's mean reward: shifts the value head's
    /// bias so the mean of V over the batch's real positions is that reward.
    fn start_baseline_at(
        &mut self,
        reward_mean: f32,
        captions: &[&str],
        tokens: &[u32],
        mask: &[f32],
        t: usize,
    ) {
        let plain = self.device.clone().without_autodiff();
        let b = captions.len();
        let c = caption_batch(captions, &self.policy_config, &plain);
        let out = self
            .policy
            .valid()
            .forward_rl(&c, token_tensor(tokens, b, t, &plain));
        let values = musicrl_policy::melody::to_vec_f32(out.values);
        let (sum, n) = values
            .iter()
            .zip(mask)
            .fold((0.0f32, 0.0f32), |(s, n), (v, m)| (s + v * m, n + m));
        let delta = reward_mean - sum / n.max(1.0);
        if delta.is_finite() {
            self.policy = self.policy.clone().shift_value_bias(delta);
        }
    }

    /// The tensor work of an update: the padded batch, the reference and policy forwards,
    /// the loss and its backward.
    fn compute(&mut self, batch: &[Trajectory]) -> Computed {
        assert!(
            !batch.is_empty(),
            "the learner never trains on an empty batch"
        );
        let end = self.policy_config.end_token;
        let lens: Vec<usize> = batch.iter().map(|x| trained_len(&x.tokens, end)).collect();
        let b = batch.len();
        let t = lens.iter().copied().max().unwrap_or(1).max(1);

        let (tokens, behaviour, mask) = pad(batch, &lens, t);
        // The declared bound: a reward outside ±reward_clip (a misconfigured or hostile
        // scorer) counts as the bound, so no single batch can dominate the update.
        let (rewards, rewards_clipped) = self.schedule.clipped_rewards(batch);
        let captions: Vec<&str> = batch.iter().map(|x| x.caption.as_str()).collect();
        let reward_mean = rewards.iter().sum::<f32>() / b as f32;
        let value_only = self.step < self.schedule.value_warmup_steps;

        if self.step == 0 {
            self.start_baseline_at(reward_mean, &captions, &tokens, &mask, t);
        }
        let dev = &self.device;
        let plain = dev.clone().without_autodiff();
        let ref_logits = {
            let c = caption_batch(&captions, &self.policy_config, &plain);
            let out = self
                .reference
                .forward(&c, token_tensor(&tokens, b, t, &plain));
            Tensor::<3>::from_data(out.logits.into_data(), dev)
        };
        let c = caption_batch(&captions, &self.policy_config, dev);
        let out = self.policy.forward_rl(&c, token_tensor(&tokens, b, t, dev));
        let (group_baseline, grouped) = self.schedule.group_baseline(&captions, &rewards, dev);
        let inputs = LossInputs {
            logits: out.logits,
            ref_logits,
            values: out.values,
            actions: token_tensor(&tokens, b, t, dev),
            behaviour_logprobs: Tensor::from_data(TensorData::new(behaviour, [b, t]), dev),
            rewards: Tensor::from_data(TensorData::new(rewards.clone(), [b]), dev),
            mask: Tensor::from_data(TensorData::new(mask, [b, t]), dev),
            group_baseline,
        };
        let parts = reinforce_kl_loss(inputs, self.schedule.coefs, value_only);

        let loss = parts.total.clone().into_scalar::<f32>();
        let gap = fresh_logprob_gap(
            batch,
            self.version(),
            &musicrl_policy::melody::to_vec_f32(parts.action_logprobs.clone()),
            t,
            &lens,
        );
        let grads = GradientsParams::from_grads(parts.total.backward(), &self.policy);
        let scalar = |x: Tensor<1>| x.into_scalar::<f32>();
        Computed {
            parts: PartValues {
                policy: scalar(parts.policy),
                kl: scalar(parts.kl),
                value: scalar(parts.value),
                entropy: scalar(parts.entropy),
                importance_weight: scalar(parts.importance_weight),
            },
            loss,
            grads,
            lens,
            rewards_clipped,
            reward_mean,
            value_only,
            grouped,
            gap,
        }
    }
}

/// The batch padded to `[B, T]`: tokens, behaviour log-probabilities and the mask. Positions
/// after a trajectory's END are cut, padding repeats token 0, and both are masked out.
fn pad(batch: &[Trajectory], lens: &[usize], t: usize) -> (Vec<u32>, Vec<f32>, Vec<f32>) {
    let b = batch.len();
    let mut tokens = Vec::with_capacity(b * t);
    let mut behaviour = Vec::with_capacity(b * t);
    let mut mask = Vec::with_capacity(b * t);
    for (x, &len) in batch.iter().zip(lens) {
        for i in 0..t {
            let real = i < len;
            tokens.push(if real { x.tokens[i] } else { 0 });
            behaviour.push(if real { x.behaviour_logprobs[i] } else { 0.0 });
            mask.push(if real { 1.0f32 } else { 0.0 });
        }
    }
    (tokens, behaviour, mask)
}

/// The reported parts of a loss ([`crate::loss::LossParts`] read back).
struct PartValues {
    policy: f32,
    kl: f32,
    value: f32,
    entropy: f32,
    importance_weight: f32,
}

/// An update's tensor work, before clipping and the optimiser.
struct Computed {
    parts: PartValues,
    loss: f32,
    grads: GradientsParams,
    lens: Vec<usize>,
    rewards_clipped: usize,
    reward_mean: f32,
    value_only: bool,
    grouped: usize,
    gap: Option<f32>,
}

/// The loss of a batch and the gradient an update would follow ([`Trainer::gradient`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct GradientReport {
    pub loss: f32,
    pub policy_loss: f32,
    pub kl: f32,
    pub value_loss: f32,
    pub entropy: f32,
    pub importance_weight: f32,
    /// Every parameter's gradient, in the module's visiting order (zeros for a parameter the
    /// loss does not reach).
    pub gradient: Vec<f32>,
}

/// `grads` as one vector, in `module`'s visiting order.
fn flatten_gradients<M: Module>(grads: &GradientsParams, module: &M) -> Vec<f32> {
    struct Flatten<'a> {
        grads: &'a GradientsParams,
        out: Vec<f32>,
    }
    impl ModuleVisitor for Flatten<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            match self.grads.get::<D>(param.id) {
                Some(g) => self.out.extend(musicrl_policy::melody::to_vec_f32(g)),
                None => self
                    .out
                    .extend(std::iter::repeat_n(0.0, param.val().shape().num_elements())),
            }
        }
    }
    let mut f = Flatten {
        grads,
        out: Vec::new(),
    };
    module.visit(&mut f);
    f.out
}

/// Why an update was not applied (the batch is dropped and counted; the parameters, the
/// optimiser and the step are as they were).
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedBatch {
    /// `non_finite_loss` or `non_finite_gradient`.
    pub reason: &'static str,
    pub loss: f32,
    pub grad_norm: f32,
}

impl SkippedBatch {
    /// `Err` naming what is not finite, unless the loss and the gradient norm both are.
    pub(crate) fn unless_finite(loss: f32, grad_norm: f32) -> std::result::Result<(), Self> {
        if loss.is_finite() && grad_norm.is_finite() {
            return Ok(());
        }
        Err(Self {
            reason: if loss.is_finite() {
                "non_finite_gradient"
            } else {
                "non_finite_loss"
            },
            loss,
            grad_norm,
        })
    }
}

impl std::fmt::Display for SkippedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (loss {}, gradient norm {})",
            self.reason, self.loss, self.grad_norm
        )
    }
}

fn optimizer(_config: &Config) -> ModuleOptimizer {
    AdamConfig::new().init()
}

/// Mean raw score of each component named in the batch, in first-seen order.
pub(crate) fn component_means(batch: &[Trajectory]) -> Vec<(String, f32)> {
    let mut sums: Vec<(String, f32, usize)> = Vec::new();
    for x in batch {
        for (name, v) in &x.components {
            match sums.iter_mut().find(|(n, _, _)| n == name) {
                Some((_, s, k)) => {
                    *s += v;
                    *k += 1;
                }
                None => sums.push((name.clone(), *v, 1)),
            }
        }
    }
    sums.into_iter()
        .map(|(n, s, k)| (n, s / k as f32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use musicrl_policy::melody::to_vec_f32;

    fn config(warmup: u64) -> Config {
        let mut c = Config::default();
        c.policy = PolicyConfig {
            vocab_size: 9,
            max_tokens: 8,
            d_model: 16,
            n_heads: 2,
            n_layers: 1,
            d_ff: 32,
            caption_buckets: 32,
            max_caption_words: 6,
            end_token: 0,
            ..PolicyConfig::default()
        };
        c.learner.learning_rate = 0.01;
        c.learner.init_policy = std::path::PathBuf::new();
        c.learner.value_warmup_steps = warmup;
        c
    }

    fn trajectory(tokens: Vec<u32>, logprob: f32, reward: f32) -> Trajectory {
        Trajectory {
            id: Default::default(),
            learner_run: 0,
            seal: None,
            actor_id: "t".into(),
            policy_version: PolicyVersion(0),
            caption: "a jig".into(),
            behaviour_logprobs: vec![logprob; tokens.len()],
            tokens,
            reward,
            components: vec![],
            scorer_version: "v".into(),
            component_windows: Vec::new(),
        }
    }

    fn logits(trainer: &Trainer, tokens: &[u32]) -> Vec<f32> {
        let device = Device::flex();
        let c = caption_batch(&["a jig"], &trainer.policy_config, &device);
        to_vec_f32(
            trainer
                .policy()
                .valid()
                .forward(&c, token_tensor(tokens, 1, tokens.len(), &device))
                .logits,
        )
    }

    #[test]
    fn rewards_are_clipped_to_the_declared_bound() {
        let device = Device::flex().autodiff();
        let mut t = Trainer::new(&config(0), &device).expect("random init");
        let batch = vec![
            trajectory(vec![3, 4, 0], -1.0, 1e18),
            trajectory(vec![5, 6, 0], -1.0, -3e20),
            trajectory(vec![5, 2, 0], -1.0, 0.5),
        ];
        let stats = t.try_train_step(&batch).expect("a finite update");
        assert_eq!(stats.rewards_clipped, 2);
        // The mean of the clipped rewards: (20 − 20 + 0.5) / 3.
        assert!(
            (stats.reward_mean - 0.5 / 3.0).abs() < 1e-6,
            "{}",
            stats.reward_mean
        );
        assert!(stats.loss.is_finite() && stats.grad_norm.is_finite());
    }

    #[test]
    fn an_update_whose_loss_is_not_finite_is_skipped_and_changes_nothing() {
        let device = Device::flex().autodiff();
        // A bound so loose that a huge reward reaches the value regression: (1e30)² overflows.
        let mut c = config(0);
        c.learner.reward_clip = f32::MAX;
        let mut t = Trainer::new(&c, &device).expect("random init");
        let probe = [3u32, 4, 0, 5];
        let before = logits(&t, &probe);
        let bad = vec![
            trajectory(vec![3, 4, 0], -1.0, 3e38),
            trajectory(vec![5, 4, 0], -1.0, -3e38),
        ];
        let skipped = t.try_train_step(&bad).expect_err("skipped");
        assert_eq!(skipped.reason, "non_finite_loss");
        assert_eq!(t.step_count(), 0, "the step did not advance");
        assert_eq!(logits(&t, &probe), before, "the parameters did not move");
        // And the next, ordinary batch trains from there.
        let good = vec![trajectory(vec![3, 4, 0], -1.0, 0.5); 2];
        let stats = t.try_train_step(&good).expect("trains");
        assert_eq!((stats.step, t.step_count()), (1, 1));
    }

    #[test]
    fn nothing_after_end_enters_the_update() {
        let device = Device::flex().autodiff();
        // The same two trajectories, once cut at END and once with garbage after it (other
        // tokens, other behaviour log-probs are irrelevant: only their positions differ).
        let clean = vec![
            trajectory(vec![3, 4, 0], -1.0, 1.0),
            trajectory(vec![5, 6, 7, 8, 2, 0], -1.0, 0.2),
        ];
        let mut dirty = clean.clone();
        dirty[0].tokens.extend([8, 8, 1, 5, 5]);
        dirty[0].behaviour_logprobs.extend([-9.0; 5]);
        dirty[1].tokens.extend([3, 3]);
        dirty[1].behaviour_logprobs.extend([-0.1; 2]);
        // Two identical trainers (the second a copy of the first: seeding the shared device
        // would race with tests running beside this one).
        let mut a = Trainer::new(&config(0), &device).expect("random init");
        let mut b = Trainer::restore(
            &config(0),
            &device,
            a.policy().clone(),
            a.reference().clone(),
            a.optimizer_bytes().expect("serialises"),
            0,
        )
        .expect("restores");
        let (sa, sb) = (a.train_step(&clean), b.train_step(&dirty));
        for (x, y, what) in [
            (sa.loss, sb.loss, "loss"),
            (sa.kl, sb.kl, "kl"),
            (sa.value_loss, sb.value_loss, "value"),
            (sa.entropy, sb.entropy, "entropy"),
            (sa.policy_loss, sb.policy_loss, "policy"),
            (sa.grad_norm, sb.grad_norm, "gradient norm"),
        ] {
            assert!((x - y).abs() < 1e-6, "{what}: {x} vs {y}");
        }
        assert_eq!((sa.batch_tokens, sb.batch_tokens), (9, 9));
        assert_eq!(sb.ended_share, 1.0);
        // The updated parameters are the same.
        let probe = [3u32, 4, 0, 5];
        let (la, lb) = (logits(&a, &probe), logits(&b, &probe));
        let diff = la
            .iter()
            .zip(&lb)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(diff < 1e-5, "{diff}");
    }

    #[test]
    fn clips_of_a_caption_sampled_twice_take_the_leave_one_out_baseline() {
        let device = Device::flex().autodiff();
        let mut batch = vec![
            trajectory(vec![3, 4, 0], -1.0, 1.0),
            trajectory(vec![5, 6, 0], -1.0, 0.0),
            trajectory(vec![7, 8, 0], -1.0, 0.5),
        ];
        batch[2].caption = "a reel".into();
        let mut t = Trainer::new(&config(0), &device).expect("random init");
        // Two clips of "a jig" share a baseline; "a reel" was sampled once and keeps V.
        assert!((t.train_step(&batch).grouped_share - 2.0 / 3.0).abs() < 1e-6);
        let mut c = config(0);
        c.learner.baseline = musicrl_config::BASELINE_VALUE.into();
        let mut v = Trainer::new(&c, &device).expect("random init");
        assert_eq!(v.train_step(&batch).grouped_share, 0.0);
    }

    #[test]
    fn value_warmup_leaves_the_policy_distribution_unchanged() {
        let device = Device::flex().autodiff();
        let mut t = Trainer::new(&config(2), &device).expect("random init");
        let probe = [3u32, 4, 5, 6];
        let before = logits(&t, &probe);
        let batch = vec![
            trajectory(vec![3, 4, 5, 0], -1.0, 2.0),
            trajectory(vec![6, 7, 8, 1], -1.0, 3.0),
        ];
        let first = t.train_step(&batch);
        assert!(first.value_warmup);
        // The baseline started at the batch's mean reward, 2.5: the value loss is the spread
        // around it, (0.5² + 0.5²) / 2 = 0.25, plus what the random head's features add —
        // not the ≈ 6.3 of (R − V)² with V near 0.
        assert!(first.value_loss < 1.0, "{first:?}");
        assert!(t.train_step(&batch).value_warmup);
        assert_eq!(
            logits(&t, &probe),
            before,
            "warm-up steps move only the value head"
        );
        let third = t.train_step(&batch);
        assert!(!third.value_warmup);
        assert_ne!(logits(&t, &probe), before);
    }

    #[test]
    fn the_learning_rate_ramps_up_after_the_value_warmup() {
        let device = Device::flex().autodiff();
        let mut c = config(10);
        c.learner.learning_rate = 0.004;
        c.learner.lr_warmup_steps = 4;
        let t = Trainer::new(&c, &device).expect("random init");
        let rates: Vec<f64> = (0..16).map(|s| t.learning_rate_at(s)).collect();
        assert_eq!(
            rates[..10],
            [0.004; 10],
            "warm-up steps move only the value head"
        );
        for (got, want) in rates[10..15]
            .iter()
            .zip([0.001, 0.002, 0.003, 0.004, 0.004])
        {
            assert!((got - want).abs() < 1e-15, "{rates:?}");
        }
    }
}
