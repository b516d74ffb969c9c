//! `padam bench ...`: measured numbers, one device run at a time.
//!
//! - `bench step`: one optimizer step over the parameter shapes of ResNet18 (CIFAR-10 head,
//!   11.18M) and GPT-2 small (124M), for burn AdamW, burn Adam, PAdam and pSGD on one backend in
//!   one run: median ms/step, achieved GB/s and the ratio to the bandwidth floor (bytes each
//!   optimizer must move at the measured copy bandwidth of the device).
//! - `bench verify`: the step of every optimizer on this backend against the float64 reference
//!   on random tensors with exact zeros and tiny values (the GPU correctness check).
//! - `bench infer`: inference of exported models on the CPU, burn-flex dense against the
//!   `infer` wing's sparse engine and compacted models.

mod host_profile;
mod infer;
mod step;
mod train;
mod verify;

pub use host_profile::{SpanTimes, SpanTotal};
pub use infer::InferBenchArgs;
pub use step::{gpt2_shapes, resnet18_shapes, StepRow};
pub use train::TrainBenchArgs;

use clap::{Args, Subcommand};

use crate::backend::BackendKind;
use step::step_bench;
use verify::verify;

/// Benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// One optimizer step over ResNet18 and GPT-2 parameter shapes.
    Step(StepArgs),
    /// Check every optimizer's step on this backend against the float64 reference.
    Verify(VerifyArgs),
    /// Training-step throughput of the three workloads on random data (vs PyTorch's script).
    Train(TrainBenchArgs),
    /// Inference latency and throughput of exported models on the CPU: burn-flex dense, the
    /// sparse engine, the compacted model; bytes on disk and in memory.
    Infer(InferBenchArgs),
}

/// Options of `padam bench step`.
#[derive(Args, Debug)]
pub struct StepArgs {
    /// Backend to run on.
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendKind,
    /// Parameter-shape sets to time: resnet18, gpt2, and gpt2_host (GPT-2's 148 tensors at width 8:
    /// the per-tensor host work alone).
    #[arg(long, value_delimiter = ',', default_value = "resnet18,gpt2")]
    pub shapes: Vec<String>,
    /// Optimizers to time: burn_adamw, burn_adam, padam (the fused kernel where the backend
    /// has it: on CUDA the multi-tensor kernel), padam_deferred (the non-finite check read every
    /// 10 steps), padam_unchecked (no non-finite check), padam_per_tensor,
    /// padam_deferred_per_tensor and padam_unchecked_per_tensor (the same with one kernel per
    /// tensor), padam_tensor_ops and
    /// padam_tensor_ops_unchecked (the portable tensor-op path), padam_lambda0 (Adam + check,
    /// no decay math), psgd_momentum (the fused decay where the backend has it) and
    /// psgd_momentum_tensor_ops (the decay as tensor ops). Two rows that split the per-tensor
    /// cost, not in the default list: burn_sgd (plain SGD, `w - lr g`: one element-wise kernel per tensor after
    /// fusion, 12 bytes/param) and walk_only (burn's optimizer adaptor walking the module and
    /// handing every tensor back unchanged: no kernel at all, only the per-tensor host work and
    /// the sync).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "burn_adamw,burn_adam,padam,padam_deferred,padam_unchecked,padam_per_tensor,padam_deferred_per_tensor,padam_unchecked_per_tensor,padam_tensor_ops,padam_tensor_ops_unchecked,padam_lambda0,psgd_momentum,psgd_momentum_tensor_ops"
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
    /// whole `Optimizer::step` call, `bench.sync`: the wait for the device after it, and the
    /// library's `step.*` and `fused.*` spans, listed in docs/ARCHITECTURE.md) and print it
    /// under each row (the spans add their own small cost to the row's time).
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
    // `--host-profile` installs its own subscriber, with the same warnings beside its timer.
    if !matches!(&cmd, BenchCommand::Step(args) if args.host_profile) {
        warnings_to_stderr();
    }
    match cmd {
        BenchCommand::Step(args) => {
            crate::with_backend!(args.backend, |B, name| step_bench::<B>(&args, name))
        }
        BenchCommand::Train(args) => train::run(&args),
        BenchCommand::Infer(args) => infer::run(&args),
        BenchCommand::Verify(args) => {
            crate::with_backend!(args.backend, |B, _name| verify::<B>(&args))
        }
    }
}

/// The library's warnings (a fused step that fell back to tensor ops, a kernel that could not
/// be loaded) on stderr, so that a bench's numbers never silently come from another path.
/// Nothing when a global subscriber is already set.
fn warnings_to_stderr() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .try_init();
}
