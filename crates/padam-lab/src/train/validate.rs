//! Every value of a [`TrainConfig`] checked before anything runs; errors name the dotted key
//! and the value, e.g. `train.batch_size = 0 (must be > 0)`.

use super::config::*;

/// The largest model a config may ask for: 1e9 weights (16 GB with Adam's two moments).
const MAX_PARAMS: u128 = 1_000_000_000;

fn bad(key: &str, value: impl std::fmt::Display, why: &str) -> anyhow::Error {
    anyhow::anyhow!("invalid config: {key} = {value} ({why})")
}

impl TrainConfig {
    /// Check every value; errors name the dotted key and the value.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(target) = &self.sparsity {
            if !self.optimizer.is_pwd() {
                return Err(bad(
                    "sparsity.target",
                    target.target,
                    "a target sparsity steers pWD's lambda: needs optimizer.kind = \"padam\", \"psgd\" or \"pwd\"",
                ));
            }
            if self.prune.is_some() {
                return Err(bad(
                    "sparsity.target",
                    target.target,
                    "[sparsity] and [prune] are two ways to reach a sparsity; give one",
                ));
            }
            target
                .validate()
                .map_err(|e| bad(&format!("sparsity.{}", e.field), &e.value, e.reason))?;
        }
        if self.precision == Precision::Bf16 && self.backend != BackendKind::Cuda {
            return Err(bad(
                "precision",
                "\"bf16\"",
                &format!(
                    "bf16 needs backend = \"cuda\"; the {} backend trains in f32",
                    self.backend.name()
                ),
            ));
        }
        self.validate_model_data()?;
        // The loop's keys first: pWD's check_every defaults to train.log_every, so a bad
        // log_every must be reported as itself.
        self.validate_train()?;
        self.validate_optimizer()?;
        self.validate_lr()?;
        if let Some(p) = &self.prune {
            p.validate()?;
        }
        Ok(())
    }

    fn validate_train(&self) -> anyhow::Result<()> {
        let t = &self.train;
        if t.batch_size == 0 {
            return Err(bad("train.batch_size", 0, "must be > 0"));
        }
        match (t.epochs, t.iterations) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "train.iterations",
                    t.iterations.unwrap_or(0),
                    "give train.epochs or train.iterations, not both",
                ))
            }
            (None, None) => {
                return Err(anyhow::anyhow!(
                    "invalid config: train.epochs or train.iterations is required"
                ))
            }
            (Some(0), _) => return Err(bad("train.epochs", 0, "must be > 0")),
            (_, Some(0)) => return Err(bad("train.iterations", 0, "must be > 0")),
            _ => {}
        }
        if matches!(self.model, ModelConfig::Nanogpt { .. }) && t.epochs.is_some() {
            return Err(bad(
                "train.epochs",
                t.epochs.unwrap_or(0),
                "nanogpt samples random windows: give train.iterations",
            ));
        }
        for (key, clip) in [
            ("train.grad_clip", t.grad_clip),
            ("train.grad_clip_norm", t.grad_clip_norm),
        ] {
            if let Some(c) = clip.filter(|c| !(c.is_finite() && *c > 0.0)) {
                return Err(bad(key, c, "must be finite and > 0"));
            }
        }
        if let (Some(_), Some(c)) = (t.grad_clip, t.grad_clip_norm) {
            return Err(bad(
                "train.grad_clip_norm",
                c,
                "give train.grad_clip (each tensor) or train.grad_clip_norm (all together), \
                 not both",
            ));
        }
        for (key, v) in [
            ("train.eval_every", t.eval_every),
            ("train.checkpoint_every", t.checkpoint_every),
            ("train.eval_batch_size", t.eval_batch_size),
        ] {
            if v == Some(0) {
                return Err(bad(key, 0, "must be > 0"));
            }
        }
        if t.keep_checkpoints == 0 {
            return Err(bad("train.keep_checkpoints", 0, "must be >= 1"));
        }
        if t.log_every == 0 {
            return Err(bad("train.log_every", 0, "must be > 0"));
        }
        Ok(())
    }

    fn validate_model_data(&self) -> anyhow::Result<()> {
        let expected = match self.model {
            ModelConfig::Mlp { .. } => DatasetKind::Digits,
            ModelConfig::FashionCnn { .. } => DatasetKind::FashionMnist,
            ModelConfig::Resnet18 {} => DatasetKind::Cifar10,
            ModelConfig::Nanogpt { .. } => DatasetKind::Shakespeare,
        };
        if self.data.dataset != expected {
            return Err(bad(
                "data.dataset",
                format!("{:?}", self.data.dataset.name()),
                &format!(
                    "model.kind = {:?} trains on {:?}",
                    self.model.kind(),
                    expected.name()
                ),
            ));
        }
        match &self.model {
            ModelConfig::Mlp { hidden } => {
                if hidden.contains(&0) {
                    return Err(bad(
                        "model.hidden",
                        format!("{hidden:?}"),
                        "widths must be > 0",
                    ));
                }
                // Weights of the digits MLP (64 inputs, 10 classes), counted before anything
                // is allocated: an absurd width is an error, not an abort.
                let mut widths = vec![64u128];
                widths.extend(hidden.iter().map(|&h| h as u128));
                widths.push(10);
                let params: u128 = widths.windows(2).map(|w| w[0] * w[1] + w[1]).sum();
                if params > MAX_PARAMS {
                    return Err(bad(
                        "model.hidden",
                        format!("{hidden:?}"),
                        &format!(
                            "{params} parameters; at most {MAX_PARAMS} (optimizer state included, \
                             that is {} GB of f32)",
                            MAX_PARAMS * 16 / 1_000_000_000
                        ),
                    ));
                }
            }
            ModelConfig::FashionCnn { dropout } => check_prob("model.dropout", *dropout)?,
            ModelConfig::Resnet18 {} => {}
            ModelConfig::Nanogpt {
                block_size,
                n_layer,
                n_head,
                n_embd,
                dropout,
                ..
            } => {
                check_prob("model.dropout", *dropout)?;
                for (k, v) in [
                    ("model.block_size", *block_size),
                    ("model.n_layer", *n_layer),
                    ("model.n_head", *n_head),
                    ("model.n_embd", *n_embd),
                ] {
                    if v == 0 {
                        return Err(bad(k, 0, "must be > 0"));
                    }
                }
                if !n_embd.is_multiple_of(*n_head) {
                    return Err(bad("model.n_head", n_head, "must divide model.n_embd"));
                }
            }
        }
        for (k, v) in [
            ("data.train_limit", self.data.train_limit),
            ("data.test_limit", self.data.test_limit),
        ] {
            if v == Some(0) {
                return Err(bad(k, 0, "must be > 0"));
            }
        }
        if self.data.test_rows == 0 {
            return Err(bad(
                "data.test_rows",
                0,
                "must be > 0: the run evaluates on them",
            ));
        }
        if self.data.augment
            && !matches!(
                self.data.dataset,
                DatasetKind::FashionMnist | DatasetKind::Cifar10
            )
        {
            return Err(bad(
                "data.augment",
                true,
                &format!(
                    "the {:?} data has no augmentation (fashion_mnist and cifar10 do)",
                    self.data.dataset.name()
                ),
            ));
        }
        if self.data.eval_batches == 0 {
            return Err(bad("data.eval_batches", 0, "must be > 0"));
        }
        if self.data.eval_full && self.data.dataset != DatasetKind::Shakespeare {
            return Err(bad(
                "data.eval_full",
                true,
                "applies to the shakespeare data (the others are evaluated whole already)",
            ));
        }
        Ok(())
    }

    fn validate_optimizer(&self) -> anyhow::Result<()> {
        let o = &self.optimizer;
        let kind = o.kind;
        let not_for = |key: &str, set: bool, allowed: &[OptimizerKind]| -> anyhow::Result<()> {
            if set && !allowed.contains(&kind) {
                return Err(anyhow::anyhow!(
                    "invalid config: optimizer.{key} does not apply to optimizer.kind = {:?}",
                    format!("{kind:?}").to_lowercase()
                ));
            }
            Ok(())
        };
        use OptimizerKind::*;
        not_for("base", o.base.is_some(), &[Pwd])?;
        not_for("beta1", o.beta1.is_some(), &[Adamw, Adam, Padam, Pwd])?;
        not_for("beta2", o.beta2.is_some(), &[Adamw, Adam, Padam, Pwd])?;
        not_for("eps", o.eps.is_some(), &[Adamw, Adam, Padam, Pwd])?;
        not_for(
            "weight_decay",
            o.weight_decay.is_some(),
            &[Adamw, Adam, Sgd],
        )?;
        not_for("momentum", o.momentum.is_some(), &[Sgd, Psgd, Pwd])?;
        not_for("nesterov", o.nesterov.is_some(), &[Sgd, Psgd, Pwd])?;
        if kind == Pwd && o.base.is_none() {
            return Err(anyhow::anyhow!(
                "invalid config: optimizer.base is required for optimizer.kind = \"pwd\" \
                 (adam, sgd, rmsprop or adagrad)"
            ));
        }
        if let Some(b) = o.beta1 {
            check_beta("optimizer.beta1", b)?;
        }
        if let Some(b) = o.beta2 {
            check_beta("optimizer.beta2", b)?;
        }
        if let Some(e) = o.eps {
            if !(e.is_finite() && e > 0.0 && (e as f32) > 0.0) {
                return Err(bad("optimizer.eps", e, "must be finite and > 0"));
            }
        }
        if let Some(w) = o.weight_decay {
            if !(w.is_finite() && w >= 0.0) {
                return Err(bad("optimizer.weight_decay", w, "must be finite and >= 0"));
            }
        }
        if let Some(m) = o.momentum {
            if !(m.is_finite() && (0.0..1.0).contains(&m)) {
                return Err(bad("optimizer.momentum", m, "must be in [0, 1)"));
            }
        }
        if o.nesterov == Some(true) && o.momentum.unwrap_or(0.0) == 0.0 {
            return Err(bad(
                "optimizer.nesterov",
                true,
                "Nesterov momentum needs optimizer.momentum > 0",
            ));
        }
        match (&o.decay, o.is_pwd()) {
            (Some(decay), true) => decay
                .validate("pWD")
                .map_err(|e| bad(&format!("optimizer.{}", e.field), &e.value, e.reason))?,
            (None, false) => {}
            (Some(_), false) => {
                return Err(anyhow::anyhow!(
                    "invalid config: pWD settings do not apply to optimizer.kind = {:?}",
                    kind.name()
                ))
            }
            (None, true) => {
                return Err(anyhow::anyhow!(
                    "invalid config: optimizer.kind = {:?} needs its pWD settings",
                    kind.name()
                ))
            }
        }
        Ok(())
    }

    fn validate_lr(&self) -> anyhow::Result<()> {
        let l = &self.lr;
        if !(l.peak.is_finite() && l.peak > 0.0) {
            return Err(bad("lr.peak", l.peak, "must be finite and > 0"));
        }
        if l.warmup_steps.is_some() && l.warmup_epochs.is_some() {
            return Err(bad(
                "lr.warmup_epochs",
                l.warmup_epochs.unwrap_or(0.0),
                "give lr.warmup_steps or lr.warmup_epochs, not both",
            ));
        }
        if let Some(w) = l.warmup_epochs {
            if !(w.is_finite() && w >= 0.0) {
                return Err(bad("lr.warmup_epochs", w, "must be finite and >= 0"));
            }
            if self.train.epochs.is_none() {
                return Err(bad(
                    "lr.warmup_epochs",
                    w,
                    "needs train.epochs; use lr.warmup_steps with train.iterations",
                ));
            }
        }
        match (l.schedule, l.final_fraction) {
            (LrScheduleKind::Constant, Some(f)) => Err(bad(
                "lr.final_fraction",
                f,
                "does not apply to lr.schedule = \"constant\"",
            )),
            (_, Some(f)) if !(f.is_finite() && f > 0.0 && f <= 1.0) => {
                Err(bad("lr.final_fraction", f, "must be in (0, 1]"))
            }
            _ => Ok(()),
        }
    }
}

fn check_prob(key: &str, p: f64) -> anyhow::Result<()> {
    if (0.0..1.0).contains(&p) {
        Ok(())
    } else {
        Err(bad(key, p, "must be in [0, 1)"))
    }
}

fn check_beta(key: &str, b: f64) -> anyhow::Result<()> {
    if (0.0..1.0).contains(&b) && (b as f32) < 1.0 {
        Ok(())
    } else {
        Err(bad(key, b, "must be in [0, 1)"))
    }
}
