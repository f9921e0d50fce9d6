//! Audio features shared by the audio reward models: per-frame log-mel energies, chroma and
//! onset strength, plus a clip-level tempogram.
//!
//! A simplified stand-in for MuLan's and the MOS predictor's front ends, named as such:
//! - audio is rendered at [`FEATURE_SAMPLE_RATE`] (16 kHz mono) and cut into frames of
//!   [`N_FFT`] samples every [`HOP`] samples (64 ms windows, 25 frames a second), Hann-windowed
//!   and transformed with `realfft`;
//! - **log-mel**: [`N_MELS`] triangular mel bands from 40 Hz to 8 kHz, `ln(1e-4 + energy)`;
//! - **chroma**: the energy of every spectral peak between 55 Hz and 4 kHz (a local maximum of
//!   the power spectrum, its frequency refined by parabolic interpolation, its energy the three
//!   bins around it) folded onto its pitch class (nearest semitone), normalised to sum to one
//!   (zeros in silence);
//! - **onset strength**: half-wave-rectified spectral flux of the log-mel frame;
//! - **tempogram** (one vector a window): the normalised autocorrelation of the onset strength
//!   at lags 1..=[`TEMPO_LAGS`] frames (40 ms to 2.56 s), which shows the beat and the bar.
//! - **metre profile** (one vector a window): the same autocorrelation read at 1..=
//!   [`METRE_STEPS`] multiples of the window's *tatum* (its shortest common inter-onset
//!   interval, the first strong autocorrelation peak), so a rhythm that repeats once a bar
//!   peaks at the bar's length in tatums whatever the tempo (a test checks one rhythm at two
//!   tempos); the tempogram's lags are absolute, so there a bar's length and the tempo are
//!   confounded. It reads rhythm, not loudness: the renderer's downbeat accents change a
//!   note's level by 5 dB, small beside the rise from near-silence that every onset makes in
//!   the log-mel flux, so the accents show in the log-mel frames (the convolutions' input)
//!   rather than here.
//!
//! Frames are stored row-major as `[frames, FRAME_DIM]`.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

pub const FEATURE_SAMPLE_RATE: u32 = 16_000;
pub const N_FFT: usize = 1024;
pub const HOP: usize = 640;
pub const N_MELS: usize = 48;
pub const N_CHROMA: usize = 12;
/// log-mel, chroma, onset strength.
pub const FRAME_DIM: usize = N_MELS + N_CHROMA + 1;
pub const TEMPO_LAGS: usize = 64;
/// Tatum multiples the metre profile reads.
pub const METRE_STEPS: usize = 16;
/// The tatum is looked for between these lags (frames: 80 ms to 0.8 s).
const TATUM_LAGS: (usize, usize) = (2, 20);
/// Frames a second.
pub const FRAME_RATE: f32 = FEATURE_SAMPLE_RATE as f32 / HOP as f32;

const LOG_FLOOR: f32 = 1e-4;

/// Samples between two points of the loudness envelope (10 ms at 16 kHz); [`HOP`] is a
/// whole number of them.
pub const ENVELOPE_HOP: usize = 160;
/// Envelope points a frame.
pub const ENVELOPE_PER_FRAME: usize = HOP / ENVELOPE_HOP;
/// The envelope's level in silence, dB.
pub const SILENCE_DB: f32 = -100.0;
/// The window of the fine onset-strength function, samples (32 ms).
pub const ONSET_FFT: usize = 512;
/// A spectral peak is a candidate fundamental when it is within this factor of the frame's
/// strongest peak (−12 dB).
const PITCH_PEAK_RATIO: f32 = 0.063;

/// The features of one clip.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    pub frames: usize,
    /// `[frames, FRAME_DIM]`, row-major.
    pub data: Vec<f32>,
    /// Per frame, the heard pitch of a monophonic melody (fractional MIDI number): the lowest
    /// spectral peak within 12 dB of the frame's strongest (the fundamental, where the
    /// chroma also counts the overtones); `None` in silence.
    pub pitch: Vec<Option<f32>>,
    /// The loudness envelope: RMS level in dB of 20 ms windows every [`ENVELOPE_HOP`]
    /// samples ([`ENVELOPE_PER_FRAME`] a frame), [`SILENCE_DB`] at the floor. It is where
    /// the players' downbeat accents are heard.
    pub envelope: Vec<f32>,
    /// Onset strength at the envelope's rate: the half-wave-rectified spectral flux of the
    /// log-compressed magnitude spectrum of [`ONSET_FFT`]-sample windows (Bello et al., "A
    /// tutorial on onset detection in music signals", 2005), where a note starts even when
    /// it is no louder than the one before.
    pub flux: Vec<f32>,
}

