//! D2TLS over TLS 1.3 against stock servers: the agent runs the full TLS 1.3 handshake with the
//! device's certificate (client authentication required, the CertificateVerify signed by the
//! device), takes the server's NewSessionTicket and hands the device the PSK context; the
//! device resumes with it and data goes both ways.
//!
//! `openssl s_server -tls1_3`: psk_dhe_ke; psk_ke asked for with `-allow_no_dhe_kex` (OpenSSL
//! 3.0's server still chooses psk_dhe_ke when the client offers both, which OpenSSL's client
//! always does); 0-RTT early data accepted (`-early_data`) and rejected (`-max_early_data`
//! without `-early_data`: the ticket allows early data, the server skips it, the device sends
//! the line again after the handshake); a second connection on the held context with the
//! ticket the first one brought (0-RTT again, no new delegation); a server that sends no
//! ticket (`-num_tickets 0`), named in the device's error. `gnutls-serv`: psk_dhe_ke with its default
//! priorities, psk_ke when they prefer it. A rejected and an expired ticket (a new delegation
//! each): agent/tests/sessions.rs, with in-process TLS 1.3 servers.

mod common;
mod d2tls_common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use d2tls_common::*;

/// A TLS 1.3 device config (suite `gcm`: TLS_AES_128_GCM_SHA256) with `extra` lines.
fn tls13_device(pki: &Pki, agent_port: u16, key: &str, server: &str, extra: &str) -> PathBuf {
    let cfg = device_config(pki, agent_port, key, server, "tls13", "gcm");
    let text = std::fs::read_to_string(&cfg).expect("read device config");
    write_private(&cfg, format!("{text}{extra}"));
    cfg
}

/// Waits until `out` holds `needle` `n` times.
fn wait_count(out: &Output, needle: &str, n: usize) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if out.text().matches(needle).count() >= n {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

/// One s_server case: its options, the device's extra config, connections, and what the
/// device must report.
struct SServerCase<'a> {
    tag: &'a str,
    options: &'a [&'a str],
    device_extra: &'a str,
    connections: usize,
    kex: &'a str,
    early: &'a str,
    delegations: u32,
}

/// Runs `case` and returns (device stdout, device log, s_server output).
fn run_s_server(case: &SServerCase) -> (String, String, String) {
    common::require_tool("openssl");
    let tmp = TempDir::new(&format!("tls13-{}", case.tag));
    let pki = Pki::new(tmp.path());
    let key = pairing_key_hex();
    let server_port = port();
    let mut server = s_server_with(&pki, "tls13", "gcm", server_port, case.options);
    let agent_port = port();
    let agent = start_agent(
        &common::bin("d2tls-agent"),
        &agent_config(&pki, agent_port, &key),
    );
    let server_addr = format!("127.0.0.1:{server_port}");
    let cfg = tls13_device(&pki, agent_port, &key, &server_addr, case.device_extra);
    let ping = format!("ping-tls13-{}", case.tag);
    let pong = format!("pong-tls13-{}", case.tag);
    let mut device = Proc::spawn(
        Command::new(common::bin("d2tls-device"))
            .arg("--config")
            .arg(&cfg)
            .args(["--send", &ping, "--expect-reply", "60"])
            .args(["--connections", &case.connections.to_string()]),
    );
    for i in 1..=case.connections {
        assert!(
            wait_count(&server.out, &ping, i),
            "server never got the device's data (connection {i})\nserver:\n{}\ndevice:\n{}\n{}\nagent:\n{}",
            server.out.text(),
            device.out.text(),
            device.err.text(),
            agent.err.text()
        );
        server.write_stdin(&format!("{pong}\n"));
        assert!(wait_count(&device.out, &format!("received: {pong}"), i));
    }
    let status = device.wait();
    let (out, log) = (device.out.text(), device.err.text());
    assert!(
        status.success(),
        "device failed\nstdout:\n{out}\nstderr:\n{log}\nagent:\n{}",
        agent.err.text()
    );
    let last = out
        .lines()
        .rfind(|l| l.starts_with("session "))
        .unwrap_or_default();
    for want in [
        "session reused=true resumed_by=ticket".to_owned(),
        format!("kex={} early_data={}", case.kex, case.early),
        "version=TLSv1.3 cipher=TLS_AES_128_GCM_SHA256".to_owned(),
        format!("delegations={}", case.delegations),
        format!("signatures={}", case.delegations),
    ] {
        assert!(last.contains(&want), "want {want}:\n{out}");
    }
    assert_eq!(
        out.matches(&format!("received: {pong}")).count(),
        case.connections,
        "{out}"
    );
    let server_out = server.out.text();
    // The server resumed the device's session, which carries the device's certificate.
    assert_resumed_by_device(&server_out, "TLS_AES_128_GCM_SHA256");
    let agent_log = agent.err.text();
    assert!(
        agent_log.contains("event=\"context.forgotten\""),
        "{agent_log}"
    );
    (out, log, server_out)
}

