//! The reward service: validate → score → combine → answer, with latency and batch-size
//! metrics. A bad request gets `INVALID_ARGUMENT` and the server keeps serving.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use musicrl_common::grpc::ENCODINGS;
use musicrl_common::wire::{self, TokenLimits};
use musicrl_config::Config;
use musicrl_proto::v1 as pb;
use musicrl_proto::v1::reward_service_server::{RewardService, RewardServiceServer};
use musicrl_security::{Permission, RewardKeys, SealedContent, TokenStore};

use crate::batcher::{Batcher, Limits};
use crate::combine::RewardModel;
use crate::error::{Result, RewardError};

/// Runs `f` when dropped.
struct Guard<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Drop for Guard<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

fn scopeguard<F: FnOnce()>(f: F) -> Guard<F> {
    Guard(Some(f))
}

/// The tonic service over a [`RewardModel`].
#[derive(Debug, Clone)]
pub struct Rewards {
    model: crate::batcher::ModelHandle,
    batcher: Batcher,
    limits: TokenLimits,
    max_batch: usize,
    tokens: Arc<TokenStore>,
    keys: Arc<RewardKeys>,
}

impl Rewards {
    /// Starts the batching task on the current runtime.
    pub fn new(
        model: Arc<RewardModel>,
        limits: TokenLimits,
        max_batch: usize,
        batching: Limits,
        tokens: TokenStore,
        keys: RewardKeys,
    ) -> Self {
        let handle = Arc::new(arc_swap::ArcSwap::new(model));
        Self::swappable(handle, limits, max_batch, batching, tokens, keys)
    }

    /// As [`Rewards::new`] over a model a reload may swap while it serves.
    pub fn swappable(
        model: crate::batcher::ModelHandle,
        limits: TokenLimits,
        max_batch: usize,
        batching: Limits,
        tokens: TokenStore,
        keys: RewardKeys,
    ) -> Self {
        Self {
            batcher: Batcher::spawn_swappable(model.clone(), batching),
            model,
            limits,
            max_batch,
            tokens: Arc::new(tokens),
            keys: Arc::new(keys),
        }
    }

    /// The batching limits a configuration declares.
    pub fn batching(config: &musicrl_config::RewardConfig) -> Limits {
        Limits {
            max_samples: config.batch_max_samples,
            max_wait: std::time::Duration::from_millis(config.batch_max_wait_ms),
            slice: config.slice_samples,
            max_queued: config.max_queued_samples,
        }
    }

    async fn score_inner(&self, request: pb::ScoreRequest) -> Result<pb::ScoreResponse, Status> {
        let batch = wire::score_request_from_wire(request, &self.limits, self.max_batch)?;
        metrics::histogram!(musicrl_telemetry::metrics_catalog::REWARD_BATCH_SIZE)
            .record(batch.len() as f64);
        // The inputs are kept for sealing only when there is a key to seal with.
        let inputs = if self.keys.is_empty() {
            Vec::new()
        } else {
            batch.clone()
        };
        // The whole call is scored by one snapshot of the model, which the answer names.
        let (mut scores, model) = self.batcher.score_versioned(batch).await?;
        let components = model.components();
        let scorer_version = model.scorer_version();
        if !self.keys.is_empty() {
            let now = musicrl_security::seal::now_unix_ms();
            for (input, score) in inputs.iter().zip(scores.iter_mut()) {
                let named: Vec<(String, f32)> = components
                    .iter()
                    .map(|c| c.name.clone())
                    .zip(score.components.iter().copied())
                    .collect();
                score.seal = self.keys.seal(
                    &SealedContent {
                        caption: &input.caption,
                        tokens: &input.tokens,
                        reward: score.reward,
                        components: &named,
                        scorer_version: &scorer_version,
                    },
                    now,
                );
            }
            metrics::counter!(musicrl_telemetry::metrics_catalog::REWARD_SEALED_TOTAL)
                .increment(scores.len() as u64);
        }
        Ok(pb::ScoreResponse {
            scores: scores.into_iter().map(wire::sample_score_to_wire).collect(),
            components: wire::components_to_wire(&components),
            scorer_version,
        })
    }
}

