//! `musicrl bench --workloads broadcast`: the parameter broadcast of a large synthetic
//! policy (d_model 1024, 8 layers: 101 M parameters by default), measured three ways.
//!
//! - **publish**: what publishing costs the training thread (the hand-off to the publisher
//!   thread) and how long the publisher takes to serialise and checksum a version;
//! - **learner stream**: a real learner (`musicrl_learner::run::serve` on loopback, serving
//!   its version 0) streaming the version to a subscriber that reassembles and verifies it
//!   exactly as an actor does;
//! - **raw stream**: the ceiling: a bare tonic server streaming the same chunks, prebuilt,
//!   to a client that only counts the bytes;
//! - **bf16**: the same version from the same learner in the compact wire form (the first
//!   subscriber's transfer includes the learner making it), and what decoding each form into
//!   a policy costs the actor.
//!
//! Rates are MiB of parameter bytes per second, medians of `--iters` transfers after one
//! warm-up.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use musicrl_common::wire::ChunkAssembler;
use musicrl_config::Config;
use musicrl_config::PolicyConfig;
use musicrl_policy::melody::params::{ParameterBlob, ParameterEncoding};
use musicrl_proto::v1 as pb;
use musicrl_proto::v1::learner_service_client::LearnerServiceClient;
use musicrl_proto::v1::learner_service_server::{LearnerService, LearnerServiceServer};

#[derive(Debug, Clone, Serialize)]
pub struct BroadcastReport {
    pub policy: PolicyConfig,
    pub parameters: usize,
    pub blob_bytes: usize,
    pub chunk_bytes: usize,
    /// Training-thread time to hand a version to the publisher (median).
    pub handoff_seconds: f64,
    /// Publisher-thread time to serialise and checksum a version (median).
    pub encode_seconds: f64,
    /// One learner update at this size, from the learner FLOP model and the rate the
    /// default policy's update reached in this run (an estimate: the update itself is not
    /// run at this size).
    pub estimated_step_seconds: Option<f64>,
    /// `handoff_seconds / estimated_step_seconds`.
    pub handoff_share_of_step: Option<f64>,
    pub learner_stream_mib_per_second: f64,
    pub raw_stream_mib_per_second: f64,
    /// `learner / raw`.
    pub learner_share_of_raw: f64,
    /// The same version in the compact form (bf16 safetensors).
    pub bf16_blob_bytes: usize,
    /// The first bf16 subscriber's whole transfer, including the learner making the form.
    pub bf16_first_version_seconds: f64,
    /// A whole version, subscribe to verified, median after the first: f32 and bf16.
    pub f32_version_seconds: f64,
    pub bf16_version_seconds: f64,
    /// Decoding a received version into a policy on the actor's device.
    pub f32_decode_seconds: f64,
    pub bf16_decode_seconds: f64,
    pub learner_stream_seconds: Vec<f64>,
    pub raw_stream_seconds: Vec<f64>,
    pub bf16_stream_seconds: Vec<f64>,
}

