//! What every trainer of a policy shares: global-norm gradient clipping (burn clips per
//! tensor). The learner's RL updates and pretraining use it.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

/// Scales all gradients together so that their global L2 norm is at most `max_norm`
/// (burn's own clipping is per tensor). Returns the norm before clipping. `max_norm` 0
/// only measures.
pub fn clip_global_norm<M: Module>(
    grads: GradientsParams,
    module: &M,
    max_norm: f32,
) -> (GradientsParams, f32) {
    struct SumSquares<'a> {
        grads: &'a GradientsParams,
        total: f64,
    }
    impl ModuleVisitor for SumSquares<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                self.total += f64::from(g.powi_scalar(2).sum().into_scalar::<f32>());
            }
        }
    }
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: f32,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(param.id) {
                self.grads.register(param.id, g * self.factor);
            }
        }
    }

    let mut sum = SumSquares {
        grads: &grads,
        total: 0.0,
    };
    module.visit(&mut sum);
    let norm = sum.total.sqrt() as f32;
    let mut grads = grads;
    if max_norm > 0.0 && norm > max_norm {
        let mut scale = Scale {
            grads: &mut grads,
            factor: max_norm / (norm + 1e-6),
        };
        module.visit(&mut scale);
    }
    (grads, norm)
}
