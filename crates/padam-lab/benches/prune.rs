//! Criterion bench of one gradual-pruning event on the host: the global magnitude masks of
//! nanoGPT's 10.7M decayed weights (the shapes of `configs/nanogpt-gmp.toml`'s selection), from
//! masks at 50% to 60%, as `padam train` computes them every `prune.frequency` steps.
//! The weights are synthetic (the bench needs no data folder).
//! Run: `cargo bench -p padam-lab --bench prune` (docs/BENCHMARKS.md).

use criterion::{criterion_group, criterion_main, Criterion};
use padam_lab::data::Rng;
use padam_lab::train::prune::global_magnitude_masks;

fn event(c: &mut Criterion) {
    // 6 blocks of attention (384x1152, 384x384) and MLP (384x1536, 1536x384), the tied
    // embedding (65x384) and the position embedding (256x384).
    let mut shapes = vec![
        ("wte".to_string(), 65 * 384),
        ("wpe".to_string(), 256 * 384),
    ];
    for b in 0..6 {
        for (name, n) in [
            ("attn.c_attn", 384 * 1152),
            ("attn.c_proj", 384 * 384),
            ("mlp.c_fc", 384 * 1536),
            ("mlp.c_proj", 1536 * 384),
        ] {
            shapes.push((format!("blocks.{b}.{name}.weight"), n));
        }
    }
    let mut rng = Rng::new(1);
    let mut values = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| rng.below(1 << 20) as f32 - 524288.0)
            .collect()
    };
    let weights: Vec<(String, Vec<f32>)> =
        shapes.into_iter().map(|(p, n)| (p, values(n))).collect();
    let before = global_magnitude_masks(&weights, None, 0.5);
    let mut group = c.benchmark_group("gradual_pruning_event");
    group.sample_size(10);
    group.bench_function("nanogpt 10.7M weights, 50% -> 60%", |b| {
        b.iter(|| global_magnitude_masks(&weights, Some(&before), 0.6))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // No HTML plots: criterion draws them with system fonts, which a headless machine may lack.
    config = Criterion::default().without_plots();
    targets = event
}
criterion_main!(benches);
