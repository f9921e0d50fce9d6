//! Training a MusicGen policy: the objective of `loss.rs` over every code of a clip.
//!
//! A trajectory's tokens are a clip's codes flattened codebook by codebook (`K · T`,
//! `musicrl_policy::musicgen::rl`). One update encodes the batch's captions with the frozen
//! T5 (no gradients), runs the frozen reference decoder and the trained one over the
//! delayed grids, aligns each code with the distribution it was drawn from (position
//! `t + k` for code `[k][t]`) and hands `reinforce_kl_loss` `[B, K·T, vocab]` logits: the
//! same loss as the melody family's, term for term — the exact KL over each code's
//! codebook at its position against the frozen reference, the value head's baseline (or
//! the leave-one-out baseline of the caption's other clips), the truncated importance
//! weight for samples of older versions. A clip has no END: every code is an action.
//!
//! Classifier-free guidance: the loss's log-probabilities are the model's conditional ones
//! (tempered); an actor that samples with guidance reports the guided distribution's
//! log-probabilities as the behaviour policy's, and the importance weight
//! `min(c̄, π/μ)` is what corrects for the difference (docs/real-models.md).

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use musicrl_common::{PolicyVersion, Trajectory};
use musicrl_config::Config;
use musicrl_policy::musicgen::MusicGen;
use musicrl_policy::musicgen::rl::{Trainable, unflatten_codes};

use crate::loss::{LossInputs, reinforce_kl_loss};
use crate::trainer::{Schedule, SkippedBatch, StepStats, clip_global_norm};

/// The MusicGen policy being trained, its frozen reference and the optimiser.
pub struct MusicgenTrainer {
    /// The folder's model on the inference device: the frozen text encoder and projection.
    /// Its decoder's tensors are the KL reference's (and, with adapters, the frozen base's);
    /// the learner never samples or scores with it.
    model: MusicGen,
    /// The trained decoder and value head, on the training device.
    trainable: Trainable,
    /// The frozen KL reference: the folder's decoder, on the inference device. `None` with
    /// adapters: the reference is the trained part's own frozen base, run without them.
    reference: Option<Trainable>,
    optimizer: ModuleOptimizer,
    schedule: Schedule,
    /// Frames per clip: every trajectory holds `K · frames` tokens.
    frames: usize,
    device: Device,
    step: u64,
}

impl std::fmt::Debug for MusicgenTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MusicgenTrainer")
            .field("folder", &self.model.folder())
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

/// Why a batch cannot be read as MusicGen clips.
fn shape_error(detail: String) -> SkippedBatch {
    tracing::warn!(%detail, "a MusicGen batch of the wrong shape");
    SkippedBatch {
        reason: "bad_shape",
        loss: f32::NAN,
        grad_norm: f32::NAN,
    }
}

impl MusicgenTrainer {
    /// A fresh trainer at step 0 over `model` (loaded on the inference device): the
    /// policy and the reference both start as the folder's decoder; clips are `frames`
    /// frames long.
    pub fn new(
        model: MusicGen,
        frames: usize,
        config: &Config,
        device: &Device,
    ) -> Result<Self, musicrl_policy::PolicyError> {
        let plain = model.device().clone();
        // Every decoder here starts as the tensors the model loaded (`Trainable::new` shares
        // them on the model's device): the trained one until its first update, the frozen
        // base with adapters, the KL reference without.
        let trainable = Trainable::for_policy(&model, &config.policy.lora, device)?;
        let reference = if config.policy.lora.enabled() {
            None // the frozen base, run without its adapters
        } else {
            Some(Trainable::new(&model, &plain)?)
        };
        let k_total = model.config().n_codebooks();
        Ok(Self {
            model,
            trainable,
            reference,
            optimizer: AdamConfig::new().init(),
            schedule: Schedule::from_config(config, k_total * frames),
            frames,
            device: device.clone(),
            step: 0,
        })
    }

