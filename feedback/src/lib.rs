//! The feedback service: people (and the simulated listeners' bot) listen to two clips of a
//! caption and vote A, B, tie or both bad. An axum HTTP server with a plain page (sheet music by
//! the bundled abcjs, WAV from the project's synthesizer, MIDI and ABC downloads) and a small
//! JSON API, over the preference database.
//!
//! Architecture invariant: this crate decides what a valid vote is (listened, on time, once,
//! by the rater it was served to) and stores it through `musicrl-prefdb`; it does not train or
//! score reward models.

pub mod api;
pub mod assets;
pub mod bot;
pub mod clips;
pub mod error;
pub mod guard;
pub mod limits;
pub mod server;
pub mod session;
pub mod source;

pub use error::{ApiError, Error, Result};
pub use server::{router, serve, state, state_from_config};
