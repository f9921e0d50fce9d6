//! Kill scenarios with real processes: the roles run as `musicrl` processes on loopback, and
//! the harness SIGKILLs an actor mid-stream, takes the reward server away for twelve seconds
//! and brings it back on the same port, and SIGKILLs the learner mid-run and restarts it
//! with resume. After the run it checks the step count, that `history.jsonl` holds every
//! step exactly once, and the trajectory ledger to the trajectory: the learner's invariants
//! (sampled = received + lost, received = trained + dropped + rejected + pending), trained =
//! steps × batch, and each surviving actor's own ledger.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TINY_POLICY;

const STEPS: u64 = 14;
const BATCH: u64 = 8;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

struct Role {
    name: String,
    child: Child,
    outcome: PathBuf,
}

fn start(dir: &Path, config: &Path, name: &str, role: &str, extra: &[String]) -> Role {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log");
    let outcome = dir.join(format!("{name}.outcome.json"));
    let _ = std::fs::remove_file(&outcome);
    let child = Command::new(env!("CARGO_BIN_EXE_musicrl"))
        .arg("--config")
        .arg(config)
        .arg(role)
        .arg("--outcome-file")
        .arg(&outcome)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("musicrl starts");
    Role {
        name: name.to_string(),
        child,
        outcome,
    }
}

fn log_of(dir: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The steps in `history.jsonl`, in file order.
fn history_steps(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("step").and_then(serde_json::Value::as_u64))
        .collect()
}

