//! `padam sample <run-dir or export>`: text from a trained nanoGPT, as nanoGPT's `sample.py`
//! draws it (the last `block_size` tokens as context, logits / temperature, top-k, softmax,
//! one draw), on burn-flex's dense forward or on the engine (dense or sparse plan).
//!
//! Both use the same seeded draws, so the same seed gives the same text on both engines
//! unless two logits differ by less than their rounding difference (~1e-6) exactly at a draw.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use burn::tensor::{Int, Tensor, TensorData};
use clap::{Args, ValueEnum};

use super::engine::Engine;
use super::plan::Plan;
use super::tensors::{load, model_shape, Shape};
use crate::data::Rng;
use crate::models::nanogpt::NanoGpt;

type Cpu = crate::backend::Cpu;

/// Which forward pass produces the logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineKind {
    /// The engine, each weight dense or CSR by its zero fraction.
    Sparse,
    /// burn-flex's dense forward of the model (the reference).
    Dense,
}

/// Options of `padam sample`.
#[derive(Args, Debug, Clone)]
pub struct SampleArgs {
    /// A nanoGPT run directory (its newest checkpoint) or a file written by `padam export`.
    pub model: PathBuf,
    /// Text to continue (characters of the training text only).
    #[arg(long, default_value = "\n")]
    pub prompt: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 500)]
    pub tokens: usize,
    /// Logits are divided by this; 0 picks the most likely token every time (greedy).
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Draw among the `k` most likely tokens only (0: all).
    #[arg(long, default_value_t = 200)]
    pub top_k: usize,
    /// Seed of the draws.
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
    /// Forward pass: `sparse` (the engine) or `dense` (burn-flex).
    #[arg(long, value_enum, default_value = "sparse")]
    pub engine: EngineKind,
    /// The Tiny Shakespeare text the model was trained on, for its character set (default: the
    /// config's data.path, else $PADAM_DATA/tinyshakespeare).
    #[arg(long)]
    pub data: Option<PathBuf>,
}

/// How tokens are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Tokens to generate.
    pub tokens: usize,
    /// Temperature (0: greedy).
    pub temperature: f64,
    /// Top-k (0: all).
    pub top_k: usize,
    /// Seed.
    pub seed: u64,
}

impl Sampling {
    /// An error naming the option when a value is out of range.
    pub fn check(&self) -> anyhow::Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            bail!(
                "--temperature {}: must be a finite number >= 0",
                self.temperature
            );
        }
        Ok(())
    }
}

/// The next token after `logits` (one position's, `[vocab]`), drawing from `rng`.
///
/// # Errors
/// When a logit is NaN or infinite (a broken model must not produce plausible text).
pub fn next_token(logits: &[f32], s: &Sampling, rng: &mut Rng) -> anyhow::Result<u32> {
    if let Some(i) = logits.iter().position(|v| !v.is_finite()) {
        bail!(
            "logit of token {i} is {}: the model produced a non-finite value",
            logits[i]
        );
    }
    // One draw per token whatever the settings, so greedy and sampled runs stay aligned.
    let u = rng.next_f64();
    let argmax = |l: &[f32]| {
        l.iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |b, (i, &v)| if v > b.1 { (i, v) } else { b },
            )
            .0 as u32
    };
    if s.temperature == 0.0 {
        return Ok(argmax(logits));
    }
    let scaled: Vec<f64> = logits.iter().map(|&v| v as f64 / s.temperature).collect();
    // Top-k as nanoGPT: everything below the k-th largest logit is dropped.
    let cutoff = if s.top_k > 0 && s.top_k < scaled.len() {
        let mut sorted = scaled.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        sorted[s.top_k - 1]
    } else {
        f64::NEG_INFINITY
    };
    let max = scaled.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = scaled
        .iter()
        .map(|&v| if v < cutoff { 0.0 } else { (v - max).exp() })
        .collect();
    let total: f64 = weights.iter().sum();
    let mut target = u * total;
    for (i, w) in weights.iter().enumerate() {
        if target < *w {
            return Ok(i as u32);
        }
        target -= w;
    }
    // Rounding left `target` past the last weight: the last token with any weight.
    Ok(weights.iter().rposition(|w| *w > 0.0).unwrap_or(0) as u32)
}

