//! The names of the melody family's caption encoders (`policy.caption_encoder`); the
//! encoders themselves are `musicrl_policy::melody::caption`.

/// One id per word.
pub const WORDS: &str = "words-fnv1a";
/// One id per word and per character trigram of the word.
pub const WORDS_TRIGRAMS: &str = "words-trigrams-fnv1a";
/// Every encoder this build has.
pub const ENCODERS: [&str; 2] = [WORDS, WORDS_TRIGRAMS];
/// The default encoder (`policy.caption_encoder`), the one the shipped θ0 was pretrained
/// with: change the names whenever the hashing changes, so that roles with different
/// encoders refuse to work together.
pub const ENCODER: &str = WORDS;
