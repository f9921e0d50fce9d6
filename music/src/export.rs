//! A decoded melody in the formats other music tools read: a standard MIDI file (format 0,
//! one track) and ABC notation (the corpus's own source format; abcjs, EasyABC and
//! abc2midi read it).
//!
//! Both are exact for what the vocabulary says: pitch (MIDI number), duration in twelfths of
//! a quarter, rests and bar lines. ABC is written in C with every sharp marked and a natural
//! sign wherever a sharp of the same letter came earlier in the bar, so every pitch reads
//! back as written whether or not a reader carries accidentals to the bar line; the caption's
//! key is a claim about the music, not something this module assumes.

use midly::num::{u4, u7, u15, u24, u28};
use midly::{
    Format, Header, MetaMessage, MidiMessage, Smf, Timing, Track, TrackEvent, TrackEventKind,
};

use crate::render::Instrument;
use crate::tokens::Event;

/// MIDI ticks per quarter note: 480, so a twelfth of a quarter is 40 ticks exactly.
pub const TICKS_PER_QUARTER: u16 = 480;
const TICKS_PER_TWELFTH: u32 = TICKS_PER_QUARTER as u32 / 12;

/// The General MIDI program that sounds like each of the synthesizer's timbres.
pub fn gm_program(instrument: Instrument) -> u8 {
    match instrument {
        Instrument::Harp => 46,   // Orchestral Harp
        Instrument::Flute => 73,  // Flute
        Instrument::Fiddle => 40, // Violin
        Instrument::Organ => 19,  // Church Organ
    }
}

/// A standard MIDI file (format 0) of `events` at `bpm` quarter notes a minute, on
/// `instrument`'s General MIDI program, with `title` as the track name.
pub fn to_midi(events: &[Event], bpm: f32, instrument: Instrument, title: &str) -> Vec<u8> {
    let bpm = if bpm.is_finite() && bpm > 0.0 {
        bpm
    } else {
        120.0
    };
    let micros_per_quarter = (60_000_000.0 / f64::from(bpm))
        .round()
        .clamp(1.0, 16_777_215.0) as u32;
    let channel = u4::new(0);
    let mut track: Track = Vec::new();
    let meta = |kind| TrackEvent {
        delta: u28::new(0),
        kind: TrackEventKind::Meta(kind),
    };
    track.push(meta(MetaMessage::TrackName(title.as_bytes())));
    track.push(meta(MetaMessage::Tempo(u24::new(micros_per_quarter))));
    track.push(TrackEvent {
        delta: u28::new(0),
        kind: TrackEventKind::Midi {
            channel,
            message: MidiMessage::ProgramChange {
                program: u7::new(gm_program(instrument)),
            },
        },
    });
    // Ticks since the last event written (rests add to it).
    let mut pending: u32 = 0;
    for e in events {
        let Event::Note { pitch, twelfths } = *e else {
            continue;
        };
        let ticks = u32::from(twelfths) * TICKS_PER_TWELFTH;
        match pitch {
            None => pending += ticks,
            Some(p) => {
                let key = u7::new(p.min(127));
                track.push(TrackEvent {
                    delta: u28::new(pending),
                    kind: TrackEventKind::Midi {
                        channel,
                        message: MidiMessage::NoteOn {
                            key,
                            vel: u7::new(90),
                        },
                    },
                });
                track.push(TrackEvent {
                    delta: u28::new(ticks),
                    kind: TrackEventKind::Midi {
                        channel,
                        message: MidiMessage::NoteOff {
                            key,
                            vel: u7::new(0),
                        },
                    },
                });
                pending = 0;
            }
        }
    }
    track.push(TrackEvent {
        delta: u28::new(pending),
        kind: TrackEventKind::Meta(MetaMessage::EndOfTrack),
    });
    let smf = Smf {
        header: Header::new(
            Format::SingleTrack,
            Timing::Metrical(u15::new(TICKS_PER_QUARTER)),
        ),
        tracks: vec![track],
    };
    let mut out = Vec::new();
    smf.write_std(&mut out)
        .expect("writing a MIDI file to memory cannot fail");
    out
}

