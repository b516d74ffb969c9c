//! SPEC section 4 (numerics) and 5 (elastic net, non-adiabatic s), one named test per rule,
//! each on the tensor path (`padam::decay`, f32 on Flex) and on the f64 `padam::reference`.

mod common;

use common::*;
use padam::decay::{self, DecayStep};
use padam::reference;
use padam::{PAdamConfig, PSgdConfig};

fn step(lr: f64, p: f64, lambda: f64) -> DecayStep {
    DecayStep {
        lr,
        p,
        lambda,
        lambda2: 0.0,
    }
}

/// `decay::apply` on the inner backend, read back bit-exact.
fn apply(w_hat: &[f32], w_old: &[f32], st: &DecayStep) -> Vec<f32> {
    read(decay::apply(tensor1::<IB>(w_hat), tensor1::<IB>(w_old), st))
}

/// The factor the tensor path uses, read as `apply(w_hat = 1, w_old)`.
fn tensor_factor(w_old: &[f32], st: &DecayStep) -> Vec<f32> {
    apply(&vec![1.0; w_old.len()], w_old, st)
}

const P_BELOW_2: [f64; 7] = [0.05, 0.3, 0.5, 0.8, 1.0, 1.5, 1.99];
const P_ABOVE_2: [f64; 4] = [2.01, 2.5, 3.0, 4.0];

/// Finite f32 weights from 0 through subnormals to huge, both signs.
fn awkward_weights() -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        f32::from_bits(1), // smallest subnormal, 1.4e-45
        1e-40,             // subnormal
        -1e-40,
        f32::MIN_POSITIVE, // 1.18e-38
        1e-30,
        -1e-12,
        1e-6,
        0.01,
        -0.5,
        1.0,
        3.0,
        -1e3,
        1e10,
        1e30,
        -1e30,
        f32::MAX,
        f32::MIN,
    ];
    v.extend((1..20).map(|k| (k as f32 * 0.37).sin() * 10f32.powi(k - 10)));
    v
}

// ------------------------------------------------------------------------------------------
// w_old = 0, p < 2: factor 0, a weight at zero stays at zero.

#[test]
fn reference_zero_weight_p_below_2_factor_is_zero() {
    for &p in &P_BELOW_2 {
        for w0 in [0.0, -0.0] {
            let f = reference::factor(w0, 1e-3, p, 1e-4, 0.0, None);
            assert_eq!(f, 0.0, "p={p} w0={w0}");
            assert_eq!(reference::s_target(w0, p), f64::INFINITY);
        }
    }
}

#[test]
fn tensor_zero_weight_p_below_2_factor_is_zero() {
    for &p in &P_BELOW_2 {
        let st = step(1e-3, p, 1e-4);
        let got = apply(&[0.3, -0.2, 7.0, -0.0], &[0.0, -0.0, 0.0, 0.0], &st);
        assert_eq!(got, vec![0.0; 4], "p={p}");
        // The sign of w_hat is kept on the zero.
        assert_eq!(
            got.iter().map(|x| x.is_sign_negative()).collect::<Vec<_>>(),
            vec![false, true, false, true],
            "p={p}"
        );
    }
}

/// Under PAdam and pSGD a weight at exactly 0 stays exactly 0 over many steps with non-zero
/// gradients (Adam alone would move it: w_hat != 0; the factor uses w_old = 0, so w_new = 0),
/// while the other weights keep moving.
#[test]
fn optimizer_zero_weight_stays_zero_for_p_below_2() {
    let mut rng = Rng::new(5);
    let w0 = [0.0f32, 0.4, -0.3, 0.0];
    let grads: Vec<Vec<f32>> = (0..60).map(|_| rng.vec(4, -1.0, 1.0)).collect();
    for &p in &[0.5, 1.0, 1.5] {
        let mut padam = PAdamConfig::new()
            .with_p(p)
            .with_lambda(1e-3)
            .init::<B, Vector<B>>()
            .unwrap();
        let mut psgd = PSgdConfig::new()
            .with_p(p)
            .with_lambda(1e-3)
            .with_momentum(0.9)
            .init::<B, Vector<B>>()
            .unwrap();
        for traj in [
            run_vector(&mut padam, 1e-2, &w0, &grads),
            run_vector(&mut psgd, 1e-2, &w0, &grads),
        ] {
            for w in &traj {
                assert_eq!((w[0], w[3]), (0.0, 0.0), "p={p}: {w:?}");
                assert!(w[1] != 0.0 && w[2] != 0.0);
            }
            assert_ne!(traj[0][1], traj[59][1], "other weights must move");
        }
    }
    // Without decay the zero weights do move: the test above is not vacuous.
    let mut adam = PAdamConfig::new()
        .with_lambda(0.0)
        .init::<B, Vector<B>>()
        .unwrap();
    let traj = run_vector(&mut adam, 1e-2, &w0, &grads);
    assert!(traj[0][0] != 0.0 && traj[0][3] != 0.0);
}

