//! `musicrl train-reward`.

use std::path::PathBuf;

use anyhow::Context;

use musicrl_config::Config;
use musicrl_rewards::{quality, text};

use musicrl_policy::melody::params::load_policy;
use musicrl_policy::melody::sampling::Sampler;
use musicrl_rewards::preference::{self, Population};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::plan::{CalibratePlan, EvaluatePlan, RewardKind, SimulatePlan, TrainRewardPlan};
use crate::progress::{EpochBar, Progress};

struct Bar(EpochBar);

impl text::Progress for Bar {
    fn stage(&mut self, what: &str) {
        eprintln!("{what}");
    }
    fn epoch_started(&mut self, epoch: usize, batches: usize) {
        self.0.epoch_started(epoch, batches);
    }
    fn batch_done(&mut self, loss: f64) {
        self.0.batch_done(loss);
    }
    fn epoch_done(&mut self, epoch: usize, loss: f64) {
        self.0.epoch_done();
        eprintln!("epoch {epoch}: train loss {loss:.4}");
    }
}

/// Trains the requested reward model; returns its metrics as JSON.
pub fn train_reward(config: Config, args: &TrainRewardPlan) -> anyhow::Result<serde_json::Value> {
    let started = std::time::Instant::now();
    let max_tokens = args.max_tokens.unwrap_or(config.policy.max_tokens);
    let kind_name = match args.kind {
        RewardKind::Text => "text",
        RewardKind::Quality => "quality",
        RewardKind::Preference => {
            if args.caption_free {
                "preference-caption-free"
            } else {
                "preference"
            }
        }
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs/rewards").join(kind_name));
    let mut progress = Bar(EpochBar::default());
    let metrics = match args.kind {
        RewardKind::Text => {
            if args.ratings.is_some() {
                anyhow::bail!("--ratings applies to the quality model only");
            }
            let tunes = load_corpus(&config, args.corpus.as_deref())?.1;
            let mut c = text::TextConfig {
                model: text::TextModelConfig::default(),
                train: text::TextTrainConfig::default(),
            };
            let t = &mut c.train;
            t.max_tokens = max_tokens;
            set(&mut t.tunes, args.tunes);
            set(&mut t.epochs, args.epochs);
            set(&mut t.eval_pairs, args.eval);
            set(&mut t.seed, args.seed);
            eprintln!("training the text-adherence model into {}", out.display());
            let (_, m) = text::train(&c, &tunes, &out, &mut progress)?;
            eprintln!(
                "held out: recall@1 {:.3} (chance {:.3}), recall@5 {:.3}; right vs wrong (chance 0.5) key {:.3}, mode {:.3}, meter {:.3}, tune type {:.3}, instrument {:.3}; wrote {}",
                m.recall_at_1,
                m.chance_recall_at_1,
                m.recall_at_5,
                m.key_accuracy,
                m.mode_accuracy,
                m.meter_accuracy,
                m.tune_type_accuracy,
                m.instrument_accuracy,
                out.display()
            );
            serde_json::to_value(&m)?
        }
        RewardKind::Preference => train_preference(&config, args, &out, &mut progress)?,
        RewardKind::Quality => {
            let tunes = load_corpus(&config, args.corpus.as_deref())?.1;
            let mut c = quality::QualityConfig {
                model: quality::QualityModelConfig::default(),
                train: quality::QualityTrainConfig::default(),
            };
            let t = &mut c.train;
            t.max_tokens = max_tokens;
            t.ratings = args.ratings.clone();
            t.ratings_only = args.ratings_only;
            set(&mut t.tunes, args.tunes);
            set(&mut t.epochs, args.epochs);
            set(&mut t.eval_clips, args.eval);
            set(&mut t.seed, args.seed);
            eprintln!("training the quality model into {}", out.display());
            let (_, m) = quality::train(&c, &tunes, &out, &mut progress)?;
            eprintln!(
                "held out: Spearman {:.3} over {} clips; mean predicted MOS clean {:.2}, degraded {:.2}; wrote {}",
                m.spearman,
                m.eval_clips,
                m.mean_mos_clean,
                m.mean_mos_degraded,
                out.display()
            );
            serde_json::to_value(&m)?
        }
    };
    let mut metrics = metrics;
    if matches!(args.kind, RewardKind::Text | RewardKind::Quality) {
        let on_policy = on_policy_concordance(&config, kind_name, &out, args)?;
        if !on_policy.is_null() {
            metrics["on_policy"] = on_policy;
        }
    }
    // How long the training took, kept with the model (the reward server exports it as
    // musicrl_reward_model_train_seconds: the retrain Job's duration on the dashboard).
    metrics["train_seconds"] = started.elapsed().as_secs_f64().into();
    musicrl_rewards::store::write_metrics(&out, &metrics)?;
    Ok(metrics)
}

/// The judge measures a component of `kind` is meant to hear, headline first.
fn headline_measures(kind: &str) -> &'static [&'static str] {
    match kind {
        "quality" => &["well_formed", "adherence"],
        _ => &["adherence", "key", "meter"],
    }
}

