//! Errors of the reward models.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(String),
    #[error("reward-model checkpoint: {0}")]
    Checkpoint(String),
    #[error("training data: {0}")]
    Data(String),
    #[error("training: {0}")]
    Training(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl From<musicrl_music::MusicError> for Error {
    fn from(e: musicrl_music::MusicError) -> Self {
        Error::Data(e.to_string())
    }
}

impl From<musicrl_prefdb::Error> for Error {
    fn from(e: musicrl_prefdb::Error) -> Self {
        match e {
            musicrl_prefdb::Error::Io(m) => Error::Io(m),
            other => Error::Data(other.to_string()),
        }
    }
}
