//! Errors of the policy crate: every one names the file, tensor or field it is about.

use std::path::PathBuf;

/// What can go wrong loading or running a policy family.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("io error at {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A model folder that is not in the expected layout (a missing file, a
    /// `pytorch_model.bin`-only folder, an unreadable `config.json`).
    #[error("{path}: {why}")]
    Folder { path: PathBuf, why: String },
    /// A configuration value this implementation cannot run.
    #[error("{path}: {field}: {why}")]
    Config {
        path: PathBuf,
        field: String,
        why: String,
    },
    #[error("{file}: tensor {name} is missing")]
    MissingTensor { file: PathBuf, name: String },
    #[error("{file}: tensor {name} has shape {found:?}, expected {expected:?}")]
    TensorShape {
        file: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("{file}: tensor {name} has dtype {dtype}, expected F32, F16 or BF16")]
    TensorDtype {
        file: PathBuf,
        name: String,
        dtype: String,
    },
    #[error("{file}: {count} tensor(s) this model does not use: {names}")]
    UnexpectedTensors {
        file: PathBuf,
        count: usize,
        names: String,
    },
    #[error("{file}: not a safetensors file: {why}")]
    Safetensors { file: PathBuf, why: String },
    #[error("tokenizer {path}: {why}")]
    Tokenizer { path: PathBuf, why: String },
    /// Input a caller gave that breaks the model's rules (codes out of range, an empty
    /// caption, a grid of the wrong shape).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A parameter blob or file that does not fit the policy (bad checksum, wrong shapes,
    /// another configuration).
    #[error("bad parameters: {0}")]
    BadParameters(String),
    #[error("{0}")]
    Internal(String),
}

impl PolicyError {
    /// Wraps an IO error with the path it happened at.
    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            error,
        }
    }
}

impl From<musicrl_config::fsutil::FileError> for PolicyError {
    fn from(e: musicrl_config::fsutil::FileError) -> Self {
        Self::Io {
            path: e.path,
            error: e.error,
        }
    }
}

/// Result with the policy crate's [`PolicyError`].
pub type Result<T, E = PolicyError> = std::result::Result<T, E>;
