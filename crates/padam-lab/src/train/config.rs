//! The `padam train` configuration: a TOML file, overridden by `--set key=value` flags, checked
//! before anything runs. Unknown keys are errors (every table denies unknown fields) and every
//! bad value is reported with its dotted key, e.g. `train.batch_size = 0 (must be > 0)`.

use std::path::PathBuf;

use anyhow::{bail, Context};

pub use super::lr::LrSchedule;
pub use super::overrides::{apply_override, overridden_table, parse};
use serde::{Deserialize, Serialize};

/// A whole training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// A name for logs and the default run directory.
    #[serde(default)]
    pub name: Option<String>,
    /// Seed of the initial weights, the data order, augmentation and dropout.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Where the run executes.
    #[serde(default)]
    pub backend: BackendKind,
    /// Floating-point precision of the weights and activations.
    #[serde(default)]
    pub precision: Precision,
    /// The model.
    pub model: ModelConfig,
    /// The data.
    pub data: DataConfig,
    /// The optimizer.
    pub optimizer: OptimizerConfig,
    /// The learning rate and its schedule.
    pub lr: LrConfig,
    /// Loop length, batch size, evaluation and checkpoints.
    pub train: LoopConfig,
    /// Magnitude-pruning baseline (`[prune]`; absent: no pruning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<super::prune::PruneConfig>,
    /// Target-sparsity controller (`[sparsity]`, pWD optimizers; absent: lambda as configured):
    /// the library's own [`padam::SparsityTarget`], so its keys and defaults are the library's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparsity: Option<padam::SparsityTarget>,
}

fn default_seed() -> u64 {
    1
}

pub use crate::backend::BackendKind;

/// The devices of `padam train --devices cuda:0,cuda:1`: one backend for all, one model
/// replica per entry (data-parallel training, module `ddp`). On the CPU every entry is the
/// one CPU device (`cpu:0,cpu:1` = two replicas, two threads). Not part of the config nor of
/// its hash, so a run can be resumed on another number of devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceList {
    /// The backend the devices belong to (overrides `backend`).
    pub backend: BackendKind,
    /// Device indices, in rank order (rank 0 evaluates, logs and checkpoints).
    pub indices: Vec<usize>,
}

impl DeviceList {
    /// Parse `cuda:0,cuda:1` (`cuda` alone is `cuda:0`; likewise `cpu`).
    pub fn parse(spec: &str) -> anyhow::Result<Self> {
        let mut backend = None;
        let mut indices = Vec::new();
        for entry in spec.split(',').map(str::trim) {
            let (kind, index) = entry.split_once(':').unwrap_or((entry, "0"));
            let kind = match kind {
                "cpu" => BackendKind::Cpu,
                "cuda" => BackendKind::Cuda,
                _ => bail!("--devices {spec:?}: {entry:?} is not cpu[:N] or cuda[:N]"),
            };
            let index: usize = index.parse().with_context(|| {
                format!("--devices {spec:?}: {entry:?}: the index is not a number")
            })?;
            if *backend.get_or_insert(kind) != kind {
                bail!("--devices {spec:?}: all devices must be of one backend (cpu or cuda)");
            }
            if kind == BackendKind::Cuda && indices.contains(&index) {
                bail!("--devices {spec:?}: cuda:{index} is listed twice");
            }
            indices.push(index);
        }
        Ok(Self {
            backend: backend.unwrap_or_default(),
            indices,
        })
    }
}

/// Float precision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// 32-bit floats.
    #[default]
    F32,
    /// bfloat16 (CUDA only).
    Bf16,
}