    /// A trainer restored from a checkpoint's parts: the trained parameters
    /// ([`Trainable::to_bytes`]), the optimiser's state and the step.
    pub fn restore(
        model: MusicGen,
        frames: usize,
        config: &Config,
        device: &Device,
        parameters: &[u8],
        optimizer: Vec<u8>,
        step: u64,
    ) -> Result<Self, String> {
        let mut trainer = Self::new(model, frames, config, device).map_err(|e| e.to_string())?;
        trainer.trainable = Trainable::from_bytes(trainer.trainable.clone(), parameters)
            .map_err(|e| format!("policy.bpk: {e}"))?;
        trainer.optimizer = AdamConfig::new()
            .init()
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(optimizer))
            .map_err(|e| format!("optimizer state: {e}"))?;
        trainer.step = step;
        Ok(trainer)
    }

    /// Adam's state as bytes.
    pub fn optimizer_bytes(&self) -> crate::Result<Vec<u8>> {
        Ok(self
            .optimizer
            .into_bytes()
            .map_err(|e| crate::LearnerError::Checkpoint(format!("serialising optimizer: {e}")))?
            .to_vec())
    }

    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// Version n after n updates.
    pub fn version(&self) -> PolicyVersion {
        PolicyVersion(self.step)
    }

    /// The trained part as the actors receive it.
    pub fn trainable(&self) -> Trainable {
        self.trainable.valid()
    }

    pub fn model(&self) -> &MusicGen {
        &self.model
    }

    /// The batch's clips `[B][K][T]`, or why it is not a batch of this model's clips.
    fn clips(&self, batch: &[Trajectory]) -> Result<Vec<Vec<Vec<u32>>>, SkippedBatch> {
        let k_total = self.model.config().n_codebooks();
        let vocab = self.model.config().vocab_size() as u32;
        batch
            .iter()
            .map(|x| {
                if x.tokens.len() != k_total * self.frames {
                    return Err(shape_error(format!(
                        "{} tokens, a clip of this model is {k_total} codebooks × {} frames",
                        x.tokens.len(),
                        self.frames
                    )));
                }
                if x.behaviour_logprobs.len() != x.tokens.len() {
                    return Err(shape_error(format!(
                        "{} behaviour log-probabilities for {} tokens",
                        x.behaviour_logprobs.len(),
                        x.tokens.len()
                    )));
                }
                if let Some(t) = x.tokens.iter().find(|&&t| t >= vocab) {
                    return Err(shape_error(format!(
                        "code {t} outside the codebook of {vocab}"
                    )));
                }
                unflatten_codes(&x.tokens, k_total).ok_or_else(|| shape_error("no codes".into()))
            })
            .collect()
    }

    /// The current policy's tempered log-probabilities of each trajectory's tokens (in
    /// token order): what the loss uses as log π_θ, and what the actors report as their
    /// behaviour log-probabilities when they sample this version without guidance or
    /// top-k.
    pub fn log_probs(&self, batch: &[Trajectory]) -> Result<Vec<Vec<f32>>, SkippedBatch> {
        let clips = self.clips(batch)?;
        let captions: Vec<&str> = batch.iter().map(|x| x.caption.as_str()).collect();
        let cond = self
            .model
            .encode(&captions)
            .map_err(|e| shape_error(e.to_string()))?;
        let out = self
            .trainable
            .valid()
            .forward(&self.model, &cond, &clips)
            .map_err(|e| shape_error(e.to_string()))?;
        let [b, k, t, v] = out.logits.dims();
        let tau = f64::from(self.schedule.coefs.temperature);
        let logp = log_softmax(out.logits.reshape([b, k * t, v]) / tau, 2);
        let actions = actions(batch, b, k * t, logp.device());
        let picked = logp.gather(2, actions.unsqueeze_dim::<3>(2));
        let values = musicrl_policy::musicgen::to_vec(picked.reshape([b, k * t]));
        Ok(values.chunks(k * t).map(<[f32]>::to_vec).collect())
    }

    /// One update on `batch` (clips of one length), unless its loss or gradient is not
    /// finite or the batch is not this model's clips: then nothing changes and the reason
    /// comes back.
    pub fn try_train_step(&mut self, batch: &[Trajectory]) -> Result<StepStats, SkippedBatch> {
        assert!(
            !batch.is_empty(),
            "the learner never trains on an empty batch"
        );
        let clips = self.clips(batch)?;
        let b = batch.len();
        let tokens = batch[0].tokens.len();
        let (rewards, rewards_clipped) = self.schedule.clipped_rewards(batch);
        let captions: Vec<&str> = batch.iter().map(|x| x.caption.as_str()).collect();
        let reward_mean = rewards.iter().sum::<f32>() / b as f32;
        let value_only = self.step < self.schedule.value_warmup_steps;
        if self.step == 0 {
            self.start_baseline_at(reward_mean);
        }

        let cond = self
            .model
            .encode(&captions)
            .map_err(|e| shape_error(e.to_string()))?;
        let dev = &self.device;
        let ref_logits = self.reference_logits(&cond, &clips)?;
        let out = self
            .trainable
            .forward(&self.model, &cond, &clips)
            .map_err(|e| shape_error(e.to_string()))?;
        let [_, k, t, v] = out.logits.dims();
        let (group_baseline, grouped) = self.schedule.group_baseline(&captions, &rewards, dev);
        let behaviour: Vec<f32> = batch
            .iter()
            .flat_map(|x| x.behaviour_logprobs.iter().copied())
            .collect();
        let inputs = LossInputs {
            logits: out.logits.reshape([b, k * t, v]),
            ref_logits,
            values: out.values.reshape([b, k * t]),
            actions: actions(batch, b, k * t, dev.clone()),
            behaviour_logprobs: Tensor::from_data(TensorData::new(behaviour, [b, k * t]), dev),
            rewards: Tensor::from_data(TensorData::new(rewards, [b]), dev),
            mask: Tensor::ones([b, k * t], dev),
            group_baseline,
        };
        let parts = reinforce_kl_loss(inputs, self.schedule.coefs, value_only);
        let loss = parts.total.clone().into_scalar::<f32>();
        let gap = crate::trainer::fresh_logprob_gap(
            batch,
            self.version(),
            &musicrl_policy::musicgen::to_vec(parts.action_logprobs.clone()),
            k * t,
            &vec![k * t; b],
        );
        let grads = GradientsParams::from_grads(parts.total.backward(), &self.trainable);
        let (grads, grad_norm) =
            clip_global_norm(grads, &self.trainable, self.schedule.max_grad_norm);
        SkippedBatch::unless_finite(loss, grad_norm)?;
        let learning_rate = self.schedule.learning_rate_at(self.step);
        self.trainable = self
            .optimizer
            .step(learning_rate, self.trainable.clone(), grads);
        self.step += 1;
        let scalar = |x: Tensor<1>| x.into_scalar::<f32>();
        let previous = PolicyVersion(self.step - 1);
        Ok(StepStats {
            step: self.step,
            learning_rate,
            loss,
            policy_loss: scalar(parts.policy),
            kl: scalar(parts.kl),
            value_loss: scalar(parts.value),
            entropy: scalar(parts.entropy),
            reward_mean,
            component_means: crate::trainer::component_means(batch),
            grad_norm,
            importance_weight: scalar(parts.importance_weight),
            policy_lag_mean: batch
                .iter()
                .map(|x| x.policy_version.lag_behind(previous) as f32)
                .sum::<f32>()
                / b as f32,
            batch_size: b,
            batch_tokens: b * tokens,
            value_warmup: value_only,
            mean_length: tokens as f32,
            ended_share: 0.0,
            grouped_share: grouped as f32 / b as f32,
            scorer_versions: crate::trainer::scorer_versions(batch),
            rewards_clipped,
            fresh_logprob_gap: gap,
        })
    }

    /// Starts the value baseline at the first batch's mean reward: the head's weights start
    /// at zero, so V is its bias.
    fn start_baseline_at(&mut self, reward_mean: f32) {
        let bias = self
            .trainable
            .value
            .bias
            .as_ref()
            .map_or(0.0, |b| b.val().into_scalar::<f32>());
        let delta = reward_mean - bias;
        if delta.is_finite() {
            self.trainable = self.trainable.clone().shift_value_bias(delta);
        }
    }

    /// The KL reference's logits over the clips, flattened to `[B, K·T, V]` off the autodiff
    /// graph: the loaded reference, or (with adapters) the frozen decoder without them.
    fn reference_logits(
        &self,
        cond: &musicrl_policy::musicgen::Conditioning,
        clips: &[Vec<Vec<u32>>],
    ) -> Result<Tensor<3>, SkippedBatch> {
        let logits = match &self.reference {
            Some(reference) => reference
                .forward(&self.model, cond, clips)
                .map(|o| o.logits),
            None => self.trainable.reference_logits(&self.model, cond, clips),
        }
        .map_err(|e| shape_error(e.to_string()))?;
        let [b, k, t, v] = logits.dims();
        Ok(Tensor::<3>::from_data(
            logits.reshape([b, k * t, v]).into_data(),
            &self.device,
        ))
    }
}

