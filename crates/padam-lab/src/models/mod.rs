//! Models, one module each.

pub mod fashion_cnn;
pub mod nanogpt;
pub mod resnet;
