//! padam-lab: everything that reproduces, measures and shows pWD results, built on the
//! `padam` library exactly as an outside user would use it.
//!
//! One wing per group of subcommands, each behind its `mod.rs` face: `train` (`padam train`),
//! `bench` (`padam bench ...`), `runs` (`plot`, `report`, `sweep`, `export`, `eval`: whatever
//! reads run directories), `infer` (`sample`, `compact`, and the sparse inference engine behind
//! `bench infer`) and `demo` (`demo`, `toy`). The shared rooms `backend`, `data` and
//! `models` import no wing. A wing imports its own files, the shared rooms, the `padam` library
//! and other wings' faces only (docs/ARCHITECTURE.md).

pub mod backend;
pub mod bench;
pub mod data;
pub mod demo;
pub mod infer;
pub mod models;
pub mod runs;
pub mod train;
