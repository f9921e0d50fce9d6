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
//! `"b"`, `who` identifies the rater (opaque), `when` is Unix seconds.
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
        validate_tokens(&self.a, at)?;
        validate_tokens(&self.b, at)
    }
}

/// Token ids of one clip: not empty, inside the vocabulary.
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
    /// The chosen melody in ABC notation.
    pub chosen: String,
    /// The rejected melody in ABC notation.
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

/// Reads RLHF pairs, validating every line; an error names the file and line.
pub fn read_rlhf(path: &Path) -> Result<Vec<RlhfPair>> {
    read_jsonl(path, RlhfPair::validate)
}

impl RlhfPair {
    /// Token ids inside the vocabulary, a channel that is a short lowercase word.
    pub fn validate(&self, at: &str) -> Result<()> {
        validate_tokens(&self.chosen_tokens, at)?;
        validate_tokens(&self.rejected_tokens, at)?;
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
        };
        let text = store_text(std::slice::from_ref(&c));
        let back: Choice = serde_json::from_str(text.trim()).expect("parses");
        assert_eq!(back, c);
        assert_eq!(c.listener(), Some(12));
        assert_eq!(c.ordered(), (&[7u32][..], &[4u32, 5, 6][..]));
    }
}
