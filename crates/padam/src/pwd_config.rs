//! [`PWdConfig`]: pWD around any burn `SimpleOptimizer` (RmsProp, AdaGrad, Muon, Adan, ...).

use burn::module::AutodiffModule;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::SimpleOptimizer;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::decay_config::DecayConfig;
use crate::error::ConfigError;
use crate::optimizer::PWdOptimizer;

/// pWD settings to wrap around a base optimizer of your choice.
///
/// ```
/// use burn::optim::RmsPropConfig;
/// use padam::PWdConfig;
/// # type B = burn::backend::Autodiff<burn::backend::Flex>;
/// # type M = burn::nn::Linear<B>;
/// let optim = PWdConfig::new()
///     .with_p(0.8)
///     .with_lambda(1e-3)
///     .init_with::<B, M, _>(RmsPropConfig::new().build())
///     .unwrap();
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PWdConfig {
    /// The pWD settings.
    pub decay: DecayConfig,
    /// Optional per-tensor gradient clipping (burn's).
    pub grad_clipping: Option<GradientClippingConfig>,
    /// Run the decay after the base step as one fused pass per tensor where the backend has it
    /// (burn's CPU backend `Flex`, see [`fused::pwd_decay`](crate::fused::pwd_decay)); `false`
    /// keeps the tensor ops everywhere. The results are the same to the bit. Default `true`.
    pub fused_kernel: bool,
}

impl Default for PWdConfig {
    fn default() -> Self {
        Self {
            decay: DecayConfig::default(),
            grad_clipping: None,
            fused_kernel: true,
        }
    }
}

impl PWdConfig {
    /// Default decay settings (`p = 1`, `lambda = 1e-2`, all parameters).
    pub fn new() -> Self {
        Self::default()
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

    /// Check every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.decay.validate("pWD")
    }

    /// Wrap `base` (a burn `SimpleOptimizer` built without weight decay of its own).
    pub fn init_with<B, M, O>(&self, base: O) -> Result<PWdOptimizer<O, M, B>, ConfigError>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B>,
        O: SimpleOptimizer<B::InnerBackend>,
    {
        let optim = PWdOptimizer::build(base, &self.decay, self.grad_clipping.as_ref())?;
        Ok(optim.with_fused_decay(self.fused_kernel))
    }
}

crate::decay_config::decay_builders!(PWdConfig);
