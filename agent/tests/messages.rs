//! What a new user reads when something is wrong: the real binaries, a real `openssl
//! s_server` where a server is needed, and each mistake a newcomer makes. Every message names
//! what was wrong, says it once, and suggests only what can be the cause.

#[path = "../../tests/d2tls_common/mod.rs"]
mod d2tls_common;

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;

use d2tls::channel::{self, Channel, NONCE_LEN, PairingKey, Role};
use d2tls::wire::Message;
use d2tls_common::*;

const AGENT: &str = env!("CARGO_BIN_EXE_d2tls-agent");
const DEVICE: &str = env!("CARGO_BIN_EXE_d2tls-device");

/// A device config from the common one with `replace` applied to its text.
fn device_cfg(
    pki: &Pki,
    agent_port: u16,
    key: &str,
    server: &str,
    edits: &[(&str, &str)],
) -> PathBuf {
    let base = device_config(pki, agent_port, key, server, "dtls", "ccm8");
    let mut text = std::fs::read_to_string(&base).expect("read");
    for (from, to) in edits {
        assert!(text.contains(from), "{from} not in {text}");
        text = text.replace(from, to);
    }
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let path = pki.dir.join(format!("device-msg-{n}.toml"));
    write_private(&path, text);
    path
}

/// Runs the device to its end; (success, stdout, stderr).
fn run_device(cfg: &Path, args: &[&str]) -> (bool, String, String) {
    let mut dev = Proc::spawn(Command::new(DEVICE).arg("--config").arg(cfg).args(args));
    let ok = dev.wait().success();
    (ok, dev.out.text(), dev.err.text())
}

/// The line of the device's final error.
fn error_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.starts_with("d2tls-device: error:"))
        .unwrap_or_else(|| panic!("no error line in:\n{stderr}"))
}

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &p.pid().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig}");
}

#[test]
fn an_agent_that_does_not_answer_is_a_timeout_in_seconds_not_an_os_error() {
    let tmp = TempDir::new("msg-timeout");
    let pki = Pki::new(tmp.path());
    let key = pairing_key_hex();
    let agent_port = port();
    let agent = start_agent(Path::new(AGENT), &agent_config(&pki, agent_port, &key));
    // Stopped, the agent's socket still accepts (the kernel does that) but nothing answers.
    signal(&agent, "-STOP");
    let cfg = device_cfg(
        &pki,
        agent_port,
        &key,
        "127.0.0.1:9",
        &[("timeout_secs = 30", "timeout_secs = 2")],
    );
    let (ok, _, err) = run_device(&cfg, &[]);
    signal(&agent, "-CONT");
    assert!(!ok);
    let line = error_line(&err);
    assert!(
        line.contains("no reply from the agent within 2 s"),
        "{line}"
    );
    assert!(!line.contains("os error"), "{line}");
}

#[test]
fn a_different_pairing_key_is_named_once_and_the_agent_warns() {
    let tmp = TempDir::new("msg-key");
    let pki = Pki::new(tmp.path());
    let agent_port = port();
    let agent = start_agent(
        Path::new(AGENT),
        &agent_config(&pki, agent_port, &pairing_key_hex()),
    );
    let cfg = device_cfg(&pki, agent_port, &pairing_key_hex(), "127.0.0.1:9", &[]);
    let (ok, _, err) = run_device(&cfg, &[]);
    assert!(!ok);
    let line = error_line(&err);
    assert!(
        line.contains("failed authentication")
            && line.contains("different pairing key for device `sensor-1`"),
        "{line}"
    );
    assert_eq!(line.matches("failed authentication").count(), 1, "{line}");
    assert!(
        agent.err.wait_for("event=\"channel.refused\""),
        "{}",
        agent.err.text()
    );
    let log = agent.err.text();
    let warn = log
        .lines()
        .find(|l| l.contains("channel.refused"))
        .expect("refusal line");
    assert!(
        warn.contains(" WARN ") && warn.contains("device=sensor-1") && warn.contains("pairing key"),
        "{warn}"
    );
    // An unknown device: refused at its hello, at warning level, and told so.
    let cfg = device_cfg(
        &pki,
        agent_port,
        &pairing_key_hex(),
        "127.0.0.1:9",
        &[("device_id = \"sensor-1\"", "device_id = \"sensor-77\"")],
    );
    let (ok, _, err) = run_device(&cfg, &[]);
    assert!(!ok);
    let line = error_line(&err);
    assert!(
        line.contains("closed the channel before it was open") && line.contains("[[device]]"),
        "{line}"
    );
    assert!(agent.err.wait_for("unknown device `sensor-77`"));
    let log = agent.err.text();
    let warn = log
        .lines()
        .find(|l| l.contains("sensor-77"))
        .expect("refusal line");
    assert!(
        warn.contains(" WARN ") && warn.contains("event=\"channel.refused\""),
        "{warn}"
    );
}

