//! Helpers for the integration tests: tiny configurations and real servers on
//! `127.0.0.1:0`, each stoppable through its own shutdown channel.

use std::net::SocketAddr;
use std::path::Path;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use musicrl_config::Config;
use musicrl_config::{ComponentConfig, PolicyConfig};

/// The shipped RL prompt set (tests run from their crate's folder, not the repository's).
/// A training progress report that says nothing (the reward models' training in tests).
pub struct Quiet;

impl musicrl_rewards::text::Progress for Quiet {
    fn stage(&mut self, _: &str) {}
    fn epoch_started(&mut self, _: usize, _: usize) {}
    fn batch_done(&mut self, _: f64) {}
    fn epoch_done(&mut self, _: usize, _: f64) {}
}

pub fn prompts_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/prompts/train.txt")
}

/// A policy small enough that a test trains dozens of steps in seconds on 2 cores, with a
/// test-scorer reward whose random-policy mean is 4/16 = 0.25.
pub fn tiny_config(dir: &Path) -> Config {
    let mut c = Config::default();
    c.policy = PolicyConfig {
        vocab_size: 16,
        max_tokens: 12,
        d_model: 32,
        n_heads: 2,
        n_layers: 1,
        d_ff: 64,
        caption_buckets: 64,
        max_caption_words: 8,
        // No END (an id outside the vocabulary): every sequence runs to max_tokens, which
        // the token-fraction scorer's arithmetic assumes.
        end_token: 16,
        ..PolicyConfig::default()
    };
    c.learner.listen = "127.0.0.1:0".into();
    c.learner.metrics_listen = String::new();
    c.learner.batch_size = 8;
    c.learner.learning_rate = 0.01;
    // Short: these tests train a few dozen steps.
    c.learner.value_warmup_steps = 2;
    c.learner.lr_warmup_steps = 0;
    c.learner.checkpoint_dir = dir.join("checkpoints");
    c.learner.checkpoint_every = 0;
    c.learner.history_path = dir.join("history.jsonl");
    c.learner.seed = 3;
    c.learner.init_policy = std::path::PathBuf::new();
    c.actor.batch_size = 8;
    c.actor.metrics_listen = String::new();
    c.actor.max_backoff_seconds = 0.2;
    c.actor.prompts = prompts_path();
    c.reward.listen = "127.0.0.1:0".into();
    c.reward.metrics_listen = String::new();
    c.reward.max_batch = 32;
    c.reward.components = vec![ComponentConfig {
        kind: "token-fraction".into(),
        target_below: 4,
        ..ComponentConfig::default()
    }];
    c
}

/// A server task with its address and its shutdown switch.
pub struct Running<T> {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    pub handle: JoinHandle<T>,
}

impl<T> Running<T> {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Resolves the server's shutdown future and waits for it to return.
    pub async fn stop(mut self) -> T {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.handle.await.expect("the server task does not panic")
    }

    /// Waits for the server to return by itself.
    pub async fn join(self) -> T {
        self.handle.await.expect("the server task does not panic")
    }
}

fn switch() -> (
    oneshot::Sender<()>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

/// The gRPC health status a server at `url` reports for `service` ("" = the server).
pub async fn health_status(
    url: &str,
    service: &str,
) -> tonic_health::pb::health_check_response::ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.to_string(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status()
}

async fn loopback() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let a = l.local_addr().expect("local addr");
    (l, a)
}

pub async fn start_reward_server(config: &Config) -> Running<musicrl_reward::Result<()>> {
    let (listener, addr) = loopback().await;
    let (stop, shutdown) = switch();
    let handle = tokio::spawn(musicrl_reward::serve(config.clone(), listener, shutdown));
    Running {
        addr,
        stop: Some(stop),
        handle,
    }
}

pub async fn start_learner(
    config: &Config,
) -> Running<musicrl_learner::Result<musicrl_learner::LearnerOutcome>> {
    let (listener, addr) = loopback().await;
    let (stop, shutdown) = switch();
    let handle = tokio::spawn(musicrl_learner::serve(config.clone(), listener, shutdown));
    Running {
        addr,
        stop: Some(stop),
        handle,
    }
}

pub fn start_actor(
    config: &Config,
    learner: &str,
    reward: &str,
    id: &str,
) -> Running<musicrl_actor::Result<musicrl_actor::ActorOutcome>> {
    let mut c = config.clone();
    c.actor.learner = learner.to_string();
    c.actor.reward = reward.to_string();
    let (stop, shutdown) = switch();
    let handle = tokio::spawn(musicrl_actor::run(c, id.to_string(), shutdown));
    Running {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        stop: Some(stop),
        handle,
    }
}

/// Reads `history.jsonl` as (step, reward_mean, kl) rows.
pub fn read_history(path: &Path) -> Vec<(u64, f32, f32)> {
    std::fs::read_to_string(path)
        .expect("history exists")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("history lines are JSON");
            (
                v["step"].as_u64().expect("step"),
                v["reward_mean"].as_f64().expect("reward_mean") as f32,
                v["kl"].as_f64().expect("kl") as f32,
            )
        })
        .collect()
}

pub fn mean(xs: &[f32]) -> f32 {
    xs.iter().sum::<f32>() / xs.len() as f32
}

/// A feedback service on loopback over a SQLite file in `dir`, with a tiny random policy as
/// its pair source and no listening requirement; returns its base URL and a stop switch.
pub async fn start_feedback(dir: &Path) -> (String, Running<std::io::Result<()>>) {
    use musicrl_feedback::source::{Model, PairSource};
    let url = format!("sqlite:{}", dir.join("feedback.db").display());
    let db = musicrl_prefdb::Db::open(&url)
        .await
        .expect("opens the database");
    let config = PolicyConfig {
        max_tokens: 24,
        d_model: 16,
        n_heads: 2,
        n_layers: 1,
        d_ff: 32,
        ..PolicyConfig::default()
    };
    let device = musicrl_policy::device::inference_device();
    let policy = musicrl_policy::melody::Policy::new(&config, &device);
    let engine =
        musicrl_policy::melody::Engine::from_policy(&policy, &config, 1).expect("an engine");
    let source = PairSource::new(
        vec![Model::new("tiny", engine)],
        false,
        vec!["a jig".into()],
        1.0,
        3,
    )
    .expect("a source");
    let f = musicrl_config::FeedbackConfig {
        min_listen_seconds: 0.0,
        ..musicrl_config::FeedbackConfig::default()
    };
    let state = musicrl_feedback::state(
        db,
        source,
        &dir.join("clips"),
        musicrl_feedback::session::Secret::random(),
        &f,
        None,
    )
    .expect("state");
    let (listener, addr) = loopback().await;
    let (stop, shutdown) = switch();
    let handle = tokio::spawn(musicrl_feedback::serve(
        listener,
        state,
        f.max_body_bytes,
        shutdown,
    ));
    (
        format!("http://{addr}"),
        Running {
            addr,
            stop: Some(stop),
            handle,
        },
    )
}
