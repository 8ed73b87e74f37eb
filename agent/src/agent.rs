//! The security agent: one tokio task per device connection; each delegation's handshake runs
//! on a blocking thread whose signing hook waits for the device's signature. A device that says
//! when it will ask again (`Expect`) can find its handshake started ahead, waiting at the
//! signature.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openssl::ec::EcKey;
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use openssl::pkey::Public;
use openssl::ssl::{Ssl, SslContext};
use openssl::x509::X509;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::channel::{self, Channel, MAX_FRAME, NONCE_LEN, PairingKey, Role, Sealer};
use crate::config::AgentConfig;
use crate::error::{ChannelError, ContextError};
use crate::ffi;
use crate::session::{SessionContext, Suite};
use crate::tls::{self, TlsError};
use crate::wire::{DelegationRequest, ErrorCode, Message, SIG_ECDSA_P256_SHA256, Transport};

/// Why a delegation failed.
#[derive(Debug, Error)]
pub enum DelegationError {
    /// The device's certificate is unusable.
    #[error("device certificate: {0}")]
    Certificate(String),
    /// The suite asked for is not offered by this agent.
    #[error("suite {0:#06x} is not offered by this agent")]
    Suite(u16),
    /// The handshake with the server failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The session could not be exported.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// The handshake thread ended abnormally.
    #[error("handshake task: {0}")]
    Internal(String),
}

impl DelegationError {
    fn code(&self) -> ErrorCode {
        match self {
            DelegationError::Suite(_) => ErrorCode::NotAllowed,
            DelegationError::Tls(TlsError::Timeout { .. }) => ErrorCode::Timeout,
            DelegationError::Certificate(_) => ErrorCode::BadMessage,
            _ => ErrorCode::HandshakeFailed,
        }
    }
}

/// How a device connection ended, other than by the device closing it after use.
enum ChannelEnd {
    /// Before the channel was confirmed: unknown device, bad hello, different pairing key.
    Refused {
        /// The device ID of the hello, if it got that far.
        device: Option<String>,
        /// Why.
        reason: String,
    },
    /// The channel worked and then broke.
    Broken {
        /// The device.
        device: String,
        /// Why.
        reason: String,
    },
}

/// A digest the handshake thread wants signed, and where the answer goes.
struct SignJob {
    digest: Vec<u8>,
    reply: oneshot::Sender<Option<Vec<u8>>>,
}

/// A handshake running on a blocking thread, and its signing hook's request.
struct Handshake {
    task: tokio::task::JoinHandle<Result<SessionContext, DelegationError>>,
    jobs: mpsc::Receiver<SignJob>,
    /// The device's key, to check its signature before libssl sends it.
    public: EcKey<Public>,
}

/// A handshake started ahead of a device's expected request. Dropping it drops a sign job
/// parked in `jobs`: the hook gets no signature, the handshake fails and its thread ends.
struct Prestart {
    /// What the device said it will ask for (`delegation_id` 0).
    request: DelegationRequest,
    /// Which `Expect` made it: a newer one replaces it.
    serial: u64,
    /// `None` until its start time.
    handshake: Option<Handshake>,
    /// Its timer (start, then expiry), stopped with it.
    timer: Option<tokio::task::AbortHandle>,
}

impl Drop for Prestart {
    fn drop(&mut self) {
        if let Some(t) = &self.timer {
            t.abort();
        }
    }
}

/// Marks a device's handshake started ahead as running until its thread ends: a device gets
/// no second one meanwhile (an `Expect` that replaced a running one would otherwise leave it
/// running beside the new one).
struct Running {
    agent: Arc<Agent>,
    device: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.agent.lock_running().remove(&self.device);
    }
}

/// The longest an `Expect` may look ahead.
const MAX_EXPECT_MS: u32 = 86_400_000;

/// The agent.
pub struct Agent {
    cfg: AgentConfig,
    permits: Arc<tokio::sync::Semaphore>,
    prestarts: Mutex<HashMap<String, Prestart>>,
    running: Mutex<std::collections::HashSet<String>>,
    serial: AtomicU64,
    devices: HashMap<String, PairingKey>,
    dtls: SslContext,
    tls: SslContext,
    tls13: SslContext,
}

