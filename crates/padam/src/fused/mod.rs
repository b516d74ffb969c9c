//! The fused PAdam step: Adam + pWD + the non-finite gradient flag in one pass per tensor.
//!
//! On burn's tensor ops a PAdam step is ~15 small kernels per parameter tensor plus a
//! per-tensor reduction for the non-finite check: on a GPU burn's dispatch, not memory
//! bandwidth, sets its speed, and on the CPU each is a pass over the weights.
//! [`PWdOptimizer`](crate::PWdOptimizer) built by [`PAdamConfig`](crate::PAdamConfig) detects
//! at run time that the inner backend has a fused step and then reads `w, g, m, v` once and
//! writes `w, m, v` once per tensor: 28 bytes per parameter, the floor of any Adam-type step.
//! Three backends have one (f32 weights):
//!
//! - burn's CUDA backend (`Fusion<CubeBackend<CudaRuntime>>` or plain
//!   `CubeBackend<CudaRuntime>`), with the `cuda` feature: by default one operation in burn's
//!   fusion stream for all tensors of a step, launching one CubeCL kernel per group of up to
//!   [`MAX_TENSORS_PER_LAUNCH`] tensors ([`adam_pwd_steps`]; the grouping in `multi.rs`, the
//!   kernel in `cuda.rs`), as PyTorch's fused AdamW does (burn's host cost is paid per operation
//!   and per launch, not per tensor); or one kernel per tensor ([`adam_pwd_step`],
//!   `PAdamConfig::with_multi_tensor(false)`), the same arithmetic;
//! - burn's CPU backend (`Flex`), with the `flex` feature (on by default): one loop per tensor
//!   in Rust (`flex.rs`);
//! - burn's LibTorch backend (`LibTorch<f32>`), with the `tch` feature: the tensors that share
//!   their constants concatenated and stepped by one sequence of PyTorch ops (`torch.rs`), equal
//!   to the tensor path to f32 rounding rather than to the bit.
//!
//! After any other base optimizer (pSGD, [`PWdConfig`](crate::PWdConfig)) the decay alone is
//! fused on the CPU backend ([`pwd_decay`]); elsewhere it stays tensor ops.
//!
//! Both write in place where the optimizer holds the only reference to a buffer. Every other
//! backend, dtype or setting (non-adiabatic `s`, [`NonFinitePolicy::SkipTensor`]) takes the
//! tensor-op path, which stays the portable implementation and the fused steps' test oracle
//! (`PAdamConfig::with_fused_kernel(false)` selects it everywhere).
//!
//! The fused steps compute what the tensor path computes, in the same order, in f32:
//!
//! ```text
//! m' = m*b1 + g*(1-b1)                 v' = v*b2 + (g*g)*(1-b2)          (burn's Adam)
//! w_hat = w - lr * (m' * k) / (sqrt(v') + eps*sqrt(bc2))    k = sqrt(bc2)/bc1, bc_i = 1-b_i^t
//! w' = w_hat                                   (parameter outside the decay selection)
//! w' = w_hat * f                               (uniform factor: p = 2, or c = lr p lambda = 0)
//! w' = w_hat / (|w|^(p-2) * c + (1 + lr lambda2))                  (the pWD step, decay.rs)
//! ```
//!
//! so the numerics of SPEC 4 documented in [`decay`](crate::decay) hold unchanged: at `w = 0`
//! with `p < 2`, `|0|^(p-2) = +inf`, the denominator is `+inf` and the weight stays exactly 0.
//! The one case the kernel does not take is a coefficient `c > 0` that rounds to 0 in f32
//! (`lr p lambda < 1.4e-45`), where the tensor path restores `0 * inf = inf` by hand.
//!
//! [`NonFinitePolicy::SkipTensor`]: crate::NonFinitePolicy::SkipTensor

#[cfg(feature = "cuda")]
mod cuda;
#[cfg(feature = "flex")]
mod flex;
mod multi;
#[cfg(feature = "tch")]
mod torch;
#[cfg(feature = "tch")]
mod torch_cuda;

pub use multi::{plan_launches, MultiInput, MultiOutput, MAX_TENSORS_PER_LAUNCH};

/// What [`adam_pwd_steps`] returns: each tensor's `w', m', v'` (in the inputs' order) and the
/// updated flags.
pub type MultiStepped<B> = (
    Vec<MultiOutput<burn::tensor::ops::FloatTensor<B>>>,
    Tensor<B, 1>,
);

