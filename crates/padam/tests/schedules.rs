//! Schedules inside the optimizer (SPEC 5): step t (0-based) uses p(t) and lambda(t), and the
//! learning rate passed to that step; checked step by step against the f64 reference (within
//! the f32 rounding of each step) and shown to differ from an off-by-one schedule.

mod common;

use burn::lr_scheduler::LrScheduler;
use common::*;
use padam::reference::{self, AdamParams, AdamState, Decay};
use padam::{PAdamConfig, PSgdConfig, Schedule, ScheduleLr};

const N: usize = 8;

fn data(seed: u64) -> (Vec<f32>, Vec<Vec<f32>>) {
    let mut rng = Rng::new(seed);
    let mut w0 = rng.vec(24, -1.0, 1.0);
    w0[0] = 0.0;
    w0[1] = 1e-20;
    (w0, (0..N).map(|_| rng.vec(24, -0.5, 0.5)).collect())
}

/// Run the optimizer with a per-step learning rate.
fn run_lrs<O: burn::optim::Optimizer<Vector<B>, B>>(
    optim: &mut O,
    lrs: &[f64],
    w0: &[f32],
    grads: &[Vec<f32>],
) -> Vec<Vec<f32>> {
    let mut m = vector(w0);
    let mut out = vec![w0.to_vec()];
    for (lr, g) in lrs.iter().zip(grads) {
        m = step_vector(optim, *lr, m, g);
        out.push(values(&m));
    }
    out
}