// ------------------------------------------------------------------------------------------
// w_old = 0, p > 2: factor 1.

#[test]
fn reference_zero_weight_p_above_2_factor_is_one() {
    for &p in &P_ABOVE_2 {
        for w0 in [0.0, -0.0] {
            assert_eq!(reference::factor(w0, 0.1, p, 0.5, 0.0, None), 1.0, "p={p}");
        }
    }
}

#[test]
fn tensor_zero_weight_p_above_2_factor_is_one() {
    for &p in &P_ABOVE_2 {
        let st = step(0.1, p, 0.5);
        let w_hat = [0.3f32, -0.2, 1e-40, -7.0];
        let got = apply(&w_hat, &[0.0, -0.0, 0.0, 0.0], &st);
        assert_eq!(bits(&got), bits(&w_hat), "p={p}: w_new must equal w_hat");
    }
}

// ------------------------------------------------------------------------------------------
// p = 2: factor 1 / (1 + 2 lr lambda) for every weight, zero included.

#[test]
fn reference_p_2_is_uniform_l2_factor() {
    let (lr, lambda) = (0.03, 0.2);
    let want = 1.0 / (1.0 + 2.0 * lr * lambda);
    for w0 in [0.0, -0.0, 1e-300, 1e-40, 0.5, -3.0, 1e30] {
        assert_eq!(reference::factor(w0, lr, 2.0, lambda, 0.0, None), want);
        assert_eq!(reference::s_target(w0, 2.0), 1.0);
    }
}

#[test]
fn tensor_p_2_is_uniform_l2_factor() {
    let (lr, lambda) = (0.03, 0.2);
    let st = step(lr, 2.0, lambda);
    assert!(st.is_uniform());
    assert_eq!(st.uniform_factor(), 1.0 / (1.0 + 2.0 * lr * lambda));
    let w_old = [0.0f32, -0.0, 1e-40, 0.5, -3.0, 1e30];
    let w_hat = [0.25f32, -1e-3, 2.0, 0.49, -2.9, 1e30];
    let got = apply(&w_hat, &w_old, &st);
    let factor = (1.0 / (1.0 + 2.0 * lr * lambda)) as f32;
    // Exactly one f32 multiplication by the host factor...
    let want: Vec<f32> = w_hat.iter().map(|w| w * factor).collect();
    assert_eq!(bits(&got), bits(&want));
    // ...which is w_hat / (1 + 2 lr lambda) to f32 rounding.
    for (g, w) in got.iter().zip(&w_hat) {
        let exact = *w as f64 / (1.0 + 2.0 * lr * lambda);
        assert!(
            (*g as f64 - exact).abs() <= 2.0 * F32.u * exact.abs(),
            "{g} vs {exact}"
        );
    }
}

// ------------------------------------------------------------------------------------------
// c = lr p lambda = 0: factor exactly 1, no 0 * inf NaN (even at w_old = 0, p < 2).

#[test]
fn reference_c_zero_factor_is_exactly_one() {
    for p in [0.05, 0.5, 1.0, 1.5, 2.0, 3.0] {
        for (lr, lambda) in [(0.0, 0.1), (0.1, 0.0), (0.0, 0.0)] {
            for w0 in [0.0, -0.0, 1e-300, 1.0, 1e300] {
                let f = reference::factor(w0, lr, p, lambda, 0.0, None);
                assert_eq!(f, 1.0, "p={p} lr={lr} lambda={lambda} w0={w0}");
            }
        }
    }
}

