//! The catalog of every metric musicrl exports: names, kinds, the role that exports them,
//! and their help text. Code records metrics only through these constants, so this file,
//! the table in `ARCHITECTURE.md`, the Grafana dashboard and the alert rules can be checked
//! against one list (tests do).

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// The Prometheus type of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The process that exports a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Actor,
    Learner,
    RewardServer,
    Feedback,
}

/// One exported metric.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub role: Role,
    /// The one label the metric carries, if any (labels stay low-cardinality).
    pub label: Option<&'static str>,
    /// Label values a counter starts at zero with, so `rate()` and `increase()` see the series
    /// before the first event.
    pub initial_label_values: &'static [&'static str],
    pub help: &'static str,
}

pub const ACTOR_SAMPLES_TOTAL: &str = "musicrl_actor_samples_total";
pub const ACTOR_TOKENS_TOTAL: &str = "musicrl_actor_tokens_total";
pub const ACTOR_SAMPLE_SECONDS: &str = "musicrl_actor_sample_seconds";
pub const ACTOR_REWARD_CALL_SECONDS: &str = "musicrl_actor_reward_call_seconds";
pub const ACTOR_PUSH_SECONDS: &str = "musicrl_actor_push_seconds";
pub const ACTOR_POLICY_LAG: &str = "musicrl_actor_policy_lag";
pub const ACTOR_POLICY_VERSION: &str = "musicrl_actor_policy_version";
pub const ACTOR_PARAM_LOAD_SECONDS: &str = "musicrl_actor_param_load_seconds";
pub const ACTOR_PARAM_RECEIVE_SECONDS: &str = "musicrl_actor_param_receive_seconds";
pub const ACTOR_REWARD_REPLICAS: &str = "musicrl_actor_reward_replicas";
pub const ACTOR_RECONNECTS_TOTAL: &str = "musicrl_actor_reconnects_total";
pub const ACTOR_TRAJECTORIES_REJECTED_TOTAL: &str = "musicrl_actor_trajectories_rejected_total";
pub const LEARNER_STEPS_TOTAL: &str = "musicrl_learner_steps_total";
pub const LEARNER_TOKENS_TOTAL: &str = "musicrl_learner_tokens_total";
pub const LEARNER_TRAJECTORIES_TRAINED_TOTAL: &str = "musicrl_learner_trajectories_trained_total";
pub const LEARNER_TRAJECTORIES_ACCEPTED_TOTAL: &str = "musicrl_learner_trajectories_accepted_total";
pub const LEARNER_TRAJECTORIES_REJECTED_TOTAL: &str = "musicrl_learner_trajectories_rejected_total";
pub const LEARNER_TRAJECTORIES_DROPPED_TOTAL: &str = "musicrl_learner_trajectories_dropped_total";
pub const LEARNER_BATCHES_SKIPPED_TOTAL: &str = "musicrl_learner_batches_skipped_total";
pub const LEARNER_REWARDS_CLIPPED_TOTAL: &str = "musicrl_learner_rewards_clipped_total";
pub const LEARNER_MIXED_SCORER_BATCHES_TOTAL: &str = "musicrl_learner_mixed_scorer_batches_total";
pub const LEARNER_TRAJECTORIES_DUPLICATE_TOTAL: &str =
    "musicrl_learner_trajectories_duplicate_total";