#[tonic::async_trait]
impl RewardService for Rewards {
    #[tracing::instrument(skip_all, name = "score", fields(samples = request.get_ref().samples.len()))]
    async fn score(
        &self,
        request: Request<pb::ScoreRequest>,
    ) -> Result<Response<pb::ScoreResponse>, Status> {
        let started = Instant::now();
        let inflight =
            metrics::gauge!(musicrl_telemetry::metrics_catalog::REWARD_INFLIGHT_REQUESTS);
        inflight.increment(1.0);
        // Decremented however the call ends, including when its client goes away and the
        // future is dropped.
        // A call dropped before it is answered (its client went away or its deadline
        // passed) is counted as cancelled.
        let _answered = scopeguard(move || inflight.decrement(1.0));
        let mut cancelled = scopeguard(|| {
            metrics::counter!(musicrl_telemetry::metrics_catalog::REWARD_REQUESTS_TOTAL, "code" => "cancelled").increment(1);
        });
        let result = match self.tokens.check(&request, Permission::Score) {
            Ok(()) => self.score_inner(request.into_inner()).await,
            Err(s) => Err(s),
        };
        // Answered: disarm.
        cancelled.0 = None;
        let code = match &result {
            Ok(_) => "ok",
            Err(s) => match s.code() {
                tonic::Code::InvalidArgument => "invalid_argument",
                tonic::Code::ResourceExhausted => "resource_exhausted",
                tonic::Code::Unauthenticated => "unauthenticated",
                tonic::Code::PermissionDenied => "permission_denied",
                _ => "error",
            },
        };
        metrics::counter!(musicrl_telemetry::metrics_catalog::REWARD_REQUESTS_TOTAL, "code" => code)
            .increment(1);
        metrics::histogram!(musicrl_telemetry::metrics_catalog::REWARD_REQUEST_SECONDS)
            .record(started.elapsed().as_secs_f64());
        if let Err(s) = &result {
            tracing::warn!(code = ?s.code(), message = s.message(), "score request failed");
        }
        result.map(Response::new)
    }

    async fn info(
        &self,
        request: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        self.tokens.check(&request, Permission::Read)?;
        let model = self.model.load_full();
        Ok(Response::new(pb::InfoResponse {
            components: wire::components_to_wire(&model.components()),
            scorer_version: model.scorer_version(),
            vocab_size: self.limits.vocab_size,
            max_tokens: self.limits.max_tokens as u32,
            max_batch: self.max_batch as u32,
        }))
    }
}

/// Serves the reward service and gRPC health on `listener` until `shutdown` resolves.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    config.validate().map_err(musicrl_common::Error::from)?;
    musicrl_telemetry::metrics_catalog::register(
        musicrl_telemetry::metrics_catalog::Role::RewardServer,
    );
    // An audio-token policy's clips are heard through its codec (`reward.codec`, else the
    // policy's own folder).
    let mut reward = config.reward.clone();
    if let Some(folder) = config.codec_folder() {
        reward.codec = folder;
    }
    let model = Arc::new(RewardModel::from_config_secured(&reward, &config.security)?);
    if let Some(codec) = model.codec() {
        let policy_folder = musicrl_config::paths::find(&config.policy.folder)
            .unwrap_or_else(|| config.policy.folder.clone());
        let (codebooks, _) = musicrl_config::musicgen_shape(&policy_folder)
            .map_err(|e| RewardError::Config(format!("policy.folder: {e}")))?;
        codec.check_policy(codebooks, config.policy.vocab_size)?;
    }
    let tokens = TokenStore::open(
        &config.security.tokens_file,
        musicrl_telemetry::metrics_catalog::REWARD_AUTH_FAILURES_TOTAL,
    )?;
    let keys = RewardKeys::load(&config.security.reward_keys_file)?;
    let handle = Arc::new(arc_swap::ArcSwap::new(model.clone()));
    let reloader = crate::reload::spawn(
        handle.clone(),
        reward.clone(),
        config.security.clone(),
        std::time::Duration::from_secs_f64(config.reward.reload_seconds),
    );
    let service = Rewards::swappable(
        handle,
        TokenLimits::of(&config.policy),
        config.reward.max_batch,
        Rewards::batching(&config.reward),
        tokens,
        keys,
    );
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<RewardServiceServer<Rewards>>().await;
    let health_only = musicrl_common::grpc::spawn_health_only(
        &config.reward.health_listen,
        health_service.clone(),
    );
    let addr = listener.local_addr()?;
    tracing::info!(%addr, scorer = %model.scorer_version(), "reward server serving");
    let (reflection_v1, reflection_v1alpha) =
        musicrl_common::grpc::reflection(&["musicrl.v1.RewardService"])?;
    let mut builder = musicrl_common::grpc::server_builder(
        musicrl_security::tls::server(&config.security)?,
        config.reward.max_concurrent_streams,
        None,
    )?;
    if config.reward.max_connection_age_seconds > 0 {
        builder = builder
            .max_connection_age(std::time::Duration::from_secs(
                config.reward.max_connection_age_seconds,
            ))
            .max_connection_age_grace(std::time::Duration::from_secs(10));
    }
    builder
        // A bound on the calls decoded at once, all connections together (the rest wait
        // with their bodies unread): memory stays bounded however many clients connect.
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            config.reward.max_concurrent_requests,
        ))
        .add_service(health_service)
        .add_service(
            RewardServiceServer::new(service)
                .max_decoding_message_size(wire::max_score_request_bytes(
                    &TokenLimits::of(&config.policy),
                    config.reward.max_batch,
                ))
                .accept_compressed(ENCODINGS[0])
                .accept_compressed(ENCODINGS[1])
                .send_compressed(ENCODINGS[0])
                .send_compressed(ENCODINGS[1]),
        )
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(musicrl_common::grpc::incoming(listener), shutdown)
        .await?;
    health_only.abort();
    if let Some(r) = reloader {
        r.abort();
    }
    tracing::info!("reward server stopped");
    Ok(())
}
