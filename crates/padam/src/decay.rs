//! The pWD step, written once: `w_new = w_hat * factor`, where
//!
//! ```text
//! factor = 1 / ((1 + lr*lambda2) + lr*p*lambda * s)      s = |w_old|^(p-2)  (adiabatic)
//! ```
//!
//! `w_old` is the weight before the base optimizer's step and `w_hat` the weight after it
//! (SPEC section 2). `lambda2` is the optional elastic-net L2 term (SPEC 5, 0 by default) and
//! `s` is either its adiabatic optimum `|w_old|^(p-2)` or, for the non-adiabatic variant, an
//! optimizer state relaxed toward it.
//!
//! # Numerics (SPEC section 4), all in the dtype of the weights
//! - `c = lr*p*lambda` is computed on the host in f64. When `c == 0` (lambda or lr is zero) the
//!   p-term is skipped entirely, so `0 * inf` can never produce a NaN: the factor is exactly
//!   `1 / (1 + lr*lambda2)`, i.e. exactly 1 without elastic net.
//! - `p == 2`: `|w|^0` is 1 for every w (also 0), so the factor is the host scalar
//!   `1 / (1 + lr*lambda2 + 2*lr*lambda)`: AdamW with decay `2*lambda` to first order.
//! - `p < 2`, `w_old == 0`: `|0|^(p-2) = +inf`, `c*inf = inf`, `1/inf = 0`: a weight at zero stays
//!   at zero. Tiny (subnormal) weights overflow `|w|^(p-2)` to `+inf` the same way and are
//!   zeroed, which is the limit of the exact formula.
//! - `p > 2`, `w_old == 0`: `|0|^(p-2) = 0`, factor `1/(1 + lr*lambda2)`.
//! - The denominator is `>= 1` and never NaN for finite inputs (both terms are `>= 0`), so the
//!   factor lies in `[0, 1]` and multiplying keeps the sign of `w_hat`.

use burn::tensor::{backend::Backend, DType, Tensor};

/// The scalars one decay step needs, already evaluated for this step (schedules applied).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecayStep {
    /// Learning rate of this step.
    pub lr: f64,
    /// Norm exponent `p > 0`.
    pub p: f64,
    /// Strength of the p-norm penalty `lambda >= 0`.
    pub lambda: f64,
    /// Elastic-net L2 strength `lambda2 >= 0` (0 disables it).
    pub lambda2: f64,
}

impl DecayStep {
    /// `c = lr * p * lambda`, the coefficient of `s` in the denominator.
    pub fn coefficient(&self) -> f64 {
        self.lr * self.p * self.lambda
    }

    /// The constant part of the denominator, `1 + lr*lambda2`.
    pub fn base_denominator(&self) -> f64 {
        1.0 + self.lr * self.lambda2
    }

    /// True when the factor is the same for every weight (no p-term, or `p == 2`), so it can be
    /// applied as one host scalar.
    pub fn is_uniform(&self) -> bool {
        self.coefficient() == 0.0 || self.p == 2.0
    }

    /// The factor when [`is_uniform`](Self::is_uniform) holds.
    pub fn uniform_factor(&self) -> f64 {
        let c = self.coefficient();
        // p == 2: s = |w|^0 = 1 for every weight. c == 0: the p-term vanishes.
        let s_term = if c == 0.0 { 0.0 } else { c };
        1.0 / (self.base_denominator() + s_term)
    }
}

/// `|w_old|^(p-2)`, the adiabatic optimum of the auxiliary variable `s` (SPEC 2).
/// `+inf` at `w_old = 0` for `p < 2`, 0 there for `p > 2`.
/// For `p == 2` it is exactly 1 (not `pow(0, 0)`, whose value differs between backends).
pub fn s_target<B: Backend, const D: usize>(w_old: Tensor<B, D>, p: f64) -> Tensor<B, D> {
    if p == 2.0 {
        return w_old.ones_like();
    }
    w_old.abs().powf_scalar(p - 2.0)
}

/// Relax the non-adiabatic `s` toward its target: `s <- (1-rate)*s + rate*target`.
///
/// `rate` is in `(0, 1)`; rate 1 (the adiabatic limit) never reaches here because the caller
/// then uses the target directly, so `(1-rate)*s` is never `0*inf`. Both terms are `>= 0`, so an
/// infinite target gives an infinite `s` and never a NaN.
pub fn relax_s<B: Backend, const D: usize>(
    s: Tensor<B, D>,
    target: Tensor<B, D>,
    rate: f64,
) -> Tensor<B, D> {
    mul_nonneg_scalar(s, 1.0 - rate).add(mul_nonneg_scalar(target, rate))
}

/// Apply the decay to `w_hat` with a given `s` (per weight): `w_hat / (1 + lr*lambda2 + c*s)`.
pub fn apply_with_s<B: Backend, const D: usize>(
    w_hat: Tensor<B, D>,
    s: Tensor<B, D>,
    step: &DecayStep,
) -> Tensor<B, D> {
    let c = step.coefficient();
    if c == 0.0 {
        // No p-term: never form c * s (s may be +inf).
        return scale(w_hat, 1.0 / step.base_denominator());
    }
    let denominator = mul_nonneg_scalar(s, c).add_scalar(step.base_denominator());
    w_hat.div(denominator)
}

/// The adiabatic pWD step: `w_hat / (1 + lr*lambda2 + c*|w_old|^(p-2))`.
pub fn apply<B: Backend, const D: usize>(
    w_hat: Tensor<B, D>,
    w_old: Tensor<B, D>,
    step: &DecayStep,
) -> Tensor<B, D> {
    if step.is_uniform() {
        return scale(w_hat, step.uniform_factor());
    }
    apply_with_s(w_hat, s_target(w_old, step.p), step)
}

/// `t * k` for a host scalar `k > 0` and `t >= 0` that may hold `+inf` (`s` at `w_old = 0`).
///
/// `k` is rounded to the tensor's dtype, where a tiny `k` becomes 0 (below ~1.4e-45 in f32,
/// ~6e-8 in f16) and `inf * 0` would be NaN. The exact product there is `+inf`; only in that
/// case are the infinities restored (one extra pass), so the usual path costs nothing.
fn mul_nonneg_scalar<B: Backend, const D: usize>(t: Tensor<B, D>, k: f64) -> Tensor<B, D> {
    if k > smallest_positive(t.dtype()) {
        return t.mul_scalar(k);
    }
    let inf = t.clone().is_inf();
    t.mul_scalar(k).mask_fill(inf, f64::INFINITY)
}

/// The smallest positive (subnormal) value of a float dtype; conservative for others.
fn smallest_positive(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => f64::from_bits(1),
        DType::F32 | DType::Flex32 => f32::from_bits(1) as f64,
        DType::BF16 => 9.183_549_615_799_121e-41, // 2^-133
        DType::F16 => 5.960_464_477_539_063e-8,   // 2^-24
        _ => 1e-6,
    }
}

fn scale<B: Backend, const D: usize>(w: Tensor<B, D>, factor: f64) -> Tensor<B, D> {
    if factor == 1.0 {
        w
    } else {
        w.mul_scalar(factor)
    }
}
