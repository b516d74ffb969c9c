//! Which weights the engine stores as CSR: every matrix whose exact-zero fraction reaches the
//! plan's threshold for its kind (linear, convolution, and stride-1 convolutions by the width of
//! the maps the model expects; measured, docs/BENCHMARKS.md); all others, and every vector,
//! stay dense.
//! Also the builders that turn named tensors into the engine's layers, and the per-layer
//! report of what was chosen.

use anyhow::bail;

use super::matrix::{zero_fraction, Matrix};
use super::ops::{conv_out_side, BatchNorm, Conv, Linear};
use super::tensors::Tensors;

/// The zero fraction from which a CSR linear layer beat the dense `gemm` product on every layer
/// shape we measured (batch 1 and 64: 1.17x to 2.56x at 93%; at 90% one shape of eleven was
/// still behind, and below 80% dense won on most: `padam bench infer --crossover`,
/// docs/BENCHMARKS.md).
pub const DEFAULT_SPARSE_THRESHOLD: f64 = 0.93;

/// The same for convolutions, the sparse convolution (direct, or CSR x im2col on strided and
/// tiny maps) against im2col + `gemm`: 1.01x to 5.18x at 93%.
pub const DEFAULT_CONV_THRESHOLD: f64 = 0.93;

/// Stride-1 convolutions over at least [`WIDE_MIN_CHANNELS`] input channels run the direct
/// sparse convolution, whose rows get longer with the maps while im2col's copies grow with
/// them: on maps 32 wide (ResNet18's layer1, 64 channels) it beat im2col + `gemm` from 50%
/// zeros at batch 1 and 64 (1.07x-1.35x; 1.80x-1.99x at 70%).
pub const WIDE_CONV_THRESHOLD: f64 = 0.6;

/// The same on maps 16 to 31 wide (ResNet18's layer2, 128 channels: 1.35x-1.56x at 90%,
/// 0.78x-0.87x at 80%).
pub const MEDIUM_CONV_THRESHOLD: f64 = 0.9;

/// Input channels from which the width bands apply. With few channels im2col + `gemm` stays
/// cheap: the CIFAR stem (3 channels, 32 wide) needed 90% zeros, Fashion's conv1 (1 channel,
/// 28 wide) 80%, so they keep [`DEFAULT_CONV_THRESHOLD`].
pub const WIDE_MIN_CHANNELS: usize = 16;

/// How the engine stores its weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// Linear layers with at least this fraction of exact zeros are stored as CSR.
    pub sparse_threshold: f64,
    /// Convolution kernels with at least this fraction of exact zeros are stored as CSR.
    pub conv_threshold: f64,
    /// The threshold of a stride-1 convolution over at least [`WIDE_MIN_CHANNELS`] channels
    /// whose output maps are at least 32 wide, where the model says so (see [`Builder::conv`]).
    pub wide_conv_threshold: f64,
    /// The same for maps 16 to 31 wide.
    pub medium_conv_threshold: f64,
}

impl Plan {
    /// CSR from [`DEFAULT_SPARSE_THRESHOLD`] (linear) and [`DEFAULT_CONV_THRESHOLD`]
    /// (convolutions) zeros, or the width bands' thresholds.
    pub fn sparse() -> Self {
        Self {
            sparse_threshold: DEFAULT_SPARSE_THRESHOLD,
            conv_threshold: DEFAULT_CONV_THRESHOLD,
            wide_conv_threshold: WIDE_CONV_THRESHOLD,
            medium_conv_threshold: MEDIUM_CONV_THRESHOLD,
        }
    }

    /// Every matrix CSR, however dense (for tests of the sparse kernels).
    pub fn all_sparse() -> Self {
        Self::uniform(0.0)
    }

    /// Every matrix dense (the engine as a dense reference, and compacted models).
    pub fn dense() -> Self {
        Self::uniform(f64::INFINITY)
    }

    fn uniform(threshold: f64) -> Self {
        Self {
            sparse_threshold: threshold,
            conv_threshold: threshold,
            wide_conv_threshold: threshold,
            medium_conv_threshold: threshold,
        }
    }

    /// The threshold of a `k` x `k` convolution over `c_in` channels at `stride`, whose output
    /// maps are `out_width` wide when the model's input size is known.
    pub fn conv_threshold_for(
        &self,
        c_in: usize,
        k: usize,
        stride: usize,
        out_width: Option<usize>,
    ) -> f64 {
        // Where the engine runs the direct sparse convolution on wide maps.
        let direct = stride == 1 && k > 1 && c_in >= WIDE_MIN_CHANNELS;
        match out_width {
            Some(w) if direct && w >= 32 => self.wide_conv_threshold,
            Some(w) if direct && w >= 16 => self.medium_conv_threshold,
            _ => self.conv_threshold,
        }
    }
}

