//! Graded degradations of corpus renderings, and the MOS labels they get: the synthetic
//! training data of the quality model (a simplified stand-in for human MOS ratings, named as
//! such; a ratings file of real scores can replace or extend it).
//!
//! A clip is either clean or has one fault at a severity `s` in (0, 1]:
//!
//! | fault | what it does at severity `s` |
//! |---|---|
//! | wrong notes | each note, with probability 0.6·s, moves by ±1 or ±6 semitones (out of key) |
//! | wrong durations | each note, with probability 0.3 + 0.6·s, takes a neighbouring duration of the vocabulary (`DURATIONS`, one or two steps up or down the ladder): the bars lose their length and the accents their place, the mistakes a policy over the token vocabulary can make (an earlier "off-grid" fault moved notes off the twelfth grid, which no policy can do, and taught the model that many distinct durations are a fault) |
//! | broken phrases | each bar, with probability 0.6·s, becomes a long rest, loses its second half, or stutters one note |
//! | clipping | gain 1 + 15·s, then a hard clip at the rendering's peak level |
//! | noise | white noise at a signal-to-noise ratio of 30 − 30·s dB |
//! | monotony | every note and rest becomes the next of a cycle of the melody's first 2 + ⌊4(1 − s)⌉ distinct pitches, an eighth long, bar lines where they were (a degenerate melody: "the same few notes in even eighths") |
//! | even rhythm | each bar, with probability s, has its notes made equally long (the bar's length kept; a bar whose length does not divide evenly is left alone): the pitches stay, the rhythm's character goes |
//! | misplaced bars | each bar line, with probability s, moves one note earlier or later: the notes stay, the downbeat accents (`musicrl_music::render`) fall in the wrong places and the bars lose their common length |
//!
//! **Labels**: a clean rendering of a corpus tune is rated 4.5; a degraded one 4.5 − 3.5·s, so
//! labels span [1, 4.5] on the MOS scale of 1 to 5.

use rand::RngExt;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use musicrl_music::tokens::{DURATIONS, Event, HIGHEST_PITCH, LOWEST_PITCH};

pub const CLEAN_MOS: f32 = 4.5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    WrongNotes,
    WrongDurations,
    BrokenPhrases,
    Clipping,
    Noise,
    Monotony,
    EvenRhythm,
    MisplacedBars,
}

impl Fault {
    pub const ALL: [Fault; 8] = [
        Fault::WrongNotes,
        Fault::WrongDurations,
        Fault::BrokenPhrases,
        Fault::Clipping,
        Fault::Noise,
        Fault::Monotony,
        Fault::EvenRhythm,
        Fault::MisplacedBars,
    ];
}

/// What is done to a clip.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Degradation {
    pub fault: Option<Fault>,
    pub severity: f32,
}

impl Degradation {
    pub const CLEAN: Degradation = Degradation {
        fault: None,
        severity: 0.0,
    };

    /// The documented MOS label.
    pub fn mos(&self) -> f32 {
        match self.fault {
            None => CLEAN_MOS,
            Some(_) => CLEAN_MOS - 3.5 * self.severity.clamp(0.0, 1.0),
        }
    }

    /// A random degradation: clean with probability `clean`, else a uniform fault at a
    /// severity uniform in [0.1, 1].
    pub fn random(clean: f32, rng: &mut StdRng) -> Self {
        if rng.random::<f32>() < clean {
            return Self::CLEAN;
        }
        Degradation {
            fault: Some(Fault::ALL[rng.random_range(0..Fault::ALL.len())]),
            severity: rng.random_range(0.1f32..=1.0),
        }
    }

