//! The run driver: the step loop of `padam train` on one device (or, through [`Replicas`], on
//! several), from a fresh start or a checkpoint to `final.json`.

use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::{GradientsParams, Optimizer};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use padam::{sparsity, DecayConfig, ParamSelection, SparsityController};
use serde::Serialize;

use super::args::{devices_of, TrainArgs};
use super::checkpoint::{self, Checkpoint, LoopState};
use super::config::{fnv1a, TrainConfig};
use super::interrupt;
use super::lr::LrSchedule;
use super::metrics::{append_line, truncate_metrics};
use super::optimizers::TrainOptimizer;
use super::prune;
use super::task::Task;
use crate::data::Rng;

/// What a finished run reports (also `final.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Run directory.
    pub run_dir: PathBuf,
    /// Steps done.
    pub step: usize,
    /// Hash of all parameter values (FNV-1a over the f32 bytes, module order).
    pub weights_hash: String,
    /// The last metrics line.
    pub last: Option<serde_json::Value>,
    /// Data-parallel runs (`--devices`, module `ddp`): the replicas compared at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<ReplicaCheck>,
}

/// The replicas of a data-parallel run compared with rank 0 after the last step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ReplicaCheck {
    /// Replicas (devices).
    pub devices: usize,
    /// Largest `|w_r - w_0|` over every parameter entry and replica (0 when identical).
    pub max_abs_diff: f64,
    /// Every replica's weights equal rank 0's bit for bit.
    pub identical: bool,
}

/// Hash of every float parameter's values, in module order.
pub fn weights_hash<B: Backend, M: Module<B>>(module: &M) -> u64 {
    struct H {
        bytes: Vec<u8>,
    }
    impl<B: Backend> ModuleVisitor<B> for H {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let data = param.val().into_data().convert::<f32>();
            for v in data.iter::<f32>() {
                self.bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    let mut h = H { bytes: Vec::new() };
    module.visit(&mut h);
    fnv1a(&h.bytes)
}

pub(super) fn step_seed(seed: u64, step: usize, stream: u64) -> u64 {
    Rng::new(seed).fork(stream).fork(step as u64).next_u64()
}

/// The data-parallel side of a step (module `ddp`): the loss and gradients of the whole batch,
/// shared across model replicas on several devices; the run driver stays the same.
pub(crate) trait Replicas<B: AutodiffBackend, M: AutodiffModule<B>, O> {
    /// The pruning masks changed (a pruning event, or masks restored from a checkpoint): the
    /// other replicas apply them too.
    fn masks_changed(&mut self, masks: &prune::Masks) -> anyhow::Result<()>;
    /// Step `step` on the examples `indices`: each replica computes its share of the batch,
    /// the gradients are all-reduced; returns rank 0's copy of them and the batch's mean loss
    /// (detached). The other replicas then apply the same optimizer step at `lr`.
    fn grads(
        &mut self,
        model: &M,
        optim: &O,
        step: usize,
        lr: f64,
        indices: &[usize],
    ) -> anyhow::Result<(Tensor<B, 1>, GradientsParams)>;
    /// After the last step: stop the other replicas and compare their weights with `model`'s.
    fn finish(&mut self, model: &M) -> anyhow::Result<ReplicaCheck>;
}

/// One device (the default, or the one `--devices` names), or data-parallel on several.
pub(super) fn train_loop<B, T, O>(
    config: &TrainConfig,
    args: &TrainArgs,
    dir: &Path,
    task: &T,
    optim: O,
    device: &B::Device,
) -> anyhow::Result<Summary>
where
    B: AutodiffBackend,
    T: Task<B> + Sync,
    O: Optimizer<T::Model, B> + TrainOptimizer<B, T::Model>,
{
    let devices = devices_of::<B>(args)?;
    if devices.len() > 1 {
        #[cfg(feature = "ddp")]
        return super::ddp::run(config, args, dir, task, optim, &devices);
        #[cfg(not(feature = "ddp"))]
        bail!("data-parallel training needs a binary built with `--features ddp`");
    }
    run_loop(config, args, dir, task, optim, device, None)
}

/// The run driver; `replicas` is the data-parallel hook (`None`: one device).
pub(super) fn run_loop<'a, B, T, O>(
    config: &'a TrainConfig,
    args: &TrainArgs,
    dir: &'a Path,
    task: &'a T,
    optim: O,
    device: &'a B::Device,
    replicas: Option<&'a mut dyn Replicas<B, T::Model, O>>,
) -> anyhow::Result<Summary>
where
    B: AutodiffBackend,
    T: Task<B>,
    O: Optimizer<T::Model, B> + TrainOptimizer<B, T::Model>,
{
    // The model is threaded through the steps by value, never cloned: the fused step writes
    // in place only into buffers nothing else holds.
    let (mut run, mut model) = Run::new(config, args, dir, task, optim, device, replicas)?;
    interrupt::install();
    let bar = progress_bar(args, run.total, run.state.step);
    // Without a terminal (nohup, CI, a log file) a plain line every LOG_LINE_EVERY instead.
    let mut lines =
        (!args.quiet && bar.is_hidden()).then(|| LogLines::new(run.state.step, run.total));
    while run.state.step < run.total {
        model = run.step(model)?;
        let s = run.state.step;
        let do_eval = s.is_multiple_of(run.eval_every) || s == run.total;
        let do_ckpt = s.is_multiple_of(run.ckpt_every) || s == run.total;
        if s.is_multiple_of(config.train.log_every) || do_eval || do_ckpt {
            model = run.read_losses(model)?;
        }
        run.state.train_seconds += run.step_start.elapsed().as_secs_f64();
        if do_eval {
            run.evaluate(&model)?;
        }
        if do_ckpt {
            run.checkpoint(&model)?;
        }
        if interrupt::requested() && s < run.total {
            if !do_ckpt {
                model = run.read_losses(model)?;
                run.checkpoint(&model)?;
            }
            bar.finish_and_clear();
            tracing::info!(step = s, "interrupted");
            return Err(interrupt::Interrupted {
                step: s,
                total: run.total,
                dir: dir.display().to_string(),
            }
            .into());
        }
        bar.set_position(s as u64);
        bar.set_message(run.progress.message());
        if let Some(l) = lines.as_mut() {
            l.maybe_print(s, do_eval, &run.progress);
        }
        if !run.delay.is_zero() {
            std::thread::sleep(run.delay);
        }
    }
    bar.finish_and_clear();
    run.finish(model)
}

/// The progress bar on a terminal (hidden under `--quiet` or when stderr is not one).
fn progress_bar(args: &TrainArgs, total: usize, step: usize) -> ProgressBar {
    if args.quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "[{elapsed_precise}] [{bar:30}] {pos}/{len} steps ETA {eta} {msg}",
        )
        .expect("valid progress template")
        .progress_chars("=> "),
    );
    bar.set_position(step as u64);
    bar.reset_eta();
    bar
}

