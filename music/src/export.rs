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

/// A MIDI pitch spelt in ABC with sharps: the letter with its octave marks, and whether it
/// is sharp.
fn abc_pitch(midi: u8) -> (String, bool) {
    const SPELLING: [(char, bool); 12] = [
        ('C', false),
        ('C', true),
        ('D', false),
        ('D', true),
        ('E', false),
        ('F', false),
        ('F', true),
        ('G', false),
        ('G', true),
        ('A', false),
        ('A', true),
        ('B', false),
    ];
    let octave = i32::from(midi) / 12 - 1; // MIDI 60 = C4 = ABC "C"
    let (letter, sharp) = SPELLING[usize::from(midi % 12)];
    let letter_text = if octave >= 5 {
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
    };
    (letter_text, sharp)
}

/// The melody in ABC notation (`X:`, `T:`, `M:`, `L:1/8`, `Q:`, `K:C`), bar lines as the
/// tokens have them. `meter` is written as given (`"6/8"`) or `none`.
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
    out.push_str(&format!("M:{}\n", meter.unwrap_or("none")));
    out.push_str("L:1/8\n");
    if bpm.is_finite() && bpm > 0.0 {
        out.push_str(&format!("Q:1/4={}\n", bpm.round() as u32));
    }
    out.push_str("K:C\n");
    // The letters sharpened so far in this bar.
    let mut sharpened: std::collections::HashMap<char, bool> = std::collections::HashMap::new();
    let mut tokens: Vec<String> = Vec::new();
    let mut bars = 0usize;
    for e in events {
        match *e {
            Event::Bar => {
                tokens.push("|".into());
                sharpened.clear();
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
                let (letter, sharp) = abc_pitch(p);
                // Every sharp is written; a natural is marked when its letter (in any
                // octave) was sharp earlier in the bar. The standard carries an accidental to
                // the bar line, but not every reader does (music21 does not): explicit marks
                // read the same everywhere.
                let name = letter
                    .chars()
                    .next()
                    .expect("a letter")
                    .to_ascii_uppercase();
                let mut t = String::new();
                if sharp {
                    t.push('^');
                    sharpened.insert(name, true);
                } else if sharpened.get(&name).copied().unwrap_or(false) {
                    t.push('=');
                }
                t.push_str(&letter);
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
        // C4 eighth, F#4 quarter, F4 eighth (natural again in the same bar), a sixteenth
        // rest, then a bar: F#4 needs its sharp again, and D5, A3 triplet eighth, C6 half,
        // G#4 and B2.
        let events = [
            note(60, 6),
            note(66, 12),
            note(65, 6),
            Event::Note {
                pitch: None,
                twelfths: 3,
            },
            Event::Bar,
            note(66, 9),
            note(74, 6),
            note(57, 4),
            note(84, 24),
            note(68, 6),
            note(47, 48),
            note(68, 6),
            note(55, 6),
            Event::Bar,
            note(78, 6),
            note(66, 6),
            note(65, 6),
        ];
        let abc = to_abc(&events, "a jig", Some("6/8"), 110.0);
        assert_eq!(
            abc,
            "X:1\nT:a jig\nM:6/8\nL:1/8\nQ:1/4=110\nK:C\nC ^F2 =F z/ | ^F3/2 d A,2/3 c'4 ^G B,,8 ^G =G, | ^f ^F =F |]\n"
        );
        assert!(to_abc(&[], "empty", None, 120.0).contains("M:none"));
    }

    /// Reads back the ABC this module writes (its dialect only: K:C, L:1/8, sharps and
    /// naturals that hold to the bar line).
    fn parse_abc_body(abc: &str) -> Vec<Event> {
        let body: String = abc
            .lines()
            .filter(|l| !(l.len() > 1 && l.as_bytes()[1] == b':'))
            .collect::<Vec<_>>()
            .join(" ");
        let mut out = Vec::new();
        let mut held: std::collections::HashMap<(char, i32), bool> = Default::default();
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
            if c == '^' || c == '=' {
                accidental = Some(c == '^');
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
            let key = (upper, octave);
            if let Some(a) = accidental {
                held.insert(key, a);
            }
            let sharp = held.get(&key).copied().unwrap_or(false);
            let pc = [
                ('C', 0),
                ('D', 2),
                ('E', 4),
                ('F', 5),
                ('G', 7),
                ('A', 9),
                ('B', 11),
            ]
            .iter()
            .find(|(l, _)| *l == upper)
            .unwrap()
            .1;
            let midi = (octave + 1) * 12 + pc + i32::from(sharp);
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
