//! The fused step on burn's CPU backend (`burn::backend::Flex`, f32): one pass over each
//! tensor's buffers, in place where the optimizer holds the only reference.
//!
//! On the tensor path a PAdam step is about fifteen passes over the weights on the CPU (burn's
//! Adam, then `|w|^(p-2)`, the product, the sum and the division of the decay, and a sum for the
//! non-finite check); here each element is read and written once, with the same f32 operations
//! in the same order as the tensor path (see the module docs of `fused`), so the two agree to
//! the last bit (`tests/fused_cpu.rs` holds them bit-equal, and both to the float64
//! reference). The decay alone after any other base optimizer (pSGD, `PWdConfig`) is the same
//! finish in one pass ([`decay`]).

use std::any::TypeId;

use burn::backend::Flex;
use burn::tensor::{backend::Backend, DType, Tensor, TensorPrimitive};
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::{downcast, DecayMode, DecayScalars, FusedInputs, FusedOutput, StepScalars};

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

/// Elements [`update_chunk`] and [`decay_chunk`] take at a time: their scratch buffers stay in
/// L1 cache.
const BLOCK: usize = 256;

/// [`update`] on one chunk, [`BLOCK`] elements at a time: Adam (no calls, so the compiler
/// vectorises it), then pWD's finish ([`Scratch::finish_over_old`]). Returns true when the
/// chunk's `g` holds a NaN or inf.
fn update_chunk(w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], s: &StepScalars) -> bool {
    let mut non_finite = false;
    let mut scratch = Scratch::new(&s.decay);
    let blocks = w
        .chunks_mut(BLOCK)
        .zip(g.chunks(BLOCK))
        .zip(m.chunks_mut(BLOCK))
        .zip(v.chunks_mut(BLOCK));
    for (((w, g), m), v) in blocks {
        let n = w.len();
        let w_hat = &mut scratch.w_hat[..n];
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
        scratch.finish_over_old(w, &s.decay);
    }
    non_finite
}

/// The pWD step ([`DecayMode::PNorm`]) alone after another base optimizer's, on one chunk:
/// `w_hat` becomes `w'`, with `|w|^(p-2)` of the weights before the step, `w_old`.
fn decay_chunk(w_hat: &mut [f32], w_old: &[f32], d: &DecayScalars) {
    let mut scratch = Scratch::new(d);
    for (w_hat, w_old) in w_hat.chunks_mut(BLOCK).zip(w_old.chunks(BLOCK)) {
        scratch.finish_over_hat(w_hat, w_old, d);
    }
}

/// One block's buffers for pWD's finish, which runs in three loops: the positions of the
/// non-zero weights (no branch), `|w|^(p-2)` for those only (a `powf` per non-zero weight:
/// most of the step's time, and in a sparse network most weights are exactly 0), and the
/// division or factor (vectorised).
struct Scratch {
    w_hat: [f32; BLOCK],
    powers: [f32; BLOCK],
    positions: [u16; BLOCK],
    /// `|0|^(p-2)`, the value `powf` gives there: +inf for p < 2, so the denominator is +inf
    /// and a zero weight stays exactly 0.
    at_zero: f32,
}

impl Scratch {
    fn new(d: &DecayScalars) -> Self {
        Self {
            w_hat: [0.0; BLOCK],
            powers: [0.0; BLOCK],
            positions: [0; BLOCK],
            at_zero: flex_pow(0.0, d.p_minus_2),
        }
    }

    /// `powers[..n]` = `|w_old|^(p-2)` for [`DecayMode::PNorm`].
    fn powers(&mut self, w_old: &[f32], d: &DecayScalars) -> &[f32] {
        let n = w_old.len();
        let mut nonzero = 0;
        for (i, &w) in w_old.iter().enumerate() {
            self.positions[nonzero] = i as u16;
            nonzero += usize::from(w != 0.0);
        }
        let powers = &mut self.powers[..n];
        powers.fill(self.at_zero);
        for &i in &self.positions[..nonzero] {
            let i = usize::from(i);
            powers[i] = flex_pow(w_old[i].abs(), d.p_minus_2);
        }
        powers
    }

    /// `w` (the weights before the step) becomes `w'` from `self.w_hat`.
    fn finish_over_old(&mut self, w: &mut [f32], d: &DecayScalars) {
        let n = w.len();
        match d.mode {
            DecayMode::None => w.copy_from_slice(&self.w_hat[..n]),
            DecayMode::Uniform => {
                for (w, &w_hat) in w.iter_mut().zip(&self.w_hat[..n]) {
                    *w = w_hat * d.uniform_factor;
                }
            }
            DecayMode::PNorm => {
                self.powers(w, d);
                let (w_hat, powers) = (&self.w_hat[..n], &self.powers[..n]);
                for ((w, &w_hat), &power) in w.iter_mut().zip(w_hat).zip(powers) {
                    *w = w_hat / (power * d.c + d.base);
                }
            }
        }
    }

    /// `w_hat` becomes `w'` ([`DecayMode::PNorm`]), with `|w|^(p-2)` of `w_old`.
    fn finish_over_hat(&mut self, w_hat: &mut [f32], w_old: &[f32], d: &DecayScalars) {
        let powers = self.powers(w_old, d);
        for (w_hat, &power) in w_hat.iter_mut().zip(powers) {
            *w_hat /= power * d.c + d.base;
        }
    }
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

/// pWD's step ([`DecayMode::PNorm`]) alone on `B`, which must be [`Flex`] (see [`is_flex`]):
/// `w_hat` (the base optimizer's result, written in place where nothing else holds it)
/// becomes `w_hat / (|w_old|^(p-2) c + base)`, split across rayon's threads.
pub(super) fn decay<B: Backend, const D: usize>(
    w_hat: Tensor<B, D>,
    w_old: Tensor<B, D>,
    d: &DecayScalars,
) -> Tensor<B, D> {
    let [mut w_hat, w_old] = [w_hat, w_old].map(|t| {
        let t = downcast::<_, FlexTensor>(t.into_primitive().tensor());
        contiguous(t.expect("checked: B is the CPU backend"))
    });
    assert!(
        w_hat.dtype() == DType::F32 && w_old.dtype() == DType::F32,
        "the fused decay's tensors are f32"
    );
    let old = w_old.as_slice::<f32>().expect("contiguous f32");
    (elements_mut(&mut w_hat).par_chunks_mut(CHUNK))
        .zip(old.par_chunks(CHUNK))
        .for_each(|(w_hat, w_old)| decay_chunk(w_hat, w_old, d));
    let w = downcast::<_, B::FloatTensorPrimitive>(w_hat).expect("checked: B is the CPU backend");
    Tensor::from_primitive(TensorPrimitive::Float(w))
}
