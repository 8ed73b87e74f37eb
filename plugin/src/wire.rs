//! Plain DNS queries parsed in place and answers written by patching bytes encoded earlier: the
//! UDP fast paths of the key server (answers encoded when a zone is built) and of the key
//! resolver daemon (answers kept from its slow path), and the UDP loop both run.
//!
//! A *plain* query is QUERY opcode, QR clear, one question of class IN with an uncompressed
//! name, no answer or authority records, and at most one additional record: an OPT of version
//! 0 whose options are well formed (none of the ones hickory decodes strictly: NSID, ECS).
//! Everything else is left to the caller's slow path. Nothing here allocates or panics on any
//! input.

use std::future::Future;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tracing::debug;

/// Longest name in wire form (RFC 1035 §2.3.4).
pub const NAME_MAX: usize = 255;
/// Size of an OPT record without options.
pub const OPT_LEN: usize = 11;
/// UDP payload of a client that sent no EDNS (RFC 1035 §4.2.1).
pub const UDP_MIN: usize = 512;

const TYPE_OPT: u16 = 41;
const OPT_NSID: u16 = 3;
const OPT_ECS: u16 = 8;

/// The EDNS part of a plain query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns0 {
    /// UDP payload size as sent.
    pub payload: u16,
    /// DO bit (RFC 3225): echoed in the response's OPT.
    pub dnssec_ok: bool,
}

/// A plain query, as parsed in place.
#[derive(Debug, PartialEq, Eq)]
pub struct Question<'a> {
    /// Message ID.
    pub id: u16,
    /// RD bit as sent.
    pub rd: bool,
    /// CD bit as sent.
    pub cd: bool,
    /// QNAME in wire form, as sent (its case is echoed: 0x20).
    pub qname: &'a [u8],
    /// QTYPE.
    pub qtype: u16,
    /// The OPT record, when one came.
    pub edns: Option<Edns0>,
}

impl Question<'_> {
    /// Largest response the client takes over UDP: its EDNS payload, never below 512.
    pub fn udp_limit(&self) -> usize {
        self.edns
            .map_or(UDP_MIN, |e| usize::from(e.payload).max(UDP_MIN))
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Parse a plain query, writing its QNAME lower-cased (ASCII) into `name`; the name's length
/// is returned beside the question. `None`: not a plain query (or `name` is too short).
pub fn parse<'a>(pkt: &'a [u8], name: &mut [u8]) -> Option<(Question<'a>, usize)> {
    let flags = u16_at(pkt, 2)?;
    // QR clear, opcode QUERY.
    if flags & 0x8000 != 0 || (flags >> 11) & 0xf != 0 {
        return None;
    }
    let (qd, an, ns, ar) = (
        u16_at(pkt, 4)?,
        u16_at(pkt, 6)?,
        u16_at(pkt, 8)?,
        u16_at(pkt, 10)?,
    );
    if qd != 1 || an != 0 || ns != 0 || ar > 1 {
        return None;
    }
    let mut pos = 12;
    let mut k = 0;
    loop {
        let len = usize::from(*pkt.get(pos)?);
        if len == 0 {
            *name.get_mut(k)? = 0;
            k += 1;
            pos += 1;
            break;
        }
        // No compression pointers or extended labels; at most 255 bytes with the root.
        if len > 63 || k + 1 + len + 1 > NAME_MAX {
            return None;
        }
        let label = pkt.get(pos + 1..pos + 1 + len)?;
        let dst = name.get_mut(k..k + 1 + len)?;
        dst[0] = len as u8;
        for (d, b) in dst[1..].iter_mut().zip(label) {
            *d = b.to_ascii_lowercase();
        }
        k += 1 + len;
        pos += 1 + len;
    }
    let qname = pkt.get(12..pos)?;
    let qtype = u16_at(pkt, pos)?;
    if u16_at(pkt, pos + 2)? != 1 {
        return None;
    }
    pos += 4;
    let mut edns = None;
    if ar == 1 {
        // OPT: root owner, type 41, class = payload, TTL = ext-rcode/version/flags, RDLEN.
        let opt = pkt.get(pos..pos + OPT_LEN)?;
        if opt[0] != 0 || u16_at(opt, 1)? != TYPE_OPT || opt[6] != 0 {
            return None;
        }
        let rdlen = usize::from(u16_at(opt, 9)?);
        let mut at = pos + OPT_LEN;
        let end = at + rdlen;
        // Options: code, length, data; exactly filling RDATA.
        while at < end {
            let code = u16_at(pkt, at)?;
            let olen = usize::from(u16_at(pkt, at + 2)?);
            if code == OPT_NSID || code == OPT_ECS {
                return None;
            }
            at += 4 + olen;
        }
        if at != end {
            return None;
        }
        edns = Some(Edns0 {
            payload: u16_at(opt, 3)?,
            dnssec_ok: opt[7] & 0x80 != 0,
        });
        pos = end;
    }
    if pos != pkt.len() {
        return None;
    }
    Some((
        Question {
            id: u16_at(pkt, 0)?,
            rd: flags & 0x0100 != 0,
            cd: flags & 0x0010 != 0,
            qname,
            qtype,
            edns,
        },
        k,
    ))
}

