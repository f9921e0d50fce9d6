//! What the learner trains of a MusicGen policy, and how its parameters travel.
//!
//! **Trained:** the decoder (embeddings, blocks, heads) and a value head. **Frozen:** the
//! T5 text encoder and `enc_to_dec_proj`, as in MusicGen's own training, where the text
//! encoder is frozen; the caption's states are computed once per batch without gradients.
//!
//! **The value baseline** is a head of its own, `Linear(d_model → 1)`, reading the
//! decoder's final hidden state at the grid position each code is predicted from
//! (`t + k` for code `[k][t]`), detached, so fitting it never moves the policy's
//! distribution (the melody policy's value head works the same way).
//!
//! **A trajectory's tokens** are a clip's codes flattened codebook by codebook: `K · T`
//! tokens, code `[k][t]` at index `k · T + t` ([`flatten_codes`], [`unflatten_codes`]).
//! The per-code tensors below ([`RlOutput`]) use the same order once reshaped to
//! `[B, K·T, …]`, so the learner's objective reads a MusicGen batch exactly as it reads a
//! melody batch: one action per code, the exact KL over the code's codebook at its
//! position.
//!
//! **Parameters as bytes** ([`Trainable::to_bytes`], [`Trainable::from_bytes`]): burn's
//! burnpack record of the trainable part, f32. The frozen part is not sent: every role
//! loads it from the same model folder.
//!
//! **With adapters** (`policy.lora.rank > 0`, [`super::lora`]) the decoder is frozen too:
//! the trained part is the adapters and the value head (the checkpoint's bytes), a version
//! on the wire is the adapters alone ([`Trainable::broadcast_bytes`]), and the KL reference
//! is the same decoder run without them ([`Trainable::reference_logits`]).

use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device, Int, Tensor, TensorData};

use musicrl_config::LoraConfig;

use super::decoder::Decoder;
use super::lora::Adapters;
use super::{Conditioning, MusicGen};
use crate::PolicyError;

/// The trainable part of a MusicGen policy.
#[derive(Module, Debug)]
pub struct Trainable {
    /// Trained whole without adapters; frozen (no gradients) with them.
    pub decoder: Decoder,
    /// `d_model → 1`: V(s) at each grid position.
    pub value: Linear,
    /// The low-rank adapters, when `policy.lora.rank > 0`.
    pub adapters: Option<Adapters>,
}

/// What a checkpoint of an adapted policy holds: the adapters and the value head.
#[derive(Module, Debug)]
struct Tuned {
    adapters: Adapters,
    value: Linear,
}

/// One forward pass over a batch of clips.
#[derive(Debug, Clone)]
pub struct RlOutput {
    /// `[B, K, T, vocab]` raw logits (before temperature) of the distribution each code
    /// was drawn from.
    pub logits: Tensor<4>,
    /// `[B, K, T]` the value head at the position each code is predicted from.
    pub values: Tensor<3>,
}

impl Trainable {
    /// `model`'s decoder on `device` (shared, not copied, on `model`'s own device; read from
    /// the folder on another) and a value head with zero weights and bias (the learner starts
    /// its bias at the first batch's mean reward). Call it on a model as loaded: a model whose
    /// decoder was replaced ([`MusicGen::set_decoder`]) gives the replacement.
    pub fn new(model: &MusicGen, device: &Device) -> Result<Self, PolicyError> {
        // On the model's own device the folder's decoder is already in memory: share its
        // tensors (a clone copies nothing; on the same device with autodiff, `train` wraps
        // them); on another device load it there.
        let (here, there) = (device.is_autodiff(), model.device().is_autodiff());
        let decoder = if device != model.device() || (there && !here) {
            model.load_decoder(device)?
        } else if here == there {
            model.decoder().clone()
        } else {
            model.decoder().clone().train()
        };
        let d = decoder.d_model();
        let value = LinearConfig::new(d, 1)
            .with_initializer(Initializer::Zeros)
            .init(device);
        Ok(Self {
            decoder,
            value,
            adapters: None,
        })
    }

