//! `musicrl prompts` (the prompt sets) and `musicrl judge` (the rater panel's side-by-side
//! evaluation): flags over `musicrl-music`'s prompt generator and `musicrl-judge`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rand::SeedableRng;
use rand::rngs::StdRng;

use musicrl_common::prompts::load_prompts;
use musicrl_config::Config;
use musicrl_judge::{Panel, PanelConfig, Sample, assess};
use musicrl_music::corpus::{Split, Tune};
use musicrl_music::prompts as prompt_sets;
use musicrl_policy::melody::sampling::Sampler;

use crate::plan::{JudgePlan, PromptsPlan};
use crate::progress::Progress;
use crate::reward_training::{base_policy, load_corpus};

/// The words of the captions pretraining conditioned on: `pretrain.epochs` passes of the
/// caption generator over the training-split tunes, seeded like pretraining (pretraining
/// interleaves other draws, so the captions are the generator's, not the very same ones:
/// the generator's vocabulary is small and closed, and every pass covers it).
fn pretraining_words(config: &Config, tunes: &[Tune]) -> std::collections::BTreeSet<String> {
    let mut rng = StdRng::seed_from_u64(config.pretrain.seed);
    let train: Vec<&Tune> = tunes.iter().filter(|t| t.split == Split::Train).collect();
    let mut captions = Vec::new();
    for _ in 0..config.pretrain.epochs.max(1) {
        for t in &train {
            captions.push(prompt_sets::rendering_caption(t, &mut rng));
        }
    }
    prompt_sets::words(captions.iter().map(String::as_str))
}

/// Of `prompts`' words (each prompt's distinct words, summed over prompts), the share the
/// pretrained policy never saw, and the distinct unseen words.
fn unknown_share(
    prompts: &[String],
    known: &std::collections::BTreeSet<String>,
) -> (f64, Vec<String>) {
    let (mut total, mut unknown) = (0usize, 0usize);
    let mut unseen = std::collections::BTreeSet::new();
    for p in prompts {
        for w in prompt_sets::words([p.as_str()]) {
            total += 1;
            if !known.contains(&w) {
                unknown += 1;
                unseen.insert(w);
            }
        }
    }
    (
        unknown as f64 / total.max(1) as f64,
        unseen.into_iter().collect(),
    )
}

/// `musicrl prompts`.
pub fn prompts(config: &Config, args: &PromptsPlan) -> anyhow::Result<serde_json::Value> {
    let (corpus, tunes) = load_corpus(config, args.corpus.as_deref())?;
    let known = pretraining_words(config, &tunes);
    if let Some(file) = &args.check {
        let prompts = load_prompts(file)?;
        let (share, unseen) = unknown_share(&prompts, &known);
        eprintln!(
            "{}: {} prompts; {:.1}% of their words are unknown to the pretrained policy",
            file.display(),
            prompts.len(),
            100.0 * share
        );
        return Ok(serde_json::json!({
            "prompts": file, "count": prompts.len(), "unknown_word_share": share, "unknown_words": unseen,
        }));
    }
    let train = prompt_sets::training_prompts(&tunes, prompt_sets::SEED);
    let test =
        prompt_sets::evaluation_prompts(&tunes, prompt_sets::EVALUATION_PROMPTS, prompt_sets::SEED);
    let select =
        prompt_sets::selection_prompts(&tunes, prompt_sets::EVALUATION_PROMPTS, prompt_sets::SEED);
    if train.is_empty() || test.is_empty() || select.is_empty() {
        anyhow::bail!(
            "{} has no training or test tunes to caption",
            corpus.display()
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let source = format!(
        "from {} by `musicrl prompts` (musicrl_music::prompts, seed {})",
        corpus.display(),
        prompt_sets::SEED
    );
    let files = [
        (
            "train.txt",
            vec![
                "RL prompts: one caption for each training-split tune of the corpus".to_string(),
                source.clone(),
            ],
            &train,
        ),
        (
            "test.txt",
            vec![
                format!(
                    "Evaluation prompts: {} captions of distinct test-split tunes, each stating the tune's key or meter",
                    test.len()
                ),
                source.clone(),
            ],
            &test,
        ),
        (
            "select.txt",
            vec![
                format!(
                    "Selection prompts: {} captions of other test-split tunes than test.txt's, each stating the tune's key or meter (musicrl experiment chooses checkpoints on these and judges on test.txt)",
                    select.len()
                ),
                source.clone(),
            ],
            &select,
        ),
    ];
    let mut report = serde_json::Map::new();
    for (name, header, set) in files {
        let path = args.out.join(name);
        musicrl_config::fsutil::write_atomic(&path, prompt_sets::to_file(&header, set).as_bytes())?;
        let (share, unseen) = unknown_share(set, &known);
        eprintln!(
            "{}: {} prompts ({} distinct); {:.2}% of their words unknown to the pretrained policy",
            path.display(),
            set.len(),
            set.iter().collect::<std::collections::BTreeSet<_>>().len(),
            100.0 * share
        );
        report.insert(
            name.to_string(),
            serde_json::json!({"path": path, "count": set.len(), "unknown_word_share": share, "unknown_words": unseen}),
        );
    }
    Ok(serde_json::Value::Object(report))
}

/// A model's name from its checkpoint path: the run folder for `RUN/checkpoints/step-N/
/// policy.bpk` (with the step), else the file's folder.
fn default_name(path: &Path) -> String {
    let dir = path.parent();
    let step = dir
        .and_then(|d| d.file_name())
        .map(|s| s.to_string_lossy().to_string());
    let run = dir
        .and_then(|d| d.parent())
        .filter(|d| d.file_name().is_some_and(|n| n == "checkpoints"))
        .and_then(|d| d.parent())
        .and_then(|d| d.file_name())
        .map(|s| s.to_string_lossy().to_string());
    match (run, step) {
        (Some(run), Some(step)) => format!("{run}@{step}"),
        (None, Some(dir)) => dir,
        _ => "policy".to_string(),
    }
}

/// Reads exported samples (JSON Lines of [`Sample`]), one model's or several.
pub(crate) fn read_samples(path: &Path) -> anyhow::Result<Vec<Sample>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let s: Sample = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a judged sample", path.display(), i + 1))?;
        if let Some(t) = s
            .tokens
            .iter()
            .find(|&&t| t as usize >= musicrl_music::tokens::VOCAB_SIZE)
        {
            anyhow::bail!(
                "{}:{}: token {t} is outside the {}-token melody vocabulary",
                path.display(),
                i + 1,
                musicrl_music::tokens::VOCAB_SIZE
            );
        }
        out.push(s);
    }
    Ok(out)
}

