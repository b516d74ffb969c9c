//! The layers whose training pass burn's autodiff splits into many small kernels: convolution
//! (a generic weight gradient), batch norm and layer norm (written in tensor ops) and causal
//! attention (materialised scores). The models call these functions instead of the modules'
//! own `forward`.
//!
//! On every backend but one they are exactly burn's modules. Under autodiff on burn's LibTorch
//! backend (`--backend tch`) each runs as one PyTorch op whose backward is PyTorch's own
//! (cuDNN's convolution and batch-norm gradients, the fused layer-norm and attention kernels):
//! see [`torch`]. Both paths compute the same function; `tests/tch.rs` holds them to each other.

use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, Dropout, LayerNorm, PaddingConfig2d};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor};

pub mod cases;
#[cfg(feature = "tch")]
pub mod torch;

/// Whether [`conv2d`], [`batch_norm`], [`conv_batch_norm`], [`layer_norm`] and
/// [`causal_attention`] run as PyTorch ops on `B`: autodiff over the LibTorch backend, in a `tch` build, unless the environment
/// sets [`NATIVE_LAYERS_VAR`]`=0` (burn's modules then run there too: for comparisons, and as
/// a way out should a PyTorch op misbehave).
pub fn native_on<B: Backend>() -> bool {
    #[cfg(feature = "tch")]
    {
        static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        torch::is_torch_autodiff::<B>()
            && *ENABLED.get_or_init(|| std::env::var(NATIVE_LAYERS_VAR).as_deref() != Ok("0"))
    }
    #[cfg(not(feature = "tch"))]
    false
}

/// The variable that turns the native layers off (`0`).
pub const NATIVE_LAYERS_VAR: &str = "PADAM_NATIVE_LAYERS";

/// `conv.forward(x)`.
pub fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(feature = "tch")]
    if native_on::<B>() {
        if let Some(padding) = symmetric_padding(&conv.padding) {
            return torch::conv2d(conv, x, padding);
        }
    }
    conv.forward(x)
}

/// The padding PyTorch's `conv2d` takes (`[height, width]`, the same on both sides), when the
/// configuration has one that does not depend on the input.
#[cfg_attr(not(feature = "tch"), allow(dead_code))]
fn symmetric_padding(padding: &PaddingConfig2d) -> Option<[usize; 2]> {
    match *padding {
        PaddingConfig2d::Valid => Some([0, 0]),
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            Some([top, left])
        }
        _ => None,
    }
}

/// `bn.forward(x)` for `[batch, channels, height, width]`: batch statistics and an update of
/// the running ones on an autodiff backend, the running ones otherwise.
pub fn batch_norm<B: Backend>(bn: &BatchNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    #[cfg(feature = "tch")]
    if native_on::<B>() {
        return torch::batch_norm(bn, x);
    }
    bn.forward(x)
}

/// `bn.forward(conv.forward(x))`, then a ReLU when `relu` is set: one PyTorch op under
/// autodiff on LibTorch (one backward seed instead of two, and PyTorch's ReLU).
pub fn conv_batch_norm<B: Backend>(
    conv: &Conv2d<B>,
    bn: &BatchNorm<B>,
    x: Tensor<B, 4>,
    relu: bool,
) -> Tensor<B, 4> {
    #[cfg(feature = "tch")]
    if native_on::<B>() {
        if let Some(padding) = symmetric_padding(&conv.padding) {
            return torch::conv_batch_norm(conv, padding, bn, x, relu);
        }
    }
    let y = batch_norm(bn, conv2d(conv, x));
    if relu {
        burn::tensor::activation::relu(y)
    } else {
        y
    }
}

/// `ln.forward(x)` over the last dimension. `epsilon` must be the one `ln` was made with
/// (burn keeps it private); the models build their layer norms with [`LAYER_NORM_EPS`].
pub fn layer_norm<B: Backend, const D: usize>(
    ln: &LayerNorm<B>,
    x: Tensor<B, D>,
    epsilon: f64,
) -> Tensor<B, D> {
    #[cfg(feature = "tch")]
    if native_on::<B>() {
        return torch::layer_norm(ln, x, epsilon);
    }
    let _ = epsilon;
    ln.forward(x)
}

/// The layer-norm epsilon of the models (burn's and PyTorch's default).
pub const LAYER_NORM_EPS: f64 = 1e-5;

/// Causal softmax attention of `q`, `k`, `v` (`[batch, heads, time, head_dim]`): position `t`
/// attends to `0..=t`, scores scaled by `1/sqrt(head_dim)`, `dropout` on the attention
/// weights (active on an autodiff backend).
pub fn causal_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    dropout: &Dropout,
) -> Tensor<B, 4> {
    #[cfg(feature = "tch")]
    if native_on::<B>() {
        return torch::causal_attention(q, k, v, dropout.prob);
    }
    let [b, h, t, hd] = q.dims();
    let att = q.matmul(k.swap_dims(2, 3)) * (1.0 / (hd as f64).sqrt());
    let mask = Tensor::<B, 2, Bool>::tril_mask([t, t], 0, &att.device())
        .unsqueeze::<4>()
        .expand([b, h, t, t]);
    let att = softmax(att.mask_fill(mask, f32::NEG_INFINITY), 3);
    dropout.forward(att).matmul(v)
}
