//! D2TLS with an in-process server of a standard library (rust-openssl's server side), and
//! the failure paths: resumption refused, bad context, a sign request the device did not ask
//! for, tampered and replayed channel records. The agent and device are the real binaries;
//! the misbehaving agents are built from the crate's own protocol modules.

#[path = "../../tests/d2tls_common/mod.rs"]
mod d2tls_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use d2tls::agent::{Agent, device_identity};
use d2tls::channel::{self, Channel, NONCE_LEN, PairingKey, Role};
use d2tls::config::AgentConfig;
use d2tls::openssl_ext;
use d2tls::wire::{ErrorCode, Message, SIG_ECDSA_P256_SHA256};
use d2tls_common::*;
use openssl::ssl::{
    ErrorCode as SslErrorCode, Ssl, SslContext, SslFiletype, SslMethod, SslOptions,
    SslSessionCacheMode, SslStream, SslVerifyMode, SslVersion,
};

const AGENT: &str = env!("CARGO_BIN_EXE_d2tls-agent");
const DEVICE: &str = env!("CARGO_BIN_EXE_d2tls-device");

/// What the in-process server saw on one connection.
#[derive(Debug)]
struct Seen {
    reused: bool,
    subject: String,
    master_key: Vec<u8>,
    data: String,
    error: Option<String>,
}

unsafe extern "C" {
    // Not wrapped by the openssl crate: the lifetime of the server's sessions and tickets.
    fn SSL_CTX_set_timeout(ctx: *mut openssl_sys::SSL_CTX, t: std::ffi::c_long)
    -> std::ffi::c_long;
}

fn server_context(pki: &Pki) -> SslContext {
    server_context_with(pki, None, SslVersion::TLS1_2)
}

/// With `tickets = Some(secs)`: the server issues session tickets (its own random ticket keys)
/// valid for `secs`, and keeps no session cache, so it resumes by ticket only. `version`:
/// TLS 1.2 or TLS 1.3 (which always resumes by ticket).
fn server_context_with(pki: &Pki, tickets: Option<u64>, version: SslVersion) -> SslContext {
    let mut b = SslContext::builder(SslMethod::tls_server()).expect("ctx");
    b.set_min_proto_version(Some(version)).expect("min");
    b.set_max_proto_version(Some(version)).expect("max");
    b.set_certificate_file(&pki.server_cert, SslFiletype::PEM)
        .expect("cert");
    b.set_private_key_file(&pki.server_key, SslFiletype::PEM)
        .expect("key");
    b.set_ca_file(&pki.ca).expect("ca");
    b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    b.set_session_id_context(b"d2tls-test").expect("sid ctx");
    if let Some(secs) = tickets {
        b.set_session_cache_mode(SslSessionCacheMode::OFF);
        let secs = std::ffi::c_long::try_from(secs).expect("secs");
        // SAFETY: `b` holds a live SSL_CTX; SSL_CTX_set_timeout only stores the number.
        unsafe { SSL_CTX_set_timeout(b.as_ptr(), secs) };
    } else {
        b.set_options(SslOptions::NO_TICKET);
    }
    b.set_cipher_list("ECDHE-ECDSA-AES128-CCM8:ECDHE-ECDSA-AES128-GCM-SHA256")
        .expect("ciphers");
    b.build()
}

/// Serves `plan.len()` TLS connections; connection i uses session cache `plan[i]` (0 or 1),
/// so a session made under cache 0 is unknown to cache 1 (a server that forgot it).
fn start_server(pki: &Pki, plan: Vec<usize>) -> (String, mpsc::Receiver<Seen>) {
    start_server_with(pki, plan, None, None, SslVersion::TLS1_2)
}

