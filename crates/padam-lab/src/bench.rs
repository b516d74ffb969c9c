//! `padam bench ...`: measured numbers, one device run at a time.
//!
//! - `bench step`: one optimizer step over the parameter shapes of ResNet18 (CIFAR-10 head,
//!   11.18M) and GPT-2 small (124M), for burn AdamW, burn Adam, PAdam and pSGD on one backend in
//!   one run: median ms/step, achieved GB/s and the ratio to the bandwidth floor (bytes each
//!   optimizer must move at the measured copy bandwidth of the device).
//! - `bench verify`: the step of every optimizer on this backend against the float64 reference
//!   on random tensors with exact zeros and tiny values (the GPU correctness check).

use std::time::Instant;

use burn::module::{Module, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{
    AdaGradConfig, AdamConfig, AdamWConfig, GradientsParams, LearningRate, Optimizer,
    RmsPropConfig, SgdConfig, SimpleOptimizer,
};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor, TensorData};
use clap::{Args, Subcommand, ValueEnum};
use padam::reference::{self, AdamParams, Decay, SgdParams};
use padam::{NonFinitePolicy, PAdamConfig, PSgdConfig, PWdConfig, Schedule};
use serde::Serialize;

/// Benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// One optimizer step over ResNet18 and GPT-2 parameter shapes.
    Step(StepArgs),
    /// Check every optimizer's step on this backend against the float64 reference.
    Verify(VerifyArgs),
    /// Training-step throughput of the three workloads on random data (vs PyTorch's script).
    Train(crate::bench_train::TrainBenchArgs),
}

/// Which backend a benchmark runs on.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// burn-flex on the CPU.
    Cpu,
    /// CUDA (binary built with `--features cuda`).
    Cuda,
}

/// Options of `padam bench step`.
#[derive(Args, Debug)]
pub struct StepArgs {
    /// Backend to run on.
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendKind,
    /// Parameter-shape sets to time (resnet18, gpt2).
    #[arg(long, value_delimiter = ',', default_value = "resnet18,gpt2")]
    pub shapes: Vec<String>,
    /// Optimizers to time: burn_adamw, burn_adam, padam (the fused kernel where the backend
    /// has it), padam_deferred (the non-finite check read every 10 steps), padam_unchecked
    /// (no non-finite check), padam_tensor_ops and
    /// padam_tensor_ops_unchecked (the portable tensor-op path), padam_lambda0 (Adam + check,
    /// no decay math), psgd_momentum. Two rows that split the per-tensor cost, not in the
    /// default list: burn_sgd (plain SGD, `w - lr g`: one element-wise kernel per tensor after
    /// fusion, 12 bytes/param) and walk_only (burn's optimizer adaptor walking the module and
    /// handing every tensor back unchanged: no kernel at all, only the per-tensor host work and
    /// the sync).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "burn_adamw,burn_adam,padam,padam_deferred,padam_unchecked,padam_tensor_ops,padam_tensor_ops_unchecked,padam_lambda0,psgd_momentum"
    )]
    pub optimizers: Vec<String>,
    /// Timed steps per optimizer (after warm-up); the median is reported.
    #[arg(long, default_value_t = 30)]
    pub iters: usize,
    /// Warm-up steps per optimizer (kernel compilation and autotune happen here).
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Write the rows as JSON here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Also sum the host time of padam's step spans over the timed steps (`bench.step`: the
    /// whole `Optimizer::step` call, `bench.sync`: the wait for the device after it, `step.walk`,
    /// `step.read`, `fused.prepare`, `fused.queue`, `fused.execute`, `fused.alloc`,
    /// `fused.launch`, `fused.record`) and print it under each row (the spans add their own
    /// small cost to the row's time).
    #[arg(long)]
    pub host_profile: bool,
}

/// Options of `padam bench verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Backend to run on.
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendKind,
    /// Elements per random tensor.
    #[arg(long, default_value_t = 4096)]
    pub numel: usize,
    /// Steps per optimizer.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Random seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

/// Run a benchmark.
pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Step(args) => match args.backend {
            BackendKind::Cpu => {
                step_bench::<burn::backend::Autodiff<crate::backend::Cpu>>(&args, "cpu (burn-flex)")
            }
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => {
                step_bench::<burn::backend::Autodiff<crate::backend::Cuda>>(&args, "cuda")
            }
            #[cfg(not(feature = "cuda"))]
            BackendKind::Cuda => anyhow::bail!(CUDA_MISSING),
        },
        BenchCommand::Train(args) => crate::bench_train::run(&args),
        BenchCommand::Verify(args) => match args.backend {
            BackendKind::Cpu => verify::<burn::backend::Autodiff<crate::backend::Cpu>>(&args),
            #[cfg(feature = "cuda")]
            BackendKind::Cuda => verify::<burn::backend::Autodiff<crate::backend::Cuda>>(&args),
            #[cfg(not(feature = "cuda"))]
            BackendKind::Cuda => anyhow::bail!(CUDA_MISSING),
        },
    }
}

