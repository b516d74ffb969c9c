//! The fused step on burn's CUDA backend: the CubeCL kernels (one tensor per launch, and many
//! tensors per launch), their launch on `CubeBackend` tensors, and the custom operations that
//! queue them in burn's fusion stream.
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

use super::multi::{self, recast_inputs, recast_stepped, MultiInput, MultiOutput, Stepped};
use super::{downcast, FusedInputs, FusedOutput, StepScalars, MODE_PNORM, MODE_UNIFORM};

/// burn's CUDA backend without fusion (f32 floats, as `burn::backend::Cuda` with defaults).
type CubeCuda = CubeBackend<CudaRuntime, f32, i32, u8>;
/// burn's CUDA backend with fusion: `burn::backend::Cuda` with the `fusion` feature.
type FusionCuda = Fusion<CubeCuda>;
type FusionRt = <CubeCuda as FusionBackend>::FusionRuntime;
type FusionHandle = <FusionRt as FusionRuntime>::FusionHandle;

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

/// The multi-tensor kernel: the tensors of one launch (a group of at most
/// `multi::MAX_TENSORS_PER_LAUNCH`, their count fixed at compile time) as sequences of buffers,
/// one unit per line of `N` elements of the whole group (`N` = 4 for 128-bit accesses where the
/// group's lengths and buffers allow it, else 1; fixed at compile time). Unit `i` belongs to
/// tensor `t` when `starts[t] <= i < starts[t + 1]` (in lines); a sequence is indexed by
/// compile-time positions only, so an unrolled loop tests every tensor of the group and the
/// matching one does the step. The per-tensor constants are sequences of scalars; the decay
/// mode is a run-time value here (one launch mixes decayed and undecayed tensors), tested as the
/// per-tensor kernel tests it at compile time. `w_out`, `m_out`, `v_out` alias `w`, `m`, `v`
/// where the buffer may be written in place, else are new buffers.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn multi_adam_pwd_kernel<N: Size>(
    w: &Sequence<Array<Vector<f32, N>>>,
    g: &Sequence<Array<Vector<f32, N>>>,
    m: &Sequence<Array<Vector<f32, N>>>,
    v: &Sequence<Array<Vector<f32, N>>>,
    w_out: &mut Sequence<Array<Vector<f32, N>>>,
    m_out: &mut Sequence<Array<Vector<f32, N>>>,
    v_out: &mut Sequence<Array<Vector<f32, N>>>,
    flags: &mut Array<f32>,
    starts: Sequence<usize>,
    flag_index: Sequence<u32>,
    mode: Sequence<u32>,
    combined: Sequence<f32>,
    eps_scaled: Sequence<f32>,
    lr: Sequence<f32>,
    uniform_factor: Sequence<f32>,
    c: Sequence<f32>,
    p_minus_2: Sequence<f32>,
    base: Sequence<f32>,
    beta_1: f32,
    one_minus_beta_1: f32,
    beta_2: f32,
    one_minus_beta_2: f32,
    #[comptime] check: bool,
) {
    let i = ABSOLUTE_POS;
    let tensors = comptime![w.len()];
    #[unroll]
    for t in 0..tensors {
        let start = starts[t];
        if i >= start && i < starts[t + 1] {
            adam_pwd_element::<N>(
                i - start,
                w.index(t),
                g.index(t),
                m.index(t),
                v.index(t),
                w_out.index_mut(t),
                m_out.index_mut(t),
                v_out.index_mut(t),
                flags,
                flag_index[t] as usize,
                beta_1,
                one_minus_beta_1,
                beta_2,
                one_minus_beta_2,
                combined[t],
                eps_scaled[t],
                lr[t],
                mode[t],
                uniform_factor[t],
                c[t],
                p_minus_2[t],
                base[t],
                check,
            );
        }
    }
}

