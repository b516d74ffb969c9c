//! The table of optimizer cases every execution path is checked against.
//!
//! [`cases`] is one list of optimizer configurations (optimizer × p × λ × extension ×
//! non-finite policy), in the spirit of PyTorch's `optim_db`: every runner iterates the same
//! list, so no path is checked on a case another path skips.
//!
//! - `tests/fused_cpu.rs` runs every case on burn's CPU backend: the default step (the fused one
//!   where the case allows it) against the tensor-op path bit for bit, both against the float64
//!   [`reference`], and the non-finite refusals on both paths.
//! - `tests/golden.rs` describes the PyTorch golden vectors as [`Case`]s (their configurations
//!   are fixed by the data) and builds and references them through this module.
//! - `padam bench verify` (crate `padam-lab`) runs every case on the backend it is given, so
//!   `padam bench verify --backend cuda` covers exactly the cases the CPU tests cover.
//!
//! A case fixes the optimizer, its decay settings, its learning rates and what is checked
//! ([`Probe`]); the runner brings the data (module, weights, gradients, number of steps).
//!
//! This module is test support: it is public so that the CLI crate can run the same cases, and
//! it is not needed to use the optimizers.

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{
    AdaGradConfig, GradientsParams, LearningRate, Optimizer, RmsPropConfig, SimpleOptimizer,
};
use burn::tensor::backend::AutodiffBackend;

use crate::decay_config::{DecayConfig, NonFinitePolicy};
use crate::error::{ConfigError, StepError};
use crate::optimizer::PWdOptimizer;
use crate::reference::{self, AdamParams, AdamState, Decay, SgdParams, SgdState};
use crate::schedule::Schedule;
use crate::select::ParamSelection;
use crate::{PAdamConfig, PSgdConfig, PWdConfig};

/// The optimizer of a case, as plain data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CaseOptimizer {
    /// [`PAdamConfig`]: burn's Adam + pWD (the only one with a fused step).
    PAdam {
        /// First-moment decay.
        beta_1: f64,
        /// Second-moment decay.
        beta_2: f64,
        /// Added to `sqrt(v_hat)`.
        epsilon: f64,
    },
    /// [`PSgdConfig`]: burn's SGD + pWD.
    PSgd {
        /// Momentum factor (0: none).
        momentum: f64,
        /// Dampening of the momentum buffer.
        dampening: f64,
        /// Nesterov momentum.
        nesterov: bool,
    },
    /// [`PWdConfig`] around burn's `RmsPropConfig::new()` (no float64 reference of the base:
    /// checked against burn's bare RmsProp on the same backend, plus the float64 decay).
    PWdRmsProp,
    /// [`PWdConfig`] around burn's `AdaGradConfig::new()` (checked like
    /// [`CaseOptimizer::PWdRmsProp`]).
    PWdAdaGrad,
}

impl CaseOptimizer {
    /// PAdam with PyTorch's Adam defaults (betas 0.9 / 0.999, eps 1e-8), as [`PAdamConfig`].
    pub const PADAM: Self = CaseOptimizer::PAdam {
        beta_1: 0.9,
        beta_2: 0.999,
        epsilon: 1e-8,
    };

    /// pSGD with this momentum (no dampening) and Nesterov flag.
    pub fn psgd(momentum: f64, nesterov: bool) -> Self {
        CaseOptimizer::PSgd {
            momentum,
            dampening: 0.0,
            nesterov,
        }
    }

    /// A short name: `padam`, `psgd`, `pwd(rmsprop)`, `pwd(adagrad)`.
    pub fn label(&self) -> &'static str {
        match self {
            CaseOptimizer::PAdam { .. } => "padam",
            CaseOptimizer::PSgd { .. } => "psgd",
            CaseOptimizer::PWdRmsProp => "pwd(rmsprop)",
            CaseOptimizer::PWdAdaGrad => "pwd(adagrad)",
        }
    }

    /// True when [`reference`] has a float64 version of the base optimizer (Adam, SGD), so a
    /// whole trajectory can be compared with [`Case::reference`].
    pub fn has_reference(&self) -> bool {
        matches!(
            self,
            CaseOptimizer::PAdam { .. } | CaseOptimizer::PSgd { .. }
        )
    }
}

