//! With the `tch` feature: compiles `csrc/torch_step.cpp` (PyTorch's fused Adam and per-segment
//! sums, which tch does not expose) against torch-sys's libtorch, and the CUDA kernel of the
//! LibTorch step (`csrc/torch_step.cu`, which NVRTC compiles at run time) for the host, for its
//! tests.

#[cfg(feature = "tch")]
#[path = "libtorch_shim.rs"]
mod libtorch_shim;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "tch")]
    {
        println!("cargo:rerun-if-changed=libtorch_shim.rs");
        libtorch_shim::compile("csrc/torch_step.cpp", "padam_torch_step");
        // The LibTorch step's CUDA kernel, compiled for the host for its tests (no libtorch).
        println!("cargo:rerun-if-changed=csrc/torch_step.cu");
        println!("cargo:rerun-if-changed=csrc/torch_step_host.cpp");
        cc::Build::new()
            .cpp(true)
            .pic(true)
            .flag("-std=c++17")
            .flag("-ffp-contract=off")
            .file("csrc/torch_step_host.cpp")
            .compile("padam_torch_step_host");
    }
}
