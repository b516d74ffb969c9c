//! A character-level GPT after Karpathy's nanoGPT (`shakespeare_char` configuration): token
//! and learned position embeddings, `n_layer` pre-norm blocks of causal multi-head
//! self-attention and a 4x GELU MLP, a final LayerNorm and a linear head without bias, tied to
//! the token embedding or not (`tie_embeddings`; nanoGPT ties them).
//!
//! Defaults: vocabulary 65, context 256, 6 layers, 6 heads, width 384, dropout 0.2, biases in
//! the LayerNorms and the block's linear layers, untied: 10,795,776 parameters. nanoGPT's own
//! `shakespeare_char` run (`bias = False`, tied): 10,745,088, of which nanoGPT counts 10.65M
//! (it leaves out the position embeddings).
//!
//! Initialisation follows nanoGPT, drawn from the crate's seeded [`Rng`]: linear and embedding
//! weights normal with std 0.02, the residual output projections with std
//! `0.02 / sqrt(2 * n_layer)`, biases 0, LayerNorm weight 1 and bias 0. Dropout is active only
//! on an autodiff backend (training).

use burn::module::{Module, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Dropout, DropoutConfig, Embedding, Gelu, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::module::embedding;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::ops::{causal_attention, layer_norm, LAYER_NORM_EPS};
use crate::data::Rng;

/// Shape of a [`NanoGpt`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NanoGptConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest context (number of position embeddings).
    pub block_size: usize,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Attention heads per block (must divide `n_embd`).
    pub n_head: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Dropout probability (embeddings, attention weights, residual branches).
    pub dropout: f64,
    /// Bias in the LayerNorms and in the blocks' linear layers (the head never has one).
    pub bias: bool,
    /// The output head is the token embedding, transposed (nanoGPT's weight tying).
    #[serde(default)]
    pub tie_embeddings: bool,
}

impl Default for NanoGptConfig {
    /// nanoGPT's `shakespeare_char` model: 65 characters, context 256, 6 x 6 heads x 384,
    /// dropout 0.2, with biases.
    fn default() -> Self {
        Self {
            vocab_size: 65,
            block_size: 256,
            n_layer: 6,
            n_head: 6,
            n_embd: 384,
            dropout: 0.2,
            bias: true,
            tie_embeddings: false,
        }
    }
}

impl NanoGptConfig {
    /// Number of parameters the model has.
    pub fn param_count(&self) -> usize {
        let c = self.n_embd;
        let b = usize::from(self.bias);
        let ln = c + b * c;
        let linear = |i: usize, o: usize| i * o + b * o;
        let block = 2 * ln + linear(c, 3 * c) + linear(c, c) + linear(c, 4 * c) + linear(4 * c, c);
        let head = if self.tie_embeddings {
            0
        } else {
            c * self.vocab_size
        };
        self.vocab_size * c + self.block_size * c + self.n_layer * block + ln + head
    }

    /// Build the model with weights drawn from `Rng::new(seed)`.
    ///
    /// # Panics
    /// When `n_head` does not divide `n_embd`.
    pub fn init<B: Backend>(&self, seed: u64, device: &B::Device) -> NanoGpt<B> {
        assert!(
            self.n_head > 0 && self.n_embd.is_multiple_of(self.n_head),
            "n_head must divide n_embd"
        );
        let mut rng = Rng::new(seed);
        let c = self.n_embd;
        let std = 0.02;
        let proj_std = 0.02 / ((2 * self.n_layer) as f64).sqrt();
        let dropout = || DropoutConfig::new(self.dropout).init();
        let layer_norm = || {
            LayerNormConfig::new(c)
                .with_epsilon(LAYER_NORM_EPS)
                .with_bias(self.bias)
                .init(device)
        };
        let wte = Embedding {
            weight: normal_param(&mut rng, [self.vocab_size, c], std, device),
        };
        let wpe = Embedding {
            weight: normal_param(&mut rng, [self.block_size, c], std, device),
        };
        let blocks = (0..self.n_layer)
            .map(|_| Block {
                ln_1: layer_norm(),
                attn: CausalSelfAttention {
                    c_attn: linear(&mut rng, c, 3 * c, std, self.bias, device),
                    c_proj: linear(&mut rng, c, c, proj_std, self.bias, device),
                    attn_dropout: dropout(),
                    resid_dropout: dropout(),
                    n_head: self.n_head,
                },
                ln_2: layer_norm(),
                mlp: GptMlp {
                    c_fc: linear(&mut rng, c, 4 * c, std, self.bias, device),
                    gelu: Gelu::new(),
                    c_proj: linear(&mut rng, 4 * c, c, proj_std, self.bias, device),
                    dropout: dropout(),
                },
            })
            .collect();
        let lm_head = (!self.tie_embeddings)
            .then(|| linear(&mut rng, c, self.vocab_size, std, false, device));
        NanoGpt {
            wte,
            wpe,
            drop: dropout(),
            blocks,
            ln_f: layer_norm(),
            lm_head,
            block_size: self.block_size,
        }
    }
}

