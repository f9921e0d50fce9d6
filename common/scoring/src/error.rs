//! Errors of the reward model (building and running scorers).

/// Everything that can go wrong while building or running scorers.
#[derive(Debug, thiserror::Error)]
pub enum RewardError {
    #[error(transparent)]
    Common(#[from] musicrl_common::Error),
    #[error(
        "unknown scorer kind {0:?} (known: text, attributes, form, quality, preference, remote, token-fraction, loudness)"
    )]
    UnknownScorer(String),
    #[error("reward configuration: {0}")]
    Config(String),
    #[error("internal: {0}")]
    Internal(String),
    #[error("scorer {name} failed: {message}")]
    Scorer { name: String, message: String },
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The queue is full: answered with RESOURCE_EXHAUSTED, the caller retries later.
    #[error("{0}")]
    Overloaded(String),
}

impl From<RewardError> for tonic::Status {
    fn from(e: RewardError) -> Self {
        match e {
            RewardError::Common(c) => c.into(),
            RewardError::Overloaded(m) => tonic::Status::resource_exhausted(m),
            other => tonic::Status::internal(other.to_string()),
        }
    }
}

/// Result with [`RewardError`].
pub type Result<T, E = RewardError> = std::result::Result<T, E>;