impl Features {
    pub fn frame(&self, i: usize) -> &[f32] {
        &self.data[i * FRAME_DIM..(i + 1) * FRAME_DIM]
    }

    /// Frames `start..end` (clamped) as a new clip.
    pub fn slice(&self, start: usize, end: usize) -> Features {
        let end = end.min(self.frames);
        let start = start.min(end);
        let envelope_end = (end * ENVELOPE_PER_FRAME).min(self.envelope.len());
        let envelope_start = (start * ENVELOPE_PER_FRAME).min(envelope_end);
        Features {
            frames: end - start,
            data: self.data[start * FRAME_DIM..end * FRAME_DIM].to_vec(),
            pitch: self.pitch[start..end].to_vec(),
            envelope: self.envelope[envelope_start..envelope_end].to_vec(),
            flux: self.flux[envelope_start..envelope_end].to_vec(),
        }
    }

    /// Exactly `len` frames from `start`, padded with silence past the end of the clip.
    pub fn window(&self, start: usize, len: usize) -> Features {
        let mut w = self.slice(start, start + len);
        let silence = silence_frame();
        while w.frames < len {
            w.data.extend_from_slice(&silence);
            w.pitch.push(None);
            w.frames += 1;
        }
        w.envelope.resize(w.frames * ENVELOPE_PER_FRAME, SILENCE_DB);
        w.flux.resize(w.frames * ENVELOPE_PER_FRAME, 0.0);
        w
    }

    /// The onset-strength column.
    pub fn onset(&self) -> Vec<f32> {
        (0..self.frames)
            .map(|i| self.frame(i)[FRAME_DIM - 1])
            .collect()
    }

    /// The tempogram of these frames: autocorrelation of the mean-removed onset strength at
    /// lags 1..=TEMPO_LAGS, divided by the lag-0 energy (zeros if there is none).
    pub fn tempogram(&self) -> Vec<f32> {
        let onset = self.onset();
        let n = onset.len();
        let mean = onset.iter().sum::<f32>() / n.max(1) as f32;
        let x: Vec<f32> = onset.iter().map(|v| v - mean).collect();
        let energy: f32 = x.iter().map(|v| v * v).sum();
        (1..=TEMPO_LAGS)
            .map(|lag| {
                if energy <= 1e-9 || lag >= n {
                    return 0.0;
                }
                let c: f32 = (0..n - lag).map(|i| x[i] * x[i + lag]).sum();
                c / energy
            })
            .collect()
    }

