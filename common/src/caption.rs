//! The caption encoder's tokenizer: a hashing bag of words.
//!
//! A simplified stand-in for MuLan's text tower, named as such: captions are lower-cased,
//! split on anything that is not a letter or digit, and each word is hashed (FNV-1a) into
//! one of `caption_buckets - 1` buckets (bucket 0 is the pad). The policy embeds the words
//! and averages them into one conditioning vector. Deterministic across processes and
//! machines, so actors and the learner agree without sharing a vocabulary file.

/// The name of this tokeniser (`policy.caption_encoder`): change it whenever the hashing
/// changes, so that roles with different encoders refuse to work together.
pub const ENCODER: &str = "words-fnv1a";

/// Word-bucket ids of one caption, at most `max_words` long (never empty: an empty caption
/// becomes the single reserved word `<empty>`).
pub fn tokenize(caption: &str, buckets: usize, max_words: usize) -> Vec<u32> {
    let mut ids: Vec<u32> = caption
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(max_words)
        .map(|w| bucket(&w.to_lowercase(), buckets))
        .collect();
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
    fn pad_batch_masks_the_padding() {
        let (ids, mask, words) = pad_batch(&[vec![5, 6], vec![7]]);
        assert_eq!(words, 2);
        assert_eq!(ids, vec![5, 6, 7, 0]);
        assert_eq!(mask, vec![1.0, 1.0, 1.0, 0.0]);
    }
}
