//! Helpers shared by the padam integration tests: one-parameter modules, hand-made gradients,
//! reading weights back, a deterministic generator, the golden vectors and tolerance checks.
#![allow(dead_code, clippy::too_many_arguments, clippy::needless_range_loop)]

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module, Param};
use burn::nn::Linear;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde_json::Value;

/// The autodiff backend every optimizer test runs on.
pub type B = Autodiff<Flex>;
/// Its inner backend (where gradients and optimizer states live).
pub type IB = Flex;

pub fn device() -> burn::tensor::Device<IB> {
    Default::default()
}

// ---------------------------------------------------------------------------------------------
// A module holding one 1-D parameter.

/// A module with a single 1-D parameter `w`.
#[derive(Module, Debug)]
pub struct Vector<B: Backend> {
    pub w: Param<Tensor<B, 1>>,
}

/// A [`Vector`] holding exactly these f32 values.
pub fn vector(values: &[f32]) -> Vector<B> {
    Vector {
        w: Param::from_tensor(tensor1::<B>(values)),
    }
}

/// The weights of a [`Vector`], bit-exact.
pub fn values(m: &Vector<B>) -> Vec<f32> {
    read(m.w.val())
}

/// Gradients for the one parameter of `m`, exactly these f32 values.
pub fn vector_grads(m: &Vector<B>, g: &[f32]) -> GradientsParams {
    let mut grads = GradientsParams::new();
    grads.register::<IB, 1>(m.w.id, tensor1::<IB>(g));
    grads
}

/// One optimizer step on a [`Vector`] with the given gradient.
pub fn step_vector<O: Optimizer<Vector<B>, B>>(
    optim: &mut O,
    lr: f64,
    m: Vector<B>,
    g: &[f32],
) -> Vector<B> {
    let grads = vector_grads(&m, g);
    optim.step(lr, m, grads)
}

/// Run `optim` from `w0` through every gradient in `grads`; returns the weights after each step.
pub fn run_vector<O: Optimizer<Vector<B>, B>>(
    optim: &mut O,
    lr: f64,
    w0: &[f32],
    grads: &[Vec<f32>],
) -> Vec<Vec<f32>> {
    let mut m = vector(w0);
    let mut out = Vec::new();
    for g in grads {
        m = step_vector(optim, lr, m, g);
        out.push(values(&m));
    }
    out
}

/// Run a case's optimizer (`padam::cases`) from `w0` through every gradient in `grads`, step
/// `k` at the case's learning rate `case.lr(k)`; returns the weights after each step.
pub fn run_case_vector(
    optim: &mut dyn padam::cases::Stepper<Vector<B>, B>,
    case: &padam::cases::Case,
    w0: &[f32],
    grads: &[Vec<f32>],
) -> Vec<Vec<f32>> {
    let mut m = vector(w0);
    let mut out = Vec::new();
    for (k, g) in grads.iter().enumerate() {
        let gp = vector_grads(&m, g);
        m = optim
            .try_step(case.lr(k), m, gp)
            .unwrap_or_else(|e| panic!("{} step {k}: {e}", case.name));
        out.push(values(&m));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Tensors.

pub fn tensor1<BB: Backend>(values: &[f32]) -> Tensor<BB, 1> {
    Tensor::from_data(
        TensorData::new(values.to_vec(), [values.len()]),
        &Default::default(),
    )
}

pub fn tensor2<BB: Backend>(values: &[f32], rows: usize, cols: usize) -> Tensor<BB, 2> {
    assert_eq!(values.len(), rows * cols);
    Tensor::from_data(
        TensorData::new(values.to_vec(), [rows, cols]),
        &Default::default(),
    )
}

/// Read any float tensor back as f32, bit-exact.
pub fn read<BB: Backend, const D: usize>(t: Tensor<BB, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().expect("f32 tensor")
}

pub fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

pub fn narrow(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

// ---------------------------------------------------------------------------------------------
// Deterministic pseudo-random numbers (splitmix64), no extra dependency.

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        lo + (hi - lo) * u
    }

    pub fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi) as f32).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// A small real model with a real loss, for the "equals burn's optimizer" tests.

#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
}

impl<BB: Backend> Mlp<BB> {
    pub fn forward(&self, x: Tensor<BB, 2>) -> Tensor<BB, 2> {
        let h = self.fc1.forward(x);
        let h = burn::tensor::activation::tanh(h);
        self.fc2.forward(h)
    }
}

