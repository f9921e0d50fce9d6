//! Errors of the feedback service, and the one place an API error becomes an HTTP status.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pair source cannot be built (a policy, the prompts).
    #[error("pair source: {0}")]
    Source(String),
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Db(#[from] musicrl_prefdb::Error),
    #[error("{0}")]
    Config(String),
    /// A clip file that does not exist in this format (an audio-token clip's MIDI).
    #[error("{0}")]
    NotFound(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// An answer that is not a success: a status and a sentence saying what was wrong. Its body
/// is `{"error": "…"}`; nothing was stored.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds to wait (429 only).
    pub retry_after: Option<u64>,
    /// The reason label of `musicrl_feedback_rejected_total`.
    pub reason: &'static str,
}

impl ApiError {
    pub fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
            reason,
        }
    }

    pub fn bad_request(reason: &'static str, m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason, m)
    }

    /// 429 `rate_limited` with `Retry-After: wait` seconds.
    pub fn rate_limited(m: impl Into<String>, wait: u64) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", m);
        e.retry_after = Some(wait);
        e
    }

    pub fn unprocessable(reason: &'static str, m: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, reason, m)
    }

    pub fn internal(m: impl std::fmt::Display) -> Self {
        tracing::error!(error = %m, "feedback request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the server could not complete the request; it is logged",
        )
    }
}

impl From<musicrl_prefdb::Error> for ApiError {
    fn from(e: musicrl_prefdb::Error) -> Self {
        match e {
            musicrl_prefdb::Error::DuplicateVote(pair) => ApiError::new(
                StatusCode::CONFLICT,
                "duplicate_vote",
                format!("pair {pair} already has a vote"),
            ),
            musicrl_prefdb::Error::Data(m) => ApiError::unprocessable("invalid", m),
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!(musicrl_telemetry::metrics_catalog::FEEDBACK_REJECTED_TOTAL, "reason" => self.reason)
            .increment(1);
        let mut response = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}