/// The ABC length of `twelfths` with the unit note length L:1/8 (six twelfths).
fn abc_length(twelfths: u16) -> String {
    let (mut n, mut d) = (u32::from(twelfths), 6u32);
    let g = gcd(n, d);
    n /= g;
    d /= g;
    match (n, d) {
        (1, 1) => String::new(),
        (n, 1) => n.to_string(),
        (1, 2) => "/".into(),
        (1, d) => format!("/{d}"),
        (n, d) => format!("{n}/{d}"),
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The letters' pitch classes.
const LETTERS: [(char, u8); 7] = [
    ('C', 0),
    ('D', 2),
    ('E', 4),
    ('F', 5),
    ('G', 7),
    ('A', 9),
    ('B', 11),
];
/// The order sharps enter a key signature; flats enter in reverse.
const SHARP_ORDER: [char; 7] = ['F', 'C', 'G', 'D', 'A', 'E', 'B'];

/// The key a melody is written in: a tonic pitch class and the mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbcKey {
    pub tonic: u8,
    pub minor: bool,
}

impl AbcKey {
    /// The key signature, in fifths: sharps above 0, flats below. A major key takes the
    /// conventional spelling of its tonic (F♯ rather than G♭, D♭ rather than C♯); a minor key
    /// its relative major's.
    pub fn fifths(self) -> i32 {
        let major = if self.minor {
            (self.tonic + 3) % 12
        } else {
            self.tonic
        };
        // C G D A E B F♯ for 0..6; D♭ A♭ E♭ B♭ F for -5..-1.
        const BY_TONIC: [i32; 12] = [0, -5, 2, -3, 4, -1, 6, 1, -4, 3, -2, 5];
        BY_TONIC[usize::from(major)]
    }

    /// Each letter's accidental in the signature: +1 sharp, -1 flat, 0 natural.
    fn signature(self) -> [(char, i32); 7] {
        let fifths = self.fifths();
        LETTERS.map(|(letter, _)| {
            let k = SHARP_ORDER
                .iter()
                .position(|&l| l == letter)
                .expect("a letter") as i32;
            let acc = if fifths > 0 && k < fifths {
                1
            } else if fifths < 0 && 6 - k < -fifths {
                -1
            } else {
                0
            };
            (letter, acc)
        })
    }

    /// The `K:` field: the tonic spelt in the signature's accidentals, `m` for minor.
    pub fn abc_name(self) -> String {
        let (letter, acc) = spell(self.tonic, self);
        let mark = match acc {
            1 => "#",
            -1 => "b",
            _ => "",
        };
        format!("{letter}{mark}{}", if self.minor { "m" } else { "" })
    }
}

/// A pitch class spelt in `key`: its letter and accidental (+1 sharp, -1 flat, 0 natural).
/// The spelling the signature already gives wins; otherwise a black key is a sharp in a
/// sharp key (and C) and a flat in a flat key. B♯, E♯, C♭ and F♭ are never written.
fn spell(pc: u8, key: AbcKey) -> (char, i32) {
    let signature = key.signature();
    let candidates: Vec<(char, i32)> = LETTERS
        .iter()
        .zip(signature)
        .flat_map(|(&(letter, natural), _)| {
            [(letter, 0), (letter, 1), (letter, -1)]
                .into_iter()
                .filter(move |&(_, acc)| (i32::from(natural) + acc).rem_euclid(12) == i32::from(pc))
                .filter(move |&(l, acc)| !matches!((l, acc), ('B' | 'E', 1) | ('C' | 'F', -1)))
        })
        .collect();
    if let Some(&c) = candidates
        .iter()
        .find(|(l, acc)| signature.iter().any(|(sl, sa)| sl == l && sa == acc))
    {
        return c;
    }
    let prefer = if key.fifths() < 0 { -1 } else { 1 };
    *candidates
        .iter()
        .find(|(_, acc)| *acc == 0 || *acc == prefer)
        .expect("every pitch class has a natural, sharp or flat spelling")
}

/// A spelt pitch's ABC letter with its octave marks (MIDI 60 = C4 = ABC "C").
fn abc_letter(midi: u8, letter: char, acc: i32) -> String {
    // The natural letter's MIDI number: the spelt pitch less its accidental (no spelling
    // crosses an octave: B♯ and C♭ are never written).
    let natural = i32::from(midi) - acc;
    let octave = natural.div_euclid(12) - 1;
    if octave >= 5 {
        let mut s = letter.to_ascii_lowercase().to_string();
        for _ in 5..octave {
            s.push('\'');
        }
        s
    } else {
        let mut s = letter.to_string();
        for _ in octave..4 {
            s.push(',');
        }
        s
    }
}

/// Krumhansl and Kessler's major and minor key profiles (Krumhansl, *Cognitive Foundations of
/// Musical Pitch*, 1990, table 2.1).
const KK_MAJOR: [f64; 12] = [
    6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88,
];
const KK_MINOR: [f64; 12] = [
    6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17,
];

/// The key a melody is written in, by the Krumhansl–Schmuckler algorithm: the major or minor
/// key whose Krumhansl–Kessler profile correlates best with the melody's pitch-class
/// durations; `None` for a melody without notes. (The judge and the rewards each find keys
/// with other published profiles; this one only names the key signature.)
pub fn key_of(events: &[Event]) -> Option<AbcKey> {
    let mut durations = [0.0f64; 12];
    for e in events {
        if let Event::Note {
            pitch: Some(p),
            twelfths,
        } = *e
        {
            durations[usize::from(p % 12)] += f64::from(twelfths);
        }
    }
    if durations.iter().sum::<f64>() == 0.0 {
        return None;
    }
    let pearson = |x: &[f64; 12], y: &[f64; 12]| {
        let (mx, my) = (x.iter().sum::<f64>() / 12.0, y.iter().sum::<f64>() / 12.0);
        let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
        for (a, b) in x.iter().zip(y) {
            sxy += (a - mx) * (b - my);
            sxx += (a - mx) * (a - mx);
            syy += (b - my) * (b - my);
        }
        if sxx <= 1e-12 {
            0.0
        } else {
            sxy / (sxx * syy).sqrt()
        }
    };
    let mut best = (
        f64::MIN,
        AbcKey {
            tonic: 0,
            minor: false,
        },
    );
    for (minor, profile) in [(false, KK_MAJOR), (true, KK_MINOR)] {
        for tonic in 0..12u8 {
            let rotated: [f64; 12] =
                std::array::from_fn(|pc| profile[(pc + 12 - usize::from(tonic)) % 12]);
            let r = pearson(&durations, &rotated);
            if r > best.0 {
                best = (r, AbcKey { tonic, minor });
            }
        }
    }
    Some(best.1)
}

/// The most common length, in twelfths of a quarter note, of a melody's interior bars (the
/// first may be a pickup and the last unfinished) when at least half of them have it; `None`
/// when no length dominates or the melody has fewer than three bars.
pub fn modal_bar(events: &[Event]) -> Option<u32> {
    let mut bars: Vec<u32> = vec![0];
    for e in events {
        match *e {
            Event::Bar => bars.push(0),
            Event::Note { twelfths, .. } => *bars.last_mut().expect("a bar") += u32::from(twelfths),
        }
    }
    let interior: Vec<u32> = if bars.len() > 2 {
        bars[1..bars.len() - 1].to_vec()
    } else {
        Vec::new()
    };
    let mut counts: Vec<(u32, usize)> = Vec::new();
    for &b in interior.iter().filter(|&&b| b > 0) {
        match counts.iter_mut().find(|(l, _)| *l == b) {
            Some((_, n)) => *n += 1,
            None => counts.push((b, 1)),
        }
    }
    let &(length, n) = counts
        .iter()
        .max_by_key(|&&(l, n)| (n, std::cmp::Reverse(l)))?;
    (2 * n >= interior.len()).then_some(length)
}

/// The meter a melody's bar lines give it: the most common length of its interior bars (the
/// first may be a pickup and the last unfinished) when at least half of them have it, written
/// in quarters when it is a whole number of them (`3/4`), else in eighths (`3/8`) or
/// sixteenths; `None` when no length dominates (ABC's `M:none`). Six eighths are written
/// `3/4`: 3/4 and 6/8 differ only in how the beats group, which bar lines do not say.
pub fn meter_of(events: &[Event]) -> Option<String> {
    let length = modal_bar(events)?;
    Some(if length % 12 == 0 {
        format!("{}/4", length / 12)
    } else if length % 6 == 0 {
        format!("{}/8", length / 6)
    } else if length % 3 == 0 {
        format!("{}/16", length / 3)
    } else {
        return None;
    })
}

/// The melody in ABC notation (`X:`, `T:`, `M:`, `L:1/8`, `Q:`, `K:`), bar lines as the
/// tokens have them. `meter` is written as given (`"6/8"`); `None` writes the meter the bar
/// lines give ([`meter_of`]) or `none`. The key is the one the notes are in ([`key_of`]),
/// and notes are spelt in it.
pub fn to_abc(events: &[Event], title: &str, meter: Option<&str>, bpm: f32) -> String {
    abc_tune(1, events, title, meter, bpm)
}

/// [`to_abc`] with reference number `number` (`X:number`), so tunes can be concatenated into
/// one ABC file (a "tune book"), separated by blank lines.
pub fn abc_tune(
    number: usize,
    events: &[Event],
    title: &str,
    meter: Option<&str>,
    bpm: f32,
) -> String {
    let mut out = String::new();
    out.push_str(&format!("X:{number}\n"));
    let title: String = title.chars().filter(|c| *c != '\n' && *c != '\r').collect();
    out.push_str(&format!("T:{title}\n"));
    let meter = meter.map(str::to_string).or_else(|| meter_of(events));
    out.push_str(&format!("M:{}\n", meter.as_deref().unwrap_or("none")));
    out.push_str("L:1/8\n");
    if bpm.is_finite() && bpm > 0.0 {
        out.push_str(&format!("Q:1/4={}\n", bpm.round() as u32));
    }
    let key = key_of(events).unwrap_or(AbcKey {
        tonic: 0,
        minor: false,
    });
    out.push_str(&format!("K:{}\n", key.abc_name()));
    let signature = key.signature();
    // The letters altered from the signature so far in this bar (in any octave).
    let mut altered: Vec<char> = Vec::new();
    let mut tokens: Vec<String> = Vec::new();
    let mut bars = 0usize;
    for e in events {
        match *e {
            Event::Bar => {
                tokens.push("|".into());
                altered.clear();
                bars += 1;
                if bars.is_multiple_of(4) {
                    tokens.push("\n".into());
                }
            }
            Event::Note {
                pitch: None,
                twelfths,
            } => tokens.push(format!("z{}", abc_length(twelfths))),
            Event::Note {
                pitch: Some(p),
                twelfths,
            } => {
                let (letter, acc) = spell(p % 12, key);
                let in_signature = signature
                    .iter()
                    .find(|(l, _)| *l == letter)
                    .map_or(0, |&(_, a)| a);
                // An accidental outside the signature is written on every note that has it,
                // and the signature's own is written again on a letter altered earlier in the
                // bar. The standard carries an accidental to the bar line (for one octave);
                // not every reader does (music21 does not): explicit marks read the same
                // everywhere.
                let mut t = String::new();
                if acc != in_signature || altered.contains(&letter) {
                    t.push(match acc {
                        1 => '^',
                        -1 => '_',
                        _ => '=',
                    });
                    if acc != in_signature && !altered.contains(&letter) {
                        altered.push(letter);
                    }
                }
                t.push_str(&abc_letter(p, letter, acc));
                t.push_str(&abc_length(twelfths));
                tokens.push(t);
            }
        }
    }
    while tokens.last().is_some_and(|t| t == "|" || t == "\n") {
        tokens.pop();
    }
    let body = tokens.join(" ").replace(" \n ", "\n");
    out.push_str(&body);
    out.push_str(if body.is_empty() { "|]\n" } else { " |]\n" });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(p: u8, t: u16) -> Event {
        Event::Note {
            pitch: Some(p),
            twelfths: t,
        }
    }

    #[test]
    fn abc_spells_pitches_lengths_and_accidentals_exactly() {
        // D major in 3/4: F♯ and C♯ from the signature; an F natural marked, and the F♯ after
        // it in the same bar marked again; lengths of one, two and three eighths.
        let events = [
            note(62, 12),
            note(66, 6),
            note(69, 6),
            note(74, 12),
            Event::Bar,
            note(65, 6),
            note(66, 6),
            note(64, 6),
            note(62, 6),
            note(61, 6),
            note(62, 6),
            Event::Bar,
            note(69, 12),
            note(73, 6),
            note(74, 18),
        ];
        assert_eq!(
            key_of(&events),
            Some(AbcKey {
                tonic: 2,
                minor: false
            })
        );
        assert_eq!(
            to_abc(&events, "a waltz", None, 110.0),
            "X:1\nT:a waltz\nM:3/4\nL:1/8\nQ:1/4=110\nK:D\nD2 F A d2 | =F ^F E D C D | A2 c d3 |]\n"
        );
        // A given meter is written as given; a rest, a triplet eighth and octave marks.
        let events = [
            note(62, 6),
            Event::Note {
                pitch: None,
                twelfths: 3,
            },
            note(57, 4),
            note(86, 24),
            note(47, 48),
        ];
        assert_eq!(
            to_abc(&events, "t", Some("6/8"), 90.0).lines().nth(2),
            Some("M:6/8")
        );
        assert!(to_abc(&events, "t", Some("6/8"), 90.0).ends_with("z/ A,2/3 d'4 B,,8 |]\n"));
        assert!(to_abc(&[], "empty", None, 120.0).contains("M:none\nL:1/8\nQ:1/4=120\nK:C\n"));
    }

    #[test]
    fn key_signatures_and_spellings_by_hand() {
        let key = |tonic, minor| AbcKey { tonic, minor };
        let names: Vec<String> = (0..12).map(|t| key(t, false).abc_name()).collect();
        assert_eq!(
            names,
            [
                "C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"
            ]
        );
        let minors: Vec<String> = (0..12).map(|t| key(t, true).abc_name()).collect();
        assert_eq!(
            minors,
            [
                "Cm", "C#m", "Dm", "D#m", "Em", "Fm", "F#m", "Gm", "G#m", "Am", "Bbm", "Bm"
            ]
        );
        assert_eq!(key(6, false).fifths(), 6);
        assert_eq!(key(1, false).fifths(), -5);
        assert_eq!(key(9, true).fifths(), 0);
        // D♯ minor, not E♭ minor: its relative major is F♯'s six sharps.
        assert_eq!(key(3, true).fifths(), 6);
        // F major: B♭ from the signature, B natural marked; E major: D♯ from the signature.
        assert_eq!(spell(10, key(5, false)), ('B', -1));
        assert_eq!(spell(11, key(5, false)), ('B', 0));
        assert_eq!(spell(3, key(4, false)), ('D', 1));
        // A black key outside the signature: a sharp in C and sharp keys, a flat in flat keys.
        assert_eq!(spell(8, key(0, false)), ('G', 1));
        assert_eq!(spell(1, key(5, false)), ('D', -1));
        // F♯ major's E♯ is written as F natural.
        assert_eq!(spell(5, key(6, false)), ('F', 0));
        // A B♭ in a flat key keeps its octave: MIDI 70 is B♭4 = "B", MIDI 58 is "B,".
        assert_eq!(abc_letter(70, 'B', -1), "B");
        assert_eq!(abc_letter(58, 'B', -1), "B,");
        assert_eq!(abc_letter(73, 'C', 1), "c");
    }

    #[test]
    fn meters_from_bar_lines_by_hand() {
        let bars = |lengths: &[u16]| {
            let mut events = Vec::new();
            for (i, &l) in lengths.iter().enumerate() {
                if i > 0 {
                    events.push(Event::Bar);
                }
                events.push(note(60, l));
            }
            events
        };
        // A pickup and an unfinished last bar do not count.
        assert_eq!(
            meter_of(&bars(&[6, 36, 36, 24, 30])).as_deref(),
            Some("3/4")
        );
        assert_eq!(meter_of(&bars(&[24, 24, 24])).as_deref(), Some("2/4"));
        assert_eq!(meter_of(&bars(&[18, 18, 18, 18])).as_deref(), Some("3/8"));
        assert_eq!(meter_of(&bars(&[9, 9, 9])).as_deref(), Some("3/16"));
        assert_eq!(
            meter_of(&bars(&[48, 48, 48, 36, 48])).as_deref(),
            Some("4/4")
        );
        // No length holds half the interior bars; no interior bar at all.
        assert_eq!(meter_of(&bars(&[24, 24, 36, 48, 24])), None);
        assert_eq!(meter_of(&bars(&[24, 24])), None);
        assert_eq!(meter_of(&[]), None);
    }

    /// Reads back the ABC this module writes (its dialect: `K:` a major or minor key, L:1/8,
    /// `^`, `_` and `=` holding for their letter and octave to the bar line, as the standard
    /// reads them).
    fn parse_abc_body(abc: &str) -> Vec<Event> {
        let key_field = abc
            .lines()
            .find_map(|l| l.strip_prefix("K:"))
            .expect("a K: field");
        let (name, minor) = match key_field.strip_suffix('m') {
            Some(n) => (n, true),
            None => (key_field, false),
        };
        let mut letters = name.chars();
        let tonic_letter = letters.next().expect("a tonic");
        let shift = match letters.next() {
            Some('#') => 1,
            Some('b') => -1,
            _ => 0,
        };
        let natural_pc = |l: char| i32::from(LETTERS.iter().find(|(x, _)| *x == l).unwrap().1);
        let key = AbcKey {
            tonic: (natural_pc(tonic_letter) + shift).rem_euclid(12) as u8,
            minor,
        };
        let signature = key.signature();
        let body: String = abc
            .lines()
            .filter(|l| !(l.len() > 1 && l.as_bytes()[1] == b':'))
            .collect::<Vec<_>>()
            .join(" ");
        let mut out = Vec::new();
        let mut held: std::collections::HashMap<(char, i32), i32> = Default::default();
        let chars: Vec<char> = body.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c == '|' {
                if chars.get(i + 1) != Some(&']') {
                    out.push(Event::Bar);
                }
                held.clear();
                i += 1;
                continue;
            }
            if c.is_whitespace() || c == ']' {
                i += 1;
                continue;
            }
            let mut accidental = None;
            if c == '^' || c == '=' || c == '_' {
                accidental = Some(match c {
                    '^' => 1,
                    '_' => -1,
                    _ => 0,
                });
                i += 1;
            }
            let letter = chars[i];
            i += 1;
            let mut octave = if letter.is_ascii_lowercase() { 5 } else { 4 };
            while i < chars.len() && (chars[i] == '\'' || chars[i] == ',') {
                octave += if chars[i] == '\'' { 1 } else { -1 };
                i += 1;
            }
            let mut num = String::new();
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '/') {
                num.push(chars[i]);
                i += 1;
            }
            let eighths = match num.split_once('/') {
                None if num.is_empty() => (1, 1),
                None => (num.parse().unwrap(), 1),
                Some((n, d)) => (
                    if n.is_empty() { 1 } else { n.parse().unwrap() },
                    if d.is_empty() { 2 } else { d.parse().unwrap() },
                ),
            };
            let twelfths = (6 * eighths.0 / eighths.1) as u16;
            if letter == 'z' {
                out.push(Event::Note {
                    pitch: None,
                    twelfths,
                });
                continue;
            }
            let upper = letter.to_ascii_uppercase();
            if let Some(a) = accidental {
                held.insert((upper, octave), a);
            }
            let acc = held
                .get(&(upper, octave))
                .copied()
                .unwrap_or_else(|| signature.iter().find(|(l, _)| *l == upper).unwrap().1);
            let midi = (octave + 1) * 12 + natural_pc(upper) + acc;
            out.push(Event::Note {
                pitch: Some(midi as u8),
                twelfths,
            });
        }
        out
    }

    #[test]
    fn random_melodies_read_back_from_abc_exactly() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..200 {
            let n = rng.random_range(0..40);
            let events: Vec<Event> = (0..n)
                .map(|_| match rng.random_range(0..10) {
                    0 => Event::Bar,
                    1 => Event::Note {
                        pitch: None,
                        twelfths: crate::tokens::DURATIONS[rng.random_range(0..10)],
                    },
                    _ => Event::Note {
                        pitch: Some(rng.random_range(48..=95)),
                        twelfths: crate::tokens::DURATIONS[rng.random_range(0..10)],
                    },
                })
                .collect();
            let abc = to_abc(&events, "t", None, 100.0);
            // Trailing bar lines fold into the closing |].
            let mut want = events.clone();
            while want.last() == Some(&Event::Bar) {
                want.pop();
            }
            assert_eq!(parse_abc_body(&abc), want, "{abc}");
        }
    }

    #[test]
    fn midi_has_the_notes_at_their_times() {
        let events = [
            note(60, 12),
            Event::Note {
                pitch: None,
                twelfths: 6,
            },
            Event::Bar,
            note(67, 3),
        ];
        let bytes = to_midi(&events, 120.0, Instrument::Fiddle, "t");
        let smf = Smf::parse(&bytes).expect("a valid MIDI file");
        assert_eq!(smf.header.timing, Timing::Metrical(u15::new(480)));
        let mut t = 0u32;
        let mut notes = Vec::new();
        let mut program = None;
        let mut tempo = None;
        for e in &smf.tracks[0] {
            t += e.delta.as_int();
            match e.kind {
                TrackEventKind::Midi {
                    message: MidiMessage::NoteOn { key, .. },
                    ..
                } => notes.push(("on", key.as_int(), t)),
                TrackEventKind::Midi {
                    message: MidiMessage::NoteOff { key, .. },
                    ..
                } => notes.push(("off", key.as_int(), t)),
                TrackEventKind::Midi {
                    message: MidiMessage::ProgramChange { program: p },
                    ..
                } => program = Some(p.as_int()),
                TrackEventKind::Meta(MetaMessage::Tempo(us)) => tempo = Some(us.as_int()),
                _ => {}
            }
        }
        // Quarter C4 at 0..480, an eighth rest, G4 sixteenth at 720..840.
        assert_eq!(
            notes,
            vec![
                ("on", 60, 0),
                ("off", 60, 480),
                ("on", 67, 720),
                ("off", 67, 840)
            ]
        );
        assert_eq!(program, Some(40), "violin");
        assert_eq!(tempo, Some(500_000), "120 bpm");
    }
}
