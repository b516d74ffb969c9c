//! Which weights the engine stores as CSR: every matrix whose exact-zero fraction reaches the
//! plan's threshold for its kind (linear or convolution; measured, docs/BENCHMARKS.md); all
//! others, and every vector, stay dense.
//! Also the builders that turn named tensors into the engine's layers, and the per-layer
//! report of what was chosen.

use anyhow::bail;

use super::matrix::{zero_fraction, Matrix};
use super::ops::{BatchNorm, Conv, Linear};
use super::tensors::Tensors;

/// The zero fraction from which a CSR linear layer beat the dense `gemm` product on every layer
/// shape we measured (batch 1 and 64: 1.17x to 2.56x at 93%; at 90% one shape of eleven was
/// still behind, and below 80% dense won on most: `padam bench infer --crossover`,
/// docs/BENCHMARKS.md).
pub const DEFAULT_SPARSE_THRESHOLD: f64 = 0.93;

/// The same for convolutions, the sparse convolution (direct, or CSR x im2col on strided and
/// tiny maps) against im2col + `gemm`: 1.15x to 4.52x at 93%.
pub const DEFAULT_CONV_THRESHOLD: f64 = 0.93;

/// How the engine stores its weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// Linear layers with at least this fraction of exact zeros are stored as CSR.
    pub sparse_threshold: f64,
    /// Convolution kernels with at least this fraction of exact zeros are stored as CSR.
    pub conv_threshold: f64,
}

impl Plan {
    /// CSR from [`DEFAULT_SPARSE_THRESHOLD`] (linear) and [`DEFAULT_CONV_THRESHOLD`]
    /// (convolutions) zeros.
    pub fn sparse() -> Self {
        Self {
            sparse_threshold: DEFAULT_SPARSE_THRESHOLD,
            conv_threshold: DEFAULT_CONV_THRESHOLD,
        }
    }

    /// Every matrix CSR, however dense (for tests of the sparse kernels).
    pub fn all_sparse() -> Self {
        Self {
            sparse_threshold: 0.0,
            conv_threshold: 0.0,
        }
    }

    /// Every matrix dense (the engine as a dense reference, and compacted models).
    pub fn dense() -> Self {
        Self {
            sparse_threshold: f64::INFINITY,
            conv_threshold: f64::INFINITY,
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
    /// given stride and padding, `c_in` inputs.
    pub fn conv(
        &mut self,
        prefix: &str,
        c_in: usize,
        stride: usize,
        pad: usize,
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
        let weight = self.matrix(&name, o, i * kh * kw, values, self.plan.conv_threshold);
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
