//! The tensor-op path of a step: each parameter through the base optimizer and
//! [`decay`](crate::decay) as burn tensor operations. Every backend has it; it is the fused
//! steps' oracle and their fallback.

use burn::module::{ModuleMapper, Param, ParamId};
use burn::optim::grad_clipping::GradientClipping;
use burn::optim::record::AdaptorRecord;
use burn::optim::{GradientsParams, LearningRate, SimpleOptimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use hashbrown::{HashMap, HashSet};

use crate::paths::PathStack;
use crate::pwd::PWd;

pub(super) struct StepMapper<'a, B: AutodiffBackend, O: SimpleOptimizer<B::InnerBackend>> {
    pub(super) optim: &'a PWd<O>,
    pub(super) states: &'a mut HashMap<ParamId, AdaptorRecord<PWd<O>, B>>,
    pub(super) grads: GradientsParams,
    pub(super) lr: LearningRate,
    pub(super) clipping: Option<&'a GradientClipping>,
    pub(super) skip: &'a HashSet<ParamId>,
    pub(super) path: PathStack,
    pub(super) skipped: usize,
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
    pub(super) fn step_tensor<const D: usize>(
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

    pub(super) fn clip<const D: usize>(
        &self,
        grad: Tensor<B::InnerBackend, D>,
    ) -> Tensor<B::InnerBackend, D> {
        match self.clipping {
            Some(c) => c.clip_gradient(grad),
            None => grad,
        }
    }

    pub(super) fn is_decayed(&self, rank: usize) -> bool {
        self.optim
            .decay()
            .selection
            .is_decayed(&self.path.current(), rank)
    }
}

/// The stepped inner tensor as the module's parameter value again.
pub(super) fn into_param_tensor<B: AutodiffBackend, const D: usize>(
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
