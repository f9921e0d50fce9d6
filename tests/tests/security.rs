//! Issue 14's defects, each against real servers on loopback: authentication and roles,
//! forged and replayed rewards, duplicate trajectory ids, oversized messages, subscriber
//! caps, NOT_SERVING when the learner cannot train, and a whole secured loop (mutual TLS,
//! tokens, seals) in which training runs and the trajectory ledger balances.

use std::time::Duration;

use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use musicrl_config::Config;
use musicrl_proto::v1 as pb;
use musicrl_proto::v1::learner_service_client::LearnerServiceClient;
use musicrl_proto::v1::reward_service_client::RewardServiceClient;
use musicrl_security::pki;
use musicrl_tests::{start_actor, start_learner, start_reward_server, tiny_config};

static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn tokens(config: &Config) -> Vec<u32> {
    (0..config.policy.max_tokens as u32)
        .map(|i| i % config.policy.vocab_size as u32)
        .collect()
}

fn trajectory(config: &Config) -> pb::Trajectory {
    let tokens = tokens(config);
    pb::Trajectory {
        actor_id: "tester".into(),
        actor_run: 0xabc,
        sequence: SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        policy_version: 0,
        caption: "a slow air".into(),
        behaviour_logprobs: vec![-1.5; tokens.len()],
        tokens,
        reward: 0.5,
        components: vec![pb::ComponentScore {
            name: "token-fraction".into(),
            value: 0.5,
            windows: vec![],
        }],
        scorer_version: "test".into(),
        ..Default::default()
    }
}

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Some(t) = token {
        r.metadata_mut().insert(
            "authorization",
            format!("Bearer {t}").parse().expect("a token is ASCII"),
        );
    }
    r
}

async fn push(
    client: &mut LearnerServiceClient<tonic::transport::Channel>,
    items: Vec<pb::Trajectory>,
    token: Option<&str>,
) -> Result<pb::PushSummary, tonic::Status> {
    client
        .push_trajectories(with_token(tokio_stream::iter(items), token))
        .await
        .map(|r| r.into_inner())
}

fn token_of(written: &pki::Written, role: &str) -> String {
    written
        .tokens
        .iter()
        .find(|(r, _)| r == role)
        .map(|(_, t)| t.clone())
        .expect("role")
}

/// A channel to `localhost:port` over mutual TLS with the client certificate `written` holds.
async fn mutual_tls(written: &pki::Written, port: u16) -> tonic::transport::Channel {
    let read = |p: &std::path::Path| std::fs::read(p).expect("a credential file");
    Endpoint::from_shared(format!("https://localhost:{port}"))
        .expect("url")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(read(&written.config.tls_ca)))
                .identity(Identity::from_pem(
                    read(&written.config.tls_client_cert),
                    read(&written.config.tls_client_key),
                )),
        )
        .expect("tls")
        .connect()
        .await
        .expect("mutual TLS connects")
}

