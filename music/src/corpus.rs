//! The folk-tune corpus (`data/corpus/tunes.jsonl.gz`, written by
//! `scripts/prepare_corpus.py`; provenance in `data/corpus/README.md`).

use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::Deserialize;

use crate::tokens::Event;
use crate::{MusicError, Result};

/// Which part of the corpus a tune belongs to (fixed by a hash of its id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Validation,
    Test,
}

/// One tune and what is known about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tune {
    pub id: String,
    pub collection: String,
    pub title: String,
    /// Normalised tune type (`reel`, `jig`, …) or empty when the source does not say.
    pub tune_type: String,
    /// A demonym such as `German` or `Chinese`, or empty.
    pub origin: String,
    pub meter: String,
    pub key_tonic: String,
    /// `major` or `minor`.
    pub key_mode: String,
    /// From the source's tempo marking, when it has one.
    pub tempo_bpm: Option<u32>,
    pub split: Split,
    pub events: Vec<Event>,
}

#[derive(Deserialize)]
struct Row {
    id: String,
    collection: String,
    title: String,
    #[serde(rename = "type")]
    tune_type: String,
    origin: String,
    meter: String,
    key_tonic: String,
    key_mode: String,
    tempo_bpm: Option<u32>,
    split: Split,
    events: Vec<serde_json::Value>,
}

fn event(v: &serde_json::Value) -> Option<Event> {
    if v.as_str() == Some("|") {
        return Some(Event::Bar);
    }
    let pair = v.as_array()?;
    let (p, d) = (pair.first()?.as_i64()?, pair.get(1)?.as_u64()?);
    let twelfths = u16::try_from(d).ok().filter(|d| *d > 0)?;
    let pitch = match p {
        -1 => None,
        0..=127 => Some(p as u8),
        _ => return None,
    };
    Some(Event::Note { pitch, twelfths })
}

/// Reads the corpus (gzip-compressed JSON lines); a malformed line is an error naming it.
pub fn load(path: &Path) -> Result<Vec<Tune>> {
    let file = std::fs::File::open(path).map_err(|e| MusicError::io(path, e))?;
    let reader = BufReader::new(flate2::read::GzDecoder::new(file));
    let mut tunes = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| MusicError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: String| MusicError::Corpus {
            path: path.to_path_buf(),
            line: i + 1,
            why,
        };
        let row: Row = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        let events = row
            .events
            .iter()
            .map(|v| event(v).ok_or_else(|| bad(format!("bad event {v}"))))
            .collect::<Result<Vec<_>>>()?;
        tunes.push(Tune {
            id: row.id,
            collection: row.collection,
            title: row.title,
            tune_type: row.tune_type,
            origin: row.origin,
            meter: row.meter,
            key_tonic: row.key_tonic,
            key_mode: row.key_mode,
            tempo_bpm: row.tempo_bpm,
            split: row.split,
            events,
        });
    }
    Ok(tunes)
}

/// The corpus in this source tree (for tests and tools run from the repository; binaries
/// take the path from their configuration).
pub fn repo_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/corpus/tunes.jsonl.gz")
}
