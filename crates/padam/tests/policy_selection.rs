//! SPEC 5: which parameters are decayed is selectable (all by default; biases and
//! normalisation parameters excludable), by rank or by module-path pattern. Parameters outside
//! the selection get the plain base-optimizer update, bit for bit.

mod common;

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use common::*;
use padam::decay::{self, DecayStep};
use padam::{sparsity, PAdamConfig, ParamSelection, StepFailure};

#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub fc: Linear<B>,
    pub norm_scale: Param<Tensor<B, 1>>,
}

/// A nested module: a struct field, a bare parameter field and a Vec of modules.
#[derive(Module, Debug)]
pub struct Nested<B: Backend> {
    pub encoder: Block<B>,
    pub heads: Vec<Linear<B>>,
}

fn lin(rng: &mut Rng, i: usize, o: usize) -> Linear<B> {
    let mut w = rng.vec(i * o, -0.5, 0.5);
    w[1] = 0.0;
    Linear {
        weight: Param::from_tensor(tensor2::<B>(&w, i, o)),
        bias: Some(Param::from_tensor(tensor1::<B>(&rng.vec(o, -0.1, 0.1)))),
    }
}

fn nested(seed: u64) -> Nested<B> {
    let mut rng = Rng::new(seed);
    Nested {
        encoder: Block {
            fc: lin(&mut rng, 4, 3),
            norm_scale: Param::from_tensor(tensor1::<B>(&rng.vec(3, 0.5, 1.5))),
        },
        heads: vec![lin(&mut rng, 3, 2), lin(&mut rng, 3, 2)],
    }
}

const PATHS: [&str; 7] = [
    "encoder.fc.weight",
    "encoder.fc.bias",
    "encoder.norm_scale",
    "heads.0.weight",
    "heads.0.bias",
    "heads.1.weight",
    "heads.1.bias",
];
const RANKS: [usize; 7] = [2, 1, 1, 2, 1, 2, 1];

fn nested_values(m: &Nested<B>) -> Vec<Vec<f32>> {
    let mut out = vec![
        read(m.encoder.fc.weight.val()),
        read(m.encoder.fc.bias.as_ref().unwrap().val()),
        read(m.encoder.norm_scale.val()),
    ];
    for h in &m.heads {
        out.push(read(h.weight.val()));
        out.push(read(h.bias.as_ref().unwrap().val()));
    }
    out
}

fn nested_grads(m: &Nested<B>, k: u64) -> GradientsParams {
    let mut rng = Rng::new(500 + k);
    let x = tensor2::<B>(&rng.vec(5 * 4, -1.0, 1.0), 5, 4);
    let h = m.encoder.fc.forward(x) * m.encoder.norm_scale.val().unsqueeze::<2>();
    let h = burn::tensor::activation::tanh(h);
    let y0 = m.heads[0].forward(h.clone());
    let y1 = m.heads[1].forward(h);
    let loss = (y0.powf_scalar(2.0).mean() + (y1 - 0.3).powf_scalar(2.0).mean()) * 10.0;
    GradientsParams::from_grads(loss.backward(), m)
}

#[test]
fn nested_module_paths_are_dotted_field_names() {
    let m = nested(1);
    let report = sparsity::measure(&m, 1e-9, &ParamSelection::all());
    let paths: Vec<&str> = report.tensors.iter().map(|t| t.path.as_str()).collect();
    assert_eq!(paths, PATHS);
    let m = mlp(1);
    let report = sparsity::measure(&m, 1e-9, &ParamSelection::all());
    let paths: Vec<&str> = report.tensors.iter().map(|t| t.path.as_str()).collect();
    assert_eq!(paths, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]);
}

