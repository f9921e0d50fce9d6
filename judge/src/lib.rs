//! The judge: an independent rater panel for melodies and their captions, and the paper's
//! side-by-side statistics (docs/method.md §5).
//!
//! The panel rates text adherence (the decoded melody against what the caption claims:
//! key and mode, meter, tune type), quality (musical well-formedness) and appeal (raters'
//! own single-peaked tastes), 1–5, three raters a pair, positions randomised, and reports
//! win / tie / loss, the win rate, the Wilcoxon signed-rank p-value and mean scores.
//!
//! **Architecture invariant:** this crate depends on the music domain (`musicrl-music`) and
//! nothing else of the project. It never depends on the reward models (`musicrl-rewards`),
//! the reward server or burn, and nothing that serves rewards depends on it: the gold
//! standard shares no code with the proxies it checks, and it can never be trained on.
//! (`tests/tests/architecture.rs` keeps both directions true.)

pub mod adherence;
pub mod analysis;
pub mod appeal;
pub mod claims;
#[cfg(test)]
mod fixtures;
pub mod novelty;
pub mod panel;
pub mod selection;
pub mod stats;
pub mod wellformed;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

pub use panel::{Assessment, Expected, Panel, PanelConfig, Rating, assess};

/// Errors of the judge.
#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    #[error("{0}")]
    Input(String),
}

/// One judged sample, as `musicrl judge` writes it to `samples/<model>.jsonl` (one JSON
/// object a line) so that anyone can re-judge it with their own tools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub model: String,
    /// Index of the prompt in the evaluation set.
    pub prompt: usize,
    pub caption: String,
    /// Token ids of the melody vocabulary (`music/src/tokens.rs`), up to the first END.
    pub tokens: Vec<u32>,
    /// What the judge measured (written on export, recomputed on import).
    #[serde(default, skip_deserializing)]
    pub assessment: Option<Assessment>,
}

/// Mean scores of one model over every rating its clips received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelScores {
    pub model: String,
    pub clips: usize,
    pub ratings: usize,
    pub overall: f64,
    /// Over ratings of clips whose caption claims something (NaN: none did).
    pub adherence: f64,
    pub quality: f64,
    pub appeal: f64,
    /// What the panel measured, averaged over the clips (each in [0, 1]).
    pub measured_adherence: f64,
    pub measured_key: f64,
    pub measured_meter: f64,
    pub measured_well_formed: f64,
    /// Share of clips that end with END (not cut at the token limit).
    pub ended: f64,
    pub mean_length: f64,
}

/// One row of the side-by-side table: model `a` against model `b`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub a: String,
    pub b: String,
    /// Rater judgments (pairs × raters per pair).
    pub judgments: usize,
    pub wins: usize,
    pub ties: usize,
    pub losses: usize,
    pub win_pct: f64,
    pub tie_pct: f64,
    pub loss_pct: f64,
    /// wins / (wins + losses), the paper's win rate (NaN when every judgment tied).
    pub win_rate: f64,
    /// Two-sided Wilcoxon signed-rank test of the per-prompt mean overall difference.
    pub p_value: f64,
    pub wilcoxon: stats::Wilcoxon,
    /// The same win rate on each axis alone.
    pub adherence_win_rate: f64,
    pub quality_win_rate: f64,
    pub appeal_win_rate: f64,
}

/// The panel's verdict on a set of models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub panel: PanelConfig,
    pub prompts: usize,
    pub pairs_per_prompt: usize,
    pub models: Vec<ModelScores>,
    pub comparisons: Vec<Comparison>,
}

/// Samples of several models for the same prompts, grouped and checked: every model must
/// have the same number of samples for every prompt, with the same caption.
fn aligned(models: &[(String, Vec<Sample>)]) -> Result<(Vec<usize>, usize), JudgeError> {
    let (first_name, first) = models
        .first()
        .ok_or_else(|| JudgeError::Input("no models to judge".into()))?;
    if models.len() < 2 {
        return Err(JudgeError::Input(
            "a side-by-side evaluation needs at least two models".into(),
        ));
    }
    let mut prompts: Vec<usize> = first.iter().map(|s| s.prompt).collect();
    prompts.sort_unstable();
    prompts.dedup();
    if prompts.is_empty() {
        return Err(JudgeError::Input(format!("{first_name} has no samples")));
    }
    let per = first.iter().filter(|s| s.prompt == prompts[0]).count();
    for (name, samples) in models {
        for &p in &prompts {
            let of_p: Vec<&Sample> = samples.iter().filter(|s| s.prompt == p).collect();
            if of_p.len() != per {
                return Err(JudgeError::Input(format!(
                    "{name} has {} samples for prompt {p}, {first_name} has {per}: every model needs the same samples per prompt",
                    of_p.len()
                )));
            }
            let caption = &first
                .iter()
                .find(|s| s.prompt == p)
                .expect("prompt listed")
                .caption;
            if let Some(s) = of_p.iter().find(|s| &s.caption != caption) {
                return Err(JudgeError::Input(format!(
                    "prompt {p}: {name}'s caption {:?} differs from {first_name}'s {caption:?}",
                    s.caption
                )));
            }
        }
        if samples.len() != prompts.len() * per {
            return Err(JudgeError::Input(format!(
                "{name} has samples for prompts {first_name} lacks"
            )));
        }
    }
    Ok((prompts, per))
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { f64::NAN } else { s / n as f64 }
}

