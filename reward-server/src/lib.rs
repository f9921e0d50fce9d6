//! The reward server: the reward model of `musicrl-scoring` (scorers behind one trait,
//! combined under configured weights) served over gRPC (`musicrl.v1.RewardService`), with
//! batching and hot reload.
//!
//! Architecture invariant: actors never compute rewards themselves; every reward comes from
//! a scorer behind [`scorer::Scorer`], so a model served elsewhere plugs in as a scorer.

pub mod batcher;
pub mod reload;
pub mod service;

pub use musicrl_scoring::{Result, RewardError, RewardModel, combine, error, scorer};
pub use service::serve;
