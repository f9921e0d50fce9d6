//! `musicrl experiment`: the paper's whole experiment as one command (docs/method.md §4–5).
//!
//! For every seed, the recipes of `[experiment]` run in order, each as a `musicrl local` run
//! (the roles as processes, exactly as a user runs them) that checkpoints every `eval_every`
//! steps. Each checkpoint, and the start, is then evaluated on held-out prompts
//! ([`evaluate`]); the checkpoint kept is the one the rater panel expects to score best, and
//! the over-optimisation rule (`musicrl_judge::selection`) rolls the run back to it when the
//! held-out score fell while the training reward rose. The chosen step folder is pinned, so
//! retention never deletes it. A recipe that starts from another (RL-RU from RL-R) starts
//! from that recipe's chosen checkpoint of the same seed and measures its KL against it.
//! Finally every seed's chosen models are judged side by side with θ0 by the panel, the
//! table is aggregated over seeds, and `report.html` is written ([`report`]).
//!
//! Orchestration only: the learner, actors and reward server learn nothing of experiments.

pub mod evaluate;
pub mod plot;
pub mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use musicrl_common::prompts::load_prompts;
use musicrl_config::Config;
use musicrl_config::{ComponentConfig, START_THETA0};
use musicrl_judge::selection::{Point, Rule, Selection, select};
use musicrl_judge::{Comparison, Panel, PanelConfig, Report};
use musicrl_learner::checkpoint;
use musicrl_policy::melody::params::{load_policy, save_policy};

use crate::judging::{sample_models, write_samples};
use crate::plan::{ExperimentPlan, LocalPlan};
use crate::process::write_json;
use evaluate::{EvalPoint, Evaluator};

/// Marks a folder as written by `musicrl experiment`, so a rerun may replace it.
const MARKER: &str = ".musicrl-experiment";

/// The name of a model in the judge and the samples: recipe and seed.
pub fn model_name(recipe: &str, seed: u64) -> String {
    format!("{recipe}-{seed}")
}

/// One trained run of one recipe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub recipe: String,
    pub seed: u64,
    pub dir: PathBuf,
    /// What it started from and what its KL was measured against (the policy files).
    pub init_policy: PathBuf,
    pub reference_policy: PathBuf,
    pub steps: u64,
    pub curve: Vec<EvalPoint>,
    /// Second draws of the held-out samples for the candidates of a close choice (pooled
    /// with their first draws in the selection).
    #[serde(default)]
    pub second_draws: Vec<EvalPoint>,
    pub selection: Selection,
    /// The chosen checkpoint's policy file (pinned).
    pub chosen: PathBuf,
    pub training_seconds: f64,
    pub evaluation_seconds: f64,
}

/// Reads a float that JSON wrote as `null` (serde_json writes NaN so) back as NaN.
pub fn nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// One seed's comparison of two recipes (from the panel's report of that seed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedComparison {
    pub seed: u64,
    pub judgments: usize,
    pub wins: usize,
    pub ties: usize,
    pub losses: usize,
    #[serde(deserialize_with = "nan")]
    pub win_rate: f64,
    #[serde(deserialize_with = "nan")]
    pub p_value: f64,
    #[serde(deserialize_with = "nan")]
    pub adherence_win_rate: f64,
    #[serde(deserialize_with = "nan")]
    pub quality_win_rate: f64,
    #[serde(deserialize_with = "nan")]
    pub appeal_win_rate: f64,
}

impl SeedComparison {
    fn of(seed: u64, c: &Comparison) -> SeedComparison {
        SeedComparison {
            seed,
            judgments: c.judgments,
            wins: c.wins,
            ties: c.ties,
            losses: c.losses,
            win_rate: c.win_rate,
            p_value: c.p_value,
            adherence_win_rate: c.adherence_win_rate,
            quality_win_rate: c.quality_win_rate,
            appeal_win_rate: c.appeal_win_rate,
        }
    }
}