pub const LEARNER_LEDGER_TRAJECTORIES: &str = "musicrl_learner_ledger_trajectories";
pub const LEARNER_SERVING: &str = "musicrl_learner_serving";
pub const LEARNER_AUTH_FAILURES_TOTAL: &str = "musicrl_learner_auth_failures_total";
pub const LEARNER_REQUESTS_REFUSED_TOTAL: &str = "musicrl_learner_requests_refused_total";
pub const LEARNER_LOSS: &str = "musicrl_learner_loss";
pub const LEARNER_KL: &str = "musicrl_learner_kl";
pub const LEARNER_ENTROPY: &str = "musicrl_learner_entropy";
pub const LEARNER_REWARD_MEAN: &str = "musicrl_learner_reward_mean";
pub const LEARNER_REWARD_COMPONENT_MEAN: &str = "musicrl_learner_reward_component_mean";
pub const LEARNER_GRAD_NORM: &str = "musicrl_learner_grad_norm";
pub const LEARNER_IMPORTANCE_WEIGHT_MEAN: &str = "musicrl_learner_importance_weight_mean";
pub const LEARNER_POLICY_LAG_MEAN: &str = "musicrl_learner_policy_lag_mean";
pub const LEARNER_POLICY_VERSION: &str = "musicrl_learner_policy_version";
pub const LEARNER_TRAINING_COMPLETE: &str = "musicrl_learner_training_complete";
pub const LEARNER_QUEUE_DEPTH: &str = "musicrl_learner_queue_depth";
pub const LEARNER_SUBSCRIBERS: &str = "musicrl_learner_subscribers";
pub const LEARNER_STEP_SECONDS: &str = "musicrl_learner_step_seconds";
pub const LEARNER_BATCH_WAIT_SECONDS: &str = "musicrl_learner_batch_wait_seconds";
pub const LEARNER_BROADCAST_SECONDS: &str = "musicrl_learner_broadcast_seconds";
pub const LEARNER_BROADCAST_SEND_SECONDS: &str = "musicrl_learner_broadcast_send_seconds";
pub const LEARNER_BROADCAST_BYTES: &str = "musicrl_learner_broadcast_bytes";
pub const LEARNER_BROADCAST_COMPACT_SECONDS: &str = "musicrl_learner_broadcast_compact_seconds";
pub const LEARNER_BROADCAST_SUPERSEDED_TOTAL: &str = "musicrl_learner_broadcast_superseded_total";
pub const LEARNER_PUBLISH_HANDOFF_SECONDS: &str = "musicrl_learner_publish_handoff_seconds";
pub const LEARNER_CHECKPOINT_SECONDS: &str = "musicrl_learner_checkpoint_seconds";
pub const REWARD_INFLIGHT_REQUESTS: &str = "musicrl_reward_inflight_requests";
pub const REWARD_REQUESTS_TOTAL: &str = "musicrl_reward_requests_total";
pub const REWARD_REQUEST_SECONDS: &str = "musicrl_reward_request_seconds";
pub const REWARD_AUTH_FAILURES_TOTAL: &str = "musicrl_reward_auth_failures_total";
pub const REWARD_QUEUED_SAMPLES: &str = "musicrl_reward_queued_samples";
pub const REWARD_ABANDONED_SAMPLES_TOTAL: &str = "musicrl_reward_abandoned_samples_total";
pub const REWARD_SEALED_TOTAL: &str = "musicrl_reward_sealed_total";
pub const REWARD_BATCH_SIZE: &str = "musicrl_reward_batch_size";
pub const REWARD_COMPONENT_SECONDS: &str = "musicrl_reward_component_seconds";
pub const REWARD_RENDER_SECONDS: &str = "musicrl_reward_render_seconds";
pub const REWARD_DECODE_SECONDS: &str = "musicrl_reward_decode_seconds";
pub const REWARD_SCORED_BATCH_SIZE: &str = "musicrl_reward_scored_batch_size";
pub const REWARD_MODEL_SWAPS_TOTAL: &str = "musicrl_reward_model_swaps_total";
pub const REWARD_MODEL_RELOAD_FAILURES_TOTAL: &str = "musicrl_reward_model_reload_failures_total";
pub const REWARD_SCORER_INFO: &str = "musicrl_reward_scorer_info";
pub const REWARD_MODEL_TRAIN_SECONDS: &str = "musicrl_reward_model_train_seconds";
pub const FEEDBACK_PAIRS_SERVED_TOTAL: &str = "musicrl_feedback_pairs_served_total";
pub const FEEDBACK_SERVING: &str = "musicrl_feedback_serving";
pub const FEEDBACK_VOTES_TOTAL: &str = "musicrl_feedback_votes_total";
pub const FEEDBACK_VOTES_FLAGGED_TOTAL: &str = "musicrl_feedback_votes_flagged_total";
pub const FEEDBACK_REJECTED_TOTAL: &str = "musicrl_feedback_rejected_total";
pub const FEEDBACK_LISTEN_SECONDS: &str = "musicrl_feedback_listen_seconds";
pub const FEEDBACK_PAIR_DRAW_SECONDS: &str = "musicrl_feedback_pair_draw_seconds";

