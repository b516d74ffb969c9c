//! A small multi-layer perceptron: `Linear -> ReLU -> ... -> Linear` (logits out).
//!
//! Weights are drawn from the crate's seeded [`Rng`](crate::data::Rng) rather than burn's global
//! backend RNG, so the same seed gives the same model on any backend and in parallel tests.
//! The distribution is PyTorch's and burn's `Linear` default: weight and bias uniform in
//! `(-1/sqrt(fan_in), 1/sqrt(fan_in))`.

use burn::module::{Module, Param};
use burn::nn::{Linear, Relu};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::data::Rng;

/// Shape of an [`Mlp`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MlpConfig {
    /// Input features.
    pub d_input: usize,
    /// Width of each hidden layer (empty = a linear model).
    pub hidden: Vec<usize>,
    /// Output classes (logits).
    pub d_output: usize,
}

impl MlpConfig {
    /// An MLP `d_input -> hidden... -> d_output`.
    pub fn new(d_input: usize, hidden: Vec<usize>, d_output: usize) -> Self {
        Self {
            d_input,
            hidden,
            d_output,
        }
    }

    /// Layer widths including input and output: `[d_input, hidden..., d_output]`.
    pub fn widths(&self) -> Vec<usize> {
        let mut w = vec![self.d_input];
        w.extend(&self.hidden);
        w.push(self.d_output);
        w
    }

    /// Number of parameters (weights plus biases) of the model this config builds.
    pub fn param_count(&self) -> usize {
        self.widths().windows(2).map(|w| w[0] * w[1] + w[1]).sum()
    }

    /// Build the model with weights drawn from `Rng::new(seed)`.
    pub fn init<B: Backend>(&self, seed: u64, device: &B::Device) -> Mlp<B> {
        let mut rng = Rng::new(seed);
        let layers = self
            .widths()
            .windows(2)
            .map(|w| linear(w[0], w[1], &mut rng, device))
            .collect();
        Mlp {
            layers,
            activation: Relu::new(),
        }
    }
}

fn linear<B: Backend>(d_in: usize, d_out: usize, rng: &mut Rng, device: &B::Device) -> Linear<B> {
    let bound = 1.0 / (d_in as f64).sqrt();
    let mut draw =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.uniform(-bound, bound) as f32).collect() };
    let weight =
        Tensor::<B, 2>::from_data(TensorData::new(draw(d_in * d_out), [d_in, d_out]), device);
    let bias = Tensor::<B, 1>::from_data(TensorData::new(draw(d_out), [d_out]), device);
    Linear {
        weight: Param::from_tensor(weight),
        bias: Some(Param::from_tensor(bias)),
    }
}

/// The MLP; parameters live at `layers.<i>.weight` and `layers.<i>.bias`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// The linear layers, input first.
    pub layers: Vec<Linear<B>>,
    /// Activation between layers.
    pub activation: Relu,
}

impl<B: Backend> Mlp<B> {
    /// Logits `[batch, d_output]` for inputs `[batch, d_input]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let last = self.layers.len() - 1;
        self.layers.iter().enumerate().fold(x, |x, (i, layer)| {
            let y = layer.forward(x);
            if i == last {
                y
            } else {
                self.activation.forward(y)
            }
        })
    }

    /// Number of parameters (scalars) in the model.
    pub fn param_count(&self) -> usize {
        self.num_params()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn shapes_counts_and_seeding() {
        let device = Default::default();
        let config = MlpConfig::new(64, vec![32, 16], 10);
        assert_eq!(
            config.param_count(),
            64 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
        );
        let a: Mlp<Flex> = config.init(5, &device);
        assert_eq!(a.param_count(), config.param_count());
        let x = Tensor::<Flex, 2>::ones([3, 64], &device);
        let y = a.forward(x.clone());
        assert_eq!(y.dims(), [3, 10]);

        let b: Mlp<Flex> = config.init(5, &device);
        let c: Mlp<Flex> = config.init(6, &device);
        let ya = y.into_data();
        assert_eq!(ya, b.forward(x.clone()).into_data());
        assert_ne!(ya, c.forward(x).into_data());

        let bound = 1.0 / 8.0;
        let w: Vec<f32> = a.layers[0].weight.val().into_data().into_vec().unwrap();
        assert!(w.iter().all(|v| v.abs() <= bound));
    }

    #[test]
    fn linear_model_without_hidden_layers() {
        let config = MlpConfig::new(4, vec![], 2);
        assert_eq!(config.param_count(), 10);
        let m: Mlp<Flex> = config.init(0, &Default::default());
        assert_eq!(m.layers.len(), 1);
    }
}
