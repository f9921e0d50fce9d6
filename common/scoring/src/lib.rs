//! The reward model in process: scorers behind one trait ([`scorer::Scorer`]: the learned
//! text, quality and preference models, the rule-based attributes and form, a remote scorer
//! reached over gRPC, the token-fraction test scorer) combined under configured weights
//! ([`combine::RewardModel`]).
//!
//! The reward server (`musicrl-reward`) serves it over gRPC; the feedback service scores its
//! clips with it in process. Neither role imports the other for it.
//!
//! Architecture invariant: actors never compute rewards themselves; every reward comes from
//! a scorer behind [`scorer::Scorer`], so a model served elsewhere plugs in as a scorer.

pub mod combine;
pub mod error;
pub mod scorer;

pub use combine::RewardModel;
pub use error::{Result, RewardError};