/// Every metric, grouped by role.
pub const CATALOG: &[Metric] = &[
    Metric {
        name: ACTOR_SAMPLES_TOTAL,
        kind: Kind::Counter,
        role: Role::Actor,
        label: None,
        initial_label_values: &[],
        help: "sequences sampled (rate = samples/s)",
    },
    Metric {
        name: ACTOR_TOKENS_TOTAL,
        kind: Kind::Counter,
        role: Role::Actor,
        label: None,
        initial_label_values: &[],
        help: "tokens sampled (rate = tokens/s)",
    },
    Metric {
        name: ACTOR_SAMPLE_SECONDS,
        kind: Kind::Histogram,
        role: Role::Actor,
        label: None,
        initial_label_values: &[],
        help: "time to sample one round's batch",
    },
    Metric {
        name: ACTOR_REWARD_CALL_SECONDS,
        kind: Kind::Histogram,
        role: Role::Actor,
        label: None,
        initial_label_values: &[],
        help: "latency of one successful Score call",
    },
    Metric {
        name: ACTOR_REWARD_REPLICAS,
        kind: Kind::Gauge,
        role: Role::Actor,
        label: None,
        initial_label_values: &[],
        help: "reward-server addresses the actor spreads its Score calls over",
    },
    Metric {
        name: ACTOR_PUSH_SECONDS,
        kind: Kind::Histogram,
        role: Role::Actor,
        label: None,
        initial_label_values: &[],
        help: "latency of one trajectory push",
    },
    Metric {
        name: ACTOR_POLICY_LAG,
        kind: Kind::Gauge,
        role: Role::Actor,
        label: None,
        initial_label_values: &[],
        help: "versions between the learner and the policy that sampled the last push",
    },
    Metric {
        name: ACTOR_POLICY_VERSION,
        kind: Kind::Gauge,
        role: Role::Actor,
        label: None,
        initial_label_values: &[],
        help: "the version this actor samples with",
    },
    Metric {
        name: ACTOR_PARAM_LOAD_SECONDS,
        kind: Kind::Histogram,
        role: Role::Actor,
        label: None,
        initial_label_values: &[],
        help: "time to load a received version into the model",
    },
    Metric {
        name: ACTOR_PARAM_RECEIVE_SECONDS,
        kind: Kind::Histogram,
        role: Role::Actor,
        label: None,
        initial_label_values: &[],
        help: "time from a version's first chunk to its last",
    },
    Metric {
        name: ACTOR_RECONNECTS_TOTAL,
        kind: Kind::Counter,
        role: Role::Actor,
        label: Some("target"),
        initial_label_values: &["reward", "learner"],
        help: "failed calls retried with backoff (reward, learner)",
    },
    Metric {
        name: ACTOR_TRAJECTORIES_REJECTED_TOTAL,
        kind: Kind::Counter,
        role: Role::Actor,
        label: None,
        initial_label_values: &[],
        help: "trajectories the learner did not accept",
    },
    Metric {
        name: LEARNER_STEPS_TOTAL,
        kind: Kind::Counter,
        role: Role::Learner,
        label: None,
        initial_label_values: &[],
        help: "updates taken",
    },
    Metric {
        name: LEARNER_TOKENS_TOTAL,
        kind: Kind::Counter,
        role: Role::Learner,
        label: None,
        initial_label_values: &[],
        help: "tokens trained on",
    },
    Metric {
        name: LEARNER_TRAJECTORIES_TRAINED_TOTAL,
        kind: Kind::Counter,
        role: Role::Learner,
        label: None,
        initial_label_values: &[],
        help: "trajectories trained on",
    },
    Metric {
        name: LEARNER_TRAJECTORIES_ACCEPTED_TOTAL,
        kind: Kind::Counter,
        role: Role::Learner,
        label: None,
        initial_label_values: &[],
        help: "trajectories queued from pushes",
    },
    Metric {
        name: LEARNER_TRAJECTORIES_REJECTED_TOTAL,
        kind: Kind::Counter,
        role: Role::Learner,
        label: Some("reason"),
        initial_label_values: &[
            "token_out_of_range",
            "bad_length",
            "length_mismatch",
            "bad_logprob",
            "non_finite_reward",
            "bad_component",
            "caption_too_long",
            "bad_actor_id",
            "empty_push",
            "push_too_large",
            "future_version",
            "other_incarnation",
            "missing_id",
            "unsealed_reward",
            "forged_reward",
            "expired_seal",
            "unknown_seal_key",
            "replayed_seal",
            "training_complete",
        ],
        help: "trajectories refused at the door (malformed: token_out_of_range, bad_length, length_mismatch, bad_logprob, non_finite_reward, missing_id, …; empty_push, push_too_large; future_version, other_incarnation: sampled by a version this incarnation never published; unsealed_reward, forged_reward, expired_seal, unknown_seal_key: the reward seal failed; replayed_seal: a seal already trained on; training_complete)",
    },
    Metric {
        name: LEARNER_TRAJECTORIES_DROPPED_TOTAL,
        kind: Kind::Counter,
        role: Role::Learner,
        label: Some("reason"),
        initial_label_values: &[
            "stale",
            "future_version",
            "skipped_update",
            "shutdown",
            "learner_restart",
        ],
        help: "admitted to the queue but not trained on: dropped by the staleness rule (stale, future_version), in a batch whose update was skipped (skipped_update), queued when the learner stopped (shutdown) or when it last checkpointed before a crash (learner_restart)",
    },
    Metric {
        name: LEARNER_TRAJECTORIES_DUPLICATE_TOTAL,
        kind: Kind::Counter,
        role: Role::Learner,
        label: None,
        initial_label_values: &[],
        help: "trajectories whose id was already admitted (a push retried after a lost answer): counted, never queued twice",
    },
    Metric {
        name: LEARNER_LEDGER_TRAJECTORIES,
        kind: Kind::Gauge,
        role: Role::Learner,
        label: Some("account"),
        initial_label_values: &[],
        help: "the trajectory ledger since the run began, across resumes (account: sampled, received, duplicates, trained, pending, rejected, dropped, lost); sampled = received + lost and received = trained + dropped + rejected + pending",
    },
    Metric {
        name: LEARNER_SERVING,
        kind: Kind::Gauge,
        role: Role::Learner,
        label: None,
        initial_label_values: &[],
        help: "1 while the learner can train, 0 otherwise (training complete, training loop failed, stopping); health answers NOT_SERVING then",
    },
    Metric {
        name: LEARNER_AUTH_FAILURES_TOTAL,
        kind: Kind::Counter,
        role: Role::Learner,
        label: Some("reason"),
        initial_label_values: &["missing", "malformed", "unknown_token", "permission"],
        help: "calls refused for their bearer token (UNAUTHENTICATED: missing, malformed, unknown_token; PERMISSION_DENIED: permission)",
    },
    Metric {
        name: LEARNER_REQUESTS_REFUSED_TOTAL,
        kind: Kind::Counter,
        role: Role::Learner,
        label: Some("reason"),
        initial_label_values: &["too_many_subscribers", "push_memory_budget"],
        help: "calls refused by a limit (RESOURCE_EXHAUSTED): too_many_subscribers, push_memory_budget (learner.max_push_mb_in_flight)",
    },
    Metric {
        name: LEARNER_BATCHES_SKIPPED_TOTAL,
        kind: Kind::Counter,
        role: Role::Learner,
        label: Some("reason"),
        initial_label_values: &["non_finite_loss", "non_finite_gradient"],
        help: "updates not applied because the batch's loss or gradient was not finite (the parameters stay as they were)",
    },
    Metric {
        name: LEARNER_REWARDS_CLIPPED_TOTAL,
        kind: Kind::Counter,
        role: Role::Learner,
        label: None,
        initial_label_values: &[],
        help: "trained trajectories whose reward lay outside ±learner.reward_clip and was clipped to it",
    },
    Metric {
        name: LEARNER_MIXED_SCORER_BATCHES_TOTAL,
        kind: Kind::Counter,
        role: Role::Learner,
        label: None,
        initial_label_values: &[],
        help: "updates whose batch mixed trajectories scored by different scorer versions",
    },
    Metric {
        name: LEARNER_LOSS,
        kind: Kind::Gauge,
        role: Role::Learner,
        label: Some("part"),
        initial_label_values: &[],
        help: "last step's loss: total, policy, value",
    },
    Metric {
        name: LEARNER_KL,
        kind: Kind::Gauge,
        role: Role::Learner,
        label: None,
        initial_label_values: &[],
        help: "last step's mean exact per-token KL(πθ‖πθ0)",
    },
    Metric {
        name: LEARNER_ENTROPY,
        kind: Kind::Gauge,
        role: Role::Learner,
        label: None,
        initial_label_values: &[],
        help: "last step's mean per-token policy entropy",
    },
    Metric {
        name: LEARNER_REWARD_MEAN,
        kind: Kind::Gauge,
        role: Role::Learner,
        label: None,
        initial_label_values: &[],
        help: "last batch's mean combined reward",
    },
    Metric {
        name: LEARNER_REWARD_COMPONENT_MEAN,
        kind: Kind::Gauge,
        role: Role::Learner,
        label: Some("component"),
        initial_label_values: &[],
        help: "last batch's mean raw score per reward component",
    },
    Metric {
        name: LEARNER_GRAD_NORM,
        kind: Kind::Gauge,
        role: Role::Learner,
        label: None,
        initial_label_values: &[],
        help: "global gradient norm before clipping",
    },
    Metric {
        name: LEARNER_IMPORTANCE_WEIGHT_MEAN,
        kind: Kind::Gauge,
        role: Role::Learner,
        label: None,
        initial_label_values: &[],
        help: "mean truncated importance weight",
    },
    Metric {
        name: LEARNER_POLICY_LAG_MEAN,
        kind: Kind::Gauge,
        role: Role::Learner,
        label: None,
        initial_label_values: &[],
        help: "mean versions between the sampling and the updated policy",
    },
    Metric {
        name: LEARNER_POLICY_VERSION,
        kind: Kind::Gauge,
        role: Role::Learner,
        label: None,
        initial_label_values: &[],
        help: "the newest published version",
    },
    Metric {
        name: LEARNER_TRAINING_COMPLETE,
        kind: Kind::Gauge,
        role: Role::Learner,
        label: None,
        initial_label_values: &[],
        help: "1 once learner.steps are trained, else 0",
    },
    Metric {
        name: LEARNER_QUEUE_DEPTH,
        kind: Kind::Gauge,
        role: Role::Learner,
        label: None,
        initial_label_values: &[],
        help: "trajectories waiting for the training loop",
    },
    Metric {
        name: LEARNER_SUBSCRIBERS,
        kind: Kind::Gauge,
        role: Role::Learner,
        label: None,
        initial_label_values: &[],
        help: "actors following the parameter broadcast",
    },
    Metric {
        name: LEARNER_STEP_SECONDS,
        kind: Kind::Histogram,
        role: Role::Learner,
        label: None,
        initial_label_values: &[],
        help: "time of one update",
    },
    Metric {
        name: LEARNER_BATCH_WAIT_SECONDS,
        kind: Kind::Histogram,
        role: Role::Learner,
        label: None,
        initial_label_values: &[],
        help: "time spent waiting for a full batch",
    },
    Metric {
        name: LEARNER_BROADCAST_SECONDS,
        kind: Kind::Histogram,
        role: Role::Learner,
        label: None,
        initial_label_values: &[],
        help: "time to serialise and publish a new version (on the publisher thread)",
    },
    Metric {
        name: LEARNER_PUBLISH_HANDOFF_SECONDS,
        kind: Kind::Histogram,
        role: Role::Learner,
        label: None,
        initial_label_values: &[],
        help: "training-thread time to hand a new version to the publisher (what publishing costs a step)",
    },
    Metric {
        name: LEARNER_BROADCAST_SUPERSEDED_TOTAL,
        kind: Kind::Counter,
        role: Role::Learner,
        label: None,
        initial_label_values: &[],
        help: "versions a subscriber stopped receiving midway because a newer one was published",
    },
    Metric {
        name: LEARNER_BROADCAST_SEND_SECONDS,
        kind: Kind::Histogram,
        role: Role::Learner,
        label: None,
        initial_label_values: &[],
        help: "time to send one version's chunks to one subscriber",
    },
    Metric {
        name: LEARNER_BROADCAST_BYTES,
        kind: Kind::Gauge,
        role: Role::Learner,
        label: None,
        initial_label_values: &[],
        help: "size of the newest version",
    },
    Metric {
        name: LEARNER_BROADCAST_COMPACT_SECONDS,
        kind: Kind::Histogram,
        role: Role::Learner,
        label: None,
        initial_label_values: &[],
        help: "time to make a version's bf16 wire form (once per version, on the first subscriber's demand, on a blocking thread)",
    },
    Metric {
        name: LEARNER_CHECKPOINT_SECONDS,
        kind: Kind::Histogram,
        role: Role::Learner,
        label: None,
        initial_label_values: &[],
        help: "time to write a checkpoint",
    },
    Metric {
        name: REWARD_INFLIGHT_REQUESTS,
        kind: Kind::Gauge,
        role: Role::RewardServer,
        label: None,
        initial_label_values: &[],
        help: "Score calls received and not yet answered (waiting to join a batch, or scoring): the queue depth the reward server's autoscaler reads",
    },
    Metric {
        name: REWARD_REQUESTS_TOTAL,
        kind: Kind::Counter,
        role: Role::RewardServer,
        label: Some("code"),
        initial_label_values: &[
            "ok",
            "invalid_argument",
            "resource_exhausted",
            "unauthenticated",
            "permission_denied",
            "cancelled",
            "error",
        ],
        help: "Score calls by outcome (ok, invalid_argument, resource_exhausted: shed because the queue was full, unauthenticated, permission_denied, cancelled: the caller left, error)",
    },
    Metric {
        name: REWARD_REQUEST_SECONDS,
        kind: Kind::Histogram,
        role: Role::RewardServer,
        label: None,
        initial_label_values: &[],
        help: "latency of one Score call",
    },
    Metric {
        name: REWARD_BATCH_SIZE,
        kind: Kind::Histogram,
        role: Role::RewardServer,
        label: None,
        initial_label_values: &[],
        help: "samples per Score call",
    },
    Metric {
        name: REWARD_AUTH_FAILURES_TOTAL,
        kind: Kind::Counter,
        role: Role::RewardServer,
        label: Some("reason"),
        initial_label_values: &["missing", "malformed", "unknown_token", "permission"],
        help: "calls refused for their bearer token (UNAUTHENTICATED: missing, malformed, unknown_token; PERMISSION_DENIED: permission)",
    },
    Metric {
        name: REWARD_QUEUED_SAMPLES,
        kind: Kind::Gauge,
        role: Role::RewardServer,
        label: None,
        initial_label_values: &[],
        help: "samples accepted and not yet scored; past reward.max_queued_samples calls are shed with RESOURCE_EXHAUSTED",
    },
    Metric {
        name: REWARD_ABANDONED_SAMPLES_TOTAL,
        kind: Kind::Counter,
        role: Role::RewardServer,
        label: None,
        initial_label_values: &[],
        help: "samples not scored because their caller had gone (cancelled, deadline passed)",
    },
    Metric {
        name: REWARD_SEALED_TOTAL,
        kind: Kind::Counter,
        role: Role::RewardServer,
        label: None,
        initial_label_values: &[],
        help: "scores sealed with the reward key (security.reward_keys_file)",
    },
    Metric {
        name: REWARD_COMPONENT_SECONDS,
        kind: Kind::Histogram,
        role: Role::RewardServer,
        label: Some("component"),
        initial_label_values: &[],
        help: "time one component takes on one batch",
    },
    Metric {
        name: REWARD_RENDER_SECONDS,
        kind: Kind::Histogram,
        role: Role::RewardServer,
        label: None,
        initial_label_values: &[],
        help: "time to decode and render one batch to audio features, shared by the audio components",
    },
    Metric {
        name: REWARD_DECODE_SECONDS,
        kind: Kind::Histogram,
        role: Role::RewardServer,
        label: None,
        initial_label_values: &[],
        help: "time the codec takes to decode one batch of audio-token clips to audio (part of the render time)",
    },
    Metric {
        name: REWARD_SCORED_BATCH_SIZE,
        kind: Kind::Histogram,
        role: Role::RewardServer,
        label: None,
        initial_label_values: &[],
        help: "samples scored together after dynamic batching merged concurrent calls",
    },
    Metric {
        name: REWARD_MODEL_SWAPS_TOTAL,
        kind: Kind::Counter,
        role: Role::RewardServer,
        label: None,
        initial_label_values: &[],
        help: "reward models swapped in without a restart after their checkpoint changed",
    },
    Metric {
        name: REWARD_MODEL_RELOAD_FAILURES_TOTAL,
        kind: Kind::Counter,
        role: Role::RewardServer,
        label: None,
        initial_label_values: &[],
        help: "changed checkpoints that could not be loaded (the running model keeps serving)",
    },
    Metric {
        name: REWARD_SCORER_INFO,
        kind: Kind::Gauge,
        role: Role::RewardServer,
        label: Some("version"),
        initial_label_values: &[],
        help: "1 for the scorer version being served, 0 for the ones it replaced",
    },
    Metric {
        name: REWARD_MODEL_TRAIN_SECONDS,
        kind: Kind::Gauge,
        role: Role::RewardServer,
        label: Some("component"),
        initial_label_values: &[],
        help: "how long the served model of each component took to train (its metrics.json train_seconds; the retrain Job's duration)",
    },
    Metric {
        name: FEEDBACK_SERVING,
        kind: Kind::Gauge,
        role: Role::Feedback,
        label: None,
        initial_label_values: &[],
        help: "1 while the preference database takes writes (checked every feedback.health_check_seconds), 0 otherwise; /healthz answers 503 NOT_SERVING then",
    },
    Metric {
        name: FEEDBACK_PAIRS_SERVED_TOTAL,
        kind: Kind::Counter,
        role: Role::Feedback,
        label: None,
        initial_label_values: &[],
        help: "pairs of clips served to raters",
    },
    Metric {
        name: FEEDBACK_VOTES_TOTAL,
        kind: Kind::Counter,
        role: Role::Feedback,
        label: Some("outcome"),
        initial_label_values: &["a", "b", "tie", "both_bad"],
        help: "votes stored, by outcome",
    },
    Metric {
        name: FEEDBACK_VOTES_FLAGGED_TOTAL,
        kind: Kind::Counter,
        role: Role::Feedback,
        label: None,
        initial_label_values: &[],
        help: "votes stored as flagged (channel \"flagged\", not trained on): part of a run of feedback.flag_same_side_run same-side votes from one client address",
    },
    Metric {
        name: FEEDBACK_REJECTED_TOTAL,
        kind: Kind::Counter,
        role: Role::Feedback,
        label: Some("reason"),
        initial_label_values: &[
            "malformed",
            "no_session",
            "csrf",
            "other_rater",
            "unknown_pair",
            "not_found",
            "duplicate_vote",
            "expired_pair",
            "too_large",
            "content_type",
            "not_listened",
            "comment_too_long",
            "invalid",
            "rate_limited",
            "bot_token",
            "internal",
            "unavailable",
        ],
        help: "requests refused, by reason (docs/feedback.md); nothing was stored",
    },
    Metric {
        name: FEEDBACK_LISTEN_SECONDS,
        kind: Kind::Histogram,
        role: Role::Feedback,
        label: None,
        initial_label_values: &[],
        help: "listening credited to both clips of a pair when its vote was stored",
    },
    Metric {
        name: FEEDBACK_PAIR_DRAW_SECONDS,
        kind: Kind::Histogram,
        role: Role::Feedback,
        label: None,
        initial_label_values: &[],
        help: "time to sample the two clips of a new pair",
    },
];

