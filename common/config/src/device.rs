//! The compute devices a configuration can name (`learner.device`, `actor.device`,
//! `reward.device`) and what this build can run: the values only. Choosing one and handing
//! out burn devices is `musicrl_policy::device`'s.

use crate::error::ConfigError;

/// A device a configuration can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
    /// A Vulkan device (burn's wgpu backend, SPIR-V kernels): the N-th discrete GPU, or with
    /// no index the adapter wgpu prefers (`CUBECL_WGPU_DEFAULT_DEVICE` can name another).
    Vulkan(Option<usize>),
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceSpec::Vulkan(Some(n)) => write!(f, "vulkan:{n}"),
            DeviceSpec::Vulkan(None) => write!(f, "vulkan"),
        }
    }
}

/// What this build can run on, for error messages and logs.
pub fn supported() -> &'static str {
    match (cfg!(feature = "cuda"), cfg!(feature = "vulkan")) {
        (true, true) => {
            "\"cpu\", \"cuda:N\" and \"vulkan:N\" (this build has the `cuda` and `vulkan` features)"
        }
        (true, false) => "\"cpu\" and \"cuda:N\" (this build has the `cuda` feature)",
        (false, true) => "\"cpu\" and \"vulkan:N\" (this build has the `vulkan` feature)",
        (false, false) => {
            "\"cpu\" only (this build has no GPU feature: use a GPU build, made with --features vulkan)"
        }
    }
}

/// Parses a `device` key's value. `key` names the key in the error.
pub fn parse(key: &str, text: &str) -> Result<DeviceSpec, ConfigError> {
    let invalid = |why: String| ConfigError::Invalid {
        field: key.to_string(),
        why,
    };
    let spec = match text.trim() {
        "cpu" => DeviceSpec::Cpu,
        "cuda" => DeviceSpec::Cuda(0),
        "vulkan" => DeviceSpec::Vulkan(None),
        other => {
            let index = |prefix: &str| other.strip_prefix(prefix).map(str::parse::<usize>);
            match (index("cuda:"), index("vulkan:")) {
                (Some(Ok(n)), _) => DeviceSpec::Cuda(n),
                (_, Some(Ok(n))) => DeviceSpec::Vulkan(Some(n)),
                _ => {
                    return Err(invalid(format!(
                        "{text:?} is not a device; this build supports {}",
                        supported()
                    )));
                }
            }
        }
    };
    let built = match spec {
        DeviceSpec::Cpu => true,
        DeviceSpec::Cuda(_) => cfg!(feature = "cuda"),
        DeviceSpec::Vulkan(_) => cfg!(feature = "vulkan"),
    };
    if !built {
        return Err(invalid(format!(
            "{text:?} was asked for, but this build supports {}",
            supported()
        )));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_unknown_ones_are_named() {
        assert_eq!(parse("learner.device", "cpu").unwrap(), DeviceSpec::Cpu);
        let e = parse("actor.device", "tpu").unwrap_err().to_string();
        assert!(e.contains("actor.device") && e.contains("\"tpu\""), "{e}");
        assert!(e.contains("cpu"), "{e}");
        let e = parse("actor.device", "cuda:x").unwrap_err().to_string();
        assert!(e.contains("not a device"), "{e}");
    }

    #[cfg(not(any(feature = "cuda", feature = "vulkan")))]
    #[test]
    fn a_gpu_on_a_cpu_build_is_refused_with_what_the_build_supports() {
        for text in ["cuda", "cuda:1", "vulkan", "vulkan:0"] {
            let e = parse("learner.device", text).unwrap_err().to_string();
            assert!(e.contains("learner.device"), "{e}");
            assert!(e.contains("no GPU feature"), "{e}");
            assert!(e.contains("--features vulkan"), "{e}");
        }
    }

    #[test]
    fn vulkan_devices_parse_by_index() {
        let ok = |text| match parse("actor.device", text) {
            Ok(spec) => Some(spec),
            Err(e) => {
                if cfg!(feature = "vulkan") {
                    panic!("{e}");
                }
                None
            }
        };
        if cfg!(feature = "vulkan") {
            assert_eq!(ok("vulkan"), Some(DeviceSpec::Vulkan(None)));
            assert_eq!(ok("vulkan:2"), Some(DeviceSpec::Vulkan(Some(2))));
        }
        let e = parse("actor.device", "vulkan:x").unwrap_err().to_string();
        assert!(e.contains("not a device"), "{e}");
        assert_eq!(DeviceSpec::Vulkan(Some(1)).to_string(), "vulkan:1");
        assert_eq!(DeviceSpec::Vulkan(None).to_string(), "vulkan");
    }
}
