//! Shared machinery of the networked musicrl roles: domain types, the wire conversions and
//! gRPC server set-up. Security (TLS, tokens, seals) builds on it in `musicrl-security`.
//!
//! The configuration is its own crate (`musicrl-config`, a leaf), the policy families theirs
//! (`musicrl-policy`), the experiment trackers (`musicrl-tracking`) and logging and metrics
//! (`musicrl-telemetry`) theirs; this crate re-exports none of them.
//!
//! Architecture invariant: this crate is the only one that converts wire types to domain
//! types (`wire`).

pub mod error;
pub mod grpc;
pub mod prompts;
pub mod types;
pub mod wire;

pub use error::{Error, Result};
pub use types::{PolicyVersion, Trajectory};