#[cfg(not(feature = "cuda"))]
pub(crate) const CUDA_MISSING: &str =
    "--backend cuda: this padam binary was built without CUDA; rebuild with `cargo build --release --features cuda`";

/// A bag of parameters with the shapes of a real model, so optimizers see the same tensors.
#[derive(Module, Debug)]
pub struct ParamBank<B: Backend> {
    v1: Vec<Param<Tensor<B, 1>>>,
    v2: Vec<Param<Tensor<B, 2>>>,
    v4: Vec<Param<Tensor<B, 4>>>,
}

/// Parameter shapes of torchvision's ResNet18 with 10 classes (11,181,642 parameters).
pub fn resnet18_shapes() -> Vec<Vec<usize>> {
    let mut s: Vec<Vec<usize>> = vec![vec![64, 3, 7, 7], vec![64], vec![64]];
    let mut c_in = 64;
    for (stage, c) in [64usize, 128, 256, 512].into_iter().enumerate() {
        for block in 0..2 {
            let first_in = if block == 0 { c_in } else { c };
            s.extend([
                vec![c, first_in, 3, 3],
                vec![c],
                vec![c],
                vec![c, c, 3, 3],
                vec![c],
                vec![c],
            ]);
            if block == 0 && stage > 0 {
                s.extend([vec![c, c_in, 1, 1], vec![c], vec![c]]);
            }
        }
        c_in = c;
    }
    s.extend([vec![10, 512], vec![10]]);
    s
}

/// Parameter shapes of GPT-2 small (vocab padded to 50304, context 1024), as the PyTorch bench.
pub fn gpt2_shapes() -> Vec<Vec<usize>> {
    let (d, layers, vocab, ctx) = (768usize, 12, 50304, 1024);
    let mut s = vec![vec![vocab, d], vec![ctx, d]];
    for _ in 0..layers {
        s.extend([
            vec![d],
            vec![d],
            vec![3 * d, d],
            vec![3 * d],
            vec![d, d],
            vec![d],
            vec![d],
            vec![d],
            vec![4 * d, d],
            vec![4 * d],
            vec![d, 4 * d],
            vec![d],
        ]);
    }
    s.extend([vec![d], vec![d]]);
    s
}

fn bank<B: AutodiffBackend>(
    shapes: &[Vec<usize>],
    device: &B::Device,
) -> (ParamBank<B>, GradBank<B>) {
    let mut bank = ParamBank {
        v1: Vec::new(),
        v2: Vec::new(),
        v4: Vec::new(),
    };
    let mut grads = GradBank::default();
    let w = Distribution::Normal(0.0, 0.05);
    let g = Distribution::Normal(0.0, 1e-3);
    for shape in shapes {
        match shape.len() {
            1 => {
                let p = Param::from_tensor(Tensor::<B, 1>::random([shape[0]], w, device));
                grads.g1.push((p.id, Tensor::random([shape[0]], g, device)));
                bank.v1.push(p);
            }
            2 => {
                let dims = [shape[0], shape[1]];
                let p = Param::from_tensor(Tensor::<B, 2>::random(dims, w, device));
                grads.g2.push((p.id, Tensor::random(dims, g, device)));
                bank.v2.push(p);
            }
            4 => {
                let dims = [shape[0], shape[1], shape[2], shape[3]];
                let p = Param::from_tensor(Tensor::<B, 4>::random(dims, w, device));
                grads.g4.push((p.id, Tensor::random(dims, g, device)));
                bank.v4.push(p);
            }
            n => panic!("no rank-{n} parameters in the benchmark shapes"),
        }
    }
    (bank, grads)
}

/// Fixed gradients, re-registered for every step (the optimizer consumes them).
pub struct GradBank<B: AutodiffBackend> {
    g1: Vec<(ParamId, Tensor<B::InnerBackend, 1>)>,
    g2: Vec<(ParamId, Tensor<B::InnerBackend, 2>)>,
    g4: Vec<(ParamId, Tensor<B::InnerBackend, 4>)>,
}

impl<B: AutodiffBackend> Default for GradBank<B> {
    fn default() -> Self {
        Self {
            g1: Vec::new(),
            g2: Vec::new(),
            g4: Vec::new(),
        }
    }
}

