//! The fused step on burn's CUDA backend: the CubeCL kernel, its launch on `CubeBackend`
//! tensors, and the custom operation that queues it in burn's fusion stream.
//!
//! The optimizer is generic over the backend; this file recognises burn's CUDA backend types at
//! run time (`TypeId`) and moves the tensor primitives to and from the concrete types with
//! `Any`, so no trait bound is added to the optimizer and every other backend is untouched.

use std::any::TypeId;

use burn::tensor::{backend::Backend, DType, Shape};
use burn_cubecl::{kernel::into_contiguous, tensor::CubeTensor, CubeBackend, CubeRuntime};
use burn_fusion::{
    stream::{Operation, OperationStreams},
    Fusion, FusionBackend, FusionRuntime, FusionTensor,
};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};
use cubecl::cuda::CudaRuntime;
use cubecl::prelude::*;
use cubecl::{calculate_cube_count_elemwise, CubeDim};

use super::{downcast, DecayMode, FusedInputs, FusedOutput, StepScalars};

/// burn's CUDA backend without fusion (f32 floats, as `burn::backend::Cuda` with defaults).
type CubeCuda = CubeBackend<CudaRuntime, f32, i32, u8>;
/// burn's CUDA backend with fusion: `burn::backend::Cuda` with the `fusion` feature.
type FusionCuda = Fusion<CubeCuda>;
type FusionRt = <CubeCuda as FusionBackend>::FusionRuntime;
type FusionHandle = <FusionRt as FusionRuntime>::FusionHandle;

/// `DecayMode` as the kernel's compile-time switch.
const MODE_NONE: u32 = 0;
const MODE_UNIFORM: u32 = 1;
const MODE_PNORM: u32 = 2;

/// One unit per element. Reads `w, g, m, v` once, writes `w', m', v'` once; the arithmetic is
/// the tensor path's, operation for operation (see the module docs of `fused`). `flags[i]` is
/// set to 1 by every unit that sees a NaN or inf gradient (they all write the same value, so
/// the concurrent writes are benign); nothing else writes it, so it keeps the 0 it started
/// with when the gradient is finite.
#[cube(launch)]
// `collapsible_if`: the `comptime!` test must stay its own `if`, so that a kernel compiled
// with `check = false` holds no trace of the gradient test.
#[allow(clippy::too_many_arguments, clippy::collapsible_if)]
fn adam_pwd_kernel(
    w: &Array<f32>,
    g: &Array<f32>,
    m: &Array<f32>,
    v: &Array<f32>,
    w_out: &mut Array<f32>,
    m_out: &mut Array<f32>,
    v_out: &mut Array<f32>,
    flags: &mut Array<f32>,
    flag_index: u32,
    beta_1: f32,
    one_minus_beta_1: f32,
    beta_2: f32,
    one_minus_beta_2: f32,
    combined: f32,
    eps_scaled: f32,
    lr: f32,
    uniform_factor: f32,
    c: f32,
    p_minus_2: f32,
    base: f32,
    #[comptime] mode: u32,
    #[comptime] check: bool,
) {
    let i = ABSOLUTE_POS;
    if i >= w_out.len() {
        terminate!();
    }
    let gi = g[i];
    if comptime![check] {
        if f32::is_nan(gi) || f32::is_inf(gi) {
            flags[flag_index as usize] = 1.0;
        }
    }
    let m_new = m[i] * beta_1 + gi * one_minus_beta_1;
    let v_new = v[i] * beta_2 + (gi * gi) * one_minus_beta_2;
    let update = (m_new * combined) / (f32::sqrt(v_new) + eps_scaled);
    let w_old = w[i];
    let w_hat = w_old - update * lr;
    let mut w_new = w_hat;
    if comptime![mode == MODE_UNIFORM] {
        w_new = w_hat * uniform_factor;
    }
    if comptime![mode == MODE_PNORM] {
        let s = f32::powf(f32::abs(w_old), p_minus_2);
        w_new = w_hat / (s * c + base);
    }
    w_out[i] = w_new;
    m_out[i] = m_new;
    v_out[i] = v_new;
}

