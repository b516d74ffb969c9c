//! Gradient clipping by the global norm over all parameters, as PyTorch's
//! `torch.nn.utils.clip_grad_norm_` (which nanoGPT uses): every gradient is scaled by
//! `min(1, max_norm / (total_norm + 1e-6))`, where `total_norm` is the L2 norm of the per-tensor
//! L2 norms. burn's own clipping (`GradientClippingConfig::Norm`) clips each tensor on its own.
//!
//! It runs between `backward` and the optimizer step, on any backend and with any optimizer:
//!
//! ```
//! use burn::backend::{Autodiff, Flex};
//! use burn::nn::{Linear, LinearConfig};
//! use burn::optim::GradientsParams;
//! use burn::tensor::{Distribution, Tensor};
//!
//! type B = Autodiff<Flex>;
//! let device = Default::default();
//! let model: Linear<B> = LinearConfig::new(8, 4).init(&device);
//! let x = Tensor::<B, 2>::random([16, 8], Distribution::Default, &device);
//! let loss = model.forward(x).powf_scalar(2.0).mean();
//! let grads = GradientsParams::from_grads(loss.backward(), &model);
//! let (grads, norm) = padam::clip::clip_grad_norm(&model, grads, 1.0);
//! # let _ = (grads, norm);
//! ```
//!
//! The scale is computed on the device and applied as a tensor, so clipping adds no
//! device-to-host read (the norm comes back as a tensor, to read when convenient). A NaN or
//! infinite gradient makes the total norm non-finite and so every scaled gradient, as in
//! PyTorch: the optimizer's non-finite check then refuses the step.

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use hashbrown::HashSet;

/// Scale every gradient of `module` in `grads` so that their global L2 norm is at most
/// `max_norm` (PyTorch's `clip_grad_norm_`, `eps = 1e-6`); returns the gradients and the
/// global norm before clipping (a one-element tensor). Parameters without a gradient are left
/// out of the norm, as PyTorch leaves out parameters whose `.grad` is `None`.
pub fn clip_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: GradientsParams,
    max_norm: f64,
) -> (GradientsParams, Tensor<B::InnerBackend, 1>) {
    let mut norms = Norms::<B> {
        grads: &grads,
        squares: Vec::new(),
        seen: HashSet::new(),
    };
    module.visit(&mut norms);
    let device = module.devices().into_iter().next().unwrap_or_default();
    let total = match norms.squares.is_empty() {
        true => Tensor::zeros([1], &device),
        false => Tensor::cat(norms.squares, 0).sum().sqrt(),
    };
    let scale = total.clone().add_scalar(1e-6).recip().mul_scalar(max_norm);
    // min(scale, 1) that keeps a NaN (as torch.clamp does; a plain minimum may drop it)
    let scale = scale.clone().mask_fill(scale.greater_elem(1.0), 1.0);
    let mut apply = Scale::<B> {
        grads,
        scale,
        seen: HashSet::new(),
    };
    module.visit(&mut apply);
    (apply.grads, total)
}

/// The squared L2 norm of each parameter's gradient (as the square of the tensor's norm, the
/// way PyTorch reduces per tensor first).
struct Norms<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    squares: Vec<Tensor<B::InnerBackend, 1>>,
    seen: HashSet<ParamId>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Norms<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.seen.insert(param.id) {
            return; // a parameter the module holds twice counts once
        }
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let norm = g.square().sum().sqrt();
            self.squares.push(norm.square());
        }
    }
}

/// Multiply each gradient by the clip factor (shared parameters are scaled once).
struct Scale<B: AutodiffBackend> {
    grads: GradientsParams,
    scale: Tensor<B::InnerBackend, 1>,
    seen: HashSet<ParamId>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.seen.insert(param.id) {
            return;
        }
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            let scale = self.scale.clone().reshape([1; D]);
            self.grads.register(param.id, g * scale);
        }
    }
}
