//! The module walk of a fused step: each parameter through the fused kernel, or through the
//! tensor-op path when the kernel cannot take it (not f32, on another device, a coefficient
//! lost in f32), with the non-finite flags gathered for one read at the end.
//!
//! With the multi-tensor kernel the walk only gathers each kernel parameter's inputs (its
//! weight, gradient and moments leave the module and the state map, so the kernel may write
//! them in place, and the gradient stands in for the weight meanwhile); one operation then
//! steps them all, and a second walk ([`Placer`]) puts the new weights and states in.

use burn::module::{ModuleMapper, Param, ParamId};
use burn::optim::{GradientsParams, LearningRate};
use hashbrown::HashSet;

use crate::paths::PathStack;
use burn::optim::record::AdaptorRecord;
use burn::optim::{AdamState, AdaptiveMomentumState, SimpleOptimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, Tensor, TensorPrimitive};

use super::check::{count_float_params, name_params, read_all};
use super::tensor_path::{into_param_tensor, StepMapper};
use super::PWdOptimizer;
use crate::error::StepError;
use crate::fused::{self, downcast, AdamHyper, FusedInputs, MultiInput, MultiOutput, StepScalars};
use crate::pwd::{PWd, PWdState};

type Inner<B> = <B as AutodiffBackend>::InnerBackend;
type Primitive<B> = burn::tensor::ops::FloatTensor<Inner<B>>;

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
    /// Whether kernel parameters are gathered for one multi-tensor launch after the walk
    /// ([`FusedMapper::launch`], then [`Placer`]) instead of stepped one by one.
    pub multi: bool,
    /// The gathered parameters' kernel inputs, in module order.
    pub gathered: Vec<MultiInput<Primitive<B>>>,
    /// Their outputs, once launched.
    pub outputs: Vec<Option<MultiOutput<Primitive<B>>>>,
    /// By position in the walk: the gathered parameters.
    pub pending: Vec<Option<Pending>>,
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

    /// Whether a kernel tensor on `device` can use the flag vector (created there at the first
    /// kernel parameter).
    fn flags_on(&mut self, device: &burn::tensor::Device<Inner<B>>) -> bool {
        match &self.flags {
            Some(f) => &f.device() == device,
            None => {
                self.flags = Some(Tensor::zeros([self.tensors], device));
                true
            }
        }
    }

    /// Everything one parameter's kernel step needs, its state taken out of the map; `Err`
    /// hands the inputs back for the tensor path (its state then stays where it is).
    #[allow(clippy::type_complexity)]
    fn prepare<const D: usize>(
        &mut self,
        id: ParamId,
        w: Tensor<Inner<B>, D>,
        grad: Tensor<Inner<B>, D>,
    ) -> Result<Prepared<B, D>, (Tensor<Inner<B>, D>, Tensor<Inner<B>, D>)> {
        if w.dtype() != DType::F32 || grad.dtype() != DType::F32 {
            return Err((w, grad));
        }
        let _prepare = tracing::trace_span!("fused.prepare").entered();
        // The step counts of the stored state, read from a copy that shares its buffers and is
        // dropped here, before the step.
        let (adam_time, step) = {
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
        let decay = decayed.then(|| self.tensor_path.optim.decay().at(step, lr));
        let time = adam_time.unwrap_or(0);
        let Some(scalars) = StepScalars::new(&self.hyper, time + 1, lr, decay.as_ref()) else {
            return Err((w, grad));
        };
        let device = grad.device();
        if !self.flags_on(&device) {
            return Err((w, grad));
        }
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
        Ok(Prepared {
            w,
            grad,
            m,
            v,
            scalars,
            time,
            step,
        })
    }

    /// Store a stepped parameter's new Adam + pWD state (`time`, `step`: the counts before).
    fn record<const D: usize>(
        &mut self,
        id: ParamId,
        time: usize,
        step: usize,
        m: Tensor<Inner<B>, D>,
        v: Tensor<Inner<B>, D>,
    ) {
        let _record = tracing::trace_span!("fused.record").entered();
        let momentum = AdaptiveMomentumState::new(time + 1, m, v);
        let base = downcast::<AdamState<Inner<B>, D>, O::State<D>>(AdamState { momentum })
            .ok()
            .expect("checked: the base state is Adam's");
        let state = PWdState {
            base: Some(base),
            step: step + 1,
            s: None,
        };
        self.tensor_path
            .states
            .insert(id, AdaptorRecord::<PWd<O>, B>::from_state::<D>(state));
    }

    /// Step one parameter through the per-tensor kernel; `Err` hands the inputs back for the
    /// tensor path.
    #[allow(clippy::type_complexity)]
    fn try_kernel<const D: usize>(
        &mut self,
        id: ParamId,
        w: Tensor<Inner<B>, D>,
        grad: Tensor<Inner<B>, D>,
    ) -> Result<Tensor<Inner<B>, D>, (Tensor<Inner<B>, D>, Tensor<Inner<B>, D>)> {
        let p = self.prepare::<D>(id, w, grad)?;
        let flags = self.flags.take().expect("prepare made the flags");
        let inputs = FusedInputs {
            weight: p.w,
            grad: p.grad,
            moment_1: p.m,
            moment_2: p.v,
            flags,
        };
        let out = fused::adam_pwd_step(inputs, self.index, self.check, &p.scalars)
            .expect("checked: the backend has the fused kernel");
        self.flags = Some(out.flags);
        self.record::<D>(id, p.time, p.step, out.moment_1, out.moment_2);
        Ok(out.weight)
    }

    /// Gather one parameter for the multi-tensor launch (`Ok`: a stand-in value for the module
    /// until [`Placer`] puts the new weight in), or hand the inputs back for the tensor path.
    #[allow(clippy::type_complexity)]
    fn gather<const D: usize>(
        &mut self,
        id: ParamId,
        w: Tensor<Inner<B>, D>,
        grad: Tensor<Inner<B>, D>,
        require_grad: bool,
    ) -> Result<Tensor<Inner<B>, D>, (Tensor<Inner<B>, D>, Tensor<Inner<B>, D>)> {
        let p = self.prepare::<D>(id, w, grad)?;
        // The stand-in shares the gradient's buffer, which the kernel only reads, so the weight
        // keeps a single reference and can be written in place.
        let stand_in = p.grad.clone();
        self.gathered.push(MultiInput {
            weight: p.w.into_primitive().tensor(),
            grad: p.grad.into_primitive().tensor(),
            moment_1: p.m.into_primitive().tensor(),
            moment_2: p.v.into_primitive().tensor(),
            flag_index: self.index,
            scalars: p.scalars,
        });
        self.pending.resize_with(self.index + 1, || None);
        self.pending[self.index] = Some(Pending {
            id,
            input: self.gathered.len() - 1,
            time: p.time,
            step: p.step,
            require_grad,
        });
        Ok(stand_in)
    }

    /// Queue the gathered parameters' steps as one multi-tensor operation (nothing when none was
    /// gathered): between the module walk and [`Placer`].
    pub fn launch(&mut self) {
        if self.gathered.is_empty() {
            return;
        }
        let flags = self
            .flags
            .take()
            .expect("made with the first gathered parameter");
        let inputs = std::mem::take(&mut self.gathered);
        let (outputs, flags) = fused::adam_pwd_steps(inputs, flags, self.check)
            .expect("checked: the backend has the multi-tensor kernel");
        self.flags = Some(flags);
        self.outputs = outputs.into_iter().map(Some).collect();
    }
}

