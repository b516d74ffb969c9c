//! Equivalences with burn's own optimizers (SPEC 3):
//! - `lambda = 0`: PAdam is burn's Adam and pSGD is burn's SGD, bit for bit;
//! - `p = 2`: `w_hat / (1 + 2 lr lambda)`, i.e. burn's AdamW with weight decay `2 lambda` to
//!   first order in `lr lambda`.

mod common;

use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, AdamWConfig, Optimizer, SgdConfig};
use common::*;
use padam::{PAdamConfig, PSgdConfig};

fn assert_mlp_bitwise(a: &Mlp<B>, b: &Mlp<B>, ctx: &str) {
    for (i, (x, y)) in mlp_values(a).iter().zip(mlp_values(b)).enumerate() {
        assert_eq!(bits(x), bits(&y), "{ctx}: parameter {i}");
    }
}

/// Run `a` and `b` side by side on the Mlp with real loss gradients (each on its own
/// weights), asserting bitwise equality after every step.
fn lockstep<OA, OB>(mut a: OA, mut b: OB, lr: f64, steps: u64, ctx: &str)
where
    OA: Optimizer<Mlp<B>, B>,
    OB: Optimizer<Mlp<B>, B>,
{
    let mut ma = mlp(1);
    let mut mb = mlp(1);
    let start = mlp_values(&ma);
    for k in 0..steps {
        let ga = mlp_grads(&ma, k);
        let gb = mlp_grads(&mb, k);
        ma = a.step(lr, ma, ga);
        mb = b.step(lr, mb, gb);
        assert_mlp_bitwise(&ma, &mb, &format!("{ctx} step {k}"));
    }
    assert_ne!(mlp_values(&ma)[0], start[0], "{ctx}: weights must move");
}

#[test]
fn padam_lambda_zero_is_burn_adam_bitwise() {
    for p in [0.5, 1.0, 2.0] {
        let padam = PAdamConfig::new()
            .with_p(p)
            .with_lambda(0.0)
            .init::<B, Mlp<B>>()
            .unwrap();
        let adam = AdamConfig::new().with_epsilon(1e-8).init::<B, Mlp<B>>();
        lockstep(padam, adam, 1e-2, 8, &format!("PAdam p={p} vs Adam"));
    }
    // Non-default betas are forwarded too.
    let padam = PAdamConfig::new()
        .with_beta_1(0.8)
        .with_beta_2(0.99)
        .with_epsilon(1e-6)
        .with_lambda(0.0)
        .init::<B, Mlp<B>>()
        .unwrap();
    let adam = AdamConfig::new()
        .with_beta_1(0.8)
        .with_beta_2(0.99)
        .with_epsilon(1e-6)
        .init::<B, Mlp<B>>();
    lockstep(padam, adam, 1e-2, 8, "PAdam betas vs Adam");
}

/// PAdam's default epsilon is PyTorch's 1e-8, not burn's 1e-5: comparing with burn's default
/// Adam must show a difference (this is what makes the bitwise test above meaningful).
#[test]
fn padam_epsilon_default_is_1e_8_not_burns() {
    assert_eq!(PAdamConfig::new().epsilon, 1e-8);
    let mut padam = PAdamConfig::new()
        .with_lambda(0.0)
        .init::<B, Vector<B>>()
        .unwrap();
    let mut adam = AdamConfig::new().init::<B, Vector<B>>();
    let g = vec![vec![1e-6f32, -2e-6, 3e-4]; 3];
    let a = run_vector(&mut padam, 0.1, &[0.5, 0.5, 0.5], &g);
    let b = run_vector(&mut adam, 0.1, &[0.5, 0.5, 0.5], &g);
    assert!(max_rel(&widen(&a[2]), &widen(&b[2]), 0.0) > 1e-3);
}

fn sgd_momentum(momentum: f64, dampening: f64, nesterov: bool) -> Option<MomentumConfig> {
    Some(MomentumConfig {
        momentum,
        dampening,
        nesterov,
    })
}

