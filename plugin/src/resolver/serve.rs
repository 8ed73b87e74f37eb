//! The local key-resolver daemon's request path: TYPE65300 answered with verified records only
//! and the AD bit set; a verification failure answered SERVFAIL with an Extended DNS Error
//! (RFC 8914) saying what failed; A/AAAA answered from the configured DNS servers (cached), so
//! one resolver address serves an application. TCP is read by `crate::tcp` (this is its
//! `RequestHandler`); UDP is served by [`serve_udp`]: cache hits by the fast path, the rest
//! decoded and encoded by hickory-proto here.

use std::sync::Arc;
use std::time::Instant;

use hickory_net::runtime::Time;
use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tracing::{debug, info, warn};

use super::fastpath::{self, WireAnswer, WireCache};
use super::{ResolveError, Resolver, rdata};
use crate::wire;
use crate::zone::TPKEY_TYPE;

/// EDE option code (RFC 8914).
const EDE: u16 = 15;
/// EDE info codes used here.
const EDE_OTHER: u16 = 0;
const EDE_DNSSEC_BOGUS: u16 = 6;
const EDE_NOT_SUPPORTED: u16 = 21;
const EDE_NO_REACHABLE_AUTHORITY: u16 = 22;
/// UDP queries waiting for the slow path (walks, DNS lookups) at most, per listen address.
const MAX_SLOW_IN_FLIGHT: usize = 4096;

/// Serves key and address queries from a resolver. Clones share the resolver and the cache.
#[derive(Clone)]
pub struct ResolverHandler {
    resolver: Arc<Resolver>,
    wire: Arc<WireCache>,
}

impl ResolverHandler {
    /// A handler over `resolver`.
    pub fn new(resolver: Arc<Resolver>) -> Self {
        let n = resolver.config().cache_size;
        Self {
            resolver,
            wire: Arc::new(WireCache::new(n)),
        }
    }

    /// Drop every response kept for the fast path (new anchors).
    pub fn clear(&self) {
        self.wire.clear();
    }
}

fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|req| {
        let mut e = Edns::new();
        e.set_max_payload(req.max_payload().max(512));
        e.set_version(0);
        e
    })
}

fn failed(request: &Request) -> ResponseInfo {
    let mut meta = Metadata::response_from_request(&request.metadata);
    meta.response_code = ResponseCode::ServFail;
    hickory_proto::op::Header {
        metadata: meta,
        counts: Default::default(),
    }
    .into()
}

fn ede_code(e: &ResolveError) -> u16 {
    match e {
        ResolveError::Verify { .. } | ResolveError::Disagree { .. } => EDE_DNSSEC_BOGUS,
        ResolveError::Unreachable { .. } | ResolveError::Timeout { .. } => {
            EDE_NO_REACHABLE_AUTHORITY
        }
        _ => EDE_OTHER,
    }
}

struct Reply {
    rcode: ResponseCode,
    answers: Vec<Record>,
    authentic: bool,
    ede: Option<(u16, String)>,
    // Until when these answers may be sent again from the fast path.
    expires: Option<Instant>,
}

impl Reply {
    fn error(rcode: ResponseCode, ede: Option<(u16, String)>) -> Self {
        Self {
            rcode,
            answers: Vec::new(),
            authentic: false,
            ede,
            expires: None,
        }
    }
}

fn ede_option(ede: &Option<(u16, String)>) -> Option<EdnsOption> {
    let (code, text) = ede.as_ref()?;
    // EDE text is UTF-8 without a terminator; keep it well inside a UDP answer.
    let mut t = text.clone();
    t.truncate(t.floor_char_boundary(400));
    let mut data = code.to_be_bytes().to_vec();
    data.extend_from_slice(t.as_bytes());
    Some(EdnsOption::Unknown(EDE, data))
}

