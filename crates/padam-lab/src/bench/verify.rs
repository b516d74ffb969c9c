//! `padam bench verify`: every case of the library's case table (`padam::cases::cases()`, the
//! cases the CPU tests run) on this backend against the float64 reference; then a module of
//! many tensors, several launches of the multi-tensor kernel where the backend has it, against
//! the per-tensor kernel and the tensor ops, and its non-finite refusals.

use burn::module::{Module, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use padam::cases::{cases, Case, Probe, Stepper};
use padam::{reference, NonFinitePolicy, PAdamConfig, ParamSelection};

use super::VerifyArgs;

/// Random weights with exact zeros, tiny and subnormal values mixed in.
fn tricky_values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64) * 2.0 - 1.0
    };
    (0..n)
        .map(|i| match i % 8 {
            0 => 0.0,
            1 => (next() * 1e-39) as f32, // subnormal f32
            2 => (next() * 1e-7) as f32,
            _ => (next() * 0.1) as f32,
        })
        .collect()
}

/// One parameter, the tensor under test.
#[derive(Module, Debug)]
struct One<B: Backend> {
    w: Param<Tensor<B, 1>>,
}

impl<B: AutodiffBackend> One<B> {
    /// A fresh parameter (new id) holding `w0`.
    fn new(w0: &[f32], device: &B::Device) -> Self {
        let data = TensorData::new(w0.to_vec(), [w0.len()]);
        One {
            w: Param::from_tensor(Tensor::from_data(data, device)),
        }
    }

    /// `g` as the gradient of the parameter `id`.
    fn grads(id: ParamId, g: &[f32], device: &B::Device) -> GradientsParams {
        let mut gp = GradientsParams::new();
        let data = TensorData::new(g.to_vec(), [g.len()]);
        gp.register(id, Tensor::<B::InnerBackend, 1>::from_data(data, device));
        gp
    }
}

struct VerifyCase {
    name: String,
    max_rel_err: f64,
    nonzero_at_zero: usize,
    ok: bool,
}

/// Relative L2 error of `got` against `want` and the weights that broke: non-zero where `want`
/// is exactly zero, or not finite.
fn compare(name: String, got: &[f32], want: &[f64]) -> VerifyCase {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    let mut nonzero_at_zero = 0;
    for (&g, &w) in got.iter().zip(want) {
        let d = g as f64 - w;
        num += d * d;
        den += w * w;
        if w == 0.0 && g != 0.0 {
            nonzero_at_zero += 1;
        }
        if !g.is_finite() {
            nonzero_at_zero += 1;
        }
    }
    let rel = (num / den.max(1e-300)).sqrt();
    VerifyCase {
        name,
        max_rel_err: rel,
        nonzero_at_zero,
        ok: rel < 1e-5 && nonzero_at_zero == 0,
    }
}

/// "multi-tensor kernel", "fused kernel" (one kernel per tensor) or "tensor ops": which
/// implementation `optim` runs.
fn path_name<M, B: AutodiffBackend>(optim: &dyn Stepper<M, B>) -> &'static str {
    if optim.uses_multi_tensor_kernel() {
        MULTI
    } else if optim.uses_fused_kernel() {
        PER_TENSOR
    } else {
        TENSOR_OPS
    }
}

const MULTI: &str = "multi-tensor kernel";
const PER_TENSOR: &str = "fused kernel";
const TENSOR_OPS: &str = "tensor ops";

/// `optim` from `w0` through `grads` (step `k` at the case's learning rate), the deferred check
/// settled at the end; the final weights.
fn run_case<B: AutodiffBackend>(
    mut optim: Box<dyn Stepper<One<B>, B>>,
    case: &Case,
    w0: &[f32],
    grads: &[Vec<f32>],
    device: &B::Device,
) -> anyhow::Result<Vec<f32>> {
    let refused = |e: padam::StepError<One<B>>| anyhow::anyhow!("{}: {}", case.name, e.error);
    let mut m = One::<B>::new(w0, device);
    for (k, g) in grads.iter().enumerate() {
        let gp = One::<B>::grads(m.w.id, g, device);
        m = optim.try_step(case.lr(k), m, gp).map_err(refused)?;
    }
    let m = optim.settle(m).map_err(refused)?;
    Ok(to_vec(m.w.val()))
}

