//! Criterion bench of the host side of a training batch: Fashion-MNIST's 256 augmented images
//! (random rotation and shift, bilinear), made one by one on one thread as before session 20,
//! and by `MnistSplit::batch_host`, which applies the transforms on rayon's threads; and the
//! plain normalised batch. The images are synthetic (the bench needs no data folder).
//! Run: `cargo bench -p padam-lab --bench data` (docs/BENCHMARKS.md).

use criterion::{criterion_group, criterion_main, Criterion};
use padam_lab::data::augment::Normalize;
use padam_lab::data::fashion_mnist::{MnistSplit, Transform};
use padam_lab::data::Rng;

fn batches(c: &mut Criterion) {
    let (n, side, batch) = (1024, 28, 256);
    let mut rng = Rng::new(1);
    let split = MnistSplit {
        images: (0..n * side * side).map(|_| rng.below(256) as u8).collect(),
        labels: (0..n).map(|i| (i % 10) as u8).collect(),
        rows: side,
        cols: side,
    };
    let indices: Vec<usize> = (0..batch).map(|i| (i * 37) % n).collect();
    let train = Transform::train();
    let aug = train.augment.expect("train() augments");
    let norm = Normalize::new(&[train.mean], &[train.std]);
    let mut group = c.benchmark_group("fashion_batch_256");
    group.bench_function("augmented, one thread (one by one)", |b| {
        let mut rng = Rng::new(2);
        b.iter(|| {
            let mut x = Vec::with_capacity(batch * side * side);
            for &i in &indices {
                let img = aug.apply(split.image(i), 1, side, side, &mut rng);
                norm.extend(&img, &mut x);
            }
            x
        })
    });
    group.bench_function("augmented, batch_host (rayon)", |b| {
        let mut rng = Rng::new(2);
        b.iter(|| split.batch_host(&indices, &train, &mut rng))
    });
    group.bench_function("plain, batch_host", |b| {
        let mut rng = Rng::new(2);
        b.iter(|| split.batch_host(&indices, &Transform::default(), &mut rng))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // No HTML plots: criterion draws them with system fonts, which a headless machine may lack.
    config = Criterion::default().without_plots();
    targets = batches
}
criterion_main!(benches);
