//! Criterion bench of the CPU path (burn-flex): one optimizer step over the parameters of a
//! small MLP (784-256-10, 203k parameters), burn AdamW and Adam against PAdam and pSGD.
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

fn setup() -> (Mlp<B>, Tensor<B, 2>) {
    let device = Default::default();
    let model = Mlp {
        fc1: LinearConfig::new(784, 256).init(&device),
        fc2: LinearConfig::new(256, 10).init(&device),
    };
    let x = Tensor::<B, 2>::random([32, 784], Distribution::Default, &device);
    (model, x)
}

fn grads(model: &Mlp<B>, x: &Tensor<B, 2>) -> GradientsParams {
    let h = model.fc1.forward(x.clone()).tanh();
    let loss = model.fc2.forward(h).powf_scalar(2.0).mean();
    GradientsParams::from_grads(loss.backward(), model)
}

fn bench_optimizer<O: Optimizer<Mlp<B>, B>>(c: &mut Criterion, name: &str, mut optim: O) {
    let (mut model, x) = setup();
    // Parameter ids survive optimizer steps, so gradients of the first model fit every step.
    let model0 = model.clone();
    c.bench_function(name, |b| {
        b.iter_batched(
            || grads(&model0, &x),
            |g| {
                model = optim.step(1e-3, model.clone(), g);
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
    let psgd = PSgdConfig::new()
        .with_momentum(0.9)
        .with_p(0.8)
        .with_lambda(1e-3);
    bench_optimizer(c, "step/psgd", psgd.init::<B, Mlp<B>>().unwrap());
}

criterion_group!(benches, step);
criterion_main!(benches);
