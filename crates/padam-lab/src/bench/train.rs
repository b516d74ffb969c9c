//! `padam bench train`: training-step throughput of the three workloads on random data, the
//! counterpart of `../shared/bench/torch_train_bench.py` (same models, batch sizes and timing:
//! 5 warm-up steps, then the mean over `--iters` steps between two device syncs).
//!
//! Besides the full step (forward, backward, optimizer) it times forward + backward alone, so
//! the optimizer's share of a training step is visible without a profiler. Each row also gives
//! the host's time in each phase (the calls return once their kernels are queued): where their
//! sum comes near the step's time, the step is bound by the host, not by the GPU's kernels.

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Distribution, Int, Tensor};
use clap::Args;
use padam::{NonFinitePolicy, PAdamConfig};
use serde::Serialize;

use crate::backend::BackendKind;
use crate::models::fashion_cnn::{FashionCnn, FashionCnnConfig};
use crate::models::nanogpt::NanoGptConfig;
use crate::models::resnet::{ResNet, ResNetConfig};
use burn::nn::loss::CrossEntropyLossConfig;

/// Options of `padam bench train`.
#[derive(Args, Debug)]
pub struct TrainBenchArgs {
    /// Backend to run on.
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendKind,
    /// Workloads: `fashion_cnn_<batch>`, `resnet18_<batch>`, `nanogpt_<batch>x256` (the
    /// PyTorch script's are fashion_cnn_128, fashion_cnn_512, resnet18_128, resnet18_512 and
    /// nanogpt_64x256; other batch sizes let a run reuse the kernels a training run tuned).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fashion_cnn_128,fashion_cnn_512,resnet18_128,resnet18_512,nanogpt_64x256"
    )]
    pub workloads: Vec<String>,
    /// Optimizers: adamw (burn AdamW, wd 0.1 as the PyTorch script), padam (p 0.8, lambda 1e-3,
    /// non-finite check read every step), padam_deferred (the check read every 10 steps, as
    /// `padam train` does with its default `log_every`), padam_unchecked.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "adamw,padam,padam_deferred,padam_unchecked"
    )]
    pub optimizers: Vec<String>,
    /// Timed steps (after warm-up); the mean is reported, as in the PyTorch script.
    #[arg(long, default_value_t = 30)]
    pub iters: usize,
    /// Warm-up steps (kernel compilation and autotune happen here).
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Also time forward + backward without the optimizer step.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub fwd_bwd: bool,
    /// Write the rows as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// One measured row.
#[derive(Debug, Clone, Serialize)]
pub struct TrainRow {
    /// Workload name (as the PyTorch script prints it).
    pub workload: String,
    /// `adamw`, `padam`, `padam_deferred`, `padam_unchecked` or `fwd_bwd` (no optimizer step).
    pub optimizer: String,
    /// Trainable parameters.
    pub params: usize,
    /// Mean milliseconds per step.
    pub ms_per_step: f64,
    /// Items (images or tokens) per second.
    pub items_per_sec: f64,
    /// Mean host milliseconds per step spent in the forward pass (building the graph and
    /// queueing its kernels).
    pub host_forward_ms: f64,
    /// ... in the backward pass (and collecting the parameters' gradients).
    pub host_backward_ms: f64,
    /// ... in the optimizer step (0 for `fwd_bwd`).
    pub host_step_ms: f64,
}

/// Host time of one timed step, by phase.
#[derive(Debug, Clone, Copy, Default)]
struct HostPhases {
    forward: f64,
    backward: f64,
    step: f64,
}

impl std::ops::AddAssign for HostPhases {
    fn add_assign(&mut self, o: Self) {
        self.forward += o.forward;
        self.backward += o.backward;
        self.step += o.step;
    }
}

/// Run `padam bench train`.
pub fn run(args: &TrainBenchArgs) -> anyhow::Result<()> {
    let rows = crate::with_backend!(args.backend, |B, name| bench_all::<B>(args, name)?);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    }
    Ok(())
}

/// A workload of `--workloads`: the model and its batch size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    FashionCnn { batch: usize },
    ResNet18 { batch: usize },
    NanoGpt { batch: usize },
}

impl Workload {
    /// Parse `fashion_cnn_<batch>`, `resnet18_<batch>` or `nanogpt_<batch>x256`.
    fn parse(s: &str) -> anyhow::Result<Self> {
        let unknown = || {
            anyhow::anyhow!(
                "--workloads: unknown workload `{s}` (known: fashion_cnn_<batch>, \
                 resnet18_<batch>, nanogpt_<batch>x256, e.g. {})",
                DEFAULT_WORKLOADS.join(", ")
            )
        };
        let batch = |b: &str| -> anyhow::Result<usize> {
            match b.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(unknown()),
            }
        };
        if let Some(b) = s.strip_prefix("fashion_cnn_") {
            Ok(Self::FashionCnn { batch: batch(b)? })
        } else if let Some(b) = s.strip_prefix("resnet18_") {
            Ok(Self::ResNet18 { batch: batch(b)? })
        } else if let Some(b) = s
            .strip_prefix("nanogpt_")
            .and_then(|r| r.strip_suffix("x256"))
        {
            Ok(Self::NanoGpt { batch: batch(b)? })
        } else {
            Err(unknown())
        }
    }
}