/// As [`start_server`]; with `tickets`, two ticket-only servers whose ticket keys differ (a
/// ticket of one is refused by the other, as by a server that changed its keys). With
/// `pause = Some((i, d))` the server waits `d` before it takes connection `i`.
fn start_server_with(
    pki: &Pki,
    plan: Vec<usize>,
    tickets: Option<u64>,
    pause: Option<(usize, Duration)>,
    version: SslVersion,
) -> (String, mpsc::Receiver<Seen>) {
    let caches = [
        server_context_with(pki, tickets, version),
        server_context_with(pki, tickets, version),
    ];
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for (i, which) in plan.into_iter().enumerate() {
            if let Some((at, d)) = pause
                && at == i
            {
                thread::sleep(d);
            }
            let Ok((sock, _)) = listener.accept() else {
                return;
            };
            let _ = sock.set_read_timeout(Some(PATIENCE));
            let seen = match Ssl::new(&caches[which]).and_then(|s| SslStream::new(s, sock)) {
                Err(e) => Seen::failed(e.to_string()),
                Ok(mut s) => match s.accept() {
                    Err(e) => Seen::failed(e.to_string()),
                    Ok(()) => serve(&mut s),
                },
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

impl Seen {
    fn failed(e: String) -> Seen {
        Seen {
            reused: false,
            subject: String::new(),
            master_key: vec![],
            data: String::new(),
            error: Some(e),
        }
    }
}

/// Reads application data, waiting through read timeouts (and resending DTLS flights);
/// `None` on error, `Some(0)` when the client closed.
fn read_retry<S: Read + Write>(s: &mut SslStream<S>, buf: &mut [u8]) -> Option<usize> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match s.ssl_read(buf) {
            Ok(n) => return Some(n),
            Err(e) if e.code() == SslErrorCode::ZERO_RETURN => return Some(0),
            Err(e)
                if (e.code() == SslErrorCode::WANT_READ
                    || e.code() == SslErrorCode::WANT_WRITE)
                    && Instant::now() < deadline =>
            {
                let _ = openssl_ext::dtls_handle_timeout(s.ssl());
            }
            Err(_) => return None,
        }
    }
}

fn serve<S: Read + Write>(s: &mut SslStream<S>) -> Seen {
    let ssl = s.ssl();
    let reused = ssl.session_reused();
    let subject = ssl
        .peer_certificate()
        .map(|c| {
            c.subject_name()
                .entries()
                .filter_map(|e| e.data().to_string().ok())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let mut master_key = vec![0u8; 48];
    let n = ssl.session().map_or(0, |x| x.master_key(&mut master_key));
    master_key.truncate(n);
    let mut data = String::new();
    let mut buf = [0u8; 1024];
    if reused && let Some(n) = read_retry(s, &mut buf) {
        data = String::from_utf8_lossy(&buf[..n]).to_string();
        let _ = s.ssl_write(b"pong-in-process\n");
    }
    // Wait for the client to close (the agent sends close_notify after its handshake).
    while matches!(read_retry(s, &mut buf), Some(n) if n > 0) {}
    // Without our own close_notify OpenSSL drops the session from the cache.
    let _ = s.shutdown();
    Seen {
        reused,
        subject,
        master_key,
        data,
        error: None,
    }
}

/// One UDP socket seen as the datagram stream of one peer (others are ignored).
struct PeerDatagrams {
    sock: Arc<UdpSocket>,
    peer: SocketAddr,
}

impl Read for PeerDatagrams {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let (n, from) = self.sock.recv_from(buf)?;
            if from == self.peer {
                return Ok(n);
            }
        }
    }
}

impl Write for PeerDatagrams {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.sock.send_to(buf, self.peer)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// rust-openssl's DTLS 1.2 server on one UDP socket, serving `conns` clients one after the
/// other, retransmitting through `DTLSv1_handle_timeout` as a real DTLS server does.
fn start_dtls_server(pki: &Pki, conns: usize) -> (String, mpsc::Receiver<Seen>) {
    let mut b = SslContext::builder(SslMethod::dtls_server()).expect("ctx");
    b.set_min_proto_version(Some(SslVersion::DTLS1_2))
        .expect("min");
    b.set_certificate_file(&pki.server_cert, SslFiletype::PEM)
        .expect("cert");
    b.set_private_key_file(&pki.server_key, SslFiletype::PEM)
        .expect("key");
    b.set_ca_file(&pki.ca).expect("ca");
    b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    b.set_session_id_context(b"d2tls-test").expect("sid ctx");
    b.set_options(SslOptions::NO_TICKET | SslOptions::NO_QUERY_MTU);
    b.set_cipher_list("ECDHE-ECDSA-AES128-CCM8:ECDHE-ECDSA-AES128-GCM-SHA256")
        .expect("ciphers");
    let ctx = b.build();
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind"));
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let addr = sock.local_addr().expect("addr").to_string();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut done: Vec<SocketAddr> = Vec::new();
        let mut buf = [0u8; 2048];
        for _ in 0..conns {
            // The next client is the sender of the next datagram from a new address.
            let peer = loop {
                match sock.peek_from(&mut buf) {
                    Ok((_, from)) if done.contains(&from) => {
                        let _ = sock.recv_from(&mut buf);
                    }
                    Ok((_, from)) => break from,
                    Err(_) => {}
                }
            };
            done.push(peer);
            let io = PeerDatagrams {
                sock: sock.clone(),
                peer,
            };
            let seen = match Ssl::new(&ctx).and_then(|mut s| {
                s.set_mtu(1200)?;
                SslStream::new(s, io)
            }) {
                Err(e) => Seen::failed(e.to_string()),
                Ok(mut s) => {
                    let deadline = Instant::now() + PATIENCE;
                    let r = loop {
                        match s.accept() {
                            Ok(()) => break Ok(()),
                            Err(e)
                                if (e.code() == SslErrorCode::WANT_READ
                                    || e.code() == SslErrorCode::WANT_WRITE)
                                    && Instant::now() < deadline =>
                            {
                                let _ = openssl_ext::dtls_handle_timeout(s.ssl());
                            }
                            Err(e) => break Err(e.to_string()),
                        }
                    };
                    match r {
                        Ok(()) => serve(&mut s),
                        Err(e) => Seen::failed(e),
                    }
                }
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

#[test]
fn dtls_with_an_in_process_server() {
    let tmp = TempDir::new("inproc-dtls");
    let pki = Pki::new(tmp.path());
    let key = pairing_key_hex();
    let (server, seen) = start_dtls_server(&pki, 2);
    let agent_port = port();
    let agent = start_agent(Path::new(AGENT), &agent_config(&pki, agent_port, &key));
    let mut dev = device(&device_config(
        &pki, agent_port, &key, &server, "dtls", "ccm8",
    ));
    let status = dev.wait();
    let out = dev.out.text();
    assert!(
        status.success(),
        "device failed:\n{out}\n{}\nagent:\n{}",
        dev.err.text(),
        agent.err.text()
    );
    let full = recv(&seen);
    assert!(full.error.is_none() && !full.reused, "{full:?}");
    let resumed = recv(&seen);
    assert!(resumed.reused, "{resumed:?}");
    assert_eq!(resumed.subject, "sensor-1,D2TLS Devices");
    assert_eq!(resumed.data.trim(), "ping-in-process");
    assert!(out.contains("received: pong-in-process"), "{out}");
    assert!(out.contains("cipher=ECDHE-ECDSA-AES128-CCM8"), "{out}");
}

fn device(cfg: &Path) -> Proc {
    Proc::spawn(Command::new(DEVICE).arg("--config").arg(cfg).args([
        "--send",
        "ping-in-process",
        "--expect-reply",
        "60",
    ]))
}

fn recv(rx: &mpsc::Receiver<Seen>) -> Seen {
    rx.recv_timeout(PATIENCE).expect("server saw no connection")
}

#[test]
fn tls_with_an_in_process_server_and_the_agent_keeps_nothing() {
    in_process_server_and_the_agent_keeps_nothing("tls");
}

#[test]
fn tls13_with_an_in_process_server_and_the_agent_keeps_nothing() {
    in_process_server_and_the_agent_keeps_nothing("tls13");
}

/// TLS 1.2: the secret scanned for is the master secret; TLS 1.3: the resumption PSK (the
/// resumed session's master key on the server).
fn in_process_server_and_the_agent_keeps_nothing(transport: &str) {
    let tmp = TempDir::new("inproc");
    let pki = Pki::new(tmp.path());
    let key = pairing_key_hex();
    let (server, seen) = if transport == "tls13" {
        start_server_with(&pki, vec![0, 0], Some(3600), None, SslVersion::TLS1_3)
    } else {
        start_server(&pki, vec![0, 0])
    };
    let agent_port = port();
    let agent = start_agent(Path::new(AGENT), &agent_config(&pki, agent_port, &key));
    let mut dev = device(&device_config(
        &pki, agent_port, &key, &server, transport, "gcm",
    ));
    let status = dev.wait();
    let out = dev.out.text();
    assert!(
        status.success(),
        "device failed:\n{out}\n{}\nagent:\n{}",
        dev.err.text(),
        agent.err.text()
    );

    let full = recv(&seen);
    assert!(full.error.is_none() && !full.reused, "{full:?}");
    assert_eq!(full.subject, "sensor-1,D2TLS Devices");
    let resumed = recv(&seen);
    assert!(resumed.reused, "{resumed:?}");
    assert_eq!(resumed.subject, "sensor-1,D2TLS Devices");
    assert_eq!(resumed.data.trim(), "ping-in-process");
    assert!(out.contains("received: pong-in-process"), "{out}");
    if transport == "tls13" {
        // The PSK derived from the full handshake's resumption secret, not its own secret.
        assert!(out.contains("version=TLSv1.3"), "{out}");
        assert_eq!(resumed.master_key.len(), 32);
    } else {
        assert_eq!(resumed.master_key.len(), 48);
        assert_eq!(resumed.master_key, full.master_key);
    }

    // After the handover, the agent's memory holds neither the session's master secret nor
    // (ever) the device's private key.
    assert!(agent.err.wait_for("context.forgotten"));
    assert!(
        scanner_works(&resumed.master_key),
        "the memory scanner reads nothing"
    );
    assert!(
        !memory_contains(agent.pid(), &resumed.master_key),
        "agent still holds the master secret"
    );
    assert!(
        !memory_contains(agent.pid(), &pki.device_scalar()),
        "agent holds the device key"
    );
    let cfg_text = std::fs::read_to_string(pki.dir.join("agent.toml")).expect("agent.toml");
    assert!(!cfg_text.contains("device.key") && !cfg_text.contains("PRIVATE"));
}

#[test]
fn resumption_refused_then_a_new_delegation_succeeds() {
    refused_then_resumed_on_a_new_delegation(false, "tls");
}

#[test]
fn a_rejected_ticket_means_a_new_delegation() {
    refused_then_resumed_on_a_new_delegation(true, "tls");
}

#[test]
fn tls13_a_rejected_ticket_means_a_new_delegation() {
    refused_then_resumed_on_a_new_delegation(true, "tls13");
}

/// 1: agent (server 0); 2: the device resumes on server 1, which never saw the session (or,
/// with `tickets`, ticket-only servers whose ticket keys differ: the ticket is rejected);
/// 3: agent again (server 1); 4: the device resumes on server 1.
fn refused_then_resumed_on_a_new_delegation(tickets: bool, transport: &str) {
    let tmp = TempDir::new(if tickets { "ticket-refused" } else { "refused" });
    let pki = Pki::new(tmp.path());
    let (server, seen) = start_server_with(
        &pki,
        vec![0, 1, 1, 1],
        tickets.then_some(3600),
        None,
        version_of(transport),
    );
    resumed_on_the_second_delegation(&pki, &server, &seen, tickets, transport);
}

fn version_of(transport: &str) -> SslVersion {
    if transport == "tls13" {
        SslVersion::TLS1_3
    } else {
        SslVersion::TLS1_2
    }
}

#[test]
fn an_expired_ticket_means_a_new_delegation() {
    expired_ticket_means_a_new_delegation("tls");
}

#[test]
fn tls13_an_expired_ticket_means_a_new_delegation() {
    expired_ticket_means_a_new_delegation("tls13");
}

fn expired_ticket_means_a_new_delegation(transport: &str) {
    let tmp = TempDir::new("ticket-expired");
    let pki = Pki::new(tmp.path());
    // One ticket-only server whose tickets last 2 s; it takes the device's first resumption
    // 3.5 s after the agent's handshake, when the ticket has expired (full handshake, which
    // the device stops); the second delegation's ticket is used at once.
    let (server, seen) = start_server_with(
        &pki,
        vec![0, 0, 0, 0],
        Some(2),
        Some((1, Duration::from_millis(3500))),
        version_of(transport),
    );
    resumed_on_the_second_delegation(&pki, &server, &seen, true, transport);
}

/// The device's first resumption is refused (connection 1 of `seen`), its second delegation
/// (connections 2 and 3) resumes, by ticket if `tickets`.
fn resumed_on_the_second_delegation(
    pki: &Pki,
    server: &str,
    seen: &mpsc::Receiver<Seen>,
    tickets: bool,
    transport: &str,
) {
    let key = pairing_key_hex();
    let agent_port = port();
    let agent = start_agent(Path::new(AGENT), &agent_config(pki, agent_port, &key));
    let suite = if transport == "tls13" { "gcm" } else { "ccm8" };
    let mut dev = device(&device_config(
        pki, agent_port, &key, server, transport, suite,
    ));
    let status = dev.wait();
    let (out, log) = (dev.out.text(), dev.err.text());
    assert!(
        status.success(),
        "device failed:\n{out}\n{log}\nagent:\n{}",
        agent.err.text()
    );
    let by = if tickets { "ticket" } else { "session_id" };
    assert!(
        out.contains(&format!("session reused=true resumed_by={by}"))
            && out.contains("delegations=2"),
        "{out}"
    );
    assert!(log.contains("refused to resume"), "{log}");
    let results: Vec<Seen> = (0..4).map(|_| recv(seen)).collect();
    assert!(!results[0].reused && results[0].error.is_none());
    assert!(
        results[1].error.is_some(),
        "the refused resumption must not complete: {:?}",
        results[1]
    );
    assert!(
        results[3].reused && results[3].subject == "sensor-1,D2TLS Devices",
        "{:?}",
        results[3]
    );
    assert!(
        results[3].data.contains("ping-in-process"),
        "{:?}",
        results[3]
    );
}

/// What a misbehaving agent does.
#[derive(Clone, Copy, PartialEq)]
enum Rogue {
    /// First context has a wrong master secret, the second is right.
    BadContextOnce,
    /// Asks for a signature of a delegation the device never asked for, then behaves.
    ForeignSignRequest,
}

/// A one-connection agent built from the crate's modules, misbehaving as told. Returns what
/// the device sent it that matters to the test.
fn rogue_agent(pki: &Pki, key_hex: &str, mode: Rogue) -> (u16, thread::JoinHandle<Vec<Message>>) {
    let agent_toml = agent_config(pki, 1, key_hex);
    let cfg = AgentConfig::load(&agent_toml).expect("agent config");
    let pairing = PairingKey::from_hex(key_hex).expect("key");
    let agent = Arc::new(Agent::new(cfg).expect("agent"));
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handle = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let hello = read_frame(&mut s);
        let (id, nonce_d) = channel::parse_hello(&hello).expect("hello");
        let nonce_a = [7u8; NONCE_LEN];
        write_frame(&mut s, &channel::hello_reply(&nonce_a));
        let (mut sealer, mut opener) =
            Channel::new(Role::Agent, &pairing, &id, &nonce_d, &nonce_a).split();
        let mut send =
            |s: &mut TcpStream, m: &Message| write_frame(s, &sealer.seal(m).expect("seal"));
        send(&mut s, &Message::Ready);
        let mut noted = Vec::new();
        let mut round = 0;
        loop {
            let frame = read_frame(&mut s);
            if frame.is_empty() {
                return noted;
            }
            let Message::Delegation(req) = opener.open(&frame).expect("open") else {
                continue;
            };
            round += 1;
            if mode == Rogue::ForeignSignRequest && round == 1 {
                let foreign = Message::SignRequest {
                    delegation_id: req.delegation_id ^ 1,
                    scheme: SIG_ECDSA_P256_SHA256,
                    digest: vec![0x5A; 32],
                };
                send(&mut s, &foreign);
                noted.push(opener.open(&read_frame(&mut s)).expect("open"));
            }
            let (certs, public) = device_identity(&req.cert_chain).expect("identity");
            let (dig_tx, dig_rx) = mpsc::channel::<Vec<u8>>();
            let (sig_tx, sig_rx) = mpsc::channel::<Option<Vec<u8>>>();
            let sig_rx = std::sync::Mutex::new(sig_rx);
            let a = agent.clone();
            let r = req.clone();
            let worker = thread::spawn(move || {
                a.delegate(
                    &r,
                    &certs,
                    &public,
                    Box::new(move |d| {
                        dig_tx.send(d.to_vec()).ok()?;
                        sig_rx.lock().ok()?.recv().ok().flatten()
                    }),
                    Duration::ZERO,
                )
            });
            let digest = dig_rx.recv().expect("digest");
            send(
                &mut s,
                &Message::SignRequest {
                    delegation_id: req.delegation_id,
                    scheme: SIG_ECDSA_P256_SHA256,
                    digest,
                },
            );
            let Message::Signature { signature, .. } =
                opener.open(&read_frame(&mut s)).expect("open")
            else {
                panic!("expected a signature");
            };
            sig_tx.send(Some(signature)).expect("relay");
            let mut context = worker.join().expect("join").expect("delegation");
            if mode == Rogue::BadContextOnce && round == 1 {
                context.master_secret[0] ^= 0xFF;
            }
            send(
                &mut s,
                &Message::Context {
                    delegation_id: req.delegation_id,
                    context,
                },
            );
        }
    });
    (port, handle)
}

#[test]
fn a_bad_context_is_detected_and_a_new_delegation_asked_for() {
    let tmp = TempDir::new("badctx");
    let pki = Pki::new(tmp.path());
    let key = pairing_key_hex();
    let (server, seen) = start_server(&pki, vec![0, 0, 0, 0]);
    let (agent_port, rogue) = rogue_agent(&pki, &key, Rogue::BadContextOnce);
    let mut dev = device(&device_config(
        &pki, agent_port, &key, &server, "tls", "gcm",
    ));
    let status = dev.wait();
    let (out, log) = (dev.out.text(), dev.err.text());
    assert!(status.success(), "{out}\n{log}");
    assert!(log.contains("context.discarded"), "{log}");
    assert!(
        out.contains("session reused=true") && out.contains("delegations=2"),
        "{out}"
    );
    let results: Vec<Seen> = (0..4).map(|_| recv(&seen)).collect();
    assert!(
        results[1].error.is_some(),
        "a wrong master secret must fail the Finished check"
    );
    assert!(results[3].reused);
    drop(rogue);
}

#[test]
fn a_sign_request_the_device_did_not_ask_for_is_refused() {
    let tmp = TempDir::new("foreign");
    let pki = Pki::new(tmp.path());
    let key = pairing_key_hex();
    let (server, _seen) = start_server(&pki, vec![0, 0]);
    let (agent_port, rogue) = rogue_agent(&pki, &key, Rogue::ForeignSignRequest);
    let mut dev = device(&device_config(
        &pki, agent_port, &key, &server, "tls", "gcm",
    ));
    let status = dev.wait();
    let (out, log) = (dev.out.text(), dev.err.text());
    assert!(status.success(), "{out}\n{log}");
    assert!(
        out.contains("signatures=1"),
        "only the delegation's own digest is signed: {out}"
    );
    assert!(log.contains("did not ask for"), "{log}");
    let noted = rogue.join().expect("rogue");
    assert!(
        matches!(
            noted.first(),
            Some(Message::Error {
                code: ErrorCode::UnexpectedSignRequest,
                ..
            })
        ),
        "{noted:?}"
    );
}

/// A TCP relay between device and agent that alters the agent's first record.
fn meddler(agent_port: u16, replay: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    thread::spawn(move || {
        let Ok((mut dev, _)) = listener.accept() else {
            return;
        };
        let mut agent = TcpStream::connect(("127.0.0.1", agent_port)).expect("agent");
        let (mut dev_r, mut agent_w) = (
            dev.try_clone().expect("clone"),
            agent.try_clone().expect("clone"),
        );
        thread::spawn(move || {
            let _ = std::io::copy(&mut dev_r, &mut agent_w);
        });
        let deadline = Instant::now() + PATIENCE;
        let mut index = 0;
        while Instant::now() < deadline {
            let frame = read_frame(&mut agent);
            if frame.is_empty() {
                return;
            }
            let mut out = frame.clone();
            if index == 1 && !replay {
                let last = out.len() - 1;
                out[last] ^= 0x01;
            }
            if write_frame_checked(&mut dev, &out).is_err() {
                return;
            }
            if index == 2 && replay {
                // Send the agent's previous record again.
                let _ = write_frame_checked(&mut dev, &frame);
            }
            index += 1;
        }
    });
    port
}

fn write_frame_checked(s: &mut TcpStream, body: &[u8]) -> std::io::Result<()> {
    s.write_all(&channel::framed(body).expect("frame"))
}

#[test]
fn tampered_and_replayed_channel_records_are_refused() {
    let tmp = TempDir::new("meddle");
    let pki = Pki::new(tmp.path());
    let key = pairing_key_hex();
    let (server, _seen) = start_server(&pki, vec![0, 0, 0, 0]);
    let agent_port = port();
    let _agent = start_agent(Path::new(AGENT), &agent_config(&pki, agent_port, &key));
    for (replay, want) in [
        (false, "failed authentication"),
        (true, "replayed or reordered"),
    ] {
        let relay = meddler(agent_port, replay);
        let mut dev = device(&device_config(&pki, relay, &key, &server, "tls", "gcm"));
        let status = dev.wait();
        let err = dev.err.text();
        assert!(
            !status.success(),
            "device accepted an altered channel: {}",
            dev.out.text()
        );
        assert!(err.contains(want), "replay={replay}: {err}");
    }
}

#[test]
fn many_devices_at_once() {
    let tmp = TempDir::new("many");
    let pki = Pki::new(tmp.path());
    let ctx = server_context(&pki);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server = listener.local_addr().expect("addr").to_string();
    let (tx, seen) = mpsc::channel();
    const N: usize = 4;
    thread::spawn(move || {
        // Accepts until the test ends: a resumption that races the server's caching of a
        // session it has just finished (another thread) is refused, and the device then asks
        // for another delegation.
        loop {
            let Ok((sock, _)) = listener.accept() else {
                return;
            };
            let (ctx, tx) = (ctx.clone(), tx.clone());
            thread::spawn(move || {
                let _ = sock.set_read_timeout(Some(PATIENCE));
                let seen = match Ssl::new(&ctx).and_then(|s| SslStream::new(s, sock)) {
                    Err(e) => Seen::failed(e.to_string()),
                    Ok(mut s) => match s.accept() {
                        Err(e) => Seen::failed(e.to_string()),
                        Ok(()) => serve(&mut s),
                    },
                };
                let _ = tx.send(seen);
            });
        }
    });
    let keys: Vec<String> = (0..N).map(|_| pairing_key_hex()).collect();
    let agent_port = port();
    let mut agent_toml = format!("listen = \"127.0.0.1:{agent_port}\"\nca_file = \"ca.pem\"\n");
    for (i, k) in keys.iter().enumerate() {
        agent_toml += &format!("[[device]]\nid = \"sensor-{i}\"\npairing_key = \"{k}\"\n");
    }
    let agent_cfg = pki.dir.join("agent-many.toml");
    write_private(&agent_cfg, agent_toml);
    let agent = start_agent(Path::new(AGENT), &agent_cfg);
    let mut devices: Vec<Proc> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let cfg = device_config(&pki, agent_port, k, &server, "tls", "ccm8");
            let text = std::fs::read_to_string(&cfg).expect("read").replace(
                "device_id = \"sensor-1\"",
                &format!("device_id = \"sensor-{i}\""),
            );
            let cfg = pki.dir.join(format!("device-{i}.toml"));
            write_private(&cfg, text);
            device(&cfg)
        })
        .collect();
    for d in &mut devices {
        let status = d.wait();
        assert!(
            status.success(),
            "{}\n{}\nagent:\n{}",
            d.out.text(),
            d.err.text(),
            agent.err.text()
        );
        assert!(d.out.text().contains("received: pong-in-process"));
    }
    let mut reused = 0;
    while reused < N {
        if recv(&seen).reused {
            reused += 1;
        }
    }
    let log = agent.err.text();
    for i in 0..N {
        assert!(log.contains(&format!("device=sensor-{i}")), "{log}");
    }
}

#[test]
fn bad_configs_and_unknown_devices_get_clear_errors() {
    let tmp = TempDir::new("badcfg");
    let pki = Pki::new(tmp.path());
    let key = pairing_key_hex();
    let bad = pki.dir.join("bad-agent.toml");
    std::fs::write(
        &bad,
        "listen = \"127.0.0.1:1\"\nca_file = \"ca.pem\"\nprivate_key = \"device.key\"\n",
    )
    .expect("write");
    let out = Command::new(AGENT)
        .arg("--config")
        .arg(&bad)
        .output()
        .expect("run agent");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad-agent.toml") && err.contains("private_key"),
        "{err}"
    );

    // A device the agent does not know is turned away before any delegation.
    let agent_port = port();
    let _agent = start_agent(Path::new(AGENT), &agent_config(&pki, agent_port, &key));
    let cfg = device_config(&pki, agent_port, &key, "127.0.0.1:9", "tls", "gcm");
    let text = std::fs::read_to_string(&cfg)
        .expect("read")
        .replace("sensor-1", "stranger");
    write_private(&cfg, text);
    let mut dev = device(&cfg);
    assert!(!dev.wait().success());
    assert!(
        dev.err.text().contains("closed the channel"),
        "{}",
        dev.err.text()
    );
    // A server outside the agent's allowed_servers is refused, with the reason.
    let listed_port = port();
    let text = std::fs::read_to_string(pki.dir.join("agent.toml"))
        .expect("read")
        .replace(&format!("{agent_port}"), &format!("{listed_port}"))
        .replace("ca_file", "allowed_servers = [\"127.0.0.1:9\"]\nca_file");
    let listed = pki.dir.join("agent-listed.toml");
    write_private(&listed, text);
    let _agent2 = start_agent(Path::new(AGENT), &listed);
    let cfg = device_config(&pki, listed_port, &key, "127.0.0.1:10", "tls", "gcm");
    let mut dev = device(&cfg);
    assert!(!dev.wait().success());
    assert!(
        dev.err
            .text()
            .contains("not in the agent's allowed_servers"),
        "{}",
        dev.err.text()
    );

    let out = Command::new(DEVICE)
        .args(["--config", "/nonexistent.toml"])
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.toml: cannot read"));
}

