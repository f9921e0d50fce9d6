//! The objective of docs/method.md §2: KL-regularised REINFORCE with a value baseline.
//!
//! For a trajectory a_0 … a_{T-1} with a sequence-level reward R (so the return-to-go is R
//! at every step) the loss minimised over a batch of B trajectories is
//!
//! ```text
//! L = 1/(B·T_max) · Σ_b Σ_{t ≤ end_b} [
//!       (1 − α) · ( −w_t · (R − V(s_t))ₛ · log π_θ(a_t | s_t) )         policy gradient
//!     +  α      · Σ_a π_θ(a | s_t) · (log π_θ(a | s_t) − log π_θ0(a | s_t))  exact KL
//!     +  c_v    · (R − V(s_t))²                                          value regression
//!     −  c_H    · H(π_θ(· | s_t)) ]                                      optional entropy bonus
//! ```
//!
//! `(·)ₛ` stops the gradient (the baseline only reduces variance), the KL is computed over
//! the whole vocabulary at every step against the frozen reference, and w_t is the truncated
//! importance weight min(c̄, π_θ(a_t|s_t) / μ(a_t|s_t)) (stop-gradient) that corrects for
//! trajectories sampled by an older policy version μ; with c̄ = 0 it is 1. All
//! distributions are the tempered softmax(logits / τ) the actors sample from.
//!
//! **Where a sequence ends.** `end_b` is the position of the trajectory's first END token
//! (or its last token): the END action itself is trained on (ending is a decision), and
//! nothing after it enters any term or any reported figure. The `mask` carries this.
//!
//! **Normalisation.** Sequences now differ in length, so how steps are averaged matters. The
//! sum runs over each sequence's real steps and is divided by the constant B · T_max
//! (`max_tokens`), which is the paper's per-sequence sum over t scaled by a constant the
//! learning rate absorbs. Dividing by the batch's own token count instead (a per-token mean)
//! would make a step's weight depend on the other sequences in the batch, and a per-sequence
//! mean (1/T_b) would give each token of a short sequence more weight than one of a long
//! sequence, which biases the policy toward changing its lengths (the length bias Liu et
//! al. 2025, "Dr. GRPO", remove the same way). The **reported** parts (`policy`, `kl`,
//! `value`, `entropy`, `importance_weight`) are means per real step, so they read the same
//! whatever the lengths.
//!
//! **The baseline.** With `learner.baseline = "value"` the baseline is V(s_t) as above. With
//! `"leave-one-out"` (the default) a trajectory whose caption was sampled more than once in
//! the batch (actors sample `actor.samples_per_prompt` clips of each caption) takes as its
//! baseline the mean reward of the *other* clips of its caption, b_i = (Σ_j R_j − R_i)/(n − 1)
//! (RLOO: Kool et al. 2019; Ahmadian et al. 2024), and one sampled once keeps V(s_t). Both
//! are independent of the trajectory's own actions, so the gradient stays unbiased; the
//! leave-one-out baseline removes the reward's between-caption variance, which the value
//! head (a linear read of the trunk, one caption seen a handful of times in a run) cannot
//! learn and which is most of the reward's variance here (`docs/results.md`). The value
//! head is still trained and reported.
//!
//! **Value warm-up.** With `value_only`, the loss is the value regression alone: the
//! learner's first `value_warmup_steps` fit the baseline before any policy update (the
//! value head reads the trunk's features without sending gradients into them, see
//! `Policy::forward_rl`, so these steps leave the policy's distribution unchanged).
//!
//! Pure tensor math: no IO, no device choice.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

/// Everything the loss needs for one batch, padded to `[batch, T]`.
#[derive(Debug, Clone)]
pub struct LossInputs {
    /// `[B, T, V]` the policy's logits (tracked for gradients).
    pub logits: Tensor<3>,
    /// `[B, T, V]` the frozen reference policy's logits.
    pub ref_logits: Tensor<3>,
    /// `[B, T]` V(s_t).
    pub values: Tensor<2>,
    /// `[B, T]` the sampled actions.
    pub actions: Tensor<2, Int>,
    /// `[B, T]` log μ(a_t | s_t) recorded by the actor.
    pub behaviour_logprobs: Tensor<2>,
    /// `[B]` the sequence-level reward R.
    pub rewards: Tensor<1>,
    /// `[B, T]` 1.0 on real steps (up to and including the first END), 0.0 after it and on
    /// padding.
    pub mask: Tensor<2>,
    /// The leave-one-out baseline where there is one (see the module docs); `None`: V(s_t)
    /// everywhere.
    pub group_baseline: Option<GroupBaseline>,
}

