//! What can be heard in a decoded melody without any learned model: its notes on a metric
//! grid, its bars, its key (profile correlation), how well a meter explains its rhythm.
//!
//! Everything here is deterministic music theory over the decoded events; nothing is fitted
//! to the project's data or shared with the reward models.

use musicrl_music::tokens::{self, END, Event};

use crate::claims::{Key, Meter};

/// One note (or rest) with its place in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Note {
    /// MIDI pitch, `None` for a rest.
    pub pitch: Option<u8>,
    /// Twelfths of a quarter note.
    pub duration: u32,
    /// Index of the bar it is in (bars are separated by BAR tokens).
    pub bar: usize,
    /// Onset from the start of its bar, in twelfths.
    pub offset: u32,
}

/// A decoded melody, analysed.
#[derive(Debug, Clone, PartialEq)]
pub struct Melody {
    pub notes: Vec<Note>,
    /// Length of every bar in twelfths (bars between BAR tokens; the first and last may be
    /// partial: a pickup, a cut).
    pub bar_lengths: Vec<u32>,
    /// Whether the sequence contains END (the policy finished the tune) rather than being
    /// cut at the token limit.
    pub ended: bool,
    /// Repairs decoding needed (a duration without a note, a note without a duration, …).
    pub repairs: usize,
    /// Whether the tune ended exactly on a bar line (the last bar is empty or ends at BAR).
    pub ends_at_bar_line: bool,
}

impl Melody {
    pub fn of(tokens_: &[u32]) -> Melody {
        let decoded = tokens::decode(tokens_);
        let mut notes = Vec::new();
        let mut bar_lengths = vec![0u32];
        for e in &decoded.events {
            match *e {
                Event::Bar => bar_lengths.push(0),
                Event::Note { pitch, twelfths } => {
                    let bar = bar_lengths.len() - 1;
                    let offset = bar_lengths[bar];
                    notes.push(Note {
                        pitch,
                        duration: u32::from(twelfths),
                        bar,
                        offset,
                    });
                    bar_lengths[bar] += u32::from(twelfths);
                }
            }
        }
        let ends_at_bar_line = matches!(decoded.events.last(), Some(Event::Bar));
        // A trailing BAR leaves an empty last bar: drop it; a leading BAR an empty first.
        if bar_lengths.len() > 1 && bar_lengths.last() == Some(&0) {
            bar_lengths.pop();
        }
        if bar_lengths.len() > 1 && bar_lengths[0] == 0 {
            bar_lengths.remove(0);
            for n in &mut notes {
                n.bar -= 1;
            }
        }
        Melody {
            notes,
            bar_lengths,
            ended: tokens_.contains(&END),
            repairs: decoded.repairs,
            ends_at_bar_line,
        }
    }

