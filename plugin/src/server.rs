//! The key server's request path: a front `RequestHandler` that streams zone transfers
//! (RFC 5936, several messages) and answers referrals to child key servers, in front of the
//! hickory `Catalog` that holds a `KeyZoneHandler` per zone for everything else.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hickory_net::runtime::Time;
use hickory_net::xfer::Protocol;
use hickory_proto::op::{Edns, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{Catalog, MessageResponseBuilder};
use ipnet::IpNet;
use tracing::{debug, info, warn};

use crate::enroll::UpdateEnrollment;
use crate::handler::{KeyZoneHandler, ZoneCell};

/// Target size of one AXFR message; well below the 64 KiB limit of a DNS message over TCP.
const AXFR_MESSAGE_BYTES: usize = 16 * 1024;

/// Who may transfer zones.
#[derive(Clone, Debug, Default)]
pub struct TransferAcl(pub Vec<IpNet>);

impl TransferAcl {
    /// Whether `ip` may transfer.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// Requests a key server has received, by transport (`tp ctl status` shows them).
#[derive(Debug, Default)]
pub struct QueryCounters {
    /// Requests over UDP.
    pub udp: AtomicU64,
    /// Requests over TCP.
    pub tcp: AtomicU64,
}

/// The request handler of a key server: zones, their catalog, the transfer allow-list.
pub struct KeyServerHandler {
    catalog: Catalog,
    zones: Vec<(LowerName, ZoneCell)>,
    acl: TransferAcl,
    counters: Arc<QueryCounters>,
    enrollment: Option<UpdateEnrollment>,
}

impl KeyServerHandler {
    /// Serve `zones`, allowing transfers to `acl`.
    pub fn new(zones: Vec<ZoneCell>, acl: TransferAcl) -> Self {
        let mut catalog = Catalog::new();
        let mut list = Vec::new();
        for cell in zones {
            let origin = cell.load().origin().clone();
            catalog.upsert(
                origin.clone(),
                vec![Arc::new(KeyZoneHandler::new(cell.clone()))],
            );
            list.push((origin, cell));
        }
        // Longest origin first, so the deepest zone containing a name wins.
        list.sort_by_key(|(o, _)| std::cmp::Reverse(o.num_labels()));
        Self {
            catalog,
            zones: list,
            acl,
            counters: Arc::default(),
            enrollment: None,
        }
    }

    /// Answer enrollments sent as TSIG-signed UPDATE (docs/enrollment.md).
    pub fn with_enrollment(mut self, enrollment: UpdateEnrollment) -> Self {
        self.enrollment = Some(enrollment);
        self
    }

    /// Count requests into `counters`.
    pub fn with_counters(mut self, counters: Arc<QueryCounters>) -> Self {
        self.counters = counters;
        self
    }

    /// The enrollment settings, if any.
    pub(crate) fn enrollment(&self) -> Option<&UpdateEnrollment> {
        self.enrollment.as_ref()
    }

    /// The served zone whose apex is `origin`.
    pub(crate) fn zone_at(&self, origin: &LowerName) -> Option<&ZoneCell> {
        self.zones.iter().find(|(o, _)| o == origin).map(|(_, c)| c)
    }

    fn zone_for(&self, name: &LowerName) -> Option<&(LowerName, ZoneCell)> {
        self.zones.iter().find(|(o, _)| o.zone_of(name))
    }
}

pub(crate) fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|req| {
        let mut e = Edns::new();
        e.set_max_payload(req.max_payload().max(512));
        e.set_version(0);
        e
    })
}

pub(crate) async fn send_rcode<R: ResponseHandler>(
    request: &Request,
    rcode: ResponseCode,
    mut handle: R,
) -> ResponseInfo {
    let edns = response_edns(request);
    let msg = MessageResponseBuilder::new(&request.queries, edns.as_ref())
        .error_msg(&request.metadata, rcode);
    match handle.send_response(msg).await {
        Ok(info) => info,
        Err(error) => {
            warn!(%error, peer = %request.src(), "failed to send response");
            failed(request)
        }
    }
}

pub(crate) fn failed(request: &Request) -> ResponseInfo {
    let mut meta = Metadata::response_from_request(&request.metadata);
    meta.response_code = ResponseCode::ServFail;
    hickory_proto::op::Header {
        metadata: meta,
        counts: Default::default(),
    }
    .into()
}

fn record_size(r: &Record) -> usize {
    let rdata = match &r.data {
        RData::Unknown { rdata, .. } => rdata.anything.len(),
        _ => 128,
    };
    r.name.len() + 12 + rdata
}

