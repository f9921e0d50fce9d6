//! Appeal: how much one rater likes a melody, from the rater's own taste.
//!
//! A rater's taste is **single-peaked**: for each of seven melodic qualities
//! ([`appeal_features`]) the rater has an ideal amount and a tolerance, and likes a melody
//! less the further it is from the ideal in any of them — an ideal amount of stepwise motion
//! and of repetition, not "more is better". So no extreme (a one-note drone, a scale run of
//! sixteenths) wins.
//!
//! The raters' tastes are centred on [`TYPICAL`], the qualities of a typical folk tune, moved
//! by `gap` tolerances along [`GAP_DIRECTION`] (instructed raters weigh shape and closure a
//! little more than the app's users do: the paper's rater/user population gap), and each
//! rater's ideal is drawn around that centre with `spread` tolerances. The app users'
//! simulated taste (in the reward models' crate) is defined separately: this crate never
//! reads it.

use rand::RngExt;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::analysis::Melody;

/// Number of appeal features.
pub const FEATURES: usize = 7;

/// Names of [`appeal_features`], in order.
pub const FEATURE_NAMES: [&str; FEATURES] = [
    "span",
    "stepwise",
    "repeated_notes",
    "density",
    "phrase_repetition",
    "closure",
    "rhythmic_variety",
];

/// The qualities of a melody the raters' taste is over:
/// span (semitones / 24), stepwise motion (share of intervals of one or two semitones),
/// repeated notes (share of unisons), density (notes and rests per quarter, / 4, at most 2),
/// phrase repetition
/// (share of bars whose first three pitches repeat an earlier bar's), closure (1 when the
/// last note is the estimated key's tonic), rhythmic variety (distinct durations / 5, at
/// most 1). A melody of fewer than two notes has all zeros.
pub fn appeal_features(m: &Melody) -> [f64; FEATURES] {
    let pitches: Vec<i32> = m.pitched().map(|(p, _)| i32::from(p)).collect();
    if pitches.len() < 2 {
        return [0.0; FEATURES];
    }
    let intervals: Vec<i32> = pitches.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
    let n_int = intervals.len() as f64;
    let span =
        f64::from(pitches.iter().max().unwrap_or(&0) - pitches.iter().min().unwrap_or(&0)) / 24.0;
    let stepwise = intervals.iter().filter(|&&i| i == 1 || i == 2).count() as f64 / n_int;
    let repeated = intervals.iter().filter(|&&i| i == 0).count() as f64 / n_int;
    let density = (m.notes.len() as f64 / m.quarters().max(0.25) / 4.0).min(2.0);
    let mut bars: Vec<Vec<u8>> = vec![Vec::new(); m.bar_lengths.len().max(1)];
    for n in &m.notes {
        if let (Some(p), Some(bar)) = (n.pitch, bars.get_mut(n.bar)) {
            bar.push(p);
        }
    }
    let heads: Vec<&[u8]> = bars
        .iter()
        .filter(|b| b.len() >= 3)
        .map(|b| &b[..3])
        .collect();
    let phrase = heads
        .iter()
        .enumerate()
        .filter(|(i, h)| heads[..*i].contains(h))
        .count() as f64
        / heads.len().max(1) as f64;
    let closure = match (m.estimated_key(), m.last_pitch()) {
        (Some((k, _)), Some(last)) => f64::from(u8::from(last % 12 == k.tonic)),
        _ => 0.0,
    };
    let mut durations: Vec<u32> = m.notes.iter().map(|n| n.duration).collect();
    durations.sort_unstable();
    durations.dedup();
    let variety = (durations.len() as f64 / 5.0).min(1.0);
    [span, stepwise, repeated, density, phrase, closure, variety]
}

/// The qualities of a typical tune: the median of each feature (the mean for closure, which
/// is 0 or 1) over the corpus's 626 test-split tunes cut to the policy's 128 tokens, measured
/// by `typical_features_of_the_corpus` in `judge/tests/corpus.rs`, which keeps them true.
pub const TYPICAL: [f64; FEATURES] = [0.583, 0.489, 0.160, 0.396, 0.250, 0.431, 0.800];

/// How far from the ideal a melody can be before it is clearly worse (one tolerance costs
/// as much in every feature).
pub const TOLERANCE: [f64; FEATURES] = [0.20, 0.18, 0.12, 0.20, 0.25, 0.50, 0.25];

/// Relative importance of each feature to the average rater.
pub const IMPORTANCE: [f64; FEATURES] = [1.0, 1.5, 1.0, 1.0, 1.0, 0.8, 0.8];

/// Where instructed raters' taste sits relative to the typical tune, per tolerance of `gap`:
/// a little more stepwise, more phrase repetition and closure, a little less dense.
pub const GAP_DIRECTION: [f64; FEATURES] = [0.0, 0.5, 0.0, -0.3, 0.5, 0.6, 0.0];

/// One rater's taste.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Taste {
    pub ideal: [f64; FEATURES],
    pub importance: [f64; FEATURES],
}

impl Taste {
    /// A rater drawn around the panel's centre: ideal = TYPICAL + (gap · GAP_DIRECTION +
    /// spread · N(0, 1)) · TOLERANCE; importance = IMPORTANCE · exp(0.3 · N(0, 1)).
    pub fn draw(gap: f64, spread: f64, rng: &mut StdRng) -> Taste {
        let mut ideal = [0.0; FEATURES];
        let mut importance = [0.0; FEATURES];
        for f in 0..FEATURES {
            ideal[f] = TYPICAL[f] + (gap * GAP_DIRECTION[f] + spread * normal(rng)) * TOLERANCE[f];
            importance[f] = IMPORTANCE[f] * (0.3 * normal(rng)).exp();
        }
        Taste { ideal, importance }
    }

    /// Appeal in (0, 1]: exp(−½ · weighted mean of squared distances in tolerances). 1 at
    /// the ideal, about 0.6 one tolerance away in every feature, about 0.14 at two.
    pub fn appeal(&self, features: &[f64; FEATURES]) -> f64 {
        let total: f64 = self.importance.iter().sum();
        let d2: f64 = (0..FEATURES)
            .map(|f| self.importance[f] * ((features[f] - self.ideal[f]) / TOLERANCE[f]).powi(2))
            .sum::<f64>()
            / total;
        (-0.5 * d2).exp()
    }
}

/// A standard normal draw (Box–Muller).
pub fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taste_is_single_peaked() {
        let t = Taste {
            ideal: TYPICAL,
            importance: IMPORTANCE,
        };
        assert!((t.appeal(&TYPICAL) - 1.0).abs() < 1e-12);
        for f in 0..FEATURES {
            let mut more = TYPICAL;
            more[f] += TOLERANCE[f];
            let mut much_more = TYPICAL;
            much_more[f] += 3.0 * TOLERANCE[f];
            let mut less = TYPICAL;
            less[f] -= TOLERANCE[f];
            assert!(t.appeal(&more) < 1.0 && t.appeal(&much_more) < t.appeal(&more));
            assert!(
                (t.appeal(&less) - t.appeal(&more)).abs() < 1e-12,
                "symmetric"
            );
        }
        // Everything one tolerance off: exp(−½).
        let mut off = TYPICAL;
        for f in 0..FEATURES {
            off[f] += TOLERANCE[f];
        }
        assert!((t.appeal(&off) - (-0.5f64).exp()).abs() < 1e-12);
    }
}