/// The new model's **on-policy concordance** with the rater panel: θ0 samples the selection
/// prompts (`--on-policy-clips` each), exported clips are added (`--on-policy-samples`),
/// and for every pair of clips of one caption that the panel's measures tell apart, the
/// share the model orders the same way (`agreement.rs`). The panel only measures here; it
/// never labels anything the model trains on.
fn on_policy_concordance(
    config: &Config,
    kind: &str,
    out: &std::path::Path,
    args: &TrainRewardPlan,
) -> anyhow::Result<serde_json::Value> {
    if args.on_policy_clips == 0 && args.on_policy_samples.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    let mut by_model: std::collections::BTreeMap<String, Vec<musicrl_judge::Sample>> =
        std::collections::BTreeMap::new();
    if args.on_policy_clips > 0 {
        let prompts = musicrl_common::prompts::load_prompts(&config.experiment.eval_prompts)
            .context("the selection prompts (experiment.eval_prompts)")?;
        let theta0 = config.learner.init_policy.clone();
        let samples = crate::judging::sample_policy(
            config,
            "theta0",
            &theta0,
            &prompts,
            args.on_policy_clips,
            args.seed.unwrap_or(0),
            0,
        )?;
        by_model.insert("theta0".into(), samples);
    }
    for f in &args.on_policy_samples {
        for s in crate::judging::read_samples(f)? {
            by_model.entry(s.model.clone()).or_default().push(s);
        }
    }
    let mut scoring = config.clone();
    scoring.reward.components = vec![musicrl_config::ComponentConfig {
        kind: kind.to_string(),
        name: kind.to_string(),
        checkpoint: out.to_path_buf(),
        ..musicrl_config::ComponentConfig::default()
    }];
    let models: Vec<(String, Vec<musicrl_judge::Sample>)> = by_model.into_iter().collect();
    let clips: usize = models.iter().map(|(_, s)| s.len()).sum();
    let (agreement, _) = crate::agreement::measure(&scoring, &models)?;
    let mut measures = serde_json::Map::new();
    for c in agreement.concordance.iter().filter(|c| c.reward == kind) {
        measures.insert(
            c.measure.clone(),
            serde_json::json!({"pairs": c.pairs, "concordance": c.concordance}),
        );
    }
    let line: Vec<String> = headline_measures(kind)
        .iter()
        .filter_map(|m| {
            let v = measures.get(*m)?;
            Some(format!(
                "{m} {:.3} ({} pairs)",
                v["concordance"].as_f64().unwrap_or(f64::NAN),
                v["pairs"]
            ))
        })
        .collect();
    eprintln!(
        "on the policy's own clips ({clips}, models {}): orders same-caption pairs as the rater panel does (0.5 = deaf): {}",
        models
            .iter()
            .map(|(m, _)| m.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        line.join(", ")
    );
    Ok(serde_json::json!({
        "clips": clips,
        "models": models.iter().map(|(m, s)| serde_json::json!({"model": m, "clips": s.len()})).collect::<Vec<_>>(),
        "prompts": config.experiment.eval_prompts,
        "concordance": measures,
    }))
}

/// A flag given on the command line replaces the configured value.
fn set<T>(slot: &mut T, flag: Option<T>) {
    if let Some(v) = flag {
        *slot = v;
    }
}

/// The corpus at `path` or `pretrain.corpus`.
pub(crate) fn load_corpus(
    config: &Config,
    path: Option<&std::path::Path>,
) -> anyhow::Result<(PathBuf, Vec<musicrl_music::corpus::Tune>)> {
    let corpus = path.map_or_else(
        || config.pretrain.corpus.clone(),
        std::path::Path::to_path_buf,
    );
    let tunes = musicrl_music::corpus::load(&corpus)
        .context("cannot read the corpus (--corpus or pretrain.corpus)")?;
    Ok((corpus, tunes))
}

/// The policy a command samples from: `path` or `learner.init_policy`, its architecture from
/// the `config.toml` beside it.
pub(crate) fn base_policy(
    config: &Config,
    path: Option<&std::path::Path>,
) -> anyhow::Result<(
    musicrl_policy::melody::Policy,
    musicrl_config::PolicyConfig,
    PathBuf,
)> {
    let path = path
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| config.learner.init_policy.clone());
    let mut policy_config = config.policy.clone();
    if let Some(saved) = path
        .parent()
        .map(|d| d.join("config.toml"))
        .filter(|p| p.exists())
    {
        policy_config = Config::from_file(&saved)?.policy;
    }
    let device = musicrl_policy::device::inference_device();
    let policy = load_policy(&path, &policy_config, &device)
        .with_context(|| format!("cannot load the policy {}", path.display()))?;
    Ok((policy, policy_config, path))
}