#[test]
fn tls13_psk_dhe_ke_with_s_server() {
    run_s_server(&SServerCase {
        tag: "dhe",
        options: &[],
        device_extra: "",
        connections: 1,
        kex: "psk_dhe_ke",
        early: "none",
        delegations: 1,
    });
}

#[test]
fn tls13_psk_ke_asked_of_s_server_gets_psk_dhe_ke() {
    // The device offers psk_ke beside psk_dhe_ke (OpenSSL's client always offers both) and
    // s_server allows psk_ke, but OpenSSL 3.0's server picks psk_dhe_ke whenever it is offered.
    run_s_server(&SServerCase {
        tag: "ke",
        options: &["-allow_no_dhe_kex"],
        device_extra: "tls13_kex = \"psk_ke\"\n",
        connections: 1,
        kex: "psk_dhe_ke",
        early: "none",
        delegations: 1,
    });
}

#[test]
fn tls13_early_data_accepted_by_s_server() {
    let (out, _, server_out) = run_s_server(&SServerCase {
        tag: "0rtt",
        options: &["-early_data"],
        device_extra: "",
        connections: 1,
        kex: "psk_dhe_ke",
        early: "accepted",
        delegations: 1,
    });
    assert!(out.contains("sent: ping-tls13-0rtt (early data)"), "{out}");
    // s_server read early data, and the line only once. (It writes the data to stdout
    // unbuffered and its notes through a buffer, so the two do not interleave in order.)
    assert!(server_out.contains("Early data received:"), "{server_out}");
    assert_eq!(server_out.matches("ping-tls13-0rtt").count(), 1);
}

#[test]
fn tls13_early_data_rejected_is_sent_after_the_handshake() {
    let (out, log, server_out) = run_s_server(&SServerCase {
        tag: "0rtt-rejected",
        options: &["-max_early_data", "16384"],
        device_extra: "",
        connections: 1,
        kex: "psk_dhe_ke",
        early: "rejected",
        delegations: 1,
    });
    assert!(out.contains("sent: ping-tls13-0rtt-rejected\n"), "{out}");
    assert!(log.contains("early_data=\"rejected\""), "{log}");
    assert!(!server_out.contains("Early data received"), "{server_out}");
    assert_eq!(server_out.matches("ping-tls13-0rtt-rejected").count(), 1);
}

#[test]
fn tls13_a_second_connection_uses_the_ticket_the_first_brought() {
    // With -early_data, OpenSSL's server accepts a ticket's early data once. The device takes
    // the ticket its first (resumed) connection received for the second: one delegation, 0-RTT
    // accepted on both connections.
    let (out, log, server_out) = run_s_server(&SServerCase {
        tag: "fresh-ticket",
        options: &["-early_data"],
        device_extra: "",
        connections: 2,
        kex: "psk_dhe_ke",
        early: "accepted",
        delegations: 1,
    });
    assert!(log.contains("event=\"context.refreshed\""), "{log}");
    assert_eq!(out.matches("early_data=accepted").count(), 2, "{out}");
    assert_eq!(server_out.matches("Early data received:").count(), 2);
}

