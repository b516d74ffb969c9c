//! [`PWdOptimizer`]: a burn [`Optimizer`] over a whole module, built from [`PWd`].
//!
//! It plays the role of burn's `OptimizerAdaptor` and adds what needs the parameter's module
//! path: the decay selection (`*.bias`, rank >= 2, ...) and the non-finite gradient policy that
//! names the offending parameters. Per step it does one device-to-host read (the non-finite
//! counts of all gradients, gathered into one tensor) before touching any weight, or, with
//! [`DecayConfig::check_every`](crate::DecayConfig::check_every) `k > 1`, one read per `k`
//! steps of per-parameter flags kept on the device ([`CheckWindow`]).
//!
//! Host time is marked with `trace`-level [`tracing`] spans, free when no subscriber enables
//! them: `step.walk` (the module walk, every parameter's step queued), `step.read` (the
//! non-finite read) and, on the fused path, per tensor `fused.prepare` (state and step
//! constants), `fused.queue` (the operation into burn's fusion stream), `fused.execute`
//! (run by the stream, possibly inside a later `fused.queue` or at the sync) with
//! `fused.alloc` (contiguous inputs; an output buffer only for an input still shared) and
//! `fused.launch` (the kernel launch), and `fused.record` (the new state stored). `padam bench step --host-profile` sums them.

use std::marker::PhantomData;

use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::grad_clipping::GradientClipping;
use burn::optim::record::AdaptorRecord;
use burn::optim::{
    GradientsParams, LearningRate, MultiGradientsParams, Optimizer, SimpleOptimizer,
};
use burn::record::Record;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor};
use hashbrown::{HashMap, HashSet};

use crate::config::{validate_lr, NonFinitePolicy};
use crate::error::{ConfigError, NonFiniteGradient, NonFiniteParam};
use crate::fused::{self, AdamHyper};
use crate::paths::{visit_with_paths, PathStack, PathVisitor};
use crate::wrap::PWd;

mod fused_mapper;
use fused_mapper::FusedMapper;

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
    /// The steps taken since the last read of a deferred non-finite check.
    window: Option<CheckWindow<O, M, B>>,
    module: PhantomData<M>,
}

/// Steps whose non-finite check is still on the device (`check_every > 1`): what a refusal
/// rolls back to, and one flag per float parameter (module order) that any of the steps set.
struct CheckWindow<O, M, B>
where
    O: SimpleOptimizer<B::InnerBackend>,
    B: AutodiffBackend,
{
    /// The module from before the window's first step.
    module: M,
    /// The optimizer states from before it.
    states: HashMap<ParamId, AdaptorRecord<PWd<O>, B>>,
    /// [`PWdOptimizer::steps`] before it.
    first_step: usize,
    /// Steps taken in the window.
    taken: usize,
    /// Parameter ids by flag index.
    ids: Vec<ParamId>,
    /// `flags[i] != 0`: parameter `ids[i]` had a NaN or inf gradient in some step.
    flags: Option<Tensor<B::InnerBackend, 1>>,
}

impl<O, M, B> Clone for CheckWindow<O, M, B>
where
    O: SimpleOptimizer<B::InnerBackend>,
    M: Clone,
    B: AutodiffBackend,
{
    fn clone(&self) -> Self {
        Self {
            module: self.module.clone(),
            states: self.states.clone(),
            first_step: self.first_step,
            taken: self.taken,
            ids: self.ids.clone(),
            flags: self.flags.clone(),
        }
    }
}