/// The calibration pairs (`preferences calibrate`), beside a store and its population.
pub const CALIBRATION_PAIRS: &str = "calibration.jsonl";
/// The calibration's report (targets and measured values), beside them.
pub const CALIBRATION_REPORT: &str = "calibration.json";

/// The configured text and quality reward models' scores of `items` (caption, tokens), one
/// list per kind present in `reward.components` ("text", "quality").
pub(crate) fn text_and_quality_scores(
    config: &Config,
    items: &[(&str, &[u32])],
) -> anyhow::Result<Vec<(&'static str, Vec<f32>)>> {
    let dirs: Vec<(&'static str, PathBuf)> = config
        .reward
        .components
        .iter()
        .filter(|k| k.kind == "text" || k.kind == "quality")
        .map(|k| {
            (
                if k.kind == "text" { "text" } else { "quality" },
                k.checkpoint.clone(),
            )
        })
        .collect();
    if dirs.is_empty() || items.is_empty() {
        return Ok(Vec::new());
    }
    let features = musicrl_rewards::clips::par_map(items, |x, (c, t)| {
        musicrl_rewards::clips::sample_features(x, c, t)
    });
    let mut out = Vec::new();
    for (kind, dir) in dirs {
        let scores: Vec<f32> = if kind == "text" {
            let m = musicrl_rewards::text::TextModel::load(&dir)?;
            let pairs: Vec<(&str, &musicrl_rewards::features::Features)> = items
                .iter()
                .zip(&features)
                .map(|((c, _), f)| (*c, f))
                .collect();
            pairs.chunks(64).flat_map(|p| m.score(p)).collect()
        } else {
            let m = musicrl_rewards::quality::QualityModel::load(&dir)?;
            let refs: Vec<&musicrl_rewards::features::Features> = features.iter().collect();
            refs.chunks(64).flat_map(|p| m.score(p)).collect()
        };
        out.push((kind, scores));
    }
    Ok(out)
}

/// `n` pairs of two samples of `policy` for the same caption (a caption of a random
/// training-split tune, as `rendering_caption` writes them), with a progress bar.
fn sample_pairs(
    config: &Config,
    train: &[&musicrl_music::corpus::Tune],
    policy: &musicrl_policy::melody::Policy,
    policy_config: &musicrl_config::PolicyConfig,
    n: usize,
    seed: u64,
) -> Vec<(String, Vec<u32>, Vec<u32>)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sampler = Sampler::new(seed, config.sampling.temperature);
    let device = musicrl_policy::device::inference_device();
    let mut bar = Progress::new("sampling pairs", n as u64, "pairs");
    let mut pairs = Vec::with_capacity(n);
    while pairs.len() < n {
        let k = (n - pairs.len()).min(8);
        let captions: Vec<String> = (0..k)
            .map(|_| {
                let t = train[rng.random_range(0..train.len())];
                musicrl_music::prompts::rendering_caption(t, &mut rng)
            })
            .collect();
        // Two samples for each caption: the batch holds every caption twice.
        let doubled: Vec<&str> = captions
            .iter()
            .chain(captions.iter())
            .map(String::as_str)
            .collect();
        let samples = sampler.sample(
            policy,
            policy_config,
            &doubled,
            policy_config.max_tokens,
            &device,
        );
        for i in 0..k {
            pairs.push((
                captions[i].clone(),
                samples[i].tokens.clone(),
                samples[k + i].tokens.clone(),
            ));
        }
        bar.inc(k as u64);
    }
    bar.finish();
    pairs
}

