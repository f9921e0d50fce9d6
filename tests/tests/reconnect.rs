//! Actors survive servers that are not there yet or go away: calls fail, the actor retries
//! with backoff, and the loop carries on once the server is back.

use std::time::Duration;

use musicrl_tests::{start_actor, start_learner, tiny_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actor_waits_for_a_late_reward_server_and_survives_its_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = tiny_config(dir.path());
    config.learner.steps = 0; // until stopped
    // This actor follows the broadcast's compact form: every version it loads is bf16.
    config.actor.parameter_encoding = musicrl_policy::melody::params::ParameterEncoding::Bf16;

    // Reserve a port for the reward server, then leave it closed for a while.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let reward_url = format!("http://127.0.0.1:{port}");
    let learner = start_learner(&config).await;
    let actor = start_actor(&config, &learner.url(), &reward_url, "actor-0");

    tokio::time::sleep(Duration::from_millis(700)).await;
    let status = learner_step(&learner.url()).await;
    assert_eq!(status, 0, "no reward server, so nothing can be trained yet");

    // The reward server appears: the actor's retries get through.
    let serve = |config: musicrl_config::Config| async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("rebind the reserved port");
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(musicrl_reward::serve(config, listener, async move {
            let _ = rx.await;
        }));
        (stop, handle)
    };
    let (stop, handle) = serve(config.clone()).await;
    wait_until(|| async { learner_step(&learner.url()).await >= 3 }).await;

    // It goes away: once the queued trajectories are trained on, the learner stalls...
    let _ = stop.send(());
    handle.await.expect("joins").expect("stops cleanly");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stalled = learner_step(&learner.url()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        learner_step(&learner.url()).await,
        stalled,
        "no rewards, no training"
    );

    // ...and it comes back: the same actor carries on.
    let (stop, handle) = serve(config.clone()).await;
    wait_until(|| async { learner_step(&learner.url()).await >= stalled + 5 }).await;

    let outcome = learner.stop().await.expect("the learner succeeds");
    assert!(outcome.steps >= stalled + 5);
    let a = tokio::time::timeout(Duration::from_secs(60), actor.join())
        .await
        .expect("the actor stops when the learner ends training")
        .expect("the actor succeeds");
    assert!(
        a.versions_loaded > 1,
        "bf16 versions decoded and sampled: {a:?}"
    );
    let _ = stop.send(());
    handle.await.expect("joins").expect("stops cleanly");
}

async fn learner_step(url: &str) -> u64 {
    let mut c =
        musicrl_proto::v1::learner_service_client::LearnerServiceClient::connect(url.to_string())
            .await
            .expect("the learner is up");
    c.status(musicrl_proto::v1::StatusRequest {})
        .await
        .expect("status")
        .into_inner()
        .step
}

async fn wait_until<F, Fut>(mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..3000 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition not reached within 60 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_mode_roles_outlive_a_run_and_pick_up_the_next() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = tiny_config(dir.path());
    config.learner.steps = 3;
    config.learner.exit_on_completion = false;
    config.actor.exit_on_completion = false;
    let reward = musicrl_tests::start_reward_server(&config).await;

    // The learner always listens on the same port, as behind a Kubernetes Service.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let learner_url = format!("http://127.0.0.1:{port}");
    let start = |config: musicrl_config::Config| async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the learner port");
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(musicrl_learner::serve(config, listener, async move {
            let _ = rx.await;
        }));
        (stop, handle)
    };

    let (stop, handle) = start(config.clone()).await;
    let actor = start_actor(&config, &learner_url, &reward.url(), "actor-0");
    wait_until(|| async { status(&learner_url).await.training_complete }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !handle.is_finished(),
        "the learner keeps serving after its last step"
    );
    assert!(
        !actor.handle.is_finished(),
        "the actor waits for the next run"
    );
    assert_eq!(status(&learner_url).await.step, 3);

    // Stop the learner (it must not hang on the actor's open parameter stream).
    let _ = stop.send(());
    let first = tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .expect("a graceful stop does not wait on subscribers")
        .expect("joins")
        .expect("succeeds");
    assert!(first.completed);

    // A longer run from the same checkpoint folder: the same actor resumes sampling.
    config.learner.steps = 6;
    let (stop, handle) = start(config.clone()).await;
    wait_until(|| async { status(&learner_url).await.training_complete }).await;
    assert_eq!(status(&learner_url).await.step, 6);
    let _ = stop.send(());
    let second = handle.await.expect("joins").expect("succeeds");
    assert_eq!((second.resumed_from_step, second.steps), (3, 6));
    let a = actor.stop().await.expect("the actor stops on request");
    assert!(
        a.max_policy_version_used >= 3,
        "the actor sampled with the second run's versions: {a:?}"
    );
    reward.stop().await.expect("clean stop");
}

