//! The one place a compute device is chosen.

use burn::tensor::Device;

/// The inference device: CPU (`flex`) unless the `cuda` feature is built and
/// `MUSICRL_DEVICE=cuda` is set.
pub fn inference_device() -> Device {
    #[cfg(feature = "cuda")]
    if std::env::var("MUSICRL_DEVICE").is_ok_and(|v| v == "cuda") {
        return Device::cuda(0);
    }
    Device::flex()
}

/// The training device: the inference device with autodiff.
pub fn training_device() -> Device {
    inference_device().autodiff()
}
