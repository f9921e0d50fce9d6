//! `musicrl bench --workloads reward`: the reward server's throughput against scoring the
//! same batches in process, which is what the gRPC hop costs an actor.
//!
//! The clips are the policy's own samples (stopped at END, as actors send them), scored by
//! the configured `[reward]` components (the embedded default: RL-R's text and quality
//! models). Three ways, each at every batch size of `--batches`:
//!
//! - **in process**: `RewardModel::score` on the batch, the same call the server makes;
//! - **gRPC, one client**: a real reward server (`musicrl_reward::serve` on loopback) and
//!   one client calling `Score` as an actor does, one request at a time;
//! - **gRPC, two clients**: two such clients at once (two actors), for the rate the server
//!   sustains when requests overlap.
//!
//! Rates are samples per second of the median call over `--iters` calls after one warm-up.

use std::time::{Duration, Instant};

use serde::Serialize;

use musicrl_common::wire::{self, ScoreInput};
use musicrl_config::Config;
use musicrl_proto::v1::reward_service_client::RewardServiceClient;

#[derive(Debug, Clone, Serialize)]
pub struct RewardRow {
    pub batch: usize,
    pub in_process_samples_per_second: f64,
    pub grpc_samples_per_second: f64,
    /// Both clients' samples over the wall time of their concurrent calls.
    pub grpc_two_clients_samples_per_second: f64,
    /// `1 − in_process_seconds / grpc_seconds`: the share of a gRPC call's time the hop adds.
    pub grpc_overhead_share: f64,
    pub in_process_seconds: f64,
    pub grpc_seconds: f64,
    /// The encoded `ScoreRequest`.
    pub request_bytes: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct RewardReport {
    pub scorer_version: String,
    pub components: Vec<String>,
    pub mean_clip_tokens: f64,
    pub rows: Vec<RewardRow>,
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

/// Times `iters` calls of `f` after one warm-up; the median.
async fn time_calls<F, Fut>(iters: usize, mut f: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    f().await?;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        let t = Instant::now();
        f().await?;
        times.push(t.elapsed());
    }
    Ok(median(times))
}

/// Measures scoring `clips[..b]` for every `b` of `batches` (each at most `clips.len()` and
/// `reward.max_batch`).
pub fn run(
    config: &Config,
    clips: Vec<ScoreInput>,
    batches: &[usize],
    iters: usize,
) -> anyhow::Result<RewardReport> {
    let too_big: Vec<usize> = batches
        .iter()
        .copied()
        .filter(|&b| b > clips.len() || b > config.reward.max_batch)
        .collect();
    anyhow::ensure!(
        too_big.is_empty(),
        "reward workload: batch {too_big:?} exceeds the {} clips sampled or reward.max_batch ({})",
        clips.len(),
        config.reward.max_batch
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let model = musicrl_reward::RewardModel::from_config(&config.reward)?;
        let components: Vec<String> = model.components().into_iter().map(|c| c.name).collect();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(musicrl_reward::serve(config.clone(), listener, async {
            let _ = stop_rx.await;
        }));
        let connect = || async {
            for _ in 0..100 {
                if let Ok(c) = RewardServiceClient::connect(url.clone()).await {
                    return Ok(c);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            anyhow::bail!("the bench's reward server at {url} did not answer")
        };
        let clients = [connect().await?, connect().await?];

        let mut rows = Vec::new();
        for &b in batches {
            let inputs = &clips[..b];
            let request = wire::score_request_to_wire(inputs);
            let request_bytes = prost::Message::encoded_len(&request);
            let in_process = time_calls(iters, || async {
                model.score(inputs).await?;
                Ok(())
            })
            .await?;
            let call = |mut client: RewardServiceClient<tonic::transport::Channel>| {
                let request = request.clone();
                async move {
                    let response = client.score(request).await?.into_inner();
                    wire::score_response_from_wire(response, b)?;
                    anyhow::Ok(())
                }
            };
            let grpc = time_calls(iters, || call(clients[0].clone())).await?;
            let both = time_calls(iters, || async {
                let (x, y) = tokio::join!(call(clients[0].clone()), call(clients[1].clone()));
                x?;
                y
            })
            .await?;
            let row = RewardRow {
                batch: b,
                in_process_samples_per_second: b as f64 / in_process.as_secs_f64(),
                grpc_samples_per_second: b as f64 / grpc.as_secs_f64(),
                grpc_two_clients_samples_per_second: 2.0 * b as f64 / both.as_secs_f64(),
                grpc_overhead_share: 1.0 - in_process.as_secs_f64() / grpc.as_secs_f64(),
                in_process_seconds: in_process.as_secs_f64(),
                grpc_seconds: grpc.as_secs_f64(),
                request_bytes,
            };
            eprintln!(
                "reward scoring (batch {b:>3}): in process {:>7.1} samples/s, gRPC {:>7.1} ({:+.1}% time), two clients {:>7.1}",
                row.in_process_samples_per_second,
                row.grpc_samples_per_second,
                100.0 * (grpc.as_secs_f64() / in_process.as_secs_f64() - 1.0),
                row.grpc_two_clients_samples_per_second
            );
            rows.push(row);
        }
        let _ = stop_tx.send(());
        server.await??;
        Ok(RewardReport {
            scorer_version: model.scorer_version(),
            components,
            mean_clip_tokens: clips.iter().map(|c| c.tokens.len()).sum::<usize>() as f64
                / clips.len().max(1) as f64,
            rows,
        })
    })
}