fn rate_of(w: usize, l: usize) -> f64 {
    if w + l == 0 {
        f64::NAN
    } else {
        w as f64 / (w + l) as f64
    }
}

/// Rates every pair of models on the same prompts with `panel` (see the crate docs).
/// Deterministic for the panel's seed.
// `p` and `k` index the same prompt and draw in two models' clips: the indices are the pairing.
#[allow(clippy::needless_range_loop)]
pub fn compare(panel: &Panel, models: &[(String, Vec<Sample>)]) -> Result<Report, JudgeError> {
    let (prompts, per) = aligned(models)?;
    // Each model's samples by prompt, in their given order, with their assessments.
    let grouped: Vec<Vec<Vec<Assessment>>> = models
        .iter()
        .map(|(_, samples)| {
            prompts
                .iter()
                .map(|&p| {
                    samples
                        .iter()
                        .filter(|s| s.prompt == p)
                        .map(|s| assess(&s.caption, &s.tokens))
                        .collect()
                })
                .collect()
        })
        .collect();
    let mut ratings: Vec<Vec<Rating>> = vec![Vec::new(); models.len()];
    let mut comparisons = Vec::new();
    for i in 0..models.len() {
        for j in i + 1..models.len() {
            let mut rng = StdRng::seed_from_u64(
                panel.config.seed
                    ^ ((i as u64) << 32 | j as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            let (mut w, mut t, mut l) = (0, 0, 0);
            let mut axis = [(0usize, 0usize); 3];
            let mut diffs = Vec::with_capacity(prompts.len());
            for p in 0..prompts.len() {
                let mut diff = Vec::new();
                for k in 0..per {
                    let (a, b) = (&grouped[i][p][k], &grouped[j][p][k]);
                    for r in panel.draw_raters(&mut rng) {
                        let a_first = rng.random::<bool>();
                        let (ra, rb) = if a_first {
                            let ra = panel.rate(r, a, true, &mut rng);
                            (ra, panel.rate(r, b, false, &mut rng))
                        } else {
                            let rb = panel.rate(r, b, true, &mut rng);
                            (panel.rate(r, a, false, &mut rng), rb)
                        };
                        match ra.overall.cmp(&rb.overall) {
                            std::cmp::Ordering::Greater => w += 1,
                            std::cmp::Ordering::Equal => t += 1,
                            std::cmp::Ordering::Less => l += 1,
                        }
                        let sides = [
                            (ra.adherence, rb.adherence),
                            (Some(ra.quality), Some(rb.quality)),
                            (Some(ra.appeal), Some(rb.appeal)),
                        ];
                        for (slot, (x, y)) in axis.iter_mut().zip(sides) {
                            if let (Some(x), Some(y)) = (x, y) {
                                slot.0 += usize::from(x > y);
                                slot.1 += usize::from(x < y);
                            }
                        }
                        diff.push(f64::from(ra.overall) - f64::from(rb.overall));
                        ratings[i].push(ra);
                        ratings[j].push(rb);
                    }
                }
                diffs.push(mean(diff.into_iter()));
            }
            let n = (w + t + l) as f64;
            let test = stats::wilcoxon(&diffs);
            comparisons.push(Comparison {
                a: models[i].0.clone(),
                b: models[j].0.clone(),
                judgments: w + t + l,
                wins: w,
                ties: t,
                losses: l,
                win_pct: 100.0 * w as f64 / n,
                tie_pct: 100.0 * t as f64 / n,
                loss_pct: 100.0 * l as f64 / n,
                win_rate: rate_of(w, l),
                p_value: test.p_value,
                wilcoxon: test,
                adherence_win_rate: rate_of(axis[0].0, axis[0].1),
                quality_win_rate: rate_of(axis[1].0, axis[1].1),
                appeal_win_rate: rate_of(axis[2].0, axis[2].1),
            });
        }
    }
    let scores = models
        .iter()
        .zip(&grouped)
        .zip(&ratings)
        .map(|(((name, _), clips), rs)| {
            let clips: Vec<&Assessment> = clips.iter().flatten().collect();
            ModelScores {
                model: name.clone(),
                clips: clips.len(),
                ratings: rs.len(),
                overall: mean(rs.iter().map(|r| f64::from(r.overall))),
                adherence: mean(rs.iter().filter_map(|r| r.adherence.map(f64::from))),
                quality: mean(rs.iter().map(|r| f64::from(r.quality))),
                appeal: mean(rs.iter().map(|r| f64::from(r.appeal))),
                measured_adherence: mean(clips.iter().filter_map(|c| c.adherence.overall)),
                measured_key: mean(clips.iter().filter_map(|c| c.adherence.key)),
                measured_meter: mean(clips.iter().filter_map(|c| c.adherence.meter)),
                measured_well_formed: mean(clips.iter().map(|c| c.well_formed.overall)),
                ended: mean(clips.iter().map(|c| f64::from(u8::from(c.ended)))),
                mean_length: mean(clips.iter().map(|c| c.length as f64)),
            }
        })
        .collect();
    Ok(Report {
        panel: panel.config.clone(),
        prompts: prompts.len(),
        pairs_per_prompt: per,
        models: scores,
        comparisons,
    })
}

impl Report {
    /// The table, shaped like the paper's: mean scores per model, then win / tie / loss,
    /// win rate and p-value per pair.
    pub fn table(&self) -> String {
        let mut out = format!(
            "rater panel: {} prompts × {} pairs, {} raters a pair (pool {}, gap {}, noise {})\n\n",
            self.prompts,
            self.pairs_per_prompt,
            self.panel.raters_per_pair,
            self.panel.raters,
            self.panel.gap,
            self.panel.noise
        );
        out.push_str(&format!(
            "{:<24} {:>7} {:>9} {:>7} {:>6}   {:>8} {:>6} {:>6} {:>6} {:>6}\n",
            "model (mean 1–5)",
            "overall",
            "adherence",
            "quality",
            "appeal",
            "measured",
            "key",
            "meter",
            "formed",
            "ended"
        ));
        for m in &self.models {
            out.push_str(&format!(
                "{:<24} {:>7.2} {:>9.2} {:>7.2} {:>6.2}   {:>8.3} {:>6.3} {:>6.3} {:>6.3} {:>6.2}\n",
                m.model,
                m.overall,
                m.adherence,
                m.quality,
                m.appeal,
                m.measured_adherence,
                m.measured_key,
                m.measured_meter,
                m.measured_well_formed,
                m.ended
            ));
        }
        out.push_str(&format!(
            "\n{:<36} {:>5} {:>5} {:>5} {:>8} {:>9}   {:>9} {:>7} {:>6}\n",
            "comparison",
            "win%",
            "tie%",
            "loss%",
            "win rate",
            "p",
            "adherence",
            "quality",
            "appeal"
        ));
        for c in &self.comparisons {
            out.push_str(&format!(
                "{:<36} {:>5.1} {:>5.1} {:>5.1} {:>8.3} {:>9.2e}   {:>9.3} {:>7.3} {:>6.3}\n",
                format!("{} vs {}", c.a, c.b),
                c.win_pct,
                c.tie_pct,
                c.loss_pct,
                c.win_rate,
                c.p_value,
                c.adherence_win_rate,
                c.quality_win_rate,
                c.appeal_win_rate
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(model: &str, tokens: &[Vec<u32>]) -> Vec<Sample> {
        tokens
            .iter()
            .enumerate()
            .map(|(i, t)| Sample {
                model: model.into(),
                prompt: i / 2,
                caption: format!("a reel in G major, prompt {}", i / 2),
                tokens: t.clone(),
                assessment: None,
            })
            .collect()
    }

    #[test]
    fn misaligned_samples_are_refused_by_name() {
        let t = vec![vec![2u32, 53]; 4];
        let a = samples("a", &t);
        let mut b = samples("b", &t[..3]);
        let err = compare(
            &Panel::new(PanelConfig::default()).unwrap(),
            &[("a".into(), a.clone()), ("b".into(), b.clone())],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("b has 1 samples for prompt 1"), "{err}");
        b = samples("b", &t);
        b[0].caption = "other".into();
        let err = compare(
            &Panel::new(PanelConfig::default()).unwrap(),
            &[("a".into(), a), ("b".into(), b)],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("prompt 0") && err.contains("other"), "{err}");
    }

    #[test]
    fn identical_models_tie_on_average_and_counts_add_up() {
        // Two models with the very same clips: wins ≈ losses, p large.
        let tune: Vec<u32> = [
            [30u32, 53],
            [32, 53],
            [34, 53],
            [35, 53],
            [37, 53],
            [35, 53],
            [34, 53],
            [32, 53],
        ]
        .iter()
        .flatten()
        .copied()
        .chain([1, 30, 56, 32, 56, 1, 0])
        .collect();
        let clips = vec![tune; 200];
        let report = compare(
            &Panel::new(PanelConfig::default()).unwrap(),
            &[
                ("x".into(), samples("x", &clips)),
                ("y".into(), samples("y", &clips)),
            ],
        )
        .expect("aligned");
        let c = &report.comparisons[0];
        assert_eq!(c.judgments, 600);
        assert_eq!(c.wins + c.ties + c.losses, 600);
        assert!((c.win_pct + c.tie_pct + c.loss_pct - 100.0).abs() < 1e-9);
        assert!((c.win_rate - 0.5).abs() < 0.1, "{c:?}");
        assert!(c.p_value > 0.01, "{c:?}");
        assert_eq!(report.prompts, 100);
        assert!(report.table().contains("x vs y"));
    }
}