/// A mean and a standard deviation over seeds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct MeanSd {
    #[serde(deserialize_with = "nan")]
    pub mean: f64,
    #[serde(deserialize_with = "nan")]
    pub sd: f64,
}

/// A pair of recipes over every seed: `a` against `b`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairRow {
    pub a: String,
    pub b: String,
    /// Per seed, the panel's comparison of `a`'s and `b`'s runs of that seed.
    pub runs: Vec<SeedComparison>,
    #[serde(deserialize_with = "nan")]
    pub win_pct: f64,
    #[serde(deserialize_with = "nan")]
    pub tie_pct: f64,
    #[serde(deserialize_with = "nan")]
    pub loss_pct: f64,
    /// Mean and standard deviation over seeds of the win rate.
    #[serde(deserialize_with = "nan")]
    pub win_rate: f64,
    #[serde(deserialize_with = "nan")]
    pub win_rate_sd: f64,
    /// Seeds with p < 0.05, and in which direction.
    pub significant_wins: usize,
    pub significant_losses: usize,
}

/// One recipe's mean scores over seeds (θ0 included, as "theta0").
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecipeScores {
    pub recipe: String,
    pub overall: MeanSd,
    pub adherence: MeanSd,
    pub quality: MeanSd,
    pub appeal: MeanSd,
    pub key: MeanSd,
    pub meter: MeanSd,
    pub well_formed: MeanSd,
}

/// `DIR/results.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub plan: musicrl_config::ExperimentConfig,
    pub quick: bool,
    pub theta0: PathBuf,
    pub seeds: Vec<u64>,
    pub runs: Vec<RunRecord>,
    /// The panel's report of each seed (θ0 and that seed's chosen models) is in
    /// `judge/seed-N.json`.
    pub table: Vec<PairRow>,
    pub scores: Vec<RecipeScores>,
    pub wall_seconds: f64,
}

/// `--quick`: the same pipeline, small enough for a test or a first look (each run's value
/// and learning-rate warm-ups shrink too, so its few steps move the policy).
fn apply_quick(config: &mut Config) {
    let e = &mut config.experiment;
    e.runs = 1;
    e.eval_every = 2;
    e.eval_prompt_count = 6;
    e.eval_samples_per_prompt = 1;
    e.judge_pairs_per_prompt = 1;
    for r in &mut e.recipes {
        r.steps = 4;
    }
}

/// What `--quick` does to each run's own configuration.
fn quick_run(c: &mut Config) {
    c.learner.value_warmup_steps = c.learner.value_warmup_steps.min(1);
    c.learner.lr_warmup_steps = 0;
}

/// θ0: `learner.init_policy`, or (when that is empty) a seeded random policy saved in OUT so
/// every recipe and the judge share it.
pub(crate) fn theta0(config: &Config, out: &Path) -> anyhow::Result<PathBuf> {
    let path = &config.learner.init_policy;
    if !path.as_os_str().is_empty() {
        if !path.exists() {
            bail!(
                "{} (θ0 of every recipe)",
                musicrl_config::paths::missing("learner.init_policy", path)
            );
        }
        return Ok(path.clone());
    }
    let device = musicrl_policy::device::training_device();
    device.seed(config.learner.seed);
    let policy = musicrl_policy::melody::Policy::new(&config.policy, &device);
    let file = out.join("theta0.bpk");
    save_policy(&policy, &file)?;
    Ok(file)
}

/// A recipe's configuration: its file over the defaults ("" = the experiment's own).
fn recipe_config(config: &Config, file: &Path) -> anyhow::Result<Config> {
    if file.as_os_str().is_empty() {
        return Ok(config.clone());
    }
    let mut c =
        Config::from_file(file).with_context(|| format!("the recipe config {}", file.display()))?;
    // Its relative inputs resolve as the experiment's own did (from any working directory).
    c.locate_inputs();
    if c.policy != config.policy {
        bail!(
            "the recipe config {} has another policy architecture than the experiment's; recipes share θ0",
            file.display()
        );
    }
    Ok(c)
}