use burn::tensor::{backend::Backend, DType, Tensor, TensorPrimitive};

use crate::decay::DecayStep;

/// Adam's hyper-parameters as burn's `Adam` holds them (f32), for the fused kernel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamHyper {
    /// First-moment decay.
    pub beta_1: f32,
    /// Second-moment decay.
    pub beta_2: f32,
    /// Added to `sqrt(v_hat)`.
    pub epsilon: f32,
}

/// How the kernel finishes `w_hat` (a compile-time switch of the kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecayMode {
    /// The parameter is outside the decay selection: `w' = w_hat`.
    None,
    /// One factor for every weight: `w' = w_hat * factor`.
    Uniform,
    /// The pWD step `w' = w_hat / (|w|^(p-2) * c + base)`.
    PNorm,
}

/// The GPU kernels' values for [`DecayMode`] (the CubeCL kernels' switch, `csrc/torch_step.cu`'s
/// `mode`).
#[cfg(any(feature = "cuda", feature = "tch"))]
const MODE_NONE: u32 = 0;
#[cfg(any(feature = "cuda", feature = "tch"))]
const MODE_UNIFORM: u32 = 1;
#[cfg(any(feature = "cuda", feature = "tch"))]
const MODE_PNORM: u32 = 2;

#[cfg(any(feature = "cuda", feature = "tch"))]
impl DecayMode {
    /// The value the GPU kernels take for this mode.
    fn code(self) -> u32 {
        match self {
            DecayMode::None => MODE_NONE,
            DecayMode::Uniform => MODE_UNIFORM,
            DecayMode::PNorm => MODE_PNORM,
        }
    }
}

/// Every scalar one fused step of one tensor needs, computed on the host exactly as burn's
/// `Adam` and [`decay`](crate::decay) compute them, so the kernel and the tensor path see the
/// same f32 constants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepScalars {
    /// `b1`.
    pub beta_1: f32,
    /// `1 - b1`.
    pub one_minus_beta_1: f32,
    /// `b2`.
    pub beta_2: f32,
    /// `1 - b2`.
    pub one_minus_beta_2: f32,
    /// `sqrt(1 - b2^t) / (1 - b1^t)`.
    pub combined: f32,
    /// `eps * sqrt(1 - b2^t)`.
    pub eps_scaled: f32,
    /// The learning rate.
    pub lr: f32,
    /// Adam's step number `t` (1 for the first). With `epsilon`, what PyTorch's fused Adam takes
    /// in place of `combined` and `eps_scaled` (the LibTorch step).
    pub time: u32,
    /// `eps`.
    pub epsilon: f32,
    /// How `w_hat` is finished.
    pub decay: DecayScalars,
}

/// The f32 constants of one tensor's pWD step, `w' = w_hat / (|w|^(p-2) c + base)` (or one of
/// its uniform cases), computed on the host as [`decay`](crate::decay) computes them: what the
/// fused steps take after Adam's, and alone after any other base optimizer's
/// ([`pwd_decay`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecayScalars {
    /// How `w_hat` is finished.
    pub mode: DecayMode,
    /// The factor for [`DecayMode::Uniform`].
    pub uniform_factor: f32,
    /// `c = lr p lambda` for [`DecayMode::PNorm`].
    pub c: f32,
    /// `p - 2` for [`DecayMode::PNorm`].
    pub p_minus_2: f32,
    /// `1 + lr lambda2` for [`DecayMode::PNorm`].
    pub base: f32,
}

impl DecayScalars {
    /// No decay: `w' = w_hat` (a parameter outside the selection).
    pub const NONE: Self = Self {
        mode: DecayMode::None,
        uniform_factor: 1.0,
        c: 0.0,
        p_minus_2: 0.0,
        base: 1.0,
    };

    /// The constants of `decay` (`None`: not decayed). `None` when f32 cannot reproduce the
    /// tensor path: a positive `c` that rounds to 0, where the tensor path restores
    /// `0 * inf = inf` by hand.
    pub fn new(decay: Option<&DecayStep>) -> Option<Self> {
        let Some(step) = decay else {
            return Some(Self::NONE);
        };
        if step.is_uniform() {
            return Some(Self {
                mode: DecayMode::Uniform,
                uniform_factor: step.uniform_factor() as f32,
                ..Self::NONE
            });
        }
        let c = step.coefficient();
        if (c as f32) == 0.0 {
            return None;
        }
        Some(Self {
            mode: DecayMode::PNorm,
            uniform_factor: 1.0,
            c: c as f32,
            p_minus_2: (step.p - 2.0) as f32,
            base: step.base_denominator() as f32,
        })
    }
}

