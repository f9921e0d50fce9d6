//! `musicrl feedback loop`: the unattended on-policy cycle, and its comparison with
//! off-policy collection at the same budget (issue 13; the paper's open problem of
//! on-policy data, docs/method.md §6).
//!
//! An *arm* runs `rounds` rounds. Each round
//! 1. serves pairs of the arm's current policy from a feedback service on loopback (the real
//!    service, its own SQLite database, clips scored by the arm's current preference model),
//! 2. has the simulated listeners vote through its HTTP API (the bot client, two at a time),
//! 3. retrains the preference model on that round's votes only (`train-reward preference
//!    --db … --after-version PREV --continue-from PREV`; the first round starts from θ0's
//!    trunk), and
//! 4. continues RL on the new model (`musicrl local --resume`, the preference reward alone,
//!    KL against θ0) to the round's share of the steps.
//!
//! The off-policy arm is the same loop with one round: every vote on θ0's pairs, as the paper
//! collected them. Both arms spend the same votes and the same RL steps. Then, for each arm's
//! final policy, the listeners' hidden taste (`preferences evaluate`: the truth the votes
//! come from, on held-out test-split captions) and the rater panel (`musicrl judge`, which
//! shares no code with any reward) give their verdicts against θ0 and against each other,
//! and a probe of fresh votes on the final policy's own pairs (never trained on) measures how
//! often each arm's last reward model still agrees with the listeners where its policy went.
//!
//! Orchestration only: every step is the command a user would run.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Serialize;

use musicrl_config::ComponentConfig;
use musicrl_config::Config;
use musicrl_judge::{Panel, PanelConfig};
use musicrl_prefdb::{Db, VoteFilter};

use crate::feedback::{BotReport, bot};
use crate::judging::{sample_models, write_samples};
use crate::plan::{BotPlan, EvaluatePlan, LocalPlan, LoopPlan, RewardKind, TrainRewardPlan};
use crate::process::write_json;

/// Marks a folder as written by `musicrl feedback loop`, so a rerun may replace it.
const MARKER: &str = ".musicrl-feedback-loop";

/// One round of one arm.
#[derive(Debug, Clone, Serialize)]
pub struct RoundRecord {
    pub round: usize,
    /// The policy whose pairs were voted on, and its learner step (0 = θ0).
    pub policy: PathBuf,
    pub policy_step: u64,
    pub votes: usize,
    pub votes_a: usize,
    pub vote_seconds: f64,
    /// How often the reward model the policy was trained on (the previous round's) ranks
    /// this round's pairs as the listeners did (NaN in the first round: there is none yet).
    pub previous_model_agreement: f64,
    /// The preference model trained in this round, its parent and held-out accuracy (every
    /// tenth of this round's votes).
    pub model: PathBuf,
    pub model_version: String,
    pub model_parent: Option<String>,
    pub model_accuracy: f64,
    pub train_seconds: f64,
    /// RL in this round: the learner steps reached and the training reward's first/last 10%.
    pub steps_to: u64,
    pub reward_first: f32,
    pub reward_last: f32,
    pub kl_last: f32,
    pub rl_seconds: f64,
}

/// One arm: its rounds and its final policy.
#[derive(Debug, Clone, Serialize)]
pub struct ArmRecord {
    pub name: String,
    pub seed: u64,
    pub rounds: Vec<RoundRecord>,
    pub db: String,
    pub final_policy: PathBuf,
    pub final_model: PathBuf,
    /// Fresh votes on the final policy's own pairs (a separate database, trained on by
    /// nothing) and how often the arm's last reward model ranks them as the listeners did.
    pub probe_votes: usize,
    pub probe_agreement: f64,
}

/// A listeners' verdict (`preferences evaluate`) of `a` against `b`.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub a: String,
    pub b: String,
    pub seed: u64,
    pub pairs: u64,
    pub win_rate: f64,
    pub standard_error: f64,
    /// The listeners' expected win rate (their choice probabilities, averaged: no sampling
    /// noise from the coin flips).
    pub expected_win_rate: f64,
}

/// `OUT/results.json`.
#[derive(Debug, Clone, Serialize)]
pub struct LoopResults {
    pub votes: usize,
    pub steps: u64,
    pub rounds: usize,
    pub epochs: usize,
    pub quick: bool,
    pub theta0: PathBuf,
    pub population: PathBuf,
    pub arms: Vec<ArmRecord>,
    pub listeners: Vec<Verdict>,
    /// The rater panel's reports, one a seed (models named `ARM-SEED` and `theta0-SEED`).
    pub panel: Vec<musicrl_judge::Report>,
    pub wall_seconds: f64,
}