    /// The metre profile of these frames (see the module docs): the tatum `L` is the first
    /// local maximum of the onset autocorrelation in [`TATUM_LAGS`] reaching half the
    /// highest value there, refined by parabolic interpolation; entry `k − 1` is the
    /// autocorrelation at `k·L` (linearly interpolated, each lag normalised by its overlap so
    /// long lags are not shrunk). Zeros when there is no onset energy or no tatum.
    pub fn metre_profile(&self) -> Vec<f32> {
        let onset = self.onset();
        let n = onset.len();
        let mut out = vec![0.0f32; METRE_STEPS];
        let mean = onset.iter().sum::<f32>() / n.max(1) as f32;
        let x: Vec<f32> = onset.iter().map(|v| v - mean).collect();
        let energy = x.iter().map(|v| v * v).sum::<f32>() / n.max(1) as f32;
        if energy <= 1e-9 || n < 2 * TATUM_LAGS.1 {
            return out;
        }
        // Lags up to half the window, each lag's products averaged over its overlap.
        let max_lag = n / 2;
        let r: Vec<f32> = (0..=max_lag)
            .map(|lag| {
                let c: f32 = (0..n - lag).map(|i| x[i] * x[i + lag]).sum();
                c / (n - lag) as f32 / energy
            })
            .collect();
        let (lo, hi) = (TATUM_LAGS.0, TATUM_LAGS.1.min(max_lag - 1));
        let best = (lo..=hi).map(|l| r[l]).fold(f32::MIN, f32::max);
        if best <= 0.0 {
            return out;
        }
        let Some(peak) =
            (lo..=hi).find(|&l| r[l] >= r[l - 1] && r[l] >= r[l + 1] && r[l] >= 0.5 * best)
        else {
            return out;
        };
        let (a, b, c) = (r[peak - 1], r[peak], r[peak + 1]);
        let denom = a - 2.0 * b + c;
        let tatum = peak as f32
            + if denom.abs() > 1e-9 {
                (0.5 * (a - c) / denom).clamp(-0.5, 0.5)
            } else {
                0.0
            };
        for (k, o) in out.iter_mut().enumerate() {
            let lag = tatum * (k + 1) as f32;
            let i = lag.floor() as usize;
            if i + 1 > max_lag {
                break;
            }
            let f = lag - i as f32;
            *o = r[i] * (1.0 - f) + r[i + 1] * f;
        }
        out
    }
}

/// Computes frame features; reuse one extractor per thread (it owns the FFT plan).
pub struct Extractor {
    fft: Arc<dyn RealToComplex<f32>>,
    onset_fft: Arc<dyn RealToComplex<f32>>,
    onset_window: Vec<f32>,
    window: Vec<f32>,
    /// `(first_bin, weights)` per mel band.
    mel: Vec<(usize, Vec<f32>)>,
    /// Whether each FFT bin lies in the chroma range.
    chroma_bin: Vec<bool>,
    bin_hz: f32,
}

impl std::fmt::Debug for Extractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extractor").finish_non_exhaustive()
    }
}

impl Default for Extractor {
    fn default() -> Self {
        Self::new()
    }
}

fn hz_to_mel(hz: f32) -> f32 {
    2595.0 * (1.0 + hz / 700.0).log10()
}

fn mel_to_hz(mel: f32) -> f32 {
    700.0 * (10f32.powf(mel / 2595.0) - 1.0)
}

impl Extractor {
    pub fn new() -> Self {
        let mut planner = RealFftPlanner::<f32>::new();
        let fft = planner.plan_fft_forward(N_FFT);
        let onset_fft = planner.plan_fft_forward(ONSET_FFT);
        let onset_window = (0..ONSET_FFT)
            .map(|i| 0.5 - 0.5 * (std::f32::consts::TAU * i as f32 / ONSET_FFT as f32).cos())
            .collect();
        let window = (0..N_FFT)
            .map(|i| 0.5 - 0.5 * (std::f32::consts::TAU * i as f32 / N_FFT as f32).cos())
            .collect();
        let bins = N_FFT / 2 + 1;
        let bin_hz = FEATURE_SAMPLE_RATE as f32 / N_FFT as f32;
        let (lo, hi) = (hz_to_mel(40.0), hz_to_mel(8000.0));
        let edges: Vec<f32> = (0..N_MELS + 2)
            .map(|i| mel_to_hz(lo + (hi - lo) * i as f32 / (N_MELS + 1) as f32))
            .collect();
        let mel = (0..N_MELS)
            .map(|m| {
                let (a, b, c) = (edges[m], edges[m + 1], edges[m + 2]);
                // Bands narrower than a bin still take the nearest bin.
                let first = ((a / bin_hz).floor() as usize).min(bins - 1);
                let last = ((c / bin_hz).ceil() as usize).clamp(first + 1, bins);
                let weights: Vec<f32> = (first..last)
                    .map(|k| {
                        let f = k as f32 * bin_hz;
                        if f <= b {
                            ((f - a) / (b - a)).max(0.0)
                        } else {
                            ((c - f) / (c - b)).max(0.0)
                        }
                    })
                    .collect();
                let sum: f32 = weights.iter().sum();
                let weights = if sum > 0.0 {
                    weights.iter().map(|w| w / sum).collect()
                } else {
                    let mut w = vec![0.0; weights.len()];
                    let nearest = ((b / bin_hz).round() as usize).clamp(first, last - 1);
                    w[nearest - first] = 1.0;
                    w
                };
                (first, weights)
            })
            .collect();
        let chroma_bin = (0..bins)
            .map(|k| (55.0..=4000.0).contains(&(k as f32 * bin_hz)))
            .collect();
        Self {
            fft,
            onset_fft,
            onset_window,
            window,
            mel,
            chroma_bin,
            bin_hz,
        }
    }

