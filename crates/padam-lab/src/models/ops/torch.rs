//! [`super`]'s layers as PyTorch ops inside burn's autodiff graph, for autodiff over the
//! LibTorch backend.
//!
//! Each layer is an *island*: its inputs enter PyTorch as fresh leaves (sharing their memory),
//! the op runs with PyTorch's autograd recording, and burn's graph gets one node whose backward
//! runs PyTorch's autograd engine from the output's gradient to the leaves' (`csrc/backward.cpp`:
//! tch's own `run_backward` seeds with ones, which would cost a `sum(output * grad)` per layer).
//!
//! The node keeps its inputs' and output's burn handles until its backward ran: burn-tch
//! writes in place into a tensor it believes it owns alone, and PyTorch's saved tensors
//! (the input of a convolution, the output of attention) must not change before the backward.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{c_char, c_int};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::libtorch::TchTensor;
use burn::backend::Autodiff;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, LayerNorm};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorPrimitive};

use crate::backend::Tch;

type Ad = Autodiff<Tch>;
type AdTensor = burn::tensor::ops::FloatTensor<Ad>;

/// Whether `B` is autodiff over the LibTorch backend, the one backend these ops serve.
pub fn is_torch_autodiff<B: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<Ad>()
}

/// `t` as the primitive of [`Ad`]; callers check [`is_torch_autodiff`] first.
fn to_torch<B: Backend, const D: usize>(t: Tensor<B, D>) -> AdTensor {
    let p: Box<dyn Any> = Box::new(t.into_primitive());
    match p.downcast::<TensorPrimitive<Ad>>() {
        Ok(p) => p.tensor(),
        Err(_) => unreachable!("models::ops calls the torch path only for autodiff over tch"),
    }
}

/// The inverse of [`to_torch`].
fn from_torch<B: Backend, const D: usize>(p: AdTensor) -> Tensor<B, D> {
    let p: Box<dyn Any> = Box::new(TensorPrimitive::<Ad>::Float(p));
    match p.downcast::<TensorPrimitive<B>>() {
        Ok(p) => Tensor::from_primitive(*p),
        Err(_) => unreachable!("models::ops calls the torch path only for autodiff over tch"),
    }
}

/// burn's node for one island with `N` inputs.
#[derive(Debug)]
struct Island<const N: usize>;

/// What an island's backward needs: PyTorch's leaves and output (which hold its graph) and
/// burn's handles (see the module docs).
struct IslandState {
    leaves: Vec<tch::Tensor>,
    output: tch::Tensor,
    _keep: Vec<TchTensor>,
}

impl Clone for IslandState {
    fn clone(&self) -> Self {
        Self {
            leaves: self.leaves.iter().map(tch::Tensor::shallow_clone).collect(),
            output: self.output.shallow_clone(),
            _keep: self._keep.clone(),
        }
    }
}

impl std::fmt::Debug for IslandState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "IslandState({} leaves, output {:?})",
            self.leaves.len(),
            self.output.size()
        )
    }
}

impl<const N: usize> Backward<Tch, N> for Island<N> {
    type State = IslandState;

    fn backward(self, ops: Ops<IslandState, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Tch>(&ops.node);
        let state = ops.state;
        // A parent is present exactly when its input needed a gradient, and then its leaf was
        // made to require one.
        let (ids, leaves): (Vec<_>, Vec<_>) = ops
            .parents
            .iter()
            .zip(&state.leaves)
            .filter_map(|(parent, leaf)| parent.as_ref().map(|p| (p.id, leaf)))
            .unzip();
        if leaves.is_empty() {
            return;
        }
        let input_grads = backward(&state.output, &grad.tensor, &leaves)
            .unwrap_or_else(|e| panic!("PyTorch's backward of a native layer failed: {e}"));
        for (id, g) in ids.into_iter().zip(input_grads) {
            grads.register::<Tch>(id, TchTensor::new(g));
        }
    }
}

