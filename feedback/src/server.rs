//! The router and the server: `serve` takes an already-bound listener and a shutdown future,
//! so tests start it on `127.0.0.1:0`.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use musicrl_config::Config;
use musicrl_policy::melody::Engine;
use musicrl_policy::musicgen::rollout::MusicgenRollout;
use musicrl_prefdb::Db;

use crate::api::{self, AppState, Shared};
use crate::clips::ClipCache;
use crate::error::{ApiError, Error, Result};
use crate::limits::RateLimiter;
use crate::session::Secret;
use crate::source::{Model, PairSource};

/// The service's state from the configuration: opens (and migrates) the database, loads the
/// pair source's models and the prompts, and (with `feedback.score_clips`) the `[reward]`
/// components that score every clip.
pub async fn state_from_config(config: &Config) -> Result<Shared> {
    let f = &config.feedback;
    let db = Db::open(&f.db).await?;
    db.probe_write().await.map_err(|e| {
        Error::Config(format!(
            "feedback.db {}: the database cannot be written, so no vote could be stored: {e}",
            musicrl_prefdb::db::redact(&f.db)
        ))
    })?;
    let source = PairSource::from_config(
        f,
        &config.policy,
        &config.learner.init_policy,
        config.sampling.temperature,
        config.codec_folder().as_deref(),
    )?;
    let secret = if f.secret_file.as_os_str().is_empty() {
        Secret::random()
    } else {
        read_secret(&f.secret_file)?
    };
    let scorer = if f.score_clips {
        // A MusicGen source's clips are heard through its codec, as the reward server hears
        // them (`reward.codec`, else the policy folder's).
        let mut reward = config.reward.clone();
        if let Some(folder) = config.codec_folder() {
            reward.codec = folder;
        }
        Some(
            musicrl_scoring::RewardModel::from_config(&reward).map_err(|e| {
                Error::Config(format!(
                    "feedback.score_clips: the [reward] components cannot be loaded: {e}"
                ))
            })?,
        )
    } else {
        None
    };
    let shared = state(db, source, &f.clip_cache, secret, f, scorer)?;
    if f.source == "learner" {
        follow_learner(config, &shared)?;
    }
    Ok(shared)
}

/// The `learner` source: subscribes to the broadcast and puts each new version's policy in
/// the pair source (built off the executor); a version that cannot be loaded is logged and
/// the previous one keeps serving.
fn follow_learner(config: &Config, shared: &Shared) -> Result<()> {
    let url = if config.feedback.learner.is_empty() {
        config.actor.learner.clone()
    } else {
        config.feedback.learner.clone()
    };
    let (tx, mut rx) = tokio::sync::watch::channel(None);
    let subscriber = format!("feedback-{:08x}", rand::random::<u32>());
    musicrl_client::follow::spawn_follower(config, &url, subscriber, tx)
        .map_err(|e| Error::Config(format!("feedback.learner {url:?}: {e}")))?;
    let source = shared.source.clone();
    let policy = config.policy.clone();
    // A MusicGen folder is read once; each version loads into a fresh rollout sharing its
    // tensors, while the model being served keeps its own until the swap.
    let folder: Arc<std::sync::Mutex<Option<MusicgenRollout>>> = Arc::default();
    tracing::info!(learner = %url, "the pair source follows the learner's broadcast");
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let Some(blob) = rx.borrow_and_update().clone() else {
                continue;
            };
            if source.version() == Some(blob.version.0 as i64) {
                continue;
            }
            let version = blob.version.0;
            let policy = policy.clone();
            let folder = folder.clone();
            let loaded = tokio::task::spawn_blocking(move || -> musicrl_common::Result<Model> {
                let device = musicrl_policy::device::inference_device();
                if policy.family == musicrl_config::FAMILY_MUSICGEN {
                    let mut loaded = folder.lock().unwrap_or_else(|p| p.into_inner());
                    let base = match loaded.take() {
                        Some(base) => base,
                        None => MusicgenRollout::load(&policy, &device, Some(0))?,
                    };
                    let mut rollout = base.fresh();
                    *loaded = Some(base);
                    rollout.set_parameters(&blob.bytes)?;
                    return Ok(Model::musicgen("learner", rollout));
                }
                let melody = blob.to_policy(&device)?;
                Ok(Model::new(
                    "learner",
                    Engine::from_policy(&melody, &blob.config, 1)?,
                ))
            })
            .await;
            match loaded {
                Ok(Ok(model)) => {
                    source.set_model(model.with_version(Some(version as i64)));
                    tracing::info!(version, "pairs now sample the learner's newest parameters");
                }
                Ok(Err(e)) => {
                    tracing::error!(version, error = %e, "a broadcast version cannot be loaded; the previous one keeps serving")
                }
                Err(e) => tracing::error!(version, error = %e, "the loading task failed"),
            }
        }
    });
    Ok(())
}

fn read_secret(path: &Path) -> Result<Secret> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Config(format!("feedback.secret_file {}: {e}", path.display())))?;
    Secret::from_bytes(&bytes).ok_or_else(|| {
        Error::Config(format!(
            "feedback.secret_file {}: the secret must be at least 32 bytes",
            path.display()
        ))
    })
}

/// The service's state from its parts.
pub fn state(
    db: Db,
    source: PairSource,
    clip_cache: &Path,
    secret: Secret,
    f: &musicrl_config::FeedbackConfig,
    scorer: Option<musicrl_scoring::RewardModel>,
) -> Result<Shared> {
    let cache = ClipCache::new(clip_cache)?.with_codec(source.codec());
    Ok(Arc::new(AppState {
        db,
        source: Arc::new(source),
        cache,
        secret,
        min_listen_seconds: f.min_listen_seconds,
        pair_ttl_ms: (f.pair_ttl_seconds as i64).saturating_mul(1000),
        max_comment_chars: f.max_comment_chars,
        votes: RateLimiter::new(f.votes_per_minute),
        pairs: RateLimiter::new(f.pairs_per_minute),
        guard: crate::guard::Guard::from_config(f)?,
        max_concurrent_requests: f.max_concurrent_requests,
        unhealthy: std::sync::Mutex::new(None),
        health_every: std::time::Duration::from_secs_f64(f.health_check_seconds),
        scorer: scorer.map(Arc::new),
    }))
}

async fn not_found() -> impl IntoResponse {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such page")
}

/// Every route of the service.
pub fn router(state: Shared, max_body_bytes: usize) -> Router {
    let concurrent = state.max_concurrent_requests;
    Router::new()
        .route("/", get(api::index))
        .route("/static/{name}", get(api::static_file))
        .route("/clips/{file}", get(api::clip_file))
        .route("/api/pair", get(api::pair))
        .route("/api/listen", post(api::listen))
        .route("/api/vote", post(api::vote))
        .route("/healthz", get(api::healthz))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        // Requests beyond this wait their turn with their bodies unread.
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(concurrent))
        .with_state(state)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Shared,
    max_body_bytes: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    musicrl_telemetry::metrics_catalog::register(
        musicrl_telemetry::metrics_catalog::Role::Feedback,
    );
    // The database is checked on a cadence, not per /healthz call: probes stay cheap and a
    // failing database is reported however often the probe asks.
    let health = {
        let state = state.clone();
        tokio::spawn(async move {
            loop {
                state.check_health().await;
                tokio::time::sleep(state.health_every).await;
            }
        })
    };
    // The peer's address reaches the handlers: the per-address limits key on it.
    let served = axum::serve(
        listener,
        router(state, max_body_bytes).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    health.abort();
    served
}
