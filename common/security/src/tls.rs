//! TLS for every gRPC listener and client, from PEM files (`[security]`).
//!
//! A server with `tls_cert`/`tls_key` serves TLS only; with `tls_client_ca` it also requires
//! a client certificate signed by that CA (mutual TLS). A client reaches `https://` URLs
//! trusting `tls_ca` (the project never trusts the system's roots: its servers are
//! certified by the operator's CA), presenting `tls_client_cert` when set. Certificates are
//! read at start-up: rotating them is a rolling restart (cert-manager renews the Secret,
//! `kubectl rollout restart` picks it up; see `docs/operations.md`).

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use super::read_secret;
use musicrl_config::SecurityConfig;

/// The server's TLS configuration, or None when TLS is off.
pub fn server(config: &SecurityConfig) -> musicrl_common::Result<Option<ServerTlsConfig>> {
    if !config.server_tls() {
        return Ok(None);
    }
    let cert = read_secret("security.tls_cert", &config.tls_cert)?;
    let key = read_secret("security.tls_key", &config.tls_key)?;
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if !config.tls_client_ca.as_os_str().is_empty() {
        let ca = read_secret("security.tls_client_ca", &config.tls_client_ca)?;
        tls = tls.client_ca_root(Certificate::from_pem(ca));
    }
    Ok(Some(tls))
}

/// The client's TLS configuration for a server reached by the name `host`, or None when
/// TLS is off (`tls_ca` unset).
pub fn client(
    config: &SecurityConfig,
    host: &str,
) -> musicrl_common::Result<Option<ClientTlsConfig>> {
    if config.tls_ca.as_os_str().is_empty() {
        return Ok(None);
    }
    let ca = read_secret("security.tls_ca", &config.tls_ca)?;
    let name = if config.tls_server_name.is_empty() {
        host.trim_start_matches('[').trim_end_matches(']')
    } else {
        &config.tls_server_name
    };
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(name.to_string());
    if !config.tls_client_cert.as_os_str().is_empty() {
        let cert = read_secret("security.tls_client_cert", &config.tls_client_cert)?;
        let key = read_secret("security.tls_client_key", &config.tls_client_key)?;
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Ok(Some(tls))
}

/// Applies [`client`] to an endpoint, checking the URL's scheme agrees with the
/// configuration (an `https://` URL without `tls_ca`, or `tls_ca` with an `http://` URL,
/// would otherwise fail on the first call, or send tokens in the clear).
pub fn endpoint(
    config: &SecurityConfig,
    endpoint: tonic::transport::Endpoint,
    host: &str,
) -> musicrl_common::Result<tonic::transport::Endpoint> {
    let https = endpoint.uri().scheme_str() == Some("https");
    let uri = endpoint.uri().clone();
    match client(config, host)? {
        Some(tls) if https => endpoint
            .tls_config(tls)
            .map_err(|e| musicrl_common::Error::invalid(format!("TLS for {uri}: {e}"))),
        Some(_) => Err(musicrl_common::Error::invalid(format!(
            "{} is plain http but security.tls_ca is set: use an https:// URL",
            endpoint.uri()
        ))),
        None if https => Err(musicrl_common::Error::invalid(format!(
            "{} is https: set security.tls_ca to the CA that signs the server's certificate",
            endpoint.uri()
        ))),
        None => Ok(endpoint),
    }
}
