//! Generates the gRPC code from `musicrl/v1/*.proto` with protox (pure Rust: no `protoc`).
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["musicrl/v1/reward.proto", "musicrl/v1/learner.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("musicrl_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .bytes(".musicrl.v1.ParameterChunk.data")
        .compile_fds(fds)?;
    Ok(())
}
