//! "Did the music get better?", answered at the end of a `musicrl local` run: θ0 (the run's
//! KL reference, `checkpoints/reference.bpk`) and the final policy sample the first held-out
//! captions (`experiment.judge_prompts`, the test split), and the rater panel rates them side
//! by side, as `musicrl judge` does. The panel is *simulated*: listeners who read key, meter
//! and form off the score (`judge/`), never a reward the run trained on; the run report shows
//! its verdict with the clips, players and sheet music. A small set, so the p-value says how
//! much to trust it; `musicrl judge` or `musicrl experiment` give the full measurement.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use musicrl_config::Config;
use musicrl_judge::{Panel, PanelConfig};

use crate::judging::{sample_policy, write_samples};

/// The verdict's folder inside a run's output.
pub const DIR: &str = "verdict";
/// The two models' names in the verdict's files.
pub const BEFORE: &str = "before";
pub const AFTER: &str = "after";

/// The panel's verdict on the final policy against θ0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub before: PathBuf,
    pub after: PathBuf,
    pub prompts: usize,
    pub samples_per_prompt: usize,
    /// Panel judgements of the final policy's clip against θ0's for the same caption.
    pub wins: usize,
    pub ties: usize,
    pub losses: usize,
    /// wins / (wins + losses) (NaN when every judgement tied).
    #[serde(deserialize_with = "crate::experiment::nan")]
    pub win_rate: f64,
    /// Two-sided Wilcoxon signed-rank test over captions.
    #[serde(deserialize_with = "crate::experiment::nan")]
    pub p_value: f64,
    /// The panel's mean overall rating (1–5) of each model's clips.
    #[serde(deserialize_with = "crate::experiment::nan")]
    pub before_overall: f64,
    #[serde(deserialize_with = "crate::experiment::nan")]
    pub after_overall: f64,
    pub seconds: f64,
}

impl Verdict {
    /// One line for a person.
    pub fn sentence(&self) -> String {
        let judged = if self.p_value < 0.05 {
            if self.win_rate > 0.5 {
                "better"
            } else {
                "worse"
            }
        } else {
            "not measurably different"
        };
        format!(
            "the simulated rater panel prefers the final policy to θ0 in {:.0}% of decisive \
             judgements ({} wins, {} ties, {} losses; Wilcoxon p = {:.2e}) on {} held-out \
             captions × {}: {judged}",
            100.0 * self.win_rate,
            self.wins,
            self.ties,
            self.losses,
            self.p_value,
            self.prompts,
            self.samples_per_prompt
        )
    }
}

/// Samples `before` and `after` on the first `prompts` held-out captions (`samples` each),
/// has the panel compare them, and writes `out/verdict/` (results.json, the judged samples
/// with their scores, ABC and MIDI).
pub fn before_after(
    config: &Config,
    out: &Path,
    before: &Path,
    after: &Path,
    prompts: usize,
    samples: usize,
    seed: u64,
) -> anyhow::Result<Verdict> {
    let started = Instant::now();
    let file = musicrl_config::paths::require(
        "experiment.judge_prompts",
        &config.experiment.judge_prompts,
    )?;
    let mut captions = musicrl_common::prompts::load_prompts(&file)
        .context("the held-out prompts (experiment.judge_prompts)")?;
    captions.truncate(prompts);
    let models = vec![
        (
            AFTER.to_string(),
            sample_policy(config, AFTER, after, &captions, samples, seed, 1)?,
        ),
        (
            BEFORE.to_string(),
            sample_policy(config, BEFORE, before, &captions, samples, seed, 0)?,
        ),
    ];
    let panel = Panel::new(PanelConfig::default()).map_err(anyhow::Error::msg)?;
    let report = musicrl_judge::compare(&panel, &models)?;
    let c = report
        .comparisons
        .first()
        .context("the panel compared the two models")?;
    let overall = |name: &str| {
        report
            .models
            .iter()
            .find(|m| m.model == name)
            .map_or(f64::NAN, |m| m.overall)
    };
    let dir = out.join(DIR);
    write_samples(&dir.join("samples"), &models, None)?;
    let verdict = Verdict {
        before: before.to_path_buf(),
        after: after.to_path_buf(),
        prompts: captions.len(),
        samples_per_prompt: samples,
        wins: c.wins,
        ties: c.ties,
        losses: c.losses,
        win_rate: c.win_rate,
        p_value: c.p_value,
        before_overall: overall(BEFORE),
        after_overall: overall(AFTER),
        seconds: started.elapsed().as_secs_f64(),
    };
    musicrl_config::fsutil::write_atomic(
        &dir.join("results.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "verdict": verdict,
            "report": report,
            "table": report.table(),
        }))?
        .as_bytes(),
    )?;
    Ok(verdict)
}

/// The verdict of a run folder, when it has one.
pub fn read(run: &Path) -> Option<Verdict> {
    let text = std::fs::read_to_string(run.join(DIR).join("results.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    serde_json::from_value(v.get("verdict")?.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(win_rate: f64, p_value: f64) -> Verdict {
        Verdict {
            before: "a".into(),
            after: "b".into(),
            prompts: 24,
            samples_per_prompt: 2,
            wins: 60,
            ties: 20,
            losses: 40,
            win_rate,
            p_value,
            before_overall: 3.0,
            after_overall: 3.2,
            seconds: 1.0,
        }
    }

    #[test]
    fn the_sentence_says_better_only_when_the_test_says_so() {
        assert!(verdict(0.6, 0.01).sentence().ends_with(": better"));
        assert!(verdict(0.4, 0.01).sentence().ends_with(": worse"));
        let s = verdict(0.6, 0.2).sentence();
        assert!(s.ends_with("not measurably different"), "{s}");
        assert!(s.contains("60%") && s.contains("simulated"), "{s}");
    }

    #[test]
    fn a_verdict_reads_back_with_a_nan_win_rate() {
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::create_dir_all(dir.path().join(DIR)).expect("mkdir");
        let v = verdict(f64::NAN, f64::NAN);
        std::fs::write(
            dir.path().join(DIR).join("results.json"),
            serde_json::to_string(&serde_json::json!({ "verdict": v })).expect("JSON"),
        )
        .expect("writes");
        let back = read(dir.path()).expect("reads");
        assert!(back.win_rate.is_nan() && back.p_value.is_nan());
        assert_eq!(back.wins, 60);
    }
}