/// `n` split into `k` nearly equal parts, larger ones first; part `i`.
fn share(n: u64, k: usize, i: usize) -> u64 {
    let k = k as u64;
    let i = i as u64;
    n / k + u64::from(i < n % k)
}

/// The preference reward alone, from `model`.
fn preference_reward(model: &Path) -> Vec<ComponentConfig> {
    vec![ComponentConfig {
        kind: "preference".into(),
        weight: 1.0,
        checkpoint: model.to_path_buf(),
        ..ComponentConfig::default()
    }]
}

/// Serves `policy`'s pairs from a feedback service on loopback over `db` (clips scored by
/// `model` when there is one) and has the population vote `votes` times, two bots at once.
#[allow(clippy::too_many_arguments)]
async fn collect_votes(
    config: &Config,
    policy: &Path,
    model: Option<&Path>,
    db: &str,
    cache: &Path,
    votes: usize,
    population: &Path,
    seed: u64,
) -> anyhow::Result<BotReport> {
    let mut c = config.clone();
    {
        let f = &mut c.feedback;
        f.db = db.to_string();
        f.source = "policy".into();
        f.policy = policy.to_path_buf();
        f.prompts = config.actor.prompts.clone();
        f.clip_cache = cache.to_path_buf();
        f.seed = seed;
        // The bots report listening the way the page does; the minimum stays in force, at a
        // length a bot can meet without sleeping through it.
        f.min_listen_seconds = 0.05;
        f.votes_per_minute = 1_000_000;
        f.pairs_per_minute = 1_000_000;
        f.votes_per_rater_per_day = u32::MAX;
        f.score_clips = model.is_some();
    }
    // The simulated listeners are the bot with its token: channel `bot`, and the many raters
    // behind one address are not held to the per-address limits.
    std::fs::create_dir_all(cache)?;
    let token_file = cache.join("bot.token");
    let token = format!(
        "{:032x}{:032x}",
        rand::random::<u128>(),
        rand::random::<u128>()
    );
    musicrl_config::fsutil::write_atomic(&token_file, token.as_bytes())?;
    c.feedback.bot_token_file = token_file.clone();
    if let Some(m) = model {
        c.reward.components = preference_reward(m);
    }
    let state = musicrl_feedback::state_from_config(&c).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(musicrl_feedback::serve(
        listener,
        state,
        c.feedback.max_body_bytes,
        async move {
            let _ = stopped.await;
        },
    ));
    let halves = [votes.div_ceil(2), votes / 2];
    let bots = halves
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, &n)| {
            let args = BotPlan {
                url: url.clone(),
                votes: n,
                population: population.to_path_buf(),
                listen_seconds: 0.05,
                seed: seed.wrapping_mul(31).wrapping_add(i as u64),
                token_file: Some(token_file.clone()),
            };
            async move { bot(&args).await }
        });
    let reports = futures::future::join_all(bots).await;
    let _ = stop.send(());
    server.await.context("the feedback service task")??;
    let mut total = BotReport {
        votes: 0,
        a: 0,
        b: 0,
        listeners: 0,
        first_vote: i64::MAX,
        last_vote: 0,
    };
    for r in reports {
        let r = r?;
        total.votes += r.votes;
        total.a += r.a;
        total.b += r.b;
        total.listeners = r.listeners;
        total.first_vote = total.first_vote.min(r.first_vote);
        total.last_vote = total.last_vote.max(r.last_vote);
    }
    Ok(total)
}

/// How often the stored `preference` scores of a vote's clips rank them as the listener did,
/// over the decisive votes after `after_vote_id` (NaN without scored votes).
async fn agreement(db: &str, after_vote_id: Option<i64>) -> anyhow::Result<f64> {
    let db = Db::open(db).await?;
    let votes = db
        .decisive_votes(VoteFilter {
            since_ms: None,
            after_vote_id,
            include_flagged: false,
        })
        .await?;
    db.close().await;
    let (mut agree, mut n) = (0usize, 0usize);
    for v in &votes {
        if let (Some(a), Some(b)) = (v.a.scores.get("preference"), v.b.scores.get("preference")) {
            n += 1;
            agree += usize::from((a > b) == v.a_won);
        }
    }
    Ok(if n == 0 {
        f64::NAN
    } else {
        agree as f64 / n as f64
    })
}

struct Plan<'a> {
    config: &'a Config,
    args: &'a LoopPlan,
    theta0: &'a Path,
    population: &'a Path,
    runtime: &'a tokio::runtime::Runtime,
}