/// A deterministic Mlp 5 -> 7 -> 3 (weights drawn from `Rng(seed)`, one weight set to 0).
pub fn mlp(seed: u64) -> Mlp<B> {
    let mut rng = Rng::new(seed);
    let mut lin = |i: usize, o: usize, bias: bool| -> Linear<B> {
        let mut w = rng.vec(i * o, -0.5, 0.5);
        w[3] = 0.0; // exact zero weight: must stay 0 under p < 2
        Linear {
            weight: Param::from_tensor(tensor2::<B>(&w, i, o)),
            bias: bias.then(|| Param::from_tensor(tensor1::<B>(&rng.vec(o, -0.1, 0.1)))),
        }
    };
    Mlp {
        fc1: lin(5, 7, true),
        fc2: lin(7, 3, true),
    }
}

/// Real gradients of a squared-error loss on a deterministic batch (batch `k`).
pub fn mlp_grads(m: &Mlp<B>, k: u64) -> GradientsParams {
    let mut rng = Rng::new(1000 + k);
    let x = tensor2::<B>(&rng.vec(8 * 5, -1.0, 1.0), 8, 5);
    let y = tensor2::<B>(&rng.vec(8 * 3, -1.0, 1.0), 8, 3);
    let loss = (m.forward(x) - y).powf_scalar(2.0).mean();
    GradientsParams::from_grads(loss.backward(), m)
}

/// Every parameter of an Mlp, in module order, bit-exact.
pub fn mlp_values(m: &Mlp<B>) -> Vec<Vec<f32>> {
    let v = m.clone().valid();
    let mut out = vec![read(v.fc1.weight.val())];
    out.push(read(v.fc1.bias.as_ref().unwrap().val()));
    out.push(read(v.fc2.weight.val()));
    out.push(read(v.fc2.bias.as_ref().unwrap().val()));
    out
}

/// A Linear without bias (Muon needs 2-D parameters only) with deterministic weights.
pub fn linear_no_bias(seed: u64, i: usize, o: usize) -> Linear<B> {
    let mut rng = Rng::new(seed);
    let mut w = rng.vec(i * o, -0.5, 0.5);
    w[0] = 0.0;
    Linear {
        weight: Param::from_tensor(tensor2::<B>(&w, i, o)),
        bias: None,
    }
}

pub fn linear_grads(m: &Linear<B>, k: u64) -> GradientsParams {
    let dims = m.weight.val().dims();
    let mut rng = Rng::new(77 + k);
    let x = tensor2::<B>(&rng.vec(6 * dims[0], -1.0, 1.0), 6, dims[0]);
    let y = tensor2::<B>(&rng.vec(6 * dims[1], -1.0, 1.0), 6, dims[1]);
    let loss = (m.forward(x) - y).powf_scalar(2.0).mean();
    GradientsParams::from_grads(loss.backward(), m)
}

// ---------------------------------------------------------------------------------------------
// Golden vectors.

pub fn golden_steps() -> Vec<Value> {
    let text = include_str!("../data/padam_steps.json");
    let v: Value = serde_json::from_str(text).expect("padam_steps.json parses");
    v["cases"].as_array().expect("cases").clone()
}

pub fn golden_higgs() -> Vec<Value> {
    let text = include_str!("../data/higgs_toy.json");
    let v: Value = serde_json::from_str(text).expect("higgs_toy.json parses");
    v["runs"].as_array().expect("runs").clone()
}

pub fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

pub fn fvec(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(f).collect()
}

pub fn fmat(v: &Value) -> Vec<Vec<f64>> {
    v.as_array().expect("array").iter().map(fvec).collect()
}

// ---------------------------------------------------------------------------------------------
// Comparisons.

/// `|got - want| <= rtol*|want| + atol` element-wise, with a message naming the first failure.
pub fn assert_close(got: &[f64], want: &[f64], rtol: f64, atol: f64, ctx: &str) {
    assert_eq!(got.len(), want.len(), "{ctx}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = (g - w).abs() <= rtol * w.abs() + atol;
        assert!(
            ok,
            "{ctx}: element {i}: got {g:e}, want {w:e} (diff {:e}, rtol {rtol:e}, atol {atol:e})",
            (g - w).abs()
        );
    }
}

/// Largest `|got - want| / (|want| + floor)`; used to report how close paths are.
pub fn max_rel(got: &[f64], want: &[f64], floor: f64) -> f64 {
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs() / (w.abs() + floor))
        .fold(0.0, f64::max)
}

