//! The policy as a safetensors file, the format PyTorch, JAX and the Hugging Face tools load
//! without our code, and back.
//!
//! Every float parameter is one f32 tensor named by its module path, joined with dots, as
//! burn walks the module (`token_emb.weight`, `blocks.0.qkv.weight`, `lm_head.bias`, …; the
//! full list with shapes is in `docs/interop.md`). Burn's `Linear` stores its weight as
//! `[d_in, d_out]`, the transpose of PyTorch's `nn.Linear`, and the file keeps burn's layout:
//! `y = x @ W + b`. The header's metadata carries `format = "musicrl-policy"`, the policy
//! configuration as JSON (`policy_config`), and the vocabulary's END token, so a file says
//! what architecture it needs.
//!
//! A file may also hold every parameter as bfloat16 ([`to_bytes_bf16`]: half the bytes, the
//! parameter broadcast's compact form); loading widens bf16 to f32 exactly.

use std::collections::HashMap;
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::model::Policy;
use crate::error::{PolicyError as Error, Result};
use musicrl_config::PolicyConfig;

/// The `format` metadata value of a musicrl policy file.
pub const FORMAT: &str = "musicrl-policy";

/// Collects every float parameter with its dotted path.
struct Collect {
    path: Vec<String>,
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let shape = t.dims().to_vec();
        self.tensors
            .push((self.path.join("."), shape, super::to_vec_f32(t)));
    }
}

/// The policy's parameters as `(name, shape, values)`, in the module's order.
pub fn named_parameters(policy: &Policy) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut c = Collect {
        path: Vec::new(),
        tensors: Vec::new(),
    };
    policy.visit(&mut c);
    c.tensors
}

/// The policy as safetensors bytes, every parameter f32.
pub fn to_bytes(policy: &Policy, config: &PolicyConfig) -> Result<Vec<u8>> {
    let params = named_parameters(policy);
    let bytes: Vec<Vec<u8>> = params
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    serialize(&params, &bytes, Dtype::F32, config)
}

/// The policy as safetensors bytes, every parameter bfloat16 rounded to nearest even: half
/// the bytes of [`to_bytes`], each parameter within a relative [`BF16_RELATIVE_ERROR`] of its
/// f32 value. A parameter too large for bf16 (beyond ±3.39e38) is an error, not an infinity.
pub fn to_bytes_bf16(policy: &Policy, config: &PolicyConfig) -> Result<Vec<u8>> {
    let params = named_parameters(policy);
    let bytes = params
        .iter()
        .map(|(name, _, v)| {
            let mut out = Vec::with_capacity(2 * v.len());
            for (i, &x) in v.iter().enumerate() {
                let h = half::bf16::from_f32(x);
                if !h.is_finite() {
                    return Err(Error::BadParameters(format!(
                        "parameter {name:?}[{i}] = {x} has no finite bfloat16"
                    )));
                }
                out.extend_from_slice(&h.to_le_bytes());
            }
            Ok(out)
        })
        .collect::<Result<Vec<_>>>()?;
    serialize(&params, &bytes, Dtype::BF16, config)
}

/// The largest relative difference between an f32 and its bfloat16 rounded to nearest: half
/// a unit in the last place, and bf16 keeps 8 significant bits, so its spacing is 2^-7 of
/// the power of two at or below the value: 2^-8. It holds for every normal
/// value; a value below bf16's smallest normal (1.2e-38) may lose more, relatively, and
/// never more than 2^-134 absolutely.
pub const BF16_RELATIVE_ERROR: f32 = 1.0 / 256.0;

