//! `padam toy` (placeholder).
use clap::Args;

/// Options of `padam toy`.
#[derive(Args, Debug)]
pub struct ToyArgs {}

/// Run the toy.
pub fn run(_args: ToyArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
