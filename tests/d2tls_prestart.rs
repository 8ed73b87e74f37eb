//! A delegation started ahead, against a stock `openssl s_server`: a device that tells the
//! agent when it will ask again (`d2tls-device --next-session-in-ms`, an `Expect` message)
//! finds its next delegation's handshake already run up to the signature; the agent signs it
//! with the device's signature when the device asks, and the device resumes as always. DTLS 1.2,
//! TLS 1.2 and TLS 1.3. A request other than the expected one, a device that comes too late and
//! an agent that does not start handshakes ahead all get a fresh delegation, and s_server (one
//! client at a time) is never left waiting on a handshake nobody will finish.

mod common;
mod d2tls_common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use d2tls::channel::{self, Channel, PairingKey, Role};
use d2tls::wire::{DelegationRequest, Message, Transport};
use d2tls_common::*;

/// s_server, the agent (with `agent_extra` config lines) and a device config, for `transport`.
struct Bed {
    _tmp: TempDir,
    pki: Pki,
    key: String,
    agent_port: u16,
    server_addr: String,
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
    let server_addr = server_addr.clone();
    Bed {
        _tmp: tmp,
        pki,
        key,
        agent_port,
        server_addr,
        server,
        agent,
        device_cfg,
    }
}

impl Bed {
    /// Runs the device with `args`, sending `line`; asserts it resumed and s_server got the
    /// line; returns its stdout.
    fn device(&self, line: &str, args: &[&str]) -> String {
        let args = [&["--send", line][..], args].concat();
        let bin = common::bin("d2tls-device");
        let out = device_ok(&bin, &self.device_cfg, &args, &self.agent, &self.server);
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

    /// The agent's `delegation.done` lines, in order, once there are `n` (its log is read by
    /// a thread: the line of a delegation whose device has exited may still be on its way).
    fn done_lines(&self, n: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let done: Vec<String> = self
                .agent
                .err
                .text()
                .lines()
                .filter(|l| l.contains("event=\"delegation.done\""))
                .map(str::to_owned)
                .collect();
            if done.len() >= n || std::time::Instant::now() > deadline {
                assert_eq!(done.len(), n, "{}", self.agent.err.text());
                return done;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

fn started_ahead(transport: &str) {
    // A loaded machine may take a while between the two runs.
    let bed = bed(transport, transport, "prestart_hold_secs = 60\n");
    bed.device("first", &["--next-session-in-ms", "0"]);
    bed.wait_agent("event=\"prestart.started\"");
    let out = bed.device("second", &[]);
    assert!(out.contains("signatures=1"), "{out}");
    let done = bed.done_lines(2);
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
    let bed = bed("other", "tls", "prestart_hold_secs = 60\n");
    bed.device("first", &["--next-session-in-ms", "0"]);
    bed.wait_agent("event=\"prestart.started\"");
    // The handshake started ahead (GCM) holds s_server, which serves one client at a time:
    // the agent must give it up for the CCM-8 one to get through.
    let out = bed.device("second", &["--suite", "ccm8"]);
    assert!(out.contains("cipher=ECDHE-ECDSA-AES128-CCM8"), "{out}");
    bed.wait_agent("the request is not the one expected");
    let done = bed.done_lines(2);
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
    let done = bed.done_lines(2);
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
fn a_device_that_announces_again_and_again_gets_one_handshake_started_ahead() {
    let bed = bed("again", "tls", "prestart_hold_secs = 60\n");
    // A scripted device on the channel: five expectations in a row, no delegation between.
    openssl(
        &bed.pki.dir,
        &[
            "x509",
            "-in",
            "device.pem",
            "-outform",
            "DER",
            "-out",
            "device.der",
        ],
    );
    let cert = std::fs::read(bed.pki.dir.join("device.der")).expect("device.der");
    let mut s = TcpStream::connect(("127.0.0.1", bed.agent_port)).expect("connect to the agent");
    let nonce_d = [3u8; 32];
    write_frame(
        &mut s,
        &channel::hello("sensor-1", &nonce_d).expect("hello"),
    );
    let nonce_a = channel::parse_hello_reply(&read_frame(&mut s)).expect("hello reply");
    let key = PairingKey::from_hex(&bed.key).expect("pairing key");
    let (mut sealer, mut opener) =
        Channel::new(Role::Device, &key, "sensor-1", &nonce_d, &nonce_a).split();
    assert_eq!(
        opener.open(&read_frame(&mut s)).expect("ready"),
        Message::Ready
    );
    let expect = Message::Expect {
        in_ms: 0,
        request: DelegationRequest {
            delegation_id: 0,
            transport: Transport::Tls,
            suite: 0xC02B,
            server: bed.server_addr.clone(),
            server_name: "127.0.0.1".into(),
            cert_chain: vec![cert],
        },
    };
    for _ in 0..5 {
        write_frame(&mut s, &sealer.seal(&expect).expect("seal"));
        std::thread::sleep(Duration::from_millis(100));
    }
    bed.wait_agent("its previous handshake started ahead is still running");
    drop(s);
    let log = bed.agent.err.text();
    assert_eq!(
        log.matches("event=\"prestart.started\"").count(),
        1,
        "one device, one handshake started ahead:\n{log}"
    );
    // The one started is the one the device's next delegation finds.
    bed.device("after", &[]);
    let done = bed.done_lines(1);
    assert!(done[0].contains("prestarted=true"), "{}", done[0]);
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