/// Runs one arm of `rounds` rounds in `dir`.
fn run_arm(
    plan: &Plan,
    name: &str,
    rounds: usize,
    seed: u64,
    dir: &Path,
) -> anyhow::Result<ArmRecord> {
    let (config, args) = (plan.config, plan.args);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let db = format!("sqlite:{}", dir.join("prefs.db").display());
    let rl_dir = dir.join("rl");
    let mut policy = plan.theta0.to_path_buf();
    let mut policy_step = 0u64;
    let mut model: Option<(PathBuf, String)> = None;
    let mut records = Vec::with_capacity(rounds);
    let mut steps_to = 0u64;
    let mut votes_before = 0i64;
    for round in 0..rounds {
        let votes = share(args.votes as u64, rounds, round) as usize;
        let steps = share(args.steps, rounds, round);
        eprintln!(
            "== {name} (seed {seed}), round {} of {rounds}: {votes} votes on {} (step {policy_step}), then RL to step {}",
            round + 1,
            policy.display(),
            steps_to + steps
        );
        // 1–2. Pairs of the current policy, voted on through the API.
        let t = Instant::now();
        let report = plan.runtime.block_on(collect_votes(
            config,
            &policy,
            model.as_ref().map(|(p, _)| p.as_path()),
            &db,
            &dir.join("clips"),
            votes,
            plan.population,
            seed.wrapping_mul(1000).wrapping_add(round as u64),
        ))?;
        let vote_seconds = t.elapsed().as_secs_f64();
        let previous_model_agreement = plan.runtime.block_on(agreement(&db, Some(votes_before)))?;
        eprintln!(
            "   {} votes in {vote_seconds:.0} s ({} for the left clip); the policy's reward model agreed with {:.3} of them",
            report.votes, report.a, previous_model_agreement
        );
        votes_before = report.last_vote;

        // 3. Retrain on this round's votes, continuing from the last model.
        let out = dir.join("reward").join(format!("round-{}", round + 1));
        let mut c = config.clone();
        c.learner.init_policy = plan.theta0.to_path_buf();
        let train = TrainRewardPlan {
            kind: RewardKind::Preference,
            corpus: None,
            out: Some(out.clone()),
            tunes: None,
            epochs: Some(args.epochs),
            eval: None,
            max_tokens: None,
            ratings: None,
            ratings_only: false,
            store: None,
            caption_free: false,
            db: Some(db.clone()),
            since_ms: None,
            after_version: model.as_ref().map(|(_, v)| v.clone()),
            continue_from: model.as_ref().map(|(p, _)| p.clone()),
            seed: Some(seed.wrapping_mul(7).wrapping_add(round as u64)),
            on_policy_clips: 0,
            on_policy_samples: Vec::new(),
        };
        let metrics = crate::reward_training::train_reward(c, &train)
            .with_context(|| format!("retraining the preference model into {}", out.display()))?;
        let version = metrics["version"]
            .as_str()
            .context("the trained model names no version")?
            .to_string();
        let parent = model.as_ref().map(|(_, v)| v.clone());
        model = Some((out.clone(), version.clone()));

        // 4. Continue RL on it.
        let mut c = config.clone();
        c.reward.components = preference_reward(&out);
        c.learner.init_policy = plan.theta0.to_path_buf();
        c.learner.reference_policy = PathBuf::new();
        c.learner.seed = seed;
        c.actor.seed = seed.wrapping_mul(100).wrapping_add(round as u64);
        c.learner.keep_checkpoints = 0;
        c.local.out = rl_dir.clone();
        c.local.steps = steps_to + steps;
        c.local.metrics = false;
        let t = Instant::now();
        let summary = plan
            .runtime
            .block_on(crate::local::run(
                c,
                LocalPlan {
                    resume: round > 0,
                    overwrite: round == 0,
                    ..LocalPlan::default()
                },
            ))
            .with_context(|| {
                format!(
                    "RL in round {} of {name}; logs in {}",
                    round + 1,
                    rl_dir.join("logs").display()
                )
            })?;
        if !summary.completed {
            bail!(
                "RL in round {} of {name} stopped at step {}; logs in {}",
                round + 1,
                summary.steps,
                rl_dir.join("logs").display()
            );
        }
        steps_to = summary.steps;
        let ck = musicrl_learner::checkpoint::latest(&rl_dir.join("checkpoints"))
            .context("the RL run saved no checkpoint")?;
        records.push(RoundRecord {
            round: round + 1,
            policy: policy.clone(),
            policy_step,
            votes: report.votes,
            votes_a: report.a,
            vote_seconds,
            previous_model_agreement,
            model: out,
            model_version: version,
            model_parent: parent,
            model_accuracy: metrics["accuracy"].as_f64().unwrap_or(f64::NAN),
            train_seconds: metrics["train_seconds"].as_f64().unwrap_or(f64::NAN),
            steps_to,
            reward_first: summary.reward_mean_first,
            reward_last: summary.reward_mean_last,
            kl_last: summary.kl_last,
            rl_seconds: t.elapsed().as_secs_f64(),
        });
        policy = ck.join("policy.bpk");
        policy_step = steps_to;
    }
    let (final_model, _) = model.context("an arm has at least one round")?;

    // The probe: fresh votes on the final policy's pairs, scored by the last model.
    let (probe_votes, probe_agreement) = if args.probe_votes > 0 {
        let probe_db = format!("sqlite:{}", dir.join("probe.db").display());
        let report = plan.runtime.block_on(collect_votes(
            config,
            &policy,
            Some(&final_model),
            &probe_db,
            &dir.join("clips"),
            args.probe_votes,
            plan.population,
            seed.wrapping_mul(1000).wrapping_add(999),
        ))?;
        let a = plan.runtime.block_on(agreement(&probe_db, None))?;
        eprintln!(
            "   probe: {} fresh votes on the final policy's pairs; its reward model agrees with {a:.3}",
            report.votes
        );
        (report.votes, a)
    } else {
        (0, f64::NAN)
    };
    Ok(ArmRecord {
        name: name.to_string(),
        seed,
        rounds: records,
        db,
        final_policy: policy,
        final_model,
        probe_votes,
        probe_agreement,
    })
}

