//! The compute devices a configuration can name (`learner.device`, `actor.device`,
//! `reward.device`) and what this build can run: the values only. Choosing one and handing
//! out burn devices is `musicrl_policy::device`'s.

use crate::error::ConfigError;

/// A device a configuration can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// What this build can run on, for error messages and logs.
pub fn supported() -> &'static str {
    if cfg!(feature = "cuda") {
        "\"cpu\" and \"cuda:N\" (this build has the `cuda` feature)"
    } else {
        "\"cpu\" only (this build has no `cuda` feature: use the GPU image, built with --features cuda)"
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
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => DeviceSpec::Cuda(n),
            _ => {
                return Err(invalid(format!(
                    "{text:?} is not a device; this build supports {}",
                    supported()
                )));
            }
        },
    };
    if matches!(spec, DeviceSpec::Cuda(_)) && !cfg!(feature = "cuda") {
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

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_on_a_cpu_build_is_refused_with_what_the_build_supports() {
        for text in ["cuda", "cuda:1"] {
            let e = parse("learner.device", text).unwrap_err().to_string();
            assert!(e.contains("learner.device"), "{e}");
            assert!(e.contains("no `cuda` feature"), "{e}");
        }
    }
}