/// The model, by kind, with its shape settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelConfig {
    /// Multi-layer perceptron (digits).
    Mlp {
        /// Hidden layer widths.
        #[serde(default = "default_hidden")]
        hidden: Vec<usize>,
    },
    /// The Fashion-MNIST CNN.
    FashionCnn {
        /// Dropout after the hidden layer.
        #[serde(default = "default_cnn_dropout")]
        dropout: f64,
    },
    /// ResNet-18 (CIFAR stem).
    Resnet18 {},
    /// nanoGPT (character level).
    Nanogpt {
        /// Context length.
        #[serde(default = "default_block")]
        block_size: usize,
        /// Transformer blocks.
        #[serde(default = "default_layers")]
        n_layer: usize,
        /// Attention heads.
        #[serde(default = "default_layers")]
        n_head: usize,
        /// Residual width.
        #[serde(default = "default_embd")]
        n_embd: usize,
        /// Dropout probability.
        #[serde(default = "default_gpt_dropout")]
        dropout: f64,
        /// Biases in LayerNorms and linear layers.
        #[serde(default = "default_true")]
        bias: bool,
        /// Tie the output head to the token embedding (nanoGPT does).
        #[serde(default)]
        tie_embeddings: bool,
    },
}

fn default_hidden() -> Vec<usize> {
    vec![256]
}
fn default_cnn_dropout() -> f64 {
    0.2
}
fn default_block() -> usize {
    256
}
fn default_layers() -> usize {
    6
}
fn default_embd() -> usize {
    384
}
fn default_gpt_dropout() -> f64 {
    0.2
}
fn default_true() -> bool {
    true
}

impl ModelConfig {
    /// nanoGPT's shape for a vocabulary of `vocab_size` (the data's), `None` for other models.
    pub fn nanogpt(&self, vocab_size: usize) -> Option<crate::models::nanogpt::NanoGptConfig> {
        match *self {
            ModelConfig::Nanogpt {
                block_size,
                n_layer,
                n_head,
                n_embd,
                dropout,
                bias,
                tie_embeddings,
            } => Some(crate::models::nanogpt::NanoGptConfig {
                vocab_size,
                block_size,
                n_layer,
                n_head,
                n_embd,
                dropout,
                bias,
                tie_embeddings,
            }),
            _ => None,
        }
    }

    /// The kind as written in the config.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelConfig::Mlp { .. } => "mlp",
            ModelConfig::FashionCnn { .. } => "fashion_cnn",
            ModelConfig::Resnet18 {} => "resnet18",
            ModelConfig::Nanogpt { .. } => "nanogpt",
        }
    }
}

/// Which dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetKind {
    /// The built-in 8x8 digits (or a CSV at `data.path`).
    Digits,
    /// Fashion-MNIST IDX files.
    FashionMnist,
    /// CIFAR-10 (any layout `data::cifar10::load` reads).
    Cifar10,
    /// Tiny Shakespeare text.
    Shakespeare,
}

impl DatasetKind {
    /// The sub-folder of `PADAM_DATA` holding this dataset.
    pub fn folder(self) -> &'static str {
        match self {
            DatasetKind::Digits => "digits",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Cifar10 => "cifar10-jpeg",
            DatasetKind::Shakespeare => "tinyshakespeare",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Digits => "digits",
            DatasetKind::FashionMnist => "fashion_mnist",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Shakespeare => "shakespeare",
        }
    }
}

/// Where the data comes from and how much of it is used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The dataset.
    pub dataset: DatasetKind,
    /// File or folder; default: built-in digits, else `$PADAM_DATA/<dataset folder>`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Training augmentation (Fashion-MNIST: rotation + shift; CIFAR-10: crop + flip).
    #[serde(default)]
    pub augment: bool,
    /// Use only the first N training examples (short runs).
    #[serde(default)]
    pub train_limit: Option<usize>,
    /// Use only the first N held-out examples.
    #[serde(default)]
    pub test_limit: Option<usize>,
    /// Held-out rows of the digits split.
    #[serde(default = "default_test_rows")]
    pub test_rows: usize,
    /// nanoGPT: validation batches (of random windows, the same at every evaluation) per
    /// evaluation.
    #[serde(default = "default_eval_batches")]
    pub eval_batches: usize,
    /// nanoGPT: evaluate on every non-overlapping window of the validation split once instead
    /// (exact, no sampling noise; `eval_batches` is then unused).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub eval_full: bool,
}

fn default_test_rows() -> usize {
    crate::data::digits::DEFAULT_TEST_ROWS
}
fn default_eval_batches() -> usize {
    20
}

