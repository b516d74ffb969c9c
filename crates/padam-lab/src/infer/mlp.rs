//! The digits MLP: `Linear -> ReLU -> ... -> Linear`.

use anyhow::bail;

use super::ops::{relu, transpose, Linear};
use super::plan::Builder;

/// The engine's MLP.
#[derive(Debug, Clone, PartialEq)]
pub struct MlpNet {
    /// The layers, input first (`layers.<i>`).
    pub layers: Vec<Linear>,
}

impl MlpNet {
    /// `n_layers` linear layers `layers.0..` from `b`.
    pub fn build(b: &mut Builder<'_>, n_layers: usize) -> anyhow::Result<Self> {
        let mut layers: Vec<Linear> = Vec::with_capacity(n_layers);
        for i in 0..n_layers {
            let d_in = layers.last().map(|l| l.weight.rows());
            layers.push(b.linear(&format!("layers.{i}"), d_in)?);
        }
        if b.tensors.has(&format!("layers.{n_layers}.weight")) {
            bail!(
                "{}: more layers than the config's {n_layers}",
                b.tensors.source
            );
        }
        Ok(Self { layers })
    }

    /// Inputs per sample.
    pub fn d_input(&self) -> usize {
        self.layers[0].weight.cols()
    }

    /// Logits `[n, classes]` for the inputs `x` `[n, d_input]`.
    pub fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        let mut h = transpose(x, n, self.d_input());
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h, n);
            if i != last {
                relu(&mut h);
            }
        }
        transpose(&h, self.layers[last].weight.rows(), n)
    }
}