    /// Pitched notes only: (pitch, duration).
    pub fn pitched(&self) -> impl Iterator<Item = (u8, u32)> + '_ {
        self.notes
            .iter()
            .filter_map(|n| n.pitch.map(|p| (p, n.duration)))
    }

    /// Bars that a listener can judge as whole: all but the first (a pickup) and the last
    /// (possibly cut), when there are at least three bars; otherwise none.
    pub fn interior_bars(&self) -> &[u32] {
        if self.bar_lengths.len() >= 3 {
            &self.bar_lengths[1..self.bar_lengths.len() - 1]
        } else {
            &[]
        }
    }

    /// The most common interior bar length and the share of interior bars that have it.
    pub fn modal_bar(&self) -> Option<(u32, f64)> {
        let bars = self.interior_bars();
        let mut counts: Vec<(u32, usize)> = Vec::new();
        for &b in bars {
            match counts.iter_mut().find(|(l, _)| *l == b) {
                Some((_, c)) => *c += 1,
                None => counts.push((b, 1)),
            }
        }
        // Ties go to the longer bar (fewer bar lines missed).
        let (len, count) = counts
            .into_iter()
            .max_by_key(|&(l, c)| (c, l))
            .filter(|&(l, _)| l > 0)?;
        Some((len, count as f64 / bars.len() as f64))
    }

    /// Share of interior bars exactly `twelfths` long (0 without interior bars).
    pub fn bar_share(&self, twelfths: u32) -> f64 {
        let bars = self.interior_bars();
        if bars.is_empty() {
            return 0.0;
        }
        bars.iter().filter(|&&b| b == twelfths).count() as f64 / bars.len() as f64
    }

    /// Under `meter`, the share of notes in full-length bars that start off the beat and
    /// sound across the next beat (syncopations). The right grouping of a bar explains a
    /// melody's long notes with fewer of them: a jig's quarter–eighth figures cross no beat
    /// in 6/8 but cross the third beat of 3/4.
    pub fn crossing_rate(&self, meter: Meter) -> Option<f64> {
        let (bar, beat) = (meter.bar_twelfths(), meter.beat_twelfths());
        let full: Vec<&Note> = self
            .notes
            .iter()
            .filter(|n| self.bar_lengths.get(n.bar) == Some(&bar))
            .collect();
        if full.is_empty() || beat == 0 {
            return None;
        }
        let crossing = full
            .iter()
            .filter(|n| {
                let into = n.offset % beat;
                into != 0 && into + n.duration > beat
            })
            .count();
        Some(crossing as f64 / full.len() as f64)
    }

    /// Duration-weighted pitch-class histogram.
    pub fn pitch_classes(&self) -> [f64; 12] {
        let mut h = [0.0; 12];
        for (p, d) in self.pitched() {
            h[usize::from(p % 12)] += f64::from(d);
        }
        h
    }

    /// The key whose profile best correlates with the pitch-class histogram, with that
    /// correlation; `None` for a melody without pitches.
    pub fn estimated_key(&self) -> Option<(Key, f64)> {
        let h = self.pitch_classes();
        if h.iter().sum::<f64>() <= 0.0 {
            return None;
        }
        all_keys()
            .map(|k| (k, key_correlation(&h, k)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// Correlation of the melody's pitch content with `key`'s profile (−1 … 1).
    pub fn key_fit(&self, key: Key) -> f64 {
        key_correlation(&self.pitch_classes(), key)
    }

    /// The final pitched note, if any.
    pub fn last_pitch(&self) -> Option<u8> {
        self.notes.iter().rev().find_map(|n| n.pitch)
    }

    /// Length in quarter notes.
    pub fn quarters(&self) -> f64 {
        self.notes
            .iter()
            .map(|n| f64::from(n.duration))
            .sum::<f64>()
            / 12.0
    }
}

/// Every major and minor key.
pub fn all_keys() -> impl Iterator<Item = Key> {
    (0..12u8).flat_map(|tonic| {
        [false, true]
            .into_iter()
            .map(move |minor| Key { tonic, minor })
    })
}

/// Key profiles from Aarden's analysis of the Essen folksong collection (as tabulated in
/// Huron, *Sweet Anticipation*, 2006, and used by music21's `AardenEssenWeights`): the share
/// of time each scale degree sounds in major and minor folk melodies, tonic first. Folk
/// melodies are this judge's subject, and these profiles identify their keys better than the
/// probe-tone (Krumhansl–Kessler) ones (`docs/judge.md` has both accuracies on the corpus).
pub const AARDEN_MAJOR: [f64; 12] = [
    17.7661, 0.145624, 14.9265, 0.160186, 19.8049, 11.3587, 0.291248, 22.062, 0.145624, 8.15494,
    0.232998, 4.95122,
];
pub const AARDEN_MINOR: [f64; 12] = [
    18.2648, 0.737619, 14.0499, 16.8599, 0.702494, 14.4362, 0.702494, 18.6161, 4.56621, 1.93186,
    7.37619, 1.75623,
];
/// Krumhansl and Kessler's probe-tone ratings (1982), kept for the comparison.
pub const KK_MAJOR: [f64; 12] = [
    6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88,
];
pub const KK_MINOR: [f64; 12] = [
    6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17,
];

/// Pearson correlation of a pitch-class histogram with `key`'s Aarden–Essen profile.
pub fn key_correlation(h: &[f64; 12], key: Key) -> f64 {
    key_correlation_with(h, key, &AARDEN_MAJOR, &AARDEN_MINOR)
}

/// Pearson correlation with the profile pair given (major, minor), rotated to `key`.
pub fn key_correlation_with(h: &[f64; 12], key: Key, major: &[f64; 12], minor: &[f64; 12]) -> f64 {
    let profile = if key.minor { minor } else { major };
    let rotated: Vec<f64> = (0..12)
        .map(|pc| profile[(pc + 12 - usize::from(key.tonic)) % 12])
        .collect();
    pearson(h, &rotated)
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma).powi(2);
        sbb += (y - mb).powi(2);
    }
    if saa <= 0.0 || sbb <= 0.0 {
        0.0
    } else {
        sab / (saa * sbb).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use musicrl_music::tokens::{BAR, encode};

    pub(crate) fn tune(bars: &[&[(u8, u16)]], end: bool) -> Vec<u32> {
        let mut events = Vec::new();
        for (i, bar) in bars.iter().enumerate() {
            if i > 0 {
                events.push(Event::Bar);
            }
            for &(p, d) in *bar {
                events.push(Event::Note {
                    pitch: Some(p),
                    twelfths: d,
                });
            }
        }
        let mut t = encode(&events);
        if end {
            t.push(END);
        }
        t
    }

    #[test]
    fn bars_offsets_and_the_modal_bar() {
        // Pickup of one eighth, two full 6/8 bars, a cut last bar.
        let t = tune(
            &[
                &[(62, 6)],
                &[(66, 12), (69, 6), (66, 12), (64, 6)],
                &[(62, 18), (62, 18)],
                &[(64, 6)],
            ],
            true,
        );
        let m = Melody::of(&t);
        assert_eq!(m.bar_lengths, vec![6, 36, 36, 6]);
        assert_eq!(m.interior_bars(), &[36, 36]);
        assert_eq!(m.modal_bar(), Some((36, 1.0)));
        assert!(m.ended && m.repairs == 0 && !m.ends_at_bar_line);
        assert_eq!(m.notes[3].offset, 18);
        // The jig figure crosses no 6/8 beat; in 3/4 the quarter at offset 18 crosses beat 3.
        let six_eight = Meter { num: 6, den: 8 };
        let three_four = Meter { num: 3, den: 4 };
        assert_eq!(m.crossing_rate(six_eight), Some(0.0));
        assert!((m.crossing_rate(three_four).unwrap() - 2.0 / 6.0).abs() < 1e-12);
        let mut cut = t.clone();
        cut.pop();
        cut.push(BAR);
        assert!(!Melody::of(&cut).ended && Melody::of(&cut).ends_at_bar_line);
    }

    #[test]
    fn a_scale_is_in_its_key() {
        // D major scale up and down, tonic weighted.
        let d_major: Vec<(u8, u16)> = [62, 64, 66, 67, 69, 71, 73, 74, 69, 66, 62]
            .iter()
            .map(|&p| (p, if p == 62 || p == 74 { 24 } else { 12 }))
            .collect();
        let m = Melody::of(&tune(&[&d_major], true));
        let (k, r) = m.estimated_key().expect("pitched");
        assert_eq!(k, Key::parse("D", "major").unwrap(), "{}", k.name());
        assert!(r > 0.7, "{r}");
        assert!(m.key_fit(Key::parse("Eb", "major").unwrap()) < 0.0);
        // E harmonic minor: E F# G A B C D# E.
        let e_minor: Vec<(u8, u16)> = [64, 66, 67, 69, 71, 72, 75, 76, 71, 67, 64]
            .iter()
            .map(|&p| (p, if p == 64 || p == 76 { 24 } else { 12 }))
            .collect();
        let m = Melody::of(&tune(&[&e_minor], true));
        assert_eq!(
            m.estimated_key().unwrap().0,
            Key::parse("E", "minor").unwrap()
        );
    }
}
