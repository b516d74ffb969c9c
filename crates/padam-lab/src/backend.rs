//! The backends the binary runs on: burn-flex on CPU (default), CUDA behind `--features cuda`.

/// CPU backend (burn-flex).
pub type Cpu = burn::backend::Flex;

/// CUDA backend (with fusion and autotune), when built with `--features cuda`.
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda;