/// How often a run without a terminal prints its progress line.
const LOG_LINE_EVERY: Duration = Duration::from_secs(30);

/// Progress as plain lines on stderr, for runs whose output is not a terminal: one after every
/// evaluation and at least every [`LOG_LINE_EVERY`].
struct LogLines {
    start: Instant,
    start_step: usize,
    total: usize,
    last: Instant,
}

impl LogLines {
    fn new(step: usize, total: usize) -> Self {
        let now = Instant::now();
        LogLines {
            start: now,
            start_step: step,
            total,
            last: now,
        }
    }

    fn maybe_print(&mut self, step: usize, evaluated: bool, progress: &Progress) {
        if !(evaluated || self.last.elapsed() >= LOG_LINE_EVERY || step == self.total) {
            return;
        }
        self.last = Instant::now();
        let done = (step - self.start_step) as f64;
        let eta = if done > 0.0 {
            let per_step = self.start.elapsed().as_secs_f64() / done;
            format!("{:.0}s", per_step * (self.total - step) as f64)
        } else {
            "-".to_string()
        };
        eprintln!(
            "step {step}/{} ({:.1}%) {} eta {eta}",
            self.total,
            100.0 * step as f64 / self.total.max(1) as f64,
            progress.message()
        );
    }
}

/// What the progress bar shows after each step ("-" until a value is known, so the first
/// steps before the first loss read do not look like a diverged run).
#[derive(Default)]
struct Progress {
    loss: Option<f64>,
    eval: String,
    items_per_sec: Option<f64>,
}