/// Optimizer kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// burn's AdamW (decoupled L2 decay `weight_decay`).
    Adamw,
    /// burn's Adam (no decay; `weight_decay` adds an L2 term to the gradient).
    Adam,
    /// SGD with optional momentum (`weight_decay` as L2).
    Sgd,
    /// Adam + pWD.
    Padam,
    /// SGD + pWD.
    Psgd,
    /// pWD around `base`.
    Pwd,
}

impl OptimizerKind {
    /// The kind as written in the config.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Adamw => "adamw",
            OptimizerKind::Adam => "adam",
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Padam => "padam",
            OptimizerKind::Psgd => "psgd",
            OptimizerKind::Pwd => "pwd",
        }
    }
}

/// Base optimizer of `kind = "pwd"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaseKind {
    /// Adam.
    #[default]
    Adam,
    /// SGD (momentum settings apply).
    Sgd,
    /// RMSProp.
    Rmsprop,
    /// AdaGrad.
    Adagrad,
}

/// Optimizer settings in one `[optimizer]` table: the base optimizer's keys below and, for the
/// pWD kinds (`padam`, `psgd`, `pwd`), the keys of the library's own [`padam::DecayConfig`]
/// (`p`, `lambda`, `lambda2`, `s_rate`, `selection`, `non_finite`, `check_every`: its
/// descriptions, defaults and validation). Keys that do not apply to `kind` must be left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Which optimizer.
    pub kind: OptimizerKind,
    /// Base of `kind = "pwd"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseKind>,
    /// Adam family first-moment decay (default 0.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta1: Option<f64>,
    /// Adam family second-moment decay (default 0.999).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beta2: Option<f64>,
    /// Adam family / RMSProp / AdaGrad epsilon (default 1e-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eps: Option<f64>,
    /// AdamW decoupled decay, or Adam / SGD L2 strength.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// SGD / pSGD momentum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f64>,
    /// SGD / pSGD Nesterov momentum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nesterov: Option<bool>,
    /// The pWD settings (pWD kinds only), read from this table's keys by [`OptimizerConfig`]'s
    /// `Deserialize`. `check_every` left out defaults to `train.log_every` in `padam train`
    /// (the loop reads the loss then anyway), not to the library's 1.
    #[serde(flatten, skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub decay: Option<padam::DecayConfig>,
}

/// The `[optimizer]` keys that belong to pWD: the library's [`padam::DecayConfig`] fields, as
/// it serialises them.
pub fn pwd_keys() -> Vec<String> {
    toml::Table::try_from(padam::DecayConfig::default())
        .expect("a DecayConfig serialises to a table")
        .keys()
        .cloned()
        .collect()
}

impl Serialize for OptimizerConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        OptimizerConfig::serialize(self, s)
    }
}

// The table is split by key: the library's `DecayConfig` keys (as it serialises them) go to
// `decay`, the rest to the base optimizer's fields; each part is strict on its own.
impl<'de> Deserialize<'de> for OptimizerConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut table = toml::Table::deserialize(d)?;
        // `decay_params`: the old name of `selection`, still read (older run directories).
        if let Some(v) = table.remove("decay_params") {
            if table.contains_key("selection") {
                return Err(D::Error::custom(
                    "optimizer.decay_params and optimizer.selection: give one (decay_params is \
                     the old name of selection)",
                ));
            }
            table.insert("selection".into(), v);
        }
        let decay: toml::Table = pwd_keys()
            .iter()
            .filter_map(|k| table.remove(k).map(|v| (k.clone(), v)))
            .collect();
        let mut config =
            super::overrides::strict(table, "optimizer", |d| OptimizerConfig::deserialize(d))
                .map_err(D::Error::custom)?;
        if config.is_pwd() {
            let parsed = super::overrides::strict(decay, "optimizer", |d| {
                padam::DecayConfig::deserialize(d)
            })
            .map_err(D::Error::custom)?;
            config.decay = Some(parsed);
        } else if let Some(key) = decay.keys().next() {
            return Err(D::Error::custom(format!(
                "optimizer.{key} does not apply to optimizer.kind = {:?} (pWD keys are for \
                 \"padam\", \"psgd\" and \"pwd\")",
                config.kind.name()
            )));
        }
        Ok(config)
    }
}

