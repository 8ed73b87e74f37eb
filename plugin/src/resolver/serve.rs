//! The local key-resolver daemon's request path (a hickory `RequestHandler`): TYPE65300
//! answered with verified records only and the AD bit set; a verification failure answered
//! SERVFAIL with an Extended DNS Error (RFC 8914) saying what failed; A/AAAA answered from the
//! configured DNS servers (cached), so one resolver address serves an application.

use std::sync::Arc;
use std::time::Instant;

use hickory_net::runtime::Time;
use hickory_proto::op::{Edns, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tracing::{debug, info, warn};

use super::{ResolveError, Resolver, rdata};
use crate::zone::TPKEY_TYPE;

/// EDE option code (RFC 8914).
const EDE: u16 = 15;
/// EDE info codes used here.
const EDE_OTHER: u16 = 0;
const EDE_DNSSEC_BOGUS: u16 = 6;
const EDE_NOT_SUPPORTED: u16 = 21;
const EDE_NO_REACHABLE_AUTHORITY: u16 = 22;

/// Serves key and address queries from a resolver.
pub struct ResolverHandler {
    resolver: Arc<Resolver>,
}

impl ResolverHandler {
    /// A handler over `resolver`.
    pub fn new(resolver: Arc<Resolver>) -> Self {
        Self { resolver }
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
}

impl Reply {
    fn error(rcode: ResponseCode, ede: Option<(u16, String)>) -> Self {
        Self {
            rcode,
            answers: Vec::new(),
            authentic: false,
            ede,
        }
    }
}

async fn send<R: ResponseHandler>(request: &Request, reply: Reply, mut handle: R) -> ResponseInfo {
    let mut edns = response_edns(request);
    if let (Some(e), Some((code, text))) = (edns.as_mut(), &reply.ede) {
        // EDE text is UTF-8 without a terminator; keep it well inside a UDP answer.
        let mut t = text.clone();
        t.truncate(t.floor_char_boundary(400));
        let mut data = code.to_be_bytes().to_vec();
        data.extend_from_slice(t.as_bytes());
        e.options_mut().insert(EdnsOption::Unknown(EDE, data));
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
        let reply = match query.query_type() {
            t if t == TPKEY_TYPE => self.keys(&qname).await,
            t @ (RecordType::A | RecordType::AAAA) => self.addresses(&qname, t).await,
            other => Reply::error(
                ResponseCode::Refused,
                Some((
                    EDE_NOT_SUPPORTED,
                    format!("this key resolver answers TYPE65300, A and AAAA, not {other}"),
                )),
            ),
        };
        send(request, reply, handle).await
    }
}
