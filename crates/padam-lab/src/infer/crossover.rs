//! Where CSR starts to pay: the dense and CSR forms of our models' layers timed against each
//! other at several zero fractions (`padam bench infer --crossover`), linear layers as products
//! and convolutions as whole layers (im2col + gemm against the direct sparse convolution).
//! The thresholds in [`super::plan`] are read off this table.

use std::time::Instant;

use super::matrix::Matrix;
use super::ops::{Conv, Image};
use crate::data::Rng;

/// Zero fractions the table covers.
pub const ZEROS: [f64; 8] = [0.3, 0.5, 0.7, 0.8, 0.9, 0.93, 0.95, 0.98];

/// `n` standard normal values, each zeroed with probability `zeros`: the random weights (and,
/// with `zeros = 0`, activations) of the crossover table and the inference benches.
pub fn sparse_normal(n: usize, zeros: f64, rng: &mut Rng) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v = rng.normal() as f32;
            if rng.next_f64() < zeros {
                0.0
            } else {
                v
            }
        })
        .collect()
}

/// Median ms of `a` and `b`, timed in turns.
fn race(iters: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    a();
    b();
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..iters.max(1) {
        let t = Instant::now();
        a();
        ta.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        b();
        tb.push(t.elapsed().as_secs_f64());
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2] * 1e3
    };
    (med(ta), med(tb))
}

/// The markdown table: per layer shape, dense time / CSR time at each of [`ZEROS`] (above 1:
/// CSR is faster), medians of `iters` runs.
pub fn crossover_table(iters: usize) -> String {
    let mut md = String::from("| layer |");
    for z in ZEROS {
        md.push_str(&format!(" {:.0}% |", 100.0 * z));
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(ZEROS.len()));
    md.push('\n');
    let mut rng = Rng::new(11);
    // Linear layers: (what, out, in, activation columns)
    let linear: [(&str, usize, usize, usize); 6] = [
        ("Fashion fc1 128x3136, batch 1", 128, 3136, 1),
        ("Fashion fc1 128x3136, batch 64", 128, 3136, 64),
        ("nanoGPT-short c_fc 512x128, 64 tokens", 512, 128, 64),
        (
            "nanoGPT-short c_fc 512x128, 64 seq x 64 tokens",
            512,
            128,
            4096,
        ),
        ("nanoGPT-short lm_head 65x128, 1 token", 65, 128, 1),
        ("ResNet18 fc 10x512, batch 1", 10, 512, 1),
    ];
    for (what, m, k, p) in linear {
        md.push_str(&format!("| {what} |"));
        let x = sparse_normal(k * p, 0.0, &mut rng);
        for z in ZEROS {
            let w = sparse_normal(m * k, z, &mut rng);
            let dense = Matrix::choose(m, k, w.clone(), f64::INFINITY);
            let csr = Matrix::choose(m, k, w, 0.0);
            let (d, s) = race(
                iters,
                || drop(dense.matmul(&x, p)),
                || drop(csr.matmul(&x, p)),
            );
            md.push_str(&format!(" {:.2}x |", d / s));
        }
        md.push('\n');
    }
    // Convolutions: (what, c_out, c_in, k, stride, batch, side)
    let convs: [(&str, usize, usize, usize, usize, usize, usize); 11] = [
        (
            "Fashion conv1 32x1x3x3 on 28x28, batch 1",
            32,
            1,
            3,
            1,
            1,
            28,
        ),
        (
            "ResNet18 stem 64x3x3x3 on 32x32, batch 1",
            64,
            3,
            3,
            1,
            1,
            32,
        ),
        (
            "ResNet18 layer1 conv 64x64x3x3 on 32x32, batch 64",
            64,
            64,
            3,
            1,
            64,
            32,
        ),
        (
            "ResNet18 layer2 conv 128x128x3x3 on 16x16, batch 64",
            128,
            128,
            3,
            1,
            64,
            16,
        ),
        (
            "Fashion conv2 64x32x3x3 on 14x14, batch 1",
            64,
            32,
            3,
            1,
            1,
            14,
        ),
        (
            "Fashion conv2 64x32x3x3 on 14x14, batch 64",
            64,
            32,
            3,
            1,
            64,
            14,
        ),
        (
            "ResNet18 layer1 conv 64x64x3x3 on 32x32, batch 1",
            64,
            64,
            3,
            1,
            1,
            32,
        ),
        (
            "ResNet18 layer2 conv 128x128x3x3 on 16x16, batch 1",
            128,
            128,
            3,
            1,
            1,
            16,
        ),
        (
            "ResNet18 layer3 conv 256x256x3x3 on 8x8, batch 1",
            256,
            256,
            3,
            1,
            1,
            8,
        ),
        (
            "ResNet18 layer3 conv 256x128x3x3 stride 2 on 16x16, batch 1",
            256,
            128,
            3,
            2,
            1,
            16,
        ),
        (
            "ResNet18 layer4 conv 512x512x3x3 on 4x4, batch 1",
            512,
            512,
            3,
            1,
            1,
            4,
        ),
    ];
    for (what, co, ci, k, s, n, side) in convs {
        md.push_str(&format!("| {what} |"));
        let x = Image {
            c: ci,
            n,
            h: side,
            w: side,
            data: sparse_normal(ci * n * side * side, 0.0, &mut rng),
        };
        for z in ZEROS {
            let w = sparse_normal(co * ci * k * k, z, &mut rng);
            let conv = |threshold| Conv {
                weight: Matrix::choose(co, ci * k * k, w.clone(), threshold),
                bias: None,
                c_in: ci,
                k,
                stride: s,
                pad: k / 2,
            };
            let (dense, csr) = (conv(f64::INFINITY), conv(0.0));
            let (d, t) = race(iters, || drop(dense.forward(&x)), || drop(csr.forward(&x)));
            md.push_str(&format!(" {:.2}x |", d / t));
        }
        md.push('\n');
    }
    md
}
