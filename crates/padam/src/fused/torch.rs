//! The fused step on burn's LibTorch backend (`LibTorch<f32>`): the tensors of a step that
//! share their constants (decayed matrices, undecayed biases, ...) are concatenated into one
//! flat buffer per quantity, stepped by PyTorch's fused Adam (`at::_fused_adam_`, through
//! `csrc/torch_step.cpp`, since tch does not expose it) and pWD's finish as tensor ops, and
//! handed back as views of the results (the tensors that came in, where they were stepped in
//! place). A decayed group takes seven launches, where the tensor path takes about fifteen per
//! tensor and PyTorch's per-launch host cost (a few µs) sets the speed. The next step finds its
//! weights and moments already laid out in those buffers and steps them in place
//! ([`flat_view`]); only the gradients are concatenated anew. On a GPU, with
//! `PADAM_TCH_KERNEL=1` (until it has been measured there), a group is instead one launch of
//! padam's own kernel ([`torch_cuda`]: Adam, the finish and the non-finite marks in one pass,
//! with `adam_pwd_element`'s arithmetic); the PyTorch ops stay as its fallback and as the CPU's
//! step.
//!
//! The formulas are those of the module docs of `fused`, in f32, but PyTorch rounds Adam its own
//! way (`sqrt(v) / sqrt(1 - b2^t) + eps` where burn divides by `sqrt(1 - b2^t)` under the root,
//! the bias corrections in double), so this path agrees with the tensor path to f32 rounding,
//! not to the bit; `padam bench verify --backend tch` holds it to the float64 reference. Where
//! `w = 0` and `p < 2`, `|0|^(p-2) = +inf` makes the denominator `+inf` and the weight stays
//! exactly 0, as in the other implementations.

use std::any::TypeId;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_char;

use burn::backend::libtorch::{LibTorch, TchTensor};
use burn::tensor::backend::Backend;
use tch::Tensor;

use super::multi::{recast_inputs, recast_stepped, MultiInput, MultiOutput, Stepped};
use super::torch_cuda;
use super::{downcast, DecayMode, FusedInputs, FusedOutput, StepScalars};

type Torch = LibTorch<f32>;

/// True when `B` is burn's LibTorch backend with f32 floats.
pub(super) fn is_tch<B: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<Torch>()
}

/// One tensor's step: [`steps`] of one input.
pub(super) fn step<B: Backend, const D: usize>(
    inputs: FusedInputs<B, D>,
    flag_index: usize,
    check: bool,
    scalars: &StepScalars,
) -> Option<FusedOutput<B, D>> {
    let [weight, grad, moment_1, moment_2, flags] = inputs.into_primitives();
    let input = MultiInput {
        weight,
        grad,
        moment_1,
        moment_2,
        flag_index,
        scalars: *scalars,
    };
    let (mut outs, flags) = steps::<B>(vec![input], flags, check);
    let out = outs.pop()?;
    Some(FusedOutput::from_primitives([
        out.weight,
        out.moment_1,
        out.moment_2,
        flags,
    ]))
}

/// The step of every tensor of `inputs` on `B`, which must be [`Torch`].
pub(super) fn steps<B: Backend>(
    inputs: Vec<MultiInput<B::FloatTensorPrimitive>>,
    flags: B::FloatTensorPrimitive,
    check: bool,
) -> Stepped<B::FloatTensorPrimitive> {
    let flags = downcast::<_, TchTensor>(flags).expect("checked: B is the LibTorch backend");
    recast_stepped(steps_tch(
        recast_inputs::<_, TchTensor>(inputs),
        flags,
        check,
    ))
}

