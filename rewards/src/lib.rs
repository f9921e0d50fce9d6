//! The reward models of the embedded default, trained in the project: text adherence (a
//! MuLan-style two-tower model), quality (a MOS-style regressor) and, later, user preference
//! (a Bradley–Terry model). Simplified stand-ins for the paper's models, named as such; they
//! score audio rendered from tokens by [`musicrl_music::render`].
//!
//! Architecture invariant: this crate trains and runs models; it knows nothing of gRPC. The
//! reward server wraps these models as scorers.

pub mod clips;
pub mod degrade;
pub mod encoder;
pub mod error;
pub mod features;
pub mod form;
pub mod negatives;
pub mod preference;
pub mod quality;
pub mod resample;
pub mod store;
pub mod text;
pub mod theory;

pub use error::{Error, Result};
