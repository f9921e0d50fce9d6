//! Sample-rate conversion of mono clips with `rubato`'s FFT resampler (band-limited: a
//! Blackman–Harris windowed sinc low-pass below the lower Nyquist frequency), for audio that
//! reaches a reward component at a rate other than the one it was made at (a codec's 32 kHz
//! to a model's 16 or 48 kHz).

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

/// `pcm` at `from` Hz resampled to `to` Hz: `ceil(len · to / from)` samples, the resampler's
/// delay removed. The same rate returns the clip as is.
pub fn resample(pcm: &[f32], from: u32, to: u32) -> Result<Vec<f32>, String> {
    if from == to || pcm.is_empty() {
        return Ok(pcm.to_vec());
    }
    if from == 0 || to == 0 {
        return Err(format!("cannot resample from {from} Hz to {to} Hz"));
    }
    let mut resampler = Fft::<f32>::new(from as usize, to as usize, 1024, 1, FixedSync::Both)
        .map_err(|e| format!("resampler {from} Hz → {to} Hz: {e}"))?;
    let input = InterleavedSlice::new(pcm, 1, pcm.len()).map_err(|e| e.to_string())?;
    let capacity = resampler.process_all_needed_output_len(pcm.len());
    let mut out = vec![0f32; capacity];
    let mut output = InterleavedSlice::new_mut(&mut out, 1, capacity).map_err(|e| e.to_string())?;
    let (_, produced) = resampler
        .process_all_into_buffer(&input, &mut output, pcm.len(), None)
        .map_err(|e| format!("resampling {from} Hz → {to} Hz: {e}"))?;
    out.truncate(produced);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(hz: f32, rate: u32, seconds: f32) -> Vec<f32> {
        let n = (rate as f32 * seconds) as usize;
        (0..n)
            .map(|i| (std::f32::consts::TAU * hz * i as f32 / rate as f32).sin())
            .collect()
    }

    /// The amplitude of `hz` in `x` (a single-bin DFT over the middle half).
    fn amplitude(x: &[f32], hz: f32, rate: u32) -> f32 {
        let (a, b) = (x.len() / 4, 3 * x.len() / 4);
        let (mut re, mut im) = (0f64, 0f64);
        for (i, &v) in x[a..b].iter().enumerate() {
            let phase = std::f64::consts::TAU * f64::from(hz) * (a + i) as f64 / f64::from(rate);
            re += f64::from(v) * phase.cos();
            im += f64::from(v) * phase.sin();
        }
        (2.0 * (re * re + im * im).sqrt() / (b - a) as f64) as f32
    }

    #[test]
    fn a_tone_keeps_its_pitch_level_and_timing_across_rates() {
        // 440 Hz at 32 kHz (MusicGen's codec) to 16 and 48 kHz (the models' rates).
        let x = sine(440.0, 32_000, 1.0);
        for to in [16_000, 24_000, 48_000] {
            let y = resample(&x, 32_000, to).unwrap();
            assert_eq!(y.len(), to as usize, "{to} Hz: one second stays one second");
            let a = amplitude(&y, 440.0, to);
            assert!((a - 1.0).abs() < 0.01, "{to} Hz: amplitude {a}");
            // And no delay: the resampled tone is in phase with the same tone made at `to`.
            let reference = sine(440.0, to, 1.0);
            let mid = to as usize / 2;
            let err = y[mid..mid + 100]
                .iter()
                .zip(&reference[mid..mid + 100])
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err < 0.02, "{to} Hz: off the reference by {err}");
        }
    }

    #[test]
    fn what_the_lower_rate_cannot_hold_is_filtered_out() {
        // 12 kHz is above 16 kHz's Nyquist frequency (8 kHz): it must not fold back to 4 kHz.
        let x = sine(12_000.0, 32_000, 1.0);
        let y = resample(&x, 32_000, 16_000).unwrap();
        let alias = amplitude(&y, 4_000.0, 16_000);
        assert!(alias < 0.01, "aliased 4 kHz at amplitude {alias}");
    }

    #[test]
    fn same_rate_and_empty_clips_pass_through_and_zero_rates_are_refused() {
        assert_eq!(
            resample(&[0.5, -0.5], 16_000, 16_000).unwrap(),
            vec![0.5, -0.5]
        );
        assert!(resample(&[], 32_000, 16_000).unwrap().is_empty());
        assert!(resample(&[0.1], 0, 16_000).is_err());
    }
}
