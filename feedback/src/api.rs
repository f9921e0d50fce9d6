//! The HTTP handlers: the page, its static files, the clips, and the JSON API the page and
//! the bot client use (`GET /api/pair`, `POST /api/listen`, `POST /api/vote`;
//! `docs/feedback.md`). Each handler validates what it receives and answers a clear 4xx with
//! nothing stored, in this order: body and JSON shape, session and CSRF token, rate limit,
//! the pair (known, this rater's, not expired, not voted), then the fields.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use musicrl_common::wire::ScoreInput;
use musicrl_prefdb::db::is_id;
use musicrl_prefdb::{Db, NewClip, NewVote, Outcome, Pair, now_ms};
use musicrl_telemetry::metrics_catalog as catalog;
use serde::{Deserialize, Serialize};

use crate::assets;
use crate::clips::{self, ClipCache, Format};
use crate::error::ApiError;
use crate::guard::{Client, Guard};
use crate::limits::RateLimiter;
use crate::session::{self, Secret};
use crate::source::PairSource;

/// The service's shared state.
#[derive(Debug)]
pub struct AppState {
    pub db: Db,
    pub source: Arc<PairSource>,
    pub cache: ClipCache,
    pub secret: Secret,
    pub min_listen_seconds: f64,
    pub pair_ttl_ms: i64,
    pub max_comment_chars: usize,
    pub votes: RateLimiter,
    pub pairs: RateLimiter,
    /// Per-address limits, the bot's token, the daily cap and the same-side detector.
    pub guard: Guard,
    /// `feedback.max_concurrent_requests`.
    pub max_concurrent_requests: usize,
    /// Scores every clip when it is drawn (`feedback.score_clips`: the `[reward]`
    /// components, in process); the scores are stored with the clip.
    pub scorer: Option<Arc<musicrl_scoring::RewardModel>>,
    /// Why the service cannot do its job now (the database takes no writes), or None: what
    /// `/healthz` answers, refreshed every `health_every`.
    pub unhealthy: std::sync::Mutex<Option<String>>,
    pub health_every: std::time::Duration,
}

impl AppState {
    /// Checks the database now and records the answer for `/healthz`.
    pub async fn check_health(&self) -> Option<String> {
        let now = self.db.probe_write().await.err().map(|e| e.to_string());
        let mut held = self
            .unhealthy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *held != now {
            match &now {
                Some(why) => tracing::error!(reason = %why, "the feedback service is NOT_SERVING"),
                None => tracing::info!("the feedback service is SERVING again"),
            }
        }
        metrics::gauge!(musicrl_telemetry::metrics_catalog::FEEDBACK_SERVING)
            .set(if now.is_none() { 1.0 } else { 0.0 });
        held.clone_from(&now);
        now
    }
}

pub type Shared = Arc<AppState>;

/// A request's client, its session, and whether the session is new (then the answer sets
/// the cookie): a cookie this server signed, or a new session, which counts against the
/// client address's `sessions_per_hour_per_address`.
fn client_session(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<(Client, String, bool), ApiError> {
    let client = state.guard.client(Some(peer), headers)?;
    match state.secret.session_of(headers) {
        Some(s) => Ok((client, s, false)),
        None => {
            state.guard.new_session(&client, Instant::now())?;
            Ok((client, session::new_session(), true))
        }
    }
}

fn with_cookie(mut response: Response, cookie: &str, new: bool) -> Response {
    if new && let Ok(v) = HeaderValue::from_str(&session::set_cookie(cookie)) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// `GET /`: the voting page, with this session's CSRF token in it.
pub async fn index(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let (_, s, new) = match client_session(&state, peer, &headers) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let page = assets::INDEX_HTML.replace("{{CSRF}}", &state.secret.csrf(&s));
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(assets::CONTENT_SECURITY_POLICY),
    );
    with_cookie(response, &state.secret.session_cookie(&s), new)
}

/// `GET /static/{name}`: the page's script, style and the bundled abcjs.
pub async fn static_file(Path(name): Path<String>) -> Response {
    match assets::file(&name) {
        Some((content_type, body)) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            body,
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no static file {name:?}"),
        )
        .into_response(),
    }
}

/// `GET /healthz`: whether the database takes writes, as of the last check (every
/// `feedback.health_check_seconds`): `ok`, or 503 with `NOT_SERVING` and the reason.
pub async fn healthz(State(state): State<Shared>) -> Response {
    let held = state
        .unhealthy
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    match held {
        None => "ok\n".into_response(),
        Some(why) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("NOT_SERVING: {why}"),
        )
        .into_response(),
    }
}

