//! The decay settings shared by every pWD optimizer, and their validation.

use serde::{Deserialize, Serialize};

use crate::decay::DecayStep;
use crate::error::ConfigError;
use crate::schedule::Schedule;
use crate::select::ParamSelection;

/// What to do when a gradient holds NaN or infinite values (SPEC 4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NonFinitePolicy {
    /// Refuse the whole step and report every offending parameter by path
    /// ([`PWdOptimizer::try_step`](crate::PWdOptimizer::try_step) returns the error;
    /// `Optimizer::step` panics with it). The default.
    ///
    /// With [`DecayConfig::check_every`] `k > 1` the check is read back every `k` steps
    /// instead of every step: each step marks its non-finite gradients in a per-parameter flag
    /// on the device, and the `k`-th step (or
    /// [`PWdOptimizer::settle`](crate::PWdOptimizer::settle)) reads the flags once. A set flag
    /// refuses the whole window: the module and optimizer state from before its first step
    /// come back with the error, which names the parameters and the window's steps.
    #[default]
    Error,
    /// Leave the offending tensors (weights and optimizer state) untouched for this step, update
    /// the others, and count the skipped tensor updates
    /// ([`PWdOptimizer::skipped_updates`](crate::PWdOptimizer::skipped_updates)).
    SkipTensor,
    /// No detection: a NaN or inf gradient flows into the weights. Saves the per-step check
    /// (one reduction per tensor and one device-to-host read); use it only where the training
    /// loop checks for non-finite values itself. It does not meet SPEC section 4's guarantee.
    Unchecked,
}

/// The pWD part of an optimizer: exponent and strength (each a schedule over steps), elastic
/// net, non-adiabatic `s`, which parameters decay, and the non-finite gradient policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecayConfig {
    /// Norm exponent `p > 0` over steps. Default: constant 1, as the reference `PAdam`.
    pub p: Schedule,
    /// Penalty strength `lambda >= 0` over steps. Default: constant 1e-2, as the reference.
    pub lambda: Schedule,
    /// Elastic-net L2 strength `lambda2 >= 0` (SPEC 5). Default 0 (off).
    pub lambda2: f64,
    /// Relaxation rate of the non-adiabatic `s`, in `(0, 1]`. 1 (default) is the adiabatic
    /// limit `s = |w_old|^(p-2)` and keeps no extra state.
    pub s_rate: f64,
    /// Which parameters are decayed. Default: all.
    pub selection: ParamSelection,
    /// NaN / inf gradient policy. Default: error.
    pub non_finite: NonFinitePolicy,
    /// With [`NonFinitePolicy::Error`]: steps per device-to-host read of the non-finite
    /// check, `>= 1`. Default 1 (every step is checked before it returns). A read waits for
    /// the device to finish all queued work, so on a GPU each read leaves it idle while the
    /// host queues the next step; `k > 1` pays that once per `k` steps and, on a hit, rolls
    /// back up to `k` steps. The optimizer then holds the module and state from before the
    /// window (one extra copy of weights and moments).
    pub check_every: usize,
}

impl Default for DecayConfig {
    fn default() -> Self {
        Self {
            p: Schedule::constant(1.0),
            lambda: Schedule::constant(1e-2),
            lambda2: 0.0,
            s_rate: 1.0,
            selection: ParamSelection::all(),
            non_finite: NonFinitePolicy::Error,
            check_every: 1,
        }
    }
}

impl DecayConfig {
    /// Check every field; `optimizer` names the owner in the error message.
    pub fn validate(&self, optimizer: &'static str) -> Result<(), ConfigError> {
        self.p.validate(
            optimizer,
            "p",
            |p| p.is_finite() && p > 0.0,
            "p must be finite and > 0",
        )?;
        self.lambda.validate(
            optimizer,
            "lambda",
            |l| l.is_finite() && l >= 0.0,
            "lambda must be finite and >= 0",
        )?;
        if !(self.lambda2.is_finite() && self.lambda2 >= 0.0) {
            return Err(ConfigError::new(
                optimizer,
                "lambda2",
                self.lambda2,
                "lambda2 must be finite and >= 0",
            ));
        }
        if !(self.s_rate > 0.0 && self.s_rate <= 1.0) {
            return Err(ConfigError::new(
                optimizer,
                "s_rate",
                self.s_rate,
                "s_rate must be in (0, 1]; 1 is the adiabatic limit",
            ));
        }
        if self.check_every == 0 {
            return Err(ConfigError::new(
                optimizer,
                "check_every",
                self.check_every,
                "check_every must be >= 1 (steps per read of the non-finite check)",
            ));
        }
        Ok(())
    }