/// `s.tokens` tokens after `prompt`, the logits of the last position coming from `forward`
/// called on the context (the last `block_size` tokens).
pub fn generate(
    prompt: &[u32],
    block_size: usize,
    s: &Sampling,
    mut forward: impl FnMut(&[u32]) -> Vec<f32>,
) -> anyhow::Result<Vec<u32>> {
    s.check()?;
    if prompt.is_empty() {
        bail!("the prompt is empty: give at least one character");
    }
    let mut rng = Rng::new(s.seed);
    let mut tokens = prompt.to_vec();
    for _ in 0..s.tokens {
        let context = &tokens[tokens.len().saturating_sub(block_size)..];
        let logits = forward(context);
        tokens.push(next_token(&logits, s, &mut rng)?);
    }
    Ok(tokens[prompt.len()..].to_vec())
}

/// The logits of the last position of `context` on burn-flex's dense forward.
pub fn burn_last_logits(model: &NanoGpt<Cpu>, context: &[u32]) -> Vec<f32> {
    let t = context.len();
    let idx: Vec<i64> = context.iter().map(|&v| i64::from(v)).collect();
    let device = Default::default();
    let logits = model.forward(Tensor::<Cpu, 2, Int>::from_data(
        TensorData::new(idx, [1, t]),
        &device,
    ));
    let vocab = logits.dims()[2];
    logits
        .narrow(1, t - 1, 1)
        .reshape([vocab])
        .into_data()
        .to_vec()
        .expect("f32 logits")
}

/// A model's last-position logits for a context (one forward pass).
pub type Forward<'a> = Box<dyn FnMut(&[u32]) -> Vec<f32> + 'a>;

/// What `padam sample` produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    /// The generated text (without the prompt).
    pub text: String,
    /// Tokens generated per second.
    pub tokens_per_s: f64,
}

/// Run `padam sample`.
pub fn run(args: &SampleArgs) -> anyhow::Result<Sampled> {
    let s = Sampling {
        tokens: args.tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        seed: args.seed,
    };
    s.check()?;
    let loaded = load(&args.model)?;
    let name = args.model.display();
    let Shape::Gpt(gpt) = model_shape(&loaded.config.model, Some(&loaded.tensors))? else {
        bail!(
            "{name}: `padam sample` needs a nanoGPT model, this is {:?}",
            loaded.config.model
        );
    };
    let mut config = loaded.config.clone();
    if let Some(d) = &args.data {
        config.data.path = Some(d.clone());
    }
    let path = crate::train::task::data_path(&config)?
        .context("no Tiny Shakespeare path (--data, data.path or PADAM_DATA)")?;
    let text = crate::data::shakespeare::load(&path)
        .with_context(|| format!("loading the character set from {}", path.display()))?;
    let vocab = text.vocab;
    if vocab.len() != gpt.vocab_size {
        bail!(
            "{}: {} characters, the model {name} has a vocabulary of {}",
            path.display(),
            vocab.len(),
            gpt.vocab_size
        );
    }
    let prompt = vocab
        .encode(&args.prompt)
        .map_err(|e| anyhow::anyhow!("--prompt {:?}: {e}", args.prompt))?;
    // The model is built before the clock starts: tokens/s is the generation alone.
    let engine;
    let model;
    let mut forward: Forward<'_> = match args.engine {
        EngineKind::Sparse => {
            engine = Engine::build(&Shape::Gpt(gpt.clone()), &loaded.tensors, Plan::sparse())?;
            let net = engine.gpt().expect("a nanoGPT engine");
            Box::new(move |c: &[u32]| net.forward(c, 1, c.len(), true))
        }
        EngineKind::Dense => {
            model = loaded
                .tensors
                .load_into(gpt.init::<Cpu>(loaded.config.seed, &Default::default()))?;
            let m = &model;
            Box::new(move |c: &[u32]| burn_last_logits(m, c))
        }
    };
    let start = Instant::now();
    let tokens = generate(&prompt, gpt.block_size, &s, &mut forward)?;
    let secs = start.elapsed().as_secs_f64();
    Ok(Sampled {
        text: vocab.decode(&tokens),
        tokens_per_s: tokens.len() as f64 / secs.max(1e-9),
    })
}
