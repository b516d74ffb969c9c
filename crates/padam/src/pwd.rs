//! [`PWd`]: pWD around any burn [`SimpleOptimizer`].
//!
//! One step is: remember `w_old`, let the base optimizer produce `w_hat`, then
//! `w_new = decay::apply(w_hat, w_old)`. The wrapped optimizer's own state is kept untouched
//! inside [`PWdState`], next to the per-tensor step count (which drives the p and lambda
//! schedules) and the optional non-adiabatic `s`.
//!
//! `PWd<O>` is itself a `SimpleOptimizer`, so it also works inside burn's own
//! `OptimizerAdaptor`; [`PWdOptimizer`](crate::PWdOptimizer) adds parameter selection and the
//! non-finite gradient policy, which need parameter paths.

use burn::optim::{LearningRate, SimpleOptimizer};
use burn::record::Record;
use burn::tensor::{backend::Backend, Tensor};

use crate::decay;
use crate::decay_config::DecayConfig;
use crate::error::ConfigError;
use crate::fused;
use crate::schedule::Schedule;

/// pWD wrapped around a base optimizer `O`.
#[derive(Clone, Debug)]
pub struct PWd<O> {
    base: O,
    decay: DecayConfig,
    /// Whether the adiabatic decay runs as [`fused::pwd_decay`] (one pass where the backend has
    /// it) or always as [`decay::apply`]'s tensor ops (the oracle).
    fused_decay: bool,
}

/// Per-tensor state: the base optimizer's state, the steps taken, and the non-adiabatic `s`.
#[derive(Record, Clone)]
pub struct PWdState<B: Backend, const D: usize, T: Record<B> + Clone> {
    /// State of the wrapped optimizer.
    pub base: Option<T>,
    /// Steps this tensor has taken (the schedules' `t`).
    pub step: usize,
    /// Non-adiabatic `s` (only when `s_rate < 1`).
    pub s: Option<Tensor<B, D>>,
}

impl<O> PWd<O> {
    /// Wrap `base`; fails if `decay` is invalid.
    pub fn new(base: O, decay: DecayConfig) -> Result<Self, ConfigError> {
        decay.validate("pWD")?;
        Ok(Self {
            base,
            decay,
            fused_decay: true,
        })
    }

    /// With `false`, the decay always runs as tensor ops, also where the backend has the fused
    /// decay ([`fused::supports_decay`]); the results are the same to the bit.
    pub fn with_fused_decay(mut self, fused: bool) -> Self {
        self.fused_decay = fused;
        self
    }

    /// True when the decay runs fused on backend `B` ([`fused::supports_decay`]) for weights of
    /// `dtype`, wherever it is not uniform and `s` is adiabatic.
    pub fn uses_fused_decay<B: Backend>(&self, dtype: burn::tensor::DType) -> bool {
        self.fused_decay && !self.decay.is_non_adiabatic() && fused::supports_decay::<B>(dtype)
    }

    /// The base optimizer.
    pub fn base(&self) -> &O {
        &self.base
    }

    /// The decay settings.
    pub fn decay(&self) -> &DecayConfig {
        &self.decay
    }

    /// Replace the lambda schedule (a [`SparsityController`](crate::SparsityController) sets
    /// it as the run goes); an invalid schedule is refused and the old one kept.
    pub fn set_lambda(&mut self, lambda: Schedule) -> Result<(), ConfigError> {
        let decay = DecayConfig {
            lambda,
            ..self.decay.clone()
        };
        decay.validate("pWD")?;
        self.decay = decay;
        Ok(())
    }
}

impl<O> PWd<O> {
    /// One step of one tensor; `decayed = false` runs the base optimizer alone (for parameters
    /// outside the selection) while still counting the step.
    pub fn step_tensor<B: Backend, const D: usize>(
        &self,
        lr: LearningRate,
        w_old: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<PWdState<B, D, O::State<D>>>,
        decayed: bool,
    ) -> (Tensor<B, D>, PWdState<B, D, O::State<D>>)
    where
        O: SimpleOptimizer<B>,
    {
        let (base_state, t, s) = match state {
            Some(st) => (st.base, st.step, st.s),
            None => (None, 0, None),
        };
        let (w_hat, base_state) = self.base.step(lr, w_old.clone(), grad, base_state);
        let (w_new, s) = if decayed {
            let step = self.decay.at(t, lr);
            if self.decay.is_non_adiabatic() {
                let s_prev = s.unwrap_or_else(|| w_old.ones_like());
                let s_new =
                    decay::relax_s(s_prev, decay::s_target(w_old, step.p), self.decay.s_rate);
                (
                    decay::apply_with_s(w_hat, s_new.clone(), &step),
                    Some(s_new),
                )
            } else if self.fused_decay {
                (fused::pwd_decay(w_hat, w_old, &step), None)
            } else {
                (decay::apply(w_hat, w_old, &step), None)
            }
        } else {
            (w_hat, s)
        };
        let state = PWdState {
            base: base_state,
            step: t + 1,
            s,
        };
        (w_new, state)
    }
}

impl<B: Backend, O: SimpleOptimizer<B>> SimpleOptimizer<B> for PWd<O> {
    type State<const D: usize> = PWdState<B, D, O::State<D>>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let (w, st) = self.step_tensor(lr, tensor, grad, state, true);
        (w, Some(st))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        PWdState {
            base: state.base.map(|b| O::to_device(b, device)),
            step: state.step,
            s: state.s.map(|s| s.to_device(device)),
        }
    }
}