fn steps_tch(
    inputs: Vec<MultiInput<TchTensor>>,
    mut flags: TchTensor,
    check: bool,
) -> Stepped<TchTensor> {
    let mut outputs: Vec<Option<MultiOutput<TchTensor>>> = inputs.iter().map(|_| None).collect();
    // Groups of tensors with the same constants, in step order.
    let mut groups: Vec<(StepScalars, Vec<usize>)> = Vec::new();
    for (i, input) in inputs.iter().enumerate() {
        match groups.iter_mut().find(|(s, _)| *s == input.scalars) {
            Some((_, members)) => members.push(i),
            None => groups.push((input.scalars, vec![i])),
        }
    }
    let mut inputs: Vec<Option<MultiInput<TchTensor>>> = inputs.into_iter().map(Some).collect();
    for (scalars, members) in groups {
        let group: Vec<MultiInput<TchTensor>> = (members.iter())
            .map(|&i| inputs[i].take().expect("each tensor is in one group"))
            .collect();
        let lens: Vec<i64> = group
            .iter()
            .map(|i| i.weight.tensor.numel() as i64)
            .collect();
        let concatenated = |pick: fn(&MultiInput<TchTensor>) -> &TchTensor| {
            let parts: Vec<Tensor> = group.iter().map(|i| pick(i).tensor.reshape([-1])).collect();
            // A copy even of a single tensor: the ops below write in place.
            Tensor::cat(&parts, 0)
        };
        // The flat buffer, and whether it is the parts' own memory (stepped in place).
        let flat = |pick: fn(&MultiInput<TchTensor>) -> &TchTensor| {
            let parts: Vec<&TchTensor> = group.iter().map(pick).collect();
            match flat_view(&parts, &lens) {
                Some(view) => (view, true),
                None => (concatenated(pick), false),
            }
        };
        let g = concatenated(|i| &i.grad);
        let ((w, w_in_place), (m, m_in_place), (v, v_in_place)) = (
            flat(|i| &i.weight),
            flat(|i| &i.moment_1),
            flat(|i| &i.moment_2),
        );
        // The flag positions, which only a checked step needs.
        let indices: Vec<i64> = match check {
            true => group.iter().map(|i| i.flag_index as i64).collect(),
            false => Vec::new(),
        };
        let (w, m, v) = if g.device().is_cuda()
            && torch_cuda::enabled()
            && kernel_step(
                &w,
                &g,
                &m,
                &v,
                &scalars,
                check.then_some((&mut flags, lens.as_slice(), indices.as_slice())),
            ) {
            (w, m, v)
        } else {
            if check {
                flags = TchTensor::new(mark_non_finite(&flags.tensor, &g, &lens, &indices));
            }
            update(w, &g, m, v, &scalars)
        };
        for (flat, in_place, first) in [
            (&w, w_in_place, &group[0].weight),
            (&m, m_in_place, &group[0].moment_1),
            (&v, v_in_place, &group[0].moment_2),
        ] {
            debug_assert!(
                !in_place || flat.data_ptr() == first.tensor.data_ptr(),
                "a buffer stepped in place is still its parts' memory"
            );
        }
        // A buffer stepped in place already holds the results in its parts: they are handed
        // back as they came (no new views, the step's steady state). Any other comes back as
        // views of the new buffer, each owning its part, which nothing else references.
        let parts = |t: Tensor, in_place: bool| {
            (!in_place).then(|| t.split_with_sizes(lens.as_slice(), 0).into_iter())
        };
        let (mut w_parts, mut m_parts, mut v_parts) = (
            parts(w, w_in_place),
            parts(m, m_in_place),
            parts(v, v_in_place),
        );
        for (input, &member) in group.into_iter().zip(&members) {
            let shape = input.weight.tensor.size();
            let out = |given: TchTensor, rest: &mut Option<std::vec::IntoIter<Tensor>>| match rest {
                Some(rest) => {
                    let part = rest.next().expect("one part per tensor");
                    TchTensor::new(part.view(shape.as_slice()))
                }
                None => given,
            };
            outputs[member] = Some(MultiOutput {
                weight: out(input.weight, &mut w_parts),
                moment_1: out(input.moment_1, &mut m_parts),
                moment_2: out(input.moment_2, &mut v_parts),
            });
        }
    }
    let outputs = outputs
        .into_iter()
        .map(|o| o.expect("every tensor is in one group"))
        .collect();
    (outputs, flags)
}