/// Vocabularies up to this size look tokens up by a one-hot matmul (see [`embed_tokens`]);
/// larger ones by a gather (burn's `embedding`, what [`Embedding`] runs).
pub const ONE_HOT_MAX_VOCAB: usize = 256;

/// Rows of `weight` `[vocab, C]` for the tokens `idx` `[batch, time]`: `[batch, time, C]`.
///
/// Up to [`ONE_HOT_MAX_VOCAB`] this is `one_hot(idx) @ weight`, whose backward is the matmul
/// `one_hot^T @ grad` `[vocab, N] x [N, C]`. A gather's backward is instead a scatter-add of
/// the N = batch x time token gradients into `vocab` rows, and with the character vocabulary
/// (65 rows, N = 16,384) the many adds into the same row serialise: it was the step's longest
/// kernel on the GPU (the profile is in docs/BENCHMARKS.md). The
/// forward is the same lookup: each output sums one `w * 1` and zeros. Token ids are the
/// vocabulary's own (`data::shakespeare`), so always `< vocab`; an id outside would give a zero row
/// here and an out-of-bounds read in the gather.
pub fn embed_tokens<B: Backend>(weight: Tensor<B, 2>, idx: Tensor<B, 2, Int>) -> Tensor<B, 3> {
    let [batch, time] = idx.dims();
    let [vocab, width] = weight.dims();
    if vocab > ONE_HOT_MAX_VOCAB {
        return embedding(weight, idx);
    }
    let n = batch * time;
    let classes = Tensor::<B, 1, Int>::arange(0..vocab as i64, &idx.device())
        .reshape([1, vocab])
        .expand([n, vocab]);
    let one_hot = idx
        .reshape([n, 1])
        .expand([n, vocab])
        .equal(classes)
        .float();
    one_hot.matmul(weight).reshape([batch, time, width])
}

fn normal_param<B: Backend>(
    rng: &mut Rng,
    shape: [usize; 2],
    std: f64,
    device: &B::Device,
) -> Param<Tensor<B, 2>> {
    let values: Vec<f32> = (0..shape[0] * shape[1])
        .map(|_| (std * rng.normal()) as f32)
        .collect();
    Param::from_tensor(Tensor::from_data(TensorData::new(values, shape), device))
}

fn linear<B: Backend>(
    rng: &mut Rng,
    d_in: usize,
    d_out: usize,
    std: f64,
    bias: bool,
    device: &B::Device,
) -> Linear<B> {
    Linear {
        weight: normal_param(rng, [d_in, d_out], std, device),
        bias: bias.then(|| Param::from_tensor(Tensor::zeros([d_out], device))),
    }
}

/// Multi-head self-attention where position `t` sees positions `0..=t` only.
#[derive(Module, Debug)]
pub struct CausalSelfAttention<B: Backend> {
    /// Query, key and value projections in one (`C -> 3C`).
    pub c_attn: Linear<B>,
    /// Output projection (`C -> C`).
    pub c_proj: Linear<B>,
    /// Dropout on the attention weights.
    pub attn_dropout: Dropout,
    /// Dropout on the output.
    pub resid_dropout: Dropout,
    /// Number of heads.
    pub n_head: usize,
}

