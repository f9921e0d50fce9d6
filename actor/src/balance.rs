//! Per-request balancing over every reward-server replica.
//!
//! A gRPC channel to a Kubernetes ClusterIP Service is one long-lived HTTP/2 connection to one
//! pod, so replicas added later get no share of an actor's calls. Instead the actor resolves
//! each configured reward URL itself — a headless Service's name resolves to every ready pod —
//! keeps one connection per address, and spreads calls over them per request
//! (power-of-two-choices on in-flight load, tower's balancer inside tonic). The names are
//! re-resolved every `actor.reward_resolve_seconds`: new replicas join, gone ones leave, and a
//! failed lookup keeps the addresses it had.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint, Uri};

use musicrl_config::SecurityConfig;

use crate::ActorError;

/// One configured URL, split for resolution.
#[derive(Debug, Clone, PartialEq)]
struct Target {
    scheme: String,
    host: String,
    port: u16,
}

fn parse_targets(urls: &str) -> Result<Vec<Target>, ActorError> {
    let bad = |url: &str, message: String| ActorError::Endpoint {
        url: url.to_string(),
        message,
    };
    let mut out = Vec::new();
    for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let uri: Uri = url.parse().map_err(|e| bad(url, format!("{e}")))?;
        let scheme = uri.scheme_str().unwrap_or("http").to_string();
        if scheme != "http" && scheme != "https" {
            return Err(bad(url, format!("scheme {scheme:?} is not http or https")));
        }
        let host = uri
            .host()
            .ok_or_else(|| bad(url, "no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        out.push(Target { scheme, host, port });
    }
    if out.is_empty() {
        return Err(bad(urls, "no reward server URL given".into()));
    }
    Ok(out)
}

/// The endpoint of one resolved address; over TLS the certificate is checked against the
/// configured host name, not the address.
fn endpoint(
    security: &SecurityConfig,
    scheme: &str,
    host: &str,
    addr: SocketAddr,
) -> Result<Endpoint, ActorError> {
    let url = format!("{scheme}://{addr}");
    let bad = |message: String| ActorError::Endpoint {
        url: url.clone(),
        message,
    };
    let e = Endpoint::from_shared(url.clone())
        .map(|e| {
            e.connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
        })
        .map_err(|e| bad(e.to_string()))?;
    musicrl_security::tls::endpoint(security, e, host).map_err(|e| bad(e.to_string()))
}

/// Every address the targets resolve to now; `None` for a target whose lookup failed.
async fn resolve(targets: &[Target]) -> Vec<Option<BTreeSet<(String, String, SocketAddr)>>> {
    let mut out = Vec::with_capacity(targets.len());
    for t in targets {
        match tokio::net::lookup_host((t.host.as_str(), t.port)).await {
            Ok(addrs) => out.push(Some(
                addrs
                    .map(|a| (t.scheme.clone(), t.host.clone(), a))
                    .collect(),
            )),
            Err(e) => {
                tracing::warn!(host = %t.host, port = t.port, error = %e, "cannot resolve a reward server; keeping its last addresses");
                out.push(None);
            }
        }
    }
    out
}

/// A channel that spreads each call over every address the comma-separated `urls` resolve
/// to, re-resolved every `every`. Must be called inside a tokio runtime; the resolver task
/// ends when the channel is dropped.
pub fn reward_channel(
    urls: &str,
    every: Duration,
    security: &SecurityConfig,
) -> Result<Channel, ActorError> {
    let targets = parse_targets(urls)?;
    // A scheme that disagrees with the TLS configuration is an error now, not at the first
    // call.
    for t in &targets {
        let addr = SocketAddr::from(([127, 0, 0, 1], t.port));
        endpoint(security, &t.scheme, &t.host, addr)?;
    }
    let security = security.clone();
    let (channel, tx) = Channel::balance_channel::<SocketAddr>(64);
    tokio::spawn(async move {
        // Per target, the addresses it contributed last time (kept when a lookup fails).
        let mut last: Vec<BTreeSet<(String, String, SocketAddr)>> =
            vec![BTreeSet::new(); targets.len()];
        let mut live: BTreeSet<SocketAddr> = BTreeSet::new();
        loop {
            for (i, found) in resolve(&targets).await.into_iter().enumerate() {
                if let Some(found) = found {
                    last[i] = found;
                }
            }
            let want: BTreeSet<(String, String, SocketAddr)> =
                last.iter().flatten().cloned().collect();
            let want_addrs: BTreeSet<SocketAddr> = want.iter().map(|(_, _, a)| *a).collect();
            for (scheme, host, addr) in &want {
                if live.contains(addr) {
                    continue;
                }
                match endpoint(&security, scheme, host, *addr) {
                    Ok(e) => {
                        if tx.send(Change::Insert(*addr, e)).await.is_err() {
                            return;
                        }
                        tracing::info!(%addr, "reward server replica added");
                        live.insert(*addr);
                    }
                    Err(e) => tracing::warn!(%addr, error = %e, "skipping a reward server address"),
                }
            }
            for addr in live.difference(&want_addrs).copied().collect::<Vec<_>>() {
                if tx.send(Change::Remove(addr)).await.is_err() {
                    return;
                }
                tracing::info!(%addr, "reward server replica removed");
                live.remove(&addr);
            }
            metrics::gauge!(musicrl_telemetry::metrics_catalog::ACTOR_REWARD_REPLICAS)
                .set(live.len() as f64);
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = tx.closed() => return,
            }
        }
    });
    Ok(channel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_targets() {
        let t = parse_targets("http://a:1, https://b, http://[::1]:7").unwrap();
        assert_eq!(
            t,
            vec![
                Target {
                    scheme: "http".into(),
                    host: "a".into(),
                    port: 1
                },
                Target {
                    scheme: "https".into(),
                    host: "b".into(),
                    port: 443
                },
                Target {
                    scheme: "http".into(),
                    host: "::1".into(),
                    port: 7
                },
            ]
        );
        assert!(parse_targets("").is_err());
        assert!(parse_targets("ftp://x:1").is_err());
    }
}
