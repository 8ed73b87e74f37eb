//! D2TLS against a stock GnuTLS server (`gnutls-serv` from Debian's gnutls-bin), which issues
//! session tickets (RFC 5077) by default: the agent runs the full handshake, the device
//! resumes with the server's ticket, and `gnutls-serv --echo` sends the device's line back.
//! TLS 1.2 and DTLS 1.2, with GnuTLS's resumption database and without it (`--nodb`: tickets
//! only). The server's side of the resumption: TLS prints `*** This is a resumed session`; in
//! DTLS mode it prints nothing of the kind, so its handshake log (`-d 4`) is read instead: two
//! ServerHellos, one Certificate (the agent's full handshake only) and a non-empty
//! SessionTicket extension from the device.
//!
//! `gnutls-serv` has no listen-address option: it listens on all addresses, for the seconds a
//! case runs (as in tests/tls_gnutls.rs). Its UDP replies leave from 127.0.0.1, so the device
//! and the agent address it there.

mod common;
mod d2tls_common;

use d2tls_common::*;

fn run_case(transport: &str, nodb: bool) {
    let gnutls = common::require_tool("gnutls-serv");
    let tmp = TempDir::new(&format!("gnutls-{transport}-{nodb}"));
    let pki = Pki::new(tmp.path());
    let key = pairing_key_hex();
    let server_port = port();
    let (udp, version) = match transport {
        "dtls" => (&["--udp"][..], "+VERS-DTLS1.2"),
        _ => (&[][..], "+VERS-TLS1.2"),
    };
    let priority =
        format!("NORMAL:-VERS-ALL:{version}:-CIPHER-ALL:+AES-128-CCM-8:-KX-ALL:+ECDHE-ECDSA");
    let mut extra = udp.to_vec();
    if nodb {
        extra.push("--nodb");
    }
    extra.extend(["-d", "4"]);
    let server = gnutls_serv(&gnutls, &pki, server_port, &priority, &extra);
    let agent_port = port();
    let agent = start_agent(
        &common::bin("d2tls-agent"),
        &agent_config(&pki, agent_port, &key),
    );
    let cfg = device_config(
        &pki,
        agent_port,
        &key,
        &format!("127.0.0.1:{server_port}"),
        transport,
        "ccm8",
    );
    let line = format!("ping-gnutls-{transport}");
    let out = device_echo(&common::bin("d2tls-device"), &cfg, &line, &agent, &server);
    assert!(
        out.contains("session reused=true resumed_by=ticket"),
        "{out}"
    );
    assert!(out.contains("signatures=1"), "{out}");
    // gnutls-serv --echo sent the device's line back.
    assert!(out.contains(&format!("received: {line}")), "{out}");

    let log = format!("{}{}", server.out.text(), server.err.text());
    let count = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    if transport == "tls" {
        assert!(log.contains("*** This is a resumed session"), "{log}");
    }
    assert_eq!(count("SERVER HELLO was queued"), 2, "{log}");
    assert_eq!(
        count("CERTIFICATE was queued"),
        1,
        "the device's handshake was not abbreviated:\n{log}"
    );
    let ticket_from_client = log
        .lines()
        .any(|l| l.contains("Parsing extension 'Session Ticket/35'") && !l.contains("(0 bytes)"));
    assert!(ticket_from_client, "no client presented a ticket:\n{log}");
}

#[test]
fn tls_ticket_with_gnutls_serv() {
    run_case("tls", false);
}

#[test]
fn tls_ticket_with_gnutls_serv_without_its_database() {
    run_case("tls", true);
}

#[test]
fn dtls_ticket_with_gnutls_serv() {
    run_case("dtls", false);
}

#[test]
fn dtls_ticket_with_gnutls_serv_without_its_database() {
    run_case("dtls", true);
}
