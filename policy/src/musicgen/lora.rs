//! Low-rank adapters (LoRA, Hu et al. 2021) on a MusicGen decoder's projections.
//!
//! A chosen projection `y = x·W` gains `(alpha / rank) · x·Aᵀ·Bᵀ`, with `A` of
//! `rank × d_in` drawn as PEFT draws it (uniform in ±1/√d_in, Kaiming's rule with
//! `a = √5`) and `B` of `d_out × rank` at zero, so a fresh adapter changes nothing. The base
//! decoder is frozen (`no_grad`): the learner trains the adapters and the value head, the
//! KL reference is the same base run without its adapters (no second copy of the
//! decoder), and a version on the wire is the adapters alone ([`Adapters::to_bytes`]). An
//! actor merges them into its own copy of the folder's decoder ([`Adapters::merge_into`]):
//! `W + (alpha / rank) · Aᵀ·Bᵀ` in burn's `[d_in, d_out]` layout, the same sum the
//! learner's unmerged forward computes, so the rollout engine and the export see one
//! ordinary decoder.
//!
//! Which projections carry an adapter is `policy.lora.targets`, matched against
//! transformers' module names the way PEFT matches `target_modules` (a name or a dotted
//! suffix of it: `q_proj` is both attentions' query projections).

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::store::ModuleRecord;
use burn::tensor::module::linear;
use burn::tensor::{Bytes, Device, Tensor, TensorData};
use musicrl_config::{LORA_PROJECTIONS, LoraConfig};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::decoder::Decoder;
use crate::PolicyError;

/// One projection's adapter, stored in burn's linear layout.
#[derive(Module, Debug)]
pub struct Adapter {
    /// `Aᵀ`, `[d_in, rank]`.
    pub down: Param<Tensor<2>>,
    /// `Bᵀ`, `[rank, d_out]`.
    pub up: Param<Tensor<2>>,
    /// `alpha / rank`.
    scale: f32,
}

impl Adapter {
    /// `scale · x·Aᵀ·Bᵀ`: what the adapter adds to the projection of `x` (`[…, d_in]`).
    pub fn delta<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        linear(linear(x, self.down.val(), None), self.up.val(), None) * self.scale
    }

    /// `scale · Aᵀ·Bᵀ`, `[d_in, d_out]`: what merging adds to the base weight.
    pub fn update(&self) -> Tensor<2> {
        self.down.val().matmul(self.up.val()) * self.scale
    }

    /// Number of trained values.
    pub fn len(&self) -> usize {
        let [d_in, r] = self.down.dims();
        let [_, d_out] = self.up.dims();
        r * (d_in + d_out)
    }

    /// Whether the adapter has no values (never: the rank is at least 1).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One decoder layer's adapters, one slot per projection in [`LORA_PROJECTIONS`] order.
#[derive(Module, Debug)]
pub struct LayerAdapters {
    pub slots: Vec<Option<Adapter>>,
}

impl LayerAdapters {
    /// The adapter of projection `slot` (an index into [`LORA_PROJECTIONS`]), if it has one.
    pub fn slot(&self, slot: usize) -> Option<&Adapter> {
        self.slots.get(slot).and_then(Option::as_ref)
    }
}

/// Every layer's adapters.
#[derive(Module, Debug)]
pub struct Adapters {
    pub layers: Vec<LayerAdapters>,
}

impl Adapters {
    /// Fresh adapters for `decoder`'s chosen projections: `A` drawn from `lora.seed` (layer
    /// by layer, projection by projection, row-major), `B` zero. Refuses rank 0 and a
    /// target list that selects nothing.
    pub fn new(decoder: &Decoder, lora: &LoraConfig, device: &Device) -> Result<Self, PolicyError> {
        if !lora.enabled() {
            return Err(PolicyError::InvalidInput(
                "adapters need policy.lora.rank > 0".into(),
            ));
        }
        let rank = lora.rank;
        let scale = lora.scale();
        let mut rng = StdRng::seed_from_u64(lora.seed);
        let mut any = false;
        let layers = (0..decoder.n_layers())
            .map(|i| {
                let slots = LORA_PROJECTIONS
                    .iter()
                    .enumerate()
                    .map(|(slot, name)| {
                        if !lora.targets_projection(name) {
                            return None;
                        }
                        any = true;
                        let [d_in, d_out] = decoder.projection(i, slot).weight.dims();
                        let bound = 1.0 / (d_in as f32).sqrt();
                        let down: Vec<f32> = (0..d_in * rank)
                            .map(|_| rng.random_range(-bound..bound))
                            .collect();
                        // Drawn as PEFT's A, [rank, d_in]; stored transposed.
                        let down =
                            Tensor::<2>::from_data(TensorData::new(down, [rank, d_in]), device)
                                .transpose();
                        let down = Tensor::from_data(down.into_data(), device);
                        let up = Tensor::zeros([rank, d_out], device);
                        Some(Adapter {
                            down: Param::from_tensor(down),
                            up: Param::from_tensor(up),
                            scale,
                        })
                    })
                    .collect();
                LayerAdapters { slots }
            })
            .collect();
        if !any {
            return Err(PolicyError::InvalidInput(format!(
                "policy.lora.targets {:?} select no projection of {LORA_PROJECTIONS:?}",
                lora.targets
            )));
        }
        Ok(Self { layers })
    }

    /// The adapters of layer `i`.
    pub fn layer(&self, i: usize) -> Option<&LayerAdapters> {
        self.layers.get(i)
    }

    /// Number of trained values in all adapters.
    pub fn len(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|l| l.slots.iter().flatten())
            .map(Adapter::len)
            .sum()
    }

    /// Whether there are no adapters (never, once built).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `decoder` with every adapter merged into its projection's weight
    /// (`W + scale · Aᵀ·Bᵀ`), as a constant (no gradient history).
    pub fn merge_into(&self, decoder: &Decoder) -> Decoder {
        let mut merged = decoder.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            for (slot, adapter) in layer.slots.iter().enumerate() {
                let Some(adapter) = adapter else { continue };
                let lin: &mut Linear = merged.projection_mut(i, slot);
                let base = lin.weight.val().detach();
                let update = adapter.update().detach();
                let device = base.device();
                let sum = base + Tensor::from_data(update.into_data(), &device);
                let id = lin.weight.id;
                lin.weight = Param::initialized(id, sum.set_require_grad(false));
            }
        }
        merged
    }

    /// The adapters as bytes (burnpack, f32): one parameter version on the wire.
    pub fn to_bytes(&self) -> Result<Vec<u8>, PolicyError> {
        let bytes = self
            .clone()
            .into_record()
            .into_bytes()
            .map_err(|e| PolicyError::InvalidInput(format!("serialising adapters: {e}")))?;
        Ok(bytes.to_vec())
    }

    /// Adapters from [`Adapters::to_bytes`], checked against the shapes of `template`.
    pub fn from_bytes(template: Self, bytes: &[u8]) -> Result<Self, PolicyError> {
        let record =
            ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec())).map_err(|e| {
                PolicyError::InvalidInput(format!("not a burnpack adapter record: {e}"))
            })?;
        template.try_load_record(record).map_err(|e| {
            PolicyError::InvalidInput(format!(
                "the adapters do not fit this folder's decoder and policy.lora (rank, \
                 targets): {e}"
            ))
        })
    }
}