/// What a runner checks with a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Steps with finite gradients: the weights against the float64 reference
    /// ([`Case::reference`], or the bare base optimizer plus the float64 decay where the base
    /// has no reference), and the fused step against the tensor ops where both run.
    Trajectory,
    /// After up to two normal steps a gradient holding a NaN and an inf: the step is refused
    /// (policy [`NonFinitePolicy::Error`], checked every step), the parameter named with the
    /// exact count, the weights handed back unchanged, and the next finite step taken normally.
    RefuseNonFinite,
    /// The deferred check (`check_every > 1`): a finite step, one whose gradient holds a NaN,
    /// then either a finite step that fills the window (`settle: false`, `check_every` 3) or
    /// [`PWdOptimizer::settle`] (`settle: true`). The whole window is refused, the weights from
    /// before it come back bit for bit and the step count is reset.
    RefuseWindow {
        /// Read the window early with `settle` instead of filling it.
        settle: bool,
    },
}

/// One optimizer case: everything but the data.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// Unique, printable name.
    pub name: String,
    /// The optimizer.
    pub optimizer: CaseOptimizer,
    /// Exponent `p(t)`.
    pub p: Schedule,
    /// Strength `λ(t)`.
    pub lambda: Schedule,
    /// Elastic-net L2 strength (0: off).
    pub lambda2: f64,
    /// Relaxation rate of the non-adiabatic `s` (1: adiabatic).
    pub s_rate: f64,
    /// Which parameters are decayed.
    pub selection: ParamSelection,
    /// Non-finite gradient policy.
    pub policy: NonFinitePolicy,
    /// Steps per read of the non-finite check.
    pub check_every: usize,
    /// Learning rate of the first steps.
    pub lr: f64,
    /// `(k, lr)`: from step `k` (0-based) on, this learning rate instead.
    pub lr_change: Option<(usize, f64)>,
    /// What is checked.
    pub probe: Probe,
}

impl Case {
    /// A trajectory case with constant `p` and `λ`, learning rate 1e-2 and every other setting
    /// at its default (no λ2, adiabatic `s`, all parameters, policy `Error` checked every step).
    pub fn new(name: impl Into<String>, optimizer: CaseOptimizer, p: f64, lambda: f64) -> Self {
        Self {
            name: name.into(),
            optimizer,
            p: Schedule::constant(p),
            lambda: Schedule::constant(lambda),
            lambda2: 0.0,
            s_rate: 1.0,
            selection: ParamSelection::all(),
            policy: NonFinitePolicy::Error,
            check_every: 1,
            lr: 1e-2,
            lr_change: None,
            probe: Probe::Trajectory,
        }
    }

    /// Set the `p` schedule.
    pub fn with_p_schedule(mut self, p: Schedule) -> Self {
        self.p = p;
        self
    }

    /// Set the `λ` schedule.
    pub fn with_lambda_schedule(mut self, lambda: Schedule) -> Self {
        self.lambda = lambda;
        self
    }

    /// Set the elastic-net `λ2`.
    pub fn with_lambda2(mut self, lambda2: f64) -> Self {
        self.lambda2 = lambda2;
        self
    }

    /// Set the relaxation rate of `s`.
    pub fn with_s_rate(mut self, s_rate: f64) -> Self {
        self.s_rate = s_rate;
        self
    }

    /// Set the decay selection.
    pub fn with_selection(mut self, selection: ParamSelection) -> Self {
        self.selection = selection;
        self
    }

