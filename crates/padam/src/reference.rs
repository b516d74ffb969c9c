//! Float64 scalar reference of every optimizer in this crate, written for clarity, not speed.
//!
//! Tests compare the burn (tensor) paths against these functions. Each function takes plain
//! `f64` slices and mirrors PyTorch's definitions (which the paper's runs used) so the golden
//! vectors in `tests/data/` can be checked directly against it.

/// The pWD factor `1 / ((1 + lr*lambda2) + lr*p*lambda*s)` for a given `s` (SPEC 2, 4, 5).
///
/// `s = None` means the adiabatic limit `s = |w_old|^(p-2)`.
pub fn factor(w_old: f64, lr: f64, p: f64, lambda: f64, lambda2: f64, s: Option<f64>) -> f64 {
    let c = lr * p * lambda;
    let base = 1.0 + lr * lambda2;
    if c == 0.0 {
        return 1.0 / base; // no p-term: never 0 * inf
    }
    let s = s.unwrap_or_else(|| s_target(w_old, p));
    1.0 / (base + c * s)
}

/// `|w|^(p-2)` with `p == 2` giving exactly 1 and `w == 0` giving `+inf` for `p < 2`.
pub fn s_target(w_old: f64, p: f64) -> f64 {
    if p == 2.0 {
        1.0
    } else {
        w_old.abs().powf(p - 2.0)
    }
}

/// Non-adiabatic relaxation `s <- (1-rate)*s + rate*target`; rate 1 returns the target.
pub fn relax_s(s: f64, target: f64, rate: f64) -> f64 {
    if rate == 1.0 {
        target
    } else {
        (1.0 - rate) * s + rate * target
    }
}

/// Settings of the decay part shared by every reference optimizer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decay {
    /// Norm exponent.
    pub p: f64,
    /// p-norm strength.
    pub lambda: f64,
    /// Elastic-net L2 strength.
    pub lambda2: f64,
    /// Relaxation rate of `s`; `None` = adiabatic.
    pub s_rate: Option<f64>,
}

impl Decay {
    /// Plain pWD with exponent `p` and strength `lambda`.
    pub fn new(p: f64, lambda: f64) -> Self {
        Self {
            p,
            lambda,
            lambda2: 0.0,
            s_rate: None,
        }
    }
}

/// Apply the decay to `w_hat` in place, given the weights before the base step.
/// `s` is the non-adiabatic state (initialised to 1 by the caller), ignored when adiabatic.
pub fn apply_decay(w_hat: &mut [f64], w_old: &[f64], s: &mut [f64], lr: f64, d: &Decay) {
    for i in 0..w_hat.len() {
        let s_i = match d.s_rate {
            None => None,
            Some(rate) => {
                s[i] = relax_s(s[i], s_target(w_old[i], d.p), rate);
                Some(s[i])
            }
        };
        w_hat[i] *= factor(w_old[i], lr, d.p, d.lambda, d.lambda2, s_i);
    }
}

/// Adam hyper-parameters (PyTorch's definition: bias-corrected moments, eps outside the sqrt).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamParams {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to `sqrt(v_hat)`.
    pub eps: f64,
}

/// State of the reference Adam / PAdam for one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamState {
    /// Steps taken.
    pub t: i32,
    /// First moment.
    pub m: Vec<f64>,
    /// Second moment.
    pub v: Vec<f64>,
    /// Non-adiabatic `s` (starts at 1).
    pub s: Vec<f64>,
}

impl AdamState {
    /// Fresh state for `n` weights.
    pub fn new(n: usize) -> Self {
        Self {
            t: 0,
            m: vec![0.0; n],
            v: vec![0.0; n],
            s: vec![1.0; n],
        }
    }
}

