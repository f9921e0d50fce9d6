//! A learner stopped after its run restarts from its checkpoint: the step count, the
//! policy version it broadcasts and its counters continue where they were.

use std::time::Duration;

use futures::StreamExt;

use musicrl_common::wire::ChunkAssembler;
use musicrl_proto::v1 as pb;
use musicrl_proto::v1::learner_service_client::LearnerServiceClient;
use musicrl_tests::{read_history, start_actor, start_learner, start_reward_server, tiny_config};

async fn train(
    config: &musicrl_config::Config,
    reward_url: &str,
) -> musicrl_learner::LearnerOutcome {
    let learner = start_learner(config).await;
    let actor = start_actor(config, &learner.url(), reward_url, "actor-0");
    let outcome = tokio::time::timeout(Duration::from_secs(300), learner.join())
        .await
        .expect("the learner finishes")
        .expect("the learner succeeds");
    tokio::time::timeout(Duration::from_secs(60), actor.join())
        .await
        .expect("the actor stops")
        .expect("the actor succeeds");
    outcome
}

/// A parameter stream, as an actor named "probe" gets it.
async fn subscribe(
    client: &mut LearnerServiceClient<tonic::transport::Channel>,
) -> tonic::Streaming<pb::ParameterChunk> {
    client
        .subscribe_parameters(pb::SubscribeRequest {
            actor_id: "probe".into(),
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_resumes_from_its_checkpoint_and_continues_the_step_count() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = tiny_config(dir.path());
    let reward = start_reward_server(&config).await;

    config.learner.steps = 6;
    let first = train(&config, &reward.url()).await;
    assert_eq!((first.steps, first.resumed_from_step), (6, 0));
    let saved = dir.path().join("checkpoints/step-00000006");
    assert!(saved.join("policy.bpk").exists() && saved.join("optimizer.bpk").exists());
    let saved_policy = std::fs::read(saved.join("policy.bpk")).expect("policy file");

    // A crash after two more steps that no checkpoint saved leaves their rows behind; they
    // are trained again after the resume, and the history must not hold them twice.
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&config.learner.history_path)
            .expect("history");
        for step in [7, 8] {
            writeln!(f, "{{\"step\":{step},\"reward_mean\":0.0,\"kl\":0.0}}").expect("append");
        }
    }

    // Restart with a larger target: the first broadcast is the checkpointed version 6.
    config.learner.steps = 10;
    let learner = start_learner(&config).await;
    let mut client = LearnerServiceClient::connect(learner.url())
        .await
        .expect("connect");
    let status = client
        .status(pb::StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.step, 6);
    assert_eq!(
        status.trajectories_accepted, first.trajectories_accepted,
        "counters continue"
    );
    let mut stream = subscribe(&mut client).await;
    let mut assembler = ChunkAssembler::new(1 << 30);
    let blob = loop {
        let chunk = stream.next().await.expect("open").expect("chunk");
        if let Some(b) = assembler.push(chunk).expect("valid") {
            break b;
        }
    };
    drop(stream);
    assert_eq!(blob.version.0, 6);
    assert_eq!(
        blob.bytes.as_ref(),
        saved_policy.as_slice(),
        "the resumed parameters are the saved ones"
    );

    let actor = start_actor(&config, &learner.url(), &reward.url(), "actor-0");
    let second = tokio::time::timeout(Duration::from_secs(300), learner.join())
        .await
        .expect("the learner finishes")
        .expect("the learner succeeds");
    actor.join().await.expect("the actor succeeds");
    assert_eq!(
        (
            second.steps,
            second.resumed_from_step,
            second.policy_version
        ),
        (10, 6, 10)
    );
    assert!(second.completed);
    assert!(second.trajectories_accepted > first.trajectories_accepted);
    let steps: Vec<u64> = read_history(&config.learner.history_path)
        .iter()
        .map(|h| h.0)
        .collect();
    assert_eq!(steps, (1..=10).collect::<Vec<_>>(), "each step once");
    assert!(
        dir.path()
            .join("checkpoints/step-00000010/policy.bpk")
            .exists()
    );

    // A different architecture in the same folder is refused with a clear error.
    config.policy.d_model = 48;
    let err = start_learner(&config)
        .await
        .join()
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("architecture"), "{err}");
    reward.stop().await.expect("clean stop");
}

/// The end of training is announced (the last version marked `training_complete`, on
/// which actors leave, and the status flag) only once the final checkpoint is on disk: a
/// learner killed in between restarts with steps still to train, and would wait forever
/// for actors that had already left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_is_announced_only_once_the_final_checkpoint_is_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = tiny_config(dir.path());
    config.learner.steps = 3;
    config.learner.checkpoint_every = 1;
    let reward = start_reward_server(&config).await;
    let learner = start_learner(&config).await;
    let mut client = LearnerServiceClient::connect(learner.url())
        .await
        .expect("connect");
    let mut stream = subscribe(&mut client).await;
    let actor = start_actor(&config, &learner.url(), &reward.url(), "actor-0");
    let latest = dir.path().join("checkpoints/LATEST");
    let mut assembler = ChunkAssembler::new(1 << 30);
    let last = loop {
        let chunk = stream.next().await.expect("open").expect("chunk");
        if let Some(blob) = assembler.push(chunk).expect("valid") {
            if blob.training_complete {
                // Read at once: nothing after the announcement may be what makes this true.
                let on_disk = std::fs::read_to_string(&latest).unwrap_or_default();
                break (blob.version.0, on_disk);
            }
            let status = client
                .status(pb::StatusRequest {})
                .await
                .expect("status")
                .into_inner();
            if status.training_complete {
                assert_eq!(
                    std::fs::read_to_string(&latest).unwrap_or_default(),
                    "step-00000003",
                    "the status said complete before the final checkpoint was saved"
                );
            }
        }
    };
    assert_eq!(
        last,
        (3, "step-00000003".to_string()),
        "the final version was announced before its checkpoint was saved"
    );
    drop(stream);
    let outcome = tokio::time::timeout(Duration::from_secs(120), learner.join())
        .await
        .expect("the learner finishes")
        .expect("the learner succeeds");
    assert!(outcome.completed);
    tokio::time::timeout(Duration::from_secs(60), actor.join())
        .await
        .expect("the actor stops")
        .expect("the actor succeeds");
    reward.stop().await.expect("clean stop");
}
