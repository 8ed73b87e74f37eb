//! The device's I/O: blocking sockets only (a constrained device has no async runtime).

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use openssl::ec::EcKey;
use openssl::ssl::{Ssl, SslContext, SslOptions, SslVerifyMode};
use openssl::x509::X509;
use thiserror::Error;
use tracing::{info, warn};

use crate::channel::{self, Channel, MAX_FRAME, NONCE_LEN, Opener, PairingKey, Role, Sealer};
use crate::config::{DeviceConfig, Tls13Kex};
use crate::device::{Device, Step, Target};
use crate::error::{ChannelError, ContextError};
use crate::openssl_ext;
use crate::session::{SessionContext, Suite, TLS1_3};
use crate::tls::{self, Connection, EarlyData, TlsError};
use crate::wire::{Message, Transport};

/// Why the device could not get a session.
#[derive(Debug, Error)]
pub enum DeviceError {
    /// Key or certificate files.
    #[error("{what} {path}: {reason}")]
    Credentials {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: String,
        /// Why.
        reason: String,
    },
    /// The agent could not be reached or closed the channel.
    #[error("agent {agent}: {reason}")]
    Agent {
        /// Agent address.
        agent: String,
        /// Why.
        reason: String,
    },
    /// A channel record was refused (tampered, replayed, wrong key).
    #[error("agent channel: {0}")]
    Channel(#[from] ChannelError),
    /// No agent or pairing key configured.
    #[error("config: {0}")]
    Config(String),
    /// The standalone handshake failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Every delegation failed.
    #[error("gave up after {attempts} delegation(s); last: {last}")]
    GaveUp {
        /// Delegations tried.
        attempts: u32,
        /// The last reason.
        last: String,
    },
}

/// Why a context did not give a resumed session.
#[derive(Debug, Error)]
pub enum ResumeError {
    /// The context itself is unusable.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// The server did not resume (it started a full handshake).
    #[error("the server refused to resume the session (it began a full handshake)")]
    Refused,
    /// The abbreviated handshake failed (e.g. a wrong master secret fails the Finished check).
    #[error("resumption failed: {0}")]
    Failed(#[from] TlsError),
}

/// Reads a PEM chain (leaf first) and a PEM private key.
pub fn load_credentials(
    cfg: &DeviceConfig,
) -> Result<(EcKey<openssl::pkey::Private>, Vec<X509>), DeviceError> {
    let cred = |what, path: &std::path::Path, reason: String| DeviceError::Credentials {
        what,
        path: path.display().to_string(),
        reason,
    };
    let pem = std::fs::read(&cfg.certificate)
        .map_err(|e| cred("certificate", &cfg.certificate, e.to_string()))?;
    let chain = X509::stack_from_pem(&pem)
        .map_err(|e| cred("certificate", &cfg.certificate, e.to_string()))?;
    if chain.is_empty() {
        return Err(cred(
            "certificate",
            &cfg.certificate,
            "no certificate in the file".into(),
        ));
    }
    if !tls::allows_client_auth(&chain[0]) {
        return Err(cred(
            "certificate",
            &cfg.certificate,
            tls::NO_CLIENT_AUTH.into(),
        ));
    }
    let pem = crate::secret::read_secret(&cfg.private_key, "a private key")
        .map_err(|e| cred("private key", &cfg.private_key, e.reason))?;
    let key = EcKey::private_key_from_pem(pem.as_bytes()).map_err(|_| {
        cred(
            "private key",
            &cfg.private_key,
            "not a PEM EC private key".into(),
        )
    })?;
    if key.group().curve_name() != Some(openssl::nid::Nid::X9_62_PRIME256V1) {
        return Err(cred(
            "private key",
            &cfg.private_key,
            "not a P-256 key (D2TLS signs ECDSA-P256-SHA256)".into(),
        ));
    }
    let leaf_pub = chain[0]
        .public_key()
        .and_then(|k| k.ec_key())
        .map_err(|_| {
            cred(
                "certificate",
                &cfg.certificate,
                "leaf key is not an EC key".into(),
            )
        })?;
    let mut bn = openssl::bn::BigNumContext::new()
        .map_err(|e| cred("private key", &cfg.private_key, e.to_string()))?;
    let matches = key
        .public_key()
        .eq(key.group(), leaf_pub.public_key(), &mut bn)
        .unwrap_or(false);
    if !matches {
        return Err(cred(
            "private key",
            &cfg.private_key,
            "does not match the certificate".into(),
        ));
    }
    Ok((key, chain))
}

/// The encrypted channel to the agent, as the device sees it.
///
/// A paired device keeps its association with its gateway: the channel is opened once at boot
/// ([`link_from`]) and stays open across sessions, so that a session's setup carries only the
/// delegation messages. If the agent closes it (restart, idle cut), the next delegation
/// reconnects once ([`AgentLink::reconnect`]) inside that session's setup.
pub struct AgentLink {
    agent: String,
    device_id: String,
    key: PairingKey,
    timeout: Duration,
    /// Buffered reads: a frame's length and body normally come in one `recv`.
    stream: BufReader<TcpStream>,
    sealer: Sealer,
    opener: Opener,
    /// Frame buffers allocated when the channel is opened and reused for every frame.
    wbuf: Vec<u8>,
    rbuf: Vec<u8>,
    /// Bytes written to the agent (hellos of every connection included).
    pub bytes_sent: u64,
    /// Bytes read from the agent (hello replies and `ready`s included).
    pub bytes_received: u64,
    /// Connections made (1 after boot; more after reconnects).
    pub connects: u32,
}

impl AgentLink {
    /// Connects, says hello, derives the keys and waits for the agent's `ready`.
    pub fn connect(
        agent: &str,
        device_id: &str,
        key: &PairingKey,
        timeout: Duration,
    ) -> Result<AgentLink, DeviceError> {
        let (stream, sealer, opener, sent, received) = open(agent, device_id, key, timeout)?;
        Ok(AgentLink {
            agent: agent.to_owned(),
            device_id: device_id.to_owned(),
            key: key.clone(),
            timeout,
            stream,
            sealer,
            opener,
            wbuf: Vec::with_capacity(READ_BUF),
            rbuf: Vec::with_capacity(READ_BUF),
            bytes_sent: sent,
            bytes_received: received,
            connects: 1,
        })
    }

