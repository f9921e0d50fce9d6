//! Per-request balancing: one actor's Score calls are spread over every reward-server
//! replica it is given, not pinned to the first connection.

use std::time::Duration;

use musicrl_config::ComponentConfig;
use musicrl_proto::v1 as pb;
use musicrl_tests::{start_reward_server, tiny_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_actors_calls_reach_both_reward_servers_in_fair_shares() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Two replicas that differ only in their component's name, so each answer says which
    // replica gave it.
    let replica = |name: &str| {
        let mut c = tiny_config(dir.path());
        c.reward.components = vec![ComponentConfig {
            kind: "token-fraction".into(),
            name: name.into(),
            target_below: 4,
            ..ComponentConfig::default()
        }];
        c
    };
    let a = start_reward_server(&replica("a")).await;
    let b = start_reward_server(&replica("b")).await;

    // The actor's own channel, as `actor.reward = "URL_A,URL_B"` builds it.
    let channel = musicrl_actor::balance::reward_channel(
        &format!("{},{}", a.url(), b.url()),
        Duration::from_millis(200),
        &Default::default(),
    )
    .expect("a balanced channel");
    let mut client = pb::reward_service_client::RewardServiceClient::new(channel);
    let request = pb::ScoreRequest {
        samples: vec![pb::Sample {
            caption: "a reel".into(),
            tokens: vec![1, 2, 3],
            audio: None,
        }],
    };
    let (mut to_a, mut to_b) = (0, 0);
    for _ in 0..100 {
        let r = tokio::time::timeout(Duration::from_secs(30), client.score(request.clone()))
            .await
            .expect("answered in time")
            .expect("a score")
            .into_inner();
        match r.components[0].name.as_str() {
            "a" => to_a += 1,
            "b" => to_b += 1,
            other => panic!("unknown replica {other}"),
        }
    }
    // Power of two choices over idle replicas is a fair coin per call: 100 calls put fewer
    // than 25 on one side with probability below 1e-6.
    assert!(
        to_a >= 25 && to_b >= 25,
        "calls split {to_a}/{to_b} between the two replicas"
    );
    a.stop().await.expect("a stops");
    b.stop().await.expect("b stops");
}
