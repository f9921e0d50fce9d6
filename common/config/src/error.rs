//! The configuration's one error type: every variant names the key or file it is about.

use std::path::PathBuf;

/// A configuration that cannot be read or used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot parse config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config value {field}: {why}")]
    Invalid { field: String, why: String },
    #[error("{origin}: cannot set {key}: {why}")]
    Override {
        origin: String,
        key: String,
        why: String,
    },
    #[error("{key} = {path}: no such file or folder (tried {tried})")]
    Missing {
        key: String,
        path: PathBuf,
        tried: String,
    },
}
