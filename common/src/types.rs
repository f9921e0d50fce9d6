//! Domain types shared by every role. Wire types never appear here.

pub use musicrl_policy::PolicyVersion;

/// One sampled sequence, scored, tagged with the policy version that produced it.
///
/// Invariant (checked at the wire edge): `tokens.len() == behaviour_logprobs.len()`, every
/// token is below the policy's vocabulary size, the length is within `1..=max_tokens`, and
/// every float is finite.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Trajectory {
    /// Who sampled it: (actor_id, actor_run, sequence), unique across a run.
    pub id: TrajectoryId,
    /// The learner incarnation whose `policy_version` sampled it.
    pub learner_run: u64,
    /// The reward server's seal over the scored content, when the server signs.
    pub seal: Option<RewardSeal>,
    pub actor_id: String,
    pub policy_version: PolicyVersion,
    pub caption: String,
    pub tokens: Vec<u32>,
    /// log π_behaviour(a_t | s_t) at the sampling temperature.
    pub behaviour_logprobs: Vec<f32>,
    /// The combined sequence-level reward.
    pub reward: f32,
    /// Raw component scores by name.
    pub components: Vec<(String, f32)>,
    /// Per component (aligned with `components`, or empty): the scores of the windows it
    /// averaged (the text model's three, the quality model's head and tail).
    pub component_windows: Vec<Vec<f32>>,
    pub scorer_version: String,
}

/// A trajectory's identity: the actor, the actor process's incarnation, and the position in
/// that incarnation's sampling order (0, 1, 2, … without gaps).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TrajectoryId {
    pub actor_run: u64,
    pub sequence: u64,
}

/// A fresh incarnation id (an actor's `actor_run`, a learner's `learner_run`): random and
/// never 0, which on the wire means "none".
pub fn fresh_run_id() -> u64 {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

/// A reward server's MAC over what it scored (`crate::security::seal`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewardSeal {
    pub signed_at_unix_ms: u64,
    pub mac: [u8; 32],
    pub key_id: String,
    /// Drawn at random for this seal alone, sealed with the rest: what makes a seal
    /// spendable once.
    pub nonce: [u8; 16],
}

/// A reward component's identity.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentInfo {
    pub name: String,
    pub version: String,
    pub weight: f32,
}

/// The reward server's answer for one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleScore {
    pub reward: f32,
    /// Raw component scores, aligned with the response's components.
    pub components: Vec<f32>,
    /// Per component (aligned with `components`, or empty): its window scores.
    pub windows: Vec<Vec<f32>>,
    /// The server's seal over this sample (when it holds reward keys).
    pub seal: Option<RewardSeal>,
}

/// A snapshot of the totals, as Status, `summary.json` and the metrics report them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Accounting {
    pub sampled: u64,
    pub received: u64,
    pub duplicates: u64,
    pub trained: u64,
    pub pending: u64,
    pub rejected: std::collections::BTreeMap<String, u64>,
    pub dropped: std::collections::BTreeMap<String, u64>,
    pub lost: std::collections::BTreeMap<String, u64>,
    pub unidentified: u64,
    pub sources: u64,
}

impl Accounting {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }
    pub fn lost_total(&self) -> u64 {
        self.lost.values().sum()
    }

    /// The two invariants, as a message naming the numbers when one fails.
    pub fn check(&self) -> Result<(), String> {
        if self.sampled != self.received + self.lost_total() {
            return Err(format!(
                "sampled {} != received {} + lost {}",
                self.sampled,
                self.received,
                self.lost_total()
            ));
        }
        let out = self.trained + self.dropped_total() + self.rejected_total() + self.pending;
        if self.received != out {
            return Err(format!(
                "received {} != trained {} + dropped {} + rejected {} + pending {}",
                self.received,
                self.trained,
                self.dropped_total(),
                self.rejected_total(),
                self.pending
            ));
        }
        Ok(())
    }
}
