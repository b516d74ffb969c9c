//! `padam bench verify`: every optimizer's step on this backend against the float64 reference.

use burn::module::{Module, Param, ParamId};
use burn::optim::{AdaGradConfig, GradientsParams, Optimizer, RmsPropConfig, SimpleOptimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use padam::reference::{self, AdamParams, Decay, SgdParams};
use padam::{PAdamConfig, PSgdConfig, PWdConfig, Schedule};

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
    name: &'static str,
    max_rel_err: f64,
    nonzero_at_zero: usize,
    ok: bool,
}

fn run_case<B, O>(
    mut optim: O,
    w0: &[f32],
    grads: &[Vec<f32>],
    lr: f64,
    device: &B::Device,
) -> Vec<f32>
where
    B: AutodiffBackend,
    O: Optimizer<One<B>, B>,
{
    let mut m = One::<B>::new(w0, device);
    for g in grads {
        let gp = One::<B>::grads(m.w.id, g, device);
        m = optim.step(lr, m, gp);
    }
    to_vec(m.w.val())
}

pub(super) fn verify<B: AutodiffBackend>(args: &VerifyArgs) -> anyhow::Result<()> {
    let device = B::Device::default();
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
    let lr = 1e-2;
    let adam = AdamParams {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    let mut cases = Vec::new();
    let compare = |name: &'static str, got: Vec<f32>, want: Vec<f64>| -> VerifyCase {
        let (mut num, mut den) = (0.0f64, 0.0f64);
        let mut nonzero_at_zero = 0;
        for i in 0..n {
            let d = got[i] as f64 - want[i];
            num += d * d;
            den += want[i] * want[i];
            if want[i] == 0.0 && got[i] != 0.0 {
                nonzero_at_zero += 1;
            }
            if !got[i].is_finite() {
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
    };
    for &(p, lambda) in &[
        (0.5, 1e-2),
        (0.8, 1e-3),
        (1.0, 1e-2),
        (1.5, 1e-1),
        (2.0, 1e-2),
        (3.0, 1e-2),
    ] {
        let decay = Decay::new(p, lambda);
        // PAdam: the fused kernel (where the backend has it) and the tensor-op path.
        let mut st = reference::AdamState::new(n);
        let want = reference_run(&w064, &grads64, |w, g, _| {
            reference::padam_step(w, g, &mut st, lr, &adam, &decay)
        });
        let config = PAdamConfig::new().with_p(p).with_lambda(lambda);
        cases.extend(verify_padam_paths::<B>(
            &format!("padam p={p} lambda={lambda}"),
            &config,
            &w0,
            &grads,
            &want,
            lr,
            &device,
            &compare,
        )?);
        // pSGD with Nesterov momentum
        let sp = SgdParams {
            momentum: 0.9,
            dampening: 0.0,
            nesterov: true,
        };
        let optim = PSgdConfig::new()
            .with_momentum(0.9)
            .with_nesterov(true)
            .with_p(p)
            .with_lambda(lambda)
            .init::<B, One<B>>()?;
        let got = run_case::<B, _>(optim, &w0, &grads, lr, &device);
        let mut st = reference::SgdState::new(n);
        let want = reference_run(&w064, &grads64, |w, g, _| {
            reference::psgd_step(w, g, &mut st, lr, &sp, &decay)
        });
        let mut c = compare("psgd", got, want);
        c.name = leak(format!("psgd nesterov p={p} lambda={lambda}"));
        cases.push(c);
    }
    // Extensions: elastic net, non-adiabatic s, p schedule.
    {
        let decay = Decay {
            p: 0.8,
            lambda: 1e-2,
            lambda2: 0.5,
            s_rate: Some(0.3),
        };
        let optim = PAdamConfig::new()
            .with_p(0.8)
            .with_lambda(1e-2)
            .with_lambda2(0.5)
            .with_s_rate(0.3)
            .init::<B, One<B>>()?;
        let got = run_case::<B, _>(optim, &w0, &grads, lr, &device);
        let mut st = reference::AdamState::new(n);
        let want = reference_run(&w064, &grads64, |w, g, _| {
            reference::padam_step(w, g, &mut st, lr, &adam, &decay)
        });
        let mut c = compare("padam", got, want);
        c.name = "padam elastic-net + non-adiabatic s";
        cases.push(c);

        let decay = Decay {
            p: 0.8,
            lambda: 1e-2,
            lambda2: 0.5,
            s_rate: None,
        };
        let mut st = reference::AdamState::new(n);
        let want = reference_run(&w064, &grads64, |w, g, _| {
            reference::padam_step(w, g, &mut st, lr, &adam, &decay)
        });
        let config = PAdamConfig::new()
            .with_p(0.8)
            .with_lambda(1e-2)
            .with_lambda2(0.5);
        cases.extend(verify_padam_paths::<B>(
            "padam elastic-net",
            &config,
            &w0,
            &grads,
            &want,
            lr,
            &device,
            &compare,
        )?);

        // Outside the decay selection (a vector with matrices-only selection): plain Adam.
        let decay = Decay::new(0.8, 0.0);
        let mut st = reference::AdamState::new(n);
        let want = reference_run(&w064, &grads64, |w, g, _| {
            reference::padam_step(w, g, &mut st, lr, &adam, &decay)
        });
        let config = PAdamConfig::new()
            .with_p(0.8)
            .with_lambda(1e-2)
            .with_selection(padam::ParamSelection::matrices_only());
        cases.extend(verify_padam_paths::<B>(
            "padam, parameter not decayed",
            &config,
            &w0,
            &grads,
            &want,
            lr,
            &device,
            &compare,
        )?);

        let sched = Schedule::p_anneal(0.6, 3);
        let mut st = reference::AdamState::new(n);
        let want = reference_run(&w064, &grads64, |w, g, t| {
            let decay = Decay::new(sched.value(t), 1e-2);
            reference::padam_step(w, g, &mut st, lr, &adam, &decay)
        });
        let config = PAdamConfig::new()
            .with_p_schedule(sched.clone())
            .with_lambda(1e-2);
        cases.extend(verify_padam_paths::<B>(
            "padam p schedule 2 -> 0.6",
            &config,
            &w0,
            &grads,
            &want,
            lr,
            &device,
            &compare,
        )?);
        cases.push(verify_non_finite_refusal::<B>(&w0, &grads, lr, &device)?);
        cases.push(verify_deferred_refusal::<B>(&w0, &grads, lr, &device)?);
    }
    // pWD around other burn optimizers: the base's own step (w_hat) comes from burn on this
    // backend, the decay from the float64 reference.
    cases.push(verify_wrapped::<B, _>(
        "pwd(rmsprop)",
        RmsPropConfig::new().build(),
        &w0,
        &grads,
        lr,
        &device,
    )?);
    cases.push(verify_wrapped::<B, _>(
        "pwd(adagrad)",
        AdaGradConfig::new().build(),
        &w0,
        &grads,
        lr,
        &device,
    )?);

    println!(
        "{:42} {:>12} {:>14}  result",
        "case", "rel. error", "zeros broken"
    );
    let mut failed = 0;
    for c in &cases {
        println!(
            "{:42} {:>12.3e} {:>14}  {}",
            c.name,
            c.max_rel_err,
            c.nonzero_at_zero,
            if c.ok { "ok" } else { "FAIL" }
        );
        failed += usize::from(!c.ok);
    }
    println!("{} passed, {} failed", cases.len() - failed, failed);
    if failed > 0 {
        anyhow::bail!("{failed} optimizer cases differ from the float64 reference");
    }
    Ok(())
}

/// PAdam `config` on this backend through both implementations, each against the float64
/// result `want`, and the two against each other (the fused kernel must compute what the
/// tensor ops compute). The case names say which implementation actually ran.
#[allow(clippy::too_many_arguments)]
fn verify_padam_paths<B: AutodiffBackend>(
    name: &str,
    config: &PAdamConfig,
    w0: &[f32],
    grads: &[Vec<f32>],
    want: &[f64],
    lr: f64,
    device: &B::Device,
    compare: &dyn Fn(&'static str, Vec<f32>, Vec<f64>) -> VerifyCase,
) -> anyhow::Result<Vec<VerifyCase>> {
    let mut results = Vec::new();
    let mut runs = Vec::new();
    for fused in [true, false] {
        let optim = config
            .clone()
            .with_fused_kernel(fused)
            .init::<B, One<B>>()?;
        let path = if optim.uses_fused_kernel() {
            "fused kernel"
        } else {
            "tensor ops"
        };
        if runs.iter().any(|(p, _)| *p == path) {
            continue; // no kernel on this backend: the tensor path already ran
        }
        let got = run_case::<B, _>(optim, w0, grads, lr, device);
        let mut c = compare("padam", got.clone(), want.to_vec());
        c.name = leak(format!("{name} [{path}]"));
        results.push(c);
        runs.push((path, got));
    }
    if runs.len() == 2 {
        let tensor_ops: Vec<f64> = runs[1].1.iter().map(|&x| x as f64).collect();
        let mut c = compare("padam", runs[0].1.clone(), tensor_ops);
        c.name = leak(format!("{name} [fused vs tensor ops]"));
        results.push(c);
    }
    Ok(results)
}

/// After up to two normal steps, a gradient with a NaN and an inf: the default policy must
/// refuse that step, name the parameter with the exact count (2), hand back the weights as
/// they were, and take the next (finite) step normally.
fn verify_non_finite_refusal<B: AutodiffBackend>(
    w0: &[f32],
    grads: &[Vec<f32>],
    lr: f64,
    device: &B::Device,
) -> anyhow::Result<VerifyCase> {
    anyhow::ensure!(!grads.is_empty(), "--steps 0: no steps to verify");
    let normal = grads.len().min(2);
    let mut optim = PAdamConfig::new()
        .with_p(0.8)
        .with_lambda(1e-2)
        .init::<B, One<B>>()?;
    let path = if optim.uses_fused_kernel() {
        "fused kernel"
    } else {
        "tensor ops"
    };
    let n = w0.len();
    let mut m = One::<B>::new(w0, device);
    let grad = |g: &[f32], id| One::<B>::grads(id, g, device);
    for g in grads.iter().take(normal) {
        let id = m.w.id;
        m = optim.step(lr, m, grad(g, id));
    }
    let before = to_vec(m.w.val());
    let mut bad = grads[0].clone();
    bad[5] = f32::NAN;
    bad[n - 1] = f32::INFINITY;
    let id = m.w.id;
    let (ok, detail) = match optim.try_step(lr, m, grad(&bad, id)) {
        Ok(_) => (false, "step taken".to_string()),
        Err(e) => {
            let after = to_vec(e.module.w.val());
            let unchanged = after
                .iter()
                .zip(&before)
                .all(|(a, b)| a.to_bits() == b.to_bits());
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
    println!("non-finite refusal [{path}]: {detail}");
    Ok(VerifyCase {
        name: leak(format!("padam refuses a NaN/inf gradient [{path}]")),
        max_rel_err: 0.0,
        nonzero_at_zero: usize::from(!ok),
        ok,
    })
}

/// The deferred check (`check_every` 3): a finite step, a step whose gradient holds a NaN,
/// then a finite step that fills the window. The third step must refuse all three (steps
/// 0..=2, parameter named, no count), hand back `w0` bit for bit and reset the step count;
/// the same with `settle` after the NaN step (window of 10, read early).
fn verify_deferred_refusal<B: AutodiffBackend>(
    w0: &[f32],
    grads: &[Vec<f32>],
    lr: f64,
    device: &B::Device,
) -> anyhow::Result<VerifyCase> {
    anyhow::ensure!(!grads.is_empty(), "--steps 0: no steps to verify");
    let n = w0.len();
    let grad = |g: &[f32], id| One::<B>::grads(id, g, device);
    let mut bad = grads[0].clone();
    bad[n / 2] = f32::NAN;
    let good = &grads[grads.len() - 1];
    let mut path = "tensor ops";
    let mut details = Vec::new();
    let mut ok = true;
    for settle in [false, true] {
        let mut optim = PAdamConfig::new()
            .with_p(0.8)
            .with_lambda(1e-2)
            .with_check_every(if settle { 10 } else { 3 })
            .init::<B, One<B>>()?;
        if optim.uses_fused_kernel() {
            path = "fused kernel";
        }
        let m = One::<B>::new(w0, device);
        let id = m.w.id;
        let mut result = optim.try_step(lr, m, grad(good, id));
        if let Ok(m) = result {
            result = optim.try_step(lr, m, grad(&bad, id));
        }
        if let Ok(m) = result {
            result = if settle {
                optim.settle(m)
            } else {
                optim.try_step(lr, m, grad(good, id))
            };
        }
        let through = if settle { 1 } else { 2 };
        let case_ok = match result {
            Ok(_) => {
                details.push(format!("settle {settle}: not refused"));
                false
            }
            Err(e) => {
                let after = to_vec(e.module.w.val());
                let restored = after
                    .iter()
                    .zip(w0)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                let named = matches!(
                    &e.error,
                    padam::StepFailure::NonFiniteGradient(g)
                        if g.step == 0 && g.through == through && g.params.len() == 1
                            && g.params[0].path == "w" && g.params[0].count.is_none()
                );
                let steps_reset = optim.steps() == 0;
                let settled = match optim.try_step(lr, e.module, grad(good, id)) {
                    Ok(m) => optim.settle(m).is_ok(),
                    Err(_) => false,
                };
                details.push(format!(
                    "settle {settle}: {}; w0 restored: {restored}",
                    e.error
                ));
                restored && named && steps_reset && settled && optim.steps() == 1
            }
        };
        ok &= case_ok;
    }
    println!(
        "deferred non-finite refusal [{path}]: {}",
        details.join(" | ")
    );
    Ok(VerifyCase {
        name: leak(format!(
            "padam refuses a window with a NaN gradient [{path}]"
        )),
        max_rel_err: 0.0,
        nonzero_at_zero: usize::from(!ok),
        ok,
    })
}

/// Run a float64 reference optimizer from `w0` over `grads`; `step(w, g, t)` is one step.
fn reference_run(
    w0: &[f64],
    grads: &[Vec<f64>],
    mut step: impl FnMut(&mut [f64], &[f64], usize),
) -> Vec<f64> {
    let mut w = w0.to_vec();
    for (t, g) in grads.iter().enumerate() {
        step(&mut w, g, t);
    }
    w
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// pWD around `base`: each step, `w_new` must equal `w_hat * factor(w_old)` where `w_hat` comes
/// from the bare base optimizer stepping from the same weights and state.
fn verify_wrapped<B, O>(
    name: &'static str,
    base: O,
    w0: &[f32],
    grads: &[Vec<f32>],
    lr: f64,
    device: &B::Device,
) -> anyhow::Result<VerifyCase>
where
    B: AutodiffBackend,
    O: SimpleOptimizer<B::InnerBackend>,
{
    let (p, lambda) = (0.7, 1e-2);
    let n = w0.len();
    let mut wrapped = PWdConfig::new()
        .with_p(p)
        .with_lambda(lambda)
        .init_with::<B, One<B>, _>(base.clone())?;
    let mut bare = burn::optim::adaptor::OptimizerAdaptor::<O, One<B>, B>::from(base);
    let mut m = One::<B>::new(w0, device);
    let (mut num, mut den, mut broken) = (0.0f64, 0.0f64, 0usize);
    for g in grads {
        let w_old = to_vec(m.w.val());
        let grad = |id| One::<B>::grads(id, g, device);
        // Same parameter id and weights: the bare optimizer's state advances in lockstep.
        let w_hat = to_vec(bare.step(lr, One { w: m.w.clone() }, grad(m.w.id)).w.val());
        let id = m.w.id;
        m = wrapped.step(lr, m, grad(id));
        let got = to_vec(m.w.val());
        for i in 0..n {
            let want =
                w_hat[i] as f64 * reference::factor(w_old[i] as f64, lr, p, lambda, 0.0, None);
            let d = got[i] as f64 - want;
            num += d * d;
            den += want * want;
            if (want == 0.0 && got[i] != 0.0) || !got[i].is_finite() {
                broken += 1;
            }
        }
    }
    let rel = (num / den.max(1e-300)).sqrt();
    Ok(VerifyCase {
        name,
        max_rel_err: rel,
        nonzero_at_zero: broken,
        ok: rel < 1e-5 && broken == 0,
    })
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec()
        .expect("float tensor converts to f32")
}