fn serialize(
    params: &[(String, Vec<usize>, Vec<f32>)],
    bytes: &[Vec<u8>],
    dtype: Dtype,
    config: &PolicyConfig,
) -> Result<Vec<u8>> {
    let views = params
        .iter()
        .zip(bytes)
        .map(|((name, shape, _), b)| {
            TensorView::new(dtype, shape.clone(), b)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::Internal(format!("safetensors view of {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        (
            "policy_config".to_string(),
            serde_json::to_string(config).expect("PolicyConfig serialises"),
        ),
    ]);
    safetensors::tensor::serialize(views, Some(metadata))
        .map_err(|e| Error::Internal(format!("writing safetensors: {e}")))
}

/// Writes the policy to a safetensors file.
pub fn save(policy: &Policy, config: &PolicyConfig, path: &Path) -> Result<()> {
    Ok(musicrl_config::fsutil::write_atomic(
        path,
        &to_bytes(policy, config)?,
    )?)
}

/// The policy configuration a safetensors file declares.
pub fn config_of(bytes: &[u8]) -> Result<PolicyConfig> {
    let bad = |m: String| Error::BadParameters(format!("not a musicrl policy file: {m}"));
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let info = meta.metadata().clone().unwrap_or_default();
    match info.get("format") {
        Some(f) if f == FORMAT => {}
        other => {
            return Err(bad(format!(
                "metadata format is {other:?}, expected {FORMAT:?}"
            )));
        }
    }
    let config = info
        .get("policy_config")
        .ok_or_else(|| bad("no policy_config in its metadata".into()))?;
    serde_json::from_str(config).map_err(|e| bad(format!("policy_config: {e}")))
}

/// Replaces every float parameter with the file's tensor of the same name.
struct Load<'a> {
    path: Vec<String>,
    file: &'a SafeTensors<'a>,
    device: Device,
    used: usize,
    error: Option<String>,
}

impl ModuleMapper for Load<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.error.is_some() {
            return param;
        }
        let name = self.path.join(".");
        // The shape without initialising the parameter: `Policy::new` only declares its
        // parameters (burn initialises them lazily), so loading never draws the random
        // weights it replaces.
        let want: Vec<usize> = param.lazy_shape().to_vec();
        let view = match self.file.tensor(&name) {
            Ok(v) => v,
            Err(_) => {
                self.error = Some(format!("the file has no tensor {name:?}"));
                return param;
            }
        };
        if !matches!(view.dtype(), Dtype::F32 | Dtype::BF16) || view.shape() != want.as_slice() {
            self.error = Some(format!(
                "tensor {name:?} is {:?} {:?}, the policy needs F32 or BF16 {want:?}",
                view.dtype(),
                view.shape()
            ));
            return param;
        }
        let values: Vec<f32> = if view.dtype() == Dtype::F32 {
            view.data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        } else {
            view.data()
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect()
        };
        if let Some(bad) = values.iter().position(|x| !x.is_finite()) {
            self.error = Some(format!("tensor {name:?} holds a non-finite value at {bad}"));
            return param;
        }
        self.used += 1;
        let id = param.id;
        param.transform_for_load(
            Tensor::<D>::from_data(TensorData::new(values, want), &self.device),
            id,
        )
    }
}

/// A policy of the file's declared architecture with the file's parameters. Every parameter
/// must be present with its shape, and the file may hold nothing else.
pub fn from_bytes(bytes: &[u8], device: &Device) -> Result<(Policy, PolicyConfig)> {
    let config = config_of(bytes)?;
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::BadParameters(format!("not a safetensors file: {e}")))?;
    let mut load = Load {
        path: Vec::new(),
        file: &file,
        device: device.clone(),
        used: 0,
        error: None,
    };
    let policy = Policy::new(&config, device).map(&mut load);
    if let Some(e) = load.error {
        return Err(Error::BadParameters(e));
    }
    if load.used != file.len() {
        return Err(Error::BadParameters(format!(
            "the file has {} tensors, the policy {}: names that are not the policy's",
            file.len(),
            load.used
        )));
    }
    Ok((policy, config))
}

