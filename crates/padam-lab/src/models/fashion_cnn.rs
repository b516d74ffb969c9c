//! A small CNN for Fashion-MNIST:
//! `conv 1->32 3x3 pad 1, ReLU, maxpool 2; conv 32->64 3x3 pad 1, ReLU, maxpool 2;
//! linear 64*7*7 -> 128, ReLU, dropout; linear 128 -> 10` (421,642 parameters).
//!
//! Weights come from the crate's seeded [`Rng`], with PyTorch's default distribution for
//! convolutions and linear layers: weight and bias uniform in `±1/sqrt(fan_in)`. Dropout is
//! active only on an autodiff backend (training), as burn's `Dropout` does.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, PaddingConfig2d, Relu};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::ops::conv2d;
use crate::data::Rng;

/// Shape of a [`FashionCnn`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FashionCnnConfig {
    /// Input channels (1 for grey-scale).
    pub in_channels: usize,
    /// Input height and width (28); must be divisible by 4.
    pub image_size: usize,
    /// Output channels of the two convolutions.
    pub channels: [usize; 2],
    /// Width of the hidden linear layer.
    pub hidden: usize,
    /// Number of classes.
    pub n_classes: usize,
    /// Dropout probability after the hidden layer.
    pub dropout: f64,
}

impl Default for FashionCnnConfig {
    /// The Fashion-MNIST model: 28x28x1 in, 32 and 64 channels, 128 hidden, 10 classes,
    /// dropout 0.2.
    fn default() -> Self {
        Self {
            in_channels: 1,
            image_size: 28,
            channels: [32, 64],
            hidden: 128,
            n_classes: 10,
            dropout: 0.2,
        }
    }
}

impl FashionCnnConfig {
    /// Features entering the first linear layer.
    pub fn flat_features(&self) -> usize {
        let side = self.image_size / 4;
        self.channels[1] * side * side
    }

    /// Number of parameters the model has.
    pub fn param_count(&self) -> usize {
        let [c1, c2] = self.channels;
        (self.in_channels * 9 * c1 + c1)
            + (c1 * 9 * c2 + c2)
            + (self.flat_features() * self.hidden + self.hidden)
            + (self.hidden * self.n_classes + self.n_classes)
    }

    /// Build the model with weights drawn from `Rng::new(seed)`.
    pub fn init<B: Backend>(&self, seed: u64, device: &B::Device) -> FashionCnn<B> {
        assert!(
            self.image_size.is_multiple_of(4),
            "image_size must be divisible by 4"
        );
        let mut rng = Rng::new(seed);
        let [c1, c2] = self.channels;
        FashionCnn {
            conv1: conv3x3(self.in_channels, c1, &mut rng, device),
            conv2: conv3x3(c1, c2, &mut rng, device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            fc1: linear(self.flat_features(), self.hidden, &mut rng, device),
            fc2: linear(self.hidden, self.n_classes, &mut rng, device),
            dropout: DropoutConfig::new(self.dropout).init(),
            activation: Relu::new(),
        }
    }
}

fn uniform(n: usize, bound: f64, rng: &mut Rng) -> Vec<f32> {
    (0..n).map(|_| rng.uniform(-bound, bound) as f32).collect()
}

fn conv3x3<B: Backend>(c_in: usize, c_out: usize, rng: &mut Rng, device: &B::Device) -> Conv2d<B> {
    let mut conv = Conv2dConfig::new([c_in, c_out], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .with_initializer(Initializer::Zeros)
        .init(device);
    let bound = 1.0 / ((c_in * 9) as f64).sqrt();
    let w = uniform(c_out * c_in * 9, bound, rng);
    conv.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(w, [c_out, c_in, 3, 3]),
        device,
    ));
    let b = uniform(c_out, bound, rng);
    conv.bias = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(b, [c_out]),
        device,
    )));
    conv
}

fn linear<B: Backend>(d_in: usize, d_out: usize, rng: &mut Rng, device: &B::Device) -> Linear<B> {
    let bound = 1.0 / (d_in as f64).sqrt();
    let w = uniform(d_in * d_out, bound, rng);
    let b = uniform(d_out, bound, rng);
    Linear {
        weight: Param::from_tensor(Tensor::from_data(TensorData::new(w, [d_in, d_out]), device)),
        bias: Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(b, [d_out]),
            device,
        ))),
    }
}

/// The Fashion-MNIST CNN.
#[derive(Module, Debug)]
pub struct FashionCnn<B: Backend> {
    /// First convolution (`in -> 32`, 3x3, padding 1).
    pub conv1: Conv2d<B>,
    /// Second convolution (`32 -> 64`, 3x3, padding 1).
    pub conv2: Conv2d<B>,
    /// 2x2 max pooling after each convolution.
    pub pool: MaxPool2d,
    /// Hidden linear layer.
    pub fc1: Linear<B>,
    /// Output layer (logits).
    pub fc2: Linear<B>,
    /// Dropout after the hidden layer.
    pub dropout: Dropout,
    /// ReLU.
    pub activation: Relu,
}

impl<B: Backend> FashionCnn<B> {
    /// Logits `[batch, n_classes]` for images `[batch, in_channels, size, size]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = self
            .pool
            .forward(self.activation.forward(conv2d(&self.conv1, x)));
        let x = self
            .pool
            .forward(self.activation.forward(conv2d(&self.conv2, x)));
        let x: Tensor<B, 2> = x.flatten(1, 3);
        let x = self
            .dropout
            .forward(self.activation.forward(self.fc1.forward(x)));
        self.fc2.forward(x)
    }
}
