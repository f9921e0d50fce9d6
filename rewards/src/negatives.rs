//! Hard negatives for the text-adherence model: a tune made wrong in one attribute its
//! caption states, on both sides of the pair.
//!
//! - **Caption side**: the same caption wording with the attribute changed ("in 3/4" for a
//!   tune in 2/4) scored against the true clip, so the text tower must read the attribute.
//! - **Clip side**: the true caption against the melody *changed to fit the wrong
//!   attribute* — transposed to the other tonic, moved to the other mode, or re-barred at
//!   another meter's bar length (the renderer's downbeat accents then fall elsewhere) — so
//!   the audio tower must hear it. This is the direction RL uses: for one caption, which of
//!   two clips adheres better.
//!
//! Meters swap only to a meter of another bar length (2/4, 3/4 or 6/8, 4/4): 3/4 and 6/8
//! share a bar and differ in grouping, which re-barring cannot change.

use rand::RngExt;
use rand::rngs::StdRng;

use musicrl_music::corpus::Tune;
use musicrl_music::tokens::{Event, HIGHEST_PITCH, LOWEST_PITCH};

/// Meters the swaps use.
pub const METERS: [&str; 4] = ["2/4", "3/4", "4/4", "6/8"];
/// The corpus's commonest tonics (tonic swaps draw another of these).
pub const TONICS: [&str; 8] = ["G", "D", "F", "A", "C", "Bb", "E", "Eb"];

/// What a hard negative changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribute {
    Meter,
    Tonic,
    Mode,
}

/// A bar's length in twelfths of a quarter note ("6/8" → 36), if the meter reads as n/d.
pub fn bar_twelfths(meter: &str) -> Option<u32> {
    let (n, d) = meter.split_once('/')?;
    let (n, d): (u32, u32) = (n.trim().parse().ok()?, d.trim().parse().ok()?);
    (d > 0 && 48 % d == 0 && n > 0).then_some(n * 48 / d)
}

/// The pitch class of a tonic name ("Bb" → 10).
pub fn pitch_class(tonic: &str) -> Option<i32> {
    let mut chars = tonic.chars();
    let base = match chars.next()? {
        'C' => 0,
        'D' => 2,
        'E' => 4,
        'F' => 5,
        'G' => 7,
        'A' => 9,
        'B' => 11,
        _ => return None,
    };
    let accidental: i32 = chars
        .map(|c| match c {
            'b' => -1,
            '#' => 1,
            _ => 0,
        })
        .sum();
    Some((base + accidental).rem_euclid(12))
}

/// `tune` with `attr` changed (a random other value), or `None` when the tune's value is
/// not one the swap knows.
pub fn swap(tune: &Tune, attr: Attribute, rng: &mut StdRng) -> Option<Tune> {
    let mut t = tune.clone();
    match attr {
        Attribute::Meter => {
            let len = bar_twelfths(&tune.meter)?;
            if !METERS.contains(&tune.meter.as_str()) {
                return None;
            }
            let others: Vec<&str> = METERS
                .into_iter()
                .filter(|m| bar_twelfths(m) != Some(len))
                .collect();
            t.meter = others[rng.random_range(0..others.len())].into();
        }
        Attribute::Tonic => {
            let i = TONICS.iter().position(|x| *x == tune.key_tonic)?;
            t.key_tonic =
                TONICS[(i + 1 + rng.random_range(0..TONICS.len() - 1)) % TONICS.len()].into();
        }
        Attribute::Mode => {
            t.key_mode = if tune.key_mode == "minor" {
                "major"
            } else {
                "minor"
            }
            .into();
        }
    }
    Some(t)
}