    /// The melody with this degradation's note-level faults.
    pub fn apply_to_events(&self, events: &[Event], rng: &mut StdRng) -> Vec<Event> {
        let s = self.severity.clamp(0.0, 1.0);
        match self.fault {
            Some(Fault::WrongNotes) => events
                .iter()
                .map(|e| match *e {
                    Event::Note {
                        pitch: Some(p),
                        twelfths,
                    } if rng.random::<f32>() < 0.6 * s => {
                        let shift = [-6i16, -1, 1, 6][rng.random_range(0..4)];
                        let moved = (i16::from(p) + shift)
                            .clamp(i16::from(LOWEST_PITCH), i16::from(HIGHEST_PITCH));
                        Event::Note {
                            pitch: Some(moved as u8),
                            twelfths,
                        }
                    }
                    other => other,
                })
                .collect(),
            Some(Fault::WrongDurations) => events
                .iter()
                .map(|e| match *e {
                    Event::Note { pitch, twelfths } if rng.random::<f32>() < 0.3 + 0.6 * s => {
                        let at = DURATIONS
                            .iter()
                            .position(|&d| d >= twelfths)
                            .unwrap_or(DURATIONS.len() - 1) as i32;
                        let step = [-2i32, -1, 1, 2][rng.random_range(0..4)];
                        // Off the end of the ladder, step the other way.
                        let to = if (0..DURATIONS.len() as i32).contains(&(at + step)) {
                            at + step
                        } else {
                            at - step
                        };
                        Event::Note {
                            pitch,
                            twelfths: DURATIONS[to as usize],
                        }
                    }
                    other => other,
                })
                .collect(),
            Some(Fault::BrokenPhrases) => {
                let mut out = Vec::with_capacity(events.len());
                for bar in events.split_inclusive(|e| *e == Event::Bar) {
                    if rng.random::<f32>() >= 0.6 * s {
                        out.extend_from_slice(bar);
                        continue;
                    }
                    let notes: Vec<(Option<u8>, u16)> = bar
                        .iter()
                        .filter_map(|e| match *e {
                            Event::Note { pitch, twelfths } => Some((pitch, twelfths)),
                            Event::Bar => None,
                        })
                        .collect();
                    let total: u16 = notes.iter().map(|n| n.1).sum();
                    match rng.random_range(0..3) {
                        0 => out.push(Event::Note {
                            pitch: None,
                            twelfths: total.max(12) * 2,
                        }),
                        1 => out.extend(
                            notes[..notes.len().div_ceil(2)]
                                .iter()
                                .map(|&(pitch, twelfths)| Event::Note { pitch, twelfths }),
                        ),
                        _ => {
                            let pitch = notes.iter().find_map(|n| n.0);
                            for _ in 0..(total / 3).clamp(2, 16) {
                                out.push(Event::Note { pitch, twelfths: 3 });
                            }
                        }
                    }
                    if bar.last() == Some(&Event::Bar) {
                        out.push(Event::Bar);
                    }
                }
                out
            }
            Some(Fault::Monotony) => {
                let k = 2 + (4.0 * (1.0 - s)).round() as usize;
                let mut cycle: Vec<u8> = Vec::with_capacity(k);
                for e in events {
                    if let Event::Note { pitch: Some(p), .. } = *e
                        && !cycle.contains(&p)
                        && cycle.len() < k
                    {
                        cycle.push(p);
                    }
                }
                if cycle.is_empty() {
                    return events.to_vec();
                }
                let mut i = 0usize;
                events
                    .iter()
                    .map(|e| match *e {
                        Event::Note { .. } => {
                            let pitch = Some(cycle[i % cycle.len()]);
                            i += 1;
                            Event::Note { pitch, twelfths: 6 }
                        }
                        Event::Bar => Event::Bar,
                    })
                    .collect()
            }
            Some(Fault::EvenRhythm) => {
                let mut out = Vec::with_capacity(events.len());
                for bar in events.split_inclusive(|e| *e == Event::Bar) {
                    let notes = bar
                        .iter()
                        .filter(|e| matches!(e, Event::Note { .. }))
                        .count() as u16;
                    let total: u16 = bar
                        .iter()
                        .map(|e| match *e {
                            Event::Note { twelfths, .. } => twelfths,
                            Event::Bar => 0,
                        })
                        .sum();
                    if notes < 2 || !total.is_multiple_of(notes) || rng.random::<f32>() >= s {
                        out.extend_from_slice(bar);
                        continue;
                    }
                    out.extend(bar.iter().map(|e| match *e {
                        Event::Note { pitch, .. } => Event::Note {
                            pitch,
                            twelfths: total / notes,
                        },
                        Event::Bar => Event::Bar,
                    }));
                }
                out
            }
            Some(Fault::MisplacedBars) => {
                let mut out = events.to_vec();
                let mut i = 0;
                while i < out.len() {
                    if out[i] == Event::Bar && rng.random::<f32>() < s {
                        // Swap with a neighbouring note (never past another bar line), then
                        // skip past it so a bar line moves at most once.
                        let later = rng.random::<bool>();
                        let j = if later { i + 1 } else { i.wrapping_sub(1) };
                        if j < out.len() && matches!(out[j], Event::Note { .. }) {
                            out.swap(i, j);
                            i = i.max(j);
                        }
                    }
                    i += 1;
                }
                out
            }
            _ => events.to_vec(),
        }
    }

