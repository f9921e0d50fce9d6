//! The reward model in process: scorers behind one trait ([`scorer::Scorer`]: the learned
//! text, quality and preference models, the rule-based attributes and form, a remote scorer
//! reached over gRPC, the token-fraction and loudness test scorers) combined under configured
//! weights ([`combine::RewardModel`]). An audio-token policy's clips are heard through its
//! codec ([`audio::Codec`], EnCodec's decoder), decoded once per request.
//!
//! The reward server (`musicrl-reward`) serves it over gRPC; the feedback service scores its
//! clips with it in process. Neither role imports the other for it.
//!
//! Architecture invariant: actors never compute rewards themselves; every reward comes from
//! a scorer behind [`scorer::Scorer`], so a model served elsewhere plugs in as a scorer.

pub mod audio;
pub mod combine;
pub mod error;
pub mod scorer;

pub use combine::RewardModel;
pub use error::{Result, RewardError};
