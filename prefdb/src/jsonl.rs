//! The file formats of preferences: musicrl's own JSONL store (the format the simulated
//! listeners wrote before the database existed, still read and written losslessly) and the
//! prompt/chosen/rejected JSONL that RLHF tooling reads, with our richer columns beside it.
//!
//! **musicrl store** (`musicrl preferences simulate` writes one), one choice a line:
//!
//! ```json
//! {"caption": "a lively jig …", "a": [28, 53, …], "b": [30, 53, …], "choice": "a",
//!  "who": "listener-17", "when": 1764460800}
//! ```
//!
//! `a` and `b` are the two clips' token ids (the melody vocabulary), `choice` is `"a"` or
//! `"b"`, `who` identifies the rater (opaque), `when` is Unix seconds. A pair of
//! **audio-token** clips (MusicGen's codes) adds `"codebooks": K`: each clip is then K rows of
//! T codes, row after row (code `[k][t]` at `k·T + t`, as the actors send them); a line
//! without it is a melody pair, so every older store reads unchanged.
//!
//! **RLHF pairs** ([`RlhfPair`]): `prompt`, `chosen` and `rejected` as text (the melody in
//! ABC notation, which any text tool can read), then `chosen_tokens` / `rejected_tokens` (the
//! token ids, which make the row lossless), the clips' provenance, the rater, the time and the
//! comment. Only decisive votes (A or B) become pairs; ties and "both bad" are kept in the
//! database and counted by the export, not written as pairs.

use std::io::Write;
use std::path::Path;

use musicrl_music::tokens;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One pairwise choice of the musicrl store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub caption: String,
    pub a: Vec<u32>,
    pub b: Vec<u32>,
    /// `"a"` or `"b"`.
    pub choice: String,
    pub who: String,
    /// Unix seconds.
    pub when: u64,
    /// Audio-token clips: the codebooks each clip's codes hold, row after row; `None` for a
    /// melody pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codebooks: Option<usize>,
}

impl Choice {
    /// The listener index of a simulated choice (`who` = `listener-N`).
    pub fn listener(&self) -> Option<usize> {
        self.who.strip_prefix("listener-")?.parse().ok()
    }

    /// (chosen, rejected).
    pub fn ordered(&self) -> (&[u32], &[u32]) {
        if self.choice == "a" {
            (&self.a, &self.b)
        } else {
            (&self.b, &self.a)
        }
    }

    /// Checks the choice and both clips; `at` says where it came from.
    pub fn validate(&self, at: &str) -> Result<()> {
        if self.choice != "a" && self.choice != "b" {
            return Err(Error::Data(format!(
                "{at}: choice must be \"a\" or \"b\", not {:?}",
                self.choice
            )));
        }
        validate_clip(&self.a, self.codebooks, at)?;
        validate_clip(&self.b, self.codebooks, at)
    }
}

/// The largest codebook an audio-token clip may index (EnCodec's are 1,024 or 2,048 codes;
/// the model that reads a clip checks its own size).
pub const MAX_CODEBOOK_SIZE: u32 = 1 << 16;

/// One clip: a melody's token ids (`codebooks` = `None`) or an audio-token clip of
/// `codebooks` rows of equal length.
pub fn validate_clip(clip: &[u32], codebooks: Option<usize>, at: &str) -> Result<()> {
    let Some(k) = codebooks else {
        return validate_tokens(clip, at);
    };
    if k == 0 || k > 64 {
        return Err(Error::Data(format!(
            "{at}: codebooks must be 1 to 64, not {k}"
        )));
    }
    if clip.is_empty() || !clip.len().is_multiple_of(k) {
        return Err(Error::Data(format!(
            "{at}: a clip of {} codes is not {k} rows of equal length",
            clip.len()
        )));
    }
    if let Some(c) = clip.iter().find(|&&c| c >= MAX_CODEBOOK_SIZE) {
        return Err(Error::Data(format!(
            "{at}: code {c} is outside any codebook (at most {MAX_CODEBOOK_SIZE} codes)"
        )));
    }
    Ok(())
}

