//! Wire types of the musicrl protocol (`musicrl.v1`), generated from `proto/musicrl/v1`.
//!
//! These types stop at the edge: only this crate, `musicrl_common::wire` (the one
//! conversion module) and the gRPC handlers see them.
#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("musicrl.v1");
}

/// The encoded file descriptor set, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/musicrl_descriptor.bin"));
