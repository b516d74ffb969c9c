//! The module walk of a fused step: each parameter through the fused kernel, or through the
//! tensor-op path when the kernel cannot take it (not f32, on another device, a coefficient
//! lost in f32), with the non-finite flags gathered for one read at the end.

use burn::module::{ModuleMapper, Param, ParamId};
use burn::optim::{GradientsParams, LearningRate};
use hashbrown::HashSet;

use crate::paths::PathStack;
use burn::optim::record::AdaptorRecord;
use burn::optim::{AdamState, AdaptiveMomentumState, SimpleOptimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Tensor};

use super::check::{count_float_params, name_params, read_all};
use super::tensor_path::{into_param_tensor, StepMapper};
use super::PWdOptimizer;
use crate::error::StepError;
use crate::fused::{self, downcast, AdamHyper, FusedInputs, StepScalars};
use crate::pwd::{PWd, PWdState};

type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// A deferred exact count of one gradient's non-finite entries (only evaluated on failure).
type ExactCount<B> = Box<dyn FnOnce() -> Tensor<Inner<B>, 1>>;

pub(super) struct FusedMapper<'a, B: AutodiffBackend, O: SimpleOptimizer<Inner<B>>> {
    /// The tensor-op path, for the parameters the kernel does not take (and the walk's path).
    pub tensor_path: StepMapper<'a, B, O>,
    pub hyper: AdamHyper,
    /// Whether gradients are checked for NaN / inf.
    pub check: bool,
    /// Whether a gradient that goes through the kernel is kept (one more reference to it
    /// until the end of the step) so that a refusal can count its non-finite entries: with a
    /// per-step check only, since a deferred window reports flags and no counts.
    pub exact_counts: bool,
    /// Float parameters in the module: the length of the flag vector.
    pub tensors: usize,
    /// Position of the current parameter in module order.
    pub index: usize,
    /// One flag per parameter, created on the first parameter's device.
    pub flags: Option<Tensor<Inner<B>, 1>>,
    /// Per checked parameter: its id, flag index, and (tensor path) the sum of its gradient;
    /// kernel-path parameters only with `exact_counts`.
    pub checks: Vec<Checked<B>>,
}

pub(super) struct Checked<B: AutodiffBackend> {
    id: ParamId,
    index: usize,
    /// The tensor path's finiteness probe (a sum is finite iff every entry is), if any.
    sum: Option<Tensor<Inner<B>, 1>>,
    exact: ExactCount<B>,
}