/// Reads a policy from a safetensors file.
pub fn load(path: &Path, device: &Device) -> Result<(Policy, PolicyConfig)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    from_bytes(&bytes, device).map_err(|e| match e {
        Error::BadParameters(m) => Error::BadParameters(format!("{}: {m}", path.display())),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::melody::{caption_batch, token_tensor};

    use crate::melody::tiny_test_config as tiny;

    #[test]
    fn a_round_trip_reproduces_the_logits_exactly() {
        let device = Device::flex();
        let config = tiny();
        let policy = Policy::new(&config, &device);
        let bytes = to_bytes(&policy, &config).unwrap();
        let (back, back_config) = from_bytes(&bytes, &device).unwrap();
        assert_eq!(back_config, config);
        let captions = caption_batch(&["a reel in d", "a slow air"], &config, &device);
        let tokens = token_tensor(&[1, 2, 3, 4, 5, 6, 7, 8, 1, 2], 2, 5, &device);
        let a = crate::melody::to_vec_f32(policy.forward(&captions, tokens.clone()).logits);
        let b = crate::melody::to_vec_f32(back.forward(&captions, tokens).logits);
        assert_eq!(a, b, "identical logits after export and import");
        // The names are the module paths.
        let names: Vec<String> = named_parameters(&policy).into_iter().map(|p| p.0).collect();
        assert!(names.iter().any(|n| n == "lm_head.weight"), "{names:?}");
        assert!(
            names.iter().any(|n| n.starts_with("blocks.1.")),
            "{names:?}"
        );
    }

    #[test]
    fn a_file_that_is_not_a_policy_is_refused_by_name() {
        let device = Device::flex();
        let config = tiny();
        let policy = Policy::new(&config, &device);
        // Another architecture's declared config with these tensors: shapes disagree.
        let mut other = config.clone();
        other.d_model = 32;
        other.n_heads = 4;
        let mut bytes = to_bytes(&policy, &config).unwrap();
        assert_eq!(config_of(&bytes).unwrap().d_model, 16);
        let swapped = to_bytes(&Policy::new(&other, &device), &config).unwrap();
        let e = from_bytes(&swapped, &device).unwrap_err().to_string();
        assert!(e.contains("the policy needs F32 or BF16"), "{e}");
        bytes.truncate(20);
        assert!(from_bytes(&bytes, &device).is_err());
    }

    /// bf16 is round to nearest even (hand-computed cases), every parameter lands within
    /// the declared 2^-8 of its f32 value, the file is half the size, and the logits of the
    /// widened policy stay close to the f32 policy's.
    #[test]
    fn a_bf16_file_is_half_the_size_and_within_its_declared_tolerance() {
        // 1 + 2^-8 is halfway between two bf16 values (1 and 1 + 2^-7): ties go to even (1).
        assert_eq!(half::bf16::from_f32(1.0 + 1.0 / 256.0).to_f32(), 1.0);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties go to even (1 + 2^-6).
        assert_eq!(
            half::bf16::from_f32(1.0 + 3.0 / 256.0).to_f32(),
            1.0 + 1.0 / 64.0
        );
        // Just above the halfway point rounds up.
        assert_eq!(
            half::bf16::from_f32(1.0 + 1.0 / 256.0 + 1.0 / 65536.0).to_f32(),
            1.0 + 1.0 / 128.0
        );
        let device = Device::flex();
        let config = tiny();
        let policy = Policy::new(&config, &device);
        let f32_bytes = to_bytes(&policy, &config).unwrap();
        let bf16_bytes = to_bytes_bf16(&policy, &config).unwrap();
        let params: usize = named_parameters(&policy).iter().map(|p| p.2.len()).sum();
        assert_eq!(
            f32_bytes.len() - bf16_bytes.len(),
            2 * params,
            "2 bytes saved a parameter"
        );
        let (back, back_config) = from_bytes(&bf16_bytes, &device).unwrap();
        assert_eq!(back_config, config);
        let mut exact = 0usize;
        for ((name, _, a), (_, _, b)) in named_parameters(&policy)
            .into_iter()
            .zip(named_parameters(&back))
        {
            for (x, y) in a.iter().zip(&b) {
                let rel = (x - y).abs() / x.abs().max(f32::MIN_POSITIVE);
                assert!(
                    rel <= BF16_RELATIVE_ERROR,
                    "{name}: {x} -> {y} (relative {rel})"
                );
                exact += usize::from(x == y);
            }
        }
        assert!(
            exact < params / 10,
            "random f32 weights are almost never exact in bf16"
        );
        let captions = caption_batch(&["a reel in d", "a slow air"], &config, &device);
        let tokens = token_tensor(&[1, 2, 3, 4, 5, 6, 7, 8, 1, 2], 2, 5, &device);
        let a = crate::melody::to_vec_f32(policy.forward(&captions, tokens.clone()).logits);
        let b = crate::melody::to_vec_f32(back.forward(&captions, tokens).logits);
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(
            worst > 0.0 && worst < 0.05,
            "largest logit difference {worst}"
        );
        // A value beyond bf16's range is refused by name, not sent as an infinity.
        let mut params = named_parameters(&policy);
        let last = params.len() - 1;
        params[last].2[0] = f32::MAX;
        let bytes: Vec<Vec<u8>> = params
            .iter()
            .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
            .collect();
        let file = serialize(&params, &bytes, Dtype::F32, &config).unwrap();
        let (huge, _) = from_bytes(&file, &device).unwrap();
        let name = params[last].0.clone();
        let e = to_bytes_bf16(&huge, &config).unwrap_err().to_string();
        assert!(e.contains(&name) && e.contains("no finite bfloat16"), "{e}");
    }
}