/// The step of one group on the GPU by our own kernel ([`torch_cuda`]), in place: `true` when it
/// ran. With `check`, the flags (made the step's own first: a deferred check's window may hold
/// them) are marked where a tensor's gradient holds NaN or inf. `false` (one warning) where the
/// kernel cannot run, and the caller steps as on the CPU.
fn kernel_step(
    w: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    s: &StepScalars,
    check: Option<(&mut TchTensor, &[i64], &[i64])>,
) -> bool {
    let result = match check {
        None => torch_cuda::adam_pwd(w, g, m, v, s, None),
        Some((flags, lens, indices)) => {
            if !flags.storage.can_mut() {
                *flags = TchTensor::new(flags.tensor.copy());
            }
            let (positions, ends) = group_tables(indices, lens, g.device());
            let marks = torch_cuda::Marks {
                flags: &flags.tensor,
                seg_ends: &ends,
                flag_index: &positions,
                lens,
                indices,
            };
            torch_cuda::adam_pwd(w, g, m, v, s, Some(marks))
        }
    };
    if let Err(e) = &result {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!("padam's CUDA step kernel did not run ({e}); stepping with PyTorch's fused Adam and ops")
        });
    }
    result.is_ok()
}

/// The flat buffer that `parts` (of lengths `lens`) already lie in, one after another, as a
/// view to step in place; `None` unless that is safe, and then the caller concatenates.
///
/// The outputs of the last step are views of its buffers, so in a training loop the step's
/// inputs are those views, and a concatenation would copy every weight and moment only to
/// overwrite them (on a ResNet18 step, 0.65 ms of an H100's 10 ms went to it). In place is safe
/// when burn holds no other reference to any part (`can_mut`: a deferred check's snapshot, or a
/// per-step check's copy of the module, holds one) and the parts are contiguous and adjacent in
/// one allocation, which `as_strided` checks against the first part's storage.
fn flat_view(parts: &[&TchTensor], lens: &[i64]) -> Option<Tensor> {
    let first = &parts.first()?.tensor;
    let base = first.data_ptr() as usize;
    let mut offset = 0usize;
    for (part, &len) in parts.iter().zip(lens) {
        let t = &part.tensor;
        let adjacent = t.data_ptr() as usize == base + offset * std::mem::size_of::<f32>();
        if len == 0 || !part.storage.can_mut() || !t.is_contiguous() || !adjacent {
            return None;
        }
        offset += len as usize;
    }
    // Fails (out of bounds) unless the first part's storage holds all of them.
    first.f_as_strided([offset as i64], [1], None).ok()
}

/// Adam then pWD on flat `w, g, m, v` (which this function owns): `w', m', v'`.
///
/// Adam is PyTorch's fused kernel (one launch where the ops took eleven); pWD's finish is the
/// tensor ops after it, with `|w|` of the weight before the step.
fn update(
    mut w: Tensor,
    g: &Tensor,
    mut m: Tensor,
    mut v: Tensor,
    s: &StepScalars,
) -> (Tensor, Tensor, Tensor) {
    let f = |x: f32| x as f64;
    // w' = w_hat / (|w|^(p-2) c + base)
    let denominator = (s.decay.mode == DecayMode::PNorm).then(|| {
        let mut d = w.abs();
        let _ = d.pow_(f(s.decay.p_minus_2));
        let _ = d.g_mul_scalar_(f(s.decay.c));
        let _ = d.g_add_scalar_(f(s.decay.base));
        d
    });
    if let Err(e) = fused_adam(&mut w, g, &mut m, &mut v, s) {
        // It refuses before it writes anything (its checks come first): the ops can still step.
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!("PyTorch's fused Adam refused the step ({e}); Adam runs as tensor ops")
        });
        adam_ops(&mut w, g, &mut m, &mut v, s);
    }
    match s.decay.mode {
        DecayMode::None => {}
        DecayMode::Uniform => {
            let _ = w.g_mul_scalar_(f(s.decay.uniform_factor));
        }
        DecayMode::PNorm => {
            let _ = w.g_div_(&denominator.expect("computed for PNorm"));
        }
    }
    (w, m, v)
}

