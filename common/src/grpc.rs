//! What every gRPC server of the project shares: reflection (v1 and v1alpha, so `grpcurl`
//! and Python's `grpcio-reflection` list and describe the services without our protos) and
//! the compression encodings every service accepts.

use tonic::codec::CompressionEncoding;

/// The encodings every service accepts and can answer in (the client's choice): zstd, which
/// our actors send, and gzip, which most other gRPC stacks (grpcio, grpc-go) offer.
pub const ENCODINGS: [CompressionEncoding; 2] =
    [CompressionEncoding::Zstd, CompressionEncoding::Gzip];

/// The health service's full name, served by every server.
pub const HEALTH: &str = "grpc.health.v1.Health";

/// The reflection services (v1, v1alpha) listing `services` (full names, e.g.
/// `musicrl.v1.RewardService`) and describing them from the `musicrl.v1` and
/// `grpc.health.v1` descriptors.
pub fn reflection(
    services: &[&str],
) -> crate::Result<(
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
)> {
    let builder = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(musicrl_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for name in services.iter().chain(&[HEALTH]) {
            b = b.with_service_name(*name);
        }
        b
    };
    let err =
        |e: tonic_reflection::server::Error| crate::Error::Internal(format!("reflection: {e}"));
    Ok((
        builder().build_v1().map_err(err)?,
        builder().build_v1alpha().map_err(err)?,
    ))
}

/// The connections a gRPC server accepts on `listener`, with Nagle's algorithm off.
///
/// tonic's `Server::tcp_nodelay` applies only to listeners tonic binds itself; a server
/// given its own listener (`serve_with_incoming`) otherwise answers with Nagle on, and a
/// response written in more than one segment then waits for the client's delayed ACK:
/// about 40 ms per call on Linux, measured as +80% on a Score call of 8 clips
/// (`musicrl bench --workloads reward`, docs/performance.md).
pub fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// A server builder with the project's transport settings: `tls` (from `[security]`, made by
/// `musicrl_security::tls::server`), at most `max_streams` concurrent calls per connection,
/// and `timeout` on every call (None: no deadline of the server's own).
pub fn server_builder(
    tls: Option<tonic::transport::ServerTlsConfig>,
    max_streams: u32,
    timeout: Option<std::time::Duration>,
) -> crate::Result<tonic::transport::Server> {
    let mut builder = tonic::transport::Server::builder().max_concurrent_streams(max_streams);
    if let Some(t) = timeout {
        builder = builder.timeout(t);
    }
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| crate::Error::invalid(format!("security.tls_cert: {e}")))?;
    }
    Ok(builder)
}

/// Serves only `health` on `addr` (plaintext), on a task of its own: the probe port of a
/// server whose main port speaks TLS. The listener lives until the task is aborted (the
/// server does when it stops); an empty `addr` serves nothing. A listener that cannot be
/// bound or fails is logged, never fatal to the server.
pub fn spawn_health_only<S>(addr: &str, health: S) -> tokio::task::JoinHandle<()>
where
    S: tonic::codegen::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let addr = addr.to_string();
    tokio::spawn(async move {
        if addr.is_empty() {
            return;
        }
        let listener = match tokio::net::TcpListener::bind(&addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot bind the health listener");
                return;
            }
        };
        tracing::info!(addr = %listener.local_addr().map_or(addr.clone(), |a| a.to_string()), "health listener");
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(incoming(listener))
            .await
        {
            tracing::error!(error = %e, "the health listener failed");
        }
    })
}
