//! An audio-token policy heard through its codec: the reward server decodes each MusicGen
//! clip once with EnCodec's decoder, a remote audio model receives that audio at the rate it
//! asks for, cut into its windows, the built-in audio scorers hear the same audio, every audio
//! component's version names the codec, and a codec that does not fit the policy stops the
//! server before it serves.
// Test helpers unwrap too (the fake model's handler): a panic is the failure message.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use musicrl_config::{ComponentConfig, Config, PolicyConfig};
use musicrl_proto::v1 as pb;
use musicrl_proto::v1::reward_service_client::RewardServiceClient;
use musicrl_proto::v1::reward_service_server::{RewardService, RewardServiceServer};
use musicrl_tests::{Quiet, start_reward_server, tiny_config};

const FRAMES: usize = 50; // one second at the fixture codec's 50 frames a second
const RATE: u32 = 16_000;

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../policy/tests/fixtures")
        .join(path)
}

/// What the fake audio model received: (sample rate, samples) per sample.
type Received = Arc<Mutex<Vec<(u32, Vec<f32>)>>>;

/// A remote audio model standing in for CLAP or an aesthetics predictor: it answers with the
/// RMS level of the audio it is sent, and keeps what it received.
#[derive(Clone)]
struct FakeAudioModel {
    received: Received,
}

#[tonic::async_trait]
impl RewardService for FakeAudioModel {
    async fn score(
        &self,
        request: Request<pb::ScoreRequest>,
    ) -> Result<Response<pb::ScoreResponse>, Status> {
        let mut scores = Vec::new();
        for sample in request.into_inner().samples {
            let audio = sample
                .audio
                .ok_or_else(|| Status::invalid_argument("no audio"))?;
            let pcm: Vec<f32> = audio
                .pcm_s16le
                .chunks_exact(2)
                .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32767.0)
                .collect();
            let rms = (pcm.iter().map(|x| x * x).sum::<f32>() / pcm.len() as f32).sqrt();
            self.received.lock().unwrap().push((audio.sample_rate, pcm));
            scores.push(pb::SampleScore {
                reward: rms,
                components: vec![rms],
                windows: Vec::new(),
                seal: None,
            });
        }
        Ok(Response::new(pb::ScoreResponse {
            scores,
            components: vec![pb::Component {
                name: "rms".into(),
                version: "fake-rms-1".into(),
                weight: 1.0,
            }],
            scorer_version: "rms@fake-rms-1*1".into(),
        }))
    }

    async fn info(
        &self,
        _: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        Err(Status::unimplemented("not needed"))
    }
}

async fn start_fake() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received: Received = Arc::default();
    let service = FakeAudioModel {
        received: received.clone(),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                RewardServiceServer::new(service)
                    .accept_compressed(tonic::codec::CompressionEncoding::Gzip),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (format!("http://{addr}"), received)
}

fn musicgen_config(dir: &Path, codec: &str, components: Vec<ComponentConfig>) -> Config {
    let mut c = tiny_config(dir);
    c.policy = PolicyConfig {
        family: "musicgen".into(),
        folder: fixture("musicgen/tiny"),
        frames: FRAMES,
        vocab_size: 32,
        max_tokens: 4 * FRAMES,
        end_token: 32,
        ..c.policy
    };
    c.reward.codec = fixture(codec);
    c.reward.components = components;
    c
}

