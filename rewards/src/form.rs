//! The tune's form heard in the audio: a rule-based quality reward (the `form` component), a
//! simplified stand-in for the paper's MOS model, named as such, beside the learned
//! [`crate::quality`] model.
//!
//! The learned MOS-style model orders two of the policy's own clips of one caption as the
//! judge's well-formedness does in about half the pairs (`musicrl judge --rewards`,
//! docs/rewards.md): the renderer makes every clip sound clean, so what differs between two
//! samples of one caption is how the tune is *made*: whether it keeps a meter, whether its
//! last bar is whole, whether it repeats itself into a drone, whether a voice could sing it.
//! This scorer hears those from the audio, by rules from the literature, with thresholds
//! taken from the bundled corpus (its training split, never the judge):
//!
//! - **regularity**: the bars are heard where the player stresses them (the downbeat accents
//!   of [`crate::theory::downbeats`]); a metre is "beats equally spaced throughout the piece"
//!   (Lerdahl & Jackendoff, *A Generative Theory of Tonal Music*, 1983, metrical
//!   well-formedness rule 4), so the score is the share of the interior bars as long as the
//!   clip's most common bar (within [`BAR_TOLERANCE`] of a quarter note at the caption's
//!   tempo); fewer than [`MIN_BARS`] interior bars heard scores 0 (no metre is heard).
//! - **ending**: a tune closes on a whole bar, or on the part of one its anacrusis left over
//!   (the notational convention, e.g. E. Gould, *Behind Bars*, 2011, "Upbeats"): the last
//!   bar, from the last heard downbeat to where the melody stops (the rendering's end less
//!   its fixed [`TAIL_S`] of release), is a whole bar, or with the opening pickup makes one:
//!   1; a broken last bar: 0.5; no metre heard: 0.
//! - **variety**: not degenerate repetition. The type–token ratio of the heard melody's
//!   four-note pitch patterns (Müllensiefen's m-types, FANTASIA, 2009), full credit from
//!   [`TTR_FULL`] (the corpus's 5th percentile over clips of the policy's length, 0.53),
//!   times the distinct pitches heard, full credit from [`DISTINCT_FULL`] (the corpus's 5th
//!   percentile). The corpus's figures: `python3 scripts/corpus_form_stats.py`.
//! - **range**: singable. The span of the heard notes gets full credit up to [`SPAN_FULL`]
//!   semitones (the corpus's 95th percentile), falling to 0 an octave beyond, less the share
//!   of leaps larger than an octave (pitch proximity: large leaps are rare in folk melody,
//!   Huron, *Sweet Anticipation*, 2006, ch. 5; 99% of the corpus's clips have fewer than 3%).
//!
//! The score is their mean, in [0, 1]; a clip with fewer than [`MIN_NOTES`] heard notes
//! scores 0. Nothing is learned and nothing reads the tokens or the judge: notes are the
//! onsets of [`crate::theory::onsets`] and their pitch the audio's pitch track.

use musicrl_music::captions::rendering_for;
use musicrl_music::render::TAIL_S;

use crate::features::{ENVELOPE_PER_FRAME, FEATURE_SAMPLE_RATE, Features, HOP, N_FFT};
use crate::theory::{
    ACCENT_DB, ACCENT_TIE_DB, BAR_TOLERANCE, ENVELOPE_STEP_S, ONSET_GLOBAL, ONSET_RISE_DB,
    ONSET_THRESHOLD, Onset, bars_between, downbeats, onsets,
};

/// A clip with fewer heard notes is not a tune.
pub const MIN_NOTES: usize = 8;
/// Fewer interior bars than this and no metre is heard.
pub const MIN_BARS: usize = 2;
/// Full variety credit from this type–token ratio of four-note patterns.
pub const TTR_FULL: f32 = 0.53;
/// Full variety credit from this many distinct pitches.
pub const DISTINCT_FULL: f32 = 5.0;
/// Full range credit up to this span, semitones.
pub const SPAN_FULL: f32 = 20.0;

/// The onset detector hears a note this long after it starts (its windows' centre).
const ONSET_DELAY_S: f32 = 0.016;

/// One clip's form score and its parts, each in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FormScore {
    pub overall: f32,
    pub regularity: f32,
    pub ending: f32,
    pub variety: f32,
    pub range: f32,
}

/// The melody heard: the pitch (a MIDI number) of each onset the pitch track hears a pitch
/// at.
fn heard_notes(features: &Features, heard: &[Onset]) -> Vec<u8> {
    heard
        .iter()
        .filter_map(|o| {
            let frame = o.index / ENVELOPE_PER_FRAME + 1;
            features.pitch.get(frame).copied().flatten()
        })
        .map(|p| p.round().clamp(0.0, 127.0) as u8)
        .collect()
}

