//! The feedback service's `learner` source: its pairs follow a running RL job. Before any
//! broadcast a pair is refused with 503; while a learner trains, the clips record the
//! parameter version they were sampled from, and once training is over they come from the
//! final version. A MusicGen run with adapters is followed the same way: each version is the
//! adapters alone, merged over the folder's decoder, and the clips are codes.

use std::time::Duration;

use musicrl_tests::{start_actor, start_learner, start_reward_server, tiny_config};

const STEPS: u64 = 6;

async fn serve(
    config: &musicrl_config::Config,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let state = musicrl_feedback::state_from_config(config)
        .await
        .expect("the service starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(musicrl_feedback::serve(
        listener,
        state,
        config.feedback.max_body_bytes,
        async move {
            let _ = rx.await;
        },
    ));
    (url, tx, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_follow_the_learners_broadcast() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = tiny_config(dir.path());
    follow(config, dir.path(), None).await;
}

/// The tiny MusicGen fixture trained with adapters (`policy.lora`), rewarded by the share of
/// low codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn musicgen_pairs_follow_the_adapters_broadcast() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = tiny_config(dir.path());
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policy/tests/fixtures");
    config.policy = musicrl_config::PolicyConfig {
        family: "musicgen".into(),
        folder: fixtures.join("musicgen/tiny"),
        frames: 8,
        vocab_size: 32,
        max_tokens: 32,
        end_token: 32,
        lora: musicrl_config::LoraConfig {
            rank: 2,
            ..musicrl_config::LoraConfig::default()
        },
        ..config.policy
    };
    config.reward.codec = fixtures.join("encodec/tiny-graded");
    config.reward.components = vec![musicrl_config::ComponentConfig {
        kind: "token-fraction".into(),
        target_below: 8,
        ..musicrl_config::ComponentConfig::default()
    }];
    follow(config, dir.path(), Some(4)).await;
}

/// Follows a learner trained with `config`; `codebooks`: the clips' (None for melodies).
async fn follow(
    mut config: musicrl_config::Config,
    dir: &std::path::Path,
    codebooks: Option<usize>,
) {
    config.learner.steps = STEPS;
    config.feedback.source = "learner".into();
    config.feedback.score_clips = false;
    config.feedback.min_listen_seconds = 0.0;
    config.feedback.pairs_per_minute = 100_000;
    config.feedback.prompts = musicrl_tests::prompts_path();
    config.feedback.clip_cache = dir.join("clips");

    // No learner listening yet: the service starts, and refuses pairs with 503.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let nobody = format!("http://{}", closed.local_addr().expect("address"));
    drop(closed);
    let mut early = config.clone();
    early.feedback.learner = nobody;
    early.feedback.db = format!("sqlite:{}", dir.join("early.db").display());
    let (url, stop, task) = serve(&early).await;
    let mut bot = musicrl_feedback::bot::BotClient::new(&url);
    match bot.pair(0).await {
        Err(musicrl_feedback::bot::BotError::Refused {
            status, message, ..
        }) => {
            assert_eq!(status, 503, "{message}");
            assert!(message.contains("learner"), "{message}");
        }
        other => panic!("a pair before any broadcast: {other:?}"),
    }
    let _ = stop.send(());
    task.await.expect("joins").expect("stops cleanly");

    // A learner trains; the service follows it.
    let reward = start_reward_server(&config).await;
    let learner = start_learner(&config).await;
    config.feedback.learner = learner.url();
    let db_url = format!("sqlite:{}", dir.join("prefs.db").display());
    config.feedback.db = db_url.clone();
    let (url, stop, task) = serve(&config).await;
    let mut bot = musicrl_feedback::bot::BotClient::new(&url);
    // The first version (θ0, version 0) arrives on subscribing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let first = loop {
        match bot.pair(0).await {
            Ok(view) => break view,
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no pair from the learner's first broadcast: {e}"),
        }
    };
    assert!(!first.a.tokens.is_empty());
    assert_eq!(first.a.codebooks, codebooks);
    let actor = start_actor(&config, &learner.url(), &reward.url(), "actor-0");
    let outcome = tokio::time::timeout(Duration::from_secs(300), learner.join())
        .await
        .expect("the learner finishes")
        .expect("the learner succeeds");
    assert_eq!(outcome.policy_version, STEPS);
    tokio::time::timeout(Duration::from_secs(60), actor.join())
        .await
        .expect("the actor stops")
        .expect("the actor succeeds");
    // After training, pairs come from the final version (it may take a moment to load).
    let db = musicrl_prefdb::Db::open(&db_url).await.expect("opens");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let newest = loop {
        let view = bot.pair(0).await.expect("a pair");
        let pair = db.pair(&view.pair).await.expect("reads").expect("stored");
        let mut newest = Vec::new();
        for id in [&pair.clip_a, &pair.clip_b] {
            let c = db.clip(id).await.expect("reads").expect("stored");
            assert_eq!(c.codebooks, codebooks);
            newest.push((c.source, c.policy_version));
        }
        if newest.iter().all(|(_, v)| *v == Some(STEPS as i64))
            || tokio::time::Instant::now() > deadline
        {
            break newest;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        newest,
        vec![("learner".to_string(), Some(STEPS as i64)); 2],
        "the newest pair samples the final version"
    );
    db.close().await;
    let _ = stop.send(());
    task.await.expect("joins").expect("stops cleanly");
    reward.stop().await.expect("the reward server stops");
}
