//! Checkpoint selection and the over-optimisation rule: a run is evaluated on held-out
//! prompts at a fixed interval; the checkpoint kept is the one with the best held-out score
//! (a signal the policy is not trained on), and the rule fires when that score has fallen
//! below its best for `patience` evaluations in a row while the training reward still rises —
//! the proxy climbing while what it stands for declines, which is how the paper saw its
//! preference reward over-optimised (docs/method.md §4).
//!
//! Both halves are judged against their own noise: a fall counts only beyond
//! `standard_errors` standard errors of the held-out difference, and a rise only beyond as
//! many standard errors of the training-reward difference (each point's reward is a mean over
//! its evaluation clips, with its standard error). A flat curve with noise fires neither.
//! The decision reports its margin over the runner-up and whether the choice is close
//! (within one standard error of the difference), where a caller should look again with
//! more samples.
//!
//! Pure: points in, a decision out. The experiment runner stops the run when it fires and
//! uses the best checkpoint (a roll-back).

use serde::{Deserialize, Serialize};

/// One held-out evaluation of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub step: u64,
    /// The held-out score that drives selection (higher is better), and its standard error
    /// (0 when unknown).
    pub held_out: f64,
    #[serde(default)]
    pub held_out_se: f64,
    /// The training reward at this point (the proxy the policy climbs), and its standard
    /// error (0 when unknown).
    pub train_reward: f64,
    #[serde(default)]
    pub train_reward_se: f64,
}

/// When the rule fires.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rule {
    /// Evaluations in a row below the best (by more than `min_delta`) before it fires.
    pub patience: usize,
    /// A score counts as a fall when it is below the best by more than this and by more than
    /// `standard_errors` standard errors of the difference, √(se_best² + se²): a dip within
    /// the evaluation's own noise is not a fall.
    pub min_delta: f64,
    pub standard_errors: f64,
}

impl Default for Rule {
    fn default() -> Self {
        Self {
            patience: 2,
            min_delta: 0.0,
            standard_errors: 2.0,
        }
    }
}

impl Rule {
    /// Whether the training reward at `q` rose above `best`'s by more than its noise.
    fn rose(&self, best: &Point, q: &Point) -> bool {
        let se = (best.train_reward_se.powi(2) + q.train_reward_se.powi(2)).sqrt();
        q.train_reward - best.train_reward > self.standard_errors * se
    }

    /// Whether `q` counts as a fall from `best`.
    // Negated on purpose: a NaN held-out score must count as a fall.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    fn fell(&self, best: &Point, q: &Point) -> bool {
        let se = (best.held_out_se.powi(2) + q.held_out_se.powi(2)).sqrt();
        let margin = self.min_delta.max(self.standard_errors * se);
        // A NaN score counts as a fall (it is certainly not as good as the best).
        !(q.held_out >= best.held_out - margin)
    }
}

/// Why and when the rule fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Firing {
    /// The evaluation at which it fired.
    pub step: u64,
    pub best_step: u64,
    /// How far the held-out score had fallen from its best, and how far the training reward
    /// had risen since then.
    pub held_out_fall: f64,
    pub reward_rise: f64,
    pub reason: String,
}

/// The decision over a run's evaluations so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// Index into the points of the best held-out score (the earliest, on a tie).
    pub best: usize,
    pub best_step: u64,
    pub best_held_out: f64,
    /// Set once the rule has fired; points after it are not looked at.
    pub fired: Option<Firing>,
    /// The best other candidate (before any firing) and how far the chosen one leads it,
    /// with the standard error of that lead; `None` with a single candidate.
    #[serde(default)]
    pub runner_up_step: Option<u64>,
    #[serde(default)]
    pub margin: Option<f64>,
    #[serde(default)]
    pub margin_se: Option<f64>,
}

impl Selection {
    /// Whether the choice is close: the runner-up within one standard error of the lead.
    pub fn close(&self) -> bool {
        matches!((self.margin, self.margin_se), (Some(m), Some(se)) if m <= se)
    }
}

/// The margin of `points[best]` over the best of the other `candidates` (indices).
fn margin(
    points: &[Point],
    best: usize,
    candidates: usize,
) -> (Option<u64>, Option<f64>, Option<f64>) {
    let runner = (0..candidates)
        .filter(|&i| i != best && points[i].held_out.is_finite())
        .max_by(|&a, &b| points[a].held_out.total_cmp(&points[b].held_out));
    match runner {
        None => (None, None, None),
        Some(r) => (
            Some(points[r].step),
            Some(points[best].held_out - points[r].held_out),
            Some((points[best].held_out_se.powi(2) + points[r].held_out_se.powi(2)).sqrt()),
        ),
    }
}