impl OptimizerConfig {
    /// True for PAdam, pSGD and pWD.
    pub fn is_pwd(&self) -> bool {
        matches!(
            self.kind,
            OptimizerKind::Padam | OptimizerKind::Psgd | OptimizerKind::Pwd
        )
    }
}

/// Learning rate schedule kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrScheduleKind {
    /// The same lr throughout (after warmup).
    #[default]
    Constant,
    /// Linear warmup, then half-cosine from `peak` to `peak * final_fraction`.
    Cosine,
    /// Linear warmup, then geometric from `peak` to `peak * final_fraction`.
    Exponential,
}

/// Learning rate: peak, schedule, warmup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrConfig {
    /// Peak learning rate.
    pub peak: f64,
    /// Shape after warmup.
    #[serde(default)]
    pub schedule: LrScheduleKind,
    /// Warmup length in steps (linear from `peak / warmup` ... `peak`).
    #[serde(default)]
    pub warmup_steps: Option<usize>,
    /// Warmup length in epochs (converted to steps).
    #[serde(default)]
    pub warmup_epochs: Option<f64>,
    /// Final lr as a fraction of the peak (cosine, exponential).
    #[serde(default)]
    pub final_fraction: Option<f64>,
}

/// The loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopConfig {
    /// Examples per optimizer step.
    pub batch_size: usize,
    /// Passes over the training data (or give `iterations`).
    #[serde(default)]
    pub epochs: Option<usize>,
    /// Optimizer steps (or give `epochs`).
    #[serde(default)]
    pub iterations: Option<usize>,
    /// Clip each gradient tensor to this L2 norm (burn's per-tensor clipping).
    #[serde(default)]
    pub grad_clip: Option<f64>,
    /// Clip the global L2 norm over all gradients to this (PyTorch's `clip_grad_norm_`, as
    /// nanoGPT; `padam::clip`). Give this or `grad_clip`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_clip_norm: Option<f64>,
    /// Evaluate every N steps (default: once per epoch) and always at the end.
    #[serde(default)]
    pub eval_every: Option<usize>,
    /// Checkpoint every N steps (default: at each evaluation) and always at the end.
    #[serde(default)]
    pub checkpoint_every: Option<usize>,
    /// Checkpoints kept (the newest).
    #[serde(default = "default_keep")]
    pub keep_checkpoints: usize,
    /// Read the training loss back every N steps (progress bar refresh).
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    /// Evaluation batch size (default: `batch_size`).
    #[serde(default)]
    pub eval_batch_size: Option<usize>,
}

fn default_keep() -> usize {
    3
}
fn default_log_every() -> usize {
    10
}

impl TrainConfig {
    /// Total optimizer steps, given the steps of one epoch.
    pub fn total_steps(&self, steps_per_epoch: usize) -> usize {
        match (self.train.epochs, self.train.iterations) {
            (_, Some(i)) => i,
            // `check_run_length` refuses an overflow before a run starts.
            (Some(e), None) => e.saturating_mul(steps_per_epoch),
            (None, None) => 0,
        }
    }

    /// The checks that need the data's size: the run's length fits in a step counter, and a
    /// warmup is shorter than the run.
    pub fn check_run_length(&self, steps_per_epoch: usize) -> anyhow::Result<()> {
        if let Some(e) = self.train.epochs {
            if e.checked_mul(steps_per_epoch).is_none() {
                bail!(
                    "invalid config: train.epochs = {e} ({e} x {steps_per_epoch} steps per epoch \
                     overflows the step counter)"
                );
            }
        }
        let total = self.total_steps(steps_per_epoch);
        if let Some((key, value, steps)) = self.warmup(steps_per_epoch) {
            if steps >= total {
                bail!(
                    "invalid config: {key} = {value} ({steps} warmup steps, but the run has \
                     {total} steps; the warmup must end before the run does)"
                );
            }
        }
        Ok(())
    }