/// A scripted agent that opens the channel properly (hello-reply, `ready`), reads the
/// device's delegation request and then closes the connection; it does so for `connections`
/// connections. Returns its port.
fn agent_that_breaks(key_hex: &str, connections: usize) -> (u16, thread::JoinHandle<usize>) {
    let key = PairingKey::from_hex(key_hex).expect("key");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handle = thread::spawn(move || {
        let mut delegations = 0;
        for _ in 0..connections {
            let (mut s, _) = listener.accept().expect("accept");
            s.set_read_timeout(Some(PATIENCE)).expect("timeout");
            let hello = read_frame(&mut s);
            let (id, nonce_d) = channel::parse_hello(&hello).expect("hello");
            let nonce_a = [3u8; NONCE_LEN];
            write_frame(&mut s, &channel::hello_reply(&nonce_a));
            let (mut sealer, mut opener) =
                Channel::new(Role::Agent, &key, &id, &nonce_d, &nonce_a).split();
            write_frame(&mut s, &sealer.seal(&Message::Ready).expect("seal"));
            if let Ok(Message::Delegation(_)) = opener.open(&read_frame(&mut s)) {
                delegations += 1;
            }
            drop(s);
        }
        delegations
    });
    (port, handle)
}

#[test]
fn a_channel_that_worked_and_broke_does_not_blame_the_pairing_key() {
    let tmp = TempDir::new("msg-broke");
    let pki = Pki::new(tmp.path());
    let key = pairing_key_hex();
    // Two connections: the boot-time one, and the device's one reconnection.
    let (agent_port, agent) = agent_that_breaks(&key, 2);
    let cfg = device_cfg(&pki, agent_port, &key, "127.0.0.1:9", &[]);
    let (ok, _, err) = run_device(&cfg, &[]);
    assert!(!ok);
    assert_eq!(agent.join().expect("agent"), 2, "{err}");
    assert!(err.contains("event=\"channel.reconnect\""), "{err}");
    let line = error_line(&err);
    assert!(
        line.contains("closed the channel during a delegation"),
        "{line}"
    );
    assert!(!line.contains("pairing key"), "{line}");
}

#[test]
fn device_timeout_above_the_agents_handshake_timeout_hears_the_agents_reason() {
    let tmp = TempDir::new("msg-rule");
    let pki = Pki::new(tmp.path());
    let key = pairing_key_hex();
    // A server that never answers: the agent's handshake runs into its deadline.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let server = silent.local_addr().expect("addr").to_string();
    let agent_port = port();
    let agent_cfg = agent_config(&pki, agent_port, &key);
    let text = std::fs::read_to_string(&agent_cfg)
        .expect("read")
        .replace("ca_file", "handshake_timeout_secs = 2\nca_file");
    write_private(&agent_cfg, text);
    let _agent = start_agent(Path::new(AGENT), &agent_cfg);

    // Device above the agent: the agent's own reason arrives.
    let patient = device_cfg(
        &pki,
        agent_port,
        &key,
        &server,
        &[
            ("timeout_secs = 30", "timeout_secs = 10"),
            ("max_delegations = 3", "max_delegations = 1"),
        ],
    );
    let (ok, _, err) = run_device(&patient, &[]);
    assert!(!ok);
    let line = error_line(&err);
    assert!(
        line.contains(&format!("handshake with {server} timed out")) && line.contains("(Timeout)"),
        "{line}"
    );
    // Device below the agent: it gives up first, and says which rule was broken.
    let hasty = device_cfg(
        &pki,
        agent_port,
        &key,
        &server,
        &[
            ("timeout_secs = 30", "timeout_secs = 1"),
            ("max_delegations = 3", "max_delegations = 1"),
        ],
    );
    let (ok, _, err) = run_device(&hasty, &[]);
    assert!(!ok);
    let line = error_line(&err);
    assert!(
        line.contains("no reply from the agent within 1 s")
            && line.contains("must exceed the agent's handshake_timeout_secs"),
        "{line}"
    );
}

#[test]
fn a_device_certificate_without_client_auth_is_refused_at_boot_with_the_fix() {
    let tmp = TempDir::new("msg-eku");
    let pki = Pki::new(tmp.path());
    pki.reissue_device("extendedKeyUsage=serverAuth\n");
    let key = pairing_key_hex();
    let agent_port = port();
    let _agent = start_agent(Path::new(AGENT), &agent_config(&pki, agent_port, &key));
    let cfg = device_cfg(&pki, agent_port, &key, "127.0.0.1:9", &[]);
    let (ok, _, err) = run_device(&cfg, &[]);
    assert!(!ok);
    let line = error_line(&err);
    assert!(
        line.contains("device.pem")
            && line.contains("does not include clientAuth")
            && line.contains("extendedKeyUsage=clientAuth"),
        "{line}"
    );
    // Refused at boot: no delegation was asked for.
    assert!(!err.contains("delegation.request"), "{err}");
}

#[test]
fn no_data_from_the_server_names_expect_reply() {
    let tmp = TempDir::new("msg-quiet");
    let pki = Pki::new(tmp.path());
    let key = pairing_key_hex();
    let server_port = port();
    let server = s_server(&pki, "dtls", "ccm8", server_port);
    let agent_port = port();
    let _agent = start_agent(Path::new(AGENT), &agent_config(&pki, agent_port, &key));
    let cfg = device_cfg(
        &pki,
        agent_port,
        &key,
        &format!("127.0.0.1:{server_port}"),
        &[],
    );
    let (ok, out, err) = run_device(&cfg, &["--send", "anyone?", "--expect-reply", "2"]);
    assert!(!ok);
    assert!(
        out.contains("session reused=true") && out.contains("sent: anyone?"),
        "{out}"
    );
    assert!(server.out.wait_for("anyone?"));
    let line = error_line(&err);
    assert!(
        line.contains("no data from the server within 2 s (--expect-reply 2)"),
        "{line}"
    );
}