impl<O, M, B> CheckWindow<O, M, B>
where
    O: SimpleOptimizer<B::InnerBackend>,
    M: AutodiffModule<B>,
    B: AutodiffBackend,
{
    /// The flagged parameters, with one device read; counts are not kept across steps.
    fn flagged(&self) -> Vec<(ParamId, Option<usize>)> {
        let Some(flags) = &self.flags else {
            return Vec::new();
        };
        let values = read_all(vec![flags.clone()]);
        self.ids
            .iter()
            .zip(values)
            .filter(|(_, f)| *f != 0.0)
            .map(|(id, _)| (*id, None))
            .collect()
    }

    /// OR this step's non-finite indicators (one per parameter, module order) into the flags.
    fn mark(&mut self, indicators: Tensor<B::InnerBackend, 1>) {
        self.flags = Some(match self.flags.take() {
            None => indicators,
            Some(f) => {
                let device = f.device();
                f.max_pair(indicators.to_device(&device))
            }
        });
    }
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

    /// True when steps run the fused kernel on this backend (f32 parameters), false when they
    /// take the tensor-op path.
    pub fn uses_fused_kernel(&self) -> bool {
        self.fused_hyper().is_some()
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
        decay: &crate::config::DecayConfig,
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
            return self.fused_step(lr, module, grads, hyper, check_in_kernel);
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

    /// Start a check window at this step unless one is open.
    fn open_window(&mut self, module: &M) {
        if self.window.is_none() {
            self.window = Some(CheckWindow {
                module: module.clone(),
                states: self.states.clone(),
                first_step: self.steps,
                taken: 0,
                ids: param_ids(module),
                flags: None,
            });
        }
    }

    /// After a step of an open window: read it when it is full, else keep it open.
    fn end_window_step(&mut self, module: M) -> Result<M, StepError<M>> {
        let every = self.optim.decay().check_every;
        match self.window.as_mut() {
            None => Ok(module),
            Some(w) => {
                w.taken += 1;
                if w.taken >= every {
                    self.settle(module)
                } else {
                    Ok(module)
                }
            }
        }
    }

    /// Close the window: `Ok(module)` when `bad` is empty, else roll back to its start.
    fn close_window(
        &mut self,
        module: M,
        bad: Vec<(ParamId, Option<usize>)>,
    ) -> Result<M, StepError<M>> {
        let Some(window) = self.window.take() else {
            return Ok(module);
        };
        if bad.is_empty() {
            return Ok(module);
        }
        self.states = window.states;
        self.steps = window.first_step;
        let params = name_params(&window.module, bad);
        Err(self.refuse(window.module, window.first_step + window.taken - 1, params))
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
    fn refuse(&self, module: M, through: usize, params: Vec<NonFiniteParam>) -> StepError<M> {
        StepError {
            module,
            error: StepFailure::NonFiniteGradient(NonFiniteGradient {
                step: self.steps,
                through,
                params,
            }),
        }
    }

    /// One step through the fused kernel (see [`fused`](crate::fused)). With `check`, the
    /// kernels set one flag per tensor, read back once after every tensor was stepped; a set
    /// flag refuses the step: the module from before the step is handed back and the states are
    /// restored, as on the tensor path. In a deferred check's window the flags stay on the
    /// device from step to step and are read when the window is full; a step where some
    /// parameter fell back to the tensor path reads them at once (its probe is per step).
    fn fused_step(
        &mut self,
        lr: LearningRate,
        module: M,
        grads: GradientsParams,
        hyper: AdamHyper,
        check: bool,
    ) -> Result<M, StepError<M>> {
        let deferred = self.window.is_some();
        let before = (check && !deferred).then(|| (module.clone(), self.states.clone()));
        let flags = self.window.as_mut().and_then(|w| w.flags.take());
        let mut mapper = FusedMapper::<B, O> {
            tensor_path: StepMapper {
                optim: &self.optim,
                states: &mut self.states,
                grads,
                lr,
                clipping: self.grad_clipping.as_ref(),
                skip: &HashSet::new(),
                path: PathStack::default(),
                skipped: 0,
            },
            hyper,
            check,
            exact_counts: check && !deferred,
            tensors: count_float_params(&module),
            index: 0,
            flags,
            checks: Vec::new(),
        };
        let module = {
            let _walk = tracing::trace_span!("step.walk").entered();
            module.map(&mut mapper)
        };
        if deferred {
            let fell_back = mapper.fell_back();
            let flags = mapper.flags.take();
            let window = self.window.as_mut().expect("deferred: a window is open");
            window.flags = flags;
            if fell_back {
                window.mark(mapper.tensor_path_indicators(window.ids.len()));
            }
            self.steps += 1;
            return self.end_window_step(module);
        }
        let bad = if check {
            let _read = tracing::trace_span!("step.read").entered();
            mapper.non_finite()
        } else {
            Vec::new()
        };
        if let Some((module_before, states_before)) = before {
            if !bad.is_empty() {
                self.states = states_before;
                let params = name_params(&module_before, bad);
                return Err(self.refuse(module_before, self.steps, params));
            }
        }
        self.steps += 1;
        Ok(module)
    }
}

/// Why a step was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StepFailure {
    /// Some gradients held NaN or inf ([`NonFinitePolicy::Error`]).
    #[error(transparent)]
    NonFiniteGradient(#[from] NonFiniteGradient),
    /// The learning rate was negative, NaN or infinite.
    #[error(transparent)]
    InvalidLearningRate(#[from] ConfigError),
}

/// A refused step: the reason, and the module handed back unchanged.
pub struct StepError<M> {
    /// The module as it was before the step.
    pub module: M,
    /// Why the step was refused.
    pub error: StepFailure,
}

impl<M> std::fmt::Debug for StepError<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.error, f)
    }
}