/// Where the melody stops, in seconds: the rendering's length (recovered from the frame
/// count to within half a hop) less its release tail.
fn melody_end_s(features: &Features) -> f32 {
    let samples = if features.frames <= 1 {
        N_FFT as f32 / 2.0
    } else {
        N_FFT as f32 + HOP as f32 * (features.frames as f32 - 1.5)
    };
    samples / FEATURE_SAMPLE_RATE as f32 - TAIL_S
}

/// The most common bar length among `bars` (the one with most bars within the tolerance;
/// the first of equals) and the share of bars it counts.
pub fn modal_bar(bars: &[f32]) -> Option<(f32, f32)> {
    let support = |b: f32| {
        bars.iter()
            .filter(|x| (*x - b).abs() < BAR_TOLERANCE)
            .count()
    };
    let best = bars.iter().copied().fold(None::<(f32, usize)>, |best, b| {
        let s = support(b);
        match best {
            Some((_, bs)) if bs >= s => best,
            _ => Some((b, s)),
        }
    })?;
    Some((best.0, best.1 as f32 / bars.len() as f32))
}

/// The share of four-note patterns that are distinct.
fn type_token_ratio(pitches: &[u8]) -> f32 {
    let mut grams: Vec<&[u8]> = pitches.windows(4).collect();
    let total = grams.len();
    if total == 0 {
        return 0.0;
    }
    grams.sort_unstable();
    grams.dedup();
    grams.len() as f32 / total as f32
}

/// Scores one clip's form; `caption` gives the tempo the renderer played (a listener knows
/// the beat).
pub fn score(caption: &str, features: &Features) -> FormScore {
    let heard = onsets(features);
    let pitches = heard_notes(features, &heard);
    if heard.len() < MIN_NOTES || pitches.len() < MIN_NOTES {
        return FormScore::default();
    }
    let (_, bpm) = rendering_for(caption);
    let quarter_s = 60.0 / bpm.max(1.0);
    let beats = downbeats(&heard);
    let at = |o: &Onset| o.index as f32 * ENVELOPE_STEP_S - ONSET_DELAY_S;
    let quarters = |a: f32, b: f32| (b - a) / quarter_s;
    let bars = bars_between(&beats, bpm);
    let (regularity, ending) = match modal_bar(&bars) {
        Some((modal, share)) if bars.len() >= MIN_BARS => {
            let last = beats
                .last()
                .map_or(0.0, |b| quarters(at(b), melody_end_s(features)));
            let pickup = quarters(at(&beats[0]), at(&beats[1]));
            let whole = |x: f32| (x - modal).abs() < BAR_TOLERANCE;
            let closed = whole(last) || (pickup < modal - BAR_TOLERANCE && whole(pickup + last));
            (share, if closed { 1.0 } else { 0.5 })
        }
        _ => (0.0, 0.0),
    };
    let mut distinct = pitches.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let variety = (type_token_ratio(&pitches) / TTR_FULL).min(1.0)
        * (distinct.len() as f32 / DISTINCT_FULL).min(1.0);
    let span = f32::from(distinct[distinct.len() - 1] - distinct[0]);
    let span_credit = (1.0 - (span - SPAN_FULL).max(0.0) / 12.0).max(0.0);
    let leaps = pitches
        .windows(2)
        .filter(|w| w[0].abs_diff(w[1]) > 12)
        .count() as f32
        / (pitches.len() - 1) as f32;
    let range = (span_credit - leaps).max(0.0);
    FormScore {
        overall: (regularity + ending + variety + range) / 4.0,
        regularity,
        ending,
        variety,
        range,
    }
}