#[test]
fn tensor_c_zero_factor_is_exactly_one() {
    let w_old = awkward_weights();
    let w_hat: Vec<f32> = w_old.iter().map(|w| w * 0.5 - 1e-3).collect();
    for p in [0.05, 0.5, 1.0, 1.5, 2.0, 3.0] {
        for (lr, lambda) in [(0.0, 0.1), (0.1, 0.0)] {
            let st = step(lr, p, lambda);
            assert_eq!(st.coefficient(), 0.0);
            assert!(st.is_uniform());
            let got = apply(&w_hat, &w_old, &st);
            assert_eq!(bits(&got), bits(&w_hat), "p={p} lr={lr} lambda={lambda}");
            // Non-adiabatic entry point with s = +inf: still exactly w_hat.
            let s = tensor1::<IB>(&vec![f32::INFINITY; w_hat.len()]);
            let got = read(decay::apply_with_s(tensor1::<IB>(&w_hat), s, &st));
            assert_eq!(bits(&got), bits(&w_hat), "apply_with_s p={p}");
        }
    }
}

/// lr = 0 through the optimizer: weights (zeros included, no NaN) are unchanged. (Compared by
/// value: burn's Adam computes `w - lr*u`, and `-0.0 - (-0.0)` is `+0.0`.)
#[test]
fn optimizer_lr_zero_leaves_weights_unchanged() {
    let w0 = [0.0f32, -0.0, 1e-40, 0.7, -2.0];
    let g = [0.3f32, -0.1, 0.2, 0.5, -0.4];
    for p in [0.5, 1.0, 2.0, 3.0] {
        let mut optim = PAdamConfig::new()
            .with_p(p)
            .with_lambda(0.1)
            .init::<B, Vector<B>>()
            .unwrap();
        let traj = run_vector(&mut optim, 0.0, &w0, &[g.to_vec(), g.to_vec()]);
        for w in traj {
            assert_eq!(w, w0.to_vec(), "p={p}");
            assert_eq!(bits(&w[2..]), bits(&w0[2..]), "p={p}");
        }
    }
}

// ------------------------------------------------------------------------------------------
// The factor is in [0, 1] and never NaN for finite inputs.

#[test]
fn reference_factor_in_unit_interval_never_nan() {
    let mut n = 0;
    for w in awkward_weights() {
        for p in [0.01, 0.3, 0.8, 1.0, 1.7, 2.0, 2.3, 3.0, 5.0] {
            for (lr, lambda, lambda2) in [
                (1e-3, 1e-4, 0.0),
                (1.0, 10.0, 0.0),
                (1e-8, 1e-8, 0.0),
                (0.1, 0.1, 0.5),
                (1e3, 1e3, 1e3),
            ] {
                for w in [w as f64, 1e-310, 1e300] {
                    let f = reference::factor(w, lr, p, lambda, lambda2, None);
                    assert!((0.0..=1.0).contains(&f), "w={w} p={p}: {f}");
                    n += 1;
                }
            }
        }
    }
    assert!(n > 1000);
}

#[test]
fn tensor_factor_in_unit_interval_never_nan() {
    let w_old = awkward_weights();
    for p in [0.01, 0.3, 0.8, 1.0, 1.7, 2.0, 2.3, 3.0, 5.0] {
        for (lr, lambda, lambda2) in [
            (1e-3, 1e-4, 0.0),
            (1.0, 10.0, 0.0),
            (1e-8, 1e-8, 0.0),
            (0.1, 0.1, 0.5),
            (1e3, 1e3, 1e3),
        ] {
            let st = DecayStep {
                lr,
                p,
                lambda,
                lambda2,
            };
            for (w, f) in w_old.iter().zip(tensor_factor(&w_old, &st)) {
                assert!((0.0..=1.0).contains(&f), "w_old={w} p={p} {st:?}: {f}");
            }
            // And through apply_with_s with any s >= 0, +inf included.
            let s: Vec<f32> = w_old
                .iter()
                .map(|w| w.abs())
                .chain([f32::INFINITY])
                .collect();
            let ones = vec![1.0; s.len()];
            let f = read(decay::apply_with_s(
                tensor1::<IB>(&ones),
                tensor1::<IB>(&s),
                &st,
            ));
            assert!(f.iter().all(|f| (0.0..=1.0).contains(f)), "{st:?}: {f:?}");
        }
    }
}

// ------------------------------------------------------------------------------------------
// The sign of w_hat is kept.