#[test]
fn a_held_context_serves_further_connections_without_a_new_delegation() {
    let tmp = TempDir::new("held");
    let pki = Pki::new(tmp.path());
    let key = pairing_key_hex();
    let (server, seen) = start_server(&pki, vec![0, 0, 0, 0]);
    let agent_port = port();
    let agent = start_agent(Path::new(AGENT), &agent_config(&pki, agent_port, &key));
    let cfg = device_config(&pki, agent_port, &key, &server, "tls", "ccm8");
    let mut dev = Proc::spawn(Command::new(DEVICE).arg("--config").arg(&cfg).args([
        "--send",
        "ping-in-process",
        "--expect-reply",
        "60",
        "--connections",
        "3",
    ]));
    let status = dev.wait();
    let out = dev.out.text();
    assert!(status.success(), "{out}\n{}", dev.err.text());
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("session ")).collect();
    assert_eq!(lines.len(), 3, "{out}");
    for l in &lines {
        assert!(
            l.contains("reused=true") && l.contains("delegations=1"),
            "{l}"
        );
    }
    assert_eq!(out.matches("received: pong-in-process").count(), 3, "{out}");
    let results: Vec<Seen> = (0..4).map(|_| recv(&seen)).collect();
    assert_eq!(
        results.iter().filter(|s| s.reused).count(),
        3,
        "{results:?}"
    );
    assert_eq!(agent.err.text().matches("delegation.done").count(), 1);
}