/// The outputs on `CubeBackend` tensors.
struct CubeOutput<R: CubeRuntime> {
    weight: CubeTensor<R>,
    moment_1: CubeTensor<R>,
    moment_2: CubeTensor<R>,
    flags: CubeTensor<R>,
}

fn empty_like<R: CubeRuntime>(t: &CubeTensor<R>, shape: Shape) -> CubeTensor<R> {
    let bytes = shape.num_elements() * core::mem::size_of::<f32>();
    let handle = t.client.empty(bytes);
    CubeTensor::new_contiguous(
        t.client.clone(),
        t.device.clone(),
        shape,
        handle,
        DType::F32,
    )
}

/// Where the kernel writes one of `w', m', v'`: over its input when no other tensor shares that
/// buffer (an output aliasing input number `input_pos` of the kernel, as burn's own elementwise
/// kernels do), else into a new buffer. The weight and moments are shared while a per-step check
/// keeps the module and states from before the step (to hand back on a refusal); otherwise the
/// optimizer holds the only reference and the step allocates nothing.
struct Destination<R: CubeRuntime> {
    /// The output tensor: the input itself, or a new buffer.
    tensor: CubeTensor<R>,
    /// The kernel argument for it.
    arg: ArrayArg<R>,
}

fn destination<R: CubeRuntime>(input: &CubeTensor<R>, input_pos: usize) -> Destination<R> {
    let shape = input.meta.shape().clone();
    if input.can_mut() {
        let length = [shape.num_elements()];
        return Destination {
            tensor: input.clone(),
            arg: ArrayArg::Alias { input_pos, length },
        };
    }
    let tensor = empty_like(input, shape);
    let arg = tensor.clone().into_array_arg();
    Destination { tensor, arg }
}

/// Launch the kernel on contiguous f32 tensors. The flags buffer is updated in place (it is
/// the only buffer the kernel both reads and writes, through one argument); it is copied first
/// if another tensor shares it.
#[allow(clippy::too_many_arguments)]
fn launch_cube<R: CubeRuntime>(
    w: CubeTensor<R>,
    g: CubeTensor<R>,
    m: CubeTensor<R>,
    v: CubeTensor<R>,
    flags: CubeTensor<R>,
    flag_index: u32,
    check: bool,
    s: &StepScalars,
) -> CubeOutput<R> {
    let alloc = tracing::trace_span!("fused.alloc").entered();
    let (w, g, m, v) = (
        into_contiguous(w),
        into_contiguous(g),
        into_contiguous(m),
        into_contiguous(v),
    );
    let flags = if flags.can_mut() { flags } else { flags.copy() };
    // Positions of w, m, v among the kernel's inputs (w, g, m, v).
    let (w_out, m_out, v_out) = (destination(&w, 0), destination(&m, 2), destination(&v, 3));
    let n = w.meta.shape().num_elements();
    let client = w.client.clone();
    let mode = match s.mode {
        DecayMode::None => MODE_NONE,
        DecayMode::Uniform => MODE_UNIFORM,
        DecayMode::PNorm => MODE_PNORM,
    };
    drop(alloc);
    let _launch = tracing::trace_span!("fused.launch").entered();
    if n > 0 {
        let cube_dim = CubeDim::new(&client, n);
        let cube_count = calculate_cube_count_elemwise(&client, n, cube_dim);
        adam_pwd_kernel::launch::<R>(
            &client,
            cube_count,
            cube_dim,
            w.into_array_arg(),
            g.into_array_arg(),
            m.into_array_arg(),
            v.into_array_arg(),
            w_out.arg,
            m_out.arg,
            v_out.arg,
            flags.clone().into_array_arg(),
            flag_index,
            s.beta_1,
            s.one_minus_beta_1,
            s.beta_2,
            s.one_minus_beta_2,
            s.combined,
            s.eps_scaled,
            s.lr,
            s.uniform_factor,
            s.c,
            s.p_minus_2,
            s.base,
            mode,
            check,
        );
    }
    CubeOutput {
        weight: w_out.tensor,
        moment_1: m_out.tensor,
        moment_2: v_out.tensor,
        flags,
    }
}

/// The fused step as an operation of burn's fusion stream: queued like any other operation,
/// executed in order when the stream runs (no host synchronisation).
#[derive(Debug)]
struct AdamPwdOp {
    desc: CustomOpIr,
    flag_index: u32,
    check: bool,
    scalars: StepScalars,
}