// ---------------------------------------------------------------------------------------------
// Running error analysis: "agrees to float32 rounding", made precise.
//
// `Ef` carries an f64 value and a bound on the absolute error a float32 (or float64)
// computation of the same formula accumulates: every operation adds its own rounding
// (`u*|v|`, plus half the smallest subnormal for underflow) to the propagated errors of its
// operands (first-order, worst case). Comparing the burn path with the f64 value within a small
// multiple of this bound is tight where f32 is accurate and honest where it is not
// (cancellation in `w_old - lr*u`, in the momentum buffer, and the exponent `p - 2` rounded
// to f32 inside `powf`).

/// A value and a bound on its absolute rounding error.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ef {
    pub v: f64,
    pub e: f64,
}

/// A floating-point format: unit roundoff and half the smallest subnormal.
#[derive(Clone, Copy, Debug)]
pub struct Fp {
    pub u: f64,
    pub tiny: f64,
}

pub const F32: Fp = Fp {
    u: 5.960_464_477_539_063e-8,     // 2^-24
    tiny: 7.006_492_321_624_085e-46, // 2^-150
};

pub const F64: Fp = Fp {
    u: 1.110_223_024_625_156_5e-16, // 2^-53
    tiny: 5e-324,
};

/// `x * y` where an exact 0 times anything (even inf) is 0: error terms are never NaN.
fn p0(x: f64, y: f64) -> f64 {
    if x == 0.0 || y == 0.0 {
        0.0
    } else {
        x * y
    }
}

impl Fp {
    pub fn exact(&self, v: f64) -> Ef {
        Ef { v, e: 0.0 }
    }

    /// A value rounded once to this format (an input or a host-computed scalar).
    pub fn input(&self, v: f64) -> Ef {
        Ef {
            v,
            e: self.rounding(v),
        }
    }

    fn rounding(&self, v: f64) -> f64 {
        if v == 0.0 || v.is_infinite() {
            0.0
        } else {
            self.u * v.abs() + self.tiny
        }
    }

    fn out(&self, v: f64, e: f64) -> Ef {
        if v.is_infinite() {
            // Infinities here come from exact zeros (|0|^(p-2)): f32 produces them too.
            return Ef { v, e: 0.0 };
        }
        Ef {
            v,
            e: e + self.rounding(v),
        }
    }

    pub fn add(&self, a: Ef, b: Ef) -> Ef {
        self.out(a.v + b.v, a.e + b.e)
    }

    pub fn sub(&self, a: Ef, b: Ef) -> Ef {
        self.out(a.v - b.v, a.e + b.e)
    }

    pub fn mul(&self, a: Ef, b: Ef) -> Ef {
        let e = p0(a.v.abs(), b.e) + p0(b.v.abs(), a.e) + p0(a.e, b.e);
        self.out(a.v * b.v, e)
    }

    pub fn div(&self, a: Ef, b: Ef) -> Ef {
        let v = a.v / b.v;
        if b.v.is_infinite() {
            return self.out(v, 0.0);
        }
        let lo = b.v.abs() - b.e;
        let e = if lo > 0.0 {
            (a.e + p0(v.abs(), b.e)) / lo
        } else {
            f64::INFINITY
        };
        self.out(v, e)
    }

    pub fn sqrt(&self, a: Ef) -> Ef {
        let v = a.v.sqrt();
        let e = if a.e == 0.0 {
            0.0
        } else if v == 0.0 {
            a.e.sqrt()
        } else {
            // |sqrt(x) - sqrt(x')| <= |x - x'| / (sqrt(x) + sqrt(x')) and <= sqrt(|x - x'|).
            (a.e / (v + (a.v - a.e).max(0.0).sqrt())).min(a.e.sqrt())
        };
        self.out(v, e)
    }

    pub fn abs(&self, a: Ef) -> Ef {
        Ef {
            v: a.v.abs(),
            e: a.e,
        }
    }

    /// `a^q` for `a >= 0`; `q` itself may carry an error (the exponent rounded to f32).
    pub fn pow(&self, a: Ef, q: Ef) -> Ef {
        let v = a.v.powf(q.v);
        if v.is_infinite() {
            return self.out(v, 0.0);
        }
        let mut e = 0.0;
        if a.e > 0.0 {
            let lo = (a.v - a.e).max(0.0);
            let hi = a.v + a.e;
            e += (lo.powf(q.v) - v).abs().max((hi.powf(q.v) - v).abs());
        }
        if q.e > 0.0 && v != 0.0 {
            e += v * a.v.ln().abs() * q.e;
        }
        self.out(v, e)
    }
}