/// Whether the lower-cased wire name `name` is `origin` or below it (`origin` lower-cased).
pub fn in_zone(name: &[u8], origin: &[u8]) -> bool {
    let Some(cut) = name.len().checked_sub(origin.len()) else {
        return false;
    };
    // `cut` must fall on a label boundary.
    let mut pos = 0;
    while pos < cut {
        match name.get(pos) {
            Some(&l) if l != 0 => pos += 1 + usize::from(l),
            _ => return false,
        }
    }
    pos == cut && name.get(cut..) == Some(origin)
}

/// Copy into a response the header fields a response takes from its query (ID, RD, CD) and
/// the question's name as sent (0x20). The response's question must have the query's name
/// (in any case) at offset 12.
pub fn patch_from_query(out: &mut [u8], q: &Question<'_>) -> Option<()> {
    let h = out.get_mut(..12 + q.qname.len())?;
    h[..2].copy_from_slice(&q.id.to_be_bytes());
    h[2] = (h[2] & !0x01) | u8::from(q.rd);
    h[3] = (h[3] & !0x10) | (u8::from(q.cd) << 4);
    h[12..].copy_from_slice(q.qname);
    Some(())
}

/// The OPT record of a response to `edns`: payload max(client's, 512), version 0, the DO bit
/// echoed, no options, no extended RCODE bits (as hickory encodes it).
pub fn response_opt(edns: Edns0) -> [u8; OPT_LEN] {
    let p = edns.payload.max(UDP_MIN as u16).to_be_bytes();
    let flags = if edns.dnssec_ok { 0x80 } else { 0 };
    [0, 0, TYPE_OPT as u8, p[0], p[1], 0, 0, flags, 0, 0, 0]
}

/// Answer `q` from `template`: a whole response encoded for the lower-cased name, with ID 0,
/// RD and CD clear and no OPT. Written into `out` and
/// finished by [`finish_answer`]. `None` when `out` is too small or the template does not
/// match the question.
pub fn write_answer(template: &[u8], q: &Question<'_>, out: &mut [u8]) -> Option<usize> {
    let n = template.len();
    out.get_mut(..n)?.copy_from_slice(template);
    finish_answer(out, n, q)
}

