//! The training state and one update: batch → tensors → loss → clipped Adam step.
//!
//! Runs on a dedicated thread (never on the async executor). No network IO here; files only
//! through [`crate::checkpoint`].

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};

use musicrl_common::config::{Config, PolicyConfig};
use musicrl_common::policy::params::{ParameterBlob, load_policy};
use musicrl_common::policy::{Policy, caption_batch, token_tensor};
use musicrl_common::{PolicyVersion, Trajectory};

use crate::error::{LearnerError, Result};
use crate::loss::{LossCoefs, LossInputs, reinforce_kl_loss};

/// What one update measured.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct StepStats {
    pub step: u64,
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
    pub batch_tokens: usize,
}

/// The policy being trained, its frozen reference θ0, and the optimiser.
pub struct Trainer {
    policy_config: PolicyConfig,
    coefs: LossCoefs,
    learning_rate: f64,
    max_grad_norm: f32,
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
    /// A fresh trainer at step 0: θ0 is `learner.init_policy` when set, otherwise a random
    /// initialisation seeded by `learner.seed`. The reference is a frozen copy of θ0.
    pub fn new(config: &Config, device: &Device) -> Result<Self> {
        let policy = if config.learner.init_policy.as_os_str().is_empty() {
            device.seed(config.learner.seed);
            Policy::new(&config.policy, device)
        } else {
            let path = &config.learner.init_policy;
            if !path.exists() {
                return Err(LearnerError::Checkpoint(format!(
                    "learner.init_policy {} does not exist: run `musicrl pretrain` and point init_policy at \
                     its policy.bpk, or set init_policy = \"\" to start from a random policy",
                    path.display()
                )));
            }
            load_policy(path, &config.policy, device)?
        };
        let reference = policy.valid();
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
        let l = &config.learner;
        Self {
            policy_config: config.policy.clone(),
            coefs: LossCoefs {
                kl_coef: l.kl_coef,
                value_coef: l.value_coef,
                entropy_coef: l.entropy_coef,
                importance_clip: l.importance_clip,
                temperature: config.sampling.temperature,
            },
            learning_rate: l.learning_rate,
            max_grad_norm: l.max_grad_norm,
            device: device.clone(),
            policy,
            reference,
            optimizer,
            step,
        }
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

    /// One update on `batch` (non-empty, already admitted by the staleness rule).
    pub fn train_step(&mut self, batch: &[Trajectory]) -> StepStats {
        assert!(
            !batch.is_empty(),
            "the learner never trains on an empty batch"
        );
        let b = batch.len();
        let t = batch.iter().map(|x| x.tokens.len()).max().unwrap_or(1);

        // Pad to [B, T]; padded steps repeat token 0 and are masked out.
        let mut tokens = Vec::with_capacity(b * t);
        let mut behaviour = Vec::with_capacity(b * t);
        let mut mask = Vec::with_capacity(b * t);
        for x in batch {
            for i in 0..t {
                tokens.push(x.tokens.get(i).copied().unwrap_or(0));
                behaviour.push(x.behaviour_logprobs.get(i).copied().unwrap_or(0.0));
                mask.push(if i < x.tokens.len() { 1.0f32 } else { 0.0 });
            }
        }
        let rewards: Vec<f32> = batch.iter().map(|x| x.reward).collect();
        let captions: Vec<&str> = batch.iter().map(|x| x.caption.as_str()).collect();

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
        let out = self.policy.forward(&c, token_tensor(&tokens, b, t, dev));
        let inputs = LossInputs {
            logits: out.logits,
            ref_logits,
            values: out.values,
            actions: token_tensor(&tokens, b, t, dev),
            behaviour_logprobs: Tensor::from_data(TensorData::new(behaviour, [b, t]), dev),
            rewards: Tensor::from_data(TensorData::new(rewards.clone(), [b]), dev),
            mask: Tensor::from_data(TensorData::new(mask, [b, t]), dev),
        };
        let parts = reinforce_kl_loss(inputs, self.coefs);

        let grads = GradientsParams::from_grads(parts.total.backward(), &self.policy);
        let (grads, grad_norm) = clip_global_norm(grads, &self.policy, self.max_grad_norm);
        self.policy = self
            .optimizer
            .step(self.learning_rate, self.policy.clone(), grads);
        self.step += 1;

        let scalar = |x: Tensor<1>| x.into_scalar::<f32>();
        let new_version = self.version();
        StepStats {
            step: self.step,
            loss: scalar(parts.total),
            policy_loss: scalar(parts.policy),
            kl: scalar(parts.kl),
            value_loss: scalar(parts.value),
            entropy: scalar(parts.entropy),
            reward_mean: rewards.iter().sum::<f32>() / b as f32,
            component_means: component_means(batch),
            grad_norm,
            importance_weight: scalar(parts.importance_weight),
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
            batch_tokens: batch.iter().map(|x| x.tokens.len()).sum(),
        }
    }
}

fn optimizer(_config: &Config) -> ModuleOptimizer {
    AdamConfig::new().init()
}

/// Mean raw score of each component named in the batch, in first-seen order.
fn component_means(batch: &[Trajectory]) -> Vec<(String, f32)> {
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

/// Scales all gradients together so that their global L2 norm is at most `max_norm`
/// (burn's own clipping is per tensor). Returns the norm before clipping. `max_norm` 0
/// only measures.
pub fn clip_global_norm<M: Module>(
    grads: GradientsParams,
    module: &M,
    max_norm: f32,
) -> (GradientsParams, f32) {
    struct SumSquares<'a> {
        grads: &'a GradientsParams,
        total: f64,
    }
    impl ModuleVisitor for SumSquares<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                self.total += f64::from(g.powi_scalar(2).sum().into_scalar::<f32>());
            }
        }
    }
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: f32,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(param.id) {
                self.grads.register(param.id, g * self.factor);
            }
        }
    }

    let mut sum = SumSquares {
        grads: &grads,
        total: 0.0,
    };
    module.visit(&mut sum);
    let norm = sum.total.sqrt() as f32;
    let mut grads = grads;
    if max_norm > 0.0 && norm > max_norm {
        let mut scale = Scale {
            grads: &mut grads,
            factor: max_norm / (norm + 1e-6),
        };
        module.visit(&mut scale);
    }
    (grads, norm)
}
