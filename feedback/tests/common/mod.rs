//! A feedback service on `127.0.0.1:0` over a SQLite file, with a tiny random policy as its
//! pair source, and a raw HTTP helper for requests the bot client would never send.

#![allow(dead_code)]

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::http::{self, HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use musicrl_config::{FeedbackConfig, PolicyConfig};
use musicrl_feedback::session::Secret;
use musicrl_feedback::source::{Model, PairSource};
use musicrl_policy::melody::{Engine, Policy};
use musicrl_prefdb::Db;

pub fn tiny_policy() -> PolicyConfig {
    PolicyConfig {
        max_tokens: 48,
        d_model: 16,
        n_heads: 2,
        n_layers: 1,
        d_ff: 32,
        ..PolicyConfig::default()
    }
}

pub struct Service {
    pub addr: SocketAddr,
    pub db: Db,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Service {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.expect("joins").expect("serves cleanly");
        self.db.close().await;
    }
}

/// A MusicGen pair source over the tiny fixture (4 codebooks of 32 codes; clips of `frames`
/// frames, 50 a second), heard through the graded test codec (its codebooks differ, unlike
/// the fixture folder's own, which decodes every clip to the same sound); the prompts are
/// written into `dir`.
pub fn musicgen_source(f: &FeedbackConfig, frames: usize, dir: &std::path::Path) -> PairSource {
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy/tests/fixtures");
    let prompts = dir.join("prompts.txt");
    std::fs::write(&prompts, "lo-fi piano\nambient pads\n").expect("writes");
    let f = FeedbackConfig {
        prompts,
        source: "policy".into(),
        ..f.clone()
    };
    let policy = PolicyConfig {
        family: "musicgen".into(),
        folder: fixtures.join("musicgen/tiny"),
        frames,
        vocab_size: 32,
        max_tokens: 4 * frames,
        end_token: 32,
        ..PolicyConfig::default()
    };
    PairSource::from_config(
        &f,
        &policy,
        std::path::Path::new("unused-for-musicgen"),
        1.0,
        Some(&fixtures.join("encodec/tiny-graded")),
    )
    .expect("a MusicGen source")
}

/// The graded test codec `musicgen_source` decodes with.
pub fn musicgen_codec() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../policy/tests/fixtures/encodec/tiny-graded")
}

/// Starts the service with `f` (its listen address is ignored: the listener is bound here).
pub async fn start(f: FeedbackConfig) -> Service {
    start_scored(f, None).await
}

/// As [`start`], every clip scored by `scorer`.
pub async fn start_scored(
    f: FeedbackConfig,
    scorer: Option<musicrl_scoring::RewardModel>,
) -> Service {
    start_on(f, scorer, None).await
}

/// As [`start_scored`], on the database at `url` (a SQLite file in the service's folder
/// when None).
pub async fn start_on(
    f: FeedbackConfig,
    scorer: Option<musicrl_scoring::RewardModel>,
    url: Option<&str>,
) -> Service {
    let config = tiny_policy();
    let device = musicrl_policy::device::inference_device();
    device.seed(5);
    let policy = Policy::new(&config, &device);
    let engine = Engine::from_policy(&policy, &config, 1).expect("an engine");
    let source = PairSource::new(
        vec![Model::new("tiny", engine)],
        false,
        vec![
            "a lively jig in d major".into(),
            "a slow air in e minor, flute".into(),
        ],
        1.0,
        9,
    )
    .expect("a source");
    start_source(f, scorer, url, source).await
}

/// As [`start_on`], drawing pairs from `source`.
pub async fn start_source(
    f: FeedbackConfig,
    scorer: Option<musicrl_scoring::RewardModel>,
    url: Option<&str>,
    source: PairSource,
) -> Service {
    let dir = tempfile::tempdir().expect("a temp dir");
    let url = url.map_or_else(
        || format!("sqlite:{}", dir.path().join("feedback.db").display()),
        str::to_string,
    );
    let db = Db::open(&url).await.expect("opens the database");
    let state = musicrl_feedback::state(
        db.clone(),
        source,
        &dir.path().join("clips"),
        Secret::from_bytes(&[7u8; 40]).expect("a secret"),
        &f,
        scorer,
    )
    .expect("state");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let addr = listener.local_addr().expect("an address");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(musicrl_feedback::serve(
        listener,
        state,
        f.max_body_bytes,
        async move {
            let _ = rx.await;
        },
    ));
    Service {
        addr,
        db,
        dir,
        stop: Some(tx),
        task,
    }
}

/// One raw request; returns status, headers and body.
pub async fn raw(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> (StatusCode, HeaderMap, Bytes) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(body.into())).expect("a request"))
        .await
        .expect("the server answers");
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = resp.into_body().collect().await.expect("a body").to_bytes();
    (status, headers, body)
}

/// The `error` message of a JSON error body.
pub fn error_of(body: &Bytes) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("not a JSON error: {}", String::from_utf8_lossy(body)))
}