fn verdict(
    plan: &Plan,
    (a_name, a): (&str, &Path),
    (b_name, b): (&str, &Path),
    seed: u64,
    eval_seed: u64,
) -> anyhow::Result<Verdict> {
    let v = crate::reward_training::evaluate(
        plan.config.clone(),
        &EvaluatePlan {
            policy: a.to_path_buf(),
            baseline: Some(b.to_path_buf()),
            population: plan.population.to_path_buf(),
            prompts: plan.args.prompts,
            pairs_per_prompt: plan.args.pairs_per_prompt,
            corpus: None,
            seed: eval_seed,
        },
    )?;
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    Ok(Verdict {
        a: a_name.to_string(),
        b: b_name.to_string(),
        seed,
        pairs: v["pairs"].as_u64().unwrap_or(0),
        win_rate: f("win_rate"),
        standard_error: f("standard_error"),
        expected_win_rate: f("expected_win_rate"),
    })
}

/// The quick pipeline's sizes.
fn apply_quick(args: &mut LoopPlan) {
    args.votes = 24;
    args.steps = 4;
    args.rounds = 2;
    args.epochs = 1;
    args.runs = 1;
    args.prompts = 4;
    args.pairs_per_prompt = 2;
    args.judge_pairs_per_prompt = 1;
    args.probe_votes = 8;
}

