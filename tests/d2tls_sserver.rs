//! D2TLS against a stock `openssl s_server`: the agent runs the full handshake with the
//! device's certificate, the device resumes, and s_server reports a reused session with the
//! device's subject; data flows both ways. DTLS 1.2 and TLS 1.2, CCM-8 and GCM, and DTLS
//! over a link that loses datagrams; resumption by session ID (`-no_ticket`) and by session
//! ticket (RFC 5077) from a server with a session cache and from one without (`-no_cache`).

mod common;
mod d2tls_common;

use std::sync::Arc;
use std::time::Duration;

use d2tls_common::*;
use d2tls_linkemu::{self as linkemu, Dir, DropRule};

/// How the server resumes sessions: its s_server options and the device's `resumed_by`.
#[derive(Clone, Copy)]
enum Resumption {
    /// `-no_ticket`: session IDs only.
    SessionId,
    /// Default s_server: a session cache and tickets; the agent takes the ticket.
    TicketWithCache,
    /// `-no_cache`: no session cache, tickets only.
    TicketOnly,
    /// Default s_server, but the agent has `session_tickets = false`: session IDs.
    SessionIdByChoice,
}

fn run_case(transport: &str, suite: &str, lossy: bool) {
    run_resumption(transport, suite, lossy, Resumption::SessionId);
}

fn run_resumption(transport: &str, suite: &str, lossy: bool, resumption: Resumption) {
    common::require_tool("openssl");
    let tmp = TempDir::new(&format!("ss-{transport}-{suite}"));
    let pki = Pki::new(tmp.path());
    let key = pairing_key_hex();
    let server_port = port();
    let (options, resumed_by): (&[&str], _) = match resumption {
        Resumption::SessionId => (&["-no_ticket"], "resumed_by=session_id"),
        Resumption::TicketWithCache => (&[], "resumed_by=ticket"),
        Resumption::TicketOnly => (&["-no_cache"], "resumed_by=ticket"),
        Resumption::SessionIdByChoice => (&[], "resumed_by=session_id"),
    };
    let mut server = s_server_with(&pki, transport, suite, server_port, options);

    // The lossy case puts a link in front of the server that loses the 2nd and 4th datagram
    // of each direction of every client (agent and device) when it carries a handshake or
    // ChangeCipherSpec record. Alerts are spared: s_server serves one client at a time and
    // waits forever for a lost close_notify, which DTLS never resends.
    let link = lossy.then(|| {
        let rule: Arc<DropRule> = Arc::new(|_dir: Dir, i, d: &[u8]| {
            matches!(d.first(), Some(20 | 22)) && (i == 1 || i == 3)
        });
        linkemu::udp(
            "127.0.0.1:0".parse().expect("addr"),
            format!("127.0.0.1:{server_port}").parse().expect("addr"),
            Duration::ZERO,
            Some(rule),
        )
        .expect("link")
    });
    let server_addr = match &link {
        Some(l) => l.addr.to_string(),
        None => format!("127.0.0.1:{server_port}"),
    };

    let agent_port = port();
    let agent_cfg = agent_config(&pki, agent_port, &key);
    if let Resumption::SessionIdByChoice = resumption {
        let text = std::fs::read_to_string(&agent_cfg).expect("read");
        write_private(
            &agent_cfg,
            text.replace("ca_file", "session_tickets = false\nca_file"),
        );
    }
    let agent = start_agent(&common::bin("d2tls-agent"), &agent_cfg);
    let dev_cfg = device_config(&pki, agent_port, &key, &server_addr, transport, suite);
    let ping = format!("ping-{transport}-{suite}");
    let pong = format!("pong-{transport}-{suite}");
    let mut device = Proc::spawn(
        std::process::Command::new(common::bin("d2tls-device"))
            .arg("--config")
            .arg(&dev_cfg)
            .args(["--send", &ping, "--expect-reply", "60"]),
    );

    assert!(
        server.out.wait_for(&ping),
        "server never got the device's data\nserver:\n{}\ndevice:\n{}\nagent:\n{}",
        server.out.text(),
        device.err.text(),
        agent.err.text()
    );
    server.write_stdin(&format!("{pong}\n"));
    let status = device.wait();
    let dev_out = device.out.text();
    assert!(
        status.success(),
        "device failed\nstdout:\n{dev_out}\nstderr:\n{}\nagent:\n{}",
        device.err.text(),
        agent.err.text()
    );
    assert!(dev_out.contains("session reused=true"), "{dev_out}");
    assert!(dev_out.contains(resumed_by), "{dev_out}");
    assert!(dev_out.contains(&format!("received: {pong}")), "{dev_out}");
    let cipher = if suite == "ccm8" {
        "ECDHE-ECDSA-AES128-CCM8"
    } else {
        "ECDHE-ECDSA-AES128-GCM-SHA256"
    };
    assert!(dev_out.contains(&format!("cipher={cipher}")), "{dev_out}");
    assert!(dev_out.contains("signatures=1"), "{dev_out}");

    let server_out = server.out.text();
    assert_resumed_by_device(&server_out, cipher);

    // The agent forgot the context once it was handed over.
    let agent_log = agent.err.text();
    assert!(
        agent_log.contains("event=\"delegation.done\""),
        "{agent_log}"
    );
    assert!(
        agent_log.contains("event=\"context.forgotten\""),
        "{agent_log}"
    );
    if let Some(l) = &link {
        assert!(
            l.stats.dropped.load(std::sync::atomic::Ordering::Relaxed) >= 3,
            "the link dropped too little to test retransmission"
        );
    }
}

#[test]
fn dtls_ccm8_with_s_server() {
    run_case("dtls", "ccm8", false);
}

#[test]
fn dtls_gcm_with_s_server() {
    run_case("dtls", "gcm", false);
}

#[test]
fn tls_ccm8_with_s_server() {
    run_case("tls", "ccm8", false);
}

#[test]
fn tls_gcm_with_s_server() {
    run_case("tls", "gcm", false);
}

#[test]
fn dtls_over_a_lossy_link_still_completes() {
    run_case("dtls", "ccm8", true);
}

#[test]
fn dtls_ticket_from_a_server_with_a_session_cache() {
    run_resumption("dtls", "ccm8", false, Resumption::TicketWithCache);
}

#[test]
fn tls_ticket_from_a_server_with_a_session_cache() {
    run_resumption("tls", "gcm", false, Resumption::TicketWithCache);
}

#[test]
fn dtls_ticket_from_a_server_without_a_session_cache() {
    run_resumption("dtls", "ccm8", false, Resumption::TicketOnly);
}

#[test]
fn tls_ticket_from_a_server_without_a_session_cache() {
    run_resumption("tls", "ccm8", false, Resumption::TicketOnly);
}

#[test]
fn dtls_session_id_when_the_agent_asks_for_no_ticket() {
    run_resumption("dtls", "ccm8", false, Resumption::SessionIdByChoice);
}