async fn send<R: ResponseHandler>(request: &Request, reply: Reply, mut handle: R) -> ResponseInfo {
    let mut edns = response_edns(request);
    if let (Some(e), Some(opt)) = (edns.as_mut(), ede_option(&reply.ede)) {
        e.options_mut().insert(opt);
    }
    let mut meta = Metadata::response_from_request(&request.metadata);
    meta.recursion_available = true;
    meta.authoritative = false;
    meta.authentic_data = reply.authentic;
    meta.response_code = reply.rcode;
    let msg = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
        meta,
        reply.answers.iter(),
        std::iter::empty(),
        std::iter::empty(),
        std::iter::empty(),
    );
    match handle.send_response(msg).await {
        Ok(info) => info,
        Err(error) => {
            warn!(%error, peer = %request.src(), "failed to send response");
            failed(request)
        }
    }
}

impl ResolverHandler {
    async fn reply_for(&self, qname: &hickory_proto::rr::Name, qtype: RecordType) -> Reply {
        match qtype {
            t if t == TPKEY_TYPE => self.keys(qname).await,
            t @ (RecordType::A | RecordType::AAAA) => self.addresses(qname, t).await,
            other => Reply::error(
                ResponseCode::Refused,
                Some((
                    EDE_NOT_SUPPORTED,
                    format!("this key resolver answers TYPE65300, A and AAAA, not {other}"),
                )),
            ),
        }
    }

    // A UDP request the fast path did not answer: decode, answer, encode; keep what may be
    // sent again. `None`: nothing to send (not a request, or not even a header).
    async fn udp_slow(&self, pkt: &[u8]) -> Option<Vec<u8>> {
        let id = u16::from_be_bytes([*pkt.first()?, *pkt.get(1)?]);
        if pkt.len() < 12 || pkt[2] & 0x80 != 0 {
            return None;
        }
        let error = |rcode: ResponseCode| {
            let mut m = Message::new(id, MessageType::Response, OpCode::Query);
            m.metadata.response_code = rcode;
            m.metadata.recursion_available = true;
            m.to_vec().ok()
        };
        let req = match Message::from_vec(pkt) {
            Ok(m) => m,
            Err(_) => return error(ResponseCode::FormErr),
        };
        let mut edns = req.edns.as_ref().map(|e| {
            let mut r = Edns::new();
            r.set_max_payload(e.max_payload().max(512));
            r.set_version(0);
            r
        });
        let limit = req
            .edns
            .as_ref()
            .map_or(512, |e| usize::from(e.max_payload().max(512)));
        let reply = if req.metadata.op_code != OpCode::Query {
            Reply::error(ResponseCode::NotImp, None)
        } else if req.edns.as_ref().is_some_and(|e| e.version() > 0) {
            Reply::error(ResponseCode::BADVERS, None)
        } else if req.queries.len() != 1 {
            Reply::error(ResponseCode::FormErr, None)
        } else if req.queries[0].query_class() != DNSClass::IN {
            Reply::error(ResponseCode::Refused, None)
        } else {
            let q = &req.queries[0];
            self.reply_for(q.name(), q.query_type()).await
        };
        if let (Some(e), Some(opt)) = (edns.as_mut(), ede_option(&reply.ede)) {
            e.options_mut().insert(opt);
        }
        let mut m = Message::new(id, MessageType::Response, req.metadata.op_code);
        m.metadata.recursion_desired = req.metadata.recursion_desired;
        m.metadata.checking_disabled = req.metadata.checking_disabled;
        m.metadata.recursion_available = true;
        m.metadata.authentic_data = reply.authentic;
        m.metadata.response_code = reply.rcode;
        m.queries = req.queries;
        m.answers = reply.answers;
        m.edns = edns;
        let mut wire = m.to_vec().ok()?;
        if wire.len() > limit {
            m.answers.clear();
            m.metadata.truncation = true;
            return m.to_vec().ok();
        }
        if let (ResponseCode::NoError, Some(expires), Some(key)) =
            (reply.rcode, reply.expires, fastpath::key_of(pkt))
            && let Some(entry) = WireAnswer::new(wire.clone(), expires)
        {
            self.wire.insert(key, Arc::new(entry), expires);
        }
        wire.shrink_to_fit();
        Some(wire)
    }

