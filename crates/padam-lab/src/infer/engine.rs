//! The engine: one of the per-family networks, built from named tensors under a [`Plan`].

use anyhow::bail;

use super::cnn::CnnNet;
use super::gpt::GptNet;
use super::mlp::MlpNet;
use super::plan::{Builder, LayerInfo, Plan};
use super::resnet::ResNetNet;
use super::tensors::{Shape, Tensors};

/// A built network.
#[derive(Debug, Clone, PartialEq)]
pub enum Net {
    /// Digits MLP.
    Mlp(MlpNet),
    /// Fashion CNN.
    Cnn(CnnNet),
    /// ResNet.
    ResNet(ResNetNet),
    /// nanoGPT.
    Gpt(GptNet),
}

/// A model on the CPU engine, with the report of how each weight is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Engine {
    /// The network.
    pub net: Net,
    /// Every weight matrix: shape, zeros, dense or CSR, bytes.
    pub layers: Vec<LayerInfo>,
    /// Bytes of the vectors and tables (biases, norms, embeddings).
    pub vector_bytes: usize,
}

impl Engine {
    /// The model `shape` (the family and what the tensors cannot say) from `tensors`.
    pub fn build(shape: &Shape, tensors: &Tensors, plan: Plan) -> anyhow::Result<Self> {
        let mut b = Builder::new(tensors, plan);
        let net = match shape {
            Shape::Mlp(c) => Net::Mlp(MlpNet::build(&mut b, c.hidden.len() + 1)?),
            Shape::Fashion(c) => Net::Cnn(CnnNet::build(
                &mut b,
                [c.in_channels, c.image_size, c.image_size],
            )?),
            Shape::ResNet(_) => Net::ResNet(ResNetNet::build(&mut b)?),
            Shape::Gpt(c) => {
                if c.n_head == 0 || !c.n_embd.is_multiple_of(c.n_head) {
                    bail!(
                        "model.n_head = {} does not divide model.n_embd = {}",
                        c.n_head,
                        c.n_embd
                    );
                }
                Net::Gpt(GptNet::build(&mut b, c.n_layer, c.n_embd / c.n_head)?)
            }
        };
        Ok(Self {
            net,
            layers: b.layers,
            vector_bytes: b.vector_bytes,
        })
    }

    /// Bytes the weights occupy in memory (matrices as stored, plus every vector).
    pub fn memory_bytes(&self) -> usize {
        self.layers.iter().map(|l| l.bytes).sum::<usize>() + self.vector_bytes
    }

    /// Logits `[n, classes]` of an image or feature classifier for `n` inputs `x` (burn's
    /// `[n, c, h, w]` images, or `[n, features]` for the MLP); `hw` is the image size.
    pub fn classify(&self, x: &[f32], n: usize, hw: [usize; 2]) -> anyhow::Result<Vec<f32>> {
        let want = match &self.net {
            Net::Mlp(m) => n * m.d_input(),
            Net::Cnn(c) => n * c.input.iter().product::<usize>(),
            Net::ResNet(r) => n * r.in_channels * hw[0] * hw[1],
            Net::Gpt(_) => bail!("nanoGPT is not a classifier: sample from it instead"),
        };
        if matches!(self.net, Net::ResNet(_)) && (hw[0] == 0 || hw[1] == 0) {
            bail!("image size {hw:?}: ResNet needs images of at least 1x1");
        }
        if x.len() != want {
            bail!(
                "{} input values for {n} samples, the model takes {want}",
                x.len()
            );
        }
        Ok(match &self.net {
            Net::Mlp(m) => m.forward(x, n),
            Net::Cnn(c) => c.forward(x, n),
            Net::ResNet(r) => r.forward(x, n, hw[0], hw[1]),
            Net::Gpt(_) => unreachable!("refused above"),
        })
    }

    /// The nanoGPT, if this is one.
    pub fn gpt(&self) -> Option<&GptNet> {
        match &self.net {
            Net::Gpt(g) => Some(g),
            _ => None,
        }
    }
}
