//! [`PWdOptimizer`]: a burn [`Optimizer`] over a whole module, built from [`PWd`].
//!
//! It plays the role of burn's `OptimizerAdaptor` and adds what needs the parameter's module
//! path: the decay selection (`*.bias`, rank >= 2, ...) and the non-finite gradient policy that
//! names the offending parameters. A step walks the module once, each parameter through the
//! fused kernel ([`fused_path`]) or the tensor ops ([`tensor_path`]); the non-finite check, per
//! step or deferred over a window of steps, lives in [`check`]. Host time is marked with
//! `trace`-level [`tracing`] spans (`step.*`, `fused.*`; listed in docs/ARCHITECTURE.md), free
//! when no subscriber enables them.

use std::marker::PhantomData;

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::grad_clipping::GradientClipping;
use burn::optim::record::AdaptorRecord;
use burn::optim::{
    GradientsParams, LearningRate, MultiGradientsParams, Optimizer, SimpleOptimizer,
};
use burn::record::Record;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Tensor};
use hashbrown::{HashMap, HashSet};

use crate::decay_config::{validate_lr, NonFinitePolicy};
use crate::error::{ConfigError, NonFiniteGradient, NonFiniteParam, StepError, StepFailure};
use crate::fused::{self, AdamHyper};
use crate::paths::PathStack;
use crate::pwd::PWd;

mod check;
mod fused_path;
mod tensor_path;

use check::{name_params, non_finite_counts, non_finite_indicators, CheckWindow};
use tensor_path::StepMapper;

/// Saved state of a [`PWdOptimizer`]: per-parameter states plus the step and skip counters.
#[derive(Record)]
pub struct PWdOptimizerRecord<O: SimpleOptimizer<B::InnerBackend>, B: AutodiffBackend> {
    /// Per-parameter state (base optimizer state, step count, `s`), keyed by parameter id.
    pub states: HashMap<ParamId, AdaptorRecord<PWd<O>, B>>,
    /// Optimizer steps taken (module-level).
    pub steps: usize,
    /// Tensor updates skipped for non-finite gradients.
    pub skipped: usize,
}

impl<O: SimpleOptimizer<B::InnerBackend>, B: AutodiffBackend> Clone for PWdOptimizerRecord<O, B> {
    fn clone(&self) -> Self {
        Self {
            states: self.states.clone(),
            steps: self.steps,
            skipped: self.skipped,
        }
    }
}

/// pWD around base optimizer `O` for module `M`: what `PAdamConfig::init` and friends return.
#[derive(Clone)]
pub struct PWdOptimizer<O, M, B>
where
    O: SimpleOptimizer<B::InnerBackend>,
    M: AutodiffModule<B>,
    B: AutodiffBackend,
{
    optim: PWd<O>,
    states: HashMap<ParamId, AdaptorRecord<PWd<O>, B>>,
    grad_clipping: Option<GradientClipping>,
    steps: usize,
    skipped: usize,
    fused: Option<AdamHyper>,
    /// Whether the fused step takes all tensors in one multi-tensor operation where the backend
    /// has it ([`fused::supports_multi`]).
    multi_tensor: bool,
    /// The steps taken since the last read of a deferred non-finite check.
    window: Option<CheckWindow<O, M, B>>,
    module: PhantomData<M>,
}

