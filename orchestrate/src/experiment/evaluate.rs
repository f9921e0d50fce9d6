//! Held-out evaluation of one checkpoint, the points of an experiment's curves: the policy
//! samples the test prompts (the same draws for every checkpoint of a run: one seed, common
//! random numbers), and each clip is scored by every reward component the experiment uses,
//! assessed by the rater panel (its expected scores, no second model needed), and measured for
//! length, diversity and copying; the KL to the run's reference is exact along the samples.
//!
//! It lives in the binary, above both the judge and the reward models, like `agreement.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use musicrl_common::wire::ScoreInput;
use musicrl_config::Config;
use musicrl_config::{ComponentConfig, PolicyConfig};
use musicrl_judge::novelty::{CopyIndex, distinct_ngrams, note_symbols};
use musicrl_judge::{Panel, assess};
use musicrl_policy::melody::Policy;
use musicrl_policy::melody::divergence::sequence_kl;
use musicrl_policy::melody::sampling::Sampler;
use musicrl_reward::combine::RewardModel;

/// One held-out evaluation of one checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    pub step: u64,
    pub policy: PathBuf,
    pub clips: usize,
    /// Mean over clips of Σ_t KL(π‖π_ref) along the clip (the paper's x-axis), and per step.
    #[serde(deserialize_with = "super::nan")]
    pub kl: f64,
    #[serde(deserialize_with = "super::nan")]
    pub kl_per_token: f64,
    /// The run's own training reward (its recipe's weighted components), and its standard
    /// error over clips.
    #[serde(deserialize_with = "super::nan")]
    pub train_reward: f64,
    #[serde(default, deserialize_with = "super::nan")]
    pub train_reward_se: f64,
    /// Which draw of the held-out samples this is (0: the run's seed; 1: a second draw, made
    /// when the checkpoint choice was close).
    #[serde(default)]
    pub draw: u32,
    /// Every component's raw mean score, by name.
    pub components: BTreeMap<String, f64>,
    /// The rater panel's expected scores (1–5), the first the selection score, with its
    /// standard error over clips.
    #[serde(deserialize_with = "super::nan")]
    pub judge_overall: f64,
    #[serde(default, deserialize_with = "super::nan")]
    pub judge_overall_se: f64,
    #[serde(deserialize_with = "super::nan")]
    pub judge_adherence: f64,
    #[serde(deserialize_with = "super::nan")]
    pub judge_quality: f64,
    #[serde(deserialize_with = "super::nan")]
    pub judge_appeal: f64,
    /// What the panel measures, in [0, 1].
    #[serde(deserialize_with = "super::nan")]
    pub key: f64,
    #[serde(deserialize_with = "super::nan")]
    pub meter: f64,
    #[serde(deserialize_with = "super::nan")]
    pub well_formed: f64,
    #[serde(deserialize_with = "super::nan")]
    pub mean_length: f64,
    #[serde(deserialize_with = "super::nan")]
    pub ended: f64,
    /// Distinct note bigrams and 4-grams across the clips (collapse drives them down).
    #[serde(deserialize_with = "super::nan")]
    pub distinct_2: f64,
    #[serde(deserialize_with = "super::nan")]
    pub distinct_4: f64,
    /// The longest run of notes copied from one training tune: mean and maximum over clips.
    #[serde(deserialize_with = "super::nan")]
    pub copy_mean: f64,
    pub copy_max: usize,
}

/// Two component configurations that compute the same score (weights aside).
fn same_scorer(a: &ComponentConfig, b: &ComponentConfig) -> bool {
    a.kind == b.kind
        && a.checkpoint == b.checkpoint
        && a.target_below == b.target_below
        && a.endpoint == b.endpoint
        && a.remote_component == b.remote_component
}

/// The evaluation's fixed parts, built once per experiment.
pub struct Evaluator {
    prompts: Vec<String>,
    samples_per_prompt: usize,
    temperature: f32,
    /// Every distinct scorer of every recipe, unweighted, and their reported names.
    scorers: Vec<ComponentConfig>,
    names: Vec<String>,
    rewards: RewardModel,
    panel: Panel,
    copies: CopyIndex,
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { f64::NAN } else { s / n as f64 }
}

/// The standard error of the mean of `xs` (NaN for fewer than two).
fn standard_error(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return f64::NAN;
    }
    let m = xs.iter().sum::<f64>() / xs.len() as f64;
    let var = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64;
    (var / xs.len() as f64).sqrt()
}

impl Evaluator {
    /// `recipes`: every recipe's reward components; `train_tunes`: the corpus's training
    /// split, for the copy index.
    pub fn new(
        config: &Config,
        prompts: Vec<String>,
        recipes: &[Vec<ComponentConfig>],
        train_tunes: &[&musicrl_music::corpus::Tune],
    ) -> anyhow::Result<Evaluator> {
        let mut scorers: Vec<ComponentConfig> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for c in recipes.iter().flatten() {
            if scorers.iter().any(|s| same_scorer(s, c)) {
                continue;
            }
            let base = if c.name.is_empty() { &c.kind } else { &c.name };
            let mut name = base.clone();
            let mut k = 2;
            while names.contains(&name) {
                name = format!("{base}-{k}");
                k += 1;
            }
            names.push(name.clone());
            scorers.push(ComponentConfig {
                name,
                weight: 1.0,
                shift: 0.0,
                scale: 1.0,
                ..c.clone()
            });
        }
        let mut reward_config = config.reward.clone();
        reward_config.components = scorers.clone();
        let rewards = RewardModel::from_config(&reward_config)
            .context("building the evaluation's reward components (every recipe's)")?;
        let panel =
            Panel::new(musicrl_judge::PanelConfig::default()).map_err(anyhow::Error::msg)?;
        let copies = CopyIndex::of_tunes(train_tunes.iter().map(|t| t.events.as_slice()));
        Ok(Evaluator {
            prompts,
            samples_per_prompt: config.experiment.eval_samples_per_prompt,
            temperature: config.sampling.temperature,
            scorers,
            names,
            rewards,
            panel,
            copies,
        })
    }