impl<B: AutodiffBackend> GradBank<B> {
    fn params(&self) -> GradientsParams {
        let mut gp = GradientsParams::new();
        for (id, g) in &self.g1 {
            gp.register(*id, g.clone());
        }
        for (id, g) in &self.g2 {
            gp.register(*id, g.clone());
        }
        for (id, g) in &self.g4 {
            gp.register(*id, g.clone());
        }
        gp
    }
}

/// One row of `bench step`.
#[derive(Debug, Clone, Serialize)]
pub struct StepRow {
    /// Shape set.
    pub shapes: String,
    /// Optimizer.
    pub optimizer: String,
    /// Which implementation ran: burn, tensor ops or fused kernel.
    pub path: String,
    /// Parameters stepped.
    pub params: usize,
    /// Median ms per step.
    pub ms: f64,
    /// Bytes the optimizer must move per parameter (f32).
    pub bytes_per_param: usize,
    /// Achieved GB/s for those bytes.
    pub gb_per_s: f64,
    /// The floor (28 bytes/param at the measured copy bandwidth), ms.
    pub floor_28b_ms: f64,
    /// ms / floor.
    pub ratio_to_floor: f64,
    /// With `--host-profile`: host time per span name over the timed steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_spans: Option<Vec<HostSpan>>,
}

/// One span name's host time in a `--host-profile` row, per timed step.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostSpan {
    /// The span (`fused.launch`, ...).
    pub name: &'static str,
    /// Times entered per step.
    pub calls_per_step: f64,
    /// Busy ms per step (inclusive of spans entered inside it).
    pub ms_per_step: f64,
    /// Busy µs per call.
    pub us_per_call: f64,
}

