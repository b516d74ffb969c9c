//! The Fashion-MNIST CNN: `conv, ReLU, pool, conv, ReLU, pool, flatten, fc1, ReLU, fc2`.

use anyhow::bail;

use super::ops::{max_pool2, relu, transpose, Conv, Image, Linear};
use super::plan::Builder;

/// The engine's Fashion CNN (widths from the tensors, so a compacted model runs too).
#[derive(Debug, Clone, PartialEq)]
pub struct CnnNet {
    /// First convolution.
    pub conv1: Conv,
    /// Second convolution.
    pub conv2: Conv,
    /// Hidden linear layer.
    pub fc1: Linear,
    /// Output layer.
    pub fc2: Linear,
    /// Input channels, height, width.
    pub input: [usize; 3],
}

impl CnnNet {
    /// The CNN for `input` `[channels, h, w]` images from `b`.
    pub fn build(b: &mut Builder<'_>, input: [usize; 3]) -> anyhow::Result<Self> {
        if !input[1].is_multiple_of(4) || !input[2].is_multiple_of(4) {
            bail!("image size {input:?} is not divisible by 4");
        }
        let conv1 = b.conv("conv1", input[0], 1, 1, Some(input[2]))?;
        let conv2 = b.conv("conv2", conv1.weight.rows(), 1, 1, Some(input[2] / 2))?;
        let side = (input[1] / 4) * (input[2] / 4);
        let fc1 = b.linear("fc1", Some(conv2.weight.rows() * side))?;
        let fc2 = b.linear("fc2", Some(fc1.weight.rows()))?;
        Ok(Self {
            conv1,
            conv2,
            fc1,
            fc2,
            input,
        })
    }

    /// Logits `[n, classes]` for images `[n, c, h, w]`.
    pub fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        let [c, h, w] = self.input;
        let x = Image::from_nchw(n, c, h, w, x);
        let mut y = self.conv1.forward(&x);
        relu(&mut y.data);
        let y = max_pool2(&y);
        let mut y = self.conv2.forward(&y);
        relu(&mut y.data);
        let y = max_pool2(&y);
        let mut f = self.fc1.forward(&y.flatten_features(), n);
        relu(&mut f);
        let logits = self.fc2.forward(&f, n);
        transpose(&logits, self.fc2.weight.rows(), n)
    }
}
