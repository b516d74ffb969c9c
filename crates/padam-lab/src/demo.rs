//! `padam demo` (owned by the demo work; placeholder).
use clap::Args;

/// Options of `padam demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {}

/// Run the demo.
pub fn run(_args: DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
