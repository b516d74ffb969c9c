//! nanoGPT: token + position embeddings, pre-norm blocks of causal self-attention and a GELU
//! MLP, final LayerNorm, linear head. Heads per block come from `c_attn`'s width, so a
//! compacted model with heads removed runs too.

use anyhow::bail;

use super::ops::{causal_attention, gelu, layer_norm, transpose, Linear};
use super::plan::Builder;

/// A LayerNorm's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Norm {
    /// Scale.
    pub gamma: Vec<f32>,
    /// Shift (absent without biases).
    pub beta: Option<Vec<f32>>,
}

impl Norm {
    fn build(b: &mut Builder<'_>, prefix: &str, c: usize) -> anyhow::Result<Self> {
        Ok(Self {
            gamma: b.vector(&format!("{prefix}.gamma"), c)?,
            beta: b.optional_vector(&format!("{prefix}.beta"), c)?,
        })
    }

    fn apply(&self, x: &[f32], cols: usize) -> Vec<f32> {
        layer_norm(x, cols, &self.gamma, self.beta.as_deref(), 1e-5)
    }
}

/// One transformer block.
#[derive(Debug, Clone, PartialEq)]
pub struct GptBlock {
    /// LayerNorm before attention.
    pub ln_1: Norm,
    /// Query, key, value projection `[3·heads·hd, C]`.
    pub c_attn: Linear,
    /// Attention output projection `[C, heads·hd]`.
    pub attn_proj: Linear,
    /// Heads of this block.
    pub heads: usize,
    /// LayerNorm before the MLP.
    pub ln_2: Norm,
    /// MLP expansion `[hidden, C]`.
    pub c_fc: Linear,
    /// MLP projection `[C, hidden]`.
    pub mlp_proj: Linear,
}

/// The engine's nanoGPT.
#[derive(Debug, Clone, PartialEq)]
pub struct GptNet {
    /// Token embeddings `[vocab, C]`, row-major.
    pub wte: Vec<f32>,
    /// Position embeddings `[block_size, C]`, row-major.
    pub wpe: Vec<f32>,
    /// Vocabulary size.
    pub vocab: usize,
    /// Longest context.
    pub block_size: usize,
    /// Width of the residual stream.
    pub width: usize,
    /// Width of one attention head.
    pub head_dim: usize,
    /// The blocks.
    pub blocks: Vec<GptBlock>,
    /// Final LayerNorm.
    pub ln_f: Norm,
    /// Output head `[vocab, C]` (the token embedding itself when tied).
    pub lm_head: Linear,
}