/// One clip of a pair, as the page sees it (no provenance: the comparison is blind). An
/// audio-token clip (`codebooks` set) has WAV only: `abc`, `midi` and `abc_file` are empty.
#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct ClipView {
    pub id: String,
    /// Audio tokens: `tokens` is this many rows of codes (absent: a melody).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codebooks: Option<usize>,
    /// Seconds the clip plays.
    pub seconds: f64,
    /// Seconds it must be played before a vote counts.
    pub required_seconds: f64,
    pub abc: String,
    pub tokens: Vec<u32>,
    pub wav: String,
    pub midi: String,
    pub abc_file: String,
}

/// `GET /api/pair`.
#[derive(Debug, Serialize, Deserialize, Clone)]
pub struct PairView {
    pub pair: String,
    pub caption: String,
    pub expires_at_ms: i64,
    pub csrf: String,
    pub a: ClipView,
    pub b: ClipView,
}

fn required(min_listen: f64, seconds: f64) -> f64 {
    min_listen.min(seconds)
}

fn clip_view(
    cache: &ClipCache,
    id: &str,
    caption: &str,
    d: &crate::source::Drawn,
    min_listen: f64,
) -> ClipView {
    let seconds = cache.seconds(caption, &d.tokens, d.codebooks);
    let melody = d.codebooks.is_none();
    let when = |s: String| if melody { s } else { String::new() };
    ClipView {
        id: id.to_string(),
        codebooks: d.codebooks,
        seconds,
        required_seconds: required(min_listen, seconds),
        abc: when(clips::abc(caption, &d.tokens)),
        tokens: d.tokens.clone(),
        wav: format!("/clips/{id}.wav"),
        midi: when(format!("/clips/{id}.mid")),
        abc_file: when(format!("/clips/{id}.abc")),
    }
}

pub async fn pair(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let (client, s, new) = match client_session(&state, peer, &headers) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let rater = state.secret.rater_id(&s);
    let answer = match state.guard.pair(&client, Instant::now()) {
        Ok(()) => serve_pair(&state, &s, &rater, client.channel).await,
        Err(e) => Err(e),
    };
    with_cookie(
        match answer {
            Ok(view) => Json(view).into_response(),
            Err(e) => e.into_response(),
        },
        &state.secret.session_cookie(&s),
        new,
    )
}

/// Each clip's reward-model scores: every component's raw score by name, and the weighted
/// sum as `reward`. A scorer that fails leaves the pair unscored (logged): a listener still
/// gets the pair, and the scores are provenance, not a condition of voting.
async fn clip_scores(
    scorer: &musicrl_scoring::RewardModel,
    caption: &str,
    clips: [&Vec<u32>; 2],
) -> [BTreeMap<String, f64>; 2] {
    let inputs: Vec<ScoreInput> = clips
        .iter()
        .map(|t| ScoreInput {
            caption: caption.to_string(),
            tokens: t.to_vec(),
        })
        .collect();
    match scorer.score(&inputs).await {
        Ok(scored) => {
            let names: Vec<String> = scorer.components().into_iter().map(|c| c.name).collect();
            let one = |s: &musicrl_common::types::SampleScore| {
                let mut m: BTreeMap<String, f64> = names
                    .iter()
                    .zip(&s.components)
                    .map(|(n, v)| (n.clone(), f64::from(*v)))
                    .collect();
                m.insert("reward".into(), f64::from(s.reward));
                m
            };
            [one(&scored[0]), one(&scored[1])]
        }
        Err(e) => {
            tracing::warn!(error = %e, caption, "could not score a pair's clips; storing it unscored");
            Default::default()
        }
    }
}

async fn serve_pair(
    state: &Shared,
    session: &str,
    rater: &str,
    channel: &'static str,
) -> Result<PairView, ApiError> {
    state.pairs.take(rater, Instant::now()).map_err(|wait| {
        ApiError::rate_limited(
            format!("too many pairs requested; try again in {wait} s"),
            wait,
        )
    })?;
    let started = Instant::now();
    let source = state.source.clone();
    let (caption, a, b) = tokio::task::spawn_blocking(move || source.draw())
        .await
        .map_err(ApiError::internal)?
        .transpose()
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "no policy to sample yet: the learner has not broadcast parameters; try again shortly",
            )
        })?;
    metrics::histogram!(catalog::FEEDBACK_PAIR_DRAW_SECONDS)
        .record(started.elapsed().as_secs_f64());
    let scores = match &state.scorer {
        Some(scorer) => clip_scores(scorer, &caption, [&a.tokens, &b.tokens]).await,
        None => Default::default(),
    };
    let now = now_ms();
    state.db.ensure_rater(rater, channel, now).await?;
    let mut ids = Vec::with_capacity(2);
    for (d, scores) in [&a, &b].into_iter().zip(scores) {
        let clip = NewClip {
            caption: &caption,
            tokens: &d.tokens,
            codebooks: d.codebooks,
            source: &d.source,
            policy_version: d.policy_version,
            seed: Some(d.seed as i64),
            scores,
        };
        ids.push(state.db.put_clip(&clip, now).await?);
    }
    let pair = state
        .db
        .create_pair(
            &caption,
            &ids[0],
            &ids[1],
            Some(rater),
            now,
            state.pair_ttl_ms,
        )
        .await?;
    metrics::counter!(catalog::FEEDBACK_PAIRS_SERVED_TOTAL).increment(1);
    Ok(PairView {
        pair: pair.id,
        caption: caption.clone(),
        expires_at_ms: pair.expires_at_ms,
        csrf: state.secret.csrf(session),
        a: clip_view(
            &state.cache,
            &ids[0],
            &caption,
            &a,
            state.min_listen_seconds,
        ),
        b: clip_view(
            &state.cache,
            &ids[1],
            &caption,
            &b,
            state.min_listen_seconds,
        ),
    })
}

