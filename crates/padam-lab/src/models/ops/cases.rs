//! One table of cases for [`super`]'s layers, run on any autodiff backend: each gives the
//! layer's output, the gradients of `sum(output * r)` for a fixed random `r`, and (batch norm)
//! the running statistics after two batches. `tests/tch.rs` and `padam bench verify --backend
//! tch` hold the PyTorch ops to burn's own modules on burn-flex with it.

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, DropoutConfig, LayerNormConfig, PaddingConfig2d};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};

use crate::backend::default_device;
use crate::data::Rng;

/// What one case computed: named flat tensors (`output`, then gradients and statistics).
pub type Outcome = Vec<(&'static str, Vec<f32>)>;

/// Every case on `B`: `(case name, outcome)`.
pub fn run_all<B: AutodiffBackend>() -> Vec<(String, Outcome)> {
    let mut out = Vec::new();
    for (bias, stride) in [(false, 1), (true, 2)] {
        out.push((
            format!("conv2d bias={bias} stride={stride}"),
            conv::<B>(bias, stride),
        ));
    }
    out.push(("batch norm, two batches".to_string(), batch_norm::<B>()));
    for relu in [false, true] {
        let case = format!("conv2d + batch norm, relu={relu}, two batches");
        out.push((case, conv_batch_norm::<B>(relu)));
    }
    for bias in [false, true] {
        out.push((format!("layer norm bias={bias}"), layer_norm::<B>(bias)));
    }
    out.push(("causal attention".to_string(), attention::<B>()));
    out.push(("a small ResNet, all its layers".to_string(), resnet::<B>()));
    out
}

/// The largest difference between two outcomes of one case, relative to the largest magnitude
/// of each named tensor in `want`: `(name, difference)` of the worst tensor.
pub fn worst_difference(got: &Outcome, want: &Outcome) -> (&'static str, f32) {
    assert_eq!(got.len(), want.len(), "the same case on both backends");
    let mut worst = ("", 0.0f32);
    for ((name, a), (_, b)) in got.iter().zip(want) {
        assert_eq!(a.len(), b.len(), "{name}: sizes differ");
        let scale = b.iter().fold(1e-6f32, |m, x| m.max(x.abs()));
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
            / scale;
        if d > worst.1 || d.is_nan() {
            worst = (name, d);
        }
    }
    worst
}

fn normal(seed: u64, shape: &[usize], scale: f64, shift: f64) -> TensorData {
    let mut rng = Rng::new(seed);
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| (shift + scale * rng.normal()) as f32)
        .collect();
    TensorData::new(v, shape.to_vec())
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().expect("f32 values")
}

fn param<B: Backend, const D: usize>(
    seed: u64,
    shape: [usize; D],
    (scale, shift): (f64, f64),
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    Param::from_tensor(Tensor::from_data(
        normal(seed, &shape, scale, shift),
        device,
    ))
}

/// `sum(y * r)`'s gradients: `r` is fixed, so every case differentiates the same function.
fn backward<B: AutodiffBackend, const D: usize>(y: &Tensor<B, D>) -> B::Gradients {
    let r = Tensor::<B, D>::from_data(normal(99, &y.dims(), 1.0, 0.0), &y.device());
    (y.clone() * r).sum().backward()
}

fn grad<B: AutodiffBackend, const D: usize>(t: &Tensor<B, D>, grads: &B::Gradients) -> Vec<f32> {
    values(t.grad(grads).expect("a tracked tensor has a gradient"))
}

