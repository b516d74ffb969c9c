//! The subcommands that read run directories: `plot` (figures), `report` (one HTML file),
//! `sweep` (a grid of runs and its table), `export` and `eval` (safetensors out and back in).

pub mod export;
pub mod plot;
pub mod report;
pub mod sweep;
