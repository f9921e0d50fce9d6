//! Musical well-formedness, the judge's quality axis: what a trained musician hears as a
//! properly made tune regardless of taste. Each part is in [0, 1]:
//!
//! - **bars**: the share of interior bars that have the melody's most common bar length (a
//!   tune whose bar lines wander is not in any meter); no interior bars, 0;
//! - **clean**: the tokens decode without repairs (each repair costs 0.2);
//! - **ending**: the melody ends (END) after a complete bar — 1; ends mid-bar — 0.5; is cut
//!   off at the token limit — 0;
//! - **variety**: not degenerate repetition — the share of distinct four-note pitch patterns
//!   among all of them (full credit from 0.4; a melody cycling through a few notes scores
//!   near 0), times the distinct pitches (full credit from 5), times a penalty for one pitch
//!   held over more than four notes in a row;
//! - **range**: singable — the span within an octave and a half (19 semitones) gets full
//!   credit, falling to 0 at two and a half octaves, less the share of leaps over an octave.
//!
//! The score is their mean; a melody of fewer than eight notes scores 0 throughout.

use serde::{Deserialize, Serialize};

use crate::analysis::Melody;

/// The well-formedness parts and their mean, each in [0, 1].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct WellFormed {
    pub bars: f64,
    pub clean: f64,
    pub ending: f64,
    pub variety: f64,
    pub range: f64,
    pub overall: f64,
}

/// Fewer notes than this is not a tune.
pub const MIN_NOTES: usize = 8;

pub fn well_formed(m: &Melody) -> WellFormed {
    let pitches: Vec<u8> = m.pitched().map(|(p, _)| p).collect();
    if pitches.len() < MIN_NOTES {
        return WellFormed::default();
    }
    let bars = m.modal_bar().map_or(0.0, |(_, share)| share);
    let clean = (1.0 - 0.2 * m.repairs as f64).max(0.0);
    let last_complete = match (m.modal_bar(), m.bar_lengths.last()) {
        (Some((modal, _)), Some(&last)) => last == modal || m.ends_at_bar_line,
        _ => false,
    };
    let ending = match (m.ended, last_complete) {
        (false, _) => 0.0,
        (true, true) => 1.0,
        (true, false) => 0.5,
    };
    let variety = variety(&pitches);
    let span = f64::from(pitches.iter().max().copied().unwrap_or(0))
        - f64::from(pitches.iter().min().copied().unwrap_or(0));
    let span_credit = if span <= 19.0 {
        1.0
    } else {
        (1.0 - (span - 19.0) / 12.0).max(0.0)
    };
    let leaps = pitches
        .windows(2)
        .filter(|w| (i32::from(w[1]) - i32::from(w[0])).abs() > 12)
        .count() as f64
        / (pitches.len() - 1) as f64;
    let range = (span_credit - leaps).max(0.0);
    let parts = [bars, clean, ending, variety, range];
    WellFormed {
        bars,
        clean,
        ending,
        variety,
        range,
        overall: parts.iter().sum::<f64>() / parts.len() as f64,
    }
}

fn variety(pitches: &[u8]) -> f64 {
    let grams: Vec<&[u8]> = pitches.windows(4).collect();
    let mut distinct = grams.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let patterns = (distinct.len() as f64 / grams.len().max(1) as f64 / 0.4).min(1.0);
    let mut pcs = pitches.to_vec();
    pcs.sort_unstable();
    pcs.dedup();
    let distinct_pitches = (pcs.len() as f64 / 5.0).min(1.0);
    let mut longest = 1usize;
    let mut run = 1usize;
    for w in pitches.windows(2) {
        run = if w[0] == w[1] { run + 1 } else { 1 };
        longest = longest.max(run);
    }
    let held = if longest <= 4 {
        1.0
    } else {
        4.0 / longest as f64
    };
    patterns * distinct_pitches * held
}

#[cfg(test)]
mod tests {
    use super::*;
    use musicrl_music::tokens::{BAR, END, Event, encode};

    fn bars_of(pitches: &[u8], per_bar: usize, twelfths: u16, end: bool) -> Vec<u32> {
        let mut events = Vec::new();
        for (i, &p) in pitches.iter().enumerate() {
            if i > 0 && i % per_bar == 0 {
                events.push(Event::Bar);
            }
            events.push(Event::Note {
                pitch: Some(p),
                twelfths,
            });
        }
        let mut t = encode(&events);
        if end {
            t.push(END);
        }
        t
    }

    const TUNE: [u8; 32] = [
        67, 71, 74, 71, 72, 69, 66, 69, 67, 71, 74, 79, 78, 74, 71, 69, 67, 71, 74, 71, 72, 74, 76,
        72, 71, 69, 67, 66, 67, 71, 67, 67,
    ];

    #[test]
    fn a_complete_tune_beats_the_same_tune_cut_off() {
        let complete = well_formed(&Melody::of(&bars_of(&TUNE, 8, 6, true)));
        assert_eq!(complete.ending, 1.0);
        assert_eq!(
            (complete.bars, complete.clean, complete.range),
            (1.0, 1.0, 1.0)
        );
        assert!(complete.overall > 0.9, "{complete:?}");
        // Cut at the token limit in the middle of a bar: no END, last bar short.
        let mut cut = bars_of(&TUNE[..28], 8, 6, false);
        cut.truncate(cut.len() - 1); // a pitch without its duration: a repair
        let cut = well_formed(&Melody::of(&cut));
        assert_eq!(cut.ending, 0.0);
        assert!(cut.clean < 1.0);
        assert!(
            cut.overall < complete.overall - 0.2,
            "{cut:?} vs {complete:?}"
        );
        // Ending mid-bar with END: half credit.
        let mid = well_formed(&Melody::of(&bars_of(&TUNE[..28], 8, 6, true)));
        assert_eq!(mid.ending, 0.5);
    }

    #[test]
    fn degenerate_melodies_are_not_well_formed() {
        // One pitch, no bars, no end: the drone.
        let drone: Vec<u32> = std::iter::repeat_n([30u32, 53], 64).flatten().collect();
        let d = well_formed(&Melody::of(&drone));
        assert!(d.overall < 0.45 && d.variety < 0.01, "{d:?}");
        assert_eq!((d.bars, d.ending), (0.0, 0.0));
        // The same three notes in even eighths, in tidy bars, with an ending.
        let cycle: Vec<u8> = [60, 62, 64].iter().copied().cycle().take(48).collect();
        let c = well_formed(&Melody::of(&bars_of(&cycle, 8, 6, true)));
        assert!(c.variety < 0.2, "{c:?}");
        let real = well_formed(&Melody::of(&bars_of(&TUNE, 8, 6, true)));
        assert!(real.overall > c.overall + 0.15, "{real:?} vs {c:?}");
        // Huge leaps are not singable.
        let leaps: Vec<u8> = (0..32).map(|i| if i % 2 == 0 { 50 } else { 90 }).collect();
        assert!(well_formed(&Melody::of(&bars_of(&leaps, 8, 6, true))).range < 0.1);
        // Too short to be a tune.
        assert_eq!(
            well_formed(&Melody::of(&[30, 53, BAR, 32, 53, END])).overall,
            0.0
        );
    }
}
