//! `[security]`: transport security, bearer tokens and reward seals, shared by every role.
//!
//! Everything is off by default (the embedded default runs on loopback, one user); the
//! Kubernetes overlays turn it on with files mounted from Secrets. Paths are files so
//! cert-manager or a Secret can supply them; tokens are re-read when their file changes, so
//! they rotate without a restart; certificates and reward keys are read at start-up and
//! rotate with a rolling restart (`docs/operations.md`, "Security").

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Servers: this server's certificate chain (PEM). With `tls_key`, every gRPC listener
    /// of the process serves TLS only.
    pub tls_cert: PathBuf,
    /// Servers: the private key of `tls_cert` (PEM).
    pub tls_key: PathBuf,
    /// Servers: mutual TLS: clients must present a certificate signed by this CA (PEM).
    pub tls_client_ca: PathBuf,
    /// Clients: the CA that signs the servers' certificates (PEM). Required to reach an
    /// `https://` URL.
    pub tls_ca: PathBuf,
    /// Clients, mutual TLS: this client's certificate chain and key (PEM).
    pub tls_client_cert: PathBuf,
    pub tls_client_key: PathBuf,
    /// Clients: the name to verify in the server's certificate instead of the URL's host.
    pub tls_server_name: String,
    /// Servers: the accepted bearer tokens, one `ROLE TOKEN` a line (roles: actor,
    /// operator, admin; `#` starts a comment). Empty accepts every call (loopback use).
    pub tokens_file: PathBuf,
    /// Clients: this process's bearer token (the file's first line).
    pub token_file: PathBuf,
    /// Reward seals: one secret a line (at least 32 bytes each). The reward server seals
    /// every score with the first; the learner accepts a seal of any of them and, when the
    /// file is set, refuses trajectories without a valid one. Empty: no seals.
    pub reward_keys_file: PathBuf,
    /// The learner refuses a seal older than this many seconds (a replayed old score).
    pub reward_seal_max_age_seconds: f64,
    /// Let a learner or reward server listen on an address other hosts can reach without
    /// authentication (no TLS, or TLS without client certificates or tokens). Off: such a
    /// server refuses to start, saying how to secure it.
    pub allow_insecure: bool,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            tls_client_ca: PathBuf::new(),
            tls_ca: PathBuf::new(),
            tls_client_cert: PathBuf::new(),
            tls_client_key: PathBuf::new(),
            tls_server_name: String::new(),
            tokens_file: PathBuf::new(),
            token_file: PathBuf::new(),
            reward_keys_file: PathBuf::new(),
            reward_seal_max_age_seconds: 900.0,
            allow_insecure: false,
        }
    }
}

impl SecurityConfig {
    /// Servers serve TLS.
    pub fn server_tls(&self) -> bool {
        !self.tls_cert.as_os_str().is_empty()
    }

    /// Servers know who calls: TLS with client certificates or bearer tokens.
    pub fn authenticates_clients(&self) -> bool {
        self.server_tls()
            && !(self.tls_client_ca.as_os_str().is_empty()
                && self.tokens_file.as_os_str().is_empty())
    }

    /// Refuses to serve `field` = `bound` to other hosts without authentication (unless
    /// `allow_insecure`): on loopback only this machine's processes can call.
    pub fn check_exposure(
        &self,
        field: &str,
        bound: std::net::SocketAddr,
    ) -> Result<(), ConfigError> {
        if bound.ip().is_loopback() || self.authenticates_clients() || self.allow_insecure {
            return Ok(());
        }
        Err(ConfigError::Invalid {
            field: field.to_string(),
            why: format!(
                "{bound} can be reached from other hosts, and without TLS and client \
                 certificates or tokens anyone who reaches it can push trajectories, read the \
                 policy or take scores. Secure it ([security]: `musicrl security init DIR` writes \
                 the files and prints the settings), listen on 127.0.0.1, or set \
                 security.allow_insecure = true to accept the risk"
            ),
        })
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &str, why: &str| {
            Err(ConfigError::Invalid {
                field: field.to_string(),
                why: why.to_string(),
            })
        };
        let set = |p: &PathBuf| !p.as_os_str().is_empty();
        if set(&self.tls_cert) != set(&self.tls_key) {
            return bad(
                "security.tls_cert",
                "tls_cert and tls_key go together: set both or neither",
            );
        }
        if set(&self.tls_client_ca) && !set(&self.tls_cert) {
            return bad(
                "security.tls_client_ca",
                "mutual TLS needs the server's own certificate (tls_cert, tls_key)",
            );
        }
        if set(&self.tls_client_cert) != set(&self.tls_client_key) {
            return bad(
                "security.tls_client_cert",
                "tls_client_cert and tls_client_key go together: set both or neither",
            );
        }
        if set(&self.tls_client_cert) && !set(&self.tls_ca) {
            return bad(
                "security.tls_client_cert",
                "a client certificate is only sent over TLS: set tls_ca too",
            );
        }
        if !(self.reward_seal_max_age_seconds.is_finite() && self.reward_seal_max_age_seconds > 0.0)
        {
            return bad(
                "security.reward_seal_max_age_seconds",
                "must be a positive number of seconds",
            );
        }
        Ok(())
    }

    /// The file-valued keys, for locating inputs and for error messages.
    pub fn files(&self) -> [(&'static str, &PathBuf); 9] {
        [
            ("security.tls_cert", &self.tls_cert),
            ("security.tls_key", &self.tls_key),
            ("security.tls_client_ca", &self.tls_client_ca),
            ("security.tls_ca", &self.tls_ca),
            ("security.tls_client_cert", &self.tls_client_cert),
            ("security.tls_client_key", &self.tls_client_key),
            ("security.tokens_file", &self.tokens_file),
            ("security.token_file", &self.token_file),
            ("security.reward_keys_file", &self.reward_keys_file),
        ]
    }
}
