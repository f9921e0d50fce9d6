//! The rater panel: instructed raters who score clips on a 1–5 scale for text adherence,
//! quality and appeal, and overall, the way the paper's raters compared two clips of one
//! prompt.
//!
//! What a rater hears is measured without any learned model ([`Assessment`]): adherence to
//! the caption's claims ([`crate::adherence`]), well-formedness ([`crate::wellformed`]) and
//! the melody's appeal features ([`crate::appeal`]). Raters differ in taste (appeal), in how
//! much each axis weighs in their overall score, and in harshness; each score carries rater
//! noise and is rounded to a whole point, so ties happen. The clip heard first gets a small
//! position bonus, which is why the panel randomises positions.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::adherence::{Adherence, adherence};
use crate::analysis::Melody;
use crate::appeal::{FEATURES, Taste, appeal_features, normal};
use crate::claims::{Claims, claims_of};
use crate::wellformed::{WellFormed, well_formed};

/// The panel's shape. The defaults are the paper's protocol (3 raters a pair) with a rater
/// pool of 60.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PanelConfig {
    /// Raters in the pool.
    pub raters: usize,
    /// Raters who score each pair.
    pub raters_per_pair: usize,
    /// How far the raters' taste centre sits from the typical tune, in tolerances along
    /// `appeal::GAP_DIRECTION` (the rater/user population gap).
    pub gap: f64,
    /// How much raters' ideals differ from one another, in tolerances.
    pub spread: f64,
    /// Standard deviation of a rater's noise, in points of the 1–5 scale.
    pub noise: f64,
    /// Points added to the clip heard first.
    pub position_bias: f64,
    pub seed: u64,
}

impl Default for PanelConfig {
    fn default() -> Self {
        Self {
            raters: 60,
            raters_per_pair: 3,
            gap: 0.5,
            spread: 0.5,
            noise: 0.5,
            position_bias: 0.15,
            seed: 2024,
        }
    }
}

impl PanelConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.raters == 0 || self.raters_per_pair == 0 || self.raters_per_pair > self.raters {
            return Err(format!(
                "the panel needs 1 ≤ raters_per_pair ({}) ≤ raters ({})",
                self.raters_per_pair, self.raters
            ));
        }
        for (name, v) in [
            ("gap", self.gap),
            ("spread", self.spread),
            ("noise", self.noise),
            ("position_bias", self.position_bias),
        ] {
            if !v.is_finite() || (name != "gap" && v < 0.0) {
                return Err(format!("panel {name} must be a finite number ≥ 0, not {v}"));
            }
        }
        Ok(())
    }
}

/// What the panel measures of one clip before any rater's taste comes in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    pub claims: Claims,
    pub adherence: Adherence,
    pub well_formed: WellFormed,
    pub features: [f64; FEATURES],
    /// Tokens up to and including the first END.
    pub length: usize,
    pub ended: bool,
}

/// Measures one clip against its caption.
pub fn assess(caption: &str, tokens: &[u32]) -> Assessment {
    let m = Melody::of(tokens);
    let claims = claims_of(caption);
    Assessment {
        adherence: adherence(&m, &claims),
        well_formed: well_formed(&m),
        features: appeal_features(&m),
        claims,
        length: tokens
            .iter()
            .position(|&t| t == musicrl_music::tokens::END)
            .map_or(tokens.len(), |i| i + 1),
        ended: m.ended,
    }
}

/// One rater.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rater {
    pub taste: Taste,
    /// Weights of adherence, quality and appeal in the overall score (they sum to 1).
    pub weights: [f64; 3],
    /// Points added to every score (negative: a harsh rater).
    pub leniency: f64,
}

/// One rater's scores for one clip, each 1–5 (`adherence` is `None` when the caption claims
/// nothing the policy controls).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rating {
    pub overall: u8,
    pub adherence: Option<u8>,
    pub quality: u8,
    pub appeal: u8,
}

/// The pool's expected scores of one clip, each in [1, 5] ([`Panel::expected`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Expected {
    pub overall: f64,
    /// `None` when the caption claims nothing the policy controls.
    pub adherence: Option<f64>,
    pub quality: f64,
    pub appeal: f64,
}

/// The rater pool.
#[derive(Debug, Clone)]
pub struct Panel {
    pub config: PanelConfig,
    pub raters: Vec<Rater>,
}

fn points(latent: f64) -> u8 {
    latent.round().clamp(1.0, 5.0) as u8
}

impl Panel {
    pub fn new(config: PanelConfig) -> Result<Panel, String> {
        config.validate()?;
        let mut rng = StdRng::seed_from_u64(config.seed);
        let raters = (0..config.raters)
            .map(|_| {
                let taste = Taste::draw(config.gap, config.spread, &mut rng);
                // Axis weights around (0.35, 0.3, 0.35), each rater their own.
                let raw = [0.35, 0.30, 0.35].map(|w: f64| w * (0.35 * normal(&mut rng)).exp());
                let sum: f64 = raw.iter().sum();
                let leniency = 0.3 * normal(&mut rng);
                Rater {
                    taste,
                    weights: raw.map(|w| w / sum),
                    leniency,
                }
            })
            .collect();
        Ok(Panel { config, raters })
    }