/// The scorer's version: changes whenever its rules or constants do (the onset and accent
/// constants are the attributes scorer's).
pub fn version() -> String {
    format!(
        "form-1(bars±{BAR_TOLERANCE},min{MIN_BARS},ttr{TTR_FULL},pitches{DISTINCT_FULL},span{SPAN_FULL},tail{TAIL_S}s,onset×{ONSET_THRESHOLD}/{ONSET_GLOBAL}/{ONSET_RISE_DB}dB,accent={ACCENT_DB}/{ACCENT_TIE_DB}dB)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clips::features_of;
    use crate::features::Extractor;
    use musicrl_music::render::Instrument;
    use musicrl_music::tokens::Event;

    fn note(pitch: u8, twelfths: u16) -> Event {
        Event::Note {
            pitch: Some(pitch),
            twelfths,
        }
    }

    /// Bars of `per_bar[b]` eighth notes each, a walk by steps and small leaps over a D major
    /// scale (a fixed pseudo-random walk: a tune, not a cycle).
    fn tune(per_bar: &[usize]) -> Vec<Event> {
        let scale = [62u8, 64, 66, 67, 69, 71, 73, 74, 76];
        let mut events = Vec::new();
        let (mut degree, mut state) = (4i32, 7u32);
        for (b, &n) in per_bar.iter().enumerate() {
            if b > 0 {
                events.push(Event::Bar);
            }
            for _ in 0..n {
                events.push(note(scale[degree as usize], 6));
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                let step = [-2, -1, -1, 1, 1, 2][(state >> 16) as usize % 6];
                degree = (degree + step).clamp(0, 8);
            }
        }
        events
    }

    #[test]
    fn modal_bar_and_its_share_by_hand() {
        assert_eq!(modal_bar(&[]), None);
        assert_eq!(modal_bar(&[3.0, 3.05, 2.0, 3.1]), Some((3.0, 0.75)));
        // Equal support: the first wins.
        assert_eq!(modal_bar(&[2.0, 4.0]), Some((2.0, 0.5)));
    }

    #[test]
    fn type_token_ratio_by_hand() {
        assert_eq!(type_token_ratio(&[1, 2, 3]), 0.0);
        assert_eq!(type_token_ratio(&[1, 2, 3, 4, 5]), 1.0);
        // 1 2 1 2 1 2: patterns 1212, 2121, 1212 → 2 of 3.
        assert!((type_token_ratio(&[1, 2, 1, 2, 1, 2]) - 2.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn a_regular_tune_scores_high_on_every_instrument_and_its_faults_are_heard() {
        let x = Extractor::new();
        let caption = "A folk song in D major, in 3/4 time";
        for instrument in Instrument::ALL {
            let f = |events: &[Event]| features_of(&x, events, instrument, 110.0, 5);
            let good = score(caption, &f(&tune(&[6; 8])));
            println!("{instrument:?}: {good:?}");
            // The harp's plucks still differ a little in level: one bar in seven is misheard.
            assert!(good.regularity >= 0.7, "{instrument:?}: {good:?}");
            assert_eq!(good.ending, 1.0, "{instrument:?}: {good:?}");
            assert_eq!(good.variety, 1.0, "{instrument:?}: {good:?}");
            assert_eq!(good.range, 1.0, "{instrument:?}: {good:?}");
            // Bar lines that wander: 3, 4, 2, 5 … eighths a bar.
            let wandering = score(caption, &f(&tune(&[6, 5, 8, 4, 7, 3, 6, 6])));
            assert!(
                wandering.regularity < good.regularity - 0.3,
                "{instrument:?}: {wandering:?} vs {good:?}"
            );
            // A broken last bar: two eighths short.
            let broken = score(caption, &f(&tune(&[6, 6, 6, 6, 6, 6, 6, 4])));
            assert_eq!(broken.ending, 0.5, "{instrument:?}: {broken:?}");
            // A pickup of two eighths and a last bar of four: whole together.
            let pickup = score(caption, &f(&tune(&[2, 6, 6, 6, 6, 6, 6, 4])));
            assert_eq!(pickup.ending, 1.0, "{instrument:?}: {pickup:?}");
            // A drone on two notes is no variety.
            let mut drone = Vec::new();
            for b in 0..8 {
                if b > 0 {
                    drone.push(Event::Bar);
                }
                for k in 0..6 {
                    drone.push(note(if k % 2 == 0 { 62 } else { 64 }, 6));
                }
            }
            let d = score(caption, &f(&drone));
            assert!(d.variety < 0.3, "{instrument:?}: {d:?}");
            assert!(d.overall < good.overall, "{instrument:?}: {d:?}");
            // Leaps of an octave and a fifth up and back: unsingable.
            let mut leaps = tune(&[6; 8]);
            for (i, e) in leaps.iter_mut().enumerate() {
                if let Event::Note { pitch: Some(p), .. } = e
                    && i % 3 == 1
                {
                    *p += 19;
                }
            }
            let l = score(caption, &f(&leaps));
            assert!(l.range < 0.7, "{instrument:?}: {l:?}");
        }
        // Too few notes is not a tune.
        let short = features_of(&x, &tune(&[3, 3]), Instrument::Harp, 110.0, 5);
        assert_eq!(score(caption, &short), FormScore::default());
    }

    #[test]
    fn corpus_tunes_score_high_on_every_instrument() {
        use musicrl_music::corpus::{self, Split};
        let tunes = corpus::load(&corpus::repo_path()).expect("corpus");
        let x = Extractor::new();
        for instrument in Instrument::ALL {
            let scores: Vec<FormScore> = tunes
                .iter()
                .filter(|t| t.split == Split::Test)
                .take(12)
                .map(|t| {
                    let events = crate::clips::tune_events(t, 128);
                    score(
                        "A folk song",
                        &features_of(&x, &events, instrument, 110.0, 3),
                    )
                })
                .collect();
            let mean =
                |f: fn(&FormScore) -> f32| scores.iter().map(f).sum::<f32>() / scores.len() as f32;
            let (o, r, e, v, g) = (
                mean(|s| s.overall),
                mean(|s| s.regularity),
                mean(|s| s.ending),
                mean(|s| s.variety),
                mean(|s| s.range),
            );
            println!("{instrument:?}: overall {o} regularity {r} ending {e} variety {v} range {g}");
            assert!(
                o >= 0.75 && v >= 0.9 && g >= 0.9,
                "{instrument:?}: {o} {r} {e} {v} {g}"
            );
        }
    }
}