#[test]
fn psgd_lambda_zero_is_burn_sgd_bitwise() {
    // Plain SGD.
    let psgd = PSgdConfig::new()
        .with_lambda(0.0)
        .init::<B, Mlp<B>>()
        .unwrap();
    let sgd = SgdConfig::new().init::<B, Mlp<B>>();
    lockstep(psgd, sgd, 0.05, 8, "pSGD vs SGD");
    // Momentum with dampening (burn's MomentumConfig default dampening is 0.1: set explicitly).
    for (m, d, n) in [(0.9, 0.1, false), (0.5, 0.0, false), (0.9, 0.0, true)] {
        let psgd = PSgdConfig::new()
            .with_momentum(m)
            .with_dampening(d)
            .with_nesterov(n)
            .with_p(0.7)
            .with_lambda(0.0)
            .init::<B, Mlp<B>>()
            .unwrap();
        let sgd = SgdConfig::new()
            .with_momentum(sgd_momentum(m, d, n))
            .init::<B, Mlp<B>>();
        lockstep(
            psgd,
            sgd,
            0.05,
            8,
            &format!("pSGD m={m} d={d} n={n} vs SGD"),
        );
    }
}

/// pSGD's default dampening is PyTorch's 0, burn's MomentumConfig default is 0.1: the two
/// differ (so dampening really is forwarded).
#[test]
fn psgd_dampening_default_is_zero_not_burns() {
    assert_eq!(PSgdConfig::new().dampening, 0.0);
    assert_eq!(MomentumConfig::new().dampening, 0.1);
    let mut psgd = PSgdConfig::new()
        .with_momentum(0.9)
        .with_lambda(0.0)
        .init::<B, Vector<B>>()
        .unwrap();
    let mut sgd = SgdConfig::new()
        .with_momentum(Some(MomentumConfig::new()))
        .init::<B, Vector<B>>();
    let g = vec![vec![0.1f32, -0.2]; 3];
    let a = run_vector(&mut psgd, 0.1, &[0.5, 0.5], &g);
    let b = run_vector(&mut sgd, 0.1, &[0.5, 0.5], &g);
    assert_eq!(a[0], b[0], "first step has no momentum history");
    assert_ne!(a[2], b[2]);
}

/// p = 2: every PAdam step is exactly burn-Adam's `w_hat` times the host factor
/// `1 / (1 + 2 lr lambda)` rounded to f32 (one multiplication), checked step by step by letting
/// a bare Adam take the same step from the same weights and state.
#[test]
fn padam_p_2_is_adam_step_times_uniform_factor() {
    let (lr, lambda) = (1e-2, 0.3);
    let factor = (1.0 / (1.0 + 2.0 * lr * lambda)) as f32;
    let mut padam = PAdamConfig::new()
        .with_p(2.0)
        .with_lambda(lambda)
        .init::<B, Mlp<B>>()
        .unwrap();
    let mut adam = AdamConfig::new().with_epsilon(1e-8).init::<B, Mlp<B>>();
    let mut m = mlp(4);
    for k in 0..6 {
        // Same module (same parameter ids), same gradients: Adam's moments stay in lockstep.
        let w_hat = adam.step(lr, m.clone(), mlp_grads(&m, k));
        m = padam.step(lr, m.clone(), mlp_grads(&m, k));
        for (i, (got, hat)) in mlp_values(&m).iter().zip(mlp_values(&w_hat)).enumerate() {
            let want: Vec<f32> = hat.iter().map(|w| w * factor).collect();
            assert_eq!(bits(got), bits(&want), "step {k} parameter {i}");
        }
    }
}