impl<M> std::fmt::Display for StepError<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.error, f)
    }
}

impl<M> std::error::Error for StepError<M> {}

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

/// Module paths and ranks of every float parameter, by id.
struct ParamTable {
    paths: HashMap<ParamId, String>,
}

impl ParamTable {
    fn path(&self, id: ParamId) -> String {
        self.paths
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("<param {id}>"))
    }
}

fn describe_params<B: Backend, M: burn::module::Module<B>>(module: &M) -> ParamTable {
    struct Paths {
        paths: HashMap<ParamId, String>,
    }
    impl<B: Backend> PathVisitor<B> for Paths {
        fn visit<const D: usize>(&mut self, path: &str, param: &Param<Tensor<B, D>>) {
            self.paths.insert(param.id, path.to_string());
        }
    }
    let mut v = Paths {
        paths: HashMap::new(),
    };
    visit_with_paths(module, &mut v);
    ParamTable { paths: v.paths }
}

/// The offending parameters with their module paths.
fn name_params<B: Backend, M: burn::module::Module<B>>(
    module: &M,
    bad: Vec<(ParamId, Option<usize>)>,
) -> Vec<NonFiniteParam> {
    let paths = describe_params(module);
    bad.into_iter()
        .map(|(id, count)| NonFiniteParam {
            path: paths.path(id),
            count,
        })
        .collect()
}

/// The ids of `module`'s float parameters in module order: the flag indices of a check window.
fn param_ids<B: Backend, M: burn::module::Module<B>>(module: &M) -> Vec<ParamId> {
    struct Ids(Vec<ParamId>);
    impl<B: Backend> ModuleVisitor<B> for Ids {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(param.id);
        }
    }
    let mut ids = Ids(Vec::new());
    module.visit(&mut ids);
    ids.0
}

/// One entry per float parameter of `module` (module order): 1 when its gradient holds NaN or
/// inf, else 0 (also without a gradient). Nothing is read back.
fn non_finite_indicators<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> Tensor<B::InnerBackend, 1> {
    struct Indicators<'a, B: AutodiffBackend> {
        grads: &'a GradientsParams,
        device: Option<burn::tensor::Device<B::InnerBackend>>,
        parts: Vec<Option<Tensor<B::InnerBackend, 1>>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Indicators<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let part = self.grads.get::<B::InnerBackend, D>(param.id).map(|g| {
                let device = self.device.get_or_insert_with(|| g.device()).clone();
                non_finite_indicator(g).to_device(&device)
            });
            self.parts.push(part);
        }
    }
    let mut v = Indicators::<B> {
        grads,
        device: None,
        parts: Vec::new(),
    };
    module.visit(&mut v);
    let device = v.device.unwrap_or_default();
    let parts = (v.parts.into_iter())
        .map(|p| p.unwrap_or_else(|| Tensor::zeros([1], &device)))
        .collect();
    Tensor::cat(parts, 0)
}

/// `[1]` if `grad` holds NaN or inf, else `[0]`, on `grad`'s device.
fn non_finite_indicator<B: Backend, const D: usize>(grad: Tensor<B, D>) -> Tensor<B, 1> {
    grad.is_finite().bool_not().any().float().reshape([1])
}

/// The number of float parameters (tensors) of `module`: one flag each in a fused step.
fn count_float_params<B: Backend, M: burn::module::Module<B>>(module: &M) -> usize {
    struct Count(usize);
    impl<B: Backend> ModuleVisitor<B> for Count {
        fn visit_float<const D: usize>(&mut self, _param: &Param<Tensor<B, D>>) {
            self.0 += 1;
        }
    }
    let mut c = Count(0);
    module.visit(&mut c);
    c.0
}

