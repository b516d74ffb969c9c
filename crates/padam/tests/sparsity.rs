//! SPEC 6: sparsity, globally and per parameter tensor: fraction exactly zero, fraction with
//! `|w| < threshold` (default 1e-9), the number of weights counted and which tensors.

mod common;

use burn::module::{Module, Param};
use burn::optim::Optimizer;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use common::*;
use padam::sparsity::{self, DEFAULT_THRESHOLD};
use padam::{PAdamConfig, ParamSelection, SparsityReport, TensorSparsity};

#[derive(Module, Debug)]
pub struct Known<B: Backend> {
    pub mat: Param<Tensor<B, 2>>,
    pub vec: Param<Tensor<B, 1>>,
    pub cube: Param<Tensor<B, 3>>,
}

/// mat (2x4): zeros 0 and -0, 5e-10 and -5e-10 below 1e-9, 2e-9, 1e-12 (below), 1, -0.5
///   -> 2 zeros, 5 below 1e-9.
/// vec (3): 0, 1e-3, -7 -> 1 zero, 1 below.
/// cube (2x2x2): no zeros; only the subnormal 1e-40 is below 1e-9 (+-1e-6 are below 1e-5).
fn known() -> Known<B> {
    Known {
        mat: Param::from_tensor(tensor2::<B>(
            &[0.0, -0.0, 5e-10, -5e-10, 2e-9, 1e-12, 1.0, -0.5],
            2,
            4,
        )),
        vec: Param::from_tensor(tensor1::<B>(&[0.0, 1e-3, -7.0])),
        cube: Param::from_tensor(
            tensor1::<B>(&[1e-6, -1e-6, 2.0, 3.0, -4.0, 5.0, 6.0, 1e-40]).reshape([2, 2, 2]),
        ),
    }
}

fn t(path: &str, shape: &[usize], zeros: usize, below: usize) -> TensorSparsity {
    TensorSparsity {
        path: path.into(),
        shape: shape.to_vec(),
        numel: shape.iter().product(),
        zeros,
        below,
    }
}

#[test]
fn default_threshold_is_1e_9() {
    assert_eq!(DEFAULT_THRESHOLD, 1e-9);
}

#[test]
fn per_tensor_and_global_counts_on_known_values() {
    let r = sparsity::measure(&known(), DEFAULT_THRESHOLD, &ParamSelection::all());
    assert_eq!(r.threshold, 1e-9);
    assert_eq!(
        r.tensors,
        vec![
            t("mat", &[2, 4], 2, 5),
            t("vec", &[3], 1, 1),
            // 1e-40 is a subnormal: not zero, but below the threshold.
            t("cube", &[2, 2, 2], 0, 1),
        ]
    );
    assert_eq!(r.numel(), 8 + 3 + 8);
    assert_eq!(r.zeros(), 3);
    assert_eq!(r.below(), 7);
    assert_eq!(r.zero_fraction(), 3.0 / 19.0);
    assert_eq!(r.below_fraction(), 7.0 / 19.0);
    assert_eq!(r.tensors[0].zero_fraction(), 2.0 / 8.0);
    assert_eq!(r.tensors[0].below_fraction(), 5.0 / 8.0);
}

#[test]
fn threshold_is_a_strict_upper_bound() {
    let m = known();
    let all = ParamSelection::all();
    // Below 1e-5: the six small values of mat, the 0 in vec, +-1e-6 and 1e-40 in cube.
    let r = sparsity::measure(&m, 1e-5, &all);
    assert_eq!(
        r.tensors.iter().map(|t| t.below).collect::<Vec<_>>(),
        vec![6, 1, 3]
    );
    // A threshold of 0 counts nothing below (|w| < 0 is impossible), zeros still counted.
    let r = sparsity::measure(&m, 0.0, &all);
    assert_eq!(r.below(), 0);
    assert_eq!(r.zeros(), 3);
    // A huge threshold counts everything.
    let r = sparsity::measure(&m, 1e3, &all);
    assert_eq!(r.below(), 19);
    assert_eq!(r.below_fraction(), 1.0);
}

#[test]
fn selection_chooses_the_tensors_counted() {
    let m = known();
    let r = sparsity::measure(&m, 1e-9, &ParamSelection::matrices_only());
    let paths: Vec<&str> = r.tensors.iter().map(|t| t.path.as_str()).collect();
    assert_eq!(paths, ["mat", "cube"]);
    assert_eq!(r.numel(), 16);
    assert_eq!((r.zeros(), r.below()), (2, 6));
    let r = sparsity::measure(&m, 1e-9, &ParamSelection::all().include("v*"));
    assert_eq!(r.tensors, vec![t("vec", &[3], 1, 1)]);
    // A report of everything, narrowed afterwards, equals the narrower measurement.
    let everything = sparsity::measure(&m, 1e-9, &ParamSelection::all());
    for which in [
        ParamSelection::matrices_only(),
        ParamSelection::all().include("v*"),
        ParamSelection::all().exclude("mat"),
    ] {
        assert_eq!(
            everything.select(&which),
            sparsity::measure(&m, 1e-9, &which)
        );
    }
    assert_eq!(
        everything
            .select(&ParamSelection::matrices_only())
            .zero_fraction(),
        2.0 / 16.0
    );
    // Nothing selected: empty report, fractions 0 (no division by zero).
    let r = sparsity::measure(&m, 1e-9, &ParamSelection::all().include("nothing"));
    assert!(r.tensors.is_empty());
    assert_eq!(
        (r.numel(), r.zero_fraction(), r.below_fraction()),
        (0, 0.0, 0.0)
    );
}

