//! With the `tch` feature: compiles `csrc/fused_adam.cpp` (PyTorch's fused Adam, which tch does
//! not expose) against torch-sys's libtorch.

#[cfg(feature = "tch")]
#[path = "libtorch_shim.rs"]
mod libtorch_shim;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "tch")]
    {
        println!("cargo:rerun-if-changed=libtorch_shim.rs");
        libtorch_shim::compile("csrc/fused_adam.cpp", "padam_fused_adam");
    }
}