    /// The reported names of the components, in order.
    pub fn component_names(&self) -> &[String] {
        &self.names
    }

    /// Tunes and notes in the copy index.
    pub fn copy_index_size(&self) -> (usize, usize) {
        self.copies.size()
    }

    /// Evaluates `policy` (saved at `path`, trained `step` steps) against `reference`, the
    /// training reward being `recipe`'s weighted components. `seed` fixes the draws.
    #[allow(clippy::too_many_arguments)]
    pub fn evaluate(
        &self,
        runtime: &tokio::runtime::Runtime,
        step: u64,
        path: &Path,
        policy: &Policy,
        reference: &Policy,
        policy_config: &PolicyConfig,
        recipe: &[ComponentConfig],
        seed: u64,
    ) -> anyhow::Result<EvalPoint> {
        let device = musicrl_policy::device::inference_device();
        let mut sampler = Sampler::new(seed, self.temperature);
        let jobs: Vec<&String> = self
            .prompts
            .iter()
            .flat_map(|p| std::iter::repeat_n(p, self.samples_per_prompt))
            .collect();
        let mut clips: Vec<(String, Vec<u32>)> = Vec::with_capacity(jobs.len());
        let mut kls: Vec<(f64, usize)> = Vec::with_capacity(jobs.len());
        for chunk in jobs.chunks(16) {
            let captions: Vec<&str> = chunk.iter().map(|c| c.as_str()).collect();
            let sampled = sampler.sample(
                policy,
                policy_config,
                &captions,
                policy_config.max_tokens,
                &device,
            );
            let tokens: Vec<Vec<u32>> = sampled.into_iter().map(|s| s.tokens).collect();
            kls.extend(sequence_kl(
                policy,
                reference,
                policy_config,
                &captions,
                &tokens,
                self.temperature,
                &device,
            ));
            clips.extend(captions.iter().map(|c| c.to_string()).zip(tokens));
        }

        // Every component's raw score of every clip.
        let mut raw: Vec<Vec<f64>> = Vec::with_capacity(clips.len());
        for chunk in clips.chunks(64) {
            let inputs: Vec<ScoreInput> = chunk
                .iter()
                .map(|(caption, tokens)| ScoreInput {
                    caption: caption.clone(),
                    tokens: tokens.clone(),
                })
                .collect();
            let scores = runtime
                .block_on(self.rewards.score(&inputs))
                .context("scoring the held-out clips")?;
            raw.extend(
                scores
                    .into_iter()
                    .map(|s| s.components.iter().map(|&x| f64::from(x)).collect()),
            );
        }
        // The recipe's reward: Σ weight · (score − shift) · scale over its components.
        let mut terms = Vec::new();
        for c in recipe {
            let j = self
                .scorers
                .iter()
                .position(|s| same_scorer(s, c))
                .context("a recipe component the evaluator does not have")?;
            terms.push((
                j,
                f64::from(c.weight),
                f64::from(c.shift),
                f64::from(c.scale),
            ));
        }
        let rewards: Vec<f64> = raw
            .iter()
            .map(|r| {
                terms
                    .iter()
                    .map(|&(j, w, shift, scale)| w * (r[j] - shift) * scale)
                    .sum::<f64>()
            })
            .collect();
        let train_reward = mean(rewards.iter().copied());
        let components = self
            .names
            .iter()
            .enumerate()
            .map(|(j, n)| (n.clone(), mean(raw.iter().map(|r| r[j]))))
            .collect();

        let assessed: Vec<_> = clips.iter().map(|(c, t)| assess(c, t)).collect();
        let expected: Vec<_> = assessed.iter().map(|a| self.panel.expected(a)).collect();
        let melodies: Vec<Vec<u32>> = clips.iter().map(|(_, t)| note_symbols(t)).collect();
        let copies: Vec<usize> = melodies
            .iter()
            .map(|m| self.copies.longest_copy(m))
            .collect();
        let steps: usize = kls.iter().map(|k| k.1).sum();
        Ok(EvalPoint {
            step,
            policy: path.to_path_buf(),
            clips: clips.len(),
            kl: mean(kls.iter().map(|k| k.0)),
            kl_per_token: kls.iter().map(|k| k.0).sum::<f64>() / steps.max(1) as f64,
            train_reward,
            train_reward_se: standard_error(&rewards),
            draw: 0,
            components,
            judge_overall: mean(expected.iter().map(|e| e.overall)),
            judge_overall_se: standard_error(
                &expected.iter().map(|e| e.overall).collect::<Vec<_>>(),
            ),
            judge_adherence: mean(expected.iter().filter_map(|e| e.adherence)),
            judge_quality: mean(expected.iter().map(|e| e.quality)),
            judge_appeal: mean(expected.iter().map(|e| e.appeal)),
            key: mean(assessed.iter().filter_map(|a| a.adherence.key)),
            meter: mean(assessed.iter().filter_map(|a| a.adherence.meter)),
            well_formed: mean(assessed.iter().map(|a| a.well_formed.overall)),
            mean_length: mean(assessed.iter().map(|a| a.length as f64)),
            ended: mean(assessed.iter().map(|a| f64::from(u8::from(a.ended)))),
            distinct_2: distinct_ngrams(&melodies, 2),
            distinct_4: distinct_ngrams(&melodies, 4),
            copy_mean: mean(copies.iter().map(|&c| c as f64)),
            copy_max: copies.iter().copied().max().unwrap_or(0),
        })
    }
}
