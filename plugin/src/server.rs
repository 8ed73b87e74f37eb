//! The key server's request path: a front `RequestHandler` that streams zone transfers
//! (RFC 5936, several messages) and answers referrals to child key servers, in front of the
//! hickory `Catalog` that holds a `KeyZoneHandler` per zone for everything else; and its UDP
//! loop ([`serve_udp`]), where plain queries are answered by copying the answers encoded when
//! the zone was built (`crate::zone::encoded`) and the rest take the hickory path above.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use hickory_net::NetError;
use hickory_net::runtime::Time;
use hickory_net::xfer::Protocol;
use hickory_proto::op::{Edns, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncodable;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{Catalog, MessageResponse, MessageResponseBuilder};
use ipnet::IpNet;
use tracing::{debug, info, warn};

use crate::enroll::UpdateEnrollment;
use crate::handler::{KeyZoneHandler, ZoneCell};
use crate::wire;

/// UDP requests waiting for the hickory path at most, per listen address; more are dropped.
const MAX_SLOW_IN_FLIGHT: usize = 4096;

/// Lines a minute, at most, for one kind of refusal any peer can cause at will (one spoofed
/// datagram each), as NSD limits its own.
const LOG_BURST: u32 = 10;

/// A per-minute budget of log lines for one kind of event.
pub(crate) struct LogLimit {
    minute: AtomicU64,
    lines: AtomicU32,
}

impl LogLimit {
    pub(crate) const fn new() -> Self {
        Self {
            minute: AtomicU64::new(0),
            lines: AtomicU32::new(0),
        }
    }

    /// `Some(last)`: log this one (`last`: the budget of this minute ends with it); `None`:
    /// the budget is spent until the next minute.
    pub(crate) fn allow(&self) -> Option<bool> {
        let minute = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / 60);
        if self.minute.swap(minute, Ordering::Relaxed) != minute {
            self.lines.store(0, Ordering::Relaxed);
        }
        let n = self.lines.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        (n <= LOG_BURST).then_some(n == LOG_BURST)
    }
}

pub(crate) fn quiet(last: bool) -> &'static str {
    if last {
        " (no more such lines this minute)"
    } else {
        ""
    }
}

static OPCODE_LOG: LogLimit = LogLimit::new();
static ACL_LOG: LogLimit = LogLimit::new();
static UDP_AXFR_LOG: LogLimit = LogLimit::new();

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
    // The same zones with their origins in lower-cased wire form, for the UDP fast path.
    wire_zones: Vec<(Box<[u8]>, ZoneCell)>,
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
        let wire_zones = list
            .iter()
            .filter_map(|(o, c)| {
                let wire = Name::from(o.clone()).to_bytes().ok()?;
                Some((wire.into_boxed_slice(), c.clone()))
            })
            .collect();
        Self {
            catalog,
            zones: list,
            wire_zones,
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

/// The OPT of a response: payload max(client's, 512), version 0, the DO bit echoed (RFC 3225),
/// as the `Catalog` writes it.
pub(crate) fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|req| {
        let mut e = Edns::new();
        e.set_max_payload(req.max_payload().max(512));
        e.set_version(0);
        e.set_dnssec_ok(req.flags().dnssec_ok);
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
            && request.edns.as_ref().is_some_and(|e| e.version() > 0)
        {
            // RFC 6891 §6.1.3, on every path (referrals, transfers, UPDATE too), as the Catalog.
            let mut edns = response_edns(request);
            if let Some(e) = edns.as_mut() {
                e.set_rcode_high(ResponseCode::BADVERS.high());
            }
            let msg = MessageResponseBuilder::new(&request.queries, edns.as_ref())
                .error_msg(&request.metadata, ResponseCode::BADVERS);
            let mut handle = response_handle;
            return handle
                .send_response(msg)
                .await
                .unwrap_or_else(|_| failed(request));
        }
        if request.metadata.message_type == MessageType::Query
            && request.metadata.op_code == OpCode::Update
        {
            return crate::update::handle(self, request, response_handle).await;
        }
        if request.metadata.message_type == MessageType::Query
            && request.metadata.op_code != OpCode::Query
        {
            // NOTIFY, STATUS, …: NOTIMP, as the Catalog answers them, logged with a limit
            // (a spoofed datagram each would otherwise write a line each).
            if let Some(last) = OPCODE_LOG.allow() {
                warn!(op = %request.metadata.op_code, peer = %request.src(), "unsupported opcode refused (NOTIMP){}", quiet(last));
            }
            return send_rcode(request, ResponseCode::NotImp, response_handle).await;
        }
        if request.metadata.message_type == MessageType::Query
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
            if let Some(last) = ACL_LOG.allow() {
                warn!(zone = %origin, %peer, "transfer refused: peer not in axfr_allow{}", quiet(last));
            }
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
            if let Some(last) = UDP_AXFR_LOG.allow() {
                warn!(zone = %origin, %peer, "AXFR over UDP refused{}", quiet(last));
            }
            return send_rcode(request, ResponseCode::Refused, handle).await;
        }
        // IXFR is answered with the whole zone (RFC 1995 §4), as AXFR.
        let soa = zone.soa().records_without_rrsigs().cloned();
        let mut all = zone.transfer_records().chain(soa).peekable();
        let mut messages = 0usize;
        let mut count = 0usize;
        let mut last = None;
        let mut chunk: Vec<Record> = Vec::new();
        while all.peek().is_some() {
            chunk.clear();
            let mut size = 0;
            while let Some(r) =
                all.next_if(|r| chunk.is_empty() || size + record_size(r) <= AXFR_MESSAGE_BYTES)
            {
                size += record_size(&r);
                chunk.push(r);
            }
            count += chunk.len();
            let msg = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
                meta,
                chunk.iter(),
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
        }
        info!(zone = %origin, %peer, serial = zone.serial(), records = count, messages, "zone transfer served");
        last.unwrap_or_else(|| failed(request))
    }
}