/// One weight matrix of a built engine.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerInfo {
    /// Module path of the weight.
    pub name: String,
    /// `[rows, cols]` as the engine multiplies it (`[out, in]`).
    pub shape: [usize; 2],
    /// Exact-zero fraction.
    pub zero_fraction: f64,
    /// Stored as CSR.
    pub sparse: bool,
    /// Bytes in memory.
    pub bytes: usize,
}

/// Collects the layers an engine is built from, with their report.
#[derive(Debug, Clone)]
pub struct Builder<'a> {
    /// Where the tensors come from.
    pub tensors: &'a Tensors,
    /// The storage choice.
    pub plan: Plan,
    /// What was built.
    pub layers: Vec<LayerInfo>,
    /// Bytes of the vectors (biases, norms, embeddings).
    pub vector_bytes: usize,
}

impl<'a> Builder<'a> {
    /// A builder over `tensors`.
    pub fn new(tensors: &'a Tensors, plan: Plan) -> Self {
        Self {
            tensors,
            plan,
            layers: Vec::new(),
            vector_bytes: 0,
        }
    }

    fn matrix(
        &mut self,
        name: &str,
        rows: usize,
        cols: usize,
        values: Vec<f32>,
        threshold: f64,
    ) -> Matrix {
        let zf = zero_fraction(&values);
        let m = Matrix::choose(rows, cols, values, threshold);
        self.layers.push(LayerInfo {
            name: name.to_string(),
            shape: [rows, cols],
            zero_fraction: zf,
            sparse: m.is_sparse(),
            bytes: m.bytes(),
        });
        m
    }

    /// The vector `name` of length `len`.
    pub fn vector(&mut self, name: &str, len: usize) -> anyhow::Result<Vec<f32>> {
        let v = self.tensors.get_shaped(name, &[len])?.values.clone();
        self.vector_bytes += 4 * len;
        Ok(v)
    }