    /// The trainable part `lora` asks for: [`Trainable::new`] at rank 0; otherwise the
    /// folder's decoder frozen, fresh adapters on it ([`Adapters::new`]) and a zero value
    /// head.
    pub fn for_policy(
        model: &MusicGen,
        lora: &LoraConfig,
        device: &Device,
    ) -> Result<Self, PolicyError> {
        let fresh = Self::new(model, device)?;
        if !lora.enabled() {
            return Ok(fresh);
        }
        let decoder = fresh.decoder.no_grad();
        let adapters = Adapters::new(&decoder, lora, device)?;
        Ok(Self {
            decoder,
            value: fresh.value,
            adapters: Some(adapters),
        })
    }

    /// The decoder the actors sample: the trained one, or the base with the adapters
    /// merged in; a constant either way.
    pub fn merged_decoder(&self) -> Decoder {
        let decoder = self.decoder.valid();
        match &self.adapters {
            Some(adapters) => adapters.valid().merge_into(&decoder),
            None => decoder,
        }
    }

    /// Adds `delta` to the value head's bias.
    pub fn shift_value_bias(self, delta: f32) -> Self {
        let Self {
            decoder,
            value,
            adapters,
        } = self;
        // A fresh leaf: the shifted bias must not hang off the old one in an autodiff graph.
        let bias = value.bias.map(|b| {
            b.map(|t| {
                let tracked = t.is_require_grad();
                let shifted = (t + f64::from(delta)).detach();
                if tracked {
                    shifted.require_grad()
                } else {
                    shifted
                }
            })
        });
        Self {
            decoder,
            value: Linear {
                weight: value.weight,
                bias,
            },
            adapters,
        }
    }

    /// Logits and values for clips `[B][K][T]` of one length, conditioned on `cond`
    /// (computed by `model`, on any device: it is moved here as a constant).
    pub fn forward(
        &self,
        model: &MusicGen,
        cond: &Conditioning,
        clips: &[Vec<Vec<u32>>],
    ) -> Result<RlOutput, PolicyError> {
        let device = self.value.weight.device();
        let inputs = model.grid_inputs(clips)?;
        let inputs = Tensor::<3, Int>::from_data(inputs.into_data(), &device);
        let states = Tensor::<3>::from_data(cond.states.clone().into_data(), &device);
        let pad = Tensor::from_data(cond.pad.clone().into_data(), &device);
        let [batch, k_total, len] = inputs.dims();
        let frames = len + 1 - k_total;
        let adapters = self.adapters.as_ref();
        let cross = self.decoder.cross_kv_adapted(states, pad, adapters);
        let hidden = self
            .decoder
            .hidden_adapted(inputs, Some(&cross), None, adapters); // [B, L, d]
        let logits = self.decoder.heads(hidden.clone()); // [B, K, L, V]
        // Code [k][t] is predicted from position t + k.
        let aligned: Vec<Tensor<4>> = (0..k_total)
            .map(|k| logits.clone().narrow(1, k, 1).narrow(2, k, frames))
            .collect();
        let values = self.value.forward(hidden.detach()); // [B, L, 1]
        let values = values.reshape([batch, len]);
        let values: Vec<Tensor<2>> = (0..k_total)
            .map(|k| values.clone().narrow(1, k, frames))
            .collect();
        Ok(RlOutput {
            logits: Tensor::cat(aligned, 1),
            values: Tensor::stack(values, 1),
        })
    }

    /// The frozen base's logits `[B, K, T, vocab]` for the same clips, adapters left out:
    /// the KL reference of an adapted policy (no gradient flows: the base is frozen).
    pub fn reference_logits(
        &self,
        model: &MusicGen,
        cond: &Conditioning,
        clips: &[Vec<Vec<u32>>],
    ) -> Result<Tensor<4>, PolicyError> {
        let base = Self {
            decoder: self.decoder.clone(),
            value: self.value.clone(),
            adapters: None,
        };
        Ok(base.forward(model, cond, clips)?.logits.detach())
    }

