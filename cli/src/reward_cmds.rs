//! `musicrl train-reward`.

use std::path::PathBuf;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use musicrl_common::Config;
use musicrl_rewards::{quality, text};

use crate::args::{RewardKind, TrainRewardArgs};

struct Bar {
    bar: Option<ProgressBar>,
}

impl text::Progress for Bar {
    fn stage(&mut self, what: &str) {
        eprintln!("{what}");
    }
    fn epoch_started(&mut self, epoch: usize, batches: usize) {
        let bar = ProgressBar::new(batches as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} batches {msg} ({eta})",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(epoch.to_string());
        self.bar = Some(bar);
    }
    fn batch_done(&mut self, loss: f64) {
        if let Some(b) = &self.bar {
            b.set_message(format!("loss {loss:.3}"));
            b.inc(1);
        }
    }
    fn epoch_done(&mut self, epoch: usize, loss: f64) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        eprintln!("epoch {epoch}: train loss {loss:.4}");
    }
}

/// Trains the requested reward model; returns its metrics as JSON.
pub fn train_reward(config: Config, args: &TrainRewardArgs) -> anyhow::Result<serde_json::Value> {
    let corpus = args
        .corpus
        .clone()
        .unwrap_or_else(|| config.pretrain.corpus.clone());
    let tunes = musicrl_music::corpus::load(&corpus)
        .with_context(|| format!("cannot read the corpus {}", corpus.display()))?;
    let max_tokens = args.max_tokens.unwrap_or(config.policy.max_tokens);
    let kind_name = match args.kind {
        RewardKind::Text => "text",
        RewardKind::Quality => "quality",
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs/rewards").join(kind_name));
    let mut progress = Bar { bar: None };
    let metrics = match args.kind {
        RewardKind::Text => {
            if args.ratings.is_some() {
                anyhow::bail!("--ratings applies to the quality model only");
            }
            let mut c = text::TextConfig {
                model: text::TextModelConfig::default(),
                train: text::TextTrainConfig::default(),
            };
            let t = &mut c.train;
            t.max_tokens = max_tokens;
            if let Some(v) = args.tunes {
                t.tunes = v;
            }
            if let Some(v) = args.epochs {
                t.epochs = v;
            }
            if let Some(v) = args.eval {
                t.eval_pairs = v;
            }
            if let Some(v) = args.seed {
                t.seed = v;
            }
            eprintln!("training the text-adherence model into {}", out.display());
            let (_, m) = text::train(&c, &tunes, &out, &mut progress)?;
            eprintln!(
                "held out: recall@1 {:.3} (chance {:.3}), recall@5 {:.3}; right vs wrong tune type {:.3}, meter {:.3}, instrument {:.3}; wrote {}",
                m.recall_at_1,
                m.chance_recall_at_1,
                m.recall_at_5,
                m.tune_type_accuracy,
                m.meter_accuracy,
                m.instrument_accuracy,
                out.display()
            );
            serde_json::to_value(&m)?
        }
        RewardKind::Quality => {
            let mut c = quality::QualityConfig {
                model: quality::QualityModelConfig::default(),
                train: quality::QualityTrainConfig::default(),
            };
            let t = &mut c.train;
            t.max_tokens = max_tokens;
            t.ratings = args.ratings.clone();
            t.ratings_only = args.ratings_only;
            if let Some(v) = args.tunes {
                t.tunes = v;
            }
            if let Some(v) = args.epochs {
                t.epochs = v;
            }
            if let Some(v) = args.eval {
                t.eval_clips = v;
            }
            if let Some(v) = args.seed {
                t.seed = v;
            }
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
    Ok(metrics)
}