const DEFAULT_WORKLOADS: [&str; 5] = [
    "fashion_cnn_128",
    "fashion_cnn_512",
    "resnet18_128",
    "resnet18_512",
    "nanogpt_64x256",
];
const OPTIMIZERS: [&str; 4] = ["adamw", "padam", "padam_deferred", "padam_unchecked"];

/// `check_every` of `padam_deferred`: the training loop's default `log_every`.
const DEFERRED_CHECK_EVERY: usize = 10;

fn bench_all<B: AutodiffBackend>(
    args: &TrainBenchArgs,
    backend: &str,
) -> anyhow::Result<Vec<TrainRow>> {
    let workloads = args
        .workloads
        .iter()
        .map(|w| Workload::parse(w))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for o in &args.optimizers {
        anyhow::ensure!(
            OPTIMIZERS.contains(&o.as_str()),
            "--optimizers: unknown optimizer `{o}` (known: {})",
            OPTIMIZERS.join(", ")
        );
    }
    anyhow::ensure!(args.iters > 0, "--iters must be at least 1");
    let device = crate::backend::default_device::<B>();
    println!(
        "padam bench train: backend {backend}, {} warm-up + {} timed steps (mean), random data",
        args.warmup, args.iters
    );
    println!(
        "{:<26} {:<16} {:>8} {:>10} {:>13}   host ms: {:>7} {:>8} {:>7}",
        "workload", "optimizer", "params", "ms/step", "items/s", "forward", "backward", "step"
    );
    let mut rows = Vec::new();
    for w in workloads {
        match w {
            Workload::FashionCnn { batch } => {
                let model = FashionCnnConfig::default().init::<B>(1, &device);
                let loss =
                    image_loss::<B, _>([batch, 1, 28, 28], &device, |m: &FashionCnn<B>, x| {
                        m.forward(x)
                    });
                let name = format!("fashion-cnn bs{batch}");
                rows.extend(bench_workload(args, &name, batch, model, loss, &device));
            }
            Workload::ResNet18 { batch } => {
                let model = ResNetConfig::resnet18(10).init::<B>(1, &device);
                let loss = image_loss::<B, _>([batch, 3, 32, 32], &device, |m: &ResNet<B>, x| {
                    m.forward(x)
                });
                let name = format!("resnet18-cifar bs{batch}");
                rows.extend(bench_workload(args, &name, batch, model, loss, &device));
            }
            Workload::NanoGpt { batch: b } => {
                // The PyTorch script's GPT has no dropout; match it.
                let config = NanoGptConfig {
                    dropout: 0.0,
                    ..NanoGptConfig::default()
                };
                let model = config.init::<B>(1, &device);
                let t = config.block_size;
                let idx = random_tokens::<B>([b, t], config.vocab_size, &device);
                let targets = random_tokens::<B>([b, t], config.vocab_size, &device);
                let loss = move |m: &crate::models::nanogpt::NanoGpt<B>| {
                    m.forward_loss(
                        Tensor::from_inner(idx.clone()),
                        Tensor::from_inner(targets.clone()),
                    )
                    .1
                };
                rows.extend(bench_workload(
                    args,
                    &format!("nanogpt-char bs{b}x{t}"),
                    b * t,
                    model,
                    loss,
                    &device,
                ));
            }
        }
    }
    Ok(rows)
}

/// Cross-entropy of `forward` on one fixed random image batch of `dims` with random labels.
fn image_loss<B: AutodiffBackend, M>(
    dims: [usize; 4],
    device: &B::Device,
    forward: impl Fn(&M, Tensor<B, 4>) -> Tensor<B, 2>,
) -> impl Fn(&M) -> Tensor<B, 1> {
    let x = Tensor::<B::InnerBackend, 4>::random(dims, Distribution::Normal(0.0, 1.0), device);
    let y = random_labels::<B>(dims[0], 10, device);
    move |m: &M| {
        let logits = forward(m, Tensor::from_inner(x.clone()));
        CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits, Tensor::from_inner(y.clone()))
    }
}

fn random_labels<B: AutodiffBackend>(
    n: usize,
    classes: usize,
    device: &B::Device,
) -> Tensor<B::InnerBackend, 1, Int> {
    Tensor::<B::InnerBackend, 1>::random([n], Distribution::Uniform(0.0, classes as f64), device)
        .int()
        .clamp(0, classes as i64 - 1)
}

fn random_tokens<B: AutodiffBackend>(
    dims: [usize; 2],
    vocab: usize,
    device: &B::Device,
) -> Tensor<B::InnerBackend, 2, Int> {
    Tensor::<B::InnerBackend, 2>::random(dims, Distribution::Uniform(0.0, vocab as f64), device)
        .int()
        .clamp(0, vocab as i64 - 1)
}

