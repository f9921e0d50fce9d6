//! Errors of the common crate, and the one place a domain error becomes a gRPC status.

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

/// Errors of the shared machinery (policy, parameters, wire validation).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input that breaks the protocol's rules: answered with `INVALID_ARGUMENT`.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A parameter blob that does not fit the policy (bad checksum, wrong shapes).
    #[error("bad parameters: {0}")]
    BadParameters(String),
    #[error("config: {0}")]
    Config(#[from] ConfigError),
    // The IO error is part of the message, not a `source()`: reported with its chain
    // (`{e:#}`) it would otherwise be printed twice.
    #[error("io error at {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// Shorthand for an [`Error::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidArgument(msg.into())
    }

    /// Wraps an IO error with the path it happened at.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            error: source,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            Error::BadParameters(m) => tonic::Status::data_loss(m),
            Error::Config(c) => tonic::Status::failed_precondition(c.to_string()),
            other => tonic::Status::internal(other.to_string()),
        }
    }
}

/// Result with the common [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
