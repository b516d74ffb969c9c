//! ResNet-18 for CIFAR (He et al. 2016, with the usual CIFAR stem): a 3x3 stride-1 stem
//! convolution without bias plus batch norm and no max-pool, then 4 stages of 2 basic blocks
//! (64, 128, 256, 512 channels; stages 2-4 start with stride 2 and a 1x1 convolution + batch
//! norm shortcut), global average pooling and a linear classifier. With 10 classes it has
//! 11,173,962 trainable parameters (batch norm: 2 per channel). burn's `num_params()` also
//! counts the 9,600 batch-norm running statistics (11,183,562); [`trainable_params`] does not.
//!
//! Initialisation follows torchvision, drawn from the crate's seeded [`Rng`]: convolutions
//! Kaiming-normal with `fan_out` (std `sqrt(2 / (c_out * k * k))`), batch norm weight 1 and
//! bias 0, the classifier uniform in `±1/sqrt(fan_in)`. Batch norm uses batch statistics on an
//! autodiff backend (training) and running statistics otherwise.

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Initializer, Linear, PaddingConfig2d, Relu};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::ops::conv_batch_norm;
use crate::data::Rng;

/// Shape of a [`ResNet`] with basic blocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResNetConfig {
    /// Input channels (3 for RGB).
    pub in_channels: usize,
    /// Channels of the four stages.
    pub widths: [usize; 4],
    /// Basic blocks per stage.
    pub blocks: [usize; 4],
    /// Number of classes.
    pub n_classes: usize,
}

impl Default for ResNetConfig {
    /// ResNet-18 for CIFAR-10.
    fn default() -> Self {
        Self::resnet18(10)
    }
}

impl ResNetConfig {
    /// ResNet-18 (CIFAR stem) with `n_classes` outputs.
    pub fn resnet18(n_classes: usize) -> Self {
        Self {
            in_channels: 3,
            widths: [64, 128, 256, 512],
            blocks: [2, 2, 2, 2],
            n_classes,
        }
    }

    /// `(c_in, c_out, stride)` of every block, stage by stage.
    fn block_shapes(&self) -> Vec<Vec<(usize, usize, usize)>> {
        let mut c_in = self.widths[0];
        (0..4)
            .map(|s| {
                let c_out = self.widths[s];
                (0..self.blocks[s])
                    .map(|b| {
                        let stride = if s > 0 && b == 0 { 2 } else { 1 };
                        let shape = (c_in, c_out, stride);
                        c_in = c_out;
                        shape
                    })
                    .collect()
            })
            .collect()
    }

    /// Number of trainable parameters the model has.
    pub fn param_count(&self) -> usize {
        let w0 = self.widths[0];
        let stem = self.in_channels * 9 * w0 + 2 * w0;
        let blocks: usize = self
            .block_shapes()
            .iter()
            .flatten()
            .map(|&(ci, co, stride)| {
                let shortcut = if stride != 1 || ci != co {
                    ci * co + 2 * co
                } else {
                    0
                };
                9 * ci * co + 2 * co + 9 * co * co + 2 * co + shortcut
            })
            .sum();
        let fc = self.widths[3] * self.n_classes + self.n_classes;
        stem + blocks + fc
    }

    /// Build the model with weights drawn from `Rng::new(seed)`.
    pub fn init<B: Backend>(&self, seed: u64, device: &B::Device) -> ResNet<B> {
        let mut rng = Rng::new(seed);
        let conv1 = conv(self.in_channels, self.widths[0], 3, 1, &mut rng, device);
        let bn1 = BatchNormConfig::new(self.widths[0]).init(device);
        let mut stages: Vec<Vec<BasicBlock<B>>> = self
            .block_shapes()
            .into_iter()
            .map(|stage| {
                stage
                    .into_iter()
                    .map(|(ci, co, stride)| BasicBlock::new(ci, co, stride, &mut rng, device))
                    .collect()
            })
            .collect();
        let d_in = self.widths[3];
        let bound = 1.0 / (d_in as f64).sqrt();
        let mut draw =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.uniform(-bound, bound) as f32).collect() };
        let fc = Linear {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(draw(d_in * self.n_classes), [d_in, self.n_classes]),
                device,
            )),
            bias: Some(Param::from_tensor(Tensor::from_data(
                TensorData::new(draw(self.n_classes), [self.n_classes]),
                device,
            ))),
        };
        let layer4 = stages.pop().expect("4 stages");
        let layer3 = stages.pop().expect("4 stages");
        let layer2 = stages.pop().expect("4 stages");
        let layer1 = stages.pop().expect("4 stages");
        ResNet {
            conv1,
            bn1,
            layer1,
            layer2,
            layer3,
            layer4,
            avgpool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc,
            activation: Relu::new(),
        }
    }
}

