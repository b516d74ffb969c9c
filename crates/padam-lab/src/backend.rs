//! The backends the binary runs on: burn-flex on CPU (default), CUDA behind `--features cuda`,
//! and the one name for them that configs and command-line flags share.

use serde::{Deserialize, Serialize};

/// CPU backend (burn-flex).
pub type Cpu = burn::backend::Flex;

/// CUDA backend (with fusion and autotune), when built with `--features cuda`.
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda;

/// Which backend a run or a benchmark uses (`backend = "cuda"` in a config, `--backend cuda`
/// on the command line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// burn-flex on the CPU (always available).
    #[default]
    Cpu,
    /// CUDA (a binary built with `--features cuda`).
    Cuda,
}

impl BackendKind {
    /// The name as written in a config or flag (`cpu`, `cuda`).
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
        }
    }

    /// An error unless this binary can run the backend.
    pub fn available(self) -> anyhow::Result<()> {
        if self == BackendKind::Cuda && !cfg!(feature = "cuda") {
            anyhow::bail!(CUDA_MISSING);
        }
        Ok(())
    }
}

/// What a binary built without the `cuda` feature says when asked for CUDA.
pub const CUDA_MISSING: &str = "backend cuda: this padam binary was built without CUDA; \
     rebuild with `cargo build --release -p padam-lab --features cuda`";