/// Per-trajectory baselines that replace V(s_t) in the policy term.
#[derive(Debug, Clone)]
pub struct GroupBaseline {
    /// `[B]` the baseline b_i (any value where `present` is 0).
    pub baseline: Tensor<1>,
    /// `[B]` 1.0 where trajectory i has a group baseline, 0.0 where it keeps V(s_t).
    pub present: Tensor<1>,
}

/// Leave-one-out baselines of `rewards` grouped by `keys` (a caption each): for a key held by
/// n ≥ 2 trajectories, b_i = (Σ_j R_j − R_i)/(n − 1); `None` for a key held once.
pub fn leave_one_out<K: Eq + std::hash::Hash>(keys: &[K], rewards: &[f32]) -> Vec<Option<f32>> {
    let mut groups: std::collections::HashMap<&K, (f64, usize)> = std::collections::HashMap::new();
    for (k, &r) in keys.iter().zip(rewards) {
        let g = groups.entry(k).or_default();
        g.0 += f64::from(r);
        g.1 += 1;
    }
    keys.iter()
        .zip(rewards)
        .map(|(k, &r)| {
            let (sum, n) = groups[k];
            (n >= 2).then(|| ((sum - f64::from(r)) / (n - 1) as f64) as f32)
        })
        .collect()
}

/// The objective's coefficients.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossCoefs {
    /// α.
    pub kl_coef: f32,
    pub value_coef: f32,
    pub entropy_coef: f32,
    /// c̄; 0 disables importance weighting.
    pub importance_clip: f32,
    /// τ, the sampling temperature.
    pub temperature: f32,
    /// T_max: the sums over steps are divided by batch · max_tokens (see the module docs).
    pub max_tokens: usize,
}

/// The loss and its parts: `total` as defined in the module docs, the parts as means over
/// real steps (one-element tensors).
#[derive(Debug, Clone)]
pub struct LossParts {
    /// What is minimised (tracked for gradients).
    pub total: Tensor<1>,
    pub policy: Tensor<1>,
    pub kl: Tensor<1>,
    pub value: Tensor<1>,
    pub entropy: Tensor<1>,
    /// Mean truncated importance weight.
    pub importance_weight: Tensor<1>,
    /// `[B, T]` log π_θ(a_t | s_t) of the taken actions (tempered, detached): compared with
    /// the actors' behaviour log-probabilities for `StepStats::fresh_logprob_gap`.
    pub action_logprobs: Tensor<2>,
}