/// Adam as eleven PyTorch ops, burn's arithmetic (`(m' k) / (sqrt(v') + eps sqrt(bc2))`): the
/// fallback where PyTorch's fused Adam refuses, and its oracle in the tests.
fn adam_ops(w: &mut Tensor, g: &Tensor, m: &mut Tensor, v: &mut Tensor, s: &StepScalars) {
    let f = |x: f32| x as f64;
    // m' = m b1 + g (1 - b1);  v' = v b2 + g g (1 - b2)
    let _ = m.g_mul_scalar_(f(s.beta_1));
    let _ = m.g_add_(&(g * f(s.one_minus_beta_1)));
    let _ = v.g_mul_scalar_(f(s.beta_2));
    let _ = v.addcmul_(g, &(g * f(s.one_minus_beta_2)));
    // w_hat = w - lr (m' k) / (sqrt(v') + eps sqrt(bc2))
    let mut denom = v.sqrt();
    let _ = denom.g_add_scalar_(f(s.eps_scaled));
    let mut step = &*m * f(s.combined);
    let _ = step.g_mul_scalar_(f(s.lr));
    let _ = step.g_div_(&denom);
    let _ = w.g_sub_(&step);
}

extern "C" {
    /// `csrc/torch_step.cpp`.
    fn padam_fused_adam(
        param: *mut torch_sys::C_tensor,
        grad: *mut torch_sys::C_tensor,
        exp_avg: *mut torch_sys::C_tensor,
        exp_avg_sq: *mut torch_sys::C_tensor,
        step: *mut torch_sys::C_tensor,
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
    ) -> *mut c_char;
    /// The sum of |x| over each of the `n` consecutive segments of `flat` (lengths `lens`),
    /// as a new tensor in `out`; `csrc/torch_step.cpp`.
    fn padam_segment_abs_sums(
        flat: *mut torch_sys::C_tensor,
        lens: *const i64,
        n: i64,
        out: *mut *mut torch_sys::C_tensor,
    ) -> *mut c_char;
    fn padam_step_free_message(message: *mut c_char);
}

thread_local! {
    /// One float per device holding Adam's step number for PyTorch's fused Adam, which reads it
    /// from the device, and the number it holds: filled by a launch when the number changes (a
    /// copy from the host would wait for the GPU), so the groups of one step share one fill.
    static STEP: RefCell<HashMap<tch::Device, (Tensor, u32)>> = RefCell::new(HashMap::new());
}

/// PyTorch's fused Adam (no weight decay) on `w`, `m`, `v` in place, at the step and with the
/// constants of `s`.
fn fused_adam(
    w: &mut Tensor,
    g: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    s: &StepScalars,
) -> Result<(), String> {
    let step = STEP.with(|cache| {
        let mut cache = cache.borrow_mut();
        let device = w.device();
        let (step, holds) = cache
            .entry(device)
            .or_insert_with(|| (Tensor::zeros([1], (tch::Kind::Float, device)), 0));
        if *holds != s.time {
            // Ordered on the device after every launch that read the number before.
            let _ = step.fill_(f64::from(s.time));
            *holds = s.time;
        }
        step.shallow_clone()
    });
    let ptr = |t: &Tensor| t.as_ptr() as *mut torch_sys::C_tensor;
    let f = |x: f32| x as f64;
    // SAFETY: every pointer is a live tch tensor (an `at::Tensor*`) for the duration of the
    // call; `w`, `m`, `v` are borrowed mutably, as the kernel writes them. A message is a
    // `strdup` that `padam_step_free_message` frees.
    unsafe {
        let message = padam_fused_adam(
            ptr(w),
            ptr(g),
            ptr(m),
            ptr(v),
            ptr(&step),
            f(s.lr),
            f(s.beta_1),
            f(s.beta_2),
            f(s.epsilon),
        );
        shim_result(message)
    }
}