pub(super) fn verify<B: AutodiffBackend>(args: &VerifyArgs) -> anyhow::Result<()> {
    let device = crate::backend::default_device::<B>();
    let n = args.numel;
    let w0 = tricky_values(n, args.seed);
    let grads: Vec<Vec<f32>> = (0..args.steps)
        .map(|k| {
            tricky_values(n, args.seed + 100 + k as u64)
                .iter()
                .map(|g| g * 0.1)
                .collect()
        })
        .collect();
    let grads64: Vec<Vec<f64>> = grads
        .iter()
        .map(|g| g.iter().map(|&x| x as f64).collect())
        .collect();
    let w064: Vec<f64> = w0.iter().map(|&x| x as f64).collect();
    let mut rows = Vec::new();
    for case in cases() {
        match case.probe {
            Probe::Trajectory => {
                let decayed = case.is_decayed("w", 1);
                match case.reference(&w064, &grads64, decayed) {
                    // The fused kernel (where the backend has it) and the tensor-op path.
                    Some(traj) => {
                        let want = traj.last().cloned().unwrap_or_else(|| w064.clone());
                        rows.extend(verify_paths::<B>(&case, &w0, &grads, &want, &device)?);
                    }
                    // pWD around other burn optimizers: the base's own step (w_hat) comes from
                    // burn on this backend, the decay from the float64 reference.
                    None => rows.push(verify_wrapped::<B>(&case, decayed, &w0, &grads, &device)?),
                }
            }
            Probe::RefuseNonFinite => {
                rows.push(verify_non_finite_refusal::<B>(&case, &w0, &grads, &device)?)
            }
            Probe::RefuseWindow { settle } => rows.push(verify_deferred_refusal::<B>(
                &case, settle, &w0, &grads, &device,
            )?),
        }
    }

    rows.extend(verify_many_tensors::<B>(args, &device)?);
    rows.extend(verify_layers::<B>(&device));

    let width = rows.iter().map(|c| c.name.len()).max().unwrap_or(0).max(42);
    println!(
        "{:width$} {:>12} {:>14}  result",
        "case", "rel. error", "zeros broken"
    );
    let mut failed = 0;
    for c in &rows {
        println!(
            "{:width$} {:>12.3e} {:>14}  {}",
            c.name,
            c.max_rel_err,
            c.nonzero_at_zero,
            if c.ok { "ok" } else { "FAIL" }
        );
        failed += usize::from(!c.ok);
    }
    println!("{} passed, {} failed", rows.len() - failed, failed);
    if failed > 0 {
        anyhow::bail!("{failed} cases failed (see FAIL above)");
    }
    Ok(())
}

/// Where the models' layers run as native ops on this backend (`models::ops`: LibTorch), each
/// layer case against burn's own modules on burn-flex: outputs, gradients and running
/// statistics, relative to each tensor's largest magnitude. On a GPU the bound is 5e-3, not
/// 1e-5: PyTorch's convolutions and our matmuls run on TF32 tensor cores there.
fn verify_layers<B: AutodiffBackend>(device: &B::Device) -> Vec<VerifyCase> {
    use crate::models::ops::{self, cases};
    if !ops::native_on::<B>() {
        return Vec::new();
    }
    let on_gpu = format!("{device:?}").to_lowercase().contains("cuda");
    let bound = if on_gpu { 5e-3 } else { 1e-5 };
    let want = cases::run_all::<burn::backend::Autodiff<crate::backend::Cpu>>();
    let got = cases::run_all::<B>();
    got.into_iter()
        .zip(want)
        .map(|((case, got), (_, want))| {
            let (tensor, d) = cases::worst_difference(&got, &want);
            VerifyCase {
                name: format!("{case}: native vs burn-flex, worst {tensor}"),
                max_rel_err: d as f64,
                nonzero_at_zero: 0,
                ok: d <= bound,
            }
        })
        .collect()
}

