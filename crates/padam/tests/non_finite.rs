//! SPEC 4: a NaN or infinite gradient must not silently poison the weights; it is detected and
//! reported by parameter path, per the documented policy (`NonFinitePolicy`).
//! - `Error` (default): `try_step` returns the error with the unchanged module; `step` panics.
//! - `SkipTensor`: the offending tensor (weights and state) is left as is, the others update.
//! - `Error` with `check_every = k > 1`: flags kept on the device, read every `k` steps (or by
//!   `settle`); a hit refuses the whole window and rolls weights and state back to its start.
//!
//! PAdam's checks run on both of its paths on the CPU: the fused step (the default, one pass
//! per tensor, whose flags are the CUDA kernel's) and the tensor ops (`with_fused_kernel(false)`).

mod common;

use burn::module::ParamId;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::{Tensor, TensorData};
use common::*;
use padam::{NonFiniteParam, NonFinitePolicy, PAdamConfig, PSgdConfig, StepFailure};

/// Overwrite some entries of one parameter's gradient.
fn poison<const D: usize>(grads: &mut GradientsParams, id: ParamId, edits: &[(usize, f32)]) {
    let g: Tensor<IB, D> = grads.remove(id).expect("gradient present");
    let shape = g.shape();
    let mut v = read(g);
    for &(i, x) in edits {
        v[i] = x;
    }
    grads.register(
        id,
        Tensor::<IB, D>::from_data(TensorData::new(v, shape), &device()),
    );
}

/// PAdam on the fused step (`true`) or the tensor ops (`false`).
fn padam(fused: bool) -> PAdamConfig {
    PAdamConfig::new().with_fused_kernel(fused)
}

/// NaN at entries 0 and 5 of `fc1.weight`.
fn nan_at_0_and_5(m: &Mlp<B>, k: u64) -> GradientsParams {
    let mut g = mlp_grads(m, k);
    poison::<2>(&mut g, m.fc1.weight.id, &[(0, f32::NAN), (5, f32::NAN)]);
    g
}

/// Also +inf and -inf at entries 0 and 2 of `fc2.bias`.
fn bad_grads(m: &Mlp<B>, k: u64) -> GradientsParams {
    let mut g = nan_at_0_and_5(m, k);
    let id = m.fc2.bias.as_ref().unwrap().id;
    poison::<1>(&mut g, id, &[(0, f32::INFINITY), (2, f32::NEG_INFINITY)]);
    g
}

#[test]
fn error_policy_is_the_default() {
    assert_eq!(PAdamConfig::new().decay.non_finite, NonFinitePolicy::Error);
    assert_eq!(PSgdConfig::new().decay.non_finite, NonFinitePolicy::Error);
}

#[test]
fn error_policy_try_step_names_every_bad_parameter_and_returns_module_unchanged() {
    for fused in [true, false] {
        let mut optim = padam(fused).init::<B, Mlp<B>>().unwrap();
        let m = mlp(1);
        let before = mlp_values(&m);
        let grads = bad_grads(&m, 0);
        let err = optim.try_step(1e-2, m, grads).expect_err("must refuse");
        let StepFailure::NonFiniteGradient(nf) = &err.error else {
            panic!("wrong failure {:?}", err.error)
        };
        assert_eq!(nf.step, 0);
        assert_eq!(
            nf.params,
            vec![
                NonFiniteParam {
                    path: "fc1.weight".into(),
                    count: Some(2)
                },
                NonFiniteParam {
                    path: "fc2.bias".into(),
                    count: Some(2)
                },
            ]
        );
        let msg = err.to_string();
        assert_eq!(
            msg,
            "non-finite gradient (NaN or inf) at step 0 in `fc1.weight` (2 values), \
             `fc2.bias` (2 values); the weights were left unchanged"
        );
        // The module handed back is the one given, bit for bit; no step was counted.
        let m = err.module;
        for (a, b) in mlp_values(&m).iter().zip(&before) {
            assert_eq!(bits(a), bits(b));
        }
        assert_eq!(optim.steps(), 0);
        assert_eq!(optim.skipped_updates(), 0);
        // The optimizer state is untouched too: the next (good) step equals a fresh optimizer's
        // first step.
        let mut fresh = padam(fused).init::<B, Mlp<B>>().unwrap();
        let a = optim.step(1e-2, m.clone(), mlp_grads(&m, 0));
        let b = fresh.step(1e-2, m.clone(), mlp_grads(&m, 0));
        for (x, y) in mlp_values(&a).iter().zip(mlp_values(&b)) {
            assert_eq!(bits(x), bits(&y));
        }
        assert_eq!(optim.steps(), 1);
    }
}