/// Describes `role`'s metrics (HELP lines) and starts its counters at zero. Call once the
/// recorder is installed, before serving.
pub fn register(role: Role) {
    for m in CATALOG.iter().filter(|m| m.role == role) {
        let unit = if m.name.ends_with("_seconds") {
            Some(Unit::Seconds)
        } else if m.name.ends_with("_bytes") {
            Some(Unit::Bytes)
        } else {
            None
        };
        match (m.kind, unit) {
            (Kind::Counter, _) => {
                describe_counter!(m.name, m.help);
                match m.label {
                    Some(label) => {
                        for v in m.initial_label_values {
                            metrics::counter!(m.name, label => *v).increment(0);
                        }
                    }
                    None => metrics::counter!(m.name).increment(0),
                }
            }
            (Kind::Gauge, Some(u)) => describe_gauge!(m.name, u, m.help),
            (Kind::Gauge, None) => describe_gauge!(m.name, m.help),
            (Kind::Histogram, Some(u)) => describe_histogram!(m.name, u, m.help),
            (Kind::Histogram, None) => describe_histogram!(m.name, m.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions_and_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for m in CATALOG {
            assert!(seen.insert(m.name), "{} listed twice", m.name);
            assert!(m.name.starts_with("musicrl_"), "{}", m.name);
            assert!(
                m.name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{}",
                m.name
            );
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                m.name
            );
            let prefix = match m.role {
                Role::Actor => "musicrl_actor_",
                Role::Learner => "musicrl_learner_",
                Role::RewardServer => "musicrl_reward_",
                Role::Feedback => "musicrl_feedback_",
            };
            assert!(
                m.name.starts_with(prefix),
                "{} is exported by {:?}",
                m.name,
                m.role
            );
            assert!(
                m.initial_label_values.is_empty() || m.label.is_some(),
                "{}",
                m.name
            );
        }
    }

    #[test]
    fn architecture_md_lists_exactly_the_catalog() {
        let doc = include_str!("../../../ARCHITECTURE.md");
        let listed: std::collections::BTreeSet<&str> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `musicrl_"))
            .filter_map(|l| l.split('`').next())
            .collect();
        let catalog: std::collections::BTreeSet<&str> = CATALOG
            .iter()
            .map(|m| &m.name["musicrl_".len()..])
            .collect();
        assert_eq!(
            listed, catalog,
            "the metrics table in ARCHITECTURE.md and the catalog differ"
        );
    }
}