/// Step folders of a run's checkpoint folder, oldest first, with their steps.
fn step_folders(dir: &Path) -> anyhow::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        let step = p
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("step-"))
            .and_then(|n| n.parse::<u64>().ok());
        if let (Some(step), true) = (step, p.join("policy.bpk").is_file()) {
            out.push((step, p));
        }
    }
    out.sort();
    Ok(out)
}

fn mean_sd(xs: &[f64]) -> MeanSd {
    let xs: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if xs.is_empty() {
        return MeanSd {
            mean: f64::NAN,
            sd: f64::NAN,
        };
    }
    let m = xs.iter().sum::<f64>() / xs.len() as f64;
    let sd = if xs.len() > 1 {
        (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64).sqrt()
    } else {
        0.0
    };
    MeanSd { mean: m, sd }
}

/// The comparison of `a` against `b` in a report, flipped when the report has `b` first.
fn comparison(report: &Report, a: &str, b: &str) -> Option<Comparison> {
    let flip = |x: f64| if x.is_nan() { x } else { 1.0 - x };
    report.comparisons.iter().find_map(|c| {
        if c.a == a && c.b == b {
            Some(c.clone())
        } else if c.a == b && c.b == a {
            Some(Comparison {
                a: a.into(),
                b: b.into(),
                wins: c.losses,
                losses: c.wins,
                win_pct: c.loss_pct,
                loss_pct: c.win_pct,
                win_rate: flip(c.win_rate),
                adherence_win_rate: flip(c.adherence_win_rate),
                quality_win_rate: flip(c.quality_win_rate),
                appeal_win_rate: flip(c.appeal_win_rate),
                ..c.clone()
            })
        } else {
            None
        }
    })
}

/// Every recipe against θ0, then every later recipe against every earlier one (RL-RU
/// against RL-R, as the paper reports it), each over every seed.
pub fn aggregate(recipes: &[String], seeds: &[u64], judged: &[Report]) -> Vec<PairRow> {
    let mut pairs: Vec<(String, String)> = recipes
        .iter()
        .map(|r| (r.clone(), START_THETA0.to_string()))
        .collect();
    for j in 0..recipes.len() {
        for i in 0..j {
            pairs.push((recipes[j].clone(), recipes[i].clone()));
        }
    }
    let mut rows = Vec::new();
    for (a, b) in &pairs {
        {
            let runs: Vec<SeedComparison> = seeds
                .iter()
                .zip(judged)
                .filter_map(|(&s, r)| {
                    comparison(r, &model_name(a, s), &model_name(b, s))
                        .map(|c| SeedComparison::of(s, &c))
                })
                .collect();
            if runs.is_empty() {
                continue;
            }
            let n: usize = runs.iter().map(|c| c.judgments).sum();
            let pct = |f: fn(&SeedComparison) -> usize| {
                100.0 * runs.iter().map(f).sum::<usize>() as f64 / n.max(1) as f64
            };
            let MeanSd {
                mean: win_rate,
                sd: win_rate_sd,
            } = mean_sd(&runs.iter().map(|c| c.win_rate).collect::<Vec<_>>());
            rows.push(PairRow {
                a: a.clone(),
                b: b.clone(),
                win_pct: pct(|c| c.wins),
                tie_pct: pct(|c| c.ties),
                loss_pct: pct(|c| c.losses),
                win_rate,
                win_rate_sd,
                significant_wins: runs
                    .iter()
                    .filter(|c| c.p_value < 0.05 && c.win_rate > 0.5)
                    .count(),
                significant_losses: runs
                    .iter()
                    .filter(|c| c.p_value < 0.05 && c.win_rate < 0.5)
                    .count(),
                runs,
            });
        }
    }
    rows
}

