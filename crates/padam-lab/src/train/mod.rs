//! `padam train <config.toml>`: one training run from a TOML config, with a run directory
//! (resolved config, `metrics.jsonl`, `train.log`, atomic checkpoints, `final.json`) and
//! step-exact `--resume`.
//!
//! Determinism: the data order of epoch `e` is a shuffle seeded by `(seed, e)`, augmentation
//! and window sampling use an RNG seeded by `(seed, step)`, and the backend RNG (dropout) is
//! reseeded from `(seed, step)` before each step. A checkpoint therefore only needs the step,
//! the model and optimizer records, and the pending loss sums to continue exactly.

pub mod checkpoint;
pub mod config;
#[cfg(feature = "ddp")]
pub mod ddp;
pub mod task;

use std::fs::{self, OpenOptions};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{
    AdaGradConfig, AdamConfig, AdamWConfig, GradientsParams, Optimizer, RmsPropConfig, SgdConfig,
};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use padam::{sparsity, PAdamConfig, PSgdConfig, PWdConfig, ParamSelection};
use serde::Serialize;

use self::checkpoint::{Checkpoint, LoopState};
use self::config::{fnv1a, BackendKind, BaseKind, DeviceList, OptimizerKind, TrainConfig};
use self::task::{AnyTask, Task};
use crate::data::Rng;
use crate::prune;
use crate::train_loop::TrainOptimizer;

/// Options of `padam train`.
#[derive(Args, Debug, Clone, Default)]
pub struct TrainArgs {
    /// The run's TOML config (see configs/).
    pub config: PathBuf,
    /// Run directory (default: runs/<config name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in the run directory from its newest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Override a config value: `--set optimizer.lambda=1e-3` (repeatable; `key=` removes).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Override `seed`.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override `train.epochs` (clears `train.iterations`).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Override `train.iterations` (clears `train.epochs`).
    #[arg(long)]
    pub iterations: Option<usize>,
    /// Override `train.batch_size`.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Override `lr.peak`.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Override `backend` (cpu, cuda).
    #[arg(long)]
    pub backend: Option<String>,
    /// Override `data.path`.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Train data-parallel on these devices, one model replica each: `cuda:0,cuda:1`, or
    /// `cpu:0,cpu:1` (replicas on the CPU). Sets `backend`; `train.batch_size` stays the
    /// global batch, split across the replicas (binaries built with `--features ddp` or `cuda`).
    #[arg(long, value_name = "DEVICE,...")]
    pub devices: Option<String>,
    /// No progress bar; print only the final summary as one JSON line.
    #[arg(long, short)]
    pub quiet: bool,
    /// Check and print the resolved config, then exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Testing aid: sleep this many milliseconds after every step.
    #[arg(long, hide = true, default_value_t = 0)]
    pub step_delay_ms: u64,
}

impl TrainArgs {
    /// The `--set` list with the explicit flags appended.
    pub fn overrides(&self) -> Vec<String> {
        let mut o = self.set.clone();
        if let Some(s) = self.seed {
            o.push(format!("seed={s}"));
        }
        if let Some(e) = self.epochs {
            o.push(format!("train.epochs={e}"));
            o.push("train.iterations=".into());
        }
        if let Some(i) = self.iterations {
            o.push(format!("train.iterations={i}"));
            o.push("train.epochs=".into());
        }
        if let Some(b) = self.batch_size {
            o.push(format!("train.batch_size={b}"));
        }
        if let Some(lr) = self.lr {
            o.push(format!("lr.peak={lr:e}"));
        }
        if let Some(b) = &self.backend {
            o.push(format!("backend=\"{b}\""));
        }
        // The backend of `--devices` (a bad list is reported by `resolve` / `run_config`).
        if let Some(Ok(d)) = self.devices.as_deref().map(DeviceList::parse) {
            o.push(format!("backend=\"{}\"", d.backend.name()));
        }
        if let Some(d) = &self.data {
            o.push(format!(
                "data.path={}",
                toml::Value::String(d.display().to_string())
            ));
        }
        o
    }
}

/// Read the config file and apply the overrides.
pub fn resolve(args: &TrainArgs) -> anyhow::Result<TrainConfig> {
    if let Some(spec) = &args.devices {
        let d = DeviceList::parse(spec)?;
        if let Some(b) = args.backend.as_deref().filter(|b| *b != d.backend.name()) {
            bail!("--backend {b} contradicts --devices {spec}");
        }
    }
    let text = fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    config::parse(&text, &args.overrides())
        .with_context(|| format!("config {}", args.config.display()))
}

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