/// `musicrl feedback loop`.
pub fn run(
    config: Config,
    args: &LoopPlan,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<LoopResults> {
    let started = Instant::now();
    let mut args = args.clone();
    if args.quick {
        apply_quick(&mut args);
    }
    if args.rounds < 2 {
        bail!("--rounds must be at least 2 (one round is the off-policy arm, run beside it)");
    }
    if (args.votes as u64) < args.rounds as u64 * 10 || args.steps < args.rounds as u64 {
        bail!(
            "--votes must be at least 10 a round and --steps at least 1 a round ({} rounds)",
            args.rounds
        );
    }
    if args.runs == 0 || args.prompts == 0 || args.pairs_per_prompt == 0 {
        bail!("--runs, --prompts and --pairs-per-prompt must be at least 1");
    }
    config.validate()?;
    let population = musicrl_config::paths::resolve(&args.population);
    musicrl_rewards::preference::Population::load(&population)
        .with_context(|| format!("the listener population {}", population.display()))?;
    crate::process::replace_output_folder(&args.out, MARKER, "musicrl feedback loop")?;
    write_json(&args.out.join("plan.json"), &args)?;
    let theta0 = crate::experiment::theta0(&config, &args.out)?;
    let plan = Plan {
        config: &config,
        args: &args,
        theta0: &theta0,
        population: &population,
        runtime,
    };
    eprintln!(
        "musicrl feedback loop: {} votes and {} RL steps an arm; on-policy in {} rounds against off-policy in one; {} seed(s); output in {}",
        args.votes,
        args.steps,
        args.rounds,
        args.runs,
        args.out.display()
    );
    let judge_prompts = musicrl_common::prompts::load_prompts(&config.experiment.judge_prompts)
        .context("the panel's prompts (experiment.judge_prompts)")?;
    let judge_prompts: Vec<String> = if args.quick {
        judge_prompts.into_iter().take(args.prompts).collect()
    } else {
        judge_prompts
    };
    let panel = Panel::new(PanelConfig::default()).map_err(anyhow::Error::msg)?;
    let mut arms = Vec::new();
    let mut listeners = Vec::new();
    let mut panels = Vec::new();
    for seed in (0..args.runs as u64).map(|k| args.first_seed + k) {
        let dir = args.out.join(format!("seed-{seed}"));
        let on = run_arm(
            &plan,
            "on-policy",
            args.rounds,
            seed,
            &dir.join("on-policy"),
        )?;
        let off = run_arm(&plan, "off-policy", 1, seed, &dir.join("off-policy"))?;
        eprintln!("== judging seed {seed}: the listeners' hidden taste on held-out prompts");
        let eval_seed = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x10_0b;
        for (a, b) in [
            (("on-policy", &on.final_policy), ("theta0", &theta0)),
            (("off-policy", &off.final_policy), ("theta0", &theta0)),
            (
                ("on-policy", &on.final_policy),
                ("off-policy", &off.final_policy),
            ),
        ] {
            listeners.push(verdict(&plan, (a.0, a.1), (b.0, b.1), seed, eval_seed)?);
        }
        if args.judge_pairs_per_prompt > 0 {
            eprintln!("== judging seed {seed}: the rater panel");
            let named = [
                (format!("on-policy-{seed}"), on.final_policy.clone()),
                (format!("off-policy-{seed}"), off.final_policy.clone()),
                (format!("theta0-{seed}"), theta0.clone()),
            ];
            let models = sample_models(
                &config,
                &named,
                &judge_prompts,
                args.judge_pairs_per_prompt,
                seed,
            )?;
            let report = musicrl_judge::compare(&panel, &models)?;
            eprint!("{}", report.table());
            write_samples(&args.out.join("samples"), &models, None)?;
            panels.push(report);
        }
        arms.push(on);
        arms.push(off);
        // What is done so far, in case a later seed fails or the run is stopped.
        write_json(
            &args.out.join("results.partial.json"),
            &serde_json::json!({"arms": &arms, "listeners": &listeners, "panel": &panels}),
        )?;
    }
    let results = LoopResults {
        votes: args.votes,
        steps: args.steps,
        rounds: args.rounds,
        epochs: args.epochs,
        quick: args.quick,
        theta0,
        population,
        arms,
        listeners,
        panel: panels,
        wall_seconds: started.elapsed().as_secs_f64(),
    };
    write_json(&args.out.join("results.json"), &results)?;
    let _ = std::fs::remove_file(args.out.join("results.partial.json"));
    eprint!("{}", table(&results));
    Ok(results)
}

/// The comparison as text: the listeners' verdicts and the reward models' agreement.
pub fn table(r: &LoopResults) -> String {
    let mut s =
        String::from("\nthe listeners' verdict (held-out prompts; win rate ± se, expected):\n");
    for v in &r.listeners {
        s.push_str(&format!(
            "  seed {} {:>10} vs {:<10} {:.3} ± {:.3} (expected {:.3}) over {} pairs\n",
            v.seed, v.a, v.b, v.win_rate, v.standard_error, v.expected_win_rate, v.pairs
        ));
    }
    s.push_str("reward models, per round: how often the model the policy was trained on agreed with the votes on its pairs, and the new model's held-out accuracy; last, the final model on fresh pairs of the final policy:\n");
    for a in &r.arms {
        let rounds: Vec<String> = a
            .rounds
            .iter()
            .map(|x| {
                format!(
                    "round {} (step {}) agreed {:.3}, new acc {:.3}",
                    x.round, x.policy_step, x.previous_model_agreement, x.model_accuracy
                )
            })
            .collect();
        s.push_str(&format!(
            "  seed {} {:>10}: {}; probe {:.3}\n",
            a.seed,
            a.name,
            rounds.join(", "),
            a.probe_agreement
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_differ_by_at_most_one() {
        for (n, k) in [(100u64, 3usize), (6000, 3), (7, 2), (4, 4), (24, 1)] {
            let parts: Vec<u64> = (0..k).map(|i| share(n, k, i)).collect();
            assert_eq!(parts.iter().sum::<u64>(), n, "{n} in {k}");
            assert!(parts.iter().max().unwrap() - parts.iter().min().unwrap() <= 1);
        }
        assert_eq!(share(100, 3, 0), 34);
        assert_eq!(share(100, 3, 2), 33);
    }
}
