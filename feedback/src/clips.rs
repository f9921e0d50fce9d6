//! The clip cache: each stored clip rendered once, as `<cache>/<clip id>.<ext>`. A melody is
//! rendered to WAV (the project's synthesizer), MIDI and ABC; an audio-token clip (MusicGen's
//! codes) is decoded to WAV by the policy's codec, EnCodec (mono, at the codec's rate; a codec
//! slower than [`BROWSER_MIN_RATE`], such as the tiny test fixtures' 1,600 Hz, is resampled to
//! 16 kHz, since browsers refuse such rates), and has no notation. A file name is built only
//! from a validated clip id and a fixed extension, so nothing outside the cache can be named.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use musicrl_music::{captions, export, render, tokens};
use musicrl_scoring::audio::Codec;

use crate::error::{Error, Result};

/// The formats a clip is served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Wav,
    Midi,
    Abc,
}

impl Format {
    pub fn parse(ext: &str) -> Option<Self> {
        Some(match ext {
            "wav" => Format::Wav,
            "mid" => Format::Midi,
            "abc" => Format::Abc,
            _ => return None,
        })
    }

    pub fn ext(self) -> &'static str {
        match self {
            Format::Wav => "wav",
            Format::Midi => "mid",
            Format::Abc => "abc",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Wav => "audio/wav",
            Format::Midi => "audio/midi",
            Format::Abc => "text/vnd.abc; charset=utf-8",
        }
    }
}

/// Seconds a melody plays (without the release tail).
pub fn duration_seconds(caption: &str, clip: &[u32]) -> f64 {
    let (_, bpm) = captions::rendering_for(caption);
    let decoded = tokens::decode(clip);
    f64::from(render::schedule(&decoded.events, bpm.max(1.0)).1)
}

/// A clip's title in its MIDI and ABC files.
fn title(caption: &str) -> String {
    format!("{caption} (musicrl)")
}

/// The ABC notation of a clip (what the page draws as sheet music).
pub fn abc(caption: &str, clip: &[u32]) -> String {
    let (_, bpm) = captions::rendering_for(caption);
    let decoded = tokens::decode(clip);
    export::to_abc(&decoded.events, &title(caption), None, bpm)
}

/// The lowest sample rate the page's WAVs have: Chromium plays nothing under 3 kHz.
pub const BROWSER_MIN_RATE: u32 = 8_000;

/// The rendered clips on disk.
#[derive(Debug, Clone)]
pub struct ClipCache {
    dir: PathBuf,
    /// The codec audio-token clips are decoded with (a MusicGen source's).
    codec: Option<Arc<Codec>>,
}

impl ClipCache {
    pub fn new(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Io(format!("clip cache {}: {e}", dir.display())))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            codec: None,
        })
    }

    /// The same cache, decoding audio-token clips with `codec`.
    pub fn with_codec(mut self, codec: Option<Arc<Codec>>) -> Self {
        self.codec = codec;
        self
    }

    /// Seconds a clip plays: a melody's notes, or an audio-token clip's frames at the codec's
    /// hop (0 when this service has no codec, so it cannot play one).
    pub fn seconds(&self, caption: &str, clip: &[u32], codebooks: Option<usize>) -> f64 {
        match (codebooks, &self.codec) {
            (None, _) => duration_seconds(caption, clip),
            (Some(_), Some(codec)) => codec.seconds(clip.len()),
            (Some(_), None) => 0.0,
        }
    }

    /// The file of a clip in a format, rendered if it is not cached yet (blocking).
    /// `id` must be a validated clip id. An audio-token clip has only WAV
    /// ([`Error::NotFound`] for the others).
    pub fn file(
        &self,
        id: &str,
        caption: &str,
        clip: &[u32],
        codebooks: Option<usize>,
        format: Format,
    ) -> Result<PathBuf> {
        debug_assert!(musicrl_prefdb::db::is_id(id));
        let path = self.dir.join(format!("{id}.{}", format.ext()));
        if path.exists() {
            return Ok(path);
        }
        if let Some(k) = codebooks {
            let bytes = self.decoded_wav(clip, k, format)?;
            musicrl_config::fsutil::write_atomic(&path, &bytes)
                .map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
            return Ok(path);
        }
        let (instrument, bpm) = captions::rendering_for(caption);
        let decoded = tokens::decode(clip);
        let bytes = match format {
            Format::Wav => {
                let audio = render::render(
                    &decoded.events,
                    bpm,
                    instrument,
                    render::DEFAULT_SAMPLE_RATE,
                    0,
                );
                wav_bytes(&audio, render::DEFAULT_SAMPLE_RATE)?
            }
            Format::Midi => export::to_midi(&decoded.events, bpm, instrument, &title(caption)),
            Format::Abc => abc(caption, clip).into_bytes(),
        };
        musicrl_config::fsutil::write_atomic(&path, &bytes)
            .map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        Ok(path)
    }
}

impl ClipCache {
    /// An audio-token clip of `k` rows decoded by the codec, as a WAV.
    fn decoded_wav(&self, clip: &[u32], k: usize, format: Format) -> Result<Vec<u8>> {
        if format != Format::Wav {
            return Err(Error::NotFound(format!(
                "an audio-token clip has no {} (it has no notation): ask for .wav",
                format.ext()
            )));
        }
        let codec = self.codec.as_ref().ok_or_else(|| {
            Error::NotFound(
                "an audio-token clip, and this service has no codec to decode it".into(),
            )
        })?;
        if codec.rows() != k {
            return Err(Error::NotFound(format!(
                "a clip of {k} codebooks, and this service's codec decodes {}",
                codec.rows()
            )));
        }
        let pcm = codec
            .decode(clip)
            .map_err(|e| Error::Io(format!("decoding a clip: {e}")))?;
        let rate = codec.sample_rate();
        if rate >= BROWSER_MIN_RATE {
            return wav_bytes(&pcm, rate);
        }
        let resampled = musicrl_rewards::resample::resample(&pcm, rate, 16_000)
            .map_err(|e| Error::Io(format!("resampling a clip: {e}")))?;
        wav_bytes(&resampled, 16_000)
    }
}

/// A 16-bit mono WAV in memory.
fn wav_bytes(samples: &[f32], sample_rate: u32) -> Result<Vec<u8>> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = std::io::Cursor::new(Vec::with_capacity(44 + samples.len() * 2));
    let wav = |e: hound::Error| Error::Io(format!("writing a WAV: {e}"));
    let mut w = hound::WavWriter::new(&mut out, spec).map_err(wav)?;
    for s in render::to_pcm16(samples) {
        w.write_sample(s).map_err(wav)?;
    }
    w.finalize().map_err(wav)?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wav_in_memory_is_what_hound_reads() {
        let samples: Vec<f32> = (0..800).map(|i| (i as f32 / 40.0).sin() * 0.5).collect();
        let bytes = wav_bytes(&samples, 8000).expect("writes");
        let reader = hound::WavReader::new(std::io::Cursor::new(bytes)).expect("a WAV");
        assert_eq!(reader.spec().sample_rate, 8000);
        assert_eq!(reader.spec().channels, 1);
        let back: Vec<i16> = reader
            .into_samples::<i16>()
            .map(|s| s.expect("a sample"))
            .collect();
        assert_eq!(back, render::to_pcm16(&samples));
    }

    #[test]
    fn formats_parse_only_their_extensions() {
        for f in [Format::Wav, Format::Midi, Format::Abc] {
            assert_eq!(Format::parse(f.ext()), Some(f));
        }
        assert_eq!(Format::parse("txt"), None);
        assert_eq!(Format::parse("wav/../x"), None);
    }
}