    /// The trained parameters as bytes (burnpack, f32): the decoder and value head, or with
    /// adapters the adapters and value head. A checkpoint's `policy.bpk`.
    pub fn to_bytes(&self) -> Result<Vec<u8>, PolicyError> {
        let record = match &self.adapters {
            Some(adapters) => Tuned {
                adapters: adapters.clone(),
                value: self.value.clone(),
            }
            .into_record(),
            None => self.clone().into_record(),
        };
        let bytes = record
            .into_bytes()
            .map_err(|e| PolicyError::InvalidInput(format!("serialising parameters: {e}")))?;
        Ok(bytes.to_vec())
    }

    /// Parameters from [`Trainable::to_bytes`], checked against the shapes of `template`
    /// (a trainable part built from the same folder and `policy.lora`).
    pub fn from_bytes(template: Self, bytes: &[u8]) -> Result<Self, PolicyError> {
        let record =
            ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec())).map_err(|e| {
                PolicyError::InvalidInput(format!("not a burnpack parameter record: {e}"))
            })?;
        let Self {
            decoder,
            value,
            adapters,
        } = template;
        let Some(adapters) = adapters else {
            let template = Self {
                decoder,
                value,
                adapters: None,
            };
            return template.try_load_record(record).map_err(|e| {
                PolicyError::InvalidInput(format!(
                    "the parameters do not fit this MusicGen folder's decoder: {e}"
                ))
            });
        };
        let tuned = Tuned { adapters, value }
            .try_load_record(record)
            .map_err(|e| {
                PolicyError::InvalidInput(format!(
                    "the parameters are not adapters and a value head that fit this folder's \
                     decoder and policy.lora (rank, targets): {e}"
                ))
            })?;
        Ok(Self {
            decoder,
            value: tuned.value,
            adapters: Some(tuned.adapters),
        })
    }

    /// One version as the actors receive it: the whole trained part, or with adapters the
    /// adapters alone (the value head stays with the learner).
    pub fn broadcast_bytes(&self) -> Result<Vec<u8>, PolicyError> {
        match &self.adapters {
            Some(adapters) => adapters.to_bytes(),
            None => self.to_bytes(),
        }
    }

    /// The decoder a version's [`Trainable::broadcast_bytes`] describe, given `template`
    /// (this role's trainable part as the folder and `policy.lora` make it): with adapters,
    /// the template's decoder with the received adapters merged in.
    pub fn decoder_from_broadcast(template: &Self, bytes: &[u8]) -> Result<Decoder, PolicyError> {
        match &template.adapters {
            Some(adapters) => {
                let received = Adapters::from_bytes(adapters.clone(), bytes)?;
                Ok(received.merge_into(&template.decoder))
            }
            None => Ok(Self::from_bytes(template.clone(), bytes)?.decoder),
        }
    }
}

/// A clip's codes `[K][T]` as trajectory tokens: code `[k][t]` at `k · T + t`.
pub fn flatten_codes(codes: &[Vec<u32>]) -> Vec<u32> {
    codes.iter().flatten().copied().collect()
}

/// Trajectory tokens back to codes `[K][T]`; `None` unless `tokens.len()` is a positive
/// multiple of `k_total`.
pub fn unflatten_codes(tokens: &[u32], k_total: usize) -> Option<Vec<Vec<u32>>> {
    if k_total == 0 || tokens.is_empty() || !tokens.len().is_multiple_of(k_total) {
        return None;
    }
    let frames = tokens.len() / k_total;
    Some(tokens.chunks(frames).map(<[u32]>::to_vec).collect())
}

/// A float tensor from row-major values.
pub fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_flatten_codebook_by_codebook_and_back() {
        let codes = vec![vec![1, 2, 3], vec![4, 5, 6]];
        let tokens = flatten_codes(&codes);
        assert_eq!(tokens, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(unflatten_codes(&tokens, 2), Some(codes));
        assert_eq!(unflatten_codes(&tokens, 4), None);
        assert_eq!(unflatten_codes(&[], 2), None);
    }
}
