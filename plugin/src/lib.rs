//! TwinPeaks: certificateless public keys of named entities, distributed by key servers
//! arranged like DNS. This crate holds the CL-PKC construction, the TPKEY record, key zones
//! and the hickory zone handler that serves them, and the key resolver with its key cache.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod clpkc;
pub mod enroll;
pub mod handler;
pub mod issue;
pub mod keyfile;
pub mod notify;
pub mod record;
pub mod resolver;
pub mod server;
pub mod store;
pub mod tcp;
pub mod time;
pub mod tls;
mod update;
pub mod wire;
pub mod zone;
pub mod zonefile;
