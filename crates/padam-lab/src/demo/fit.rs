//! The demo's small supervised loop: shuffled mini-batches, cross-entropy, one optimizer step
//! per batch, accuracy on a held-out split. Any model implementing [`Classifier`], any
//! optimizer implementing [`TrainOptimizer`] (burn's and padam's), an `on_epoch` callback for
//! progress. `padam train` has its own driver (checkpoints, metrics, schedules).

use burn::module::AutodiffModule;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};

use crate::data::{batch_tensors, Rng, Split};
use crate::models::Mlp;
use crate::train::TrainOptimizer;

/// A model mapping `[batch, features]` to class logits `[batch, classes]`.
pub trait Classifier<B: Backend> {
    /// Logits for a batch of inputs.
    fn logits(&self, x: Tensor<B, 2>) -> Tensor<B, 2>;
}

impl<B: Backend> Classifier<B> for Mlp<B> {
    fn logits(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.forward(x)
    }
}

/// Settings of [`fit`].
#[derive(Debug, Clone, PartialEq)]
pub struct FitConfig {
    /// Passes over the training split.
    pub epochs: usize,
    /// Rows per optimizer step (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Cosine-decay the learning rate from `lr` to `lr * final_lr_fraction` over all steps
    /// (`None`: constant).
    pub final_lr_fraction: Option<f64>,
    /// Seed of the batch shuffling.
    pub seed: u64,
    /// Evaluate on the test split after every epoch (otherwise only after the last).
    pub eval_every_epoch: bool,
}

impl FitConfig {
    /// Learning rate at step `step` of `total`.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        match self.final_lr_fraction {
            None => self.lr,
            Some(f) => padam::Schedule::Cosine {
                from: self.lr,
                to: self.lr * f,
                steps: total.saturating_sub(1).max(1),
            }
            .value(step),
        }
    }
}

/// What [`fit`] reports after each epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochReport {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Test accuracy, when evaluated this epoch.
    pub test_accuracy: Option<f64>,
    /// Learning rate of the epoch's last step.
    pub lr: f64,
}

/// Fraction of `split` classified correctly (one forward pass over all rows).
pub fn accuracy<B: Backend, M: Classifier<B>>(model: &M, split: &Split, device: &B::Device) -> f64 {
    if split.is_empty() {
        return 0.0;
    }
    let all: Vec<usize> = (0..split.len()).collect();
    let (x, y) = batch_tensors::<B>(split, &all, device);
    let predicted = model.logits(x).argmax(1).reshape([split.len()]);
    let correct: i64 = predicted.equal(y).int().sum().into_scalar().elem();
    correct as f64 / split.len() as f64
}

/// Train `model` on `train` for `config.epochs` epochs and return it with its final test
/// accuracy. `on_epoch` sees each epoch's report (progress bars, logs).
pub fn fit<B, M, O>(
    mut model: M,
    optim: &mut O,
    train: &Split,
    test: &Split,
    config: &FitConfig,
    device: &B::Device,
    mut on_epoch: impl FnMut(&EpochReport),
) -> anyhow::Result<(M, f64)>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Classifier<B>,
    M::InnerModule: Classifier<B::InnerBackend>,
    O: TrainOptimizer<B, M>,
{
    anyhow::ensure!(config.batch_size > 0, "batch size must be > 0");
    anyhow::ensure!(!train.is_empty(), "the training split is empty");
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let mut rng = Rng::new(config.seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let batches_per_epoch = train.len().div_ceil(config.batch_size);
    let total_steps = batches_per_epoch * config.epochs;
    let mut step = 0;
    let mut test_accuracy = None;
    for epoch in 1..=config.epochs {
        rng.shuffle(&mut order);
        let mut losses = Vec::with_capacity(batches_per_epoch);
        let mut lr = config.lr;
        for chunk in order.chunks(config.batch_size) {
            let (x, y) = batch_tensors::<B>(train, chunk, device);
            let loss = loss_fn.forward(model.logits(x), y);
            losses.push(loss.clone().detach());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            lr = config.lr_at(step, total_steps);
            model = optim.train_step(lr, model, grads)?;
            step += 1;
        }
        model = optim.settle(model)?;
        // One host read per epoch for the losses.
        let train_loss = Tensor::cat(losses, 0).mean().into_scalar().elem::<f64>();
        test_accuracy = (config.eval_every_epoch || epoch == config.epochs)
            .then(|| accuracy(&model.valid(), test, device));
        on_epoch(&EpochReport {
            epoch,
            train_loss,
            test_accuracy,
            lr,
        });
    }
    let acc = match test_accuracy {
        Some(a) => a,
        None => accuracy(&model.valid(), test, device),
    };
    Ok((model, acc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_schedule_ends_at_fraction() {
        let c = FitConfig {
            epochs: 1,
            batch_size: 1,
            lr: 1.0,
            final_lr_fraction: Some(0.1),
            seed: 0,
            eval_every_epoch: false,
        };
        assert_eq!(c.lr_at(0, 11), 1.0);
        assert!((c.lr_at(10, 11) - 0.1).abs() < 1e-12);
        assert!((c.lr_at(5, 11) - 0.55).abs() < 1e-12);
        let constant = FitConfig {
            final_lr_fraction: None,
            ..c
        };
        assert_eq!(constant.lr_at(7, 11), 1.0);
    }
}
