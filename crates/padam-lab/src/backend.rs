//! The backends the binary runs on: burn-flex on CPU (default), CUDA behind `--features cuda`,
//! burn's LibTorch backend behind `--features tch`, and the one name for them that configs and
//! command-line flags share.

use serde::{Deserialize, Serialize};

/// CPU backend (burn-flex).
pub type Cpu = burn::backend::Flex;

/// CUDA backend (with fusion and autotune), when built with `--features cuda`.
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda;

/// burn's LibTorch backend (f32), when built with `--features tch`: PyTorch's own kernels
/// (cuDNN, cuBLAS) on the first CUDA device libtorch sees, else libtorch's CPU kernels.
#[cfg(feature = "tch")]
pub type Tch = burn::backend::LibTorch<f32>;

/// Which backend a run or a benchmark uses (`backend = "cuda"` in a config, `--backend cuda`
/// on the command line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// burn-flex on the CPU (always available).
    #[default]
    Cpu,
    /// CUDA through burn's CubeCL kernels (a binary built with `--features cuda`).
    Cuda,
    /// burn's LibTorch backend: PyTorch's kernels (a binary built with `--features tch`).
    Tch,
}

impl BackendKind {
    /// The name as written in a config or flag (`cpu`, `cuda`, `tch`).
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
            BackendKind::Tch => "tch",
        }
    }

    /// An error unless this binary can run the backend.
    pub fn available(self) -> anyhow::Result<()> {
        match self {
            BackendKind::Cuda if !cfg!(feature = "cuda") => anyhow::bail!(CUDA_MISSING),
            BackendKind::Tch if !cfg!(feature = "tch") => anyhow::bail!(TCH_MISSING),
            _ => Ok(()),
        }
    }
}

/// What a binary built without the `cuda` feature says when asked for CUDA.
pub const CUDA_MISSING: &str = "backend cuda: this padam binary was built without CUDA; \
     rebuild with `cargo build --release -p padam-lab --features cuda`";

/// What a binary built without the `tch` feature says when asked for LibTorch.
pub const TCH_MISSING: &str = "backend tch: this padam binary was built without LibTorch; \
     rebuild with `bash scripts/build-tch.sh` (README, \"LibTorch backend\")";

/// Run `$body` with `$B` the autodiff backend `$kind` names and `$name` its description, or
/// return the error that this binary lacks it. One place decides which burn type each
/// [`BackendKind`] is; every command that trains or steps goes through it.
#[macro_export]
macro_rules! with_backend {
    ($kind:expr, |$B:ident, $name:ident| $body:expr) => {
        match $kind {
            $crate::backend::BackendKind::Cpu => {
                type $B = burn::backend::Autodiff<$crate::backend::Cpu>;
                let $name = "cpu (burn-flex)";
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::backend::BackendKind::Cuda => {
                type $B = burn::backend::Autodiff<$crate::backend::Cuda>;
                let $name = "cuda (fusion, autotune)";
                $body
            }
            #[cfg(not(feature = "cuda"))]
            $crate::backend::BackendKind::Cuda => {
                anyhow::bail!($crate::backend::CUDA_MISSING)
            }
            #[cfg(feature = "tch")]
            $crate::backend::BackendKind::Tch => {
                type $B = burn::backend::Autodiff<$crate::backend::Tch>;
                let $name = $crate::backend::tch_name();
                $body
            }
            #[cfg(not(feature = "tch"))]
            $crate::backend::BackendKind::Tch => anyhow::bail!($crate::backend::TCH_MISSING),
        }
    };
}

/// The device a run or benchmark on `B` uses when none is named: the backend's default, except
/// on LibTorch, whose default is the CPU: there the first CUDA device when libtorch sees one.
pub fn default_device<B: burn::tensor::backend::Backend>() -> B::Device {
    #[cfg(feature = "tch")]
    {
        use std::any::Any;
        let mut device = B::Device::default();
        if let Some(d) =
            (&mut device as &mut dyn Any).downcast_mut::<burn::backend::libtorch::LibTorchDevice>()
        {
            *d = tch_device();
        }
        device
    }
    #[cfg(not(feature = "tch"))]
    B::Device::default()
}

/// LibTorch's device: CUDA 0 when libtorch sees a GPU (with cuDNN's autotuner on, as PyTorch's
/// peer benchmark runs, and one libtorch CPU thread), else the CPU.
#[cfg(feature = "tch")]
fn tch_device() -> burn::backend::libtorch::LibTorchDevice {
    use burn::backend::libtorch::LibTorchDevice;
    static INIT: std::sync::Once = std::sync::Once::new();
    if tch::Cuda::is_available() {
        INIT.call_once(|| {
            tch::Cuda::cudnn_set_benchmark(true);
            // libtorch's OpenMP workers spin after each of the few CPU ops a GPU run makes and
            // starve rayon's threads, which build the batches (augmentation, JPEG decoding):
            // with one thread Fashion-MNIST's host batch took 1.7 ms per step instead of 7.0
            // (docs/BENCHMARKS.md, session 22).
            tch::set_num_threads(1);
        });
        LibTorchDevice::Cuda(0)
    } else {
        LibTorchDevice::Cpu
    }
}

/// The variable that makes libtorch run f32 matmuls on TF32 tensor cores (PyTorch's
/// `allow_tf32 = True`, which the peer benchmark sets; burn's CUDA backend uses TF32 too).
#[cfg(feature = "tch")]
pub const TF32_VAR: &str = "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE";

/// Called first thing in `main` of a `tch` build: libtorch reads [`TF32_VAR`] once, when its
/// global context is created (possibly before `main`), and tch offers no setter, so when the
/// variable is unset the process runs itself again with it set to 1 (docs/BENCHMARKS.md has
/// what it is worth). A value the user set is kept, so
/// `TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=0` keeps full-f32 matmuls.
#[cfg(all(feature = "tch", unix))]
pub fn prepare_libtorch() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(TF32_VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(TF32_VAR, "1")
        .exec();
    // `exec` returns only when it failed: go on, with full-f32 matmuls.
    eprintln!("warning: could not restart with {TF32_VAR}=1 ({err}); matmuls run in full f32");
}

/// How benchmarks name the LibTorch backend: with the device [`default_device`] gives it, and
/// whose layers the models run there (`models::ops`: PyTorch's, unless turned off).
#[cfg(feature = "tch")]
pub fn tch_name() -> &'static str {
    let native = crate::models::ops::native_on::<burn::backend::Autodiff<Tch>>();
    match (tch_device(), native) {
        (burn::backend::libtorch::LibTorchDevice::Cpu, true) => {
            "tch (libtorch, cpu, PyTorch layers)"
        }
        (burn::backend::libtorch::LibTorchDevice::Cpu, false) => "tch (libtorch, cpu, burn layers)",
        (_, true) => "tch (libtorch, cuda:0, PyTorch layers)",
        (_, false) => "tch (libtorch, cuda:0, burn layers)",
    }
}