impl KeyServerHandler {
    /// The fast path: answer the plain query `pkt` into `out` from the encoded answers of the
    /// deepest zone holding its name (NXDOMAIN from a template for names that do not exist, in
    /// zones that delegate nothing). `None` (the hickory path answers) when it is not a plain
    /// query, or its name has no answer there (below a delegation, or in a zone that has one).
    /// No allocation and no lock: one atomic load of the zone, one hash probe.
    pub fn answer_plain(&self, pkt: &[u8], out: &mut [u8]) -> Option<usize> {
        let mut name = [0u8; wire::NAME_MAX];
        let (q, n) = wire::parse(pkt, &mut name)?;
        let name = &name[..n];
        let (_, cell) = self
            .wire_zones
            .iter()
            .find(|(origin, _)| wire::in_zone(name, origin))?;
        let len = cell.load().encoded()?.answer(name, &q, out)?;
        self.counters.udp.fetch_add(1, Ordering::Relaxed);
        Some(len)
    }

    /// The hickory path for one UDP datagram, as hickory's `Server` takes it (decode, FORMERR
    /// for what does not decode, the request handler), answered through [`UdpResponse`].
    async fn udp_slow(&self, pkt: Vec<u8>, peer: SocketAddr, socket: Arc<UdpSocket>) {
        let handle = UdpResponse { socket, peer };
        crate::tcp::handle_raw(self, pkt, peer, Protocol::Udp, handle).await;
    }
}

/// Sends hickory-path answers over UDP: encoded whole, then, when larger than the client's
/// size (its EDNS payload, or 512), cut to header, question and OPT with TC set — the same
/// cut as the fast path's, never a partial record (hickory-proto 0.26.3 leaves one).
#[derive(Clone)]
struct UdpResponse {
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
}

#[async_trait::async_trait]
impl ResponseHandler for UdpResponse {
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
        let limit = response
            .edns()
            .map_or(wire::UDP_MIN, |e| usize::from(e.max_payload()));
        let mut buf = Vec::with_capacity(512);
        let info = crate::tcp::encode_response(response, self.peer, &mut buf)?;
        let mut len = buf.len();
        if len > limit {
            len = wire::truncate(&mut buf)
                .ok_or_else(|| NetError::from("cannot truncate the response"))?;
        }
        self.socket.send_to(&buf[..len], self.peer)?;
        Ok(info)
    }
}

