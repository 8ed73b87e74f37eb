//! OpenSSL client handshakes over real sockets, DTLS retransmissions driven by us.
//!
//! rust-openssl runs DTLS over a `Read`/`Write` stream and never arms OpenSSL's retransmission
//! timer itself, so every socket read here has a short timeout and each timeout gives
//! `DTLSv1_handle_timeout` a chance to resend the last flight.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use openssl::error::ErrorStack;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslRef, SslStream,
    SslVerifyMode, SslVersion,
};
use thiserror::Error;

use crate::openssl_ext;
use crate::session::Suite;
use crate::wire::Transport;

/// How long one socket read waits before the DTLS timer is checked.
const POLL: Duration = Duration::from_millis(50);
/// A DTLS record must fit one datagram on any path we use.
const DTLS_MTU: u32 = 1200;

/// A failed handshake or I/O on an established connection.
#[derive(Debug, Error)]
pub enum TlsError {
    /// `host:port` did not resolve or could not be reached.
    #[error("server {server}: {reason}")]
    Connect {
        /// The address as given.
        server: String,
        /// Why.
        reason: String,
    },
    /// OpenSSL setup failed.
    #[error("TLS setup: {0}")]
    Setup(#[from] ErrorStack),
    /// The handshake failed.
    #[error("handshake with {server} failed: {reason}")]
    Handshake {
        /// Server address.
        server: String,
        /// OpenSSL's reason.
        reason: String,
    },
    /// The deadline passed.
    #[error("{stage} with {server} timed out")]
    Timeout {
        /// What was going on.
        stage: &'static str,
        /// Server address.
        server: String,
    },
    /// TLS 1.3: the server sent no NewSessionTicket before the deadline.
    #[error(
        "{server} sent no NewSessionTicket within {secs} s of the handshake (TLS 1.3 resumes by \
         ticket only: a server that issues none cannot be delegated to)"
    )]
    NoTicket {
        /// Server address.
        server: String,
        /// How long the agent waited after the handshake.
        secs: u64,
    },
    /// No application data arrived before the deadline.
    #[error("no data from the server before the deadline")]
    NoData,
    /// Socket I/O failed after the handshake.
    #[error("connection I/O: {0}")]
    Io(String),
}

/// A connected UDP socket as a stream of datagrams (one read = one datagram).
#[derive(Debug)]
pub struct Datagrams(UdpSocket);

impl Read for Datagrams {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.recv(buf)
    }
}

impl Write for Datagrams {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.send(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A socket that counts the bytes it carries (the device's traffic figures).
#[derive(Debug)]
pub struct Counted<S> {
    inner: S,
    sent: u64,
    received: u64,
}

impl<S: Read> Read for Counted<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.received += n as u64;
        Ok(n)
    }
}

impl<S: Write> Write for Counted<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sent += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn counted<S>(inner: S) -> Counted<S> {
    Counted {
        inner,
        sent: 0,
        received: 0,
    }
}

/// An established DTLS or TLS connection.
#[derive(Debug)]
pub enum Connection {
    /// DTLS 1.2 over UDP.
    Dtls(SslStream<Counted<Datagrams>>),
    /// TLS 1.2 or TLS 1.3 over TCP.
    Tls(SslStream<Counted<TcpStream>>),
}

/// What became of early data (TLS 1.3 0-RTT) offered with a resumption.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EarlyData {
    /// None was sent (none given, or the ticket allows none).
    NotSent,
    /// The server accepted it: the data was delivered in the first flight.
    Accepted,
    /// The server rejected it: the data must be sent again after the handshake.
    Rejected,
}

impl EarlyData {
    /// For reports: `none`, `accepted`, `rejected`.
    pub fn name(self) -> &'static str {
        match self {
            EarlyData::NotSent => "none",
            EarlyData::Accepted => "accepted",
            EarlyData::Rejected => "rejected",
        }
    }
}

