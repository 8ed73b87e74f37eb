//! DNS over TCP (RFC 7766) for the key server and the resolver daemon, in place of hickory's
//! accept loop, which retries a failed `accept` at once (a process out of descriptors spins on
//! EMFILE) and takes any number of connections. Here: at most `max_clients` connections; a
//! client that finds every one taken makes the connections waiting for their next query close
//! (RFC 7766 §6.2.3) and waits for a slot, at most the idle time; a connection idle for `idle`
//! is closed; `accept` failures for want of descriptors or memory close idle connections too
//! and back off. Each message goes to the hickory request path; responses are written in
//! order, whole (two-byte length, then the message), and a connection whose response cannot
//! be written is closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hickory_net::NetError;
use hickory_net::runtime::TokioTime;
use hickory_net::xfer::Protocol;
use hickory_proto::op::{Header, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Mutex, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::server::LogLimit;

/// How long the accept loop pauses after running out of descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long it pauses after any other failed `accept`.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// The limits of one TCP listener.
#[derive(Clone, Copy, Debug)]
pub struct TcpLimits {
    /// Connections open at once, at most.
    pub max_clients: usize,
    /// A connection that sends nothing for this long, or does not take a response for this
    /// long, is closed.
    pub idle: Duration,
}

/// Serve DNS over TCP on `listener` with `handler` until the returned future is dropped
/// (which closes every connection).
pub async fn serve_tcp<H: RequestHandler>(
    listener: TcpListener,
    handler: Arc<H>,
    limits: TcpLimits,
) {
    static OUT_OF_RESOURCES: LogLimit = LogLimit::new();
    let max = limits.max_clients.max(1);
    let slots = Arc::new(Semaphore::new(max));
    // Moved on when a client needs room (every slot taken, or no descriptor left): the
    // connections waiting for their next message then close.
    let (pressure, _) = watch::channel(0u64);
    let mut conns = JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) if out_of_resources(&e) => {
                if let Some(last) = OUT_OF_RESOURCES.allow() {
                    warn!(error = %e, open = max - slots.available_permits(),
                        "TCP accept failed for want of resources; closing idle connections, pausing {} ms{}",
                        ACCEPT_BACKOFF.as_millis(), crate::server::quiet(last));
                }
                pressure.send_modify(|n| *n += 1);
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
            Err(e) => {
                // A client gone before it was accepted, and the like: never a reason to spin.
                debug!(error = %e, "TCP accept");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        if peer.port() == 0 || peer.ip().is_unspecified() {
            continue;
        }
        // A free slot, or one an idle connection gives up; a client that gets none within
        // the idle time is closed.
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => match wait_for_slot(&slots, &pressure, limits.idle).await {
                Some(slot) => slot,
                None => {
                    debug!(%peer, "TCP client closed: every connection busy");
                    continue;
                }
            },
        };
        conns.spawn(connection(
            stream,
            peer,
            handler.clone(),
            limits.idle,
            pressure.subscribe(),
            slot,
        ));
    }
}

/// A slot for a waiting client: the connections waiting for their next query are asked to
/// close, again every [`ACCEPT_RETRY`] × 10 (one busy at the first call is idle at a later
/// one), for at most `patience`.
async fn wait_for_slot(
    slots: &Arc<Semaphore>,
    pressure: &watch::Sender<u64>,
    patience: Duration,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        pressure.send_modify(|n| *n += 1);
        let next = (tokio::time::Instant::now() + ACCEPT_RETRY * 10).min(deadline);
        match tokio::time::timeout_at(next, slots.clone().acquire_owned()).await {
            Ok(slot) => return slot.ok(),
            Err(_) if next >= deadline => return None,
            Err(_) => {}
        }
    }
}

fn out_of_resources(e: &std::io::Error) -> bool {
    use nix::errno::Errno;
    // Waiting (and closing idle connections) is the only cure.
    e.raw_os_error().is_some_and(|n| {
        [Errno::EMFILE, Errno::ENFILE, Errno::ENOBUFS, Errno::ENOMEM]
            .iter()
            .any(|x| *x as i32 == n)
    })
}

/// How long a new connection may take to send its first query before a client waiting for a
/// slot can make it close.
const FRESH_GRACE: Duration = Duration::from_millis(250);