/// `events` (of `from`) changed to fit `to`'s value of `attr`: transposed by the smallest
/// interval between the tonics (pitches folded by octaves into the vocabulary's range), the
/// third, sixth and seventh degrees moved by a semitone for the other mode, or the bar lines
/// removed and put back every `to`'s bar length (after the note that reaches it).
pub fn refit(events: &[Event], from: &Tune, to: &Tune, attr: Attribute) -> Vec<Event> {
    let fold = |p: i32| -> u8 {
        let (lo, hi) = (i32::from(LOWEST_PITCH), i32::from(HIGHEST_PITCH));
        let mut p = p;
        while p < lo {
            p += 12;
        }
        while p > hi {
            p -= 12;
        }
        p as u8
    };
    let map_pitch = |f: &dyn Fn(i32) -> i32| -> Vec<Event> {
        events
            .iter()
            .map(|e| match *e {
                Event::Note {
                    pitch: Some(p),
                    twelfths,
                } => Event::Note {
                    pitch: Some(fold(f(i32::from(p)))),
                    twelfths,
                },
                other => other,
            })
            .collect()
    };
    match attr {
        Attribute::Tonic => {
            let (Some(a), Some(b)) = (pitch_class(&from.key_tonic), pitch_class(&to.key_tonic))
            else {
                return events.to_vec();
            };
            // The smallest move: −5 ..= 6 semitones.
            let d = (b - a + 5).rem_euclid(12) - 5;
            map_pitch(&|p| p + d)
        }
        Attribute::Mode => {
            let Some(tonic) = pitch_class(&from.key_tonic) else {
                return events.to_vec();
            };
            let to_minor = to.key_mode == "minor";
            map_pitch(&|p| {
                let degree = (p - tonic).rem_euclid(12);
                match (to_minor, degree) {
                    (true, 4 | 9 | 11) => p - 1,
                    (false, 3 | 8 | 10) => p + 1,
                    _ => p,
                }
            })
        }
        Attribute::Meter => {
            let Some(len) = bar_twelfths(&to.meter) else {
                return events.to_vec();
            };
            let mut out = Vec::with_capacity(events.len());
            let mut pos = 0u32;
            let mut next = len;
            for e in events {
                if let Event::Note { twelfths, .. } = *e {
                    out.push(*e);
                    pos += u32::from(twelfths);
                    if pos >= next {
                        out.push(Event::Bar);
                        while next <= pos {
                            next += len;
                        }
                    }
                }
            }
            if out.last() == Some(&Event::Bar) {
                out.pop();
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use musicrl_music::corpus::Split;
    use rand::SeedableRng;

    fn tune(meter: &str, tonic: &str, mode: &str) -> Tune {
        Tune {
            id: "t".into(),
            collection: "test".into(),
            title: "t".into(),
            tune_type: String::new(),
            origin: String::new(),
            meter: meter.into(),
            key_tonic: tonic.into(),
            key_mode: mode.into(),
            tempo_bpm: None,
            split: Split::Train,
            events: Vec::new(),
        }
    }

    fn note(p: u8, twelfths: u16) -> Event {
        Event::Note {
            pitch: Some(p),
            twelfths,
        }
    }

    #[test]
    fn bars_and_tonics_read_as_music_theory_says() {
        assert_eq!(bar_twelfths("6/8"), Some(36));
        assert_eq!(bar_twelfths("3/4"), Some(36));
        assert_eq!(bar_twelfths("4/4"), Some(48));
        assert_eq!(bar_twelfths("2/4"), Some(24));
        assert_eq!(bar_twelfths("waltz"), None);
        assert_eq!(pitch_class("Bb"), Some(10));
        assert_eq!(pitch_class("F#"), Some(6));
        assert_eq!(pitch_class("Eb"), Some(3));
    }

    #[test]
    fn swaps_change_the_attribute_and_meters_change_their_bar() {
        let mut rng = StdRng::seed_from_u64(3);
        let t = tune("3/4", "D", "major");
        for _ in 0..20 {
            let m = swap(&t, Attribute::Meter, &mut rng).expect("a known meter");
            assert!(["2/4", "4/4"].contains(&m.meter.as_str()), "{}", m.meter);
            let k = swap(&t, Attribute::Tonic, &mut rng).expect("a known tonic");
            assert_ne!(k.key_tonic, "D");
        }
        assert_eq!(
            swap(&t, Attribute::Mode, &mut rng).unwrap().key_mode,
            "minor"
        );
        assert!(swap(&tune("5/4", "D", "major"), Attribute::Meter, &mut rng).is_none());
    }

    #[test]
    fn refitting_transposes_changes_mode_and_rebars() {
        let from = tune("3/4", "D", "major");
        // D major: D4 (62), F#4 (66), B4 (71), C#5 (73).
        let melody = [
            note(62, 12),
            note(66, 12),
            Event::Bar,
            note(71, 12),
            note(73, 12),
        ];
        let to_g = tune("3/4", "G", "major");
        let moved = refit(&melody, &from, &to_g, Attribute::Tonic);
        // D → G is up a fourth (5 semitones).
        assert_eq!(moved[0], note(67, 12));
        assert_eq!(moved[2], Event::Bar);
        let minor = refit(&melody, &from, &tune("3/4", "D", "minor"), Attribute::Mode);
        // F# → F, B → Bb, C# → C; D stays.
        assert_eq!(
            minor,
            vec![
                note(62, 12),
                note(65, 12),
                Event::Bar,
                note(70, 12),
                note(72, 12)
            ]
        );
        // Re-barred in 2/4 (24 twelfths): a bar line after every two quarter notes.
        let rebarred = refit(
            &[
                note(60, 12),
                note(62, 12),
                note(64, 12),
                note(65, 12),
                note(67, 12),
            ],
            &from,
            &tune("2/4", "D", "major"),
            Attribute::Meter,
        );
        assert_eq!(
            rebarred,
            vec![
                note(60, 12),
                note(62, 12),
                Event::Bar,
                note(64, 12),
                note(65, 12),
                Event::Bar,
                note(67, 12)
            ]
        );
    }
}