impl GptNet {
    /// The model in `b`'s tensors: `n_layer` blocks with heads of `head_dim` features.
    pub fn build(b: &mut Builder<'_>, n_layer: usize, head_dim: usize) -> anyhow::Result<Self> {
        let src = b.tensors.source.clone();
        let (vocab, width, wte) = b.table("wte.weight")?;
        let (block_size, pw, wpe) = b.table("wpe.weight")?;
        if pw != width {
            bail!("{src}: `wpe.weight` is {pw} wide, `wte.weight` {width}");
        }
        if head_dim == 0 {
            bail!("{src}: attention heads of width 0");
        }
        let mut blocks = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let p = format!("blocks.{i}");
            let ln_1 = Norm::build(b, &format!("{p}.ln_1"), width)?;
            let c_attn = b.linear(&format!("{p}.attn.c_attn"), Some(width))?;
            let qkv = c_attn.weight.rows();
            if qkv % (3 * head_dim) != 0 {
                bail!(
                    "{src}: `{p}.attn.c_attn.weight` has {qkv} outputs, not 3 x heads x {head_dim}"
                );
            }
            let heads = qkv / (3 * head_dim);
            let attn_proj = b.linear(&format!("{p}.attn.c_proj"), Some(heads * head_dim))?;
            let ln_2 = Norm::build(b, &format!("{p}.ln_2"), width)?;
            let c_fc = b.linear(&format!("{p}.mlp.c_fc"), Some(width))?;
            let mlp_proj = b.linear(&format!("{p}.mlp.c_proj"), Some(c_fc.weight.rows()))?;
            for (name, l) in [("attn.c_proj", &attn_proj), ("mlp.c_proj", &mlp_proj)] {
                if l.weight.rows() != width {
                    bail!(
                        "{src}: `{p}.{name}.weight` gives {} features, the stream has {width}",
                        l.weight.rows()
                    );
                }
            }
            blocks.push(GptBlock {
                ln_1,
                c_attn,
                attn_proj,
                heads,
                ln_2,
                c_fc,
                mlp_proj,
            });
        }
        if b.tensors.has(&format!("blocks.{n_layer}.ln_1.gamma")) {
            bail!("{src}: more blocks than the config's {n_layer}");
        }
        let ln_f = Norm::build(b, "ln_f", width)?;
        // No `lm_head` of its own: the head is tied to the token embedding (nanoGPT's).
        let lm_head = match b.tensors.has("lm_head.weight") {
            true => b.linear("lm_head", Some(width))?,
            false => b.tied("wte.weight")?,
        };
        if lm_head.weight.rows() != vocab {
            bail!(
                "{src}: `lm_head.weight` gives {} logits for a vocabulary of {vocab}",
                lm_head.weight.rows()
            );
        }
        Ok(Self {
            wte,
            wpe,
            vocab,
            block_size,
            width,
            head_dim,
            blocks,
            ln_f,
            lm_head,
        })
    }

    /// Logits for `tokens` `[b, t]` (`t <= block_size`, every token `< vocab`, checked by the
    /// caller): `[b, t, vocab]`, or with `last_only` the last position's `[b, vocab]`.
    pub fn forward(&self, tokens: &[u32], b: usize, t: usize, last_only: bool) -> Vec<f32> {
        assert!(t <= self.block_size && tokens.len() == b * t);
        let c = self.width;
        let cols = b * t;
        // x [C, b·t]
        let mut x = vec![0.0f32; c * cols];
        // Feature-major writes (the tables are small and stay in cache while they are read
        // across).
        for (f, row) in x.chunks_exact_mut(cols).enumerate() {
            for (col, (v, &tok)) in row.iter_mut().zip(tokens).enumerate() {
                *v = self.wte[tok as usize * c + f] + self.wpe[(col % t) * c + f];
            }
        }
        let last_block = self.blocks.len().saturating_sub(1);
        let mut cols = cols;
        for (bi, blk) in self.blocks.iter().enumerate() {
            let h = blk.ln_1.apply(&x, cols);
            let qkv = blk.c_attn.forward(&h, cols);
            // Only the last positions reach the head: in the last block every other position
            // serves only as a key and value, so attention (as queries), projection and MLP
            // run for the last column of each sequence alone.
            let tail = last_only && bi == last_block;
            let y = causal_attention(&qkv, blk.heads, self.head_dim, b, t, tail);
            if tail {
                x = last_columns(&x, c, b, t);
                cols = b;
            }
            add(&mut x, &blk.attn_proj.forward(&y, cols));
            let h = blk.ln_2.apply(&x, cols);
            let mut m = blk.c_fc.forward(&h, cols);
            gelu(&mut m);
            add(&mut x, &blk.mlp_proj.forward(&m, cols));
        }
        if last_only && self.blocks.is_empty() {
            x = last_columns(&x, c, b, t);
            cols = b;
        }
        let h = self.ln_f.apply(&x, cols);
        transpose(&self.lm_head.forward(&h, cols), self.vocab, cols)
    }
}

/// The last column of each sequence of `x` `[c, b·t]`: `[c, b]`.
fn last_columns(x: &[f32], c: usize, b: usize, t: usize) -> Vec<f32> {
    let mut last = vec![0.0f32; c * b];
    for f in 0..c {
        for s in 0..b {
            last[f * b + s] = x[f * b * t + s * t + t - 1];
        }
    }
    last
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