/// `padam train`.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let config = resolve(&args)?;
    if args.dry_run {
        print!("{}", config.to_toml());
        return Ok(());
    }
    let summary = run_config(&config, &args)?;
    if args.quiet {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        let last = summary.last.as_ref();
        let get = |k: &str| last.and_then(|l| l.get(k)).cloned().unwrap_or_default();
        println!(
            "done: {} steps, val loss {}, val accuracy {}, zeros {} -> {}",
            summary.step,
            get("val_loss"),
            get("val_accuracy"),
            get("zero_fraction"),
            summary.run_dir.display()
        );
    }
    Ok(())
}

/// Run (or resume) `config` as `args` say; returns the summary.
pub fn run_config(config: &TrainConfig, args: &TrainArgs) -> anyhow::Result<Summary> {
    let run_dir = match &args.out {
        Some(d) => d.clone(),
        None => {
            let name = config.name.clone().unwrap_or_else(|| {
                args.config
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("run")
                    .to_string()
            });
            PathBuf::from("runs").join(name)
        }
    };
    #[cfg(not(feature = "cuda"))]
    if config.backend == BackendKind::Cuda {
        bail!(
            "backend = \"cuda\": this binary was built without CUDA; rebuild with \
             `cargo build --release --features cuda`"
        );
    }
    if let Some(spec) = &args.devices {
        check_devices(&DeviceList::parse(spec)?, spec, config)?;
    }
    prepare_dir(&run_dir, config, args.resume)?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir.join("train.log"))
        .context("opening train.log")?;
    let subscriber = tracing_subscriber::fmt()
        .with_writer(Mutex::new(log))
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(resume = args.resume, dir = %run_dir.display(), "padam train");
        match config.backend {
            BackendKind::Cpu => run_on::<Autodiff<crate::backend::Cpu>>(config, args, &run_dir),
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => match config.precision {
                config::Precision::F32 => {
                    run_on::<Autodiff<crate::backend::Cuda>>(config, args, &run_dir)
                }
                config::Precision::Bf16 => run_on::<
                    Autodiff<burn::backend::Cuda<burn::tensor::bf16, i32>>,
                >(config, args, &run_dir),
            },
            #[cfg(not(feature = "cuda"))]
            BackendKind::Cuda => bail!(
                "backend = \"cuda\": this binary was built without CUDA; rebuild with \
                 `cargo build --release --features cuda`"
            ),
        }
    })
    .inspect_err(|e| {
        let _ = append_line(&run_dir.join("train.log"), &format!("ERROR {e:#}"));
    })
}

/// `--devices` fits the config and this binary.
fn check_devices(d: &DeviceList, spec: &str, config: &TrainConfig) -> anyhow::Result<()> {
    if d.backend != config.backend {
        bail!(
            "--devices {spec} are {} devices but the run's backend is {:?}",
            d.backend.name(),
            config.backend.name()
        );
    }
    let n = d.indices.len();
    if n > 1 && !cfg!(feature = "ddp") {
        bail!(
            "--devices {spec}: this binary was built without data-parallel training; rebuild \
             with `--features ddp` (or `--features cuda`)"
        );
    }
    if config.train.batch_size < n {
        bail!(
            "--devices {spec}: train.batch_size = {} is smaller than the {n} devices it is \
             split across",
            config.train.batch_size
        );
    }
    Ok(())
}

/// The devices of `--devices` on backend `B` (empty without the flag).
fn devices_of<B: Backend>(args: &TrainArgs) -> anyhow::Result<Vec<B::Device>> {
    use burn::tensor::backend::{Device, DeviceId};
    let Some(spec) = &args.devices else {
        return Ok(Vec::new());
    };
    let type_id = B::Device::default().to_id().type_id;
    DeviceList::parse(spec)?
        .indices
        .iter()
        .map(|&i| {
            let index = u16::try_from(i).with_context(|| format!("--devices {spec}: index {i}"))?;
            Ok(B::Device::from_id(DeviceId::new(type_id, index)))
        })
        .collect()
}

fn append_line(path: &Path, line: &str) -> anyhow::Result<()> {
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(f, "{line}")?;
    Ok(())
}

