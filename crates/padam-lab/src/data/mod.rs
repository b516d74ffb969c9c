//! Datasets, one module each.

pub mod augment;
pub mod cifar10;
pub mod fashion_mnist;
pub mod shakespeare;
