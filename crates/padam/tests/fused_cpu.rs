//! Every case of the table `padam::cases::cases()` on the CPU (`burn::backend::Flex`): the
//! default step (the fused PAdam step, module `fused`, where the case allows it, and the fused
//! decay after every other base) against the tensor-op path, bit for bit, and both against the float64 reference, on random weights with
//! exact zeros and tiny values, over several steps; and the table's non-finite refusals on both
//! paths. The table covers every decay mode the fused step has (pWD for p < 1, 1 <= p < 2 and
//! p > 2; the uniform factor at p = 2 and lambda = 0; parameters outside the decay selection;
//! the elastic-net lambda2) and the cases it hands to the tensor ops (pSGD and pWD around other
//! bases, whose decay is fused; non-adiabatic s, `SkipTensor`). The same table runs on any backend as
//! `padam bench verify` (`--backend cuda` for the GPU).

mod common;

use burn::module::Param;
use burn::nn::Linear;
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use common::*;
use padam::cases::{cases, Case, Probe, Stepper};
use padam::reference;
use padam::{NonFiniteParam, PAdamConfig, StepFailure};

/// A 16 -> 24 Linear whose weights mix ordinary values, exact zeros and tiny magnitudes
/// (1e-30 .. 1e-40, subnormal in f32), so the pWD factor meets `|0|^(p-2) = inf` and huge
/// finite powers.
fn layer(seed: u64) -> Linear<B> {
    let mut rng = Rng::new(seed);
    let mut w = rng.vec(16 * 24, -0.5, 0.5);
    for (i, x) in w.iter_mut().enumerate() {
        match i % 7 {
            0 => *x = 0.0,
            3 => *x *= 1e-30,
            5 => *x = (*x).signum() * 1e-40,
            _ => {}
        }
    }
    Linear {
        weight: Param::from_tensor(tensor2::<B>(&w, 16, 24)),
        bias: Some(Param::from_tensor(tensor1::<B>(&rng.vec(24, -0.1, 0.1)))),
    }
}

/// Gradients of step `k` as values: random, with some exact zeros and some tiny entries.
fn grad_values(k: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(500 + k);
    let mut gw = rng.vec(16 * 24, -1.0, 1.0);
    for (i, x) in gw.iter_mut().enumerate() {
        match i % 11 {
            0 => *x = 0.0,
            4 => *x *= 1e-20,
            _ => {}
        }
    }
    let gb = rng.vec(24, -1.0, 1.0);
    (gw, gb)
}

/// `gw` and `gb` as the gradients of `m`'s weight and bias.
fn grads_of(m: &Linear<B>, gw: &[f32], gb: &[f32]) -> GradientsParams {
    let mut g = GradientsParams::new();
    g.register(m.weight.id, tensor2::<IB>(gw, 16, 24));
    g.register(m.bias.as_ref().unwrap().id, tensor1::<IB>(gb));
    g
}

/// Gradients of step `k` for `m`.
fn grads(m: &Linear<B>, k: u64) -> GradientsParams {
    let (gw, gb) = grad_values(k);
    grads_of(m, &gw, &gb)
}

fn weights(m: &Linear<B>) -> (Vec<f32>, Vec<f32>) {
    let m = m.clone();
    let w: Tensor<B, 2> = m.weight.val();
    let b: Tensor<B, 1> = m.bias.unwrap().val();
    (read(w), read(b))
}

const STEPS: u64 = 6;

/// The case's optimizer on the default path (fused where the case allows it) and on the
/// tensor ops, checked to be the paths the case says.
fn both_paths(case: &Case) -> [Box<dyn Stepper<Linear<B>, B>>; 2] {
    let default = case.build::<B, Linear<B>>(true).unwrap();
    let ops = case.build::<B, Linear<B>>(false).unwrap();
    assert_eq!(
        default.uses_fused_kernel(),
        case.fused_expected(),
        "{}: the CPU has the fused step",
        case.name
    );
    assert_eq!(
        default.uses_fused_decay(),
        case.fused_decay_expected(),
        "{}: the CPU has the fused decay",
        case.name
    );
    assert!(!ops.uses_fused_kernel(), "{}", case.name);
    assert!(!ops.uses_fused_decay(), "{}", case.name);
    [default, ops]
}

