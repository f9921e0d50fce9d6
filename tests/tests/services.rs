//! Each RPC against bad input: the answer is INVALID_ARGUMENT with a message naming the
//! problem, and the server keeps serving the next good request. Plus health, the chunked
//! parameter broadcast, and the learner's refusal of versions it never published.

use std::time::Duration;

use futures::StreamExt;
use tonic::Code;

use musicrl_common::wire::ChunkAssembler;
use musicrl_config::Config;
use musicrl_proto::v1 as pb;
use musicrl_proto::v1::learner_service_client::LearnerServiceClient;
use musicrl_proto::v1::reward_service_client::RewardServiceClient;
use musicrl_tests::{start_learner, start_reward_server, tiny_config};

fn sample(tokens: Vec<u32>) -> pb::Sample {
    pb::Sample {
        caption: "a lively reel in d major".into(),
        tokens,
        audio: None,
    }
}

fn good_tokens(config: &Config) -> Vec<u32> {
    (0..config.policy.max_tokens as u32)
        .map(|i| i % config.policy.vocab_size as u32)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_rejects_bad_batches_and_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = tiny_config(dir.path());
    let server = start_reward_server(&config).await;
    let mut client = RewardServiceClient::connect(server.url())
        .await
        .expect("connect");
    let good = good_tokens(&config);
    let vocab = config.policy.vocab_size as u32;
    let max = config.policy.max_tokens;

    let cases: Vec<(&str, Vec<pb::Sample>, &str)> = vec![
        ("empty batch", vec![], "empty"),
        (
            "oversized batch",
            vec![sample(good.clone()); config.reward.max_batch + 1],
            "exceeds",
        ),
        (
            "token out of range",
            vec![sample(good.clone()), sample(vec![1, vocab, 2])],
            "vocabulary",
        ),
        ("huge token id", vec![sample(vec![u32::MAX])], "vocabulary"),
        ("no tokens", vec![sample(vec![])], "tokens"),
        ("too many tokens", vec![sample(vec![0; max + 1])], "tokens"),
        (
            "caption too long",
            vec![pb::Sample {
                caption: "x".repeat(10_000),
                tokens: good.clone(),
                audio: None,
            }],
            "caption",
        ),
    ];
    for (what, samples, needle) in cases {
        let err = client
            .score(pb::ScoreRequest { samples })
            .await
            .expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(
            err.message().contains(needle),
            "{what}: message {:?} should mention {needle:?}",
            err.message()
        );

        // Still serving.
        let ok = client
            .score(pb::ScoreRequest {
                samples: vec![sample(good.clone()), sample(vec![0, 1, 2, 3])],
            })
            .await
            .unwrap_or_else(|e| panic!("after {what} the server still answers: {e:?}"))
            .into_inner();
        assert_eq!(ok.scores.len(), 2);
        // token-fraction below 4: [0,1,2,3] scores 1, the good sequence 4 hits of 12.
        assert!((ok.scores[1].reward - 1.0).abs() < 1e-6);
        assert!(
            (ok.scores[0].reward - 4.0 / 12.0).abs() < 1e-6,
            "{:?}",
            ok.scores[0]
        );
        assert_eq!(ok.components.len(), 1);
        assert_eq!(ok.scores[0].components.len(), 1);
        assert!(!ok.scorer_version.is_empty());
    }

    let info = client
        .info(pb::InfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.vocab_size, vocab);
    assert_eq!(info.max_tokens as usize, max);

    assert_eq!(
        musicrl_tests::health_status(&server.url(), "musicrl.v1.RewardService").await,
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    server.stop().await.expect("clean stop");
}

/// The next test trajectory's sequence number: every trajectory built here has its own id.
static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn trajectory(config: &Config, version: u64) -> pb::Trajectory {
    let tokens = good_tokens(config);
    pb::Trajectory {
        actor_run: 0x5eed,
        sequence: SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        learner_run: 0,
        reward_seal: None,
        actor_id: "test-actor".into(),
        policy_version: version,
        caption: "a slow air".into(),
        behaviour_logprobs: vec![-1.5; tokens.len()],
        tokens,
        reward: 0.5,
        components: vec![pb::ComponentScore {
            name: "token-fraction".into(),
            value: 0.5,
            windows: vec![0.4, 0.6],
        }],
        scorer_version: "test".into(),
    }
}

async fn push(
    client: &mut LearnerServiceClient<tonic::transport::Channel>,
    items: Vec<pb::Trajectory>,
) -> Result<pb::PushSummary, tonic::Status> {
    client
        .push_trajectories(tokio_stream::iter(items))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_rejects_malformed_trajectories_and_keeps_serving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = tiny_config(dir.path());
    config.learner.steps = 0; // serve until stopped
    config.learner.max_push = 16;
    config.learner.batch_size = 64; // never trains in this test
    config.learner.queue_capacity = 64;
    let learner = start_learner(&config).await;
    let mut client = LearnerServiceClient::connect(learner.url())
        .await
        .expect("connect");
    let vocab = config.policy.vocab_size as u32;

    let mut cases: Vec<(&str, Vec<pb::Trajectory>, &str)> = vec![("empty push", vec![], "empty")];
    let mut bad = |what: &'static str, needle: &'static str, f: &dyn Fn(&mut pb::Trajectory)| {
        let mut t = trajectory(&config, 0);
        f(&mut t);
        // A good trajectory first: the push is refused as a whole.
        cases.push((what, vec![trajectory(&config, 0), t], needle));
    };
    bad("token out of range", "token_out_of_range", &|t| {
        t.tokens[3] = vocab
    });
    bad("empty tokens", "bad_length", &|t| {
        t.tokens.clear();
        t.behaviour_logprobs.clear();
    });
    bad("too many tokens", "bad_length", &|t| {
        t.tokens.push(0);
        t.behaviour_logprobs.push(-1.0);
    });
    bad("mismatched log-probabilities", "length_mismatch", &|t| {
        t.behaviour_logprobs.pop();
    });
    bad("NaN reward", "non_finite_reward", &|t| t.reward = f32::NAN);
    bad("infinite reward", "non_finite_reward", &|t| {
        t.reward = f32::INFINITY
    });
    bad("NaN log-probability", "bad_logprob", &|t| {
        t.behaviour_logprobs[0] = f32::NAN
    });
    bad("positive log-probability", "bad_logprob", &|t| {
        t.behaviour_logprobs[0] = 0.7
    });
    bad("NaN window score", "bad_component", &|t| {
        t.components[0].windows[1] = f32::NAN
    });
    bad("too many window scores", "bad_component", &|t| {
        t.components[0].windows = vec![0.5; 65]
    });
    bad("NaN component", "bad_component", &|t| {
        t.components[0].value = f32::NAN
    });
    cases.push((
        "oversized push",
        (0..17).map(|_| trajectory(&config, 0)).collect::<Vec<_>>(),
        "push_too_large",
    ));

    for (what, items, needle) in cases {
        let err = push(&mut client, items).await.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(
            err.message().contains(needle),
            "{what}: message {:?} should mention {needle:?}",
            err.message()
        );
        let status = client
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        assert_eq!(
            status.trajectories_accepted, 0,
            "{what}: nothing of a refused push is used"
        );
    }

    // Still serving: a good push is accepted; a trajectory from a version the learner never
    // published is refused with its reason.
    let summary = push(
        &mut client,
        vec![
            trajectory(&config, 0),
            trajectory(&config, 0),
            trajectory(&config, 7),
        ],
    )
    .await
    .expect("a good push");
    assert_eq!(summary.accepted, 2);
    assert_eq!(summary.rejected, 1);
    assert_eq!(summary.rejections[0].reason, "future_version");
    let status = client
        .status(pb::StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.trajectories_accepted, 2);
    assert_eq!(status.queue_depth, 2);

    // Subscribing with an absurd actor id is refused too.
    let err = client
        .subscribe_parameters(pb::SubscribeRequest {
            actor_id: "a".repeat(1000),
            ..Default::default()
        })
        .await
        .expect_err("long id");
    assert_eq!(err.code(), Code::InvalidArgument);
    // So is an encoding this learner does not know, by its number.
    let err = client
        .subscribe_parameters(pb::SubscribeRequest {
            actor_id: "probe".into(),
            encoding: 7,
        })
        .await
        .expect_err("unknown encoding");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("unknown parameter encoding 7"),
        "{}",
        err.message()
    );

    let outcome = learner.stop().await.expect("clean stop");
    assert_eq!(outcome.steps, 0);
    assert!(!outcome.completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_arrive_in_chunks_below_the_limit_and_reassemble() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = tiny_config(dir.path());
    config.learner.chunk_bytes = 4096;
    let learner = start_learner(&config).await;
    let mut client = LearnerServiceClient::connect(learner.url())
        .await
        .expect("connect");
    // The same version, as f32 and as bf16: both reassemble from chunks below the limit
    // and decode into a policy that samples; the bf16 form is about half the bytes and
    // holds every parameter within the declared 2^-8 of the f32 one.
    let mut blobs = Vec::new();
    for encoding in [
        pb::ParameterEncoding::BurnpackF32,
        pb::ParameterEncoding::SafetensorsBf16,
    ] {
        let mut stream = client
            .subscribe_parameters(pb::SubscribeRequest {
                actor_id: "probe".into(),
                encoding: encoding as i32,
            })
            .await
            .expect("subscribe")
            .into_inner();
        let mut assembler = ChunkAssembler::new(1 << 30);
        let mut chunks = 0;
        let blob = loop {
            let chunk = tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await
                .expect("a chunk in time")
                .expect("the stream stays open")
                .expect("a chunk");
            assert!(chunk.data.len() <= 4096);
            assert_eq!(
                chunk.encoding, encoding as i32,
                "every chunk says its encoding"
            );
            chunks += 1;
            if let Some(b) = assembler.push(chunk).expect("valid chunks") {
                break b;
            }
        };
        assert!(
            chunks > 1,
            "the tiny policy still spans several 4 KiB chunks"
        );
        assert_eq!(blob.version.0, 0);
        assert_eq!(blob.config, config.policy);
        let policy = blob
            .to_policy(&musicrl_policy::device::inference_device())
            .expect("decodes into a policy");
        let sampled = musicrl_policy::melody::sampling::Sampler::new(1, 1.0).sample(
            &policy,
            &config.policy,
            &["a jig"],
            config.policy.max_tokens,
            &musicrl_policy::device::inference_device(),
        );
        assert_eq!(sampled[0].tokens.len(), config.policy.max_tokens);
        drop(stream);
        blobs.push((blob, policy));
    }
    let (f32_blob, f32_policy) = &blobs[0];
    let (bf16_blob, bf16_policy) = &blobs[1];
    assert_eq!(
        bf16_blob.encoding,
        musicrl_policy::melody::params::ParameterEncoding::Bf16
    );
    assert!(
        bf16_blob.bytes.len() * 10 < f32_blob.bytes.len() * 6,
        "bf16 {} bytes, f32 {}",
        bf16_blob.bytes.len(),
        f32_blob.bytes.len()
    );
    let named = musicrl_policy::melody::safetensors::named_parameters;
    let tolerance = musicrl_policy::melody::safetensors::BF16_RELATIVE_ERROR;
    for ((name, _, a), (_, _, b)) in named(f32_policy).iter().zip(&named(bf16_policy)) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= x.abs() * tolerance, "{name}: {x} vs {y}");
        }
    }
    learner.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trajectory_log_records_provenance_and_a_mixed_scorer_batch_is_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = tiny_config(dir.path());
    config.learner.steps = 2;
    config.learner.batch_size = 4;
    config.learner.queue_capacity = 8;
    config.learner.value_warmup_steps = 0;
    config.learner.trajectory_log = dir.path().join("trajectories.jsonl");
    let learner = start_learner(&config).await;
    let mut client = LearnerServiceClient::connect(learner.url())
        .await
        .expect("connect");
    let with_scorer = |version: &str| {
        let mut t = trajectory(&config, 0);
        t.scorer_version = version.into();
        t
    };
    // Step 1: one scorer version. Step 2: two halves scored by different versions (as when a
    // reward server is replaced mid-run).
    let one = (0..4).map(|_| with_scorer("text@a")).collect::<Vec<_>>();
    assert_eq!(push(&mut client, one).await.expect("push").accepted, 4);
    let mut mixed = (0..2).map(|_| with_scorer("text@a")).collect::<Vec<_>>();
    mixed.extend((0..2).map(|_| with_scorer("text@b")).collect::<Vec<_>>());
    let pushed = push(&mut client, mixed).await;
    // The second push may race the end of step 1; either way its four trajectories are taken.
    assert_eq!(pushed.expect("push").accepted, 4);
    let outcome = learner.join().await.expect("learner finished");
    assert_eq!(outcome.steps, 2);
    assert_eq!(outcome.mixed_scorer_batches, 1);

    let history = std::fs::read_to_string(&config.learner.history_path).expect("history");
    let versions: Vec<u64> = history
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("JSON")["scorer_versions"]
                .as_u64()
                .expect("scorer_versions")
        })
        .collect();
    assert_eq!(versions, [1, 2], "step 2's batch mixed two scorer versions");

    let log = std::fs::read_to_string(&config.learner.trajectory_log).expect("trajectory log");
    let entries: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(entries.len(), 8, "every trained trajectory");
    assert_eq!(entries[0]["step"], 1);
    assert_eq!(entries[7]["step"], 2);
    assert_eq!(entries[7]["scorer_version"], "text@b");
    assert_eq!(entries[0]["actor"], "test-actor");
    assert_eq!(entries[0]["policy_version"], 0);
    assert_eq!(entries[0]["caption"], "a slow air");
    assert_eq!(entries[0]["components"][0][0], "token-fraction");
    let windows: Vec<f64> = entries[0]["windows"][0]
        .as_array()
        .expect("the component's window scores")
        .iter()
        .map(|w| w.as_f64().expect("a number"))
        .collect();
    assert_eq!(windows.len(), 2);
    assert!((windows[0] - 0.4).abs() < 1e-6 && (windows[1] - 0.6).abs() < 1e-6);
    assert_eq!(
        entries[0]["tokens"].as_array().expect("tokens").len(),
        config.policy.max_tokens,
        "the tiny config has no END: every token was trained on"
    );
}