    /// Opens the channel again (fresh nonces, fresh keys, sequence numbers from 0).
    pub fn reconnect(&mut self) -> Result<(), DeviceError> {
        let (stream, sealer, opener, sent, received) =
            open(&self.agent, &self.device_id, &self.key, self.timeout)?;
        self.stream = stream;
        self.sealer = sealer;
        self.opener = opener;
        self.bytes_sent += sent;
        self.bytes_received += received;
        self.connects += 1;
        Ok(())
    }

    /// Seals and sends a message (one `write` of the whole frame).
    pub fn send(&mut self, msg: &Message) -> Result<(), DeviceError> {
        let body = self.sealer.seal(msg)?;
        self.bytes_sent += write_frame(self.stream.get_mut(), &self.agent, &body, &mut self.wbuf)?;
        Ok(())
    }

    /// Receives and opens a message (the channel is open: a delegation is under way).
    pub fn recv(&mut self) -> Result<Message, DeviceError> {
        self.bytes_received += read_frame(
            &mut self.stream,
            &self.agent,
            &mut self.rbuf,
            Phase::Delegation,
            self.timeout,
        )?;
        Ok(self.opener.open(&self.rbuf)?)
    }
}

type Opened = (BufReader<TcpStream>, Sealer, Opener, u64, u64);

/// One connection of the channel: TCP connect, hello, hello-reply, keys, `ready`.
fn open(
    agent: &str,
    device_id: &str,
    key: &PairingKey,
    timeout: Duration,
) -> Result<Opened, DeviceError> {
    let fail = |reason: String| DeviceError::Agent {
        agent: agent.to_owned(),
        reason,
    };
    let addr = tls::resolve(agent).map_err(|e| fail(e.to_string()))?;
    let stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| fail(format!("connect: {e}")))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| fail(e.to_string()))?;
    stream.set_nodelay(true).map_err(|e| fail(e.to_string()))?;
    let mut stream = BufReader::with_capacity(READ_BUF, stream);
    let mut nonce_d = [0u8; NONCE_LEN];
    openssl::rand::rand_bytes(&mut nonce_d).map_err(|e| fail(e.to_string()))?;
    let mut buf = Vec::new();
    let hello = channel::hello(device_id, &nonce_d).map_err(ChannelError::from)?;
    let sent = write_frame(stream.get_mut(), agent, &hello, &mut buf)?;
    let mut received = read_frame(&mut stream, agent, &mut buf, Phase::Opening, timeout)?;
    let nonce_a = channel::parse_hello_reply(&buf)?;
    let (sealer, mut opener) =
        Channel::new(Role::Device, key, device_id, &nonce_d, &nonce_a).split();
    received += read_frame(&mut stream, agent, &mut buf, Phase::Opening, timeout)?;
    match opener.open(&buf) {
        Ok(Message::Ready) => Ok((stream, sealer, opener, sent, received)),
        Ok(other) => Err(fail(format!("expected ready, got {}", other.name()))),
        // The first record is the agent's key confirmation: if it does not open, the two ends
        // derived different keys from the same nonces.
        Err(ChannelError::Authentication { .. }) => Err(fail(format!(
            "its first record (ready) failed authentication: the agent holds a different \
             pairing key for device `{device_id}` (or the record was altered on the way)"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Where the channel is when a read fails: what to suggest depends on it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Hello, hello-reply, `ready`: the agent has not accepted the device yet.
    Opening,
    /// The channel worked; a delegation is under way.
    Delegation,
}

/// Read buffer of the channel: larger than any frame the agent sends in one go.
const READ_BUF: usize = 1024;

/// Writes `len ‖ body` with one `write` (assembled in `buf`).
fn write_frame(
    stream: &mut TcpStream,
    agent: &str,
    body: &[u8],
    buf: &mut Vec<u8>,
) -> Result<u64, DeviceError> {
    channel::frame_into(body, buf).map_err(ChannelError::from)?;
    stream.write_all(buf).map_err(|e| DeviceError::Agent {
        agent: agent.to_owned(),
        reason: format!("write: {e}"),
    })?;
    Ok(buf.len() as u64)
}

/// Reads one frame's body into `body`; returns the bytes the frame took on the wire.
fn read_frame(
    stream: &mut BufReader<TcpStream>,
    agent: &str,
    body: &mut Vec<u8>,
    phase: Phase,
    timeout: Duration,
) -> Result<u64, DeviceError> {
    let fail = |reason: String| DeviceError::Agent {
        agent: agent.to_owned(),
        reason,
    };
    let why = |e: std::io::Error| match (e.kind(), phase) {
        // The socket's read timeout (EAGAIN on Linux, "os error 11").
        (std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut, Phase::Opening) => fail(
            format!("no reply from the agent within {} s", timeout.as_secs()),
        ),
        (std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut, Phase::Delegation) => {
            fail(format!(
                "no reply from the agent within {} s (the device's timeout_secs, which must \
                 exceed the agent's handshake_timeout_secs)",
                timeout.as_secs()
            ))
        }
        (std::io::ErrorKind::UnexpectedEof, Phase::Opening) => fail(
            "closed the channel before it was open: it refused the device (is its device_id \
             in the agent's [[device]] list?)"
                .into(),
        ),
        (std::io::ErrorKind::UnexpectedEof, Phase::Delegation) => {
            fail("closed the channel during a delegation".into())
        }
        _ => fail(format!("read: {e}")),
    };
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).map_err(why)?;
    let n = usize::from(u16::from_be_bytes(len));
    if n == 0 || n > MAX_FRAME {
        return Err(fail(format!(
            "frame of {n} bytes (1..={MAX_FRAME} allowed)"
        )));
    }
    body.clear();
    body.resize(n, 0);
    stream.read_exact(body).map_err(why)?;
    Ok(2 + n as u64)
}

/// Work a device does once at boot, not per session: seed the DRBG, fetch the handshake's
/// algorithms and build the TLS context
/// for resumption. The context offers every delegated suite and refuses any certificate: a
/// server that answers with one is starting a full handshake, which the device stops at once.
/// In TLS 1.3 `kex` chooses the resumption's key exchange modes.
#[inline(never)]
pub fn boot_for_resumption(transport: Transport, kex: Tls13Kex) -> Result<SslContext, DeviceError> {
    seed_rng()?;
    let mut b = tls::client_context(transport, &Suite::ALL).map_err(TlsError::from)?;
    // A context with a ticket resumes by ticket; one without turns tickets off per
    // connection ([`resume`]), so that its ClientHello stays as small as before.
    tls::allow_tickets(&mut b);
    if transport == Transport::Tls13 {
        // No middlebox compatibility mode (RFC 8446 §D.4): it costs a 32-byte legacy session
        // ID and a dummy ChangeCipherSpec each way, for middleboxes a device's path to its
        // cloud server does not have.
        b.clear_options(SslOptions::ENABLE_MIDDLEBOX_COMPAT);
        if kex == Tls13Kex::PskKe {
            tls::allow_no_dhe_kex(&mut b);
        }
    }
    b.set_verify_callback(SslVerifyMode::PEER, |_, _| false);
    Ok(b.build())
}

/// Boot work of both modes: seed the DRBG and fetch the algorithms libssl would otherwise
/// fetch by name in the first handshake ([`openssl_ext::prefetch_algorithms`]).
fn seed_rng() -> Result<(), DeviceError> {
    let mut b = [0u8; 1];
    openssl::rand::rand_bytes(&mut b)
        .map_err(|e| DeviceError::Config(format!("random generator: {e}")))?;
    openssl_ext::prefetch_algorithms().map_err(TlsError::from)?;
    Ok(())
}

/// Resumes `ctx`, received `age_secs` ago, with the server, without a private key (`sslctx`
/// from [`boot_for_resumption`]), over `tcp` when a connection was started early
/// ([`tls::preconnect`]). In TLS 1.3, `early` is sent as early data (0-RTT) when the ticket
/// allows that much; the result says whether the server took it.
// Out of line so that callgrind can attribute the resumption's work to it (bench.sh).
#[inline(never)]
pub fn resume(
    sslctx: &SslContext,
    ctx: &SessionContext,
    target: &Target,
    deadline: Instant,
    age_secs: u64,
    early: Option<&[u8]>,
    tcp: Option<TcpStream>,
) -> Result<(Connection, EarlyData), ResumeError> {
    let name = server_name(target);
    let dns_name = name.parse::<std::net::IpAddr>().is_err().then_some(name);
    let session = ctx.to_ssl_session_aged(age_secs, dns_name)?;
    let mut ssl = Ssl::new(sslctx).map_err(TlsError::from)?;
    if ctx.ticket.is_empty() {
        openssl_ext::no_ticket(&mut ssl);
    }
    openssl_ext::set_imported_session(&mut ssl, &session).map_err(TlsError::from)?;
    if let Some(name) = dns_name {
        ssl.set_hostname(name).map_err(TlsError::from)?;
    }
    let limit = usize::try_from(ctx.max_early_data).unwrap_or(usize::MAX);
    let early = early.filter(|d| ctx.version == TLS1_3 && !d.is_empty() && d.len() <= limit);
    let (conn, early) =
        match tls::connect_early(ssl, target.transport, &target.server, deadline, early, tcp) {
            Ok(c) => c,
            Err(TlsError::Handshake { reason, .. })
                if reason.contains("certificate verify failed") =>
            {
                return Err(ResumeError::Refused);
            }
            Err(e) => return Err(e.into()),
        };
    if !conn.ssl().session_reused() {
        return Err(ResumeError::Refused);
    }
    Ok((conn, early))
}

/// How a resumed connection agreed its keys: `none` for a (D)TLS 1.2 abbreviated handshake
/// (the master secret alone), `psk_dhe_ke` or `psk_ke` in TLS 1.3, `ecdhe` for a full
/// handshake.
pub fn kex_of(conn: &Connection) -> &'static str {
    let ssl = conn.ssl();
    match (ssl.session_reused(), ssl.version2()) {
        (false, _) => "ecdhe",
        (true, Some(v)) if v == openssl::ssl::SslVersion::TLS1_3 => {
            if openssl_ext::server_key_share(ssl) {
                "psk_dhe_ke"
            } else {
                "psk_ke"
            }
        }
        (true, _) => "none",
    }
}

fn server_name(target: &Target) -> &str {
    if target.server_name.is_empty() {
        tls::host_of(&target.server)
    } else {
        &target.server_name
    }
}

/// Boot-time work of the baseline: seed the DRBG, fetch the handshake's algorithms, load the
/// roots, the certificate and the key.
#[inline(never)]
pub fn boot_standalone(
    cfg: &DeviceConfig,
    key: &EcKey<openssl::pkey::Private>,
    chain: &[X509],
) -> Result<SslContext, DeviceError> {
    seed_rng()?;
    let ca = cfg
        .ca_file
        .as_ref()
        .ok_or_else(|| DeviceError::Config("standalone mode needs ca_file".into()))?;
    let suites: Vec<Suite> = cfg.suite.map_or(Suite::ALL.to_vec(), |s| vec![s]);
    let mut b = tls::client_context(cfg.transport, &suites).map_err(TlsError::from)?;
    b.set_ca_file(ca).map_err(|e| DeviceError::Credentials {
        what: "ca_file",
        path: ca.display().to_string(),
        reason: e.to_string(),
    })?;
    let pkey = openssl::pkey::PKey::from_ec_key(key.clone()).map_err(TlsError::from)?;
    let (leaf, rest) = chain
        .split_first()
        .ok_or_else(|| DeviceError::Config("no certificate".into()))?;
    b.set_certificate(leaf).map_err(TlsError::from)?;
    for c in rest {
        b.add_extra_chain_cert(c.clone()).map_err(TlsError::from)?;
    }
    b.set_private_key(&pkey).map_err(TlsError::from)?;
    Ok(b.build())
}

/// The baseline: the device runs the full handshake itself with its own key.
// Out of line so that callgrind can attribute the device's work to it.
#[inline(never)]
pub fn full_handshake(
    sslctx: &SslContext,
    cfg: &DeviceConfig,
    deadline: Instant,
) -> Result<Connection, DeviceError> {
    let target = target_of(cfg);
    let mut ssl = Ssl::new(sslctx).map_err(TlsError::from)?;
    tls::verify_server_name(&mut ssl, server_name(&target)).map_err(TlsError::from)?;
    Ok(tls::connect(ssl, cfg.transport, &cfg.server, deadline)?)
}

/// The target of a config.
pub fn target_of(cfg: &DeviceConfig) -> Target {
    Target {
        transport: cfg.transport,
        suite: cfg.suite,
        server: cfg.server.clone(),
        server_name: cfg.server_name.clone(),
    }
}

fn random_id() -> Result<u64, DeviceError> {
    let mut b = [0u8; 8];
    openssl::rand::rand_bytes(&mut b)
        .map_err(|e| DeviceError::Config(format!("random generator: {e}")))?;
    Ok(u64::from_be_bytes(b).max(1))
}

/// Asks for delegations until one resumes, at most `max_delegations` times.
// Out of line so that callgrind can attribute the device's work to it.
#[inline(never)]
pub fn delegate_and_resume(
    sslctx: &SslContext,
    link: &mut AgentLink,
    device: &mut Device,
    target: &Target,
    max_delegations: u32,
    timeout: Duration,
    early: Option<&[u8]>,
) -> Result<(Connection, u32, HeldContext, EarlyData), DeviceError> {
    let mut last = String::from("no delegation tried");
    let mut reconnected = false;
    for attempt in 1..=max_delegations {
        let ctx = match delegation(link, device, target, attempt, &mut last) {
            // The channel broke (agent restarted, connection cut while idle): open it again
            // once in this setup and ask again.
            Err(DeviceError::Agent { reason, .. }) if !reconnected => {
                warn!(event = "channel.reconnect", reason = %reason);
                reconnected = true;
                link.reconnect()?;
                delegation(link, device, target, attempt, &mut last)?
            }
            r => r?,
        };
        let Some((ctx, tcp)) = ctx else { continue };
        let received = Instant::now();
        info!(event = "context.received", session_id = %hex::encode(&ctx.session_id), suite = %format!("{:#06x}", ctx.suite), ticket_len = ctx.ticket.len());
        match resume(
            sslctx,
            &ctx,
            target,
            Instant::now() + timeout,
            0,
            early,
            tcp,
        ) {
            Ok((conn, early)) => {
                info!(event = "session.resumed", session_id = %hex::encode(&ctx.session_id), attempt, early_data = early.name());
                let held = HeldContext {
                    context: ctx,
                    received,
                };
                return Ok((conn, attempt, held, early));
            }
            Err(e) => {
                warn!(event = "context.discarded", session_id = %hex::encode(&ctx.session_id), reason = %e);
                last = e.to_string();
            }
        }
    }
    Err(DeviceError::GaveUp {
        attempts: max_delegations,
        last,
    })
}

/// One delegation's messages on the channel: the request, the sign request and signature, and
/// the context (`None`, with the reason in `last`, when the agent reports a failure). Over TCP
/// the device starts its connection to the server when the agent asks for the signature
/// (the agent's own connection to the server is made by then: a server that takes one client
/// at a time takes the agent's first), so that it is open when the context comes.
fn delegation(
    link: &mut AgentLink,
    device: &mut Device,
    target: &Target,
    attempt: u32,
    last: &mut String,
) -> Result<Option<(SessionContext, Option<TcpStream>)>, DeviceError> {
    let id = random_id()?;
    info!(event = "delegation.request", delegation = %format!("{id:#018x}"), attempt, server = %target.server, transport = ?target.transport);
    link.send(&device.request(id, target))?;
    let mut tcp = None;
    loop {
        let msg = link.recv()?;
        if target.transport.is_tcp()
            && tcp.is_none()
            && matches!(&msg, Message::SignRequest { delegation_id, .. } if *delegation_id == id)
        {
            // Best effort: without it the resumption connects by itself.
            tcp = tls::preconnect(&target.server)
                .inspect_err(|e| warn!(event = "server.preconnect_failed", reason = %e))
                .ok();
        }
        match device.on_message(msg) {
            Step::Reply(m) => link.send(&m)?,
            Step::Refuse(m, why) => {
                warn!(event = "device.refused", reason = %why);
                link.send(&m)?;
            }
            Step::Context(ctx) => return Ok(Some((ctx, tcp))),
            Step::Failed(why) => {
                warn!(event = "delegation.failed", delegation = %format!("{id:#018x}"), reason = %why);
                *last = why;
                return Ok(None);
            }
        }
    }
}

/// A context the device keeps for further connections while it is within its lifetime.
pub struct HeldContext {
    context: SessionContext,
    received: Instant,
}

impl HeldContext {
    /// How it resumes: `ticket` (RFC 5077; in TLS 1.3 always) or `session_id`.
    pub fn resumed_by(&self) -> &'static str {
        if self.context.ticket.is_empty() {
            "session_id"
        } else {
            "ticket"
        }
    }

    /// Whether the agent's lifetime for it has run out.
    pub fn expired(&self) -> bool {
        self.received.elapsed() >= Duration::from_secs(u64::from(self.context.lifetime_secs))
    }

    /// TLS 1.3: takes the newest ticket the server sent on `conn`, a connection resumed from
    /// this context, if the device has read far enough to process one (servers send one or two
    /// after each handshake). The next connection then presents a ticket no connection has
    /// used (RFC 8446 §C.4; servers with anti-replay accept a ticket's early data once). The
    /// context keeps its expiry. Returns whether it changed.
    pub fn refresh(&mut self, conn: &Connection) -> bool {
        if self.context.version != TLS1_3 || !conn.ssl().session_reused() {
            return false;
        }
        let lifetime = Duration::from_secs(u64::from(self.context.lifetime_secs));
        let left = lifetime.saturating_sub(self.received.elapsed()).as_secs();
        let left = u32::try_from(left).unwrap_or(u32::MAX);
        match SessionContext::from_ssl(conn.ssl(), left) {
            Ok(ctx) if ctx.ticket != self.context.ticket => {
                info!(
                    event = "context.refreshed",
                    ticket_len = ctx.ticket.len(),
                    lifetime_secs = ctx.lifetime_secs
                );
                self.context = ctx;
                self.received = Instant::now();
                true
            }
            _ => false,
        }
    }
}

/// Opens another connection on a held context. `None` (and the context dropped, hence
/// wiped) when it has expired or the server no longer resumes it: delegate again.
pub fn resume_held(
    sslctx: &SslContext,
    held: &mut Option<HeldContext>,
    target: &Target,
    timeout: Duration,
    early: Option<&[u8]>,
) -> Option<(Connection, EarlyData)> {
    let h = held.take()?;
    let sid = hex::encode(&h.context.session_id);
    if h.expired() {
        info!(event = "context.expired", session_id = %sid);
        return None;
    }
    let age = h.received.elapsed().as_secs();
    match resume(
        sslctx,
        &h.context,
        target,
        Instant::now() + timeout,
        age,
        early,
        None,
    ) {
        Ok((conn, early)) => {
            info!(event = "session.resumed", session_id = %sid, attempt = 0, early_data = early.name());
            *held = Some(h);
            Some((conn, early))
        }
        Err(e) => {
            warn!(event = "context.discarded", session_id = %sid, reason = %e);
            None
        }
    }
}

/// Opens the agent channel from a config.
// Out of line so that callgrind can attribute the device's work to it.
#[inline(never)]
pub fn link_from(cfg: &DeviceConfig) -> Result<AgentLink, DeviceError> {
    let agent = cfg
        .agent
        .as_deref()
        .ok_or_else(|| DeviceError::Config("`agent` is not set".into()))?;
    let key = cfg
        .pairing_key
        .as_ref()
        .ok_or_else(|| DeviceError::Config("`pairing_key` is not set".into()))?;
    AgentLink::connect(
        agent,
        &cfg.device_id,
        key,
        Duration::from_secs(cfg.timeout_secs),
    )
}