#[test]
fn reference_sign_of_w_hat_is_kept() {
    let w_hat: Vec<f64> = vec![0.3, -0.3, 1e-30, -1e-30, 5.0, -5.0, 0.0, -0.0];
    let w_old = vec![-0.1, 0.1, 0.0, 0.0, -1e-40, 1e-40, 0.2, -0.2];
    let signs: Vec<bool> = w_hat.iter().map(|w| w.is_sign_negative()).collect();
    for p in [0.5, 1.0, 2.0, 3.0] {
        let mut w = w_hat.clone();
        let mut s = vec![1.0; w.len()];
        reference::apply_decay(&mut w, &w_old, &mut s, 0.1, &reference::Decay::new(p, 0.3));
        let got: Vec<bool> = w.iter().map(|w| w.is_sign_negative()).collect();
        assert_eq!(got, signs, "p={p}: {w:?}");
    }
}

#[test]
fn tensor_sign_of_w_hat_is_kept() {
    let w_hat = [
        0.3f32, -0.3, 1e-30, -1e-30, 5.0, -5.0, 0.0, -0.0, 1e-40, -1e-40,
    ];
    let w_old = [-0.1f32, 0.1, 0.0, 0.0, -1e-40, 1e-40, 0.2, -0.2, 3.0, -3.0];
    for p in [0.5, 1.0, 2.0, 3.0] {
        let got = apply(&w_hat, &w_old, &step(0.1, p, 0.3));
        for (g, w) in got.iter().zip(&w_hat) {
            assert_eq!(
                g.is_sign_negative(),
                w.is_sign_negative(),
                "p={p}: {g} from {w}"
            );
            assert!(g.abs() <= w.abs());
        }
    }
}

// ------------------------------------------------------------------------------------------
// Subnormal and huge values: the tensor path agrees with the reference to f32 rounding (or is
// exactly 0 where f32 overflows |w_old|^(p-2), the formula's limit).

#[test]
fn tensor_matches_reference_on_subnormal_and_huge_weights() {
    let w_old = awkward_weights();
    let w_hat: Vec<f32> = w_old
        .iter()
        .enumerate()
        .map(|(i, w)| if i % 3 == 0 { -w } else { *w * 0.75 })
        .collect();
    let mut checked_subnormal = 0;
    for p in [0.1, 0.5, 0.8, 1.0, 1.3, 1.9, 2.0, 2.5, 3.0] {
        for (lr, lambda) in [(1e-3, 1e-2), (0.1, 1e-4), (1e-2, 3.0)] {
            let st = step(lr, p, lambda);
            let got = apply(&w_hat, &w_old, &st);
            let d = DecayModel::new(p, lambda);
            let exact = |v: &[f32]| v.iter().map(|&x| F32.exact(x as f64)).collect::<Vec<_>>();
            let want = model_decay_full(&F32, &exact(&w_hat), &exact(&w_old), &mut [], lr, &d);
            // The model's value is the f64 reference formula.
            for (i, w) in want.w.iter().enumerate() {
                let f = reference::factor(w_old[i] as f64, lr, p, lambda, 0.0, None);
                let r = w_hat[i] as f64 * f;
                assert!((w.v - r).abs() <= 1e-12 * r.abs(), "{} vs {r}", w.v);
            }
            assert_decay_within(&got, &want, &format!("p={p} lr={lr} lambda={lambda}"));
            checked_subnormal += got.iter().filter(|g| g.is_subnormal()).count();
        }
    }
    assert!(checked_subnormal > 0, "some results are subnormal");
}

// ------------------------------------------------------------------------------------------
// SPEC 5: elastic net, 1 / ((1 + lr lambda2) + lr p lambda |w_old|^(p-2)).

#[test]
fn reference_elastic_net_factor_formula() {
    let (lr, p, lambda, lambda2) = (0.05, 0.8, 0.02, 0.3);
    for w in [1e-3f64, 0.2, -1.5, 4.0] {
        let want = 1.0 / ((1.0 + lr * lambda2) + lr * p * lambda * w.abs().powf(p - 2.0));
        let got = reference::factor(w, lr, p, lambda, lambda2, None);
        assert!((got - want).abs() <= 1e-15 * want, "{got} {want}");
    }
    // lambda = 0: pure L2 shrink 1 / (1 + lr lambda2), also at w_old = 0.
    assert_eq!(
        reference::factor(0.0, lr, p, 0.0, lambda2, None),
        1.0 / (1.0 + lr * lambda2)
    );
    // w_old = 0, p < 2: still 0.
    assert_eq!(reference::factor(0.0, lr, p, lambda, lambda2, None), 0.0);
}