/// Run PAdam with `selection` side by side with a bare Adam from the same weights and state;
/// parameter i must be `decay(adam)` if `decayed[i]`, else exactly Adam's update.
fn check_selection(selection: ParamSelection, decayed: [bool; 7]) {
    let (lr, p, lambda) = (1e-2, 0.7, 0.05);
    for (i, path) in PATHS.iter().enumerate() {
        assert_eq!(selection.is_decayed(path, RANKS[i]), decayed[i], "{path}");
    }
    let mut padam = PAdamConfig::new()
        .with_p(p)
        .with_lambda(lambda)
        .with_selection(selection.clone())
        .init::<B, Nested<B>>()
        .unwrap();
    let mut adam = AdamConfig::new().with_epsilon(1e-8).init::<B, Nested<B>>();
    let st = DecayStep {
        lr,
        p,
        lambda,
        lambda2: 0.0,
    };
    let mut m = nested(2);
    for k in 0..4 {
        let old = nested_values(&m);
        let hat = nested_values(&adam.step(lr, m.clone(), nested_grads(&m, k)));
        m = padam.step(lr, m.clone(), nested_grads(&m, k));
        let new = nested_values(&m);
        for i in 0..7 {
            let want = if decayed[i] {
                read(decay::apply(
                    tensor1::<IB>(&hat[i]),
                    tensor1::<IB>(&old[i]),
                    &st,
                ))
            } else {
                hat[i].clone()
            };
            assert_eq!(
                bits(&new[i]),
                bits(&want),
                "{selection:?} step {k} {}",
                PATHS[i]
            );
            // The decay really changes things (so "equals Adam" can fail).
            if decayed[i] {
                assert_ne!(new[i], hat[i], "{}", PATHS[i]);
            }
        }
    }
}

#[test]
fn all_parameters_are_decayed_by_default() {
    assert_eq!(PAdamConfig::new().decay.selection, ParamSelection::all());
    check_selection(ParamSelection::all(), [true; 7]);
}

#[test]
fn matrices_only_leaves_biases_and_norm_scales_as_plain_adam() {
    check_selection(
        ParamSelection::matrices_only(),
        [true, false, false, true, false, true, false],
    );
}

#[test]
fn exclude_bias_pattern() {
    check_selection(
        ParamSelection::all().exclude("*.bias"),
        [true, false, true, true, false, true, false],
    );
}

#[test]
fn exclude_norm_and_bias_patterns() {
    check_selection(
        ParamSelection::all().exclude("*.bias").exclude("*norm*"),
        [true, false, false, true, false, true, false],
    );
}

#[test]
fn include_patterns_restrict_decay() {
    check_selection(
        ParamSelection::all().include("heads.*"),
        [false, false, false, true, true, true, true],
    );
    check_selection(
        ParamSelection::all()
            .include("heads.?.weight")
            .include("encoder.fc.*"),
        [true, true, false, true, false, true, false],
    );
    // include and exclude together, exclude wins.
    check_selection(
        ParamSelection::all()
            .include("heads.*")
            .exclude("heads.1.*"),
        [false, false, false, true, true, false, false],
    );
}

#[test]
fn min_rank_with_include() {
    let sel = ParamSelection {
        min_rank: 2,
        include: vec!["encoder.*".into()],
        exclude: vec![],
    };
    check_selection(sel, [true, false, false, false, false, false, false]);
}

/// Undecayed exact zeros behave like Adam (they move); decayed ones stay at zero.
#[test]
fn zero_weights_outside_the_selection_move() {
    let mut padam = PAdamConfig::new()
        .with_p(0.5)
        .with_lambda(0.05)
        .with_selection(ParamSelection::all().exclude("heads.1.*"))
        .init::<B, Nested<B>>()
        .unwrap();
    let mut m = nested(3);
    for k in 0..3 {
        let g = nested_grads(&m, k);
        m = padam.step(1e-2, m, g);
    }
    let v = nested_values(&m);
    assert_eq!(v[0][1], 0.0, "encoder.fc.weight[1] decayed: stays 0");
    assert_eq!(v[3][1], 0.0, "heads.0.weight[1] decayed: stays 0");
    assert_ne!(v[5][1], 0.0, "heads.1.weight[1] not decayed: moves");
}

/// Non-finite gradients are reported with the nested path.
#[test]
fn non_finite_error_names_nested_paths() {
    let mut padam = PAdamConfig::new().init::<B, Nested<B>>().unwrap();
    let m = nested(4);
    let mut g = nested_grads(&m, 0);
    let id = m.heads[1].weight.id;
    let t: Tensor<IB, 2> = g.remove(id).unwrap();
    g.register(id, t.mul_scalar(f32::NAN));
    let id = m.encoder.norm_scale.id;
    let t: Tensor<IB, 1> = g.remove(id).unwrap();
    g.register(id, t.add_scalar(f32::INFINITY));
    let err = padam.try_step(1e-2, m, g).expect_err("must refuse");
    let StepFailure::NonFiniteGradient(nf) = err.error else {
        panic!("{:?}", err.error)
    };
    let paths: Vec<(&str, Option<usize>)> = nf
        .params
        .iter()
        .map(|p| (p.path.as_str(), p.count))
        .collect();
    assert_eq!(
        paths,
        [("encoder.norm_scale", Some(3)), ("heads.1.weight", Some(6))]
    );
}