    /// True when `s` is kept as optimizer state (rate < 1).
    pub fn is_non_adiabatic(&self) -> bool {
        self.s_rate < 1.0
    }

    /// The decay scalars of step `t` (0-based) at learning rate `lr`.
    pub fn at(&self, t: usize, lr: f64) -> DecayStep {
        DecayStep {
            lr,
            p: self.p.value(t),
            lambda: self.lambda.value(t),
            lambda2: self.lambda2,
        }
    }
}

/// The learning rate passed to a step must be finite and >= 0 (SPEC 4).
pub fn validate_lr(lr: f64) -> Result<(), ConfigError> {
    if lr.is_finite() && lr >= 0.0 {
        Ok(())
    } else {
        Err(ConfigError::new(
            "optimizer step",
            "lr",
            lr,
            "the learning rate must be finite and >= 0",
        ))
    }
}

/// Adam-family betas must lie in `[0, 1)` and eps must be > 0 (SPEC 4).
pub fn validate_adam(
    optimizer: &'static str,
    beta_1: f64,
    beta_2: f64,
    epsilon: f64,
) -> Result<(), ConfigError> {
    // burn's Adam takes these as f32: a beta that rounds to 1.0 there (e.g. 0.99999999) zeroes
    // a bias correction, and an epsilon that rounds to 0 allows 0/0; both give NaN weights.
    for (field, beta) in [("beta_1", beta_1), ("beta_2", beta_2)] {
        if !((0.0..1.0).contains(&beta) && (beta as f32) < 1.0) {
            return Err(ConfigError::new(
                optimizer,
                field,
                beta,
                "betas must be in [0, 1), also after rounding to f32",
            ));
        }
    }
    let eps32 = epsilon as f32;
    if !(epsilon.is_finite() && epsilon > 0.0 && eps32 > 0.0 && eps32.is_finite()) {
        return Err(ConfigError::new(
            optimizer,
            "epsilon",
            epsilon,
            "epsilon must be finite and > 0, also after rounding to f32",
        ));
    }
    Ok(())
}

/// Builder methods for the `decay` field, shared by every optimizer config.
macro_rules! decay_builders {
    ($config:ty) => {
        impl $config {
            /// Constant norm exponent `p`.
            pub fn with_p(mut self, p: f64) -> Self {
                self.decay.p = $crate::Schedule::constant(p);
                self
            }

            /// Norm exponent as a schedule over steps.
            pub fn with_p_schedule(mut self, p: $crate::Schedule) -> Self {
                self.decay.p = p;
                self
            }

            /// Constant penalty strength `lambda`.
            pub fn with_lambda(mut self, lambda: f64) -> Self {
                self.decay.lambda = $crate::Schedule::constant(lambda);
                self
            }

            /// Penalty strength as a schedule over steps.
            pub fn with_lambda_schedule(mut self, lambda: $crate::Schedule) -> Self {
                self.decay.lambda = lambda;
                self
            }

            /// Elastic-net L2 strength.
            pub fn with_lambda2(mut self, lambda2: f64) -> Self {
                self.decay.lambda2 = lambda2;
                self
            }

            /// Non-adiabatic `s` relaxation rate in `(0, 1]` (1 = adiabatic).
            pub fn with_s_rate(mut self, s_rate: f64) -> Self {
                self.decay.s_rate = s_rate;
                self
            }

            /// Which parameters are decayed.
            pub fn with_selection(mut self, selection: $crate::ParamSelection) -> Self {
                self.decay.selection = selection;
                self
            }

            /// The non-finite gradient policy.
            pub fn with_non_finite(mut self, policy: $crate::NonFinitePolicy) -> Self {
                self.decay.non_finite = policy;
                self
            }

            /// Steps per read of the non-finite check (`>= 1`, see
            /// [`DecayConfig::check_every`](crate::DecayConfig::check_every)).
            pub fn with_check_every(mut self, steps: usize) -> Self {
                self.decay.check_every = steps;
                self
            }

            /// Replace all decay settings at once.
            pub fn with_decay(mut self, decay: $crate::DecayConfig) -> Self {
                self.decay = decay;
                self
            }
        }
    };
}
pub(crate) use decay_builders;
