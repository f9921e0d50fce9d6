//! musicrl patch: the composed layer norm, as `ModuleOps::layer_norm`'s default computed it.

use alloc::vec::Vec;

use burn_std::Shape;

use crate::{Backend, TensorMetadata, tensor::FloatTensor};

/// `(x - mean) / sqrt(var + epsilon) * gamma + beta` over the last dimension, from the
/// backend's elementwise and reduction ops (the default of
/// [layer_norm](crate::ops::ModuleOps::layer_norm)).
pub fn layer_norm_composed<B: Backend>(
    tensor: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: Option<FloatTensor<B>>,
    epsilon: f64,
) -> FloatTensor<B> {
    let shape = tensor.shape();
    let rank = shape.num_dims();
    let last_dim = rank - 1;
    let d_model = shape[last_dim];

    let mean = B::float_mean_dim(tensor.clone(), last_dim);
    let centered = B::float_sub(tensor, mean);
    let var = B::float_mean_dim(B::float_mul(centered.clone(), centered.clone()), last_dim);
    let denom = B::float_sqrt(B::float_add_scalar(var, epsilon.into()));
    let normalized = B::float_div(centered, denom);

    let broadcast_dims: Vec<usize> = (0..rank)
        .map(|i| if i == last_dim { d_model } else { 1 })
        .collect();
    let gamma_b = B::float_reshape(gamma, Shape::from(broadcast_dims.clone()));
    let scaled = B::float_mul(normalized, gamma_b);

    match beta {
        Some(beta) => {
            let beta_b = B::float_reshape(beta, Shape::from(broadcast_dims));
            B::float_add(scaled, beta_b)
        }
        None => scaled,
    }
}