/// Four well-formed, finite, absurd trajectories: rewards of ±1e19 (once enough to overflow
/// the loss and stop training).
fn absurd_batch(config: &Config) -> Vec<pb::Trajectory> {
    [1e19f32, -1e19, 1e19, -1e19]
        .into_iter()
        .map(|r| pb::Trajectory {
            reward: r,
            ..trajectory(config, 0)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_with_absurd_rewards_leaves_the_learner_training_and_healthy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = tiny_config(dir.path());
    config.learner.steps = 2;
    config.learner.batch_size = 4;
    config.learner.queue_capacity = 8;
    config.learner.value_warmup_steps = 0;
    let learner = start_learner(&config).await;
    let mut client = LearnerServiceClient::connect(learner.url())
        .await
        .expect("connect");
    // Well formed, finite, and absurd: rewards of ±1e19 once made the loss overflow to
    // infinity, and the learner stopped training.
    let batch = absurd_batch(&config);
    assert_eq!(push(&mut client, batch).await.expect("push").accepted, 4);
    // Ordinary trajectories after it are trained on: the run goes on.
    assert_eq!(
        push(
            &mut client,
            (0..4).map(|_| trajectory(&config, 0)).collect::<Vec<_>>()
        )
        .await
        .expect("push")
        .accepted,
        4
    );
    assert_eq!(
        musicrl_tests::health_status(&learner.url(), "").await,
        tonic_health::pb::health_check_response::ServingStatus::Serving,
        "the learner reports SERVING"
    );
    let outcome = learner
        .join()
        .await
        .expect("the learner finished its steps");
    assert_eq!(outcome.steps, 2);
    assert_eq!(outcome.batches_skipped, 0);
    let history = std::fs::read_to_string(&config.learner.history_path).expect("history");
    let first: serde_json::Value =
        serde_json::from_str(history.lines().next().expect("step 1")).expect("JSON");
    assert_eq!(first["rewards_clipped"], 4, "{first}");
    assert!(first["loss"].as_f64().expect("loss").is_finite());
    // The clipped rewards ±20 average to 0.
    assert!(
        first["reward_mean"].as_f64().expect("mean").abs() < 1e-3,
        "{first}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_that_would_be_non_finite_is_skipped_counted_and_training_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = tiny_config(dir.path());
    config.learner.steps = 1;
    config.learner.batch_size = 4;
    config.learner.queue_capacity = 8;
    config.learner.value_warmup_steps = 0;
    // No effective bound: the same absurd batch now overflows the loss.
    config.learner.reward_clip = f32::MAX;
    let learner = start_learner(&config).await;
    let mut client = LearnerServiceClient::connect(learner.url())
        .await
        .expect("connect");
    let batch = absurd_batch(&config);
    assert_eq!(push(&mut client, batch).await.expect("push").accepted, 4);
    assert_eq!(
        push(
            &mut client,
            (0..4).map(|_| trajectory(&config, 0)).collect::<Vec<_>>()
        )
        .await
        .expect("push")
        .accepted,
        4
    );
    let outcome = learner.join().await.expect("the learner finished its step");
    assert_eq!((outcome.steps, outcome.batches_skipped), (1, 1));
    let history = std::fs::read_to_string(&config.learner.history_path).expect("history");
    assert_eq!(
        history.lines().count(),
        1,
        "the skipped batch is not a step"
    );
}
