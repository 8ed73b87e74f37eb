//! The key server daemon's pieces (config, zone loading, control socket), shared by `tpkd`
//! and `tp`, and the operator operations behind `tp` (`ops`). The daemon itself is
//! `src/bin/tpkd.rs`.
#![forbid(unsafe_code)]

pub mod config;
pub mod control;
pub mod keyserver;
pub mod ops;