/// The float64 weights of every step (weight, bias), from the reference where the base has
/// one, else from the bare base optimizer's own f32 step `w_hat` (burn's, on this backend)
/// and the float64 decay, in lockstep with the weights `traj` the optimizer produced.
fn float64_weights(case: &Case, traj: &[(Vec<f32>, Vec<f32>)]) -> Vec<(Vec<f64>, Vec<f64>)> {
    let (w_decayed, b_decayed) = (case.is_decayed("weight", 2), case.is_decayed("bias", 1));
    let start = layer(7);
    let (w0, b0) = weights(&start);
    let steps: Vec<(Vec<f32>, Vec<f32>)> = (0..STEPS).map(grad_values).collect();
    if case.optimizer.has_reference() {
        let gw: Vec<Vec<f64>> = steps.iter().map(|(w, _)| widen(w)).collect();
        let gb: Vec<Vec<f64>> = steps.iter().map(|(_, b)| widen(b)).collect();
        let rw = case.reference(&widen(&w0), &gw, w_decayed).unwrap();
        let rb = case.reference(&widen(&b0), &gb, b_decayed).unwrap();
        return rw.into_iter().zip(rb).collect();
    }
    let mut base = case.build_base::<B, Linear<B>>();
    let ids = (start.weight.id, start.bias.as_ref().unwrap().id);
    let (mut sw, mut sb) = (vec![1.0; w0.len()], vec![1.0; b0.len()]);
    let mut out = Vec::new();
    for k in 0..STEPS as usize {
        let lr = case.lr(k);
        // Step k starts from the weights the optimizer under test produced, under the same
        // parameter ids every step, so the bare optimizer's state advances in lockstep.
        let (w_old, b_old) = if k == 0 {
            (&w0, &b0)
        } else {
            (&traj[k - 1].0, &traj[k - 1].1)
        };
        let m = Linear {
            weight: Param::initialized(ids.0, tensor2::<B>(w_old, 16, 24).require_grad()),
            bias: Some(Param::initialized(
                ids.1,
                tensor1::<B>(b_old).require_grad(),
            )),
        };
        let g = grads(&m, k as u64);
        let (w_hat, b_hat) = weights(&base.try_step(lr, m, g).unwrap());
        let (mut w, mut b) = (widen(&w_hat), widen(&b_hat));
        let d = case.decay(k);
        if w_decayed {
            reference::apply_decay(&mut w, &widen(w_old), &mut sw, lr, &d);
        }
        if b_decayed {
            reference::apply_decay(&mut b, &widen(b_old), &mut sb, lr, &d);
        }
        out.push((w, b));
    }
    out
}

/// `STEPS` steps of a trajectory case on both paths: every weight bit-equal, and within f32
/// accuracy of the float64 weights.
fn check_trajectory(case: &Case) {
    let name = &case.name;
    let [mut default, mut ops] = both_paths(case);
    let (mut a, mut b) = (layer(7), layer(7));
    let mut traj = Vec::new();
    for k in 0..STEPS {
        let lr = case.lr(k as usize);
        let (ga, gb) = (grads(&a, k), grads(&b, k));
        a = default.try_step(lr, a, ga).unwrap();
        b = ops.try_step(lr, b, gb).unwrap();
        let (fa, fb) = weights(&a);
        let (oa, ob) = weights(&b);
        // Same f32 operations in the same order: the same bits.
        assert_eq!(
            bits(&[fa.clone(), fb.clone()].concat()),
            bits(&[oa, ob].concat()),
            "{name} step {k}: default path (fused: {}) vs tensor ops",
            default.uses_fused_kernel()
        );
        traj.push((fa, fb));
    }
    default.settle(a).unwrap();
    ops.settle(b).unwrap();
    let want = float64_weights(case, &traj);
    let (mut worst_abs, mut worst_rel): (f64, f64) = (0.0, 0.0);
    for (k, ((fa, fb), (rw, rb))) in traj.iter().zip(&want).enumerate() {
        for (i, (x, r)) in fa.iter().chain(fb).zip(rw.iter().chain(rb)).enumerate() {
            let x = *x as f64;
            // Exact zeros stay exact. Elsewhere f32 accuracy as burn's Adam has it: it forms
            // 1 - b2^t in f32, where 0.999 rounds to 0.99900001, so the bias correction is off
            // by ~1.3e-5 relative at t = 1 (the tensor path shares this); and weights that come
            // close to 0 (w_old - lr * update cancelling) keep the absolute error of the larger
            // terms, so the bound has an absolute floor of ~1e-6 of the weights' scale (0.5).
            if *r == 0.0 {
                assert_eq!(x, 0.0, "{name} step {k} element {i}: a zero weight moved");
                continue;
            }
            let err = (x - r).abs();
            assert!(
                err <= 1e-5 * r.abs() + 5e-7,
                "{name} step {k} element {i}: f32 {x:e}, float64 {r:e}"
            );
            worst_abs = worst_abs.max(err);
            if r.abs() > 1e-2 {
                worst_rel = worst_rel.max(err / r.abs());
            }
        }
    }
    println!(
        "{name} (fused: {}): bit-equal to the tensor ops; against float64 worst absolute error \
         {worst_abs:e}, worst relative {worst_rel:e} (weights above 1e-2)",
        case.fused_expected()
    );
}

