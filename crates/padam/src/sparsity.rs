//! Sparsity as SPEC 6 defines it: per tensor and globally, the fraction of weights exactly
//! zero and the fraction with `|w| < threshold` (default 1e-9), with the counts and the names
//! of the tensors counted.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::paths::{is_running_statistic, visit_with_paths, PathVisitor};
use crate::select::ParamSelection;

/// The threshold the reference compares AdamW against.
pub const DEFAULT_THRESHOLD: f64 = 1e-9;

/// Counts for one parameter tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorSparsity {
    /// Module path, e.g. `fc1.weight`.
    pub path: String,
    /// Shape of the tensor.
    pub shape: Vec<usize>,
    /// Number of weights.
    pub numel: usize,
    /// Weights exactly `0.0` (either sign).
    pub zeros: usize,
    /// Weights with `|w| < threshold` (includes the exact zeros).
    pub below: usize,
}

impl TensorSparsity {
    /// Fraction exactly zero.
    pub fn zero_fraction(&self) -> f64 {
        ratio(self.zeros, self.numel)
    }

    /// Fraction below the threshold.
    pub fn below_fraction(&self) -> f64 {
        ratio(self.below, self.numel)
    }
}

/// Sparsity of a set of tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SparsityReport {
    /// The `|w| < threshold` threshold used.
    pub threshold: f64,
    /// Per-tensor counts, in module order; only the tensors counted.
    pub tensors: Vec<TensorSparsity>,
}

impl SparsityReport {
    /// The part of this report that `which` selects: a whole-model report read once can then
    /// give the sparsity of the weights pWD decays, without a second device read.
    pub fn select(&self, which: &ParamSelection) -> SparsityReport {
        SparsityReport {
            threshold: self.threshold,
            tensors: self
                .tensors
                .iter()
                .filter(|t| which.is_decayed(&t.path, t.shape.len()))
                .cloned()
                .collect(),
        }
    }

    /// Weights counted (sum over the tensors).
    pub fn numel(&self) -> usize {
        self.tensors.iter().map(|t| t.numel).sum()
    }

    /// Weights exactly zero.
    pub fn zeros(&self) -> usize {
        self.tensors.iter().map(|t| t.zeros).sum()
    }

    /// Weights below the threshold.
    pub fn below(&self) -> usize {
        self.tensors.iter().map(|t| t.below).sum()
    }

    /// Global fraction exactly zero.
    pub fn zero_fraction(&self) -> f64 {
        ratio(self.zeros(), self.numel())
    }

    /// Global fraction below the threshold.
    pub fn below_fraction(&self) -> f64 {
        ratio(self.below(), self.numel())
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Measure the sparsity of every float parameter of `module` selected by `which` (use
/// [`ParamSelection::all`] for all, [`ParamSelection::matrices_only`] for weight matrices).
/// Batch-norm running statistics are buffers, not weights, and are never counted
/// ([`is_running_statistic`]). One device-to-host read for the whole module.
pub fn measure<B: Backend, M: Module<B>>(
    module: &M,
    threshold: f64,
    which: &ParamSelection,
) -> SparsityReport {
    struct Counter<'a, B: Backend> {
        which: &'a ParamSelection,
        threshold: f64,
        meta: Vec<(String, Vec<usize>)>,
        counts: Vec<Tensor<B, 1, Int>>,
    }
    impl<B: Backend> PathVisitor<B> for Counter<'_, B> {
        fn visit<const D: usize>(&mut self, path: &str, param: &Param<Tensor<B, D>>) {
            if is_running_statistic(path) || !self.which.is_decayed(path, D) {
                return;
            }
            let tensor = param.val();
            let zeros = tensor.clone().equal_elem(0.0).int().sum();
            let below = tensor.clone().abs().lower_elem(self.threshold).int().sum();
            self.meta
                .push((path.to_string(), tensor.shape().dims::<D>().to_vec()));
            self.counts.push(zeros);
            self.counts.push(below);
        }
    }
    let mut c = Counter::<B> {
        which,
        threshold,
        meta: Vec::new(),
        counts: Vec::new(),
    };
    visit_with_paths(module, &mut c);
    let values: Vec<i64> = if c.counts.is_empty() {
        Vec::new()
    } else {
        let device = c.counts[0].device();
        let counts = c.counts.into_iter().map(|t| t.to_device(&device)).collect();
        Tensor::cat(counts, 0)
            .into_data()
            .convert::<i64>()
            .into_vec()
            .expect("int tensor data converts to i64")
    };
    let tensors = c
        .meta
        .into_iter()
        .zip(values.chunks(2))
        .map(|((path, shape), zb)| TensorSparsity {
            numel: shape.iter().product(),
            path,
            shape,
            zeros: zb[0] as usize,
            below: zb[1] as usize,
        })
        .collect();
    SparsityReport { threshold, tensors }
}

/// Distribution of weight magnitudes on a log scale: how many weights have
/// `10^edges[i] <= |w| < 10^edges[i+1]`, plus the exact zeros (which a log axis cannot show)
/// and the weights outside the range. The data behind a magnitude CDF plot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MagnitudeHistogram {
    /// Bin edges as base-10 exponents, ascending (`counts.len() + 1` of them).
    pub log10_edges: Vec<f64>,
    /// Weights per bin.
    pub counts: Vec<u64>,
    /// Weights exactly 0.
    pub zeros: u64,
    /// Nonzero weights below the first edge.
    pub underflow: u64,
    /// Weights at or above the last edge.
    pub overflow: u64,
}