/// Finish the response in `out[..n]` (shaped as [`write_answer`]'s template, its question's
/// name as long as the query's) for `q`: ID, RD, CD, the question's case and QTYPE patched,
/// the OPT appended when the query had one, and cut to a well-formed TC answer when it does
/// not fit the client's size. Returns the length to send.
pub fn finish_answer(out: &mut [u8], n: usize, q: &Question<'_>) -> Option<usize> {
    let qend = 12 + q.qname.len();
    let ar = u16_at(out, 10)?;
    if n < qend + 4 {
        return None;
    }
    let opt = q.edns.map(response_opt);
    let total = n + opt.map_or(0, |o| o.len());
    let dst = out.get_mut(..total)?;
    patch_from_query(dst, q)?;
    dst[qend..qend + 2].copy_from_slice(&q.qtype.to_be_bytes());
    if let Some(o) = opt {
        // The OPT goes last, after any additional records (as hickory writes it).
        dst[n..].copy_from_slice(&o);
        dst[10..12].copy_from_slice(&ar.checked_add(1)?.to_be_bytes());
    }
    if total > q.udp_limit() {
        return truncate(dst);
    }
    Some(total)
}

/// The offset just past the (possibly compressed) name at `pos` in message `b`.
pub fn skip_name(b: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        match *b.get(pos)? {
            0 => return Some(pos + 1),
            l if l & 0xc0 == 0xc0 => return Some(pos + 2),
            l if l <= 63 => pos += 1 + usize::from(l),
            _ => return None,
        }
    }
}

/// Cut the response `msg` to what a client it does not fit gets: the header with TC set, the
/// question, and the OPT record if the response has one; no partial records (as NSD does).
/// Works in place; returns the new length, `None` if `msg` is not a well-formed message.
pub fn truncate(msg: &mut [u8]) -> Option<usize> {
    let count = |m: &[u8], at: usize| u16_at(m, at).map(usize::from);
    let (qd, an, ns, ar) = (
        count(msg, 4)?,
        count(msg, 6)?,
        count(msg, 8)?,
        count(msg, 10)?,
    );
    let mut pos = 12;
    for _ in 0..qd {
        pos = skip_name(msg, pos)? + 4;
    }
    let qend = pos;
    let mut opt = None;
    for i in 0..an + ns + ar {
        let start = pos;
        let name_end = skip_name(msg, pos)?;
        let rtype = u16_at(msg, name_end)?;
        let rdlen = usize::from(u16_at(msg, name_end + 8)?);
        pos = name_end + 10 + rdlen;
        if i >= an + ns && rtype == TYPE_OPT && msg.get(start) == Some(&0) {
            opt = Some((start, pos));
        }
    }
    if pos > msg.len() {
        return None;
    }
    let mut end = qend;
    if let Some((from, to)) = opt {
        msg.copy_within(from..to, qend);
        end += to - from;
    }
    msg[2] |= 0x02;
    msg[6..12].copy_from_slice(&[0, 0, 0, 0, 0, u8::from(opt.is_some())]);
    Some(end)
}

/// Datagrams read per system call by [`serve_udp`].
pub const UDP_BATCH: usize = 32;

/// Largest datagram [`serve_udp`] reads whole; a longer one is dropped (no DNS query over UDP
/// is near it: RFC 6891 suggests 1,232 bytes).
const UDP_READ_MAX: usize = 16_384;

/// `n` UDP sockets bound to `addr`: one, or with `n > 1` each with `SO_REUSEPORT`, so the
/// kernel spreads clients over them (one per worker thread) instead of waking the workers of
/// one shared socket in turn.
pub fn udp_sockets(addr: SocketAddr, n: usize) -> std::io::Result<Vec<UdpSocket>> {
    if n <= 1 {
        return Ok(vec![UdpSocket::bind(addr)?]);
    }
    (0..n)
        .map(|_| {
            let s = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )?;
            s.set_reuse_port(true)?;
            s.bind(&addr.into())?;
            Ok(s.into())
        })
        .collect()
}