fn wait_for_step(dir: &Path, history: &Path, step: u64, deadline: Duration) {
    let start = Instant::now();
    while history_steps(history).last().copied().unwrap_or(0) < step {
        assert!(
            start.elapsed() < deadline,
            "the learner did not reach step {step}; its log:\n{}",
            log_of(dir, "learner")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_exit(role: &mut Role, dir: &Path, deadline: Duration) -> serde_json::Value {
    let start = Instant::now();
    loop {
        if let Some(status) = role.child.try_wait().expect("wait") {
            assert!(
                status.success(),
                "{} exited with {status}; its log:\n{}",
                role.name,
                log_of(dir, &role.name)
            );
            let text = std::fs::read_to_string(&role.outcome).expect("outcome file");
            return serde_json::from_str(&text).expect("outcome JSON");
        }
        if start.elapsed() > deadline {
            let _ = role.child.kill();
            panic!(
                "{} did not finish; its log:\n{}",
                role.name,
                log_of(dir, &role.name)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn counts(v: &serde_json::Value) -> BTreeMap<String, u64> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_loop_survives_killed_actors_a_reward_outage_and_a_killed_learner() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (learner_port, reward_port) = (free_port(), free_port());
    let history = dir.join("history.jsonl");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"{TINY_POLICY}
[learner]
listen = "127.0.0.1:{learner_port}"
metrics_listen = ""
steps = {STEPS}
batch_size = {BATCH}
learning_rate = 0.01
value_warmup_steps = 1
lr_warmup_steps = 0
checkpoint_dir = "{ck}"
checkpoint_every = 1
history_path = "{history}"
init_policy = ""
queue_capacity = 4
seed = 5

[actor]
learner = "http://127.0.0.1:{learner_port}"
reward = "http://127.0.0.1:{reward_port}"
metrics_listen = ""
batch_size = 4
min_backoff_seconds = 0.05
max_backoff_seconds = 0.5
reward_timeout_seconds = 5.0
prompts = "{prompts}"

[reward]
listen = "127.0.0.1:{reward_port}"
metrics_listen = ""
max_batch = 32
max_connection_age_seconds = 0

[[reward.components]]
kind = "token-fraction"
target_below = 4
"#,
            ck = dir.join("checkpoints").display(),
            history = history.display(),
            prompts = common::repo("data/prompts/train.txt"),
        ),
    )
    .expect("config");
    let id = |name: &str| vec!["--id".to_string(), name.to_string()];

    let mut reward = start(dir, &config, "reward", "reward-server", &[]);
    let mut learner = start(dir, &config, "learner", "learner", &[]);
    let mut a0 = start(dir, &config, "a0", "actor", &id("a0"));
    let mut a1 = start(dir, &config, "a1", "actor", &id("a1"));

    // 1. SIGKILL an actor mid-stream; a replacement joins.
    wait_for_step(dir, &history, 2, Duration::from_secs(120));
    a1.child.kill().expect("SIGKILL a1");
    a1.child.wait().expect("reaped");
    let mut a2 = start(dir, &config, "a2", "actor", &id("a2"));

    // 2. The reward server goes away for twelve seconds and comes back on the same port.
    wait_for_step(dir, &history, 4, Duration::from_secs(120));
    reward.child.kill().expect("SIGKILL the reward server");
    reward.child.wait().expect("reaped");
    let stalled_at = history_steps(&history).last().copied().unwrap_or(0);
    std::thread::sleep(Duration::from_secs(12));
    // Without rewards no batch fills: at most the queued ones are trained meanwhile.
    let during = history_steps(&history).last().copied().unwrap_or(0);
    assert!(
        during <= stalled_at + 2,
        "trained from {stalled_at} to {during} without a reward server"
    );
    let mut reward = start(dir, &config, "reward2", "reward-server", &[]);

    // 3. SIGKILL the learner mid-run and restart it: it resumes from its last checkpoint.
    wait_for_step(dir, &history, during + 3, Duration::from_secs(120));
    learner.child.kill().expect("SIGKILL the learner");
    learner.child.wait().expect("reaped");
    let mut learner = start(dir, &config, "learner2", "learner", &[]);

    let outcome = wait_exit(&mut learner, dir, Duration::from_secs(180));
    let a0 = wait_exit(&mut a0, dir, Duration::from_secs(60));
    let a2 = wait_exit(&mut a2, dir, Duration::from_secs(60));
    let _ = reward.child.kill();
    let _ = reward.child.wait();

    // The run finished, resumed once, and history holds each step exactly once, in order.
    assert_eq!(outcome["steps"], STEPS, "{outcome:#}");
    assert_eq!(outcome["completed"], true);
    assert!(outcome["resumed_from_step"].as_u64().unwrap_or(0) > during);
    assert_eq!(history_steps(&history), (1..=STEPS).collect::<Vec<_>>());

    // The learner's ledger, to the trajectory.
    let a = &outcome["accounting"];
    let n = |k: &str| a[k].as_u64().unwrap_or(0);
    let (rejected, dropped, lost) = (
        counts(&a["rejected"]),
        counts(&a["dropped"]),
        counts(&a["lost"]),
    );
    let total = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
    assert_eq!(
        n("trained"),
        STEPS * BATCH,
        "every step trained one batch: {a:#}"
    );
    assert_eq!(n("pending"), 0, "nothing is left pending at the end: {a:#}");
    assert_eq!(n("sampled"), n("received") + total(&lost), "{a:#}");
    assert_eq!(
        n("received"),
        n("trained") + total(&dropped) + total(&rejected) + n("pending"),
        "{a:#}"
    );
    // Nothing was malformed or forged; losses have their reasons.
    assert!(
        rejected.keys().all(
            |r| ["training_complete", "other_incarnation", "future_version"].contains(&r.as_str())
        ),
        "{a:#}"
    );
    assert!(lost.keys().all(|r| r == "unreceived"), "{a:#}");
    assert!(
        dropped.keys().all(
            |r| ["stale", "shutdown", "learner_restart", "future_version"].contains(&r.as_str())
        ),
        "{a:#}"
    );

    // Each actor that finished balances its own books, and the learner saw what it pushed
    // (the killed learner's share excepted: pushes it acknowledged and did not checkpoint
    // count as lost, not pushed twice).
    // The replacement actor may legitimately push nothing (its first batch can meet the
    // reward outage and be abandoned when training ends), so only the books are per actor.
    let mut pushed = 0;
    for actor in [&a0, &a2] {
        let m = |k: &str| actor[k].as_u64().unwrap_or(0);
        assert_eq!(
            m("sampled"),
            m("samples_pushed")
                + m("duplicates")
                + m("samples_rejected")
                + m("samples_after_end")
                + m("abandoned"),
            "{actor:#}"
        );
        pushed += m("samples_pushed");
    }
    assert!(
        pushed > 0,
        "the surviving actors pushed nothing: {a0:#} {a2:#}"
    );
    // The actors saw the outage and the learner's death, and retried through both.
    let a0_log = std::fs::read_to_string(dir.join("a0.log")).expect("a0 log");
    assert!(
        a0_log.contains("reward call failed; retrying"),
        "{}",
        log_of(dir, "a0")
    );
    let resumed = std::fs::read_to_string(dir.join("learner2.log")).expect("learner2 log");
    assert!(
        resumed.contains("resumed from checkpoint"),
        "{}",
        log_of(dir, "learner2")
    );
    // The actors' incarnations are distinct.
    assert_ne!(a0["actor_run"], a2["actor_run"]);
}

/// The learner's peak resident memory, in MiB (Linux).
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib / 1024.0
}

/// Twenty concurrent maximum-size pushes (8,192 trajectories of 256 tokens each, ~18 MB
/// decoded a push) against a learner whose budget for pushes in flight is 48 MiB: the
/// pushes past the budget are refused whole with RESOURCE_EXHAUSTED (an actor retries them
/// later), and the learner's peak memory stays near its budget instead of growing with the
/// number of connections (issue 35: 36 → 534 MiB, kept).
#[cfg(target_os = "linux")]
#[test]
fn concurrent_maximum_pushes_stay_within_the_learners_memory_budget() {
    use musicrl_proto::v1 as pb;
    use musicrl_proto::v1::learner_service_client::LearnerServiceClient;

    const TOKENS: usize = 256;
    const ITEMS: u64 = 8192;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let port = free_port();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"{policy}
[learner]
listen = "127.0.0.1:{port}"
metrics_listen = ""
steps = 0
batch_size = 8
init_policy = ""
checkpoint_dir = "{ck}"
queue_capacity = 1
max_push = 8192
max_push_mb_in_flight = 48
"#,
            policy = TINY_POLICY.replace("max_tokens = 12", &format!("max_tokens = {TOKENS}")),
            ck = dir.join("checkpoints").display(),
        ),
    )
    .expect("config");
    let mut learner = start(dir, &config, "learner", "learner", &[]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let url = format!("http://127.0.0.1:{port}");
    let results: Vec<Result<u64, tonic::Code>> = runtime.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = loop {
            match LearnerServiceClient::connect(url.clone()).await {
                Ok(c) => break c.max_encoding_message_size(usize::MAX),
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!(
                    "the learner never listened: {e}\n{}",
                    log_of(dir, "learner")
                ),
            }
        };
        let pushes = (0..20u64).map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                // Generated as sent: the client holds one trajectory at a time.
                let items = tokio_stream::iter((0..ITEMS).map(move |j| pb::Trajectory {
                    actor_id: format!("stuffer-{i}"),
                    actor_run: i + 1,
                    sequence: j,
                    policy_version: 0,
                    caption: "a reel".into(),
                    tokens: (0..TOKENS as u32).map(|t| t % 16).collect(),
                    behaviour_logprobs: vec![-2.5; TOKENS],
                    reward: 0.5,
                    components: vec![pb::ComponentScore {
                        name: "token-fraction".into(),
                        value: 0.5,
                        windows: vec![],
                    }],
                    scorer_version: "test".into(),
                    ..Default::default()
                }));
                match client.push_trajectories(items).await {
                    Ok(r) => Ok(r.into_inner().accepted),
                    Err(s) => Err(s.code()),
                }
            })
        });
        let pushes: Vec<_> = pushes.collect();
        // The admitted pushes wait on the training queue (one slot) holding their share of
        // the budget; the others are refused as they meet the full budget. Wait until all
        // but two have been answered (or a minute), then look.
        let deadline = Instant::now() + Duration::from_secs(60);
        while pushes.iter().filter(|p| p.is_finished()).count() < 18 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut results = Vec::new();
        for p in pushes {
            if p.is_finished() {
                results.push(p.await.expect("a push task"));
            } else {
                p.abort();
            }
        }
        results
    });
    let peak = peak_rss_mib(learner.child.id());
    let refused = results
        .iter()
        .filter(|r| **r == Err(tonic::Code::ResourceExhausted))
        .count();
    let other_errors: Vec<_> = results
        .iter()
        .filter(|r| matches!(r, Err(c) if *c != tonic::Code::ResourceExhausted))
        .collect();
    eprintln!("the learner peaked at {peak:.0} MiB; {refused} of 20 pushes refused");
    let log = log_of(dir, "learner");
    let _ = learner.child.kill();
    let _ = learner.child.wait();
    assert!(other_errors.is_empty(), "{other_errors:?}\n{log}");
    assert!(
        refused >= 10,
        "only {refused} of 20 pushes refused: {results:?}"
    );
    assert!(
        log.contains("max_push_mb_in_flight"),
        "the refusal is logged with its setting:\n{log}"
    );
    // Unbounded, the twenty pushes decode to ~360 MiB at once; the budget is 48 MiB over a
    // ~40 MiB process.
    assert!(peak < 150.0, "the learner peaked at {peak:.0} MiB");
}