impl<B: AutodiffBackend, O: SimpleOptimizer<Inner<B>>> FusedMapper<'_, B, O> {
    /// The parameters whose gradient held NaN or inf, with exact counts: one device read of
    /// the flags (and tensor-path sums); a second read of exact counts only when one is set.
    pub fn non_finite(self) -> Vec<(ParamId, Option<usize>)> {
        if !self.check {
            return Vec::new();
        }
        let mut probes: Vec<Tensor<Inner<B>, 1>> = self.flags.into_iter().collect();
        let with_flags = !probes.is_empty();
        let sums: Vec<_> = self.checks.iter().filter_map(|c| c.sum.clone()).collect();
        probes.extend(sums);
        let values = read_all(probes);
        let (flags, mut sums) = if with_flags {
            let (f, s) = values.split_at(self.tensors);
            (f, s.iter().copied())
        } else {
            (&[][..], values.iter().copied())
        };
        let mut bad = Vec::new();
        for c in self.checks {
            let flagged = match c.sum {
                Some(_) => !sums.next().is_some_and(f64::is_finite),
                None => flags.get(c.index).is_some_and(|f| *f != 0.0),
            };
            if flagged {
                bad.push((c.id, c.exact));
            }
        }
        if bad.is_empty() {
            return Vec::new();
        }
        let (ids, exact): (Vec<_>, Vec<_>) = bad.into_iter().unzip();
        let counts = read_all(exact.into_iter().map(|f| f()).collect());
        ids.into_iter()
            .zip(counts)
            // A sum that overflowed f32 with finite entries counts 0 here: not an error.
            .filter(|(_, n)| *n > 0.0)
            .map(|(id, n)| (id, Some(n as usize)))
            .collect()
    }

    /// True when some parameter took the tensor path in this step.
    pub fn fell_back(&self) -> bool {
        self.checks.iter().any(|c| c.sum.is_some())
    }

    /// For a deferred check: `tensors` entries (module order), 1 where a parameter that took
    /// the tensor path in this step had a NaN or inf gradient (the kernel's flags hold the rest).
    pub fn tensor_path_indicators(&mut self, tensors: usize) -> Tensor<Inner<B>, 1> {
        let mut out: Option<Tensor<Inner<B>, 1>> = None;
        for c in std::mem::take(&mut self.checks) {
            let Some(sum) = c.sum else { continue };
            let device = sum.device();
            let indicator = (c.exact)().clamp_max(1.0);
            let o = out
                .take()
                .unwrap_or_else(|| Tensor::zeros([tensors], &device));
            let indicator = indicator.to_device(&o.device());
            out = Some(o.slice_assign(c.index..c.index + 1, indicator));
        }
        out.expect("called after fell_back()")
    }

    /// The flag vector, created on `device` at the first parameter.
    fn take_flags(
        &mut self,
        device: &burn::tensor::Device<Inner<B>>,
    ) -> Option<Tensor<Inner<B>, 1>> {
        match self.flags.take() {
            Some(f) if &f.device() == device => Some(f),
            Some(f) => {
                self.flags = Some(f);
                None
            }
            None => Some(Tensor::zeros([self.tensors], device)),
        }
    }

    /// Step one parameter through the kernel; `Err` hands the inputs back for the tensor path
    /// (its state then stays where it is).
    #[allow(clippy::type_complexity)]
    fn try_kernel<const D: usize>(
        &mut self,
        id: ParamId,
        w: Tensor<Inner<B>, D>,
        grad: Tensor<Inner<B>, D>,
    ) -> Result<Tensor<Inner<B>, D>, (Tensor<Inner<B>, D>, Tensor<Inner<B>, D>)> {
        if w.dtype() != DType::F32 || grad.dtype() != DType::F32 {
            return Err((w, grad));
        }
        let prepare = tracing::trace_span!("fused.prepare").entered();
        // The step counts of the stored state, read from a copy that shares its buffers and is
        // dropped here, before the step.
        let (adam_time, t) = {
            let state = (self.tensor_path.states.get(&id)).map(|r| r.clone().into_state::<D>());
            match state {
                None => (None, 0),
                Some(st) => match st.base.map(downcast::<O::State<D>, AdamState<Inner<B>, D>>) {
                    None => (None, st.step),
                    Some(Ok(adam)) if adam.momentum.max_moment_2.is_none() => {
                        (Some(adam.momentum.time), st.step)
                    }
                    Some(_) => return Err((w, grad)),
                },
            }
        };
        let decayed = self.tensor_path.is_decayed(D);
        let lr = self.tensor_path.lr;
        let decay = decayed.then(|| self.tensor_path.optim.decay().at(t, lr));
        let time = adam_time.unwrap_or(0);
        let Some(scalars) = StepScalars::new(&self.hyper, time + 1, lr, decay.as_ref()) else {
            return Err((w, grad));
        };
        let device = grad.device();
        let Some(flags) = self.take_flags(&device) else {
            return Err((w, grad));
        };
        // The step runs: take the state out of the map, so that the moments' buffers have no
        // other reference and the kernel can write them in place.
        let moments = adam_time.map(|_| {
            let record = self.tensor_path.states.remove(&id).expect("read above");
            let base = record.into_state::<D>().base.expect("checked above");
            let adam = downcast::<O::State<D>, AdamState<Inner<B>, D>>(base)
                .ok()
                .expect("checked above: the base state is Adam's");
            (adam.momentum.moment_1, adam.momentum.moment_2)
        });
        let (m, v) = match moments {
            Some((m, v)) => (m.to_device(&device), v.to_device(&device)),
            None => (w.zeros_like(), w.zeros_like()),
        };
        let grad = self.tensor_path.clip(grad);
        if self.exact_counts {
            let g = grad.clone();
            self.checks.push(Checked {
                id,
                index: self.index,
                sum: None,
                exact: exact_count::<B, D>(g),
            });
        }
        drop(prepare);
        let inputs = FusedInputs {
            weight: w,
            grad,
            moment_1: m,
            moment_2: v,
            flags,
        };
        let out = fused::adam_pwd_step(inputs, self.index, self.check, &scalars)
            .expect("checked: the backend has the fused kernel");
        let _record = tracing::trace_span!("fused.record").entered();
        self.flags = Some(out.flags);
        let momentum = AdaptiveMomentumState::new(time + 1, out.moment_1, out.moment_2);
        let base = downcast::<AdamState<Inner<B>, D>, O::State<D>>(AdamState { momentum })
            .ok()
            .expect("checked: the base state is Adam's");
        let state = PWdState {
            base: Some(base),
            step: t + 1,
            s: None,
        };
        self.tensor_path
            .states
            .insert(id, AdaptorRecord::<PWd<O>, B>::from_state::<D>(state));
        Ok(out.weight)
    }
}

impl<B: AutodiffBackend, O: SimpleOptimizer<Inner<B>>> ModuleMapper<B> for FusedMapper<'_, B, O> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.tensor_path.enter_module(name, container_type);
    }

    fn exit_module(&mut self, name: &str, container_type: &str) {
        self.tensor_path.exit_module(name, container_type);
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let tensor = match self.tensor_path.grads.remove::<Inner<B>, D>(id) {
            None => tensor,
            Some(grad) => {
                let require_grad = tensor.is_require_grad();
                let inner = tensor.inner().to_device(&grad.device());
                let w_new = match self.try_kernel::<D>(id, inner, grad) {
                    Ok(w) => w,
                    Err((inner, grad)) => {
                        if self.check {
                            let g = grad.clone();
                            self.checks.push(Checked {
                                id,
                                index: self.index,
                                sum: Some(grad.clone().sum()),
                                exact: exact_count::<B, D>(g),
                            });
                        }
                        self.tensor_path.step_tensor(id, inner, grad)
                    }
                };
                into_param_tensor(w_new, require_grad)
            }
        };
        self.index += 1;
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// The deferred exact count of `grad`'s non-finite entries.
fn exact_count<B: AutodiffBackend, const D: usize>(grad: Tensor<Inner<B>, D>) -> ExactCount<B> {
    Box::new(move || grad.is_finite().bool_not().float().sum())
}

impl<O, M, B> PWdOptimizer<O, M, B>
where
    O: SimpleOptimizer<B::InnerBackend>,
    M: burn::module::AutodiffModule<B>,
    B: AutodiffBackend,
{
    /// One step through the fused kernel (see [`fused`](crate::fused)). With `check`, the
    /// kernels set one flag per tensor, read back once after every tensor was stepped; a set
    /// flag refuses the step: the module from before the step is handed back and the states are
    /// restored, as on the tensor path. In a deferred check's window the flags stay on the
    /// device from step to step and are read when the window is full; a step where some
    /// parameter fell back to the tensor path reads them at once (its probe is per step).
    pub(super) fn fused_step(
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
