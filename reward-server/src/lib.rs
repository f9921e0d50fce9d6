//! The reward server: scorers behind one trait, combined under configured weights, served
//! over gRPC (`musicrl.v1.RewardService`).
//!
//! Architecture invariant: actors never compute rewards themselves; every reward comes from
//! a scorer behind [`scorer::Scorer`], so a model served elsewhere plugs in as a scorer.

pub mod batcher;
pub mod combine;
pub mod error;
pub mod reload;
pub mod scorer;
pub mod service;

pub use combine::RewardModel;
pub use error::{Result, RewardError};
pub use service::serve;
