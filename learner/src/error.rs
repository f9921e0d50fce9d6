//! Errors of the learner.

/// Everything that can stop the learner.
#[derive(Debug, thiserror::Error)]
pub enum LearnerError {
    #[error(transparent)]
    Common(#[from] musicrl_common::Error),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("the training thread failed: {0}")]
    TrainingThread(String),
}

impl From<musicrl_policy::PolicyError> for LearnerError {
    fn from(e: musicrl_policy::PolicyError) -> Self {
        Self::Common(e.into())
    }
}

impl From<musicrl_config::fsutil::FileError> for LearnerError {
    fn from(e: musicrl_config::fsutil::FileError) -> Self {
        Self::Common(e.into())
    }
}

/// Result with [`LearnerError`].
pub type Result<T, E = LearnerError> = std::result::Result<T, E>;