fn recipe_scores(recipes: &[String], seeds: &[u64], judged: &[Report]) -> Vec<RecipeScores> {
    let mut names: Vec<String> = recipes.to_vec();
    names.push(START_THETA0.into());
    names
        .iter()
        .map(|r| {
            let rows: Vec<&musicrl_judge::ModelScores> = seeds
                .iter()
                .zip(judged)
                .filter_map(|(&s, rep)| rep.models.iter().find(|m| m.model == model_name(r, s)))
                .collect();
            let ms = |f: fn(&musicrl_judge::ModelScores) -> f64| {
                mean_sd(&rows.iter().map(|m| f(m)).collect::<Vec<_>>())
            };
            RecipeScores {
                recipe: r.clone(),
                overall: ms(|m| m.overall),
                adherence: ms(|m| m.adherence),
                quality: ms(|m| m.quality),
                appeal: ms(|m| m.appeal),
                key: ms(|m| m.measured_key),
                meter: ms(|m| m.measured_meter),
                well_formed: ms(|m| m.measured_well_formed),
            }
        })
        .collect()
}

/// One run of one recipe, and what it needs: where it starts, whether its KL is measured
/// against that start, the held-out evaluator and the experiment's folder.
struct RecipeRun<'a> {
    runtime: &'a tokio::runtime::Runtime,
    base: &'a Config,
    recipe: &'a musicrl_config::RecipeConfig,
    seed: u64,
    start: &'a Path,
    anchored: bool,
    evaluator: &'a Evaluator,
    out: &'a Path,
    quick: bool,
}

/// The held-out evaluation's sample seeds: the first draw, and the second for a close choice.
const FIRST_DRAW: u64 = 0xE7A1;
const SECOND_DRAW: u64 = 0x5EC0_0D;

impl RecipeRun<'_> {
    /// Trains, evaluates and selects, in named steps: configure, train (a `local` run),
    /// evaluate every checkpoint on the held-out prompts, choose (a close choice drawn
    /// twice), pin the choice and prune the rest, record the curve.
    fn run(&self) -> anyhow::Result<RunRecord> {
        let (c, dir) = self.configure()?;
        let t = Instant::now();
        let summary = self.train(&c, &dir)?;
        let training_seconds = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let ck = dir.join("checkpoints");
        let reference_file = ck.join("reference.bpk");
        let evaluation = Evaluation::open(self, &c, &reference_file)?;
        let curve = evaluation.curve(&ck)?;
        let evaluation_seconds = t.elapsed().as_secs_f64();
        let (selection, second_draws) = evaluation.choose(&ck, &curve)?;
        let chosen_dir = pin_and_prune(&ck, &selection)?;
        let record = RunRecord {
            recipe: self.recipe.name.clone(),
            seed: self.seed,
            dir: dir.clone(),
            init_policy: self.start.to_path_buf(),
            reference_policy: reference_file,
            steps: self.recipe.steps,
            curve,
            second_draws,
            chosen: chosen_dir.join("policy.bpk"),
            selection,
            training_seconds,
            evaluation_seconds,
        };
        record_curve(&c, &dir, &record, &summary)?;
        write_json(&dir.join("selection.json"), &record.selection)?;
        Ok(record)
    }

    /// The run's configuration (the recipe over the experiment's) and its folder.
    fn configure(&self) -> anyhow::Result<(Config, PathBuf)> {
        let (base, recipe, seed) = (self.base, self.recipe, self.seed);
        let e = &base.experiment;
        let mut c = recipe_config(base, &recipe.config)?;
        if self.quick {
            quick_run(&mut c);
        }
        let dir = self.out.join("runs").join(model_name(&recipe.name, seed));
        // One tracker run per recipe and seed, beside each other in the experiment's trackers.
        c.tracking = base.tracking.clone();
        c.tracking.run = if base.tracking.run.is_empty() {
            model_name(&recipe.name, seed)
        } else {
            format!("{}-{}", base.tracking.run, model_name(&recipe.name, seed))
        };
        c.learner.init_policy = self.start.to_path_buf();
        c.learner.reference_policy = if self.anchored {
            self.start.to_path_buf()
        } else {
            PathBuf::new()
        };
        c.learner.seed = seed;
        c.actor.seed = seed;
        c.learner.checkpoint_every = e.eval_every;
        c.learner.keep_checkpoints = 0;
        c.local.steps = recipe.steps;
        c.local.out = dir.clone();
        c.local.actors = base.local.actors;
        c.local.metrics = false;
        // The experiment judges every seed's chosen checkpoints itself.
        c.local.verdict_prompts = 0;
        if e.deterministic {
            c.actor.synchronous = true;
            c.local.actors = 1;
        }
        Ok((c, dir))
    }

    /// Trains the recipe afresh with `local`; an error unless it completed its steps.
    fn train(&self, c: &Config, dir: &Path) -> anyhow::Result<crate::local::Summary> {
        let (recipe, seed) = (self.recipe, self.seed);
        eprintln!(
            "== {} (seed {seed}): {} steps from {}{}",
            recipe.name,
            recipe.steps,
            self.start.display(),
            if self.anchored {
                ", KL measured against it"
            } else {
                ""
            }
        );
        let summary = self
            .runtime
            .block_on(crate::local::run(
                c.clone(),
                // The experiment has decided to train this recipe afresh.
                LocalPlan {
                    overwrite: true,
                    ..LocalPlan::default()
                },
            ))
            .with_context(|| {
                format!(
                    "training {} (seed {seed}); logs in {}",
                    recipe.name,
                    dir.join("logs").display()
                )
            })?;
        if !summary.completed {
            bail!(
                "{} (seed {seed}) stopped at step {} of {}; logs in {}",
                recipe.name,
                summary.steps,
                recipe.steps,
                dir.join("logs").display()
            );
        }
        Ok(summary)
    }
}

