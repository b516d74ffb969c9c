//! Criterion bench of the CPU path (burn-flex): one optimizer step over the parameters of a
//! small MLP (784-256-10, 203k parameters), burn AdamW and Adam against PAdam (fused CPU step
//! and tensor ops) and pSGD (the decay fused and as tensor ops).
//! Run: `cargo bench -p padam-lab --bench cpu_step`. Results are recorded in docs/BENCHMARKS.md.

use burn::backend::{Autodiff, Flex};
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use padam::{NonFinitePolicy, PAdamConfig, PSgdConfig};

type B = Autodiff<Flex>;

#[derive(Module, Debug)]
struct Mlp<B: Backend> {
    fc1: Linear<B>,
    fc2: Linear<B>,
}

/// The MLP and a batch; with `zeros`, that fraction of each weight matrix set to exactly 0
/// (a network PAdam has sparsified: the state where most of a run's steps are taken).
fn setup(zeros: f64) -> (Mlp<B>, Tensor<B, 2>) {
    let device = Default::default();
    let sparsify = |w: Tensor<B, 2>| {
        let mask = w
            .random_like(Distribution::Uniform(0.0, 1.0))
            .lower_elem(zeros);
        w.mask_fill(mask, 0.0)
    };
    let mut model = Mlp {
        fc1: LinearConfig::new(784, 256).init(&device),
        fc2: LinearConfig::new(256, 10).init(&device),
    };
    model.fc1.weight = model.fc1.weight.map(sparsify);
    model.fc2.weight = model.fc2.weight.map(sparsify);
    let x = Tensor::<B, 2>::random([32, 784], Distribution::Default, &device);
    (model, x)
}

fn grads(model: &Mlp<B>, x: &Tensor<B, 2>) -> GradientsParams {
    let h = model.fc1.forward(x.clone()).tanh();
    let loss = model.fc2.forward(h).powf_scalar(2.0).mean();
    GradientsParams::from_grads(loss.backward(), model)
}

fn bench_optimizer<O: Optimizer<Mlp<B>, B>>(c: &mut Criterion, name: &str, optim: O) {
    bench_optimizer_at(c, name, optim, 0.0);
}

fn bench_optimizer_at<O: Optimizer<Mlp<B>, B>>(
    c: &mut Criterion,
    name: &str,
    mut optim: O,
    zeros: f64,
) {
    let (model, x) = setup(zeros);
    // Parameter ids survive optimizer steps, so gradients of the first model fit every step.
    let model0 = model.clone();
    // The model moves into each step (as in a training loop), so an optimizer may write its
    // buffers in place.
    let mut model = Some(model);
    c.bench_function(name, |b| {
        b.iter_batched(
            || grads(&model0, &x),
            |g| {
                let m = model.take().expect("put back after every step");
                model = Some(optim.step(1e-3, m, g));
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

fn step(c: &mut Criterion) {
    bench_optimizer(
        c,
        "step/burn_adamw",
        AdamWConfig::new().with_epsilon(1e-8).init::<B, Mlp<B>>(),
    );
    bench_optimizer(
        c,
        "step/burn_adam",
        AdamConfig::new().with_epsilon(1e-8).init::<B, Mlp<B>>(),
    );
    let padam = PAdamConfig::new().with_p(0.8).with_lambda(1e-3);
    bench_optimizer(c, "step/padam", padam.init::<B, Mlp<B>>().unwrap());
    bench_optimizer(
        c,
        "step/padam_unchecked",
        padam
            .with_non_finite(NonFinitePolicy::Unchecked)
            .init::<B, Mlp<B>>()
            .unwrap(),
    );
    bench_optimizer(
        c,
        "step/padam_tensor_ops",
        PAdamConfig::new()
            .with_p(0.8)
            .with_lambda(1e-3)
            .with_fused_kernel(false)
            .init::<B, Mlp<B>>()
            .unwrap(),
    );
    // The same two paths on a network with 90% of its weights at exactly 0.
    let padam = PAdamConfig::new().with_p(0.8).with_lambda(1e-3);
    bench_optimizer_at(
        c,
        "step/padam_90pct_zeros",
        padam.clone().init().unwrap(),
        0.9,
    );
    bench_optimizer_at(
        c,
        "step/padam_tensor_ops_90pct_zeros",
        padam.with_fused_kernel(false).init().unwrap(),
        0.9,
    );
    // pSGD: burn's SGD, then the decay fused (the default) or as tensor ops, dense and sparse.
    let psgd = PSgdConfig::new()
        .with_momentum(0.9)
        .with_p(0.8)
        .with_lambda(1e-3);
    let ops = psgd.clone().with_fused_kernel(false);
    bench_optimizer(c, "step/psgd", psgd.init::<B, Mlp<B>>().unwrap());
    bench_optimizer(c, "step/psgd_tensor_ops", ops.init::<B, Mlp<B>>().unwrap());
    bench_optimizer_at(c, "step/psgd_90pct_zeros", psgd.init().unwrap(), 0.9);
    bench_optimizer_at(
        c,
        "step/psgd_tensor_ops_90pct_zeros",
        ops.init().unwrap(),
        0.9,
    );
}

criterion_group! {
    name = benches;
    // No HTML plots: criterion draws them with system fonts, which a headless machine may lack.
    config = Criterion::default().without_plots();
    targets = step
}
criterion_main!(benches);
