//! Text adherence: does the melody do what its caption claims, for what the policy controls?
//!
//! Each claim is scored in [0, 1] from the decoded melody:
//!
//! - **key** (tonic and mode): 1 when the melody's estimated key (profile correlation) is
//!   the claimed key; otherwise half the claimed key's correlation, floored at 0 — a melody
//!   in the relative key keeps some credit, one in an unrelated key almost none;
//! - **meter**: the share of interior bars exactly as long as the claimed meter's bar, times
//!   a grouping factor that compares the claimed grouping with the other grouping of the same
//!   bar length (6/8 against 3/4, 12/8 against 3/2): syncopations the claimed grouping has
//!   and the other does not cost [`GROUPING_PENALTY`] times their share of the notes, so a
//!   waltz's quarters deny a 6/8 claim and a jig's quarter–eighth figures a 3/4 one;
//! - **tune type**: the best meter score over the meters the type is played in, times the
//!   type's characteristic rhythm ([`rhythm_match`]).
//!
//! The caption's score is the mean over the claims it makes; a caption that claims nothing
//! the policy controls has no adherence score. Tempo and instrument are never judged: the
//! renderer chooses them from the caption.

use serde::{Deserialize, Serialize};

use crate::analysis::Melody;
use crate::claims::{Claims, Key, Meter, TuneType};

/// Adherence per claim and overall, each in [0, 1] (`None`: not claimed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Adherence {
    pub key: Option<f64>,
    pub meter: Option<f64>,
    pub tune_type: Option<f64>,
    /// Mean of the claims made.
    pub overall: Option<f64>,
}

pub fn adherence(m: &Melody, claims: &Claims) -> Adherence {
    let key = claims.key.map(|k| key_score(m, k));
    let meter = claims.meter.map(|x| meter_score(m, x));
    let tune_type = claims.tune_type.map(|t| type_score(m, t));
    let parts: Vec<f64> = [key, meter, tune_type].into_iter().flatten().collect();
    Adherence {
        key,
        meter,
        tune_type,
        overall: (!parts.is_empty()).then(|| parts.iter().sum::<f64>() / parts.len() as f64),
    }
}

pub fn key_score(m: &Melody, claimed: Key) -> f64 {
    match m.estimated_key() {
        None => 0.0,
        Some((best, _)) if best == claimed => 1.0,
        Some(_) => (0.5 * m.key_fit(claimed)).max(0.0),
    }
}

/// The other groupings of a bar as long as `meter`'s (4/4 and 2/2 are the same bar, not
/// alternatives).
fn alternatives(meter: Meter) -> Vec<Meter> {
    let candidates = [(3, 4), (6, 8), (12, 8), (3, 2), (6, 4)];
    candidates
        .iter()
        .map(|&(num, den)| Meter { num, den })
        .filter(|c| {
            c.bar_twelfths() == meter.bar_twelfths()
                && c.compound() != meter.compound()
                && c.beat_twelfths() != meter.beat_twelfths()
        })
        .collect()
}

/// How much each unexplained syncopation (as a share of the notes) costs a meter claim.
pub const GROUPING_PENALTY: f64 = 8.0;

pub fn meter_score(m: &Melody, claimed: Meter) -> f64 {
    let share = m.bar_share(claimed.bar_twelfths());
    if share == 0.0 {
        return 0.0;
    }
    let own = m.crossing_rate(claimed).unwrap_or(0.0);
    let best_alt = alternatives(claimed)
        .into_iter()
        .filter_map(|a| m.crossing_rate(a))
        .fold(f64::INFINITY, f64::min);
    let grouping = if best_alt.is_finite() {
        (1.0 - GROUPING_PENALTY * (own - best_alt).max(0.0)).max(0.0)
    } else {
        1.0
    };
    share * grouping
}

pub fn type_score(m: &Melody, t: TuneType) -> f64 {
    let meter = t
        .meters()
        .iter()
        .map(|&(num, den)| meter_score(m, Meter { num, den }))
        .fold(0.0, f64::max);
    meter * rhythm_match(m, t)
}