/// Token ids of one melody clip: not empty, inside the vocabulary.
pub fn validate_tokens(clip: &[u32], at: &str) -> Result<()> {
    if clip.is_empty() {
        return Err(Error::Data(format!("{at}: a clip has no tokens")));
    }
    if let Some(t) = clip.iter().find(|&&t| t as usize >= tokens::VOCAB_SIZE) {
        return Err(Error::Data(format!(
            "{at}: token {t} is outside the {}-token vocabulary",
            tokens::VOCAB_SIZE
        )));
    }
    Ok(())
}

/// Reads a JSONL file of `T`, one value a line (blank lines skipped), each checked by
/// `validate`; an error names the file and line.
pub(crate) fn read_jsonl<T: serde::de::DeserializeOwned>(
    path: &Path,
    validate: impl Fn(&T, &str) -> Result<()>,
) -> Result<Vec<T>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = format!("{}:{}", path.display(), i + 1);
        let value: T = serde_json::from_str(line).map_err(|e| Error::Data(format!("{at}: {e}")))?;
        validate(&value, &at)?;
        out.push(value);
    }
    Ok(out)
}

/// Reads a musicrl store, validating every line (token ids, choice).
pub fn read_store(path: &Path) -> Result<Vec<Choice>> {
    read_jsonl(path, Choice::validate)
}

/// The musicrl store's text for these choices (one line each).
pub fn store_text(choices: &[Choice]) -> String {
    let mut out = String::new();
    for c in choices {
        out.push_str(&serde_json::to_string(c).expect("a choice serialises"));
        out.push('\n');
    }
    out
}

/// Appends choices to a musicrl store.
pub fn append_store(path: &Path, choices: &[Choice]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io(format!("{}: {e}", dir.display())))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
    f.write_all(store_text(choices).as_bytes())
        .map_err(|e| Error::Io(format!("{}: {e}", path.display())))
}

/// One decisive vote as RLHF tooling reads it (prompt/chosen/rejected), with musicrl's
/// columns beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RlhfPair {
    /// The caption.
    pub prompt: String,
    /// The chosen melody in ABC notation (an audio-token clip: [`audio_text`]).
    pub chosen: String,
    /// The rejected melody in ABC notation (an audio-token clip: [`audio_text`]).
    pub rejected: String,
    pub chosen_tokens: Vec<u32>,
    pub rejected_tokens: Vec<u32>,
    /// Where each clip came from (a policy version, a checkpoint name, `import`).
    #[serde(default)]
    pub chosen_source: String,
    #[serde(default)]
    pub rejected_source: String,
    /// The opaque rater id.
    #[serde(default)]
    pub rater: String,
    /// Unix milliseconds of the vote.
    #[serde(default)]
    pub created_at_ms: i64,
    #[serde(default)]
    pub comment: Option<String>,
    /// Whether the chosen clip was shown on the left (side A).
    #[serde(default = "yes")]
    pub chosen_was_a: bool,
    /// How the vote arrived: `web` (a person on the voting page), `bot` (`musicrl feedback
    /// bot`), `import`, …; empty in files written before it was exported.
    #[serde(default)]
    pub channel: String,
    /// Audio-token clips: the codebooks each clip's tokens hold (see [`Choice::codebooks`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codebooks: Option<usize>,
}

fn yes() -> bool {
    true
}

/// The melody of `tokens` in ABC notation, at the tempo its caption asks for.
pub fn abc_of(caption: &str, clip: &[u32]) -> String {
    let (_, bpm) = musicrl_music::captions::rendering_for(caption);
    let decoded = tokens::decode(clip);
    musicrl_music::export::to_abc(&decoded.events, caption, None, bpm)
}

/// The text column of an audio-token clip, which has no notation: its shape, for tools that
/// show the text (the codes are in `chosen_tokens` / `rejected_tokens`; `musicrl codec
/// decode` renders them).
pub fn audio_text(clip: &[u32], codebooks: usize) -> String {
    format!(
        "audio tokens: {codebooks} codebooks x {} frames",
        clip.len() / codebooks.max(1)
    )
}

/// A clip's text column: ABC for a melody, [`audio_text`] for audio tokens.
pub fn clip_text(caption: &str, clip: &[u32], codebooks: Option<usize>) -> String {
    match codebooks {
        Some(k) => audio_text(clip, k),
        None => abc_of(caption, clip),
    }
}