impl MagnitudeHistogram {
    /// All weights counted.
    pub fn total(&self) -> u64 {
        self.zeros + self.underflow + self.overflow + self.counts.iter().sum::<u64>()
    }
}

/// Histogram of `|w|` over the parameters `which` selects (batch-norm running statistics never),
/// with `bins_per_decade` bins per power of ten from `10^lo` to `10^hi`. One device-to-host read
/// per tensor.
pub fn magnitude_histogram<B: Backend, M: Module<B>>(
    module: &M,
    which: &ParamSelection,
    lo: i32,
    hi: i32,
    bins_per_decade: usize,
) -> MagnitudeHistogram {
    assert!(hi > lo && bins_per_decade > 0, "empty histogram range");
    let bins = (hi - lo) as usize * bins_per_decade;
    let mut h = MagnitudeHistogram {
        log10_edges: (0..=bins)
            // (lo * n + i) / n, so the edges print as -3.9, not -3.9000000000000004
            .map(|i| (f64::from(lo) * bins_per_decade as f64 + i as f64) / bins_per_decade as f64)
            .collect(),
        counts: vec![0; bins],
        zeros: 0,
        underflow: 0,
        overflow: 0,
    };
    let (lo, per_decade) = (f64::from(lo), bins_per_decade as f64);
    for (_, values) in selected_values(module, which) {
        for v in values {
            let a = f64::from(v.abs());
            if a == 0.0 {
                h.zeros += 1;
                continue;
            }
            let pos = ((a.log10() - lo) * per_decade).floor();
            if pos < 0.0 {
                h.underflow += 1;
            } else if pos >= bins as f64 || pos.is_nan() {
                h.overflow += 1;
            } else {
                h.counts[pos as usize] += 1;
            }
        }
    }
    h
}

/// The values of the parameters `which` selects (batch-norm running statistics never), as f32
/// host vectors with their module paths, in module order. One device-to-host read per tensor.
pub fn selected_values<B: Backend, M: Module<B>>(
    module: &M,
    which: &ParamSelection,
) -> Vec<(String, Vec<f32>)> {
    struct Collect<'a> {
        which: &'a ParamSelection,
        out: Vec<(String, Vec<f32>)>,
    }
    impl<B: Backend> PathVisitor<B> for Collect<'_> {
        fn visit<const D: usize>(&mut self, path: &str, param: &Param<Tensor<B, D>>) {
            if is_running_statistic(path) || !self.which.is_decayed(path, D) {
                return;
            }
            let data = param.val().into_data().convert::<f32>();
            let values = data.to_vec::<f32>().expect("f32 tensor data");
            self.out.push((path.to_string(), values));
        }
    }
    let mut c = Collect {
        which,
        out: Vec::new(),
    };
    visit_with_paths(module, &mut c);
    c.out
}