/// Resolves `host:port` to one address.
pub fn resolve(server: &str) -> Result<SocketAddr, TlsError> {
    server
        .to_socket_addrs()
        .map_err(|e| TlsError::Connect {
            server: server.to_owned(),
            reason: format!("cannot resolve: {e}"),
        })?
        .next()
        .ok_or_else(|| TlsError::Connect {
            server: server.to_owned(),
            reason: "resolves to no address".into(),
        })
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
pub fn host_of(server: &str) -> &str {
    let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// A client context for DTLS 1.2, TLS 1.2 or TLS 1.3, ECDHE-ECDSA on P-256 with the given
/// suites (in TLS 1.3 the suites of the same AEAD, [`Suite::tls13_name`]).
pub fn client_context(
    transport: Transport,
    suites: &[Suite],
) -> Result<SslContextBuilder, ErrorStack> {
    let (method, version) = match transport {
        Transport::Dtls => (SslMethod::dtls_client(), SslVersion::DTLS1_2),
        Transport::Tls => (SslMethod::tls_client(), SslVersion::TLS1_2),
        Transport::Tls13 => (SslMethod::tls_client(), SslVersion::TLS1_3),
    };
    let mut b = SslContext::builder(method)?;
    b.set_min_proto_version(Some(version))?;
    b.set_max_proto_version(Some(version))?;
    if transport == Transport::Tls13 {
        let list: Vec<&str> = suites.iter().map(|s| s.tls13_name()).collect();
        b.set_ciphersuites(&list.join(":"))?;
    } else {
        let list: Vec<&str> = suites.iter().map(|s| s.openssl_name()).collect();
        b.set_cipher_list(&list.join(":"))?;
    }
    b.set_groups_list("P-256")?;
    // The device signs ECDSA-P256-SHA256 only; offer nothing else.
    b.set_sigalgs_list("ECDSA+SHA256")?;
    // No tickets by default in (D)TLS 1.2 (the device's baseline resumes by session ID); the
    // agent and the device's resumption context turn them on ([`allow_tickets`]). TLS 1.3
    // resumes by ticket only.
    let mut opts = match transport {
        Transport::Tls13 => SslOptions::empty(),
        _ => SslOptions::NO_TICKET,
    };
    if transport == Transport::Dtls {
        opts |= SslOptions::NO_QUERY_MTU;
    }
    b.set_options(opts);
    Ok(b)
}

/// `SSL_OP_ALLOW_NO_DHE_KEX` (not among the `openssl` crate's named options): a TLS 1.3
/// client then offers psk_ke beside psk_dhe_ke, and accepts a resumption without (EC)DHE
/// when the server chooses it.
const ALLOW_NO_DHE_KEX: SslOptions = SslOptions::from_bits_retain(1 << 10);

/// Offers psk_ke (resumption without (EC)DHE) as well as psk_dhe_ke in TLS 1.3.
pub fn allow_no_dhe_kex(b: &mut SslContextBuilder) {
    b.set_options(ALLOW_NO_DHE_KEX);
}

/// Lets a context offer the SessionTicket extension (RFC 5077): a server that issues tickets
/// then gives one, and a server that keeps no session cache can resume at all.
pub fn allow_tickets(b: &mut SslContextBuilder) {
    b.clear_options(SslOptions::NO_TICKET);
}

/// Why a device certificate whose extended key usage leaves out TLS client authentication is
/// refused (servers that check the purpose, `openssl s_server -Verify` among them, would).
pub const NO_CLIENT_AUTH: &str = "its extended key usage does not include clientAuth, so servers \
     refuse it as a client certificate (issue it with `extendedKeyUsage=clientAuth`)";

/// Whether `cert` may serve as a TLS client certificate: no extended key usage at all (no
/// restriction), or one that includes clientAuth or anyExtendedKeyUsage.
pub fn allows_client_auth(cert: &openssl::x509::X509Ref) -> bool {
    use openssl::x509::X509ExtendedKeyUsage as Eku;
    cert.extended_key_usage()
        .is_none_or(|eku| eku.intersects(Eku::SSL_CLIENT | Eku::ANYEKU))
}

/// Makes `ssl` check the server certificate for `name` (an IP literal or a DNS name).
pub fn verify_server_name(ssl: &mut SslRef, name: &str) -> Result<(), ErrorStack> {
    ssl.set_verify(SslVerifyMode::PEER);
    match name.parse::<IpAddr>() {
        Ok(ip) => ssl.param_mut().set_ip(ip),
        Err(_) => {
            ssl.set_hostname(name)?;
            ssl.param_mut().set_host(name)
        }
    }
}

fn is_retry(e: &openssl::ssl::Error) -> bool {
    e.code() == ErrorCode::WANT_READ || e.code() == ErrorCode::WANT_WRITE
}

fn reason(e: &openssl::ssl::Error) -> String {
    match e.ssl_error() {
        Some(stack) => stack.to_string(),
        None => match e.io_error() {
            Some(io) => io.to_string(),
            None => format!("{e}"),
        },
    }
}

/// Runs a client handshake on `ssl` to `server` and returns the connection.
pub fn connect(
    ssl: Ssl,
    transport: Transport,
    server: &str,
    deadline: Instant,
) -> Result<Connection, TlsError> {
    Ok(connect_early(ssl, transport, server, deadline, None, None)?.0)
}

/// Starts a TCP connection to `server` and returns at once, before it is established: the
/// device opens it while the agent finishes the handshake, so that the resumption
/// ([`connect_early`]) does not wait a round trip for it. Its first write waits for the
/// connection (a blocking socket in SYN-SENT).
pub fn preconnect(server: &str) -> Result<TcpStream, TlsError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = resolve(server)?;
    let io_err = |e: io::Error| TlsError::Connect {
        server: server.to_owned(),
        reason: e.to_string(),
    };
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(io_err)?;
    sock.set_nonblocking(true).map_err(io_err)?;
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(io_err(e)),
    }
    sock.set_nonblocking(false).map_err(io_err)?;
    Ok(sock.into())
}

