//! ResNet-18 for CIFAR (any widths and blocks per stage, read from the tensors' names and
//! shapes): stem conv + batch norm, stages of basic blocks (stride 2 at the first block of
//! stages 2-4, a 1x1 conv + batch norm shortcut where the shape changes), global average
//! pooling, linear classifier. Batch norm uses the running statistics (inference).

use anyhow::bail;

use super::ops::{conv_out_side, global_avg_pool, relu, transpose, BatchNorm, Conv, Image, Linear};
use super::plan::Builder;

/// One basic block.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// First 3x3 convolution (carries the stride) and its batch norm.
    pub conv1: (Conv, BatchNorm),
    /// Second 3x3 convolution and its batch norm.
    pub conv2: (Conv, BatchNorm),
    /// The projection shortcut, if any.
    pub downsample: Option<(Conv, BatchNorm)>,
}

impl Block {
    fn forward(&self, x: &Image) -> Image {
        let identity = match &self.downsample {
            Some((conv, bn)) => {
                let mut s = conv.forward(x);
                bn.apply(&mut s);
                s
            }
            None => x.clone(),
        };
        let mut y = self.conv1.0.forward(x);
        self.conv1.1.apply(&mut y);
        relu(&mut y.data);
        let mut y = self.conv2.0.forward(&y);
        self.conv2.1.apply(&mut y);
        for (v, s) in y.data.iter_mut().zip(&identity.data) {
            *v = (*v + s).max(0.0);
        }
        y
    }
}

/// The engine's ResNet.
#[derive(Debug, Clone, PartialEq)]
pub struct ResNetNet {
    /// Stem convolution and batch norm.
    pub stem: (Conv, BatchNorm),
    /// The blocks of all stages, in order.
    pub blocks: Vec<Block>,
    /// Classifier.
    pub fc: Linear,
    /// Input channels.
    pub in_channels: usize,
}

/// The input side the engine's storage plan assumes (CIFAR's 32x32): it picks each
/// convolution's storage by the width of its maps ([`super::plan::Plan::conv_threshold_for`]).
/// Other sizes run correctly.
pub const PLANNED_SIDE: usize = 32;

/// A convolution and its batch norm on maps `width` wide (where known), and its output width.
fn conv_bn(
    b: &mut Builder<'_>,
    conv: &str,
    bn: &str,
    c_in: usize,
    stride: usize,
    width: Option<usize>,
) -> anyhow::Result<((Conv, BatchNorm), Option<usize>)> {
    let k = b.tensors.get(&format!("{conv}.weight"), 4)?.shape[2];
    let c = b.conv(conv, c_in, stride, k / 2, width)?;
    let out_width = width.and_then(|w| conv_out_side(w, k, stride, k / 2));
    let n = b.batch_norm(bn, c.weight.rows())?;
    Ok(((c, n), out_width))
}

impl ResNetNet {
    /// The ResNet in `b`'s tensors.
    pub fn build(b: &mut Builder<'_>) -> anyhow::Result<Self> {
        let in_channels = b.tensors.get("conv1.weight", 4)?.shape[1];
        let (stem, mut width) = conv_bn(b, "conv1", "bn1", in_channels, 1, Some(PLANNED_SIDE))?;
        let mut c = stem.0.weight.rows();
        let mut blocks = Vec::new();
        for stage in 1..=4 {
            let mut i = 0;
            while b.tensors.has(&format!("layer{stage}.{i}.conv1.weight")) {
                let p = format!("layer{stage}.{i}");
                let stride = if stage > 1 && i == 0 { 2 } else { 1 };
                let (conv1, mid_width) = conv_bn(
                    b,
                    &format!("{p}.conv1"),
                    &format!("{p}.bn1"),
                    c,
                    stride,
                    width,
                )?;
                let mid = conv1.0.weight.rows();
                let (conv2, out_width) = conv_bn(
                    b,
                    &format!("{p}.conv2"),
                    &format!("{p}.bn2"),
                    mid,
                    1,
                    mid_width,
                )?;
                let out = conv2.0.weight.rows();
                let downsample = if b.tensors.has(&format!("{p}.downsample.conv.weight")) {
                    let (d, _) = conv_bn(
                        b,
                        &format!("{p}.downsample.conv"),
                        &format!("{p}.downsample.bn"),
                        c,
                        stride,
                        width,
                    )?;
                    Some(d)
                } else {
                    None
                };
                if downsample.is_none() && (stride != 1 || out != c) {
                    bail!(
                        "{}: block `{p}` changes shape ({c} -> {out} channels, stride {stride}) \
                         but has no downsample",
                        b.tensors.source
                    );
                }
                if let Some((d, _)) = &downsample {
                    if d.weight.rows() != out {
                        bail!(
                            "{}: `{p}.downsample.conv.weight` gives {} channels, the block {out}",
                            b.tensors.source,
                            d.weight.rows()
                        );
                    }
                }
                blocks.push(Block {
                    conv1,
                    conv2,
                    downsample,
                });
                c = out;
                width = out_width;
                i += 1;
            }
        }
        let fc = b.linear("fc", Some(c))?;
        Ok(Self {
            stem,
            blocks,
            fc,
            in_channels,
        })
    }

    /// Logits `[n, classes]` for images `[n, c, h, w]`.
    pub fn forward(&self, x: &[f32], n: usize, h: usize, w: usize) -> Vec<f32> {
        let x = Image::from_nchw(n, self.in_channels, h, w, x);
        let mut y = self.stem.0.forward(&x);
        self.stem.1.apply(&mut y);
        relu(&mut y.data);
        for block in &self.blocks {
            y = block.forward(&y);
        }
        let f = global_avg_pool(&y);
        let logits = self.fc.forward(&f, n);
        transpose(&logits, self.fc.weight.rows(), n)
    }
}