    /// The vector `name` of length `len` when present.
    pub fn optional_vector(&mut self, name: &str, len: usize) -> anyhow::Result<Option<Vec<f32>>> {
        if self.tensors.has(name) {
            self.vector(name, len).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A dense `[rows, cols]` table (embeddings), kept as is.
    pub fn table(&mut self, name: &str) -> anyhow::Result<(usize, usize, Vec<f32>)> {
        let t = self.tensors.get(name, 2)?;
        self.vector_bytes += 4 * t.values.len();
        Ok((t.shape[0], t.shape[1], t.values.clone()))
    }

    /// A bias-free linear map whose weight is the table `name` as it is stored, `[out, in]`
    /// (a head tied to a token embedding: logits `x @ wte^T`).
    pub fn tied(&mut self, name: &str) -> anyhow::Result<Linear> {
        let t = self.tensors.get(name, 2)?;
        let (rows, cols, values) = (t.shape[0], t.shape[1], t.values.clone());
        let weight = self.matrix(name, rows, cols, values, self.plan.sparse_threshold);
        Ok(Linear { weight, bias: None })
    }

    /// burn's `Linear` at `prefix` (`weight` `[in, out]`, optional `bias`), with `d_in`
    /// inputs when given.
    pub fn linear(&mut self, prefix: &str, d_in: Option<usize>) -> anyhow::Result<Linear> {
        let name = format!("{prefix}.weight");
        let w = self.tensors.get(&name, 2)?;
        let (i, o) = (w.shape[0], w.shape[1]);
        if let Some(d) = d_in {
            if d != i {
                bail!(
                    "{}: tensor `{name}` has shape {:?}, expected {d} inputs",
                    self.tensors.source,
                    w.shape
                );
            }
        }
        // [in, out] -> [out, in]
        let mut t = vec![0.0f32; i * o];
        for r in 0..i {
            for c in 0..o {
                t[c * i + r] = w.values[r * o + c];
            }
        }
        let weight = self.matrix(&name, o, i, t, self.plan.sparse_threshold);
        let bias = self.optional_vector(&format!("{prefix}.bias"), o)?;
        Ok(Linear { weight, bias })
    }

    /// burn's `Conv2d` at `prefix` (`weight` `[out, in, k, k]`, optional `bias`) with the
    /// given stride and padding, `c_in` inputs, on maps `in_width` wide where the model knows
    /// its input size (the storage choice depends on it: [`Plan::conv_threshold_for`]; other
    /// sizes run correctly, at the speed of that choice).
    pub fn conv(
        &mut self,
        prefix: &str,
        c_in: usize,
        stride: usize,
        pad: usize,
        in_width: Option<usize>,
    ) -> anyhow::Result<Conv> {
        let name = format!("{prefix}.weight");
        let w = self.tensors.get(&name, 4)?;
        let [o, i, kh, kw] = [w.shape[0], w.shape[1], w.shape[2], w.shape[3]];
        if i != c_in || kh != kw || kh == 0 {
            bail!(
                "{}: tensor `{name}` has shape {:?}, expected [_, {c_in}, k, k]",
                self.tensors.source,
                w.shape
            );
        }
        let values = w.values.clone();
        let out_width = in_width.and_then(|w| conv_out_side(w, kh, stride, pad));
        let threshold = self.plan.conv_threshold_for(i, kh, stride, out_width);
        let weight = self.matrix(&name, o, i * kh * kw, values, threshold);
        let bias = self.optional_vector(&format!("{prefix}.bias"), o)?;
        Ok(Conv {
            weight,
            bias,
            c_in,
            k: kh,
            stride,
            pad,
        })
    }

    /// burn's `BatchNorm` at `prefix` over `c` channels (epsilon 1e-5, burn's default).
    pub fn batch_norm(&mut self, prefix: &str, c: usize) -> anyhow::Result<BatchNorm> {
        let var = self.vector(&format!("{prefix}.running_var"), c)?;
        Ok(BatchNorm {
            gamma: self.vector(&format!("{prefix}.gamma"), c)?,
            beta: self.vector(&format!("{prefix}.beta"), c)?,
            mean: self.vector(&format!("{prefix}.running_mean"), c)?,
            // As burn computes it: var.add_scalar(eps).sqrt() in f32.
            std: var.iter().map(|v| (v + 1e-5f32).sqrt()).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::tensors::HostTensor;

    /// A `[o, c_in, 3, 3]` kernel whose last `zeros` fraction of entries is 0.
    fn kernel(o: usize, c_in: usize, zeros: f64) -> HostTensor {
        let n = o * c_in * 9;
        let nonzero = ((1.0 - zeros) * n as f64).round() as usize;
        let values = (0..n)
            .map(|i| if i < nonzero { 1.0 + i as f32 } else { 0.0 })
            .collect();
        HostTensor {
            shape: vec![o, c_in, 3, 3],
            values,
        }
    }

    /// Whether the builder stored `conv` as CSR.
    fn sparse(t: &Tensors, c_in: usize, stride: usize, width: Option<usize>) -> bool {
        let mut b = Builder::new(t, Plan::sparse());
        let conv = b.conv("conv", c_in, stride, 1, width).unwrap();
        assert_eq!(b.layers[0].sparse, conv.weight.is_sparse());
        conv.weight.is_sparse()
    }

    #[test]
    fn a_convolution_goes_sparse_by_its_zeros_channels_stride_and_map_width() {
        let at = |o, c_in, zeros| Tensors {
            source: "test".into(),
            map: [("conv.weight".to_string(), kernel(o, c_in, zeros))].into(),
        };
        // 64 channels at 70% zeros: CSR on maps 32 wide (the direct convolution pays there),
        // dense on 16-wide or unknown maps and at stride 2.
        let wide = at(64, 64, 0.7);
        assert!(sparse(&wide, 64, 1, Some(32)));
        assert!(!sparse(&wide, 64, 1, Some(16)));
        assert!(!sparse(&wide, 64, 1, None));
        assert!(!sparse(&wide, 64, 2, Some(64)));
        // 91% zeros: CSR from 16 wide, dense on narrower maps (the 93% default).
        let medium = at(64, 64, 0.91);
        assert!(sparse(&medium, 64, 1, Some(16)));
        assert!(!sparse(&medium, 64, 1, Some(8)));
        // Few input channels keep the default even on wide maps (the CIFAR stem).
        let stem = at(64, 3, 0.85);
        assert!(!sparse(&stem, 3, 1, Some(32)));
        assert!(sparse(&at(64, 3, 0.95), 3, 1, Some(32)));
        // The dense and all-sparse plans ignore the bands.
        assert_eq!(
            Plan::dense().conv_threshold_for(64, 3, 1, Some(32)),
            f64::INFINITY
        );
        assert_eq!(
            Plan::all_sparse().conv_threshold_for(64, 3, 1, Some(32)),
            0.0
        );
    }
}
