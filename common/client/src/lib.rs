//! The roles' gRPC clients and what every process that follows the learner shares: a lazy
//! channel (TLS from `[security]`), the learner client, capped exponential backoff, and the
//! parameter follower ([`follow`]: subscribe, reassemble, publish the newest version).
//!
//! The actor samples from what it follows; the feedback service follows the learner to
//! serve pairs of the newest version. Both use this crate; neither imports the other.

pub mod follow;

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tonic::transport::{Channel, Endpoint};

use musicrl_config::Config;
use musicrl_proto::v1::learner_service_client::LearnerServiceClient;

/// What can go wrong making a client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Common(#[from] musicrl_common::Error),
    #[error("bad endpoint {url:?}: {message}")]
    Endpoint { url: String, message: String },
}

/// Result with [`ClientError`].
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A bearer token as sent.
pub type Token = tonic::metadata::MetadataValue<tonic::metadata::Ascii>;

/// A client of the learner at `url` as an actor makes it: TLS and compression from the
/// configuration (the learner offers gzip and zstd; a compressed broadcast is the
/// subscriber's choice).
pub fn learner_client(config: &Config, url: &str) -> Result<LearnerServiceClient<Channel>> {
    let mut learner = LearnerServiceClient::new(lazy_channel(url, &config.security)?)
        .max_decoding_message_size(8 << 20);
    if let Some(encoding) = parameter_compression(&config.actor.parameter_compression) {
        learner = learner.accept_compressed(encoding);
    }
    Ok(learner)
}

/// Opens a lazy channel: it connects on first use and reconnects after failures. An
/// `https://` URL uses TLS from `[security]`.
pub fn lazy_channel(url: &str, security: &musicrl_config::SecurityConfig) -> Result<Channel> {
    let bad = |message: String| ClientError::Endpoint {
        url: url.to_string(),
        message,
    };
    let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| bad(e.to_string()))?;
    let host = endpoint.uri().host().unwrap_or("").to_string();
    let endpoint = musicrl_security::tls::endpoint(security, endpoint, &host)
        .map_err(|e| bad(e.to_string()))?;
    Ok(endpoint
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .connect_lazy())
}

/// The roles' retry waits, from `actor.min_backoff_seconds` and `actor.max_backoff_seconds`.
pub fn backoff(config: &Config) -> CappedBackoff {
    CappedBackoff::new(
        Duration::from_secs_f64(config.actor.min_backoff_seconds),
        Duration::from_secs_f64(config.actor.max_backoff_seconds),
    )
}

/// Exponential backoff whose waits never exceed the cap: the nominal delay doubles from
/// `min` up to `max`, and each wait is drawn uniformly from its upper half ("equal
/// jitter"). backon's own jitter adds up to one more delay on top of the capped one, so its
/// waits reached twice `max_backoff_seconds`.
#[derive(Debug, Clone, Copy)]
pub struct CappedBackoff {
    nominal: ExponentialBuilder,
    max: Duration,
}

impl CappedBackoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            nominal: ExponentialBuilder::default()
                .with_min_delay(min)
                .with_max_delay(max)
                .without_max_times(),
            max,
        }
    }
}

impl BackoffBuilder for CappedBackoff {
    type Backoff = CappedDelays;

    fn build(self) -> CappedDelays {
        CappedDelays {
            nominal: self.nominal.build(),
            max: self.max,
            rng: StdRng::seed_from_u64(rand::random::<u64>()),
        }
    }
}

/// The waits of a [`CappedBackoff`].
#[derive(Debug)]
pub struct CappedDelays {
    nominal: backon::ExponentialBackoff,
    max: Duration,
    rng: StdRng,
}

impl Iterator for CappedDelays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let d = self.nominal.next()?.min(self.max);
        Some(d.mul_f64(0.5 + 0.5 * self.rng.random::<f64>()))
    }
}

/// `actor.parameter_compression` as an encoding (validated with the configuration).
pub fn parameter_compression(name: &str) -> Option<tonic::codec::CompressionEncoding> {
    match name {
        "gzip" => Some(tonic::codec::CompressionEncoding::Gzip),
        "zstd" => Some(tonic::codec::CompressionEncoding::Zstd),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_waits_never_exceed_the_cap_and_still_grow_and_vary() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        let waits: Vec<Duration> = CappedBackoff::new(min, max).build().take(400).collect();
        assert!(waits.iter().all(|w| *w <= max), "{waits:?}");
        // The first wait is in the upper half of the minimum; the nominal delay then
        // doubles: 100, 200, 400 ms, ... up to the cap.
        assert!(waits[0] >= min / 2 && waits[0] <= min, "{:?}", waits[0]);
        assert!(waits[3] >= Duration::from_millis(400), "{:?}", waits[3]);
        // Past the cap the waits stay in [max / 2, max] and are not all the same (jitter
        // keeps a fleet of actors from retrying in lock step).
        let tail = &waits[20..];
        assert!(tail.iter().all(|w| *w >= max / 2), "{tail:?}");
        assert!(tail.iter().any(|w| *w != tail[0]));
        assert!(tail.iter().any(|w| *w > max.mul_f64(0.9)));
    }
}
