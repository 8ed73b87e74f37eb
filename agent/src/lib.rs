//! D2TLS