    /// Features of `audio` sampled at [`FEATURE_SAMPLE_RATE`]. A clip shorter than one window
    /// is zero-padded to one frame.
    pub fn extract(&self, audio: &[f32]) -> Features {
        let frames = if audio.len() <= N_FFT {
            1
        } else {
            1 + (audio.len() - N_FFT).div_ceil(HOP)
        };
        let mut data = Vec::with_capacity(frames * FRAME_DIM);
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0.0f32; spectrum.len()];
        let mut prev_mel: Option<Vec<f32>> = None;
        let mut pitch = Vec::with_capacity(frames);
        let mut peaks: Vec<(f32, f32)> = Vec::new();
        for f in 0..frames {
            let start = f * HOP;
            for (i, x) in input.iter_mut().enumerate() {
                *x = audio.get(start + i).copied().unwrap_or(0.0) * self.window[i];
            }
            self.fft
                .process_with_scratch(&mut input, &mut spectrum, &mut scratch)
                .expect("buffers come from the plan");
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.norm_sqr();
            }
            let mel: Vec<f32> = self
                .mel
                .iter()
                .map(|(first, w)| {
                    let e: f32 = w.iter().zip(&power[*first..]).map(|(w, p)| w * p).sum();
                    (LOG_FLOOR + e).ln()
                })
                .collect();
            let mut chroma = [0.0f32; N_CHROMA];
            peaks.clear();
            for k in 1..power.len() - 1 {
                let (a, b, c) = (power[k - 1], power[k], power[k + 1]);
                if !(self.chroma_bin[k] && b > a && b >= c) {
                    continue;
                }
                // A spectral peak: its frequency by parabolic interpolation of the log power,
                // its energy the three bins around it.
                let (la, lb, lc) = ((a + 1e-12).ln(), (b + 1e-12).ln(), (c + 1e-12).ln());
                let denom = la - 2.0 * lb + lc;
                let delta = if denom.abs() > 1e-12 {
                    (0.5 * (la - lc) / denom).clamp(-0.5, 0.5)
                } else {
                    0.0
                };
                let hz = (k as f32 + delta) * self.bin_hz;
                let midi = 69.0 + 12.0 * (hz / 440.0).log2();
                chroma[(midi.round() as i64).rem_euclid(12) as usize] += a + b + c;
                peaks.push((midi, a + b + c));
            }
            let strongest = peaks.iter().map(|p| p.1).fold(0.0f32, f32::max);
            pitch.push(
                peaks
                    .iter()
                    .find(|p| strongest > 1e-6 && p.1 >= PITCH_PEAK_RATIO * strongest)
                    .map(|p| p.0),
            );
            let total: f32 = chroma.iter().sum();
            if total > 1e-6 {
                chroma.iter_mut().for_each(|c| *c /= total);
            } else {
                chroma = [0.0; N_CHROMA];
            }
            let flux = prev_mel.as_ref().map_or(0.0, |p| {
                mel.iter()
                    .zip(p)
                    .map(|(m, q)| (m - q).max(0.0))
                    .sum::<f32>()
                    / N_MELS as f32
            });
            data.extend_from_slice(&mel);
            data.extend_from_slice(&chroma);
            data.push(flux);
            prev_mel = Some(mel);
        }
        Features {
            frames,
            data,
            pitch,
            envelope: loudness_envelope(audio, frames * ENVELOPE_PER_FRAME),
            flux: self.onset_strength(audio, frames * ENVELOPE_PER_FRAME),
        }
    }

    /// `points` values of the fine onset-strength function ([`Features::flux`]): window `i`
    /// starts at `i · ENVELOPE_HOP`; magnitudes compressed as ln(1 + 100·|X|).
    fn onset_strength(&self, audio: &[f32], points: usize) -> Vec<f32> {
        let mut input = self.onset_fft.make_input_vec();
        let mut spectrum = self.onset_fft.make_output_vec();
        let mut scratch = self.onset_fft.make_scratch_vec();
        let mut previous = vec![0.0f32; spectrum.len()];
        let mut current = vec![0.0f32; spectrum.len()];
        let mut out = Vec::with_capacity(points);
        for i in 0..points {
            let start = i * ENVELOPE_HOP;
            for (k, x) in input.iter_mut().enumerate() {
                *x = audio.get(start + k).copied().unwrap_or(0.0) * self.onset_window[k];
            }
            self.onset_fft
                .process_with_scratch(&mut input, &mut spectrum, &mut scratch)
                .expect("buffers come from the plan");
            for (c, x) in current.iter_mut().zip(&spectrum) {
                *c = (1.0 + 100.0 * x.norm()).ln();
            }
            // Before the clip is silence, so a note at its very start is an onset.
            out.push(
                current
                    .iter()
                    .zip(&previous)
                    .map(|(c, p)| (c - p).max(0.0))
                    .sum::<f32>()
                    / current.len() as f32,
            );
            std::mem::swap(&mut previous, &mut current);
        }
        out
    }
}