/// `musicrl judge`.
pub fn judge(
    config: &Config,
    args: &JudgePlan,
) -> anyhow::Result<(musicrl_judge::Report, Option<crate::agreement::Agreement>)> {
    let panel = Panel::new(PanelConfig {
        raters: args.raters,
        raters_per_pair: args.raters_per_pair,
        gap: args.gap,
        noise: args.noise,
        seed: args.panel_seed,
        ..PanelConfig::default()
    })
    .map_err(anyhow::Error::msg)
    .context("the panel flags")?;
    if args.pairs_per_prompt == 0 {
        anyhow::bail!("--pairs-per-prompt must be at least 1");
    }
    let (models, sources): (Vec<(String, Vec<Sample>)>, serde_json::Value) = if !args
        .samples
        .is_empty()
    {
        let mut by_model: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
        for f in &args.samples {
            for s in read_samples(f)? {
                by_model.entry(s.model.clone()).or_default().push(s);
            }
        }
        (
            by_model.into_iter().collect(),
            serde_json::json!({"samples": args.samples}),
        )
    } else {
        if args.policy.is_empty() {
            anyhow::bail!(
                "name a --policy to judge (or --samples files exported by an earlier judge)"
            );
        }
        if !args.name.is_empty() && args.name.len() != args.policy.len() {
            anyhow::bail!(
                "{} --name for {} --policy: give one name per policy or none",
                args.name.len(),
                args.policy.len()
            );
        }
        let prompts = load_prompts(&musicrl_config::paths::require("--prompts", &args.prompts)?)
            .context("the evaluation prompts (--prompts)")?;
        let baseline = args
            .baseline
            .clone()
            .unwrap_or_else(|| config.learner.init_policy.clone());
        let mut named: Vec<(String, PathBuf)> = args
            .policy
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    args.name.get(i).cloned().unwrap_or_else(|| default_name(p)),
                    p.clone(),
                )
            })
            .collect();
        named.push((
            if args.baseline.is_some() {
                default_name(&baseline)
            } else {
                "theta0".into()
            },
            baseline,
        ));
        let mut seen = std::collections::BTreeSet::new();
        for (n, _) in &named {
            if !seen.insert(n.clone()) {
                anyhow::bail!("two models are named {n:?}: give each a distinct --name");
            }
        }
        let models = sample_models(config, &named, &prompts, args.pairs_per_prompt, args.seed)?;
        (
            models,
            serde_json::json!({
                "policies": named.iter().map(|(n, p)| serde_json::json!({"name": n, "path": p})).collect::<Vec<_>>(),
                "prompts": args.prompts, "pairs_per_prompt": args.pairs_per_prompt,
                "seed": args.seed, "temperature": config.sampling.temperature,
            }),
        )
    };
    let report = musicrl_judge::compare(&panel, &models)?;
    let (agreement, rewards) = if args.rewards {
        let (a, r) = crate::agreement::measure(config, &models)?;
        (Some(a), Some(r))
    } else {
        (None, None)
    };

    write_samples(&args.out.join("samples"), &models, rewards.as_deref())?;
    let mut results = serde_json::json!({
        "report": report,
        "source": sources,
        "table": report.table(),
    });
    if let Some(a) = &agreement {
        results["agreement"] = serde_json::to_value(a)?;
        results["agreement_table"] = serde_json::Value::String(a.table());
    }
    musicrl_config::fsutil::write_atomic(
        &args.out.join("results.json"),
        serde_json::to_string_pretty(&results)?.as_bytes(),
    )?;
    Ok((report, agreement))
}