fn reasons(s: &pb::PushSummary) -> Vec<String> {
    s.rejections.iter().map(|r| r.reason.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_roles_seals_and_ids_are_enforced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let written = pki::init(&dir.path().join("pki"), &["localhost".into()]).expect("pki");
    let mut config = tiny_config(dir.path());
    config.learner.steps = 0; // until stopped
    config.security.tokens_file = written.config.tokens_file.clone();
    config.security.reward_keys_file = written.config.reward_keys_file.clone();
    let reward = start_reward_server(&config).await;
    let learner = start_learner(&config).await;
    let actor = token_of(&written, "actor");
    let operator = token_of(&written, "operator");
    let mut client = LearnerServiceClient::connect(learner.url())
        .await
        .expect("connect");

    // No token, an unknown token, a role that may not: refused, and nothing is counted.
    let e = push(&mut client, vec![trajectory(&config)], None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = push(
        &mut client,
        vec![trajectory(&config)],
        Some("not-a-token-at-all-0123"),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = push(&mut client, vec![trajectory(&config)], Some(&operator))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("operator"), "{e:?}");
    // An operator reads status but may not download the weights.
    let e = client
        .subscribe_parameters(with_token(pb::SubscribeRequest::default(), Some(&operator)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let status = client
        .status(with_token(pb::StatusRequest {}, Some(&operator)))
        .await
        .expect("an operator reads status")
        .into_inner();
    assert_eq!(status.accounting.expect("accounting").received, 0);
    let mut rewards = RewardServiceClient::connect(reward.url())
        .await
        .expect("connect");
    let e = rewards
        .score(with_token(pb::ScoreRequest::default(), None))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    // An actor's trajectory with a made-up reward and no seal: rejected by name.
    let s = push(&mut client, vec![trajectory(&config)], Some(&actor))
        .await
        .expect("push");
    assert_eq!(
        (s.accepted, reasons(&s)),
        (0, vec!["unsealed_reward".to_string()])
    );

    // A genuine score, sealed by the reward server, is accepted; the same trajectory with a
    // higher reward is a forgery; the genuine one pushed again is a duplicate.
    let genuine = scored_by(&mut rewards, trajectory(&config), Some(&actor)).await;
    assert!(
        genuine.reward_seal.is_some(),
        "the reward server seals its scores"
    );
    let forged = pb::Trajectory {
        reward: genuine.reward + 1.0,
        sequence: SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        ..genuine.clone()
    };
    let s = push(&mut client, vec![genuine.clone()], Some(&actor))
        .await
        .expect("push");
    assert_eq!((s.accepted, s.rejected), (1, 0), "{s:?}");
    let s = push(&mut client, vec![forged], Some(&actor))
        .await
        .expect("push");
    assert_eq!(
        (s.accepted, reasons(&s)),
        (0, vec!["forged_reward".to_string()])
    );
    let s = push(&mut client, vec![genuine.clone()], Some(&actor))
        .await
        .expect("push");
    assert_eq!((s.accepted, s.rejected, s.duplicates), (0, 0, 1), "{s:?}");
    // The genuine sealed score replayed under fresh trajectory ids (issue 35: 160 of 160
    // were once trained): each is refused as a replayed seal and counted.
    let replays: Vec<pb::Trajectory> = (0..3)
        .map(|_| pb::Trajectory {
            sequence: SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            ..genuine.clone()
        })
        .collect();
    let s = push(&mut client, replays, Some(&actor))
        .await
        .expect("push");
    assert_eq!(
        (s.accepted, reasons(&s)),
        (0, vec!["replayed_seal".to_string()]),
        "{s:?}"
    );
    assert_eq!(s.rejected, 3, "{s:?}");
    // A seal from another reward key is unknown.
    let mut other = genuine.clone();
    other.sequence = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    other.reward_seal.as_mut().expect("seal").key_id = "0000000000000000".into();
    let s = push(&mut client, vec![other], Some(&actor))
        .await
        .expect("push");
    assert_eq!(reasons(&s), vec!["unknown_seal_key".to_string()]);

    // The ledger: 9 pushed ids, the duplicate counted once; sampled counts the gaps up to
    // the highest sequence seen of this source.
    let status = client
        .status(with_token(pb::StatusRequest {}, Some(&operator)))
        .await
        .expect("status")
        .into_inner();
    let a = status.accounting.clone().expect("accounting");
    assert_eq!(a.received, 7, "{a:?}");
    assert_eq!(a.duplicates, 1, "{a:?}");
    assert_eq!(a.pending, 1, "{a:?}");
    let rejected: u64 = a.rejected.iter().map(|r| r.count).sum();
    assert_eq!(rejected, 6, "{a:?}");
    assert!(
        a.rejected
            .iter()
            .any(|r| r.reason == "replayed_seal" && r.count == 3),
        "{a:?}"
    );
    let lost: u64 = a.lost.iter().map(|r| r.count).sum();
    assert_eq!(a.sampled, a.received + lost, "{a:?}");
    assert!(status.serving && status.learner_run != 0, "{status:?}");

    let outcome = learner.stop().await.expect("learner");
    // The one queued trajectory was dropped at the stop, and the ledger balances.
    assert_eq!(
        outcome.accounting.dropped.get("shutdown"),
        Some(&1),
        "{:?}",
        outcome.accounting
    );
    assert_eq!(outcome.accounting.check(), Ok(()));
    reward.stop().await.expect("reward server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_and_extra_subscribers_are_refused_and_the_learner_serves_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = tiny_config(dir.path());
    config.learner.steps = 0;
    config.learner.max_subscribers = 1;
    let learner = start_learner(&config).await;
    let mut client = LearnerServiceClient::connect(learner.url())
        .await
        .expect("connect");
    // 4 MiB of tokens in one message: refused by the decoder before it is read, by size.
    let mut huge = trajectory(&config);
    huge.tokens = vec![1; 1 << 20];
    huge.behaviour_logprobs = vec![-1.0; 1 << 20];
    let e = push(&mut client, vec![huge], None).await.unwrap_err();
    assert!(
        matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{e:?}"
    );
    // One subscriber is served, a second is refused while the first stays.
    let mut first = client
        .subscribe_parameters(pb::SubscribeRequest::default())
        .await
        .expect("first subscriber")
        .into_inner();
    assert!(first.message().await.expect("a chunk").is_some());
    let e = client
        .subscribe_parameters(pb::SubscribeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    drop(first);
    // The slot frees when the first leaves.
    let mut second = None;
    for _ in 0..100 {
        if let Ok(s) = client
            .subscribe_parameters(pb::SubscribeRequest::default())
            .await
        {
            second = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(second.is_some(), "the slot was released");
    drop(second);
    // Still serving well-formed pushes.
    let s = push(&mut client, vec![trajectory(&config)], None)
        .await
        .expect("push");
    assert_eq!(s.accepted, 1);
    learner.stop().await.expect("learner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_that_cannot_train_says_not_serving_and_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = tiny_config(dir.path());
    config.learner.steps = 1;
    config.learner.batch_size = 2;
    config.learner.value_warmup_steps = 0;
    config.learner.exit_on_completion = false;
    // The probe port, plaintext, on its own listener.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let probe_addr = probe.local_addr().expect("addr");
    drop(probe);
    config.learner.health_listen = probe_addr.to_string();
    let learner = start_learner(&config).await;
    let mut client = LearnerServiceClient::connect(learner.url())
        .await
        .expect("connect");
    let s = push(
        &mut client,
        vec![trajectory(&config), trajectory(&config)],
        None,
    )
    .await
    .expect("push");
    assert_eq!(s.accepted, 2);
    let status = until_not_serving(&mut client).await;
    let status = status.expect("NOT_SERVING after training ended");
    assert_eq!(status.not_serving_reason, "training complete");
    for url in [learner.url(), format!("http://{probe_addr}")] {
        assert_eq!(
            musicrl_tests::health_status(&url, "musicrl.v1.LearnerService").await,
            tonic_health::pb::health_check_response::ServingStatus::NotServing
        );
    }
    // A trajectory of another learner incarnation's version 1 (past the step this one
    // started from) is refused as such: those parameters never existed here.
    let mut old = trajectory(&config);
    old.policy_version = 1;
    old.learner_run = status.learner_run ^ 1;
    let s = push(&mut client, vec![old], None).await.expect("push");
    assert_eq!(reasons(&s), vec!["other_incarnation".to_string()]);
    // A push now is refused as training_complete, and counted.
    let s = push(&mut client, vec![trajectory(&config)], None)
        .await
        .expect("push");
    assert_eq!(reasons(&s), vec!["training_complete".to_string()]);
    let outcome = learner.stop().await.expect("learner");
    assert_eq!(outcome.accounting.trained, 2);
    assert_eq!(
        outcome.accounting.check(),
        Ok(()),
        "{:?}",
        outcome.accounting
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_over_mutual_tls_with_tokens_and_seals_trains_and_balances() {
    let dir = tempfile::tempdir().expect("tempdir");
    let written = pki::init(&dir.path().join("pki"), &["localhost".into()]).expect("pki");
    let mut config = tiny_config(dir.path());
    config.learner.steps = 3;
    config.security = written.config.clone();
    config.security.token_file = dir.path().join("pki/actor.token");
    let reward = start_reward_server(&config).await;
    let learner = start_learner(&config).await;
    let https = |addr: std::net::SocketAddr| format!("https://localhost:{}", addr.port());

    // A client without a certificate cannot even connect (mutual TLS).
    let ca = std::fs::read(&written.config.tls_ca).expect("ca");
    let no_cert = Endpoint::from_shared(https(learner.addr))
        .expect("url")
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca)))
        .expect("tls")
        .connect()
        .await;
    let refused = match no_cert {
        Err(_) => true,
        Ok(channel) => LearnerServiceClient::new(channel)
            .status(pb::StatusRequest {})
            .await
            .is_err(),
    };
    assert!(refused, "a client without a certificate was served");
    // Each role holds only its own key: the servers' certificate is not a client
    // certificate, so a pod that somehow held it could not use it to call in as a client.
    let read = |p: &std::path::Path| std::fs::read(p).expect("a credential file");
    let server_as_client = Endpoint::from_shared(https(learner.addr))
        .expect("url")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&ca))
                .identity(Identity::from_pem(
                    read(&written.config.tls_cert),
                    read(&written.config.tls_key),
                )),
        )
        .expect("tls")
        .connect()
        .await;
    let refused = match server_as_client {
        Err(_) => true,
        Ok(channel) => LearnerServiceClient::new(channel)
            .status(pb::StatusRequest {})
            .await
            .is_err(),
    };
    assert!(
        refused,
        "the server certificate was accepted as a client certificate"
    );
    // Plain http to a TLS port fails too.
    let plain = LearnerServiceClient::connect(format!("http://{}", learner.addr)).await;
    if let Ok(mut c) = plain {
        assert!(c.status(pb::StatusRequest {}).await.is_err());
    }

    let actor = start_actor(
        &config,
        &https(learner.addr),
        &https(reward.addr),
        "secure-actor",
    );
    let outcome = tokio::time::timeout(Duration::from_secs(120), learner.join())
        .await
        .expect("the secured loop finishes")
        .expect("learner");
    assert!(outcome.completed, "{outcome:?}");
    let a = &outcome.accounting;
    assert_eq!(a.trained, 3 * config.learner.batch_size as u64, "{a:?}");
    // Every sealed reward verified: nothing refused but pushes that arrived after the last
    // step (the end is announced only once the final checkpoint is saved).
    assert!(
        a.rejected.keys().all(|r| r == "training_complete"),
        "every sealed reward verified: {a:?}"
    );
    assert_eq!(a.check(), Ok(()), "{a:?}");
    let actor = actor.join().await.expect("actor");
    assert!(actor.samples_pushed >= a.trained, "{actor:?}");
    assert_eq!(
        actor.sampled,
        actor.samples_pushed
            + actor.duplicates
            + actor.samples_rejected
            + actor.samples_after_end
            + actor.abandoned,
        "{actor:?}"
    );
    // With a client certificate and an admin token, the reward server answers over TLS.
    let channel = mutual_tls(&written, reward.addr.port()).await;
    let admin = token_of(&written, "admin");
    let info = RewardServiceClient::new(channel)
        .info(with_token(pb::InfoRequest {}, Some(&admin)))
        .await
        .expect("info over mutual TLS");
    assert!(!info.into_inner().scorer_version.is_empty());
    reward.stop().await.expect("reward server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_component_is_reached_over_mutual_tls_with_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let written = pki::init(&dir.path().join("pki"), &["localhost".into()]).expect("pki");
    let mut config = tiny_config(dir.path());
    config.security = written.config.clone();
    config.security.token_file = dir.path().join("pki/actor.token");
    let backend = start_reward_server(&config).await;
    // The front server takes its one component from the backend, over TLS, with a token.
    let mut front_config = config.clone();
    front_config.reward.components = vec![musicrl_config::ComponentConfig {
        kind: "remote".into(),
        name: "far".into(),
        endpoint: format!("https://localhost:{}", backend.addr.port()),
        remote_component: "token-fraction".into(),
        ..Default::default()
    }];
    let front = start_reward_server(&front_config).await;
    let channel = mutual_tls(&written, front.addr.port()).await;
    let actor = token_of(&written, "actor");
    let tokens = tokens(&config);
    let expected = tokens.iter().filter(|&&t| t < 4).count() as f32 / tokens.len() as f32;
    let answer = RewardServiceClient::new(channel)
        .score(with_token(
            pb::ScoreRequest {
                samples: vec![pb::Sample {
                    caption: "c".into(),
                    tokens,
                    audio: None,
                }],
            },
            Some(&actor),
        ))
        .await
        .expect("the front server scores through the backend")
        .into_inner();
    assert_eq!(answer.components[0].name, "far");
    assert!(
        (answer.scores[0].components[0] - expected).abs() < 1e-6,
        "{answer:?}"
    );
    front.stop().await.expect("front");
    backend.stop().await.expect("backend");
}

/// A learner whose checkpoint folder cannot be written says so: at start-up it refuses to
/// serve, naming the folder; when the folder stops taking writes during the run (here: it
/// is replaced by a file, as good as a full or read-only disk), health goes NOT_SERVING and
/// Status gives the reason with the path, rather than training on with nothing saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_that_cannot_checkpoint_says_not_serving_and_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = tiny_config(dir.path());
    config.learner.steps = 0; // until stopped
    config.learner.batch_size = 2;
    config.learner.value_warmup_steps = 0;
    config.learner.checkpoint_every = 1;
    // Keep serving after the training loop ends, so that health can be asked.
    config.learner.exit_on_completion = false;

    // At start-up.
    let blocker = dir.path().join("not-a-folder");
    std::fs::write(&blocker, b"a file where the checkpoints' parent should be").expect("write");
    let mut blocked = config.clone();
    blocked.learner.checkpoint_dir = blocker.join("checkpoints");
    let e = tokio::time::timeout(
        Duration::from_secs(30),
        start_learner(&blocked).await.join(),
    )
    .await
    .expect("the learner gives up at once")
    .expect_err("an unwritable checkpoint folder is refused");
    assert!(e.to_string().contains("not-a-folder"), "{e}");

    // During the run.
    let folder = dir.path().join("checkpoints");
    config.learner.checkpoint_dir = folder.clone();
    let learner = start_learner(&config).await;
    let mut client = LearnerServiceClient::connect(learner.url())
        .await
        .expect("connect");
    // Up and serving (its start-up, which writes there too, is over) before the disk goes.
    for _ in 0..300 {
        match client.status(pb::StatusRequest {}).await {
            Ok(s) if s.get_ref().serving => break,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    std::fs::remove_dir_all(&folder).ok();
    std::fs::write(&folder, b"the disk is gone").expect("write");
    // The learner may already have failed writing its first files there; the push is
    // accepted or refused, and either way health must say why it cannot train.
    let _ = push(
        &mut client,
        vec![trajectory(&config), trajectory(&config)],
        None,
    )
    .await;
    let status = until_not_serving(&mut client).await;
    let status = status.expect("NOT_SERVING once the checkpoint cannot be written");
    assert!(
        status.not_serving_reason.contains("training loop failed")
            && status.not_serving_reason.contains("checkpoints"),
        "{}",
        status.not_serving_reason
    );
    assert_eq!(
        musicrl_tests::health_status(&learner.url(), "musicrl.v1.LearnerService").await,
        tonic_health::pb::health_check_response::ServingStatus::NotServing
    );
    let _ = learner.stop().await;
}

/// Polls Status until the learner says NOT_SERVING (15 s at most).
async fn until_not_serving(
    client: &mut LearnerServiceClient<tonic::transport::Channel>,
) -> Option<pb::StatusResponse> {
    for _ in 0..300 {
        let s = client
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        if !s.serving {
            return Some(s);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// A learner restarted from its checkpoint still remembers the seals it trained on: the
/// genuine score pushed again under a fresh id after the restart is `replayed_seal`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spent_seals_survive_a_learner_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let written = pki::init(&dir.path().join("pki"), &["localhost".into()]).expect("pki");
    let mut config = tiny_config(dir.path());
    config.learner.steps = 0; // until stopped
    config.learner.batch_size = 1;
    config.security.reward_keys_file = written.config.reward_keys_file.clone();
    let reward = start_reward_server(&config).await;
    let mut rewards = RewardServiceClient::connect(reward.url())
        .await
        .expect("connect");
    let genuine = scored_by(&mut rewards, trajectory(&config), None).await;

    let learner = start_learner(&config).await;
    let mut client = LearnerServiceClient::connect(learner.url())
        .await
        .expect("connect");
    let s = push(&mut client, vec![genuine.clone()], None)
        .await
        .expect("push");
    assert_eq!(s.accepted, 1, "{s:?}");
    // Trained on, then stopped: it checkpoints, the spent seal with it.
    for _ in 0..300 {
        let status = client
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        if status.step >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = learner.stop().await.expect("the learner stops cleanly");

    let learner = start_learner(&config).await;
    let mut client = LearnerServiceClient::connect(learner.url())
        .await
        .expect("connect");
    let replay = pb::Trajectory {
        sequence: SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        ..genuine
    };
    let s = push(&mut client, vec![replay], None).await.expect("push");
    assert_eq!(reasons(&s), vec!["replayed_seal".to_string()], "{s:?}");
    let _ = learner.stop().await;
    let _ = reward.stop().await;
}

/// `t` with the reward, component scores, scorer version and seal the reward server gives it.
async fn scored_by(
    rewards: &mut RewardServiceClient<tonic::transport::Channel>,
    t: pb::Trajectory,
    token: Option<&str>,
) -> pb::Trajectory {
    let scored = rewards
        .score(with_token(
            pb::ScoreRequest {
                samples: vec![pb::Sample {
                    caption: t.caption.clone(),
                    tokens: t.tokens.clone(),
                    audio: None,
                }],
            },
            token,
        ))
        .await
        .expect("score")
        .into_inner();
    let score = &scored.scores[0];
    pb::Trajectory {
        reward: score.reward,
        components: scored
            .components
            .iter()
            .zip(&score.components)
            .map(|(c, v)| pb::ComponentScore {
                name: c.name.clone(),
                value: *v,
                windows: vec![],
            })
            .collect(),
        scorer_version: scored.scorer_version.clone(),
        reward_seal: score.seal.clone(),
        ..t
    }
}