/// A row's timing: the median step and, with `--host-profile`, the span totals.
struct Timing {
    ms: f64,
    spans: Option<Vec<HostSpan>>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn sync<B: Backend>(device: &B::Device) {
    B::sync(device).expect("device synchronisation failed");
}

/// Copy bandwidth in bytes/s: a large elementwise pass (read + write of f32).
fn copy_bandwidth<B: Backend>(device: &B::Device, numel: usize) -> f64 {
    let x = Tensor::<B, 1>::random([numel], Distribution::Default, device);
    let mut times = Vec::new();
    for i in 0..8 {
        sync::<B>(device);
        let t = Instant::now();
        let y = x.clone().add_scalar(1.0);
        sync::<B>(device);
        if i >= 2 {
            times.push(t.elapsed().as_secs_f64());
        }
        drop(y);
    }
    (2 * 4 * numel) as f64 / median(times)
}

fn time_steps<B, O>(
    mut optim: O,
    mut model: ParamBank<B>,
    grads: &GradBank<B>,
    args: &StepArgs,
    device: &B::Device,
) -> anyhow::Result<Timing>
where
    B: AutodiffBackend,
    O: Optimizer<ParamBank<B>, B>,
{
    for _ in 0..args.warmup {
        model = optim.step(1e-3, model, grads.params());
    }
    sync::<B>(device);
    let profile = args
        .host_profile
        .then(crate::host_profile::install)
        .transpose()?;
    if let Some(p) = &profile {
        p.take(); // the warm-up's spans
    }
    let mut times = Vec::with_capacity(args.iters);
    for _ in 0..args.iters {
        let gp = grads.params();
        let t = Instant::now();
        model = tracing::trace_span!("bench.step").in_scope(|| optim.step(1e-3, model, gp));
        tracing::trace_span!("bench.sync").in_scope(|| sync::<B>(device));
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let steps = args.iters as f64;
    let spans = profile.map(|p| {
        p.take()
            .into_iter()
            .map(|t| HostSpan {
                name: t.name,
                calls_per_step: t.count as f64 / steps,
                ms_per_step: t.total_ms / steps,
                us_per_call: t.total_ms * 1e3 / t.count.max(1) as f64,
            })
            .collect()
    });
    Ok(Timing {
        ms: median(times),
        spans,
    })
}

fn step_bench<B: AutodiffBackend>(args: &StepArgs, backend_name: &str) -> anyhow::Result<()> {
    let device = B::Device::default();
    let bw_numel = if backend_name == "cuda" {
        1 << 28
    } else {
        1 << 24
    };
    let bw = copy_bandwidth::<B::InnerBackend>(&device, bw_numel);
    println!(
        "backend {backend_name}; copy bandwidth {:.2} TB/s",
        bw / 1e12
    );
    let mut rows = Vec::new();
    for set in &args.shapes {
        let shapes = match set.as_str() {
            "resnet18" => resnet18_shapes(),
            "gpt2" => gpt2_shapes(),
            other => {
                anyhow::bail!("--shapes: unknown shape set `{other}` (expected resnet18 or gpt2)")
            }
        };
        let n: usize = shapes.iter().map(|s| s.iter().product::<usize>()).sum();
        let floor_ms = 28.0 * n as f64 / bw * 1e3;
        let mut record = |name: &str, path: &str, bytes: usize, timing: Timing| {
            let ms = timing.ms;
            let row = StepRow {
                shapes: set.clone(),
                optimizer: name.to_string(),
                path: path.to_string(),
                params: n,
                ms,
                bytes_per_param: bytes,
                gb_per_s: bytes as f64 * n as f64 / (ms / 1e3) / 1e9,
                floor_28b_ms: floor_ms,
                ratio_to_floor: ms / floor_ms,
                host_spans: timing.spans,
            };
            println!(
                "{:9} {:27} {:12} params={:7.2}M step={:8.3} ms  {:7.1} GB/s  floor(28B/param)={:.3} ms  ratio={:5.2}",
                row.shapes, row.optimizer, row.path, n as f64 / 1e6, row.ms, row.gb_per_s, floor_ms, row.ratio_to_floor
            );
            for h in row.host_spans.iter().flatten() {
                println!(
                    "    host {:14} {:8.3} ms/step  {:7.1} calls/step  {:8.2} us/call",
                    h.name, h.ms_per_step, h.calls_per_step, h.us_per_call
                );
            }
            rows.push(row);
        };
        let (model, grads) = bank::<B>(&shapes, &device);
        for name in &args.optimizers {
            let m = model.clone();
            let mut path = "burn";
            let (bytes, timing) = match name.as_str() {
                "burn_adamw" => {
                    let o = AdamWConfig::new().with_epsilon(1e-8).with_weight_decay(0.1).init();
                    (28, time_steps(o, m, &grads, args, &device)?)
                }
                "burn_adam" => {
                    let o = AdamConfig::new().with_epsilon(1e-8).init();
                    (28, time_steps(o, m, &grads, args, &device)?)
                }
                "padam" | "padam_deferred" | "padam_unchecked" | "padam_tensor_ops"
                | "padam_tensor_ops_unchecked" | "padam_lambda0" => {
                    let lambda = if name == "padam_lambda0" { 0.0 } else { 1e-2 };
                    let policy = if name.ends_with("unchecked") {
                        NonFinitePolicy::Unchecked
                    } else {
                        NonFinitePolicy::Error
                    };
                    let o = PAdamConfig::new()
                        .with_p(0.8)
                        .with_lambda(lambda)
                        .with_non_finite(policy)
                        .with_check_every(if name == "padam_deferred" { 10 } else { 1 })
                        .with_fused_kernel(!name.starts_with("padam_tensor_ops"))
                        .init()?;
                    path = if o.uses_fused_kernel() { "fused kernel" } else { "tensor ops" };
                    (28, time_steps(o, m, &grads, args, &device)?)
                }
                "psgd_momentum" => {
                    let o = PSgdConfig::new().with_momentum(0.9).with_p(0.8).with_lambda(1e-2).init()?;
                    (20, time_steps(o, m, &grads, args, &device)?)
                }
                "burn_sgd" => (12, time_steps(SgdConfig::new().init(), m, &grads, args, &device)?),
                "walk_only" => {
                    let o = OptimizerAdaptor::from(Unchanged);
                    (0, time_steps(o, m, &grads, args, &device)?)
                }
                other => anyhow::bail!(
                    "--optimizers: unknown optimizer `{other}` (expected burn_adamw, burn_adam, padam, padam_deferred, padam_unchecked, padam_tensor_ops, padam_tensor_ops_unchecked, padam_lambda0, psgd_momentum, burn_sgd or walk_only)"
                ),
            };
            if name.starts_with("psgd") {
                path = "tensor ops";
            }
            record(name, path, bytes, timing);
        }
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows)?)
            .map_err(|e| anyhow::anyhow!("--json {}: {e}", path.display()))?;
    }
    Ok(())
}

/// The `walk_only` row's optimizer: every tensor comes back as it went in, so a step is burn's
/// per-tensor host work alone (module walk, gradient lookup, autodiff unwrapping and
/// re-wrapping) plus the sync.
#[derive(Clone)]
struct Unchanged;

impl<B: Backend> SimpleOptimizer<B> for Unchanged {
    type State<const D: usize> = ();

    fn step<const D: usize>(
        &self,
        _lr: LearningRate,
        tensor: Tensor<B, D>,
        _grad: Tensor<B, D>,
        _state: Option<()>,
    ) -> (Tensor<B, D>, Option<()>) {
        (tensor, None)
    }

    fn to_device<const D: usize>(state: (), _device: &B::Device) {
        state
    }
}