    /// Rater `r`'s scores of a clip; `first` when it was heard first.
    pub fn rate(&self, r: usize, a: &Assessment, first: bool, rng: &mut StdRng) -> Rating {
        let rater = &self.raters[r];
        let noise = self.config.noise;
        let bias = if first {
            self.config.position_bias
        } else {
            0.0
        };
        let scale = |x: f64| 1.0 + 4.0 * x.clamp(0.0, 1.0) + rater.leniency + bias;
        let adherence = a.adherence.overall.map(|x| scale(x) + noise * normal(rng));
        let quality = scale(a.well_formed.overall) + noise * normal(rng);
        let appeal = scale(rater.taste.appeal(&a.features)) + noise * normal(rng);
        let (w_a, w_q, w_p) = match adherence {
            Some(_) => (rater.weights[0], rater.weights[1], rater.weights[2]),
            None => (0.0, rater.weights[1], rater.weights[2]),
        };
        let overall = (w_a * adherence.unwrap_or(0.0) + w_q * quality + w_p * appeal)
            / (w_a + w_q + w_p)
            + 0.5 * noise * normal(rng);
        Rating {
            overall: points(overall),
            adherence: adherence.map(points),
            quality: points(quality),
            appeal: points(appeal),
        }
    }

    /// The pool's mean latent scores of a clip, 1–5, without rater noise, rounding or
    /// position: the panel's expected verdict on one clip, the held-out score an experiment
    /// tracks during training (it needs no second model to compare with).
    pub fn expected(&self, a: &Assessment) -> Expected {
        let n = self.raters.len() as f64;
        let (mut adherence, mut quality, mut appeal, mut overall) = (0.0, 0.0, 0.0, 0.0);
        for rater in &self.raters {
            let scale = |x: f64| (1.0 + 4.0 * x.clamp(0.0, 1.0) + rater.leniency).clamp(1.0, 5.0);
            let ad = a.adherence.overall.map(scale);
            let q = scale(a.well_formed.overall);
            let p = scale(rater.taste.appeal(&a.features));
            let w = rater.weights;
            let w_a = if ad.is_some() { w[0] } else { 0.0 };
            overall += (w_a * ad.unwrap_or(0.0) + w[1] * q + w[2] * p) / (w_a + w[1] + w[2]);
            adherence += ad.unwrap_or(f64::NAN);
            quality += q;
            appeal += p;
        }
        Expected {
            overall: overall / n,
            adherence: a.adherence.overall.map(|_| adherence / n),
            quality: quality / n,
            appeal: appeal / n,
        }
    }

    /// `raters_per_pair` distinct raters for one pair.
    pub fn draw_raters(&self, rng: &mut StdRng) -> Vec<usize> {
        let mut chosen = Vec::with_capacity(self.config.raters_per_pair);
        while chosen.len() < self.config.raters_per_pair {
            let r = rng.random_range(0..self.raters.len());
            if !chosen.contains(&r) {
                chosen.push(r);
            }
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jig() -> Vec<u32> {
        crate::fixtures::d_major_jig()
    }

    #[test]
    fn ratings_are_whole_points_and_follow_the_measures() {
        let panel = Panel::new(PanelConfig::default()).expect("valid");
        let good = assess("a jig in D major, in six-eight", &jig());
        let drone: Vec<u32> = std::iter::repeat_n([30u32, 53], 64).flatten().collect();
        let bad = assess("a jig in D major, in six-eight", &drone);
        let mut rng = StdRng::seed_from_u64(1);
        let (mut wins, mut ties) = (0, 0);
        for r in 0..panel.raters.len() {
            let a = panel.rate(r, &good, r % 2 == 0, &mut rng);
            let b = panel.rate(r, &bad, r % 2 == 1, &mut rng);
            for x in [
                a.overall, a.quality, a.appeal, b.overall, b.quality, b.appeal,
            ] {
                assert!((1..=5).contains(&x));
            }
            wins += usize::from(a.overall > b.overall);
            ties += usize::from(a.overall == b.overall);
        }
        assert!(wins >= 57 && ties <= 3, "{wins} wins, {ties} ties of 60");
        // A caption that claims nothing leaves adherence unrated.
        let plain = assess("a folk tune on harp", &jig());
        assert_eq!(panel.rate(0, &plain, true, &mut rng).adherence, None);
    }

    #[test]
    fn expected_scores_rank_a_tune_above_a_drone_and_stay_on_the_scale() {
        let panel = Panel::new(PanelConfig::default()).expect("valid");
        let good = panel.expected(&assess("a jig in D major, in six-eight", &jig()));
        let drone: Vec<u32> = std::iter::repeat_n([30u32, 53], 64).flatten().collect();
        let bad = panel.expected(&assess("a jig in D major, in six-eight", &drone));
        for x in [
            good.overall,
            good.quality,
            good.appeal,
            bad.overall,
            bad.quality,
            bad.appeal,
        ] {
            assert!((1.0..=5.0).contains(&x), "{x}");
        }
        assert!(good.overall > bad.overall + 1.0, "{good:?} {bad:?}");
        assert!(good.adherence.expect("claims") > bad.adherence.expect("claims"));
        assert_eq!(
            panel
                .expected(&assess("a folk tune on harp", &jig()))
                .adherence,
            None
        );
    }

    #[test]
    fn bad_panels_are_refused() {
        let mut c = PanelConfig {
            raters_per_pair: 4,
            raters: 3,
            ..PanelConfig::default()
        };
        assert!(Panel::new(c.clone()).is_err());
        c.raters = 10;
        c.noise = f64::NAN;
        assert!(Panel::new(c).unwrap_err().contains("noise"));
    }
}
