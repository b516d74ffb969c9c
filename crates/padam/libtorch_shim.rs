//! The build step of the `tch` features of padam and padam-lab: compiles a C++ shim against the
//! libtorch that torch-sys found, with its flags. Each crate's build.rs includes this file.

/// Compiles `source` (relative to the crate) into the static library `name`, linked into the
/// crate.
pub fn compile(source: &str, name: &str) {
    println!("cargo:rerun-if-changed={source}");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    // torch-sys (`links = "tch"`) passes the lib folder of the libtorch it links to.
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").unwrap_or_else(|_| {
        panic!("the tch feature needs torch-sys's libtorch (build with scripts/build-tch.sh)")
    });
    let root = std::path::Path::new(&lib)
        .parent()
        .expect("libtorch's lib folder has a parent")
        .to_path_buf();
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file(source)
        .compile(name);
}