/// The synthetic policy: the default's vocabulary and lengths, `d_model` wide, `layers`
/// deep, d_ff = 4 · d_model.
pub fn synthetic_policy(base: &PolicyConfig, d_model: usize, layers: usize) -> PolicyConfig {
    PolicyConfig {
        d_model,
        n_heads: (d_model / 128).max(1),
        n_layers: layers,
        d_ff: 4 * d_model,
        ..base.clone()
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// A bare LearnerService whose only method streams prebuilt chunks.
struct RawStream {
    chunks: Arc<Vec<pb::ParameterChunk>>,
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::ParameterChunk, Status>> + Send>>;

#[tonic::async_trait]
impl LearnerService for RawStream {
    async fn push_trajectories(
        &self,
        _: Request<Streaming<pb::Trajectory>>,
    ) -> Result<Response<pb::PushSummary>, Status> {
        Err(Status::unimplemented(
            "the raw-stream bench server only streams chunks",
        ))
    }

    type SubscribeParametersStream = ChunkStream;

    async fn subscribe_parameters(
        &self,
        _: Request<pb::SubscribeRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let chunks = self.chunks.clone();
        let stream = tokio_stream::iter((0..chunks.len()).map(move |i| Ok(chunks[i].clone())));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Err(Status::unimplemented(
            "the raw-stream bench server only streams chunks",
        ))
    }
}

async fn client(url: &str) -> anyhow::Result<LearnerServiceClient<tonic::transport::Channel>> {
    Ok(LearnerServiceClient::connect(url.to_string())
        .await?
        .max_decoding_message_size(8 << 20))
}

/// One whole version through `url` in `encoding`, reassembled and verified (the actor's
/// path).
pub(super) async fn receive_version(
    url: &str,
    encoding: ParameterEncoding,
) -> anyhow::Result<(Duration, ParameterBlob)> {
    let mut c = client(url).await?;
    let started = Instant::now();
    let mut stream = c
        .subscribe_parameters(pb::SubscribeRequest {
            actor_id: "bench".into(),
            encoding: musicrl_common::wire::encoding_to_wire(encoding) as i32,
        })
        .await?
        .into_inner();
    let mut assembler = ChunkAssembler::new(usize::MAX);
    while let Some(chunk) = stream.next().await {
        if let Some(blob) = assembler.push(chunk?)? {
            anyhow::ensure!(
                blob.encoding == encoding,
                "asked for {encoding}, got {}",
                blob.encoding
            );
            return Ok((started.elapsed(), blob));
        }
    }
    anyhow::bail!("the learner's stream ended before a whole version")
}

/// [`receive_version`]; on the `first` call of a run, retried until the learner answers.
pub(super) async fn receive_version_once_up(
    url: &str,
    encoding: ParameterEncoding,
    first: bool,
) -> anyhow::Result<(Duration, ParameterBlob)> {
    loop {
        match receive_version(url, encoding).await {
            Ok(received) => return Ok(received),
            Err(e) if first => {
                tracing::debug!(error = %e, "learner not up yet");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// One whole raw stream, bytes counted only.
async fn receive_raw(url: &str, want: usize) -> anyhow::Result<Duration> {
    let mut c = client(url).await?;
    let started = Instant::now();
    let mut stream = c
        .subscribe_parameters(pb::SubscribeRequest {
            actor_id: "bench".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut got = 0;
    while let Some(chunk) = stream.next().await {
        got += chunk?.data.len();
    }
    anyhow::ensure!(got == want, "raw stream carried {got} bytes of {want}");
    Ok(started.elapsed())
}

pub fn run(
    config: &Config,
    policy: PolicyConfig,
    iters: usize,
    learner_gflops: Option<f64>,
) -> anyhow::Result<BroadcastReport> {
    let mut config = config.clone();
    config.policy = policy.clone();
    config.learner.init_policy = Default::default();
    config.learner.reference_policy = Default::default();
    config.learner.steps = 0;
    config.learner.metrics_listen = String::new();
    config.learner.health_listen = String::new();
    config.learner.history_path = Default::default();
    config.learner.trajectory_log = Default::default();
    config.run.name = String::new();
    let dir = std::env::temp_dir().join(format!("musicrl-bench-broadcast-{}", std::process::id()));
    config.learner.checkpoint_dir = dir.clone();
    let chunk_bytes = config.learner.chunk_bytes;
    let iters = iters.max(1);

    // Publish: the hand-off and the encode, on a trainer of this size.
    let device = musicrl_policy::device::training_device();
    eprintln!(
        "broadcast: building a d_model {} x {} layer policy",
        policy.d_model, policy.n_layers
    );
    let trainer = musicrl_learner::trainer::Trainer::new(&config, &device)?;
    let (tx, mut rx) = tokio::sync::watch::channel(None);
    let publisher = musicrl_learner::publish::Publisher::spawn(
        tx,
        policy.clone(),
        config.sampling.temperature,
        1,
    )?;
    let mut handoffs = Vec::new();
    let mut encodes = Vec::new();
    for _ in 0..=iters {
        let started = Instant::now();
        publisher.publish(&trainer, false);
        handoffs.push(started.elapsed().as_secs_f64());
        // Wait for the publisher to put it out.
        while !rx.has_changed().unwrap_or(true) {
            std::thread::sleep(Duration::from_micros(200));
        }
        rx.borrow_and_update();
        encodes.push(started.elapsed().as_secs_f64());
    }
    publisher.finish();
    let blob: Arc<ParameterBlob> = rx
        .borrow()
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the publisher published nothing"))?;
    let parameters = {
        use burn::module::Module;
        trainer.policy().num_params()
    };
    drop(trainer);
    let (handoff, encode) = (
        median(handoffs[1..].to_vec()),
        median(encodes[1..].to_vec()),
    );
    eprintln!(
        "publish: hand-off {:.6} s on the training thread, encode {:.3} s on the publisher ({} parameters, {:.1} MiB)",
        handoff,
        encode,
        parameters,
        blob.bytes.len() as f64 / (1 << 20) as f64
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (learner_times, raw_times, bf16_times, bf16_blob) = runtime.block_on(async {
        // The real learner, serving its version 0.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let learner = tokio::spawn(musicrl_learner::run::serve(
            config.clone(),
            listener,
            async {
                let _ = stop_rx.await;
            },
        ));
        let mut learner_times = Vec::new();
        for i in 0..=iters {
            let (t, _) = receive_version_once_up(&url, ParameterEncoding::F32, i == 0).await?;
            learner_times.push(t.as_secs_f64());
        }
        // The compact form: the first subscriber's transfer includes the learner making it
        // (once per version); the others get the form already made.
        let mut bf16_times = Vec::new();
        let mut bf16_blob = None;
        for _ in 0..=iters {
            let (t, b) = receive_version(&url, ParameterEncoding::Bf16).await?;
            bf16_times.push(t.as_secs_f64());
            bf16_blob = Some(b);
        }
        let _ = stop_tx.send(());
        let _ = learner.await;

        // The raw ceiling: the same chunks, prebuilt.
        let chunks: Vec<pb::ParameterChunk> =
            musicrl_common::wire::blob_to_chunks(&blob, chunk_bytes).collect();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let raw_url = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(LearnerServiceServer::new(RawStream {
                    chunks: Arc::new(chunks),
                }))
                .serve_with_incoming(musicrl_common::grpc::incoming(listener)),
        );
        let mut raw_times = Vec::new();
        for _ in 0..=iters {
            raw_times.push(receive_raw(&raw_url, blob.bytes.len()).await?.as_secs_f64());
        }
        server.abort();
        anyhow::Ok((learner_times, raw_times, bf16_times, bf16_blob))
    })?;
    let bf16_blob = bf16_blob.ok_or_else(|| anyhow::anyhow!("no bf16 version received"))?;
    // What the actor does with each form before it can sample: decode on its device.
    let inference = musicrl_policy::device::inference_device();
    let decode = |b: &ParameterBlob| -> anyhow::Result<f64> {
        let started = Instant::now();
        b.to_policy(&inference)?;
        Ok(started.elapsed().as_secs_f64())
    };
    let f32_decode_seconds = decode(&blob)?;
    let bf16_decode_seconds = decode(&bf16_blob)?;
    let _ = std::fs::remove_dir_all(&dir);

    let mib = blob.bytes.len() as f64 / (1 << 20) as f64;
    let learner_rate = mib / median(learner_times[1..].to_vec());
    let raw_rate = mib / median(raw_times[1..].to_vec());
    let estimated_step_seconds = learner_gflops.map(|g| {
        super::workload_flops(
            &policy,
            "learner",
            config.learner.batch_size,
            policy.max_tokens,
        ) / (g * 1e9)
    });
    let report = BroadcastReport {
        parameters,
        blob_bytes: blob.bytes.len(),
        chunk_bytes,
        handoff_seconds: handoff,
        encode_seconds: encode,
        estimated_step_seconds,
        handoff_share_of_step: estimated_step_seconds.map(|s| handoff / s),
        learner_stream_mib_per_second: learner_rate,
        raw_stream_mib_per_second: raw_rate,
        learner_share_of_raw: learner_rate / raw_rate,
        bf16_blob_bytes: bf16_blob.bytes.len(),
        bf16_first_version_seconds: bf16_times[0],
        bf16_version_seconds: median(bf16_times[1..].to_vec()),
        f32_version_seconds: median(learner_times[1..].to_vec()),
        f32_decode_seconds,
        bf16_decode_seconds,
        learner_stream_seconds: learner_times,
        raw_stream_seconds: raw_times,
        bf16_stream_seconds: bf16_times,
        policy,
    };
    eprintln!(
        "broadcast: learner stream {:.0} MiB/s, raw tonic stream {:.0} MiB/s ({:.0}% of raw)",
        report.learner_stream_mib_per_second,
        report.raw_stream_mib_per_second,
        100.0 * report.learner_share_of_raw
    );
    eprintln!(
        "broadcast: a version as f32 {:.1} MiB in {:.3} s (+{:.3} s to decode); as bf16 {:.1} MiB in {:.3} s (+{:.3} s to decode; the first subscriber's {:.3} s includes making the bf16 form)",
        mib,
        report.f32_version_seconds,
        f32_decode_seconds,
        report.bf16_blob_bytes as f64 / (1 << 20) as f64,
        report.bf16_version_seconds,
        bf16_decode_seconds,
        report.bf16_first_version_seconds
    );
    Ok(report)
}
