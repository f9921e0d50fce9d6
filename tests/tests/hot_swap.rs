//! Hot swap: while a client sends Score calls without pause, a new preference model is
//! written over the checkpoint the reward server reads. Every call succeeds, each names one
//! scorer version, every sample of a call carries exactly that version's score (no call is
//! part old model, part new), and every call after the first answered by the new model is
//! answered by it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use musicrl_config::{ComponentConfig, PolicyConfig};
use musicrl_music::tokens;
use musicrl_proto::v1 as pb;
use musicrl_proto::v1::reward_service_client::RewardServiceClient;
use musicrl_rewards::preference::{self, Population, model};
use musicrl_tests::{Quiet, start_reward_server, tiny_config};

/// A tiny preference model trained on simulated choices, written to `out`.
fn train(dir: &Path, out: &Path, seed: u64) {
    let population = Population::new(8, 0.3, 1.0, 0.0, seed);
    let pairs: Vec<(String, Vec<u32>, Vec<u32>)> = (0..40u32)
        .map(|i| {
            let a: Vec<u32> = (0..8).map(|k| (i * 7 + k * 3) % 14 + 1).collect();
            let b: Vec<u32> = (0..6).map(|k| (i * 5 + k) % 14 + 1).collect();
            ("a jig".to_string(), a, b)
        })
        .collect();
    let store = dir.join(format!("store-{seed}.jsonl"));
    preference::append_store(
        &store,
        &preference::simulate_choices(&population, &pairs, 0, seed),
    )
    .expect("writes the store");
    let mut c = model::PreferenceConfig {
        policy: PolicyConfig {
            vocab_size: tokens::VOCAB_SIZE,
            max_tokens: 16,
            d_model: 16,
            n_heads: 2,
            n_layers: 1,
            d_ff: 32,
            caption_buckets: 64,
            max_caption_words: 8,
            ..PolicyConfig::default()
        },
        train: model::PreferenceTrainConfig::default(),
    };
    c.train.store = store;
    c.train.init_policy = PathBuf::new();
    c.train.seed = seed;
    c.train.learning_rate = 1e-2;
    model::train(&c, out, &mut Quiet).expect("trains");
}

fn request() -> pb::ScoreRequest {
    pb::ScoreRequest {
        samples: (0..6u32)
            .map(|i| pb::Sample {
                caption: "a jig".into(),
                tokens: (0..12).map(|k| (i * 3 + k) % 15 + 1).collect(),
                audio: None,
            })
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_preference_model_is_swapped_in_without_failing_or_mixing_a_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let live = dir.path().join("preference");
    let (v1_dir, v2_dir) = (dir.path().join("v1"), dir.path().join("v2"));
    train(dir.path(), &v1_dir, 1);
    train(dir.path(), &v2_dir, 2);
    std::fs::create_dir_all(&live).expect("mkdir");
    for f in ["model.bpk", "config.json", "metrics.json"] {
        std::fs::copy(v1_dir.join(f), live.join(f)).expect("copies v1");
    }
    // What each version scores the request's samples.
    let expected = |d: &Path| {
        let m = model::PreferenceModel::load(d).expect("loads");
        let req = request();
        let inputs: Vec<(&str, &[u32])> = req
            .samples
            .iter()
            .map(|s| (s.caption.as_str(), s.tokens.as_slice()))
            .collect();
        m.score(&inputs)
    };
    let (s1, s2) = (expected(&v1_dir), expected(&v2_dir));
    assert!(
        s1.iter().zip(&s2).any(|(a, b)| (a - b).abs() > 1e-4),
        "the two models must score differently for the test to mean anything"
    );

    let mut config = tiny_config(dir.path());
    config.reward.components = vec![ComponentConfig {
        kind: "preference".into(),
        checkpoint: live.clone(),
        ..ComponentConfig::default()
    }];
    config.reward.reload_seconds = 0.1;
    let server = start_reward_server(&config).await;
    let mut client = RewardServiceClient::connect(server.url())
        .await
        .expect("connects");

    let mut answers: Vec<(String, Vec<f32>)> = Vec::new();
    let started = Instant::now();
    let mut swapped_at: Option<usize> = None;
    let mut published = false;
    loop {
        let answer = client
            .score(request())
            .await
            .expect("every call succeeds, during the swap too")
            .into_inner();
        answers.push((
            answer.scorer_version.clone(),
            answer.scores.iter().map(|s| s.reward).collect(),
        ));
        if answers.len() == 10 && !published {
            // Publish v2 over the live checkpoint while calls keep coming.
            for f in ["model.bpk", "config.json", "metrics.json"] {
                let tmp = live.join(format!(".{f}.new"));
                std::fs::copy(v2_dir.join(f), &tmp).expect("copies v2");
                std::fs::rename(&tmp, live.join(f)).expect("renames into place");
            }
            published = true;
        }
        if swapped_at.is_none() && answers.len() > 1 && answer.scorer_version != answers[0].0 {
            swapped_at = Some(answers.len() - 1);
        }
        if swapped_at.is_some_and(|i| answers.len() >= i + 10) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the new model was not served within 60 s ({} calls)",
            answers.len()
        );
    }
    let swapped_at = swapped_at.expect("swapped");
    let (old, new) = (&answers[0].0, &answers[swapped_at].0);
    assert_ne!(old, new);
    for (i, (version, rewards)) in answers.iter().enumerate() {
        let want = if i < swapped_at { &s1 } else { &s2 };
        assert_eq!(version, if i < swapped_at { old } else { new }, "call {i}");
        for (got, want) in rewards.iter().zip(want) {
            assert!(
                (got - want).abs() < 1e-4,
                "call {i} ({version}): reward {got}, its version scores {want}"
            );
        }
    }
    server.stop().await.expect("serves cleanly");
}