/// A POST's JSON body, checked: content type, size, shape.
fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request body cannot be read: {e}"),
        )
    })?;
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            "the body must be JSON (Content-Type: application/json)",
        ));
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("malformed", format!("malformed JSON body: {e}")))
}

/// The rater of a POST: a session cookie and its CSRF token in `x-csrf-token`.
fn authenticated(state: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    let Some(s) = state.secret.session_of(headers) else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "no_session",
            "no session: load the page (or GET /api/pair) first",
        ));
    };
    let token = headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !state.secret.csrf_ok(&s, token) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf",
            "missing or wrong x-csrf-token header for this session",
        ));
    }
    Ok(state.secret.rater_id(&s))
}

/// A pair this rater may still act on.
async fn open_pair(state: &AppState, pair_id: &str, rater: &str) -> Result<Pair, ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_pair",
            format!("no pair {pair_id:?}"),
        )
    };
    if !is_id(pair_id) {
        return Err(not_found());
    }
    let pair = state.db.pair(pair_id).await?.ok_or_else(not_found)?;
    if pair.rater_id.as_deref() != Some(rater) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "other_rater",
            "this pair was served to another rater",
        ));
    }
    if now_ms() > pair.expires_at_ms {
        return Err(ApiError::new(
            StatusCode::GONE,
            "expired_pair",
            "this pair has expired; ask for a new one",
        ));
    }
    if state.db.vote_for_pair(pair_id).await?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "duplicate_vote",
            format!("pair {pair_id} already has a vote"),
        ));
    }
    Ok(pair)
}