    /// The warmup as configured: its key, the value given, and the steps it lasts.
    fn warmup(&self, steps_per_epoch: usize) -> Option<(&'static str, f64, usize)> {
        match (self.lr.warmup_steps, self.lr.warmup_epochs) {
            (Some(s), _) => Some(("lr.warmup_steps", s as f64, s)),
            (None, Some(e)) => Some((
                "lr.warmup_epochs",
                e,
                (e * steps_per_epoch as f64).round() as usize,
            )),
            (None, None) => None,
        }
    }

    /// The learning-rate schedule resolved to steps.
    pub fn lr_schedule(&self, steps_per_epoch: usize) -> LrSchedule {
        let total = self.total_steps(steps_per_epoch);
        let warmup = self
            .warmup(steps_per_epoch)
            .map_or(0, |(_, _, steps)| steps)
            .min(total);
        LrSchedule {
            peak: self.lr.peak,
            kind: self.lr.schedule,
            warmup,
            total,
            final_fraction: self.lr.final_fraction.unwrap_or(match self.lr.schedule {
                LrScheduleKind::Constant => 1.0,
                LrScheduleKind::Cosine => 0.01,
                LrScheduleKind::Exponential => 0.1,
            }),
        }
    }

    /// Stable hash of the resolved config (what a checkpoint must match).
    pub fn hash(&self) -> u64 {
        fnv1a(
            serde_json::to_string(self)
                .expect("config serializes")
                .as_bytes(),
        )
    }

    /// The resolved config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serializes to TOML")
    }
}

