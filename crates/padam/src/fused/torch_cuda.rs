//! The LibTorch step's CUDA kernel (`csrc/torch_step.cu`): Adam and pWD's finish in one pass
//! over a group's flat `w, g, m, v`, with the non-finite check folded in.
//!
//! libtorch offers no way to compile a kernel of our own without a CUDA toolkit at build time,
//! so NVRTC compiles it when a step first runs on a GPU (cudarc, loaded at run time as burn's
//! CUDA backend loads it: libnvrtc must be on the loader path then), and it is launched on the
//! legacy default stream, where burn-tch's PyTorch ops run (neither tch nor burn sets another),
//! so it is ordered with them. PyTorch uses the device's primary context, which cudarc retains;
//! the thread's current context is restored after each use, so on a machine of several GPUs
//! PyTorch's current device does not move. Where any of this fails (no libnvrtc, a compile or
//! launch error, tensors it does not take), the caller steps as before (PyTorch's fused Adam
//! and the finish as tensor ops), after one warning. Written without a GPU at hand: off unless
//! `PADAM_TCH_KERNEL=1` ([`enabled`]) until it has been verified and measured on one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{
    result::ctx, sys::CUcontext, CudaContext, CudaFunction, CudaStream, DeviceRepr, LaunchConfig,
    PushKernelArg,
};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};
use tch::{Device, Kind, Tensor};

use super::StepScalars;

const SOURCE: &str = include_str!("../../csrc/torch_step.cu");
const NAME: &str = "padam_adam_pwd";
const THREADS: u32 = 256;
/// Elements per thread of a launch (its grid-stride loop), so that large groups do not need
/// millions of blocks.
const PER_THREAD: u64 = 4;

/// Set once the kernel could not be loaded: no step tries again.
static UNAVAILABLE: AtomicBool = AtomicBool::new(false);

/// Whether the step may use the kernel: only with `PADAM_TCH_KERNEL=1` in the environment,
/// until `padam bench verify --backend tch` and `bench step` have run it on a GPU (issue 22),
/// and not after it failed to load.
pub(super) fn enabled() -> bool {
    static ASKED: OnceLock<bool> = OnceLock::new();
    *ASKED.get_or_init(|| std::env::var("PADAM_TCH_KERNEL").is_ok_and(|v| v == "1"))
        && !UNAVAILABLE.load(Ordering::Relaxed)
}

/// The kernel's one parameter, `PadamArgs` of `csrc/torch_step.cu`: the same fields in the same
/// order (pointers as u64, `long long` as i64, `int` as i32).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct Args {
    w: u64,
    g: u64,
    m: u64,
    v: u64,
    n: i64,
    beta_1: f32,
    one_minus_beta_1: f32,
    beta_2: f32,
    one_minus_beta_2: f32,
    combined: f32,
    eps_scaled: f32,
    lr: f32,
    mode: i32,
    uniform_factor: f32,
    c: f32,
    p_minus_2: f32,
    base: f32,
    flags: u64,
    seg_ends: u64,
    flag_index: u64,
    segments: i32,
}

// SAFETY: `Args` is `#[repr(C)]` plain data, the layout of the kernel's `PadamArgs`.
unsafe impl DeviceRepr for Args {}

impl Args {
    /// The parameter for buffers at `[w, g, m, v]` of `n` floats with the constants of `s`;
    /// `marks` = `[flags, seg_ends, flag_index]` and the number of segments, or all 0 (null).
    fn new([w, g, m, v]: [u64; 4], n: i64, s: &StepScalars, marks: ([u64; 3], i32)) -> Self {
        let ([flags, seg_ends, flag_index], segments) = marks;
        let d = &s.decay;
        Self {
            w,
            g,
            m,
            v,
            n,
            beta_1: s.beta_1,
            one_minus_beta_1: s.one_minus_beta_1,
            beta_2: s.beta_2,
            one_minus_beta_2: s.one_minus_beta_2,
            combined: s.combined,
            eps_scaled: s.eps_scaled,
            lr: s.lr,
            // 0, 1 or 2: an `int` there.
            mode: d.mode.code() as i32,
            uniform_factor: d.uniform_factor,
            c: d.c,
            p_minus_2: d.p_minus_2,
            base: d.base,
            flags,
            seg_ends,
            flag_index,
            segments,
        }
    }
}

/// The kernel loaded on one device.
struct Kernel {
    stream: Arc<CudaStream>,
    function: CudaFunction,
}

/// Each device's kernel, or why it could not be loaded.
type Kernels = HashMap<usize, Result<Arc<Kernel>, String>>;

/// The thread's current CUDA context, put back when dropped (cudarc makes the device's primary
/// context current to load and launch).
struct KeepCurrent(Option<CUcontext>);

impl KeepCurrent {
    fn new() -> Self {
        Self(ctx::get_current().ok().flatten())
    }
}

