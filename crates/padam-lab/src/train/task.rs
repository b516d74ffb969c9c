//! A workload = dataset + model + loss, behind one trait so the run driver is written once.
//!
//! Batches are pure functions of their inputs: the driver passes the example indices (from a
//! shuffle that depends only on `(seed, epoch)`) and an [`Rng`] derived from `(seed, step)`
//! for augmentation or window sampling, which is what makes resuming step-exact.

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor};

use super::config::{DatasetKind, ModelConfig, TrainConfig};
use crate::data::batch_tensors;
use crate::data::shakespeare::{Part, Shakespeare};
use crate::data::{cifar10, digits, fashion_mnist, Dataset, Rng};
use crate::models::fashion_cnn::{FashionCnn, FashionCnnConfig};
use crate::models::nanogpt::{NanoGpt, NanoGptConfig};
use crate::models::resnet::{ResNet, ResNetConfig};
use crate::models::{Mlp, MlpConfig};

/// One workload.
pub trait Task<B: AutodiffBackend> {
    /// The model trained.
    type Model: AutodiffModule<B>;
    /// A one-line description for logs.
    fn describe(&self) -> String;
    /// Examples in one epoch.
    fn train_len(&self) -> usize;
    /// Items (for items/s) in a batch of `n` examples.
    fn items(&self, n: usize) -> usize {
        n
    }
    /// The initial model.
    fn init(&self, seed: u64, device: &B::Device) -> Self::Model;
    /// Mean training loss of the examples `indices`; `rng` drives augmentation / sampling.
    fn loss(
        &self,
        model: &Self::Model,
        indices: &[usize],
        rng: &mut Rng,
        device: &B::Device,
    ) -> Tensor<B, 1>;
    /// Held-out mean loss and accuracy (one device read).
    fn evaluate(
        &self,
        model: &<Self::Model as AutodiffModule<B>>::InnerModule,
        batch: usize,
        device: &B::Device,
    ) -> (f64, f64);
}

/// Sum of the per-batch (mean loss * n, correct) over held-out chunks, read back once.
fn eval_chunks<B: Backend>(
    n: usize,
    batch: usize,
    mut f: impl FnMut(std::ops::Range<usize>) -> (Tensor<B, 1>, Tensor<B, 1, Int>),
) -> (f64, f64) {
    if n == 0 {
        return (f64::NAN, 0.0);
    }
    let mut losses = Vec::new();
    let mut correct = Vec::new();
    let mut start = 0;
    while start < n {
        let end = (start + batch).min(n);
        let (l, c) = f(start..end);
        losses.push(l.mul_scalar((end - start) as f64));
        correct.push(c.float());
        start = end;
    }
    let loss: f64 = Tensor::cat(losses, 0).sum().into_scalar().elem();
    let correct: f64 = Tensor::cat(correct, 0).sum().into_scalar().elem();
    (loss / n as f64, correct / n as f64)
}

fn classify<B: Backend>(
    logits: Tensor<B, 2>,
    y: Tensor<B, 1, Int>,
) -> (Tensor<B, 1>, Tensor<B, 1, Int>) {
    let n = y.dims()[0];
    let loss = CrossEntropyLossConfig::new()
        .init(&logits.device())
        .forward(logits.clone(), y.clone());
    let correct = logits.argmax(1).reshape([n]).equal(y).int().sum();
    (loss, correct)
}

/// Digits + MLP.
pub struct DigitsTask {
    data: Dataset,
    config: MlpConfig,
}