/// One connection: messages read and answered in order until the peer closes, goes idle,
/// sends something that is not DNS, or the listener needs the slot of an idle connection.
async fn connection<H: RequestHandler>(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    handler: Arc<H>,
    idle: Duration,
    mut pressure: watch::Receiver<u64>,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let (mut rd, wr) = stream.into_split();
    let out = TcpResponse {
        wr: Arc::new(Mutex::new(wr)),
        peer,
        idle,
        failed: Arc::new(AtomicBool::new(false)),
    };
    let opened = std::time::Instant::now();
    let mut fresh = true;
    loop {
        // One read of the length, kept across a call to make room (a read dropped half-way
        // would lose a byte of the next message).
        let read = tokio::time::timeout(idle, rd.read_u16());
        tokio::pin!(read);
        let got = tokio::select! {
            // A query already sent is read before any call to make room.
            biased;
            r = &mut read => Some(r),
            _ = pressure.changed() => None,
        };
        // A connection just made has its first query on the way (a client writes it as it
        // connects): it is not idle until FRESH_GRACE has passed without one.
        let grace = FRESH_GRACE.checked_sub(opened.elapsed()).filter(|_| fresh);
        let got = match (got, grace) {
            (Some(r), _) => r,
            (None, Some(left)) if let Ok(r) = tokio::time::timeout(left, &mut read).await => r,
            (None, _) => {
                debug!(%peer, "TCP connection idle while all slots are taken, closed");
                return;
            }
        };
        let len = match got {
            Ok(Ok(n)) => usize::from(n),
            Ok(Err(_)) => return,
            Err(_) => {
                debug!(%peer, "TCP connection idle, closed");
                return;
            }
        };
        fresh = false;
        let mut msg = vec![0u8; len];
        match tokio::time::timeout(idle, rd.read_exact(&mut msg)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        // A runt cannot be answered; a response (QR set) is never answered.
        if len < 12 || msg[2] & 0x80 != 0 {
            debug!(%peer, len, "TCP message dropped: a runt or a response; closed");
            return;
        }
        handle_raw(&*handler, msg, peer, Protocol::Tcp, out.clone()).await;
        if out.failed.load(Ordering::Relaxed) {
            return;
        }
        // A call to make room while this one was busy is not for it.
        pressure.borrow_and_update();
    }
}

/// One raw DNS message, as hickory's `Server` takes it: decoded, then given to `handler`;
/// FORMERR (header only) for what does not decode.
pub(crate) async fn handle_raw<H: RequestHandler, R: ResponseHandler>(
    handler: &H,
    msg: Vec<u8>,
    peer: SocketAddr,
    protocol: Protocol,
    mut handle: R,
) {
    let Ok(header) = Header::read(&mut BinDecoder::new(&msg)) else {
        return;
    };
    match Request::from_bytes(msg, peer, protocol) {
        Ok(request) => {
            handler
                .handle_request::<_, TokioTime>(&request, handle)
                .await;
        }
        Err(error) => {
            debug!(%peer, %error, "FORMERR: undecodable request");
            let Ok(none) = Queries::read(&mut BinDecoder::new(&[]), 0) else {
                return;
            };
            let msg = MessageResponseBuilder::new(&none, None)
                .error_msg(&header.metadata, ResponseCode::FormErr);
            let _ = handle.send_response(msg).await;
        }
    }
}

/// A response encoded whole (at most 65,535 bytes); when it cannot be, SERVFAIL with the ID
/// and nothing else, as hickory's own handles answer.
pub(crate) fn encode_response<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    peer: SocketAddr,
    buf: &mut Vec<u8>,
) -> Result<ResponseInfo, NetError> {
    let id = response.metadata().id;
    let mut encoder = BinEncoder::new(buf);
    encoder.set_max_size(u16::MAX);
    match response.destructive_emit(&mut encoder) {
        Ok(info) => Ok(info),
        Err(error) => {
            warn!(%error, %peer, "error encoding response");
            let mut meta = Metadata::new(id, MessageType::Response, OpCode::Query);
            meta.response_code = ResponseCode::ServFail;
            let header = Header {
                metadata: meta,
                counts: Default::default(),
            };
            buf.clear();
            header.emit(&mut BinEncoder::new(buf))?;
            Ok(header.into())
        }
    }
}

/// Writes hickory-path responses on a TCP connection, each framed and whole; a peer that does
/// not take one within the idle time loses the connection.
#[derive(Clone)]
struct TcpResponse {
    wr: Arc<Mutex<OwnedWriteHalf>>,
    peer: SocketAddr,
    idle: Duration,
    // Set when a response could not be written: the connection is done.
    failed: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl ResponseHandler for TcpResponse {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let mut wr = self.wr.lock().await;
        let mut buf = vec![0, 0];
        let info = {
            let mut body = Vec::with_capacity(512);
            let info = encode_response(response, self.peer, &mut body)?;
            let len = u16::try_from(body.len())
                .map_err(|_| NetError::from("response over 65,535 bytes"))?;
            buf[..2].copy_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(&body);
            info
        };
        match tokio::time::timeout(self.idle, wr.write_all(&buf)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.failed.store(true, Ordering::Relaxed);
                return Err(e.into());
            }
            Err(_) => {
                self.failed.store(true, Ordering::Relaxed);
                let _ = wr.shutdown().await;
                return Err(NetError::from("TCP peer does not take its response"));
            }
        }
        Ok(info)
    }
}