/// Computes the loss of docs/method.md §2 (see the module docs); with `value_only`, the value
/// regression alone (the warm-up phase).
pub fn reinforce_kl_loss(x: LossInputs, c: LossCoefs, value_only: bool) -> LossParts {
    let tau = f64::from(c.temperature);
    let logp_all = log_softmax(x.logits / tau, 2); // [B, T, V]
    let ref_logp_all = log_softmax(x.ref_logits / tau, 2).detach(); // [B, T, V]

    let logp_a = logp_all
        .clone()
        .gather(2, x.actions.unsqueeze_dim::<3>(2))
        .squeeze_dim::<2>(2); // [B, T]

    let p_all = logp_all.clone().exp();
    let kl_t = (p_all.clone() * (logp_all.clone() - ref_logp_all))
        .sum_dim(2)
        .squeeze_dim::<2>(2); // [B, T]
    let entropy_t = (p_all * logp_all).sum_dim(2).squeeze_dim::<2>(2).neg(); // [B, T]

    let returns = x.rewards.unsqueeze_dim::<2>(1); // [B, 1], broadcast over t
    let baseline = match x.group_baseline {
        // present · b + (1 − present) · V(s_t)
        Some(g) => {
            let present = g.present.unsqueeze_dim::<2>(1); // [B, 1]
            let b = g.baseline.unsqueeze_dim::<2>(1);
            x.values.clone() * (present.clone().neg() + 1.0) + b * present
        }
        None => x.values.clone(),
    };
    let advantage = (returns.clone() - baseline).detach(); // [B, T]
    let weight = if c.importance_clip > 0.0 {
        (logp_a.clone().detach() - x.behaviour_logprobs)
            .exp()
            .clamp_max(c.importance_clip)
    } else {
        logp_a.ones_like()
    };
    let action_logprobs = logp_a.clone().detach();
    let pg_t = (weight.clone() * advantage * logp_a).neg(); // [B, T]
    let value_t = (returns - x.values).powi_scalar(2); // [B, T]

    let [batch, _] = x.mask.dims();
    let n = x.mask.clone().sum().clamp_min(1.0); // [1] real steps
    let sum = |t: Tensor<2>| (t * x.mask.clone()).sum(); // [1]
    let (policy_sum, kl_sum, value_sum, entropy_sum) =
        (sum(pg_t), sum(kl_t), sum(value_t), sum(entropy_t));
    let per_step = |s: &Tensor<1>| s.clone() / n.clone();
    let (policy, kl, value, entropy) = (
        per_step(&policy_sum),
        per_step(&kl_sum),
        per_step(&value_sum),
        per_step(&entropy_sum),
    );
    let importance_weight = per_step(&sum(weight)).detach();

    let constant = (batch * c.max_tokens.max(1)) as f64;
    let total = if value_only {
        value_sum * c.value_coef / constant
    } else {
        (policy_sum * (1.0 - c.kl_coef) + kl_sum * c.kl_coef + value_sum * c.value_coef
            - entropy_sum * c.entropy_coef)
            / constant
    };
    LossParts {
        total,
        policy,
        kl,
        value,
        entropy,
        importance_weight,
        action_logprobs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn scalar(t: Tensor<1>) -> f32 {
        t.into_scalar::<f32>()
    }

    /// One step, two actions: π = softmax([0, 0]) = [½, ½], π0 = softmax([0, ln 3]) = [¼, ¾];
    /// the actor took action 0 with μ(0) = ½ and got R = 1.
    fn tiny(device: &Device, value: f32) -> (LossInputs, Tensor<3>) {
        let logits = Tensor::<3>::from_data(TensorData::new(vec![0.0f32, 0.0], [1, 1, 2]), device)
            .require_grad();
        let x = LossInputs {
            logits: logits.clone(),
            ref_logits: Tensor::from_data(
                TensorData::new(vec![0.0f32, 3f32.ln()], [1, 1, 2]),
                device,
            ),
            values: Tensor::from_data(TensorData::new(vec![value], [1, 1]), device),
            actions: Tensor::from_data(TensorData::new(vec![0i64], [1, 1]), device),
            behaviour_logprobs: Tensor::from_data(
                TensorData::new(vec![0.5f32.ln()], [1, 1]),
                device,
            ),
            rewards: Tensor::from_data(TensorData::new(vec![1.0f32], [1]), device),
            mask: Tensor::ones([1, 1], device),
            group_baseline: None,
        };
        (x, logits)
    }

    fn coefs(kl_coef: f32) -> LossCoefs {
        LossCoefs {
            kl_coef,
            value_coef: 0.5,
            entropy_coef: 0.0,
            importance_clip: 1.0,
            temperature: 1.0,
            max_tokens: 1,
        }
    }

    #[test]
    fn hand_computed_parts_and_total() {
        let device = Device::flex().autodiff();
        let (x, _) = tiny(&device, 0.25);
        let parts = reinforce_kl_loss(x, coefs(0.1), false);
        // KL = ½ ln(½/¼) + ½ ln(½/¾) = ½ ln(4/3).
        let kl = 0.5 * (4.0f32 / 3.0).ln();
        assert!((scalar(parts.kl.clone()) - kl).abs() < 1e-6);
        // Policy term: −(R − V) log π(a) = −0.75 · ln ½.
        let pg = -0.75 * 0.5f32.ln();
        assert!((scalar(parts.policy.clone()) - pg).abs() < 1e-6);
        // Value term: (1 − 0.25)² = 0.5625.
        assert!((scalar(parts.value.clone()) - 0.5625).abs() < 1e-6);
        assert!((scalar(parts.entropy.clone()) - 2f32.ln()).abs() < 1e-6);
        assert!((scalar(parts.importance_weight.clone()) - 1.0).abs() < 1e-6);
        let total = 0.9 * pg + 0.1 * kl + 0.5 * 0.5625;
        assert!((scalar(parts.total) - total).abs() < 1e-5);
    }

    #[test]
    fn baseline_scales_the_policy_gradient() {
        let device = Device::flex().autodiff();
        // α = 0: the gradient w.r.t. the logits is −(R − V)(onehot(a) − π).
        for (value, expected) in [(0.25f32, -0.375f32), (1.0, 0.0), (0.0, -0.5)] {
            let (x, logits) = tiny(&device, value);
            let mut c = coefs(0.0);
            c.value_coef = 0.0;
            let grads = reinforce_kl_loss(x, c, false).total.backward();
            let g: Vec<f32> = logits
                .grad(&grads)
                .expect("logits are tracked")
                .into_data()
                .try_to_vec()
                .unwrap();
            assert!((g[0] - expected).abs() < 1e-6, "V = {value}: {g:?}");
            assert!((g[1] + expected).abs() < 1e-6, "V = {value}: {g:?}");
        }
    }

    #[test]
    fn a_group_baseline_replaces_the_value_in_the_policy_term_only() {
        let device = Device::flex().autodiff();
        // V = 1 would give no gradient; a leave-one-out baseline of 0.25 gives the gradient
        // of R − b = 0.75: −0.75 · (onehot(0) − π) = (−0.375, 0.375). The value term still
        // regresses on V: (1 − 1)² = 0.
        let (mut x, logits) = tiny(&device, 1.0);
        x.group_baseline = Some(GroupBaseline {
            baseline: Tensor::from_data(TensorData::new(vec![0.25f32], [1]), &device),
            present: Tensor::ones([1], &device),
        });
        let mut c = coefs(0.0);
        c.value_coef = 0.5;
        let parts = reinforce_kl_loss(x, c, false);
        assert!(scalar(parts.value.clone()).abs() < 1e-9);
        let grads = parts.total.backward();
        let g: Vec<f32> = logits
            .grad(&grads)
            .expect("logits are tracked")
            .into_data()
            .try_to_vec()
            .unwrap();
        assert!(
            (g[0] + 0.375).abs() < 1e-6 && (g[1] - 0.375).abs() < 1e-6,
            "{g:?}"
        );
        // Absent (present = 0): V(s_t) = 1 again, no policy gradient.
        let (mut x, logits) = tiny(&device, 1.0);
        x.group_baseline = Some(GroupBaseline {
            baseline: Tensor::from_data(TensorData::new(vec![0.25f32], [1]), &device),
            present: Tensor::zeros([1], &device),
        });
        let grads = reinforce_kl_loss(x, coefs(0.0), false).total.backward();
        let g: Vec<f32> = logits
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_to_vec()
            .unwrap();
        assert!(g.iter().all(|v| v.abs() < 1e-7), "{g:?}");
    }

    #[test]
    fn leave_one_out_baselines_by_hand() {
        // Caption a: rewards 1, 2, 6 -> baselines 4, 3.5, 1.5; b once -> none.
        let b = leave_one_out(&["a", "b", "a", "a"], &[1.0, 9.0, 2.0, 6.0]);
        assert_eq!(b, vec![Some(4.0), None, Some(3.5), Some(1.5)]);
    }

    #[test]
    fn exact_kl_gradient_pulls_toward_the_reference() {
        let device = Device::flex().autodiff();
        // α = 1: ∂KL/∂z_i = π_i (log(π_i/π0_i) − KL).
        let (x, logits) = tiny(&device, 1.0);
        let mut c = coefs(1.0);
        c.value_coef = 0.0;
        let grads = reinforce_kl_loss(x, c, false).total.backward();
        let g: Vec<f32> = logits
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_to_vec()
            .unwrap();
        let kl = 0.5 * (4.0f32 / 3.0).ln();
        let g0 = 0.5 * (2f32.ln() - kl);
        assert!(
            (g[0] - g0).abs() < 1e-6 && (g[1] + g0).abs() < 1e-6,
            "{g:?}"
        );
    }

    #[test]
    fn value_warmup_trains_the_value_alone() {
        let device = Device::flex().autodiff();
        let (mut x, _) = tiny(&device, 0.25);
        let values = x.values.clone().require_grad();
        x.values = values.clone();
        let parts = reinforce_kl_loss(x, coefs(0.1), true);
        // Total = c_v · (R − V)² / (B · T_max) = 0.5 · 0.5625.
        assert!((scalar(parts.total.clone()) - 0.5 * 0.5625).abs() < 1e-6);
        // The policy's logits do not enter: other logits, the same total.
        let (mut y, _) = tiny(&device, 0.25);
        y.logits = Tensor::from_data(TensorData::new(vec![4.0f32, -3.0], [1, 1, 2]), &device);
        let other = reinforce_kl_loss(y, coefs(0.1), true);
        assert_eq!(scalar(other.total), scalar(parts.total.clone()));
        let grads = parts.total.backward();
        let gv: Vec<f32> = values
            .grad(&grads)
            .expect("values are tracked")
            .into_data()
            .try_to_vec()
            .unwrap();
        // ∂/∂V of 0.5 (1 − V)² at V = 0.25: −0.75.
        assert!((gv[0] + 0.75).abs() < 1e-6, "{gv:?}");
    }

    #[test]
    fn steps_are_normalised_by_the_batch_times_max_tokens() {
        // The same one-step trajectory with T_max = 4: the total is a quarter, the reported
        // per-step parts are unchanged.
        let device = Device::flex().autodiff();
        let (x, _) = tiny(&device, 0.25);
        let (y, _) = tiny(&device, 0.25);
        let mut c4 = coefs(0.1);
        c4.max_tokens = 4;
        let one = reinforce_kl_loss(x, coefs(0.1), false);
        let four = reinforce_kl_loss(y, c4, false);
        assert!((scalar(four.total) * 4.0 - scalar(one.total)).abs() < 1e-6);
        assert!((scalar(four.kl) - scalar(one.kl)).abs() < 1e-7);
    }

    #[test]
    fn importance_weight_is_truncated_and_mask_excludes_padding() {
        let device = Device::flex().autodiff();
        // μ(a) = ¼ < π(a) = ½: the ratio 2 is truncated at c̄ = 1; with c̄ = 3 it is 2.
        for (clip, w) in [(1.0f32, 1.0f32), (3.0, 2.0)] {
            let (mut x, _) = tiny(&device, 0.25);
            x.behaviour_logprobs =
                Tensor::from_data(TensorData::new(vec![0.25f32.ln()], [1, 1]), &device);
            let mut c = coefs(0.0);
            c.importance_clip = clip;
            let parts = reinforce_kl_loss(x, c, false);
            assert!((scalar(parts.importance_weight) - w).abs() < 1e-6);
            assert!((scalar(parts.policy) - w * -0.75 * 0.5f32.ln()).abs() < 1e-5);
        }
        // A padded second step with garbage contributes nothing.
        let (x1, _) = tiny(&device, 0.25);
        let pad = |t: Tensor<3>, fill: f32| Tensor::cat(vec![t.clone(), t.full_like(fill)], 1);
        let x2 = LossInputs {
            logits: pad(x1.logits.clone(), 5.0),
            ref_logits: pad(x1.ref_logits.clone(), -3.0),
            values: Tensor::cat(vec![x1.values.clone(), x1.values.full_like(9.0)], 1),
            actions: Tensor::cat(vec![x1.actions.clone(), x1.actions.clone()], 1),
            behaviour_logprobs: Tensor::cat(
                vec![
                    x1.behaviour_logprobs.clone(),
                    x1.behaviour_logprobs.full_like(-7.0),
                ],
                1,
            ),
            rewards: x1.rewards.clone(),
            mask: Tensor::from_data(TensorData::new(vec![1.0f32, 0.0], [1, 2]), &device),
            group_baseline: None,
        };
        let a = scalar(reinforce_kl_loss(x1, coefs(0.1), false).total);
        let b = scalar(reinforce_kl_loss(x2, coefs(0.1), false).total);
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
}
