//! The one place a compute device is chosen.
//!
//! Each role has a `device` key (`learner.device`, `actor.device`, `reward.device`): `"cpu"`
//! (burn's `flex` backend), `"vulkan:N"` (burn's wgpu backend on Vulkan, in a build with the
//! `vulkan` feature) or `"cuda:N"` (burn-cuda, in a build with the `cuda` feature, which the
//! registries alone cannot build: docs/operations.md). [`select`] validates the key, checks that the device can run a tensor operation,
//! logs it, and makes it the process's device; [`inference_device`] and [`training_device`]
//! hand it out. A process that never selects one runs on the CPU.

use std::sync::OnceLock;

use burn::tensor::Device;

use musicrl_config::ConfigError;
pub use musicrl_config::device::{DeviceSpec, parse, supported};

static SELECTED: OnceLock<DeviceSpec> = OnceLock::new();

fn to_device(spec: DeviceSpec) -> Device {
    match spec {
        DeviceSpec::Cpu => Device::flex(),
        #[cfg(feature = "cuda")]
        DeviceSpec::Cuda(n) => Device::cuda(n),
        #[cfg(not(feature = "cuda"))]
        DeviceSpec::Cuda(_) => unreachable!("parse refuses cuda in a build without it"),
        #[cfg(feature = "vulkan")]
        DeviceSpec::Vulkan(n) => Device::vulkan(n.map_or(
            burn::tensor::DeviceKind::DefaultDevice,
            burn::tensor::DeviceKind::DiscreteGpu,
        )),
        #[cfg(not(feature = "vulkan"))]
        DeviceSpec::Vulkan(_) => unreachable!("parse refuses vulkan in a build without it"),
    }
}

/// Makes the device named by `key = text` this process's device, after checking it can run
/// a small tensor operation, and logs it. A second call must name the same device.
pub fn select(key: &str, text: &str) -> Result<DeviceSpec, ConfigError> {
    let spec = parse(key, text)?;
    if let Some(current) = SELECTED.get() {
        if *current != spec {
            return Err(ConfigError::Invalid {
                field: key.to_string(),
                why: format!("{spec} was asked for, but this process already runs on {current}"),
            });
        }
        return Ok(spec);
    }
    if matches!(spec, DeviceSpec::Cuda(_)) {
        // Without a GPU (or its driver) burn-cuda panics on first use: turn that into an
        // error that names the device asked for, before anything else runs.
        let probe = std::panic::catch_unwind(|| {
            let d = to_device(spec);
            let t = burn::tensor::Tensor::<1>::ones([4], &d);
            t.sum().into_scalar::<f32>()
        });
        if !matches!(probe, Ok(v) if v == 4.0) {
            return Err(ConfigError::Invalid {
                field: key.to_string(),
                why: format!(
                    "{spec} was asked for, but it is not available on this machine (no GPU, or no driver)"
                ),
            });
        }
    }
    let _ = SELECTED.set(spec);
    tracing::info!(device = %spec, key, backend = backend_name(spec), "compute device");
    Ok(spec)
}

fn backend_name(spec: DeviceSpec) -> &'static str {
    match spec {
        DeviceSpec::Cpu => "burn flex (CPU)",
        DeviceSpec::Cuda(_) => "burn cuda",
        DeviceSpec::Vulkan(_) => "burn wgpu (Vulkan, SPIR-V)",
    }
}

/// The device [`select`] chose, or the CPU.
pub fn selected() -> DeviceSpec {
    SELECTED.get().copied().unwrap_or(DeviceSpec::Cpu)
}

/// The inference device.
pub fn inference_device() -> Device {
    to_device(selected())
}

/// The training device: the inference device with autodiff.
pub fn training_device() -> Device {
    inference_device().autodiff()
}