/// Random weights with exact zeros, tiny and subnormal values mixed in.
fn tricky_values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64) * 2.0 - 1.0
    };
    (0..n)
        .map(|i| match i % 8 {
            0 => 0.0,
            1 => (next() * 1e-39) as f32, // subnormal f32
            2 => (next() * 1e-7) as f32,
            _ => (next() * 0.1) as f32,
        })
        .collect()
}

/// One parameter, the tensor under test.
#[derive(Module, Debug)]
struct One<B: Backend> {
    w: Param<Tensor<B, 1>>,
}

impl<B: AutodiffBackend> One<B> {
    /// A fresh parameter (new id) holding `w0`.
    fn new(w0: &[f32], device: &B::Device) -> Self {
        let data = TensorData::new(w0.to_vec(), [w0.len()]);
        One {
            w: Param::from_tensor(Tensor::from_data(data, device)),
        }
    }

    /// `g` as the gradient of the parameter `id`.
    fn grads(id: ParamId, g: &[f32], device: &B::Device) -> GradientsParams {
        let mut gp = GradientsParams::new();
        let data = TensorData::new(g.to_vec(), [g.len()]);
        gp.register(id, Tensor::<B::InnerBackend, 1>::from_data(data, device));
        gp
    }
}

struct VerifyCase {
    name: &'static str,
    max_rel_err: f64,
    nonzero_at_zero: usize,
    ok: bool,
}

fn run_case<B, O>(
    mut optim: O,
    w0: &[f32],
    grads: &[Vec<f32>],
    lr: f64,
    device: &B::Device,
) -> Vec<f32>
where
    B: AutodiffBackend,
    O: Optimizer<One<B>, B>,
{
    let mut m = One::<B>::new(w0, device);
    for g in grads {
        let gp = One::<B>::grads(m.w.id, g, device);
        m = optim.step(lr, m, gp);
    }
    to_vec(m.w.val())
}

