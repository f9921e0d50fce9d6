//! Logging (tracing) and metrics (Prometheus) set-up shared by every process, and the
//! catalog of every metric the project exports (`metrics_catalog`). No gRPC, no tensors.

pub mod metrics_catalog;

use std::io::{Error, Result};
use std::net::SocketAddr;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds (histograms, not summaries, so they aggregate across pods).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Batch-size buckets (samples per request).
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Sets up `tracing`: `RUST_LOG` filters (default `info`), `MUSICRL_LOG_FORMAT=json` gives
/// JSON lines. Safe to call more than once (later calls are no-ops).
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("MUSICRL_LOG_FORMAT").is_ok_and(|v| v == "json");
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The Prometheus recorder with this project's histogram buckets, not yet installed.
pub fn prometheus_builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .expect("bucket list is non-empty")
        .set_buckets_for_metric(Matcher::Suffix("_batch_size".into()), BATCH_BUCKETS)
        .expect("bucket list is non-empty")
}

/// Installs the global recorder and serves `/metrics` on `listen` (must be called inside a
/// tokio runtime). An empty `listen` installs nothing. Returns the bound address.
pub fn serve_metrics(listen: &str) -> Result<Option<SocketAddr>> {
    if listen.is_empty() {
        return Ok(None);
    }
    // Bind first so that port 0 resolves to a real port we can report.
    let probe = std::net::TcpListener::bind(listen).map_err(|e| {
        Error::new(
            e.kind(),
            format!("cannot bind metrics address {listen}: {e}"),
        )
    })?;
    let addr = probe.local_addr()?;
    drop(probe);
    prometheus_builder()
        .with_http_listener(addr)
        .install()
        .map_err(|e| Error::other(format!("cannot start the metrics exporter on {addr}: {e}")))?;
    spawn_process_metrics();
    Ok(Some(addr))
}

/// How often the process metrics are refreshed.
const PROCESS_METRICS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Exports the standard process metrics (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_open_fds`, `process_threads`, …) through the
/// installed recorder, refreshed every few seconds on the runtime.
pub fn spawn_process_metrics() {
    let collector = metrics_process::Collector::default();
    collector.describe();
    collector.collect();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PROCESS_METRICS_EVERY);
        loop {
            tick.tick().await;
            collector.collect();
        }
    });
}

/// Installs a recorder without HTTP and returns its handle (tests read `render()`).
pub fn install_test_recorder() -> Option<PrometheusHandle> {
    prometheus_builder().install_recorder().ok()
}
