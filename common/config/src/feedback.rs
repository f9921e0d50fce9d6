//! `[feedback]`: the listening and voting service (`musicrl feedback`) and its pair source.
//!
//! The defaults serve the embedded default on loopback with a SQLite file in the working
//! directory: pairs are two samples of the base policy for a training prompt, and a vote
//! counts only after both clips were played for `min_listen_seconds` (or to their end).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeedbackConfig {
    /// HTTP listen address.
    pub listen: String,
    /// Prometheus /metrics address; "" disables.
    pub metrics_listen: String,
    /// The preference database: `sqlite:PATH` (created if missing) or `postgres://…`.
    pub db: String,
    /// Rendered clips (WAV, MIDI, ABC), one file a clip and format; the service never serves
    /// a file from anywhere else.
    pub clip_cache: PathBuf,
    /// Captions, one a line (pairs are drawn for a random one).
    pub prompts: PathBuf,
    /// Where pairs come from: `policy` (two samples of `policy`), `checkpoints` (an A/B of
    /// two of `checkpoints`, one clip each: the paper's side-by-side evaluation) or `learner`
    /// (two samples of the newest parameters the learner at `learner` broadcast: the pairs
    /// follow a running RL job).
    pub source: String,
    /// The learner the `learner` source subscribes to; empty: `actor.learner`.
    pub learner: String,
    /// The policy of the `policy` source; empty: `learner.init_policy`.
    pub policy: PathBuf,
    /// The models of the `checkpoints` source, `NAME=PATH` or `PATH` (named by its folder).
    pub checkpoints: Vec<String>,
    /// Each clip must be played this long (or to its end, if shorter) before a vote counts.
    pub min_listen_seconds: f64,
    /// A served pair can be voted on for this long.
    pub pair_ttl_seconds: u64,
    /// Longest comment accepted, in characters.
    pub max_comment_chars: usize,
    /// Per rater: votes and pairs a minute (token buckets; a burst of this size is allowed).
    pub votes_per_minute: u32,
    pub pairs_per_minute: u32,
    /// Per client address, all its sessions together: votes and pairs a minute, and new
    /// sessions an hour (a client that drops its cookie to get a fresh session each time
    /// is bound by these). The bot with the bot token is exempt (its raters are many).
    pub votes_per_minute_per_address: u32,
    pub pairs_per_minute_per_address: u32,
    pub sessions_per_hour_per_address: u32,
    /// Per rater: votes in any 24 hours.
    pub votes_per_rater_per_day: u32,
    /// The request header that carries the client's address when the service sits behind
    /// one trusted proxy (an ingress): `x-forwarded-for` takes its last entry, the one the
    /// proxy appended. Empty: the TCP peer's address (no proxy; a header is then ignored,
    /// since a client could write anything in it).
    pub client_address_header: String,
    /// Votes for the same side (A, or B) in a row from one client address from which the
    /// service flags them: they are stored with channel `flagged`, exported, counted
    /// (`musicrl_feedback_votes_flagged_total`) and never trained on unless asked. Sides are
    /// shuffled per pair, so an honest listener's run of N is about 2^-(N-1) likely. 0: off.
    pub flag_same_side_run: u32,
    /// A file holding the bot's token (at least 32 bytes): requests that carry it in
    /// `x-musicrl-bot-token` are the simulated listeners (channel `bot`), exempt from the
    /// per-address limits; a request that claims to be the bot without it is refused.
    /// Empty: no bot is trusted (a bot is limited like anyone, and its votes are `web`).
    pub bot_token_file: PathBuf,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Seeds the samplers (each pair's seeds are recorded with its clips).
    pub seed: u64,
    /// File with the server secret (at least 32 bytes) that keys rater ids and CSRF tokens,
    /// so they survive restarts and agree across replicas (a Kubernetes Secret). Empty: a
    /// random secret per start (sessions end with the process).
    pub secret_file: PathBuf,
    /// Score every clip with the `[reward]` components (in process) when it is drawn, and
    /// store the scores with it: the provenance of what the reward models thought of the
    /// clips listeners chose between.
    pub score_clips: bool,
    /// Most requests served at once, all clients together; later ones wait their turn with
    /// their bodies unread (each body is at most `max_body_bytes`): the memory requests can
    /// hold is bounded however many clients connect.
    pub max_concurrent_requests: usize,
    /// How often the service checks that its database takes writes, in seconds; `/healthz`
    /// answers 503 with the reason while it does not (a readiness probe then takes the pod
    /// out of the Service).
    pub health_check_seconds: f64,
}

impl Default for FeedbackConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            metrics_listen: "127.0.0.1:9103".into(),
            db: "sqlite:feedback.db".into(),
            clip_cache: PathBuf::from("feedback-clips"),
            prompts: PathBuf::from("data/prompts/train.txt"),
            source: "policy".into(),
            learner: String::new(),
            policy: PathBuf::new(),
            checkpoints: Vec::new(),
            min_listen_seconds: 5.0,
            pair_ttl_seconds: 1800,
            max_comment_chars: 1000,
            votes_per_minute: 30,
            pairs_per_minute: 60,
            votes_per_minute_per_address: 60,
            pairs_per_minute_per_address: 120,
            sessions_per_hour_per_address: 60,
            votes_per_rater_per_day: 300,
            client_address_header: String::new(),
            flag_same_side_run: 12,
            bot_token_file: PathBuf::new(),
            max_body_bytes: 16 * 1024,
            seed: 0,
            secret_file: PathBuf::new(),
            score_clips: true,
            max_concurrent_requests: 256,
            health_check_seconds: 5.0,
        }
    }
}