/// [`connect`], sending `early` as TLS 1.3 early data (0-RTT, `SSL_write_early_data`) in the
/// first flight when it is given: only for a resumption whose ticket allows that much; over
/// `tcp`, a connection from [`preconnect`], when it is given (TLS only).
pub fn connect_early(
    mut ssl: Ssl,
    transport: Transport,
    server: &str,
    deadline: Instant,
    early: Option<&[u8]>,
    tcp: Option<TcpStream>,
) -> Result<(Connection, EarlyData), TlsError> {
    let io_err = |e: io::Error| TlsError::Connect {
        server: server.to_owned(),
        reason: e.to_string(),
    };
    // A connection started early that has already failed (refused, reset) is replaced by a
    // new one rather than costing the context.
    let tcp = tcp.filter(|t| transport != Transport::Dtls && matches!(t.take_error(), Ok(None)));
    if transport == Transport::Dtls {
        let addr = resolve(server)?;
        let local: SocketAddr = if addr.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(local).map_err(io_err)?;
        sock.connect(addr).map_err(io_err)?;
        sock.set_read_timeout(Some(POLL)).map_err(io_err)?;
        ssl.set_mtu(DTLS_MTU)?;
        let mut s = SslStream::new(ssl, counted(Datagrams(sock)))?;
        drive(&mut s, true, server, deadline)?;
        return Ok((Connection::Dtls(s), EarlyData::NotSent));
    }
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let sock = match tcp {
        Some(sock) => {
            // Bounds the first write's wait for a connection still being made.
            sock.set_write_timeout(Some(left)).map_err(io_err)?;
            sock
        }
        None => TcpStream::connect_timeout(&resolve(server)?, left).map_err(io_err)?,
    };
    sock.set_nodelay(true).map_err(io_err)?;
    sock.set_read_timeout(Some(POLL)).map_err(io_err)?;
    let mut s = SslStream::new(ssl, counted(sock))?;
    let mut status = EarlyData::NotSent;
    if let Some(data) = early {
        write_early(&mut s, data, server, deadline)?;
        status = EarlyData::Rejected;
    }
    drive(&mut s, false, server, deadline)?;
    // The connection outlives the handshake: no write timeout of the handshake's left on it.
    s.get_ref().inner.set_write_timeout(None).map_err(io_err)?;
    if status == EarlyData::Rejected && openssl_ext::early_data_accepted(s.ssl()) {
        status = EarlyData::Accepted;
    }
    Ok((Connection::Tls(s), status))
}

/// `SSL_write_early_data` of all of `data` (it sends the ClientHello first).
fn write_early<S: Read + Write>(
    s: &mut SslStream<S>,
    data: &[u8],
    server: &str,
    deadline: Instant,
) -> Result<(), TlsError> {
    let mut done = 0;
    while done < data.len() {
        match s.write_early_data(&data[done..]) {
            Ok(n) => done += n,
            Err(e) if is_retry(&e) && Instant::now() < deadline => {}
            Err(e) if is_retry(&e) => {
                return Err(TlsError::Timeout {
                    stage: "early data",
                    server: server.to_owned(),
                });
            }
            Err(e) => {
                return Err(TlsError::Handshake {
                    server: server.to_owned(),
                    reason: format!("early data: {}", reason(&e)),
                });
            }
        }
    }
    Ok(())
}