/// A trained run's checkpoints on the held-out prompts, against the KL reference the learner
/// actually used (read back from the run, not assumed).
struct Evaluation<'a> {
    run: &'a RecipeRun<'a>,
    config: &'a Config,
    reference: musicrl_policy::melody::Policy,
    components: Vec<ComponentConfig>,
    device: burn::tensor::Device,
}

impl<'a> Evaluation<'a> {
    fn open(
        run: &'a RecipeRun<'a>,
        config: &'a Config,
        reference_file: &Path,
    ) -> anyhow::Result<Self> {
        let device = musicrl_policy::device::inference_device();
        let reference = load_policy(reference_file, &config.policy, &device)
            .with_context(|| format!("the run's KL reference {}", reference_file.display()))?;
        Ok(Self {
            run,
            config,
            reference,
            components: config.reward.components.clone(),
            device,
        })
    }

    /// One held-out evaluation of the policy in `file` at `step`, on draw `draw`.
    fn point(&self, step: u64, file: &Path, draw: u64) -> anyhow::Result<EvalPoint> {
        let policy = load_policy(file, &self.config.policy, &self.device)
            .with_context(|| format!("loading {}", file.display()))?;
        self.run.evaluator.evaluate(
            self.run.runtime,
            step,
            file,
            &policy,
            &self.reference,
            &self.config.policy,
            &self.components,
            self.run.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ draw,
        )
    }

    /// The start (step 0) and every saved checkpoint, evaluated.
    fn curve(&self, ck: &Path) -> anyhow::Result<Vec<EvalPoint>> {
        let mut points: Vec<(u64, PathBuf)> = vec![(0, self.run.start.to_path_buf())];
        points.extend(
            step_folders(ck)?
                .into_iter()
                .map(|(s, p)| (s, p.join("policy.bpk"))),
        );
        let mut curve = Vec::with_capacity(points.len());
        for (step, file) in &points {
            let point = self.point(*step, file, FIRST_DRAW)?;
            eprintln!(
                "   step {step:>5}: held-out panel {:.3} (adherence {:.3}, quality {:.3}, appeal {:.3}), train reward {:.4}, KL {:.3}, length {:.1}, distinct-4 {:.3}, copied {:.1}",
                point.judge_overall,
                point.judge_adherence,
                point.judge_quality,
                point.judge_appeal,
                point.train_reward,
                point.kl,
                point.mean_length,
                point.distinct_4,
                point.copy_mean
            );
            curve.push(point);
        }
        Ok(curve)
    }

