//! Models, one module each.