/// Serve UDP on `socket` until `stop` is set: plain queries with an encoded answer answered on
/// this thread by [`KeyServerHandler::answer_plain`] (unless `fast_path` is off), everything
/// else by the hickory path, spawned on `rt`. Blocks; run it on a thread of its own.
pub fn serve_udp(
    handler: Arc<KeyServerHandler>,
    socket: UdpSocket,
    rt: tokio::runtime::Handle,
    stop: Arc<AtomicBool>,
    fast_path: bool,
) -> std::io::Result<()> {
    let fast = handler.clone();
    wire::serve_udp(
        socket,
        rt,
        stop,
        MAX_SLOW_IN_FLIGHT,
        move |pkt, out| {
            if fast_path {
                fast.answer_plain(pkt, out)
            } else {
                None
            }
        },
        move |pkt, peer, socket| {
            let h = handler.clone();
            async move { h.udp_slow(pkt, peer, socket).await }
        },
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use arc_swap::ArcSwap;
    use hickory_proto::rr::Name;
    use rand_core::OsRng;

    use super::*;
    use crate::clpkc::{Identity, KeyRequest, Kgc, SecretValue};
    use crate::issue::{IssueOptions, issue};
    use crate::zone::{KeyZone, ZoneSigner};

    /// A zone of `www0…www{n-1}.fp.example.`, one signed key each.
    fn handler(n: u8) -> KeyServerHandler {
        handler_with(n, "ns hostmaster")
    }

    /// As [`handler`], the SOA's MNAME and RNAME `soa_names`.
    fn handler_with(n: u8, soa_names: &str) -> KeyServerHandler {
        let kgc = Kgc::setup("fp.example.", &mut OsRng).unwrap();
        let own = kgc.self_issue([127, 0, 8, 1].into(), &mut OsRng).unwrap();
        let mut text = format!(
            "$ORIGIN fp.example.\n@ 3600 IN SOA {soa_names} 1 7200 3600 1209600 300\n@ 3600 IN NS ns\n",
        );
        for i in 0..n {
            let name = format!("www{i}.fp.example.");
            let ip = [10, 0, 0, i].into();
            let id = Identity::new(&name, ip, kgc.params()).unwrap();
            let req = KeyRequest::new(id, &SecretValue::generate(&mut OsRng));
            let opts = IssueOptions {
                not_before: 1_700_000_000,
                not_after: 2_000_000_000,
                key_server: None,
            };
            let (rec, _) = issue(&kgc, &own, &req, &opts, &mut OsRng).unwrap();
            text.push_str(&format!("{name} 3600 IN TPKEY {rec}\n"));
        }
        let origin = Name::from_ascii("fp.example.").unwrap();
        let parsed = crate::zonefile::parse(Path::new("fp.keys"), &text, &origin).unwrap();
        let signer = ZoneSigner {
            params: kgc.params(),
            key: &own,
            verified: None,
            fresh: &[],
        };
        let zone = KeyZone::build(parsed, Vec::new(), 0, &signer, 1_800_000_000).unwrap();
        KeyServerHandler::new(
            vec![Arc::new(ArcSwap::from_pointee(zone))],
            TransferAcl::default(),
        )
    }

    fn query(name: &[u8], qtype: u16, edns: bool) -> Vec<u8> {
        let mut q = vec![0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, u8::from(edns)];
        q.extend_from_slice(name);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&[0, 1]);
        if edns {
            q.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0x80, 0, 0, 0]);
        }
        q
    }

    #[test]
    fn plain_queries_of_names_in_the_zone_take_the_fast_path() {
        let h = handler(3);
        let mut out = vec![0u8; 4096];
        let www1 = b"\x04WwW1\x02fp\x07EXAMPLE\x00";
        for (q, what) in [
            (query(www1, 65300, true), "a key, mixed case, EDNS with DO"),
            (query(www1, 65300, false), "a key, no EDNS"),
            (query(www1, 1, true), "NODATA"),
            (
                query(b"\x04NoPe\x02fp\x07example\x00", 65300, true),
                "NXDOMAIN",
            ),
            (query(b"\x02fp\x07example\x00", 6, false), "the SOA"),
            (
                query(b"\x02fp\x07example\x00", 255, false),
                "ANY at the apex",
            ),
        ] {
            let n = h
                .answer_plain(&q, &mut out)
                .unwrap_or_else(|| panic!("{what}"));
            let m = hickory_proto::op::Message::from_vec(&out[..n]).unwrap();
            assert_eq!(m.metadata.id, 0xabcd, "{what}");
            assert!(m.metadata.recursion_desired, "{what}");
            let qend = wire::skip_name(&q, 12).unwrap() + 4;
            assert_eq!(q[12..qend], out[12..qend], "{what}: the question as sent");
            if q.len() > 40 {
                let e = m.edns.unwrap();
                assert_eq!(
                    (e.max_payload(), e.flags().dnssec_ok),
                    (1232, true),
                    "{what}"
                );
            }
        }
        assert_eq!(h.counters.udp.load(Ordering::Relaxed), 6);
        // The hickory path answers these: not plain, a transfer, or outside the zones.
        let mut v1 = query(www1, 65300, true);
        let at = v1.len() - 5;
        v1[at] = 1;
        let mut resp = query(www1, 65300, false);
        resp[2] |= 0x80;
        for (q, what) in [
            (query(b"\x02fp\x07example\x00", 252, false), "AXFR"),
            (query(b"\x03com\x00", 1, false), "outside the zone"),
            (v1, "EDNS version 1"),
            (resp, "a response"),
        ] {
            assert_eq!(h.answer_plain(&q, &mut out), None, "{what}");
        }
    }

    #[test]
    fn negative_answers_come_from_the_template_whatever_the_soa_names() {
        for soa in [
            "ns hostmaster",
            "ns1.other.example. hostmaster.other.example.",
            "a.b. c.d.",
        ] {
            let h = handler_with(1, soa);
            let mut out = vec![0u8; 1024];
            for (name, rcode) in [
                (&b"\x01X\x02fp\x07example\x00"[..], 3),
                (b"\x0alonger-one\x01y\x02fp\x07example\x00", 3),
                (b"\x04www0\x02fp\x07example\x00", 0),
            ] {
                let q = query(name, 16, true);
                let n = h
                    .answer_plain(&q, &mut out)
                    .unwrap_or_else(|| panic!("{soa}"));
                let m = hickory_proto::op::Message::from_vec(&out[..n]).unwrap();
                assert_eq!(u16::from(m.metadata.response_code), rcode, "{soa}");
                let soa_rr = &m.authorities[0];
                assert_eq!(soa_rr.name.to_ascii(), "fp.example.", "{soa}");
                assert!(m.answers.is_empty());
            }
        }
    }

    static HANDLER: std::sync::OnceLock<KeyServerHandler> = std::sync::OnceLock::new();

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            std::env::var("FASTPATH_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(4000)
        ))]
        /// Plain queries bent at random (bytes overwritten, cut, grown; out buffers of any
        /// size): the fast path never panics, and what it answers is a well-formed message
        /// within the client's size. `FASTPATH_CASES=N` runs N cases instead of 4,000.
        #[test]
        fn no_packet_panics_the_fast_path_and_its_answers_decode(
            base in 0usize..5,
            flips in proptest::collection::vec((0usize..64, proptest::prelude::any::<u8>()), 0..5),
            bend in 0u8..4,
            cut in 1usize..8,
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..12),
            room in 0usize..1400,
        ) {
            let h = HANDLER.get_or_init(|| handler(3));
            let mut pkt = [
                query(b"\x04www1\x02fp\x07example\x00", 65300, true),
                query(b"\x04www2\x02fp\x07example\x00", 65300, false),
                query(b"\x04nope\x02fp\x07example\x00", 1, true),
                query(b"\x02fp\x07example\x00", 6, true),
                query(b"\x02fp\x07example\x00", 255, false),
            ][base].clone();
            for (i, b) in flips {
                if let Some(x) = pkt.get_mut(i) {
                    *x = b;
                }
            }
            // Flips alone, or with the end cut, or grown, or both.
            if bend & 1 != 0 {
                pkt.truncate(pkt.len() - cut);
            }
            if bend & 2 != 0 {
                pkt.extend(tail);
            }
            let mut out = vec![0u8; if room < 700 { room } else { 65_535 }];
            if let Some(n) = h.answer_plain(&pkt, &mut out) {
                let m = hickory_proto::op::Message::from_vec(&out[..n]);
                proptest::prop_assert!(m.is_ok(), "{}", hex::encode(&out[..n]));
                let (q, _) = wire::parse(&pkt, &mut [0u8; wire::NAME_MAX]).unwrap();
                proptest::prop_assert!(n <= q.udp_limit());
            }
            let _ = wire::truncate(&mut pkt);
        }
    }
}
