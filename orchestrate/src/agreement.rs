//! `musicrl judge --rewards`: how far the reward components agree with the judge on the very
//! clips it judged. Proxy against gold, on the policy's own samples: a reward that orders two
//! clips of one caption the way the judge's adherence (or well-formedness) does is one RL can
//! follow without gaming it.
//!
//! This module sits in the binary, above both `musicrl-judge` and the reward crates, so the
//! judge itself still never sees a reward model.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Serialize;

use musicrl_common::wire::ScoreInput;
use musicrl_config::Config;
use musicrl_judge::Sample;
use musicrl_judge::panel::Assessment;
use musicrl_reward::combine::RewardModel;

/// A judge measure a reward is compared with; `None` where the clip's caption claims nothing
/// the measure reads.
type Measure = fn(&Assessment) -> Option<f64>;

/// The judge's measures, by name.
pub const MEASURES: [(&str, Measure); 4] = [
    ("adherence", |a| a.adherence.overall),
    ("key", |a| a.adherence.key),
    ("meter", |a| a.adherence.meter),
    ("well_formed", |a| Some(a.well_formed.overall)),
];

/// Pairs whose judge measures differ by less than this are not counted (the judge cannot
/// tell them apart either).
pub const MIN_MEASURE_GAP: f64 = 1e-6;

/// One reward (a component, or the combined reward) against one judge measure.
#[derive(Debug, Clone, Serialize)]
pub struct Concordance {
    pub reward: String,
    pub measure: String,
    /// Same-caption clip pairs the judge tells apart on this measure.
    pub pairs: usize,
    /// Share of those pairs the reward orders as the judge does (a reward tie counts half);
    /// 0.5 is a reward that does not hear the measure, NaN: no pairs.
    pub concordance: f64,
}

