//! A small synthesizer: melody + tempo + instrument → 16-bit mono PCM (WAV via `hound`).
//!
//! Four timbres, each with its own envelope:
//! - `Harp`: Karplus–Strong plucked string (a seeded noise burst in a damped delay line);
//!   rings until the next note.
//! - `Flute`: sine with weak 2nd/3rd harmonics, breath noise at the attack, delayed vibrato.
//! - `Fiddle`: band-limited sawtooth (additive, harmonics below Nyquist) with vibrato and a
//!   slow bowed attack.
//! - `Organ`: additive "drawbar" partials (1, 2, 3, 4, 6, 8 × f0), fast attack, flat sustain.
//!
//! **Metric accents.** A player stresses the downbeat: the first note after each bar line
//! (and the first note of the melody) sounds at full level, every other note at
//! [`OFFBEAT_LEVEL`]. This is what makes a melody's bar lines audible at all: without it the
//! BAR token changes nothing in the audio, so no audio reward could hear where the bars fall.
//!
//! Rendering is deterministic for a seed; the mix is normalised to a peak of 0.8 full scale,
//! so it never clips.

use std::f32::consts::TAU;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::tokens::Event;
use crate::{MusicError, Result};

pub const DEFAULT_SAMPLE_RATE: u32 = 22_050;
const PEAK: f32 = 0.8;
/// The RMS of every plucked string's initial burst (that of the smoothed uniform noise it is
/// drawn from: √(⅓ · 19/81)).
const PLUCK_RMS: f32 = 0.28;

/// The level of a note that does not start a bar, relative to a downbeat's.
pub const OFFBEAT_LEVEL: f32 = 0.55;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Instrument {
    Harp,
    Flute,
    Fiddle,
    Organ,
}

impl Instrument {
    pub const ALL: [Instrument; 4] = [
        Instrument::Harp,
        Instrument::Flute,
        Instrument::Fiddle,
        Instrument::Organ,
    ];

    /// The word captions use.
    pub fn caption_name(self) -> &'static str {
        match self {
            Instrument::Harp => "harp",
            Instrument::Flute => "flute",
            Instrument::Fiddle => "fiddle",
            Instrument::Organ => "organ",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.caption_name() == name)
    }

    /// The instrument a caption names, if exactly one.
    pub fn named_in(caption: &str) -> Option<Self> {
        let lower = caption.to_lowercase();
        let mut found = Self::ALL
            .into_iter()
            .filter(|i| lower.contains(i.caption_name()));
        let first = found.next()?;
        found.next().is_none().then_some(first)
    }
}

pub fn midi_to_hz(midi: u8) -> f32 {
    440.0 * 2f32.powf((f32::from(midi) - 69.0) / 12.0)
}

/// A note placed in time, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placed {
    pub pitch: u8,
    pub onset: f32,
    pub duration: f32,
    /// 1 for a note that starts a bar (or the melody), [`OFFBEAT_LEVEL`] otherwise.
    pub level: f32,
}

/// Places a melody's notes in time at `bpm` quarter notes per minute, each with its metric
/// accent (a rest that starts a bar passes no accent on to the note after it).
pub fn schedule(events: &[Event], bpm: f32) -> (Vec<Placed>, f32) {
    let seconds_per_twelfth = 60.0 / bpm / 12.0;
    let mut t = 0.0f32;
    let mut notes = Vec::new();
    let mut downbeat = true;
    for e in events {
        match *e {
            Event::Note { pitch, twelfths } => {
                let d = f32::from(twelfths) * seconds_per_twelfth;
                if let Some(p) = pitch {
                    notes.push(Placed {
                        pitch: p,
                        onset: t,
                        duration: d,
                        level: if downbeat { 1.0 } else { OFFBEAT_LEVEL },
                    });
                }
                downbeat = false;
                t += d;
            }
            Event::Bar => downbeat = true,
        }
    }
    (notes, t)
}

/// Seconds of release rendered after the melody's last beat.
pub const TAIL_S: f32 = 0.5;

