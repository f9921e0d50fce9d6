//! Transport security, bearer tokens and reward seals (`[security]`), for every role that
//! serves or calls gRPC; the wire types it checks come from `musicrl-common`.
//!
//! Threat model (also in `ARCHITECTURE.md` and `docs/operations.md`): the network between
//! pods and any client that can reach a port are untrusted; the learner and the reward
//! server (and the Secrets they read) are trusted. TLS keeps traffic private and, with
//! mutual TLS, admits only certified clients; bearer tokens give each caller a role and each
//! RPC the roles it admits; reward seals let the learner check that a trajectory's reward
//! was computed by a reward server for exactly that caption and those tokens, so an actor
//! (or anyone holding an actor token) cannot invent rewards.

pub mod pki;
pub mod seal;
pub mod tls;
pub mod tokens;

pub use seal::{RewardKeys, SealedContent, SpentSeals};
pub use tokens::{Permission, Role, TokenStore, authorize};

/// Reads a secret file, saying which key named it when it cannot.
pub(crate) fn read_secret(key: &str, path: &std::path::Path) -> musicrl_common::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        musicrl_common::Error::Config(musicrl_common::error::ConfigError::Invalid {
            field: key.to_string(),
            why: format!("cannot read {}: {e}", path.display()),
        })
    })
}