#[test]
fn error_policy_counts_the_step_index() {
    let mut optim = PSgdConfig::new().init::<B, Mlp<B>>().unwrap();
    let mut m = mlp(2);
    for k in 0..3 {
        let g = mlp_grads(&m, k);
        m = optim.step(0.05, m, g);
    }
    let g = nan_at_0_and_5(&m, 3);
    let err = optim.try_step(0.05, m, g).expect_err("must refuse");
    match err.error {
        StepFailure::NonFiniteGradient(nf) => {
            assert_eq!(nf.step, 3);
            assert_eq!(nf.params.len(), 1);
            assert_eq!(nf.params[0].path, "fc1.weight");
        }
        other => panic!("{other:?}"),
    }
}

fn optimizer_step_with_a_nan(fused: bool) {
    let mut optim = padam(fused).init::<B, Mlp<B>>().unwrap();
    let m = mlp(1);
    let g = nan_at_0_and_5(&m, 0);
    let _ = optim.step(1e-2, m, g);
}

#[test]
#[should_panic(expected = "non-finite gradient (NaN or inf) at step 0 in `fc1.weight` (2 values)")]
fn error_policy_optimizer_step_panics_naming_the_parameter() {
    optimizer_step_with_a_nan(true);
}

#[test]
#[should_panic(expected = "non-finite gradient (NaN or inf) at step 0 in `fc1.weight` (2 values)")]
fn error_policy_optimizer_step_panics_naming_the_parameter_on_tensor_ops() {
    optimizer_step_with_a_nan(false);
}

#[test]
fn error_policy_detects_nan_and_both_infinities_on_one_parameter() {
    for fused in [true, false] {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut optim = padam(fused).init::<B, Vector<B>>().unwrap();
            let m = vector(&[0.5, 0.25, 0.0]);
            let g = vector_grads(&m, &[0.1, bad, 0.2]);
            let err = optim.try_step(1e-2, m, g).expect_err("must refuse");
            assert!(err.to_string().contains("`w` (1 values)"), "{err}");
        }
    }
}

/// Finite gradients whose sum overflows f32 are not non-finite and must not be refused.
#[test]
fn large_finite_gradients_are_not_flagged() {
    for fused in [true, false] {
        let mut optim = padam(fused).init::<B, Vector<B>>().unwrap();
        let m = vector(&[0.5, 0.25, 0.0]);
        let g = vector_grads(&m, &[3e38, 3e38, -1e38]);
        let m = optim
            .try_step(1e-2, m, g)
            .expect("finite gradients are fine");
        assert!(values(&m).iter().all(|w| w.is_finite()));
    }
}