/// A refusal case on one path (see `Probe`).
fn check_refusal(case: &Case, fused: bool) {
    let ctx = format!("{} (fused: {fused})", case.name);
    let mut optim = case.build::<B, Linear<B>>(fused).unwrap();
    assert_eq!(
        optim.uses_fused_kernel(),
        fused && case.fused_expected(),
        "{ctx}"
    );
    let nf = |e: &StepFailure| match e {
        StepFailure::NonFiniteGradient(g) => g.clone(),
        e => panic!("{ctx}: {e}"),
    };
    match case.probe {
        Probe::Trajectory => unreachable!(),
        Probe::RefuseNonFinite => {
            let mut m = layer(7);
            for k in 0..2 {
                let g = grads(&m, k);
                m = optim.try_step(case.lr(k as usize), m, g).unwrap();
            }
            let before = weights(&m);
            let (mut gw, gb) = grad_values(2);
            gw[5] = f32::NAN;
            *gw.last_mut().unwrap() = f32::INFINITY;
            let bad = grads_of(&m, &gw, &gb);
            let e = optim.try_step(case.lr(2), m, bad).unwrap_err();
            let (w, b) = weights(&e.module);
            assert_eq!(bits(&[w, b].concat()), bits(&[before.0, before.1].concat()));
            let g = nf(&e.error);
            assert_eq!((g.step, g.through), (2, 2), "{ctx}");
            let named = vec![NonFiniteParam {
                path: "weight".into(),
                count: Some(2),
            }];
            assert_eq!(g.params, named, "{ctx}");
            let good = grads(&e.module, 2);
            optim.try_step(case.lr(2), e.module, good).unwrap();
            assert_eq!(optim.steps(), 3, "{ctx}");
        }
        Probe::RefuseWindow { settle } => {
            let m = layer(7);
            let w0 = weights(&m);
            let g = grads(&m, 0);
            let m = optim.try_step(case.lr(0), m, g).unwrap();
            let (mut gw, gb) = grad_values(1);
            let mid = gw.len() / 2;
            gw[mid] = f32::NAN;
            let bad = grads_of(&m, &gw, &gb);
            let m = optim.try_step(case.lr(1), m, bad).unwrap();
            let e = if settle {
                optim.settle(m)
            } else {
                let g = grads(&m, 2);
                optim.try_step(case.lr(2), m, g)
            }
            .unwrap_err();
            let (w, b) = weights(&e.module);
            assert_eq!(bits(&[w, b].concat()), bits(&[w0.0, w0.1].concat()));
            let g = nf(&e.error);
            let through = if settle { 1 } else { 2 };
            assert_eq!((g.step, g.through), (0, through), "{ctx}");
            let named = vec![NonFiniteParam {
                path: "weight".into(),
                count: None,
            }];
            assert_eq!(g.params, named, "{ctx}");
            assert_eq!(optim.steps(), 0, "{ctx}");
            let good = grads(&e.module, 0);
            let m = optim.try_step(case.lr(0), e.module, good).unwrap();
            optim.settle(m).unwrap();
            assert_eq!(optim.steps(), 1, "{ctx}");
        }
    }
}

