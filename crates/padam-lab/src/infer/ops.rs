//! The weightless operations of the three model families, on the engine's feature-major
//! activations: images as `[C, N, H, W]` (channel first, so a convolution's output is the
//! `[c_out, N·H·W]` product itself), token streams as `[C, tokens]`.
//!
//! Each follows the formula of the burn-flex operation it replaces (noted per function), so
//! the engine's outputs match burn's dense forward to rounding.

use rayon::prelude::*;

use super::matrix::Matrix;

/// Feature maps `[c, n, h, w]`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Channels.
    pub c: usize,
    /// Samples.
    pub n: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// `c · n · h · w` values.
    pub data: Vec<f32>,
}

impl Image {
    /// Burn's `[n, c, h, w]` images, reordered channel first.
    pub fn from_nchw(n: usize, c: usize, h: usize, w: usize, x: &[f32]) -> Self {
        assert_eq!(x.len(), n * c * h * w, "[{n}, {c}, {h}, {w}] images");
        let hw = h * w;
        let mut data = vec![0.0f32; x.len()];
        for s in 0..n {
            for ch in 0..c {
                data[(ch * n + s) * hw..(ch * n + s + 1) * hw]
                    .copy_from_slice(&x[(s * c + ch) * hw..(s * c + ch + 1) * hw]);
            }
        }
        Self { c, n, h, w, data }
    }

    /// Burn's `flatten(1, 3)` of the `[n, c, h, w]` maps, transposed: `[c·h·w, n]`.
    pub fn flatten_features(&self) -> Vec<f32> {
        let hw = self.h * self.w;
        let mut out = vec![0.0f32; self.data.len()];
        for ch in 0..self.c {
            for s in 0..self.n {
                let src = &self.data[(ch * self.n + s) * hw..(ch * self.n + s + 1) * hw];
                for (i, v) in src.iter().enumerate() {
                    out[(ch * hw + i) * self.n + s] = *v;
                }
            }
        }
        out
    }
}

/// A 2-D convolution with square kernel: weight `[c_out, c_in·k·k]` (burn's `[c_out, c_in, k,
/// k]` flattened), bias, stride and zero padding.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv {
    /// The weight as a matrix.
    pub weight: Matrix,
    /// One bias per output channel.
    pub bias: Option<Vec<f32>>,
    /// Input channels.
    pub c_in: usize,
    /// Kernel side.
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on every side.
    pub pad: usize,
}

impl Conv {
    /// Output maps: `weight · im2col(x)` plus the bias.
    pub fn forward(&self, x: &Image) -> Image {
        assert_eq!(x.c, self.c_in, "convolution input channels");
        let (k, s, p) = (self.k, self.stride, self.pad);
        let oh = (x.h + 2 * p - k) / s + 1;
        let ow = (x.w + 2 * p - k) / s + 1;
        let cols = x.n * oh * ow;
        let mut out = if k == 1 && s == 1 && p == 0 {
            self.weight.matmul(&x.data, cols)
        } else {
            self.weight.matmul(&im2col(x, k, s, p, oh, ow), cols)
        };
        if let Some(b) = &self.bias {
            add_row_bias(&mut out, b, cols);
        }
        Image {
            c: self.weight.rows(),
            n: x.n,
            h: oh,
            w: ow,
            data: out,
        }
    }
}

/// `[c·k·k, n·oh·ow]`: row `(c, ky, kx)` holds input pixel `(y·s + ky - p, x·s + kx - p)` of
/// channel `c` for every output position, 0 in the padding.
fn im2col(x: &Image, k: usize, s: usize, p: usize, oh: usize, ow: usize) -> Vec<f32> {
    let cols = x.n * oh * ow;
    let mut out = vec![0.0f32; x.c * k * k * cols];
    let (h, w, n) = (x.h as isize, x.w as isize, x.n);
    let fill = |(row, dst): (usize, &mut [f32])| {
        let (c, ky, kx) = (row / (k * k), (row / k) % k, row % k);
        for sample in 0..n {
            let src = &x.data[(c * n + sample) * x.h * x.w..(c * n + sample + 1) * x.h * x.w];
            for oy in 0..oh {
                let iy = (oy * s + ky) as isize - p as isize;
                let d = &mut dst[(sample * oh + oy) * ow..(sample * oh + oy + 1) * ow];
                if iy < 0 || iy >= h {
                    continue; // padding row: stays 0
                }
                let line = &src[iy as usize * x.w..(iy as usize + 1) * x.w];
                for (ox, v) in d.iter_mut().enumerate() {
                    let ix = (ox * s + kx) as isize - p as isize;
                    if ix >= 0 && ix < w {
                        *v = line[ix as usize];
                    }
                }
            }
        }
    };
    if out.len() >= 1 << 16 {
        out.par_chunks_mut(cols).enumerate().for_each(fill);
    } else {
        out.chunks_mut(cols).enumerate().for_each(fill);
    }
    out
}

