//! With the `tch` feature: compiles `csrc/torch_step.cpp` (PyTorch's fused Adam and per-segment
//! sums, which tch does not expose) against torch-sys's libtorch.

#[cfg(feature = "tch")]
#[path = "libtorch_shim.rs"]
mod libtorch_shim;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "tch")]
    {
        println!("cargo:rerun-if-changed=libtorch_shim.rs");
        libtorch_shim::compile("csrc/torch_step.cpp", "padam_torch_step");
    }
}