impl<B: AutodiffBackend> Task<B> for DigitsTask {
    type Model = Mlp<B>;
    fn describe(&self) -> String {
        format!(
            "digits ({} train / {} test) MLP {:?} ({} params)",
            self.data.train.len(),
            self.data.test.len(),
            self.config.widths(),
            self.config.param_count()
        )
    }
    fn train_len(&self) -> usize {
        self.data.train.len()
    }
    fn init(&self, seed: u64, device: &B::Device) -> Mlp<B> {
        self.config.init(seed, device)
    }
    fn loss(
        &self,
        model: &Mlp<B>,
        indices: &[usize],
        _: &mut Rng,
        device: &B::Device,
    ) -> Tensor<B, 1> {
        let (x, y) = batch_tensors::<B>(&self.data.train, indices, device);
        CrossEntropyLossConfig::new()
            .init(device)
            .forward(model.forward(x), y)
    }
    fn evaluate(
        &self,
        model: &Mlp<B::InnerBackend>,
        batch: usize,
        device: &B::Device,
    ) -> (f64, f64) {
        let test = &self.data.test;
        eval_chunks::<B::InnerBackend>(test.len(), batch, |r| {
            let idx: Vec<usize> = r.collect();
            let (x, y) = batch_tensors::<B::InnerBackend>(test, &idx, device);
            classify(model.forward(x), y)
        })
    }
}