/// Number of trainable scalars of any module: all float parameters except batch-norm running
/// statistics (`running_mean`, `running_var`), which burn's `num_params()` also counts.
pub fn trainable_params<B: Backend, M: Module<B>>(module: &M) -> usize {
    struct Counter {
        path: Vec<String>,
        count: usize,
    }
    impl<B: Backend> ModuleVisitor<B> for Counter {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if !padam::paths::is_running_statistic(&self.path.join(".")) {
                self.count += param.lazy_shape().num_elements();
            }
        }
    }
    let mut counter = Counter {
        path: Vec::new(),
        count: 0,
    };
    module.visit(&mut counter);
    counter.count
}

/// A `k x k` convolution without bias (padding `k / 2`), Kaiming-normal with `fan_out`.
fn conv<B: Backend>(
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    rng: &mut Rng,
    device: &B::Device,
) -> Conv2d<B> {
    let p = k / 2;
    let mut conv = Conv2dConfig::new([c_in, c_out], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(false)
        .with_initializer(Initializer::Zeros)
        .init(device);
    let std = (2.0 / (c_out * k * k) as f64).sqrt();
    let w: Vec<f32> = (0..c_out * c_in * k * k)
        .map(|_| (std * rng.normal()) as f32)
        .collect();
    conv.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(w, [c_out, c_in, k, k]),
        device,
    ));
    conv
}

/// The 1x1 convolution + batch norm shortcut of a block that changes shape.
#[derive(Module, Debug)]
pub struct Downsample<B: Backend> {
    /// 1x1 convolution with the block's stride.
    pub conv: Conv2d<B>,
    /// Batch norm after it.
    pub bn: BatchNorm<B>,
}

/// `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`.
#[derive(Module, Debug)]
pub struct BasicBlock<B: Backend> {
    /// First 3x3 convolution (carries the stride).
    pub conv1: Conv2d<B>,
    /// Batch norm after `conv1`.
    pub bn1: BatchNorm<B>,
    /// Second 3x3 convolution.
    pub conv2: Conv2d<B>,
    /// Batch norm after `conv2`.
    pub bn2: BatchNorm<B>,
    /// Projection shortcut when stride or width change; identity otherwise.
    pub downsample: Option<Downsample<B>>,
    /// ReLU.
    pub activation: Relu,
}

impl<B: Backend> BasicBlock<B> {
    fn new(c_in: usize, c_out: usize, stride: usize, rng: &mut Rng, device: &B::Device) -> Self {
        let conv1 = conv(c_in, c_out, 3, stride, rng, device);
        let conv2 = conv(c_out, c_out, 3, 1, rng, device);
        let downsample = (stride != 1 || c_in != c_out).then(|| Downsample {
            conv: conv(c_in, c_out, 1, stride, rng, device),
            bn: BatchNormConfig::new(c_out).init(device),
        });
        Self {
            conv1,
            bn1: BatchNormConfig::new(c_out).init(device),
            conv2,
            bn2: BatchNormConfig::new(c_out).init(device),
            downsample,
            activation: Relu::new(),
        }
    }

    /// Output `[batch, c_out, h / stride, w / stride]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let identity = match &self.downsample {
            Some(d) => conv_batch_norm(&d.conv, &d.bn, x.clone(), false),
            None => x.clone(),
        };
        let out = conv_batch_norm(&self.conv1, &self.bn1, x, true);
        let out = conv_batch_norm(&self.conv2, &self.bn2, out, false);
        self.activation.forward(out + identity)
    }
}

/// ResNet with basic blocks; parameter names follow torchvision (`layer1.0.conv1.weight`, ...).
#[derive(Module, Debug)]
pub struct ResNet<B: Backend> {
    /// 3x3 stem convolution, no bias.
    pub conv1: Conv2d<B>,
    /// Stem batch norm.
    pub bn1: BatchNorm<B>,
    /// Stage 1 (stride 1).
    pub layer1: Vec<BasicBlock<B>>,
    /// Stage 2 (first block stride 2).
    pub layer2: Vec<BasicBlock<B>>,
    /// Stage 3 (first block stride 2).
    pub layer3: Vec<BasicBlock<B>>,
    /// Stage 4 (first block stride 2).
    pub layer4: Vec<BasicBlock<B>>,
    /// Global average pooling.
    pub avgpool: AdaptiveAvgPool2d,
    /// Classifier.
    pub fc: Linear<B>,
    /// ReLU.
    pub activation: Relu,
}

impl<B: Backend> ResNet<B> {
    /// Logits `[batch, n_classes]` for images `[batch, in_channels, h, w]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut x = conv_batch_norm(&self.conv1, &self.bn1, x, true);
        for block in self
            .layer1
            .iter()
            .chain(&self.layer2)
            .chain(&self.layer3)
            .chain(&self.layer4)
        {
            x = block.forward(x);
        }
        let x: Tensor<B, 2> = self.avgpool.forward(x).flatten(1, 3);
        self.fc.forward(x)
    }
}
