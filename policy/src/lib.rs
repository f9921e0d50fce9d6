//! The policy crate: model families a musicrl policy can be, loaded by the reference
//! implementation's tensor names.
//!
//! Two families:
//! - [`melody`]: the built-in melody transformer over the 64-token symbolic vocabulary, its
//!   caption encoder, sampler, CPU rollout engine, divergence and parameter formats
//!   (burnpack, safetensors f32/bf16, the broadcast blob);
//! - [`musicgen`]: the T5 text encoder, the projection into the decoder, the decoder over
//!   delayed EnCodec codebooks, the delay pattern, sampling (greedy, temperature, top-k,
//!   classifier-free guidance), per-code log-probabilities and the trainable value head.
//!
//! [`family`] is the one interface the roles use: an actor samples through
//! [`Rollout`] (made by [`rollout`] from `policy.family`), the learner broadcasts
//! [`Parameters`]; neither knows a family's layout.
//!
//! [`encodec`] is MusicGen's codec, EnCodec's decoder (codes → PCM), loaded from a MusicGen
//! or a standalone EnCodec folder; the reward server hears a MusicGen clip through it.
//!
//! Beside them, [`device`] chooses the process's burn device and [`PolicyVersion`] numbers
//! parameter versions. This crate does no networking and knows nothing of gRPC or of the
//! roles; its only IO is reading and writing model files. It depends on one project crate,
//! the configuration (a leaf).

pub mod device;
pub mod encodec;
pub mod error;
pub mod family;
pub mod melody;
pub mod musicgen;
pub mod optim;
mod version;

pub use error::{PolicyError, Result};
pub use family::{Parameters, Rollout, rollout};
pub use melody::params::{ParameterBlob, ParameterEncoding};
pub use melody::sampling::Sampled;
pub use version::PolicyVersion;
