//! From tokens or corpus tunes to the audio and features the reward models see.

use musicrl_music::corpus::Tune;
use musicrl_music::render::{self, Instrument};
use musicrl_music::tokens::{self, Event};

use crate::features::{Extractor, FEATURE_SAMPLE_RATE, Features};

/// The melody the policy would produce for a tune: its first `max_tokens − 1` tokens (cut at
/// a note boundary), decoded, so training clips have the length of the policy's clips.
pub fn tune_events(tune: &Tune, max_tokens: usize) -> Vec<Event> {
    let encoded = tokens::encode(&tune.events);
    tokens::decode(tokens::clip(&encoded, max_tokens.saturating_sub(1))).events
}

/// Renders a melody at the feature sample rate.
pub fn render_audio(events: &[Event], instrument: Instrument, bpm: f32, seed: u64) -> Vec<f32> {
    render::render(events, bpm, instrument, FEATURE_SAMPLE_RATE, seed)
}

/// Renders a melody and extracts its features.
pub fn features_of(
    extractor: &Extractor,
    events: &[Event],
    instrument: Instrument,
    bpm: f32,
    seed: u64,
) -> Features {
    extractor.extract(&render_audio(events, instrument, bpm, seed))
}

/// The synthesizer seed of a policy sample: a hash of its tokens, so the same sequence always
/// sounds the same, wherever it is rendered.
pub fn sample_seed(tokens: &[u32]) -> u64 {
    let mut seed_bytes = Vec::with_capacity(tokens.len() * 4);
    tokens
        .iter()
        .for_each(|t| seed_bytes.extend_from_slice(&t.to_le_bytes()));
    let hash = blake3::hash(&seed_bytes);
    u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// A policy sample rendered as the reward models hear it: the tokens decoded (with the
/// decoder's documented repairs) and played with the caption's instrument and tempo
/// ([`musicrl_music::captions::rendering_for`]), seeded by [`sample_seed`].
pub fn sample_audio(caption: &str, tokens: &[u32], sample_rate: u32) -> Vec<f32> {
    let decoded = tokens::decode(tokens);
    let (instrument, bpm) = musicrl_music::captions::rendering_for(caption);
    render::render(
        &decoded.events,
        bpm,
        instrument,
        sample_rate,
        sample_seed(tokens),
    )
}

/// The features of a policy sample as the reward models hear it ([`sample_audio`] at the
/// feature sample rate).
pub fn sample_features(extractor: &Extractor, caption: &str, tokens: &[u32]) -> Features {
    extractor.extract(&sample_audio(caption, tokens, FEATURE_SAMPLE_RATE))
}

pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&Extractor, &T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len().max(1));
    let chunk = items.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                let f = &f;
                s.spawn(move || {
                    let extractor = Extractor::new();
                    part.iter().map(|x| f(&extractor, x)).collect::<Vec<R>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a feature thread panicked"))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn par_map_keeps_order() {
        let items: Vec<u32> = (0..37).collect();
        let out = par_map(&items, |_, x| x * 2);
        assert_eq!(out, (0..37).map(|x| x * 2).collect::<Vec<_>>());
        assert!(par_map(&Vec::<u32>::new(), |_, x| *x).is_empty());
    }
}