/// Reads RLHF pairs, validating every line; an error names the file and line.
pub fn read_rlhf(path: &Path) -> Result<Vec<RlhfPair>> {
    read_jsonl(path, RlhfPair::validate)
}

impl RlhfPair {
    /// Token ids inside the vocabulary, a channel that is a short lowercase word.
    pub fn validate(&self, at: &str) -> Result<()> {
        validate_clip(&self.chosen_tokens, self.codebooks, at)?;
        validate_clip(&self.rejected_tokens, self.codebooks, at)?;
        validate_channel(&self.channel, at)
    }
}

/// A vote's channel: empty (unknown), or 1–32 of `a-z`, `0-9`, `-`.
pub fn validate_channel(channel: &str, at: &str) -> Result<()> {
    let ok = channel.len() <= 32
        && channel
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::Data(format!(
            "{at}: channel {channel:?} is not a short lowercase word (a-z, 0-9, -; at most 32)"
        )))
    }
}

/// The JSONL text of RLHF pairs.
pub fn rlhf_text(pairs: &[RlhfPair]) -> String {
    let mut out = String::new();
    for p in pairs {
        out.push_str(&serde_json::to_string(p).expect("a pair serialises"));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_line_is_named_by_file_and_line() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("s.jsonl");
        let good = Choice {
            caption: "a jig".into(),
            a: vec![1, 2],
            b: vec![3],
            choice: "a".into(),
            who: "listener-3".into(),
            when: 5,
            codebooks: None,
        };
        append_store(&path, std::slice::from_ref(&good)).expect("writes");
        std::fs::write(
            &path,
            format!(
                "{}\n\n{{\"caption\":\"x\",\"a\":[1],\"b\":[99],\"choice\":\"a\",\"who\":\"w\",\"when\":1}}\n",
                store_text(&[good]).trim_end()
            ),
        )
        .expect("writes");
        let e = read_store(&path)
            .expect_err("token 99 is out of range")
            .to_string();
        assert!(e.contains("s.jsonl:3") && e.contains("token 99"), "{e}");
    }

    #[test]
    fn the_store_format_round_trips_and_names_the_listener() {
        let c = Choice {
            caption: "a reel".into(),
            a: vec![4, 5, 6],
            b: vec![7],
            choice: "b".into(),
            who: "listener-12".into(),
            when: 1_764_460_800,
            codebooks: None,
        };
        let text = store_text(std::slice::from_ref(&c));
        let back: Choice = serde_json::from_str(text.trim()).expect("parses");
        assert_eq!(back, c);
        assert_eq!(c.listener(), Some(12));
        assert_eq!(c.ordered(), (&[7u32][..], &[4u32, 5, 6][..]));
    }

    #[test]
    fn audio_token_pairs_round_trip_and_are_checked_as_rows() {
        let c = Choice {
            caption: "lofi piano".into(),
            a: vec![0, 2047, 5, 6],
            b: vec![1, 2, 3, 4],
            choice: "a".into(),
            who: "web-1".into(),
            when: 7,
            codebooks: Some(2),
        };
        let text = store_text(std::slice::from_ref(&c));
        assert!(text.contains("\"codebooks\":2"), "{text}");
        let back: Choice = serde_json::from_str(text.trim()).expect("parses");
        assert_eq!(back, c);
        back.validate("here").expect("2 rows of 2 codes");
        // A melody line has no codebooks key: older stores read unchanged.
        let melody = Choice {
            codebooks: None,
            a: vec![4],
            b: vec![5],
            ..c.clone()
        };
        assert!(!store_text(&[melody]).contains("codebooks"));
        // Code 2047 is beyond the melody vocabulary but inside a codebook.
        assert!(validate_clip(&c.a, None, "m").is_err());
        let odd = validate_clip(&[1, 2, 3], Some(2), "x").expect_err("3 codes are not 2 rows");
        assert!(odd.to_string().contains("not 2 rows"), "{odd}");
        assert!(validate_clip(&[MAX_CODEBOOK_SIZE, 0], Some(1), "x").is_err());
        assert!(validate_clip(&[], Some(4), "x").is_err());
        assert!(validate_clip(&[1], Some(0), "x").is_err());
        assert_eq!(audio_text(&c.a, 2), "audio tokens: 2 codebooks x 2 frames");
    }
}
