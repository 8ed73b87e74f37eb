//! D2TLS: a security agent runs the full DTLS/TLS 1.2 handshake for a constrained device; the
//! device only signs the CertificateVerify digest and then resumes the session end to end.
//!
//! Layers: [`wire`] (messages) and [`channel`] (AEAD records) are sans I/O; [`device`] is the
//! device's decision logic, also sans I/O; [`tls`] drives OpenSSL over sockets; [`agent`] and
//! [`device_io`] are the tokio/socket outer layers used by the binaries.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod channel;
pub mod config;
pub mod device;
pub mod device_io;
pub mod error;
pub mod ffi;
#[cfg(feature = "measure")]
pub mod measure;
pub mod openssl_ext;
pub mod secret;
pub mod session;
pub mod tls;
pub mod wire;

/// Structured logs on stderr, one event a line; `RUST_LOG` overrides `default_level`.
pub fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}
