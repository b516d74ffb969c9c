//! Models, one module each.

pub mod fashion_cnn;
pub mod mlp;
pub mod nanogpt;
pub mod ops;
pub mod resnet;

pub use mlp::{Mlp, MlpConfig};