impl<B: Backend> CausalSelfAttention<B> {
    /// `[batch, time, C] -> [batch, time, C]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, c] = x.dims();
        let h = self.n_head;
        let hd = c / h;
        let mut qkv = self.c_attn.forward(x).chunk(3, 2);
        let heads = |z: Tensor<B, 3>| z.reshape([b, t, h, hd]).swap_dims(1, 2);
        let v = heads(qkv.pop().expect("3 chunks"));
        let k = heads(qkv.pop().expect("3 chunks"));
        let q = heads(qkv.pop().expect("3 chunks"));
        let y = causal_attention(q, k, v, &self.attn_dropout);
        let y = y.swap_dims(1, 2).reshape([b, t, c]);
        self.resid_dropout.forward(self.c_proj.forward(y))
    }
}

/// `C -> 4C -> GELU -> C`, then dropout.
#[derive(Module, Debug)]
pub struct GptMlp<B: Backend> {
    /// Expansion (`C -> 4C`).
    pub c_fc: Linear<B>,
    /// Exact (erf) GELU.
    pub gelu: Gelu,
    /// Projection back (`4C -> C`).
    pub c_proj: Linear<B>,
    /// Dropout on the output.
    pub dropout: Dropout,
}

impl<B: Backend> GptMlp<B> {
    /// `[batch, time, C] -> [batch, time, C]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.gelu.forward(self.c_fc.forward(x));
        self.dropout.forward(self.c_proj.forward(x))
    }
}

/// Pre-norm transformer block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// LayerNorm before attention.
    pub ln_1: LayerNorm<B>,
    /// Causal self-attention.
    pub attn: CausalSelfAttention<B>,
    /// LayerNorm before the MLP.
    pub ln_2: LayerNorm<B>,
    /// The MLP.
    pub mlp: GptMlp<B>,
}

impl<B: Backend> Block<B> {
    /// `[batch, time, C] -> [batch, time, C]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = x.clone() + self.attn.forward(layer_norm(&self.ln_1, x, LAYER_NORM_EPS));
        x.clone() + self.mlp.forward(layer_norm(&self.ln_2, x, LAYER_NORM_EPS))
    }
}

/// The character GPT; parameter names follow nanoGPT (`wte`, `wpe`, `blocks.0.attn.c_attn`,
/// ..., `ln_f`, `lm_head`).
#[derive(Module, Debug)]
pub struct NanoGpt<B: Backend> {
    /// Token embeddings `[vocab, C]`.
    pub wte: Embedding<B>,
    /// Position embeddings `[block_size, C]`.
    pub wpe: Embedding<B>,
    /// Dropout on the summed embeddings.
    pub drop: Dropout,
    /// The transformer blocks.
    pub blocks: Vec<Block<B>>,
    /// Final LayerNorm.
    pub ln_f: LayerNorm<B>,
    /// Output head `C -> vocab`, no bias; `None` when tied to `wte` (logits `x @ wte^T`).
    pub lm_head: Option<Linear<B>>,
    /// Longest context.
    pub block_size: usize,
}

impl<B: Backend> NanoGpt<B> {
    /// Logits `[batch, time, vocab]` for tokens `[batch, time]` (`time <= block_size`).
    ///
    /// # Panics
    /// When the sequence is longer than the context.
    pub fn forward(&self, idx: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [_, t] = idx.dims();
        assert!(
            t <= self.block_size,
            "sequence of length {t} is longer than the context {}",
            self.block_size
        );
        // Positions 0..t are the first t rows of `wpe`, the same for every sequence: a slice
        // (its backward sums over the batch) instead of a gather of `[1, t]` indices.
        let positions = self.wpe.weight.val().narrow(0, 0, t).unsqueeze::<3>();
        let x = embed_tokens(self.wte.weight.val(), idx) + positions;
        let mut x = self.drop.forward(x);
        for block in &self.blocks {
            x = block.forward(x);
        }
        let x = layer_norm(&self.ln_f, x, LAYER_NORM_EPS);
        match &self.lm_head {
            Some(head) => head.forward(x),
            None => x.matmul(self.wte.weight.val().transpose().unsqueeze()),
        }
    }

    /// Logits and the mean cross-entropy of predicting `targets` `[batch, time]`.
    pub fn forward_loss(
        &self,
        idx: Tensor<B, 2, Int>,
        targets: Tensor<B, 2, Int>,
    ) -> (Tensor<B, 3>, Tensor<B, 1>) {
        let logits = self.forward(idx);
        let [b, t, v] = logits.dims();
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone().reshape([b * t, v]), targets.reshape([b * t]));
        (logits, loss)
    }
}