/// `points` RMS levels in dB of `2 · ENVELOPE_HOP`-sample windows every [`ENVELOPE_HOP`]
/// samples (zero past the end), floored at [`SILENCE_DB`].
fn loudness_envelope(audio: &[f32], points: usize) -> Vec<f32> {
    (0..points)
        .map(|i| {
            let start = (i * ENVELOPE_HOP).min(audio.len());
            let end = (start + 2 * ENVELOPE_HOP).min(audio.len());
            let energy: f32 = audio[start..end].iter().map(|x| x * x).sum();
            let rms = (energy / (2 * ENVELOPE_HOP) as f32).sqrt();
            (20.0 * rms.max(1e-5).log10()).max(SILENCE_DB)
        })
        .collect()
}

/// Start frames of `n` windows of `len` frames spread evenly from the start to the end of a
/// clip of `frames` frames (overlapping when the clip is short; all at 0 when the clip is no
/// longer than one window, which [`Features::window`] then pads with silence).
pub fn window_starts(frames: usize, n: usize, len: usize) -> Vec<usize> {
    let n = n.max(1);
    if frames <= len || n == 1 {
        return vec![0; n];
    }
    (0..n).map(|i| (frames - len) * i / (n - 1)).collect()
}

/// The features of a silent frame (padding).
pub fn silence_frame() -> [f32; FRAME_DIM] {
    let mut f = [0.0; FRAME_DIM];
    f[..N_MELS].fill(LOG_FLOOR.ln());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(hz: f32, seconds: f32) -> Vec<f32> {
        let n = (seconds * FEATURE_SAMPLE_RATE as f32) as usize;
        (0..n)
            .map(|i| {
                0.5 * (std::f32::consts::TAU * hz * i as f32 / FEATURE_SAMPLE_RATE as f32).sin()
            })
            .collect()
    }

    #[test]
    fn frame_count_and_shape() {
        let x = Extractor::new();
        let f = x.extract(&sine(440.0, 1.0));
        // 16000 samples: 1 + ceil((16000 − 1024) / 640) = 25 frames.
        assert_eq!(f.frames, 25);
        assert_eq!(f.data.len(), 25 * FRAME_DIM);
        assert_eq!(x.extract(&[]).frames, 1);
    }

    #[test]
    fn an_a_puts_chroma_on_a_and_mel_energy_near_440_hz() {
        let x = Extractor::new();
        let f = x.extract(&sine(440.0, 1.0));
        let frame = f.frame(10);
        let chroma = &frame[N_MELS..N_MELS + N_CHROMA];
        // Pitch class of A is 9 (C = 0).
        let best = (0..12)
            .max_by(|&a, &b| chroma[a].total_cmp(&chroma[b]))
            .unwrap();
        assert_eq!(best, 9, "{chroma:?}");
        assert!(chroma[9] > 0.9, "{chroma:?}");
        let mel = &frame[..N_MELS];
        let loudest = (0..N_MELS)
            .max_by(|&a, &b| mel[a].total_cmp(&mel[b]))
            .unwrap();
        let lo = hz_to_mel(40.0);
        let hi = hz_to_mel(8000.0);
        let centre = mel_to_hz(lo + (hi - lo) * (loudest + 1) as f32 / (N_MELS + 1) as f32);
        assert!(
            (centre - 440.0).abs() < 80.0,
            "loudest band centred at {centre} Hz"
        );
    }

    #[test]
    fn onsets_repeat_at_the_beat_and_the_tempogram_peaks_there() {
        // A 100 ms click every 0.5 s (12.5 frames): the tempogram peaks near lag 12–13 or 25.
        let sr = FEATURE_SAMPLE_RATE as f32;
        let audio: Vec<f32> = (0..(8.0 * sr) as usize)
            .map(|i| {
                let t = i as f32 / sr;
                if t % 0.5 < 0.1 {
                    (std::f32::consts::TAU * 660.0 * t).sin()
                } else {
                    0.0
                }
            })
            .collect();
        let f = Extractor::new().extract(&audio);
        let tg = f.tempogram();
        let best = (0..TEMPO_LAGS)
            .max_by(|&a, &b| tg[a].total_cmp(&tg[b]))
            .unwrap()
            + 1;
        assert!(
            (12..=13).contains(&best) || (24..=26).contains(&best),
            "peak at lag {best}: {tg:?}"
        );
        let silent = Extractor::new().extract(&vec![0.0; 16000]);
        assert!(silent.tempogram().iter().all(|v| *v == 0.0));
    }

    #[test]
    fn the_metre_profile_reads_the_rhythm_in_tatums_whatever_the_tempo() {
        // Clicks in a long-short-short rhythm (2 + 1 + 1 units, a bar of 4 units), at two
        // tempos: the profile, in multiples of the tatum it finds, is the same shape.
        let sr = FEATURE_SAMPLE_RATE as f32;
        let clicks = |unit: f32| -> Vec<f32> {
            let mut onsets = Vec::new();
            let mut t = 0.0f32;
            while t < 7.0 {
                for d in [2.0f32, 1.0, 1.0] {
                    onsets.push(t);
                    t += d * unit;
                }
            }
            (0..(7.0 * sr) as usize)
                .map(|i| {
                    let t = i as f32 / sr;
                    if onsets.iter().any(|&o| (0.0..0.05).contains(&(t - o))) {
                        (std::f32::consts::TAU * 660.0 * t).sin()
                    } else {
                        0.0
                    }
                })
                .collect()
        };
        let x = Extractor::new();
        let slow = x.extract(&clicks(0.24)).window(0, 160).metre_profile();
        let fast = x.extract(&clicks(0.16)).window(0, 160).metre_profile();
        // The bar (4 tatums) repeats: a strong peak there at both tempos.
        for p in [&slow, &fast] {
            assert!(p[3] > 0.5, "{p:?}");
            assert!(p[3] > p[2] && p[3] > p[4], "{p:?}");
        }
        // The shapes agree over the first bar and a half.
        for k in 0..6 {
            assert!(
                (slow[k] - fast[k]).abs() < 0.25,
                "{k}: {slow:?} vs {fast:?}"
            );
        }
        assert!(
            Extractor::new()
                .extract(&vec![0.0; 16000 * 7])
                .metre_profile()
                .iter()
                .all(|v| *v == 0.0)
        );
    }

    #[test]
    fn windows_spread_over_the_clip_and_pad_short_ones() {
        assert_eq!(window_starts(300, 3, 100), vec![0, 100, 200]);
        assert_eq!(window_starts(300, 2, 200), vec![0, 100]);
        assert_eq!(window_starts(50, 3, 100), vec![0, 0, 0]);
        let x = Extractor::new();
        let f = x.extract(&sine(440.0, 1.0));
        let w = f.window(20, 10);
        assert_eq!(w.frames, 10);
        assert_eq!(w.frame(4), f.frame(24));
        assert_eq!(w.frame(5), &silence_frame()[..]);
        // Silence extracts to the padding frame.
        assert_eq!(x.extract(&vec![0.0; 4000]).frame(1), &silence_frame()[..]);
    }
}