/// `Ok` for a null message from the shim, else the message as `Err` (its copy freed).
///
/// # Safety
/// `message` is null or a string the shim returned, not yet freed.
unsafe fn shim_result(message: *mut c_char) -> Result<(), String> {
    if message.is_null() {
        return Ok(());
    }
    let text = std::ffi::CStr::from_ptr(message)
        .to_string_lossy()
        .into_owned();
    padam_step_free_message(message);
    Err(text)
}

/// A group's tables on one device: its tensors' lengths, and as i64 tensors there its flag
/// positions and the ends of its tensors in the flat gradient.
struct GroupTables {
    lens: Vec<i64>,
    positions: Tensor,
    ends: Tensor,
}

/// The tables of each group seen, by device and flag positions (which name the group's
/// tensors): the same every step, and copying them to the GPU each step would wait for it.
type TableCache = HashMap<tch::Device, HashMap<Vec<i64>, GroupTables>>;

thread_local! {
    static TABLES: RefCell<TableCache> = RefCell::new(HashMap::new());
}

/// The flag positions `indices` and the ends of the segments of lengths `lens` (their running
/// sums), as i64 tensors on `device`, made once per group.
fn group_tables(indices: &[i64], lens: &[i64], device: tch::Device) -> (Tensor, Tensor) {
    TABLES.with(|cache| {
        let mut cache = cache.borrow_mut();
        let groups = cache.entry(device).or_default();
        if let Some(t) = groups.get(indices).filter(|t| t.lens == lens) {
            return (t.positions.shallow_clone(), t.ends.shallow_clone());
        }
        let ends: Vec<i64> = (lens.iter())
            .scan(0, |end, &len| {
                *end += len;
                Some(*end)
            })
            .collect();
        let tables = GroupTables {
            lens: lens.to_vec(),
            positions: Tensor::from_slice(indices).to_device(device),
            ends: Tensor::from_slice(&ends).to_device(device),
        };
        let out = (
            tables.positions.shallow_clone(),
            tables.ends.shallow_clone(),
        );
        groups.insert(indices.to_vec(), tables);
        out
    })
}

/// `flags` with entry `indices[k]` made non-zero (NaN) where segment `k` of `g` (of length
/// `lens[k]`) holds a NaN or inf, without reading anything back.
///
/// `g * 0` is 0 where `g` is finite and NaN where it is not, so each segment's sum of |x| is 0
/// or NaN, and adding it to the flags marks them. A sum of `g` itself could overflow to inf on
/// finite gradients. Four launches per group (the segment sums are one multi-tensor reduction on
/// CUDA); the Fashion CNN's step is bound by the host's launches.
fn mark_non_finite(flags: &Tensor, g: &Tensor, lens: &[i64], indices: &[i64]) -> Tensor {
    let (positions, _) = group_tables(indices, lens, g.device());
    let poisoned = g * 0.0;
    let per_tensor = segment_abs_sums(&poisoned, lens).unwrap_or_else(|e| {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!("PyTorch's multi-tensor sums refused ({e}); summing each tensor alone")
        });
        let mut offset = 0;
        let sums: Vec<Tensor> = (lens.iter())
            .map(|&len| {
                let part = poisoned.narrow(0, offset, len).abs().sum(tch::Kind::Float);
                offset += len;
                part
            })
            .collect();
        Tensor::stack(&sums, 0)
    });
    // A new tensor: the flags of a deferred check's window may be shared.
    flags.index_add(0, &positions, &per_tensor)
}

