//! `padam bench step`: one optimizer step over real model shapes, timed.

use std::time::Instant;

use burn::module::{Module, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{
    AdamConfig, AdamWConfig, GradientsParams, LearningRate, Optimizer, SgdConfig, SimpleOptimizer,
};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Tensor};
use padam::{NonFinitePolicy, PAdamConfig, PSgdConfig};
use serde::Serialize;

use super::StepArgs;

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
    gpt2_like(768, 50304, 1024)
}

/// GPT-2's 148 tensors, ranks and order at width 8 (vocab 16, context 8; 10,672 parameters):
/// almost no arithmetic, so a step's time is its per-tensor host work (the walk, the states,
/// the launches), which on a GPU does not shrink with the tensors.
pub fn gpt2_host_shapes() -> Vec<Vec<usize>> {
    gpt2_like(8, 16, 8)
}

fn gpt2_like(d: usize, vocab: usize, ctx: usize) -> Vec<Vec<usize>> {
    let layers = 12;
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
    /// Which implementation ran: burn, tensor ops, fused kernel, multi-tensor or fused decay.
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
        .then(super::host_profile::install)
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

pub(super) fn step_bench<B: AutodiffBackend>(
    args: &StepArgs,
    backend_name: &str,
) -> anyhow::Result<()> {
    let device = crate::backend::default_device::<B>();
    // A GPU's copy bandwidth needs a buffer far larger than its caches.
    let bw_numel = if args.backend != crate::backend::BackendKind::Cpu {
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
            "gpt2_host" => gpt2_host_shapes(),
            other => {
                anyhow::bail!(
                    "--shapes: unknown shape set `{other}` (expected resnet18, gpt2 or gpt2_host)"
                )
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
                "padam" | "padam_deferred" | "padam_unchecked" | "padam_per_tensor"
                | "padam_deferred_per_tensor" | "padam_unchecked_per_tensor" | "padam_tensor_ops"
                | "padam_tensor_ops_unchecked" | "padam_lambda0" => {
                    // `_per_tensor`: the fused step with one kernel per tensor (the default on
                    // CUDA is the multi-tensor kernel).
                    let base = name.trim_end_matches("_per_tensor");
                    let lambda = if base == "padam_lambda0" { 0.0 } else { 1e-2 };
                    let policy = if base.ends_with("unchecked") {
                        NonFinitePolicy::Unchecked
                    } else {
                        NonFinitePolicy::Error
                    };
                    let o = PAdamConfig::new()
                        .with_p(0.8)
                        .with_lambda(lambda)
                        .with_non_finite(policy)
                        .with_check_every(if base == "padam_deferred" { 10 } else { 1 })
                        .with_fused_kernel(!base.starts_with("padam_tensor_ops"))
                        .with_multi_tensor(!name.ends_with("_per_tensor"))
                        .init()?;
                    path = if o.uses_multi_tensor_kernel() {
                        "multi-tensor"
                    } else if o.uses_fused_kernel() {
                        "fused kernel"
                    } else {
                        "tensor ops"
                    };
                    (28, time_steps(o, m, &grads, args, &device)?)
                }
                "psgd_momentum" | "psgd_momentum_tensor_ops" => {
                    let o = PSgdConfig::new()
                        .with_momentum(0.9)
                        .with_p(0.8)
                        .with_lambda(1e-2)
                        .with_fused_kernel(name == "psgd_momentum")
                        .init()?;
                    path = if o.uses_fused_decay() {
                        "fused decay"
                    } else {
                        "tensor ops"
                    };
                    (20, time_steps(o, m, &grads, args, &device)?)
                }
                "burn_sgd" => (12, time_steps(SgdConfig::new().init(), m, &grads, args, &device)?),
                "walk_only" => {
                    let o = OptimizerAdaptor::from(Unchanged);
                    (0, time_steps(o, m, &grads, args, &device)?)
                }
                other => anyhow::bail!(
                    "--optimizers: unknown optimizer `{other}` (expected burn_adamw, burn_adam, padam, padam_deferred, padam_unchecked, padam_per_tensor, padam_deferred_per_tensor, padam_unchecked_per_tensor, padam_tensor_ops, padam_tensor_ops_unchecked, padam_lambda0, psgd_momentum, psgd_momentum_tensor_ops, burn_sgd or walk_only)"
                ),
            };
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