/// Renders a melody to samples in [-1, 1] (peak-normalised to 0.8).
pub fn render(
    events: &[Event],
    bpm: f32,
    instrument: Instrument,
    sample_rate: u32,
    seed: u64,
) -> Vec<f32> {
    let (notes, total) = schedule(events, bpm.max(1.0));
    let sr = sample_rate as f32;
    let tail = TAIL_S;
    let mut out = vec![0.0f32; ((total + tail) * sr).ceil() as usize + 1];
    let mut rng = StdRng::seed_from_u64(seed);
    for (i, n) in notes.iter().enumerate() {
        // A plucked note rings until the next onset; others hold 90% of their value.
        let ring = match instrument {
            Instrument::Harp => notes
                .get(i + 1)
                .map_or(n.duration + tail, |next| next.onset - n.onset),
            _ => n.duration * 0.9,
        };
        let start = (n.onset * sr) as usize;
        let voice = synth(instrument, midi_to_hz(n.pitch), ring, sr, &mut rng);
        for (k, s) in voice.into_iter().enumerate() {
            if let Some(o) = out.get_mut(start + k) {
                *o += n.level * s;
            }
        }
    }
    // DC blocker (a one-pole high-pass at about 20 Hz): a plucked string whose burst is not
    // exactly one period long starts with an offset.
    let r = 1.0 - TAU * 20.0 / sr;
    let (mut x1, mut y1) = (0.0f32, 0.0f32);
    for s in out.iter_mut() {
        let y = *s - x1 + r * y1;
        x1 = *s;
        y1 = y;
        *s = y;
    }
    let peak = out.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    if peak > 0.0 {
        let g = PEAK / peak;
        out.iter_mut().for_each(|s| *s *= g);
    }
    out
}

fn envelope(t: f32, len: f32, attack: f32, release: f32) -> f32 {
    let a = (t / attack).min(1.0);
    let r = ((len - t) / release).clamp(0.0, 1.0);
    a * r
}