/// Model of burn's Adam state (betas as f32 scalars, its order of operations).
#[derive(Clone, Debug)]
pub struct AdamModel {
    pub t: i32,
    pub m: Vec<Ef>,
    pub v: Vec<Ef>,
    pub s: Vec<Ef>,
}

impl AdamModel {
    pub fn new(n: usize) -> Self {
        let zero = Ef { v: 0.0, e: 0.0 };
        AdamModel {
            t: 0,
            m: vec![zero; n],
            v: vec![zero; n],
            s: vec![Ef { v: 1.0, e: 0.0 }; n],
        }
    }
}

/// The pWD decay settings for the model.
#[derive(Clone, Copy, Debug)]
pub struct DecayModel {
    pub p: f64,
    pub lambda: f64,
    pub lambda2: f64,
    /// `None` = adiabatic.
    pub s_rate: Option<f64>,
}

impl DecayModel {
    pub fn new(p: f64, lambda: f64) -> Self {
        DecayModel {
            p,
            lambda,
            lambda2: 0.0,
            s_rate: None,
        }
    }
}

/// Burn's Adam update `w_hat` (no decay), as `burn::optim::Adam` computes it.
pub fn model_adam(
    fp: &Fp,
    w: &[Ef],
    g: &[Ef],
    st: &mut AdamModel,
    lr: f64,
    betas: (f64, f64),
    eps: f64,
) -> Vec<Ef> {
    let one = fp.exact(1.0);
    let b1 = fp.input(betas.0);
    let b2 = fp.input(betas.1);
    let (f1, f2) = (fp.sub(one, b1), fp.sub(one, b2));
    st.t += 1;
    let (mut b1t, mut b2t) = (one, one);
    for _ in 0..st.t {
        b1t = fp.mul(b1t, b1);
        b2t = fp.mul(b2t, b2);
    }
    let bc2s = fp.sqrt(fp.sub(one, b2t));
    let cf = fp.div(bc2s, fp.sub(one, b1t));
    let eps_t = fp.mul(fp.input(eps), bc2s);
    let lr = fp.input(lr);
    let mut out = Vec::with_capacity(w.len());
    for i in 0..w.len() {
        let gm = fp.mul(g[i], f1);
        let gv = fp.mul(fp.mul(g[i], g[i]), f2);
        if st.t == 1 {
            st.m[i] = gm;
            st.v[i] = gv;
        } else {
            st.m[i] = fp.add(fp.mul(st.m[i], b1), gm);
            st.v[i] = fp.add(fp.mul(st.v[i], b2), gv);
        }
        let u = fp.div(fp.mul(st.m[i], cf), fp.add(fp.sqrt(st.v[i]), eps_t));
        out.push(fp.sub(w[i], fp.mul(u, lr)));
    }
    out
}

/// Model of burn's SGD momentum state.
#[derive(Clone, Debug, Default)]
pub struct SgdModel {
    pub vel: Option<Vec<Ef>>,
    pub s: Vec<Ef>,
}

/// Burn's SGD update `w_hat` (momentum as `burn::optim::momentum::Momentum` computes it).
pub fn model_sgd(
    fp: &Fp,
    w: &[Ef],
    g: &[Ef],
    st: &mut SgdModel,
    lr: f64,
    momentum: f64,
    dampening: f64,
    nesterov: bool,
) -> Vec<Ef> {
    let dir: Vec<Ef> = if momentum == 0.0 {
        g.to_vec()
    } else {
        let mom = fp.input(momentum);
        let damp = fp.input(1.0 - dampening);
        let vel: Vec<Ef> = match st.vel.take() {
            None => g.to_vec(),
            Some(v) => v
                .iter()
                .zip(g)
                .map(|(&v, &g)| fp.add(fp.mul(g, damp), fp.mul(v, mom)))
                .collect(),
        };
        let dir = if nesterov {
            vel.iter()
                .zip(g)
                .map(|(&v, &g)| fp.add(fp.mul(v, mom), g))
                .collect()
        } else {
            vel.clone()
        };
        st.vel = Some(vel);
        dir
    };
    let lr = fp.input(lr);
    w.iter()
        .zip(dir)
        .map(|(&w, d)| fp.sub(w, fp.mul(d, lr)))
        .collect()
}

