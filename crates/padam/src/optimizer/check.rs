//! The non-finite gradient check: per step (one read of every gradient's count before any
//! weight changes) or deferred over a [`CheckWindow`] of `check_every` steps (flags kept on the
//! device, one read per window), and the parameter names its errors carry.

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::record::AdaptorRecord;
use burn::optim::{GradientsParams, SimpleOptimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use hashbrown::HashMap;

use crate::error::{NonFiniteParam, StepError};
use crate::paths::{visit_with_paths, PathVisitor};
use crate::pwd::PWd;

use super::PWdOptimizer;

/// Steps whose non-finite check is still on the device (`check_every > 1`): what a refusal
/// rolls back to, and one flag per float parameter (module order) that any of the steps set.
pub(super) struct CheckWindow<O, M, B>
where
    O: SimpleOptimizer<B::InnerBackend>,
    B: AutodiffBackend,
{
    /// The module from before the window's first step.
    pub(super) module: M,
    /// The optimizer states from before it.
    pub(super) states: HashMap<ParamId, AdaptorRecord<PWd<O>, B>>,
    /// [`PWdOptimizer::steps`] before it.
    pub(super) first_step: usize,
    /// Steps taken in the window.
    pub(super) taken: usize,
    /// Parameter ids by flag index.
    pub(super) ids: Vec<ParamId>,
    /// `flags[i] != 0`: parameter `ids[i]` had a NaN or inf gradient in some step.
    pub(super) flags: Option<Tensor<B::InnerBackend, 1>>,
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
    pub(super) fn flagged(&self) -> Vec<(ParamId, Option<usize>)> {
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
    pub(super) fn mark(&mut self, indicators: Tensor<B::InnerBackend, 1>) {
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
    /// Start a check window at this step unless one is open.
    pub(super) fn open_window(&mut self, module: &M) {
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
    pub(super) fn end_window_step(&mut self, module: M) -> Result<M, StepError<M>> {
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
    pub(super) fn close_window(
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

/// Module paths and ranks of every float parameter, by id.
pub(super) struct ParamTable {
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

pub(super) fn describe_params<B: Backend, M: burn::module::Module<B>>(module: &M) -> ParamTable {
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
pub(super) fn name_params<B: Backend, M: burn::module::Module<B>>(
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
pub(super) fn param_ids<B: Backend, M: burn::module::Module<B>>(module: &M) -> Vec<ParamId> {
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
pub(super) fn non_finite_indicators<B: AutodiffBackend, M: AutodiffModule<B>>(
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
pub(super) fn non_finite_indicator<B: Backend, const D: usize>(grad: Tensor<B, D>) -> Tensor<B, 1> {
    grad.is_finite().bool_not().any().float().reshape([1])
}

/// The number of float parameters (tensors) of `module`: one flag each in a fused step.
pub(super) fn count_float_params<B: Backend, M: burn::module::Module<B>>(module: &M) -> usize {
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
pub(super) fn non_finite_counts<B: AutodiffBackend, M: AutodiffModule<B>>(
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
pub(super) fn read_all<B: Backend>(values: Vec<Tensor<B, 1>>) -> Vec<f64> {
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