extern "C" {
    /// `csrc/backward.cpp`.
    fn padam_backward(
        outputs: *const *mut torch_sys::C_tensor,
        grads: *const *mut torch_sys::C_tensor,
        n: c_int,
        inputs: *const *mut torch_sys::C_tensor,
        n_inputs: c_int,
        results: *mut *mut torch_sys::C_tensor,
    ) -> *mut c_char;
    fn padam_free_message(message: *mut c_char);
}

/// The gradients of `leaves` given `grad`, the gradient of `output`, by PyTorch's autograd
/// engine (which frees the graph behind `output` as it goes).
fn backward(
    output: &tch::Tensor,
    grad: &tch::Tensor,
    leaves: &[&tch::Tensor],
) -> Result<Vec<tch::Tensor>, String> {
    let mut_ptr = |t: &tch::Tensor| t.as_ptr() as *mut torch_sys::C_tensor;
    let (outputs, grads) = ([mut_ptr(output)], [mut_ptr(grad)]);
    let inputs: Vec<_> = leaves.iter().map(|t| mut_ptr(t)).collect();
    let mut results = vec![std::ptr::null_mut(); leaves.len()];
    // SAFETY: every pointer is a live tch tensor (an `at::Tensor*`) for the duration of the
    // call, which reads them only; `results` has room for one pointer per input, and each
    // tensor written there is new and owned by the `tch::Tensor` made of it below. A message is
    // a `strdup` that `padam_free_message` frees.
    unsafe {
        let message = padam_backward(
            outputs.as_ptr(),
            grads.as_ptr(),
            1,
            inputs.as_ptr(),
            inputs.len() as c_int,
            results.as_mut_ptr(),
        );
        if !message.is_null() {
            let text = std::ffi::CStr::from_ptr(message)
                .to_string_lossy()
                .into_owned();
            padam_free_message(message);
            return Err(text);
        }
        Ok(results
            .into_iter()
            .map(|p| tch::Tensor::from_ptr(p))
            .collect())
    }
}

/// Runs `op` on PyTorch leaves of `inputs` and records it as one node of burn's graph.
fn island<const N: usize>(
    inputs: [AdTensor; N],
    op: impl FnOnce(&[tch::Tensor; N]) -> tch::Tensor,
) -> AdTensor {
    let leaves = inputs.each_ref().map(|t| {
        let leaf = t.primitive.tensor.detach();
        if t.node.requirement.is_none() {
            leaf
        } else {
            leaf.set_requires_grad(true)
        }
    });
    let output = tch::with_grad(|| op(&leaves));
    let out = TchTensor::new(output.detach());
    let nodes = inputs.each_ref().map(|t| t.node.clone());
    match Island::<N>
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let keep = inputs
                .iter()
                .map(|t| t.primitive.clone())
                .chain([out.clone()])
                .collect();
            let state = IslandState {
                leaves: leaves.into(),
                output,
                _keep: keep,
            };
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}

/// A burn `Conv2d`'s geometry as PyTorch's `conv2d` takes it.
#[derive(Clone, Copy)]
struct ConvGeometry {
    stride: [i64; 2],
    padding: [i64; 2],
    dilation: [i64; 2],
    groups: i64,
}

impl ConvGeometry {
    fn of<B: Backend>(conv: &Conv2d<B>, padding: [usize; 2]) -> Self {
        let ints = |v: [usize; 2]| v.map(|x| x as i64);
        Self {
            stride: ints(conv.stride),
            padding: ints(padding),
            dilation: ints(conv.dilation),
            groups: conv.groups as i64,
        }
    }

    /// PyTorch's `conv2d` of `x` with weight `w` and bias `b`.
    fn apply(self, x: &tch::Tensor, w: &tch::Tensor, b: Option<&tch::Tensor>) -> tch::Tensor {
        x.conv2d(w, b, self.stride, self.padding, self.dilation, self.groups)
    }
}

/// [`super::conv2d`] as PyTorch's `conv2d` (cuDNN on a GPU, both ways).
pub fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>, padding: [usize; 2]) -> Tensor<B, 4> {
    let geometry = ConvGeometry::of(conv, padding);
    let (x, w) = (to_torch(x), to_torch(conv.weight.val()));
    let out = match &conv.bias {
        Some(bias) => island([x, w, to_torch(bias.val())], |[x, w, b]| {
            geometry.apply(x, w, Some(b))
        }),
        None => island([x, w], |[x, w]| geometry.apply(x, w, None)),
    };
    from_torch(out)
}

