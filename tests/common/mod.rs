//! Shared plumbing of the end-to-end suite: where the workspace binaries are, free loopback ports.
#![allow(dead_code)]

use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;

/// Path of a workspace binary built by `cargo test` (target/<profile>/<name>).
///
/// `cargo test` builds a package's binaries when that package has integration tests, so
/// `server/` and `agent/` each keep at least one test of their own.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run the suite with `cargo test` from the workspace root",
        path.display()
    );
    path
}

/// A port free for both UDP and TCP on `ip` at the time of the call.
pub fn free_port(ip: &str) -> u16 {
    for _ in 0..100 {
        let tcp = TcpListener::bind((ip, 0)).expect("bind tcp");
        let port = tcp.local_addr().expect("addr").port();
        if UdpSocket::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on {ip}");
}

/// Fail loudly (not skip) when a real peer the suite needs is missing: CI installs them.
pub fn require_tool(name: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        for cand in [PathBuf::from(dir).join(name)] {
            if cand.is_file() {
                return cand;
            }
        }
    }
    for dir in ["/usr/sbin", "/sbin", "/usr/bin"] {
        let cand = PathBuf::from(dir).join(name);
        if cand.is_file() {
            return cand;
        }
    }
    panic!("`{name}` is not installed; `bash .ci/run` installs the Debian packages the suite needs");
}