impl FeedbackConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, why: String| {
            Err(ConfigError::Invalid {
                field: format!("feedback.{field}"),
                why,
            })
        };
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(
                "listen",
                format!("{:?} is not HOST:PORT (an IP address)", self.listen),
            );
        }
        if !(self.db.starts_with("sqlite:")
            || self.db.starts_with("postgres://")
            || self.db.starts_with("postgresql://"))
        {
            return bad(
                "db",
                "expected sqlite:PATH or postgres://USER@HOST/DB".into(),
            );
        }
        match self.source.as_str() {
            "policy" | "learner" => {}
            "checkpoints" if self.checkpoints.len() >= 2 => {}
            "checkpoints" => {
                return bad(
                    "checkpoints",
                    format!(
                        "the checkpoints source needs at least two, {} given",
                        self.checkpoints.len()
                    ),
                );
            }
            other => {
                return bad(
                    "source",
                    format!("{other:?} is not policy, checkpoints or learner"),
                );
            }
        }
        if !self.min_listen_seconds.is_finite() || self.min_listen_seconds < 0.0 {
            return bad(
                "min_listen_seconds",
                format!("{} must be finite and >= 0", self.min_listen_seconds),
            );
        }
        if self.pair_ttl_seconds == 0 {
            return bad("pair_ttl_seconds", "must be at least 1".into());
        }
        for (key, v) in [
            ("votes_per_minute", self.votes_per_minute),
            ("pairs_per_minute", self.pairs_per_minute),
            (
                "votes_per_minute_per_address",
                self.votes_per_minute_per_address,
            ),
            (
                "pairs_per_minute_per_address",
                self.pairs_per_minute_per_address,
            ),
            (
                "sessions_per_hour_per_address",
                self.sessions_per_hour_per_address,
            ),
            ("votes_per_rater_per_day", self.votes_per_rater_per_day),
        ] {
            if v == 0 {
                return bad(key, "rate limits must be at least 1".into());
            }
        }
        if !self.client_address_header.is_empty()
            && header_name_ok(&self.client_address_header).is_err()
        {
            return bad(
                "client_address_header",
                format!(
                    "{:?} is not an HTTP header name",
                    self.client_address_header
                ),
            );
        }
        if !(self.health_check_seconds.is_finite()
            && (0.05..=3600.0).contains(&self.health_check_seconds))
        {
            return bad(
                "health_check_seconds",
                format!(
                    "{} must be between 0.05 and 3600 seconds",
                    self.health_check_seconds
                ),
            );
        }
        if self.max_concurrent_requests == 0 {
            return bad("max_concurrent_requests", "must be positive".into());
        }
        if self.max_body_bytes < 256 {
            return bad("max_body_bytes", "must be at least 256".into());
        }
        Ok(())
    }

    /// The checkpoints as (name, path): `NAME=PATH`, or a path named by its folder.
    pub fn named_checkpoints(&self) -> Vec<(String, PathBuf)> {
        self.checkpoints
            .iter()
            .map(|c| match c.split_once('=') {
                Some((name, path)) => (name.to_string(), PathBuf::from(path)),
                None => {
                    let path = PathBuf::from(c);
                    let name = path
                        .parent()
                        .and_then(|p| p.file_name())
                        .or_else(|| path.file_stem())
                        .map_or_else(|| c.clone(), |n| n.to_string_lossy().into_owned());
                    (name, path)
                }
            })
            .collect()
    }
}

/// Whether `name` is a valid HTTP header name (lower-case token characters).
fn header_name_ok(name: &str) -> Result<(), ()> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_name_their_field() {
        FeedbackConfig::default()
            .validate()
            .expect("defaults are valid");
        let e = FeedbackConfig {
            source: "checkpoints".into(),
            checkpoints: vec!["a=x.bpk".into()],
            ..FeedbackConfig::default()
        }
        .validate()
        .expect_err("one checkpoint is no A/B");
        assert!(e.to_string().contains("feedback.checkpoints"), "{e}");
        let e = FeedbackConfig {
            db: "mysql://x".into(),
            ..FeedbackConfig::default()
        }
        .validate()
        .expect_err("not spoken");
        assert!(e.to_string().contains("feedback.db"), "{e}");
    }

    #[test]
    fn checkpoints_are_named_by_flag_or_folder() {
        let c = FeedbackConfig {
            checkpoints: vec![
                "base=models/base/policy.bpk".into(),
                "runs/rl-u/policy.bpk".into(),
            ],
            ..FeedbackConfig::default()
        };
        let named = c.named_checkpoints();
        assert_eq!(named[0].0, "base");
        assert_eq!(
            named[1],
            ("rl-u".into(), PathBuf::from("runs/rl-u/policy.bpk"))
        );
    }
}