/// FNV-1a, 64 bit.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::super::overrides::parse;
    use super::*;

    const MINIMAL: &str = r#"
        [model]
        kind = "mlp"
        [data]
        dataset = "digits"
        [optimizer]
        kind = "padam"
        p = 0.8
        lambda = 1e-3
        [lr]
        peak = 1e-2
        schedule = "cosine"
        warmup_steps = 10
        [train]
        batch_size = 32
        epochs = 2
    "#;

    #[test]
    fn parses_and_overrides() {
        let c = parse(MINIMAL, &[]).unwrap();
        assert_eq!(c.train.batch_size, 32);
        assert_eq!(c.seed, 1);
        let c = parse(
            MINIMAL,
            &[
                "train.batch_size=64".into(),
                "optimizer.lambda = 3e-3".into(),
                "model.hidden=[32, 16]".into(),
                "optimizer.p={ kind = \"linear\", from = 2.0, to = 0.8, steps = 100 }".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.train.batch_size, 64);
        let decay = c.optimizer.decay.as_ref().unwrap();
        assert_eq!(decay.lambda, padam::Schedule::constant(3e-3));
        // check_every left out: the loop's log_every (10), not the library's 1
        assert_eq!(decay.check_every, 10);
        assert_eq!(
            c.model,
            ModelConfig::Mlp {
                hidden: vec![32, 16]
            }
        );
        assert!(matches!(
            c.optimizer.decay.as_ref().unwrap().p,
            padam::Schedule::Linear { .. }
        ));
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&str, &str)] = &[
            ("train.batch_sise=3", "train.batch_sise"),
            ("train.batch_size=x", "train.batch_size = \"x\""),
            ("optimizer.oops=1", "optimizer.oops"),
            ("model.hidden=3", "model"),
            ("optimizer.lambda=x", "optimizer.lambda = \"x\""),
            (
                "optimizer.selection=weights",
                "optimizer.selection = \"weights\"",
            ),
            (
                "optimizer.kind=adamw",
                "does not apply to optimizer.kind = \"adamw\"",
            ),
            ("optimizer.non_finite=maybe", "optimizer.non_finite"),
            ("lr=3", "lr = 3"),
            ("train.batch_size=0", "train.batch_size"),
            ("optimizer.p=-1", "optimizer.p"),
            ("optimizer.lambda=-1", "optimizer.lambda"),
            ("optimizer.weight_decay=0.1", "optimizer.weight_decay"),
            ("lr.peak=-1", "lr.peak"),
            ("lr.final_fraction=2", "lr.final_fraction"),
            ("optimizer.kind=adamx", "adamx"),
            ("model.kind=resnet18", "data.dataset"),
            ("model.depth=3", "depth"),
            ("train.grad_clip=0", "train.grad_clip"),
            ("precision=bf16", "precision"),
            ("optimizer.beta2=1.0", "optimizer.beta2"),
            ("train.iterations=10", "train.iterations"),
        ];
        for (o, needle) in cases {
            let err = format!("{:#}", parse(MINIMAL, &[o.to_string()]).unwrap_err());
            assert!(err.contains(needle), "{o}: {err}");
        }
    }

    #[test]
    fn bf16_is_refused_off_cuda() {
        for backend in ["cpu", "tch"] {
            let set = [
                format!("backend=\"{backend}\""),
                "precision=\"bf16\"".to_string(),
            ];
            let err = format!("{:#}", parse(MINIMAL, &set).unwrap_err());
            let named = format!("the {backend} backend trains in f32");
            assert!(err.contains("precision") && err.contains(&named), "{err}");
        }
    }

    #[test]
    fn resolved_configs_read_back_as_written() {
        for set in [
            vec![],
            vec!["optimizer.kind=adamw", "optimizer.p=", "optimizer.lambda="],
        ] {
            let set: Vec<String> = set.into_iter().map(String::from).collect();
            let c = parse(MINIMAL, &set).unwrap();
            let text = toml::to_string(&c).unwrap();
            assert_eq!(parse(&text, &[]).unwrap(), c, "{text}");
            // pWD's keys appear for pWD kinds only, constants as numbers
            assert_eq!(
                text.contains("lambda = 0.001"),
                c.optimizer.is_pwd(),
                "{text}"
            );
            assert_eq!(
                text.contains("selection = \"all\""),
                c.optimizer.is_pwd(),
                "{text}"
            );
        }
        // the old key name of selection still reads
        let c = parse(MINIMAL, &["optimizer.decay_params=matrices".into()]).unwrap();
        let selection = &c.optimizer.decay.as_ref().unwrap().selection;
        assert_eq!(*selection, padam::ParamSelection::matrices_only());
    }

    #[test]
    fn lr_schedules() {
        let mut c = parse(MINIMAL, &[]).unwrap();
        let s = c.lr_schedule(50);
        assert_eq!(s.total, 100);
        assert_eq!(s.warmup, 10);
        assert!((s.at(0) - 1e-3).abs() < 1e-15);
        assert!((s.at(9) - 1e-2).abs() < 1e-15);
        assert!((s.at(10) - 1e-2).abs() < 1e-15);
        assert!((s.at(99) - 1e-4).abs() < 1e-15);
        c.lr.schedule = LrScheduleKind::Exponential;
        c.lr.final_fraction = Some(0.25);
        c.lr.warmup_steps = None;
        let s = c.lr_schedule(50);
        assert!((s.at(0) - 1e-2).abs() < 1e-15);
        assert!((s.at(99) - 2.5e-3).abs() < 1e-15);
        c.lr.schedule = LrScheduleKind::Constant;
        c.lr.final_fraction = None;
        assert_eq!(c.lr_schedule(50).at(77), 1e-2);
    }

    #[test]
    fn device_lists() {
        let d = DeviceList::parse("cuda:0, cuda:1").unwrap();
        assert_eq!((d.backend, d.indices), (BackendKind::Cuda, vec![0, 1]));
        let d = DeviceList::parse("cpu,cpu:1").unwrap();
        assert_eq!((d.backend, d.indices), (BackendKind::Cpu, vec![0, 1]));
        assert_eq!(DeviceList::parse("cpu,cpu").unwrap().indices, vec![0, 0]);
        for (bad, needle) in [
            ("", "cpu[:N]"),
            ("gpu:0", "gpu:0"),
            ("cuda:x", "not a number"),
            ("cpu,cuda:1", "one backend"),
            ("cuda:1,cuda:1", "twice"),
        ] {
            let err = format!("{:#}", DeviceList::parse(bad).unwrap_err());
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
    }
}
