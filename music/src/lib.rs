//! The music domain of the embedded default: a 64-token melody vocabulary, the folk-tune
//! corpus, captions built from what is known about each tune, and a synthesizer that renders
//! tokens to audio.
//!
//! Architecture invariant: this crate knows nothing of RL, burn or gRPC; the policy sees only
//! token ids and caption strings, and scorers see audio rendered here.

pub mod captions;
pub mod corpus;
pub mod render;
pub mod tokens;

use std::path::{Path, PathBuf};

/// Errors of the music domain.
#[derive(Debug, thiserror::Error)]
pub enum MusicError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: {why}")]
    Corpus {
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error("writing {0}: {1}")]
    Wav(PathBuf, String),
}

impl MusicError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Result with [`MusicError`].
pub type Result<T, E = MusicError> = std::result::Result<T, E>;