/// Serve UDP on `socket` until `stop` is set. Datagrams are read in batches of up to
/// [`UDP_BATCH`] (`recvmmsg`); each goes first to `fast`, which writes an answer into the
/// buffer it is given and returns its length, sent at once; what `fast` declines is handed to
/// `slow` on `rt` (at most `max_slow` at once; more are dropped), which sends its own answers
/// on the socket it is given. Datagrams shorter than a
/// header or cut by the read size, responses (QR set) and datagrams from port 0 are dropped
/// unanswered. Blocks; run it on a thread of its own.
pub fn serve_udp<F, S, Fut>(
    socket: UdpSocket,
    rt: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
    max_slow: usize,
    mut fast: F,
    slow: S,
) -> std::io::Result<()>
where
    F: FnMut(&[u8], &mut [u8]) -> Option<usize>,
    S: Fn(Vec<u8>, SocketAddr, Arc<UdpSocket>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
    use std::io::IoSliceMut;
    use std::os::fd::AsRawFd;

    socket.set_read_timeout(Some(std::time::Duration::from_millis(250)))?;
    let socket = Arc::new(socket);
    let fd = socket.as_raw_fd();
    let mut bufs: Vec<Box<[u8]>> = (0..UDP_BATCH)
        .map(|_| vec![0u8; UDP_READ_MAX].into_boxed_slice())
        .collect();
    let mut out = vec![0u8; 65_535];
    let mut rx = MultiHeaders::<SockaddrStorage>::preallocate(UDP_BATCH, None);
    // Per received datagram: its length and peer (None: dropped).
    let mut got: [(usize, Option<SocketAddr>); UDP_BATCH] = [(0, None); UDP_BATCH];
    let inflight = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        let n = {
            // On the stack: nix ties each call's headers to its buffers' borrow.
            let mut it = bufs.iter_mut();
            let mut iovs: [[IoSliceMut<'_>; 1]; UDP_BATCH] = std::array::from_fn(|_| {
                [IoSliceMut::new(
                    it.next().map_or(&mut [][..], |b| &mut b[..]),
                )]
            });
            match recvmmsg(fd, &mut rx, iovs.iter_mut(), MsgFlags::MSG_WAITFORONE, None) {
                Ok(msgs) => {
                    let mut n = 0;
                    for (i, m) in msgs.enumerate() {
                        let peer = m.address.and_then(socket_addr);
                        if m.flags.contains(MsgFlags::MSG_TRUNC) {
                            debug!(?peer, "UDP datagram over {UDP_READ_MAX} bytes dropped");
                            got[i] = (0, None);
                        } else {
                            got[i] = (m.bytes, peer);
                        }
                        n = i + 1;
                    }
                    n
                }
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    // ICMP errors of earlier sends surface here on some systems; keep serving.
                    debug!(error = %e, "UDP receive");
                    continue;
                }
            }
        };
        for (buf, &(len, peer)) in bufs.iter().zip(&got[..n]) {
            let Some(peer) = peer else { continue };
            let pkt = &buf[..len];
            // Never answer a response (reflection loops), a runt, or a peer that cannot be
            // answered.
            if len < 12 || pkt[2] & 0x80 != 0 || peer.port() == 0 || peer.ip().is_unspecified() {
                continue;
            }
            // Answered at once, each by its own `send_to`: the kernel's cost is per datagram
            // either way (a batched send measured the same), and nix's `sendmmsg` results
            // cannot be counted soundly.
            if let Some(out_len) = fast(pkt, &mut out) {
                if let Err(e) = socket.send_to(&out[..out_len], peer) {
                    debug!(error = %e, %peer, "UDP send");
                }
                continue;
            }
            if inflight.load(Ordering::Relaxed) >= max_slow {
                debug!(%peer, "UDP query dropped: too many unanswered queries in flight");
                continue;
            }
            inflight.fetch_add(1, Ordering::Relaxed);
            let work = slow(pkt.to_vec(), peer, socket.clone());
            let left = inflight.clone();
            rt.spawn(async move {
                work.await;
                left.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }
    Ok(())
}

fn socket_addr(a: nix::sys::socket::SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// A query encoded by hickory (RD set, ID 0x1234), for tests of the fast paths.
#[cfg(test)]
pub(crate) fn test_query(
    name: &str,
    rtype: hickory_proto::rr::RecordType,
    edns: Option<u16>,
) -> Vec<u8> {
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    let name = hickory_proto::rr::Name::from_ascii(name).unwrap();
    m.add_query(Query::query(name, rtype));
    if let Some(p) = edns {
        let mut e = Edns::new();
        e.set_max_payload(p);
        m.edns = Some(e);
    }
    m.to_vec().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, MessageType};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    use super::test_query as query;

    #[test]
    fn plain_queries_parse_and_others_do_not() {
        let mut name = [0u8; NAME_MAX];
        let q = query("WwW.Example.COM.", RecordType::A, Some(1232));
        let (parsed, k) = parse(&q, &mut name).unwrap();
        assert_eq!(parsed.id, 0x1234);
        assert!(parsed.rd);
        assert_eq!(parsed.edns.map(|e| e.payload), Some(1232));
        assert_eq!(parsed.qname, b"\x03WwW\x07Example\x03COM\x00");
        assert_eq!(&name[..k], b"\x03www\x07example\x03com\x00");
        for n in 0..q.len() {
            assert!(parse(&q[..n], &mut name).is_none(), "prefix {n}");
        }
        let mut long = q.clone();
        long.push(0);
        assert!(parse(&long, &mut name).is_none());
        let mut resp = q.clone();
        resp[2] |= 0x80;
        assert!(parse(&resp, &mut name).is_none());
        let mut v1 = q.clone();
        let at = v1.len() - OPT_LEN + 6;
        v1[at] = 1; // EDNS version 1
        assert!(parse(&v1, &mut name).is_none());
        // A compression pointer in the question.
        let mut ptr = query("a.", RecordType::A, None);
        ptr[12] = 0xc0;
        ptr[13] = 12;
        assert!(parse(&ptr, &mut name).is_none());
        // A name buffer too short is a refusal, not a panic.
        assert!(parse(&q, &mut [0u8; 4]).is_none());
    }

    #[test]
    fn options_must_fill_the_opt_exactly() {
        let mut name = [0u8; NAME_MAX];
        let mut q = query("a.example.", RecordType::A, Some(1232));
        // A cookie option (code 10, 8 bytes), RDLEN 12.
        let n = q.len();
        q[n - 1] = 12;
        q.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(parse(&q, &mut name).is_some());
        let mut bad = q.clone();
        bad[n + 3] = 9; // option longer than the RDATA
        assert!(parse(&bad, &mut name).is_none());
        let mut ecs = q.clone();
        ecs[n + 1] = 8;
        assert!(parse(&ecs, &mut name).is_none());
    }

    #[test]
    fn zone_membership_is_by_whole_labels() {
        let origin = b"\x07example\x00";
        assert!(in_zone(b"\x07example\x00", origin));
        assert!(in_zone(b"\x01a\x07example\x00", origin));
        assert!(!in_zone(b"\x08xexample\x00", origin));
        assert!(!in_zone(b"\x03com\x00", origin));
        assert!(in_zone(b"\x03com\x00", b"\x00"));
    }

    #[test]
    fn truncation_keeps_header_question_and_opt_only() {
        let q = query("a.example.", RecordType::A, Some(1232));
        let mut m = Message::from_vec(&q).unwrap();
        m.metadata.message_type = MessageType::Response;
        for i in 0..3u8 {
            m.answers.push(Record::from_rdata(
                Name::from_ascii("a.example.").unwrap(),
                60,
                RData::A(std::net::Ipv4Addr::new(192, 0, 2, i).into()),
            ));
        }
        let mut wire = m.to_vec().unwrap();
        let n = truncate(&mut wire).unwrap();
        let cut = Message::from_vec(&wire[..n]).unwrap();
        assert!(cut.metadata.truncation);
        assert!(cut.answers.is_empty());
        assert_eq!(cut.queries, m.queries);
        assert_eq!(cut.edns.unwrap().max_payload(), 1232);
        for n in 0..wire.len() {
            let mut part = wire[..n].to_vec();
            let _ = truncate(&mut part);
        }
    }
}