/// Writes every judged sample, with the judge's assessment (and each clip's rewards when
/// given), to `dir/<model>.jsonl`.
pub(crate) fn write_samples(
    dir: &Path,
    models: &[(String, Vec<Sample>)],
    rewards: Option<&[Vec<BTreeMap<String, f64>>]>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (m, (name, samples)) in models.iter().enumerate() {
        let mut text = String::new();
        for (i, s) in samples.iter().enumerate() {
            let mut s = s.clone();
            s.assessment = Some(assess(&s.caption, &s.tokens));
            let mut line = serde_json::to_value(&s)?;
            if let (Some(r), serde_json::Value::Object(o)) = (rewards, &mut line) {
                o.insert("rewards".into(), serde_json::to_value(&r[m][i])?);
            }
            text.push_str(&serde_json::to_string(&line)?);
            text.push('\n');
        }
        let file = dir.join(format!("{}.jsonl", file_safe(name)));
        musicrl_config::fsutil::write_atomic(&file, text.as_bytes())?;
        write_scores(dir, &file_safe(name), samples)?;
    }
    Ok(())
}

/// Every sample's melody for music tools: `dir/<model>.abc`, one ABC tune book (tune N is
/// line N of the JSONL file), and `dir/midi/<model>/NNNN.mid`, a standard MIDI file each, at
/// the instrument and tempo the caption asks for.
fn write_scores(dir: &Path, stem: &str, samples: &[Sample]) -> anyhow::Result<()> {
    use musicrl_music::export;
    let midi_dir = dir.join("midi").join(stem);
    std::fs::create_dir_all(&midi_dir)
        .with_context(|| format!("creating {}", midi_dir.display()))?;
    let mut book = String::new();
    for (i, s) in samples.iter().enumerate() {
        let events = musicrl_music::tokens::decode(&s.tokens).events;
        let (instrument, bpm) = musicrl_music::captions::rendering_for(&s.caption);
        let title = format!("{} / prompt {} / {}", s.model, s.prompt, s.caption);
        book.push_str(&export::abc_tune(i + 1, &events, &title, None, bpm));
        book.push('\n');
        std::fs::write(
            midi_dir.join(format!("{:04}.mid", i + 1)),
            export::to_midi(&events, bpm, instrument, &title),
        )?;
    }
    musicrl_config::fsutil::write_atomic(&dir.join(format!("{stem}.abc")), book.as_bytes())?;
    Ok(())
}

pub(crate) fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_.@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Samples of each named policy (`sample_policy`), each model its own stream of draws in
/// the order given: the models one panel judges together.
pub(crate) fn sample_models(
    config: &Config,
    named: &[(String, PathBuf)],
    prompts: &[String],
    pairs_per_prompt: usize,
    seed: u64,
) -> anyhow::Result<Vec<(String, Vec<Sample>)>> {
    named
        .iter()
        .enumerate()
        .map(|(m, (name, path))| {
            let samples = sample_policy(
                config,
                name,
                path,
                prompts,
                pairs_per_prompt,
                seed,
                m as u64,
            )?;
            Ok((name.clone(), samples))
        })
        .collect()
}

/// `pairs_per_prompt` samples of one policy for every prompt, stopping at END; `stream`
/// separates the draws of models judged together.
pub(crate) fn sample_policy(
    config: &Config,
    name: &str,
    path: &Path,
    prompts: &[String],
    pairs_per_prompt: usize,
    seed: u64,
    stream: u64,
) -> anyhow::Result<Vec<Sample>> {
    let (policy, policy_config, _) = base_policy(config, Some(path))?;
    let device = musicrl_policy::device::inference_device();
    let mut sampler = Sampler::new(
        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(stream),
        config.sampling.temperature,
    );
    let jobs: Vec<(usize, &String)> = prompts
        .iter()
        .enumerate()
        .flat_map(|(i, p)| std::iter::repeat_n((i, p), pairs_per_prompt))
        .collect();
    let mut bar = Progress::new(format!("sampling {name}"), jobs.len() as u64, "clips");
    let mut out = Vec::with_capacity(jobs.len());
    for chunk in jobs.chunks(16) {
        let captions: Vec<&str> = chunk.iter().map(|(_, c)| c.as_str()).collect();
        let sampled = sampler.sample(
            &policy,
            &policy_config,
            &captions,
            policy_config.max_tokens,
            &device,
        );
        for ((i, caption), s) in chunk.iter().zip(sampled) {
            out.push(Sample {
                model: name.to_string(),
                prompt: *i,
                caption: (*caption).clone(),
                tokens: s.tokens,
                assessment: None,
            });
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_are_named_after_their_run() {
        assert_eq!(
            default_name(Path::new(
                "runs/rl-r-1/checkpoints/step-00000200/policy.bpk"
            )),
            "rl-r-1@step-00000200"
        );
        assert_eq!(default_name(Path::new("models/base/policy.bpk")), "base");
        assert_eq!(file_safe("a b/c"), "a_b_c");
    }
}
