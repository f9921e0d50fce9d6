//! Errors of the preference database.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database URL names no backend this crate speaks, or cannot be opened.
    #[error("preference database {url}: {message}")]
    Open { url: String, message: String },
    /// A query failed; `what` says which operation.
    #[error("preference database: {what}: {source}")]
    Query {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// A migration could not be applied.
    #[error("preference database migration {version} ({name}): {message}")]
    Migration {
        version: i64,
        name: &'static str,
        message: String,
    },
    /// The database was migrated by a newer musicrl than this one.
    #[error(
        "preference database is at schema version {found}, newer than this build knows ({known}); upgrade musicrl"
    )]
    SchemaTooNew { found: i64, known: i64 },
    /// A record or a file line is not valid (says what and where).
    #[error("{0}")]
    Data(String),
    /// A referenced row does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A vote for a pair that already has one.
    #[error("pair {0} already has a vote")]
    DuplicateVote(String),
    #[error("{0}")]
    Io(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Wraps a sqlx error with the operation that failed.
pub(crate) fn query(what: &'static str) -> impl FnOnce(sqlx::Error) -> Error {
    move |source| Error::Query { what, source }
}