/// SkipTensor: the offending tensors keep their weights and optimizer state, the others update
/// exactly as if the offending gradients had not been given at all; skips are counted.
#[test]
fn skip_tensor_policy_leaves_bad_tensors_and_updates_the_rest() {
    let cfg = PAdamConfig::new()
        .with_p(0.8)
        .with_lambda(0.01)
        .with_non_finite(NonFinitePolicy::SkipTensor);
    let mut skip = cfg.init::<B, Mlp<B>>().unwrap();
    let mut absent = cfg.init::<B, Mlp<B>>().unwrap();
    let (mut a, mut b) = (mlp(3), mlp(3));
    let start = mlp_values(&a);
    for k in 0..4 {
        // Steps 0 and 2 carry NaN/inf in fc1.weight and fc2.bias.
        let bad_step = k % 2 == 0;
        let ga = if bad_step {
            bad_grads(&a, k)
        } else {
            mlp_grads(&a, k)
        };
        let mut gb = mlp_grads(&b, k);
        if bad_step {
            let _: Option<Tensor<IB, 2>> = gb.remove(b.fc1.weight.id);
            let _: Option<Tensor<IB, 1>> = gb.remove(b.fc2.bias.as_ref().unwrap().id);
        }
        let before = mlp_values(&a);
        a = skip
            .try_step(1e-2, a, ga)
            .expect("SkipTensor never refuses");
        b = absent.step(1e-2, b, gb);
        let after = mlp_values(&a);
        if bad_step {
            assert_eq!(bits(&after[0]), bits(&before[0]), "fc1.weight untouched");
            assert_eq!(bits(&after[3]), bits(&before[3]), "fc2.bias untouched");
        }
        assert_ne!(after[1], before[1], "fc1.bias updated");
        assert_ne!(after[2], before[2], "fc2.weight updated");
        for (x, y) in after.iter().zip(mlp_values(&b)) {
            assert_eq!(bits(x), bits(&y), "step {k}");
        }
        assert!(after.iter().flatten().all(|w| w.is_finite()));
    }
    assert_eq!(skip.skipped_updates(), 4); // two tensors, two bad steps
    assert_eq!(skip.steps(), 4);
    assert_ne!(mlp_values(&a)[0], start[0]);
}

/// `Unchecked` is the documented opt-out: no detection, so a NaN reaches the weights (and
/// nothing is counted). This pins the contract so the default can't silently become it.
#[test]
fn unchecked_policy_lets_nan_through_and_counts_nothing() {
    for fused in [true, false] {
        let mut optim = padam(fused)
            .with_non_finite(NonFinitePolicy::Unchecked)
            .init::<B, Mlp<B>>()
            .unwrap();
        let m = mlp(1);
        let grads = nan_at_0_and_5(&m, 0);
        let m = optim
            .try_step(1e-2, m, grads)
            .expect("unchecked never refuses");
        let w = read(m.fc1.weight.val());
        assert!(w[0].is_nan() && w[5].is_nan());
        assert!(w[1].is_finite());
        assert_eq!(optim.skipped_updates(), 0);
        assert_eq!(optim.steps(), 1);
    }
}

/// `k` good steps of `optim` from `m` (gradients `mlp_grads(m, first..)`).
fn good_steps<O: Optimizer<Mlp<B>, B>>(optim: &mut O, mut m: Mlp<B>, first: u64, k: u64) -> Mlp<B> {
    for j in first..first + k {
        let g = mlp_grads(&m, j);
        m = optim.step(1e-2, m, g);
    }
    m
}

/// Deferring the check changes nothing when every gradient is finite: after 7 steps (two full
/// windows of 3 and one open) the weights and the state equal the every-step check's, bit for bit.
#[test]
fn deferred_check_gives_the_same_steps_as_checking_every_step() {
    for fused in [true, false] {
        let mut every = padam(fused).with_p(0.8).init::<B, Mlp<B>>().unwrap();
        let mut deferred = padam(fused)
            .with_p(0.8)
            .with_check_every(3)
            .init::<B, Mlp<B>>()
            .unwrap();
        let a = good_steps(&mut every, mlp(4), 0, 7);
        let b = good_steps(&mut deferred, mlp(4), 0, 7);
        let b = deferred.settle(b).expect("all gradients finite");
        for (x, y) in mlp_values(&a).iter().zip(mlp_values(&b)) {
            assert_eq!(bits(x), bits(&y));
        }
        assert_eq!((every.steps(), deferred.steps()), (7, 7));
        // The next step from the same state is the same too.
        let a = good_steps(&mut every, a, 7, 1);
        let b = good_steps(&mut deferred, b, 7, 1);
        for (x, y) in mlp_values(&a).iter().zip(mlp_values(&b)) {
            assert_eq!(bits(x), bits(&y));
        }
    }
}