impl StepScalars {
    /// The scalars of Adam step number `time` (1 for the first step) followed by `decay`
    /// (`None`: the parameter is not decayed). `None` when the kernel cannot reproduce the
    /// tensor path (a positive `c` that rounds to 0 in f32).
    pub fn new(hyper: &AdamHyper, time: usize, lr: f64, decay: Option<&DecayStep>) -> Option<Self> {
        // burn's AdaptiveMomentum::transform, in f32 as there.
        let time_i = i32::try_from(time).ok()?;
        let bias_correction2_sqrt = (1.0 - hyper.beta_2.powi(time_i)).sqrt();
        let combined = bias_correction2_sqrt / (1.0 - hyper.beta_1.powi(time_i));
        Some(Self {
            beta_1: hyper.beta_1,
            one_minus_beta_1: 1.0 - hyper.beta_1,
            beta_2: hyper.beta_2,
            one_minus_beta_2: 1.0 - hyper.beta_2,
            combined,
            eps_scaled: hyper.epsilon * bias_correction2_sqrt,
            lr: lr as f32,
            time: u32::try_from(time).ok()?,
            epsilon: hyper.epsilon,
            decay: DecayScalars::new(decay)?,
        })
    }
}

/// The tensors one fused step of one tensor reads: the weight, its gradient, Adam's moments,
/// and the flag vector (one entry per tensor of the step).
pub struct FusedInputs<B: Backend, const D: usize> {
    /// `w`.
    pub weight: Tensor<B, D>,
    /// `g`.
    pub grad: Tensor<B, D>,
    /// `m`.
    pub moment_1: Tensor<B, D>,
    /// `v`.
    pub moment_2: Tensor<B, D>,
    /// The flags.
    pub flags: Tensor<B, 1>,
}

impl<B: Backend, const D: usize> FusedInputs<B, D> {
    /// The backend's primitives, in the order `w, g, m, v, flags`.
    fn into_primitives(self) -> [B::FloatTensorPrimitive; 5] {
        [
            self.weight.into_primitive().tensor(),
            self.grad.into_primitive().tensor(),
            self.moment_1.into_primitive().tensor(),
            self.moment_2.into_primitive().tensor(),
            self.flags.into_primitive().tensor(),
        ]
    }
}

/// The outputs of one fused step: the new weight, moments and the (updated) flag tensor.
pub struct FusedOutput<B: Backend, const D: usize> {
    /// `w'`.
    pub weight: Tensor<B, D>,
    /// `m'`.
    pub moment_1: Tensor<B, D>,
    /// `v'`.
    pub moment_2: Tensor<B, D>,
    /// The flags, with entry `flag_index` made non-zero if the gradient held NaN or inf (1 from
    /// the CPU and CUDA kernels, NaN from the LibTorch step): read them as `!= 0`.
    pub flags: Tensor<B, 1>,
}

impl<B: Backend, const D: usize> FusedOutput<B, D> {
    /// From the backend's primitives, in the order `w', m', v', flags`.
    fn from_primitives([w, m, v, f]: [B::FloatTensorPrimitive; 4]) -> Self {
        let float = |p| Tensor::from_primitive(TensorPrimitive::Float(p));
        Self {
            weight: float(w),
            moment_1: float(m),
            moment_2: float(v),
            flags: Tensor::from_primitive(TensorPrimitive::Float(f)),
        }
    }
}

/// Move a value to a type it may have: `Ok` when `A` is `T`, else the value back. The fused
/// path uses it where a generic backend or state type is, at run time, the concrete one the
/// kernel is written for.
pub(crate) fn downcast<A: 'static, T: 'static>(a: A) -> Result<T, A> {
    let mut slot = Some(a);
    if let Some(t) = (&mut slot as &mut dyn std::any::Any).downcast_mut::<Option<T>>() {
        return Ok(t.take().expect("just filled"));
    }
    Err(slot.expect("not taken"))
}