/// `musicrl preferences calibrate`: the caption weight at which our text reward agrees with a
/// new population's choices as often as MuLan agreed with the paper's users; writes the
/// population, the scored pairs and the report beside `--store`.
pub fn calibrate(config: Config, args: &CalibratePlan) -> anyhow::Result<serde_json::Value> {
    if args.pairs == 0 {
        anyhow::bail!("--pairs must be at least 1");
    }
    if !(0.0..1.0).contains(&args.target_text) {
        anyhow::bail!("--target-text must be a share in [0, 1)");
    }
    if args.spread < 0.0 {
        anyhow::bail!("--spread must be ≥ 0");
    }
    let population_path = args.store.with_file_name("population.json");
    if population_path.exists() || args.store.exists() {
        anyhow::bail!(
            "{} already has a store or a population; calibrate a new population into a --store in a new folder",
            args.store
                .parent()
                .map_or_else(|| ".".into(), |p| p.display().to_string())
        );
    }
    if !config.reward.components.iter().any(|k| k.kind == "text")
        || !config.reward.components.iter().any(|k| k.kind == "quality")
    {
        anyhow::bail!(
            "calibration measures the text and quality rewards: the configuration needs a text and a quality component"
        );
    }
    if !(0.5..1.0).contains(&args.target_ceiling) {
        anyhow::bail!("--target-ceiling must be a share in [0.5, 1)");
    }
    Population::new(
        args.listeners,
        args.spread,
        args.temperature.unwrap_or(2.0),
        0.0,
        args.seed,
    )
    .validate()
    .context("--listeners, --spread and --temperature")?;
    let (scored, policy_path) = match &args.scored {
        Some(path) => {
            let pairs = preference::read_scored_pairs(path)?;
            if pairs.is_empty() {
                anyhow::bail!("{} holds no pairs", path.display());
            }
            (pairs, path.display().to_string())
        }
        None => sample_and_score(&config, args)?,
    };
    let (population, calibration) = match args.temperature {
        Some(t) => preference::calibrate_caption_weight(
            args.listeners,
            args.spread,
            t,
            args.seed,
            &scored,
            args.target_text,
        ),
        None => preference::calibrate_population(
            args.listeners,
            args.spread,
            args.seed,
            &scored,
            args.target_text,
            args.target_ceiling,
        ),
    };
    write_calibration(args, &scored, &population, &calibration, &policy_path)
}

/// Samples `--pairs` pairs from the base policy and scores them with the text and quality
/// models; also returns the policy's path.
fn sample_and_score(
    config: &Config,
    args: &CalibratePlan,
) -> anyhow::Result<(Vec<preference::ScoredPair>, String)> {
    let (_, tunes) = load_corpus(config, args.corpus.as_deref())?;
    let train: Vec<&musicrl_music::corpus::Tune> = tunes
        .iter()
        .filter(|t| t.split == musicrl_music::corpus::Split::Train)
        .collect();
    let (policy, policy_config, policy_path) = base_policy(config, args.policy.as_deref())?;
    // Its own stream: the calibration pairs are not the store's.
    let seed = args.seed ^ 0xCA11_B4A7_E000_0000;
    let pairs = sample_pairs(config, &train, &policy, &policy_config, args.pairs, seed);
    eprintln!(
        "scoring {} clips with the text and quality models",
        2 * pairs.len()
    );
    let items: Vec<(&str, &[u32])> = pairs
        .iter()
        .flat_map(|(c, a, b)| [(c.as_str(), a.as_slice()), (c.as_str(), b.as_slice())])
        .collect();
    let scores = text_and_quality_scores(config, &items)?;
    let of = |kind: &str, i: usize| -> [f32; 2] {
        let s = &scores.iter().find(|(k, _)| *k == kind).expect("scored").1;
        [s[2 * i], s[2 * i + 1]]
    };
    let scored: Vec<preference::ScoredPair> = pairs
        .into_iter()
        .enumerate()
        .map(|(i, (caption, a, b))| preference::ScoredPair {
            caption,
            a,
            b,
            text: of("text", i),
            quality: of("quality", i),
        })
        .collect();
    Ok((scored, policy_path.display().to_string()))
}

