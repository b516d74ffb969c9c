//! # padam: p-norm decoupled weight decay (pWD) for burn
//!
//! pWD (arXiv 2404.10824) replaces AdamW's `w *= 1 - lr*lambda` with the proximal step
//! `w = w_hat / (1 + lr*p*lambda*|w_old|^(p-2))`, which is stable for any `p > 0`; with
//! `p < 1` it drives most weights to exactly zero.
//!
//! - [`PAdamConfig`] (Adam + pWD), [`PSgdConfig`] (SGD + pWD) and [`PWdConfig`] (pWD around any
//!   burn `SimpleOptimizer`) build a [`PWdOptimizer`], a burn `Optimizer` that drops into a
//!   training loop like `AdamWConfig::new().init()`.
//! - [`decay`] holds the formula, once; [`reference`] a float64 scalar version of everything.
//! - [`Schedule`] gives `p(t)` and `lambda(t)`; [`ParamSelection`] chooses decayed parameters.
//! - [`clip::clip_grad_norm`] clips gradients by their global norm (PyTorch's `clip_grad_norm_`).
//! - [`sparsity::measure`] reports exact zeros and `|w| < threshold`, globally and per tensor.
//! - [`SparsityController`] steers lambda to a target sparsity along a [`CubicRamp`], the
//!   trajectory gradual pruning follows too, on the step or the learning-rate clock.
//!
//! ```
//! use burn::backend::{Autodiff, Flex};
//! use burn::nn::{Linear, LinearConfig};
//! use burn::optim::{GradientsParams, Optimizer};
//! use burn::tensor::{Distribution, Tensor};
//! use padam::{sparsity, PAdamConfig, ParamSelection};
//!
//! type B = Autodiff<Flex>;
//! let device = Default::default();
//! let mut model: Linear<B> = LinearConfig::new(8, 4).init(&device);
//! let mut optim = PAdamConfig::new().with_p(0.8).with_lambda(1e-3).init::<B, Linear<B>>()?;
//! for _ in 0..10 {
//!     let x = Tensor::<B, 2>::random([16, 8], Distribution::Default, &device);
//!     let loss = model.forward(x).powf_scalar(2.0).mean();
//!     let grads = GradientsParams::from_grads(loss.backward(), &model);
//!     model = optim.step(1e-2, model, grads);
//! }
//! let report = sparsity::measure(&model, 1e-9, &ParamSelection::all());
//! assert_eq!(report.numel(), 8 * 4 + 4);
//! # Ok::<(), padam::ConfigError>(())
//! ```

#![warn(missing_docs)]

pub mod cases;
pub mod clip;
pub mod controller;
pub mod decay;
pub mod decay_config;
pub mod error;
pub mod fused;
pub mod optimizer;
pub mod padam_config;
pub mod paths;
pub mod psgd_config;
pub mod pwd;
pub mod pwd_config;
pub mod ramp;
pub mod reference;
pub mod schedule;
pub mod select;
pub mod sparsity;

pub use controller::{ControllerError, ControllerState, SparsityController, SparsityTarget};
pub use decay_config::{DecayConfig, NonFinitePolicy};
pub use error::{ConfigError, NonFiniteGradient, NonFiniteParam, StepError, StepFailure};
pub use optimizer::{PWdOptimizer, PWdOptimizerRecord};
pub use padam_config::PAdamConfig;
pub use psgd_config::PSgdConfig;
pub use pwd::{PWd, PWdState};
pub use pwd_config::PWdConfig;
pub use ramp::{CubicRamp, RampClock};
pub use schedule::{Schedule, ScheduleLr};
pub use select::ParamSelection;
pub use sparsity::{SparsityReport, TensorSparsity};

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
