//! The melody vocabulary: 64 tokens for a monophonic tune, two tokens a note.
//!
//! ```text
//! id      token
//! 0       END        the tune is over; everything after it is ignored
//! 1       BAR        a bar line
//! 2..=49  PITCH(p)   MIDI pitch p = id + 46, i.e. C3 (48) ..= B6 (95)
//! 50      REST       a rest (takes a duration like a pitch)
//! 51..=60 DUR(d)     duration d in twelfths of a quarter note, d in DURATIONS
//! 61..=63 (unused)   never produced by the encoder
//! ```
//!
//! Grammar: `(BAR | (PITCH | REST) DUR)* [END]`. Durations are in twelfths of a quarter, so
//! both dotted and triplet values are exact: 3 = sixteenth, 4 = triplet eighth, 6 = eighth,
//! 9 = dotted eighth, 12 = quarter, 18 = dotted quarter, 24 = half, 36 = dotted half,
//! 48 = whole, 8 = triplet quarter.
//!
//! Encoding repairs what the vocabulary cannot say, always the same way: a pitch outside
//! C3..B6 moves by octaves into range; a duration not in `DURATIONS` becomes the nearest one
//! (longer notes are split into tied-as-repeated whole notes).
//!
//! Decoding never fails; it repairs and counts: a DUR with no pending note is dropped, a note
//! with no DUR gets an eighth, an unused id is dropped, and a sequence ends at END.

use serde::{Deserialize, Serialize};

pub const VOCAB_SIZE: usize = 64;
pub const END: u32 = 0;
pub const BAR: u32 = 1;
pub const PITCH_BASE: u32 = 2;
pub const LOWEST_PITCH: u8 = 48;
pub const HIGHEST_PITCH: u8 = 95;
pub const REST: u32 = 50;
pub const DUR_BASE: u32 = 51;
/// Representable durations, in twelfths of a quarter note.
pub const DURATIONS: [u16; 10] = [3, 4, 6, 8, 9, 12, 18, 24, 36, 48];
/// The duration a note without one gets when decoding (an eighth).
pub const DEFAULT_DURATION: u16 = 6;

/// One element of a melody.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A note (`pitch` is a MIDI number) or, with `pitch: None`, a rest.
    Note {
        pitch: Option<u8>,
        twelfths: u16,
    },
    Bar,
}

/// What the token kinds are, for validation and the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    End,
    Bar,
    Pitch(u8),
    Rest,
    Dur(u16),
    Unused(u32),
}

impl Token {
    pub fn of(id: u32) -> Token {
        match id {
            END => Token::End,
            BAR => Token::Bar,
            REST => Token::Rest,
            id if (PITCH_BASE..REST).contains(&id) => {
                Token::Pitch((id - PITCH_BASE) as u8 + LOWEST_PITCH)
            }
            id if (DUR_BASE..DUR_BASE + DURATIONS.len() as u32).contains(&id) => {
                Token::Dur(DURATIONS[(id - DUR_BASE) as usize])
            }
            other => Token::Unused(other),
        }
    }
}

fn pitch_id(midi: u8) -> u32 {
    let mut p = i32::from(midi);
    while p < i32::from(LOWEST_PITCH) {
        p += 12;
    }
    while p > i32::from(HIGHEST_PITCH) {
        p -= 12;
    }
    PITCH_BASE + (p - i32::from(LOWEST_PITCH)) as u32
}

/// The nearest representable duration (ties go to the shorter one).
pub fn nearest_duration(twelfths: u16) -> u16 {
    *DURATIONS
        .iter()
        .min_by_key(|&&d| (i32::from(d) - i32::from(twelfths)).abs())
        .expect("DURATIONS is not empty")
}

fn dur_ids(twelfths: u16) -> Vec<u32> {
    // Longer than a whole note: whole notes, then the remainder.
    let mut left = twelfths.max(1);
    let mut ids = Vec::new();
    while left > 48 + 24 {
        ids.push(48);
        left -= 48;
    }
    ids.push(nearest_duration(left));
    ids.into_iter()
        .map(|d| {
            DUR_BASE
                + DURATIONS
                    .iter()
                    .position(|&x| x == d)
                    .expect("a listed duration") as u32
        })
        .collect()
}

/// Encodes a melody (see the module doc for the repairs), without a trailing END.
pub fn encode(events: &[Event]) -> Vec<u32> {
    let mut out = Vec::with_capacity(events.len() * 2);
    for e in events {
        match *e {
            Event::Bar => out.push(BAR),
            Event::Note { pitch, twelfths } => {
                let head = pitch.map_or(REST, pitch_id);
                // A note longer than a whole is repeated (the vocabulary has no tie).
                for d in dur_ids(twelfths) {
                    out.push(head);
                    out.push(d);
                }
            }
        }
    }
    out
}

/// A decoded melody and how many repairs decoding needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub events: Vec<Event>,
    pub repairs: usize,
}

impl Decoded {
    pub fn notes(&self) -> impl Iterator<Item = (Option<u8>, u16)> + '_ {
        self.events.iter().filter_map(|e| match *e {
            Event::Note { pitch, twelfths } => Some((pitch, twelfths)),
            Event::Bar => None,
        })
    }

    /// Length in quarter notes.
    pub fn quarters(&self) -> f64 {
        self.notes().map(|(_, d)| f64::from(d) / 12.0).sum()
    }
}