/// One Adam step with no weight decay (`w_hat`).
pub fn adam_step(w: &mut [f64], g: &[f64], st: &mut AdamState, lr: f64, a: &AdamParams) {
    st.t += 1;
    let bc1 = 1.0 - a.beta1.powi(st.t);
    let bc2 = 1.0 - a.beta2.powi(st.t);
    for i in 0..w.len() {
        st.m[i] = a.beta1 * st.m[i] + (1.0 - a.beta1) * g[i];
        st.v[i] = a.beta2 * st.v[i] + (1.0 - a.beta2) * g[i] * g[i];
        let m_hat = st.m[i] / bc1;
        let v_hat = st.v[i] / bc2;
        w[i] -= lr * m_hat / (v_hat.sqrt() + a.eps);
    }
}

/// One PAdam step: Adam, then the pWD step with the weights from before the Adam step.
pub fn padam_step(
    w: &mut [f64],
    g: &[f64],
    st: &mut AdamState,
    lr: f64,
    a: &AdamParams,
    d: &Decay,
) {
    let w_old = w.to_vec();
    adam_step(w, g, st, lr, a);
    apply_decay(w, &w_old, &mut st.s, lr, d);
}

/// One AdamW step (PyTorch: `w *= 1 - lr*wd` before the Adam update).
pub fn adamw_step(w: &mut [f64], g: &[f64], st: &mut AdamState, lr: f64, a: &AdamParams, wd: f64) {
    for w_i in w.iter_mut() {
        *w_i *= 1.0 - lr * wd;
    }
    adam_step(w, g, st, lr, a);
}

/// SGD hyper-parameters (PyTorch's definition of momentum, dampening and Nesterov).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdParams {
    /// Momentum factor (0 disables momentum).
    pub momentum: f64,
    /// Dampening of the gradient in the momentum buffer.
    pub dampening: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
}

/// State of the reference SGD / pSGD for one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct SgdState {
    /// Momentum buffer; `None` before the first step (PyTorch initialises it to the gradient).
    pub buf: Option<Vec<f64>>,
    /// Non-adiabatic `s` (starts at 1).
    pub s: Vec<f64>,
}

impl SgdState {
    /// Fresh state for `n` weights.
    pub fn new(n: usize) -> Self {
        Self {
            buf: None,
            s: vec![1.0; n],
        }
    }
}

/// One SGD step with no weight decay (`w_hat`).
pub fn sgd_step(w: &mut [f64], g: &[f64], st: &mut SgdState, lr: f64, sp: &SgdParams) {
    let direction: Vec<f64> = if sp.momentum == 0.0 {
        g.to_vec()
    } else {
        let buf = match st.buf.take() {
            None => g.to_vec(),
            Some(b) => b
                .iter()
                .zip(g)
                .map(|(b, g)| sp.momentum * b + (1.0 - sp.dampening) * g)
                .collect(),
        };
        let dir = if sp.nesterov {
            g.iter()
                .zip(&buf)
                .map(|(g, b)| g + sp.momentum * b)
                .collect()
        } else {
            buf.clone()
        };
        st.buf = Some(buf);
        dir
    };
    for (w_i, d_i) in w.iter_mut().zip(direction) {
        *w_i -= lr * d_i;
    }
}

/// One pSGD step: SGD, then the pWD step with the weights from before the SGD step.
pub fn psgd_step(w: &mut [f64], g: &[f64], st: &mut SgdState, lr: f64, sp: &SgdParams, d: &Decay) {
    let w_old = w.to_vec();
    sgd_step(w, g, st, lr, sp);
    apply_decay(w, &w_old, &mut st.s, lr, d);
}

/// The Higgs-potential toy of SPEC 7: `l0 = (w1^2 + w2^2 - 1)^2 / 4`, plain gradient descent
/// plus pWD. Returns the trajectory including the start (`steps + 1` points).
pub fn higgs_toy(start: [f64; 2], lr: f64, p: f64, lambda: f64, steps: usize) -> Vec<[f64; 2]> {
    let mut w = start;
    let mut out = vec![w];
    for _ in 0..steps {
        let r = w[0] * w[0] + w[1] * w[1] - 1.0;
        let g = [r * w[0], r * w[1]];
        let w_old = w;
        for i in 0..2 {
            w[i] -= lr * g[i];
            w[i] *= factor(w_old[i], lr, p, lambda, 0.0, None);
        }
        out.push(w);
    }
    out
}
