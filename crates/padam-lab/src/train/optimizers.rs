//! The optimizers `padam train` builds from `[optimizer]`, and [`TrainOptimizer`], the one
//! interface the training loops drive them through (burn's optimizers and padam's alike).

use std::path::Path;

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{
    AdaGradConfig, AdamConfig, AdamWConfig, GradientsParams, Optimizer, RmsPropConfig, SgdConfig,
    SimpleOptimizer,
};
use burn::tensor::backend::AutodiffBackend;
use padam::{PAdamConfig, PSgdConfig, PWdConfig, PWdOptimizer};

use super::args::TrainArgs;
use super::config::{BaseKind, OptimizerKind, TrainConfig};
use super::driver::{train_loop, Summary};
use super::task::Task;

/// An optimizer the loop can drive; a refused step becomes an error instead of a panic.
pub trait TrainOptimizer<B: AutodiffBackend, M: AutodiffModule<B>> {
    /// One step at learning rate `lr`.
    fn train_step(&mut self, lr: f64, model: M, grads: GradientsParams) -> anyhow::Result<M>;

    /// Finish any check the optimizer has deferred (pWD's `check_every`), before the model
    /// is read, saved or returned: an error refuses the steps since the last check.
    fn settle(&mut self, model: M) -> anyhow::Result<M> {
        Ok(model)
    }

    /// Steps the optimizer has counted, where it counts them (padam's optimizers): a restored
    /// checkpoint's optimizer record must agree with the loop's step.
    fn steps_taken(&self) -> Option<usize> {
        None
    }

    /// Set pWD's lambda from the next step on (the target-sparsity controller); optimizers
    /// without pWD refuse.
    fn set_pwd_lambda(&mut self, lambda: f64) -> anyhow::Result<()> {
        anyhow::bail!("this optimizer has no pWD lambda to set (lambda = {lambda})")
    }
}

impl<O, M, B> TrainOptimizer<B, M> for OptimizerAdaptor<O, M, B>
where
    O: SimpleOptimizer<B::InnerBackend>,
    M: AutodiffModule<B>,
    B: AutodiffBackend,
{
    fn train_step(&mut self, lr: f64, model: M, grads: GradientsParams) -> anyhow::Result<M> {
        Ok(self.step(lr, model, grads))
    }
}

impl<O, M, B> TrainOptimizer<B, M> for PWdOptimizer<O, M, B>
where
    O: SimpleOptimizer<B::InnerBackend>,
    M: AutodiffModule<B>,
    B: AutodiffBackend,
{
    fn train_step(&mut self, lr: f64, model: M, grads: GradientsParams) -> anyhow::Result<M> {
        let step = self.steps();
        self.try_step(lr, model, grads)
            .map_err(|e| anyhow::anyhow!("optimizer step {step}: {}", e.error))
    }

    fn settle(&mut self, model: M) -> anyhow::Result<M> {
        PWdOptimizer::settle(self, model)
            .map_err(|e| anyhow::anyhow!("optimizer check: {}", e.error))
    }

    fn steps_taken(&self) -> Option<usize> {
        Some(self.steps())
    }

    fn set_pwd_lambda(&mut self, lambda: f64) -> anyhow::Result<()> {
        self.set_lambda(padam::Schedule::constant(lambda))
            .map_err(|e| anyhow::anyhow!("sparsity controller: {e}"))
    }
}