/// [`super::batch_norm`] in training (the only mode under autodiff, as in burn's module).
pub fn batch_norm<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let device = x.device();
    let stats = RefCell::new(None);
    let inputs = [
        to_torch(x),
        to_torch(bn.gamma.val()),
        to_torch(bn.beta.val()),
    ];
    let out = island(inputs, |[x, gamma, beta]| {
        batch_norm_train(x, gamma, beta, bn, &stats)
    });
    update_running(bn, stats, &device);
    from_torch(out)
}

/// [`super::conv_batch_norm`] in training: convolution, batch norm and the ReLU as one island.
pub fn conv_batch_norm<B: Backend>(
    conv: &Conv2d<B>,
    padding: [usize; 2],
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    relu: bool,
) -> Tensor<B, 4> {
    let device = x.device();
    let geometry = ConvGeometry::of(conv, padding);
    let stats = RefCell::new(None);
    let finish = |y: tch::Tensor, gamma: &tch::Tensor, beta: &tch::Tensor| {
        let y = batch_norm_train(&y, gamma, beta, bn, &stats);
        if relu {
            y.relu()
        } else {
            y
        }
    };
    let (x, w) = (to_torch(x), to_torch(conv.weight.val()));
    let (gamma, beta) = (to_torch(bn.gamma.val()), to_torch(bn.beta.val()));
    let out = match &conv.bias {
        Some(bias) => island(
            [x, w, to_torch(bias.val()), gamma, beta],
            |[x, w, b, g, be]| finish(geometry.apply(x, w, Some(b)), g, be),
        ),
        None => island([x, w, gamma, beta], |[x, w, g, be]| {
            finish(geometry.apply(x, w, None), g, be)
        }),
    };
    update_running(bn, stats, &device);
    from_torch(out)
}

/// The batch mean and `1 / sqrt(var + eps)` of one training batch norm, for [`update_running`].
type BatchStats = RefCell<Option<(tch::Tensor, tch::Tensor)>>;

/// PyTorch's batch norm of `x` in training (cuDNN's on a GPU); the batch statistics go to
/// `stats`. PyTorch's own update of running statistics uses the unbiased variance and burn's the
/// biased one, so PyTorch updates a scratch pair and [`update_running`] the module's.
fn batch_norm_train<B: Backend>(
    x: &tch::Tensor,
    gamma: &tch::Tensor,
    beta: &tch::Tensor,
    bn: &BatchNorm<B>,
    stats: &BatchStats,
) -> tch::Tensor {
    let (scratch_mean, scratch_var) = scratch_stats(x.size()[1], x.device());
    let (y, mean, invstd, _reserve) = x.internal_batch_norm_with_update(
        Some(gamma),
        Some(beta),
        &scratch_mean,
        &scratch_var,
        bn.momentum,
        bn.epsilon,
    );
    *stats.borrow_mut() = Some((mean, invstd));
    y
}

thread_local! {
    /// The scratch running statistics of [`batch_norm_train`], by channels and device.
    static SCRATCH: RefCell<HashMap<(i64, tch::Device), (tch::Tensor, tch::Tensor)>> =
        RefCell::new(HashMap::new());
}

/// Running statistics for PyTorch to update and nobody to read: one pair per channel count and
/// device, reused by every batch norm (two fills and allocations fewer per layer and step).
fn scratch_stats(channels: i64, device: tch::Device) -> (tch::Tensor, tch::Tensor) {
    SCRATCH.with(|cache| {
        let mut cache = cache.borrow_mut();
        let (mean, var) = cache.entry((channels, device)).or_insert_with(|| {
            let options = (tch::Kind::Float, device);
            (
                tch::Tensor::zeros([channels], options),
                tch::Tensor::ones([channels], options),
            )
        });
        (mean.shallow_clone(), var.shallow_clone())
    })
}

