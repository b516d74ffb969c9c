//! The payoff of sparsity (issue 26): exported models on a CPU inference engine that stores
//! each weight matrix dense or as CSR by its zero fraction, compaction of what is structurally
//! zero, and `padam sample` for nanoGPT.
//!
//! Files: `matrix` (the dense and CSR formats and their products), `plan` (the choice per
//! tensor and the layer builders), `ops` (convolution, pooling, norms, attention), one file per
//! family (`mlp`, `cnn`, `resnet`, `gpt`), `engine` (the family behind one type), `tensors`
//! (weights from export files, run directories and burn modules), `sample` (`padam sample`), `compact` (structurally zero units cut out, `padam compact`).

mod cnn;
mod compact;
mod crossover;
mod engine;
mod gpt;
mod matrix;
mod mlp;
mod ops;
mod plan;
mod resnet;
mod sample;
mod tensors;

pub use compact::{compact, run as compact_run, CompactArgs, Compacted, Removed, COMPACT_FORMAT};
pub use crossover::{crossover_table, sparse_normal};
pub use engine::{Engine, Net};
pub use matrix::{zero_fraction, Csr, Dense, Matrix};
pub use plan::{LayerInfo, Plan, DEFAULT_CONV_THRESHOLD, DEFAULT_SPARSE_THRESHOLD};
pub use sample::{
    burn_last_logits, generate, next_token, run as sample, EngineKind, Forward, SampleArgs,
    Sampled, Sampling,
};
pub use tensors::{load, model_shape, HostTensor, Loaded, Shape, Tensors};