impl Drop for KeepCurrent {
    fn drop(&mut self) {
        if let Some(previous) = self.0 {
            // SAFETY: a context that was current on this thread a moment ago, which PyTorch
            // (or cudarc) keeps alive.
            let _ = unsafe { ctx::set_current(previous) };
        }
    }
}

/// Compile and load the kernel on device `ordinal`. cudarc panics where a library or one of
/// its functions is missing, hence the checks first and the `catch_unwind` around it all.
fn load(ordinal: usize) -> Result<Arc<Kernel>, String> {
    static PTX: OnceLock<Result<Ptx, String>> = OnceLock::new();
    // SAFETY: only tries to open the libraries (libloading), nothing is called in them.
    let present = unsafe {
        cudarc::nvrtc::sys::is_culib_present() && cudarc::driver::sys::is_culib_present()
    };
    if !present {
        return Err("libnvrtc or libcuda is not on the library path".into());
    }
    let attempt = std::panic::catch_unwind(|| {
        let ptx = PTX.get_or_init(|| {
            let options = CompileOptions {
                fmad: Some(false),
                ..Default::default()
            };
            compile_ptx_with_opts(SOURCE, options).map_err(|e| format!("NVRTC: {e}"))
        });
        let ptx = ptx.clone()?;
        let ctx = CudaContext::new(ordinal).map_err(|e| format!("CUDA context: {e}"))?;
        let module = ctx.load_module(ptx).map_err(|e| format!("module: {e}"))?;
        let function = module
            .load_function(NAME)
            .map_err(|e| format!("function: {e}"))?;
        Ok(Arc::new(Kernel {
            stream: ctx.default_stream(),
            function,
        }))
    });
    attempt.unwrap_or_else(|_| Err("cudarc panicked while loading the kernel".into()))
}

/// The kernel of device `ordinal`, loaded on first use; an error marks it unavailable for good.
fn kernel(ordinal: usize) -> Result<Arc<Kernel>, String> {
    static KERNELS: OnceLock<Mutex<Kernels>> = OnceLock::new();
    let mut kernels = KERNELS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let kernel = kernels
        .entry(ordinal)
        .or_insert_with(|| load(ordinal))
        .clone();
    if kernel.is_err() {
        UNAVAILABLE.store(true, Ordering::Relaxed);
    }
    kernel
}

/// Where the kernel marks non-finite gradients: `flags` (f32) gets 1 at `flag_index[k]` when
/// segment `k` of the group's gradient, which ends before `seg_ends[k]`, holds a NaN or inf. The
/// index tensors are i64 on the flags' device; `lens` and `indices` are the host values they
/// were made from (the segments' lengths and the flag positions), checked before the launch.
pub(super) struct Marks<'a> {
    pub flags: &'a Tensor,
    pub seg_ends: &'a Tensor,
    pub flag_index: &'a Tensor,
    pub lens: &'a [i64],
    pub indices: &'a [i64],
}

/// Why the tables of `marks` do not describe a gradient of `n` elements and `flags` entries
/// (every write of the kernel must land inside the flags).
fn check_marks(marks: &Marks<'_>, n: i64, flags: i64) -> Result<(), String> {
    let segments = marks.lens.len();
    let sizes = [
        marks.indices.len(),
        marks.seg_ends.numel(),
        marks.flag_index.numel(),
    ];
    if segments == 0 || sizes.iter().any(|&k| k != segments) {
        return Err("segment tables of different lengths".into());
    }
    if marks.lens.iter().any(|&l| l < 0) || marks.lens.iter().sum::<i64>() != n {
        return Err("segment lengths that do not add up to the gradient's".into());
    }
    if marks.indices.iter().any(|&k| !(0..flags).contains(&k)) {
        return Err("a flag position outside the flags".into());
    }
    Ok(())
}