/// `x[r, :] += bias[r]` for a `[rows, cols]` matrix.
pub fn add_row_bias(x: &mut [f32], bias: &[f32], cols: usize) {
    for (row, b) in x.chunks_exact_mut(cols).zip(bias) {
        for v in row {
            *v += b;
        }
    }
}

/// `max(x, 0)` in place (burn's ReLU).
pub fn relu(x: &mut [f32]) {
    for v in x {
        *v = v.max(0.0);
    }
}

/// 2x2 max pooling with stride 2 (burn's `MaxPool2dConfig::new([2, 2])`, floor mode).
pub fn max_pool2(x: &Image) -> Image {
    let (oh, ow) = (x.h / 2, x.w / 2);
    let mut data = vec![0.0f32; x.c * x.n * oh * ow];
    for (plane, out) in x
        .data
        .chunks_exact(x.h * x.w)
        .zip(data.chunks_exact_mut(oh * ow))
    {
        for oy in 0..oh {
            for ox in 0..ow {
                let at = |dy: usize, dx: usize| plane[(2 * oy + dy) * x.w + 2 * ox + dx];
                out[oy * ow + ox] = at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1));
            }
        }
    }
    Image {
        c: x.c,
        n: x.n,
        h: oh,
        w: ow,
        data,
    }
}

/// Global average pooling: `[c, n, h, w]` to the `[c, n]` features.
pub fn global_avg_pool(x: &Image) -> Vec<f32> {
    let hw = (x.h * x.w) as f32;
    x.data
        .chunks_exact(x.h * x.w)
        .map(|plane| plane.iter().sum::<f32>() / hw)
        .collect()
}

/// LayerNorm over the features of each column of `x` `[c, cols]` (burn-flex's `layer_norm`:
/// biased variance, `(x - mean) / sqrt(var + eps) · gamma + beta`).
pub fn layer_norm(
    x: &[f32],
    cols: usize,
    gamma: &[f32],
    beta: Option<&[f32]>,
    eps: f32,
) -> Vec<f32> {
    let c = gamma.len();
    assert_eq!(x.len(), c * cols, "layer_norm input [{c}, {cols}]");
    // Row sweeps (contiguous) accumulate each column's mean and variance in f64, then one
    // more sweep normalises.
    let mut mean = vec![0.0f64; cols];
    for row in x.chunks_exact(cols) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += *v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= c as f64);
    let mut var = vec![0.0f64; cols];
    for row in x.chunks_exact(cols) {
        for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
            let d = *v as f64 - m;
            *s += d * d;
        }
    }
    let inv: Vec<f32> = var
        .iter()
        .map(|s| (1.0 / (s / c as f64 + eps as f64).sqrt()) as f32)
        .collect();
    let mean: Vec<f32> = mean.iter().map(|m| *m as f32).collect();
    let mut out = vec![0.0f32; x.len()];
    for (r, (orow, row)) in out
        .chunks_exact_mut(cols)
        .zip(x.chunks_exact(cols))
        .enumerate()
    {
        let (g, b) = (gamma[r], beta.map_or(0.0, |b| b[r]));
        for (j, (o, v)) in orow.iter_mut().zip(row).enumerate() {
            *o = (v - mean[j]) * inv[j] * g + b;
        }
    }
    out
}

