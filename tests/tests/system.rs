//! The whole loop in one process: a reward server, a learner and two actors talking gRPC on
//! loopback. The test scorer rewards tokens below 4 of 16, so a random policy scores 0.25 and
//! learning must push the mean reward up while the KL to θ0 stays finite.

use std::collections::BTreeSet;
use std::time::Duration;

use musicrl_tests::{
    mean, read_history, start_actor, start_learner, start_reward_server, tiny_config,
};

const STEPS: u64 = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reward_rises_with_real_services_and_actors_follow_new_versions() {
    let metrics =
        musicrl_telemetry::install_test_recorder().expect("first recorder in this process");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = tiny_config(dir.path());
    config.learner.steps = STEPS;
    // The component's folder says how long its model trained, as `train-reward` writes it,
    // so the reward server exports musicrl_reward_model_train_seconds.
    let model_dir = dir.path().join("reward-model");
    std::fs::create_dir_all(&model_dir).expect("mkdir");
    std::fs::write(model_dir.join("metrics.json"), r#"{"train_seconds": 1.5}"#).expect("write");
    config.reward.components[0].checkpoint = model_dir;

    let reward = start_reward_server(&config).await;
    let learner = start_learner(&config).await;
    let actors: Vec<_> = (0..2)
        .map(|i| {
            start_actor(
                &config,
                &learner.url(),
                &reward.url(),
                &format!("actor-{i}"),
            )
        })
        .collect();

    let outcome = tokio::time::timeout(Duration::from_secs(600), learner.join())
        .await
        .expect("the learner finishes 40 steps")
        .expect("the learner succeeds");
    for a in actors {
        let o = tokio::time::timeout(Duration::from_secs(60), a.join())
            .await
            .expect("actors stop once training is complete")
            .expect("the actor succeeds");
        assert!(
            o.versions_loaded > 1,
            "each actor loads new parameter versions: {o:?}"
        );
        assert!(o.max_policy_version_used > 1, "{o:?}");
    }
    reward
        .stop()
        .await
        .expect("the reward server stops cleanly");
    // A listener votes once through the feedback service, so its series are exported too.
    let (feedback_url, feedback) = musicrl_tests::start_feedback(dir.path()).await;
    let mut bot = musicrl_feedback::bot::BotClient::new(&feedback_url);
    bot.turn(0, 1.0, |_| musicrl_prefdb::Outcome::A)
        .await
        .expect("a vote through the API");
    feedback
        .stop()
        .await
        .expect("the feedback service stops cleanly");

    assert!(outcome.completed);
    assert_eq!(outcome.steps, STEPS);
    assert_eq!(outcome.policy_version, STEPS);
    assert!(outcome.max_policy_version_seen_by_actors > 1, "{outcome:?}");
    assert_eq!(outcome.trajectories_rejected, 0);
    assert!(outcome.trajectories_accepted >= STEPS * config.learner.batch_size as u64);

    let history = read_history(&config.learner.history_path);
    assert_eq!(
        history.iter().map(|h| h.0).collect::<Vec<_>>(),
        (1..=STEPS).collect::<Vec<_>>()
    );
    let rewards: Vec<f32> = history.iter().map(|h| h.1).collect();
    let (first, last) = (mean(&rewards[..5]), mean(&rewards[rewards.len() - 5..]));
    assert!(
        last > first + 0.15,
        "mean reward should rise clearly: first five steps {first:.3}, last five {last:.3}"
    );
    for (step, _, kl) in &history {
        assert!(
            kl.is_finite() && *kl > -1e-4 && *kl < 10.0,
            "KL at step {step} is {kl}"
        );
    }

    // Metrics: the core series exist, and every series emitted is documented.
    let rendered = metrics.render();
    let emitted: BTreeSet<String> = rendered
        .lines()
        .filter(|l| l.starts_with("musicrl_"))
        .map(|l| {
            let name = l.split(['{', ' ']).next().unwrap_or_default();
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name)
                .to_string()
        })
        .collect();
    for required in [
        "musicrl_actor_samples_total",
        "musicrl_actor_tokens_total",
        "musicrl_actor_reward_call_seconds",
        "musicrl_actor_policy_lag",
        "musicrl_learner_steps_total",
        "musicrl_learner_loss",
        "musicrl_learner_kl",
        "musicrl_learner_entropy",
        "musicrl_learner_reward_component_mean",
        "musicrl_learner_queue_depth",
        "musicrl_learner_broadcast_seconds",
        "musicrl_reward_request_seconds",
        "musicrl_reward_batch_size",
    ] {
        assert!(
            emitted.contains(required),
            "{required} was not emitted; got {emitted:?}"
        );
    }
    // The dashboard and the alert rules use only series that the processes export.
    for (file, text) in [
        (
            "deploy/monitoring/grafana/musicrl-dashboard.json",
            include_str!("../../deploy/monitoring/grafana/musicrl-dashboard.json"),
        ),
        (
            "deploy/prometheus/rules.yml",
            include_str!("../../deploy/prometheus/rules.yml"),
        ),
        (
            "deploy/monitoring/operator/prometheusrule.yaml",
            include_str!("../../deploy/monitoring/operator/prometheusrule.yaml"),
        ),
    ] {
        let used = metric_names_in(text);
        assert!(!used.is_empty(), "{file} uses no musicrl metric");
        for name in &used {
            assert!(
                emitted.contains(name),
                "{file} uses {name}, which no musicrl process exports; exported: {emitted:?}"
            );
        }
    }

    let architecture = include_str!("../../ARCHITECTURE.md");
    for name in &emitted {
        assert!(
            architecture.contains(&format!("`{name}`")),
            "metric {name} is emitted but not listed in ARCHITECTURE.md"
        );
    }
}

/// Every `musicrl_*` series name in a dashboard or rule file, without histogram suffixes.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("musicrl_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        // Recording-rule style names (musicrl:...) and words inside prose are not series.
        let preceded_by_word = i > 0 && rest.as_bytes()[i - 1].is_ascii_alphanumeric();
        if !preceded_by_word {
            names.insert(base.to_string());
        }
        rest = &tail[end..];
    }
    names
}
