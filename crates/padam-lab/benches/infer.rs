//! Criterion bench of the sparse inference engine at CI size: dense (gemm), our CSR and sprs's
//! CSR products on two layer shapes, and the whole Fashion CNN forward at batch 1 on burn-flex
//! and on the engine (dense and sparse plans), with 95% of each weight matrix exactly 0.
//! Run: `cargo bench -p padam-lab --bench infer`. The full-model table is `padam bench infer`
//! (docs/BENCHMARKS.md).

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use criterion::{criterion_group, criterion_main, Criterion};
use padam_lab::data::Rng;
use padam_lab::infer::{sparse_normal, Engine, Matrix, Plan, Shape, Tensors};
use padam_lab::models::fashion_cnn::FashionCnnConfig;

fn products(c: &mut Criterion) {
    let mut rng = Rng::new(1);
    // The Fashion CNN's fc1 and the ResNet18 layer-4 convolution's kernel matrix (at batch 1:
    // 16 output pixels), at 95% zeros.
    for (name, m, k, ps) in [
        ("fc1", 128, 3136, [1, 64]),
        ("layer4conv", 512, 4608, [16, 1024]),
    ] {
        let w = sparse_normal(m * k, 0.95, &mut rng);
        let dense = Matrix::choose(m, k, w.clone(), f64::INFINITY);
        let csr = Matrix::choose(m, k, w, 0.0);
        let Matrix::Sparse(ours) = &csr else {
            unreachable!("threshold 0 stores CSR")
        };
        let theirs = sprs::CsMat::new(
            (m, k),
            ours.row_ptr.iter().map(|&v| v as usize).collect(),
            ours.col_idx.iter().map(|&v| v as usize).collect(),
            ours.values.clone(),
        );
        for p in ps {
            let x = sparse_normal(k * p, 0.0, &mut rng);
            let xa = ndarray::Array2::from_shape_vec((k, p), x.clone()).unwrap();
            let id = format!("{name}_95pct_p{p}");
            c.bench_function(&format!("{id}/dense_gemm"), |b| {
                b.iter(|| dense.matmul(&x, p))
            });
            c.bench_function(&format!("{id}/csr_ours"), |b| b.iter(|| csr.matmul(&x, p)));
            c.bench_function(&format!("{id}/csr_sprs"), |b| b.iter(|| &theirs * &xa));
        }
    }
}

fn fashion(c: &mut Criterion) {
    let device = Default::default();
    let config = FashionCnnConfig::default();
    let mut tensors = Tensors::from_module(&config.init::<Flex>(1, &device), "bench");
    let mut rng = Rng::new(2);
    for h in tensors.map.values_mut() {
        if h.shape.len() >= 2 {
            h.values
                .iter_mut()
                .for_each(|v| *v = if rng.next_f64() < 0.95 { 0.0 } else { *v });
        }
    }
    let model = tensors.load_into(config.init::<Flex>(1, &device)).unwrap();
    let shape = Shape::Fashion(config);
    let x = sparse_normal(28 * 28, 0.0, &mut rng);
    c.bench_function("fashion_95pct_b1/burn_flex", |b| {
        b.iter(|| {
            let t =
                Tensor::<Flex, 4>::from_data(TensorData::new(x.clone(), [1, 1, 28, 28]), &device);
            model.forward(t).into_data()
        })
    });
    for (name, plan) in [
        ("engine_dense", Plan::dense()),
        ("engine_sparse", Plan::sparse()),
    ] {
        let e = Engine::build(&shape, &tensors, plan).unwrap();
        c.bench_function(&format!("fashion_95pct_b1/{name}"), |b| {
            b.iter(|| e.classify(&x, 1, [28, 28]).unwrap())
        });
    }
}

criterion_group! {
    name = benches;
    // No HTML plots: criterion draws them with system fonts, which a headless machine may lack.
    config = Criterion::default().without_plots();
    targets = products, fashion
}
criterion_main!(benches);
