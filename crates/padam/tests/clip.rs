//! `clip::clip_grad_norm` against hand computations and a float64 recomputation of PyTorch's
//! `clip_grad_norm_` (per-tensor norms, their norm, `min(1, max / (norm + 1e-6))`).

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use padam::clip::clip_grad_norm;

type Ad = Autodiff<Flex>;
type I = Flex;

/// A 2 -> 1 linear layer whose weight gradient is [[3], [4]] and bias gradient [12]: the
/// global norm is sqrt(9 + 16 + 144) = 13.
fn hand_case() -> (Linear<Ad>, GradientsParams) {
    let device = Default::default();
    let model: Linear<Ad> = LinearConfig::new(2, 1).init(&device);
    let mut grads = GradientsParams::new();
    grads.register(
        model.weight.id,
        Tensor::<I, 2>::from_data(TensorData::new(vec![3.0f32, 4.0], [2, 1]), &device),
    );
    let bias = model.bias.as_ref().unwrap().id;
    grads.register(
        bias,
        Tensor::<I, 1>::from_data(TensorData::new(vec![12.0f32], [1]), &device),
    );
    (model, grads)
}

fn values<const D: usize>(g: &GradientsParams, id: ParamId) -> Vec<f32> {
    g.get::<I, D>(id).unwrap().into_data().to_vec().unwrap()
}

#[test]
fn clips_to_the_global_norm_by_hand() {
    let (model, grads) = hand_case();
    let bias = model.bias.as_ref().unwrap().id;
    let (clipped, norm) = clip_grad_norm(&model, grads, 6.5);
    assert_eq!(norm.into_data().to_vec::<f32>().unwrap(), vec![13.0]);
    let scale = 6.5 / (13.0 + 1e-6);
    let w = values::<2>(&clipped, model.weight.id);
    let b = values::<1>(&clipped, bias);
    for (got, want) in w
        .iter()
        .chain(&b)
        .zip([3.0 * scale, 4.0 * scale, 12.0 * scale])
    {
        assert!(
            (f64::from(*got) - want).abs() <= 1e-6 * want,
            "{got} vs {want}"
        );
    }
    // Below the limit the factor is exactly 1 (clamped), so the gradients are unchanged.
    let (model, grads) = hand_case();
    let (same, _) = clip_grad_norm(&model, grads, 13.5);
    assert_eq!(values::<2>(&same, model.weight.id), vec![3.0, 4.0]);
    assert_eq!(
        values::<1>(&same, model.bias.as_ref().unwrap().id),
        vec![12.0]
    );
}

/// Every float parameter's gradient, flattened, in module order.
struct Collect<'a>(&'a GradientsParams, Vec<Vec<f64>>);
impl ModuleVisitor<Ad> for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Ad, D>>) {
        let g = self.0.get::<I, D>(param.id).unwrap();
        let v: Vec<f32> = g.into_data().to_vec().unwrap();
        self.1.push(v.into_iter().map(f64::from).collect());
    }
}

#[derive(Module, Debug)]
struct Two<B: Backend> {
    a: Linear<B>,
    b: Linear<B>,
}

#[test]
fn matches_a_float64_recomputation_on_real_gradients() {
    let device = Default::default();
    let model = Two::<Ad> {
        a: LinearConfig::new(16, 32).init(&device),
        b: LinearConfig::new(32, 3).init(&device),
    };
    let x = Tensor::<Ad, 2>::random([8, 16], Distribution::Normal(0.0, 3.0), &device);
    let loss = model.b.forward(model.a.forward(x)).powf_scalar(2.0).sum();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let mut before = Collect(&grads, Vec::new());
    model.visit(&mut before);
    let before = before.1;
    let total = before
        .iter()
        .map(|t| t.iter().map(|v| v * v).sum::<f64>())
        .sum::<f64>()
        .sqrt();
    let max_norm = total / 7.0;
    let (clipped, norm) = clip_grad_norm(&model, grads, max_norm);
    let norm = f64::from(norm.into_data().to_vec::<f32>().unwrap()[0]);
    assert!((norm - total).abs() <= 1e-5 * total, "{norm} vs {total}");
    let scale = (max_norm / (total + 1e-6)).min(1.0);
    let mut after = Collect(&clipped, Vec::new());
    model.visit(&mut after);
    assert_eq!(after.1.len(), 4);
    for (t_after, t_before) in after.1.iter().zip(&before) {
        for (a, b) in t_after.iter().zip(t_before) {
            assert!(
                (a - b * scale).abs() <= 1e-5 * (b * scale).abs() + 1e-30,
                "{a} vs {}",
                b * scale
            );
        }
    }
    let after_norm = after
        .1
        .iter()
        .map(|t| t.iter().map(|v| v * v).sum::<f64>())
        .sum::<f64>()
        .sqrt();
    assert!((after_norm - max_norm).abs() <= 1e-5 * max_norm);
}

#[test]
fn a_non_finite_gradient_makes_every_gradient_non_finite() {
    let (model, mut grads) = hand_case();
    let device = Default::default();
    grads.remove::<I, 2>(model.weight.id);
    grads.register(
        model.weight.id,
        Tensor::<I, 2>::from_data(TensorData::new(vec![f32::NAN, 4.0], [2, 1]), &device),
    );
    let (clipped, norm) = clip_grad_norm(&model, grads, 1.0);
    assert!(norm.into_data().to_vec::<f32>().unwrap()[0].is_nan());
    let b = values::<1>(&clipped, model.bias.as_ref().unwrap().id);
    assert!(b[0].is_nan(), "{b:?}");
}
