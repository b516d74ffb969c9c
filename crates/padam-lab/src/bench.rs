//! `padam bench ...` (placeholder).
use clap::Subcommand;

/// Benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// One optimizer step over model-shaped parameters.
    Step,
}

/// Run a benchmark.
pub fn run(_cmd: BenchCommand) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