    async fn keys(&self, qname: &hickory_proto::rr::Name) -> Reply {
        let name = qname.to_ascii();
        let (r, report) = self.resolver.keys(&name).await;
        match r {
            Ok(set) => {
                let now = Instant::now();
                let left = set.expires.saturating_duration_since(now).as_secs() as u32;
                let answers = set
                    .keys
                    .iter()
                    .filter_map(|k| {
                        rdata(k).map(|d| Record::from_rdata(qname.clone(), k.ttl.min(left), d))
                    })
                    .collect();
                debug!(name = %set.name, cache = ?report.cache, queries = report.queries, "keys answered");
                Reply {
                    rcode: ResponseCode::NoError,
                    answers,
                    authentic: true,
                    ede: None,
                    expires: Some(set.expires),
                }
            }
            Err(ResolveError::NotFound { kind, .. }) => Reply::error(
                if kind == "NXDOMAIN" {
                    ResponseCode::NXDomain
                } else {
                    ResponseCode::NoError
                },
                None,
            ),
            Err(e @ ResolveError::BadName { .. }) => {
                Reply::error(ResponseCode::Refused, Some((EDE_OTHER, e.to_string())))
            }
            Err(e) => {
                info!(name = %name, error = %e, "key resolution failed");
                Reply::error(ResponseCode::ServFail, Some((ede_code(&e), e.to_string())))
            }
        }
    }

    async fn addresses(&self, qname: &hickory_proto::rr::Name, rtype: RecordType) -> Reply {
        let name = qname.to_ascii();
        match self.resolver.addresses(&name).await {
            Ok((ips, until)) => {
                let ttl = until
                    .saturating_duration_since(Instant::now())
                    .as_secs()
                    .min(u64::from(u32::MAX)) as u32;
                let answers = ips
                    .into_iter()
                    .filter_map(|ip| match (ip, rtype) {
                        (std::net::IpAddr::V4(a), RecordType::A) => Some(RData::A(a.into())),
                        (std::net::IpAddr::V6(a), RecordType::AAAA) => Some(RData::AAAA(a.into())),
                        _ => None,
                    })
                    .map(|d| Record::from_rdata(qname.clone(), ttl, d))
                    .collect();
                Reply {
                    rcode: ResponseCode::NoError,
                    answers,
                    authentic: false,
                    ede: None,
                    expires: Some(until),
                }
            }
            Err(ResolveError::NoAddress { nxdomain, .. }) => Reply::error(
                if nxdomain {
                    ResponseCode::NXDomain
                } else {
                    ResponseCode::NoError
                },
                None,
            ),
            Err(e) => Reply::error(
                ResponseCode::ServFail,
                Some((EDE_NO_REACHABLE_AUTHORITY, e.to_string())),
            ),
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for ResolverHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        handle: R,
    ) -> ResponseInfo {
        if request.metadata.op_code != OpCode::Query {
            return send(request, Reply::error(ResponseCode::NotImp, None), handle).await;
        }
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return send(request, Reply::error(ResponseCode::BADVERS, None), handle).await;
        }
        let info = match request.request_info() {
            Ok(info) => info,
            Err(_) => {
                return send(request, Reply::error(ResponseCode::FormErr, None), handle).await;
            }
        };
        let query = info.query;
        if query.query_class() != DNSClass::IN {
            return send(request, Reply::error(ResponseCode::Refused, None), handle).await;
        }
        let qname = query.name().clone().into();
        let reply = self.reply_for(&qname, query.query_type()).await;
        send(request, reply, handle).await
    }
}

/// Serve UDP on `socket` until `stop` is set: cache hits answered on this thread by the fast
/// path, everything else spawned on `rt`. Blocks; run it on a thread of its own.
pub fn serve_udp(
    handler: Arc<ResolverHandler>,
    socket: std::net::UdpSocket,
    rt: tokio::runtime::Handle,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::io::Result<()> {
    let cache = handler.wire.clone();
    // Misses wait for walks: bounded, so a flood of misses cannot grow without end.
    wire::serve_udp(
        socket,
        rt,
        stop,
        MAX_SLOW_IN_FLIGHT,
        move |pkt, out| fastpath::answer(&cache, pkt, Instant::now(), out),
        move |pkt, peer, socket| {
            let h = handler.clone();
            async move {
                if let Some(resp) = h.udp_slow(&pkt).await
                    && let Err(e) = socket.send_to(&resp, peer)
                {
                    debug!(error = %e, %peer, "UDP send");
                }
            }
        },
    )
}
