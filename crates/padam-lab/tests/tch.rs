//! burn's LibTorch backend (`--backend tch`, a binary built with `--features tch`): a training
//! run that makes exact zeros and resumes to the same weights (the float64 check of every
//! optimizer case is in bench_verify.rs). Here libtorch runs on the CPU. Run with
//! `bash scripts/build-tch.sh test -p padam-lab --test tch --test bench_verify`.
#![cfg(feature = "tch")]

mod common;

use padam_lab::train::{self, checkpoint, config};

#[test]
fn a_tch_run_makes_exact_zeros_like_the_cpu_run_and_resumes_exactly() {
    let tmp = common::TempDir::new("tch");
    let overrides = |backend: &str| vec![format!("backend=\"{backend}\"")];
    let cpu = config::parse(common::SPARSE_DIGITS, &overrides("cpu")).unwrap();
    let mut tch = config::parse(common::SPARSE_DIGITS, &overrides("tch")).unwrap();
    tch.train.checkpoint_every = Some(45);
    tch.train.keep_checkpoints = 10;
    let on_cpu = train::run_config(&cpu, &common::quiet_args(tmp.path("cpu"), false)).unwrap();
    let a = tmp.path("tch");
    let on_tch = train::run_config(&tch, &common::quiet_args(a.clone(), false)).unwrap();
    let last = |s: &train::Summary, key: &str| s.last.as_ref().unwrap()[key].as_f64().unwrap();
    // Same data, initial weights and batches; the kernels round differently, so the runs agree
    // in what they reach, not bit for bit.
    assert!(last(&on_tch, "zero_fraction") > 0.5, "{:?}", on_tch.last);
    assert!(
        (last(&on_tch, "zero_fraction") - last(&on_cpu, "zero_fraction")).abs() < 0.05,
        "tch {:?} cpu {:?}",
        on_tch.last,
        on_cpu.last
    );
    assert!(
        (last(&on_tch, "val_accuracy") - last(&on_cpu, "val_accuracy")).abs() < 0.05,
        "tch {:?} cpu {:?}",
        on_tch.last,
        on_cpu.last
    );
    // Roll back to the first checkpoint and resume: the same weights, bit for bit.
    let first = checkpoint::list(&a).unwrap()[0].0;
    for (step, path) in checkpoint::list(&a).unwrap() {
        if step > first {
            std::fs::remove_file(path).unwrap();
        }
    }
    std::fs::remove_file(a.join("final.json")).unwrap();
    let resumed = train::run_config(&tch, &common::quiet_args(a, true)).unwrap();
    assert_eq!(resumed.weights_hash, on_tch.weights_hash);
}

/// The layers that run as PyTorch ops under autodiff on tch (`models::ops`) against burn's own
/// modules on burn-flex: outputs, gradients and batch norm's running statistics.
#[test]
fn pytorch_layers_match_burns_modules() {
    use burn::backend::Autodiff;
    use padam_lab::models::ops::{self, cases};
    type OnFlex = Autodiff<padam_lab::backend::Cpu>;
    type OnTorch = Autodiff<padam_lab::backend::Tch>;
    assert!(ops::native_on::<OnTorch>() && !ops::native_on::<OnFlex>());
    let want = cases::run_all::<OnFlex>();
    let got = cases::run_all::<OnTorch>();
    for ((case, g), (_, w)) in got.iter().zip(&want) {
        let (name, d) = cases::worst_difference(g, w);
        assert!(d <= 1e-5, "{case}: {name} differs by {d:e} (relative)");
    }
}