/// Exact GELU, `x/2 · (1 + erf(x/√2))`, with the `erff` burn-flex uses (libm).
pub fn gelu(x: &mut [f32]) {
    for v in x {
        *v = 0.5 * *v * (1.0 + libm::erff(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// Causal multi-head self-attention of `qkv` `[3·heads·hd, b·t]` (rows: queries, keys, values,
/// each head's `hd` rows together, as nanoGPT splits `c_attn`'s output); returns the heads'
/// outputs `[heads·hd, b·t]`. Position `i` attends to `0..=i`, scores scaled by `1/√hd`.
pub fn causal_attention(qkv: &[f32], heads: usize, hd: usize, b: usize, t: usize) -> Vec<f32> {
    let width = heads * hd;
    let cols = b * t;
    assert_eq!(qkv.len(), 3 * width * cols, "qkv [{}, {cols}]", 3 * width);
    let scale = 1.0 / (hd as f64).sqrt();
    let mut out = vec![0.0f32; width * cols];
    // One task per (head, sequence): each writes its own `hd` rows of one sequence's columns.
    let results: Vec<(usize, usize, Vec<f32>)> = (0..heads * b)
        .into_par_iter()
        .map(|task| {
            let (h, s) = (task / b, task % b);
            let row = |part: usize, d: usize| {
                let r = part * width + h * hd + d;
                &qkv[r * cols + s * t..r * cols + (s + 1) * t]
            };
            // scores[i, j] = sum_d q[d, i] k[d, j], for j <= i
            let mut scores = vec![0.0f32; t * t];
            for d in 0..hd {
                let (q, k) = (row(0, d), row(1, d));
                for i in 0..t {
                    let qi = q[i];
                    for (sc, kj) in scores[i * t..i * t + i + 1].iter_mut().zip(k) {
                        *sc += qi * kj;
                    }
                }
            }
            for i in 0..t {
                let r = &mut scores[i * t..i * t + i + 1];
                let max = r
                    .iter()
                    .map(|v| v * scale as f32)
                    .fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0f32;
                for v in r.iter_mut() {
                    *v = (*v * scale as f32 - max).exp();
                    sum += *v;
                }
                r.iter_mut().for_each(|v| *v /= sum);
            }
            // y[d, i] = sum_j att[i, j] v[d, j]
            let mut y = vec![0.0f32; hd * t];
            for d in 0..hd {
                let v = row(2, d);
                for i in 0..t {
                    y[d * t + i] = scores[i * t..i * t + i + 1]
                        .iter()
                        .zip(v)
                        .map(|(a, v)| a * v)
                        .sum();
                }
            }
            (h, s, y)
        })
        .collect();
    for (h, s, y) in results {
        for d in 0..hd {
            let r = h * hd + d;
            out[r * cols + s * t..r * cols + (s + 1) * t].copy_from_slice(&y[d * t..(d + 1) * t]);
        }
    }
    out
}

/// `[rows, cols]` to `[cols, rows]`.
pub fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(x.len(), rows * cols);
    let mut out = vec![0.0f32; x.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = x[r * cols + c];
        }
    }
    out
}

/// A linear layer: weight `[out, in]` (burn's `[in, out]` transposed), optional bias.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear {
    /// The weight as a matrix.
    pub weight: Matrix,
    /// One bias per output.
    pub bias: Option<Vec<f32>>,
}

impl Linear {
    /// `[out, p]` for the inputs `x` `[in, p]`.
    pub fn forward(&self, x: &[f32], p: usize) -> Vec<f32> {
        let mut y = self.weight.matmul(x, p);
        if let Some(b) = &self.bias {
            add_row_bias(&mut y, b, p);
        }
        y
    }
}

/// Batch norm with running statistics (burn's eval-mode formula, unfused:
/// `(x - mean) / sqrt(var + eps) · gamma + beta`).
#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm {
    /// Per channel: gamma, beta, running mean, sqrt(running var + eps).
    pub gamma: Vec<f32>,
    /// Shift.
    pub beta: Vec<f32>,
    /// Running mean.
    pub mean: Vec<f32>,
    /// `sqrt(running_var + eps)`.
    pub std: Vec<f32>,
}

impl BatchNorm {
    /// Normalise `x` in place.
    pub fn apply(&self, x: &mut Image) {
        let plane = x.n * x.h * x.w;
        for (c, row) in x.data.chunks_exact_mut(plane).enumerate() {
            let (m, s, g, b) = (self.mean[c], self.std[c], self.gamma[c], self.beta[c]);
            for v in row {
                *v = (*v - m) / s * g + b;
            }
        }
    }
}