fn drive<S: Read + Write>(
    s: &mut SslStream<S>,
    dtls: bool,
    server: &str,
    deadline: Instant,
) -> Result<(), TlsError> {
    loop {
        match s.connect() {
            Ok(()) => return Ok(()),
            Err(e) if is_retry(&e) => {
                if Instant::now() >= deadline {
                    return Err(TlsError::Timeout {
                        stage: "handshake",
                        server: server.to_owned(),
                    });
                }
                if dtls {
                    openssl_ext::dtls_handle_timeout(s.ssl()).map_err(|e| TlsError::Handshake {
                        server: server.to_owned(),
                        reason: format!("retransmission: {e}"),
                    })?;
                }
            }
            Err(e) => {
                let mut reason = reason(&e);
                // "certificate verify failed" alone does not say which check failed.
                let verify = s.ssl().verify_result();
                if verify != openssl::x509::X509VerifyResult::OK {
                    reason = format!("{reason} (server certificate: {})", verify.error_string());
                }
                return Err(TlsError::Handshake {
                    server: server.to_owned(),
                    reason,
                });
            }
        }
    }
}

impl Connection {
    /// The OpenSSL connection (session, cipher, peer).
    pub fn ssl(&self) -> &SslRef {
        match self {
            Connection::Dtls(s) => s.ssl(),
            Connection::Tls(s) => s.ssl(),
        }
    }

    /// Bytes (sent, received) on the socket so far, headers of UDP/TCP/IP not included.
    pub fn bytes(&self) -> (u64, u64) {
        let (sent, received) = match self {
            Connection::Dtls(s) => (s.get_ref().sent, s.get_ref().received),
            Connection::Tls(s) => (s.get_ref().sent, s.get_ref().received),
        };
        (sent, received)
    }

    /// Sends one application record.
    pub fn send(&mut self, data: &[u8], deadline: Instant) -> Result<(), TlsError> {
        loop {
            let r = match self {
                Connection::Dtls(s) => s.ssl_write(data),
                Connection::Tls(s) => s.ssl_write(data),
            };
            match r {
                Ok(_) => return Ok(()),
                Err(e) if is_retry(&e) && Instant::now() < deadline => {}
                Err(e) => return Err(TlsError::Io(reason(&e))),
            }
        }
    }

    /// Receives application data; `Ok(0)` when the peer closed.
    pub fn recv(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize, TlsError> {
        loop {
            let r = match self {
                Connection::Dtls(s) => s.ssl_read(buf),
                Connection::Tls(s) => s.ssl_read(buf),
            };
            match r {
                Ok(n) => return Ok(n),
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => return Ok(0),
                Err(e) if is_retry(&e) => {
                    if Instant::now() >= deadline {
                        return Err(TlsError::NoData);
                    }
                    if let Connection::Dtls(s) = self {
                        // The server may resend its last flight if ours was lost.
                        let _ = openssl_ext::dtls_handle_timeout(s.ssl());
                    }
                }
                Err(e) => return Err(TlsError::Io(reason(&e))),
            }
        }
    }

    /// TLS 1.3: reads until the server's first NewSessionTicket has been processed (servers
    /// send it after the handshake; OpenSSL then replaces the connection's session with one
    /// that holds the ticket and the resumption PSK). Application data read meanwhile is
    /// dropped: the agent has no use for it.
    pub fn await_ticket(&mut self, server: &str, deadline: Instant) -> Result<(), TlsError> {
        let started = Instant::now();
        // Each read returns once a ticket is processed, not after the socket's 50 ms poll
        // (which every TLS 1.3 delegation paid).
        openssl_ext::no_auto_retry(self.ssl());
        let mut buf = [0u8; 512];
        loop {
            if self
                .ssl()
                .session()
                .and_then(openssl_ext::session_ticket)
                .is_some()
            {
                return Ok(());
            }
            let r = match self {
                Connection::Dtls(s) => s.ssl_read(&mut buf),
                Connection::Tls(s) => s.ssl_read(&mut buf),
            };
            match r {
                Ok(_) => {}
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => {
                    return Err(TlsError::Handshake {
                        server: server.to_owned(),
                        reason: "closed the connection without sending a NewSessionTicket".into(),
                    });
                }
                Err(e) if is_retry(&e) && Instant::now() < deadline => {}
                Err(e) if is_retry(&e) => {
                    // Rounded, not cut: the wait ends at the deadline, a few milliseconds
                    // short of the whole seconds the handshake budget gave it.
                    return Err(TlsError::NoTicket {
                        server: server.to_owned(),
                        secs: started.elapsed().as_secs_f64().round() as u64,
                    });
                }
                Err(e) => {
                    return Err(TlsError::Handshake {
                        server: server.to_owned(),
                        reason: reason(&e),
                    });
                }
            }
        }
    }

    /// Sends close_notify (best effort): a cleanly closed session stays resumable.
    pub fn close(mut self) {
        let _ = match &mut self {
            Connection::Dtls(s) => s.shutdown(),
            Connection::Tls(s) => s.shutdown(),
        };
    }
}