/// A relay to the agent that cuts its first connection when the device sends its first record
/// (the delegation request, after the channel was opened at boot); later connections pass.
fn cutter(agent_port: u16) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut dev) = conn else { return };
            let mut agent = TcpStream::connect(("127.0.0.1", agent_port)).expect("agent");
            let (mut agent_r, mut dev_w) = (
                agent.try_clone().expect("clone"),
                dev.try_clone().expect("clone"),
            );
            thread::spawn(move || {
                let _ = std::io::copy(&mut agent_r, &mut dev_w);
            });
            if n == 0 {
                let hello = read_frame(&mut dev);
                let _ = write_frame_checked(&mut agent, &hello);
                let _ = read_frame(&mut dev);
                let _ = dev.shutdown(std::net::Shutdown::Both);
                let _ = agent.shutdown(std::net::Shutdown::Both);
            } else {
                thread::spawn(move || {
                    let _ = std::io::copy(&mut dev, &mut agent);
                });
            }
        }
    });
    port
}

#[test]
fn a_broken_channel_is_reopened_once_and_the_session_still_comes_up() {
    let tmp = TempDir::new("reconnect");
    let pki = Pki::new(tmp.path());
    let key = pairing_key_hex();
    let (server, seen) = start_server(&pki, vec![0, 0]);
    let agent_port = port();
    let agent = start_agent(Path::new(AGENT), &agent_config(&pki, agent_port, &key));
    let relay = cutter(agent_port);
    let mut dev = device(&device_config(&pki, relay, &key, &server, "tls", "gcm"));
    let status = dev.wait();
    let (out, log) = (dev.out.text(), dev.err.text());
    assert!(
        status.success(),
        "device failed:\n{out}\n{log}\nagent:\n{}",
        agent.err.text()
    );
    assert!(log.contains("channel.reconnect"), "{log}");
    assert!(
        out.contains("session reused=true") && out.contains("channel_connects=2"),
        "{out}"
    );
    let results: Vec<Seen> = (0..2).map(|_| recv(&seen)).collect();
    assert!(results[1].reused, "{results:?}");
}