/// True when backend `B` has the fused step for tensors of `dtype`: f32 on burn's CUDA
/// backend (with the `cuda` feature), on burn's CPU backend `Flex` (with the `flex` feature) or
/// on burn's LibTorch backend (with the `tch` feature).
pub fn supports<B: Backend>(dtype: DType) -> bool {
    dtype == DType::F32 && (on_cuda::<B>() || on_flex::<B>() || on_tch::<B>())
}

/// True when backend `B` has the multi-tensor step ([`adam_pwd_steps`]) for tensors of `dtype`:
/// f32 on burn's CUDA backend (with the `cuda` feature) or on burn's LibTorch backend (with the
/// `tch` feature).
pub fn supports_multi<B: Backend>(dtype: DType) -> bool {
    dtype == DType::F32 && (on_cuda::<B>() || on_tch::<B>())
}

/// True when backend `B` has pWD's step alone ([`pwd_decay`]) fused for tensors of `dtype`: f32
/// on burn's CPU backend `Flex` (with the `flex` feature). Elsewhere the decay runs as tensor
/// ops (on CUDA, burn's fusion joins them into one kernel per tensor).
pub fn supports_decay<B: Backend>(dtype: DType) -> bool {
    dtype == DType::F32 && on_flex::<B>()
}

/// pWD's step after any base optimizer (pSGD, [`PWdConfig`](crate::PWdConfig)):
/// [`decay::apply`](crate::decay::apply)'s `w_hat / (1 + lr lambda2 + c |w_old|^(p-2))`, in
/// one pass where [`supports_decay`] holds and the factor differs between weights (bit-equal to
/// the tensor ops, writing over `w_hat` where nothing else holds it), else as `decay::apply`'s
/// tensor ops.
pub fn pwd_decay<B: Backend, const D: usize>(
    w_hat: Tensor<B, D>,
    w_old: Tensor<B, D>,
    step: &DecayStep,
) -> Tensor<B, D> {
    // The uniform cases are one multiplication on the tensor path already.
    let fused = supports_decay::<B>(w_hat.dtype()) && w_old.dtype() == w_hat.dtype();
    let scalars = DecayScalars::new(Some(step)).filter(|d| fused && d.mode == DecayMode::PNorm);
    match scalars {
        #[cfg(feature = "flex")]
        Some(d) => flex::decay(w_hat, w_old, &d),
        _ => crate::decay::apply(w_hat, w_old, step),
    }
}

/// True when reading a value of `B` back costs no device synchronisation (the CPU backend):
/// there the optimizer checks the gradients for NaN and inf before a fused step, as on the tensor
/// path, instead of through the step's flags read after it.
pub fn reads_are_free<B: Backend>() -> bool {
    on_flex::<B>()
}

#[cfg_attr(not(feature = "cuda"), allow(clippy::extra_unused_type_parameters))]
fn on_cuda<B: Backend>() -> bool {
    #[cfg(feature = "cuda")]
    return cuda::is_cuda::<B>();
    #[cfg(not(feature = "cuda"))]
    false
}

#[cfg_attr(not(feature = "tch"), allow(clippy::extra_unused_type_parameters))]
fn on_tch<B: Backend>() -> bool {
    #[cfg(feature = "tch")]
    return torch::is_tch::<B>();
    #[cfg(not(feature = "tch"))]
    false
}

#[cfg_attr(not(feature = "flex"), allow(clippy::extra_unused_type_parameters))]
fn on_flex<B: Backend>() -> bool {
    #[cfg(feature = "flex")]
    return flex::is_flex::<B>();
    #[cfg(not(feature = "flex"))]
    false
}

/// One fused Adam + pWD step of one tensor. When `check` is set, entry `flag_index` of the
/// flags becomes non-zero if the gradient holds NaN or inf. `None` when [`supports`] is false for `B`
/// and the weight's dtype (nothing is consumed then but the inputs, which the caller should not
/// need: check [`supports`] first).
pub fn adam_pwd_step<B: Backend, const D: usize>(
    inputs: FusedInputs<B, D>,
    flag_index: usize,
    check: bool,
    scalars: &StepScalars,
) -> Option<FusedOutput<B, D>> {
    if !supports::<B>(inputs.weight.dtype()) {
        return None;
    }
    #[cfg(feature = "cuda")]
    if on_cuda::<B>() {
        return cuda::step(inputs, flag_index, check, scalars);
    }
    #[cfg(feature = "flex")]
    if on_flex::<B>() {
        return flex::step(inputs, flag_index, check, scalars);
    }
    #[cfg(feature = "tch")]
    if on_tch::<B>() {
        return torch::step(inputs, flag_index, check, scalars);
    }
    // `supports` is false for every other backend: nothing reaches here.
    let _ = (inputs, flag_index, check, scalars);
    None
}