/// A clip of 4 codebooks × FRAMES codes drawn from `lo..hi`, row after row.
fn clip(lo: u32, hi: u32) -> Vec<u32> {
    (0..4 * FRAMES as u32)
        .map(|i| lo + (i * 7) % (hi - lo))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_musicgen_clip_is_heard_through_its_codec() {
    let dir = tempfile::tempdir().unwrap();
    let (endpoint, received) = start_fake().await;
    let remote = ComponentConfig {
        kind: "remote".into(),
        name: "clap-like".into(),
        endpoint,
        remote_component: "rms".into(),
        send_audio: true,
        sample_rate: RATE,
        // The paper's quality windows, scaled to a one-second clip: head and tail.
        windows: vec![[0.0, 0.4], [-0.4, 0.4]],
        ..ComponentConfig::default()
    };
    let loudness = ComponentConfig {
        kind: "loudness".into(),
        ..ComponentConfig::default()
    };
    let config = musicgen_config(dir.path(), "encodec/tiny-graded", vec![remote, loudness]);
    let server = start_reward_server(&config).await;
    let (quiet, loud) = (clip(0, 8), clip(24, 32));
    let request = pb::ScoreRequest {
        samples: [&quiet, &loud]
            .iter()
            .map(|tokens| pb::Sample {
                caption: "lo-fi piano".into(),
                tokens: tokens.to_vec(),
                audio: None,
            })
            .collect(),
    };
    let mut client = RewardServiceClient::connect(server.url()).await.unwrap();
    let answer = client.score(request).await.unwrap().into_inner();

    // Each clip was sent as its two windows, at the model's rate, 0.4 s each.
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 4);
    for (rate, pcm) in &got {
        assert_eq!(*rate, RATE);
        assert_eq!(pcm.len(), (0.4 * RATE as f32) as usize);
    }
    // The audio sent is the codec's decoding of the clip, resampled: the same numbers the
    // library makes (16-bit on the wire).
    let codec = musicrl_policy::encodec::Encodec::load(
        &fixture("encodec/tiny-graded"),
        &burn::tensor::Device::flex(),
    )
    .unwrap();
    let rows: Vec<Vec<u32>> = loud.chunks(FRAMES).map(<[u32]>::to_vec).collect();
    let decoded = codec.decode(&rows).unwrap().channels.remove(0);
    let heard = musicrl_rewards::resample::resample(&decoded, 1600, RATE).unwrap();
    let head = &got[2].1;
    let worst = head
        .iter()
        .zip(&heard)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "the remote heard something else: {worst}");

    // The component's score is the windows' mean, and each window is reported.
    let names: Vec<&str> = answer.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["clap-like", "loudness"]);
    for (score, received) in answer.scores.iter().zip(got.chunks(2)) {
        let windows = &score.windows[0].values;
        assert_eq!(windows.len(), 2);
        let mean = (windows[0] + windows[1]) / 2.0;
        assert!((score.components[0] - mean).abs() < 1e-6);
        let rms = |pcm: &[f32]| (pcm.iter().map(|x| x * x).sum::<f32>() / pcm.len() as f32).sqrt();
        assert!((windows[0] - rms(&received[0].1)).abs() < 1e-6);
    }
    // Higher codes are louder through this codec, to both the remote model and `loudness`.
    let (q, l) = (&answer.scores[0].components, &answer.scores[1].components);
    assert!(l[0] > 2.0 * q[0], "rms {} vs {}", l[0], q[0]);
    assert!(l[1] > q[1] + 0.1, "loudness {} vs {}", l[1], q[1]);
    // Every audio component's version names the codec that made what it heard.
    for c in &answer.components {
        assert!(c.version.contains("+encodec-"), "{c:?}");
    }
    assert!(answer.scorer_version.contains(codec.version()));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_codec_that_does_not_fit_the_policy_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let loudness = ComponentConfig {
        kind: "loudness".into(),
        ..ComponentConfig::default()
    };
    // tiny-causal has 3 codebooks of 32; the policy writes 4.
    let config = musicgen_config(dir.path(), "encodec/tiny-causal", vec![loudness.clone()]);
    let err = start_reward_server(&config)
        .await
        .join()
        .await
        .expect_err("refused");
    let message = err.to_string();
    assert!(
        message.contains("reward.codec")
            && message.contains("3 codebooks")
            && message.contains("4"),
        "{message}"
    );
    // A folder that is no codec at all is named.
    let config = musicgen_config(dir.path(), "nowhere", vec![loudness]);
    let err = start_reward_server(&config)
        .await
        .join()
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("nowhere"), "{err}");
}

/// The tiny MusicGen's clips of `frames` frames: 4 rows of codes below 32, row after row.
fn random_clip(rng: &mut rand::rngs::StdRng, frames: usize) -> Vec<u32> {
    use rand::RngExt;
    let low_share: f64 = rng.random();
    (0..4 * frames)
        .map(|_| {
            if rng.random::<f64>() < low_share {
                rng.random_range(0..8)
            } else {
                rng.random_range(8..32)
            }
        })
        .collect()
}

