//! Shared machinery of every musicrl role: configuration, domain types, the policy network
//! (burn), its sampler and parameter transport, the wire conversions, and telemetry set-up.
//!
//! Architecture invariant: this crate is the only one that converts wire types to domain
//! types (`wire`), and the only one that defines the policy network.

pub mod caption;
pub mod config;
pub mod device;
pub mod error;
pub mod fsutil;
pub mod grpc;
pub mod metrics_catalog;
pub mod policy;
pub mod prompts;
pub mod security;
pub mod telemetry;
pub mod types;
pub mod wire;

pub use config::Config;
pub use error::{Error, Result};
pub use types::{PolicyVersion, Trajectory};