/// The sum of |x| over each consecutive segment of the 1-D `flat` (lengths `lens`, which add up
/// to its length): PyTorch's `_foreach_norm` with order 1 over views of `flat`.
fn segment_abs_sums(flat: &Tensor, lens: &[i64]) -> Result<Tensor, String> {
    debug_assert_eq!(lens.iter().sum::<i64>(), flat.numel() as i64);
    let mut out: *mut torch_sys::C_tensor = std::ptr::null_mut();
    // SAFETY: `flat` is a live tch tensor and `lens` a live slice of `n` lengths for the duration
    // of the call; on success `out` holds a new `at::Tensor*` that `Tensor::from_ptr` takes
    // ownership of (tch frees it). A message is a `strdup` that `padam_step_free_message` frees.
    unsafe {
        let message = padam_segment_abs_sums(
            flat.as_ptr() as *mut torch_sys::C_tensor,
            lens.as_ptr(),
            lens.len() as i64,
            &mut out,
        );
        shim_result(message).map(|()| Tensor::from_ptr(out))
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind};

    use super::super::AdamHyper;
    use super::*;
    use crate::decay::DecayStep;

    const SHAPES: [&[i64]; 3] = [&[2, 3], &[4], &[3, 1]];

    fn scalars(time: usize) -> StepScalars {
        let hyper = AdamHyper {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-8,
        };
        let decay = DecayStep {
            lr: 1e-2,
            p: 0.8,
            lambda: 0.1,
            lambda2: 0.0,
        };
        StepScalars::new(&hyper, time, 1e-2, Some(&decay)).unwrap()
    }

    fn tensor(shape: &[i64], seed: f32) -> TchTensor {
        let n: i64 = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|i| ((i as f32 + seed) * 0.37).sin()).collect();
        TchTensor::new(Tensor::from_slice(&values).reshape(shape))
    }

    /// Step `time` of `(w, m, v)` per tensor, with fixed gradients.
    fn step(state: Vec<[TchTensor; 3]>, time: usize) -> Vec<[TchTensor; 3]> {
        let inputs = (state.into_iter().enumerate())
            .map(|(k, [w, m, v])| MultiInput {
                grad: tensor(&w.tensor.size(), 10.0 * time as f32 + k as f32),
                weight: w,
                moment_1: m,
                moment_2: v,
                flag_index: k,
                scalars: scalars(time),
            })
            .collect();
        let flags = TchTensor::new(Tensor::zeros([3], (Kind::Float, Device::Cpu)));
        let (outputs, _) = steps_tch(inputs, flags, false);
        (outputs.into_iter())
            .map(|o| [o.weight, o.moment_1, o.moment_2])
            .collect()
    }

    fn first_step() -> Vec<[TchTensor; 3]> {
        let zeros = |s: &[i64]| TchTensor::new(Tensor::zeros(s, (Kind::Float, Device::Cpu)));
        let state = (SHAPES.iter().enumerate())
            .map(|(k, s)| [tensor(s, k as f32), zeros(s), zeros(s)])
            .collect();
        step(state, 1)
    }

    /// The same values in tensors of their own.
    fn copied(state: &[[TchTensor; 3]]) -> Vec<[TchTensor; 3]> {
        (state.iter())
            .map(|q| q.each_ref().map(|t| TchTensor::new(t.tensor.copy())))
            .collect()
    }

    fn pointers(state: &[[TchTensor; 3]]) -> Vec<[usize; 3]> {
        (state.iter())
            .map(|q| q.each_ref().map(|t| t.tensor.data_ptr() as usize))
            .collect()
    }

    fn assert_same_values(a: &[[TchTensor; 3]], b: &[[TchTensor; 3]]) {
        for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
            assert!(x.tensor.equal(&y.tensor), "{} vs {}", x.tensor, y.tensor);
        }
    }

    #[test]
    fn a_second_step_runs_in_the_first_steps_buffers_with_the_values_of_a_fresh_one() {
        let first = first_step();
        let buffers = pointers(&first);
        let fresh = step(copied(&first), 2);
        let in_place = step(first, 2);
        assert_eq!(pointers(&in_place), buffers, "stepped in place");
        assert!(pointers(&fresh)
            .iter()
            .flatten()
            .all(|p| !buffers[0].contains(p)));
        assert_same_values(&in_place, &fresh);
    }

    /// The flags of exactly the tensors whose gradients hold a NaN or inf are marked, at their
    /// positions, including a tensor next to a marked one and a finite tensor whose plain sum
    /// overflows to inf.
    #[test]
    fn non_finite_segments_and_only_those_are_marked() {
        let g = Tensor::from_slice(&[
            1.0f32,
            f32::NAN, // tensor 0
            3.0,
            3e38,
            3e38,
            -3e38,         // tensor 1: finite, its sum of |g| is inf
            f32::INFINITY, // tensor 2
            0.0,
            -2.0, // tensor 3
        ]);
        let flags = Tensor::zeros([6], (Kind::Float, Device::Cpu));
        let marked = mark_non_finite(&flags, &g, &[2, 4, 1, 2], &[5, 0, 2, 3]);
        let marked: Vec<f32> = Vec::try_from(marked).unwrap();
        let set: Vec<bool> = marked.iter().map(|f| *f != 0.0).collect();
        assert_eq!(set, [false, false, true, false, false, true], "{marked:?}");
        assert!(
            flags.equal(&Tensor::zeros([6], (Kind::Float, Device::Cpu))),
            "a new tensor"
        );
    }

    #[test]
    fn group_tables_hold_the_positions_and_running_ends_once_per_group() {
        let (positions, ends) = group_tables(&[4, 0, 7], &[2, 1, 3], Device::Cpu);
        assert_eq!(Vec::<i64>::try_from(&positions).unwrap(), [4, 0, 7]);
        assert_eq!(Vec::<i64>::try_from(&ends).unwrap(), [2, 3, 6]);
        let (again, _) = group_tables(&[4, 0, 7], &[2, 1, 3], Device::Cpu);
        assert_eq!(again.data_ptr(), positions.data_ptr(), "made once");
        let (_, other) = group_tables(&[4, 0, 7], &[3, 1, 2], Device::Cpu);
        assert_eq!(Vec::<i64>::try_from(&other).unwrap(), [3, 4, 6]);
    }

    #[test]
    fn segment_sums_add_each_segments_magnitudes() {
        let x = Tensor::from_slice(&[1.0f32, -2.0, 3.0, -0.5, 0.25, 4.0]);
        let sums: Vec<f32> = Vec::try_from(segment_abs_sums(&x, &[2, 1, 3]).unwrap()).unwrap();
        assert_eq!(sums, [3.0, 3.0, 4.75]);
    }

    /// PyTorch's fused Adam against burn's arithmetic as ops, over ten steps: the same to f32
    /// rounding (they differ only in where the bias corrections are applied, and in what
    /// precision).
    #[test]
    fn fused_adam_equals_the_ops_to_f32_rounding() {
        let zeros = || Tensor::zeros([257], (Kind::Float, Device::Cpu));
        let mut fused = [tensor(&[257], 0.5).tensor, zeros(), zeros()];
        let [mut w, mut m, mut v] = fused.each_ref().map(|t| t.copy());
        for time in 1..=10 {
            let g = tensor(&[257], 3.0 * time as f32).tensor;
            let s = scalars(time);
            let [fw, fm, fv] = &mut fused;
            fused_adam(fw, &g, fm, fv, &s).unwrap();
            adam_ops(&mut w, &g, &mut m, &mut v, &s);
        }
        for (a, b) in fused.iter().zip([&w, &m, &v]) {
            let scale = b.abs().max().double_value(&[]);
            let diff = (a - b).abs().max().double_value(&[]);
            assert!(diff <= 1e-6 * scale, "{diff} of {scale}");
        }
    }

    #[test]
    fn a_tensor_burn_still_holds_elsewhere_is_never_written() {
        let first = first_step();
        // A deferred check's snapshot holds the weights like this (burn's reference count).
        let held = first[1][0].clone();
        let before = held.tensor.copy();
        let fresh = step(copied(&first), 2);
        let stepped = step(first, 2);
        assert!(
            held.tensor.equal(&before),
            "the held weight was overwritten"
        );
        assert_ne!(stepped[1][0].tensor.data_ptr(), held.tensor.data_ptr());
        assert_same_values(&stepped, &fresh);
    }
}
