//! Property tests (SPEC 4, last rule): the burn paths agree with the float64 reference to
//! float32 rounding on random inputs that include exact zeros (both signs), values near zero,
//! subnormals and large values, for p in (0, 3]. "To f32 rounding" is the running error bound
//! of `common::Ef` (each step starting from burn's own f32 weights); where f32 overflows
//! `|w_old|^(p-2)` the result must be exactly 0, the formula's limit.

mod common;

use common::*;
use padam::decay::{self, DecayStep};
use padam::reference;
use padam::{PAdamConfig, PSgdConfig};
use proptest::prelude::*;

fn signed(x: f32, neg: bool) -> f32 {
    if neg {
        -x
    } else {
        x
    }
}

/// Finite f32 values from every awkward region.
fn awkward() -> impl Strategy<Value = f32> {
    prop_oneof![
        2 => Just(0.0f32),
        1 => Just(-0.0f32),
        // subnormals
        2 => (any::<bool>(), 1u32..0x0080_0000).prop_map(|(n, m)| signed(f32::from_bits(m), n)),
        // near zero, normal
        3 => (any::<bool>(), -38.0f64..-4.0).prop_map(|(n, e)| signed(10f64.powf(e) as f32, n)),
        // ordinary
        6 => (any::<bool>(), -3.0f64..1.0).prop_map(|(n, e)| signed(10f64.powf(e) as f32, n)),
        // large
        1 => (any::<bool>(), 4.0f64..30.0).prop_map(|(n, e)| signed(10f64.powf(e) as f32, n)),
    ]
}

/// Gradients: awkward but bounded (Adam squares them: |g| <= 1e15 keeps g^2 finite in f32).
fn grad() -> impl Strategy<Value = f32> {
    prop_oneof![
        1 => Just(0.0f32),
        1 => (any::<bool>(), 1u32..0x0080_0000).prop_map(|(n, m)| signed(f32::from_bits(m), n)),
        2 => (any::<bool>(), -30.0f64..-4.0).prop_map(|(n, e)| signed(10f64.powf(e) as f32, n)),
        6 => (any::<bool>(), -4.0f64..1.0).prop_map(|(n, e)| signed(10f64.powf(e) as f32, n)),
        1 => (any::<bool>(), 1.0f64..15.0).prop_map(|(n, e)| signed(10f64.powf(e) as f32, n)),
    ]
}

/// p in (0, 3], with the special values 1 and 2 and a value close to 2 over-represented.
fn p_value() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => 0.01f64..=3.0,
        1 => Just(1.0),
        1 => Just(2.0),
        1 => Just(1.999),
        1 => Just(3.0),
    ]
}

fn log_uniform(lo: f64, hi: f64) -> impl Strategy<Value = f64> {
    (lo.log10()..hi.log10()).prop_map(|e| 10f64.powf(e))
}

fn lambda_value() -> impl Strategy<Value = f64> {
    prop_oneof![1 => Just(0.0), 6 => log_uniform(1e-6, 10.0)]
}

fn lambda2_value() -> impl Strategy<Value = f64> {
    prop_oneof![3 => Just(0.0), 1 => log_uniform(1e-4, 1.0)]
}

fn exact(v: &[f32]) -> Vec<Ef> {
    v.iter().map(|&x| F32.exact(x as f64)).collect()
}