/// Build the optimizer `config.optimizer` names for `task`'s model and train with it.
pub(super) fn with_optimizer<B: AutodiffBackend, T: Task<B> + Sync>(
    config: &TrainConfig,
    args: &TrainArgs,
    dir: &Path,
    task: &T,
    device: &B::Device,
) -> anyhow::Result<Summary> {
    let o = &config.optimizer;
    let clip = config
        .train
        .grad_clip
        .map(|c| GradientClippingConfig::Norm(c as f32));
    let beta1 = o.beta1.unwrap_or(0.9);
    let beta2 = o.beta2.unwrap_or(0.999);
    let eps = o.eps.unwrap_or(1e-8);
    let momentum = o.momentum.unwrap_or(0.0);
    let nesterov = o.nesterov.unwrap_or(false);
    let sgd_momentum = (momentum != 0.0).then_some(MomentumConfig {
        momentum,
        dampening: 0.0,
        nesterov,
    });
    let adam = AdamConfig::new()
        .with_beta_1(beta1 as f32)
        .with_beta_2(beta2 as f32)
        .with_epsilon(eps as f32);
    let pwd_err = |e: padam::ConfigError| anyhow::anyhow!("invalid config: optimizer: {e}");
    let decay = || {
        o.decay.clone().ok_or_else(|| {
            anyhow::anyhow!(
                "invalid config: optimizer.kind = {:?} needs pWD settings",
                o.kind.name()
            )
        })
    };
    match o.kind {
        OptimizerKind::Adamw => {
            let optim = AdamWConfig::new()
                .with_beta_1(beta1 as f32)
                .with_beta_2(beta2 as f32)
                .with_epsilon(eps as f32)
                .with_weight_decay(o.weight_decay.unwrap_or(1e-2) as f32)
                .with_grad_clipping(clip.clone())
                .init::<B, T::Model>();
            train_loop(config, args, dir, task, optim, device)
        }
        OptimizerKind::Adam => {
            let optim = adam
                .with_weight_decay(o.weight_decay.map(|w| WeightDecayConfig::new(w as f32)))
                .with_grad_clipping(clip.clone())
                .init::<B, T::Model>();
            train_loop(config, args, dir, task, optim, device)
        }
        OptimizerKind::Sgd => {
            let optim = SgdConfig::new()
                .with_momentum(sgd_momentum)
                .with_weight_decay(o.weight_decay.map(|w| WeightDecayConfig::new(w as f32)))
                .with_gradient_clipping(clip.clone())
                .init::<B, T::Model>();
            train_loop(config, args, dir, task, optim, device)
        }
        OptimizerKind::Padam => {
            let optim = PAdamConfig {
                beta_1: beta1,
                beta_2: beta2,
                epsilon: eps,
                decay: decay()?,
                grad_clipping: clip.clone(),
                ..PAdamConfig::default()
            }
            .init::<B, T::Model>()
            .map_err(pwd_err)?;
            train_loop(config, args, dir, task, optim, device)
        }
        OptimizerKind::Psgd => {
            let optim = PSgdConfig {
                momentum,
                dampening: 0.0,
                nesterov,
                decay: decay()?,
                grad_clipping: clip.clone(),
                ..PSgdConfig::default()
            }
            .init::<B, T::Model>()
            .map_err(pwd_err)?;
            train_loop(config, args, dir, task, optim, device)
        }
        OptimizerKind::Pwd => {
            let pwd = PWdConfig {
                decay: decay()?,
                grad_clipping: clip.clone(),
                ..PWdConfig::default()
            };
            match o.base.unwrap_or_default() {
                BaseKind::Adam => {
                    let optim = pwd
                        .init_with::<B, T::Model, _>(adam.build())
                        .map_err(pwd_err)?;
                    train_loop(config, args, dir, task, optim, device)
                }
                BaseKind::Sgd => {
                    let base = SgdConfig::new()
                        .with_momentum(sgd_momentum)
                        .build::<B::InnerBackend>();
                    let optim = pwd.init_with::<B, T::Model, _>(base).map_err(pwd_err)?;
                    train_loop(config, args, dir, task, optim, device)
                }
                BaseKind::Rmsprop => {
                    let base = RmsPropConfig::new()
                        .with_momentum(momentum as f32)
                        .with_epsilon(eps as f32)
                        .build();
                    let optim = pwd.init_with::<B, T::Model, _>(base).map_err(pwd_err)?;
                    train_loop(config, args, dir, task, optim, device)
                }
                BaseKind::Adagrad => {
                    let base = AdaGradConfig::new().with_epsilon(eps as f32).build();
                    let optim = pwd.init_with::<B, T::Model, _>(base).map_err(pwd_err)?;
                    train_loop(config, args, dir, task, optim, device)
                }
            }
        }
    }
}