/// Time every requested optimizer (and forward + backward alone) on one workload.
fn bench_workload<B, M>(
    args: &TrainBenchArgs,
    name: &str,
    items: usize,
    model: M,
    loss: impl Fn(&M) -> Tensor<B, 1>,
    device: &B::Device,
) -> Vec<TrainRow>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Clone,
{
    let params = model.num_params();
    let mut rows = Vec::new();
    let mut push = |optimizer: &str, (secs, host): (f64, HostPhases)| {
        let row = TrainRow {
            workload: name.to_string(),
            optimizer: optimizer.to_string(),
            params,
            ms_per_step: secs * 1e3,
            items_per_sec: items as f64 / secs,
            host_forward_ms: host.forward * 1e3,
            host_backward_ms: host.backward * 1e3,
            host_step_ms: host.step * 1e3,
        };
        println!(
            "{:<26} {:<16} {:>7.2}M {:>10.2} {:>13.0}   host ms: {:>7.2} {:>8.2} {:>7.2}",
            row.workload,
            row.optimizer,
            row.params as f64 / 1e6,
            row.ms_per_step,
            row.items_per_sec,
            row.host_forward_ms,
            row.host_backward_ms,
            row.host_step_ms
        );
        rows.push(row);
    };
    if args.fwd_bwd {
        let m = model.clone();
        let timing = time_steps::<B>(args, device, || forward_backward(&loss, &m).1);
        push("fwd_bwd", timing);
    }
    for opt in &args.optimizers {
        let timing = match opt.as_str() {
            "adamw" => {
                let optim = AdamWConfig::new().with_weight_decay(0.1).init::<B, M>();
                time_training(args, device, model.clone(), optim, &loss)
            }
            _ => {
                let policy = if opt == "padam_unchecked" {
                    NonFinitePolicy::Unchecked
                } else {
                    NonFinitePolicy::Error
                };
                let every = if opt == "padam_deferred" {
                    DEFERRED_CHECK_EVERY
                } else {
                    1
                };
                let optim = PAdamConfig::new()
                    .with_p(0.8)
                    .with_lambda(1e-3)
                    .with_non_finite(policy)
                    .with_check_every(every)
                    .init::<B, M>()
                    .expect("valid bench config");
                time_training(args, device, model.clone(), optim, &loss)
            }
        };
        push(opt, timing);
    }
    rows
}

fn time_training<B, M, O>(
    args: &TrainBenchArgs,
    device: &B::Device,
    model: M,
    mut optim: O,
    loss: &impl Fn(&M) -> Tensor<B, 1>,
) -> (f64, HostPhases)
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    let mut model = Some(model);
    time_steps::<B>(args, device, || {
        let m = model.take().expect("model present between steps");
        let (grads, host) = forward_backward(loss, &m);
        let t = Instant::now();
        model = Some(optim.step(1e-3, m, grads));
        HostPhases {
            step: t.elapsed().as_secs_f64(),
            ..host
        }
    })
}

/// The forward and backward pass of `loss` on `m`: the parameters' gradients, and the host
/// time of each pass.
fn forward_backward<B, M>(
    loss: &impl Fn(&M) -> Tensor<B, 1>,
    m: &M,
) -> (GradientsParams, HostPhases)
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    let t0 = Instant::now();
    let l = loss(m);
    let t1 = Instant::now();
    let grads = GradientsParams::from_grads(l.backward(), m);
    let host = HostPhases {
        forward: (t1 - t0).as_secs_f64(),
        backward: t1.elapsed().as_secs_f64(),
        step: 0.0,
    };
    (grads, host)
}

/// Mean seconds of `step` over `args.iters` calls after `args.warmup`, between device syncs,
/// and the mean of the host phases it reports.
fn time_steps<B: AutodiffBackend>(
    args: &TrainBenchArgs,
    device: &B::Device,
    mut step: impl FnMut() -> HostPhases,
) -> (f64, HostPhases) {
    for _ in 0..args.warmup {
        step();
    }
    B::sync(device).expect("device sync");
    let start = Instant::now();
    let mut host = HostPhases::default();
    for _ in 0..args.iters {
        host += step();
    }
    B::sync(device).expect("device sync");
    let n = args.iters as f64;
    let mean = HostPhases {
        forward: host.forward / n,
        backward: host.backward / n,
        step: host.step / n,
    };
    (start.elapsed().as_secs_f64() / n, mean)
}

#[cfg(test)]
mod tests {
    use super::Workload;

    #[test]
    fn workloads_parse_any_batch_and_refuse_the_rest() {
        assert_eq!(
            Workload::parse("resnet18_400").unwrap(),
            Workload::ResNet18 { batch: 400 }
        );
        assert_eq!(
            Workload::parse("fashion_cnn_128").unwrap(),
            Workload::FashionCnn { batch: 128 }
        );
        assert_eq!(
            Workload::parse("nanogpt_64x256").unwrap(),
            Workload::NanoGpt { batch: 64 }
        );
        for bad in [
            "resnet18_0",
            "resnet18_",
            "resnet50_128",
            "nanogpt_64x128",
            "x",
        ] {
            let e = Workload::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("resnet18_<batch>"), "{e}");
        }
    }
}