/// One line's step in the multi-tensor kernel: `adam_pwd_kernel`'s arithmetic, operation for
/// operation on each of the line's elements (CubeCL unrolls a line's arithmetic into the same
/// f32 operations per element; each scalar is broadcast to a line first), with the decay mode
/// tested at run time. Written out twice on purpose: the per-tensor kernel is this one's oracle
/// (`padam bench verify` compares their bits).
#[cube]
#[allow(clippy::too_many_arguments, clippy::collapsible_if)]
fn adam_pwd_element<N: Size>(
    i: usize,
    w: &Array<Vector<f32, N>>,
    g: &Array<Vector<f32, N>>,
    m: &Array<Vector<f32, N>>,
    v: &Array<Vector<f32, N>>,
    w_out: &mut Array<Vector<f32, N>>,
    m_out: &mut Array<Vector<f32, N>>,
    v_out: &mut Array<Vector<f32, N>>,
    flags: &mut Array<f32>,
    flag_index: usize,
    beta_1: f32,
    one_minus_beta_1: f32,
    beta_2: f32,
    one_minus_beta_2: f32,
    combined: f32,
    eps_scaled: f32,
    lr: f32,
    mode: u32,
    uniform_factor: f32,
    c: f32,
    p_minus_2: f32,
    base: f32,
    #[comptime] check: bool,
) {
    let gi = g[i];
    if comptime![check] {
        // Each element tested as the per-tensor kernel tests it: one NaN or inf sets the flag.
        #[unroll]
        for k in 0..gi.size() {
            let gk = gi[k];
            if f32::is_nan(gk) || f32::is_inf(gk) {
                flags[flag_index] = 1.0;
            }
        }
    }
    let m_new = m[i] * Vector::<f32, N>::new(beta_1) + gi * Vector::<f32, N>::new(one_minus_beta_1);
    let v_new =
        v[i] * Vector::<f32, N>::new(beta_2) + (gi * gi) * Vector::<f32, N>::new(one_minus_beta_2);
    let update = (m_new * Vector::<f32, N>::new(combined))
        / (Vector::<f32, N>::sqrt(v_new) + Vector::<f32, N>::new(eps_scaled));
    let w_old = w[i];
    let w_hat = w_old - update * Vector::<f32, N>::new(lr);
    let mut w_new = w_hat;
    if mode == MODE_UNIFORM {
        w_new = w_hat * Vector::<f32, N>::new(uniform_factor);
    }
    if mode == MODE_PNORM {
        let s = Vector::<f32, N>::powf(
            Vector::<f32, N>::abs(w_old),
            Vector::<f32, N>::new(p_minus_2),
        );
        w_new = w_hat / (s * Vector::<f32, N>::new(c) + Vector::<f32, N>::new(base));
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
    let mode = s.decay.mode.code();
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
            s.decay.uniform_factor,
            s.decay.c,
            s.decay.p_minus_2,
            s.decay.base,
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

/// One tensor of a multi-tensor step on `CubeBackend` tensors.
type CubeStep<R> = MultiInput<CubeTensor<R>>;

/// Whether `t`'s data start on a 16-byte boundary, as 128-bit accesses need: a buffer of
/// CubeCL's pools starts on 512 bytes, but a view (burn's `slice`) may start at an offset.
fn wide_aligned<R: CubeRuntime>(t: &CubeTensor<R>) -> bool {
    t.handle
        .offset_start
        .unwrap_or(0)
        .is_multiple_of(multi::WIDE_ALIGN)
}

/// The multi-tensor step on `CubeBackend` tensors: the tensors grouped as
/// `multi::plan_line_launches` says, one kernel launch per group. `flags` is updated in place
/// (copied first if another tensor shares it); each of `w', m', v'` is written over its input
/// where the optimizer holds the only reference to that buffer (see [`destination`]), else into
/// a new one.
fn launch_multi_cube<R: CubeRuntime>(
    tensors: Vec<CubeStep<R>>,
    flags: CubeTensor<R>,
    check: bool,
) -> Stepped<CubeTensor<R>> {
    let alloc = tracing::trace_span!("fused.alloc").entered();
    let flags = if flags.can_mut() { flags } else { flags.copy() };
    // Parameters and their gradients are contiguous: `into_contiguous` hands them back as they are.
    let tensors: Vec<CubeStep<R>> = tensors
        .into_iter()
        .map(|t| MultiInput {
            weight: into_contiguous(t.weight),
            grad: into_contiguous(t.grad),
            moment_1: into_contiguous(t.moment_1),
            moment_2: into_contiguous(t.moment_2),
            ..t
        })
        .collect();
    let lens: Vec<usize> = tensors
        .iter()
        .map(|t| t.weight.meta.shape().num_elements())
        .collect();
    // Outputs are these buffers (aliases) or new allocations, which start aligned.
    let aligned: Vec<bool> = (tensors.iter())
        .map(|t| {
            [&t.weight, &t.grad, &t.moment_1, &t.moment_2]
                .into_iter()
                .all(wide_aligned)
        })
        .collect();
    let plan = multi::plan_line_launches(&lens, &aligned);
    let count = tensors.len();
    let (launches, empty) = multi::split_by_plan(tensors, &plan);
    drop(alloc);
    let mut outputs: Vec<Option<MultiOutput<CubeTensor<R>>>> = (0..count).map(|_| None).collect();
    // An empty tensor's step changes nothing.
    for (index, t) in empty {
        outputs[index] = Some(MultiOutput {
            weight: t.weight,
            moment_1: t.moment_1,
            moment_2: t.moment_2,
        });
    }
    for (launch, group) in plan.iter().zip(launches) {
        for (index, out) in launch_group(group, launch.line_size, &flags, check) {
            outputs[index] = Some(out);
        }
    }
    let outputs = outputs
        .into_iter()
        .map(|o| o.expect("every tensor is in a launch or empty"))
        .collect();
    (outputs, flags)
}

/// One launch of the multi-tensor kernel over one group (tensors with their step positions),
/// in lines of `line_size` elements (every length of the group a multiple of it); the outputs
/// with the same positions.
fn launch_group<R: CubeRuntime>(
    group: Vec<(usize, CubeStep<R>)>,
    line_size: usize,
    flags: &CubeTensor<R>,
    check: bool,
) -> Vec<(usize, MultiOutput<CubeTensor<R>>)> {
    let alloc = tracing::trace_span!("fused.alloc").entered();
    let n = group.len();
    let client = flags.client.clone();
    let first = group[0].1.scalars;
    let lines: Vec<usize> = (group.iter())
        .map(|(_, t)| {
            let len = t.weight.meta.shape().num_elements();
            debug_assert!(len.is_multiple_of(line_size), "planned by line size");
            len / line_size
        })
        .collect();
    let starts = multi::starts(&lines);
    // Array arguments carry their lengths in elements (the launcher divides by the line size);
    // collected into `SequenceArg`s at the launch, whose type names the kernel's line size.
    let (mut w_in, mut g_in, mut m_in, mut v_in) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut w_out, mut m_out, mut v_out) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut starts_arg = SequenceArg::<R, usize>::new();
    let mut flag_index = SequenceArg::<R, u32>::new();
    let mut mode = SequenceArg::<R, u32>::new();
    let [mut combined, mut eps_scaled, mut lr, mut uniform_factor, mut c, mut p_minus_2, mut base] =
        std::array::from_fn(|_| SequenceArg::<R, f32>::new());
    for s in &starts {
        starts_arg.push(*s);
    }
    let mut outputs = Vec::with_capacity(n);
    for (t, (index, step)) in group.into_iter().enumerate() {
        let s = step.scalars;
        debug_assert!(
            (s.beta_1, s.one_minus_beta_1, s.beta_2, s.one_minus_beta_2)
                == (
                    first.beta_1,
                    first.one_minus_beta_1,
                    first.beta_2,
                    first.one_minus_beta_2
                ),
            "the tensors of one step share Adam's betas"
        );
        let [w_pos, m_pos, v_pos] = multi::input_positions(n, t);
        let (w_dest, m_dest, v_dest) = (
            destination(&step.weight, w_pos),
            destination(&step.moment_1, m_pos),
            destination(&step.moment_2, v_pos),
        );
        w_in.push(step.weight.into_array_arg());
        g_in.push(step.grad.into_array_arg());
        m_in.push(step.moment_1.into_array_arg());
        v_in.push(step.moment_2.into_array_arg());
        w_out.push(w_dest.arg);
        m_out.push(m_dest.arg);
        v_out.push(v_dest.arg);
        flag_index.push(u32::try_from(step.flag_index).expect("flag index fits u32"));
        mode.push(s.decay.mode.code());
        combined.push(s.combined);
        eps_scaled.push(s.eps_scaled);
        lr.push(s.lr);
        uniform_factor.push(s.decay.uniform_factor);
        c.push(s.decay.c);
        p_minus_2.push(s.decay.p_minus_2);
        base.push(s.decay.base);
        outputs.push((
            index,
            MultiOutput {
                weight: w_dest.tensor,
                moment_1: m_dest.tensor,
                moment_2: v_dest.tensor,
            },
        ));
    }
    let units = multi::lines(&starts);
    drop(alloc);
    let _launch = tracing::trace_span!("fused.launch").entered();
    let cube_dim = CubeDim::new(&client, units);
    let cube_count = calculate_cube_count_elemwise(&client, units, cube_dim);
    multi_adam_pwd_kernel::launch::<R>(
        &client,
        cube_count,
        cube_dim,
        line_size,
        w_in.into_iter().collect(),
        g_in.into_iter().collect(),
        m_in.into_iter().collect(),
        v_in.into_iter().collect(),
        w_out.into_iter().collect(),
        m_out.into_iter().collect(),
        v_out.into_iter().collect(),
        flags.clone().into_array_arg(),
        starts_arg,
        flag_index,
        mode,
        combined,
        eps_scaled,
        lr,
        uniform_factor,
        c,
        p_minus_2,
        base,
        first.beta_1,
        first.one_minus_beta_1,
        first.beta_2,
        first.one_minus_beta_2,
        check,
    );
    outputs
}

/// What each tensor of a multi-tensor operation needs besides its four input tensors.
#[derive(Debug, Clone, Copy)]
struct TensorStep {
    flag_index: usize,
    scalars: StepScalars,
}

/// The multi-tensor step of all tensors as one operation of burn's fusion stream. Inputs are
/// `w, g, m, v` per tensor, then the flags; outputs `w', m', v'` per tensor, then the flags.
/// An input that no other tensor references arrives with burn-fusion's read-write status, its
/// handle the only one (so the kernel may write over it).
#[derive(Debug)]
struct MultiAdamPwdOp {
    desc: CustomOpIr,
    tensors: Vec<TensorStep>,
    check: bool,
}

impl Operation<FusionRt> for MultiAdamPwdOp {
    fn execute(&self, handles: &mut HandleContainer<FusionHandle>) {
        let _execute = tracing::trace_span!("fused.execute").entered();
        let (inputs, outputs) = (&self.desc.inputs, &self.desc.outputs);
        let n = self.tensors.len();
        let mut get = |ir: &TensorIr| handles.get_float_tensor::<CubeCuda>(ir);
        let steps: Vec<_> = (self.tensors.iter().enumerate())
            .map(|(k, t)| MultiInput {
                weight: get(&inputs[4 * k]),
                grad: get(&inputs[4 * k + 1]),
                moment_1: get(&inputs[4 * k + 2]),
                moment_2: get(&inputs[4 * k + 3]),
                flag_index: t.flag_index,
                scalars: t.scalars,
            })
            .collect();
        let flags = get(&inputs[4 * n]);
        let (outs, flags) = launch_multi_cube(steps, flags, self.check);
        for (k, out) in outs.into_iter().enumerate() {
            handles.register_float_tensor::<CubeCuda>(&outputs[3 * k].id, out.weight);
            handles.register_float_tensor::<CubeCuda>(&outputs[3 * k + 1].id, out.moment_1);
            handles.register_float_tensor::<CubeCuda>(&outputs[3 * k + 2].id, out.moment_2);
        }
        handles.register_float_tensor::<CubeCuda>(&outputs[3 * n].id, flags);
    }
}

/// Queue the multi-tensor step of `tensors` as one operation.
fn launch_multi_fusion(
    tensors: Vec<MultiInput<FusionTensor<FusionRt>>>,
    flags: FusionTensor<FusionRt>,
    check: bool,
) -> Stepped<FusionTensor<FusionRt>> {
    let _queue = tracing::trace_span!("fused.queue").entered();
    let client = flags.client.clone();
    let streams = OperationStreams::with_inputs(
        (tensors.iter())
            .flat_map(|t| [&t.weight, &t.grad, &t.moment_1, &t.moment_2])
            .chain([&flags]),
    );
    let out =
        |shape: &Shape| TensorIr::uninit(client.create_empty_handle(), shape.clone(), DType::F32);
    let mut outputs = Vec::with_capacity(3 * tensors.len() + 1);
    let mut inputs = Vec::with_capacity(4 * tensors.len() + 1);
    let mut steps = Vec::with_capacity(tensors.len());
    for t in tensors {
        let shape = t.weight.shape.clone();
        outputs.extend([out(&shape), out(&shape), out(&shape)]);
        inputs.extend([
            t.weight.into_ir(),
            t.grad.into_ir(),
            t.moment_1.into_ir(),
            t.moment_2.into_ir(),
        ]);
        steps.push(TensorStep {
            flag_index: t.flag_index,
            scalars: t.scalars,
        });
    }
    outputs.push(out(&flags.shape));
    inputs.push(flags.into_ir());
    let desc = CustomOpIr::new("padam_multi_adam_pwd_step", &inputs, &outputs);
    let op = MultiAdamPwdOp {
        desc: desc.clone(),
        tensors: steps,
        check,
    };
    let mut results = client.register(streams, OperationIr::Custom(desc), op);
    let flags = results.pop().expect("the flags are the last output");
    let mut results = results.into_iter();
    let per_tensor = std::iter::from_fn(|| {
        Some(MultiOutput {
            weight: results.next()?,
            moment_1: results.next()?,
            moment_2: results.next()?,
        })
    })
    .collect();
    (per_tensor, flags)
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

/// The multi-tensor step of `inputs` on `B`, which must be one of the CUDA backends: one
/// operation in the fusion stream (or, without fusion, the launches at once).
pub(super) fn steps<B: Backend>(
    inputs: Vec<MultiInput<B::FloatTensorPrimitive>>,
    flags: B::FloatTensorPrimitive,
    check: bool,
) -> Stepped<B::FloatTensorPrimitive> {
    if TypeId::of::<B>() == TypeId::of::<FusionCuda>() {
        type T = FusionTensor<FusionRt>;
        let flags = downcast::<_, T>(flags).expect("checked: B is the fusion CUDA backend");
        recast_stepped(launch_multi_fusion(
            recast_inputs::<_, T>(inputs),
            flags,
            check,
        ))
    } else {
        type T = CubeTensor<CudaRuntime>;
        let flags = downcast::<_, T>(flags).expect("checked: B is the CUDA backend");
        recast_stepped(launch_multi_cube(
            recast_inputs::<_, T>(inputs),
            flags,
            check,
        ))
    }
}