/// The batch's tokens as `[B, L]` actions.
fn actions(batch: &[Trajectory], b: usize, len: usize, device: Device) -> Tensor<2, Int> {
    let ids: Vec<i64> = batch
        .iter()
        .flat_map(|x| x.tokens.iter().map(|&t| i64::from(t)))
        .collect();
    Tensor::from_data(TensorData::new(ids, [b, len]), &device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use musicrl_config::LoraConfig;
    use musicrl_policy::musicgen::SamplingOptions;
    use musicrl_policy::musicgen::rl::flatten_codes;
    use musicrl_policy::musicgen::sampling::Decoding;

    fn fixture() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../policy/tests/fixtures/musicgen/tiny")
    }

    fn config(temperature: f32) -> Config {
        let mut c = Config::default();
        c.sampling.temperature = temperature;
        c.learner.value_warmup_steps = 0;
        c.learner.lr_warmup_steps = 0;
        c.learner.learning_rate = 3e-3;
        c.learner.kl_coef = 0.02;
        c
    }

    /// What an actor does: samples `per_caption` clips of each caption from the trainer's
    /// current version, with the behaviour log-probabilities, as trajectories. Its policy has
    /// `lora`: it takes the version as broadcast (with adapters, the adapters alone, merged
    /// into its own copy of the folder's decoder).
    fn sample(
        actor: &mut MusicGen,
        lora: &LoraConfig,
        trainer: &MusicgenTrainer,
        captions: &[&str],
        per_caption: usize,
        temperature: f32,
        seed: u64,
    ) -> Vec<Trajectory> {
        // The actor's template is the folder's decoder (as `MusicgenRollout` keeps it from
        // its load), not whatever version the actor holds now.
        let folder = MusicGen::load(&fixture(), actor.device()).unwrap();
        let template = Trainable::for_policy(&folder, lora, actor.device()).unwrap();
        let broadcast = trainer.trainable().broadcast_bytes().unwrap();
        actor.set_decoder(Trainable::decoder_from_broadcast(&template, &broadcast).unwrap());
        let wanted: Vec<&str> = captions
            .iter()
            .flat_map(|c| std::iter::repeat_n(*c, per_caption))
            .collect();
        let options = SamplingOptions {
            decoding: Decoding::Sample {
                temperature,
                top_k: 0,
            },
            guidance: None,
            seed,
        };
        let out = actor
            .generate_scored(&wanted, trainer.frames, &options)
            .unwrap();
        out.codes
            .iter()
            .zip(&out.logprobs)
            .zip(&wanted)
            .map(|((codes, logprobs), caption)| Trajectory {
                caption: (*caption).to_string(),
                tokens: flatten_codes(codes),
                behaviour_logprobs: logprobs.iter().flatten().map(|&x| x as f32).collect(),
                policy_version: trainer.version(),
                ..Trajectory::default()
            })
            .collect()
    }

    /// The share of codes below a quarter of the codebook: a token-level objective a
    /// policy can visibly climb (the reward server's token-fraction test scorer).
    fn reward(x: &Trajectory, vocab: u32) -> f32 {
        x.tokens.iter().filter(|&&t| t < vocab / 4).count() as f32 / x.tokens.len() as f32
    }

    #[test]
    fn the_learner_scores_the_actors_samples_as_the_actor_did() {
        let plain = Device::flex();
        for temperature in [1.0f32, 0.7] {
            let model = MusicGen::load(&fixture(), &plain).unwrap();
            let mut actor = MusicGen::load(&fixture(), &plain).unwrap();
            let trainer =
                MusicgenTrainer::new(model, 6, &config(temperature), &plain.clone().autodiff())
                    .unwrap();
            let batch = sample(
                &mut actor,
                &LoraConfig::default(),
                &trainer,
                &["a jig", "lo-fi piano with rain"],
                2,
                temperature,
                3,
            );
            let learner = trainer.log_probs(&batch).unwrap();
            let mut worst = 0f32;
            for (x, l) in batch.iter().zip(&learner) {
                assert_eq!(l.len(), 4 * 6);
                for (a, b) in x.behaviour_logprobs.iter().zip(l) {
                    worst = worst.max((a - b).abs());
                }
            }
            assert!(
                worst < 1e-4,
                "temperature {temperature}: worst difference {worst}"
            );
        }
    }

    #[test]
    fn a_batch_of_the_wrong_shape_is_refused_and_changes_nothing() {
        let plain = Device::flex();
        let model = MusicGen::load(&fixture(), &plain).unwrap();
        let mut trainer =
            MusicgenTrainer::new(model, 6, &config(1.0), &plain.clone().autodiff()).unwrap();
        let before = trainer.trainable().to_bytes().unwrap();
        let short = Trajectory {
            caption: "a jig".into(),
            tokens: vec![1; 4 * 5],
            behaviour_logprobs: vec![-1.0; 4 * 5],
            reward: 1.0,
            ..Trajectory::default()
        };
        let skipped = trainer.try_train_step(&[short]).unwrap_err();
        assert_eq!(skipped.reason, "bad_shape");
        let outside = Trajectory {
            tokens: vec![40; 4 * 6],
            behaviour_logprobs: vec![-1.0; 4 * 6],
            ..Trajectory::default()
        };
        assert_eq!(
            trainer.try_train_step(&[outside]).unwrap_err().reason,
            "bad_shape"
        );
        assert_eq!(trainer.step_count(), 0);
        assert_eq!(trainer.trainable().to_bytes().unwrap(), before);
    }

    #[test]
    fn the_reward_rises_and_the_kl_stays_bounded() {
        let plain = Device::flex();
        let model = MusicGen::load(&fixture(), &plain).unwrap();
        let mut actor = MusicGen::load(&fixture(), &plain).unwrap();
        let vocab = model.config().vocab_size() as u32;
        let mut trainer =
            MusicgenTrainer::new(model, 6, &config(1.0), &plain.clone().autodiff()).unwrap();
        let captions = ["a jig", "lo-fi piano with rain"];
        let mut curve = Vec::new();
        let mut kls = Vec::new();
        for step in 0..24u64 {
            let mut batch = sample(
                &mut actor,
                &LoraConfig::default(),
                &trainer,
                &captions,
                4,
                1.0,
                100 + step,
            );
            for x in &mut batch {
                x.reward = reward(x, vocab);
            }
            curve.push(batch.iter().map(|x| x.reward).sum::<f32>() / batch.len() as f32);
            let stats = trainer.try_train_step(&batch).unwrap();
            assert!((stats.grouped_share - 1.0).abs() < 1e-6);
            assert!(
                stats.importance_weight > 0.99 && stats.importance_weight < 1.01,
                "{stats:?}"
            );
            let gap = stats
                .fresh_logprob_gap
                .expect("every clip is of the version updated");
            assert!(
                gap < 1e-4,
                "the learner's log-probabilities are the actor's: {gap}"
            );
            kls.push(stats.kl);
        }
        let mean = |xs: &[f32]| xs.iter().sum::<f32>() / xs.len() as f32;
        let (first, last) = (mean(&curve[..4]), mean(&curve[16..]));
        assert!(last > first + 0.15, "reward {first} → {last}: {curve:?}");
        // Measured: 0.26 → 0.59 with the KL near 0.5 nats a code (α = 0.02).
        assert!(kls.iter().all(|k| k.is_finite() && *k < 2.0), "{kls:?}");
        // The reference shares the tensors the model loaded with the trained decoder's first
        // version; the updates never wrote into them: the policy moved away from a reference
        // that is still the folder's decoder.
        assert!(kls[kls.len() - 1] > 0.05, "{kls:?}");
        let folder = MusicGen::load(&fixture(), &plain).unwrap();
        let reference = trainer.reference.as_ref().unwrap();
        assert!(reference.decoder.named_tensors() == folder.decoder().named_tensors());
        assert!(trainer.model().decoder().named_tensors() == folder.decoder().named_tensors());
        assert!(trainer.trainable().decoder.named_tensors() != folder.decoder().named_tensors());
    }

    fn lora() -> LoraConfig {
        LoraConfig {
            rank: 4,
            alpha: 8.0,
            targets: ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
                .map(String::from)
                .to_vec(),
            seed: 7,
        }
    }

    /// A trainer of the fixture with [`lora`]'s adapters, and an actor.
    fn adapted(plain: &Device) -> (MusicgenTrainer, MusicGen, Config) {
        let model = MusicGen::load(&fixture(), plain).unwrap();
        let actor = MusicGen::load(&fixture(), plain).unwrap();
        let mut c = config(1.0);
        c.policy.lora = lora();
        c.learner.learning_rate = 1e-2;
        let trainer = MusicgenTrainer::new(model, 6, &c, &plain.clone().autodiff()).unwrap();
        (trainer, actor, c)
    }

    /// One round of the loop: the actor samples `per_caption` clips of each caption from the
    /// broadcast version, they are rewarded, the learner updates on them.
    fn round(
        trainer: &mut MusicgenTrainer,
        actor: &mut MusicGen,
        c: &Config,
        per_caption: usize,
        seed: u64,
    ) -> (f32, StepStats) {
        let vocab = trainer.model().config().vocab_size() as u32;
        let captions = ["a jig", "lo-fi piano with rain"];
        let mut batch = sample(
            actor,
            &c.policy.lora,
            trainer,
            &captions,
            per_caption,
            1.0,
            seed,
        );
        for x in &mut batch {
            x.reward = reward(x, vocab);
        }
        let mean = batch.iter().map(|x| x.reward).sum::<f32>() / batch.len() as f32;
        (mean, trainer.try_train_step(&batch).unwrap())
    }

    #[test]
    fn adapters_learn_through_their_broadcast_and_never_touch_the_base() {
        let plain = Device::flex();
        let base = MusicGen::load(&fixture(), &plain)
            .unwrap()
            .load_decoder(&plain)
            .unwrap()
            .named_tensors();
        let (mut trainer, mut actor, c) = adapted(&plain);
        assert!(trainer.reference.is_none(), "no second copy of the decoder");

        // Only the adapters travel (at this tiny width their names are a third of the bytes;
        // docs/performance.md measures the real shapes).
        let full = Trainable::new(trainer.model(), &plain)
            .unwrap()
            .to_bytes()
            .unwrap();
        let broadcast = trainer.trainable().broadcast_bytes().unwrap();
        let adapters = trainer.trainable().adapters.as_ref().unwrap().len();
        assert!(
            broadcast.len() < full.len() / 2 && broadcast.len() >= adapters * 4,
            "{} bytes for {adapters} adapter values; the whole decoder is {} bytes",
            broadcast.len(),
            full.len()
        );

        let mut curve = Vec::new();
        for step in 0..24u64 {
            let (mean, stats) = round(&mut trainer, &mut actor, &c, 4, 100 + step);
            curve.push(mean);
            // The actor sampled with the adapters merged into its decoder; the learner
            // scores with them unmerged: the same policy.
            let gap = stats
                .fresh_logprob_gap
                .expect("every clip is of the version updated");
            assert!(
                gap < 1e-4,
                "step {step}: the merged actor and the learner differ by {gap}"
            );
            assert!(stats.kl.is_finite() && stats.kl < 2.0, "{stats:?}");
        }
        let mean = |xs: &[f32]| xs.iter().sum::<f32>() / xs.len() as f32;
        let (first, last) = (mean(&curve[..4]), mean(&curve[16..]));
        assert!(last > first + 0.1, "reward {first} → {last}: {curve:?}");

        // The frozen base is the folder's decoder, bit for bit, after 24 updates; what
        // moved is the adapters.
        let trained = trainer.trainable();
        assert!(
            trained.decoder.named_tensors() == base,
            "the base decoder changed"
        );
        assert!(
            trained.merged_decoder().named_tensors() != base,
            "the adapters never moved"
        );
    }

    #[test]
    fn an_adapted_checkpoint_restores_and_exports_as_the_same_policy() {
        let plain = Device::flex();
        let (mut trainer, mut actor, c) = adapted(&plain);
        let captions = ["a jig", "lo-fi piano with rain"];
        for step in 0..4u64 {
            round(&mut trainer, &mut actor, &c, 2, step);
        }
        let probe = sample(&mut actor, &c.policy.lora, &trainer, &captions, 1, 1.0, 99);
        let expected = trainer.log_probs(&probe).unwrap();

        // The checkpoint's bytes restore the same policy.
        let restored = MusicgenTrainer::restore(
            MusicGen::load(&fixture(), &plain).unwrap(),
            6,
            &c,
            &plain.clone().autodiff(),
            &trainer.trainable().to_bytes().unwrap(),
            trainer.optimizer_bytes().unwrap(),
            trainer.step_count(),
        )
        .unwrap();
        assert_eq!(restored.log_probs(&probe).unwrap(), expected);

        // The export is the source folder with the merged decoder: loaded as a plain
        // MusicGen folder it scores every code as the adapted policy does.
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("export");
        let written = musicrl_policy::musicgen::export::write_folder(
            &fixture(),
            &trainer.trainable().merged_decoder(),
            &out,
            &[("musicrl_test", "1".into())],
        )
        .unwrap();
        assert!(
            written.replaced > 0 && written.replaced < written.tensors,
            "{written:?}"
        );
        assert!(
            written.copied.iter().any(|f| f == "tokenizer.json"),
            "{written:?}"
        );
        let exported = MusicGen::load(&out, &plain).unwrap();
        let mut worst = 0f64;
        for (x, want) in probe.iter().zip(&expected) {
            let codes = musicrl_policy::musicgen::rl::unflatten_codes(&x.tokens, 4).unwrap();
            let got: Vec<f64> = exported.score(&x.caption, &codes).unwrap().concat();
            for (a, b) in got.iter().zip(want) {
                worst = worst.max((a - f64::from(*b)).abs());
            }
        }
        assert!(
            worst < 1e-4,
            "the export differs from the policy by {worst}"
        );
        // … and differs from the folder it came from (the adapters moved).
        let source = MusicGen::load(&fixture(), &plain).unwrap();
        let codes = musicrl_policy::musicgen::rl::unflatten_codes(&probe[0].tokens, 4).unwrap();
        assert_ne!(
            source.score(&probe[0].caption, &codes).unwrap(),
            exported.score(&probe[0].caption, &codes).unwrap()
        );
        // A second export into the same folder is refused and loses nothing.
        let again = musicrl_policy::musicgen::export::write_folder(
            &fixture(),
            &trainer.trainable().merged_decoder(),
            &out,
            &[],
        );
        assert!(again.unwrap_err().to_string().contains("not empty"));
        assert!(MusicGen::load(&out, &plain).is_ok());
    }
}