/// Applies the rule to `points` in order, as it would have been applied online.
/// `None` when there are no points; non-finite scores never become the best.
pub fn select(points: &[Point], rule: &Rule) -> Option<Selection> {
    let mut best: Option<usize> = None;
    for (i, p) in points.iter().enumerate() {
        let better = match best {
            None => p.held_out.is_finite(),
            Some(b) => p.held_out.is_finite() && p.held_out > points[b].held_out,
        };
        if better {
            best = Some(i);
            continue;
        }
        let Some(b) = best else { continue };
        let bp = points[b];
        let since = &points[b + 1..=i];
        let fallen = rule.patience > 0
            && since.len() >= rule.patience
            && since[since.len() - rule.patience..]
                .iter()
                .all(|q| rule.fell(&bp, q));
        if fallen && rule.rose(&bp, p) {
            let fall = bp.held_out - p.held_out;
            let rise = p.train_reward - bp.train_reward;
            let (runner_up_step, margin, margin_se) = margin(points, b, i + 1);
            return Some(Selection {
                best: b,
                best_step: bp.step,
                best_held_out: bp.held_out,
                runner_up_step,
                margin,
                margin_se,
                fired: Some(Firing {
                    step: p.step,
                    best_step: bp.step,
                    held_out_fall: fall,
                    reward_rise: rise,
                    reason: format!(
                        "over-optimisation: the held-out score fell below its best ({:.4} at step {}) \
                         for {} evaluations in a row (each beyond {} standard errors), by {fall:.4} \
                         at step {}, while the training reward rose by {rise:.4} (beyond {} standard errors); \
                         rolled back to step {}",
                        bp.held_out,
                        bp.step,
                        rule.patience,
                        rule.standard_errors,
                        p.step,
                        rule.standard_errors,
                        bp.step
                    ),
                }),
            });
        }
    }
    best.map(|b| {
        let (runner_up_step, margin, margin_se) = margin(points, b, points.len());
        Selection {
            best: b,
            best_step: points[b].step,
            best_held_out: points[b].held_out,
            fired: None,
            runner_up_step,
            margin,
            margin_se,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(held_out: &[f64], reward: &[f64]) -> Vec<Point> {
        held_out
            .iter()
            .zip(reward)
            .enumerate()
            .map(|(i, (&h, &r))| Point {
                step: 50 * i as u64,
                held_out: h,
                held_out_se: 0.0,
                train_reward: r,
                train_reward_se: 0.0,
            })
            .collect()
    }

    /// A deterministic standard normal stream (Box–Muller over a 64-bit LCG).
    fn normals(seed: u64, n: usize) -> Vec<f64> {
        let mut state = seed;
        let mut uniform = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let (u, v) = (uniform(), uniform());
                (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
            })
            .collect()
    }

    #[test]
    fn a_flat_curve_with_noise_of_the_measured_size_does_not_fire() {
        // Noise of the size the issue "RL that makes the music better" reports: neighbouring
        // checkpoints' held-out scores ±0.1 apart, i.e. a standard error of about 0.035 each
        // (two standard errors of a difference); the training reward, a mean over the same
        // clips, about 0.01. A run whose true scores are flat: 12 evaluations, 200 seeds.
        let (held_se, reward_se) = (0.035, 0.01);
        // How many of the 200 flat curves fire, with the reward's noise told to the rule or
        // not (0: the previous rule).
        let firings = |told: f64| {
            (0..200u64)
                .filter(|&seed| {
                    let noise = normals(seed, 24);
                    let points: Vec<Point> = (0..12)
                        .map(|i| Point {
                            step: 25 * (i as u64 + 1),
                            held_out: 3.7 + held_se * noise[i],
                            held_out_se: held_se,
                            train_reward: 1.1 + reward_se * noise[12 + i],
                            train_reward_se: told,
                        })
                        .collect();
                    let s = select(&points, &Rule::default()).expect("points");
                    s.fired.is_some()
                })
                .count()
        };
        // Both halves must clear two standard errors of their differences: rare together.
        let fired = firings(reward_se);
        assert!(fired <= 4, "fired on {fired} of 200 flat curves");
        // Without the reward's noise it fires far more often.
        let old = firings(0.0);
        eprintln!(
            "flat curves: the rule fired on {fired} of 200 ({old} with the reward's noise ignored)"
        );
        assert!(
            old > 3 * fired.max(1),
            "with the reward's noise ignored: {old} against {fired}"
        );
    }

    #[test]
    fn a_real_rise_and_fall_still_fires_and_the_margin_is_reported() {
        let mut points = curve(
            &[3.60, 3.75, 3.62, 3.58, 3.55],
            &[1.00, 1.05, 1.12, 1.18, 1.25],
        );
        for p in &mut points {
            p.held_out_se = 0.03;
            p.train_reward_se = 0.01;
        }
        let s = select(&points, &Rule::default()).expect("points");
        let f = s.fired.as_ref().expect("fired");
        assert_eq!((f.best_step, f.step), (50, 150));
        // A rise inside the reward's own noise does not fire: 0.015 < 2·√2·0.01.
        let mut flat = points.clone();
        for (p, r) in flat.iter_mut().zip([1.0, 1.005, 1.010, 1.015, 1.02]) {
            p.train_reward = r;
        }
        assert_eq!(select(&flat, &Rule::default()).expect("points").fired, None);
        // The margin: step 50 leads step 100 (3.62) by 0.13, standard error √2·0.03.
        assert_eq!(s.runner_up_step, Some(100));
        assert!((s.margin.expect("margin") - 0.13).abs() < 1e-9);
        assert!((s.margin_se.expect("se") - 0.03 * 2f64.sqrt()).abs() < 1e-9);
        assert!(!s.close());
        // Two checkpoints a hair apart are a close choice.
        let mut near = curve(&[3.70, 3.71], &[1.0, 1.0]);
        near.iter_mut().for_each(|p| p.held_out_se = 0.03);
        let s = select(&near, &Rule::default()).expect("points");
        assert_eq!((s.best_step, s.runner_up_step), (50, Some(0)));
        assert!(s.close());
        // A single candidate has no runner-up.
        assert_eq!(
            select(&near[..1], &Rule::default()).expect("points").margin,
            None
        );
    }

    #[test]
    fn fires_when_the_proxy_rises_while_the_held_out_score_falls() {
        // The proxy rises throughout; the held-out score peaks at step 100 and then falls.
        let points = curve(
            &[3.0, 3.2, 3.4, 3.3, 3.1, 2.9],
            &[0.1, 0.3, 0.5, 0.7, 0.9, 1.1],
        );
        let s = select(&points, &Rule::default()).expect("points");
        assert_eq!((s.best, s.best_step), (2, 100));
        let f = s.fired.expect("fired");
        // Two evaluations below the best: steps 150 and 200; it fires at 200.
        assert_eq!((f.step, f.best_step), (200, 100));
        assert!((f.held_out_fall - 0.3).abs() < 1e-12);
        assert!((f.reward_rise - 0.4).abs() < 1e-12);
        assert!(f.reason.contains("rolled back to step 100"), "{}", f.reason);
        // Online: with only the first four points it has not fired yet.
        assert!(
            select(&points[..4], &Rule::default())
                .expect("points")
                .fired
                .is_none()
        );
    }

    #[test]
    fn a_plateau_or_a_falling_proxy_keeps_the_best_without_firing() {
        // The held-out score falls but so does the training reward: not over-optimisation.
        let points = curve(&[3.0, 3.4, 3.1, 3.0, 2.9], &[0.5, 0.6, 0.5, 0.4, 0.3]);
        let s = select(&points, &Rule::default()).expect("points");
        assert_eq!((s.best_step, s.fired), (50, None));
        // A fall within min_delta does not count.
        let points = curve(&[3.0, 3.4, 3.38, 3.39, 3.37], &[0.1, 0.2, 0.3, 0.4, 0.5]);
        let rule = Rule {
            min_delta: 0.05,
            ..Rule::default()
        };
        assert_eq!(select(&points, &rule).expect("points").fired, None);
        assert!(
            select(&points, &Rule::default())
                .expect("points")
                .fired
                .is_some()
        );
        // A recovery resets the count: the new best is later.
        let points = curve(&[3.0, 2.9, 3.5, 3.4], &[0.1, 0.2, 0.3, 0.4]);
        let s = select(&points, &Rule::default()).expect("points");
        assert_eq!((s.best_step, s.fired), (100, None));
        assert_eq!(select(&[], &Rule::default()), None);
        // A fall within two standard errors of the difference is noise: 3.4 ± 0.03 against
        // 3.36 ± 0.03 differs by 0.04 < 2·√(0.03² + 0.03²) ≈ 0.085.
        let mut noisy = curve(&[3.0, 3.4, 3.36, 3.35], &[0.1, 0.2, 0.3, 0.4]);
        for p in &mut noisy {
            p.held_out_se = 0.03;
        }
        assert_eq!(
            select(&noisy, &Rule::default()).expect("points").fired,
            None
        );
        noisy[2].held_out = 3.30;
        noisy[3].held_out = 3.25;
        assert!(
            select(&noisy, &Rule::default())
                .expect("points")
                .fired
                .is_some()
        );
        // NaN never becomes the best.
        let points = curve(&[f64::NAN, 3.0], &[0.0, 0.1]);
        assert_eq!(select(&points, &Rule::default()).expect("points").best, 1);
    }
}