fn verify<B: AutodiffBackend>(args: &VerifyArgs) -> anyhow::Result<()> {
    let device = B::Device::default();
    let n = args.numel;
    let w0 = tricky_values(n, args.seed);
    let grads: Vec<Vec<f32>> = (0..args.steps)
        .map(|k| {
            tricky_values(n, args.seed + 100 + k as u64)
                .iter()
                .map(|g| g * 0.1)
                .collect()
        })
        .collect();
    let grads64: Vec<Vec<f64>> = grads
        .iter()
        .map(|g| g.iter().map(|&x| x as f64).collect())
        .collect();
    let w064: Vec<f64> = w0.iter().map(|&x| x as f64).collect();
    let lr = 1e-2;
    let adam = AdamParams {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    let mut cases = Vec::new();
    let compare = |name: &'static str, got: Vec<f32>, want: Vec<f64>| -> VerifyCase {
        let (mut num, mut den) = (0.0f64, 0.0f64);
        let mut nonzero_at_zero = 0;
        for i in 0..n {
            let d = got[i] as f64 - want[i];
            num += d * d;
            den += want[i] * want[i];
            if want[i] == 0.0 && got[i] != 0.0 {
                nonzero_at_zero += 1;
            }
            if !got[i].is_finite() {
                nonzero_at_zero += 1;
            }
        }
        let rel = (num / den.max(1e-300)).sqrt();
        VerifyCase {
            name,
            max_rel_err: rel,
            nonzero_at_zero,
            ok: rel < 1e-5 && nonzero_at_zero == 0,
        }
    };
    for &(p, lambda) in &[
        (0.5, 1e-2),
        (0.8, 1e-3),
        (1.0, 1e-2),
        (1.5, 1e-1),
        (2.0, 1e-2),
        (3.0, 1e-2),
    ] {
        let decay = Decay::new(p, lambda);
        // PAdam: the fused kernel (where the backend has it) and the tensor-op path.
        let mut st = reference::AdamState::new(n);
        let want = reference_run(&w064, &grads64, |w, g, _| {
            reference::padam_step(w, g, &mut st, lr, &adam, &decay)
        });
        let config = PAdamConfig::new().with_p(p).with_lambda(lambda);
        cases.extend(verify_padam_paths::<B>(
            &format!("padam p={p} lambda={lambda}"),
            &config,
            &w0,
            &grads,
            &want,
            lr,
            &device,
            &compare,
        )?);
        // pSGD with Nesterov momentum
        let sp = SgdParams {
            momentum: 0.9,
            dampening: 0.0,
            nesterov: true,
        };
        let optim = PSgdConfig::new()
            .with_momentum(0.9)
            .with_nesterov(true)
            .with_p(p)
            .with_lambda(lambda)
            .init::<B, One<B>>()?;
        let got = run_case::<B, _>(optim, &w0, &grads, lr, &device);
        let mut st = reference::SgdState::new(n);
        let want = reference_run(&w064, &grads64, |w, g, _| {
            reference::psgd_step(w, g, &mut st, lr, &sp, &decay)
        });
        let mut c = compare("psgd", got, want);
        c.name = leak(format!("psgd nesterov p={p} lambda={lambda}"));
        cases.push(c);
    }
    // Extensions: elastic net, non-adiabatic s, p schedule.
    {
        let decay = Decay {
            p: 0.8,
            lambda: 1e-2,
            lambda2: 0.5,
            s_rate: Some(0.3),
        };
        let optim = PAdamConfig::new()
            .with_p(0.8)
            .with_lambda(1e-2)
            .with_lambda2(0.5)
            .with_s_rate(0.3)
            .init::<B, One<B>>()?;
        let got = run_case::<B, _>(optim, &w0, &grads, lr, &device);
        let mut st = reference::AdamState::new(n);
        let want = reference_run(&w064, &grads64, |w, g, _| {
            reference::padam_step(w, g, &mut st, lr, &adam, &decay)
        });
        let mut c = compare("padam", got, want);
        c.name = "padam elastic-net + non-adiabatic s";
        cases.push(c);

        let decay = Decay {
            p: 0.8,
            lambda: 1e-2,
            lambda2: 0.5,
            s_rate: None,
        };
        let mut st = reference::AdamState::new(n);
        let want = reference_run(&w064, &grads64, |w, g, _| {
            reference::padam_step(w, g, &mut st, lr, &adam, &decay)
        });
        let config = PAdamConfig::new()
            .with_p(0.8)
            .with_lambda(1e-2)
            .with_lambda2(0.5);
        cases.extend(verify_padam_paths::<B>(
            "padam elastic-net",
            &config,
            &w0,
            &grads,
            &want,
            lr,
            &device,
            &compare,
        )?);

        // Outside the decay selection (a vector with matrices-only selection): plain Adam.
        let decay = Decay::new(0.8, 0.0);
        let mut st = reference::AdamState::new(n);
        let want = reference_run(&w064, &grads64, |w, g, _| {
            reference::padam_step(w, g, &mut st, lr, &adam, &decay)
        });
        let config = PAdamConfig::new()
            .with_p(0.8)
            .with_lambda(1e-2)
            .with_selection(padam::ParamSelection::matrices_only());
        cases.extend(verify_padam_paths::<B>(
            "padam, parameter not decayed",
            &config,
            &w0,
            &grads,
            &want,
            lr,
            &device,
            &compare,
        )?);

        let sched = Schedule::p_anneal(0.6, 3);
        let mut st = reference::AdamState::new(n);
        let want = reference_run(&w064, &grads64, |w, g, t| {
            let decay = Decay::new(sched.value(t), 1e-2);
            reference::padam_step(w, g, &mut st, lr, &adam, &decay)
        });
        let config = PAdamConfig::new()
            .with_p_schedule(sched.clone())
            .with_lambda(1e-2);
        cases.extend(verify_padam_paths::<B>(
            "padam p schedule 2 -> 0.6",
            &config,
            &w0,
            &grads,
            &want,
            lr,
            &device,
            &compare,
        )?);
        cases.push(verify_non_finite_refusal::<B>(&w0, &grads, lr, &device)?);
        cases.push(verify_deferred_refusal::<B>(&w0, &grads, lr, &device)?);
    }
    // pWD around other burn optimizers: the base's own step (w_hat) comes from burn on this
    // backend, the decay from the float64 reference.
    cases.push(verify_wrapped::<B, _>(
        "pwd(rmsprop)",
        RmsPropConfig::new().build(),
        &w0,
        &grads,
        lr,
        &device,
    )?);
    cases.push(verify_wrapped::<B, _>(
        "pwd(adagrad)",
        AdaGradConfig::new().build(),
        &w0,
        &grads,
        lr,
        &device,
    )?);

    println!(
        "{:42} {:>12} {:>14}  result",
        "case", "rel. error", "zeros broken"
    );
    let mut failed = 0;
    for c in &cases {
        println!(
            "{:42} {:>12.3e} {:>14}  {}",
            c.name,
            c.max_rel_err,
            c.nonzero_at_zero,
            if c.ok { "ok" } else { "FAIL" }
        );
        failed += usize::from(!c.ok);
    }
    println!("{} passed, {} failed", cases.len() - failed, failed);
    if failed > 0 {
        anyhow::bail!("{failed} optimizer cases differ from the float64 reference");
    }
    Ok(())
}