/// burn's update of `bn`'s running statistics from a batch's, `running (1 - momentum) + batch
/// momentum`, as one PyTorch lerp each (into new tensors: PyTorch saved the batch mean for the
/// backward).
fn update_running<B: Backend>(bn: &BatchNorm<B>, stats: BatchStats, device: &B::Device) {
    let (mean, invstd) = stats.into_inner().expect("the island ran its op");
    // PyTorch saves 1 / sqrt(var + eps) with the biased batch variance.
    let var = invstd.pow_tensor_scalar(-2.0) - bn.epsilon;
    let update = |state: &burn::module::RunningState<Tensor<B, 1>>, batch: &tch::Tensor| {
        let running = to_torch(state.value_sync().to_device(device));
        let updated = running.primitive.tensor.lerp(batch, bn.momentum);
        state.update(from_torch(Ad::from_inner(TchTensor::new(updated))));
    };
    update(&bn.running_mean, &mean);
    update(&bn.running_var, &var);
}

/// [`super::layer_norm`] as PyTorch's fused layer norm over the last dimension.
pub fn layer_norm<B: Backend, const D: usize>(
    ln: &LayerNorm<B>,
    x: Tensor<B, D>,
    epsilon: f64,
) -> Tensor<B, D> {
    let last = [x.dims()[D - 1] as i64];
    let x = to_torch(x);
    let gamma = to_torch(ln.gamma.val());
    let out = match &ln.beta {
        Some(beta) => island([x, gamma, to_torch(beta.val())], |[x, g, b]| {
            x.layer_norm(last, Some(g), Some(b), epsilon, true)
        }),
        None => island([x, gamma], |[x, g]| {
            x.layer_norm::<&tch::Tensor>(last, Some(g), None, epsilon, true)
        }),
    };
    from_torch(out)
}

/// [`super::causal_attention`] as PyTorch's `scaled_dot_product_attention` (flash or
/// memory-efficient kernels on a GPU; dropout from PyTorch's generator, which burn-tch seeds).
pub fn causal_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    dropout: f64,
) -> Tensor<B, 4> {
    let out = island([q, k, v].map(to_torch), |[q, k, v]| {
        tch::Tensor::scaled_dot_product_attention::<&tch::Tensor>(
            q, k, v, None, dropout, true, None, false,
        )
    });
    from_torch(out)
}

#[cfg(test)]
mod tests {
    use super::backward;

    /// The shim against PyTorch's own `sum(output * grad)` seed, and its refusals as errors.
    #[test]
    fn backward_from_an_output_gradient_matches_the_summed_seed_and_reports_errors() {
        let x = tch::Tensor::randn([3, 4], (tch::Kind::Float, tch::Device::Cpu))
            .set_requires_grad(true);
        let w = tch::Tensor::randn([4, 5], (tch::Kind::Float, tch::Device::Cpu))
            .set_requires_grad(true);
        let run = || tch::with_grad(|| x.matmul(&w).tanh());
        let grad = tch::Tensor::randn([3, 5], (tch::Kind::Float, tch::Device::Cpu));

        let ours = backward(&run(), &grad, &[&x, &w]).expect("a valid backward");
        let seed = tch::with_grad(|| (run() * &grad).sum(tch::Kind::Float));
        let theirs = tch::Tensor::run_backward(&[seed], &[&x, &w], false, false);
        for (a, b) in ours.iter().zip(&theirs) {
            assert_eq!(a.size(), b.size());
            let diff = (a - b).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "shim and seeded backward differ by {diff}");
        }

        let wrong = tch::Tensor::ones([2, 5], (tch::Kind::Float, tch::Device::Cpu));
        let e = backward(&run(), &wrong, &[&x]).unwrap_err();
        assert!(e.contains("shape"), "{e}");
        let frozen = tch::Tensor::ones([3, 4], (tch::Kind::Float, tch::Device::Cpu));
        let e = backward(&run(), &grad, &[&frozen]).unwrap_err();
        assert!(e.contains("does not require a gradient"), "{e}");
    }
}