/// The device's leaf certificate and its P-256 public key, checked.
pub fn device_identity(chain: &[Vec<u8>]) -> Result<(Vec<X509>, EcKey<Public>), DelegationError> {
    let bad = |why: String| DelegationError::Certificate(why);
    let certs = chain
        .iter()
        .enumerate()
        .map(|(i, der)| {
            X509::from_der(der).map_err(|e| bad(format!("certificate {i} is not DER X.509: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let leaf = certs.first().ok_or_else(|| bad("no certificate".into()))?;
    if !tls::allows_client_auth(leaf) {
        return Err(bad(format!("leaf: {}", tls::NO_CLIENT_AUTH)));
    }
    let key = leaf
        .public_key()
        .and_then(|k| k.ec_key())
        .map_err(|_| bad("leaf key is not an EC key".into()))?;
    if key.group().curve_name() != Some(Nid::X9_62_PRIME256V1) {
        return Err(bad("leaf key is not on P-256".into()));
    }
    Ok((certs, key))
}

impl Agent {
    /// Builds the agent (TLS contexts with the configured roots).
    pub fn new(cfg: AgentConfig) -> Result<Agent, anyhow::Error> {
        let build = |t: Transport| -> Result<SslContext, anyhow::Error> {
            let mut b = tls::client_context(t, &cfg.suites)?;
            // The server's ticket goes to the device with the context (TLS 1.3 resumes by
            // ticket only, whatever session_tickets says).
            if cfg.session_tickets || t == Transport::Tls13 {
                tls::allow_tickets(&mut b);
            }
            // The agent never resumes, but a server whose priorities allow only psk_ke
            // (gnutls-serv with +PSK and no (EC)DHE-PSK) sends tickets only to a client that
            // offers it.
            if t == Transport::Tls13 {
                tls::allow_no_dhe_kex(&mut b);
            }
            b.set_ca_file(&cfg.ca_file)
                .map_err(|e| anyhow::anyhow!("ca_file {}: {e}", cfg.ca_file.display()))?;
            Ok(b.build())
        };
        Ok(Agent {
            permits: Arc::new(tokio::sync::Semaphore::new(cfg.max_concurrent_delegations)),
            prestarts: Mutex::new(HashMap::new()),
            running: Mutex::new(std::collections::HashSet::new()),
            serial: AtomicU64::new(1),
            devices: cfg
                .devices
                .iter()
                .map(|d| (d.id.clone(), d.pairing_key.clone()))
                .collect(),
            dtls: build(Transport::Dtls)?,
            tls: build(Transport::Tls)?,
            tls13: build(Transport::Tls13)?,
            cfg,
        })
    }

    /// Whether the agent's policy lets a device ask for `server`.
    pub fn server_allowed(&self, server: &str) -> bool {
        self.cfg.allowed_servers.is_empty()
            || self
                .cfg
                .allowed_servers
                .iter()
                .any(|s| s.eq_ignore_ascii_case(server))
    }

    /// The suite `req` asks for (`None`: any delegated one), if this agent offers it.
    fn suite_of(&self, req: &DelegationRequest) -> Result<Option<Suite>, DelegationError> {
        if req.suite == 0 {
            return Ok(None);
        }
        Suite::from_id_for(req.transport.version(), req.suite)
            .filter(|s| self.cfg.suites.contains(s))
            .map(Some)
            .ok_or(DelegationError::Suite(req.suite))
    }

    /// Runs the full handshake for `req`; `signer` produces the CertificateVerify signature.
    /// `wait` is added to the handshake's deadline: the time a handshake started ahead may
    /// wait for the device.
    pub fn delegate(
        &self,
        req: &DelegationRequest,
        certs: &[X509],
        public: &EcKey<Public>,
        signer: Box<ffi::RemoteSigner>,
        wait: Duration,
    ) -> Result<SessionContext, DelegationError> {
        let ctx = match req.transport {
            Transport::Dtls => &self.dtls,
            Transport::Tls => &self.tls,
            Transport::Tls13 => &self.tls13,
        };
        let mut ssl = Ssl::new(ctx).map_err(TlsError::from)?;
        if let Some(suite) = self.suite_of(req)? {
            if req.transport == Transport::Tls13 {
                ssl.set_ciphersuites(suite.tls13_name())
            } else {
                ssl.set_cipher_list(suite.openssl_name())
            }
            .map_err(TlsError::from)?;
        }
        let key = ffi::remote_signing_key(public, signer).map_err(TlsError::from)?;
        let (leaf, chain) = certs
            .split_first()
            .ok_or_else(|| DelegationError::Certificate("no certificate".into()))?;
        ssl.set_certificate(leaf).map_err(TlsError::from)?;
        for c in chain {
            ssl.add_chain_cert(c.clone()).map_err(TlsError::from)?;
        }
        ssl.set_private_key(&key).map_err(TlsError::from)?;
        let name = if req.server_name.is_empty() {
            tls::host_of(&req.server)
        } else {
            &req.server_name
        };
        tls::verify_server_name(&mut ssl, name).map_err(TlsError::from)?;
        let started = Instant::now();
        let deadline = started + Duration::from_secs(self.cfg.handshake_timeout_secs) + wait;
        let mut conn = tls::connect(ssl, req.transport, &req.server, deadline)?;
        // TLS 1.3: the ticket comes after the handshake, in a NewSessionTicket.
        if req.transport == Transport::Tls13 {
            conn.await_ticket(&req.server, deadline)?;
        }
        // A handshake started ahead made its session (at the server) before it waited.
        let age = u32::try_from(started.elapsed().as_secs()).unwrap_or(u32::MAX);
        let lifetime = self.cfg.session_lifetime_secs.saturating_sub(age).max(1);
        let context = SessionContext::from_ssl(conn.ssl(), lifetime);
        // close_notify keeps the session resumable on the server.
        conn.close();
        Ok(context?)
    }

    /// Starts the handshake for `req` on a blocking thread, which holds `permit` while it runs.
    fn start_handshake(
        self: &Arc<Self>,
        req: DelegationRequest,
        certs: Vec<X509>,
        public: EcKey<Public>,
        permit: OwnedSemaphorePermit,
        wait: Duration,
        running: Option<Running>,
    ) -> Handshake {
        let (job_tx, jobs) = mpsc::channel::<SignJob>(1);
        let signer: Box<ffi::RemoteSigner> = Box::new(move |digest: &[u8]| {
            let (reply, answer) = oneshot::channel();
            job_tx
                .blocking_send(SignJob {
                    digest: digest.to_vec(),
                    reply,
                })
                .ok()?;
            answer.blocking_recv().ok().flatten()
        });
        let agent = self.clone();
        let key = public.clone();
        let task = tokio::task::spawn_blocking(move || {
            let r = agent.delegate(&req, &certs, &key, signer, wait);
            drop(permit);
            drop(running);
            r
        });
        Handshake { task, jobs, public }
    }

    /// A device's `Expect`: schedules its handshake to start `prestart_lead_ms` before the
    /// device should ask, to wait at the signature up to `prestart_hold_secs` after that. A
    /// hint: what is refused is logged, never answered (the device may be asleep).
    fn expect(self: &Arc<Self>, device: &str, in_ms: u32, request: DelegationRequest) {
        let refuse = |reason: &str| {
            warn!(event = "prestart.refused", device = %device, server = %request.server, reason = %reason);
        };
        if !self.cfg.prestart {
            return refuse("prestart = false in the agent's config");
        }
        if in_ms > MAX_EXPECT_MS {
            return refuse(&format!("expected in {in_ms} ms, over 24 h"));
        }
        if !self.server_allowed(&request.server) {
            return refuse("the server is not in the agent's allowed_servers");
        }
        if let Err(e) = self.suite_of(&request) {
            return refuse(&e.to_string());
        }
        if self.lock_running().contains(device) {
            return refuse("its previous handshake started ahead is still running");
        }
        let (certs, public) = match device_identity(&request.cert_chain) {
            Ok(x) => x,
            Err(e) => return refuse(&e.to_string()),
        };
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let server = request.server.clone();
        let lead = self.cfg.prestart_lead_ms.min(in_ms);
        // From its start, a handshake waits through the lead, then the hold.
        let wait = Duration::from_millis(u64::from(lead))
            + Duration::from_secs(self.cfg.prestart_hold_secs);
        let agent = self.clone();
        let name = device.to_owned();
        // The table stays locked until the entry holds its timer: the timer's first look at
        // the table (after a sleep that may be 0) finds it.
        let mut table = self.lock_prestarts();
        let timer = tokio::spawn(async move {
            let device = name;
            tokio::time::sleep(Duration::from_millis(u64::from(in_ms - lead))).await;
            {
                let mut table = agent.lock_prestarts();
                let Some(p) = table.get_mut(&device).filter(|p| p.serial == serial) else {
                    return;
                };
                let Ok(permit) = agent.permits.clone().try_acquire_owned() else {
                    warn!(event = "prestart.skipped", device = %device, reason = "max_concurrent_delegations handshakes are running");
                    drop(table.remove(&device));
                    return;
                };
                agent.lock_running().insert(device.clone());
                let running = Running {
                    agent: agent.clone(),
                    device: device.clone(),
                };
                p.handshake = Some(agent.start_handshake(
                    p.request.clone(),
                    certs,
                    public,
                    permit,
                    wait,
                    Some(running),
                ));
            }
            info!(event = "prestart.started", device = %device, server = %server);
            tokio::time::sleep(wait).await;
            let expired = {
                let mut table = agent.lock_prestarts();
                match table.get_mut(&device) {
                    Some(p) if p.serial == serial => {
                        // Not `remove` while this task runs: dropping it would abort it.
                        p.timer = None;
                        table.remove(&device)
                    }
                    _ => None,
                }
            };
            if expired.is_some() {
                warn!(event = "prestart.expired", device = %device, reason = "the device did not ask in time");
            }
        });
        // A newer expectation replaces (and stops) an older one.
        table.insert(
            device.to_owned(),
            Prestart {
                request,
                serial,
                handshake: None,
                timer: Some(timer.abort_handle()),
            },
        );
        drop(table);
        info!(event = "prestart.scheduled", device = %device, in_ms);
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_prestarts(&self) -> std::sync::MutexGuard<'_, HashMap<String, Prestart>> {
        // A panic elsewhere while holding it leaves a table that is still whole.
        self.prestarts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The handshake started ahead for `device`, if it is for exactly `req` and still running.
    fn claim_prestart(&self, device: &str, req: &DelegationRequest) -> Option<Handshake> {
        let mut p = self.lock_prestarts().remove(device)?;
        // Every field but the ID (the device picks that when it asks).
        let e = &p.request;
        let same = (
            e.transport,
            e.suite,
            &e.server,
            &e.server_name,
            &e.cert_chain,
        ) == (
            req.transport,
            req.suite,
            &req.server,
            &req.server_name,
            &req.cert_chain,
        );
        let unused = |reason: &str| {
            info!(event = "prestart.unused", device = %device, reason = %reason);
            None
        };
        let Some(h) = p.handshake.take() else {
            return unused("the device asked before its start time");
        };
        if !same {
            return unused("the request is not the one expected");
        }
        if h.task.is_finished() {
            return unused("it ended before the device asked");
        }
        Some(h)
    }

    /// Accepts device connections until the listener fails.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (stream, peer) = listener.accept().await?;
            let agent = self.clone();
            tokio::spawn(async move {
                match agent.handle(stream).await {
                    Ok(device) => debug!(event = "channel.closed", peer = %peer, device = %device),
                    Err(ChannelEnd::Refused { device, reason }) => {
                        warn!(event = "channel.refused", peer = %peer, device = %device.as_deref().unwrap_or("-"), reason = %reason)
                    }
                    Err(ChannelEnd::Broken { device, reason }) => {
                        warn!(event = "channel.closed", peer = %peer, device = %device, reason = %reason)
                    }
                }
            });
        }
    }

    /// One device connection; `Ok(device ID)` when the device closed it after using it.
    async fn handle(self: Arc<Self>, stream: TcpStream) -> Result<String, ChannelEnd> {
        let refused = |device: Option<&str>, reason: String| ChannelEnd::Refused {
            device: device.map(str::to_owned),
            reason,
        };
        let _ = stream.set_nodelay(true);
        let (mut rd, mut wr) = stream.into_split();
        let hello = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut rd))
            .await
            .map_err(|_| refused(None, "no hello within 10 s".into()))?
            .map_err(|e| refused(None, e))?
            .ok_or_else(|| refused(None, "closed before its hello".into()))?;
        let (device_id, nonce_d) =
            channel::parse_hello(&hello).map_err(|e| refused(None, format!("hello: {e}")))?;
        let id = Some(device_id.as_str());
        let key = self.devices.get(&device_id).ok_or_else(|| {
            refused(
                id,
                format!(
                    "hello from unknown device `{device_id}` (not in the agent's [[device]] list)"
                ),
            )
        })?;
        let mut nonce_a = [0u8; NONCE_LEN];
        openssl::rand::rand_bytes(&mut nonce_a).map_err(|e| refused(id, e.to_string()))?;
        write_frame(&mut wr, &channel::hello_reply(&nonce_a))
            .await
            .map_err(|e| refused(id, e))?;
        let (mut sealer, mut opener) =
            Channel::new(Role::Agent, key, &device_id, &nonce_d, &nonce_a).split();

        // Reading runs in its own task so that select! below never cancels a half-read frame.
        let (in_tx, mut inbox) = mpsc::channel::<Result<Message, String>>(4);
        let reader = tokio::spawn(async move {
            loop {
                let item = match read_frame(&mut rd).await {
                    Ok(Some(frame)) => opener.open(&frame).map_err(|e: ChannelError| e.to_string()),
                    Ok(None) => break,
                    Err(e) => Err(e),
                };
                let stop = item.is_err();
                if in_tx.send(item).await.is_err() || stop {
                    break;
                }
            }
        });
        // Until the device's first authentic record the channel is not confirmed: a failure
        // then is the device refused (or refusing us), most likely different pairing keys.
        let result = async {
            send(&mut wr, &mut sealer, &Message::Ready)
                .await
                .map_err(|e| refused(id, format!("sending ready: {e}")))?;
            let first = match inbox.recv().await {
                None => {
                    return Err(refused(
                        id,
                        "the device closed the channel before its first record: it could not \
                         authenticate the agent's ready (a different pairing key?)"
                            .into(),
                    ));
                }
                Some(item) => item.map_err(|e| refused(id, format!("first record: {e}")))?,
            };
            info!(event = "channel.open", device = %device_id);
            let broken = |reason: String| ChannelEnd::Broken {
                device: device_id.clone(),
                reason,
            };
            let mut next = Some(first);
            loop {
                let msg = match next.take() {
                    Some(m) => m,
                    None => match inbox.recv().await {
                        None => return Ok(device_id.clone()),
                        Some(item) => item.map_err(broken)?,
                    },
                };
                match msg {
                    Message::Delegation(req) => {
                        self.clone()
                            .run_delegation(&device_id, req, &mut wr, &mut sealer, &mut inbox)
                            .await
                            .map_err(broken)?;
                    }
                    Message::Expect { in_ms, request } => self.expect(&device_id, in_ms, request),
                    Message::Error { reason, code, .. } => {
                        warn!(event = "device.error", device = %device_id, code = ?code, reason = %reason);
                    }
                    other => {
                        let reason = format!("unexpected {} message outside a delegation", other.name());
                        warn!(event = "device.bad_message", device = %device_id, reason = %reason);
                        send(&mut wr, &mut sealer, &Message::error(0, ErrorCode::BadMessage, &reason))
                            .await
                            .map_err(broken)?;
                    }
                }
            }
        }
        .await;
        reader.abort();
        result
    }

    async fn run_delegation(
        self: Arc<Self>,
        device_id: &str,
        req: DelegationRequest,
        wr: &mut OwnedWriteHalf,
        sealer: &mut Sealer,
        inbox: &mut mpsc::Receiver<Result<Message, String>>,
    ) -> Result<(), String> {
        let id = req.delegation_id;
        let started = Instant::now();
        info!(event = "delegation.start", device = %device_id, delegation = %format!("{id:#018x}"), server = %req.server, transport = ?req.transport);
        if !self.server_allowed(&req.server) {
            let reason = format!(
                "server {} is not in the agent's allowed_servers",
                req.server
            );
            warn!(event = "delegation.refused", device = %device_id, delegation = %format!("{id:#018x}"), reason = %reason);
            return send(
                wr,
                sealer,
                &Message::error(id, ErrorCode::NotAllowed, &reason),
            )
            .await;
        }
        let (certs, public) = match device_identity(&req.cert_chain) {
            Ok(x) => x,
            Err(e) => {
                warn!(event = "delegation.failed", device = %device_id, delegation = %format!("{id:#018x}"), reason = %e);
                let m = Message::error(id, e.code(), &e.to_string());
                return send(wr, sealer, &m).await;
            }
        };
        let (mut hs, prestarted) = match self.claim_prestart(device_id, &req) {
            Some(h) => (h, true),
            None => {
                // Bounds the handshakes (and blocking threads) running at once.
                let permit = self
                    .permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| e.to_string())?;
                (
                    self.start_handshake(req, certs, public, permit, Duration::ZERO, None),
                    false,
                )
            }
        };

        let sign_timeout = Duration::from_secs(self.cfg.sign_timeout_secs);
        let mut asked = false;
        let mut waiting: Option<(SignJob, tokio::time::Instant)> = None;
        let mut channel_error: Option<String> = None;
        let outcome = loop {
            let sign_deadline = waiting.as_ref().map(|w| w.1);
            tokio::select! {
                r = &mut hs.task => break r.unwrap_or_else(|e| Err(DelegationError::Internal(e.to_string()))),
                Some(job) = hs.jobs.recv() => {
                    if asked {
                        // libssl signs once per handshake; a second request is a bug, refuse it.
                        let _ = job.reply.send(None);
                        continue;
                    }
                    asked = true;
                    let m = Message::SignRequest { delegation_id: id, scheme: SIG_ECDSA_P256_SHA256, digest: job.digest.clone() };
                    send(wr, sealer, &m).await?;
                    debug!(event = "sign.request", device = %device_id, delegation = %format!("{id:#018x}"));
                    waiting = Some((job, tokio::time::Instant::now() + sign_timeout));
                }
                item = inbox.recv(), if channel_error.is_none() => {
                    match item {
                        Some(Ok(Message::Signature { delegation_id, signature })) if delegation_id == id && waiting.is_some() => {
                            if let Some((job, _)) = waiting.take() {
                                let good = EcdsaSig::from_der(&signature)
                                    .and_then(|s| s.verify(&job.digest, &hs.public))
                                    .unwrap_or(false);
                                if !good {
                                    warn!(event = "sign.bad_signature", device = %device_id, delegation = %format!("{id:#018x}"));
                                }
                                let _ = job.reply.send(good.then_some(signature));
                            }
                        }
                        Some(Ok(Message::Error { delegation_id, code, reason })) if delegation_id == id => {
                            warn!(event = "sign.refused", device = %device_id, delegation = %format!("{id:#018x}"), code = ?code, reason = %reason);
                            if let Some((job, _)) = waiting.take() { let _ = job.reply.send(None); }
                        }
                        Some(Ok(other)) => {
                            let reason = format!("unexpected {} message during delegation {id:#018x}", other.name());
                            warn!(event = "device.bad_message", device = %device_id, reason = %reason);
                            if let Some((job, _)) = waiting.take() { let _ = job.reply.send(None); }
                        }
                        Some(Err(e)) => {
                            if let Some((job, _)) = waiting.take() { let _ = job.reply.send(None); }
                            channel_error = Some(e);
                        }
                        None => {
                            if let Some((job, _)) = waiting.take() { let _ = job.reply.send(None); }
                            channel_error = Some("device closed the channel".into());
                        }
                    }
                }
                _ = sleep_until_opt(sign_deadline) => {
                    warn!(event = "sign.timeout", device = %device_id, delegation = %format!("{id:#018x}"));
                    if let Some((job, _)) = waiting.take() { let _ = job.reply.send(None); }
                }
            }
        };
        if let Some(e) = channel_error {
            return Err(e);
        }
        let ms = started.elapsed().as_millis() as u64;
        match outcome {
            Ok(context) => {
                info!(event = "delegation.done", device = %device_id, delegation = %format!("{id:#018x}"), session_id = %hex::encode(&context.session_id), suite = %format!("{:#06x}", context.suite), prestarted, ms);
                let m = Message::Context {
                    delegation_id: id,
                    context,
                };
                let r = send(wr, sealer, &m).await;
                // `m` holds the master secret: wiped here (SessionContext zeroizes on drop).
                drop(m);
                info!(event = "context.forgotten", device = %device_id, delegation = %format!("{id:#018x}"));
                r
            }
            Err(e) => {
                warn!(event = "delegation.failed", device = %device_id, delegation = %format!("{id:#018x}"), reason = %e, ms);
                send(wr, sealer, &Message::error(id, e.code(), &e.to_string())).await
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// One frame; `None` when the device closed the connection between frames.
async fn read_frame(rd: &mut OwnedReadHalf) -> Result<Option<Vec<u8>>, String> {
    let mut len = [0u8; 2];
    match rd.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(format!("read: {e}")),
    }
    let n = usize::from(u16::from_be_bytes(len));
    if n == 0 || n > MAX_FRAME {
        return Err(format!("frame of {n} bytes (1..={MAX_FRAME} allowed)"));
    }
    let mut body = vec![0u8; n];
    rd.read_exact(&mut body)
        .await
        .map_err(|e| format!("read: {e}"))?;
    Ok(Some(body))
}

async fn write_frame(wr: &mut OwnedWriteHalf, body: &[u8]) -> Result<(), String> {
    let frame = channel::framed(body).map_err(|e| e.to_string())?;
    wr.write_all(&frame)
        .await
        .map_err(|e| format!("write: {e}"))
}

async fn send(wr: &mut OwnedWriteHalf, sealer: &mut Sealer, msg: &Message) -> Result<(), String> {
    let body = sealer.seal(msg).map_err(|e| e.to_string())?;
    write_frame(wr, &body).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::ec::EcGroup;
    use openssl::pkey::PKey;
    use openssl::x509::extension::ExtendedKeyUsage;
    use openssl::x509::{X509Builder, X509NameBuilder};

    /// A self-signed P-256 certificate with the given extended key usage (none: `None`).
    fn cert(eku: Option<ExtendedKeyUsage>) -> Vec<u8> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "sensor-1").unwrap();
        let name = name.build();
        let mut b = X509Builder::new().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        if let Some(eku) = eku {
            b.append_extension(eku.build().unwrap()).unwrap();
        }
        b.sign(&key, openssl::hash::MessageDigest::sha256())
            .unwrap();
        b.build().to_der().unwrap()
    }

    #[test]
    fn device_certificates_must_allow_client_auth() {
        assert!(device_identity(&[cert(None)]).is_ok());
        let mut client = ExtendedKeyUsage::new();
        client.client_auth();
        assert!(device_identity(&[cert(Some(client))]).is_ok());
        let mut server = ExtendedKeyUsage::new();
        server.server_auth();
        let e = device_identity(&[cert(Some(server))]).unwrap_err();
        assert!(e.to_string().contains("does not include clientAuth"), "{e}");
        assert_eq!(e.code(), ErrorCode::BadMessage);
    }
}