impl Progress {
    fn message(&self) -> String {
        let loss = self.loss.map_or("-".to_string(), |l| format!("{l:.4}"));
        let speed = self
            .items_per_sec
            .map_or("-".to_string(), |v| format!("{v:.0}"));
        format!("loss {loss} {} {speed} items/s", self.eval)
    }
}

/// One run in progress: its fixed plan (steps, schedules, pruning) and its moving state.
struct Run<'a, B, T, O>
where
    B: AutodiffBackend,
    T: Task<B>,
{
    config: &'a TrainConfig,
    dir: &'a Path,
    task: &'a T,
    device: &'a B::Device,
    replicas: Option<&'a mut dyn Replicas<B, T::Model, O>>,
    optim: O,
    state: LoopState,
    // The plan.
    n: usize,
    steps_per_epoch: usize,
    total: usize,
    eval_every: usize,
    ckpt_every: usize,
    lr: LrSchedule,
    decay: Option<DecayConfig>,
    pruning: Option<(prune::PruneSchedule, ParamSelection)>,
    /// `[sparsity]`: the controller and the weights it measures (those pWD decays).
    controller: Option<(SparsityController, ParamSelection)>,
    hash: u64,
    metrics_path: PathBuf,
    delay: Duration,
    // Moving parts that a checkpoint does not need.
    masks: Option<prune::ActiveMasks<B>>,
    order: Vec<usize>,
    order_epoch: usize,
    pending: Vec<Tensor<B, 1>>,
    last_metrics: Option<serde_json::Value>,
    interval_start: Instant,
    interval_items: usize,
    step_start: Instant,
    /// Host time per phase since the last metrics line (`host` in metrics.jsonl).
    phases: Phases,
    progress: Progress,
}