/// The pWD step as `padam::decay` computes it (host scalars rounded to f32 once).
pub fn model_decay(
    fp: &Fp,
    w_hat: &[Ef],
    w_old: &[Ef],
    s: &mut [Ef],
    lr: f64,
    d: &DecayModel,
) -> Vec<Ef> {
    model_decay_full(fp, w_hat, w_old, s, lr, d).w
}

/// Result of [`model_decay_full`]: the new weights and the f64 denominators
/// `1 + lr*lambda2 + c*s` (to recognise where f32 overflows `s` or `c*s` to +inf).
pub struct DecayOut {
    pub w: Vec<Ef>,
    pub den: Vec<f64>,
}

/// [`model_decay`] with the denominators.
pub fn model_decay_full(
    fp: &Fp,
    w_hat: &[Ef],
    w_old: &[Ef],
    s: &mut [Ef],
    lr: f64,
    d: &DecayModel,
) -> DecayOut {
    let c = lr * d.p * d.lambda;
    let base = 1.0 + lr * d.lambda2;
    if c == 0.0 || (d.p == 2.0 && d.s_rate.is_none()) {
        let den = base + if c == 0.0 { 0.0 } else { c };
        let f = fp.input(1.0 / den);
        return DecayOut {
            w: w_hat
                .iter()
                .map(|&w| if f.v == 1.0 { w } else { fp.mul(w, f) })
                .collect(),
            den: vec![den; w_hat.len()],
        };
    }
    let (ce, be) = (fp.input(c), fp.input(base));
    let q = fp.input(d.p - 2.0);
    let mut out = DecayOut {
        w: Vec::with_capacity(w_hat.len()),
        den: Vec::with_capacity(w_hat.len()),
    };
    for i in 0..w_hat.len() {
        let target = if d.p == 2.0 {
            fp.exact(1.0)
        } else {
            fp.pow(fp.abs(w_old[i]), q)
        };
        let s_i = match d.s_rate {
            None => target,
            Some(rate) => {
                s[i] = fp.add(
                    fp.mul(s[i], fp.input(1.0 - rate)),
                    fp.mul(target, fp.input(rate)),
                );
                s[i]
            }
        };
        let den = fp.add(fp.mul(s_i, ce), be);
        out.den
            .push(if s_i.v.is_infinite() || s_i.v > F32_DEN_LIMIT {
                f64::INFINITY // f32 may hold +inf for s itself
            } else {
                base + c * s_i.v.max(0.0)
            });
        out.w.push(fp.div(w_hat[i], den));
    }
    out
}

/// Where `s` or `c*s` exceeds this, f32 may overflow it to +inf and the factor is then exactly 0
/// (the limit of the formula) while f64 still gives `w_hat / den`, a value f32 may or may not
/// be able to hold. f32::MAX is 3.4e38; the margin covers `powf`'s rounding near the edge.
pub const F32_DEN_LIMIT: f64 = 1e37;

/// Check burn's decayed weights against the model: within `K_ERR` times the error bound, or
/// exactly zero where f32 overflows the denominator. Also: finite, and the sign never flips.
/// Returns the worst use of the bound.
pub fn assert_decay_within(got: &[f32], want: &DecayOut, ctx: &str) -> f64 {
    assert_eq!(got.len(), want.w.len(), "{ctx}: length");
    let mut worst: f64 = 0.0;
    for (i, (&g, (w, &den))) in got.iter().zip(want.w.iter().zip(&want.den)).enumerate() {
        let g64 = g as f64;
        assert!(g.is_finite(), "{ctx}: element {i} is {g}");
        let diff = (g64 - w.v).abs();
        let overflow_zero = g == 0.0 && den > F32_DEN_LIMIT;
        assert!(
            diff <= K_ERR * w.e || overflow_zero,
            "{ctx}: element {i}: got {g64:e}, want {:e} +- {:e} (diff {diff:e}, den {den:e})",
            w.v,
            K_ERR * w.e
        );
        assert!(
            g == 0.0 || w.v == 0.0 || g64.signum() == w.v.signum() || diff <= K_ERR * w.e,
            "{ctx}: element {i}: sign flipped: got {g64:e}, want {:e}",
            w.v
        );
        if w.e > 0.0 && !overflow_zero {
            worst = worst.max(diff / w.e);
        }
    }
    worst
}

