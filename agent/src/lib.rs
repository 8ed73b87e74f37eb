//! D2TLS: a security agent runs the full DTLS/TLS 1.2 handshake for a constrained device; the
//! device only signs the CertificateVerify digest and then resumes the session end to end.
//!
//! Layers: [`wire`] (messages) and [`channel`] (AEAD records) are sans I/O; [`device`] is the
//! device's decision logic, also sans I/O; [`tls`] drives OpenSSL over sockets; [`agent`] and
//! [`device_io`] are the tokio/socket outer layers used by the binaries.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod channel;
pub mod error;
pub mod ffi;
pub mod session;
pub mod wire;