fn synth(instrument: Instrument, f0: f32, len: f32, sr: f32, rng: &mut StdRng) -> Vec<f32> {
    let n = (len.max(0.02) * sr) as usize;
    match instrument {
        Instrument::Harp => {
            // Karplus–Strong: y[k] = decay · ½ (y[k − D] + y[k − D − 1]). The two-point average
            // delays by half a sample, so D = period − ½ (read with linear interpolation)
            // tunes the string exactly.
            let period = sr / f0;
            let d = period - 0.5;
            let di = d.floor() as usize;
            let fr = d - di as f32;
            let burst_len = di + 3;
            let mut y: Vec<f32> = (0..burst_len)
                .map(|_| rng.random::<f32>() * 2.0 - 1.0)
                .collect();
            // A softened burst (two passes of a 3-point average: a warmer pluck) without DC,
            // so the string does not carry an offset that decays slowly.
            for _ in 0..2 {
                let prev = y.clone();
                for i in 0..burst_len {
                    y[i] = (prev[(i + burst_len - 1) % burst_len]
                        + prev[i]
                        + prev[(i + 1) % burst_len])
                        / 3.0;
                }
            }
            let mean = y.iter().sum::<f32>() / burst_len as f32;
            y.iter_mut().for_each(|x| *x -= mean);
            // An even touch: every burst carries the same energy, so a pluck's loudness is
            // its metric accent, not the luck of its noise (unnormalised, two plucks of one
            // level differed by up to 6 dB, as much as a downbeat's stress).
            let rms = (y.iter().map(|x| x * x).sum::<f32>() / burst_len as f32).sqrt();
            if rms > 1e-6 {
                y.iter_mut().for_each(|x| *x *= PLUCK_RMS / rms);
            }
            let decay = 0.996f32;
            y.reserve(n);
            while y.len() < n.max(burst_len) {
                let k = y.len();
                let at = |lag: usize| y[k - lag];
                let delayed = at(di) * (1.0 - fr) + at(di + 1) * fr;
                let delayed1 = at(di + 1) * (1.0 - fr) + at(di + 2) * fr;
                y.push(decay * 0.5 * (delayed + delayed1));
            }
            y.truncate(n);
            y.iter()
                .enumerate()
                .map(|(k, s)| 0.6 * s * envelope(k as f32 / sr, len, 0.002, 0.02))
                .collect()
        }
        Instrument::Flute => {
            // Vibrato modulates the frequency, so the phase is accumulated sample by sample.
            let mut phase = 0.0f32;
            (0..n)
                .map(|k| {
                    let t = k as f32 / sr;
                    let vib =
                        1.0 + 0.006 * (TAU * 5.0 * t).sin() * ((t - 0.15) / 0.2).clamp(0.0, 1.0);
                    phase = (phase + TAU * f0 * vib / sr) % TAU;
                    let tone =
                        phase.sin() + 0.12 * (2.0 * phase).sin() + 0.05 * (3.0 * phase).sin();
                    let breath = (rng.random::<f32>() * 2.0 - 1.0) * 0.05 * (-t / 0.05).exp();
                    0.5 * (tone + breath) * envelope(t, len, 0.04, 0.06)
                })
                .collect()
        }
        Instrument::Fiddle => {
            let harmonics = ((sr / 2.0 / f0) as usize).clamp(1, 20);
            let mut phase = 0.0f32;
            (0..n)
                .map(|k| {
                    let t = k as f32 / sr;
                    let vib =
                        1.0 + 0.008 * (TAU * 5.5 * t).sin() * ((t - 0.1) / 0.2).clamp(0.0, 1.0);
                    phase = (phase + TAU * f0 * vib / sr) % TAU;
                    let saw: f32 = (1..=harmonics)
                        .map(|h| (h as f32 * phase).sin() / h as f32)
                        .sum();
                    0.35 * saw * envelope(t, len, 0.06, 0.05)
                })
                .collect()
        }
        Instrument::Organ => {
            let partials: [(f32, f32); 6] = [
                (1.0, 1.0),
                (2.0, 0.6),
                (3.0, 0.4),
                (4.0, 0.3),
                (6.0, 0.2),
                (8.0, 0.15),
            ];
            (0..n)
                .map(|k| {
                    let t = k as f32 / sr;
                    let s: f32 = partials
                        .iter()
                        .filter(|(m, _)| m * f0 < sr / 2.0)
                        .map(|(m, a)| a * (TAU * m * f0 * t).sin())
                        .sum();
                    0.3 * s * envelope(t, len, 0.01, 0.03)
                })
                .collect()
        }
    }
}

/// 16-bit PCM samples of a rendering.
pub fn to_pcm16(samples: &[f32]) -> Vec<i16> {
    samples
        .iter()
        .map(|s| (s.clamp(-1.0, 1.0) * 32767.0).round() as i16)
        .collect()
}