fn low_codes(clip: &[u32]) -> usize {
    clip.iter().filter(|&&c| c < 8).count()
}

/// Item 4 of "Hear it": the Bradley–Terry model trains on pairs of MusicGen clips (their audio
/// tokens), initialised from the policy's own decoder as the paper's was from MusicLM, learns
/// a listener who prefers the clip with more low codes, and scores MusicGen trajectories as a
/// `preference` component of a real reward server, as the library scores them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preference_model_learns_musicgen_pairs_and_the_reward_server_serves_it() {
    use musicrl_rewards::preference::model::{self, PreferenceConfig, PreferenceTrainConfig};
    use rand::SeedableRng;
    const F: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let captions = ["lo-fi piano", "a march for brass", "ambient pads"];
    let mut choices = Vec::new();
    while choices.len() < 160 {
        let (a, b) = (random_clip(&mut rng, F), random_clip(&mut rng, F));
        if low_codes(&a).abs_diff(low_codes(&b)) < 4 {
            continue;
        }
        let choice = if low_codes(&a) > low_codes(&b) {
            "a"
        } else {
            "b"
        };
        choices.push(musicrl_prefdb::Choice {
            caption: captions[choices.len() % 3].into(),
            a,
            b,
            choice: choice.into(),
            who: "web-1".into(),
            when: 1_800_000_000,
            codebooks: Some(4),
        });
    }
    let store = dir.path().join("store.jsonl");
    musicrl_prefdb::append_store(&store, &choices).unwrap();
    let mut config = musicgen_config(dir.path(), "encodec/tiny-graded", Vec::new());
    config.policy.frames = F;
    config.policy.max_tokens = 4 * F;
    let c = PreferenceConfig {
        policy: config.policy.clone(),
        train: PreferenceTrainConfig {
            store: store.clone(),
            init_policy: PathBuf::new(),
            epochs: 6,
            batch_size: 16,
            learning_rate: 3e-3,
            eval_every: 5,
            seed: 3,
            caption_free: false,
        },
    };
    let out = dir.path().join("preference");
    let (metrics, eval) = model::train(&c, &out, &mut Quiet).unwrap();
    eprintln!("{metrics:?}");
    assert_eq!((metrics.train_choices, metrics.eval_choices), (128, 32));
    assert_eq!(eval.len(), 32);
    assert!(
        metrics.accuracy >= 0.8,
        "held-out accuracy {} on 32 pairs",
        metrics.accuracy
    );
    let first = metrics.epochs[0].1;
    let last = metrics.epochs.last().unwrap().1;
    assert!(last < first, "the loss fell: {:?}", metrics.epochs);

    // Served: the reward server's `preference` component scores MusicGen trajectories as the
    // library does, and refuses tokens that are not this folder's rows with INVALID_ARGUMENT.
    let m = model::PreferenceModel::load(&out).unwrap();
    assert_eq!(m.codebooks(), Some(4));
    let (low, high) = (clip(0, 8)[..4 * F].to_vec(), clip(16, 32)[..4 * F].to_vec());
    let want = m
        .try_score(&[("lo-fi piano", &low), ("lo-fi piano", &high)])
        .unwrap();
    assert!(want[0] > want[1], "more low codes, higher: {want:?}");
    config.reward.components = vec![ComponentConfig {
        kind: "preference".into(),
        checkpoint: out.clone(),
        ..ComponentConfig::default()
    }];
    let server = start_reward_server(&config).await;
    let mut client = RewardServiceClient::connect(server.url()).await.unwrap();
    let sample = |tokens: &[u32]| pb::Sample {
        caption: "lo-fi piano".into(),
        tokens: tokens.to_vec(),
        audio: None,
    };
    let answer = client
        .score(pb::ScoreRequest {
            samples: vec![sample(&low), sample(&high)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.components[0].version, m.version);
    for (got, want) in answer.scores.iter().zip(&want) {
        assert!((got.components[0] - want).abs() < 1e-5, "{got:?} vs {want}");
    }
    let refused = client
        .score(pb::ScoreRequest {
            samples: vec![sample(&low[..4 * F - 1])],
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    server.stop().await.unwrap();
}
