//! The caption encoder's tokenizer: a hashing bag of words, optionally with the words'
//! character trigrams.
//!
//! A simplified stand-in for MuLan's text tower, named as such: captions are lower-cased,
//! split on anything that is not a letter or digit, and each word is hashed (FNV-1a) into
//! one of `caption_buckets - 1` buckets (bucket 0 is the pad). The policy embeds the ids
//! and averages them into one conditioning vector. Deterministic across processes and
//! machines, so actors and the learner agree without sharing a vocabulary file.
//!
//! Two encoders (`policy.caption_encoder`):
//! - [`WORDS`] (`words-fnv1a`, the default): one id per word. A word pretraining never saw
//!   lands in a bucket whose embedding nothing trained: noise in the conditioning vector.
//! - [`WORDS_TRIGRAMS`] (`words-trigrams-fnv1a`): the word's id and one id per
//!   character trigram of `<word>` (fastText's subword scheme, with the boundary marks), so
//!   an unseen word ("fiddles", "hornpipes", a misspelt "jigg") shares most of its ids with
//!   the words it resembles and degrades gracefully instead of adding noise.

pub use musicrl_config::caption::{ENCODER, ENCODERS, WORDS, WORDS_TRIGRAMS};

/// Word-bucket ids of one caption, at most `max_words` long (never empty: an empty caption
/// becomes the single reserved word `<empty>`). The [`WORDS`] encoder; the text-adherence
/// reward's text tower reads captions this way.
pub fn tokenize(caption: &str, buckets: usize, max_words: usize) -> Vec<u32> {
    tokenize_with(WORDS, caption, buckets, max_words)
}

/// The ids of one caption's first `max_words` words under `encoder` (one of [`ENCODERS`];
/// the configuration is validated before any caption is tokenised, and a name this build
/// does not have reads as [`WORDS`]). Never empty: an empty caption becomes the reserved
/// word `<empty>`.
pub fn tokenize_with(encoder: &str, caption: &str, buckets: usize, max_words: usize) -> Vec<u32> {
    let trigrams = encoder == WORDS_TRIGRAMS;
    let mut ids = Vec::new();
    for w in caption
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(max_words)
    {
        let w = w.to_lowercase();
        ids.push(bucket(&w, buckets));
        if trigrams {
            let marked: Vec<char> = format!("<{w}>").chars().collect();
            for g in marked.windows(3) {
                // A leading '#' keeps trigram hashes apart from words of three letters.
                let gram: String = std::iter::once('#').chain(g.iter().copied()).collect();
                ids.push(bucket(&gram, buckets));
            }
        }
    }
    if ids.is_empty() {
        ids.push(bucket("<empty>", buckets));
    }
    ids
}

fn bucket(word: &str, buckets: usize) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in word.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Buckets 1 ..= buckets-1; 0 is the pad.
    (1 + h % (buckets as u64 - 1)) as u32
}

/// Pads tokenised captions to a rectangle: `(ids, mask, words)` flattened row-major.
pub fn pad_batch(captions: &[Vec<u32>]) -> (Vec<i64>, Vec<f32>, usize) {
    let words = captions.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let mut ids = Vec::with_capacity(captions.len() * words);
    let mut mask = Vec::with_capacity(captions.len() * words);
    for c in captions {
        for i in 0..words {
            match c.get(i) {
                Some(&id) => {
                    ids.push(i64::from(id));
                    mask.push(1.0);
                }
                None => {
                    ids.push(0);
                    mask.push(0.0);
                }
            }
        }
    }
    (ids, mask, words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenize_is_case_and_punctuation_insensitive_and_bounded() {
        let a = tokenize("A lively Reel, in D major!", 1024, 24);
        let b = tokenize("a LIVELY reel in d MAJOR", 1024, 24);
        assert_eq!(a, b);
        assert_eq!(a.len(), 6);
        assert!(a.iter().all(|&id| (1..1024).contains(&id)));
        assert_eq!(tokenize("one two three", 1024, 2).len(), 2);
        assert_eq!(tokenize("  ", 1024, 2).len(), 1);
    }

    #[test]
    fn trigrams_give_an_unseen_word_most_of_the_ids_of_the_word_it_resembles() {
        let ids = |c: &str| tokenize_with(WORDS_TRIGRAMS, c, 1 << 20, 24);
        // "reel": the word and the trigrams of "<reel>": <re, ree, eel, el>.
        let reel = ids("reel");
        assert_eq!(reel.len(), 5);
        assert_eq!(reel[0], tokenize("reel", 1 << 20, 24)[0]);
        // "reels" (never in a caption) shares <re, ree, eel with it; "waltz" shares nothing.
        let shared = |a: &[u32], b: &[u32]| a.iter().filter(|x| b.contains(x)).count();
        assert_eq!(shared(&ids("reels"), &reel), 3);
        assert_eq!(shared(&ids("waltz"), &reel), 0);
        // A word of three letters and the trigram of the same letters hash apart.
        assert_ne!(ids("ree")[0], reel[2]);
        // The word limit counts words, not ids; the encoders agree on words.
        assert_eq!(tokenize_with(WORDS_TRIGRAMS, "a b c", 1024, 2).len(), 2 * 2);
        assert_eq!(
            tokenize_with(WORDS, "A lively reel", 1024, 24),
            tokenize("a LIVELY Reel", 1024, 24)
        );
        assert_eq!(tokenize_with(WORDS_TRIGRAMS, " ", 1024, 24).len(), 1);
    }

    #[test]
    fn pad_batch_masks_the_padding() {
        let (ids, mask, words) = pad_batch(&[vec![5, 6], vec![7]]);
        assert_eq!(words, 2);
        assert_eq!(ids, vec![5, 6, 7, 0]);
        assert_eq!(mask, vec![1.0, 1.0, 1.0, 0.0]);
    }
}