/// A 16-bit mono WAV file's bytes (44-byte RIFF header, then the samples).
pub fn wav_bytes(samples: &[f32], sample_rate: u32) -> Vec<u8> {
    let data = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(sample_rate * 2).to_le_bytes()); // bytes a second
    out.extend_from_slice(&2u16.to_le_bytes()); // bytes a frame
    out.extend_from_slice(&16u16.to_le_bytes()); // bits a sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data.to_le_bytes());
    for s in to_pcm16(samples) {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// Writes a 16-bit mono WAV.
pub fn write_wav(path: &Path, samples: &[f32], sample_rate: u32) -> Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)
        .map_err(|e| MusicError::Wav(path.to_path_buf(), e.to_string()))?;
    for s in to_pcm16(samples) {
        w.write_sample(s)
            .map_err(|e| MusicError::Wav(path.to_path_buf(), e.to_string()))?;
    }
    w.finalize()
        .map_err(|e| MusicError::Wav(path.to_path_buf(), e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use realfft::RealFftPlanner;

    fn note(p: u8, twelfths: u16) -> Event {
        Event::Note {
            pitch: Some(p),
            twelfths,
        }
    }
    fn rest(twelfths: u16) -> Event {
        Event::Note {
            pitch: None,
            twelfths,
        }
    }

    /// The fundamental of `samples` by normalised autocorrelation (lags for 80..1000 Hz, with
    /// parabolic interpolation).
    fn pitch_hz(samples: &[f32], sr: f32) -> f32 {
        let ac = |lag: usize| -> f32 {
            let (mut num, mut e0, mut e1) = (0.0f32, 0.0f32, 0.0f32);
            for i in 0..samples.len() - lag {
                num += samples[i] * samples[i + lag];
                e0 += samples[i] * samples[i];
                e1 += samples[i + lag] * samples[i + lag];
            }
            num / (e0 * e1).sqrt().max(1e-12)
        };
        let (lo, hi) = ((sr / 1000.0) as usize, (sr / 80.0) as usize);
        let values: Vec<f32> = (lo..=hi).map(ac).collect();
        // The first lag whose correlation is within 10% of the best: the period, not a multiple.
        let best = values.iter().cloned().fold(f32::MIN, f32::max);
        let i = (1..values.len() - 1)
            .find(|&i| {
                values[i] >= 0.9 * best && values[i] >= values[i - 1] && values[i] >= values[i + 1]
            })
            .expect("a peak");
        let (a, b, c) = (values[i - 1], values[i], values[i + 1]);
        let shift = 0.5 * (a - c) / (a - 2.0 * b + c);
        sr / ((lo + i) as f32 + shift)
    }

    /// Share of the spectral energy of `samples` within 3% of a harmonic of `f0`.
    fn harmonic_share(samples: &[f32], f0: f32, sr: f32) -> f32 {
        let n = 1 << 15;
        let mut buf = vec![0.0f32; n];
        let m = samples.len().min(n);
        for (i, s) in samples[..m].iter().enumerate() {
            buf[i] = s * (0.5 - 0.5 * (TAU * i as f32 / m as f32).cos());
        }
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(n);
        let mut spec = fft.make_output_vec();
        fft.process(&mut buf, &mut spec).expect("fft");
        let (mut on, mut all) = (0.0f32, 0.0f32);
        for (i, c) in spec.iter().enumerate().skip(1) {
            let f = i as f32 * sr / n as f32;
            let e = c.norm_sqr();
            all += e;
            let k = (f / f0).round().max(1.0);
            if (f / (k * f0) - 1.0).abs() < 0.03 {
                on += e;
            }
        }
        on / all
    }

    #[test]
    fn a_known_melody_has_its_fundamentals_and_onsets_where_expected() {
        // At 120 bpm a quarter (12 twelfths) lasts 0.5 s: A4, rest, E5, rest, C5.
        let melody = [note(69, 12), rest(12), note(76, 12), rest(12), note(72, 12)];
        let expected = [(0.0f32, 440.0f32), (1.0, 659.26), (2.0, 523.25)];
        let sr = DEFAULT_SAMPLE_RATE as f32;
        for inst in Instrument::ALL {
            let audio = render(&melody, 120.0, inst, DEFAULT_SAMPLE_RATE, 7);
            assert!(
                audio.iter().all(|s| s.abs() <= 0.8 + 1e-6),
                "{inst:?} is peak-normalised"
            );
            for &(onset, f0) in &expected {
                // Pitch: the middle of the note.
                let a = ((onset + 0.1) * sr) as usize;
                let b = ((onset + 0.4) * sr) as usize;
                let f = pitch_hz(&audio[a..b], sr);
                let share = harmonic_share(&audio[a..b], f0, sr);
                assert!(
                    (f / f0 - 1.0).abs() < 0.01,
                    "{inst:?}: expected {f0} Hz at {onset} s, found {f}"
                );
                assert!(
                    share > 0.9,
                    "{inst:?}: only {share} of the energy is at {f0} Hz and its harmonics"
                );
                // Onset: silence just before (the previous note ended a rest ago), sound just after.
                let rms = |from: f32, to: f32| {
                    let s = &audio[(from * sr) as usize..(to * sr) as usize];
                    (s.iter().map(|x| x * x).sum::<f32>() / s.len() as f32).sqrt()
                };
                let after = rms(onset + 0.01, onset + 0.06);
                // Notes after the first are off the downbeat (no bar lines here), so they
                // sound at OFFBEAT_LEVEL of a downbeat.
                assert!(
                    after > 0.05 * OFFBEAT_LEVEL,
                    "{inst:?}: no sound after {onset} s ({after})"
                );
                if onset > 0.0 && inst != Instrument::Harp {
                    let before = rms(onset - 0.04, onset - 0.005);
                    assert!(
                        before < 0.1 * after,
                        "{inst:?}: sound before the onset at {onset} s ({before} vs {after})"
                    );
                }
            }
        }
    }

    #[test]
    fn rendering_is_deterministic_for_a_seed_and_timbres_differ() {
        let melody = [note(67, 6), note(71, 6), note(74, 12)];
        let a = render(&melody, 140.0, Instrument::Harp, DEFAULT_SAMPLE_RATE, 3);
        assert_eq!(
            a,
            render(&melody, 140.0, Instrument::Harp, DEFAULT_SAMPLE_RATE, 3)
        );
        assert_ne!(
            a,
            render(&melody, 140.0, Instrument::Harp, DEFAULT_SAMPLE_RATE, 4)
        );
        let flute = render(&melody, 140.0, Instrument::Flute, DEFAULT_SAMPLE_RATE, 3);
        let organ = render(&melody, 140.0, Instrument::Organ, DEFAULT_SAMPLE_RATE, 3);
        assert_ne!(flute, organ);
    }

    #[test]
    fn the_note_after_a_bar_line_is_accented_and_moving_the_bar_line_moves_the_accent() {
        let levels = |events: &[Event]| -> Vec<f32> {
            schedule(events, 120.0).0.iter().map(|n| n.level).collect()
        };
        let o = OFFBEAT_LEVEL;
        // Pickup, bar, three notes, bar, a rest then two notes: the rest takes the downbeat.
        let melody = [
            note(67, 12),
            Event::Bar,
            note(69, 12),
            note(71, 12),
            note(72, 12),
            Event::Bar,
            rest(12),
            note(74, 12),
            note(76, 12),
        ];
        assert_eq!(levels(&melody), vec![1.0, 1.0, o, o, o, o]);
        let moved = [
            note(67, 12),
            note(69, 12),
            Event::Bar,
            note(71, 12),
            note(72, 12),
        ];
        assert_eq!(levels(&moved), vec![1.0, o, 1.0, o]);
        // And it is heard: the accented note is the louder one in the audio.
        let audio = render(
            &[
                note(69, 12),
                note(69, 12),
                Event::Bar,
                note(69, 12),
                note(69, 12),
            ],
            120.0,
            Instrument::Organ,
            16_000,
            1,
        );
        let rms = |from: f32, to: f32| -> f32 {
            let s = &audio[(from * 16_000.0) as usize..(to * 16_000.0) as usize];
            (s.iter().map(|x| x * x).sum::<f32>() / s.len() as f32).sqrt()
        };
        let (off, down) = (rms(0.6, 0.9), rms(1.1, 1.4));
        assert!(
            (off / down - o).abs() < 0.05,
            "offbeat/downbeat level {off}/{down}"
        );
    }

    #[test]
    fn wav_bytes_are_the_file_hound_writes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.wav");
        let audio = [0.0f32, 0.5, -0.5, 1.0, -1.0];
        write_wav(&path, &audio, 16_000).expect("write");
        assert_eq!(
            wav_bytes(&audio, 16_000),
            std::fs::read(&path).expect("read")
        );
    }

    #[test]
    fn wav_files_are_16_bit_mono_at_the_requested_rate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.wav");
        let audio = render(&[note(69, 12)], 120.0, Instrument::Flute, 16_000, 1);
        write_wav(&path, &audio, 16_000).expect("write");
        let r = hound::WavReader::open(&path).expect("read");
        let spec = r.spec();
        assert_eq!(
            (spec.channels, spec.sample_rate, spec.bits_per_sample),
            (1, 16_000, 16)
        );
        assert_eq!(r.len() as usize, audio.len());
    }
}
