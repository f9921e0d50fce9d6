//! What the audio components hear. A melody clip is rendered by the synthesizer; an
//! audio-token clip (MusicGen's codes) is decoded once per request by the configured codec,
//! EnCodec's decoder ([`Codec`]). Each component then takes the audio at the rate it asks for
//! (resampled by `rubato`), cut into the windows it is configured with.

use std::path::Path;

use musicrl_policy::encodec::Encodec;

use crate::error::{Result, RewardError};

/// An audio-token policy's codec: EnCodec's decoder loaded from `reward.codec` (an EnCodec
/// folder or a MusicGen folder's `audio_encoder`), on the reward server's device.
#[derive(Debug)]
pub struct Codec {
    encodec: Encodec,
}

impl Codec {
    /// Loads the codec of `folder` on the process's inference device.
    pub fn load(folder: &Path) -> Result<Self> {
        let encodec = Encodec::load(folder, &musicrl_policy::device::inference_device())
            .map_err(|e| RewardError::Config(format!("reward.codec: {e}")))?;
        Ok(Self { encodec })
    }

    /// `encodec-` and a hash of the decoder's weights.
    pub fn version(&self) -> &str {
        self.encodec.version()
    }

    /// The codebooks a clip's tokens hold, row after row.
    pub fn rows(&self) -> usize {
        self.encodec.num_codebooks()
    }

    pub fn sample_rate(&self) -> u32 {
        self.encodec.sample_rate()
    }

    /// Seconds a clip of `tokens` codes (all rows) plays: its frames at the codec's hop.
    pub fn seconds(&self, tokens: usize) -> f64 {
        let frames = tokens / self.rows().max(1);
        let hop = self.encodec.config().hop_length();
        (frames * hop) as f64 / f64::from(self.sample_rate().max(1))
    }

    /// Checks that the policy's clips fit this codec: as many codebooks, every code within
    /// the codebooks.
    pub fn check_policy(&self, codebooks: usize, vocab_size: usize) -> Result<()> {
        let codebook_size = self.encodec.config().codebook_size;
        if codebooks != self.rows() || vocab_size > codebook_size {
            return Err(RewardError::Config(format!(
                "reward.codec {}: {} codebooks of {codebook_size} codes, but the policy writes \
                 {codebooks} codebooks of {vocab_size}: the codec must be the policy's own",
                self.encodec.folder().display(),
                self.rows(),
            )));
        }
        Ok(())
    }

    /// A clip's tokens (K rows of T codes, row after row, as the actors send them) decoded to
    /// mono PCM at [`sample_rate`](Self::sample_rate) (channels averaged).
    pub fn decode(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        let rows = self.rows();
        if tokens.is_empty() || !tokens.len().is_multiple_of(rows) {
            return Err(RewardError::Internal(format!(
                "{} tokens are not {rows} rows of codes",
                tokens.len()
            )));
        }
        let codes: Vec<Vec<u32>> = tokens
            .chunks_exact(tokens.len() / rows)
            .map(<[u32]>::to_vec)
            .collect();
        let pcm = self
            .encodec
            .decode(&codes)
            .map_err(|e| RewardError::Internal(format!("decoding a clip: {e}")))?;
        let n = pcm.channels.len() as f32;
        let mut mono = vec![0f32; pcm.channels.first().map_or(0, Vec::len)];
        for channel in &pcm.channels {
            for (m, s) in mono.iter_mut().zip(channel) {
                *m += s / n;
            }
        }
        Ok(mono)
    }
}

/// A request's audio-token clips, decoded.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub sample_rate: u32,
    /// Mono PCM, one per input.
    pub clips: Vec<Vec<f32>>,
}

/// The parts of a clip of `len` samples at `rate` that `windows` (`[start_s, length_s]`, a
/// negative start counting from the end) select, each cut to the clip; a window that falls
/// outside the clip is the clip's nearest `length_s` (so a short clip is scored whole).
/// No windows: the whole clip.
pub fn windows(len: usize, rate: u32, windows: &[[f32; 2]]) -> Vec<std::ops::Range<usize>> {
    if windows.is_empty() || len == 0 {
        return std::iter::once(0..len).collect();
    }
    let rate = rate as f32;
    windows
        .iter()
        .map(|&[start, length]| {
            let n = ((length * rate).round() as usize).clamp(1, len);
            let start = if start < 0.0 {
                len as f32 + start * rate
            } else {
                start * rate
            };
            let start = (start.round().max(0.0) as usize).min(len - n);
            start..start + n
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_cut_as_the_paper_places_them() {
        // 30 s at 10 Hz: MuLan's three 10 s windows, quality's head and tail 20 s.
        let w = windows(300, 10, &[[0.0, 10.0], [10.0, 10.0], [20.0, 10.0]]);
        assert_eq!(w, vec![0..100, 100..200, 200..300]);
        assert_eq!(
            windows(300, 10, &[[0.0, 20.0], [-20.0, 20.0]]),
            vec![0..200, 100..300]
        );
        // A 12 s clip: the later windows slide back inside it; a 5 s clip is scored whole.
        assert_eq!(
            windows(120, 10, &[[0.0, 10.0], [10.0, 10.0], [20.0, 10.0]]),
            vec![0..100, 20..120, 20..120]
        );
        let whole: Vec<_> = std::iter::once(0..50).collect();
        assert_eq!(windows(50, 10, &[[-20.0, 20.0]]), whole);
        assert_eq!(windows(50, 10, &[]), whole);
    }
}