/// p = 2 is AdamW with weight decay 2*lambda to first order in lr*lambda.
///
/// Per step, pWD gives `(w - lr u) / (1 + 2 lr lambda)` and burn's AdamW
/// `w (1 - 2 lr lambda) - lr u`; they differ by `2 lr lambda * lr u + O((lr lambda)^2 w)`.
/// With the same gradients every step (so `u` is the same sequence for both) the difference
/// after N steps is bounded by `N * 2 lr lambda * (lr |u| + 2 lr lambda |w|)`, `|u| <= 3` for
/// these gradients. The wrong factor (AdamW with decay lambda) is off by ~`N lr lambda |w|`,
/// two orders of magnitude more, and is shown to fail the same bound.
#[test]
fn padam_p_2_matches_adamw_with_twice_lambda_to_first_order() {
    let (lr, lambda, n) = (1e-3, 0.05, 20usize);
    let mut rng = Rng::new(21);
    let w0: Vec<f32> = rng.vec(32, 0.5, 2.0);
    let grads: Vec<Vec<f32>> = (0..n).map(|_| rng.vec(32, -1.0, 1.0)).collect();
    let mut padam = PAdamConfig::new()
        .with_p(2.0)
        .with_lambda(lambda)
        .init::<B, Vector<B>>()
        .unwrap();
    let adamw = |wd: f64| {
        AdamWConfig::new()
            .with_epsilon(1e-8)
            .with_weight_decay(wd as f32)
            .init::<B, Vector<B>>()
    };
    let p2 = run_vector(&mut padam, lr, &w0, &grads);
    let right = run_vector(&mut adamw(2.0 * lambda), lr, &w0, &grads);
    let wrong = run_vector(&mut adamw(lambda), lr, &w0, &grads);
    let wmax = 2.0;
    let per_step = 2.0 * lr * lambda * (lr * 3.0 + 2.0 * lr * lambda * wmax);
    let f32_noise = 4.0 * F32.u * wmax; // a few roundings per step
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - *y as f64).abs())
            .fold(0.0, f64::max)
    };
    for k in 0..n {
        let bound = (k + 1) as f64 * (per_step + f32_noise);
        let d = max_diff(&p2[k], &right[k]);
        assert!(
            d <= bound,
            "step {k}: |pWD(p=2) - AdamW(2 lambda)| = {d:e} > {bound:e}"
        );
    }
    let bound = n as f64 * (per_step + f32_noise);
    let d_wrong = max_diff(&p2[n - 1], &wrong[n - 1]);
    assert!(
        d_wrong > 10.0 * bound,
        "AdamW(lambda) should not match: {d_wrong:e} vs {bound:e}"
    );
    // And it is genuinely a first-order agreement, not an identity: they are not equal.
    assert!(max_diff(&p2[n - 1], &right[n - 1]) > 0.0);
}

/// The same first-order agreement on a real model with real loss gradients.
#[test]
fn padam_p_2_tracks_adamw_on_mlp() {
    let (lr, lambda, n) = (1e-3, 0.1, 10u64);
    let mut padam = PAdamConfig::new()
        .with_p(2.0)
        .with_lambda(lambda)
        .init::<B, Mlp<B>>()
        .unwrap();
    let mut adamw = AdamWConfig::new()
        .with_epsilon(1e-8)
        .with_weight_decay((2.0 * lambda) as f32)
        .init::<B, Mlp<B>>();
    let mut wrong = AdamWConfig::new()
        .with_epsilon(1e-8)
        .with_weight_decay(lambda as f32)
        .init::<B, Mlp<B>>();
    let (mut a, mut b, mut c) = (mlp(2), mlp(2), mlp(2));
    for k in 0..n {
        let (ga, gb, gc) = (mlp_grads(&a, k), mlp_grads(&b, k), mlp_grads(&c, k));
        a = padam.step(lr, a, ga);
        b = adamw.step(lr, b, gb);
        c = wrong.step(lr, c, gc);
    }
    let diff = |x: &Mlp<B>, y: &Mlp<B>| {
        mlp_values(x)
            .iter()
            .zip(mlp_values(y))
            .flat_map(|(p, q)| {
                p.iter()
                    .zip(q)
                    .map(|(u, v)| (*u as f64 - v as f64).abs())
                    .collect::<Vec<_>>()
            })
            .fold(0.0, f64::max)
    };
    let d_right = diff(&a, &b);
    let d_wrong = diff(&a, &c);
    // Weights <= 0.5 here; the gradients now depend on the weights, so allow the bound twice.
    let bound = 2.0 * n as f64 * 2.0 * lr * lambda * (lr * 3.0 + 2.0 * lr * lambda * 0.5);
    assert!(d_right <= bound, "{d_right:e} > {bound:e}");
    assert!(d_wrong > 10.0 * d_right, "{d_wrong:e} vs {d_right:e}");
}
