//! Reward-model checkpoints: a folder holding `model.bpk` (burnpack parameters),
//! `config.json` (the architecture and training settings) and `metrics.json` (held-out
//! measurements). A model's version is `<kind>-<first 12 hex digits of blake3(model.bpk)>`,
//! so the same weights always report the same version and new weights a new one.

use std::path::Path;

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

pub const MODEL_FILE: &str = "model.bpk";
pub const CONFIG_FILE: &str = "config.json";
pub const METRICS_FILE: &str = "metrics.json";

/// The version string of a model kind with these parameter bytes.
pub fn version_of(kind: &str, bytes: &[u8]) -> String {
    let hash = blake3::hash(bytes).to_hex();
    format!("{kind}-{}", &hash.as_str()[..12])
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    musicrl_config::fsutil::write_atomic(path, bytes).map_err(|e| Error::Io(format!("{e}")))
}

/// Writes a checkpoint folder; returns the model's version.
pub fn save<M: Module, C: Serialize, X: Serialize>(
    dir: &Path,
    kind: &str,
    model: &M,
    config: &C,
    metrics: &X,
) -> Result<String> {
    let bytes = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| Error::Checkpoint(format!("serialising the {kind} model: {e}")))?
        .to_vec();
    write(&dir.join(MODEL_FILE), &bytes)?;
    write(
        &dir.join(CONFIG_FILE),
        &serde_json::to_vec_pretty(config).expect("configs serialise"),
    )?;
    write(
        &dir.join(METRICS_FILE),
        &serde_json::to_vec_pretty(metrics).expect("metrics serialise"),
    )?;
    Ok(version_of(kind, &bytes))
}

/// Rewrites a checkpoint's `metrics.json` (for example once the version is known).
pub fn write_metrics<X: Serialize>(dir: &Path, metrics: &X) -> Result<()> {
    write(
        &dir.join(METRICS_FILE),
        &serde_json::to_vec_pretty(metrics).expect("metrics serialise"),
    )
}

/// Reads a checkpoint's config.
pub fn load_config<C: DeserializeOwned>(dir: &Path) -> Result<C> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))
}

/// Loads parameters into `init` (a model built from the checkpoint's config); returns it with
/// its version.
pub fn load_params<M: Module>(dir: &Path, kind: &str, init: M) -> Result<(M, String)> {
    let path = dir.join(MODEL_FILE);
    let bytes =
        std::fs::read(&path).map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display())))?;
    let version = version_of(kind, &bytes);
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| Error::Checkpoint(format!("{}: not a burnpack file: {e}", path.display())))?;
    let model = init.try_load_record(record).map_err(|e| {
        Error::Checkpoint(format!(
            "{}: parameters do not fit {}: {e}",
            path.display(),
            dir.join(CONFIG_FILE).display()
        ))
    })?;
    Ok((model, version))
}