/// A reward's spread across clips of one caption (the part of it RL can act on).
#[derive(Debug, Clone, Serialize)]
pub struct Spread {
    pub reward: String,
    pub mean: f64,
    /// Root-mean-square deviation from each caption's mean, over every clip.
    pub within_caption_sd: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Agreement {
    pub scorer_version: String,
    pub clips: usize,
    /// Mean of each reward by model.
    pub model_means: BTreeMap<String, BTreeMap<String, f64>>,
    pub spread: Vec<Spread>,
    pub concordance: Vec<Concordance>,
}

impl Agreement {
    /// A plain-text table: rewards down, measures across.
    pub fn table(&self) -> String {
        let mut rewards: Vec<&str> = Vec::new();
        for c in &self.concordance {
            if !rewards.contains(&c.reward.as_str()) {
                rewards.push(&c.reward);
            }
        }
        let mut out = format!(
            "reward-judge concordance over {} clips (same-caption pairs ordered as the judge orders them; 0.5 = deaf)\n{:<14}",
            self.clips, "reward"
        );
        for (m, _) in MEASURES {
            out.push_str(&format!("{m:>13}"));
        }
        out.push_str(&format!("{:>16}\n", "within-cap sd"));
        for r in rewards {
            out.push_str(&format!("{r:<14}"));
            for (m, _) in MEASURES {
                let c = self
                    .concordance
                    .iter()
                    .find(|c| c.reward == r && c.measure == m);
                match c {
                    Some(c) if c.pairs > 0 => out.push_str(&format!(
                        "{:>13}",
                        format!("{:.3} ({})", c.concordance, c.pairs)
                    )),
                    _ => out.push_str(&format!("{:>13}", "-")),
                }
            }
            let sd = self
                .spread
                .iter()
                .find(|s| s.reward == r)
                .map_or(f64::NAN, |s| s.within_caption_sd);
            out.push_str(&format!("{sd:>16.4}\n"));
        }
        out
    }
}

/// Concordance of `reward` with `measure` over every pair of clips sharing a caption.
/// `groups` holds, per caption, each clip's (reward, measure).
pub fn concordance(groups: &[Vec<(f64, Option<f64>)>]) -> (usize, f64) {
    let (mut pairs, mut agree) = (0usize, 0.0f64);
    for g in groups {
        for i in 0..g.len() {
            for j in i + 1..g.len() {
                let (Some(mi), Some(mj)) = (g[i].1, g[j].1) else {
                    continue;
                };
                let dm = mi - mj;
                if dm.abs() < MIN_MEASURE_GAP {
                    continue;
                }
                pairs += 1;
                let dr = g[i].0 - g[j].0;
                agree += if dr == 0.0 {
                    0.5
                } else if (dr > 0.0) == (dm > 0.0) {
                    1.0
                } else {
                    0.0
                };
            }
        }
    }
    (
        pairs,
        if pairs == 0 {
            f64::NAN
        } else {
            agree / pairs as f64
        },
    )
}

/// Root-mean-square deviation from each group's mean.
pub fn within_group_sd(groups: &[Vec<f64>]) -> f64 {
    let (mut ss, mut n) = (0.0, 0usize);
    for g in groups {
        if g.is_empty() {
            continue;
        }
        let mean = g.iter().sum::<f64>() / g.len() as f64;
        ss += g.iter().map(|x| (x - mean).powi(2)).sum::<f64>();
        n += g.len();
    }
    if n == 0 {
        f64::NAN
    } else {
        (ss / n as f64).sqrt()
    }
}

/// Scores every sample with the configured reward components and measures their agreement
/// with the judge. Returns each sample's rewards (components by name, then "reward") too.
pub fn measure(
    config: &Config,
    models: &[(String, Vec<Sample>)],
) -> anyhow::Result<(Agreement, Vec<Vec<BTreeMap<String, f64>>>)> {
    let reward = RewardModel::from_config(&config.reward)
        .context("building the reward components (reward.components) for --rewards")?;
    let names: Vec<String> = reward
        .components()
        .into_iter()
        .map(|c| c.name)
        .chain(std::iter::once("reward".to_string()))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut scored: Vec<Vec<BTreeMap<String, f64>>> = Vec::new();
    let mut bar = crate::progress::Progress::new(
        "scoring with the rewards",
        models.iter().map(|(_, s)| s.len() as u64).sum(),
        "clips",
    );
    for (_, samples) in models {
        let mut rows = Vec::with_capacity(samples.len());
        for chunk in samples.chunks(64) {
            let inputs: Vec<ScoreInput> = chunk
                .iter()
                .map(|s| ScoreInput {
                    caption: s.caption.clone(),
                    tokens: s.tokens.clone(),
                })
                .collect();
            let scores = runtime
                .block_on(reward.score(&inputs))
                .context("scoring the judged clips")?;
            for s in scores {
                let mut row: BTreeMap<String, f64> = names
                    .iter()
                    .zip(s.components.iter())
                    .map(|(n, &v)| (n.clone(), v as f64))
                    .collect();
                row.insert("reward".into(), s.reward as f64);
                rows.push(row);
            }
            bar.inc(chunk.len() as u64);
        }
        scored.push(rows);
    }
    bar.finish();

    // Pool every model's clips by caption: the reward is asked to order clips of one
    // caption, whichever model made them.
    let assessments: Vec<Vec<Assessment>> = models
        .iter()
        .map(|(_, s)| {
            s.iter()
                .map(|x| musicrl_judge::assess(&x.caption, &x.tokens))
                .collect()
        })
        .collect();
    let mut by_caption: BTreeMap<&str, Vec<(usize, usize)>> = BTreeMap::new();
    for (m, (_, samples)) in models.iter().enumerate() {
        for (i, s) in samples.iter().enumerate() {
            by_caption.entry(&s.caption).or_default().push((m, i));
        }
    }
    let mut spread = Vec::new();
    let mut conc = Vec::new();
    let mut model_means: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for name in &names {
        let groups: Vec<Vec<f64>> = by_caption
            .values()
            .map(|g| g.iter().map(|&(m, i)| scored[m][i][name]).collect())
            .collect();
        let all: Vec<f64> = groups.iter().flatten().copied().collect();
        spread.push(Spread {
            reward: name.clone(),
            mean: all.iter().sum::<f64>() / all.len().max(1) as f64,
            within_caption_sd: within_group_sd(&groups),
        });
        for (m, (model, _)) in models.iter().enumerate() {
            let rows = &scored[m];
            model_means.entry(model.clone()).or_default().insert(
                name.clone(),
                rows.iter().map(|r| r[name]).sum::<f64>() / rows.len().max(1) as f64,
            );
        }
        for (measure_name, f) in MEASURES {
            let groups: Vec<Vec<(f64, Option<f64>)>> = by_caption
                .values()
                .map(|g| {
                    g.iter()
                        .map(|&(m, i)| (scored[m][i][name], f(&assessments[m][i])))
                        .collect()
                })
                .collect();
            let (pairs, c) = concordance(&groups);
            conc.push(Concordance {
                reward: name.clone(),
                measure: measure_name.to_string(),
                pairs,
                concordance: c,
            });
        }
    }
    Ok((
        Agreement {
            scorer_version: reward.scorer_version(),
            clips: models.iter().map(|(_, s)| s.len()).sum(),
            model_means,
            spread,
            concordance: conc,
        },
        scored,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concordance_counts_same_caption_pairs_only() {
        // Caption 1: rewards 0.1, 0.2, 0.3 with measures 0.0, 1.0, 0.5: pairs (0,1) agree,
        // (0,2) agree, (1,2) disagree. Caption 2: a reward tie on a told-apart pair (half),
        // and a clip without the measure (no pair).
        let groups = vec![
            vec![(0.1, Some(0.0)), (0.2, Some(1.0)), (0.3, Some(0.5))],
            vec![(0.5, Some(0.2)), (0.5, Some(0.9)), (9.0, None)],
        ];
        let (pairs, c) = concordance(&groups);
        assert_eq!(pairs, 4);
        assert!((c - 2.5 / 4.0).abs() < 1e-12);
        // Equal measures are not a pair.
        let (pairs, c) = concordance(&[vec![(0.1, Some(0.3)), (0.2, Some(0.3))]]);
        assert_eq!(pairs, 0);
        assert!(c.is_nan());
    }

    #[test]
    fn within_caption_sd_ignores_differences_between_captions() {
        // Means 1 and 11; deviations ±1 in both: sd 1.
        let sd = within_group_sd(&[vec![0.0, 2.0], vec![10.0, 12.0]]);
        assert!((sd - 1.0).abs() < 1e-12);
    }
}