fn side(s: &str) -> Result<Outcome, ApiError> {
    match s {
        "a" => Ok(Outcome::A),
        "b" => Ok(Outcome::B),
        other => Err(ApiError::unprocessable(
            "invalid",
            format!("side must be \"a\" or \"b\", not {other:?}"),
        )),
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenRequest {
    pub pair: String,
    pub side: String,
    pub seconds: f64,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct Listened {
    /// Seconds credited to A and B so far.
    pub a: f64,
    pub b: f64,
}

/// `POST /api/listen`: the page reports playing time of one side. Credit is capped by the
/// wall-clock time since the pair was served (two clips cannot both have played longer than
/// that), so a client cannot claim listening it had no time for.
pub async fn listen(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match listen_inner(&state, &headers, body).await {
        Ok(l) => Json(l).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn listen_inner(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Listened, ApiError> {
    let req: ListenRequest = json_body(headers, body)?;
    let rater = authenticated(state, headers)?;
    let pair = open_pair(state, &req.pair, &rater).await?;
    let side = side(&req.side)?;
    if !req.seconds.is_finite() || req.seconds <= 0.0 || req.seconds > 600.0 {
        return Err(ApiError::unprocessable(
            "invalid",
            format!("seconds must be in (0, 600], not {}", req.seconds),
        ));
    }
    let (a, b) = state.db.listened(&pair.id).await?;
    let now = now_ms();
    // A quarter second of slack for the page's reporting granularity.
    let elapsed = (now - pair.served_at_ms) as f64 / 1000.0 + 0.25;
    let credit = req.seconds.min((elapsed - a - b).max(0.0));
    state
        .db
        .record_listening(&pair.id, side, credit, now)
        .await?;
    Ok(match side {
        Outcome::A => Listened { a: a + credit, b },
        _ => Listened { a, b: b + credit },
    })
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VoteRequest {
    pub pair: String,
    /// `a`, `b`, `tie` or `both_bad`.
    pub outcome: String,
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct VoteAnswer {
    pub vote: i64,
}

/// `POST /api/vote`.
pub async fn vote(
    State(state): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match vote_inner(&state, peer, &headers, body).await {
        Ok(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn vote_inner(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<VoteAnswer, ApiError> {
    let req: VoteRequest = json_body(headers, body)?;
    let client = state.guard.client(Some(peer), headers)?;
    let rater = authenticated(state, headers)?;
    state.votes.take(&rater, Instant::now()).map_err(|wait| {
        ApiError::rate_limited(format!("too many votes; try again in {wait} s"), wait)
    })?;
    state.guard.vote(&client, Instant::now())?;
    let day_ago = now_ms() - 86_400_000;
    let today = state.db.votes_by_rater_since(&rater, day_ago).await?;
    if today >= state.guard.votes_per_rater_per_day {
        return Err(ApiError::rate_limited(
            format!(
                "this rater has cast {today} votes in the last 24 hours, the most allowed \
                 (feedback.votes_per_rater_per_day)"
            ),
            3600,
        ));
    }
    let pair = open_pair(state, &req.pair, &rater).await?;
    let outcome = Outcome::parse(&req.outcome).ok_or_else(|| {
        ApiError::unprocessable(
            "invalid",
            format!(
                "outcome must be a, b, tie or both_bad, not {:?}",
                req.outcome
            ),
        )
    })?;
    let comment = req
        .comment
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    if let Some(c) = comment {
        let n = c.chars().count();
        if n > state.max_comment_chars {
            return Err(ApiError::unprocessable(
                "comment_too_long",
                format!(
                    "the comment has {n} characters; at most {} are kept",
                    state.max_comment_chars
                ),
            ));
        }
    }
    // Both clips must have been played long enough.
    let (heard_a, heard_b) = state.db.listened(&pair.id).await?;
    let clip = |id: &str| {
        let id = id.to_string();
        async move { state.db.clip(&id).await }
    };
    let (ca, cb) = (clip(&pair.clip_a).await?, clip(&pair.clip_b).await?);
    let need = |c: &Option<musicrl_prefdb::Clip>| {
        c.as_ref().map_or(0.0, |c| {
            required(
                state.min_listen_seconds,
                state.cache.seconds(&c.caption, &c.tokens, c.codebooks),
            )
        })
    };
    let (need_a, need_b) = (need(&ca), need(&cb));
    // A little slack for the page's reporting granularity.
    let slack = 0.25;
    if heard_a + slack < need_a || heard_b + slack < need_b {
        return Err(ApiError::unprocessable(
            "not_listened",
            format!(
                "listen to both clips first: A {heard_a:.1} of {need_a:.1} s, B {heard_b:.1} of {need_b:.1} s"
            ),
        ));
    }
    let channel = if state.guard.same_side_run(&client, outcome) {
        metrics::counter!(catalog::FEEDBACK_VOTES_FLAGGED_TOTAL).increment(1);
        tracing::warn!(
            address = %client.address,
            %rater,
            outcome = outcome.as_str(),
            "a run of same-side votes from one address: stored as flagged (not trained on)"
        );
        musicrl_prefdb::FLAGGED
    } else {
        client.channel
    };
    let id = state
        .db
        .record_vote(&NewVote {
            pair_id: &pair.id,
            rater_id: &rater,
            outcome,
            comment,
            channel,
            at_ms: now_ms(),
        })
        .await?;
    metrics::counter!(catalog::FEEDBACK_VOTES_TOTAL, "outcome" => outcome.as_str()).increment(1);
    metrics::histogram!(catalog::FEEDBACK_LISTEN_SECONDS).record(heard_a + heard_b);
    Ok(VoteAnswer { vote: id })
}

/// `GET /clips/{id}.{wav,mid,abc}`: a stored clip, rendered into the cache on first use.
pub async fn clip_file(State(state): State<Shared>, Path(file): Path<String>) -> Response {
    match clip_file_inner(&state, &file).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn clip_file_inner(state: &AppState, file: &str) -> Result<Response, ApiError> {
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no clip file {file:?}"),
        )
    };
    let (id, ext) = file.split_once('.').ok_or_else(not_found)?;
    let format = Format::parse(ext).ok_or_else(not_found)?;
    if !is_id(id) {
        return Err(not_found());
    }
    let clip = state.db.clip(id).await?.ok_or_else(not_found)?;
    let cache = state.cache.clone();
    let id = id.to_string();
    let path = tokio::task::spawn_blocking(move || {
        cache.file(&id, &clip.caption, &clip.tokens, clip.codebooks, format)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| match e {
        crate::error::Error::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
        e => ApiError::internal(e),
    })?;
    let bytes = tokio::fs::read(&path).await.map_err(ApiError::internal)?;
    let disposition = match format {
        Format::Wav => "inline".to_string(),
        _ => format!("attachment; filename=\"{file}\""),
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (header::CACHE_CONTROL, "public, max-age=86400".to_string()),
        ],
        bytes,
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}