/// Safety factor on the first-order error bound (operation order differs slightly between the
/// model and burn's kernels).
pub const K_ERR: f64 = 4.0;

/// `|got - want.v| <= K_ERR * want.e + atol` element-wise; returns the worst
/// `|got - want.v| / want.e` seen (how much of the bound was used).
pub fn assert_within_model(got: &[f32], want: &[Ef], atol: f64, ctx: &str) -> f64 {
    assert_eq!(got.len(), want.len(), "{ctx}: length");
    let mut worst: f64 = 0.0;
    for (i, (&g, w)) in got.iter().zip(want).enumerate() {
        let g = g as f64;
        let diff = (g - w.v).abs();
        assert!(
            g.is_finite() && diff <= K_ERR * w.e + atol,
            "{ctx}: element {i}: got {g:e}, want {:e} +- {:e} (diff {diff:e}, atol {atol:e})",
            w.v,
            K_ERR * w.e
        );
        if w.e > 0.0 {
            worst = worst.max(diff / w.e);
        }
    }
    worst
}

/// The base optimizer of a model run.
#[derive(Clone, Debug)]
pub enum BaseModel {
    /// burn's Adam with these betas and epsilon.
    Adam {
        betas: (f64, f64),
        eps: f64,
        st: AdamModel,
    },
    /// burn's SGD with this momentum (0 = none), dampening and Nesterov flag.
    Sgd {
        momentum: f64,
        dampening: f64,
        nesterov: bool,
        st: SgdModel,
    },
}

impl BaseModel {
    pub fn adam(n: usize) -> Self {
        BaseModel::Adam {
            betas: (0.9, 0.999),
            eps: 1e-8,
            st: AdamModel::new(n),
        }
    }

    pub fn sgd(n: usize, momentum: f64, dampening: f64, nesterov: bool) -> Self {
        BaseModel::Sgd {
            momentum,
            dampening,
            nesterov,
            st: SgdModel {
                vel: None,
                s: vec![Ef { v: 1.0, e: 0.0 }; n],
            },
        }
    }

    /// `w_hat` of one step, advancing the base state.
    pub fn step(&mut self, w: &[Ef], g: &[Ef], lr: f64) -> Vec<Ef> {
        match self {
            BaseModel::Adam { betas, eps, st } => model_adam(&F32, w, g, st, lr, *betas, *eps),
            BaseModel::Sgd {
                momentum,
                dampening,
                nesterov,
                st,
            } => model_sgd(&F32, w, g, st, lr, *momentum, *dampening, *nesterov),
        }
    }
}

/// Check a burn trajectory step by step against the model, re-synchronising the weights each
/// step: step k starts from burn's own f32 weights (exact inputs), so the comparison is the
/// f32 rounding of that one step (the optimizer states depend on the gradients only and carry
/// their own error bounds). `traj[0]` is the start, `traj[k+1]` the weights after step k.
/// Returns the worst use of the error bound.
pub fn check_resync(
    traj: &[Vec<f32>],
    grads: &[Vec<f32>],
    lrs: &[f64],
    decays: &[DecayModel],
    mut base: BaseModel,
    ctx: &str,
) -> f64 {
    assert_eq!(traj.len(), grads.len() + 1);
    let n = traj[0].len();
    let mut s = vec![Ef { v: 1.0, e: 0.0 }; n];
    let mut worst: f64 = 0.0;
    for k in 0..grads.len() {
        let w_old: Vec<Ef> = traj[k].iter().map(|&x| F32.exact(x as f64)).collect();
        let g: Vec<Ef> = grads[k].iter().map(|&x| F32.exact(x as f64)).collect();
        let w_hat = base.step(&w_old, &g, lrs[k]);
        let out = model_decay_full(&F32, &w_hat, &w_old, &mut s, lrs[k], &decays[k]);
        let used = assert_decay_within(&traj[k + 1], &out, &format!("{ctx} step {k}"));
        worst = worst.max(used);
        if decays[k].p < 2.0 && decays[k].lambda > 0.0 && lrs[k] > 0.0 {
            for i in 0..n {
                if traj[k][i] == 0.0 {
                    assert_eq!(traj[k + 1][i], 0.0, "{ctx} step {k}: zero weight {i} moved");
                }
            }
        }
    }
    worst
}

/// `w0` followed by the weights after each step.
pub fn with_start(w0: &[f32], traj: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
    let mut out = vec![w0.to_vec()];
    out.extend(traj);
    out
}
