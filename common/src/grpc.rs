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
