//! The learner: receives trajectories, maximises the KL-regularised REINFORCE objective,
//! and broadcasts each new parameter version.
//!
//! Architecture invariant: the learner is the only process that changes parameters and the
//! only one that assigns policy versions.

pub mod checkpoint;
pub mod error;
pub mod family;
pub mod ledger;
pub mod loss;
pub mod musicgen;
pub mod named_run;
pub mod publish;
pub mod run;
pub mod service;
pub mod staleness;
pub mod trainer;
pub mod trajlog;

pub use error::{LearnerError, Result};
pub use run::{LearnerOutcome, serve};
