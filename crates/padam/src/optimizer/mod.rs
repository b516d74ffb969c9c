//! [`PWdOptimizer`]: a burn [`Optimizer`] over a whole module, built from [`PWd`].
//!
//! It plays the role of burn's `OptimizerAdaptor` and adds what needs the parameter's module
//! path: the decay selection (`*.bias`, rank >= 2, ...) and the non-finite gradient policy that
//! names the offending parameters. Per step it does one device-to-host read (the non-finite
//! counts of all gradients, gathered into one tensor) before touching any weight.

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
        if let Some(hyper) = self.fused_hyper() {
            return self.fused_step(lr, module, grads, hyper, policy == NonFinitePolicy::Error);
        }
        let bad = if policy == NonFinitePolicy::Unchecked {
            Vec::new()
        } else {
            non_finite_counts::<B, M>(&module, &grads)
        };
        let bad_ids: HashSet<ParamId> = bad.iter().map(|(id, _)| *id).collect();
        if !bad.is_empty() && policy == NonFinitePolicy::Error {
            let params = name_params(&module, bad);
            return Err(self.refuse(module, params));
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
        let module = module.map(&mut mapper);
        self.skipped += mapper.skipped;
        self.steps += 1;
        Ok(module)
    }
}

impl<O, M, B> PWdOptimizer<O, M, B>
where
    O: SimpleOptimizer<B::InnerBackend>,
    M: AutodiffModule<B>,
    B: AutodiffBackend,
{
    /// The step refused for non-finite gradients: the module back, the parameters named.
    fn refuse(&self, module: M, params: Vec<NonFiniteParam>) -> StepError<M> {
        StepError {
            module,
            error: StepFailure::NonFiniteGradient(NonFiniteGradient {
                step: self.steps,
                params,
            }),
        }
    }

    /// One step through the fused kernel (see [`fused`](crate::fused)). With `check`, the
    /// kernels set one flag per tensor, read back once after every tensor was stepped; a set
    /// flag refuses the step: the module from before the step is handed back and the states are
    /// restored, as on the tensor path.
    fn fused_step(
        &mut self,
        lr: LearningRate,
        module: M,
        grads: GradientsParams,
        hyper: AdamHyper,
        check: bool,
    ) -> Result<M, StepError<M>> {
        let before = check.then(|| (module.clone(), self.states.clone()));
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
            tensors: count_float_params(&module),
            index: 0,
            flags: None,
            checks: Vec::new(),
        };
        let module = module.map(&mut mapper);
        let bad = mapper.non_finite();
        if let Some((module_before, states_before)) = before {
            if !bad.is_empty() {
                self.states = states_before;
                let params = name_params(&module_before, bad);
                return Err(self.refuse(module_before, params));
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
    bad: Vec<(ParamId, usize)>,
) -> Vec<NonFiniteParam> {
    let paths = describe_params(module);
    bad.into_iter()
        .map(|(id, count)| NonFiniteParam {
            path: paths.path(id),
            count,
        })
        .collect()
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
) -> Vec<(ParamId, usize)> {
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
        .map(|(id, n)| (id, n as usize))
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