async fn status(url: &str) -> musicrl_proto::v1::StatusResponse {
    let mut c =
        musicrl_proto::v1::learner_service_client::LearnerServiceClient::connect(url.to_string())
            .await
            .expect("the learner is up");
    c.status(musicrl_proto::v1::StatusRequest {})
        .await
        .expect("status")
        .into_inner()
}

/// A TCP relay to `target` that can be cut: while cut, every relayed connection is torn
/// down and new ones are closed on arrival — a network partition between a client and a
/// server, made in user space so it runs anywhere.
struct Relay {
    addr: std::net::SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn start(target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (cut, watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if *watch.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = watch.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self { addr, cut }
    }

    fn set_cut(&self, cut: bool) {
        let _ = self.cut.send(cut);
    }
}

/// Issue 35: a partition between an actor and the learner (pushes and the parameter stream
/// torn down mid-flight, reconnections refused for four seconds) heals by itself: the run
/// completes, and the trajectory ledger balances to the trajectory — nothing the actor
/// sampled is unaccounted for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_between_an_actor_and_the_learner_heals_and_the_ledger_balances() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = tiny_config(dir.path());
    config.learner.steps = 24;
    config.actor.min_backoff_seconds = 0.05;
    let reward = musicrl_tests::start_reward_server(&config).await;
    let learner = start_learner(&config).await;
    let relay = Relay::start(learner.addr).await;
    let actor = start_actor(
        &config,
        &format!("http://{}", relay.addr),
        &reward.url(),
        "partitioned",
    );
    wait_until(|| async { learner_step(&learner.url()).await >= 4 }).await;
    relay.set_cut(true);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = learner_step(&learner.url()).await;
    assert!(during < 24, "the run finished during the partition");
    relay.set_cut(false);

    let outcome = tokio::time::timeout(Duration::from_secs(120), learner.join())
        .await
        .expect("the run completes after the partition heals")
        .expect("the learner succeeds");
    assert!(outcome.completed && outcome.steps == 24, "{outcome:?}");
    let a = tokio::time::timeout(Duration::from_secs(60), actor.join())
        .await
        .expect("the actor leaves when training completes")
        .expect("the actor succeeds");
    let books = &outcome.accounting;
    assert_eq!(books.check(), Ok(()), "{books:?}");
    assert_eq!(books.trained, 24 * 8, "{books:?}");
    // The actor's own books balance, and every trajectory it delivered the learner received
    // exactly once, whatever answer the partition cost it (a push retried after its answer
    // was lost comes back as duplicates, not twice).
    assert_eq!(
        a.sampled,
        a.samples_pushed + a.duplicates + a.samples_rejected + a.samples_after_end + a.abandoned,
        "{a:?}"
    );
    assert_eq!(
        books.received,
        a.samples_pushed + a.duplicates + a.samples_rejected + a.samples_after_end,
        "{books:?} {a:?}"
    );
    assert!(
        a.versions_loaded > 4,
        "the parameter stream came back: {a:?}"
    );
    let _ = reward.stop().await;
}