/// `case` on this backend through each implementation it has (only PAdam has the fused
/// kernels: the multi-tensor one where the backend has it, one kernel per tensor, the tensor
/// ops), each against the float64 result `want`, and against each other: the multi-tensor
/// kernel against the per-tensor kernel (the same arithmetic: a line says how many weights
/// differ in their bits), the per-tensor kernel against the tensor ops. The row names say which
/// implementation actually ran.
fn verify_paths<B: AutodiffBackend>(
    case: &Case,
    w0: &[f32],
    grads: &[Vec<f32>],
    want: &[f64],
    device: &B::Device,
) -> anyhow::Result<Vec<VerifyCase>> {
    let mut results = Vec::new();
    let mut runs: Vec<(&str, Vec<f32>)> = Vec::new();
    for build in [0, 1, 2] {
        let optim = match build {
            0 => case.build::<B, One<B>>(true)?,
            1 => case.build_per_tensor::<B, One<B>>()?,
            _ => case.build::<B, One<B>>(false)?,
        };
        let path = path_name(optim.as_ref());
        if runs.iter().any(|(p, _)| *p == path) {
            continue; // this path already ran (no such kernel on this backend or for this case)
        }
        let got = run_case::<B>(optim, case, w0, grads, device)?;
        results.push(compare(format!("{} [{path}]", case.name), &got, want));
        runs.push((path, got));
    }
    let run = |path: &str| runs.iter().find(|(p, _)| *p == path).map(|(_, w)| w);
    if let (Some(multi), Some(per_tensor)) = (run(MULTI), run(PER_TENSOR)) {
        let row = format!("{} [multi vs per-tensor kernel]", case.name);
        results.push(against(row, multi, per_tensor));
    }
    if let (Some(fused), Some(ops)) = (run(PER_TENSOR).or(run(MULTI)), run(TENSOR_OPS)) {
        let row = format!("{} [fused vs tensor ops]", case.name);
        results.push(against(row, fused, ops));
    }
    Ok(results)
}

/// The row `name` comparing two implementations' weights, and a line with how many differ in
/// their bits.
fn against(name: String, got: &[f32], oracle: &[f32]) -> VerifyCase {
    let differ = got
        .iter()
        .zip(oracle)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    println!(
        "{name}: {differ} of {} weights differ in their bits",
        got.len()
    );
    let oracle: Vec<f64> = oracle.iter().map(|&x| x as f64).collect();
    compare(name, got, &oracle)
}

/// After up to two normal steps, a gradient with a NaN and an inf: the case's policy (`Error`)
/// must refuse that step, name the parameter with the exact count (2), hand back the weights
/// as they were, and take the next (finite) step normally.
fn verify_non_finite_refusal<B: AutodiffBackend>(
    case: &Case,
    w0: &[f32],
    grads: &[Vec<f32>],
    device: &B::Device,
) -> anyhow::Result<VerifyCase> {
    anyhow::ensure!(!grads.is_empty(), "--steps 0: no steps to verify");
    let normal = grads.len().min(2);
    let mut optim = case.build::<B, One<B>>(true)?;
    let path = path_name(optim.as_ref());
    let n = w0.len();
    let mut m = One::<B>::new(w0, device);
    let grad = |g: &[f32], id| One::<B>::grads(id, g, device);
    for (k, g) in grads.iter().take(normal).enumerate() {
        let id = m.w.id;
        m = optim
            .try_step(case.lr(k), m, grad(g, id))
            .map_err(|e| anyhow::anyhow!("{}: {}", case.name, e.error))?;
    }
    let before = to_vec(m.w.val());
    let mut bad = grads[0].clone();
    bad[5] = f32::NAN;
    bad[n - 1] = f32::INFINITY;
    let id = m.w.id;
    let lr = case.lr(normal);
    let (ok, detail) = match optim.try_step(lr, m, grad(&bad, id)) {
        Ok(_) => (false, "step taken".to_string()),
        Err(e) => {
            let unchanged = bit_equal(&to_vec(e.module.w.val()), &before);
            let msg = e.error.to_string();
            let named = matches!(
                &e.error,
                padam::StepFailure::NonFiniteGradient(g)
                    if g.params.len() == 1 && g.params[0].count == Some(2) && g.params[0].path == "w"
            );
            // The optimizer must still step normally afterwards, from the same weights.
            let next = optim.try_step(lr, e.module, grad(&grads[0], id));
            (
                unchanged && named && next.is_ok() && optim.steps() == normal + 1,
                format!("{msg}; weights unchanged: {unchanged}"),
            )
        }
    };
    Ok(refusal_row(case, path, ok, &detail))
}

/// The row of a refusal check: printed with its detail; a failure counts as one bad entry.
fn refusal_row(case: &Case, path: &str, ok: bool, detail: &str) -> VerifyCase {
    println!("{} [{path}]: {detail}", case.name);
    VerifyCase {
        name: format!("{} [{path}]", case.name),
        max_rel_err: 0.0,
        nonzero_at_zero: usize::from(!ok),
        ok,
    }
}