/// Find the parameters whose gradient holds NaN or inf, with their counts.
///
/// Fast path: the sum of every gradient, added into one scalar on the device and read back
/// once. NaN and inf propagate through sums, so a finite total proves every entry finite.
/// A non-finite total (or finite entries overflowing f32) takes the exact path: per-tensor
/// counts of non-finite entries, read back together, which also clears the overflow case.
fn non_finite_counts<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> Vec<(ParamId, Option<usize>)> {
    struct Total<'a, B: AutodiffBackend> {
        grads: &'a GradientsParams,
        total: Option<Tensor<B::InnerBackend, 1>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Total<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                let s = g.sum();
                self.total = Some(match self.total.take() {
                    None => s,
                    Some(t) => {
                        let device = t.device();
                        t.add(s.to_device(&device))
                    }
                });
            }
        }
    }
    let mut v = Total::<B> { grads, total: None };
    module.visit(&mut v);
    let Some(total) = v.total else {
        return Vec::new();
    };
    if read_all(vec![total]).iter().all(|t| t.is_finite()) {
        return Vec::new();
    }
    struct Exact<'a, B: AutodiffBackend> {
        grads: &'a GradientsParams,
        ids: Vec<ParamId>,
        counts: Vec<Tensor<B::InnerBackend, 1>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Exact<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                self.ids.push(param.id);
                self.counts.push(g.is_finite().bool_not().float().sum());
            }
        }
    }
    let mut e = Exact::<B> {
        grads,
        ids: Vec::new(),
        counts: Vec::new(),
    };
    module.visit(&mut e);
    e.ids
        .into_iter()
        .zip(read_all(e.counts))
        .filter(|(_, n)| *n > 0.0)
        .map(|(id, n)| (id, Some(n as usize)))
        .collect()
}

/// Concatenate one-element tensors and read them with a single device-to-host transfer.
fn read_all<B: Backend>(values: Vec<Tensor<B, 1>>) -> Vec<f64> {
    let Some(first) = values.first() else {
        return Vec::new();
    };
    let device = first.device();
    let values = values.into_iter().map(|t| t.to_device(&device)).collect();
    Tensor::cat(values, 0)
        .into_data()
        .convert::<f64>()
        .into_vec()
        .expect("float tensor data converts to f64")
}

struct StepMapper<'a, B: AutodiffBackend, O: SimpleOptimizer<B::InnerBackend>> {
    optim: &'a PWd<O>,
    states: &'a mut HashMap<ParamId, AdaptorRecord<PWd<O>, B>>,
    grads: GradientsParams,
    lr: LearningRate,
    clipping: Option<&'a GradientClipping>,
    skip: &'a HashSet<ParamId>,
    path: PathStack,
    skipped: usize,
}

impl<B: AutodiffBackend, O: SimpleOptimizer<B::InnerBackend>> ModuleMapper<B>
    for StepMapper<'_, B, O>
{
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<B::InnerBackend, D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        if self.skip.contains(&id) {
            self.skipped += 1;
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let require_grad = tensor.is_require_grad();
        let device = grad.device();
        let inner = tensor.inner().to_device(&device);
        let w_new = self.step_tensor(id, inner, grad);
        Param::from_mapped_value(id, into_param_tensor(w_new, require_grad), mapper)
    }
}

impl<B: AutodiffBackend, O: SimpleOptimizer<B::InnerBackend>> StepMapper<'_, B, O> {
    /// The tensor-op path for one parameter: clip, base step, decay; the state updated.
    fn step_tensor<const D: usize>(
        &mut self,
        id: ParamId,
        inner: Tensor<B::InnerBackend, D>,
        grad: Tensor<B::InnerBackend, D>,
    ) -> Tensor<B::InnerBackend, D> {
        let device = grad.device();
        let grad = self.clip(grad);
        let state = self.states.remove(&id).map(|r| {
            <PWd<O> as SimpleOptimizer<B::InnerBackend>>::to_device(r.into_state::<D>(), &device)
        });
        let decayed = self.is_decayed(D);
        let (w_new, state) = self.optim.step_tensor(self.lr, inner, grad, state, decayed);
        self.states
            .insert(id, AdaptorRecord::from_state::<D>(state));
        w_new
    }

    fn clip<const D: usize>(&self, grad: Tensor<B::InnerBackend, D>) -> Tensor<B::InnerBackend, D> {
        match self.clipping {
            Some(c) => c.clip_gradient(grad),
            None => grad,
        }
    }

    fn is_decayed(&self, rank: usize) -> bool {
        self.optim
            .decay()
            .selection
            .is_decayed(&self.path.current(), rank)
    }
}

/// The stepped inner tensor as the module's parameter value again.
fn into_param_tensor<B: AutodiffBackend, const D: usize>(
    w: Tensor<B::InnerBackend, D>,
    require_grad: bool,
) -> Tensor<B, D> {
    let tensor = Tensor::from_inner(w);
    if require_grad {
        tensor.require_grad()
    } else {
        tensor
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