/// Writes the calibrated population, its pairs and the report beside `--store`, and prints
/// the table of targets and measured values.
fn write_calibration(
    args: &CalibratePlan,
    scored: &[preference::ScoredPair],
    population: &Population,
    calibration: &preference::Calibration,
    policy_path: &str,
) -> anyhow::Result<serde_json::Value> {
    let population_path = args.store.with_file_name("population.json");
    if let Some(dir) = population_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    musicrl_config::fsutil::write_atomic(
        &population_path,
        &serde_json::to_vec_pretty(&population)?,
    )?;
    let pairs_path = args.store.with_file_name(CALIBRATION_PAIRS);
    preference::write_scored_pairs(&pairs_path, scored)?;
    let mut report = serde_json::to_value(calibration)?;
    report["population"] = population_path.display().to_string().into();
    report["calibration_pairs"] = pairs_path.display().to_string().into();
    report["pairs_from"] = policy_path.into();
    report["listeners"] = args.listeners.into();
    report["spread"] = f64::from(args.spread).into();
    report["seed"] = args.seed.into();
    musicrl_config::fsutil::write_atomic(
        &args.store.with_file_name(CALIBRATION_REPORT),
        &serde_json::to_vec_pretty(&report)?,
    )?;
    eprintln!(
        "calibrated on {} pairs from {policy_path}: caption weight {:.3}, temperature {:.3}{}",
        calibration.pairs,
        calibration.caption_weight,
        calibration.temperature,
        if calibration.reached {
            ""
        } else {
            " (the target is out of reach: the largest weight tried)"
        }
    );
    eprintln!("| statistic | paper | ours |");
    eprintln!("|---|---:|---:|");
    eprintln!(
        "| the text score picks the listener's choice | {:.3} | {:.3} (without the caption {:.3}) |",
        calibration.text_target,
        calibration.text_agreement,
        calibration.text_agreement_without_caption
    );
    eprintln!(
        "| the quality score picks the listener's choice | {:.3} | {:.3} |",
        calibration.quality_target, calibration.quality_agreement
    );
    eprintln!(
        "| a preference model (ceiling: the shared taste) | {:.3} | ≤ {:.3}{} |",
        calibration.preference_target,
        calibration.shared_taste_ceiling,
        calibration
            .shared_ceiling_target
            .map_or_else(String::new, |t| format!(" (aimed at {t:.3})"))
    );
    eprintln!(
        "next: musicrl preferences simulate --store {}",
        args.store.display()
    );
    Ok(report)
}