    /// The checkpoint to keep, by the held-out score and the over-optimisation rule. A close
    /// choice is looked at again: every candidate within one standard error of the lead (the
    /// chosen one included) is evaluated on a second draw of the held-out samples, the two
    /// draws are pooled, and the choice is made again on the pooled scores.
    fn choose(
        &self,
        ck: &Path,
        curve: &[EvalPoint],
    ) -> anyhow::Result<(Selection, Vec<EvalPoint>)> {
        let e = &self.run.base.experiment;
        // Candidates are the trained checkpoints; the start is the curve's origin.
        let mut trained: Vec<Point> = curve[1..].iter().map(candidate).collect();
        let rule = Rule {
            patience: e.patience,
            min_delta: e.min_delta,
            standard_errors: e.fall_standard_errors,
        };
        let selection = select(&trained, &rule).context("the run saved no checkpoint to choose")?;
        if !selection.close() || selection.fired.is_some() {
            return Ok((selection, Vec::new()));
        }
        let lead = trained[selection.best];
        let close: Vec<usize> = (0..trained.len())
            .filter(|&i| {
                let se = (lead.held_out_se.powi(2) + trained[i].held_out_se.powi(2)).sqrt();
                trained[i].held_out.is_finite() && lead.held_out - trained[i].held_out <= se
            })
            .collect();
        eprintln!(
            "   close choice (step {} leads by {:.4} ± {:.4}): a second draw for steps {:?}",
            selection.best_step,
            selection.margin.unwrap_or(f64::NAN),
            selection.margin_se.unwrap_or(f64::NAN),
            close.iter().map(|&i| trained[i].step).collect::<Vec<_>>()
        );
        let mut second_draws = Vec::new();
        for i in close {
            let step = trained[i].step;
            let file = ck.join(format!("step-{step:08}")).join("policy.bpk");
            let mut again = self.point(step, &file, SECOND_DRAW)?;
            again.draw = 1;
            let p = &mut trained[i];
            pool(p, &candidate(&again));
            eprintln!(
                "   step {step:>5}, second draw: held-out panel {:.3}; pooled {:.3} ± {:.3}",
                again.judge_overall, p.held_out, p.held_out_se
            );
            second_draws.push(again);
        }
        let selection = select(&trained, &rule).context("the run saved no checkpoint to choose")?;
        Ok((selection, second_draws))
    }
}

/// A checkpoint as a selection candidate (an unmeasured standard error counts as 0).
fn candidate(p: &EvalPoint) -> Point {
    let finite = |x: f64| if x.is_finite() { x } else { 0.0 };
    Point {
        step: p.step,
        held_out: p.judge_overall,
        held_out_se: finite(p.judge_overall_se),
        train_reward: p.train_reward,
        train_reward_se: finite(p.train_reward_se),
    }
}

/// Two draws of one checkpoint pooled: the means averaged, the standard errors of the mean.
fn pool(p: &mut Point, again: &Point) {
    p.held_out = 0.5 * (p.held_out + again.held_out);
    p.held_out_se = 0.5 * (p.held_out_se.powi(2) + again.held_out_se.powi(2)).sqrt();
    p.train_reward = 0.5 * (p.train_reward + again.train_reward);
    p.train_reward_se = 0.5 * (p.train_reward_se.powi(2) + again.train_reward_se.powi(2)).sqrt();
}