/// The fused step of many tensors at once ([`adam_pwd_step`]'s arithmetic for each): one
/// operation, launching one kernel per group of up to [`MAX_TENSORS_PER_LAUNCH`] tensors (on
/// CUDA, grouped by line size as `multi::plan_line_launches` says, each line size's tensors as
/// [`plan_launches`] groups them). When `check` is set, entry `flag_index` of `flags` becomes non-zero
/// for each tensor whose gradient holds NaN or inf. The outputs come in the order of `inputs`. `None`
/// when [`supports_multi`] is false for `B` (nothing is consumed but the inputs then).
pub fn adam_pwd_steps<B: Backend>(
    inputs: Vec<MultiInput<B::FloatTensorPrimitive>>,
    flags: Tensor<B, 1>,
    check: bool,
) -> Option<MultiStepped<B>> {
    if !supports_multi::<B>(DType::F32) {
        return None;
    }
    let flags = flags.into_primitive().tensor();
    #[cfg(feature = "cuda")]
    if on_cuda::<B>() {
        let (outputs, flags) = cuda::steps::<B>(inputs, flags, check);
        return Some((
            outputs,
            Tensor::from_primitive(TensorPrimitive::Float(flags)),
        ));
    }
    #[cfg(feature = "tch")]
    if on_tch::<B>() {
        let (outputs, flags) = torch::steps::<B>(inputs, flags, check);
        return Some((
            outputs,
            Tensor::from_primitive(TensorPrimitive::Float(flags)),
        ));
    }
    // `supports_multi` is false for every other backend: nothing reaches here.
    let _ = (inputs, flags, check);
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hyper() -> AdamHyper {
        AdamHyper {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-8,
        }
    }

    fn step(p: f64, lambda: f64) -> DecayStep {
        DecayStep {
            lr: 1e-2,
            p,
            lambda,
            lambda2: 0.0,
        }
    }

    #[test]
    fn scalars_follow_burns_adam_bias_correction() {
        let s = StepScalars::new(&hyper(), 3, 1e-2, None).unwrap();
        let bc2 = (1.0f32 - 0.999f32.powi(3)).sqrt();
        assert_eq!(s.combined, bc2 / (1.0 - 0.9f32.powi(3)));
        assert_eq!(s.eps_scaled, 1e-8f32 * bc2);
        assert_eq!(s.decay, DecayScalars::NONE);
    }

    #[test]
    fn decay_modes_match_the_tensor_path_cases() {
        let decay = |p, lambda| {
            (StepScalars::new(&hyper(), 1, 1e-2, Some(&step(p, lambda))).unwrap()).decay
        };
        let p2 = decay(2.0, 0.1);
        assert_eq!(p2.mode, DecayMode::Uniform);
        assert_eq!(p2.uniform_factor, (1.0 / (1.0 + 2.0 * 1e-2 * 0.1)) as f32);
        let zero = decay(0.8, 0.0);
        assert_eq!((zero.mode, zero.uniform_factor), (DecayMode::Uniform, 1.0));
        let p08 = decay(0.8, 0.1);
        assert_eq!(p08.mode, DecayMode::PNorm);
        assert_eq!(p08.c, (1e-2 * 0.8 * 0.1) as f32);
        assert_eq!(p08.p_minus_2, -1.2f64 as f32);
        assert_eq!(p08.base, 1.0);
    }

    #[test]
    fn a_coefficient_lost_in_f32_is_left_to_the_tensor_path() {
        assert!(StepScalars::new(&hyper(), 1, 1e-2, Some(&step(0.8, 1e-44))).is_none());
    }

    #[test]
    fn which_backends_have_the_fused_step() {
        assert!(supports::<burn::backend::Flex>(DType::F32));
        assert!(!supports::<burn::backend::Flex>(DType::F64));
        assert!(!supports::<burn::backend::Autodiff<burn::backend::Flex>>(
            DType::F32
        ));
        assert!(!supports_multi::<burn::backend::Flex>(DType::F32));
    }
}