/// How well the rhythm fits the type, in [0.5, 1]: the meter carries most of a type's
/// identity, so the rhythm can halve the score but not zero it.
///
/// - reels, jigs, slip jigs: running notes — the most common duration covers most notes
///   (≥ 60% for full credit);
/// - hornpipes, strathspeys, schottisches: dotted pairs (a dotted note followed by its
///   complement: 9 + 3, 18 + 6, or the reversed "Scotch snap") in ≥ 20% of notes;
/// - airs: long notes (the median note a quarter or longer);
/// - other dances: the meter alone.
pub fn rhythm_match(m: &Melody, t: TuneType) -> f64 {
    let durations: Vec<u32> = m.notes.iter().map(|n| n.duration).collect();
    if durations.is_empty() {
        return 0.5;
    }
    let n = durations.len() as f64;
    let fit = match t {
        TuneType::Reel | TuneType::Jig | TuneType::SlipJig => {
            let mut counts = std::collections::BTreeMap::new();
            for d in &durations {
                *counts.entry(*d).or_insert(0usize) += 1;
            }
            let top = counts.values().copied().max().unwrap_or(0) as f64 / n;
            (top / 0.6).min(1.0)
        }
        TuneType::Hornpipe | TuneType::Strathspey | TuneType::Schottische => {
            let dotted = durations
                .windows(2)
                .filter(|w| matches!((w[0], w[1]), (9, 3) | (3, 9) | (18, 6) | (6, 18)))
                .count() as f64
                * 2.0
                / n;
            (dotted / 0.2).min(1.0)
        }
        TuneType::Air => {
            let mut sorted = durations.clone();
            sorted.sort_unstable();
            let median = sorted[sorted.len() / 2];
            if median >= 12 {
                1.0
            } else {
                f64::from(median) / 12.0
            }
        }
        _ => 1.0,
    };
    0.5 + 0.5 * fit
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::claims_of;

    fn tune(bars: &[Vec<(u8, u16)>]) -> Melody {
        Melody::of(&crate::fixtures::tune(bars))
    }

    fn d_major_jig() -> Melody {
        Melody::of(&crate::fixtures::d_major_jig())
    }

    /// An E-minor waltz in 3/4: quarters and halves, one pitch per beat.
    fn e_minor_waltz() -> Melody {
        tune(&[
            vec![(71, 12)],
            vec![(64, 24), (67, 12)],
            vec![(71, 12), (67, 12), (64, 12)],
            vec![(66, 24), (69, 12)],
            vec![(71, 12), (69, 12), (66, 12)],
            vec![(64, 12), (66, 12), (67, 12)],
            vec![(69, 24), (67, 12)],
            vec![(66, 12), (63, 12), (66, 12)],
            vec![(64, 36)],
        ])
    }

    #[test]
    fn a_jig_in_six_eight_adheres_to_a_jig_caption_and_not_to_a_waltz_caption() {
        let jig = d_major_jig();
        let as_jig = adherence(&jig, &claims_of("a jig in 6/8 time"));
        let as_waltz = adherence(&jig, &claims_of("a waltz in three-four"));
        assert_eq!(as_jig.meter, Some(1.0));
        assert!(as_jig.tune_type.unwrap() > 0.9, "{as_jig:?}");
        assert!(as_waltz.meter.unwrap() < 0.5, "{as_waltz:?}");
        assert!(as_waltz.tune_type.unwrap() < 0.5, "{as_waltz:?}");
        assert!(as_jig.overall.unwrap() > as_waltz.overall.unwrap() + 0.4);
        // And the other way round: the waltz is no jig.
        let waltz = e_minor_waltz();
        assert!(adherence(&waltz, &claims_of("a waltz")).overall.unwrap() > 0.9);
        assert!(adherence(&waltz, &claims_of("a jig")).overall.unwrap() < 0.5);
    }

    #[test]
    fn a_tune_in_d_major_adheres_to_d_major_not_to_e_minor() {
        let jig = d_major_jig();
        assert_eq!(key_score(&jig, Key::parse("D", "major").unwrap()), 1.0);
        let e_minor = key_score(&jig, Key::parse("E", "minor").unwrap());
        assert!(e_minor < 0.4, "{e_minor}");
        let waltz = e_minor_waltz();
        assert_eq!(key_score(&waltz, Key::parse("E", "minor").unwrap()), 1.0);
        assert!(key_score(&waltz, Key::parse("D", "major").unwrap()) < 0.4);
        // Nothing claimed, nothing judged.
        assert_eq!(
            adherence(&jig, &claims_of("a folk tune on harp")).overall,
            None
        );
    }
}