/// `w, m, v` stepped in place by the kernel, with the constants of `s`, from the gradient `g`;
/// with `marks`, the non-finite check too. `Err` (nothing written) when the tensors are not
/// contiguous f32 on one GPU, the tables do not fit them, or the kernel cannot be compiled,
/// loaded or launched there.
pub(super) fn adam_pwd(
    w: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    s: &StepScalars,
    marks: Option<Marks<'_>>,
) -> Result<(), String> {
    let Device::Cuda(ordinal) = w.device() else {
        return Err("not on a GPU".into());
    };
    let n = w.numel();
    let buffers = [w, g, m, v];
    let floats = buffers.into_iter().chain(marks.as_ref().map(|k| k.flags));
    for t in floats {
        if t.device() != w.device() || t.kind() != Kind::Float || !t.is_contiguous() {
            return Err("a tensor that is not contiguous f32 on the weights' GPU".into());
        }
    }
    if buffers.iter().any(|t| t.numel() != n) {
        return Err("tensors of different lengths".into());
    }
    let n = i64::try_from(n).map_err(|_| "too many elements")?;
    let pointer = |t: &Tensor| t.data_ptr() as u64;
    let marked = match &marks {
        Some(k) => {
            for t in [k.seg_ends, k.flag_index] {
                if t.device() != w.device() || t.kind() != Kind::Int64 || !t.is_contiguous() {
                    return Err("a segment table that is not contiguous i64 on the GPU".into());
                }
            }
            check_marks(k, n, k.flags.numel() as i64)?;
            let segments =
                i32::try_from(k.lens.len()).map_err(|_| "too many tensors in one group")?;
            (
                [pointer(k.flags), pointer(k.seg_ends), pointer(k.flag_index)],
                segments,
            )
        }
        None => ([0; 3], 0),
    };
    if n == 0 {
        return Ok(());
    }
    let blocks = (n as u64).div_ceil(u64::from(THREADS) * PER_THREAD);
    let config = LaunchConfig {
        grid_dim: (
            u32::try_from(blocks).map_err(|_| "too many elements")?,
            1,
            1,
        ),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let args = Args::new(buffers.map(pointer), n, s, marked);
    let _current = KeepCurrent::new();
    let kernel = kernel(ordinal)?;
    let mut launch = kernel.stream.launch_builder(&kernel.function);
    launch.arg(&args);
    // SAFETY: `args` has the layout of the kernel's one parameter. Every pointer in it is the
    // data of a live, contiguous tensor of `n` f32 on this device, or of the segment tables,
    // whose lengths and values `check_marks` held to `n` and to the flags. The launch joins
    // the stream PyTorch's ops run on, so a tensor the caller drops afterwards is reused by
    // PyTorch's caching allocator only for work queued after the kernel, as for any PyTorch op.
    unsafe { launch.launch(config) }
        .map(|_| ())
        .map_err(|e| format!("launch: {e}"))
}

#[cfg(test)]
mod tests {
    use super::super::AdamHyper;
    use super::*;
    use crate::decay::DecayStep;
    use crate::reference::{self, AdamParams, AdamState, Decay};

    extern "C" {
        /// `csrc/torch_step.cu` compiled for the host (`csrc/torch_step_host.cpp`): the kernel's
        /// code, run by one thread over every element, with the parameter the launch passes.
        fn padam_adam_pwd(args: Args);
    }

    /// The marks of [`Marks`], on the host: flags, segment ends, flag positions.
    type HostMarks<'a> = (&'a mut [f32], &'a [i64], &'a [i64]);

    /// One step of the kernel's code on host buffers, its parameter made by [`Args::new`] as
    /// for a launch.
    fn host_step(
        [w, m, v]: [&mut [f32]; 3],
        g: &[f32],
        s: &StepScalars,
        marks: Option<HostMarks<'_>>,
    ) {
        let n = w.len();
        assert!(g.len() == n && m.len() == n && v.len() == n);
        let marks = match marks {
            Some((f, e, i)) => {
                assert_eq!(e.len(), i.len());
                assert_eq!(*e.last().unwrap(), n as i64);
                let pointers = [f.as_mut_ptr() as u64, e.as_ptr() as u64, i.as_ptr() as u64];
                (pointers, e.len() as i32)
            }
            None => ([0; 3], 0),
        };
        let buffers = [
            w.as_mut_ptr() as u64,
            g.as_ptr() as u64,
            m.as_mut_ptr() as u64,
            v.as_mut_ptr() as u64,
        ];
        let args = Args::new(buffers, n as i64, s, marks);
        // SAFETY: every pointer is a live buffer of the length the kernel reads (checked above),
        // or null for the flags and tables when nothing is checked.
        unsafe { padam_adam_pwd(args) }
    }

    /// Deterministic values in (-scale, scale), every seventh exactly 0 when `zeros`.
    fn values(n: usize, seed: u64, scale: f32, zeros: bool) -> Vec<f32> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|i| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (x >> 40) as f32 / (1u64 << 24) as f32;
                if zeros && i % 7 == 3 {
                    0.0
                } else {
                    scale * (2.0 * u - 1.0)
                }
            })
            .collect()
    }

    const HYPER: AdamHyper = AdamHyper {
        beta_1: 0.9,
        beta_2: 0.999,
        epsilon: 1e-8,
    };
    const LR: f64 = 1e-2;

    /// The largest |a - b| over the largest |b|.
    fn relative_error(a: &[f32], b: &[f64]) -> f64 {
        let scale = b.iter().fold(0.0f64, |s, x| s.max(x.abs()));
        let worst = (a.iter().zip(b)).fold(0.0f64, |s, (&x, &y)| s.max((f64::from(x) - y).abs()));
        worst / scale
    }

    #[test]
    fn the_kernel_steps_as_the_float64_reference() {
        // (p, lambda, lambda2); None: not decayed. p = 2 is the uniform mode.
        let cases: [Option<(f64, f64, f64)>; 5] = [
            Some((0.8, 0.1, 0.0)),
            Some((0.5, 0.05, 1e-3)),
            Some((1.0, 0.1, 0.0)),
            Some((2.0, 0.1, 0.0)),
            None,
        ];
        let n = 1000;
        for case in cases {
            let mut w = values(n, 1, 1.0, true);
            let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
            let mut w_ref: Vec<f64> = w.iter().map(|&x| f64::from(x)).collect();
            let mut st = AdamState::new(n);
            let adam = AdamParams {
                beta1: f64::from(HYPER.beta_1),
                beta2: f64::from(HYPER.beta_2),
                eps: f64::from(HYPER.epsilon),
            };
            for t in 1..=5 {
                let g = values(n, 10 + t as u64, 0.1, false);
                let g_ref: Vec<f64> = g.iter().map(|&x| f64::from(x)).collect();
                let decay = case.map(|(p, lambda, lambda2)| DecayStep {
                    lr: LR,
                    p,
                    lambda,
                    lambda2,
                });
                let s = StepScalars::new(&HYPER, t, LR, decay.as_ref()).unwrap();
                host_step([&mut w, &mut m, &mut v], &g, &s, None);
                match case {
                    Some((p, lambda, lambda2)) => {
                        let d = Decay {
                            lambda2,
                            ..Decay::new(p, lambda)
                        };
                        reference::padam_step(&mut w_ref, &g_ref, &mut st, LR, &adam, &d)
                    }
                    None => reference::adam_step(&mut w_ref, &g_ref, &mut st, LR, &adam),
                }
                for (name, a, b) in [("w", &w, &w_ref), ("m", &m, &st.m), ("v", &v, &st.v)] {
                    let e = relative_error(a, b);
                    assert!(
                        e < 2e-6,
                        "{case:?} step {t}: {name} off by {e:e} of its scale"
                    );
                }
                if case.is_some_and(|(p, ..)| p < 2.0) {
                    let kept = (w.iter().zip(&w_ref)).all(|(&a, &b)| (a == 0.0) == (b == 0.0));
                    assert!(kept, "{case:?} step {t}: the exact zeros differ");
                }
            }
        }
    }

    #[test]
    fn tables_that_would_write_outside_the_flags_are_refused() {
        let t = |v: &[i64]| Tensor::from_slice(v);
        let (ends, index) = (t(&[3, 7]), t(&[1, 0]));
        let flags = Tensor::zeros([2], (Kind::Float, Device::Cpu));
        let marks = |lens: &'static [i64], indices: &'static [i64]| Marks {
            flags: &flags,
            seg_ends: &ends,
            flag_index: &index,
            lens,
            indices,
        };
        assert_eq!(check_marks(&marks(&[3, 4], &[1, 0]), 7, 2), Ok(()));
        let refused = [
            (marks(&[3, 4], &[1, 0]), 8),
            (marks(&[3, 4], &[2, 0]), 7),
            (marks(&[3, 4], &[-1, 0]), 7),
            (marks(&[7], &[0]), 7),
            (marks(&[8, -1], &[1, 0]), 7),
        ];
        for (m, n) in refused {
            assert!(
                check_marks(&m, n, 2).is_err(),
                "{:?} {:?} n {n}",
                m.lens,
                m.indices
            );
        }
    }

    #[test]
    fn a_non_finite_gradient_marks_its_own_tensors_flag() {
        // Three tensors of 3, 4 and 5 elements, flagged at positions 7, 2 and 0 of 8 flags.
        let (ends, index) = ([3i64, 7, 12], [7i64, 2, 0]);
        let s = StepScalars::new(&HYPER, 1, LR, None).unwrap();
        // (the bad elements, the flags that must be set)
        let cases: [(&[usize], &[usize]); 5] = [
            (&[], &[]),
            (&[2], &[7]),
            (&[3], &[2]),
            (&[5, 11], &[2, 0]),
            (&[0, 6, 7], &[7, 2, 0]),
        ];
        for (bad, set) in cases {
            for poison in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut g = values(12, 3, 0.1, false);
                for &i in bad {
                    g[i] = poison;
                }
                let (mut w, mut m, mut v) =
                    (values(12, 4, 1.0, false), vec![0.0; 12], vec![0.0; 12]);
                let mut flags = [0.0f32; 8];
                host_step(
                    [&mut w, &mut m, &mut v],
                    &g,
                    &s,
                    Some((&mut flags, &ends, &index)),
                );
                let expected: Vec<f32> = (0..8)
                    .map(|k| f32::from(u8::from(set.contains(&k))))
                    .collect();
                assert_eq!(flags.to_vec(), expected, "{poison} at {bad:?}");
            }
        }
    }
}
