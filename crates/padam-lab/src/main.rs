//! `padam`: train, measure and compare sparse models with p-norm decoupled weight decay.

use clap::{Parser, Subcommand};

use padam_lab::demo::toy;
use padam_lab::runs::{export, plot, report, sweep};
use padam_lab::{bench, demo, infer, train};

/// padam: p-norm decoupled weight decay (pWD) for burn.
#[derive(Parser, Debug)]
#[command(name = "padam", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a small MLP on the built-in digits data with AdamW and PAdam, side by side.
    Demo(demo::DemoArgs),
    /// The Higgs-potential toy of the paper: plain GD + pWD, trajectory printed and as CSV.
    Toy(toy::ToyArgs),
    /// Train one model from a TOML config (configs/), with checkpoints and exact --resume.
    Train(train::TrainArgs),
    /// Figures from run directories: loss, accuracy, sparsity, magnitude CDF, per-tensor
    /// sparsity, accuracy vs sparsity (PNG and SVG).
    Plot(plot::PlotArgs),
    /// Train a grid of config overrides (each run resumable, finished runs skipped), then a
    /// table (markdown, CSV) and the accuracy-vs-sparsity plot with the Pareto front.
    Sweep(sweep::SweepArgs),
    /// One self-contained HTML report (figures inlined, metrics, configs, versions) of runs.
    Report(report::ReportArgs),
    /// Write a run's trained weights as safetensors, dense and sparse (indices + values).
    Export(export::ExportArgs),
    /// Reload a `padam export` file (either form), evaluate it, compare with the run.
    Eval(export::EvalArgs),
    /// Cut a model's structurally zero units (neurons, channels, heads) out, print what
    /// fraction of each tensor went, write the smaller dense model for the `infer` engine.
    Compact(infer::CompactArgs),
    /// Text from a trained nanoGPT (run directory or export), on the sparse engine or
    /// burn-flex's dense forward: prompt, tokens, temperature, top-k, seed.
    Sample(infer::SampleArgs),
    /// Benchmarks (optimizer step over real model shapes).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> std::process::ExitCode {
    #[cfg(all(feature = "tch", unix))]
    padam_lab::backend::prepare_libtorch();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the whole cause chain on one line, without a backtrace.
            eprintln!("error: {e:#}");
            if e.downcast_ref::<train::Interrupted>().is_some() {
                // 128 + SIGINT, as a shell reports a process stopped by Ctrl-C
                std::process::ExitCode::from(130)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Toy(args) => toy::run(args),
        Command::Train(args) => train::run(args),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Plot(args) => plot::run(&args).map(|written| {
            for w in written {
                println!("{}", w.display());
            }
        }),
        Command::Sweep(args) => sweep::run(&args).map(|_| ()),
        Command::Report(args) => report::run(&args).map(|_| ()),
        Command::Export(args) => export::export(&args).map(|_| ()),
        Command::Eval(args) => export::eval(&args).map(|_| ()),
        Command::Compact(args) => infer::compact_run(&args).map(|_| ()),
        Command::Sample(args) => infer::sample(&args).map(|s| {
            println!("{}{}", args.prompt, s.text);
            let engine = match args.engine {
                infer::EngineKind::Sparse => "sparse engine",
                infer::EngineKind::Dense => "burn-flex dense",
            };
            eprintln!(
                "{} tokens, {:.1} tokens/s ({engine})",
                args.tokens, s.tokens_per_s
            );
        }),
    }
}