    /// Set the non-finite policy.
    pub fn with_policy(mut self, policy: NonFinitePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Set the steps per read of the non-finite check.
    pub fn with_check_every(mut self, steps: usize) -> Self {
        self.check_every = steps;
        self
    }

    /// Set the learning rate (of every step, until a change).
    pub fn with_lr(mut self, lr: f64) -> Self {
        self.lr = lr;
        self
    }

    /// From step `k` (0-based) on, learning rate `lr`.
    pub fn with_lr_change(mut self, k: usize, lr: f64) -> Self {
        self.lr_change = Some((k, lr));
        self
    }

    /// Set what is checked.
    pub fn with_probe(mut self, probe: Probe) -> Self {
        self.probe = probe;
        self
    }

    /// The learning rate of step `k` (0-based).
    pub fn lr(&self, k: usize) -> f64 {
        match self.lr_change {
            Some((from, lr)) if k >= from => lr,
            _ => self.lr,
        }
    }

    /// The library's decay settings of this case.
    pub fn decay_config(&self) -> DecayConfig {
        DecayConfig {
            p: self.p.clone(),
            lambda: self.lambda.clone(),
            lambda2: self.lambda2,
            s_rate: self.s_rate,
            selection: self.selection.clone(),
            non_finite: self.policy,
            check_every: self.check_every,
        }
    }

    /// The [`PAdamConfig`] of a PAdam case (fused step allowed, the default).
    pub fn padam_config(&self) -> Option<PAdamConfig> {
        match self.optimizer {
            CaseOptimizer::PAdam {
                beta_1,
                beta_2,
                epsilon,
            } => Some(
                PAdamConfig::new()
                    .with_beta_1(beta_1)
                    .with_beta_2(beta_2)
                    .with_epsilon(epsilon)
                    .with_decay(self.decay_config()),
            ),
            _ => None,
        }
    }

    /// The [`PSgdConfig`] of a pSGD case.
    pub fn psgd_config(&self) -> Option<PSgdConfig> {
        match self.optimizer {
            CaseOptimizer::PSgd {
                momentum,
                dampening,
                nesterov,
            } => Some(
                PSgdConfig::new()
                    .with_momentum(momentum)
                    .with_dampening(dampening)
                    .with_nesterov(nesterov)
                    .with_decay(self.decay_config()),
            ),
            _ => None,
        }
    }

    /// The [`PWdConfig`] of this case's decay settings (what wraps the base optimizer of a
    /// `PWd*` case).
    pub fn pwd_config(&self) -> PWdConfig {
        PWdConfig::new().with_decay(self.decay_config())
    }

    /// True when PAdam's fused step takes this case on a backend that has it: PAdam,
    /// adiabatic `s` and a policy other than [`NonFinitePolicy::SkipTensor`].
    pub fn fused_expected(&self) -> bool {
        matches!(self.optimizer, CaseOptimizer::PAdam { .. })
            && self.s_rate == 1.0
            && self.policy != NonFinitePolicy::SkipTensor
    }

    /// True when the decay after the base step runs fused on a backend that has it
    /// ([`crate::fused::pwd_decay`]): adiabatic `s`. (A PAdam case the fused step takes does its
    /// decay inside that step; the optimizer still reports the capability.)
    pub fn fused_decay_expected(&self) -> bool {
        self.s_rate == 1.0
    }

    /// Whether the parameter at `path` with this rank is decayed in this case.
    pub fn is_decayed(&self, path: &str, rank: usize) -> bool {
        self.selection.is_decayed(path, rank)
    }

    /// The float64 decay settings of step `t` (0-based).
    pub fn decay(&self, t: usize) -> Decay {
        Decay {
            p: self.p.value(t),
            lambda: self.lambda.value(t),
            lambda2: self.lambda2,
            s_rate: (self.s_rate < 1.0).then_some(self.s_rate),
        }
    }

    /// The float64 trajectory of a parameter from `w0` through `grads` (step `k` at
    /// [`Case::lr`]`(k)`): the weights after each step. `decayed = false` runs the base
    /// optimizer alone, as for a parameter outside the selection. `None` where the base
    /// optimizer has no float64 reference ([`CaseOptimizer::has_reference`]).
    pub fn reference(
        &self,
        w0: &[f64],
        grads: &[Vec<f64>],
        decayed: bool,
    ) -> Option<Vec<Vec<f64>>> {
        let n = w0.len();
        let mut w = w0.to_vec();
        let mut out = Vec::with_capacity(grads.len());
        match self.optimizer {
            CaseOptimizer::PAdam {
                beta_1,
                beta_2,
                epsilon,
            } => {
                let a = AdamParams {
                    beta1: beta_1,
                    beta2: beta_2,
                    eps: epsilon,
                };
                let mut st = AdamState::new(n);
                for (t, g) in grads.iter().enumerate() {
                    if decayed {
                        reference::padam_step(&mut w, g, &mut st, self.lr(t), &a, &self.decay(t));
                    } else {
                        reference::adam_step(&mut w, g, &mut st, self.lr(t), &a);
                    }
                    out.push(w.clone());
                }
            }
            CaseOptimizer::PSgd {
                momentum,
                dampening,
                nesterov,
            } => {
                let sp = SgdParams {
                    momentum,
                    dampening,
                    nesterov,
                };
                let mut st = SgdState::new(n);
                for (t, g) in grads.iter().enumerate() {
                    if decayed {
                        reference::psgd_step(&mut w, g, &mut st, self.lr(t), &sp, &self.decay(t));
                    } else {
                        reference::sgd_step(&mut w, g, &mut st, self.lr(t), &sp);
                    }
                    out.push(w.clone());
                }
            }
            CaseOptimizer::PWdRmsProp | CaseOptimizer::PWdAdaGrad => return None,
        }
        Some(out)
    }

    /// This case's optimizer for module `M` on backend `B`. `fused = false` keeps every step
    /// on the tensor-op path; otherwise the fused step (PAdam) and the fused decay (every
    /// optimizer) run where the backend has them and the case allows it
    /// ([`Case::fused_expected`], [`Case::fused_decay_expected`]).
    pub fn build<B, M>(&self, fused: bool) -> Result<Box<dyn Stepper<M, B>>, ConfigError>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B> + 'static,
    {
        self.build_with::<B, M>(fused, true)
    }

    /// [`Case::build`] with the fused step held to one kernel per tensor where the backend has
    /// the multi-tensor kernel (`PAdamConfig::with_multi_tensor(false)`): the oracle of the
    /// multi-tensor kernel.
    pub fn build_per_tensor<B, M>(&self) -> Result<Box<dyn Stepper<M, B>>, ConfigError>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B> + 'static,
    {
        self.build_with::<B, M>(true, false)
    }

    fn build_with<B, M>(
        &self,
        fused: bool,
        multi_tensor: bool,
    ) -> Result<Box<dyn Stepper<M, B>>, ConfigError>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B> + 'static,
    {
        Ok(match self.optimizer {
            CaseOptimizer::PAdam { .. } => Box::new(
                self.padam_config()
                    .expect("a PAdam case")
                    .with_fused_kernel(fused)
                    .with_multi_tensor(multi_tensor)
                    .init::<B, M>()?,
            ),
            CaseOptimizer::PSgd { .. } => Box::new(
                self.psgd_config()
                    .expect("a pSGD case")
                    .with_fused_kernel(fused)
                    .init::<B, M>()?,
            ),
            CaseOptimizer::PWdRmsProp => Box::new(
                self.pwd_config()
                    .with_fused_kernel(fused)
                    .init_with::<B, M, _>(RmsPropConfig::new().build())?,
            ),
            CaseOptimizer::PWdAdaGrad => Box::new(
                self.pwd_config()
                    .with_fused_kernel(fused)
                    .init_with::<B, M, _>(AdaGradConfig::new().build())?,
            ),
        })
    }

    /// The case's base optimizer alone, without any decay, in burn's own `OptimizerAdaptor`:
    /// the `w_hat` that the pWD step of a [`Case::build`] optimizer divides.
    pub fn build_base<B, M>(&self) -> Box<dyn Stepper<M, B>>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B> + 'static,
    {
        fn bare<B, M, O>(base: O) -> Box<dyn Stepper<M, B>>
        where
            B: AutodiffBackend,
            M: AutodiffModule<B> + 'static,
            O: SimpleOptimizer<B::InnerBackend> + 'static,
        {
            Box::new(Bare {
                optim: OptimizerAdaptor::<O, M, B>::from(base),
                steps: 0,
            })
        }
        match self.optimizer {
            CaseOptimizer::PAdam { .. } => {
                bare::<B, M, _>(self.padam_config().expect("a PAdam case").base())
            }
            CaseOptimizer::PSgd { .. } => bare::<B, M, _>(
                self.psgd_config()
                    .expect("a pSGD case")
                    .base::<B::InnerBackend>(),
            ),
            CaseOptimizer::PWdRmsProp => bare::<B, M, _>(RmsPropConfig::new().build()),
            CaseOptimizer::PWdAdaGrad => bare::<B, M, _>(AdaGradConfig::new().build()),
        }
    }
}

/// The step interface every runner drives a case's optimizer through, whatever its base.
pub trait Stepper<M, B> {
    /// One step ([`PWdOptimizer::try_step`]).
    fn try_step(
        &mut self,
        lr: LearningRate,
        module: M,
        grads: GradientsParams,
    ) -> Result<M, StepError<M>>;
    /// Read a deferred non-finite check now ([`PWdOptimizer::settle`]).
    fn settle(&mut self, module: M) -> Result<M, StepError<M>>;
    /// True when steps run the fused kernel ([`PWdOptimizer::uses_fused_kernel`]).
    fn uses_fused_kernel(&self) -> bool;
    /// True when the decay after a tensor-op base step runs fused
    /// ([`PWdOptimizer::uses_fused_decay`]).
    fn uses_fused_decay(&self) -> bool {
        false
    }
    /// True when they run it as the multi-tensor kernel
    /// ([`PWdOptimizer::uses_multi_tensor_kernel`]).
    fn uses_multi_tensor_kernel(&self) -> bool {
        false
    }
    /// Steps taken ([`PWdOptimizer::steps`]).
    fn steps(&self) -> usize;
}

impl<O, M, B> Stepper<M, B> for PWdOptimizer<O, M, B>
where
    O: SimpleOptimizer<B::InnerBackend>,
    M: AutodiffModule<B>,
    B: AutodiffBackend,
{
    fn try_step(
        &mut self,
        lr: LearningRate,
        module: M,
        grads: GradientsParams,
    ) -> Result<M, StepError<M>> {
        PWdOptimizer::try_step(self, lr, module, grads)
    }

    fn settle(&mut self, module: M) -> Result<M, StepError<M>> {
        PWdOptimizer::settle(self, module)
    }

    fn uses_fused_kernel(&self) -> bool {
        PWdOptimizer::uses_fused_kernel(self)
    }

    fn uses_multi_tensor_kernel(&self) -> bool {
        PWdOptimizer::uses_multi_tensor_kernel(self)
    }

    fn uses_fused_decay(&self) -> bool {
        PWdOptimizer::uses_fused_decay(self)
    }

    fn steps(&self) -> usize {
        PWdOptimizer::steps(self)
    }
}

/// A bare burn optimizer (no decay, no check) behind [`Stepper`].
struct Bare<O, M, B>
where
    O: SimpleOptimizer<B::InnerBackend>,
    M: AutodiffModule<B>,
    B: AutodiffBackend,
{
    optim: OptimizerAdaptor<O, M, B>,
    steps: usize,
}

impl<O, M, B> Stepper<M, B> for Bare<O, M, B>
where
    O: SimpleOptimizer<B::InnerBackend>,
    M: AutodiffModule<B>,
    B: AutodiffBackend,
{
    fn try_step(
        &mut self,
        lr: LearningRate,
        module: M,
        grads: GradientsParams,
    ) -> Result<M, StepError<M>> {
        self.steps += 1;
        Ok(self.optim.step(lr, module, grads))
    }

    fn settle(&mut self, module: M) -> Result<M, StepError<M>> {
        Ok(module)
    }

    fn uses_fused_kernel(&self) -> bool {
        false
    }

    fn steps(&self) -> usize {
        self.steps
    }
}

/// Every optimizer case, in a fixed order with unique names.
///
/// | group | cases |
/// | --- | --- |
/// | PAdam and pSGD (Nesterov momentum 0.9) over `p` | `(p, λ)` = (0.5, 1e-2), (0.8, 1e-3), (1, 1e-2), (1.5, 1e-1), (2, 1e-2), (3, 1e-2): pWD for `p < 1`, `1 <= p < 2`, the uniform factor at `p = 2`, `p > 2` |
/// | PAdam extensions (p 0.8, λ 1e-2) | elastic net with non-adiabatic `s`; elastic net; decay on matrices only; `p` annealed 2 → 0.6; λ ramped 0 → 0.5 |
/// | non-finite policy (PAdam p 0.8, λ 1e-2) | refusal of a NaN/inf gradient; refusal of a deferred window (filled, and read by `settle`); trajectories with `check_every` 3, `Unchecked` and `SkipTensor` |
/// | pSGD variants (p 0.8, λ 1e-2) | no momentum; momentum 0.9 without Nesterov; momentum with elastic net λ2 0.3 at λ 0.5 and the learning-rate change below |
/// | pWD around other bases (p 0.7, λ 1e-2) | RmsProp, AdaGrad; RmsProp at p 0.5 on matrices only |
/// | strong decay with a learning-rate change (λ 0.5, lr 1e-2 then 3e-3 from step 3) | PAdam at p 0.5, 0.8, 1, 1.5, 3 and 2; λ = 0 (plain Adam); elastic net λ2 0.3; matrices only |
pub fn cases() -> Vec<Case> {
    let padam = CaseOptimizer::PADAM;
    let nesterov = CaseOptimizer::psgd(0.9, true);
    let mut out = Vec::new();
    for (p, lambda) in [
        (0.5, 1e-2),
        (0.8, 1e-3),
        (1.0, 1e-2),
        (1.5, 1e-1),
        (2.0, 1e-2),
        (3.0, 1e-2),
    ] {
        out.push(Case::new(
            format!("padam p={p} lambda={lambda}"),
            padam,
            p,
            lambda,
        ));
        out.push(Case::new(
            format!("psgd nesterov p={p} lambda={lambda}"),
            nesterov,
            p,
            lambda,
        ));
    }
    out.extend([
        Case::new("padam elastic-net + non-adiabatic s", padam, 0.8, 1e-2)
            .with_lambda2(0.5)
            .with_s_rate(0.3),
        Case::new("padam elastic-net", padam, 0.8, 1e-2).with_lambda2(0.5),
        Case::new("padam matrices only", padam, 0.8, 1e-2)
            .with_selection(ParamSelection::matrices_only()),
        Case::new("padam p schedule 2 -> 0.6", padam, 2.0, 1e-2)
            .with_p_schedule(Schedule::p_anneal(0.6, 3)),
        Case::new("padam refuses a NaN/inf gradient", padam, 0.8, 1e-2)
            .with_probe(Probe::RefuseNonFinite),
        Case::new(
            "padam refuses a window with a NaN gradient",
            padam,
            0.8,
            1e-2,
        )
        .with_check_every(3)
        .with_probe(Probe::RefuseWindow { settle: false }),
        Case::new("padam refuses an open window at settle", padam, 0.8, 1e-2)
            .with_check_every(10)
            .with_probe(Probe::RefuseWindow { settle: true }),
        Case::new("pwd(rmsprop)", CaseOptimizer::PWdRmsProp, 0.7, 1e-2),
        Case::new("pwd(adagrad)", CaseOptimizer::PWdAdaGrad, 0.7, 1e-2),
        Case::new("padam lambda schedule 0 -> 0.5", padam, 0.8, 0.0).with_lambda_schedule(
            Schedule::Linear {
                from: 0.0,
                to: 0.5,
                steps: 4,
            },
        ),
        Case::new("padam check_every 3", padam, 0.8, 1e-2).with_check_every(3),
        Case::new("padam unchecked", padam, 0.8, 1e-2).with_policy(NonFinitePolicy::Unchecked),
        Case::new("padam skip_tensor", padam, 0.8, 1e-2).with_policy(NonFinitePolicy::SkipTensor),
        Case::new(
            "psgd p=0.8 lambda=0.01",
            CaseOptimizer::psgd(0.0, false),
            0.8,
            1e-2,
        ),
        Case::new(
            "psgd momentum p=0.8 lambda=0.01",
            CaseOptimizer::psgd(0.9, false),
            0.8,
            1e-2,
        ),
    ]);
    let strong = |name: String, p: f64, lambda: f64| {
        Case::new(name, padam, p, lambda).with_lr_change(3, 3e-3)
    };
    for p in [0.5, 0.8, 1.0, 1.5, 3.0, 2.0] {
        out.push(strong(format!("padam p={p} lambda=0.5, lr drop"), p, 0.5));
    }
    out.extend([
        strong("padam p=0.8 lambda=0, lr drop".into(), 0.8, 0.0),
        strong("padam elastic-net lambda2=0.3, lr drop".into(), 0.8, 0.5).with_lambda2(0.3),
        strong("padam matrices only, lr drop".into(), 0.8, 0.5)
            .with_selection(ParamSelection::matrices_only()),
        // The fused decay after a base other than Adam, in every setting it reads.
        Case::new(
            "psgd momentum elastic-net lambda=0.5, lr drop",
            CaseOptimizer::psgd(0.9, false),
            0.8,
            0.5,
        )
        .with_lambda2(0.3)
        .with_lr_change(3, 3e-3),
        Case::new(
            "pwd(rmsprop) matrices only",
            CaseOptimizer::PWdRmsProp,
            0.5,
            1e-2,
        )
        .with_selection(ParamSelection::matrices_only()),
    ]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_configs_valid() {
        let cs = cases();
        let mut names: Vec<&str> = cs.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), cs.len());
        for c in &cs {
            c.decay_config().validate("case").unwrap();
            if let Some(config) = c.padam_config() {
                config.validate().unwrap();
            }
            if let Some(config) = c.psgd_config() {
                config.validate().unwrap();
            }
        }
    }

    #[test]
    fn learning_rate_changes_at_its_step() {
        let c = Case::new("c", CaseOptimizer::PADAM, 1.0, 0.1).with_lr_change(3, 3e-3);
        assert_eq!(
            (0..5).map(|k| c.lr(k)).collect::<Vec<_>>(),
            [1e-2, 1e-2, 1e-2, 3e-3, 3e-3]
        );
    }
}