#[test]
fn tensor_elastic_net_factor_formula() {
    let (lr, p, lambda, lambda2) = (0.05, 0.8, 0.02, 0.3);
    let st = DecayStep {
        lr,
        p,
        lambda,
        lambda2,
    };
    assert_eq!(st.base_denominator(), 1.0 + lr * lambda2);
    let w_old = [1e-3f32, 0.2, -1.5, 4.0, 0.0];
    let got = tensor_factor(&w_old, &st);
    for (g, w) in got.iter().zip(&w_old) {
        let want = reference::factor(*w as f64, lr, p, lambda, lambda2, None);
        assert!(
            (*g as f64 - want).abs() <= 8.0 * F32.u * want,
            "w_old={w}: {g} vs {want}"
        );
    }
    assert_eq!(got[4], 0.0);
    // lambda = 0 leaves the uniform L2 shrink.
    let st0 = DecayStep { lambda: 0.0, ..st };
    assert_eq!(
        tensor_factor(&w_old, &st0),
        vec![(1.0 / (1.0 + lr * lambda2)) as f32; 5]
    );
}

#[test]
fn optimizer_elastic_net_matches_reference() {
    let (lr, p, lambda, lambda2) = (0.02, 0.7, 0.05, 0.4);
    let mut rng = Rng::new(11);
    let w0 = rng.vec(16, -1.0, 1.0);
    let grads: Vec<Vec<f32>> = (0..5).map(|_| rng.vec(16, -0.5, 0.5)).collect();
    let mut optim = PSgdConfig::new()
        .with_momentum(0.5)
        .with_p(p)
        .with_lambda(lambda)
        .with_lambda2(lambda2)
        .init::<B, Vector<B>>()
        .unwrap();
    let got = run_vector(&mut optim, lr, &w0, &grads);
    let mut w = widen(&w0);
    let mut st = reference::SgdState::new(16);
    let sp = reference::SgdParams {
        momentum: 0.5,
        dampening: 0.0,
        nesterov: false,
    };
    let d = reference::Decay {
        lambda2,
        ..reference::Decay::new(p, lambda)
    };
    for (k, g) in grads.iter().enumerate() {
        reference::psgd_step(&mut w, &widen(g), &mut st, lr, &sp, &d);
        assert_close(&widen(&got[k]), &w, 1e-5, 1e-7, &format!("step {k}"));
    }
    // The L2 part matters: without it the result differs well beyond f32 rounding.
    let mut plain = PSgdConfig::new()
        .with_momentum(0.5)
        .with_p(p)
        .with_lambda(lambda)
        .init::<B, Vector<B>>()
        .unwrap();
    let other = run_vector(&mut plain, lr, &w0, &grads);
    assert!(max_rel(&widen(&other[4]), &w, 1e-7) > 1e-3);
}

// ------------------------------------------------------------------------------------------
// SPEC 5: non-adiabatic s, initialised to 1, relaxing toward |w_old|^(p-2).

#[test]
fn reference_non_adiabatic_s_starts_at_one_and_relaxes() {
    let (lr, p, lambda, rate) = (0.1, 1.0, 0.5, 0.25);
    let d = reference::Decay {
        s_rate: Some(rate),
        ..reference::Decay::new(p, lambda)
    };
    let w_old = [0.5, -2.0, 0.0];
    let mut w = [1.0, 1.0, 1.0];
    let mut s = [1.0; 3];
    reference::apply_decay(&mut w, &w_old, &mut s, lr, &d);
    let targets = [2.0, 0.5, f64::INFINITY];
    for i in 0..3 {
        let s_want = 0.75 * 1.0 + 0.25 * targets[i];
        assert_eq!(s[i], s_want);
        assert_eq!(w[i], 1.0 / (1.0 + lr * p * lambda * s_want));
    }
    assert_eq!(reference::relax_s(3.0, 7.0, 1.0), 7.0);
}

