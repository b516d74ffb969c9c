//! `padam bench verify` is the GPU correctness check; here it runs on the CPU backend so the
//! check itself (every optimizer vs the float64 reference) is exercised in CI.

use padam_lab::bench::{run, BackendKind, BenchCommand, VerifyArgs};

#[test]
fn bench_verify_passes_on_cpu() {
    let args = VerifyArgs {
        backend: BackendKind::Cpu,
        numel: 512,
        steps: 3,
        seed: 11,
    };
    run(BenchCommand::Verify(args)).expect("every optimizer matches the float64 reference");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_backend_without_the_feature_is_a_clear_error() {
    let args = VerifyArgs {
        backend: BackendKind::Cuda,
        numel: 8,
        steps: 1,
        seed: 1,
    };
    let err = run(BenchCommand::Verify(args)).unwrap_err().to_string();
    assert!(err.contains("--features cuda"), "{err}");
}
