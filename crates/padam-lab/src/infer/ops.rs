//! The layers and operations of the model families (convolution, linear, batch and layer norm,
//! pooling, GELU, causal attention) on the engine's feature-major activations: images as
//! `[C, N, H, W]` (channel first, so a convolution's output is the `[c_out, N·H·W]` product
//! itself), token streams as `[C, tokens]`.
//!
//! Each follows the formula of the burn-flex operation it replaces (noted per function), so
//! the engine's outputs match burn's dense forward to rounding.

use rayon::prelude::*;

use super::matrix::{axpy, matmul_strided, Csr, Matrix, PARALLEL_MIN_WORK};

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

/// The side of the output maps of a `k`-wide convolution at `stride` with `pad` zeros on each
/// side, on input maps `side` wide; `None` where the kernel is wider than the padded input.
pub fn conv_out_side(side: usize, k: usize, stride: usize, pad: usize) -> Option<usize> {
    (side + 2 * pad >= k).then(|| (side + 2 * pad - k) / stride.max(1) + 1)
}

impl Conv {
    /// Output maps: `weight · im2col(x)` plus the bias.
    pub fn forward(&self, x: &Image) -> Image {
        assert_eq!(x.c, self.c_in, "convolution input channels");
        let (k, s, p) = (self.k, self.stride, self.pad);
        let side = |n| conv_out_side(n, k, s, p).expect("the kernel fits the padded input");
        let (oh, ow) = (side(x.h), side(x.w));
        let cols = x.n * oh * ow;
        let mut out = match &self.weight {
            // A 1x1 stride-1 convolution is the product itself.
            _ if k == 1 && s == 1 && p == 0 => self.weight.matmul(&x.data, cols),
            // Sparse kernels run directly on the padded input where output rows are long and
            // contiguous: unrolling it (im2col) costs k² copies of the input, more than the few
            // products left. Strided or tiny maps (ResNet's later stages) make the direct
            // loops short and scalar, so there CSR multiplies the unrolled input
            // (`padam bench infer --crossover`).
            Matrix::Sparse(csr) if s == 1 && ow >= 8 => direct_sparse_conv(csr, x, k, s, p, oh, ow),
            _ => self.weight.matmul(&im2col(x, k, s, p, oh, ow), cols),
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

/// The convolution of `x` with the CSR kernel `w` `[c_out, c_in·k·k]`: for each output
/// channel and non-zero `w[o, (c, ky, kx)]`, `out[o, ·, oy, ox] += w · x_pad[c, ·, oy·s + ky,
/// ox·s + kx]`, a contiguous axpy along each output row at stride 1. Output `[c_out, n·oh·ow]`.
fn direct_sparse_conv(
    w: &Csr,
    x: &Image,
    k: usize,
    s: usize,
    p: usize,
    oh: usize,
    ow: usize,
) -> Vec<f32> {
    let (hp, wp) = (x.h + 2 * p, x.w + 2 * p);
    let padded;
    let src: &[f32] = if p == 0 {
        &x.data
    } else {
        let mut v = vec![0.0f32; x.c * x.n * hp * wp];
        for (plane, dst) in x
            .data
            .chunks_exact(x.h * x.w)
            .zip(v.chunks_exact_mut(hp * wp))
        {
            for (y, line) in plane.chunks_exact(x.w).enumerate() {
                dst[(y + p) * wp + p..(y + p) * wp + p + x.w].copy_from_slice(line);
            }
        }
        padded = v;
        &padded
    };
    let per_channel = x.n * oh * ow;
    let mut out = vec![0.0f32; w.rows * per_channel];
    let channel = |(o, dst): (usize, &mut [f32])| {
        let entries = w.row_ptr[o] as usize..w.row_ptr[o + 1] as usize;
        // Sample outer, weights inner: one sample's output map stays in cache.
        for sample in 0..x.n {
            let d = &mut dst[sample * oh * ow..(sample + 1) * oh * ow];
            for e in entries.clone() {
                let col = w.col_idx[e] as usize;
                let (c, ky, kx) = (col / (k * k), (col / k) % k, col % k);
                let v = w.values[e];
                let plane = &src[(c * x.n + sample) * hp * wp..(c * x.n + sample + 1) * hp * wp];
                for (oy, drow) in d.chunks_exact_mut(ow).enumerate() {
                    let start = (oy * s + ky) * wp + kx;
                    if s == 1 {
                        axpy(v, &plane[start..start + ow], drow);
                    } else {
                        for (ox, dv) in drow.iter_mut().enumerate() {
                            *dv += v * plane[start + ox * s];
                        }
                    }
                }
            }
        }
    };
    if w.nnz() * per_channel < PARALLEL_MIN_WORK {
        out.chunks_mut(per_channel.max(1))
            .enumerate()
            .for_each(channel);
    } else {
        out.par_chunks_mut(per_channel.max(1))
            .enumerate()
            .for_each(channel);
    }
    out
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
                if s == 1 {
                    // Output columns whose input column ox + kx - p lies inside the row: one
                    // contiguous copy.
                    let lo = p.saturating_sub(kx);
                    let hi = (x.w + p).saturating_sub(kx).min(ow);
                    if lo < hi {
                        let start = lo + kx - p;
                        d[lo..hi].copy_from_slice(&line[start..start + (hi - lo)]);
                    }
                    continue;
                }
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

/// Exact GELU, `x/2 · (1 + erf(x/√2))`.
pub fn gelu(x: &mut [f32]) {
    for v in x {
        *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// erf in f32 as a rational function of `x` on `[-4, 4]` (±1 beyond, where f32's erf is ±1):
/// no branches and no `exp`, so the GELU loop vectorises (plain multiply-adds: `mul_add`
/// without the FMA target feature is a call to a software `fmaf`, which made it slower than
/// libm); libm's `erff`, which burn-flex calls,
/// is a scalar call per value and was an eighth of nanoGPT's forward. Within 1e-6 of `erff`
/// (tested).
#[inline]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = -2.726_142_3e-10f32;
    let p = p * x2 + 2.770_681_4e-8;
    let p = p * x2 - 2.101_024e-6;
    let p = p * x2 - 5.692_506_4e-5;
    let p = p * x2 - 7.349_906e-4;
    let p = p * x2 - 2.954_600_2e-3;
    let p = p * x2 - 1.609_603_3e-2;
    let q = -1.456_607_2e-5f32;
    let q = q * x2 - 2.133_740_6e-4;
    let q = q * x2 - 1.682_827e-3;
    let q = q * x2 - 7.373_329e-3;
    let q = q * x2 - 1.426_474e-2;
    x * p / q
}

/// Causal multi-head self-attention of `qkv` `[3·heads·hd, b·t]` (rows: queries, keys, values,
/// each head's `hd` rows together, as nanoGPT splits `c_attn`'s output); returns the heads'
/// outputs `[heads·hd, b·t]`, or with `last_only` those of each sequence's last position,
/// `[heads·hd, b]`. Position `i` attends to `0..=i`, scores scaled by `1/√hd` (burn's order:
/// scale, mask, softmax, then the weighted sum of the values).
pub fn causal_attention(
    qkv: &[f32],
    heads: usize,
    hd: usize,
    b: usize,
    t: usize,
    last_only: bool,
) -> Vec<f32> {
    let width = heads * hd;
    let cols = b * t;
    assert_eq!(qkv.len(), 3 * width * cols, "qkv [{}, {cols}]", 3 * width);
    let scale = (1.0 / (hd as f64).sqrt()) as f32;
    let queries = if last_only { t - 1..t } else { 0..t };
    let nq = queries.len();
    // One task per (head, sequence). Each gathers its queries, keys and values position-major
    // (`[t, hd]`) and computes scores and outputs as two matrix products; the masked half of
    // each is wasted work, but `gemm` beat the causal loop of dot products and axpys it
    // replaced (nanoGPT's full-context forward: docs/BENCHMARKS.md).
    let task = |task: usize| -> Vec<f32> {
        let (h, s) = (task / b, task % b);
        let gather = |part: usize| {
            let mut m = vec![0.0f32; t * hd];
            for d in 0..hd {
                let r = part * width + h * hd + d;
                for (i, v) in qkv[r * cols + s * t..r * cols + (s + 1) * t]
                    .iter()
                    .enumerate()
                {
                    m[i * hd + d] = *v;
                }
            }
            m
        };
        let (q, k, v) = (gather(0), gather(1), gather(2));
        // scores = q · kᵀ for the queries asked for: kᵀ[d, j] is k[j·hd + d].
        let mut p = vec![0.0f32; nq * t];
        let q_rows = &q[queries.start * hd..queries.end * hd];
        matmul_strided([nq, t, hd], q_rows, [hd, 1], &k, [1, hd], &mut p);
        for (qi, row) in p.chunks_exact_mut(t).enumerate() {
            let (live, masked) = row.split_at_mut(queries.start + qi + 1);
            let mut max = f32::NEG_INFINITY;
            for x in live.iter_mut() {
                *x *= scale;
                max = max.max(*x);
            }
            let mut sum = 0.0f32;
            for x in live.iter_mut() {
                *x = (*x - max).exp();
                sum += *x;
            }
            for x in live.iter_mut() {
                *x /= sum;
            }
            masked.fill(0.0);
        }
        let mut y = vec![0.0f32; nq * hd];
        matmul_strided([nq, hd, t], &p, [t, 1], &v, [hd, 1], &mut y);
        y
    };
    let work = heads * b * nq * t * hd;
    let results: Vec<Vec<f32>> = if work < 4 * PARALLEL_MIN_WORK {
        (0..heads * b).map(task).collect()
    } else {
        (0..heads * b).into_par_iter().map(task).collect()
    };
    let out_cols = b * nq;
    let mut out = vec![0.0f32; width * out_cols];
    for (task, y) in results.iter().enumerate() {
        let (h, s) = (task / b, task % b);
        for (qi, row) in y.chunks_exact(hd).enumerate() {
            for (d, val) in row.iter().enumerate() {
                out[(h * hd + d) * out_cols + s * nq + qi] = *val;
            }
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

#[cfg(test)]
mod tests {
    #[test]
    fn erf_is_within_1e6_of_libm() {
        let mut worst = 0.0f32;
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4;
            worst = worst.max((super::erf(x) - libm::erff(x)).abs());
        }
        assert!(worst < 1e-6, "max |erf - erff| = {worst:e}");
        assert!((super::erf(f32::INFINITY) - 1.0).abs() < 1e-6);
        assert!((super::erf(-9.0) + 1.0).abs() < 1e-6);
        assert!(super::erf(f32::NAN).is_nan());
    }
}