/// Pins the chosen checkpoint (with the reason) and removes the other step folders but the
/// last: they were evaluated and are not needed. Returns the chosen folder.
fn pin_and_prune(ck: &Path, selection: &Selection) -> anyhow::Result<PathBuf> {
    let chosen_dir = ck.join(format!("step-{:08}", selection.best_step));
    let reason = match &selection.fired {
        Some(f) => f.reason.clone(),
        None => format!(
            "the best held-out panel score ({:.4}) of the run's checkpoints{}",
            selection.best_held_out,
            match (
                selection.runner_up_step,
                selection.margin,
                selection.margin_se
            ) {
                (Some(r), Some(m), Some(se)) => format!(
                    ", ahead of step {r} by {m:.4} ± {se:.4}{}",
                    if selection.close() { " (close)" } else { "" }
                ),
                _ => String::new(),
            }
        ),
    };
    checkpoint::pin(&chosen_dir, &reason)?;
    eprintln!("   chose step {}: {reason}", selection.best_step);
    let latest = checkpoint::latest(ck);
    for (_, folder) in step_folders(ck)? {
        if !checkpoint::is_pinned(&folder) && Some(&folder) != latest.as_ref() {
            std::fs::remove_dir_all(&folder)
                .with_context(|| format!("removing {}", folder.display()))?;
        }
    }
    Ok(chosen_dir)
}

/// The held-out curve as `curve.jsonl`, and in the same TensorBoard run and MLflow run as the
/// learner's steps.
fn record_curve(
    c: &Config,
    dir: &Path,
    record: &RunRecord,
    summary: &crate::local::Summary,
) -> anyhow::Result<()> {
    let mut lines = String::new();
    for p in &record.curve {
        lines.push_str(&serde_json::to_string(p)?);
        lines.push('\n');
    }
    musicrl_config::fsutil::write_atomic(&dir.join("curve.jsonl"), lines.as_bytes())?;
    let mut points = Vec::with_capacity(record.curve.len());
    for p in &record.curve {
        let value = serde_json::to_value(p)?;
        let scalars: Vec<(String, f32)> =
            musicrl_tracking::tensorboard::scalars_of(&value, &["step", "clips", "draw"])
                .into_iter()
                .map(|(k, v)| (format!("held_out/{k}"), v))
                .collect();
        points.push((p.step as i64, scalars));
    }
    if !c.tracking.tensorboard.as_os_str().is_empty() {
        let run = c.tracking.run_name(&c.run, &dir.join("history.jsonl"));
        let mut board =
            musicrl_tracking::tensorboard::EventWriter::create(&c.tracking.tensorboard.join(run))?;
        let (_, now) = musicrl_config::fsutil::wall_clock(std::time::SystemTime::now());
        for (step, scalars) in &points {
            board.scalars(*step, now, scalars)?;
        }
        board.flush()?;
    }
    if let (false, Some(id)) = (c.tracking.mlflow.is_empty(), &summary.mlflow_run_id) {
        let logged =
            musicrl_tracking::mlflow::MlflowRun::resume(&c.tracking.mlflow, id).and_then(|run| {
                points
                    .iter()
                    .try_for_each(|(step, scalars)| run.log_metrics(*step, scalars))
            });
        if let Err(e) = logged {
            eprintln!("warning: the held-out curve did not reach MLflow: {e}");
        }
    }
    Ok(())
}

