//! Datasets, one module each.