    /// The audio with this degradation's signal-level faults.
    pub fn apply_to_audio(&self, audio: &mut [f32], rng: &mut StdRng) {
        let s = self.severity.clamp(0.0, 1.0);
        match self.fault {
            Some(Fault::Clipping) => {
                let peak = audio.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                let gain = 1.0 + 15.0 * s;
                audio
                    .iter_mut()
                    .for_each(|x| *x = (*x * gain).clamp(-peak, peak));
            }
            Some(Fault::Noise) => {
                let rms =
                    (audio.iter().map(|x| x * x).sum::<f32>() / audio.len().max(1) as f32).sqrt();
                let snr_db = 30.0 - 30.0 * s;
                // Uniform noise in [−a, a] has RMS a/√3.
                let a = rms / 10f32.powf(snr_db / 20.0) * 3f32.sqrt();
                audio.iter_mut().for_each(|x| {
                    *x = (*x + a * (2.0 * rng.random::<f32>() - 1.0)).clamp(-1.0, 1.0)
                });
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn melody() -> Vec<Event> {
        (0..32)
            .map(|i| {
                if i % 5 == 4 {
                    Event::Bar
                } else {
                    Event::Note {
                        pitch: Some(60 + (i % 7) as u8),
                        // Dotted rhythms: a quarter and an eighth, a quarter and an eighth.
                        twelfths: if i % 2 == 0 { 8 } else { 4 },
                    }
                }
            })
            .collect()
    }

    fn notes(events: &[Event]) -> Vec<(Option<u8>, u16)> {
        events
            .iter()
            .filter_map(|e| match *e {
                Event::Note { pitch, twelfths } => Some((pitch, twelfths)),
                Event::Bar => None,
            })
            .collect()
    }

    fn bar_lengths(events: &[Event]) -> Vec<u16> {
        events
            .split(|e| *e == Event::Bar)
            .map(|b| notes(b).iter().map(|n| n.1).sum())
            .collect()
    }

    #[test]
    fn even_rhythm_keeps_pitches_and_bar_lengths_and_misplaced_bars_keep_the_notes() {
        let mut rng = StdRng::seed_from_u64(7);
        let m = melody();
        let even = Degradation {
            fault: Some(Fault::EvenRhythm),
            severity: 1.0,
        }
        .apply_to_events(&m, &mut rng);
        let pitches = |e: &[Event]| notes(e).iter().map(|n| n.0).collect::<Vec<_>>();
        assert_eq!(pitches(&even), pitches(&m));
        assert_eq!(bar_lengths(&even), bar_lengths(&m));
        // Every bar of four notes (24 twelfths) now holds four eighths.
        assert!(notes(&even[..4]).iter().all(|n| n.1 == 6), "{even:?}");

        let moved = Degradation {
            fault: Some(Fault::MisplacedBars),
            severity: 1.0,
        }
        .apply_to_events(&m, &mut rng);
        assert_eq!(notes(&moved), notes(&m));
        assert_eq!(
            moved.iter().filter(|e| **e == Event::Bar).count(),
            m.iter().filter(|e| **e == Event::Bar).count()
        );
        let lengths = bar_lengths(&moved);
        assert!(
            lengths[..lengths.len() - 1].iter().any(|&l| l != 24),
            "every interior bar still 24 twelfths: {lengths:?}"
        );
    }

    #[test]
    fn labels_follow_the_documented_scale() {
        assert_eq!(Degradation::CLEAN.mos(), 4.5);
        let d = |s| Degradation {
            fault: Some(Fault::Noise),
            severity: s,
        };
        assert!((d(1.0).mos() - 1.0).abs() < 1e-6);
        assert!((d(0.5).mos() - 2.75).abs() < 1e-6);
    }

    #[test]
    fn note_faults_change_the_melody_and_audio_faults_the_signal() {
        let mut rng = StdRng::seed_from_u64(1);
        let m = melody();
        for fault in [
            Fault::WrongNotes,
            Fault::WrongDurations,
            Fault::BrokenPhrases,
            Fault::Monotony,
            Fault::EvenRhythm,
            Fault::MisplacedBars,
        ] {
            let d = Degradation {
                fault: Some(fault),
                severity: 1.0,
            };
            assert_ne!(d.apply_to_events(&m, &mut rng), m, "{fault:?}");
        }
        assert_eq!(Degradation::CLEAN.apply_to_events(&m, &mut rng), m);
        // Monotony at full severity: two pitches alternating in eighths, bars kept.
        let mono = Degradation {
            fault: Some(Fault::Monotony),
            severity: 1.0,
        }
        .apply_to_events(&m, &mut rng);
        let pitches: Vec<u8> = mono
            .iter()
            .filter_map(|e| match e {
                Event::Note { pitch, twelfths } => {
                    assert_eq!(*twelfths, 6);
                    *pitch
                }
                Event::Bar => None,
            })
            .collect();
        assert_eq!(&pitches[..4], &[60, 61, 60, 61]);
        assert_eq!(
            mono.iter().filter(|e| **e == Event::Bar).count(),
            m.iter().filter(|e| **e == Event::Bar).count()
        );
        let clean: Vec<f32> = (0..1000).map(|i| 0.5 * (i as f32 * 0.05).sin()).collect();
        let mut clipped = clean.clone();
        Degradation {
            fault: Some(Fault::Clipping),
            severity: 1.0,
        }
        .apply_to_audio(&mut clipped, &mut rng);
        let at_peak = clipped.iter().filter(|x| x.abs() >= 0.4999).count();
        assert!(at_peak > 600, "{at_peak} samples at the peak");
        let mut noisy = clean.clone();
        Degradation {
            fault: Some(Fault::Noise),
            severity: 1.0,
        }
        .apply_to_audio(&mut noisy, &mut rng);
        // 0 dB: the noise has the signal's power.
        let noise_power: f32 = noisy.iter().zip(&clean).map(|(a, b)| (a - b).powi(2)).sum();
        let signal_power: f32 = clean.iter().map(|x| x * x).sum();
        assert!((noise_power / signal_power - 1.0).abs() < 0.2);
    }
}