/// Create the run directory (fresh run) or check it holds this run (resume).
fn prepare_dir(dir: &Path, config: &TrainConfig, resume: bool) -> anyhow::Result<()> {
    let config_path = dir.join("config.toml");
    if resume {
        if !dir.is_dir() {
            bail!("--resume: run directory {} does not exist", dir.display());
        }
        return Ok(());
    }
    let has_run = config_path.exists()
        || dir.join("metrics.jsonl").exists()
        || !checkpoint::list(dir)?.is_empty();
    if has_run {
        bail!(
            "{} already holds a run; pass --resume to continue it, or --out for a new directory",
            dir.display()
        );
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    checkpoint::write_atomic(&config_path, config.to_toml().as_bytes())?;
    Ok(())
}

fn run_on<B: AutodiffBackend>(
    config: &TrainConfig,
    args: &TrainArgs,
    dir: &Path,
) -> anyhow::Result<Summary> {
    let device = devices_of::<B>(args)?
        .into_iter()
        .next()
        .unwrap_or_default();
    match task::load(config)? {
        AnyTask::Digits(t) => with_optimizer::<B, _>(config, args, dir, &t, &device),
        AnyTask::Fashion(t) => with_optimizer::<B, _>(config, args, dir, &t, &device),
        AnyTask::Cifar(t) => with_optimizer::<B, _>(config, args, dir, &t, &device),
        AnyTask::Shakespeare(t) => with_optimizer::<B, _>(config, args, dir, &t, &device),
    }
}

fn with_optimizer<B: AutodiffBackend, T: Task<B> + Sync>(
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
                decay: config.decay_config()?,
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
                decay: config.decay_config()?,
                grad_clipping: clip.clone(),
            }
            .init::<B, T::Model>()
            .map_err(pwd_err)?;
            train_loop(config, args, dir, task, optim, device)
        }
        OptimizerKind::Pwd => {
            let pwd = PWdConfig {
                decay: config.decay_config()?,
                grad_clipping: clip.clone(),
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

fn step_seed(seed: u64, step: usize, stream: u64) -> u64 {
    Rng::new(seed).fork(stream).fork(step as u64).next_u64()
}

/// The metrics line of `run_dir` recorded at `step`, if any.
pub fn metrics_line_at(run_dir: &Path, step: usize) -> Option<serde_json::Value> {
    fs::read_to_string(run_dir.join("metrics.jsonl"))
        .ok()?
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["step"].as_u64() == Some(step as u64))
}

/// Truncate `metrics.jsonl` to the lines of steps `<= step` (lines a killed run wrote after
/// its last checkpoint are replayed by the resumed run).
fn truncate_metrics(path: &Path, step: usize) -> anyhow::Result<()> {
    let Ok(text) = fs::read_to_string(path) else {
        return Ok(());
    };
    let mut kept = String::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            break; // a torn last line
        };
        if v.get("step").and_then(|s| s.as_u64()).unwrap_or(u64::MAX) as usize > step {
            break;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    checkpoint::write_atomic(path, kept.as_bytes())
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
fn train_loop<B, T, O>(
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
        return ddp::run(config, args, dir, task, optim, &devices);
        #[cfg(not(feature = "ddp"))]
        bail!("data-parallel training needs a binary built with `--features ddp`");
    }
    run_loop(config, args, dir, task, optim, device, None)
}

/// The run driver; `replicas` is the data-parallel hook (`None`: one device).
fn run_loop<B, T, O>(
    config: &TrainConfig,
    args: &TrainArgs,
    dir: &Path,
    task: &T,
    mut optim: O,
    device: &B::Device,
    mut replicas: Option<&mut dyn Replicas<B, T::Model, O>>,
) -> anyhow::Result<Summary>
where
    B: AutodiffBackend,
    T: Task<B>,
    O: Optimizer<T::Model, B> + TrainOptimizer<B, T::Model>,
{
    let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
    let t = &config.train;
    let n = task.train_len();
    anyhow::ensure!(n > 0, "the training data is empty");
    let bs = t.batch_size;
    let steps_per_epoch = n.div_ceil(bs);
    let total = config.total_steps(steps_per_epoch);
    let lr = config.lr_schedule(steps_per_epoch);
    let eval_every = t.eval_every.unwrap_or(steps_per_epoch);
    let ckpt_every = t.checkpoint_every.unwrap_or(eval_every);
    let eval_bs = t.eval_batch_size.unwrap_or(bs);
    let decay = config
        .optimizer
        .is_pwd()
        .then(|| config.decay_config())
        .transpose()?;
    let hash = config.hash();
    let pruning = match &config.prune {
        Some(p) => Some((p.schedule(total, steps_per_epoch), p.selection()?)),
        None => None,
    };
    let mut masks: Option<prune::ActiveMasks<B>> = None;
    tracing::info!(
        task = %task.describe(),
        steps_per_epoch,
        total,
        eval_every,
        ckpt_every,
        "start"
    );

    let mut model = task.init(config.seed, device);
    let mut state = LoopState {
        step: 0,
        loss_sum: 0.0,
        loss_count: 0,
        pending: 0,
        train_seconds: 0.0,
        masks: None,
    };
    let metrics_path = dir.join("metrics.jsonl");
    if args.resume {
        let (path, ckpt) = checkpoint::load_latest(dir, hash)?;
        let m = checkpoint::decode_record(ckpt.model.clone(), device, &path, "model")?;
        let o = checkpoint::decode_record(ckpt.optim.clone(), device, &path, "optimizer")?;
        model = model.load_record(m);
        optim = optim.load_record(o);
        state = ckpt.state;
        masks = match &state.masks {
            Some(m) => Some(prune::ActiveMasks::new(
                prune::Masks::from_state(m)?,
                device,
            )),
            None => None,
        };
        if let (Some(r), Some(m)) = (replicas.as_deref_mut(), &masks) {
            r.masks_changed(&m.host)?;
        }
        truncate_metrics(&metrics_path, state.step)?;
        checkpoint::remove_stale_temps(dir);
        tracing::info!(step = state.step, file = %path.display(), "resumed");
    }
    anyhow::ensure!(
        state.step <= total,
        "the checkpoint is at step {} but the run has only {total} steps",
        state.step
    );

    let show = !args.quiet && std::io::stderr().is_terminal();
    let bar = if show {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "[{elapsed_precise}] [{bar:30}] {pos}/{len} steps ETA {eta} {msg}",
            )
            .expect("valid progress template")
            .progress_chars("=> "),
        );
        bar.set_position(state.step as u64);
        bar.reset_eta();
        bar
    } else {
        ProgressBar::hidden()
    };

    let mut order: Vec<usize> = Vec::new();
    let mut order_epoch = usize::MAX;
    let mut pending: Vec<Tensor<B, 1>> = Vec::new();
    let mut last_metrics: Option<serde_json::Value> = None;
    let mut interval_start = Instant::now();
    let mut interval_items = 0usize;
    let mut msg_loss = f64::NAN;
    let mut msg_eval = String::new();
    let mut msg_speed = 0.0;
    let delay = Duration::from_millis(args.step_delay_ms);

    while state.step < total {
        let step = state.step;
        let epoch = step / steps_per_epoch;
        let b = step % steps_per_epoch;
        if order_epoch != epoch {
            order = (0..n).collect();
            Rng::new(step_seed(config.seed, epoch, 1)).shuffle(&mut order);
            order_epoch = epoch;
        }
        let indices = &order[b * bs..((b + 1) * bs).min(n)];
        let lr_t = lr.at(step);
        let (start, grads) = match replicas.as_deref_mut() {
            None => {
                B::seed(device, step_seed(config.seed, step, 2));
                let mut rng = Rng::new(step_seed(config.seed, step, 3));
                let start = Instant::now();
                let loss = task.loss(&model, indices, &mut rng, device);
                pending.push(loss.clone().detach());
                (start, GradientsParams::from_grads(loss.backward(), &model))
            }
            Some(r) => {
                let start = Instant::now();
                let (loss, grads) = r.grads(&model, &optim, step, lr_t, indices)?;
                pending.push(loss);
                (start, grads)
            }
        };
        model = optim.train_step(lr_t, model, grads)?;
        state.step += 1;
        if let Some((schedule, selection)) = &pruning {
            if let Some(fraction) = schedule.event(state.step) {
                let weights = prune::selected_weights(&model, selection);
                let previous = masks.as_ref().map(|m| &m.host);
                let m = prune::global_magnitude_masks(&weights, previous, fraction);
                tracing::info!(step = state.step, fraction = m.fraction(), "pruned");
                if let Some(r) = replicas.as_deref_mut() {
                    r.masks_changed(&m)?;
                }
                masks = Some(prune::ActiveMasks::new(m, device));
            }
            if let Some(m) = &masks {
                model = m.apply(model);
            }
        }
        interval_items += task.items(indices.len());

        let s = state.step;
        let do_eval = s.is_multiple_of(eval_every) || s == total;
        let do_ckpt = s.is_multiple_of(ckpt_every) || s == total;
        if s.is_multiple_of(t.log_every) || do_eval || do_ckpt {
            // The optimizer's deferred non-finite check first: nothing unchecked is evaluated,
            // saved or returned.
            model = optim.settle(model)?;
            let k = pending.len();
            let sum: f64 = Tensor::cat(std::mem::take(&mut pending), 0)
                .sum()
                .into_scalar()
                .elem();
            anyhow::ensure!(
                sum.is_finite(),
                "training loss is not finite at step {s} (sum of the last {k} = {sum})"
            );
            state.loss_sum += sum;
            state.loss_count += k;
            msg_loss = state.loss_sum / state.loss_count as f64;
            msg_speed = interval_items as f64 / interval_start.elapsed().as_secs_f64().max(1e-9);
        }
        state.train_seconds += start.elapsed().as_secs_f64();
        if do_eval {
            let elapsed = interval_start.elapsed().as_secs_f64();
            let valid = model.valid();
            let (val_loss, val_acc) = task.evaluate(&valid, eval_bs, device);
            let report =
                sparsity::measure(&valid, sparsity::DEFAULT_THRESHOLD, &ParamSelection::all());
            let tensors: Vec<serde_json::Value> = report
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
                .collect();
            let line = serde_json::json!({
                "step": s,
                "epoch": s as f64 / steps_per_epoch as f64,
                "train_loss": state.loss_sum / state.loss_count.max(1) as f64,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "lr": lr.at(s - 1),
                "p": decay.as_ref().map(|d| d.p.value(s - 1)),
                "lambda": decay.as_ref().map(|d| d.lambda.value(s - 1)),
                "zero_fraction": report.zero_fraction(),
                "mask_fraction": masks.as_ref().map(|m| m.host.fraction()),
                "below_fraction": report.below_fraction(),
                "zeros": report.zeros(),
                "params": report.numel(),
                "tensors": tensors,
                // |w| by tenth of a decade from 1e-12 to 1e2: the magnitude CDF of `padam plot`
                "magnitudes": sparsity::magnitude_histogram(
                    &valid,
                    &ParamSelection::all(),
                    -12,
                    2,
                    10,
                ),
                "items_per_sec": interval_items as f64 / elapsed.max(1e-9),
                "elapsed_s": state.train_seconds,
            });
            append_line(&metrics_path, &serde_json::to_string(&line)?)?;
            tracing::info!(
                step = s,
                train_loss = state.loss_sum / state.loss_count.max(1) as f64,
                val_loss,
                val_acc,
                zeros = report.zero_fraction(),
                "eval"
            );
            msg_eval = format!(
                "acc {:.2}% zeros {:.1}%",
                100.0 * val_acc,
                100.0 * report.zero_fraction()
            );
            last_metrics = Some(line);
            state.loss_sum = 0.0;
            state.loss_count = 0;
            interval_items = 0;
            interval_start = Instant::now();
        }
        if do_ckpt {
            state.masks = masks.as_ref().map(|m| m.host.to_state());
            let ckpt = Checkpoint {
                config_hash: hash,
                state: state.clone(),
                model: recorder
                    .record(model.clone().into_record(), ())
                    .context("recording the model")?,
                optim: recorder
                    .record(optim.to_record(), ())
                    .context("recording the optimizer")?,
            };
            let path = checkpoint::save(dir, &ckpt, t.keep_checkpoints)?;
            tracing::info!(step = s, file = %path.display(), "checkpoint");
        }
        bar.set_position(s as u64);
        bar.set_message(format!(
            "loss {msg_loss:.4} {msg_eval} {msg_speed:.0} items/s"
        ));
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
    }
    bar.finish_and_clear();

    if last_metrics.is_none() {
        last_metrics = fs::read_to_string(&metrics_path)
            .ok()
            .and_then(|t| t.lines().last().map(str::to_string))
            .and_then(|l| serde_json::from_str(&l).ok());
    }
    let replicas = match replicas {
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
        run_dir: dir.to_path_buf(),
        step: state.step,
        weights_hash: format!("{:016x}", weights_hash(&model.valid())),
        last: last_metrics,
        replicas,
    };
    checkpoint::write_atomic(
        &dir.join("final.json"),
        (serde_json::to_string_pretty(&summary)? + "\n").as_bytes(),
    )?;
    tracing::info!(step = state.step, weights = %summary.weights_hash, "done");
    Ok(summary)
}