#[test]
fn tensor_non_adiabatic_s_starts_at_one_and_relaxes() {
    let (lr, p, lambda, rate) = (0.1, 1.0, 0.5, 0.25);
    let st = step(lr, p, lambda);
    let w_old = tensor1::<IB>(&[0.5, -2.0, 0.0, 0.0]);
    let s0 = w_old.ones_like();
    let s1 = decay::relax_s(s0, decay::s_target(w_old, p), rate);
    assert_eq!(
        read(s1.clone()),
        vec![1.25, 0.875, f32::INFINITY, f32::INFINITY]
    );
    let w = read(decay::apply_with_s(
        tensor1::<IB>(&[1.0, 1.0, 1.0, -1.0]),
        s1,
        &st,
    ));
    let want = [
        1.0 / (1.0 + 0.05 * 1.25f32),
        1.0 / (1.0 + 0.05 * 0.875f32),
        0.0,
        -0.0,
    ];
    assert_eq!(bits(&w), bits(&want));
    // s_target for p = 2 is exactly 1 everywhere, zero included.
    assert_eq!(
        read(decay::s_target(tensor1::<IB>(&[0.0, 5.0]), 2.0)),
        vec![1.0, 1.0]
    );
}

/// Non-adiabatic PAdam over several steps equals the reference (s kept in the state).
#[test]
fn optimizer_non_adiabatic_matches_reference() {
    let (lr, p, lambda, rate) = (0.01, 0.8, 0.05, 0.3);
    let mut rng = Rng::new(3);
    let mut w0 = rng.vec(12, -1.0, 1.0);
    w0[0] = 0.0;
    let grads: Vec<Vec<f32>> = (0..6).map(|_| rng.vec(12, -0.5, 0.5)).collect();
    let mut optim = PAdamConfig::new()
        .with_p(p)
        .with_lambda(lambda)
        .with_s_rate(rate)
        .init::<B, Vector<B>>()
        .unwrap();
    let got = run_vector(&mut optim, lr, &w0, &grads);
    let a = reference::AdamParams {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    let d = reference::Decay {
        s_rate: Some(rate),
        ..reference::Decay::new(p, lambda)
    };
    let mut w = widen(&w0);
    let mut st = reference::AdamState::new(12);
    for (k, g) in grads.iter().enumerate() {
        reference::padam_step(&mut w, &widen(g), &mut st, lr, &a, &d);
        assert_close(&widen(&got[k]), &w, 1e-5, 1e-7, &format!("step {k}"));
        assert_eq!(got[k][0], 0.0);
    }
    // It differs from the adiabatic run (s lags behind its target).
    let mut adiabatic = PAdamConfig::new()
        .with_p(p)
        .with_lambda(lambda)
        .init::<B, Vector<B>>()
        .unwrap();
    let other = run_vector(&mut adiabatic, lr, &w0, &grads);
    assert!(max_rel(&widen(&other[5]), &w, 1e-7) > 1e-4);
}

/// s_rate = 1 is the adiabatic limit: bit for bit the same as the default.
#[test]
fn optimizer_s_rate_one_is_adiabatic() {
    let mut rng = Rng::new(8);
    let w0 = rng.vec(10, -1.0, 1.0);
    let grads: Vec<Vec<f32>> = (0..4).map(|_| rng.vec(10, -0.5, 0.5)).collect();
    let cfg = PAdamConfig::new().with_p(0.6).with_lambda(0.02);
    let mut a = cfg.init::<B, Vector<B>>().unwrap();
    let mut b = cfg.clone().with_s_rate(1.0).init::<B, Vector<B>>().unwrap();
    let ta = run_vector(&mut a, 0.01, &w0, &grads);
    let tb = run_vector(&mut b, 0.01, &w0, &grads);
    for (x, y) in ta.iter().zip(&tb) {
        assert_eq!(bits(x), bits(y));
    }
}

// ------------------------------------------------------------------------------------------
// Never NaN even when a host scalar (c, or the relaxation rate) rounds to 0 in the tensor's
// dtype: `+inf * 0` must not appear where `s = +inf` (w_old = 0, p < 2).

#[test]
fn tensor_coefficient_rounding_to_zero_in_f32_is_not_nan() {
    // c = 1e-30 * 0.5 * 1e-20 = 5e-51: positive in f64, 0 in f32.
    let st = step(1e-30, 0.5, 1e-20);
    assert!(st.coefficient() > 0.0 && (st.coefficient() as f32) == 0.0);
    let got = apply(&[0.5, -0.5, 0.5], &[0.0, 1e-40, 0.3], &st);
    let want = [
        reference::factor(0.0, 1e-30, 0.5, 1e-20, 0.0, None) * 0.5,
        -reference::factor(1e-40f32 as f64, 1e-30, 0.5, 1e-20, 0.0, None) * 0.5,
        0.5,
    ];
    assert_eq!(want[0], 0.0);
    assert_eq!(got[0], 0.0, "{got:?}");
    assert!(got.iter().all(|x| !x.is_nan()), "{got:?}");
    assert_eq!(got[2], 0.5);
    // 1e-40^(-1.5) = 1e60 overflows f32: zeroed (the reference gives -0.5/(1 + 5e9)).
    assert!(got[1] <= 0.0 && (got[1] as f64 - want[1]).abs() <= 2e-10);
}

#[test]
fn tensor_relaxation_rate_rounding_to_zero_in_f32_is_not_nan() {
    let w_old = tensor1::<IB>(&[0.0, 0.5]);
    let target = decay::s_target(w_old.clone(), 0.5);
    // rate = 1e-50: rate * inf must be inf, not 0 * inf.
    let s = read(decay::relax_s(w_old.ones_like(), target.clone(), 1e-50));
    assert_eq!(s[0], f32::INFINITY);
    assert_eq!(s[1], 1.0);
    // s already +inf and 1 - rate tiny: stays +inf.
    let s_inf = tensor1::<IB>(&[f32::INFINITY, f32::INFINITY]);
    let s = read(decay::relax_s(s_inf, target, 1.0 - 1e-12));
    assert!(s.iter().all(|x| !x.is_nan()), "{s:?}");
    assert_eq!(s[0], f32::INFINITY);
}

#[test]
fn optimizer_tiny_s_rate_or_coefficient_is_not_nan() {
    let w0 = [0.0f32, 0.5, -0.25];
    let g = vec![vec![0.1f32, 0.1, -0.1]; 3];
    let mut a = PAdamConfig::new()
        .with_p(0.5)
        .with_lambda(0.1)
        .with_s_rate(1e-50)
        .init::<B, Vector<B>>()
        .unwrap();
    let mut b = PAdamConfig::new()
        .with_p(0.5)
        .with_lambda(1e-20)
        .init::<B, Vector<B>>()
        .unwrap();
    for traj in [
        run_vector(&mut a, 1e-2, &w0, &g),
        run_vector(&mut b, 1e-30, &w0, &g),
    ] {
        for w in &traj {
            assert!(w.iter().all(|x| x.is_finite()), "{traj:?}");
            assert_eq!(w[0], 0.0, "{traj:?}");
        }
    }
}

/// In f16, a realistic coefficient (lr = 1e-4, p = 0.8, lambda = 1e-4: c = 8e-9) already rounds
/// to 0; the weight at zero must still give factor 0, not NaN.
#[test]
fn tensor_f16_weights_with_realistic_small_coefficient_are_not_nan() {
    use burn::tensor::DType;
    let st = step(1e-4, 0.8, 1e-4);
    let w_old = tensor1::<IB>(&[0.0, -0.0, 0.3, -0.02]).cast(DType::F16);
    let w_hat = tensor1::<IB>(&[0.5, 0.5, 0.29, -0.021]).cast(DType::F16);
    let got = decay::apply(w_hat, w_old, &st);
    assert_eq!(got.dtype(), DType::F16);
    let got = read(got.cast(DType::F32));
    assert!(got.iter().all(|x| !x.is_nan()), "{got:?}");
    assert_eq!(&got[..2], &[0.0, 0.0]);
    // The others: factor ~1 - 1e-8, i.e. w_hat in f16.
    for (g, w) in got[2..].iter().zip([0.29f32, -0.021]) {
        assert!((g - w).abs() <= 1e-3 * w.abs(), "{g} vs {w}");
    }
    // Non-adiabatic relaxation in f16 with a rate that rounds to 0.
    let s = decay::relax_s(
        tensor1::<IB>(&[1.0, 1.0]).cast(DType::F16),
        tensor1::<IB>(&[f32::INFINITY, 2.0]).cast(DType::F16),
        1e-9,
    );
    let s = read(s.cast(DType::F32));
    assert_eq!(s, vec![f32::INFINITY, 1.0]);
}
