//! With the `tch` feature: compiles `csrc/backward.cpp` (PyTorch's autograd engine run from
//! given output gradients) against torch-sys's libtorch, by the build step padam shares.

#[cfg(feature = "tch")]
#[path = "../padam/libtorch_shim.rs"]
mod libtorch_shim;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "tch")]
    {
        println!("cargo:rerun-if-changed=../padam/libtorch_shim.rs");
        libtorch_shim::compile("csrc/backward.cpp", "padam_backward");
    }
}