#[async_trait::async_trait]
impl RequestHandler for KeyServerHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        match request.protocol() {
            Protocol::Udp => &self.counters.udp,
            _ => &self.counters.tcp,
        }
        .fetch_add(1, Ordering::Relaxed);
        if request.metadata.message_type == MessageType::Query
            && request.metadata.op_code == OpCode::Update
        {
            return crate::update::handle(self, request, response_handle).await;
        }
        if request.metadata.message_type == MessageType::Query
            && request.metadata.op_code == OpCode::Query
            && let Ok(info) = request.request_info()
        {
            let query = info.query;
            if query.query_class() != DNSClass::IN {
                debug!(peer = %request.src(), class = %query.query_class(), "refused: key zones are class IN");
                return send_rcode(request, ResponseCode::Refused, response_handle).await;
            }
            if let Some((origin, cell)) = self.zone_for(query.name()) {
                match query.query_type() {
                    RecordType::AXFR | RecordType::IXFR => {
                        return self
                            .transfer(request, origin, cell, query.query_type(), response_handle)
                            .await;
                    }
                    rtype => {
                        let zone = cell.load();
                        if let Some(set) = zone.referral(query.name(), rtype) {
                            return referral(
                                request,
                                set.records_without_rrsigs(),
                                response_handle,
                            )
                            .await;
                        }
                    }
                }
            }
        }
        self.catalog
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

async fn referral<'a, R: ResponseHandler>(
    request: &Request,
    records: impl Iterator<Item = &'a Record> + Send + 'a,
    mut handle: R,
) -> ResponseInfo {
    let edns = response_edns(request);
    // Not authoritative for the name: AA stays clear, the child's key-server records go in
    // the authority section, like NS and glue.
    let meta = Metadata::response_from_request(&request.metadata);
    let msg = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
        meta,
        std::iter::empty(),
        records,
        std::iter::empty(),
        std::iter::empty(),
    );
    match handle.send_response(msg).await {
        Ok(info) => info,
        Err(error) => {
            warn!(%error, peer = %request.src(), "failed to send referral");
            failed(request)
        }
    }
}

impl KeyServerHandler {
    async fn transfer<R: ResponseHandler>(
        &self,
        request: &Request,
        origin: &LowerName,
        cell: &ZoneCell,
        qtype: RecordType,
        mut handle: R,
    ) -> ResponseInfo {
        let peer = request.src();
        let name = request.request_info().map(|i| i.query.name().clone()).ok();
        if name.as_ref() != Some(origin) {
            return send_rcode(request, ResponseCode::NotAuth, handle).await;
        }
        if !self.acl.allows(peer.ip()) {
            warn!(zone = %origin, %peer, "transfer refused: peer not in axfr_allow");
            return send_rcode(request, ResponseCode::Refused, handle).await;
        }
        let zone = cell.load_full();
        let edns = response_edns(request);
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.authoritative = true;
        if request.protocol() != Protocol::Tcp {
            if qtype == RecordType::IXFR {
                // RFC 1995 §2: over UDP, the SOA alone tells the secondary to use TCP.
                let msg = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
                    meta,
                    zone.soa().records_without_rrsigs(),
                    std::iter::empty(),
                    std::iter::empty(),
                    std::iter::empty(),
                );
                return handle
                    .send_response(msg)
                    .await
                    .unwrap_or_else(|_| failed(request));
            }
            warn!(zone = %origin, %peer, "AXFR over UDP refused");
            return send_rcode(request, ResponseCode::Refused, handle).await;
        }
        // IXFR is answered with the whole zone (RFC 1995 §4), as AXFR.
        let soa: Vec<&Record> = zone.soa().records_without_rrsigs().collect();
        let all: Vec<&Record> = zone.transfer_records().chain(soa.iter().copied()).collect();
        let mut messages = 0usize;
        let mut start = 0;
        let mut last = None;
        while start < all.len() {
            let mut size = 0;
            let mut end = start;
            while end < all.len()
                && (end == start || size + record_size(all[end]) <= AXFR_MESSAGE_BYTES)
            {
                size += record_size(all[end]);
                end += 1;
            }
            let msg = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
                meta,
                all[start..end].iter().copied(),
                std::iter::empty(),
                std::iter::empty(),
                std::iter::empty(),
            );
            match handle.send_response(msg).await {
                Ok(info) => last = Some(info),
                Err(error) => {
                    warn!(zone = %origin, %peer, %error, "transfer aborted");
                    return failed(request);
                }
            }
            messages += 1;
            start = end;
        }
        info!(zone = %origin, %peer, serial = zone.serial(), records = all.len(), messages, "zone transfer served");
        last.unwrap_or_else(|| failed(request))
    }
}