impl Operation<FusionRt> for AdamPwdOp {
    fn execute(&self, handles: &mut HandleContainer<FusionHandle>) {
        let _execute = tracing::trace_span!("fused.execute").entered();
        let ([w, g, m, v, flags], [w_out, m_out, v_out, flags_out]) = self.desc.as_fixed();
        let out = launch_cube(
            handles.get_float_tensor::<CubeCuda>(w),
            handles.get_float_tensor::<CubeCuda>(g),
            handles.get_float_tensor::<CubeCuda>(m),
            handles.get_float_tensor::<CubeCuda>(v),
            handles.get_float_tensor::<CubeCuda>(flags),
            self.flag_index,
            self.check,
            &self.scalars,
        );
        handles.register_float_tensor::<CubeCuda>(&w_out.id, out.weight);
        handles.register_float_tensor::<CubeCuda>(&m_out.id, out.moment_1);
        handles.register_float_tensor::<CubeCuda>(&v_out.id, out.moment_2);
        handles.register_float_tensor::<CubeCuda>(&flags_out.id, out.flags);
    }
}

#[allow(clippy::too_many_arguments)]
fn launch_fusion(
    w: FusionTensor<FusionRt>,
    g: FusionTensor<FusionRt>,
    m: FusionTensor<FusionRt>,
    v: FusionTensor<FusionRt>,
    flags: FusionTensor<FusionRt>,
    flag_index: u32,
    check: bool,
    scalars: &StepScalars,
) -> [FusionTensor<FusionRt>; 4] {
    let _queue = tracing::trace_span!("fused.queue").entered();
    let client = w.client.clone();
    let streams = OperationStreams::with_inputs([&w, &g, &m, &v, &flags]);
    let out = |shape: Shape| TensorIr::uninit(client.create_empty_handle(), shape, DType::F32);
    let outputs = [
        out(w.shape.clone()),
        out(w.shape.clone()),
        out(w.shape.clone()),
        out(flags.shape.clone()),
    ];
    let inputs = [
        w.into_ir(),
        g.into_ir(),
        m.into_ir(),
        v.into_ir(),
        flags.into_ir(),
    ];
    let desc = CustomOpIr::new("padam_adam_pwd_step", &inputs, &outputs);
    let op = AdamPwdOp {
        desc: desc.clone(),
        flag_index,
        check,
        scalars: *scalars,
    };
    client
        .register(streams, OperationIr::Custom(desc), op)
        .try_into()
        .expect("the fused step registers four outputs")
}

/// True when `B` is one of burn's CUDA backends with f32 floats.
pub(super) fn is_cuda<B: Backend>() -> bool {
    let id = TypeId::of::<B>();
    id == TypeId::of::<FusionCuda>() || id == TypeId::of::<CubeCuda>()
}

/// Run one tensor's fused step on `B`, which must be one of the CUDA backends.
pub(super) fn step<B: Backend, const D: usize>(
    inputs: FusedInputs<B, D>,
    flag_index: usize,
    check: bool,
    scalars: &StepScalars,
) -> Option<FusedOutput<B, D>> {
    let flag_index = u32::try_from(flag_index).ok()?;
    let prims = inputs.into_primitives();
    let outputs = if TypeId::of::<B>() == TypeId::of::<FusionCuda>() {
        let [w, g, m, v, f] = prims.map(|p| {
            downcast::<_, FusionTensor<FusionRt>>(p).expect("checked: B is the fusion CUDA backend")
        });
        launch_fusion(w, g, m, v, f, flag_index, check, scalars)
            .map(|t| downcast::<_, B::FloatTensorPrimitive>(t).expect("same type"))
    } else {
        let [w, g, m, v, f] = prims.map(|p| {
            downcast::<_, CubeTensor<CudaRuntime>>(p).expect("checked: B is the CUDA backend")
        });
        let out = launch_cube(w, g, m, v, f, flag_index, check, scalars);
        [out.weight, out.moment_1, out.moment_2, out.flags]
            .map(|t| downcast::<_, B::FloatTensorPrimitive>(t).expect("same type"))
    };
    Some(FusedOutput::from_primitives(outputs))
}