/// A NaN in the middle of a window is caught when the window is read (its third step):
/// the error names the parameters and the steps, and the module and state come back as they
/// were before the window, so the run can go on exactly as if the window had not happened.
#[test]
fn deferred_check_refuses_the_window_and_rolls_back_to_its_start() {
    for fused in [true, false] {
        let mut optim = padam(fused)
            .with_p(0.8)
            .with_check_every(3)
            .init::<B, Mlp<B>>()
            .unwrap();
        let m = good_steps(&mut optim, mlp(5), 0, 3); // one full, clean window: steps 0..=2
        let before = mlp_values(&m);
        let mut reference = optim.clone();
        let m = good_steps(&mut optim, m, 3, 1); // step 3
        let g = bad_grads(&m, 4);
        let m = optim.try_step(1e-2, m, g).expect("not read yet"); // step 4: NaN, inf
        assert!(
            mlp_values(&m)[0].iter().any(|w| w.is_nan()),
            "the NaN went in"
        );
        let g = mlp_grads(&m, 5);
        let err = optim
            .try_step(1e-2, m, g)
            .expect_err("step 5 reads the window");
        let StepFailure::NonFiniteGradient(nf) = &err.error else {
            panic!("wrong failure {:?}", err.error)
        };
        assert_eq!((nf.step, nf.through), (3, 5));
        // Step 4 poisoned fc1.weight and fc2.bias; step 5's gradients, taken at the poisoned
        // weights, are NaN everywhere: every parameter is named, without counts.
        let named: Vec<(&str, Option<usize>)> = nf
            .params
            .iter()
            .map(|p| (p.path.as_str(), p.count))
            .collect();
        assert_eq!(
            named,
            [
                ("fc1.weight", None),
                ("fc1.bias", None),
                ("fc2.weight", None),
                ("fc2.bias", None)
            ]
        );
        assert_eq!(
            err.to_string(),
            "non-finite gradient (NaN or inf) in steps 3..=5 (checked together; rolled back to \
             before step 3) in `fc1.weight`, `fc1.bias`, `fc2.weight`, `fc2.bias`; the weights \
             were left unchanged"
        );
        let m = err.module;
        for (a, b) in mlp_values(&m).iter().zip(&before) {
            assert_eq!(bits(a), bits(b));
        }
        assert_eq!(optim.steps(), 3);
        // State rolled back: the next steps equal those of a copy taken before the window.
        let a = good_steps(&mut optim, m.clone(), 3, 2);
        let b = good_steps(&mut reference, m, 3, 2);
        for (x, y) in mlp_values(&a).iter().zip(mlp_values(&b)) {
            assert_eq!(bits(x), bits(&y));
        }
        assert_eq!(optim.steps(), 5);
    }
}

/// `settle` reads an open window early (before a checkpoint, say): clean, it keeps the module;
/// with a NaN since the last read, it refuses those steps.
#[test]
fn settle_reads_an_open_window() {
    let mut optim = PSgdConfig::new()
        .with_check_every(100)
        .init::<B, Mlp<B>>()
        .unwrap();
    let m = good_steps(&mut optim, mlp(6), 0, 2);
    let m = optim.settle(m).expect("clean");
    assert_eq!(optim.steps(), 2);
    let before = mlp_values(&m);
    let g = nan_at_0_and_5(&m, 2);
    let m = optim.try_step(0.05, m, g).expect("not read yet");
    let err = optim.settle(m).expect_err("the NaN is found");
    let StepFailure::NonFiniteGradient(nf) = &err.error else {
        panic!("wrong failure {:?}", err.error)
    };
    assert_eq!((nf.step, nf.through, nf.params.len()), (2, 2, 1));
    assert_eq!(nf.params[0].path, "fc1.weight");
    for (a, b) in mlp_values(&err.module).iter().zip(&before) {
        assert_eq!(bits(a), bits(b));
    }
    // Nothing pending any more.
    optim.settle(err.module).expect("nothing to read");
    assert_eq!(optim.steps(), 2);
}

#[test]
fn check_every_zero_is_a_config_error_naming_the_field() {
    let err = PAdamConfig::new()
        .with_check_every(0)
        .init::<B, Mlp<B>>()
        .err()
        .expect("must be refused");
    let msg = err.to_string();
    assert!(msg.contains("check_every = 0"), "{msg}");
}
