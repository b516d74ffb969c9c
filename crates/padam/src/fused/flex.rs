//! The fused step on burn's CPU backend (`burn::backend::Flex`, f32): one pass over each
//! tensor's buffers, in place where the optimizer holds the only reference.
//!
//! On the tensor path a PAdam step is about fifteen passes over the weights on the CPU (burn's
//! Adam, then `|w|^(p-2)`, the product, the sum and the division of the decay, and a sum for the
//! non-finite check); here each element is read and written once, with the same f32 operations
//! in the same order as the tensor path (see the module docs of `fused`), so the two agree to
//! the last bit (`tests/fused_cpu.rs` holds them bit-equal, and both to the float64
//! reference).

use std::any::TypeId;

use burn::backend::Flex;
use burn::tensor::{backend::Backend, DType};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::{downcast, DecayMode, FusedInputs, FusedOutput, StepScalars};

/// True when `B` is burn's CPU backend with f32 floats.
pub(super) fn is_flex<B: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<Flex>()
}

/// `t` with contiguous elements: `t` itself when they are, else a contiguous copy. (A buffer
/// another tensor shares, such as the weights a per-step check keeps to hand back, is copied
/// later, on write, by [`elements_mut`].)
fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.layout().contiguous_offsets().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

/// The elements of a contiguous tensor, for writing in place (copying the buffer first if
/// another tensor shares it).
fn elements_mut(t: &mut FlexTensor) -> &mut [f32] {
    let (start, end) = t
        .layout()
        .contiguous_offsets()
        .expect("made contiguous by `contiguous`");
    &mut t.storage_mut::<f32>()[start..end]
}

/// Elements per task when a tensor's update is split across threads: large enough that a
/// task's work (~4 ns per element, most of it the `powf` of the pWD factor) dwarfs rayon's
/// hand-off, small enough to spread a 100k-element tensor over the cores.
const CHUNK: usize = 16 * 1024;

/// The fused Adam + pWD update of one tensor, in place: `m, v` become the new moments and `w`
/// the new weights, with exactly the tensor path's f32 operations (the formulas are in the
/// module docs of `fused`), split across rayon's threads in chunks of [`CHUNK`] elements.
/// Returns true when `g` holds a NaN or inf.
fn update(w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: &StepScalars) -> bool {
    w.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .map(|(((w, g), m), v)| update_chunk(w, g, m, v, s))
        .reduce(|| false, |a, b| a | b)
}

/// Elements [`update_chunk`] takes at a time: its scratch buffers stay in L1 cache.
const BLOCK: usize = 256;

/// [`update`] on one chunk, [`BLOCK`] elements at a time in three loops: Adam (no calls, so
/// the compiler vectorises it), `|w|^(p-2)` for pWD (a `powf` per non-zero weight: most of
/// the step's time, and in a sparse network most weights are exactly 0), and the decay's
/// division or factor (vectorised). Returns true when the chunk's `g` holds a NaN or inf.
fn update_chunk(w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: &StepScalars) -> bool {
    let mut non_finite = false;
    let (mut w_hat, mut powers, mut positions) = ([0f32; BLOCK], [0f32; BLOCK], [0u16; BLOCK]);
    // |0|^(p-2), the same value `powf` gives there: +inf for p < 2, so the denominator is +inf
    // and a zero weight stays exactly 0.
    let at_zero = flex_pow(0.0, s.p_minus_2);
    let blocks = w
        .chunks_mut(BLOCK)
        .zip(g.chunks(BLOCK))
        .zip(m.chunks_mut(BLOCK))
        .zip(v.chunks_mut(BLOCK));
    for (((w, g), m), v) in blocks {
        let n = w.len();
        let (w_hat, powers) = (&mut w_hat[..n], &mut powers[..n]);
        let adam = w_hat.iter_mut().zip(&*w).zip(g).zip(m).zip(v);
        for ((((w_hat, &w), &g), m), v) in adam {
            non_finite |= !g.is_finite();
            let m_new = *m * s.beta_1 + g * s.one_minus_beta_1;
            let v_new = *v * s.beta_2 + (g * g) * s.one_minus_beta_2;
            let update = (m_new * s.combined) / (v_new.sqrt() + s.eps_scaled);
            *w_hat = w - update * s.lr;
            *m = m_new;
            *v = v_new;
        }
        match s.mode {
            DecayMode::None => w.copy_from_slice(w_hat),
            DecayMode::Uniform => {
                for (w, &w_hat) in w.iter_mut().zip(&*w_hat) {
                    *w = w_hat * s.uniform_factor;
                }
            }
            DecayMode::PNorm => {
                // The non-zero weights' positions first (no branch), then `powf` on those only.
                let mut nonzero = 0;
                for (i, &w) in w.iter().enumerate() {
                    positions[nonzero] = i as u16;
                    nonzero += usize::from(w != 0.0);
                }
                powers.fill(at_zero);
                for &i in &positions[..nonzero] {
                    let i = usize::from(i);
                    powers[i] = flex_pow(w[i].abs(), s.p_minus_2);
                }
                for ((w, &w_hat), &power) in w.iter_mut().zip(&*w_hat).zip(&*powers) {
                    *w = w_hat / (power * s.c + s.base);
                }
            }
        }
    }
    non_finite
}

/// `x^e` as burn-flex's `powf_scalar` computes it, so the step stays bit-equal to the tensor
/// path: the integer exponents -2..=2 by multiplication and exact division (p = 1 gives -1:
/// `1 / x`, which can differ from `powf(x, -1)` in the last bit), any other by `powf`.
#[inline]
fn flex_pow(x: f32, e: f32) -> f32 {
    match e {
        -2.0 => 1.0 / (x * x),
        -1.0 => 1.0 / x,
        0.0 => 1.0,
        1.0 => x,
        2.0 => x * x,
        _ => x.powf(e),
    }
}

/// Run one tensor's fused step on `B`, which must be [`Flex`] (see [`is_flex`]).
pub(super) fn step<B: Backend, const D: usize>(
    inputs: FusedInputs<B, D>,
    flag_index: usize,
    check: bool,
    scalars: &StepScalars,
) -> Option<FusedOutput<B, D>> {
    let [mut w, g, mut m, mut v, mut f] = inputs
        .into_primitives()
        .map(|t| contiguous(downcast::<_, FlexTensor>(t).expect("checked: B is the CPU backend")));
    // The optimizer creates the moments and flags from the f32 weights.
    assert!(
        [&w, &g, &m, &v, &f].iter().all(|t| t.dtype() == DType::F32),
        "the fused step's tensors are f32"
    );
    let non_finite = update(
        elements_mut(&mut w),
        g.as_slice::<f32>().expect("contiguous f32"),
        elements_mut(&mut m),
        elements_mut(&mut v),
        scalars,
    );
    if check && non_finite {
        elements_mut(&mut f)[flag_index] = 1.0;
    }
    Some(FusedOutput::from_primitives([w, m, v, f].map(|t| {
        downcast::<_, B::FloatTensorPrimitive>(t).expect("checked: B is the CPU backend")
    })))
}
