//! The LibTorch step's CUDA kernel (`csrc/torch_step.cu`): Adam and pWD's finish in one pass
//! over a group's flat `w, g, m, v`, with the non-finite check folded in.
//!
//! libtorch offers no way to compile a kernel of our own without a CUDA toolkit at build time,
//! so NVRTC compiles it when a step first runs on a GPU (cudarc, loaded at run time as burn's
//! CUDA backend loads it), and it is launched on the legacy default stream, where burn-tch's
//! PyTorch ops run (neither tch nor burn sets another), so it is ordered with them. PyTorch uses
//! the device's primary context, which cudarc retains. Where any of this fails, the caller
//! steps as before (PyTorch's fused Adam and the finish as tensor ops), after one warning.
//! Written without a GPU at hand: off unless `PADAM_TCH_KERNEL=1` ([`enabled`]) until it has
//! been verified and measured on one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};
use tch::{Device, Kind, Tensor};

use super::{DecayMode, StepScalars};

const SOURCE: &str = include_str!("../../csrc/torch_step.cu");
const NAME: &str = "padam_adam_pwd";
const THREADS: u32 = 256;
/// Elements per thread of a launch (its grid-stride loop), so that large groups do not need
/// millions of blocks.
const PER_THREAD: u64 = 4;

/// Whether the step may use the kernel: only with `PADAM_TCH_KERNEL=1` in the environment,
/// until `padam bench verify --backend tch` and `bench step` have run it on a GPU (issue 22).
pub(super) fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("PADAM_TCH_KERNEL").is_ok_and(|v| v == "1"))
}

/// The kernel loaded on one device.
struct Kernel {
    stream: Arc<CudaStream>,
    function: CudaFunction,
}

/// Each device's kernel, or why it could not be loaded.
type Kernels = HashMap<usize, Result<Arc<Kernel>, String>>;

/// The kernel of device `ordinal`, compiled and loaded on first use; the error, once, for good.
fn kernel(ordinal: usize) -> Result<Arc<Kernel>, String> {
    static PTX: OnceLock<Result<Ptx, String>> = OnceLock::new();
    static KERNELS: OnceLock<Mutex<Kernels>> = OnceLock::new();
    let mut kernels = KERNELS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    kernels
        .entry(ordinal)
        .or_insert_with(|| {
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
        })
        .clone()
}

/// The kernel's `mode`.
fn mode_code(mode: DecayMode) -> i32 {
    match mode {
        DecayMode::None => 0,
        DecayMode::Uniform => 1,
        DecayMode::PNorm => 2,
    }
}

/// Where the kernel marks non-finite gradients: `flags` (f32) gets 1 at `flag_index[k]` when
/// segment `k` of the group's gradient, which ends before `seg_ends[k]`, holds a NaN or inf. The
/// index tensors are i64 on the flags' device.
pub(super) struct Marks<'a> {
    pub flags: &'a Tensor,
    pub seg_ends: &'a Tensor,
    pub flag_index: &'a Tensor,
}

/// `w, m, v` stepped in place by the kernel, with the constants of `s`, from the gradient `g`;
/// with `marks`, the non-finite check too. `Err` (nothing written) when the tensors are not
/// contiguous f32 on one GPU, or the kernel cannot be compiled, loaded or launched there.
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
    if let Some(k) = &marks {
        for t in [k.seg_ends, k.flag_index] {
            if t.device() != w.device() || t.kind() != Kind::Int64 || !t.is_contiguous() {
                return Err("a segment table that is not contiguous i64 on the GPU".into());
            }
        }
    }
    if n == 0 {
        return Ok(());
    }
    let kernel = kernel(ordinal)?;
    let pointer = |t: &Tensor| t.data_ptr() as u64;
    let (w_p, g_p, m_p, v_p) = (pointer(w), pointer(g), pointer(m), pointer(v));
    let (flags_p, ends_p, index_p, segments) = match &marks {
        Some(k) => (
            pointer(k.flags),
            pointer(k.seg_ends),
            pointer(k.flag_index),
            i32::try_from(k.seg_ends.numel()).map_err(|_| "too many tensors in one group")?,
        ),
        None => (0, 0, 0, 0),
    };
    let n = n as i64;
    let mode = mode_code(s.decay.mode);
    let d = &s.decay;
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
    let mut launch = kernel.stream.launch_builder(&kernel.function);
    launch
        .arg(&w_p)
        .arg(&g_p)
        .arg(&m_p)
        .arg(&v_p)
        .arg(&n)
        .arg(&s.beta_1)
        .arg(&s.one_minus_beta_1)
        .arg(&s.beta_2)
        .arg(&s.one_minus_beta_2)
        .arg(&s.combined)
        .arg(&s.eps_scaled)
        .arg(&s.lr)
        .arg(&mode)
        .arg(&d.uniform_factor)
        .arg(&d.c)
        .arg(&d.p_minus_2)
        .arg(&d.base)
        .arg(&flags_p)
        .arg(&ends_p)
        .arg(&index_p)
        .arg(&segments);
    // SAFETY: the arguments match the kernel's parameters in order and size (pointers as u64,
    // `long long` as i64, `int` as i32, floats as f32). Every pointer is the data of a live,
    // contiguous tensor of `n` f32 (or of the segment tables, `segments` i64 each, whose last
    // end is `n`) on this device. The launch joins the stream PyTorch's ops run on, so a tensor
    // the caller drops afterwards is reused by PyTorch's caching allocator only for work queued
    // after the kernel, as for any PyTorch op.
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
        /// code, run by one thread over every element.
        fn padam_adam_pwd(
            w: *mut f32,
            g: *const f32,
            m: *mut f32,
            v: *mut f32,
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
            flags: *mut f32,
            seg_ends: *const i64,
            flag_index: *const i64,
            segments: i32,
        );
    }

    /// The marks of [`Marks`], on the host: flags, segment ends, flag positions.
    type HostMarks<'a> = (&'a mut [f32], &'a [i64], &'a [i64]);

    /// One step of the kernel's code on host buffers, with the arguments `adam_pwd` passes.
    fn host_step(
        [w, m, v]: [&mut [f32]; 3],
        g: &[f32],
        s: &StepScalars,
        marks: Option<HostMarks<'_>>,
    ) {
        let n = w.len();
        assert!(g.len() == n && m.len() == n && v.len() == n);
        let (flags, ends, index, segments) = match marks {
            Some((f, e, i)) => {
                assert_eq!(e.len(), i.len());
                assert_eq!(*e.last().unwrap(), n as i64);
                (f.as_mut_ptr(), e.as_ptr(), i.as_ptr(), e.len() as i32)
            }
            None => (std::ptr::null_mut(), std::ptr::null(), std::ptr::null(), 0),
        };
        let d = &s.decay;
        // SAFETY: every pointer is a live buffer of the length the kernel reads (checked above),
        // or null for the flags and tables when nothing is checked.
        unsafe {
            padam_adam_pwd(
                w.as_mut_ptr(),
                g.as_ptr(),
                m.as_mut_ptr(),
                v.as_mut_ptr(),
                n as i64,
                s.beta_1,
                s.one_minus_beta_1,
                s.beta_2,
                s.one_minus_beta_2,
                s.combined,
                s.eps_scaled,
                s.lr,
                mode_code(d.mode),
                d.uniform_factor,
                d.c,
                d.p_minus_2,
                d.base,
                flags,
                ends,
                index,
                segments,
            )
        }
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
