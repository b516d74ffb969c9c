//! PAdam: Adam (PyTorch's definition, no L2 term) followed by the pWD step.

use burn::module::AutodiffModule;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{Adam, AdamConfig};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::decay_config::{validate_adam, DecayConfig};
use crate::error::ConfigError;
use crate::fused::AdamHyper;
use crate::optimizer::PWdOptimizer;

/// Configuration of [PAdam](PWdOptimizer): Adam + pWD.
///
/// Defaults follow PyTorch's `torch.optim.Adam` (betas 0.9 / 0.999, **eps 1e-8**), which the
/// paper's runs used. burn's own `AdamConfig` defaults to eps **1e-5**: PAdam with `lambda = 0`
/// equals `AdamConfig::new().with_epsilon(1e-8)`, not `AdamConfig::new()`.
/// The decay defaults follow the reference `PAdam`: `p = 1`, `lambda = 1e-2`, all parameters.
///
/// ```
/// use padam::PAdamConfig;
/// let config = PAdamConfig::new().with_p(0.8).with_lambda(3e-3);
/// assert_eq!(config.epsilon, 1e-8);
/// assert!(PAdamConfig::new().with_p(-1.0).validate().is_err());
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PAdamConfig {
    /// First-moment decay, in `[0, 1)`.
    pub beta_1: f64,
    /// Second-moment decay, in `[0, 1)`.
    pub beta_2: f64,
    /// Added to `sqrt(v_hat)`; `> 0`.
    pub epsilon: f64,
    /// The pWD settings.
    pub decay: DecayConfig,
    /// Optional per-tensor gradient clipping (burn's).
    pub grad_clipping: Option<GradientClippingConfig>,
    /// Run the step as one fused pass per tensor where the backend has it (burn's CUDA backend
    /// with padam's `cuda` feature, burn's CPU backend `Flex` with the default `flex` feature;
    /// see [`fused`](crate::fused)); `false` keeps the tensor-op path everywhere. Default `true`.
    pub fused_kernel: bool,
    /// Where the fused step runs on burn's CUDA backend: all tensors of a step in one
    /// operation, one kernel launch per group of tensors (`true`, the default), or one kernel
    /// per tensor (`false`); the same arithmetic. Other backends ignore it.
    pub multi_tensor: bool,
}

impl Default for PAdamConfig {
    fn default() -> Self {
        Self {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-8,
            decay: DecayConfig::default(),
            grad_clipping: None,
            fused_kernel: true,
            multi_tensor: true,
        }
    }
}

impl PAdamConfig {
    /// The defaults (see the type's documentation).
    pub fn new() -> Self {
        Self::default()
    }

    /// Set `beta_1`.
    pub fn with_beta_1(mut self, beta_1: f64) -> Self {
        self.beta_1 = beta_1;
        self
    }

    /// Set `beta_2`.
    pub fn with_beta_2(mut self, beta_2: f64) -> Self {
        self.beta_2 = beta_2;
        self
    }

    /// Set `epsilon`.
    pub fn with_epsilon(mut self, epsilon: f64) -> Self {
        self.epsilon = epsilon;
        self
    }

    /// Clip each gradient tensor before the step.
    pub fn with_grad_clipping(mut self, clipping: Option<GradientClippingConfig>) -> Self {
        self.grad_clipping = clipping;
        self
    }

    /// Use the fused kernel where the backend has it (`true`, the default) or always the
    /// tensor-op path (`false`).
    pub fn with_fused_kernel(mut self, fused_kernel: bool) -> Self {
        self.fused_kernel = fused_kernel;
        self
    }

    /// Step all tensors in one multi-tensor operation on burn's CUDA backend (`true`, the
    /// default) or launch one kernel per tensor (`false`).
    pub fn with_multi_tensor(mut self, multi_tensor: bool) -> Self {
        self.multi_tensor = multi_tensor;
        self
    }

    /// Check every field; the error names the field and value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_adam("PAdam", self.beta_1, self.beta_2, self.epsilon)?;
        self.decay.validate("PAdam")
    }

    /// burn's Adam with these betas and epsilon and no weight decay: the base of PAdam.
    pub fn base(&self) -> Adam {
        AdamConfig::new()
            .with_beta_1(self.beta_1 as f32)
            .with_beta_2(self.beta_2 as f32)
            .with_epsilon(self.epsilon as f32)
            .build()
    }

    /// Build the optimizer for module `M` on backend `B`.
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
    ) -> Result<PWdOptimizer<Adam, M, B>, ConfigError> {
        self.validate()?;
        let optim = PWdOptimizer::build(self.base(), &self.decay, self.grad_clipping.as_ref())?;
        Ok(if self.fused_kernel {
            optim
                .with_fused_adam(AdamHyper {
                    beta_1: self.beta_1 as f32,
                    beta_2: self.beta_2 as f32,
                    epsilon: self.epsilon as f32,
                })
                .with_multi_tensor(self.multi_tensor)
        } else {
            optim.with_fused_decay(false)
        })
    }
}

crate::decay_config::decay_builders!(PAdamConfig);