impl<'a, B, T, O> Run<'a, B, T, O>
where
    B: AutodiffBackend,
    T: Task<B>,
    O: Optimizer<T::Model, B> + TrainOptimizer<B, T::Model>,
{
    fn new(
        config: &'a TrainConfig,
        args: &TrainArgs,
        dir: &'a Path,
        task: &'a T,
        optim: O,
        device: &'a B::Device,
        mut replicas: Option<&'a mut dyn Replicas<B, T::Model, O>>,
    ) -> anyhow::Result<(Self, T::Model)> {
        let t = &config.train;
        let n = task.train_len();
        anyhow::ensure!(n > 0, "the training data is empty");
        let steps_per_epoch = n.div_ceil(t.batch_size);
        config.check_run_length(steps_per_epoch)?;
        let total = config.total_steps(steps_per_epoch);
        let eval_every = t.eval_every.unwrap_or(steps_per_epoch);
        let ckpt_every = t.checkpoint_every.unwrap_or(eval_every);
        let decay = config.optimizer.decay.clone();
        let lr = config.lr_schedule(steps_per_epoch);
        // The run's learning rates: the clock of a ramp (`[prune]`, `[sparsity]`) with
        // `clock = "lr"`.
        let learning_rates: Vec<f64> = (0..total).map(|t| lr.at(t)).collect();
        let pruning = match &config.prune {
            Some(p) => Some((
                p.schedule(&learning_rates, steps_per_epoch)?,
                p.selection()?,
            )),
            None => None,
        };
        tracing::info!(
            task = %task.describe(),
            steps_per_epoch,
            total,
            eval_every,
            ckpt_every,
            "start"
        );
        let hash = config.hash();
        let metrics_path = dir.join("metrics.jsonl");
        let mut model = task.init(config.seed, device);
        let mut optim = optim;
        let mut state = LoopState {
            step: 0,
            loss_sum: 0.0,
            loss_count: 0,
            pending: 0,
            train_seconds: 0.0,
            masks: None,
            controller: None,
        };
        let mut masks = None;
        let mut controller = match &config.sparsity {
            Some(target) => Some((
                SparsityController::with_learning_rates(target.clone(), &learning_rates).map_err(
                    |e| match e.field.as_str() {
                        "learning_rates" => anyhow::anyhow!(
                            "invalid config: sparsity.clock: the run's learning rates (lr.*): {e}"
                        ),
                        field => anyhow::anyhow!("invalid config: sparsity.{field}: {e}"),
                    },
                )?,
                decay
                    .as_ref()
                    .map_or_else(ParamSelection::all, |d| d.selection.clone()),
            )),
            None => None,
        };
        // Where the ramps lie in steps, which on the learning-rate clock the config does not say.
        if let Some((c, _)) = &controller {
            tracing::info!(
                target = c.config().target,
                clock = ?c.config().clock,
                start_step = c.start_step(),
                end_step = c.end_step(),
                "sparsity ramp"
            );
        }
        if let Some((p, _)) = &pruning {
            tracing::info!(
                target = p.target,
                clock = ?p.ramp.clock(),
                start_step = p.ramp.start_step(),
                end_step = p.ramp.end_step(),
                "pruning ramp"
            );
        }
        if args.resume {
            let (path, ckpt) = checkpoint::load_for(dir, config)?;
            let m = checkpoint::decode_record(ckpt.model.clone(), device, &path, "model")?;
            let o = checkpoint::decode_record(ckpt.optim.clone(), device, &path, "optimizer")?;
            let expected = checkpoint::param_shapes(&model);
            model = model.load_record(m);
            checkpoint::check_shapes(&path, &expected, &checkpoint::param_shapes(&model))?;
            optim = optim.load_record(o);
            if let Some(steps) = optim.steps_taken() {
                anyhow::ensure!(
                    steps == ckpt.state.step,
                    "{}: the optimizer record has taken {steps} steps, the checkpoint is at step {}",
                    path.display(),
                    ckpt.state.step
                );
            }
            state = ckpt.state;
            if let Some(m) = &state.masks {
                let host = prune::Masks::from_state(m)?;
                if let Some(r) = replicas.as_deref_mut() {
                    r.masks_changed(&host)?;
                }
                masks = Some(prune::ActiveMasks::new(host, device));
            }
            if let Some((c, _)) = controller.as_mut() {
                let saved = state.controller.with_context(|| {
                    format!("{}: no [sparsity] controller state", path.display())
                })?;
                c.load_state(saved)
                    .with_context(|| format!("{}: controller state", path.display()))?;
            }
            let evaluated: Vec<usize> = (1..=state.step)
                .filter(|s| s.is_multiple_of(eval_every) || *s == total)
                .collect();
            if let Some(lost) = truncate_metrics(&metrics_path, state.step, &evaluated)? {
                tracing::warn!(%lost, "metrics history");
                if !args.quiet {
                    eprintln!("warning: {lost}");
                }
            }
            checkpoint::remove_stale_temps(dir);
            tracing::info!(step = state.step, file = %path.display(), "resumed");
        }
        anyhow::ensure!(
            state.step <= total,
            "the checkpoint is at step {} but the run has only {total} steps",
            state.step
        );
        if let Some((c, _)) = &controller {
            optim.set_pwd_lambda(c.lambda())?;
        }
        let run = Run {
            config,
            dir,
            task,
            device,
            replicas,
            optim,
            state,
            n,
            steps_per_epoch,
            total,
            eval_every,
            ckpt_every,
            lr,
            decay,
            pruning,
            controller,
            hash,
            metrics_path,
            delay: Duration::from_millis(args.step_delay_ms),
            masks,
            order: Vec::new(),
            order_epoch: usize::MAX,
            pending: Vec::new(),
            last_metrics: None,
            interval_start: Instant::now(),
            interval_items: 0,
            step_start: Instant::now(),
            phases: Phases::default(),
            progress: Progress::default(),
        };
        Ok((run, model))
    }

    /// One optimizer step on the next batch (and the pruning event due after it, if any).
    fn step(&mut self, model: T::Model) -> anyhow::Result<T::Model> {
        let step = self.state.step;
        let t = Instant::now();
        self.steer(step, &model)?;
        self.phases.add(Phase::Steer, t);
        let (seed, bs) = (self.config.seed, self.config.train.batch_size);
        let epoch = step / self.steps_per_epoch;
        let b = step % self.steps_per_epoch;
        if self.order_epoch != epoch {
            self.order = (0..self.n).collect();
            Rng::new(step_seed(seed, epoch, 1)).shuffle(&mut self.order);
            self.order_epoch = epoch;
        }
        let indices = &self.order[b * bs..((b + 1) * bs).min(self.n)];
        let lr = self.lr.at(step);
        self.step_start = Instant::now();
        let grads = match self.replicas.as_deref_mut() {
            None => {
                B::seed(self.device, step_seed(seed, step, 2));
                let mut rng = Rng::new(step_seed(seed, step, 3));
                let t = Instant::now();
                let loss = self.task.loss(&model, indices, &mut rng, self.device);
                self.pending.push(loss.clone().detach());
                let t = self.phases.add(Phase::Forward, t);
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                self.phases.add(Phase::Backward, t);
                grads
            }
            Some(r) => {
                let t = Instant::now();
                let (loss, grads) = r.grads(&model, &self.optim, step, lr, indices)?;
                self.pending.push(loss);
                self.phases.add(Phase::Backward, t);
                grads
            }
        };
        let t = Instant::now();
        let grads = match self.config.train.grad_clip_norm {
            Some(max_norm) => padam::clip::clip_grad_norm(&model, grads, max_norm).0,
            None => grads,
        };
        let t = self.phases.add(Phase::Clip, t);
        self.interval_items += self.task.items(indices.len());
        let model = self.optim.train_step(lr, model, grads)?;
        let t = self.phases.add(Phase::Optimizer, t);
        self.state.step += 1;
        self.phases.steps += 1;
        let model = self.prune(model);
        self.phases.add(Phase::Prune, t);
        model
    }

    /// `[sparsity]`: when an update is due, measure the exact-zero fraction (the only device
    /// read it adds, once per update interval) and set pWD's lambda for the next steps.
    fn steer(&mut self, step: usize, model: &T::Model) -> anyhow::Result<()> {
        let Some((c, selection)) = self.controller.as_mut() else {
            return Ok(());
        };
        if !c.due(step) {
            return Ok(());
        }
        let zeros = sparsity::measure(model, 0.0, selection).zero_fraction();
        let lambda = c.update(step, zeros)?;
        self.optim.set_pwd_lambda(lambda)
    }

    /// Gradual or one-shot magnitude pruning (`[prune]`): new masks when an event is due, and
    /// the masks applied after every step.
    fn prune(&mut self, model: T::Model) -> anyhow::Result<T::Model> {
        let Some((schedule, selection)) = &self.pruning else {
            return Ok(model);
        };
        if let Some(fraction) = schedule.event(self.state.step) {
            let weights = prune::selected_weights(&model, selection);
            let previous = self.masks.as_ref().map(|m| &m.host);
            let m = prune::global_magnitude_masks(&weights, previous, fraction);
            tracing::info!(step = self.state.step, fraction = m.fraction(), "pruned");
            if let Some(r) = self.replicas.as_deref_mut() {
                r.masks_changed(&m)?;
            }
            self.masks = Some(prune::ActiveMasks::new(m, self.device));
        }
        Ok(match &self.masks {
            Some(m) => m.apply(model),
            None => model,
        })
    }

    /// Settle the optimizer's deferred non-finite check (nothing unchecked is evaluated, saved
    /// or returned), then read the pending losses back in one transfer.
    fn read_losses(&mut self, model: T::Model) -> anyhow::Result<T::Model> {
        let t = Instant::now();
        let model = self.read_losses_untimed(model);
        self.phases.add(Phase::Read, t);
        model
    }

    fn read_losses_untimed(&mut self, model: T::Model) -> anyhow::Result<T::Model> {
        let model = self.optim.settle(model)?;
        let s = self.state.step;
        let k = self.pending.len();
        if k == 0 {
            return Ok(model);
        }
        let sum: f64 = Tensor::cat(std::mem::take(&mut self.pending), 0)
            .sum()
            .into_scalar()
            .elem();
        anyhow::ensure!(
            sum.is_finite(),
            "training loss is not finite at step {s} (sum of the last {k} = {sum})"
        );
        self.state.loss_sum += sum;
        self.state.loss_count += k;
        self.progress.loss = Some(self.state.loss_sum / self.state.loss_count as f64);
        self.progress.items_per_sec = Some(
            self.interval_items as f64 / self.interval_start.elapsed().as_secs_f64().max(1e-9),
        );
        Ok(model)
    }

    /// Evaluate on the held-out data, measure sparsity, append the metrics line.
    fn evaluate(&mut self, model: &T::Model) -> anyhow::Result<()> {
        let eval_start = Instant::now();
        let s = self.state.step;
        let elapsed = self.interval_start.elapsed().as_secs_f64();
        let valid = model.valid();
        let eval_bs = self
            .config
            .train
            .eval_batch_size
            .unwrap_or(self.config.train.batch_size);
        let (val_loss, val_acc) = self.task.evaluate(&valid, eval_bs, self.device);
        let report = sparsity::measure(&valid, sparsity::DEFAULT_THRESHOLD, &ParamSelection::all());
        let train_loss = self.state.loss_sum / self.state.loss_count.max(1) as f64;
        let line = serde_json::json!({
            "step": s,
            "epoch": s as f64 / self.steps_per_epoch as f64,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "lr": self.lr.at(s - 1),
            "p": self.decay.as_ref().map(|d| d.p.value(s - 1)),
            "lambda": match &self.controller {
                Some((c, _)) => Some(c.lambda()),
                None => self.decay.as_ref().map(|d| d.lambda.value(s - 1)),
            },
            "target_sparsity": self.controller.as_ref().map(|(c, _)| c.target_at(s)),
            // What the controller steers: the zeros among the weights pWD decays, which differ
            // from `zero_fraction` (all weights) when `selection` leaves some out.
            "controlled_fraction": self
                .controller
                .as_ref()
                .map(|(_, which)| report.select(which).zero_fraction()),
            "zero_fraction": report.zero_fraction(),
            "mask_fraction": self.masks.as_ref().map(|m| m.host.fraction()),
            "below_fraction": report.below_fraction(),
            "zeros": report.zeros(),
            "params": report.numel(),
            "tensors": tensor_lines(&report),
            // |w| by tenth of a decade from 1e-12 to 1e2: the magnitude CDF of `padam plot`
            "magnitudes": sparsity::magnitude_histogram(&valid, &ParamSelection::all(), -12, 2, 10),
            "items_per_sec": self.interval_items as f64 / elapsed.max(1e-9),
            "elapsed_s": self.state.train_seconds,
            "host": self.phases.take(eval_start.elapsed()),
        });
        append_line(&self.metrics_path, &serde_json::to_string(&line)?)?;
        tracing::info!(
            step = s,
            train_loss,
            val_loss,
            val_acc,
            zeros = report.zero_fraction(),
            "eval"
        );
        self.progress.eval = format!(
            "acc {:.2}% zeros {:.1}%",
            100.0 * val_acc,
            100.0 * report.zero_fraction()
        );
        self.last_metrics = Some(line);
        self.state.loss_sum = 0.0;
        self.state.loss_count = 0;
        self.interval_items = 0;
        self.interval_start = Instant::now();
        Ok(())
    }

    /// Write a checkpoint of everything the next step needs.
    fn checkpoint(&mut self, model: &T::Model) -> anyhow::Result<()> {
        let t = Instant::now();
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
        self.state.masks = self.masks.as_ref().map(|m| m.host.to_state());
        self.state.controller = self.controller.as_ref().map(|(c, _)| c.state());
        let ckpt = Checkpoint {
            config_hash: self.hash,
            state: self.state.clone(),
            model: recorder
                .record(model.clone().into_record(), ())
                .context("recording the model")?,
            optim: recorder
                .record(self.optim.to_record(), ())
                .context("recording the optimizer")?,
        };
        let path = checkpoint::save(self.dir, &ckpt, self.config.train.keep_checkpoints)?;
        self.phases.checkpoint += t.elapsed();
        tracing::info!(step = self.state.step, file = %path.display(), "checkpoint");
        Ok(())
    }

    /// After the last step: compare replicas, write `final.json`.
    fn finish(self, model: T::Model) -> anyhow::Result<Summary> {
        let last = self.last_metrics.or_else(|| {
            fs::read_to_string(&self.metrics_path)
                .ok()
                .and_then(|t| t.lines().last().map(str::to_string))
                .and_then(|l| serde_json::from_str(&l).ok())
        });
        let replicas = match self.replicas {
            Some(r) => {
                let check = r.finish(&model)?;
                tracing::info!(
                    devices = check.devices,
                    max_abs_diff = check.max_abs_diff,
                    identical = check.identical,
                    "replicas"
                );
                Some(check)
            }
            None => None,
        };
        let summary = Summary {
            run_dir: self.dir.to_path_buf(),
            step: self.state.step,
            weights_hash: format!("{:016x}", weights_hash(&model.valid())),
            last,
            replicas,
        };
        checkpoint::write_atomic(
            &self.dir.join("final.json"),
            (serde_json::to_string_pretty(&summary)? + "\n").as_bytes(),
        )?;
        tracing::info!(step = summary.step, weights = %summary.weights_hash, "done");
        Ok(summary)
    }
}