#[test]
fn tls13_a_server_that_sends_no_ticket_is_named() {
    common::require_tool("openssl");
    let tmp = TempDir::new("tls13-no-ticket");
    let pki = Pki::new(tmp.path());
    let key = pairing_key_hex();
    let server_port = port();
    let _server = s_server_with(&pki, "tls13", "gcm", server_port, &["-num_tickets", "0"]);
    let agent_port = port();
    let agent_cfg = agent_config(&pki, agent_port, &key);
    let text = std::fs::read_to_string(&agent_cfg).expect("read agent config");
    write_private(
        &agent_cfg,
        text.replace("ca_file", "handshake_timeout_secs = 2\nca_file"),
    );
    let agent = start_agent(&common::bin("d2tls-agent"), &agent_cfg);
    let server_addr = format!("127.0.0.1:{server_port}");
    let cfg = tls13_device(&pki, agent_port, &key, &server_addr, "");
    let text = std::fs::read_to_string(&cfg).expect("read device config");
    write_private(
        &cfg,
        text.replace("max_delegations = 3", "max_delegations = 1"),
    );
    let mut device = Proc::spawn(
        Command::new(common::bin("d2tls-device"))
            .arg("--config")
            .arg(&cfg),
    );
    let status = device.wait();
    let err = device.err.text();
    assert!(!status.success(), "{err}");
    let want = format!("{server_addr} sent no NewSessionTicket within 2 s of the handshake");
    assert!(err.contains(&want), "{err}");
    assert!(err.contains("gave up after 1 delegation(s)"), "{err}");
    assert!(agent.err.text().contains("delegation.failed"));
}

/// gnutls-serv --echo over TLS 1.3 with `priority`; the device's extra config; the kex the
/// device must report.
fn run_gnutls(tag: &str, priority: &str, device_extra: &str, kex: &str) {
    let gnutls = common::require_tool("gnutls-serv");
    let tmp = TempDir::new(&format!("gnutls13-{tag}"));
    let pki = Pki::new(tmp.path());
    let key = pairing_key_hex();
    let server_port = port();
    let server = gnutls_serv(&gnutls, &pki, server_port, priority, &[]);
    let agent_port = port();
    let agent = start_agent(
        &common::bin("d2tls-agent"),
        &agent_config(&pki, agent_port, &key),
    );
    let server_addr = format!("127.0.0.1:{server_port}");
    let cfg = tls13_device(&pki, agent_port, &key, &server_addr, device_extra);
    let line = format!("ping-gnutls13-{tag}");
    let out = device_echo(&common::bin("d2tls-device"), &cfg, &line, &agent, &server);
    for want in [
        "session reused=true resumed_by=ticket".to_owned(),
        format!("kex={kex}"),
        "version=TLSv1.3".to_owned(),
        "signatures=1".to_owned(),
        format!("received: {line}"),
    ] {
        assert!(out.contains(&want), "want {want}:\n{out}");
    }
    let log = format!("{}{}", server.out.text(), server.err.text());
    assert!(log.contains("*** This is a resumed session"), "{log}");
}

#[test]
fn tls13_psk_dhe_ke_with_gnutls_serv() {
    run_gnutls("dhe", "NORMAL:-VERS-ALL:+VERS-TLS1.3", "", "psk_dhe_ke");
}

#[test]
fn tls13_psk_ke_with_gnutls_serv() {
    // GnuTLS chooses psk_ke when its priorities hold PSK and no (EC)DHE-PSK.
    run_gnutls(
        "ke",
        "NORMAL:-VERS-ALL:+VERS-TLS1.3:+PSK:-ECDHE-PSK:-DHE-PSK",
        "tls13_kex = \"psk_ke\"\n",
        "psk_ke",
    );
}