/// Reference PAdam trajectory with the decay of step t given by `decay(t)`.
fn reference_padam(
    w0: &[f32],
    grads: &[Vec<f32>],
    lrs: &[f64],
    decay: impl Fn(usize) -> Decay,
) -> Vec<Vec<f64>> {
    let a = AdamParams {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    let mut w = widen(w0);
    let mut st = AdamState::new(w.len());
    let mut out = vec![w.clone()];
    for (t, g) in grads.iter().enumerate() {
        reference::padam_step(&mut w, &widen(g), &mut st, lrs[t], &a, &decay(t));
        out.push(w.clone());
    }
    out
}

fn worst_rel(got: &[Vec<f32>], want: &[Vec<f64>]) -> f64 {
    got.iter()
        .zip(want)
        .map(|(g, w)| max_rel(&widen(g), w, 1e-2))
        .fold(0.0, f64::max)
}

#[test]
fn p_anneal_schedule_uses_p_of_t() {
    let (w0, grads) = data(1);
    let sched = Schedule::p_anneal(0.5, 4); // 2.0, 1.625, 1.25, 0.875, 0.5, 0.5, ...
    let ps: Vec<f64> = (0..N).map(|t| sched.value(t)).collect();
    assert_eq!(ps[0], 2.0);
    assert_eq!(ps[4], 0.5);
    let lambda = 0.05;
    let lrs = vec![1e-2; N];
    let mut optim = PAdamConfig::new()
        .with_p_schedule(sched.clone())
        .with_lambda(lambda)
        .init::<B, Vector<B>>()
        .unwrap();
    let traj = run_lrs(&mut optim, &lrs, &w0, &grads);
    let decays: Vec<DecayModel> = ps.iter().map(|&p| DecayModel::new(p, lambda)).collect();
    check_resync(
        &traj,
        &grads,
        &lrs,
        &decays,
        BaseModel::adam(24),
        "p_anneal",
    );
    // Cumulative agreement with the f64 reference...
    let right = reference_padam(&w0, &grads, &lrs, |t| Decay::new(sched.value(t), lambda));
    let err = worst_rel(&traj, &right);
    assert!(err < 1e-3, "{err:e}"); // loose: the per-step check above is the precise one
                                    // ...and an off-by-one schedule (p(t+1)) is clearly different.
    let wrong = reference_padam(&w0, &grads, &lrs, |t| {
        Decay::new(sched.value(t + 1), lambda)
    });
    assert!(worst_rel(&traj, &wrong) > 100.0 * err.max(1e-6));
    // p(0) = 2 is the uniform L2 factor, so the weight at 0 leaves zero in the first step.
    assert!(traj[1][0] != 0.0);
}

#[test]
fn lambda_schedule_uses_lambda_of_t() {
    let (w0, grads) = data(2);
    let sched = Schedule::Piecewise {
        points: vec![(0, 0.0), (2, 0.0), (5, 0.2)],
    };
    let p = 0.8;
    let lrs = vec![1e-2; N];
    let mut optim = PAdamConfig::new()
        .with_p(p)
        .with_lambda_schedule(sched.clone())
        .init::<B, Vector<B>>()
        .unwrap();
    let traj = run_lrs(&mut optim, &lrs, &w0, &grads);
    let decays: Vec<DecayModel> = (0..N).map(|t| DecayModel::new(p, sched.value(t))).collect();
    check_resync(&traj, &grads, &lrs, &decays, BaseModel::adam(24), "lambda");
    // lambda(0) = lambda(1) = lambda(2) = 0: plain Adam for three steps, zeros move.
    assert!(traj[1][0] != 0.0);
    let right = reference_padam(&w0, &grads, &lrs, |t| Decay::new(p, sched.value(t)));
    let err = worst_rel(&traj, &right);
    assert!(err < 1e-3, "{err:e}"); // loose: the per-step check above is the precise one
    let wrong = reference_padam(&w0, &grads, &lrs, |t| Decay::new(p, sched.value(t + 1)));
    assert!(worst_rel(&traj, &wrong) > 100.0 * err.max(1e-6));
}

/// p(t), lambda(t) and a learning-rate schedule (burn `LrScheduler` from a `Schedule`) compose:
/// each step uses all three of its own step, with pSGD + momentum.
#[test]
fn p_lambda_and_lr_schedules_compose() {
    let (w0, grads) = data(3);
    let p_s = Schedule::Cosine {
        from: 2.0,
        to: 0.6,
        steps: 5,
    };
    let l_s = Schedule::Linear {
        from: 0.01,
        to: 0.1,
        steps: 6,
    };
    let lr_s = Schedule::Geometric {
        from: 0.05,
        to: 0.01,
        steps: N,
    };
    let mut lr_sched = ScheduleLr::new(lr_s.clone());
    let lrs: Vec<f64> = (0..N).map(|_| lr_sched.step()).collect();
    assert_eq!(lrs[0], 0.05);
    assert!((lrs[N - 1] - lr_s.value(N - 1)).abs() < 1e-15);
    let mut optim = PSgdConfig::new()
        .with_momentum(0.9)
        .with_p_schedule(p_s.clone())
        .with_lambda_schedule(l_s.clone())
        .init::<B, Vector<B>>()
        .unwrap();
    let traj = run_lrs(&mut optim, &lrs, &w0, &grads);
    let decays: Vec<DecayModel> = (0..N)
        .map(|t| DecayModel::new(p_s.value(t), l_s.value(t)))
        .collect();
    check_resync(
        &traj,
        &grads,
        &lrs,
        &decays,
        BaseModel::sgd(24, 0.9, 0.0, false),
        "composed",
    );
}

/// The schedule position is the optimizer's (per-parameter) step count, not anything global:
/// two optimizers created at different times agree, and `steps()` counts module steps.
#[test]
fn schedule_position_is_the_optimizer_step_count() {
    let (w0, grads) = data(4);
    let cfg = PAdamConfig::new()
        .with_p_schedule(Schedule::p_anneal(0.7, 3))
        .with_lambda(0.05);
    let mut a = cfg.init::<B, Vector<B>>().unwrap();
    let _ = run_lrs(&mut a, &[1e-2; 3], &w0, &grads[..3]);
    assert_eq!(a.steps(), 3);
    let mut b = cfg.init::<B, Vector<B>>().unwrap();
    let mut c = cfg.init::<B, Vector<B>>().unwrap();
    let tb = run_lrs(&mut b, &[1e-2; N], &w0, &grads);
    let tc = run_lrs(&mut c, &[1e-2; N], &w0, &grads);
    assert_eq!(tb, tc);
    assert_eq!(b.steps(), N);
}
