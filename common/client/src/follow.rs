//! Following the learner's parameter broadcast: subscribe, reassemble chunks, publish the
//! newest complete version locally; resubscribe with backoff when the stream breaks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use tokio::sync::watch;
use tonic::transport::Channel;

use musicrl_common::wire::ChunkAssembler;
use musicrl_policy::{ParameterBlob, ParameterEncoding};
use musicrl_proto::v1::SubscribeRequest;
use musicrl_proto::v1::learner_service_client::LearnerServiceClient;

/// Largest parameter blob an actor accepts (64 GiB: larger than any policy this machine
/// class trains; the assembler grows its buffer as chunks arrive rather than trusting an
/// announced size).
pub const MAX_PARAMETER_BYTES: usize = 64 << 30;

/// Publishes every complete version into `out` until one marked `training_complete`
/// arrives (published too; with `exit_on_completion` false it keeps following, for the next
/// run) or `out` has no receivers. Asks for `encoding`; takes whatever encoding a version's
/// chunks declare (the learner falls back to f32 for a version with no bf16 form).
pub async fn follow(
    client: LearnerServiceClient<Channel>,
    token: Option<crate::Token>,
    actor_id: String,
    encoding: ParameterEncoding,
    out: watch::Sender<Option<Arc<ParameterBlob>>>,
    backoff: crate::CappedBackoff,
    exit_on_completion: bool,
) {
    let mut delays = backoff.build();
    loop {
        match subscribe_once(
            client.clone(),
            token.as_ref(),
            &actor_id,
            encoding,
            &out,
            exit_on_completion,
        )
        .await
        {
            Ok(Finished::TrainingComplete) | Ok(Finished::NoReceivers) => return,
            Ok(Finished::StreamEnded) => {
                tracing::warn!("parameter stream ended; resubscribing");
            }
            Err(e) => {
                tracing::warn!(code = ?e.code(), message = e.message(), "parameter stream failed; resubscribing");
            }
        }
        metrics::counter!(musicrl_telemetry::metrics_catalog::ACTOR_RECONNECTS_TOTAL, "target" => "learner").increment(1);
        let wait = delays.next().unwrap_or(Duration::from_secs(1));
        tokio::time::sleep(wait).await;
    }
}

/// Follows the broadcast of the learner at `url` for a process that only samples (the
/// feedback service's `learner` source): subscribes as `subscriber`, with the actor's token,
/// TLS and backoff, and keeps following across training runs until `out` has no receivers.
pub fn spawn_follower(
    config: &musicrl_config::Config,
    url: &str,
    subscriber: String,
    out: watch::Sender<Option<Arc<ParameterBlob>>>,
) -> crate::Result<tokio::task::JoinHandle<()>> {
    let client = crate::learner_client(config, url)?;
    let token = musicrl_security::tokens::client_token(&config.security.token_file)?;
    Ok(tokio::spawn(follow(
        client,
        token,
        subscriber,
        config.actor.parameter_encoding,
        out,
        crate::backoff(config),
        false,
    )))
}

enum Finished {
    TrainingComplete,
    NoReceivers,
    StreamEnded,
}

async fn subscribe_once(
    mut client: LearnerServiceClient<Channel>,
    token: Option<&crate::Token>,
    actor_id: &str,
    encoding: ParameterEncoding,
    out: &watch::Sender<Option<Arc<ParameterBlob>>>,
    exit_on_completion: bool,
) -> Result<Finished, tonic::Status> {
    let mut request = tonic::Request::new(SubscribeRequest {
        actor_id: actor_id.to_string(),
        encoding: musicrl_common::wire::encoding_to_wire(encoding) as i32,
    });
    musicrl_security::authorize(&mut request, token);
    let mut stream = client.subscribe_parameters(request).await?.into_inner();
    let mut assembler = ChunkAssembler::new(MAX_PARAMETER_BYTES);
    let mut first_chunk_at = None;
    while let Some(chunk) = stream.message().await? {
        if chunk.chunk_index == 0 {
            first_chunk_at = Some(Instant::now());
        }
        match assembler.push(chunk) {
            Ok(None) => {}
            Ok(Some(blob)) => {
                if let Some(t) = first_chunk_at.take() {
                    metrics::histogram!(
                        musicrl_telemetry::metrics_catalog::ACTOR_PARAM_RECEIVE_SECONDS
                    )
                    .record(t.elapsed().as_secs_f64());
                }
                tracing::debug!(version = %blob.version, bytes = blob.bytes.len(), encoding = %blob.encoding, "received parameters");
                let complete = blob.training_complete;
                if out.send(Some(Arc::new(blob))).is_err() {
                    return Ok(Finished::NoReceivers);
                }
                if complete && exit_on_completion {
                    return Ok(Finished::TrainingComplete);
                }
            }
            // A broken version is skipped; the next one arrives whole.
            Err(e) => tracing::warn!(error = %e, "discarded a parameter version"),
        }
    }
    Ok(Finished::StreamEnded)
}