/// One parameter ready for the kernel.
struct Prepared<B: AutodiffBackend, const D: usize> {
    w: Tensor<Inner<B>, D>,
    /// Clipped.
    grad: Tensor<Inner<B>, D>,
    m: Tensor<Inner<B>, D>,
    v: Tensor<Inner<B>, D>,
    scalars: StepScalars,
    /// Adam's step count before this step.
    time: usize,
    /// pWD's step count before this step.
    step: usize,
}

/// A parameter gathered for the multi-tensor launch, by its position in the walk.
pub(super) struct Pending {
    id: ParamId,
    /// Its entry among the launch's inputs and outputs.
    input: usize,
    time: usize,
    step: usize,
    require_grad: bool,
}

/// The second walk of a multi-tensor step (after [`FusedMapper::launch`]): the new weights in
/// place of the stand-ins, and the new states recorded, in module order.
pub(super) struct Placer<'m, 'a, B: AutodiffBackend, O: SimpleOptimizer<Inner<B>>> {
    pub mapper: &'m mut FusedMapper<'a, B, O>,
    pub index: usize,
}

impl<B: AutodiffBackend, O: SimpleOptimizer<Inner<B>>> ModuleMapper<B> for Placer<'_, '_, B, O> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let pending = self
            .mapper
            .pending
            .get_mut(self.index)
            .and_then(Option::take);
        self.index += 1;
        let Some(p) = pending else {
            return param;
        };
        let (id, _stand_in, mapper) = param.consume();
        debug_assert_eq!(id, p.id, "both walks visit the parameters in one order");
        let out = self.mapper.outputs[p.input]
            .take()
            .expect("launched, taken once");
        let tensor = |t| Tensor::<Inner<B>, D>::from_primitive(TensorPrimitive::Float(t));
        self.mapper.record::<D>(
            id,
            p.time,
            p.step,
            tensor(out.moment_1),
            tensor(out.moment_2),
        );
        let w = into_param_tensor(tensor(out.weight), p.require_grad);
        Param::from_mapped_value(id, w, mapper)
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
                let stepped = if self.multi {
                    self.gather::<D>(id, inner, grad, require_grad)
                } else {
                    self.try_kernel::<D>(id, inner, grad)
                };
                let w_new = match stepped {
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
    /// One step through the fused kernel (see [`fused`](crate::fused)), per tensor or, with
    /// `multi`, all kernel tensors in one multi-tensor operation. With `check`, the
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
        multi: bool,
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
            multi,
            gathered: Vec::new(),
            outputs: Vec::new(),
            pending: Vec::new(),
        };
        let mut module = {
            let _walk = tracing::trace_span!("step.walk").entered();
            module.map(&mut mapper)
        };
        if multi {
            mapper.launch();
            let _walk = tracing::trace_span!("step.place").entered();
            module = module.map(&mut Placer {
                mapper: &mut mapper,
                index: 0,
            });
        }
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