/// Whether two weight vectors are equal bit for bit.
fn bit_equal(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// The deferred check (the case's `check_every`): a finite step, a step whose gradient holds a
/// NaN, then a finite step that fills the window (`check_every` 3), or `settle` (a longer
/// window, read early). The window must be refused (steps 0..=2, or 0..=1 with `settle`,
/// parameter named, no count), hand back `w0` bit for bit and reset the step count.
fn verify_deferred_refusal<B: AutodiffBackend>(
    case: &Case,
    settle: bool,
    w0: &[f32],
    grads: &[Vec<f32>],
    device: &B::Device,
) -> anyhow::Result<VerifyCase> {
    anyhow::ensure!(!grads.is_empty(), "--steps 0: no steps to verify");
    let n = w0.len();
    let grad = |g: &[f32], id| One::<B>::grads(id, g, device);
    let mut bad = grads[0].clone();
    bad[n / 2] = f32::NAN;
    let good = &grads[grads.len() - 1];
    let mut optim = case.build::<B, One<B>>(true)?;
    let path = path_name(optim.as_ref());
    let m = One::<B>::new(w0, device);
    let id = m.w.id;
    let mut result = optim.try_step(case.lr(0), m, grad(good, id));
    if let Ok(m) = result {
        result = optim.try_step(case.lr(1), m, grad(&bad, id));
    }
    if let Ok(m) = result {
        result = if settle {
            optim.settle(m)
        } else {
            optim.try_step(case.lr(2), m, grad(good, id))
        };
    }
    let through = if settle { 1 } else { 2 };
    let (ok, detail) = match result {
        Ok(_) => (false, "not refused".to_string()),
        Err(e) => {
            let restored = bit_equal(&to_vec(e.module.w.val()), w0);
            let named = matches!(
                &e.error,
                padam::StepFailure::NonFiniteGradient(g)
                    if g.step == 0 && g.through == through && g.params.len() == 1
                        && g.params[0].path == "w" && g.params[0].count.is_none()
            );
            let steps_reset = optim.steps() == 0;
            let settled = match optim.try_step(case.lr(0), e.module, grad(good, id)) {
                Ok(m) => optim.settle(m).is_ok(),
                Err(_) => false,
            };
            (
                restored && named && steps_reset && settled && optim.steps() == 1,
                format!("settle {settle}: {}; w0 restored: {restored}", e.error),
            )
        }
    };
    Ok(refusal_row(case, path, ok, &detail))
}

/// pWD around a base without a float64 reference: each step, `w_new` must equal
/// `w_hat * factor(w_old)` where `w_hat` comes from the bare base optimizer (burn's, on this
/// backend) stepping from the same weights and state, and the factor from the float64 decay.
fn verify_wrapped<B: AutodiffBackend>(
    case: &Case,
    decayed: bool,
    w0: &[f32],
    grads: &[Vec<f32>],
    device: &B::Device,
) -> anyhow::Result<VerifyCase> {
    let mut wrapped = case.build::<B, One<B>>(true)?;
    let path = path_name(wrapped.as_ref());
    let mut bare = case.build_base::<B, One<B>>();
    let refused = |e: padam::StepError<One<B>>| anyhow::anyhow!("{}: {}", case.name, e.error);
    let mut m = One::<B>::new(w0, device);
    let mut s = vec![1.0; w0.len()];
    let (mut num, mut den, mut broken) = (0.0f64, 0.0f64, 0usize);
    for (k, g) in grads.iter().enumerate() {
        let lr = case.lr(k);
        let w_old = to_vec(m.w.val());
        let grad = |id| One::<B>::grads(id, g, device);
        // Same parameter id and weights: the bare optimizer's state advances in lockstep.
        let hat = bare
            .try_step(lr, One { w: m.w.clone() }, grad(m.w.id))
            .map_err(refused)?;
        let mut want: Vec<f64> = to_vec(hat.w.val()).iter().map(|&x| x as f64).collect();
        if decayed {
            let w_old: Vec<f64> = w_old.iter().map(|&x| x as f64).collect();
            reference::apply_decay(&mut want, &w_old, &mut s, lr, &case.decay(k));
        }
        let id = m.w.id;
        m = wrapped.try_step(lr, m, grad(id)).map_err(refused)?;
        let got = to_vec(m.w.val());
        for (&got, &want) in got.iter().zip(&want) {
            let d = got as f64 - want;
            num += d * d;
            den += want * want;
            if (want == 0.0 && got != 0.0) || !got.is_finite() {
                broken += 1;
            }
        }
    }
    let rel = (num / den.max(1e-300)).sqrt();
    Ok(VerifyCase {
        name: format!("{} [{path}]", case.name),
        max_rel_err: rel,
        nonzero_at_zero: broken,
        ok: rel < 1e-5 && broken == 0,
    })
}

/// Many parameters: 30 vectors (not decayed under `matrices_only`) and 15 matrices (decayed),
/// 45 tensors of assorted lengths, so the multi-tensor kernel takes them in several launches
/// that mix decay modes.
#[derive(Module, Debug)]
struct Many<B: Backend> {
    vectors: Vec<Param<Tensor<B, 1>>>,
    matrices: Vec<Param<Tensor<B, 2>>>,
}

const VECTORS: usize = 30;
const MATRICES: usize = 15;

impl<B: AutodiffBackend> Many<B> {
    fn new(seed: u64, device: &B::Device) -> Self {
        let vector = |k: usize| {
            let n = (k * 37) % 500 + 1;
            let data = TensorData::new(tricky_values(n, seed + k as u64), [n]);
            Param::from_tensor(Tensor::from_data(data, device))
        };
        let matrix = |k: usize| {
            let shape = [k % 7 + 1, 33];
            let data = TensorData::new(tricky_values(shape[0] * 33, seed + 50 + k as u64), shape);
            Param::from_tensor(Tensor::from_data(data, device))
        };
        Many {
            vectors: (0..VECTORS).map(vector).collect(),
            matrices: (0..MATRICES).map(matrix).collect(),
        }
    }

    /// Gradients of step `step` for every parameter; `bad`: (vector index, value) written into
    /// entry 0 of that vector's gradient, and (matrix index, value) into that matrix's.
    fn grads(&self, step: u64, bad: &[(bool, usize, f32)], device: &B::Device) -> GradientsParams {
        let mut gp = GradientsParams::new();
        let values = |n: usize, k: usize, matrix: bool| {
            let mut g: Vec<f32> =
                tricky_values(n, 1000 * step + k as u64 + 500 * u64::from(matrix))
                    .iter()
                    .map(|g| g * 0.1)
                    .collect();
            for &(m, i, x) in bad {
                if m == matrix && i == k {
                    g[0] = x;
                }
            }
            g
        };
        for (k, p) in self.vectors.iter().enumerate() {
            let shape = p.val().dims();
            let data = TensorData::new(values(shape[0], k, false), shape);
            gp.register(p.id, Tensor::<B::InnerBackend, 1>::from_data(data, device));
        }
        for (k, p) in self.matrices.iter().enumerate() {
            let shape = p.val().dims();
            let data = TensorData::new(values(shape[0] * shape[1], k, true), shape);
            gp.register(p.id, Tensor::<B::InnerBackend, 2>::from_data(data, device));
        }
        gp
    }

    /// Every weight, parameter after parameter.
    fn weights(&self) -> Vec<f32> {
        let mut out = Vec::new();
        for p in &self.vectors {
            out.extend(to_vec(p.val()));
        }
        for p in &self.matrices {
            out.extend(to_vec(p.val()));
        }
        out
    }
}

/// [`Many`] through each implementation for `--steps` steps (PAdam, p 0.8, λ 1e-2 on the
/// matrices, the per-step check): the multi-tensor kernel (where the backend has it) against
/// the per-tensor kernel and the tensor ops; then its refusals, a NaN and an inf in tensors of
/// different launches, per step (both named with their counts, weights unchanged) and deferred
/// (`check_every` 2: the window refused, the weights from its start back). Rows only where the
/// backend has the multi-tensor kernel.
fn verify_many_tensors<B: AutodiffBackend>(
    args: &VerifyArgs,
    device: &B::Device,
) -> anyhow::Result<Vec<VerifyCase>> {
    let config = |policy: NonFinitePolicy, every: usize| {
        PAdamConfig::new()
            .with_p(0.8)
            .with_lambda(1e-2)
            .with_selection(ParamSelection::matrices_only())
            .with_non_finite(policy)
            .with_check_every(every)
    };
    let multi = config(NonFinitePolicy::Error, 1).init::<B, Many<B>>()?;
    if !multi.uses_multi_tensor_kernel() {
        return Ok(Vec::new());
    }
    let name = format!("multi-tensor, {} tensors", VECTORS + MATRICES);
    let model = Many::<B>::new(args.seed, device);
    let steps = args.steps.max(1) as u64;
    let lr = 1e-2;
    let run = |mut optim: Box<dyn Stepper<Many<B>, B>>| -> anyhow::Result<Vec<f32>> {
        let mut m = model.clone();
        for k in 0..steps {
            let gp = m.grads(k, &[], device);
            m = optim
                .try_step(lr, m, gp)
                .map_err(|e| anyhow::anyhow!("{name}: {}", e.error))?;
        }
        Ok(m.weights())
    };
    let multi_w = run(Box::new(multi))?;
    let per_tensor = run(Box::new(
        config(NonFinitePolicy::Error, 1)
            .with_multi_tensor(false)
            .init::<B, Many<B>>()?,
    ))?;
    let ops = run(Box::new(
        config(NonFinitePolicy::Error, 1)
            .with_fused_kernel(false)
            .init::<B, Many<B>>()?,
    ))?;
    let mut rows = Vec::new();
    for (what, oracle) in [("per-tensor kernel", &per_tensor), ("tensor ops", &ops)] {
        rows.push(against(
            format!("{name} [{MULTI} vs {what}]"),
            &multi_w,
            oracle,
        ));
    }
    // Vector 25 is in the second launch, matrix 10 (tensor 40) in the third.
    let bad = [(false, 25, f32::NAN), (true, 10, f32::INFINITY)];
    let mut optim = config(NonFinitePolicy::Error, 1).init::<B, Many<B>>()?;
    let m = model.clone();
    let gp = m.grads(0, &[], device);
    let m = optim
        .try_step(lr, m, gp)
        .map_err(|e| anyhow::anyhow!("{name}: {}", e.error))?;
    let before = m.weights();
    let gp = m.grads(1, &bad, device);
    let (ok, detail) = match optim.try_step(lr, m, gp) {
        Ok(_) => (false, "step taken".to_string()),
        Err(e) => {
            let unchanged = bit_equal(&e.module.weights(), &before);
            let named = matches!(
                &e.error,
                padam::StepFailure::NonFiniteGradient(g)
                    if g.params.len() == 2
                        && g.params.iter().all(|p| p.count == Some(1))
                        && g.params.iter().any(|p| p.path == "vectors.25")
                        && g.params.iter().any(|p| p.path == "matrices.10")
            );
            (
                unchanged && named,
                format!("{}; weights unchanged: {unchanged}", e.error),
            )
        }
    };
    rows.push(many_refusal_row(
        &format!("{name}, NaN and inf refused [{MULTI}]"),
        ok,
        &detail,
    ));
    let mut optim = config(NonFinitePolicy::Error, 2).init::<B, Many<B>>()?;
    let m = model.clone();
    let gp = m.grads(0, &[], device);
    let mut result = optim.try_step(lr, m, gp);
    if let Ok(m) = result {
        let gp = m.grads(1, &bad[..1], device);
        result = optim.try_step(lr, m, gp);
    }
    let (ok, detail) = match result {
        Ok(_) => (false, "not refused".to_string()),
        Err(e) => {
            let restored = bit_equal(&e.module.weights(), &model.weights());
            let named = matches!(
                &e.error,
                padam::StepFailure::NonFiniteGradient(g)
                    if g.step == 0 && g.through == 1 && g.params.len() == 1
                        && g.params[0].path == "vectors.25" && g.params[0].count.is_none()
            );
            (
                restored && named,
                format!("{}; w0 restored: {restored}", e.error),
            )
        }
    };
    rows.push(many_refusal_row(
        &format!("{name}, deferred window refused [{MULTI}]"),
        ok,
        &detail,
    ));
    Ok(rows)
}

/// A refusal row of [`verify_many_tensors`].
fn many_refusal_row(name: &str, ok: bool, detail: &str) -> VerifyCase {
    println!("{name}: {detail}");
    VerifyCase {
        name: name.to_string(),
        max_rel_err: 0.0,
        nonzero_at_zero: usize::from(!ok),
        ok,
    }
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec()
        .expect("float tensor converts to f32")
}