/// A 3x3 convolution from 3 channels to `c_out`, padding 1: weights drawn from `seed`, a bias
/// from `bias_seed` when given.
fn random_conv<B: Backend>(
    c_out: usize,
    stride: usize,
    bias_seed: Option<u64>,
    seed: u64,
    device: &B::Device,
) -> Conv2d<B> {
    let mut conv = Conv2dConfig::new([3, c_out], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_bias(bias_seed.is_some())
        .init::<B>(device);
    conv.weight = param(seed, [c_out, 3, 3, 3], (0.3, 0.0), device);
    conv.bias = bias_seed.map(|s| param(s, [c_out], (0.5, 0.0), device));
    conv
}

/// A batch norm whose scale (around 1, from `seed`) and shift (around `shift`, from `seed + 1`)
/// are drawn, so that their gradients and the running statistics are not trivial.
fn random_batch_norm<B: Backend>(
    channels: usize,
    seed: u64,
    shift: f64,
    device: &B::Device,
) -> BatchNorm<B> {
    let mut bn = BatchNormConfig::new(channels).init::<B>(device);
    bn.gamma = param(seed, [channels], (0.5, 1.0), device);
    bn.beta = param(seed + 1, [channels], (0.5, shift), device);
    bn
}

/// A batch norm's parameter gradients and running statistics.
fn batch_norm_state<B: AutodiffBackend>(bn: &BatchNorm<B>, grads: &B::Gradients) -> Outcome {
    vec![
        ("gamma grad", grad(&bn.gamma.val(), grads)),
        ("beta grad", grad(&bn.beta.val(), grads)),
        ("running mean", values(bn.running_mean.value())),
        ("running var", values(bn.running_var.value())),
    ]
}

fn conv<B: AutodiffBackend>(bias: bool, stride: usize) -> Outcome {
    let device = default_device::<B>();
    let conv = random_conv::<B>(6, stride, bias.then_some(3), 1, &device);
    let x = Tensor::<B, 4>::from_data(normal(2, &[2, 3, 9, 9], 1.0, 0.0), &device).require_grad();
    let y = super::conv2d(&conv, x.clone());
    let grads = backward(&y);
    let mut out = vec![
        ("output", values(y)),
        ("input grad", grad(&x, &grads)),
        ("weight grad", grad(&conv.weight.val(), &grads)),
    ];
    if let Some(b) = &conv.bias {
        out.push(("bias grad", grad(&b.val(), &grads)));
    }
    out
}

fn batch_norm<B: AutodiffBackend>() -> Outcome {
    let device = default_device::<B>();
    let bn = random_batch_norm::<B>(5, 4, 0.0, &device);
    let first = Tensor::<B, 4>::from_data(normal(6, &[4, 5, 3, 3], 2.0, 1.0), &device);
    let _ = super::batch_norm(&bn, first);
    let x = Tensor::<B, 4>::from_data(normal(7, &[4, 5, 3, 3], 0.5, -2.0), &device).require_grad();
    let y = super::batch_norm(&bn, x.clone());
    let grads = backward(&y);
    let mut out = vec![("output", values(y)), ("input grad", grad(&x, &grads))];
    out.extend(batch_norm_state(&bn, &grads));
    out
}

fn conv_batch_norm<B: AutodiffBackend>(relu: bool) -> Outcome {
    let device = default_device::<B>();
    let conv = random_conv::<B>(5, 1, None, 14, &device);
    let bn = random_batch_norm::<B>(5, 15, 0.2, &device);
    let first = Tensor::<B, 4>::from_data(normal(17, &[2, 3, 6, 6], 2.0, 1.0), &device);
    let _ = super::conv_batch_norm(&conv, &bn, first, relu);
    let x = Tensor::<B, 4>::from_data(normal(18, &[2, 3, 6, 6], 1.0, 0.0), &device).require_grad();
    let y = super::conv_batch_norm(&conv, &bn, x.clone(), relu);
    let grads = backward(&y);
    let mut out = vec![
        ("output", values(y)),
        ("input grad", grad(&x, &grads)),
        ("weight grad", grad(&conv.weight.val(), &grads)),
    ];
    out.extend(batch_norm_state(&bn, &grads));
    out
}

fn layer_norm<B: AutodiffBackend>(bias: bool) -> Outcome {
    let device = default_device::<B>();
    let mut ln = LayerNormConfig::new(16)
        .with_epsilon(super::LAYER_NORM_EPS)
        .with_bias(bias)
        .init::<B>(&device);
    ln.gamma = param(8, [16], (0.5, 1.0), &device);
    if bias {
        ln.beta = Some(param(9, [16], (0.5, 0.0), &device));
    }
    let x = Tensor::<B, 3>::from_data(normal(10, &[2, 7, 16], 1.5, 0.5), &device).require_grad();
    let y = super::layer_norm(&ln, x.clone(), super::LAYER_NORM_EPS);
    let grads = backward(&y);
    let mut out = vec![
        ("output", values(y)),
        ("input grad", grad(&x, &grads)),
        ("gamma grad", grad(&ln.gamma.val(), &grads)),
    ];
    if let Some(b) = &ln.beta {
        out.push(("beta grad", grad(&b.val(), &grads)));
    }
    out
}

fn attention<B: AutodiffBackend>() -> Outcome {
    let device = default_device::<B>();
    let qkv = |seed| {
        Tensor::<B, 4>::from_data(normal(seed, &[2, 3, 10, 8], 1.0, 0.0), &device).require_grad()
    };
    let (q, k, v) = (qkv(11), qkv(12), qkv(13));
    // Dropout draws from each backend's own generator: compared without it.
    let no_dropout = DropoutConfig::new(0.0).init();
    let y = super::causal_attention(q.clone(), k.clone(), v.clone(), &no_dropout);
    let grads = backward(&y);
    vec![
        ("output", values(y)),
        ("q grad", grad(&q, &grads)),
        ("k grad", grad(&k, &grads)),
        ("v grad", grad(&v, &grads)),
    ]
}

fn resnet<B: AutodiffBackend>() -> Outcome {
    let device = default_device::<B>();
    let config = crate::models::resnet::ResNetConfig {
        in_channels: 3,
        widths: [4, 8, 8, 8],
        blocks: [1, 1, 1, 1],
        n_classes: 5,
    };
    let model = config.init::<B>(7, &device);
    let x = Tensor::<B, 4>::from_data(normal(19, &[3, 3, 8, 8], 1.0, 0.0), &device);
    let y = model.forward(x);
    let grads = backward(&y);
    vec![
        ("logits", values(y)),
        ("conv1 weight grad", grad(&model.conv1.weight.val(), &grads)),
        ("bn1 gamma grad", grad(&model.bn1.gamma.val(), &grads)),
        ("layer2 downsample weight grad", {
            let d = model.layer2[0]
                .downsample
                .as_ref()
                .expect("stage 2 changes shape");
            grad(&d.conv.weight.val(), &grads)
        }),
        ("fc weight grad", grad(&model.fc.weight.val(), &grads)),
        ("bn1 running var", values(model.bn1.running_var.value())),
    ]
}
