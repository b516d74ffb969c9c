//! SPEC 4: every invalid configuration is a clear error at construction naming the field and
//! the value; the learning rate (given per step) is checked by `try_step`.

mod common;

use burn::optim::{Optimizer, RmsPropConfig};
use common::*;
use padam::{ConfigError, PAdamConfig, PSgdConfig, PWdConfig, Schedule, StepFailure};

/// Assert an error names `optimizer`, `field` and `value`, in the fields and in the message.
fn assert_err(err: ConfigError, optimizer: &str, field: &str, value: &str) {
    assert_eq!(err.optimizer, optimizer, "{err}");
    assert_eq!(err.field, field, "{err}");
    assert_eq!(err.value, value, "{err}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("invalid {optimizer} config: {field} = {value} (")),
        "message: {msg}"
    );
    assert!(!err.reason.is_empty());
}

fn padam_err(cfg: PAdamConfig) -> ConfigError {
    let v = cfg.validate().expect_err("validate must fail");
    let i = cfg
        .init::<B, Vector<B>>()
        .err()
        .expect("init must fail too");
    assert_eq!(v, i);
    v
}

fn psgd_err(cfg: PSgdConfig) -> ConfigError {
    let v = cfg.validate().expect_err("validate must fail");
    let i = cfg
        .init::<B, Vector<B>>()
        .err()
        .expect("init must fail too");
    assert_eq!(v, i);
    v
}

fn pwd_err(cfg: PWdConfig) -> ConfigError {
    let v = cfg.validate().expect_err("validate must fail");
    let i = cfg
        .init_with::<B, Vector<B>, _>(RmsPropConfig::new().build())
        .err()
        .expect("init must fail too");
    assert_eq!(v, i);
    v
}

#[test]
fn p_must_be_finite_and_positive() {
    for (p, shown) in [
        (0.0, "0"),
        (-1.0, "-1"),
        (-0.5, "-0.5"),
        (f64::NAN, "NaN"),
        (f64::INFINITY, "inf"),
        (f64::NEG_INFINITY, "-inf"),
    ] {
        assert_err(padam_err(PAdamConfig::new().with_p(p)), "PAdam", "p", shown);
        assert_err(psgd_err(PSgdConfig::new().with_p(p)), "pSGD", "p", shown);
        assert_err(pwd_err(PWdConfig::new().with_p(p)), "pWD", "p", shown);
    }
    let msg = padam_err(PAdamConfig::new().with_p(-1.0)).to_string();
    assert_eq!(
        msg,
        "invalid PAdam config: p = -1 (p must be finite and > 0)"
    );
}

#[test]
fn lambda_must_be_finite_and_non_negative() {
    for (l, shown) in [(-1e-3, "-0.001"), (f64::NAN, "NaN"), (f64::INFINITY, "inf")] {
        assert_err(
            padam_err(PAdamConfig::new().with_lambda(l)),
            "PAdam",
            "lambda",
            shown,
        );
        assert_err(
            psgd_err(PSgdConfig::new().with_lambda(l)),
            "pSGD",
            "lambda",
            shown,
        );
        assert_err(
            pwd_err(PWdConfig::new().with_lambda(l)),
            "pWD",
            "lambda",
            shown,
        );
    }
}

#[test]
fn betas_must_be_in_zero_one() {
    for (b, shown) in [(1.0, "1"), (1.5, "1.5"), (-0.1, "-0.1"), (f64::NAN, "NaN")] {
        assert_err(
            padam_err(PAdamConfig::new().with_beta_1(b)),
            "PAdam",
            "beta_1",
            shown,
        );
        assert_err(
            padam_err(PAdamConfig::new().with_beta_2(b)),
            "PAdam",
            "beta_2",
            shown,
        );
    }
}

/// burn's Adam computes in f32: a beta that rounds to 1.0 in f32 (0.99999999) or an epsilon
/// that rounds to 0 (1e-50) would give NaN weights (bias correction 1 - 1^t = 0, or 0/0 for a
/// zero gradient), so they are refused although valid as f64.
#[test]
fn values_that_break_in_f32_are_refused() {
    assert_err(
        padam_err(PAdamConfig::new().with_beta_1(0.999_999_99)),
        "PAdam",
        "beta_1",
        "0.99999999",
    );
    assert_err(
        padam_err(PAdamConfig::new().with_beta_2(0.999_999_99)),
        "PAdam",
        "beta_2",
        "0.99999999",
    );
    assert_err(
        padam_err(PAdamConfig::new().with_epsilon(1e-50)),
        "PAdam",
        "epsilon",
        "0.00000000000000000000000000000000000000000000000001",
    );
    assert_err(
        padam_err(PAdamConfig::new().with_epsilon(1e39)),
        "PAdam",
        "epsilon",
        "1000000000000000000000000000000000000000",
    );
    // The largest f64 below 1 that is still below 1 in f32 is accepted and stays finite.
    let mut o = PAdamConfig::new()
        .with_beta_2(0.999_999_9)
        .init::<B, Vector<B>>()
        .unwrap();
    let t = run_vector(&mut o, 1e-2, &[0.5, 0.5], &[vec![0.0, 0.1], vec![0.0, 0.1]]);
    assert!(t.iter().flatten().all(|w| w.is_finite()), "{t:?}");
}

#[test]
fn epsilon_must_be_positive_and_finite() {
    for (e, shown) in [
        (0.0, "0"),
        (-1e-8, "-0.00000001"),
        (f64::NAN, "NaN"),
        (f64::INFINITY, "inf"),
    ] {
        assert_err(
            padam_err(PAdamConfig::new().with_epsilon(e)),
            "PAdam",
            "epsilon",
            shown,
        );
    }
}

#[test]
fn s_rate_must_be_in_zero_one_inclusive() {
    for (r, shown) in [(0.0, "0"), (-0.5, "-0.5"), (1.5, "1.5"), (f64::NAN, "NaN")] {
        assert_err(
            padam_err(PAdamConfig::new().with_s_rate(r)),
            "PAdam",
            "s_rate",
            shown,
        );
        assert_err(
            psgd_err(PSgdConfig::new().with_s_rate(r)),
            "pSGD",
            "s_rate",
            shown,
        );
        assert_err(
            pwd_err(PWdConfig::new().with_s_rate(r)),
            "pWD",
            "s_rate",
            shown,
        );
    }
}

#[test]
fn lambda2_must_be_finite_and_non_negative() {
    for (l, shown) in [(-0.1, "-0.1"), (f64::NAN, "NaN"), (f64::INFINITY, "inf")] {
        assert_err(
            padam_err(PAdamConfig::new().with_lambda2(l)),
            "PAdam",
            "lambda2",
            shown,
        );
        assert_err(
            psgd_err(PSgdConfig::new().with_lambda2(l)),
            "pSGD",
            "lambda2",
            shown,
        );
    }
}

#[test]
fn schedules_are_validated_over_their_whole_range() {
    // A p ramp that ends below 0.
    let e = padam_err(PAdamConfig::new().with_p_schedule(Schedule::Linear {
        from: 2.0,
        to: -0.5,
        steps: 10,
    }));
    assert_err(e, "PAdam", "p", "-0.5");
    // A lambda ramp that starts below 0.
    let e = psgd_err(PSgdConfig::new().with_lambda_schedule(Schedule::Cosine {
        from: -1.0,
        to: 0.1,
        steps: 10,
    }));
    assert_err(e, "pSGD", "lambda", "-1");
    // p = 0 reached by a piecewise schedule's knot.
    let e = pwd_err(PWdConfig::new().with_p_schedule(Schedule::Piecewise {
        points: vec![(0, 2.0), (5, 0.0)],
    }));
    assert_err(e, "pWD", "p", "0");
    // Piecewise shape errors name `<field>.points`.
    let e =
        padam_err(PAdamConfig::new().with_lambda_schedule(Schedule::Piecewise { points: vec![] }));
    assert_err(e, "PAdam", "lambda.points", "[]");
    let e = padam_err(PAdamConfig::new().with_p_schedule(Schedule::Piecewise {
        points: vec![(3, 1.0), (3, 0.5)],
    }));
    assert_err(e, "PAdam", "p.points", "[(3, 1.0), (3, 0.5)]");
    // Geometric needs positive ends.
    let e = padam_err(
        PAdamConfig::new().with_lambda_schedule(Schedule::Geometric {
            from: 0.0,
            to: 0.1,
            steps: 4,
        }),
    );
    assert_err(e, "PAdam", "lambda", "geometric from 0 to 0.1");
    // NaN inside a schedule.
    let e = padam_err(PAdamConfig::new().with_p_schedule(Schedule::Linear {
        from: 2.0,
        to: f64::NAN,
        steps: 3,
    }));
    assert_err(e, "PAdam", "p", "NaN");
}

#[test]
fn psgd_momentum_dampening_nesterov() {
    assert_err(
        psgd_err(PSgdConfig::new().with_momentum(-0.1)),
        "pSGD",
        "momentum",
        "-0.1",
    );
    assert_err(
        psgd_err(PSgdConfig::new().with_momentum(f64::NAN)),
        "pSGD",
        "momentum",
        "NaN",
    );
    assert_err(
        psgd_err(PSgdConfig::new().with_momentum(0.9).with_dampening(1.5)),
        "pSGD",
        "dampening",
        "1.5",
    );
    assert_err(
        psgd_err(PSgdConfig::new().with_momentum(0.9).with_dampening(-0.1)),
        "pSGD",
        "dampening",
        "-0.1",
    );
    // Nesterov without momentum, or with dampening.
    assert_err(
        psgd_err(PSgdConfig::new().with_nesterov(true)),
        "pSGD",
        "nesterov",
        "true with momentum 0 and dampening 0",
    );
    assert_err(
        psgd_err(
            PSgdConfig::new()
                .with_nesterov(true)
                .with_momentum(0.9)
                .with_dampening(0.1),
        ),
        "pSGD",
        "nesterov",
        "true with momentum 0.9 and dampening 0.1",
    );
}

/// Edge values that are valid are accepted.
#[test]
fn valid_edge_values_are_accepted() {
    let ok = [
        PAdamConfig::new().with_p(1e-3),
        PAdamConfig::new().with_p(10.0),
        PAdamConfig::new().with_lambda(0.0),
        PAdamConfig::new().with_beta_1(0.0).with_beta_2(0.0),
        PAdamConfig::new().with_beta_2(0.999_999),
        PAdamConfig::new().with_s_rate(1.0).with_lambda2(0.0),
        PAdamConfig::new().with_s_rate(1e-6),
        PAdamConfig::new().with_epsilon(1e-30),
    ];
    for cfg in ok {
        cfg.validate().unwrap();
        cfg.init::<B, Vector<B>>().unwrap();
    }
    PSgdConfig::new()
        .with_momentum(0.9)
        .with_dampening(1.0)
        .validate()
        .unwrap();
    PSgdConfig::new()
        .with_momentum(0.9)
        .with_nesterov(true)
        .validate()
        .unwrap();
}

#[test]
fn negative_or_non_finite_lr_is_refused_by_try_step() {
    for (lr, shown) in [(-1e-3, "-0.001"), (f64::NAN, "NaN"), (f64::INFINITY, "inf")] {
        let mut optim = PAdamConfig::new().init::<B, Vector<B>>().unwrap();
        let w0 = [0.5f32, -0.25, 0.0];
        let m = vector(&w0);
        let grads = vector_grads(&m, &[0.1, 0.2, 0.3]);
        let err = optim
            .try_step(lr, m, grads)
            .expect_err("lr must be refused");
        // The module comes back unchanged, and no step was counted.
        assert_eq!(bits(&values(&err.module)), bits(&w0));
        assert_eq!(optim.steps(), 0);
        match err.error {
            StepFailure::InvalidLearningRate(e) => {
                assert_err(e, "optimizer step", "lr", shown);
            }
            other => panic!("wrong failure: {other:?}"),
        }
    }
    // lr = 0 is valid.
    let mut optim = PAdamConfig::new().init::<B, Vector<B>>().unwrap();
    let m = vector(&[0.5]);
    let grads = vector_grads(&m, &[0.1]);
    assert!(optim.try_step(0.0, m, grads).is_ok());
}

#[test]
#[should_panic(expected = "invalid optimizer step config: lr = -0.1")]
fn negative_lr_panics_in_optimizer_step() {
    let mut optim = PSgdConfig::new().init::<B, Vector<B>>().unwrap();
    let m = vector(&[0.5]);
    let grads = vector_grads(&m, &[0.1]);
    let _ = optim.step(-0.1, m, grads);
}

/// Configs read from JSON go through the same validation, and unknown fields are refused.
#[test]
fn json_configs_are_validated_and_strict() {
    let cfg: PAdamConfig = serde_json::from_str(
        r#"{"beta_1": 0.9, "decay": {"p": {"kind": "constant", "value": -2}}}"#,
    )
    .unwrap();
    assert_err(cfg.validate().unwrap_err(), "PAdam", "p", "-2");
    assert!(serde_json::from_str::<PAdamConfig>(r#"{"betta_1": 0.9}"#).is_err());
    assert!(serde_json::from_str::<PSgdConfig>(r#"{"decay": {"lamda": 0.1}}"#).is_err());
    let cfg: PSgdConfig = serde_json::from_str(r#"{"momentum": 0.9}"#).unwrap();
    assert_eq!(cfg.dampening, 0.0);
    cfg.validate().unwrap();
}
