//! padam-lab: everything that reproduces, measures and shows pWD results, built on the
//! `padam` library exactly as an outside user would use it.

pub mod backend;
pub mod bench;
pub mod bench_train;
pub mod data;
pub mod demo;
pub mod export;
pub mod host_profile;
pub mod models;
pub mod plot;
pub mod prune;
pub mod report;
pub mod sweep;
pub mod toy;
pub mod train;
pub mod train_loop;