/// An image-classification task: a dataset module with `train`/`test` splits, a `Transform`
/// (`train()` augments, `default()` only normalises) and `batch`, and a model config with
/// `init`/`param_count` whose model maps `[n, c, h, w]` images to `[n, classes]` logits.
/// Written once, instantiated for Fashion-MNIST + CNN and CIFAR-10 + ResNet-18.
macro_rules! image_task {
    ($(#[$doc:meta])* $task:ident, $data:ident :: $set:ident, $model:ident, $config:ident, $label:literal) => {
        $(#[$doc])*
        pub struct $task {
            data: $data::$set,
            train_idx: Vec<usize>,
            test_idx: Vec<usize>,
            augment: bool,
            config: $config,
        }

        impl<B: AutodiffBackend> Task<B> for $task {
            type Model = $model<B>;
            fn describe(&self) -> String {
                format!(
                    $label,
                    self.train_idx.len(),
                    self.test_idx.len(),
                    self.config.param_count()
                )
            }
            fn train_len(&self) -> usize {
                self.train_idx.len()
            }
            fn init(&self, seed: u64, device: &B::Device) -> $model<B> {
                self.config.init(seed, device)
            }
            fn loss(
                &self,
                model: &$model<B>,
                indices: &[usize],
                rng: &mut Rng,
                device: &B::Device,
            ) -> Tensor<B, 1> {
                let t = if self.augment {
                    $data::Transform::train()
                } else {
                    $data::Transform::default()
                };
                let indices: Vec<usize> = indices.iter().map(|&i| self.train_idx[i]).collect();
                let (x, y) = self.data.train.batch::<B>(&indices, &t, rng, device);
                CrossEntropyLossConfig::new()
                    .init(device)
                    .forward(model.forward(x), y)
            }
            fn evaluate(
                &self,
                model: &$model<B::InnerBackend>,
                batch: usize,
                device: &B::Device,
            ) -> (f64, f64) {
                let t = $data::Transform::default();
                let mut rng = Rng::new(0);
                eval_chunks::<B::InnerBackend>(self.test_idx.len(), batch, |r| {
                    let idx = &self.test_idx[r];
                    let (x, y) = self
                        .data
                        .test
                        .batch::<B::InnerBackend>(idx, &t, &mut rng, device);
                    classify(model.forward(x), y)
                })
            }
        }
    };
}

image_task!(
    /// Fashion-MNIST + CNN.
    FashionTask,
    fashion_mnist::FashionMnist,
    FashionCnn,
    FashionCnnConfig,
    "fashion_mnist ({} train / {} test) CNN ({} params)"
);

image_task!(
    /// CIFAR-10 + ResNet-18.
    CifarTask,
    cifar10::Cifar10,
    ResNet,
    ResNetConfig,
    "cifar10 ({} train / {} test) ResNet-18 ({} params)"
);

/// Tiny Shakespeare + nanoGPT (random windows; an "epoch" is `train tokens / block` windows).
pub struct ShakespeareTask {
    data: Shakespeare,
    config: NanoGptConfig,
    eval_batches: usize,
    eval_full: bool,
}

impl<B: AutodiffBackend> Task<B> for ShakespeareTask {
    type Model = NanoGpt<B>;
    fn describe(&self) -> String {
        format!(
            "shakespeare ({} train / {} val tokens) nanoGPT {}x{}x{} ctx {} ({} params)",
            self.data.train.len(),
            self.data.val.len(),
            self.config.n_layer,
            self.config.n_head,
            self.config.n_embd,
            self.config.block_size,
            self.config.param_count()
        )
    }
    fn train_len(&self) -> usize {
        (self.data.train.len() / self.config.block_size).max(1)
    }
    fn items(&self, n: usize) -> usize {
        n * self.config.block_size
    }
    fn init(&self, seed: u64, device: &B::Device) -> NanoGpt<B> {
        self.config.init(seed, device)
    }
    fn loss(
        &self,
        model: &NanoGpt<B>,
        indices: &[usize],
        rng: &mut Rng,
        device: &B::Device,
    ) -> Tensor<B, 1> {
        let (x, y) = self.data.batch::<B>(
            Part::Train,
            indices.len(),
            self.config.block_size,
            rng,
            device,
        );
        model.forward_loss(x, y).1
    }
    fn evaluate(
        &self,
        model: &NanoGpt<B::InnerBackend>,
        batch: usize,
        device: &B::Device,
    ) -> (f64, f64) {
        let block = self.config.block_size;
        // Random windows (nanoGPT's way, the same ones at every evaluation), or every
        // non-overlapping window once (`data.eval_full`: exact and without sampling noise).
        let starts: Vec<Vec<usize>> = if self.eval_full {
            let tiles = self.data.tiled_starts(Part::Val, block);
            tiles.chunks(batch).map(<[usize]>::to_vec).collect()
        } else {
            let mut rng = Rng::new(0xE7A1);
            let len = self.data.val.len();
            (0..self.eval_batches)
                .map(|_| (0..batch).map(|_| rng.below(len - block)).collect())
                .collect()
        };
        let mut losses = Vec::new();
        let mut correct = Vec::new();
        let mut windows = 0;
        for starts in &starts {
            let (x, y) = self
                .data
                .windows::<B::InnerBackend>(Part::Val, starts, block, device);
            let (logits, loss) = model.forward_loss(x, y.clone());
            // Each batch's mean, weighted by its windows (the last tiled batch is smaller).
            losses.push(loss.mul_scalar(starts.len() as f64));
            let pred: Tensor<B::InnerBackend, 2, Int> =
                logits.argmax(2).reshape([starts.len(), block]);
            correct.push(pred.equal(y).int().sum().float());
            windows += starts.len();
        }
        let loss: f64 = Tensor::cat(losses, 0).sum().into_scalar().elem();
        let correct: f64 = Tensor::cat(correct, 0).sum().into_scalar().elem();
        (loss / windows as f64, correct / (windows * block) as f64)
    }
}

/// The data folder of `dataset`: `data.path`, else `$PADAM_DATA/<folder>`.
pub fn data_path(config: &TrainConfig) -> anyhow::Result<Option<PathBuf>> {
    if let Some(p) = &config.data.path {
        return Ok(Some(p.clone()));
    }
    if config.data.dataset == DatasetKind::Digits {
        return Ok(None);
    }
    match std::env::var_os("PADAM_DATA") {
        Some(root) => Ok(Some(Path::new(&root).join(config.data.dataset.folder()))),
        None => anyhow::bail!(
            "data.path is not set and PADAM_DATA is unset: say where the {} data is \
             (--set data.path=DIR or PADAM_DATA=<folder holding {}/>)",
            config.data.dataset.folder(),
            config.data.dataset.folder()
        ),
    }
}

/// The examples used out of `n`: all, or with a limit a fixed random subset (the same for
/// every seed; files are often sorted by class, so a prefix would not do), in file order.
pub fn subset(n: usize, limit: Option<usize>) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    if let Some(l) = limit.filter(|&l| l < n) {
        Rng::new(0x005E_B5E7).shuffle(&mut idx);
        idx.truncate(l);
        idx.sort_unstable();
    }
    idx
}

/// A loaded workload, by kind.
pub enum AnyTask {
    /// Digits MLP.
    Digits(DigitsTask),
    /// Fashion-MNIST CNN.
    Fashion(FashionTask),
    /// CIFAR-10 ResNet-18.
    Cifar(CifarTask),
    /// Shakespeare nanoGPT.
    Shakespeare(ShakespeareTask),
}

/// Load the data named by `config` and pair it with its model.
pub fn load(config: &TrainConfig) -> anyhow::Result<AnyTask> {
    let path = data_path(config)?;
    let d = &config.data;
    Ok(match &config.model {
        ModelConfig::Mlp { hidden } => {
            let all = digits::load(path.as_deref()).context("loading digits")?;
            anyhow::ensure!(
                d.test_rows < all.len(),
                "invalid config: data.test_rows = {} (the digits data has {} rows; leave some \
                 for training)",
                d.test_rows,
                all.len()
            );
            let mut data = all.split(d.test_rows, config.seed);
            if let Some(l) = d.train_limit {
                let idx: Vec<usize> = (0..l.min(data.train.len())).collect();
                data.train = data.train.gather(&idx);
            }
            if let Some(l) = d.test_limit {
                let idx: Vec<usize> = (0..l.min(data.test.len())).collect();
                data.test = data.test.gather(&idx);
            }
            let config = MlpConfig::new(data.train.n_features, hidden.clone(), data.n_classes);
            AnyTask::Digits(DigitsTask { data, config })
        }
        ModelConfig::FashionCnn { dropout } => {
            let path = path.expect("fashion needs a path");
            let data = fashion_mnist::load(&path)
                .with_context(|| format!("loading Fashion-MNIST from {}", path.display()))?;
            non_empty(data.train.len(), data.test.len(), &path)?;
            AnyTask::Fashion(FashionTask {
                train_idx: subset(data.train.len(), d.train_limit),
                test_idx: subset(data.test.len(), d.test_limit),
                data,
                augment: d.augment,
                config: FashionCnnConfig {
                    dropout: *dropout,
                    ..FashionCnnConfig::default()
                },
            })
        }
        ModelConfig::Resnet18 {} => {
            let path = path.expect("cifar needs a path");
            let data = cifar10::load(&path)
                .with_context(|| format!("loading CIFAR-10 from {}", path.display()))?;
            non_empty(data.train.len(), data.test.len(), &path)?;
            AnyTask::Cifar(CifarTask {
                train_idx: subset(data.train.len(), d.train_limit),
                test_idx: subset(data.test.len(), d.test_limit),
                data,
                augment: d.augment,
                config: ResNetConfig::resnet18(cifar10::N_CLASSES),
            })
        }
        ModelConfig::Nanogpt { block_size, .. } => {
            let path = path.expect("shakespeare needs a path");
            let mut data = crate::data::shakespeare::load(&path)
                .with_context(|| format!("loading Tiny Shakespeare from {}", path.display()))?;
            if let Some(l) = d.train_limit {
                data.train.truncate(l.max(block_size + 1));
            }
            if let Some(l) = d.test_limit {
                data.val.truncate(l.max(block_size + 1));
            }
            anyhow::ensure!(
                data.train.len() > *block_size && data.val.len() > *block_size,
                "shakespeare: the train and val splits need more than model.block_size = {} tokens",
                block_size
            );
            AnyTask::Shakespeare(ShakespeareTask {
                config: config
                    .model
                    .nanogpt(data.vocab.len())
                    .expect("a nanogpt model"),
                data,
                eval_batches: d.eval_batches,
                eval_full: d.eval_full,
            })
        }
    })
}

/// A dataset with an empty training or test split is an error, not a run that reports an
/// accuracy of 0 (a test file whose header counts 0 items, say).
fn non_empty(train: usize, test: usize, path: &std::path::Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        train > 0 && test > 0,
        "{}: the data has {train} training and {test} test examples; both must be > 0",
        path.display()
    );
    Ok(())
}