/// `musicrl preferences simulate`.
pub fn simulate(config: Config, args: &SimulatePlan) -> anyhow::Result<serde_json::Value> {
    let (_, tunes) = load_corpus(&config, args.corpus.as_deref())?;
    let train: Vec<&musicrl_music::corpus::Tune> = tunes
        .iter()
        .filter(|t| t.split == musicrl_music::corpus::Split::Train)
        .collect();
    let (policy, policy_config, policy_path) = base_policy(&config, args.policy.as_deref())?;
    let population_path = args.store.with_file_name("population.json");
    let existing = if args.store.exists() {
        preference::read_store(&args.store)?.len()
    } else {
        0
    };
    // One folder, one population: the listeners who made a store's choices live beside it.
    let drawn = !population_path.exists();
    let population = if drawn {
        if existing > 0 {
            anyhow::bail!(
                "{} holds {existing} choices but {} is missing, so the listeners who made them are unknown; simulate into a --store in a new folder",
                args.store.display(),
                population_path.display()
            );
        }
        if args.spread.is_some_and(|x| x < 0.0) {
            anyhow::bail!("--spread must be ≥ 0");
        }
        if args
            .caption_weight
            .is_some_and(|x| !(x >= 0.0 && x.is_finite()))
        {
            anyhow::bail!("--caption-weight must be a finite number ≥ 0");
        }
        let population = Population::new(
            args.listeners.unwrap_or(200),
            args.spread.unwrap_or(1.0),
            args.temperature
                .unwrap_or(preference::CALIBRATED_TEMPERATURE),
            args.caption_weight
                .unwrap_or(preference::CALIBRATED_CAPTION_WEIGHT),
            args.seed,
        );
        population
            .validate()
            .context("--listeners, --spread and --temperature")?;
        population
    } else {
        if args.listeners.is_some()
            || args.spread.is_some()
            || args.temperature.is_some()
            || args.caption_weight.is_some()
        {
            anyhow::bail!(
                "{} already holds a population; --listeners, --spread, --temperature and --caption-weight only shape a new one (use a --store in a new folder)",
                population_path.display()
            );
        }
        let p = Population::load(&population_path)?;
        eprintln!(
            "{} {} with its population of {} listeners from {}",
            if existing > 0 {
                "appending to"
            } else {
                "writing"
            },
            args.store.display(),
            p.listeners(),
            population_path.display()
        );
        p
    };
    // Appending continues the stream: the seed is mixed with the store's length, so a second
    // run with the same --seed draws new pairs instead of repeating the first run's.
    let stream_seed = args.seed ^ (existing as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let pairs = sample_pairs(
        &config,
        &train,
        &policy,
        &policy_config,
        args.pairs,
        stream_seed,
    );
    let when = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let choices = preference::simulate_choices(&population, &pairs, when, stream_seed);
    if drawn {
        musicrl_config::fsutil::write_atomic(
            &population_path,
            &serde_json::to_vec_pretty(&population)?,
        )?;
    }
    preference::append_store(&args.store, &choices)?;
    let (own, shared) = preference::ceilings(&population, &choices);
    eprintln!(
        "{} choices by {} listeners appended to {}; ceiling of agreement: {:.3} knowing each listener's taste, {:.3} knowing the shared taste",
        choices.len(),
        population.listeners(),
        args.store.display(),
        own,
        shared
    );
    Ok(serde_json::json!({
        "choices": choices.len(),
        "listeners": population.listeners(),
        "store": args.store,
        "population": population_path,
        "policy": policy_path,
        "ceiling_knowing_listener": own,
        "ceiling_shared_taste": shared,
    }))
}

/// `musicrl preferences evaluate`: for each pair, one sample of the judged policy and one of
/// the baseline for the same held-out caption, judged by a random listener.
pub fn evaluate(config: Config, args: &EvaluatePlan) -> anyhow::Result<serde_json::Value> {
    if args.prompts == 0 || args.pairs_per_prompt == 0 {
        anyhow::bail!("--prompts and --pairs-per-prompt must be at least 1");
    }
    let (corpus, tunes) = load_corpus(&config, args.corpus.as_deref())?;
    let mut test: Vec<&musicrl_music::corpus::Tune> = tunes
        .iter()
        .filter(|t| t.split == musicrl_music::corpus::Split::Test)
        .collect();
    if test.is_empty() {
        anyhow::bail!("{} has no test-split tunes", corpus.display());
    }
    let population = Population::load(&args.population).context(
        "the listener population (--population; `preferences simulate` writes one beside its store)",
    )?;
    let (judged, judged_config, judged_path) = base_policy(&config, Some(&args.policy))?;
    let (baseline, baseline_config, baseline_path) =
        base_policy(&config, args.baseline.as_deref())?;

    // Separate streams for the prompts, each policy's sampler and the listeners.
    let seed = |purpose: u64| {
        args.seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(purpose)
    };
    let mut rng = StdRng::seed_from_u64(seed(1));
    musicrl_music::shuffle(&mut test, &mut rng);
    let mut captions = Vec::with_capacity(args.prompts * args.pairs_per_prompt);
    for t in test.iter().cycle().take(args.prompts) {
        let caption = musicrl_music::prompts::rendering_caption(t, &mut rng);
        captions.extend(std::iter::repeat_n(caption, args.pairs_per_prompt));
    }
    let device = musicrl_policy::device::inference_device();
    let mut samplers = [
        Sampler::new(seed(2), config.sampling.temperature),
        Sampler::new(seed(3), config.sampling.temperature),
    ];
    let mut bar = Progress::new("sampling pairs", captions.len() as u64, "pairs");
    let mut pairs: Vec<(String, Vec<u32>, Vec<u32>)> = Vec::with_capacity(captions.len());
    for chunk in captions.chunks(16) {
        let ours = samplers[0].sample(
            &judged,
            &judged_config,
            chunk,
            judged_config.max_tokens,
            &device,
        );
        let theirs = samplers[1].sample(
            &baseline,
            &baseline_config,
            chunk,
            baseline_config.max_tokens,
            &device,
        );
        for ((c, a), b) in chunk.iter().zip(ours).zip(theirs) {
            pairs.push((c.clone(), a.tokens, b.tokens));
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish();

    let v = preference::judge(&population, &pairs, args.pairs_per_prompt, seed(4));
    eprintln!(
        "the listeners chose {} over {} in {} of {} pairs: win rate {:.3} ± {:.3} (expected {:.3}); shared-taste utility {:.3} vs {:.3}",
        judged_path.display(),
        baseline_path.display(),
        v.wins,
        v.pairs,
        v.win_rate,
        v.standard_error,
        v.expected_win_rate,
        v.shared_taste_utility_a,
        v.shared_taste_utility_b,
    );
    Ok(serde_json::json!({
        "policy": judged_path,
        "baseline": baseline_path,
        "population": args.population,
        "prompts": args.prompts,
        "pairs_per_prompt": args.pairs_per_prompt,
        "seed": args.seed,
        "pairs": v.pairs,
        "wins": v.wins,
        "win_rate": v.win_rate,
        "standard_error": v.standard_error,
        "expected_win_rate": v.expected_win_rate,
        "shared_taste_utility_policy": v.shared_taste_utility_a,
        "shared_taste_utility_baseline": v.shared_taste_utility_b,
    }))
}

fn train_preference(
    config: &Config,
    args: &TrainRewardPlan,
    out: &std::path::Path,
    progress: &mut Bar,
) -> anyhow::Result<serde_json::Value> {
    use musicrl_rewards::preference::model;
    if args.tunes.is_some() || args.eval.is_some() || args.ratings.is_some() {
        anyhow::bail!(
            "--tunes, --eval and --ratings do not apply to the preference model (it trains on --store and holds out every tenth choice)"
        );
    }
    let mut c = model::PreferenceConfig {
        policy: config.policy.clone(),
        train: model::PreferenceTrainConfig::default(),
    };
    // A MusicGen policy's model starts from its folder's decoder (θ0, as the paper's
    // started from MusicLM); a melody policy's from `learner.init_policy`.
    c.train.init_policy = if config.policy.family == musicrl_config::FAMILY_MUSICGEN {
        std::path::PathBuf::new()
    } else {
        config.learner.init_policy.clone()
    };
    if let Some(saved) = c
        .train
        .init_policy
        .parent()
        .map(|d| d.join("config.toml"))
        .filter(|p| p.exists())
    {
        c.policy = Config::from_file(&saved)?.policy;
    }
    c.train.caption_free = args.caption_free;
    if let Some(v) = &args.store {
        c.train.store = v.clone();
    }
    let mut parent = None;
    if let Some(prev) = &args.continue_from {
        let saved: model::PreferenceConfig = musicrl_rewards::store::load_config(prev)?;
        c.policy = saved.policy;
        c.train.init_policy = prev.join(musicrl_rewards::store::MODEL_FILE);
        let bytes = std::fs::read(&c.train.init_policy)
            .with_context(|| format!("cannot read {}", c.train.init_policy.display()))?;
        parent = Some(musicrl_rewards::store::version_of("preference", &bytes));
    }
    // From the database: its decisive votes become the training store (kept beside the
    // model, so what it learned from is on disk with it).
    let db = match &args.db {
        Some(url) => Some(db_training_store(url, args, out, &mut c.train.store)?),
        None => None,
    };
    set(&mut c.train.epochs, args.epochs);
    set(&mut c.train.seed, args.seed);
    eprintln!(
        "training the preference model on {} into {}",
        c.train.store.display(),
        out.display()
    );
    // A simulated store's population, checked before the long training run: real users'
    // stores have none.
    let population_path = c.train.store.with_file_name("population.json");
    let population = if population_path.exists() {
        Some(Population::load(&population_path)?)
    } else {
        None
    };
    let (metrics, eval) = model::train(&c, out, progress)?;
    let mut value = serde_json::to_value(&metrics)?;
    if let (Some(url), Some((votes_used, last_vote_id))) = (&args.db, db) {
        let record = musicrl_prefdb::ModelVersion {
            id: metrics.version.clone(),
            kind: "preference".into(),
            path: out.display().to_string(),
            parent: parent.or_else(|| args.after_version.clone()),
            votes_used,
            last_vote_id,
            metrics: value.clone(),
            created_at_ms: musicrl_prefdb::now_ms(),
        };
        block_on(async {
            let db = musicrl_prefdb::Db::open(url).await?;
            db.record_model_version(&record).await?;
            db.close().await;
            anyhow::Ok(())
        })?;
        eprintln!(
            "recorded {} in the preference database ({votes_used} votes, up to vote {last_vote_id})",
            metrics.version
        );
    }
    // How often the listener's choice is the clip the simulated population's taste, the text
    // model or the quality model prefers, on the same held-out choices.
    if let Some(population) = population {
        // The listeners this model learned from travel with it (`preferences evaluate
        // --population DIR/population.json`).
        musicrl_config::fsutil::write_atomic(
            &out.join("population.json"),
            &serde_json::to_vec_pretty(&population)?,
        )?;
        // And what they were calibrated on, when they were (`preferences calibrate`).
        for name in [CALIBRATION_PAIRS, CALIBRATION_REPORT] {
            let from = c.train.store.with_file_name(name);
            if from.exists() {
                std::fs::copy(&from, out.join(name)).with_context(|| {
                    format!("cannot copy {} into {}", from.display(), out.display())
                })?;
            }
        }
        let (own, shared) = preference::ceilings(&population, &eval);
        value["ceiling_knowing_listener"] = own.into();
        value["ceiling_shared_taste"] = shared.into();
    }
    let items: Vec<(&str, &[u32])> = eval
        .iter()
        .flat_map(|e| {
            [
                (e.caption.as_str(), e.a.as_slice()),
                (e.caption.as_str(), e.b.as_slice()),
            ]
        })
        .collect();
    if !items.is_empty() {
        text::Progress::stage(
            progress,
            "scoring held-out pairs with the text and quality models",
        );
    }
    for (kind, scores) in text_and_quality_scores(config, &items)? {
        let agree = eval
            .iter()
            .enumerate()
            .filter(|(i, e)| (scores[2 * i] > scores[2 * i + 1]) == (e.choice == "a"))
            .count();
        value[format!("{kind}_agreement")] = (agree as f64 / eval.len().max(1) as f64).into();
    }
    musicrl_rewards::store::write_metrics(out, &value)?;
    let share = |key: &str| {
        value[key]
            .as_f64()
            .map_or_else(|| "-".to_string(), |x| format!("{x:.3}"))
    };
    eprintln!(
        "held out: accuracy {} on {} choices (ceiling {} knowing only the shared taste, {} knowing each listener); the text score alone agrees {}, the quality score {}; wrote {}",
        share("accuracy"),
        eval.len(),
        share("ceiling_shared_taste"),
        share("ceiling_knowing_listener"),
        share("text_agreement"),
        share("quality_agreement"),
        out.display()
    );
    Ok(value)
}

fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// Exports the database's decisive votes (filtered by --since-ms / --after-version) into
/// `OUT/train-store.jsonl` and points `store` at it; returns (votes, newest vote id).
fn db_training_store(
    url: &str,
    args: &TrainRewardPlan,
    out: &std::path::Path,
    store: &mut PathBuf,
) -> anyhow::Result<(i64, i64)> {
    block_on(async {
        let db = musicrl_prefdb::Db::open(url).await?;
        let after_vote_id = match &args.after_version {
            Some(v) => Some(
                db.model_version(v)
                    .await?
                    .with_context(|| {
                        format!("the preference database knows no model version {v:?}")
                    })?
                    .last_vote_id,
            ),
            None => None,
        };
        // Votes flagged as stuffing are not trained on.
        let filter = musicrl_prefdb::VoteFilter {
            since_ms: args.since_ms,
            after_vote_id,
            include_flagged: false,
        };
        let votes = db.decisive_votes(filter).await?;
        let choices = db.export_choices(filter).await?;
        db.close().await;
        let last = votes.iter().map(|v| v.vote_id).max().unwrap_or(0);
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        *store = out.join("train-store.jsonl");
        musicrl_config::fsutil::write_atomic(
            store,
            musicrl_prefdb::jsonl::store_text(&choices).as_bytes(),
        )?;
        eprintln!(
            "{} decisive votes from {} (up to vote {last})",
            choices.len(),
            musicrl_prefdb::db::redact(url)
        );
        Ok((choices.len() as i64, last))
    })
}
