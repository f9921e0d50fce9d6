//! The bot client: simulated listeners voting through the same HTTP API as people. Each
//! listener keeps its own session (so it is its own rater in the database), reports listening
//! for each clip as the page would, and votes with a choice the caller makes (the simulated
//! population's taste, in `musicrl feedback bot`). A 429 is honoured by waiting its
//! Retry-After.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::http::{self, Method, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use musicrl_prefdb::Outcome;

use crate::api::{Listened, PairView, VoteAnswer};

/// The User-Agent prefix that marks the bot's votes (`channel = bot` in the database).
pub const USER_AGENT_PREFIX: &str = "musicrl-bot";

#[derive(Debug, thiserror::Error)]
pub enum BotError {
    #[error("{method} {url}: {message}")]
    Http {
        method: Method,
        url: String,
        message: String,
    },
    #[error("{method} {path}: {status}: {message}")]
    Refused {
        method: Method,
        path: String,
        status: StatusCode,
        message: String,
    },
}

/// One listener's session with the service.
#[derive(Debug, Clone, Default)]
struct Session {
    cookie: Option<String>,
}

/// An HTTP client of the feedback API.
#[derive(Debug, Clone)]
pub struct BotClient {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    sessions: HashMap<usize, Session>,
    /// The bot's token (`feedback.bot_token_file`), sent with every request.
    token: Option<String>,
}

impl BotClient {
    /// A client of the service at `base` (`http://127.0.0.1:8080`).
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            sessions: HashMap::new(),
            token: None,
        }
    }

    /// Sends the bot's token: the service then knows these are the simulated listeners
    /// (channel `bot`) and does not hold them to its per-address limits.
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.trim().to_string());
        self
    }

    async fn call(
        &mut self,
        listener: usize,
        method: Method,
        path: &str,
        csrf: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Result<Bytes, BotError> {
        let url = format!("{}{path}", self.base);
        loop {
            let session = self.sessions.entry(listener).or_default().clone();
            let mut req = http::Request::builder()
                .method(method.clone())
                .uri(&url)
                .header(
                    header::USER_AGENT,
                    format!(
                        "{USER_AGENT_PREFIX}/{} listener-{listener}",
                        env!("CARGO_PKG_VERSION")
                    ),
                );
            if let Some(c) = &session.cookie {
                req = req.header(header::COOKIE, c);
            }
            if let Some(t) = csrf {
                req = req.header("x-csrf-token", t);
            }
            if let Some(t) = &self.token {
                req = req.header(crate::guard::BOT_TOKEN_HEADER, t.as_str());
            }
            let payload = match &body {
                Some(b) => {
                    req = req.header(header::CONTENT_TYPE, "application/json");
                    Bytes::from(serde_json::to_vec(b).expect("JSON serialises"))
                }
                None => Bytes::new(),
            };
            let http_err = |message: String| BotError::Http {
                method: method.clone(),
                url: url.clone(),
                message,
            };
            let req = req
                .body(Full::new(payload))
                .map_err(|e| http_err(e.to_string()))?;
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| http_err(e.to_string()))?;
            let status = resp.status();
            if let Some(set) = resp
                .headers()
                .get(header::SET_COOKIE)
                .and_then(|v| v.to_str().ok())
            {
                let pair = set.split(';').next().unwrap_or("").to_string();
                self.sessions.entry(listener).or_default().cookie = Some(pair);
            }
            let retry_after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| http_err(e.to_string()))?
                .to_bytes();
            if status == StatusCode::TOO_MANY_REQUESTS {
                let wait = retry_after.unwrap_or(1).clamp(1, 60);
                tracing::info!(listener, wait, "rate limited; waiting");
                tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
                continue;
            }
            if !status.is_success() {
                let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
                return Err(BotError::Refused {
                    method,
                    path: path.to_string(),
                    status,
                    message,
                });
            }
            return Ok(bytes);
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(path: &str, bytes: &Bytes) -> Result<T, BotError> {
        serde_json::from_slice(bytes).map_err(|e| BotError::Http {
            method: Method::GET,
            url: path.to_string(),
            message: format!("unexpected answer: {e}"),
        })
    }

    /// `GET /api/pair` as `listener`.
    pub async fn pair(&mut self, listener: usize) -> Result<PairView, BotError> {
        let bytes = self
            .call(listener, Method::GET, "/api/pair", None, None)
            .await?;
        Self::decode("/api/pair", &bytes)
    }

    /// `POST /api/listen`.
    pub async fn listen(
        &mut self,
        listener: usize,
        view: &PairView,
        side: &str,
        seconds: f64,
    ) -> Result<Listened, BotError> {
        let body = serde_json::json!({ "pair": view.pair, "side": side, "seconds": seconds });
        let bytes = self
            .call(
                listener,
                Method::POST,
                "/api/listen",
                Some(&view.csrf),
                Some(body),
            )
            .await?;
        Self::decode("/api/listen", &bytes)
    }

    /// `POST /api/vote`; returns the vote's id.
    pub async fn vote(
        &mut self,
        listener: usize,
        view: &PairView,
        outcome: Outcome,
        comment: Option<&str>,
    ) -> Result<i64, BotError> {
        let mut body = serde_json::json!({ "pair": view.pair, "outcome": outcome.as_str() });
        if let Some(c) = comment {
            body["comment"] = serde_json::Value::String(c.to_string());
        }
        let bytes = self
            .call(
                listener,
                Method::POST,
                "/api/vote",
                Some(&view.csrf),
                Some(body),
            )
            .await?;
        Ok(Self::decode::<VoteAnswer>("/api/vote", &bytes)?.vote)
    }

    /// One listener's whole turn: a pair, listening to both clips one after the other, and
    /// a vote chosen by `choose`. Each clip is listened to for `listen_seconds`, and at least
    /// as long as the server requires before a vote counts, capped at the clip; the listener
    /// waits that long in real time before reporting it, as a person would (the server
    /// credits no more listening than the time that has passed since it served the pair).
    pub async fn turn(
        &mut self,
        listener: usize,
        listen_seconds: f64,
        choose: impl FnOnce(&PairView) -> Outcome,
    ) -> Result<(PairView, Outcome, i64), BotError> {
        let view = self.pair(listener).await?;
        for (side, clip) in [("a", &view.a), ("b", &view.b)] {
            let seconds = listen_seconds.max(clip.required_seconds).min(clip.seconds);
            if seconds > 0.0 {
                tokio::time::sleep(std::time::Duration::from_secs_f64(seconds)).await;
                self.listen(listener, &view, side, seconds).await?;
            }
        }
        let outcome = choose(&view);
        let id = self.vote(listener, &view, outcome, None).await?;
        Ok((view, outcome, id))
    }
}
