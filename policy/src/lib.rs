//! The policy crate: model families a musicrl policy can be, loaded by the reference
//! implementation's tensor names.
//!
//! Today it holds the MusicGen family ([`musicgen`]): the T5 text encoder, the projection
//! into the decoder, the decoder over delayed EnCodec codebooks, the delay pattern, sampling
//! (greedy, temperature, top-k, classifier-free guidance) and per-code log-probabilities.
//! The built-in melody transformer still lives in `musicrl-common::policy` and moves here
//! next (ARCHITECTURE.md, "The policy crate").
//!
//! This crate does no networking and knows nothing of gRPC or of the roles; its only IO is
//! reading a model folder.

pub mod error;
pub mod musicgen;

pub use error::PolicyError;