/// `musicrl experiment`.
pub fn run(
    mut config: Config,
    args: &ExperimentPlan,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<Results> {
    let started = Instant::now();
    if args.quick {
        apply_quick(&mut config);
    }
    args.apply(&mut config);
    config.validate()?;
    let e = config.experiment.clone();
    let out = e.out.clone();
    crate::process::replace_output_folder(&out, MARKER, "musicrl experiment")?;
    write_json(&out.join("plan.json"), &e)?;

    let theta0 = theta0(&config, &out)?;
    let mut prompts =
        load_prompts(&e.eval_prompts).context("the held-out prompts (experiment.eval_prompts)")?;
    if e.eval_prompt_count > 0 {
        prompts.truncate(e.eval_prompt_count);
    }
    let recipe_components: Vec<Vec<ComponentConfig>> = e
        .recipes
        .iter()
        .map(|r| recipe_config(&config, &r.config).map(|c| c.reward.components))
        .collect::<anyhow::Result<_>>()?;
    let (_, tunes) = crate::reward_training::load_corpus(&config, None)?;
    let train: Vec<&musicrl_music::corpus::Tune> = tunes
        .iter()
        .filter(|t| t.split == musicrl_music::corpus::Split::Train)
        .collect();
    let evaluator = Evaluator::new(&config, prompts.clone(), &recipe_components, &train)?;
    let (tunes_indexed, notes_indexed) = evaluator.copy_index_size();
    eprintln!(
        "musicrl experiment: {} recipes × {} runs, held-out evaluation every {} steps on {} prompts × {} (components {}), copy index of {tunes_indexed} training tunes ({notes_indexed} notes); output in {}",
        e.recipes.len(),
        e.runs,
        e.eval_every,
        prompts.len(),
        e.eval_samples_per_prompt,
        evaluator.component_names().join(", "),
        out.display()
    );

    let seeds: Vec<u64> = (0..e.runs as u64).map(|k| e.first_seed + k).collect();
    let judge_prompts =
        load_prompts(&e.judge_prompts).context("the judge's prompts (experiment.judge_prompts)")?;
    let judge_prompts: Vec<String> = if args.quick {
        judge_prompts
            .into_iter()
            .take(e.eval_prompt_count)
            .collect()
    } else {
        judge_prompts
    };
    let panel = Panel::new(PanelConfig::default()).map_err(anyhow::Error::msg)?;
    let mut runs: Vec<RunRecord> = Vec::new();
    let mut judged: Vec<Report> = Vec::new();
    for &seed in &seeds {
        let mut chosen: BTreeMap<String, PathBuf> = BTreeMap::new();
        for recipe in &e.recipes {
            let (start, anchored) = if recipe.start == START_THETA0 {
                (theta0.clone(), false)
            } else {
                let from = chosen.get(&recipe.start).with_context(|| {
                    format!(
                        "{} starts from {}, which has no run",
                        recipe.name, recipe.start
                    )
                })?;
                (from.clone(), true)
            };
            let record = RecipeRun {
                runtime,
                base: &config,
                recipe,
                seed,
                start: &start,
                anchored,
                evaluator: &evaluator,
                out: &out,
                quick: args.quick,
            }
            .run()?;
            chosen.insert(recipe.name.clone(), record.chosen.clone());
            runs.push(record);
        }
        // The panel's side-by-side verdict on this seed's chosen models and θ0.
        eprintln!(
            "== judging seed {seed}: θ0 and {} chosen models",
            e.recipes.len()
        );
        let mut named: Vec<(String, PathBuf)> = e
            .recipes
            .iter()
            .map(|r| (model_name(&r.name, seed), chosen[&r.name].clone()))
            .collect();
        named.push((model_name(START_THETA0, seed), theta0.clone()));
        let models = sample_models(
            &config,
            &named,
            &judge_prompts,
            e.judge_pairs_per_prompt,
            seed,
        )?;
        let report = musicrl_judge::compare(&panel, &models)?;
        eprint!("{}", report.table());
        write_samples(&out.join("samples"), &models, None)?;
        write_json(
            &out.join("judge").join(format!("seed-{seed}.json")),
            &report,
        )?;
        judged.push(report);
    }
    let names: Vec<String> = e.recipes.iter().map(|r| r.name.clone()).collect();
    let table = aggregate(&names, &seeds, &judged);
    let scores = recipe_scores(&names, &seeds, &judged);
    let results = Results {
        plan: e,
        quick: args.quick,
        theta0,
        seeds,
        runs,
        table,
        scores,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    write_json(&out.join("results.json"), &results)?;
    let page = report::write_experiment(&out, &results)?;
    eprintln!("{}", report::table_text(&results));
    eprintln!("report: {}", page.display());
    Ok(results)
}