#[test]
fn every_case_of_the_table_matches_tensor_ops_and_float64() {
    let table = cases();
    let mut n = 0;
    for case in table.iter().filter(|c| c.probe == Probe::Trajectory) {
        check_trajectory(case);
        n += 1;
    }
    assert!(n >= 30, "{n} trajectory cases");
}

#[test]
fn every_refusal_case_of_the_table_refuses_on_both_paths() {
    let table = cases();
    let refusals: Vec<&Case> = table
        .iter()
        .filter(|c| c.probe != Probe::Trajectory)
        .collect();
    assert_eq!(refusals.len(), 3);
    for case in refusals {
        for fused in [true, false] {
            check_refusal(case, fused);
        }
    }
}

/// The table reaches every decay mode of the fused step, with the learning-rate change.
#[test]
fn the_table_covers_every_mode_of_the_fused_step() {
    let table = cases();
    let fused: Vec<&Case> = table
        .iter()
        .filter(|c| c.fused_expected() && c.probe == Probe::Trajectory && c.lr_change.is_some())
        .collect();
    let has = |f: &dyn Fn(&Case) -> bool| fused.iter().any(|c| f(c));
    let p = |c: &Case| c.p.value(0);
    let lambda = |c: &Case| c.lambda.value(0);
    assert!(has(&|c| p(c) < 1.0 && lambda(c) > 0.0));
    assert!(has(&|c| (1.0..2.0).contains(&p(c)) && lambda(c) > 0.0));
    assert!(has(&|c| p(c) == 2.0 && lambda(c) > 0.0));
    assert!(has(&|c| p(c) > 2.0 && lambda(c) > 0.0));
    assert!(has(&|c| lambda(c) == 0.0));
    assert!(has(&|c| c.lambda2 > 0.0));
    assert!(has(&|c| !c.is_decayed("bias", 1)));
}

/// The table reaches the fused decay after every base optimizer that is not Adam (pSGD with
/// and without momentum and Nesterov, pWD around RMSprop and AdaGrad), in its p-norm mode
/// (the uniform ones stay one multiplication), with the learning-rate change.
#[test]
fn the_table_covers_the_fused_decay_after_every_base() {
    use padam::cases::CaseOptimizer;
    let table = cases();
    let decayed: Vec<&Case> = table
        .iter()
        .filter(|c| {
            c.fused_decay_expected()
                && c.probe == Probe::Trajectory
                && c.p.value(0) != 2.0
                && c.lambda.value(0) > 0.0
                && !matches!(c.optimizer, CaseOptimizer::PAdam { .. })
        })
        .collect();
    let has = |f: &dyn Fn(&CaseOptimizer) -> bool| decayed.iter().any(|c| f(&c.optimizer));
    assert!(has(
        &|o| matches!(o, CaseOptimizer::PSgd { momentum, .. } if *momentum == 0.0)
    ));
    assert!(has(&|o| matches!(
        o,
        CaseOptimizer::PSgd { nesterov: true, .. }
    )));
    assert!(has(&|o| matches!(o, CaseOptimizer::PWdRmsProp)));
    assert!(has(&|o| matches!(o, CaseOptimizer::PWdAdaGrad)));
    assert!(decayed.iter().any(|c| c.lr_change.is_some()));
}

/// The fused step writes in place only where nothing else holds the buffer: a tensor the
/// caller kept from before the step still reads the old weights.
#[test]
fn fused_cpu_step_leaves_tensors_the_caller_kept() {
    use burn::optim::Optimizer;
    let mut optim = PAdamConfig::new()
        .with_p(0.8)
        .with_lambda(0.5)
        .with_non_finite(padam::NonFinitePolicy::Unchecked)
        .init::<B, Linear<B>>()
        .unwrap();
    let m = layer(3);
    let kept: Tensor<B, 2> = m.weight.val();
    let before = read(kept.clone());
    let g = grads(&m, 0);
    let m = optim.step(1e-2, m, g);
    assert_eq!(bits(&read(kept)), bits(&before));
    assert_ne!(bits(&weights(&m).0), bits(&before));
}