/// PAdam `config` on this backend through both implementations, each against the float64
/// result `want`, and the two against each other (the fused kernel must compute what the
/// tensor ops compute). The case names say which implementation actually ran.
#[allow(clippy::too_many_arguments)]
fn verify_padam_paths<B: AutodiffBackend>(
    name: &str,
    config: &PAdamConfig,
    w0: &[f32],
    grads: &[Vec<f32>],
    want: &[f64],
    lr: f64,
    device: &B::Device,
    compare: &dyn Fn(&'static str, Vec<f32>, Vec<f64>) -> VerifyCase,
) -> anyhow::Result<Vec<VerifyCase>> {
    let mut results = Vec::new();
    let mut runs = Vec::new();
    for fused in [true, false] {
        let optim = config
            .clone()
            .with_fused_kernel(fused)
            .init::<B, One<B>>()?;
        let path = if optim.uses_fused_kernel() {
            "fused kernel"
        } else {
            "tensor ops"
        };
        if runs.iter().any(|(p, _)| *p == path) {
            continue; // no kernel on this backend: the tensor path already ran
        }
        let got = run_case::<B, _>(optim, w0, grads, lr, device);
        let mut c = compare("padam", got.clone(), want.to_vec());
        c.name = leak(format!("{name} [{path}]"));
        results.push(c);
        runs.push((path, got));
    }
    if runs.len() == 2 {
        let tensor_ops: Vec<f64> = runs[1].1.iter().map(|&x| x as f64).collect();
        let mut c = compare("padam", runs[0].1.clone(), tensor_ops);
        c.name = leak(format!("{name} [fused vs tensor ops]"));
        results.push(c);
    }
    Ok(results)
}

/// After up to two normal steps, a gradient with a NaN and an inf: the default policy must
/// refuse that step, name the parameter with the exact count (2), hand back the weights as
/// they were, and take the next (finite) step normally.
fn verify_non_finite_refusal<B: AutodiffBackend>(
    w0: &[f32],
    grads: &[Vec<f32>],
    lr: f64,
    device: &B::Device,
) -> anyhow::Result<VerifyCase> {
    anyhow::ensure!(!grads.is_empty(), "--steps 0: no steps to verify");
    let normal = grads.len().min(2);
    let mut optim = PAdamConfig::new()
        .with_p(0.8)
        .with_lambda(1e-2)
        .init::<B, One<B>>()?;
    let path = if optim.uses_fused_kernel() {
        "fused kernel"
    } else {
        "tensor ops"
    };
    let n = w0.len();
    let mut m = One::<B>::new(w0, device);
    let grad = |g: &[f32], id| One::<B>::grads(id, g, device);
    for g in grads.iter().take(normal) {
        let id = m.w.id;
        m = optim.step(lr, m, grad(g, id));
    }
    let before = to_vec(m.w.val());
    let mut bad = grads[0].clone();
    bad[5] = f32::NAN;
    bad[n - 1] = f32::INFINITY;
    let id = m.w.id;
    let (ok, detail) = match optim.try_step(lr, m, grad(&bad, id)) {
        Ok(_) => (false, "step taken".to_string()),
        Err(e) => {
            let after = to_vec(e.module.w.val());
            let unchanged = after
                .iter()
                .zip(&before)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            let msg = e.error.to_string();
            let named = matches!(
                &e.error,
                padam::StepFailure::NonFiniteGradient(g)
                    if g.params.len() == 1 && g.params[0].count == Some(2) && g.params[0].path == "w"
            );
            // The optimizer must still step normally afterwards, from the same weights.
            let next = optim.try_step(lr, e.module, grad(&grads[0], id));
            (
                unchanged && named && next.is_ok() && optim.steps() == normal + 1,
                format!("{msg}; weights unchanged: {unchanged}"),
            )
        }
    };
    println!("non-finite refusal [{path}]: {detail}");
    Ok(VerifyCase {
        name: leak(format!("padam refuses a NaN/inf gradient [{path}]")),
        max_rel_err: 0.0,
        nonzero_at_zero: usize::from(!ok),
        ok,
    })
}

/// The deferred check (`check_every` 3): a finite step, a step whose gradient holds a NaN,
/// then a finite step that fills the window. The third step must refuse all three (steps
/// 0..=2, parameter named, no count), hand back `w0` bit for bit and reset the step count;
/// the same with `settle` after the NaN step (window of 10, read early).
fn verify_deferred_refusal<B: AutodiffBackend>(
    w0: &[f32],
    grads: &[Vec<f32>],
    lr: f64,
    device: &B::Device,
) -> anyhow::Result<VerifyCase> {
    anyhow::ensure!(!grads.is_empty(), "--steps 0: no steps to verify");
    let n = w0.len();
    let grad = |g: &[f32], id| One::<B>::grads(id, g, device);
    let mut bad = grads[0].clone();
    bad[n / 2] = f32::NAN;
    let good = &grads[grads.len() - 1];
    let mut path = "tensor ops";
    let mut details = Vec::new();
    let mut ok = true;
    for settle in [false, true] {
        let mut optim = PAdamConfig::new()
            .with_p(0.8)
            .with_lambda(1e-2)
            .with_check_every(if settle { 10 } else { 3 })
            .init::<B, One<B>>()?;
        if optim.uses_fused_kernel() {
            path = "fused kernel";
        }
        let m = One::<B>::new(w0, device);
        let id = m.w.id;
        let mut result = optim.try_step(lr, m, grad(good, id));
        if let Ok(m) = result {
            result = optim.try_step(lr, m, grad(&bad, id));
        }
        if let Ok(m) = result {
            result = if settle {
                optim.settle(m)
            } else {
                optim.try_step(lr, m, grad(good, id))
            };
        }
        let through = if settle { 1 } else { 2 };
        let case_ok = match result {
            Ok(_) => {
                details.push(format!("settle {settle}: not refused"));
                false
            }
            Err(e) => {
                let after = to_vec(e.module.w.val());
                let restored = after
                    .iter()
                    .zip(w0)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                let named = matches!(
                    &e.error,
                    padam::StepFailure::NonFiniteGradient(g)
                        if g.step == 0 && g.through == through && g.params.len() == 1
                            && g.params[0].path == "w" && g.params[0].count.is_none()
                );
                let steps_reset = optim.steps() == 0;
                let settled = match optim.try_step(lr, e.module, grad(good, id)) {
                    Ok(m) => optim.settle(m).is_ok(),
                    Err(_) => false,
                };
                details.push(format!(
                    "settle {settle}: {}; w0 restored: {restored}",
                    e.error
                ));
                restored && named && steps_reset && settled && optim.steps() == 1
            }
        };
        ok &= case_ok;
    }
    println!(
        "deferred non-finite refusal [{path}]: {}",
        details.join(" | ")
    );
    Ok(VerifyCase {
        name: leak(format!(
            "padam refuses a window with a NaN gradient [{path}]"
        )),
        max_rel_err: 0.0,
        nonzero_at_zero: usize::from(!ok),
        ok,
    })
}

/// Run a float64 reference optimizer from `w0` over `grads`; `step(w, g, t)` is one step.
fn reference_run(
    w0: &[f64],
    grads: &[Vec<f64>],
    mut step: impl FnMut(&mut [f64], &[f64], usize),
) -> Vec<f64> {
    let mut w = w0.to_vec();
    for (t, g) in grads.iter().enumerate() {
        step(&mut w, g, t);
    }
    w
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// pWD around `base`: each step, `w_new` must equal `w_hat * factor(w_old)` where `w_hat` comes
/// from the bare base optimizer stepping from the same weights and state.
fn verify_wrapped<B, O>(
    name: &'static str,
    base: O,
    w0: &[f32],
    grads: &[Vec<f32>],
    lr: f64,
    device: &B::Device,
) -> anyhow::Result<VerifyCase>
where
    B: AutodiffBackend,
    O: SimpleOptimizer<B::InnerBackend>,
{
    let (p, lambda) = (0.7, 1e-2);
    let n = w0.len();
    let mut wrapped = PWdConfig::new()
        .with_p(p)
        .with_lambda(lambda)
        .init_with::<B, One<B>, _>(base.clone())?;
    let mut bare = burn::optim::adaptor::OptimizerAdaptor::<O, One<B>, B>::from(base);
    let mut m = One::<B>::new(w0, device);
    let (mut num, mut den, mut broken) = (0.0f64, 0.0f64, 0usize);
    for g in grads {
        let w_old = to_vec(m.w.val());
        let grad = |id| One::<B>::grads(id, g, device);
        // Same parameter id and weights: the bare optimizer's state advances in lockstep.
        let w_hat = to_vec(bare.step(lr, One { w: m.w.clone() }, grad(m.w.id)).w.val());
        let id = m.w.id;
        m = wrapped.step(lr, m, grad(id));
        let got = to_vec(m.w.val());
        for i in 0..n {
            let want =
                w_hat[i] as f64 * reference::factor(w_old[i] as f64, lr, p, lambda, 0.0, None);
            let d = got[i] as f64 - want;
            num += d * d;
            den += want * want;
            if (want == 0.0 && got[i] != 0.0) || !got[i].is_finite() {
                broken += 1;
            }
        }
    }
    let rel = (num / den.max(1e-300)).sqrt();
    Ok(VerifyCase {
        name,
        max_rel_err: rel,
        nonzero_at_zero: broken,
        ok: rel < 1e-5 && broken == 0,
    })
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec()
        .expect("float tensor converts to f32")
}
