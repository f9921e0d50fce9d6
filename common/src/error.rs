//! Errors of the common crate, and the one place a domain error becomes a gRPC status.

use std::path::PathBuf;

pub use musicrl_config::ConfigError;

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

impl From<musicrl_config::fsutil::FileError> for Error {
    fn from(e: musicrl_config::fsutil::FileError) -> Self {
        Self::Io {
            path: e.path,
            error: e.error,
        }
    }
}

impl From<musicrl_policy::PolicyError> for Error {
    fn from(e: musicrl_policy::PolicyError) -> Self {
        use musicrl_policy::PolicyError as P;
        match e {
            P::Io { path, error } => Self::Io { path, error },
            P::InvalidInput(m) => Self::InvalidArgument(m),
            P::Internal(m) => Self::Internal(m),
            P::BadParameters(m) => Self::BadParameters(m),
            other => Self::BadParameters(other.to_string()),
        }
    }
}

/// Result with the common [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