/// Decodes tokens, repairing as documented in the module doc.
pub fn decode(tokens: &[u32]) -> Decoded {
    let mut events = Vec::new();
    let mut repairs = 0;
    let mut pending: Option<Option<u8>> = None; // a note head waiting for its duration
    let flush = |pending: &mut Option<Option<u8>>, events: &mut Vec<Event>, repairs: &mut usize| {
        if let Some(pitch) = pending.take() {
            events.push(Event::Note {
                pitch,
                twelfths: DEFAULT_DURATION,
            });
            *repairs += 1;
        }
    };
    for &id in tokens {
        match Token::of(id) {
            Token::End => break,
            Token::Bar => {
                flush(&mut pending, &mut events, &mut repairs);
                events.push(Event::Bar);
            }
            Token::Pitch(p) => {
                flush(&mut pending, &mut events, &mut repairs);
                pending = Some(Some(p));
            }
            Token::Rest => {
                flush(&mut pending, &mut events, &mut repairs);
                pending = Some(None);
            }
            Token::Dur(d) => match pending.take() {
                Some(pitch) => events.push(Event::Note { pitch, twelfths: d }),
                None => repairs += 1,
            },
            Token::Unused(_) => repairs += 1,
        }
    }
    flush(&mut pending, &mut events, &mut repairs);
    Decoded { events, repairs }
}

/// Cuts an encoded tune to at most `max_tokens`, at a note boundary, preferring to end at a
/// bar line when one falls in the last quarter of the window.
pub fn clip(tokens: &[u32], max_tokens: usize) -> &[u32] {
    if tokens.len() <= max_tokens {
        return tokens;
    }
    let mut end = max_tokens;
    // Never split a head from its duration.
    if end > 0 && matches!(Token::of(tokens[end - 1]), Token::Pitch(_) | Token::Rest) {
        end -= 1;
    }
    if let Some(bar) = tokens[..end].iter().rposition(|&t| t == BAR)
        && bar >= end * 3 / 4
    {
        end = bar;
    }
    &tokens[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(pitch: u8, twelfths: u16) -> Event {
        Event::Note {
            pitch: Some(pitch),
            twelfths,
        }
    }

    #[test]
    fn layout_fills_the_vocabulary_exactly() {
        assert_eq!(
            REST,
            PITCH_BASE + u32::from(HIGHEST_PITCH - LOWEST_PITCH) + 1
        );
        assert_eq!(DUR_BASE, REST + 1);
        assert!(DUR_BASE as usize + DURATIONS.len() <= VOCAB_SIZE);
        assert_eq!(Token::of(2), Token::Pitch(48));
        assert_eq!(Token::of(49), Token::Pitch(95));
        assert_eq!(Token::of(51), Token::Dur(3));
        assert_eq!(Token::of(60), Token::Dur(48));
        assert_eq!(Token::of(61), Token::Unused(61));
    }

    #[test]
    fn a_known_phrase_encodes_by_hand_and_round_trips() {
        // A4 eighth, B4 eighth, rest quarter, bar, C#5 dotted quarter.
        let events = vec![
            n(69, 6),
            n(71, 6),
            Event::Note {
                pitch: None,
                twelfths: 12,
            },
            Event::Bar,
            n(73, 18),
        ];
        let tokens = encode(&events);
        assert_eq!(tokens, vec![23, 53, 25, 53, 50, 56, BAR, 27, 57]);
        let d = decode(&tokens);
        assert_eq!((d.events.clone(), d.repairs), (events, 0));
        assert!((d.quarters() - 3.5).abs() < 1e-9);
    }

    #[test]
    fn encoding_repairs_range_and_durations_as_documented() {
        // 100 is above B6: down an octave to 88. 5 twelfths is as near 4 as 6: the shorter
        // wins; 7 -> 6; 96 -> 48 + 48. 40 is below C3: up an octave to 52.
        let tokens = encode(&[n(100, 5), n(100, 7), n(40, 96)]);
        let d = decode(&tokens);
        assert_eq!(d.events, vec![n(88, 4), n(88, 6), n(52, 48), n(52, 48)]);
        assert_eq!(d.repairs, 0);
    }

    #[test]
    fn decoding_repairs_and_counts_malformed_sequences() {
        // DUR without a note (dropped), note without DUR (eighth), unused id, END stops.
        let d = decode(&[53, 23, 25, 53, 62, BAR, 23, END, 25, 53]);
        assert_eq!(d.events, vec![n(69, 6), n(71, 6), Event::Bar, n(69, 6)]);
        assert_eq!(d.repairs, 4);
    }

    #[test]
    fn clipping_keeps_notes_whole_and_prefers_bar_lines() {
        let tokens = encode(&[n(69, 6), n(71, 6), Event::Bar, n(73, 6), n(74, 6)]);
        assert_eq!(clip(&tokens, 4), &tokens[..4]);
        assert_eq!(clip(&tokens, 6), &tokens[..4]); // ends at the bar line
        assert_eq!(clip(&tokens, 8), &tokens[..7]); // never a head without its duration
        assert_eq!(decode(clip(&tokens, 8)).repairs, 0);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Any token sequence decodes (never panics), and what it decodes to is a fixed point:
        /// encoding the repaired melody and decoding again gives the same melody with no
        /// repairs.
        #[test]
        fn decoding_repairs_anything_into_a_fixed_point(tokens in proptest::collection::vec(0u32..200, 0..300)) {
            let d = decode(&tokens);
            prop_assert!(d.events.len() <= tokens.len());
            let again = decode(&encode(&d.events));
            prop_assert_eq!(again.repairs, 0);
            prop_assert_eq!(again.events, d.events);
        }
    }
}