/// The parts of a training step that [`Phases`] times.
#[derive(Clone, Copy)]
enum Phase {
    Steer,
    Forward,
    Backward,
    Clip,
    Optimizer,
    Prune,
    Read,
}

/// Host (wall) time per phase of the steps since the last metrics line, written as its `host`
/// entry: where a run's time goes. On a GPU backend most work is queued, not done, when a
/// phase returns: a run bound by the device shows its time in `read` (the loss read waits for
/// the queued work), a run bound by the host in the phases that queue it.
#[derive(Default)]
struct Phases {
    steps: usize,
    /// Per [`Phase`], in its order.
    spent: [Duration; 7],
    checkpoint: Duration,
}

impl Phases {
    /// Add the time since `start` to `phase`; returns now, the next phase's start.
    fn add(&mut self, phase: Phase, start: Instant) -> Instant {
        let now = Instant::now();
        self.spent[phase as usize] += now - start;
        now
    }

    /// The metrics entry (ms per step for the step's phases, seconds for the evaluation just
    /// made and the checkpoints written since the last line); the counters restart.
    fn take(&mut self, eval: Duration) -> serde_json::Value {
        let p = std::mem::take(self);
        let per_step = |d: Duration| 1e3 * d.as_secs_f64() / p.steps.max(1) as f64;
        let [steer, forward, backward, clip, optimizer, prune, read] = p.spent.map(per_step);
        serde_json::json!({
            "steps": p.steps,
            "ms_per_step": {
                "batch_forward": forward,
                "backward": backward,
                "clip": clip,
                "optimizer": optimizer,
                "prune": prune,
                "steer": steer,
                "read": read,
            },
            "eval_s": eval.as_secs_f64(),
            "checkpoint_s": p.checkpoint.as_secs_f64(),
        })
    }
}