impl<O, M, B> PWdOptimizer<O, M, B>
where
    O: SimpleOptimizer<B::InnerBackend>,
    M: AutodiffModule<B>,
    B: AutodiffBackend,
{
    /// A fresh optimizer around an already validated [`PWd`].
    pub fn new(optim: PWd<O>) -> Self {
        Self {
            optim,
            states: HashMap::new(),
            grad_clipping: None,
            steps: 0,
            skipped: 0,
            fused: None,
            multi_tensor: true,
            window: None,
            module: PhantomData,
        }
    }

    /// Use the fused Adam + pWD kernel (module [`fused`](crate::fused)) where the backend has it.
    /// Only for a base optimizer that is burn's `Adam` with these hyper-parameters: what
    /// [`PAdamConfig::init`](crate::PAdamConfig::init) sets up.
    pub(crate) fn with_fused_adam(mut self, hyper: AdamHyper) -> Self {
        self.fused = Some(hyper);
        self
    }

    /// With `false`, the fused step launches one kernel per tensor even where the backend has
    /// the multi-tensor kernel (see [`fused`]).
    pub(crate) fn with_multi_tensor(mut self, multi_tensor: bool) -> Self {
        self.multi_tensor = multi_tensor;
        self
    }

    /// With `false`, the decay after the base optimizer always runs as tensor ops (see
    /// [`PWd::with_fused_decay`]).
    pub(crate) fn with_fused_decay(mut self, fused: bool) -> Self {
        self.optim = self.optim.with_fused_decay(fused);
        self
    }

    /// True when the decay after the base optimizer's tensor-op step runs fused on this backend
    /// (f32 parameters; [`crate::fused::pwd_decay`]): pSGD and pWD around any base on the CPU.
    pub fn uses_fused_decay(&self) -> bool {
        self.optim.uses_fused_decay::<B::InnerBackend>(DType::F32)
    }

    /// True when steps run the fused kernel on this backend (f32 parameters), false when they
    /// take the tensor-op path.
    pub fn uses_fused_kernel(&self) -> bool {
        self.fused_hyper().is_some()
    }

    /// True when steps run the multi-tensor kernel (one operation for all tensors, see
    /// [`fused::adam_pwd_steps`]); false for one kernel per tensor or the tensor-op path.
    pub fn uses_multi_tensor_kernel(&self) -> bool {
        self.uses_fused_kernel() && self.multi_tensor()
    }

    fn multi_tensor(&self) -> bool {
        self.multi_tensor && fused::supports_multi::<B::InnerBackend>(DType::F32)
    }

    /// The fused kernel's hyper-parameters when this step can use it: built for Adam, the
    /// backend has the kernel, adiabatic `s`, and a policy the kernel implements.
    fn fused_hyper(&self) -> Option<AdamHyper> {
        let decay = self.optim.decay();
        let usable = decay.non_finite != NonFinitePolicy::SkipTensor
            && !decay.is_non_adiabatic()
            && fused::supports::<B::InnerBackend>(DType::F32);
        self.fused.filter(|_| usable)
    }

    /// Validate `decay`, wrap `base`, and add gradient clipping if configured: what every
    /// optimizer config's `init` does.
    pub fn build(
        base: O,
        decay: &crate::decay_config::DecayConfig,
        clipping: Option<&burn::optim::grad_clipping::GradientClippingConfig>,
    ) -> Result<Self, ConfigError> {
        let optim = Self::new(PWd::new(base, decay.clone())?);
        Ok(match clipping {
            Some(c) => optim.with_grad_clipping(c.init()),
            None => optim,
        })
    }

    /// Clip each gradient before the base step (burn's per-tensor clipping).
    pub fn with_grad_clipping(mut self, clipping: GradientClipping) -> Self {
        self.grad_clipping = Some(clipping);
        self
    }

    /// The wrapped [`PWd`].
    pub fn pwd(&self) -> &PWd<O> {
        &self.optim
    }

    /// Replace the lambda schedule from the next step on (see [`PWd::set_lambda`]); the
    /// schedule is read at the step's own count, as at construction.
    pub fn set_lambda(&mut self, lambda: crate::Schedule) -> Result<(), ConfigError> {
        self.optim.set_lambda(lambda)
    }

    /// Optimizer steps taken so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Tensor updates skipped because their gradient was not finite
    /// ([`NonFinitePolicy::SkipTensor`]).
    pub fn skipped_updates(&self) -> usize {
        self.skipped
    }

    /// One step; with [`NonFinitePolicy::Error`] a non-finite gradient returns an error naming
    /// every offending parameter and leaves the module and the optimizer state untouched
    /// (the module is handed back inside the error).
    pub fn try_step(
        &mut self,
        lr: LearningRate,
        module: M,
        grads: GradientsParams,
    ) -> Result<M, StepError<M>> {
        if let Err(e) = validate_lr(lr) {
            return Err(StepError {
                module,
                error: StepFailure::InvalidLearningRate(e),
            });
        }
        let policy = self.optim.decay().non_finite;
        let deferred = policy == NonFinitePolicy::Error && self.optim.decay().check_every > 1;
        if deferred {
            self.open_window(&module);
        }
        let checked_now = policy != NonFinitePolicy::Unchecked && !deferred;
        let fused = self.fused_hyper();
        // The fused step on a GPU checks inside its kernel (flags read once after the step,
        // without a synchronisation before it). Where reading costs no synchronisation (the
        // CPU), the gradients are checked first, as on the tensor path: a refusal leaves
        // everything untouched, and the step needs no copy of the module to hand back.
        let check_first =
            checked_now && (fused.is_none() || fused::reads_are_free::<B::InnerBackend>());
        let bad = if check_first {
            let _read = tracing::trace_span!("step.read").entered();
            non_finite_counts::<B, M>(&module, &grads)
        } else {
            Vec::new()
        };
        if !bad.is_empty() && policy == NonFinitePolicy::Error {
            let params = name_params(&module, bad);
            return Err(self.refuse(module, self.steps, params));
        }
        if let Some(hyper) = fused {
            let check_in_kernel = policy == NonFinitePolicy::Error && !check_first;
            let multi = self.multi_tensor();
            return self.fused_step(lr, module, grads, hyper, check_in_kernel, multi);
        }
        let bad_ids: HashSet<ParamId> = bad.iter().map(|(id, _)| *id).collect();
        if let Some(window) = self.window.as_mut() {
            window.mark(non_finite_indicators::<B, M>(&module, &grads));
        }
        let mut mapper = StepMapper::<B, O> {
            optim: &self.optim,
            states: &mut self.states,
            grads,
            lr,
            clipping: self.grad_clipping.as_ref(),
            skip: &bad_ids,
            path: PathStack::default(),
            skipped: 0,
        };
        let module = {
            let _walk = tracing::trace_span!("step.walk").entered();
            module.map(&mut mapper)
        };
        self.skipped += mapper.skipped;
        self.steps += 1;
        self.end_window_step(module)
    }

    /// Read a deferred non-finite check now ([`DecayConfig::check_every`] > 1): `Ok` with
    /// `module` unchanged when no gradient since the last read was NaN or inf, else the
    /// refusal of every step since then, with the module from before them (the state is
    /// rolled back too). Call it before saving the module or [`Optimizer::to_record`], so
    /// that nothing unchecked is kept; without a pending window it reads nothing.
    ///
    /// [`DecayConfig::check_every`]: crate::DecayConfig::check_every
    pub fn settle(&mut self, module: M) -> Result<M, StepError<M>> {
        let bad = match &self.window {
            None => return Ok(module),
            Some(w) => w.flagged(),
        };
        self.close_window(module, bad)
    }
}

