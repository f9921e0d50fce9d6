//! Hot swap: every `reward.reload_seconds` the server looks at its components' checkpoint
//! files (size and modification time of `model.bpk` and `config.json`). When they have
//! changed and then stayed the same for one more look (so a checkpoint being written is not
//! read half-way), it builds the whole scoring configuration anew off the executor and, if
//! its version differs, stores it in the model handle. Calls already accepted finish on the
//! model they started with (see [`crate::batcher`]); calls after the swap use the new one.
//! A checkpoint that fails to load is logged and counted, and the running model keeps
//! serving.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use musicrl_config::{RewardConfig, SecurityConfig};
use musicrl_telemetry::metrics_catalog as catalog;

use crate::batcher::ModelHandle;
use crate::combine::RewardModel;

/// What the reloader compares: per checkpoint file, its length and modification time.
type Fingerprint = Vec<(PathBuf, Option<(u64, SystemTime)>)>;

fn fingerprint(config: &RewardConfig) -> Fingerprint {
    config
        .components
        .iter()
        .filter(|c| !c.checkpoint.as_os_str().is_empty())
        .flat_map(|c| {
            [
                c.checkpoint.join(musicrl_rewards::store::MODEL_FILE),
                c.checkpoint.join(musicrl_rewards::store::CONFIG_FILE),
            ]
        })
        .map(|p| {
            let meta = std::fs::metadata(&p)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?)));
            (p, meta)
        })
        .collect()
}

/// Marks `version` as served in `musicrl_reward_scorer_info` (and `old` as replaced), and
/// sets `musicrl_reward_model_train_seconds` for every component whose checkpoint's
/// `metrics.json` says how long it trained.
pub fn announce(version: &str, old: Option<&str>, config: &RewardConfig) {
    if let Some(old) = old {
        metrics::gauge!(catalog::REWARD_SCORER_INFO, "version" => old.to_string()).set(0.0);
    }
    metrics::gauge!(catalog::REWARD_SCORER_INFO, "version" => version.to_string()).set(1.0);
    for c in &config.components {
        if let Some(seconds) = train_seconds(&c.checkpoint) {
            let name = if c.name.is_empty() { &c.kind } else { &c.name };
            metrics::gauge!(catalog::REWARD_MODEL_TRAIN_SECONDS, "component" => name.clone())
                .set(seconds);
        }
    }
}

/// `train_seconds` from a checkpoint folder's `metrics.json` (what `musicrl train-reward`
/// writes), when there is one.
pub fn train_seconds(checkpoint: &std::path::Path) -> Option<f64> {
    if checkpoint.as_os_str().is_empty() {
        return None;
    }
    let text = std::fs::read_to_string(checkpoint.join("metrics.json")).ok()?;
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()?
        .get("train_seconds")?
        .as_f64()
}

/// Starts the reloader; `None` when `period` is zero or no component has a checkpoint.
pub fn spawn(
    handle: ModelHandle,
    config: RewardConfig,
    security: SecurityConfig,
    period: Duration,
) -> Option<tokio::task::JoinHandle<()>> {
    announce(&handle.load().scorer_version(), None, &config);
    if period.is_zero() || fingerprint(&config).is_empty() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut served = fingerprint(&config);
        let mut seen = served.clone();
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let now = fingerprint(&config);
            let stable = now == seen;
            seen = now.clone();
            if now == served || !stable {
                continue;
            }
            let (c, s) = (config.clone(), security.clone());
            let built =
                tokio::task::spawn_blocking(move || RewardModel::from_config_secured(&c, &s)).await;
            // Either way this fingerprint has been dealt with; a later change is looked at anew.
            served = now;
            match built {
                Ok(Ok(model)) => {
                    let old = handle.load().scorer_version();
                    let new = model.scorer_version();
                    if new == old {
                        continue;
                    }
                    handle.store(Arc::new(model));
                    metrics::counter!(catalog::REWARD_MODEL_SWAPS_TOTAL).increment(1);
                    announce(&new, Some(&old), &config);
                    tracing::info!(old = %old, new = %new, "reward model swapped");
                }
                Ok(Err(e)) => {
                    metrics::counter!(catalog::REWARD_MODEL_RELOAD_FAILURES_TOTAL).increment(1);
                    tracing::error!(error = %e, "a changed reward-model checkpoint cannot be loaded; the running model keeps serving");
                }
                Err(e) => {
                    metrics::counter!(catalog::REWARD_MODEL_RELOAD_FAILURES_TOTAL).increment(1);
                    tracing::error!(error = %e, "the reload task failed; the running model keeps serving");
                }
            }
        }
    }))
}
