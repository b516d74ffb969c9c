//! burn's LibTorch backend (`--backend tch`, a binary built with `--features tch`): a training
//! run that makes exact zeros and resumes to the same weights, PyTorch's layers against burn's,
//! and the fused step writing in place in a training loop only where it may (the float64
//! check of every optimizer case is in bench_verify.rs). Here libtorch runs on the CPU. Run
//! with `bash scripts/build-tch.sh test -p padam-lab --test tch --test bench_verify`.
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

/// In a training loop on tch (burn's forward and backward, then PAdam's fused step) the step
/// finds the weights where it left them and writes them in place, except where a deferred
/// check's snapshot holds them (the first step of each window), and the weights are those of
/// the step that concatenates every time (with the per-step check, whose copy of the module
/// holds every weight).
#[test]
fn the_tch_step_runs_in_place_in_a_training_loop() {
    use burn::backend::Autodiff;
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::{GradientsParams, Optimizer};
    use burn::tensor::{Distribution, Tensor};
    use padam::{NonFinitePolicy, PAdamConfig};

    type Ad = Autodiff<padam_lab::backend::Tch>;
    #[derive(Module, Debug)]
    struct Net<B: burn::tensor::backend::Backend> {
        // (burn's derive wants the backend parameter named `B`)
        a: Linear<B>,
        b: Linear<B>,
    }
    let device = Default::default();
    let init = || Net::<Ad> {
        a: LinearConfig::new(6, 8).init(&device),
        b: LinearConfig::new(8, 3).init(&device),
    };
    // a.weight's PyTorch tensor, shared at PyTorch's level only (burn's count, which decides
    // whether the step may write in place, does not see it).
    let weight = |net: &Net<Ad>| {
        let w = net.a.weight.val().inner().into_primitive().tensor();
        w.tensor.shallow_clone()
    };
    // (whether each step after the first wrote the last step's weights in place, the final
    // weights)
    let train = |config: PAdamConfig, mut net: Net<Ad>| {
        let mut optim = config.init::<Ad, Net<Ad>>().unwrap();
        let mut in_place = Vec::new();
        let mut last: Option<(tch::Tensor, tch::Tensor)> = None;
        for _ in 0..7 {
            let x = Tensor::<Ad, 2>::random([5, 6], Distribution::Normal(0.0, 1.0), &device);
            let y = net.b.forward(net.a.forward(x).tanh());
            let grads =
                GradientsParams::from_grads::<Ad, _>(y.powf_scalar(2.0).mean().backward(), &net);
            net = optim.step(1e-2, net, grads);
            let now = weight(&net);
            if let Some((old, old_values)) = last.take() {
                // Written in place: the old tensor now holds the new weights.
                let written = !old.equal(&old_values);
                assert_eq!(written, old.equal(&now), "written, but not the new weights");
                in_place.push(written);
            }
            last = Some((now.shallow_clone(), now.copy()));
        }
        let a: Vec<f32> = net.a.weight.val().into_data().to_vec().unwrap();
        (in_place, a)
    };
    let padam = || PAdamConfig::new().with_lambda(1e-2);
    <padam_lab::backend::Tch as burn::tensor::backend::Backend>::seed(&device, 3);
    let net = init();
    let reference = (padam(), net.clone());
    let unchecked = padam().with_non_finite(NonFinitePolicy::Unchecked);
    let deferred = padam().with_check_every(3);
    // The same batches for every run.
    let mut runs = Vec::new();
    for (config, net) in [reference, (unchecked, net.clone()), (deferred, net)] {
        <padam_lab::backend::Tch as burn::tensor::backend::Backend>::seed(&device, 5);
        runs.push(train(config, net));
    }
    let [(every_step, want), (unchecked, got_unchecked), (deferred, got_deferred)] =
        <[_; 3]>::try_from(runs).unwrap();
    // The per-step check (its copy of the module holds every weight): never in place.
    assert_eq!(every_step, [false; 6]);
    // Unchecked: always, after the first step (whose inputs were the initial weights).
    assert_eq!(unchecked, [true; 6]);
    // Deferred, windows of 3 steps: not at each window's first step, where its snapshot holds
    // the weights (steps 3 and 6).
    assert_eq!(deferred, [true, true, false, true, true, false]);
    assert_eq!(got_unchecked, want);
    assert_eq!(got_deferred, want);
}
