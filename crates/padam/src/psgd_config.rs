//! pSGD: SGD (PyTorch's momentum, dampening and Nesterov) followed by the pWD step.

use burn::module::AutodiffModule;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{Sgd, SgdConfig};
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize};

use crate::decay_config::DecayConfig;
use crate::error::ConfigError;
use crate::optimizer::PWdOptimizer;

/// Configuration of [pSGD](PWdOptimizer): SGD + pWD.
///
/// Defaults follow PyTorch's `torch.optim.SGD`: momentum 0, dampening 0, no Nesterov. burn's
/// `MomentumConfig` defaults to dampening **0.1**; set it explicitly when comparing with burn.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PSgdConfig {
    /// Momentum factor, `>= 0` (0 = plain SGD).
    pub momentum: f64,
    /// Dampening of the gradient in the momentum buffer, in `[0, 1]`.
    pub dampening: f64,
    /// Nesterov momentum (needs `momentum > 0` and `dampening = 0`).
    pub nesterov: bool,
    /// The pWD settings.
    pub decay: DecayConfig,
    /// Optional per-tensor gradient clipping (burn's).
    pub grad_clipping: Option<GradientClippingConfig>,
    /// Run the decay after the base step as one fused pass per tensor where the backend has it
    /// (burn's CPU backend `Flex`, see [`fused::pwd_decay`](crate::fused::pwd_decay)); `false`
    /// keeps the tensor ops everywhere. The results are the same to the bit. Default `true`.
    pub fused_kernel: bool,
}

impl Default for PSgdConfig {
    fn default() -> Self {
        Self {
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            decay: DecayConfig::default(),
            grad_clipping: None,
            fused_kernel: true,
        }
    }
}

impl PSgdConfig {
    /// The defaults (see the type's documentation).
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the momentum factor.
    pub fn with_momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// Set the dampening.
    pub fn with_dampening(mut self, dampening: f64) -> Self {
        self.dampening = dampening;
        self
    }

    /// Enable or disable Nesterov momentum.
    pub fn with_nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }

    /// Clip each gradient tensor before the step.
    pub fn with_grad_clipping(mut self, clipping: Option<GradientClippingConfig>) -> Self {
        self.grad_clipping = clipping;
        self
    }

    /// Fuse the decay where the backend has it (`true`, the default) or keep the tensor ops.
    pub fn with_fused_kernel(mut self, fused_kernel: bool) -> Self {
        self.fused_kernel = fused_kernel;
        self
    }

    /// Check every field; the error names the field and value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.momentum.is_finite() && self.momentum >= 0.0) {
            return Err(ConfigError::new(
                "pSGD",
                "momentum",
                self.momentum,
                "momentum must be finite and >= 0",
            ));
        }
        if !(0.0..=1.0).contains(&self.dampening) {
            return Err(ConfigError::new(
                "pSGD",
                "dampening",
                self.dampening,
                "dampening must be in [0, 1]",
            ));
        }
        if self.nesterov && (self.momentum == 0.0 || self.dampening != 0.0) {
            return Err(ConfigError::new(
                "pSGD",
                "nesterov",
                format!(
                    "true with momentum {} and dampening {}",
                    self.momentum, self.dampening
                ),
                "Nesterov momentum needs momentum > 0 and dampening = 0",
            ));
        }
        self.decay.validate("pSGD")
    }

    /// burn's SGD with this momentum and no weight decay: the base of pSGD.
    pub fn base<B: Backend>(&self) -> Sgd<B> {
        let momentum = (self.momentum != 0.0).then_some(MomentumConfig {
            momentum: self.momentum,
            dampening: self.dampening,
            nesterov: self.nesterov,
        });
        SgdConfig::new().with_momentum(momentum).build()
    }

    /// Build the optimizer for module `M` on backend `B`.
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
    ) -> Result<PWdOptimizer<Sgd<B::InnerBackend>, M, B>, ConfigError> {
        self.validate()?;
        let optim = PWdOptimizer::build(self.base(), &self.decay, self.grad_clipping.as_ref())?;
        Ok(optim.with_fused_decay(self.fused_kernel))
    }
}

crate::decay_config::decay_builders!(PSgdConfig);
