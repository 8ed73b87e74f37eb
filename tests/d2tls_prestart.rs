//! A delegation started ahead, against a stock `openssl s_server`: a device that tells the
//! agent when it will ask again (`d2tls-device --next-session-in-ms`, an `Expect` message)
//! finds its next delegation's handshake already run up to the signature; the agent signs it
//! with the device's signature when the device asks, and the device resumes as always. DTLS 1.2,
//! TLS 1.2 and TLS 1.3. A request other than the expected one, a device that comes too late and
//! an agent that does not start handshakes ahead all get a fresh delegation, and s_server (one
//! client at a time) is never left waiting on a handshake nobody will finish.

mod common;
mod d2tls_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use d2tls_common::*;

/// s_server, the agent (with `agent_extra` config lines) and a device config, for `transport`.
struct Bed {
    _tmp: TempDir,
    server: Proc,
    agent: Proc,
    device_cfg: PathBuf,
}

fn bed(tag: &str, transport: &str, agent_extra: &str) -> Bed {
    common::require_tool("openssl");
    let tmp = TempDir::new(&format!("prestart-{tag}"));
    let pki = Pki::new(tmp.path());
    let key = pairing_key_hex();
    let server_port = port();
    // Both suites, so that a device can ask for another one than it said it would.
    let both = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-CCM8";
    let options: &[&str] = if transport == "tls13" {
        &[]
    } else {
        &["-no_ticket", "-cipher", both]
    };
    let server = s_server_with(&pki, transport, "gcm", server_port, options);
    let agent_port = port();
    let agent_cfg = agent_config(&pki, agent_port, &key);
    let text = std::fs::read_to_string(&agent_cfg).expect("read agent config");
    write_private(
        &agent_cfg,
        text.replace("ca_file", &format!("{agent_extra}ca_file")),
    );
    let agent = start_agent(&common::bin("d2tls-agent"), &agent_cfg);
    let server_addr = format!("127.0.0.1:{server_port}");
    let device_cfg = device_config(&pki, agent_port, &key, &server_addr, transport, "gcm");
    Bed {
        _tmp: tmp,
        server,
        agent,
        device_cfg,
    }
}

impl Bed {
    /// Runs the device with `args`, sending `line`; asserts it resumed and s_server got the
    /// line; returns its stdout.
    fn device(&self, line: &str, args: &[&str]) -> String {
        let mut device = Proc::spawn(
            Command::new(common::bin("d2tls-device"))
                .arg("--config")
                .arg(&self.device_cfg)
                .args(["--send", line])
                .args(args),
        );
        let status = device.wait();
        let out = device.out.text();
        assert!(
            status.success(),
            "device failed\nstdout:\n{out}\nstderr:\n{}\nagent:\n{}\nserver:\n{}",
            device.err.text(),
            self.agent.err.text(),
            self.server.out.text()
        );
        assert!(out.contains("session reused=true"), "{out}");
        assert!(
            self.server.out.wait_for(line),
            "s_server never got `{line}`:\n{}",
            self.server.out.text()
        );
        out
    }

    fn wait_agent(&self, needle: &str) {
        assert!(
            self.agent.err.wait_for(needle),
            "the agent never logged {needle}:\n{}",
            self.agent.err.text()
        );
    }

    /// The agent's `delegation.done` lines, in order.
    fn done_lines(&self) -> Vec<String> {
        self.agent
            .err
            .text()
            .lines()
            .filter(|l| l.contains("event=\"delegation.done\""))
            .map(str::to_owned)
            .collect()
    }
}

fn started_ahead(transport: &str) {
    let bed = bed(transport, transport, "");
    bed.device("first", &["--next-session-in-ms", "0"]);
    bed.wait_agent("event=\"prestart.started\"");
    let out = bed.device("second", &[]);
    assert!(out.contains("signatures=1"), "{out}");
    let done = bed.done_lines();
    assert_eq!(done.len(), 2, "{done:?}");
    assert!(done[0].contains("prestarted=false"), "{}", done[0]);
    assert!(done[1].contains("prestarted=true"), "{}", done[1]);
    let server_out = bed.server.out.text();
    if transport == "tls13" {
        assert_eq!(
            server_out.matches("Reused session-id").count(),
            2,
            "{server_out}"
        );
    } else {
        assert_resumed_by_device(&server_out, "ECDHE-ECDSA-AES128-GCM-SHA256");
        assert_eq!(
            server_out.matches("Reused session-id").count(),
            2,
            "{server_out}"
        );
    }
}

#[test]
fn dtls_the_next_delegation_finds_its_handshake_started() {
    started_ahead("dtls");
}

#[test]
fn tls_the_next_delegation_finds_its_handshake_started() {
    started_ahead("tls");
}

#[test]
fn tls13_the_next_delegation_finds_its_handshake_started() {
    started_ahead("tls13");
}

#[test]
fn a_request_other_than_the_expected_one_gets_a_fresh_handshake() {
    let bed = bed("other", "tls", "");
    bed.device("first", &["--next-session-in-ms", "0"]);
    bed.wait_agent("event=\"prestart.started\"");
    // The handshake started ahead (GCM) holds s_server, which serves one client at a time:
    // the agent must give it up for the CCM-8 one to get through.
    let out = bed.device("second", &["--suite", "ccm8"]);
    assert!(out.contains("cipher=ECDHE-ECDSA-AES128-CCM8"), "{out}");
    bed.wait_agent("the request is not the one expected");
    let done = bed.done_lines();
    assert!(done[1].contains("prestarted=false"), "{done:?}");
}

#[test]
fn a_device_that_comes_too_late_gets_a_fresh_handshake() {
    let bed = bed(
        "late",
        "dtls",
        "prestart_lead_ms = 0\nprestart_hold_secs = 1\n",
    );
    bed.device("first", &["--next-session-in-ms", "0"]);
    bed.wait_agent("event=\"prestart.expired\"");
    bed.device("second", &[]);
    let done = bed.done_lines();
    assert_eq!(done.len(), 2, "{done:?}");
    assert!(done[1].contains("prestarted=false"), "{}", done[1]);
}

#[test]
fn an_agent_with_prestart_off_logs_the_expectation_it_refused() {
    let bed = bed("off", "tls", "prestart = false\n");
    bed.device("first", &["--next-session-in-ms", "5000"]);
    bed.wait_agent("prestart = false in the agent's config");
    assert!(!bed.agent.err.text().contains("prestart.scheduled"));
    bed.device("second", &[]);
}

#[test]
fn the_device_refuses_to_expect_in_standalone_mode() {
    let tmp = TempDir::new("prestart-cli");
    let cfg = tmp.path().join("none.toml");
    let out = Command::new(common::bin("d2tls-device"))
        .arg("--config")
        .arg(Path::new(&cfg))
        .args(["--standalone", "--next-session-in-ms", "10"])
        .output()
        .expect("run d2tls-device");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot be used with") && err.contains("--next-session-in-ms"),
        "{err}"
    );
}