/// Pairs of equal-length vectors.
fn two_vecs(n: std::ops::Range<usize>) -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
    n.prop_flat_map(|n| {
        (
            prop::collection::vec(awkward(), n),
            prop::collection::vec(awkward(), n),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// `decay::apply` (f32 tensors) == `reference::factor` (f64) * w_hat, to f32 rounding.
    #[test]
    fn decay_apply_matches_reference(
        (w_hat, w_old) in two_vecs(1..40),
        p in p_value(),
        lr in log_uniform(1e-5, 1.0),
        lambda in lambda_value(),
        lambda2 in lambda2_value(),
    ) {
        let st = DecayStep { lr, p, lambda, lambda2 };
        let got = read(decay::apply(tensor1::<IB>(&w_hat), tensor1::<IB>(&w_old), &st));
        let d = DecayModel { p, lambda, lambda2, s_rate: None };
        let want = model_decay_full(&F32, &exact(&w_hat), &exact(&w_old), &mut [], lr, &d);
        for i in 0..w_hat.len() {
            let f = reference::factor(w_old[i] as f64, lr, p, lambda, lambda2, None);
            prop_assert!((0.0..=1.0).contains(&f));
            let r = w_hat[i] as f64 * f;
            prop_assert!((want.w[i].v - r).abs() <= 1e-12 * r.abs(), "{} vs {r}", want.w[i].v);
            if w_old[i] == 0.0 && p < 2.0 && lambda > 0.0 {
                prop_assert_eq!(got[i], 0.0);
            }
            if got[i] != 0.0 {
                prop_assert_eq!(got[i].is_sign_negative(), w_hat[i].is_sign_negative());
            }
            prop_assert!(got[i].abs() <= w_hat[i].abs());
        }
        assert_decay_within(&got, &want, &format!("{st:?}"));
    }

    /// `decay::apply_with_s` with any s >= 0 (0, subnormal, huge, +inf) == the reference
    /// factor with that s.
    #[test]
    fn decay_apply_with_s_matches_reference(
        (w_hat, s_raw) in two_vecs(1..40),
        inf_at in prop::collection::vec(any::<bool>(), 40),
        p in p_value(),
        lr in log_uniform(1e-5, 1.0),
        lambda in lambda_value(),
        lambda2 in lambda2_value(),
    ) {
        let s: Vec<f32> = s_raw
            .iter()
            .zip(&inf_at)
            .map(|(x, inf)| if *inf && x.abs() < 1e-30 { f32::INFINITY } else { x.abs() })
            .collect();
        let st = DecayStep { lr, p, lambda, lambda2 };
        let got = read(decay::apply_with_s(tensor1::<IB>(&w_hat), tensor1::<IB>(&s), &st));
        let (c, base) = (st.coefficient(), st.base_denominator());
        let fp = F32;
        for i in 0..w_hat.len() {
            let f = reference::factor(0.5, lr, p, lambda, lambda2, Some(s[i] as f64));
            prop_assert!((0.0..=1.0).contains(&f));
            let want = w_hat[i] as f64 * f;
            prop_assert!(got[i].is_finite());
            // w_hat / (s*c + base), c and base rounded to f32 (or w_hat / base when c = 0).
            let model = if c == 0.0 {
                fp.mul(fp.exact(w_hat[i] as f64), fp.input(1.0 / base))
            } else {
                let den = fp.add(fp.mul(fp.exact(s[i] as f64), fp.input(c)), fp.input(base));
                fp.div(fp.exact(w_hat[i] as f64), den)
            };
            prop_assert!((model.v - want).abs() <= 1e-12 * want.abs());
            let g = got[i] as f64;
            let den = base + c * s[i] as f64;
            let overflow = den > F32_DEN_LIMIT && got[i] == 0.0;
            prop_assert!(
                (g - want).abs() <= K_ERR * model.e || overflow,
                "s={} got {g:e} want {want:e} +- {:e}", s[i], K_ERR * model.e
            );
        }
    }

    /// `decay::relax_s` == `reference::relax_s`, never NaN, +inf stays +inf.
    #[test]
    fn relax_s_matches_reference(
        (s_raw, t_raw) in two_vecs(1..40),
        rate in prop_oneof![0.001f64..0.999, Just(1e-50), Just(1.0 - 1e-12)],
    ) {
        let s: Vec<f32> = s_raw.iter().map(|x| x.abs()).collect();
        let t: Vec<f32> = t_raw.iter().map(|x| if *x == 0.0 { f32::INFINITY } else { x.abs() }).collect();
        let got = read(decay::relax_s(tensor1::<IB>(&s), tensor1::<IB>(&t), rate));
        let fp = F32;
        for i in 0..s.len() {
            let want = reference::relax_s(s[i] as f64, t[i] as f64, rate);
            let g = got[i] as f64;
            prop_assert!(!got[i].is_nan());
            if want.is_infinite() {
                prop_assert_eq!(g, f64::INFINITY);
            } else {
                // The rates are host scalars rounded to f32 (1e-50 becomes 0).
                let model = fp.add(
                    fp.mul(fp.exact(s[i] as f64), fp.input(1.0 - rate)),
                    fp.mul(fp.exact(t[i] as f64), fp.input(rate)),
                );
                prop_assert!((model.v - want).abs() <= 1e-12 * want);
                prop_assert!(
                    (g - want).abs() <= K_ERR * model.e,
                    "got {g:e} want {want:e} +- {:e}", K_ERR * model.e
                );
            }
        }
    }
}

/// A few optimizer steps from random awkward weights with random gradients.
fn steps_case() -> impl Strategy<Value = (Vec<f32>, Vec<Vec<f32>>)> {
    (1usize..24, 1usize..5).prop_flat_map(|(n, k)| {
        (
            prop::collection::vec(awkward(), n),
            prop::collection::vec(prop::collection::vec(grad(), n), k),
        )
    })
}

/// s_rate: adiabatic (1) or a non-adiabatic rate.
fn s_rate_value() -> impl Strategy<Value = f64> {
    prop_oneof![2 => Just(1.0), 1 => 0.05f64..0.95]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// PAdam (burn, f32) follows the f64 reference step by step, elastic net and
    /// non-adiabatic s included; exact zeros stay zero for p < 2.
    #[test]
    fn padam_steps_match_reference(
        (w0, grads) in steps_case(),
        p in p_value(),
        lr in log_uniform(1e-4, 0.1),
        lambda in lambda_value(),
        lambda2 in lambda2_value(),
        s_rate in s_rate_value(),
    ) {
        let mut optim = PAdamConfig::new()
            .with_p(p)
            .with_lambda(lambda)
            .with_lambda2(lambda2)
            .with_s_rate(s_rate)
            .init::<B, Vector<B>>()
            .unwrap();
        let traj = with_start(&w0, run_vector(&mut optim, lr, &w0, &grads));
        let d = DecayModel {
            p,
            lambda,
            lambda2,
            s_rate: (s_rate < 1.0).then_some(s_rate),
        };
        let k = grads.len();
        check_resync(&traj, &grads, &vec![lr; k], &vec![d; k], BaseModel::adam(w0.len()), "PAdam");
    }

    /// pSGD (momentum, dampening, Nesterov) likewise.
    #[test]
    fn psgd_steps_match_reference(
        (w0, grads) in steps_case(),
        p in p_value(),
        lr in log_uniform(1e-4, 0.1),
        lambda in lambda_value(),
        lambda2 in lambda2_value(),
        s_rate in s_rate_value(),
        (momentum, dampening, nesterov) in prop_oneof![
            Just((0.0, 0.0, false)),
            (0.1f64..0.99, 0.0f64..1.0).prop_map(|(m, d)| (m, d, false)),
            (0.1f64..0.99).prop_map(|m| (m, 0.0, true)),
        ],
    ) {
        let mut optim = PSgdConfig::new()
            .with_momentum(momentum)
            .with_dampening(dampening)
            .with_nesterov(nesterov)
            .with_p(p)
            .with_lambda(lambda)
            .with_lambda2(lambda2)
            .with_s_rate(s_rate)
            .init::<B, Vector<B>>()
            .unwrap();
        let traj = with_start(&w0, run_vector(&mut optim, lr, &w0, &grads));
        let d = DecayModel {
            p,
            lambda,
            lambda2,
            s_rate: (s_rate < 1.0).then_some(s_rate),
        };
        let k = grads.len();
        let base = BaseModel::sgd(w0.len(), momentum, dampening, nesterov);
        check_resync(&traj, &grads, &vec![lr; k], &vec![d; k], base, "pSGD");
    }
}

/// The error model itself is not vacuous: it rejects a factor computed from `w_hat` instead
/// of `w_old` (the known worse variant, SPEC 2) and a factor with lambda instead of p*lambda.
#[test]
fn error_model_rejects_wrong_formulas() {
    let w_old = [0.5f32, -0.02, 1e-3, 2.0];
    let w_hat = [0.45f32, -0.03, 0.011, 1.9];
    let (lr, p, lambda) = (0.05, 0.7, 0.2);
    let d = DecayModel::new(p, lambda);
    let want = model_decay_full(&F32, &exact(&w_hat), &exact(&w_old), &mut [], lr, &d);
    let with_w_hat: Vec<f32> = (0..4)
        .map(|i| {
            (w_hat[i] as f64 * reference::factor(w_hat[i] as f64, lr, p, lambda, 0.0, None)) as f32
        })
        .collect();
    let without_p: Vec<f32> = (0..4)
        .map(|i| {
            let s = (w_old[i] as f64).abs().powf(p - 2.0);
            (w_hat[i] as f64 / (1.0 + lr * lambda * s)) as f32
        })
        .collect();
    let right: Vec<f32> = want.w.iter().map(|w| w.v as f32).collect();
    assert_decay_within(&right, &want, "right");
    for wrong in [with_w_hat, without_p] {
        let r = std::panic::catch_unwind(|| assert_decay_within(&wrong, &want, "wrong"));
        assert!(r.is_err(), "{wrong:?} accepted");
    }
}