#[test]
fn report_of_a_trained_model_counts_the_zeros_padam_made() {
    // p = 0.5 with a strong lambda drives many weights to exactly 0.
    let mut optim = PAdamConfig::new()
        .with_p(0.5)
        .with_lambda(0.5)
        .init::<B, Mlp<B>>()
        .unwrap();
    let mut m = mlp(6);
    for k in 0..40 {
        let g = mlp_grads(&m, k);
        m = optim.step(2e-2, m, g);
    }
    let r = sparsity::measure(&m, DEFAULT_THRESHOLD, &ParamSelection::all());
    // Count by hand from the weights.
    let vals = mlp_values(&m);
    let zeros: usize = vals.iter().flatten().filter(|w| **w == 0.0).count();
    let below: usize = vals
        .iter()
        .flatten()
        .filter(|w| (w.abs() as f64) < 1e-9)
        .count();
    assert_eq!(
        (r.zeros(), r.below(), r.numel()),
        (zeros, below, 35 + 7 + 21 + 3)
    );
    for (t, v) in r.tensors.iter().zip(&vals) {
        assert_eq!(
            t.zeros,
            v.iter().filter(|w| **w == 0.0).count(),
            "{}",
            t.path
        );
    }
    assert!(r.zero_fraction() > 0.1, "{r:?}");
}

#[test]
fn report_round_trips_through_json() {
    let r = sparsity::measure(&known(), 1e-9, &ParamSelection::all());
    let json = serde_json::to_string(&r).unwrap();
    let back: SparsityReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
}

/// burn's BatchNorm keeps its running mean and variance as float params; they are buffers, not
/// weights, and must not count (a fresh running mean is all zeros and would read as sparsity).
#[test]
fn batch_norm_running_statistics_are_not_counted() {
    use burn::nn::{BatchNorm, BatchNormConfig};
    #[derive(burn::module::Module, Debug)]
    struct Net<B: burn::tensor::backend::Backend> {
        bn: BatchNorm<B>,
    }
    let net: Net<padam_test_backend::B> = Net {
        bn: BatchNormConfig::new(8).init(&Default::default()),
    };
    let report = padam::sparsity::measure(&net, 1e-9, &padam::ParamSelection::all());
    let paths: Vec<&str> = report.tensors.iter().map(|t| t.path.as_str()).collect();
    assert_eq!(paths, vec!["bn.gamma", "bn.beta"]);
    assert_eq!(report.numel(), 16);
    assert!(padam::paths::is_running_statistic(
        "layer1.0.bn1.running_mean"
    ));
    assert!(!padam::paths::is_running_statistic("layer1.0.bn1.gamma"));
}

mod padam_test_backend {
    pub type B = burn::backend::Flex;
}

/// The magnitude histogram of the known values, counted by hand: bins of one decade from
/// 1e-12 to 1e1.
#[test]
fn magnitude_histogram_counts_by_decade() {
    let h = sparsity::magnitude_histogram(&known(), &ParamSelection::all(), -12, 1, 1);
    assert_eq!(h.log10_edges.len(), 14);
    assert_eq!(h.log10_edges[0], -12.0);
    // zeros: mat 0, -0; vec 0
    assert_eq!(h.zeros, 3);
    // below 1e-12: the subnormal 1e-40, and 1e-12 itself, which is 9.9999998e-13 in f32
    assert_eq!(h.underflow, 2);
    // at or above 10: none (-7 is in [1, 10))
    assert_eq!(h.overflow, 0);
    let bin = |e: i32| h.counts[(e + 12) as usize];
    assert_eq!(bin(-12), 0);
    assert_eq!(bin(-10), 2); // +-5e-10
    assert_eq!(bin(-9), 1); // 2e-9
    assert_eq!(bin(-6), 0);
    assert_eq!(bin(-7), 2); // +-1e-6 are 9.9999997e-7 in f32
    assert_eq!(bin(-3), 1); // 1e-3
    assert_eq!(bin(-1), 1); // -0.5
    assert_eq!(bin(0), 7); // 1, -7, 2, 3, -4, 5, 6
    assert_eq!(h.counts.iter().sum::<u64>(), 2 + 1 + 2 + 1 + 1 + 7);
    assert_eq!(h.total(), 8 + 3 + 8);
}