/// Per-tensor sparsity as metrics-line entries.
fn tensor_lines(report: &padam::SparsityReport) -> Vec<serde_json::Value> {
    report
        .tensors
        .iter()
        .map(|t| {
            serde_json::json!({
                "path": t.path,
                "numel": t.numel,
                "zeros": t.zeros,
                "below": t.below,
                "zero_fraction": t.zero_fraction(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{Phase, Phases, Progress};
    use std::time::{Duration, Instant};

    #[test]
    fn phases_report_ms_per_step_then_restart() {
        let mut p = Phases::default();
        let start = Instant::now() - Duration::from_millis(30);
        let next = p.add(Phase::Read, start);
        assert!(next >= start + Duration::from_millis(30));
        p.steps = 3;
        p.checkpoint = Duration::from_millis(500);
        let v = p.take(Duration::from_secs(2));
        assert_eq!(v["steps"], 3);
        let read = v["ms_per_step"]["read"].as_f64().unwrap();
        assert!((10.0..1000.0).contains(&read), "30 ms over 3 steps: {read}");
        for other in [
            "batch_forward",
            "backward",
            "clip",
            "optimizer",
            "prune",
            "steer",
        ] {
            assert_eq!(v["ms_per_step"][other], 0.0, "{other}");
        }
        assert_eq!(v["eval_s"], 2.0);
        assert_eq!(v["checkpoint_s"], 0.5);
        let again = p.take(Duration::ZERO);
        assert_eq!(again["steps"], 0);
        assert_eq!(
            again["ms_per_step"]["read"], 0.0,
            "take restarts the counters"
        );
    }

    #[test]
    fn progress_shows_a_dash_until_a_value_is_known() {
        let mut p = Progress::default();
        assert_eq!(p.message(), "loss -  - items/s");
        p.loss = Some(0.5);
        p.items_per_sec = Some(1234.4);
        assert_eq!(p.message(), "loss 0.5000  1234 items/s");
    }
}