impl<O, M, B> PWdOptimizer<O, M, B>
where
    O: SimpleOptimizer<B::InnerBackend>,
    M: AutodiffModule<B>,
    B: AutodiffBackend,
{
    /// Steps `self.steps..=through` refused for non-finite gradients: the module from before
    /// them back, the parameters named.
    pub(super) fn refuse(
        &self,
        module: M,
        through: usize,
        params: Vec<NonFiniteParam>,
    ) -> StepError<M> {
        StepError {
            module,
            error: StepFailure::NonFiniteGradient(NonFiniteGradient {
                step: self.steps,
                through,
                params,
            }),
        }
    }
}

impl<O, M, B> Optimizer<M, B> for PWdOptimizer<O, M, B>
where
    O: SimpleOptimizer<B::InnerBackend>,
    M: AutodiffModule<B>,
    B: AutodiffBackend,
{
    type Record = PWdOptimizerRecord<O, B>;

    /// # Panics
    /// With [`NonFinitePolicy::Error`], on a non-finite gradient (the message names the
    /// parameters), and on an invalid learning rate. Use [`PWdOptimizer::try_step`] to get
    /// either as a `Result`.
    fn step(&mut self, lr: LearningRate, module: M, grads: GradientsParams) -> M {
        match self.try_step(lr, module, grads) {
            Ok(m) => m,
            Err(e) => panic!("{}", e.error),
        }
    }

    fn step_multi(&mut self, lr: LearningRate, module: M, grads: MultiGradientsParams) -> M {
        // Gather every device's gradients onto the parameter's device, then take one step.
        let mut merged = GradientsParams::new();
        let mut collector = MultiGradCollector::<B> {
            grads,
            out: &mut merged,
            _b: PhantomData,
        };
        module.visit(&mut collector);
        self.step(lr, module, merged)
    }

    fn to_record(&self) -> Self::Record {
        PWdOptimizerRecord {
            states: self.states.clone(),
            steps: self.steps,
            skipped: self.skipped,
        }
    }

    fn load_record(mut self, record: Self::Record) -> Self {
        self.window = None;
        self.states = record.states;
        self.steps = record.steps;
        self.skipped = record.skipped;
        self
    }
}

struct MultiGradCollector<'a, B: AutodiffBackend> {
    grads: MultiGradientsParams,
    out: &'a mut GradientsParams,
    _b: PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for MultiGradCollector<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some((g, _device)) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.out.register::<B::InnerBackend, D>(param.id, g);
        }
    }
}
